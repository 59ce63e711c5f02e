// Tensor adapters: check, then call the stages of norm/kernels.h. Messages follow PyTorch's
// where PyTorch has one, and otherwise name the argument and what was expected.
#include "norm/norm.h"

#include <cmath>

#include "core/error.h"
#include "norm/norm_math.h"

namespace syncbn::norm {
namespace {

std::string dims_text(const Tensor& x) { return std::to_string(x.dim()) + "D"; }

void check_eps(double eps, const char* op) {
  SYNCBN_REQUIRE(std::isfinite(eps) && eps > 0.0, op,
                 ": eps must be a positive finite number, got ", eps);
}

void check_momentum(const std::optional<double>& momentum, const char* op) {
  if (!momentum) return;
  SYNCBN_REQUIRE(std::isfinite(*momentum) && *momentum >= 0.0 && *momentum <= 1.0, op,
                 ": momentum must be in [0, 1] (or None for a cumulative average), got ",
                 *momentum);
}

// A per-channel parameter or buffer: 1-D with `expected` elements and finite values.
void check_vector(const Tensor* t, int64_t expected, const char* op, const char* name,
                  const Tensor& x, bool non_negative = false) {
  if (t == nullptr) return;
  SYNCBN_REQUIRE(t->dim() == 1 && t->numel() == expected, op, ": ", name, " should contain ",
                 expected, " elements (one per channel of input of size ",
                 shape_to_string(x.shape()), ") not ", t->numel(), " (shape ",
                 shape_to_string(t->shape()), ")");
  for (int64_t i = 0; i < expected; ++i) {
    const float v = t->data()[i];
    SYNCBN_REQUIRE(std::isfinite(v), op, ": ", name, " contains a non-finite value (", v,
                   ") at index ", i, "; expected finite values");
    SYNCBN_REQUIRE(!non_negative || v >= 0.0f, op, ": ", name, " contains a negative value (", v,
                   ") at index ", i, "; a variance must be >= 0");
  }
}

void check_same_shape(const Tensor& dy, const Tensor& x, const char* op) {
  SYNCBN_REQUIRE(dy.shape() == x.shape() && dy.format() == x.format(), op, ": grad_output of size ",
                 shape_to_string(dy.shape()), " (", to_string(dy.format()),
                 ") does not match input of size ", shape_to_string(x.shape()), " (",
                 to_string(x.format()), ")");
}

const float* data_or_null(const Tensor* t) { return t ? t->data() : nullptr; }

Tensor empty_like_param(const Tensor* t) { return t ? Tensor(t->shape()) : Tensor(); }

// Running statistics of a norm layer, checked together.
void check_running(const BatchNormState& state, int64_t channels, const char* op, const Tensor& x) {
  SYNCBN_REQUIRE((state.running_mean == nullptr) == (state.running_var == nullptr), op,
                 ": running_mean and running_var must be given together");
  SYNCBN_REQUIRE((state.weight == nullptr) == (state.bias == nullptr), op,
                 ": weight and bias must be given together (affine)");
  check_vector(state.weight, channels, op, "weight", x);
  check_vector(state.bias, channels, op, "bias", x);
  check_vector(state.running_mean, channels, op, "running_mean", x);
  check_vector(state.running_var, channels, op, "running_var", x, /*non_negative=*/true);
}

// The stages of norm/kernels.h for norm/bn_pipeline.h, and the two per-channel steps it names
// that are loops here and kernels on CUDA.
struct HostStages {
  using Count = int64_t;
  static constexpr auto stats = bn_stats;
  static constexpr auto gather_stats = bn_gather_stats;
  static constexpr auto update_running = bn_update_running;
  static constexpr auto elemt = bn_elemt;
  static constexpr auto backward_reduce = bn_backward_reduce;
  static constexpr auto backward_elemt = bn_backward_elemt;
  template <typename T>  // double: batch statistics; float: running statistics
  void save_stats(int64_t C, const T* mean, const T* var, double eps, float* saved_mean,
                  float* saved_invstd) const {
    for (int64_t c = 0; c < C; ++c) {
      saved_mean[c] = static_cast<float>(mean[c]);
      saved_invstd[c] = math::bn_invstd(var[c], eps);
    }
  }
  void accumulate_affine_grads(int64_t C, const double* sum_dy, const double* sum_dy_xmu,
                               const float* invstd, float* grad_weight, float* grad_bias) const {
    for (int64_t c = 0; c < C; ++c) {
      grad_weight[c] += static_cast<float>(sum_dy_xmu[c] * invstd[c]);
      grad_bias[c] += static_cast<float>(sum_dy[c]);
    }
  }
};

}  // namespace

void bn_forward_batch_stats(const float* x, const BnGeometry& g, double eps,
                            const BnRunning& running, const float* weight, const float* bias,
                            const BnReduce& reduce, NormSaved* saved, float* y) {
  std::vector<double> payload(2 * g.c + 1), mean(g.c), var(g.c);
  saved->mean.resize(g.c);
  saved->invstd.resize(g.c);
  const BnBuffers b{
      weight,      bias,      nullptr, nullptr, saved->mean.data(), saved->invstd.data(),
      mean.data(), var.data()};
  saved->count =
      pipeline::forward_batch_stats(HostStages{}, x, g, eps, running, b, reduce, payload.data(), y);
  saved->batch_stats = true;
}

void bn_forward_running_stats(const float* x, const BnGeometry& g, double eps,
                              const float* running_mean, const float* running_var,
                              const float* weight, const float* bias, NormSaved* saved, float* y) {
  saved->count = g.count();
  saved->batch_stats = false;
  saved->mean.resize(g.c);
  saved->invstd.resize(g.c);
  const BnBuffers b{weight, bias, nullptr, nullptr, saved->mean.data(), saved->invstd.data()};
  pipeline::forward_running_stats(HostStages{}, x, g, eps, running_mean, running_var, b, y);
}

void bn_backward(const float* dy, const float* x, const BnGeometry& g, const NormSaved& saved,
                 const float* weight, const BnReduce& reduce, float* grad_weight, float* grad_bias,
                 float* dx) {
  std::vector<double> payload(2 * g.c);
  // The backward only reads the saved statistics.
  const BnBuffers b{weight,
                    nullptr,
                    grad_weight,
                    grad_bias,
                    const_cast<float*>(saved.mean.data()),
                    const_cast<float*>(saved.invstd.data())};
  pipeline::backward(HostStages{}, dy, x, g, saved.batch_stats, saved.count, b, reduce,
                     payload.data(), dx);
}

BnGeometry bn_geometry(const Tensor& x, const char* op) {
  SYNCBN_REQUIRE(x.dim() >= 2 && x.dim() <= 5, op, ": expected 2D, 3D, 4D or 5D input (got ",
                 dims_text(x), " input of size ", shape_to_string(x.shape()), ")");
  SYNCBN_REQUIRE(x.format() == MemoryFormat::kContiguous || x.dim() >= 4, op,
                 ": unsupported memory format channels_last for ", dims_text(x),
                 " input; expected contiguous, or a 4D/5D input");
  return BnGeometry{x.size(0), x.size(1), spatial_size(x.shape()),
                    x.format() == MemoryFormat::kChannelsLast};
}

Tensor batch_norm_forward(const Tensor& x, const BatchNormState& state,
                          const BatchNormOptions& options, bool training, NormSaved* saved) {
  const char* op = "batch_norm";
  const BnGeometry g = bn_geometry(x, op);
  check_eps(options.eps, op);
  check_momentum(options.momentum, op);
  check_running(state, g.c, op, x);
  SYNCBN_CHECK(saved != nullptr);
  const bool tracking = state.running_mean != nullptr;
  const bool batch_stats = training || !tracking;
  const int64_t count = g.count();
  if (batch_stats) {
    SYNCBN_REQUIRE(count > 1,
                   "Expected more than 1 value per channel when training, got input size ",
                   shape_to_string(x.shape()));
  }
  SYNCBN_REQUIRE(!(training && tracking && !options.momentum && !state.num_batches_tracked), op,
                 ": momentum=None (cumulative average) needs num_batches_tracked");

  Tensor y = Tensor::empty(x.shape(), x.format());
  if (!batch_stats) {
    bn_forward_running_stats(x.data(), g, options.eps, state.running_mean->data(),
                             state.running_var->data(), data_or_null(state.weight),
                             data_or_null(state.bias), saved, y.data());
    return y;
  }
  BnRunning running;
  if (training && tracking) {
    running = {state.running_mean->data(), state.running_var->data(), options.momentum,
               state.num_batches_tracked};
  }
  bn_forward_batch_stats(
      x.data(), g, options.eps, running, data_or_null(state.weight), data_or_null(state.bias),
      [&](double*, int64_t) { return count; }, saved, y.data());
  return y;
}

NormGrads batch_norm_backward(const Tensor& dy, const Tensor& x, const BatchNormState& state,
                              const NormSaved& saved) {
  const char* op = "batch_norm_backward";
  const BnGeometry g = bn_geometry(x, op);
  check_same_shape(dy, x, op);
  check_vector(state.weight, g.c, op, "weight", x);
  SYNCBN_REQUIRE(static_cast<int64_t>(saved.mean.size()) == g.c, op, ": saved statistics are for ",
                 saved.mean.size(), " channels, input has ", g.c);
  NormGrads grads{Tensor::empty(x.shape(), x.format()), empty_like_param(state.weight),
                  empty_like_param(state.bias)};
  bn_backward(
      dy.data(), x.data(), g, saved, data_or_null(state.weight),
      [&](double*, int64_t) { return saved.count; }, state.weight ? grads.dweight.data() : nullptr,
      state.weight ? grads.dbias.data() : nullptr, grads.dx.data());
  return grads;
}

Tensor group_norm_forward(const Tensor& x, int64_t groups, const Tensor* weight, const Tensor* bias,
                          double eps, NormSaved* saved) {
  const char* op = "group_norm";
  const BnGeometry g = bn_geometry(x, op);
  check_eps(eps, op);
  SYNCBN_REQUIRE(groups > 0 && g.c % groups == 0,
                 "Expected number of channels in input to be divisible by num_groups, but got "
                 "input of shape ",
                 shape_to_string(x.shape()), " and num_groups=", groups);
  check_vector(weight, g.c, op, "weight", x);
  check_vector(bias, g.c, op, "bias", x);
  SYNCBN_CHECK(saved != nullptr);
  saved->mean.assign(g.n * groups, 0.0f);
  saved->invstd.assign(g.n * groups, 0.0f);
  saved->count = g.c / groups * g.s;
  saved->batch_stats = true;
  Tensor y = Tensor::empty(x.shape(), x.format());
  gn_stats(x.data(), g, groups, eps, saved->mean.data(), saved->invstd.data(), nullptr);
  gn_elemt(x.data(), g, groups, saved->mean.data(), saved->invstd.data(), data_or_null(weight),
           data_or_null(bias), y.data());
  return y;
}

NormGrads group_norm_backward(const Tensor& dy, const Tensor& x, int64_t groups,
                              const Tensor* weight, const NormSaved& saved) {
  const char* op = "group_norm_backward";
  const BnGeometry g = bn_geometry(x, op);
  check_same_shape(dy, x, op);
  SYNCBN_REQUIRE(
      groups > 0 && g.c % groups == 0 && static_cast<int64_t>(saved.mean.size()) == g.n * groups,
      op, ": saved statistics do not match input of size ", shape_to_string(x.shape()),
      " with num_groups=", groups);
  check_vector(weight, g.c, op, "weight", x);
  NormGrads grads{Tensor::empty(x.shape(), x.format()), empty_like_param(weight),
                  empty_like_param(weight)};
  gn_backward(dy.data(), x.data(), g, groups, saved.mean.data(), saved.invstd.data(),
              data_or_null(weight), grads.dx.data(), weight ? grads.dweight.data() : nullptr,
              weight ? grads.dbias.data() : nullptr);
  return grads;
}

namespace {

// rows × d view of x for layer_norm, checked.
std::pair<int64_t, int64_t> ln_rows(const Tensor& x, const std::vector<int64_t>& normalized_shape,
                                    const char* op) {
  const int64_t k = static_cast<int64_t>(normalized_shape.size());
  bool matches = k >= 1 && k <= x.dim();
  for (int64_t i = 0; matches && i < k; ++i)
    matches = x.size(x.dim() - k + i) == normalized_shape[i];
  SYNCBN_REQUIRE(
      matches, "Given normalized_shape=", shape_to_string(normalized_shape),
      ", expected input with shape [*",
      [&] {
        std::string s;
        for (int64_t d : normalized_shape) s += ", " + std::to_string(d);
        return s;
      }(),
      "], but got input of size", shape_to_string(x.shape()));
  SYNCBN_REQUIRE(x.format() == MemoryFormat::kContiguous, op,
                 ": unsupported memory format channels_last; expected a contiguous input");
  int64_t d = 1;
  for (int64_t v : normalized_shape) d *= v;
  return {d == 0 ? 0 : x.numel() / d, d};
}

void check_ln_param(const Tensor* t, const std::vector<int64_t>& normalized_shape, const char* op,
                    const char* name) {
  if (t == nullptr) return;
  SYNCBN_REQUIRE(t->shape() == normalized_shape, op, ": ", name, " of shape ",
                 shape_to_string(t->shape()), " does not match normalized_shape ",
                 shape_to_string(normalized_shape));
  for (int64_t i = 0; i < t->numel(); ++i)
    SYNCBN_REQUIRE(std::isfinite(t->data()[i]), op, ": ", name, " contains a non-finite value (",
                   t->data()[i], ") at index ", i, "; expected finite values");
}

}  // namespace

Tensor layer_norm_forward(const Tensor& x, const std::vector<int64_t>& normalized_shape,
                          const Tensor* weight, const Tensor* bias, double eps, NormSaved* saved) {
  const char* op = "layer_norm";
  const auto [rows, d] = ln_rows(x, normalized_shape, op);
  check_eps(eps, op);
  check_ln_param(weight, normalized_shape, op, "weight");
  check_ln_param(bias, normalized_shape, op, "bias");
  SYNCBN_CHECK(saved != nullptr);
  saved->mean.assign(rows, 0.0f);
  saved->invstd.assign(rows, 0.0f);
  saved->count = d;
  saved->batch_stats = true;
  Tensor y = Tensor::empty(x.shape(), x.format());
  ln_forward(x.data(), rows, d, eps, data_or_null(weight), data_or_null(bias), y.data(),
             saved->mean.data(), saved->invstd.data());
  return y;
}

NormGrads layer_norm_backward(const Tensor& dy, const Tensor& x,
                              const std::vector<int64_t>& normalized_shape, const Tensor* weight,
                              const NormSaved& saved) {
  const char* op = "layer_norm_backward";
  const auto [rows, d] = ln_rows(x, normalized_shape, op);
  check_same_shape(dy, x, op);
  check_ln_param(weight, normalized_shape, op, "weight");
  SYNCBN_REQUIRE(static_cast<int64_t>(saved.mean.size()) == rows, op, ": saved statistics are for ",
                 saved.mean.size(), " rows, input has ", rows);
  NormGrads grads{Tensor::empty(x.shape(), x.format()), empty_like_param(weight),
                  empty_like_param(weight)};
  ln_backward(dy.data(), x.data(), rows, d, saved.mean.data(), saved.invstd.data(),
              data_or_null(weight), grads.dx.data(), weight ? grads.dweight.data() : nullptr,
              weight ? grads.dbias.data() : nullptr);
  return grads;
}

Tensor instance_norm_forward(const Tensor& x, const BatchNormState& state,
                             const BatchNormOptions& options, bool use_input_stats,
                             NormSaved* saved) {
  const char* op = "instance_norm";
  SYNCBN_REQUIRE(x.dim() >= 3 && x.dim() <= 5, op,
                 ": expected 3D, 4D or 5D input (N, C, *spatial) (got ", dims_text(x),
                 " input of size ", shape_to_string(x.shape()), ")");
  const BnGeometry g = bn_geometry(x, op);
  check_eps(options.eps, op);
  SYNCBN_REQUIRE(options.momentum.has_value(), op,
                 ": momentum=None is not supported; expected a number in [0, 1]");
  check_momentum(options.momentum, op);
  check_running(state, g.c, op, x);
  SYNCBN_CHECK(saved != nullptr);
  const bool tracking = state.running_mean != nullptr;
  SYNCBN_REQUIRE(use_input_stats || tracking, op,
                 ": use_input_stats=false needs running_mean and running_var");
  Tensor y = Tensor::empty(x.shape(), x.format());
  if (!use_input_stats) {
    bn_forward_running_stats(x.data(), g, options.eps, state.running_mean->data(),
                             state.running_var->data(), data_or_null(state.weight),
                             data_or_null(state.bias), saved, y.data());
    return y;
  }
  SYNCBN_REQUIRE(g.s > 1, "Expected more than 1 spatial element when training, got input size ",
                 shape_to_string(x.shape()));
  saved->count = g.s;
  saved->batch_stats = true;
  saved->mean.assign(g.n * g.c, 0.0f);
  saved->invstd.assign(g.n * g.c, 0.0f);
  std::vector<double> var(g.n * g.c);
  gn_stats(x.data(), g, g.c, options.eps, saved->mean.data(), saved->invstd.data(), var.data());
  if (tracking) {
    // PyTorch runs batch_norm on (1, N·C, *) with the running stats repeated N times and then
    // averages the N updated copies: the batch average of per-instance mean and unbiased var.
    std::vector<double> mean_avg(g.c, 0.0), var_avg(g.c, 0.0);
    for (int64_t n = 0; n < g.n; ++n)
      for (int64_t c = 0; c < g.c; ++c) {
        mean_avg[c] += saved->mean[n * g.c + c] / static_cast<double>(g.n);
        var_avg[c] += var[n * g.c + c] / static_cast<double>(g.n);
      }
    bn_update_running(g.c, g.s, *options.momentum, mean_avg.data(), var_avg.data(),
                      state.running_mean->data(), state.running_var->data());
  }
  gn_elemt(x.data(), g, g.c, saved->mean.data(), saved->invstd.data(), data_or_null(state.weight),
           data_or_null(state.bias), y.data());
  return y;
}

NormGrads instance_norm_backward(const Tensor& dy, const Tensor& x, const BatchNormState& state,
                                 const NormSaved& saved) {
  if (!saved.batch_stats) return batch_norm_backward(dy, x, state, saved);
  const char* op = "instance_norm_backward";
  const BnGeometry g = bn_geometry(x, op);
  SYNCBN_REQUIRE(static_cast<int64_t>(saved.mean.size()) == g.n * g.c, op,
                 ": saved statistics do not match input of size ", shape_to_string(x.shape()));
  return group_norm_backward(dy, x, g.c, state.weight, saved);
}

}  // namespace syncbn::norm
