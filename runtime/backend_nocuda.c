/* backend_nocuda.c — the CUDA entry points of a build without CUDA: no devices. */
#include "backend.h"

int sl_backend_cuda_device_count(void) { return 0; }
