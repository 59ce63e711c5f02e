#include "comm/mpi_environment.h"

#include <mpi.h>
#include <unistd.h>

#include <cstdio>

#include "comm/backends.h"
#include "core/error.h"

namespace syncbn::comm {
namespace {

int to_mpi(ThreadLevel level) {
  switch (level) {
    case ThreadLevel::kSingle:
      return MPI_THREAD_SINGLE;
    case ThreadLevel::kFunneled:
      return MPI_THREAD_FUNNELED;
    case ThreadLevel::kSerialized:
      return MPI_THREAD_SERIALIZED;
    case ThreadLevel::kMultiple:
      return MPI_THREAD_MULTIPLE;
  }
  SYNCBN_CHECK(false && "unknown ThreadLevel");
  return MPI_THREAD_SINGLE;
}

ThreadLevel from_mpi(int level) {
  if (level >= MPI_THREAD_MULTIPLE) return ThreadLevel::kMultiple;
  if (level >= MPI_THREAD_SERIALIZED) return ThreadLevel::kSerialized;
  if (level >= MPI_THREAD_FUNNELED) return ThreadLevel::kFunneled;
  return ThreadLevel::kSingle;
}

}  // namespace

const char* to_string(ThreadLevel level) {
  switch (level) {
    case ThreadLevel::kSingle:
      return "MPI_THREAD_SINGLE";
    case ThreadLevel::kFunneled:
      return "MPI_THREAD_FUNNELED";
    case ThreadLevel::kSerialized:
      return "MPI_THREAD_SERIALIZED";
    case ThreadLevel::kMultiple:
      return "MPI_THREAD_MULTIPLE";
  }
  return "?";
}

bool MpiEnvironment::active() {
  int initialized = 0;
  int finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  return initialized != 0 && finalized == 0;
}

MpiEnvironment::MpiEnvironment(int* argc, char*** argv, ThreadLevel required) {
  int initialized = 0;
  int finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  SYNCBN_REQUIRE(finalized == 0,
                 "MpiEnvironment: MPI was already finalized and cannot be initialized again; "
                 "create one MpiEnvironment at the top of main()");
  int provided = MPI_THREAD_SINGLE;
  if (initialized == 0) {
    detail::check_mpi(MPI_Init_thread(argc, argv, to_mpi(required), &provided), "MPI_Init_thread");
    owns_mpi_ = true;
  } else {
    detail::check_mpi(MPI_Query_thread(&provided), "MPI_Query_thread");
  }
  provided_ = from_mpi(provided);
  // Errors on the predefined communicators come back as return codes too (STYLE.md rule 8).
  detail::check_mpi(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN),
                    "MPI_Comm_set_errhandler(MPI_COMM_WORLD)");
  detail::check_mpi(MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN),
                    "MPI_Comm_set_errhandler(MPI_COMM_SELF)");
  if (provided < to_mpi(required)) {
    if (owns_mpi_) MPI_Finalize();
    throw Error(str_cat("MpiEnvironment: MPI provides thread level ", to_string(provided_), " but ",
                        to_string(required), " is required"));
  }
}

MpiEnvironment::~MpiEnvironment() {
  if (owns_mpi_ && active()) MPI_Finalize();
}

void abort_world(int exit_code) {
  std::fflush(stdout);
  std::fflush(stderr);
  if (MpiEnvironment::active()) MPI_Abort(MPI_COMM_WORLD, exit_code);
  ::_exit(exit_code);
}

}  // namespace syncbn::comm
