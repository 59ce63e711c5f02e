// device: cuda where it cannot run. In a build with the CUDA trainer on a machine without a
// GPU (what CI has) every rank stops with "no CUDA device is visible"; in a build without it,
// with how to build one. The message of the stand-in (cuda_backend_unavailable.cc) is checked by
// train_cuda_unavailable_test in every build.
#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "comm/communicator.h"
#include "core/error.h"
#include "train/step_backend.h"
#include "train/trainer.h"

namespace syncbn::train {
namespace {

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

#if defined(SYNCBN_TEST_CUDA_TRAINER)
constexpr const char* kExpected =
    "device: cuda but no CUDA device is visible (cudaGetDeviceCount: ";
#else
constexpr const char* kExpected = "this syncbn was built without the CUDA trainer";
#endif

TEST(Device, CudaWithoutAUsableDeviceIsRefused) {
  const std::string message = error_of([] { require_cuda_device(); });
#if defined(SYNCBN_TEST_CUDA_TRAINER)
  if (message.empty()) GTEST_SKIP() << "a CUDA device is visible: the no-device path is untestable";
#endif
  EXPECT_NE(message.find(kExpected), std::string::npos) << message;
}

// The trainer checks the device before anything else (here: before reading a data directory that
// does not exist), on every rank through agree().
TEST(Device, RunTrainingStopsBeforeTouchingData) {
  if (error_of([] { require_cuda_device(); }).empty())
    GTEST_SKIP() << "a CUDA device is visible: the no-device path is untestable";
  const Config config =
      parse_config("train:\n  steps: 2\n", {"device=cuda", "data.dir=/nonexistent/fashion-mnist"});
  auto world = comm::make_communicator("single");
  TrainOptions options;
  options.progress = false;
  const std::string message = error_of([&] { run_training(config, *world, options); });
  EXPECT_NE(message.find(kExpected), std::string::npos) << message;
}

}  // namespace
}  // namespace syncbn::train
