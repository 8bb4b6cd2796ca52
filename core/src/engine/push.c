/* push.c — push mode (refit.mode: push): the same plan, executed by the
 * trainer.
 *
 * The receiver plans exactly as in pull mode (sources READY at V, their
 * catalogs, the composed layout).  It then splits the plan by source into a
 * *work list* — the WRITEs each trainer rank must make into the receiver's
 * staging and scratch, and the FP8 *units* (a band of at most 128 rows of a
 * destination, all columns) that one trainer rank can quantize itself
 * because every element of the band comes from it — and stores it once per
 * plan, content-addressed ("push/work/<hash>").  Each pull it advertises
 * its *slots* ("push/slots/<receiver>"): the version it waits for, its
 * address, the remote keys of this pull's staging, scratch and mailbox, and
 * the work list's hash.
 *
 * A publisher, after writing READY(V), serves every advert for V: it WRITEs
 * its raw descriptors straight from its registered tensors, gathers and
 * quantizes its units (half the bytes of bf16 on the wire), writes the
 * units' XXH3 hashes into its mailbox slot, waits for its WRITEs and sends
 * a notification ("RFPUSH <V> <source> ok"), which transports deliver after
 * those WRITEs (or a store key where a transport has no notifications).
 *
 * The receiver waits for every source of its work list (watching their
 * heartbeats: a dead publisher fails the pull at once, naming it), checks
 * the units against the mailbox hashes and the raw bytes against the
 * sources' chunk checksums, converts what the trainer did not, and commits
 * exactly as a pull does.  Nothing touches the destinations before that, so
 * a failed push leaves the previous weights in place.
 *
 * Blobs are little-endian with a magic, counts checked against the bytes
 * left, and an XXH3-64 trailer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "publisher.h"
#include "push.h"
#include "receiver.h"
#include "refit/fp8.h"
#include "refit/log.h"

#define WORK_MAGIC "RFPSHW01"
#define ADV_MAGIC "RFPSHA01"
#define MAIL_MAGIC 0x31304c49414d5052ull /* "RPMAIL01" */
#define NOTE_PREFIX "RFPUSH "
#define MAX_NOTE 512

/* ------------------------------------------------------------------ */
/* Little-endian writer and a bounds-checked reader */

struct wbuf {
    char *p;
    size_t n, cap;
    int oom;
};

static void w_raw(struct wbuf *w, const void *src, size_t len)
{
    if (w->oom)
        return;
    if (w->n + len > w->cap) {
        size_t nc = w->cap ? w->cap * 2 : 4096;
        while (nc < w->n + len)
            nc *= 2;
        char *np = realloc(w->p, nc);
        if (!np) {
            w->oom = 1;
            return;
        }
        w->p = np;
        w->cap = nc;
    }
    memcpy(w->p + w->n, src, len);
    w->n += len;
}

static void w_u32(struct wbuf *w, uint32_t v)
{
    uint8_t b[4];
    for (int i = 0; i < 4; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    w_raw(w, b, 4);
}

static void w_u64(struct wbuf *w, uint64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    w_raw(w, b, 8);
}

static void w_bytes(struct wbuf *w, const void *p, size_t len)
{
    w_u32(w, (uint32_t)len);
    w_raw(w, p, len);
}

/* The trailer; the buffer is the caller's on success. */
static int w_finish(struct wbuf *w, void **out, size_t *len)
{
    w_u64(w, XXH3_64bits(w->p, w->n));
    if (w->oom) {
        free(w->p);
        return REFIT_ENOMEM;
    }
    *out = w->p;
    *len = w->n;
    return 0;
}

struct rbuf {
    const uint8_t *p;
    size_t n, at;
    int bad;
};

static uint64_t r_uint(struct rbuf *r, int bytes)
{
    if (r->bad || r->n - r->at < (size_t)bytes) {
        r->bad = 1;
        return 0;
    }
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v |= (uint64_t)r->p[r->at + (size_t)i] << (8 * i);
    r->at += (size_t)bytes;
    return v;
}

static uint32_t r_u32(struct rbuf *r)
{
    return (uint32_t)r_uint(r, 4);
}

static uint64_t r_u64(struct rbuf *r)
{
    return r_uint(r, 8);
}

/* A length-prefixed field, pointing into the buffer. */
static const void *r_bytes(struct rbuf *r, size_t *len, size_t max)
{
    uint32_t n = r_u32(r);
    if (r->bad || n > max || r->n - r->at < n) {
        r->bad = 1;
        *len = 0;
        return NULL;
    }
    const void *p = r->p + r->at;
    r->at += n;
    *len = n;
    return p;
}

/* Count n of elements at least min_bytes each must fit in what is left. */
static int r_count_ok(const struct rbuf *r, uint64_t n, size_t min_bytes)
{
    return !r->bad && n <= (r->n - r->at) / min_bytes;
}

static int r_open(struct rbuf *r, const void *buf, size_t len, const char *magic)
{
    memset(r, 0, sizeof(*r));
    if (!buf || len < 16 || memcmp(buf, magic, 8))
        return 0;
    uint64_t want = 0;
    const uint8_t *t = (const uint8_t *)buf + len - 8;
    for (int i = 0; i < 8; i++)
        want |= (uint64_t)t[i] << (8 * i);
    if (XXH3_64bits(buf, len - 8) != want)
        return 0;
    r->p = buf;
    r->n = len - 8;
    r->at = 8;
    return 1;
}

/* ------------------------------------------------------------------ */
/* The work list */

struct push_desc {
    uint32_t region, buf;
    uint64_t remote_off, local_off, len;
};

struct push_piece {
    uint32_t region, esize;
    uint64_t tensor_off, src_cols;
    uint64_t src_row, src_col, rows, cols, dst_row, dst_col;
};

struct push_unit {
    uint32_t t, src_dtype;
    uint64_t rows, cols, out_off, scale_off;
    size_t first, n; /* pieces */
};

struct push_section {
    char *source;
    uint64_t mail_off;
    struct push_desc *d;
    size_t n_d;
    struct push_unit *u;
    size_t n_u;
    struct push_piece *pc;
    size_t n_pc;
};

struct push_work {
    uint32_t rule;
    double floor;
    uint64_t mail_len;
    struct push_section *s;
    size_t n_s;
};

static void work_free(struct push_work *w)
{
    for (size_t i = 0; w && i < w->n_s; i++) {
        free(w->s[i].source);
        free(w->s[i].d);
        free(w->s[i].u);
        free(w->s[i].pc);
    }
    if (w)
        free(w->s);
}

static int work_encode(const struct push_work *wk, void **out, size_t *len)
{
    struct wbuf w = {0};
    w_raw(&w, WORK_MAGIC, 8);
    uint64_t fl;
    memcpy(&fl, &wk->floor, 8);
    w_u32(&w, wk->rule);
    w_u64(&w, fl);
    w_u64(&w, wk->mail_len);
    w_u32(&w, (uint32_t)wk->n_s);
    for (size_t i = 0; i < wk->n_s; i++) {
        const struct push_section *s = &wk->s[i];
        w_bytes(&w, s->source, strlen(s->source));
        w_u64(&w, s->mail_off);
        w_u64(&w, s->n_d);
        for (size_t k = 0; k < s->n_d; k++) {
            w_u32(&w, s->d[k].region);
            w_u32(&w, s->d[k].buf);
            w_u64(&w, s->d[k].remote_off);
            w_u64(&w, s->d[k].local_off);
            w_u64(&w, s->d[k].len);
        }
        w_u64(&w, s->n_u);
        for (size_t k = 0; k < s->n_u; k++) {
            const struct push_unit *u = &s->u[k];
            w_u32(&w, u->t);
            w_u32(&w, u->src_dtype);
            w_u64(&w, u->rows);
            w_u64(&w, u->cols);
            w_u64(&w, u->out_off);
            w_u64(&w, u->scale_off);
            w_u64(&w, u->n);
            for (size_t q = u->first; q < u->first + u->n; q++) {
                const struct push_piece *p = &s->pc[q];
                w_u32(&w, p->region);
                w_u32(&w, p->esize);
                w_u64(&w, p->tensor_off);
                w_u64(&w, p->src_cols);
                w_u64(&w, p->src_row);
                w_u64(&w, p->src_col);
                w_u64(&w, p->rows);
                w_u64(&w, p->cols);
                w_u64(&w, p->dst_row);
                w_u64(&w, p->dst_col);
            }
        }
    }
    return w_finish(&w, out, len);
}

/* Decode, keeping only the section of `source` (out->n_s is 0 or 1), and
 * check every geometric fact the publisher relies on. */
static int work_decode(const void *buf, size_t len, const char *key, const char *source, struct push_work *out)
{
    memset(out, 0, sizeof(*out));
    struct rbuf r;
    if (!r_open(&r, buf, len, WORK_MAGIC))
        return refit_error_set(REFIT_EPROTO, "%s: not a push work list (bad magic or checksum, %zu bytes)", key,
                               len);
    out->rule = r_u32(&r);
    uint64_t fl = r_u64(&r);
    memcpy(&out->floor, &fl, 8);
    out->mail_len = r_u64(&r);
    uint32_t ns = r_u32(&r);
    if (!r_count_ok(&r, ns, 28) || out->rule > 1)
        goto bad;
    for (uint32_t i = 0; i < ns; i++) {
        size_t idl;
        const char *id = r_bytes(&r, &idl, 256);
        uint64_t mail_off = r_u64(&r);
        int mine = id && idl == strlen(source) && !memcmp(id, source, idl);
        struct push_section s = {0};
        uint64_t nd = r_u64(&r);
        if (!r_count_ok(&r, nd, 32))
            goto bad;
        if (mine && !(s.d = calloc(nd ? nd : 1, sizeof(*s.d))))
            return REFIT_ENOMEM;
        for (uint64_t k = 0; k < nd; k++) {
            struct push_desc d = {r_u32(&r), r_u32(&r), r_u64(&r), r_u64(&r), r_u64(&r)};
            if (d.buf > RF_BUF_SCRATCH || d.len == 0 || d.remote_off + d.len < d.remote_off) {
                free(s.d);
                goto bad;
            }
            if (mine)
                s.d[s.n_d++] = d;
        }
        uint64_t nu = r_u64(&r);
        if (!r_count_ok(&r, nu, 48)) {
            free(s.d);
            goto bad;
        }
        size_t cap_pc = 0;
        if (mine && !(s.u = calloc(nu ? nu : 1, sizeof(*s.u)))) {
            free(s.d);
            return REFIT_ENOMEM;
        }
        for (uint64_t k = 0; k < nu; k++) {
            struct push_unit u = {.t = r_u32(&r), .src_dtype = r_u32(&r)};
            u.rows = r_u64(&r);
            u.cols = r_u64(&r);
            u.out_off = r_u64(&r);
            u.scale_off = r_u64(&r);
            uint64_t np = r_u64(&r);
            int ok = !r.bad && u.rows >= 1 && u.rows <= 128 && u.cols >= 1 && u.cols <= (1ull << 32) &&
                     (u.src_dtype == REFIT_DTYPE_BF16 || u.src_dtype == REFIT_DTYPE_F32) &&
                     r_count_ok(&r, np, 72);
            uint32_t es = (uint32_t)refit_dtype_size((enum refit_dtype)u.src_dtype);
            uint64_t area = 0;
            u.first = s.n_pc;
            u.n = (size_t)np;
            if (ok && mine && s.n_pc + np > cap_pc) {
                size_t nc = cap_pc ? cap_pc : 256;
                while (nc < s.n_pc + np)
                    nc *= 2;
                struct push_piece *npc = realloc(s.pc, nc * sizeof(*npc));
                if (!npc) {
                    work_free(&(struct push_work){.s = &s, .n_s = 1});
                    work_free(out);
                    return REFIT_ENOMEM;
                }
                s.pc = npc;
                cap_pc = nc;
            }
            for (uint64_t q = 0; ok && q < np; q++) {
                struct push_piece p = {r_u32(&r), r_u32(&r), r_u64(&r), r_u64(&r), r_u64(&r),
                                       r_u64(&r), r_u64(&r), r_u64(&r), r_u64(&r), r_u64(&r)};
                ok = !r.bad && p.esize == es && p.rows && p.cols && p.dst_row + p.rows <= u.rows &&
                     p.dst_col + p.cols <= u.cols && p.src_col + p.cols <= p.src_cols &&
                     p.src_cols <= (1ull << 32) && p.src_row <= (1ull << 40);
                area += p.rows * p.cols;
                if (ok && mine)
                    s.pc[s.n_pc++] = p;
            }
            if (!ok || area != u.rows * u.cols) {
                work_free(&(struct push_work){.s = &s, .n_s = 1});
                goto bad;
            }
            if (mine)
                s.u[s.n_u++] = u;
        }
        if (mine) {
            s.mail_off = mail_off;
            if (!(s.source = strndup(id, idl))) {
                work_free(&(struct push_work){.s = &s, .n_s = 1});
                work_free(out);
                return REFIT_ENOMEM;
            }
            if (out->n_s) { /* two sections for one source */
                work_free(&(struct push_work){.s = &s, .n_s = 1});
                goto bad;
            }
            out->s = malloc(sizeof(*out->s));
            if (!out->s) {
                work_free(&(struct push_work){.s = &s, .n_s = 1});
                return REFIT_ENOMEM;
            }
            out->s[0] = s;
            out->n_s = 1;
        }
    }
    if (r.bad || r.at != r.n)
        goto bad;
    return 0;
bad:
    work_free(out);
    memset(out, 0, sizeof(*out));
    return refit_error_set(REFIT_EPROTO, "%s: malformed push work list (at byte %zu of %zu)", key, r.at, len);
}

/* ------------------------------------------------------------------ */
/* Adverts */

struct push_advert {
    uint64_t version;
    char receiver[256];
    char transport[64];
    const void *addr;
    size_t addr_len;
    const void *rk[3]; /* staging, scratch, mailbox */
    size_t rk_len[3];
    struct refit_hash128 work;
};

static int advert_encode(const struct push_advert *a, void **out, size_t *len)
{
    struct wbuf w = {0};
    w_raw(&w, ADV_MAGIC, 8);
    w_u64(&w, a->version);
    w_bytes(&w, a->receiver, strlen(a->receiver));
    w_bytes(&w, a->transport, strlen(a->transport));
    w_bytes(&w, a->addr, a->addr_len);
    for (int i = 0; i < 3; i++)
        w_bytes(&w, a->rk[i], a->rk_len[i]);
    w_raw(&w, a->work.b, 16);
    return w_finish(&w, out, len);
}

/* Fields point into buf. */
static int advert_decode(const void *buf, size_t len, const char *key, struct push_advert *a)
{
    memset(a, 0, sizeof(*a));
    struct rbuf r;
    if (!r_open(&r, buf, len, ADV_MAGIC))
        return refit_error_set(REFIT_EPROTO, "%s: not a push advert (bad magic or checksum)", key);
    a->version = r_u64(&r);
    size_t n;
    const void *p = r_bytes(&r, &n, sizeof(a->receiver) - 1);
    if (p)
        memcpy(a->receiver, p, n);
    p = r_bytes(&r, &n, sizeof(a->transport) - 1);
    if (p)
        memcpy(a->transport, p, n);
    a->addr = r_bytes(&r, &a->addr_len, 1u << 20);
    for (int i = 0; i < 3; i++)
        a->rk[i] = r_bytes(&r, &a->rk_len[i], 1u << 20);
    if (!r.bad && r.n - r.at == 16) {
        memcpy(a->work.b, r.p + r.at, 16);
        r.at += 16;
    } else {
        r.bad = 1;
    }
    if (r.bad || !a->version || !a->receiver[0] || refit_check_id("receiver id", a->receiver))
        return refit_error_set(REFIT_EPROTO, "%s: malformed push advert", key);
    return 0;
}

static int key_slots(char *buf, const char *receiver)
{
    int n = snprintf(buf, REFIT_STORE_MAX_KEY + 1, "push/slots/%s", receiver);
    return n > 0 && n <= REFIT_STORE_MAX_KEY ? 0 : REFIT_ERANGE;
}

static void key_work(char *buf, const struct refit_hash128 *h)
{
    char hex[33];
    refit_hash128_hex(h, hex);
    snprintf(buf, REFIT_STORE_MAX_KEY + 1, "push/work/%s", hex);
}

static int key_done(char *buf, uint64_t v, const char *receiver, const char *source)
{
    int n = snprintf(buf, REFIT_STORE_MAX_KEY + 1, "push/done/%llu/%s/%s", (unsigned long long)v, receiver,
                     source);
    return n > 0 && n <= REFIT_STORE_MAX_KEY ? 0 : REFIT_ERANGE;
}

/* ------------------------------------------------------------------ */
/* Receiver side */

struct rf_push_rcv {
    /* Per plan. */
    uint8_t *cvt;  /* per layout tensor: quantized by the trainer */
    uint8_t *drop; /* per descriptor: feeds only such tensors, not sent */
    struct push_work work;
    ptrdiff_t *section_of; /* per source index → section, -1 */
    void *work_blob;
    size_t work_len;
    struct refit_hash128 work_hash;
    int work_stored;
    uint64_t wire_bytes; /* what the publishers write per cycle */
    /* Kept across plans. */
    void *mail;
    size_t mail_cap;
    refit_tp_region_t *mail_reg;
    struct {
        refit_tp_region_t *reg;
        void *blob;
        size_t len;
    } keys[4];
};

static void rcv_plan_free(struct rf_push_rcv *p)
{
    free(p->cvt);
    free(p->drop);
    free(p->section_of);
    work_free(&p->work);
    free(p->work_blob);
    p->cvt = p->drop = NULL;
    p->section_of = NULL;
    p->work_blob = NULL;
    memset(&p->work, 0, sizeof(p->work));
    p->work_stored = 0;
    p->wire_bytes = 0;
}

void rf_push_rcv_plan_free(refit_receiver_t *r)
{
    if (r->push)
        rcv_plan_free(r->push);
}

void rf_push_rcv_destroy(refit_receiver_t *r)
{
    struct rf_push_rcv *p = r->push;
    if (!p)
        return;
    rcv_plan_free(p);
    if (p->mail_reg)
        refit_tp_dereg(r->tp, p->mail_reg);
    free(p->mail);
    for (int i = 0; i < 4; i++)
        free(p->keys[i].blob);
    free(p);
    r->push = NULL;
}

int rf_push_converted(const refit_receiver_t *r, size_t t)
{
    return r->push && r->push->cvt && r->push->cvt[t];
}

int rf_push_dropped(const refit_receiver_t *r, size_t desc)
{
    return r->push && r->push->drop && r->push->drop[desc];
}

static void layout_dims2(const struct refit_layout_tensor *t, uint64_t *rows, uint64_t *cols, uint64_t *slot)
{
    if (t->ndim == 3) {
        *rows = (uint64_t)(t->shape[0] * t->shape[1]);
        *cols = (uint64_t)t->shape[2];
        *slot = (uint64_t)t->shape[1];
    } else {
        *rows = (uint64_t)t->shape[0];
        *cols = t->ndim == 2 ? (uint64_t)t->shape[1] : 1;
        *slot = *rows;
    }
}

static int cmp_idx_dst(const void *a, const void *b, void *arg)
{
    const struct rf_piece *pc = arg;
    const struct rf_piece *x = &pc[*(const size_t *)a], *y = &pc[*(const size_t *)b];
    if (x->dst != y->dst)
        return x->dst < y->dst ? -1 : 1;
    return (x->dst_row > y->dst_row) - (x->dst_row < y->dst_row);
}

/* One FP8 tensor: its bands (128 rows of one expert slot, all columns) and
 * the source of each; 1 when every band has exactly one source and is
 * covered whole, so the trainer ranks can quantize it. */
struct band {
    uint32_t source;
    uint64_t area;
};

static int push_tensor_units(refit_receiver_t *r, size_t t, const struct rf_piece *pc, const size_t *idx,
                             size_t n, struct push_work *wk, struct rf_push_rcv *p)
{
    const struct refit_layout_tensor *lt = refit_layout_at(r->lay, t);
    uint64_t rows, cols, slot;
    layout_dims2(lt, &rows, &cols, &slot);
    if (!slot || rows % slot)
        return 0;
    uint64_t nslot = rows / slot, bps = (slot + 127) / 128, bc = (cols + 127) / 128;
    uint64_t nb = nslot * bps;
    struct band *bd = calloc(nb ? nb : 1, sizeof(*bd));
    if (!bd)
        return REFIT_ENOMEM;
    for (uint64_t b = 0; b < nslot * bps; b++)
        bd[b].source = UINT32_MAX;
    int ok = 1;
    for (size_t k = 0; ok && k < n; k++) {
        const struct rf_piece *q = &pc[idx[k]];
        uint32_t s = r->psrc_source[q->cand[0]];
        for (uint64_t row = q->dst_row; ok && row < q->dst_row + q->rows;) {
            uint64_t x = row / slot, b = (row % slot) / 128;
            uint64_t end = x * slot + (b + 1) * 128;
            if (end > (x + 1) * slot)
                end = (x + 1) * slot;
            if (end > q->dst_row + q->rows)
                end = q->dst_row + q->rows;
            struct band *u = &bd[x * bps + b];
            if (u->source != UINT32_MAX && u->source != s)
                ok = 0;
            u->source = s;
            u->area += (end - row) * q->cols;
            row = end;
        }
    }
    for (uint64_t b = 0; ok && b < nslot * bps; b++) {
        uint64_t brows = (b % bps + 1) * 128 <= slot ? 128 : slot - (b % bps) * 128;
        ok = bd[b].source != UINT32_MAX && bd[b].area == brows * cols;
    }
    if (!ok) {
        free(bd);
        return 0;
    }
    const struct rcv_dst *d = &r->d[r->dst_of_lt[t]];
    const struct rcv_dst *sd = &r->d[r->scale_of_lt[t]];
    for (uint64_t b = 0; b < nslot * bps; b++) {
        struct push_section *s = &wk->s[p->section_of[bd[b].source]];
        uint64_t x = b / bps, bb = b % bps;
        uint64_t u0 = x * slot + bb * 128, brows = (bb + 1) * 128 <= slot ? 128 : slot - bb * 128;
        struct push_unit *nu = realloc(s->u, (s->n_u + 1) * sizeof(*nu));
        if (!nu) {
            free(bd);
            return REFIT_ENOMEM;
        }
        s->u = nu;
        struct push_unit *u = &nu[s->n_u++];
        *u = (struct push_unit){.t = (uint32_t)t, .src_dtype = (uint32_t)r->img_dtype[t], .rows = brows,
                                .cols = cols, .out_off = d->staging_off + u0 * cols,
                                .scale_off = sd->staging_off + (x * bps + bb) * bc * sizeof(float),
                                .first = s->n_pc};
        for (size_t k = 0; k < n; k++) {
            const struct rf_piece *q = &pc[idx[k]];
            uint64_t a = q->dst_row > u0 ? q->dst_row : u0;
            uint64_t e = q->dst_row + q->rows < u0 + brows ? q->dst_row + q->rows : u0 + brows;
            if (a >= e)
                continue;
            const struct rf_psrc *ps = &r->psrc[q->cand[0]];
            struct push_piece *np = realloc(s->pc, (s->n_pc + 1) * sizeof(*np));
            if (!np) {
                free(bd);
                return REFIT_ENOMEM;
            }
            s->pc = np;
            np[s->n_pc++] = (struct push_piece){ps->region, ps->esize, ps->offset, ps->cols,
                                                q->src_row + (a - q->dst_row), q->src_col, e - a, q->cols,
                                                a - u0, q->dst_col};
            u->n++;
        }
        p->wire_bytes += brows * cols + bc * sizeof(float);
    }
    free(bd);
    p->cvt[t] = 1;
    return 0;
}

int rf_push_rcv_plan(refit_receiver_t *r, struct rf_piece *pc, size_t n_pc)
{
    if (!r->push && !(r->push = calloc(1, sizeof(*r->push))))
        return REFIT_ENOMEM;
    struct rf_push_rcv *p = r->push;
    rcv_plan_free(p);
    size_t nl = refit_layout_count(r->lay);
    const struct rf_plan *plan = &r->plan;
    p->cvt = calloc(nl ? nl : 1, 1);
    p->drop = calloc(plan->n_desc ? plan->n_desc : 1, 1);
    p->section_of = malloc((r->n_src ? r->n_src : 1) * sizeof(ptrdiff_t));
    size_t *idx = malloc((n_pc ? n_pc : 1) * sizeof(size_t));
    struct push_work *wk = &p->work;
    wk->s = calloc(r->n_src ? r->n_src : 1, sizeof(*wk->s));
    if (!p->cvt || !p->drop || !p->section_of || !idx || !wk->s) {
        free(idx);
        return REFIT_ENOMEM;
    }
    wk->rule = (uint32_t)r->copts.fp8.rule;
    wk->floor = r->copts.fp8.floor;
    /* A section per source, in source order. */
    for (size_t i = 0; i < r->n_src; i++) {
        p->section_of[i] = (ptrdiff_t)i;
        if (!(wk->s[i].source = strdup(r->src[i].id))) {
            free(idx);
            return REFIT_ENOMEM;
        }
    }
    wk->n_s = r->n_src;
    int rc = 0;
    /* Trainer-side FP8 where every band has one source. */
    for (size_t i = 0; i < n_pc; i++)
        idx[i] = i;
    qsort_r(idx, n_pc, sizeof(size_t), cmp_idx_dst, pc);
    for (size_t a = 0; a < n_pc && !rc;) {
        size_t b = a;
        while (b < n_pc && pc[idx[b]].dst == pc[idx[a]].dst)
            b++;
        size_t t = pc[idx[a]].dst;
        const struct refit_layout_tensor *lt = refit_layout_at(r->lay, t);
        if (lt->fp8 && r->copts.fp8.enabled && r->pdst[t].in_scratch && r->scale_of_lt[t] >= 0 &&
            (r->img_dtype[t] == REFIT_DTYPE_BF16 || r->img_dtype[t] == REFIT_DTYPE_F32) &&
            r->d[r->dst_of_lt[t]].dtype == REFIT_DTYPE_F8_E4M3 && (lt->ndim == 2 || lt->ndim == 3))
            rc = push_tensor_units(r, t, pc, idx + a, b - a, wk, p);
        a = b;
    }
    free(idx);
    if (rc)
        return rc;
    /* Raw descriptors: all but those that feed only trainer-quantized tensors. */
    for (size_t i = 0; i < plan->n_desc; i++) {
        size_t nf = r->feed_first[i + 1] - r->feed_first[i], nc = 0;
        for (size_t k = r->feed_first[i]; k < r->feed_first[i + 1]; k++)
            nc += p->cvt[r->feed[k]];
        p->drop[i] = nf && nc == nf;
        if (p->drop[i])
            continue;
        const struct rf_desc *d = &plan->desc[i];
        struct push_section *s = &wk->s[p->section_of[d->source]];
        struct push_desc *nd = realloc(s->d, (s->n_d + 1) * sizeof(*nd));
        if (!nd)
            return REFIT_ENOMEM;
        s->d = nd;
        nd[s->n_d++] = (struct push_desc){d->region, d->buf, d->remote_off, d->local_off, d->len};
        p->wire_bytes += d->len;
    }
    /* Mailbox slots: magic, version, count, two hashes per unit, trailer. */
    uint64_t mail = 0;
    for (size_t i = 0; i < wk->n_s; i++) {
        wk->s[i].mail_off = mail;
        mail += (32 + 16 * wk->s[i].n_u + 63) & ~(uint64_t)63;
    }
    wk->mail_len = mail;
    rc = work_encode(wk, &p->work_blob, &p->work_len);
    if (rc)
        return rc;
    refit_hash128_of(p->work_blob, p->work_len, &p->work_hash);
    size_t n_cvt = 0;
    for (size_t t = 0; t < nl; t++)
        n_cvt += p->cvt[t];
    refit_log(REFIT_LOG_DEBUG, "push", "%s: work list %zu bytes, %zu tensors quantized by the trainer", r->id,
              p->work_len, n_cvt);
    return 0;
}

static int packed(refit_receiver_t *r, int slot, refit_tp_region_t *reg, const void **blob, size_t *len)
{
    struct rf_push_rcv *p = r->push;
    if (!reg) {
        *blob = NULL;
        *len = 0;
        return 0;
    }
    if (p->keys[slot].reg != reg || !p->keys[slot].blob) {
        free(p->keys[slot].blob);
        p->keys[slot].blob = NULL;
        int rc = refit_tp_pack(r->tp, reg, &p->keys[slot].blob, &p->keys[slot].len);
        if (rc)
            return rc;
        p->keys[slot].reg = reg;
    }
    *blob = p->keys[slot].blob;
    *len = p->keys[slot].len;
    return 0;
}

static uint64_t rd64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static void wr64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* The units a source quantized, against the hashes it wrote. */
static int check_mail(refit_receiver_t *r, const struct push_section *s, uint64_t v)
{
    const uint8_t *m = (const uint8_t *)r->push->mail + s->mail_off;
    size_t len = 32 + 16 * s->n_u;
    if (rd64(m) != MAIL_MAGIC || rd64(m + 8) != v || rd64(m + 16) != s->n_u ||
        XXH3_64bits(m, len - 8) != rd64(m + len - 8))
        return refit_error_set(REFIT_EPROTO, "source %s: its mailbox for v%llu is missing or malformed",
                               s->source, (unsigned long long)v);
    if (r->ctx->verify == RF_VERIFY_OFF)
        return 0;
    for (size_t k = 0; k < s->n_u; k++) {
        const struct push_unit *u = &s->u[k];
        const uint8_t *data = (const uint8_t *)r->staging + u->out_off;
        const uint8_t *sc = (const uint8_t *)r->staging + u->scale_off;
        uint64_t bc = (u->cols + 127) / 128;
        if (XXH3_64bits(data, u->rows * u->cols) != rd64(m + 24 + 16 * k) ||
            XXH3_64bits(sc, bc * sizeof(float)) != rd64(m + 32 + 16 * k))
            return refit_error_set(REFIT_ECHECKSUM, "tensor '%s' (FP8 from source %s, rows at byte %llu): "
                                   "checksum mismatch after the push",
                                   refit_layout_at(r->lay, u->t)->name, s->source,
                                   (unsigned long long)(u->out_off - r->d[r->dst_of_lt[u->t]].staging_off));
    }
    return 0;
}

/* A notification "RFPUSH <V> <source> ok|err <message>". */
static int parse_note(const char *msg, size_t len, uint64_t *v, char *src, size_t cap, int *ok, const char **err)
{
    char buf[MAX_NOTE + 1];
    if (len > MAX_NOTE || len < strlen(NOTE_PREFIX) || memcmp(msg, NOTE_PREFIX, strlen(NOTE_PREFIX)))
        return 0;
    memcpy(buf, msg, len);
    buf[len] = 0;
    char *p = buf + strlen(NOTE_PREFIX), *end;
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
    *err = *ok ? NULL : msg + (sp + 1 - buf);
    return 1;
}

int rf_push_receive(refit_receiver_t *r, uint64_t v, struct refit_pull_stats *st)
{
    struct rf_push_rcv *p = r->push;
    if (!p || !p->work_blob)
        return refit_error_set(REFIT_EINVAL, "receiver %s: push mode without a plan", r->id);
    struct push_work *wk = &p->work;
    int rc = 0;
    /* The mailbox, zeroed so an earlier version's hashes never count. */
    if (wk->mail_len > p->mail_cap) {
        if (p->mail_reg)
            refit_tp_dereg(r->tp, p->mail_reg);
        p->mail_reg = NULL;
        free(p->mail);
        p->mail_cap = 0;
        if (!(p->mail = aligned_alloc(64, (wk->mail_len + 63) & ~(uint64_t)63)))
            return REFIT_ENOMEM;
        p->mail_cap = wk->mail_len;
    }
    if (!p->mail_reg && p->mail_cap && (rc = refit_tp_reg(r->tp, p->mail, p->mail_cap, REFIT_MEM_HOST, &p->mail_reg)))
        return refit_error_push(rc, "receiver %s: registering the push mailbox", r->id);
    memset(p->mail, 0, p->mail_cap);
    char key[REFIT_STORE_MAX_KEY + 1];
    if (!p->work_stored) {
        key_work(key, &p->work_hash);
        rc = refit_store_put_live(r->ctx->store, key, p->work_blob, p->work_len, 0);
        if (rc)
            return refit_error_push(rc, "receiver %s: storing its push work list", r->id);
        p->work_stored = 1;
    }
    struct push_advert a = {.version = v, .work = p->work_hash};
    snprintf(a.receiver, sizeof(a.receiver), "%s", r->id);
    snprintf(a.transport, sizeof(a.transport), "%s", refit_tp_plugin_name(r->tp));
    void *addr = NULL;
    rc = refit_tp_address_get(r->tp, &addr, &a.addr_len);
    a.addr = addr;
    if (!rc)
        rc = packed(r, 0, r->staging_reg, &a.rk[0], &a.rk_len[0]);
    if (!rc)
        rc = packed(r, 1, r->scratch_reg, &a.rk[1], &a.rk_len[1]);
    if (!rc)
        rc = packed(r, 2, p->mail_reg, &a.rk[2], &a.rk_len[2]);
    void *blob = NULL;
    size_t blen = 0;
    if (!rc)
        rc = advert_encode(&a, &blob, &blen);
    free(addr);
    if (!rc)
        rc = key_slots(key, r->id);
    if (!rc)
        rc = refit_store_put_live(r->ctx->store, key, blob, blen, 0);
    free(blob);
    if (rc)
        return refit_error_push(rc, "receiver %s: advertising its slots for v%llu", r->id, (unsigned long long)v);

    /* Wait for every source with work, watching that they stay alive. */
    double t0 = rf_seconds(), deadline = t0 + (double)r->ctx->timeout_ms / 1000.0, next_check = t0 + 0.2;
    uint8_t *done = calloc(wk->n_s ? wk->n_s : 1, 1);
    if (!done)
        return REFIT_ENOMEM;
    size_t left = 0;
    for (size_t i = 0; i < wk->n_s; i++) {
        done[i] = !wk->s[i].n_d && !wk->s[i].n_u;
        left += !done[i];
    }
    int notes = refit_tp_caps(r->tp)->notify;
    while (left && !rc) {
        double now = rf_seconds();
        if (now >= deadline) {
            char names[512] = "";
            size_t at = 0;
            for (size_t i = 0; i < wk->n_s && at < sizeof(names) - 1; i++)
                if (!done[i])
                    at += (size_t)snprintf(names + at, sizeof(names) - at, "%s%s", at ? ", " : "", wk->s[i].source);
            rc = refit_error_set(REFIT_ETIMEDOUT, "push of v%llu: no completion from %s within %lld ms",
                                 (unsigned long long)v, names, (long long)r->ctx->timeout_ms);
            break;
        }
        if (notes) {
            char msg[MAX_NOTE + 1];
            size_t len = 0;
            int c = refit_tp_poll_notify(r->tp, msg, MAX_NOTE, &len, 100);
            if (c && c != REFIT_ETIMEDOUT) {
                rc = refit_error_push(c, "push of v%llu: waiting for notifications", (unsigned long long)v);
                break;
            }
            uint64_t nv;
            char src[256];
            int ok;
            const char *err;
            if (!c && parse_note(msg, len, &nv, src, sizeof(src), &ok, &err) && nv == v) {
                for (size_t i = 0; i < wk->n_s; i++)
                    if (!done[i] && !strcmp(wk->s[i].source, src)) {
                        if (!ok) {
                            rc = refit_error_set(REFIT_EIO, "source %s failed to push v%llu: %.*s", src,
                                                 (unsigned long long)v, (int)(len - (size_t)(err - msg)), err);
                            break;
                        }
                        done[i] = 1;
                        left--;
                    }
            } else if (!c) {
                refit_log(REFIT_LOG_DEBUG, "push", "%s: ignoring a notification (%zu bytes) not for v%llu", r->id,
                          len, (unsigned long long)v);
            }
        } else {
            for (size_t i = 0; i < wk->n_s && !rc; i++) {
                if (done[i] || key_done(key, v, r->id, wk->s[i].source))
                    continue;
                void *val = NULL;
                size_t len = 0;
                int c = refit_store_get(r->ctx->store, key, &val, &len);
                if (!c) {
                    if (len >= 2 && !memcmp(val, "ok", 2)) {
                        done[i] = 1;
                        left--;
                    } else {
                        rc = refit_error_set(REFIT_EIO, "source %s failed to push v%llu: %.*s", wk->s[i].source,
                                             (unsigned long long)v, (int)(len < 400 ? len : 400), (char *)val);
                    }
                    refit_store_del(r->ctx->store, key);
                } else if (c != REFIT_ENOENT) {
                    rc = c;
                }
                free(val);
            }
            if (!rc && left) {
                uint64_t cur = 0;
                int c = refit_store_poll(r->ctx->store, "push/done/", 0, &cur, 50);
                if (c && c != REFIT_ETIMEDOUT)
                    rc = c;
            }
        }
        if (!rc && left && rf_seconds() >= next_check) {
            /* A publisher that died never notifies: its heartbeat says so. */
            next_check = rf_seconds() + 0.2;
            for (size_t i = 0; i < wk->n_s && !rc; i++) {
                if (done[i])
                    continue;
                struct refit_source_record *rec = NULL;
                bool stale = false;
                int c = refit_source_check(r->ctx->store, wk->s[i].source, r->ctx->stale_after_ms, &rec, &stale);
                if (c)
                    rc = refit_error_push(c, "push of v%llu: source %s", (unsigned long long)v, wk->s[i].source);
                else if (stale || rec->status != REFIT_SOURCE_READY || rec->version != v)
                    rc = refit_error_set(REFIT_ESTALE, "push of v%llu: source %s is %s at v%llu%s before it "
                                         "finished pushing", (unsigned long long)v, wk->s[i].source,
                                         refit_source_status_name(rec->status), (unsigned long long)rec->version,
                                         stale ? " without a fresh heartbeat" : "");
                free(rec);
            }
        }
    }
    free(done);
    st->transfer_s = rf_seconds() - t0;
    if (rc)
        return rc;
    double tv = rf_seconds();
    for (size_t i = 0; i < wk->n_s && !rc; i++)
        if (wk->s[i].n_u)
            rc = check_mail(r, &wk->s[i], v);
    r->verify_s += rf_seconds() - tv;
    st->bytes_wire = p->wire_bytes;
    for (size_t i = 0; i < wk->n_s; i++)
        st->descriptors += wk->s[i].n_d + 2 * wk->s[i].n_u + (wk->s[i].n_u ? 1 : 0);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Publisher side */

struct pub_work {
    struct refit_hash128 hash;
    struct push_work w; /* only this publisher's section */
    /* Quantized units and the mailbox slot, registered to WRITE from. */
    uint8_t *out;
    size_t out_len;
    refit_tp_region_t *out_reg;
    uint64_t *u_off, *s_off; /* per unit: offsets in out */
    uint64_t mail_at;
    void *img;
    size_t img_len;
};

struct pub_peer {
    char *receiver;
    void *addr;
    size_t addr_len;
    refit_tp_peer_t *peer;
    struct {
        void *blob;
        size_t len;
        refit_tp_rkey_t *k;
    } rk[6]; /* small cache: staging alternates between two buffers */
};

struct rf_push_pub {
    struct pub_work *works;
    size_t n_works;
    struct pub_peer *peers;
    size_t n_peers;
    uint64_t bytes; /* written by the last publish */
};

static void pub_work_free(refit_publisher_t *pub, struct pub_work *w)
{
    if (w->out_reg)
        refit_tp_dereg(pub->tp, w->out_reg);
    free(w->out);
    free(w->u_off);
    free(w->s_off);
    free(w->img);
    work_free(&w->w);
}

void rf_push_pub_destroy(refit_publisher_t *pub)
{
    struct rf_push_pub *pp = pub->push;
    if (!pp)
        return;
    for (size_t i = 0; i < pp->n_works; i++)
        pub_work_free(pub, &pp->works[i]);
    free(pp->works);
    for (size_t i = 0; i < pp->n_peers; i++) {
        struct pub_peer *p = &pp->peers[i];
        for (int k = 0; k < 6; k++) {
            refit_tp_release(pub->tp, p->rk[k].k);
            free(p->rk[k].blob);
        }
        refit_tp_disconnect(pub->tp, p->peer);
        free(p->addr);
        free(p->receiver);
    }
    free(pp->peers);
    free(pp);
    pub->push = NULL;
}

uint64_t rf_push_pub_bytes(const refit_publisher_t *pub)
{
    return pub->push ? pub->push->bytes : 0;
}

/* The registered memory and offset a catalog region index names. */
static int local_region(refit_publisher_t *pub, uint32_t region, int arena, struct pub_region **out)
{
    size_t g = pub->copy_mode ? (size_t)arena : region;
    if ((pub->copy_mode && region != 0) || g >= pub->n_rg)
        return refit_error_set(REFIT_EPROTO, "push work names region %u; publisher %s has %zu", region, pub->id,
                               pub->copy_mode ? (size_t)1 : pub->n_rg);
    *out = &pub->rg[g];
    return 0;
}

static int get_work(refit_publisher_t *pub, const struct refit_hash128 *h, struct pub_work **out)
{
    struct rf_push_pub *pp = pub->push;
    for (size_t i = 0; i < pp->n_works; i++)
        if (!memcmp(pp->works[i].hash.b, h->b, 16)) {
            *out = &pp->works[i];
            return 0;
        }
    char key[REFIT_STORE_MAX_KEY + 1];
    key_work(key, h);
    void *val = NULL;
    size_t len = 0;
    int rc = refit_store_get(pub->ctx->store, key, &val, &len);
    if (rc)
        return refit_error_push(rc, "fetching %s", key);
    struct refit_hash128 got;
    refit_hash128_of(val, len, &got);
    struct pub_work w = {.hash = *h};
    if (memcmp(got.b, h->b, 16))
        rc = refit_error_set(REFIT_EPROTO, "%s: content does not match its hash", key);
    if (!rc)
        rc = work_decode(val, len, key, pub->id, &w.w);
    free(val);
    if (rc)
        return rc;
    /* Output space: every unit's FP8 bytes and scales, then the mailbox. */
    const struct push_section *s = w.w.n_s ? &w.w.s[0] : NULL;
    size_t nu = s ? s->n_u : 0, at = 0, img = 0;
    w.u_off = calloc(nu ? nu : 1, sizeof(uint64_t));
    w.s_off = calloc(nu ? nu : 1, sizeof(uint64_t));
    if (!w.u_off || !w.s_off) {
        pub_work_free(pub, &w);
        return REFIT_ENOMEM;
    }
    for (size_t k = 0; k < nu; k++) {
        const struct push_unit *u = &s->u[k];
        w.u_off[k] = at;
        at += (u->rows * u->cols + 63) & ~(size_t)63;
        w.s_off[k] = at;
        at += (((u->cols + 127) / 128) * sizeof(float) + 63) & ~(size_t)63;
        size_t il = u->rows * u->cols * refit_dtype_size((enum refit_dtype)u->src_dtype);
        if (il > img)
            img = il;
    }
    w.mail_at = at;
    at += 32 + 16 * nu;
    w.out_len = at;
    w.img_len = img;
    w.out = aligned_alloc(64, (at + 63) & ~(size_t)63);
    w.img = img ? malloc(img) : NULL;
    if (!w.out || (img && !w.img)) {
        pub_work_free(pub, &w);
        return REFIT_ENOMEM;
    }
    if (s && (rc = refit_tp_reg(pub->tp, w.out, w.out_len, REFIT_MEM_HOST, &w.out_reg))) {
        pub_work_free(pub, &w);
        return refit_error_push(rc, "publisher %s: registering push output", pub->id);
    }
    /* A few plans at most are alive (one per receiver layout). */
    if (pp->n_works == 16) {
        pub_work_free(pub, &pp->works[0]);
        memmove(pp->works, pp->works + 1, 15 * sizeof(*pp->works));
        pp->n_works--;
    }
    struct pub_work *nw = realloc(pp->works, (pp->n_works + 1) * sizeof(*nw));
    if (!nw) {
        pub_work_free(pub, &w);
        return REFIT_ENOMEM;
    }
    pp->works = nw;
    nw[pp->n_works] = w;
    *out = &nw[pp->n_works++];
    return 0;
}

static int get_peer(refit_publisher_t *pub, const struct push_advert *a, struct pub_peer **out)
{
    struct rf_push_pub *pp = pub->push;
    struct pub_peer *p = NULL;
    for (size_t i = 0; i < pp->n_peers; i++)
        if (!strcmp(pp->peers[i].receiver, a->receiver))
            p = &pp->peers[i];
    if (p && (p->addr_len != a->addr_len || memcmp(p->addr, a->addr, a->addr_len))) {
        /* The receiver restarted: a new address, new keys. */
        for (int k = 0; k < 6; k++) {
            refit_tp_release(pub->tp, p->rk[k].k);
            free(p->rk[k].blob);
        }
        memset(p->rk, 0, sizeof(p->rk));
        refit_tp_disconnect(pub->tp, p->peer);
        p->peer = NULL;
        free(p->addr);
        p->addr = NULL;
    }
    if (!p) {
        struct pub_peer *np = realloc(pp->peers, (pp->n_peers + 1) * sizeof(*np));
        if (!np)
            return REFIT_ENOMEM;
        pp->peers = np;
        p = &np[pp->n_peers];
        memset(p, 0, sizeof(*p));
        if (!(p->receiver = strdup(a->receiver)))
            return REFIT_ENOMEM;
        pp->n_peers++;
    }
    if (!p->peer) {
        if (!(p->addr = malloc(a->addr_len ? a->addr_len : 1)))
            return REFIT_ENOMEM;
        memcpy(p->addr, a->addr, a->addr_len);
        p->addr_len = a->addr_len;
        int rc = refit_tp_connect(pub->tp, a->addr, a->addr_len, a->receiver, &p->peer);
        if (rc) {
            free(p->addr);
            p->addr = NULL;
            return refit_error_push(rc, "connecting to receiver %s", a->receiver);
        }
    }
    *out = p;
    return 0;
}

static int get_rkey(refit_publisher_t *pub, struct pub_peer *p, const void *blob, size_t len, refit_tp_rkey_t **out)
{
    int lru = 0;
    for (int k = 0; k < 6; k++) {
        if (p->rk[k].k && p->rk[k].len == len && !memcmp(p->rk[k].blob, blob, len)) {
            *out = p->rk[k].k;
            return 0;
        }
        if (!p->rk[k].k)
            lru = k;
    }
    if (p->rk[lru].k) {
        /* Full: drop the oldest (slot 0) and shift. */
        refit_tp_release(pub->tp, p->rk[0].k);
        free(p->rk[0].blob);
        memmove(&p->rk[0], &p->rk[1], 5 * sizeof(p->rk[0]));
        memset(&p->rk[5], 0, sizeof(p->rk[5]));
        lru = 5;
    }
    void *copy = malloc(len ? len : 1);
    if (!copy)
        return REFIT_ENOMEM;
    memcpy(copy, blob, len);
    int rc = refit_tp_unpack(pub->tp, p->peer, blob, len, &p->rk[lru].k);
    if (rc) {
        free(copy);
        return rc;
    }
    p->rk[lru].blob = copy;
    p->rk[lru].len = len;
    *out = p->rk[lru].k;
    return 0;
}

/* Requests in flight to one receiver, waited for in order. */
struct inflight {
    refit_tp_req_t **q;
    size_t n, cap;
};

static int inflight_post(refit_publisher_t *pub, struct inflight *f, refit_tp_peer_t *peer,
                         const struct refit_tp_desc *d, size_t n, const char *who)
{
    const struct refit_tp_caps *caps = refit_tp_caps(pub->tp);
    size_t per = caps->max_desc_per_post ? caps->max_desc_per_post : n;
    size_t flush = pub->ctx->flush_every > 0 ? (size_t)pub->ctx->flush_every : 64;
    if (per > flush)
        per = flush;
    for (size_t at = 0; at < n;) {
        size_t k = n - at < per ? n - at : per;
        /* Bounded depth: wait for the oldest before posting more. */
        if (f->n >= 8) {
            int rc = refit_tp_wait(pub->tp, f->q[0], -1);
            refit_tp_req_free(pub->tp, f->q[0]);
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
        int rc = refit_tp_post(pub->tp, peer, d + at, k, &f->q[f->n]);
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
        int c = refit_tp_wait(pub->tp, f->q[i], -1);
        if (c && !rc)
            rc = refit_error_push(c, "writing to receiver %s", who);
        /* A request that never finished belongs to the transport's fini. */
        if (c != REFIT_ETIMEDOUT)
            refit_tp_req_free(pub->tp, f->q[i]);
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
        uint64_t last = p->tensor_off + ((p->src_row + p->rows - 1) * p->src_cols + p->src_col + p->cols) * es;
        if (last > rg->len)
            return refit_error_set(REFIT_ERANGE, "push work: unit %zu (layout tensor %u) reads past region %u "
                                   "(%llu > %zu)", k, u->t, p->region, (unsigned long long)last, rg->len);
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
    char msg[MAX_NOTE + 1];
    int n = snprintf(msg, sizeof(msg), NOTE_PREFIX "%llu %s %s", (unsigned long long)v, pub->id, status);
    size_t len = n < 0 ? 0 : (size_t)n > MAX_NOTE ? MAX_NOTE : (size_t)n;
    const struct refit_tp_caps *caps = refit_tp_caps(pub->tp);
    if (caps->notify && p && p->peer) {
        if (caps->max_notify_len && len > caps->max_notify_len)
            len = caps->max_notify_len;
        return refit_tp_notify(pub->tp, p->peer, msg, len);
    }
    char key[REFIT_STORE_MAX_KEY + 1];
    int rc = key_done(key, v, p ? p->receiver : "?", pub->id);
    return rc ? rc : refit_store_put(pub->ctx->store, key, status, strlen(status));
}

static int serve(refit_publisher_t *pub, const struct push_advert *a, uint64_t v, int arena)
{
    struct pub_work *w = NULL;
    int rc = get_work(pub, &a->work, &w);
    if (rc)
        return rc;
    if (!w->w.n_s)
        return 0; /* nothing of ours in this receiver's plan */
    const struct push_section *s = &w->w.s[0];
    if (strcmp(a->transport, refit_tp_plugin_name(pub->tp)))
        return refit_error_set(REFIT_EPROTO, "receiver %s uses transport '%s', this publisher '%s'", a->receiver,
                               a->transport, refit_tp_plugin_name(pub->tp));
    struct pub_peer *p = NULL;
    rc = get_peer(pub, a, &p);
    refit_tp_rkey_t *rk[3] = {NULL, NULL, NULL};
    for (int i = 0; !rc && i < 3; i++)
        if (a->rk_len[i])
            rc = get_rkey(pub, p, a->rk[i], a->rk_len[i], &rk[i]);
    if (rc)
        return refit_error_push(rc, "receiver %s's slots", a->receiver);
    struct inflight f = {0};
    uint64_t bytes = 0;
    /* Raw bytes first: the transport moves them while units are quantized. */
    struct refit_tp_desc *d = calloc(s->n_d ? s->n_d : 1, sizeof(*d));
    if (!d)
        return REFIT_ENOMEM;
    for (size_t k = 0; !rc && k < s->n_d; k++) {
        struct pub_region *rg;
        rc = local_region(pub, s->d[k].region, arena, &rg);
        refit_tp_rkey_t *to = rk[s->d[k].buf == RF_BUF_SCRATCH ? 1 : 0];
        if (!rc && !to)
            rc = refit_error_set(REFIT_EPROTO, "receiver %s: work writes to a buffer it did not advertise",
                                 a->receiver);
        if (!rc && s->d[k].remote_off + s->d[k].len > rg->len)
            rc = refit_error_set(REFIT_ERANGE, "receiver %s: work reads past region %u of publisher %s",
                                 a->receiver, s->d[k].region, pub->id);
        if (!rc)
            d[k] = (struct refit_tp_desc){REFIT_OP_WRITE, rg->reg, s->d[k].remote_off, to, s->d[k].local_off,
                                          s->d[k].len};
        bytes += s->d[k].len;
    }
    if (!rc)
        rc = inflight_post(pub, &f, p->peer, d, s->n_d, a->receiver);
    free(d);
    uint8_t *mail = w->out + w->mail_at;
    wr64(mail, MAIL_MAGIC);
    wr64(mail + 8, v);
    wr64(mail + 16, s->n_u);
    for (size_t k = 0; !rc && k < s->n_u; k++) {
        const struct push_unit *u = &s->u[k];
        if (!rk[0]) {
            rc = refit_error_set(REFIT_EPROTO, "receiver %s advertised no staging", a->receiver);
            break;
        }
        rc = make_unit(pub, w, k, arena);
        if (rc)
            break;
        size_t sb = ((u->cols + 127) / 128) * sizeof(float);
        wr64(mail + 24 + 16 * k, XXH3_64bits(w->out + w->u_off[k], u->rows * u->cols));
        wr64(mail + 32 + 16 * k, XXH3_64bits(w->out + w->s_off[k], sb));
        struct refit_tp_desc ud[2] = {
            {REFIT_OP_WRITE, w->out_reg, w->u_off[k], rk[0], u->out_off, u->rows * u->cols},
            {REFIT_OP_WRITE, w->out_reg, w->s_off[k], rk[0], u->scale_off, sb},
        };
        rc = inflight_post(pub, &f, p->peer, ud, 2, a->receiver);
        bytes += u->rows * u->cols + sb;
    }
    if (!rc && s->n_u) {
        size_t ml = 32 + 16 * s->n_u;
        wr64(mail + ml - 8, XXH3_64bits(mail, ml - 8));
        if (!rk[2])
            rc = refit_error_set(REFIT_EPROTO, "receiver %s advertised no mailbox", a->receiver);
        else {
            struct refit_tp_desc md = {REFIT_OP_WRITE, w->out_reg, w->mail_at, rk[2], s->mail_off, ml};
            rc = inflight_post(pub, &f, p->peer, &md, 1, a->receiver);
        }
    }
    int drc = inflight_drain(pub, &f, a->receiver);
    if (!rc)
        rc = drc;
    if (rc) {
        /* Tell the receiver why, so it fails now rather than at its timeout. */
        char why[400];
        snprintf(why, sizeof(why), "err %s", refit_error_message());
        int st = refit_error_status();
        char saved[1024];
        snprintf(saved, sizeof(saved), "%s", refit_error_message());
        send_note(pub, p, v, why);
        refit_error_set(st, "%s", saved);
        return rc;
    }
    pub->push->bytes += bytes;
    rc = send_note(pub, p, v, "ok");
    return rc ? refit_error_push(rc, "notifying receiver %s", a->receiver) : 0;
}

int rf_push_serve(refit_publisher_t *pub, uint64_t v, int arena)
{
    if (!pub->push && !(pub->push = calloc(1, sizeof(*pub->push))))
        return REFIT_ENOMEM;
    pub->push->bytes = 0;
    size_t want = pub->ctx->receivers > 0 ? (size_t)pub->ctx->receivers : 1;
    char **served = calloc(want, sizeof(char *));
    if (!served)
        return REFIT_ENOMEM;
    size_t n_served = 0;
    double deadline = rf_seconds() + (double)pub->ctx->timeout_ms / 1000.0;
    uint64_t cursor = 0;
    int rc = refit_store_poll(pub->ctx->store, "push/slots/", 0, &cursor, 0);
    if (rc == REFIT_ETIMEDOUT)
        rc = 0;
    while (!rc && n_served < want) {
        char **keys = NULL;
        size_t nk = 0;
        rc = refit_store_list(pub->ctx->store, "push/slots/", &keys, &nk);
        for (size_t i = 0; !rc && i < nk && n_served < want; i++) {
            void *val = NULL;
            size_t len = 0;
            int c = refit_store_get(pub->ctx->store, keys[i], &val, &len);
            if (c == REFIT_ENOENT)
                continue;
            struct push_advert a;
            if (!c)
                c = advert_decode(val, len, keys[i], &a);
            if (c == REFIT_EPROTO) {
                refit_log(REFIT_LOG_WARN, "push", "%s: ignoring %s: %s", pub->id, keys[i], refit_error_message());
                free(val);
                continue;
            }
            if (c) {
                free(val);
                rc = c;
                break;
            }
            int seen = a.version != v;
            for (size_t k = 0; !seen && k < n_served; k++)
                seen = !strcmp(served[k], a.receiver);
            if (!seen) {
                rc = serve(pub, &a, v, arena);
                if (rc)
                    refit_error_push(rc, "push of v%llu to receiver %s", (unsigned long long)v, a.receiver);
                else if (!(served[n_served] = strdup(a.receiver)))
                    rc = REFIT_ENOMEM;
                else
                    n_served++;
            }
            free(val);
        }
        free(keys);
        if (rc || n_served >= want)
            break;
        double left = deadline - rf_seconds();
        if (left <= 0) {
            /* Name the registered receivers that did not advertise v. */
            char names[600] = "";
            size_t at = 0;
            char **regs = NULL;
            size_t nr = 0;
            if (!refit_store_list(pub->ctx->store, "receivers/", &regs, &nr)) {
                for (size_t i = 0; i < nr && at < sizeof(names) - 1; i++) {
                    const char *id = regs[i] + strlen("receivers/");
                    int seen = 0;
                    for (size_t k = 0; !seen && k < n_served; k++)
                        seen = !strcmp(served[k], id);
                    if (!seen)
                        at += (size_t)snprintf(names + at, sizeof(names) - at, "%s%s", at ? ", " : "", id);
                }
                free(regs);
            }
            rc = refit_error_set(REFIT_ETIMEDOUT,
                                 "push of v%llu: %zu of %zu receivers advertised slots within %lld ms "
                                 "(registered, not advertised: %s)",
                                 (unsigned long long)v, n_served, want, (long long)pub->ctx->timeout_ms,
                                 at ? names : "none registered");
            break;
        }
        int64_t wait = (int64_t)(left * 1000) + 1;
        int c = refit_store_poll(pub->ctx->store, "push/slots/", cursor, &cursor, wait < 200 ? wait : 200);
        if (c && c != REFIT_ETIMEDOUT)
            rc = c;
    }
    for (size_t i = 0; i < n_served; i++)
        free(served[i]);
    free(served);
    if (!rc)
        refit_log(REFIT_LOG_INFO, "push", "%s: v%llu pushed to %zu receivers (%llu bytes)", pub->id,
                  (unsigned long long)v, want, (unsigned long long)pub->push->bytes);
    return rc;
}
