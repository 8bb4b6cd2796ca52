/* cuda_ipc_bell.c — the doorbell ops of the `cuda_ipc` transport
 * (refit_transport_ops bell_*): a page of POSIX shared memory holding the
 * counter and a futex word.  The creator rings (stores the counter, bumps
 * the futex word, wakes every waiter); a process of the same host opens
 * the page by its name and waits on the futex word — no store round trip
 * and no polling between a publisher's ring and a receiver's wake-up.
 *
 * The handle is the page's name (random, 0600) and the host's boot id, so
 * that a handle from another host (or from before a reboot) is refused
 * rather than opened by a name that happens to exist.  The creator's close
 * unlinks the name: processes that opened it keep their mapping (their
 * waits time out, nothing rings any more) and new opens get REFIT_ENOENT. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "cuda_ipc.h"

#define BELL_MAGIC 0x42494352u /* "RCIB" */
#define BELL_VERSION 1

/* The shared page. */
struct bell_page {
    uint32_t magic;
    uint32_t futex; /* bumped by every ring: what waiters sleep on */
    uint64_t value; /* the counter */
};

/* The handle bell_pack writes and bell_open reads. */
struct bell_handle {
    uint32_t magic;
    uint16_t version;
    uint16_t pad;
    char boot_id[40];
    char name[48]; /* "/refit-bell-<pid>-<random>", NUL-terminated */
};

struct refit_tp_bell {
    struct bell_page *pg;
    int creator;
    struct bell_handle h;
};

static void boot_id(char out[40])
{
    out[0] = 0;
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
    if (!f)
        return;
    if (!fgets(out, 40, f))
        out[0] = 0;
    out[strcspn(out, "\n")] = 0;
    fclose(f);
}

static int map_page(int fd, struct bell_page **out)
{
    void *p = mmap(NULL, sizeof(struct bell_page), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED)
        return H->error_set(REFIT_EIO, "%s: doorbell: mmap: %s", CIPC, strerror(errno));
    *out = p;
    return 0;
}

int cipc_bell_create(refit_tp_t *tp, refit_tp_bell_t **out)
{
    (void)tp;
    refit_tp_bell_t *b = H->calloc(1, sizeof(*b));
    if (!b)
        return H->error_set(REFIT_ENOMEM, "%s: doorbell", CIPC);
    uint64_t rnd = 0;
    if (getrandom(&rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        rnd = (uint64_t)time(NULL) ^ ((uint64_t)(uintptr_t)b << 16);
    b->h = (struct bell_handle){.magic = BELL_MAGIC, .version = BELL_VERSION};
    boot_id(b->h.boot_id);
    snprintf(b->h.name, sizeof(b->h.name), "/refit-bell-%d-%016" PRIx64, (int)getpid(), rnd);
    int fd = shm_open(b->h.name, O_RDWR | O_CREAT | O_EXCL, 0600);
    int rc = 0;
    if (fd < 0)
        rc = H->error_set(REFIT_EIO, "%s: doorbell: shm_open %s: %s", CIPC, b->h.name, strerror(errno));
    else if (ftruncate(fd, sizeof(struct bell_page))) {
        rc = H->error_set(REFIT_EIO, "%s: doorbell: ftruncate %s: %s", CIPC, b->h.name, strerror(errno));
        close(fd);
    } else {
        rc = map_page(fd, &b->pg);
    }
    if (rc) {
        if (fd >= 0)
            shm_unlink(b->h.name);
        H->free(b);
        return rc;
    }
    __atomic_store_n(&b->pg->magic, BELL_MAGIC, __ATOMIC_RELEASE);
    b->creator = 1;
    *out = b;
    return 0;
}

int cipc_bell_pack(refit_tp_t *tp, refit_tp_bell_t *b, void *buf, size_t *len)
{
    (void)tp;
    size_t cap = *len;
    *len = sizeof(b->h);
    if (!buf)
        return 0;
    if (cap < sizeof(b->h))
        return H->error_set(REFIT_ETOOBIG, "%s: doorbell handle needs %zu bytes, %zu given", CIPC, sizeof(b->h),
                            cap);
    memcpy(buf, &b->h, sizeof(b->h));
    return 0;
}

int cipc_bell_open(refit_tp_t *tp, const void *buf, size_t len, refit_tp_bell_t **out)
{
    (void)tp;
    struct bell_handle h;
    if (len != sizeof(h))
        return H->error_set(REFIT_EPROTO, "%s: doorbell handle of %zu bytes (expected %zu)", CIPC, len, sizeof(h));
    memcpy(&h, buf, sizeof(h));
    char me[40];
    boot_id(me);
    if (h.magic != BELL_MAGIC || h.version != BELL_VERSION || !memchr(h.name, 0, sizeof(h.name)) ||
        strncmp(h.name, "/refit-bell-", 12) || strchr(h.name + 1, '/'))
        return H->error_set(REFIT_EPROTO, "%s: not a doorbell handle", CIPC);
    if (!memchr(h.boot_id, 0, sizeof(h.boot_id)) || strcmp(h.boot_id, me))
        return H->error_set(REFIT_ENOTSUP, "%s: doorbell %s is on another host", CIPC, h.name);
    int fd = shm_open(h.name, O_RDWR, 0);
    if (fd < 0)
        return H->error_set(errno == ENOENT ? REFIT_ENOENT : REFIT_EIO, "%s: doorbell %s: %s", CIPC, h.name,
                            strerror(errno));
    refit_tp_bell_t *b = H->calloc(1, sizeof(*b));
    if (!b) {
        close(fd);
        return H->error_set(REFIT_ENOMEM, "%s: doorbell", CIPC);
    }
    int rc = map_page(fd, &b->pg);
    if (!rc && __atomic_load_n(&b->pg->magic, __ATOMIC_ACQUIRE) != BELL_MAGIC) {
        munmap(b->pg, sizeof(*b->pg));
        rc = H->error_set(REFIT_EPROTO, "%s: doorbell %s: not a doorbell page", CIPC, h.name);
    }
    if (rc) {
        H->free(b);
        return rc;
    }
    b->h = h;
    *out = b;
    return 0;
}

int cipc_bell_ring(refit_tp_t *tp, refit_tp_bell_t *b, uint64_t value)
{
    (void)tp;
    if (!b->creator)
        return H->error_set(REFIT_EINVAL, "%s: doorbell %s: only its creator rings it", CIPC, b->h.name);
    uint64_t now = __atomic_load_n(&b->pg->value, __ATOMIC_ACQUIRE);
    if (value <= now)
        return H->error_set(REFIT_EINVAL, "%s: doorbell %s: rung with %" PRIu64 ", not above %" PRIu64, CIPC,
                            b->h.name, value, now);
    __atomic_store_n(&b->pg->value, value, __ATOMIC_RELEASE);
    __atomic_add_fetch(&b->pg->futex, 1, __ATOMIC_SEQ_CST);
    /* A shared mapping: not FUTEX_PRIVATE. */
    syscall(SYS_futex, &b->pg->futex, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
    return 0;
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int cipc_bell_wait(refit_tp_t *tp, refit_tp_bell_t *b, uint64_t seen, uint64_t *value, int64_t timeout_ms)
{
    (void)tp;
    double end = mono_s() + (double)(timeout_ms > 0 ? timeout_ms : 0) / 1e3;
    for (;;) {
        /* The futex word before the counter: a ring between this load and
         * the sleep changes the word, and the sleep returns at once. */
        uint32_t f = __atomic_load_n(&b->pg->futex, __ATOMIC_ACQUIRE);
        uint64_t v = __atomic_load_n(&b->pg->value, __ATOMIC_ACQUIRE);
        if (v > seen) {
            *value = v;
            return 0;
        }
        double left = end - mono_s();
        if (left <= 0)
            return H->error_set(REFIT_ETIMEDOUT, "%s: doorbell %s: not rung above %" PRIu64 " within %" PRId64
                                " ms", CIPC, b->h.name, seen, timeout_ms);
        struct timespec ts = {(time_t)left, (long)((left - (double)(time_t)left) * 1e9)};
        if (syscall(SYS_futex, &b->pg->futex, FUTEX_WAIT, f, &ts, NULL, 0) && errno != EAGAIN &&
            errno != EINTR && errno != ETIMEDOUT)
            return H->error_set(REFIT_EIO, "%s: doorbell %s: futex wait: %s", CIPC, b->h.name, strerror(errno));
    }
}

void cipc_bell_close(refit_tp_t *tp, refit_tp_bell_t *b)
{
    (void)tp;
    if (!b)
        return;
    munmap(b->pg, sizeof(*b->pg));
    if (b->creator)
        shm_unlink(b->h.name);
    H->free(b);
}
