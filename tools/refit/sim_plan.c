/* sim_plan.c — what every receiver of a simulated job moves.
 *
 * Every engine holds the same layout at the same tp rank, so the receivers
 * of one position plan identically: each distinct position is planned once,
 * in a process of its own (so its time and its peak memory are its own, as
 * on the receiver's host), by the real planner (refit_receiver_plan_dry on
 * the trainer ranks' positions).  The planner's result is flat totals
 * (wire bytes, descriptors); the per-source split, which the simulator and
 * the schedule need, comes from the same public composition the planner
 * starts from (refit_layout_compose): each composed piece becomes an item
 * with its candidate trainer ranks and the bytes it puts on the wire under
 * the planner's rules — a run of whole rows lands directly, anything
 * narrower is fetched as whole source rows into scratch (once per source
 * row range), and in push mode with trainer-side FP8 a tensor whose every
 * 128-row band comes from one candidate set travels as e4m3 plus scales.
 * The items' total is printed beside the planner's wire bytes, so any
 * drift between the two is visible in every report. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "refit/convert.h"
#include "refit/refit.h"
#include "refit/status.h"
#include "sim.h"

extern char **environ;

#define SIM_MAX_CAND 64 /* the planner's RF_MAX_CAND */

static long maxrss_kib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

/* The job's cluster file: a throwaway file store, tcp, the model. */
static int write_cluster(const struct sim_opts *o, const char *dir, char *path, size_t n)
{
    char model[PATH_MAX];
    if (!realpath(o->model, model))
        return refit_error_set(REFIT_ENOENT, "--model %s: %s", o->model, strerror(errno));
    size_t ml = strlen(model);
    int json = ml > 5 && !strcmp(model + ml - 5, ".json");
    snprintf(path, n, "%s/cluster.yaml", dir);
    FILE *f = fopen(path, "w");
    if (!f)
        return refit_error_set(REFIT_EIO, "%s: %s", path, strerror(errno));
    fprintf(f, "store:\n  plugin: file\n  file:\n    path: %s/store\ntransport:\n  plugin: tcp\n", dir);
    fprintf(f, "model:\n  %s: %s\n%s  target: vllm\n  fp8:\n    enabled: %s\n    rule: trainer\n",
            json ? "hf_config" : "file", model, json ? "  plugin: auto\n" : "", o->fp8 ? "true" : "false");
    return fclose(f) ? refit_error_set(REFIT_EIO, "%s: %s", path, strerror(errno)) : 0;
}

/* ------------------------------------------------------------------ */
/* Items of one position (in the planning process) */

struct raw {
    struct sim_item it;
    uint32_t dst, key_rank, key_tensor;
    uint64_t dst_row, dst_col, src_row, rows;
    int scratch;
};

static void dims(const struct refit_layout_tensor *t, uint64_t *rows, uint64_t *cols, uint64_t *slot)
{
    *cols = t->ndim >= 2 ? (uint64_t)t->shape[t->ndim - 1] : 1;
    *rows = 1;
    for (int d = 0; d < t->ndim - 1; d++)
        *rows *= (uint64_t)t->shape[d];
    if (t->ndim == 1)
        *rows = (uint64_t)t->shape[0];
    *slot = t->ndim == 3 ? (uint64_t)t->shape[1] : *rows;
}

/* Push with trainer FP8: a destination travels quantized when every piece
 * spans all its columns and each 128-row band (within an expert slot) has
 * one candidate set, as the push planner's units require. */
static int band_ok(const struct raw *r, size_t n, const struct refit_layout_tensor *lt, uint64_t slot,
                   const uint32_t *cand)
{
    uint64_t rows, cols, sl;
    dims(lt, &rows, &cols, &sl);
    uint64_t per_slot = (slot + 127) / 128;
    uint64_t band = UINT64_MAX;
    uint32_t sig_at = 0, sig_n = 0;
    for (size_t i = 0; i < n; i++) {
        if (r[i].it.ncand == 0 || r[i].dst_col != 0 || r[i].rows == 0)
            return 0;
        uint64_t w = r[i].it.weight / 2; /* elements */
        if (w / r[i].rows != cols)
            return 0;
        uint64_t s = r[i].dst_row / slot, row = r[i].dst_row % slot;
        uint64_t b0 = s * per_slot + row / 128, b1 = s * per_slot + (row + r[i].rows - 1) / 128;
        if (b0 == band && (sig_n != r[i].it.ncand ||
                           memcmp(cand + sig_at, cand + r[i].it.cand_at, sig_n * sizeof(uint32_t))))
            return 0;
        band = b1;
        sig_at = r[i].it.cand_at;
        sig_n = r[i].it.ncand;
    }
    return 1;
}

static int cmp_raw_dst(const void *a, const void *b)
{
    const struct raw *x = a, *y = b;
    if (x->dst != y->dst)
        return x->dst < y->dst ? -1 : 1;
    if (x->dst_row != y->dst_row)
        return x->dst_row < y->dst_row ? -1 : 1;
    return (x->dst_col > y->dst_col) - (x->dst_col < y->dst_col);
}

/* Scratch fetches of the same source rows are one fetch. */
static int cmp_raw_fetch(const void *a, const void *b)
{
    const struct raw *x = a, *y = b;
    if (x->scratch != y->scratch)
        return x->scratch - y->scratch;
    if (!x->scratch)
        return cmp_raw_dst(a, b);
    if (x->key_rank != y->key_rank)
        return x->key_rank < y->key_rank ? -1 : 1;
    if (x->key_tensor != y->key_tensor)
        return x->key_tensor < y->key_tensor ? -1 : 1;
    if (x->src_row != y->src_row)
        return x->src_row < y->src_row ? -1 : 1;
    if (x->rows != y->rows)
        return x->rows < y->rows ? -1 : 1;
    return cmp_raw_dst(a, b);
}

/* The planner's tie order: largest first, then by destination. */
static int cmp_raw_plan(const void *a, const void *b)
{
    const struct raw *x = a, *y = b;
    if (x->it.weight != y->it.weight)
        return x->it.weight > y->it.weight ? -1 : 1;
    return cmp_raw_dst(a, b);
}

/* Pieces of the composition as raw items with their candidates. */
static int raw_items(uint64_t threshold, const refit_layout_t *lay,
                     const refit_layout_t *const *meg, const refit_layout_xmap_t *xm, struct raw **out,
                     size_t *n_out, uint32_t **cand_out, size_t *nc_out)
{
    size_t n = refit_layout_xmap_count(xm);
    struct raw *r = calloc(n ? n : 1, sizeof(*r));
    uint32_t *cand = malloc((n ? n : 1) * SIM_MAX_CAND * sizeof(uint32_t));
    if (!r || !cand) {
        free(r);
        free(cand);
        return REFIT_ENOMEM;
    }
    size_t nc = 0;
    for (size_t i = 0; i < n; i++) {
        const struct refit_layout_xpiece *x = refit_layout_xmap_at(xm, i);
        const struct refit_layout_tensor *lt = refit_layout_at(lay, x->dst);
        uint64_t rows, cols, slot;
        dims(lt, &rows, &cols, &slot);
        struct raw *p = &r[i];
        p->dst = x->dst;
        p->dst_row = (uint64_t)x->dst_index * slot + (uint64_t)x->dst_row;
        p->dst_col = (uint64_t)x->dst_col;
        p->rows = (uint64_t)x->rows;
        p->it.cand_at = (uint32_t)nc;
        const struct refit_layout_cand *c0 = &x->cand[0];
        for (size_t c = 0; c < x->n_cand && p->it.ncand < SIM_MAX_CAND; c++) {
            /* Same bytes elsewhere in that rank's tensor: one placement
             * (the planner keeps those at the first candidate's place). */
            if (x->cand[c].src_row != c0->src_row || x->cand[c].src_col != c0->src_col)
                continue;
            cand[nc++] = x->cand[c].rank;
            p->it.ncand++;
        }
        const struct refit_layout_tensor *st = refit_layout_at(meg[c0->rank], c0->tensor);
        uint64_t sr, sc, ss;
        dims(st, &sr, &sc, &ss);
        p->it.weight = (uint64_t)x->rows * (uint64_t)x->cols * 2;
        int whole = (uint64_t)x->cols == sc && (uint64_t)x->cols == cols;
        p->scratch = !(whole && p->it.weight >= threshold);
        p->it.wire = p->scratch ? (uint64_t)x->rows * sc * 2 : p->it.weight;
        p->key_rank = c0->rank;
        p->key_tensor = c0->tensor;
        p->src_row = (uint64_t)c0->src_row;
    }
    *out = r;
    *n_out = n;
    *cand_out = cand;
    *nc_out = nc;
    return 0;
}

/* Trainer-side FP8 (push): the quantized tensors' items carry e4m3 bytes
 * plus a float scale per 128x128 block. */
static void push_fp8(struct raw *r, size_t n, const refit_layout_t *lay, const uint32_t *cand)
{
    qsort(r, n, sizeof(*r), cmp_raw_dst);
    for (size_t a = 0; a < n;) {
        size_t b = a;
        while (b < n && r[b].dst == r[a].dst)
            b++;
        const struct refit_layout_tensor *lt = refit_layout_at(lay, r[a].dst);
        uint64_t rows, cols, slot;
        dims(lt, &rows, &cols, &slot);
        if (lt->fp8 && (lt->ndim == 2 || lt->ndim == 3) && band_ok(r + a, b - a, lt, slot, cand))
            for (size_t i = a; i < b; i++)
                r[i].it.wire = r[i].it.weight / 2 + (r[i].rows + 127) / 128 * ((cols + 127) / 128) * 4;
        a = b;
    }
}

/* Merge identical scratch fetches and order the items as the planner
 * considers them. */
static size_t merge_items(struct raw *r, size_t n)
{
    qsort(r, n, sizeof(*r), cmp_raw_fetch);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        struct raw *q = m ? &r[m - 1] : NULL;
        if (q && r[i].scratch && q->scratch && q->key_rank == r[i].key_rank && q->key_tensor == r[i].key_tensor &&
            q->src_row == r[i].src_row && q->rows == r[i].rows) {
            q->it.weight += r[i].it.weight;
            continue;
        }
        r[m++] = r[i];
    }
    qsort(r, m, sizeof(*r), cmp_raw_plan);
    return m;
}

static int position_items(const struct sim_opts *o, refit_context_t *ctx, int j, struct sim_pos *sp,
                          uint64_t *model_bytes)
{
    const refit_config_t *cfg = refit_context_config(ctx);
    const refit_model_t *m = refit_context_model(ctx);
    struct refit_convert_opts co = {0};
    uint64_t threshold = 0;
    int rc = refit_convert_opts_from_config(cfg, &co);
    if (!rc)
        rc = refit_config_size(cfg, "refit.scatter_threshold", &threshold);
    co.tp = o->e_tp;
    co.rank = j;
    co.ep = o->e_ep > 1 ? o->e_ep : 0;
    refit_layout_t *lay = NULL;
    if (!rc)
        rc = refit_layout_target(m, &co, &lay);
    /* Trainer ranks with the same position hold the same layout. */
    int nd = o->t_tp * o->t_ep;
    refit_layout_t **dist = calloc((size_t)nd, sizeof(*dist));
    const refit_layout_t **meg = calloc((size_t)o->t_gpus, sizeof(*meg));
    if (!rc && (!dist || !meg))
        rc = REFIT_ENOMEM;
    for (int r = 0; !rc && r < o->t_gpus; r++) {
        int k = (r % o->t_tp) * o->t_ep + r % o->t_ep;
        struct refit_megatron_rank mr = {.tp = o->t_tp, .ep = o->t_ep, .etp = 1, .tp_rank = r % o->t_tp,
                                         .ep_rank = r % o->t_ep};
        if (!dist[k])
            rc = refit_layout_megatron(m, &mr, &co, &dist[k]);
        meg[r] = dist[k];
    }
    refit_layout_xmap_t *xm = NULL;
    if (!rc)
        rc = refit_layout_compose(lay, meg, (size_t)o->t_gpus, &xm);
    struct raw *raw = NULL;
    size_t n = 0;
    if (!rc)
        rc = raw_items(threshold, lay, meg, xm, &raw, &n, &sp->cand, &sp->n_cand);
    if (!rc && o->push && o->fp8)
        push_fp8(raw, n, lay, sp->cand);
    if (!rc) {
        n = merge_items(raw, n);
        sp->items = malloc((n ? n : 1) * sizeof(*sp->items));
        if (!sp->items)
            rc = REFIT_ENOMEM;
    }
    for (size_t i = 0; !rc && i < n; i++) {
        sp->items[i] = raw[i].it;
        sp->attr_wire += raw[i].it.wire;
    }
    sp->n_items = rc ? 0 : n;
    /* The whole model once, in bf16, for the report. */
    if (!rc && j == 0) {
        struct refit_convert_opts h = {.target = REFIT_TARGET_HF, .tp = 1};
        refit_layout_t *hl = NULL;
        if (!refit_layout_target(m, &h, &hl))
            for (size_t t = 0; t < refit_layout_count(hl); t++) {
                const struct refit_layout_tensor *lt = refit_layout_at(hl, t);
                uint64_t e = 1;
                for (int d = 0; d < lt->ndim; d++)
                    e *= (uint64_t)lt->shape[d];
                *model_bytes += e * 2;
            }
        refit_layout_destroy(hl);
    }
    free(raw);
    refit_layout_xmap_destroy(xm);
    for (int k = 0; dist && k < nd; k++)
        refit_layout_destroy(dist[k]);
    free(dist);
    free(meg);
    refit_layout_destroy(lay);
    return rc ? refit_error_push(rc, "dividing receiver position %d's pieces among sources", j) : 0;
}

/* ------------------------------------------------------------------ */
/* The planning process of one position */

struct pos_head {
    double plan_s;
    uint64_t plan_wire, plan_desc, plan_pieces, kept, scratch, attr_wire, model_bytes;
    long rss_base, rss_peak;
    uint64_t n_items, n_cand;
    int rc;
    char name[128];
    char err[1024];
};

static int plan_position(const struct sim_opts *o, const char *cluster, int j, struct sim_pos *sp,
                         struct pos_head *h)
{
    refit_context_t *ctx = NULL;
    refit_receiver_t *rcv = NULL;
    struct refit_target tg = {.tp_rank = j, .tp_size = o->e_tp, .ep_size = o->e_ep > 1 ? o->e_ep : 0};
    struct refit_parallel *src = calloc((size_t)o->t_gpus, sizeof(*src));
    int rc = src ? refit_context_create(cluster, NULL, 0, &ctx) : REFIT_ENOMEM;
    if (!rc)
        rc = refit_receiver_create(ctx, &tg, "sim", &rcv);
    for (int r = 0; src && r < o->t_gpus; r++)
        src[r] = (struct refit_parallel){.tp_rank = r % o->t_tp, .tp_size = o->t_tp, .pp_size = 1,
                                         .ep_rank = r % o->t_ep, .ep_size = o->t_ep, .etp_size = 1};
    h->rss_base = maxrss_kib();
    struct refit_plan_info info = {.size = sizeof(info)};
    double t0 = cli_now();
    if (!rc)
        rc = refit_receiver_plan_dry(rcv, src, (size_t)o->t_gpus, &info);
    h->plan_s = cli_now() - t0;
    h->rss_peak = maxrss_kib();
    h->plan_wire = info.wire_bytes;
    h->plan_desc = info.descriptors;
    h->plan_pieces = info.pieces;
    h->kept = info.staging_bytes;
    h->scratch = info.scratch_bytes;
    const char *name = NULL;
    if (!rc && refit_config_str(refit_context_config(ctx), "model.name", &name) == 0 && name)
        snprintf(h->name, sizeof(h->name), "%s", name);
    refit_error_clear();
    if (!rc)
        rc = position_items(o, ctx, j, sp, &h->model_bytes);
    h->attr_wire = sp->attr_wire;
    refit_receiver_destroy(rcv);
    refit_context_destroy(ctx);
    free(src);
    return rc ? refit_error_push(rc, "planning receiver position %d (tp rank %d of %d)", j, j, o->e_tp) : 0;
}

static int child_write(const char *path, const struct pos_head *h, const struct sim_pos *sp)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return REFIT_EIO;
    int ok = fwrite(h, sizeof(*h), 1, f) == 1;
    if (ok && h->n_items)
        ok = fwrite(sp->items, sizeof(*sp->items), sp->n_items, f) == sp->n_items;
    if (ok && h->n_cand)
        ok = fwrite(sp->cand, sizeof(*sp->cand), sp->n_cand, f) == sp->n_cand;
    return fclose(f) == 0 && ok ? 0 : REFIT_EIO;
}

/* The store and transport of the environment are not the plan's (the
 * simulator plans against its own throwaway store): drop their overrides. */
static void drop_service_env(void)
{
    for (int again = 1; again;) {
        again = 0;
        for (char **e = environ; *e; e++)
            if (!strncmp(*e, "REFIT_STORE_", 12) || !strncmp(*e, "REFIT_TRANSPORT_", 16)) {
                char name[256];
                snprintf(name, sizeof(name), "%.*s", (int)(strcspn(*e, "=")), *e);
                unsetenv(name);
                again = 1;
                break;
            }
    }
}

static void child_main(const struct sim_opts *o, const char *cluster, const char *dir, int j)
{
    drop_service_env();
    struct sim_pos sp = {0};
    struct pos_head h = {0};
    h.rc = plan_position(o, cluster, j, &sp, &h);
    if (h.rc)
        snprintf(h.err, sizeof(h.err), "%s", refit_error_message());
    h.n_items = sp.n_items;
    h.n_cand = sp.n_cand;
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/pos%d.bin", dir, j);
    int rc = child_write(path, &h, &sp);
    free(sp.items);
    free(sp.cand);
    fflush(NULL);
    _exit(rc ? 3 : 0);
}

static int read_child(const struct sim_opts *o, const char *dir, int j, struct sim_pos *sp, struct sim_plan *p)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/pos%d.bin", dir, j);
    FILE *f = fopen(path, "rb");
    struct pos_head h;
    if (!f || fread(&h, sizeof(h), 1, f) != 1) {
        if (f)
            fclose(f);
        return refit_error_set(REFIT_EIO, "planning position %d: no result (the process failed)", j);
    }
    if (h.rc) {
        fclose(f);
        return refit_error_set(h.rc, "%s", h.err);
    }
    sp->plan_s = h.plan_s;
    sp->plan_wire = h.plan_wire;
    sp->plan_desc = h.plan_desc;
    sp->plan_pieces = h.plan_pieces;
    sp->kept = h.kept;
    sp->scratch = h.scratch;
    sp->attr_wire = h.attr_wire;
    sp->rss_base_kib = h.rss_base;
    sp->rss_peak_kib = h.rss_peak;
    sp->n_items = h.n_items;
    sp->n_cand = h.n_cand;
    sp->items = malloc((h.n_items ? h.n_items : 1) * sizeof(*sp->items));
    sp->cand = malloc((h.n_cand ? h.n_cand : 1) * sizeof(*sp->cand));
    int ok = sp->items && sp->cand && fread(sp->items, sizeof(*sp->items), h.n_items, f) == h.n_items &&
             fread(sp->cand, sizeof(*sp->cand), h.n_cand, f) == h.n_cand;
    fclose(f);
    if (!ok)
        return refit_error_set(REFIT_EIO, "planning position %d: short result", j);
    for (size_t i = 0; i < sp->n_items; i++)
        if ((uint64_t)sp->items[i].cand_at + sp->items[i].ncand > sp->n_cand)
            return refit_error_set(REFIT_EPROTO, "planning position %d: item %zu out of range", j, i);
    if (j == 0) {
        p->model_bytes = h.model_bytes;
        const char *base = strrchr(o->model, '/');
        snprintf(p->model_name, sizeof(p->model_name), "%s", h.name[0] ? h.name : base ? base + 1 : o->model);
    }
    return 0;
}

/* ------------------------------------------------------------------ */

static void rm_dir(const char *dir)
{
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "refit sim: could not remove %s\n", dir);
}

int sim_plan_make(const struct sim_opts *o, struct sim_plan *p)
{
    memset(p, 0, sizeof(*p));
    p->n_pos = o->e_tp;
    p->n_src = o->t_gpus;
    p->pos = calloc((size_t)p->n_pos, sizeof(*p->pos));
    if (!p->pos)
        return REFIT_ENOMEM;
    char dir[] = "/tmp/refit-sim-XXXXXX", cluster[PATH_MAX];
    if (!mkdtemp(dir))
        return refit_error_set(REFIT_EIO, "mkdtemp: %s", strerror(errno));
    int rc = write_cluster(o, dir, cluster, sizeof(cluster));
    double t0 = cli_now();
    /* Positions in batches of `jobs` processes. */
    int jobs = o->jobs > 0 ? o->jobs : 1;
    fflush(NULL);
    for (int at = 0; !rc && at < p->n_pos; at += jobs) {
        pid_t pid[64];
        int nj = p->n_pos - at < jobs ? p->n_pos - at : jobs;
        for (int k = 0; k < nj; k++) {
            pid[k] = fork();
            if (pid[k] == 0)
                child_main(o, cluster, dir, at + k);
            if (pid[k] < 0)
                rc = refit_error_set(REFIT_EIO, "fork: %s", strerror(errno));
        }
        for (int k = 0; k < nj; k++) {
            int st = 0;
            if (pid[k] > 0 && waitpid(pid[k], &st, 0) > 0 && !rc && !(WIFEXITED(st) && WEXITSTATUS(st) == 0))
                rc = refit_error_set(REFIT_EIO, "planning position %d: process ended with %s %d", at + k,
                                     WIFSIGNALED(st) ? "signal" : "status",
                                     WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
        }
        for (int k = 0; !rc && k < nj; k++)
            rc = read_child(o, dir, at + k, &p->pos[at + k], p);
    }
    p->wall_s = cli_now() - t0;
    rm_dir(dir);
    if (rc)
        sim_plan_free(p);
    return rc;
}

void sim_plan_free(struct sim_plan *p)
{
    for (int j = 0; p->pos && j < p->n_pos; j++) {
        free(p->pos[j].items);
        free(p->pos[j].cand);
    }
    free(p->pos);
    memset(p, 0, sizeof(*p));
}
