/* push_pub.c — push mode on the publisher (refit.mode: push; the delivery
 * strategy rf_deliver_push of publisher.h).
 *
 * After READY(V), the publisher serves every receiver's advert for V
 * (push_work.h): it fetches the receiver's work list (cached by its hash,
 * which it re-checks: push_pub_cache.c), WRITEs its raw descriptors straight from its
 * registered memory, gathers and quantizes its FP8 units (half the bytes
 * of bf16 on the wire), writes the units' hashes into its mailbox slot,
 * waits for its WRITEs and notifies the receiver ("RFPUSH <V> <source>
 * ok"; a store key where the transport has no notifications).  A work
 * list is someone else's data: the decoder checked every sum without
 * wrapping, and every read here is checked against the region it reads
 * (src_end, remote_off + len).  A receiver that holds the base of V's
 * delta (refit.delta.enabled) asks in its advert for ranges of the delta
 * arena in place of descriptors; the publisher checks the request against
 * its own delta and writes those ranges, or everything whole when the
 * delta was made from anything else (docs/delta.md, "Push mode").  The
 * receiver's side is push_rcv.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "../sched.h"
#include "../util.h"
#include "plan.h"
#include "publisher.h"
#include "push.h"
#include "push_pub_cache.h"
#include "push_work.h"
#include "refit/fp8.h"
#include "refit/log.h"
#include "sums.h"

/* Requests in flight to one receiver before the oldest is waited for. */
#define INFLIGHT_MAX 8

static void push_destroy(refit_publisher_t *pub)
{
    rf_push_pub_free(pub);
}

static uint64_t push_bytes(const refit_publisher_t *pub)
{
    return pub->push ? pub->push->bytes : 0;
}

/* The registered memory a catalog region index of the work names. */
static int local_region(refit_publisher_t *pub, uint32_t region, int arena, struct pub_region **out)
{
    int rc = pub->hold->region(pub, arena, region, out);
    return rc ? refit_error_push(rc, "push work") : 0;
}

/* Requests in flight to one receiver, waited for in order. */
struct inflight {
    refit_tp_req_t **q;
    size_t n, cap;
};

static int inflight_post(refit_publisher_t *pub, struct inflight *f, refit_tp_peer_t *peer,
                         const struct refit_tp_desc *d, size_t n, const char *who)
{
    const struct refit_tp_caps *caps = refit_transport_caps(pub->tp);
    size_t per = caps->max_desc_per_post ? caps->max_desc_per_post : n;
    if (per > (size_t)pub->ctx->flush_every) /* >= 1 by the schema */
        per = (size_t)pub->ctx->flush_every;
    for (size_t at = 0; at < n;) {
        size_t k = n - at < per ? n - at : per;
        /* Bounded depth: wait for the oldest before posting more. */
        if (f->n >= INFLIGHT_MAX) {
            int rc = refit_transport_wait(pub->tp, f->q[0], -1);
            refit_transport_req_free(pub->tp, f->q[0]);
            memmove(f->q, f->q + 1, (f->n - 1) * sizeof(*f->q));
            f->n--;
            if (rc)
                return refit_error_push(rc, "writing to receiver %s", who);
        }
        if (f->n == f->cap) {
            size_t nc = f->cap ? f->cap * 2 : 16;
            refit_tp_req_t **nq = realloc(f->q, nc * sizeof(*nq));
            if (!nq)
                return REFIT_ENOMEM;
            f->q = nq;
            f->cap = nc;
        }
        int rc = refit_transport_post(pub->tp, peer, d + at, k, &f->q[f->n]);
        if (rc)
            return refit_error_push(rc, "writing to receiver %s", who);
        f->n++;
        at += k;
    }
    return 0;
}

static int inflight_drain(refit_publisher_t *pub, struct inflight *f, const char *who)
{
    int rc = 0;
    for (size_t i = 0; i < f->n; i++) {
        int c = refit_transport_wait(pub->tp, f->q[i], -1);
        if (c && !rc)
            rc = refit_error_push(c, "writing to receiver %s", who);
        /* A request that never finished belongs to the transport's fini. */
        if (c != REFIT_ETIMEDOUT)
            refit_transport_req_free(pub->tp, f->q[i]);
    }
    free(f->q);
    memset(f, 0, sizeof(*f));
    return rc;
}

/* Gather one unit's pieces from this rank's tensors and quantize it. */
static int make_unit(refit_publisher_t *pub, struct pub_work *w, size_t k, int arena)
{
    const struct push_section *s = &w->w.s[0];
    const struct push_unit *u = &s->u[k];
    size_t es = refit_dtype_size((enum refit_dtype)u->src_dtype);
    memset(w->img, 0, u->rows * u->cols * es);
    for (size_t q = u->first; q < u->first + u->n; q++) {
        const struct push_piece *p = &s->pc[q];
        struct pub_region *rg;
        int rc = local_region(pub, p->region, arena, &rg);
        if (rc)
            return rc;
        /* src_end: the decoder computed it without wrapping. */
        if (p->src_end > rg->len)
            return refit_error_set(REFIT_ERANGE, "push work: unit %zu (layout tensor %u) reads past region %u "
                                   "(%llu > %zu)", k, u->t, p->region, (unsigned long long)p->src_end, rg->len);
        for (uint64_t i = 0; i < p->rows; i++)
            memcpy((char *)w->img + ((p->dst_row + i) * u->cols + p->dst_col) * es,
                   (const char *)rg->base + p->tensor_off + ((p->src_row + i) * p->src_cols + p->src_col) * es,
                   p->cols * es);
    }
    struct refit_fp8_params fp = {(enum refit_fp8_rule)w->w.rule, w->w.floor, REFIT_FP8_IMPL_AUTO};
    uint8_t *out = w->out + w->u_off[k];
    float *sc = (float *)(w->out + w->s_off[k]);
    if (u->src_dtype == REFIT_DTYPE_BF16)
        return refit_fp8_quantize_bf16(w->img, u->rows, u->cols, u->cols, out, sc, &fp);
    return refit_fp8_quantize_f32(w->img, u->rows, u->cols, u->cols, out, sc, &fp);
}

static int send_note(refit_publisher_t *pub, struct pub_peer *p, uint64_t v, const char *status)
{
    char msg[RF_PUSH_MAX_NOTE + 1];
    int n = snprintf(msg, sizeof(msg), RF_PUSH_NOTE_PREFIX "%llu %s %s", (unsigned long long)v, pub->id, status);
    size_t len = n < 0 ? 0 : (size_t)n > RF_PUSH_MAX_NOTE ? RF_PUSH_MAX_NOTE : (size_t)n;
    const struct refit_tp_caps *caps = refit_transport_caps(pub->tp);
    if (caps->notify && p && p->peer) {
        if (caps->max_notify_len && len > caps->max_notify_len)
            len = caps->max_notify_len;
        return refit_transport_notify(pub->tp, p->peer, msg, len);
    }
    char key[REFIT_STORE_MAX_KEY + 1];
    int rc = rf_key_push_done(key, v, p ? p->receiver : "?", pub->id);
    return rc ? rc : refit_store_put(pub->ctx->store, key, status, strlen(status));
}

/* One receiver being served: its WRITEs posted a batch at a time, in turn
 * with the other receivers of the round (refit.push_streams of them), so a
 * publisher's NIC writes into several receivers at once rather than into
 * one while the others wait (docs/scale.md §6.2). */
struct serving {
    struct push_advert a; /* blob fields point into the advert read this round */
    struct pub_work *w;
    struct pub_peer *p;
    refit_tp_rkey_t *rk[3];
    /* The receiver's delta request for this publisher, when it goes by
     * delta (by_delta): its ranges of the arena dreg into the key land. */
    struct push_adelta e;
    refit_tp_region_t *dreg;
    refit_tp_rkey_t *land;
    int by_delta;
    struct refit_tp_desc *raw; /* the raw descriptors (and delta ranges), checked */
    size_t n_raw, at, unit;
    int phase; /* raw, units, mailbox, posted */
    struct inflight f;
    uint64_t bytes;
    int rc;
};

enum { PH_RAW, PH_UNITS, PH_MAIL, PH_POSTED };

/* The raw descriptors of the work, each checked against the region it
 * reads and the buffers the receiver advertised. */
static int build_raw(refit_publisher_t *pub, struct serving *sv, int arena)
{
    const struct push_section *s = &sv->w->w.s[0];
    size_t nr = sv->by_delta ? sv->e.n_ranges : 0, m = 0;
    if (!(sv->raw = calloc(s->n_d + nr ? s->n_d + nr : 1, sizeof(*sv->raw))))
        return REFIT_ENOMEM;
    for (size_t k = 0; k < s->n_d; k++) {
        const struct push_desc *w = &s->d[k];
        if (sv->by_delta && (sv->e.skip[k / 8] >> (k % 8) & 1))
            continue; /* the receiver applies the delta instead */
        struct pub_region *rg;
        int rc = local_region(pub, w->region, arena, &rg);
        if (rc)
            return rc;
        refit_tp_rkey_t *to = sv->rk[w->buf == RF_BUF_SCRATCH ? 1 : 0];
        if (!to)
            return refit_error_set(REFIT_EPROTO, "receiver %s: work writes to a buffer it did not advertise",
                                   sv->a.receiver);
        if (!rf_fits(w->remote_off, w->len, rg->len))
            return refit_error_set(REFIT_ERANGE, "receiver %s: work reads past region %u of publisher %s",
                                   sv->a.receiver, w->region, pub->id);
        sv->raw[m++] = (struct refit_tp_desc){REFIT_OP_WRITE, rg->reg, w->remote_off, to, w->local_off, w->len};
        sv->bytes += w->len;
    }
    /* The asked ranges of the delta arena into the landing buffer
     * (delta_request checked each against the delta). */
    for (size_t i = 0; i < nr; i++) {
        const uint8_t *q = sv->e.ranges + i * RF_PUSH_RANGE_BYTES;
        sv->raw[m] = (struct refit_tp_desc){REFIT_OP_WRITE, sv->dreg, rf_push_rd64(q), sv->land,
                                            rf_push_rd64(q + 8), rf_push_rd64(q + 16)};
        sv->bytes += sv->raw[m++].len;
    }
    sv->n_raw = m;
    if (s->n_u && !sv->rk[0])
        return refit_error_set(REFIT_EPROTO, "receiver %s advertised no staging", sv->a.receiver);
    if (s->n_u && !sv->rk[2])
        return refit_error_set(REFIT_EPROTO, "receiver %s advertised no mailbox", sv->a.receiver);
    return 0;
}

/* Units 0..k of the work gathered and quantized (once per publish), their
 * hashes in the mailbox slot, and the slot sealed after the last. */
static int made_upto(refit_publisher_t *pub, struct pub_work *w, size_t k, int arena, uint64_t v)
{
    const struct push_section *s = &w->w.s[0];
    uint8_t *mail = w->out + w->mail_at;
    for (; w->n_made <= k && w->n_made < s->n_u; w->n_made++) {
        size_t j = w->n_made;
        const struct push_unit *u = &s->u[j];
        int rc = make_unit(pub, w, j, arena);
        if (rc)
            return rc;
        rf_push_wr64(mail + 24 + 16 * j, XXH3_64bits(w->out + w->u_off[j], u->rows * u->cols));
        rf_push_wr64(mail + 32 + 16 * j, XXH3_64bits(w->out + w->s_off[j], scale_row_bytes(u->cols)));
        if (j + 1 == s->n_u) {
            size_t ml = RF_PUSH_MAIL_HEAD + RF_PUSH_MAIL_UNIT * s->n_u;
            rf_push_wr64(mail, RF_PUSH_MAIL_MAGIC);
            rf_push_wr64(mail + 8, v);
            rf_push_wr64(mail + 16, s->n_u);
            rf_push_wr64(mail + ml - 8, XXH3_64bits(mail, ml - 8));
        }
    }
    return 0;
}

/* Post the receiver's next batch: raw WRITEs first (the transport moves
 * them while units are quantized), then each unit, then the mailbox. */
static int step(refit_publisher_t *pub, struct serving *sv, int arena, uint64_t v)
{
    const struct push_section *s = &sv->w->w.s[0];
    if (sv->phase == PH_RAW) {
        const struct refit_tp_caps *caps = refit_transport_caps(pub->tp);
        size_t per = caps->max_desc_per_post ? caps->max_desc_per_post : sv->n_raw - sv->at;
        if (per > (size_t)pub->ctx->flush_every) /* >= 1 by the schema */
            per = (size_t)pub->ctx->flush_every;
        size_t k = sv->n_raw - sv->at < per ? sv->n_raw - sv->at : per;
        int rc = k ? inflight_post(pub, &sv->f, sv->p->peer, sv->raw + sv->at, k, sv->a.receiver) : 0;
        sv->at += k;
        if (sv->at == sv->n_raw)
            sv->phase = s->n_u ? PH_UNITS : PH_POSTED;
        return rc;
    }
    if (sv->phase == PH_UNITS) {
        size_t k = sv->unit++;
        const struct push_unit *u = &s->u[k];
        int rc = made_upto(pub, sv->w, k, arena, v);
        if (rc)
            return rc;
        size_t sb = scale_row_bytes(u->cols);
        struct refit_tp_desc ud[2] = {
            {REFIT_OP_WRITE, sv->w->out_reg, sv->w->u_off[k], sv->rk[0], u->out_off, u->rows * u->cols},
            {REFIT_OP_WRITE, sv->w->out_reg, sv->w->s_off[k], sv->rk[0], u->scale_off, sb},
        };
        sv->bytes += u->rows * u->cols + sb;
        if (sv->unit == s->n_u)
            sv->phase = PH_MAIL;
        return inflight_post(pub, &sv->f, sv->p->peer, ud, 2, sv->a.receiver);
    }
    sv->phase = PH_POSTED;
    size_t ml = RF_PUSH_MAIL_HEAD + RF_PUSH_MAIL_UNIT * s->n_u;
    struct refit_tp_desc md = {REFIT_OP_WRITE, sv->w->out_reg, sv->w->mail_at, sv->rk[2], s->mail_off, ml};
    return inflight_post(pub, &sv->f, sv->p->peer, &md, 1, sv->a.receiver);
}

/* Tell the receiver why, so it fails now rather than at its timeout; the
 * error of the publish stays the failure's. */
static void send_failure(refit_publisher_t *pub, struct pub_peer *p, uint64_t v)
{
    char why[400], saved[1024];
    snprintf(why, sizeof(why), "err %s", refit_error_message());
    int st = refit_error_status();
    snprintf(saved, sizeof(saved), "%s", refit_error_message());
    send_note(pub, p, v, why);
    refit_error_set(st, "%s", saved);
}

/* What the receiver's delta request for this publisher asks, checked:
 * every field is the receiver's word (a stranger may have written the
 * advert), so each is checked against the work section and this
 * publisher's own delta of v before a byte moves.  *use 1: the section
 * goes by delta (e's ranges from *reg instead of the skipped descriptors);
 * 0: whole, as without a request (no request, or v's delta was not made
 * from what the receiver holds). */
static int delta_request(refit_publisher_t *pub, const struct push_advert *a, const struct push_section *s,
                         uint64_t v, struct push_adelta *e, refit_tp_region_t **reg, int *use)
{
    char key[REFIT_STORE_MAX_KEY + 1];
    int found = 0;
    *use = 0;
    int rc = rf_key_push_slots(key, a->receiver);
    if (!rc)
        rc = rf_push_advert_delta(a, key, pub->id, e, &found);
    if (rc || !found)
        return rc;
    if (e->version != v)
        return refit_error_set(REFIT_EPROTO, "receiver %s: advert field delta.version: v%llu in an advert for v%llu",
                               a->receiver, (unsigned long long)e->version, (unsigned long long)v);
    if (e->skip_len != (s->n_d + 7) / 8 || (s->n_d % 8 && e->skip[e->skip_len - 1] >> (s->n_d % 8)))
        return refit_error_set(REFIT_EPROTO, "receiver %s: advert field delta.skip: %zu bytes for the %zu "
                               "descriptors of source %s (%zu expected, padding bits clear)", a->receiver,
                               e->skip_len, s->n_d, pub->id, (s->n_d + 7) / 8);
    uint64_t len = 0;
    if (!rf_pubdelta_offer(pub, v, e->base, e->base_sums, reg, &len)) {
        refit_log(REFIT_LOG_DEBUG, "push", "%s: receiver %s holds v%llu, not the base of v%llu's delta: pushing "
                  "whole", pub->id, a->receiver, (unsigned long long)e->base, (unsigned long long)v);
        return 0;
    }
    for (size_t i = 0; i < e->n_ranges; i++) {
        const uint8_t *q = e->ranges + i * RF_PUSH_RANGE_BYTES;
        uint64_t at = rf_push_rd64(q), to = rf_push_rd64(q + 8), l = rf_push_rd64(q + 16);
        if (!l || !rf_fits(at, l, len) || !rf_fits(to, l, UINT64_MAX))
            return refit_error_set(REFIT_EPROTO, "receiver %s: advert field delta.ranges: range %zu (%llu + %llu "
                                   "to %llu) outside v%llu's delta of %llu bytes", a->receiver, i,
                                   (unsigned long long)at, (unsigned long long)l, (unsigned long long)to,
                                   (unsigned long long)v, (unsigned long long)len);
    }
    *use = 1;
    return 0;
}

/* Start serving the receiver that advertised sv->a: its work, connection
 * and keys.  *none: nothing of ours in its plan. */
static int start_receiver(refit_publisher_t *pub, struct serving *sv, int *none)
{
    *none = 0;
    int rc = rf_pub_work_get(pub, &sv->a.work, &sv->w);
    if (rc)
        return rc;
    if (!sv->w->w.n_s) {
        *none = 1; /* nothing of ours in this receiver's plan */
        return 0;
    }
    sv->w->busy++;
    if (strcmp(sv->a.transport, refit_transport_plugin_name(pub->tp)))
        return refit_error_set(REFIT_EPROTO, "receiver %s uses transport '%s', this publisher '%s'",
                               sv->a.receiver, sv->a.transport, refit_transport_plugin_name(pub->tp));
    /* Checked before connecting: a lying request fails here, naming it. */
    if ((rc = delta_request(pub, &sv->a, &sv->w->w.s[0], sv->a.version, &sv->e, &sv->dreg, &sv->by_delta)))
        return rc;
    rc = rf_pub_peer_get(pub, &sv->a, &sv->p);
    for (int i = 0; !rc && i < 3; i++)
        if (sv->a.rk_len[i])
            rc = rf_pub_rkey_get(pub, sv->p, sv->a.rk[i], sv->a.rk_len[i], &sv->rk[i]);
    if (!rc && sv->by_delta)
        rc = rf_pub_rkey_get(pub, sv->p, sv->e.rk, sv->e.rk_len, &sv->land);
    if (rc)
        return refit_error_push(rc, "receiver %s's slots", sv->a.receiver);
    return 0;
}

/* Wait for the receiver's WRITEs and notify it; on failure tell it why
 * and drop its connection: a failed push may have broken it (a reset, a
 * receiver stopped past the timeout), and the next one starts from a new
 * one rather than failing on the old (issue 22.3). */
static int finish_receiver(refit_publisher_t *pub, struct serving *sv, uint64_t v)
{
    int rc = sv->rc, drc = inflight_drain(pub, &sv->f, sv->a.receiver);
    if (!rc)
        rc = drc;
    if (!rc) {
        pub->push->bytes += sv->bytes;
        /* "ok delta": the skipped descriptors came as the asked ranges. */
        if ((rc = send_note(pub, sv->p, v, sv->by_delta ? "ok delta" : "ok")))
            refit_error_push(rc, "notifying receiver %s", sv->a.receiver);
    } else if (sv->p) {
        send_failure(pub, sv->p, v);
    }
    if (rc && sv->p)
        rf_pub_peer_forget(pub, sv->p);
    if (sv->w && sv->w->w.n_s)
        sv->w->busy--;
    free(sv->raw);
    if (rc)
        refit_error_push(rc, "push of v%llu to receiver %s", (unsigned long long)v, sv->a.receiver);
    return rc;
}

/* The requests of sv that finished, freed from the front (they finish
 * in order per receiver); 1 when none is left in flight. */
static int retired(refit_publisher_t *pub, struct serving *sv)
{
    struct inflight *f = &sv->f;
    size_t k = 0;
    while (k < f->n) {
        int c = refit_transport_test(pub->tp, f->q[k]);
        if (c == REFIT_EAGAIN)
            break;
        if (c && !sv->rc)
            sv->rc = refit_error_push(c, "writing to receiver %s", sv->a.receiver);
        refit_transport_req_free(pub->tp, f->q[k++]);
    }
    memmove(f->q, f->q + k, (f->n - k) * sizeof(*f->q));
    f->n -= k;
    return f->n == 0;
}

/* One pass over the receivers being served: each posts its next batch;
 * those fully posted whose WRITEs finished (or that failed) are finished
 * and leave the window.  When no one could move, wait for the oldest
 * request of the first.  The first failure is kept in *first. */
static void window_pass(refit_publisher_t *pub, struct serving *win, int *used, size_t k_max, uint64_t v,
                        int arena, int *first, char *msg, size_t msg_cap)
{
    int moved = 0;
    for (size_t j = 0; j < k_max; j++)
        if (used[j] && !win[j].rc && win[j].phase != PH_POSTED) {
            win[j].rc = step(pub, &win[j], arena, v);
            moved = 1;
        }
    for (size_t j = 0; j < k_max; j++) {
        if (!used[j] || (!win[j].rc && (win[j].phase != PH_POSTED || !retired(pub, &win[j]))))
            continue;
        int c = finish_receiver(pub, &win[j], v);
        used[j] = 0;
        moved = 1;
        if (c && !*first) {
            *first = c;
            snprintf(msg, msg_cap, "%s", refit_error_message());
        }
    }
    for (size_t j = 0; !moved && j < k_max; j++)
        if (used[j] && win[j].f.n) {
            int c = refit_transport_wait(pub->tp, win[j].f.q[0], -1);
            if (c && !win[j].rc)
                win[j].rc = refit_error_push(c, "writing to receiver %s", win[j].a.receiver);
            /* A request that never finished belongs to the transport's fini. */
            if (c == REFIT_ETIMEDOUT)
                win[j].f.q[0] = NULL;
            refit_transport_req_free(pub->tp, win[j].f.q[0]);
            memmove(win[j].f.q, win[j].f.q + 1, (win[j].f.n - 1) * sizeof(*win[j].f.q));
            win[j].f.n--;
            break;
        }
}

/* Receivers served so far this publish. */
struct served {
    char **id;
    size_t n, want;
};

static int was_served(const struct served *sv, const char *id)
{
    for (size_t k = 0; k < sv->n; k++)
        if (!strcmp(sv->id[k], id))
            return 1;
    return 0;
}

/* The advert read at key: joins the round (*joined) when it is for v and
 * its receiver new; a malformed one is ignored with a warning (anyone may
 * write junk there). */
static int take_advert(refit_publisher_t *pub, const struct refit_store_get_item *it, uint64_t v, int arena,
                       struct served *sv, struct serving *out, int *joined)
{
    *joined = 0;
    if (it->status == REFIT_ENOENT)
        return 0;
    memset(out, 0, sizeof(*out));
    int rc = it->status ? refit_error_set(it->status, "reading %s", it->key)
                        : rf_push_advert_decode(it->val, it->len, it->key, &out->a);
    if (rc == REFIT_EPROTO) {
        refit_log(REFIT_LOG_WARN, "push", "%s: ignoring %s: %s", pub->id, it->key, refit_error_message());
        return 0;
    }
    if (rc || out->a.version != v || was_served(sv, out->a.receiver))
        return rc;
    if (!(sv->id[sv->n] = strdup(out->a.receiver)))
        return REFIT_ENOMEM;
    sv->n++;
    int none = 0;
    out->rc = start_receiver(pub, out, &none);
    if (out->rc && !out->p) {
        /* Nothing posted, no connection to tell: the publish fails here. */
        if (out->w && out->w->w.n_s)
            out->w->busy--;
        return refit_error_push(out->rc, "push of v%llu to receiver %s", (unsigned long long)v,
                                out->a.receiver);
    }
    if (!out->rc && !none)
        out->rc = build_raw(pub, out, arena);
    *joined = !none;
    return 0;
}

/* This publisher's place among all (its parallel position), so that
 * publishers start on different receivers (docs/scale.md: staggered starts
 * keep every trainer NIC from writing into one receiver at once). */
static void stagger(const refit_publisher_t *pub, uint32_t *self, uint32_t *n_self)
{
    const struct refit_parallel *p = &pub->par;
    uint32_t tp = p->tp_size > 0 ? (uint32_t)p->tp_size : 1, ep = p->ep_size > 0 ? (uint32_t)p->ep_size : 1;
    uint32_t pp = p->pp_size > 0 ? (uint32_t)p->pp_size : 1;
    *n_self = tp * ep * pp;
    *self = ((uint32_t)p->pp_rank * tp + (uint32_t)p->tp_rank) * ep + (uint32_t)p->ep_rank;
    if (*self >= *n_self)
        *self %= *n_self;
}

/* The adverts at keys: read in one round trip and served in this
 * publisher's staggered order, refit.push_streams receivers at a time: a
 * window that takes the next receiver as soon as one is done.  After a
 * failure no receiver joins; those in the window are still finished (their
 * WRITEs waited for), and the first error is the publish's. */
static int serve_keys(refit_publisher_t *pub, char **keys, size_t nk, uint64_t v, int arena, struct served *sv)
{
    if (!nk)
        return 0;
    size_t k_max = pub->ctx->push_streams > 0 ? (size_t)pub->ctx->push_streams : 1;
    struct refit_store_get_item *it = calloc(nk, sizeof(*it));
    struct serving *win = calloc(k_max, sizeof(*win));
    int *used = calloc(k_max, sizeof(*used));
    uint32_t *order = calloc(nk, sizeof(*order)), self, n_self;
    int rc = it && order && win && used ? 0 : REFIT_ENOMEM;
    for (size_t i = 0; !rc && i < nk; i++)
        it[i].key = keys[i];
    if (!rc)
        rc = refit_store_get_many(pub->ctx->store, it, nk);
    stagger(pub, &self, &n_self);
    if (!rc)
        rf_sched_order(RF_SCHED_SPREAD, (uint32_t)nk, self, n_self, order);
    char msg[1024] = "";
    size_t next = 0, peak = 0;
    for (int live = 1; live;) {
        for (size_t j = 0; !rc && j < k_max; j++)
            while (!rc && !used[j] && next < nk && sv->n < sv->want) {
                if ((rc = take_advert(pub, &it[order[next++]], v, arena, sv, &win[j], &used[j])))
                    snprintf(msg, sizeof(msg), "%s", refit_error_message());
            }
        size_t n_live = 0;
        for (size_t j = 0; j < k_max; j++)
            n_live += (size_t)used[j];
        if (n_live > peak)
            peak = n_live;
        if ((live = n_live > 0))
            window_pass(pub, win, used, k_max, v, arena, &rc, msg, sizeof(msg));
    }
    if (peak)
        refit_log(REFIT_LOG_DEBUG, "push", "%s: v%llu: up to %zu receivers served at once", pub->id,
                  (unsigned long long)v, peak);
    for (size_t i = 0; it && i < nk; i++)
        free(it[i].val);
    free(it);
    free(order);
    free(win);
    free(used);
    return rc ? refit_error_set(rc, "%s", msg) : 0;
}

/* Name the registered receivers that did not advertise v. */
static int slots_timeout(refit_publisher_t *pub, uint64_t v, const struct served *sv)
{
    char names[600] = "";
    size_t at = 0;
    char **regs = NULL;
    size_t nr = 0;
    if (!refit_store_list(pub->ctx->store, "receivers/", &regs, &nr)) {
        for (size_t i = 0; i < nr && at < sizeof(names) - 1; i++) {
            const char *id = regs[i] + strlen("receivers/");
            if (!was_served(sv, id))
                at += (size_t)snprintf(names + at, sizeof(names) - at, "%s%s", at ? ", " : "", id);
        }
        free(regs);
    }
    return refit_error_set(REFIT_ETIMEDOUT,
                           "push of v%llu: %zu of %zu receivers advertised slots within %lld ms "
                           "(registered, not advertised: %s)",
                           (unsigned long long)v, sv->n, sv->want, (long long)pub->ctx->timeout_ms,
                           at ? names : "none registered");
}

/* Serve every receiver's advert for v (refit.receivers of them: 0 counts
 * as one, the receiver that must exist for a push to mean anything). */
static int push_deliver(refit_publisher_t *pub, uint64_t v, int arena)
{
    if (!pub->push && !(pub->push = calloc(1, sizeof(*pub->push))))
        return REFIT_ENOMEM;
    pub->push->bytes = 0;
    for (size_t i = 0; i < pub->push->n_works; i++)
        pub->push->works[i]->n_made = 0; /* this publish's tensors: quantized again */
    struct served sv = {NULL, 0, pub->ctx->receivers > 0 ? (size_t)pub->ctx->receivers : 1};
    if (!(sv.id = calloc(sv.want, sizeof(char *))))
        return REFIT_ENOMEM;
    double deadline = rf_seconds() + (double)pub->ctx->timeout_ms / 1000.0;
    /* A watch on the adverts: list once, then read only the adverts that
     * changed (a store that keeps no history says ERANGE: list again). */
    uint64_t cursor = 0;
    char **keys = NULL;
    size_t nk = 0;
    int rc = refit_store_watch(pub->ctx->store, "push/slots/", 0, &cursor, 0, &keys, &nk), listed = 0;
    while (!rc && sv.n < sv.want) {
        if (!listed) {
            free(keys);
            keys = NULL;
            rc = refit_store_list(pub->ctx->store, "push/slots/", &keys, &nk);
            listed = 1;
        }
        if (!rc)
            rc = serve_keys(pub, keys, nk, v, arena, &sv);
        free(keys);
        keys = NULL;
        nk = 0;
        if (rc || sv.n >= sv.want)
            break;
        double left = deadline - rf_seconds();
        if (left <= 0) {
            rc = slots_timeout(pub, v, &sv);
            break;
        }
        rc = rf_watch_step(pub->ctx->store, "push/slots/", left, RF_POLL_SLOTS_MS, &cursor, &keys, &nk, &listed);
    }
    free(keys);
    for (size_t i = 0; i < sv.n; i++)
        free(sv.id[i]);
    free(sv.id);
    if (!rc)
        refit_log(REFIT_LOG_INFO, "push", "%s: v%llu pushed to %zu receivers (%llu bytes)", pub->id,
                  (unsigned long long)v, sv.want, (unsigned long long)pub->push->bytes);
    return rc;
}

const struct rf_pub_delivery rf_deliver_push = {
    .size = sizeof(struct rf_pub_delivery),
    .name = "push",
    .host_arena = 1,
    .deliver = push_deliver,
    .destroy = push_destroy,
    .bytes = push_bytes,
};
