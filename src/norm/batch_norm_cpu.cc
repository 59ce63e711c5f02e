// BatchNorm stages on the CPU (declared in norm/kernels.h, math in the block comment there).
//
// Layouts: contiguous (N, C, S) is walked as a flat range of elements split evenly over the
// threads, each slice cut at plane boundaries so every inner loop is one channel's contiguous
// run; channels-last (N·S rows of C) is split by rows and vectorised across channels. Channel
// sums are accumulated in float64 per thread and combined in thread order.
#include <algorithm>
#include <cmath>
#include <cstring>
#if defined(__AVX__)
#include <immintrin.h>
#endif
#include <vector>

#include "norm/kernels.h"
#include "norm/norm_math.h"
#include "norm/parallel.h"

namespace syncbn::norm {
namespace {

// Four float64 vectors of partial sums per quantity: a single accumulator would be bound by add
// latency. GCC vector extensions lower to AVX2 or SSE as the target allows, and the fixed
// blocking keeps the summation order independent of the compiler's choices.
using v4f = float __attribute__((vector_size(16)));
using v4d = double __attribute__((vector_size(32)));
constexpr int64_t kBlock = 16;

inline v4d load4(const float* p) {
#if defined(__AVX__)
  return reinterpret_cast<v4d>(_mm256_cvtps_pd(_mm_loadu_ps(p)));
#else
  v4f v;
  std::memcpy(&v, p, sizeof(v));
  return __builtin_convertvector(v, v4d);
#endif
}
inline void add4(double* p, v4d v) {
  v4d acc;
  std::memcpy(&acc, p, sizeof(acc));
  acc += v;
  std::memcpy(p, &acc, sizeof(acc));
}
inline double hsum(v4d a, v4d b, v4d c, v4d d) {
  const v4d t = (a + b) + (c + d);
  return (t[0] + t[1]) + (t[2] + t[3]);
}

// s += Σ x, ss += Σ x² over x[0, n), in float64.
inline void run_sum_sumsq(const float* x, int64_t n, double& s, double& ss) {
  v4d s0{}, s1{}, s2{}, s3{}, q0{}, q1{}, q2{}, q3{};
  int64_t i = 0;
  for (; i + kBlock <= n; i += kBlock) {
    const v4d a = load4(x + i), b = load4(x + i + 4), c = load4(x + i + 8), d = load4(x + i + 12);
    s0 += a, s1 += b, s2 += c, s3 += d;
    q0 += a * a, q1 += b * b, q2 += c * c, q3 += d * d;
  }
  double ts = hsum(s0, s1, s2, s3), tq = hsum(q0, q1, q2, q3);
  for (; i < n; ++i) {
    const double v = x[i];
    ts += v;
    tq += v * v;
  }
  s += ts;
  ss += tq;
}

// s += Σ dy, sx += Σ dy·(x − mean) over [0, n), in float64.
inline void run_sum_dy_xmu(const float* dy, const float* x, double mean, int64_t n, double& s,
                           double& sx) {
  v4d s0{}, s1{}, s2{}, s3{}, q0{}, q1{}, q2{}, q3{};
  const v4d m = {mean, mean, mean, mean};
  int64_t i = 0;
  for (; i + kBlock <= n; i += kBlock) {
    const v4d a = load4(dy + i), b = load4(dy + i + 4), c = load4(dy + i + 8),
              d = load4(dy + i + 12);
    s0 += a, s1 += b, s2 += c, s3 += d;
    q0 += a * (load4(x + i) - m), q1 += b * (load4(x + i + 4) - m);
    q2 += c * (load4(x + i + 8) - m), q3 += d * (load4(x + i + 12) - m);
  }
  double ts = hsum(s0, s1, s2, s3), tq = hsum(q0, q1, q2, q3);
  for (; i < n; ++i) {
    const double d = dy[i];
    ts += d;
    tq += d * (static_cast<double>(x[i]) - mean);
  }
  s += ts;
  sx += tq;
}

// Channels-last rows are reduced in tiles of rows: each block of 8 channels is summed down the
// tile in registers and added to the float64 accumulators once per tile, so the accumulators are
// not loaded and stored once per row. A tile holds about 8 KiB of each input, so the two inputs
// of backward_reduce stay in L1 while the channel blocks walk over them.
inline int64_t row_tile(int64_t C) {
  return std::clamp<int64_t>(2048 / std::max<int64_t>(C, 1), 8, 256);
}

// acc_a[c] += Σ_rows f_a, acc_b[c] += Σ_rows f_b, where term(offset, c, a, b) adds a block of
// 4 channels' (f_a, f_b) at element offset `offset` into the v4d accumulators a and b, and
// scalar_term does the same for one channel of the tail.
template <typename Term, typename ScalarTerm>
inline void rows_reduce(int64_t rows, int64_t C, double* acc_a, double* acc_b, Term&& term,
                        ScalarTerm&& scalar_term) {
  const int64_t tile = row_tile(C);
  for (int64_t row0 = 0; row0 < rows; row0 += tile) {
    const int64_t row_end = std::min(rows, row0 + tile);
    int64_t c = 0;
    for (; c + 8 <= C; c += 8) {
      // Two rows per iteration into separate accumulators: eight independent add chains.
      v4d a0{}, a1{}, b0{}, b1{}, a2{}, a3{}, b2{}, b3{};
      int64_t row = row0;
      for (; row + 2 <= row_end; row += 2) {
        term(row * C + c, c, a0, b0);
        term(row * C + c + 4, c + 4, a1, b1);
        term((row + 1) * C + c, c, a2, b2);
        term((row + 1) * C + c + 4, c + 4, a3, b3);
      }
      if (row < row_end) {
        term(row * C + c, c, a0, b0);
        term(row * C + c + 4, c + 4, a1, b1);
      }
      add4(acc_a + c, a0 + a2), add4(acc_a + c + 4, a1 + a3);
      add4(acc_b + c, b0 + b2), add4(acc_b + c + 4, b1 + b3);
    }
    for (; c < C; ++c) {
      double a = 0.0, b = 0.0;
      for (int64_t row = row0; row < row_end; ++row) scalar_term(row * C + c, c, a, b);
      acc_a[c] += a, acc_b[c] += b;
    }
  }
}

// Channels-last rows: acc_a[c] += Σ x, acc_b[c] += Σ x² over `rows` rows of C.
inline void rows_sum_sumsq(const float* x, int64_t rows, int64_t C, double* acc_a, double* acc_b) {
  rows_reduce(
      rows, C, acc_a, acc_b,
      [x](int64_t i, int64_t, v4d& a, v4d& b) {
        const v4d v = load4(x + i);
        a += v;
        b += v * v;
      },
      [x](int64_t i, int64_t, double& a, double& b) {
        const double v = x[i];
        a += v;
        b += v * v;
      });
}

// Channels-last rows: acc_a[c] += Σ dy, acc_b[c] += Σ dy·(x − mean[c]).
inline void rows_sum_dy_xmu(const float* dy, const float* x, int64_t rows, int64_t C,
                            const double* mean, double* acc_a, double* acc_b) {
  rows_reduce(
      rows, C, acc_a, acc_b,
      [dy, x, mean](int64_t i, int64_t c, v4d& a, v4d& b) {
        v4d m;
        std::memcpy(&m, mean + c, sizeof(m));
        const v4d d = load4(dy + i);
        a += d;
        b += d * (load4(x + i) - m);
      },
      [dy, x, mean](int64_t i, int64_t c, double& a, double& b) {
        const double d = dy[i];
        a += d;
        b += d * (static_cast<double>(x[i]) - mean[c]);
      });
}

// Calls body(c, begin, end) for each contiguous run of one channel within `part` of the
// contiguous layout: elements [begin, end) of the flat array, all of channel c.
template <typename Body>
void for_each_run(const BnGeometry& g, int part, int parts, Body&& body) {
  const Range r = slice(g.n * g.c * g.s, part, parts);
  for (int64_t i = r.begin; i < r.end;) {
    const int64_t plane = i / g.s;
    const int64_t run_end = std::min(r.end, (plane + 1) * g.s);
    body(plane % g.c, i, run_end);
    i = run_end;
  }
}

// Accumulates a pair of per-channel float64 sums with `per_thread` partial arrays and writes
// the totals to out_a, out_b (C each). fill(acc_a, acc_b, part, parts) fills one thread's part.
template <typename Fill>
void reduce_channels(const BnGeometry& g, double* out_a, double* out_b, Fill&& fill) {
  const int64_t C = g.c;
  const int parts = thread_count_for(g.n * g.c * g.s);
  std::vector<double> partial(static_cast<size_t>(parts) * 2 * C, 0.0);
#pragma omp parallel num_threads(parts)
  {
    const int part = omp_get_thread_num();
    double* acc = partial.data() + static_cast<size_t>(part) * 2 * C;
    fill(acc, acc + C, part, parts);
  }
  for (int64_t c = 0; c < C; ++c) {
    double a = 0.0, b = 0.0;
    for (int p = 0; p < parts; ++p) {
      a += partial[static_cast<size_t>(p) * 2 * C + c];
      b += partial[static_cast<size_t>(p) * 2 * C + C + c];
    }
    out_a[c] = a;
    out_b[c] = b;
  }
}

}  // namespace

void bn_stats(const float* x, const BnGeometry& g, double* sum, double* sumsq) {
  reduce_channels(g, sum, sumsq, [&](double* acc_sum, double* acc_sq, int part, int parts) {
    if (g.channels_last || g.s == 1) {
      const Range rows = slice(g.n * g.s, part, parts);
      rows_sum_sumsq(x + rows.begin * g.c, rows.end - rows.begin, g.c, acc_sum, acc_sq);
      return;
    }
    for_each_run(g, part, parts, [&](int64_t c, int64_t begin, int64_t end) {
      run_sum_sumsq(x + begin, end - begin, acc_sum[c], acc_sq[c]);
    });
  });
}

void bn_gather_stats(int64_t channels, int64_t count, const double* sum, const double* sumsq,
                     double* mean, double* var) {
  const double inv_n = 1.0 / static_cast<double>(count);
  for (int64_t c = 0; c < channels; ++c)
    math::bn_mean_var(sum[c], sumsq[c], inv_n, mean[c], var[c]);
}

void bn_update_running(int64_t channels, int64_t count, double factor, const double* mean,
                       const double* var, float* running_mean, float* running_var) {
  const double unbias = static_cast<double>(count) / static_cast<double>(count - 1);
  for (int64_t c = 0; c < channels; ++c) {
    running_mean[c] = math::running_update(running_mean[c], mean[c], factor);
    running_var[c] = math::running_update(running_var[c], var[c], factor, unbias);
  }
}

void bn_elemt(const float* x, const BnGeometry& g, const float* mean, const float* invstd,
              const float* weight, const float* bias, float* y) {
  const int64_t C = g.c;
  // y = (x − mean)·scale + shift, scale = invstd·γ: subtracting the mean first keeps the
  // result accurate when |mean| ≫ std.
  std::vector<float> scale(C), shift(C);
  for (int64_t c = 0; c < C; ++c) {
    scale[c] = math::bn_scale(invstd[c], weight, c);
    shift[c] = math::bn_shift(bias, c);
  }
  const int parts = thread_count_for(g.n * g.c * g.s);
#pragma omp parallel num_threads(parts)
  {
    const int part = omp_get_thread_num();
    if (g.channels_last || g.s == 1) {
      const Range rows = slice(g.n * g.s, part, parts);
      const float* sc = scale.data();
      const float* sh = shift.data();
      for (int64_t row = rows.begin; row < rows.end; ++row) {
        const float* xr = x + row * C;
        float* yr = y + row * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) yr[c] = math::bn_normalize(xr[c], mean[c], sc[c], sh[c]);
      }
    } else {
      for_each_run(g, part, parts, [&](int64_t c, int64_t begin, int64_t end) {
        const float m = mean[c], a = scale[c], b = shift[c];
#pragma omp simd
        for (int64_t i = begin; i < end; ++i) y[i] = math::bn_normalize(x[i], m, a, b);
      });
    }
  }
}

void bn_backward_reduce(const float* dy, const float* x, const BnGeometry& g, const float* mean,
                        double* sum_dy, double* sum_dy_xmu) {
  const std::vector<double> mean_d(mean, mean + g.c);
  reduce_channels(g, sum_dy, sum_dy_xmu, [&](double* acc_dy, double* acc_xmu, int part, int parts) {
    if (g.channels_last || g.s == 1) {
      const Range rows = slice(g.n * g.s, part, parts);
      rows_sum_dy_xmu(dy + rows.begin * g.c, x + rows.begin * g.c, rows.end - rows.begin, g.c,
                      mean_d.data(), acc_dy, acc_xmu);
      return;
    }
    for_each_run(g, part, parts, [&](int64_t c, int64_t begin, int64_t end) {
      run_sum_dy_xmu(dy + begin, x + begin, mean_d[c], end - begin, acc_dy[c], acc_xmu[c]);
    });
  });
}

void bn_backward_elemt(const float* dy, const float* x, const BnGeometry& g, const float* mean,
                       const float* invstd, const float* weight, const double* sum_dy,
                       const double* sum_dy_xmu, int64_t count, float* dx) {
  const int64_t C = g.c;
  // dx = (dy − mean_dy − (x − mean)·k)·scale with mean_dy = sum_dy/n,
  // k = invstd²·sum_dy_xmu/n, scale = γ·invstd. Eval mode: mean_dy = k = 0.
  std::vector<float> mean_dy(C, 0.0f), k(C, 0.0f), scale(C);
  for (int64_t c = 0; c < C; ++c) {
    const math::BnBackwardCoef coef = math::bn_backward_coef(
        invstd[c], weight, c, sum_dy, sum_dy_xmu, static_cast<double>(count));
    mean_dy[c] = coef.mean_dy, k[c] = coef.k, scale[c] = coef.scale;
  }
  const int parts = thread_count_for(g.n * g.c * g.s);
#pragma omp parallel num_threads(parts)
  {
    const int part = omp_get_thread_num();
    if (g.channels_last || g.s == 1) {
      const Range rows = slice(g.n * g.s, part, parts);
      const float *md = mean_dy.data(), *kk = k.data(), *sc = scale.data();
      for (int64_t row = rows.begin; row < rows.end; ++row) {
        const float* xr = x + row * C;
        const float* dyr = dy + row * C;
        float* dxr = dx + row * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c)
          dxr[c] = math::bn_backward_element(dyr[c], xr[c], mean[c], {md[c], kk[c], sc[c]});
      }
    } else {
      for_each_run(g, part, parts, [&](int64_t c, int64_t begin, int64_t end) {
        const float m = mean[c];
        const math::BnBackwardCoef coef{mean_dy[c], k[c], scale[c]};
#pragma omp simd
        for (int64_t i = begin; i < end; ++i)
          dx[i] = math::bn_backward_element(dy[i], x[i], m, coef);
      });
    }
  }
}

}  // namespace syncbn::norm
