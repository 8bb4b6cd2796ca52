/* convert.c — the conversion engine that follows a layout map: copy the
 * pieces of a view's HF tensors, cast, block-quantize, write a rank's file
 * (or trainer shards with `refit shard`).  No layout math here: that is
 * layout*.c's. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "convert_int.h"
#include "refit/log.h"
#include "refit/status.h"

/* ------------------------------------------------------------------ */
/* Conversion of one tensor */

void refit_converted_fini(struct refit_converted *c)
{
    if (!c)
        return;
    free(c->data);
    free(c->scale_inv);
    memset(c, 0, sizeof(*c));
}

static int cast(const void *src, enum refit_dtype from, void *dst, enum refit_dtype to, size_t n,
                const char *name)
{
    if (from == REFIT_DTYPE_BF16 && to == REFIT_DTYPE_F32) {
        refit_bf16_to_f32_n(src, dst, n);
        return 0;
    }
    if (from == REFIT_DTYPE_F32 && to == REFIT_DTYPE_BF16) {
        refit_f32_to_bf16_n(src, dst, n);
        return 0;
    }
    return refit_error_set(REFIT_ENOTSUP, "tensor '%s': no cast from %s to %s", name, refit_dtype_name(from),
                           refit_dtype_name(to));
}

/* The dtype a source reads as: a native FP8 source reads as bf16. */
static enum refit_dtype vt_dtype(const struct vt *t)
{
    return t->scale ? REFIT_DTYPE_BF16 : t->t.dtype;
}

static const struct vt *view_src(const refit_hf_view_t *v, const refit_layout_t *lay,
                                 const struct refit_layout_piece *pc)
{
    const struct vt *t = rf_view_find(v, refit_layout_source(lay, pc->src)->name);
    return t && t->t.data ? t : NULL;
}

/* Dequantization of native FP8, as DeepSeek's weight_dequant (inference/
 * kernel.py) and fp8_cast_bf16.py do it: the e4m3 value times its block's
 * float32 multiplier, the product in float32, then one rounding to bf16
 * (nearest even).  docs/fp8.md, "Native FP8 checkpoints". */
static void fp8_dequant_row(const struct vt *t, const float *lut, int64_t row, int64_t col, int64_t n,
                            uint16_t *out)
{
    int64_t cols = t->t.shape[1], bc = (cols + REFIT_FP8_BLOCK - 1) / REFIT_FP8_BLOCK;
    const uint8_t *q = (const uint8_t *)t->t.data + row * cols + col;
    const char *sb = (const char *)t->scale->data + (size_t)((row / REFIT_FP8_BLOCK) * bc) * sizeof(float);
    for (int64_t j = 0; j < n;) {
        int64_t c = col + j, blk = c / REFIT_FP8_BLOCK, end = (blk + 1) * REFIT_FP8_BLOCK - col;
        float s;
        memcpy(&s, sb + (size_t)blk * sizeof(float), sizeof(s)); /* the mapping is not aligned */
        for (; j < n && j < end; j++)
            out[j] = refit_f32_to_bf16(lut[q[j]] * s);
    }
}

/* Layout tensor lt as the checkpoint holds it: its pieces of HF tensors
 * assembled into one buffer, in their dtype (*dt). */
static int gather_tensor(const refit_hf_view_t *v, const refit_layout_t *lay,
                         const struct refit_layout_tensor *lt, enum refit_dtype *dt, void **out)
{
    *dt = REFIT_DTYPE_INVALID;
    bool any_fp8 = false;
    for (size_t p = 0; p < lt->n_pieces; p++) {
        const struct refit_layout_src *src = refit_layout_source(lay, lt->pieces[p].src);
        const struct vt *t = view_src(v, lay, &lt->pieces[p]);
        if (!t)
            return refit_error_set(REFIT_ENOENT, "tensor '%s': source '%s' is not in the checkpoint",
                                   lt->name, src->name);
        any_fp8 |= t->scale != NULL;
        if (*dt == REFIT_DTYPE_INVALID)
            *dt = vt_dtype(t);
        else if (*dt != vt_dtype(t))
            return refit_error_set(REFIT_EPROTO, "tensor '%s': its parts differ in dtype (%s is %s, not %s)",
                                   lt->name, src->name, refit_dtype_name(vt_dtype(t)), refit_dtype_name(*dt));
    }
    if (*dt == REFIT_DTYPE_INVALID)
        *dt = REFIT_DTYPE_BF16; /* only padding on this rank */
    float lut[256];
    for (int i = 0; any_fp8 && i < 256; i++)
        lut[i] = refit_e4m3_to_f32((uint8_t)i);
    size_t es = refit_dtype_size(*dt);
    int64_t drows = lt->ndim == 1 ? lt->shape[0] : lt->shape[lt->ndim - 2];
    int64_t dcols = lt->ndim == 1 ? 1 : lt->shape[lt->ndim - 1];
    int64_t nidx = lt->ndim == 3 ? lt->shape[0] : 1;
    size_t n = (size_t)(nidx * drows * dcols);
    char *buf = calloc(n ? n : 1, es);
    if (!buf)
        return REFIT_ENOMEM;
    for (size_t p = 0; p < lt->n_pieces; p++) {
        const struct refit_layout_piece *pc = &lt->pieces[p];
        const struct vt *vt = view_src(v, lay, pc);
        const struct refit_st_tensor *t = &vt->t;
        size_t ses = refit_dtype_size(t->dtype);
        int64_t srows = t->shape[0], scols = t->ndim == 2 ? t->shape[1] : 1;
        if (pc->src_row < 0 || pc->src_col < 0 || pc->src_row + pc->rows > srows ||
            pc->src_col + pc->cols > scols || pc->dst_index >= nidx || pc->dst_row + pc->rows > drows ||
            pc->dst_col + pc->cols > dcols || (size_t)(srows * scols) * ses > t->nbytes) {
            free(buf);
            return refit_error_set(REFIT_ERANGE, "tensor '%s': piece of '%s' outside its bounds", lt->name,
                                   t->name);
        }
        for (int64_t r = 0; r < pc->rows; r++) {
            char *to = buf + ((size_t)((pc->dst_index * drows + pc->dst_row + r) * dcols + pc->dst_col)) * es;
            if (vt->scale)
                fp8_dequant_row(vt, lut, pc->src_row + r, pc->src_col, pc->cols, (uint16_t *)(void *)to);
            else
                memcpy(to, (const char *)t->data + ((size_t)((pc->src_row + r) * scols + pc->src_col)) * es,
                       (size_t)pc->cols * es);
        }
    }
    *out = buf;
    return 0;
}

/* Whether an FP8 destination can take its native-FP8 sources' bytes and
 * multipliers unchanged: every piece from an FP8 source, starting on the
 * 128 grid on both sides and ending on it or at both tensors' ends, and the
 * pieces covering the destination (no padding).  Then each destination
 * block is exactly one source block. */
static bool fp8_passthrough_ok(const refit_hf_view_t *v, const refit_layout_t *lay,
                               const struct refit_layout_tensor *lt)
{
    const int64_t B = REFIT_FP8_BLOCK;
    if (lt->ndim < 2 || !lt->n_pieces)
        return false;
    int64_t drows = lt->shape[lt->ndim - 2], dcols = lt->shape[lt->ndim - 1];
    int64_t nidx = lt->ndim == 3 ? lt->shape[0] : 1, area = 0;
    for (size_t p = 0; p < lt->n_pieces; p++) {
        const struct refit_layout_piece *pc = &lt->pieces[p];
        const struct vt *t = view_src(v, lay, pc);
        if (!t || !t->scale)
            return false;
        int64_t sr = t->t.shape[0], sc = t->t.shape[1];
        if (pc->src_row % B || pc->dst_row % B || pc->src_col % B || pc->dst_col % B)
            return false;
        if (pc->rows % B && !(pc->src_row + pc->rows == sr && pc->dst_row + pc->rows == drows))
            return false;
        if (pc->cols % B && !(pc->src_col + pc->cols == sc && pc->dst_col + pc->cols == dcols))
            return false;
        area += pc->rows * pc->cols;
    }
    return area == nidx * drows * dcols;
}

/* The e4m3 bytes and the block multipliers copied piece by piece. */
static int fp8_passthrough(const refit_hf_view_t *v, const refit_layout_t *lay,
                           const struct refit_layout_tensor *lt, struct refit_converted *out)
{
    const int64_t B = REFIT_FP8_BLOCK;
    int64_t nidx = lt->ndim == 3 ? lt->shape[0] : 1;
    int64_t rows = lt->shape[lt->ndim - 2], cols = lt->shape[lt->ndim - 1];
    int64_t br = (rows + B - 1) / B, bc = (cols + B - 1) / B;
    out->data = malloc((size_t)(nidx * rows * cols) + 1);
    out->scale_inv = malloc((size_t)(nidx * br * bc) * sizeof(float) + 1);
    if (!out->data || !out->scale_inv)
        return REFIT_ENOMEM;
    for (size_t p = 0; p < lt->n_pieces; p++) {
        const struct refit_layout_piece *pc = &lt->pieces[p];
        const struct vt *t = view_src(v, lay, pc);
        int64_t sc = t->t.shape[1], sbc = (sc + B - 1) / B;
        uint8_t *d = (uint8_t *)out->data + pc->dst_index * rows * cols;
        for (int64_t r = 0; r < pc->rows; r++)
            memcpy(d + (pc->dst_row + r) * cols + pc->dst_col,
                   (const uint8_t *)t->t.data + (pc->src_row + r) * sc + pc->src_col, (size_t)pc->cols);
        float *ds = out->scale_inv + pc->dst_index * br * bc;
        int64_t nbr = (pc->rows + B - 1) / B, nbc = (pc->cols + B - 1) / B;
        for (int64_t i = 0; i < nbr; i++)
            memcpy(ds + (pc->dst_row / B + i) * bc + pc->dst_col / B,
                   (const char *)t->scale->data + (size_t)((pc->src_row / B + i) * sbc + pc->src_col / B) * 4,
                   (size_t)nbc * sizeof(float));
    }
    out->dtype = REFIT_DTYPE_F8_E4M3;
    out->nbytes = (size_t)(nidx * rows * cols);
    out->scale_ndim = lt->ndim;
    out->scale_shape[0] = lt->ndim == 3 ? nidx : br;
    out->scale_shape[1] = lt->ndim == 3 ? br : bc;
    out->scale_shape[2] = lt->ndim == 3 ? bc : 0;
    out->scale_nbytes = (size_t)(nidx * br * bc) * sizeof(float);
    return 0;
}

static int quantize(const void *buf, enum refit_dtype dt, const struct refit_layout_tensor *lt,
                    const struct refit_fp8_policy *fp8, struct refit_converted *out)
{
    int64_t nidx = lt->ndim == 3 ? lt->shape[0] : 1;
    int64_t rows = lt->shape[lt->ndim - 2], cols = lt->shape[lt->ndim - 1];
    int64_t br = (rows + REFIT_FP8_BLOCK - 1) / REFIT_FP8_BLOCK, bc = (cols + REFIT_FP8_BLOCK - 1) / REFIT_FP8_BLOCK;
    size_t n = (size_t)(nidx * rows * cols);
    out->data = malloc(n ? n : 1);
    out->scale_inv = malloc((size_t)(nidx * br * bc) * sizeof(float) + 1);
    if (!out->data || !out->scale_inv)
        return REFIT_ENOMEM;
    struct refit_fp8_params p = {fp8->rule, fp8->floor, REFIT_FP8_IMPL_AUTO};
    for (int64_t x = 0; x < nidx; x++) {
        size_t off = (size_t)(x * rows * cols);
        uint8_t *q = (uint8_t *)out->data + off;
        float *s = out->scale_inv + x * br * bc;
        int rc;
        if (dt == REFIT_DTYPE_BF16)
            rc = refit_fp8_quantize_bf16((const uint16_t *)buf + off, (size_t)rows, (size_t)cols,
                                         (size_t)cols, q, s, &p);
        else if (dt == REFIT_DTYPE_F32)
            rc = refit_fp8_quantize_f32((const float *)buf + off, (size_t)rows, (size_t)cols, (size_t)cols,
                                        q, s, &p);
        else
            rc = refit_error_set(REFIT_ENOTSUP, "FP8 from %s", refit_dtype_name(dt));
        if (rc)
            return nidx > 1 ? refit_error_push(rc, "tensor '%s' expert slot %lld", lt->name, (long long)x)
                            : refit_error_push(rc, "tensor '%s'", lt->name);
    }
    out->dtype = REFIT_DTYPE_F8_E4M3;
    out->nbytes = n;
    out->scale_ndim = lt->ndim;
    if (lt->ndim == 3) {
        out->scale_shape[0] = nidx;
        out->scale_shape[1] = br;
        out->scale_shape[2] = bc;
    } else {
        out->scale_shape[0] = br;
        out->scale_shape[1] = bc;
    }
    out->scale_nbytes = (size_t)(nidx * br * bc) * sizeof(float);
    return 0;
}

int refit_convert_image(const struct refit_layout_tensor *lt, enum refit_dtype src, const void *img,
                        const struct refit_fp8_policy *fp8, enum refit_dtype dst_dtype, void *dst,
                        float *scale_inv)
{
    if (!lt || !img || !dst)
        return refit_error_set(REFIT_EINVAL, "refit_convert_image: bad argument");
    size_t n = 1;
    for (int d = 0; d < lt->ndim; d++)
        n *= (size_t)lt->shape[d];
    if (lt->fp8 && fp8 && fp8->enabled) {
        if (!scale_inv || lt->ndim < 2)
            return refit_error_set(REFIT_EINVAL, "tensor '%s': FP8 needs a 2-D or 3-D tensor and scales", lt->name);
        int64_t nidx = lt->ndim == 3 ? lt->shape[0] : 1;
        int64_t rows = lt->shape[lt->ndim - 2], cols = lt->shape[lt->ndim - 1];
        int64_t br = (rows + REFIT_FP8_BLOCK - 1) / REFIT_FP8_BLOCK, bc = (cols + REFIT_FP8_BLOCK - 1) / REFIT_FP8_BLOCK;
        struct refit_fp8_params p = {fp8->rule, fp8->floor, REFIT_FP8_IMPL_AUTO};
        for (int64_t x = 0; x < nidx; x++) {
            size_t off = (size_t)(x * rows * cols);
            int rc;
            if (src == REFIT_DTYPE_BF16)
                rc = refit_fp8_quantize_bf16((const uint16_t *)img + off, (size_t)rows, (size_t)cols, (size_t)cols,
                                             (uint8_t *)dst + off, scale_inv + x * br * bc, &p);
            else if (src == REFIT_DTYPE_F32)
                rc = refit_fp8_quantize_f32((const float *)img + off, (size_t)rows, (size_t)cols, (size_t)cols,
                                            (uint8_t *)dst + off, scale_inv + x * br * bc, &p);
            else
                rc = refit_error_set(REFIT_ENOTSUP, "FP8 from %s", refit_dtype_name(src));
            if (rc)
                return nidx > 1 ? refit_error_push(rc, "tensor '%s' expert slot %lld", lt->name, (long long)x)
                                : refit_error_push(rc, "tensor '%s'", lt->name);
        }
        return 0;
    }
    if (dst_dtype == src) {
        memcpy(dst, img, n * refit_dtype_size(src));
        return 0;
    }
    return cast(img, src, dst, dst_dtype, n, lt->name);
}

int refit_convert_tensor(const refit_hf_view_t *v, const refit_layout_t *lay, size_t i,
                         const struct refit_fp8_policy *fp8, struct refit_converted *out)
{
    const struct refit_layout_tensor *lt = refit_layout_at(lay, i);
    if (!v || !lt || !out)
        return refit_error_set(REFIT_EINVAL, "refit_convert_tensor: bad argument");
    memset(out, 0, sizeof(*out));
    out->ndim = lt->ndim;
    memcpy(out->shape, lt->shape, sizeof(out->shape));
    if (lt->fp8 && fp8 && fp8->enabled && fp8_passthrough_ok(v, lay, lt)) {
        int rc = fp8_passthrough(v, lay, lt, out);
        if (rc)
            refit_converted_fini(out);
        return rc;
    }
    enum refit_dtype dt;
    void *buf = NULL;
    int rc = gather_tensor(v, lay, lt, &dt, &buf);
    if (rc)
        return rc;
    if (lt->fp8 && fp8 && fp8->enabled) {
        rc = quantize(buf, dt, lt, fp8, out);
        free(buf);
        if (rc)
            refit_converted_fini(out);
        return rc;
    }
    size_t n = 1;
    for (int d = 0; d < lt->ndim; d++)
        n *= (size_t)lt->shape[d];
    enum refit_dtype to = lt->dtype == REFIT_DTYPE_INVALID ? dt : lt->dtype;
    if (to != dt) {
        void *cv = malloc(n * refit_dtype_size(to) + 1);
        rc = cv ? cast(buf, dt, cv, to, n, lt->name) : REFIT_ENOMEM;
        free(buf);
        if (rc) {
            free(cv);
            return rc;
        }
        buf = cv;
    }
    out->dtype = to;
    out->data = buf;
    out->nbytes = n * refit_dtype_size(to);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Whole ranks */

static int write_layout(const refit_hf_view_t *v, const refit_layout_t *lay,
                        const struct refit_fp8_policy *fp8, const char *path,
                        int (*meta)(void *arg, refit_st_writer_t *w), void *arg)
{
    refit_st_writer_t *w;
    int rc = refit_st_writer_create(&w);
    if (rc)
        return rc;
    size_t n = refit_layout_count(lay);
    struct refit_converted *cv = calloc(n ? n : 1, sizeof(*cv));
    char **snames = calloc(n ? n : 1, sizeof(*snames));
    if (!cv || !snames)
        rc = REFIT_ENOMEM;
    refit_st_writer_set_order(w, REFIT_ST_ORDER_ALIGNED);
    if (!rc)
        rc = refit_st_writer_set_metadata(w, "format", "pt");
    if (!rc && meta)
        rc = meta(arg, w);
    for (size_t i = 0; !rc && i < n; i++) {
        const struct refit_layout_tensor *lt = refit_layout_at(lay, i);
        rc = refit_convert_tensor(v, lay, i, fp8, &cv[i]);
        if (!rc)
            rc = refit_st_writer_add(w, lt->name, cv[i].dtype, cv[i].ndim, cv[i].shape, cv[i].data,
                                     cv[i].nbytes);
        if (!rc && cv[i].scale_inv) {
            size_t sl = strlen(lt->name) + 16;
            snames[i] = malloc(sl);
            if (!snames[i]) {
                rc = REFIT_ENOMEM;
                break;
            }
            snprintf(snames[i], sl, "%s_scale_inv", lt->name);
            rc = refit_st_writer_add(w, snames[i], REFIT_DTYPE_F32, cv[i].scale_ndim, cv[i].scale_shape,
                                     cv[i].scale_inv, cv[i].scale_nbytes);
        }
    }
    if (!rc)
        rc = refit_st_writer_write(w, path);
    refit_st_writer_destroy(w);
    for (size_t i = 0; cv && i < n; i++) {
        refit_converted_fini(&cv[i]);
        if (snames)
            free(snames[i]);
    }
    free(cv);
    free(snames);
    return rc;
}

int refit_convert_write(const refit_model_t *m, const refit_hf_view_t *v,
                        const struct refit_convert_opts *o, const char *path)
{
    refit_layout_t *lay;
    int rc = refit_layout_target(m, o, &lay);
    if (rc)
        return rc;
    rc = write_layout(v, lay, &o->fp8, path, NULL, NULL);
    refit_layout_destroy(lay);
    if (rc)
        refit_error_push(rc, "writing %s", path);
    return rc;
}

struct shard_meta {
    const struct refit_megatron_rank *r; /* NULL: an FSDP rank */
    const struct refit_megatron_pp *pp;
    int fsdp, fsdp_rank;
    const char *model_type;
};

static int meta_put(refit_st_writer_t *w, const char *k, int v)
{
    char b[32];
    snprintf(b, sizeof(b), "%d", v);
    return refit_st_writer_set_metadata(w, k, b);
}

/* The rank's position, for refit_hf_view_open_shards; pipeline keys only
 * with pipeline parallelism, so PP 1 shards keep their bytes. */
static int shard_meta_fn(void *arg, refit_st_writer_t *w)
{
    struct shard_meta *sm = arg;
    const struct refit_megatron_rank *r = sm->r;
    int rc = 0;
    if (!r) {
        if (!(rc = refit_st_writer_set_metadata(w, "refit.layout", "fsdp")) &&
            !(rc = meta_put(w, "refit.fsdp", sm->fsdp)))
            rc = meta_put(w, "refit.fsdp_rank", sm->fsdp_rank);
        return rc ? rc : refit_st_writer_set_metadata(w, "refit.model_type", sm->model_type);
    }
    const struct {
        const char *k;
        int v;
    } kv[] = {{"refit.tp", r->tp},           {"refit.ep", r->ep},
              {"refit.etp", r->etp},         {"refit.tp_rank", r->tp_rank},
              {"refit.ep_rank", r->ep_rank}, {"refit.etp_rank", r->etp_rank},
              {"refit.vocab_divisible_by", r->vocab_divisible_by}};
    for (size_t i = 0; !rc && i < sizeof(kv) / sizeof(kv[0]); i++)
        rc = meta_put(w, kv[i].k, kv[i].v);
    const struct refit_megatron_pp *pp = sm->pp;
    if (!rc && (pp->pp > 1 || pp->vp > 1)) {
        if (!(rc = meta_put(w, "refit.pp", pp->pp)) && !(rc = meta_put(w, "refit.pp_rank", pp->pp_rank)))
            rc = meta_put(w, "refit.vp", pp->vp);
        if (!rc && pp->chunk_layers) {
            char b[4096];
            size_t len = 0;
            int n = pp->pp * pp->vp;
            for (int i = 0; i < n && len < sizeof(b); i++)
                len += (size_t)snprintf(b + len, sizeof(b) - len, "%s%d", i ? "," : "", pp->chunk_layers[i]);
            if (len >= sizeof(b))
                return refit_error_set(REFIT_EINVAL, "pipeline split of %d chunks is too long to record", n);
            rc = refit_st_writer_set_metadata(w, "refit.pp_layers", b);
        }
    }
    return rc ? rc : refit_st_writer_set_metadata(w, "refit.model_type", sm->model_type);
}

static const char *role_name(enum refit_model_role r)
{
    switch (r) {
    case REFIT_ROLE_REPLICATED: return "replicated";
    case REFIT_ROLE_VOCAB: return "vocab";
    case REFIT_ROLE_COLUMN: return "column";
    case REFIT_ROLE_QKV_COLUMN: return "qkv_column";
    case REFIT_ROLE_GATED_COLUMN: return "gated_column";
    case REFIT_ROLE_ROW: return "row";
    case REFIT_ROLE_EXPERT_COLUMN: return "expert_column";
    case REFIT_ROLE_EXPERT_ROW: return "expert_row";
    }
    return "unknown";
}

static void yaml_rank(FILE *y, const refit_layout_t *lay, const struct refit_megatron_rank *r,
                      const struct refit_megatron_pp *pp, int rank)
{
    if (!r)
        fprintf(y, "  - file: rank%d.safetensors\n    rank: %d\n    fsdp_rank: %d\n    tensors:\n", rank, rank,
                rank);
    else if (pp->pp > 1 || pp->vp > 1)
        fprintf(y, "  - file: rank%d.safetensors\n    rank: %d\n    pp_rank: %d\n    tp_rank: %d\n"
                   "    ep_rank: %d\n    etp_rank: %d\n    tensors:\n",
                rank, rank, pp->pp_rank, r->tp_rank, r->ep_rank, r->etp_rank);
    else
        fprintf(y, "  - file: rank%d.safetensors\n    rank: %d\n    tp_rank: %d\n    ep_rank: %d\n"
                   "    etp_rank: %d\n    tensors:\n",
                rank, rank, r->tp_rank, r->ep_rank, r->etp_rank);
    for (size_t i = 0; i < refit_layout_count(lay); i++) {
        const struct refit_layout_tensor *t = refit_layout_at(lay, i);
        fprintf(y, "      - {name: %s, role: %s, shape: [", t->name, role_name(t->role));
        for (int d = 0; d < t->ndim; d++)
            fprintf(y, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
        fprintf(y, "]");
        if (t->layer >= 0)
            fprintf(y, ", layer: %lld", (long long)t->layer);
        if (t->expert >= 0)
            fprintf(y, ", expert: %lld", (long long)t->expert);
        fprintf(y, "}\n");
    }
}

int refit_shard_write(const refit_model_t *m, const refit_hf_view_t *v, int tp, int ep,
                      const struct refit_convert_opts *skip, const char *dir)
{
    struct refit_shard_opts so = {.tp = tp, .ep = ep};
    if (tp < 1 || ep < 1)
        return refit_error_set(REFIT_EINVAL, "refit_shard_write: tp and ep must be >= 1");
    return refit_shard_write_ex(m, v, &so, skip, dir);
}

static void yaml_head(FILE *y, const refit_model_t *m, const struct refit_shard_opts *s, int world, int pp, int vp)
{
    if (s->fsdp > 0) {
        fprintf(y, "# FSDP trainer shards written by `refit shard`: HF names, every tensor split on dim 0\n"
                   "# as torch.chunk does (FSDP2 Shard(0)).\n"
                   "layout: fsdp\nmodel_type: %s\nplugin: %s\nfsdp: %d\nworld: %d\nranks:\n",
                m->model_type, m->plugin->name, s->fsdp, world);
        return;
    }
    if (pp > 1 || vp > 1)
        fprintf(y, "# Megatron trainer shards written by `refit shard` (rank r: pp_rank r / %d).\n"
                   "model_type: %s\nplugin: %s\ntp: %d\nep: %d\netp: 1\npp: %d\nvp: %d\nworld: %d\n"
                   "vocab_size: %lld\nvocab_divisible_by: 128\nranks:\n",
                world / pp, m->model_type, m->plugin->name, s->tp, s->ep, pp, vp, world,
                (long long)m->shape.vocab);
    else
        fprintf(y, "# Megatron trainer shards written by `refit shard` (pipeline parallelism 1).\n"
                   "model_type: %s\nplugin: %s\ntp: %d\nep: %d\netp: 1\nworld: %d\nvocab_size: %lld\n"
                   "vocab_divisible_by: 128\nranks:\n",
                m->model_type, m->plugin->name, s->tp, s->ep, world, (long long)m->shape.vocab);
}

int refit_shard_write_ex(const refit_model_t *m, const refit_hf_view_t *v, const struct refit_shard_opts *s,
                         const struct refit_convert_opts *skip, const char *dir)
{
    if (!m || !v || !dir || !s)
        return refit_error_set(REFIT_EINVAL, "refit_shard_write: NULL argument");
    bool fsdp = s->fsdp > 0;
    int tp = s->tp > 0 ? s->tp : 1, ep = s->ep > 0 ? s->ep : 1;
    int pp = s->pp > 0 ? s->pp : 1, vp = s->vp > 0 ? s->vp : 1;
    if (fsdp && (s->tp > 1 || s->ep > 1 || pp > 1 || vp > 1))
        return refit_error_set(REFIT_EINVAL, "FSDP shards take no tp, ep or pp");
    if (tp > 65536 || ep > 65536 || pp > 4096 || vp > 4096 || s->fsdp > 65536)
        return refit_error_set(REFIT_EINVAL, "refit_shard_write: parallel sizes out of range");
    if (rf_dir_ok(dir))
        return REFIT_EINVAL;
    if (mkdir(dir, 0777) && errno != EEXIST)
        return refit_error_set(REFIT_EIO, "%s: %s", dir, strerror(errno));
    int stage = tp > ep ? tp : ep, world = fsdp ? s->fsdp : pp * stage, rc = 0;
    char path[4096];
    snprintf(path, sizeof(path), "%s/layout.yaml.tmp", dir);
    FILE *y = fopen(path, "w");
    if (!y)
        return refit_error_set(REFIT_EIO, "%s: %s", path, strerror(errno));
    yaml_head(y, m, s, world, pp, vp);
    for (int r = 0; r < world && !rc; r++) {
        int q = r % stage;
        struct refit_megatron_rank mr = {tp, ep, 1, q % tp, q % ep, 0, 128};
        struct refit_megatron_pp mp = {pp, r / stage, vp, s->chunk_layers};
        refit_layout_t *lay;
        rc = fsdp ? refit_layout_fsdp(m, s->fsdp, r, skip, &lay) : refit_layout_megatron_pp(m, &mr, &mp, skip, &lay);
        if (rc)
            break;
        snprintf(path, sizeof(path), "%s/rank%d.safetensors", dir, r);
        struct refit_fp8_policy none = {0};
        struct shard_meta sm = {fsdp ? NULL : &mr, &mp, s->fsdp, r, m->model_type};
        rc = write_layout(v, lay, &none, path, shard_meta_fn, &sm);
        if (rc)
            refit_error_push(rc, "writing %s", path);
        else
            yaml_rank(y, lay, fsdp ? NULL : &mr, &mp, r);
        refit_layout_destroy(lay);
    }
    int bad = fflush(y) || ferror(y);
    fclose(y);
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s/layout.yaml.tmp", dir);
    snprintf(path, sizeof(path), "%s/layout.yaml", dir);
    if (!rc && (bad || rename(tmp, path)))
        rc = refit_error_set(REFIT_EIO, "%s: %s", path, strerror(errno));
    if (rc)
        unlink(tmp);
    return rc;
}

/* ------------------------------------------------------------------ */

int refit_convert_opts_from_config(const refit_config_t *cfg, struct refit_convert_opts *o)
{
    const char *s;
    int rc = refit_config_str(cfg, "model.target", &s);
    if (rc)
        return rc;
    o->target = !strcmp(s, "hf") ? REFIT_TARGET_HF : REFIT_TARGET_VLLM;
    /* other names: any target layout of the model plugin (hf and vllm stay
     * in the enum, which older callers override after this) */
    o->target_name = strcmp(s, "hf") && strcmp(s, "vllm") ? s : NULL;
    rc = refit_config_list(cfg, "model.skip", &o->skip, &o->n_skip);
    if (rc == REFIT_ENOENT)
        rc = 0, o->n_skip = 0;
    if (!rc)
        rc = refit_config_bool(cfg, "model.include_mtp", &o->include_mtp);
    bool en = false;
    if (!rc)
        rc = refit_config_bool(cfg, "model.fp8.enabled", &en);
    o->fp8.enabled = en;
    if (!rc)
        rc = refit_config_str(cfg, "model.fp8.rule", &s);
    if (!rc)
        o->fp8.rule = !strcmp(s, "deepgemm") ? REFIT_FP8_DEEPGEMM : REFIT_FP8_TRAINER;
    o->fp8.floor = -1;
    if (!rc && refit_config_has(cfg, "model.fp8.floor"))
        rc = refit_config_double(cfg, "model.fp8.floor", &o->fp8.floor);
    if (!rc && refit_config_has(cfg, "model.fp8.include"))
        rc = refit_config_list(cfg, "model.fp8.include", &o->fp8.include, &o->fp8.n_include);
    if (!rc && refit_config_has(cfg, "model.fp8.exclude"))
        rc = refit_config_list(cfg, "model.fp8.exclude", &o->fp8.exclude, &o->fp8.n_exclude);
    return rc;
}
