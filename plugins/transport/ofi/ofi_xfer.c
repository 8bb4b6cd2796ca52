/* ofi_xfer.c — the ofi plugin's data path: READ/WRITE batches issued as
 * fi_read/fi_write chunks (reaping completions when the transmit queue is
 * full), test and wait, and notifications sent once every WRITE to the
 * peer completed (the ordering push mode relies on). */
#include "ofi_int.h"

/* ------------------------------------------------------------------ */
/* Transfers */

RTP_DEFINE_CHECK_DESC(OFIP)

/* Issue one chunk, making room in the transmit queue by reaping
 * completions when the provider says it is full. */
static int issue(refit_tp_t *tp, refit_tp_peer_t *p, struct ofip_op *op, void *lp, size_t n,
                 void *desc, uint64_t raddr, uint64_t key)
{
    int64_t deadline = 0;
    for (;;) {
        ssize_t ret;
        if (op->is_write) {
            struct iovec iov = {lp, n};
            struct fi_rma_iov riov = {raddr, n, key};
            struct fi_msg_rma m = {&iov, &desc, 1, p->fa, &riov, 1, &op->fctx, 0};
            ret = fi_writemsg(tp->ep, &m, FI_COMPLETION | tp->write_flags);
        } else {
            ret = fi_read(tp->ep, lp, n, desc, p->fa, raddr, key, &op->fctx);
        }
        if (ret == 0)
            return 0;
        if (ret != -FI_EAGAIN)
            return (int)ret;
        ofip_cq_drain(tp);
        if (!deadline)
            deadline = rtp_now_ms() + tp->c.timeout_ms;
        else if (rtp_now_ms() > deadline)
            return -FI_ETIMEDOUT;
    }
}

int ofip_post(refit_tp_t *tp, refit_tp_peer_t *p, const struct refit_tp_desc *d, size_t n,
              refit_tp_req_t **out)
{
    if (!tp || !p || (!d && n) || !out)
        return H->error_set(REFIT_EINVAL, "%s: post without peer or descriptors", OFIP);
    size_t n_ops = 0;
    for (size_t i = 0; i < n; i++) {
        int rc = check_desc(p, &d[i], i);
        if (rc)
            return rc;
        n_ops += (d[i].len + tp->max_msg - 1) / tp->max_msg;
    }
    if (p->failed)
        return H->error_set(REFIT_ECONN, "%s: peer '%s' failed earlier: %s", OFIP, p->name, p->why);
    struct refit_tp_req *r = ofip_req_new(tp, p, n_ops);
    if (!r)
        return H->error_set(REFIT_ENOMEM, "%s: out of memory", OFIP);
    /* The distinct remote regions, so that a revoke finds this request. */
    for (size_t i = 0; i < n; i++)
        if (rtp_req_note_region(r, d[i].remote->id) || rtp_req_note_local(r, d[i].local)) {
            rtp_req_unlink_free(&tp->c, r);
            return H->error_set(REFIT_ENOMEM, "%s: out of memory", OFIP);
        }
    size_t k = 0;
    for (size_t i = 0; i < n && !r->status; i++) {
        for (uint64_t off = 0; off < d[i].len && !r->status; off += tp->max_msg) {
            uint64_t len = d[i].len - off < tp->max_msg ? d[i].len - off : tp->max_msg;
            struct ofip_op *op = &req_ext(r)->ops[k++];
            op->kind = OP_RMA;
            op->req = r;
            op->is_write = d[i].op == REFIT_OP_WRITE;
            op->peer = op->is_write ? p : NULL;
            void *lp = (char *)d[i].local->ptr + d[i].local_off + off;
            uint64_t ra = d[i].remote->base + d[i].remote_off + off;
            r->pending++;
            p->ops_pending++;
            if (op->is_write)
                p->writes_pending++;
            int ret = issue(tp, p, op, lp, (size_t)len, d[i].local->desc, ra, d[i].remote->key);
            if (ret) {
                r->pending--;
                p->ops_pending--;
                if (op->is_write)
                    p->writes_pending--;
                /* A queue that stays full for transport.timeout is a peer
                 * that stopped taking our operations. */
                int st = ret == -FI_ETIMEDOUT ? REFIT_ECONN
                         : ofip_status_of(ret) == REFIT_ESTALE ? REFIT_EINVAL : ofip_status_of(ret);
                rtp_req_fail(r, st, "%s(%s): %s to peer '%s' not posted: %s (fi errno %d)", OFIP,
                             ofip_prov_of(tp), op->is_write ? "fi_write" : "fi_read", p->name,
                             fi_strerror(-ret), -ret);
                if (st == REFIT_ECONN)
                    ofip_peer_fail(p, "operations not accepted within transport.timeout");
            }
        }
    }
    *out = r;
    return 0;
}

int ofip_test(refit_tp_t *tp, refit_tp_req_t *r)
{
    if (!tp || !r)
        return H->error_set(REFIT_EINVAL, "%s: test without a request", OFIP);
    if (r->pending && !r->status)
        ofip_cq_drain(tp);
    return rtp_req_result(r);
}

int ofip_wait(refit_tp_t *tp, refit_tp_req_t *r, int64_t timeout_ms)
{
    if (!tp || !r)
        return H->error_set(REFIT_EINVAL, "%s: wait without a request", OFIP);
    /* transport.timeout bounds how long a request may make no progress
     * (chunks of max_chunk complete one by one; a peer that stops or
     * vanishes stops them).  The peer then stays failed. */
    int64_t t0 = rtp_now_ms();
    size_t last_pending = r->pending;
    while (r->pending && !r->status) {
        int64_t left = timeout_ms < 0 ? tp->c.timeout_ms : timeout_ms - (rtp_now_ms() - t0);
        if (left <= 0)
            break;
        int64_t slice = left < tp->c.timeout_ms ? left : tp->c.timeout_ms;
        if (!rtp_spin(&tp->c, &r->pending, &r->status, slice))
            break;
        if (r->pending == last_pending && slice == tp->c.timeout_ms) {
            if (r->peer && !r->peer->failed) {
                r->peer->failed = 1;
                snprintf(r->peer->why, sizeof(r->peer->why), "no progress for %" PRId64 " ms",
                         tp->c.timeout_ms);
            }
            rtp_req_fail(r, REFIT_ECONN, "%s(%s): transfer with peer '%s': no progress for %" PRId64
                     " ms (transport.timeout); peer presumed gone", OFIP, ofip_prov_of(tp),
                     r->peer ? r->peer->name : "?", tp->c.timeout_ms);
            break;
        }
        last_pending = r->pending;
    }
    if (r->pending && !r->status) {
        return H->error_set(REFIT_ETIMEDOUT, "%s(%s): transfer with peer '%s': not complete after "
                            "%" PRId64 " ms (%zu operations outstanding)", OFIP, ofip_prov_of(tp),
                            r->peer ? r->peer->name : "?", timeout_ms, r->pending);
    }
    return rtp_req_result(r);
}

/* ------------------------------------------------------------------ */
/* Notifications */

int ofip_notify(refit_tp_t *tp, refit_tp_peer_t *p, const void *msg, size_t len)
{
    if (!tp || !p || (!msg && len))
        return H->error_set(REFIT_EINVAL, "%s: notify without a peer", OFIP);
    if (len > tp->max_notify_len)
        return H->error_set(REFIT_ETOOBIG, "%s: notification of %zu bytes to peer '%s' exceeds "
                            "max_notify_len %" PRIu64, OFIP, len, p->name, tp->max_notify_len);
    if (p->failed)
        return H->error_set(REFIT_ECONN, "%s: peer '%s' failed earlier: %s", OFIP, p->name, p->why);
    /* Every WRITE to this peer is delivered before the note leaves. */
    if (rtp_spin(&tp->c, &p->writes_pending, NULL, tp->c.timeout_ms)) {
        ofip_peer_fail(p, "writes not complete within transport.timeout");
        return H->error_set(REFIT_ECONN, "%s(%s): notify peer '%s': %zu earlier writes not "
                            "complete within %" PRId64 " ms (transport.timeout); peer presumed gone",
                            OFIP, ofip_prov_of(tp), p->name, p->writes_pending, tp->c.timeout_ms);
    }
    struct refit_tp_req *r = ofip_req_new(tp, p, 1);
    size_t nl = strlen(tp->name), total = sizeof(struct rtp_ctrl) + nl + len;
    unsigned char *copy = H->alloc(total);
    if (!r || !copy) {
        H->free(copy);
        if (r)
            rtp_req_unlink_free(&tp->c, r);
        return H->error_set(REFIT_ENOMEM, "%s: out of memory", OFIP);
    }
    rtp_ctrl_head(&tp->c, copy, MSG_NOTE, nl + len, 0, nl);
    memcpy(copy + sizeof(struct rtp_ctrl), tp->name, nl);
    if (len)
        memcpy(copy + sizeof(struct rtp_ctrl) + nl, msg, len);
    struct ofip_op *op = &req_ext(r)->ops[0];
    op->kind = OP_SEND;
    op->req = r;
    op->buf = copy;
    r->pending = 1;
    int64_t deadline = rtp_now_ms() + tp->c.timeout_ms;
    ssize_t ret;
    while ((ret = fi_send(tp->ep, copy, total, NULL, p->fa, &op->fctx)) == -FI_EAGAIN &&
           rtp_now_ms() < deadline)
        ofip_cq_drain(tp);
    if (ret) {
        H->free(copy);
        rtp_req_unlink_free(&tp->c, r);
        return ofip_fi_fail(tp, ofip_status_of((int)ret) == REFIT_ESTALE ? REFIT_EPLUGIN : ofip_status_of((int)ret),
                       (int)ret, "fi_send (notify)", p->name);
    }
    /* Waiting for the send completion turns a dead peer into an error
     * here rather than a note silently lost. */
    int rc = rtp_spin(&tp->c, &r->pending, &r->status, tp->c.timeout_ms);
    if (rc) {
        r->released = 1;
        ofip_peer_fail(p, "a notification not sent within transport.timeout");
        return H->error_set(REFIT_ECONN, "%s(%s): notify peer '%s': not sent within %" PRId64
                            " ms (transport.timeout); peer presumed gone", OFIP, ofip_prov_of(tp), p->name,
                            tp->c.timeout_ms);
    }
    rc = rtp_req_result(r);
    if (r->pending)
        r->released = 1;
    else
        rtp_req_unlink_free(&tp->c, r);
    return rc;
}
