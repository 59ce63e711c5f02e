#include "train/trainer.h"

#include <omp.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>

#include "core/error.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "nn/layers.h"
#include "nn/sync_batch_norm.h"
#include "optim/lr_schedule.h"
#include "optim/sgd.h"
#include "train/checkpoint.h"
#include "train/grad_reducer.h"
#include "train/model.h"
#include "train/step_backend.h"
#include "train/weights.h"

namespace syncbn::train {
namespace {

using Clock = std::chrono::steady_clock;

struct EvalResult {
  double loss = 0;
  double accuracy = 0;
};

// The test set split into contiguous shards, one per rank; sums reduced exactly in float64.
EvalResult evaluate(Sequential& model, const data::Dataset& test, comm::Communicator& world) {
  const int64_t begin = test.count * world.rank() / world.size();
  const int64_t end = test.count * (world.rank() + 1) / world.size();
  constexpr int64_t kEvalBatch = 500;
  double sums[2] = {0, 0};  // loss sum, correct
  for (int64_t first = begin; first < end; first += kEvalBatch) {
    const int64_t last = std::min(end, first + kEvalBatch);
    std::vector<int64_t> indices(static_cast<size_t>(last - first));
    for (int64_t i = first; i < last; ++i) indices[static_cast<size_t>(i - first)] = i;
    const data::Batch batch = data::assemble_batch(test, indices, /*augment=*/false, 0, 0);
    const Tensor logits = model.forward(batch.images, /*training=*/false);
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

std::string format_duration(double seconds) {
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  char text[32];
  if (s >= 3600) {
    std::snprintf(text, sizeof(text), "%lldh%02lldm", static_cast<long long>(s / 3600),
                  static_cast<long long>(s / 60 % 60));
  } else {
    std::snprintf(text, sizeof(text), "%lldm%02llds", static_cast<long long>(s / 60),
                  static_cast<long long>(s % 60));
  }
  return text;
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
    char line[320];
    std::snprintf(line, sizeof(line),
                  "{\"kind\":\"train\",\"step\":%lld,\"epoch\":%lld,\"loss\":%.9g,\"lr\":%.9g,"
                  "\"images_per_s\":%.1f,\"sync_bn_comm_ms\":%.4f}",
                  static_cast<long long>(step), static_cast<long long>(epoch), loss, lr,
                  images_per_s, sync_bn_comm_ms);
    write(line);
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
    char line[256];
    std::snprintf(
        line, sizeof(line),
        "{\"kind\":\"eval\",\"step\":%lld,\"epoch\":%lld,\"loss\":%.9g,\"accuracy\":%.9g}",
        static_cast<long long>(step), static_cast<long long>(epoch), r.loss, r.accuracy);
    write(line);
    if (progress_) {
      std::printf("%seval step %lld epoch %lld: test loss %.4f, accuracy %.2f%%\n",
                  tty_ ? "\n" : "", static_cast<long long>(step), static_cast<long long>(epoch),
                  r.loss, 100.0 * r.accuracy);
      std::fflush(stdout);
    }
  }

 private:
  void write(const char* line) {
    if (!metrics_.is_open()) return;
    metrics_ << line << '\n';
    metrics_.flush();
  }

  bool active_, progress_, tty_;
  int64_t total_steps_;
  Clock::time_point start_;
  std::ofstream metrics_;
};

// Test hooks, read from the environment (tests/train/e2e.py and tests/launch use them). A
// trailing ":G" limits a hook to launch generation G (launch/run.sh restarts with G + 1):
//   SYNCBN_TEST_KILL_AT_STEP=N:R[:G]  rank R sends itself SIGKILL right after step N (and its
//                                     checkpoint, if one is due): a rank dying mid-run.
//   SYNCBN_TEST_HANG_AT_STEP=N:R[:G]  rank R stops making progress after step N (alive, sleeping
//                                     forever; the others then wait in the next collective): a
//                                     stuck rank, for the supervisor's stall detection. N = the
//                                     step it starts from (0): stuck before the first step.
//   SYNCBN_TEST_STEP_SLEEP_MS=T       every rank sleeps T ms after each step: a slow run, so a
//                                     test can act while it is still training.
//   SYNCBN_TEST_FORGET_POSITION=1     a resume restores the weights but restarts the data order
//                                     from the beginning: the negative control of the resume
//                                     test.
struct TestHooks {
  int64_t kill_step = -1;
  int kill_rank = -1;
  int64_t hang_step = -1;
  int hang_rank = -1;
  int64_t step_sleep_ms = 0;
  bool forget_position = false;

  static TestHooks from_env(int64_t generation) {
    TestHooks h;
    // "N:R" or "N:R:G"; a hook for another generation stays off.
    auto parse = [generation](const char* name, int64_t* step_out, int* rank_out) {
      const char* spec = std::getenv(name);
      if (spec == nullptr) return;
      long long step = -1, gen = -1;
      int rank = -1;
      const int fields = std::sscanf(spec, "%lld:%d:%lld", &step, &rank, &gen);
      if (fields == 2 || (fields == 3 && gen == generation)) *step_out = step, *rank_out = rank;
    };
    parse("SYNCBN_TEST_KILL_AT_STEP", &h.kill_step, &h.kill_rank);
    parse("SYNCBN_TEST_HANG_AT_STEP", &h.hang_step, &h.hang_rank);
    if (const char* sleep = std::getenv("SYNCBN_TEST_STEP_SLEEP_MS"))
      h.step_sleep_ms = std::max<int64_t>(0, std::atoll(sleep));
    const char* forget = std::getenv("SYNCBN_TEST_FORGET_POSITION");
    h.forget_position = forget != nullptr && std::string(forget) == "1";
    return h;
  }
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
    const Tensor logits = model_.forward(batch.images, /*training=*/true);
    Tensor dlogits;
    // d(mean loss over the global batch)/d logits: summing the ranks' gradients gives the
    // gradient of one process training on the whole global batch, also for uneven slices.
    loss_sum_ = nn::softmax_cross_entropy(logits, batch.labels.data(),
                                          1.0 / static_cast<double>(batch.global_batch_size),
                                          &dlogits, nullptr);
    model_.backward(dlogits, [&](size_t layer) {
      for (size_t k : params_of_layer_[layer]) reducer_.mark_ready(k);
    });
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
  if (!error.empty()) throw Error(error);
  if (failed > 0)
    throw PeerError(str_cat(static_cast<int>(failed), " other rank(s) failed; see their message"));
}

TrainResult run_training(const Config& config, comm::Communicator& world,
                         const TrainOptions& options) {
  const int threads = static_cast<int>(config.train.threads);
  omp_set_num_threads(threads);  // our kernels' and oneDNN's GEMMs' threads

  // A GPU may be missing on some hosts only.
  if (config.device == Device::kCuda) agree(world, [] { require_cuda_device(); });

  // Errors here depend only on the config, which every rank shares: they are raised on every
  // rank before any collective, so no rank is left waiting.
  std::unique_ptr<comm::Communicator> bn_group;
  if (config.model.norm == Norm::kSyncBn)
    bn_group = nn::make_bn_group(world, static_cast<int>(config.model.bn_group_size));
  const data::Format format = data::parse_format(config.data.format);
  const data::DatasetInfo info = data::dataset_info(format);
  Sequential model = build_model(config, info, bn_group.get());

  // Files may be missing or broken on some hosts only.
  data::Dataset train_set, test_set;
  agree(world, [&] {
    train_set =
        data::load_dataset(format, config.data.dir, data::Split::kTrain, config.data.train_limit);
    test_set =
        data::load_dataset(format, config.data.dir, data::Split::kTest, config.data.test_limit);
    if (!options.init_from.empty()) load_weights(options.init_from, model);
  });

  std::vector<nn::ParamRef> params = model.parameters();
  optim::SgdOptions sgd_options;
  sgd_options.lr = config.train.lr;
  sgd_options.momentum = config.train.momentum;
  sgd_options.nesterov = config.train.nesterov;
  sgd_options.weight_decay = config.train.weight_decay;
  optim::SGD sgd(params, sgd_options);

  data::LoaderOptions loader_options;
  loader_options.global_batch = world.size() * config.train.per_rank_batch;
  loader_options.seed = config.seed;
  loader_options.shuffle = config.data.shuffle;
  loader_options.augment = config.data.augment;
  data::Loader loader(train_set, loader_options, world.rank(), world.size());
  const int64_t steps_per_epoch = loader.steps_per_epoch();
  const int64_t total_steps =
      config.train.steps > 0 ? config.train.steps : config.train.epochs * steps_per_epoch;

  optim::LrSchedule schedule;
  schedule.kind = config.train.schedule;
  schedule.base_lr = config.train.lr;
  schedule.warmup_steps = config.train.warmup_steps;
  schedule.total_steps = total_steps;
  schedule.step_size = config.train.step_size;
  schedule.gamma = config.train.gamma;
  schedule.min_lr = config.train.min_lr;
  if (const std::string note = schedule.fit_warmup_to_run(); !note.empty() && world.rank() == 0)
    std::printf("note: %s\n", note.c_str());
  schedule.validate();

  TrainResult result;
  const std::unique_ptr<StepBackend> backend =
      config.device == Device::kCuda ? make_cuda_backend(config, info, model, sgd, world)
                                     : make_cpu_backend(model, sgd, world);

  // Resume: rank 0 reads the newest valid checkpoint and sends it to every rank; each restores
  // it (the same bytes, so the same outcome everywhere).
  coordinator::Client* coord = options.coordinator.get();
  const bool checkpointing = coord != nullptr || !config.checkpoint.dir.empty();
  SYNCBN_REQUIRE(!options.resume || checkpointing,
                 "--resume needs a coordinator (--coordinator) or a checkpoint directory "
                 "(--checkpoint-dir or checkpoint.dir)");
  CheckpointDir checkpoints(config.checkpoint.dir, config.checkpoint.keep_last);
  auto newest_checkpoint = [&](std::string* source) -> std::optional<std::vector<uint8_t>> {
    if (coord == nullptr) return checkpoints.newest_valid(source);
    std::optional<coordinator::Client::Checkpoint> c = coord->get_checkpoint(options.run_id);
    if (!c) return std::nullopt;
    *source = "checkpoint step " + std::to_string(c->meta.step) + " of run '" + options.run_id +
              "' at " + coord->address();
    return std::vector<uint8_t>(c->data.begin(), c->data.end());
  };
  int64_t start_step = 0;
  if (options.resume) {
    std::vector<uint8_t> payload;
    std::string source;
    agree(world, [&] {
      if (world.rank() == 0) payload = newest_checkpoint(&source).value_or(payload);
    });
    int64_t size = static_cast<int64_t>(payload.size());
    world.broadcast(&size, 1, 0);
    payload.resize(static_cast<size_t>(size));
    world.broadcast(payload.data(), size, 0);
    if (size > 0) {
      start_step = restore_checkpoint(payload, source.empty() ? "the checkpoint" : source, config,
                                      world.size(), model, sgd);
      SYNCBN_REQUIRE(start_step <= total_steps, "cannot resume: the checkpoint is at step ",
                     start_step, ", beyond this run's ", total_steps, " steps");
      if (world.rank() == 0)
        std::printf("resuming from step %lld (%s)\n", static_cast<long long>(start_step),
                    source.c_str());
    } else if (world.rank() == 0) {
      std::printf("no checkpoint in %s yet: starting from step 0\n", config.checkpoint.dir.c_str());
    }
  }
  result.resumed_from = start_step;
  backend->from_host();
  // Local BN keeps per-rank running statistics; evaluation, checkpoints and export use rank 0's.
  const bool local_bn = config.model.norm == Norm::kBn;
  auto save_checkpoint = [&](int64_t step) {
    backend->to_host();
    if (local_bn) broadcast_buffers(model, world);
    agree(world, [&] {
      if (world.rank() != 0) return;
      const std::vector<uint8_t> payload =
          encode_checkpoint(config, world.size(), step, steps_per_epoch, model, sgd);
      if (coord == nullptr) {
        checkpoints.save(step, payload);
        return;
      }
      coordinator::CheckpointMeta meta;
      meta.run_id = options.run_id;
      meta.step = step;
      meta.generation = options.generation;
      meta.config_hash = config_hash(config);
      meta.world_size = world.size();
      meta.format_version = kCheckpointFormatVersion;
      coord->put_checkpoint(
          std::string_view(reinterpret_cast<const char*>(payload.data()), payload.size()), meta);
    });
  };
  // Progress heartbeats (a rank that is alive but stuck shows as one whose step stops moving),
  // at most about once a second; failures to reach the coordinator are retried by the client
  // and become an error once it has been gone too long.
  Clock::time_point last_heartbeat{};
  auto heartbeat = [&](int64_t step) {
    if (coord == nullptr || Clock::now() - last_heartbeat < std::chrono::seconds(1)) return;
    coord->heartbeat({options.run_id, world.rank(), options.generation, step});
    last_heartbeat = Clock::now();
  };

  Reporter reporter(world.rank() == 0, options.metrics_out, options.progress, total_steps);
  auto run_eval = [&](int64_t step, int64_t epoch) {
    backend->to_host();
    if (local_bn) broadcast_buffers(model, world);
    const EvalResult r = evaluate(model, test_set, world);
    reporter.eval(step, epoch, r);
    result.final_loss = r.loss;
    result.final_accuracy = r.accuracy;
  };

  double window_images = 0;
  Clock::time_point window_start = Clock::now();
  double window_comm_start = 0;
  int64_t window_steps = 0;
  bool evaluated_last = false;
  const TestHooks hooks = TestHooks::from_env(options.generation);
  if (hooks.hang_step == start_step && world.rank() == hooks.hang_rank) {
    for (;;) ::pause();  // stuck before the first step
  }
  for (int64_t step = start_step + 1; step <= total_steps; ++step) {
    const int64_t epoch = (step - 1) / steps_per_epoch;
    const int64_t in_epoch = (step - 1) % steps_per_epoch;
    const int64_t data_step = hooks.forget_position ? step - start_step - 1 : step - 1;
    const data::Batch batch =
        loader.batch(data_step / steps_per_epoch, data_step % steps_per_epoch);
    const double lr = schedule.lr_at(step);

    backend->step(batch, lr);
    window_images += static_cast<double>(batch.global_batch_size);
    ++window_steps;

    if (step % config.train.log_every == 0 || step == total_steps) {
      double loss = backend->last_loss_sum();
      world.allreduce_sum(&loss, 1);
      loss /= static_cast<double>(batch.global_batch_size);
      const double seconds = std::chrono::duration<double>(Clock::now() - window_start).count();
      const double comm_seconds = backend->sync_bn_comm_seconds();
      reporter.train(step, epoch, loss, lr, window_images / std::max(seconds, 1e-9),
                     1e3 * (comm_seconds - window_comm_start) / static_cast<double>(window_steps));
      if (coord != nullptr && world.rank() == 0) {
        coordinator::MetricsReport report;
        report.run_id = options.run_id;
        report.generation = options.generation;
        report.step = step;
        report.values = {{"loss", loss}, {"lr", lr}};
        coord->report_metrics(report);
      }
      window_images = 0;
      window_start = Clock::now();
      window_comm_start = comm_seconds;
      window_steps = 0;
    }
    evaluated_last = false;
    const bool epoch_end = in_epoch == steps_per_epoch - 1;
    if (epoch_end && config.train.eval_every_epochs > 0 &&
        (epoch + 1) % config.train.eval_every_epochs == 0) {
      run_eval(step, epoch);
      evaluated_last = true;
    }
    result.steps = step;
    if (checkpointing && config.checkpoint.every_steps > 0 &&
        step % config.checkpoint.every_steps == 0 && step < total_steps) {
      save_checkpoint(step);
    }
    heartbeat(step);
    if (step == hooks.kill_step && world.rank() == hooks.kill_rank) ::raise(SIGKILL);
    if (hooks.step_sleep_ms > 0) ::usleep(static_cast<useconds_t>(hooks.step_sleep_ms * 1000));
    if (step == hooks.hang_step && world.rank() == hooks.hang_rank) {
      for (;;) ::pause();
    }
  }
  if (!evaluated_last) run_eval(total_steps, (total_steps - 1) / steps_per_epoch);
  backend->to_host();
  if (local_bn) broadcast_buffers(model, world);
  if (checkpointing && result.steps > start_step) save_checkpoint(total_steps);
  agree(world, [&] {
    if (!options.export_weights.empty() && world.rank() == 0)
      save_weights(options.export_weights, model);
  });
  return result;
}

}  // namespace syncbn::train
