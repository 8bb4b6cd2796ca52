/* msgpack_pk.h — msgpack-c's packer with every return checked, for the
 * store values the core encodes (catalog_codec.c, catalog_records.c:
 * catalogs, records, acks, heartbeats; engine/replica.c: replica records
 * and leases; engine/push_work.c: push work lists and adverts).  They are
 * read back with the bounded reader of msgpack_rd.h.  Internal. */
#ifndef RF_MSGPACK_PK_H
#define RF_MSGPACK_PK_H

#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "refit/status.h"

struct pk {
    msgpack_sbuffer sb;
    msgpack_packer p;
    int err; /* a pack call failed (out of memory): reported by pk_finish */
};

#define PK(k, call) ((k)->err |= (call) != 0)

/* hint: bytes to reserve up front (0: none). */
static inline void pk_init(struct pk *k, size_t hint)
{
    msgpack_sbuffer_init(&k->sb);
    k->sb.data = hint ? malloc(hint) : NULL;
    k->sb.alloc = k->sb.data ? hint : 0;
    msgpack_packer_init(&k->p, &k->sb, msgpack_sbuffer_write);
    k->err = 0;
}

static inline void pk_str(struct pk *k, const char *s)
{
    size_t l = strlen(s);
    PK(k, msgpack_pack_str(&k->p, l));
    PK(k, msgpack_pack_str_body(&k->p, s, l));
}

static inline void pk_bin(struct pk *k, const void *b, size_t l)
{
    PK(k, msgpack_pack_bin(&k->p, l));
    if (l)
        PK(k, msgpack_pack_bin_body(&k->p, b, l));
}

/* The encoded bytes (malloc'ed, the caller's), or REFIT_ENOMEM. */
static inline int pk_finish(struct pk *k, void **buf, size_t *len)
{
    if (k->err) {
        msgpack_sbuffer_destroy(&k->sb);
        return refit_error_set(REFIT_ENOMEM, "msgpack encoding ran out of memory");
    }
    *len = k->sb.size;
    *buf = msgpack_sbuffer_release(&k->sb);
    if (!*buf) /* empty: never happens for our maps, but keep the contract */
        *buf = malloc(1);
    return *buf ? 0 : REFIT_ENOMEM;
}

#endif
