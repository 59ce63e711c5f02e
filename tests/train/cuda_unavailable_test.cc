// The CUDA step backend's stand-in (train/cuda/cuda_backend_unavailable.cc), built here with
// SYNCBN_CUDA_BACKEND_MISSING="cuDNN" whatever this build has: device: cuda is refused, naming
// what is missing and how to build the CUDA trainer.
#include <gtest/gtest.h>

#include <string>

#include "core/error.h"
#include "data/dataset.h"
#include "train/step_backend.h"

namespace syncbn::train {
namespace {

const data::DatasetInfo kFashionMnist = data::dataset_info(data::Format::kFashionMnist);

TEST(CudaUnavailable, NamesWhatIsMissingAndHowToBuild) {
  for (int call = 0; call < 2; ++call) {
    try {
      if (call == 0) {
        require_cuda_device();
      } else {
        Sequential model;
        optim::SGD sgd({}, {});
        auto world = comm::make_communicator("single");
        make_cuda_backend(Config{}, kFashionMnist, model, sgd, *world);
      }
      ADD_FAILURE() << "call " << call << " did not throw";
    } catch (const Error& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find("device: cuda, but this syncbn was built without the CUDA trainer "
                             "(missing: cuDNN)"),
                std::string::npos)
          << message;
      EXPECT_NE(message.find("-DSYNCBN_CUDA=ON"), std::string::npos) << message;
      EXPECT_NE(message.find("or set device: cpu"), std::string::npos) << message;
    }
  }
}

}  // namespace
}  // namespace syncbn::train
