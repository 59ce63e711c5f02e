// Checks for CUDA, cuBLAS, cuDNN and NCCL calls (STYLE.md rule 8, tier one): a failing call is
// not something a user can fix, so it aborts with the host, the rank, file:line, the call and
// the library's own error string, as nccl-tests' CUDACHECK/NCCLCHECK do.
//
// The macros name the libraries' status types and error-string functions only when expanded, so
// this header includes none of them: include the library's header before using its macro.
#pragma once

namespace syncbn {

// Prints "syncbn: <host> rank <r>: <file>:<line>: <call> failed: <what>" and aborts. The rank is
// the launcher's (mpirun's OMPI_COMM_WORLD_RANK, PMI_RANK, or torchrun's RANK); "?" without one.
[[noreturn]] void gpu_call_failed(const char* file, int line, const char* call, const char* what);

}  // namespace syncbn

#define SYNCBN_GPU_CHECK_(call, status_type, ok, error_string)                            \
  do {                                                                                    \
    const status_type syncbn_status_ = (call);                                            \
    if (syncbn_status_ != (ok))                                                           \
      ::syncbn::gpu_call_failed(__FILE__, __LINE__, #call, error_string(syncbn_status_)); \
  } while (0)

#define SYNCBN_CUDA_CHECK(call) \
  SYNCBN_GPU_CHECK_(call, cudaError_t, cudaSuccess, cudaGetErrorString)
// After a kernel launch: a bad configuration is reported here, not at the next API call.
#define SYNCBN_LAUNCH_CHECK() SYNCBN_CUDA_CHECK(cudaGetLastError())
#define SYNCBN_CUBLAS_CHECK(call) \
  SYNCBN_GPU_CHECK_(call, cublasStatus_t, CUBLAS_STATUS_SUCCESS, cublasGetStatusString)
#define SYNCBN_CUDNN_CHECK(call) \
  SYNCBN_GPU_CHECK_(call, cudnnStatus_t, CUDNN_STATUS_SUCCESS, cudnnGetErrorString)
#define SYNCBN_NCCL_CHECK(call) \
  SYNCBN_GPU_CHECK_(call, ncclResult_t, ncclSuccess, ncclGetErrorString)
