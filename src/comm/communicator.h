// Communicator: the one interface through which syncbn talks to its peers (DESIGN.md §2).
//
// A Communicator is a group of `size()` ranks, numbered 0..size()-1. Backends are chosen at run
// time through make_communicator(); code that uses a Communicator never knows which one it has.
//
//   backend  buffers               bootstrap                   built
//   single   host                  none (a world of one)       always
//   mpi      host                  MPI_COMM_WORLD (duplicated)  always
//   nccl     CUDA device memory    ncclUniqueId over MPI        when CUDA and libnccl are found
//
// Semantics shared by every backend, in the manner of nccl.h:
//
//  * Collective calls. allreduce_sum, allreduce_sum_async, broadcast, barrier and split are
//    collective: every rank of the communicator must make the same calls, in the same order,
//    with the same count, element type and root. A rank that skips one makes the others hang (the
//    test runner's timeout, or NCCL's watchdog, is the backstop). rank(), size(), counters() are
//    local.
//  * Buffers. `send` and `recv` hold `count` elements in memory_space(): host memory for single
//    and mpi, device memory of the communicator's CUDA device for nccl. In-place operation is
//    allowed and is the cheap path: pass the same pointer as send and recv (or use the one-pointer
//    overloads). Distinct send and recv buffers must not overlap.
//  * Blocking calls (allreduce_sum, broadcast, barrier, split) return when the result is in the
//    buffer and the buffers may be reused. For nccl the operation is enqueued on the
//    communicator's CUDA stream (given at construction) and the host then waits for that stream,
//    so work enqueued earlier on the stream has finished too.
//  * Non-blocking calls (allreduce_sum_async) return a Request once the operation is started.
//    The buffers must stay alive and untouched until Request::wait() returns. For nccl the
//    operation is ordered on the communicator's stream: later kernels on that stream see the
//    result without wait(); wait() is needed before the host reads it or the buffer is freed.
//  * Errors follow the two tiers of STYLE.md rule 8. Misuse by the calling code (negative count,
//    null buffer, overlapping send/recv) aborts with file:line. Anything a user or a peer can
//    cause throws syncbn::Error naming the operation: an MPI error (MPI_ERRORS_RETURN is set on
//    every communicator; the message names the MPI call and MPI's error string), an invalid root,
//    an NCCL asynchronous error or a timeout waiting for peers (the NCCL communicator is then
//    aborted and every later call on it throws). CUDA and NCCL API failures abort with file:line.
//  * Threads. A Communicator is not thread-safe: one thread uses it (MPI_THREAD_FUNNELED by
//    default, see MpiEnvironment). Distinct communicators may be used by distinct threads only if
//    MPI provides MPI_THREAD_MULTIPLE.
//  * Counters. Every backend counts the collectives it starts (CommCounters): a SyncBN layer can
//    be checked to make exactly one allreduce of 8·(2C+1) bytes per pass.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

struct CUstream_st;  // cudaStream_t is CUstream_st*; declared here so no CUDA header is needed.

namespace syncbn::comm {

enum class Backend { kSingle, kMpi, kNccl };
enum class MemorySpace { kHost, kCudaDevice };
enum class DataType { kFloat32, kFloat64, kInt64, kUint8 };

const char* to_string(Backend backend);
const char* to_string(MemorySpace space);
const char* to_string(DataType type);
int64_t element_size(DataType type);

// Parses "single", "mpi" or "nccl"; throws syncbn::Error naming the allowed values otherwise.
Backend parse_backend(std::string_view name);

// Whether this build contains the backend (nccl needs CUDA and libnccl at configure time).
bool backend_built(Backend backend);

// What one communicator has started since construction or reset_counters(). Split
// communicators count separately from their parent.
struct CommCounters {
  int64_t allreduce_calls = 0;  // blocking and non-blocking
  int64_t broadcast_calls = 0;
  int64_t barrier_calls = 0;
  int64_t split_calls = 0;  // not a data collective: not in collective_calls()
  // Payload bytes handed to allreduce and broadcast: count · element size per call, the same on
  // every rank. Not wire traffic, which depends on the algorithm (a ring allreduce sends about
  // twice the payload).
  int64_t bytes = 0;

  int64_t collective_calls() const { return allreduce_calls + broadcast_calls + barrier_calls; }
  CommCounters operator-(const CommCounters& earlier) const;
  bool operator==(const CommCounters&) const = default;
};

std::string to_string(const CommCounters& counters);

// A backend's in-flight operation. Implementations live in the backends.
class PendingOperation {
 public:
  virtual ~PendingOperation() = default;
  // Blocks until the operation completes; throws syncbn::Error if it failed. Called once.
  virtual void wait() = 0;
  // True once the operation has completed (after which wait() returns at once); throws
  // syncbn::Error if it failed. Does not block.
  virtual bool test() = 0;
};

// Handle to a non-blocking collective. Move-only. A default-constructed Request is complete.
//
// The destructor of a Request that was not waited on waits (the operation's buffers must
// outlive it). An error seen there cannot be thrown: it is printed to stderr. Call wait() to get
// errors as exceptions. Move-assigning onto a pending Request waits for it first, the same way.
class Request {
 public:
  Request() = default;
  explicit Request(std::unique_ptr<PendingOperation> operation);
  Request(Request&& other) noexcept = default;
  Request& operator=(Request&& other) noexcept;
  Request(const Request&) = delete;
  Request& operator=(const Request&) = delete;
  ~Request();

  // Blocks until the operation has completed; afterwards the Request is complete. Throws
  // syncbn::Error if the operation failed. Waiting on a complete Request returns at once.
  void wait();
  // Non-blocking: true when complete. Throws syncbn::Error if the operation failed.
  bool test();
  bool complete() const { return operation_ == nullptr; }

 private:
  void wait_reporting_errors() noexcept;

  std::unique_ptr<PendingOperation> operation_;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  virtual Backend backend() const = 0;
  virtual MemorySpace memory_space() const = 0;
  // nccl: the CUDA stream every operation is enqueued on, for ordering kernels before and after
  // a collective. nullptr for the host backends.
  virtual CUstream_st* cuda_stream() const { return nullptr; }

  // Collective, blocking: recv[i] = Σ over ranks of send[i], i < count. send == recv is in place.
  void allreduce_sum(const float* send, float* recv, int64_t count);
  void allreduce_sum(const double* send, double* recv, int64_t count);
  void allreduce_sum(float* data, int64_t count) { allreduce_sum(data, data, count); }
  void allreduce_sum(double* data, int64_t count) { allreduce_sum(data, data, count); }

  // Collective, non-blocking: the same result once the returned Request completes.
  [[nodiscard]] Request allreduce_sum_async(const float* send, float* recv, int64_t count);
  [[nodiscard]] Request allreduce_sum_async(const double* send, double* recv, int64_t count);

  // Collective, blocking, in place: data on every rank becomes data on `root`. An invalid root
  // throws syncbn::Error (for mpi: MPI's MPI_ERR_ROOT, naming MPI_Bcast).
  void broadcast(float* data, int64_t count, int root);
  void broadcast(double* data, int64_t count, int root);
  void broadcast(int64_t* data, int64_t count, int root);
  void broadcast(uint8_t* data, int64_t count, int root);

  // Collective, blocking: returns on each rank once every rank has entered it.
  void barrier();

  // Collective, blocking: ranks passing the same color (>= 0) form a new communicator of the
  // same backend, ordered by key, then by rank here. A negative color throws syncbn::Error.
  std::unique_ptr<Communicator> split(int color, int key);

  const CommCounters& counters() const { return counters_; }
  void reset_counters() { counters_ = CommCounters{}; }

 protected:
  Communicator(int rank, int size);

 private:
  // Backend hooks. Arguments are already validated (count >= 0, non-null buffers, send == recv
  // or disjoint, color >= 0) and counted; root is not validated.
  virtual void do_allreduce_sum(const void* send, void* recv, int64_t count, DataType type) = 0;
  virtual Request do_allreduce_sum_async(const void* send, void* recv, int64_t count,
                                         DataType type) = 0;
  virtual void do_broadcast(void* data, int64_t count, DataType type, int root) = 0;
  virtual void do_barrier() = 0;
  virtual std::unique_ptr<Communicator> do_split(int color, int key) = 0;

  void check_buffers(const void* send, const void* recv, int64_t count, DataType type) const;
  void count_allreduce(int64_t count, DataType type);
  void broadcast_checked(void* data, int64_t count, DataType type, int root);

  int rank_;
  int size_;
  CommCounters counters_;
};

// Collective over `parent`: groups of `group_size` consecutive ranks (color = rank / group_size,
// key = rank), as the BN groups of DESIGN.md §2. group_size must divide parent.size(); otherwise
// throws syncbn::Error.
std::unique_ptr<Communicator> split_consecutive(Communicator& parent, int group_size);

struct CommOptions {
  // nccl: the stream every operation is enqueued on, not owned; nullptr makes the communicator
  // create (and own) a non-blocking stream. Split communicators share their parent's stream.
  CUstream_st* cuda_stream = nullptr;
  // nccl: the CUDA device of this rank; -1 picks the rank's index among the ranks on its node.
  // make_communicator() makes it the calling thread's current device.
  int cuda_device = -1;
  // nccl: how long a wait for an operation may take before the peers are presumed dead and the
  // communicator is aborted (syncbn::Error). ncclCommInitRank itself is not under this timeout.
  std::chrono::milliseconds timeout = std::chrono::minutes(5);
};

// The world communicator of a backend. mpi and nccl are collective over MPI_COMM_WORLD and need
// MPI to be initialized (see MpiEnvironment); single is local. Throws syncbn::Error for an unknown
// name, a backend not built in, MPI not initialized, or (nccl) no usable CUDA device.
std::unique_ptr<Communicator> make_communicator(Backend backend, const CommOptions& options = {});
std::unique_ptr<Communicator> make_communicator(std::string_view backend,
                                                const CommOptions& options = {});

}  // namespace syncbn::comm
