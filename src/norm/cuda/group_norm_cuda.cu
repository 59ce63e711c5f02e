// GroupNorm / InstanceNorm / LayerNorm stages on a CUDA device (declared in
// norm/cuda/kernels_cuda.h; math in norm/kernels.h; same list and order as
// norm/group_norm_cpu.cc). Statistics in float64 as on the CPU. These are the batch-independent
// baselines of the batch-size study, so the kernels are straightforward: one block per
// (n, group), per (n, c) or per row, 16-byte loads where the elements are contiguous.
#include <cstdio>
#include <cstdlib>

#include "norm/cuda/cuda_common.cuh"

namespace syncbn::norm::cuda {
namespace {

using detail::from_float;
using detail::kPerVec;
using detail::load_vec;
using detail::store_vec;
using detail::to_float;
using detail::Vec;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

void check_threads(const LaunchConfig& launch) {
  if (launch.threads < 32 || launch.threads > 1024 || launch.threads % 32 != 0) {
    std::fprintf(stderr, "syncbn: LaunchConfig.threads must be a multiple of 32 in [32, 1024]\n");
    std::abort();
  }
}

// Sums over `len` contiguous elements from p into acc (this thread's share), 16-byte loads when
// p's alignment allows.
template <typename T, typename A, typename Push>
__device__ void walk_contiguous(const T* p, int64_t len, bool may_vectorize, Push&& push) {
  const math::VecSplit split = may_vectorize
                                   ? math::split_for_vectors(detail::address(p), len, sizeof(T))
                                   : math::scalar_split(len);
  math::for_each_split_item(split, kPerVec<T>, threadIdx.x, blockDim.x,
                            [&](int64_t i, bool vectors) {
                              if (vectors) {
                                const Vec<T> v = load_vec(p + i);
#pragma unroll
                                for (int k = 0; k < kPerVec<T>; ++k) push(i + k, to_float(v.v[k]));
                              } else {
                                push(i, to_float(p[i]));
                              }
                            });
}

// Block per (n, g): float64 Σx, Σx² over the group's (C/G)·S elements.
template <typename T>
__global__ void gn_stats_kernel(const T* x, int64_t C, int64_t S, bool channels_last,
                                int64_t groups, double eps, float* mean, float* invstd,
                                double* var) {
  const int64_t ng = blockIdx.x, n = ng / groups, grp = ng % groups, cpg = C / groups;
  math::SumStats<double> acc;
  if (!channels_last) {
    walk_contiguous<T, math::SumStats<double>>(x + (n * C + grp * cpg) * S, cpg * S, true,
                                               [&](int64_t, float v) { acc.push(v); });
  } else {
    for (int64_t k = threadIdx.x; k < cpg * S; k += blockDim.x) {
      const int64_t s = k / cpg, c = grp * cpg + k % cpg;
      acc.push(to_float(x[math::element_offset(n, c, s, C, S, true)]));
    }
  }
  using A = math::SumStats<double>;
  const A total = detail::block_merge(acc, detail::shared_memory<A>());
  if (threadIdx.x == 0) {
    double s, ss, m, v;
    total.to_sums(s, ss);
    math::bn_mean_var(s, ss, 1.0 / static_cast<double>(cpg * S), m, v);
    mean[ng] = static_cast<float>(m);
    invstd[ng] = math::bn_invstd(v, eps);
    if (var != nullptr) var[ng] = v;
  }
}

// Per-(n, c) coefficients for the elementwise pass: dst = a·(x − m)·… see the callers.
struct PlaneCoef {
  float m, p, q, r;
};

// Elementwise over (N, C, S) with per-(n, c) coefficients: out = p·in1 + q·(x − m) + r where
// in1 is x itself (forward: p = 0, q = scale, r = shift) or dy (backward).
template <typename T>
__global__ void plane_elemt_kernel(const T* in1, const T* x, const PlaneCoef* coef, int64_t N,
                                   int64_t C, int64_t S, bool channels_last, T* out) {
  const int64_t total = N * C * S;
  const int64_t threads = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += threads) {
    const int64_t c = math::channel_of(i, C, S, channels_last), n = math::batch_of(i, C, S);
    const PlaneCoef k = coef[n * C + c];
    const float xv = to_float(x[i]);
    const float v1 = in1 != nullptr ? to_float(in1[i]) : 0.0f;
    out[i] = from_float<T>(k.p * v1 + k.q * (xv - k.m) + k.r);
  }
}

__global__ void gn_forward_coef_kernel(int64_t N, int64_t C, int64_t groups, const float* mean,
                                       const float* invstd, const float* weight, const float* bias,
                                       PlaneCoef* coef) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= N * C) return;
  const int64_t n = i / C, c = i % C, ng = n * groups + c / (C / groups);
  coef[i] = {mean[ng], 0.0f, math::bn_scale(invstd[ng], weight, c), math::bn_shift(bias, c)};
}

// Block per (n, c): db = Σ_s dy, dsm = Σ_s dy·(x − mean_ng), float64.
template <typename T>
__global__ void gn_plane_sums_kernel(const T* dy, const T* x, int64_t C, int64_t S,
                                     bool channels_last, int64_t groups, const float* mean,
                                     double* db, double* dsm) {
  const int64_t plane = blockIdx.x, n = plane / C, c = plane % C;
  const double m = mean[n * groups + c / (C / groups)];
  math::PairSums<double> acc;
  for (int64_t s = threadIdx.x; s < S; s += blockDim.x) {
    const int64_t i = math::element_offset(n, c, s, C, S, channels_last);
    const double d = to_float(dy[i]);
    acc.push(d, d * (static_cast<double>(to_float(x[i])) - m));
  }
  using A = math::PairSums<double>;
  const A total = detail::block_merge(acc, detail::shared_memory<A>());
  if (threadIdx.x == 0) {
    db[plane] = total.a;
    dsm[plane] = total.b;
  }
}

// Thread per (n, g): A = Σ γ·db, B = Σ γ·dsm over the group → coefficients of each (n, c).
__global__ void gn_backward_coef_kernel(int64_t N, int64_t C, int64_t S, int64_t groups,
                                        const float* mean, const float* invstd, const float* weight,
                                        const double* db, const double* dsm, PlaneCoef* coef) {
  const int64_t ng = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (ng >= N * groups) return;
  const int64_t n = ng / groups, grp = ng % groups, cpg = C / groups;
  double A = 0.0, B = 0.0;
  for (int64_t c = grp * cpg; c < (grp + 1) * cpg; ++c) {
    const double w = weight != nullptr ? weight[c] : 1.0;
    A += w * db[n * C + c];
    B += w * dsm[n * C + c];
  }
  const double sigma = invstd[ng], D = static_cast<double>(cpg * S);
  for (int64_t c = grp * cpg; c < (grp + 1) * cpg; ++c) {
    const double w = weight != nullptr ? weight[c] : 1.0;
    const math::GnBackwardCoef k = math::gn_backward_coef(sigma, w, A, B, D);
    coef[n * C + c] = {mean[ng], k.p, k.q, k.r};
  }
}

// Thread per channel: dγ_c = Σ_n σ_ng·dsm[n,c], dβ_c = Σ_n db[n,c], in n order.
__global__ void gn_param_grads_kernel(int64_t N, int64_t C, int64_t groups, const float* invstd,
                                      const double* db, const double* dsm, float* dweight,
                                      float* dbias) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  double gw = 0.0, gb = 0.0;
  for (int64_t n = 0; n < N; ++n) {
    gw += static_cast<double>(invstd[n * groups + c / (C / groups)]) * dsm[n * C + c];
    gb += db[n * C + c];
  }
  if (dweight != nullptr) dweight[c] = static_cast<float>(gw);
  if (dbias != nullptr) dbias[c] = static_cast<float>(gb);
}

// Block per row: statistics, then the normalized row.
template <typename T>
__global__ void ln_forward_kernel(const T* x, int64_t d, double eps, const float* weight,
                                  const float* bias, T* y, float* mean, float* invstd,
                                  bool co_aligned) {
  const int64_t row = blockIdx.x;
  const T* xr = x + row * d;
  math::SumStats<double> acc;
  walk_contiguous<T, math::SumStats<double>>(xr, d, true, [&](int64_t, float v) { acc.push(v); });
  using A = math::SumStats<double>;
  const A total = detail::block_merge(acc, detail::shared_memory<A>());
  double s, ss, m, v;
  total.to_sums(s, ss);
  math::bn_mean_var(s, ss, 1.0 / static_cast<double>(d), m, v);
  const float mf = static_cast<float>(m), sf = math::bn_invstd(v, eps);
  if (threadIdx.x == 0) {
    mean[row] = mf;
    invstd[row] = sf;
  }
  T* yr = y + row * d;
  const math::VecSplit split = co_aligned
                                   ? math::split_for_vectors(detail::address(xr), d, sizeof(T))
                                   : math::scalar_split(d);
  auto f = [&](int64_t i, float xv) {
    return math::bn_normalize(xv, mf, math::bn_scale(sf, weight, i), math::bn_shift(bias, i));
  };
  math::for_each_split_item(split, kPerVec<T>, threadIdx.x, blockDim.x,
                            [&](int64_t i, bool vectors) {
                              if (vectors) {
                                const Vec<T> in = load_vec(xr + i);
                                Vec<T> out;
#pragma unroll
                                for (int k = 0; k < kPerVec<T>; ++k)
                                  out.v[k] = from_float<T>(f(i + k, to_float(in.v[k])));
                                store_vec(yr + i, out);
                              } else {
                                yr[i] = from_float<T>(f(i, to_float(xr[i])));
                              }
                            });
}

// Block per row: A = Σ γ·dy, B = Σ γ·dy·(x − m), then dx = σ·γ·dy + q·(x − m) + r.
template <typename T>
__global__ void ln_backward_kernel(const T* dy, const T* x, int64_t d, const float* mean,
                                   const float* invstd, const float* weight, T* dx) {
  const int64_t row = blockIdx.x;
  const T *dyr = dy + row * d, *xr = x + row * d;
  const double m = mean[row];
  math::PairSums<double> acc;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    const double g = static_cast<double>(to_float(dyr[i])) * (weight != nullptr ? weight[i] : 1.0f);
    acc.push(g, g * (static_cast<double>(to_float(xr[i])) - m));
  }
  using A = math::PairSums<double>;
  const A total = detail::block_merge(acc, detail::shared_memory<A>());
  const math::GnBackwardCoef k =
      math::gn_backward_coef(invstd[row], 1.0, total.a, total.b, static_cast<double>(d));
  const float mf = mean[row];
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    const float g = to_float(dyr[i]) * (weight != nullptr ? weight[i] : 1.0f);
    dx[row * d + i] = from_float<T>(math::gn_backward_element(g, to_float(xr[i]), mf, k));
  }
}

// Thread per column: dγ_i = Σ_rows dy·(x − m)·σ, dβ_i = Σ_rows dy, float64, in row order.
template <typename T>
__global__ void ln_param_grads_kernel(const T* dy, const T* x, int64_t rows, int64_t d,
                                      const float* mean, const float* invstd, float* dweight,
                                      float* dbias) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= d) return;
  double w = 0.0, b = 0.0;
  for (int64_t row = 0; row < rows; ++row) {
    const double dv = to_float(dy[row * d + i]);
    w += dv * (static_cast<double>(to_float(x[row * d + i])) - mean[row]) * invstd[row];
    b += dv;
  }
  if (dweight != nullptr) dweight[i] = static_cast<float>(w);
  if (dbias != nullptr) dbias[i] = static_cast<float>(b);
}

unsigned grid_for(int64_t work, int threads) {
  const int64_t cap = 32 * static_cast<int64_t>(detail::sm_count());
  const int64_t blocks = ceil_div(work, threads);
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > cap ? cap : blocks));
}

}  // namespace

template <typename T>
void gn_stats(const T* x, const BnGeometry& g, int64_t groups, double eps, float* mean,
              float* invstd, double* var, Stream stream, const LaunchConfig& launch) {
  check_threads(launch);
  if (g.n * groups == 0) return;
  detail::launch(gn_stats_kernel<T>, static_cast<unsigned>(g.n * groups), launch.threads,
                 launch.threads * sizeof(math::SumStats<double>), detail::to_cuda(stream), x, g.c,
                 g.s, g.channels_last, groups, eps, mean, invstd, var);
}

template <typename T>
void gn_elemt(const T* x, const BnGeometry& g, int64_t groups, const float* mean,
              const float* invstd, const float* weight, const float* bias, T* y, Stream stream,
              const LaunchConfig& launch) {
  check_threads(launch);
  if (g.n * g.c * g.s == 0) return;
  const cudaStream_t s = detail::to_cuda(stream);
  detail::Scratch coef(sizeof(PlaneCoef) * g.n * g.c, s);
  detail::launch(gn_forward_coef_kernel, static_cast<unsigned>(ceil_div(g.n * g.c, 256)), 256, 0, s,
                 g.n, g.c, groups, mean, invstd, weight, bias, coef.as<PlaneCoef>());
  detail::launch(plane_elemt_kernel<T>, grid_for(g.n * g.c * g.s, launch.threads), launch.threads,
                 0, s, nullptr, x, coef.as<PlaneCoef>(), g.n, g.c, g.s, g.channels_last, y);
}

template <typename T>
void gn_backward(const T* dy, const T* x, const BnGeometry& g, int64_t groups, const float* mean,
                 const float* invstd, const float* weight, T* dx, float* dweight, float* dbias,
                 Stream stream, const LaunchConfig& launch) {
  check_threads(launch);
  const cudaStream_t s = detail::to_cuda(stream);
  const int64_t planes = g.n * g.c;
  detail::Scratch sums(sizeof(double) * 2 * planes, s);
  detail::Scratch coef(sizeof(PlaneCoef) * planes, s);
  double* db = sums.as<double>();
  double* dsm = db + planes;
  if (planes > 0) {
    detail::launch(gn_plane_sums_kernel<T>, static_cast<unsigned>(planes), launch.threads,
                   launch.threads * sizeof(math::PairSums<double>), s, dy, x, g.c, g.s,
                   g.channels_last, groups, mean, db, dsm);
    detail::launch(gn_backward_coef_kernel, static_cast<unsigned>(ceil_div(g.n * groups, 128)), 128,
                   0, s, g.n, g.c, g.s, groups, mean, invstd, weight, db, dsm,
                   coef.as<PlaneCoef>());
    detail::launch(plane_elemt_kernel<T>, grid_for(planes * g.s, launch.threads), launch.threads, 0,
                   s, dy, x, coef.as<PlaneCoef>(), g.n, g.c, g.s, g.channels_last, dx);
  }
  if (dweight != nullptr || dbias != nullptr) {
    detail::launch(gn_param_grads_kernel, static_cast<unsigned>(ceil_div(g.c, 128)), 128, 0, s, g.n,
                   g.c, groups, invstd, db, dsm, dweight, dbias);
  }
}

template <typename T>
void ln_forward(const T* x, int64_t rows, int64_t d, double eps, const float* weight,
                const float* bias, T* y, float* mean, float* invstd, Stream stream,
                const LaunchConfig& launch) {
  check_threads(launch);
  if (rows == 0) return;
  detail::launch(ln_forward_kernel<T>, static_cast<unsigned>(rows), launch.threads,
                 launch.threads * sizeof(math::SumStats<double>), detail::to_cuda(stream), x, d,
                 eps, weight, bias, y, mean, invstd,
                 math::co_aligned(detail::address(x), detail::address(y)));
}

template <typename T>
void ln_backward(const T* dy, const T* x, int64_t rows, int64_t d, const float* mean,
                 const float* invstd, const float* weight, T* dx, float* dweight, float* dbias,
                 Stream stream, const LaunchConfig& launch) {
  check_threads(launch);
  const cudaStream_t s = detail::to_cuda(stream);
  if (rows > 0) {
    detail::launch(ln_backward_kernel<T>, static_cast<unsigned>(rows), launch.threads,
                   launch.threads * sizeof(math::PairSums<double>), s, dy, x, d, mean, invstd,
                   weight, dx);
  }
  if (dweight != nullptr || dbias != nullptr) {
    detail::launch(ln_param_grads_kernel<T>, static_cast<unsigned>(ceil_div(d, 128)), 128, 0, s, dy,
                   x, rows, d, mean, invstd, dweight, dbias);
  }
}

#define SYNCBN_INSTANTIATE_GN(T)                                                                   \
  template void gn_stats<T>(const T*, const BnGeometry&, int64_t, double, float*, float*, double*, \
                            Stream, const LaunchConfig&);                                          \
  template void gn_elemt<T>(const T*, const BnGeometry&, int64_t, const float*, const float*,      \
                            const float*, const float*, T*, Stream, const LaunchConfig&);          \
  template void gn_backward<T>(const T*, const T*, const BnGeometry&, int64_t, const float*,       \
                               const float*, const float*, T*, float*, float*, Stream,             \
                               const LaunchConfig&);                                               \
  template void ln_forward<T>(const T*, int64_t, int64_t, double, const float*, const float*, T*,  \
                              float*, float*, Stream, const LaunchConfig&);                        \
  template void ln_backward<T>(const T*, const T*, int64_t, int64_t, const float*, const float*,   \
                               const float*, T*, float*, float*, Stream, const LaunchConfig&);
SYNCBN_INSTANTIATE_GN(float)
SYNCBN_INSTANTIATE_GN(__half)
SYNCBN_INSTANTIATE_GN(__nv_bfloat16)

}  // namespace syncbn::norm::cuda
