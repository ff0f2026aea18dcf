/* backend_nocuda.c — the CUDA entry points of a build without CUDA: no devices. */
#include "backend.h"
#include "sl_util.h"

int sl_backend_cuda_device_count(void) { return 0; }

sl_status sl_backend_cuda_create(const sl_backend_cuda_params *p, sl_backend *out) {
    out->iface = NULL;
    out->ctx = NULL;
    return sl__errorf(SL_UNSUPPORTED, "CUDA device %d: this build of Sluice has no CUDA support", p->device);
}
