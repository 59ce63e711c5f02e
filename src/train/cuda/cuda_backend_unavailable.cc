// The CUDA step backend of a build without it (train/step_backend.h): device: cuda is refused
// with what to install and how to configure. SYNCBN_CUDA_BACKEND_MISSING (set by
// train/CMakeLists.txt) says what this build lacked.
#include "core/error.h"
#include "train/step_backend.h"

#ifndef SYNCBN_CUDA_BACKEND_MISSING
#define SYNCBN_CUDA_BACKEND_MISSING "CUDA"
#endif

namespace syncbn::train {

void require_cuda_device() {
  throw Error(
      "device: cuda, but this syncbn was built without the CUDA trainer "
      "(missing: " SYNCBN_CUDA_BACKEND_MISSING
      "); install the CUDA toolkit with cuDNN, cuBLAS and NCCL >= 2.18 and rebuild with "
      "cmake -S . -B build -DSYNCBN_CUDA=ON, or set device: cpu");
}

std::unique_ptr<StepBackend> make_cuda_backend(const Config&, const data::DatasetInfo&, Sequential&,
                                               optim::SGD&, comm::Communicator&) {
  require_cuda_device();
  return nullptr;
}

}  // namespace syncbn::train
