/* layout.c — layout maps: for each destination tensor of one rank (an
 * inference rank in the hf or vllm layout, or a Megatron trainer rank), the
 * rectangles of global HF tensors it is made of.  All the layout math of
 * ../shared/conversion.md sections 2 and 3 lives here and nowhere else; the
 * conversion engine and the pull-mode planner only follow the pieces. */
#include <fnmatch.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_int.h"
#include "refit/status.h"

/* Parts of one destination: three per entry, or more when entries of one
 * layer fuse into one destination by name. */
#define RF_MAX_PARTS 8

struct ltensor {
    struct refit_layout_tensor pub;
    size_t first, count; /* into lay->pieces */
    /* For the vLLM block-FP8 check: each fused part's rows per rank, and
     * whether rows / columns are TP partitions. */
    int n_parts;
    const char *part_name[RF_MAX_PARTS];
    int64_t part_rows[RF_MAX_PARTS];
    bool rows_split, cols_split, merged;
    bool stack_row, stack_col; /* an expert stack of down (row) or gate/up (column) projections */
};

struct refit_layout {
    struct ltensor *t;
    size_t n, cap;
    struct refit_layout_piece *pieces;
    uint32_t *owner;      /* while building: the tensor of each piece */
    size_t n_pieces, cap_pieces;
    size_t cur;           /* the tensor add_piece appends to */
    struct refit_layout_src *src;
    size_t n_src, cap_src;
    /* open-addressing hash of source names -> index + 1 */
    uint32_t *hash;
    size_t hash_cap;
};

/* ------------------------------------------------------------------ */
/* Helpers shared with convert.c */

char *rf_model_name(const char *pattern, int64_t layer, int64_t expert)
{
    size_t cap = strlen(pattern) + 64, len = 0;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    for (const char *p = pattern; *p;) {
        int64_t v = -1;
        if (!strncmp(p, "{L}", 3))
            v = layer;
        else if (!strncmp(p, "{k}", 3) || !strncmp(p, "{e}", 3))
            v = expert;
        if (v >= 0 || (p[0] == '{' && p[1] && strchr("Lke", p[1]) && p[2] == '}')) {
            len += (size_t)snprintf(out + len, cap - len, "%lld", (long long)v);
            p += 3;
        } else {
            out[len++] = *p++;
        }
        if (len + 24 >= cap) {
            char *n = realloc(out, cap *= 2);
            if (!n) {
                free(out);
                return NULL;
            }
            out = n;
        }
    }
    out[len] = '\0';
    return out;
}

int rf_match_any(const char *name, const char *const *pats, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (pats[i] && fnmatch(pats[i], name, 0) == 0)
            return 1;
    return 0;
}

static int entry_present(const refit_model_t *m, const struct refit_model_entry *e)
{
    return rf_entry_val(m, e)->present;
}

static int is_global(enum refit_model_scope s)
{
    return s == REFIT_SCOPE_GLOBAL || s == REFIT_SCOPE_FINAL || s == REFIT_SCOPE_TIED_COPY;
}

int rf_model_instances(const refit_model_t *m, rf_instance_fn fn, void *arg)
{
    return rf_model_instances_ex(m, false, fn, arg);
}

/* Global entries first, then layer by layer in table order, so layouts
 * list tensors the way checkpoints do. */
int rf_model_instances_ex(const refit_model_t *m, bool tied_copies, rf_instance_fn fn, void *arg)
{
    const struct refit_model_shape *s = &m->shape;
    for (size_t i = 0; i < m->n_entries; i++) {
        const struct refit_model_entry *e = &m->entries[i];
        if (!is_global(e->scope) || !entry_present(m, e) || (e->scope == REFIT_SCOPE_TIED_COPY && !tied_copies))
            continue;
        int rc = fn(arg, e, -1);
        if (rc)
            return rc;
    }
    for (int64_t l = 0; l < s->n_layers; l++) {
        enum refit_layer_kind k = m->kinds[l];
        for (size_t i = 0; i < m->n_entries; i++) {
            const struct refit_model_entry *e = &m->entries[i];
            if (is_global(e->scope) || !entry_present(m, e) ||
                (e->scope == REFIT_SCOPE_DENSE && k != REFIT_LAYER_DENSE) ||
                (e->scope == REFIT_SCOPE_MOE && k != REFIT_LAYER_MOE))
                continue;
            int rc = fn(arg, e, l);
            if (rc)
                return rc;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Building */

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static int hash_grow(refit_layout_t *lay)
{
    size_t cap = lay->hash_cap ? lay->hash_cap * 2 : 256;
    uint32_t *h = calloc(cap, sizeof(*h));
    if (!h)
        return REFIT_ENOMEM;
    for (size_t i = 0; i < lay->n_src; i++) {
        size_t j = hash_str(lay->src[i].name) & (cap - 1);
        while (h[j])
            j = (j + 1) & (cap - 1);
        h[j] = (uint32_t)i + 1;
    }
    free(lay->hash);
    lay->hash = h;
    lay->hash_cap = cap;
    return 0;
}

static int find_src(const refit_layout_t *lay, const char *name, uint32_t *out)
{
    if (!lay->hash_cap)
        return REFIT_ENOENT;
    size_t j = hash_str(name) & (lay->hash_cap - 1);
    while (lay->hash[j]) {
        if (!strcmp(lay->src[lay->hash[j] - 1].name, name)) {
            *out = lay->hash[j] - 1;
            return 0;
        }
        j = (j + 1) & (lay->hash_cap - 1);
    }
    return REFIT_ENOENT;
}

/* Source index of an HF tensor, added on first use. */
static int intern_src(refit_layout_t *lay, const char *name, int ndim, int64_t rows, int64_t cols,
                      uint32_t *out)
{
    if (!find_src(lay, name, out))
        return 0;
    if ((lay->n_src + 1) * 2 > lay->hash_cap && hash_grow(lay))
        return REFIT_ENOMEM;
    if (lay->n_src == lay->cap_src) {
        size_t cap = lay->cap_src ? lay->cap_src * 2 : 64;
        struct refit_layout_src *s = realloc(lay->src, cap * sizeof(*s));
        if (!s)
            return REFIT_ENOMEM;
        lay->src = s;
        lay->cap_src = cap;
    }
    struct refit_layout_src *s = &lay->src[lay->n_src];
    s->name = strdup(name);
    if (!s->name)
        return REFIT_ENOMEM;
    s->ndim = ndim;
    s->shape[0] = rows;
    s->shape[1] = ndim == 2 ? cols : 0;
    size_t j = hash_str(name) & (lay->hash_cap - 1);
    while (lay->hash[j])
        j = (j + 1) & (lay->hash_cap - 1);
    lay->hash[j] = (uint32_t)lay->n_src + 1;
    *out = (uint32_t)lay->n_src++;
    return 0;
}

/* A piece of the tensor being built (lay->cur: the last one begun, or an
 * earlier one of the layer that later entries fuse into); merged with the
 * previous piece when both sides continue it row-wise.  finish() groups
 * the pieces by tensor. */
static int add_piece(refit_layout_t *lay, uint32_t src, int64_t sr, int64_t sc, int64_t di,
                     int64_t dr, int64_t dc, int64_t rows, int64_t cols)
{
    struct ltensor *t = &lay->t[lay->cur];
    if (t->count && lay->owner[lay->n_pieces - 1] == lay->cur) {
        struct refit_layout_piece *p = &lay->pieces[lay->n_pieces - 1];
        if (p->src == src && p->src_col == sc && p->cols == cols && p->dst_index == di &&
            p->dst_col == dc && p->src_row + p->rows == sr && p->dst_row + p->rows == dr) {
            p->rows += rows;
            return 0;
        }
    }
    if (lay->n_pieces == lay->cap_pieces) {
        size_t cap = lay->cap_pieces ? lay->cap_pieces * 2 : 256;
        struct refit_layout_piece *n = realloc(lay->pieces, cap * sizeof(*n));
        if (n)
            lay->pieces = n;
        uint32_t *o = n ? realloc(lay->owner, cap * sizeof(*o)) : NULL;
        if (!o)
            return REFIT_ENOMEM;
        lay->owner = o;
        lay->cap_pieces = cap;
    }
    lay->owner[lay->n_pieces] = (uint32_t)lay->cur;
    lay->pieces[lay->n_pieces++] = (struct refit_layout_piece){src, sr, sc, di, dr, dc, rows, cols};
    t->count++;
    return 0;
}

/* Start a destination tensor; takes ownership of name. */
static int begin_tensor(refit_layout_t *lay, char *name, const struct refit_model_entry *e,
                        int64_t layer, int64_t expert, int ndim, int64_t d0, int64_t d1, int64_t d2)
{
    if (!name)
        return REFIT_ENOMEM;
    if (lay->n == lay->cap) {
        size_t cap = lay->cap ? lay->cap * 2 : 64;
        struct ltensor *n = realloc(lay->t, cap * sizeof(*n));
        if (!n) {
            free(name);
            return REFIT_ENOMEM;
        }
        lay->t = n;
        lay->cap = cap;
    }
    struct ltensor *t = &lay->t[lay->n++];
    memset(t, 0, sizeof(*t));
    t->pub.name = name;
    t->pub.ndim = ndim;
    t->pub.shape[0] = d0;
    t->pub.shape[1] = d1;
    t->pub.shape[2] = d2;
    t->pub.role = e->role;
    t->pub.layer = layer;
    t->pub.expert = expert;
    t->pub.entry = e;
    t->first = lay->n_pieces;
    lay->cur = lay->n - 1;
    return 0;
}

/* ------------------------------------------------------------------ */
/* One HF part of an entry */

struct part {
    char *name;
    int ndim;
    int64_t rows, cols; /* cols 1 for 1-D */
};

static int part_of(const refit_model_t *m, const struct refit_model_entry *e, int i, int64_t layer,
                   int64_t expert, struct part *p)
{
    const struct rf_entry_val *v = rf_entry_val(m, e);
    p->name = rf_model_name(e->hf[i], layer, expert);
    if (!p->name)
        return REFIT_ENOMEM;
    p->ndim = v->ndim;
    p->rows = v->rows[i];
    p->cols = v->cols;
    return 0;
}

static int n_parts(const refit_model_t *m, const struct refit_model_entry *e)
{
    return rf_entry_val(m, e)->n_parts;
}

static int src_of(refit_layout_t *lay, const struct part *p, uint32_t *out)
{
    return intern_src(lay, p->name, p->ndim, p->rows, p->cols, out);
}

static int divides(const char *what, int64_t n, int64_t by, const char *name)
{
    if (by <= 0 || n % by)
        return refit_error_set(REFIT_EINVAL, "%s: %s %lld is not divisible by %lld", name, what,
                               (long long)n, (long long)by);
    return 0;
}

/* A TP split of n rows (or columns) made of whole units of `unit` (an
 * attention head's rows: the role's first argument, 0 for none) must not
 * cut a unit: every rank holds whole heads. */
static int divides_units(const char *what, int64_t n, int64_t unit, int64_t by, const char *name)
{
    if (unit <= 0 || by <= 1)
        return divides(what, n, by, name);
    if (n % unit || (n / unit) % by)
        return refit_error_set(REFIT_EINVAL,
                               "%s: %s %lld are %lld heads of %lld, which tensor parallelism %lld would cut "
                               "(every rank must hold whole heads)",
                               name, what, (long long)n, (long long)(n / unit), (long long)unit, (long long)by);
    return 0;
}

static int64_t round_up(int64_t v, int64_t m)
{
    return (v + m - 1) / m * m;
}

/* ------------------------------------------------------------------ */
/* Inference layouts (section 3) */

struct tctx {
    const refit_model_t *m;
    const struct refit_convert_opts *o;
    const struct refit_target_layout *t;
    refit_layout_t *lay;
    int tp, rank, ep;
    const struct refit_model_dst **dsel; /* each entry's destination here */
};

/* Rows of a part held by inference rank r: [*start, *start + *n). */
static int infer_rows(const struct tctx *c, const struct refit_model_entry *e, int part,
                      const struct part *p, const char *dname, int64_t *start, int64_t *n)
{
    const struct rf_entry_val *v = rf_entry_val(c->m, e);
    int64_t heads = v->args[0], groups = v->args[1], hd = v->args[2];
    int tp = c->tp, r = c->rank;
    switch (e->role) {
    case REFIT_ROLE_QKV_COLUMN:
        if (part == 0) {
            int rc = divides("num_attention_heads", heads, tp, dname);
            if (rc)
                return rc;
            *n = heads / tp * hd;
            *start = r * *n;
        } else if (tp >= groups) {
            int rc = divides("tensor parallelism", tp, groups, dname);
            if (rc)
                return rc;
            /* one KV head per rank, replicated over tp/G ranks */
            *n = hd;
            *start = (r / (tp / groups)) * hd;
        } else {
            int rc = divides("num_key_value_heads", groups, tp, dname);
            if (rc)
                return rc;
            *n = groups / tp * hd;
            *start = r * *n;
        }
        return 0;
    case REFIT_ROLE_GATED_COLUMN:
    case REFIT_ROLE_COLUMN: {
        int rc = divides_units("rows", p->rows, e->role == REFIT_ROLE_COLUMN ? heads : 0, tp, dname);
        if (rc)
            return rc;
        *n = p->rows / tp;
        *start = r * *n;
        return 0;
    }
    case REFIT_ROLE_EXPERT_COLUMN: {
        int tpm = c->ep > 1 ? 1 : tp, rm = c->ep > 1 ? 0 : r;
        int rc = divides("moe_intermediate_size", p->rows, tpm, dname);
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
    int tpc = e->role == REFIT_ROLE_ROW ? c->tp
              : e->role == REFIT_ROLE_EXPERT_ROW ? (c->ep > 1 ? 1 : c->tp) : 1;
    int64_t unit = e->role == REFIT_ROLE_ROW ? rf_entry_val(c->m, e)->args[0] : 0;
    int rc = divides_units("input columns", p->cols, unit, tpc, dname);
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
    int64_t Vp = c->t->vocab_multiple > 1 ? round_up(V, c->t->vocab_multiple) : V;
    const struct refit_model_dst *d = c->dsel[e - c->m->entries];
    const char *pat = d && d->name ? d->name : e->hf[0];
    char *name = rf_model_name(pat, -1, -1);
    int rc = divides("padded vocabulary", Vp, c->tp, name ? name : pat);
    if (!rc)
        rc = begin_tensor(c->lay, name, e, -1, -1, 2, Vp / c->tp, p->cols, 0);
    else
        free(name);
    if (rc)
        return rc;
    struct ltensor *t = &c->lay->t[c->lay->n - 1];
    t->rows_split = c->tp > 1;
    int64_t per = Vp / c->tp, a = c->rank * per, b = a + per < V ? a + per : V;
    uint32_t si;
    rc = src_of(c->lay, p, &si);
    if (!rc && b > a)
        rc = add_piece(c->lay, si, a, 0, 0, 0, 0, b - a, p->cols);
    return rc;
}

/* One destination tensor made of parts[0..np) (concatenated on rows) for one
 * expert slot: appends the pieces at dst_index `slot`, from destination row
 * dr and as the tensor's parts [base, base + np). */
static int fill_parts_at(struct tctx *c, const struct refit_model_entry *e, struct part *parts, int first,
                         int np, int64_t slot, const char *dname, struct ltensor *t, int64_t dr, int base)
{
    t->n_parts = base + np;
    for (int i = 0; i < np; i++) {
        struct part *p = &parts[first + i];
        int64_t r0, nr, c0, nc;
        bool csplit = false;
        int rc = infer_rows(c, e, first + i, p, dname, &r0, &nr);
        if (!rc)
            rc = infer_cols(c, e, p, dname, &c0, &nc, &csplit);
        uint32_t si;
        if (!rc)
            rc = src_of(c->lay, p, &si);
        if (!rc)
            rc = add_piece(c->lay, si, r0, c0, slot, dr, 0, nr, nc);
        if (rc)
            return rc;
        t->part_name[base + i] = e->hf[first + i];
        t->part_rows[base + i] = nr;
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

static int skip_name(const struct refit_convert_opts *o, const char *name)
{
    return o && o->n_skip && rf_match_any(name, o->skip, o->n_skip);
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
        if (skip_name(c->o, parts[i].name))
            continue;
        char *dn = d && d->name ? rf_model_name(d->name, layer, eid) : strdup(parts[i].name);
        int64_t rows, cols;
        int rc = dn ? dst_extent(c, e, parts, i, 1, dn, &rows, &cols) : REFIT_ENOMEM;
        if (rc) {
            free(dn);
            return rc;
        }
        rc = begin_tensor(c->lay, dn, e, layer, eid, parts[i].ndim, rows, parts[i].ndim == 2 ? cols : 0, 0);
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
        if (t->pub.ndim != parts[0].ndim || (t->pub.ndim == 2 && t->pub.shape[1] != cols) ||
            t->n_parts + np > RF_MAX_PARTS)
            rc = refit_error_set(REFIT_EINVAL, "'%s': the entries fused into it differ in columns "
                                               "or have more than %d parts", dn, RF_MAX_PARTS);
        free(dn);
        if (rc)
            return rc;
        int64_t r0 = t->pub.shape[0];
        t->pub.shape[0] += rows;
        c->lay->cur = (size_t)at;
        rc = fill_parts_at(c, e, parts, 0, np, 0, t->pub.name, t, r0, t->n_parts);
        c->lay->cur = c->lay->n - 1;
        return rc;
    }
    if (rc) {
        free(dn);
        return rc;
    }
    rc = begin_tensor(c->lay, dn, e, layer, -1, parts[0].ndim, rows, parts[0].ndim == 2 ? cols : 0, 0);
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
            rc = begin_tensor(c->lay, dn, e, layer, -1, 3, n_slots, rows, cols);
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
    int np = n_parts(c->m, e), rc = 0;
    bool expert = e->role == REFIT_ROLE_EXPERT_COLUMN || e->role == REFIT_ROLE_EXPERT_ROW;
    int64_t e0 = 0, ne = 1;
    if (expert) {
        int ep = c->ep > 1 ? c->ep : 1;
        rc = divides("experts", c->m->experts, ep, e->megatron);
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
            rc = part_of(c->m, e, i, layer, eid, &parts[i]);
        }
        if (rc)
            break;
        if (e->role == REFIT_ROLE_VOCAB) {
            if (!skip_name(c->o, parts[0].name))
                rc = vocab_target(c, e, &parts[0]);
            break;
        }
        if (!d || d->fusion == REFIT_FUSE_NONE || !d->name) {
            rc = target_unfused(c, e, parts, np, layer, eid);
            continue;
        }
        char *dn = rf_model_name(d->name, layer, -1);
        if (!dn) {
            rc = REFIT_ENOMEM;
            break;
        }
        if (skip_name(c->o, dn)) {
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
static int fp8_servable(const struct ltensor *t, const struct refit_convert_opts *o,
                        const struct refit_target_layout *tg)
{
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
    int n_check = merged && !t->rows_split ? t->n_parts - 1 : t->n_parts;
    if (merged || split)
        for (int i = 0; i < n_check; i++)
            if (t->part_rows[i] % blk)
                return refit_error_set(
                    REFIT_EINVAL,
                    "FP8 refused for '%s' on %s rank %d of %d: its part %s has %lld rows per rank, "
                    "not a multiple of %lld; %s's block-FP8 kernels need every %s partition on the "
                    "%lldx%lld grid (exclude it with fp8.exclude or change tp)",
                    p->name, eng, o->rank, o->tp, part_label(t->part_name[i]), (long long)t->part_rows[i],
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
            int rc = fp8_servable(t, o, tg);
            if (rc)
                return rc;
        }
    }
    return 0;
}

/* Group the pieces by tensor (stable: a tensor's pieces keep their order)
 * and point every tensor at its own. */
static int finish(refit_layout_t *lay)
{
    bool sorted = true;
    for (size_t k = 1; k < lay->n_pieces && sorted; k++)
        sorted = lay->owner[k - 1] <= lay->owner[k];
    if (!sorted) {
        struct refit_layout_piece *np = malloc((lay->n_pieces ? lay->n_pieces : 1) * sizeof(*np));
        size_t *at = calloc(lay->n + 1, sizeof(*at));
        if (!np || !at) {
            free(np);
            free(at);
            return REFIT_ENOMEM;
        }
        for (size_t i = 0; i < lay->n; i++)
            at[i + 1] = at[i] + lay->t[i].count;
        for (size_t i = 0; i < lay->n; i++)
            lay->t[i].first = at[i];
        for (size_t k = 0; k < lay->n_pieces; k++)
            np[at[lay->owner[k]]++] = lay->pieces[k];
        free(lay->pieces);
        free(at);
        lay->pieces = np;
        lay->cap_pieces = lay->n_pieces ? lay->n_pieces : 1;
        free(lay->owner);
        lay->owner = NULL;
    }
    for (size_t i = 0; i < lay->n; i++) {
        lay->t[i].pub.pieces = lay->pieces + lay->t[i].first;
        lay->t[i].pub.n_pieces = lay->t[i].count;
    }
    return 0;
}

int refit_layout_target(const refit_model_t *m, const struct refit_convert_opts *o,
                        refit_layout_t **out)
{
    if (!m || !o || !out)
        return refit_error_set(REFIT_EINVAL, "refit_layout_target: NULL argument");
    struct tctx c = {m, o, rf_model_target(m, rf_target_name(o)), NULL, o->tp > 0 ? o->tp : 1, o->rank, o->ep,
                     NULL};
    if (!c.t)
        return REFIT_EINVAL;
    if (c.rank < 0 || c.rank >= c.tp)
        return refit_error_set(REFIT_EINVAL, "rank %d outside tensor parallelism %d", c.rank, c.tp);
    if (c.ep > 1 && c.ep != c.tp)
        return refit_error_set(REFIT_EINVAL,
                               "expert parallelism %d: only ep = tp (%d) is supported for one "
                               "inference rank (ep = tp * dp with dp 1)", c.ep, c.tp);
    if (o->include_mtp && m->shape.n_mtp_layers > 0)
        return refit_error_set(REFIT_ENOTSUP, "MTP layers are not converted yet; leave include_mtp off");
    int rc = rf_model_dsts(m, c.t, c.tp, c.ep > 1 ? c.ep : 1, &c.dsel);
    if (rc)
        return rc;
    refit_layout_t *lay = calloc(1, sizeof(*lay));
    if (!lay) {
        free(c.dsel);
        return REFIT_ENOMEM;
    }
    c.lay = lay;
    rc = rf_model_instances(m, target_instance, &c);
    if (!rc)
        rc = finish(lay);
    if (!rc)
        rc = apply_fp8(m, lay, o, c.t, c.dsel);
    free(c.dsel);
    if (rc) {
        refit_layout_destroy(lay);
        return rc;
    }
    *out = lay;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Megatron layouts (section 2) */

struct mctx {
    const refit_model_t *m;
    const struct refit_megatron_rank *r;
    const struct refit_convert_opts *skip;
    refit_layout_t *lay;
    int pp, vp, pp_rank;
    int64_t *start;      /* first layer of each chunk; start[pp*vp] = L */
    int64_t local;       /* the instance's layer number in its chunk */
    int chunk;           /* the instance's chunk */
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
        int rc = src_of(c->lay, &parts[i], &si[i]);
        if (rc)
            return rc;
    }
    for (int64_t x = a; x < b;) {
        int64_t g = x / grp, off = x % grp, j = off / d, t = off % d;
        int64_t len = d - t < b - x ? d - t : b - x;
        int which = j < n ? 0 : j == n ? 1 : 2;
        int64_t row = j < n ? (g * n + j) * d + t : g * d + t;
        int rc = add_piece(c->lay, si[which], row, 0, 0, x - a, 0, len, cols);
        if (rc)
            return rc;
        x += len;
    }
    return 0;
}

/* A trainer name in this instance's chunk: the local layer number, and
 * "model<v>." in front with virtual stages. */
static char *chunk_name(const struct mctx *c, const char *pattern, int64_t local, int64_t k)
{
    char *n = rf_model_name(pattern, local, k);
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
    int np = n_parts(c->m, e), rc = 0;
    struct part parts[3] = {{0}};
    for (int i = 0; i < np && !rc; i++)
        rc = part_of(c->m, e, i, layer, eid, &parts[i]);
    char *name = rc ? NULL : chunk_name(c, e->megatron, layer < 0 ? -1 : c->local, k);
    if (!rc && !name)
        rc = REFIT_ENOMEM;
    if (!rc && skip_name(c->skip, parts[0].name))
        goto out;
    int64_t cols = parts[0].cols;
    int nd = parts[0].ndim;
    uint32_t si;
    switch (rc ? 0 : e->role) {
    case 0:
        break;
    case REFIT_ROLE_REPLICATED:
        rc = begin_tensor(c->lay, name, e, layer, eid, nd, parts[0].rows, nd == 2 ? cols : 0, 0);
        name = NULL;
        if (!rc)
            rc = src_of(c->lay, &parts[0], &si);
        if (!rc)
            rc = add_piece(c->lay, si, 0, 0, 0, 0, 0, parts[0].rows, cols);
        break;
    case REFIT_ROLE_VOCAB:
    case REFIT_ROLE_COLUMN: {
        int64_t V = parts[0].rows;
        int64_t div = r->vocab_divisible_by > 0 ? r->vocab_divisible_by : 128;
        int64_t Vp = e->role == REFIT_ROLE_VOCAB ? round_up(V, div * tp) : V;
        rc = divides_units("rows", Vp, e->role == REFIT_ROLE_COLUMN ? rf_entry_val(c->m, e)->args[0] : 0, tp, name);
        if (rc)
            break;
        int64_t per = Vp / tp, a = tr * per, b = a + per < V ? a + per : V;
        rc = begin_tensor(c->lay, name, e, layer, eid, nd, per, nd == 2 ? cols : 0, 0);
        name = NULL;
        if (!rc)
            rc = src_of(c->lay, &parts[0], &si);
        if (!rc && b > a)
            rc = add_piece(c->lay, si, a, 0, 0, 0, 0, b - a, cols);
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
        rc = begin_tensor(c->lay, name, e, layer, eid, nd, per, nd == 2 ? cols : 0, 0);
        name = NULL;
        if (!rc)
            rc = qkv_pieces(c, e, parts, tr * per, (tr + 1) * per, cols);
        break;
    }
    case REFIT_ROLE_GATED_COLUMN:
    case REFIT_ROLE_EXPERT_COLUMN: {
        rc = divides("rows", parts[0].rows, tp, name);
        if (rc)
            break;
        int64_t per = parts[0].rows / tp;
        rc = begin_tensor(c->lay, name, e, layer, eid, nd, 2 * per, nd == 2 ? cols : 0, 0);
        name = NULL;
        for (int i = 0; i < 2 && !rc; i++) {
            rc = src_of(c->lay, &parts[i], &si);
            if (!rc)
                rc = add_piece(c->lay, si, tr * per, 0, 0, i * per, 0, per, cols);
        }
        break;
    }
    case REFIT_ROLE_ROW:
    case REFIT_ROLE_EXPERT_ROW: {
        rc = divides_units("input columns", cols, e->role == REFIT_ROLE_ROW ? rf_entry_val(c->m, e)->args[0] : 0,
                           tp, name);
        if (rc)
            break;
        int64_t per = cols / tp;
        rc = begin_tensor(c->lay, name, e, layer, eid, 2, parts[0].rows, per, 0);
        name = NULL;
        if (!rc)
            rc = src_of(c->lay, &parts[0], &si);
        if (!rc)
            rc = add_piece(c->lay, si, 0, tr * per, 0, 0, 0, parts[0].rows, per);
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

/* Which chunk holds an instance; -1 none of this rank's. */
static int chunk_of(struct mctx *c, const struct refit_model_entry *e, int64_t layer)
{
    int n = c->pp * c->vp, ch = 0;
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
    int rc = divides("experts", E, c->r->ep, e->megatron);
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
    lay->t = malloc((tensors ? tensors : 1) * sizeof(*lay->t));
    lay->pieces = malloc((parts ? parts : 1) * sizeof(*lay->pieces));
    lay->owner = malloc((parts ? parts : 1) * sizeof(*lay->owner));
    lay->src = malloc((parts ? parts : 1) * sizeof(*lay->src));
    size_t h = 256;
    while (h < 2 * (parts + 1))
        h *= 2;
    lay->hash = calloc(h, sizeof(*lay->hash));
    if (!lay->t || !lay->pieces || !lay->owner || !lay->src || !lay->hash)
        return REFIT_ENOMEM;
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

int refit_layout_megatron_pp(const refit_model_t *m, const struct refit_megatron_rank *r,
                             const struct refit_megatron_pp *pp, const struct refit_convert_opts *skip,
                             refit_layout_t **out)
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
    struct mctx c = {m, r, skip, NULL, pp->pp > 0 ? pp->pp : 1, pp->vp > 0 ? pp->vp : 1, pp->pp_rank, NULL, -1, 0};
    int rc = chunk_starts(m, pp->chunk_layers, c.pp, c.vp, &c.start);
    if (rc)
        return rc;
    refit_layout_t *lay = calloc(1, sizeof(*lay));
    if (!lay) {
        free(c.start);
        return REFIT_ENOMEM;
    }
    c.lay = lay;
    /* the count covers every stage: at most pp times what this one needs */
    struct mcount cnt = {m, r->ep, 0, 0};
    rc = rf_model_instances_ex(m, true, megatron_count, &cnt);
    if (!rc)
        rc = reserve(lay, cnt.n, cnt.parts);
    if (!rc)
        rc = rf_model_instances_ex(m, true, megatron_instance, &c);
    free(c.start);
    if (!rc)
        rc = finish(lay);
    if (rc) {
        refit_layout_destroy(lay);
        return rc;
    }
    *out = lay;
    return 0;
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
    int rc = begin_tensor(c->lay, name, e, layer, eid, p->ndim, b - a, p->ndim == 2 ? p->cols : 0, 0);
    uint32_t si;
    if (!rc)
        rc = src_of(c->lay, p, &si);
    /* an empty rank keeps a zero-row piece: it carries the source (dtype) */
    if (!rc)
        rc = add_piece(c->lay, si, a, 0, 0, 0, 0, b - a, p->cols);
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
        for (int i = 0; i < n_parts(c->m, e) && !rc; i++) {
            struct part p = {0};
            rc = part_of(c->m, e, i, layer, expert ? x : -1, &p);
            if (!rc && !skip_name(c->skip, p.name))
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
    int rc = rf_model_instances(m, fsdp_instance, &c);
    if (!rc)
        rc = finish(lay);
    if (rc) {
        refit_layout_destroy(lay);
        return rc;
    }
    *out = lay;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Composition */

struct xrec {
    uint32_t dst;
    int64_t di, dr, dc, rows, cols;
    struct refit_layout_cand c;
};

struct xent {
    uint32_t rank, tensor;
    const struct refit_layout_piece *p;
};

struct refit_layout_xmap {
    struct refit_layout_xpiece *x;
    size_t n;
    struct refit_layout_cand *cand;
};

static int xrec_cmp(const void *a, const void *b)
{
    const struct xrec *x = a, *y = b;
    int64_t kx[] = {x->dst, x->di, x->dr, x->dc, x->rows, x->cols, x->c.rank, x->c.tensor};
    int64_t ky[] = {y->dst, y->di, y->dr, y->dc, y->rows, y->cols, y->c.rank, y->c.tensor};
    for (int i = 0; i < 8; i++)
        if (kx[i] != ky[i])
            return kx[i] < ky[i] ? -1 : 1;
    return 0;
}

/* Index the trainer pieces that copy an HF tensor the destination needs
 * (CSR over the destination's source names; pieces of other tensors are
 * left out).  Each rank's source table is looked up once, not each piece:
 * a large MoE trainer has tens of thousands of pieces per plan. */
static int xindex(const refit_layout_t *dst, const refit_layout_t *const *ranks, size_t n, refit_layout_t *names,
                  size_t **startp, struct xent **entp)
{
    int rc = 0;
    for (size_t i = 0; i < dst->n_src && !rc; i++) {
        const struct refit_layout_src *s = &dst->src[i];
        uint32_t id;
        rc = intern_src(names, s->name, s->ndim, s->shape[0], s->shape[1], &id);
    }
    uint32_t **map = calloc(n ? n : 1, sizeof(*map));
    size_t *start = calloc(names->n_src + 1, sizeof(*start));
    size_t *fill = calloc(names->n_src + 1, sizeof(*fill));
    struct xent *ent = NULL;
    if (!rc && (!map || !start || !fill))
        rc = REFIT_ENOMEM;
    for (size_t r = 0; r < n && !rc; r++) {
        map[r] = malloc((ranks[r]->n_src ? ranks[r]->n_src : 1) * sizeof(**map));
        if (!map[r]) {
            rc = REFIT_ENOMEM;
            break;
        }
        for (size_t i = 0; i < ranks[r]->n_src; i++)
            if (find_src(names, ranks[r]->src[i].name, &map[r][i]))
                map[r][i] = UINT32_MAX;
    }
    for (int pass = 0; pass < 2 && !rc; pass++) {
        for (size_t r = 0; r < n; r++) {
            const refit_layout_t *l = ranks[r];
            for (size_t t = 0; t < l->n; t++)
                for (size_t k = 0; k < l->t[t].count; k++) {
                    const struct refit_layout_piece *p = &l->pieces[l->t[t].first + k];
                    uint32_t id = map[r][p->src];
                    if (id == UINT32_MAX)
                        continue;
                    if (!pass)
                        start[id + 1]++;
                    else
                        ent[start[id] + fill[id]++] = (struct xent){(uint32_t)r, (uint32_t)t, p};
                }
        }
        if (!pass) {
            for (size_t i = 0; i < names->n_src; i++)
                start[i + 1] += start[i];
            ent = calloc(start[names->n_src] ? start[names->n_src] : 1, sizeof(*ent));
            if (!ent)
                rc = REFIT_ENOMEM;
        }
    }
    for (size_t r = 0; map && r < n; r++)
        free(map[r]);
    free(map);
    free(fill);
    if (rc) {
        free(start);
        free(ent);
        return rc;
    }
    *startp = start;
    *entp = ent;
    return 0;
}

static int xrec_push(struct xrec **v, size_t *n, size_t *cap, struct xrec r)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 1024;
        struct xrec *nv = realloc(*v, c * sizeof(*nv));
        if (!nv)
            return REFIT_ENOMEM;
        *v = nv;
        *cap = c;
    }
    (*v)[(*n)++] = r;
    return 0;
}

static int xgroup(struct xrec *rec, size_t n, refit_layout_xmap_t *x)
{
    qsort(rec, n, sizeof(*rec), xrec_cmp);
    x->cand = calloc(n ? n : 1, sizeof(*x->cand));
    x->x = calloc(n ? n : 1, sizeof(*x->x));
    if (!x->cand || !x->x)
        return REFIT_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        x->cand[i] = rec[i].c;
        struct refit_layout_xpiece *last = x->n ? &x->x[x->n - 1] : NULL;
        if (last && last->dst == rec[i].dst && last->dst_index == rec[i].di && last->dst_row == rec[i].dr &&
            last->dst_col == rec[i].dc && last->rows == rec[i].rows && last->cols == rec[i].cols) {
            last->n_cand++;
            continue;
        }
        x->x[x->n++] = (struct refit_layout_xpiece){rec[i].dst, rec[i].di, rec[i].dr, rec[i].dc,
                                                    rec[i].rows, rec[i].cols, &x->cand[i], 1};
    }
    return 0;
}

int refit_layout_compose(const refit_layout_t *dst, const refit_layout_t *const *ranks, size_t n_ranks,
                         refit_layout_xmap_t **out)
{
    if (!dst || (!ranks && n_ranks) || !out)
        return refit_error_set(REFIT_EINVAL, "refit_layout_compose: NULL argument");
    refit_layout_t *names = calloc(1, sizeof(*names));
    refit_layout_xmap_t *x = calloc(1, sizeof(*x));
    size_t *start = NULL, n = 0, cap = 0;
    struct xent *ent = NULL;
    struct xrec *rec = NULL;
    int rc = names && x ? xindex(dst, ranks, n_ranks, names, &start, &ent) : REFIT_ENOMEM;
    for (size_t t = 0; !rc && t < dst->n; t++) {
        const struct ltensor *lt = &dst->t[t];
        for (size_t k = 0; !rc && k < lt->count; k++) {
            const struct refit_layout_piece *q = &dst->pieces[lt->first + k];
            const char *hf = dst->src[q->src].name;
            uint32_t id;
            int64_t covered = 0;
            if (!find_src(names, hf, &id))
                for (size_t j = start[id]; !rc && j < start[id + 1]; j++) {
                    const struct refit_layout_piece *p = ent[j].p;
                    int64_t r0 = q->src_row > p->src_row ? q->src_row : p->src_row;
                    int64_t r1 = q->src_row + q->rows < p->src_row + p->rows ? q->src_row + q->rows
                                                                             : p->src_row + p->rows;
                    int64_t c0 = q->src_col > p->src_col ? q->src_col : p->src_col;
                    int64_t c1 = q->src_col + q->cols < p->src_col + p->cols ? q->src_col + q->cols
                                                                             : p->src_col + p->cols;
                    if (r0 >= r1 || c0 >= c1)
                        continue;
                    covered += (r1 - r0) * (c1 - c0);
                    struct xrec r = {(uint32_t)t, q->dst_index, q->dst_row + (r0 - q->src_row),
                                     q->dst_col + (c0 - q->src_col), r1 - r0, c1 - c0,
                                     {ent[j].rank, ent[j].tensor, p->dst_row + (r0 - p->src_row),
                                      p->dst_col + (c0 - p->src_col)}};
                    rc = xrec_push(&rec, &n, &cap, r);
                }
            if (!rc && covered < q->rows * q->cols)
                rc = refit_error_set(REFIT_ENOENT,
                                     "'%s': rows %lld..%lld of HF tensor '%s' are on no trainer rank given",
                                     lt->pub.name, (long long)q->src_row, (long long)(q->src_row + q->rows),
                                     hf);
        }
    }
    if (!rc)
        rc = xgroup(rec, n, x);
    free(rec);
    free(start);
    free(ent);
    refit_layout_destroy(names);
    if (rc) {
        refit_layout_xmap_destroy(x);
        return rc;
    }
    *out = x;
    return 0;
}

size_t refit_layout_xmap_count(const refit_layout_xmap_t *x)
{
    return x ? x->n : 0;
}

const struct refit_layout_xpiece *refit_layout_xmap_at(const refit_layout_xmap_t *x, size_t i)
{
    return x && i < x->n ? &x->x[i] : NULL;
}

void refit_layout_xmap_destroy(refit_layout_xmap_t *x)
{
    if (!x)
        return;
    free(x->x);
    free(x->cand);
    free(x);
}

/* ------------------------------------------------------------------ */

size_t refit_layout_count(const refit_layout_t *lay)
{
    return lay ? lay->n : 0;
}

const struct refit_layout_tensor *refit_layout_at(const refit_layout_t *lay, size_t i)
{
    return lay && i < lay->n ? &lay->t[i].pub : NULL;
}

const struct refit_layout_tensor *refit_layout_find(const refit_layout_t *lay, const char *name)
{
    for (size_t i = 0; lay && i < lay->n; i++)
        if (!strcmp(lay->t[i].pub.name, name))
            return &lay->t[i].pub;
    return NULL;
}

size_t refit_layout_source_count(const refit_layout_t *lay)
{
    return lay ? lay->n_src : 0;
}

const struct refit_layout_src *refit_layout_source(const refit_layout_t *lay, uint32_t i)
{
    return lay && i < lay->n_src ? &lay->src[i] : NULL;
}

void refit_layout_destroy(refit_layout_t *lay)
{
    if (!lay)
        return;
    for (size_t i = 0; i < lay->n; i++)
        free((char *)lay->t[i].pub.name);
    for (size_t i = 0; i < lay->n_src; i++)
        free((char *)lay->src[i].name);
    free(lay->t);
    free(lay->pieces);
    free(lay->owner);
    free(lay->src);
    free(lay->hash);
    free(lay);
}
