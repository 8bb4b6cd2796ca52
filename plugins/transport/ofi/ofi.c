/* ofi.c — the `ofi` transport plugin: one-sided READ/WRITE over libfabric
 * (FI_EP_RDM, fi_read/fi_write), notifications with fi_send into receive
 * buffers posted ahead (fi_recv).
 *
 * Objects: fabric → domain → one RDM endpoint bound to one completion
 * queue (transmit and receive) and one address vector of peers.  The
 * provider is chosen in the YAML (transport.ofi.provider: efa on AWS;
 * tcp — layered under ofi_rxm — and shm are what the tests here run).
 *
 * Memory registration follows what the provider asks in mr_mode:
 *   FI_MR_LOCAL       local buffers need their descriptor (always passed);
 *   FI_MR_VIRT_ADDR   remote addresses are virtual (base + offset), else
 *                     offsets into the region;
 *   FI_MR_ALLOCATED   only allocated memory (what we register always is);
 *   FI_MR_PROV_KEY    the provider picks the key, else we request unique
 *                     ones (a counter, so a stale key never names a newer
 *                     region);
 *   FI_MR_ENDPOINT    regions are bound to the endpoint and enabled;
 *   FI_MR_HMEM        device memory registers with its iface (FI_HMEM).
 * Providers needing FI_MR_RAW keys are not requested (none we target).
 *
 * Progress: most providers progress data only inside libfabric calls
 * (FI_PROGRESS_MANUAL), and a READ of our memory over tcp or shm is served
 * by our progress.  A progress thread therefore reads the completion queue
 * whenever the caller is not inside the plugin; one mutex serialises every
 * libfabric call, matching FI_THREAD_DOMAIN.  It sleeps progress_sleep_us
 * between idle rounds (the CQ does not say when a peer's READ needs us).
 *
 * Messages: notifications and control messages (hello, revoke, ack, bye)
 * travel with fi_send into receive buffers posted ahead, each behind a small
 * header; a notification's bytes follow the sender's name (header field b
 * its length; libfabric authenticates nothing, so it is what the sender
 * says: docs/security.md).  Stale keys are stopped here rather than left to the provider
 * (tcp and shm verify keys at the target, but a bad key there can stall or
 * break the connection): every process that connects says hello, and
 * dereg() revokes the region at each of them and waits for their acks —
 * the same protocol as the ucx plugin; see there.
 *
 * Completion: WRITEs are issued with FI_DELIVERY_COMPLETE when the
 * provider takes it, so a completed WRITE is in the peer's memory; notify()
 * waits until every WRITE to that peer completed before it sends, which
 * gives the ordering push mode relies on whatever msg_order the provider
 * offers. */
#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_rma.h>

#include "refit/plugin.h"
#include "refit/status.h"
#include "refit/transport.h"
#include "tp_common.h"

#define OFIP "ofi"
#define OFIP_ADDR_MAGIC 0x414f5852u /* "RXOA" */
#define OFIP_RKEY_MAGIC 0x4b4f5852u /* "RXOK" */
#define OFIP_BLOB_VERSION 2
#define OFIP_API FI_VERSION(1, 9)
#define OFIP_MAX_ADDR 256

static const struct refit_host *H;

/* ------------------------------------------------------------------ */
/* Objects */

enum op_kind { OP_RMA = 1, OP_SEND, OP_RECV, OP_CTRL };

enum { MSG_NOTE = 1, MSG_HELLO, MSG_REVOKE, MSG_ACK, MSG_BYE };

/* Header of every message; a notification's bytes follow it. */
struct ofip_msg {
    uint32_t type, len; /* len: bytes after the header */
    uint64_t sender;    /* transport id */
    uint64_t a, b;      /* REVOKE: region, seq; ACK: seq; NOTE: b the name's length */
};

/* The context of one libfabric operation; fi_context2 first because the
 * provider may ask for FI_CONTEXT/FI_CONTEXT2 scratch space in it. */
struct ofip_op {
    struct fi_context2 fctx;
    uint8_t kind;
    uint8_t is_write;
    struct refit_tp_req *req; /* OP_RMA, OP_SEND */
    refit_tp_peer_t *peer;    /* OP_RMA writes, OP_SEND: per-peer accounting */
    void *buf;                /* OP_RECV buffer, OP_SEND copy */
    struct ofip_op *next;     /* OP_CTRL: in tp->ctrl_ops until complete */
};

struct refit_tp {
    struct fi_info *info;
    struct fid_fabric *fabric;
    struct fid_domain *domain;
    struct fid_ep *ep;
    struct fid_cq *cq;
    struct fid_av *av;
    char *name;
    uint64_t max_notify_len;
    uint64_t max_msg;
    uint64_t max_chunk;
    uint64_t mr_mode;
    uint64_t write_flags; /* FI_DELIVERY_COMPLETE when supported */
    int cuda_device;
    int hmem;
    uint64_t next_key;
    uint32_t memtypes;
    unsigned char addr[256];
    size_t addr_len;
    size_t n_recv;
    struct ofip_op *recv_ops;
    unsigned char *recv_bufs;
    struct refit_tp_peer *peers;
    uint64_t next_region_id;
    size_t recv_len;
    int in_ctrl;
    size_t ctrl_inflight; /* control sends not yet completed */
    struct ofip_op *ctrl_ops; /* ... and their operations (freed by fini if never completed) */
    struct refit_tp_region *kept; /* regions a dereg could not release (see ofip_dereg) */
    int64_t sleep_us;
    struct rtp_core c; /* requests, notices, watchers, acks, lock, thread */
};

struct refit_tp_region {
    struct fid_mr *mr;
    void *desc;
    void *ptr;
    size_t len;
    uint32_t memtype;
    uint64_t id, key;
    /* In tp->kept after a dereg that timed out (requests still in flight
     * into it): fini closes it once the endpoint is gone. */
    struct refit_tp_region *kept_next;
    int kept;
};

struct refit_tp_peer {
    refit_tp_t *tp;
    struct refit_tp_peer *next;
    fi_addr_t fa;
    char *name;
    size_t writes_pending; /* WRITEs and sends not yet completed */
    size_t ops_pending;    /* every RMA operation not yet completed */
    uint64_t owner_id;     /* transport id in its address */
    struct refit_tp_rkey *rkeys;
    int failed;
    char why[200];
};

struct refit_tp_rkey {
    refit_tp_peer_t *peer;
    struct refit_tp_rkey *next;
    int stale;
    uint64_t base; /* remote address of offset 0 (virtual or 0) */
    uint64_t len, id, key;
};

/* What a request (struct refit_tp_req, tp_common.h) carries in ext[]. */
struct ofip_req_ext {
    size_t n_ops;
    struct ofip_op ops[]; /* one per chunk */
};

static struct ofip_req_ext *req_ext(struct refit_tp_req *r)
{
    return (struct ofip_req_ext *)(void *)r->ext;
}

struct ofip_rkey_hdr {
    uint32_t magic;
    uint16_t version, memtype;
    uint64_t base, len, id, key;
};

/* ------------------------------------------------------------------ */
/* Helpers */

static const char *prov_of(const refit_tp_t *tp)
{
    return tp && tp->info && tp->info->fabric_attr && tp->info->fabric_attr->prov_name
               ? tp->info->fabric_attr->prov_name
               : "?";
}

/* libfabric's code and text in every message. */
static int fi_fail(const refit_tp_t *tp, int status, int ret, const char *what, const char *peer)
{
    int e = ret < 0 ? -ret : ret;
    return H->error_set(status, "%s(%s): %s%s%s%s: %s (fi errno %d)", OFIP, prov_of(tp), what,
                        peer ? " peer '" : "", peer ? peer : "", peer ? "'" : "", fi_strerror(e), e);
}

static int status_of(int ret)
{
    switch (ret < 0 ? -ret : ret) {
    case FI_ENOMEM:
        return REFIT_ENOMEM;
    case FI_ETIMEDOUT:
        return REFIT_ETIMEDOUT;
    case FI_ECANCELED:
        return REFIT_ECANCELED;
    case FI_ENOSYS:
    case FI_EOPNOTSUPP:
        return REFIT_ENOTSUP;
    case FI_ECONNREFUSED:
    case FI_ECONNRESET:
    case FI_ECONNABORTED:
    case FI_ENOTCONN:
    case FI_EHOSTUNREACH:
    case FI_ENETUNREACH:
    case FI_ESHUTDOWN:
    case FI_EIO:
        return REFIT_ECONN;
    case FI_EKEYREJECTED:
    case FI_EACCES:
    case FI_EINVAL:
        return REFIT_ESTALE; /* on a completion: the peer refused our key or range */
    default:
        return REFIT_EPLUGIN;
    }
}

static struct refit_tp_req *req_new(refit_tp_t *tp, refit_tp_peer_t *p, size_t n_ops)
{
    struct refit_tp_req *r =
        rtp_req_new(&tp->c, p, sizeof(struct ofip_req_ext) + n_ops * sizeof(struct ofip_op));
    if (r)
        req_ext(r)->n_ops = n_ops;
    return r;
}

/* ------------------------------------------------------------------ */
/* Completion queue */

static int post_recv(refit_tp_t *tp, struct ofip_op *op)
{
    for (;;) {
        ssize_t ret = fi_recv(tp->ep, op->buf, tp->recv_len, NULL, FI_ADDR_UNSPEC, &op->fctx);
        if (ret == 0)
            return 0;
        if (ret != -FI_EAGAIN)
            return fi_fail(tp, REFIT_EPLUGIN, (int)ret, "fi_recv", NULL);
        fi_cq_read(tp->cq, NULL, 0); /* drives progress for providers that need it */
    }
}

static void on_message(refit_tp_t *tp, const unsigned char *buf, size_t len);

/* The connection to p is gone or stalled: every later call fails at once
 * with REFIT_ECONN until the caller reconnects (disconnect then drops the
 * address from the vector, so the provider connects afresh). */
static void peer_fail(refit_tp_peer_t *p, const char *why)
{
    if (p && !p->failed) {
        p->failed = 1;
        snprintf(p->why, sizeof(p->why), "%s", why);
    }
}

static void op_finish(refit_tp_t *tp, struct ofip_op *op, size_t len, int err, const char *why)
{
    switch (op->kind) {
    case OP_CTRL:
        if (err)
            H->log(0, OFIP, "control message not delivered: %s", why);
        if (tp->ctrl_inflight)
            tp->ctrl_inflight--;
        for (struct ofip_op **po = &tp->ctrl_ops; *po; po = &(*po)->next)
            if (*po == op) {
                *po = op->next;
                break;
            }
        H->free(op->buf);
        H->free(op);
        return;
    case OP_RECV:
        if (err) {
            if (err != FI_ECANCELED)
                H->log(2, OFIP, "receive of a notification failed: %s", why);
            return;
        }
        on_message(tp, op->buf, len);
        if (post_recv(tp, op))
            H->log(3, OFIP, "could not repost a receive buffer: notifications may be lost");
        return;
    case OP_RMA:
    case OP_SEND: {
        struct refit_tp_req *r = op->req;
        if (op->peer && op->is_write && op->peer->writes_pending)
            op->peer->writes_pending--;
        if (op->kind == OP_RMA && r->peer && r->peer->ops_pending)
            r->peer->ops_pending--;
        if (err) {
            const char *who = r->peer ? r->peer->name : "?";
            rtp_req_fail(r, status_of(err), "%s(%s): %s with peer '%s' failed: %s", OFIP, prov_of(tp),
                     op->kind == OP_SEND ? "notification" : op->is_write ? "write" : "read", who, why);
            if (status_of(err) == REFIT_ECONN)
                peer_fail(r->peer, why);
        }
        H->free(op->kind == OP_SEND ? op->buf : NULL);
        op->buf = NULL;
        if (r->pending)
            r->pending--;
        if (!r->pending && r->released)
            rtp_req_unlink_free(&tp->c, r);
        return;
    }
    }
}

static void drain_error(refit_tp_t *tp)
{
    struct fi_cq_err_entry e;
    memset(&e, 0, sizeof(e));
    ssize_t ret = fi_cq_readerr(tp->cq, &e, 0);
    if (ret < 0)
        return;
    char pbuf[160];
    const char *ptext = fi_cq_strerror(tp->cq, e.prov_errno, e.err_data, pbuf, sizeof(pbuf));
    char why[320];
    snprintf(why, sizeof(why), "%s (fi errno %d; provider: %s, prov_errno %d)", fi_strerror(e.err),
             e.err, ptext ? ptext : "?", e.prov_errno);
    if (e.op_context)
        op_finish(tp, e.op_context, 0, e.err ? e.err : FI_EIO, why);
    else
        H->log(3, OFIP, "completion error without context: %s", why);
}

static size_t ctrl_work(refit_tp_t *tp);

/* Reads every completion available, then does deferred control work;
 * returns how much happened. */
static size_t cq_drain_once(refit_tp_t *tp);
static size_t cq_drain(refit_tp_t *tp)
{
    size_t n = cq_drain_once(tp);
    if (tp->c.acks && !tp->in_ctrl)
        n += ctrl_work(tp);
    return n;
}

static size_t cq_drain_once(refit_tp_t *tp)
{
    struct fi_cq_data_entry ent[64];
    size_t total = 0;
    for (;;) {
        ssize_t n = fi_cq_read(tp->cq, ent, 64);
        if (n == -FI_EAGAIN)
            return total;
        if (n == -FI_EAVAIL) {
            drain_error(tp);
            total++;
            continue;
        }
        if (n < 0) {
            H->log(3, OFIP, "fi_cq_read: %s", fi_strerror((int)-n));
            return total;
        }
        for (ssize_t i = 0; i < n; i++)
            op_finish(tp, ent[i].op_context, ent[i].len, 0, NULL);
        total += (size_t)n;
        if (n < 64)
            return total;
    }
}

/* ------------------------------------------------------------------ */
/* Control messages (see the top) */

/* Send a message whose buffer the completion frees (OP_CTRL). */
static int msg_send(refit_tp_t *tp, fi_addr_t to, uint32_t type, uint64_t a, uint64_t b,
                    const void *tail, size_t tail_len)
{
    struct ofip_op *op = H->calloc(1, sizeof(*op));
    unsigned char *m = H->alloc(sizeof(struct ofip_msg) + tail_len);
    if (!op || !m) {
        H->free(op);
        H->free(m);
        return REFIT_ENOMEM;
    }
    struct ofip_msg h = {type, (uint32_t)tail_len, tp->c.id, a, b};
    memcpy(m, &h, sizeof(h));
    if (tail_len)
        memcpy(m + sizeof(h), tail, tail_len);
    op->kind = OP_CTRL;
    op->buf = m;
    tp->ctrl_inflight++;
    op->next = tp->ctrl_ops;
    tp->ctrl_ops = op;
    /* A goodbye is a courtesy: the peer may have exited already, and the
     * provider would spend the whole timeout trying to reach it. */
    int64_t deadline = rtp_now_ms() + (type == MSG_BYE ? 200 : tp->c.timeout_ms);
    ssize_t ret;
    while ((ret = fi_send(tp->ep, m, sizeof(h) + tail_len, NULL, to, &op->fctx)) == -FI_EAGAIN &&
           rtp_now_ms() < deadline)
        cq_drain_once(tp);
    if (ret) {
        tp->ctrl_inflight--;
        tp->ctrl_ops = op->next;
        H->free(m);
        H->free(op);
        return REFIT_ECONN;
    }
    return 0;
}

static void revoke_region(refit_tp_t *tp, uint64_t owner, uint64_t region, uint64_t seq)
{
    for (refit_tp_peer_t *p = tp->peers; p; p = p->next) {
        if (p->owner_id != owner)
            continue;
        for (refit_tp_rkey_t *k = p->rkeys; k; k = k->next)
            if (k->id == region)
                k->stale = 1;
        rtp_reqs_fail_region(&tp->c, p, p->name, region);
        rtp_ack_queue(&tp->c, p, seq);
    }
}

static void on_hello(refit_tp_t *tp, const struct ofip_msg *h, const unsigned char *addr)
{
    if (rtp_watcher_rehello(&tp->c, h->sender))
        return;
    struct rtp_watcher *w = rtp_watcher_add(&tp->c, h->sender);
    if (!w)
        return;
    fi_addr_t fa;
    if (fi_av_insert(tp->av, addr, 1, &fa, 0, NULL) != 1) {
        rtp_watcher_discard(&tp->c, w);
        return;
    }
    w->fa = fa;
    w->reachable = 1;
}

/* A notification: the sender's name (h->b bytes), then its bytes. */
static void on_note(refit_tp_t *tp, const struct ofip_msg *h, const unsigned char *tail)
{
    char from[REFIT_TP_NAME_MAX + 1] = "?";
    if (h->b > REFIT_TP_NAME_MAX || h->b > h->len)
        return; /* not our format */
    if (!memchr(tail, 0, h->b)) {
        memcpy(from, tail, h->b);
        from[h->b] = 0;
    }
    size_t len = h->len - h->b;
    if (len > tp->max_notify_len)
        rtp_notice_drop_big(&tp->c, from, len);
    else
        rtp_notice_push(&tp->c, from, tail + h->b, len);
}

static void on_message(refit_tp_t *tp, const unsigned char *buf, size_t len)
{
    struct ofip_msg h;
    if (len < sizeof(h))
        return;
    memcpy(&h, buf, sizeof(h));
    if (h.len != len - sizeof(h))
        return; /* not ours, or truncated */
    const unsigned char *tail = buf + sizeof(h);
    if (h.type == MSG_NOTE) {
        on_note(tp, &h, tail);
    } else if (h.type == MSG_HELLO && h.len && h.len <= OFIP_MAX_ADDR) {
        on_hello(tp, &h, tail);
    } else if (h.type == MSG_BYE) {
        rtp_on_bye(&tp->c, h.sender);
    } else if (h.type == MSG_REVOKE) {
        revoke_region(tp, h.sender, h.a, h.b);
    } else if (h.type == MSG_ACK) {
        rtp_on_ack(&tp->c, h.sender, h.a);
    }
}

/* Acknowledge revokes once nothing of ours to that peer is in flight. */
static size_t ctrl_work(refit_tp_t *tp)
{
    if (tp->in_ctrl || !tp->c.acks)
        return 0;
    tp->in_ctrl = 1;
    size_t n = rtp_acks_run(&tp->c);
    tp->in_ctrl = 0;
    return n;
}

static void ack_cb(refit_tp_t *tp, refit_tp_peer_t *p, uint64_t seq)
{
    if (p && !p->failed && !rtp_spin(&tp->c, &p->ops_pending, NULL, tp->c.timeout_ms))
        msg_send(tp, p->fa, MSG_ACK, seq, 0, NULL, 0);
}

static int send_revoke_cb(refit_tp_t *tp, struct rtp_watcher *w, uint64_t region, uint64_t seq)
{
    return msg_send(tp, w->fa, MSG_REVOKE, region, seq, NULL, 0);
}

/* ------------------------------------------------------------------ */
/* Configuration */

static const struct refit_cfg_field ofip_config[] = {
    {"provider", REFIT_CFG_STRING, "tcp", 0, -1, NULL,
     "libfabric provider: efa (AWS), tcp (with ofi_rxm), shm, verbs, ..."},
    {"domain", REFIT_CFG_STRING, NULL, 0, -1, NULL,
     "pin a domain (rdmap16s27-rdm, eth0, lo); topology.nic_pin chooses one otherwise"},
    {"hmem", REFIT_CFG_ENUM, "auto", 0, -1, "auto|on|off",
     "register GPU memory with the provider (FI_HMEM): auto uses it where offered"},
    {"max_notify_len", REFIT_CFG_SIZE, "4KiB", 1, 65536, NULL, "largest notification"},
    {"recv_depth", REFIT_CFG_INT, "64", 1, 4096, NULL, "receive buffers posted for notifications"},
    RTP_NOTIFY_CFG_FIELDS,
    {"max_chunk", REFIT_CFG_SIZE, "64MiB", 4096, 1073741824.0, NULL,
     "descriptors are split into operations of at most this size"},
    {"progress_sleep_us", REFIT_CFG_INT, "20", 0, 100000, NULL,
     "idle sleep of the progress thread that serves peers' READs and WRITEs (0: spin)"},
    {"env", REFIT_CFG_MAP, NULL, 0, -1, NULL,
     "FI_* variables set before the provider is opened (libfabric reads only the environment: "
     "process-wide)"},
};

struct opts {
    const char *provider;
    const char *domain;
    const char *hmem;
    int64_t recv_depth;
    int status;
};

static int apply_env(void *arg, const char *key, const char *value)
{
    struct opts *o = arg;
    if (strncmp(key, "FI_", 3) || !key[3]) {
        o->status = H->error_set(REFIT_ECONFIG, "%s: transport.ofi.env.%s: only FI_* variables "
                                 "configure libfabric", OFIP, key);
        return 1;
    }
    /* libfabric reads its parameters from the environment only. */
    if (setenv(key, value, 1)) {
        o->status = H->error_set(REFIT_ECONFIG, "%s: setenv %s failed", OFIP, key);
        return 1;
    }
    H->log(0, OFIP, "%s=%s", key, value);
    return 0;
}

static int read_options(const struct refit_tp_init_args *a, refit_tp_t *tp, struct opts *o)
{
    o->provider = "tcp";
    o->domain = NULL;
    o->hmem = "auto";
    o->recv_depth = 64;
    tp->max_notify_len = 4096;
    if (!a->cfg || !a->cfg->cfg)
        return 0;
    const struct refit_cfg_view *v = a->cfg;
    int rc = H->cfg_str(v, "provider", &o->provider);
    if (!rc && H->cfg_has(v, "domain"))
        rc = H->cfg_str(v, "domain", &o->domain);
    if (!rc)
        rc = H->cfg_str(v, "hmem", &o->hmem);
    if (!rc)
        rc = H->cfg_int(v, "recv_depth", &o->recv_depth);
    if (!rc)
        rc = H->cfg_size(v, "max_notify_len", &tp->max_notify_len);
    if (!rc)
        rc = H->cfg_int(v, "progress_sleep_us", &tp->sleep_us);
    if (!rc)
        rc = H->cfg_size(v, "max_chunk", &tp->max_chunk);
    if (!rc) { /* entries may come one by one from --set, without the map */
        rc = H->cfg_map_each(v, "env", apply_env, o);
        if (o->status)
            rc = o->status;
    }
    return rc;
}

/* ------------------------------------------------------------------ */
/* init / fini */

static struct fi_info *make_hints(const char *provider, int hmem, int delivery)
{
    struct fi_info *h = fi_allocinfo();
    if (!h)
        return NULL;
    h->ep_attr->type = FI_EP_RDM;
    h->caps = FI_RMA | FI_READ | FI_WRITE | FI_REMOTE_READ | FI_REMOTE_WRITE | FI_MSG | FI_SEND |
              FI_RECV | (hmem ? FI_HMEM : 0);
    h->mode = FI_CONTEXT | FI_CONTEXT2;
    /* Every registration mode we know how to honour; the provider answers
     * with the subset it requires. */
    h->domain_attr->mr_mode = FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY |
                              FI_MR_ENDPOINT | (hmem ? FI_MR_HMEM : 0);
    h->domain_attr->threading = FI_THREAD_DOMAIN;
    h->tx_attr->op_flags = delivery ? FI_DELIVERY_COMPLETE : 0;
    h->fabric_attr->prov_name = strdup(provider);
    return h;
}

static int domain_matches(const char *dom, const struct refit_tp_init_args *a, const char *pinned)
{
    if (pinned)
        return !strcmp(dom, pinned);
    if (!a->nic_hint || !a->n_nic_hint)
        return 1;
    for (size_t i = 0; i < a->n_nic_hint; i++) {
        const char *h = a->nic_hint[i];
        size_t n = strcspn(h, ":"); /* "mlx5_0:1" names the device and port */
        /* EFA domains are "<ibdev>-rdm"; tcp/verbs domains the device. */
        if (!strncmp(dom, h, n) && (dom[n] == 0 || dom[n] == '-'))
            return 1;
    }
    return 0;
}

/* Regions our shm endpoints left behind when their process was killed
 * ("refit-<pid>-..." in /dev/shm with <pid> gone): unlinked, since nobody
 * can attach to a dead process's endpoint. */
static void shm_sweep(void)
{
    DIR *d = opendir("/dev/shm");
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char *end;
        if (strncmp(e->d_name, "refit-", 6))
            continue;
        long pid = strtol(e->d_name + 6, &end, 10);
        if (*end != '-' || pid <= 0 || (kill((pid_t)pid, 0) != 0 && errno == ESRCH)) {
            if (*end == '-' && pid > 0 && unlinkat(dirfd(d), e->d_name, 0) == 0)
                H->log(0, OFIP, "removed /dev/shm/%s of a process that is gone", e->d_name);
        }
    }
    if (d)
        closedir(d);
}

static int choose_info(refit_tp_t *tp, const struct refit_tp_init_args *a, const struct opts *o)
{
    /* auto: only a rank that has a GPU asks for FI_HMEM, which can send
     * some providers down slower paths or make them load the CUDA runtime. */
    int want_hmem = !strcmp(o->hmem, "on") || (!strcmp(o->hmem, "auto") && a->cuda_device >= 0);
    struct fi_info *list = NULL;
    int ret = -FI_ENODATA, hmem = 0, delivery = 0;
    /* Most wanted first: HMEM and delivery-complete writes, then without. */
    for (int attempt = 0; attempt < 4 && ret; attempt++) {
        hmem = want_hmem && attempt < 2;
        delivery = !(attempt & 1);
        if (!want_hmem && attempt < 2)
            continue;
        struct fi_info *h = make_hints(o->provider, hmem, delivery);
        if (!h)
            return H->error_set(REFIT_ENOMEM, "%s: out of memory", OFIP);
        ret = fi_getinfo(OFIP_API, NULL, NULL, 0, h, &list);
        fi_freeinfo(h);
        if (ret && ret != -FI_ENODATA)
            return H->error_set(REFIT_ENOENT, "%s: fi_getinfo(provider %s): %s (fi errno %d)", OFIP,
                                o->provider, fi_strerror(-ret), -ret);
    }
    if (ret)
        return H->error_set(REFIT_ENOENT, "%s: provider '%s' offers no FI_EP_RDM endpoint with "
                            "FI_RMA and FI_MSG here (see `fi_info -p %s`)", OFIP, o->provider,
                            o->provider);
    if (!strcmp(o->hmem, "on") && !hmem) {
        fi_freeinfo(list);
        return H->error_set(REFIT_ENOTSUP, "%s: hmem: on, but provider '%s' offers no FI_HMEM",
                            OFIP, o->provider);
    }
    struct fi_info *pick = NULL;
    for (struct fi_info *i = list; i && !pick; i = i->next)
        if (domain_matches(i->domain_attr->name, a, o->domain))
            pick = i;
    if (!pick && o->domain) {
        fi_freeinfo(list);
        return H->error_set(REFIT_ENOENT, "%s: provider '%s' has no domain '%s' (transport.ofi.domain)",
                            OFIP, o->provider, o->domain);
    }
    if (!pick) {
        /* A NIC chosen by topology that this provider does not expose
         * (shm has one domain, "shm"): the provider's own choice stands. */
        H->log(1, OFIP, "no %s domain matches the NUMA-local devices; using %s", o->provider,
               list->domain_attr->name);
        pick = list;
    }
    tp->info = fi_dupinfo(pick);
    fi_freeinfo(list);
    if (!tp->info)
        return H->error_set(REFIT_ENOMEM, "%s: out of memory", OFIP);
    if (!strncmp(prov_of(tp), "shm", 3) && tp->info->addr_format == FI_ADDR_STR) {
        shm_sweep();
        /* shm names its region after the pid unless told otherwise; a
         * killed process leaves its region behind, and with pids reused
         * the next process of that pid cannot enable its endpoint (EBUSY).
         * A name with the time in it does not collide. */
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        char name[96];
        int n = snprintf(name, sizeof(name), "refit-%ld-%lx%09lx", (long)getpid(), (long)ts.tv_sec,
                         (long)ts.tv_nsec);
        free(tp->info->src_addr); /* fi_freeinfo frees it with free() */
        tp->info->src_addr = strdup(name);
        tp->info->src_addrlen = tp->info->src_addr ? (size_t)n + 1 : 0;
    }
    tp->hmem = hmem;
    tp->write_flags = delivery ? FI_DELIVERY_COMPLETE : 0;
    tp->mr_mode = tp->info->domain_attr->mr_mode;
    tp->max_msg = tp->info->ep_attr->max_msg_size ? tp->info->ep_attr->max_msg_size : (1ull << 30);
    /* Chunks complete one by one, which is how wait() tells a slow
     * transfer from a stalled one. */
    if (tp->max_msg > tp->max_chunk)
        tp->max_msg = tp->max_chunk;
    H->log(1, OFIP, "%s: provider %s, domain %s, mr_mode %#" PRIx64 "%s%s",
           a->name ? a->name : "rank", prov_of(tp), tp->info->domain_attr->name, tp->mr_mode,
           hmem ? ", FI_HMEM" : "", delivery ? ", delivery-complete writes" : "");
    return 0;
}

static int open_objects(refit_tp_t *tp, int64_t recv_depth)
{
    int ret = fi_fabric(tp->info->fabric_attr, &tp->fabric, NULL);
    if (ret)
        return fi_fail(tp, REFIT_EPLUGIN, ret, "fi_fabric", NULL);
    ret = fi_domain(tp->fabric, tp->info, &tp->domain, NULL);
    if (ret)
        return fi_fail(tp, REFIT_EPLUGIN, ret, "fi_domain", NULL);
    struct fi_cq_attr cqa = {0};
    cqa.format = FI_CQ_FORMAT_DATA;
    cqa.wait_obj = FI_WAIT_NONE;
    cqa.size = 0;
    ret = fi_cq_open(tp->domain, &cqa, &tp->cq, NULL);
    if (ret)
        return fi_fail(tp, REFIT_EPLUGIN, ret, "fi_cq_open", NULL);
    struct fi_av_attr ava = {0};
    ava.type = FI_AV_TABLE;
    ret = fi_av_open(tp->domain, &ava, &tp->av, NULL);
    if (ret)
        return fi_fail(tp, REFIT_EPLUGIN, ret, "fi_av_open", NULL);
    ret = fi_endpoint(tp->domain, tp->info, &tp->ep, NULL);
    if (ret)
        return fi_fail(tp, REFIT_EPLUGIN, ret, "fi_endpoint", NULL);
    ret = fi_ep_bind(tp->ep, &tp->cq->fid, FI_TRANSMIT | FI_RECV);
    if (!ret)
        ret = fi_ep_bind(tp->ep, &tp->av->fid, 0);
    if (ret)
        return fi_fail(tp, REFIT_EPLUGIN, ret, "fi_ep_bind", NULL);
    ret = fi_enable(tp->ep);
    if (ret)
        return fi_fail(tp, REFIT_EPLUGIN, ret, "fi_enable", NULL);
    tp->addr_len = sizeof(tp->addr);
    ret = fi_getname(&tp->ep->fid, tp->addr, &tp->addr_len);
    if (ret)
        return fi_fail(tp, REFIT_EPLUGIN, ret, "fi_getname", NULL);

    tp->n_recv = (size_t)recv_depth;
    tp->recv_ops = H->calloc(tp->n_recv, sizeof(*tp->recv_ops));
    /* A note is the sender's name and its bytes; a hello our address. */
    tp->recv_len = sizeof(struct ofip_msg) + (tp->max_notify_len + REFIT_TP_NAME_MAX > OFIP_MAX_ADDR
                                                  ? tp->max_notify_len + REFIT_TP_NAME_MAX
                                                  : OFIP_MAX_ADDR);
    tp->recv_bufs = H->alloc(tp->n_recv * tp->recv_len);
    if (!tp->recv_ops || !tp->recv_bufs)
        return H->error_set(REFIT_ENOMEM, "%s: out of memory", OFIP);
    for (size_t i = 0; i < tp->n_recv; i++) {
        tp->recv_ops[i].kind = OP_RECV;
        tp->recv_ops[i].buf = tp->recv_bufs + i * tp->recv_len;
        int rc = post_recv(tp, &tp->recv_ops[i]);
        if (rc)
            return rc;
    }
    return 0;
}

static void ofip_fini(refit_tp_t *tp);

/* Progress rounds are not split for a waiting caller: cq_drain bounds
 * itself by what the queue holds. */
static size_t progress_cb(refit_tp_t *tp, int contended)
{
    (void)contended;
    return cq_drain(tp);
}

/* The CQ does not say when a peer's READ needs us: sleep briefly. */
static void idle_cb(refit_tp_t *tp, int stop_fd)
{
    (void)stop_fd;
    struct timespec ts = {0, tp->sleep_us * 1000};
    if (tp->sleep_us)
        nanosleep(&ts, NULL);
    else
        sched_yield();
}

static const struct rtp_ops ofip_rtp_ops = {
    .progress = progress_cb,
    .send_revoke = send_revoke_cb,
    .ack = ack_cb,
    .arm = NULL,
    .idle = idle_cb,
};

static int ofip_init(const struct refit_tp_init_args *a, refit_tp_t **out)
{
    if (!a || !out || a->size < sizeof(struct refit_tp_init_args))
        return H->error_set(REFIT_EINVAL, "%s: init without arguments", OFIP);
    refit_tp_t *tp = H->calloc(1, sizeof(*tp));
    if (!tp)
        return H->error_set(REFIT_ENOMEM, "%s: out of memory", OFIP);
    rtp_core_init(&tp->c, tp, &ofip_rtp_ops, OFIP, a->timeout_ms > 0 ? a->timeout_ms : 30000);
    tp->name = rtp_strdup(a->name ? a->name : "refit");
    tp->cuda_device = a->cuda_device;
    tp->next_key = 1;
    tp->next_region_id = 1;
    tp->sleep_us = 20;
    tp->max_chunk = 64ull << 20;
    struct opts o = {0};
    int rc = tp->name ? read_options(a, tp, &o) : H->error_set(REFIT_ENOMEM, "%s: out of memory", OFIP);
    if (!rc && strlen(tp->name) > REFIT_TP_NAME_MAX)
        rc = H->error_set(REFIT_EINVAL, "%s: name longer than %d bytes", OFIP, REFIT_TP_NAME_MAX);
    if (!rc)
        rc = rtp_notify_configure(&tp->c, a->cfg);
    if (!rc)
        rc = choose_info(tp, a, &o);
    if (!rc)
        rc = open_objects(tp, o.recv_depth);
    if (!rc)
        rc = rtp_thread_start(&tp->c);
    if (rc) {
        ofip_fini(tp);
        return rc;
    }
    tp->memtypes = REFIT_MEMTYPE_BIT(REFIT_MEM_HOST) |
                   (tp->hmem ? REFIT_MEMTYPE_BIT(REFIT_MEM_CUDA) : 0);
    *out = tp;
    return 0;
}

static void ofip_fini(refit_tp_t *tp)
{
    if (!tp)
        return;
    rtp_thread_stop(&tp->c);
    /* Let the last control messages (a bye) leave; their buffers are
     * freed by their completions. */
    if (tp->cq && tp->ctrl_inflight)
        rtp_spin(&tp->c, &tp->ctrl_inflight, NULL, 200);
    /* The endpoint goes first so no completion arrives for freed state. */
    if (tp->ep)
        fi_close(&tp->ep->fid);
    /* With the endpoint closed nothing moves data into kept regions any
     * more: release them before their domain. */
    while (tp->kept) {
        refit_tp_region_t *r = tp->kept;
        tp->kept = r->kept_next;
        fi_close(&r->mr->fid);
        H->free(r);
    }
    if (tp->av)
        fi_close(&tp->av->fid);
    if (tp->cq)
        fi_close(&tp->cq->fid);
    if (tp->domain)
        fi_close(&tp->domain->fid);
    if (tp->fabric)
        fi_close(&tp->fabric->fid);
    while (tp->peers) {
        refit_tp_peer_t *p = tp->peers;
        tp->peers = p->next;
        H->free(p->name);
        H->free(p);
    }
    for (struct refit_tp_req *r = tp->c.reqs; r; r = r->next)
        for (size_t i = 0; i < req_ext(r)->n_ops; i++)
            if (req_ext(r)->ops[i].kind == OP_SEND)
                H->free(req_ext(r)->ops[i].buf);
    while (tp->ctrl_ops) { /* to peers that vanished: never completed */
        struct ofip_op *op = tp->ctrl_ops;
        tp->ctrl_ops = op->next;
        H->free(op->buf);
        H->free(op);
    }
    rtp_core_fini(&tp->c, NULL);
    H->free(tp->recv_ops);
    H->free(tp->recv_bufs);
    if (tp->info)
        fi_freeinfo(tp->info);
    H->free(tp->name);
    H->free(tp);
}

static int ofip_describe(refit_tp_t *tp, char *buf, size_t cap)
{
    if (!tp || !buf || !cap)
        return H->error_set(REFIT_EINVAL, "%s: describe without a buffer", OFIP);
    char *mr = fi_tostr(&tp->mr_mode, FI_TYPE_MR_MODE);
    snprintf(buf, cap, "libfabric %u.%u, provider %s, fabric %s, domain %s, mr_mode [%s]%s%s",
             FI_MAJOR(fi_version()), FI_MINOR(fi_version()), prov_of(tp), tp->info->fabric_attr->name,
             tp->info->domain_attr->name, mr ? mr : "?", tp->hmem ? ", FI_HMEM" : "",
             tp->write_flags ? ", delivery-complete writes" : "");
    return 0;
}

static int ofip_caps(refit_tp_t *tp, struct refit_tp_caps *out)
{
    if (!tp)
        return H->error_set(REFIT_EINVAL, "%s: caps without tp", OFIP);
    return rtp_caps(OFIP, tp->memtypes, tp->max_notify_len, out);
}

static int ofip_address(refit_tp_t *tp, void *buf, size_t *len)
{
    if (!tp)
        return H->error_set(REFIT_EINVAL, "%s: address without tp", OFIP);
    return rtp_address_pack(&tp->c, OFIP_ADDR_MAGIC, OFIP_BLOB_VERSION, tp->addr, tp->addr_len, buf, len);
}

/* ------------------------------------------------------------------ */
/* Memory */

static int ofip_reg(refit_tp_t *tp, void *ptr, size_t len, uint32_t memtype, refit_tp_region_t **out)
{
    if (!tp || !ptr || !len || !out)
        return H->error_set(REFIT_EINVAL, "%s: register needs a pointer and a length", OFIP);
    if (memtype != REFIT_MEM_HOST && memtype != REFIT_MEM_CUDA)
        return H->error_set(REFIT_EINVAL, "%s: unknown memory type %u", OFIP, memtype);
    if (!(tp->memtypes & REFIT_MEMTYPE_BIT(memtype)))
        return H->error_set(REFIT_ENOTSUP, "%s(%s): provider offers no FI_HMEM: CUDA memory is "
                            "staged by the core", OFIP, prov_of(tp));
    refit_tp_region_t *r = H->calloc(1, sizeof(*r));
    if (!r)
        return H->error_set(REFIT_ENOMEM, "%s: out of memory", OFIP);
    struct iovec iov = {ptr, len};
    struct fi_mr_attr ma = {0};
    ma.mr_iov = &iov;
    ma.iov_count = 1;
    ma.access = FI_READ | FI_WRITE | FI_REMOTE_READ | FI_REMOTE_WRITE | FI_SEND | FI_RECV;
    ma.requested_key = tp->next_key++;
    ma.iface = FI_HMEM_SYSTEM;
    if (memtype == REFIT_MEM_CUDA) {
        ma.iface = FI_HMEM_CUDA;
        ma.device.cuda = tp->cuda_device < 0 ? 0 : tp->cuda_device;
    }
    int ret = fi_mr_regattr(tp->domain, &ma, 0, &r->mr);
    if (ret) {
        H->free(r);
        return fi_fail(tp, status_of(ret) == REFIT_ESTALE ? REFIT_EINVAL : status_of(ret), ret,
                       "fi_mr_regattr", NULL);
    }
    if (tp->mr_mode & FI_MR_ENDPOINT) {
        ret = fi_mr_bind(r->mr, &tp->ep->fid, 0);
        if (!ret)
            ret = fi_mr_enable(r->mr);
        if (ret) {
            fi_close(&r->mr->fid);
            H->free(r);
            return fi_fail(tp, REFIT_EPLUGIN, ret, "fi_mr_bind/enable", NULL);
        }
    }
    r->desc = fi_mr_desc(r->mr);
    r->key = fi_mr_key(r->mr);
    if (r->key == FI_KEY_NOTAVAIL) {
        fi_close(&r->mr->fid);
        H->free(r);
        return H->error_set(REFIT_ENOTSUP, "%s(%s): provider wants raw keys (FI_MR_RAW), not "
                            "supported", OFIP, prov_of(tp));
    }
    r->ptr = ptr;
    r->len = len;
    r->memtype = memtype;
    r->id = tp->next_region_id++;
    *out = r;
    return 0;
}

static int ofip_dereg(refit_tp_t *tp, refit_tp_region_t *r)
{
    if (!tp || !r)
        return 0;
    int rc = rtp_local_quiesce(&tp->c, r);
    if (rc) {
        /* The caller keeps its memory (the error says so); the region is
         * ours until a later dereg succeeds or fini. */
        if (!r->kept) {
            r->kept = 1;
            r->kept_next = tp->kept;
            tp->kept = r;
        }
        return rc;
    }
    if (r->kept)
        for (refit_tp_region_t **pp = &tp->kept; *pp; pp = &(*pp)->kept_next)
            if (*pp == r) {
                *pp = r->kept_next;
                break;
            }
    if (tp->c.watchers)
        rtp_revoke_all(&tp->c, r->id);
    int ret = fi_close(&r->mr->fid);
    H->free(r);
    return ret ? fi_fail(tp, REFIT_EPLUGIN, ret, "fi_close(mr)", NULL) : 0;
}

static int ofip_pack_rkey(refit_tp_t *tp, refit_tp_region_t *r, void *buf, size_t *len)
{
    if (!tp || !r || !len)
        return H->error_set(REFIT_EINVAL, "%s: pack_rkey without a region", OFIP);
    size_t need = sizeof(struct ofip_rkey_hdr);
    if (!buf) {
        *len = need;
        return 0;
    }
    if (*len < need) {
        *len = need;
        return H->error_set(REFIT_ERANGE, "%s: remote key needs %zu bytes", OFIP, need);
    }
    /* Offsets are turned into virtual addresses only where the provider
     * wants them (FI_MR_VIRT_ADDR); the peer never has to know. */
    uint64_t base = (tp->mr_mode & FI_MR_VIRT_ADDR) ? (uint64_t)(uintptr_t)r->ptr : 0;
    struct ofip_rkey_hdr h = {OFIP_RKEY_MAGIC, OFIP_BLOB_VERSION, (uint16_t)r->memtype, base, r->len,
                              r->id, r->key};
    memcpy(buf, &h, need);
    *len = need;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Peers */

static int ofip_connect(refit_tp_t *tp, const void *addr, size_t len, const char *peer_name,
                        refit_tp_peer_t **out)
{
    const char *who = peer_name ? peer_name : "?";
    if (!tp || !addr || !out)
        return H->error_set(REFIT_EINVAL, "%s: connect without an address", OFIP);
    struct rtp_addr_hdr h;
    int rc = rtp_address_parse(&tp->c, OFIP_ADDR_MAGIC, OFIP_BLOB_VERSION, sizeof(tp->addr), "an ofi address", addr,
                               len, who, &h);
    if (rc)
        return rc;
    refit_tp_peer_t *p = H->calloc(1, sizeof(*p));
    if (!p || !(p->name = rtp_strdup(who))) {
        H->free(p);
        return H->error_set(REFIT_ENOMEM, "%s: out of memory", OFIP);
    }
    /* The address vector checks the format of the provider's address. */
    int ret = fi_av_insert(tp->av, (const char *)addr + sizeof(h), 1, &p->fa, 0, NULL);
    if (ret != 1) {
        H->free(p->name);
        H->free(p);
        return fi_fail(tp, REFIT_EPROTO, ret < 0 ? ret : FI_EINVAL, "fi_av_insert", who);
    }
    p->tp = tp;
    p->owner_id = h.tp_id;
    /* Hello: the owner tells us when it deregisters a region. */
    if (msg_send(tp, p->fa, MSG_HELLO, 0, 0, tp->addr, tp->addr_len))
        H->log(2, OFIP, "peer '%s': hello not sent; its deregistrations will not reach us", who);
    p->next = tp->peers;
    tp->peers = p;
    *out = p;
    return 0;
}

static void ofip_disconnect(refit_tp_t *tp, refit_tp_peer_t *p)
{
    if (!tp || !p)
        return;
    for (refit_tp_peer_t **pp = &tp->peers; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    rtp_forget_peer(&tp->c, p, p->name, 0);
    for (struct refit_tp_req *r = tp->c.reqs; r; r = r->next)
        for (size_t i = 0; i < req_ext(r)->n_ops; i++)
            if (req_ext(r)->ops[i].peer == p)
                req_ext(r)->ops[i].peer = NULL;
    for (refit_tp_rkey_t *k = p->rkeys; k; k = k->next)
        k->peer = NULL;
    /* The address stays in the vector: the bye may still be in flight.
     * (Removing a failed peer's address does not help: libfabric 1.17's
     * rxm keeps its connection by address and hands it back on the next
     * insert; see transports.md on what ofi can and cannot recover.) */
    if (!p->failed)
        msg_send(tp, p->fa, MSG_BYE, 0, 0, NULL, 0);
    H->free(p->name);
    H->free(p);
}

static int ofip_unpack_rkey(refit_tp_t *tp, refit_tp_peer_t *p, const void *buf, size_t len,
                            refit_tp_rkey_t **out)
{
    if (!tp || !p || !buf || !out)
        return H->error_set(REFIT_EINVAL, "%s: unpack_rkey without a peer or key", OFIP);
    struct ofip_rkey_hdr h;
    if (len != sizeof(h))
        return H->error_set(REFIT_EPROTO, "%s: remote key from peer '%s' is %zu bytes, expected %zu",
                            OFIP, p->name, len, sizeof(h));
    memcpy(&h, buf, sizeof(h));
    if (h.magic != OFIP_RKEY_MAGIC || h.version != OFIP_BLOB_VERSION || !h.len ||
        h.base + h.len < h.base)
        return H->error_set(REFIT_EPROTO, "%s: remote key from peer '%s' is malformed (magic %#x)",
                            OFIP, p->name, h.magic);
    refit_tp_rkey_t *k = H->calloc(1, sizeof(*k));
    if (!k)
        return H->error_set(REFIT_ENOMEM, "%s: out of memory", OFIP);
    k->peer = p;
    k->base = h.base;
    k->len = h.len;
    k->id = h.id;
    k->key = h.key;
    k->next = p->rkeys;
    p->rkeys = k;
    *out = k;
    return 0;
}

static void ofip_release_rkey(refit_tp_t *tp, refit_tp_rkey_t *k)
{
    if (!tp || !k)
        return;
    if (k->peer)
        for (refit_tp_rkey_t **pk = &k->peer->rkeys; *pk; pk = &(*pk)->next)
            if (*pk == k) {
                *pk = k->next;
                break;
            }
    H->free(k);
}

/* ------------------------------------------------------------------ */
/* Transfers */

RTP_DEFINE_CHECK_DESC(OFIP)

/* Issue one chunk, making room in the transmit queue by reaping
 * completions when the provider says it is full. */
static int issue(refit_tp_t *tp, refit_tp_peer_t *p, struct ofip_op *op, void *lp, size_t n,
                 void *desc, uint64_t raddr, uint64_t key)
{
    int64_t deadline = 0;
    for (;;) {
        ssize_t ret;
        if (op->is_write) {
            struct iovec iov = {lp, n};
            struct fi_rma_iov riov = {raddr, n, key};
            struct fi_msg_rma m = {&iov, &desc, 1, p->fa, &riov, 1, &op->fctx, 0};
            ret = fi_writemsg(tp->ep, &m, FI_COMPLETION | tp->write_flags);
        } else {
            ret = fi_read(tp->ep, lp, n, desc, p->fa, raddr, key, &op->fctx);
        }
        if (ret == 0)
            return 0;
        if (ret != -FI_EAGAIN)
            return (int)ret;
        cq_drain(tp);
        if (!deadline)
            deadline = rtp_now_ms() + tp->c.timeout_ms;
        else if (rtp_now_ms() > deadline)
            return -FI_ETIMEDOUT;
    }
}

static int ofip_post(refit_tp_t *tp, refit_tp_peer_t *p, const struct refit_tp_desc *d, size_t n,
                     refit_tp_req_t **out)
{
    if (!tp || !p || (!d && n) || !out)
        return H->error_set(REFIT_EINVAL, "%s: post without peer or descriptors", OFIP);
    size_t n_ops = 0;
    for (size_t i = 0; i < n; i++) {
        int rc = check_desc(p, &d[i], i);
        if (rc)
            return rc;
        n_ops += (d[i].len + tp->max_msg - 1) / tp->max_msg;
    }
    if (p->failed)
        return H->error_set(REFIT_ECONN, "%s: peer '%s' failed earlier: %s", OFIP, p->name, p->why);
    struct refit_tp_req *r = req_new(tp, p, n_ops);
    if (!r)
        return H->error_set(REFIT_ENOMEM, "%s: out of memory", OFIP);
    /* The distinct remote regions, so that a revoke finds this request. */
    for (size_t i = 0; i < n; i++)
        if (rtp_req_note_region(r, d[i].remote->id) || rtp_req_note_local(r, d[i].local)) {
            rtp_req_unlink_free(&tp->c, r);
            return H->error_set(REFIT_ENOMEM, "%s: out of memory", OFIP);
        }
    size_t k = 0;
    for (size_t i = 0; i < n && !r->status; i++) {
        for (uint64_t off = 0; off < d[i].len && !r->status; off += tp->max_msg) {
            uint64_t len = d[i].len - off < tp->max_msg ? d[i].len - off : tp->max_msg;
            struct ofip_op *op = &req_ext(r)->ops[k++];
            op->kind = OP_RMA;
            op->req = r;
            op->is_write = d[i].op == REFIT_OP_WRITE;
            op->peer = op->is_write ? p : NULL;
            void *lp = (char *)d[i].local->ptr + d[i].local_off + off;
            uint64_t ra = d[i].remote->base + d[i].remote_off + off;
            r->pending++;
            p->ops_pending++;
            if (op->is_write)
                p->writes_pending++;
            int ret = issue(tp, p, op, lp, (size_t)len, d[i].local->desc, ra, d[i].remote->key);
            if (ret) {
                r->pending--;
                p->ops_pending--;
                if (op->is_write)
                    p->writes_pending--;
                /* A queue that stays full for transport.timeout is a peer
                 * that stopped taking our operations. */
                int st = ret == -FI_ETIMEDOUT ? REFIT_ECONN
                         : status_of(ret) == REFIT_ESTALE ? REFIT_EINVAL : status_of(ret);
                rtp_req_fail(r, st, "%s(%s): %s to peer '%s' not posted: %s (fi errno %d)", OFIP,
                             prov_of(tp), op->is_write ? "fi_write" : "fi_read", p->name,
                             fi_strerror(-ret), -ret);
                if (st == REFIT_ECONN)
                    peer_fail(p, "operations not accepted within transport.timeout");
            }
        }
    }
    *out = r;
    return 0;
}

static int ofip_test(refit_tp_t *tp, refit_tp_req_t *r)
{
    if (!tp || !r)
        return H->error_set(REFIT_EINVAL, "%s: test without a request", OFIP);
    if (r->pending && !r->status)
        cq_drain(tp);
    return rtp_req_result(r);
}

static int ofip_wait(refit_tp_t *tp, refit_tp_req_t *r, int64_t timeout_ms)
{
    if (!tp || !r)
        return H->error_set(REFIT_EINVAL, "%s: wait without a request", OFIP);
    /* transport.timeout bounds how long a request may make no progress
     * (chunks of max_chunk complete one by one; a peer that stops or
     * vanishes stops them).  The peer then stays failed. */
    int64_t t0 = rtp_now_ms();
    size_t last_pending = r->pending;
    while (r->pending && !r->status) {
        int64_t left = timeout_ms < 0 ? tp->c.timeout_ms : timeout_ms - (rtp_now_ms() - t0);
        if (left <= 0)
            break;
        int64_t slice = left < tp->c.timeout_ms ? left : tp->c.timeout_ms;
        if (!rtp_spin(&tp->c, &r->pending, &r->status, slice))
            break;
        if (r->pending == last_pending && slice == tp->c.timeout_ms) {
            if (r->peer && !r->peer->failed) {
                r->peer->failed = 1;
                snprintf(r->peer->why, sizeof(r->peer->why), "no progress for %" PRId64 " ms",
                         tp->c.timeout_ms);
            }
            rtp_req_fail(r, REFIT_ECONN, "%s(%s): transfer with peer '%s': no progress for %" PRId64
                     " ms (transport.timeout); peer presumed gone", OFIP, prov_of(tp),
                     r->peer ? r->peer->name : "?", tp->c.timeout_ms);
            break;
        }
        last_pending = r->pending;
    }
    if (r->pending && !r->status) {
        return H->error_set(REFIT_ETIMEDOUT, "%s(%s): transfer with peer '%s': not complete after "
                            "%" PRId64 " ms (%zu operations outstanding)", OFIP, prov_of(tp),
                            r->peer ? r->peer->name : "?", timeout_ms, r->pending);
    }
    return rtp_req_result(r);
}

/* ------------------------------------------------------------------ */
/* Notifications */

static int ofip_notify(refit_tp_t *tp, refit_tp_peer_t *p, const void *msg, size_t len)
{
    if (!tp || !p || (!msg && len))
        return H->error_set(REFIT_EINVAL, "%s: notify without a peer", OFIP);
    if (len > tp->max_notify_len)
        return H->error_set(REFIT_ETOOBIG, "%s: notification of %zu bytes to peer '%s' exceeds "
                            "max_notify_len %" PRIu64, OFIP, len, p->name, tp->max_notify_len);
    if (p->failed)
        return H->error_set(REFIT_ECONN, "%s: peer '%s' failed earlier: %s", OFIP, p->name, p->why);
    /* Every WRITE to this peer is delivered before the note leaves. */
    if (rtp_spin(&tp->c, &p->writes_pending, NULL, tp->c.timeout_ms)) {
        peer_fail(p, "writes not complete within transport.timeout");
        return H->error_set(REFIT_ECONN, "%s(%s): notify peer '%s': %zu earlier writes not "
                            "complete within %" PRId64 " ms (transport.timeout); peer presumed gone",
                            OFIP, prov_of(tp), p->name, p->writes_pending, tp->c.timeout_ms);
    }
    struct refit_tp_req *r = req_new(tp, p, 1);
    size_t nl = strlen(tp->name), total = sizeof(struct ofip_msg) + nl + len;
    unsigned char *copy = H->alloc(total);
    if (!r || !copy) {
        H->free(copy);
        if (r)
            rtp_req_unlink_free(&tp->c, r);
        return H->error_set(REFIT_ENOMEM, "%s: out of memory", OFIP);
    }
    struct ofip_msg mh = {MSG_NOTE, (uint32_t)(nl + len), tp->c.id, 0, nl};
    memcpy(copy, &mh, sizeof(mh));
    memcpy(copy + sizeof(mh), tp->name, nl);
    if (len)
        memcpy(copy + sizeof(mh) + nl, msg, len);
    struct ofip_op *op = &req_ext(r)->ops[0];
    op->kind = OP_SEND;
    op->req = r;
    op->buf = copy;
    r->pending = 1;
    int64_t deadline = rtp_now_ms() + tp->c.timeout_ms;
    ssize_t ret;
    while ((ret = fi_send(tp->ep, copy, total, NULL, p->fa, &op->fctx)) == -FI_EAGAIN &&
           rtp_now_ms() < deadline)
        cq_drain(tp);
    if (ret) {
        H->free(copy);
        rtp_req_unlink_free(&tp->c, r);
        return fi_fail(tp, status_of((int)ret) == REFIT_ESTALE ? REFIT_EPLUGIN : status_of((int)ret),
                       (int)ret, "fi_send (notify)", p->name);
    }
    /* Waiting for the send completion turns a dead peer into an error
     * here rather than a note silently lost. */
    int rc = rtp_spin(&tp->c, &r->pending, &r->status, tp->c.timeout_ms);
    if (rc) {
        r->released = 1;
        peer_fail(p, "a notification not sent within transport.timeout");
        return H->error_set(REFIT_ECONN, "%s(%s): notify peer '%s': not sent within %" PRId64
                            " ms (transport.timeout); peer presumed gone", OFIP, prov_of(tp), p->name,
                            tp->c.timeout_ms);
    }
    rc = rtp_req_result(r);
    if (r->pending)
        r->released = 1;
    else
        rtp_req_unlink_free(&tp->c, r);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Entry points: each holds the lock the progress thread takes. */

RTP_TRANSPORT_OPS(ofip, OFIP);

/* ------------------------------------------------------------------ */
/* Plugin descriptor */

static int ofip_load(const struct refit_host *host)
{
    H = host;
    rtp_load(host);
    /* libfabric initialises its providers once per process (constructors,
     * fi_ini) and does not support being unloaded and loaded again: keep it
     * resident when the loader closes this plugin. */
    if (!dlopen("libfabric.so.1", RTLD_LAZY | RTLD_NOLOAD | RTLD_NODELETE))
        H->log(0, OFIP, "libfabric.so.1 not pinned: %s", dlerror());
    return 0;
}

static const struct refit_plugin ofip_plugin = {
    .abi_major = REFIT_ABI_MAJOR,
    .abi_minor = REFIT_ABI_MINOR,
    .kind = REFIT_PLUGIN_TRANSPORT,
    .name = "ofi",
    .version = "0.1.0",
    .description = "libfabric (FI_EP_RDM, fi_read/fi_write): AWS EFA, tcp, shm, verbs",
    .config = ofip_config,
    .n_config = sizeof(ofip_config) / sizeof(ofip_config[0]),
    .load = ofip_load,
    .unload = NULL,
    .ops = &ofip_ops,
};

REFIT_PLUGIN_EXPORT const struct refit_plugin *refit_plugin_entry(void)
{
    return &ofip_plugin;
}
