/* layout_trainer.c — trainer layouts (conversion.md section 2): a Megatron
 * rank (tensor, expert and pipeline parallelism, virtual stages) and an
 * FSDP rank (dim-0 chunks as torch.chunk), and a trainer rank by its
 * struct refit_parallel. */
#include <fnmatch.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layout_int.h"
#include "refit/refit.h"
#include "refit/status.h"

/* ------------------------------------------------------------------ */
/* Megatron layouts (section 2) */

struct mctx {
    const refit_model_t *m;
    const struct refit_megatron_rank *r;
    const struct refit_convert_opts *skip;
    refit_layout_t *lay;
    int pp, vp, pp_rank;
    int64_t *start;      /* first layer of each chunk; start[pp*vp] = L */
    int64_t local;       /* the instance's layer number in its chunk (MTP: its MTP index) */
    int chunk;           /* the instance's chunk */
    const struct refit_mtp_naming *mtp; /* the trainer's names of MTP layers */
};

/* linear_qkv rows [a, b) of the global tensor interleaved per query group:
 * group g holds its n query heads, then its key head, then its value head. */
static int qkv_pieces(struct mctx *c, const struct refit_model_entry *e, struct part *parts, int64_t a,
                      int64_t b, int64_t cols)
{
    const struct rf_entry_val *v = rf_entry_val(c->m, e);
    int64_t d = v->args[2], n = v->args[0] / v->args[1], grp = (n + 2) * d;
    uint32_t si[3];
    for (int i = 0; i < 3; i++) {
        int rc = rf_lay_src_of(c->lay, &parts[i], &si[i]);
        if (rc)
            return rc;
    }
    for (int64_t x = a; x < b;) {
        int64_t g = x / grp, off = x % grp, j = off / d, t = off % d;
        int64_t len = d - t < b - x ? d - t : b - x;
        int which = j < n ? 0 : j == n ? 1 : 2;
        int64_t row = j < n ? (g * n + j) * d + t : g * d + t;
        int rc = rf_lay_add_piece(c->lay, si[which], row, 0, 0, x - a, 0, len, cols);
        if (rc)
            return rc;
        x += len;
    }
    return 0;
}

/* A trainer name in this instance's chunk: the local layer number (an MTP
 * layer's decoder block under the MTP prefix), and "model<v>." in front
 * with virtual stages. */
static char *chunk_name(const struct mctx *c, const struct refit_model_entry *e, int64_t layer, int64_t local,
                        int64_t k)
{
    char *n = rf_mtp_rename(c->m, c->mtp, e, layer, local, rf_model_name(e->megatron, local, k));
    if (!n || c->vp <= 1)
        return n;
    size_t len = strlen(n) + 32;
    char *p = malloc(len);
    if (p)
        snprintf(p, len, "model%d.%s", c->chunk / c->pp, n);
    free(n);
    return p;
}

static int megatron_one(struct mctx *c, const struct refit_model_entry *e, int64_t layer, int64_t k,
                        int64_t eid)
{
    const struct refit_megatron_rank *r = c->r;
    bool expert = eid >= 0;
    int tp = expert ? r->etp : r->tp, tr = expert ? r->etp_rank : r->tp_rank;
    int np = rf_lay_n_parts(c->m, e), rc = 0;
    struct part parts[3] = {{0}};
    for (int i = 0; i < np && !rc; i++)
        rc = rf_lay_part_of(c->m, e, i, layer, eid, &parts[i]);
    char *name = rc ? NULL : chunk_name(c, e, layer, layer < 0 ? -1 : c->local, k);
    if (!rc && !name)
        rc = REFIT_ENOMEM;
    if (!rc && rf_lay_skip_name(c->skip, parts[0].name))
        goto out;
    int64_t cols = parts[0].cols;
    int nd = parts[0].ndim;
    uint32_t si;
    switch (rc ? 0 : e->role) {
    case 0:
        break;
    case REFIT_ROLE_REPLICATED:
        rc = rf_lay_begin_tensor(c->lay, name, e, layer, eid, nd, parts[0].rows, nd == 2 ? cols : 0, 0);
        name = NULL;
        if (!rc)
            rc = rf_lay_src_of(c->lay, &parts[0], &si);
        if (!rc)
            rc = rf_lay_add_piece(c->lay, si, 0, 0, 0, 0, 0, parts[0].rows, cols);
        break;
    case REFIT_ROLE_VOCAB:
    case REFIT_ROLE_COLUMN: {
        int64_t V = parts[0].rows;
        int64_t div = r->vocab_divisible_by > 0 ? r->vocab_divisible_by : 128;
        int64_t Vp = e->role == REFIT_ROLE_VOCAB ? rf_lay_round_up(V, div * tp) : V;
        int64_t unit = e->role == REFIT_ROLE_COLUMN ? rf_entry_val(c->m, e)->args[0] : 0;
        rc = rf_lay_divides_units("rows", Vp, unit, tp, name);
        if (rc)
            break;
        int64_t per = Vp / tp, a = tr * per, b = a + per < V ? a + per : V;
        rc = rf_lay_begin_tensor(c->lay, name, e, layer, eid, nd, per, nd == 2 ? cols : 0, 0);
        name = NULL;
        if (!rc)
            rc = rf_lay_src_of(c->lay, &parts[0], &si);
        if (!rc && b > a)
            rc = rf_lay_add_piece(c->lay, si, a, 0, 0, 0, 0, b - a, cols);
        break;
    }
    case REFIT_ROLE_QKV_COLUMN: {
        const struct rf_entry_val *v = rf_entry_val(c->m, e);
        int64_t heads = v->args[0], groups = v->args[1];
        if (groups <= 0 || heads % groups || heads % tp || (groups % tp && tp % groups)) {
            rc = refit_error_set(REFIT_EINVAL,
                                 "%s: %lld heads / %lld query groups cannot be split over tp %d", name,
                                 (long long)heads, (long long)groups, tp);
            break;
        }
        int64_t R = parts[0].rows + parts[1].rows + parts[2].rows, per = R / tp;
        rc = rf_lay_begin_tensor(c->lay, name, e, layer, eid, nd, per, nd == 2 ? cols : 0, 0);
        name = NULL;
        if (!rc)
            rc = qkv_pieces(c, e, parts, tr * per, (tr + 1) * per, cols);
        break;
    }
    case REFIT_ROLE_GATED_COLUMN:
    case REFIT_ROLE_EXPERT_COLUMN: {
        rc = rf_lay_divides("rows", parts[0].rows, tp, name);
        if (rc)
            break;
        int64_t per = parts[0].rows / tp;
        rc = rf_lay_begin_tensor(c->lay, name, e, layer, eid, nd, 2 * per, nd == 2 ? cols : 0, 0);
        name = NULL;
        for (int i = 0; i < 2 && !rc; i++) {
            rc = rf_lay_src_of(c->lay, &parts[i], &si);
            if (!rc)
                rc = rf_lay_add_piece(c->lay, si, tr * per, 0, 0, i * per, 0, per, cols);
        }
        break;
    }
    case REFIT_ROLE_ROW:
    case REFIT_ROLE_EXPERT_ROW: {
        rc = rf_lay_divides_units("input columns", cols, e->role == REFIT_ROLE_ROW ? rf_entry_val(c->m, e)->args[0] : 0,
                           tp, name);
        if (rc)
            break;
        int64_t per = cols / tp;
        rc = rf_lay_begin_tensor(c->lay, name, e, layer, eid, 2, parts[0].rows, per, 0);
        name = NULL;
        if (!rc)
            rc = rf_lay_src_of(c->lay, &parts[0], &si);
        if (!rc)
            rc = rf_lay_add_piece(c->lay, si, 0, tr * per, 0, 0, 0, parts[0].rows, per);
        break;
    }
    default:
        rc = refit_error_set(REFIT_EINVAL, "%s: unknown role %d", name, (int)e->role);
    }
out:
    free(name);
    for (int i = 0; i < 3; i++)
        free(parts[i].name);
    return rc;
}

/* Which chunk holds an instance; -1 none of this rank's.  MTP layers sit
 * on the last chunk (Megatron-Core's mtp_on_this_rank without a custom
 * pipeline layout), numbered from 0. */
static int chunk_of(struct mctx *c, const struct refit_model_entry *e, int64_t layer)
{
    int n = c->pp * c->vp, ch = 0;
    int64_t L = c->m->shape.n_layers;
    if (layer >= L) {
        if ((n - 1) % c->pp != c->pp_rank)
            return -1;
        c->local = layer - L;
        return c->chunk = n - 1;
    }
    if (e->scope == REFIT_SCOPE_GLOBAL)
        ch = 0;
    else if (e->scope == REFIT_SCOPE_FINAL)
        ch = n - 1;
    else if (e->scope == REFIT_SCOPE_TIED_COPY)
        ch = n > 1 ? n - 1 : -1;
    else
        while (ch + 1 < n && layer >= c->start[ch + 1])
            ch++;
    if (ch < 0 || ch % c->pp != c->pp_rank)
        return -1;
    c->local = layer >= 0 ? layer - c->start[ch] : -1;
    return c->chunk = ch;
}

static int megatron_instance(void *arg, const struct refit_model_entry *e, int64_t layer)
{
    struct mctx *c = arg;
    if (chunk_of(c, e, layer) < 0)
        return 0;
    if (e->role != REFIT_ROLE_EXPERT_COLUMN && e->role != REFIT_ROLE_EXPERT_ROW)
        return megatron_one(c, e, layer, -1, -1);
    int64_t E = c->m->experts;
    int rc = rf_lay_divides("experts", E, c->r->ep, e->megatron);
    if (rc)
        return rc;
    int64_t per = E / c->r->ep;
    for (int64_t k = 0; k < per && !rc; k++)
        rc = megatron_one(c, e, layer, k, c->r->ep_rank * per + k);
    return rc;
}

/* Tensors of a trainer rank, counted before building it: one allocation of
 * each array instead of a chain of reallocs (a Kimi-K2 plan builds 32 ranks
 * of 2,000+ tensors; the reallocs' copies and page faults were a third of
 * its time). */
struct mcount {
    const refit_model_t *m;
    int ep;
    size_t n, parts;
};

static int megatron_count(void *arg, const struct refit_model_entry *e, int64_t layer)
{
    struct mcount *c = arg;
    (void)layer;
    bool expert = e->role == REFIT_ROLE_EXPERT_COLUMN || e->role == REFIT_ROLE_EXPERT_ROW;
    size_t k = expert && c->ep > 0 ? (size_t)(c->m->experts / c->ep) : 1;
    c->n += k;
    c->parts += k * (size_t)rf_entry_val(c->m, e)->n_parts;
    return 0;
}

static int reserve(refit_layout_t *lay, size_t tensors, size_t parts)
{
    lay->t = rf_lay_alloc(lay, (tensors ? tensors : 1) * sizeof(*lay->t));
    lay->pieces = rf_lay_alloc(lay, (parts ? parts : 1) * sizeof(*lay->pieces));
    lay->owner = rf_lay_alloc(lay, (parts ? parts : 1) * sizeof(*lay->owner));
    lay->src = rf_lay_alloc(lay, (parts ? parts : 1) * sizeof(*lay->src));
    size_t h = 256;
    while (h < 2 * (parts + 1))
        h *= 2;
    lay->hash = rf_lay_alloc(lay, h * sizeof(*lay->hash));
    if (!lay->t || !lay->pieces || !lay->owner || !lay->src || !lay->hash)
        return REFIT_ENOMEM;
    memset(lay->hash, 0, h * sizeof(*lay->hash));
    lay->cap = tensors ? tensors : 1;
    lay->cap_pieces = parts ? parts : 1;
    lay->cap_src = parts ? parts : 1;
    lay->hash_cap = h;
    return 0;
}

/* The first layer of every chunk, from the given split or an even one. */
static int chunk_starts(const refit_model_t *m, const int *chunk_layers, int pp, int vp, int64_t **out)
{
    int64_t L = m->shape.n_layers, n = (int64_t)pp * vp;
    if (pp > 4096 || vp > 4096)
        return refit_error_set(REFIT_EINVAL, "pipeline %d x virtual %d stages for %lld layers", pp, vp,
                               (long long)L);
    if (!chunk_layers && L % n)
        return refit_error_set(REFIT_EINVAL,
                               "num_hidden_layers %lld is not divisible by pipeline parallelism %d x virtual "
                               "stages %d; give the split (layers per stage)", (long long)L, pp, vp);
    int64_t *start = calloc((size_t)n + 1, sizeof(*start));
    if (!start)
        return REFIT_ENOMEM;
    for (int64_t i = 0; i < n; i++) {
        int64_t k = chunk_layers ? chunk_layers[i] : L / n;
        if (k < 0) {
            free(start);
            return refit_error_set(REFIT_EINVAL, "pipeline chunk %lld: %lld layers", (long long)i, (long long)k);
        }
        start[i + 1] = start[i] + k;
    }
    if (start[n] != L) {
        long long got = (long long)start[n];
        free(start);
        return refit_error_set(REFIT_EINVAL, "the pipeline split gives %lld layers; the model has %lld", got,
                               (long long)L);
    }
    *out = start;
    return 0;
}

int refit_layout_megatron(const refit_model_t *m, const struct refit_megatron_rank *r,
                          const struct refit_convert_opts *skip, refit_layout_t **out)
{
    return refit_layout_megatron_pp(m, r, NULL, skip, out);
}

static int megatron_in(const refit_model_t *m, const struct refit_megatron_rank *r,
                       const struct refit_megatron_pp *pp, const struct refit_convert_opts *skip,
                       struct rf_arena *arena, refit_layout_t **out);

int refit_layout_megatron_pp(const refit_model_t *m, const struct refit_megatron_rank *r,
                             const struct refit_megatron_pp *pp, const struct refit_convert_opts *skip,
                             refit_layout_t **out)
{
    return megatron_in(m, r, pp, skip, NULL, out);
}

static int megatron_in(const refit_model_t *m, const struct refit_megatron_rank *r,
                       const struct refit_megatron_pp *pp, const struct refit_convert_opts *skip,
                       struct rf_arena *arena, refit_layout_t **out)
{
    struct refit_megatron_pp one = {1, 0, 1, NULL};
    if (!pp)
        pp = &one;
    if (!m || !r || !out)
        return refit_error_set(REFIT_EINVAL, "refit_layout_megatron: NULL argument");
    if (r->tp < 1 || r->ep < 1 || r->etp < 1 || r->tp_rank < 0 || r->tp_rank >= r->tp ||
        r->ep_rank < 0 || r->ep_rank >= r->ep || r->etp_rank < 0 || r->etp_rank >= r->etp || pp->pp < 0 ||
        pp->vp < 0 || pp->pp_rank < 0 || pp->pp_rank >= (pp->pp > 0 ? pp->pp : 1))
        return refit_error_set(REFIT_EINVAL, "trainer rank tp %d/%d ep %d/%d etp %d/%d pp %d/%d is inconsistent",
                               r->tp_rank, r->tp, r->ep_rank, r->ep, r->etp_rank, r->etp, pp->pp_rank, pp->pp);
    struct mctx c = {m, r, skip, NULL, pp->pp > 0 ? pp->pp : 1, pp->vp > 0 ? pp->vp : 1, pp->pp_rank, NULL, -1, 0,
                     rf_model_mtp_naming(m, "megatron")};
    bool mtp = rf_model_mtp_on(m, skip);
    int rc = chunk_starts(m, pp->chunk_layers, c.pp, c.vp, &c.start);
    if (rc)
        return rc;
    refit_layout_t *lay = calloc(1, sizeof(*lay));
    if (!lay) {
        free(c.start);
        return REFIT_ENOMEM;
    }
    lay->arena = arena;
    c.lay = lay;
    /* the count covers every stage: at most pp times what this one needs */
    struct mcount cnt = {m, r->ep, 0, 0};
    rc = rf_model_instances_ex(m, true, mtp, megatron_count, &cnt);
    if (!rc)
        rc = reserve(lay, cnt.n, cnt.parts);
    if (!rc)
        rc = rf_model_instances_ex(m, true, mtp, megatron_instance, &c);
    free(c.start);
    if (!rc)
        rc = rf_lay_finish(lay);
    return rf_lay_hand_out(lay, rc, out);
}

/* ------------------------------------------------------------------ */
/* FSDP layouts: HF names, every tensor split on dim 0 as torch.chunk does */

struct fctx {
    const refit_model_t *m;
    int n, rank;
    const struct refit_convert_opts *skip;
    refit_layout_t *lay;
};

static int fsdp_part(struct fctx *c, const struct refit_model_entry *e, const struct part *p, int64_t layer,
                     int64_t eid)
{
    /* torch.chunk: chunks of ceil(rows / n) rows, the last smaller, and
     * ranks past the end empty (FSDP2 / DTensor Shard(0)) */
    int64_t per = (p->rows + c->n - 1) / c->n, a = c->rank * per, b = a + per;
    if (a > p->rows)
        a = p->rows;
    if (b > p->rows)
        b = p->rows;
    char *name = strdup(p->name);
    int rc = rf_lay_begin_tensor(c->lay, name, e, layer, eid, p->ndim, b - a, p->ndim == 2 ? p->cols : 0, 0);
    uint32_t si;
    if (!rc)
        rc = rf_lay_src_of(c->lay, p, &si);
    /* an empty rank keeps a zero-row piece: it carries the source (dtype) */
    if (!rc)
        rc = rf_lay_add_piece(c->lay, si, a, 0, 0, 0, 0, b - a, p->cols);
    if (!rc)
        c->lay->t[c->lay->n - 1].pub.role = REFIT_ROLE_COLUMN;
    return rc;
}

static int fsdp_instance(void *arg, const struct refit_model_entry *e, int64_t layer)
{
    struct fctx *c = arg;
    bool expert = e->role == REFIT_ROLE_EXPERT_COLUMN || e->role == REFIT_ROLE_EXPERT_ROW;
    int64_t ne = expert ? c->m->experts : 1;
    int rc = 0;
    for (int64_t x = 0; x < ne && !rc; x++)
        for (int i = 0; i < rf_lay_n_parts(c->m, e) && !rc; i++) {
            struct part p = {0};
            rc = rf_lay_part_of(c->m, e, i, layer, expert ? x : -1, &p);
            if (!rc && !rf_lay_skip_name(c->skip, p.name))
                rc = fsdp_part(c, e, &p, layer, expert ? x : -1);
            free(p.name);
        }
    return rc;
}

int refit_layout_fsdp(const refit_model_t *m, int n, int rank, const struct refit_convert_opts *skip,
                      refit_layout_t **out)
{
    if (!m || !out)
        return refit_error_set(REFIT_EINVAL, "refit_layout_fsdp: NULL argument");
    if (n < 1 || rank < 0 || rank >= n)
        return refit_error_set(REFIT_EINVAL, "FSDP rank %d of %d", rank, n);
    refit_layout_t *lay = calloc(1, sizeof(*lay));
    if (!lay)
        return REFIT_ENOMEM;
    struct fctx c = {m, n, rank, skip, lay};
    int rc = rf_model_instances_ex(m, false, rf_model_mtp_on(m, skip), fsdp_instance, &c);
    if (!rc)
        rc = rf_lay_finish(lay);
    return rf_lay_hand_out(lay, rc, out);
}

/* ------------------------------------------------------------------ */
/* A trainer rank by its parallel position */

static int psize(int v)
{
    return v > 0 ? v : 1;
}

int refit_layout_trainer(const refit_model_t *m, const struct refit_parallel *par,
                         const struct refit_convert_opts *skip, refit_layout_t **out)
{
    return rf_layout_trainer_in(m, par, skip, NULL, out);
}

/* FSDP layouts stay malloc'ed: they are built one per source, not by the
 * thousand. */
int rf_layout_trainer_in(const refit_model_t *m, const struct refit_parallel *par,
                         const struct refit_convert_opts *skip, struct rf_arena *arena, refit_layout_t **out)
{
    if (!m || !par || !out)
        return refit_error_set(REFIT_EINVAL, "refit_layout_trainer: NULL argument");
    if (par->dp_rank < 0 || par->dp_rank >= psize(par->dp_size))
        return refit_error_set(REFIT_EINVAL, "data-parallel rank %d of %d", par->dp_rank, par->dp_size);
    if (par->layout && !strcmp(par->layout, "fsdp")) {
        if (psize(par->tp_size) > 1 || psize(par->pp_size) > 1 || psize(par->ep_size) > 1)
            return refit_error_set(REFIT_EINVAL, "an FSDP source has no tp, pp or ep (shard_rank, shard_size)");
        return refit_layout_fsdp(m, psize(par->shard_size), par->shard_rank, skip, out);
    }
    if (par->layout && strcmp(par->layout, "megatron"))
        return refit_error_set(REFIT_EINVAL, "source layout '%s': megatron or fsdp", par->layout);
    struct refit_megatron_rank r = {.tp = psize(par->tp_size), .ep = psize(par->ep_size),
                                    .etp = psize(par->etp_size), .tp_rank = par->tp_rank,
                                    .ep_rank = par->ep_rank, .etp_rank = par->etp_rank};
    struct refit_megatron_pp pp = {psize(par->pp_size), par->pp_rank, psize(par->vp_size), par->pp_layers};
    return megatron_in(m, &r, &pp, skip, arena, out);
}
