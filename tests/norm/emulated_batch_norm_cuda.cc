// The CUDA BN stages built by the host compiler for the CPU emulation (norm_cuda_emulated_test).
#include "norm/cuda/batch_norm_cuda.cu"
