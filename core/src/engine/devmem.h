/* devmem.h — the core's thin layer over the CUDA runtime (internal): what
 * kind of memory a pointer is, pinning host buffers, copies between host
 * and device on two streams with an event per copy, and the device-memory
 * pool behind refit/cuda_pool.h.
 *
 * devmem.c implements it with the CUDA runtime in a CUDA build;
 * devmem_stub.c otherwise, where every call is REFIT_ENOTSUP with a message
 * saying librefit was built without CUDA.  The engine's device paths
 * (pubdev.c, rcvdev.c) are plain C over this API and built either way.
 * Every CUDA error becomes REFIT_EIO with the error's name and text and
 * what was being done. */
#ifndef RF_DEVMEM_H
#define RF_DEVMEM_H

#include <stddef.h>
#include <stdint.h>

/* 1 in a CUDA build. */
int rf_dev_built(void);

/* 0 and the device ordinal when p is device (or managed) memory.
 * REFIT_EINVAL (message: what it is instead) for host memory, pinned or
 * not; REFIT_ENOTSUP without CUDA or without a usable device.  `what`
 * ("publisher trainer-0: tensor 'x'") starts the message. */
int rf_dev_locate(const void *p, const char *what, int *device);

/* Make `device` current for the calling thread; *saved receives the one to
 * give back to rf_dev_leave (the caller's thread is not ours to change). */
int rf_dev_enter(int device, int *saved);
void rf_dev_leave(int saved);

/* Page-lock host memory (cudaHostRegister) so copies from and to it run
 * asynchronously at full bandwidth; rf_dev_unpin before it is freed. */
int rf_dev_pin(void *p, size_t n, const char *what);
void rf_dev_unpin(void *p);

/* The pool slab holding p: 0 with its base and length, REFIT_ENOENT when p
 * is not pool memory. */
int rf_dev_pool_find(const void *p, void **base, size_t *len);

enum rf_dcopy_dir { RF_D2H = 1, RF_H2D = 2 };

/* Copies on two streams of one device, each followed by an event.  The
 * streams are ordinary (blocking) streams: they wait for work the caller
 * queued on the legacy default stream.  Not for concurrent use. */
struct rf_dcopy;
int rf_dcopy_create(int device, struct rf_dcopy **out);
/* Waits for outstanding copies first; safe on NULL. */
void rf_dcopy_destroy(struct rf_dcopy *c);
int rf_dcopy_device(const struct rf_dcopy *c);
/* Queue one copy, alternating the streams; *ev names its completion. */
int rf_dcopy_post(struct rf_dcopy *c, void *dst, const void *src, size_t n, enum rf_dcopy_dir dir,
                  size_t *ev);
/* Wait for the copy `ev` (and what its stream did before it). */
int rf_dcopy_wait(struct rf_dcopy *c, size_t ev);
/* Wait for everything queued; events are then reused from 0. */
int rf_dcopy_sync(struct rf_dcopy *c);

#endif
