/* ucx.c — the `ucx` transport plugin: one-sided READ/WRITE with ucp RMA
 * (ucp_get_nbx / ucp_put_nbx) between regions mapped with ucp_mem_map, and
 * notifications as ucp active messages.
 *
 * One ucp context and one worker per refit_tp_t; the worker address is the
 * address blob.  UCX settings come from the YAML (transport.ucx.env) and
 * are applied to this context's ucp_config_t only, so nothing leaks into
 * the environment of other UCX users in the process.
 *
 * Threading: the worker is UCS_THREAD_MODE_SERIALIZED, not SINGLE, because
 * besides the caller's thread a progress thread drives it whenever the
 * caller is not inside the plugin: without RDMA hardware (UCX's tcp and
 * shared-memory transports) a READ of our memory is served by *our*
 * worker's progress (UCX emulates RMA with active messages), and a
 * publisher that is busy training must still serve it.  One mutex
 * serialises every use of the worker, so UCX never sees two threads at
 * once; the progress thread sleeps on the worker's event fd.
 *
 * Completion: a request counts its outstanding ucp operations; a READ batch
 * is complete when every get has landed, a WRITE batch when every put has
 * completed *remotely* — the batch ends with ucp_ep_flush_nbx, because a put's
 * own completion is only local (the source buffer may be reused).
 *
 * Notifications carry the sender's name (its transport's init name) in the
 * active message's header; UCX authenticates nothing, so that name is what
 * the sender says (docs/security.md).  Received ones wait in rtp_core's
 * bounded queue.
 *
 * Ordering of notifications: UCX orders nothing between RMA and active
 * messages (they may take different lanes), so notify() first flushes the
 * endpoint — every put posted before it is then remotely complete — and
 * only then sends the active message.  That costs one round trip per
 * notification, which push mode pays once per version.
 *
 * Stale keys: UCX does not check a remote key against a registration that
 * is gone (emulated RMA reads whatever the address holds).  So the owner
 * revokes: every process that connects to us says hello (with its worker
 * address); dereg() sends each of them a revoke for the region and waits
 * (transport.timeout at most) for their acknowledgements before it unmaps.
 * A requester that gets a revoke marks the keys of that region stale (later
 * posts fail with REFIT_ESTALE), fails its requests that use them, flushes
 * its endpoint (so none of its operations is still in flight) and only then
 * acknowledges. */
#include <dlfcn.h>
#include <inttypes.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <ucp/api/ucp.h>

#include "refit/plugin.h"
#include "refit/status.h"
#include "refit/transport.h"
#include "tp_common.h"

#define UCXP "ucx"
#define UCXP_AM_NOTIFY 0x5246 /* active message id of notifications */
#define UCXP_AM_CTRL 0x5247   /* hello, revoke, ack, bye */
#define UCXP_ADDR_MAGIC 0x41555852u /* "RXUA" */
#define UCXP_RKEY_MAGIC 0x4b555852u /* "RXUK" */
#define UCXP_BLOB_VERSION 2

static const struct refit_host *H;

/* ------------------------------------------------------------------ */
/* Objects */

struct refit_tp {
    ucp_context_h ctx;
    ucp_worker_h worker;
    ucp_address_t *addr;
    size_t addr_len;
    char *name;
    uint64_t max_notify_len;
    int err_mode; /* 0 none, 1 peer, 2 auto (peer, else none) */
    uint32_t memtypes; /* REFIT_MEMTYPE_BIT set reachable directly */
    uint64_t next_region_id;
    struct refit_tp_peer *peers;
    char desc[512]; /* describe(): what UCX was told to use */
    int in_ctrl;    /* ctrl_work() running: no re-entry */
    int ctrl_dirty; /* a hello or bye arrived: watchers need ctrl_work */
    size_t ctrl_inflight; /* control sends not yet completed */
    struct refit_tp_region *kept; /* regions a dereg could not release (see ucxp_dereg) */
    int efd;          /* the worker's event fd, -1: sleep-poll */
    struct rtp_core c; /* requests, notices, watchers, acks, lock, thread */
};

struct refit_tp_region {
    ucp_mem_h memh;
    void *ptr;
    size_t len;
    uint32_t memtype;
    uint64_t id;
    void *packed; /* our blob: header + ucp_rkey_pack output */
    size_t packed_len;
    /* In tp->kept after a dereg that timed out (requests still in flight
     * into it): fini unmaps it once the worker is gone. */
    struct refit_tp_region *kept_next;
    int kept;
};

struct refit_tp_peer {
    refit_tp_t *tp;
    struct refit_tp_peer *next;
    ucp_ep_h ep;
    char *name;
    uint64_t owner_id; /* the transport id in its address */
    ucs_status_t err;  /* UCS_OK until the error callback fires */
    struct refit_tp_rkey *rkeys;
};

struct refit_tp_rkey {
    refit_tp_peer_t *peer;
    struct refit_tp_rkey *next; /* in peer->rkeys */
    ucp_rkey_h rk;
    uint64_t base, len, id;
    int stale;
};

/* Wire headers, host byte order: peers are the same architecture (a
 * foreign blob fails the magic check rather than being misread). */
struct ucxp_rkey_hdr {
    uint32_t magic;
    uint16_t version, memtype;
    uint64_t base, len, id, ucp_len;
};

enum { CTRL_HELLO = 1, CTRL_REVOKE, CTRL_ACK, CTRL_BYE };

struct ucxp_ctrl {
    uint32_t type, reserved;
    uint64_t sender; /* transport id of the sender */
    uint64_t a, b;   /* REVOKE: region, seq; ACK: seq; HELLO: address length */
};

/* ------------------------------------------------------------------ */
/* Helpers */

/* UCX's code and text in every message. */
static int ucxp_err(int status, ucs_status_t us, const char *fmt, const char *what, const char *who)
{
    return H->error_set(status, "%s: %s%s%s%s: %s (UCS %d)", UCXP, fmt, what ? what : "",
                        who ? " peer " : "", who ? who : "", ucs_status_string(us), (int)us);
}

static int status_of(ucs_status_t us)
{
    switch (us) {
    case UCS_ERR_NO_MEMORY:
        return REFIT_ENOMEM;
    case UCS_ERR_TIMED_OUT:
    case UCS_ERR_ENDPOINT_TIMEOUT:
        return REFIT_ETIMEDOUT;
    case UCS_ERR_CANCELED:
        return REFIT_ECANCELED;
    case UCS_ERR_UNSUPPORTED:
        return REFIT_ENOTSUP;
    case UCS_ERR_INVALID_PARAM:
        return REFIT_EINVAL;
    case UCS_ERR_CONNECTION_RESET:
    case UCS_ERR_UNREACHABLE:
    case UCS_ERR_REJECTED:
    case UCS_ERR_NOT_CONNECTED:
    case UCS_ERR_IO_ERROR:
        return REFIT_ECONN;
    default:
        return REFIT_EPLUGIN;
    }
}

/* Completion of one ucp operation of a request (get, put or flush). */
static void op_done(void *request, ucs_status_t us, void *user_data)
{
    struct refit_tp_req *r = user_data;
    if (us != UCS_OK)
        rtp_req_fail(r, us == UCS_ERR_CANCELED ? REFIT_ECANCELED : REFIT_ECONN,
                 "%s: transfer with peer '%s' failed: %s (UCS %d)", UCXP, r->peer ? r->peer->name : "?",
                 ucs_status_string(us), (int)us);
    ucp_request_free(request);
    if (r->pending)
        r->pending--;
    if (!r->pending && r->released)
        rtp_req_unlink_free(&r->tp->c, r);
}

static size_t ctrl_work(refit_tp_t *tp);
static void track(struct refit_tp_req *r, ucs_status_ptr_t sp, const char *what);
static int ctrl_send(refit_tp_t *tp, ucp_ep_h ep, uint32_t type, uint64_t a, uint64_t b,
                     const void *tail, size_t tail_len);

static size_t progress_all(refit_tp_t *tp)
{
    size_t n = 0, k;
    /* Bounded so that one call cannot spin forever on a busy worker. */
    for (int i = 0; i < 64 && (k = ucp_worker_progress(tp->worker)) > 0; i++)
        n += k;
    if (tp->ctrl_dirty || tp->c.acks)
        n += ctrl_work(tp);
    return n;
}

/* The progress thread's round: while a caller waits for the lock, one
 * worker round per hold (see rtp_core's thread). */
static size_t progress_cb(refit_tp_t *tp, int contended)
{
    return contended ? ucp_worker_progress(tp->worker) : progress_all(tp);
}

/* ------------------------------------------------------------------ */
/* Configuration */

static const struct refit_cfg_field ucxp_config[] = {
    {"env", REFIT_CFG_MAP, NULL, 0, -1, NULL,
     "UCX settings for this transport only (UCX_TLS, UCX_NET_DEVICES, UCX_IB_GPU_DIRECT_RDMA, ...)"},
    {"max_notify_len", REFIT_CFG_SIZE, "4KiB", 1, 65536, NULL,
     "largest notification (sent eagerly as one active message)"},
    RTP_NOTIFY_CFG_FIELDS,
    {"error_handling", REFIT_CFG_ENUM, "auto", 0, -1, "auto|peer|none",
     "peer: endpoints report a failed peer (UCX then skips transports without peer-failure "
     "support, e.g. shared memory in UCX 1.13); none: a dead peer shows as transport.timeout; "
     "auto: peer, or none with a warning when no transport to the peer supports it"},
};

struct env_ctx {
    ucp_config_t *uc;
    int status;
    int net_devices_given;
};

static int valid_var(const char *k)
{
    if (!*k)
        return 0;
    for (const char *p = k; *p; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_'))
            return 0;
    return 1;
}

static int apply_env(void *arg, const char *key, const char *value)
{
    struct env_ctx *e = arg;
    const char *k = strncmp(key, "UCX_", 4) ? key : key + 4;
    if (!valid_var(k)) {
        e->status = H->error_set(REFIT_ECONFIG, "%s: transport.ucx.env.%s: not a UCX variable name "
                                 "(UCX_ followed by upper-case letters, digits, '_')", UCXP, key);
        return 1;
    }
    if (!strcmp(k, "NET_DEVICES"))
        e->net_devices_given = 1;
    ucs_status_t us = ucp_config_modify(e->uc, k, value);
    if (us != UCS_OK) {
        e->status = H->error_set(REFIT_ECONFIG, "%s: transport.ucx.env.%s=%s rejected by UCX: %s (UCS %d)",
                                 UCXP, key, value, ucs_status_string(us), (int)us);
        return 1;
    }
    H->log(0, UCXP, "UCX_%s=%s (this context only)", k, value);
    return 0;
}

/* topology.nic_pin chose devices: they win over anything read from the
 * process environment (a UCX_NET_DEVICES exported for another component)
 * and over transport.ucx.env, which we warn about. */
static int apply_nic_hint(ucp_config_t *uc, const struct refit_tp_init_args *a, int given)
{
    if (!a->nic_hint || !a->n_nic_hint)
        return 0;
    size_t n = 1;
    for (size_t i = 0; i < a->n_nic_hint; i++)
        n += strlen(a->nic_hint[i]) + 1;
    char *list = H->alloc(n);
    if (!list)
        return H->error_set(REFIT_ENOMEM, "%s: out of memory", UCXP);
    list[0] = 0;
    for (size_t i = 0; i < a->n_nic_hint; i++) {
        if (i)
            strcat(list, ",");
        strcat(list, a->nic_hint[i]);
    }
    if (given)
        H->log(2, UCXP, "topology.nic_pin overrides transport.ucx.env.UCX_NET_DEVICES with %s", list);
    ucs_status_t us = ucp_config_modify(uc, "NET_DEVICES", list);
    int rc = 0;
    if (us != UCS_OK)
        rc = H->error_set(REFIT_ECONFIG, "%s: UCX_NET_DEVICES=%s (from topology) rejected: %s (UCS %d)",
                          UCXP, list, ucs_status_string(us), (int)us);
    else
        H->log(1, UCXP, "%s: bound to %s (topology.nic_pin)", a->name ? a->name : "rank", list);
    H->free(list);
    return rc;
}

static int read_options(const struct refit_tp_init_args *a, ucp_config_t *uc, refit_tp_t *tp)
{
    struct env_ctx e = {uc, 0, 0};
    tp->max_notify_len = 4096;
    tp->err_mode = 2;
    if (a->cfg && a->cfg->cfg) {
        const char *em = "auto";
        int rc = H->cfg_size(a->cfg, "max_notify_len", &tp->max_notify_len);
        if (!rc)
            rc = H->cfg_str(a->cfg, "error_handling", &em);
        if (rc)
            return rc;
        tp->err_mode = !strcmp(em, "none") ? 0 : !strcmp(em, "peer") ? 1 : 2;
        /* Not gated on cfg_has: entries set one by one (--set
         * transport.ucx.env.UCX_TLS=tcp) exist without the map itself. */
        rc = H->cfg_map_each(a->cfg, "env", apply_env, &e);
        if (e.status)
            return e.status;
        if (rc)
            return rc;
    }
    return apply_nic_hint(uc, a, e.net_devices_given);
}

/* ------------------------------------------------------------------ */
/* init / fini */

static ucs_status_t am_notify_cb(void *arg, const void *header, size_t header_length, void *data,
                                 size_t length, const ucp_am_recv_param_t *param)
{
    refit_tp_t *tp = arg;
    /* The header is the sender's name: at most REFIT_TP_NAME_MAX bytes,
     * no NUL (a name that breaks this is shown as "?"). */
    char from[REFIT_TP_NAME_MAX + 1] = "?";
    if (header_length && header_length <= REFIT_TP_NAME_MAX && !memchr(header, 0, header_length)) {
        memcpy(from, header, header_length);
        from[header_length] = 0;
    }
    /* Notifications are sent eagerly; a rendezvous one is a peer that does
     * not follow the protocol, and it would need a receive we cannot fit. */
    if ((param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) || length > tp->max_notify_len) {
        rtp_notice_drop_big(&tp->c, from, length);
        return UCS_OK;
    }
    rtp_notice_push(&tp->c, from, data, length);
    return UCS_OK;
}

static void ucxp_fini(refit_tp_t *tp);
static ucs_status_t am_ctrl_cb(void *arg, const void *header, size_t header_length, void *data,
                               size_t length, const ucp_am_recv_param_t *param);

/* The progress thread drives the worker while the caller is elsewhere
 * (see the top) and sleeps on the worker's event fd once it is armed. */
static int arm_cb(refit_tp_t *tp)
{
    return tp->efd < 0 || ucp_worker_arm(tp->worker) != UCS_ERR_BUSY;
}

static void idle_cb(refit_tp_t *tp, int stop_fd)
{
    struct pollfd pf[2] = {{stop_fd, POLLIN, 0}, {tp->efd, POLLIN, 0}};
    /* Without an event fd, or if an event slips past the arm, the
     * timeout bounds how long a peer waits for us. */
    poll(pf, tp->efd >= 0 ? 2 : 1, tp->efd >= 0 ? 100 : 1);
}

static int create_context(refit_tp_t *tp, ucp_config_t *uc)
{
    ucp_params_t p = {0};
    p.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_NAME;
    p.features = UCP_FEATURE_RMA | UCP_FEATURE_AM | UCP_FEATURE_WAKEUP;
    p.name = tp->name;
    ucs_status_t us = ucp_init(&p, uc, &tp->ctx);
    if (us != UCS_OK)
        return ucxp_err(status_of(us), us, "ucp_init", NULL, NULL);

    ucp_context_attr_t ca = {.field_mask = UCP_ATTR_FIELD_MEMORY_TYPES};
    tp->memtypes = REFIT_MEMTYPE_BIT(REFIT_MEM_HOST);
    if (ucp_context_query(tp->ctx, &ca) == UCS_OK &&
        (ca.memory_types & UCS_BIT(UCS_MEMORY_TYPE_CUDA)))
        tp->memtypes |= REFIT_MEMTYPE_BIT(REFIT_MEM_CUDA);

    ucp_worker_params_t wp = {0};
    wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
    wp.thread_mode = UCS_THREAD_MODE_SERIALIZED; /* our mutex serialises; see the top */
    us = ucp_worker_create(tp->ctx, &wp, &tp->worker);
    if (us != UCS_OK)
        return ucxp_err(status_of(us), us, "ucp_worker_create", NULL, NULL);
    us = ucp_worker_get_address(tp->worker, &tp->addr, &tp->addr_len);
    if (us != UCS_OK)
        return ucxp_err(status_of(us), us, "ucp_worker_get_address", NULL, NULL);

    ucp_am_handler_param_t ap = {0};
    ap.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB |
                    UCP_AM_HANDLER_PARAM_FIELD_ARG | UCP_AM_HANDLER_PARAM_FIELD_FLAGS;
    ap.id = UCXP_AM_NOTIFY;
    ap.cb = am_notify_cb;
    ap.arg = tp;
    ap.flags = UCP_AM_FLAG_WHOLE_MSG;
    us = ucp_worker_set_am_recv_handler(tp->worker, &ap);
    if (us == UCS_OK) {
        ap.id = UCXP_AM_CTRL;
        ap.cb = am_ctrl_cb;
        us = ucp_worker_set_am_recv_handler(tp->worker, &ap);
    }
    if (us != UCS_OK)
        return ucxp_err(status_of(us), us, "ucp_worker_set_am_recv_handler", NULL, NULL);
    if (ucp_worker_get_efd(tp->worker, &tp->efd) != UCS_OK)
        tp->efd = -1; /* the progress thread then polls on a short sleep */
    return 0;
}

/* The value of one variable in UCX's own print of the configuration. */
static void config_value(const char *dump, const char *var, char *out, size_t cap)
{
    const char *p = strstr(dump, var);
    snprintf(out, cap, "?");
    if (!p)
        return;
    p += strlen(var);
    size_t n = strcspn(p, "\n");
    snprintf(out, cap, "%.*s", (int)n, p);
}

static void describe_config(refit_tp_t *tp, ucp_config_t *uc)
{
    char *dump = NULL;
    size_t dlen = 0;
    FILE *f = open_memstream(&dump, &dlen);
    char tls[128] = "?", dev[256] = "?";
    if (f) {
        ucp_config_print(uc, f, NULL, UCS_CONFIG_PRINT_CONFIG);
        fclose(f);
        if (dump) {
            config_value(dump, "UCX_TLS=", tls, sizeof(tls));
            config_value(dump, "UCX_NET_DEVICES=", dev, sizeof(dev));
        }
        free(dump);
    }
    unsigned maj, min, rel;
    ucp_get_version(&maj, &min, &rel);
    snprintf(tp->desc, sizeof(tp->desc), "UCX %u.%u.%u, UCX_TLS=%s, UCX_NET_DEVICES=%s, memory: host%s, "
             "error handling %s", maj, min, rel, tls, dev,
             (tp->memtypes & REFIT_MEMTYPE_BIT(REFIT_MEM_CUDA)) ? "+cuda" : "",
             tp->err_mode == 0 ? "none" : tp->err_mode == 1 ? "peer" : "auto");
}

static int ucxp_describe(refit_tp_t *tp, char *buf, size_t cap)
{
    if (!tp || !buf || !cap)
        return H->error_set(REFIT_EINVAL, "%s: describe without a buffer", UCXP);
    snprintf(buf, cap, "%s", tp->desc);
    return 0;
}

static void ack_cb(refit_tp_t *tp, refit_tp_peer_t *p, uint64_t seq);
static int send_revoke_cb(refit_tp_t *tp, struct rtp_watcher *w, uint64_t region, uint64_t seq);
static void watcher_close(refit_tp_t *tp, struct rtp_watcher *w);

static const struct rtp_ops ucxp_rtp_ops = {
    .progress = progress_cb,
    .send_revoke = send_revoke_cb,
    .ack = ack_cb,
    .arm = arm_cb,
    .idle = idle_cb,
};

static int ucxp_init(const struct refit_tp_init_args *a, refit_tp_t **out)
{
    if (!a || !out || a->size < sizeof(struct refit_tp_init_args))
        return H->error_set(REFIT_EINVAL, "%s: init without arguments", UCXP);
    refit_tp_t *tp = H->calloc(1, sizeof(*tp));
    if (!tp)
        return H->error_set(REFIT_ENOMEM, "%s: out of memory", UCXP);
    rtp_core_init(&tp->c, tp, &ucxp_rtp_ops, UCXP, a->timeout_ms > 0 ? a->timeout_ms : 30000);
    tp->name = rtp_strdup(a->name ? a->name : "refit");
    tp->next_region_id = 1;
    tp->efd = -1;
    if (tp->name && strlen(tp->name) > REFIT_TP_NAME_MAX) {
        ucxp_fini(tp);
        return H->error_set(REFIT_EINVAL, "%s: name longer than %d bytes", UCXP, REFIT_TP_NAME_MAX);
    }

    /* Reads the process environment first; our settings then override
     * it in this config object only (no setenv). */
    ucp_config_t *uc = NULL;
    ucs_status_t us = ucp_config_read(NULL, NULL, &uc);
    int rc = us == UCS_OK ? 0 : ucxp_err(status_of(us), us, "ucp_config_read", NULL, NULL);
    if (!rc && !tp->name)
        rc = H->error_set(REFIT_ENOMEM, "%s: out of memory", UCXP);
    if (!rc)
        rc = read_options(a, uc, tp);
    if (!rc)
        rc = rtp_notify_configure(&tp->c, a->cfg);
    if (!rc)
        rc = create_context(tp, uc);
    if (!rc)
        describe_config(tp, uc);
    if (uc)
        ucp_config_release(uc);
    if (!rc)
        rc = rtp_thread_start(&tp->c);
    if (rc) {
        ucxp_fini(tp);
        return rc;
    }
    *out = tp;
    return 0;
}

static void peer_close(refit_tp_t *tp, refit_tp_peer_t *p)
{
    if (p->ep) {
        ucp_request_param_t rp = {0};
        rp.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
        /* A failed peer cannot answer a graceful close. */
        rp.flags = p->err != UCS_OK ? UCP_EP_CLOSE_FLAG_FORCE : 0;
        ucs_status_ptr_t sp = ucp_ep_close_nbx(p->ep, &rp);
        if (UCS_PTR_IS_PTR(sp)) {
            /* A graceful close needs the peer's progress; a peer that
             * is busy elsewhere must not stall us for long. */
            int64_t deadline = rtp_now_ms() + (tp->c.timeout_ms < 500 ? tp->c.timeout_ms : 500);
            while (ucp_request_check_status(sp) == UCS_INPROGRESS && rtp_now_ms() < deadline)
                ucp_worker_progress(tp->worker);
            if (ucp_request_check_status(sp) == UCS_INPROGRESS)
                ucp_request_cancel(tp->worker, sp);
            ucp_request_free(sp);
        }
        p->ep = NULL;
    }
}

static void peer_free(refit_tp_t *tp, refit_tp_peer_t *p);

static void ucxp_fini(refit_tp_t *tp)
{
    if (!tp)
        return;
    rtp_thread_stop(&tp->c);
    /* Let the last control messages (a bye) leave: ctrl_done frees them. */
    if (tp->worker && tp->ctrl_inflight) {
        int64_t deadline = rtp_now_ms() + 200;
        while (tp->ctrl_inflight && rtp_now_ms() < deadline)
            ucp_worker_progress(tp->worker);
    }
    while (tp->peers) {
        refit_tp_peer_t *p = tp->peers;
        tp->peers = p->next;
        peer_free(tp, p);
    }
    rtp_watchers_close(&tp->c, watcher_close);
    if (tp->addr)
        ucp_worker_release_address(tp->worker, tp->addr);
    /* Destroying the worker purges the operations still outstanding on
     * endpoints it tears down (a force-closed peer's), whose callbacks
     * complete into their requests: those are freed only after. */
    if (tp->worker)
        ucp_worker_destroy(tp->worker);
    /* Nothing moves data into kept regions without the worker: unmap them
     * before the context (its registration cache insists). */
    while (tp->kept) {
        refit_tp_region_t *r = tp->kept;
        tp->kept = r->kept_next;
        ucp_mem_unmap(tp->ctx, r->memh);
        H->free(r->packed);
        H->free(r);
    }
    rtp_core_fini(&tp->c, NULL);
    if (tp->ctx)
        ucp_cleanup(tp->ctx);
    H->free(tp->name);
    H->free(tp);
}

static int ucxp_caps(refit_tp_t *tp, struct refit_tp_caps *out)
{
    if (!tp)
        return H->error_set(REFIT_EINVAL, "%s: caps without tp", UCXP);
    return rtp_caps(UCXP, tp->memtypes, tp->max_notify_len, out);
}

static int ucxp_address(refit_tp_t *tp, void *buf, size_t *len)
{
    if (!tp)
        return H->error_set(REFIT_EINVAL, "%s: address without tp", UCXP);
    return rtp_address_pack(&tp->c, UCXP_ADDR_MAGIC, UCXP_BLOB_VERSION, tp->addr, tp->addr_len, buf, len);
}

/* ------------------------------------------------------------------ */
/* Memory */

static int ucxp_reg(refit_tp_t *tp, void *ptr, size_t len, uint32_t memtype, refit_tp_region_t **out)
{
    if (!tp || !ptr || !len || !out)
        return H->error_set(REFIT_EINVAL, "%s: register needs a pointer and a length", UCXP);
    if (memtype != REFIT_MEM_HOST && memtype != REFIT_MEM_CUDA)
        return H->error_set(REFIT_EINVAL, "%s: unknown memory type %u", UCXP, memtype);
    if (!(tp->memtypes & REFIT_MEMTYPE_BIT(memtype)))
        return H->error_set(REFIT_ENOTSUP, "%s: this UCX build reaches no CUDA memory "
                            "(no cuda transport in the context)", UCXP);
    refit_tp_region_t *r = H->calloc(1, sizeof(*r));
    if (!r)
        return H->error_set(REFIT_ENOMEM, "%s: out of memory", UCXP);
    ucp_mem_map_params_t mp = {0};
    mp.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
    mp.address = ptr;
    mp.length = len;
#ifdef REFIT_UCX_HAVE_MEMTYPE_HINT
    /* Saves UCX a pointer-type query per registration, and makes it pick
     * the GPU-capable memory domains for device memory. */
    mp.field_mask |= UCP_MEM_MAP_PARAM_FIELD_MEMORY_TYPE;
    mp.memory_type = memtype == REFIT_MEM_CUDA ? UCS_MEMORY_TYPE_CUDA : UCS_MEMORY_TYPE_HOST;
#endif
    ucs_status_t us = ucp_mem_map(tp->ctx, &mp, &r->memh);
    if (us != UCS_OK) {
        H->free(r);
        return ucxp_err(status_of(us), us, "ucp_mem_map", NULL, NULL);
    }
    void *rk = NULL;
    size_t rk_len = 0;
    us = ucp_rkey_pack(tp->ctx, r->memh, &rk, &rk_len);
    if (us != UCS_OK) {
        ucp_mem_unmap(tp->ctx, r->memh);
        H->free(r);
        return ucxp_err(status_of(us), us, "ucp_rkey_pack", NULL, NULL);
    }
    r->packed_len = sizeof(struct ucxp_rkey_hdr) + rk_len;
    r->packed = H->alloc(r->packed_len);
    if (!r->packed) {
        ucp_rkey_buffer_release(rk);
        ucp_mem_unmap(tp->ctx, r->memh);
        H->free(r);
        return H->error_set(REFIT_ENOMEM, "%s: out of memory", UCXP);
    }
    r->ptr = ptr;
    r->len = len;
    r->memtype = memtype;
    r->id = tp->next_region_id++;
    struct ucxp_rkey_hdr h = {UCXP_RKEY_MAGIC, UCXP_BLOB_VERSION, (uint16_t)memtype,
                              (uint64_t)(uintptr_t)ptr, len, r->id, rk_len};
    memcpy(r->packed, &h, sizeof(h));
    memcpy((char *)r->packed + sizeof(h), rk, rk_len);
    ucp_rkey_buffer_release(rk);
    *out = r;
    return 0;
}

static int ucxp_dereg(refit_tp_t *tp, refit_tp_region_t *r)
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
    ucs_status_t us = ucp_mem_unmap(tp->ctx, r->memh);
    H->free(r->packed);
    H->free(r);
    if (us != UCS_OK)
        return ucxp_err(status_of(us), us, "ucp_mem_unmap", NULL, NULL);
    return 0;
}

static int ucxp_pack_rkey(refit_tp_t *tp, refit_tp_region_t *r, void *buf, size_t *len)
{
    if (!tp || !r || !len)
        return H->error_set(REFIT_EINVAL, "%s: pack_rkey without a region", UCXP);
    if (!buf) {
        *len = r->packed_len;
        return 0;
    }
    if (*len < r->packed_len) {
        *len = r->packed_len;
        return H->error_set(REFIT_ERANGE, "%s: remote key needs %zu bytes", UCXP, r->packed_len);
    }
    memcpy(buf, r->packed, r->packed_len);
    *len = r->packed_len;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Peers */

static void ep_error_cb(void *arg, ucp_ep_h ep, ucs_status_t us)
{
    refit_tp_peer_t *p = arg;
    (void)ep;
    if (p->err == UCS_OK)
        H->log(2, UCXP, "peer '%s' failed: %s (UCS %d)", p->name, ucs_status_string(us), (int)us);
    p->err = us;
    /* Fail every request to this peer now: UCX purges their operations
     * too, but a waiter should not depend on when it does. */
    for (struct refit_tp_req *r = p->tp->c.reqs; r; r = r->next)
        if (r->peer == p && r->pending)
            rtp_req_fail(r, REFIT_ECONN, "%s: peer '%s' failed: %s (UCS %d)", UCXP, p->name,
                     ucs_status_string(us), (int)us);
}

static void watcher_error_cb(void *arg, ucp_ep_h ep, ucs_status_t us)
{
    struct rtp_watcher *w = arg;
    (void)ep;
    (void)us;
    w->dead = 1;   /* no revoke waits for it any more */
    w->failed = 1; /* until it says hello again (it reconnected) */
}

/* An endpoint with peer error handling where some transport to the peer
 * supports it (see transport.ucx.error_handling). */
static ucs_status_t ep_open(refit_tp_t *tp, const void *addr, ucp_err_handler_cb_t cb, void *arg,
                            const char *who, ucp_ep_h *out)
{
    ucp_ep_params_t ep = {0};
    ep.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                    UCP_EP_PARAM_FIELD_ERR_HANDLER;
    ep.address = addr;
    ep.err_mode = tp->err_mode ? UCP_ERR_HANDLING_MODE_PEER : UCP_ERR_HANDLING_MODE_NONE;
    ep.err_handler.cb = cb;
    ep.err_handler.arg = arg;
    ucs_status_t us = ucp_ep_create(tp->worker, &ep, out);
    if (us == UCS_ERR_UNREACHABLE && tp->err_mode == 2) {
        /* Only transports without peer-failure support reach this peer
         * (shared memory in UCX 1.13): connect without it; wait() still
         * turns a vanished peer into REFIT_ETIMEDOUT. */
        H->log(1, UCXP, "peer '%s': no transport with peer error handling reaches it; "
               "connecting without (transport.ucx.error_handling: auto)", who);
        ep.err_mode = UCP_ERR_HANDLING_MODE_NONE;
        us = ucp_ep_create(tp->worker, &ep, out);
    }
    return us;
}

/* Fire-and-forget control message; its buffer is copied by UCX before
 * the call returns or is owned by the request until completion. */
/* user_data: the buffer, which starts with its transport. */
static void ctrl_done(void *request, ucs_status_t us, void *user_data)
{
    (void)us;
    refit_tp_t *tp = *(refit_tp_t **)user_data;
    if (tp->ctrl_inflight)
        tp->ctrl_inflight--;
    H->free(user_data);
    ucp_request_free(request);
}

static int ctrl_send(refit_tp_t *tp, ucp_ep_h ep, uint32_t type, uint64_t a, uint64_t b,
                     const void *tail, size_t tail_len)
{
    size_t n = sizeof(struct ucxp_ctrl) + tail_len;
    unsigned char *buf = H->alloc(sizeof(tp) + n);
    if (!buf)
        return REFIT_ENOMEM;
    memcpy(buf, &tp, sizeof(tp));
    unsigned char *m = buf + sizeof(tp);
    struct ucxp_ctrl c = {type, 0, tp->c.id, a, b};
    memcpy(m, &c, sizeof(c));
    if (tail_len)
        memcpy(m + sizeof(c), tail, tail_len);
    ucp_request_param_t rp = {0};
    rp.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA |
                      UCP_OP_ATTR_FIELD_FLAGS;
    rp.cb.send = ctrl_done;
    rp.user_data = buf;
    rp.flags = UCP_AM_SEND_FLAG_EAGER;
    ucs_status_ptr_t sp = ucp_am_send_nbx(ep, UCXP_AM_CTRL, NULL, 0, m, n, &rp);
    if (UCS_PTR_IS_PTR(sp)) {
        tp->ctrl_inflight++;
        return 0; /* ctrl_done frees buf */
    }
    H->free(buf);
    return UCS_PTR_IS_ERR(sp) ? REFIT_ECONN : 0;
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

static ucs_status_t am_ctrl_cb(void *arg, const void *header, size_t header_length, void *data,
                               size_t length, const ucp_am_recv_param_t *param)
{
    refit_tp_t *tp = arg;
    (void)header;
    (void)header_length;
    struct ucxp_ctrl c;
    if ((param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) || length < sizeof(c))
        return UCS_OK;
    memcpy(&c, data, sizeof(c));
    if (c.type == CTRL_BYE) {
        tp->ctrl_dirty = 1;
        rtp_on_bye(&tp->c, c.sender); /* closed by ctrl_work */
    } else if (c.type == CTRL_HELLO) {
        tp->ctrl_dirty = 1;
        struct rtp_watcher *old = rtp_watcher_find(&tp->c, c.sender);
        if (c.a != length - sizeof(c) || !c.a)
            return UCS_OK;
        void *addr = H->alloc(c.a);
        if (addr && old) {
            /* A known process connected again — after a failure, our
             * endpoint to it may be broken without our having seen it
             * yet — so revokes go through a new endpoint (ctrl_work). */
            memcpy(addr, (char *)data + sizeof(c), c.a);
            H->free(old->addr);
            old->addr = addr;
            old->addr_len = c.a;
            old->refs++;
            old->dead = old->failed = old->reachable = 0;
            old->reopen = 1;
            return UCS_OK;
        }
        struct rtp_watcher *w = addr ? rtp_watcher_add(&tp->c, c.sender) : NULL;
        if (!w) {
            H->free(addr);
            return UCS_OK;
        }
        memcpy(addr, (char *)data + sizeof(c), c.a);
        w->addr = addr;
        w->addr_len = c.a;
    } else if (c.type == CTRL_REVOKE) {
        revoke_region(tp, c.sender, c.a, c.b);
    } else if (c.type == CTRL_ACK) {
        rtp_on_ack(&tp->c, c.sender, c.a);
    }
    return UCS_OK;
}

/* Control work that may not run inside a UCX callback: endpoints to new
 * watchers, acknowledgements after a flush.  Called under the lock. */
/* Flush the endpoint to p into a one-shot request r on the caller's stack
 * (op_done counts the completions into it; rp can carry a send after). */
static void oneshot_flush(refit_tp_t *tp, refit_tp_peer_t *p, struct refit_tp_req *r,
                          ucp_request_param_t *rp, const char *what)
{
    memset(r, 0, sizeof(*r));
    r->tp = tp;
    r->peer = p;
    memset(rp, 0, sizeof(*rp));
    rp->op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    rp->cb.send = op_done;
    rp->user_data = r;
    track(r, ucp_ep_flush_nbx(p->ep, rp), what);
}

static size_t ctrl_work(refit_tp_t *tp)
{
    if (tp->in_ctrl)
        return 0;
    tp->in_ctrl = 1;
    tp->ctrl_dirty = 0;
    size_t n = 0;
    for (struct rtp_watcher **pw = &tp->c.watchers; *pw;) {
        struct rtp_watcher *w = *pw;
        if (w->dead && w->refs <= 0) {
            *pw = w->next;
            if (w->ep) {
                ucp_request_param_t rp = {0};
                rp.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
                rp.flags = UCP_EP_CLOSE_FLAG_FORCE;
                ucs_status_ptr_t sp = ucp_ep_close_nbx(w->ep, &rp);
                if (UCS_PTR_IS_PTR(sp))
                    ucp_request_free(sp); /* completes on its own */
            }
            H->free(w->addr);
            H->free(w);
            n++;
            continue;
        }
        if (w->reopen && w->ep) {
            ucp_request_param_t rp = {0};
            rp.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
            rp.flags = UCP_EP_CLOSE_FLAG_FORCE;
            ucs_status_ptr_t sp = ucp_ep_close_nbx(w->ep, &rp);
            if (UCS_PTR_IS_PTR(sp))
                ucp_request_free(sp); /* completes on its own */
            w->ep = NULL;
        }
        w->reopen = 0;
        if (!w->ep && w->addr && !w->dead) {
            ucp_ep_h ep = NULL;
            if (ep_open(tp, w->addr, watcher_error_cb, w, "watcher", &ep) != UCS_OK)
                w->dead = 1;
            else
                w->ep = ep;
            w->reachable = w->ep != NULL;
            H->free(w->addr);
            w->addr = NULL;
            n++;
        }
        pw = &w->next;
    }
    n += rtp_acks_run(&tp->c);
    tp->in_ctrl = 0;
    return n;
}

/* rtp_ops.ack: nothing of ours may still touch the region when the owner
 * unmaps it, so the endpoint is flushed before acknowledging. */
static void ack_cb(refit_tp_t *tp, refit_tp_peer_t *p, uint64_t seq)
{
    if (!p || !p->ep || p->err != UCS_OK)
        return;
    struct refit_tp_req r;
    ucp_request_param_t rp;
    oneshot_flush(tp, p, &r, &rp, "flush before ack");
    rtp_spin(&tp->c, &r.pending, NULL, tp->c.timeout_ms);
    if (!r.pending)
        ctrl_send(tp, p->ep, CTRL_ACK, seq, 0, NULL, 0);
}

static int send_revoke_cb(refit_tp_t *tp, struct rtp_watcher *w, uint64_t region, uint64_t seq)
{
    return ctrl_send(tp, w->ep, CTRL_REVOKE, region, seq, NULL, 0);
}

/* fini: the watcher's endpoint is closed before the worker goes. */
static void watcher_close(refit_tp_t *tp, struct rtp_watcher *w)
{
    if (!w->ep)
        return;
    ucp_request_param_t rp = {0};
    rp.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    rp.flags = UCP_EP_CLOSE_FLAG_FORCE;
    ucs_status_ptr_t sp = ucp_ep_close_nbx(w->ep, &rp);
    if (UCS_PTR_IS_PTR(sp)) {
        while (ucp_request_check_status(sp) == UCS_INPROGRESS)
            ucp_worker_progress(tp->worker);
        ucp_request_free(sp);
    }
}

static int ucxp_connect(refit_tp_t *tp, const void *addr, size_t len, const char *peer_name,
                        refit_tp_peer_t **out)
{
    const char *who = peer_name ? peer_name : "?";
    if (!tp || !addr || !out)
        return H->error_set(REFIT_EINVAL, "%s: connect without an address", UCXP);
    struct rtp_addr_hdr h;
    int rc = rtp_address_parse(&tp->c, UCXP_ADDR_MAGIC, UCXP_BLOB_VERSION, SIZE_MAX, "a ucx worker address", addr,
                               len, who, &h);
    if (rc)
        return rc;
    refit_tp_peer_t *p = H->calloc(1, sizeof(*p));
    if (!p || !(p->name = rtp_strdup(who))) {
        H->free(p);
        return H->error_set(REFIT_ENOMEM, "%s: out of memory", UCXP);
    }
    p->tp = tp;
    p->owner_id = h.tp_id;
    ucs_status_t us = ep_open(tp, (const char *)addr + sizeof(h), ep_error_cb, p, who, &p->ep);
    if (us != UCS_OK) {
        H->free(p->name);
        H->free(p);
        return ucxp_err(status_of(us), us, "ucp_ep_create", NULL, who);
    }
    /* Hello: the owner will tell us when it deregisters a region. */
    if (ctrl_send(tp, p->ep, CTRL_HELLO, tp->addr_len, 0, tp->addr, tp->addr_len))
        H->log(2, UCXP, "peer '%s': hello not sent; its deregistrations will not reach us", who);
    p->next = tp->peers;
    tp->peers = p;
    *out = p;
    return 0;
}

/* Keys die before their endpoint (UCX's rule); requests forget the peer. */
static void peer_free(refit_tp_t *tp, refit_tp_peer_t *p)
{
    rtp_forget_peer(&tp->c, p, p->name, 1);
    for (refit_tp_rkey_t *k = p->rkeys; k; k = k->next) {
        if (k->rk)
            ucp_rkey_destroy(k->rk);
        k->rk = NULL;
        k->peer = NULL; /* release_rkey frees the handle alone */
    }
    if (tp->worker && p->ep) {
        if (p->err == UCS_OK)
            ctrl_send(tp, p->ep, CTRL_BYE, 0, 0, NULL, 0);
        peer_close(tp, p);
    }
    H->free(p->name);
    H->free(p);
}

static void ucxp_disconnect(refit_tp_t *tp, refit_tp_peer_t *p)
{
    if (!tp || !p)
        return;
    for (refit_tp_peer_t **pp = &tp->peers; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    peer_free(tp, p);
}

static int ucxp_unpack_rkey(refit_tp_t *tp, refit_tp_peer_t *p, const void *buf, size_t len,
                            refit_tp_rkey_t **out)
{
    if (!tp || !p || !buf || !out)
        return H->error_set(REFIT_EINVAL, "%s: unpack_rkey without a peer or key", UCXP);
    struct ucxp_rkey_hdr h;
    if (len < sizeof(h))
        return H->error_set(REFIT_EPROTO, "%s: remote key from peer '%s' is %zu bytes, too short",
                            UCXP, p->name, len);
    memcpy(&h, buf, sizeof(h));
    if (h.magic != UCXP_RKEY_MAGIC || h.version != UCXP_BLOB_VERSION || !h.ucp_len ||
        h.ucp_len != len - sizeof(h) || !h.len || h.base + h.len < h.base)
        return H->error_set(REFIT_EPROTO, "%s: remote key from peer '%s' is malformed "
                            "(magic %#x, %zu bytes)", UCXP, p->name, h.magic, len);
    if (p->err != UCS_OK)
        return ucxp_err(REFIT_ECONN, p->err, "unpack_rkey", NULL, p->name);
    refit_tp_rkey_t *k = H->calloc(1, sizeof(*k));
    if (!k)
        return H->error_set(REFIT_ENOMEM, "%s: out of memory", UCXP);
    ucs_status_t us = ucp_ep_rkey_unpack(p->ep, (const char *)buf + sizeof(h), &k->rk);
    if (us != UCS_OK) {
        H->free(k);
        return ucxp_err(us == UCS_ERR_NO_MEMORY ? REFIT_ENOMEM : REFIT_EPROTO, us,
                        "ucp_ep_rkey_unpack of a key from", NULL, p->name);
    }
    k->peer = p;
    k->base = h.base;
    k->len = h.len;
    k->id = h.id;
    k->next = p->rkeys;
    p->rkeys = k;
    *out = k;
    return 0;
}

static void ucxp_release_rkey(refit_tp_t *tp, refit_tp_rkey_t *k)
{
    if (!tp || !k)
        return;
    if (k->peer)
        for (refit_tp_rkey_t **pk = &k->peer->rkeys; *pk; pk = &(*pk)->next)
            if (*pk == k) {
                *pk = k->next;
                break;
            }
    if (k->rk)
        ucp_rkey_destroy(k->rk);
    H->free(k);
}

/* ------------------------------------------------------------------ */
/* Transfers */

RTP_DEFINE_CHECK_DESC(UCXP)

static void track(struct refit_tp_req *r, ucs_status_ptr_t sp, const char *what)
{
    if (sp == NULL)
        return; /* completed in place */
    if (UCS_PTR_IS_ERR(sp)) {
        ucs_status_t us = UCS_PTR_STATUS(sp);
        /* Refused at once: the endpoint failed (reset, timed out), so the
         * peer is broken until reconnected. */
        int st = status_of(us);
        rtp_req_fail(r, st == REFIT_EPLUGIN || st == REFIT_ETIMEDOUT ? REFIT_ECONN : st,
                 "%s: %s to peer '%s' failed: %s (UCS %d)", UCXP, what, r->peer->name,
                 ucs_status_string(us), (int)us);
        return;
    }
    r->pending++;
}

static int ucxp_post(refit_tp_t *tp, refit_tp_peer_t *p, const struct refit_tp_desc *d, size_t n,
                     refit_tp_req_t **out)
{
    if (!tp || !p || (!d && n) || !out)
        return H->error_set(REFIT_EINVAL, "%s: post without peer or descriptors", UCXP);
    for (size_t i = 0; i < n; i++) {
        int rc = check_desc(p, &d[i], i);
        if (rc)
            return rc;
    }
    if (p->err != UCS_OK)
        return ucxp_err(REFIT_ECONN, p->err, "post", NULL, p->name);
    struct refit_tp_req *r = rtp_req_new(&tp->c, p, 0);
    if (!r)
        return H->error_set(REFIT_ENOMEM, "%s: out of memory", UCXP);
    /* The distinct remote regions, so that a revoke finds the requests it
     * affects. */
    for (size_t i = 0; i < n; i++)
        if (rtp_req_note_region(r, d[i].remote->id) || rtp_req_note_local(r, d[i].local)) {
            rtp_req_unlink_free(&tp->c, r);
            return H->error_set(REFIT_ENOMEM, "%s: out of memory", UCXP);
        }

    ucp_request_param_t rp = {0};
    rp.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA |
                      UCP_OP_ATTR_FIELD_MEMH;
    rp.cb.send = op_done;
    rp.user_data = r;
    int writes = 0;
    for (size_t i = 0; i < n && !r->status; i++) {
        if (!d[i].len)
            continue;
        void *lp = (char *)d[i].local->ptr + d[i].local_off;
        uint64_t ra = d[i].remote->base + d[i].remote_off;
        rp.memh = d[i].local->memh;
        if (d[i].op == REFIT_OP_READ) {
            track(r, ucp_get_nbx(p->ep, lp, d[i].len, ra, d[i].remote->rk, &rp), "get");
        } else {
            track(r, ucp_put_nbx(p->ep, lp, d[i].len, ra, d[i].remote->rk, &rp), "put");
            writes = 1;
        }
    }
    if (writes && !r->status) {
        /* A put completes locally; the flush makes the batch complete only
         * when the bytes are in the peer's memory. */
        ucp_request_param_t fp = {0};
        fp.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
        fp.cb.send = op_done;
        fp.user_data = r;
        track(r, ucp_ep_flush_nbx(p->ep, &fp), "flush");
    }
    *out = r;
    return 0;
}

static int ucxp_test(refit_tp_t *tp, refit_tp_req_t *r)
{
    if (!tp || !r)
        return H->error_set(REFIT_EINVAL, "%s: test without a request", UCXP);
    if (r->pending && !r->status)
        progress_all(tp);
    return rtp_req_result(r);
}

static int ucxp_wait(refit_tp_t *tp, refit_tp_req_t *r, int64_t timeout_ms)
{
    if (!tp || !r)
        return H->error_set(REFIT_EINVAL, "%s: wait without a request", UCXP);
    int64_t t0 = rtp_now_ms(), last = t0;
    int64_t deadline = timeout_ms < 0 ? INT64_MAX : t0 + timeout_ms;
    unsigned idle = 0;
    while (r->pending && !r->status) {
        if (progress_all(tp)) {
            idle = 0;
            continue;
        }
        if (++idle % 256 == 0) {
            int64_t now = rtp_now_ms();
            if (idle == 256)
                last = now; /* the worker went quiet now */
            if (now >= deadline)
                return H->error_set(REFIT_ETIMEDOUT, "%s: transfer with peer '%s': not complete "
                                    "after %" PRId64 " ms (%zu operations outstanding)", UCXP,
                                    r->peer ? r->peer->name : "?", timeout_ms, r->pending);
            /* transport.timeout: a worker with nothing to do for that long
             * while we wait on this peer means the peer is gone or stuck.
             * The peer stays failed: later posts fail at once. */
            if (now - last >= tp->c.timeout_ms && r->peer) {
                if (r->peer->err == UCS_OK)
                    H->log(2, UCXP, "peer '%s': no progress for %" PRId64 " ms", r->peer->name,
                           tp->c.timeout_ms);
                r->peer->err = UCS_ERR_ENDPOINT_TIMEOUT;
                /* REFIT_ECONN: the peer is broken until reconnected. */
                rtp_req_fail(r, REFIT_ECONN, "%s: transfer with peer '%s': no progress for %" PRId64
                         " ms (transport.timeout); peer presumed gone", UCXP, r->peer->name,
                         tp->c.timeout_ms);
                break;
            }
            sched_yield();
        }
    }
    return rtp_req_result(r);
}

/* ------------------------------------------------------------------ */
/* Notifications */

static int ucxp_notify(refit_tp_t *tp, refit_tp_peer_t *p, const void *msg, size_t len)
{
    if (!tp || !p || (!msg && len))
        return H->error_set(REFIT_EINVAL, "%s: notify without a peer", UCXP);
    if (len > tp->max_notify_len)
        return H->error_set(REFIT_ETOOBIG, "%s: notification of %zu bytes to peer '%s' exceeds "
                            "max_notify_len %" PRIu64, UCXP, len, p->name, tp->max_notify_len);
    if (p->err != UCS_OK)
        return ucxp_err(REFIT_ECONN, p->err, "notify", NULL, p->name);

    /* The flush and the send each complete into this one-shot request. */
    struct refit_tp_req r;
    ucp_request_param_t rp;
    oneshot_flush(tp, p, &r, &rp, "flush before notify");
    if (!r.status && rtp_spin(&tp->c, &r.pending, NULL, tp->c.timeout_ms)) {
        p->err = UCS_ERR_ENDPOINT_TIMEOUT; /* broken until reconnected */
        return H->error_set(REFIT_ECONN, "%s: notify peer '%s': earlier writes not flushed "
                            "within %" PRId64 " ms (transport.timeout); peer presumed gone", UCXP,
                            p->name, tp->c.timeout_ms);
    }
    if (!r.status && p->err == UCS_OK) {
        rp.op_attr_mask |= UCP_OP_ATTR_FIELD_FLAGS;
        rp.flags = UCP_AM_SEND_FLAG_EAGER;
        track(&r, ucp_am_send_nbx(p->ep, UCXP_AM_NOTIFY, tp->name, strlen(tp->name), msg, len, &rp),
              "notify");
        if (!r.status && rtp_spin(&tp->c, &r.pending, NULL, tp->c.timeout_ms)) {
            p->err = UCS_ERR_ENDPOINT_TIMEOUT;
            return H->error_set(REFIT_ECONN, "%s: notify peer '%s': not sent within %" PRId64
                                " ms (transport.timeout); peer presumed gone", UCXP, p->name,
                                tp->c.timeout_ms);
        }
    }
    if (!r.status && p->err != UCS_OK)
        return ucxp_err(REFIT_ECONN, p->err, "notify", NULL, p->name);
    if (r.status) {
        /* Operations of a failed ep may still complete later: wait them
         * out briefly so no callback touches this stack frame after. */
        rtp_spin(&tp->c, &r.pending, NULL, tp->c.timeout_ms);
        if (r.pending)
            H->log(3, UCXP, "notify: %zu operations to '%s' left in flight", r.pending, p->name);
    }
    return rtp_req_result(&r);
}

/* ------------------------------------------------------------------ */
/* Entry points: each holds the worker lock (the progress thread's). */

RTP_TRANSPORT_OPS(ucxp, UCXP);

/* ------------------------------------------------------------------ */
/* Plugin descriptor */

static int ucxp_load(const struct refit_host *host)
{
    H = host;
    rtp_load(host);
    /* UCX must stay resident when the loader closes this plugin: libucm
     * hooks the process's memory functions, and UCX's modules keep
     * thread-local state that must not be unmapped under running threads
     * (LeakSanitizer trips over exactly that). */
    static const char *const libs[] = {"libucm.so.0", "libucs.so.0", "libuct.so.0", "libucp.so.0"};
    for (size_t i = 0; i < sizeof(libs) / sizeof(libs[0]); i++)
        if (!dlopen(libs[i], RTLD_LAZY | RTLD_NOLOAD | RTLD_NODELETE))
            H->log(0, UCXP, "%s not pinned: %s", libs[i], dlerror());
    return 0;
}

static const struct refit_plugin ucxp_plugin = {
    .abi_major = REFIT_ABI_MAJOR,
    .abi_minor = REFIT_ABI_MINOR,
    .kind = REFIT_PLUGIN_TRANSPORT,
    .name = "ucx",
    .version = "0.1.0",
    .description = "UCX (ucp RMA and active messages): RoCE, InfiniBand, shared memory, tcp",
    .config = ucxp_config,
    .n_config = sizeof(ucxp_config) / sizeof(ucxp_config[0]),
    .load = ucxp_load,
    .unload = NULL,
    .ops = &ucxp_ops,
};

REFIT_PLUGIN_EXPORT const struct refit_plugin *refit_plugin_entry(void)
{
    return &ucxp_plugin;
}
