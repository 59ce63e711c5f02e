// SyncBatchNormCuda's kernels built by the host compiler for the CPU emulation
// (nn_sync_bn_cuda_emulated_test).
#include "nn/sync_batch_norm_cuda_kernels.cu"
