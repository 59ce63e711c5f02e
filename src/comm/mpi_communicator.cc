// The MPI backend: host buffers, MPI's collectives on a communicator of its own (a duplicate of
// MPI_COMM_WORLD, or a split of one), so syncbn's traffic never matches anyone else's.
#include <mpi.h>

#include <climits>
#include <utility>

#include "comm/backends.h"
#include "comm/mpi_comm.h"
#include "comm/mpi_environment.h"
#include "core/error.h"

namespace syncbn::comm::detail {

void check_mpi(int rc, const char* call) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  if (MPI_Error_string(rc, text, &length) != MPI_SUCCESS) {
    throw Error(str_cat(call, " failed with MPI error code ", rc));
  }
  if (!MpiEnvironment::active()) throw Error(str_cat(call, " failed: ", text));
  int world_rank = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  throw Error(str_cat(call, " failed on rank ", world_rank, ": ", text));
}

void require_mpi_active(const char* who) {
  SYNCBN_REQUIRE(MpiEnvironment::active(), "the ", who,
                 " backend needs MPI: create a syncbn::comm::MpiEnvironment at the top of "
                 "main() (and run under mpirun)");
}

namespace {

MPI_Datatype to_mpi(DataType type) {
  switch (type) {
    case DataType::kFloat32:
      return MPI_FLOAT;
    case DataType::kFloat64:
      return MPI_DOUBLE;
    case DataType::kInt64:
      return MPI_INT64_T;
    case DataType::kUint8:
      return MPI_UINT8_T;
  }
  SYNCBN_CHECK(false && "unknown DataType");
  return MPI_DATATYPE_NULL;
}

// MPI 3 counts are int.
int to_mpi_count(int64_t count, const char* operation) {
  SYNCBN_REQUIRE(count <= INT_MAX, operation, " of ", count,
                 " elements exceeds MPI's limit of INT_MAX elements per call");
  return static_cast<int>(count);
}

// An MPI_Iallreduce in flight. MPI forbids freeing the request of a non-blocking collective, so
// an abandoned one is waited for.
class MpiPendingOperation final : public PendingOperation {
 public:
  explicit MpiPendingOperation(MPI_Request request) : request_(request) {}
  ~MpiPendingOperation() override {
    if (request_ != MPI_REQUEST_NULL && MpiEnvironment::active()) {
      MPI_Wait(&request_, MPI_STATUS_IGNORE);
    }
  }

  void wait() override {
    const int rc = MPI_Wait(&request_, MPI_STATUS_IGNORE);
    request_ = MPI_REQUEST_NULL;
    check_mpi(rc, "MPI_Wait(MPI_Iallreduce)");
  }

  bool test() override {
    int done = 0;
    const int rc = MPI_Test(&request_, &done, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) request_ = MPI_REQUEST_NULL;
    check_mpi(rc, "MPI_Test(MPI_Iallreduce)");
    return done != 0;
  }

 private:
  MPI_Request request_;
};

class MpiCommunicator final : public Communicator {
 public:
  // Takes ownership of `comm` and sets MPI_ERRORS_RETURN on it.
  static std::unique_ptr<MpiCommunicator> adopt(MPI_Comm comm) {
    OwnedMpiComm owned(comm);
    check_mpi(MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    int rank = 0;
    int size = 0;
    check_mpi(MPI_Comm_rank(comm, &rank), "MPI_Comm_rank");
    check_mpi(MPI_Comm_size(comm, &size), "MPI_Comm_size");
    return std::unique_ptr<MpiCommunicator>(new MpiCommunicator(std::move(owned), rank, size));
  }

  Backend backend() const override { return Backend::kMpi; }
  MemorySpace memory_space() const override { return MemorySpace::kHost; }

 private:
  MpiCommunicator(OwnedMpiComm comm, int rank, int size)
      : Communicator(rank, size), comm_(std::move(comm)) {}

  void do_allreduce_sum(const void* send, void* recv, int64_t count, DataType type) override {
    const int n = to_mpi_count(count, "allreduce_sum");
    check_mpi(MPI_Allreduce(send == recv ? MPI_IN_PLACE : send, recv, n, to_mpi(type), MPI_SUM,
                            comm_.get()),
              "MPI_Allreduce");
  }

  Request do_allreduce_sum_async(const void* send, void* recv, int64_t count,
                                 DataType type) override {
    const int n = to_mpi_count(count, "allreduce_sum_async");
    MPI_Request request = MPI_REQUEST_NULL;
    check_mpi(MPI_Iallreduce(send == recv ? MPI_IN_PLACE : send, recv, n, to_mpi(type), MPI_SUM,
                             comm_.get(), &request),
              "MPI_Iallreduce");
    return Request(std::make_unique<MpiPendingOperation>(request));
  }

  void do_broadcast(void* data, int64_t count, DataType type, int root) override {
    // The root is validated by MPI (MPI_ERR_ROOT), so a bad one reads as MPI reports it.
    const int n = to_mpi_count(count, "broadcast");
    const int rc = MPI_Bcast(data, n, to_mpi(type), root, comm_.get());
    if (rc != MPI_SUCCESS) check_mpi(rc, str_cat("MPI_Bcast(root=", root, ")").c_str());
  }

  void do_barrier() override { check_mpi(MPI_Barrier(comm_.get()), "MPI_Barrier"); }

  std::unique_ptr<Communicator> do_split(int color, int key) override {
    MPI_Comm group = MPI_COMM_NULL;
    const int rc = MPI_Comm_split(comm_.get(), color, key, &group);
    if (rc != MPI_SUCCESS) {
      check_mpi(rc, str_cat("MPI_Comm_split(color=", color, ", key=", key, ")").c_str());
    }
    return adopt(group);
  }

  OwnedMpiComm comm_;
};

}  // namespace

std::unique_ptr<Communicator> make_mpi_communicator() {
  require_mpi_active("mpi");
  MPI_Comm world = MPI_COMM_NULL;
  check_mpi(MPI_Comm_dup(MPI_COMM_WORLD, &world), "MPI_Comm_dup(MPI_COMM_WORLD)");
  return MpiCommunicator::adopt(world);
}

}  // namespace syncbn::comm::detail
