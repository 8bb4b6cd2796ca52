/* push_rcv.c — push mode on the receiver (refit.mode: push; the strategy
 * rf_mode_push of receiver.h): the same plan as a pull, executed by the
 * trainer ranks.
 *
 * Once per plan the receiver splits the plan by source into a work list
 * (push_work.h): the WRITEs each trainer rank must make into its staging
 * and scratch, and the FP8 units — bands of at most 128 rows (of one
 * expert slot), all columns, of a destination whose every element of the
 * band comes from one rank — that rank quantizes itself.  The list is
 * stored once, content-addressed.  Each pull the receiver advertises its
 * slots (this pull's staging, scratch and mailbox keys, the list's hash),
 * waits for every source of the list while watching that it still offers
 * V (fence.c), checks the trainer's units against the hashes in their
 * mailbox slots and the raw bytes against the sources' chunk checksums,
 * converts the rest, and the cycle fences and commits as a pull does.
 * The publisher's side is push_pub.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "push.h"
#include "push_work.h"
#include "receiver.h"
#include "refit/fp8.h"
#include "refit/log.h"

struct rf_push_rcv {
    /* Per plan. */
    uint8_t *cvt;  /* per layout tensor: quantized by the trainer */
    uint8_t *drop; /* per descriptor: feeds only such tensors, not sent */
    struct push_work work;
    void *work_blob;
    size_t work_len;
    struct refit_hash128 work_hash;
    int work_stored;
    uint64_t wire_bytes; /* what the publishers write per cycle */
    uint8_t *by_delta;   /* per source: this pull's note said "ok delta" */
    /* Kept across plans. */
    void *mail;
    size_t mail_cap;
    refit_tp_region_t *mail_reg;
    struct {
        refit_tp_region_t *reg;
        void *blob;
        size_t len;
    } keys[3];
    int anon;         /* the transport cannot name senders (older plugin) */
    uint64_t ignored; /* notifications ignored, since creation */
};

static void plan_free(struct rf_push_rcv *p)
{
    free(p->cvt);
    free(p->drop);
    free(p->by_delta);
    p->by_delta = NULL;
    rf_push_work_free(&p->work);
    free(p->work_blob);
    p->cvt = p->drop = NULL;
    p->work_blob = NULL;
    p->work_stored = 0;
    p->wire_bytes = 0;
}

static int push_create(refit_receiver_t *r)
{
    return (r->mode_state = calloc(1, sizeof(struct rf_push_rcv))) ? 0 : REFIT_ENOMEM;
}

static void push_plan_drop(refit_receiver_t *r)
{
    if (r->mode_state)
        plan_free(r->mode_state);
}

static void push_destroy(refit_receiver_t *r)
{
    struct rf_push_rcv *p = r->mode_state;
    if (!p)
        return;
    plan_free(p);
    if (p->mail_reg)
        refit_transport_dereg(r->tp, p->mail_reg);
    free(p->mail);
    for (int i = 0; i < 3; i++)
        free(p->keys[i].blob);
    free(p);
    r->mode_state = NULL;
}

/* ------------------------------------------------------------------ */
/* The work list */

static int cmp_idx_dst(const void *a, const void *b, void *arg)
{
    const struct rf_piece *pc = arg;
    const struct rf_piece *x = &pc[*(const size_t *)a], *y = &pc[*(const size_t *)b];
    if (x->dst != y->dst)
        return x->dst < y->dst ? -1 : 1;
    return (x->dst_row > y->dst_row) - (x->dst_row < y->dst_row);
}

/* The bands of one FP8 tensor (128 rows of one expert slot, all columns). */
struct band {
    uint32_t source;
    uint64_t area;
};

struct bands {
    struct band *b;
    uint64_t slot, nslot, per_slot, cols;
};

static uint64_t band_rows(const struct bands *B, uint64_t b)
{
    uint64_t bb = b % B->per_slot;
    return (bb + 1) * REFIT_FP8_BLOCK <= B->slot ? REFIT_FP8_BLOCK : B->slot - bb * REFIT_FP8_BLOCK;
}

/* The source of every band; 1 when each has exactly one and is covered
 * whole, so the trainer ranks can quantize the tensor. */
static int bands_of(refit_receiver_t *r, const struct rf_piece *pc, const size_t *idx, size_t n, struct bands *B)
{
    uint64_t nb = B->nslot * B->per_slot;
    for (uint64_t b = 0; b < nb; b++)
        B->b[b].source = UINT32_MAX;
    for (size_t k = 0; k < n; k++) {
        const struct rf_piece *q = &pc[idx[k]];
        uint32_t s = r->plan.psrc_source[q->psrc];
        for (uint64_t row = q->dst_row; row < q->dst_row + q->rows;) {
            uint64_t x = row / B->slot, b = (row % B->slot) / REFIT_FP8_BLOCK;
            uint64_t end = x * B->slot + (b + 1) * REFIT_FP8_BLOCK;
            if (end > (x + 1) * B->slot)
                end = (x + 1) * B->slot;
            if (end > q->dst_row + q->rows)
                end = q->dst_row + q->rows;
            struct band *u = &B->b[x * B->per_slot + b];
            if (u->source != UINT32_MAX && u->source != s)
                return 0;
            u->source = s;
            u->area += (end - row) * q->cols;
            row = end;
        }
    }
    for (uint64_t b = 0; b < nb; b++)
        if (B->b[b].source == UINT32_MAX || B->b[b].area != band_rows(B, b) * B->cols)
            return 0;
    return 1;
}

/* Unit b of tensor t in its source's section, with its pieces. */
static int add_unit(refit_receiver_t *r, size_t t, const struct bands *B, uint64_t b, const struct rf_piece *pc,
                    const size_t *idx, size_t n, struct push_section *s)
{
    const struct rf_dst *d = &r->dests.d[r->dests.dst_of_lt[t]];
    const struct rf_dst *sd = &r->dests.d[r->dests.scale_of_lt[t]];
    uint64_t x = b / B->per_slot, bb = b % B->per_slot, bc = (B->cols + REFIT_FP8_BLOCK - 1) / REFIT_FP8_BLOCK;
    uint64_t u0 = x * B->slot + bb * REFIT_FP8_BLOCK, brows = band_rows(B, b);
    struct push_unit *nu = realloc(s->u, (s->n_u + 1) * sizeof(*nu));
    if (!nu)
        return REFIT_ENOMEM;
    s->u = nu;
    struct push_unit *u = &nu[s->n_u++];
    *u = (struct push_unit){.t = (uint32_t)t, .src_dtype = (uint32_t)r->plan.img_dtype[t], .rows = brows,
                            .cols = B->cols, .out_off = d->staging_off + u0 * B->cols,
                            .scale_off = sd->staging_off + (x * B->per_slot + bb) * bc * sizeof(float),
                            .first = s->n_pc};
    for (size_t k = 0; k < n; k++) {
        const struct rf_piece *q = &pc[idx[k]];
        uint64_t a = q->dst_row > u0 ? q->dst_row : u0;
        uint64_t e = q->dst_row + q->rows < u0 + brows ? q->dst_row + q->rows : u0 + brows;
        if (a >= e)
            continue;
        const struct rf_psrc *ps = &r->plan.psrc[q->psrc];
        struct push_piece *np = realloc(s->pc, (s->n_pc + 1) * sizeof(*np));
        if (!np)
            return REFIT_ENOMEM;
        s->pc = np;
        np[s->n_pc++] = (struct push_piece){ps->region, ps->esize, ps->offset, ps->cols, q->src_row + (a - q->dst_row),
                                            q->src_col, e - a, q->cols, a - u0, q->dst_col, 0};
        u->n++;
    }
    return 0;
}

/* Tensor t's units into the work list when the trainer ranks can quantize
 * all of it (pieces idx[0..n) are its, sorted by row). */
static int tensor_units(refit_receiver_t *r, size_t t, const struct rf_piece *pc, const size_t *idx, size_t n,
                        struct rf_push_rcv *p)
{
    const struct refit_layout_tensor *lt = refit_layout_at(r->lay, t);
    uint64_t rows, slot;
    struct bands B = {0};
    rf_layout_dims(lt, &rows, &B.cols, &slot);
    if (!slot || rows % slot)
        return 0;
    B.slot = slot;
    B.nslot = rows / slot;
    B.per_slot = (slot + REFIT_FP8_BLOCK - 1) / REFIT_FP8_BLOCK;
    uint64_t nb = B.nslot * B.per_slot;
    if (!(B.b = calloc(nb ? nb : 1, sizeof(*B.b))))
        return REFIT_ENOMEM;
    int rc = 0;
    if (bands_of(r, pc, idx, n, &B)) {
        for (uint64_t b = 0; !rc && b < nb; b++)
            rc = add_unit(r, t, &B, b, pc, idx, n, &p->work.s[B.b[b].source]);
        for (uint64_t b = 0; b < nb; b++)
            p->wire_bytes += band_rows(&B, b) * B.cols +
                             (B.cols + REFIT_FP8_BLOCK - 1) / REFIT_FP8_BLOCK * sizeof(float);
        p->cvt[t] = !rc;
    }
    free(B.b);
    return rc;
}

/* A tensor the trainer may quantize: FP8 from bf16 or f32, 2-D or a stack. */
static int trainer_fp8(const refit_receiver_t *r, size_t t)
{
    const struct refit_layout_tensor *lt = refit_layout_at(r->lay, t);
    enum refit_dtype img = r->plan.img_dtype[t];
    return lt->fp8 && r->copts.fp8.enabled && r->plan.pdst[t].in_scratch && r->dests.scale_of_lt[t] >= 0 &&
           (img == REFIT_DTYPE_BF16 || img == REFIT_DTYPE_F32) &&
           r->dests.d[r->dests.dst_of_lt[t]].dtype == REFIT_DTYPE_F8_E4M3 && (lt->ndim == 2 || lt->ndim == 3);
}

static int units_of(refit_receiver_t *r, struct rf_piece *pc, size_t n_pc, struct rf_push_rcv *p)
{
    size_t *idx = malloc((n_pc ? n_pc : 1) * sizeof(size_t));
    if (!idx)
        return REFIT_ENOMEM;
    for (size_t i = 0; i < n_pc; i++)
        idx[i] = i;
    qsort_r(idx, n_pc, sizeof(size_t), cmp_idx_dst, pc);
    int rc = 0;
    for (size_t a = 0; a < n_pc && !rc;) {
        size_t b = a;
        while (b < n_pc && pc[idx[b]].dst == pc[idx[a]].dst)
            b++;
        if (trainer_fp8(r, pc[idx[a]].dst))
            rc = tensor_units(r, pc[idx[a]].dst, pc, idx + a, b - a, p);
        a = b;
    }
    free(idx);
    return rc;
}

/* Raw descriptors: all but those that feed only trainer-quantized tensors. */
static int raw_descs(refit_receiver_t *r, struct rf_push_rcv *p)
{
    const struct rf_rplan *rp = &r->plan;
    for (size_t i = 0; i < rp->plan.n_desc; i++) {
        size_t nf = rp->feed_first[i + 1] - rp->feed_first[i], nc = 0;
        for (size_t k = rp->feed_first[i]; k < rp->feed_first[i + 1]; k++)
            nc += p->cvt[rp->feed[k]];
        p->drop[i] = nf && nc == nf;
        if (p->drop[i])
            continue;
        const struct rf_desc *d = &rp->plan.desc[i];
        struct push_section *s = &p->work.s[d->source];
        struct push_desc *nd = realloc(s->d, (s->n_d + 1) * sizeof(*nd));
        if (!nd)
            return REFIT_ENOMEM;
        s->d = nd;
        nd[s->n_d++] = (struct push_desc){d->region, d->buf, d->remote_off, d->local_off, d->len};
        p->wire_bytes += d->len;
    }
    return 0;
}

static int push_planned(refit_receiver_t *r, struct rf_piece *pc, size_t n_pc)
{
    struct rf_push_rcv *p = r->mode_state;
    plan_free(p);
    size_t nl = refit_layout_count(r->lay), ns = r->disc.n_src;
    struct push_work *wk = &p->work;
    p->cvt = calloc(nl ? nl : 1, 1);
    p->drop = calloc(r->plan.plan.n_desc ? r->plan.plan.n_desc : 1, 1);
    wk->s = calloc(ns ? ns : 1, sizeof(*wk->s));
    p->by_delta = calloc(ns ? ns : 1, 1);
    if (!p->cvt || !p->drop || !wk->s || !p->by_delta)
        return REFIT_ENOMEM;
    wk->rule = (uint32_t)r->copts.fp8.rule;
    wk->floor = r->copts.fp8.floor;
    /* A section per source, in source order. */
    for (wk->n_s = 0; wk->n_s < ns; wk->n_s++)
        if (!(wk->s[wk->n_s].source = strdup(r->disc.src[wk->n_s].id)))
            return REFIT_ENOMEM;
    int rc = units_of(r, pc, n_pc, p);
    if (!rc)
        rc = raw_descs(r, p);
    if (rc)
        return rc;
    /* Mailbox slots: magic, version, count, two hashes per unit, trailer. */
    uint64_t mail = 0;
    for (size_t i = 0; i < wk->n_s; i++) {
        wk->s[i].mail_off = mail;
        mail += (RF_PUSH_MAIL_HEAD + RF_PUSH_MAIL_UNIT * wk->s[i].n_u + 63) & ~(uint64_t)63;
    }
    wk->mail_len = mail;
    if ((rc = rf_push_work_encode(wk, &p->work_blob, &p->work_len)))
        return rc;
    refit_hash128_of(p->work_blob, p->work_len, &p->work_hash);
    size_t n_cvt = 0;
    for (size_t t = 0; t < nl; t++)
        n_cvt += p->cvt[t];
    refit_log(REFIT_LOG_DEBUG, "push", "%s: work list %zu bytes, %zu tensors quantized by the trainer", r->id,
              p->work_len, n_cvt);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Each pull: advertise, wait, check */

static int packed(refit_receiver_t *r, int slot, refit_tp_region_t *reg, const void **blob, size_t *len)
{
    struct rf_push_rcv *p = r->mode_state;
    *blob = NULL;
    *len = 0;
    if (!reg)
        return 0;
    if (p->keys[slot].reg != reg || !p->keys[slot].blob) {
        free(p->keys[slot].blob);
        p->keys[slot].blob = NULL;
        int rc = refit_transport_pack(r->tp, reg, &p->keys[slot].blob, &p->keys[slot].len);
        if (rc)
            return rc;
        p->keys[slot].reg = reg;
    }
    *blob = p->keys[slot].blob;
    *len = p->keys[slot].len;
    return 0;
}

/* The mailbox, zeroed so an earlier version's hashes never count. */
static int mailbox(refit_receiver_t *r, struct rf_push_rcv *p)
{
    uint64_t want = p->work.mail_len;
    if (want > p->mail_cap) {
        if (p->mail_reg)
            refit_transport_dereg(r->tp, p->mail_reg);
        p->mail_reg = NULL;
        free(p->mail);
        p->mail_cap = 0;
        if (!(p->mail = aligned_alloc(64, (want + 63) & ~(uint64_t)63)))
            return REFIT_ENOMEM;
        p->mail_cap = want;
    }
    int rc = 0;
    if (!p->mail_reg && p->mail_cap && (rc = refit_transport_reg(r->tp, p->mail, p->mail_cap, REFIT_MEM_HOST, &p->mail_reg)))
        return refit_error_push(rc, "receiver %s: registering the push mailbox", r->id);
    memset(p->mail, 0, p->mail_cap);
    return 0;
}

static int advertise(refit_receiver_t *r, struct rf_push_rcv *p, uint64_t v, const struct push_adelta *asks,
                     size_t n_asks)
{
    char key[REFIT_STORE_MAX_KEY + 1];
    int rc = mailbox(r, p);
    if (!rc && !p->work_stored) {
        rf_key_push_work(key, &p->work_hash);
        if ((rc = refit_store_put_live(r->ctx->store, key, p->work_blob, p->work_len, 0)))
            return refit_error_push(rc, "receiver %s: storing its push work list", r->id);
        p->work_stored = 1;
    }
    struct push_advert a = {.version = v, .work = p->work_hash, .deltas = asks, .n_deltas = n_asks};
    snprintf(a.receiver, sizeof(a.receiver), "%s", r->id);
    snprintf(a.transport, sizeof(a.transport), "%s", refit_transport_plugin_name(r->tp));
    void *addr = NULL, *blob = NULL;
    size_t blen = 0;
    if (!rc)
        rc = refit_transport_address_get(r->tp, &addr, &a.addr_len);
    a.addr = addr;
    refit_tp_region_t *regs[3] = {r->bufs.staging_reg, r->bufs.scratch_reg, p->mail_reg};
    for (int i = 0; !rc && i < 3; i++)
        rc = packed(r, i, regs[i], &a.rk[i], &a.rk_len[i]);
    if (!rc)
        rc = rf_push_advert_encode(&a, &blob, &blen);
    free(addr);
    if (!rc)
        rc = rf_key_push_slots(key, r->id);
    if (!rc)
        rc = refit_store_put_live(r->ctx->store, key, blob, blen, 0);
    free(blob);
    return rc ? refit_error_push(rc, "receiver %s: advertising its slots for v%llu", r->id, (unsigned long long)v) : 0;
}

/* Sources still to finish, and which. */
struct waiting {
    uint8_t *done;
    size_t left;
    uint8_t *by_delta; /* per source: it wrote the asked delta */
};

/* A notification "RFPUSH <V> <source> ok|err <message>". */
static int parse_note(const char *msg, size_t len, uint64_t *v, char *src, size_t cap, int *ok, int *delta,
                      const char **err)
{
    char buf[RF_PUSH_MAX_NOTE + 1];
    size_t pl = strlen(RF_PUSH_NOTE_PREFIX);
    if (len > RF_PUSH_MAX_NOTE || len < pl || memcmp(msg, RF_PUSH_NOTE_PREFIX, pl))
        return 0;
    memcpy(buf, msg, len);
    buf[len] = 0;
    char *p = buf + pl, *end;
    *v = strtoull(p, &end, 10);
    if (end == p || *end != ' ')
        return 0;
    p = end + 1;
    char *sp = strchr(p, ' ');
    if (!sp || (size_t)(sp - p) >= cap)
        return 0;
    memcpy(src, p, (size_t)(sp - p));
    src[sp - p] = 0;
    *ok = !strncmp(sp + 1, "ok", 2);
    *delta = *ok && !strcmp(sp + 1, "ok delta");
    *err = *ok ? NULL : msg + (sp + 1 - buf);
    return 1;
}

/* One source said it finished (ok) or failed (its message). */
static int finished(const struct push_work *wk, struct waiting *w, uint64_t v, const char *src, int ok, int delta,
                    const char *why, int why_len)
{
    for (size_t i = 0; i < wk->n_s; i++) {
        if (w->done[i] || strcmp(wk->s[i].source, src))
            continue;
        if (!ok)
            return refit_error_set(REFIT_EIO, "source %s failed to push v%llu: %.*s", src, (unsigned long long)v,
                                   why_len, why);
        w->done[i] = 1;
        w->by_delta[i] = (uint8_t)delta;
        w->left--;
    }
    return 0;
}

/* The name source i's notifications must come from: the one its transport
 * authenticates as (its record's sender), else its id. */
static const char *sender_of(const refit_receiver_t *r, const struct push_work *wk, size_t i)
{
    const struct rf_source *s = i < r->disc.n_src ? &r->disc.src[i] : NULL;
    if (!s || strcmp(s->id, wk->s[i].source))
        return wk->s[i].source;
    return s->rec && s->rec->sender ? s->rec->sender : s->id;
}

/* A notification this pull does not act on: counted, and logged (as a
 * warning when it claims to be a source's and is not, or cannot be read). */
static void ignored(refit_receiver_t *r, int warn, const char *why, const char *from, size_t len, uint64_t v)
{
    struct rf_push_rcv *p = r->mode_state;
    p->ignored++;
    refit_log(warn ? REFIT_LOG_WARN : REFIT_LOG_DEBUG, "push",
              "%s: ignoring a notification of %zu bytes from '%s' during the push of v%llu: %s (%llu ignored)", r->id,
              len, from[0] ? from : "?", (unsigned long long)v, why, (unsigned long long)p->ignored);
}

/* One notification: acted on only when it is "RFPUSH <v> <source> ..." for
 * a source of this work list and comes from that source's transport.  Any
 * other peer (or a note too big to be one) is ignored, never an error: a
 * stranger cannot fail or finish this pull. */
static int wait_notes(refit_receiver_t *r, const struct push_work *wk, struct waiting *w, uint64_t v)
{
    struct rf_push_rcv *p = r->mode_state;
    char msg[RF_PUSH_MAX_NOTE + 1], src[REFIT_RECORD_MAX_ID + 2], from[REFIT_TP_NAME_MAX + 1] = "";
    size_t len = 0;
    int c = p->anon ? refit_transport_poll_notify(r->tp, msg, RF_PUSH_MAX_NOTE, &len, RF_POLL_NOTIFY_MS)
                    : refit_transport_poll_notify_from(r->tp, msg, RF_PUSH_MAX_NOTE, &len, from, sizeof(from),
                                                RF_POLL_NOTIFY_MS);
    if (c == REFIT_ENOTSUP && !p->anon) {
        p->anon = 1;
        refit_log(REFIT_LOG_WARN, "push", "%s: transport %s cannot name a notification's sender: push "
                  "completions are taken from any peer", r->id, refit_transport_plugin_name(r->tp));
        return 0;
    }
    if (c == REFIT_ETIMEDOUT)
        return 0;
    if (c == REFIT_ETOOBIG) {
        ignored(r, 1, "larger than any push notification", from, len, v);
        return 0;
    }
    if (c)
        return refit_error_push(c, "push of v%llu: waiting for notifications", (unsigned long long)v);
    uint64_t nv;
    int ok, delta;
    const char *err;
    if (!parse_note(msg, len, &nv, src, sizeof(src), &ok, &delta, &err)) {
        ignored(r, 1, "not a push notification", from, len, v);
        return 0;
    }
    if (nv != v) {
        ignored(r, 0, "for another version", from, len, v);
        return 0;
    }
    size_t i = 0;
    while (i < wk->n_s && strcmp(wk->s[i].source, src))
        i++;
    if (i == wk->n_s) {
        ignored(r, 1, "names a source this pull does not wait for", from, len, v);
        return 0;
    }
    if (!p->anon && strcmp(from, sender_of(r, wk, i))) {
        char why[REFIT_RECORD_MAX_ID + REFIT_RECORD_MAX_STRING + 64];
        snprintf(why, sizeof(why), "claims to be source %s's, whose transport is '%s'", src, sender_of(r, wk, i));
        ignored(r, 1, why, from, len, v);
        return 0;
    }
    return finished(wk, w, v, src, ok, delta, err, ok ? 0 : (int)(len - (size_t)(err - msg)));
}

/* Transports without notifications: push/done/<V>/<receiver>/<source>. */
static int wait_keys(refit_receiver_t *r, const struct push_work *wk, struct waiting *w, uint64_t v)
{
    char key[REFIT_STORE_MAX_KEY + 1];
    int rc = 0;
    for (size_t i = 0; i < wk->n_s && !rc; i++) {
        if (w->done[i] || rf_key_push_done(key, v, r->id, wk->s[i].source))
            continue;
        void *val = NULL;
        size_t len = 0;
        int c = refit_store_get(r->ctx->store, key, &val, &len);
        if (!c) {
            int ok = len >= 2 && !memcmp(val, "ok", 2), delta = len == 8 && !memcmp(val, "ok delta", 8);
            rc = finished(wk, w, v, wk->s[i].source, ok, delta, val, (int)(len < 400 ? len : 400));
            refit_store_del(r->ctx->store, key);
        } else if (c != REFIT_ENOENT) {
            rc = c;
        }
        free(val);
    }
    uint64_t cur = 0;
    int c = !rc && w->left ? refit_store_poll(r->ctx->store, "push/done/", 0, &cur, RF_POLL_PUSH_DONE_MS) : 0;
    return rc ? rc : c == REFIT_ETIMEDOUT ? 0 : c;
}

/* A publisher that died never notifies: its record and heartbeat say so. */
static int still_offered(refit_receiver_t *r, const struct push_work *wk, const struct waiting *w, uint64_t v)
{
    for (size_t i = 0; i < wk->n_s; i++) {
        if (w->done[i])
            continue;
        const struct rf_source *s = &r->disc.src[i];
        struct rf_fence_item it = {RF_FENCE_SOURCE, s->id, s->rec->keeps, {s->rec->catalog.b, 16}, NULL, NULL};
        int rc = rf_fence(r, &it, 1, v, 1);
        if (rc)
            return refit_error_push(rc, "push of v%llu: before source %s finished pushing", (unsigned long long)v,
                                    s->id);
    }
    return 0;
}

static int timeout_error(refit_receiver_t *r, const struct push_work *wk, const struct waiting *w, uint64_t v)
{
    char names[512] = "";
    size_t at = 0;
    for (size_t i = 0; i < wk->n_s && at < sizeof(names) - 1; i++)
        if (!w->done[i])
            at += (size_t)snprintf(names + at, sizeof(names) - at, "%s%s", at ? ", " : "", wk->s[i].source);
    return refit_error_set(REFIT_ETIMEDOUT, "push of v%llu: no completion from %s within %lld ms",
                           (unsigned long long)v, names, (long long)r->ctx->timeout_ms);
}

/* Every source with work has written v, within refit.timeout. */
static int wait_sources(refit_receiver_t *r, const struct push_work *wk, uint64_t v, uint8_t *by_delta)
{
    double t0 = rf_seconds(), deadline = t0 + (double)r->ctx->timeout_ms / 1000.0;
    double next_check = t0 + RF_PUSH_LIVENESS_S;
    struct waiting w = {calloc(wk->n_s ? wk->n_s : 1, 1), 0, by_delta};
    memset(by_delta, 0, wk->n_s);
    if (!w.done)
        return REFIT_ENOMEM;
    for (size_t i = 0; i < wk->n_s; i++) {
        w.done[i] = !wk->s[i].n_d && !wk->s[i].n_u;
        w.left += !w.done[i];
    }
    int notes = refit_transport_caps(r->tp)->notify, rc = 0;
    while (w.left && !rc) {
        if (rf_seconds() >= deadline) {
            rc = timeout_error(r, wk, &w, v);
            break;
        }
        rc = notes ? wait_notes(r, wk, &w, v) : wait_keys(r, wk, &w, v);
        if (!rc && w.left && rf_seconds() >= next_check) {
            next_check = rf_seconds() + RF_PUSH_LIVENESS_S;
            rc = still_offered(r, wk, &w, v);
        }
    }
    free(w.done);
    return rc;
}

/* The units a source quantized, against the hashes it wrote. */
static int check_mail(refit_receiver_t *r, const struct push_section *s, uint64_t v)
{
    struct rf_push_rcv *p = r->mode_state;
    const uint8_t *m = (const uint8_t *)p->mail + s->mail_off;
    size_t len = RF_PUSH_MAIL_HEAD + RF_PUSH_MAIL_UNIT * s->n_u;
    if (rf_push_rd64(m) != RF_PUSH_MAIL_MAGIC || rf_push_rd64(m + 8) != v || rf_push_rd64(m + 16) != s->n_u ||
        XXH3_64bits(m, len - 8) != rf_push_rd64(m + len - 8))
        return refit_error_set(REFIT_EPROTO, "source %s: its mailbox for v%llu is missing or malformed",
                               s->source, (unsigned long long)v);
    if (r->ctx->verify == RF_VERIFY_OFF)
        return 0;
    for (size_t k = 0; k < s->n_u; k++) {
        const struct push_unit *u = &s->u[k];
        const uint8_t *data = (const uint8_t *)r->bufs.staging + u->out_off;
        const uint8_t *sc = (const uint8_t *)r->bufs.staging + u->scale_off;
        uint64_t bc = (u->cols + REFIT_FP8_BLOCK - 1) / REFIT_FP8_BLOCK;
        if (XXH3_64bits(data, u->rows * u->cols) != rf_push_rd64(m + 24 + 16 * k) ||
            XXH3_64bits(sc, bc * sizeof(float)) != rf_push_rd64(m + 32 + 16 * k))
            return refit_error_set(REFIT_ECHECKSUM, "tensor '%s' (FP8 from source %s, rows at byte %llu): "
                                   "checksum mismatch after the push",
                                   refit_layout_at(r->lay, u->t)->name, s->source,
                                   (unsigned long long)(u->out_off - r->dests.d[r->dests.dst_of_lt[u->t]].staging_off));
    }
    return 0;
}

static int receive(refit_receiver_t *r, uint64_t v, struct refit_pull_stats *st, const struct push_adelta *asks,
                   size_t n_asks)
{
    struct rf_push_rcv *p = r->mode_state;
    const struct push_work *wk = &p->work;
    int rc = advertise(r, p, v, asks, n_asks);
    if (rc)
        return rc;
    double t0 = rf_seconds();
    uint64_t ign = p->ignored;
    rc = wait_sources(r, wk, v, p->by_delta);
    st->transfer_s = rf_seconds() - t0;
    st->notes_ignored = (uint32_t)(p->ignored - ign);
    if (rc)
        return rc;
    double tv = rf_seconds();
    for (size_t i = 0; i < wk->n_s && !rc; i++)
        if (wk->s[i].n_u)
            rc = check_mail(r, &wk->s[i], v);
    r->verify.seconds += rf_seconds() - tv;
    st->bytes_wire = p->wire_bytes;
    for (size_t i = 0; i < wk->n_s; i++)
        st->descriptors += wk->s[i].n_d + 2 * wk->s[i].n_u + (wk->s[i].n_u ? 1 : 0);
    return rc;
}

/* The publishers write; then the same checks and conversions as a pull,
 * for every descriptor they sent. */
static int push_transfer(refit_receiver_t *r, uint64_t v, struct refit_pull_stats *st)
{
    struct rf_push_rcv *p = r->mode_state;
    if (!p->work_blob)
        return refit_error_set(REFIT_EINVAL, "receiver %s: push mode without a plan", r->id);
    int rc = rf_verify_fetch(r, v), delta = rf_rcvdelta_wanted(r), whole = 0;
    if (!rc)
        rc = rf_xfer_begin(r, p->cvt);
    /* refit.delta.enabled: ask each source for its delta where this
     * receiver holds its base (delta_rcv.c). */
    const struct push_adelta *asks = NULL;
    size_t n_asks = 0;
    if (!rc && delta)
        rc = rf_rcvdelta_push_ask(r, v, p->drop, &asks, &n_asks);
    else if (!rc)
        rc = rf_rcvdelta_whole(r, st);
    if (!rc)
        rc = receive(r, v, st, asks, n_asks);
    if (delta)
        return rc ? rc : rf_rcvdelta_push_land(r, v, p->drop, p->by_delta, st, &whole);
    for (size_t i = 0; !rc && i < r->plan.plan.n_desc; i++)
        if (!p->drop[i])
            rc = rf_xfer_done(r, i, 1);
    return rc ? rc : rf_xfer_finish_unfed(r);
}

/* The mirror's base is V once V committed (delta_rcv.c). */
static void push_end(refit_receiver_t *r, uint64_t v, int rc, struct refit_pull_stats *st)
{
    (void)st;
    rf_rcvdelta_end(r, v, rc);
}

const struct rf_rcv_mode rf_mode_push = {
    .size = sizeof(struct rf_rcv_mode),
    .name = "push",
    .create = push_create,
    .destroy = push_destroy,
    .planned = push_planned,
    .plan_drop = push_plan_drop,
    .prepare = rf_mode_no_prepare,
    .transfer = push_transfer,
    .fence = rf_fence_sources,
    .retry = rf_mode_no_retry,
    .end = push_end,
};
