/* ucx_mem.c — the ucx plugin's memory: regions mapped with ucp_mem_map,
 * their packed remote keys, and the keys of peers' regions we unpack.
 * A dereg revokes the region at every watcher first (ucx.c's header
 * comment: stale keys). */
#include "ucx_int.h"

RTP_DEFINE_DEREG_BEGIN()
RTP_DEFINE_RKEY_LINK()

/* ------------------------------------------------------------------ */
/* Memory */

int ucxp_reg(refit_tp_t *tp, void *ptr, size_t len, uint32_t memtype, refit_tp_region_t **out)
{
    if (!tp || !ptr || !len || !out)
        return H->error_set(REFIT_EINVAL, "%s: register needs a pointer and a length", UCXP);
    if (memtype != REFIT_MEM_HOST && memtype != REFIT_MEM_CUDA)
        return H->error_set(REFIT_EINVAL, "%s: unknown memory type %u", UCXP, memtype);
    if (!(tp->memtypes & REFIT_MEMTYPE_BIT(memtype)))
        return H->error_set(REFIT_ENOTSUP, "%s: this UCX build reaches no CUDA memory "
                            "(no cuda transport in the context)", UCXP);
    refit_tp_region_t *r = H->calloc(1, sizeof(*r));
    if (!r)
        return H->error_set(REFIT_ENOMEM, "%s: out of memory", UCXP);
    ucp_mem_map_params_t mp = {0};
    mp.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
    mp.address = ptr;
    mp.length = len;
#ifdef REFIT_UCX_HAVE_MEMTYPE_HINT
    /* Saves UCX a pointer-type query per registration, and makes it pick
     * the GPU-capable memory domains for device memory. */
    mp.field_mask |= UCP_MEM_MAP_PARAM_FIELD_MEMORY_TYPE;
    mp.memory_type = memtype == REFIT_MEM_CUDA ? UCS_MEMORY_TYPE_CUDA : UCS_MEMORY_TYPE_HOST;
#endif
    ucs_status_t us = ucp_mem_map(tp->ctx, &mp, &r->memh);
    if (us != UCS_OK) {
        H->free(r);
        return ucxp_err(ucxp_status_of(us), us, "ucp_mem_map", NULL, NULL);
    }
    void *rk = NULL;
    size_t rk_len = 0;
    us = ucp_rkey_pack(tp->ctx, r->memh, &rk, &rk_len);
    if (us != UCS_OK) {
        ucp_mem_unmap(tp->ctx, r->memh);
        H->free(r);
        return ucxp_err(ucxp_status_of(us), us, "ucp_rkey_pack", NULL, NULL);
    }
    r->packed_len = sizeof(struct rtp_rkey_hdr) + rk_len;
    r->packed = H->alloc(r->packed_len);
    if (!r->packed) {
        ucp_rkey_buffer_release(rk);
        ucp_mem_unmap(tp->ctx, r->memh);
        H->free(r);
        return H->error_set(REFIT_ENOMEM, "%s: out of memory", UCXP);
    }
    r->ptr = ptr;
    r->len = len;
    r->memtype = memtype;
    r->id = tp->next_region_id++;
    struct rtp_rkey_hdr h = {UCXP_RKEY_MAGIC, UCXP_BLOB_VERSION, (uint16_t)memtype,
                             (uint64_t)(uintptr_t)ptr, len, r->id, rk_len};
    memcpy(r->packed, &h, sizeof(h));
    memcpy((char *)r->packed + sizeof(h), rk, rk_len);
    ucp_rkey_buffer_release(rk);
    *out = r;
    return 0;
}

int ucxp_dereg(refit_tp_t *tp, refit_tp_region_t *r)
{
    if (!tp || !r)
        return 0;
    int rc = dereg_begin(tp, r);
    if (rc)
        return rc;
    ucs_status_t us = ucp_mem_unmap(tp->ctx, r->memh);
    H->free(r->packed);
    H->free(r);
    if (us != UCS_OK)
        return ucxp_err(ucxp_status_of(us), us, "ucp_mem_unmap", NULL, NULL);
    return 0;
}

int ucxp_pack_rkey(refit_tp_t *tp, refit_tp_region_t *r, void *buf, size_t *len)
{
    if (!tp || !r)
        return H->error_set(REFIT_EINVAL, "%s: pack_rkey without a region", UCXP);
    return rtp_rkey_copy(&tp->c, r->packed, r->packed_len, buf, len);
}

int ucxp_unpack_rkey(refit_tp_t *tp, refit_tp_peer_t *p, const void *buf, size_t len,
                     refit_tp_rkey_t **out)
{
    if (!tp || !p || !buf || !out)
        return H->error_set(REFIT_EINVAL, "%s: unpack_rkey without a peer or key", UCXP);
    struct rtp_rkey_hdr h;
    int rc = rtp_rkey_parse(&tp->c, UCXP_RKEY_MAGIC, UCXP_BLOB_VERSION, 1, buf, len, p->name, &h);
    if (rc)
        return rc;
    if (p->err != UCS_OK)
        return ucxp_err(REFIT_ECONN, p->err, "unpack_rkey", NULL, p->name);
    refit_tp_rkey_t *k = H->calloc(1, sizeof(*k));
    if (!k)
        return H->error_set(REFIT_ENOMEM, "%s: out of memory", UCXP);
    ucs_status_t us = ucp_ep_rkey_unpack(p->ep, (const char *)buf + sizeof(h), &k->rk);
    if (us != UCS_OK) {
        H->free(k);
        return ucxp_err(us == UCS_ERR_NO_MEMORY ? REFIT_ENOMEM : REFIT_EPROTO, us,
                        "ucp_ep_rkey_unpack of a key from", NULL, p->name);
    }
    rkey_link(p, k, &h);
    *out = k;
    return 0;
}

void ucxp_release_rkey(refit_tp_t *tp, refit_tp_rkey_t *k)
{
    if (!tp || !k)
        return;
    if (k->peer)
        RTP_LIST_UNLINK(refit_tp_rkey_t, k->peer->rkeys, k, next);
    if (k->rk)
        ucp_rkey_destroy(k->rk);
    H->free(k);
}
