/* mockcuda_drv.c — the mock libcuda.so.1: the three driver calls the
 * cuda_ipc plugin looks up with dlsym, answered from the mock runtime's
 * table of allocations (mockcuda.c). */
#include <stdint.h>

#include <cuda.h>

int mockcuda_lookup(const void *p, uintptr_t *base, size_t *size, int *imported);

CUresult cuMemGetAddressRange_v2(CUdeviceptr *base, size_t *size, CUdeviceptr p)
{
    uintptr_t b;
    int imp;
    if (!mockcuda_lookup((const void *)(uintptr_t)p, &b, size, &imp))
        return CUDA_ERROR_INVALID_VALUE;
    *base = (CUdeviceptr)b;
    return CUDA_SUCCESS;
}

CUresult cuPointerGetAttribute(void *data, CUpointer_attribute at, CUdeviceptr p)
{
    uintptr_t b;
    size_t n;
    int imp;
    if (!mockcuda_lookup((const void *)(uintptr_t)p, &b, &n, &imp))
        return CUDA_ERROR_INVALID_VALUE;
    if (at != CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE)
        return CUDA_ERROR_NOT_SUPPORTED;
    *(unsigned char *)data = !imp;
    return CUDA_SUCCESS;
}

CUresult cuGetErrorString(CUresult r, const char **s)
{
    *s = r == CUDA_SUCCESS ? "no error" : "mock driver error";
    return CUDA_SUCCESS;
}
