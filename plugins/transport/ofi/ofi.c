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
 * offers.
 *
 * The files: ofi.c (configuration, init/fini, progress, the descriptor),
 * ofi_fabric.c (provider choice, fabric objects), ofi_cq.c (completions),
 * ofi_peer.c (peers and their control messages), ofi_mem.c (regions and
 * keys), ofi_xfer.c (posts, waits, notifications); ofi_int.h is what they
 * share. */
#include "ofi_int.h"

const struct refit_host *ofip_host;

/* ------------------------------------------------------------------ */
/* Helpers */

const char *ofip_prov_of(const refit_tp_t *tp)
{
    return tp && tp->info && tp->info->fabric_attr && tp->info->fabric_attr->prov_name
               ? tp->info->fabric_attr->prov_name
               : "?";
}

/* libfabric's code and text in every message. */
int ofip_fi_fail(const refit_tp_t *tp, int status, int ret, const char *what, const char *peer)
{
    int e = ret < 0 ? -ret : ret;
    return H->error_set(status, "%s(%s): %s%s%s%s: %s (fi errno %d)", OFIP, ofip_prov_of(tp), what,
                        peer ? " peer '" : "", peer ? peer : "", peer ? "'" : "", fi_strerror(e), e);
}

int ofip_status_of(int ret)
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

struct refit_tp_req *ofip_req_new(refit_tp_t *tp, refit_tp_peer_t *p, size_t n_ops)
{
    struct refit_tp_req *r =
        rtp_req_new(&tp->c, p, sizeof(struct ofip_req_ext) + n_ops * sizeof(struct ofip_op));
    if (r)
        req_ext(r)->n_ops = n_ops;
    return r;
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

static int apply_env(void *arg, const char *key, const char *value)
{
    struct ofip_opts *o = arg;
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

static int read_options(const struct refit_tp_init_args *a, refit_tp_t *tp, struct ofip_opts *o)
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

static void ofip_fini(refit_tp_t *tp);

/* Progress rounds are not split for a waiting caller: ofip_cq_drain bounds
 * itself by what the queue holds. */
static size_t progress_cb(refit_tp_t *tp, int contended)
{
    (void)contended;
    return ofip_cq_drain(tp);
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
    .send_revoke = ofip_send_revoke_cb,
    .ack = ofip_ack_cb,
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
    struct ofip_opts o = {0};
    int rc = tp->name ? read_options(a, tp, &o) : H->error_set(REFIT_ENOMEM, "%s: out of memory", OFIP);
    if (!rc && strlen(tp->name) > REFIT_TP_NAME_MAX)
        rc = H->error_set(REFIT_EINVAL, "%s: name longer than %d bytes", OFIP, REFIT_TP_NAME_MAX);
    if (!rc)
        rc = rtp_notify_configure(&tp->c, a->cfg);
    if (!rc)
        rc = ofip_choose_info(tp, a, &o);
    if (!rc)
        rc = ofip_open_objects(tp, o.recv_depth);
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
             FI_MAJOR(fi_version()), FI_MINOR(fi_version()), ofip_prov_of(tp), tp->info->fabric_attr->name,
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
