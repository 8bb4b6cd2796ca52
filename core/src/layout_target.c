/* layout_target.c — inference layouts (conversion.md section 3): the
 * slices of an engine rank in a target layout the plugin declares, with its
 * fusions (concatenation, expert stacks), vocabulary padding and block-FP8
 * partition rule. */
#include <fnmatch.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layout_int.h"
#include "refit/refit.h"
#include "refit/status.h"

/* ------------------------------------------------------------------ */
/* Inference layouts (section 3) */

struct tctx {
    const refit_model_t *m;
    const struct refit_convert_opts *o;
    const struct refit_target_layout *t;
    refit_layout_t *lay;
    int tp, rank, ep;
    const struct refit_model_dst **dsel; /* each entry's destination here */
    const struct refit_mtp_naming *mtp;  /* this target's names of MTP layers */
};

/* How this target shards an entry: its destination's role, else the entry's. */
static enum refit_model_role trole(const struct tctx *c, const struct refit_model_entry *e)
{
    const struct refit_model_dst *d = c->dsel[e - c->m->entries];
    return d && d->role ? d->role : e->role;
}

/* A destination name (taken), renamed when it is a decoder block tensor of
 * an MTP layer ({L} is the HF layer number in target names). */
static char *dst_name(const struct tctx *c, const struct refit_model_entry *e, int64_t layer, char *name)
{
    return rf_target_rename(c->m, c->t, rf_mtp_rename(c->m, c->mtp, e, layer, layer, name));
}

/* Rows of a part held by inference rank r: [*start, *start + *n). */
static int infer_rows(const struct tctx *c, const struct refit_model_entry *e, int part,
                      const struct part *p, const char *dname, int64_t *start, int64_t *n)
{
    const struct rf_entry_val *v = rf_entry_val(c->m, e);
    int64_t heads = v->args[0], groups = v->args[1], hd = v->args[2];
    int tp = c->tp, r = c->rank;
    enum refit_model_role role = trole(c, e);
    switch (role) {
    case REFIT_ROLE_QKV_COLUMN:
        if (part == 0) {
            int rc = rf_lay_divides("num_attention_heads", heads, tp, dname);
            if (rc)
                return rc;
            *n = heads / tp * hd;
            *start = r * *n;
        } else if (tp >= groups) {
            int rc = rf_lay_divides("tensor parallelism", tp, groups, dname);
            if (rc)
                return rc;
            /* one KV head per rank, replicated over tp/G ranks */
            *n = hd;
            *start = (r / (tp / groups)) * hd;
        } else {
            int rc = rf_lay_divides("num_key_value_heads", groups, tp, dname);
            if (rc)
                return rc;
            *n = groups / tp * hd;
            *start = r * *n;
        }
        return 0;
    case REFIT_ROLE_GATED_COLUMN:
    case REFIT_ROLE_COLUMN: {
        int rc = rf_lay_divides_units("rows", p->rows, role == REFIT_ROLE_COLUMN ? heads : 0, tp, dname);
        if (rc)
            return rc;
        *n = p->rows / tp;
        *start = r * *n;
        return 0;
    }
    case REFIT_ROLE_EXPERT_COLUMN: {
        int tpm = c->ep > 1 ? 1 : tp, rm = c->ep > 1 ? 0 : r;
        int rc = rf_lay_divides("moe_intermediate_size", p->rows, tpm, dname);
        if (rc)
            return rc;
        *n = p->rows / tpm;
        *start = rm * *n;
        return 0;
    }
    default:
        *start = 0;
        *n = p->rows;
        return 0;
    }
}

/* Columns of a part held by inference rank r. */
static int infer_cols(const struct tctx *c, const struct refit_model_entry *e, const struct part *p,
                      const char *dname, int64_t *start, int64_t *n, bool *split)
{
    enum refit_model_role role = trole(c, e);
    int tpc = role == REFIT_ROLE_ROW ? c->tp : role == REFIT_ROLE_EXPERT_ROW ? (c->ep > 1 ? 1 : c->tp) : 1;
    int64_t unit = role == REFIT_ROLE_ROW ? rf_entry_val(c->m, e)->args[0] : 0;
    int rc = rf_lay_divides_units("input columns", p->cols, unit, tpc, dname);
    if (rc)
        return rc;
    int r = tpc > 1 ? c->rank : 0;
    *n = p->cols / tpc;
    *start = r * *n;
    *split = tpc > 1;
    return 0;
}

static int vocab_target(struct tctx *c, const struct refit_model_entry *e, struct part *p)
{
    int64_t V = p->rows;
    /* the engine pads the vocabulary (vLLM to a multiple of 64); hf keeps it */
    int64_t Vp = c->t->vocab_multiple > 1 ? rf_lay_round_up(V, c->t->vocab_multiple) : V;
    const struct refit_model_dst *d = c->dsel[e - c->m->entries];
    const char *pat = d && d->name ? d->name : e->hf[0];
    char *name = rf_target_rename(c->m, c->t, rf_model_name(pat, -1, -1));
    int rc = rf_lay_divides("padded vocabulary", Vp, c->tp, name ? name : pat);
    if (!rc)
        rc = rf_lay_begin_tensor(c->lay, name, e, -1, -1, 2, Vp / c->tp, p->cols, 0);
    else
        free(name);
    if (rc)
        return rc;
    struct ltensor *t = &c->lay->t[c->lay->n - 1];
    t->rows_split = c->tp > 1;
    int64_t per = Vp / c->tp, a = c->rank * per, b = a + per < V ? a + per : V;
    uint32_t si;
    rc = rf_lay_src_of(c->lay, p, &si);
    if (!rc && b > a)
        rc = rf_lay_add_piece(c->lay, si, a, 0, 0, 0, 0, b - a, p->cols);
    return rc;
}

/* One destination tensor made of parts[0..np) (concatenated on rows) for one
 * expert slot: appends the pieces at dst_index `slot`, from destination row
 * dr and as the tensor's parts [base, base + np). */
static int fill_parts_at(struct tctx *c, const struct refit_model_entry *e, struct part *parts, int first,
                         int np, int64_t slot, const char *dname, struct ltensor *t, int64_t dr, int base)
{
    struct rf_lay_fparts *f = rf_lay_fparts_get(c->lay, t);
    if (!f)
        return REFIT_ENOMEM;
    f->n = base + np;
    for (int i = 0; i < np; i++) {
        struct part *p = &parts[first + i];
        int64_t r0, nr, c0, nc;
        bool csplit = false;
        int rc = infer_rows(c, e, first + i, p, dname, &r0, &nr);
        if (!rc)
            rc = infer_cols(c, e, p, dname, &c0, &nc, &csplit);
        uint32_t si;
        if (!rc)
            rc = rf_lay_src_of(c->lay, p, &si);
        if (!rc)
            rc = rf_lay_add_piece(c->lay, si, r0, c0, slot, dr, 0, nr, nc);
        if (rc)
            return rc;
        f->name[base + i] = e->hf[first + i];
        f->rows[base + i] = nr;
        t->rows_split |= nr != p->rows;
        t->cols_split |= csplit;
        dr += nr;
    }
    t->merged = base + np > 1;
    return 0;
}

/* One destination tensor made of parts[0..np) (concatenated on rows) for one
 * expert slot: appends the pieces at dst_index `slot`. */
static int fill_parts(struct tctx *c, const struct refit_model_entry *e, struct part *parts,
                      int first, int np, int64_t slot, const char *dname, struct ltensor *t)
{
    return fill_parts_at(c, e, parts, first, np, slot, dname, t, 0, 0);
}

/* Rows (summed over parts [first, first+np)) and columns of a destination. */
static int dst_extent(const struct tctx *c, const struct refit_model_entry *e, const struct part *parts,
                      int first, int np, const char *dname, int64_t *rows, int64_t *cols)
{
    int64_t r0, nr, c0;
    bool cs;
    *rows = 0;
    for (int i = first; i < first + np; i++) {
        int rc = infer_rows(c, e, i, &parts[i], dname, &r0, &nr);
        if (rc)
            return rc;
        *rows += nr;
    }
    return infer_cols(c, e, &parts[first], dname, &c0, cols, &cs);
}

/* One destination per HF part, named after it (REFIT_FUSE_NONE). */
static int target_unfused(struct tctx *c, const struct refit_model_entry *e, struct part *parts, int np,
                          int64_t layer, int64_t eid)
{
    const struct refit_model_dst *d = c->dsel[e - c->m->entries];
    for (int i = 0; i < np; i++) {
        if (rf_lay_skip_name(c->o, parts[i].name))
            continue;
        char *dn = dst_name(c, e, layer, d && d->name ? rf_model_name(d->name, layer, eid) : strdup(parts[i].name));
        int64_t rows, cols;
        int rc = dn ? dst_extent(c, e, parts, i, 1, dn, &rows, &cols) : REFIT_ENOMEM;
        if (rc) {
            free(dn);
            return rc;
        }
        rc = rf_lay_begin_tensor(c->lay, dn, e, layer, eid, parts[i].ndim, rows, parts[i].ndim == 2 ? cols : 0, 0);
        if (rc)
            return rc;
        struct ltensor *t = &c->lay->t[c->lay->n - 1];
        rc = fill_parts(c, e, parts, i, 1, 0, t->pub.name, t);
        if (rc)
            return rc;
    }
    return 0;
}

/* An earlier tensor of this layer named dn (entries fuse into it by
 * name), or -1. */
static ptrdiff_t layer_find(const refit_layout_t *lay, int64_t layer, const char *dn)
{
    for (size_t i = lay->n; i-- > 0 && lay->t[i].pub.layer == layer;)
        if (!strcmp(lay->t[i].pub.name, dn))
            return (ptrdiff_t)i;
    return -1;
}

/* The parts' rank slices concatenated on rows (REFIT_FUSE_CONCAT).  When an
 * earlier entry of this layer made a tensor of that name, the parts are
 * appended to it, below its rows. */
static int target_concat(struct tctx *c, const struct refit_model_entry *e, struct part *parts, int np,
                         int64_t layer, char *dn)
{
    int64_t rows, cols;
    int rc = dst_extent(c, e, parts, 0, np, dn, &rows, &cols);
    ptrdiff_t at = rc ? -1 : layer_find(c->lay, layer, dn);
    if (at >= 0) {
        struct ltensor *t = &c->lay->t[at];
        const struct rf_lay_fparts *f = rf_lay_fparts_of(c->lay, t);
        int had = f ? f->n : 0;
        if (t->pub.ndim != parts[0].ndim || (t->pub.ndim == 2 && t->pub.shape[1] != cols) ||
            had + np > RF_MAX_PARTS)
            rc = refit_error_set(REFIT_EINVAL, "'%s': the entries fused into it differ in columns "
                                               "or have more than %d parts", dn, RF_MAX_PARTS);
        free(dn);
        if (rc)
            return rc;
        int64_t r0 = t->pub.shape[0];
        t->pub.shape[0] += rows;
        c->lay->cur = (size_t)at;
        rc = fill_parts_at(c, e, parts, 0, np, 0, t->pub.name, t, r0, had);
        c->lay->cur = c->lay->n - 1;
        return rc;
    }
    if (rc) {
        free(dn);
        return rc;
    }
    rc = rf_lay_begin_tensor(c->lay, dn, e, layer, -1, parts[0].ndim, rows, parts[0].ndim == 2 ? cols : 0, 0);
    if (rc)
        return rc;
    struct ltensor *t = &c->lay->t[c->lay->n - 1];
    return fill_parts(c, e, parts, 0, np, 0, t->pub.name, t);
}

/* fused-MoE FP8 (REFIT_FP8_GRID_STACKS) needs the intermediate partition on
 * the grid whether or not it is split: gate/up are merged in w13, and w2's
 * input is that partition. */
static void stack_kind(struct ltensor *t, const struct refit_model_entry *e)
{
    if (e->role == REFIT_ROLE_EXPERT_ROW || e->role == REFIT_ROLE_ROW)
        t->stack_row = true;
    else
        t->stack_col = true;
}

/* Slot `slot` of an expert stack [E_local, rows, cols] (REFIT_FUSE_STACK);
 * the first slot creates the tensor (takes dn), later ones free dn. */
static int target_stack(struct tctx *c, const struct refit_model_entry *e, struct part *parts, int np,
                        int64_t layer, int64_t slot, int64_t n_slots, char *dn)
{
    int rc = 0;
    if (slot == 0) {
        int64_t rows, cols;
        rc = dst_extent(c, e, parts, 0, np, dn, &rows, &cols);
        if (!rc) {
            rc = rf_lay_begin_tensor(c->lay, dn, e, layer, -1, 3, n_slots, rows, cols);
            dn = NULL;
        }
    }
    free(dn);
    if (rc)
        return rc;
    struct ltensor *t = &c->lay->t[c->lay->n - 1];
    rc = fill_parts(c, e, parts, 0, np, slot, t->pub.name, t);
    stack_kind(t, e);
    return rc;
}

/* A non-expert entry into an expert stack of the layer as its next slot
 * (SGLang fuses the shared expert as expert E).  Its rank slice must have
 * the shape of the stack's slots. */
static int target_stack_append(struct tctx *c, const struct refit_model_entry *e, struct part *parts, int np,
                               int64_t layer, char *dn)
{
    int64_t rows, cols;
    int rc = dst_extent(c, e, parts, 0, np, dn, &rows, &cols);
    ptrdiff_t at = rc ? -1 : layer_find(c->lay, layer, dn);
    struct ltensor *t = at >= 0 ? &c->lay->t[at] : NULL;
    if (!rc && (!t || t->pub.ndim != 3 || t->pub.shape[1] != rows || t->pub.shape[2] != cols))
        rc = refit_error_set(REFIT_EINVAL, "'%s': %s joins no expert stack of its shape in this layer", dn,
                             e->megatron);
    free(dn);
    if (rc)
        return rc;
    int64_t slot = t->pub.shape[0]++;
    c->lay->cur = (size_t)at;
    rc = fill_parts(c, e, parts, 0, np, slot, t->pub.name, t);
    c->lay->cur = c->lay->n - 1;
    stack_kind(t, e);
    return rc;
}

static int target_instance(void *arg, const struct refit_model_entry *e, int64_t layer)
{
    struct tctx *c = arg;
    const struct refit_model_dst *d = c->dsel[e - c->m->entries];
    int np = rf_lay_n_parts(c->m, e), rc = 0;
    bool expert = e->role == REFIT_ROLE_EXPERT_COLUMN || e->role == REFIT_ROLE_EXPERT_ROW;
    int64_t e0 = 0, ne = 1;
    if (expert) {
        int ep = c->ep > 1 ? c->ep : 1;
        rc = rf_lay_divides("experts", c->m->experts, ep, e->megatron);
        if (rc)
            return rc;
        ne = c->m->experts / ep;
        e0 = c->ep > 1 ? c->rank * ne : 0; /* whole experts of this rank */
    }
    struct part parts[3] = {{0}};
    for (int64_t x = 0; x < ne && !rc; x++) {
        int64_t eid = expert ? e0 + x : -1;
        for (int i = 0; i < np && !rc; i++) {
            free(parts[i].name);
            rc = rf_lay_part_of(c->m, e, i, layer, eid, &parts[i]);
        }
        if (rc)
            break;
        if (e->role == REFIT_ROLE_VOCAB) {
            if (!rf_lay_skip_name(c->o, parts[0].name))
                rc = vocab_target(c, e, &parts[0]);
            break;
        }
        if (!d || d->fusion == REFIT_FUSE_NONE || !d->name) {
            rc = target_unfused(c, e, parts, np, layer, eid);
            continue;
        }
        char *dn = dst_name(c, e, layer, rf_model_name(d->name, layer, -1));
        if (!dn) {
            rc = REFIT_ENOMEM;
            break;
        }
        if (rf_lay_skip_name(c->o, dn)) {
            free(dn);
            break;
        }
        if (d->fusion == REFIT_FUSE_CONCAT)
            rc = target_concat(c, e, parts, np, layer, dn);
        else if (expert)
            rc = target_stack(c, e, parts, np, layer, x, ne, dn);
        else
            rc = target_stack_append(c, e, parts, np, layer, dn);
    }
    for (int i = 0; i < 3; i++)
        free(parts[i].name);
    return rc;
}

/* "mlp.experts.{e}.gate_proj.weight" -> "gate_proj.weight" for messages. */
static const char *part_label(const char *pattern)
{
    const char *b = strrchr(pattern, '}');
    return b && b[1] == '.' ? b + 2 : pattern;
}

/* The engine's block-FP8 partition rule (the target's fp8_grid bits; for
 * vLLM, fp8.py create_weights): every output partition of a merged or
 * TP-split layer, and the input partition of a column-split one, on the
 * block grid; fused-MoE stacks need the intermediate partition on it
 * whether or not it is split. */
static int fp8_servable(const refit_layout_t *lay, const struct ltensor *t,
                        const struct refit_convert_opts *o, const struct refit_target_layout *tg)
{
    const struct rf_lay_fparts *f = rf_lay_fparts_of(lay, t);
    int n_parts = f ? f->n : 0;
    const struct refit_layout_tensor *p = &t->pub;
    int64_t cols = p->shape[p->ndim - 1], blk = tg->fp8_block > 0 ? tg->fp8_block : 128;
    uint32_t g = tg->fp8_grid;
    const char *eng = tg->engine ? tg->engine : tg->name;
    bool stacks = (g & REFIT_FP8_GRID_STACKS) != 0;
    bool merged = (t->merged || (stacks && t->stack_col)) && (g & REFIT_FP8_GRID_MERGED_PARTS);
    bool split = t->rows_split && (g & REFIT_FP8_GRID_SPLIT_PARTS);
    bool csplit = (t->cols_split && (g & REFIT_FP8_GRID_SPLIT_COLS)) || (stacks && t->stack_row);
    /* a fused layer that is not split may end off the grid (vLLM's
     * validate_fp8_block_shape: "we allow the last matrix to not be a
     * multiple of block size"): fused_qkv_a_proj's kv_a part, 576 rows */
    int n_check = merged && !t->rows_split ? n_parts - 1 : n_parts;
    if (merged || split)
        for (int i = 0; i < n_check; i++)
            if (f->rows[i] % blk)
                return refit_error_set(
                    REFIT_EINVAL,
                    "FP8 refused for '%s' on %s rank %d of %d: its part %s has %lld rows per rank, "
                    "not a multiple of %lld; %s's block-FP8 kernels need every %s partition on the "
                    "%lldx%lld grid (exclude it with fp8.exclude or change tp)",
                    p->name, eng, o->rank, o->tp, part_label(f->name[i]), (long long)f->rows[i],
                    (long long)blk, eng, t->merged ? "fused" : "tensor-parallel", (long long)blk, (long long)blk);
    if (csplit && cols % blk)
        return refit_error_set(
            REFIT_EINVAL,
            "FP8 refused for '%s' on %s rank %d of %d: its input partition has %lld columns, not a "
            "multiple of %lld; %s's block-FP8 kernels cannot serve it (exclude it with fp8.exclude "
            "or change tp)",
            p->name, eng, o->rank, o->tp, (long long)cols, (long long)blk, eng);
    return 0;
}

static int apply_fp8(const refit_model_t *m, refit_layout_t *lay, const struct refit_convert_opts *o,
                     const struct refit_target_layout *tg, const struct refit_model_dst **dsel)
{
    for (size_t i = 0; i < lay->n; i++) {
        struct ltensor *t = &lay->t[i];
        t->pub.pieces = lay->pieces + t->first;
        t->pub.n_pieces = t->count;
        const struct refit_model_dst *d = dsel[t->pub.entry - m->entries];
        t->pub.dtype = d ? d->dtype : REFIT_DTYPE_INVALID;
        if (!o->fp8.enabled || t->pub.ndim < 2)
            continue;
        bool q = !d || d->fp8 == REFIT_FP8_ENTRY ? t->pub.entry->fp8 : d->fp8 == REFIT_FP8_ON;
        if (o->fp8.n_include && rf_match_any(t->pub.name, o->fp8.include, o->fp8.n_include))
            q = true;
        if (o->fp8.n_exclude && rf_match_any(t->pub.name, o->fp8.exclude, o->fp8.n_exclude))
            q = false;
        t->pub.fp8 = q;
        if (q && tg->fp8_grid) {
            int rc = fp8_servable(lay, t, o, tg);
            if (rc)
                return rc;
        }
    }
    return 0;
}

int refit_layout_target(const refit_model_t *m, const struct refit_convert_opts *o,
                        refit_layout_t **out)
{
    if (!m || !o || !out)
        return refit_error_set(REFIT_EINVAL, "refit_layout_target: NULL argument");
    struct tctx c = {m, o, rf_model_target(m, rf_target_name(o)), NULL, o->tp > 0 ? o->tp : 1, o->rank, o->ep,
                     NULL, NULL};
    if (!c.t)
        return REFIT_EINVAL;
    if (c.rank < 0 || c.rank >= c.tp)
        return refit_error_set(REFIT_EINVAL, "rank %d outside tensor parallelism %d", c.rank, c.tp);
    if (c.ep > 1 && c.ep != c.tp)
        return refit_error_set(REFIT_EINVAL,
                               "expert parallelism %d: only ep = tp (%d) is supported for one "
                               "inference rank (ep = tp * dp with dp 1)", c.ep, c.tp);
    bool mtp = o->include_mtp && m->shape.n_mtp_layers > 0;
    c.mtp = mtp ? rf_model_mtp_naming(m, c.t->name) : NULL;
    if (mtp && (!rf_model_mtp_block(m) || !c.mtp))
        return refit_error_set(REFIT_ENOTSUP, "%s: model plugin %s gives target layout '%s' no MTP layers "
                                              "(%s engines load none); leave include_mtp off",
                               m->model_type, m->plugin->name, c.t->name, c.t->engine ? c.t->engine : c.t->name);
    /* a target naming MTP blocks without the layer number holds one */
    if (mtp && c.mtp->to && !strstr(c.mtp->to, "{L}") && m->shape.n_mtp_layers > 1)
        return refit_error_set(REFIT_ENOTSUP, "%s: target layout '%s' holds one MTP layer (its block is %s...), "
                                              "the model has %lld; leave include_mtp off",
                               m->model_type, c.t->name, c.mtp->to, (long long)m->shape.n_mtp_layers);
    int rc = rf_model_dsts(m, c.t, c.tp, c.ep > 1 ? c.ep : 1, &c.dsel);
    if (rc)
        return rc;
    refit_layout_t *lay = calloc(1, sizeof(*lay));
    if (!lay) {
        free(c.dsel);
        return REFIT_ENOMEM;
    }
    c.lay = lay;
    rc = rf_model_instances_ex(m, false, mtp, target_instance, &c);
    if (!rc)
        rc = rf_lay_finish(lay);
    if (!rc)
        rc = apply_fp8(m, lay, o, c.t, c.dsel);
    free(c.dsel);
    return rf_lay_hand_out(lay, rc, out);
}
