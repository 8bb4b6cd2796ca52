/* ucx_peer.c — the ucx plugin's peers: endpoints with error handling,
 * connect/disconnect, and the control messages of the revoke protocol
 * (hello, revoke, ack, bye) sent and handled outside UCX callbacks. */
#include "ucx_int.h"

/* ------------------------------------------------------------------ */
/* Peers */

static void ep_error_cb(void *arg, ucp_ep_h ep, ucs_status_t us)
{
    refit_tp_peer_t *p = arg;
    (void)ep;
    if (p->err == UCS_OK)
        H->log(2, UCXP, "peer '%s' failed: %s (UCS %d)", p->name, ucs_status_string(us), (int)us);
    p->err = us;
    /* Fail every request to this peer now: UCX purges their operations
     * too, but a waiter should not depend on when it does. */
    for (struct refit_tp_req *r = p->tp->c.reqs; r; r = r->next)
        if (r->peer == p && r->pending)
            rtp_req_fail(r, REFIT_ECONN, "%s: peer '%s' failed: %s (UCS %d)", UCXP, p->name,
                     ucs_status_string(us), (int)us);
}

/* arg is the transport, not the watcher: a watcher is freed once its
 * endpoint is closed, and a callback must never reach freed memory, so it
 * looks its watcher up by endpoint (none: the endpoint is closing). */
static void watcher_error_cb(void *arg, ucp_ep_h ep, ucs_status_t us)
{
    refit_tp_t *tp = arg;
    (void)us;
    for (struct rtp_watcher *w = tp->c.watchers; w; w = w->next)
        if (w->ep == ep) {
            w->failed = 1; /* its endpoint: closed by force */
            if (!w->reopen) /* else a new endpoint replaces this one */
                w->dead = 1; /* no revoke waits for it any more */
        }
}

/* Close a watcher's endpoint without waiting.  A failed endpoint must be
 * forced; a live one is flushed: a forced close purges the endpoint's
 * pending queue, and UCX 1.13 over tcp segfaults there (in
 * ucp_request_send_state_ff) when that queue holds its own wireup or
 * keepalive requests — the state of an endpoint to a peer that was
 * stopped and came back (t_reconnect_stopped). */
static void watcher_ep_close(struct rtp_watcher *w)
{
    ucp_request_param_t rp = {0};
    rp.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    rp.flags = w->failed ? UCP_EP_CLOSE_FLAG_FORCE : 0;
    ucs_status_ptr_t sp = ucp_ep_close_nbx(w->ep, &rp);
    if (UCS_PTR_IS_PTR(sp))
        ucp_request_free(sp); /* completes on its own */
    w->ep = NULL;
}

/* An endpoint with peer error handling where some transport to the peer
 * supports it (see transport.ucx.error_handling). */
static ucs_status_t ep_open(refit_tp_t *tp, const void *addr, ucp_err_handler_cb_t cb, void *arg,
                            const char *who, ucp_ep_h *out)
{
    ucp_ep_params_t ep = {0};
    ep.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                    UCP_EP_PARAM_FIELD_ERR_HANDLER;
    ep.address = addr;
    ep.err_mode = tp->err_mode ? UCP_ERR_HANDLING_MODE_PEER : UCP_ERR_HANDLING_MODE_NONE;
    ep.err_handler.cb = cb;
    ep.err_handler.arg = arg;
    ucs_status_t us = ucp_ep_create(tp->worker, &ep, out);
    if (us == UCS_ERR_UNREACHABLE && tp->err_mode == 2) {
        /* Only transports without peer-failure support reach this peer
         * (shared memory in UCX 1.13): connect without it; wait() still
         * turns a vanished peer into REFIT_ETIMEDOUT. */
        H->log(1, UCXP, "peer '%s': no transport with peer error handling reaches it; "
               "connecting without (transport.ucx.error_handling: auto)", who);
        ep.err_mode = UCP_ERR_HANDLING_MODE_NONE;
        us = ucp_ep_create(tp->worker, &ep, out);
    }
    return us;
}

/* Fire-and-forget control message; its buffer is copied by UCX before
 * the call returns or is owned by the request until completion. */
/* user_data: the buffer, which starts with its transport. */
void ucxp_ctrl_done(void *request, ucs_status_t us, void *user_data)
{
    (void)us;
    refit_tp_t *tp = *(refit_tp_t **)user_data;
    if (tp->ctrl_inflight)
        tp->ctrl_inflight--;
    H->free(user_data);
    ucp_request_free(request);
}

int ucxp_ctrl_send(refit_tp_t *tp, ucp_ep_h ep, uint32_t type, uint64_t a, uint64_t b,
                   const void *tail, size_t tail_len)
{
    size_t n = sizeof(struct rtp_ctrl) + tail_len;
    unsigned char *buf = H->alloc(sizeof(tp) + n);
    if (!buf)
        return REFIT_ENOMEM;
    memcpy(buf, &tp, sizeof(tp));
    unsigned char *m = buf + sizeof(tp);
    rtp_ctrl_head(&tp->c, m, type, tail_len, a, b);
    if (tail_len)
        memcpy(m + sizeof(struct rtp_ctrl), tail, tail_len);
    ucp_request_param_t rp = {0};
    rp.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA |
                      UCP_OP_ATTR_FIELD_FLAGS;
    rp.cb.send = ucxp_ctrl_done;
    rp.user_data = buf;
    rp.flags = UCP_AM_SEND_FLAG_EAGER;
    ucs_status_ptr_t sp = ucp_am_send_nbx(ep, UCXP_AM_CTRL, NULL, 0, m, n, &rp);
    if (UCS_PTR_IS_PTR(sp)) {
        tp->ctrl_inflight++;
        return 0; /* ucxp_ctrl_done frees buf */
    }
    H->free(buf);
    return UCS_PTR_IS_ERR(sp) ? REFIT_ECONN : 0;
}

RTP_DEFINE_REVOKE_REGION()

ucs_status_t ucxp_am_ctrl_cb(void *arg, const void *header, size_t header_length, void *data,
                             size_t length, const ucp_am_recv_param_t *param)
{
    refit_tp_t *tp = arg;
    (void)header;
    (void)header_length;
    struct rtp_ctrl c; /* its len is not read: older peers send 0 */
    if ((param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) || length < sizeof(c))
        return UCS_OK;
    memcpy(&c, data, sizeof(c));
    if (c.type == CTRL_BYE) {
        tp->ctrl_dirty = 1;
        rtp_on_bye(&tp->c, c.sender); /* closed by ucxp_ctrl_work */
    } else if (c.type == CTRL_HELLO) {
        tp->ctrl_dirty = 1;
        struct rtp_watcher *old = rtp_watcher_find(&tp->c, c.sender);
        if (c.a != length - sizeof(c) || !c.a)
            return UCS_OK;
        void *addr = H->alloc(c.a);
        if (addr && old) {
            /* A known process connected again — after a failure, our
             * endpoint to it may be broken without our having seen it
             * yet — so revokes go through a new endpoint (ucxp_ctrl_work). */
            memcpy(addr, (char *)data + sizeof(c), c.a);
            H->free(old->addr);
            old->addr = addr;
            old->addr_len = c.a;
            old->refs++;
            old->dead = old->reachable = 0; /* failed: how to close the old endpoint */
            old->reopen = 1;
            return UCS_OK;
        }
        struct rtp_watcher *w = addr ? rtp_watcher_add(&tp->c, c.sender) : NULL;
        if (!w) {
            H->free(addr);
            return UCS_OK;
        }
        memcpy(addr, (char *)data + sizeof(c), c.a);
        w->addr = addr;
        w->addr_len = c.a;
    } else if (c.type == CTRL_REVOKE) {
        revoke_region(tp, c.sender, c.a, c.b);
    } else if (c.type == CTRL_ACK) {
        rtp_on_ack(&tp->c, c.sender, c.a);
    }
    return UCS_OK;
}

/* Control work that may not run inside a UCX callback: endpoints to new
 * watchers, acknowledgements after a flush.  Called under the lock. */
/* Flush the endpoint to p into a new one-shot request (ucxp_op_done counts
 * the completions into it; rp can carry a send after).  The request lives
 * on the heap, linked like any other: a wait that times out leaves its
 * operations in flight, and their completions — which UCX may deliver much
 * later, e.g. when a closed endpoint's pending queue is purged — must find
 * live memory, not a dead stack frame.  End it with ucxp_oneshot_end. */
struct refit_tp_req *ucxp_oneshot_flush(refit_tp_t *tp, refit_tp_peer_t *p, ucp_request_param_t *rp,
                                        const char *what)
{
    struct refit_tp_req *r = rtp_req_new(&tp->c, p, 0);
    if (!r)
        return NULL;
    memset(rp, 0, sizeof(*rp));
    rp->op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    rp->cb.send = ucxp_op_done;
    rp->user_data = r;
    ucxp_track(r, ucp_ep_flush_nbx(p->ep, rp), what);
    return r;
}

/* Frees r now, or hands it to its last completion (ucxp_op_done). */
void ucxp_oneshot_end(refit_tp_t *tp, struct refit_tp_req *r)
{
    if (r->pending)
        r->released = 1;
    else
        rtp_req_unlink_free(&tp->c, r);
}

size_t ucxp_ctrl_work(refit_tp_t *tp)
{
    if (tp->in_ctrl)
        return 0;
    tp->in_ctrl = 1;
    tp->ctrl_dirty = 0;
    size_t n = 0;
    for (struct rtp_watcher **pw = &tp->c.watchers; *pw;) {
        struct rtp_watcher *w = *pw;
        if (w->dead && w->refs <= 0) {
            *pw = w->next;
            if (w->ep)
                watcher_ep_close(w);
            H->free(w->addr);
            H->free(w);
            n++;
            continue;
        }
        if (w->reopen && w->ep)
            watcher_ep_close(w);
        if (w->reopen)
            w->failed = 0;
        w->reopen = 0;
        if (!w->ep && w->addr && !w->dead) {
            ucp_ep_h ep = NULL;
            if (ep_open(tp, w->addr, watcher_error_cb, tp, "watcher", &ep) != UCS_OK)
                w->dead = 1;
            else
                w->ep = ep;
            w->reachable = w->ep != NULL;
            H->free(w->addr);
            w->addr = NULL;
            n++;
        }
        pw = &w->next;
    }
    n += rtp_acks_run(&tp->c);
    tp->in_ctrl = 0;
    return n;
}

/* rtp_ops.ack: nothing of ours may still touch the region when the owner
 * unmaps it, so the endpoint is flushed before acknowledging. */
void ucxp_ack_cb(refit_tp_t *tp, refit_tp_peer_t *p, uint64_t seq)
{
    if (!p || !p->ep || p->err != UCS_OK)
        return;
    ucp_request_param_t rp;
    struct refit_tp_req *r = ucxp_oneshot_flush(tp, p, &rp, "flush before ack");
    if (!r)
        return; /* out of memory: no ack; the owner's revoke times out */
    rtp_spin(&tp->c, &r->pending, NULL, tp->c.timeout_ms);
    if (!r->pending && !r->status && p->err == UCS_OK)
        ucxp_ctrl_send(tp, p->ep, CTRL_ACK, seq, 0, NULL, 0);
    ucxp_oneshot_end(tp, r);
}

int ucxp_send_revoke_cb(refit_tp_t *tp, struct rtp_watcher *w, uint64_t region, uint64_t seq)
{
    return ucxp_ctrl_send(tp, w->ep, CTRL_REVOKE, region, seq, NULL, 0);
}

/* fini: the watcher's endpoint is closed before the worker goes. */
void ucxp_watcher_close(refit_tp_t *tp, struct rtp_watcher *w)
{
    if (!w->ep)
        return;
    ucp_request_param_t rp = {0};
    rp.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    rp.flags = UCP_EP_CLOSE_FLAG_FORCE;
    ucs_status_ptr_t sp = ucp_ep_close_nbx(w->ep, &rp);
    if (UCS_PTR_IS_PTR(sp)) {
        while (ucp_request_check_status(sp) == UCS_INPROGRESS)
            ucp_worker_progress(tp->worker);
        ucp_request_free(sp);
    }
}

int ucxp_connect(refit_tp_t *tp, const void *addr, size_t len, const char *peer_name,
                 refit_tp_peer_t **out)
{
    const char *who = peer_name ? peer_name : "?";
    if (!tp || !addr || !out)
        return H->error_set(REFIT_EINVAL, "%s: connect without an address", UCXP);
    struct rtp_addr_hdr h;
    int rc = rtp_address_parse(&tp->c, UCXP_ADDR_MAGIC, UCXP_BLOB_VERSION, SIZE_MAX, "a ucx worker address", addr,
                               len, who, &h);
    if (rc)
        return rc;
    refit_tp_peer_t *p = H->calloc(1, sizeof(*p));
    if (!p || !(p->name = rtp_strdup(who))) {
        H->free(p);
        return H->error_set(REFIT_ENOMEM, "%s: out of memory", UCXP);
    }
    p->tp = tp;
    p->owner_id = h.tp_id;
    ucs_status_t us = ep_open(tp, (const char *)addr + sizeof(h), ep_error_cb, p, who, &p->ep);
    if (us != UCS_OK) {
        H->free(p->name);
        H->free(p);
        return ucxp_err(ucxp_status_of(us), us, "ucp_ep_create", NULL, who);
    }
    /* Hello: the owner will tell us when it deregisters a region. */
    if (ucxp_ctrl_send(tp, p->ep, CTRL_HELLO, tp->addr_len, 0, tp->addr, tp->addr_len))
        H->log(2, UCXP, "peer '%s': hello not sent; its deregistrations will not reach us", who);
    p->next = tp->peers;
    tp->peers = p;
    *out = p;
    return 0;
}

/* Keys die before their endpoint (UCX's rule); requests forget the peer. */
void ucxp_peer_free(refit_tp_t *tp, refit_tp_peer_t *p)
{
    rtp_forget_peer(&tp->c, p, p->name, 1);
    for (refit_tp_rkey_t *k = p->rkeys; k; k = k->next) {
        if (k->rk)
            ucp_rkey_destroy(k->rk);
        k->rk = NULL;
        k->peer = NULL; /* release_rkey frees the handle alone */
    }
    if (tp->worker && p->ep) {
        if (p->err == UCS_OK)
            ucxp_ctrl_send(tp, p->ep, CTRL_BYE, 0, 0, NULL, 0);
        ucxp_peer_close(tp, p);
    }
    H->free(p->name);
    H->free(p);
}

void ucxp_disconnect(refit_tp_t *tp, refit_tp_peer_t *p)
{
    if (!tp || !p)
        return;
    RTP_LIST_UNLINK(refit_tp_peer_t, tp->peers, p, next);
    ucxp_peer_free(tp, p);
}
