/* refit/safetensors.h — safetensors reader (mmap, fully validated header)
 * and writer (atomic), plus sharded checkpoints through
 * model.safetensors.index.json.
 *
 * Format: 8-byte little-endian header length N, N bytes of JSON
 * {"name": {"dtype": "BF16", "shape": [..], "data_offsets": [b, e]}, ...,
 *  "__metadata__": {str: str}}, then the data; offsets are relative to the
 * end of the header.  The reader checks the header length against the file
 * size, every offset inside the data, no overlaps, dtype x shape = byte size,
 * unique names; a failure names the file and the tensor.  Gaps between
 * tensors are accepted (PyTorch's reader refuses them; refit's writer never
 * leaves any), and so are unknown keys in a tensor's entry. */
#ifndef REFIT_SAFETENSORS_H
#define REFIT_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "refit/dtype.h"

#ifdef __cplusplus
extern "C" {
#endif

struct refit_st_tensor {
    const char *name;
    enum refit_dtype dtype;
    int ndim;
    int64_t shape[REFIT_MAX_DIMS];
    /* Into the mapping; valid until the file is closed.  Not necessarily
     * aligned for the dtype (the format only aligns the data area, and a
     * tensor after an odd-sized one starts unaligned): copy, or use
     * memcpy/unaligned loads, before typed access. */
    const void *data;
    size_t nbytes;
    const char *file; /* path of the file holding it */
};

typedef struct refit_st_file refit_st_file_t;

/* Map and validate one file.  Close with refit_st_close.  A corrupt file is
 * REFIT_EPROTO (REFIT_EIO, REFIT_ENOENT for the OS's errors) with a message
 * naming the file and, where one is at fault, the tensor. */
int refit_st_open(const char *path, refit_st_file_t **out);
/* Parse and validate a safetensors image already in memory (received from a
 * peer, say).  Nothing is copied: buf must outlive the file object, and the
 * tensors' data point into it.  `name` is used in error messages and as the
 * tensors' `file`. */
int refit_st_open_memory(const void *buf, size_t len, const char *name, refit_st_file_t **out);
/* The path (or name) the file was opened with. */
const char *refit_st_path(const refit_st_file_t *f);
void refit_st_close(refit_st_file_t *f);
size_t refit_st_count(const refit_st_file_t *f);
/* Tensors in ascending data-offset order. */
const struct refit_st_tensor *refit_st_at(const refit_st_file_t *f, size_t i);
/* NULL when absent. */
const struct refit_st_tensor *refit_st_find(const refit_st_file_t *f, const char *name);
/* __metadata__ value or NULL. */
const char *refit_st_metadata(const refit_st_file_t *f, const char *key);

/* A checkpoint directory: model.safetensors.index.json (weight_map over
 * several files) or a single model.safetensors, or any *.safetensors. */
typedef struct refit_st_checkpoint refit_st_checkpoint_t;
int refit_st_checkpoint_open(const char *dir, refit_st_checkpoint_t **out);
void refit_st_checkpoint_close(refit_st_checkpoint_t *c);
size_t refit_st_checkpoint_count(const refit_st_checkpoint_t *c);
/* Sorted by name. */
const struct refit_st_tensor *refit_st_checkpoint_at(const refit_st_checkpoint_t *c, size_t i);
const struct refit_st_tensor *refit_st_checkpoint_find(const refit_st_checkpoint_t *c,
                                                       const char *name);

/* Writer: tensors are written in the order added (see
 * refit_st_writer_set_order), data referenced (not copied) until write
 * returns unless added with _copy.  The data of consecutive tensors is
 * contiguous (PyTorch's reader rejects gaps) and starts 8-byte aligned
 * (the header is padded with spaces, as the reference writer does). */
typedef struct refit_st_writer refit_st_writer_t;
int refit_st_writer_create(refit_st_writer_t **out);
void refit_st_writer_destroy(refit_st_writer_t *w);
int refit_st_writer_add(refit_st_writer_t *w, const char *name, enum refit_dtype dtype,
                        int ndim, const int64_t *shape, const void *data, size_t nbytes);
int refit_st_writer_add_copy(refit_st_writer_t *w, const char *name, enum refit_dtype dtype,
                             int ndim, const int64_t *shape, const void *data, size_t nbytes);
int refit_st_writer_set_metadata(refit_st_writer_t *w, const char *key, const char *value);

enum refit_st_order {
    REFIT_ST_ORDER_ADDED = 0, /* default */
    REFIT_ST_ORDER_NAME,      /* sorted by name (strcmp) */
    /* Element size descending, then name: what the reference writer does,
     * so that every tensor's data is naturally aligned. */
    REFIT_ST_ORDER_ALIGNED
};
void refit_st_writer_set_order(refit_st_writer_t *w, enum refit_st_order order);
/* Temp file in the same directory, fsync, rename. */
int refit_st_writer_write(refit_st_writer_t *w, const char *path);

#ifdef __cplusplus
}
#endif
#endif
