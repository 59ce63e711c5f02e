// GroupNorm / InstanceNorm / LayerNorm stages on the CPU (math in norm/kernels.h).
// Statistics per (n, g) in float64; parallel over batch items and groups.
#include <cmath>
#include <vector>

#include "norm/kernels.h"
#include "norm/norm_math.h"
#include "norm/parallel.h"

namespace syncbn::norm {
namespace {

// Per (n, c) float64 sums over the spatial positions: a[n·C + c] = Σ_s fa(s), b likewise.
// fa/fb(x_index) map a flat element index to the two summands.
template <typename Summands>
void per_instance_channel_sums(const BnGeometry& g, double* a, double* b, Summands&& summands) {
  const int64_t C = g.c, S = g.s;
  const int parts = thread_count_for(g.n * C * S);
  if (!g.channels_last) {
#pragma omp parallel for num_threads(parts) schedule(static)
    for (int64_t plane = 0; plane < g.n * C; ++plane) {
      double sa = 0.0, sb = 0.0;
      const int64_t base = plane * S;
      const double m = summands.center(plane / C, plane % C);
#pragma omp simd reduction(+ : sa, sb)
      for (int64_t s = 0; s < S; ++s) {
        double va, vb;
        summands(base + s, m, va, vb);
        sa += va;
        sb += vb;
      }
      a[plane] = sa;
      b[plane] = sb;
    }
    return;
  }
#pragma omp parallel for num_threads(parts) schedule(static)
  for (int64_t n = 0; n < g.n; ++n) {
    double* an = a + n * C;
    double* bn = b + n * C;
    std::vector<double> center(C);
    for (int64_t c = 0; c < C; ++c) {
      an[c] = bn[c] = 0.0;
      center[c] = summands.center(n, c);
    }
    for (int64_t s = 0; s < S; ++s) {
      const int64_t base = (n * S + s) * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        double va, vb;
        summands(base + c, center[c], va, vb);
        an[c] += va;
        bn[c] += vb;
      }
    }
  }
}

struct XSums {  // x and x²
  const float* x;
  double center(int64_t, int64_t) const { return 0.0; }
  void operator()(int64_t i, double, double& a, double& b) const {
    const double v = x[i];
    a = v;
    b = v * v;
  }
};

struct GradSums {  // dy and dy·(x − mean_ng)
  const float* dy;
  const float* x;
  const float* mean;
  int64_t channels_per_group, groups;
  double center(int64_t n, int64_t c) const { return mean[n * groups + c / channels_per_group]; }
  void operator()(int64_t i, double m, double& a, double& b) const {
    const double d = dy[i];
    a = d;
    b = d * (static_cast<double>(x[i]) - m);
  }
};

// Visits every element with its (n, c): body(n, c, begin, end) over contiguous runs of one
// channel (contiguous layout) or body(n, -1, row_begin, ...) per row (channels-last).
template <typename Plane, typename Row>
void for_each_element(const BnGeometry& g, Plane&& plane_body, Row&& row_body) {
  const int parts = thread_count_for(g.n * g.c * g.s);
  if (!g.channels_last) {
#pragma omp parallel for num_threads(parts) schedule(static)
    for (int64_t plane = 0; plane < g.n * g.c; ++plane)
      plane_body(plane / g.c, plane % g.c, plane * g.s, (plane + 1) * g.s);
  } else {
#pragma omp parallel for num_threads(parts) schedule(static)
    for (int64_t row = 0; row < g.n * g.s; ++row) row_body(row / g.s, row * g.c);
  }
}

}  // namespace

void gn_stats(const float* x, const BnGeometry& g, int64_t groups, double eps, float* mean,
              float* invstd, double* var) {
  const int64_t C = g.c, cpg = C / groups;
  std::vector<double> sum(g.n * C), sumsq(g.n * C);
  per_instance_channel_sums(g, sum.data(), sumsq.data(), XSums{x});
  const double inv_d = 1.0 / static_cast<double>(cpg * g.s);
  for (int64_t n = 0; n < g.n; ++n) {
    for (int64_t grp = 0; grp < groups; ++grp) {
      double s = 0.0, ss = 0.0;
      for (int64_t c = grp * cpg; c < (grp + 1) * cpg; ++c) {
        s += sum[n * C + c];
        ss += sumsq[n * C + c];
      }
      double m, v;
      math::bn_mean_var(s, ss, inv_d, m, v);
      mean[n * groups + grp] = static_cast<float>(m);
      invstd[n * groups + grp] = math::bn_invstd(v, eps);
      if (var) var[n * groups + grp] = v;
    }
  }
}

void gn_elemt(const float* x, const BnGeometry& g, int64_t groups, const float* mean,
              const float* invstd, const float* weight, const float* bias, float* y) {
  const int64_t C = g.c, cpg = C / groups;
  // Per (n, c): y = (x − m)·a + b with a = invstd_ng·γ_c, b = β_c.
  std::vector<float> m(g.n * C), a(g.n * C), b(g.n * C);
  for (int64_t n = 0; n < g.n; ++n)
    for (int64_t c = 0; c < C; ++c) {
      const int64_t ng = n * groups + c / cpg;
      m[n * C + c] = mean[ng];
      a[n * C + c] = invstd[ng] * (weight ? weight[c] : 1.0f);
      b[n * C + c] = bias ? bias[c] : 0.0f;
    }
  for_each_element(
      g,
      [&](int64_t n, int64_t c, int64_t begin, int64_t end) {
        const float mc = m[n * C + c], ac = a[n * C + c], bc = b[n * C + c];
#pragma omp simd
        for (int64_t i = begin; i < end; ++i) y[i] = (x[i] - mc) * ac + bc;
      },
      [&](int64_t n, int64_t base) {
        const float *mn = &m[n * C], *an = &a[n * C], *bn = &b[n * C];
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) y[base + c] = (x[base + c] - mn[c]) * an[c] + bn[c];
      });
}

void gn_backward(const float* dy, const float* x, const BnGeometry& g, int64_t groups,
                 const float* mean, const float* invstd, const float* weight, float* dx,
                 float* dweight, float* dbias) {
  const int64_t C = g.c, cpg = C / groups;
  const double D = static_cast<double>(cpg * g.s);
  // db[n,c] = Σ_s dy, dsm[n,c] = Σ_s dy·(x − mean_ng)
  std::vector<double> db(g.n * C), dsm(g.n * C);
  per_instance_channel_sums(g, db.data(), dsm.data(), GradSums{dy, x, mean, cpg, groups});

  // dx = p·dy + q·(x − mean) + r per (n, c), from the group sums A = Σ γ·db, B = Σ γ·dsm:
  //   p = σ·γ_c,  q = −σ³·B/D,  r = −σ·A/D.
  std::vector<float> m(g.n * C), p(g.n * C), q(g.n * C), r(g.n * C);
  for (int64_t n = 0; n < g.n; ++n)
    for (int64_t grp = 0; grp < groups; ++grp) {
      const int64_t ng = n * groups + grp;
      double A = 0.0, B = 0.0;
      for (int64_t c = grp * cpg; c < (grp + 1) * cpg; ++c) {
        const double w = weight ? weight[c] : 1.0;
        A += w * db[n * C + c];
        B += w * dsm[n * C + c];
      }
      const double sigma = invstd[ng];
      for (int64_t c = grp * cpg; c < (grp + 1) * cpg; ++c) {
        const double w = weight ? weight[c] : 1.0;
        const math::GnBackwardCoef coef = math::gn_backward_coef(sigma, w, A, B, D);
        m[n * C + c] = mean[ng];
        p[n * C + c] = coef.p, q[n * C + c] = coef.q, r[n * C + c] = coef.r;
      }
    }
  for_each_element(
      g,
      [&](int64_t n, int64_t c, int64_t begin, int64_t end) {
        const int64_t i0 = n * C + c;
        const float mc = m[i0], pc = p[i0], qc = q[i0], rc = r[i0];
#pragma omp simd
        for (int64_t i = begin; i < end; ++i) dx[i] = pc * dy[i] + qc * (x[i] - mc) + rc;
      },
      [&](int64_t n, int64_t base) {
        const float *mn = &m[n * C], *pn = &p[n * C], *qn = &q[n * C], *rn = &r[n * C];
#pragma omp simd
        for (int64_t c = 0; c < C; ++c)
          dx[base + c] = pn[c] * dy[base + c] + qn[c] * (x[base + c] - mn[c]) + rn[c];
      });

  // dγ_c = Σ_n σ_ng·dsm[n,c], dβ_c = Σ_n db[n,c]; summed over n in order.
  for (int64_t c = 0; c < C; ++c) {
    double gw = 0.0, gb = 0.0;
    for (int64_t n = 0; n < g.n; ++n) {
      gw += static_cast<double>(invstd[n * groups + c / cpg]) * dsm[n * C + c];
      gb += db[n * C + c];
    }
    if (dweight) dweight[c] = static_cast<float>(gw);
    if (dbias) dbias[c] = static_cast<float>(gb);
  }
}

void ln_forward(const float* x, int64_t rows, int64_t d, double eps, const float* weight,
                const float* bias, float* y, float* mean, float* invstd) {
  const int parts = thread_count_for(rows * d);
#pragma omp parallel for num_threads(parts) schedule(static)
  for (int64_t row = 0; row < rows; ++row) {
    const float* xr = x + row * d;
    double s = 0.0, ss = 0.0;
#pragma omp simd reduction(+ : s, ss)
    for (int64_t i = 0; i < d; ++i) {
      const double v = xr[i];
      s += v;
      ss += v * v;
    }
    const double m = s / static_cast<double>(d);
    const double var = std::max(0.0, ss / static_cast<double>(d) - m * m);
    const float mf = static_cast<float>(m);
    const float sf = static_cast<float>(1.0 / std::sqrt(var + eps));
    mean[row] = mf;
    invstd[row] = sf;
    float* yr = y + row * d;
    if (weight) {
#pragma omp simd
      for (int64_t i = 0; i < d; ++i) yr[i] = (xr[i] - mf) * sf * weight[i] + (bias ? bias[i] : 0);
    } else {
#pragma omp simd
      for (int64_t i = 0; i < d; ++i) yr[i] = (xr[i] - mf) * sf + (bias ? bias[i] : 0);
    }
  }
}

void ln_backward(const float* dy, const float* x, int64_t rows, int64_t d, const float* mean,
                 const float* invstd, const float* weight, float* dx, float* dweight,
                 float* dbias) {
  const int parts = thread_count_for(rows * d);
  const bool want_params = dweight != nullptr || dbias != nullptr;
  std::vector<double> partial(want_params ? static_cast<size_t>(parts) * 2 * d : 0, 0.0);
#pragma omp parallel num_threads(parts)
  {
    const int part = omp_get_thread_num();
    const Range r = slice(rows, part, parts);
    double* acc_w = want_params ? partial.data() + static_cast<size_t>(part) * 2 * d : nullptr;
    double* acc_b = want_params ? acc_w + d : nullptr;
    for (int64_t row = r.begin; row < r.end; ++row) {
      const float* xr = x + row * d;
      const float* dyr = dy + row * d;
      const double m = mean[row], sigma = invstd[row];
      double A = 0.0, B = 0.0;  // Σ γ·dy, Σ γ·dy·(x − m)
#pragma omp simd reduction(+ : A, B)
      for (int64_t i = 0; i < d; ++i) {
        const double g = static_cast<double>(dyr[i]) * (weight ? weight[i] : 1.0f);
        A += g;
        B += g * (static_cast<double>(xr[i]) - m);
      }
      const float p = static_cast<float>(sigma);
      const float q = static_cast<float>(-sigma * sigma * sigma * B / static_cast<double>(d));
      const float rr = static_cast<float>(-sigma * A / static_cast<double>(d));
      const float mf = mean[row];
      float* dxr = dx + row * d;
#pragma omp simd
      for (int64_t i = 0; i < d; ++i)
        dxr[i] = p * dyr[i] * (weight ? weight[i] : 1.0f) + q * (xr[i] - mf) + rr;
      if (want_params) {
#pragma omp simd
        for (int64_t i = 0; i < d; ++i) {
          const double dv = dyr[i];
          acc_w[i] += dv * (static_cast<double>(xr[i]) - m) * sigma;
          acc_b[i] += dv;
        }
      }
    }
  }
  if (!want_params) return;
  for (int64_t i = 0; i < d; ++i) {
    double w = 0.0, b = 0.0;
    for (int p = 0; p < parts; ++p) {
      w += partial[static_cast<size_t>(p) * 2 * d + i];
      b += partial[static_cast<size_t>(p) * 2 * d + d + i];
    }
    if (dweight) dweight[i] = static_cast<float>(w);
    if (dbias) dbias[i] = static_cast<float>(b);
  }
}

}  // namespace syncbn::norm
