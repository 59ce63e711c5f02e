// MpiEnvironment: RAII over MPI_Init_thread / MPI_Finalize, created once at the top of main():
//
//   int main(int argc, char** argv) {
//     syncbn::comm::MpiEnvironment mpi(&argc, &argv);
//     auto world = syncbn::comm::make_communicator("mpi");
//     ...
//   }  // world is freed, then MPI is finalized
//
// MPI can be initialized only once per process, so the guard that initialized MPI finalizes it,
// and MPI cannot be initialized again afterwards (syncbn::Error). A guard created while MPI is
// already initialized (by other code) leaves initialization and finalization to that code.
// The guard sets MPI_ERRORS_RETURN on MPI_COMM_WORLD and MPI_COMM_SELF, so MPI errors become
// return codes that syncbn turns into syncbn::Error. Every MPI communicator must be destroyed
// before the guard: a communicator outliving MPI aborts (a programming error).
#pragma once

namespace syncbn::comm {

enum class ThreadLevel { kSingle, kFunneled, kSerialized, kMultiple };

const char* to_string(ThreadLevel level);

class MpiEnvironment {
 public:
  // Throws syncbn::Error if MPI was already finalized or provides less than `required`.
  // argc/argv may be null.
  MpiEnvironment(int* argc, char*** argv, ThreadLevel required = ThreadLevel::kFunneled);
  ~MpiEnvironment();
  MpiEnvironment(const MpiEnvironment&) = delete;
  MpiEnvironment& operator=(const MpiEnvironment&) = delete;

  ThreadLevel provided() const { return provided_; }
  // Whether this guard initialized MPI (and so will finalize it).
  bool owns_mpi() const { return owns_mpi_; }

  // MPI_Initialized and not MPI_Finalized.
  static bool active();

 private:
  ThreadLevel provided_ = ThreadLevel::kSingle;
  bool owns_mpi_ = false;
};

// Ends the whole job: MPI_Abort(MPI_COMM_WORLD, exit_code) when MPI is active (mpirun then kills
// every rank and exits non-zero), else _exit(exit_code). For an error one rank sees while others
// may wait in a collective; stdout and stderr are flushed first so the rank's message survives.
[[noreturn]] void abort_world(int exit_code);

}  // namespace syncbn::comm
