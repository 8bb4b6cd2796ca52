/* devpath.h — the engine's device-memory paths (internal): a publisher's
 * CUDA tensors (pubdev.c) and a receiver's CUDA destinations (rcvdev.c).
 * publisher.c and the receiver's stages (dests.c, buffers.c, transfer.c,
 * plan via receiver.c) call these at a few points; the logic lives here.  Both files are plain C over devmem.h, built in every
 * configuration (without CUDA the first call says so). */
#ifndef RF_DEVPATH_H
#define RF_DEVPATH_H

#include <stddef.h>
#include <stdint.h>

#include "receiver.h"
#include "refit/transport_core.h"
#include "sums.h"

/* ---- publisher ---- */

struct rf_pubdev;

/* A tensor added as REFIT_MEM_CUDA: checks that ptr is device memory on the
 * same device as the publisher's other device tensors, and creates *pd on
 * the first one.  `what` names the publisher and tensor for messages. */
int rf_pubdev_add(struct rf_pubdev **pd, const char *what, const void *ptr);
/* Waits for nothing (publish always ends synchronized); safe on NULL. */
void rf_pubdev_destroy(struct rf_pubdev *pd);
/* Whether a tensor goes into the host arena ("gathered") rather than being
 * registered where it is.  Host tensors: copy mode or small, as always.
 * Device tensors also when the transport does not reach device memory, or
 * in push mode (its trainer-side FP8 quantization reads the registered
 * regions on the host); but not when small over a transport that reaches
 * device memory only, where a host arena could not be registered. */
int rf_pubdev_gathered(const refit_transport_t *tp, uint32_t memtype, int copy_mode, int small, int push);
/* The slab of refit's device pool holding ptr (register the slab once, not
 * each tensor): 0 with base and length, else REFIT_ENOENT. */
int rf_pubdev_slab(const void *ptr, void **base, size_t *len);
/* Before a registered host arena is freed. */
void rf_pubdev_unpin(struct rf_pubdev *pd, void *base);

/* One publish: begin (arena: the host arena this version's staged device
 * tensors go to, pinned on first use; NULL when none is staged), queue
 * every device tensor in catalog order (dst NULL: registered where it is,
 * copied through a pinned bounce ring only to be hashed), then take them in
 * the same order as their copies land: take hashes a tensor into sums
 * (verify on) while later copies run.  end waits for every copy (also after
 * an error) and must follow begin. */
int rf_pubdev_begin(struct rf_pubdev *pd, void *arena, size_t arena_len);
int rf_pubdev_queue(struct rf_pubdev *pd, const void *src, void *dst, size_t nbytes, uint64_t row_bytes,
                    uint32_t chunk_rows, int hash);
int rf_pubdev_take(struct rf_pubdev *pd, struct rf_sums *sums);
int rf_pubdev_end(struct rf_pubdev *pd);
/* Seconds from begin to end of the last publish. */
double rf_pubdev_stage_s(const struct rf_pubdev *pd);

/* ---- receiver ---- */

/* A destination bound as REFIT_MEM_CUDA (`name` for messages): device
 * memory, one device per receiver, and not with refit.in_place. */
int rf_rcvdev_bind(refit_receiver_t *r, const char *name, const void *ptr);
/* Commit, device part: queue the host-to-device copies of staging into
 * every CUDA destination (pinning the staging buffer on first use);
 * commit_wait waits for all of them.  No-ops without CUDA destinations. */
int rf_rcvdev_commit_start(refit_receiver_t *r);
int rf_rcvdev_commit_wait(refit_receiver_t *r);
/* Page-lock staging (once; a failure only logged: copies run unpinned). */
void rf_rcvdev_pin_staging(refit_receiver_t *r);
/* The same for host scratch (delta_rcvdev.c copies from it); unpin before
 * it is unmapped. */
void rf_rcvdev_pin_scratch(refit_receiver_t *r);
void rf_rcvdev_unpin_scratch(refit_receiver_t *r);
/* Before the staging buffer is unmapped. */
void rf_rcvdev_unpin(refit_receiver_t *r);
void rf_rcvdev_destroy(refit_receiver_t *r);

/* Device-resident pulls: refit.in_place with CUDA destinations over a
 * transport that reaches CUDA memory (cuda_ipc).  READs land in the
 * destinations; scratch is device memory from refit's pool; scatters are
 * 2-D device copies; nothing is converted or hashed on the host, so a
 * plan that needs a conversion, or refit.verify other than off, is refused
 * naming why.  1 when this receiver pulls that way. */
int rf_rcvdev_resident(const refit_receiver_t *r);
int rf_rcvdev_check_plan(refit_receiver_t *r);
int rf_rcvdev_scratch_alloc(refit_receiver_t *r, size_t n, void **out);
void rf_rcvdev_scratch_free(refit_receiver_t *r, void *p);
int rf_rcvdev_scatter(refit_receiver_t *r, void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                      size_t rows);
/* Quantize layout tensor t's device image into its device destination and
 * scales (the FP8 kernel, queued after the scatters). */
int rf_rcvdev_convert(refit_receiver_t *r, size_t t, const void *img, void *out, float *scale);
/* Wait for every scatter and quantization queued by this pull (NaN/Inf in
 * a quantized tensor is reported here). */
int rf_rcvdev_sync(refit_receiver_t *r);
/* The CUDA device of this receiver's destinations. */
int rf_rcvdev_device(const refit_receiver_t *r);

/* A resident pull from peers the transport maps (refit_transport_rkey_ptr) as
 * one device program (rcvprog.c, dprog.h): *ran 1 when it ran (every byte
 * landed, every FP8 destination quantized), 0 when this pull must take the
 * transport's path (not resident, refit.device_program off, a plan the
 * program cannot express, or a transport that maps nothing). */
int rf_rcvprog_pull(refit_receiver_t *r, int *ran);
void rf_rcvprog_destroy(refit_receiver_t *r);

#endif
