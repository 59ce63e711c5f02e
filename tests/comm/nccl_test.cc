// The NCCL backend under mpirun, one CUDA device per rank (label `gpu`). Every test skips when
// this node has no CUDA device or fewer devices than ranks, and CTest then reports the test as
// skipped (SKIP_WHEN_ALL_SKIPPED in CMakeLists.txt).
#include <cuda_runtime.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdint>
#include <string>
#include <vector>

#include "../common/cuda_skip_mpi.h"
#include "comm/communicator.h"
#include "core/error.h"

namespace syncbn::comm {
namespace {

#define TEST_CUDA_CHECK(call) ASSERT_EQ((call), cudaSuccess) << #call

// Why this node cannot run the NCCL tests, or "" if it can. The same answer on every rank of a
// node, so all ranks skip together.
std::string reason_to_skip() { return syncbn::testing::cuda_skip_reason_for_node(); }

// count elements on the current device, freed on destruction.
template <typename T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(const std::vector<T>& host) : count_(host.size()) {
    if (cudaMalloc(&data_, bytes()) != cudaSuccess) data_ = nullptr;
    if (data_ != nullptr) cudaMemcpy(data_, host.data(), bytes(), cudaMemcpyHostToDevice);
  }
  ~DeviceBuffer() { cudaFree(data_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  T* get() const { return data_; }
  int64_t count() const { return static_cast<int64_t>(count_); }
  std::vector<T> to_host() const {
    std::vector<T> host(count_);
    cudaMemcpy(host.data(), data_, bytes(), cudaMemcpyDeviceToHost);
    return host;
  }

 private:
  size_t bytes() const { return count_ * sizeof(T); }
  size_t count_;
  T* data_ = nullptr;
};

class NcclCommTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string reason = reason_to_skip();
    if (!reason.empty()) GTEST_SKIP() << reason;
    world_ = make_communicator("nccl");
    rank_ = world_->rank();
    size_ = world_->size();
  }

  std::unique_ptr<Communicator> world_;
  int rank_ = 0;
  int size_ = 1;
};

TEST_F(NcclCommTest, MatchesMpiCommWorld) {
  int world_rank = -1;
  int world_size = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world_size);
  EXPECT_EQ(rank_, world_rank);
  EXPECT_EQ(size_, world_size);
  EXPECT_EQ(world_->backend(), Backend::kNccl);
  EXPECT_EQ(world_->memory_space(), MemorySpace::kCudaDevice);
  EXPECT_NE(world_->cuda_stream(), nullptr);  // created and owned by the communicator
}

TEST_F(NcclCommTest, AllreduceFloatAndDoubleBlockingAndInPlace) {
  const int64_t count = 100003;
  std::vector<float> f(count);
  std::vector<double> d(count);
  for (int64_t i = 0; i < count; ++i) {
    f[i] = static_cast<float>(rank_ + 1 + i % 13);
    d[i] = (rank_ + 1) * 0.5 + static_cast<double>(i % 7);
  }
  DeviceBuffer<float> send_f(f);
  DeviceBuffer<float> recv_f(std::vector<float>(count, -1.0f));
  DeviceBuffer<double> data_d(d);
  ASSERT_NE(send_f.get(), nullptr);
  world_->allreduce_sum(send_f.get(), recv_f.get(), count);
  world_->allreduce_sum(data_d.get(), count);
  const std::vector<float> sum_f = recv_f.to_host();
  const std::vector<double> sum_d = data_d.to_host();
  const double rank_sum = size_ * (size_ + 1) / 2.0;
  for (int64_t i = 0; i < count; ++i) {
    ASSERT_EQ(sum_f[i], static_cast<float>(rank_sum + size_ * (i % 13))) << i;
    ASSERT_EQ(sum_d[i], 0.5 * rank_sum + size_ * static_cast<double>(i % 7)) << i;
  }
  EXPECT_EQ(send_f.to_host(), f);
}

TEST_F(NcclCommTest, AllreduceAsyncThenWait) {
  DeviceBuffer<double> data(std::vector<double>(1000, rank_ + 1.0));
  Request request = world_->allreduce_sum_async(data.get(), data.get(), data.count());
  request.wait();
  for (double value : data.to_host()) ASSERT_EQ(value, size_ * (size_ + 1) / 2.0);
}

TEST_F(NcclCommTest, BroadcastAndBarrier) {
  for (int root = 0; root < size_; ++root) {
    DeviceBuffer<int64_t> data(std::vector<int64_t>(10, rank_ == root ? 1000 + root : -1));
    world_->broadcast(data.get(), data.count(), root);
    for (int64_t value : data.to_host()) ASSERT_EQ(value, 1000 + root);
  }
  world_->barrier();
  double value = 0;
  EXPECT_THROW(world_->broadcast(&value, 1, size_), Error);
}

TEST_F(NcclCommTest, SplitIntoConsecutiveGroups) {
  for (int group_size = 1; group_size <= size_; ++group_size) {
    if (size_ % group_size != 0) continue;
    std::unique_ptr<Communicator> group = split_consecutive(*world_, group_size);
    EXPECT_EQ(group->backend(), Backend::kNccl);
    EXPECT_EQ(group->size(), group_size);
    EXPECT_EQ(group->rank(), rank_ % group_size);
    DeviceBuffer<float> data(std::vector<float>(5, rank_ + 1.0f));
    group->allreduce_sum(data.get(), data.count());
    const int first = rank_ / group_size * group_size;
    float expected = 0;
    for (int r = first; r < first + group_size; ++r) expected += r + 1.0f;
    for (float value : data.to_host()) EXPECT_EQ(value, expected);
  }
}

TEST_F(NcclCommTest, CountersMatchTheOtherBackends) {
  DeviceBuffer<double> stats(std::vector<double>(2 * 16 + 1, 1.0));
  world_->allreduce_sum(stats.get(), stats.count());
  world_->barrier();
  EXPECT_EQ(world_->counters(),
            (CommCounters{.allreduce_calls = 1, .barrier_calls = 1, .bytes = 8 * (2 * 16 + 1)}))
      << to_string(world_->counters());
}

TEST_F(NcclCommTest, UsesTheStreamGivenAtConstruction) {
  cudaStream_t stream = nullptr;
  TEST_CUDA_CHECK(cudaStreamCreate(&stream));
  {
    std::unique_ptr<Communicator> on_stream =
        make_communicator("nccl", CommOptions{.cuda_stream = stream});
    EXPECT_EQ(on_stream->cuda_stream(), stream);
    EXPECT_EQ(on_stream->split(0, rank_)->cuda_stream(), stream);
    DeviceBuffer<float> data(std::vector<float>(64, 1.0f));
    Request request = on_stream->allreduce_sum_async(data.get(), data.get(), data.count());
    // Ordered on `stream`: synchronizing the stream alone makes the result visible.
    TEST_CUDA_CHECK(cudaStreamSynchronize(stream));
    for (float value : data.to_host()) EXPECT_EQ(value, static_cast<float>(size_));
    request.wait();
  }
  TEST_CUDA_CHECK(cudaStreamDestroy(stream));
}

}  // namespace
}  // namespace syncbn::comm
