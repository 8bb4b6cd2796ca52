/* catalog_keys.c — the store keys of refit/catalog.h (ids as one key
 * component, "sources/<id>", "versions/<V>/...", ...), version retention,
 * catalog garbage collection, and the wall clock heartbeats compare. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "refit/catalog.h"
#include "refit/status.h"

uint64_t refit_time_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ------------------------------------------------------------------ */
/* Keys */

int refit_check_id(const char *what, const char *id)
{
    size_t l = id ? strnlen(id, REFIT_RECORD_MAX_ID + 1) : 0;
    if (!l || l > REFIT_RECORD_MAX_ID || id[0] == '.')
        return refit_error_set(REFIT_EINVAL, "%s '%s': want 1..%d bytes of [A-Za-z0-9_.:-], not starting with '.'",
                               what, id ? id : "(null)", REFIT_RECORD_MAX_ID);
    for (size_t i = 0; i < l; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '.' || c == ':' || c == '-'))
            return refit_error_set(REFIT_EINVAL, "%s '%s': byte %zu is not one of [A-Za-z0-9_.:-]", what, id, i);
    }
    return 0;
}

int refit_key_source(char *buf, const char *sid)
{
    int rc = refit_check_id("source id", sid);
    if (!rc)
        snprintf(buf, REFIT_STORE_MAX_KEY + 1, "sources/%s", sid);
    return rc;
}

int refit_key_version_source(char *buf, uint64_t v, const char *sid)
{
    int rc = refit_check_id("source id", sid);
    if (!rc)
        snprintf(buf, REFIT_STORE_MAX_KEY + 1, "versions/%" PRIu64 "/sources/%s", v, sid);
    return rc;
}

int refit_key_ack(char *buf, uint64_t v, const char *rid)
{
    int rc = refit_check_id("receiver id", rid);
    if (!rc)
        snprintf(buf, REFIT_STORE_MAX_KEY + 1, "versions/%" PRIu64 "/acks/%s", v, rid);
    return rc;
}

int refit_key_heartbeat(char *buf, const char *sid)
{
    int rc = refit_check_id("source id", sid);
    if (!rc)
        snprintf(buf, REFIT_STORE_MAX_KEY + 1, "heartbeats/%s", sid);
    return rc;
}

void refit_key_catalog(char *buf, const struct refit_hash128 *h)
{
    char hex[33];
    refit_hash128_hex(h, hex);
    snprintf(buf, REFIT_STORE_MAX_KEY + 1, "catalogs/%s", hex);
}

int refit_key_parse_version(const char *key, uint64_t *version)
{
    if (strncmp(key, "versions/", 9))
        return REFIT_EINVAL;
    const char *p = key + 9;
    uint64_t v = 0;
    size_t nd = 0;
    for (; *p >= '0' && *p <= '9'; p++, nd++) {
        if (v > (UINT64_MAX - 9) / 10)
            return REFIT_EINVAL;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    if (!nd || (*p && *p != '/'))
        return REFIT_EINVAL;
    *version = v;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Retention */

int refit_versions_retain(refit_store_t *s, uint64_t latest, uint32_t retain, size_t *deleted)
{
    char **keys;
    size_t n, del = 0;
    int rc = refit_store_list(s, "versions/", &keys, &n);
    if (rc)
        return rc;
    for (size_t i = 0; i < n && !rc; i++) {
        uint64_t v;
        if (refit_key_parse_version(keys[i], &v))
            continue;
        /* Keep latest-retain+1 .. latest (and anything newer). */
        if (v <= latest && latest - v >= retain) {
            int r = refit_store_del(s, keys[i]);
            if (r == 0)
                del++;
            else if (r != REFIT_ENOENT) /* someone else's gc got there first */
                rc = r;
        }
    }
    free(keys);
    if (deleted)
        *deleted = del;
    refit_error_clear();
    return rc;
}

/* Collect the catalog hashes the records under prefix refer to. */
static int referenced(refit_store_t *s, const char *prefix, struct refit_hash128 **hs, size_t *nh)
{
    char **keys;
    size_t n;
    int rc = refit_store_list(s, prefix, &keys, &n);
    if (rc || !n) {
        if (!rc)
            free(keys);
        return rc;
    }
    struct refit_store_get_item *it = calloc(n, sizeof(*it));
    struct refit_hash128 *nhs = realloc(*hs, (*nh + n) * sizeof(**hs));
    if (!it || !nhs) {
        free(it);
        free(keys);
        if (nhs)
            *hs = nhs;
        return REFIT_ENOMEM;
    }
    *hs = nhs;
    for (size_t i = 0; i < n; i++)
        it[i].key = keys[i];
    rc = refit_store_get_many(s, it, n);
    for (size_t i = 0; !rc && i < n; i++) {
        struct refit_source_record *r;
        if (strstr(keys[i], "/acks/"))
            continue;
        if (it[i].status == 0 && refit_record_decode(it[i].val, it[i].len, keys[i], &r) == 0) {
            nhs[(*nh)++] = r->catalog;
            free(r);
        }
    }
    for (size_t i = 0; i < n; i++)
        free(it[i].val);
    free(it);
    free(keys);
    refit_error_clear();
    return rc;
}

int refit_catalogs_gc(refit_store_t *s, bool dry_run, size_t *deleted)
{
    struct refit_hash128 *hs = NULL;
    size_t nh = 0, del = 0;
    int rc = referenced(s, "sources/", &hs, &nh);
    if (!rc)
        rc = referenced(s, "versions/", &hs, &nh);
    char **keys = NULL;
    size_t n = 0;
    if (!rc)
        rc = refit_store_list(s, "catalogs/", &keys, &n);
    for (size_t i = 0; !rc && i < n; i++) {
        struct refit_hash128 h;
        int used = 0;
        if (refit_hash128_parse(keys[i] + 9, &h)) {
            refit_error_clear();
            continue; /* not ours to judge */
        }
        for (size_t j = 0; j < nh && !used; j++)
            used = !memcmp(hs[j].b, h.b, 16);
        if (used)
            continue;
        if (!dry_run) {
            int r = refit_store_del(s, keys[i]);
            if (r && r != REFIT_ENOENT)
                rc = r;
        }
        del++;
    }
    free(keys);
    free(hs);
    if (deleted)
        *deleted = del;
    return rc;
}
