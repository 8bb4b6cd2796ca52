/* tcp_secret.c — the tcp transport's key when no token is configured.
 *
 * Without a token the transport listens on loopback only, but every user of
 * the host can reach loopback: with an empty HMAC key any of them could
 * authenticate and read or write registered memory.  So every process of
 * one user on one host shares a secret that only that user can read: 32
 * random bytes in <secret_dir>/tcp.secret (secret_dir defaults to
 * ${TMPDIR:-/tmp}/refit-<uid>).  The directory must be this user's and
 * writable by nobody else, the file a regular 0600 file of this user; the
 * first process creates it (a complete temporary file hard-linked into
 * place, so a racing process either wins the link or reads a whole file). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tcp_int.h"

#define SECRET_FILE "tcp.secret"
#define SECRET_LEN 32

static int secret_err(refit_tp_t *tp, const char *path, const char *why)
{
    return tcp_h->error_set(REFIT_EPERM, "tcp: %s: local secret %s: %s (without a token every process "
                            "of this user on this host authenticates with it; set token_file or "
                            "REFIT_TCP_TOKEN, or secret_dir)", tp->name, path, why);
}

/* The directory, created 0700 when absent, checked like the store's. */
static int open_dir(refit_tp_t *tp, const char *dir, int *out)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return tcp_h->error_set(REFIT_EIO, "tcp: %s: secret_dir %s: mkdir: %s", tp->name, dir,
                                strerror(errno));
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return tcp_h->error_set(REFIT_EIO, "tcp: %s: secret_dir %s: %s", tp->name, dir, strerror(errno));
    struct stat sb;
    char why[160] = "";
    if (fstat(fd, &sb) != 0)
        snprintf(why, sizeof(why), "stat: %s", strerror(errno));
    else if (sb.st_uid != geteuid())
        snprintf(why, sizeof(why), "belongs to uid %u, not to this user (uid %u)", (unsigned)sb.st_uid,
                 (unsigned)geteuid());
    else if (sb.st_mode & (S_IWGRP | S_IWOTH))
        snprintf(why, sizeof(why), "writable by group or others (mode %04o)", (unsigned)(sb.st_mode & 07777));
    if (why[0]) {
        close(fd);
        return secret_err(tp, dir, why);
    }
    *out = fd;
    return 0;
}

/* Write a fresh secret and link it into place; EEXIST when another process
 * was first (then its file is read). */
static int create_secret(int dfd)
{
    uint8_t key[SECRET_LEN];
    char tmp[64];
    uint32_t r;
    if (tcp_fill_random(key, sizeof(key)) || tcp_fill_random(&r, sizeof(r)))
        return EIO;
    snprintf(tmp, sizeof(tmp), ".%s.%ld.%08x", SECRET_FILE, (long)getpid(), r);
    int fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return errno;
    int e = 0;
    if (write(fd, key, sizeof(key)) != (ssize_t)sizeof(key) || fsync(fd))
        e = errno ? errno : EIO;
    close(fd);
    memset(key, 0, sizeof(key));
    if (!e && linkat(dfd, tmp, dfd, SECRET_FILE, 0) != 0)
        e = errno;
    unlinkat(dfd, tmp, 0);
    return e;
}

static int read_secret(refit_tp_t *tp, int dfd, const char *path)
{
    int fd = openat(dfd, SECRET_FILE, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0)
        return errno == ENOENT ? REFIT_ENOENT
                               : secret_err(tp, path, errno == ELOOP ? "is a symbolic link" : strerror(errno));
    struct stat sb;
    char why[160] = "";
    if (fstat(fd, &sb) != 0)
        snprintf(why, sizeof(why), "stat: %s", strerror(errno));
    else if (!S_ISREG(sb.st_mode))
        snprintf(why, sizeof(why), "is not a regular file");
    else if (sb.st_uid != geteuid())
        snprintf(why, sizeof(why), "belongs to uid %u, not to this user", (unsigned)sb.st_uid);
    else if (sb.st_mode & 077)
        snprintf(why, sizeof(why), "readable or writable by group or others (mode %04o)",
                 (unsigned)(sb.st_mode & 07777));
    else if (sb.st_size != SECRET_LEN)
        snprintf(why, sizeof(why), "is %lld bytes, not %d", (long long)sb.st_size, SECRET_LEN);
    if (!why[0]) {
        tp->token = malloc(SECRET_LEN);
        if (!tp->token || read(fd, tp->token, SECRET_LEN) != SECRET_LEN)
            snprintf(why, sizeof(why), "cannot be read");
        else
            tp->token_len = SECRET_LEN;
    }
    close(fd);
    if (why[0]) {
        free(tp->token);
        tp->token = NULL;
        return secret_err(tp, path, why);
    }
    return 0;
}

int tcp_local_secret(refit_tp_t *tp, const char *secret_dir)
{
    char dir[4096], path[4200];
    if (secret_dir) {
        snprintf(dir, sizeof(dir), "%s", secret_dir);
    } else {
        const char *t = getenv("TMPDIR");
        snprintf(dir, sizeof(dir), "%s/refit-%u", t && *t ? t : "/tmp", (unsigned)geteuid());
    }
    snprintf(path, sizeof(path), "%s/%s", dir, SECRET_FILE);
    int dfd = -1, rc = open_dir(tp, dir, &dfd);
    if (rc)
        return rc;
    rc = read_secret(tp, dfd, path);
    if (rc == REFIT_ENOENT) {
        int e = create_secret(dfd);
        if (e && e != EEXIST)
            rc = tcp_h->error_set(REFIT_EIO, "tcp: %s: local secret %s: create: %s", tp->name, path,
                                  strerror(e));
        else
            rc = read_secret(tp, dfd, path);
        if (rc == REFIT_ENOENT)
            rc = secret_err(tp, path, "vanished while being created");
    }
    close(dfd);
    if (!rc && !(tp->secret_path = strdup(path)))
        rc = tcp_h->error_set(REFIT_ENOMEM, "tcp: %s: out of memory", tp->name);
    return rc;
}
