// The CUDA trainer's small kernels (nn/cuda/layers_cuda.h) against the CPU layers of nn/layers.h
// and optim::SGD on random shapes, odd sizes and empty batches included. Label `gpu` with the real
// kernels (every test skips without a CUDA device, and CTest reports it skipped); the same file
// runs on the CPU against the kernels built for the CPU emulation (nn_layers_cuda_emulated_test,
// labels unit and nn), which is what CI runs.
#include "nn/cuda/layers_cuda.h"

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "../common/cuda_skip.h"
#include "nn/layers.h"
#include "nn/module.h"
#include "optim/sgd.h"

namespace syncbn::nn {
namespace {

std::string reason_to_skip() { return syncbn::testing::cuda_skip_reason(); }

class CudaLayersTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string reason = reason_to_skip();
    if (!reason.empty()) GTEST_SKIP() << reason;
  }
};

// A device copy of host data; read back with host().
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(size_t n) : n_(n) {
    EXPECT_EQ(cudaMalloc(reinterpret_cast<void**>(&p_), std::max<size_t>(n, 1) * sizeof(T)),
              cudaSuccess);
  }
  explicit DeviceArray(const std::vector<T>& host) : DeviceArray(host.size()) {
    EXPECT_EQ(cudaMemcpy(p_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  DeviceArray(const float* host, size_t n) : DeviceArray(std::vector<T>(host, host + n)) {}
  ~DeviceArray() { cudaFree(p_); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  T* get() { return p_; }
  std::vector<T> host() const {
    std::vector<T> out(n_);
    EXPECT_EQ(cudaMemcpy(out.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return out;
  }

 private:
  T* p_ = nullptr;
  size_t n_;
};

Tensor random_tensor(std::vector<int64_t> shape, std::mt19937& gen, bool with_ties = false) {
  Tensor t(std::move(shape));
  std::normal_distribution<float> normal;
  std::uniform_int_distribution<int> small(-2, 2);
  for (int64_t i = 0; i < t.numel(); ++i)
    t.data()[i] = with_ties ? static_cast<float>(small(gen)) : normal(gen);
  return t;
}

// Bitwise: these kernels do the CPU's arithmetic in the CPU's order.
void expect_same(const std::vector<float>& got, const Tensor& want, const std::string& what) {
  ASSERT_EQ(static_cast<int64_t>(got.size()), want.numel()) << what;
  for (int64_t i = 0; i < want.numel(); ++i) {
    const float w = want.data()[i], g = got[static_cast<size_t>(i)];
    if (std::isnan(w)) {
      ASSERT_TRUE(std::isnan(g)) << what << " [" << i << "]";
    } else {
      ASSERT_EQ(g, w) << what << " [" << i << "]";
    }
  }
}

cudaStream_t stream() { return nullptr; }
CUstream_st* s() { return reinterpret_cast<CUstream_st*>(stream()); }

// A residual block's sum of its branches, and a branch point's gradient accumulation: the CPU
// block's add_tensors, also in place (y = a + y).
TEST_F(CudaLayersTest, AddAndAccumulateMatchCpu) {
  std::mt19937 gen(7);
  for (int64_t n : {0, 1, 31, 1000, 4099}) {
    const Tensor a = random_tensor({n}, gen), b = random_tensor({n}, gen);
    const Tensor sum = add_tensors(a, b, "test");
    DeviceArray<float> a_dev(a.data(), static_cast<size_t>(n)),
        b_dev(b.data(), static_cast<size_t>(n));
    DeviceArray<float> y_dev(static_cast<size_t>(n));
    cuda::add(a_dev.get(), b_dev.get(), n, y_dev.get(), s());
    expect_same(y_dev.host(), sum, "add n=" + std::to_string(n));
    cuda::add(a_dev.get(), b_dev.get(), n, b_dev.get(), s());  // in place
    expect_same(b_dev.host(), sum, "add in place n=" + std::to_string(n));
    cuda::accumulate(a_dev.get(), n, b_dev.get(), s());  // (a + b) + a
    expect_same(b_dev.host(), add_tensors(sum, a, "test"), "accumulate n=" + std::to_string(n));
  }
}

TEST_F(CudaLayersTest, ReluMatchesCpu) {
  std::mt19937 gen(1);
  for (int64_t n : {0, 1, 7, 33, 1000, 4099}) {
    Tensor x = random_tensor({n}, gen);
    if (n > 3) x.data()[3] = std::numeric_limits<float>::quiet_NaN();
    if (n > 4) x.data()[4] = 0.0f;
    ReLU cpu;
    const Tensor y = cpu.forward(x, true);
    const Tensor dy = random_tensor({n}, gen);
    const Tensor dx = cpu.backward(dy);

    DeviceArray<float> dx_dev(x.data(), static_cast<size_t>(n)), y_dev(static_cast<size_t>(n));
    cuda::relu_forward(dx_dev.get(), n, y_dev.get(), s());
    expect_same(y_dev.host(), y, "relu y n=" + std::to_string(n));
    DeviceArray<float> dy_dev(dy.data(), static_cast<size_t>(n)), grad(static_cast<size_t>(n));
    cuda::relu_backward(dy_dev.get(), y_dev.get(), n, grad.get(), s());
    expect_same(grad.host(), dx, "relu dx n=" + std::to_string(n));
  }
}

TEST_F(CudaLayersTest, MaxPoolMatchesCpu) {
  std::mt19937 gen(2);
  struct Case {
    int64_t N, C, H, W, kernel, stride, padding;
  };
  // 2x2/2 as in small_cnn (odd sizes drop the last row/column), overlapping windows (stride <
  // kernel), padding, and an empty batch.
  for (const Case& c :
       {Case{2, 3, 28, 28, 2, 2, 0}, Case{1, 5, 7, 9, 2, 2, 0}, Case{3, 2, 11, 6, 3, 1, 1},
        Case{2, 4, 9, 9, 3, 2, 1}, Case{1, 1, 5, 5, 5, 5, 2}, Case{0, 3, 8, 8, 2, 2, 0}}) {
    const std::string what = "maxpool N" + std::to_string(c.N) + " C" + std::to_string(c.C) + " " +
                             std::to_string(c.H) + "x" + std::to_string(c.W) + " k" +
                             std::to_string(c.kernel) + " s" + std::to_string(c.stride) + " p" +
                             std::to_string(c.padding);
    Tensor x = random_tensor({c.N, c.C, c.H, c.W}, gen, /*with_ties=*/true);
    if (x.numel() > 10) x.data()[10] = std::numeric_limits<float>::quiet_NaN();
    MaxPool2d cpu(c.kernel, c.stride, c.padding);
    const Tensor y = cpu.forward(x, true);
    const Tensor dy = random_tensor(y.shape(), gen);
    const Tensor dx = cpu.backward(dy);

    const int64_t planes = c.N * c.C;
    DeviceArray<float> x_dev(x.data(), static_cast<size_t>(x.numel()));
    DeviceArray<float> y_dev(static_cast<size_t>(y.numel()));
    DeviceArray<int32_t> argmax(static_cast<size_t>(y.numel()));
    cuda::maxpool_forward(x_dev.get(), planes, c.H, c.W, c.kernel, c.stride, c.padding, y_dev.get(),
                          argmax.get(), s());
    expect_same(y_dev.host(), y, what + " y");
    DeviceArray<float> dy_dev(dy.data(), static_cast<size_t>(dy.numel()));
    DeviceArray<float> dx_dev(static_cast<size_t>(x.numel()));
    cuda::maxpool_backward(dy_dev.get(), argmax.get(), planes, c.H, c.W, c.kernel, c.stride,
                           c.padding, dx_dev.get(), s());
    expect_same(dx_dev.host(), dx, what + " dx");
  }
}

TEST_F(CudaLayersTest, GlobalAvgPoolMatchesCpu) {
  std::mt19937 gen(3);
  for (const std::vector<int64_t>& shape : std::vector<std::vector<int64_t>>{
           {2, 128, 7, 7}, {3, 5, 1, 1}, {1, 7, 13, 3}, {0, 4, 7, 7}}) {
    const Tensor x = random_tensor(shape, gen);
    AdaptiveAvgPool2d cpu(1);
    const Tensor y = cpu.forward(x, true);
    const Tensor dy = random_tensor(y.shape(), gen);
    const Tensor dx = cpu.backward(dy);
    const int64_t planes = shape[0] * shape[1], S = shape[2] * shape[3];
    DeviceArray<float> x_dev(x.data(), static_cast<size_t>(x.numel()));
    DeviceArray<float> y_dev(static_cast<size_t>(planes));
    cuda::gap_forward(x_dev.get(), planes, S, y_dev.get(), s());
    expect_same(y_dev.host(), y, "gap y");
    DeviceArray<float> dy_dev(dy.data(), static_cast<size_t>(planes));
    DeviceArray<float> dx_dev(static_cast<size_t>(x.numel()));
    cuda::gap_backward(dy_dev.get(), planes, S, dx_dev.get(), s());
    expect_same(dx_dev.host(), dx, "gap dx");
  }
}

// Bias against a float64 reference (the CPU layers apply their bias inside Conv2d and Linear):
// y + b exactly, and the float64 sum over (n, s) rounded once.
TEST_F(CudaLayersTest, BiasMatchesReference) {
  std::mt19937 gen(4);
  struct Case {
    int64_t N, C, S;
  };
  for (const Case& c :
       {Case{4, 10, 1}, Case{3, 7, 49}, Case{1, 1, 1}, Case{2, 33, 5}, Case{0, 5, 3}}) {
    const Tensor y = random_tensor({c.N, c.C, c.S}, gen);
    const Tensor bias = random_tensor({c.C}, gen);
    const Tensor grad0 = random_tensor({c.C}, gen);
    DeviceArray<float> y_dev(y.data(), static_cast<size_t>(y.numel()));
    DeviceArray<float> b_dev(bias.data(), static_cast<size_t>(c.C));
    cuda::add_bias(y_dev.get(), b_dev.get(), c.N, c.C, c.S, s());
    DeviceArray<float> g_dev(grad0.data(), static_cast<size_t>(c.C));
    cuda::bias_backward(y_dev.get(), c.N, c.C, c.S, g_dev.get(), s());  // dy := the biased y
    const std::vector<float> biased = y_dev.host(), grad = g_dev.host();
    for (int64_t n = 0; n < c.N; ++n)
      for (int64_t ch = 0; ch < c.C; ++ch)
        for (int64_t i = 0; i < c.S; ++i) {
          const int64_t k = (n * c.C + ch) * c.S + i;
          ASSERT_EQ(biased[static_cast<size_t>(k)], y.data()[k] + bias.data()[ch]) << k;
        }
    for (int64_t ch = 0; ch < c.C; ++ch) {
      double sum = 0;
      for (int64_t n = 0; n < c.N; ++n)
        for (int64_t i = 0; i < c.S; ++i)
          sum += biased[static_cast<size_t>((n * c.C + ch) * c.S + i)];
      ASSERT_EQ(grad[static_cast<size_t>(ch)], grad0.data()[ch] + static_cast<float>(sum)) << ch;
    }
  }
}

TEST_F(CudaLayersTest, SoftmaxCrossEntropyMatchesCpu) {
  std::mt19937 gen(5);
  for (const std::vector<int64_t>& shape :
       std::vector<std::vector<int64_t>>{{8, 10}, {1, 10}, {33, 3}, {5, 1}, {0, 10}}) {
    const int64_t N = shape[0], K = shape[1];
    Tensor logits = random_tensor(shape, gen);
    for (int64_t i = 0; i < logits.numel(); ++i) logits.data()[i] *= 8.0f;  // wide logits
    std::vector<int32_t> labels(static_cast<size_t>(N));
    for (auto& l : labels) l = static_cast<int32_t>(gen() % static_cast<uint32_t>(K));
    const double scale = 1.0 / 37.0;
    Tensor dlogits;
    const double loss = softmax_cross_entropy(logits, labels.data(), scale, &dlogits, nullptr);

    DeviceArray<float> z(logits.data(), static_cast<size_t>(logits.numel()));
    DeviceArray<int32_t> l_dev(labels);
    DeviceArray<float> dz(static_cast<size_t>(logits.numel()));
    DeviceArray<double> rows(static_cast<size_t>(N)), sum(1);
    cuda::softmax_xent(z.get(), l_dev.get(), N, K, scale, dz.get(), rows.get(), sum.get(), s());
    // exp and log of a GPU's libdevice may differ from glibc's in the last bit.
    EXPECT_NEAR(sum.host()[0], loss, 1e-12 * std::max(1.0, std::abs(loss))) << N << "x" << K;
    const std::vector<float> got = dz.host();
    for (int64_t i = 0; i < dlogits.numel(); ++i)
      ASSERT_NEAR(got[static_cast<size_t>(i)], dlogits.data()[i],
                  2e-7 * std::abs(dlogits.data()[i]) + 1e-12)
          << i;
  }
}

// Several steps of every option combination against optim::SGD: bitwise equal parameters and
// momentum buffers (the same fused multiply-adds in the same order).
TEST_F(CudaLayersTest, SgdMatchesCpu) {
  std::mt19937 gen(6);
  struct Case {
    double momentum, weight_decay, dampening;
    bool nesterov;
  };
  for (const Case& c : {Case{0.9, 5e-4, 0, false}, Case{0.9, 5e-4, 0, true},
                        Case{0, 1e-2, 0, false}, Case{0.5, 0, 0.25, false}, Case{0, 0, 0, false}}) {
    for (int64_t n : {1, 10, 4097}) {
      Tensor value = random_tensor({n}, gen), grad({n});
      optim::SgdOptions options;
      options.momentum = c.momentum;
      options.weight_decay = c.weight_decay;
      options.dampening = c.dampening;
      options.nesterov = c.nesterov;
      optim::SGD cpu({{"p", &value, &grad}}, options);
      DeviceArray<float> v_dev(value.data(), static_cast<size_t>(n));
      DeviceArray<float> g_dev(static_cast<size_t>(n)), buf(static_cast<size_t>(n));
      for (int step = 0; step < 4; ++step) {
        grad = random_tensor({n}, gen);
        EXPECT_EQ(cudaMemcpy(g_dev.get(), grad.data(), static_cast<size_t>(n) * sizeof(float),
                             cudaMemcpyHostToDevice),
                  cudaSuccess);
        const double lr = 0.05 * (step + 1);
        const cuda::SgdStep u =
            cuda::sgd_step(lr, c.momentum, c.dampening, c.weight_decay, c.nesterov, step == 0);
        cuda::sgd_update(v_dev.get(), g_dev.get(), u.has_momentum ? buf.get() : nullptr, n, u, s());
        cpu.step(lr);
        const std::string what = "sgd momentum " + std::to_string(c.momentum) + " nesterov " +
                                 std::to_string(c.nesterov) + " n " + std::to_string(n) + " step " +
                                 std::to_string(step);
        expect_same(v_dev.host(), value, what + " value");
        if (u.has_momentum) expect_same(buf.host(), cpu.momentum_buffers()[0], what + " buf");
      }
    }
  }
}

}  // namespace
}  // namespace syncbn::nn
