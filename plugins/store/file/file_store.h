/* file_store.h — what the file store's two files share: the store object,
 * the value file's header, and the helpers the walks (file_walk.c) use. */
#ifndef REFIT_FILE_STORE_H
#define REFIT_FILE_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "refit/plugin.h"

#define FS_HDR 16
#define FS_MAGIC "RFS1"
#define FS_MAX_WATCHES 1024

extern const struct refit_host *fs_h; /* set by load(); hidden like the rest */

/* A watched prefix's keys as last seen (file_watch.c): sorted keys and
 * a hash of each one's (name, inode, mtime, size). */
struct fs_snap {
    char **keys;
    uint64_t *hashes;
    size_t n;
};

#define FS_MAX_WATCHED 16

struct fs_watched {
    char *prefix;
    uint64_t cursor;
    struct fs_snap snap;
};

struct fs_store {
    int root_fd; /* <path>/refit/<ns>; -1 when not open */
    char *root;
    int fsync;
    int64_t timeout_ms, poll_min_ms, poll_max_ms;
    uint64_t max_value;
    unsigned counter;
    int opened;
    /* watch(): the last snapshot per prefix, and the cursors issued. */
    struct fs_watched watched[FS_MAX_WATCHED];
    size_t n_watched;
    uint64_t watch_seq;
};

uint64_t fs_now_ms_wall(void);
uint64_t fs_get_le64(const unsigned char *p);
/* pread exactly len bytes at off: 0, or -1 with errno (EPROTO: file shrank). */
int fs_read_all(int fd, void *buf, size_t len, off_t off);

/* file_walk.c: the list and poll operations. */
int fs_list(void *obj, const char *prefix, char ***keys, size_t *n);
int fs_poll(void *obj, const char *prefix, uint64_t since, uint64_t *cursor, int64_t timeout_ms);

/* The keys below prefix with their hashes, sorted; inotify watches on the
 * directories walked when ifd >= 0 (file_walk.c). */
int fs_walk_snapshot(struct fs_store *st, const char *prefix, int ifd, struct fs_snap *out);
void fs_snap_free(struct fs_snap *s);
/* file_watch.c: the watch operation, and freeing its snapshots at close. */
int fs_watch(void *obj, const char *prefix, uint64_t since, uint64_t *cursor, int64_t timeout_ms, char ***keys,
             size_t *n);
void fs_watch_fini(struct fs_store *st);

#endif
