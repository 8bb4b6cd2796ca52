/* file_walk.c — the file store's walks below a prefix: list() collects
 * the keys, poll() fingerprints them (name, inode, mtime, size) and sleeps
 * on inotify between looks.  Files that are not regular (a FIFO, a device,
 * a symbolic link planted in the store) are skipped without being opened
 * for long: they are no values this store wrote. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "file_store.h"
#include "store_common.h"


struct walk {
    struct fs_store *st;
    const char *prefix; /* full prefix, relative to the root */
    size_t plen;
    /* list */
    char **keys;
    size_t n, cap, bytes;
    /* poll (1: one fingerprint of everything; 2: watch, one per key in
     * hashes, beside keys) */
    int fingerprint;
    uint64_t fp, *hashes;
    int ifd, n_watches;
};

static uint64_t mix64(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

static uint64_t hash_str(const char *s, uint64_t h)
{
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

static int walk_add_key(struct walk *w, const char *rel, int dfd, const char *fname)
{
    if (w->fingerprint) {
        struct stat sb;
        if (fstatat(dfd, fname, &sb, AT_SYMLINK_NOFOLLOW) != 0)
            return 0; /* gone meanwhile: the next look sees it */
        uint64_t h = hash_str(rel, 0xcbf29ce484222325ull);
        h = mix64(h ^ (uint64_t)sb.st_ino);
        h = mix64(h ^ ((uint64_t)sb.st_mtim.tv_sec * 1000000000ull + (uint64_t)sb.st_mtim.tv_nsec));
        h = mix64(h ^ (uint64_t)sb.st_size);
        if (w->fingerprint == 1) {
            w->fp += h; /* order-free: readdir order is arbitrary */
            w->n++;
            return 0;
        }
        if (w->n == w->cap) {
            size_t nc = w->cap ? w->cap * 2 : 64;
            uint64_t *nh = realloc(w->hashes, nc * sizeof(*nh));
            if (nh)
                w->hashes = nh;
            if (!nh || !(nh = realloc(w->keys, nc * sizeof(char *))))
                return REFIT_ENOMEM;
            w->keys = (char **)nh;
            w->cap = nc;
        }
        if (!(w->keys[w->n] = strdup(rel)))
            return REFIT_ENOMEM;
        w->hashes[w->n++] = h ? h : 1;
        return 0;
    }
    /* Expired keys are not listed; nor is what is no regular file. */
    int fd = openat(dfd, fname, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0)
        return 0;
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return 0;
    }
    unsigned char hdr[FS_HDR];
    int ok = fs_read_all(fd, hdr, FS_HDR, 0) == 0 && !memcmp(hdr, FS_MAGIC, 4);
    close(fd);
    uint64_t exp = ok ? fs_get_le64(hdr + 8) : 0;
    if (exp && exp <= fs_now_ms_wall())
        return 0;
    if (w->n == w->cap) {
        size_t nc = w->cap ? w->cap * 2 : 64;
        char **nk = realloc(w->keys, nc * sizeof(*nk));
        if (!nk)
            return REFIT_ENOMEM;
        w->keys = nk;
        w->cap = nc;
    }
    w->keys[w->n] = strdup(rel);
    if (!w->keys[w->n])
        return REFIT_ENOMEM;
    w->bytes += strlen(rel) + 1;
    w->n++;
    return 0;
}

/* Visit directory `rel` ("" for the root); keys are rel + name. */
static int walk_dir(struct walk *w, const char *rel, int depth)
{
    if (depth > 64)
        return 0;
    int dfd = openat(w->st->root_fd, rel[0] ? rel : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return 0; /* absent: no keys below */
    if (w->ifd >= 0 && w->n_watches < FS_MAX_WATCHES) {
        char *abs = malloc(strlen(w->st->root) + strlen(rel) + 2);
        if (abs) {
            sprintf(abs, "%s/%s", w->st->root, rel);
            if (inotify_add_watch(w->ifd, abs, IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE |
                                                   IN_CLOSE_WRITE | IN_ONLYDIR) >= 0)
                w->n_watches++;
            free(abs);
        }
    }
    DIR *d = fdopendir(dfd);
    if (!d) {
        close(dfd);
        return 0;
    }
    size_t rl = strlen(rel);
    int rc = 0;
    struct dirent *e;
    while (!rc && (e = readdir(d))) {
        const char *nm = e->d_name;
        if (nm[0] == '.')
            continue;
        size_t nl = strlen(nm);
        char *child = malloc(rl + nl + 2);
        if (!child) {
            rc = REFIT_ENOMEM;
            break;
        }
        memcpy(child, rel, rl);
        memcpy(child + rl, nm, nl + 1);
        int is_val = nl > 1 && nm[nl - 1] == '=';
        if (is_val)
            child[rl + nl - 1] = '\0';
        /* Prune subtrees that cannot match the prefix. */
        size_t cl = strlen(child);
        size_t cmp = cl < w->plen ? cl : w->plen;
        if (strncmp(child, w->prefix, cmp) != 0) {
            free(child);
            continue;
        }
        if (is_val) {
            if (cl >= w->plen)
                rc = walk_add_key(w, child, dfd, nm);
        } else {
            unsigned char t = e->d_type;
            if (t == DT_UNKNOWN) {
                struct stat sb;
                t = fstatat(dfd, nm, &sb, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(sb.st_mode) ? DT_DIR : DT_REG;
            }
            if (t == DT_DIR) {
                child[cl] = '/';
                child[cl + 1] = '\0';
                rc = walk_dir(w, child, depth + 1);
            }
        }
        free(child);
    }
    closedir(d);
    return rc;
}

/* The directory where walking starts: the prefix up to its last '/'. */
static char *walk_start(const char *prefix)
{
    const char *slash = strrchr(prefix, '/');
    size_t n = slash ? (size_t)(slash - prefix) + 1 : 0;
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, prefix, n);
        s[n] = '\0';
    }
    return s;
}

int fs_list(void *obj, const char *prefix, char ***keys, size_t *n)
{
    struct walk w = {.st = obj, .prefix = prefix, .plen = strlen(prefix), .ifd = -1};
    char *start = walk_start(prefix);
    if (!start)
        return REFIT_ENOMEM;
    int rc = walk_dir(&w, start, 0);
    free(start);
    char **out = NULL;
    if (!rc && w.n) {
        out = fs_h->alloc(w.n * sizeof(char *) + w.bytes);
        if (!out)
            rc = REFIT_ENOMEM;
    }
    if (!rc) {
        char *p = (char *)(out + w.n);
        for (size_t i = 0; i < w.n; i++) {
            size_t l = strlen(w.keys[i]) + 1;
            memcpy(p, w.keys[i], l);
            out[i] = p;
            p += l;
        }
        *keys = out;
        *n = w.n;
    }
    for (size_t i = 0; i < w.n; i++)
        free(w.keys[i]);
    free(w.keys);
    return rc;
}

struct snap_pair {
    char *key;
    uint64_t h;
};

static int cmp_pair(const void *a, const void *b)
{
    return strcmp(((const struct snap_pair *)a)->key, ((const struct snap_pair *)b)->key);
}

int fs_walk_snapshot(struct fs_store *st, const char *prefix, int ifd, struct fs_snap *out)
{
    struct walk w = {.st = st, .prefix = prefix, .plen = strlen(prefix), .fingerprint = 2, .ifd = ifd};
    char *start = walk_start(prefix);
    int rc = start ? walk_dir(&w, start, 0) : REFIT_ENOMEM;
    free(start);
    struct snap_pair *p = rc ? NULL : malloc((w.n ? w.n : 1) * sizeof(*p));
    if (!rc && !p)
        rc = REFIT_ENOMEM;
    for (size_t i = 0; !rc && i < w.n; i++)
        p[i] = (struct snap_pair){w.keys[i], w.hashes[i]};
    if (!rc)
        qsort(p, w.n, sizeof(*p), cmp_pair);
    for (size_t i = 0; !rc && i < w.n; i++) {
        w.keys[i] = p[i].key;
        w.hashes[i] = p[i].h;
    }
    free(p);
    if (rc) {
        for (size_t i = 0; i < w.n; i++)
            free(w.keys[i]);
        free(w.keys);
        free(w.hashes);
        return rc;
    }
    *out = (struct fs_snap){w.keys, w.hashes, w.n};
    return 0;
}

void fs_snap_free(struct fs_snap *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->keys[i]);
    free(s->keys);
    free(s->hashes);
    memset(s, 0, sizeof(*s));
}

static uint64_t fingerprint(struct fs_store *st, const char *prefix, int ifd)
{
    struct walk w = {.st = st, .prefix = prefix, .plen = strlen(prefix), .fingerprint = 1, .ifd = ifd};
    char *start = walk_start(prefix);
    if (start) {
        walk_dir(&w, start, 0);
        free(start);
    }
    uint64_t c = mix64(w.fp ^ mix64(w.n + 1));
    return c ? c : 1;
}

struct fs_poll_ctx {
    struct fs_store *st;
    const char *prefix;
    int ifd; /* inotify on the directories walked, -1: none */
};

static int poll_cursor(void *arg, uint64_t *cur)
{
    struct fs_poll_ctx *p = arg;
    *cur = fingerprint(p->st, p->prefix, p->ifd);
    return 0;
}

/* A change below the prefix wakes us early; the walk re-arms the watches. */
static void poll_wait(void *arg, int64_t ms)
{
    struct fs_poll_ctx *p = arg;
    if (p->ifd < 0) {
        rsc_sleep_ms(ms);
        return;
    }
    struct pollfd pf = {p->ifd, POLLIN, 0};
    if (poll(&pf, 1, (int)ms) > 0) {
        char buf[4096];
        while (read(p->ifd, buf, sizeof(buf)) > 0)
            ;
    }
}

int fs_poll(void *obj, const char *prefix, uint64_t since, uint64_t *cursor, int64_t timeout_ms)
{
    struct fs_store *st = obj;
    static const struct rsc_poll_ops ops = {poll_cursor, poll_wait};
    struct fs_poll_ctx p = {st, prefix, since ? inotify_init1(IN_NONBLOCK | IN_CLOEXEC) : -1};
    /* Watch the root too, so that the prefix's first directory appearing
     * wakes us. */
    if (p.ifd >= 0)
        inotify_add_watch(p.ifd, st->root, IN_CREATE | IN_MOVED_TO | IN_ONLYDIR);
    int rc = rsc_poll(&ops, &p, "file", prefix, since, cursor, timeout_ms, st->poll_min_ms,
                      st->poll_max_ms);
    if (p.ifd >= 0)
        close(p.ifd);
    return rc;
}

