// The CUDA trainer's layer kernels built by the host compiler for the CPU emulation
// (nn_layers_cuda_emulated_test).
#include "nn/cuda/layers_cuda.cu"
