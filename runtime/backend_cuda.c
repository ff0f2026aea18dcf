/*
 * backend_cuda.c — CUDA device discovery through the runtime API (cudart linked statically).
 *
 * A CUDA-enabled binary must start on a machine without a GPU or a driver: cudaGetDeviceCount then returns
 * an error (cudaErrorNoDevice / cudaErrorInsufficientDriver), which means "no devices", never a failure.
 * The CUDA compute backend itself (kernels/cuda, cuBLAS) is the CUDA issue's work.
 */
#include <cuda_runtime_api.h>

#include "backend.h"
#include "sl_util.h"

int sl_backend_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError(); /* clear the non-sticky error */
        return 0;
    }
    return n;
}

sl_status sl_backend_cuda_create(const sl_backend_cuda_params *p, sl_backend *out) {
    out->iface = NULL;
    out->ctx = NULL;
    return sl__errorf(SL_UNSUPPORTED, "CUDA device %d: the CUDA compute backend is not implemented yet", p->device);
}
