// SyncBatchNorm against local BatchNorm under mpirun: what the statistics exchange costs one
// layer. A benchmark, not a test: nothing here asserts a time. It does check the payload sizes
// (layer.counters()) against DESIGN.md §2 and exits 1 if they differ.
//
//   OMP_NUM_THREADS=1 mpirun -np 2 --oversubscribe --bind-to none --mca mpi_yield_when_idle 1
//       build/bench/sync_bn_bench [--seconds-per-case 0.4] [--min-iters 30] [--max-iters 2000]
//
// (add --allow-run-as-root as root; bench/sync_bn.sh runs exactly this for R = 2 and 4.)
//
// One step = one training forward and backward of one layer on x (b, C, H, W), float32 NCHW,
// on every rank (random normal x and dy, different on each rank, the same for both variants):
//   local   norm::batch_norm_forward + batch_norm_backward: statistics over this rank's b
//           samples, no communication (bn_group_size = 1).
//   syncbn  nn::SyncBatchNorm over the whole world (G = R): statistics over R·b samples, one
//           float64 allreduce per pass: 8·(2C+1) bytes forward, 8·2C bytes backward, per rank.
// Spatial size: H = W = 14 for C <= 64, 7 for C >= 256 (late ResNet stages), so the per-rank
// work grows with C and b: 3136·b elements at C = 16 up to 50176·b at C = 1024.
//
// Protocol, per case (R, C, b):
//   warm-up: 10 steps of each, untimed.
//   iters:   until seconds-per-case have passed on rank 0, at least min-iters, at most max-iters
//            (rank 0 broadcasts the decision between iterations, outside the timed steps).
//   timed:   each iteration times one local step and one syncbn step, each after its own
//            MPI barrier, in alternating order (so neither always finds x warm in cache from
//            the other). A step's time is the max over ranks of that iteration's time on each
//            rank: the slowest rank sets the pace of data-parallel training.
//   report:  medians over iterations; ratio = syncbn / local; Δ = syncbn − local (medians).
// The barrier's exit skew (ranks do not leave it at the same instant) lands in the syncbn time,
// at its first collective, as it would after any earlier imbalance in training.
//
// Ranks use one OpenMP thread each by default (bench/sync_bn.sh sets OMP_NUM_THREADS=1): on a
// 2-core machine R ranks already share the cores. With R above the core count the ranks are
// oversubscribed, so every collective waits for descheduled peers and the numbers measure the
// scheduler more than the allreduce. mpi_yield_when_idle makes a rank waiting in MPI yield its
// core instead of spinning through its time slice. Open MPI turns it on by itself when it counts
// more ranks than slots (R = 4 on 2 cores), not at R = 2; the header prints the effective value
// (MPI_T). Measured on the 2-core dev VM, while a CI build shared it: with it off, R = 4 syncbn
// steps took 16-130 ms whatever the size (0.1-15 ms with it on); at R = 2 under a load average
// of 6 they took 30-60 ms off against 0.04-16 ms on, and the same as on when the load was ~3.
#include <mpi.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "comm/mpi_environment.h"
#include "core/error.h"
#include "nn/sync_batch_norm.h"
#include "norm/norm.h"
#include "tensor/tensor.h"

namespace syncbn {
namespace {

constexpr int64_t kChannels[] = {16, 64, 256, 1024};
constexpr int64_t kPerRankBatches[] = {1, 2, 4, 8, 16, 32};
constexpr int kWarmupSteps = 10;

struct Options {
  double seconds_per_case = 0.4;
  int min_iters = 30;
  int max_iters = 2000;
};

Options parse_options(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    SYNCBN_REQUIRE(i + 1 < argc, flag, " needs a value");
    const char* value = argv[++i];
    if (flag == "--seconds-per-case") {
      options.seconds_per_case = std::atof(value);
    } else if (flag == "--min-iters") {
      options.min_iters = std::atoi(value);
    } else if (flag == "--max-iters") {
      options.max_iters = std::atoi(value);
    } else {
      throw Error(str_cat("unknown option '", flag,
                          "'; expected --seconds-per-case S, --min-iters N or --max-iters N"));
    }
  }
  SYNCBN_REQUIRE(options.seconds_per_case > 0 && options.min_iters >= 1 &&
                     options.max_iters >= options.min_iters,
                 "expected --seconds-per-case > 0 and 1 <= --min-iters <= "
                 "--max-iters");
  return options;
}

int64_t spatial_side(int64_t channels) { return channels <= 64 ? 14 : 7; }

// In place on rank 0 (others' buffers unchanged): element-wise max over the ranks of world.
// Through MPI directly: the Communicator offers sums only.
void reduce_max_to_root(std::vector<double>& values) {
  const int rank = [] {
    int r = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    return r;
  }();
  const int rc =
      MPI_Reduce(rank == 0 ? MPI_IN_PLACE : values.data(), values.data(),
                 static_cast<int>(values.size()), MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
  SYNCBN_REQUIRE(rc == MPI_SUCCESS, "MPI_Reduce(MPI_MAX) failed with code ", rc);
}

double median(std::vector<double> values) {
  const size_t mid = values.size() / 2;
  std::nth_element(values.begin(), values.begin() + mid, values.end());
  if (values.size() % 2 == 1) return values[mid];
  return 0.5 * (values[mid] + *std::max_element(values.begin(), values.begin() + mid));
}

// A freshly constructed nn.BatchNorm2d(C) for the local variant: affine, running stats.
struct LocalBn {
  explicit LocalBn(int64_t channels)
      : weight({channels}), bias({channels}), running_mean({channels}), running_var({channels}) {
    std::fill_n(weight.data(), channels, 1.0f);
    std::fill_n(running_var.data(), channels, 1.0f);
  }
  norm::BatchNormState state() {
    return {&weight, &bias, &running_mean, &running_var, &num_batches_tracked};
  }

  Tensor weight, bias, running_mean, running_var;  // (C)
  int64_t num_batches_tracked = 0;
};

struct CaseResult {
  int64_t channels = 0, per_rank_batch = 0;
  int iters = 0;
  double local_us = 0, syncbn_us = 0;             // medians of the slowest rank's step times
  int64_t forward_bytes = 0, backward_bytes = 0;  // per rank per pass, from counters()
  bool bytes_as_designed = false;
};

CaseResult run_case(comm::Communicator& world, comm::Communicator& bn_group, int64_t channels,
                    int64_t per_rank_batch, const Options& options) {
  const int64_t side = spatial_side(channels);
  const std::vector<int64_t> shape = {per_rank_batch, channels, side, side};
  Tensor x = Tensor::empty(shape);
  Tensor dy = Tensor::empty(shape);
  Rng rng(20240611, static_cast<uint64_t>(world.rank()));
  rng.fill_normal(x.data(), x.numel(), 0.5, 2.0);
  rng.fill_normal(dy.data(), dy.numel());

  LocalBn local(channels);
  const norm::BatchNormOptions local_options;  // eps 1e-5, momentum 0.1
  norm::NormSaved saved;
  nn::SyncBatchNorm syncbn({.num_features = channels}, &bn_group, "bench.bn");

  auto local_step = [&] {
    Tensor y = norm::batch_norm_forward(x, local.state(), local_options, /*training=*/true, &saved);
    norm::NormGrads grads = norm::batch_norm_backward(dy, x, local.state(), saved);
  };
  auto syncbn_step = [&] {
    Tensor y = syncbn.forward(x, /*training=*/true);
    Tensor dx = syncbn.backward(dy);
  };
  using Clock = std::chrono::steady_clock;
  auto timed_us = [&](auto&& step) {
    world.barrier();
    const auto start = Clock::now();
    step();
    return std::chrono::duration<double, std::micro>(Clock::now() - start).count();
  };

  // Warm-up: page faults, caches, the block cache of tensor.cc, MPI's first-use paths.
  for (int i = 0; i < kWarmupSteps; ++i) {
    timed_us(local_step);
    timed_us(syncbn_step);
  }

  // Timed until rank 0 has spent seconds-per-case here (and min-iters are done), or max-iters.
  // Rank 0 decides between iterations and broadcasts it, outside the timed steps, so every rank
  // runs the same number of collectives.
  std::vector<double> local_us, syncbn_us;
  const auto loop_start = Clock::now();
  for (double more = 1; more != 0;) {
    if (local_us.size() % 2 == 0) {
      local_us.push_back(timed_us(local_step));
      syncbn_us.push_back(timed_us(syncbn_step));
    } else {
      syncbn_us.push_back(timed_us(syncbn_step));
      local_us.push_back(timed_us(local_step));
    }
    if (world.rank() == 0) {
      const double elapsed = std::chrono::duration<double>(Clock::now() - loop_start).count();
      const auto iters = static_cast<int>(local_us.size());
      more = iters < options.max_iters &&
             (iters < options.min_iters || elapsed < options.seconds_per_case);
    }
    world.broadcast(&more, 1, 0);
  }
  const auto iters = static_cast<int>(local_us.size());
  reduce_max_to_root(local_us);
  reduce_max_to_root(syncbn_us);

  const nn::SyncBnCounters& counters = syncbn.counters();
  const int64_t steps = kWarmupSteps + iters;
  CaseResult result;
  result.channels = channels;
  result.per_rank_batch = per_rank_batch;
  result.iters = iters;
  result.local_us = median(local_us);
  result.syncbn_us = median(syncbn_us);
  result.forward_bytes =
      counters.forward_bytes / std::max<int64_t>(counters.forward_collectives, 1);
  result.backward_bytes =
      counters.backward_bytes / std::max<int64_t>(counters.backward_collectives, 1);
  result.bytes_as_designed =
      counters.forward_collectives == steps && counters.backward_collectives == steps &&
      result.forward_bytes == 8 * (2 * channels + 1) && result.backward_bytes == 16 * channels;
  return result;
}

// Open MPI's effective mpi_yield_when_idle, read through the MPI tool interface: Open MPI turns
// it on by itself when it sees more ranks than slots, so the command line does not tell. 1 or 0;
// -1 when the MPI library has no such variable.
double mpi_yield_when_idle() {
  int provided = 0;
  if (MPI_T_init_thread(MPI_THREAD_SINGLE, &provided) != MPI_SUCCESS) return -1;
  double value = -1;
  int index = 0;
  if (MPI_T_cvar_get_index("mpi_yield_when_idle", &index) == MPI_SUCCESS) {
    MPI_T_cvar_handle handle;
    int count = 0;
    if (MPI_T_cvar_handle_alloc(index, nullptr, &handle, &count) == MPI_SUCCESS) {
      // A bool in Open MPI; zeroed wide storage reads any integer type of count 1 correctly.
      int64_t storage = 0;
      if (count == 1 && MPI_T_cvar_read(handle, &storage) == MPI_SUCCESS) value = storage != 0;
      MPI_T_cvar_handle_free(&handle);
    }
  }
  MPI_T_finalize();
  return value;
}

std::string load_average() {
  std::FILE* file = std::fopen("/proc/loadavg", "r");
  if (file == nullptr) return "n/a";
  char text[64] = {};
  const bool ok = std::fgets(text, sizeof(text), file) != nullptr;
  std::fclose(file);
  if (!ok) return "n/a";
  // The first three fields: 1, 5 and 15 minute averages.
  std::string fields = text;
  size_t end = 0;
  for (int i = 0; i < 3 && end != std::string::npos; ++i) end = fields.find(' ', end + 1);
  return fields.substr(0, end);
}

int run(int argc, char** argv) {
  const Options options = parse_options(argc, argv);
  auto world = comm::make_communicator("mpi");
  auto bn_group = nn::make_bn_group(*world, world->size());  // G = R: global SyncBN
  const int ranks = world->size();
  const bool root = world->rank() == 0;

  // Every rank's OpenMP thread count and MPI yield setting, so the header tells the truth.
  std::vector<double> threads(ranks, 0.0), yields(ranks, 0.0);
  threads[world->rank()] = omp_get_max_threads();
  yields[world->rank()] = mpi_yield_when_idle();
  world->allreduce_sum(threads.data(), ranks);
  world->allreduce_sum(yields.data(), ranks);
  const int64_t cores = std::max<int64_t>(1, static_cast<int64_t>(sysconf(_SC_NPROCESSORS_ONLN)));

  if (root) {
    const auto [min_threads, max_threads] = std::minmax_element(threads.begin(), threads.end());
    const int yielding = static_cast<int>(std::count(yields.begin(), yields.end(), 1.0));
    const int unknown = static_cast<int>(std::count(yields.begin(), yields.end(), -1.0));
    std::printf("### R = %d ranks on %lld online cores\n\n", ranks, static_cast<long long>(cores));
    std::printf(
        "OpenMP threads per rank: %.0f%s. Effective mpi_yield_when_idle: on for %d of %d ranks%s. "
        "Load average at start: %s.\n",
        *min_threads, *min_threads == *max_threads ? "" : " (differs between ranks)", yielding,
        ranks, unknown > 0 ? " (unknown on some: not Open MPI?)" : "", load_average().c_str());
    if (ranks * static_cast<int64_t>(*max_threads) > cores) {
      std::printf(
          "**Oversubscribed**: %d ranks × %.0f threads on %lld cores. Every collective waits "
          "for descheduled peers, so syncbn times (and ratios) are dominated by OS scheduling, "
          "not by the allreduce.\n",
          ranks, *max_threads, static_cast<long long>(cores));
    }
    std::printf(
        "Input (b, C, H, W) per rank, NCHW float32, H = W = 14 for C <= 64, 7 for C >= 256. "
        "One step = training forward + backward of one layer. Times: median over iterations "
        "of the slowest rank's step time (barrier before each step). bytes/rank/step: SyncBN "
        "allreduce payload, forward 8·(2C+1) + backward 16C, from layer.counters().\n\n");
    std::printf(
        "| R | C | b | local µs | syncbn µs | ratio | bytes/rank/step | Δ µs | iters |\n"
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    std::fflush(stdout);
  }

  bool all_bytes_as_designed = true;
  for (const int64_t channels : kChannels) {
    for (const int64_t per_rank_batch : kPerRankBatches) {
      const CaseResult r = run_case(*world, *bn_group, channels, per_rank_batch, options);
      all_bytes_as_designed = all_bytes_as_designed && r.bytes_as_designed;
      if (!root) continue;
      std::printf(
          "| %d | %lld | %lld | %.1f | %.1f | %.2f | %lld + %lld = %lld%s | %.1f | %d |\n", ranks,
          static_cast<long long>(r.channels), static_cast<long long>(r.per_rank_batch), r.local_us,
          r.syncbn_us, r.syncbn_us / r.local_us, static_cast<long long>(r.forward_bytes),
          static_cast<long long>(r.backward_bytes),
          static_cast<long long>(r.forward_bytes + r.backward_bytes),
          r.bytes_as_designed ? "" : " **≠ 8·(2C+1) + 16C**", r.syncbn_us - r.local_us, r.iters);
      std::fflush(stdout);
    }
  }
  if (root) std::printf("\nLoad average at end: %s.\n\n", load_average().c_str());
  if (!all_bytes_as_designed) {
    std::fprintf(stderr,
                 "sync_bn_bench (rank %d): SyncBN payload differs from DESIGN.md §2 "
                 "(one allreduce of 8·(2C+1) bytes forward and 16C bytes backward per step)\n",
                 world->rank());
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace syncbn

int main(int argc, char** argv) {
  syncbn::comm::MpiEnvironment mpi(&argc, &argv);
  try {
    return syncbn::run(argc, argv);
  } catch (const std::exception& e) {
    int rank = -1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    std::fprintf(stderr, "sync_bn_bench (rank %d): %s\n", rank, e.what());
    MPI_Abort(MPI_COMM_WORLD, 1);
    return 1;
  }
}
