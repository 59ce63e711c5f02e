// BatchNorm CPU benchmarks (Google Benchmark) and a STREAM-style triad for the memory bandwidth
// they are judged against. A benchmark, not a test: nothing here asserts a time.
//
// BatchNorm runs the training-mode pipeline through the Tensor adapters, exactly what
// nn.BatchNorm{1,2}d(C) does in a training step (affine, running stats, momentum 0.1):
//   bn_forward:  batch_norm_forward  = stats + gather + running update + normalize (y allocated)
//   bn_fwd_bwd:  batch_norm_forward, then batch_norm_backward (dx, dweight, dbias allocated)
//
// Byte model (SetBytesProcessed), per element of x, float32, no write-allocate traffic counted
// (as STREAM counts):
//   forward  = read x (stats) + read x, write y (elemt)                           = 12 B
//   backward = read dy, x (backward_reduce) + read dy, x, write dx (backward_elemt) = 20 B
//   fwd+bwd  = 12 + 20                                                          = 32 B
// Per-channel vectors (C floats) are ignored. Outputs are uninitialised tensors from the block
// cache (tensor/tensor.cc), so their allocation is part of the timings but costs no traffic.
// Working sets up to ~25 MB fit in a 32 MiB L3, so a kernel can beat the DRAM triad: the triad
// is a reference, not a ceiling.
//
// stream_triad: a[i] = b[i] + s·c[i] over three arrays of 64 MiB of doubles (well beyond L3),
// OpenMP static schedule with first-touch initialisation, 24 bytes per element as STREAM counts
// (read b, read c, write a).
//
// Threads come from OMP_NUM_THREADS. Wall-clock time throughout (UseRealTime): the work runs on
// OpenMP threads, so the benchmark thread's CPU time means nothing.
//
//   OMP_NUM_THREADS=2 build/bench/bn_bench --benchmark_repetitions=9
//       --benchmark_report_aggregates_only=true     (one line; bench/compare_torch.sh runs it)
#include <benchmark/benchmark.h>
#include <omp.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "norm/norm.h"
#include "tensor/tensor.h"

namespace syncbn::norm {
namespace {

constexpr int64_t kForwardBytesPerElement = 12;
constexpr int64_t kFwdBwdBytesPerElement = 12 + 20;
constexpr int64_t kTriadArrayBytes = int64_t{64} << 20;  // per array; 3 arrays = 192 MiB

struct BnCase {
  std::vector<int64_t> shape;  // (N, C, *spatial), logical order
  MemoryFormat format;
};

std::string case_name(const BnCase& c) {
  std::string name;
  for (size_t d = 0; d < c.shape.size(); ++d) {
    if (d > 0) name += 'x';
    name += std::to_string(c.shape[d]);
  }
  return name + (c.format == MemoryFormat::kChannelsLast ? "/nhwc" : "/nchw");
}

// The parameters and buffers of a freshly constructed nn.BatchNorm{1,2}d(C).
class BnLayer {
 public:
  explicit BnLayer(int64_t channels)
      : weight_({channels}),
        bias_({channels}),
        running_mean_({channels}),
        running_var_({channels}) {
    for (int64_t c = 0; c < channels; ++c) {
      weight_.data()[c] = 1.0f;
      running_var_.data()[c] = 1.0f;
    }
  }

  BatchNormState state() {
    return BatchNormState{&weight_, &bias_, &running_mean_, &running_var_, &num_batches_tracked_};
  }

 private:
  Tensor weight_;        // (C)
  Tensor bias_;          // (C)
  Tensor running_mean_;  // (C)
  Tensor running_var_;   // (C)
  int64_t num_batches_tracked_ = 0;
};

Tensor random_tensor(const BnCase& c, uint64_t stream) {
  Tensor t(c.shape, c.format);
  Rng rng(/*seed=*/2024, stream);
  rng.fill_normal(t.data(), t.numel());
  return t;
}

void report_bytes(benchmark::State& state, int64_t numel, int64_t bytes_per_element) {
  const int64_t bytes_per_iter = numel * bytes_per_element;
  state.SetBytesProcessed(state.iterations() * bytes_per_iter);
  // Constant per run, so its median aggregate is itself; compare_torch.sh divides it by the
  // median time instead of taking a median of rates.
  state.counters["bytes_per_iter"] = static_cast<double>(bytes_per_iter);
  state.counters["omp_threads"] = omp_get_max_threads();
}

void bm_bn_forward(benchmark::State& state, const BnCase& c) {
  const Tensor x = random_tensor(c, /*stream=*/0);
  BnLayer layer(c.shape[1]);
  const BatchNormOptions options;  // eps 1e-5, momentum 0.1
  NormSaved saved;
  for (auto _ : state) {
    Tensor y = batch_norm_forward(x, layer.state(), options, /*training=*/true, &saved);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  report_bytes(state, x.numel(), kForwardBytesPerElement);
}

void bm_bn_fwd_bwd(benchmark::State& state, const BnCase& c) {
  const Tensor x = random_tensor(c, /*stream=*/0);
  const Tensor dy = random_tensor(c, /*stream=*/1);
  BnLayer layer(c.shape[1]);
  const BatchNormOptions options;
  NormSaved saved;
  for (auto _ : state) {
    Tensor y = batch_norm_forward(x, layer.state(), options, /*training=*/true, &saved);
    NormGrads grads = batch_norm_backward(dy, x, layer.state(), saved);
    benchmark::DoNotOptimize(y.data());
    benchmark::DoNotOptimize(grads.dx.data());
    benchmark::ClobberMemory();
  }
  report_bytes(state, x.numel(), kFwdBwdBytesPerElement);
}

void bm_stream_triad(benchmark::State& state) {
  const int64_t n = kTriadArrayBytes / static_cast<int64_t>(sizeof(double));
  // Left uninitialised here so that the parallel loop below is the first touch: each thread's
  // pages then sit where that thread runs, as in STREAM.
  std::unique_ptr<double[]> a_storage(new double[n]);
  std::unique_ptr<double[]> b_storage(new double[n]);
  std::unique_ptr<double[]> c_storage(new double[n]);
  double* a = a_storage.get();
  double* b = b_storage.get();
  double* c = c_storage.get();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    a[i] = 1.0;
    b[i] = 2.0;
    c[i] = 0.5;
  }
  const double scalar = 3.0;
  for (auto _ : state) {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) a[i] = b[i] + scalar * c[i];
    benchmark::DoNotOptimize(a);
    benchmark::ClobberMemory();
  }
  report_bytes(state, n, 3 * static_cast<int64_t>(sizeof(double)));
}

void register_benchmarks() {
  const std::vector<BnCase> cases = {
      {{32, 64, 28, 28}, MemoryFormat::kContiguous},
      {{32, 64, 28, 28}, MemoryFormat::kChannelsLast},
      {{8, 128, 14, 14}, MemoryFormat::kContiguous},
      {{4, 256, 7, 7}, MemoryFormat::kContiguous},
      {{256, 512}, MemoryFormat::kContiguous},
  };
  for (const BnCase& c : cases) {
    benchmark::RegisterBenchmark(("bn_forward/" + case_name(c)).c_str(), bm_bn_forward, c)
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime();
    benchmark::RegisterBenchmark(("bn_fwd_bwd/" + case_name(c)).c_str(), bm_bn_fwd_bwd, c)
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime();
  }
  benchmark::RegisterBenchmark("stream_triad/3x64MiB", bm_stream_triad)
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
}

}  // namespace
}  // namespace syncbn::norm

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("omp_max_threads", std::to_string(omp_get_max_threads()));
  syncbn::norm::register_benchmarks();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
