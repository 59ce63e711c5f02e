// cuda_skip_reason for MPI tests: every rank on a node needs its own device. The same answer on
// every rank of a node, so all of them skip together.
#pragma once

#include <mpi.h>

#include <string>

#include "cuda_skip.h"

namespace syncbn::testing {

inline std::string cuda_skip_reason_for_node() {
  MPI_Comm node = MPI_COMM_NULL;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
  int ranks_on_node = 0;
  MPI_Comm_size(node, &ranks_on_node);
  MPI_Comm_free(&node);
  return cuda_skip_reason(ranks_on_node);
}

}  // namespace syncbn::testing
