/* publish_modes.c — the publisher's strategies (publisher.h) for holding a
 * version (refit.publish: zero_copy, copy) and the pull delivery (push is
 * push_pub.c).
 *
 * Neither hold ever leaves a READY record over bytes that changed: before
 * a publish touches memory a record names, the record stops naming it —
 * zero-copy withdraws READY(V-1) (the trainer's tensors and the gather
 * arena now hold V's bytes); copy stops keeping V-2 (its arena receives
 * V) by re-publishing READY(V-1) with keeps 1.  A publish that fails after
 * that leaves the store saying so, not the old label on new bytes. */
#include <stdlib.h>

#include "publisher.h"

/* ------------------------------------------------------------------ */
/* zero_copy: receivers read the tensors where they are */

static int zc_begin(refit_publisher_t *pub, uint64_t v, int *arena)
{
    *arena = 0;
    if (!pub->last_version)
        return 0;
    int rc = rf_pub_record(pub, pub->last_version, REFIT_SOURCE_STALE, 1, 0);
    return rc ? refit_error_push(rc, "publisher %s: withdrawing v%llu before v%llu changes its memory", pub->id,
                                 (unsigned long long)pub->last_version, (unsigned long long)v)
              : 0;
}

static size_t zc_catalog_regions(const refit_publisher_t *pub)
{
    return pub->n_rg;
}

static int zc_region(refit_publisher_t *pub, int arena, uint32_t region, struct pub_region **out)
{
    (void)arena;
    if (region >= pub->n_rg)
        return refit_error_set(REFIT_EPROTO, "region %u named; publisher %s has %zu", region, pub->id, pub->n_rg);
    *out = &pub->rg[region];
    return 0;
}

static void zc_published(refit_publisher_t *pub, uint64_t v, int arena)
{
    (void)pub;
    (void)v;
    (void)arena;
}

const struct rf_pub_hold rf_hold_zero_copy = {
    .size = sizeof(struct rf_pub_hold),
    .name = "zero_copy",
    .copy_all = 0,
    .arenas = 1,
    .keeps = 1,
    .begin = zc_begin,
    .catalog_regions = zc_catalog_regions,
    .region = zc_region,
    .published = zc_published,
};

/* ------------------------------------------------------------------ */
/* copy: two staging arenas; V goes into the one V-2 used */

static int copy_begin(refit_publisher_t *pub, uint64_t v, int *arena)
{
    int b = pub->next_buf;
    *arena = b;
    uint64_t old = pub->buf_version[b];
    if (!old)
        return 0;
    /* The arena must not hold a version a receiver may still read. */
    int rc = refit_publisher_wait_released(pub, old, -1);
    if (rc)
        return refit_error_push(rc, "publisher %s: v%llu needs the staging arena of v%llu", pub->id,
                                (unsigned long long)v, (unsigned long long)old);
    /* V-1 (in the other arena) stays READY, but no longer keeps `old`. */
    rc = pub->last_version ? rf_pub_record(pub, pub->last_version, REFIT_SOURCE_READY, 1, b ^ 1) : 0;
    return rc ? refit_error_push(rc, "publisher %s: releasing v%llu's arena for v%llu", pub->id,
                                 (unsigned long long)old, (unsigned long long)v)
              : 0;
}

static size_t copy_catalog_regions(const refit_publisher_t *pub)
{
    (void)pub;
    return 1; /* a version lives in one arena */
}

static int copy_region(refit_publisher_t *pub, int arena, uint32_t region, struct pub_region **out)
{
    if (region != 0 || arena < 0 || (size_t)arena >= pub->n_rg)
        return refit_error_set(REFIT_EPROTO, "region %u named; publisher %s has 1", region, pub->id);
    *out = &pub->rg[arena];
    return 0;
}

static void copy_published(refit_publisher_t *pub, uint64_t v, int arena)
{
    pub->buf_version[arena] = v;
    pub->next_buf = arena ^ 1;
}

const struct rf_pub_hold rf_hold_copy = {
    .size = sizeof(struct rf_pub_hold),
    .name = "copy",
    .copy_all = 1,
    .arenas = 2,
    .keeps = 2,
    .begin = copy_begin,
    .catalog_regions = copy_catalog_regions,
    .region = copy_region,
    .published = copy_published,
};

/* ------------------------------------------------------------------ */
/* pull: the receivers read; the publisher has nothing to deliver */

static int pull_deliver(refit_publisher_t *pub, uint64_t v, int arena)
{
    (void)pub;
    (void)v;
    (void)arena;
    return 0;
}

static void pull_destroy(refit_publisher_t *pub)
{
    (void)pub;
}

static uint64_t pull_bytes(const refit_publisher_t *pub)
{
    (void)pub;
    return 0;
}

const struct rf_pub_delivery rf_deliver_pull = {
    .size = sizeof(struct rf_pub_delivery),
    .name = "pull",
    .host_arena = 0,
    .deliver = pull_deliver,
    .destroy = pull_destroy,
    .bytes = pull_bytes,
};
