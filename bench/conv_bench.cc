// Conv2d CPU benchmarks (Google Benchmark) on the convolutions of resnet20 (He et al. 2016 §4.2)
// on CIFAR-10 (3x32x32) and Fashion-MNIST (1x28x28), at per-rank batch 4 and 32. A benchmark,
// not a test: nothing here asserts a time. bench/conv_compare.sh runs it side by side with
// PyTorch 1.13 (bench/torch_conv.py, same cases, same names).
//
// Each case is one nn::Conv2d layer, training mode, exactly what a training step runs:
//   conv_fwd:      y = conv.forward(x, training=true)
//   conv_fwd_bwd:  conv.forward(x, true), then conv.backward(dy): dx, dweight (+ dbias), the
//                  parameter gradients accumulated as a step does between zero_grad calls.
// Case names: <N>x<C_in>x<H>x<W>/<C_out>k<kernel>s<stride>/<bias|nobias>. resnet20's convs have
// no bias (each feeds a norm); the bias variants are the 3x3 stride-1 shapes, for small_cnn.
//
// Threads come from OMP_NUM_THREADS (conv_compare.sh sets 1, the 2 ranks x 1 thread setting of
// the training comparison). Wall-clock time (UseRealTime).
//
//   OMP_NUM_THREADS=1 build/bench/conv_bench --benchmark_filter=fwd_bwd
#include <benchmark/benchmark.h>

#include <cstdint>
#include <string>
#include <vector>

#include "nn/layers.h"
#include "tensor/tensor.h"

namespace syncbn::nn {
namespace {

struct ConvCase {
  int64_t n, c_in, h, c_out, kernel, stride;
  bool bias;
  int64_t pad() const { return kernel / 2; }
};

std::string case_name(const ConvCase& c) {
  return std::to_string(c.n) + "x" + std::to_string(c.c_in) + "x" + std::to_string(c.h) + "x" +
         std::to_string(c.h) + "/" + std::to_string(c.c_out) + "k" + std::to_string(c.kernel) +
         "s" + std::to_string(c.stride) + "/" + (c.bias ? "bias" : "nobias");
}

// resnet20's distinct convolutions for an input of `channels` x `size` x `size`: conv1, the 3x3
// stride-1 convs of layer1..3, the stride-2 3x3 and the 1x1 stride-2 projection that open layer2
// and layer3.
std::vector<ConvCase> resnet20_cases(int64_t n, int64_t channels, int64_t size) {
  const int64_t s1 = size, s2 = (size + 1) / 2, s3 = (s2 + 1) / 2;
  std::vector<ConvCase> cases = {
      {n, channels, s1, 16, 3, 1, false},  // conv1
      {n, 16, s1, 16, 3, 1, false},        // layer1
      {n, 16, s1, 32, 3, 2, false},        // layer2.0.conv1
      {n, 16, s1, 32, 1, 2, false},        // layer2.0.downsample.0
      {n, 32, s2, 32, 3, 1, false},        // layer2
      {n, 32, s2, 64, 3, 2, false},        // layer3.0.conv1
      {n, 32, s2, 64, 1, 2, false},        // layer3.0.downsample.0
      {n, 64, s3, 64, 3, 1, false},        // layer3
  };
  for (const int64_t c : {16, 32, 64}) {  // with bias, as small_cnn's convs
    const int64_t h = c == 16 ? s1 : c == 32 ? s2 : s3;
    cases.push_back({n, c, h, c, 3, 1, true});
  }
  return cases;
}

std::vector<ConvCase> all_cases() {
  std::vector<ConvCase> cases;
  for (const int64_t n : {4, 32}) {
    for (const auto& [channels, size] : {std::pair<int64_t, int64_t>{3, 32}, {1, 28}}) {
      for (const ConvCase& c : resnet20_cases(n, channels, size)) cases.push_back(c);
    }
  }
  return cases;
}

Tensor random_tensor(std::vector<int64_t> shape, uint64_t seed) {
  Tensor t(std::move(shape));
  Rng rng(seed);
  rng.fill_normal(t.data(), t.numel());
  return t;
}

void run_case(benchmark::State& state, const ConvCase& c, bool backward) {
  Rng rng(7);
  Conv2d conv(c.c_in, c.c_out, c.kernel, c.stride, c.pad(), c.bias, rng);
  const Tensor x = random_tensor({c.n, c.c_in, c.h, c.h}, 1);
  const int64_t ho = (c.h + 2 * c.pad() - c.kernel) / c.stride + 1;
  const Tensor dy = random_tensor({c.n, c.c_out, ho, ho}, 2);
  for (int warmup = 0; warmup < 3; ++warmup) {  // buffers sized, oneDNN's kernels generated
    conv.forward(x, true);
    if (backward) conv.backward(dy);
  }
  for (auto _ : state) {
    Tensor y = conv.forward(x, true);
    benchmark::DoNotOptimize(y.data());
    if (backward) {
      Tensor dx = conv.backward(dy);
      benchmark::DoNotOptimize(dx.data());
    }
  }
  // Multiply-adds of the forward; a backward is two more convolutions' worth.
  const double macs = static_cast<double>(c.n * c.c_out * ho * ho * c.c_in * c.kernel * c.kernel);
  state.counters["FLOPS"] = benchmark::Counter(2.0 * macs * (backward ? 3.0 : 1.0),
                                               benchmark::Counter::kIsIterationInvariantRate,
                                               benchmark::Counter::OneK::kIs1000);
}

void register_all() {
  for (const ConvCase& c : all_cases()) {
    for (const bool backward : {false, true}) {
      const std::string name = std::string(backward ? "conv_fwd_bwd/" : "conv_fwd/") + case_name(c);
      benchmark::RegisterBenchmark(
          name.c_str(), [c, backward](benchmark::State& state) { run_case(state, c, backward); })
          ->UseRealTime()
          ->Unit(benchmark::kMicrosecond);
    }
  }
}

}  // namespace
}  // namespace syncbn::nn

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  syncbn::nn::register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
