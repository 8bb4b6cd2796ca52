/* mockcuda.c — a stand-in for the CUDA runtime (libcudart.so.13) and for
 * the three driver calls the cuda_ipc plugin looks up (through the mock
 * libcuda.so.1, which only depends on this library), so that the plugin,
 * its control channel and the conformance suite's device-memory mode run
 * on machines without a GPU (the `transport-cuda_ipc-mock` run, LD_PRELOAD).
 *
 * It models what the plugin relies on, not the hardware: "device memory"
 * is shared memory (a memfd per cudaMalloc); an IPC handle names the
 * owner's pid and fd and is opened through /proc/<pid>/fd (refused in the
 * owner's own process, as CUDA does; opened twice it is reference-counted);
 * cudaIpcGetMemHandle wants an allocation base; streams are threads that
 * copy in order at MOCK_CUDA_GBPS (default 4) GB/s, so copies overlap with
 * revokes as real ones do; an event completes when its stream has passed
 * it; copies outside an allocation fail (cudaErrorIllegalAddress).
 * Everything the real runtime exports that librefit's kernels need at load
 * (fat binary registration) is a no-op; kernels fail with
 * cudaErrorNoKernelImageForDevice. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <cuda.h>
#include <cuda_runtime_api.h>

#define MOCK_HANDLE_MAGIC 0x4b434f4du

struct alloc {
    struct alloc *next;
    char *base;
    size_t size;
    int fd;       /* owner: the memfd; imported: -1 */
    int dev;
    int imported;
    int refs;     /* imported: opens */
    int pid;      /* imported: the owner */
    uint64_t serial;
};

struct op {
    struct op *next;
    char *dst;
    const char *src;
    size_t n;
    uint64_t seq;
    cudaHostFn_t fn; /* a host function (cudaLaunchHostFunc) instead of a copy */
    void *arg;
};

struct stream {
    struct stream *next;
    pthread_t th;
    struct op *head, *tail;
    uint64_t enq, done;
    int stop;
};

struct event {
    struct stream *s;
    uint64_t target;
};

struct mh { /* the 64 bytes of cudaIpcMemHandle_t */
    uint32_t magic;
    int32_t pid, fd, dev;
    uint64_t size, serial;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static struct alloc *allocs;
static struct stream *streams;
static uint64_t serials;
static __thread int cur_dev;
static __thread cudaError_t last_err;

static cudaError_t ret(cudaError_t e)
{
    if (e != cudaSuccess && e != cudaErrorNotReady)
        last_err = e;
    return e;
}

static int ndev(void)
{
    const char *e = getenv("MOCK_CUDA_DEVICES");
    return e ? atoi(e) : 2;
}

/* Under mu. */
static struct alloc *find(const void *p, size_t n)
{
    for (struct alloc *a = allocs; a; a = a->next)
        if ((const char *)p >= a->base && (const char *)p < a->base + a->size)
            return n <= (size_t)(a->base + a->size - (const char *)p) ? a : NULL;
    return NULL;
}

/* ---- errors, devices ---- */

const char *cudaGetErrorString(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorMapBufferObjectFailed: return "mapping of buffer object failed";
    case cudaErrorNoKernelImageForDevice: return "no kernel image is available (mock CUDA)";
    default: return "mock CUDA error";
    }
}

const char *cudaGetErrorName(cudaError_t e)
{
    static __thread char b[32];
    snprintf(b, sizeof(b), "cudaError %d", (int)e);
    return b;
}

cudaError_t cudaGetLastError(void)
{
    cudaError_t e = last_err;
    last_err = cudaSuccess;
    return e;
}

cudaError_t cudaPeekAtLastError(void) { return last_err; }

cudaError_t cudaGetDeviceCount(int *n)
{
    *n = ndev();
    return *n ? cudaSuccess : ret(cudaErrorNoDevice);
}

cudaError_t cudaGetDevice(int *d)
{
    *d = cur_dev;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int d)
{
    if (d < 0 || d >= ndev())
        return ret(cudaErrorInvalidDevice);
    cur_dev = d;
    return cudaSuccess;
}

cudaError_t cudaDeviceGetPCIBusId(char *b, int len, int d)
{
    if (d < 0 || d >= ndev())
        return ret(cudaErrorInvalidDevice);
    snprintf(b, (size_t)len, "0000:%02X:00.0", 0x18 + d);
    return cudaSuccess;
}

cudaError_t cudaDeviceGetByPCIBusId(int *d, const char *b)
{
    unsigned x;
    if (sscanf(b, "0000:%02X:00.0", &x) != 1 || x < 0x18 || (int)(x - 0x18) >= ndev())
        return ret(cudaErrorInvalidDevice);
    *d = (int)(x - 0x18);
    return cudaSuccess;
}

cudaError_t cudaDeviceCanAccessPeer(int *can, int d, int p)
{
    *can = d != p;
    return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int *v, enum cudaDeviceAttr a, int d)
{
    (void)d;
    *v = a == cudaDevAttrMultiProcessorCount ? 8 : 0;
    return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int *v)
{
    *v = 13000;
    return cudaSuccess;
}

cudaError_t cudaDriverGetVersion(int *v)
{
    *v = 13000;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *p, int d)
{
    memset(p, 0, sizeof(*p));
    snprintf(p->name, sizeof(p->name), "Mock GPU %d", d);
    return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t *f, size_t *t)
{
    *f = 512u << 20; /* small: the 1 GiB test is not run on shared memory */
    *t = 80ull << 30;
    return cudaSuccess;
}

/* ---- memory ---- */

cudaError_t cudaMalloc(void **p, size_t n)
{
    int fd = memfd_create("mockcuda", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, (off_t)(n ? n : 1))) {
        if (fd >= 0)
            close(fd);
        return ret(cudaErrorMemoryAllocation);
    }
    char *m = mmap(NULL, n ? n : 1, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    struct alloc *a = calloc(1, sizeof(*a));
    if (m == MAP_FAILED || !a) {
        close(fd);
        free(a);
        return ret(cudaErrorMemoryAllocation);
    }
    a->base = m;
    a->size = n ? n : 1;
    a->fd = fd;
    a->dev = cur_dev;
    pthread_mutex_lock(&mu);
    a->serial = ++serials;
    a->next = allocs;
    allocs = a;
    pthread_mutex_unlock(&mu);
    *p = m;
    return cudaSuccess;
}

static void unlink_alloc(struct alloc *a)
{
    for (struct alloc **pa = &allocs; *pa; pa = &(*pa)->next)
        if (*pa == a) {
            *pa = a->next;
            break;
        }
}

cudaError_t cudaFree(void *p)
{
    if (!p)
        return cudaSuccess;
    pthread_mutex_lock(&mu);
    struct alloc *a = find(p, 0);
    if (!a || a->base != p || a->imported) {
        pthread_mutex_unlock(&mu);
        return ret(cudaErrorInvalidValue);
    }
    unlink_alloc(a);
    pthread_mutex_unlock(&mu);
    munmap(a->base, a->size);
    close(a->fd);
    free(a);
    return cudaSuccess;
}

cudaError_t cudaMallocHost(void **p, size_t n)
{
    *p = malloc(n);
    return *p ? cudaSuccess : ret(cudaErrorMemoryAllocation);
}

cudaError_t cudaFreeHost(void *p)
{
    free(p);
    return cudaSuccess;
}

/* Mapped host memory (the device program's error flag): plain host memory,
 * the same address on the "device". */
cudaError_t cudaHostAlloc(void **p, size_t n, unsigned int flags)
{
    (void)flags;
    *p = malloc(n);
    return *p ? cudaSuccess : ret(cudaErrorMemoryAllocation);
}

cudaError_t cudaHostGetDevicePointer(void **d, void *h, unsigned int flags)
{
    (void)flags;
    *d = h;
    return cudaSuccess;
}

cudaError_t cudaPointerGetAttributes(struct cudaPointerAttributes *at, const void *p)
{
    memset(at, 0, sizeof(*at));
    pthread_mutex_lock(&mu);
    struct alloc *a = find(p, 0);
    if (a) {
        at->type = cudaMemoryTypeDevice;
        at->device = a->dev;
        at->devicePointer = (void *)p;
    } else {
        at->type = cudaMemoryTypeUnregistered;
        at->device = -2;
        at->hostPointer = (void *)p;
    }
    pthread_mutex_unlock(&mu);
    return cudaSuccess;
}

cudaError_t cudaIpcGetMemHandle(cudaIpcMemHandle_t *h, void *p)
{
    pthread_mutex_lock(&mu);
    struct alloc *a = find(p, 0);
    if (!a || a->base != p || a->imported) {
        pthread_mutex_unlock(&mu);
        return ret(cudaErrorInvalidValue);
    }
    struct mh m = {MOCK_HANDLE_MAGIC, getpid(), a->fd, a->dev, a->size, a->serial};
    pthread_mutex_unlock(&mu);
    memset(h, 0, sizeof(*h));
    memcpy(h, &m, sizeof(m));
    return cudaSuccess;
}

cudaError_t cudaIpcOpenMemHandle(void **p, cudaIpcMemHandle_t h, unsigned int flags)
{
    struct mh m;
    memcpy(&m, &h, sizeof(m));
    if (m.magic != MOCK_HANDLE_MAGIC || flags != cudaIpcMemLazyEnablePeerAccess)
        return ret(cudaErrorInvalidValue);
    if (m.pid == getpid())
        return ret(cudaErrorInvalidResourceHandle); /* CUDA: not in the exporting process */
    pthread_mutex_lock(&mu);
    for (struct alloc *a = allocs; a; a = a->next)
        if (a->imported && a->pid == m.pid && a->serial == m.serial) {
            a->refs++;
            *p = a->base;
            pthread_mutex_unlock(&mu);
            return cudaSuccess;
        }
    pthread_mutex_unlock(&mu);
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/fd/%d", m.pid, m.fd);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return ret(cudaErrorMapBufferObjectFailed);
    char *b = mmap(NULL, m.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    struct alloc *a = calloc(1, sizeof(*a));
    if (b == MAP_FAILED || !a) {
        free(a);
        return ret(cudaErrorMapBufferObjectFailed);
    }
    a->base = b;
    a->size = m.size;
    a->fd = -1;
    a->dev = m.dev;
    a->imported = 1;
    a->refs = 1;
    a->pid = m.pid;
    a->serial = m.serial;
    pthread_mutex_lock(&mu);
    a->next = allocs;
    allocs = a;
    pthread_mutex_unlock(&mu);
    *p = b;
    return cudaSuccess;
}

cudaError_t cudaIpcCloseMemHandle(void *p)
{
    pthread_mutex_lock(&mu);
    struct alloc *a = find(p, 0);
    if (!a || !a->imported || a->base != p) {
        pthread_mutex_unlock(&mu);
        return ret(cudaErrorInvalidValue);
    }
    if (--a->refs > 0) {
        pthread_mutex_unlock(&mu);
        return cudaSuccess;
    }
    unlink_alloc(a);
    pthread_mutex_unlock(&mu);
    munmap(a->base, a->size);
    free(a);
    return cudaSuccess;
}

/* ---- streams, events, copies ---- */

static void *worker(void *arg)
{
    struct stream *s = arg;
    const char *g = getenv("MOCK_CUDA_GBPS");
    double gbps = g ? atof(g) : 4.0;
    pthread_mutex_lock(&mu);
    for (;;) {
        while (!s->head && !s->stop)
            pthread_cond_wait(&cv, &mu);
        if (!s->head)
            break;
        struct op *o = s->head;
        pthread_mutex_unlock(&mu);
        if (o->fn)
            o->fn(o->arg);
        else if (gbps > 0) {
            double sec = (double)o->n / (gbps * 1e9);
            struct timespec ts = {(time_t)sec, (long)((sec - (double)(time_t)sec) * 1e9)};
            nanosleep(&ts, NULL);
        }
        if (!o->fn)
            memmove(o->dst, o->src, o->n);
        pthread_mutex_lock(&mu);
        s->head = o->next;
        if (!s->head)
            s->tail = NULL;
        s->done = o->seq;
        free(o);
        pthread_cond_broadcast(&cv);
    }
    pthread_mutex_unlock(&mu);
    return NULL;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *out, unsigned int flags)
{
    (void)flags;
    struct stream *s = calloc(1, sizeof(*s));
    if (!s)
        return ret(cudaErrorMemoryAllocation);
    if (pthread_create(&s->th, NULL, worker, s)) {
        free(s);
        return ret(cudaErrorMemoryAllocation);
    }
    pthread_mutex_lock(&mu);
    s->next = streams;
    streams = s;
    pthread_mutex_unlock(&mu);
    *out = (cudaStream_t)s;
    return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t *out)
{
    return cudaStreamCreateWithFlags(out, 0);
}

cudaError_t cudaStreamDestroy(cudaStream_t st)
{
    struct stream *s = (struct stream *)st;
    pthread_mutex_lock(&mu);
    s->stop = 1;
    pthread_cond_broadcast(&cv);
    for (struct stream **ps = &streams; *ps; ps = &(*ps)->next)
        if (*ps == s) {
            *ps = s->next;
            break;
        }
    pthread_mutex_unlock(&mu);
    pthread_join(s->th, NULL);
    free(s);
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t st)
{
    struct stream *s = (struct stream *)st;
    if (!s)
        return cudaSuccess;
    pthread_mutex_lock(&mu);
    while (s->done < s->enq)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void)
{
    pthread_mutex_lock(&mu);
    for (;;) {
        int busy = 0;
        for (struct stream *s = streams; s; s = s->next)
            busy |= s->done < s->enq;
        if (!busy)
            break;
        pthread_cond_wait(&cv, &mu);
    }
    pthread_mutex_unlock(&mu);
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, enum cudaMemcpyKind k, cudaStream_t st)
{
    (void)k;
    struct stream *s = (struct stream *)st;
    pthread_mutex_lock(&mu);
    int ok = find(dst, n) && find(src, n);
    pthread_mutex_unlock(&mu);
    if (!ok)
        return ret(cudaErrorIllegalAddress); /* real CUDA: a fault, later */
    if (!s) {
        memmove(dst, src, n);
        return cudaSuccess;
    }
    struct op *o = calloc(1, sizeof(*o));
    if (!o)
        return ret(cudaErrorMemoryAllocation);
    o->dst = dst;
    o->src = src;
    o->n = n;
    pthread_mutex_lock(&mu);
    o->seq = ++s->enq;
    if (s->tail)
        s->tail->next = o;
    else
        s->head = o;
    s->tail = o;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    return cudaSuccess;
}

static cudaError_t enqueue_op(struct stream *s, struct op *o)
{
    pthread_mutex_lock(&mu);
    o->seq = ++s->enq;
    if (s->tail)
        s->tail->next = o;
    else
        s->head = o;
    s->tail = o;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    return cudaSuccess;
}

/* Host functions run on the stream's thread in order with its copies (the
 * engine's device program runs its host reference this way here). */
cudaError_t cudaLaunchHostFunc(cudaStream_t st, cudaHostFn_t fn, void *arg)
{
    struct stream *s = (struct stream *)st;
    if (!s) {
        fn(arg);
        return cudaSuccess;
    }
    struct op *o = calloc(1, sizeof(*o));
    if (!o)
        return ret(cudaErrorMemoryAllocation);
    o->fn = fn;
    o->arg = arg;
    return enqueue_op(s, o);
}

/* Row by row, each row an ordinary queued copy. */
cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                              size_t rows, enum cudaMemcpyKind k, cudaStream_t st)
{
    for (size_t r = 0; r < rows; r++) {
        cudaError_t e = cudaMemcpyAsync((char *)dst + r * dpitch, (const char *)src + r * spitch, width, k, st);
        if (e != cudaSuccess)
            return e;
    }
    return cudaSuccess;
}

/* Host memory needs no pinning here. */
cudaError_t cudaHostRegister(void *p, size_t n, unsigned int flags)
{
    (void)p;
    (void)n;
    (void)flags;
    return cudaSuccess;
}

cudaError_t cudaHostUnregister(void *p)
{
    (void)p;
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, enum cudaMemcpyKind k)
{
    (void)k;
    memmove(dst, src, n);
    return cudaSuccess;
}

cudaError_t cudaMemset(void *p, int v, size_t n)
{
    memset(p, v, n);
    return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t st)
{
    cudaStreamSynchronize(st);
    memset(p, v, n);
    return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned int flags)
{
    (void)flags;
    *e = (cudaEvent_t)calloc(1, sizeof(struct event));
    return *e ? cudaSuccess : ret(cudaErrorMemoryAllocation);
}

cudaError_t cudaEventCreate(cudaEvent_t *e)
{
    return cudaEventCreateWithFlags(e, 0);
}

cudaError_t cudaEventSynchronize(cudaEvent_t ev)
{
    struct event *e = (struct event *)ev;
    pthread_mutex_lock(&mu);
    while (e->s && e->s->done < e->target)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t e)
{
    free(e);
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t ev, cudaStream_t st)
{
    struct event *e = (struct event *)ev;
    pthread_mutex_lock(&mu);
    e->s = (struct stream *)st;
    e->target = e->s ? e->s->enq : 0;
    pthread_mutex_unlock(&mu);
    return cudaSuccess;
}

/* The mock times nothing: every interval is 1 ms (refit bench gpu's
 * baseline runs on it, its figures meaningless). */
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b)
{
    (void)a;
    (void)b;
    *ms = 1.0f;
    return cudaSuccess;
}

cudaError_t cudaEventQuery(cudaEvent_t ev)
{
    struct event *e = (struct event *)ev;
    pthread_mutex_lock(&mu);
    int done = !e->s || e->s->done >= e->target;
    pthread_mutex_unlock(&mu);
    return done ? cudaSuccess : cudaErrorNotReady;
}

/* ---- what nvcc's host code of librefit calls ---- */

void **__cudaRegisterFatBinary(void *fb)
{
    static void *h;
    (void)fb;
    return &h;
}
void __cudaRegisterFatBinaryEnd(void **h) { (void)h; }
void __cudaUnregisterFatBinary(void **h) { (void)h; }
void __cudaRegisterFunction(void **h, const char *f, char *df, const char *dn, int t, void *a, void *b,
                            void *c, void *d, int *w)
{
    (void)h, (void)f, (void)df, (void)dn, (void)t, (void)a, (void)b, (void)c, (void)d, (void)w;
}
/* xxh3.cu's __constant__ secret: registered, never read (no kernel runs
 * here; REFIT_DELTA_DEVICE=emulate hashes on the host). */
void __cudaRegisterVar(void **h, char *hv, char *dv, const char *dn, int ext, size_t size, int constant, int global)
{
    (void)h, (void)hv, (void)dv, (void)dn, (void)ext, (void)size, (void)constant, (void)global;
}
unsigned __cudaPushCallConfiguration(dim3 g, dim3 b, size_t sh, void *st)
{
    (void)g, (void)b, (void)sh, (void)st;
    return 0;
}
cudaError_t __cudaPopCallConfiguration(dim3 *g, dim3 *b, size_t *sh, void *st)
{
    (void)g, (void)b, (void)sh, (void)st;
    return cudaSuccess;
}
cudaError_t __cudaLaunchKernel(const void *f, dim3 g, dim3 b, void **a, size_t sh, cudaStream_t st)
{
    (void)f, (void)g, (void)b, (void)a, (void)sh, (void)st;
    return ret(cudaErrorNoKernelImageForDevice);
}
cudaError_t __cudaGetKernel(void **k, const void *f)
{
    (void)k, (void)f;
    return ret(cudaErrorNoKernelImageForDevice);
}

/* ---- for the mock driver (mockcuda_drv.c) ---- */

/* 1 when p lies in an allocation: its base, size, whether imported. */
int mockcuda_lookup(const void *p, uintptr_t *base, size_t *size, int *imported)
{
    pthread_mutex_lock(&mu);
    struct alloc *a = find(p, 0);
    if (a) {
        *base = (uintptr_t)a->base;
        *size = a->size;
        *imported = a->imported;
    }
    pthread_mutex_unlock(&mu);
    return a != NULL;
}
