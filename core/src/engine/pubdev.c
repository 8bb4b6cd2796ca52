/* pubdev.c — a publisher's CUDA tensors.
 *
 * At publish every device tensor is copied to the host, either into the
 * registered arena (a transport that reaches host memory only: tcp, UCX or
 * libfabric without CUDA; and always with publish: copy) or, when the
 * transport reaches the tensor where it is, through a pinned bounce ring
 * only so it can be hashed.  The copies are cut into chunks (whole
 * checksum chunks, about 8 MiB) alternating over two streams, each followed
 * by an event.  Arena chunks are all queued at once; bounce chunks as ring
 * slots come free.  Tensors are then hashed in catalog order, chunk by
 * chunk as each lands, so the hashing of chunk k overlaps the copies of
 * chunk k+1 onwards.  The result is byte-for-byte what rf_sums_add gives
 * for the same bytes in host memory. */
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "devmem.h"
#include "devpath.h"
#include "engine.h"
#include "refit/log.h"

#define COPY_CHUNK ((size_t)8 << 20)

struct dchunk {
    size_t job;
    size_t off, len;
    size_t ev;
    int slot; /* bounce slot, -1: straight into the arena */
};

struct djob {
    const char *src;
    char *dst; /* NULL: bounce */
    size_t nbytes;
    uint64_t cb; /* checksum chunk bytes (0: whole-tensor hash only) */
    int hash;
    size_t first, n; /* its chunks */
};

struct rf_pubdev {
    int device;
    struct rf_dcopy *cp;
    int saved;
    int active;
    double t0, stage_s;
    void **pinned; /* host arenas pinned so far */
    size_t n_pinned;
    char *bounce[2];
    size_t bounce_len;
    struct djob *job;
    size_t n_job, cap_job, next_take;
    struct dchunk *ch;
    size_t n_ch, cap_ch, next_issue;
    size_t bounce_issued, bounce_done;
};

int rf_pubdev_add(struct rf_pubdev **pd, const char *what, const void *ptr)
{
    int device = -1;
    int rc = rf_dev_locate(ptr, what, &device);
    if (rc)
        return rc;
    if (*pd) {
        if ((*pd)->device != device)
            return refit_error_set(REFIT_EINVAL, "%s is on CUDA device %d, this publisher's other device "
                                   "tensors on device %d (one device per publisher)", what, device,
                                   (*pd)->device);
        return 0;
    }
    struct rf_pubdev *p = calloc(1, sizeof(*p));
    if (!p)
        return REFIT_ENOMEM;
    p->device = device;
    p->saved = -1;
    rc = rf_dcopy_create(device, &p->cp);
    if (rc) {
        free(p);
        return refit_error_push(rc, "%s", what);
    }
    *pd = p;
    return 0;
}

static void free_bounce(struct rf_pubdev *pd)
{
    for (int i = 0; i < 2; i++) {
        if (pd->bounce[i]) {
            rf_dev_unpin(pd->bounce[i]);
            free(pd->bounce[i]);
        }
        pd->bounce[i] = NULL;
    }
    pd->bounce_len = 0;
}

void rf_pubdev_destroy(struct rf_pubdev *pd)
{
    if (!pd)
        return;
    if (pd->active)
        rf_pubdev_end(pd);
    rf_dcopy_destroy(pd->cp);
    for (size_t i = 0; i < pd->n_pinned; i++)
        rf_dev_unpin(pd->pinned[i]);
    free(pd->pinned);
    free_bounce(pd);
    free(pd->job);
    free(pd->ch);
    free(pd);
}

int rf_pubdev_gathered(const refit_transport_t *tp, uint32_t memtype, int copy_mode, int small, int push)
{
    if (memtype != REFIT_MEM_CUDA)
        return copy_mode || small;
    uint32_t m = refit_transport_caps(tp)->memtypes;
    if (push || !(m & REFIT_MEMTYPE_BIT(REFIT_MEM_CUDA)))
        return 1;
    return copy_mode || (small && (m & REFIT_MEMTYPE_BIT(REFIT_MEM_HOST)));
}

int rf_pubdev_slab(const void *ptr, void **base, size_t *len)
{
    return rf_dev_pool_find(ptr, base, len);
}

void rf_pubdev_unpin(struct rf_pubdev *pd, void *base)
{
    for (size_t i = 0; pd && i < pd->n_pinned; i++)
        if (pd->pinned[i] == base) {
            rf_dev_unpin(base);
            pd->pinned[i] = pd->pinned[--pd->n_pinned];
            return;
        }
}

static int pin_arena(struct rf_pubdev *pd, void *arena, size_t len)
{
    for (size_t i = 0; i < pd->n_pinned; i++)
        if (pd->pinned[i] == arena)
            return 0;
    void **np = realloc(pd->pinned, (pd->n_pinned + 1) * sizeof(*np));
    if (!np)
        return REFIT_ENOMEM;
    pd->pinned = np;
    /* Unpinned copies are still right, only slower: say so once and go on
     * (the arena stays listed, so it is not tried again; unpinning memory
     * that was never pinned is harmless). */
    if (rf_dev_pin(arena, len, "publisher: staging arena")) {
        refit_log(REFIT_LOG_WARN, "publisher", "%s (copies from the device run unpinned)", refit_error_message());
        refit_error_clear();
    }
    pd->pinned[pd->n_pinned++] = arena;
    return 0;
}

int rf_pubdev_begin(struct rf_pubdev *pd, void *arena, size_t arena_len)
{
    pd->t0 = rf_seconds();
    pd->n_job = pd->n_ch = pd->next_take = pd->next_issue = 0;
    pd->bounce_issued = pd->bounce_done = 0;
    int rc = rf_dev_enter(pd->device, &pd->saved);
    if (rc)
        return rc;
    pd->active = 1;
    rc = arena ? pin_arena(pd, arena, arena_len) : 0;
    if (rc) {
        rf_dev_leave(pd->saved);
        pd->active = 0;
    }
    return rc;
}

/* Queue what can go now: arena chunks always; bounce chunks while a ring
 * slot is free (slot m % 2 is free once chunk m - 2 is hashed). */
static int issue(struct rf_pubdev *pd)
{
    while (pd->next_issue < pd->n_ch) {
        struct dchunk *c = &pd->ch[pd->next_issue];
        struct djob *j = &pd->job[c->job];
        void *dst;
        if (j->dst) {
            c->slot = -1;
            dst = j->dst + c->off;
        } else {
            if (pd->bounce_issued - pd->bounce_done >= 2)
                return 0;
            c->slot = (int)(pd->bounce_issued % 2);
            dst = pd->bounce[c->slot];
            pd->bounce_issued++;
        }
        int rc = rf_dcopy_post(pd->cp, dst, j->src + c->off, c->len, RF_D2H, &c->ev);
        if (rc)
            return rc;
        pd->next_issue++;
    }
    return 0;
}

static int ensure_bounce(struct rf_pubdev *pd, size_t need)
{
    if (pd->bounce_len >= need)
        return 0;
    free_bounce(pd);
    for (int i = 0; i < 2; i++) {
        if (posix_memalign((void **)&pd->bounce[i], 4096, need))
            return refit_error_set(REFIT_ENOMEM, "publisher: %zu bytes of bounce buffer", need);
        int rc = rf_dev_pin(pd->bounce[i], need, "publisher: bounce buffer");
        if (rc) {
            free(pd->bounce[i]);
            pd->bounce[i] = NULL;
            return rc;
        }
    }
    pd->bounce_len = need;
    return 0;
}

int rf_pubdev_queue(struct rf_pubdev *pd, const void *src, void *dst, size_t nbytes, uint64_t row_bytes,
                    uint32_t chunk_rows, int hash)
{
    if (!pd->active)
        return refit_error_set(REFIT_EINVAL, "publisher: device tensor queued outside a publish");
    if (pd->n_job == pd->cap_job) {
        size_t nc = pd->cap_job ? pd->cap_job * 2 : 64;
        struct djob *nj = realloc(pd->job, nc * sizeof(*nj));
        if (!nj)
            return REFIT_ENOMEM;
        pd->job = nj;
        pd->cap_job = nc;
    }
    struct djob *j = &pd->job[pd->n_job++];
    uint64_t cb = hash && row_bytes && chunk_rows ? row_bytes * chunk_rows : 0;
    *j = (struct djob){.src = src, .dst = dst, .nbytes = nbytes, .cb = cb, .hash = hash, .first = pd->n_ch};
    if (!dst && !hash)
        return 0; /* registered where it is, nothing to hash: no copy */
    /* Copy chunks hold whole checksum chunks, so each hashes on its own. */
    size_t step = COPY_CHUNK;
    if (cb)
        step = cb >= COPY_CHUNK ? (size_t)cb : COPY_CHUNK / cb * cb;
    if (!dst) {
        int rc = ensure_bounce(pd, step);
        if (rc)
            return rc;
    }
    for (size_t off = 0; off < nbytes; off += step) {
        if (pd->n_ch == pd->cap_ch) {
            size_t nc = pd->cap_ch ? pd->cap_ch * 2 : 256;
            struct dchunk *nch = realloc(pd->ch, nc * sizeof(*nch));
            if (!nch)
                return REFIT_ENOMEM;
            pd->ch = nch;
            pd->cap_ch = nc;
        }
        pd->ch[pd->n_ch++] = (struct dchunk){pd->n_job - 1, off, nbytes - off < step ? nbytes - off : step, 0, -1};
        j->n++;
    }
    return issue(pd);
}

int rf_pubdev_take(struct rf_pubdev *pd, struct rf_sums *sums)
{
    if (!pd || pd->next_take >= pd->n_job)
        return refit_error_set(REFIT_EINVAL, "publisher: device tensor taken but not queued");
    struct djob *j = &pd->job[pd->next_take++];
    uint64_t nc = j->cb ? (j->nbytes + j->cb - 1) / j->cb : 0;
    uint64_t *words = nc ? malloc(nc * sizeof(uint64_t)) : NULL;
    XXH3_state_t *st = j->hash ? XXH3_createState() : NULL;
    int rc = (nc && !words) || (j->hash && !st) ? REFIT_ENOMEM : 0;
    if (st)
        XXH3_64bits_reset(st);
    for (size_t i = 0; !rc && i < j->n; i++) {
        struct dchunk *c = &pd->ch[j->first + i];
        rc = issue(pd); /* (a no-op unless a ring slot freed up) */
        if (!rc && j->first + i >= pd->next_issue)
            rc = refit_error_set(REFIT_EPROTO, "publisher: bounce chunk not queued (internal)");
        if (!rc)
            rc = rf_dcopy_wait(pd->cp, c->ev);
        if (rc)
            break;
        const char *data = c->slot < 0 ? j->dst + c->off : pd->bounce[c->slot];
        if (st)
            XXH3_64bits_update(st, data, c->len);
        for (uint64_t o = 0; j->cb && o < c->len; o += j->cb) {
            size_t len = c->len - o < j->cb ? c->len - o : j->cb;
            words[(c->off + o) / j->cb] = XXH3_64bits(data + o, len);
        }
        if (c->slot >= 0)
            pd->bounce_done++;
    }
    if (!rc)
        rc = issue(pd);
    if (!rc && j->hash)
        rc = rf_sums_put(sums, XXH3_64bits_digest(st), words, nc);
    else if (!rc)
        rc = rf_sums_add(sums, NULL, 0, 0, 0);
    if (st)
        XXH3_freeState(st);
    free(words);
    return rc;
}

int rf_pubdev_end(struct rf_pubdev *pd)
{
    if (!pd->active)
        return 0;
    int rc = rf_dcopy_sync(pd->cp);
    rf_dev_leave(pd->saved);
    pd->active = 0;
    pd->stage_s = rf_seconds() - pd->t0;
    return rc;
}

double rf_pubdev_stage_s(const struct rf_pubdev *pd)
{
    return pd ? pd->stage_s : 0;
}
