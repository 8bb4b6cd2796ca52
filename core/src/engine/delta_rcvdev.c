/* delta_rcvdev.c — a receiver's deltas applied on its CUDA device (pull
 * mode; docs/delta.md, "Device receivers").
 *
 * Where every destination is CUDA memory and nothing is converted (the
 * sources' dtype, no FP8), the mirror is a device image of staging and
 * scratch instead of a host copy of the descriptors; the scatters of
 * resharding run there (2-D device copies), and the staging image is what
 * the commit copies into the destinations (device to device).  A pull:
 *
 *   whole descriptors land in host staging or scratch as always and are
 *   copied into the image (host to device);
 *   delta descriptors READ only their chunk deltas (host, ~2 % of the
 *   bytes), packed and copied to the device; after the execution, one
 *   batch hashes every base chunk a delta changes (xxh3.cu: XXH3-64, the
 *   host's checksum bit for bit) against the base's checksums — any
 *   mismatch is REFIT_ESTALE before a byte changes — then the delta
 *   kernels (delta.cu: every chunk checked before any is written) apply
 *   them onto the image, and one more batch hashes every checksum chunk of
 *   the plan against the new version's checksums (refit.verify: full, on
 *   the device instead of the host); then the scatters.
 *
 * Chunks a descriptor holds only part of (their base cannot be hashed)
 * make it go whole.  Any failure is the caller's: it pulls the version
 * whole (whole descriptors into the image), as on the host.  Anything
 * else (FP8 or other conversions, host destinations, push mode) keeps the
 * host mirror.
 *
 * REFIT_DELTA_DEVICE=0 keeps the host mirror; =emulate runs the hash and
 * the apply on the host through copies (for runtimes without kernels: the
 * mock CUDA runtime of the tests), the rest unchanged. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "../delta/delta.h"
#include "delta_rcv.h"
#include "devmem.h"
#include "devpath.h"
#include "refit/cuda_pool.h"
#include "refit/log.h"

/* Host memory (pinned) and device memory of the same size. */
struct pbuf {
    uint8_t *h;
    void *d;
    size_t cap;
};

/* What a hashed chunk is, for messages. */
struct hwho {
    uint32_t src;
    size_t ti;
    uint64_t chunk, want;
};

struct rf_rcvd_dev {
    int device, emulate;
    struct rf_dcopy *cp;
    struct rf_delta_cuda *cu;
    char *image; /* device: staging's layout */
    char *scratch; /* device: scratch's layout (kept: the base of scratch descriptors) */
    size_t image_len, scratch_len;
    int committable; /* image holds the last pull, verified */
    struct pbuf hs, hout, pk, lens, shadow; /* shadow: emulate's host copy of image and scratch */
    struct hwho *who;
    size_t who_cap;
    struct rf_delta_span *sp;
    size_t sp_cap;
    size_t n_h, n_a; /* this batch: hash spans, apply chunks */
    uint64_t pk_len;
};

static void pbuf_free(struct pbuf *b)
{
    if (b->h)
        rf_dev_unpin(b->h);
    free(b->h);
    refit_cuda_free(b->d);
    memset(b, 0, sizeof(*b));
}

/* At least n bytes; the host bytes are kept (batches grow as they fill). */
static int pbuf_room(struct pbuf *b, size_t n, const char *what)
{
    if (n <= b->cap && b->h)
        return 0;
    struct pbuf nb = {0};
    size_t cap = n + n / 2 > 4096 ? n + n / 2 : 4096;
    if (posix_memalign((void **)&nb.h, 4096, cap))
        return refit_error_set(REFIT_ENOMEM, "device delta: %zu bytes for %s", cap, what);
    int rc = rf_dev_pin(nb.h, cap, what);
    if (rc) {
        free(nb.h);
        return rc;
    }
    if ((rc = refit_cuda_alloc(cap, &nb.d))) {
        pbuf_free(&nb);
        return rc;
    }
    nb.cap = cap;
    if (b->h)
        memcpy(nb.h, b->h, b->cap);
    pbuf_free(b);
    *b = nb;
    return 0;
}

void rf_rcvd_dev_free(struct rf_rcvdelta *d)
{
    struct rf_rcvd_dev *x = d->dev;
    if (!x)
        return;
    int saved = -1, in = !rf_dev_enter(x->device, &saved);
    rf_dcopy_destroy(x->cp);
    rf_delta_cuda_destroy(x->cu);
    refit_cuda_free(x->image);
    refit_cuda_free(x->scratch);
    pbuf_free(&x->hs);
    pbuf_free(&x->hout);
    pbuf_free(&x->pk);
    pbuf_free(&x->lens);
    pbuf_free(&x->shadow);
    if (in)
        rf_dev_leave(saved);
    refit_error_clear();
    free(x->who);
    free(x->sp);
    free(x);
    d->dev = NULL;
}

/* NULL when this plan can be applied on the device, else why not. */
static const char *unfit(const refit_receiver_t *r)
{
    const struct rf_rplan *p = &r->plan;
    if (r->mode != &rf_mode_pull)
        return "push mode";
    if (!r->dev || !rf_dev_built() || !rf_delta_cuda_built())
        return "no CUDA";
    for (size_t i = 0; i < r->dests.n; i++)
        if (!r->dests.d[i].ptr || r->dests.d[i].memtype != REFIT_MEM_CUDA || r->dests.d[i].is_scale)
            return "a destination in host memory, or FP8 scales";
    for (size_t k = 0; k < p->plan.n_scatter; k++)
        if (p->plan.scatter[k].to_buf != RF_BUF_STAGING)
            return "a scatter into scratch";
    size_t nl = refit_layout_count(r->lay);
    for (size_t t = 0; t < nl; t++)
        if (p->pdst[t].in_scratch)
            return "a converted destination (FP8 or another dtype)";
    /* Every layout tensor fed by descriptors (none made up at finish). */
    uint8_t *fed = calloc(nl ? nl : 1, 1);
    if (!fed)
        return "out of memory";
    for (size_t k = p->feed_first[0]; k < p->feed_first[p->plan.n_desc]; k++)
        fed[p->feed[k]] = 1;
    size_t t = 0;
    while (t < nl && fed[t])
        t++;
    free(fed);
    if (t < nl)
        return "a destination no descriptor feeds";
    return NULL;
}

int rf_rcvd_dev_setup(refit_receiver_t *r, struct rf_rcvdelta *d)
{
    const char *env = getenv("REFIT_DELTA_DEVICE");
    rf_rcvd_dev_free(d);
    const char *why = env && !strcmp(env, "0") ? "REFIT_DELTA_DEVICE=0" : unfit(r);
    if (why) {
        if (r->dev)
            refit_log(REFIT_LOG_DEBUG, "receiver", "%s: deltas applied on the host: %s", r->id, why);
        return 0;
    }
    struct rf_rcvd_dev *x = calloc(1, sizeof(*x));
    if (!x)
        return REFIT_ENOMEM;
    x->device = rf_rcvdev_device(r);
    x->emulate = env && !strcmp(env, "emulate");
    int saved = -1, rc = rf_dev_enter(x->device, &saved);
    if (rc) {
        free(x);
        return rc;
    }
    d->dev = x;
    rc = rf_dcopy_create(x->device, &x->cp);
    if (!rc && !x->emulate)
        rc = rf_delta_cuda_create(NULL, &x->cu);
    if (!rc)
        rc = refit_cuda_alloc(r->bufs.staging_len ? r->bufs.staging_len : 1, (void **)&x->image);
    x->image_len = r->bufs.staging_len;
    x->scratch_len = r->bufs.scratch_len;
    if (!rc && x->scratch_len)
        rc = refit_cuda_alloc(x->scratch_len, (void **)&x->scratch);
    rf_dev_leave(saved);
    rf_rcvdev_pin_staging(r); /* whole descriptors are copied from these */
    rf_rcvdev_pin_scratch(r);
    if (rc) {
        /* The host mirror still works: say why the device one does not. */
        refit_log(REFIT_LOG_WARN, "receiver", "%s: deltas applied on the host: %s", r->id, refit_error_message());
        refit_error_clear();
        rf_rcvd_dev_free(d);
    }
    return 0;
}

/* Where (buf, off) of the plan is on the device. */
static char *dptr(const struct rf_rcvd_dev *x, uint32_t buf, uint64_t off)
{
    return (buf == RF_BUF_SCRATCH ? x->scratch : x->image) + off;
}

int rf_rcvd_dev_take(refit_receiver_t *r, size_t i)
{
    struct rf_rcvd_dev *x = r->delta->dev;
    const struct rf_desc *ds = &r->plan.plan.desc[i];
    size_t ev;
    int rc = rf_dcopy_post(x->cp, dptr(x, ds->buf, ds->local_off), rf_bufs_ptr(r, ds->buf, ds->local_off), ds->len,
                           RF_H2D, &ev);
    return rc ? refit_error_push(rc, "receiver %s: descriptor %zu into the device mirror", r->id, i) : 0;
}

const void *rf_rcvdelta_dev_image(const refit_receiver_t *r)
{
    const struct rf_rcvdelta *d = r->delta;
    return d && d->dev && d->dev->committable ? d->dev->image : NULL;
}

int rf_rcvd_dev_on(const struct rf_rcvdelta *d)
{
    return d && d->dev;
}

void rf_rcvd_dev_begin(struct rf_rcvdelta *d)
{
    if (d->dev) {
        d->dev->committable = 0;
        d->dev->n_h = d->dev->n_a = 0;
        d->dev->pk_len = 0;
    }
}

/* ------------------------------------------------------------------ */
/* Batches */

/* Array a of n items of size esz with room for one more: a itself, or a
 * larger copy (*cap updated), or NULL when out of memory (a kept).  The
 * hash batch's names and the apply batch's spans grow alike. */
static void *grow(void *a, size_t *cap, size_t n, size_t esz)
{
    if (n < *cap)
        return a;
    size_t nc = *cap * 2 + 256;
    void *na = realloc(a, nc * esz);
    if (na)
        *cap = nc;
    return na;
}

static int hash_add(struct rf_rcvd_dev *x, const void *p, uint64_t len, struct hwho w)
{
    struct hwho *nw = grow(x->who, &x->who_cap, x->n_h, sizeof(*nw));
    if (!nw)
        return REFIT_ENOMEM;
    x->who = nw;
    int rc = pbuf_room(&x->hs, (x->n_h + 1) * sizeof(struct rf_xxh3_span), "device delta: hash spans");
    if (rc)
        return rc;
    ((struct rf_xxh3_span *)(void *)x->hs.h)[x->n_h] = (struct rf_xxh3_span){p, len};
    x->who[x->n_h++] = w;
    return 0;
}

/* One copy between device memory dev and host memory host, in direction
 * dir (the destination comes first either way). */
static int post_dir(struct rf_rcvd_dev *x, void *dev, void *host, size_t len, enum rf_dcopy_dir dir)
{
    size_t ev;
    if (!len)
        return 0;
    return dir == RF_D2H ? rf_dcopy_post(x->cp, host, dev, len, dir, &ev)
                         : rf_dcopy_post(x->cp, dev, host, len, dir, &ev);
}

/* Emulation: image and scratch copied to the host (shadow) and back. */
static int emu_move(struct rf_rcvd_dev *x, enum rf_dcopy_dir dir)
{
    size_t n = x->image_len + x->scratch_len;
    int rc = pbuf_room(&x->shadow, n ? n : 1, "device delta: emulation");
    if (!rc)
        rc = post_dir(x, x->image, x->shadow.h, x->image_len, dir);
    if (!rc)
        rc = post_dir(x, x->scratch, x->shadow.h + x->image_len, x->scratch_len, dir);
    return rc ? rc : rf_dcopy_sync(x->cp);
}

/* The shadow's copy of device address p. */
static uint8_t *emu_at(const struct rf_rcvd_dev *x, const void *p)
{
    const char *c = p;
    if (x->scratch && c >= x->scratch && c < x->scratch + x->scratch_len)
        return x->shadow.h + x->image_len + (c - x->scratch);
    return x->shadow.h + (c - x->image);
}

/* Each span's XXH3-64 into hout.h. */
static int hash_run(struct rf_rcvd_dev *x)
{
    size_t n = x->n_h, ev;
    int rc = pbuf_room(&x->hout, (n ? n : 1) * sizeof(uint64_t), "device delta: hashes");
    if (rc || !n)
        return rc;
    uint64_t *out = (uint64_t *)(void *)x->hout.h;
    const struct rf_xxh3_span *sp = (const struct rf_xxh3_span *)(const void *)x->hs.h;
    if (x->emulate) {
        rc = emu_move(x, RF_D2H);
        for (size_t k = 0; !rc && k < n; k++)
            out[k] = XXH3_64bits(emu_at(x, sp[k].p), sp[k].len);
        return rc;
    }
    rc = rf_dcopy_post(x->cp, x->hs.d, x->hs.h, n * sizeof(*sp), RF_H2D, &ev);
    if (!rc)
        rc = rf_dcopy_sync(x->cp);
    if (!rc)
        rc = rf_xxh3_cuda(NULL, x->hs.d, n, x->hout.d);
    if (!rc)
        rc = rf_dcopy_post(x->cp, x->hout.h, x->hout.d, n * sizeof(uint64_t), RF_D2H, &ev);
    return rc ? rc : rf_dcopy_sync(x->cp);
}

/* Base chunks and the deltas of every changed chunk of descriptor i. */
static int base_piece(refit_receiver_t *r, size_t i, const struct piece *pc, void *arg)
{
    struct rf_rcvdelta *d = r->delta;
    struct rf_rcvd_dev *x = d->dev;
    const struct rf_desc *ds = &r->plan.plan.desc[i];
    const struct rf_delta_rec *rec = d->rec[ds->source];
    (void)arg;
    uint32_t l = rec->len[pc->e];
    if (!l)
        return 0;
    if (pc->lo || pc->hi != pc->n)
        return refit_error_set(REFIT_EPROTO, "receiver %s: descriptor %zu holds part of a changed chunk", r->id, i);
    int have;
    uint64_t want = rf_sums_chunk(&d->base_sums[ds->source], pc->ti, pc->k, &have);
    if (!have)
        return refit_error_set(REFIT_ESTALE, "receiver %s: no base checksum for chunk %llu", r->id,
                               (unsigned long long)pc->k);
    char *at = dptr(x, ds->buf, ds->local_off) + pc->at;
    int rc = hash_add(x, at, pc->n, (struct hwho){ds->source, pc->ti, pc->k, want});
    if (!rc)
        rc = pbuf_room(&x->pk, x->pk_len + l, "device delta: deltas");
    if (!rc)
        rc = pbuf_room(&x->lens, (x->n_a + 1) * sizeof(uint32_t), "device delta: lengths");
    if (rc)
        return rc;
    struct rf_delta_span *ns = grow(x->sp, &x->sp_cap, x->n_a, sizeof(*ns));
    if (!ns)
        return REFIT_ENOMEM;
    x->sp = ns;
    memcpy(x->pk.h + x->pk_len, d->land + d->loff[i] + (rec->off[pc->e] - d->dlo[i]), l);
    x->pk_len += l;
    ((uint32_t *)(void *)x->lens.h)[x->n_a] = l;
    x->sp[x->n_a++] = (struct rf_delta_span){r->disc.src[ds->source].cat->tensors[pc->ti].name, at, NULL, pc->n,
                                             pc->n};
    return 0;
}

static int apply_run(struct rf_rcvd_dev *x)
{
    size_t ev;
    int rc = 0;
    if (!x->n_a)
        return 0;
    if (!x->emulate) {
        rc = rf_dcopy_post(x->cp, x->pk.d, x->pk.h, (size_t)x->pk_len, RF_H2D, &ev);
        if (!rc)
            rc = rf_dcopy_post(x->cp, x->lens.d, x->lens.h, x->n_a * sizeof(uint32_t), RF_H2D, &ev);
        if (!rc)
            rc = rf_dcopy_sync(x->cp);
        if (!rc)
            rc = rf_delta_cuda_apply(x->cu, x->sp, x->n_a, x->pk.d, (size_t)x->pk_len, x->lens.d);
        return rc ? rc : rf_delta_cuda_sync(x->cu);
    }
    /* As the kernels do: every chunk checked before any is written. */
    const uint32_t *len = (const uint32_t *)(const void *)x->lens.h;
    uint64_t o = 0;
    for (size_t k = 0; !rc && k < x->n_a; o += len[k++]) {
        const struct rf_delta_where w = {x->sp[k].name, 0};
        rc = rf_delta_check(x->pk.h + o, len[k], x->sp[k].nbytes, &w);
    }
    if (!rc)
        rc = emu_move(x, RF_D2H);
    o = 0;
    for (size_t k = 0; !rc && k < x->n_a; o += len[k++]) {
        const struct rf_delta_where w = {x->sp[k].name, 0};
        rc = rf_delta_apply(x->pk.h + o, len[k], emu_at(x, x->sp[k].base), x->sp[k].nbytes, &w);
    }
    return rc ? rc : emu_move(x, RF_H2D);
}

/* Every checksum chunk of the plan, hashed in the image. */
static int verify_add(refit_receiver_t *r, struct rf_rcvd_dev *x)
{
    const struct rf_rplan *p = &r->plan;
    int rc = 0;
    for (size_t q = 0; !rc && q < p->plan.n_check; q++) {
        const struct rf_check *c = &p->plan.check[q];
        const struct rf_psrc *ps = &p->psrc[c->psrc];
        uint32_t si = p->psrc_source[c->psrc];
        size_t ci = p->psrc_cat[c->psrc];
        uint64_t cb = (uint64_t)ps->chunk_rows * ps->cols * ps->esize;
        for (uint32_t k = 0; !rc && k < c->count; k++) {
            uint64_t o = (uint64_t)k * cb, len = o + cb <= c->len ? cb : c->len - o;
            int have;
            uint64_t want = rf_sums_chunk(&r->verify.sums[si], ci, c->chunk + k, &have);
            if (!have)
                return refit_error_set(REFIT_ECHECKSUM, "tensor '%s' from source %s: no checksum for rows %llu.. "
                                       "and refit.verify is full here", r->disc.src[si].cat->tensors[ci].name,
                                       r->disc.src[si].id, (unsigned long long)((c->chunk + k) * ps->chunk_rows));
            rc = hash_add(x, dptr(x, c->buf, c->off) + o, len, (struct hwho){si, ci, c->chunk + k, want});
        }
    }
    return rc;
}

/* The first hash that is not what its chunk must be: err, naming it. */
static int compare(refit_receiver_t *r, struct rf_rcvd_dev *x, int err, const char *what)
{
    const uint64_t *got = (const uint64_t *)(const void *)x->hout.h;
    for (size_t k = 0; k < x->n_h; k++) {
        if (got[k] == x->who[k].want)
            continue;
        const struct rf_source *s = &r->disc.src[x->who[k].src];
        return refit_error_set(err, "tensor '%s' from source %s, chunk %llu (hashed on device %d): %s (expected "
                               "%016llx, got %016llx)", s->cat->tensors[x->who[k].ti].name, s->id,
                               (unsigned long long)x->who[k].chunk, x->device, what,
                               (unsigned long long)x->who[k].want, (unsigned long long)got[k]);
    }
    return 0;
}

int rf_rcvd_dev_finish(refit_receiver_t *r, struct rf_rcvdelta *d)
{
    struct rf_rcvd_dev *x = d->dev;
    const struct rf_plan *p = &r->plan.plan;
    int saved = -1, rc = rf_dev_enter(x->device, &saved);
    if (rc)
        return rc;
    double t0 = rf_seconds();
    x->n_h = x->n_a = 0;
    x->pk_len = 0;
    rc = rf_dcopy_sync(x->cp); /* the whole descriptors' copies */
    for (size_t i = 0; !rc && i < p->n_desc; i++)
        if (d->use[i] == USE_DELTA)
            rc = rf_rcvd_walk(r, i, base_piece, NULL);
    if (rc == 1)
        rc = refit_error_set(REFIT_EPROTO, "receiver %s: a descriptor changed under the delta", r->id);
    size_t chunks = x->n_a;
    uint64_t dbytes = x->pk_len;
    if (!rc)
        rc = hash_run(x);
    if (!rc)
        rc = compare(r, x, REFIT_ESTALE, "what this receiver holds is not the base of the delta");
    double t1 = rf_seconds();
    if (!rc)
        rc = apply_run(x);
    double t2 = rf_seconds();
    x->n_h = 0;
    if (!rc)
        rc = verify_add(r, x);
    if (!rc)
        rc = hash_run(x);
    if (!rc)
        rc = compare(r, x, REFIT_ECHECKSUM, "checksum mismatch");
    /* Resharding: rows from the scratch image into the staging image. */
    for (size_t k = 0; !rc && k < p->n_scatter; k++) {
        const struct rf_scatter *s = &p->scatter[k];
        if (s->rows && s->row_bytes)
            rc = rf_dcopy_post2d(x->cp, dptr(x, s->to_buf, s->to), s->to_pitch, x->scratch + s->from, s->from_pitch,
                                 s->row_bytes, s->rows);
    }
    if (!rc)
        rc = rf_dcopy_sync(x->cp);
    double t3 = rf_seconds();
    x->committable = !rc;
    d->st->delta_device = 1;
    d->st->delta_device_s += t3 - t0;
    rf_dev_leave(saved);
    if (!rc)
        refit_log(REFIT_LOG_DEBUG, "receiver", "%s: device delta: %zu chunks (%llu delta bytes) base-checked in "
                  "%.3f ms, applied in %.3f ms; %zu chunks (%.1f MB) verified in %.3f ms%s", r->id, chunks,
                  (unsigned long long)dbytes, (t1 - t0) * 1e3, (t2 - t1) * 1e3, x->n_h, x->image_len / 1e6,
                  (t3 - t2) * 1e3, x->emulate ? " (emulated on the host)" : "");
    return rc;
}
