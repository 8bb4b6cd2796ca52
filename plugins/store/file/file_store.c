/* file_store.c — the embedded store: keys as files below a directory.
 *
 * Layout: key "a/b/c" of namespace N is the file <path>/refit/N/a/b/c=
 * (the '=' suffix, which keys cannot contain, keeps "a/b" the value and
 * "a/b/c" a key below it from competing for one name).  Each file is a
 * 16-byte header (magic "RFS1", u32 flags 0, u64 LE expiry in Unix ms, 0 for
 * none) followed by the value.  Hidden names (starting with '.') are ours:
 * ".tmp-*" for writes in progress, ".lock" for the flock of a directory.
 *
 * Writes are atomic: temp file, fsync, rename, fsync of the directory.
 * Every writer (put, cas, del) holds its directory's flock, so cas is atomic
 * against all of them; readers take no lock because rename swaps whole
 * files.  poll() fingerprints the files below the prefix (name, inode,
 * mtime, size: a rename always brings a new inode) and sleeps on inotify
 * with a backoff timer for what inotify misses (new subdirectories, NFS). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "refit/plugin.h"
#include "refit/store.h"
#include "store_common.h"

#define FS_HDR 16
#define FS_MAGIC "RFS1"
#define FS_MAX_WATCHES 1024

static const struct refit_host *H;

struct fs_store {
    int root_fd; /* <path>/refit/<ns>; -1 when not open */
    char *root;
    int fsync;
    int64_t timeout_ms, poll_min_ms, poll_max_ms;
    uint64_t max_value;
    unsigned counter;
    int opened;
};

static const struct refit_cfg_field fs_fields[] = {
    {"path", REFIT_CFG_STRING, NULL, 0, -1, NULL,
     "directory holding the store (default $TMPDIR/refit-store, else /tmp/refit-store)"},
    {"fsync", REFIT_CFG_BOOL, "true", 0, -1, NULL,
     "fsync files and directories on every write (off only for scratch stores)"},
    {"poll_min", REFIT_CFG_DURATION, "5ms", 1, 60000, NULL, "first re-check interval of poll"},
    {"poll_max", REFIT_CFG_DURATION, "200ms", 1, 60000, NULL, "longest re-check interval of poll"},
};

/* ------------------------------------------------------------------ */
/* Helpers */

static uint64_t now_ms_wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int fs_errno(int err, const char *what, const char *key, const char *path)
{
    int st = err == ENOENT ? REFIT_ENOENT
             : err == EACCES || err == EPERM || err == EROFS ? REFIT_EPERM
             : err == ENOMEM ? REFIT_ENOMEM
             : REFIT_EIO;
    return H->error_set(st, "store file: key '%s': %s %s: %s (errno %d)", key, what, path, strerror(err), err);
}

static void put_le64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* "a/b/c" → dir "a/b" (or "." for none) and name "c"; buffers sized by the
 * caller from the key length. */
static void split_key(const char *key, char *dir, char *name)
{
    const char *slash = strrchr(key, '/');
    if (!slash) {
        strcpy(dir, ".");
        strcpy(name, key);
    } else {
        memcpy(dir, key, (size_t)(slash - key));
        dir[slash - key] = '\0';
        strcpy(name, slash + 1);
    }
}

static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

static int read_all(int fd, void *buf, size_t len, off_t off)
{
    char *p = buf;
    while (len) {
        ssize_t r = pread(fd, p, len, off);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (r == 0) {
            errno = EPROTO; /* shrank under us: only a foreign writer does that */
            return -1;
        }
        p += r;
        len -= (size_t)r;
        off += r;
    }
    return 0;
}

static int fsync_dir(struct fs_store *st, const char *dir)
{
    if (!st->fsync)
        return 0;
    int fd = openat(st->root_fd, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

/* mkdir -p of a key's directory, relative to the root. */
static int make_dirs(struct fs_store *st, const char *dir, const char *key)
{
    if (!strcmp(dir, "."))
        return 0;
    char *p = strdup(dir);
    if (!p)
        return REFIT_ENOMEM;
    int rc = 0;
    for (char *s = p;; s++) {
        if (*s != '/' && *s != '\0')
            continue;
        char save = *s;
        *s = '\0';
        if (mkdirat(st->root_fd, p, 0755) == 0) {
            /* Make the new entry durable in its parent. */
            char *parent_end = strrchr(p, '/');
            if (parent_end) {
                *parent_end = '\0';
                fsync_dir(st, p);
                *parent_end = '/';
            } else {
                fsync_dir(st, ".");
            }
        } else if (errno != EEXIST) {
            rc = fs_errno(errno, "mkdir", key, p);
        }
        *s = save;
        if (rc || save == '\0')
            break;
    }
    free(p);
    return rc;
}

/* Take the flock of the key's directory (one ".lock" file per directory:
 * writers of one directory serialize for the microseconds a rename takes,
 * and a bulk write locks each directory once), waiting with backoff up to
 * the store timeout.  Returns the lock fd (>= 0) or a negative status. */
static int lock_key(struct fs_store *st, const char *dir, const char *name, const char *key)
{
    (void)name;
    size_t need = strlen(dir) + 16;
    char *lp = H->alloc(need);
    if (!lp)
        return REFIT_ENOMEM;
    snprintf(lp, need, "%s/.lock", dir);
    int fd = openat(st->root_fd, lp, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        int rc = fs_errno(errno, "open lock", key, lp);
        H->free(lp);
        return rc;
    }
    int64_t deadline = rsc_now_ms() + st->timeout_ms, wait = 1;
    while (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno != EWOULDBLOCK && errno != EINTR) {
            int rc = fs_errno(errno, "flock", key, lp);
            close(fd);
            H->free(lp);
            return rc;
        }
        if (rsc_now_ms() >= deadline) {
            close(fd);
            int rc = H->error_set(REFIT_ETIMEDOUT, "store file: key '%s': lock %s held for more than %lld ms",
                                  key, lp, (long long)st->timeout_ms);
            H->free(lp);
            return rc;
        }
        rsc_sleep_ms(wait);
        wait = wait < 32 ? wait * 2 : 32;
    }
    H->free(lp);
    return fd;
}

static void unlock_key(int fd)
{
    if (fd >= 0) {
        flock(fd, LOCK_UN);
        close(fd);
    }
}

/* Read a value file; REFIT_ENOENT when absent or expired. */
static int read_value(struct fs_store *st, const char *key, void **val, size_t *len)
{
    size_t kl = strlen(key);
    char *path = H->alloc(kl + 2);
    if (!path)
        return REFIT_ENOMEM;
    memcpy(path, key, kl);
    memcpy(path + kl, "=", 2);
    int rc = 0;
    int fd = openat(st->root_fd, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = errno == ENOENT || errno == ENOTDIR
                 ? H->error_set(REFIT_ENOENT, "store file: key '%s' not found", key)
                 : fs_errno(errno, "open", key, path);
        H->free(path);
        return rc;
    }
    struct stat sb;
    unsigned char hdr[FS_HDR];
    void *buf = NULL;
    if (fstat(fd, &sb) != 0) {
        rc = fs_errno(errno, "fstat", key, path);
    } else if (sb.st_size < FS_HDR) {
        rc = H->error_set(REFIT_EPROTO, "store file: key '%s': %s is %lld bytes, shorter than the %d-byte header",
                          key, path, (long long)sb.st_size, FS_HDR);
    } else if (read_all(fd, hdr, FS_HDR, 0) != 0) {
        rc = fs_errno(errno, "read", key, path);
    } else if (memcmp(hdr, FS_MAGIC, 4) != 0) {
        rc = H->error_set(REFIT_EPROTO, "store file: key '%s': %s does not start with magic " FS_MAGIC, key, path);
    } else {
        uint64_t exp = get_le64(hdr + 8);
        uint64_t vlen = (uint64_t)sb.st_size - FS_HDR;
        if (exp && exp <= now_ms_wall()) {
            rc = H->error_set(REFIT_ENOENT, "store file: key '%s' not found (expired)", key);
        } else if (vlen > st->max_value) {
            rc = H->error_set(REFIT_ETOOBIG, "store file: key '%s': value of %llu bytes exceeds max_value %llu",
                              key, (unsigned long long)vlen, (unsigned long long)st->max_value);
        } else if (val) {
            buf = H->alloc(vlen ? vlen : 1);
            if (!buf)
                rc = REFIT_ENOMEM;
            else if (vlen && read_all(fd, buf, vlen, FS_HDR) != 0)
                rc = fs_errno(errno, "read", key, path);
            if (!rc) {
                *val = buf;
                buf = NULL;
            }
        }
        if (!rc)
            *len = vlen;
    }
    H->free(buf);
    close(fd);
    H->free(path);
    return rc;
}

/* The temporary file of a write, complete (and fsync'ed when sync).  On
 * success *tmp_out (H->alloc) names it relative to the root. */
static int write_tmp(struct fs_store *st, const char *dir, const char *name, const char *key, const void *val,
                     size_t len, int64_t ttl_ms, int sync, char **tmp_out)
{
    size_t cap = strlen(dir) + strlen(name) + 64;
    char *tmp = H->alloc(cap);
    if (!tmp)
        return REFIT_ENOMEM;
    snprintf(tmp, cap, "%s/.tmp-%s-%ld-%u", dir, name, (long)getpid(), st->counter++);
    unsigned char hdr[FS_HDR] = {0};
    memcpy(hdr, FS_MAGIC, 4);
    put_le64(hdr + 8, ttl_ms > 0 ? now_ms_wall() + (uint64_t)ttl_ms : 0);
    int rc = 0;
    int fd = openat(st->root_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = fs_errno(errno, "create", key, tmp);
    } else {
        if (write_all(fd, hdr, FS_HDR) || (len && write_all(fd, val, len)) || (sync && fsync(fd)))
            rc = fs_errno(errno, "write", key, tmp);
        if (close(fd) && !rc)
            rc = fs_errno(errno, "close", key, tmp);
        if (rc)
            unlinkat(st->root_fd, tmp, 0);
    }
    if (rc)
        H->free(tmp);
    else
        *tmp_out = tmp;
    return rc;
}

/* Rename the temporary file over the key; the caller holds the key's lock.
 * The temporary file is gone afterwards either way. */
static int commit_tmp(struct fs_store *st, const char *dir, const char *name, const char *key, const char *tmp,
                      int sync_dir)
{
    size_t cap = strlen(dir) + strlen(name) + 4;
    char *fin = H->alloc(cap);
    if (!fin) {
        unlinkat(st->root_fd, tmp, 0);
        return REFIT_ENOMEM;
    }
    snprintf(fin, cap, "%s/%s=", dir, name);
    int rc = 0;
    if (renameat(st->root_fd, tmp, st->root_fd, fin) != 0) {
        rc = fs_errno(errno, "rename to", key, fin);
        unlinkat(st->root_fd, tmp, 0);
    } else if (sync_dir && fsync_dir(st, dir) != 0) {
        rc = fs_errno(errno, "fsync directory", key, dir);
    }
    H->free(fin);
    return rc;
}

/* Write key's file atomically; the caller holds the key's lock. */
static int write_value(struct fs_store *st, const char *dir, const char *name, const char *key,
                       const void *val, size_t len, int64_t ttl_ms)
{
    char *tmp = NULL;
    int rc = write_tmp(st, dir, name, key, val, len, ttl_ms, st->fsync, &tmp);
    if (!rc)
        rc = commit_tmp(st, dir, name, key, tmp, st->fsync);
    H->free(tmp);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Open / close */

static int fs_mkdir_p(const char *path)
{
    char *p = strdup(path);
    if (!p)
        return -1;
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != '\0')
            continue;
        char save = *s;
        *s = '\0';
        if (mkdir(p, 0755) != 0 && errno != EEXIST) {
            free(p);
            return -1;
        }
        *s = save;
        if (!save)
            break;
    }
    free(p);
    return 0;
}

static int fs_open(void *obj, const struct refit_store_open_args *a)
{
    struct fs_store *st = obj;
    st->root_fd = -1;
    st->opened = 1;
    st->timeout_ms = a->timeout_ms;
    st->max_value = a->max_value;
    bool fs = true;
    int rc = H->cfg_bool(a->cfg, "fsync", &fs);
    if (!rc)
        rc = H->cfg_duration_ms(a->cfg, "poll_min", &st->poll_min_ms);
    if (!rc)
        rc = H->cfg_duration_ms(a->cfg, "poll_max", &st->poll_max_ms);
    if (rc)
        return rc;
    st->fsync = fs;
    char *base = NULL;
    rc = H->cfg_path(a->cfg, "path", &base);
    if (rc == REFIT_ENOENT) {
        const char *t = getenv("TMPDIR");
        size_t n = strlen(t && *t ? t : "/tmp") + 16;
        base = H->alloc(n);
        if (!base)
            return REFIT_ENOMEM;
        snprintf(base, n, "%s/refit-store", t && *t ? t : "/tmp");
        rc = 0;
    }
    if (rc)
        return rc;
    size_t n = strlen(base) + strlen(a->ns) + 16;
    st->root = H->alloc(n);
    if (!st->root) {
        H->free(base);
        return REFIT_ENOMEM;
    }
    snprintf(st->root, n, "%s/refit/%s", base, a->ns);
    H->free(base);
    if (fs_mkdir_p(st->root) != 0)
        return H->error_set(errno == EACCES ? REFIT_EPERM : REFIT_EIO, "store file: mkdir %s: %s", st->root,
                            strerror(errno));
    st->root_fd = open(st->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (st->root_fd < 0)
        return H->error_set(REFIT_EIO, "store file: open %s: %s", st->root, strerror(errno));
    return 0;
}

static void fs_close(void *obj)
{
    struct fs_store *st = obj;
    if (!st->opened) /* never opened: all zero, nothing to release */
        return;
    if (st->root_fd >= 0)
        close(st->root_fd);
    H->free(st->root);
    st->root = NULL;
    st->root_fd = -1;
    st->opened = 0;
}

/* ------------------------------------------------------------------ */
/* Operations */

/* dir and name of a key (H->alloc), setting rc on failure. */
#define KEY_PARTS_RC(key, rc)                             \
    size_t kl_ = strlen(key) + 2;                         \
    char *dir = H->alloc(kl_), *name = H->alloc(kl_);     \
    if (!dir || !name)                                    \
        rc = REFIT_ENOMEM;                                \
    else                                                  \
        split_key(key, dir, name)

#define KEY_PARTS(key)                                    \
    size_t kl_ = strlen(key) + 2;                         \
    char *dir = H->alloc(kl_), *name = H->alloc(kl_);     \
    if (!dir || !name) {                                  \
        H->free(dir);                                     \
        H->free(name);                                    \
        return REFIT_ENOMEM;                              \
    }                                                     \
    split_key(key, dir, name)

static int fs_put(void *obj, const char *key, const void *val, size_t len, int64_t ttl_ms)
{
    struct fs_store *st = obj;
    KEY_PARTS(key);
    int rc = make_dirs(st, dir, key);
    int lfd = rc ? rc : lock_key(st, dir, name, key);
    if (lfd < 0)
        rc = lfd;
    else
        rc = write_value(st, dir, name, key, val, len, ttl_ms);
    unlock_key(lfd);
    H->free(dir);
    H->free(name);
    return rc;
}

static int fs_get(void *obj, const char *key, void **val, size_t *len)
{
    return read_value(obj, key, val, len);
}

static int fs_del(void *obj, const char *key)
{
    struct fs_store *st = obj;
    KEY_PARTS(key);
    int rc = 0;
    /* A missing directory means a missing key; do not create it to lock. */
    if (strcmp(dir, ".") && faccessat(st->root_fd, dir, F_OK, 0) != 0) {
        rc = H->error_set(REFIT_ENOENT, "store file: key '%s' not found", key);
        goto out;
    }
    int lfd = lock_key(st, dir, name, key);
    if (lfd < 0) {
        rc = lfd;
        goto out;
    }
    char *fin = H->alloc(strlen(key) + 2);
    if (!fin) {
        rc = REFIT_ENOMEM;
    } else {
        sprintf(fin, "%s=", key);
        size_t l;
        /* An expired key is absent for del as for get. */
        int live = read_value(st, key, NULL, &l);
        if (unlinkat(st->root_fd, fin, 0) != 0)
            rc = errno == ENOENT ? H->error_set(REFIT_ENOENT, "store file: key '%s' not found", key)
                                 : fs_errno(errno, "unlink", key, fin);
        else if (fsync_dir(st, dir) != 0)
            rc = fs_errno(errno, "fsync directory", key, dir);
        else if (live == REFIT_ENOENT)
            rc = H->error_set(REFIT_ENOENT, "store file: key '%s' not found (expired)", key);
        H->free(fin);
    }
    unlock_key(lfd);
out:
    H->free(dir);
    H->free(name);
    return rc;
}

static int fs_cas(void *obj, const char *key, const void *expected, size_t elen, const void *val,
                  size_t len, int64_t ttl_ms)
{
    struct fs_store *st = obj;
    KEY_PARTS(key);
    int rc = make_dirs(st, dir, key);
    int lfd = rc ? rc : lock_key(st, dir, name, key);
    if (lfd < 0) {
        rc = lfd;
        goto out;
    }
    void *cur = NULL;
    size_t cl = 0;
    int g = read_value(st, key, &cur, &cl);
    if (g && g != REFIT_ENOENT) {
        rc = g;
    } else {
        int match = expected ? (g == 0 && cl == elen && (elen == 0 || !memcmp(cur, expected, elen)))
                             : g == REFIT_ENOENT;
        if (!match)
            rc = H->error_set(REFIT_ECONFLICT, "store file: key '%s': cas lost (%s)", key,
                              g == REFIT_ENOENT ? "key absent" : expected ? "value differs" : "key exists");
        else
            rc = write_value(st, dir, name, key, val, len, ttl_ms);
    }
    H->free(cur);
    unlock_key(lfd);
out:
    H->free(dir);
    H->free(name);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Walking below a prefix (list and poll) */

struct walk {
    struct fs_store *st;
    const char *prefix; /* full prefix, relative to the root */
    size_t plen;
    /* list */
    char **keys;
    size_t n, cap, bytes;
    /* poll */
    int fingerprint;
    uint64_t fp;
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
        w->fp += h; /* order-free: readdir order is arbitrary */
        w->n++;
        return 0;
    }
    /* Expired keys are not listed. */
    int fd = openat(dfd, fname, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    unsigned char hdr[FS_HDR];
    int ok = read_all(fd, hdr, FS_HDR, 0) == 0 && !memcmp(hdr, FS_MAGIC, 4);
    close(fd);
    uint64_t exp = ok ? get_le64(hdr + 8) : 0;
    if (exp && exp <= now_ms_wall())
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

static int fs_list(void *obj, const char *prefix, char ***keys, size_t *n)
{
    struct walk w = {.st = obj, .prefix = prefix, .plen = strlen(prefix), .ifd = -1};
    char *start = walk_start(prefix);
    if (!start)
        return REFIT_ENOMEM;
    int rc = walk_dir(&w, start, 0);
    free(start);
    char **out = NULL;
    if (!rc && w.n) {
        out = H->alloc(w.n * sizeof(char *) + w.bytes);
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

static int fs_poll(void *obj, const char *prefix, uint64_t since, uint64_t *cursor, int64_t timeout_ms)
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

static int fs_get_many(void *obj, struct refit_store_get_item *items, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        items[i].val = NULL;
        items[i].status = read_value(obj, items[i].key, &items[i].val, &items[i].len);
        if (items[i].status != 0 && items[i].status != REFIT_ENOENT && items[i].status != REFIT_EPROTO &&
            items[i].status != REFIT_ETOOBIG) {
            int rc = items[i].status;
            for (size_t j = 0; j < i; j++) {
                H->free(items[j].val);
                items[j].val = NULL;
            }
            return rc;
        }
    }
    return 0;
}

/* Many keys: every value is written to its temporary file first, one
 * syncfs() makes them all durable, each is renamed under its key's lock,
 * and a second syncfs() makes the renames durable: two flushes instead of
 * two per key (10,000 keys: seconds instead of minutes on a busy disk). */
#define FS_BATCH_MIN 8

static int fs_put_many(void *obj, const struct refit_store_put_item *items, size_t n)
{
    struct fs_store *st = obj;
    if (n < FS_BATCH_MIN) {
        for (size_t i = 0; i < n; i++) {
            int rc = fs_put(obj, items[i].key, items[i].val, items[i].len, items[i].ttl_ms);
            if (rc)
                return rc;
        }
        return 0;
    }
    char **tmps = H->calloc(n, sizeof(char *));
    if (!tmps)
        return REFIT_ENOMEM;
    int rc = 0;
    size_t i;
    for (i = 0; !rc && i < n; i++) {
        const char *key = items[i].key;
        KEY_PARTS_RC(key, rc);
        if (!rc)
            rc = make_dirs(st, dir, key);
        if (!rc)
            rc = write_tmp(st, dir, name, key, items[i].val, items[i].len, items[i].ttl_ms, 0, &tmps[i]);
        H->free(dir);
        H->free(name);
    }
    if (!rc && st->fsync && syncfs(st->root_fd) != 0)
        rc = fs_errno(errno, "syncfs", items[0].key, st->root);
    /* Consecutive keys of one directory share one lock. */
    int lfd = -1;
    char *locked = NULL;
    for (i = 0; i < n; i++) {
        if (!tmps[i])
            continue;
        if (rc) { /* an earlier failure: drop what was staged */
            unlinkat(st->root_fd, tmps[i], 0);
            continue;
        }
        const char *key = items[i].key;
        KEY_PARTS_RC(key, rc);
        if (!rc && (!locked || strcmp(locked, dir))) {
            unlock_key(lfd);
            H->free(locked);
            locked = NULL;
            lfd = lock_key(st, dir, name, key);
            if (lfd < 0)
                rc = lfd;
            else
                locked = dir, dir = NULL;
        }
        if (rc)
            unlinkat(st->root_fd, tmps[i], 0);
        else
            rc = commit_tmp(st, locked, name, key, tmps[i], 0);
        H->free(dir);
        H->free(name);
    }
    unlock_key(lfd);
    H->free(locked);
    if (!rc && st->fsync && syncfs(st->root_fd) != 0)
        rc = fs_errno(errno, "syncfs", items[0].key, st->root);
    for (i = 0; i < n; i++)
        H->free(tmps[i]);
    H->free(tmps);
    return rc;
}

static uint64_t fs_generation(void *obj)
{
    (void)obj;
    return 1; /* files do not forget */
}

static const struct refit_store_ops fs_ops = {
    .size = sizeof(struct refit_store_ops),
    .obj_size = sizeof(struct fs_store),
    .open = fs_open,
    .close = fs_close,
    .put = fs_put,
    .get = fs_get,
    .del = fs_del,
    .list = fs_list,
    .cas = fs_cas,
    .poll = fs_poll,
    .get_many = fs_get_many,
    .put_many = fs_put_many,
    .generation = fs_generation,
};

static int fs_load(const struct refit_host *host)
{
    if (host->size < offsetof(struct refit_host, cfg_has) + sizeof(host->cfg_has))
        return REFIT_EABI;
    H = host;
    rsc_load(host);
    return 0;
}

static const struct refit_plugin fs_plugin = {
    .abi_major = REFIT_ABI_MAJOR,
    .abi_minor = REFIT_ABI_MINOR,
    .kind = REFIT_PLUGIN_STORE,
    .name = "file",
    .version = "1.0",
    .description = "keys as files below a directory: atomic rename, flock, inotify",
    .config = fs_fields,
    .n_config = sizeof(fs_fields) / sizeof(fs_fields[0]),
    .load = fs_load,
    .ops = &fs_ops,
};

REFIT_PLUGIN_EXPORT const struct refit_plugin *refit_plugin_entry(void)
{
    return &fs_plugin;
}
