/* convert_shards.c — trainer shards (Megatron or FSDP ranks as `refit
 * shard` writes them, or a trainer publishes) reassembled into the global
 * HF tensors of a view: each rank's layout map read from its metadata, its
 * names spelled as the model's source layout says, every rectangle taken
 * once. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "convert_int.h"
#include "refit/log.h"
#include "refit/status.h"

/* ------------------------------------------------------------------ */
/* Megatron shards */

struct named {
    char *name;
    const struct refit_st_tensor *t;
};

static int named_cmp(const void *a, const void *b)
{
    return strcmp(((const struct named *)a)->name, ((const struct named *)b)->name);
}

static int meta_int(const refit_st_file_t *f, const char *path, const char *key, int *out)
{
    const char *v = refit_st_metadata(f, key);
    char *end;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || end == v || *end || x < 0 || x > 1000000)
        return refit_error_set(REFIT_EPROTO, "%s: __metadata__ '%s' missing or not a count (written by "
                                             "`refit shard`?)", path, key);
    *out = (int)x;
    return 0;
}

/* Whether this (tensor, shard coordinate) was taken already: duplicates over
 * TP (replicated tensors, experts with expert-TP 1) and over EP are read
 * once, so coverage counts stay exact. */
struct seen {
    char **keys;
    size_t n, cap;
};

static int seen_test_add(struct seen *s, const char *key, int *was)
{
    uint64_t h = 1469598103934665603ull;
    for (const char *p = key; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    if ((s->n + 1) * 2 > s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 1024;
        char **k = calloc(cap, sizeof(*k));
        if (!k)
            return REFIT_ENOMEM;
        for (size_t i = 0; i < s->cap; i++)
            if (s->keys[i]) {
                uint64_t g = 1469598103934665603ull;
                for (const char *p = s->keys[i]; *p; p++)
                    g = (g ^ (unsigned char)*p) * 1099511628211ull;
                size_t j = g & (cap - 1);
                while (k[j])
                    j = (j + 1) & (cap - 1);
                k[j] = s->keys[i];
            }
        free(s->keys);
        s->keys = k;
        s->cap = cap;
    }
    size_t j = h & (s->cap - 1);
    while (s->keys[j]) {
        if (!strcmp(s->keys[j], key)) {
            *was = 1;
            return 0;
        }
        j = (j + 1) & (s->cap - 1);
    }
    if (!(s->keys[j] = strdup(key)))
        return REFIT_ENOMEM;
    s->n++;
    *was = 0;
    return 0;
}

static void seen_free(struct seen *s)
{
    for (size_t i = 0; i < s->cap; i++)
        free(s->keys[i]);
    free(s->keys);
}

/* Copy one shard tensor's pieces back into the HF tensors.  A rectangle
 * of an HF tensor already taken from another rank (replicas over TP, EP,
 * data parallelism, a tied copy on the last pipeline stage) is skipped, so
 * coverage counts stay exact. */
static int unshard_tensor(refit_hf_view_t *v, const refit_layout_t *lay, const struct refit_layout_tensor *lt,
                          const struct refit_st_tensor *st, const char *path, struct seen *seen)
{
    size_t es = refit_dtype_size(st->dtype);
    int64_t dcols = lt->ndim == 2 ? lt->shape[1] : 1;
    for (size_t p = 0; p < lt->n_pieces; p++) {
        const struct refit_layout_piece *pc = &lt->pieces[p];
        const struct refit_layout_src *src = refit_layout_source(lay, pc->src);
        struct vt *t = rf_view_find(v, src->name);
        if (!t)
            continue; /* skipped */
        char key[1200];
        snprintf(key, sizeof(key), "%.1000s#%lld#%lld#%lld#%lld", src->name, (long long)pc->src_row,
                 (long long)pc->src_col, (long long)pc->rows, (long long)pc->cols);
        int was = 0, rc = seen_test_add(seen, key, &was);
        if (rc)
            return rc;
        if (was)
            continue;
        if (!t->owned) {
            size_t n = (size_t)t->t.shape[0] * (size_t)(t->t.ndim == 2 ? t->t.shape[1] : 1);
            t->owned = calloc(n ? n : 1, es);
            if (!t->owned)
                return REFIT_ENOMEM;
            t->t.dtype = st->dtype;
            t->t.nbytes = n * es;
            t->t.file = v->dir;
        } else if (t->t.dtype != st->dtype) {
            return refit_error_set(REFIT_EPROTO, "%s: tensor '%s' is %s but other shards of '%s' are %s",
                                   path, lt->name, refit_dtype_name(st->dtype), src->name,
                                   refit_dtype_name(t->t.dtype));
        }
        int64_t scols = t->t.ndim == 2 ? t->t.shape[1] : 1;
        for (int64_t r = 0; r < pc->rows; r++) {
            const char *from = (const char *)st->data + ((size_t)(pc->dst_row + r) * (size_t)dcols +
                                                          (size_t)pc->dst_col) * es;
            char *to = (char *)t->owned + ((size_t)(pc->src_row + r) * (size_t)scols +
                                           (size_t)pc->src_col) * es;
            memcpy(to, from, (size_t)pc->cols * es);
        }
        t->covered += (size_t)(pc->rows * pc->cols);
    }
    return 0;
}

/* An optional count in the metadata: def when absent. */
static int meta_int_opt(const refit_st_file_t *f, const char *path, const char *key, int def, int *out)
{
    if (!refit_st_metadata(f, key)) {
        *out = def;
        return 0;
    }
    return meta_int(f, path, key, out);
}

/* "3,3,2": the layers of each pipeline chunk. */
static int meta_list(const refit_st_file_t *f, const char *path, const char *key, int n, int **out)
{
    const char *v = refit_st_metadata(f, key);
    *out = NULL;
    if (!v)
        return 0;
    int *a = calloc((size_t)n + 1, sizeof(*a));
    if (!a)
        return REFIT_ENOMEM;
    int i = 0;
    for (const char *p = v; *p && i <= n; i++) {
        char *end;
        long x = strtol(p, &end, 10);
        if (end == p || x < 0 || x > 1000000 || (*end && *end != ',')) {
            free(a);
            return refit_error_set(REFIT_EPROTO, "%s: __metadata__ '%s' is not a list of counts", path, key);
        }
        a[i] = (int)x;
        p = *end ? end + 1 : end;
    }
    if (i != n) {
        free(a);
        return refit_error_set(REFIT_EPROTO, "%s: __metadata__ '%s' has %d counts; %d pipeline chunks", path, key, i,
                               n);
    }
    *out = a;
    return 0;
}

/* The source layout of a shard file, from its __metadata__: refit.layout
 * "fsdp" (refit.fsdp, refit.fsdp_rank) or "megatron" (the default). */
static int shard_layout(const refit_model_t *m, const refit_st_file_t *f, const char *path,
                        const struct refit_convert_opts *o, refit_layout_t **lay, bool *fsdp)
{
    const char *kind = refit_st_metadata(f, "refit.layout");
    *fsdp = kind && !strcmp(kind, "fsdp");
    int rc;
    if (*fsdp) {
        int n, r;
        if ((rc = meta_int(f, path, "refit.fsdp", &n)) || (rc = meta_int(f, path, "refit.fsdp_rank", &r)))
            return rc;
        return refit_layout_fsdp(m, n, r, o, lay);
    }
    if (kind && strcmp(kind, "megatron"))
        return refit_error_set(REFIT_EPROTO, "%s: unknown source layout '%s' (megatron or fsdp)", path, kind);
    struct refit_megatron_rank r = {0};
    struct refit_megatron_pp pp = {0};
    int *chunks = NULL;
    if ((rc = meta_int(f, path, "refit.tp", &r.tp)) || (rc = meta_int(f, path, "refit.ep", &r.ep)) ||
        (rc = meta_int(f, path, "refit.etp", &r.etp)) || (rc = meta_int(f, path, "refit.tp_rank", &r.tp_rank)) ||
        (rc = meta_int(f, path, "refit.ep_rank", &r.ep_rank)) ||
        (rc = meta_int(f, path, "refit.etp_rank", &r.etp_rank)) ||
        (rc = meta_int(f, path, "refit.vocab_divisible_by", &r.vocab_divisible_by)) ||
        (rc = meta_int_opt(f, path, "refit.pp", 1, &pp.pp)) ||
        (rc = meta_int_opt(f, path, "refit.pp_rank", 0, &pp.pp_rank)) ||
        (rc = meta_int_opt(f, path, "refit.vp", 1, &pp.vp)))
        return rc;
    if (pp.pp < 1 || pp.vp < 1 || pp.pp > 4096 || pp.vp > 4096)
        return refit_error_set(REFIT_EPROTO, "%s: pipeline %d x %d stages", path, pp.pp, pp.vp);
    rc = meta_list(f, path, "refit.pp_layers", pp.pp * pp.vp, &chunks);
    pp.chunk_layers = chunks;
    if (!rc)
        rc = refit_layout_megatron_pp(m, &r, &pp, o, lay);
    free(chunks);
    return rc;
}

static int unshard_rank(const refit_model_t *m, refit_hf_view_t *v, const char *path,
                        const struct refit_convert_opts *o, struct seen *seen)
{
    refit_st_file_t *f = NULL;
    int rc = refit_st_open(path, &f);
    if (rc)
        return rc;
    refit_layout_t *lay = NULL;
    bool fsdp = false;
    size_t nf = refit_st_count(f);
    struct named *names = calloc(nf ? nf : 1, sizeof(*names));
    rc = names ? shard_layout(m, f, path, o, &lay, &fsdp) : REFIT_ENOMEM;
    if (rc)
        refit_error_push(rc, "%s", path);
    for (size_t i = 0; !rc && i < nf; i++) {
        names[i].t = refit_st_at(f, i);
        names[i].name = refit_model_source_name(m, fsdp ? "fsdp" : "megatron", names[i].t->name);
        if (!names[i].name)
            rc = REFIT_ENOMEM;
        else if (!refit_layout_find(lay, names[i].name))
            refit_log(REFIT_LOG_WARN, "model", "%s: tensor '%s' is not in the %s layout; ignored", path,
                      names[i].t->name, m->plugin->name);
    }
    if (!rc)
        qsort(names, nf, sizeof(*names), named_cmp);
    for (size_t i = 0; !rc && i < refit_layout_count(lay); i++) {
        const struct refit_layout_tensor *lt = refit_layout_at(lay, i);
        struct named key = {(char *)lt->name, NULL};
        struct named *hit = bsearch(&key, names, nf, sizeof(*names), named_cmp);
        if (!hit) {
            rc = refit_error_set(REFIT_ENOENT, "%s: trainer tensor '%s' is missing", path, lt->name);
            break;
        }
        rc = rf_view_check_shape(path, hit->t->name, hit->t, lt->ndim, lt->shape);
        if (!rc)
            rc = unshard_tensor(v, lay, lt, hit->t, path, seen);
    }
    for (size_t i = 0; names && i < nf; i++)
        free(names[i].name);
    free(names);
    refit_layout_destroy(lay);
    refit_st_close(f);
    return rc;
}

int refit_hf_view_open_megatron(const refit_model_t *m, const char *dir,
                                const struct refit_convert_opts *o, refit_hf_view_t **out)
{
    return refit_hf_view_open_shards(m, dir, o, out);
}

int refit_hf_view_open_shards(const refit_model_t *m, const char *dir, const struct refit_convert_opts *o,
                              refit_hf_view_t **out)
{
    if (!m || !dir || !out)
        return refit_error_set(REFIT_EINVAL, "refit_hf_view_open_shards: NULL argument");
    refit_hf_view_t *v;
    int rc = rf_dir_ok(dir);
    if (!rc)
        rc = rf_view_create(m, dir, o, &v);
    if (rc)
        return rc;
    struct seen seen = {0};
    int nranks = 0;
    for (;; nranks++) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/rank%d.safetensors", dir, nranks);
        struct stat st;
        if (stat(path, &st))
            break;
        rc = unshard_rank(m, v, path, o, &seen);
        if (rc)
            break;
    }
    if (!rc && !nranks)
        rc = refit_error_set(REFIT_ENOENT, "%s: no trainer shards (rank0.safetensors ...)", dir);
    for (size_t i = 0; !rc && i < v->n; i++) {
        struct vt *t = &v->t[i];
        size_t want = (size_t)t->t.shape[0] * (size_t)(t->t.ndim == 2 ? t->t.shape[1] : 1);
        if (t->covered != want)
            rc = refit_error_set(REFIT_ENOENT,
                                 "%s: HF tensor '%s': the %d shards hold %zu of its %zu elements "
                                 "(a rank file or tensor is missing)",
                                 dir, t->t.name, nranks, t->covered, want);
        t->t.data = t->owned;
    }
    seen_free(&seen);
    if (rc) {
        refit_hf_view_close(v);
        return rc;
    }
    *out = v;
    return 0;
}
