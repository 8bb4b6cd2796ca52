/* file_watch.c — watch() of the file store: the keys below a prefix as
 * this handle last saw them, compared with a fresh walk.
 *
 * Files carry no history, so each handle keeps the snapshot (key and a
 * hash of name, inode, mtime and size: every write renames a new inode
 * into place) of the last look at each watched prefix, and the cursor it
 * gave out for it.  watch() walks the prefix again and reports the keys
 * added, replaced or removed since that snapshot, sleeping on inotify (the
 * walk arms it on every directory it visits) with poll()'s backoff timer
 * for what inotify misses.  A cursor that is not the prefix's latest from
 * this handle (another handle's, or an older one) is REFIT_ERANGE: the
 * caller lists again. */
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "file_store.h"
#include "store_common.h"

void fs_watch_fini(struct fs_store *st)
{
    for (size_t i = 0; i < st->n_watched; i++) {
        free(st->watched[i].prefix);
        fs_snap_free(&st->watched[i].snap);
    }
    st->n_watched = 0;
}

static struct fs_watched *slot(struct fs_store *st, const char *prefix)
{
    for (size_t i = 0; i < st->n_watched; i++)
        if (!strcmp(st->watched[i].prefix, prefix))
            return &st->watched[i];
    struct fs_watched *w;
    if (st->n_watched < FS_MAX_WATCHED) {
        w = &st->watched[st->n_watched++];
    } else { /* the least recently issued goes: its cursor becomes out of range */
        w = &st->watched[0];
        for (size_t i = 1; i < st->n_watched; i++)
            if (st->watched[i].cursor < w->cursor)
                w = &st->watched[i];
        free(w->prefix);
        fs_snap_free(&w->snap);
    }
    memset(w, 0, sizeof(*w));
    if (!(w->prefix = strdup(prefix))) {
        st->n_watched--;
        return NULL;
    }
    return w;
}

struct diff {
    char **k;
    size_t n, bytes;
};

static int diff_add(struct diff *d, const char *k)
{
    char **nk = realloc(d->k, (d->n + 1) * sizeof(*nk));
    if (!nk)
        return REFIT_ENOMEM;
    d->k = nk;
    d->k[d->n++] = (char *)k;
    d->bytes += strlen(k) + 1;
    return 0;
}

/* Keys in one sorted snapshot and not the other, or with another hash
 * (a merge of the two sorted lists); the strings stay the snapshots'. */
static int diff_of(const struct fs_snap *a, const struct fs_snap *b, struct diff *d)
{
    size_t i = 0, j = 0;
    int rc = 0;
    while (!rc && (i < a->n || j < b->n)) {
        int c = i == a->n ? 1 : j == b->n ? -1 : strcmp(a->keys[i], b->keys[j]);
        if (c < 0)
            rc = diff_add(d, a->keys[i++]);
        else if (c > 0)
            rc = diff_add(d, b->keys[j++]);
        else if (a->hashes[i++] != b->hashes[j++])
            rc = diff_add(d, b->keys[j - 1]);
    }
    return rc;
}

static int pack(const struct diff *d, char ***keys, size_t *n)
{
    char **out = fs_h->alloc(d->n * sizeof(char *) + d->bytes);
    if (!out)
        return REFIT_ENOMEM;
    char *p = (char *)(out + d->n);
    for (size_t i = 0; i < d->n; i++) {
        size_t l = strlen(d->k[i]) + 1;
        memcpy(p, d->k[i], l);
        out[i] = p;
        p += l;
    }
    *keys = out;
    *n = d->n;
    return 0;
}

/* One look: a fresh snapshot compared with w's; on a change, w takes the
 * new snapshot and a new cursor. */
static int look(struct fs_store *st, struct fs_watched *w, int ifd, char ***keys, size_t *n)
{
    struct fs_snap now;
    int rc = fs_walk_snapshot(st, w->prefix, ifd, &now);
    if (rc)
        return rc;
    struct diff d = {0};
    rc = diff_of(&w->snap, &now, &d);
    if (!rc && d.n)
        rc = pack(&d, keys, n);
    free(d.k);
    if (!rc && d.n) {
        fs_snap_free(&w->snap);
        w->snap = now;
        w->cursor = ++st->watch_seq;
    } else {
        fs_snap_free(&now);
    }
    return rc;
}

static void wait_change(int ifd, int64_t ms)
{
    if (ifd < 0) {
        rsc_sleep_ms(ms);
        return;
    }
    struct pollfd pf = {ifd, POLLIN, 0};
    if (poll(&pf, 1, (int)ms) > 0) {
        char buf[4096];
        while (read(ifd, buf, sizeof(buf)) > 0)
            ;
    }
}

static int fresh(struct fs_store *st, struct fs_watched *w, uint64_t *cursor)
{
    fs_snap_free(&w->snap);
    int rc = fs_walk_snapshot(st, w->prefix, -1, &w->snap);
    w->cursor = ++st->watch_seq;
    *cursor = w->cursor;
    return rc;
}

int fs_watch(void *obj, const char *prefix, uint64_t since, uint64_t *cursor, int64_t timeout_ms, char ***keys,
             size_t *n)
{
    struct fs_store *st = obj;
    struct fs_watched *w = slot(st, prefix);
    if (!w)
        return REFIT_ENOMEM;
    if (!since || since != w->cursor) {
        int rc = fresh(st, w, cursor);
        if (rc || !since)
            return rc;
        return fs_h->error_set(REFIT_ERANGE, "store file: watch '%s': cursor %llu is not this handle's latest "
                               "for it: list again", prefix, (unsigned long long)since);
    }
    int ifd = timeout_ms > 0 ? inotify_init1(IN_NONBLOCK | IN_CLOEXEC) : -1;
    if (ifd >= 0) /* the prefix's first directory appearing wakes us too */
        inotify_add_watch(ifd, st->root, IN_CREATE | IN_MOVED_TO | IN_ONLYDIR);
    int64_t deadline = rsc_now_ms() + timeout_ms, pause = st->poll_min_ms;
    int rc;
    for (;;) {
        rc = look(st, w, ifd, keys, n);
        int64_t left = deadline - rsc_now_ms();
        if (rc || *n || left <= 0)
            break;
        wait_change(ifd, pause < left ? pause : left);
        pause = pause * 2 < st->poll_max_ms ? pause * 2 : st->poll_max_ms;
    }
    if (ifd >= 0)
        close(ifd);
    *cursor = w->cursor;
    if (!rc && !*n)
        rc = fs_h->error_set(REFIT_ETIMEDOUT, "store file: no change below '%s' within %lld ms", prefix,
                             (long long)timeout_ms);
    return rc;
}
