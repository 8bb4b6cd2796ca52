/* ucx_xfer.c — the ucx plugin's data path: READ/WRITE batches posted as
 * ucp gets and puts (a WRITE batch ends with an endpoint flush, so it
 * completes remotely), their completions, and notifications sent and
 * received as active messages (ucx.c's header comment: ordering). */
#include "ucx_int.h"

/* Completion of one ucp operation of a request (get, put or flush). */
void ucxp_op_done(void *request, ucs_status_t us, void *user_data)
{
    struct refit_tp_req *r = user_data;
    if (us != UCS_OK)
        rtp_req_fail(r, us == UCS_ERR_CANCELED ? REFIT_ECANCELED : REFIT_ECONN,
                 "%s: transfer with peer '%s' failed: %s (UCS %d)", UCXP, r->peer ? r->peer->name : "?",
                 ucs_status_string(us), (int)us);
    ucp_request_free(request);
    if (r->pending)
        r->pending--;
    if (!r->pending && r->released)
        rtp_req_unlink_free(&r->tp->c, r);
}
ucs_status_t ucxp_am_notify_cb(void *arg, const void *header, size_t header_length, void *data,
                               size_t length, const ucp_am_recv_param_t *param)
{
    refit_tp_t *tp = arg;
    /* The header is the sender's name: at most REFIT_TP_NAME_MAX bytes,
     * no NUL (a name that breaks this is shown as "?"). */
    char from[REFIT_TP_NAME_MAX + 1] = "?";
    if (header_length && header_length <= REFIT_TP_NAME_MAX && !memchr(header, 0, header_length)) {
        memcpy(from, header, header_length);
        from[header_length] = 0;
    }
    /* Notifications are sent eagerly; a rendezvous one is a peer that does
     * not follow the protocol, and it would need a receive we cannot fit. */
    if ((param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) || length > tp->max_notify_len) {
        rtp_notice_drop_big(&tp->c, from, length);
        return UCS_OK;
    }
    rtp_notice_push(&tp->c, from, data, length);
    return UCS_OK;
}
/* ------------------------------------------------------------------ */
/* Transfers */

RTP_DEFINE_CHECK_DESC(UCXP)

void ucxp_track(struct refit_tp_req *r, ucs_status_ptr_t sp, const char *what)
{
    if (sp == NULL)
        return; /* completed in place */
    if (UCS_PTR_IS_ERR(sp)) {
        ucs_status_t us = UCS_PTR_STATUS(sp);
        /* Refused at once: the endpoint failed (reset, timed out), so the
         * peer is broken until reconnected. */
        int st = ucxp_status_of(us);
        rtp_req_fail(r, st == REFIT_EPLUGIN || st == REFIT_ETIMEDOUT ? REFIT_ECONN : st,
                 "%s: %s to peer '%s' failed: %s (UCS %d)", UCXP, what, r->peer->name,
                 ucs_status_string(us), (int)us);
        return;
    }
    r->pending++;
}

int ucxp_post(refit_tp_t *tp, refit_tp_peer_t *p, const struct refit_tp_desc *d, size_t n,
              refit_tp_req_t **out)
{
    if (!tp || !p || (!d && n) || !out)
        return H->error_set(REFIT_EINVAL, "%s: post without peer or descriptors", UCXP);
    for (size_t i = 0; i < n; i++) {
        int rc = check_desc(p, &d[i], i);
        if (rc)
            return rc;
    }
    if (p->err != UCS_OK)
        return ucxp_err(REFIT_ECONN, p->err, "post", NULL, p->name);
    struct refit_tp_req *r = rtp_req_new(&tp->c, p, 0);
    if (!r)
        return H->error_set(REFIT_ENOMEM, "%s: out of memory", UCXP);
    /* The distinct remote regions, so that a revoke finds the requests it
     * affects. */
    for (size_t i = 0; i < n; i++)
        if (rtp_req_note_region(r, d[i].remote->id) || rtp_req_note_local(r, d[i].local)) {
            rtp_req_unlink_free(&tp->c, r);
            return H->error_set(REFIT_ENOMEM, "%s: out of memory", UCXP);
        }

    ucp_request_param_t rp = {0};
    rp.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA |
                      UCP_OP_ATTR_FIELD_MEMH;
    rp.cb.send = ucxp_op_done;
    rp.user_data = r;
    int writes = 0;
    for (size_t i = 0; i < n && !r->status; i++) {
        if (!d[i].len)
            continue;
        void *lp = (char *)d[i].local->ptr + d[i].local_off;
        uint64_t ra = d[i].remote->base + d[i].remote_off;
        rp.memh = d[i].local->memh;
        if (d[i].op == REFIT_OP_READ) {
            ucxp_track(r, ucp_get_nbx(p->ep, lp, d[i].len, ra, d[i].remote->rk, &rp), "get");
        } else {
            ucxp_track(r, ucp_put_nbx(p->ep, lp, d[i].len, ra, d[i].remote->rk, &rp), "put");
            writes = 1;
        }
    }
    if (writes && !r->status) {
        /* A put completes locally; the flush makes the batch complete only
         * when the bytes are in the peer's memory. */
        ucp_request_param_t fp = {0};
        fp.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
        fp.cb.send = ucxp_op_done;
        fp.user_data = r;
        ucxp_track(r, ucp_ep_flush_nbx(p->ep, &fp), "flush");
    }
    *out = r;
    return 0;
}

int ucxp_test(refit_tp_t *tp, refit_tp_req_t *r)
{
    if (!tp || !r)
        return H->error_set(REFIT_EINVAL, "%s: test without a request", UCXP);
    if (r->pending && !r->status)
        ucxp_progress_all(tp);
    return rtp_req_result(r);
}

int ucxp_wait(refit_tp_t *tp, refit_tp_req_t *r, int64_t timeout_ms)
{
    if (!tp || !r)
        return H->error_set(REFIT_EINVAL, "%s: wait without a request", UCXP);
    int64_t t0 = rtp_now_ms(), last = t0;
    int64_t deadline = timeout_ms < 0 ? INT64_MAX : t0 + timeout_ms;
    unsigned idle = 0;
    while (r->pending && !r->status) {
        if (ucxp_progress_all(tp)) {
            idle = 0;
            continue;
        }
        if (++idle % 256 == 0) {
            int64_t now = rtp_now_ms();
            if (idle == 256)
                last = now; /* the worker went quiet now */
            if (now >= deadline)
                return H->error_set(REFIT_ETIMEDOUT, "%s: transfer with peer '%s': not complete "
                                    "after %" PRId64 " ms (%zu operations outstanding)", UCXP,
                                    r->peer ? r->peer->name : "?", timeout_ms, r->pending);
            /* transport.timeout: a worker with nothing to do for that long
             * while we wait on this peer means the peer is gone or stuck.
             * The peer stays failed: later posts fail at once. */
            if (now - last >= tp->c.timeout_ms && r->peer) {
                if (r->peer->err == UCS_OK)
                    H->log(2, UCXP, "peer '%s': no progress for %" PRId64 " ms", r->peer->name,
                           tp->c.timeout_ms);
                r->peer->err = UCS_ERR_ENDPOINT_TIMEOUT;
                /* REFIT_ECONN: the peer is broken until reconnected. */
                rtp_req_fail(r, REFIT_ECONN, "%s: transfer with peer '%s': no progress for %" PRId64
                         " ms (transport.timeout); peer presumed gone", UCXP, r->peer->name,
                         tp->c.timeout_ms);
                break;
            }
            sched_yield();
        }
    }
    return rtp_req_result(r);
}

/* ------------------------------------------------------------------ */
/* Notifications */

int ucxp_notify(refit_tp_t *tp, refit_tp_peer_t *p, const void *msg, size_t len)
{
    if (!tp || !p || (!msg && len))
        return H->error_set(REFIT_EINVAL, "%s: notify without a peer", UCXP);
    if (len > tp->max_notify_len)
        return H->error_set(REFIT_ETOOBIG, "%s: notification of %zu bytes to peer '%s' exceeds "
                            "max_notify_len %" PRIu64, UCXP, len, p->name, tp->max_notify_len);
    if (p->err != UCS_OK)
        return ucxp_err(REFIT_ECONN, p->err, "notify", NULL, p->name);

    /* The flush and the send each complete into this one-shot request;
     * a timeout leaves it to its last completion (ucxp_oneshot_end). */
    ucp_request_param_t rp;
    struct refit_tp_req *r = ucxp_oneshot_flush(tp, p, &rp, "flush before notify");
    if (!r)
        return H->error_set(REFIT_ENOMEM, "%s: notify peer '%s': out of memory", UCXP, p->name);
    if (!r->status && rtp_spin(&tp->c, &r->pending, NULL, tp->c.timeout_ms)) {
        ucxp_oneshot_end(tp, r);
        p->err = UCS_ERR_ENDPOINT_TIMEOUT; /* broken until reconnected */
        return H->error_set(REFIT_ECONN, "%s: notify peer '%s': earlier writes not flushed "
                            "within %" PRId64 " ms (transport.timeout); peer presumed gone", UCXP,
                            p->name, tp->c.timeout_ms);
    }
    if (!r->status && p->err == UCS_OK) {
        rp.op_attr_mask |= UCP_OP_ATTR_FIELD_FLAGS;
        rp.flags = UCP_AM_SEND_FLAG_EAGER;
        ucxp_track(r, ucp_am_send_nbx(p->ep, UCXP_AM_NOTIFY, tp->name, strlen(tp->name), msg, len, &rp),
              "notify");
        if (!r->status && rtp_spin(&tp->c, &r->pending, NULL, tp->c.timeout_ms)) {
            ucxp_oneshot_end(tp, r);
            p->err = UCS_ERR_ENDPOINT_TIMEOUT;
            return H->error_set(REFIT_ECONN, "%s: notify peer '%s': not sent within %" PRId64
                                " ms (transport.timeout); peer presumed gone", UCXP, p->name,
                                tp->c.timeout_ms);
        }
    }
    int rc;
    if (!r->status && p->err != UCS_OK)
        rc = ucxp_err(REFIT_ECONN, p->err, "notify", NULL, p->name);
    else
        rc = rtp_req_result(r);
    ucxp_oneshot_end(tp, r);
    return rc;
}
