/* refit/refit.h — the public C API of the refit engine.
 *
 *   trainer rank                          inference rank
 *   refit_context_create(cluster.yaml)    refit_context_create(cluster.yaml)
 *   refit_publisher_create(ctx, layout)   refit_receiver_create(ctx, target)
 *   refit_publisher_add(name, ptr, ...)   refit_receiver_bind(name, ptr, ...)
 *   loop:                                 loop:
 *     train step (tensors change)           refit_receiver_pull(V | REFIT_LATEST)
 *     refit_publisher_publish(V)
 *     refit_publisher_wait_released(V)
 *
 * Ownership: every object is created by a _create function and freed by
 * the matching _destroy, which is safe on NULL.  A publisher or receiver
 * must be destroyed before its context.  Tensor memory (add, bind) stays the
 * caller's: refit never frees it, and reads (publisher) or writes (receiver)
 * it only inside publish/pull and until wait_released returns.
 *
 * The zero-copy contract: with refit.publish: zero_copy (the default) a
 * publisher must not modify its tensors between publish(V) and the return of
 * wait_released(V); with publish: copy, publish returns once the tensors
 * are copied into a staging arena and training may go on at once.
 *
 * Device memory (REFIT_MEM_CUDA, docs/cuda.md): publisher tensors and
 * receiver destinations may be CUDA device pointers (checked with
 * cudaPointerGetAttributes; one device per publisher or receiver).  refit
 * reads and writes them on its own streams, which wait for work queued on
 * the legacy default stream; work on other streams must be finished by the
 * caller before publish (or before reading destinations after a pull).
 * Without CUDA in librefit, or without a device, REFIT_ENOTSUP.
 *
 * Threading: one thread at a time per object.  Errors: negative REFIT_E*;
 * refit_error_message() says what failed and where (peer, tensor, version). */
#ifndef REFIT_REFIT_H
#define REFIT_REFIT_H

#include <stddef.h>
#include <stdint.h>

#include "refit/config.h"
#include "refit/dtype.h"
#include "refit/status.h"
#include "refit/transport.h"

#ifdef __cplusplus
extern "C" {
#endif

#define REFIT_LATEST UINT64_MAX
/* The first version newer than the receiver's last pull, waiting for it up
 * to refit.timeout. */
#define REFIT_NEXT (UINT64_MAX - 1)

typedef struct refit_context refit_context_t;
typedef struct refit_publisher refit_publisher_t;
typedef struct refit_receiver refit_receiver_t;

/* A trainer rank's parallel position.  Sizes of 0 count as 1. */
struct refit_parallel {
    int tp_rank, tp_size;
    int pp_rank, pp_size;
    int ep_rank, ep_size;
    int etp_rank, etp_size;
    /* Data-parallel replica: ranks that differ only in dp_rank hold the same
     * bytes; receivers spread their reads over them (docs/models.md). */
    int dp_rank, dp_size;
    /* The source layout: NULL or "megatron" (the fields above, with
     * pipeline stages), or "fsdp": HF names, every tensor's rows split as
     * torch.chunk does over the sharding group (shard_rank of shard_size);
     * tp, pp and ep are then 1. */
    const char *layout;
    int shard_rank, shard_size;
    /* Megatron: virtual pipeline stages per rank (0 means 1), and the
     * layers of each of the pp_size * vp_size chunks when the split is not
     * even (NULL: even). */
    int vp_size;
    const int *pp_layers;
};

/* An inference rank's layout. */
struct refit_target {
    int tp_rank, tp_size;
    int ep_size;      /* 0/1: no expert parallelism; = tp_size: whole experts per rank */
    const char *name; /* "hf" or "vllm"; NULL: model.target from the configuration */
};

/* Per-cycle figures of a pull (seconds, bytes).  On warm cycles with an
 * unchanged layout register_s, connect_s and plan_s are exactly 0. */
struct refit_pull_stats {
    size_t size; /* set by the caller: sizeof(struct refit_pull_stats) */
    uint64_t version;
    double alloc_s, register_s, connect_s, plan_s, transfer_s, convert_s, verify_s, commit_s,
        total_s;
    uint64_t bytes_wire;   /* bytes moved by the transport */
    uint64_t bytes_out;    /* bytes written into destinations */
    uint64_t descriptors;  /* descriptors posted */
    uint32_t sources;      /* sources pulled from */
    uint32_t plan_cached;  /* 1 when the cached plan was reused */
    double wait_s;         /* waiting for the version to be published (not in total_s) */
    /* Where the bytes came from: "trainer", or the id of the replica
     * (tree fan-out, docs/fanout.md). */
    char source[64];
    /* rf_seconds()-style monotonic times (CLOCK_MONOTONIC, seconds) at the
     * start and end of the transfer phase: comparable between processes of
     * one host. */
    double xfer_start, xfer_end;
    uint32_t fallbacks;    /* sources given up on during this pull (fan-out) */
    /* Store round trips of this pull (refit_store_round_trips of the
     * context's store), waiting for the version included. */
    uint64_t store_round_trips;
    /* refit.delta.enabled (docs/delta.md): delta bytes read (in bytes_wire),
     * descriptors brought up to date by a delta, and 1 when a delta failed
     * and the version was pulled whole, or when this receiver cannot use
     * deltas (resident in device memory, refit.verify not full: the log
     * says why once). */
    uint64_t bytes_delta;
    uint32_t delta_descriptors, delta_fallbacks;
    /* Push mode: notifications not acted on — for another version, too big,
     * or not from the transport of the source they name (forged). */
    uint32_t notes_ignored;
    /* Bytes read again after a source failed mid-pull and the pull fell
     * back to data-parallel replicas (in bytes_wire): only what feeds the
     * tensors the failure left unfinished. */
    uint64_t bytes_refetched;
    /* The bytes the plan had the failed sources read (their share). */
    uint64_t bytes_failed_share;
    /* refit.delta.enabled with CUDA destinations: 1 when this pull's mirror
     * was on the device (docs/delta.md, "Device receivers": base check,
     * apply and verification there), and the seconds of that device phase
     * (from the copies of whole descriptors done to the last check). */
    uint32_t delta_device;
    double delta_device_s;
};

/* Create a context from a cluster file (NULL: defaults only) with
 * "key=value" overrides applied after the environment.  Loads the store,
 * transport and model plugins the configuration names. */
int refit_context_create(const char *config_path, const char *const *overrides,
                         size_t n_overrides, refit_context_t **out);
void refit_context_destroy(refit_context_t *ctx);
/* The configuration in use (owned by the context). */
const refit_config_t *refit_context_config(const refit_context_t *ctx);
/* The model the configuration names (owned by the context). */
const struct refit_model *refit_context_model(const refit_context_t *ctx);

/* A publisher for one trainer rank.  `source_id` names it in the store and
 * in messages (NULL: "tp<r>-pp<r>-ep<r>"). */
int refit_publisher_create(refit_context_t *ctx, const struct refit_parallel *par,
                           const char *source_id, refit_publisher_t **out);
void refit_publisher_destroy(refit_publisher_t *pub);
/* Add (or update: same name, new pointer) a trainer tensor by its Megatron
 * name.  The model plugin gives its role; a name it does not know is an
 * error naming it. */
int refit_publisher_add(refit_publisher_t *pub, const char *name, void *ptr,
                        enum refit_dtype dtype, int ndim, const int64_t *shape,
                        uint32_t memtype);
/* Publish version V (> every earlier version): the source record goes
 * READY(V).  Memory registration happens on the first publish and again
 * only for tensors whose pointer or size changed. */
int refit_publisher_publish(refit_publisher_t *pub, uint64_t version);
/* Wait until refit.receivers receivers acknowledged V, or fail at
 * timeout_ms (< 0: refit.release_timeout) naming those that did not. */
int refit_publisher_wait_released(refit_publisher_t *pub, uint64_t version, int64_t timeout_ms);

/* Registration counters of a publisher (monitoring and tests). */
struct refit_publisher_stats {
    size_t size;          /* set by the caller */
    size_t regions;       /* registered regions in use */
    size_t registrations; /* memory registrations made so far */
    size_t kept;          /* registrations kept across a rebuild (tensors that did not move) */
    uint64_t version;     /* last version published */
    uint64_t bytes_pushed; /* push mode: bytes written to receivers by the last publish */
    /* Last publish: seconds from queuing the copies of the REFIT_MEM_CUDA
     * tensors to the host to the last of them hashed (0: none). */
    double stage_s;
    /* refit.delta.enabled (docs/delta.md), last publish: the delta's bytes
     * (UINT64_MAX: published without one), the dense bytes it stands for,
     * 2-byte units compared and changed, seconds encoding. */
    uint64_t delta_bytes, delta_dense, delta_units, delta_changed;
    double delta_s;
};
int refit_publisher_stats(const refit_publisher_t *pub, struct refit_publisher_stats *out);

/* A receiver for one inference rank.  `receiver_id` names it in acks
 * (NULL: "<target>-tp<r>"). */
int refit_receiver_create(refit_context_t *ctx, const struct refit_target *target,
                          const char *receiver_id, refit_receiver_t **out);
void refit_receiver_destroy(refit_receiver_t *rcv);
/* Bind a destination parameter by its target-layout name; dtype and shape
 * must match what the layout gives (an error names the difference). */
int refit_receiver_bind(refit_receiver_t *rcv, const char *name, void *ptr,
                        enum refit_dtype dtype, int ndim, const int64_t *shape,
                        uint32_t memtype);
/* A destination tensor of the receiver's layout. */
struct refit_tensor_info {
    const char *name;
    enum refit_dtype dtype;
    int ndim;
    int64_t shape[REFIT_MAX_DIMS];
    void *ptr;        /* NULL until bound or allocated */
    uint32_t memtype;
    size_t nbytes;
};
/* The destinations of this layout (known from the model configuration). */
size_t refit_receiver_count(const refit_receiver_t *rcv);
int refit_receiver_tensor(const refit_receiver_t *rcv, size_t i, struct refit_tensor_info *out);
/* Allocate host memory (owned by the receiver) for every unbound destination. */
int refit_receiver_allocate(refit_receiver_t *rcv);
/* Pull version V (REFIT_NEXT: the first newer than the last pull; or the newest version every source holds READY with
 * REFIT_LATEST): discover, plan, transfer, convert, verify, commit and
 * acknowledge.  On failure the bound destinations still hold the previous
 * version (unless refit.in_place).  stats may be NULL. */
int refit_receiver_pull(refit_receiver_t *rcv, uint64_t version, struct refit_pull_stats *stats);

/* Planning without sources, for sizing and benchmarks: plan this
 * receiver's layout from trainer ranks at the given parallel positions as
 * if each published every tensor of its rank (bf16, one region, the
 * catalog a publisher would write).  Nothing is transferred; the
 * receiver's cached plan is replaced. */
struct refit_plan_info {
    size_t size; /* set by the caller */
    double seconds;
    uint64_t pieces, descriptors, scatters, checks;
    uint64_t wire_bytes, scratch_bytes, staging_bytes;
    uint32_t sources;
    /* A hash of the plan (descriptors, scatters, checks, bytes per
     * source): equal plans, equal digests. */
    uint8_t digest[16];
};
int refit_receiver_plan_dry(refit_receiver_t *rcv, const struct refit_parallel *src, size_t n_src,
                            struct refit_plan_info *info);

/* Whether this librefit was built with CUDA support (1) or not (0): device
 * memory (REFIT_MEM_CUDA) is REFIT_ENOTSUP without it. */
int refit_cuda_built(void);

#ifdef __cplusplus
}
#endif
#endif
