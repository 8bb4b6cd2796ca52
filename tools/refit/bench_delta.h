/* bench_delta.h — what `refit bench delta` (bench_delta.c, the codec) and
 * `refit bench delta --engine` (bench_delta_eng.c, through the engine)
 * share: the options, the Qwen3-0.6B-shaped trainer model and its Adam
 * training in groups of tensors. */
#ifndef REFIT_BENCH_DELTA_H
#define REFIT_BENCH_DELTA_H

#include <stddef.h>
#include <stdint.h>

#include "delta.h"
#include "refit/convert.h"

#define MAX_STEPS 1000

struct bd_opts {
    double lr, wd;
    int steps, layers, vocab, warmup, cuda, sweep, engine, fp8;
    size_t group_bytes;
    uint64_t seed;
    enum rf_delta_impl impl;
};

/* One tensor, or a piece of one: elements [e0, e0 + n) of tensor t. */
struct bd_piece {
    const char *name;
    uint32_t t;
    int norm;
    uint64_t e0, n, chunk_bytes;
    size_t at; /* element offset in its group */
};

struct bd_step {
    uint64_t changed, units, delta, full, segs[4], mismatch;
    double enc, app, cpy;          /* host seconds */
    double genc, gapp, gcpy;       /* device seconds */
    uint64_t gdiff;                /* device bytes differing from the host's */
};

/* The buffers of one group. */
struct bd_group {
    size_t n;                      /* elements */
    float *w, *m, *v;              /* fp32 master and Adam moments */
    uint16_t *old, *cur, *rcv;     /* last published, new, the receiver's copy */
    uint8_t *delta;                /* every piece's delta, back to back */
    uint32_t *lens;                /* every piece's chunk lengths */
    uint64_t delta_cap, n_chunks;
};

/* Trainer tensors of the Qwen3-0.6B shape (cmd_demo.c's config) at TP1,
 * cut into pieces of at most group_bytes on chunk boundaries. */
struct bd_model {
    refit_loader_t *loader;
    refit_model_t *model;
    refit_layout_t *lay;
};

void bd_model_close(struct bd_model *md);
/* The trainer tensors in pieces of at most o->group_bytes; *elems: all of
 * their elements. */
int bd_model_pieces(const struct bd_opts *o, struct bd_model *md, struct bd_piece **out, size_t *n_out,
                    uint64_t *elems);
/* The model's config.json (the HF config the layouts come from). */
int bd_model_config(const struct bd_opts *o, char *buf, size_t n);
void bd_init_piece(const struct bd_opts *o, const struct bd_piece *p, float *w);
void bd_adam_piece(const struct bd_opts *o, const struct bd_piece *p, int step, float *w, float *m, float *v);
/* fp32 -> bf16, round to nearest even */
void bd_publish(const float *w, uint16_t *out, size_t n);
int bd_group_alloc(struct bd_group *g, size_t max_elems, uint64_t max_delta, uint64_t max_chunks);
void bd_group_place(struct bd_piece *p, size_t np, struct bd_group *g);
void bd_group_free(struct bd_group *g);
/* Place, initialise, warm up and publish a group's first version (g->old). */
void bd_group_start(const struct bd_opts *o, struct bd_piece *p, size_t np, struct bd_group *g);
/* Consecutive pieces in groups of up to o->group_bytes of bf16 (a piece
 * at least): group k is pieces [cut[k], cut[k + 1]); the largest group's
 * elements, delta bound and chunks. */
int bd_groups(const struct bd_opts *o, const struct bd_piece *p, size_t np, size_t **cut, size_t *ng,
              size_t *max_elems, uint64_t *max_delta, uint64_t *max_chunks);
/* --engine: bench_delta_eng.c */
int bench_delta_engine(const struct bd_opts *o);

#endif
