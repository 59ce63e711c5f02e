// BatchNorm stages on the CPU (declared in norm/kernels.h, math in the block comment there).
//
// Layouts: contiguous (N, C, S) is walked as a flat range of elements split evenly over the
// threads, each slice cut at plane boundaries so every inner loop is one channel's contiguous
// run; channels-last (N·S rows of C) is split by rows and vectorised across channels. Channel
// sums are accumulated in float64 per thread and combined in thread order.
#include <cmath>
#include <vector>

#include "norm/kernels.h"
#include "norm/parallel.h"

namespace syncbn::norm {
namespace {

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
      for (int64_t row = rows.begin; row < rows.end; ++row) {
        const float* xr = x + row * g.c;
#pragma omp simd
        for (int64_t c = 0; c < g.c; ++c) {
          const double v = xr[c];
          acc_sum[c] += v;
          acc_sq[c] += v * v;
        }
      }
      return;
    }
    for_each_run(g, part, parts, [&](int64_t c, int64_t begin, int64_t end) {
      double s = 0.0, ss = 0.0;
#pragma omp simd reduction(+ : s, ss)
      for (int64_t i = begin; i < end; ++i) {
        const double v = x[i];
        s += v;
        ss += v * v;
      }
      acc_sum[c] += s;
      acc_sq[c] += ss;
    });
  });
}

void bn_gather_stats(int64_t channels, int64_t count, const double* sum, const double* sumsq,
                     double* mean, double* var) {
  const double inv_n = 1.0 / static_cast<double>(count);
  for (int64_t c = 0; c < channels; ++c) {
    const double m = sum[c] * inv_n;
    // Rounding can leave a tiny negative value for constant channels.
    mean[c] = m;
    var[c] = std::max(0.0, sumsq[c] * inv_n - m * m);
  }
}

void bn_update_running(int64_t channels, int64_t count, double factor, const double* mean,
                       const double* var, float* running_mean, float* running_var) {
  const double unbias = static_cast<double>(count) / static_cast<double>(count - 1);
  for (int64_t c = 0; c < channels; ++c) {
    running_mean[c] = static_cast<float>((1.0 - factor) * running_mean[c] + factor * mean[c]);
    running_var[c] = static_cast<float>((1.0 - factor) * running_var[c] + factor * var[c] * unbias);
  }
}

void bn_elemt(const float* x, const BnGeometry& g, const float* mean, const float* invstd,
              const float* weight, const float* bias, float* y) {
  const int64_t C = g.c;
  // y = (x − mean)·scale + shift, scale = invstd·γ: subtracting the mean first keeps the
  // result accurate when |mean| ≫ std.
  std::vector<float> scale(C), shift(C);
  for (int64_t c = 0; c < C; ++c) {
    scale[c] = invstd[c] * (weight ? weight[c] : 1.0f);
    shift[c] = bias ? bias[c] : 0.0f;
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
        for (int64_t c = 0; c < C; ++c) yr[c] = (xr[c] - mean[c]) * sc[c] + sh[c];
      }
    } else {
      for_each_run(g, part, parts, [&](int64_t c, int64_t begin, int64_t end) {
        const float m = mean[c], a = scale[c], b = shift[c];
#pragma omp simd
        for (int64_t i = begin; i < end; ++i) y[i] = (x[i] - m) * a + b;
      });
    }
  }
}

void bn_backward_reduce(const float* dy, const float* x, const BnGeometry& g, const float* mean,
                        double* sum_dy, double* sum_dy_xmu) {
  reduce_channels(g, sum_dy, sum_dy_xmu, [&](double* acc_dy, double* acc_xmu, int part, int parts) {
    if (g.channels_last || g.s == 1) {
      const Range rows = slice(g.n * g.s, part, parts);
      for (int64_t row = rows.begin; row < rows.end; ++row) {
        const float* xr = x + row * g.c;
        const float* dyr = dy + row * g.c;
#pragma omp simd
        for (int64_t c = 0; c < g.c; ++c) {
          const double d = dyr[c];
          acc_dy[c] += d;
          acc_xmu[c] += d * (static_cast<double>(xr[c]) - mean[c]);
        }
      }
      return;
    }
    for_each_run(g, part, parts, [&](int64_t c, int64_t begin, int64_t end) {
      const double m = mean[c];
      double s = 0.0, sx = 0.0;
#pragma omp simd reduction(+ : s, sx)
      for (int64_t i = begin; i < end; ++i) {
        const double d = dy[i];
        s += d;
        sx += d * (static_cast<double>(x[i]) - m);
      }
      acc_dy[c] += s;
      acc_xmu[c] += sx;
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
    const double is = invstd[c];
    if (sum_dy != nullptr) {
      mean_dy[c] = static_cast<float>(sum_dy[c] / static_cast<double>(count));
      k[c] = static_cast<float>(is * is * sum_dy_xmu[c] / static_cast<double>(count));
    }
    scale[c] = static_cast<float>(is * (weight ? weight[c] : 1.0f));
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
          dxr[c] = (dyr[c] - md[c] - (xr[c] - mean[c]) * kk[c]) * sc[c];
      }
    } else {
      for_each_run(g, part, parts, [&](int64_t c, int64_t begin, int64_t end) {
        const float m = mean[c], md = mean_dy[c], kc = k[c], sc = scale[c];
#pragma omp simd
        for (int64_t i = begin; i < end; ++i) dx[i] = (dy[i] - md - (x[i] - m) * kc) * sc;
      });
    }
  }
}

}  // namespace syncbn::norm
