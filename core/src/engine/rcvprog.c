/* rcvprog.c — a colocated resident pull as one device program (dprog.h).
 *
 * When the transport maps its peers' memory into this process
 * (refit_transport_rkey_ptr: cuda_ipc), a resident pull needs no transport copy:
 * the receiver's own kernel reads the trainers' tensors and writes the
 * destinations.  The plan is turned into operations once:
 *   - a descriptor landing in a destination: a copy from the trainer;
 *   - a scatter (a row block or a row-parallel column slice) whose source
 *     rows all lie in one descriptor's bytes: a 2-D copy straight from the
 *     trainer, skipping scratch;
 *   - an FP8 image whose writers are all such pieces, each starting on a
 *     128-block boundary: quantizations reading the trainer's bf16 and
 *     writing e4m3 and scales into the destination (no scratch);
 *   - anything else goes through scratch as the plan says, in later phases
 *     (descriptors into scratch, then scatters out of it, then FP8 from the
 *     scratch image), still one launch per phase.
 * The tile table is built and uploaded on the first pull and again only
 * when the plan, a source's mapping or a destination changes: a warm pull
 * is one or a few launches and one event wait.  Images this cannot express
 * (fp32 or stacked FP8 images, padded FP8 images) leave the pull to the
 * transport's path (transfer.c), as before. */
#include <stdlib.h>
#include <string.h>

#include "devpath.h"
#include "dprog.h"
#include "receiver.h"
#include "refit/log.h"

struct rf_rcvprog {
    struct rf_dprog *g;
    int have;     /* a program for the fingerprint below is loaded */
    int unusable; /* this plan cannot run as a program (the reason was logged) */
    struct refit_hash128 plan_key;
    void **fp;    /* fingerprint: mapped bases per (source, region), then destinations, scratch */
    size_t n_fp;
    size_t *op_lt; /* per operation: its layout tensor (messages) */
    size_t n_ops;
    size_t tiles;
};

/* The descriptors landing in scratch, by offset. */
struct sdesc {
    const struct rf_desc **d;
    size_t n;
};

struct build {
    refit_receiver_t *r;
    struct sdesc sd;
    void ***base; /* per source, per region: the mapped remote base */
    uint8_t *need; /* per plan descriptor: its bytes are read from scratch */
    struct rf_dop *ops;
    size_t *op_lt;
    size_t n, cap;
};

void rf_rcvprog_destroy(refit_receiver_t *r)
{
    struct rf_rcvprog *p = r->prog;
    if (!p)
        return;
    rf_dprog_destroy(p->g);
    free(p->fp);
    free(p->op_lt);
    free(p);
    r->prog = NULL;
}

static int cmp_sdesc(const void *a, const void *b)
{
    const struct rf_desc *x = *(const struct rf_desc *const *)a, *y = *(const struct rf_desc *const *)b;
    return x->local_off < y->local_off ? -1 : x->local_off > y->local_off;
}

/* The scratch descriptor holding [off, off + len), or NULL. */
static const struct rf_desc *holder(const struct build *b, uint64_t off, uint64_t len)
{
    size_t lo = 0, hi = b->sd.n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (b->sd.d[mid]->local_off <= off)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (!lo)
        return NULL;
    const struct rf_desc *d = b->sd.d[lo - 1];
    return off + len <= d->local_off + d->len ? d : NULL;
}

/* Mark every scratch descriptor overlapping [off, off + len) as needed. */
static void need_range(struct build *b, uint64_t off, uint64_t len)
{
    const struct rf_desc *base = b->r->plan.plan.desc;
    for (size_t i = 0; i < b->sd.n; i++) {
        const struct rf_desc *d = b->sd.d[i];
        if (d->local_off < off + len && off < d->local_off + d->len)
            b->need[d - base] = 1;
    }
}

static const char *remote(const struct build *b, const struct rf_desc *d)
{
    return (const char *)b->base[d->source][d->region] + d->remote_off;
}

static int add(struct build *b, const struct rf_dop *o, size_t lt)
{
    if (b->n == b->cap) {
        size_t nc = b->cap ? b->cap * 2 : 256;
        struct rf_dop *no = realloc(b->ops, nc * sizeof(*no));
        size_t *nl = no ? realloc(b->op_lt, nc * sizeof(*nl)) : NULL;
        if (no)
            b->ops = no;
        if (!no || !nl)
            return REFIT_ENOMEM;
        b->op_lt = nl;
        b->cap = nc;
    }
    b->ops[b->n] = *o;
    b->op_lt[b->n++] = lt;
    return 0;
}

/* A scatter as a copy: straight from the trainer when one descriptor holds
 * its source rows, else out of scratch after phase 0. */
static int scatter_op(struct build *b, const struct rf_scatter *s, size_t lt, uint32_t phase)
{
    uint64_t span = (s->rows - 1) * s->from_pitch + s->row_bytes;
    const struct rf_desc *d = holder(b, s->from, span);
    struct rf_dop o = {.kind = RF_DOP_COPY, .src_pitch = s->from_pitch, .dst = rf_bufs_ptr(b->r, s->to_buf, s->to),
                       .dst_pitch = s->to_pitch, .rows = s->rows, .width = s->row_bytes};
    if (d) {
        o.phase = phase;
        o.src = remote(b, d) + (s->from - d->local_off);
    } else {
        o.phase = phase + 1;
        o.src = (const char *)b->r->bufs.scratch + s->from;
        need_range(b, s->from, span);
    }
    return add(b, &o, lt);
}

/* A rectangle of an FP8 image: rows [r0, r0+h), columns [c0, c0+w), and
 * where its source lies in the trainer (NULL: not resolvable). */
struct rect {
    uint64_t r0, c0, h, w, pitch;
    const char *src;
};

static int rect_aligned(const struct rect *x, uint64_t rows, uint64_t cols)
{
    const uint64_t B = REFIT_FP8_BLOCK;
    return x->src && x->r0 % B == 0 && x->c0 % B == 0 && (x->h % B == 0 || x->r0 + x->h == rows) &&
           (x->w % B == 0 || x->c0 + x->w == cols);
}

/* The writers of layout tensor t's image in scratch: its scatters and the
 * descriptors landing inside it.  0 with *ok when every writer is a
 * block-aligned rectangle read straight from a trainer and together they
 * cover the image. */
static int fp8_writers(struct build *b, size_t t, struct rect **out, size_t *n_out, int *ok)
{
    refit_receiver_t *r = b->r;
    const struct rf_rplan *p = &r->plan;
    const struct rf_pdst *pd = &p->pdst[t];
    const uint64_t es = 2, rb = pd->cols * es, img = pd->offset, bytes = pd->rows * rb;
    size_t n = p->scat_first[t + 1] - p->scat_first[t], cap = n + b->sd.n;
    struct rect *w = calloc(cap ? cap : 1, sizeof(*w));
    if (!w)
        return REFIT_ENOMEM;
    size_t k = 0;
    uint64_t area = 0;
    *ok = 1;
    for (size_t q = p->scat_first[t]; q < p->scat_first[t + 1]; q++) {
        const struct rf_scatter *s = &p->plan.scatter[p->scat[q]];
        uint64_t off = s->to - img, span = (s->rows - 1) * s->from_pitch + s->row_bytes;
        const struct rf_desc *d = holder(b, s->from, span);
        struct rect x = {off / rb, (off % rb) / es, s->rows, s->row_bytes / es, s->from_pitch,
                         d ? remote(b, d) + (s->from - d->local_off) : NULL};
        *ok &= s->to_buf == RF_BUF_SCRATCH && s->to >= img && s->to_pitch == rb && s->row_bytes % es == 0 &&
               (off % rb) % es == 0 && rect_aligned(&x, pd->rows, pd->cols);
        area += x.h * x.w;
        w[k++] = x;
    }
    for (size_t i = 0; i < b->sd.n; i++) {
        /* The part of a descriptor inside the image (one descriptor may
         * carry several tensors that lie next to each other in both). */
        const struct rf_desc *d = b->sd.d[i];
        uint64_t lo = d->local_off > img ? d->local_off : img;
        uint64_t hi = d->local_off + d->len < img + bytes ? d->local_off + d->len : img + bytes;
        if (lo >= hi)
            continue;
        uint64_t off = lo - img, len = hi - lo;
        struct rect x = {off / rb, 0, len / rb, pd->cols, rb, remote(b, d) + (lo - d->local_off)};
        *ok &= off % rb == 0 && len % rb == 0 && rect_aligned(&x, pd->rows, pd->cols);
        area += x.h * x.w;
        w[k++] = x;
    }
    *ok &= area == pd->rows * pd->cols;
    *out = w;
    *n_out = k;
    return 0;
}

/* Layout tensor t's FP8 destination: fused quantizations when its writers
 * allow, else writers into scratch (phases 0-1) and one quantization of
 * the scratch image (phase 2). */
static int fp8_ops(struct build *b, size_t t)
{
    refit_receiver_t *r = b->r;
    const struct rf_pdst *pd = &r->plan.pdst[t];
    const struct rf_dst *dd = &r->dests.d[r->dests.dst_of_lt[t]];
    uint8_t *out = rf_bufs_ptr(r, RF_BUF_STAGING, dd->staging_off);
    float *scale = rf_bufs_ptr(r, RF_BUF_STAGING, r->dests.d[r->dests.scale_of_lt[t]].staging_off);
    const uint64_t ncb = (pd->cols + REFIT_FP8_BLOCK - 1) / REFIT_FP8_BLOCK;
    struct rect *w = NULL;
    size_t n = 0;
    int ok = 0, rc = fp8_writers(b, t, &w, &n, &ok);
    for (size_t i = 0; !rc && ok && i < n; i++) {
        struct rf_dop o = {.kind = RF_DOP_FP8_BF16, .phase = 0, .src = w[i].src, .src_pitch = w[i].pitch,
                           .dst = out + w[i].r0 * pd->cols + w[i].c0, .dst_pitch = pd->cols, .rows = w[i].h,
                           .width = w[i].w, .scales = scale + (w[i].r0 / REFIT_FP8_BLOCK) * ncb +
                                                      w[i].c0 / REFIT_FP8_BLOCK, .scale_pitch = ncb};
        rc = add(b, &o, t);
    }
    free(w);
    if (rc || ok)
        return rc;
    /* Through scratch, as the plan lays it out. */
    const struct rf_rplan *p = &r->plan;
    for (size_t q = p->scat_first[t]; !rc && q < p->scat_first[t + 1]; q++)
        rc = scatter_op(b, &p->plan.scatter[p->scat[q]], t, 0);
    need_range(b, pd->offset, pd->rows * pd->cols * 2);
    struct rf_dop o = {.kind = RF_DOP_FP8_BF16, .phase = 2, .src = (char *)r->bufs.scratch + pd->offset,
                       .src_pitch = pd->cols * 2, .dst = out, .dst_pitch = pd->cols, .rows = pd->rows,
                       .width = pd->cols, .scales = scale, .scale_pitch = ncb};
    return rc ? rc : add(b, &o, t);
}

/* Whether t's image can be expressed at all: a plain copy, or a 2-D bf16
 * image quantized with nothing left uncovered. */
static const char *unsupported(refit_receiver_t *r, size_t t)
{
    const struct rf_pdst *pd = &r->plan.pdst[t];
    if (!pd->in_scratch)
        return NULL;
    const struct refit_layout_tensor *lt = refit_layout_at(r->lay, t);
    if (r->plan.img_dtype[t] != REFIT_DTYPE_BF16)
        return "an FP8 image that is not bf16";
    if (lt->ndim != 2)
        return "a stacked FP8 image";
    if (pd->covered && pd->covered != pd->rows * pd->cols)
        return "a padded FP8 image";
    return NULL;
}

static int build_ops(struct build *b)
{
    refit_receiver_t *r = b->r;
    const struct rf_rplan *p = &r->plan;
    size_t nl = refit_layout_count(r->lay);
    int rc = 0;
    for (size_t t = 0; !rc && t < nl; t++) {
        if (r->xfer.unfed[t])
            continue; /* nothing lands: finish_unfed converts it as before */
        if (p->pdst[t].in_scratch) {
            rc = fp8_ops(b, t);
            continue;
        }
        for (size_t q = p->scat_first[t]; !rc && q < p->scat_first[t + 1]; q++)
            rc = scatter_op(b, &p->plan.scatter[p->scat[q]], t, 0);
    }
    /* Descriptors: into destinations always; into scratch when read there. */
    for (size_t i = 0; !rc && i < p->plan.n_desc; i++) {
        const struct rf_desc *d = &p->plan.desc[i];
        if (d->buf == RF_BUF_SCRATCH && !b->need[i])
            continue;
        struct rf_dop o = {.kind = RF_DOP_COPY, .phase = 0, .src = remote(b, d), .src_pitch = d->len,
                           .dst = rf_bufs_ptr(r, d->buf, d->local_off), .dst_pitch = d->len, .rows = 1,
                           .width = d->len};
        size_t lt = p->feed_first[i] < p->feed_first[i + 1] ? p->feed[p->feed_first[i]] : 0;
        rc = add(b, &o, lt);
    }
    return rc;
}

/* The mapped bases of every source region, the destinations and scratch:
 * what the loaded program's pointers came from. */
static int fingerprint(refit_receiver_t *r, void ***fp_out, size_t *n_out)
{
    size_t n = 1 + r->dests.n;
    for (size_t s = 0; s < r->disc.n_src; s++)
        n += r->peers.p[s].n_rkeys;
    void **fp = calloc(n, sizeof(*fp));
    if (!fp)
        return REFIT_ENOMEM;
    size_t k = 0;
    int rc = 0;
    for (size_t s = 0; !rc && s < r->disc.n_src; s++)
        for (size_t g = 0; !rc && g < r->peers.p[s].n_rkeys; g++)
            if (r->peers.p[s].rkeys[g])
                rc = refit_transport_rkey_ptr(r->tp, r->peers.p[s].rkeys[g], &fp[k++]);
            else
                k++;
    for (size_t i = 0; i < r->dests.n; i++)
        fp[k++] = r->dests.d[i].ptr;
    fp[k++] = r->bufs.scratch;
    if (rc) {
        free(fp);
        return rc;
    }
    *fp_out = fp;
    *n_out = n;
    return 0;
}

static int load(refit_receiver_t *r, void **fp)
{
    struct rf_rcvprog *p = r->prog;
    const struct rf_rplan *pl = &r->plan;
    struct build b = {.r = r};
    int rc = 0;
    b.base = calloc(r->disc.n_src ? r->disc.n_src : 1, sizeof(*b.base));
    b.need = calloc(pl->plan.n_desc ? pl->plan.n_desc : 1, 1);
    b.sd.d = calloc(pl->plan.n_desc ? pl->plan.n_desc : 1, sizeof(*b.sd.d));
    if (!b.base || !b.need || !b.sd.d)
        rc = REFIT_ENOMEM;
    size_t k = 0;
    for (size_t s = 0; !rc && s < r->disc.n_src; s++) {
        b.base[s] = fp + k;
        k += r->peers.p[s].n_rkeys;
    }
    for (size_t i = 0; !rc && i < pl->plan.n_desc; i++) {
        const struct rf_desc *d = &pl->plan.desc[i];
        if (d->source >= r->disc.n_src || d->region >= r->peers.p[d->source].n_rkeys ||
            !b.base[d->source][d->region])
            rc = refit_error_set(REFIT_EPROTO, "receiver %s: descriptor %zu names region %u of source %u, "
                                 "which is not mapped", r->id, i, d->region, d->source);
        else if (d->buf == RF_BUF_SCRATCH)
            b.sd.d[b.sd.n++] = d;
    }
    if (!rc)
        qsort(b.sd.d, b.sd.n, sizeof(*b.sd.d), cmp_sdesc);
    if (!rc)
        rc = build_ops(&b);
    struct refit_fp8_params q8 = {r->copts.fp8.rule, r->copts.fp8.floor, REFIT_FP8_IMPL_AUTO};
    if (!rc)
        rc = rf_dprog_load(p->g, b.ops, b.n, &q8);
    free(b.base);
    free(b.need);
    free(b.sd.d);
    free(b.ops);
    if (rc) {
        free(b.op_lt);
        return rc;
    }
    free(p->op_lt);
    p->op_lt = b.op_lt;
    p->n_ops = b.n;
    p->tiles = rf_dprog_tiles(p->g);
    refit_log(REFIT_LOG_INFO, "receiver", "%s: colocated pull as a device program: %zu operations, %zu tiles, "
              "%d launch(es)", r->id, b.n, p->tiles, rf_dprog_launches(p->g));
    return 0;
}

/* Whether this pull can run as a program; creates the state on first use. */
static int usable(refit_receiver_t *r, int *yes)
{
    *yes = 0;
    if (!r->ctx->device_program || !rf_rcvdev_resident(r) || r->ctx->verify != RF_VERIFY_OFF)
        return 0;
    if (!r->prog) {
        r->prog = calloc(1, sizeof(*r->prog));
        if (!r->prog)
            return REFIT_ENOMEM;
    }
    struct rf_rcvprog *p = r->prog;
    if ((p->have || p->unusable) && memcmp(&p->plan_key, &r->plan.key, sizeof(p->plan_key)))
        p->have = p->unusable = 0; /* a new plan: judged afresh */
    if (p->unusable)
        return 0;
    size_t nl = refit_layout_count(r->lay);
    for (size_t t = 0; t < nl; t++) {
        const char *why = unsupported(r, t);
        if (why) {
            refit_log(REFIT_LOG_INFO, "receiver", "%s: '%s' is %s: this pull goes through the transport's "
                      "copies", r->id, refit_layout_at(r->lay, t)->name, why);
            p->unusable = 1;
            p->plan_key = r->plan.key;
            return 0;
        }
    }
    *yes = 1;
    return 0;
}

int rf_rcvprog_pull(refit_receiver_t *r, int *ran)
{
    *ran = 0;
    int yes = 0, rc = usable(r, &yes);
    if (rc || !yes)
        return rc;
    struct rf_rcvprog *p = r->prog;
    void **fp = NULL;
    size_t n_fp = 0;
    rc = fingerprint(r, &fp, &n_fp);
    if (rc == REFIT_ENOTSUP) {
        refit_error_clear(); /* the transport maps nothing: its copies it is */
        p->unusable = 1;
        p->plan_key = r->plan.key;
        return 0;
    }
    if (rc)
        return refit_error_push(rc, "receiver %s: mapping the sources for a device program", r->id);
    int same = p->have && n_fp == p->n_fp && !memcmp(fp, p->fp, n_fp * sizeof(*fp));
    if (!same) {
        p->have = 0;
        if (!p->g)
            rc = rf_dprog_create(rf_rcvdev_device(r), &p->g);
        if (!rc)
            rc = load(r, fp);
        if (rc) {
            free(fp);
            return refit_error_push(rc, "receiver %s: building the device program", r->id);
        }
        free(p->fp);
        p->fp = fp;
        p->n_fp = n_fp;
        p->plan_key = r->plan.key;
        p->have = 1;
    } else {
        free(fp);
    }
    size_t bad = 0;
    rf_trace_mark(&r->trace, "program-check");
    rc = rf_dprog_launch(p->g);
    rf_trace_mark(&r->trace, "launch");
    if (!rc)
        rc = rf_dprog_wait(p->g, &bad);
    rf_trace_mark(&r->trace, "kernel-wait");
    if (!rc && r->trace.on) {
        r->trace.kernel_ms = rf_dprog_last_ms(p->g);
        rf_dprog_steps(p->g, r->trace.steps, sizeof(r->trace.steps));
    }
    if (rc == REFIT_ENUMERIC && bad < p->n_ops)
        return refit_error_push(rc, "receiver %s: quantizing '%s' on the device", r->id,
                                refit_layout_at(r->lay, p->op_lt[bad])->name);
    if (rc)
        return refit_error_push(rc, "receiver %s: device program", r->id);
    *ran = 1;
    return 0;
}
