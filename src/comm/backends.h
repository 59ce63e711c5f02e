// Internal to syncbn_comm: constructors of the backends behind make_communicator(), and the MPI
// error check they share. Not installed, not included outside src/comm.
#pragma once

#include <memory>

#include "comm/communicator.h"

namespace syncbn::comm::detail {

std::unique_ptr<Communicator> make_single_communicator();

// Collective over MPI_COMM_WORLD, which it duplicates. Throws syncbn::Error unless MPI is active.
std::unique_ptr<Communicator> make_mpi_communicator();

#if defined(SYNCBN_HAVE_NCCL)
// Collective over MPI_COMM_WORLD (bootstrap). Throws syncbn::Error unless MPI is active and this
// rank has a CUDA device.
std::unique_ptr<Communicator> make_nccl_communicator(const CommOptions& options);
#endif

// Throws syncbn::Error "<call> failed on rank <world rank>: <MPI_Error_string>" unless
// rc == MPI_SUCCESS. `call` names the MPI function and, where useful, its arguments.
void check_mpi(int rc, const char* call);

// Throws syncbn::Error unless MPI_Init has been called and MPI_Finalize has not. `who` names
// the backend that needs MPI.
void require_mpi_active(const char* who);

}  // namespace syncbn::comm::detail
