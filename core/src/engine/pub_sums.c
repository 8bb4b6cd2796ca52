/* pub_sums.c — a pull publisher's checksum table over the transport
 * (refit.sums: transport; sums.h): each version's checksum segments laid
 * into one registered host buffer per arena, at slots both sides derive
 * from the catalog, its remote key named in the record after the catalog
 * regions' keys.  Receivers READ the slots of the segments their plan
 * checks with the data (verify.c), so at a thousand receivers the
 * checksums (8 bytes per 64 KiB read) never cross the store.
 *
 * The table is rewritten in place for the version its arena holds next,
 * exactly like the bytes it describes: a receiver that reads it meanwhile
 * finds a broken trailer or another version and refuses it, and the
 * record fence after the data still decides. */
#include <stdlib.h>
#include <string.h>

#include "publisher.h"
#include "refit/log.h"

/* Whether this version's checksums go to the table. */
static int wanted(const refit_publisher_t *pub)
{
    return pub->ctx->sums_remote && !pub->sumtab_off && pub->delivery == &rf_deliver_pull &&
           pub->ctx->verify != RF_VERIFY_OFF;
}

static void drop(refit_publisher_t *pub, struct pub_sumtab *t)
{
    if (t->reg)
        refit_transport_dereg(pub->tp, t->reg);
    free(t->rkey);
    free(t->buf);
    memset(t, 0, sizeof(*t));
}

void rf_pubsums_destroy(refit_publisher_t *pub)
{
    for (int a = 0; a < 2; a++)
        drop(pub, &pub->sumtab[a]);
}

/* A registered buffer of len bytes for arena a (kept while the size holds). */
static int table_of(refit_publisher_t *pub, struct pub_sumtab *t, size_t len)
{
    if (t->buf && t->len == len)
        return 0;
    drop(pub, t);
    if (!(t->buf = calloc(1, len ? len : 1)))
        return REFIT_ENOMEM;
    t->len = len;
    int rc = refit_transport_reg(pub->tp, t->buf, len, REFIT_MEM_HOST, &t->reg);
    if (!rc)
        rc = refit_transport_pack(pub->tp, t->reg, &t->rkey, &t->rkey_len);
    if (rc)
        drop(pub, t);
    return rc;
}

/* The catalog's chunk counts and packing for this publisher's tensors. */
static int packing(const refit_publisher_t *pub, uint64_t **want, uint32_t **seg, size_t *n_seg)
{
    *want = malloc((pub->n ? pub->n : 1) * sizeof(**want));
    *seg = malloc((pub->n ? pub->n : 1) * sizeof(**seg));
    if (!*want || !*seg)
        return REFIT_ENOMEM;
    for (size_t i = 0; i < pub->n; i++) {
        const struct pub_tensor *t = &pub->t[i];
        uint64_t rows = t->row_bytes ? t->nbytes / t->row_bytes : 0;
        (*want)[i] = t->chunk_rows ? (rows + t->chunk_rows - 1) / t->chunk_rows : 0;
    }
    rf_sums_segment(*want, pub->n, *seg, n_seg);
    return 0;
}

int rf_pubsums_put(refit_publisher_t *pub, int arena, uint64_t version, const struct rf_sums *sums, int *on)
{
    *on = 0;
    if (!wanted(pub) || arena < 0 || arena > 1)
        return 0;
    uint64_t *want = NULL, *off = NULL;
    uint32_t *seg = NULL;
    void **bufs = NULL;
    size_t *lens = NULL, ns = 0;
    int rc = packing(pub, &want, &seg, &ns);
    if (!rc && !(off = malloc((ns + 1) * sizeof(*off))))
        rc = REFIT_ENOMEM;
    if (!rc)
        rc = rf_sums_table_slots(want, seg, pub->n, ns, off);
    if (!rc)
        rc = rf_sums_encode_segs(sums, seg, ns, &pub->cat_hash, version, &bufs, &lens);
    struct pub_sumtab *t = &pub->sumtab[arena];
    if (!rc && (rc = table_of(pub, t, (size_t)off[ns])) && rc != REFIT_ENOMEM) {
        /* A transport that cannot expose host memory: store segments, for good. */
        refit_log(REFIT_LOG_WARN, "publisher", "%s: refit.sums: transport: the checksum table cannot be "
                  "registered (%s); checksums go to the store", pub->id, refit_error_message());
        refit_error_clear();
        pub->sumtab_off = 1;
        rc = 0;
    } else if (!rc) {
        for (size_t k = 0; !rc && k < ns; k++) {
            if (lens[k] > off[k + 1] - off[k])
                rc = refit_error_set(REFIT_EINVAL, "checksum segment %zu: %zu bytes for a slot of %llu", k, lens[k],
                                     (unsigned long long)(off[k + 1] - off[k]));
            else
                memcpy((char *)t->buf + off[k], bufs[k], lens[k]);
        }
        *on = !rc;
    }
    for (size_t k = 0; bufs && k < ns; k++)
        free(bufs[k]);
    free(bufs);
    free(lens);
    free(want);
    free(seg);
    free(off);
    return rc;
}

int rf_pubsums_key(const refit_publisher_t *pub, int arena, struct refit_blob *out)
{
    if (!wanted(pub) || arena < 0 || arena > 1 || !pub->sumtab[arena].rkey)
        return 0;
    *out = (struct refit_blob){pub->sumtab[arena].rkey, pub->sumtab[arena].rkey_len};
    return 1;
}
