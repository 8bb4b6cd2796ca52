/* cli_cuda.c — the few CUDA runtime calls the `refit` command makes
 * itself (`publish --device cuda`, `pull --device cuda`, `bench staged`):
 * copies between host and device memory from refit's pool.  Without CUDA
 * they fail with a message saying this refit was built without it. */
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

#endif
