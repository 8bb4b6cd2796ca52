/* tcp_int.h — internals of the tcp transport shared by its files: the wire
 * format, the process object (refit_tp_t), regions, peers and requests.
 *
 * Wire protocol (all integers little-endian), per TCP connection:
 *   handshake  client HELLO (40 bytes, then the client's name: HELLO[5]
 *              bytes, at most 255, no NUL) → server CHALLENGE → client MAC
 *              → server MAC (HMAC-SHA-256 over both nonces, both instance
 *              ids and the client's name with the shared token or local
 *              secret; mutual, so neither side talks to an impostor, and
 *              the name is the one the connection authenticated with)
 *   requests   a 64-byte header, for WRITE and NOTIFY followed by len bytes
 *   replies    a 16-byte header {status, len}, for a READ that succeeded
 *              followed by len bytes
 * Requests on one connection are served in order, so replies carry no tag. */
#ifndef TCP_INT_H
#define TCP_INT_H

#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

#include "refit/plugin.h"
#include "refit/transport.h"
#include "../common/tp_nq.h"

#define TCP_NAME "tcp"
#define TCP_MAGIC_HELLO 0x31544652u /* "RFT1" */
#define TCP_MAGIC_ADDR 0x41544652u  /* "RFTA" */
#define TCP_MAGIC_RKEY 0x4b544652u  /* "RFTK" */
#define TCP_WIRE_VERSION 2 /* 2: the client's name in the handshake */
#define TCP_NONCE 16
#define TCP_SECRET 16
#define TCP_MAC 32
#define TCP_REQ_SIZE 64
#define TCP_REP_SIZE 16
#define TCP_ADDR_SIZE 40
#define TCP_RKEY_SIZE 56
#define TCP_MAX_NOTIFY 65536
#define TCP_RBUF 262144

enum tcp_role { TCP_ROLE_DATA = 1, TCP_ROLE_CTL = 2 };
enum tcp_wop { TCP_W_READ = 1, TCP_W_WRITE = 2, TCP_W_NOTIFY = 3 };
/* Reply status on the wire; translated to REFIT_E* by the client. */
enum tcp_wstatus {
    TCP_S_OK = 0,
    TCP_S_NOREGION = 1, /* no such region id: a forged or foreign key */
    TCP_S_STALE = 2,    /* region deregistered (generation mismatch) */
    TCP_S_FORGED = 3,   /* secret does not match */
    TCP_S_RANGE = 4,    /* offset + length beyond the region */
    TCP_S_BADOP = 5,
    TCP_S_TOOBIG = 6,
    TCP_S_NOMEM = 7,
    TCP_S_FULL = 8      /* the receiver's notification queue is full */
};

extern const struct refit_host *tcp_h; /* set by load() */

struct tcp_iov {
    const void *p;
    size_t n;
};
void tcp_sha256(const void *data, size_t len, uint8_t out[32]);
void tcp_hmac_sha256(const void *key, size_t klen, const struct tcp_iov *msg, size_t n, uint8_t out[32]);
int tcp_ct_equal(const void *a, const void *b, size_t n);

/* A buffered reader: small headers are read many at a time, payloads of
 * more than the buffered remainder go straight into their destination. */
struct tcp_rbuf {
    uint8_t *b;
    size_t cap, beg, end;
};

/* One registered region as the server sees it. */
struct tcp_slot {
    void *ptr;
    uint64_t len, gen;
    uint8_t secret[TCP_SECRET];
    uint32_t refs; /* server transfers in progress */
    bool live;
};

struct refit_tp_region {
    uint32_t magic;
    refit_tp_t *tp;
    uint64_t id, gen, len;
    void *ptr;
    uint8_t secret[TCP_SECRET];
};

struct refit_tp_rkey {
    uint32_t magic;
    refit_tp_peer_t *peer;
    uint64_t id, gen, len;
    uint8_t secret[TCP_SECRET];
};

struct tcp_sconn; /* a served connection (tcp_server.c) */
struct refit_tp {
    char name[64]; /* for messages (may be cut short) */
    char *self;    /* the whole name, sent in our handshakes */
    int64_t timeout_ms;
    /* configuration */
    int streams;
    uint64_t sndbuf, rcvbuf, chunk, batch_bytes;
    int max_conns;   /* authenticated connections served at once */
    int max_unauth;  /* connections still in their handshake */
    int64_t hs_timeout_ms; /* a whole server-side handshake */
    uint8_t *token; /* the HMAC key: the token, or the local secret */
    size_t token_len;
    char *secret_path; /* the local secret's file when there is no token */
    uint64_t instance;
    /* listener */
    int lfd;
    int wake[2];
    struct sockaddr_storage adv; /* advertised address (port set) */
    char where[80];              /* "127.0.0.1:4242" for messages */
    pthread_t acceptor;
    bool acceptor_started;
    /* regions and served connections, under lock */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct tcp_slot *slots;
    size_t n_slots;
    uint64_t next_gen;
    struct tcp_sconn *conns;
    int n_conns, n_unauth;
    bool stopping;
    uint64_t refused_full, refused_slow, refused_unauth; /* for rate-limited logs */
    /* notifications received, under nlock (tcp_notify.c) */
    pthread_mutex_t nlock;
    pthread_cond_t ncond;
    struct rtp_nq nq; /* tp_nq.h; a note's from: its sender's authenticated name */
    /* peers connected from here */
    pthread_mutex_t plock;
    refit_tp_peer_t *peers;
};

/* A piece of a descriptor carried by one wire request. */
struct tcp_chunk {
    uint32_t desc;
    uint64_t off, len;
};

struct refit_tp_req {
    refit_tp_peer_t *peer; /* NULL once the peer is gone */
    struct refit_tp_req *qnext;              /* queue of requests with chunks not taken */
    struct refit_tp_req *lprev, *lnext;      /* all live requests of the peer */
    struct refit_tp_desc *d;
    size_t n_desc;
    struct tcp_chunk *c;
    size_t n_chunks, cursor, done;
    int status;
    bool orphan; /* freed by the caller before completion */
    char msg[512];
};

struct tcp_stream {
    refit_tp_peer_t *peer;
    int fd, idx;
    struct tcp_rbuf rb;
    pthread_t th;
    bool started;
};

struct refit_tp_peer {
    refit_tp_t *tp;
    char name[96];
    uint64_t instance;
    struct sockaddr_storage sa;
    struct tcp_stream *st;
    int n_st;
    int ctl_fd;
    struct tcp_rbuf ctl_rb;
    pthread_mutex_t ctl_lock;
    /* work queue and completion, under lock */
    pthread_mutex_t lock;
    pthread_cond_t work, done;
    struct refit_tp_req *qhead, *qtail, *live;
    uint64_t outstanding; /* chunks posted and not completed */
    int err;
    char errmsg[512];
    bool stop;
    refit_tp_peer_t *next;
};

/* tcp_io.c */
int tcp_io_err(refit_tp_t *tp, const char *peer, const char *what, int err);
/* The same message into buf; returns the REFIT_E* code. */
int tcp_io_errfmt(char *buf, size_t cap, refit_tp_t *tp, const char *peer, const char *what, int err);
int64_t tcp_now_ms(void);
void tcp_deadline(struct timespec *ts, int64_t ms);
void tcp_cond_init(pthread_cond_t *c);
int tcp_send_all(int fd, const void *p, size_t n);
int tcp_send_iov(int fd, struct iovec *iov, int n);
int tcp_rb_init(struct tcp_rbuf *rb);
void tcp_rb_free(struct tcp_rbuf *rb);
/* Read exactly n bytes.  0 or -errno (ECONNRESET for an orderly close);
 * dst NULL discards. */
int tcp_rb_read(int fd, struct tcp_rbuf *rb, void *dst, size_t n);
/* The same, all of it before deadline_ms (tcp_now_ms clock; 0: none), else
 * -ETIMEDOUT: a peer trickling a byte at a time cannot stretch it. */
int tcp_rb_read_by(int fd, struct tcp_rbuf *rb, void *dst, size_t n, int64_t deadline_ms);
size_t tcp_rb_avail(const struct tcp_rbuf *rb);
int tcp_set_timeouts(int fd, int64_t ms);
void tcp_sock_tune(refit_tp_t *tp, int fd);
int tcp_dial(refit_tp_t *tp, const struct sockaddr_storage *sa, const char *peer, int *out);
int tcp_handshake_client(refit_tp_t *tp, int fd, struct tcp_rbuf *rb, uint32_t role,
                         uint64_t expect, const char *peer);
/* The server's side, all of it before deadline dl (tcp_now_ms clock). */
int tcp_handshake_server(refit_tp_t *tp, int fd, struct tcp_rbuf *rb, uint32_t *role,
                         uint64_t *client, char *name, int64_t dl);
int tcp_fill_random(void *p, size_t n);
void tcp_sa_str(const struct sockaddr_storage *sa, char *buf, size_t cap);
int tcp_wstatus_to_refit(int s);
const char *tcp_wstatus_str(int s);

static inline void tcp_put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline void tcp_put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint32_t tcp_get32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}
static inline uint64_t tcp_get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* tcp_secret.c: the per-user secret of this host, the key when no token
 * is configured (secret_dir NULL: ${TMPDIR:-/tmp}/refit-<uid>). */
int tcp_local_secret(refit_tp_t *tp, const char *secret_dir);

/* tcp_notify.c: queue m (malloc'ed, len and data set; taken either way)
 * as sent by `from`: TCP_S_OK, or TCP_S_FULL when it was dropped. */
int tcp_nq_push(refit_tp_t *tp, const char *from, struct rtp_notice *m);
/* poll_notify[_from] (from NULL: not wanted). */
int tcp_nq_poll(refit_tp_t *tp, void *buf, size_t cap, size_t *len, char *from, size_t from_cap,
                int64_t timeout_ms);
int tcp_notify_stats(refit_tp_t *tp, struct refit_tp_notify_stats *out);
void tcp_nq_fini(refit_tp_t *tp);

/* tcp_server.c */
int tcp_server_start(refit_tp_t *tp);
void tcp_server_stop(refit_tp_t *tp);
/* Shut down every served connection holding a reference to slot, so that
 * its transfer ends now.  Called with tp->lock held. */
void tcp_server_cut_holders(refit_tp_t *tp, uint64_t slot);

/* tcp_client.c */
int tcp_connect(refit_tp_t *tp, const void *addr, size_t len, const char *peer_name,
                refit_tp_peer_t **out);
void tcp_disconnect(refit_tp_t *tp, refit_tp_peer_t *p);
int tcp_unpack_rkey(refit_tp_t *tp, refit_tp_peer_t *p, const void *buf, size_t len,
                    refit_tp_rkey_t **out);
void tcp_release_rkey(refit_tp_t *tp, refit_tp_rkey_t *k);
int tcp_post(refit_tp_t *tp, refit_tp_peer_t *p, const struct refit_tp_desc *d, size_t n,
             refit_tp_req_t **out);
int tcp_test(refit_tp_t *tp, refit_tp_req_t *r);
int tcp_wait(refit_tp_t *tp, refit_tp_req_t *r, int64_t timeout_ms);
void tcp_req_free(refit_tp_t *tp, refit_tp_req_t *r);
int tcp_notify(refit_tp_t *tp, refit_tp_peer_t *p, const void *msg, size_t len);

#define TCP_REGION_MAGIC 0x52474e31u
#define TCP_RKEY_OBJ_MAGIC 0x524b5931u

#endif
