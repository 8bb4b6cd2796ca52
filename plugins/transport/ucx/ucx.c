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
 * acknowledges.
 *
 * The files: ucx.c (configuration, context, init/fini, progress, the
 * descriptor), ucx_mem.c (regions and keys), ucx_peer.c (endpoints and the
 * control messages of the revoke protocol), ucx_xfer.c (posts, completions,
 * notifications); ucx_int.h is what they share. */
#include "ucx_int.h"

const struct refit_host *ucxp_host;

/* ------------------------------------------------------------------ */
/* Helpers */

/* UCX's code and text in every message. */
int ucxp_err(int status, ucs_status_t us, const char *fmt, const char *what, const char *who)
{
    return H->error_set(status, "%s: %s%s%s%s: %s (UCS %d)", UCXP, fmt, what ? what : "",
                        who ? " peer " : "", who ? who : "", ucs_status_string(us), (int)us);
}

int ucxp_status_of(ucs_status_t us)
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

size_t ucxp_progress_all(refit_tp_t *tp)
{
    size_t n = 0, k;
    /* Bounded so that one call cannot spin forever on a busy worker. */
    for (int i = 0; i < 64 && (k = ucp_worker_progress(tp->worker)) > 0; i++)
        n += k;
    if (tp->ctrl_dirty || tp->c.acks)
        n += ucxp_ctrl_work(tp);
    return n;
}

/* The progress thread's round: while a caller waits for the lock, one
 * worker round per hold (see rtp_core's thread). */
static size_t progress_cb(refit_tp_t *tp, int contended)
{
    return contended ? ucp_worker_progress(tp->worker) : ucxp_progress_all(tp);
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

static void ucxp_fini(refit_tp_t *tp);

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
        return ucxp_err(ucxp_status_of(us), us, "ucp_init", NULL, NULL);

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
        return ucxp_err(ucxp_status_of(us), us, "ucp_worker_create", NULL, NULL);
    us = ucp_worker_get_address(tp->worker, &tp->addr, &tp->addr_len);
    if (us != UCS_OK)
        return ucxp_err(ucxp_status_of(us), us, "ucp_worker_get_address", NULL, NULL);

    ucp_am_handler_param_t ap = {0};
    ap.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB |
                    UCP_AM_HANDLER_PARAM_FIELD_ARG | UCP_AM_HANDLER_PARAM_FIELD_FLAGS;
    ap.id = UCXP_AM_NOTIFY;
    ap.cb = ucxp_am_notify_cb;
    ap.arg = tp;
    ap.flags = UCP_AM_FLAG_WHOLE_MSG;
    us = ucp_worker_set_am_recv_handler(tp->worker, &ap);
    if (us == UCS_OK) {
        ap.id = UCXP_AM_CTRL;
        ap.cb = ucxp_am_ctrl_cb;
        us = ucp_worker_set_am_recv_handler(tp->worker, &ap);
    }
    if (us != UCS_OK)
        return ucxp_err(ucxp_status_of(us), us, "ucp_worker_set_am_recv_handler", NULL, NULL);
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

static const struct rtp_ops ucxp_rtp_ops = {
    .progress = progress_cb,
    .send_revoke = ucxp_send_revoke_cb,
    .ack = ucxp_ack_cb,
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
    int rc = us == UCS_OK ? 0 : ucxp_err(ucxp_status_of(us), us, "ucp_config_read", NULL, NULL);
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

void ucxp_peer_close(refit_tp_t *tp, refit_tp_peer_t *p)
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

static void ucxp_fini(refit_tp_t *tp)
{
    if (!tp)
        return;
    rtp_thread_stop(&tp->c);
    /* Let the last control messages (a bye) leave: ucxp_ctrl_done frees them. */
    if (tp->worker && tp->ctrl_inflight) {
        int64_t deadline = rtp_now_ms() + 200;
        while (tp->ctrl_inflight && rtp_now_ms() < deadline)
            ucp_worker_progress(tp->worker);
    }
    while (tp->peers) {
        refit_tp_peer_t *p = tp->peers;
        tp->peers = p->next;
        ucxp_peer_free(tp, p);
    }
    rtp_watchers_close(&tp->c, ucxp_watcher_close);
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
