// A CPU emulation of the few CUDA execution features the normalization kernels use, so that the
// kernels themselves — index math, vector splits, block merges, partials — run and are tested on
// machines without a GPU (tests/norm, label `unit`). Only for tests: compiled in when
// SYNCBN_CUDA_EMULATION is defined, with the .cu files built by the host compiler.
//
// A launch runs the grid's blocks one after another; each block's threads are real threads
// (a pool of std::threads kept across launches), so __syncthreads() is a real barrier
// (std::barrier) and shared memory is one buffer per launch, reused by each block in turn. A thread
// that returns before a __syncthreads() its block-mates reach deadlocks here (undefined behaviour
// on a GPU too). What this cannot show: timing, memory coalescing, races that only a GPU's
// scheduling exposes, and warp-level behaviour (the kernels use none).
#pragma once

#if !defined(SYNCBN_CUDA_EMULATION)
#error "cuda_emulation.h is only for SYNCBN_CUDA_EMULATION builds"
#endif

#include <cuda_runtime.h>

#include <barrier>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <thread>
#include <tuple>
#include <vector>

namespace syncbn::emu {

inline thread_local uint3 thread_idx;
inline thread_local uint3 block_idx;
inline thread_local dim3 block_dim;
inline thread_local dim3 grid_dim;
inline thread_local std::barrier<>* block_barrier = nullptr;
inline thread_local unsigned char* shared = nullptr;

// Kernels launched without dynamic shared memory run their blocks without barriers (nothing is
// shared between a block's threads); such a kernel must not call __syncthreads().
inline void sync_threads() {
  if (block_barrier == nullptr) {
    std::fprintf(stderr,
                 "cuda_emulation: __syncthreads() in a kernel launched without shared "
                 "memory\n");
    std::abort();
  }
  block_barrier->arrive_and_wait();
}

// Worker threads kept across launches (creating one OS thread per GPU thread per launch costs
// far more than the kernels): run(n, job) calls job(0..n-1) on n workers and waits for all.
class ThreadPool {
 public:
  ~ThreadPool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    work_.notify_all();
    for (std::thread& worker : workers_) worker.join();
  }
  void run(unsigned n, const std::function<void(unsigned)>& job) {
    std::unique_lock<std::mutex> lock(mutex_);
    while (workers_.size() < n) {
      const unsigned id = static_cast<unsigned>(workers_.size());
      workers_.emplace_back([this, id] { work(id); });
    }
    job_ = &job;
    active_ = n;
    remaining_ = n;
    ++generation_;
    work_.notify_all();
    done_.wait(lock, [this] { return remaining_ == 0; });
    job_ = nullptr;
  }

 private:
  void work(unsigned id) {
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(mutex_);
    while (true) {
      work_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      if (id >= active_) continue;
      const std::function<void(unsigned)>* job = job_;
      lock.unlock();
      (*job)(id);
      lock.lock();
      if (--remaining_ == 0) done_.notify_all();
    }
  }

  std::mutex mutex_;
  std::condition_variable work_, done_;
  std::vector<std::thread> workers_;
  const std::function<void(unsigned)>* job_ = nullptr;
  uint64_t generation_ = 0;
  unsigned active_ = 0, remaining_ = 0;
  bool stop_ = false;
};

inline ThreadPool& pool() {
  static ThreadPool instance;
  return instance;
}

// kernel<<<grid, block, shared_bytes>>>(args...), run to completion before returning.
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes, Args&&... args) {
  const unsigned threads = block.x * block.y * block.z;
  std::vector<unsigned char> shared_memory(shared_bytes + 16);
  unsigned char* aligned =
      shared_memory.data() + (16 - reinterpret_cast<uintptr_t>(shared_memory.data()) % 16);
  std::barrier<> barrier(static_cast<std::ptrdiff_t>(threads));
  const std::tuple<Params...> params(std::forward<Args>(args)...);
  const bool synchronized = shared_bytes > 0;
  const std::function<void(unsigned)> body = [&](unsigned t) {
    block_barrier = synchronized ? &barrier : nullptr;
    shared = aligned;
    thread_idx = uint3{t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
    block_dim = block;
    grid_dim = grid;
    for (unsigned z = 0; z < grid.z; ++z)
      for (unsigned y = 0; y < grid.y; ++y)
        for (unsigned x = 0; x < grid.x; ++x) {
          block_idx = uint3{x, y, z};
          std::apply(kernel, params);
          if (synchronized) barrier.arrive_and_wait();  // the next block reuses shared memory
        }
  };
  pool().run(threads, body);
}

}  // namespace syncbn::emu

#define threadIdx (::syncbn::emu::thread_idx)
#define blockIdx (::syncbn::emu::block_idx)
#define blockDim (::syncbn::emu::block_dim)
#define gridDim (::syncbn::emu::grid_dim)
#define __syncthreads() ::syncbn::emu::sync_threads()
