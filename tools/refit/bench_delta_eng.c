/* bench_delta_eng.c — `refit bench delta --engine`: the training of
 * bench_delta.c, each step published through the engine and pulled by a
 * full refit beside a delta refit (docs/delta.md).
 *
 * Training runs first, group by group as in bench_delta.c (fp32 master and
 * Adam moments for one group at a time, not 12 bytes per parameter of the
 * whole model): it writes the first version's bf16 into the model buffer
 * the publisher reads, and per step the list of elements whose bf16 changed
 * and their new values (6 bytes each; at RL change rates a few % of the
 * model).  The engine phase then replays it: per version the changes are
 * written into the publisher's tensors, the publisher (refit.delta.enabled,
 * zero-copy) publishes, and in this process, over tcp on loopback and a file
 * store, a receiver with delta off (the full refit) and one with delta on
 * pull it (--fp8: the same pair again with an FP8 target).  Per version:
 * the changed fraction, the wire bytes of each, their ratio, the publish
 * (delta encode included) and pull times, and whether every destination
 * byte of the delta receiver equals the full receiver's. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "bench_delta.h"
#include "cli.h"
#include "refit/refit.h"
#include "refit/status.h"

/* The elements of the model whose bf16 changed in one step. */
struct be_changes {
    uint32_t *idx; /* element index in the model buffer, ascending */
    uint16_t *val;
    size_t n, cap;
};

struct be_run {
    const struct bd_opts *o;
    struct bd_model md;
    uint16_t *model;  /* every trainer tensor, back to back: what the publisher reads */
    uint64_t *toff;   /* per layout tensor: its first element in model */
    uint64_t elems;
    struct be_changes *ch; /* per step */
    char dir[256], cfg[300];
    refit_context_t *pctx, *rctx[4];
    refit_publisher_t *pub;
    refit_receiver_t *rcv[4]; /* full, delta, [fp8 full, fp8 delta] */
    int n_rcv;
};

static int changes_push(struct be_changes *c, uint32_t idx, uint16_t val)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : (size_t)1 << 16;
        uint32_t *i = realloc(c->idx, cap * sizeof(*i));
        if (i)
            c->idx = i;
        uint16_t *v = i ? realloc(c->val, cap * sizeof(*v)) : NULL;
        if (!v)
            return refit_error_set(REFIT_ENOMEM, "bench delta --engine: %zu changes of a step", cap);
        c->val = v;
        c->cap = cap;
    }
    c->idx[c->n] = idx;
    c->val[c->n++] = val;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Training: the first version into the model buffer, each step's changes */

static int train_group(struct be_run *r, struct bd_piece *p, size_t np, struct bd_group *g)
{
    const struct bd_opts *o = r->o;
    bd_group_start(o, p, np, g);
    for (size_t i = 0; i < np; i++)
        memcpy(r->model + r->toff[p[i].t] + p[i].e0, g->old + p[i].at, p[i].n * 2);
    for (int s = 1; s <= o->steps; s++) {
        for (size_t i = 0; i < np; i++)
            bd_adam_piece(o, &p[i], o->warmup + s, g->w + p[i].at, g->m + p[i].at, g->v + p[i].at);
        bd_publish(g->w, g->cur, g->n);
        for (size_t i = 0; i < np; i++) {
            const uint16_t *a = g->old + p[i].at, *b = g->cur + p[i].at;
            uint64_t base = r->toff[p[i].t] + p[i].e0;
            for (uint64_t k = 0; k < p[i].n; k++)
                if (a[k] != b[k]) {
                    int rc = changes_push(&r->ch[s - 1], (uint32_t)(base + k), b[k]);
                    if (rc)
                        return rc;
                }
        }
        uint16_t *t = g->old;
        g->old = g->cur;
        g->cur = t;
    }
    return 0;
}

static int train(struct be_run *r)
{
    const struct bd_opts *o = r->o;
    struct bd_piece *p = NULL;
    size_t np = 0, *cut = NULL, ng = 0, max_elems = 0;
    uint64_t max_delta = 0, max_chunks = 0;
    int rc = bd_model_pieces(o, &r->md, &p, &np, &r->elems);
    if (!rc && r->elems >= UINT32_MAX)
        rc = refit_error_set(REFIT_ERANGE, "bench delta --engine: %llu parameters (at most 2^32 - 1)",
                             (unsigned long long)r->elems);
    size_t nt = rc ? 0 : refit_layout_count(r->md.lay);
    if (!rc && !(r->toff = calloc(nt + 1, sizeof(*r->toff))))
        rc = REFIT_ENOMEM;
    for (size_t t = 0; !rc && t < nt; t++) {
        const struct refit_layout_tensor *lt = refit_layout_at(r->md.lay, t);
        uint64_t ne = 1;
        for (int d = 0; d < lt->ndim; d++)
            ne *= (uint64_t)lt->shape[d];
        r->toff[t + 1] = r->toff[t] + ne;
    }
    if (!rc && !(r->model = malloc(r->elems * 2)))
        rc = refit_error_set(REFIT_ENOMEM, "bench delta --engine: the model (%llu bytes)",
                             (unsigned long long)r->elems * 2);
    if (!rc && !(r->ch = calloc((size_t)o->steps, sizeof(*r->ch))))
        rc = REFIT_ENOMEM;
    if (!rc)
        rc = bd_groups(o, p, np, &cut, &ng, &max_elems, &max_delta, &max_chunks);
    struct bd_group g = {0};
    if (!rc)
        rc = bd_group_alloc(&g, max_elems, max_delta, max_chunks);
    for (size_t k = 0; !rc && k < ng; k++)
        rc = train_group(r, p + cut[k], cut[k + 1] - cut[k], &g);
    bd_group_free(&g);
    free(cut);
    free(p);
    return rc;
}

/* ------------------------------------------------------------------ */
/* The engine: a publisher and receivers in this process */

static int write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return refit_error_set(REFIT_EIO, "bench delta --engine: %s: %s", path, strerror(errno));
    int bad = fputs(text, f) < 0;
    bad |= fclose(f) != 0;
    return bad ? refit_error_set(REFIT_EIO, "bench delta --engine: writing %s", path) : 0;
}

static int setup_dir(struct be_run *r)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(r->dir, sizeof(r->dir), "%s/refit-bench-delta-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(r->dir))
        return refit_error_set(REFIT_EIO, "bench delta --engine: mkdtemp in %s: %s", tmp ? tmp : "/tmp",
                               strerror(errno));
    char path[400], text[2048];
    int rc = bd_model_config(r->o, text, sizeof(text));
    snprintf(path, sizeof(path), "%s/config.json", r->dir);
    if (!rc)
        rc = write_file(path, text);
    snprintf(r->cfg, sizeof(r->cfg), "%s/cluster.yaml", r->dir);
    snprintf(text, sizeof(text),
             "store:\n  plugin: file\n  namespace: bd%d\n  file:\n    path: %s/store\n    fsync: false\n"
             "transport:\n  plugin: tcp\n  timeout: 60s\n"
             "refit:\n  timeout: 120s\n  release_timeout: 120s\n  stale_after: 300s\n  heartbeat: 1s\n"
             "  receivers: %d\n  verify: full\n"
             "model:\n  plugin: auto\n  hf_config: %s/config.json\n  target: vllm\n",
             (int)getpid(), r->dir, r->o->fp8 ? 4 : 2, r->dir);
    if (!rc)
        rc = write_file(r->cfg, text);
    return rc;
}

static int context(struct be_run *r, int delta, int fp8, refit_context_t **out)
{
    const char *ovr[2] = {delta ? "refit.delta.enabled=true" : "refit.delta.enabled=false",
                          fp8 ? "model.fp8.enabled=true" : "model.fp8.enabled=false"};
    return refit_context_create(r->cfg, ovr, 2, out);
}

static int engine_open(struct be_run *r)
{
    static const char *ids[] = {"full", "delta", "fp8-full", "fp8-delta"};
    int rc = setup_dir(r);
    if (!rc)
        rc = context(r, 1, 0, &r->pctx);
    struct refit_parallel par = {.tp_rank = 0, .tp_size = 1, .ep_size = 1, .pp_size = 1, .etp_size = 1};
    if (!rc)
        rc = refit_publisher_create(r->pctx, &par, "trainer0", &r->pub);
    for (size_t t = 0; !rc && t < refit_layout_count(r->md.lay); t++) {
        const struct refit_layout_tensor *lt = refit_layout_at(r->md.lay, t);
        rc = refit_publisher_add(r->pub, lt->name, r->model + r->toff[t], REFIT_DTYPE_BF16, lt->ndim, lt->shape,
                                 REFIT_MEM_HOST);
        if (rc)
            rc = refit_error_push(rc, "bench delta --engine: adding '%s' to the publisher", lt->name);
    }
    r->n_rcv = r->o->fp8 ? 4 : 2;
    for (int k = 0; !rc && k < r->n_rcv; k++) {
        struct refit_target tg = {.tp_rank = 0, .tp_size = 1};
        rc = context(r, k & 1, k >= 2, &r->rctx[k]);
        if (!rc)
            rc = refit_receiver_create(r->rctx[k], &tg, ids[k], &r->rcv[k]);
        if (!rc)
            rc = refit_receiver_allocate(r->rcv[k]);
    }
    return rc;
}

static void rm_tree(const char *dir)
{
    /* only what setup_dir and the file store made under it */
    char cmd[600];
    if (!dir[0] || strncmp(strrchr(dir, '/') ? strrchr(dir, '/') : dir, "/refit-bench-delta-", 19))
        return;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "refit bench delta --engine: could not remove %s\n", dir);
}

static void engine_close(struct be_run *r)
{
    for (int k = 0; k < 4; k++) {
        refit_receiver_destroy(r->rcv[k]);
        refit_context_destroy(r->rctx[k]);
    }
    refit_publisher_destroy(r->pub);
    refit_context_destroy(r->pctx);
    rm_tree(r->dir);
}

/* Every destination byte of receiver b equals a's. */
static int same_bytes(refit_receiver_t *a, refit_receiver_t *b)
{
    if (refit_receiver_count(a) != refit_receiver_count(b))
        return 0;
    for (size_t i = 0; i < refit_receiver_count(a); i++) {
        struct refit_tensor_info x, y;
        if (refit_receiver_tensor(a, i, &x) || refit_receiver_tensor(b, i, &y) || x.nbytes != y.nbytes ||
            memcmp(x.ptr, y.ptr, x.nbytes))
            return 0;
    }
    return 1;
}

struct be_row {
    uint64_t changed;
    double publish_s;
    struct refit_publisher_stats ps;
    struct refit_pull_stats pull[4];
    int same[2];
};

static int version(struct be_run *r, uint64_t v, struct be_row *row)
{
    if (v > 1) {
        const struct be_changes *c = &r->ch[v - 2];
        for (size_t k = 0; k < c->n; k++)
            r->model[c->idx[k]] = c->val[k];
        row->changed = c->n;
    }
    double t0 = cli_now();
    int rc = refit_publisher_publish(r->pub, v);
    row->publish_s = cli_now() - t0;
    row->ps.size = sizeof(row->ps);
    if (!rc)
        rc = refit_publisher_stats(r->pub, &row->ps);
    for (int k = 0; !rc && k < r->n_rcv; k++) {
        row->pull[k].size = sizeof(row->pull[k]);
        rc = refit_receiver_pull(r->rcv[k], v, &row->pull[k]);
        if (rc)
            rc = refit_error_push(rc, "bench delta --engine: receiver %d pulling v%llu", k, (unsigned long long)v);
    }
    for (int k = 0; !rc && k < r->n_rcv; k += 2)
        row->same[k / 2] = same_bytes(r->rcv[k], r->rcv[k + 1]);
    return rc;
}

static double mb(uint64_t b)
{
    return (double)b / 1e6;
}

static void print_head(const struct be_run *r)
{
    printf("\n%3s %8s | %9s %9s %8s %6s | %8s %9s %9s | %9s %9s %5s %s\n", "v", "changed", "full MB", "delta MB",
           "ratio", "by d", "pub MB", "publish s", "encode s", "full s", "delta s", "fallb", "identical");
    if (r->o->fp8)
        printf("%3s %8s | %9s %9s %8s %6s | %8s %9s %9s | %9s %9s %5s %s   (FP8 target)\n", "", "", "full MB",
               "delta MB", "ratio", "by d", "", "", "", "full s", "delta s", "fallb", "identical");
}

static void print_row(const struct be_run *r, uint64_t v, const struct be_row *x)
{
    for (int k = 0; k < r->n_rcv; k += 2) {
        const struct refit_pull_stats *f = &x->pull[k], *d = &x->pull[k + 1];
        double ratio = (double)d->bytes_wire / (double)(f->bytes_wire ? f->bytes_wire : 1);
        char chg[16] = "", pub[16] = "", enc[16] = "", vv[8] = "", pmb[24] = "";
        if (!k) {
            snprintf(vv, sizeof(vv), "%llu", (unsigned long long)v);
            snprintf(chg, sizeof(chg), "%.3f%%", 100.0 * (double)x->changed / (double)r->elems);
            snprintf(pub, sizeof(pub), "%.3f", x->publish_s);
            snprintf(enc, sizeof(enc), "%.3f", x->ps.delta_bytes == UINT64_MAX ? 0 : x->ps.delta_s);
            if (x->ps.delta_bytes == UINT64_MAX)
                snprintf(pmb, sizeof(pmb), "-");
            else
                snprintf(pmb, sizeof(pmb), "%.2f", mb(x->ps.delta_bytes));
        }
        printf("%3s %8s | %9.1f %9.2f %8.4f %6u | %8s %9s %9s | %9.3f %9.3f %5u %s\n", vv, chg, mb(f->bytes_wire),
               mb(d->bytes_wire), ratio, d->delta_descriptors, pmb, pub, enc, f->total_s, d->total_s,
               d->delta_fallbacks, x->same[k / 2] ? "yes" : "NO");
    }
    fflush(stdout);
}

/* Of the 128x128 blocks an FP8 target quantizes (2-D trainer tensors but
 * the embedding; qkv and gate/up are cut on multiples of 128 rows, so a
 * block of the trainer tensor is one of the target's), those with an
 * element that changed in step s: what a receiver requantizing only
 * changed blocks would skip (docs/delta.md, FP8 targets). */
static int fp8_blocks(const struct be_run *r, int s, uint64_t *changed, uint64_t *total)
{
    const struct be_changes *c = &r->ch[s];
    size_t nt = refit_layout_count(r->md.lay), k = 0;
    *changed = *total = 0;
    for (size_t t = 0; t < nt; t++) {
        const struct refit_layout_tensor *lt = refit_layout_at(r->md.lay, t);
        while (k < c->n && c->idx[k] < r->toff[t])
            k++;
        if (lt->ndim != 2 || strstr(lt->name, "embedding"))
            continue;
        uint64_t rows = (uint64_t)lt->shape[0], cols = (uint64_t)lt->shape[1];
        uint64_t br = (rows + 127) / 128, bc = (cols + 127) / 128;
        uint8_t *hit = calloc(br * bc, 1);
        if (!hit)
            return REFIT_ENOMEM;
        for (; k < c->n && c->idx[k] < r->toff[t + 1]; k++) {
            uint64_t e = c->idx[k] - r->toff[t];
            hit[(e / cols / 128) * bc + (e % cols) / 128] = 1;
        }
        for (uint64_t b = 0; b < br * bc; b++)
            *changed += hit[b];
        *total += br * bc;
        free(hit);
    }
    return 0;
}

static long max_rss_mb(void)
{
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) ? -1 : ru.ru_maxrss / 1024;
}

int bench_delta_engine(const struct bd_opts *o)
{
    struct be_run r;
    memset(&r, 0, sizeof(r));
    r.o = o;
    printf("refit bench delta --engine: Qwen3-0.6B-shaped (%d layers, vocab %d), Adam at lr %g (wd %g)%s, "
           "%d steps\n", o->layers, o->vocab, o->lr, o->wd, o->warmup ? " from a warm state" : "", o->steps);
    fflush(stdout);
    double t0 = cli_now();
    int rc = train(&r);
    if (!rc) {
        uint64_t n = 0;
        for (int s = 0; s < o->steps; s++)
            n += r.ch[s].n;
        printf("trained: %zu trainer tensors, %.3f B parameters, %.3f GB bf16 (%.1f s; %llu changes kept, "
               "%.1f MB)\n", refit_layout_count(r.md.lay), (double)r.elems / 1e9, (double)r.elems * 2 / 1e9,
               cli_now() - t0, (unsigned long long)n, (double)n * 6 / 1e6);
        printf("engine: one publisher (zero-copy, refit.delta on) and %d receivers (vLLM TP1, verify full) in "
               "this process, tcp on loopback, file store\n", o->fp8 ? 4 : 2);
        fflush(stdout);
        rc = engine_open(&r);
    }
    int bad = 0;
    struct be_row sum = {0};
    int warm = 0;
    if (!rc)
        print_head(&r);
    for (uint64_t v = 1; !rc && v <= (uint64_t)o->steps + 1; v++) {
        struct be_row row;
        memset(&row, 0, sizeof(row));
        rc = version(&r, v, &row);
        if (rc)
            break;
        print_row(&r, v, &row);
        for (int k = 0; k < r.n_rcv; k += 2)
            bad |= !row.same[k / 2] || (v > 1 && (row.pull[k + 1].delta_fallbacks || !row.pull[k + 1].delta_descriptors));
        if (v > 1) {
            warm++;
            for (int k = 0; k < r.n_rcv; k++) {
                sum.pull[k].bytes_wire += row.pull[k].bytes_wire;
                sum.pull[k].total_s += row.pull[k].total_s;
            }
        }
    }
    if (!rc && warm)
        for (int k = 0; k < r.n_rcv; k += 2)
            printf("%s steps 2..%d: delta / full wire bytes %.4f, pull time %.3f s / %.3f s (mean)\n",
                   k ? "FP8 target," : "bf16 target,", o->steps + 1,
                   (double)sum.pull[k + 1].bytes_wire / (double)(sum.pull[k].bytes_wire ? sum.pull[k].bytes_wire : 1),
                   sum.pull[k + 1].total_s / warm, sum.pull[k].total_s / warm);
    for (int st = 0; !rc && o->fp8 && st < o->steps; st++) {
        uint64_t bch = 0, bt = 0;
        rc = fp8_blocks(&r, st, &bch, &bt);
        if (!rc)
            printf("FP8 blocks (128x128) with a changed element, v%d: %llu of %llu (%.2f %%)\n", st + 2,
                   (unsigned long long)bch, (unsigned long long)bt, 100.0 * (double)bch / (double)(bt ? bt : 1));
    }
    if (!rc)
        printf("(wire: bytes_wire of each pull, delta records and whole descriptors included; by d: descriptors "
               "brought up to date by a delta; pub MB: the publisher's delta; publish s includes encode s; peak memory of this process %ld MB)\n",
               max_rss_mb());
    engine_close(&r);
    for (int s = 0; r.ch && s < o->steps; s++) {
        free(r.ch[s].idx);
        free(r.ch[s].val);
    }
    free(r.ch);
    free(r.model);
    free(r.toff);
    bd_model_close(&r.md);
    if (!rc && bad)
        rc = refit_error_set(REFIT_EIO, "a delta receiver's bytes differ from the full refit's, or a step did not "
                                        "go by delta (see the table)");
    return rc;
}
