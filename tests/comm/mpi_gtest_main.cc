// main() for GoogleTest binaries run under mpirun (STYLE.md rule 11). Every rank runs every test.
// Rank 0 prints GoogleTest's usual output; every rank prints its own failures prefixed with
// "[rank R]". After each test the ranks compare results: a test that failed on any rank is marked
// failed on every rank, with a failure naming the ranks it failed on, so rank 0's report lists it
// and every rank exits non-zero (and so do mpirun and CTest).
//
// When every test was skipped on every rank, rank 0 prints "syncbn-mpi-test: all N tests skipped",
// which CTest's SKIP_REGULAR_EXPRESSION turns into a skipped test (see SyncbnMpiTest.cmake).
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "comm/mpi_environment.h"

namespace {

// Collects one int from every rank on rank 0 and returns the ranks whose value is non-zero.
std::string ranks_with_flag(int flag, MPI_Comm comm, int rank, int size) {
  std::vector<int> flags(static_cast<size_t>(size), 0);
  MPI_Gather(&flag, 1, MPI_INT, flags.data(), 1, MPI_INT, 0, comm);
  std::string ranks;
  if (rank != 0) return ranks;
  for (int r = 0; r < size; ++r) {
    if (flags[static_cast<size_t>(r)] == 0) continue;
    if (!ranks.empty()) ranks += ", ";
    ranks += std::to_string(r);
  }
  return ranks;
}

class RankReporter : public testing::EmptyTestEventListener {
 public:
  RankReporter(MPI_Comm comm, int rank, int size) : comm_(comm), rank_(rank), size_(size) {}

  // Tests that failed on this rank itself (not through another rank's failure).
  int own_failures() const { return own_failures_; }

  void OnTestPartResult(const testing::TestPartResult& result) override {
    if (!result.failed() || reporting_ranks_) return;
    std::string text = "[rank " + std::to_string(rank_) + "] " +
                       (result.file_name() != nullptr ? result.file_name() : "unknown") + ":" +
                       std::to_string(result.line_number()) + ": Failure\n";
    std::istringstream message(result.message());
    for (std::string line; std::getline(message, line);) {
      text += "[rank " + std::to_string(rank_) + "] " + line + "\n";
    }
    std::fputs(text.c_str(), stdout);  // one write, so ranks' lines interleave less
    std::fflush(stdout);
  }

  // Collective: every rank ends every test, in the same order. Runs before the result printer
  // (listeners appended later receive end events first), so the failure added here is printed
  // as part of this test.
  void OnTestEnd(const testing::TestInfo& info) override {
    const bool failed_here = info.result()->Failed();
    if (failed_here) ++own_failures_;
    const std::string failed_on = ranks_with_flag(failed_here ? 1 : 0, comm_, rank_, size_);
    int any_failed = failed_here ? 1 : 0;
    MPI_Allreduce(MPI_IN_PLACE, &any_failed, 1, MPI_INT, MPI_MAX, comm_);
    if (any_failed == 0) return;
    reporting_ranks_ = true;  // printed by rank 0's result printer, not as [rank R]
    if (rank_ == 0) {
      ADD_FAILURE() << info.test_suite_name() << "." << info.name() << " failed on rank(s) "
                    << failed_on << " of " << size_ << " (see the [rank R] lines)";
    } else if (!failed_here) {
      ADD_FAILURE() << "failed on another rank";
    }
    reporting_ranks_ = false;
  }

 private:
  MPI_Comm comm_;
  int rank_;
  int size_;
  int own_failures_ = 0;
  bool reporting_ranks_ = false;
};

}  // namespace

int main(int argc, char** argv) {
  syncbn::comm::MpiEnvironment mpi(&argc, &argv);
  testing::InitGoogleTest(&argc, argv);

  // The reporter's own communicator, so its traffic never matches a test's.
  MPI_Comm report_comm = MPI_COMM_NULL;
  MPI_Comm_dup(MPI_COMM_WORLD, &report_comm);
  int rank = 0;
  int size = 1;
  MPI_Comm_rank(report_comm, &rank);
  MPI_Comm_size(report_comm, &size);

  testing::TestEventListeners& listeners = testing::UnitTest::GetInstance()->listeners();
  if (rank != 0) delete listeners.Release(listeners.default_result_printer());
  auto* reporter = new RankReporter(report_comm, rank, size);  // owned by `listeners`
  listeners.Append(reporter);

  const int run_status = RUN_ALL_TESTS();
  // Failed on this rank: a test failed here, or gtest itself failed (e.g. a bad flag).
  const testing::UnitTest& unit = *testing::UnitTest::GetInstance();
  const int failed =
      reporter->own_failures() > 0 || (run_status != 0 && unit.failed_test_count() == 0) ? 1 : 0;
  const std::string failed_on = ranks_with_flag(failed, report_comm, rank, size);
  int any_failed = 0;
  MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_MAX, report_comm);
  int all_skipped =
      unit.test_to_run_count() > 0 && unit.skipped_test_count() == unit.test_to_run_count();
  MPI_Allreduce(MPI_IN_PLACE, &all_skipped, 1, MPI_INT, MPI_MIN, report_comm);
  if (rank == 0) {
    if (any_failed != 0) {
      std::printf("syncbn-mpi-test: FAILED on rank(s) %s of %d\n", failed_on.c_str(), size);
    } else if (all_skipped != 0) {
      std::printf("syncbn-mpi-test: all %d tests skipped on %d rank(s)\n", unit.test_to_run_count(),
                  size);
    } else {
      std::printf("syncbn-mpi-test: passed on all %d rank(s)\n", size);
    }
    std::fflush(stdout);
  }
  MPI_Comm_free(&report_comm);
  return any_failed != 0 ? 1 : 0;
}
