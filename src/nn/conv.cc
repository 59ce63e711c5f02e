// Conv2d on oneDNN's convolution primitives, or im2col + oneDNN's sgemm; Linear on sgemm.
//
// Convolution primitives (inputs of kMinPrimitiveChannels = 3 channels or more): for each input
// shape a Conv2d keeps a Plan (oneDNN 2.6's forward-training, backward-data and backward-weights
// primitives, with format `any`, so that oneDNN picks its blocked layouts: nChw16c activations,
// 16x16-blocked weights for 16-64 channels) and reorders our NCHW/OIHW tensors into and out of
// them, as PyTorch 1.13's CPU convolution does through ideep. Unlike PyTorch, the forward's
// blocked input stays in the plan for the backward's dW (no second reorder of x), dy is reordered
// once for both backward primitives, and dW is accumulated into grad_weight by the reorder out
// of the blocked layout (a sum post-op). The bias gradient is ours (float64 sum, fixed order).
// The primitives beat im2col + sgemm on resnet20's convs because the directly-JITed 3x3 kernels
// avoid im2col's k·k copy of the input and col2im's scatter (bench/conv_compare.sh; numbers in the
// README). A one-channel input stays on im2col: oneDNN pads its channel to a block of 16 in the
// backward-data primitive and its reorder, which measured slower than im2col there.
// oneDNN's convolution kernels are run-to-run deterministic for a fixed shape and thread count
// (no atomics; backward-weights reduces per-thread partial sums in a fixed order).
//
// im2col path, for a chunk of B samples with P = Ho·Wo output positions and R = C_in·k·k:
//
//   im2col   col (R, B·P):  col[(ci·k + kh)·k + kw][b·P + oh·Wo + ow]
//                              = x_b[ci][oh·s − pad + kh][ow·s − pad + kw]   (0 outside x)
//   forward  Y (C_out, B·P) = W (C_out, R) · col;   y_b[co][p] = Y[co][b·P + p] + bias[co]
//   dW      += dY · colᵀ          (C_out, R), accumulated into the gradient (beta = 1)
//   dcol     = Wᵀ · dY            (R, B·P);   dx = col2im(dcol), the adjoint of im2col
//   dbias   += Σ_{b,p} dY
//
// B is the largest power of two of samples whose col fits kColBudget floats (1 MiB, about what
// L2 holds): small feature maps (7x7 at the end of a CNN) still make GEMMs with hundreds of
// columns, large ones go one sample at a time (a larger budget measured slower). A power of
// two, so that a batch of 32 on one rank and 4 x 8 on four ranks run GEMMs of the same shapes on
// the same samples, which keeps their float32 rounding closer (the 30-step equivalence test).
// Forward and backward use the same chunks.
// A training forward writes every chunk's col into a buffer the layer keeps (k·k times the
// input's size, reused from step to step) and the backward's dW GEMM reads it from there instead
// of running im2col again (README, "Training speed against PyTorch", has its share). Above
// kKeptColLimit, and after an eval-mode forward, only the input is kept and the backward
// recomputes col chunk by chunk.
//
// GEMM library: oneDNN's dnnl_sgemm (libdnnl 2.6, the one PyTorch 1.13 is built with), not
// OpenBLAS: bench/gemm_bench compares the two on small_cnn's GEMMs (numbers in the README,
// "Training speed against PyTorch").
//
// im2col, col2im and the bias/scatter passes split their loops statically over OpenMP threads,
// each thread owning whole output rows or input channels, so results do not depend on
// scheduling; oneDNN's GEMMs run on the same OpenMP threads (omp_get_max_threads()) and are
// bitwise reproducible for a given thread count.
#include <dnnl.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <dnnl.hpp>
#include <unordered_map>

#include "core/error.h"
#include "nn/layer_util.h"
#include "nn/layers.h"
#include "norm/parallel.h"

namespace syncbn::nn {
namespace {

using norm::thread_count_for;

// Floats of im2col buffer per chunk (1 MiB).
constexpr int64_t kColBudget = int64_t{1} << 18;
// Largest col (floats, 256 MiB) a training forward keeps for the backward.
constexpr int64_t kKeptColLimit = int64_t{1} << 26;

// C (m, n) = op(A) · op(B) + beta · C, row-major.
void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
           const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  const dnnl_status_t status = dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', m, n, k, 1.0f,
                                          a, lda, b, ldb, beta, c, ldc);
  SYNCBN_REQUIRE(status == dnnl_success, "oneDNN sgemm failed with status ", status, " (M ", m,
                 ", N ", n, ", K ", k, ")");
}

struct ConvShape {
  int64_t c, h, w;  // input plane
  int64_t k, stride, pad;
  int64_t ho, wo;
  int64_t rows() const { return c * k * k; }
  int64_t positions() const { return ho * wo; }
  // The output columns [lo, hi) whose input column ow·stride − pad + kw lies inside [0, w).
  std::pair<int64_t, int64_t> valid_columns(int64_t kw) const {
    const int64_t first = pad - kw;  // ow·stride >= first
    const int64_t lo = first <= 0 ? 0 : (first + stride - 1) / stride;
    const int64_t last = w - 1 + pad - kw;  // ow·stride <= last
    const int64_t hi = last < 0 ? 0 : std::min(wo, last / stride + 1);
    return {std::min(lo, hi), hi};
  }
};

// Row (kh, kw) of a stride-1 "same" convolution (ho == h, wo == w) is the input plane shifted by
// (dh, dw) = (kh − pad, kw − pad) with zeros shifted in. In the flattened plane that is
// out[j] = plane[j + shift], shift = dh·w + dw, for j in [copy_lo, copy_hi); every other j is
// outside the plane, and so are columns [zero_lo, zero_hi) of rows [row_lo, row_hi), which the
// flat copy fills from the neighbouring row. Long vector loops instead of ho row copies of a few
// dozen floats.
struct SameShift {
  int64_t shift, copy_lo, copy_hi;
  int64_t row_lo, row_hi, zero_lo, zero_hi;
};

SameShift same_shift(const ConvShape& s, int64_t kh, int64_t kw) {
  const int64_t h = s.h, w = s.w, dh = kh - s.pad, dw = kw - s.pad;
  SameShift t{};
  t.shift = dh * w + dw;
  t.row_lo = std::clamp<int64_t>(-dh, 0, h);
  t.row_hi = std::clamp<int64_t>(h - dh, t.row_lo, h);
  t.copy_lo = std::clamp<int64_t>(-t.shift, t.row_lo * w, t.row_hi * w);
  t.copy_hi = std::clamp<int64_t>(h * w - t.shift, t.copy_lo, t.row_hi * w);
  t.zero_lo = dw > 0 ? w - dw : 0;
  t.zero_hi = dw > 0 ? w : std::min(-dw, w);
  return t;
}

bool is_same_stride1(const ConvShape& s) { return s.stride == 1 && s.ho == s.h && s.wo == s.w; }

void im2col_row_same(const float* plane, const ConvShape& s, int64_t kh, int64_t kw,
                     float* __restrict out) {
  const SameShift t = same_shift(s, kh, kw);
  for (int64_t j = 0; j < t.copy_lo; ++j) out[j] = 0.0f;
  for (int64_t j = t.copy_lo; j < t.copy_hi; ++j) out[j] = plane[j + t.shift];
  for (int64_t j = t.copy_hi; j < s.h * s.w; ++j) out[j] = 0.0f;
  for (int64_t row = t.row_lo; row < t.row_hi; ++row) {
    for (int64_t col = t.zero_lo; col < t.zero_hi; ++col) out[row * s.w + col] = 0.0f;
  }
}

// Row r = (ci, kh, kw) of one sample's col, written at out[0, P).
void im2col_row(const float* x, const ConvShape& s, int64_t r, float* __restrict out) {
  const int64_t ci = r / (s.k * s.k), kh = r / s.k % s.k, kw = r % s.k;
  const float* plane = x + ci * s.h * s.w;
  if (is_same_stride1(s)) {
    im2col_row_same(plane, s, kh, kw, out);
    return;
  }
  const auto [lo, hi] = s.valid_columns(kw);
  for (int64_t oh = 0; oh < s.ho; ++oh) {
    float* o = out + oh * s.wo;
    const int64_t ih = oh * s.stride - s.pad + kh;
    if (ih < 0 || ih >= s.h) {
      for (int64_t ow = 0; ow < s.wo; ++ow) o[ow] = 0.0f;
      continue;
    }
    // Rows are a few dozen floats: plain loops, which the compiler vectorizes inline, beat
    // calls to memcpy/memset here.
    for (int64_t ow = 0; ow < lo; ++ow) o[ow] = 0.0f;
    const float* __restrict in = plane + ih * s.w + (lo * s.stride - s.pad + kw);
    if (s.stride == 1) {
      for (int64_t ow = lo; ow < hi; ++ow) o[ow] = in[ow - lo];
    } else {
      for (int64_t ow = lo; ow < hi; ++ow) o[ow] = in[(ow - lo) * s.stride];
    }
    for (int64_t ow = hi; ow < s.wo; ++ow) o[ow] = 0.0f;
  }
}

// The adjoint of im2col for input channel ci of one sample: dx_plane (h, w) += the k·k rows of
// dcol that read it. col row r starts at dcol + r·ld.
void col2im_channel(float* dcol, int64_t ld, const ConvShape& s, int64_t ci, float* dx_plane) {
  if (is_same_stride1(s)) {
    // The adjoint of im2col_row_same: zero the entries of each dcol row that the flat copy took
    // from a neighbouring row (dcol is scratch), then add the row to the plane shifted back in
    // one long loop; the added zeros leave dx unchanged.
    for (int64_t kh = 0; kh < s.k; ++kh) {
      for (int64_t kw = 0; kw < s.k; ++kw) {
        float* __restrict g = dcol + ((ci * s.k + kh) * s.k + kw) * ld;
        const SameShift t = same_shift(s, kh, kw);
        for (int64_t row = t.row_lo; row < t.row_hi; ++row) {
          for (int64_t col = t.zero_lo; col < t.zero_hi; ++col) g[row * s.w + col] = 0.0f;
        }
        for (int64_t j = t.copy_lo; j < t.copy_hi; ++j) dx_plane[j + t.shift] += g[j];
      }
    }
    return;
  }
  for (int64_t kh = 0; kh < s.k; ++kh) {
    for (int64_t kw = 0; kw < s.k; ++kw) {
      const float* row = dcol + ((ci * s.k + kh) * s.k + kw) * ld;
      const auto [lo, hi] = s.valid_columns(kw);
      for (int64_t oh = 0; oh < s.ho; ++oh) {
        const int64_t ih = oh * s.stride - s.pad + kh;
        if (ih < 0 || ih >= s.h) continue;
        float* __restrict d = dx_plane + ih * s.w + (lo * s.stride - s.pad + kw);
        const float* __restrict g = row + oh * s.wo;
        if (s.stride == 1) {
          for (int64_t ow = lo; ow < hi; ++ow) d[ow - lo] += g[ow];
        } else {
          for (int64_t ow = lo; ow < hi; ++ow) d[(ow - lo) * s.stride] += g[ow];
        }
      }
    }
  }
}

// col (R, count·P) for samples [0, count) of x (each c·h·w floats).
void im2col_chunk(const float* x, const ConvShape& s, int64_t count, float* col) {
  const int64_t rows = s.rows(), P = s.positions(), ld = count * P;
  const int64_t sample = s.c * s.h * s.w;
  const int64_t items = count * rows;
#pragma omp parallel for schedule(static) num_threads(thread_count_for(items* P))
  for (int64_t i = 0; i < items; ++i) {
    const int64_t b = i / rows, r = i % rows;
    im2col_row(x + b * sample, s, r, col + r * ld + b * P);
  }
}

// dx (count samples) += col2im(dcol (R, count·P)).
void col2im_chunk(float* dcol, const ConvShape& s, int64_t count, float* dx) {
  const int64_t P = s.positions(), ld = count * P;
  const int64_t items = count * s.c;
#pragma omp parallel for schedule(static) num_threads(thread_count_for(items* s.k* s.k* P))
  for (int64_t i = 0; i < items; ++i) {
    const int64_t b = i / s.c, ci = i % s.c;
    col2im_channel(dcol + b * P, ld, s, ci, dx + (b * s.c + ci) * s.h * s.w);
  }
}

// The shape of a convolution of input x_shape (N, c, H, W).
ConvShape conv_shape(const std::vector<int64_t>& x_shape, int64_t c, int64_t k, int64_t stride,
                     int64_t pad) {
  const int64_t H = x_shape[2], W = x_shape[3];
  return {c, H, W, k, stride, pad, (H + 2 * pad - k) / stride + 1, (W + 2 * pad - k) / stride + 1};
}

int64_t chunk_samples(const ConvShape& s, int64_t n) {
  const int64_t fit = std::max<int64_t>(kColBudget / (s.rows() * s.positions()), 1);
  return std::min(static_cast<int64_t>(std::bit_floor(static_cast<uint64_t>(fit))),
                  std::max<int64_t>(n, 1));
}

std::string conv_expected_input(int64_t c) { return str_cat("(N, ", c, ", H, W)"); }

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

dnnl::stream& cpu_stream() {
  static dnnl::stream stream(cpu_engine());
  return stream;
}

// db[co] += Σ_{n,p} dy[n][co][p] for dy (N, C_out, P), summed in float64 in a fixed order.
void add_bias_grad(const float* dy, int64_t N, int64_t Cout, int64_t P, float* db) {
#pragma omp parallel for schedule(static) num_threads(thread_count_for(N* Cout* P))
  for (int64_t co = 0; co < Cout; ++co) {
    double sum = 0.0;
    for (int64_t n = 0; n < N; ++n) {
      const float* g = dy + (n * Cout + co) * P;
      for (int64_t p = 0; p < P; ++p) sum += g[p];
    }
    db[co] += static_cast<float>(sum);
  }
}

// Input channels from which the primitives beat im2col + sgemm (see the top of the file).
constexpr int64_t kMinPrimitiveChannels = 3;

// Input shapes a Conv2d keeps oneDNN plans for (training and eval batch sizes, a last partial
// batch of each).
constexpr size_t kPlansKept = 4;

// Whether a convolution runs on oneDNN's convolution primitives (every shape of resnet20 and
// small_cnn but a one-channel input) rather than im2col + sgemm; see the top of the file.
bool use_conv_primitive(const ConvShape& s) { return s.c >= kMinPrimitiveChannels; }

dnnl::memory::dims dims_of(const std::vector<int64_t>& shape) {
  return dnnl::memory::dims(shape.begin(), shape.end());
}

// A reorder from `from` to `to`, or an empty primitive when the layouts agree.
dnnl::reorder reorder_between(const dnnl::memory::desc& from, const dnnl::memory::desc& to,
                              const dnnl::primitive_attr& attr = dnnl::primitive_attr()) {
  return dnnl::reorder(dnnl::reorder::primitive_desc(cpu_engine(), from, cpu_engine(), to, attr));
}

}  // namespace

// oneDNN's convolution for one input shape: forward-training, backward-data and
// backward-weights primitives, each in the layouts oneDNN picks for it (format any: blocked
// nChw16c-style for these channel counts), the reorders between those and our NCHW / OIHW
// tensors, and the blocked buffers. The forward's blocked input stays in src_ until the backward,
// which reads it for dW; dy is reordered once for both backward primitives when they agree.
struct Conv2d::Plan {
  std::vector<int64_t> in_shape;
  dnnl::memory::desc x_md, y_md, w_md, b_md;  // ours: NCHW, NCHW, OIHW, (C_out)
  dnnl::convolution_forward::primitive_desc fwd_pd;
  dnnl::convolution_forward fwd;
  std::optional<dnnl::reorder> x_to_src, w_to_fwd, dst_to_y;
  // Blocked buffers (empty where ours is the layout): the input, kept for the backward, and the
  // weights. Blocked outputs and gradients live only within a call: scratch_memory.
  dnnl::memory src, wei_fwd;
  bool have_backward = false;
  dnnl::convolution_backward_data::primitive_desc bwd_data_pd;
  dnnl::convolution_backward_data bwd_data;
  dnnl::convolution_backward_weights::primitive_desc bwd_w_pd;
  dnnl::convolution_backward_weights bwd_w;
  std::optional<dnnl::reorder> dy_to_ddst, dy_to_ddst_w, w_to_bwd, dsrc_to_dx, x_to_src_w;
  std::optional<dnnl::reorder> dwei_add;  // diff weights → grad_weight, with a sum post-op
  dnnl::memory wei_bwd, dwei;

  static std::optional<dnnl::reorder> maybe_reorder(const dnnl::memory::desc& from,
                                                    const dnnl::memory::desc& to) {
    if (from == to) return std::nullopt;
    return reorder_between(from, to);
  }
  static std::optional<dnnl::reorder> maybe_reorder(const dnnl::memory::desc& from,
                                                    const dnnl::memory::desc& to,
                                                    dnnl::memory& buffer) {
    if (from == to) return std::nullopt;
    buffer = dnnl::memory(to, cpu_engine());
    return reorder_between(from, to);
  }

  Plan(const std::vector<int64_t>& shape, const ConvShape& s, int64_t c_out, bool bias)
      : in_shape(shape) {
    using dnnl::memory;
    const auto f32 = memory::data_type::f32;
    const memory::dims y_dims = {shape[0], c_out, s.ho, s.wo};
    const memory::dims w_dims = {c_out, s.c, s.k, s.k};
    x_md = memory::desc(dims_of(shape), f32, memory::format_tag::nchw);
    y_md = memory::desc(y_dims, f32, memory::format_tag::nchw);
    w_md = memory::desc(w_dims, f32, memory::format_tag::oihw);
    if (bias) b_md = memory::desc({c_out}, f32, memory::format_tag::x);
    const memory::desc x_any(dims_of(shape), f32, memory::format_tag::any);
    const memory::desc y_any(y_dims, f32, memory::format_tag::any);
    const memory::desc w_any(w_dims, f32, memory::format_tag::any);
    const memory::dims strides = {s.stride, s.stride}, pad = {s.pad, s.pad};
    const dnnl::convolution_forward::desc fwd_desc(dnnl::prop_kind::forward_training,
                                                   dnnl::algorithm::convolution_direct, x_any,
                                                   w_any, b_md, y_any, strides, pad, pad);
    fwd_pd = dnnl::convolution_forward::primitive_desc(fwd_desc, cpu_engine());
    fwd = dnnl::convolution_forward(fwd_pd);
    x_to_src = maybe_reorder(x_md, fwd_pd.src_desc(), src);
    w_to_fwd = maybe_reorder(w_md, fwd_pd.weights_desc(), wei_fwd);
    dst_to_y = maybe_reorder(fwd_pd.dst_desc(), y_md);
  }

  void prepare_backward(const ConvShape& s) {
    if (have_backward) return;
    using dnnl::memory;
    const auto f32 = memory::data_type::f32;
    const memory::desc x_any(x_md.dims(), f32, memory::format_tag::any);
    const memory::desc y_any(y_md.dims(), f32, memory::format_tag::any);
    const memory::desc w_any(w_md.dims(), f32, memory::format_tag::any);
    const memory::dims strides = {s.stride, s.stride}, pad = {s.pad, s.pad};
    const dnnl::convolution_backward_data::desc data_desc(dnnl::algorithm::convolution_direct,
                                                          x_any, w_any, y_any, strides, pad, pad);
    bwd_data_pd = dnnl::convolution_backward_data::primitive_desc(data_desc, cpu_engine(), fwd_pd);
    bwd_data = dnnl::convolution_backward_data(bwd_data_pd);
    const dnnl::convolution_backward_weights::desc weights_desc(dnnl::algorithm::convolution_direct,
                                                                x_any, w_any, memory::desc(), y_any,
                                                                strides, pad, pad);
    bwd_w_pd =
        dnnl::convolution_backward_weights::primitive_desc(weights_desc, cpu_engine(), fwd_pd);
    bwd_w = dnnl::convolution_backward_weights(bwd_w_pd);
    dy_to_ddst = maybe_reorder(y_md, bwd_data_pd.diff_dst_desc());
    if (bwd_w_pd.diff_dst_desc() != bwd_data_pd.diff_dst_desc())
      dy_to_ddst_w = maybe_reorder(y_md, bwd_w_pd.diff_dst_desc());
    w_to_bwd = maybe_reorder(w_md, bwd_data_pd.weights_desc(), wei_bwd);
    dsrc_to_dx = maybe_reorder(bwd_data_pd.diff_src_desc(), x_md);
    x_to_src_w = maybe_reorder(fwd_pd.src_desc(), bwd_w_pd.src_desc());
    dwei = memory(bwd_w_pd.diff_weights_desc(), cpu_engine());
    dnnl::post_ops add;
    add.append_sum(1.0f);
    dnnl::primitive_attr attr;
    attr.set_post_ops(add);
    dwei_add = reorder_between(bwd_w_pd.diff_weights_desc(), w_md, attr);
    have_backward = true;
  }
};

namespace {

// Runs `r` from `from` into `to`.
void run_reorder(const dnnl::reorder& r, const dnnl::memory& from, const dnnl::memory& to) {
  r.execute(cpu_stream(), {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}});
}

dnnl::memory user_memory(const dnnl::memory::desc& md, const float* data) {
  return dnnl::memory(md, cpu_engine(), const_cast<float*>(data));
}

// The blocked buffers that live only within one forward or backward call (the forward's output;
// the backward's dy, dx and, where backward-weights wants another layout, x) in scratch shared by
// all Conv2d layers of the thread and grown to the largest: one per layer would add three
// activation-sized buffers per conv to a network's memory.
enum ScratchSlot { kDst = 0, kDiffDst, kDiffDstWeights, kDiffSrc, kSrcWeights, kScratchSlots };

dnnl::memory scratch_memory(const dnnl::memory::desc& md, ScratchSlot slot) {
  thread_local Tensor buffers[kScratchSlots];
  Tensor& buffer = buffers[slot];
  const auto floats = static_cast<int64_t>((md.get_size() + sizeof(float) - 1) / sizeof(float));
  if (buffer.numel() < floats) buffer = Tensor::empty({floats});
  return dnnl::memory(md, cpu_engine(), buffer.data());
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Conv2d

Conv2d::Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel_size, int64_t stride,
               int64_t padding, bool bias, Rng& rng)
    : in_channels_(in_channels),
      out_channels_(out_channels),
      kernel_(kernel_size),
      stride_(stride),
      padding_(padding),
      has_bias_(bias) {
  SYNCBN_REQUIRE(in_channels >= 1 && out_channels >= 1,
                 "Conv2d: in_channels and out_channels "
                 "must be >= 1, got ",
                 in_channels, " and ", out_channels);
  SYNCBN_REQUIRE(kernel_size >= 1 && stride >= 1 && padding >= 0,
                 "Conv2d: expected kernel_size >= 1, stride >= 1, padding >= 0, got kernel_size ",
                 kernel_size, ", stride ", stride, ", padding ", padding);
  weight_ = Tensor({out_channels, in_channels, kernel_size, kernel_size});
  grad_weight_ = Tensor(weight_.shape());
  // kaiming_uniform_(a=√5): gain √(2/(1+a²)) = √(1/3), bound = gain·√(3/fan_in) = 1/√fan_in.
  const double bound =
      1.0 / std::sqrt(static_cast<double>(in_channels * kernel_size * kernel_size));
  detail::fill_uniform(weight_, bound, rng);
  if (has_bias_) {
    bias_ = Tensor({out_channels});
    grad_bias_ = Tensor({out_channels});
    detail::fill_uniform(bias_, bound, rng);
  }
}

void Conv2d::collect_parameters(std::vector<ParamRef>& out) {
  out.push_back({"weight", &weight_, &grad_weight_});
  if (has_bias_) out.push_back({"bias", &bias_, &grad_bias_});
}

Tensor Conv2d::forward(const Tensor& x_in, bool training) {
  SYNCBN_REQUIRE(x_in.dim() == 4, "Conv2d: expected 4D input ", conv_expected_input(in_channels_),
                 ", got input of size ", shape_to_string(x_in.shape()));
  SYNCBN_REQUIRE(x_in.size(1) == in_channels_, "Conv2d: expected input with ", in_channels_,
                 " channels, got input of size ", shape_to_string(x_in.shape()));
  const int64_t N = x_in.size(0), H = x_in.size(2), W = x_in.size(3);
  SYNCBN_REQUIRE(H + 2 * padding_ >= kernel_ && W + 2 * padding_ >= kernel_,
                 "Conv2d: input of size ", shape_to_string(x_in.shape()), " padded by ", padding_,
                 " is smaller than the kernel (", kernel_, "x", kernel_,
                 "); expected H and W >= ", std::max<int64_t>(kernel_ - 2 * padding_, 1));
  const ConvShape s = conv_shape(x_in.shape(), in_channels_, kernel_, stride_, padding_);
  const int64_t rows = s.rows(), P = s.positions(), Cout = out_channels_;
  if (N > 0 && use_conv_primitive(s)) {
    std::shared_ptr<Plan> plan;
    for (const auto& p : plans_) {
      if (p->in_shape == x_in.shape()) plan = p;
    }
    if (!plan) {
      if (plans_.size() >= kPlansKept) plans_.erase(plans_.begin());
      plan = std::make_shared<Plan>(x_in.shape(), s, Cout, has_bias_);
      plans_.push_back(plan);
    }
    in_shape_ = x_in.shape();
    keep_col_ = false;
    const detail::Contiguous xc(x_in);
    const dnnl::memory x_mem = user_memory(plan->x_md, xc.get().data());
    dnnl::memory src = x_mem;
    if (plan->x_to_src) {
      run_reorder(*plan->x_to_src, x_mem, plan->src);
      src = plan->src;
      saved_x_ = Tensor();
    } else {
      // The primitive reads NCHW itself: the backward needs the input.
      saved_x_ = detail::contiguous_copy(xc.get());
    }
    dnnl::memory wei = user_memory(plan->w_md, weight_.data());
    if (plan->w_to_fwd) {
      run_reorder(*plan->w_to_fwd, wei, plan->wei_fwd);
      wei = plan->wei_fwd;
    }
    Tensor y = Tensor::empty({N, Cout, s.ho, s.wo});
    const dnnl::memory y_mem = user_memory(plan->y_md, y.data());
    const dnnl::memory dst = plan->dst_to_y ? scratch_memory(plan->fwd_pd.dst_desc(), kDst) : y_mem;
    std::unordered_map<int, dnnl::memory> args = {
        {DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, dst}};
    if (has_bias_) args.insert({DNNL_ARG_BIAS, user_memory(plan->b_md, bias_.data())});
    plan->fwd.execute(cpu_stream(), args);
    if (plan->dst_to_y) run_reorder(*plan->dst_to_y, dst, y_mem);
    saved_plan_ = plan;
    have_saved_ = true;
    return y;
  }
  saved_plan_ = nullptr;
  // A training forward keeps every chunk's col for the backward (see the top of the file);
  // otherwise the input is kept and the backward, if any, recomputes col.
  keep_col_ = training && rows * N * P <= kKeptColLimit;
  in_shape_ = x_in.shape();
  have_saved_ = true;
  const detail::Contiguous xc(x_in);
  if (keep_col_) {
    saved_x_ = Tensor();
    if (static_cast<int64_t>(kept_col_.size()) < rows * N * P)
      kept_col_.resize(static_cast<size_t>(rows * N * P));
  } else {
    saved_x_ = detail::contiguous_copy(xc.get());
  }
  const float* x = xc.get().data();
  Tensor y = Tensor::empty({N, out_channels_, s.ho, s.wo});
  if (N == 0) return y;

  const int64_t B = chunk_samples(s, N);
  Tensor chunk_col = keep_col_ ? Tensor() : Tensor::empty({rows * B * P});
  Tensor gathered = B > 1 ? Tensor::empty({Cout * B * P}) : Tensor();
  const float* bias = has_bias_ ? bias_.data() : nullptr;
  for (int64_t n0 = 0; n0 < N; n0 += B) {
    const int64_t count = std::min(B, N - n0), ld = count * P;
    float* col = keep_col_ ? kept_col_.data() + rows * n0 * P : chunk_col.data();
    im2col_chunk(x + n0 * s.c * H * W, s, count, col);
    float* y_chunk = y.data() + n0 * Cout * P;
    float* out = count == 1 ? y_chunk : gathered.data();
    sgemm(false, false, Cout, ld, rows, weight_.data(), rows, col, ld, 0.0f, out, ld);
    // Y (C_out, count·P) → y (count, C_out, P), plus bias; in place when count == 1.
    const int64_t items = count * Cout;
#pragma omp parallel for schedule(static) num_threads(thread_count_for(items* P))
    for (int64_t i = 0; i < items; ++i) {
      const int64_t b = i / Cout, co = i % Cout;
      const float* src = out + co * ld + b * P;
      float* dst = y_chunk + (b * Cout + co) * P;
      const float add = bias ? bias[co] : 0.0f;
      for (int64_t p = 0; p < P; ++p) dst[p] = src[p] + add;
    }
  }
  return y;
}

Tensor Conv2d::backward(const Tensor& dy_in) {
  detail::require_forward(have_saved_, kind());
  const ConvShape s = conv_shape(in_shape_, in_channels_, kernel_, stride_, padding_);
  const int64_t N = in_shape_[0], H = s.h, W = s.w;
  const int64_t rows = s.rows(), P = s.positions(), Cout = out_channels_;
  detail::require_grad_shape(dy_in, {N, Cout, s.ho, s.wo}, kind());
  const detail::Contiguous dy_c(dy_in);
  const float* dy = dy_c.get().data();
  if (N > 0 && saved_plan_) {
    Plan& plan = *saved_plan_;
    plan.prepare_backward(s);
    if (has_bias_) add_bias_grad(dy, N, Cout, P, grad_bias_.data());
    const dnnl::memory dy_mem = user_memory(plan.y_md, dy);
    dnnl::memory ddst = dy_mem;
    if (plan.dy_to_ddst) {
      ddst = scratch_memory(plan.bwd_data_pd.diff_dst_desc(), kDiffDst);
      run_reorder(*plan.dy_to_ddst, dy_mem, ddst);
    }
    dnnl::memory ddst_w = ddst;
    if (plan.dy_to_ddst_w) {
      ddst_w = scratch_memory(plan.bwd_w_pd.diff_dst_desc(), kDiffDstWeights);
      run_reorder(*plan.dy_to_ddst_w, dy_mem, ddst_w);
    }
    // dx = backward-data(dy, W)
    dnnl::memory wei = user_memory(plan.w_md, weight_.data());
    if (plan.w_to_bwd) {
      run_reorder(*plan.w_to_bwd, wei, plan.wei_bwd);
      wei = plan.wei_bwd;
    }
    Tensor dx = Tensor::empty(in_shape_);
    const dnnl::memory dx_mem = user_memory(plan.x_md, dx.data());
    const dnnl::memory dsrc =
        plan.dsrc_to_dx ? scratch_memory(plan.bwd_data_pd.diff_src_desc(), kDiffSrc) : dx_mem;
    plan.bwd_data.execute(
        cpu_stream(),
        {{DNNL_ARG_DIFF_DST, ddst}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DIFF_SRC, dsrc}});
    if (plan.dsrc_to_dx) run_reorder(*plan.dsrc_to_dx, dsrc, dx_mem);
    // grad_weight += backward-weights(x, dy)
    dnnl::memory src = plan.x_to_src ? plan.src : user_memory(plan.x_md, saved_x_.data());
    if (plan.x_to_src_w) {
      const dnnl::memory src_w = scratch_memory(plan.bwd_w_pd.src_desc(), kSrcWeights);
      run_reorder(*plan.x_to_src_w, src, src_w);
      src = src_w;
    }
    plan.bwd_w.execute(
        cpu_stream(),
        {{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_DST, ddst_w}, {DNNL_ARG_DIFF_WEIGHTS, plan.dwei}});
    run_reorder(*plan.dwei_add, plan.dwei, user_memory(plan.w_md, grad_weight_.data()));
    saved_x_ = Tensor();
    saved_plan_ = nullptr;
    have_saved_ = false;
    return dx;
  }
  Tensor dx(in_shape_);  // zeros: col2im accumulates
  if (N > 0) {
    if (has_bias_) add_bias_grad(dy, N, Cout, P, grad_bias_.data());
    const int64_t B = chunk_samples(s, N);
    // dcol of one chunk; without a kept col it first holds the recomputed col.
    Tensor chunk_col = Tensor::empty({rows * B * P});
    Tensor gathered = B > 1 ? Tensor::empty({Cout * B * P}) : Tensor();
    for (int64_t n0 = 0; n0 < N; n0 += B) {
      const int64_t count = std::min(B, N - n0), ld = count * P;
      const float* dy_chunk = dy + n0 * Cout * P;
      if (count > 1) {  // dy (count, C_out, P) → dY (C_out, count·P)
        const int64_t items = count * Cout;
#pragma omp parallel for schedule(static) num_threads(thread_count_for(items* P))
        for (int64_t i = 0; i < items; ++i) {
          const int64_t b = i / Cout, co = i % Cout;
          std::copy(dy_chunk + (b * Cout + co) * P, dy_chunk + (b * Cout + co + 1) * P,
                    gathered.data() + co * ld + b * P);
        }
        dy_chunk = gathered.data();
      }
      const float* col = chunk_col.data();
      if (keep_col_) {
        col = kept_col_.data() + rows * n0 * P;
      } else {
        im2col_chunk(saved_x_.data() + n0 * s.c * H * W, s, count, chunk_col.data());
      }
      // dW (C_out, R) += dY · colᵀ
      sgemm(false, true, Cout, rows, ld, dy_chunk, ld, col, ld, 1.0f, grad_weight_.data(), rows);
      // dcol (R, count·P) = Wᵀ · dY, then folded back onto dx.
      sgemm(true, false, rows, ld, Cout, weight_.data(), rows, dy_chunk, ld, 0.0f, chunk_col.data(),
            ld);
      col2im_chunk(chunk_col.data(), s, count, dx.data() + n0 * s.c * H * W);
    }
  }
  saved_x_ = Tensor();
  have_saved_ = false;
  return dx;
}

// ---------------------------------------------------------------------------------------------
// Linear: y (M, out) = x (M, in) · Wᵀ + b over the M = numel/in rows of x (*, in).

Linear::Linear(int64_t in_features, int64_t out_features, bool bias, Rng& rng)
    : in_features_(in_features), out_features_(out_features), has_bias_(bias) {
  SYNCBN_REQUIRE(in_features >= 1 && out_features >= 1,
                 "Linear: in_features and out_features must be >= 1, got ", in_features, " and ",
                 out_features);
  weight_ = Tensor({out_features, in_features});
  grad_weight_ = Tensor(weight_.shape());
  const double bound = 1.0 / std::sqrt(static_cast<double>(in_features));
  detail::fill_uniform(weight_, bound, rng);
  if (has_bias_) {
    bias_ = Tensor({out_features});
    grad_bias_ = Tensor({out_features});
    detail::fill_uniform(bias_, bound, rng);
  }
}

void Linear::collect_parameters(std::vector<ParamRef>& out) {
  out.push_back({"weight", &weight_, &grad_weight_});
  if (has_bias_) out.push_back({"bias", &bias_, &grad_bias_});
}

Tensor Linear::forward(const Tensor& x, bool /*training*/) {
  SYNCBN_REQUIRE(x.dim() >= 2 && x.size(x.dim() - 1) == in_features_,
                 "Linear: expected input of size (N, ", in_features_, ") (or (*, ", in_features_,
                 ")), got input of size ", shape_to_string(x.shape()));
  saved_x_ = detail::contiguous_copy(x);
  have_saved_ = true;
  std::vector<int64_t> out_shape = x.shape();
  out_shape.back() = out_features_;
  Tensor y = Tensor::empty(out_shape);
  const int64_t M = x.numel() / in_features_;
  if (M == 0) return y;
  sgemm(false, true, M, out_features_, in_features_, saved_x_.data(), in_features_, weight_.data(),
        in_features_, 0.0f, y.data(), out_features_);
  if (has_bias_) {
    const float* b = bias_.data();
#pragma omp parallel for schedule(static) num_threads(thread_count_for(M* out_features_))
    for (int64_t m = 0; m < M; ++m) {
      float* row = y.data() + m * out_features_;
      for (int64_t o = 0; o < out_features_; ++o) row[o] += b[o];
    }
  }
  return y;
}

Tensor Linear::backward(const Tensor& dy_in) {
  detail::require_forward(have_saved_, kind());
  const Tensor& x = saved_x_;
  std::vector<int64_t> out_shape = x.shape();
  out_shape.back() = out_features_;
  detail::require_grad_shape(dy_in, out_shape, kind());
  const detail::Contiguous dy_c(dy_in);
  const float* dy = dy_c.get().data();
  const int64_t M = x.numel() / in_features_;
  Tensor dx = Tensor::empty(x.shape());
  if (M > 0) {
    // dW (out, in) += dyᵀ (out, M) · x (M, in);  dx (M, in) = dy (M, out) · W (out, in)
    sgemm(true, false, out_features_, in_features_, M, dy, out_features_, x.data(), in_features_,
          1.0f, grad_weight_.data(), in_features_);
    sgemm(false, false, M, in_features_, out_features_, dy, out_features_, weight_.data(),
          in_features_, 0.0f, dx.data(), in_features_);
    if (has_bias_) {
      std::vector<double> sum(out_features_, 0.0);
      for (int64_t m = 0; m < M; ++m)
        for (int64_t o = 0; o < out_features_; ++o) sum[o] += dy[m * out_features_ + o];
      for (int64_t o = 0; o < out_features_; ++o)
        grad_bias_.data()[o] += static_cast<float>(sum[o]);
    }
  }
  saved_x_ = Tensor();
  have_saved_ = false;
  return dx;
}

}  // namespace syncbn::nn
