/* ofi_int.h — what the files of the ofi transport plugin share (internal;
 * ofi.c's header comment explains the design): the plugin's objects, the
 * wire headers, and the functions one file calls in another.  Everything
 * here has hidden visibility: the plugin still exports one symbol. */
#ifndef REFIT_OFI_INT_H
#define REFIT_OFI_INT_H

#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_rma.h>

#include "refit/plugin.h"
#include "refit/status.h"
#include "refit/transport.h"
#include "tp_common.h"

/* The host table (logging, allocation, errors), set by ofip_load. */
extern const struct refit_host *ofip_host;
#define H ofip_host

#define OFIP "ofi"
#define OFIP_ADDR_MAGIC 0x414f5852u /* "RXOA" */
#define OFIP_RKEY_MAGIC 0x4b4f5852u /* "RXOK" */
#define OFIP_BLOB_VERSION 2
#define OFIP_API FI_VERSION(1, 9)
#define OFIP_MAX_ADDR 256
/* ------------------------------------------------------------------ */
/* Objects */

enum op_kind { OP_RMA = 1, OP_SEND, OP_RECV, OP_CTRL };

enum { MSG_NOTE = 1, MSG_HELLO, MSG_REVOKE, MSG_ACK, MSG_BYE };

/* Every message is struct rtp_ctrl, then len bytes: HELLO's address, a
 * NOTE's sender name (b bytes) and then its bytes. */

/* The context of one libfabric operation; fi_context2 first because the
 * provider may ask for FI_CONTEXT/FI_CONTEXT2 scratch space in it. */
struct ofip_op {
    struct fi_context2 fctx;
    uint8_t kind;
    uint8_t is_write;
    struct refit_tp_req *req; /* OP_RMA, OP_SEND */
    refit_tp_peer_t *peer;    /* OP_RMA writes, OP_SEND: per-peer accounting */
    void *buf;                /* OP_RECV buffer, OP_SEND copy */
    struct ofip_op *next;     /* OP_CTRL: in tp->ctrl_ops until complete */
};

struct refit_tp {
    struct fi_info *info;
    struct fid_fabric *fabric;
    struct fid_domain *domain;
    struct fid_ep *ep;
    struct fid_cq *cq;
    struct fid_av *av;
    char *name;
    uint64_t max_notify_len;
    uint64_t max_msg;
    uint64_t max_chunk;
    uint64_t mr_mode;
    uint64_t write_flags; /* FI_DELIVERY_COMPLETE when supported */
    int cuda_device;
    int hmem;
    uint64_t next_key;
    uint32_t memtypes;
    unsigned char addr[256];
    size_t addr_len;
    size_t n_recv;
    struct ofip_op *recv_ops;
    unsigned char *recv_bufs;
    struct refit_tp_peer *peers;
    uint64_t next_region_id;
    size_t recv_len;
    int in_ctrl;
    size_t ctrl_inflight; /* control sends not yet completed */
    struct ofip_op *ctrl_ops; /* ... and their operations (freed by fini if never completed) */
    struct refit_tp_region *kept; /* regions a dereg could not release (see ofip_dereg) */
    int64_t sleep_us;
    struct rtp_core c; /* requests, notices, watchers, acks, lock, thread */
};

struct refit_tp_region {
    struct fid_mr *mr;
    void *desc;
    void *ptr;
    size_t len;
    uint32_t memtype;
    uint64_t id, key;
    /* In tp->kept after a dereg that timed out (requests still in flight
     * into it): fini closes it once the endpoint is gone. */
    struct refit_tp_region *kept_next;
    int kept;
};

struct refit_tp_peer {
    refit_tp_t *tp;
    struct refit_tp_peer *next;
    fi_addr_t fa;
    char *name;
    size_t writes_pending; /* WRITEs and sends not yet completed */
    size_t ops_pending;    /* every RMA operation not yet completed */
    uint64_t owner_id;     /* transport id in its address */
    struct refit_tp_rkey *rkeys;
    int failed;
    char why[200];
};

struct refit_tp_rkey {
    refit_tp_peer_t *peer;
    struct refit_tp_rkey *next;
    int stale;
    uint64_t base; /* remote address of offset 0 (virtual or 0) */
    uint64_t len, id, key;
};

/* What a request (struct refit_tp_req, tp_common.h) carries in ext[]. */
struct ofip_req_ext {
    size_t n_ops;
    struct ofip_op ops[]; /* one per chunk */
};

static inline struct ofip_req_ext *req_ext(struct refit_tp_req *r)
{
    return (struct ofip_req_ext *)(void *)r->ext;
}

/* A packed remote key: struct rtp_rkey_hdr alone (word: the provider's key). */


/* The plugin's options as read from its configuration (ofi.c), which
 * choosing the provider and domain (ofi_fabric.c) follows. */
struct ofip_opts {
    const char *provider;
    const char *domain;
    const char *hmem;
    int64_t recv_depth;
    int status;
};
/* ofi.c: configuration, init/fini, progress, descriptor */
const char *ofip_prov_of(const refit_tp_t *tp);
int ofip_fi_fail(const refit_tp_t *tp, int status, int ret, const char *what, const char *peer);
int ofip_status_of(int ret);
struct refit_tp_req *ofip_req_new(refit_tp_t *tp, refit_tp_peer_t *p, size_t n_ops);

/* ofi_fabric.c: provider choice and the fabric objects */
int ofip_choose_info(refit_tp_t *tp, const struct refit_tp_init_args *a, const struct ofip_opts *o);
int ofip_open_objects(refit_tp_t *tp, int64_t recv_depth);

/* ofi_cq.c: the completion queue */
int ofip_post_recv(refit_tp_t *tp, struct ofip_op *op);
void ofip_peer_fail(refit_tp_peer_t *p, const char *why);
size_t ofip_cq_drain(refit_tp_t *tp);
size_t ofip_cq_drain_once(refit_tp_t *tp);

/* ofi_peer.c: peers and control messages (hello, revoke, ack, bye, notes) */
void ofip_on_message(refit_tp_t *tp, const unsigned char *buf, size_t len);
size_t ofip_ctrl_work(refit_tp_t *tp);
void ofip_ack_cb(refit_tp_t *tp, refit_tp_peer_t *p, uint64_t seq);
int ofip_send_revoke_cb(refit_tp_t *tp, struct rtp_watcher *w, uint64_t region, uint64_t seq);
int ofip_connect(refit_tp_t *tp, const void *addr, size_t len, const char *peer_name,
                 refit_tp_peer_t **out);
void ofip_disconnect(refit_tp_t *tp, refit_tp_peer_t *p);

/* ofi_mem.c: registration and remote keys */
int ofip_reg(refit_tp_t *tp, void *ptr, size_t len, uint32_t memtype, refit_tp_region_t **out);
int ofip_dereg(refit_tp_t *tp, refit_tp_region_t *r);
int ofip_pack_rkey(refit_tp_t *tp, refit_tp_region_t *r, void *buf, size_t *len);
int ofip_unpack_rkey(refit_tp_t *tp, refit_tp_peer_t *p, const void *buf, size_t len,
                     refit_tp_rkey_t **out);
void ofip_release_rkey(refit_tp_t *tp, refit_tp_rkey_t *k);

/* ofi_xfer.c: the data path: posts, waits, notifications */
int ofip_post(refit_tp_t *tp, refit_tp_peer_t *p, const struct refit_tp_desc *d, size_t n,
              refit_tp_req_t **out);
int ofip_test(refit_tp_t *tp, refit_tp_req_t *r);
int ofip_wait(refit_tp_t *tp, refit_tp_req_t *r, int64_t timeout_ms);
int ofip_notify(refit_tp_t *tp, refit_tp_peer_t *p, const void *msg, size_t len);

#endif
