// `syncbn coordinator` and `syncbn status` (DESIGN.md §4).
#include <pthread.h>
#include <signal.h>

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "coordinator/client.h"
#include "coordinator/server.h"
#include "coordinator/token.h"
#include "core/error.h"
#include "core/escape.h"
#include "core/hash.h"
#include "core/json.h"

namespace {

namespace coord = syncbn::coordinator;
using syncbn::hex64;

constexpr const char* kCoordinatorUsage =
    "usage: syncbn coordinator --state-dir DIR [--listen ADDR] [--token-file FILE]\n"
    "                          [--tls-cert PEM --tls-key PEM [--tls-client-ca PEM]]\n"
    "                          [--keep-last K] [--max-runs N] [--max-config-bytes B]\n"
    "                          [--metrics-per-run M]\n"
    "\n"
    "  --listen ADDR      host:port to serve on (default 127.0.0.1:0: loopback, a free port;\n"
    "                     the bound address is printed as 'listening on HOST:PORT')\n"
    "  --state-dir DIR    checkpoints and their manifest (created if missing)\n"
    "  --token-file FILE  a secret token (mode 0600) every client must send; required when\n"
    "                     ADDR is not a loopback address\n"
    "  --tls-cert PEM, --tls-key PEM   serve TLS; --tls-client-ca PEM also requires client\n"
    "                     certificates signed by that CA\n"
    "  --keep-last K      checkpoints kept per run unless the run asks otherwise (default 3)\n"
    "  --max-runs N       runs kept at once; a Join of one more is refused with\n"
    "                     RESOURCE_EXHAUSTED (default 256)\n"
    "  --max-config-bytes B  largest config YAML a Join may send (default 262144, at most\n"
    "                     1048576); larger: RESOURCE_EXHAUSTED\n"
    "  --metrics-per-run M   metrics reports kept per run, the oldest dropped (default 32)\n"
    "  -h, --help         this help\n"
    "\n"
    "ADDR is HOST:PORT (port 0 to 65535), [IPV6]:PORT (e.g. [::1]:7390) or unix:PATH (the\n"
    "socket is made accessible to this user only). Exits 0 on SIGINT or SIGTERM, 2 without\n"
    "--state-dir, 1 on any other error (bad options included).\n"
    "\n"
    "environment: none (clients use SYNCBN_COORDINATOR and SYNCBN_COORDINATOR_TOKEN_FILE)\n";

constexpr const char* kStatusUsage =
    "usage: syncbn status [--coordinator ADDR] [--run ID] [--json] [--token-file FILE]\n"
    "                     [--tls-ca PEM]\n"
    "  a coordinator's runs: ranks, heartbeats, progress, checkpoints, recent metrics\n"
    "  (all runs: the newest metrics of each; --run ID: all the run keeps); -h, --help: this\n"
    "  help\n"
    "environment:\n"
    "  SYNCBN_COORDINATOR, SYNCBN_COORDINATOR_TOKEN_FILE (see below)\n"
    "  ADDR defaults to $SYNCBN_COORDINATOR, FILE to $SYNCBN_COORDINATOR_TOKEN_FILE;\n"
    "  --json prints one JSON object per run and line (what launch/run.sh reads to find\n"
    "  stuck ranks)\n";

// Walks argv from index 2: `flag` is the current option, value() consumes its argument.
class Args {
 public:
  Args(int argc, char** argv, const char* usage) : argc_(argc), argv_(argv), usage_(usage) {}
  bool next() { return ++i_ < argc_; }
  std::string flag() const { return argv_[i_]; }
  std::string value() {
    SYNCBN_REQUIRE(i_ + 1 < argc_, "option ", flag(), " needs a value\n", usage_);
    return argv_[++i_];
  }
  int64_t int_value(int64_t lo, int64_t hi) {
    const std::string flag_name = flag();
    const std::string text = value();
    char* end = nullptr;
    const long long v = std::strtoll(text.c_str(), &end, 10);
    SYNCBN_REQUIRE(!text.empty() && *end == '\0' && v >= lo && v <= hi, "option ", flag_name,
                   " expects an integer from ", lo, " to ", hi, ", got '", text, "'");
    return v;
  }
  [[noreturn]] void unknown(const char* command) const {
    throw syncbn::Error(
        syncbn::str_cat("unknown option '", flag(), "' for syncbn ", command, "\n", usage_));
  }

 private:
  int argc_;
  char** argv_;
  const char* usage_;
  int i_ = 1;
};

bool wants_help(int argc, char** argv) {
  for (int i = 2; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") return true;
  }
  return false;
}

std::string human_bytes(int64_t bytes) {
  char text[32];
  if (bytes < 1024) {
    std::snprintf(text, sizeof(text), "%" PRId64 " B", bytes);
  } else if (bytes < (int64_t{1} << 20)) {
    std::snprintf(text, sizeof(text), "%.1f KiB", bytes / 1024.0);
  } else if (bytes < (int64_t{1} << 30)) {
    std::snprintf(text, sizeof(text), "%.1f MiB", bytes / 1048576.0);
  } else {
    std::snprintf(text, sizeof(text), "%.2f GiB", bytes / 1073741824.0);
  }
  return text;
}

std::string utc_time(int64_t unix_ms) {
  const std::time_t seconds = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%d %H:%M:%S UTC", &tm);
  return text;
}

std::string age(int64_t ms) {
  char text[32];
  if (ms < 0) return "never";
  if (ms < 120'000) {
    std::snprintf(text, sizeof(text), "%.1f s ago", ms / 1000.0);
  } else if (ms < 7'200'000) {
    std::snprintf(text, sizeof(text), "%.1f min ago", ms / 60000.0);
  } else {
    std::snprintf(text, sizeof(text), "%.1f h ago", ms / 3600000.0);
  }
  return text;
}

// A heartbeat older than this marks the rank as possibly dead or stuck in `syncbn status`.
constexpr int64_t kStaleHeartbeatMs = 60'000;

// One line of JSON per run: the fields of print_run, for scripts (launch/run.sh).
void print_run_json(const coord::RunStatus& run) {
  using syncbn::json::Value;
  Value::Array ranks;
  for (const auto& r : run.ranks) {
    ranks.push_back(Value::object({{"rank", Value::integer(r.rank)},
                                   {"host", Value::string(r.host)},
                                   {"pid", Value::integer(r.pid)},
                                   {"generation", Value::integer(r.generation)},
                                   {"step", Value::integer(r.last_step)},
                                   {"heartbeat_age_ms", Value::integer(r.heartbeat_age_ms)},
                                   {"progress_age_ms", Value::integer(r.progress_age_ms)}}));
  }
  const Value line = Value::object(
      {{"run_id", Value::string(run.run_id)},
       {"generation", Value::integer(run.generation)},
       {"world_size", Value::integer(run.world_size)},
       {"config_hash", Value::string(hex64(run.config_hash))},
       {"ranks", Value::array(std::move(ranks))},
       {"newest_checkpoint_step",
        run.newest_checkpoint ? Value::integer(run.newest_checkpoint->step) : Value()},
       {"checkpoint_count", Value::integer(run.checkpoint_count)}});
  std::printf("%s\n", syncbn::json::serialize(line).c_str());
}

void print_run(const coord::RunStatus& run) {
  std::printf("run %s: generation %" PRId64 ", world size %d, config hash %s, keeps %d\n",
              run.run_id.c_str(), run.generation, run.world_size, hex64(run.config_hash).c_str(),
              run.keep_last);
  int64_t max_step = -1;
  for (const auto& rank : run.ranks) max_step = std::max(max_step, rank.last_step);
  std::printf("  ranks: %zu of %d joined\n", run.ranks.size(), run.world_size);
  if (!run.ranks.empty()) {
    std::printf("  %6s  %-24s %10s %10s  %s\n", "rank", "host", "pid", "step", "last heartbeat");
  }
  for (const auto& rank : run.ranks) {
    std::string note;
    if (rank.heartbeat_age_ms > kStaleHeartbeatMs) {
      note = "  STALE (dead or stuck?)";
    } else if (rank.progress_age_ms > kStaleHeartbeatMs) {
      note = syncbn::str_cat("  no progress for ", age(rank.progress_age_ms), " (stuck?)");
    }
    if (rank.last_step >= 0 && rank.last_step < max_step) {
      note += syncbn::str_cat("  behind by ", max_step - rank.last_step, " steps");
    }
    const std::string step = rank.last_step >= 0 ? std::to_string(rank.last_step) : "-";
    std::printf("  %6d  %-24s %10" PRId64 " %10s  %s%s\n", rank.rank,
                rank.host.empty() ? "?" : syncbn::escape_control(rank.host).c_str(), rank.pid,
                step.c_str(), age(rank.heartbeat_age_ms).c_str(), note.c_str());
  }
  if (run.newest_checkpoint) {
    const auto& c = *run.newest_checkpoint;
    std::printf("  newest checkpoint: step %" PRId64 ", %s, generation %" PRId64
                ", format %d, crc32c %08x, %s (%" PRId64 " kept)\n",
                c.step, human_bytes(c.size_bytes).c_str(), c.generation, c.format_version, c.crc32c,
                utc_time(c.created_unix_ms).c_str(), run.checkpoint_count);
  } else {
    std::printf("  no checkpoint yet\n");
  }
  if (!run.recent_metrics.empty()) {
    const size_t shown = std::min<size_t>(run.recent_metrics.size(), 5);
    std::printf("  recent metrics (last %zu of %zu):\n", shown, run.recent_metrics.size());
    for (size_t i = run.recent_metrics.size() - shown; i < run.recent_metrics.size(); ++i) {
      const auto& m = run.recent_metrics[i];
      std::string values;
      for (const auto& [name, value] : m.values) {
        char text[96];
        std::snprintf(text, sizeof(text), "%s%s %.6g", values.empty() ? "" : ", ",
                      syncbn::escape_control(name).c_str(), value);
        values += text;
      }
      std::printf("    step %" PRId64 " rank %d: %s\n", m.step, m.rank, values.c_str());
    }
  }
}

}  // namespace

int coordinator_command(int argc, char** argv) {
  if (wants_help(argc, argv)) {
    std::fputs(kCoordinatorUsage, stdout);
    return 0;
  }
  try {
    coord::ServerOptions options;
    Args args(argc, argv, kCoordinatorUsage);
    while (args.next()) {
      const std::string flag = args.flag();
      if (flag == "--listen") {
        options.listen = args.value();
      } else if (flag == "--state-dir") {
        options.state_dir = args.value();
      } else if (flag == "--token-file") {
        options.token_file = args.value();
      } else if (flag == "--tls-cert") {
        options.tls_cert_file = args.value();
      } else if (flag == "--tls-key") {
        options.tls_key_file = args.value();
      } else if (flag == "--tls-client-ca") {
        options.tls_client_ca_file = args.value();
      } else if (flag == "--keep-last") {
        options.keep_last = static_cast<int32_t>(args.int_value(1, coord::kMaxKeepLast));
      } else if (flag == "--max-runs") {
        options.max_runs = args.int_value(1, 1'000'000);
      } else if (flag == "--max-config-bytes") {
        options.max_config_bytes = args.int_value(1, static_cast<int64_t>(coord::kMaxConfigBytes));
      } else if (flag == "--metrics-per-run") {
        options.metrics_per_run = args.int_value(1, 100'000);
      } else {
        args.unknown("coordinator");
      }
    }
    if (options.state_dir.empty()) {
      std::fprintf(stderr, "syncbn coordinator: error: --state-dir DIR is required\n%s",
                   kCoordinatorUsage);
      return 2;
    }
    // SIGINT/SIGTERM are blocked before gRPC starts its threads (which inherit the mask) and
    // taken synchronously below, so shutdown runs in a normal thread, not a signal handler.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

    coord::CoordinatorServer server(options);
    std::printf("listening on %s\n", server.address().c_str());
    std::fflush(stdout);
    int signal_number = 0;
    sigwait(&stop_signals, &signal_number);
    std::fprintf(stderr, "syncbn coordinator: %s received, shutting down\n",
                 signal_number == SIGINT ? "SIGINT" : "SIGTERM");
    server.shutdown();
    return 0;
  } catch (const syncbn::Error& e) {
    std::fprintf(stderr, "syncbn coordinator: error: %s\n",
                 syncbn::escape_control(e.what()).c_str());
    return 1;
  }
}

int status_command(int argc, char** argv) {
  if (wants_help(argc, argv)) {
    std::fputs(kStatusUsage, stdout);
    return 0;
  }
  try {
    coord::ClientOptions options;
    std::string run_id;
    bool as_json = false;
    if (const char* env = std::getenv("SYNCBN_COORDINATOR")) options.address = env;
    if (const char* env = std::getenv("SYNCBN_COORDINATOR_TOKEN_FILE"); env && *env)
      options.token = coord::read_token_file(env);
    Args args(argc, argv, kStatusUsage);
    while (args.next()) {
      const std::string flag = args.flag();
      if (flag == "--coordinator") {
        options.address = args.value();
      } else if (flag == "--run") {
        run_id = args.value();
      } else if (flag == "--json") {
        as_json = true;
      } else if (flag == "--token-file") {
        options.token = coord::read_token_file(args.value());
      } else if (flag == "--tls-ca") {
        options.tls_root_certs_file = args.value();
      } else {
        args.unknown("status");
      }
    }
    if (options.address.empty()) {
      std::fprintf(stderr,
                   "syncbn status: error: no coordinator: pass --coordinator HOST:PORT or set "
                   "SYNCBN_COORDINATOR\n%s",
                   kStatusUsage);
      return 2;
    }
    if (!run_id.empty()) coord::validate_run_id(run_id);
    options.call_timeout = std::chrono::seconds(5);
    options.unavailable_limit = std::chrono::seconds(3);
    coord::Client client(options);
    const auto runs = client.get_run_status(run_id);
    if (as_json) {
      for (const auto& run : runs) print_run_json(run);
      return 0;
    }
    std::printf("coordinator %s: %zu run%s\n", options.address.c_str(), runs.size(),
                runs.size() == 1 ? "" : "s");
    for (const auto& run : runs) print_run(run);
    return 0;
  } catch (const syncbn::Error& e) {
    std::fprintf(stderr, "syncbn status: error: %s\n", syncbn::escape_control(e.what()).c_str());
    return 1;
  }
}
