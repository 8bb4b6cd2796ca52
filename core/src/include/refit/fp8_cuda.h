/* refit/fp8_cuda.h — FP8 (e4m3fn) 128x128 block quantization of device
 * buffers on a CUDA stream, byte-identical to refit_fp8_quantize_bf16() and
 * refit_fp8_quantize_f32() (refit/fp8.h; docs/fp8.md, docs/cuda.md).
 *
 * The header needs no CUDA headers: streams are passed as void * (a
 * cudaStream_t; NULL is the legacy default stream).  Every function exists
 * in every build; in a build without CUDA they return REFIT_ENOTSUP and
 * refit_cuda_device_count() returns 0. */
#ifndef REFIT_FP8_CUDA_H
#define REFIT_FP8_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "refit/fp8.h"

#ifdef __cplusplus
extern "C" {
#endif

/* CUDA devices usable by this process: 0 when librefit was built without
 * CUDA, when no driver is loaded or when no device is present. */
int refit_cuda_device_count(void);
/* Whether librefit was built with CUDA support (1) or not (0); public, also
 * declared in refit/refit.h. */
int refit_cuda_built(void);

/* Per-stream quantizer state: the stream, a device word that kernels set on
 * NaN/Inf input, and a pinned host copy of it.  One per stream; not for
 * concurrent use from several threads. */
struct refit_fp8_cuda;

/* Bind a quantizer to `stream` on the current device (the caller selects it
 * with cudaSetDevice).  The stream must outlive the quantizer.  *out is set
 * only on success; the caller frees it with refit_fp8_cuda_destroy(). */
int refit_fp8_cuda_create(void *stream, struct refit_fp8_cuda **out);
/* Waits for the stream first; NULL is ignored. */
void refit_fp8_cuda_destroy(struct refit_fp8_cuda *q);

/* Enqueue the quantization of the device matrix src [rows, cols] (rows
 * `stride` elements apart, src aligned to its element type) into dst
 * ([rows, cols], contiguous, device) and scales ([ceil(rows/128),
 * ceil(cols/128)] fp32, device) on the quantizer's stream, and return
 * without waiting.  Arguments are checked here (REFIT_EINVAL as on the
 * CPU; impl is ignored); a NaN or Inf input is reported by the next
 * refit_fp8_cuda_sync().  p may be NULL (trainer rule, default floor). */
int refit_fp8_cuda_quantize_bf16(struct refit_fp8_cuda *q, const void *src, size_t rows,
                                 size_t cols, size_t stride, void *dst, float *scales,
                                 const struct refit_fp8_params *p);
int refit_fp8_cuda_quantize_f32(struct refit_fp8_cuda *q, const void *src, size_t rows,
                                size_t cols, size_t stride, void *dst, float *scales,
                                const struct refit_fp8_params *p);

/* Wait for the stream.  REFIT_ENUMERIC when a quantization enqueued since
 * the last sync met NaN or Inf: the message names the first such call
 * ("quantization 2 of 5 since the last sync") and the smallest row and
 * column of a non-finite element in it; that call's outputs are
 * unspecified.  REFIT_EIO for a CUDA error (its name in the message).
 * Clears the error state. */
int refit_fp8_cuda_sync(struct refit_fp8_cuda *q);

#ifdef __cplusplus
}
#endif
#endif
