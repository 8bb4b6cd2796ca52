/* refit/standin.h — the trainer stand-in's deterministic weight change.
 *
 * `refit publish` (a trainer stand-in), `refit convert --version V` and
 * `refit demo` agree on what "the weights of version V" are: version 1 is
 * the checkpoint; version V flips the low mantissa bits of every element by
 * a mask that depends on V alone.  The change is element-wise, so it
 * commutes with sharding and resharding (an offline conversion of version
 * V's checkpoint is the exact expected result of a refit of V); it leaves
 * the exponent alone, so finite weights stay finite; and every version's
 * bytes differ from the previous one's. */
#ifndef REFIT_STANDIN_H
#define REFIT_STANDIN_H

#include <stddef.h>
#include <stdint.h>

#include "refit/dtype.h"
#include "refit/refit.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Turn version `from` weights into version `to` weights in place (versions
 * start at 1).  Floating dtypes (BF16, F16, F32, F64) only; others are
 * REFIT_ENOTSUP. */
int refit_standin_step(void *data, size_t nbytes, enum refit_dtype dtype, uint64_t from,
                       uint64_t to);

/* One trainer rank's Megatron tensors made in memory from an HF checkpoint
 * (what `refit shard` writes to files), following the model's Megatron
 * layout map piece by piece: the trainer stand-in of `refit publish`,
 * `refit demo`, `refit bench cycle`, the tests and the Python examples. */
struct refit_standin_tensor {
    char *name; /* Megatron name */
    enum refit_dtype dtype;
    int ndim;
    int64_t shape[REFIT_MAX_DIMS];
    void *data; /* into the shard's arena */
    size_t nbytes;
};

struct refit_standin_shard {
    struct refit_standin_tensor *t;
    size_t n;
    void *arena; /* all tensors, 256-byte aligned, vocabulary padding zero */
    size_t bytes;
};

/* The model is the context's (refit_context_model).  Free with
 * refit_standin_shard_free. */
int refit_standin_shard_load(const struct refit_model *m, const char *hf_dir, const struct refit_parallel *par,
                             struct refit_standin_shard *out);
void refit_standin_shard_free(struct refit_standin_shard *s);

#ifdef __cplusplus
}
#endif
#endif
