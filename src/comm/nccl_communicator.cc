// The NCCL backend: device buffers, one CUDA device per rank, every operation enqueued on the
// stream given at construction. The world communicator is bootstrapped over MPI (rank 0 makes
// the ncclUniqueId, MPI_Bcast hands it out); groups come from ncclCommSplit.
//
// Errors, two tiers (STYLE.md rule 8):
//  * A CUDA or NCCL call that fails when made (bad argument, CUDA error) aborts with file:line.
//  * What a peer causes — NCCL's asynchronous error (ncclCommGetAsyncError), a remote or system
//    error, or no progress within CommOptions::timeout (a dead or stalled rank) — aborts the NCCL
//    communicator (ncclCommAbort) and throws syncbn::Error. Every later call on it throws too.
#include <cuda_runtime.h>
#include <mpi.h>
#include <nccl.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <utility>

#include "comm/backends.h"
#include "comm/mpi_comm.h"
#include "core/cuda_check.h"
#include "core/error.h"

namespace syncbn::comm::detail {
namespace {

ncclDataType_t to_nccl(DataType type) {
  switch (type) {
    case DataType::kFloat32:
      return ncclFloat32;
    case DataType::kFloat64:
      return ncclFloat64;
    case DataType::kInt64:
      return ncclInt64;
    case DataType::kUint8:
      return ncclUint8;
  }
  SYNCBN_CHECK(false && "unknown DataType");
  return ncclFloat32;
}

// Makes `device` current for a scope and restores the caller's device afterwards.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    SYNCBN_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device) SYNCBN_CUDA_CHECK(cudaSetDevice(device));
  }
  ~DeviceGuard() { cudaSetDevice(previous_); }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

// A CUDA stream, owned (created here, destroyed here) or borrowed from the caller.
class CudaStream {
 public:
  static std::shared_ptr<CudaStream> borrow(cudaStream_t stream) {
    return std::shared_ptr<CudaStream>(new CudaStream(stream, /*owned=*/false));
  }
  static std::shared_ptr<CudaStream> create() {
    cudaStream_t stream = nullptr;
    SYNCBN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    return std::shared_ptr<CudaStream>(new CudaStream(stream, /*owned=*/true));
  }
  ~CudaStream() {
    if (owned_) cudaStreamDestroy(stream_);
  }
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;

  cudaStream_t get() const { return stream_; }

 private:
  CudaStream(cudaStream_t stream, bool owned) : stream_(stream), owned_(owned) {}
  cudaStream_t stream_;
  bool owned_;
};

class CudaEvent {
 public:
  CudaEvent() { SYNCBN_CUDA_CHECK(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming)); }
  ~CudaEvent() { cudaEventDestroy(event_); }
  CudaEvent(const CudaEvent&) = delete;
  CudaEvent& operator=(const CudaEvent&) = delete;

  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

// One float on the device, the payload of barrier().
class DeviceScalar {
 public:
  DeviceScalar() { SYNCBN_CUDA_CHECK(cudaMalloc(&data_, sizeof(float))); }
  ~DeviceScalar() { cudaFree(data_); }
  DeviceScalar(const DeviceScalar&) = delete;
  DeviceScalar& operator=(const DeviceScalar&) = delete;

  float* get() const { return data_; }

 private:
  float* data_ = nullptr;
};

// The NCCL communicator and what its operations need, shared with in-flight operations so that
// a Request stays valid whatever is destroyed first.
class NcclState {
 public:
  NcclState(ncclComm_t comm, int device, std::shared_ptr<CudaStream> stream,
            std::chrono::milliseconds timeout)
      : comm_(comm), device_(device), stream_(std::move(stream)), timeout_(timeout) {
    DeviceGuard guard(device_);
    barrier_scalar_ = std::make_unique<DeviceScalar>();
  }
  // Never aborts: it may run while unwinding or at exit, when CUDA may already be shutting down.
  ~NcclState() {
    int previous = -1;
    const bool restore = cudaGetDevice(&previous) == cudaSuccess && previous != device_;
    if (restore) cudaSetDevice(device_);
    barrier_scalar_.reset();
    if (comm_ != nullptr) {
      const ncclResult_t status = ncclCommDestroy(comm_);
      if (status != ncclSuccess) {
        std::fprintf(stderr, "syncbn: ncclCommDestroy failed: %s\n", ncclGetErrorString(status));
      }
    }
    if (restore) cudaSetDevice(previous);
  }
  NcclState(const NcclState&) = delete;
  NcclState& operator=(const NcclState&) = delete;

  ncclComm_t comm() const { return comm_; }
  int device() const { return device_; }
  cudaStream_t stream() const { return stream_->get(); }
  const std::shared_ptr<CudaStream>& shared_stream() const { return stream_; }
  std::chrono::milliseconds timeout() const { return timeout_; }
  float* barrier_scalar() const { return barrier_scalar_->get(); }

  void require_usable(const char* operation) const {
    SYNCBN_REQUIRE(comm_ != nullptr, "nccl ", operation,
                   ": the communicator was aborted after an earlier error or timeout");
  }

  // Aborts the NCCL communicator (unblocking its kernels) and throws syncbn::Error.
  [[noreturn]] void abort_and_throw(const std::string& what) {
    if (comm_ != nullptr) {
      ncclCommAbort(comm_);
      comm_ = nullptr;
    }
    throw Error(what + "; the NCCL communicator was aborted");
  }

  // Checks the status of an NCCL call that enqueues work. Remote and system errors are what a
  // peer causes (a dead rank, a broken network) and throw; anything else is a bug and aborts.
  void check_enqueue(ncclResult_t status, const char* call, const char* file, int line) {
    if (status == ncclSuccess) return;
    if (status == ncclRemoteError || status == ncclSystemError) {
      abort_and_throw(str_cat(call, " failed: ", ncclGetErrorString(status), " (",
                              ncclGetLastError(comm_), ")"));
    }
    gpu_call_failed(file, line, call, ncclGetErrorString(status));
  }

  // True once `event` (recorded after an operation) has been reached. Throws on an NCCL
  // asynchronous error.
  bool poll(cudaEvent_t event, const char* operation) {
    require_usable(operation);
    const cudaError_t reached = cudaEventQuery(event);
    if (reached == cudaSuccess) return true;
    if (reached != cudaErrorNotReady) SYNCBN_CUDA_CHECK(reached);
    ncclResult_t async_status = ncclSuccess;
    SYNCBN_NCCL_CHECK(ncclCommGetAsyncError(comm_, &async_status));
    if (async_status != ncclSuccess && async_status != ncclInProgress) {
      abort_and_throw(str_cat("nccl ", operation,
                              " failed asynchronously: ", ncclGetErrorString(async_status), " (",
                              ncclGetLastError(comm_), ")"));
    }
    return false;
  }

  // Blocks until `event` is reached, an asynchronous error, or the timeout.
  void wait(cudaEvent_t event, const char* operation) {
    const auto start = std::chrono::steady_clock::now();
    while (!poll(event, operation)) {
      if (std::chrono::steady_clock::now() - start > timeout_) {
        abort_and_throw(str_cat("nccl ", operation, " did not complete within ", timeout_.count(),
                                " ms: a peer rank may have died or stalled"));
      }
      std::this_thread::yield();
    }
  }

 private:
  ncclComm_t comm_;
  int device_;
  std::shared_ptr<CudaStream> stream_;
  std::chrono::milliseconds timeout_;
  std::unique_ptr<DeviceScalar> barrier_scalar_;
};

#define SYNCBN_NCCL_ENQUEUE(state, call) (state).check_enqueue((call), #call, __FILE__, __LINE__)

class NcclPendingOperation final : public PendingOperation {
 public:
  NcclPendingOperation(std::shared_ptr<NcclState> state, std::unique_ptr<CudaEvent> event,
                       const char* operation)
      : state_(std::move(state)), event_(std::move(event)), operation_(operation) {}

  void wait() override {
    DeviceGuard guard(state_->device());
    state_->wait(event_->get(), operation_);
  }
  bool test() override {
    DeviceGuard guard(state_->device());
    return state_->poll(event_->get(), operation_);
  }

 private:
  std::shared_ptr<NcclState> state_;
  std::unique_ptr<CudaEvent> event_;
  const char* operation_;
};

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(std::shared_ptr<NcclState> state, int rank, int size)
      : Communicator(rank, size), state_(std::move(state)) {}

  Backend backend() const override { return Backend::kNccl; }
  MemorySpace memory_space() const override { return MemorySpace::kCudaDevice; }
  CUstream_st* cuda_stream() const override { return state_->stream(); }

 private:
  // Handing NCCL a host pointer is a bug in the caller: it would fault on the device.
  void check_device_buffer(const void* buffer, int64_t count) const {
    if (count == 0) return;
    cudaPointerAttributes attributes{};
    SYNCBN_CUDA_CHECK(cudaPointerGetAttributes(&attributes, buffer));
    SYNCBN_CHECK(
        (attributes.type == cudaMemoryTypeDevice || attributes.type == cudaMemoryTypeManaged) &&
        "nccl communicator given a buffer that is not CUDA device memory");
    SYNCBN_CHECK(attributes.device == state_->device() &&
                 "nccl communicator given a buffer on another CUDA device");
  }

  // Enqueues the allreduce and returns the event recorded after it.
  std::unique_ptr<CudaEvent> enqueue_allreduce(const void* send, void* recv, int64_t count,
                                               DataType type) {
    state_->require_usable("allreduce_sum");
    check_device_buffer(send, count);
    check_device_buffer(recv, count);
    auto event = std::make_unique<CudaEvent>();
    SYNCBN_NCCL_ENQUEUE(
        *state_, ncclAllReduce(send, recv, static_cast<size_t>(count), to_nccl(type), ncclSum,
                               state_->comm(), state_->stream()));
    SYNCBN_CUDA_CHECK(cudaEventRecord(event->get(), state_->stream()));
    return event;
  }

  void do_allreduce_sum(const void* send, void* recv, int64_t count, DataType type) override {
    DeviceGuard guard(state_->device());
    std::unique_ptr<CudaEvent> done = enqueue_allreduce(send, recv, count, type);
    state_->wait(done->get(), "allreduce_sum");
  }

  Request do_allreduce_sum_async(const void* send, void* recv, int64_t count,
                                 DataType type) override {
    DeviceGuard guard(state_->device());
    std::unique_ptr<CudaEvent> done = enqueue_allreduce(send, recv, count, type);
    return Request(
        std::make_unique<NcclPendingOperation>(state_, std::move(done), "allreduce_sum_async"));
  }

  void do_broadcast(void* data, int64_t count, DataType type, int root) override {
    SYNCBN_REQUIRE(root >= 0 && root < size(), "broadcast: root ", root,
                   " is not a rank of this nccl communicator of size ", size());
    DeviceGuard guard(state_->device());
    state_->require_usable("broadcast");
    check_device_buffer(data, count);
    CudaEvent done;
    SYNCBN_NCCL_ENQUEUE(*state_,
                        ncclBroadcast(data, data, static_cast<size_t>(count), to_nccl(type), root,
                                      state_->comm(), state_->stream()));
    SYNCBN_CUDA_CHECK(cudaEventRecord(done.get(), state_->stream()));
    state_->wait(done.get(), "broadcast");
  }

  // NCCL has no barrier: an allreduce of one float that every rank must join is one.
  void do_barrier() override {
    DeviceGuard guard(state_->device());
    state_->require_usable("barrier");
    CudaEvent done;
    SYNCBN_NCCL_ENQUEUE(
        *state_, ncclAllReduce(state_->barrier_scalar(), state_->barrier_scalar(), 1, ncclFloat32,
                               ncclSum, state_->comm(), state_->stream()));
    SYNCBN_CUDA_CHECK(cudaEventRecord(done.get(), state_->stream()));
    state_->wait(done.get(), "barrier");
  }

  std::unique_ptr<Communicator> do_split(int color, int key) override {
    DeviceGuard guard(state_->device());
    state_->require_usable("split");
    ncclComm_t group = nullptr;
    // A null config inherits the parent's (blocking) configuration.
    SYNCBN_NCCL_ENQUEUE(*state_, ncclCommSplit(state_->comm(), color, key, &group, nullptr));
    SYNCBN_CHECK(group != nullptr);
    int group_rank = 0;
    int group_size = 0;
    SYNCBN_NCCL_CHECK(ncclCommUserRank(group, &group_rank));
    SYNCBN_NCCL_CHECK(ncclCommCount(group, &group_size));
    auto group_state = std::make_shared<NcclState>(group, state_->device(), state_->shared_stream(),
                                                   state_->timeout());
    return std::make_unique<NcclCommunicator>(std::move(group_state), group_rank, group_size);
  }

  std::shared_ptr<NcclState> state_;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(const CommOptions& options) {
  require_mpi_active("nccl");
  int world_rank = 0;
  int world_size = 0;
  check_mpi(MPI_Comm_rank(MPI_COMM_WORLD, &world_rank), "MPI_Comm_rank");
  check_mpi(MPI_Comm_size(MPI_COMM_WORLD, &world_size), "MPI_Comm_size");

  // One device per rank: by default the rank's index among the ranks on its node.
  MPI_Comm node_comm = MPI_COMM_NULL;
  check_mpi(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, world_rank, MPI_INFO_NULL,
                                &node_comm),
            "MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)");
  OwnedMpiComm node(node_comm);
  int local_rank = 0;
  int local_size = 0;
  check_mpi(MPI_Comm_rank(node.get(), &local_rank), "MPI_Comm_rank");
  check_mpi(MPI_Comm_size(node.get(), &local_size), "MPI_Comm_size");

  int device_count = 0;
  const cudaError_t count_status = cudaGetDeviceCount(&device_count);
  if (count_status != cudaSuccess) {
    cudaGetLastError();  // reset the error so later CUDA calls do not report it
    device_count = 0;
  }
  const int device = options.cuda_device >= 0 ? options.cuda_device : local_rank;
  std::string problem;
  if (device_count == 0) {
    problem = str_cat("rank ", world_rank, " sees no CUDA device (cudaGetDeviceCount: ",
                      cudaGetErrorString(count_status), ")");
  } else if (device >= device_count) {
    problem = str_cat("rank ", world_rank, " would use CUDA device ", device, " but its node has ",
                      device_count, " (", local_size,
                      " ranks share the node; NCCL needs one device per rank)");
  }
  // Every rank learns whether all can go on, so all throw together rather than some waiting in
  // the bootstrap for ranks that gave up.
  int usable = problem.empty() ? 1 : 0;
  check_mpi(MPI_Allreduce(MPI_IN_PLACE, &usable, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD),
            "MPI_Allreduce(nccl device check)");
  if (usable == 0) {
    throw Error(str_cat("the nccl backend needs a CUDA device for every rank: ",
                        problem.empty() ? "another rank has none" : problem));
  }

  SYNCBN_CUDA_CHECK(cudaSetDevice(device));
  std::shared_ptr<CudaStream> stream = options.cuda_stream != nullptr
                                           ? CudaStream::borrow(options.cuda_stream)
                                           : CudaStream::create();

  ncclUniqueId id{};
  if (world_rank == 0) SYNCBN_NCCL_CHECK(ncclGetUniqueId(&id));
  check_mpi(MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, MPI_COMM_WORLD), "MPI_Bcast(ncclUniqueId)");
  ncclComm_t comm = nullptr;
  SYNCBN_NCCL_CHECK(ncclCommInitRank(&comm, world_size, id, world_rank));
  auto state = std::make_shared<NcclState>(comm, device, std::move(stream), options.timeout);
  return std::make_unique<NcclCommunicator>(std::move(state), world_rank, world_size);
}

}  // namespace syncbn::comm::detail
