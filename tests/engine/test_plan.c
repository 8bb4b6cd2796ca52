/* test_plan.c — the resharding planner, executed in memory: random source
 * matrices, layouts built from pieces, the plan's descriptors and scatters
 * run with memcpy, the images compared with a direct construction. */
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "../../core/src/engine/plan.h"
#include "refit/status.h"
#include "../check_run.h"

#define MAXS 8

/* Fake sources: one region per source holding its tensors back to back. */
static uint8_t *region[MAXS];

static void run_plan(const struct rf_plan *p, uint8_t *staging, uint8_t *scratch)
{
    for (size_t i = 0; i < p->n_desc; i++) {
        const struct rf_desc *d = &p->desc[i];
        uint8_t *to = d->buf == RF_BUF_STAGING ? staging : scratch;
        memcpy(to + d->local_off, region[d->source] + d->remote_off, d->len);
    }
    for (size_t i = 0; i < p->n_scatter; i++) {
        const struct rf_scatter *s = &p->scatter[i];
        uint8_t *to = s->to_buf == RF_BUF_STAGING ? staging : scratch;
        for (uint64_t r = 0; r < s->rows; r++)
            memcpy(to + s->to + r * s->to_pitch, scratch + s->from + r * s->from_pitch, s->row_bytes);
    }
}

static void fill(uint8_t *p, size_t n, unsigned seed)
{
    srand(seed);
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)rand();
}

/* The order rf_plan_build leaves pieces in (plan.h's rule for replicated
 * pieces: largest first, ties by destination, row, column). */
static int cmp_size_then_place(const void *a, const void *b)
{
    const struct rf_piece *x = a, *y = b;
    uint64_t sx = x->rows * x->cols, sy = y->rows * y->cols;
    if (sx != sy)
        return sx > sy ? -1 : 1;
    if (x->dst != y->dst)
        return x->dst < y->dst ? -1 : 1;
    if (x->dst_row != y->dst_row)
        return x->dst_row < y->dst_row ? -1 : 1;
    return x->dst_col < y->dst_col ? -1 : x->dst_col > y->dst_col;
}

/* Row-parallel TP2 → TP1: the destination [R, C] is [src0 | src1] by
 * columns; column-parallel [A; B] by rows; a replicated vector from either. */
START_TEST(gather_row_and_column_parallel)
{
    const uint64_t R = 96, C = 40, es = 2;
    /* source s: tensor 0 = row-parallel shard [R, C/2], tensor 1 = column shard [R/2, C],
     * tensor 2 = replicated [C, 1]. */
    struct rf_psrc src[6];
    for (int s = 0; s < 2; s++) {
        uint64_t off = 0;
        region[s] = malloc(R * C * es * 2 + C * es);
        fill(region[s], R * C * es * 2 + C * es, 10 + s);
        src[s * 3 + 0] = (struct rf_psrc){s, 0, off, R, C / 2, es, 0};
        off += R * C / 2 * es;
        src[s * 3 + 1] = (struct rf_psrc){s, 0, off, R / 2, C, es, 0};
        off += R / 2 * C * es;
        src[s * 3 + 2] = (struct rf_psrc){s, 0, off, C, 1, es, 0};
        /* Replicated means identical. */
        if (s == 1)
            memcpy(region[1] + off, region[0] + off, C * es);
    }
    struct rf_pdst dst[3] = {{R, C, es, 0, 0, 0}, {R, C, es, 0, R * C * es, 0}, {C, 1, es, 0, 2 * R * C * es, 0}};
    struct rf_piece pc[5] = {
        {.dst = 0, .psrc = 0, .rows = R, .cols = C / 2, .dst_col = 0},
        {.dst = 0, .psrc = 3, .rows = R, .cols = C / 2, .dst_col = C / 2},
        {.dst = 1, .psrc = 1, .rows = R / 2, .cols = C, .dst_row = 0},
        {.dst = 1, .psrc = 4, .rows = R / 2, .cols = C, .dst_row = R / 2},
        {.dst = 2, .cand = 0, .ncand = 2, .rows = C, .cols = 1},
    };
    const uint32_t alt[2] = {2, 5}; /* the replicated vector on either source */
    struct rf_plan_opts o = {.scatter_threshold = 1024, .verify = 0};
    struct rf_plan p;
    ck_assert_int_eq(rf_plan_build(src, 6, dst, 3, pc, 5, alt, 2, 2, &o, NULL, NULL, &p), 0);
    uint64_t stage_bytes = 2 * R * C * es + C * es;
    uint8_t *staging = calloc(1, stage_bytes), *scratch = calloc(1, p.scratch_bytes + 1);
    run_plan(&p, staging, scratch);
    /* Expected, built directly. */
    for (uint64_t r = 0; r < R; r++)
        for (int s = 0; s < 2; s++)
            ck_assert(!memcmp(staging + (r * C + s * C / 2) * es, region[s] + r * C / 2 * es, C / 2 * es));
    for (int s = 0; s < 2; s++)
        ck_assert(!memcmp(staging + R * C * es + s * (R / 2) * C * es, region[s] + R * C / 2 * es,
                          R / 2 * C * es));
    ck_assert(!memcmp(staging + 2 * R * C * es, region[0] + R * C * es, C * es));
    /* Column shards land directly: the two halves are one descriptor each. */
    ck_assert_uint_eq(p.wire_bytes, 2 * R * C * es + C * es);
    free(staging);
    free(scratch);
    rf_plan_free(&p);
    for (int s = 0; s < 2; s++)
        free(region[s]);
}
END_TEST

/* Contiguous runs from one source merge into a single descriptor. */
START_TEST(adjacent_runs_merge)
{
    const uint64_t rows = 4096, cols = 64, es = 2;
    region[0] = malloc(rows * cols * es);
    fill(region[0], rows * cols * es, 3);
    struct rf_psrc src[1] = {{0, 0, 0, rows, cols, es, 0}};
    struct rf_pdst dst[1] = {{rows, cols, es, 0, 0, 0}};
    struct rf_piece pc[4];
    for (int i = 0; i < 4; i++)
        pc[i] = (struct rf_piece){.dst = 0, .psrc = 0, .src_row = i * rows / 4,
                                  .rows = rows / 4, .cols = cols, .dst_row = i * rows / 4};
    struct rf_plan_opts o = {.scatter_threshold = 4096};
    struct rf_plan p;
    ck_assert_int_eq(rf_plan_build(src, 1, dst, 1, pc, 4, NULL, 0, 1, &o, NULL, NULL, &p), 0);
    ck_assert_uint_eq(p.n_desc, 1);
    ck_assert_uint_eq(p.desc[0].len, rows * cols * es);
    ck_assert_uint_eq(p.n_scatter, 0);
    rf_plan_free(&p);
    free(region[0]);
}
END_TEST

/* Replicated pieces spread over the sources holding them. */
START_TEST(replicated_spread_over_sources)
{
    const int S = 4, T = 16;
    struct rf_psrc src[4 * 16];
    struct rf_pdst dst[16];
    struct rf_piece pc[16];
    uint32_t alt[4 * 16];
    for (int s = 0; s < S; s++)
        for (int t = 0; t < T; t++)
            src[s * T + t] = (struct rf_psrc){s, 0, (uint64_t)t * 65536, 256, 128, 2, 0};
    for (int t = 0; t < T; t++) {
        dst[t] = (struct rf_pdst){256, 128, 2, 0, (uint64_t)t * 65536, 0};
        pc[t] = (struct rf_piece){.dst = t, .cand = (uint32_t)(t * S), .ncand = S, .rows = 256, .cols = 128};
        for (int s = 0; s < S; s++)
            alt[t * S + s] = s * T + t;
    }
    struct rf_plan_opts o = {.scatter_threshold = 1024};
    struct rf_plan p;
    ck_assert_int_eq(rf_plan_build(src, S * T, dst, T, pc, T, alt, S * T, S, &o, NULL, NULL, &p), 0);
    for (int s = 0; s < S; s++)
        ck_assert_uint_eq(p.bytes_per_source[s], 4 * 65536);
    /* Each piece collapsed to the alternative it reads. */
    for (int t = 0; t < T; t++) {
        ck_assert_uint_eq(pc[t].ncand, 0);
        ck_assert_uint_eq(pc[t].psrc % T, pc[t].dst);
    }
    rf_plan_free(&p);
}
END_TEST

static const char *names(void *arg, uint32_t d)
{
    (void)arg;
    static const char *n[] = {"model.norm.weight", "lm_head.weight"};
    return n[d % 2];
}

START_TEST(gaps_overlaps_and_bounds_are_errors)
{
    struct rf_psrc src[1] = {{0, 0, 0, 10, 10, 2, 0}};
    struct rf_pdst dst[1] = {{10, 10, 2, 0, 0, 0}};
    struct rf_plan_opts o = {.scatter_threshold = 0};
    struct rf_plan p;
    struct rf_piece gap[1] = {{.dst = 0, .rows = 9, .cols = 10}};
    ck_assert_int_eq(rf_plan_build(src, 1, dst, 1, gap, 1, NULL, 0, 1, &o, names, NULL, &p), REFIT_ENOENT);
    ck_assert_msg(strstr(refit_error_message(), "'model.norm.weight': 90 of 100 elements have a source"),
                  "%s", refit_error_message());
    struct rf_piece ov[2] = {{.dst = 0, .rows = 6, .cols = 10},
                             {.dst = 0, .src_row = 4, .rows = 6, .cols = 10, .dst_row = 4}};
    ck_assert_int_eq(rf_plan_build(src, 1, dst, 1, ov, 2, NULL, 0, 1, &o, names, NULL, &p), REFIT_EPROTO);
    ck_assert_msg(strstr(refit_error_message(), "covered twice"), "%s", refit_error_message());
    struct rf_piece oob[1] = {{.dst = 0, .src_row = 5, .rows = 10, .cols = 10}};
    ck_assert_int_eq(rf_plan_build(src, 1, dst, 1, oob, 1, NULL, 0, 1, &o, names, NULL, &p), REFIT_ERANGE);
}
END_TEST

/* With verification every pulled source chunk is hashed once in a
 * contiguous place, also for a row slice that is not chunk aligned. */
START_TEST(verify_chunks_cover_pulled_rows)
{
    const uint64_t rows = 1000, cols = 256, es = 2, cr = 64;
    region[0] = malloc(rows * cols * es);
    fill(region[0], rows * cols * es, 9);
    struct rf_psrc src[1] = {{0, 0, 0, rows, cols, es, cr}};
    /* The receiver keeps rows [300, 700) (a TP slice): not chunk aligned. */
    struct rf_pdst dst[1] = {{400, cols, es, 0, 0, 0}};
    struct rf_piece pc[1] = {{.dst = 0, .src_row = 300, .rows = 400, .cols = cols}};
    struct rf_plan_opts o = {.scatter_threshold = 1024, .verify = 1};
    struct rf_plan p;
    ck_assert_int_eq(rf_plan_build(src, 1, dst, 1, pc, 1, NULL, 0, 1, &o, NULL, NULL, &p), 0);
    uint8_t *staging = calloc(1, 400 * cols * es), *scratch = calloc(1, p.scratch_bytes + 1);
    run_plan(&p, staging, scratch);
    ck_assert(!memcmp(staging, region[0] + 300 * cols * es, 400 * cols * es));
    /* Chunks 4..10 (rows 256..704) are pulled; each checked once, against
     * the hash of the source's own bytes. */
    int seen[16] = {0};
    for (size_t i = 0; i < p.n_check; i++) {
        const struct rf_check *c = &p.check[i];
        const uint8_t *b = (c->buf == RF_BUF_STAGING ? staging : scratch) + c->off;
        for (uint32_t k = 0; k < c->count; k++) {
            uint64_t chunk = c->chunk + k, o = k * cr * cols * es;
            uint64_t len = o + cr * cols * es <= c->len ? cr * cols * es : c->len - o;
            ck_assert_uint_eq(XXH3_64bits(b + o, len), XXH3_64bits(region[0] + chunk * cr * cols * es, len));
            ck_assert_uint_ge(chunk, 4);
            ck_assert_uint_le(chunk, 10);
            seen[chunk]++;
        }
    }
    for (int k = 4; k <= 10; k++)
        ck_assert_int_eq(seen[k], 1);
    /* The wire carries the edges' whole chunks: at most 2 extra chunks. */
    ck_assert_uint_le(p.wire_bytes, (400 + 2 * cr) * cols * es);
    free(staging);
    free(scratch);
    rf_plan_free(&p);
    free(region[0]);
}
END_TEST

/* A random layout: destinations cut into random rectangles from random
 * sources; execution reproduces the expected images exactly. */
START_TEST(random_layouts_reproduce_images)
{
    srand(1234 + (unsigned)_i);
    const uint64_t es = 2;
    enum { NS = 3, ND = 4 };
    uint64_t R[ND], C[ND];
    struct rf_pdst dst[ND];
    uint64_t stage = 0;
    for (int d = 0; d < ND; d++) {
        R[d] = 1 + (uint64_t)(rand() % 200);
        C[d] = 1 + (uint64_t)(rand() % 300);
        dst[d] = (struct rf_pdst){R[d], C[d], es, rand() % 2, stage, 0};
        stage += R[d] * C[d] * es;
    }
    /* Each destination is cut into a grid of 1-3 x 1-3 blocks; each block
     * is one source tensor placed in a random source region. */
    struct rf_psrc src[ND * 9];
    struct rf_piece pc[ND * 9];
    size_t ns = 0, np = 0;
    uint64_t off[NS] = {0};
    for (int d = 0; d < ND; d++) {
        int gr = 1 + rand() % 3, gc = 1 + rand() % 3;
        for (int i = 0; i < gr; i++)
            for (int j = 0; j < gc; j++) {
                uint64_t r0 = R[d] * i / gr, r1 = R[d] * (i + 1) / gr;
                uint64_t c0 = C[d] * j / gc, c1 = C[d] * (j + 1) / gc;
                if (r1 == r0 || c1 == c0)
                    continue;
                uint32_t s = (uint32_t)(rand() % NS);
                src[ns] = (struct rf_psrc){s, 0, off[s], r1 - r0, c1 - c0, es, (uint32_t)(rand() % 3) * 8};
                off[s] += (r1 - r0) * (c1 - c0) * es;
                pc[np++] = (struct rf_piece){.dst = d, .psrc = ns, .rows = r1 - r0,
                                             .cols = c1 - c0, .dst_row = r0, .dst_col = c0};
                ns++;
            }
    }
    for (int s = 0; s < NS; s++) {
        region[s] = malloc(off[s] + 1);
        fill(region[s], off[s] + 1, 77 + s);
    }
    struct rf_plan_opts o = {.scatter_threshold = (uint64_t)(rand() % 4096), .verify = rand() % 2};
    /* Half the runs give the pieces shuffled (the planner sorts them),
     * half in destination order (it sees they are sorted). */
    for (size_t k = np; _i % 2 && k > 1; k--) {
        size_t j = (size_t)rand() % k;
        struct rf_piece t = pc[k - 1];
        pc[k - 1] = pc[j];
        pc[j] = t;
    }
    struct rf_piece copy[ND * 9], order[ND * 9];
    memcpy(copy, pc, sizeof(pc));
    struct rf_plan p;
    ck_assert_int_eq(rf_plan_build(src, ns, dst, ND, pc, np, NULL, 0, NS, &o, NULL, NULL, &p), 0);
    /* The pieces come back in the planner's order (largest first, then by
     * destination place), each as given but for its chosen candidate. */
    memcpy(order, copy, sizeof(copy));
    qsort(order, np, sizeof(*order), cmp_size_then_place);
    /* rf_plan_order names that order (the receiver chooses sources in it). */
    uint32_t idx[ND * 9];
    ck_assert_int_eq(rf_plan_order(copy, np, idx), 0);
    for (size_t k = 0; k < np; k++) {
        ck_assert_uint_eq(copy[idx[k]].dst, order[k].dst);
        ck_assert_uint_eq(copy[idx[k]].dst_row, order[k].dst_row);
        ck_assert_uint_eq(copy[idx[k]].dst_col, order[k].dst_col);
    }
    for (size_t k = 0; k < np; k++) {
        ck_assert_uint_eq(pc[k].dst, order[k].dst);
        ck_assert_uint_eq(pc[k].dst_row, order[k].dst_row);
        ck_assert_uint_eq(pc[k].dst_col, order[k].dst_col);
        ck_assert_uint_eq(pc[k].rows, order[k].rows);
        ck_assert_uint_eq(pc[k].cols, order[k].cols);
        ck_assert_uint_eq(pc[k].psrc, order[k].psrc);
    }
    uint8_t *staging = calloc(1, stage + 1), *scratch = calloc(1, p.scratch_bytes + 1);
    run_plan(&p, staging, scratch);
    for (size_t k = 0; k < np; k++) {
        const struct rf_piece *q = &copy[k];
        const struct rf_psrc *s = &src[q->psrc];
        const struct rf_pdst *d = &dst[q->dst];
        const uint8_t *img = (d->in_scratch ? scratch : staging) + d->offset;
        for (uint64_t r = 0; r < q->rows; r++)
            ck_assert(!memcmp(img + ((q->dst_row + r) * d->cols + q->dst_col) * es,
                              region[s->source] + s->offset + ((q->src_row + r) * s->cols + q->src_col) * es,
                              q->cols * es));
    }
    for (size_t i = 0; i < p.n_check; i++) {
        const struct rf_check *c = &p.check[i];
        const struct rf_psrc *s = &src[c->psrc];
        const uint8_t *b = (c->buf == RF_BUF_STAGING ? staging : scratch) + c->off;
        ck_assert_uint_ge(c->count, 1);
        ck_assert_uint_le(c->len, (uint64_t)c->count * s->chunk_rows * s->cols * es);
        ck_assert(!memcmp(b, region[s->source] + s->offset + c->chunk * s->chunk_rows * s->cols * es, c->len));
    }
    free(staging);
    free(scratch);
    rf_plan_free(&p);
    for (int s = 0; s < NS; s++)
        free(region[s]);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("plan");
    TCase *tc = tcase_create("plan");
    tcase_add_test(tc, gather_row_and_column_parallel);
    tcase_add_test(tc, adjacent_runs_merge);
    tcase_add_test(tc, replicated_spread_over_sources);
    tcase_add_test(tc, gaps_overlaps_and_bounds_are_errors);
    tcase_add_test(tc, verify_chunks_cover_pulled_rows);
    tcase_add_loop_test(tc, random_layouts_reproduce_images, 0, 200);
    suite_add_tcase(s, tc);
    int failed = t_run_suite(s, CK_NORMAL);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
