// The CUDA GN/LN stages built by the host compiler for the CPU emulation (norm_cuda_emulated_test).
#include "norm/cuda/group_norm_cuda.cu"
