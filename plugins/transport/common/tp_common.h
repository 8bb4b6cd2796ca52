/* tp_common.h — what the ucx and ofi transport plugins share: requests and
 * their failure bookkeeping, the queue of received notifications, the
 * revoke protocol's owner side (watchers, revokes, acknowledgements) and
 * the progress thread with the lock that serialises it against callers.
 *
 * Not a library: tp_common.c is compiled into each plugin that uses it
 * (hidden visibility, like the rest of the plugin), so every plugin keeps
 * its own copy and its own host table (rtp_load).  The plugin stays the
 * owner of its library objects; what differs per library (how a control
 * message travels, how progress is made, how the thread sleeps) comes in
 * through struct rtp_ops.
 *
 * The protocol (ucx.c's header comment has the long form): a process that
 * connects says hello to the owner of the address; dereg() revokes the
 * region at every such watcher and waits (transport.timeout at most) for
 * their acknowledgements; a requester marks the region's keys stale, fails
 * its requests that use it, quiesces its operations to the owner and only
 * then acknowledges. */
#ifndef REFIT_TP_COMMON_H
#define REFIT_TP_COMMON_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "refit/plugin.h"
#include "refit/transport.h"
#include "tp_nq.h"

/* A posted batch (or a one-shot internal request).  Plugin-specific
 * per-request state follows in ext[] (rtp_req_new's ext_size). */
struct refit_tp_req {
    refit_tp_t *tp;
    refit_tp_peer_t *peer; /* NULL once the peer is disconnected */
    struct refit_tp_req *prev, *next;
    size_t pending;    /* library operations not yet completed */
    int status;        /* 0, or the first failure */
    int released;      /* req_free called while operations were pending */
    char msg[320];     /* why it failed (our own text, bounded) */
    uint64_t *regions; /* distinct remote region ids used (for revokes) */
    size_t n_regions;
    const void **locals; /* distinct local regions used (for dereg) */
    size_t n_locals;
    _Alignas(max_align_t) unsigned char ext[];
};

/* A process that connected to us: it gets revokes when we deregister.
 * ep/addr (ucx) and fa (ofi) are the plugin's way to reach it. */
struct rtp_watcher {
    struct rtp_watcher *next;
    uint64_t id;    /* its transport id */
    int refs;       /* hellos minus byes */
    int dead;       /* no revoke waits for it */
    int reachable;  /* the plugin can send to it (ucx: once its endpoint exists) */
    int failed;     /* its endpoint failed (ucx): a new hello brings a new one */
    int reopen;     /* ucx: replace the endpoint with one to addr */
    uint64_t acked; /* highest revoke sequence it acknowledged */
    void *ep;
    void *addr;
    size_t addr_len;
    uint64_t fa;
};

/* A revoke to acknowledge once nothing of ours to the owner is in flight. */
struct rtp_ack {
    struct rtp_ack *next;
    refit_tp_peer_t *peer;
    uint64_t seq;
};

struct rtp_ops {
    /* One round of progress (completions, then deferred control work);
     * returns how much happened.  Called under the lock.  contended: a
     * caller waits for the lock (the progress thread passes it; the
     * plugin may then do less per hold). */
    size_t (*progress)(refit_tp_t *tp, int contended);
    /* Send REVOKE(region, seq) to a reachable watcher: 0 or an error. */
    int (*send_revoke)(refit_tp_t *tp, struct rtp_watcher *w, uint64_t region, uint64_t seq);
    /* Quiesce our operations to the peer, then send ACK(seq).  Called
     * from rtp_acks_run under the lock. */
    void (*ack)(refit_tp_t *tp, refit_tp_peer_t *p, uint64_t seq);
    /* Progress thread, under the lock after a round that did nothing:
     * nonzero when it may sleep (ucx arms its event fd here).  NULL:
     * always. */
    int (*arm)(refit_tp_t *tp);
    /* Progress thread, outside the lock: wait until work may be there
     * (stop_fd becomes readable when the thread is to stop). */
    void (*idle)(refit_tp_t *tp, int stop_fd);
};

/* The shared state, embedded in each plugin's struct refit_tp. */
struct rtp_core {
    const struct rtp_ops *ops;
    refit_tp_t *tp;
    const char *plugin;  /* "ucx", "ofi": the prefix of every message */
    int64_t timeout_ms;  /* transport.timeout */
    uint64_t id;         /* random; names this transport in control messages */
    struct refit_tp_req *reqs; /* every request not yet released */
    struct rtp_nq nq; /* notifications received (tp_nq.h) */
    struct rtp_watcher *watchers;
    struct rtp_ack *acks;
    uint64_t revoke_seq;

    pthread_mutex_t lock;
    int want_lock; /* callers waiting for the lock (the progress thread yields) */
    pthread_t thread;
    int thread_on;
    int stop_pipe[2];
    volatile int stop;
};

/* The plugin's load() hands its host table here first. */
void rtp_load(const struct refit_host *host);

int64_t rtp_now_ms(void);
char *rtp_strdup(const char *s);

/* Setup and teardown of the shared state (the lock, a fresh id). */
void rtp_core_init(struct rtp_core *c, refit_tp_t *tp, const struct rtp_ops *ops,
                   const char *plugin, int64_t timeout_ms);
/* Frees the watchers (close_watcher, if given, first releases the
 * plugin's handle of each): before the library goes, when closing needs it. */
void rtp_watchers_close(struct rtp_core *c, void (*close_watcher)(refit_tp_t *tp, struct rtp_watcher *w));
/* Frees what is left: watchers (as above), acks, requests, notices; once
 * nothing can complete into a request any more. */
void rtp_core_fini(struct rtp_core *c, void (*close_watcher)(refit_tp_t *tp, struct rtp_watcher *w));

/* The progress thread and the lock every entry point holds. */
int rtp_thread_start(struct rtp_core *c);
void rtp_thread_stop(struct rtp_core *c);
void rtp_lock(struct rtp_core *c);
void rtp_unlock(struct rtp_core *c);

/* Progress until *count is zero (or *failed is set) or timeout_ms passes:
 * 0 or REFIT_ETIMEDOUT. */
int rtp_spin(struct rtp_core *c, const size_t *count, const int *failed, int64_t timeout_ms);

/* Requests. */
struct refit_tp_req *rtp_req_new(struct rtp_core *c, refit_tp_peer_t *p, size_t ext_size);
void rtp_req_fail(struct refit_tp_req *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void rtp_req_unlink_free(struct rtp_core *c, struct refit_tp_req *r);
/* Remember a remote region the request uses (0 or REFIT_ENOMEM). */
int rtp_req_note_region(struct refit_tp_req *r, uint64_t region);
/* Remember a local region the request uses (0 or REFIT_ENOMEM). */
int rtp_req_note_local(struct refit_tp_req *r, const void *local);
/* dereg() of a local region: progress (transport.timeout at most) until no
 * operation of ours into or from it is in flight — a peer we declared gone
 * may still answer a READ into it, and the memory must outlive that.
 * 0, or REFIT_ETIMEDOUT with the message saying why the region stays. */
int rtp_local_quiesce(struct rtp_core *c, const void *local);
int rtp_req_result(struct refit_tp_req *r);
/* req_free(): now, or by the last completion (released). */
void rtp_req_release(struct rtp_core *c, struct refit_tp_req *r);
/* Fail the pending requests to p that use region (a revoke arrived). */
void rtp_reqs_fail_region(struct rtp_core *c, refit_tp_peer_t *p, const char *peer_name,
                          uint64_t region);
/* A peer goes away: its requests forget it (the pending ones fail, the
 * completed ones too with fail_completed), and no acknowledgement to it
 * stays queued. */
void rtp_forget_peer(struct rtp_core *c, refit_tp_peer_t *p, const char *peer_name,
                     int fail_completed);

/* Notifications.  The queue is bounded in count and bytes (the plugin's
 * notify_queue and notify_queue_bytes, read by rtp_notify_configure); a
 * note that does not fit, or that memory cannot hold, is dropped, counted
 * and logged (first, then every power of two).  from: the name its sender
 * gave (NUL-terminated, at most REFIT_TP_NAME_MAX bytes). */
void rtp_notice_push(struct rtp_core *c, const char *from, const void *data, size_t len);
/* A note refused on arrival (larger than the plugin takes): counted. */
void rtp_notice_drop_big(struct rtp_core *c, const char *from, size_t len);
/* poll_notify / poll_notify_from (from NULL: not wanted); a note larger
 * than cap leaves the queue with REFIT_ETOOBIG (it must not block the
 * ones behind it). */
int rtp_poll_notify(struct rtp_core *c, void *buf, size_t cap, size_t *len, char *from,
                    size_t from_cap, int64_t timeout_ms);
int rtp_notify_stats(struct rtp_core *c, struct refit_tp_notify_stats *out);
/* The queue's bounds from the plugin's section (RTP_NOTIFY_CFG_FIELDS). */
int rtp_notify_configure(struct rtp_core *c, const struct refit_cfg_view *cfg);

/* The two keys every such plugin has in its config table. */
#define RTP_NOTIFY_CFG_FIELDS                                                                \
    {"notify_queue", REFIT_CFG_INT, "1024", 1, 1048576, NULL,                               \
     "notifications kept until polled; more are dropped (counted and logged)"},            \
    {"notify_queue_bytes", REFIT_CFG_SIZE, "16MiB", 65536, 1073741824.0, NULL,              \
     "bytes of notifications kept until polled"}

/* The head of an address blob: the library's address follows. */
struct rtp_addr_hdr {
    uint32_t magic;
    uint16_t version, reserved;
    uint64_t tp_id;
    uint64_t addr_len;
};

/* address(): our blob (c->id and the library's address) into buf, or
 * its size into *len when buf is NULL. */
int rtp_address_pack(const struct rtp_core *c, uint32_t magic, uint16_t version, const void *addr,
                     size_t addr_len, void *buf, size_t *len);
/* connect(): check a peer's blob (what: "an ofi address", for the
 * message); the library's address starts sizeof(*h) into it. */
int rtp_address_parse(const struct rtp_core *c, uint32_t magic, uint16_t version, size_t max_len,
                      const char *what, const void *blob, size_t len, const char *who,
                      struct rtp_addr_hdr *h);

/* The head of every control message (hello, revoke, ack, bye; ofi's
 * notifications too); the type numbers are each plugin's own. */
struct rtp_ctrl {
    uint32_t type, len; /* len: bytes after the head (ucx before 2026-12: 0) */
    uint64_t sender;    /* the sender's transport id (rtp_core.id) */
    uint64_t a, b;      /* REVOKE: region, seq; ACK: seq; the rest: the plugin's */
};

/* A control message's head, from c, into m (the len bytes after it are
 * the caller's to write). */
void rtp_ctrl_head(const struct rtp_core *c, void *m, uint32_t type, size_t len, uint64_t a, uint64_t b);

/* The head of a packed remote key, the same in every such plugin: the
 * region's memory type, base (0: the peer addresses offsets), length and
 * id, and one word the plugin names (ucx: the length of the library's
 * packed key that follows the head; ofi: the provider's key, nothing
 * follows). */
struct rtp_rkey_hdr {
    uint32_t magic;
    uint16_t version, memtype;
    uint64_t base, len, id, word;
};

/* pack_rkey(): the packed key (n bytes at key) into buf, or its size into
 * *len when buf is NULL; REFIT_ERANGE (the size in *len) when *len is short. */
int rtp_rkey_copy(const struct rtp_core *c, const void *key, size_t n, void *buf, size_t *len);
/* unpack_rkey(): check a peer's key of len bytes into *h — its magic and
 * version, a range that is not empty and does not wrap, and its size: the
 * head and h->word bytes after it (word_is_tail), else the head alone. */
int rtp_rkey_parse(const struct rtp_core *c, uint32_t magic, uint16_t version, int word_is_tail, const void *buf,
                   size_t len, const char *who, struct rtp_rkey_hdr *h);

/* The caps every such plugin reports. */
int rtp_caps(const char *plugin, uint32_t memtypes, uint64_t max_notify_len,
             struct refit_tp_caps *out);

/* The owner side of the protocol. */
/* HELLO from sender: 1 when it is known (one more reference), else 0 and
 * the plugin validates the message and calls rtp_watcher_add. */
int rtp_watcher_rehello(struct rtp_core *c, uint64_t sender);
struct rtp_watcher *rtp_watcher_add(struct rtp_core *c, uint64_t sender);
/* The watcher of sender, or NULL. */
struct rtp_watcher *rtp_watcher_find(struct rtp_core *c, uint64_t sender);
void rtp_watcher_discard(struct rtp_core *c, struct rtp_watcher *w);
void rtp_on_bye(struct rtp_core *c, uint64_t sender);
void rtp_on_ack(struct rtp_core *c, uint64_t sender, uint64_t seq);
/* dereg(): revoke the region at every reachable watcher and wait for
 * their acknowledgements (transport.timeout at most; a watcher that does
 * not answer is not waited for again). */
void rtp_revoke_all(struct rtp_core *c, uint64_t region);

/* The requester side: queue an acknowledgement (a revoke from p's owner),
 * and send the queued ones (ops->ack); returns how many were handled. */
void rtp_ack_queue(struct rtp_core *c, refit_tp_peer_t *p, uint64_t seq);
size_t rtp_acks_run(struct rtp_core *c);

/* The ops table PFX_ops of a plugin: PFX_init and PFX_fini, and entry
 * points each holding the lock the progress thread takes around the
 * plugin's PFX_caps, PFX_address, ... (the plugin's struct refit_tp has
 * its struct rtp_core as `c`; H is the plugin's host table, PLUGIN its
 * name). */
#define RTP_LOCKED(tp, call)                                                                 \
    do {                                                                                     \
        rtp_lock(&(tp)->c);                                                                  \
        int rc_ = (call);                                                                    \
        rtp_unlock(&(tp)->c);                                                                \
        return rc_;                                                                          \
    } while (0)
#define RTP_LOCKED_VOID(tp, call)                                                            \
    do {                                                                                     \
        if (!(tp))                                                                           \
            return;                                                                          \
        rtp_lock(&(tp)->c);                                                                  \
        call;                                                                                \
        rtp_unlock(&(tp)->c);                                                                \
    } while (0)
#define RTP_NEED_TP(tp, plugin)                                                              \
    if (!(tp))                                                                               \
    return H->error_set(REFIT_EINVAL, "%s: no transport handle", plugin)

#define RTP_TRANSPORT_OPS(pfx, plugin)                                                 \
    static int l_caps(refit_tp_t *tp, struct refit_tp_caps *o)                               \
    {                                                                                        \
        RTP_NEED_TP(tp, plugin);                                                             \
        RTP_LOCKED(tp, pfx##_caps(tp, o));                                                   \
    }                                                                                        \
    static int l_address(refit_tp_t *tp, void *b, size_t *l)                                 \
    {                                                                                        \
        RTP_NEED_TP(tp, plugin);                                                             \
        RTP_LOCKED(tp, pfx##_address(tp, b, l));                                             \
    }                                                                                        \
    static int l_reg(refit_tp_t *tp, void *p, size_t l, uint32_t m, refit_tp_region_t **o)   \
    {                                                                                        \
        RTP_NEED_TP(tp, plugin);                                                             \
        RTP_LOCKED(tp, pfx##_reg(tp, p, l, m, o));                                           \
    }                                                                                        \
    static int l_dereg(refit_tp_t *tp, refit_tp_region_t *r)                                 \
    {                                                                                        \
        RTP_NEED_TP(tp, plugin);                                                             \
        RTP_LOCKED(tp, pfx##_dereg(tp, r));                                                  \
    }                                                                                        \
    static int l_pack_rkey(refit_tp_t *tp, refit_tp_region_t *r, void *b, size_t *l)         \
    {                                                                                        \
        RTP_NEED_TP(tp, plugin);                                                             \
        RTP_LOCKED(tp, pfx##_pack_rkey(tp, r, b, l));                                        \
    }                                                                                        \
    static int l_connect(refit_tp_t *tp, const void *a, size_t l, const char *n,             \
                         refit_tp_peer_t **o)                                                \
    {                                                                                        \
        RTP_NEED_TP(tp, plugin);                                                             \
        RTP_LOCKED(tp, pfx##_connect(tp, a, l, n, o));                                       \
    }                                                                                        \
    static void l_disconnect(refit_tp_t *tp, refit_tp_peer_t *p)                             \
    {                                                                                        \
        RTP_LOCKED_VOID(tp, pfx##_disconnect(tp, p));                                        \
    }                                                                                        \
    static int l_unpack_rkey(refit_tp_t *tp, refit_tp_peer_t *p, const void *b, size_t l,    \
                             refit_tp_rkey_t **o)                                            \
    {                                                                                        \
        RTP_NEED_TP(tp, plugin);                                                             \
        RTP_LOCKED(tp, pfx##_unpack_rkey(tp, p, b, l, o));                                   \
    }                                                                                        \
    static void l_release_rkey(refit_tp_t *tp, refit_tp_rkey_t *k)                           \
    {                                                                                        \
        RTP_LOCKED_VOID(tp, pfx##_release_rkey(tp, k));                                      \
    }                                                                                        \
    static int l_post(refit_tp_t *tp, refit_tp_peer_t *p, const struct refit_tp_desc *d,     \
                      size_t n, refit_tp_req_t **o)                                          \
    {                                                                                        \
        RTP_NEED_TP(tp, plugin);                                                             \
        RTP_LOCKED(tp, pfx##_post(tp, p, d, n, o));                                          \
    }                                                                                        \
    static int l_progress(refit_tp_t *tp)                                                    \
    {                                                                                        \
        RTP_NEED_TP(tp, plugin);                                                             \
        RTP_LOCKED(tp, ((void)(tp)->c.ops->progress(tp, 0), 0));                             \
    }                                                                                        \
    static int l_test(refit_tp_t *tp, refit_tp_req_t *r)                                     \
    {                                                                                        \
        RTP_NEED_TP(tp, plugin);                                                             \
        RTP_LOCKED(tp, pfx##_test(tp, r));                                                   \
    }                                                                                        \
    static int l_wait(refit_tp_t *tp, refit_tp_req_t *r, int64_t t)                          \
    {                                                                                        \
        RTP_NEED_TP(tp, plugin);                                                             \
        RTP_LOCKED(tp, pfx##_wait(tp, r, t));                                                \
    }                                                                                        \
    static void l_req_free(refit_tp_t *tp, refit_tp_req_t *r)                                \
    {                                                                                        \
        RTP_LOCKED_VOID(tp, if (r) rtp_req_release(&tp->c, r));                              \
    }                                                                                        \
    static int l_notify(refit_tp_t *tp, refit_tp_peer_t *p, const void *m, size_t l)         \
    {                                                                                        \
        RTP_NEED_TP(tp, plugin);                                                             \
        RTP_LOCKED(tp, pfx##_notify(tp, p, m, l));                                           \
    }                                                                                        \
    static int l_poll_notify(refit_tp_t *tp, void *b, size_t c, size_t *l, int64_t t)        \
    {                                                                                        \
        RTP_NEED_TP(tp, plugin);                                                             \
        RTP_LOCKED(tp, rtp_poll_notify(&tp->c, b, c, l, NULL, 0, t));                        \
    }                                                                                        \
    static int l_poll_notify_from(refit_tp_t *tp, void *b, size_t c, size_t *l, char *f,    \
                                  size_t fc, int64_t t)                                      \
    {                                                                                        \
        RTP_NEED_TP(tp, plugin);                                                             \
        if (!f || fc < REFIT_TP_NAME_MAX + 1)                                                \
            return H->error_set(REFIT_EINVAL, "%s: poll_notify_from needs %d bytes for the " \
                                "sender", plugin, REFIT_TP_NAME_MAX + 1);                    \
        RTP_LOCKED(tp, rtp_poll_notify(&tp->c, b, c, l, f, fc, t));                          \
    }                                                                                        \
    static int l_notify_stats(refit_tp_t *tp, struct refit_tp_notify_stats *o)               \
    {                                                                                        \
        RTP_NEED_TP(tp, plugin);                                                             \
        RTP_LOCKED(tp, rtp_notify_stats(&tp->c, o));                                         \
    }                                                                                        \
    static int l_describe(refit_tp_t *tp, char *b, size_t c)                                 \
    {                                                                                        \
        RTP_NEED_TP(tp, plugin);                                                             \
        RTP_LOCKED(tp, pfx##_describe(tp, b, c));                                            \
    }                                                                                        \
    static const struct refit_transport_ops pfx##_ops = {                                    \
        .size = sizeof(struct refit_transport_ops),                                          \
        .init = pfx##_init,                                                                  \
        .fini = pfx##_fini,                                                                  \
        .caps = l_caps,                                                                      \
        .address = l_address,                                                                \
        .reg = l_reg,                                                                        \
        .dereg = l_dereg,                                                                    \
        .pack_rkey = l_pack_rkey,                                                            \
        .connect = l_connect,                                                                \
        .disconnect = l_disconnect,                                                          \
        .unpack_rkey = l_unpack_rkey,                                                        \
        .release_rkey = l_release_rkey,                                                      \
        .post = l_post,                                                                      \
        .progress = l_progress,                                                              \
        .test = l_test,                                                                      \
        .wait = l_wait,                                                                      \
        .req_free = l_req_free,                                                              \
        .notify = l_notify,                                                                  \
        .poll_notify = l_poll_notify,                                                        \
        .describe = l_describe,                                                              \
        .poll_notify_from = l_poll_notify_from,                                              \
        .notify_stats = l_notify_stats,                                                      \
    }

/* static int check_desc(p, d, i): a descriptor of post() against the
 * plugin's region (len), remote key (peer, stale, id, len) and peer
 * (name); the same checks, by the same field names, in each plugin. */
#define RTP_DEFINE_CHECK_DESC(plugin)                                                        \
    static int check_desc(refit_tp_peer_t *p, const struct refit_tp_desc *d, size_t i)       \
    {                                                                                        \
        if (d->op != REFIT_OP_READ && d->op != REFIT_OP_WRITE)                               \
            return H->error_set(REFIT_EINVAL, "%s: descriptor %zu: unknown op %u", plugin,   \
                                i, d->op);                                                   \
        if (!d->local || !d->remote)                                                         \
            return H->error_set(REFIT_EINVAL, "%s: descriptor %zu: no local region or "      \
                                "remote key", plugin, i);                                    \
        if (d->remote->peer != p)                                                            \
            return H->error_set(REFIT_EINVAL, "%s: descriptor %zu: remote key belongs to "   \
                                "peer '%s', not '%s'", plugin, i,                            \
                                d->remote->peer ? d->remote->peer->name : "?", p->name);     \
        if (d->remote->stale)                                                                \
            return H->error_set(REFIT_ESTALE, "%s: descriptor %zu: region %" PRIu64 " of "   \
                                "peer '%s' was deregistered (stale remote key)", plugin, i,  \
                                d->remote->id, p->name);                                     \
        if (d->local_off > d->local->len || d->len > d->local->len - d->local_off)           \
            return H->error_set(REFIT_ERANGE, "%s: descriptor %zu: local range [%" PRIu64    \
                                ", +%" PRIu64 ") outside a region of %zu bytes", plugin, i,  \
                                d->local_off, d->len, d->local->len);                        \
        if (d->remote_off > d->remote->len || d->len > d->remote->len - d->remote_off)       \
            return H->error_set(REFIT_ERANGE, "%s: descriptor %zu: remote range [%" PRIu64   \
                                ", +%" PRIu64 ") outside region %" PRIu64 " of %" PRIu64     \
                                " bytes of peer '%s'", plugin, i, d->remote_off, d->len,     \
                                d->remote->id, d->remote->len, p->name);                     \
        return 0;                                                                            \
    }

/* Take node out of the singly linked list at head (its links in field
 * `link`, of type T *); nothing when it is not there. */
#define RTP_LIST_UNLINK(T, head, node, link)                                                 \
    do {                                                                                     \
        for (T **pp_ = &(head); *pp_; pp_ = &(*pp_)->link)                                   \
            if (*pp_ == (node)) {                                                            \
                *pp_ = (node)->link;                                                         \
                break;                                                                       \
            }                                                                                \
    } while (0)

/* static int dereg_begin(tp, r): the start of dereg() of region r, by the
 * same field names in each plugin (r->id, r->kept, r->kept_next; tp->kept,
 * tp->c).  It waits until no operation of ours uses the region
 * (rtp_local_quiesce); while one still may, the region stays ours on
 * tp->kept (fini releases it: the caller keeps its memory, the error says
 * so) and the error returns.  Else the region leaves tp->kept and every
 * watcher gets its revoke: 0, and the plugin releases its handle and r. */
#define RTP_DEFINE_DEREG_BEGIN()                                                             \
    static int dereg_begin(refit_tp_t *tp, refit_tp_region_t *r)                             \
    {                                                                                        \
        int rc = rtp_local_quiesce(&tp->c, r);                                               \
        if (rc) {                                                                            \
            if (!r->kept) {                                                                  \
                r->kept = 1;                                                                 \
                r->kept_next = tp->kept;                                                     \
                tp->kept = r;                                                                \
            }                                                                                \
            return rc;                                                                       \
        }                                                                                    \
        if (r->kept)                                                                         \
            RTP_LIST_UNLINK(refit_tp_region_t, tp->kept, r, kept_next);                      \
        if (tp->c.watchers)                                                                  \
            rtp_revoke_all(&tp->c, r->id);                                                   \
        return 0;                                                                            \
    }

/* static void rkey_link(p, k, h): a peer's unpacked key k (h its checked
 * head) joins p->rkeys, where a revoke finds it (revoke_region) and a
 * disconnect orphans it; the plugin's own handle is set apart. */
#define RTP_DEFINE_RKEY_LINK()                                                               \
    static void rkey_link(refit_tp_peer_t *p, refit_tp_rkey_t *k, const struct rtp_rkey_hdr *h) \
    {                                                                                        \
        k->peer = p;                                                                         \
        k->base = h->base;                                                                   \
        k->len = h->len;                                                                     \
        k->id = h->id;                                                                       \
        k->next = p->rkeys;                                                                  \
        p->rkeys = k;                                                                        \
    }

/* static void revoke_region(tp, owner, region, seq): REVOKE(region, seq)
 * from the transport `owner`: at each of our peers in that process its
 * keys of the region go stale, its pending requests using it fail, and an
 * acknowledgement is queued (sent once nothing of ours to it is in flight). */
#define RTP_DEFINE_REVOKE_REGION()                                                           \
    static void revoke_region(refit_tp_t *tp, uint64_t owner, uint64_t region, uint64_t seq) \
    {                                                                                        \
        for (refit_tp_peer_t *p = tp->peers; p; p = p->next) {                               \
            if (p->owner_id != owner)                                                        \
                continue;                                                                    \
            for (refit_tp_rkey_t *k = p->rkeys; k; k = k->next)                              \
                if (k->id == region)                                                         \
                    k->stale = 1;                                                            \
            rtp_reqs_fail_region(&tp->c, p, p->name, region);                                \
            rtp_ack_queue(&tp->c, p, seq);                                                   \
        }                                                                                    \
    }

#endif
