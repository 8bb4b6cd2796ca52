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

struct fs_store {
    int root_fd; /* <path>/refit/<ns>; -1 when not open */
    char *root;
    int fsync;
    int64_t timeout_ms, poll_min_ms, poll_max_ms;
    uint64_t max_value;
    unsigned counter;
    int opened;
};

uint64_t fs_now_ms_wall(void);
uint64_t fs_get_le64(const unsigned char *p);
/* pread exactly len bytes at off: 0, or -1 with errno (EPROTO: file shrank). */
int fs_read_all(int fd, void *buf, size_t len, off_t off);

/* file_walk.c: the list and poll operations. */
int fs_list(void *obj, const char *prefix, char ***keys, size_t *n);
int fs_poll(void *obj, const char *prefix, uint64_t since, uint64_t *cursor, int64_t timeout_ms);

#endif
