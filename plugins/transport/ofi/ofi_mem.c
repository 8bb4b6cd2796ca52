/* ofi_mem.c — the ofi plugin's memory: regions registered with fi_mr_reg,
 * their packed remote keys (revoked at every watcher on dereg), and the
 * keys of peers' regions we unpack. */
#include "ofi_int.h"

RTP_DEFINE_DEREG_BEGIN()
RTP_DEFINE_RKEY_LINK()

/* ------------------------------------------------------------------ */
/* Memory */

int ofip_reg(refit_tp_t *tp, void *ptr, size_t len, uint32_t memtype, refit_tp_region_t **out)
{
    if (!tp || !ptr || !len || !out)
        return H->error_set(REFIT_EINVAL, "%s: register needs a pointer and a length", OFIP);
    if (memtype != REFIT_MEM_HOST && memtype != REFIT_MEM_CUDA)
        return H->error_set(REFIT_EINVAL, "%s: unknown memory type %u", OFIP, memtype);
    if (!(tp->memtypes & REFIT_MEMTYPE_BIT(memtype)))
        return H->error_set(REFIT_ENOTSUP, "%s(%s): provider offers no FI_HMEM: CUDA memory is "
                            "staged by the core", OFIP, ofip_prov_of(tp));
    refit_tp_region_t *r = H->calloc(1, sizeof(*r));
    if (!r)
        return H->error_set(REFIT_ENOMEM, "%s: out of memory", OFIP);
    struct iovec iov = {ptr, len};
    struct fi_mr_attr ma = {0};
    ma.mr_iov = &iov;
    ma.iov_count = 1;
    ma.access = FI_READ | FI_WRITE | FI_REMOTE_READ | FI_REMOTE_WRITE | FI_SEND | FI_RECV;
    ma.requested_key = tp->next_key++;
    ma.iface = FI_HMEM_SYSTEM;
    if (memtype == REFIT_MEM_CUDA) {
        ma.iface = FI_HMEM_CUDA;
        ma.device.cuda = tp->cuda_device < 0 ? 0 : tp->cuda_device;
    }
    int ret = fi_mr_regattr(tp->domain, &ma, 0, &r->mr);
    if (ret) {
        H->free(r);
        return ofip_fi_fail(tp, ofip_status_of(ret) == REFIT_ESTALE ? REFIT_EINVAL : ofip_status_of(ret), ret,
                       "fi_mr_regattr", NULL);
    }
    if (tp->mr_mode & FI_MR_ENDPOINT) {
        ret = fi_mr_bind(r->mr, &tp->ep->fid, 0);
        if (!ret)
            ret = fi_mr_enable(r->mr);
        if (ret) {
            fi_close(&r->mr->fid);
            H->free(r);
            return ofip_fi_fail(tp, REFIT_EPLUGIN, ret, "fi_mr_bind/enable", NULL);
        }
    }
    r->desc = fi_mr_desc(r->mr);
    r->key = fi_mr_key(r->mr);
    if (r->key == FI_KEY_NOTAVAIL) {
        fi_close(&r->mr->fid);
        H->free(r);
        return H->error_set(REFIT_ENOTSUP, "%s(%s): provider wants raw keys (FI_MR_RAW), not "
                            "supported", OFIP, ofip_prov_of(tp));
    }
    r->ptr = ptr;
    r->len = len;
    r->memtype = memtype;
    r->id = tp->next_region_id++;
    *out = r;
    return 0;
}

int ofip_dereg(refit_tp_t *tp, refit_tp_region_t *r)
{
    if (!tp || !r)
        return 0;
    int rc = dereg_begin(tp, r);
    if (rc)
        return rc;
    int ret = fi_close(&r->mr->fid);
    H->free(r);
    return ret ? ofip_fi_fail(tp, REFIT_EPLUGIN, ret, "fi_close(mr)", NULL) : 0;
}

int ofip_pack_rkey(refit_tp_t *tp, refit_tp_region_t *r, void *buf, size_t *len)
{
    if (!tp || !r)
        return H->error_set(REFIT_EINVAL, "%s: pack_rkey without a region", OFIP);
    /* Offsets are turned into virtual addresses only where the provider
     * wants them (FI_MR_VIRT_ADDR); the peer never has to know. */
    uint64_t base = (tp->mr_mode & FI_MR_VIRT_ADDR) ? (uint64_t)(uintptr_t)r->ptr : 0;
    struct rtp_rkey_hdr h = {OFIP_RKEY_MAGIC, OFIP_BLOB_VERSION, (uint16_t)r->memtype, base, r->len, r->id, r->key};
    return rtp_rkey_copy(&tp->c, &h, sizeof(h), buf, len);
}

int ofip_unpack_rkey(refit_tp_t *tp, refit_tp_peer_t *p, const void *buf, size_t len,
                     refit_tp_rkey_t **out)
{
    if (!tp || !p || !buf || !out)
        return H->error_set(REFIT_EINVAL, "%s: unpack_rkey without a peer or key", OFIP);
    struct rtp_rkey_hdr h;
    int rc = rtp_rkey_parse(&tp->c, OFIP_RKEY_MAGIC, OFIP_BLOB_VERSION, 0, buf, len, p->name, &h);
    if (rc)
        return rc;
    refit_tp_rkey_t *k = H->calloc(1, sizeof(*k));
    if (!k)
        return H->error_set(REFIT_ENOMEM, "%s: out of memory", OFIP);
    rkey_link(p, k, &h);
    k->key = h.word;
    *out = k;
    return 0;
}

void ofip_release_rkey(refit_tp_t *tp, refit_tp_rkey_t *k)
{
    if (!tp || !k)
        return;
    if (k->peer)
        RTP_LIST_UNLINK(refit_tp_rkey_t, k->peer->rkeys, k, next);
    H->free(k);
}
