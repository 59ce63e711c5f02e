// The GEMMs of small_cnn's convolutions (im2col form, per sample, row-major) in oneDNN's
// dnnl_sgemm, what nn/conv.cc runs, and, when the build found it, OpenBLAS's cblas_sgemm, what
// it ran before. A benchmark, not a test: nothing here asserts a time. Counter GFLOPS = 2·M·N·K
// per second (FLOPS, "G/s" = GFLOP/s). One thread unless OMP_NUM_THREADS says otherwise; OpenBLAS's
// kernel set follows OPENBLAS_CORETYPE (e.g. Haswell for AVX2, SkylakeX for AVX-512).
//
//   OMP_NUM_THREADS=1 build/bench/gemm_bench
//   OPENBLAS_CORETYPE=SkylakeX OMP_NUM_THREADS=1 build/bench/gemm_bench --benchmark_filter=openblas
#include <benchmark/benchmark.h>
#include <dnnl.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#if defined(SYNCBN_BENCH_OPENBLAS)
// The CBLAS interface (enum values from the CBLAS standard), declared here so that the bench
// needs OpenBLAS's library only, not a cblas.h.
extern "C" void cblas_sgemm(int layout, int trans_a, int trans_b, int m, int n, int k, float alpha,
                            const float* a, int lda, const float* b, int ldb, float beta, float* c,
                            int ldc);
#endif

namespace {

struct Gemm {
  const char* name;
  int64_t m, n, k;
  bool trans_a, trans_b;
};

// conv 32→32 at 28x28 (C_out 32, R = 32·9 = 288, P = 784) and 64→64 at 14x14 in chunks of 2
// samples (R = 576, 2·196 columns), as nn/conv.cc runs them: Y = W·col, dW += dY·colᵀ,
// dcol = Wᵀ·dY.
const Gemm kGemms[] = {
    {"conv2_forward", 32, 784, 288, false, false}, {"conv2_dweight", 32, 288, 784, false, true},
    {"conv2_dcol", 288, 784, 32, true, false},     {"conv4_forward", 64, 392, 576, false, false},
    {"conv4_dweight", 64, 576, 392, false, true},  {"conv4_dcol", 576, 392, 64, true, false},
};

struct Operands {
  std::vector<float> a, b, c;
  int64_t lda, ldb;
  explicit Operands(const Gemm& g)
      : a(static_cast<size_t>(g.m * g.k)),
        b(static_cast<size_t>(g.k * g.n)),
        c(static_cast<size_t>(g.m * g.n)),
        lda(g.trans_a ? g.m : g.k),
        ldb(g.trans_b ? g.k : g.n) {
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    for (float& v : a) v = u(rng);
    for (float& v : b) v = u(rng);
  }
};

void report(benchmark::State& state, const Gemm& g) {
  state.counters["FLOPS"] = benchmark::Counter(2.0 * static_cast<double>(g.m * g.n * g.k),
                                               benchmark::Counter::kIsIterationInvariantRate,
                                               benchmark::Counter::kIs1000);
}

void onednn(benchmark::State& state, const Gemm& g) {
  Operands op(g);
  for (auto _ : state) {
    dnnl_sgemm(g.trans_a ? 'T' : 'N', g.trans_b ? 'T' : 'N', g.m, g.n, g.k, 1.0f, op.a.data(),
               op.lda, op.b.data(), op.ldb, 0.0f, op.c.data(), g.n);
    benchmark::DoNotOptimize(op.c.data());
  }
  report(state, g);
}

#if defined(SYNCBN_BENCH_OPENBLAS)
void openblas(benchmark::State& state, const Gemm& g) {
  constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;
  Operands op(g);
  for (auto _ : state) {
    cblas_sgemm(kRowMajor, g.trans_a ? kTrans : kNoTrans, g.trans_b ? kTrans : kNoTrans,
                static_cast<int>(g.m), static_cast<int>(g.n), static_cast<int>(g.k), 1.0f,
                op.a.data(), static_cast<int>(op.lda), op.b.data(), static_cast<int>(op.ldb), 0.0f,
                op.c.data(), static_cast<int>(g.n));
    benchmark::DoNotOptimize(op.c.data());
  }
  report(state, g);
}
#endif

const int kRegistered = [] {
  for (const Gemm& g : kGemms) {
    benchmark::RegisterBenchmark((std::string("onednn/") + g.name).c_str(), onednn, g);
#if defined(SYNCBN_BENCH_OPENBLAS)
    benchmark::RegisterBenchmark((std::string("openblas/") + g.name).c_str(), openblas, g);
#endif
  }
  return 0;
}();

}  // namespace

BENCHMARK_MAIN();
