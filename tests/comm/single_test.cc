// The single-process backend, the factory and Request, in one process without MPI.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <stdexcept>
#include <vector>

#include "comm/communicator.h"
#include "comm/mpi_environment.h"
#include "core/error.h"

namespace syncbn::comm {
namespace {

using ::testing::HasSubstr;

template <typename F>
std::string error_message(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no syncbn::Error was thrown";
  return "";
}

TEST(SingleCommunicatorTest, IsAWorldOfOne) {
  std::unique_ptr<Communicator> comm = make_communicator("single");
  EXPECT_EQ(comm->rank(), 0);
  EXPECT_EQ(comm->size(), 1);
  EXPECT_EQ(comm->backend(), Backend::kSingle);
  EXPECT_EQ(comm->memory_space(), MemorySpace::kHost);
}

TEST(SingleCommunicatorTest, AllreduceCopiesOutOfPlaceAndKeepsInPlace) {
  std::unique_ptr<Communicator> comm = make_communicator(Backend::kSingle);
  const std::vector<float> send = {1.5f, -2.0f, 3.25f};
  std::vector<float> recv(3, 0.0f);
  comm->allreduce_sum(send.data(), recv.data(), 3);
  EXPECT_EQ(recv, send);

  std::vector<double> data = {1e300, -7.0};
  comm->allreduce_sum(data.data(), 2);
  EXPECT_EQ(data, (std::vector<double>{1e300, -7.0}));

  std::vector<double> recv_d(2, 0.0);
  Request request = comm->allreduce_sum_async(data.data(), recv_d.data(), 2);
  request.wait();
  EXPECT_EQ(recv_d, data);
  comm->allreduce_sum(recv.data(), 0);  // nothing to do, still fine
}

TEST(SingleCommunicatorTest, BroadcastFromRankZeroKeepsDataAndOtherRootsThrow) {
  std::unique_ptr<Communicator> comm = make_communicator("single");
  std::vector<int64_t> data = {5, 6};
  comm->broadcast(data.data(), 2, 0);
  EXPECT_EQ(data, (std::vector<int64_t>{5, 6}));
  EXPECT_THAT(error_message([&] { comm->broadcast(data.data(), 2, 1); }),
              HasSubstr("root 1 is not a rank"));
}

TEST(SingleCommunicatorTest, SplitAndBarrier) {
  std::unique_ptr<Communicator> comm = make_communicator("single");
  comm->barrier();
  std::unique_ptr<Communicator> group = split_consecutive(*comm, 1);
  EXPECT_EQ(group->size(), 1);
  EXPECT_EQ(group->backend(), Backend::kSingle);
  EXPECT_THAT(error_message([&] { (void)split_consecutive(*comm, 2); }),
              HasSubstr("bn_group_size"));
  EXPECT_THAT(error_message([&] { (void)comm->split(-3, 0); }), HasSubstr("color"));
}

TEST(SingleCommunicatorTest, CountsLikeEveryBackend) {
  std::unique_ptr<Communicator> comm = make_communicator("single");
  std::vector<double> stats(2 * 64 + 1, 0.0);
  comm->allreduce_sum(stats.data(), static_cast<int64_t>(stats.size()));
  std::vector<float> grads(10, 0.0f);
  comm->allreduce_sum_async(grads.data(), grads.data(), 10).wait();
  uint8_t byte = 0;
  comm->broadcast(&byte, 1, 0);
  comm->barrier();
  std::unique_ptr<Communicator> group = comm->split(0, 0);
  EXPECT_EQ(comm->counters(), (CommCounters{.allreduce_calls = 2,
                                            .broadcast_calls = 1,
                                            .barrier_calls = 1,
                                            .split_calls = 1,
                                            .bytes = 8 * (2 * 64 + 1) + 40 + 1}))
      << to_string(comm->counters());
  EXPECT_EQ(comm->counters().collective_calls(), 4);
  EXPECT_EQ(group->counters(), CommCounters{});  // a split counts on its own
  comm->reset_counters();
  EXPECT_EQ(comm->counters(), CommCounters{});
}

TEST(CommunicatorDeathTest, MisuseAbortsWithFileAndLine) {
  std::unique_ptr<Communicator> comm = make_communicator("single");
  std::vector<float> data(8, 0.0f);
  EXPECT_DEATH(comm->allreduce_sum(data.data(), data.data() + 1, 4), "communicator.cc:.*overlap");
  EXPECT_DEATH(comm->allreduce_sum(data.data(), -1), "communicator.cc:.*count >= 0");
  EXPECT_DEATH(comm->allreduce_sum(static_cast<float*>(nullptr), 3), "nullptr");
}

TEST(FactoryTest, ParsesBackendNamesAndNamesTheAllowedOnes) {
  EXPECT_EQ(parse_backend("single"), Backend::kSingle);
  EXPECT_EQ(parse_backend("mpi"), Backend::kMpi);
  EXPECT_EQ(parse_backend("nccl"), Backend::kNccl);
  const std::string message = error_message([] { (void)parse_backend("MPI"); });
  EXPECT_THAT(message, HasSubstr("unknown communication backend 'MPI'"));
  EXPECT_THAT(message, HasSubstr("expected one of single, mpi, nccl"));
  EXPECT_THAT(error_message([] { (void)make_communicator(""); }), HasSubstr("''"));
  EXPECT_TRUE(backend_built(Backend::kSingle));
  EXPECT_TRUE(backend_built(Backend::kMpi));
}

TEST(FactoryTest, MpiBackendsWithoutMpiEnvironmentSaySo) {
  ASSERT_FALSE(MpiEnvironment::active());
  EXPECT_THAT(error_message([] { (void)make_communicator("mpi"); }),
              HasSubstr("create a syncbn::comm::MpiEnvironment"));
  const std::string nccl = error_message([] { (void)make_communicator("nccl"); });
  if (backend_built(Backend::kNccl)) {
    EXPECT_THAT(nccl, HasSubstr("the nccl backend needs MPI"));
  } else {
    EXPECT_THAT(nccl, HasSubstr("nccl backend is not built"));
  }
}

// A stand-in backend operation: completes after `polls` calls to test(), or fails.
class FakeOperation : public PendingOperation {
 public:
  FakeOperation(int polls, bool fails, int* waits) : polls_(polls), fails_(fails), waits_(waits) {}
  void wait() override {
    ++*waits_;
    if (fails_) throw Error("fake collective failed");
  }
  bool test() override {
    if (fails_) throw Error("fake collective failed");
    return --polls_ <= 0;
  }

 private:
  int polls_;
  bool fails_;
  int* waits_;
};

TEST(RequestTest, DefaultIsCompleteAndTestPollsUntilDone) {
  Request done;
  EXPECT_TRUE(done.complete());
  EXPECT_TRUE(done.test());
  done.wait();

  int waits = 0;
  Request request(std::make_unique<FakeOperation>(3, false, &waits));
  EXPECT_FALSE(request.test());
  EXPECT_FALSE(request.test());
  EXPECT_TRUE(request.test());
  EXPECT_TRUE(request.complete());
  EXPECT_EQ(waits, 1);  // the backend's handle is released once
}

TEST(RequestTest, WaitThrowsTheBackendErrorOnce) {
  int waits = 0;
  Request request(std::make_unique<FakeOperation>(0, true, &waits));
  EXPECT_THROW(request.wait(), Error);
  EXPECT_TRUE(request.complete());
  request.wait();  // no second error
  EXPECT_EQ(waits, 1);
}

TEST(RequestTest, DestructorAndAssignmentWaitAndReportErrorsOnStderr) {
  int waits = 0;
  { Request request(std::make_unique<FakeOperation>(5, false, &waits)); }
  EXPECT_EQ(waits, 1);
  {
    Request request(std::make_unique<FakeOperation>(5, false, &waits));
    request = Request(std::make_unique<FakeOperation>(5, false, &waits));
    EXPECT_EQ(waits, 2);
  }
  EXPECT_EQ(waits, 3);

  testing::internal::CaptureStderr();
  { Request failing(std::make_unique<FakeOperation>(0, true, &waits)); }
  const std::string stderr_text = testing::internal::GetCapturedStderr();
  EXPECT_THAT(stderr_text, HasSubstr("fake collective failed"));
  EXPECT_THAT(stderr_text, HasSubstr("Request::wait()"));
}

TEST(CommCountersTest, DifferenceAndText) {
  const CommCounters later{.allreduce_calls = 5, .barrier_calls = 2, .bytes = 100};
  const CommCounters earlier{.allreduce_calls = 2, .bytes = 40};
  EXPECT_EQ(later - earlier, (CommCounters{.allreduce_calls = 3, .barrier_calls = 2, .bytes = 60}));
  EXPECT_EQ(to_string(later - earlier),
            "{allreduce_calls=3 broadcast_calls=0 barrier_calls=2 split_calls=0 bytes=60}");
  EXPECT_STREQ(to_string(DataType::kFloat64), "float64");
  EXPECT_EQ(element_size(DataType::kFloat64), 8);
  EXPECT_EQ(element_size(DataType::kUint8), 1);
}

}  // namespace
}  // namespace syncbn::comm
