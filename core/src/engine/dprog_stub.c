/* dprog_stub.c — dprog.h's device program in a build without CUDA: every
 * entry point says so (the host reference, dprog_ref.c, is always built). */
#include "dprog.h"
#include "refit/status.h"

static int no_cuda(void)
{
    return refit_error_set(REFIT_ENOTSUP, "device program: librefit was built without CUDA");
}

int rf_dprog_create(int device, struct rf_dprog **out)
{
    (void)device;
    (void)out;
    return no_cuda();
}

void rf_dprog_destroy(struct rf_dprog *g)
{
    (void)g;
}

int rf_dprog_load(struct rf_dprog *g, const struct rf_dop *ops, size_t n, const struct refit_fp8_params *p)
{
    (void)g;
    (void)ops;
    (void)n;
    (void)p;
    return no_cuda();
}

int rf_dprog_launch(struct rf_dprog *g)
{
    (void)g;
    return no_cuda();
}

int rf_dprog_wait(struct rf_dprog *g, size_t *bad)
{
    (void)g;
    (void)bad;
    return no_cuda();
}

size_t rf_dprog_tiles(const struct rf_dprog *g)
{
    (void)g;
    return 0;
}

int rf_dprog_launches(const struct rf_dprog *g)
{
    (void)g;
    return 0;
}

double rf_dprog_last_ms(const struct rf_dprog *g)
{
    (void)g;
    return -1;
}

int rf_dprog_steps(const struct rf_dprog *g, char *buf, size_t cap)
{
    (void)g;
    if (cap)
        buf[0] = 0;
    return 0;
}
