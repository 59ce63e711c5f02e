// Every CUDA normalization stage (norm/cuda/kernels_cuda.h) against the CPU stage of the same
// name (norm/kernels.h) on random shapes — odd sizes, both layouts, empty batches — with several
// block sizes and grids, aligned and misaligned buffers (vector head/tail and scalar paths),
// float32 / half / bf16 activations and float64 / float32 statistics. Label `gpu`: every test
// skips without a CUDA device, and CTest reports it skipped. The same file also runs on the CPU
// against the kernels built for the CPU emulation (tests/norm: norm_cuda_emulated_test).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "../common/cuda_skip.h"
#include "norm/cuda/kernels_cuda.h"
#include "norm/kernels.h"

namespace syncbn::norm {
namespace {

#define TEST_CUDA_CHECK(call) ASSERT_EQ((call), cudaSuccess) << #call

std::string reason_to_skip() { return syncbn::testing::cuda_skip_reason(); }

// Host element conversions (cuda_fp16.h / cuda_bf16.h have host versions).
template <typename T>
T from_float(float v) {
  if constexpr (std::is_same_v<T, float>) {
    return v;
  } else if constexpr (std::is_same_v<T, __half>) {
    return __float2half_rn(v);
  } else {
    return __float2bfloat16_rn(v);
  }
}
template <typename T>
float to_float(T v) {
  if constexpr (std::is_same_v<T, float>) {
    return v;
  } else if constexpr (std::is_same_v<T, __half>) {
    return __half2float(v);
  } else {
    return __bfloat162float(v);
  }
}

// A device array with `offset` elements of slack in front, so tests can hand the kernels
// pointers that are not 16-byte aligned.
template <typename T>
class DeviceArray {
 public:
  DeviceArray(const std::vector<T>& host, int offset) : count_(host.size()), offset_(offset) {
    const size_t bytes = (count_ + offset_ + 1) * sizeof(T);
    if (cudaMalloc(&base_, bytes) != cudaSuccess) base_ = nullptr;
    if (base_ != nullptr && count_ > 0)
      cudaMemcpy(get(), host.data(), count_ * sizeof(T), cudaMemcpyHostToDevice);
  }
  explicit DeviceArray(size_t count, int offset = 0)
      : DeviceArray(std::vector<T>(count, T{}), offset) {}
  ~DeviceArray() { cudaFree(base_); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;

  T* get() const { return base_ + offset_; }
  std::vector<T> to_host() const {
    std::vector<T> host(count_);
    if (count_ > 0) cudaMemcpy(host.data(), get(), count_ * sizeof(T), cudaMemcpyDeviceToHost);
    return host;
  }

 private:
  size_t count_;
  int offset_;
  T* base_ = nullptr;
};

template <typename A, typename B>
double max_rel_error(const std::vector<A>& got, const std::vector<B>& want) {
  EXPECT_EQ(got.size(), want.size());
  double err = 0.0, scale = 0.0;
  for (size_t i = 0; i < got.size() && i < want.size(); ++i) {
    err = std::max(err, std::abs(static_cast<double>(got[i]) - static_cast<double>(want[i])));
    scale = std::max(scale, std::abs(static_cast<double>(want[i])));
  }
  return scale > 0 ? err / scale : err;
}

std::vector<float> random_values(size_t n, uint64_t seed, double mean, double stddev) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> dist(mean, stddev);
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(dist(rng));
  return v;
}

struct Shape {
  int64_t n, c, s;
  bool channels_last;
};

std::string describe(const Shape& sh, const cuda::LaunchConfig& launch, int offset) {
  return "N=" + std::to_string(sh.n) + " C=" + std::to_string(sh.c) + " S=" + std::to_string(sh.s) +
         (sh.channels_last ? " channels-last" : " contiguous") +
         " threads=" + std::to_string(launch.threads) +
         " max_blocks=" + std::to_string(launch.max_blocks) + " offset=" + std::to_string(offset);
}

std::vector<Shape> bn_shapes() {
  return {{3, 5, 7, false},   {2, 3, 1, false},     {4, 8, 13, true},   {5, 7, 33, true},
          {1, 16, 64, false}, {2, 12, 1001, false}, {0, 4, 9, false},   {0, 8, 5, true},
          {7, 64, 1, false},  {2, 6, 4099, true},   {33, 3, 17, false}, {2, 2, 5000, false}};
}

// Block sizes and grids (max_blocks 0: the default grid). The CPU emulation of the kernels
// (tests/norm, SYNCBN_CUDA_EMULATION) runs each GPU thread as an OS thread: there, small blocks
// keep the test to seconds; on a GPU every size runs.
#if defined(SYNCBN_CUDA_EMULATION)
std::vector<cuda::LaunchConfig> launches() { return {{32, 1}, {64, 3}}; }
std::vector<cuda::LaunchConfig> norm_launches() { return {{32, 0}, {64, 0}}; }
constexpr int kLowPrecisionThreads = 64;
#else
std::vector<cuda::LaunchConfig> launches() {
  return {{256, 0}, {32, 1}, {96, 3}, {1024, 0}, {128, 2}};
}
std::vector<cuda::LaunchConfig> norm_launches() { return {{256, 0}, {32, 0}, {1024, 0}}; }
constexpr int kLowPrecisionThreads = 128;
#endif

class NormCudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string reason = reason_to_skip();
    if (!reason.empty()) GTEST_SKIP() << reason;
    ASSERT_EQ(cudaStreamCreate(&stream_), cudaSuccess);
  }
  void TearDown() override {
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }
  cuda::Stream stream() const { return reinterpret_cast<cuda::Stream>(stream_); }
  void sync() { ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess); }

  cudaStream_t stream_ = nullptr;
};

// Every BN stage, float32 activations, both accumulator types, against the CPU.
TEST_F(NormCudaTest, BatchNormStagesMatchCpu) {
  for (const Shape& sh : bn_shapes()) {
    for (const cuda::LaunchConfig& launch : launches()) {
      for (int offset : {0, 1, 3}) {
        const std::string what = describe(sh, launch, offset);
        const BnGeometry g{sh.n, sh.c, sh.s, sh.channels_last};
        const size_t total = static_cast<size_t>(sh.n * sh.c * sh.s);
        const int64_t C = sh.c;
        const auto x = random_values(total, 11 + total, 3.0, 2.0);
        const auto dy = random_values(total, 12 + total, 0.0, 1.0);
        const auto w = random_values(C, 13, 1.0, 0.3);
        const auto b = random_values(C, 14, 0.0, 0.5);
        // x and dy share the offset; y gets a different one on odd offsets, which forces the
        // scalar path (not co-aligned).
        DeviceArray<float> dx_in(x, offset), ddy(dy, offset), dw(w, 0), db(b, 0);
        DeviceArray<float> dy_out(total, offset == 1 ? 2 : offset);

        // Stage 1, both accumulators.
        std::vector<double> sum(C), sumsq(C);
        bn_stats(x.data(), g, sum.data(), sumsq.data());
        DeviceArray<double> dsum(C), dsumsq(C), fsum(C), fsumsq(C);
        cuda::bn_stats<float, double>(dx_in.get(), g, dsum.get(), dsumsq.get(), stream(), launch);
        cuda::bn_stats<float, float>(dx_in.get(), g, fsum.get(), fsumsq.get(), stream(), launch);
        sync();
        EXPECT_LT(max_rel_error(dsum.to_host(), sum), 1e-12) << what;
        EXPECT_LT(max_rel_error(dsumsq.to_host(), sumsq), 1e-12) << what;
        EXPECT_LT(max_rel_error(fsum.to_host(), sum), 1e-5) << what;
        EXPECT_LT(max_rel_error(fsumsq.to_host(), sumsq), 1e-5) << what;
        if (sh.n * sh.s < 2) continue;

        // Stage 2 and the running update from the same sums.
        const int64_t count = g.count();
        std::vector<double> mean(C), var(C);
        bn_gather_stats(C, count, sum.data(), sumsq.data(), mean.data(), var.data());
        DeviceArray<double> dcount(std::vector<double>{static_cast<double>(count)}, 0);
        DeviceArray<double> csum(sum, 0), csumsq(sumsq, 0), dmean(C), dvar(C);
        cuda::bn_gather_stats(C, dcount.get(), csum.get(), csumsq.get(), dmean.get(), dvar.get(),
                              stream());
        std::vector<float> rm(C, 0.5f), rv(C, 2.0f);
        DeviceArray<float> drm(rm, 0), drv(rv, 0);
        bn_update_running(C, count, 0.3, mean.data(), var.data(), rm.data(), rv.data());
        cuda::bn_update_running(C, dcount.get(), 0.3, dmean.get(), dvar.get(), drm.get(), drv.get(),
                                stream());
        sync();
        EXPECT_LT(max_rel_error(dmean.to_host(), mean), 1e-14) << what;
        EXPECT_LT(max_rel_error(dvar.to_host(), var), 1e-14) << what;
        EXPECT_LT(max_rel_error(drm.to_host(), rm), 1e-6) << what;
        EXPECT_LT(max_rel_error(drv.to_host(), rv), 1e-6) << what;

        // Stage 3, affine or not, with and without the fused ReLU.
        std::vector<float> meanf(C), invstd(C);
        for (int64_t c = 0; c < C; ++c) {
          meanf[c] = static_cast<float>(mean[c]);
          invstd[c] = static_cast<float>(1.0 / std::sqrt(var[c] + 1e-5));
        }
        DeviceArray<float> dmeanf(meanf, 0), dinvstd(invstd, 0);
        for (bool affine : {true, false}) {
          std::vector<float> y(total);
          bn_elemt(x.data(), g, meanf.data(), invstd.data(), affine ? w.data() : nullptr,
                   affine ? b.data() : nullptr, y.data());
          for (auto act : {cuda::Activation::kNone, cuda::Activation::kRelu}) {
            cuda::bn_elemt(dx_in.get(), g, dmeanf.get(), dinvstd.get(), affine ? dw.get() : nullptr,
                           affine ? db.get() : nullptr, dy_out.get(), stream(), act, launch);
            sync();
            std::vector<float> want = y;
            if (act == cuda::Activation::kRelu)
              for (float& v : want) v = std::max(v, 0.0f);
            EXPECT_LT(max_rel_error(dy_out.to_host(), want), 1e-6)
                << what << (affine ? " affine" : "")
                << (act == cuda::Activation::kRelu ? " relu" : "");
          }
        }

        // Stage 4, both accumulators.
        std::vector<double> sdy(C), sxmu(C);
        bn_backward_reduce(dy.data(), x.data(), g, meanf.data(), sdy.data(), sxmu.data());
        DeviceArray<double> gsdy(C), gsxmu(C), fsdy(C), fsxmu(C);
        cuda::bn_backward_reduce<float, double>(ddy.get(), dx_in.get(), g, dmeanf.get(), gsdy.get(),
                                                gsxmu.get(), stream(), launch);
        cuda::bn_backward_reduce<float, float>(ddy.get(), dx_in.get(), g, dmeanf.get(), fsdy.get(),
                                               fsxmu.get(), stream(), launch);
        sync();
        EXPECT_LT(max_rel_error(gsdy.to_host(), sdy), 1e-12) << what;
        EXPECT_LT(max_rel_error(gsxmu.to_host(), sxmu), 1e-12) << what;
        EXPECT_LT(max_rel_error(fsdy.to_host(), sdy), 1e-4) << what;
        EXPECT_LT(max_rel_error(fsxmu.to_host(), sxmu), 1e-4) << what;

        // Stage 5, training and eval, into a buffer aliasing dy's layout.
        DeviceArray<double> csdy(sdy, 0), csxmu(sxmu, 0);
        for (bool eval : {false, true}) {
          std::vector<float> dx(total);
          bn_backward_elemt(dy.data(), x.data(), g, meanf.data(), invstd.data(), w.data(),
                            eval ? nullptr : sdy.data(), eval ? nullptr : sxmu.data(), count,
                            dx.data());
          cuda::bn_backward_elemt(ddy.get(), dx_in.get(), g, dmeanf.get(), dinvstd.get(), dw.get(),
                                  eval ? nullptr : csdy.get(), eval ? nullptr : csxmu.get(),
                                  eval ? nullptr : dcount.get(), dy_out.get(), stream(), launch);
          sync();
          EXPECT_LT(max_rel_error(dy_out.to_host(), dx), 1e-5) << what << (eval ? " eval" : "");
        }
      }
    }
  }
}

// |mean|/std = 1e4: float32 Welford statistics keep the variance; float64 sums keep it better.
TEST_F(NormCudaTest, LargeMeanOverStdKeepsVariance) {
  for (bool channels_last : {false, true}) {
    const BnGeometry g{16, 8, 257, channels_last};
    const size_t total = static_cast<size_t>(g.n * g.c * g.s);
    const auto x = random_values(total, 5, 1e4, 1.0);
    DeviceArray<float> dx(x, 0);
    DeviceArray<double> s64(g.c), ss64(g.c), s32(g.c), ss32(g.c);
    cuda::bn_stats<float, double>(dx.get(), g, s64.get(), ss64.get(), stream());
    cuda::bn_stats<float, float>(dx.get(), g, s32.get(), ss32.get(), stream());
    sync();
    // Two-pass float64 reference per channel.
    const auto a = s64.to_host(), aa = ss64.to_host(), b = s32.to_host(), bb = ss32.to_host();
    for (int64_t c = 0; c < g.c; ++c) {
      double sum = 0, m2 = 0;
      const int64_t n = g.count();
      auto at = [&](int64_t k) {
        const int64_t i = k / g.s, s = k % g.s;
        return static_cast<double>(
            x[channels_last ? (i * g.s + s) * g.c + c : (i * g.c + c) * g.s + s]);
      };
      for (int64_t k = 0; k < n; ++k) sum += at(k);
      const double mean = sum / n;
      for (int64_t k = 0; k < n; ++k) m2 += (at(k) - mean) * (at(k) - mean);
      const double var = m2 / n;
      const double var64 = aa[c] / n - (a[c] / n) * (a[c] / n);
      const double var32 = bb[c] / n - (b[c] / n) * (b[c] / n);
      EXPECT_NEAR(var64, var, 1e-5 * var) << "c=" << c;
      EXPECT_NEAR(var32, var, 2e-2 * var) << "c=" << c;
    }
  }
}

// Half and bf16 activations: the CPU stages on the same (rounded) values, tolerances of the type.
template <typename T>
void check_low_precision(cuda::Stream stream, double tol) {
  for (const Shape& sh : {Shape{3, 5, 7, false}, Shape{4, 16, 13, true}, Shape{2, 8, 1001, false},
                          Shape{5, 24, 1, false}, Shape{2, 6, 9, true}}) {
    for (int offset : {0, 1}) {
      const cuda::LaunchConfig launch{kLowPrecisionThreads, 0};
      const std::string what = describe(sh, launch, offset);
      const BnGeometry g{sh.n, sh.c, sh.s, sh.channels_last};
      const size_t total = static_cast<size_t>(sh.n * sh.c * sh.s);
      const int64_t C = sh.c;
      std::vector<T> xt(total), dyt(total);
      std::vector<float> x(total), dy(total);
      const auto xr = random_values(total, 21, 1.0, 2.0), dyr = random_values(total, 22, 0, 1);
      for (size_t i = 0; i < total; ++i) {
        xt[i] = from_float<T>(xr[i]);
        dyt[i] = from_float<T>(dyr[i]);
        x[i] = to_float(xt[i]);
        dy[i] = to_float(dyt[i]);
      }
      DeviceArray<T> dx(xt, offset), ddy(dyt, offset), out(total, offset);
      std::vector<double> sum(C), sumsq(C);
      bn_stats(x.data(), g, sum.data(), sumsq.data());
      DeviceArray<double> gs(C), gss(C);
      cuda::bn_stats<T, float>(dx.get(), g, gs.get(), gss.get(), stream, launch);
      ASSERT_EQ(cudaStreamSynchronize(reinterpret_cast<cudaStream_t>(stream)), cudaSuccess);
      EXPECT_LT(max_rel_error(gs.to_host(), sum), 1e-5) << what;
      EXPECT_LT(max_rel_error(gss.to_host(), sumsq), 1e-5) << what;

      std::vector<float> meanf(C), invstd(C), w(C, 1.5f), b(C, -0.25f);
      const double n = static_cast<double>(g.count());
      for (int64_t c = 0; c < C; ++c) {
        meanf[c] = static_cast<float>(sum[c] / n);
        invstd[c] = static_cast<float>(1.0 / std::sqrt(sumsq[c] / n - meanf[c] * meanf[c] + 1e-5));
      }
      DeviceArray<float> dm(meanf, 0), di(invstd, 0), dw(w, 0), db(b, 0);
      std::vector<float> y(total);
      bn_elemt(x.data(), g, meanf.data(), invstd.data(), w.data(), b.data(), y.data());
      cuda::bn_elemt(dx.get(), g, dm.get(), di.get(), dw.get(), db.get(), out.get(), stream,
                     cuda::Activation::kNone, launch);
      ASSERT_EQ(cudaStreamSynchronize(reinterpret_cast<cudaStream_t>(stream)), cudaSuccess);
      std::vector<float> got;
      for (T v : out.to_host()) got.push_back(to_float(v));
      EXPECT_LT(max_rel_error(got, y), tol) << what << " y";

      std::vector<double> sdy(C), sxmu(C);
      bn_backward_reduce(dy.data(), x.data(), g, meanf.data(), sdy.data(), sxmu.data());
      DeviceArray<double> gsdy(C), gsxmu(C);
      cuda::bn_backward_reduce<T, float>(ddy.get(), dx.get(), g, dm.get(), gsdy.get(), gsxmu.get(),
                                         stream, launch);
      std::vector<float> dxr(total);
      bn_backward_elemt(dy.data(), x.data(), g, meanf.data(), invstd.data(), w.data(), sdy.data(),
                        sxmu.data(), g.count(), dxr.data());
      DeviceArray<double> csdy(sdy, 0), csxmu(sxmu, 0), dcount(std::vector<double>{n}, 0);
      cuda::bn_backward_elemt(ddy.get(), dx.get(), g, dm.get(), di.get(), dw.get(), csdy.get(),
                              csxmu.get(), dcount.get(), out.get(), stream, launch);
      ASSERT_EQ(cudaStreamSynchronize(reinterpret_cast<cudaStream_t>(stream)), cudaSuccess);
      EXPECT_LT(max_rel_error(gsdy.to_host(), sdy), 1e-4) << what;
      EXPECT_LT(max_rel_error(gsxmu.to_host(), sxmu), 1e-4) << what;
      got.clear();
      for (T v : out.to_host()) got.push_back(to_float(v));
      EXPECT_LT(max_rel_error(got, dxr), tol) << what << " dx";
    }
  }
}

TEST_F(NormCudaTest, HalfActivations) { check_low_precision<__half>(stream(), 2e-3); }
TEST_F(NormCudaTest, Bfloat16Activations) { check_low_precision<__nv_bfloat16>(stream(), 1.6e-2); }

TEST_F(NormCudaTest, GroupNormAndLayerNormMatchCpu) {
  struct GnCase {
    Shape sh;
    int64_t groups;
  };
  for (const GnCase& gc : {GnCase{{3, 6, 7, false}, 3}, GnCase{{2, 8, 13, true}, 2},
                           GnCase{{4, 5, 1, false}, 5}, GnCase{{2, 12, 1001, false}, 4},
                           GnCase{{3, 4, 33, true}, 4}, GnCase{{1, 16, 64, false}, 1}}) {
    for (const cuda::LaunchConfig& launch : norm_launches()) {
      for (int offset : {0, 1}) {
        const Shape& sh = gc.sh;
        const std::string what = describe(sh, launch, offset) + " G=" + std::to_string(gc.groups);
        const BnGeometry g{sh.n, sh.c, sh.s, sh.channels_last};
        const size_t total = static_cast<size_t>(sh.n * sh.c * sh.s);
        const int64_t C = sh.c, NG = sh.n * gc.groups;
        const auto x = random_values(total, 31, -1.0, 3.0), dy = random_values(total, 32, 0, 1);
        const auto w = random_values(C, 33, 1.0, 0.3), b = random_values(C, 34, 0, 0.5);
        DeviceArray<float> dx(x, offset), ddy(dy, offset), dw(w, 0), db(b, 0), out(total, offset);

        std::vector<float> mean(NG), invstd(NG);
        std::vector<double> var(NG);
        gn_stats(x.data(), g, gc.groups, 1e-5, mean.data(), invstd.data(), var.data());
        DeviceArray<float> gmean(NG), ginvstd(NG);
        DeviceArray<double> gvar(NG);
        cuda::gn_stats(dx.get(), g, gc.groups, 1e-5, gmean.get(), ginvstd.get(), gvar.get(),
                       stream(), launch);
        sync();
        EXPECT_LT(max_rel_error(gmean.to_host(), mean), 1e-6) << what;
        EXPECT_LT(max_rel_error(ginvstd.to_host(), invstd), 1e-6) << what;
        EXPECT_LT(max_rel_error(gvar.to_host(), var), 1e-12) << what;

        DeviceArray<float> cm(mean, 0), ci(invstd, 0);
        std::vector<float> y(total);
        gn_elemt(x.data(), g, gc.groups, mean.data(), invstd.data(), w.data(), b.data(), y.data());
        cuda::gn_elemt(dx.get(), g, gc.groups, cm.get(), ci.get(), dw.get(), db.get(), out.get(),
                       stream(), launch);
        sync();
        EXPECT_LT(max_rel_error(out.to_host(), y), 1e-6) << what;

        std::vector<float> gx(total), gw(C), gb(C);
        gn_backward(dy.data(), x.data(), g, gc.groups, mean.data(), invstd.data(), w.data(),
                    gx.data(), gw.data(), gb.data());
        DeviceArray<float> ggw(C), ggb(C);
        cuda::gn_backward(ddy.get(), dx.get(), g, gc.groups, cm.get(), ci.get(), dw.get(),
                          out.get(), ggw.get(), ggb.get(), stream(), launch);
        sync();
        EXPECT_LT(max_rel_error(out.to_host(), gx), 1e-5) << what << " dx";
        EXPECT_LT(max_rel_error(ggw.to_host(), gw), 1e-5) << what << " dweight";
        EXPECT_LT(max_rel_error(ggb.to_host(), gb), 1e-5) << what << " dbias";

        // LayerNorm over rows of d = C·S (contiguous).
        if (sh.channels_last) continue;
        const int64_t rows = sh.n, d = sh.c * sh.s;
        std::vector<float> lw(random_values(d, 35, 1, 0.2)), lb(random_values(d, 36, 0, 0.2));
        DeviceArray<float> dlw(lw, 0), dlb(lb, 0), lm(rows), li(rows);
        std::vector<float> ly(total), lmean(rows), linv(rows);
        ln_forward(x.data(), rows, d, 1e-5, lw.data(), lb.data(), ly.data(), lmean.data(),
                   linv.data());
        cuda::ln_forward(dx.get(), rows, d, 1e-5, dlw.get(), dlb.get(), out.get(), lm.get(),
                         li.get(), stream(), launch);
        sync();
        EXPECT_LT(max_rel_error(out.to_host(), ly), 1e-6) << what << " ln y";
        EXPECT_LT(max_rel_error(lm.to_host(), lmean), 1e-6) << what << " ln mean";
        EXPECT_LT(max_rel_error(li.to_host(), linv), 1e-6) << what << " ln invstd";
        std::vector<float> ldx(total), ldw(d), ldb(d);
        ln_backward(dy.data(), x.data(), rows, d, lmean.data(), linv.data(), lw.data(), ldx.data(),
                    ldw.data(), ldb.data());
        DeviceArray<float> gldw(d), gldb(d);
        cuda::ln_backward(ddy.get(), dx.get(), rows, d, lm.get(), li.get(), dlw.get(), out.get(),
                          gldw.get(), gldb.get(), stream(), launch);
        sync();
        EXPECT_LT(max_rel_error(out.to_host(), ldx), 1e-5) << what << " ln dx";
        EXPECT_LT(max_rel_error(gldw.to_host(), ldw), 1e-5) << what << " ln dweight";
        EXPECT_LT(max_rel_error(gldb.to_host(), ldb), 1e-5) << what << " ln dbias";
      }
    }
  }
}

}  // namespace
}  // namespace syncbn::norm
