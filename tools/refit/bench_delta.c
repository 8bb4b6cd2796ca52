/* bench_delta.c — `refit bench delta`: how much of a bf16 checkpoint an RL
 * step changes, and what the exact delta codec (core/src/delta) makes of
 * it, beside memcpy of the same bytes in the same run.
 *
 * The model: the trainer tensors (Megatron names, TP1) of a Qwen3-0.6B-
 * shaped checkpoint, initialised as `refit demo`'s synthetic checkpoint is
 * (cmd_demo.c, make_checkpoint: uniform in ±0.05, norms around 1), kept as
 * fp32 master weights and trained for K steps of Adam (β 0.9 / 0.999,
 * ε 1e-8, bias-corrected, optional decoupled weight decay): gradients
 * g = 1e-4 · (0.3 μ + ξ), with μ a fixed per-element direction and ξ fresh
 * noise every step, both about N(0, 1) — the low signal-to-noise of policy
 * gradients, at a scale where ε does not matter, so that Adam's normalized
 * update is about lr per element (exactly lr·sign(g) on step 1).  Every
 * step publishes bf16 (round to nearest even from the master).
 *
 * Per step, over the whole model: the fraction of bf16 elements that
 * changed, the delta's bytes beside the full bytes, and the time of encode
 * (publisher: last published + new -> delta), apply (receiver: delta onto
 * its copy of the last version, which must then equal the new one byte for
 * byte) and memcpy of the same dense bytes, each pass started with the last
 * level cache flushed.  --device cuda runs the same encode and apply on the
 * GPU (CUDA events, beside a device-to-device copy) and checks its bytes
 * against the host's.
 *
 * Memory stays small: the model is walked in groups of tensors (or pieces
 * of large ones, on chunk boundaries) of --group-mb of bf16, each trained
 * through all K steps before the next (elements train independently, so the
 * figures are those of whole-model steps), and summed per step. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_opts.h"
#include "bench_delta.h"
#include "delta.h"
#include "refit/convert.h"
#include "refit/status.h"

/* The command line: bd_opts' counts directly, the rest as text or MiB
 * that parse() turns into bd_opts. */
struct bd_cli {
    struct bd_opts o;
    const char *seed, *device, *impl;
    int group_mb;
};

#define AT(f) CLI_AT(struct bd_cli, f)
static const struct cli_opt bd_table[] = {
    {"--lr", NULL, CLI_DBL, "X", 0, 0, NULL, NULL, AT(o.lr), "Adam's learning rate, in [0, 1] (default 1e-6)"},
    {"--wd", NULL, CLI_DBL, "X", 0, 0, NULL, NULL, AT(o.wd), "weight decay, in [0, 1] (default 0)"},
    {"--steps", NULL, CLI_INT, "K", 1, MAX_STEPS, NULL, NULL, AT(o.steps), "published Adam steps (default 5)"},
    {"--warmup", NULL, CLI_INT, "W", 0, MAX_STEPS, NULL, NULL, AT(o.warmup),
     "unpublished Adam steps first (a warm optimizer state)"},
    {"--layers", NULL, CLI_INT, "L", 1, MAX_STEPS, NULL, NULL, AT(o.layers), "layers of the model (default 28)"},
    {"--vocab", NULL, CLI_INT, "V", 1, 1 << 22, NULL, NULL, AT(o.vocab), "vocabulary of the model (default 151936)"},
    {"--device", NULL, CLI_CHOICE, "WHERE", 0, 0, "cpu|cuda", "cpu", AT(device),
     "cuda: also the CUDA kernels (beside a device copy), checked against the host"},
    {"--impl", NULL, CLI_CHOICE, "I", 0, 0, "auto|scalar|avx2|avx512", "auto", AT(impl), "the host codec's path"},
    {"--group-mb", NULL, CLI_INT, "M", 1, MAX_STEPS, NULL, NULL, AT(group_mb), "MiB per group, or swept (default 64)"},
    {"--seed", NULL, CLI_STR, "N", 0, 0, NULL, NULL, AT(seed), "the weights' seed (decimal or 0x hex)"},
    {"--sweep", NULL, CLI_FLAG, NULL, 0, 0, NULL, NULL, AT(o.sweep),
     "the codec alone at change densities from 0 to 1"},
    {"--engine", NULL, CLI_FLAG, NULL, 0, 0, NULL, NULL, AT(o.engine),
     "each step published and pulled through the engine over tcp: full beside delta receivers"},
    {"--fp8", NULL, CLI_FLAG, NULL, 0, 0, NULL, NULL, AT(o.fp8), "with --engine: also an FP8-target pair"},
};
#undef AT

static const struct cli_spec bd_spec = {
    .cmd = "bench delta",
    .about = "Trains a Qwen3-0.6B-shaped checkpoint (the demo's synthetic weights, fp32 master)\n"
             "for K Adam steps at learning rate X, publishing bf16, and prints per step the\n"
             "fraction of bf16 elements that changed, the exact delta's bytes against the full\n"
             "bytes, and encode / apply times and GB/s (of dense bf16) beside memcpy of the same\n"
             "bytes; every applied delta is checked byte for byte.\n"
             "--engine: the same training, each step published by a refit publisher (refit.delta on)\n"
             "and pulled over tcp by a full receiver and a delta receiver (--fp8: also an FP8 pair);\n"
             "prints wire bytes full vs delta, publish and pull times, and that the delta receiver's\n"
             "bytes equal the full one's.\n"
             "--sweep: the codec alone on M MiB (default 64) of bf16 at change densities from 0 to 1\n"
             "(units moved by one ulp), median of 7 runs each beside memcpy.\n",
    .opts = bd_table,
    .n_opts = CLI_N(bd_table),
};

/* 0, 1 after --help, or an error. */
static int parse(struct bd_opts *o, int argc, char **argv)
{
    struct bd_cli c = {.o = *o};
    int rc = cli_opts_parse(&bd_spec, argc, argv, &c, NULL, NULL);
    if (rc)
        return rc == CLI_HELP ? 1 : rc;
    for (int k = 0; k < 2; k++) {
        double x = k ? c.o.wd : c.o.lr;
        if (!(x >= 0) || x > 1)
            return refit_error_set(REFIT_EINVAL, "%s needs a number in [0, 1], not '%g'", k ? "--wd" : "--lr", x);
    }
    if (c.group_mb)
        c.o.group_bytes = (size_t)c.group_mb << 20;
    if (c.seed) {
        char *end = NULL;
        errno = 0;
        c.o.seed = strtoull(c.seed, &end, 0);
        if (errno || *end || !*c.seed)
            return refit_error_set(REFIT_EINVAL, "--seed needs an integer, not '%s'", c.seed);
    }
    c.o.cuda = !strcmp(c.device, "cuda");
    static const char *names[] = {"auto", "scalar", "avx2", "avx512"};
    int k = 0;
    while (k < 3 && strcmp(c.impl, names[k]))
        k++;
    c.o.impl = (enum rf_delta_impl)k;
    if (!rf_delta_impl_available(c.o.impl))
        return refit_error_set(REFIT_ENOTSUP, "--impl %s: not available on this CPU", c.impl);
    *o = c.o;
    return 0;
}

/* ------------------------------------------------------------------ */
/* The model */

/* The checksum chunk of a trainer tensor, as the publisher makes it
 * (core/src/engine/context.c, rf_chunk_rows): a power of two of rows of
 * about 64 KiB, at least one row. */
static uint64_t chunk_bytes_of(uint64_t row_bytes)
{
    uint64_t want = 65536 / row_bytes, c = 1;
    while (c * 2 <= want && c < (1u << 30))
        c *= 2;
    return c * row_bytes;
}

void bd_model_close(struct bd_model *md)
{
    refit_layout_destroy(md->lay);
    refit_model_close(md->model);
    refit_loader_destroy(md->loader);
}

int bd_model_config(const struct bd_opts *o, char *buf, size_t n)
{
    int k = snprintf(buf, n,
                     "{\"architectures\": [\"Qwen3ForCausalLM\"], \"model_type\": \"qwen3\", "
                     "\"num_hidden_layers\": %d, \"hidden_size\": 1024, \"num_attention_heads\": 16, "
                     "\"num_key_value_heads\": 8, \"head_dim\": 128, \"intermediate_size\": 3072, "
                     "\"vocab_size\": %d, \"tie_word_embeddings\": true, \"attention_bias\": false, "
                     "\"rms_norm_eps\": 1e-06, \"torch_dtype\": \"bfloat16\"}",
                     o->layers, o->vocab);
    return k > 0 && (size_t)k < n ? 0 : refit_error_set(REFIT_ERANGE, "bench delta: the model's config");
}

int bd_model_pieces(const struct bd_opts *o, struct bd_model *md, struct bd_piece **out, size_t *n_out,
                        uint64_t *elems)
{
    char cfg[1024];
    bd_model_config(o, cfg, sizeof(cfg));
    struct refit_megatron_rank r = {1, 1, 1, 0, 0, 0, 128};
    int rc = refit_loader_create(NULL, &md->loader);
    if (!rc)
        rc = refit_model_open_text(md->loader, "qwen3", cfg, strlen(cfg), "Qwen3-0.6B-shaped", &md->model);
    if (!rc)
        rc = refit_layout_megatron(md->model, &r, NULL, &md->lay);
    if (rc)
        return rc;
    const refit_layout_t *lay = md->lay;
    size_t cap = 64, n = 0;
    struct bd_piece *p = malloc(cap * sizeof(*p));
    *elems = 0;
    for (size_t t = 0; p && t < refit_layout_count(lay); t++) {
        const struct refit_layout_tensor *lt = refit_layout_at(lay, t);
        uint64_t ne = 1, cols = (uint64_t)lt->shape[lt->ndim - 1];
        for (int d = 0; d < lt->ndim; d++)
            ne *= (uint64_t)lt->shape[d];
        uint64_t cb = chunk_bytes_of(lt->ndim >= 2 ? cols * 2 : 2), per = o->group_bytes / cb * cb / 2;
        if (!per)
            per = cb / 2;
        for (uint64_t e0 = 0; e0 < ne; e0 += per) {
            if (n == cap && !(p = realloc(p, (cap *= 2) * sizeof(*p))))
                break;
            p[n++] = (struct bd_piece){lt->name, (uint32_t)t, strstr(lt->name, "norm") != NULL, e0,
                                       ne - e0 < per ? ne - e0 : per, cb, 0};
        }
        *elems += ne;
    }
    if (!p)
        return refit_error_set(REFIT_ENOMEM, "bench delta: the tensor list");
    *out = p;
    *n_out = n;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Training */

static uint64_t mix(uint64_t x)
{
    x ^= x >> 31;
    x *= 0x7fb5d329728ea185ull;
    x ^= x >> 27;
    x *= 0x81dadef4bc2dd44dull;
    return x ^ (x >> 33);
}

/* About N(0, 1) from 64 random bits: the sum of four 16-bit uniforms,
 * centred and scaled (Irwin-Hall; the shape of the tails does not matter
 * here, the scale does). */
static float gauss(uint64_t r)
{
    float s = (float)(r & 0xffff) + (float)(r >> 16 & 0xffff) + (float)(r >> 32 & 0xffff) + (float)(r >> 48);
    return (s - 2.0f * 65535.0f) * (1.0f / (65535.0f * 0.57735027f));
}

static uint16_t bf16_rne(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* The demo's weights: uniform in ±0.05 (norms: 1 ± 0.05) from xorshift. */
void bd_init_piece(const struct bd_opts *o, const struct bd_piece *p, float *w)
{
    uint64_t s = mix(o->seed ^ (uint64_t)p->t << 40 ^ p->e0) | 1;
    for (uint64_t i = 0; i < p->n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        float v = (float)((int64_t)(s >> 40) - (1 << 23)) / (float)(1 << 23) * 0.05f;
        w[i] = p->norm ? v + 1.0f : v;
    }
}

/* One Adam step (number `step`, from 1) of a piece. */
void bd_adam_piece(const struct bd_opts *o, const struct bd_piece *p, int step, float *w, float *m, float *v)
{
    const float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, lr = (float)o->lr, wd = (float)o->wd;
    const float c1 = 1.0f / (1.0f - powf(b1, (float)step)), c2 = 1.0f / (1.0f - powf(b2, (float)step));
    const uint64_t key = o->seed ^ (uint64_t)p->t << 40, noise = mix(key ^ (uint64_t)step << 20 ^ p->e0);
    for (uint64_t i = 0; i < p->n; i++) {
        float g = 1e-4f * (0.3f * gauss(mix(key ^ (p->e0 + i))) + gauss(mix(noise + i)));
        m[i] = b1 * m[i] + (1.0f - b1) * g;
        v[i] = b2 * v[i] + (1.0f - b2) * g * g;
        w[i] -= lr * ((m[i] * c1) / (sqrtf(v[i] * c2) + eps) + wd * w[i]);
    }
}

void bd_publish(const float *w, uint16_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = bf16_rne(w[i]);
}

/* ------------------------------------------------------------------ */
/* Groups */

static void *xcalloc(size_t n, size_t sz, int *rc)
{
    void *p = *rc ? NULL : calloc(n ? n : 1, sz);
    if (!p && !*rc)
        *rc = refit_error_set(REFIT_ENOMEM, "bench delta: %zu x %zu bytes", n, sz);
    return p;
}

void bd_group_free(struct bd_group *g)
{
    free(g->w);
    free(g->m);
    free(g->v);
    free(g->old);
    free(g->cur);
    free(g->rcv);
    free(g->delta);
    free(g->lens);
    memset(g, 0, sizeof(*g));
}

/* Buffers for the largest group (elements, delta bound, chunks), made
 * once and faulted in (not inside a timed pass). */
int bd_group_alloc(struct bd_group *g, size_t max_elems, uint64_t max_delta, uint64_t max_chunks)
{
    int rc = 0;
    memset(g, 0, sizeof(*g));
    g->delta_cap = max_delta;
    g->n_chunks = max_chunks;
    g->w = xcalloc(max_elems, 4, &rc);
    g->m = xcalloc(max_elems, 4, &rc);
    g->v = xcalloc(max_elems, 4, &rc);
    g->old = xcalloc(max_elems, 2, &rc);
    g->cur = xcalloc(max_elems, 2, &rc);
    g->rcv = xcalloc(max_elems, 2, &rc);
    g->delta = xcalloc(g->delta_cap, 1, &rc);
    g->lens = xcalloc(max_chunks, 4, &rc);
    if (rc) {
        bd_group_free(g);
        return rc;
    }
    memset(g->delta, 0, g->delta_cap);
    memset(g->rcv, 0, max_elems * 2);
    memset(g->cur, 0, max_elems * 2);
    memset(g->old, 0, max_elems * 2);
    return 0;
}

int bd_groups(const struct bd_opts *o, const struct bd_piece *p, size_t np, size_t **cut_out, size_t *ng_out,
              size_t *max_elems, uint64_t *max_delta, uint64_t *max_chunks)
{
    int rc = 0;
    size_t *cut = xcalloc(np + 1, sizeof(size_t), &rc), ng = 0;
    *max_elems = 0;
    *max_delta = *max_chunks = 0;
    for (size_t i = 0; !rc && i < np; ng++) {
        size_t j = i, e = 0;
        uint64_t d = 0, c = 0;
        do {
            e += p[j].n;
            d += rf_delta_tensor_bound(p[j].n * 2, p[j].chunk_bytes);
            c += rf_delta_tensor_chunks(p[j].n * 2, p[j].chunk_bytes);
            j++;
        } while (j < np && (e + p[j].n) * 2 <= o->group_bytes);
        cut[ng + 1] = j;
        *max_elems = e > *max_elems ? e : *max_elems;
        *max_delta = d > *max_delta ? d : *max_delta;
        *max_chunks = c > *max_chunks ? c : *max_chunks;
        i = j;
    }
    *cut_out = cut;
    *ng_out = ng;
    return rc;
}

/* Pieces p[0..np) into the group's buffers: element offsets, sizes. */
void bd_group_place(struct bd_piece *p, size_t np, struct bd_group *g)
{
    g->n = 0;
    g->n_chunks = 0;
    for (size_t i = 0; i < np; i++) {
        p[i].at = g->n;
        g->n += p[i].n;
        g->n_chunks += rf_delta_tensor_chunks(p[i].n * 2, p[i].chunk_bytes);
    }
    memset(g->m, 0, g->n * 4);
    memset(g->v, 0, g->n * 4);
}

/* ------------------------------------------------------------------ */
/* Timed passes */

/* The last level cache emptied of the group's bytes (writes a buffer
 * larger than it), so that every pass reads from memory as a publisher
 * encoding a version long after writing it would. */
static void flush_llc(uint8_t *f, size_t n)
{
    memset(f, (int)(f[0] + 1), n);
}

struct bd_bufs {
    uint8_t *flush, *copy;
    size_t flush_n;
    uint64_t *piece_len;
};

static int host_pass(const struct bd_opts *o, const struct bd_piece *p, size_t np, struct bd_group *g,
                     struct bd_bufs *b, struct bd_step *st)
{
    struct rf_delta_stats ds = {0};
    flush_llc(b->flush, b->flush_n);
    double t0 = cli_now();
    memcpy(b->copy, g->cur, g->n * 2);
    st->cpy += cli_now() - t0;
    flush_llc(b->flush, b->flush_n);
    t0 = cli_now();
    size_t off = 0, ch = 0;
    for (size_t i = 0; i < np; i++) {
        size_t len;
        int rc = rf_delta_encode_tensor(g->old + p[i].at, g->cur + p[i].at, p[i].n * 2, p[i].chunk_bytes,
                                        g->delta + off, g->delta_cap - off, g->lens + ch, &len, o->impl, &ds);
        if (rc)
            return refit_error_push(rc, "encoding '%s'", p[i].name);
        b->piece_len[i] = len;
        off += len;
        ch += rf_delta_tensor_chunks(p[i].n * 2, p[i].chunk_bytes);
    }
    st->enc += cli_now() - t0;
    flush_llc(b->flush, b->flush_n);
    t0 = cli_now();
    off = ch = 0;
    for (size_t i = 0; i < np; i++) {
        int rc = rf_delta_apply_tensor(g->delta + off, b->piece_len[i], g->lens + ch, p[i].n * 2,
                                       p[i].chunk_bytes, g->rcv + p[i].at, p[i].name);
        if (rc)
            return refit_error_push(rc, "applying");
        off += b->piece_len[i];
        ch += rf_delta_tensor_chunks(p[i].n * 2, p[i].chunk_bytes);
    }
    st->app += cli_now() - t0;
    for (size_t i = 0; i < g->n; i++)
        st->mismatch += g->rcv[i] != g->cur[i];
    st->changed += ds.changed;
    st->units += ds.units;
    st->delta += ds.out_bytes;
    st->full += ds.in_bytes;
    for (int k = 0; k < 4; k++)
        st->segs[k] += ds.segs[k];
    return 0;
}

#ifdef REFIT_CLI_HAVE_CUDA
#include <cuda_runtime_api.h>

/* The same groups on the GPU: device copies of the last published, new and
 * receiver's bytes; the encode and apply spans stay the same every step
 * (the new version is copied over the old one afterwards, untimed), so the
 * codec keeps its segment tables. */
struct bd_gpu {
    struct rf_delta_cuda *codec;
    cudaStream_t stream;
    cudaEvent_t ev[2];
    uint16_t *old, *cur, *rcv, *copy;
    uint8_t *delta, *h_delta;
    uint32_t *lens, *h_lens;
    uint16_t *h_rcv;
    size_t max_elems;
    uint64_t delta_cap, lens_cap;
    struct rf_delta_span *enc, *app;
};

static int cu(cudaError_t e, const char *what)
{
    return e == cudaSuccess ? 0 : refit_error_set(REFIT_EIO, "GPU: %s: %s", what, cudaGetErrorString(e));
}

static int gpu_open(struct bd_gpu *d, size_t max_elems)
{
    int rc = cli_cuda_select();
    d->max_elems = max_elems;
    if (!rc)
        rc = cu(cudaStreamCreate(&d->stream), "stream");
    if (!rc)
        rc = cu(cudaEventCreate(&d->ev[0]), "event");
    if (!rc)
        rc = cu(cudaEventCreate(&d->ev[1]), "event");
    if (!rc)
        rc = rf_delta_cuda_create(d->stream, &d->codec);
    uint16_t **bufs[] = {&d->old, &d->cur, &d->rcv, &d->copy};
    for (int i = 0; !rc && i < 4; i++)
        rc = cu(cudaMalloc((void **)bufs[i], max_elems * 2), "device buffers");
    d->h_rcv = rc ? NULL : malloc(max_elems * 2);
    if (!rc && !d->h_rcv)
        rc = REFIT_ENOMEM;
    return rc;
}

static void gpu_close(struct bd_gpu *d)
{
    rf_delta_cuda_destroy(d->codec);
    cudaFree(d->old);
    cudaFree(d->cur);
    cudaFree(d->rcv);
    cudaFree(d->copy);
    cudaFree(d->delta);
    cudaFree(d->lens);
    if (d->ev[0])
        cudaEventDestroy(d->ev[0]);
    if (d->ev[1])
        cudaEventDestroy(d->ev[1]);
    if (d->stream)
        cudaStreamDestroy(d->stream);
    free(d->h_delta);
    free(d->h_lens);
    free(d->h_rcv);
    free(d->enc);
    free(d->app);
}

/* A new group: buffers, its first version, the spans, one untimed round. */
static int gpu_group(struct bd_gpu *d, const struct bd_piece *p, size_t np, const struct bd_group *g)
{
    int rc = 0;
    if (g->n > d->max_elems)
        return refit_error_set(REFIT_ERANGE, "bench delta: a group of %zu elements", g->n);
    if (g->delta_cap > d->delta_cap || g->n_chunks > d->lens_cap) {
        cudaFree(d->delta);
        cudaFree(d->lens);
        free(d->h_delta);
        free(d->h_lens);
        d->delta_cap = g->delta_cap;
        d->lens_cap = g->n_chunks;
        rc = cu(cudaMalloc((void **)&d->delta, d->delta_cap), "delta buffer");
        if (!rc)
            rc = cu(cudaMalloc((void **)&d->lens, d->lens_cap * 4), "chunk lengths");
        d->h_delta = malloc(d->delta_cap);
        d->h_lens = malloc(d->lens_cap * 4);
        if (!rc && (!d->h_delta || !d->h_lens))
            rc = REFIT_ENOMEM;
    }
    free(d->enc);
    free(d->app);
    d->enc = calloc(np, sizeof(*d->enc));
    d->app = calloc(np, sizeof(*d->app));
    if (!rc && (!d->enc || !d->app))
        rc = REFIT_ENOMEM;
    for (size_t i = 0; !rc && i < np; i++) {
        d->enc[i] = (struct rf_delta_span){p[i].name, d->old + p[i].at, d->cur + p[i].at, p[i].n * 2, p[i].chunk_bytes};
        d->app[i] = (struct rf_delta_span){p[i].name, d->rcv + p[i].at, NULL, p[i].n * 2, p[i].chunk_bytes};
    }
    if (!rc)
        rc = cu(cudaMemcpy(d->old, g->old, g->n * 2, cudaMemcpyHostToDevice), "upload");
    if (!rc)
        rc = cu(cudaMemcpy(d->cur, g->old, g->n * 2, cudaMemcpyHostToDevice), "upload");
    if (!rc)
        rc = cu(cudaMemcpy(d->rcv, g->old, g->n * 2, cudaMemcpyHostToDevice), "upload");
    uint64_t len = 0;
    if (!rc)
        rc = rf_delta_cuda_encode(d->codec, d->enc, np, d->delta, d->delta_cap, d->lens, &len);
    if (!rc)
        rc = rf_delta_cuda_sync(d->codec);
    if (!rc)
        rc = rf_delta_cuda_apply(d->codec, d->app, np, d->delta, len, d->lens);
    if (!rc)
        rc = rf_delta_cuda_sync(d->codec);
    if (!rc && len)
        rc = refit_error_set(REFIT_EIO, "bench delta: GPU: %llu delta bytes between equal versions",
                             (unsigned long long)len);
    return rc;
}

static int gpu_timed(struct bd_gpu *d, double *acc)
{
    float ms = 0;
    int rc = cu(cudaEventRecord(d->ev[1], d->stream), "event");
    if (!rc)
        rc = cu(cudaEventSynchronize(d->ev[1]), "event");
    if (!rc)
        rc = cu(cudaEventElapsedTime(&ms, d->ev[0], d->ev[1]), "event");
    *acc += ms * 1e-3;
    return rc;
}

static int gpu_pass(struct bd_gpu *d, const struct bd_piece *p, size_t np, const struct bd_group *g,
                    const struct bd_bufs *b, struct bd_step *st)
{
    (void)p;
    const size_t nb = g->n * 2;
    uint64_t len = 0, hlen = 0;
    for (size_t i = 0; i < np; i++)
        hlen += b->piece_len[i];
    int rc = cu(cudaMemcpy(d->cur, g->cur, nb, cudaMemcpyHostToDevice), "upload");
    if (!rc && !(rc = cu(cudaEventRecord(d->ev[0], d->stream), "event")))
        rc = cu(cudaMemcpyAsync(d->copy, d->cur, nb, cudaMemcpyDeviceToDevice, d->stream), "copy");
    if (!rc)
        rc = gpu_timed(d, &st->gcpy);
    if (!rc && !(rc = cu(cudaEventRecord(d->ev[0], d->stream), "event")))
        rc = rf_delta_cuda_encode(d->codec, d->enc, np, d->delta, d->delta_cap, d->lens, &len);
    if (!rc && !(rc = gpu_timed(d, &st->genc)))
        rc = rf_delta_cuda_sync(d->codec);
    if (!rc && !(rc = cu(cudaEventRecord(d->ev[0], d->stream), "event")))
        rc = rf_delta_cuda_apply(d->codec, d->app, np, d->delta, len, d->lens);
    if (!rc && !(rc = gpu_timed(d, &st->gapp)))
        rc = rf_delta_cuda_sync(d->codec);
    /* the device's bytes against the host's, and its result */
    if (!rc && len == hlen)
        rc = cu(cudaMemcpy(d->h_delta, d->delta, len, cudaMemcpyDeviceToHost), "download");
    if (!rc)
        rc = cu(cudaMemcpy(d->h_lens, d->lens, g->n_chunks * 4, cudaMemcpyDeviceToHost), "download");
    if (!rc)
        rc = cu(cudaMemcpy(d->h_rcv, d->rcv, nb, cudaMemcpyDeviceToHost), "download");
    if (!rc) {
        st->gdiff += len != hlen || memcmp(d->h_delta, g->delta, hlen) || memcmp(d->h_lens, g->lens, g->n_chunks * 4);
        st->gdiff += memcmp(d->h_rcv, g->cur, nb) != 0;
        rc = cu(cudaMemcpy(d->old, d->cur, nb, cudaMemcpyDeviceToDevice), "copy");
    }
    return rc;
}
#else
struct bd_gpu {
    int unused;
};
static int gpu_open(struct bd_gpu *d, size_t max_elems)
{
    (void)d, (void)max_elems;
    return refit_error_set(REFIT_ENOTSUP, "--device cuda: this refit was built without CUDA (meson -Dcuda=enabled)");
}
static void gpu_close(struct bd_gpu *d)
{
    (void)d;
}
static int gpu_group(struct bd_gpu *d, const struct bd_piece *p, size_t np, const struct bd_group *g)
{
    (void)d, (void)p, (void)np, (void)g;
    return REFIT_ENOTSUP;
}
static int gpu_pass(struct bd_gpu *d, const struct bd_piece *p, size_t np, const struct bd_group *g,
                    const struct bd_bufs *b, struct bd_step *st)
{
    (void)d, (void)p, (void)np, (void)g, (void)b, (void)st;
    return REFIT_ENOTSUP;
}
#endif

/* ------------------------------------------------------------------ */
/* The run */

/* A group's first version: its pieces placed, initialised, warmed up by
 * o->warmup unpublished Adam steps and published into g->old. */
void bd_group_start(const struct bd_opts *o, struct bd_piece *p, size_t np, struct bd_group *g)
{
    bd_group_place(p, np, g);
    for (size_t i = 0; i < np; i++)
        bd_init_piece(o, &p[i], g->w + p[i].at);
    for (int s = 1; s <= o->warmup; s++)
        for (size_t i = 0; i < np; i++)
            bd_adam_piece(o, &p[i], s, g->w + p[i].at, g->m + p[i].at, g->v + p[i].at);
    bd_publish(g->w, g->old, g->n);
}

/* All steps of one group. */
static int run_group(const struct bd_opts *o, struct bd_piece *p, size_t np, struct bd_group *g, struct bd_bufs *b,
                     struct bd_gpu *gpu, struct bd_step *steps)
{
    int rc = 0;
    bd_group_start(o, p, np, g);
    memcpy(g->rcv, g->old, g->n * 2);
    if (o->cuda)
        rc = gpu_group(gpu, p, np, g);
    for (int s = 1; !rc && s <= o->steps; s++) {
        for (size_t i = 0; i < np; i++)
            bd_adam_piece(o, &p[i], o->warmup + s, g->w + p[i].at, g->m + p[i].at, g->v + p[i].at);
        bd_publish(g->w, g->cur, g->n);
        rc = host_pass(o, p, np, g, b, &steps[s - 1]);
        if (!rc && o->cuda)
            rc = gpu_pass(gpu, p, np, g, b, &steps[s - 1]);
        uint16_t *t = g->old;
        g->old = g->cur;
        g->cur = t;
    }
    return rc;
}

static double gbs(uint64_t bytes, double s)
{
    return s > 0 ? (double)bytes / s / 1e9 : 0;
}

static void print_steps(const struct bd_opts *o, const struct bd_step *st)
{
    printf("\n%4s %8s %10s %9s %7s | %9s %7s | %9s %7s | %9s %7s | %6s %6s | %s\n", "step", "changed", "delta MB",
           "full MB", "ratio", "encode ms", "GB/s", "apply ms", "GB/s", "memcpy ms", "GB/s", "enc/cp", "app/cp", "exact");
    for (int s = 0; s < o->steps; s++) {
        const struct bd_step *x = &st[s];
        printf("%4d %7.3f%% %10.2f %9.1f %7.4f | %9.1f %7.2f | %9.1f %7.2f | %9.1f %7.2f | %6.2f %6.2f | %s\n",
               o->warmup + s + 1, 100.0 * (double)x->changed / (double)(x->units ? x->units : 1),
               (double)x->delta / 1e6, (double)x->full / 1e6, (double)x->delta / (double)(x->full ? x->full : 1),
               x->enc * 1e3, gbs(x->full, x->enc), x->app * 1e3, gbs(x->full, x->app), x->cpy * 1e3,
               gbs(x->full, x->cpy), x->cpy / x->enc, x->cpy / x->app, x->mismatch ? "NO" : "yes");
    }
    uint64_t segs[4] = {0};
    for (int s = 0; s < o->steps; s++)
        for (int k = 0; k < 4; k++)
            segs[k] += st[s].segs[k];
    printf("segments: %llu SAME, %llu SPARSE, %llu BITMAP, %llu RAW (64 KiB each at most)\n",
           (unsigned long long)segs[0], (unsigned long long)segs[2], (unsigned long long)segs[3],
           (unsigned long long)segs[1]);
    if (!o->cuda)
        return;
    printf("\nGPU (CUDA events; the same bytes as the host's delta):\n%4s | %9s %8s | %9s %8s | %9s %8s | %6s %6s | %s\n",
           "step", "encode ms", "GB/s", "apply ms", "GB/s", "d2d ms", "GB/s", "enc/cp", "app/cp", "same bytes");
    for (int s = 0; s < o->steps; s++) {
        const struct bd_step *x = &st[s];
        printf("%4d | %9.3f %8.1f | %9.3f %8.1f | %9.3f %8.1f | %6.2f %6.2f | %s\n", o->warmup + s + 1, x->genc * 1e3,
               gbs(x->full, x->genc), x->gapp * 1e3, gbs(x->full, x->gapp), x->gcpy * 1e3, gbs(x->full, x->gcpy),
               x->gcpy / x->genc, x->gcpy / x->gapp, x->gdiff ? "NO" : "yes");
    }
}


/* ------------------------------------------------------------------ */
/* --sweep: the codec alone at fixed change densities */

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int sweep(const struct bd_opts *o)
{
    enum { REPS = 7 };
    static const double dens[] = {0, 1e-3, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0};
    const size_t n = o->group_bytes, chunk = 65536, nc = (n + chunk - 1) / chunk, fl = (size_t)96 << 20;
    int rc = 0;
    uint8_t *a = xcalloc(n, 1, &rc), *b = xcalloc(n, 1, &rc), *r = xcalloc(n, 1, &rc), *cp = xcalloc(n, 1, &rc);
    uint8_t *d = xcalloc(rf_delta_tensor_bound(n, chunk), 1, &rc), *f = xcalloc(fl, 1, &rc);
    uint32_t *lens = xcalloc(nc, 4, &rc);
    struct bd_piece pc = {"sweep", 0, 0, 0, n / 2, chunk, 0};
    if (!rc) {
        float *w = (float *)cp; /* the demo's weights, through the copy buffer */
        for (size_t k = 0; k < n / 2; k += n / 8) {
            pc.e0 = k;
            pc.n = n / 2 - k < n / 8 ? n / 2 - k : n / 8;
            bd_init_piece(o, &pc, w);
            bd_publish(w, (uint16_t *)a + k, pc.n);
        }
        memset(cp, 0, n);
        memset(d, 0, rf_delta_tensor_bound(n, chunk));
        printf("refit bench delta --sweep: %.1f MB of bf16, chunks of 64 KiB, 1 thread, %s scan, median of %d, "
               "last level cache flushed before every pass\n%8s %8s | %8s %8s %8s | %6s %6s\n", (double)n / 1e6,
               rf_delta_impl_name(o->impl == RF_DELTA_IMPL_AUTO ? rf_delta_impl_best() : o->impl), REPS, "changed",
               "ratio", "enc GB/s", "app GB/s", "cpy GB/s", "enc/cp", "app/cp");
    }
    uint64_t s = o->seed | 1;
    for (size_t di = 0; !rc && di < sizeof(dens) / sizeof(dens[0]); di++) {
        memcpy(b, a, n);
        uint64_t thr = (uint64_t)(dens[di] * 18446744073709551615.0);
        for (size_t i = 0; i < n / 2; i++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            if (s < thr || dens[di] >= 1.0)
                ((uint16_t *)b)[i] += (s & 1) ? 1 : 0xffff;
        }
        double t[3][REPS];
        size_t len = 0;
        for (int k = 0; k < REPS && !rc; k++) {
            memcpy(r, a, n);
            flush_llc(f, fl);
            double t0 = cli_now();
            memcpy(cp, b, n);
            t[2][k] = cli_now() - t0;
            flush_llc(f, fl);
            t0 = cli_now();
            rc = rf_delta_encode_tensor(a, b, n, chunk, d, rf_delta_tensor_bound(n, chunk), lens, &len, o->impl, NULL);
            t[0][k] = cli_now() - t0;
            flush_llc(f, fl);
            t0 = cli_now();
            if (!rc)
                rc = rf_delta_apply_tensor(d, len, lens, n, chunk, r, "sweep");
            t[1][k] = cli_now() - t0;
            if (!rc && memcmp(r, b, n))
                rc = refit_error_set(REFIT_EIO, "bench delta --sweep: the applied delta differs");
        }
        for (int k = 0; !rc && k < 3; k++)
            qsort(t[k], REPS, sizeof(double), cmp_d);
        if (!rc)
            printf("%7.2f%% %8.4f | %8.2f %8.2f %8.2f | %6.2f %6.2f\n", 100 * dens[di], (double)len / (double)n,
                   gbs(n, t[0][REPS / 2]), gbs(n, t[1][REPS / 2]), gbs(n, t[2][REPS / 2]),
                   t[2][REPS / 2] / t[0][REPS / 2], t[2][REPS / 2] / t[1][REPS / 2]);
    }
    free(a), free(b), free(r), free(cp), free(d), free(f), free(lens);
    return rc;
}

int bench_delta(int argc, char **argv)
{
    struct bd_opts o = {.lr = 1e-6, .steps = 5, .layers = 28, .vocab = 151936, .group_bytes = (size_t)64 << 20,
                        .seed = 0x9e3779b97f4a7c15ull, .impl = RF_DELTA_IMPL_AUTO};
    int rc = parse(&o, argc, argv);
    if (rc)
        return rc > 0 ? 0 : cli_fail("bench delta", rc);
    if (o.sweep)
        return (rc = sweep(&o)) ? cli_fail("bench delta", rc) : 0;
    if (o.fp8 && !o.engine)
        return cli_fail("bench delta", refit_error_set(REFIT_EINVAL, "--fp8 goes with --engine"));
    if (o.engine && o.cuda)
        return cli_fail("bench delta", refit_error_set(REFIT_EINVAL, "--engine runs on the host (no --device cuda)"));
    if (o.engine)
        return (rc = bench_delta_engine(&o)) ? cli_fail("bench delta --engine", rc) : 0;
    struct bd_model md = {0};
    struct bd_piece *p = NULL;
    size_t np = 0;
    uint64_t elems = 0;
    struct bd_step *steps = calloc((size_t)o.steps, sizeof(*steps));
    struct bd_bufs b = {0};
    struct bd_gpu gpu;
    memset(&gpu, 0, sizeof(gpu));
    int gpu_on = 0;
    rc = steps ? bd_model_pieces(&o, &md, &p, &np, &elems) : REFIT_ENOMEM;
    size_t *cut = NULL, ng = 0, max_elems = 0;
    uint64_t max_delta = 0, max_chunks = 0;
    if (!rc)
        rc = bd_groups(&o, p, np, &cut, &ng, &max_elems, &max_delta, &max_chunks);
    struct bd_group g = {0};
    if (!rc)
        rc = bd_group_alloc(&g, max_elems, max_delta, max_chunks);
    b.flush_n = (size_t)96 << 20;
    b.flush = xcalloc(b.flush_n, 1, &rc);
    b.copy = xcalloc(max_elems, 2, &rc);
    b.piece_len = xcalloc(np, sizeof(uint64_t), &rc);
    if (!rc)
        memset(b.copy, 1, max_elems * 2); /* faulted in before the timed copies */
    if (!rc && o.cuda && !(rc = gpu_open(&gpu, max_elems)))
        gpu_on = 1;
    if (!rc) {
        printf("refit bench delta: Qwen3-0.6B-shaped (%d layers, vocab %d), trainer tensors at TP1: %zu tensors, "
               "%.3f B parameters, %.3f GB bf16\n", o.layers, o.vocab, refit_layout_count(md.lay), (double)elems / 1e9,
               (double)elems * 2 / 1e9);
        printf("  Adam (beta 0.9/0.999, eps 1e-8, wd %g) at lr %g from %s; fp32 master, bf16 published (RNE)\n",
               o.wd, o.lr, o.warmup ? "a warm state" : "a fresh state (step 1: lr x sign(g))");
        printf("  host: 1 thread, %s scan, last level cache flushed before every pass; every delta applied and "
               "compared\n", rf_delta_impl_name(o.impl == RF_DELTA_IMPL_AUTO ? rf_delta_impl_best() : o.impl));
        fflush(stdout);
    }
    for (size_t k = 0; !rc && k < ng; k++)
        rc = run_group(&o, p + cut[k], cut[k + 1] - cut[k], &g, &b, &gpu, steps);
    free(cut);
    bd_group_free(&g);
    if (!rc)
        print_steps(&o, steps);
    int bad = 0;
    for (int s = 0; !rc && s < o.steps; s++)
        bad |= steps[s].mismatch || steps[s].gdiff;
    if (gpu_on)
        gpu_close(&gpu);
    free(b.flush);
    free(b.copy);
    free(b.piece_len);
    free(steps);
    free(p);
    bd_model_close(&md);
    if (rc)
        return cli_fail("bench delta", rc);
    if (bad)
        fprintf(stderr, "refit bench delta: a delta did not reproduce the new version exactly\n");
    return bad;
}
