/* ofi_cq.c — the ofi plugin's completion queue: receives posted, every
 * completion (RMA, sends, receives, control) routed to its operation, and
 * the errors that fail a peer; control work deferred out of the drain. */
#include "ofi_int.h"

/* ------------------------------------------------------------------ */
/* Completion queue */

int ofip_post_recv(refit_tp_t *tp, struct ofip_op *op)
{
    for (;;) {
        ssize_t ret = fi_recv(tp->ep, op->buf, tp->recv_len, NULL, FI_ADDR_UNSPEC, &op->fctx);
        if (ret == 0)
            return 0;
        if (ret != -FI_EAGAIN)
            return ofip_fi_fail(tp, REFIT_EPLUGIN, (int)ret, "fi_recv", NULL);
        fi_cq_read(tp->cq, NULL, 0); /* drives progress for providers that need it */
    }
}

/* The connection to p is gone or stalled: every later call fails at once
 * with REFIT_ECONN until the caller reconnects (disconnect then drops the
 * address from the vector, so the provider connects afresh). */
void ofip_peer_fail(refit_tp_peer_t *p, const char *why)
{
    if (p && !p->failed) {
        p->failed = 1;
        snprintf(p->why, sizeof(p->why), "%s", why);
    }
}

static void op_finish(refit_tp_t *tp, struct ofip_op *op, size_t len, int err, const char *why)
{
    switch (op->kind) {
    case OP_CTRL:
        if (err)
            H->log(0, OFIP, "control message not delivered: %s", why);
        if (tp->ctrl_inflight)
            tp->ctrl_inflight--;
        for (struct ofip_op **po = &tp->ctrl_ops; *po; po = &(*po)->next)
            if (*po == op) {
                *po = op->next;
                break;
            }
        H->free(op->buf);
        H->free(op);
        return;
    case OP_RECV:
        if (err) {
            if (err != FI_ECANCELED)
                H->log(2, OFIP, "receive of a notification failed: %s", why);
            return;
        }
        ofip_on_message(tp, op->buf, len);
        if (ofip_post_recv(tp, op))
            H->log(3, OFIP, "could not repost a receive buffer: notifications may be lost");
        return;
    case OP_RMA:
    case OP_SEND: {
        struct refit_tp_req *r = op->req;
        if (op->peer && op->is_write && op->peer->writes_pending)
            op->peer->writes_pending--;
        if (op->kind == OP_RMA && r->peer && r->peer->ops_pending)
            r->peer->ops_pending--;
        if (err) {
            const char *who = r->peer ? r->peer->name : "?";
            int st = ofip_status_of(err);
            /* Our own disconnect fails its requests with ECANCELED first and
             * forgets the peer (rtp_forget_peer); an operation the provider
             * cancels while the peer is still ours was dropped with its
             * connection (tcp: a killed peer), which the contract calls
             * ECONN (docs/transports.md, the reconnect rule). */
            if (st == REFIT_ECANCELED && r->peer)
                st = REFIT_ECONN;
            rtp_req_fail(r, st, "%s(%s): %s with peer '%s' failed: %s", OFIP, ofip_prov_of(tp),
                     op->kind == OP_SEND ? "notification" : op->is_write ? "write" : "read", who, why);
            if (st == REFIT_ECONN)
                ofip_peer_fail(r->peer, why);
        }
        H->free(op->kind == OP_SEND ? op->buf : NULL);
        op->buf = NULL;
        if (r->pending)
            r->pending--;
        if (!r->pending && r->released)
            rtp_req_unlink_free(&tp->c, r);
        return;
    }
    }
}

static void drain_error(refit_tp_t *tp)
{
    struct fi_cq_err_entry e;
    memset(&e, 0, sizeof(e));
    ssize_t ret = fi_cq_readerr(tp->cq, &e, 0);
    if (ret < 0)
        return;
    char pbuf[160];
    const char *ptext = fi_cq_strerror(tp->cq, e.prov_errno, e.err_data, pbuf, sizeof(pbuf));
    char why[320];
    snprintf(why, sizeof(why), "%s (fi errno %d; provider: %s, prov_errno %d)", fi_strerror(e.err),
             e.err, ptext ? ptext : "?", e.prov_errno);
    if (e.op_context)
        op_finish(tp, e.op_context, 0, e.err ? e.err : FI_EIO, why);
    else
        H->log(3, OFIP, "completion error without context: %s", why);
}

/* Reads every completion available, then does deferred control work;
 * returns how much happened. */
size_t ofip_cq_drain(refit_tp_t *tp)
{
    size_t n = ofip_cq_drain_once(tp);
    if (tp->c.acks && !tp->in_ctrl)
        n += ofip_ctrl_work(tp);
    return n;
}

size_t ofip_cq_drain_once(refit_tp_t *tp)
{
    struct fi_cq_data_entry ent[64];
    size_t total = 0;
    for (;;) {
        ssize_t n = fi_cq_read(tp->cq, ent, 64);
        if (n == -FI_EAGAIN)
            return total;
        if (n == -FI_EAVAIL) {
            drain_error(tp);
            total++;
            continue;
        }
        if (n < 0) {
            H->log(3, OFIP, "fi_cq_read: %s", fi_strerror((int)-n));
            return total;
        }
        for (ssize_t i = 0; i < n; i++)
            op_finish(tp, ent[i].op_context, ent[i].len, 0, NULL);
        total += (size_t)n;
        if (n < 64)
            return total;
    }
}
