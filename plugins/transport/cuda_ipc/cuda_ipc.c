/* cuda_ipc.c — the `cuda_ipc` transport plugin: one-sided READ and WRITE
 * between GPU memory of processes on one host, as device-to-device copies
 * (NVLink or PCIe peer access) through CUDA IPC mappings.  The control
 * channel that makes deregistration and notifications safe lives in
 * cuda_ipc_ctl.c; see cuda_ipc.h for the locking rules.
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
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cuda.h>

#include "cuda_ipc.h"

const struct refit_host *cipc_host;

/* The driver API is needed for allocation ranges only; libcuda.so comes
 * with the driver (the runtime has loaded it already), so it is looked up
 * rather than linked. */
typedef CUresult (*cu_range_fn)(CUdeviceptr *base, size_t *size, CUdeviceptr p);
typedef CUresult (*cu_attr_fn)(void *data, CUpointer_attribute a, CUdeviceptr p);
typedef CUresult (*cu_errstr_fn)(CUresult r, const char **s);
static struct {
    void *lib;
    cu_range_fn range;
    cu_attr_fn attr;
    cu_errstr_fn errstr;
} drv;
static pthread_mutex_t drv_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t proc_nonce; /* random per process: a loopback peer has ours */

/* ------------------------------------------------------------------ */
/* Helpers */

int64_t cipc_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* now + ms, saturating: callers may pass "forever" as a huge timeout. */
static int64_t deadline_after(int64_t ms)
{
    int64_t now = cipc_now_ms();
    return ms > INT64_MAX / 4 - now ? INT64_MAX / 4 : now + (ms > 0 ? ms : 0);
}

struct timespec cipc_abstime(int64_t deadline_ms)
{
    struct timespec ts = {(time_t)(deadline_ms / 1000), (long)(deadline_ms % 1000) * 1000000};
    return ts;
}

int cipc_cuda_fail(int status, cudaError_t e, const char *fmt, ...)
{
    char what[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    /* Clear a non-sticky error, so that the application's next
     * cudaGetLastError does not report ours. */
    cudaGetLastError();
    return H->error_set(status, "%s: %s: %s (%s)", CIPC, what, cudaGetErrorString(e), cudaGetErrorName(e));
}

static int cu_fail(int status, CUresult r, const char *what)
{
    const char *s = NULL;
    if (!drv.errstr || drv.errstr(r, &s) != CUDA_SUCCESS || !s)
        s = "unknown error";
    return H->error_set(status, "%s: %s: %s (CUresult %d)", CIPC, what, s, (int)r);
}

void cipc_req_fail(struct refit_tp_req *r, int status, const char *fmt, ...)
{
    if (r->status)
        return; /* the first failure explains the rest */
    r->status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->msg, sizeof(r->msg), fmt, ap);
    va_end(ap);
}

static void backoff(unsigned *spin)
{
    /* Small copies finish in microseconds: yield first, then sleep a
     * little longer each round (at most 0.5 ms). */
    if (++*spin < 64) {
        sched_yield();
        return;
    }
    long us = *spin < 128 ? 20 : *spin < 256 ? 100 : 500;
    struct timespec ts = {0, us * 1000};
    nanosleep(&ts, NULL);
}

int cipc_events_wait(const cudaEvent_t *ev, uint32_t mask, int64_t deadline_ms)
{
    unsigned spin = 0;
    for (;;) {
        uint32_t left = 0;
        for (int s = 0; s < CIPC_MAX_STREAMS; s++) {
            if (!(mask & (1u << s)))
                continue;
            cudaError_t e = cudaEventQuery(ev[s]);
            if (e == cudaErrorNotReady)
                left |= 1u << s;
            else if (e != cudaSuccess)
                return cipc_cuda_fail(REFIT_EIO, e, "cudaEventQuery (stream %d)", s);
        }
        if (!left)
            return 1;
        mask = left;
        if (cipc_now_ms() >= deadline_ms)
            return 0;
        backoff(&spin);
    }
}

int cipc_req_poll(struct refit_tp_req *r)
{
    if (r->done)
        return 1;
    for (int s = 0; s < CIPC_MAX_STREAMS; s++) {
        if (!(r->ev_mask & (1u << s)))
            continue;
        cudaError_t e = cudaEventQuery(r->ev[s]);
        if (e == cudaErrorNotReady)
            return 0;
        if (e != cudaSuccess) {
            /* A device error is sticky: nothing of this request will run. */
            cudaGetLastError();
            cipc_req_fail(r, REFIT_EIO, "%s: copies with peer '%s' failed on the GPU: %s (%s)", CIPC,
                          r->peer ? r->peer->name : "?", cudaGetErrorString(e), cudaGetErrorName(e));
            break;
        }
    }
    r->done = 1;
    return 1;
}

/* Calls that need our device current set it and put the caller's back:
 * the application's current device is its own business. */
struct devguard {
    int prev, changed;
};

static int dev_enter(refit_tp_t *tp, struct devguard *g)
{
    g->changed = 0;
    cudaError_t e = cudaGetDevice(&g->prev);
    if (e != cudaSuccess)
        return cipc_cuda_fail(REFIT_EPLUGIN, e, "cudaGetDevice");
    if (g->prev != tp->dev) {
        e = cudaSetDevice(tp->dev);
        if (e != cudaSuccess)
            return cipc_cuda_fail(REFIT_EPLUGIN, e, "cudaSetDevice(%d)", tp->dev);
        g->changed = 1;
    }
    return 0;
}

static void dev_leave(struct devguard *g)
{
    if (g->changed)
        cudaSetDevice(g->prev);
}

static int events_create(refit_tp_t *tp, cudaEvent_t *ev, const char *what)
{
    for (int s = 0; s < tp->nstreams; s++) {
        cudaError_t e = cudaEventCreateWithFlags(&ev[s], cudaEventDisableTiming);
        if (e != cudaSuccess) {
            for (int i = 0; i < s; i++)
                cudaEventDestroy(ev[i]);
            memset(ev, 0, sizeof(cudaEvent_t) * CIPC_MAX_STREAMS);
            return cipc_cuda_fail(REFIT_EPLUGIN, e, "cudaEventCreateWithFlags for %s", what);
        }
    }
    return 0;
}

static void events_destroy(refit_tp_t *tp, cudaEvent_t *ev)
{
    for (int s = 0; s < tp->nstreams; s++)
        if (ev[s])
            cudaEventDestroy(ev[s]);
    memset(ev, 0, sizeof(cudaEvent_t) * CIPC_MAX_STREAMS);
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = H->alloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

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
/* Mappings of peers' allocations */

/* Under tp->lock.  The owner's device in our numbering, or -1. */
static int our_ordinal(const char *bus_id)
{
    int d = -1;
    if (!bus_id[0] || cudaDeviceGetByPCIBusId(&d, bus_id) != cudaSuccess) {
        cudaGetLastError();
        return -1;
    }
    return d;
}

static int map_get(refit_tp_t *tp, refit_tp_peer_t *p, const struct cipc_key *k, struct cipc_map **out)
{
    for (struct cipc_map *m = tp->maps; m; m = m->next)
        if (m->owner_tp_id == k->tp_id && !memcmp(&m->handle, &k->handle, sizeof(k->handle))) {
            m->refs++;
            *out = m;
            return 0;
        }
    struct cipc_map *m = H->calloc(1, sizeof(*m));
    if (!m)
        return H->error_set(REFIT_ENOMEM, "%s: out of memory", CIPC);
    struct devguard g;
    int rc = dev_enter(tp, &g);
    if (rc) {
        H->free(m);
        return rc;
    }
    void *base = NULL;
    cudaError_t e = cudaIpcOpenMemHandle(&base, k->handle, cudaIpcMemLazyEnablePeerAccess);
    if (e != cudaSuccess) {
        int od = our_ordinal(p->addr.bus_id), can = -1;
        if (od >= 0 && od != tp->dev && cudaDeviceCanAccessPeer(&can, tp->dev, od) != cudaSuccess)
            can = -1;
        char hint[160] = "";
        if (od == tp->dev)
            snprintf(hint, sizeof(hint), "; it is on our own device %d", od);
        else if (od >= 0)
            snprintf(hint, sizeof(hint), "; cudaDeviceCanAccessPeer(%d -> %d) = %d", tp->dev, od, can);
        else
            snprintf(hint, sizeof(hint), "; device %s is not visible here (CUDA_VISIBLE_DEVICES?)",
                     p->addr.bus_id);
        rc = cipc_cuda_fail(e == cudaErrorMemoryAllocation ? REFIT_ENOMEM : REFIT_EPLUGIN, e,
                            "cudaIpcOpenMemHandle of region %" PRIu64 " of peer '%s' (device %s)%s",
                            k->region_id, p->name, p->addr.bus_id, hint);
        dev_leave(&g);
        H->free(m);
        return rc;
    }
    dev_leave(&g);
    m->owner_tp_id = k->tp_id;
    m->handle = k->handle;
    m->base = base;
    m->refs = 1;
    m->next = tp->maps;
    tp->maps = m;
    *out = m;
    return 0;
}

void cipc_map_put(refit_tp_t *tp, struct cipc_map *m)
{
    if (!m || --m->refs > 0)
        return;
    for (struct cipc_map **pm = &tp->maps; *pm; pm = &(*pm)->next)
        if (*pm == m) {
            *pm = m->next;
            break;
        }
    struct devguard g;
    if (dev_enter(tp, &g) == 0) {
        cudaError_t e = cudaIpcCloseMemHandle(m->base);
        if (e != cudaSuccess) {
            cudaGetLastError();
            H->log(2, CIPC, "cudaIpcCloseMemHandle(%p): %s", m->base, cudaGetErrorString(e));
        }
        dev_leave(&g);
    }
    H->free(m);
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

static int driver_open(void)
{
    pthread_mutex_lock(&drv_lock);
    if (!drv.lib) {
        void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
        if (lib) {
            drv.range = (cu_range_fn)dlsym(lib, "cuMemGetAddressRange_v2");
            drv.attr = (cu_attr_fn)dlsym(lib, "cuPointerGetAttribute");
            drv.errstr = (cu_errstr_fn)dlsym(lib, "cuGetErrorString");
            if (drv.range && drv.attr)
                drv.lib = lib;
            else
                dlclose(lib);
        }
    }
    int ok = drv.lib != NULL;
    pthread_mutex_unlock(&drv_lock);
    if (!ok)
        return H->error_set(REFIT_ENOTSUP, "%s: the CUDA driver library (libcuda.so.1 with "
                            "cuMemGetAddressRange_v2, cuPointerGetAttribute) could not be loaded: %s",
                            CIPC, dlerror() ? dlerror() : "symbols missing");
    return 0;
}

static void read_identity(refit_tp_t *tp)
{
    struct cipc_addr *a = &tp->addr;
    a->magic = CIPC_ADDR_MAGIC;
    a->version = CIPC_VERSION;
    a->pid = (uint32_t)getpid();
    a->dev = tp->dev;
    a->proc_nonce = proc_nonce;
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

static void region_free(struct refit_tp_region *r)
{
    H->free(r->openers);
    H->free(r);
}

static void peer_teardown(refit_tp_t *tp, refit_tp_peer_t *p);

static void cipc_fini(refit_tp_t *tp)
{
    if (!tp)
        return;
    /* No device calls before the streams exist: a failed init keeps its
     * own message (e.g. no device) rather than a later CUDA error. */
    struct devguard g = {0, 0};
    int guarded = tp->streams[0] && dev_enter(tp, &g) == 0;
    pthread_mutex_lock(&tp->lock);
    /* Regions still registered: revoke them like dereg, so that no peer
     * keeps a mapping of memory the caller frees next. */
    while (tp->regions) {
        struct refit_tp_region *r = tp->regions;
        tp->regions = r->next;
        if (r->n_openers && tp->thread_on)
            cipc_revoke(tp, r);
        region_free(r);
    }
    /* Our copies end and our mappings close before the owners see us go. */
    while (tp->peers)
        peer_teardown(tp, tp->peers);
    pthread_mutex_unlock(&tp->lock);
    cipc_ctl_stop(tp);
    int64_t deadline = cipc_now_ms() + tp->timeout_ms;
    while (tp->reqs) {
        struct refit_tp_req *r = tp->reqs;
        tp->reqs = r->next;
        if (!r->done && cipc_events_wait(r->ev, r->ev_mask, deadline) != 1)
            H->log(3, CIPC, "fini: copies of a request still running after %" PRId64 " ms", tp->timeout_ms);
        events_destroy(tp, r->ev);
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
        dev_leave(&g);
    pthread_cond_destroy(&tp->cond);
    pthread_mutex_destroy(&tp->lock);
    H->free(tp->name);
    H->free(tp);
}

static int streams_create(refit_tp_t *tp)
{
    struct devguard g;
    int rc = dev_enter(tp, &g);
    for (int s = 0; !rc && s < tp->nstreams; s++) {
        cudaError_t e = cudaStreamCreateWithFlags(&tp->streams[s], cudaStreamNonBlocking);
        if (e != cudaSuccess)
            rc = cipc_cuda_fail(REFIT_EPLUGIN, e, "cudaStreamCreateWithFlags on device %d", tp->dev);
    }
    if (!rc) {
        read_identity(tp);
        dev_leave(&g);
    } else if (g.changed) {
        dev_leave(&g);
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
    tp->name = xstrdup(a->name ? a->name : "refit");
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
        rc = driver_open();
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
/* Registration (owner side) */

/* Where ptr lies: on our device, in a cudaMalloc allocation. */
static int locate(refit_tp_t *tp, void *ptr, size_t len, CUdeviceptr *base)
{
    struct cudaPointerAttributes at;
    memset(&at, 0, sizeof(at));
    cudaError_t e = cudaPointerGetAttributes(&at, ptr);
    if (e != cudaSuccess)
        return cipc_cuda_fail(REFIT_EINVAL, e, "cudaPointerGetAttributes(%p)", ptr);
    if (at.type == cudaMemoryTypeManaged)
        return H->error_set(REFIT_ENOTSUP, "%s: memory at %p is managed memory, which CUDA IPC cannot "
                            "export; register cudaMalloc memory", CIPC, ptr);
    if (at.type != cudaMemoryTypeDevice)
        return H->error_set(REFIT_ENOTSUP, "%s: memory at %p is host memory: cuda_ipc moves GPU memory "
                            "only (use tcp, ucx or ofi for host memory)", CIPC, ptr);
    if (at.device != tp->dev)
        return H->error_set(REFIT_ENOTSUP, "%s: memory at %p is on device %d, this transport copies on "
                            "device %d (transport.cuda_ipc.device or the rank's device)", CIPC, ptr,
                            at.device, tp->dev);
    uint64_t ipc_ok = 1; /* the attribute is a boolean; zeroed wider storage reads either width */
    CUresult cr = drv.attr(&ipc_ok, CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE, (CUdeviceptr)ptr);
    if (cr == CUDA_SUCCESS && !ipc_ok)
        return H->error_set(REFIT_ENOTSUP, "%s: memory at %p is not from cudaMalloc: stream-ordered pools "
                            "(cudaMallocAsync), cuMemCreate/VMM mappings and expandable segments have no "
                            "CUDA IPC handle; register buffers of a cudaMalloc pool (docs/cuda.md)",
                            CIPC, ptr);
    size_t size = 0;
    cr = drv.range(base, &size, (CUdeviceptr)ptr);
    if (cr != CUDA_SUCCESS)
        return cu_fail(REFIT_EPLUGIN, cr, "cuMemGetAddressRange of the registered memory");
    /* The driver may carve cudaMalloc allocations under 2 MiB out of a
     * block shared with other allocations, and IPC then maps the whole
     * block (CUDA programming guide, "Interprocess Communication"): other
     * allocations would be exposed, and where the peer's pointer lands in
     * the block is not ours to know.  Allocations of 2 MiB and more have
     * blocks of their own. */
    if (size < CIPC_MIN_ALLOC)
        return H->error_set(REFIT_ENOTSUP, "%s: memory at %p lies in a cudaMalloc allocation of %zu bytes: "
                            "CUDA IPC shares allocations under 2 MiB together with the block the driver "
                            "carved them from; allocate at least 2 MiB (refit's CUDA pool does)", CIPC,
                            ptr, size);
    uint64_t off = (uint64_t)(uintptr_t)ptr - (uint64_t)*base;
    if (off > size || len > size - off)
        return H->error_set(REFIT_ERANGE, "%s: region [%p, +%zu) runs past the end of its allocation "
                            "(%zu bytes at %#llx): a region must lie in one cudaMalloc allocation",
                            CIPC, ptr, len, size, (unsigned long long)*base);
    return 0;
}

static int cipc_reg(refit_tp_t *tp, void *ptr, size_t len, uint32_t memtype, refit_tp_region_t **out)
{
    if (!tp || !ptr || !len || !out)
        return H->error_set(REFIT_EINVAL, "%s: register needs memory, a length and out", CIPC);
    if (memtype != REFIT_MEM_CUDA)
        return H->error_set(REFIT_ENOTSUP, "%s: memory type %u: cuda_ipc registers GPU memory "
                            "(REFIT_MEM_CUDA) only; host memory goes over tcp, ucx or ofi", CIPC, memtype);
    struct devguard g;
    int rc = dev_enter(tp, &g);
    if (rc)
        return rc;
    CUdeviceptr base = 0;
    cudaIpcMemHandle_t h;
    rc = locate(tp, ptr, len, &base);
    if (!rc) {
        cudaError_t e = cudaIpcGetMemHandle(&h, (void *)(uintptr_t)base);
        if (e != cudaSuccess)
            rc = cipc_cuda_fail(REFIT_ENOTSUP, e, "cudaIpcGetMemHandle of the allocation at %#llx "
                                "(region %p)", (unsigned long long)base, ptr);
    }
    dev_leave(&g);
    if (rc)
        return rc;
    struct refit_tp_region *r = H->calloc(1, sizeof(*r));
    if (!r)
        return H->error_set(REFIT_ENOMEM, "%s: out of memory", CIPC);
    if (getrandom(r->key.secret, sizeof(r->key.secret), 0) != (ssize_t)sizeof(r->key.secret)) {
        H->free(r);
        return H->error_set(REFIT_EIO, "%s: getrandom: %s", CIPC, strerror(errno));
    }
    r->ptr = ptr;
    r->len = len;
    r->key.magic = CIPC_KEY_MAGIC;
    r->key.version = CIPC_VERSION;
    r->key.tp_id = tp->addr.tp_id;
    r->key.alloc_off = (uint64_t)(uintptr_t)ptr - (uint64_t)base;
    r->key.len = len;
    r->key.owner_ptr = (uint64_t)(uintptr_t)ptr;
    r->key.dev = tp->dev;
    r->key.handle = h;
    pthread_mutex_lock(&tp->lock);
    r->key.region_id = tp->next_region_id++;
    r->next = tp->regions;
    tp->regions = r;
    pthread_mutex_unlock(&tp->lock);
    *out = r;
    return 0;
}

static int cipc_dereg(refit_tp_t *tp, refit_tp_region_t *r)
{
    if (!tp || !r)
        return 0;
    pthread_mutex_lock(&tp->lock);
    /* Out of the table first: a check arriving from now on is stale. */
    for (struct refit_tp_region **pr = &tp->regions; *pr; pr = &(*pr)->next)
        if (*pr == r) {
            *pr = r->next;
            break;
        }
    int rc = r->n_openers ? cipc_revoke(tp, r) : 0;
    pthread_mutex_unlock(&tp->lock);
    region_free(r);
    return rc;
}

static int cipc_pack_rkey(refit_tp_t *tp, refit_tp_region_t *r, void *buf, size_t *len)
{
    if (!tp || !r || !len)
        return H->error_set(REFIT_EINVAL, "%s: pack_rkey without a region", CIPC);
    if (buf && *len < sizeof(r->key)) {
        *len = sizeof(r->key);
        return H->error_set(REFIT_ERANGE, "%s: a remote key needs %zu bytes", CIPC, sizeof(r->key));
    }
    if (buf)
        memcpy(buf, &r->key, sizeof(r->key));
    *len = sizeof(r->key);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Peers */

/* Under tp->lock: our copies with p end, its mappings close, the
 * connection hangs up (the owner then stops waiting for us). */
static void peer_teardown(refit_tp_t *tp, refit_tp_peer_t *p)
{
    for (refit_tp_peer_t **pp = &tp->peers; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    if (!p->dead)
        snprintf(p->why, sizeof(p->why), "disconnected");
    cipc_peer_quiesce(tp, p, CIPC_ALL_REGIONS, REFIT_ECANCELED);
    for (struct refit_tp_req *r = tp->reqs; r; r = r->next)
        if (r->peer == p)
            r->peer = NULL;
    for (refit_tp_rkey_t *k = p->rkeys; k; k = k->next)
        k->peer = NULL; /* release_rkey frees it alone */
    struct cipc_conn *c = p->conn;
    if (c) {
        c->closing = 1;
        c->peer = NULL;
        shutdown(c->fd, SHUT_RDWR); /* the control thread sees the end and unlinks it */
        cipc_conn_put(tp, c);
        cipc_ctl_wake(tp);
    }
    events_destroy(tp, p->wev);
    H->free(p->name);
    H->free(p);
}

static int same_host(const struct cipc_addr *a, const struct cipc_addr *b)
{
    if (a->boot_id[0] && b->boot_id[0])
        return !strcmp(a->boot_id, b->boot_id);
    return !strcmp(a->host, b->host);
}

static int cipc_connect(refit_tp_t *tp, const void *addr, size_t len, const char *peer_name,
                        refit_tp_peer_t **out)
{
    if (!tp || !addr || !out)
        return H->error_set(REFIT_EINVAL, "%s: connect without an address", CIPC);
    const char *who = peer_name ? peer_name : "peer";
    struct cipc_addr a;
    if (len != sizeof(a))
        return H->error_set(REFIT_EPROTO, "%s: address of peer '%s' is %zu bytes, expected %zu "
                            "(not a cuda_ipc address?)", CIPC, who, len, sizeof(a));
    memcpy(&a, addr, sizeof(a));
    if (a.magic != CIPC_ADDR_MAGIC || a.version != CIPC_VERSION || (a.sock_kind != 1 && a.sock_kind != 2) ||
        !a.sock_len || a.sock_len >= sizeof(a.sock))
        return H->error_set(REFIT_EPROTO, "%s: address of peer '%s' is malformed (magic %#x, version %u)",
                            CIPC, who, a.magic, a.version);
    a.boot_id[sizeof(a.boot_id) - 1] = 0;
    a.host[sizeof(a.host) - 1] = 0;
    a.bus_id[sizeof(a.bus_id) - 1] = 0;
    if (!same_host(&tp->addr, &a))
        return H->error_set(REFIT_ENOTSUP, "%s: peer '%s' runs on host '%s' (boot id %s), this process "
                            "('%s') on host '%s' (boot id %s): cuda_ipc connects processes of one host "
                            "only; use ucx or ofi between hosts", CIPC, who, a.host,
                            a.boot_id[0] ? a.boot_id : "?", tp->name, tp->addr.host,
                            tp->addr.boot_id[0] ? tp->addr.boot_id : "?");
    refit_tp_peer_t *p = H->calloc(1, sizeof(*p));
    if (!p || !(p->name = xstrdup(who))) {
        H->free(p);
        return H->error_set(REFIT_ENOMEM, "%s: out of memory", CIPC);
    }
    p->addr = a;
    p->loopback = a.proc_nonce == proc_nonce && a.pid == (uint32_t)getpid();
    struct devguard g;
    int rc = dev_enter(tp, &g);
    if (!rc) {
        rc = events_create(tp, p->wev, "a peer");
        dev_leave(&g);
    }
    if (!rc)
        rc = cipc_ctl_connect(tp, p);
    pthread_mutex_lock(&tp->lock);
    p->next = tp->peers;
    tp->peers = p;
    if (rc)
        peer_teardown(tp, p);
    pthread_mutex_unlock(&tp->lock);
    if (rc)
        return rc;
    H->log(0, CIPC, "%s: connected to '%s' (pid %u, device %s%s)", tp->name, who, a.pid, a.bus_id,
           p->loopback ? ", this process" : "");
    *out = p;
    return 0;
}

static void cipc_disconnect(refit_tp_t *tp, refit_tp_peer_t *p)
{
    if (!tp || !p)
        return;
    pthread_mutex_lock(&tp->lock);
    peer_teardown(tp, p);
    pthread_mutex_unlock(&tp->lock);
}

/* ------------------------------------------------------------------ */
/* Remote keys */

static void rkey_unlink(refit_tp_rkey_t *k)
{
    if (!k->peer)
        return;
    for (refit_tp_rkey_t **pk = &k->peer->rkeys; *pk; pk = &(*pk)->next)
        if (*pk == k) {
            *pk = k->next;
            break;
        }
    k->peer = NULL;
}

/* Ask the owner whether the key is live; 0 or the owner's verdict. */
static int rkey_check(refit_tp_t *tp, refit_tp_peer_t *p, const struct cipc_key *key)
{
    int64_t deadline = cipc_now_ms() + tp->timeout_ms;
    uint64_t seq = ++tp->check_seq;
    struct cipc_conn *c = p->conn;
    int rc = cipc_conn_send(c, MSG_CHECK, seq, 0, key, sizeof(*key), deadline);
    if (rc)
        return H->error_set(rc, "%s: could not send a key check to peer '%s'", CIPC, p->name);
    pthread_mutex_lock(&tp->lock);
    struct timespec ts = cipc_abstime(deadline);
    while (c->reply_seq != seq && !c->dead && cipc_now_ms() < deadline)
        pthread_cond_timedwait(&tp->cond, &tp->lock, &ts);
    int answered = c->reply_seq == seq, dead = c->dead;
    int64_t st = c->reply_status;
    pthread_mutex_unlock(&tp->lock);
    if (!answered && dead)
        return H->error_set(REFIT_ECONN, "%s: peer '%s' went away while checking the key of its region %"
                            PRIu64, CIPC, p->name, key->region_id);
    if (!answered)
        return H->error_set(REFIT_ETIMEDOUT, "%s: peer '%s' did not answer the check of the key of its "
                            "region %" PRIu64 " within %" PRId64 " ms", CIPC, p->name, key->region_id,
                            tp->timeout_ms);
    if (st == REFIT_ESTALE)
        return H->error_set(REFIT_ESTALE, "%s: region %" PRIu64 " of peer '%s' is no longer registered "
                            "there (stale key)", CIPC, key->region_id, p->name);
    if (st == REFIT_EPERM)
        return H->error_set(REFIT_EPERM, "%s: peer '%s' rejected the key of region %" PRIu64 ": it matches "
                            "none of its registrations (forged or corrupted key)", CIPC, p->name,
                            key->region_id);
    if (st)
        return H->error_set(st < 0 && st > REFIT_STATUS_MIN_ ? (int)st : REFIT_EPROTO,
                            "%s: peer '%s' refused the key of region %" PRIu64 " (status %" PRId64 ")",
                            CIPC, p->name, key->region_id, st);
    return 0;
}

/* Under tp->lock: where the region is in our address space. */
static int rkey_map(refit_tp_t *tp, refit_tp_peer_t *p, refit_tp_rkey_t *k)
{
    if (k->stale == REFIT_ESTALE)
        return H->error_set(REFIT_ESTALE, "%s: region %" PRIu64 " of peer '%s' was deregistered while "
                            "its key was being unpacked", CIPC, k->key.region_id, p->name);
    if (k->stale || p->dead)
        return H->error_set(REFIT_ECONN, "%s: peer '%s': %s", CIPC, p->name, p->why);
    if (p->loopback) {
        k->base = (char *)(uintptr_t)k->key.owner_ptr;
    } else {
        int rc = map_get(tp, p, &k->key, &k->map);
        if (rc)
            return rc;
        k->base = (char *)k->map->base + k->key.alloc_off;
    }
    struct devguard g;
    int rc = dev_enter(tp, &g);
    if (!rc) {
        rc = events_create(tp, k->ev, "a remote key");
        dev_leave(&g);
    }
    if (rc && k->map) {
        cipc_map_put(tp, k->map);
        k->map = NULL;
    }
    return rc;
}

static int cipc_unpack_rkey(refit_tp_t *tp, refit_tp_peer_t *p, const void *buf, size_t len,
                            refit_tp_rkey_t **out)
{
    if (!tp || !p || !buf || !out)
        return H->error_set(REFIT_EINVAL, "%s: unpack_rkey without a peer or key", CIPC);
    struct cipc_key key;
    if (len != sizeof(key))
        return H->error_set(REFIT_EPROTO, "%s: remote key from peer '%s' is %zu bytes, expected %zu",
                            CIPC, p->name, len, sizeof(key));
    memcpy(&key, buf, sizeof(key));
    if (key.magic != CIPC_KEY_MAGIC || key.version != CIPC_VERSION || !key.len || !key.region_id ||
        key.alloc_off + key.len < key.alloc_off)
        return H->error_set(REFIT_EPROTO, "%s: remote key from peer '%s' is malformed (magic %#x, "
                            "version %u)", CIPC, p->name, key.magic, key.version);
    if (key.tp_id != p->addr.tp_id)
        return H->error_set(REFIT_EPROTO, "%s: remote key of region %" PRIu64 " was made by another "
                            "transport (%016" PRIx64 "), not by peer '%s' (%016" PRIx64 ")", CIPC,
                            key.region_id, key.tp_id, p->name, p->addr.tp_id);
    refit_tp_rkey_t *k = H->calloc(1, sizeof(*k));
    if (!k)
        return H->error_set(REFIT_ENOMEM, "%s: out of memory", CIPC);
    k->key = key;
    pthread_mutex_lock(&tp->lock);
    int rc = p->dead ? H->error_set(REFIT_ECONN, "%s: peer '%s': %s", CIPC, p->name, p->why) : 0;
    if (!rc) {
        /* Linked before the check, so that a revoke racing it marks it. */
        k->peer = p;
        k->next = p->rkeys;
        p->rkeys = k;
    }
    pthread_mutex_unlock(&tp->lock);
    if (!rc)
        rc = rkey_check(tp, p, &key);
    pthread_mutex_lock(&tp->lock);
    if (!rc)
        rc = rkey_map(tp, p, k);
    if (rc)
        rkey_unlink(k);
    else
        k->checked = 1;
    pthread_mutex_unlock(&tp->lock);
    if (rc) {
        H->free(k);
        return rc;
    }
    *out = k;
    return 0;
}

static void cipc_release_rkey(refit_tp_t *tp, refit_tp_rkey_t *k)
{
    if (!tp || !k)
        return;
    pthread_mutex_lock(&tp->lock);
    rkey_unlink(k);
    int quiet = 1;
    if (k->ev_mask) {
        /* Only after a request's last copy: wait in case a timed-out
         * request still runs, rather than unmap under it. */
        quiet = cipc_events_wait(k->ev, k->ev_mask, cipc_now_ms() + tp->timeout_ms) == 1;
        if (!quiet)
            H->log(3, CIPC, "release of the key of region %" PRIu64 ": copies still running after %"
                   PRId64 " ms; its mapping stays open", k->key.region_id, tp->timeout_ms);
    }
    if (quiet && k->map)
        cipc_map_put(tp, k->map);
    pthread_mutex_unlock(&tp->lock);
    events_destroy(tp, k->ev);
    H->free(k);
}

/* ------------------------------------------------------------------ */
/* Transfers */

/* Under tp->lock: every descriptor is checked before any copy starts. */
static int check_desc(refit_tp_peer_t *p, const struct refit_tp_desc *d, size_t i)
{
    if (d->op != REFIT_OP_READ && d->op != REFIT_OP_WRITE)
        return H->error_set(REFIT_EINVAL, "%s: descriptor %zu: unknown op %u", CIPC, i, d->op);
    if (!d->local || !d->remote)
        return H->error_set(REFIT_EINVAL, "%s: descriptor %zu: no local region or remote key", CIPC, i);
    const refit_tp_rkey_t *k = d->remote;
    if (k->peer != p)
        return H->error_set(REFIT_EINVAL, "%s: descriptor %zu: the remote key is not one of peer '%s'",
                            CIPC, i, p->name);
    if (k->stale == REFIT_ESTALE)
        return H->error_set(REFIT_ESTALE, "%s: descriptor %zu: region %" PRIu64 " of peer '%s' was "
                            "deregistered (stale key)", CIPC, i, k->key.region_id, p->name);
    if (k->stale || !k->base)
        return H->error_set(REFIT_ECONN, "%s: descriptor %zu: peer '%s': %s", CIPC, i, p->name,
                            p->why[0] ? p->why : "its regions are no longer reachable");
    if (d->local_off > d->local->len || d->len > d->local->len - d->local_off)
        return H->error_set(REFIT_ERANGE, "%s: descriptor %zu: local [%" PRIu64 ", +%" PRIu64 ") is "
                            "outside the region of %zu bytes", CIPC, i, d->local_off, d->len,
                            d->local->len);
    if (d->remote_off > k->key.len || d->len > k->key.len - d->remote_off)
        return H->error_set(REFIT_ERANGE, "%s: descriptor %zu: remote [%" PRIu64 ", +%" PRIu64 ") is "
                            "outside region %" PRIu64 " of peer '%s' (%" PRIu64 " bytes)", CIPC, i,
                            d->remote_off, d->len, k->key.region_id, p->name, k->key.len);
    return 0;
}

static int req_add_region(struct refit_tp_req *r, uint64_t id, size_t cap)
{
    if (!r->regions) {
        r->regions = H->alloc(cap * sizeof(*r->regions));
        if (!r->regions)
            return H->error_set(REFIT_ENOMEM, "%s: out of memory", CIPC);
    }
    r->regions[r->n_regions++] = id;
    return 0;
}

/* Enqueue the copies of one descriptor, split into chunks over the streams. */
static int enqueue(refit_tp_t *tp, const struct refit_tp_desc *d, size_t i, uint32_t *mask,
                   uint32_t *wmask)
{
    refit_tp_rkey_t *k = d->remote;
    char *local = (char *)d->local->ptr + d->local_off, *remote = k->base + d->remote_off;
    for (uint64_t off = 0; off < d->len;) {
        uint64_t n = d->len - off < tp->chunk ? d->len - off : tp->chunk;
        int s = (int)(tp->next_stream++ % (unsigned)tp->nstreams);
        void *dst = d->op == REFIT_OP_READ ? local + off : remote + off;
        const void *src = d->op == REFIT_OP_READ ? remote + off : local + off;
        cudaError_t e = tp->kernel_copy ? cipc_kernel_copy(dst, src, n, tp->streams[s], tp->copy_blocks)
                                        : cudaMemcpyAsync(dst, src, n, cudaMemcpyDefault, tp->streams[s]);
        if (e != cudaSuccess)
            return cipc_cuda_fail(REFIT_EIO, e, "descriptor %zu: copy of %" PRIu64 " bytes %s "
                                  "region %" PRIu64 " of peer '%s'", i, n,
                                  d->op == REFIT_OP_READ ? "from" : "to", k->key.region_id, k->peer->name);
        *mask |= 1u << s;
        k->post_mask |= 1u << s;
        if (d->op == REFIT_OP_WRITE)
            *wmask |= 1u << s;
        off += n;
    }
    return 0;
}

/* Record the events of a post: the request's, and the last use of each
 * key and of the peer (WRITEs) for revokes, releases and notify. */
static int record(refit_tp_t *tp, refit_tp_peer_t *p, struct refit_tp_req *r, const struct refit_tp_desc *d,
                  size_t n, uint32_t mask, uint32_t wmask, uint64_t seq)
{
    int rc = 0;
    for (int s = 0; s < tp->nstreams; s++) {
        if (!(mask & (1u << s)))
            continue;
        cudaError_t e = cudaEventRecord(r->ev[s], tp->streams[s]);
        if (e == cudaSuccess && (wmask & (1u << s)))
            e = cudaEventRecord(p->wev[s], tp->streams[s]);
        if (e != cudaSuccess && !rc)
            rc = cipc_cuda_fail(REFIT_EIO, e, "cudaEventRecord (stream %d)", s);
    }
    if (!rc) {
        r->ev_mask = mask;
        p->wev_mask |= wmask;
    }
    for (size_t i = 0; i < n; i++) {
        refit_tp_rkey_t *k = d[i].remote;
        if (k->post_mark != seq || !k->post_mask)
            continue;
        for (int s = 0; s < tp->nstreams; s++)
            if ((k->post_mask & (1u << s)) && cudaEventRecord(k->ev[s], tp->streams[s]) == cudaSuccess)
                k->ev_mask |= 1u << s;
        k->post_mask = 0;
    }
    return rc;
}

static int post_locked(refit_tp_t *tp, refit_tp_peer_t *p, const struct refit_tp_desc *d, size_t n,
                       struct refit_tp_req *r)
{
    if (p->dead)
        return H->error_set(REFIT_ECONN, "%s: peer '%s': %s", CIPC, p->name, p->why);
    for (size_t i = 0; i < n; i++) {
        int rc = check_desc(p, &d[i], i);
        if (rc)
            return rc;
    }
    uint64_t seq = ++tp->post_seq;
    for (size_t i = 0; i < n; i++) {
        refit_tp_rkey_t *k = d[i].remote;
        if (k->post_mark != seq) {
            k->post_mark = seq;
            k->post_mask = 0;
            int rc = req_add_region(r, k->key.region_id, n);
            if (rc)
                return rc;
        }
    }
    int rc = 0;
    uint32_t mask = 0, wmask = 0;
    for (size_t i = 0; i < n && !rc; i++)
        if (d[i].len)
            rc = enqueue(tp, &d[i], i, &mask, &wmask);
    /* Also after a failed enqueue: the copies that started are tracked by
     * the keys' events, so a revoke or release waits for them. */
    int rrc = record(tp, p, r, d, n, mask, wmask, seq);
    if (rc && r->ev_mask)
        cipc_events_wait(r->ev, r->ev_mask, cipc_now_ms() + tp->timeout_ms);
    return rc ? rc : rrc;
}

static int cipc_post(refit_tp_t *tp, refit_tp_peer_t *p, const struct refit_tp_desc *d, size_t n,
                     refit_tp_req_t **out)
{
    if (!tp || !p || (n && !d) || !out)
        return H->error_set(REFIT_EINVAL, "%s: post without a peer, descriptors or out", CIPC);
    struct refit_tp_req *r = H->calloc(1, sizeof(*r));
    if (!r)
        return H->error_set(REFIT_ENOMEM, "%s: out of memory", CIPC);
    r->peer = p;
    struct devguard g;
    int rc = dev_enter(tp, &g);
    if (rc) {
        H->free(r);
        return rc;
    }
    rc = events_create(tp, r->ev, "a request");
    if (!rc) {
        pthread_mutex_lock(&tp->lock);
        /* The control thread may not have read the end of the owner's
         * socket yet: look at it here, so that a post after the owner
         * died fails at once (its copies would still "succeed"). */
        if (!p->dead && p->conn && cipc_conn_hung_up(p->conn)) {
            p->dead = 1;
            snprintf(p->why, sizeof(p->why), "control connection to pid %u closed: the process ended or "
                     "closed its transport", p->addr.pid);
        }
        rc = post_locked(tp, p, d, n, r);
        if (!rc) {
            r->next = tp->reqs;
            if (tp->reqs)
                tp->reqs->prev = r;
            tp->reqs = r;
        }
        pthread_mutex_unlock(&tp->lock);
    }
    dev_leave(&g);
    if (rc) {
        events_destroy(tp, r->ev);
        H->free(r->regions);
        H->free(r);
        return rc;
    }
    *out = r;
    return 0;
}

static int cipc_progress(refit_tp_t *tp)
{
    (void)tp; /* copies progress on the GPU, the control channel on its thread */
    return 0;
}

static int cipc_test(refit_tp_t *tp, refit_tp_req_t *r)
{
    if (!tp || !r)
        return H->error_set(REFIT_EINVAL, "%s: test without a request", CIPC);
    pthread_mutex_lock(&tp->lock);
    int rc = 0;
    if (!cipc_req_poll(r))
        rc = REFIT_EAGAIN;
    else if (r->status)
        rc = H->error_set(r->status, "%s", r->msg);
    pthread_mutex_unlock(&tp->lock);
    return rc;
}

static int cipc_wait(refit_tp_t *tp, refit_tp_req_t *r, int64_t timeout_ms)
{
    if (!tp || !r)
        return H->error_set(REFIT_EINVAL, "%s: wait without a request", CIPC);
    if (timeout_ms < 0)
        timeout_ms = tp->timeout_ms;
    int64_t deadline = deadline_after(timeout_ms);
    unsigned spin = 0;
    for (;;) {
        int rc = cipc_test(tp, r);
        if (rc != REFIT_EAGAIN)
            return rc;
        if (cipc_now_ms() >= deadline)
            return H->error_set(REFIT_ETIMEDOUT, "%s: copies with peer '%s' still running on the GPU after "
                                "%" PRId64 " ms (device busy or hung)", CIPC,
                                r->peer ? r->peer->name : "?", timeout_ms);
        backoff(&spin);
    }
}

static void cipc_req_free(refit_tp_t *tp, refit_tp_req_t *r)
{
    if (!tp || !r)
        return;
    pthread_mutex_lock(&tp->lock);
    if (r->prev)
        r->prev->next = r->next;
    else if (tp->reqs == r)
        tp->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    pthread_mutex_unlock(&tp->lock);
    /* Destroying an event whose work is pending is allowed: CUDA releases
     * it on completion, and the keys' events still track the copies. */
    events_destroy(tp, r->ev);
    H->free(r->regions);
    H->free(r);
}

/* ------------------------------------------------------------------ */
/* Notifications */

static int cipc_notify(refit_tp_t *tp, refit_tp_peer_t *p, const void *msg, size_t len)
{
    if (!tp || !p || (len && !msg))
        return H->error_set(REFIT_EINVAL, "%s: notify without a peer or message", CIPC);
    if (len > tp->max_notify_len)
        return H->error_set(REFIT_ETOOBIG, "%s: notification of %zu bytes, at most %" PRIu64, CIPC, len,
                            tp->max_notify_len);
    if (p->dead)
        return H->error_set(REFIT_ECONN, "%s: peer '%s': %s", CIPC, p->name, p->why);
    int64_t deadline = cipc_now_ms() + tp->timeout_ms;
    /* Every WRITE this process posted to p lands before the message
     * leaves: push mode reads the weights once it has it. */
    if (p->wev_mask) {
        int rc = cipc_events_wait(p->wev, p->wev_mask, deadline);
        if (rc < 0)
            return H->error_push(rc, "notify peer '%s'", p->name);
        if (rc == 0)
            return H->error_set(REFIT_ETIMEDOUT, "%s: WRITEs to peer '%s' still running after %" PRId64
                                " ms; notification not sent", CIPC, p->name, tp->timeout_ms);
    }
    int rc = cipc_conn_send(p->conn, MSG_NOTIFY, 0, 0, msg, len, deadline);
    if (rc)
        return H->error_set(rc, "%s: notification to peer '%s' (pid %u) not sent: %s", CIPC, p->name,
                            p->addr.pid, rc == REFIT_ETIMEDOUT ? "it does not read its socket" :
                            "its control connection is closed");
    return 0;
}

static int cipc_poll_notify(refit_tp_t *tp, void *buf, size_t cap, size_t *len, int64_t timeout_ms)
{
    if (!tp || !buf || !len)
        return H->error_set(REFIT_EINVAL, "%s: poll_notify without a buffer", CIPC);
    int64_t deadline = deadline_after(timeout_ms);
    struct timespec ts = cipc_abstime(deadline);
    pthread_mutex_lock(&tp->lock);
    while (!tp->nq_head && cipc_now_ms() < deadline)
        pthread_cond_timedwait(&tp->cond, &tp->lock, &ts);
    struct cipc_notice *n = tp->nq_head;
    if (!n) {
        pthread_mutex_unlock(&tp->lock);
        return H->error_set(REFIT_ETIMEDOUT, "%s: no notification within %" PRId64 " ms", CIPC,
                            timeout_ms);
    }
    if (n->len > cap) {
        *len = n->len;
        pthread_mutex_unlock(&tp->lock);
        return H->error_set(REFIT_ETOOBIG, "%s: notification of %zu bytes, buffer of %zu", CIPC, n->len, cap);
    }
    tp->nq_head = n->next;
    if (!tp->nq_head)
        tp->nq_tail = NULL;
    pthread_mutex_unlock(&tp->lock);
    memcpy(buf, n->data, n->len);
    *len = n->len;
    H->free(n);
    return 0;
}

/* The mapped region itself, for the caller's kernels (colocated pulls:
 * one launch reads every tensor).  A key that is stale or not yet mapped
 * has no pointer. */
static int cipc_rkey_ptr(refit_tp_t *tp, refit_tp_rkey_t *k, void **ptr)
{
    if (!tp || !k || !ptr)
        return H->error_set(REFIT_EINVAL, "%s: rkey_ptr without a key or out", CIPC);
    pthread_mutex_lock(&tp->lock);
    int rc = 0;
    if (k->stale || !k->base)
        rc = H->error_set(k->stale == REFIT_ESTALE ? REFIT_ESTALE : REFIT_ECONN, "%s: region %" PRIu64
                          " of peer '%s' is %s", CIPC, k->key.region_id, k->peer ? k->peer->name : "?",
                          k->stale == REFIT_ESTALE ? "deregistered (stale key)" : "not reachable");
    else
        *ptr = k->base;
    pthread_mutex_unlock(&tp->lock);
    return rc;
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
    if (!proc_nonce && getrandom(&proc_nonce, sizeof(proc_nonce), 0) != (ssize_t)sizeof(proc_nonce))
        proc_nonce = ((uint64_t)getpid() << 32) ^ (uint64_t)cipc_now_ms() ^ (uint64_t)(uintptr_t)&proc_nonce;
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
