// Not a test of syncbn: a deliberately failing binary that checks the MPI test runner itself.
// Run under mpirun by expect_failure.cmake, which requires a non-zero exit status and the output
// naming the failing rank (the last one).
#include <gtest/gtest.h>
#include <mpi.h>

TEST(HarnessSelfTest, PassesOnEveryRank) { SUCCEED(); }

TEST(HarnessSelfTest, FailsOnLastRank) {
  int rank = 0;
  int size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  EXPECT_NE(rank, size - 1) << "deliberate failure on the last rank";
}
