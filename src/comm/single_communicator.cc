// The single-process backend: a world of one. Every collective is a copy or nothing, but it is
// still validated and counted, so code and tests run unchanged on one process.
#include <cstring>

#include "comm/backends.h"
#include "core/error.h"

namespace syncbn::comm::detail {
namespace {

class SingleCommunicator final : public Communicator {
 public:
  SingleCommunicator() : Communicator(/*rank=*/0, /*size=*/1) {}

  Backend backend() const override { return Backend::kSingle; }
  MemorySpace memory_space() const override { return MemorySpace::kHost; }

 private:
  void do_allreduce_sum(const void* send, void* recv, int64_t count, DataType type) override {
    // The sum over one rank is the rank's own data.
    if (send != recv && count > 0) {
      std::memcpy(recv, send, static_cast<size_t>(count * element_size(type)));
    }
  }

  Request do_allreduce_sum_async(const void* send, void* recv, int64_t count,
                                 DataType type) override {
    do_allreduce_sum(send, recv, count, type);
    return Request();
  }

  void do_broadcast(void*, int64_t, DataType, int root) override {
    SYNCBN_REQUIRE(root == 0, "broadcast: root ", root,
                   " is not a rank of the single-process communicator (only rank 0 exists)");
  }

  void do_barrier() override {}

  std::unique_ptr<Communicator> do_split(int, int) override {
    return std::make_unique<SingleCommunicator>();
  }
};

}  // namespace

std::unique_ptr<Communicator> make_single_communicator() {
  return std::make_unique<SingleCommunicator>();
}

}  // namespace syncbn::comm::detail
