// SyncBatchNormCuda over the NCCL communicator under mpirun, one CUDA device per rank (label
// `gpu`): the defining property of DESIGN.md §1 — R ranks × uneven per-rank batches (an empty one
// included) give the same y, dx, running statistics and reduced dγ/dβ as plain CPU BN on the
// concatenated batch — for both layouts and BN group sizes, one collective per pass, and the
// errors finish() reports. Every test skips when the node has fewer CUDA devices than ranks, and
// CTest then reports the test skipped. The same file runs on the CPU too, against the layer and
// its kernels built for the CPU emulation, over MPI (nn_sync_bn_cuda_emulated_test).
#include <cuda_runtime.h>
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "../common/cuda_skip_mpi.h"
#include "comm/communicator.h"
#include "core/error.h"
#include "nn/sync_batch_norm.h"
#include "nn/sync_batch_norm_cuda.h"
#include "norm/norm.h"

namespace syncbn {
namespace {

#if defined(SYNCBN_CUDA_EMULATION)
// The CPU emulation (tests/gpu/CMakeLists.txt: nn_sync_bn_cuda_emulated_test): the layer's
// kernels run on the host (norm/cuda/cuda_emulation.h), "device" memory is host memory, and the
// collectives go through MPI behind a communicator that reports device buffers and a stream.
class HostAsDeviceCommunicator final : public comm::Communicator {
 public:
  explicit HostAsDeviceCommunicator(std::unique_ptr<comm::Communicator> inner)
      : Communicator(inner->rank(), inner->size()), inner_(std::move(inner)) {}
  comm::Backend backend() const override { return comm::Backend::kNccl; }
  comm::MemorySpace memory_space() const override { return comm::MemorySpace::kCudaDevice; }
  CUstream_st* cuda_stream() const override {
    static int token;
    return reinterpret_cast<CUstream_st*>(&token);
  }

 private:
  void do_allreduce_sum(const void* send, void* recv, int64_t count, comm::DataType type) override {
    if (type == comm::DataType::kFloat64) {
      inner_->allreduce_sum(static_cast<const double*>(send), static_cast<double*>(recv), count);
    } else {
      inner_->allreduce_sum(static_cast<const float*>(send), static_cast<float*>(recv), count);
    }
  }
  comm::Request do_allreduce_sum_async(const void* send, void* recv, int64_t count,
                                       comm::DataType type) override {
    do_allreduce_sum(send, recv, count, type);  // the emulated stream is synchronous anyway
    return comm::Request();
  }
  void do_broadcast(void*, int64_t, comm::DataType, int) override {
    SYNCBN_CHECK(false && "not used by the layer");
  }
  void do_barrier() override { inner_->barrier(); }
  std::unique_ptr<comm::Communicator> do_split(int color, int key) override {
    return std::make_unique<HostAsDeviceCommunicator>(inner_->split(color, key));
  }
  std::unique_ptr<comm::Communicator> inner_;
};

std::string reason_to_skip() { return ""; }
std::unique_ptr<comm::Communicator> make_world() {
  return std::make_unique<HostAsDeviceCommunicator>(comm::make_communicator("mpi"));
}
#else
std::unique_ptr<comm::Communicator> make_world() { return comm::make_communicator("nccl"); }

std::string reason_to_skip() { return syncbn::testing::cuda_skip_reason_for_node(); }
#endif

// Host ↔ device copies of float vectors.
class DeviceFloats {
 public:
  explicit DeviceFloats(const std::vector<float>& host) : count_(host.size()) {
    if (cudaMalloc(&data_, std::max<size_t>(count_, 1) * sizeof(float)) != cudaSuccess)
      data_ = nullptr;
    if (data_ != nullptr && count_ > 0)
      cudaMemcpy(data_, host.data(), count_ * sizeof(float), cudaMemcpyHostToDevice);
  }
  ~DeviceFloats() { cudaFree(data_); }
  DeviceFloats(const DeviceFloats&) = delete;
  DeviceFloats& operator=(const DeviceFloats&) = delete;
  float* get() const { return data_; }

 private:
  size_t count_;
  float* data_ = nullptr;
};

std::vector<float> to_host(const float* device, size_t count) {
  std::vector<float> host(count);
  if (count > 0) cudaMemcpy(host.data(), device, count * sizeof(float), cudaMemcpyDeviceToHost);
  return host;
}
void to_device(float* device, const std::vector<float>& host) {
  cudaMemcpy(device, host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice);
}

double scaled_error(const std::vector<float>& a, const float* b, size_t n) {
  double err = 0, scale = 0;
  for (size_t i = 0; i < n; ++i) {
    err = std::max(err, std::abs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::abs(static_cast<double>(b[i])));
  }
  return scale > 0 ? err / scale : err;
}

Tensor random_tensor(std::vector<int64_t> shape, uint64_t seed, double mean, double stddev,
                     MemoryFormat format) {
  Tensor t(std::move(shape));
  Rng(seed).fill_normal(t.data(), t.numel(), mean, stddev);
  return t.to(format);
}

int64_t sample_size(const Tensor& t) {
  int64_t s = 1;
  for (int64_t d = 1; d < t.dim(); ++d) s *= t.size(d);
  return s;
}

class SyncBnNcclTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string reason = reason_to_skip();
    if (!reason.empty()) GTEST_SKIP() << reason;
    world_ = make_world();
  }
  std::unique_ptr<comm::Communicator> world_;
};

struct Case {
  std::vector<int64_t> sample_shape;  // (C, *spatial)
  MemoryFormat format;
  std::vector<int64_t> batches;  // per rank, cycled to the world size
  int group;                     // BN group size; 0: the world
};

void check_equivalence(comm::Communicator& world, const Case& k) {
  const int R = world.size(), r = world.rank();
  const int group = k.group == 0 ? R : k.group;
  if (R % group != 0) return;
  std::vector<int64_t> batches(R);
  for (int q = 0; q < R; ++q) batches[q] = k.batches[q % k.batches.size()];
  const int first = r / group * group;
  int64_t group_n = 0, offset = 0;
  for (int q = first; q < first + group; ++q) {
    if (q < r) offset += batches[q];
    group_n += batches[q];
  }
  const int64_t C = k.sample_shape[0];
  std::vector<int64_t> global_shape = {group_n};
  global_shape.insert(global_shape.end(), k.sample_shape.begin(), k.sample_shape.end());
  const std::string what = shape_to_string(global_shape) + " " + to_string(k.format) +
                           " G=" + std::to_string(group) + " batches " + shape_to_string(batches);

  auto bn_group = nn::make_bn_group(world, group);
  nn::SyncBatchNormOptions options;
  options.num_features = C;
  options.eps = 1e-4;
  options.momentum = 0.3;
  nn::SyncBatchNormCuda layer(options, bn_group.get(), "bn");
  Tensor ref_w({C}), ref_b({C}), ref_rm({C}), ref_rv({C});
  int64_t ref_tracked = 0;
  Rng(99).fill_normal(ref_w.data(), C, 1.0, 0.2);
  Rng(98).fill_normal(ref_b.data(), C, 0.0, 0.5);
  for (int64_t c = 0; c < C; ++c) ref_rv.data()[c] = 1.0f;
  to_device(layer.weight(), std::vector<float>(ref_w.data(), ref_w.data() + C));
  to_device(layer.bias(), std::vector<float>(ref_b.data(), ref_b.data() + C));
  norm::BatchNormState ref_state{&ref_w, &ref_b, &ref_rm, &ref_rv, &ref_tracked};

  for (int step = 0; step < 3; ++step) {
    const bool training = step < 2;
    const uint64_t seed = 1000 * static_cast<uint64_t>(first + 1) + static_cast<uint64_t>(step);
    const Tensor x_all = random_tensor(global_shape, seed, 2.0 + step, 1.5, k.format);
    const Tensor dy_all = random_tensor(global_shape, seed + 500, 0.0, 1.0, k.format);
    const int64_t per = sample_size(x_all);
    const size_t local = static_cast<size_t>(batches[r] * per);
    DeviceFloats x(
        std::vector<float>(x_all.data() + offset * per, x_all.data() + offset * per + local));
    DeviceFloats dy(
        std::vector<float>(dy_all.data() + offset * per, dy_all.data() + offset * per + local));
    DeviceFloats y{std::vector<float>(local)}, dx{std::vector<float>(local)};
    to_device(layer.grad_weight(), std::vector<float>(C, 0.0f));
    to_device(layer.grad_bias(), std::vector<float>(C, 0.0f));

    const norm::BnGeometry g{batches[r], C, per / C, k.format == MemoryFormat::kChannelsLast};
    if (training && group_n * (per / C) <= 1) {
      // Group-wide n == 1: finish() raises PyTorch's message on every rank of the group.
      layer.forward(x.get(), g, training, y.get());
      try {
        layer.finish();
        ADD_FAILURE() << what << ": expected the n == 1 error";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("Expected more than 1 value per channel"),
                  std::string::npos)
            << e.what();
      }
      return;
    }
    layer.forward(x.get(), g, training, y.get());
    layer.backward(dy.get(), dx.get());
    layer.finish();

    norm::NormSaved saved;
    const Tensor y_ref =
        norm::batch_norm_forward(x_all, ref_state, {1e-4, options.momentum}, training, &saved);
    const norm::NormGrads g_ref = norm::batch_norm_backward(dy_all, x_all, ref_state, saved);
    EXPECT_LT(scaled_error(to_host(y.get(), local), y_ref.data() + offset * per, local), 1e-5)
        << what << " step " << step << ": y";
    EXPECT_LT(scaled_error(to_host(dx.get(), local), g_ref.dx.data() + offset * per, local), 1e-5)
        << what << " step " << step << ": dx";
    EXPECT_LT(scaled_error(to_host(layer.running_mean(), C), ref_rm.data(), C), 1e-5) << what;
    EXPECT_LT(scaled_error(to_host(layer.running_var(), C), ref_rv.data(), C), 1e-5) << what;
    EXPECT_EQ(layer.num_batches_tracked(), ref_tracked) << what;
    // dγ, dβ are local; reduced over the group (a device allreduce on the BN group: only the
    // group's ranks take part) they equal plain BN's.
    std::vector<float> grads = to_host(layer.grad_weight(), C);
    const std::vector<float> gb = to_host(layer.grad_bias(), C);
    grads.insert(grads.end(), gb.begin(), gb.end());
    DeviceFloats reduced(grads);
    bn_group->allreduce_sum(reduced.get(), 2 * C);
    grads = to_host(reduced.get(), 2 * C);
    EXPECT_LT(scaled_error(grads, g_ref.dweight.data(), C), 1e-5) << what << ": dgamma";
    EXPECT_LT(
        scaled_error(std::vector<float>(grads.begin() + C, grads.end()), g_ref.dbias.data(), C),
        1e-5)
        << what << ": dbeta";
  }
}

TEST_F(SyncBnNcclTest, MatchesPlainBatchNormOnTheConcatenatedBatch) {
  for (int group : {1, 2, 0}) {
    for (const auto& batches : {std::vector<int64_t>{7, 8, 9, 5}, std::vector<int64_t>{3, 0, 4, 4},
                                std::vector<int64_t>{1, 1, 1, 1}}) {
      check_equivalence(*world_, {{5}, MemoryFormat::kContiguous, batches, group});
      check_equivalence(*world_, {{4, 3, 5}, MemoryFormat::kContiguous, batches, group});
      check_equivalence(*world_, {{4, 3, 5}, MemoryFormat::kChannelsLast, batches, group});
      check_equivalence(*world_, {{8, 7, 9}, MemoryFormat::kChannelsLast, batches, group});
      check_equivalence(*world_, {{3, 33, 31}, MemoryFormat::kContiguous, batches, group});
    }
  }
}

TEST_F(SyncBnNcclTest, OneCollectivePerPassAndNoneInEval) {
  const int64_t C = 16;
  auto group = nn::make_bn_group(*world_, 0);
  nn::SyncBatchNormOptions options;
  options.num_features = C;
  nn::SyncBatchNormCuda layer(options, group.get(), "counted");
  DeviceFloats x(std::vector<float>(3 * C * 16, 1.0f)), y(std::vector<float>(3 * C * 16));
  const norm::BnGeometry g{3, C, 16, false};
  group->reset_counters();
  layer.forward(x.get(), g, true, y.get());
  EXPECT_EQ(group->counters().allreduce_calls, 1);
  EXPECT_EQ(group->counters().bytes, 8 * (2 * C + 1));
  layer.backward(x.get(), y.get());
  EXPECT_EQ(group->counters().allreduce_calls, 2);
  EXPECT_EQ(group->counters().bytes, 8 * (2 * C + 1) + 8 * 2 * C);
  layer.forward(x.get(), g, false, y.get());
  layer.backward(x.get(), y.get());
  EXPECT_EQ(group->counters().collective_calls(), 2);
  layer.finish();
  EXPECT_EQ(layer.counters().forward_collectives, 1);
  EXPECT_EQ(layer.counters().backward_collectives, 1);
}

#if defined(SYNCBN_CUDA_EMULATION)
}  // namespace
}  // namespace syncbn
long syncbn_emulated_host_syncs();  // tests/norm/cuda_emulation_runtime.cc
namespace syncbn {
namespace {

// A training step only enqueues work: forward and backward make no CUDA call that would block the
// host on a GPU (the emulated runtime counts them); finish() is where the step waits.
TEST_F(SyncBnNcclTest, ForwardAndBackwardNeverWaitForTheDevice) {
  for (bool channels_last : {false, true}) {
    auto group = nn::make_bn_group(*world_, 0);
    nn::SyncBatchNormOptions options;
    options.num_features = 8;
    nn::SyncBatchNormCuda layer(options, group.get(), "async");
    DeviceFloats x(std::vector<float>(3 * 8 * 5, 1.0f)), y(std::vector<float>(3 * 8 * 5));
    const norm::BnGeometry g{3, 8, 5, channels_last};
    const long before = syncbn_emulated_host_syncs();
    for (int step = 0; step < 2; ++step) {
      layer.forward(x.get(), g, true, y.get());
      layer.backward(x.get(), y.get());
    }
    layer.forward(x.get(), g, false, y.get());  // eval
    layer.backward(x.get(), y.get());
    EXPECT_EQ(syncbn_emulated_host_syncs() - before, 0);
    layer.finish();
    EXPECT_GT(syncbn_emulated_host_syncs() - before, 0);
  }
}
#endif

TEST_F(SyncBnNcclTest, GlobalSingleValueIsReportedByFinishOnEveryRank) {
  auto group = nn::make_bn_group(*world_, 0);
  nn::SyncBatchNormOptions options;
  options.num_features = 3;
  nn::SyncBatchNormCuda layer(options, group.get(), "single");
  const int64_t n = world_->rank() == 0 ? 1 : 0;
  DeviceFloats x(std::vector<float>(3, 1.0f)), y(std::vector<float>(3));
  layer.forward(x.get(), {n, 3, 1, false}, true, y.get());
  try {
    layer.finish();
    ADD_FAILURE() << "global n == 1 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("Expected more than 1 value per channel when training"),
              std::string::npos)
        << e.what();
  }
  layer.finish();  // the status was cleared
}

TEST_F(SyncBnNcclTest, LayersCalledInDifferentOrderAreReported) {
  if (world_->size() < 2) GTEST_SKIP() << "needs two ranks";
  auto group = nn::make_bn_group(*world_, 0);
  nn::SyncBatchNormOptions options;
  options.num_features = 4;
  nn::SyncBatchNormCuda a(options, group.get(), "a"), b(options, group.get(), "b");
  DeviceFloats x(std::vector<float>(2 * 4, 1.0f)), y(std::vector<float>(2 * 4));
  const norm::BnGeometry g{2, 4, 1, false};
  // Rank 0 runs a then b, the others b then a: same lengths, different layers.
  nn::SyncBatchNormCuda& first = world_->rank() == 0 ? a : b;
  nn::SyncBatchNormCuda& second = world_->rank() == 0 ? b : a;
  first.forward(x.get(), g, true, y.get());
  second.forward(x.get(), g, true, y.get());
  int thrown = 0;
  for (nn::SyncBatchNormCuda* layer : {&a, &b}) {
    try {
      layer->finish();
    } catch (const Error& e) {
      ++thrown;
      EXPECT_NE(std::string(e.what()).find("not all in the same layer"), std::string::npos)
          << e.what();
    }
  }
  EXPECT_EQ(thrown, 2);
}

}  // namespace
}  // namespace syncbn
