/* devmem_stub.c — devmem.h and refit/cuda_pool.h in a build without CUDA:
 * every operation is REFIT_ENOTSUP with a message saying so, so that the
 * engine's device paths and callers need no #ifdef. */
#include "devmem.h"
#include "refit/cuda_pool.h"
#include "refit/status.h"

#define NOT_BUILT "librefit was built without CUDA (meson option -Dcuda=enabled needs nvcc and the CUDA runtime)"

int rf_dev_built(void)
{
    return 0;
}

int rf_dev_locate(const void *p, const char *what, int *device)
{
    (void)p, (void)device;
    return refit_error_set(REFIT_ENOTSUP, "%s: REFIT_MEM_CUDA: %s", what, NOT_BUILT);
}

int rf_dev_enter(int device, int *saved)
{
    (void)device;
    *saved = -1;
    return refit_error_set(REFIT_ENOTSUP, "cuda: %s", NOT_BUILT);
}

void rf_dev_leave(int saved)
{
    (void)saved;
}

int rf_dev_pin(void *p, size_t n, const char *what)
{
    (void)p, (void)n;
    return refit_error_set(REFIT_ENOTSUP, "%s: pinning: %s", what, NOT_BUILT);
}

void rf_dev_unpin(void *p)
{
    (void)p;
}

int rf_dev_pool_find(const void *p, void **base, size_t *len)
{
    (void)p, (void)base, (void)len;
    return REFIT_ENOENT;
}

int rf_dcopy_create(int device, struct rf_dcopy **out)
{
    (void)device, (void)out;
    return refit_error_set(REFIT_ENOTSUP, "cuda copies: %s", NOT_BUILT);
}

void rf_dcopy_destroy(struct rf_dcopy *c)
{
    (void)c;
}

int rf_dcopy_device(const struct rf_dcopy *c)
{
    (void)c;
    return -1;
}

int rf_dcopy_post(struct rf_dcopy *c, void *dst, const void *src, size_t n, enum rf_dcopy_dir dir, size_t *ev)
{
    (void)c, (void)dst, (void)src, (void)n, (void)dir, (void)ev;
    return refit_error_set(REFIT_ENOTSUP, "cuda copies: %s", NOT_BUILT);
}

int rf_dcopy_wait(struct rf_dcopy *c, size_t ev)
{
    (void)c, (void)ev;
    return refit_error_set(REFIT_ENOTSUP, "cuda copies: %s", NOT_BUILT);
}

int rf_dcopy_sync(struct rf_dcopy *c)
{
    (void)c;
    return refit_error_set(REFIT_ENOTSUP, "cuda copies: %s", NOT_BUILT);
}

int refit_cuda_alloc(size_t bytes, void **out)
{
    (void)bytes, (void)out;
    return refit_error_set(REFIT_ENOTSUP, "refit_cuda_alloc: %s", NOT_BUILT);
}

int refit_cuda_free(void *p)
{
    if (!p)
        return 0;
    return refit_error_set(REFIT_ENOTSUP, "refit_cuda_free: %s", NOT_BUILT);
}

int refit_cuda_pool_stats(struct refit_cuda_pool_stats *out)
{
    (void)out;
    return refit_error_set(REFIT_ENOTSUP, "refit_cuda_pool_stats: %s", NOT_BUILT);
}

int refit_cuda_pool_trim(void)
{
    return refit_error_set(REFIT_ENOTSUP, "refit_cuda_pool_trim: %s", NOT_BUILT);
}
