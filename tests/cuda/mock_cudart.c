/* mock_cudart.c — a stand-in for the CUDA runtime, preloaded
 * (LD_PRELOAD) into refit processes on machines without a GPU, so that the
 * engine's device paths run end to end in CI-like builds with CUDA:
 *
 *   - "device" memory is mapped PROT_NONE: any host access to it by refit
 *     (a memcpy where a cudaMemcpy belongs) is a segfault;
 *   - asynchronous copies are queued per stream and run only when an event
 *     after them, their stream or the device is synchronized, so reading a
 *     copy's destination without waiting sees stale bytes;
 *   - cudaMemcpyAsync from or to pageable host memory fails when
 *     MOCK_CUDA_STRICT_PINNED=1 (refit pins what it copies asynchronously);
 *   - overlapping cudaHostRegister ranges fail as on a real device (memory
 *     freed without cudaHostUnregister shows up here);
 *   - MOCK_CUDA_HOST_VISIBLE=1 maps device memory readable and writable
 *     instead, for trying paths where a (patched) host transport stands
 *     in for one that reaches device memory.
 *
 * Only what refit, its CLI and its tests call is mocked; no kernels (the
 * engine's device deltas run with REFIT_DELTA_DEVICE=emulate here).  Not
 * thread-safe beyond one global lock. */
#include <cuda_runtime_api.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

enum { K_DEV = 1, K_HOSTALLOC = 2, K_REG = 3 };

struct range {
    char *p;
    size_t len, map_len;
    int kind;
};

struct op {
    int is_event;
    void *dst;
    const void *src;
    size_t n;
    int value; /* memset */
    int memset_op;
    size_t rows, dpitch, spitch; /* 2-D copies: rows of n bytes */
    struct mock_event *ev;
};

struct mock_stream {
    struct op *ops;
    size_t n, cap;
    int live;
};

struct mock_event {
    struct mock_stream *st;
    int pending; /* recorded, not yet reached */
    double t;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct range *rg;
static size_t n_rg, cap_rg;
static struct mock_stream **streams;
static size_t n_streams;
static struct mock_stream null_stream;
static int cur_device;
static cudaError_t last_error;

static cudaError_t fail(cudaError_t e)
{
    last_error = e;
    return e;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static struct range *find(const void *p, int kind)
{
    for (size_t i = 0; i < n_rg; i++)
        if ((const char *)p >= rg[i].p && (const char *)p < rg[i].p + rg[i].len && (!kind || rg[i].kind == kind))
            return &rg[i];
    return NULL;
}

static int add_range(char *p, size_t len, size_t map_len, int kind)
{
    if (n_rg == cap_rg) {
        size_t nc = cap_rg ? cap_rg * 2 : 64;
        struct range *n = realloc(rg, nc * sizeof(*n));
        if (!n)
            return -1;
        rg = n;
        cap_rg = nc;
    }
    rg[n_rg++] = (struct range){p, len, map_len, kind};
    return 0;
}

static int env_on(const char *k)
{
    const char *v = getenv(k);
    return v && *v == '1';
}

/* Device memory is readable only inside the mock. */
static void dev_access(const void *p, size_t n, int on)
{
    struct range *r = find(p, K_DEV);
    (void)n;
    if (r && !env_on("MOCK_CUDA_HOST_VISIBLE"))
        mprotect(r->p, r->map_len, on ? PROT_READ | PROT_WRITE : PROT_NONE);
}

/* A host-side range of a copy must be valid: a device range must lie in
 * one allocation. */
static int check_side(const void *p, size_t n)
{
    struct range *r = find(p, K_DEV);
    if (!r)
        return 0;
    return (const char *)p + n <= r->p + r->len ? 0 : -1;
}

static int pinned(const void *p, size_t n)
{
    struct range *r = find(p, 0);
    return r && r->kind != K_DEV && (const char *)p + n <= r->p + r->len;
}

static void run_op(struct op *o)
{
    if (o->is_event) {
        o->ev->pending = 0;
        o->ev->t = now();
        return;
    }
    dev_access(o->dst, o->n, 1);
    if (o->src)
        dev_access(o->src, o->n, 1);
    if (o->memset_op)
        memset(o->dst, o->value, o->n);
    else if (o->rows)
        for (size_t r = 0; r < o->rows; r++)
            memmove((char *)o->dst + r * o->dpitch, (const char *)o->src + r * o->spitch, o->n);
    else
        memmove(o->dst, o->src, o->n);
    dev_access(o->dst, o->n, 0);
    if (o->src)
        dev_access(o->src, o->n, 0);
}

static void drain_until(struct mock_stream *s, struct mock_event *ev)
{
    size_t i = 0;
    for (; i < s->n; i++) {
        run_op(&s->ops[i]);
        if (ev && s->ops[i].is_event && s->ops[i].ev == ev) {
            i++;
            break;
        }
    }
    memmove(s->ops, s->ops + i, (s->n - i) * sizeof(*s->ops));
    s->n -= i;
}

static void drain_all(void)
{
    for (size_t i = 0; i < n_streams; i++)
        if (streams[i]->live)
            drain_until(streams[i], NULL);
    drain_until(&null_stream, NULL);
}

static struct mock_stream *stream_of(cudaStream_t s)
{
    return s ? (struct mock_stream *)s : &null_stream;
}

static int push(struct mock_stream *s, struct op o)
{
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 64;
        struct op *n = realloc(s->ops, nc * sizeof(*n));
        if (!n)
            return -1;
        s->ops = n;
        s->cap = nc;
    }
    s->ops[s->n++] = o;
    return 0;
}

/* ------------------------------------------------------------------ */

cudaError_t cudaGetDeviceCount(int *count)
{
    const char *v = getenv("MOCK_CUDA_DEVICES");
    *count = v ? atoi(v) : 1;
    return cudaSuccess;
}

cudaError_t cudaGetDevice(int *device)
{
    *device = cur_device;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int device)
{
    int n;
    cudaGetDeviceCount(&n);
    if (device < 0 || device >= n)
        return fail(cudaErrorInvalidDevice);
    cur_device = device;
    return cudaSuccess;
}

cudaError_t cudaGetLastError(void)
{
    cudaError_t e = last_error;
    last_error = cudaSuccess;
    return e;
}

const char *cudaGetErrorString(cudaError_t e)
{
    static char buf[64];
    snprintf(buf, sizeof(buf), "mock CUDA error %d", (int)e);
    return e == cudaSuccess ? "no error" : buf;
}

const char *cudaGetErrorName(cudaError_t e)
{
    return e == cudaSuccess ? "cudaSuccess" : "cudaErrorMock";
}

cudaError_t cudaMalloc(void **p, size_t n)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE), ml = (n + pg - 1) / pg * pg;
    int prot = env_on("MOCK_CUDA_HOST_VISIBLE") ? PROT_READ | PROT_WRITE : PROT_NONE;
    void *m = mmap(NULL, ml ? ml : pg, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED)
        return fail(cudaErrorMemoryAllocation);
    pthread_mutex_lock(&mu);
    int rc = add_range(m, n, ml ? ml : pg, K_DEV);
    pthread_mutex_unlock(&mu);
    if (rc)
        return fail(cudaErrorMemoryAllocation);
    *p = m;
    return cudaSuccess;
}

static cudaError_t drop(void *p, int kind)
{
    pthread_mutex_lock(&mu);
    drain_all();
    for (size_t i = 0; i < n_rg; i++)
        if (rg[i].p == p && rg[i].kind == kind) {
            struct range r = rg[i];
            rg[i] = rg[--n_rg];
            pthread_mutex_unlock(&mu);
            if (kind == K_DEV)
                munmap(r.p, r.map_len);
            else if (kind == K_HOSTALLOC)
                free(r.p);
            return cudaSuccess;
        }
    pthread_mutex_unlock(&mu);
    return fail(kind == K_REG ? cudaErrorHostMemoryNotRegistered : cudaErrorInvalidValue);
}

cudaError_t cudaFree(void *p)
{
    return p ? drop(p, K_DEV) : cudaSuccess;
}

cudaError_t cudaMallocHost(void **p, size_t n)
{
    void *m = NULL;
    if (posix_memalign(&m, 4096, n ? n : 1))
        return fail(cudaErrorMemoryAllocation);
    pthread_mutex_lock(&mu);
    int rc = add_range(m, n ? n : 1, 0, K_HOSTALLOC);
    pthread_mutex_unlock(&mu);
    if (rc) {
        free(m);
        return fail(cudaErrorMemoryAllocation);
    }
    *p = m;
    return cudaSuccess;
}

cudaError_t cudaHostAlloc(void **p, size_t n, unsigned int flags)
{
    (void)flags;
    return cudaMallocHost(p, n);
}

cudaError_t cudaFreeHost(void *p)
{
    return p ? drop(p, K_HOSTALLOC) : cudaSuccess;
}

cudaError_t cudaHostRegister(void *p, size_t n, unsigned int flags)
{
    (void)flags;
    if (!p || !n)
        return fail(cudaErrorInvalidValue);
    pthread_mutex_lock(&mu);
    cudaError_t e = cudaSuccess;
    for (size_t i = 0; i < n_rg && !e; i++)
        if (rg[i].kind != K_DEV && (char *)p < rg[i].p + rg[i].len && rg[i].p < (char *)p + n)
            e = cudaErrorHostMemoryAlreadyRegistered;
    if (!e && find(p, K_DEV))
        e = cudaErrorInvalidValue;
    if (!e && add_range(p, n, 0, K_REG))
        e = cudaErrorMemoryAllocation;
    pthread_mutex_unlock(&mu);
    return e ? fail(e) : cudaSuccess;
}

cudaError_t cudaHostUnregister(void *p)
{
    return drop(p, K_REG);
}

cudaError_t cudaPointerGetAttributes(struct cudaPointerAttributes *a, const void *p)
{
    memset(a, 0, sizeof(*a));
    pthread_mutex_lock(&mu);
    struct range *r = find(p, 0);
    if (!r) {
        a->type = cudaMemoryTypeUnregistered;
    } else if (r->kind == K_DEV) {
        a->type = cudaMemoryTypeDevice;
        a->device = 0;
        a->devicePointer = (void *)p;
    } else {
        a->type = cudaMemoryTypeHost;
        a->hostPointer = (void *)p;
        a->devicePointer = (void *)p;
    }
    pthread_mutex_unlock(&mu);
    return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t *s)
{
    struct mock_stream *m = calloc(1, sizeof(*m));
    if (!m)
        return fail(cudaErrorMemoryAllocation);
    m->live = 1;
    pthread_mutex_lock(&mu);
    struct mock_stream **ns = realloc(streams, (n_streams + 1) * sizeof(*ns));
    if (ns) {
        streams = ns;
        streams[n_streams++] = m;
    }
    pthread_mutex_unlock(&mu);
    if (!ns) {
        free(m);
        return fail(cudaErrorMemoryAllocation);
    }
    *s = (cudaStream_t)m;
    return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int flags)
{
    (void)flags;
    return cudaStreamCreate(s);
}

cudaError_t cudaStreamSynchronize(cudaStream_t s)
{
    pthread_mutex_lock(&mu);
    drain_until(stream_of(s), NULL);
    pthread_mutex_unlock(&mu);
    return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t s)
{
    if (!s)
        return fail(cudaErrorInvalidResourceHandle);
    pthread_mutex_lock(&mu);
    struct mock_stream *m = stream_of(s);
    drain_until(m, NULL);
    m->live = 0; /* kept: events may still name it */
    free(m->ops);
    m->ops = NULL;
    m->n = m->cap = 0;
    pthread_mutex_unlock(&mu);
    return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void)
{
    pthread_mutex_lock(&mu);
    drain_all();
    pthread_mutex_unlock(&mu);
    return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned int flags)
{
    (void)flags;
    struct mock_event *m = calloc(1, sizeof(*m));
    if (!m)
        return fail(cudaErrorMemoryAllocation);
    *e = (cudaEvent_t)m;
    return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t *e)
{
    return cudaEventCreateWithFlags(e, 0);
}

cudaError_t cudaEventDestroy(cudaEvent_t e)
{
    pthread_mutex_lock(&mu);
    struct mock_event *m = (struct mock_event *)e;
    if (m->pending && m->st)
        drain_until(m->st, m);
    pthread_mutex_unlock(&mu);
    free(m);
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s)
{
    pthread_mutex_lock(&mu);
    struct mock_event *m = (struct mock_event *)e;
    if (m->pending && m->st)
        drain_until(m->st, m); /* re-recorded: the old record is reached first */
    struct mock_stream *st = stream_of(s);
    m->st = st;
    m->pending = 1;
    int rc = push(st, (struct op){.is_event = 1, .ev = m});
    if (st == &null_stream)
        drain_all(); /* the legacy stream runs at once */
    pthread_mutex_unlock(&mu);
    return rc ? fail(cudaErrorMemoryAllocation) : cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t e)
{
    pthread_mutex_lock(&mu);
    struct mock_event *m = (struct mock_event *)e;
    if (m->pending && m->st)
        drain_until(m->st, m);
    pthread_mutex_unlock(&mu);
    return cudaSuccess;
}

cudaError_t cudaEventQuery(cudaEvent_t e)
{
    struct mock_event *m = (struct mock_event *)e;
    return m->pending ? cudaErrorNotReady : cudaSuccess;
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b)
{
    cudaEventSynchronize(a);
    cudaEventSynchronize(b);
    *ms = (float)((((struct mock_event *)b)->t - ((struct mock_event *)a)->t) * 1e3);
    return cudaSuccess;
}

static cudaError_t copy_check(void *dst, const void *src, size_t n, int async)
{
    if (check_side(dst, n) || (src && check_side(src, n))) {
        fprintf(stderr, "mock cudart: copy of %zu bytes outside a device allocation (%p <- %p)\n", n, dst, src);
        return cudaErrorInvalidValue;
    }
    if (async && env_on("MOCK_CUDA_STRICT_PINNED")) {
        int dd = find(dst, K_DEV) != NULL, sd = src && find(src, K_DEV) != NULL;
        if ((!dd && !pinned(dst, n)) || (src && !sd && !pinned(src, n))) {
            fprintf(stderr, "mock cudart: asynchronous copy of %zu bytes with pageable host memory (%p <- %p)\n",
                    n, dst, src);
            return cudaErrorInvalidValue;
        }
    }
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, enum cudaMemcpyKind k, cudaStream_t s)
{
    (void)k;
    pthread_mutex_lock(&mu);
    cudaError_t e = copy_check(dst, src, n, 1);
    if (!e && push(stream_of(s), (struct op){.dst = dst, .src = src, .n = n}))
        e = cudaErrorMemoryAllocation;
    if (!e && !s)
        drain_all();
    pthread_mutex_unlock(&mu);
    return e ? fail(e) : cudaSuccess;
}

/* One asynchronous operation on the stream, its rows checked as copies. */
cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width, size_t height,
                              enum cudaMemcpyKind k, cudaStream_t s)
{
    (void)k;
    if (width > dpitch || width > spitch)
        return fail(cudaErrorInvalidPitchValue);
    if (!height || !width)
        return cudaSuccess;
    pthread_mutex_lock(&mu);
    cudaError_t e = copy_check(dst, src, width, 1);
    if (!e)
        e = copy_check((char *)dst + (height - 1) * dpitch, (const char *)src + (height - 1) * spitch, width, 1);
    if (!e && push(stream_of(s), (struct op){.dst = dst, .src = src, .n = width, .rows = height, .dpitch = dpitch,
                                             .spitch = spitch}))
        e = cudaErrorMemoryAllocation;
    if (!e && !s)
        drain_all();
    pthread_mutex_unlock(&mu);
    return e ? fail(e) : cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, enum cudaMemcpyKind k)
{
    (void)k;
    pthread_mutex_lock(&mu);
    cudaError_t e = copy_check(dst, src, n, 0);
    if (!e) {
        drain_all(); /* the legacy stream waits for the blocking streams */
        struct op o = {.dst = dst, .src = src, .n = n};
        run_op(&o);
    }
    pthread_mutex_unlock(&mu);
    return e ? fail(e) : cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s)
{
    pthread_mutex_lock(&mu);
    cudaError_t e = copy_check(p, NULL, n, 0);
    if (!e && push(stream_of(s), (struct op){.dst = p, .n = n, .value = v, .memset_op = 1}))
        e = cudaErrorMemoryAllocation;
    if (!e && !s)
        drain_all();
    pthread_mutex_unlock(&mu);
    return e ? fail(e) : cudaSuccess;
}

cudaError_t cudaMemset(void *p, int v, size_t n)
{
    return cudaMemsetAsync(p, v, n, NULL);
}
