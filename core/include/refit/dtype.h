/* refit/dtype.h — element types, spelled as safetensors spells them. */
#ifndef REFIT_DTYPE_H
#define REFIT_DTYPE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum refit_dtype {
    REFIT_DTYPE_INVALID = 0,
    REFIT_DTYPE_BOOL,
    REFIT_DTYPE_U8,
    REFIT_DTYPE_I8,
    REFIT_DTYPE_I16,
    REFIT_DTYPE_I32,
    REFIT_DTYPE_I64,
    REFIT_DTYPE_F8_E4M3,
    REFIT_DTYPE_F16,
    REFIT_DTYPE_BF16,
    REFIT_DTYPE_F32,
    REFIT_DTYPE_F64,
    REFIT_DTYPE_COUNT_
};

#define REFIT_MAX_DIMS 8

/* Bytes per element (0 for INVALID). */
size_t refit_dtype_size(enum refit_dtype t);
/* "BF16", "F8_E4M3", ...; "INVALID" for unknown values. */
const char *refit_dtype_name(enum refit_dtype t);
/* Parses the safetensors spelling (also accepts lower case); returns
 * REFIT_EINVAL for an unknown name. */
int refit_dtype_parse(const char *s, enum refit_dtype *out);

#ifdef __cplusplus
}
#endif
#endif
