# syncbn_nn_cuda: SyncBatchNormCuda (nn/sync_batch_norm_cuda.h), the SyncBN layer on device
# buffers through a device-memory Communicator (nccl). Included from nn/CMakeLists.txt when CUDA
# was found. The layer itself is host C++20 (g++); only its small kernels go through nvcc.
find_package(CUDAToolkit REQUIRED)
add_library(syncbn_nn_cuda sync_batch_norm_cuda.cc sync_batch_norm_cuda_kernels.cu)
target_link_libraries(syncbn_nn_cuda
  PUBLIC syncbn_nn syncbn_norm_cuda CUDA::cudart
  PRIVATE syncbn_warnings)
