// The CUDA step backend (train/step_backend.h): the step of train/trainer.cc's CPU backend on one
// GPU per rank, with the same math, so that losses match the CPU trainer's to float32 rounding and
// weights move between the two (and PyTorch) through the host model.
//
//   conv      cuDNN forward / backward data / backward filter, NCHW float32, FMA math (no TF32);
//             per layer and batch size the first deterministic algorithm of cuDNN's v7
//             heuristics that fits the workspace limit
//   linear    cuBLAS sgemm (row-major y = x·Wᵀ as column-major yᵀ = W·xᵀ)
//   norms     nn::SyncBatchNormCuda over an NCCL BN group (syncbn), or a group of one rank (bn)
//   the rest  nn/cuda/layers_cuda.h: relu, max pool, global average pool, bias, residual add and
//             gradient accumulation, softmax cross-entropy, SGD
//
// The model runs as the plan's graph (train/cuda/device_plan.h): every node has its own output
// and output-gradient buffers for the largest slice, so a residual block's input stays alive for
// its shortcut. Backward visits the nodes in reverse; a node writes its input's gradient directly
// when it is that input's only reader, and otherwise adds it (cuDNN/cuBLAS with beta = 1, or
// through a scratch buffer and the accumulate kernel) into a gradient zeroed at the step's start.
//
// Streams. Everything of the step runs on the compute stream, the stream of the NCCL world that
// the SyncBN layers use. The batch is copied from pinned host memory on a copy stream (an event
// orders it before the forward). Gradients live in one flat device array in parameter order;
// buckets of about 1 MiB, in the reverse order backward produces them, are allreduced in place
// by a second NCCL world on a side stream as soon as their last parameter's backward has been
// enqueued (an event per bucket), so the reduction overlaps the rest of backward; SGD waits for
// the side stream with an event. The host waits once per step, at its end (the collectives'
// completion and SyncBatchNormCuda::finish(), which reports problems the device found).
//
// One rank per GPU: the NCCL backend makes the rank's index among the ranks of its node
// (MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)) its CUDA device (comm/nccl_communicator.cc).
//
// CUDA, cuDNN, cuBLAS and NCCL call failures abort with file:line (STYLE.md rule 8).
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/cuda_check.h"
#include "core/error.h"
#include "nn/cuda/layers_cuda.h"
#include "nn/layers.h"
#include "nn/sync_batch_norm_cuda.h"
#include "norm/cuda/kernels_cuda.h"
#include "train/cuda/device_plan.h"
#include "train/step_backend.h"

namespace syncbn::train {
namespace {

cudaStream_t to_cuda(CUstream_st* stream) { return reinterpret_cast<cudaStream_t>(stream); }

// Device memory of n elements (none for n = 0).
template <typename T>
class DeviceArray {
 public:
  DeviceArray() = default;
  explicit DeviceArray(size_t n) : n_(n) {
    if (n > 0) SYNCBN_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&p_), n * sizeof(T)));
  }
  ~DeviceArray() {
    if (p_ != nullptr) cudaFree(p_);
  }
  DeviceArray(DeviceArray&& other) noexcept
      : p_(std::exchange(other.p_, nullptr)), n_(std::exchange(other.n_, 0)) {}
  DeviceArray& operator=(DeviceArray&& other) noexcept {
    std::swap(p_, other.p_);
    std::swap(n_, other.n_);
    return *this;
  }
  T* get() const { return p_; }
  size_t size() const { return n_; }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

// Page-locked host memory, so that cudaMemcpyAsync is truly asynchronous.
template <typename T>
class PinnedArray {
 public:
  PinnedArray() = default;
  explicit PinnedArray(size_t n) {
    SYNCBN_CUDA_CHECK(
        cudaMallocHost(reinterpret_cast<void**>(&p_), std::max<size_t>(n, 1) * sizeof(T)));
  }
  ~PinnedArray() {
    if (p_ != nullptr) cudaFreeHost(p_);
  }
  PinnedArray(PinnedArray&& other) noexcept : p_(std::exchange(other.p_, nullptr)) {}
  PinnedArray& operator=(PinnedArray&& other) noexcept {
    std::swap(p_, other.p_);
    return *this;
  }
  T* get() const { return p_; }

 private:
  T* p_ = nullptr;
};

class Stream {
 public:
  Stream() { SYNCBN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking)); }
  ~Stream() { cudaStreamDestroy(stream_); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return stream_; }

 private:
  cudaStream_t stream_ = nullptr;
};

class Event {
 public:
  Event() { SYNCBN_CUDA_CHECK(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming)); }
  ~Event() { cudaEventDestroy(event_); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  // Work enqueued on `waiter` from now on runs after the work enqueued on `producer` so far.
  void order(cudaStream_t producer, cudaStream_t waiter) {
    SYNCBN_CUDA_CHECK(cudaEventRecord(event_, producer));
    SYNCBN_CUDA_CHECK(cudaStreamWaitEvent(waiter, event_, 0));
  }

 private:
  cudaEvent_t event_ = nullptr;
};

template <typename T, cudnnStatus_t (*Create)(T*), cudnnStatus_t (*Destroy)(T)>
class CudnnDescriptor {
 public:
  CudnnDescriptor() { SYNCBN_CUDNN_CHECK(Create(&descriptor_)); }
  ~CudnnDescriptor() { Destroy(descriptor_); }
  CudnnDescriptor(const CudnnDescriptor&) = delete;
  CudnnDescriptor& operator=(const CudnnDescriptor&) = delete;
  T get() const { return descriptor_; }

 private:
  T descriptor_;
};
using TensorDescriptor = CudnnDescriptor<cudnnTensorDescriptor_t, cudnnCreateTensorDescriptor,
                                         cudnnDestroyTensorDescriptor>;
using FilterDescriptor = CudnnDescriptor<cudnnFilterDescriptor_t, cudnnCreateFilterDescriptor,
                                         cudnnDestroyFilterDescriptor>;
using ConvDescriptor =
    CudnnDescriptor<cudnnConvolutionDescriptor_t, cudnnCreateConvolutionDescriptor,
                    cudnnDestroyConvolutionDescriptor>;

class CudnnHandle {
 public:
  CudnnHandle() { SYNCBN_CUDNN_CHECK(cudnnCreate(&handle_)); }
  ~CudnnHandle() { cudnnDestroy(handle_); }
  CudnnHandle(const CudnnHandle&) = delete;
  CudnnHandle& operator=(const CudnnHandle&) = delete;
  cudnnHandle_t get() const { return handle_; }

 private:
  cudnnHandle_t handle_ = nullptr;
};

class CublasHandle {
 public:
  CublasHandle() { SYNCBN_CUBLAS_CHECK(cublasCreate(&handle_)); }
  ~CublasHandle() { cublasDestroy(handle_); }
  CublasHandle(const CublasHandle&) = delete;
  CublasHandle& operator=(const CublasHandle&) = delete;
  cublasHandle_t get() const { return handle_; }

 private:
  cublasHandle_t handle_ = nullptr;
};

constexpr size_t kMaxWorkspaceBytes = size_t{256} << 20;
constexpr double kNormEps = 1e-5;  // every norm layer build_model makes uses PyTorch's default

// The first algorithm cuDNN's heuristics rank that succeeds, is deterministic, does not need
// tensor cores (TF32 would change float32 results) and fits the workspace limit.
template <typename Perf>
const Perf& pick_algorithm(const Perf* perf, int count, const char* what) {
  for (int i = 0; i < count; ++i) {
    if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].determinism == CUDNN_DETERMINISTIC &&
        perf[i].mathType != CUDNN_TENSOR_OP_MATH &&
        perf[i].mathType != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION &&
        perf[i].memory <= kMaxWorkspaceBytes) {
      return perf[i];
    }
  }
  gpu_call_failed(__FILE__, __LINE__, what, "no deterministic float32 algorithm");
}

using Kind = DeviceLayerKind;

// cuDNN's descriptors and algorithms for one batch size of one conv layer.
struct ConvPlan {
  int64_t n = -1;
  TensorDescriptor x, y;
  cudnnConvolutionFwdAlgo_t forward{};
  cudnnConvolutionBwdDataAlgo_t backward_data{};
  cudnnConvolutionBwdFilterAlgo_t backward_filter{};
};

// A planned layer (train/cuda/device_plan.h) with its device objects.
struct DeviceLayer : PlannedLayer {
  std::unique_ptr<nn::SyncBatchNormCuda> bn;
  bool bn_local = false;  // a BN group of one rank: an empty batch skips the layer, as on the CPU
  std::unique_ptr<FilterDescriptor> filter;
  std::unique_ptr<ConvDescriptor> conv;
  std::vector<std::unique_ptr<ConvPlan>> plans;
  DeviceArray<float> output;                    // (max batch, out); none for pass-through layers
  DeviceArray<float> grad;                      // (max batch, out): d loss / d output
  DeviceArray<int32_t> argmax;                  // max pool
  DeviceArray<float> group_mean, group_invstd;  // group norm: (max batch, groups)
  const float* x = nullptr;                     // this step's input
  float* y = nullptr;                           // this step's output
};

struct DeviceParam : PlannedParam {
  nn::ParamRef host;
  float* value = nullptr;          // device
  const float* bn_grad = nullptr;  // a SyncBatchNormCuda gradient, copied to the flat array
};

struct Bucket : PlannedBucket {
  size_t pending = 0;  // parameters not yet ready this step
  std::unique_ptr<Event> ready;
  comm::Request request;
};

class CudaBackend final : public StepBackend {
 public:
  CudaBackend(const Config& config, const data::DatasetInfo& info, Sequential& model,
              optim::SGD& sgd, comm::Communicator& world)
      : model_(model),
        sgd_(sgd),
        max_n_(config.train.per_rank_batch),
        // First of the device members: it makes this rank's GPU current, so the streams, events,
        // handles and memory below are made on it.
        bn_world_(comm::make_communicator(comm::Backend::kNccl)),
        compute_(to_cuda(bn_world_->cuda_stream())) {
    // Two NCCL worlds: SyncBN's on the compute stream (the backend's own), the gradient buckets'
    // on a side stream.
    comm::CommOptions side;
    side.cuda_stream = reinterpret_cast<CUstream_st*>(side_.get());
    grad_world_ = comm::make_communicator(comm::Backend::kNccl, side);
    SYNCBN_CHECK(grad_world_->size() == world.size() && grad_world_->rank() == world.rank());
    if (config.model.norm == Norm::kSyncBn)
      bn_group_ = nn::make_bn_group(*bn_world_, static_cast<int>(config.model.bn_group_size));
    if (config.model.norm == Norm::kBn) bn_group_ = comm::split_consecutive(*bn_world_, 1);
    SYNCBN_CUDNN_CHECK(cudnnSetStream(cudnn_.get(), compute_));
    SYNCBN_CUBLAS_CHECK(cublasSetStream(cublas_.get(), compute_));

    build(plan_device_model(config, info, model_));
    int64_t widest = 0;
    for (const DeviceLayer& L : layers_) widest = std::max({widest, L.in.numel(), L.out.numel()});
    input_ = DeviceArray<float>(static_cast<size_t>(max_n_ * layers_.front().in.numel()));
    scratch_ = DeviceArray<float>(static_cast<size_t>(max_n_ * widest));
    pinned_images_ = PinnedArray<float>(static_cast<size_t>(max_n_ * layers_.front().in.numel()));
    labels_ = DeviceArray<int32_t>(static_cast<size_t>(max_n_));
    row_loss_ = DeviceArray<double>(static_cast<size_t>(max_n_));
    loss_sum_ = DeviceArray<double>(1);
    SYNCBN_CUDA_CHECK(cudaStreamSynchronize(compute_));  // construction, not a step
  }

  ~CudaBackend() override {
    for (Bucket& b : buckets_) b.request = comm::Request();  // waits for a step that threw
    cudaStreamSynchronize(compute_);
    cudaStreamSynchronize(side_.get());
  }

  void step(const data::Batch& batch, double lr) override {
    const SampleShape& in = layers_.front().in;
    const int64_t n = static_cast<int64_t>(batch.labels.size());
    SYNCBN_REQUIRE(n <= max_n_, "CUDA trainer: a slice of ", n,
                   " samples on this rank; expected at most train.per_rank_batch = ", max_n_);
    SYNCBN_CHECK(batch.images.numel() == n * in.numel());
    const int64_t classes = layers_.back().out.c;
    for (int64_t i = 0; i < n; ++i) {
      SYNCBN_REQUIRE(batch.labels[i] >= 0 && batch.labels[i] < classes,
                     "softmax_cross_entropy: sample ", i, " has label ", batch.labels[i],
                     ", expected a class in [0, ", classes, ")");
    }
    // Host → device on the copy stream, from pinned memory; the forward waits for it.
    const size_t image_bytes = static_cast<size_t>(n * in.numel()) * sizeof(float);
    const size_t label_bytes = static_cast<size_t>(n) * sizeof(int32_t);
    if (n > 0) {
      std::memcpy(pinned_images_.get(), batch.images.data(), image_bytes);
      std::memcpy(pinned_labels_.get(), batch.labels.data(), label_bytes);
      SYNCBN_CUDA_CHECK(cudaMemcpyAsync(input_.get(), pinned_images_.get(), image_bytes,
                                        cudaMemcpyHostToDevice, copy_.get()));
      SYNCBN_CUDA_CHECK(cudaMemcpyAsync(labels_.get(), pinned_labels_.get(), label_bytes,
                                        cudaMemcpyHostToDevice, copy_.get()));
      copied_.order(copy_.get(), compute_);
    }
    SYNCBN_CUDA_CHECK(cudaMemsetAsync(grads_.get(), 0, grads_.size() * sizeof(float), compute_));
    for (DeviceLayer& L : layers_) {
      if (L.consumers > 1) {  // a branch point: its readers add their gradients into it
        SYNCBN_CUDA_CHECK(cudaMemsetAsync(
            L.grad.get(), 0, static_cast<size_t>(n * L.out.numel()) * sizeof(float), compute_));
      }
      if (L.bn == nullptr) continue;
      const size_t bytes = static_cast<size_t>(L.in.c) * sizeof(float);
      SYNCBN_CUDA_CHECK(cudaMemsetAsync(L.bn->grad_weight(), 0, bytes, compute_));
      SYNCBN_CUDA_CHECK(cudaMemsetAsync(L.bn->grad_bias(), 0, bytes, compute_));
    }

    const float* logits = forward(n);
    nn::cuda::softmax_xent(logits, labels_.get(), n, classes,
                           1.0 / static_cast<double>(batch.global_batch_size),
                           layers_.back().grad.get(), row_loss_.get(), loss_sum_.get(), stream());
    SYNCBN_CUDA_CHECK(cudaMemcpyAsync(pinned_loss_.get(), loss_sum_.get(), sizeof(double),
                                      cudaMemcpyDeviceToHost, compute_));
    backward(n);
    reduced_.order(side_.get(), compute_);
    update(lr);

    // The step's one wait: the gradient collectives, then each SyncBN layer's finish() (which
    // synchronizes the compute stream and throws for what the device found).
    for (Bucket& b : buckets_) b.request.wait();
    for (DeviceLayer& L : layers_)
      if (L.bn != nullptr) L.bn->finish();
    SYNCBN_CUDA_CHECK(cudaStreamSynchronize(compute_));
  }

  double last_loss_sum() override { return *pinned_loss_.get(); }

  double sync_bn_comm_seconds() override {
    double seconds = 0;
    for (const DeviceLayer& L : layers_)
      if (L.bn != nullptr) seconds += L.bn->counters().comm_seconds;
    return seconds;
  }

  void to_host() override {
    SYNCBN_CUDA_CHECK(cudaStreamSynchronize(compute_));
    for (const DeviceParam& p : params_) copy(p.host.value->data(), p.value, p.numel);
    for (size_t i = 0; i < layers_.size(); ++i) {
      const DeviceLayer& L = layers_[i];
      if (L.bn == nullptr) continue;
      const std::vector<nn::BufferRef> buffers = host_buffers(L.leaf);
      copy(buffers[0].f32->data(), L.bn->running_mean(), L.in.c);
      copy(buffers[1].f32->data(), L.bn->running_var(), L.in.c);
      *buffers[2].i64 = batches_tracked_base_[i] + L.bn->num_batches_tracked();
    }
    optim::SgdState state;
    state.step_count = step_count_;
    state.momentum_initialized = momentum_initialized_;
    if (momentum_initialized_) {
      for (const DeviceParam& p : params_) {
        Tensor buffer = Tensor::empty(p.host.value->shape());
        copy(buffer.data(), momentum_.get() + p.offset, p.numel);
        state.momentum_buffers.push_back(std::move(buffer));
      }
    }
    SYNCBN_CUDA_CHECK(cudaStreamSynchronize(compute_));
    sgd_.load_state(std::move(state));
  }

  void from_host() override {
    for (const DeviceParam& p : params_) copy(p.value, p.host.value->data(), p.numel);
    for (size_t i = 0; i < layers_.size(); ++i) {
      const DeviceLayer& L = layers_[i];
      if (L.bn == nullptr) continue;
      const std::vector<nn::BufferRef> buffers = host_buffers(L.leaf);
      copy(L.bn->running_mean(), buffers[0].f32->data(), L.in.c);
      copy(L.bn->running_var(), buffers[1].f32->data(), L.in.c);
      batches_tracked_base_[i] = *buffers[2].i64 - L.bn->num_batches_tracked();
    }
    step_count_ = sgd_.step_count();
    momentum_initialized_ = sgd_.momentum_initialized();
    for (size_t k = 0; momentum_initialized_ && k < params_.size(); ++k) {
      copy(momentum_.get() + params_[k].offset, sgd_.momentum_buffers()[k].data(),
           params_[k].numel);
    }
    SYNCBN_CUDA_CHECK(cudaStreamSynchronize(compute_));
  }

 private:
  CUstream_st* stream() const { return reinterpret_cast<CUstream_st*>(compute_); }

  // Copies outside the step (checkpoints, evaluation, export, resume), on the compute stream
  // (cudaMemcpy's legacy stream does not order with a non-blocking stream); the caller
  // synchronizes once after its copies.
  void copy(float* dst, const float* src, int64_t count) {
    SYNCBN_CUDA_CHECK(cudaMemcpyAsync(dst, src, static_cast<size_t>(count) * sizeof(float),
                                      cudaMemcpyDefault, compute_));
  }

  // running_mean, running_var, num_batches_tracked of host leaf `leaf`.
  std::vector<nn::BufferRef> host_buffers(int leaf) {
    std::vector<nn::BufferRef> buffers;
    model_.layer(static_cast<size_t>(leaf)).collect_buffers(buffers);
    SYNCBN_CHECK(buffers.size() == 3 && buffers[0].f32 != nullptr && buffers[1].f32 != nullptr &&
                 buffers[2].i64 != nullptr);
    return buffers;
  }

  // The device objects of the plan: cuDNN descriptors, SyncBatchNormCuda layers, activation
  // buffers for the largest slice; the parameters' device copies (conv and linear: one flat
  // array; norms: the SyncBatchNormCuda's own), the flat gradient and momentum arrays, buckets.
  void build(const DevicePlan& plan) {
    batches_tracked_base_.assign(plan.layers.size(), 0);
    for (size_t i = 0; i < plan.layers.size(); ++i) {
      DeviceLayer L;
      static_cast<PlannedLayer&>(L) = plan.layers[i];
      if (L.kind == Kind::kConv) {
        L.filter = std::make_unique<FilterDescriptor>();
        SYNCBN_CUDNN_CHECK(cudnnSetFilter4dDescriptor(
            L.filter->get(), CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, static_cast<int>(L.out.c),
            static_cast<int>(L.in.c), static_cast<int>(L.kernel), static_cast<int>(L.kernel)));
        L.conv = std::make_unique<ConvDescriptor>();
        SYNCBN_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(
            L.conv->get(), static_cast<int>(L.padding), static_cast<int>(L.padding),
            static_cast<int>(L.stride), static_cast<int>(L.stride), 1, 1, CUDNN_CROSS_CORRELATION,
            CUDNN_DATA_FLOAT));
        SYNCBN_CUDNN_CHECK(cudnnSetConvolutionMathType(L.conv->get(), CUDNN_FMA_MATH));
      }
      if (L.kind == Kind::kNorm) {
        SYNCBN_CHECK(bn_group_ != nullptr);
        nn::SyncBatchNormOptions options;  // the defaults of both CPU layers
        options.num_features = L.in.c;
        L.bn = std::make_unique<nn::SyncBatchNormCuda>(options, bn_group_.get(), L.name);
        L.bn_local = bn_group_->size() == 1;
      }
      if (L.kind != Kind::kPassThrough)
        L.output = DeviceArray<float>(static_cast<size_t>(max_n_ * L.out.numel()));
      L.grad = DeviceArray<float>(static_cast<size_t>(max_n_ * L.out.numel()));
      if (L.kind == Kind::kMaxPool)
        L.argmax = DeviceArray<int32_t>(static_cast<size_t>(max_n_ * L.out.numel()));
      if (L.kind == Kind::kGroupNorm) {
        L.group_mean = DeviceArray<float>(static_cast<size_t>(max_n_ * L.groups));
        L.group_invstd = DeviceArray<float>(static_cast<size_t>(max_n_ * L.groups));
      }
      layers_.push_back(std::move(L));
    }

    const std::vector<nn::ParamRef> host = model_.parameters();
    for (size_t k = 0; k < plan.params.size(); ++k) {
      DeviceParam p;
      static_cast<PlannedParam&>(p) = plan.params[k];
      p.host = host[k];
      SYNCBN_CHECK(p.host.value->format() == MemoryFormat::kContiguous);
      const DeviceLayer& L = layers_[p.layer];
      if (L.bn != nullptr) {
        p.value = p.is_bias ? L.bn->bias() : L.bn->weight();
        p.bn_grad = p.is_bias ? L.bn->grad_bias() : L.bn->grad_weight();
      }
      params_.push_back(p);
    }
    const size_t total = static_cast<size_t>(plan.total_params);
    values_ = DeviceArray<float>(total);
    grads_ = DeviceArray<float>(total);
    momentum_ = DeviceArray<float>(total);
    for (DeviceParam& p : params_)
      if (p.value == nullptr) p.value = values_.get() + p.offset;
    for (const PlannedBucket& planned : plan.buckets) {
      Bucket b;
      static_cast<PlannedBucket&>(b) = planned;
      b.ready = std::make_unique<Event>();
      buckets_.push_back(std::move(b));
    }
  }

  ConvPlan& plan_for(DeviceLayer& L, int64_t n) {
    for (auto& plan : L.plans)
      if (plan->n == n) return *plan;
    auto plan = std::make_unique<ConvPlan>();
    plan->n = n;
    SYNCBN_CUDNN_CHECK(cudnnSetTensor4dDescriptor(
        plan->x.get(), CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, static_cast<int>(n),
        static_cast<int>(L.in.c), static_cast<int>(L.in.h), static_cast<int>(L.in.w)));
    SYNCBN_CUDNN_CHECK(cudnnSetTensor4dDescriptor(
        plan->y.get(), CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, static_cast<int>(n),
        static_cast<int>(L.out.c), static_cast<int>(L.out.h), static_cast<int>(L.out.w)));
    int count = 0;
    cudnnConvolutionFwdAlgoPerf_t forward[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    SYNCBN_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(
        cudnn_.get(), plan->x.get(), L.filter->get(), L.conv->get(), plan->y.get(),
        CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &count, forward));
    const auto& f = pick_algorithm(forward, count, "cudnnGetConvolutionForwardAlgorithm_v7");
    cudnnConvolutionBwdDataAlgoPerf_t data[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    SYNCBN_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(
        cudnn_.get(), L.filter->get(), plan->y.get(), L.conv->get(), plan->x.get(),
        CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &count, data));
    const auto& d = pick_algorithm(data, count, "cudnnGetConvolutionBackwardDataAlgorithm_v7");
    cudnnConvolutionBwdFilterAlgoPerf_t filter[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    SYNCBN_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
        cudnn_.get(), plan->x.get(), plan->y.get(), L.conv->get(), L.filter->get(),
        CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &count, filter));
    const auto& w = pick_algorithm(filter, count, "cudnnGetConvolutionBackwardFilterAlgorithm_v7");
    plan->forward = f.algo;
    plan->backward_data = d.algo;
    plan->backward_filter = w.algo;
    const size_t needed = std::max({f.memory, d.memory, w.memory});
    if (needed > workspace_.size()) {
      // A new batch size (the first step, or an uneven last batch): not in the steady state.
      SYNCBN_CUDA_CHECK(cudaStreamSynchronize(compute_));
      workspace_ = DeviceArray<unsigned char>(needed);
    }
    L.plans.push_back(std::move(plan));
    return *L.plans.back();
  }

  float* param_value(int k) const {
    return k < 0 ? nullptr : params_[static_cast<size_t>(k)].value;
  }
  float* param_grad(int k) const {
    return k < 0 ? nullptr : grads_.get() + params_[static_cast<size_t>(k)].offset;
  }

  // The output of node `node` (kModelInput: the batch).
  const float* output_of(int node) const {
    return node == kModelInput ? input_.get() : layers_[static_cast<size_t>(node)].y;
  }

  const float* forward(int64_t n) {
    const float one = 1.0f, zero = 0.0f;
    for (DeviceLayer& L : layers_) {
      const float* x = output_of(L.input);
      L.x = x;
      L.y = L.output.get();
      const int64_t out_elements = n * L.out.numel();
      switch (L.kind) {
        case Kind::kConv:
          if (n > 0) {
            const ConvPlan& plan = plan_for(L, n);
            SYNCBN_CUDNN_CHECK(cudnnConvolutionForward(
                cudnn_.get(), &one, plan.x.get(), x, L.filter->get(), param_value(L.weight),
                L.conv->get(), plan.forward, workspace_.get(), workspace_.size(), &zero,
                plan.y.get(), L.y));
            if (L.bias >= 0)
              nn::cuda::add_bias(L.y, param_value(L.bias), n, L.out.c, L.out.h * L.out.w, stream());
          }
          break;
        case Kind::kLinear:
          if (n > 0) {
            // Row-major y (n, out) = x (n, in) · Wᵀ is column-major yᵀ (out, n) = W · xᵀ.
            SYNCBN_CUBLAS_CHECK(
                cublasSgemm(cublas_.get(), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(L.out.c),
                            static_cast<int>(n), static_cast<int>(L.in.numel()), &one,
                            param_value(L.weight), static_cast<int>(L.in.numel()), x,
                            static_cast<int>(L.in.numel()), &zero, L.y, static_cast<int>(L.out.c)));
            if (L.bias >= 0) nn::cuda::add_bias(L.y, param_value(L.bias), n, L.out.c, 1, stream());
          }
          break;
        case Kind::kNorm:
          if (n > 0 || !L.bn_local)  // collective over the BN group, also for an empty slice
            L.bn->forward(x, {n, L.in.c, L.in.h * L.in.w, false}, /*training=*/true, L.y);
          break;
        case Kind::kGroupNorm:
          if (n > 0) {  // local statistics per (sample, group): nothing to exchange
            const norm::BnGeometry g{n, L.in.c, L.in.h * L.in.w, false};
            norm::cuda::gn_stats(x, g, L.groups, kNormEps, L.group_mean.get(), L.group_invstd.get(),
                                 nullptr, stream());
            norm::cuda::gn_elemt(x, g, L.groups, L.group_mean.get(), L.group_invstd.get(),
                                 param_value(L.weight), param_value(L.bias), L.y, stream());
          }
          break;
        case Kind::kRelu:
          nn::cuda::relu_forward(x, out_elements, L.y, stream());
          break;
        case Kind::kMaxPool:
          nn::cuda::maxpool_forward(x, n * L.in.c, L.in.h, L.in.w, L.kernel, L.stride, L.padding,
                                    L.y, L.argmax.get(), stream());
          break;
        case Kind::kGap:
          nn::cuda::gap_forward(x, n * L.in.c, L.in.h * L.in.w, L.y, stream());
          break;
        case Kind::kAdd:
          nn::cuda::add(x, output_of(L.shortcut), out_elements, L.y, stream());
          break;
        case Kind::kPassThrough:
          L.y = const_cast<float*>(x);  // flatten and identity: the same (N, C·H·W) memory
          break;
      }
    }
    return layers_.back().y;
  }

  // Where node L's backward puts the gradient of its input node `input`: that node's gradient
  // when L is its only reader, else the scratch buffer, added to it by settle_input_grad().
  float* input_grad(int input) {
    DeviceLayer& in = layers_[static_cast<size_t>(input)];
    return in.consumers > 1 ? scratch_.get() : in.grad.get();
  }
  void settle_input_grad(int input, int64_t elements) {
    DeviceLayer& in = layers_[static_cast<size_t>(input)];
    if (in.consumers > 1) nn::cuda::accumulate(scratch_.get(), elements, in.grad.get(), stream());
  }
  // Routes a gradient unchanged to node `input` (pass-through layers, both operands of an add).
  void pass_grad(const float* g, int input, int64_t elements) {
    if (input == kModelInput || elements == 0) return;
    DeviceLayer& in = layers_[static_cast<size_t>(input)];
    if (in.consumers > 1) {
      nn::cuda::accumulate(g, elements, in.grad.get(), stream());
    } else {
      SYNCBN_CUDA_CHECK(cudaMemcpyAsync(in.grad.get(), g,
                                        static_cast<size_t>(elements) * sizeof(float),
                                        cudaMemcpyDeviceToDevice, compute_));
    }
  }

  // Backward from dlogits in the last node's gradient; after each node its parameters' gradients
  // are final and may start their bucket's allreduce. Nodes run in reverse execution order, so a
  // node's output gradient is complete (every reader has added to it) when its turn comes.
  void backward(int64_t n) {
    const float one = 1.0f, zero = 0.0f;
    for (size_t i = layers_.size(); i-- > 0;) {
      DeviceLayer& L = layers_[i];
      const float* g = L.grad.get();
      const bool need_dx = L.input != kModelInput;  // nothing consumes the batch's gradient
      const int64_t in_elements = n * L.in.numel();
      float* dx = need_dx ? input_grad(L.input) : nullptr;
      // cuDNN and cuBLAS add into a branch point's gradient themselves (beta = 1).
      const bool blend = need_dx && layers_[static_cast<size_t>(L.input)].consumers > 1;
      if (blend) dx = layers_[static_cast<size_t>(L.input)].grad.get();
      const float* beta = blend ? &one : &zero;
      bool settle = false;  // dx went to the scratch buffer
      switch (L.kind) {
        case Kind::kConv:
          if (n > 0) {
            const ConvPlan& plan = plan_for(L, n);
            if (L.bias >= 0)
              nn::cuda::bias_backward(g, n, L.out.c, L.out.h * L.out.w, param_grad(L.bias),
                                      stream());
            SYNCBN_CUDNN_CHECK(cudnnConvolutionBackwardFilter(
                cudnn_.get(), &one, plan.x.get(), L.x, plan.y.get(), g, L.conv->get(),
                plan.backward_filter, workspace_.get(), workspace_.size(), &one, L.filter->get(),
                param_grad(L.weight)));
            if (need_dx) {
              SYNCBN_CUDNN_CHECK(cudnnConvolutionBackwardData(
                  cudnn_.get(), &one, L.filter->get(), param_value(L.weight), plan.y.get(), g,
                  L.conv->get(), plan.backward_data, workspace_.get(), workspace_.size(), beta,
                  plan.x.get(), dx));
            }
          }
          break;
        case Kind::kLinear:
          if (n > 0) {
            const int in = static_cast<int>(L.in.numel()), out = static_cast<int>(L.out.c);
            if (L.bias >= 0)
              nn::cuda::bias_backward(g, n, L.out.c, 1, param_grad(L.bias), stream());
            // dW (out, in) += dyᵀ · x: column-major dWᵀ (in, out) += xᵀ · dy.
            SYNCBN_CUBLAS_CHECK(cublasSgemm(cublas_.get(), CUBLAS_OP_N, CUBLAS_OP_T, in, out,
                                            static_cast<int>(n), &one, L.x, in, g, out, &one,
                                            param_grad(L.weight), in));
            // dx (n, in) = dy · W: column-major dxᵀ (in, n) = Wᵀ · dyᵀ.
            if (need_dx) {
              SYNCBN_CUBLAS_CHECK(cublasSgemm(cublas_.get(), CUBLAS_OP_N, CUBLAS_OP_N, in,
                                              static_cast<int>(n), out, &one, param_value(L.weight),
                                              in, g, out, beta, dx, in));
            }
          }
          break;
        case Kind::kAdd:
          pass_grad(g, L.input, n * L.out.numel());
          pass_grad(g, L.shortcut, n * L.out.numel());
          break;
        case Kind::kPassThrough:
          pass_grad(g, L.input, in_elements);
          break;
        default:
          // The kernels below overwrite dx: a branch point's share goes through the scratch.
          if (blend) dx = scratch_.get();
          settle = blend;
          if (!need_dx) dx = scratch_.get();  // computed, unused (a model starting with one)
          backward_elementwise(L, n, g, dx);
          break;
      }
      if (settle) settle_input_grad(L.input, in_elements);
      for (int k : {L.bias, L.weight})
        if (k >= 0) mark_ready(static_cast<size_t>(k));
    }
  }

  // Norms, ReLU and the pools: dx (overwritten) from dy = g.
  void backward_elementwise(DeviceLayer& L, int64_t n, const float* g, float* dx) {
    switch (L.kind) {
      case Kind::kNorm:
        if (n > 0 || !L.bn_local) L.bn->backward(g, dx);
        break;
      case Kind::kGroupNorm:
        if (n > 0) {  // dγ, dβ overwritten: the flat gradients of this step
          norm::cuda::gn_backward(g, L.x, {n, L.in.c, L.in.h * L.in.w, false}, L.groups,
                                  L.group_mean.get(), L.group_invstd.get(), param_value(L.weight),
                                  dx, param_grad(L.weight), param_grad(L.bias), stream());
        }
        break;
      case Kind::kRelu:
        nn::cuda::relu_backward(g, L.y, n * L.out.numel(), dx, stream());
        break;
      case Kind::kMaxPool:
        nn::cuda::maxpool_backward(g, L.argmax.get(), n * L.in.c, L.in.h, L.in.w, L.kernel,
                                   L.stride, L.padding, dx, stream());
        break;
      case Kind::kGap:
        nn::cuda::gap_backward(g, n * L.in.c, L.in.h * L.in.w, dx, stream());
        break;
      case Kind::kConv:
      case Kind::kLinear:
      case Kind::kAdd:
      case Kind::kPassThrough:
        SYNCBN_CHECK(false && "not an elementwise node");
    }
  }

  void mark_ready(size_t k) {
    const DeviceParam& p = params_[k];
    if (p.bn_grad != nullptr) {
      SYNCBN_CUDA_CHECK(cudaMemcpyAsync(grads_.get() + p.offset, p.bn_grad,
                                        static_cast<size_t>(p.numel) * sizeof(float),
                                        cudaMemcpyDeviceToDevice, compute_));
    }
    Bucket& b = buckets_[static_cast<size_t>(p.bucket)];
    if (b.pending == 0) b.pending = b.last - b.first + 1;  // its first parameter this step
    if (--b.pending > 0) return;
    // The bucket's gradients are enqueued: the side stream reduces them while backward goes on.
    b.ready->order(compute_, side_.get());
    b.request = grad_world_->allreduce_sum_async(grads_.get() + b.begin, grads_.get() + b.begin,
                                                 b.end - b.begin);
  }

  void update(double lr) {
    const optim::SgdOptions& o = sgd_.options();
    SYNCBN_REQUIRE(std::isfinite(lr) && lr >= 0, "Invalid learning rate: ", lr);
    const nn::cuda::SgdStep u = nn::cuda::sgd_step(lr, o.momentum, o.dampening, o.weight_decay,
                                                   o.nesterov, !momentum_initialized_);
    for (const DeviceParam& p : params_) {
      nn::cuda::sgd_update(p.value, grads_.get() + p.offset,
                           u.has_momentum ? momentum_.get() + p.offset : nullptr, p.numel, u,
                           stream());
    }
    if (u.has_momentum) momentum_initialized_ = true;
    ++step_count_;
  }

  Sequential& model_;
  optim::SGD& sgd_;
  int64_t max_n_;
  std::unique_ptr<comm::Communicator> bn_world_;  // declared before every device member
  cudaStream_t compute_ = nullptr;                // bn_world_'s
  Stream side_, copy_;  // before grad_world_, which enqueues on side_ until it is destroyed
  std::unique_ptr<comm::Communicator> grad_world_, bn_group_;
  Event copied_, reduced_;
  CudnnHandle cudnn_;
  CublasHandle cublas_;
  std::vector<DeviceLayer> layers_;
  std::vector<DeviceParam> params_;
  std::vector<Bucket> buckets_;
  DeviceArray<float> values_, grads_, momentum_;
  DeviceArray<float> input_, scratch_;
  DeviceArray<int32_t> labels_;
  DeviceArray<double> row_loss_, loss_sum_;
  DeviceArray<unsigned char> workspace_;
  PinnedArray<float> pinned_images_;  // (max batch, sample)
  PinnedArray<int32_t> pinned_labels_{static_cast<size_t>(max_n_)};
  PinnedArray<double> pinned_loss_{1};
  std::vector<int64_t> batches_tracked_base_;
  int64_t step_count_ = 0;
  bool momentum_initialized_ = false;
};

}  // namespace

void require_cuda_device() {
  int devices = 0;
  const cudaError_t status = cudaGetDeviceCount(&devices);
  if (status != cudaSuccess) {
    cudaGetLastError();  // clear it
    throw Error(str_cat("device: cuda but no CUDA device is visible (cudaGetDeviceCount: ",
                        cudaGetErrorString(status), ")"));
  }
  SYNCBN_REQUIRE(devices > 0,
                 "device: cuda but no CUDA device is visible (cudaGetDeviceCount: 0 devices)");
}

std::unique_ptr<StepBackend> make_cuda_backend(const Config& config, const data::DatasetInfo& info,
                                               Sequential& model, optim::SGD& sgd,
                                               comm::Communicator& world) {
  return std::make_unique<CudaBackend>(config, info, model, sgd, world);
}

}  // namespace syncbn::train
