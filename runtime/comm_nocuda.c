/* comm_nocuda.c — the GPU communicators' entry points in a build without CUDA: there are no GPU ranks. */
#include <string.h>

#include "comm.h"
#include "sl_util.h"

sl_status sl_comm_nccl_unique_id(uint8_t id[SL_COMM_ID_BYTES]) {
    memset(id, 0, SL_COMM_ID_BYTES);
    return sl__errorf(SL_UNSUPPORTED, "NCCL: this build of Sluice has no CUDA support");
}

sl_status sl_comm_nccl_create(const uint8_t id[SL_COMM_ID_BYTES], int rank, int size, int device, void *stream,
                              sl_comm *out) {
    memset(out, 0, sizeof *out);
    return sl__errorf(SL_UNSUPPORTED, "NCCL rank %d on CUDA device %d: this build of Sluice has no CUDA support",
                      rank, device);
}

sl_status sl_comm_cuda1_create(int size, struct sl_backend *const *ranks, sl_comm *comms) {
    for (int r = 0; r < size; r++) memset(&comms[r], 0, sizeof comms[r]);
    return sl__errorf(SL_UNSUPPORTED, "single-GPU communicator: this build of Sluice has no CUDA support");
}
