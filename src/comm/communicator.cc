#include "comm/communicator.h"

#include <cstdio>
#include <exception>
#include <functional>
#include <utility>

#include "core/error.h"

namespace syncbn::comm {

const char* to_string(Backend backend) {
  switch (backend) {
    case Backend::kSingle:
      return "single";
    case Backend::kMpi:
      return "mpi";
    case Backend::kNccl:
      return "nccl";
  }
  return "?";
}

const char* to_string(MemorySpace space) {
  switch (space) {
    case MemorySpace::kHost:
      return "host";
    case MemorySpace::kCudaDevice:
      return "cuda_device";
  }
  return "?";
}

const char* to_string(DataType type) {
  switch (type) {
    case DataType::kFloat32:
      return "float32";
    case DataType::kFloat64:
      return "float64";
    case DataType::kInt64:
      return "int64";
    case DataType::kUint8:
      return "uint8";
  }
  return "?";
}

int64_t element_size(DataType type) {
  switch (type) {
    case DataType::kFloat32:
      return 4;
    case DataType::kFloat64:
    case DataType::kInt64:
      return 8;
    case DataType::kUint8:
      return 1;
  }
  SYNCBN_CHECK(false && "unknown DataType");
  return 0;
}

Backend parse_backend(std::string_view name) {
  for (Backend backend : {Backend::kSingle, Backend::kMpi, Backend::kNccl}) {
    if (name == to_string(backend)) return backend;
  }
  throw Error(
      str_cat("unknown communication backend '", name, "': expected one of single, mpi, nccl"));
}

CommCounters CommCounters::operator-(const CommCounters& earlier) const {
  CommCounters delta;
  delta.allreduce_calls = allreduce_calls - earlier.allreduce_calls;
  delta.broadcast_calls = broadcast_calls - earlier.broadcast_calls;
  delta.barrier_calls = barrier_calls - earlier.barrier_calls;
  delta.split_calls = split_calls - earlier.split_calls;
  delta.bytes = bytes - earlier.bytes;
  return delta;
}

std::string to_string(const CommCounters& counters) {
  return str_cat("{allreduce_calls=", counters.allreduce_calls,
                 " broadcast_calls=", counters.broadcast_calls,
                 " barrier_calls=", counters.barrier_calls, " split_calls=", counters.split_calls,
                 " bytes=", counters.bytes, "}");
}

// ---------------------------------------------------------------------------------------------
// Request

Request::Request(std::unique_ptr<PendingOperation> operation) : operation_(std::move(operation)) {}

Request& Request::operator=(Request&& other) noexcept {
  if (this != &other) {
    wait_reporting_errors();
    operation_ = std::move(other.operation_);
  }
  return *this;
}

Request::~Request() { wait_reporting_errors(); }

void Request::wait() {
  if (operation_ == nullptr) return;
  // Complete even when wait() throws: a failed operation is not retried.
  std::unique_ptr<PendingOperation> operation = std::move(operation_);
  operation->wait();
}

bool Request::test() {
  if (operation_ == nullptr) return true;
  bool done = false;
  try {
    done = operation_->test();
  } catch (...) {
    operation_.reset();
    throw;
  }
  if (done) wait();  // returns at once; releases the backend's handle
  return done;
}

void Request::wait_reporting_errors() noexcept {
  if (operation_ == nullptr) return;
  try {
    wait();
  } catch (const std::exception& e) {
    std::fprintf(stderr,
                 "syncbn: a collective whose Request was not waited on failed: %s\n"
                 "syncbn: call Request::wait() to receive this error as an exception\n",
                 e.what());
    std::fflush(stderr);
  }
}

// ---------------------------------------------------------------------------------------------
// Communicator: validation and counting shared by every backend, then the backend's hook.

Communicator::Communicator(int rank, int size) : rank_(rank), size_(size) {
  SYNCBN_CHECK(size >= 1 && rank >= 0 && rank < size);
}

void Communicator::check_buffers(const void* send, const void* recv, int64_t count,
                                 DataType type) const {
  SYNCBN_CHECK(count >= 0);
  if (count == 0) return;
  SYNCBN_CHECK(send != nullptr && recv != nullptr);
  if (send == recv) return;
  // Distinct buffers must be disjoint. std::less gives a total order over unrelated pointers.
  const auto* send_begin = static_cast<const unsigned char*>(send);
  const auto* recv_begin = static_cast<const unsigned char*>(recv);
  const int64_t bytes = count * element_size(type);
  const bool disjoint = !std::less<>()(send_begin, recv_begin + bytes) ||
                        !std::less<>()(recv_begin, send_begin + bytes);
  SYNCBN_CHECK(disjoint && "send and recv overlap without being the same buffer");
}

void Communicator::count_allreduce(int64_t count, DataType type) {
  counters_.allreduce_calls += 1;
  counters_.bytes += count * element_size(type);
}

void Communicator::allreduce_sum(const float* send, float* recv, int64_t count) {
  check_buffers(send, recv, count, DataType::kFloat32);
  count_allreduce(count, DataType::kFloat32);
  do_allreduce_sum(send, recv, count, DataType::kFloat32);
}

void Communicator::allreduce_sum(const double* send, double* recv, int64_t count) {
  check_buffers(send, recv, count, DataType::kFloat64);
  count_allreduce(count, DataType::kFloat64);
  do_allreduce_sum(send, recv, count, DataType::kFloat64);
}

Request Communicator::allreduce_sum_async(const float* send, float* recv, int64_t count) {
  check_buffers(send, recv, count, DataType::kFloat32);
  count_allreduce(count, DataType::kFloat32);
  return do_allreduce_sum_async(send, recv, count, DataType::kFloat32);
}

Request Communicator::allreduce_sum_async(const double* send, double* recv, int64_t count) {
  check_buffers(send, recv, count, DataType::kFloat64);
  count_allreduce(count, DataType::kFloat64);
  return do_allreduce_sum_async(send, recv, count, DataType::kFloat64);
}

void Communicator::broadcast_checked(void* data, int64_t count, DataType type, int root) {
  check_buffers(data, data, count, type);
  counters_.broadcast_calls += 1;
  counters_.bytes += count * element_size(type);
  do_broadcast(data, count, type, root);
}

void Communicator::broadcast(float* data, int64_t count, int root) {
  broadcast_checked(data, count, DataType::kFloat32, root);
}

void Communicator::broadcast(double* data, int64_t count, int root) {
  broadcast_checked(data, count, DataType::kFloat64, root);
}

void Communicator::broadcast(int64_t* data, int64_t count, int root) {
  broadcast_checked(data, count, DataType::kInt64, root);
}

void Communicator::broadcast(uint8_t* data, int64_t count, int root) {
  broadcast_checked(data, count, DataType::kUint8, root);
}

void Communicator::barrier() {
  counters_.barrier_calls += 1;
  do_barrier();
}

std::unique_ptr<Communicator> Communicator::split(int color, int key) {
  SYNCBN_REQUIRE(color >= 0, "Communicator::split: color must be >= 0, got ", color);
  counters_.split_calls += 1;
  std::unique_ptr<Communicator> group = do_split(color, key);
  SYNCBN_CHECK(group != nullptr);
  return group;
}

std::unique_ptr<Communicator> split_consecutive(Communicator& parent, int group_size) {
  SYNCBN_REQUIRE(group_size >= 1 && parent.size() % group_size == 0,
                 "split_consecutive: group_size (bn_group_size) must be >= 1 and divide the ",
                 "number of ranks ", parent.size(), ", got ", group_size);
  return parent.split(parent.rank() / group_size, parent.rank());
}

}  // namespace syncbn::comm
