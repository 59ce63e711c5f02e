// The MPI backend under mpirun -np 1..4 (main: mpi_gtest_main.cc). Expected values are computed
// in closed form from the ranks' inputs, which are small integers (exact in float32) or chosen to
// be exact in float64 only.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <mpi.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "comm/communicator.h"
#include "comm/mpi_environment.h"
#include "core/error.h"

namespace syncbn::comm {
namespace {

using ::testing::HasSubstr;

// Rank r contributes 3·(r+1) + (i mod 17) at index i.
template <typename T>
T contribution(int rank, int64_t i) {
  return static_cast<T>(3 * (rank + 1) + i % 17);
}

template <typename T>
T expected_sum(int size, int64_t i) {
  return static_cast<T>(3 * size * (size + 1) / 2 + size * (i % 17));
}

template <typename T>
std::vector<T> contributions(int rank, int64_t count) {
  std::vector<T> values(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) values[static_cast<size_t>(i)] = contribution<T>(rank, i);
  return values;
}

template <typename T>
void expect_sums(const std::vector<T>& values, int size) {
  for (size_t i = 0; i < values.size(); ++i) {
    ASSERT_EQ(values[i], expected_sum<T>(size, static_cast<int64_t>(i))) << "at index " << i;
  }
}

std::string mpi_error_string(int code) {
  char text[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  MPI_Error_string(code, text, &length);
  return text;
}

class MpiCommTest : public ::testing::Test {
 protected:
  void SetUp() override {
    world_ = make_communicator("mpi");
    rank_ = world_->rank();
    size_ = world_->size();
  }

  std::unique_ptr<Communicator> world_;
  int rank_ = 0;
  int size_ = 1;
};

const int64_t kCounts[] = {0, 1, 7, 1000, 300000};

TEST_F(MpiCommTest, RankAndSizeMatchMpiCommWorld) {
  int world_rank = -1;
  int world_size = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world_size);
  EXPECT_EQ(world_->rank(), world_rank);
  EXPECT_EQ(world_->size(), world_size);
  EXPECT_EQ(world_->backend(), Backend::kMpi);
  EXPECT_EQ(world_->memory_space(), MemorySpace::kHost);
  EXPECT_EQ(world_->cuda_stream(), nullptr);
}

TEST_F(MpiCommTest, AllreduceFloatOutOfPlaceLeavesSendUnchanged) {
  for (int64_t count : kCounts) {
    SCOPED_TRACE(count);
    const std::vector<float> send = contributions<float>(rank_, count);
    std::vector<float> recv(static_cast<size_t>(count), -1.0f);
    world_->allreduce_sum(send.data(), recv.data(), count);
    expect_sums(recv, size_);
    EXPECT_EQ(send, contributions<float>(rank_, count));
  }
}

TEST_F(MpiCommTest, AllreduceFloatInPlace) {
  for (int64_t count : kCounts) {
    SCOPED_TRACE(count);
    std::vector<float> data = contributions<float>(rank_, count);
    world_->allreduce_sum(data.data(), count);
    expect_sums(data, size_);
    data = contributions<float>(rank_, count);
    world_->allreduce_sum(data.data(), data.data(), count);
    expect_sums(data, size_);
  }
}

TEST_F(MpiCommTest, AllreduceDoubleOutOfPlaceAndInPlace) {
  for (int64_t count : kCounts) {
    SCOPED_TRACE(count);
    const std::vector<double> send = contributions<double>(rank_, count);
    std::vector<double> recv(static_cast<size_t>(count), -1.0);
    world_->allreduce_sum(send.data(), recv.data(), count);
    expect_sums(recv, size_);
    std::vector<double> data = send;
    world_->allreduce_sum(data.data(), count);
    expect_sums(data, size_);
  }
}

// 1 + (r+1)·2⁻⁴⁰ summed over ranks is exact in float64 and would round to an integer in float32:
// the sum really is done in double.
TEST_F(MpiCommTest, AllreduceDoubleKeepsFloat64Precision) {
  const double tiny = std::ldexp(1.0, -40);
  std::vector<double> data(3, 1.0 + (rank_ + 1) * tiny);
  world_->allreduce_sum(data.data(), 3);
  const double expected = size_ + tiny * size_ * (size_ + 1) / 2;
  for (double value : data) EXPECT_EQ(value, expected);
}

TEST_F(MpiCommTest, AllreduceAsyncFloatAndDoubleInFlightTogether) {
  const int64_t count = 100000;
  const std::vector<float> send_f = contributions<float>(rank_, count);
  std::vector<float> recv_f(static_cast<size_t>(count));
  std::vector<double> data_d = contributions<double>(rank_, count);

  Request first = world_->allreduce_sum_async(send_f.data(), recv_f.data(), count);
  Request second = world_->allreduce_sum_async(data_d.data(), data_d.data(), count);
  EXPECT_FALSE(first.complete());
  while (!first.test()) std::this_thread::yield();
  EXPECT_TRUE(first.complete());
  second.wait();
  EXPECT_TRUE(second.complete());
  second.wait();  // waiting again returns at once
  expect_sums(recv_f, size_);
  expect_sums(data_d, size_);
}

TEST_F(MpiCommTest, RequestDestructorWaits) {
  std::vector<double> data = contributions<double>(rank_, 1000);
  { Request pending = world_->allreduce_sum_async(data.data(), data.data(), 1000); }
  expect_sums(data, size_);
}

TEST_F(MpiCommTest, RequestMoveAssignmentWaitsForThePendingOne) {
  std::vector<float> a = contributions<float>(rank_, 500);
  std::vector<float> b = contributions<float>(rank_, 700);
  Request request = world_->allreduce_sum_async(a.data(), a.data(), 500);
  request = world_->allreduce_sum_async(b.data(), b.data(), 700);
  expect_sums(a, size_);  // done: the assignment waited for it
  Request moved = std::move(request);
  moved.wait();
  expect_sums(b, size_);
}

TEST_F(MpiCommTest, BroadcastFromEveryRootForEveryType) {
  for (int root = 0; root < size_; ++root) {
    SCOPED_TRACE(root);
    const bool is_root = rank_ == root;
    std::vector<float> f(33);
    std::vector<double> d(17);
    std::vector<int64_t> i(9);
    std::vector<uint8_t> u(100);
    for (size_t k = 0; k < f.size(); ++k) f[k] = is_root ? 0.5f * k + root : -1.0f;
    for (size_t k = 0; k < d.size(); ++k) d[k] = is_root ? 1e-3 * k + root : -1.0;
    for (size_t k = 0; k < i.size(); ++k) i[k] = is_root ? (int64_t{1} << 40) + k + root : -1;
    for (size_t k = 0; k < u.size(); ++k) u[k] = is_root ? static_cast<uint8_t>(k + root) : 255;
    world_->broadcast(f.data(), 33, root);
    world_->broadcast(d.data(), 17, root);
    world_->broadcast(i.data(), 9, root);
    world_->broadcast(u.data(), 100, root);
    for (size_t k = 0; k < f.size(); ++k) EXPECT_EQ(f[k], 0.5f * k + root);
    for (size_t k = 0; k < d.size(); ++k) EXPECT_EQ(d[k], 1e-3 * k + root);
    for (size_t k = 0; k < i.size(); ++k) EXPECT_EQ(i[k], (int64_t{1} << 40) + k + root);
    for (size_t k = 0; k < u.size(); ++k) EXPECT_EQ(u[k], static_cast<uint8_t>(k + root));
  }
}

// Rank 0 arrives late; nobody may leave the barrier before it arrives. Only a lower bound on the
// time is checked, so a slow machine cannot make this fail.
TEST_F(MpiCommTest, BarrierWaitsForTheLastRank) {
  const double delay_s = 0.3;
  world_->barrier();
  const double start = MPI_Wtime();
  if (rank_ == 0) std::this_thread::sleep_for(std::chrono::duration<double>(delay_s));
  world_->barrier();
  const double waited = MPI_Wtime() - start;
  if (size_ > 1) {
    EXPECT_GT(waited, 0.5 * delay_s) << "rank " << rank_ << " left the barrier early";
  }
}

// BN groups: G consecutive ranks, for every G dividing the world size (G=1 and 2 for 4 ranks).
TEST_F(MpiCommTest, SplitIntoConsecutiveGroupsReducesInsideTheGroup) {
  for (int group_size = 1; group_size <= size_; ++group_size) {
    if (size_ % group_size != 0) continue;
    SCOPED_TRACE(group_size);
    const CommCounters world_before = world_->counters();
    std::unique_ptr<Communicator> group = split_consecutive(*world_, group_size);
    EXPECT_EQ(group->backend(), Backend::kMpi);
    EXPECT_EQ(group->size(), group_size);
    EXPECT_EQ(group->rank(), rank_ % group_size);
    EXPECT_EQ(world_->counters() - world_before, (CommCounters{.split_calls = 1}));

    const int first = rank_ / group_size * group_size;  // first world rank of this group
    double expected = 0;
    for (int r = first; r < first + group_size; ++r) expected += r + 1;

    std::vector<double> sums(5, rank_ + 1.0);
    group->allreduce_sum(sums.data(), 5);
    for (double value : sums) EXPECT_EQ(value, expected);

    std::vector<float> async_sums(5, rank_ + 1.0f);
    Request request = group->allreduce_sum_async(async_sums.data(), async_sums.data(), 5);
    request.wait();
    for (float value : async_sums) EXPECT_EQ(value, static_cast<float>(expected));

    int64_t leader = rank_;
    group->broadcast(&leader, 1, 0);
    EXPECT_EQ(leader, first);
    group->barrier();

    EXPECT_EQ(group->counters(), (CommCounters{.allreduce_calls = 2,
                                               .broadcast_calls = 1,
                                               .barrier_calls = 1,
                                               .bytes = 5 * 8 + 5 * 4 + 8}))
        << to_string(group->counters());
    EXPECT_EQ(world_->counters() - world_before, (CommCounters{.split_calls = 1}));
  }
}

TEST_F(MpiCommTest, SplitOrdersRanksByKeyAndSplitsAgain) {
  std::unique_ptr<Communicator> reversed = world_->split(/*color=*/0, /*key=*/-rank_);
  EXPECT_EQ(reversed->size(), size_);
  EXPECT_EQ(reversed->rank(), size_ - 1 - rank_);

  // Even and odd world ranks, then each of those halved again.
  std::unique_ptr<Communicator> parity = world_->split(rank_ % 2, rank_);
  EXPECT_EQ(parity->size(), (size_ - rank_ % 2 + 1) / 2);
  EXPECT_EQ(parity->rank(), rank_ / 2);
  double world_rank_sum = rank_;
  parity->allreduce_sum(&world_rank_sum, 1);
  double expected = 0;
  for (int r = rank_ % 2; r < size_; r += 2) expected += r;
  EXPECT_EQ(world_rank_sum, expected);

  std::unique_ptr<Communicator> alone = parity->split(parity->rank(), 0);
  EXPECT_EQ(alone->size(), 1);
  EXPECT_EQ(alone->rank(), 0);
  float value = 2.5f;
  alone->allreduce_sum(&value, 1);
  EXPECT_EQ(value, 2.5f);
}

TEST_F(MpiCommTest, SplitRejectsBadGroupSizeAndColor) {
  for (int group_size : {0, -1, size_ + 1}) {
    try {
      (void)split_consecutive(*world_, group_size);
      ADD_FAILURE() << "group_size " << group_size << " was accepted";
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), HasSubstr("bn_group_size"));
      EXPECT_THAT(e.what(), HasSubstr("got " + std::to_string(group_size)));
    }
  }
  EXPECT_THROW((void)world_->split(-1, 0), Error);
  EXPECT_EQ(world_->counters().split_calls, 0);
}

// What SyncBN relies on: one allreduce of 8·(2C+1) bytes is counted as exactly that.
TEST_F(MpiCommTest, CountersCountCallsAndPayloadBytes) {
  const int64_t channels = 3;
  std::vector<double> stats(2 * channels + 1, 1.0);
  world_->allreduce_sum(stats.data(), static_cast<int64_t>(stats.size()));
  EXPECT_EQ(world_->counters(), (CommCounters{.allreduce_calls = 1, .bytes = 8 * (2 * 3 + 1)}))
      << to_string(world_->counters());
  EXPECT_EQ(world_->counters().collective_calls(), 1);

  const CommCounters before = world_->counters();
  std::vector<float> f(5, 1.0f);
  std::vector<double> d(4, 1.0);
  std::vector<int64_t> i(2, 1);
  std::vector<uint8_t> u(3, 1);
  world_->allreduce_sum(f.data(), 5);                         // 20 bytes
  world_->allreduce_sum_async(d.data(), d.data(), 4).wait();  // 32 bytes
  world_->allreduce_sum(f.data(), 0);                         // a call, 0 bytes
  world_->broadcast(i.data(), 2, 0);                          // 16 bytes
  world_->broadcast(u.data(), 3, 0);                          // 3 bytes
  world_->barrier();                                          // no payload
  (void)world_->split(0, rank_);                              // not a data collective
  const CommCounters delta = world_->counters() - before;
  EXPECT_EQ(delta, (CommCounters{.allreduce_calls = 3,
                                 .broadcast_calls = 2,
                                 .barrier_calls = 1,
                                 .split_calls = 1,
                                 .bytes = 20 + 32 + 16 + 3}))
      << to_string(delta);
  EXPECT_EQ(delta.collective_calls(), 6);

  world_->reset_counters();
  EXPECT_EQ(world_->counters(), CommCounters{});
}

// MPI_ERRORS_RETURN is set, so MPI's own argument check comes back as syncbn::Error naming the
// call and MPI's message, on the world and on split communicators, which stay usable.
TEST_F(MpiCommTest, InvalidBroadcastRootThrowsErrorNamingMpiBcast) {
  std::unique_ptr<Communicator> group = world_->split(0, rank_);
  for (Communicator* comm : {world_.get(), group.get()}) {
    for (int root : {comm->size(), -1}) {
      SCOPED_TRACE(root);
      double value = 1.0;
      try {
        comm->broadcast(&value, 1, root);
        ADD_FAILURE() << "broadcast with root " << root << " did not throw";
      } catch (const Error& e) {
        EXPECT_THAT(e.what(), HasSubstr("MPI_Bcast(root=" + std::to_string(root) + ")"));
        EXPECT_THAT(e.what(), HasSubstr("failed on rank " + std::to_string(rank_)));
        EXPECT_THAT(e.what(), HasSubstr(mpi_error_string(MPI_ERR_ROOT)));
      }
    }
    double value = 1.0;
    comm->allreduce_sum(&value, 1);
    EXPECT_EQ(value, size_);
  }
}

TEST(MpiBackendTest, SingleBackendUnderMpiIsAWorldOfOne) {
  std::unique_ptr<Communicator> single = make_communicator("single");
  EXPECT_EQ(single->backend(), Backend::kSingle);
  EXPECT_EQ(single->rank(), 0);
  EXPECT_EQ(single->size(), 1);
  float value = 4.0f;
  single->allreduce_sum(&value, 1);
  EXPECT_EQ(value, 4.0f);
}

TEST(MpiBackendTest, FactoryNamesTheProblem) {
  try {
    (void)make_communicator("gloo");
    ADD_FAILURE() << "an unknown backend was accepted";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("'gloo'"));
    EXPECT_THAT(e.what(), HasSubstr("single, mpi, nccl"));
  }
  // nccl: not built, or built but (here) maybe without a device; either way all ranks agree.
  try {
    std::unique_ptr<Communicator> nccl = make_communicator(Backend::kNccl);
    EXPECT_TRUE(backend_built(Backend::kNccl));
    EXPECT_EQ(nccl->memory_space(), MemorySpace::kCudaDevice);
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr(backend_built(Backend::kNccl) ? "CUDA device" : "not built"));
  }
}

TEST(MpiEnvironmentTest, ASecondGuardLeavesMpiToTheFirst) {
  EXPECT_TRUE(MpiEnvironment::active());
  MpiEnvironment nested(nullptr, nullptr);
  EXPECT_FALSE(nested.owns_mpi());
  EXPECT_GE(static_cast<int>(nested.provided()), static_cast<int>(ThreadLevel::kFunneled));
}

}  // namespace
}  // namespace syncbn::comm
