/* standin.c — the trainer stand-in's weight change (see standin.h). */
#include <string.h>

#include "refit/standin.h"
#include "refit/status.h"

/* 0 for version 1, then 1..7 cycling: consecutive versions always differ. */
static uint64_t mask_of(uint64_t v)
{
    return v <= 1 ? 0 : (v - 2) % 7 + 1;
}

int refit_standin_step(void *data, size_t nbytes, enum refit_dtype dtype, uint64_t from, uint64_t to)
{
    if (from == 0 || to == 0)
        return refit_error_set(REFIT_EINVAL, "stand-in versions start at 1");
    uint64_t m = mask_of(from) ^ mask_of(to);
    size_t es = refit_dtype_size(dtype);
    if (dtype != REFIT_DTYPE_BF16 && dtype != REFIT_DTYPE_F16 && dtype != REFIT_DTYPE_F32 &&
        dtype != REFIT_DTYPE_F64)
        return refit_error_set(REFIT_ENOTSUP, "stand-in weight change of %s", refit_dtype_name(dtype));
    if (nbytes % es)
        return refit_error_set(REFIT_EINVAL, "stand-in: %zu bytes is not a whole number of %s", nbytes,
                               refit_dtype_name(dtype));
    if (!m)
        return 0;
    /* The low bits of the first byte of each little-endian element are
     * mantissa bits for every floating type. */
    unsigned char *p = data;
    for (size_t i = 0; i < nbytes; i += es)
        p[i] ^= (unsigned char)m;
    return 0;
}
