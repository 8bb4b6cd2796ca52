/* delta_cuda_stub.c — the CUDA half of delta.h in a build without CUDA:
 * every operation is REFIT_ENOTSUP, so that callers need no #ifdef. */
#include "delta.h"
#include "refit/status.h"

static int not_built(void)
{
    return refit_error_set(REFIT_ENOTSUP, "delta cuda: librefit was built without CUDA "
                           "(meson option -Dcuda=enabled needs nvcc and the CUDA runtime)");
}

int rf_delta_cuda_built(void)
{
    return 0;
}

int rf_delta_cuda_create(void *stream, struct rf_delta_cuda **out)
{
    (void)stream, (void)out;
    return not_built();
}

void rf_delta_cuda_destroy(struct rf_delta_cuda *c)
{
    (void)c;
}

int rf_delta_cuda_encode(struct rf_delta_cuda *c, const struct rf_delta_span *t, size_t nt, void *out,
                         size_t cap, uint32_t *lens, uint64_t *len)
{
    (void)c, (void)t, (void)nt, (void)out, (void)cap, (void)lens, (void)len;
    return not_built();
}

int rf_delta_cuda_apply(struct rf_delta_cuda *c, const struct rf_delta_span *t, size_t nt, const void *delta,
                        size_t len, const uint32_t *lens)
{
    (void)c, (void)t, (void)nt, (void)delta, (void)len, (void)lens;
    return not_built();
}

int rf_delta_cuda_sync(struct rf_delta_cuda *c)
{
    (void)c;
    return not_built();
}

int rf_xxh3_cuda(void *stream, const struct rf_xxh3_span *spans, size_t n, uint64_t *out)
{
    (void)stream, (void)spans, (void)n, (void)out;
    return not_built();
}
