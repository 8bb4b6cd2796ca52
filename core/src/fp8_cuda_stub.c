/* fp8_cuda_stub.c — refit/fp8_cuda.h in a build without CUDA: no device,
 * and every operation is REFIT_ENOTSUP, so that callers need no #ifdef. */
#include "refit/fp8_cuda.h"
#include "refit/status.h"

int refit_cuda_built(void)
{
    return 0;
}

int refit_cuda_device_count(void)
{
    return 0;
}

static int not_built(void)
{
    return refit_error_set(REFIT_ENOTSUP, "fp8 cuda: librefit was built without CUDA "
                           "(meson option -Dcuda=enabled needs nvcc and the CUDA runtime)");
}

int refit_fp8_cuda_create(void *stream, struct refit_fp8_cuda **out)
{
    (void)stream, (void)out;
    return not_built();
}

void refit_fp8_cuda_destroy(struct refit_fp8_cuda *q)
{
    (void)q;
}

int refit_fp8_cuda_quantize_bf16(struct refit_fp8_cuda *q, const void *src, size_t rows,
                                 size_t cols, size_t stride, void *dst, float *scales,
                                 const struct refit_fp8_params *p)
{
    (void)q, (void)src, (void)rows, (void)cols, (void)stride, (void)dst, (void)scales, (void)p;
    return not_built();
}

int refit_fp8_cuda_quantize_f32(struct refit_fp8_cuda *q, const void *src, size_t rows,
                                size_t cols, size_t stride, void *dst, float *scales,
                                const struct refit_fp8_params *p)
{
    (void)q, (void)src, (void)rows, (void)cols, (void)stride, (void)dst, (void)scales, (void)p;
    return not_built();
}

int refit_fp8_cuda_sync(struct refit_fp8_cuda *q)
{
    (void)q;
    return not_built();
}
