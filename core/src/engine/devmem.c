/* devmem.c — devmem.h on the CUDA runtime (built only with CUDA), and the
 * device-memory pool of refit/cuda_pool.h.
 *
 * The pool hands out pieces of plain cudaMalloc slabs.  Never
 * cudaMallocAsync pools or cuMemCreate/cuMemMap: a transport registers a
 * slab's virtual range once (ibv_reg_mr via nvidia-peermem or dma-buf, or a
 * CUDA IPC handle), and that only holds while the physical pages behind the
 * range never change.  docs/cuda.md has the whole argument. */
#include <cuda_runtime_api.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "devmem.h"
#include "refit/cuda_pool.h"
#include "refit/status.h"

/* The error's name and text with what we were doing; the error is
 * cleared when it is not sticky, so the next call starts clean. */
static int cuda_fail(cudaError_t e, const char *fmt, ...)
{
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    (void)cudaGetLastError();
    return refit_error_set(REFIT_EIO, "cuda: %s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
}

int rf_dev_built(void)
{
    return 1;
}

int rf_dev_locate(const void *p, const char *what, int *device)
{
    struct cudaPointerAttributes a;
    memset(&a, 0, sizeof(a));
    cudaError_t e = cudaPointerGetAttributes(&a, p);
    if (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver || e == cudaErrorInitializationError ||
        e == cudaErrorCompatNotSupportedOnDevice) {
        (void)cudaGetLastError();
        return refit_error_set(REFIT_ENOTSUP, "%s: REFIT_MEM_CUDA, but no usable CUDA device: %s (%s)", what,
                               cudaGetErrorString(e), cudaGetErrorName(e));
    }
    if (e != cudaSuccess)
        return cuda_fail(e, "%s: cudaPointerGetAttributes(%p)", what, p);
    switch (a.type) {
    case cudaMemoryTypeDevice:
    case cudaMemoryTypeManaged:
        *device = a.device;
        return 0;
    case cudaMemoryTypeHost:
        return refit_error_set(REFIT_EINVAL, "%s: passed as REFIT_MEM_CUDA, but %p is pinned host memory "
                               "(pass REFIT_MEM_HOST)", what, p);
    default:
        return refit_error_set(REFIT_EINVAL, "%s: passed as REFIT_MEM_CUDA, but %p is not device memory "
                               "(cudaPointerGetAttributes: host memory unknown to CUDA)", what, p);
    }
}

int rf_dev_enter(int device, int *saved)
{
    int cur = -1;
    cudaError_t e = cudaGetDevice(&cur);
    if (e != cudaSuccess)
        return cuda_fail(e, "cudaGetDevice");
    *saved = cur;
    if (cur != device && (e = cudaSetDevice(device)) != cudaSuccess)
        return cuda_fail(e, "cudaSetDevice(%d)", device);
    return 0;
}

void rf_dev_leave(int saved)
{
    int cur = -1;
    if (saved >= 0 && cudaGetDevice(&cur) == cudaSuccess && cur != saved)
        (void)cudaSetDevice(saved);
    (void)cudaGetLastError();
}

int rf_dev_pin(void *p, size_t n, const char *what)
{
    cudaError_t e = cudaHostRegister(p, n ? n : 1, cudaHostRegisterPortable);
    if (e == cudaErrorHostMemoryAlreadyRegistered) {
        (void)cudaGetLastError();
        return 0;
    }
    return e == cudaSuccess ? 0 : cuda_fail(e, "%s: cudaHostRegister(%p, %zu bytes)", what, p, n);
}

void rf_dev_unpin(void *p)
{
    if (p && cudaHostUnregister(p) != cudaSuccess)
        (void)cudaGetLastError();
}

/* ------------------------------------------------------------------ */
/* Copies on two streams */

struct rf_dcopy {
    int device;
    cudaStream_t st[2];
    int next;
    cudaEvent_t *ev;
    size_t n_ev, used;
};

int rf_dcopy_create(int device, struct rf_dcopy **out)
{
    struct rf_dcopy *c = calloc(1, sizeof(*c));
    if (!c)
        return REFIT_ENOMEM;
    c->device = device;
    int saved = -1, rc = rf_dev_enter(device, &saved);
    for (int i = 0; !rc && i < 2; i++) {
        cudaError_t e = cudaStreamCreate(&c->st[i]);
        if (e != cudaSuccess)
            rc = cuda_fail(e, "cudaStreamCreate on device %d", device);
    }
    rf_dev_leave(saved);
    if (rc) {
        rf_dcopy_destroy(c);
        return rc;
    }
    *out = c;
    return 0;
}

void rf_dcopy_destroy(struct rf_dcopy *c)
{
    if (!c)
        return;
    int saved = -1;
    if (rf_dev_enter(c->device, &saved) == 0) {
        for (int i = 0; i < 2; i++)
            if (c->st[i]) {
                (void)cudaStreamSynchronize(c->st[i]);
                (void)cudaStreamDestroy(c->st[i]);
            }
        for (size_t i = 0; i < c->n_ev; i++)
            (void)cudaEventDestroy(c->ev[i]);
        rf_dev_leave(saved);
    }
    (void)cudaGetLastError();
    free(c->ev);
    free(c);
}

int rf_dcopy_device(const struct rf_dcopy *c)
{
    return c->device;
}

int rf_dcopy_post(struct rf_dcopy *c, void *dst, const void *src, size_t n, enum rf_dcopy_dir dir, size_t *ev)
{
    if (c->used == c->n_ev) {
        size_t nn = c->n_ev ? c->n_ev * 2 : 64;
        cudaEvent_t *ne = realloc(c->ev, nn * sizeof(*ne));
        if (!ne)
            return REFIT_ENOMEM;
        c->ev = ne;
        for (; c->n_ev < nn; c->n_ev++) {
            cudaError_t e = cudaEventCreateWithFlags(&c->ev[c->n_ev], cudaEventDisableTiming);
            if (e != cudaSuccess)
                return cuda_fail(e, "cudaEventCreateWithFlags");
        }
    }
    cudaStream_t s = c->st[c->next];
    c->next ^= 1;
    enum cudaMemcpyKind k = dir == RF_D2H ? cudaMemcpyDeviceToHost : cudaMemcpyHostToDevice;
    cudaError_t e = cudaMemcpyAsync(dst, src, n, k, s);
    if (e != cudaSuccess)
        return cuda_fail(e, "cudaMemcpyAsync %s of %zu bytes (%p -> %p) on device %d",
                         dir == RF_D2H ? "device to host" : "host to device", n, src, dst, c->device);
    e = cudaEventRecord(c->ev[c->used], s);
    if (e != cudaSuccess)
        return cuda_fail(e, "cudaEventRecord after a copy of %zu bytes", n);
    *ev = c->used++;
    return 0;
}

int rf_dcopy_wait(struct rf_dcopy *c, size_t ev)
{
    if (ev >= c->used)
        return refit_error_set(REFIT_EINVAL, "cuda: wait for copy %zu of %zu queued", ev, c->used);
    cudaError_t e = cudaEventSynchronize(c->ev[ev]);
    return e == cudaSuccess ? 0 : cuda_fail(e, "waiting for copy %zu on device %d", ev, c->device);
}

int rf_dcopy_sync(struct rf_dcopy *c)
{
    int rc = 0;
    for (int i = 0; i < 2; i++) {
        cudaError_t e = cudaStreamSynchronize(c->st[i]);
        if (e != cudaSuccess && !rc)
            rc = cuda_fail(e, "waiting for the copies on device %d", c->device);
    }
    c->used = 0;
    c->next = 0;
    return rc;
}

/* ------------------------------------------------------------------ */
/* The pool */

#define POOL_SLAB ((size_t)256 << 20)
#define POOL_ALIGN ((size_t)256)
#define POOL_BIG_ROUND ((size_t)2 << 20)

struct ext {
    size_t off, len;
};

struct slab {
    int device;
    char *base;
    size_t len;
    size_t live;
    struct ext *free; /* sorted by offset, coalesced */
    size_t n_free, cap_free;
};

struct live {
    char *p;
    size_t len;
};

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static struct slab *slabs;
static size_t n_slabs;
static struct live *lives;
static size_t n_lives, cap_lives;
static size_t used_bytes;

static struct slab *slab_of(const void *p)
{
    for (size_t i = 0; i < n_slabs; i++)
        if ((const char *)p >= slabs[i].base && (const char *)p < slabs[i].base + slabs[i].len)
            return &slabs[i];
    return NULL;
}

static int ext_insert(struct slab *s, size_t at, struct ext e)
{
    if (s->n_free == s->cap_free) {
        size_t nc = s->cap_free ? s->cap_free * 2 : 8;
        struct ext *nf = realloc(s->free, nc * sizeof(*nf));
        if (!nf)
            return REFIT_ENOMEM;
        s->free = nf;
        s->cap_free = nc;
    }
    memmove(&s->free[at + 1], &s->free[at], (s->n_free - at) * sizeof(*s->free));
    s->free[at] = e;
    s->n_free++;
    return 0;
}

static void ext_remove(struct slab *s, size_t at)
{
    memmove(&s->free[at], &s->free[at + 1], (s->n_free - at - 1) * sizeof(*s->free));
    s->n_free--;
}

/* First fit in slab s; NULL when nothing fits. */
static char *slab_take(struct slab *s, size_t n)
{
    for (size_t i = 0; i < s->n_free; i++)
        if (s->free[i].len >= n) {
            char *p = s->base + s->free[i].off;
            s->free[i].off += n;
            s->free[i].len -= n;
            if (!s->free[i].len)
                ext_remove(s, i);
            s->live++;
            return p;
        }
    return NULL;
}

static int slab_new(int device, size_t n, struct slab **out)
{
    size_t len = n > POOL_SLAB ? (n + POOL_BIG_ROUND - 1) / POOL_BIG_ROUND * POOL_BIG_ROUND : POOL_SLAB;
    struct slab *ns = realloc(slabs, (n_slabs + 1) * sizeof(*ns));
    if (!ns)
        return REFIT_ENOMEM;
    slabs = ns;
    struct slab *s = &slabs[n_slabs];
    memset(s, 0, sizeof(*s));
    void *base = NULL;
    cudaError_t e = cudaMalloc(&base, len);
    if (e != cudaSuccess)
        return cuda_fail(e, "cuda pool: cudaMalloc of a %zu-byte slab on device %d", len, device);
    s->device = device;
    s->base = base;
    s->len = len;
    int rc = ext_insert(s, 0, (struct ext){0, len});
    if (rc) {
        (void)cudaFree(base);
        return rc;
    }
    n_slabs++;
    *out = s;
    return 0;
}

int refit_cuda_alloc(size_t bytes, void **out)
{
    if (!out || !bytes)
        return refit_error_set(REFIT_EINVAL, "refit_cuda_alloc: %s", out ? "0 bytes" : "NULL out");
    if (bytes > SIZE_MAX - POOL_BIG_ROUND)
        return refit_error_set(REFIT_ERANGE, "refit_cuda_alloc: %zu bytes", bytes);
    size_t n = (bytes + POOL_ALIGN - 1) / POOL_ALIGN * POOL_ALIGN;
    int device = -1;
    cudaError_t e = cudaGetDevice(&device);
    if (e != cudaSuccess)
        return cuda_fail(e, "refit_cuda_alloc: cudaGetDevice");
    pthread_mutex_lock(&pool_lock);
    int rc = 0;
    char *p = NULL;
    if (n_lives == cap_lives) {
        size_t nc = cap_lives ? cap_lives * 2 : 256;
        struct live *nl = realloc(lives, nc * sizeof(*nl));
        if (!nl)
            rc = REFIT_ENOMEM;
        else {
            lives = nl;
            cap_lives = nc;
        }
    }
    for (size_t i = 0; !rc && !p && i < n_slabs; i++)
        if (slabs[i].device == device)
            p = slab_take(&slabs[i], n);
    if (!rc && !p) {
        struct slab *s = NULL;
        rc = slab_new(device, n, &s);
        if (!rc)
            p = slab_take(s, n);
    }
    if (!rc) {
        lives[n_lives++] = (struct live){p, n};
        used_bytes += n;
        *out = p;
    }
    pthread_mutex_unlock(&pool_lock);
    return rc ? refit_error_push(rc, "refit_cuda_alloc(%zu bytes) on device %d", bytes, device) : 0;
}

int refit_cuda_free(void *p)
{
    if (!p)
        return 0;
    pthread_mutex_lock(&pool_lock);
    size_t i = 0;
    while (i < n_lives && lives[i].p != p)
        i++;
    struct slab *s = i < n_lives ? slab_of(p) : NULL;
    if (!s) {
        pthread_mutex_unlock(&pool_lock);
        return refit_error_set(REFIT_EINVAL, "refit_cuda_free(%p): not memory from refit_cuda_alloc", p);
    }
    struct ext e = {(size_t)(lives[i].p - s->base), lives[i].len};
    used_bytes -= lives[i].len;
    lives[i] = lives[--n_lives];
    s->live--;
    /* Back into the sorted free list, merged with its neighbours. */
    size_t at = 0;
    while (at < s->n_free && s->free[at].off < e.off)
        at++;
    int rc = 0;
    if (at > 0 && s->free[at - 1].off + s->free[at - 1].len == e.off) {
        s->free[at - 1].len += e.len;
        if (at < s->n_free && e.off + e.len == s->free[at].off) {
            s->free[at - 1].len += s->free[at].len;
            ext_remove(s, at);
        }
    } else if (at < s->n_free && e.off + e.len == s->free[at].off) {
        s->free[at].off = e.off;
        s->free[at].len += e.len;
    } else {
        rc = ext_insert(s, at, e); /* on ENOMEM the piece is lost until trim */
    }
    pthread_mutex_unlock(&pool_lock);
    return rc;
}

int refit_cuda_pool_stats(struct refit_cuda_pool_stats *out)
{
    if (!out)
        return refit_error_set(REFIT_EINVAL, "refit_cuda_pool_stats: NULL");
    struct refit_cuda_pool_stats st = {.size = sizeof(st)};
    pthread_mutex_lock(&pool_lock);
    st.slabs = n_slabs;
    for (size_t i = 0; i < n_slabs; i++)
        st.slab_bytes += slabs[i].len;
    st.used_bytes = used_bytes;
    st.allocations = n_lives;
    pthread_mutex_unlock(&pool_lock);
    size_t n = out->size && out->size < sizeof(st) ? out->size : sizeof(st);
    memcpy(out, &st, n);
    return 0;
}

int refit_cuda_pool_trim(void)
{
    pthread_mutex_lock(&pool_lock);
    int freed = 0, rc = 0;
    for (size_t i = 0; i < n_slabs;) {
        if (slabs[i].live) {
            i++;
            continue;
        }
        int saved = -1;
        int erc = rf_dev_enter(slabs[i].device, &saved);
        cudaError_t e = erc ? cudaSuccess : cudaFree(slabs[i].base);
        if (!erc)
            rf_dev_leave(saved);
        if (erc || e != cudaSuccess) {
            if (!rc)
                rc = erc ? erc : cuda_fail(e, "cuda pool: cudaFree of a %zu-byte slab", slabs[i].len);
            i++;
            continue;
        }
        free(slabs[i].free);
        slabs[i] = slabs[--n_slabs];
        freed++;
    }
    pthread_mutex_unlock(&pool_lock);
    return rc ? rc : freed;
}

int rf_dev_pool_find(const void *p, void **base, size_t *len)
{
    pthread_mutex_lock(&pool_lock);
    struct slab *s = slab_of(p);
    if (s) {
        *base = s->base;
        *len = s->len;
    }
    pthread_mutex_unlock(&pool_lock);
    return s ? 0 : REFIT_ENOENT;
}
