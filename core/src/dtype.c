/* dtype.c — element types in safetensors spelling. */
#include <string.h>
#include <strings.h>

#include "refit/dtype.h"
#include "refit/status.h"

static const struct {
    const char *name;
    size_t size;
} dtypes[REFIT_DTYPE_COUNT_] = {
    [REFIT_DTYPE_INVALID] = {"INVALID", 0}, [REFIT_DTYPE_BOOL] = {"BOOL", 1},
    [REFIT_DTYPE_U8] = {"U8", 1},           [REFIT_DTYPE_I8] = {"I8", 1},
    [REFIT_DTYPE_I16] = {"I16", 2},         [REFIT_DTYPE_I32] = {"I32", 4},
    [REFIT_DTYPE_I64] = {"I64", 8},         [REFIT_DTYPE_F8_E4M3] = {"F8_E4M3", 1},
    [REFIT_DTYPE_F16] = {"F16", 2},         [REFIT_DTYPE_BF16] = {"BF16", 2},
    [REFIT_DTYPE_F32] = {"F32", 4},         [REFIT_DTYPE_F64] = {"F64", 8},
};

size_t refit_dtype_size(enum refit_dtype t)
{
    return (t > REFIT_DTYPE_INVALID && t < REFIT_DTYPE_COUNT_) ? dtypes[t].size : 0;
}

const char *refit_dtype_name(enum refit_dtype t)
{
    return (t > REFIT_DTYPE_INVALID && t < REFIT_DTYPE_COUNT_) ? dtypes[t].name : "INVALID";
}

int refit_dtype_parse(const char *s, enum refit_dtype *out)
{
    if (!s)
        return REFIT_EINVAL;
    for (int t = 1; t < REFIT_DTYPE_COUNT_; t++)
        if (!strcasecmp(s, dtypes[t].name)) {
            *out = (enum refit_dtype)t;
            return 0;
        }
    return REFIT_EINVAL;
}
