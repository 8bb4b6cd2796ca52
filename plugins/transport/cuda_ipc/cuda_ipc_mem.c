/* cuda_ipc_mem.c — registration on the owner's side (which memory can be
 * exported, its IPC handle and remote key) and, on the importer's side,
 * the mappings of peers' allocations, each opened once and shared by the
 * keys that point into it.  cuda_ipc.c's header comment has the design. */
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include <cuda.h>

#include "cuda_ipc.h"

/* The driver API is needed for allocation ranges only; libcuda.so comes
 * with the driver (the runtime has loaded it already), so it is looked up
 * rather than linked. */
typedef CUresult (*cu_range_fn)(CUdeviceptr *base, size_t *size, CUdeviceptr p);
typedef CUresult (*cu_attr_fn)(void *data, CUpointer_attribute a, CUdeviceptr p);
typedef CUresult (*cu_errstr_fn)(CUresult r, const char **s);
static struct {
    void *lib;
    cu_range_fn range;
    cu_attr_fn attr;
    cu_errstr_fn errstr;
} drv;
static pthread_mutex_t drv_lock = PTHREAD_MUTEX_INITIALIZER;

static int cu_fail(int status, CUresult r, const char *what)
{
    const char *s = NULL;
    if (!drv.errstr || drv.errstr(r, &s) != CUDA_SUCCESS || !s)
        s = "unknown error";
    return H->error_set(status, "%s: %s: %s (CUresult %d)", CIPC, what, s, (int)r);
}

int cipc_driver_open(void)
{
    pthread_mutex_lock(&drv_lock);
    if (!drv.lib) {
        void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
        if (lib) {
            drv.range = (cu_range_fn)dlsym(lib, "cuMemGetAddressRange_v2");
            drv.attr = (cu_attr_fn)dlsym(lib, "cuPointerGetAttribute");
            drv.errstr = (cu_errstr_fn)dlsym(lib, "cuGetErrorString");
            if (drv.range && drv.attr)
                drv.lib = lib;
            else
                dlclose(lib);
        }
    }
    int ok = drv.lib != NULL;
    pthread_mutex_unlock(&drv_lock);
    if (!ok)
        return H->error_set(REFIT_ENOTSUP, "%s: the CUDA driver library (libcuda.so.1 with "
                            "cuMemGetAddressRange_v2, cuPointerGetAttribute) could not be loaded: %s",
                            CIPC, dlerror() ? dlerror() : "symbols missing");
    return 0;
}

/* ------------------------------------------------------------------ */
/* Mappings of peers' allocations */

/* Under tp->lock.  The owner's device in our numbering, or -1. */
static int our_ordinal(const char *bus_id)
{
    int d = -1;
    if (!bus_id[0] || cudaDeviceGetByPCIBusId(&d, bus_id) != cudaSuccess) {
        cudaGetLastError();
        return -1;
    }
    return d;
}

int cipc_map_get(refit_tp_t *tp, refit_tp_peer_t *p, const struct cipc_key *k, struct cipc_map **out)
{
    for (struct cipc_map *m = tp->maps; m; m = m->next)
        if (m->owner_tp_id == k->tp_id && !memcmp(&m->handle, &k->handle, sizeof(k->handle))) {
            m->refs++;
            *out = m;
            return 0;
        }
    struct cipc_map *m = H->calloc(1, sizeof(*m));
    if (!m)
        return H->error_set(REFIT_ENOMEM, "%s: out of memory", CIPC);
    struct cipc_devguard g;
    int rc = cipc_dev_enter(tp, &g);
    if (rc) {
        H->free(m);
        return rc;
    }
    void *base = NULL;
    cudaError_t e = cudaIpcOpenMemHandle(&base, k->handle, cudaIpcMemLazyEnablePeerAccess);
    if (e != cudaSuccess) {
        int od = our_ordinal(p->addr.bus_id), can = -1;
        if (od >= 0 && od != tp->dev && cudaDeviceCanAccessPeer(&can, tp->dev, od) != cudaSuccess)
            can = -1;
        char hint[160] = "";
        if (od == tp->dev)
            snprintf(hint, sizeof(hint), "; it is on our own device %d", od);
        else if (od >= 0)
            snprintf(hint, sizeof(hint), "; cudaDeviceCanAccessPeer(%d -> %d) = %d", tp->dev, od, can);
        else
            snprintf(hint, sizeof(hint), "; device %s is not visible here (CUDA_VISIBLE_DEVICES?)",
                     p->addr.bus_id);
        rc = cipc_cuda_fail(e == cudaErrorMemoryAllocation ? REFIT_ENOMEM : REFIT_EPLUGIN, e,
                            "cudaIpcOpenMemHandle of region %" PRIu64 " of peer '%s' (device %s)%s",
                            k->region_id, p->name, p->addr.bus_id, hint);
        cipc_dev_leave(&g);
        H->free(m);
        return rc;
    }
    cipc_dev_leave(&g);
    m->owner_tp_id = k->tp_id;
    m->handle = k->handle;
    m->base = base;
    m->refs = 1;
    m->next = tp->maps;
    tp->maps = m;
    *out = m;
    return 0;
}

void cipc_map_put(refit_tp_t *tp, struct cipc_map *m)
{
    if (!m || --m->refs > 0)
        return;
    for (struct cipc_map **pm = &tp->maps; *pm; pm = &(*pm)->next)
        if (*pm == m) {
            *pm = m->next;
            break;
        }
    struct cipc_devguard g;
    if (cipc_dev_enter(tp, &g) == 0) {
        cudaError_t e = cudaIpcCloseMemHandle(m->base);
        if (e != cudaSuccess) {
            cudaGetLastError();
            H->log(2, CIPC, "cudaIpcCloseMemHandle(%p): %s", m->base, cudaGetErrorString(e));
        }
        cipc_dev_leave(&g);
    }
    H->free(m);
}

/* ------------------------------------------------------------------ */
/* Registration (owner side) */

void cipc_region_free(struct refit_tp_region *r)
{
    H->free(r->openers);
    H->free(r);
}

/* Where ptr lies: on our device, in a cudaMalloc allocation. */
static int locate(refit_tp_t *tp, void *ptr, size_t len, CUdeviceptr *base)
{
    struct cudaPointerAttributes at;
    memset(&at, 0, sizeof(at));
    cudaError_t e = cudaPointerGetAttributes(&at, ptr);
    if (e != cudaSuccess)
        return cipc_cuda_fail(REFIT_EINVAL, e, "cudaPointerGetAttributes(%p)", ptr);
    if (at.type == cudaMemoryTypeManaged)
        return H->error_set(REFIT_ENOTSUP, "%s: memory at %p is managed memory, which CUDA IPC cannot "
                            "export; register cudaMalloc memory", CIPC, ptr);
    if (at.type != cudaMemoryTypeDevice)
        return H->error_set(REFIT_ENOTSUP, "%s: memory at %p is host memory: cuda_ipc moves GPU memory "
                            "only (use tcp, ucx or ofi for host memory)", CIPC, ptr);
    if (at.device != tp->dev)
        return H->error_set(REFIT_ENOTSUP, "%s: memory at %p is on device %d, this transport copies on "
                            "device %d (transport.cuda_ipc.device or the rank's device)", CIPC, ptr,
                            at.device, tp->dev);
    uint64_t ipc_ok = 1; /* the attribute is a boolean; zeroed wider storage reads either width */
    CUresult cr = drv.attr(&ipc_ok, CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE, (CUdeviceptr)ptr);
    if (cr == CUDA_SUCCESS && !ipc_ok)
        return H->error_set(REFIT_ENOTSUP, "%s: memory at %p is not from cudaMalloc: stream-ordered pools "
                            "(cudaMallocAsync), cuMemCreate/VMM mappings and expandable segments have no "
                            "CUDA IPC handle; register buffers of a cudaMalloc pool (docs/cuda.md)",
                            CIPC, ptr);
    size_t size = 0;
    cr = drv.range(base, &size, (CUdeviceptr)ptr);
    if (cr != CUDA_SUCCESS)
        return cu_fail(REFIT_EPLUGIN, cr, "cuMemGetAddressRange of the registered memory");
    /* The driver may carve cudaMalloc allocations under 2 MiB out of a
     * block shared with other allocations, and IPC then maps the whole
     * block (CUDA programming guide, "Interprocess Communication"): other
     * allocations would be exposed, and where the peer's pointer lands in
     * the block is not ours to know.  Allocations of 2 MiB and more have
     * blocks of their own. */
    if (size < CIPC_MIN_ALLOC)
        return H->error_set(REFIT_ENOTSUP, "%s: memory at %p lies in a cudaMalloc allocation of %zu bytes: "
                            "CUDA IPC shares allocations under 2 MiB together with the block the driver "
                            "carved them from; allocate at least 2 MiB (refit's CUDA pool does)", CIPC,
                            ptr, size);
    uint64_t off = (uint64_t)(uintptr_t)ptr - (uint64_t)*base;
    if (off > size || len > size - off)
        return H->error_set(REFIT_ERANGE, "%s: region [%p, +%zu) runs past the end of its allocation "
                            "(%zu bytes at %#llx): a region must lie in one cudaMalloc allocation",
                            CIPC, ptr, len, size, (unsigned long long)*base);
    return 0;
}

int cipc_reg(refit_tp_t *tp, void *ptr, size_t len, uint32_t memtype, refit_tp_region_t **out)
{
    if (!tp || !ptr || !len || !out)
        return H->error_set(REFIT_EINVAL, "%s: register needs memory, a length and out", CIPC);
    if (memtype != REFIT_MEM_CUDA)
        return H->error_set(REFIT_ENOTSUP, "%s: memory type %u: cuda_ipc registers GPU memory "
                            "(REFIT_MEM_CUDA) only; host memory goes over tcp, ucx or ofi", CIPC, memtype);
    struct cipc_devguard g;
    int rc = cipc_dev_enter(tp, &g);
    if (rc)
        return rc;
    CUdeviceptr base = 0;
    cudaIpcMemHandle_t h;
    rc = locate(tp, ptr, len, &base);
    if (!rc) {
        cudaError_t e = cudaIpcGetMemHandle(&h, (void *)(uintptr_t)base);
        if (e != cudaSuccess)
            rc = cipc_cuda_fail(REFIT_ENOTSUP, e, "cudaIpcGetMemHandle of the allocation at %#llx "
                                "(region %p)", (unsigned long long)base, ptr);
    }
    cipc_dev_leave(&g);
    if (rc)
        return rc;
    struct refit_tp_region *r = H->calloc(1, sizeof(*r));
    if (!r)
        return H->error_set(REFIT_ENOMEM, "%s: out of memory", CIPC);
    if (getrandom(r->key.secret, sizeof(r->key.secret), 0) != (ssize_t)sizeof(r->key.secret)) {
        H->free(r);
        return H->error_set(REFIT_EIO, "%s: getrandom: %s", CIPC, strerror(errno));
    }
    r->ptr = ptr;
    r->len = len;
    r->key.magic = CIPC_KEY_MAGIC;
    r->key.version = CIPC_VERSION;
    r->key.tp_id = tp->addr.tp_id;
    r->key.alloc_off = (uint64_t)(uintptr_t)ptr - (uint64_t)base;
    r->key.len = len;
    r->key.owner_ptr = (uint64_t)(uintptr_t)ptr;
    r->key.dev = tp->dev;
    r->key.handle = h;
    pthread_mutex_lock(&tp->lock);
    r->key.region_id = tp->next_region_id++;
    r->next = tp->regions;
    tp->regions = r;
    pthread_mutex_unlock(&tp->lock);
    *out = r;
    return 0;
}

int cipc_dereg(refit_tp_t *tp, refit_tp_region_t *r)
{
    if (!tp || !r)
        return 0;
    pthread_mutex_lock(&tp->lock);
    /* Out of the table first: a check arriving from now on is stale. */
    for (struct refit_tp_region **pr = &tp->regions; *pr; pr = &(*pr)->next)
        if (*pr == r) {
            *pr = r->next;
            break;
        }
    int rc = r->n_openers ? cipc_revoke(tp, r) : 0;
    pthread_mutex_unlock(&tp->lock);
    cipc_region_free(r);
    return rc;
}

int cipc_pack_rkey(refit_tp_t *tp, refit_tp_region_t *r, void *buf, size_t *len)
{
    if (!tp || !r || !len)
        return H->error_set(REFIT_EINVAL, "%s: pack_rkey without a region", CIPC);
    if (buf && *len < sizeof(r->key)) {
        *len = sizeof(r->key);
        return H->error_set(REFIT_ERANGE, "%s: a remote key needs %zu bytes", CIPC, sizeof(r->key));
    }
    if (buf)
        memcpy(buf, &r->key, sizeof(r->key));
    *len = sizeof(r->key);
    return 0;
}
