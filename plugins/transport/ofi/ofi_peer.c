/* ofi_peer.c — the ofi plugin's peers: connect/disconnect through the
 * address vector, and the messages they exchange (hello, revoke, ack, bye
 * and notifications) with their handlers (ofi.c's header comment). */
#include "ofi_int.h"

/* ------------------------------------------------------------------ */
/* Control messages (see the top) */

/* Send a message whose buffer the completion frees (OP_CTRL). */
static int msg_send(refit_tp_t *tp, fi_addr_t to, uint32_t type, uint64_t a, uint64_t b,
                    const void *tail, size_t tail_len)
{
    struct ofip_op *op = H->calloc(1, sizeof(*op));
    unsigned char *m = H->alloc(sizeof(struct rtp_ctrl) + tail_len);
    if (!op || !m) {
        H->free(op);
        H->free(m);
        return REFIT_ENOMEM;
    }
    rtp_ctrl_head(&tp->c, m, type, tail_len, a, b);
    if (tail_len)
        memcpy(m + sizeof(struct rtp_ctrl), tail, tail_len);
    op->kind = OP_CTRL;
    op->buf = m;
    tp->ctrl_inflight++;
    op->next = tp->ctrl_ops;
    tp->ctrl_ops = op;
    /* A goodbye is a courtesy: the peer may have exited already, and the
     * provider would spend the whole timeout trying to reach it. */
    int64_t deadline = rtp_now_ms() + (type == MSG_BYE ? 200 : tp->c.timeout_ms);
    ssize_t ret;
    while ((ret = fi_send(tp->ep, m, sizeof(struct rtp_ctrl) + tail_len, NULL, to, &op->fctx)) == -FI_EAGAIN &&
           rtp_now_ms() < deadline)
        ofip_cq_drain_once(tp);
    if (ret) {
        tp->ctrl_inflight--;
        tp->ctrl_ops = op->next;
        H->free(m);
        H->free(op);
        return REFIT_ECONN;
    }
    return 0;
}

RTP_DEFINE_REVOKE_REGION()

static void on_hello(refit_tp_t *tp, const struct rtp_ctrl *h, const unsigned char *addr)
{
    if (rtp_watcher_rehello(&tp->c, h->sender))
        return;
    struct rtp_watcher *w = rtp_watcher_add(&tp->c, h->sender);
    if (!w)
        return;
    fi_addr_t fa;
    if (fi_av_insert(tp->av, addr, 1, &fa, 0, NULL) != 1) {
        rtp_watcher_discard(&tp->c, w);
        return;
    }
    w->fa = fa;
    w->reachable = 1;
}

/* A notification: the sender's name (h->b bytes), then its bytes. */
static void on_note(refit_tp_t *tp, const struct rtp_ctrl *h, const unsigned char *tail)
{
    char from[REFIT_TP_NAME_MAX + 1] = "?";
    if (h->b > REFIT_TP_NAME_MAX || h->b > h->len)
        return; /* not our format */
    if (!memchr(tail, 0, h->b)) {
        memcpy(from, tail, h->b);
        from[h->b] = 0;
    }
    size_t len = h->len - h->b;
    if (len > tp->max_notify_len)
        rtp_notice_drop_big(&tp->c, from, len);
    else
        rtp_notice_push(&tp->c, from, tail + h->b, len);
}

void ofip_on_message(refit_tp_t *tp, const unsigned char *buf, size_t len)
{
    struct rtp_ctrl h;
    if (len < sizeof(h))
        return;
    memcpy(&h, buf, sizeof(h));
    if (h.len != len - sizeof(h))
        return; /* not ours, or truncated */
    const unsigned char *tail = buf + sizeof(h);
    if (h.type == MSG_NOTE) {
        on_note(tp, &h, tail);
    } else if (h.type == MSG_HELLO && h.len && h.len <= OFIP_MAX_ADDR) {
        on_hello(tp, &h, tail);
    } else if (h.type == MSG_BYE) {
        rtp_on_bye(&tp->c, h.sender);
    } else if (h.type == MSG_REVOKE) {
        revoke_region(tp, h.sender, h.a, h.b);
    } else if (h.type == MSG_ACK) {
        rtp_on_ack(&tp->c, h.sender, h.a);
    }
}

/* Acknowledge revokes once nothing of ours to that peer is in flight. */
size_t ofip_ctrl_work(refit_tp_t *tp)
{
    if (tp->in_ctrl || !tp->c.acks)
        return 0;
    tp->in_ctrl = 1;
    size_t n = rtp_acks_run(&tp->c);
    tp->in_ctrl = 0;
    return n;
}

void ofip_ack_cb(refit_tp_t *tp, refit_tp_peer_t *p, uint64_t seq)
{
    if (p && !p->failed && !rtp_spin(&tp->c, &p->ops_pending, NULL, tp->c.timeout_ms))
        msg_send(tp, p->fa, MSG_ACK, seq, 0, NULL, 0);
}

int ofip_send_revoke_cb(refit_tp_t *tp, struct rtp_watcher *w, uint64_t region, uint64_t seq)
{
    return msg_send(tp, w->fa, MSG_REVOKE, region, seq, NULL, 0);
}

/* ------------------------------------------------------------------ */
/* Peers */

int ofip_connect(refit_tp_t *tp, const void *addr, size_t len, const char *peer_name,
                 refit_tp_peer_t **out)
{
    const char *who = peer_name ? peer_name : "?";
    if (!tp || !addr || !out)
        return H->error_set(REFIT_EINVAL, "%s: connect without an address", OFIP);
    struct rtp_addr_hdr h;
    int rc = rtp_address_parse(&tp->c, OFIP_ADDR_MAGIC, OFIP_BLOB_VERSION, sizeof(tp->addr), "an ofi address", addr,
                               len, who, &h);
    if (rc)
        return rc;
    refit_tp_peer_t *p = H->calloc(1, sizeof(*p));
    if (!p || !(p->name = rtp_strdup(who))) {
        H->free(p);
        return H->error_set(REFIT_ENOMEM, "%s: out of memory", OFIP);
    }
    /* The address vector checks the format of the provider's address. */
    int ret = fi_av_insert(tp->av, (const char *)addr + sizeof(h), 1, &p->fa, 0, NULL);
    if (ret != 1) {
        H->free(p->name);
        H->free(p);
        return ofip_fi_fail(tp, REFIT_EPROTO, ret < 0 ? ret : FI_EINVAL, "fi_av_insert", who);
    }
    p->tp = tp;
    p->owner_id = h.tp_id;
    /* Hello: the owner tells us when it deregisters a region. */
    if (msg_send(tp, p->fa, MSG_HELLO, 0, 0, tp->addr, tp->addr_len))
        H->log(2, OFIP, "peer '%s': hello not sent; its deregistrations will not reach us", who);
    p->next = tp->peers;
    tp->peers = p;
    *out = p;
    return 0;
}

void ofip_disconnect(refit_tp_t *tp, refit_tp_peer_t *p)
{
    if (!tp || !p)
        return;
    RTP_LIST_UNLINK(refit_tp_peer_t, tp->peers, p, next);
    rtp_forget_peer(&tp->c, p, p->name, 0);
    for (struct refit_tp_req *r = tp->c.reqs; r; r = r->next)
        for (size_t i = 0; i < req_ext(r)->n_ops; i++)
            if (req_ext(r)->ops[i].peer == p)
                req_ext(r)->ops[i].peer = NULL;
    for (refit_tp_rkey_t *k = p->rkeys; k; k = k->next)
        k->peer = NULL;
    /* The address stays in the vector: the bye may still be in flight.
     * (Removing a failed peer's address does not help: libfabric 1.17's
     * rxm keeps its connection by address and hands it back on the next
     * insert; see transports.md on what ofi can and cannot recover.) */
    if (!p->failed)
        msg_send(tp, p->fa, MSG_BYE, 0, 0, NULL, 0);
    H->free(p->name);
    H->free(p);
}
