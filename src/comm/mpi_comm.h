// Internal to syncbn_comm: RAII over an MPI_Comm that syncbn created.
#pragma once

#include <mpi.h>

#include <utility>

#include "comm/mpi_environment.h"
#include "core/error.h"

namespace syncbn::comm::detail {

// Owns an MPI_Comm made by MPI_Comm_dup or MPI_Comm_split(_type); MPI_Comm_free on destruction.
class OwnedMpiComm {
 public:
  explicit OwnedMpiComm(MPI_Comm comm) : comm_(comm) {}
  OwnedMpiComm(OwnedMpiComm&& other) noexcept : comm_(std::exchange(other.comm_, MPI_COMM_NULL)) {}
  OwnedMpiComm& operator=(OwnedMpiComm&&) = delete;
  OwnedMpiComm(const OwnedMpiComm&) = delete;
  OwnedMpiComm& operator=(const OwnedMpiComm&) = delete;
  ~OwnedMpiComm() {
    if (comm_ == MPI_COMM_NULL) return;
    SYNCBN_CHECK(MpiEnvironment::active() && "an MPI communicator outlived MPI_Finalize");
    MPI_Comm_free(&comm_);
  }

  MPI_Comm get() const { return comm_; }

 private:
  MPI_Comm comm_;
};

}  // namespace syncbn::comm::detail
