/* cli_cuda.c — the few CUDA runtime calls the `refit` command makes
 * itself (`publish --device cuda`, `pull --device cuda`, `bench staged`):
 * copies between host and device memory from refit's pool.  Without CUDA
 * they fail with a message saying this refit was built without it. */
#include <stdlib.h>

#include "cli.h"
#include "refit/status.h"

#ifdef REFIT_CLI_HAVE_CUDA
#include <cuda_runtime_api.h>

static int copy(void *dst, const void *src, size_t n, enum cudaMemcpyKind k, const char *what)
{
    cudaError_t e = cudaMemcpy(dst, src, n, k);
    if (e == cudaSuccess)
        return 0;
    (void)cudaGetLastError();
    return refit_error_set(REFIT_EIO, "cuda: %s of %zu bytes: %s (%s)", what, n, cudaGetErrorString(e),
                           cudaGetErrorName(e));
}

int cli_cuda_upload(void *dev, const void *host, size_t n)
{
    return copy(dev, host, n, cudaMemcpyHostToDevice, "cudaMemcpy host to device");
}

int cli_cuda_download(void *host, const void *dev, size_t n)
{
    return copy(host, dev, n, cudaMemcpyDeviceToHost, "cudaMemcpy device to host");
}

int cli_cuda_select(void)
{
    const char *s = getenv("REFIT_CUDA_DEVICE");
    if (!s || !*s)
        return 0;
    char *end;
    long d = strtol(s, &end, 10);
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess)
        n = 0;
    if (*end || d < 0 || d >= n) {
        (void)cudaGetLastError();
        return refit_error_set(REFIT_EINVAL, "REFIT_CUDA_DEVICE=%s: not a device of this machine (%d found)", s, n);
    }
    cudaError_t e = cudaSetDevice((int)d);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return refit_error_set(REFIT_EIO, "cudaSetDevice(%ld): %s", d, cudaGetErrorString(e));
    }
    return 0;
}

#else

static int not_built(void)
{
    return refit_error_set(REFIT_ENOTSUP, "device memory needs a CUDA device, and this refit was built without "
                           "CUDA (meson -Dcuda=enabled)");
}

int cli_cuda_upload(void *dev, const void *host, size_t n)
{
    (void)dev, (void)host, (void)n;
    return not_built();
}

int cli_cuda_download(void *host, const void *dev, size_t n)
{
    (void)dev, (void)host, (void)n;
    return not_built();
}

int cli_cuda_select(void)
{
    return getenv("REFIT_CUDA_DEVICE") ? not_built() : 0;
}

#endif
