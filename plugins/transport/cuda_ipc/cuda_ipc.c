/* cuda_ipc.c — the `cuda_ipc` transport plugin: one-sided READ and WRITE
 * between GPU memory of processes on one host, as device-to-device copies
 * (NVLink or PCIe peer access) through CUDA IPC mappings.  The control
 * channel that makes deregistration and notifications safe lives in
 * cuda_ipc_ctl.c; see cuda_ipc.h for the locking rules.  This file holds
 * the plugin, its configuration and init/fini; registration and mappings
 * are in cuda_ipc_mem.c, peers and keys in cuda_ipc_peer.c, copies and
 * notifications in cuda_ipc_xfer.c, the shared helpers in cuda_ipc_util.c.
 *
 * Registration: only device memory from cudaMalloc.  An IPC handle names a
 * whole allocation (cudaIpcGetMemHandle takes the allocation base, found
 * with cuMemGetAddressRange), so a remote key carries the handle, the
 * region's offset in the allocation and its length, plus the region id
 * (never reused: also its generation) and a random secret.  Stream-ordered
 * pool memory, cuMemCreate/VMM mappings (expandable segments) and managed
 * memory have no legacy IPC handle and are refused with a message saying
 * so; host memory is REFIT_ENOTSUP (the core stages it).
 *
 * Keys: unpack_rkey asks the owner, over the control channel, whether the
 * key is one of its live registrations (id, secret, handle, offset and
 * length must all match) before the handle is opened, so a stale or forged
 * key never maps anything.  Each allocation of a peer is opened once
 * (cudaIpcOpenMemHandle with cudaIpcMemLazyEnablePeerAccess) and shared by
 * the keys that point into it.  A key of our own process (loopback) uses
 * the owner's pointer directly: a process cannot open its own handles.
 *
 * Transfers: cudaMemcpyAsync (cudaMemcpyDefault: unified addressing tells
 * the direction) on the transport's own non-blocking streams, descriptors
 * longer than `chunk` split, pieces spread round-robin.  A request records
 * one event per stream it used; it is complete when all have completed.
 * Each key and each peer also remember the last copy that used them per
 * stream, so a revoke, a release and a notification wait for exactly the
 * copies that matter, not for the whole device.  A failed request reports
 * its failure only once its copies are over: when test() returns, the GPU
 * no longer touches the memory the request named.
 *
 * Copies are not ordered against other streams: data written by the
 * caller's kernels must be complete (stream synchronized) before a post. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "cuda_ipc.h"

const struct refit_host *cipc_host;
uint64_t cipc_proc_nonce; /* random per process: a loopback peer has ours */

static void fmt_size(char *b, size_t cap, uint64_t v)
{
    if (v >= (1ull << 30) && !(v % (1ull << 30)))
        snprintf(b, cap, "%" PRIu64 " GiB", v >> 30);
    else if (v >= (1ull << 20) && !(v % (1ull << 20)))
        snprintf(b, cap, "%" PRIu64 " MiB", v >> 20);
    else
        snprintf(b, cap, "%" PRIu64 " B", v);
}

/* ------------------------------------------------------------------ */
/* Configuration, identity */

static const struct refit_cfg_field cipc_config[] = {
    {"device", REFIT_CFG_INT, "-1", -1, 4096, NULL,
     "CUDA device the copies run on; -1: the rank's device (topology), else the current device"},
    {"streams", REFIT_CFG_INT, "4", 1, CIPC_MAX_STREAMS, NULL, "copy streams, used round-robin"},
    {"copy", REFIT_CFG_ENUM, "engine", 0, -1, "engine|kernel",
     "copies by the copy engines (cudaMemcpyAsync) or by a kernel on the SMs"},
    {"chunk", REFIT_CFG_SIZE, "64MiB", 4096, 1099511627776.0, NULL,
     "descriptors longer than this are split into copies of this size over the streams"},
    {"max_notify_len", REFIT_CFG_SIZE, "4KiB", 1, CIPC_MAX_PAYLOAD, NULL, "largest notification"},
    {"socket_dir", REFIT_CFG_STRING, NULL, 0, -1, NULL,
     "directory of the control socket; unset: the abstract namespace (one network namespace)"},
};

static int read_options(const struct refit_tp_init_args *a, refit_tp_t *tp, int64_t *dev,
                        const char **sock_dir)
{
    int64_t streams = 4;
    *dev = -1;
    *sock_dir = NULL;
    tp->chunk = 64ull << 20;
    tp->max_notify_len = 4096;
    if (!a->cfg || !a->cfg->cfg)
        goto done;
    int rc = H->cfg_int(a->cfg, "device", dev);
    if (!rc)
        rc = H->cfg_int(a->cfg, "streams", &streams);
    if (!rc)
        rc = H->cfg_size(a->cfg, "chunk", &tp->chunk);
    if (!rc)
        rc = H->cfg_size(a->cfg, "max_notify_len", &tp->max_notify_len);
    const char *copy = NULL;
    if (!rc && !(rc = H->cfg_str(a->cfg, "copy", &copy)))
        tp->kernel_copy = copy && !strcmp(copy, "kernel");
    if (!rc) {
        rc = H->cfg_str(a->cfg, "socket_dir", sock_dir);
        if (rc == REFIT_ENOENT)
            rc = 0; /* optional: the abstract namespace */
    }
    if (rc)
        return rc;
done:
    tp->nstreams = streams < 1 ? 1 : streams > CIPC_MAX_STREAMS ? CIPC_MAX_STREAMS : (int)streams;
    return 0;
}

static int pick_device(refit_tp_t *tp, const struct refit_tp_init_args *a, int64_t cfg_dev)
{
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count <= 0) {
        if (e != cudaSuccess)
            return cipc_cuda_fail(REFIT_ENOTSUP, e, "no CUDA device usable by this process "
                                  "(cudaGetDeviceCount); cuda_ipc moves GPU memory only");
        return H->error_set(REFIT_ENOTSUP, "%s: no CUDA device usable by this process; cuda_ipc moves "
                            "GPU memory only", CIPC);
    }
    int dev = (int)cfg_dev;
    if (dev < 0)
        dev = a->cuda_device;
    if (dev < 0) {
        e = cudaGetDevice(&dev);
        if (e != cudaSuccess)
            return cipc_cuda_fail(REFIT_EPLUGIN, e, "cudaGetDevice");
    }
    if (dev >= count)
        return H->error_set(REFIT_ECONFIG, "%s: CUDA device %d asked for (transport.cuda_ipc.device or "
                            "the rank's device), but this process sees %d", CIPC, dev, count);
    tp->dev = dev;
    int sms = 0;
    if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || sms < 1) {
        (void)cudaGetLastError();
        sms = 32;
    }
    tp->copy_blocks = 4 * sms;
    return 0;
}

static void read_identity(refit_tp_t *tp)
{
    struct cipc_addr *a = &tp->addr;
    a->magic = CIPC_ADDR_MAGIC;
    a->version = CIPC_VERSION;
    a->pid = (uint32_t)getpid();
    a->dev = tp->dev;
    a->proc_nonce = cipc_proc_nonce;
    if (getrandom(&a->tp_id, sizeof(a->tp_id), 0) != (ssize_t)sizeof(a->tp_id))
        a->tp_id = ((uint64_t)getpid() << 32) ^ (uint64_t)cipc_now_ms() ^ (uint64_t)(uintptr_t)tp;
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
    if (f) {
        if (!fgets(a->boot_id, sizeof(a->boot_id), f))
            a->boot_id[0] = 0;
        a->boot_id[strcspn(a->boot_id, "\n")] = 0;
        fclose(f);
    }
    if (gethostname(a->host, sizeof(a->host) - 1))
        snprintf(a->host, sizeof(a->host), "?");
    if (cudaDeviceGetPCIBusId(a->bus_id, (int)sizeof(a->bus_id), tp->dev) != cudaSuccess) {
        cudaGetLastError();
        a->bus_id[0] = 0;
    }
}

static void describe_init(refit_tp_t *tp)
{
    int rt = 0, dr = 0;
    cudaRuntimeGetVersion(&rt);
    cudaDriverGetVersion(&dr);
    struct cudaDeviceProp prop;
    memset(&prop, 0, sizeof(prop));
    if (cudaGetDeviceProperties(&prop, tp->dev) != cudaSuccess)
        snprintf(prop.name, sizeof(prop.name), "?");
    char chunk[32];
    fmt_size(chunk, sizeof(chunk), tp->chunk);
    int n = snprintf(tp->desc, sizeof(tp->desc), "CUDA runtime %d.%d, driver %d.%d; device %d '%s' "
                     "(PCI %s); %d streams, chunk %s; peer access:", rt / 1000, rt % 1000 / 10,
                     dr / 1000, dr % 1000 / 10, tp->dev, prop.name, tp->addr.bus_id, tp->nstreams, chunk);
    int count = 0, any = 0;
    cudaGetDeviceCount(&count);
    for (int d = 0; d < count && n > 0 && (size_t)n < sizeof(tp->desc); d++) {
        if (d == tp->dev)
            continue;
        int can = 0;
        cudaDeviceCanAccessPeer(&can, tp->dev, d);
        n += snprintf(tp->desc + n, sizeof(tp->desc) - (size_t)n, " %d:%s", d, can ? "yes" : "no");
        any = 1;
    }
    if (!any && n > 0 && (size_t)n < sizeof(tp->desc))
        n += snprintf(tp->desc + n, sizeof(tp->desc) - (size_t)n, " (no other device)");
    if (n > 0 && (size_t)n < sizeof(tp->desc))
        snprintf(tp->desc + n, sizeof(tp->desc) - (size_t)n, "; control socket %s%.*s",
                 tp->addr.sock_kind == 1 ? "@" : "", (int)tp->addr.sock_len, tp->addr.sock);
    cudaGetLastError();
}

/* ------------------------------------------------------------------ */
/* init / fini */

static void cipc_fini(refit_tp_t *tp)
{
    if (!tp)
        return;
    /* No device calls before the streams exist: a failed init keeps its
     * own message (e.g. no device) rather than a later CUDA error. */
    struct cipc_devguard g = {0, 0};
    int guarded = tp->streams[0] && cipc_dev_enter(tp, &g) == 0;
    pthread_mutex_lock(&tp->lock);
    /* Regions still registered: revoke them like dereg, so that no peer
     * keeps a mapping of memory the caller frees next. */
    while (tp->regions) {
        struct refit_tp_region *r = tp->regions;
        tp->regions = r->next;
        if (r->n_openers && tp->thread_on)
            cipc_revoke(tp, r);
        cipc_region_free(r);
    }
    /* Our copies end and our mappings close before the owners see us go. */
    while (tp->peers)
        cipc_peer_teardown(tp, tp->peers);
    pthread_mutex_unlock(&tp->lock);
    cipc_ctl_stop(tp);
    int64_t deadline = cipc_now_ms() + tp->timeout_ms;
    while (tp->reqs) {
        struct refit_tp_req *r = tp->reqs;
        tp->reqs = r->next;
        if (!r->done && cipc_events_wait(r->ev, r->ev_mask, deadline) != 1)
            H->log(3, CIPC, "fini: copies of a request still running after %" PRId64 " ms", tp->timeout_ms);
        cipc_events_destroy(tp, r->ev);
        H->free(r->regions);
        H->free(r);
    }
    while (tp->maps) {
        struct cipc_map *m = tp->maps;
        m->refs = 1;
        cipc_map_put(tp, m);
    }
    while (tp->nq_head) {
        struct cipc_notice *n = tp->nq_head;
        tp->nq_head = n->next;
        H->free(n);
    }
    for (int s = 0; s < tp->nstreams; s++)
        if (tp->streams[s])
            cudaStreamDestroy(tp->streams[s]);
    if (guarded)
        cipc_dev_leave(&g);
    pthread_cond_destroy(&tp->cond);
    pthread_mutex_destroy(&tp->lock);
    H->free(tp->name);
    H->free(tp);
}

static int streams_create(refit_tp_t *tp)
{
    struct cipc_devguard g;
    int rc = cipc_dev_enter(tp, &g);
    for (int s = 0; !rc && s < tp->nstreams; s++) {
        cudaError_t e = cudaStreamCreateWithFlags(&tp->streams[s], cudaStreamNonBlocking);
        if (e != cudaSuccess)
            rc = cipc_cuda_fail(REFIT_EPLUGIN, e, "cudaStreamCreateWithFlags on device %d", tp->dev);
    }
    if (!rc) {
        read_identity(tp);
        cipc_dev_leave(&g);
    } else if (g.changed) {
        cipc_dev_leave(&g);
    }
    return rc;
}

static int cipc_init(const struct refit_tp_init_args *a, refit_tp_t **out)
{
    if (!a || !out || a->size < sizeof(struct refit_tp_init_args))
        return H->error_set(REFIT_EINVAL, "%s: init without arguments", CIPC);
    refit_tp_t *tp = H->calloc(1, sizeof(*tp));
    if (!tp)
        return H->error_set(REFIT_ENOMEM, "%s: out of memory", CIPC);
    tp->name = cipc_strdup(a->name ? a->name : "refit");
    tp->timeout_ms = a->timeout_ms > 0 ? a->timeout_ms : 30000;
    tp->next_region_id = 1;
    tp->listen_fd = -1;
    tp->wake[0] = tp->wake[1] = -1;
    pthread_mutex_init(&tp->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&tp->cond, &ca);
    pthread_condattr_destroy(&ca);
    int64_t dev;
    const char *sock_dir;
    int rc = tp->name ? read_options(a, tp, &dev, &sock_dir) : H->error_set(REFIT_ENOMEM, "%s: out of memory", CIPC);
    if (!rc)
        rc = pick_device(tp, a, dev);
    if (!rc)
        rc = cipc_driver_open();
    if (!rc)
        rc = streams_create(tp);
    if (!rc)
        rc = cipc_ctl_start(tp, sock_dir);
    if (rc) {
        cipc_fini(tp);
        return rc;
    }
    describe_init(tp);
    H->log(1, CIPC, "%s: %s", tp->name, tp->desc);
    *out = tp;
    return 0;
}

static int cipc_caps(refit_tp_t *tp, struct refit_tp_caps *out)
{
    if (!tp || !out)
        return H->error_set(REFIT_EINVAL, "%s: caps without output", CIPC);
    size_t sz = out->size ? out->size : sizeof(*out);
    struct refit_tp_caps c = {
        .size = sz,
        .memtypes = REFIT_MEMTYPE_BIT(REFIT_MEM_CUDA),
        .max_desc_per_post = 0,
        .notify = 1,
        .max_notify_len = (uint32_t)tp->max_notify_len,
        .max_region_len = 0,
    };
    memcpy(out, &c, sz < sizeof(c) ? sz : sizeof(c));
    return 0;
}

static int cipc_address(refit_tp_t *tp, void *buf, size_t *len)
{
    if (!tp || !len)
        return H->error_set(REFIT_EINVAL, "%s: address without length", CIPC);
    if (buf && *len < sizeof(tp->addr)) {
        *len = sizeof(tp->addr);
        return H->error_set(REFIT_ERANGE, "%s: the address needs %zu bytes", CIPC, sizeof(tp->addr));
    }
    if (buf)
        memcpy(buf, &tp->addr, sizeof(tp->addr));
    *len = sizeof(tp->addr);
    return 0;
}

static int cipc_describe(refit_tp_t *tp, char *buf, size_t cap)
{
    if (!tp || !buf || !cap)
        return H->error_set(REFIT_EINVAL, "%s: describe without a buffer", CIPC);
    snprintf(buf, cap, "%s", tp->desc);
    return 0;
}

/* ------------------------------------------------------------------ */
/* The plugin */

static const struct refit_transport_ops cipc_ops = {
    .size = sizeof(struct refit_transport_ops),
    .init = cipc_init,
    .fini = cipc_fini,
    .caps = cipc_caps,
    .address = cipc_address,
    .reg = cipc_reg,
    .dereg = cipc_dereg,
    .pack_rkey = cipc_pack_rkey,
    .connect = cipc_connect,
    .disconnect = cipc_disconnect,
    .unpack_rkey = cipc_unpack_rkey,
    .release_rkey = cipc_release_rkey,
    .post = cipc_post,
    .progress = cipc_progress,
    .test = cipc_test,
    .wait = cipc_wait,
    .req_free = cipc_req_free,
    .notify = cipc_notify,
    .poll_notify = cipc_poll_notify,
    .describe = cipc_describe,
    .rkey_ptr = cipc_rkey_ptr,
    .bell_create = cipc_bell_create,
    .bell_pack = cipc_bell_pack,
    .bell_open = cipc_bell_open,
    .bell_ring = cipc_bell_ring,
    .bell_wait = cipc_bell_wait,
    .bell_close = cipc_bell_close,
};

static int cipc_load(const struct refit_host *host)
{
    H = host;
    if (!cipc_proc_nonce && getrandom(&cipc_proc_nonce, sizeof(cipc_proc_nonce), 0) != (ssize_t)sizeof(cipc_proc_nonce))
        cipc_proc_nonce = ((uint64_t)getpid() << 32) ^ (uint64_t)cipc_now_ms() ^ (uint64_t)(uintptr_t)&cipc_proc_nonce;
    return 0;
}

static const struct refit_plugin cipc_plugin = {
    .abi_major = REFIT_ABI_MAJOR,
    .abi_minor = REFIT_ABI_MINOR,
    .kind = REFIT_PLUGIN_TRANSPORT,
    .name = "cuda_ipc",
    .version = "0.1.0",
    .description = "CUDA IPC: GPU memory between processes of one host (NVLink or PCIe peer copies)",
    .config = cipc_config,
    .n_config = sizeof(cipc_config) / sizeof(cipc_config[0]),
    .load = cipc_load,
    .unload = NULL,
    .ops = &cipc_ops,
};

REFIT_PLUGIN_EXPORT const struct refit_plugin *refit_plugin_entry(void)
{
    return &cipc_plugin;
}
