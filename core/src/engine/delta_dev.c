/* delta_dev.c — the delta of a publisher's CUDA tensors (delta_pub.c;
 * docs/delta.md, "Device tensors").
 *
 * The base of CUDA tensors is a device copy of them as last published
 * (one slab of refit_cuda_alloc).  At publish every CUDA tensor is encoded
 * against it in one rf_delta_cuda_encode batch — the same bytes the host
 * codec makes (test-delta-cuda checks that on a GPU) — and only the delta
 * and its chunk lengths (~2 % of the bytes at RL change rates) are copied
 * to the host, where delta_pub.c places them in the delta arena in catalog
 * order beside the host tensors' deltas.  Then each tensor is copied into
 * the base on the device.  Any CUDA failure leaves this version's CUDA
 * tensors without a delta (index entries RF_DELTA_ABSENT: receivers pull
 * them whole) and the base invalid until a publish copies it whole again;
 * the publish itself does not fail.  Tensors on more than one device are
 * not encoded. */
#include <stdlib.h>
#include <string.h>

#include "../delta/delta.h"
#include "delta_eng.h"
#include "devmem.h"
#include "publisher.h"
#include "refit/cuda_pool.h"
#include "refit/log.h"

#define NONE UINT64_MAX

struct rf_pubdelta_dev {
    int device;
    struct rf_delta_cuda *cu;
    struct rf_dcopy *cp;
    char *base; /* device: the CUDA tensors as last published */
    size_t base_len;
    uint64_t *off; /* per publisher tensor: its place in base (NONE: not a CUDA tensor) */
    size_t n_t;
    int valid; /* base holds every CUDA tensor as the last publish left it */
    char *out; /* device: the batch's delta and chunk lengths */
    size_t out_cap;
    uint32_t *dlens;
    size_t dlens_cap;
    uint8_t *host; /* the delta on the host (pinned) */
    size_t host_cap;
    uint8_t *lens; /* chunk lengths on the host (pinned; u32, 4096-aligned) */
    size_t lens_cap;
    uint64_t *t_at, *t_first; /* per tensor: its delta's offset in host, its first chunk in lens */
    uint8_t *has;             /* per tensor: encoded this publish */
    struct rf_delta_span *sp;
};

static void host_free(uint8_t **p, size_t *cap)
{
    if (*p)
        rf_dev_unpin(*p);
    free(*p);
    *p = NULL;
    *cap = 0;
}

void rf_pubdelta_dev_destroy(struct rf_pubdelta_dev *dd)
{
    if (!dd)
        return;
    rf_dcopy_destroy(dd->cp);
    rf_delta_cuda_destroy(dd->cu);
    refit_cuda_free(dd->base);
    refit_cuda_free(dd->out);
    refit_cuda_free(dd->dlens);
    host_free(&dd->host, &dd->host_cap);
    host_free(&dd->lens, &dd->lens_cap);
    free(dd->off);
    free(dd->t_at);
    free(dd->t_first);
    free(dd->has);
    free(dd->sp);
    free(dd);
}

/* Device buffer *p of at least n bytes (contents not kept). */
static int dev_room(void **p, size_t *cap, size_t n)
{
    if (n <= *cap)
        return 0;
    refit_cuda_free(*p);
    *p = NULL;
    *cap = 0;
    int rc = refit_cuda_alloc(n ? n : 1, p);
    if (!rc)
        *cap = n;
    return rc;
}

/* Pinned host buffer of at least n bytes. */
static int host_room(uint8_t **p, size_t *cap, size_t n, const char *what)
{
    if (n <= *cap && *p)
        return 0;
    host_free(p, cap);
    if (posix_memalign((void **)p, 4096, n ? n : 1))
        return REFIT_ENOMEM;
    int rc = rf_dev_pin(*p, n ? n : 1, what);
    if (rc) {
        free(*p);
        *p = NULL;
        return rc;
    }
    *cap = n;
    return 0;
}

/* Offsets of the CUDA tensors in the base; a layout that changed (or a
 * device other than the base's) leaves the base invalid.  *n_dev: how many. */
static int layout(refit_publisher_t *pub, struct rf_pubdelta_dev *dd, size_t *n_dev)
{
    size_t at = 0;
    *n_dev = 0;
    if (dd->n_t != pub->n) {
        free(dd->off);
        free(dd->t_at);
        free(dd->t_first);
        free(dd->has);
        free(dd->sp);
        dd->off = malloc((pub->n ? pub->n : 1) * sizeof(*dd->off));
        dd->t_at = malloc((pub->n ? pub->n : 1) * sizeof(*dd->t_at));
        dd->t_first = malloc((pub->n ? pub->n : 1) * sizeof(*dd->t_first));
        dd->has = calloc(pub->n ? pub->n : 1, 1);
        dd->sp = malloc((pub->n ? pub->n : 1) * sizeof(*dd->sp));
        if (!dd->off || !dd->t_at || !dd->t_first || !dd->has || !dd->sp) {
            dd->n_t = 0;
            return REFIT_ENOMEM;
        }
        for (size_t i = 0; i < pub->n; i++)
            dd->off[i] = NONE;
        dd->n_t = pub->n;
        dd->valid = 0;
    }
    for (size_t i = 0; i < pub->n; i++) {
        const struct pub_tensor *t = &pub->t[i];
        uint64_t o = NONE;
        if (t->memtype == REFIT_MEM_CUDA) {
            int dev = -1;
            int rc = rf_dev_locate(t->ptr, t->name, &dev);
            if (rc)
                return rc;
            if (*n_dev && dev != dd->device)
                return refit_error_set(REFIT_ENOTSUP, "publisher %s: CUDA tensors on devices %d and %d", pub->id,
                                       dd->device, dev);
            if (!*n_dev && dev != dd->device) {
                dd->valid = 0;
                dd->device = dev;
            }
            o = at;
            at += (t->nbytes + 255) & ~(size_t)255;
            (*n_dev)++;
        }
        if (dd->off[i] != o)
            dd->valid = 0;
        dd->off[i] = o;
    }
    if (at != dd->base_len) {
        refit_cuda_free(dd->base);
        dd->base = NULL;
        dd->base_len = 0;
        dd->valid = 0;
        if (at) {
            int rc = refit_cuda_alloc(at, (void **)&dd->base);
            if (rc)
                return rc;
        }
        dd->base_len = at;
    }
    return 0;
}

/* One batch: every CUDA tensor encoded against the base, the delta and its
 * lengths copied to the host. */
static int encode(refit_publisher_t *pub, struct rf_pubdelta_dev *dd)
{
    size_t n = 0;
    uint64_t bound = 0, chunks = 0;
    for (size_t i = 0; i < pub->n; i++) {
        const struct pub_tensor *t = &pub->t[i];
        uint64_t cb = (uint64_t)t->chunk_rows * t->row_bytes;
        if (dd->off[i] == NONE || cb > RF_DELTA_MAX_CHUNK)
            continue;
        dd->t_first[i] = chunks;
        dd->sp[n++] = (struct rf_delta_span){t->name, dd->base + dd->off[i], t->ptr, t->nbytes, cb};
        chunks += rf_delta_tensor_chunks(t->nbytes, cb);
        bound += rf_delta_tensor_bound(t->nbytes, cb);
    }
    if (!n)
        return 0;
    int rc = 0;
    if (!dd->cu)
        rc = rf_delta_cuda_create(NULL, &dd->cu);
    if (!rc && !dd->cp)
        rc = rf_dcopy_create(dd->device, &dd->cp);
    if (!rc)
        rc = dev_room((void **)&dd->out, &dd->out_cap, (size_t)bound);
    if (!rc)
        rc = dev_room((void **)&dd->dlens, &dd->dlens_cap, (size_t)chunks * sizeof(uint32_t));
    if (!rc)
        rc = host_room(&dd->lens, &dd->lens_cap, (size_t)chunks * sizeof(uint32_t), "delta lengths");
    uint64_t total = 0;
    if (!rc)
        rc = rf_delta_cuda_encode(dd->cu, dd->sp, n, dd->out, dd->out_cap, dd->dlens, &total);
    if (!rc)
        rc = rf_delta_cuda_sync(dd->cu);
    if (!rc)
        rc = host_room(&dd->host, &dd->host_cap, (size_t)total, "delta");
    size_t e1 = 0, e2 = 0;
    if (!rc)
        rc = rf_dcopy_post(dd->cp, dd->lens, dd->dlens, (size_t)chunks * sizeof(uint32_t), RF_D2H, &e1);
    if (!rc && total)
        rc = rf_dcopy_post(dd->cp, dd->host, dd->out, (size_t)total, RF_D2H, &e2);
    if (!rc)
        rc = rf_dcopy_sync(dd->cp);
    if (rc)
        return rc;
    /* Each tensor's delta starts where the lengths before it end. */
    const uint32_t *lens = (const uint32_t *)(const void *)dd->lens;
    uint64_t at = 0;
    for (size_t i = 0; i < pub->n; i++) {
        const struct pub_tensor *t = &pub->t[i];
        uint64_t cb = (uint64_t)t->chunk_rows * t->row_bytes;
        if (dd->off[i] == NONE || cb > RF_DELTA_MAX_CHUNK)
            continue;
        dd->t_at[i] = at;
        uint64_t nc = rf_delta_tensor_chunks(t->nbytes, cb);
        for (uint64_t c = 0; c < nc; c++)
            at += lens[dd->t_first[i] + c];
        dd->has[i] = 1;
    }
    if (at != total)
        return refit_error_set(REFIT_EPROTO, "publisher %s: the device delta's lengths add to %llu of %llu bytes",
                               pub->id, (unsigned long long)at, (unsigned long long)total);
    return 0;
}

/* Every CUDA tensor into the base, on the device. */
static int refresh(refit_publisher_t *pub, struct rf_pubdelta_dev *dd)
{
    int rc = 0;
    if (!dd->cp)
        rc = rf_dcopy_create(dd->device, &dd->cp);
    for (size_t i = 0; !rc && i < pub->n; i++)
        if (dd->off[i] != NONE && pub->t[i].nbytes)
            rc = rf_dcopy_post2d(dd->cp, dd->base + dd->off[i], pub->t[i].nbytes, pub->t[i].ptr, pub->t[i].nbytes,
                                 pub->t[i].nbytes, 1);
    return rc ? rc : rf_dcopy_sync(dd->cp);
}

int rf_pubdelta_dev_encode(refit_publisher_t *pub, struct rf_pubdelta_dev **pdd, int usable)
{
    const struct pub_tensor *first = NULL;
    for (size_t i = 0; i < pub->n && !first; i++)
        if (pub->t[i].memtype == REFIT_MEM_CUDA)
            first = &pub->t[i];
    if (!first || !rf_delta_cuda_built())
        return 0;
    if (!*pdd && !(*pdd = calloc(1, sizeof(**pdd))))
        return REFIT_ENOMEM;
    struct rf_pubdelta_dev *dd = *pdd;
    if (dd->has)
        memset(dd->has, 0, dd->n_t);
    /* The tensors' device current before anything is allocated or
     * launched there (the caller's current device is given back). */
    size_t n_dev = 0;
    int dev = -1, saved = 0, entered = 0, rc = rf_dev_locate(first->ptr, first->name, &dev);
    if (!rc && !(rc = rf_dev_enter(dev, &saved)))
        entered = 1;
    int lrc = rc ? rc : layout(pub, dd, &n_dev);
    rc = lrc;
    if (!rc && n_dev && usable && dd->valid)
        rc = encode(pub, dd);
    if (rc && dd->has)
        memset(dd->has, 0, dd->n_t);
    /* The base becomes this version whatever the encode did. */
    dd->valid = 0;
    int rrc = entered && !lrc ? refresh(pub, dd) : lrc;
    if (!rrc && n_dev)
        dd->valid = 1;
    if (entered)
        rf_dev_leave(saved);
    if (rc || rrc)
        refit_log(REFIT_LOG_WARN, "publisher", "%s: CUDA tensors published without a delta from %s on: %s",
                  pub->id, rc ? "this version" : "the next version", refit_error_message());
    return 0;
}

int rf_pubdelta_dev_tensor(const struct rf_pubdelta_dev *dd, size_t i, const uint8_t **delta, const uint32_t **lens)
{
    if (!dd || i >= dd->n_t || !dd->has || !dd->has[i])
        return 0;
    *delta = dd->host + dd->t_at[i];
    *lens = (const uint32_t *)(const void *)dd->lens + dd->t_first[i];
    return 1;
}
