/* layout.c — layout maps: for each destination tensor of one rank (an
 * inference rank of a target layout, or a trainer rank), the rectangles of
 * global HF tensors it is made of.  This file holds the map itself: the
 * instances of the spec's entries, interned sources, tensors and pieces,
 * and the accessors.  The layout rules of ../shared/conversion.md live in
 * layout_target.c (section 3) and layout_trainer.c (section 2); the
 * conversion engine and the pull-mode planner only follow the pieces. */
#include <fnmatch.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "layout_int.h"
#include "refit/refit.h"
#include "refit/status.h"

/* ------------------------------------------------------------------ */
/* Helpers shared with convert.c */

/* v in decimal at out (no terminator, at most 20 bytes); its length.  By
 * hand: a Kimi-K2 plan formats a few hundred thousand names, and snprintf
 * was a fifth of its instructions. */
static size_t put_dec(char *out, int64_t v)
{
    char tmp[24];
    size_t n = 0, sign = v < 0;
    uint64_t u = sign ? 0 - (uint64_t)v : (uint64_t)v;
    if (sign)
        *out++ = '-';
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n + sign;
}

/* The pattern with {L} as the layer and {k} / {e} as the expert (a
 * negative value is printed as it is). */
char *rf_model_name(const char *pattern, int64_t layer, int64_t expert)
{
    size_t plen = strlen(pattern), holes = 0;
    for (const char *p = strchr(pattern, '{'); p; p = strchr(p + 1, '{'))
        holes++;
    /* every placeholder (3 bytes) becomes at most 20 digits */
    char *out = malloc(plen + holes * 20 + 1);
    if (!out)
        return NULL;
    size_t len = 0;
    for (const char *p = pattern; *p;) {
        const char *b = strchr(p, '{');
        size_t run = b ? (size_t)(b - p) : strlen(p);
        memcpy(out + len, p, run);
        len += run;
        p += run;
        if (!*p)
            break;
        if (p[1] && p[2] == '}' && (p[1] == 'L' || p[1] == 'k' || p[1] == 'e')) {
            len += put_dec(out + len, p[1] == 'L' ? layer : expert);
            p += 3;
        } else {
            out[len++] = *p++;
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
    return rf_model_instances_ex(m, false, false, fn, arg);
}

/* The entries of layer l (kind k) in table order: the decoder block's by
 * kind, and in an MTP layer its own (REFIT_SCOPE_MTP). */
static int layer_instances(const refit_model_t *m, int64_t l, enum refit_layer_kind k, bool mtp_layer, int64_t *vals,
                           rf_instance_fn fn, void *arg)
{
    int rc = 0;
    for (size_t i = 0; !rc && i < m->n_entries; i++) {
        const struct refit_model_entry *e = &m->entries[i];
        bool present = entry_present(m, e);
        if (is_global(e->scope) || (e->scope == REFIT_SCOPE_DENSE && k != REFIT_LAYER_DENSE) ||
            (e->scope == REFIT_SCOPE_MOE && k != REFIT_LAYER_MOE) || (e->scope == REFIT_SCOPE_MTP && !mtp_layer))
            continue;
        if (rf_entry_val(m, e)->per_layer)
            rc = rf_entry_present_at(m, e, l, vals, &present);
        if (!rc && present)
            rc = fn(arg, e, l);
    }
    return rc;
}

/* Global entries first, then layer by layer in table order, so layouts
 * list tensors the way checkpoints do; the MTP layers last. */
int rf_model_instances_ex(const refit_model_t *m, bool tied_copies, bool mtp, rf_instance_fn fn, void *arg)
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
    /* scratch for entries whose `when` names a per-layer dimension */
    int64_t *vals = m->layer_vals ? malloc((m->spec->n_dims + 1) * sizeof(*vals)) : NULL;
    if (m->layer_vals && !vals)
        return REFIT_ENOMEM;
    int rc = 0;
    for (int64_t l = 0; !rc && l < s->n_layers; l++)
        rc = layer_instances(m, l, m->kinds[l], false, vals, fn, arg);
    enum refit_layer_kind mk = rf_model_mtp_block(m);
    for (int64_t l = s->n_layers; !rc && mtp && mk && l < s->n_layers + s->n_mtp_layers; l++)
        rc = layer_instances(m, l, mk, true, vals, fn, arg);
    free(vals);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Building */

void *rf_lay_alloc(refit_layout_t *lay, size_t n)
{
    return lay->arena ? rf_arena_alloc(lay->arena, n) : malloc(n ? n : 1);
}

static void lay_free(refit_layout_t *lay, void *p)
{
    if (!lay->arena)
        free(p);
}

/* realloc, in the arena a copy (the old bytes stay until its reset). */
static void *lay_grow(refit_layout_t *lay, void *p, size_t old, size_t n)
{
    if (!lay->arena)
        return realloc(p, n);
    void *q = rf_arena_alloc(lay->arena, n);
    if (q && old)
        memcpy(q, p, old);
    return q;
}

/* XXH3 rather than a byte-at-a-time hash: a Kimi-K2 plan interns and
 * looks up about half a million names of ~50 bytes. */
static uint64_t hash_str(const char *s)
{
    return XXH3_64bits(s, strlen(s));
}

static int hash_grow(refit_layout_t *lay)
{
    size_t cap = lay->hash_cap ? lay->hash_cap * 2 : 256;
    uint32_t *h = rf_lay_alloc(lay, cap * sizeof(*h));
    if (!h)
        return REFIT_ENOMEM;
    memset(h, 0, cap * sizeof(*h));
    for (size_t i = 0; i < lay->n_src; i++) {
        size_t j = hash_str(lay->src[i].name) & (cap - 1);
        while (h[j])
            j = (j + 1) & (cap - 1);
        h[j] = (uint32_t)i + 1;
    }
    lay_free(lay, lay->hash);
    lay->hash = h;
    lay->hash_cap = cap;
    return 0;
}

int rf_lay_find_src(const refit_layout_t *lay, const char *name, uint32_t *out)
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

/* A copy of name in the layout's name blocks. */
static char *name_copy(refit_layout_t *lay, const char *name)
{
    size_t n = strlen(name) + 1;
    struct rf_lay_block *b = lay->names;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > 60000 ? n : 60000;
        b = rf_lay_alloc(lay, sizeof(*b) + cap);
        if (!b)
            return NULL;
        b->next = lay->names;
        b->used = 0;
        b->cap = cap;
        lay->names = b;
    }
    char *out = b->bytes + b->used;
    memcpy(out, name, n);
    b->used += n;
    return out;
}

/* Source index of an HF tensor, added on first use. */
int rf_lay_intern_src(refit_layout_t *lay, const char *name, int ndim, int64_t rows, int64_t cols,
                      uint32_t *out)
{
    if (!rf_lay_find_src(lay, name, out))
        return 0;
    if ((lay->n_src + 1) * 2 > lay->hash_cap && hash_grow(lay))
        return REFIT_ENOMEM;
    if (lay->n_src == lay->cap_src) {
        size_t cap = lay->cap_src ? lay->cap_src * 2 : 64;
        struct refit_layout_src *s = lay_grow(lay, lay->src, lay->n_src * sizeof(*s), cap * sizeof(*s));
        if (!s)
            return REFIT_ENOMEM;
        lay->src = s;
        lay->cap_src = cap;
    }
    struct refit_layout_src *s = &lay->src[lay->n_src];
    s->name = name_copy(lay, name);
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
 * previous piece when both sides continue it row-wise.  rf_lay_finish() groups
 * the pieces by tensor. */
int rf_lay_add_piece(refit_layout_t *lay, uint32_t src, int64_t sr, int64_t sc, int64_t di,
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
        struct refit_layout_piece *n = lay_grow(lay, lay->pieces, lay->n_pieces * sizeof(*n), cap * sizeof(*n));
        if (n)
            lay->pieces = n;
        uint32_t *o = n ? lay_grow(lay, lay->owner, lay->n_pieces * sizeof(*o), cap * sizeof(*o)) : NULL;
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
struct rf_lay_fparts *rf_lay_fparts_get(refit_layout_t *lay, struct ltensor *t)
{
    if (t->fparts)
        return &lay->fparts[t->fparts - 1];
    if (lay->n_fparts == lay->cap_fparts) {
        size_t cap = lay->cap_fparts ? lay->cap_fparts * 2 : 64;
        struct rf_lay_fparts *n =
            cap < UINT32_MAX ? lay_grow(lay, lay->fparts, lay->n_fparts * sizeof(*n), cap * sizeof(*n)) : NULL;
        if (!n)
            return NULL;
        lay->fparts = n;
        lay->cap_fparts = cap;
    }
    struct rf_lay_fparts *f = &lay->fparts[lay->n_fparts++];
    f->n = 0;
    t->fparts = (uint32_t)lay->n_fparts;
    return f;
}

int rf_lay_begin_tensor(refit_layout_t *lay, char *name, const struct refit_model_entry *e,
                        int64_t layer, int64_t expert, int ndim, int64_t d0, int64_t d1, int64_t d2)
{
    if (!name)
        return REFIT_ENOMEM;
    if (lay->arena) { /* the name joins the source names' blocks */
        char *in = name_copy(lay, name);
        free(name);
        if (!(name = in))
            return REFIT_ENOMEM;
    }
    if (lay->n == lay->cap) {
        size_t cap = lay->cap ? lay->cap * 2 : 64;
        struct ltensor *n = lay_grow(lay, lay->t, lay->n * sizeof(*n), cap * sizeof(*n));
        if (!n) {
            lay_free(lay, name);
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
int rf_lay_part_of(const refit_model_t *m, const struct refit_model_entry *e, int i, int64_t layer,
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

int rf_lay_src_of(refit_layout_t *lay, const struct part *p, uint32_t *out)
{
    return rf_lay_intern_src(lay, p->name, p->ndim, p->rows, p->cols, out);
}

int rf_lay_divides(const char *what, int64_t n, int64_t by, const char *name)
{
    if (by <= 0 || n % by)
        return refit_error_set(REFIT_EINVAL, "%s: %s %lld is not divisible by %lld", name, what,
                               (long long)n, (long long)by);
    return 0;
}

/* A TP split of n rows (or columns) made of whole units of `unit` (an
 * attention head's rows: the role's first argument, 0 for none) must not
 * cut a unit: every rank holds whole heads. */
int rf_lay_divides_units(const char *what, int64_t n, int64_t unit, int64_t by, const char *name)
{
    if (unit <= 0 || by <= 1)
        return rf_lay_divides(what, n, by, name);
    if (n % unit || (n / unit) % by)
        return refit_error_set(REFIT_EINVAL,
                               "%s: %s %lld are %lld heads of %lld, which tensor parallelism %lld would cut "
                               "(every rank must hold whole heads)",
                               name, what, (long long)n, (long long)(n / unit), (long long)unit, (long long)by);
    return 0;
}

int rf_lay_skip_name(const struct refit_convert_opts *o, const char *name)
{
    return o && o->n_skip && rf_match_any(name, o->skip, o->n_skip);
}

int rf_lay_hand_out(refit_layout_t *lay, int rc, refit_layout_t **out)
{
    if (rc) {
        refit_layout_destroy(lay);
        return rc;
    }
    *out = lay;
    return 0;
}

/* Group the pieces by tensor (stable: a tensor's pieces keep their order)
 * and point every tensor at its own. */
int rf_lay_finish(refit_layout_t *lay)
{
    bool sorted = true;
    for (size_t k = 1; k < lay->n_pieces && sorted; k++)
        sorted = lay->owner[k - 1] <= lay->owner[k];
    if (!sorted) {
        struct refit_layout_piece *np = rf_lay_alloc(lay, (lay->n_pieces ? lay->n_pieces : 1) * sizeof(*np));
        size_t *at = calloc(lay->n + 1, sizeof(*at));
        if (!np || !at) {
            lay_free(lay, np);
            free(at);
            return REFIT_ENOMEM;
        }
        for (size_t i = 0; i < lay->n; i++)
            at[i + 1] = at[i] + lay->t[i].count;
        for (size_t i = 0; i < lay->n; i++)
            lay->t[i].first = at[i];
        for (size_t k = 0; k < lay->n_pieces; k++)
            np[at[lay->owner[k]]++] = lay->pieces[k];
        lay_free(lay, lay->pieces);
        free(at);
        lay->pieces = np;
        lay->cap_pieces = lay->n_pieces ? lay->n_pieces : 1;
        lay_free(lay, lay->owner);
        lay->owner = NULL;
    }
    for (size_t i = 0; i < lay->n; i++) {
        lay->t[i].pub.pieces = lay->pieces + lay->t[i].first;
        lay->t[i].pub.n_pieces = lay->t[i].count;
    }
    return 0;
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
    if (lay->arena) { /* everything but the object is the arena's */
        free(lay);
        return;
    }
    for (size_t i = 0; i < lay->n; i++)
        free((char *)lay->t[i].pub.name);
    for (struct rf_lay_block *b = lay->names, *next; b; b = next) {
        next = b->next;
        free(b);
    }
    free(lay->t);
    free(lay->fparts);
    free(lay->pieces);
    free(lay->owner);
    free(lay->src);
    free(lay->hash);
    free(lay);
}
