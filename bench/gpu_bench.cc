// GPU benchmark (bench/gpu.sh runs it): the BN CUDA stages' effective bandwidth against the
// device's measured device-to-device copy bandwidth, and what SyncBN's statistics exchange over
// NCCL costs one layer. A benchmark, not a test: nothing asserts a time.
//
//   mpirun -np <GPUs> build/bench/gpu_bench [--iters 50]
//
// Part 1 (rank 0, its own GPU): for each shape, float32, each stage timed with CUDA events over
// `iters` launches after 5 warm-up launches; GB/s = bytes the stage must move (stats: read x;
// elemt: read x, write y; backward_reduce: read dy, x; backward_elemt: read dy, x, write dx) /
// time. "copy" is cudaMemcpyAsync device-to-device of 1 GiB, counted as read + write.
// Part 2 (every rank): one training forward + backward of one layer, (b, C, H, W) per rank:
//   local    the stage pipeline on this rank alone (the kernels SyncBN runs, no collective)
//   syncbn   nn::SyncBatchNormCuda over the NCCL world (one allreduce per pass)
// timed per step with the stream synchronized after it (finish()), median over iterations, max
// over ranks. Δ = syncbn − local is the per-layer cost of synchronizing the statistics.
//
// Exits 2 with a message when there is no CUDA device.
#include <cuda_runtime.h>
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "comm/mpi_environment.h"
#include "core/cuda_check.h"
#include "nn/sync_batch_norm_cuda.h"
#include "norm/cuda/kernels_cuda.h"

namespace {

namespace ncuda = syncbn::norm::cuda;

class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) {
    SYNCBN_CUDA_CHECK(cudaMalloc(&data_, std::max<size_t>(bytes, 16)));
  }
  ~DeviceBuffer() { cudaFree(data_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }

 private:
  void* data_ = nullptr;
};

// Milliseconds per call of fn over iters calls, on stream, timed with events.
template <typename Fn>
double time_ms(cudaStream_t stream, int iters, Fn&& fn) {
  for (int i = 0; i < 5; ++i) fn();
  cudaEvent_t start, stop;
  SYNCBN_CUDA_CHECK(cudaEventCreate(&start));
  SYNCBN_CUDA_CHECK(cudaEventCreate(&stop));
  SYNCBN_CUDA_CHECK(cudaEventRecord(start, stream));
  for (int i = 0; i < iters; ++i) fn();
  SYNCBN_CUDA_CHECK(cudaEventRecord(stop, stream));
  SYNCBN_CUDA_CHECK(cudaEventSynchronize(stop));
  float ms = 0;
  SYNCBN_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return ms / iters;
}

double copy_bandwidth_gbs(cudaStream_t stream, int iters) {
  const size_t bytes = size_t{1} << 30;
  DeviceBuffer a(bytes), b(bytes);
  SYNCBN_CUDA_CHECK(cudaMemsetAsync(a.as<char>(), 1, bytes, stream));
  const double ms = time_ms(stream, iters, [&] {
    SYNCBN_CUDA_CHECK(
        cudaMemcpyAsync(b.as<char>(), a.as<char>(), bytes, cudaMemcpyDeviceToDevice, stream));
  });
  return 2.0 * bytes / (ms * 1e-3) / 1e9;
}

struct Shape {
  int64_t n, c, h, w;
  bool channels_last;
};

void kernel_table(cudaStream_t cs, int iters) {
  const ncuda::Stream stream = reinterpret_cast<ncuda::Stream>(cs);
  cudaDeviceProp prop{};
  int device = 0;
  SYNCBN_CUDA_CHECK(cudaGetDevice(&device));
  SYNCBN_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  const double copy = copy_bandwidth_gbs(cs, 20);
  std::printf("## BN CUDA stages, float32, on %s (%d SMs)\n\n", prop.name,
              prop.multiProcessorCount);
  std::printf("device-to-device copy (read + write): %.0f GB/s\n\n", copy);
  std::printf("| shape (N,C,H,W) | layout | stage | time (us) | GB/s | %% of copy |\n");
  std::printf("|---|---|---|---:|---:|---:|\n");
  for (const Shape& s :
       {Shape{32, 64, 56, 56, false}, Shape{32, 64, 56, 56, true}, Shape{64, 256, 14, 14, false},
        Shape{64, 256, 14, 14, true}, Shape{8, 512, 7, 7, false}, Shape{2, 64, 112, 112, false},
        Shape{256, 1024, 1, 1, false}}) {
    const syncbn::norm::BnGeometry g{s.n, s.c, s.h * s.w, s.channels_last};
    const size_t elems = static_cast<size_t>(s.n * s.c * s.h * s.w);
    const size_t bytes = elems * sizeof(float);
    DeviceBuffer x(bytes), y(bytes), dy(bytes), stats(sizeof(double) * (4 * s.c + 1)),
        f(sizeof(float) * 4 * s.c);
    SYNCBN_CUDA_CHECK(cudaMemsetAsync(x.as<char>(), 0, bytes, cs));
    SYNCBN_CUDA_CHECK(cudaMemsetAsync(dy.as<char>(), 0, bytes, cs));
    SYNCBN_CUDA_CHECK(cudaMemsetAsync(f.as<char>(), 0, sizeof(float) * 4 * s.c, cs));
    double* sum = stats.as<double>();
    double* sumsq = sum + s.c;
    double* count = sum + 4 * s.c;
    float* mean = f.as<float>();
    float* invstd = mean + s.c;
    const double one = 1.0 * g.count();
    SYNCBN_CUDA_CHECK(cudaMemcpy(count, &one, sizeof(double), cudaMemcpyHostToDevice));
    struct Stage {
      const char* name;
      double bytes_moved;
      double ms;
    };
    const Stage stages[] = {
        {"bn_stats", 1.0 * bytes,
         time_ms(cs, iters,
                 [&] { ncuda::bn_stats<float, double>(x.as<float>(), g, sum, sumsq, stream); })},
        {"bn_stats (float32 Welford)", 1.0 * bytes,
         time_ms(cs, iters,
                 [&] { ncuda::bn_stats<float, float>(x.as<float>(), g, sum, sumsq, stream); })},
        {"bn_elemt", 2.0 * bytes,
         time_ms(cs, iters,
                 [&] {
                   ncuda::bn_elemt(x.as<float>(), g, mean, invstd, nullptr, nullptr, y.as<float>(),
                                   stream);
                 })},
        {"bn_elemt + ReLU", 2.0 * bytes,
         time_ms(cs, iters,
                 [&] {
                   ncuda::bn_elemt(x.as<float>(), g, mean, invstd, nullptr, nullptr, y.as<float>(),
                                   stream, ncuda::Activation::kRelu);
                 })},
        {"bn_backward_reduce", 2.0 * bytes,
         time_ms(cs, iters,
                 [&] {
                   ncuda::bn_backward_reduce<float, double>(dy.as<float>(), x.as<float>(), g, mean,
                                                            sum, sumsq, stream);
                 })},
        {"bn_backward_elemt", 3.0 * bytes,
         time_ms(cs, iters,
                 [&] {
                   ncuda::bn_backward_elemt(dy.as<float>(), x.as<float>(), g, mean, invstd, nullptr,
                                            sum, sumsq, count, y.as<float>(), stream);
                 })},
    };
    for (const Stage& st : stages) {
      const double gbs = st.bytes_moved / (st.ms * 1e-3) / 1e9;
      std::printf("| %ldx%ldx%ldx%ld | %s | %s | %.1f | %.0f | %.0f%% |\n", static_cast<long>(s.n),
                  static_cast<long>(s.c), static_cast<long>(s.h), static_cast<long>(s.w),
                  s.channels_last ? "NHWC" : "NCHW", st.name, st.ms * 1e3, gbs, 100 * gbs / copy);
    }
  }
  std::printf("\n");
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

void syncbn_table(syncbn::comm::Communicator& world, int iters) {
  const cudaStream_t cs = reinterpret_cast<cudaStream_t>(world.cuda_stream());
  const ncuda::Stream stream = world.cuda_stream();
  if (world.rank() == 0) {
    std::printf(
        "## SyncBN overhead per layer: %d rank(s), NCCL, one training forward + backward\n\n",
        world.size());
    std::printf("| per-rank (b,C,H,W) | local (us) | syncbn (us) | Δ per layer (us) |\n");
    std::printf("|---|---:|---:|---:|\n");
  }
  for (const Shape& s :
       {Shape{2, 64, 56, 56, false}, Shape{8, 64, 56, 56, false}, Shape{32, 64, 56, 56, false},
        Shape{2, 256, 14, 14, false}, Shape{32, 256, 14, 14, false}, Shape{4, 1024, 7, 7, false}}) {
    const syncbn::norm::BnGeometry g{s.n, s.c, s.h * s.w, false};
    const size_t bytes = static_cast<size_t>(s.n * s.c * s.h * s.w) * sizeof(float);
    DeviceBuffer x(bytes), y(bytes), dy(bytes), dx(bytes), stats(sizeof(double) * (6 * s.c + 1)),
        f(sizeof(float) * 4 * s.c);
    SYNCBN_CUDA_CHECK(cudaMemsetAsync(x.as<char>(), 0, bytes, cs));
    SYNCBN_CUDA_CHECK(cudaMemsetAsync(dy.as<char>(), 0, bytes, cs));
    SYNCBN_CUDA_CHECK(cudaMemsetAsync(f.as<char>(), 0, sizeof(float) * 4 * s.c, cs));
    double* d = stats.as<double>();
    float* mean = f.as<float>();
    float* invstd = mean + s.c;
    const double n = 1.0 * g.count();
    SYNCBN_CUDA_CHECK(cudaMemcpy(d + 6 * s.c, &n, sizeof(double), cudaMemcpyHostToDevice));
    auto local_step = [&] {
      ncuda::bn_stats<float, double>(x.as<float>(), g, d, d + s.c, stream);
      ncuda::bn_gather_stats(s.c, d + 6 * s.c, d, d + s.c, d + 2 * s.c, d + 3 * s.c, stream);
      ncuda::bn_elemt(x.as<float>(), g, mean, invstd, nullptr, nullptr, y.as<float>(), stream);
      ncuda::bn_backward_reduce<float, double>(dy.as<float>(), x.as<float>(), g, mean, d + 4 * s.c,
                                               d + 5 * s.c, stream);
      ncuda::bn_backward_elemt(dy.as<float>(), x.as<float>(), g, mean, invstd, nullptr, d + 4 * s.c,
                               d + 5 * s.c, d + 6 * s.c, dx.as<float>(), stream);
      SYNCBN_CUDA_CHECK(cudaStreamSynchronize(cs));
    };
    syncbn::nn::SyncBatchNormOptions options;
    options.num_features = s.c;
    syncbn::nn::SyncBatchNormCuda layer(options, &world, "bench");
    auto sync_step = [&] {
      layer.forward(x.as<float>(), g, true, y.as<float>());
      layer.backward(dy.as<float>(), dx.as<float>());
      layer.finish();
    };
    std::vector<double> local_us, sync_us;
    for (int i = 0; i < iters + 5; ++i) {
      for (int variant = 0; variant < 2; ++variant) {
        MPI_Barrier(MPI_COMM_WORLD);
        const auto t0 = std::chrono::steady_clock::now();
        ((variant + i) % 2 == 0) ? local_step() : sync_step();
        double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0)
                        .count();
        MPI_Allreduce(MPI_IN_PLACE, &us, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        if (i >= 5) ((variant + i) % 2 == 0 ? local_us : sync_us).push_back(us);
      }
    }
    if (world.rank() == 0) {
      const double l = median(local_us), sy = median(sync_us);
      std::printf("| %ldx%ldx%ldx%ld | %.1f | %.1f | %.1f |\n", static_cast<long>(s.n),
                  static_cast<long>(s.c), static_cast<long>(s.h), static_cast<long>(s.w), l, sy,
                  sy - l);
    }
  }
  if (world.rank() == 0) std::printf("\n");
}

}  // namespace

int main(int argc, char** argv) {
  int iters = 50;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--iters") == 0 && i + 1 < argc) {
      iters = std::max(1, std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: gpu_bench [--iters N]\n");
      return 2;
    }
  }
  syncbn::comm::MpiEnvironment mpi(&argc, &argv);
  int devices = 0;
  const cudaError_t status = cudaGetDeviceCount(&devices);
  int ok = status == cudaSuccess && devices > 0 ? 1 : 0;
  MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  if (ok == 0) {
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (rank == 0) {
      std::fprintf(stderr,
                   "gpu_bench: no CUDA device on this machine (cudaGetDeviceCount: %s); the GPU "
                   "benchmark needs one GPU per rank\n",
                   status == cudaSuccess ? "0 devices" : cudaGetErrorString(status));
    }
    return 2;
  }
  try {
    auto world = syncbn::comm::make_communicator("nccl");
    if (world->rank() == 0)
      kernel_table(reinterpret_cast<cudaStream_t>(world->cuda_stream()), iters);
    MPI_Barrier(MPI_COMM_WORLD);
    syncbn_table(*world, iters);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gpu_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
