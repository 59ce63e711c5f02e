// make_communicator(): the one place that knows which backends this build contains. Callers
// choose a backend at run time and never see SYNCBN_HAVE_NCCL.
#include "comm/backends.h"
#include "core/error.h"

namespace syncbn::comm {

bool backend_built(Backend backend) {
  switch (backend) {
    case Backend::kSingle:
    case Backend::kMpi:
      return true;
    case Backend::kNccl:
#if defined(SYNCBN_HAVE_NCCL)
      return true;
#else
      return false;
#endif
  }
  return false;
}

std::unique_ptr<Communicator> make_communicator(Backend backend, const CommOptions& options) {
  switch (backend) {
    case Backend::kSingle:
      return detail::make_single_communicator();
    case Backend::kMpi:
      return detail::make_mpi_communicator();
    case Backend::kNccl:
#if defined(SYNCBN_HAVE_NCCL)
      return detail::make_nccl_communicator(options);
#else
      (void)options;
      throw Error(
          "the nccl backend is not built into this syncbn: it needs CUDA and libnccl when CMake "
          "configures the build (see the 'syncbn: NCCL' line of the CMake output)");
#endif
  }
  SYNCBN_CHECK(false && "unknown Backend");
  return nullptr;
}

std::unique_ptr<Communicator> make_communicator(std::string_view backend,
                                                const CommOptions& options) {
  return make_communicator(parse_backend(backend), options);
}

}  // namespace syncbn::comm
