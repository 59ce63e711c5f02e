#include "train/trainer.h"

#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>

#include "comm/mpi_environment.h"
#include "coordinator/background_client.h"
#include "coordinator/spill_dir.h"
#include "core/duration.h"
#include "core/error.h"
#include "core/escape.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "nn/layers.h"
#include "nn/sync_batch_norm.h"
#include "optim/lr_schedule.h"
#include "optim/sgd.h"
#include "train/checkpoint.h"
#include "train/grad_reducer.h"
#include "train/metrics.h"
#include "train/model.h"
#include "train/step_backend.h"
#include "train/test_hooks.h"
#include "train/weights.h"

namespace syncbn::train {
namespace {

using Clock = std::chrono::steady_clock;

struct EvalResult {
  double loss = 0;
  double accuracy = 0;
};

// The test set split into contiguous shards, one per rank; sums reduced exactly in float64.
EvalResult evaluate(Sequential& model, const data::Dataset& test, comm::Communicator& world,
                    const std::function<void()>& on_batch) {
  const int64_t begin = test.count * world.rank() / world.size();
  const int64_t end = test.count * (world.rank() + 1) / world.size();
  // Every layer keeps its forward input (for a backward), so an eval forward holds all of a
  // batch's activations at once: 100 images keep that under ~200 MB for resnet20 at 28×28
  // (500 took a rank from 370 MB to 1.2 GB).
  constexpr int64_t kEvalBatch = 100;
  double sums[2] = {0, 0};  // loss sum, correct
  for (int64_t first = begin; first < end; first += kEvalBatch) {
    const int64_t last = std::min(end, first + kEvalBatch);
    std::vector<int64_t> indices(static_cast<size_t>(last - first));
    for (int64_t i = first; i < last; ++i) indices[static_cast<size_t>(i - first)] = i;
    const data::Batch batch = data::assemble_batch(test, indices, /*augment=*/false, 0, 0);
    const Tensor logits = model.forward(batch.images, /*training=*/false);
    test_hooks::fail_at(test_hooks::Stage::kEval);
    on_batch();
    int64_t correct = 0;
    sums[0] += nn::softmax_cross_entropy(logits, batch.labels.data(), 1.0, nullptr, &correct);
    sums[1] += static_cast<double>(correct);
  }
  world.allreduce_sum(sums, 2);
  return {sums[0] / static_cast<double>(test.count), sums[1] / static_cast<double>(test.count)};
}

// Local BN keeps per-rank running statistics; the model that is evaluated and exported is rank
// 0's, as with PyTorch DDP's broadcast_buffers.
void broadcast_buffers(Sequential& model, comm::Communicator& world) {
  for (nn::BufferRef& b : model.buffers()) {
    if (b.f32) world.broadcast(b.f32->data(), b.f32->numel(), 0);
    if (b.i64) world.broadcast(b.i64, 1, 0);
  }
}

// Rank 0's output: JSON lines to the metrics file, and progress for people.
class Reporter {
 public:
  Reporter(bool active, const std::string& metrics_path, bool progress, int64_t total_steps)
      : active_(active),
        progress_(progress && active),
        tty_(isatty(STDOUT_FILENO) != 0),
        total_steps_(total_steps),
        start_(Clock::now()) {
    if (active_ && !metrics_path.empty()) {
      metrics_.open(metrics_path, std::ios::out | std::ios::trunc);
      SYNCBN_REQUIRE(metrics_.good(), "cannot write the metrics file '", metrics_path, "'");
    }
  }

  // sync_bn_comm_ms: rank 0's time inside SyncBN allreduces per step over the window (0 without
  // SyncBN layers); like images_per_s, a timing that differs between identical runs.
  void train(int64_t step, int64_t epoch, double loss, double lr, double images_per_s,
             double sync_bn_comm_ms) {
    if (!active_) return;
    write({.kind = MetricsRecord::Kind::kTrain,
           .step = step,
           .epoch = epoch,
           .loss = loss,
           .lr = lr,
           .images_per_s = images_per_s,
           .sync_bn_comm_ms = sync_bn_comm_ms});
    if (!progress_) return;
    const double elapsed = std::chrono::duration<double>(Clock::now() - start_).count();
    const double eta =
        elapsed / static_cast<double>(step) * static_cast<double>(total_steps_ - step);
    if (tty_) {
      const int width = 30;
      const int filled = static_cast<int>(width * step / total_steps_);
      std::printf("\r[%s%s] step %lld/%lld loss %.4f %.0f img/s ETA %s ",
                  std::string(static_cast<size_t>(filled), '#').c_str(),
                  std::string(static_cast<size_t>(width - filled), '.').c_str(),
                  static_cast<long long>(step), static_cast<long long>(total_steps_), loss,
                  images_per_s, format_duration(eta).c_str());
      if (step == total_steps_) std::printf("\n");
    } else {
      std::printf("step %lld/%lld epoch %lld loss %.4f lr %.4g %.0f img/s ETA %s\n",
                  static_cast<long long>(step), static_cast<long long>(total_steps_),
                  static_cast<long long>(epoch), loss, lr, images_per_s,
                  format_duration(eta).c_str());
    }
    std::fflush(stdout);
  }

  void eval(int64_t step, int64_t epoch, const EvalResult& r) {
    if (!active_) return;
    write({.kind = MetricsRecord::Kind::kEval,
           .step = step,
           .epoch = epoch,
           .loss = r.loss,
           .accuracy = r.accuracy});
    if (progress_) {
      std::printf("%seval step %lld epoch %lld: test loss %.4f, accuracy %.2f%%\n",
                  tty_ ? "\n" : "", static_cast<long long>(step), static_cast<long long>(epoch),
                  r.loss, 100.0 * r.accuracy);
      std::fflush(stdout);
    }
  }

 private:
  void write(const MetricsRecord& record) {
    if (!metrics_.is_open()) return;
    metrics_ << metrics_line(record) << '\n';
    metrics_.flush();
  }

  bool active_, progress_, tty_;
  int64_t total_steps_;
  Clock::time_point start_;
  std::ofstream metrics_;
};

// The CPU step: the host model's layers, gradients reduced in buckets as backward produces them
// (parameters of layer i are final once its backward has run), then SGD.
class CpuBackend final : public StepBackend {
 public:
  CpuBackend(Sequential& model, optim::SGD& sgd, comm::Communicator& world)
      : model_(model), sgd_(sgd), reducer_(model.parameters(), &world) {
    const std::vector<size_t> owner = model.parameter_layers();
    params_of_layer_.resize(model.size());
    for (size_t k = 0; k < owner.size(); ++k) params_of_layer_[owner[k]].push_back(k);
  }

  void step(const data::Batch& batch, double lr) override {
    sgd_.zero_grad();
    test_hooks::fail_at(test_hooks::Stage::kForward);
    const Tensor logits = model_.forward(batch.images, /*training=*/true);
    Tensor dlogits;
    // d(mean loss over the global batch)/d logits: summing the ranks' gradients gives the
    // gradient of one process training on the whole global batch, also for uneven slices.
    loss_sum_ = nn::softmax_cross_entropy(logits, batch.labels.data(),
                                          1.0 / static_cast<double>(batch.global_batch_size),
                                          &dlogits, nullptr);
    bool first_layer = true;
    model_.backward(dlogits, [&](size_t layer) {
      if (first_layer) test_hooks::fail_at(test_hooks::Stage::kBackward);
      first_layer = false;
      for (size_t k : params_of_layer_[layer]) reducer_.mark_ready(k);
    });
    test_hooks::fail_at(test_hooks::Stage::kAllreduce);
    reducer_.finish();
    sgd_.step(lr);
  }

  double last_loss_sum() override { return loss_sum_; }

  double sync_bn_comm_seconds() override {
    double seconds = 0;
    for (size_t i = 0; i < model_.size(); ++i)
      if (auto* bn = dynamic_cast<nn::SyncBatchNormLayer*>(&model_.layer(i)))
        seconds += bn->impl().counters().comm_seconds;
    return seconds;
  }

 private:
  Sequential& model_;
  optim::SGD& sgd_;
  GradReducer reducer_;
  std::vector<std::vector<size_t>> params_of_layer_;
  double loss_sum_ = 0;
};

}  // namespace

std::unique_ptr<StepBackend> make_cpu_backend(Sequential& model, optim::SGD& sgd,
                                              comm::Communicator& world) {
  return std::make_unique<CpuBackend>(model, sgd, world);
}

Config join_run(coordinator::Client& client, const std::string& run_id, int64_t generation,
                const Config& own, comm::Communicator& world) {
  Config run = own;
  agree(world, [&] {
    char host[256] = {};
    ::gethostname(host, sizeof(host) - 1);
    coordinator::JoinRequest request;
    request.run_id = run_id;
    request.rank = world.rank();
    request.world_size = world.size();
    request.generation = generation;
    request.host = host;
    request.pid = ::getpid();
    request.config_yaml = to_yaml(own);
    request.config_hash = config_hash(own);
    request.keep_last = static_cast<int32_t>(own.checkpoint.keep_last);
    const coordinator::JoinReply reply = client.join(request);
    run = parse_config(reply.config_yaml, {}, "the run's config from the coordinator");
  });
  return run;
}

void agree(comm::Communicator& world, const std::function<void()>& body) {
  std::string error;
  try {
    body();
  } catch (const Error& e) {
    error = e.what();
  }
  double failed = error.empty() ? 0.0 : 1.0;
  world.allreduce_sum(&failed, 1);
  if (!error.empty()) throw AgreedError(error);
  if (failed > 0)
    throw PeerError(str_cat(static_cast<int>(failed), " other rank(s) failed; see their message"));
}

namespace {

std::string default_spill_dir(const TrainOptions& options) {
  if (!options.spill_dir.empty()) return options.spill_dir;
  if (const char* dir = std::getenv("SYNCBN_SPILL_DIR"); dir != nullptr && *dir != '\0') return dir;
  const std::string& beside =
      !options.export_weights.empty() ? options.export_weights : options.metrics_out;
  const std::filesystem::path parent =
      beside.empty() ? std::filesystem::path(".") : std::filesystem::path(beside).parent_path();
  return ((parent.empty() ? std::filesystem::path(".") : parent) / ("spill-" + options.run_id))
      .string();
}

// One training run, in the order it happens: the constructor sets up (model, data, optimizer,
// schedule, step backend; every error there is agreed), run() resumes, loops and finishes.
class Trainer {
 public:
  Trainer(const Config& config, comm::Communicator& world, const TrainOptions& options)
      : config_(config),
        world_(world),
        options_(options),
        coord_(options.coordinator.get()),
        checkpointing_(coord_ != nullptr || !config.checkpoint.dir.empty()),
        local_bn_(config.model.norm == Norm::kBn),
        checkpoints_(config.checkpoint.dir, config.checkpoint.keep_last) {
    omp_set_num_threads(static_cast<int>(config.train.threads));  // ours and oneDNN's GEMMs'
    // A GPU may be missing on some hosts only.
    if (config.device == Device::kCuda) agree(world, [] { require_cuda_device(); });
    // Errors that depend only on the config are raised by every rank before any collective.
    agree(world, [&] {
      SYNCBN_REQUIRE(!options.resume || checkpointing_,
                     "--resume needs a coordinator (--coordinator) or a checkpoint directory "
                     "(--checkpoint-dir or checkpoint.dir)");
      if (config.model.norm == Norm::kSyncBn)
        bn_group_ = nn::make_bn_group(world, static_cast<int>(config.model.bn_group_size));
      format_ = data::parse_format(config.data.format);
      info_ = data::dataset_info(format_);
      model_ = build_model(config, info_, bn_group_.get());
    });
    // Files may be missing or broken on some hosts only.
    agree(world, [&] {
      train_set_ = data::load_dataset(format_, config.data.dir, data::Split::kTrain,
                                      config.data.train_limit);
      test_set_ =
          data::load_dataset(format_, config.data.dir, data::Split::kTest, config.data.test_limit);
      if (!options.init_from.empty()) load_weights(options.init_from, model_);
    });
    agree(world, [&] {
      optim::SgdOptions sgd_options;
      sgd_options.lr = config.train.lr;
      sgd_options.momentum = config.train.momentum;
      sgd_options.nesterov = config.train.nesterov;
      sgd_options.weight_decay = config.train.weight_decay;
      sgd_ = std::make_unique<optim::SGD>(model_.parameters(), sgd_options);

      data::LoaderOptions loader_options;
      loader_options.global_batch = world.size() * config.train.per_rank_batch;
      loader_options.seed = config.seed;
      loader_options.shuffle = config.data.shuffle;
      loader_options.augment = config.data.augment;
      loader_ =
          std::make_unique<data::Loader>(train_set_, loader_options, world.rank(), world.size());
      steps_per_epoch_ = loader_->steps_per_epoch();
      total_steps_ =
          config.train.steps > 0 ? config.train.steps : config.train.epochs * steps_per_epoch_;

      schedule_.kind = config.train.schedule;
      schedule_.base_lr = config.train.lr;
      schedule_.warmup_steps = config.train.warmup_steps;
      schedule_.total_steps = total_steps_;
      schedule_.step_size = config.train.step_size;
      schedule_.gamma = config.train.gamma;
      schedule_.min_lr = config.train.min_lr;
      if (const std::string note = schedule_.fit_warmup_to_run();
          !note.empty() && world.rank() == 0)
        std::printf("note: %s\n", note.c_str());
      schedule_.validate();
    });
    backend_ = config.device == Device::kCuda
                   ? make_cuda_backend(config, info_, model_, *sgd_, world)
                   : make_cpu_backend(model_, *sgd_, world);
    reporter_ = std::make_unique<Reporter>(world.rank() == 0, options.metrics_out, options.progress,
                                           total_steps_);
    spill_dir_ = default_spill_dir(options);
  }

  TrainResult run() {
    if (options_.resume) resume();
    if (coord_ != nullptr) start_background_client();
    backend_->from_host();
    agree(world_, [&] { test_hooks::configure(world_.rank(), options_.generation); });
    window_start_ = Clock::now();
    for (int64_t step = start_step_ + 1; step <= total_steps_; ++step) {
      test_hooks::step_begins(step, step == start_step_ + 1);
      train_step(step);
      if (step % config_.train.log_every == 0 || step == total_steps_) report_train(step);
      evaluated_last_ = eval_due(step);
      if (evaluated_last_) evaluate_and_report(step);
      if (checkpoint_due(step)) save_checkpoint(step);
      if (background_) background_->progress(step), background_->check();
      result_.steps = step;
      test_hooks::step_done(step);
    }
    finish();
    return result_;
  }

 private:
  int64_t epoch_of(int64_t step) const { return (step - 1) / steps_per_epoch_; }

  bool eval_due(int64_t step) const {
    const int64_t every = config_.train.eval_every_epochs;
    return step % steps_per_epoch_ == 0 && every > 0 && (epoch_of(step) + 1) % every == 0;
  }

  bool checkpoint_due(int64_t step) const {
    const int64_t every = config_.checkpoint.every_steps;
    return checkpointing_ && every > 0 && step % every == 0 && step < total_steps_;
  }

  // The batch of `step` (its position in the data order is a pure function of the step), then
  // one step of the backend.
  void train_step(int64_t step) {
    const int64_t data_step = test_hooks::forget_position() ? step - start_step_ - 1 : step - 1;
    const data::Batch batch =
        loader_->batch(data_step / steps_per_epoch_, data_step % steps_per_epoch_);
    last_lr_ = schedule_.lr_at(step);
    backend_->step(batch, last_lr_);
    last_global_batch_ = batch.global_batch_size;
    window_images_ += static_cast<double>(batch.global_batch_size);
    ++window_steps_;
  }

  // The global mean loss of the last step (one allreduce), throughput over the window since the
  // last report, to the metrics file, the progress line and the coordinator.
  void report_train(int64_t step) {
    double loss = backend_->last_loss_sum();
    world_.allreduce_sum(&loss, 1);
    loss /= static_cast<double>(last_global_batch_);
    const double seconds = std::chrono::duration<double>(Clock::now() - window_start_).count();
    const double comm_seconds = backend_->sync_bn_comm_seconds();
    reporter_->train(
        step, epoch_of(step), loss, last_lr_, window_images_ / std::max(seconds, 1e-9),
        1e3 * (comm_seconds - window_comm_start_) / static_cast<double>(window_steps_));
    if (background_ && world_.rank() == 0) {
      coordinator::MetricsReport report;
      report.step = step;
      report.values = {{"loss", loss}, {"lr", last_lr_}};
      background_->report_metrics(std::move(report));
    }
    window_images_ = 0;
    window_start_ = Clock::now();
    window_comm_start_ = comm_seconds;
    window_steps_ = 0;
  }

  // The host model as every rank evaluates, checkpoints and exports it. Local BN keeps per-rank
  // running statistics; rank 0's are used, as with PyTorch DDP's broadcast_buffers.
  void sync_host_model() {
    backend_->to_host();
    if (local_bn_) broadcast_buffers(model_, world_);
  }

  void evaluate_and_report(int64_t step) {
    sync_host_model();
    const EvalResult r = evaluate(model_, test_set_, world_, [this] {
      if (background_) background_->touch();
    });
    reporter_->eval(step, epoch_of(step), r);
    result_.final_loss = r.loss;
    result_.final_accuracy = r.accuracy;
  }

  // Costs the loop the snapshot into memory; with a coordinator, the background client writes
  // it to the spill directory and uploads it.
  void save_checkpoint(int64_t step) {
    sync_host_model();
    test_hooks::fail_at(test_hooks::Stage::kCheckpoint);
    agree(world_, [&] {
      if (world_.rank() != 0) return;
      std::vector<uint8_t> payload =
          encode_checkpoint(config_, world_.size(), step, steps_per_epoch_, model_, *sgd_);
      if (background_) {
        background_->put_checkpoint(step, std::string(payload.begin(), payload.end()));
      } else {
        checkpoints_.save(step, payload);
      }
    });
  }

  // Heartbeats (carrying the last finished step), metrics and checkpoint uploads from now on go
  // through a background thread. Rank 0 keeps checkpoints in the spill directory until the
  // coordinator has them, and says when the coordinator goes away and when it is back.
  void start_background_client() {
    coordinator::BackgroundOptions bg;
    bg.client = coord_->options();
    bg.run_id = options_.run_id;
    bg.rank = world_.rank();
    bg.generation = options_.generation;
    bg.keep_last = config_.checkpoint.keep_last;
    bg.checkpoint_meta.config_hash = config_hash(config_);
    bg.checkpoint_meta.world_size = world_.size();
    bg.checkpoint_meta.format_version = kCheckpointFormatVersion;
    if (world_.rank() == 0) {
      bg.spill_dir = spill_dir_;
      bg.log = [rank = world_.rank()](const std::string& line) {
        std::fprintf(stderr, "syncbn train: [rank %d] warning: %s\n", rank,
                     escape_control(line).c_str());
      };
    }
    background_ = std::make_unique<coordinator::BackgroundClient>(std::move(bg));
    background_->progress(start_step_);
  }

  // Rank 0 reads the newest valid checkpoint and sends it to every rank; each restores it (the
  // same bytes, so the same outcome everywhere).
  void resume() {
    std::vector<uint8_t> payload;
    std::string source;
    agree(world_, [&] {
      if (world_.rank() == 0) payload = newest_checkpoint(&source).value_or(payload);
    });
    int64_t size = static_cast<int64_t>(payload.size());
    world_.broadcast(&size, 1, 0);
    payload.resize(static_cast<size_t>(size));
    world_.broadcast(payload.data(), size, 0);
    if (size == 0) {
      if (world_.rank() == 0)
        std::printf("no checkpoint in %s yet: starting from step 0\n",
                    coord_ != nullptr ? coord_->address().c_str() : config_.checkpoint.dir.c_str());
      return;
    }
    agree(world_, [&] {
      start_step_ = restore_checkpoint(payload, source.empty() ? "the checkpoint" : source, config_,
                                       world_.size(), model_, *sgd_);
      SYNCBN_REQUIRE(start_step_ <= total_steps_, "cannot resume: the checkpoint is at step ",
                     start_step_, ", beyond this run's ", total_steps_, " steps");
    });
    result_.resumed_from = start_step_;
    if (world_.rank() == 0)
      std::printf("resuming from step %lld (%s)\n", static_cast<long long>(start_step_),
                  source.c_str());
  }

  // With a coordinator: the newer of its newest valid checkpoint and the spill directory's
  // (which holds what it could not take yet), saying which.
  std::optional<std::vector<uint8_t>> newest_checkpoint(std::string* source) {
    if (coord_ == nullptr) return checkpoints_.newest_valid(source);
    std::optional<coordinator::Client::Checkpoint> c = coord_->get_checkpoint(options_.run_id);
    std::string spill_source;
    std::optional<std::vector<uint8_t>> spilled = newest_spilled(&spill_source);
    const int64_t spill_step = spilled ? checkpoint_step(*spilled, spill_source) : -1;
    if (c && c->meta.step >= spill_step) {
      *source = str_cat("checkpoint step ", c->meta.step, " of run '", options_.run_id, "' at ",
                        coord_->address(), ", the newest; the spill directory ", spill_dir_,
                        spilled ? str_cat(" has step ", spill_step) : std::string(" is empty"));
      return std::vector<uint8_t>(c->data.begin(), c->data.end());
    }
    if (!spilled) return std::nullopt;
    *source = str_cat(spill_source, " from the spill directory, newer than ",
                      c ? str_cat("the coordinator's step ", c->meta.step)
                        : std::string("anything the coordinator has"));
    return spilled;
  }

  // The newest spilled checkpoint that passes its CRC32C and its own checksum.
  std::optional<std::vector<uint8_t>> newest_spilled(std::string* source) const {
    const coordinator::SpillDir spill(spill_dir_, config_.checkpoint.keep_last);
    std::vector<coordinator::SpillDir::Entry> entries = spill.list();
    for (auto it = entries.rbegin(); it != entries.rend(); ++it) {
      std::string problem;
      std::optional<std::string> data = spill.read(*it, &problem);
      std::vector<uint8_t> bytes;
      if (data) bytes.assign(data->begin(), data->end());
      if (data && verify_checkpoint(bytes, it->path, &problem)) {
        *source = it->path;
        return bytes;
      }
      std::fprintf(stderr, "syncbn: skipping damaged checkpoint: %s\n",
                   escape_control(problem).c_str());
    }
    return std::nullopt;
  }

  // The last evaluation (unless the loop just did it), the final checkpoint and the weights.
  void finish() {
    if (!evaluated_last_) evaluate_and_report(total_steps_);
    sync_host_model();
    if (checkpointing_ && result_.steps > start_step_) save_checkpoint(total_steps_);
    if (background_) background_->touch();
    agree(world_, [&] {
      if (!options_.export_weights.empty() && world_.rank() == 0)
        save_weights(options_.export_weights, model_);
    });
    if (background_) finish_background_client();
  }

  // Sends what is left; if the coordinator stays away, the run still succeeds and says where
  // its checkpoints are and how to upload them.
  void finish_background_client() {
    const coordinator::BackgroundClient::Summary s =
        background_->finish(options_.coordinator_final_wait);
    background_.reset();
    if (world_.rank() != 0) return;
    if (s.dropped_metrics > 0)
      std::fprintf(stderr,
                   "syncbn train: [rank 0] warning: %lld metrics report(s) were dropped while "
                   "the coordinator was unreachable (the metrics file has them all)\n",
                   static_cast<long long>(s.dropped_metrics));
    if (s.spilled_steps.empty()) return;
    std::string steps;
    for (int64_t step : s.spilled_steps) {
      if (!steps.empty()) steps += ' ';
      steps += std::to_string(step);
    }
    std::fprintf(stderr,
                 "syncbn train: [rank 0] warning: the coordinator at %s %s; checkpoint step(s) "
                 "%s are kept in %s; upload them with:\n  syncbn ckpt push --coordinator %s "
                 "--run %s %s\n",
                 coord_->address().c_str(),
                 s.coordinator_reachable ? "did not take every checkpoint" : "is unreachable",
                 steps.c_str(), spill_dir_.c_str(), coord_->address().c_str(),
                 options_.run_id.c_str(), spill_dir_.c_str());
  }

  const Config& config_;
  comm::Communicator& world_;
  const TrainOptions& options_;
  coordinator::Client* coord_;
  const bool checkpointing_;
  const bool local_bn_;
  CheckpointDir checkpoints_;

  std::unique_ptr<comm::Communicator> bn_group_;
  data::Format format_{};
  data::DatasetInfo info_;
  Sequential model_;
  data::Dataset train_set_, test_set_;
  std::unique_ptr<optim::SGD> sgd_;
  std::unique_ptr<data::Loader> loader_;
  optim::LrSchedule schedule_;
  int64_t steps_per_epoch_ = 0;
  int64_t total_steps_ = 0;
  std::unique_ptr<StepBackend> backend_;
  std::unique_ptr<Reporter> reporter_;
  std::string spill_dir_;
  std::unique_ptr<coordinator::BackgroundClient> background_;

  int64_t start_step_ = 0;
  TrainResult result_;
  bool evaluated_last_ = false;
  double last_lr_ = 0;
  int64_t last_global_batch_ = 1;
  double window_images_ = 0;
  Clock::time_point window_start_;
  double window_comm_start_ = 0;
  int64_t window_steps_ = 0;
};

}  // namespace

TrainResult run_training(const Config& config, comm::Communicator& world,
                         const TrainOptions& options) {
  // No hang, ever (DESIGN.md §4). An error every rank raises together goes through agree() and
  // ends every rank with AgreedError or PeerError: a clean exit. Any other error is seen by this
  // rank alone while the others wait (or soon will) in a collective that can never complete:
  // report it and MPI_Abort, which makes mpirun end every rank within seconds. This must happen
  // before the Trainer is destroyed: its destructors would wait for collectives in flight.
  std::unique_ptr<Trainer> trainer;
  try {
    trainer = std::make_unique<Trainer>(config, world, options);
    return trainer->run();
  } catch (const AgreedError&) {
    throw;
  } catch (const PeerError&) {
    throw;
  } catch (const std::exception& e) {
    if (world.size() == 1) throw;
    std::fprintf(stderr, "syncbn train: [rank %d] error: %s\n", world.rank(), e.what());
    std::fprintf(stderr,
                 "syncbn train: [rank %d] this error is on this rank only: aborting the job\n",
                 world.rank());
    comm::abort_world(1);
  }
}

}  // namespace syncbn::train
