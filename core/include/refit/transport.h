/* refit/transport.h — the transport plugin ABI (kind REFIT_PLUGIN_TRANSPORT).
 *
 * One-sided transfers between registered regions of two processes:
 *   init → address() → (peer) connect(blob) → unpack_rkey(packed key)
 *   reg(ptr, len, memtype) → pack_rkey() → (peer) READ/WRITE via post()
 *   post() → request → test()/wait() → req_free()
 * plus small notifications (notify/poll_notify, poll_notify_from), which
 * push mode uses to signal completion.
 *
 * Threading: a refit_tp_t is used by one thread at a time unless the plugin
 * says otherwise; internal threads (e.g. the tcp server) are the plugin's
 * business.  Errors: negative REFIT_E* with a message (host->error_set)
 * naming the plugin, the peer, and the library's own code and text. */
#ifndef REFIT_TRANSPORT_H
#define REFIT_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include "refit/config.h"

#ifdef __cplusplus
extern "C" {
#endif

enum refit_memtype {
    REFIT_MEM_HOST = 1,
    REFIT_MEM_CUDA = 2
};
#define REFIT_MEMTYPE_BIT(m) (1u << (m))

enum refit_tp_op {
    REFIT_OP_READ = 1,  /* remote → local */
    REFIT_OP_WRITE = 2  /* local → remote */
};

/* Opaque objects owned by the plugin. */
typedef struct refit_tp refit_tp_t;               /* one per process (or context) */
typedef struct refit_tp_region refit_tp_region_t; /* registered local memory */
typedef struct refit_tp_peer refit_tp_peer_t;     /* a connection to a remote process */
typedef struct refit_tp_rkey refit_tp_rkey_t;     /* a remote region, unpacked for one peer */
typedef struct refit_tp_req refit_tp_req_t;       /* an outstanding post */
typedef struct refit_tp_bell refit_tp_bell_t;     /* a doorbell (bell_* ops) */

struct refit_tp_caps {
    size_t size;
    uint32_t memtypes;          /* REFIT_MEMTYPE_BIT(REFIT_MEM_HOST) | ... reached directly */
    uint32_t max_desc_per_post; /* 0: unlimited */
    uint32_t notify;            /* 1 when notify/poll_notify work */
    uint32_t max_notify_len;
    uint64_t max_region_len;    /* 0: unlimited */
};

/* The longest name a process gives its transport (init args `name`); the
 * name a receiver learns of a notification's sender fits in this plus NUL. */
#define REFIT_TP_NAME_MAX 255

/* The notification queue of a transport (notify_stats). */
struct refit_tp_notify_stats {
    size_t size;               /* sizeof(struct refit_tp_notify_stats) of the caller */
    uint64_t received;         /* accepted into the queue */
    uint64_t delivered;        /* handed to poll_notify / poll_notify_from */
    uint64_t dropped_full;     /* refused: the queue held max_count notes or max_bytes */
    uint64_t dropped_oversize; /* larger than the transport accepts, or than the poller's buffer */
    uint64_t queued, queued_bytes;  /* in the queue now */
    uint64_t max_count, max_bytes;  /* the queue's bounds (transport.<name>.notify_queue*) */
};

struct refit_tp_desc {
    uint32_t op; /* enum refit_tp_op */
    refit_tp_region_t *local;
    uint64_t local_off;
    refit_tp_rkey_t *remote;
    uint64_t remote_off;
    uint64_t len;
};

struct refit_tp_init_args {
    size_t size;                       /* sizeof(struct refit_tp_init_args) */
    const struct refit_cfg_view *cfg;  /* section transport.<name> */
    int64_t timeout_ms;                /* transport.timeout: no progress for this long is an error */
    const char *name;                  /* this process's name in messages ("trainer-tp0") */
    int cuda_device;                   /* -1: none; topology uses it to pick a NIC */
    const char *const *nic_hint;       /* NUMA-local devices chosen by topology (NULL: none) */
    size_t n_nic_hint;
};

struct refit_transport_ops {
    size_t size; /* sizeof(struct refit_transport_ops) of the plugin's build */

    int (*init)(const struct refit_tp_init_args *args, refit_tp_t **out);
    void (*fini)(refit_tp_t *tp); /* safe on NULL; fails outstanding requests */
    int (*caps)(refit_tp_t *tp, struct refit_tp_caps *out);

    /* This process's address blob, handed to peers through the store.
     * With buf NULL, *len receives the size needed. */
    int (*address)(refit_tp_t *tp, void *buf, size_t *len);

    int (*reg)(refit_tp_t *tp, void *ptr, size_t len, uint32_t memtype, refit_tp_region_t **out);
    /* Deregistering a region a peer is reading makes the peer's request fail
     * cleanly; it never lets the peer touch the memory afterwards. */
    int (*dereg)(refit_tp_t *tp, refit_tp_region_t *r);
    /* The packed remote key of a region (with buf NULL, the size). */
    int (*pack_rkey)(refit_tp_t *tp, refit_tp_region_t *r, void *buf, size_t *len);

    /* `peer_name` is for messages only. */
    int (*connect)(refit_tp_t *tp, const void *addr, size_t len, const char *peer_name,
                   refit_tp_peer_t **out);
    void (*disconnect)(refit_tp_t *tp, refit_tp_peer_t *p);
    /* Unpack once per peer and region; an invalid blob is REFIT_EPROTO. */
    int (*unpack_rkey)(refit_tp_t *tp, refit_tp_peer_t *p, const void *buf, size_t len,
                       refit_tp_rkey_t **out);
    void (*release_rkey)(refit_tp_t *tp, refit_tp_rkey_t *k);

    /* Start n descriptors to one peer (n <= caps.max_desc_per_post when
     * that is set).  Out-of-range offsets are rejected before any I/O. */
    int (*post)(refit_tp_t *tp, refit_tp_peer_t *p, const struct refit_tp_desc *d, size_t n,
                refit_tp_req_t **out);
    /* Drive progress; returns 0 or an error of the transport as a whole. */
    int (*progress)(refit_tp_t *tp);
    /* 0: complete; REFIT_EAGAIN: in flight; < 0: failed (message says why). */
    int (*test)(refit_tp_t *tp, refit_tp_req_t *r);
    /* test() with progress until done or timeout_ms (REFIT_ETIMEDOUT). */
    int (*wait)(refit_tp_t *tp, refit_tp_req_t *r, int64_t timeout_ms);
    void (*req_free)(refit_tp_t *tp, refit_tp_req_t *r); /* after completion or failure */

    /* A small message to a peer, delivered after every WRITE this process
     * posted to that peer before it completed (ordering push mode relies on). */
    int (*notify)(refit_tp_t *tp, refit_tp_peer_t *p, const void *msg, size_t len);
    /* Receive one notification from any peer: REFIT_ETIMEDOUT when none
     * came within timeout_ms (0: just check).  *len is the message size.
     * Received notifications wait in a queue bounded in count and bytes;
     * what does not fit is dropped and counted (notify_stats).  One larger
     * than cap is taken off the queue too (it must not block the ones
     * behind it): REFIT_ETOOBIG, with *len its size — keep polling. */
    int (*poll_notify)(refit_tp_t *tp, void *buf, size_t cap, size_t *len, int64_t timeout_ms);

    /* Added after ABI 1.0 (callers check `size` first): one line saying
     * what the transport chose — library version, provider or transports,
     * devices — for `refit doctor` and logs.  Truncated to cap. */
    int (*describe)(refit_tp_t *tp, char *buf, size_t cap);

    /* Added after ABI 1.0 (callers check `size` first): poll_notify that
     * also says who sent the notification — the name the sender's transport
     * was opened with (init args `name`), as its transport carried it when
     * it connected to us: tcp inside its authenticated handshake, ucx and
     * ofi in each notification (those transports authenticate nothing;
     * docs/security.md).  `from` receives it NUL-terminated; from_cap must
     * be at least REFIT_TP_NAME_MAX + 1.  Otherwise as poll_notify. */
    int (*poll_notify_from)(refit_tp_t *tp, void *buf, size_t cap, size_t *len, char *from,
                            size_t from_cap, int64_t timeout_ms);
    /* The notification queue's counters and bounds; out->size first. */
    int (*notify_stats)(refit_tp_t *tp, struct refit_tp_notify_stats *out);

    /* Added after ABI 1.0 (callers check `size` first): a pointer through
     * which this process addresses the remote region of k directly (a peer
     * on the same device or host whose memory the transport has mapped:
     * cuda_ipc), so that the caller's own kernels can read it; REFIT_ENOTSUP
     * where the transport maps nothing.  Valid until k is released.  The
     * transport does not see such accesses: the caller finishes them before
     * releasing k, and a revoke by the owner does not wait for them (the
     * mapping keeps the owner's memory alive until the release). */
    int (*rkey_ptr)(refit_tp_t *tp, refit_tp_rkey_t *k, void **ptr);

    /* Added after ABI 1.0 (callers check `size` first; a plugin offers all
     * six or none): a doorbell, a 64-bit counter that its creator rings
     * and that processes of the same host wait on directly, without the
     * store (cuda_ipc: a word in shared memory and a futex).  A publisher
     * rings it with each version it publishes, so that a receiver learns
     * of the version without waiting for the store's watch.  A hint only:
     * the store stays the truth (a receiver reads the records after the
     * bell as before).  REFIT_ENOTSUP from bell_create where the transport
     * has none.  The creator's handle (bell_pack; with buf NULL, *len the
     * size) is what bell_open takes in another process; bell_ring (the
     * creator only) sets the counter to a larger value and wakes every
     * waiter; bell_wait returns 0 with *value once the counter exceeds
     * seen, REFIT_ETIMEDOUT after timeout_ms (0: just look); bell_close
     * is safe on NULL (the creator's close makes new opens fail with
     * REFIT_ENOENT; opened handles stay valid and ring no more). */
    int (*bell_create)(refit_tp_t *tp, refit_tp_bell_t **out);
    int (*bell_pack)(refit_tp_t *tp, refit_tp_bell_t *b, void *buf, size_t *len);
    int (*bell_open)(refit_tp_t *tp, const void *buf, size_t len, refit_tp_bell_t **out);
    int (*bell_ring)(refit_tp_t *tp, refit_tp_bell_t *b, uint64_t value);
    int (*bell_wait)(refit_tp_t *tp, refit_tp_bell_t *b, uint64_t seen, uint64_t *value, int64_t timeout_ms);
    void (*bell_close)(refit_tp_t *tp, refit_tp_bell_t *b);
};

#ifdef __cplusplus
}
#endif
#endif
