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
 * with a backoff timer for what inotify misses (new subdirectories, NFS).
 *
 * Permissions: the values hold remote-key secrets (a key and its secret
 * let a peer read or write registered memory), so the store is this user's
 * alone: directories are created 0700 and files 0600, and open refuses a
 * store directory that another user owns or that group or others may write
 * (docs/security.md).  Values are opened O_NOFOLLOW|O_NONBLOCK and must be
 * regular files, so a FIFO or a symlink planted at a key's path is an error,
 * never a wait or a read of something else. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "refit/plugin.h"
#include "refit/store.h"
#include "file_store.h"
#include "store_common.h"

const struct refit_host *fs_h;

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

uint64_t fs_now_ms_wall(void)
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
    return fs_h->error_set(st, "store file: key '%s': %s %s: %s (errno %d)", key, what, path, strerror(err), err);
}

static void put_le64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

uint64_t fs_get_le64(const unsigned char *p)
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

int fs_read_all(int fd, void *buf, size_t len, off_t off)
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
        if (mkdirat(st->root_fd, p, 0700) == 0) {
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
    char *lp = fs_h->alloc(need);
    if (!lp)
        return REFIT_ENOMEM;
    snprintf(lp, need, "%s/.lock", dir);
    int fd = openat(st->root_fd, lp, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0600);
    struct stat sb;
    if (fd >= 0 && (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode))) {
        close(fd);
        fd = -1;
        errno = EPROTO; /* something else planted where our lock lives */
    }
    if (fd < 0) {
        int rc = fs_errno(errno, "open lock", key, lp);
        fs_h->free(lp);
        return rc;
    }
    int64_t deadline = rsc_now_ms() + st->timeout_ms, wait = 1;
    while (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno != EWOULDBLOCK && errno != EINTR) {
            int rc = fs_errno(errno, "flock", key, lp);
            close(fd);
            fs_h->free(lp);
            return rc;
        }
        if (rsc_now_ms() >= deadline) {
            close(fd);
            int rc = fs_h->error_set(REFIT_ETIMEDOUT, "store file: key '%s': lock %s held for more than %lld ms",
                                  key, lp, (long long)st->timeout_ms);
            fs_h->free(lp);
            return rc;
        }
        rsc_sleep_ms(wait);
        wait = wait < 32 ? wait * 2 : 32;
    }
    fs_h->free(lp);
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
    char *path = fs_h->alloc(kl + 2);
    if (!path)
        return REFIT_ENOMEM;
    memcpy(path, key, kl);
    memcpy(path + kl, "=", 2);
    int rc = 0;
    int fd = openat(st->root_fd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0 && errno == ELOOP) {
        rc = fs_h->error_set(REFIT_EPROTO, "store file: key '%s': %s is a symbolic link, not a value "
                          "this store wrote", key, path);
        fs_h->free(path);
        return rc;
    }
    if (fd < 0) {
        rc = errno == ENOENT || errno == ENOTDIR
                 ? fs_h->error_set(REFIT_ENOENT, "store file: key '%s' not found", key)
                 : fs_errno(errno, "open", key, path);
        fs_h->free(path);
        return rc;
    }
    struct stat sb;
    unsigned char hdr[FS_HDR];
    void *buf = NULL;
    if (fstat(fd, &sb) != 0) {
        rc = fs_errno(errno, "fstat", key, path);
    } else if (!S_ISREG(sb.st_mode)) {
        rc = fs_h->error_set(REFIT_EPROTO, "store file: key '%s': %s is not a regular file (mode %06o), "
                          "not a value this store wrote", key, path, (unsigned)sb.st_mode);
    } else if (sb.st_size < FS_HDR) {
        rc = fs_h->error_set(REFIT_EPROTO, "store file: key '%s': %s is %lld bytes, shorter than the %d-byte header",
                          key, path, (long long)sb.st_size, FS_HDR);
    } else if (fs_read_all(fd, hdr, FS_HDR, 0) != 0) {
        rc = fs_errno(errno, "read", key, path);
    } else if (memcmp(hdr, FS_MAGIC, 4) != 0) {
        rc = fs_h->error_set(REFIT_EPROTO, "store file: key '%s': %s does not start with magic " FS_MAGIC, key, path);
    } else {
        uint64_t exp = fs_get_le64(hdr + 8);
        uint64_t vlen = (uint64_t)sb.st_size - FS_HDR;
        if (exp && exp <= fs_now_ms_wall()) {
            rc = fs_h->error_set(REFIT_ENOENT, "store file: key '%s' not found (expired)", key);
        } else if (vlen > st->max_value) {
            rc = fs_h->error_set(REFIT_ETOOBIG, "store file: key '%s': value of %llu bytes exceeds max_value %llu",
                              key, (unsigned long long)vlen, (unsigned long long)st->max_value);
        } else if (val) {
            buf = fs_h->alloc(vlen ? vlen : 1);
            if (!buf)
                rc = REFIT_ENOMEM;
            else if (vlen && fs_read_all(fd, buf, vlen, FS_HDR) != 0)
                rc = fs_errno(errno, "read", key, path);
            if (!rc) {
                *val = buf;
                buf = NULL;
            }
        }
        if (!rc)
            *len = vlen;
    }
    fs_h->free(buf);
    close(fd);
    fs_h->free(path);
    return rc;
}

/* The temporary file of a write, complete (and fsync'ed when sync).  On
 * success *tmp_out (fs_h->alloc) names it relative to the root. */
static int write_tmp(struct fs_store *st, const char *dir, const char *name, const char *key, const void *val,
                     size_t len, int64_t ttl_ms, int sync, char **tmp_out)
{
    size_t cap = strlen(dir) + strlen(name) + 64;
    char *tmp = fs_h->alloc(cap);
    if (!tmp)
        return REFIT_ENOMEM;
    snprintf(tmp, cap, "%s/.tmp-%s-%ld-%u", dir, name, (long)getpid(), st->counter++);
    unsigned char hdr[FS_HDR] = {0};
    memcpy(hdr, FS_MAGIC, 4);
    put_le64(hdr + 8, ttl_ms > 0 ? fs_now_ms_wall() + (uint64_t)ttl_ms : 0);
    int rc = 0;
    int fd = openat(st->root_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
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
        fs_h->free(tmp);
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
    char *fin = fs_h->alloc(cap);
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
    fs_h->free(fin);
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
    fs_h->free(tmp);
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
        if (mkdir(p, 0700) != 0 && errno != EEXIST) {
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

/* A directory of the store must be this user's to write alone: whoever
 * else could write it could replace values or read what we put there. */
static int check_dir(int fd, const char *path)
{
    struct stat sb;
    if (fstat(fd, &sb) != 0)
        return fs_h->error_set(REFIT_EIO, "store file: stat %s: %s", path, strerror(errno));
    if (sb.st_uid != geteuid())
        return fs_h->error_set(REFIT_EPERM, "store file: directory %s belongs to uid %u, not to this user "
                            "(uid %u): its owner could read the remote-key secrets stored there or "
                            "replace them; use a directory of your own (store.file.path)", path,
                            (unsigned)sb.st_uid, (unsigned)geteuid());
    if (sb.st_mode & (S_IWGRP | S_IWOTH))
        return fs_h->error_set(REFIT_EPERM, "store file: directory %s is writable by %s (mode %04o): "
                            "they could replace the store's values; chmod go-w it or use a directory "
                            "of your own (store.file.path)", path,
                            (sb.st_mode & S_IWOTH) ? "every user" : "its group",
                            (unsigned)(sb.st_mode & 07777));
    return 0;
}

/* Open <base>/refit/<ns>, checking the base and both levels below it;
 * the levels below are ours, so they may not be symbolic links. */
static int open_root(struct fs_store *st, size_t base_len)
{
    char *path = fs_h->alloc(strlen(st->root) + 1);
    if (!path)
        return REFIT_ENOMEM;
    strcpy(path, st->root);
    size_t cut[3] = {base_len, base_len + strlen("/refit"), strlen(st->root)};
    int fd = -1, rc = 0;
    for (int i = 0; i < 3 && !rc; i++) {
        char save = path[cut[i]];
        path[cut[i]] = '\0';
        if (fd >= 0)
            close(fd);
        fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC | (i ? O_NOFOLLOW : 0));
        if (fd < 0)
            rc = fs_h->error_set(errno == EACCES ? REFIT_EPERM : REFIT_EIO, "store file: open %s: %s%s", path,
                              strerror(errno), errno == ELOOP ? " (a symbolic link where the store "
                              "keeps a directory)" : "");
        else
            rc = check_dir(fd, path);
        path[cut[i]] = save;
    }
    fs_h->free(path);
    if (rc) {
        if (fd >= 0)
            close(fd);
        return rc;
    }
    st->root_fd = fd;
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
    int rc = fs_h->cfg_bool(a->cfg, "fsync", &fs);
    if (!rc)
        rc = fs_h->cfg_duration_ms(a->cfg, "poll_min", &st->poll_min_ms);
    if (!rc)
        rc = fs_h->cfg_duration_ms(a->cfg, "poll_max", &st->poll_max_ms);
    if (rc)
        return rc;
    st->fsync = fs;
    char *base = NULL;
    rc = fs_h->cfg_path(a->cfg, "path", &base);
    if (rc == REFIT_ENOENT) {
        const char *t = getenv("TMPDIR");
        size_t n = strlen(t && *t ? t : "/tmp") + 16;
        base = fs_h->alloc(n);
        if (!base)
            return REFIT_ENOMEM;
        snprintf(base, n, "%s/refit-store", t && *t ? t : "/tmp");
        rc = 0;
    }
    if (rc)
        return rc;
    size_t n = strlen(base) + strlen(a->ns) + 16;
    st->root = fs_h->alloc(n);
    if (!st->root) {
        fs_h->free(base);
        return REFIT_ENOMEM;
    }
    snprintf(st->root, n, "%s/refit/%s", base, a->ns);
    size_t base_len = strlen(base);
    fs_h->free(base);
    if (fs_mkdir_p(st->root) != 0)
        return fs_h->error_set(errno == EACCES ? REFIT_EPERM : REFIT_EIO, "store file: mkdir %s: %s", st->root,
                            strerror(errno));
    return open_root(st, base_len);
}

static void fs_close(void *obj)
{
    struct fs_store *st = obj;
    if (!st->opened) /* never opened: all zero, nothing to release */
        return;
    fs_watch_fini(st);
    if (st->root_fd >= 0)
        close(st->root_fd);
    fs_h->free(st->root);
    st->root = NULL;
    st->root_fd = -1;
    st->opened = 0;
}

/* ------------------------------------------------------------------ */
/* Operations */

/* dir and name of a key (fs_h->alloc), setting rc on failure. */
#define KEY_PARTS_RC(key, rc)                             \
    size_t kl_ = strlen(key) + 2;                         \
    char *dir = fs_h->alloc(kl_), *name = fs_h->alloc(kl_);     \
    if (!dir || !name)                                    \
        rc = REFIT_ENOMEM;                                \
    else                                                  \
        split_key(key, dir, name)

#define KEY_PARTS(key)                                    \
    size_t kl_ = strlen(key) + 2;                         \
    char *dir = fs_h->alloc(kl_), *name = fs_h->alloc(kl_);     \
    if (!dir || !name) {                                  \
        fs_h->free(dir);                                     \
        fs_h->free(name);                                    \
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
    fs_h->free(dir);
    fs_h->free(name);
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
        rc = fs_h->error_set(REFIT_ENOENT, "store file: key '%s' not found", key);
        goto out;
    }
    int lfd = lock_key(st, dir, name, key);
    if (lfd < 0) {
        rc = lfd;
        goto out;
    }
    char *fin = fs_h->alloc(strlen(key) + 2);
    if (!fin) {
        rc = REFIT_ENOMEM;
    } else {
        sprintf(fin, "%s=", key);
        size_t l;
        /* An expired key is absent for del as for get. */
        int live = read_value(st, key, NULL, &l);
        if (unlinkat(st->root_fd, fin, 0) != 0)
            rc = errno == ENOENT ? fs_h->error_set(REFIT_ENOENT, "store file: key '%s' not found", key)
                                 : fs_errno(errno, "unlink", key, fin);
        else if (fsync_dir(st, dir) != 0)
            rc = fs_errno(errno, "fsync directory", key, dir);
        else if (live == REFIT_ENOENT)
            rc = fs_h->error_set(REFIT_ENOENT, "store file: key '%s' not found (expired)", key);
        fs_h->free(fin);
    }
    unlock_key(lfd);
out:
    fs_h->free(dir);
    fs_h->free(name);
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
            rc = fs_h->error_set(REFIT_ECONFLICT, "store file: key '%s': cas lost (%s)", key,
                              g == REFIT_ENOENT ? "key absent" : expected ? "value differs" : "key exists");
        else
            rc = write_value(st, dir, name, key, val, len, ttl_ms);
    }
    fs_h->free(cur);
    unlock_key(lfd);
out:
    fs_h->free(dir);
    fs_h->free(name);
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
                fs_h->free(items[j].val);
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
    char **tmps = fs_h->calloc(n, sizeof(char *));
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
        fs_h->free(dir);
        fs_h->free(name);
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
            fs_h->free(locked);
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
        fs_h->free(dir);
        fs_h->free(name);
    }
    unlock_key(lfd);
    fs_h->free(locked);
    if (!rc && st->fsync && syncfs(st->root_fd) != 0)
        rc = fs_errno(errno, "syncfs", items[0].key, st->root);
    for (i = 0; i < n; i++)
        fs_h->free(tmps[i]);
    fs_h->free(tmps);
    return rc;
}

static uint64_t fs_generation(void *obj)
{
    (void)obj;
    return 1; /* files do not forget */
}

/* A directory has no round trips to save: the reads, then the writes. */
static int fs_get_put_many(void *obj, struct refit_store_get_item *gets, size_t n_get,
                           const struct refit_store_put_item *puts, size_t n_put)
{
    int rc = fs_get_many(obj, gets, n_get);
    if (!rc && (rc = fs_put_many(obj, puts, n_put)))
        for (size_t i = 0; i < n_get; i++) {
            fs_h->free(gets[i].val);
            gets[i].val = NULL;
        }
    return rc;
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
    .watch = fs_watch,
    .get_put_many = fs_get_put_many,
};

static int fs_load(const struct refit_host *host)
{
    if (host->size < offsetof(struct refit_host, cfg_has) + sizeof(host->cfg_has))
        return REFIT_EABI;
    fs_h = host;
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
