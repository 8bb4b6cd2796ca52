/* trainer_shard.h — a trainer rank's Megatron tensors made in memory from
 * an HF checkpoint (what `refit shard` writes to files), for the trainer
 * stand-ins `refit publish`, `refit demo` and `refit bench cycle`. */
#ifndef REFIT_TRAINER_SHARD_H
#define REFIT_TRAINER_SHARD_H

#include <stddef.h>
#include <stdint.h>

#include "refit/convert.h"
#include "refit/refit.h"

struct trainer_tensor {
    char *name; /* Megatron name */
    enum refit_dtype dtype;
    int ndim;
    int64_t shape[REFIT_MAX_DIMS];
    void *data; /* into the shard's arena */
    size_t nbytes;
};

struct trainer_shard {
    struct trainer_tensor *t;
    size_t n;
    void *arena;
    size_t bytes;
};

int trainer_shard_load(const refit_model_t *m, const char *hf_dir, const struct refit_parallel *par,
                       struct trainer_shard *out);
void trainer_shard_free(struct trainer_shard *s);

#endif
