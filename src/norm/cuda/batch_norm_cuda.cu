// BatchNorm stages on a CUDA device (declared in norm/cuda/kernels_cuda.h, math in the block
// comment of norm/kernels.h, per-element formulas in norm/norm_math.h). Same list, same order as
// norm/batch_norm_cpu.cc; what differs is the parallelization:
//
//   reductions (bn_stats, bn_backward_reduce):
//     contiguous, S > 1   grid (C, y): each warp of block (c, y) reduces its own pieces of
//                         channel c (a warp per piece, so short runs such as 7×7 still keep
//                         most lanes busy), 16-byte loads inside each piece; one partial per block
//     channels-last/(N,C) grid (channel groups, row blocks), block (32, ty): thread x owns 16
//                         bytes of channels, thread y walks rows; merged over y in shared memory
//     then merge_partials adds the per-block float64 partials per channel in block order.
//   elementwise (bn_elemt, bn_backward_elemt): the same two walks, coefficients loaded once per
//     piece by each warp (contiguous) or once per thread (channels-last).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <type_traits>

#include "norm/cuda/cuda_common.cuh"

namespace syncbn::norm::cuda {
namespace detail {

int sm_count() {
  constexpr int kMaxDevices = 64;
  static int cached[kMaxDevices] = {};
  int device = 0;
  SYNCBN_CUDA_CHECK(cudaGetDevice(&device));
  if (device < kMaxDevices && cached[device] > 0) return cached[device];
  int count = 0;
  SYNCBN_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
  if (device < kMaxDevices) cached[device] = count;
  return count;
}

}  // namespace detail

namespace {

using detail::from_float;
using detail::kPerVec;
using detail::load_vec;
using detail::store_vec;
using detail::to_float;
using detail::Vec;

// Elements per piece of a contiguous channel run, the unit of work of one warp: four vectors
// per lane.
constexpr int kWarp = 32;
template <typename T>
constexpr int64_t kPieceLen = int64_t{kWarp} * kPerVec<T> * 4;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t clamp64(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : (v > hi ? hi : v); }

void check_launch(const LaunchConfig& launch) {
  if (launch.threads < 32 || launch.threads > 1024 || launch.threads % 32 != 0) {
    std::fprintf(stderr, "syncbn: LaunchConfig.threads must be a multiple of 32 in [32, 1024]\n");
    std::abort();
  }
}
int max_blocks(const LaunchConfig& launch) {
  return launch.max_blocks > 0 ? launch.max_blocks : 4 * detail::sm_count();
}

// ---------------------------------------------------------------------------------------------
// Reduction terms: what is summed per element. Accum has push/merge (norm_math.h).

// Σx, Σx²: float64 sums for Acc = double, Welford in float32 for Acc = float.
template <typename T, typename Acc>
struct StatsTerm {
  using Elem = T;
  using Accum =
      std::conditional_t<std::is_same_v<Acc, double>, math::SumStats<double>, math::Welford<float>>;
  const T* x;
  __device__ const T* base() const { return x; }  // where the vector split is computed
  __device__ void push(Accum& a, int64_t i, int64_t) const { a.push(to_float(x[i])); }
  // One vector of one channel (contiguous) or of consecutive channels (rows).
  __device__ void push_vec(Accum* a, int stride, int64_t i, int64_t) const {
    const Vec<T> v = load_vec(x + i);
#pragma unroll
    for (int k = 0; k < kPerVec<T>; ++k) a[k * stride].push(to_float(v.v[k]));
  }
  __device__ static void finish(const Accum& a, double& out_a, double& out_b) {
    a.to_sums(out_a, out_b);
  }
};

// Σdy, Σdy·(x − mean[c]).
template <typename T, typename Acc>
struct GradTerm {
  using Elem = T;
  using Accum = math::PairSums<Acc>;
  const T* dy;
  const T* x;
  const float* mean;
  __device__ const T* base() const { return dy; }
  __device__ void push(Accum& a, int64_t i, int64_t c) const {
    const Acc d = to_float(dy[i]);
    a.push(d, d * (static_cast<Acc>(to_float(x[i])) - static_cast<Acc>(mean[c])));
  }
  // stride 0: all elements of channel c; stride 1: channels c, c + 1, …
  __device__ void push_vec(Accum* a, int stride, int64_t i, int64_t c) const {
    const Vec<T> vd = load_vec(dy + i), vx = load_vec(x + i);
#pragma unroll
    for (int k = 0; k < kPerVec<T>; ++k) {
      const Acc d = to_float(vd.v[k]);
      a[k * stride].push(
          d, d * (static_cast<Acc>(to_float(vx.v[k])) - static_cast<Acc>(mean[c + k * stride])));
    }
  }
  __device__ static void finish(const Accum& a, double& out_a, double& out_b) {
    out_a = static_cast<double>(a.a);
    out_b = static_cast<double>(a.b);
  }
};

// partial: (parts, 2, C) float64, part = blockIdx.y.
template <typename Term>
__global__ void reduce_runs_kernel(Term term, int64_t N, int64_t C, int64_t S, int64_t piece,
                                   bool co_aligned, double* partial) {
  using A = typename Term::Accum;
  using T = typename Term::Elem;
  const int64_t c = blockIdx.x;
  const int64_t items = N * math::pieces_per_run(S, piece);
  A acc{};
  const int64_t warps = blockDim.x / kWarp, lane = threadIdx.x % kWarp;
  for (int64_t item = static_cast<int64_t>(blockIdx.y) * warps + threadIdx.x / kWarp; item < items;
       item += static_cast<int64_t>(gridDim.y) * warps) {
    const math::Piece p = math::channel_piece(item, c, C, S, piece);
    const math::VecSplit split =
        co_aligned
            ? math::split_for_vectors(detail::address(term.base() + p.begin), p.len, sizeof(T))
            : math::scalar_split(p.len);
    math::for_each_split_item(split, kPerVec<T>, lane, kWarp, [&](int64_t i, bool vectors) {
      if (vectors) {
        term.push_vec(&acc, 0, p.begin + i, c);
      } else {
        term.push(acc, p.begin + i, c);
      }
    });
  }
  const A total = detail::block_merge(acc, detail::shared_memory<A>());
  if (threadIdx.x == 0) {
    double* out = partial + 2 * C * blockIdx.y;
    Term::finish(total, out[c], out[C + c]);
  }
}

// Rows of C: thread (x, y) of block (bx, by) owns channels [c0, c0 + width) with
// c0 = (bx·blockDim.x + x)·width, and rows y', y' + stride, … with y' = by·blockDim.y + y.
template <typename Term>
__global__ void reduce_rows_kernel(Term term, int64_t rows, int64_t C, bool vectors,
                                   double* partial) {
  using A = typename Term::Accum;
  using T = typename Term::Elem;
  constexpr int kW = kPerVec<T>;
  const int width = vectors ? kW : 1;
  const int64_t c0 = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * width;
  A acc[kW];
  if (c0 < C) {
    const int64_t stride = static_cast<int64_t>(gridDim.y) * blockDim.y;
    for (int64_t row = static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y; row < rows;
         row += stride) {
      if (vectors) {
        term.push_vec(acc, 1, row * C + c0, c0);
      } else {
        term.push(acc[0], row * C + c0, c0);
      }
    }
  }
  A* shared = detail::shared_memory<A>();
  // Static indices (unrolled to kW, guarded by width) keep acc in registers.
#pragma unroll
  for (int k = 0; k < kW; ++k)
    if (k < width) shared[(threadIdx.y * blockDim.x + threadIdx.x) * width + k] = acc[k];
  __syncthreads();
  detail::merge_over_y(shared, width);
  if (threadIdx.y == 0 && c0 < C) {
    double* out = partial + 2 * C * blockIdx.y;
    for (int k = 0; k < width && c0 + k < C; ++k)
      Term::finish(shared[threadIdx.x * width + k], out[c0 + k], out[C + c0 + k]);
  }
}

// out_a[c] = Σ_p partial[p][0][c], out_b[c] = Σ_p partial[p][1][c], in block order.
__global__ void merge_partials_kernel(const double* partial, int parts, int64_t C, double* out_a,
                                      double* out_b) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  double a = 0.0, b = 0.0;
  for (int p = 0; p < parts; ++p) {
    a += partial[2 * C * p + c];
    b += partial[2 * C * p + C + c];
  }
  out_a[c] = a;
  out_b[c] = b;
}

// Per-channel float64 sums of a term over (N, S), written to out_a, out_b (C).
template <typename Term>
void reduce_channels(const Term& term, const void* const* arrays, int n_arrays, const BnGeometry& g,
                     double* out_a, double* out_b, cudaStream_t stream,
                     const LaunchConfig& launch) {
  using A = typename Term::Accum;
  using T = typename Term::Elem;
  check_launch(launch);
  bool all_co_aligned = true;
  for (int k = 1; k < n_arrays; ++k)
    all_co_aligned &= math::co_aligned(detail::address(arrays[0]), detail::address(arrays[k]));
  const int64_t C = g.c;
  const int blocks = max_blocks(launch);
  dim3 grid, block;
  size_t shared = 0;
  bool rows = g.channels_last || g.s == 1;
  bool vectors = false;
  if (rows) {
    vectors = math::rows_vectorizable(detail::address(arrays[0]), C, sizeof(T), all_co_aligned);
    const int width = vectors ? kPerVec<T> : 1;
    // Shared memory for the merge over y stays within the default 48 KiB.
    const int64_t ty = clamp64(launch.threads / 32, 1,
                               (48 * 1024) / (32 * static_cast<int64_t>(width) * sizeof(A)));
    block = dim3(32, static_cast<unsigned>(ty));
    const int64_t gx = ceil_div(ceil_div(C, width), 32);
    const int64_t gy = clamp64(blocks / gx, 1, clamp64(ceil_div(g.count(), ty), 1, 65535));
    grid = dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy));
    shared = static_cast<size_t>(32 * ty * width) * sizeof(A);
  } else {
    const int64_t items = g.n * math::pieces_per_run(g.s, kPieceLen<T>);
    const int64_t gy =
        clamp64(blocks / C, 1, clamp64(ceil_div(items, launch.threads / kWarp), 1, 65535));
    block = dim3(static_cast<unsigned>(launch.threads));
    grid = dim3(static_cast<unsigned>(C), static_cast<unsigned>(gy));
    shared = static_cast<size_t>(launch.threads) * sizeof(A);
  }
  detail::Scratch partial(sizeof(double) * 2 * C * grid.y, stream);
  if (rows) {
    detail::launch(reduce_rows_kernel<Term>, grid, block, shared, stream, term, g.count(), C,
                   vectors, partial.as<double>());
  } else {
    detail::launch(reduce_runs_kernel<Term>, grid, block, shared, stream, term, g.n, C, g.s,
                   kPieceLen<T>, all_co_aligned, partial.as<double>());
  }
  detail::launch(merge_partials_kernel, dim3(static_cast<unsigned>(ceil_div(C, 128))), dim3(128), 0,
                 stream, partial.as<double>(), static_cast<int>(grid.y), C, out_a, out_b);
}

// ---------------------------------------------------------------------------------------------
// Elementwise ops: coefficients per channel, then one output element per input element.

template <typename T>
struct ElemtOp {
  struct Coef {
    float mean, scale, shift;
  };
  const T* x;
  T* y;
  const float *mean, *invstd, *weight, *bias;
  bool relu;
  __device__ Coef coef(int64_t c) const {
    return {mean[c], math::bn_scale(invstd[c], weight, c), math::bn_shift(bias, c)};
  }
  __device__ float f(float xv, const Coef& k) const {
    const float v = math::bn_normalize(xv, k.mean, k.scale, k.shift);
    return relu ? math::relu(v) : v;
  }
  __device__ void apply(int64_t i, const Coef& k) const {
    y[i] = from_float<T>(f(to_float(x[i]), k));
  }
  __device__ void apply_vec(int64_t i, const Coef* k, int stride) const {
    const Vec<T> v = load_vec(x + i);
    Vec<T> out;
#pragma unroll
    for (int j = 0; j < kPerVec<T>; ++j)
      out.v[j] = from_float<T>(f(to_float(v.v[j]), k[j * stride]));
    store_vec(y + i, out);
  }
};

template <typename T>
struct BackwardElemtOp {
  struct Coef {
    float mean;
    math::BnBackwardCoef k;
  };
  const T* dy;
  const T* x;
  T* dx;
  const float *mean, *invstd, *weight;
  const double *sum_dy, *sum_dy_xmu, *count;
  __device__ Coef coef(int64_t c) const {
    return {mean[c], math::bn_backward_coef(invstd[c], weight, c, sum_dy, sum_dy_xmu,
                                            sum_dy != nullptr ? *count : 1.0)};
  }
  __device__ void apply(int64_t i, const Coef& k) const {
    dx[i] = from_float<T>(math::bn_backward_element(to_float(dy[i]), to_float(x[i]), k.mean, k.k));
  }
  __device__ void apply_vec(int64_t i, const Coef* k, int stride) const {
    const Vec<T> vd = load_vec(dy + i), vx = load_vec(x + i);
    Vec<T> out;
#pragma unroll
    for (int j = 0; j < kPerVec<T>; ++j) {
      const Coef& kj = k[j * stride];
      out.v[j] = from_float<T>(
          math::bn_backward_element(to_float(vd.v[j]), to_float(vx.v[j]), kj.mean, kj.k));
    }
    store_vec(dx + i, out);
  }
};

template <typename T, typename Op>
__global__ void elemt_runs_kernel(Op op, const T* base, int64_t N, int64_t C, int64_t S,
                                  int64_t piece, bool co_aligned) {
  const int64_t per_run = math::pieces_per_run(S, piece);
  const int64_t items = N * C * per_run;
  const int64_t warps = blockDim.x / kWarp, lane = threadIdx.x % kWarp;
  for (int64_t item = static_cast<int64_t>(blockIdx.x) * warps + threadIdx.x / kWarp; item < items;
       item += static_cast<int64_t>(gridDim.x) * warps) {
    const int64_t plane = item / per_run;  // n·C + c
    const int64_t c = plane % C;
    const math::Piece p =
        math::channel_piece((plane / C) * per_run + item % per_run, c, C, S, piece);
    const typename Op::Coef k = op.coef(c);
    const math::VecSplit split =
        co_aligned ? math::split_for_vectors(detail::address(base + p.begin), p.len, sizeof(T))
                   : math::scalar_split(p.len);
    math::for_each_split_item(split, kPerVec<T>, lane, kWarp, [&](int64_t i, bool vectors) {
      if (vectors) {
        op.apply_vec(p.begin + i, &k, 0);
      } else {
        op.apply(p.begin + i, k);
      }
    });
  }
}

template <typename T, typename Op>
__global__ void elemt_rows_kernel(Op op, int64_t rows, int64_t C, bool vectors) {
  constexpr int kW = kPerVec<T>;
  const int width = vectors ? kW : 1;
  const int64_t c0 = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * width;
  if (c0 >= C) return;
  typename Op::Coef k[kW];
#pragma unroll
  for (int j = 0; j < kW; ++j)
    if (j < width) k[j] = op.coef(c0 + j);
  const int64_t stride = static_cast<int64_t>(gridDim.y) * blockDim.y;
  for (int64_t row = static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y; row < rows;
       row += stride) {
    if (vectors) {
      op.apply_vec(row * C + c0, k, 1);
    } else {
      op.apply(row * C + c0, k[0]);
    }
  }
}

template <typename T, typename Op>
void elementwise(const Op& op, const void* const* arrays, int n_arrays, const BnGeometry& g,
                 cudaStream_t stream, const LaunchConfig& launch) {
  check_launch(launch);
  if (g.n * g.c * g.s == 0) return;
  bool all_co_aligned = true;
  for (int k = 1; k < n_arrays; ++k)
    all_co_aligned &= math::co_aligned(detail::address(arrays[0]), detail::address(arrays[k]));
  const int64_t blocks_cap = 32 * static_cast<int64_t>(detail::sm_count());
  if (g.channels_last || g.s == 1) {
    const bool vectors =
        math::rows_vectorizable(detail::address(arrays[0]), g.c, sizeof(T), all_co_aligned);
    const int width = vectors ? kPerVec<T> : 1;
    // At most 256 threads: the half/bf16 backward op holds 8 channels' coefficients (74
    // registers on sm_80), too many for 1024-thread blocks.
    const int64_t ty = std::min(launch.threads, 256) / 32;
    const int64_t gx = ceil_div(ceil_div(g.c, width), 32);
    const int64_t gy = clamp64(ceil_div(g.count(), ty * 4), 1, clamp64(blocks_cap / gx, 1, 65535));
    detail::launch(elemt_rows_kernel<T, Op>,
                   dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy)),
                   dim3(32, static_cast<unsigned>(ty)), 0, stream, op, g.count(), g.c, vectors);
  } else {
    const int64_t piece = kPieceLen<T>;
    const int64_t items = g.n * g.c * math::pieces_per_run(g.s, piece);
    const int64_t grid = clamp64(ceil_div(items, launch.threads / kWarp), 1,
                                 launch.max_blocks > 0 ? launch.max_blocks : blocks_cap);
    detail::launch(elemt_runs_kernel<T, Op>, dim3(static_cast<unsigned>(grid)),
                   dim3(static_cast<unsigned>(launch.threads)), 0, stream, op,
                   static_cast<const T*>(arrays[0]), g.n, g.c, g.s, piece, all_co_aligned);
  }
}

// ---------------------------------------------------------------------------------------------
// Per-channel kernels of stage 2 and the running update: one thread per channel.

__global__ void gather_stats_kernel(int64_t C, const double* count, const double* sum,
                                    const double* sumsq, double* mean, double* var) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c < C) math::bn_mean_var(sum[c], sumsq[c], 1.0 / *count, mean[c], var[c]);
}

__global__ void update_running_kernel(int64_t C, const double* count, double factor,
                                      const double* mean, const double* var, float* running_mean,
                                      float* running_var) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const double unbias = *count / (*count - 1.0);
  running_mean[c] = math::running_update(running_mean[c], mean[c], factor);
  running_var[c] = math::running_update(running_var[c], var[c], factor, unbias);
}

unsigned channel_blocks(int64_t C) { return static_cast<unsigned>(ceil_div(C, 256)); }

}  // namespace

template <typename T, typename Acc>
void bn_stats(const T* x, const BnGeometry& g, double* sum, double* sumsq, Stream stream,
              const LaunchConfig& launch) {
  const void* arrays[] = {x};
  reduce_channels(StatsTerm<T, Acc>{x}, arrays, 1, g, sum, sumsq, detail::to_cuda(stream), launch);
}

void bn_gather_stats(int64_t channels, const double* count, const double* sum, const double* sumsq,
                     double* mean, double* var, Stream stream) {
  detail::launch(gather_stats_kernel, dim3(channel_blocks(channels)), dim3(256), 0,
                 detail::to_cuda(stream), channels, count, sum, sumsq, mean, var);
}

void bn_update_running(int64_t channels, const double* count, double factor, const double* mean,
                       const double* var, float* running_mean, float* running_var, Stream stream) {
  detail::launch(update_running_kernel, dim3(channel_blocks(channels)), dim3(256), 0,
                 detail::to_cuda(stream), channels, count, factor, mean, var, running_mean,
                 running_var);
}

template <typename T>
void bn_elemt(const T* x, const BnGeometry& g, const float* mean, const float* invstd,
              const float* weight, const float* bias, T* y, Stream stream, Activation activation,
              const LaunchConfig& launch) {
  const void* arrays[] = {x, y};
  elementwise<T>(ElemtOp<T>{x, y, mean, invstd, weight, bias, activation == Activation::kRelu},
                 arrays, 2, g, detail::to_cuda(stream), launch);
}

template <typename T, typename Acc>
void bn_backward_reduce(const T* dy, const T* x, const BnGeometry& g, const float* mean,
                        double* sum_dy, double* sum_dy_xmu, Stream stream,
                        const LaunchConfig& launch) {
  const void* arrays[] = {dy, x};
  reduce_channels(GradTerm<T, Acc>{dy, x, mean}, arrays, 2, g, sum_dy, sum_dy_xmu,
                  detail::to_cuda(stream), launch);
}

template <typename T>
void bn_backward_elemt(const T* dy, const T* x, const BnGeometry& g, const float* mean,
                       const float* invstd, const float* weight, const double* sum_dy,
                       const double* sum_dy_xmu, const double* count, T* dx, Stream stream,
                       const LaunchConfig& launch) {
  const void* arrays[] = {dy, x, dx};
  elementwise<T>(BackwardElemtOp<T>{dy, x, dx, mean, invstd, weight, sum_dy, sum_dy_xmu, count},
                 arrays, 3, g, detail::to_cuda(stream), launch);
}

#define SYNCBN_INSTANTIATE_BN_REDUCE(T, Acc)                                                    \
  template void bn_stats<T, Acc>(const T*, const BnGeometry&, double*, double*, Stream,         \
                                 const LaunchConfig&);                                          \
  template void bn_backward_reduce<T, Acc>(const T*, const T*, const BnGeometry&, const float*, \
                                           double*, double*, Stream, const LaunchConfig&);
SYNCBN_INSTANTIATE_BN_REDUCE(float, double)
SYNCBN_INSTANTIATE_BN_REDUCE(float, float)
SYNCBN_INSTANTIATE_BN_REDUCE(__half, float)
SYNCBN_INSTANTIATE_BN_REDUCE(__nv_bfloat16, float)

#define SYNCBN_INSTANTIATE_BN_ELEMT(T)                                                             \
  template void bn_elemt<T>(const T*, const BnGeometry&, const float*, const float*, const float*, \
                            const float*, T*, Stream, Activation, const LaunchConfig&);            \
  template void bn_backward_elemt<T>(const T*, const T*, const BnGeometry&, const float*,          \
                                     const float*, const float*, const double*, const double*,     \
                                     const double*, T*, Stream, const LaunchConfig&);
SYNCBN_INSTANTIATE_BN_ELEMT(float)
SYNCBN_INSTANTIATE_BN_ELEMT(__half)
SYNCBN_INSTANTIATE_BN_ELEMT(__nv_bfloat16)

}  // namespace syncbn::norm::cuda
