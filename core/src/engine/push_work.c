/* push_work.c — push mode's store values: work lists and adverts (see
 * push_work.h; the format is docs/protocol.md, "Push mode: the wire
 * contract").  msgpack through msgpack_pk.h and the core's bounded
 * reader; fixed records are arrays, the top levels maps with names. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../msgpack_pk.h"
#include "../msgpack_rd.h"
#include "../util.h"
#include "plan.h"
#include "push_work.h"
#include "refit/fp8.h"
#include "refit/status.h"

#define DESC_FIELDS 5
#define UNIT_FIELDS 7
#define PIECE_FIELDS 10

/* Bytes of a band's scale row: one f32 per FP8 block of columns. */
static uint64_t scale_row_bytes(uint64_t cols)
{
    return (cols + REFIT_FP8_BLOCK - 1) / REFIT_FP8_BLOCK * sizeof(float);
}

static void section_free(struct push_section *s)
{
    free(s->source);
    free(s->d);
    free(s->u);
    free(s->pc);
    memset(s, 0, sizeof(*s));
}

void rf_push_work_free(struct push_work *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n_s; i++)
        section_free(&w->s[i]);
    free(w->s);
    memset(w, 0, sizeof(*w));
}

/* ------------------------------------------------------------------ */
/* Encoding */

static void pk_u64(struct pk *k, uint64_t v)
{
    PK(k, msgpack_pack_uint64(&k->p, v));
}

static void pk_section(struct pk *k, const struct push_section *s)
{
    PK(k, msgpack_pack_array(&k->p, 4));
    pk_str(k, s->source);
    pk_u64(k, s->mail_off);
    PK(k, msgpack_pack_array(&k->p, (uint32_t)s->n_d));
    for (size_t i = 0; i < s->n_d; i++) {
        const struct push_desc *d = &s->d[i];
        PK(k, msgpack_pack_array(&k->p, DESC_FIELDS));
        uint64_t f[DESC_FIELDS] = {d->region, d->buf, d->remote_off, d->local_off, d->len};
        for (int j = 0; j < DESC_FIELDS; j++)
            pk_u64(k, f[j]);
    }
    PK(k, msgpack_pack_array(&k->p, (uint32_t)s->n_u));
    for (size_t i = 0; i < s->n_u; i++) {
        const struct push_unit *u = &s->u[i];
        PK(k, msgpack_pack_array(&k->p, UNIT_FIELDS));
        pk_u64(k, u->t);
        pk_str(k, refit_dtype_name((enum refit_dtype)u->src_dtype));
        uint64_t f[4] = {u->rows, u->cols, u->out_off, u->scale_off};
        for (int j = 0; j < 4; j++)
            pk_u64(k, f[j]);
        PK(k, msgpack_pack_array(&k->p, (uint32_t)u->n));
        for (size_t q = u->first; q < u->first + u->n; q++) {
            const struct push_piece *p = &s->pc[q];
            uint64_t g[PIECE_FIELDS] = {p->region, p->esize, p->tensor_off, p->src_cols, p->src_row,
                                        p->src_col,  p->rows,  p->cols,       p->dst_row,  p->dst_col};
            PK(k, msgpack_pack_array(&k->p, PIECE_FIELDS));
            for (int j = 0; j < PIECE_FIELDS; j++)
                pk_u64(k, g[j]);
        }
    }
}

int rf_push_work_encode(const struct push_work *w, void **out, size_t *len)
{
    struct pk k;
    pk_init(&k, 4096);
    PK(&k, msgpack_pack_map(&k.p, 5));
    pk_str(&k, "schema");
    pk_u64(&k, RF_PUSH_SCHEMA);
    pk_str(&k, "rule");
    pk_u64(&k, w->rule);
    pk_str(&k, "floor");
    PK(&k, msgpack_pack_double(&k.p, w->floor));
    pk_str(&k, "mail_len");
    pk_u64(&k, w->mail_len);
    pk_str(&k, "sections");
    PK(&k, msgpack_pack_array(&k.p, (uint32_t)w->n_s));
    for (size_t i = 0; i < w->n_s; i++)
        pk_section(&k, &w->s[i]);
    return pk_finish(&k, out, len);
}

/* ------------------------------------------------------------------ */
/* Decoding */

static int rd_u64s(struct rf_mp *d, uint64_t *v, int n)
{
    int rc = 0;
    for (int i = 0; !rc && i < n; i++)
        rc = rf_mp_u64(d, &v[i]);
    return rc;
}

static int rd_desc(struct rf_mp *d, struct push_desc *out)
{
    uint64_t f[DESC_FIELDS];
    d->field = "descriptor";
    int rc = rf_mp_tuple(d, DESC_FIELDS);
    if (!rc)
        rc = rd_u64s(d, f, DESC_FIELDS);
    if (rc)
        return rc;
    if (f[0] > UINT32_MAX || f[1] > RF_BUF_SCRATCH || !f[4])
        return rf_mp_fail(d, "region, buffer or length out of range");
    if (!rf_fits(f[2], f[4], UINT64_MAX) || !rf_fits(f[3], f[4], UINT64_MAX))
        return rf_mp_fail(d, "offset + length wraps");
    *out = (struct push_desc){(uint32_t)f[0], (uint32_t)f[1], f[2], f[3], f[4]};
    return 0;
}

/* The byte after the last one a piece reads: tensor_off + ((src_row +
 * rows - 1) * src_cols + src_col + cols) * esize, each step checked. */
static int piece_end(const struct push_piece *p, uint64_t *end)
{
    uint64_t last_row = p->src_row + p->rows - 1; /* src_row <= 2^40, rows <= 128 */
    if (!rf_mul_fits(last_row, p->src_cols, UINT64_MAX))
        return 0;
    uint64_t elems = last_row * p->src_cols;
    if (!rf_fits(elems, p->src_col + p->cols, UINT64_MAX)) /* src_col + cols <= src_cols <= 2^32 */
        return 0;
    elems += p->src_col + p->cols;
    if (!rf_mul_fits(elems, p->esize, UINT64_MAX) || !rf_fits(p->tensor_off, elems * p->esize, UINT64_MAX))
        return 0;
    *end = p->tensor_off + elems * p->esize;
    return 1;
}

static int rd_piece(struct rf_mp *d, const struct push_unit *u, uint32_t esize, struct push_piece *p,
                    uint64_t *area)
{
    uint64_t f[PIECE_FIELDS];
    d->field = "piece";
    int rc = rf_mp_tuple(d, PIECE_FIELDS);
    if (!rc)
        rc = rd_u64s(d, f, PIECE_FIELDS);
    if (rc)
        return rc;
    if (f[0] > UINT32_MAX || f[1] != esize)
        return rf_mp_fail(d, "region out of range or element size %" PRIu64 " for a %u-byte dtype", f[1], esize);
    *p = (struct push_piece){(uint32_t)f[0], esize, f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9], 0};
    if (!p->rows || !p->cols || !rf_fits(p->dst_row, p->rows, u->rows) || !rf_fits(p->dst_col, p->cols, u->cols))
        return rf_mp_fail(d, "rows %" PRIu64 "+%" PRIu64 ", columns %" PRIu64 "+%" PRIu64 " outside the %" PRIu64
                          " x %" PRIu64 " unit", p->dst_row, p->rows, p->dst_col, p->cols, u->rows, u->cols);
    if (p->src_cols > RF_PUSH_UNIT_MAX_COLS || p->src_row > RF_PUSH_MAX_SRC_ROW ||
        !rf_fits(p->src_col, p->cols, p->src_cols) || !piece_end(p, &p->src_end))
        return rf_mp_fail(d, "source rectangle out of range (row %" PRIu64 ", column %" PRIu64 "+%" PRIu64
                          " of %" PRIu64 ")", p->src_row, p->src_col, p->cols, p->src_cols);
    if (!rf_fits(*area, p->rows * p->cols, u->rows * u->cols))
        return rf_mp_fail(d, "pieces cover more than the unit");
    *area += p->rows * p->cols;
    return 0;
}

static int grow(void **p, size_t *cap, size_t want, size_t size)
{
    if (want <= *cap)
        return 0;
    size_t nc = *cap ? *cap : 64;
    while (nc < want)
        nc *= 2;
    void *np = realloc(*p, nc * size);
    if (!np)
        return REFIT_ENOMEM;
    *p = np;
    *cap = nc;
    return 0;
}

static int rd_unit(struct rf_mp *d, struct push_section *s, size_t *cap_pc, struct push_unit *u)
{
    const uint8_t *dn;
    uint32_t dl, np;
    d->field = "unit";
    int rc = rf_mp_tuple(d, UNIT_FIELDS);
    uint64_t t = 0, f[4];
    if (!rc)
        rc = rf_mp_u64(d, &t);
    if (!rc)
        rc = rf_mp_str(d, &dn, &dl, 16);
    if (!rc)
        rc = rd_u64s(d, f, 4);
    if (rc)
        return rc;
    *u = (struct push_unit){.t = (uint32_t)t, .rows = f[0], .cols = f[1], .out_off = f[2], .scale_off = f[3]};
    u->src_dtype = rf_mp_key_is(dn, dl, "BF16") ? REFIT_DTYPE_BF16 : rf_mp_key_is(dn, dl, "F32") ? REFIT_DTYPE_F32 : 0;
    if (t > UINT32_MAX || !u->src_dtype || !u->rows || u->rows > REFIT_FP8_BLOCK || !u->cols ||
        u->cols > RF_PUSH_UNIT_MAX_COLS)
        return rf_mp_fail(d, "a band of 1..%d rows of BF16 or F32 expected", REFIT_FP8_BLOCK);
    if (!rf_fits(u->out_off, u->rows * u->cols, UINT64_MAX) ||
        !rf_fits(u->scale_off, scale_row_bytes(u->cols), UINT64_MAX))
        return rf_mp_fail(d, "output offset + length wraps");
    if ((rc = rf_mp_array(d, &np, PIECE_FIELDS + 1)))
        return rc;
    if ((rc = grow((void **)&s->pc, cap_pc, s->n_pc + np, sizeof(*s->pc))))
        return rc;
    uint32_t es = (uint32_t)refit_dtype_size((enum refit_dtype)u->src_dtype);
    uint64_t area = 0;
    u->first = s->n_pc;
    u->n = np;
    for (uint32_t q = 0; !rc && q < np; q++)
        rc = rd_piece(d, u, es, &s->pc[s->n_pc++], &area);
    if (!rc && area != u->rows * u->cols) {
        d->field = "unit";
        rc = rf_mp_fail(d, "pieces cover %" PRIu64 " of its %" PRIu64 " elements", area, u->rows * u->cols);
    }
    return rc;
}

static int rd_section(struct rf_mp *d, uint64_t mail_len, struct push_section *s)
{
    const uint8_t *id;
    uint32_t idl, nd, nu;
    d->field = "section";
    int rc = rf_mp_tuple(d, 4);
    if (!rc)
        rc = rf_mp_id(d, &id, &idl, "source id");
    if (!rc)
        rc = rf_mp_u64(d, &s->mail_off);
    if (!rc && !(s->source = strndup((const char *)id, idl)))
        rc = REFIT_ENOMEM;
    if (!rc)
        rc = rf_mp_array(d, &nd, DESC_FIELDS + 1);
    if (!rc && !(s->d = calloc(nd ? nd : 1, sizeof(*s->d))))
        rc = REFIT_ENOMEM;
    for (uint32_t k = 0; !rc && k < nd; k++)
        rc = rd_desc(d, &s->d[s->n_d++]);
    if (!rc)
        rc = rf_mp_array(d, &nu, UNIT_FIELDS + 1);
    if (!rc && !(s->u = calloc(nu ? nu : 1, sizeof(*s->u))))
        rc = REFIT_ENOMEM;
    size_t cap_pc = 0;
    for (uint32_t k = 0; !rc && k < nu; k++)
        rc = rd_unit(d, s, &cap_pc, &s->u[s->n_u++]);
    /* Its mailbox slot: magic, version, count, two hashes per unit, trailer. */
    if (!rc && !rf_fits(s->mail_off, 32 + 16 * (uint64_t)s->n_u, mail_len)) {
        d->field = "section";
        rc = rf_mp_fail(d, "mailbox slot outside the mailbox");
    }
    return rc;
}

static int rd_sections(struct rf_mp *d, uint64_t mail_len, const char *source, struct push_work *out)
{
    uint32_t n;
    int rc = rf_mp_array(d, &n, 5);
    if (!rc && !(out->s = calloc(n ? n : 1, sizeof(*out->s))))
        rc = REFIT_ENOMEM;
    d->item = "section";
    for (uint32_t i = 0; !rc && i < n; i++) {
        struct push_section s = {0};
        d->index = (ptrdiff_t)i;
        rc = rd_section(d, mail_len, &s);
        int keep = !rc && (!source || !strcmp(s.source, source));
        for (size_t j = 0; keep && j < out->n_s; j++)
            if (!strcmp(out->s[j].source, s.source)) {
                rc = rf_mp_fail(d, "a second section for source %s", s.source);
                keep = 0;
            }
        if (keep)
            out->s[out->n_s++] = s;
        else
            section_free(&s);
    }
    d->index = -1;
    return rc;
}

int rf_push_work_decode(const void *buf, size_t len, const char *key, const char *source, struct push_work *out)
{
    static const char *const names[] = {"schema", "rule", "floor", "mail_len", "sections"};
    struct rf_mp d;
    rf_mp_init(&d, buf, len, key, "push work list");
    memset(out, 0, sizeof(*out));
    uint32_t n, seen = 0;
    uint64_t v = 0;
    const uint8_t *sections_at = NULL;
    int rc = rf_mp_map(&d, &n, 1);
    for (uint32_t i = 0; !rc && i < n; i++) {
        int f;
        if ((rc = rf_mp_field(&d, names, 5, &seen, &f)) || f < 0)
            continue;
        if (f == 0 && !(rc = rf_mp_u64(&d, &v)) && v != RF_PUSH_SCHEMA)
            rc = rf_mp_fail(&d, "schema %" PRIu64 ", this build reads %d", v, RF_PUSH_SCHEMA);
        if (f == 1)
            rc = rf_mp_u32(&d, &out->rule, 1);
        if (f == 2) /* finite; <= 0 means the rule's default */
            rc = rf_mp_f64(&d, &out->floor);
        if (f == 3)
            rc = rf_mp_u64(&d, &out->mail_len);
        if (f == 4) { /* read once the mailbox length is known */
            sections_at = d.p;
            rc = rf_mp_skip(&d);
        }
    }
    if (!rc)
        rc = rf_mp_required(&d, names, 5, seen, 31);
    if (!rc)
        rc = rf_mp_end(&d, "work list");
    if (!rc) {
        d.p = sections_at;
        d.field = "sections";
        rc = rd_sections(&d, out->mail_len, source, out);
    }
    if (rc) {
        rf_push_work_free(out);
        if (rc == REFIT_EPROTO)
            refit_error_push(rc, "malformed push work list");
    }
    return rc;
}

/* ------------------------------------------------------------------ */
/* Adverts */

static const char *const advert_names[] = {"schema", "version", "receiver", "transport", "address",
                                           "staging", "scratch", "mailbox", "work", "delta"};
#define ADVERT_REQUIRED ((1u << 9) - 1) /* all but "delta" */
#define ADELTA_FIELDS 7

static void pk_adelta(struct pk *k, const struct push_adelta *e)
{
    PK(k, msgpack_pack_array(&k->p, ADELTA_FIELDS));
    pk_str(k, e->source);
    pk_u64(k, e->version);
    pk_u64(k, e->base);
    pk_u64(k, e->base_sums);
    pk_bin(k, e->rk, e->rk_len);
    pk_bin(k, e->ranges, e->n_ranges * RF_PUSH_RANGE_BYTES);
    pk_bin(k, e->skip, e->skip_len);
}

int rf_push_advert_encode(const struct push_advert *a, void **out, size_t *len)
{
    struct pk k;
    size_t extra = 0;
    for (size_t i = 0; i < a->n_deltas; i++)
        extra += 64 + a->deltas[i].rk_len + a->deltas[i].n_ranges * RF_PUSH_RANGE_BYTES + a->deltas[i].skip_len;
    pk_init(&k, 256 + a->addr_len + a->rk_len[0] + a->rk_len[1] + a->rk_len[2] + extra);
    PK(&k, msgpack_pack_map(&k.p, a->n_deltas ? 10 : 9));
    pk_str(&k, "schema");
    pk_u64(&k, RF_PUSH_SCHEMA);
    pk_str(&k, "version");
    pk_u64(&k, a->version);
    pk_str(&k, "receiver");
    pk_str(&k, a->receiver);
    pk_str(&k, "transport");
    pk_str(&k, a->transport);
    pk_str(&k, "address");
    pk_bin(&k, a->addr, a->addr_len);
    for (int i = 0; i < 3; i++) {
        pk_str(&k, advert_names[5 + i]);
        pk_bin(&k, a->rk[i], a->rk_len[i]);
    }
    pk_str(&k, "work");
    pk_bin(&k, a->work.b, 16);
    if (a->n_deltas) {
        pk_str(&k, "delta");
        PK(&k, msgpack_pack_array(&k.p, (uint32_t)a->n_deltas));
        for (size_t i = 0; i < a->n_deltas; i++)
            pk_adelta(&k, &a->deltas[i]);
    }
    return pk_finish(&k, out, len);
}

/* One entry of the "delta" list, checked for shape: field types, the
 * remote key, range list and bitmap within their bounds, the ranges a
 * whole number of records. */
static int rd_adelta(struct rf_mp *d, struct push_adelta *e)
{
    const uint8_t *s;
    uint32_t l;
    memset(e, 0, sizeof(*e));
    d->field = "delta";
    int rc = rf_mp_tuple(d, ADELTA_FIELDS);
    if (!rc && !(rc = rf_mp_id(d, &s, &l, "source id")))
        memcpy(e->source, s, l);
    d->field = "delta.version";
    if (!rc && !(rc = rf_mp_u64(d, &e->version)) && !e->version)
        rc = rf_mp_fail(d, "version 0");
    d->field = "delta.base";
    if (!rc && !(rc = rf_mp_u64(d, &e->base)) && !e->base)
        rc = rf_mp_fail(d, "base version 0");
    d->field = "delta.base_sums";
    if (!rc)
        rc = rf_mp_u64(d, &e->base_sums);
    d->field = "delta.landing";
    if (!rc && !(rc = rf_mp_bin(d, &s, &l, REFIT_RECORD_MAX_BLOB)) && !l)
        rc = rf_mp_fail(d, "an empty remote key");
    e->rk = s;
    e->rk_len = l;
    d->field = "delta.ranges";
    if (!rc && !(rc = rf_mp_bin(d, &s, &l, RF_PUSH_MAX_RANGES * RF_PUSH_RANGE_BYTES)) && l % RF_PUSH_RANGE_BYTES)
        rc = rf_mp_fail(d, "%u bytes: not a whole number of %d-byte ranges", l, RF_PUSH_RANGE_BYTES);
    e->ranges = s;
    e->n_ranges = l / RF_PUSH_RANGE_BYTES;
    d->field = "delta.skip";
    if (!rc)
        rc = rf_mp_bin(d, &s, &l, RF_PUSH_MAX_SKIP);
    e->skip = s;
    e->skip_len = l;
    return rc;
}

static int rd_adeltas(struct rf_mp *d, struct push_advert *a)
{
    uint32_t n;
    int rc = rf_mp_array(d, &n, 8);
    a->delta_at = d->p;
    a->n_delta_at = n;
    d->item = "delta entry";
    for (uint32_t i = 0; !rc && i < n; i++) {
        struct push_adelta e;
        d->index = (ptrdiff_t)i;
        rc = rd_adelta(d, &e);
    }
    d->item = NULL;
    d->index = -1;
    a->delta_end = d->p;
    return rc;
}

int rf_push_advert_delta(const struct push_advert *a, const char *key, const char *source, struct push_adelta *out,
                         int *found)
{
    struct rf_mp d;
    *found = 0;
    if (!a->delta_at)
        return 0;
    rf_mp_init(&d, a->delta_at, (size_t)(a->delta_end - a->delta_at), key, "push advert");
    for (uint32_t i = 0; i < a->n_delta_at; i++) {
        int rc = rd_adelta(&d, out);
        if (rc)
            return rc; /* the decoder read the same bytes: cannot happen */
        if (!strcmp(out->source, source)) {
            *found = 1;
            return 0;
        }
    }
    return 0;
}

static int rd_advert_field(struct rf_mp *d, int f, struct push_advert *a)
{
    const uint8_t *s;
    uint32_t l;
    uint64_t v;
    int rc = 0;
    switch (f) {
    case 0:
        if (!(rc = rf_mp_u64(d, &v)) && v != RF_PUSH_SCHEMA)
            rc = rf_mp_fail(d, "schema %" PRIu64 ", this build reads %d", v, RF_PUSH_SCHEMA);
        return rc;
    case 1:
        if (!(rc = rf_mp_u64(d, &a->version)) && !a->version)
            rc = rf_mp_fail(d, "version 0");
        return rc;
    case 2:
        if (!(rc = rf_mp_id(d, &s, &l, "receiver id")))
            memcpy(a->receiver, s, l);
        return rc;
    case 3:
        if (!(rc = rf_mp_str(d, &s, &l, REFIT_RECORD_MAX_STRING)))
            memcpy(a->transport, s, l);
        return rc;
    case 4:
        rc = rf_mp_bin(d, &s, &l, REFIT_RECORD_MAX_BLOB);
        a->addr = s;
        a->addr_len = l;
        return rc;
    case 5: case 6: case 7:
        rc = rf_mp_bin(d, &s, &l, REFIT_RECORD_MAX_BLOB);
        a->rk[f - 5] = l ? s : NULL;
        a->rk_len[f - 5] = l;
        return rc;
    case 8:
        if (!(rc = rf_mp_bin(d, &s, &l, 16)) && l != 16)
            rc = rf_mp_fail(d, "a 16-byte hash expected");
        if (!rc)
            memcpy(a->work.b, s, 16);
        return rc;
    case 9:
        return rd_adeltas(d, a);
    }
    return 0;
}

int rf_push_advert_decode(const void *buf, size_t len, const char *key, struct push_advert *a)
{
    struct rf_mp d;
    rf_mp_init(&d, buf, len, key, "push advert");
    memset(a, 0, sizeof(*a));
    uint32_t n, seen = 0;
    int rc = rf_mp_map(&d, &n, 1);
    for (uint32_t i = 0; !rc && i < n; i++) {
        int f;
        if (!(rc = rf_mp_field(&d, advert_names, 10, &seen, &f)) && f >= 0)
            rc = rd_advert_field(&d, f, a);
    }
    if (!rc)
        rc = rf_mp_required(&d, advert_names, 10, seen, ADVERT_REQUIRED);
    if (!rc)
        rc = rf_mp_end(&d, "advert");
    return rc == REFIT_EPROTO ? refit_error_push(rc, "malformed push advert") : rc;
}

/* ------------------------------------------------------------------ */
/* Keys */

int rf_key_push_slots(char *buf, const char *receiver)
{
    int rc = refit_check_id("receiver id", receiver);
    if (!rc)
        snprintf(buf, REFIT_STORE_MAX_KEY + 1, "push/slots/%s", receiver);
    return rc;
}

void rf_key_push_work(char *buf, const struct refit_hash128 *h)
{
    char hex[33];
    refit_hash128_hex(h, hex);
    snprintf(buf, REFIT_STORE_MAX_KEY + 1, "push/work/%s", hex);
}

int rf_key_push_done(char *buf, uint64_t v, const char *receiver, const char *source)
{
    int rc = refit_check_id("receiver id", receiver);
    if (!rc)
        rc = refit_check_id("source id", source);
    if (!rc)
        snprintf(buf, REFIT_STORE_MAX_KEY + 1, "push/done/%" PRIu64 "/%s/%s", v, receiver, source);
    return rc;
}
