#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "core/duration.h"
#include "core/error.h"
#include "core/hash.h"
#include "core/unique_fd.h"
#include "data/dataset.h"
#include "study/study.h"
#include "study/text.h"

namespace syncbn::study {

namespace {

namespace fs = std::filesystem;

// Writes through a temporary file and a rename, so readers never see half a file.
void write_atomically(const std::string& path, const std::string& contents) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << contents;
    out.flush();
    SYNCBN_REQUIRE(out.good(), "cannot write '", tmp, "'");
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  SYNCBN_REQUIRE(!ec, "cannot rename '", tmp, "' to '", path, "': ", ec.message());
}

volatile sig_atomic_t g_signal = 0;
volatile pid_t g_child = 0;

void on_signal(int signal_number) {
  g_signal = signal_number;
  const pid_t child = g_child;
  if (child > 0) ::kill(child, SIGTERM);  // mpirun stops its ranks
}

// SIGINT/SIGTERM handlers for the study's lifetime, restored on destruction.
class SignalScope {
 public:
  SignalScope() {
    g_signal = 0;
    struct sigaction action = {};
    action.sa_handler = on_signal;
    sigemptyset(&action.sa_mask);
    ::sigaction(SIGINT, &action, &old_int_);
    ::sigaction(SIGTERM, &action, &old_term_);
  }
  ~SignalScope() {
    ::sigaction(SIGINT, &old_int_, nullptr);
    ::sigaction(SIGTERM, &old_term_, nullptr);
  }
  SignalScope(const SignalScope&) = delete;
  SignalScope& operator=(const SignalScope&) = delete;

 private:
  struct sigaction old_int_ = {}, old_term_ = {};
};

// Runs argv with stdout and stderr to log_path; returns the wait status. The child gets SIGTERM
// when the study dies, even by SIGKILL (PR_SET_PDEATHSIG), so no run outlives its study.
int run_logged(const std::vector<std::string>& argv, const std::string& log_path) {
  UniqueFd log(::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  SYNCBN_REQUIRE(log.get() >= 0, "cannot write the run log '", log_path,
                 "': ", std::strerror(errno));
  UniqueFd null(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  SYNCBN_REQUIRE(pid >= 0, "fork failed: ", std::strerror(errno));
  if (pid == 0) {  // Child: async-signal-safe calls only.
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(126);
    ::dup2(null.get(), STDIN_FILENO);
    ::dup2(log.get(), STDOUT_FILENO);
    ::dup2(log.get(), STDERR_FILENO);
    ::execvp(args[0], args.data());
    const char* message = "syncbn study: cannot execute ";
    [[maybe_unused]] ssize_t n = ::write(STDERR_FILENO, message, std::strlen(message));
    n = ::write(STDERR_FILENO, args[0], std::strlen(args[0]));
    n = ::write(STDERR_FILENO, "\n", 1);
    ::_exit(127);
  }
  g_child = pid;
  if (g_signal != 0) ::kill(pid, SIGTERM);  // a signal that arrived just before the fork
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    SYNCBN_CHECK(errno == EINTR);
  }
  g_child = 0;
  return status;
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exit status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return str_cat("killed by signal ", WTERMSIG(status));
  return "status " + std::to_string(status);
}

std::string tail_lines(const std::string& text, int lines) {
  size_t pos = text.size();
  if (pos > 0 && text[pos - 1] == '\n') --pos;
  for (int n = 0; n < lines && pos > 0; ++n) {
    const size_t nl = text.rfind('\n', pos - 1);
    if (nl == std::string::npos) return text;
    pos = nl;
  }
  return text.substr(pos == 0 ? 0 : pos + 1);
}

std::string describe_lr(const StudyConfig& study) {
  char text[160];
  switch (study.lr.rule) {
    case LrRule::kLinear:
      std::snprintf(text, sizeof(text), "lr %.4g × global batch / %lld", study.lr.base_lr,
                    static_cast<long long>(study.lr.base_batch));
      break;
    case LrRule::kSqrt:
      std::snprintf(text, sizeof(text), "lr %.4g × sqrt(global batch / %lld)", study.lr.base_lr,
                    static_cast<long long>(study.lr.base_batch));
      break;
    case LrRule::kFixed:
      std::snprintf(text, sizeof(text), "lr %.4g for every batch size", study.lr.base_lr);
      break;
  }
  return text;
}

std::string describe_study(const StudyConfig& study) {
  const train::Config& b = study.base;
  std::ostringstream about;
  about << data::display_name(data::parse_format(b.data.format)) << ", " << b.model.preset
        << ", world size " << study.world_size << ", ";
  if (b.train.epochs > 0) {
    about << b.train.epochs << " epoch" << (b.train.epochs == 1 ? "" : "s");
  } else {
    about << b.train.steps << " steps";
  }
  about << " on " << (b.data.train_limit > 0 ? std::to_string(b.data.train_limit) : "all")
        << " training images, test error on "
        << (b.data.test_limit > 0 ? std::to_string(b.data.test_limit) : "all 10000")
        << " test images; " << describe_lr(study);
  if (study.lr.warmup_epochs > 0) about << ", warmup " << study.lr.warmup_epochs << " epochs";
  about << "; base config " << study.base_source << ".";
  return about.str();
}

void write_outputs(const StudyConfig& study, const std::vector<RunResult>& results,
                   const fs::path& dir) {
  if (results.empty()) return;
  write_atomically((dir / "results.md").string(),
                   "# Batch-size study\n\n" + results_markdown(results, describe_study(study)));
  const train::Config& b = study.base;
  const std::string svg = error_plot_svg(
      error_series(results),
      std::string(data::display_name(data::parse_format(b.data.format))) + ", " + b.model.preset +
          ": test error vs per-rank batch (world size " + std::to_string(study.world_size) + ")");
  write_atomically((dir / "error_vs_batch.svg").string(), svg);
  render_svg_to_png(svg, (dir / "error_vs_batch.png").string());
}

// Appends one line with a single write and fsyncs it: a crash leaves whole rows, at worst a
// torn last line, which the next start drops.
void append_line(const std::string& path, const std::string& line) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
  SYNCBN_REQUIRE(fd.get() >= 0, "cannot append to '", path, "': ", std::strerror(errno));
  const ssize_t n = ::write(fd.get(), line.data(), line.size());
  SYNCBN_REQUIRE(n == static_cast<ssize_t>(line.size()), "cannot append to '", path,
                 "': ", std::strerror(errno));
  SYNCBN_REQUIRE(::fsync(fd.get()) == 0, "cannot fsync '", path, "': ", std::strerror(errno));
}

}  // namespace

void run_study(const StudyConfig& study, const StudyOptions& options) {
  SYNCBN_REQUIRE(!options.out_dir.empty(), "syncbn study needs --out DIR");
  const fs::path dir = options.out_dir;
  const std::string csv_path = (dir / "results.csv").string();
  const std::string hash = study_hash(study);
  const std::vector<RunSpec> runs = expand_runs(study);

  // What an earlier invocation finished.
  std::vector<RunResult> done;
  if (fs::exists(csv_path)) {
    std::string text = read_text(csv_path, "the results");
    if (!text.empty() && text.back() != '\n') {
      const size_t keep = text.rfind('\n') + 1;  // 0 when even the header is torn
      std::printf("study: dropping a torn last line of %s\n", csv_path.c_str());
      if (!options.dry_run) fs::resize_file(csv_path, keep);
      text.resize(keep);
    }
    if (!text.empty()) done = parse_results_csv(text, csv_path);
    for (const RunResult& r : done)
      SYNCBN_REQUIRE(r.study_hash == hash, csv_path, " holds run ", r.spec.name(),
                     " of a different study (study hash ", r.study_hash, ", this config has ", hash,
                     "): the base config, world size or LR rule changed; compare with ",
                     (dir / "study.yaml").string(),
                     ", and use another --out directory or remove the old results");
  }
  std::set<std::string> finished;
  for (const RunResult& r : done) finished.insert(r.spec.name());
  size_t to_run = 0;
  for (const RunSpec& r : runs) to_run += finished.count(r.name()) == 0;
  std::printf("study: %zu runs (%zu already in %s, %zu to run), world size %d, output in %s\n",
              runs.size(), runs.size() - to_run, csv_path.c_str(), to_run, study.world_size,
              dir.string().c_str());
  if (options.dry_run) {
    for (const RunSpec& r : runs) {
      const train::Config c = run_config(study, r);
      std::printf("  %-22s global batch %-5lld lr %-10.6g warmup %lld%s\n", r.name().c_str(),
                  static_cast<long long>(r.global_batch()), c.train.lr,
                  static_cast<long long>(c.train.warmup_steps),
                  finished.count(r.name()) ? "  (done)" : "");
    }
    return;
  }

  fs::create_directories(dir / "runs");
  if (!fs::exists(csv_path) || fs::file_size(csv_path) == 0) append_line(csv_path, csv_header());
  {
    YAML::Emitter meta;
    meta << YAML::BeginMap << YAML::Key << "study_hash" << YAML::Value << hash;
    meta << YAML::Key << "world_size" << YAML::Value << study.world_size;
    meta << YAML::Key << "lr" << YAML::Value << describe_lr(study);
    meta << YAML::Key << "warmup_epochs" << YAML::Value << study.lr.warmup_epochs;
    meta << YAML::Key << "base_source" << YAML::Value << study.base_source << YAML::EndMap;
    write_atomically((dir / "study.yaml").string(),
                     std::string("# What every run of this study shares (the swept fields are "
                                 "set per run).\n") +
                         meta.c_str() + "\n---\n" + train::to_yaml(study.base));
  }

  std::vector<RunResult> shown;  // the rows of this sweep, in results.csv order
  auto refresh_shown = [&] {
    shown.clear();
    std::set<std::string> names;
    for (const RunSpec& r : runs) names.insert(r.name());
    for (const RunResult& r : done)
      if (names.erase(r.spec.name())) shown.push_back(r);  // the first row of a run counts
  };
  refresh_shown();

  const int cpus = static_cast<int>(::sysconf(_SC_NPROCESSORS_ONLN));
  SignalScope signals;
  double spent = 0;
  size_t launched = 0, remaining = to_run;
  for (size_t i = 0; i < runs.size(); ++i) {
    const RunSpec& run = runs[i];
    const std::string name = run.name();
    if (finished.count(name)) {
      std::printf("[%zu/%zu] %s: skipped, already in results.csv\n", i + 1, runs.size(),
                  name.c_str());
      continue;
    }
    const fs::path run_dir = dir / "runs" / name;
    fs::create_directories(run_dir);
    const train::Config config = run_config(study, run);
    const std::string config_path = (run_dir / "config.yaml").string();
    const std::string metrics_path = (run_dir / "metrics.jsonl").string();
    const std::string log_path = (run_dir / "train.log").string();
    write_atomically(config_path, train::to_yaml(config));
    // New files, not truncated ones: a process of a killed earlier attempt that has not exited
    // yet keeps writing to its own (now unlinked) files.
    fs::remove(metrics_path);
    fs::remove(log_path);

    std::vector<std::string> argv = {
        options.mpirun,        "-np",  std::to_string(study.world_size),
        "--bind-to",           "none", "--mca",
        "mpi_yield_when_idle", "1"};
    if (study.world_size > cpus) argv.push_back("--oversubscribe");
    if (::geteuid() == 0) argv.push_back("--allow-run-as-root");
    argv.insert(argv.end(), {options.train_binary, "train", "--config", config_path,
                             "--metrics-out", metrics_path, "--no-progress"});

    std::printf("[%zu/%zu] %s: running (global batch %lld, lr %.4g)\n", i + 1, runs.size(),
                name.c_str(), static_cast<long long>(run.global_batch()), config.train.lr);
    std::fflush(stdout);
    const auto start = std::chrono::steady_clock::now();
    const int status = run_logged(argv, log_path);
    const double wall =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (g_signal != 0) {
      const int sig = g_signal;
      write_outputs(study, shown, dir);
      throw StudyInterrupted(
          sig, str_cat("interrupted by signal ", sig, " during run ", name, "; ", shown.size(),
                       " finished runs are in ", csv_path, "; rerun the same command to continue"));
    }
    if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
      std::string log;
      try {
        log = read_text(log_path, "the run log");
      } catch (const Error&) {
      }
      std::fprintf(stderr, "syncbn study: run %s failed (%s); last lines of %s:\n%s\n",
                   name.c_str(), describe_status(status).c_str(), log_path.c_str(),
                   tail_lines(log, 20).c_str());
      write_outputs(study, shown, dir);
      throw Error(str_cat("run ", name, " failed (", describe_status(status), "); its log is ",
                          log_path, ". Finished runs are kept in ", csv_path,
                          "; rerun the same command to retry from this run"));
    }

    RunResult result;
    result.spec = run;
    result.lr = config.train.lr;
    result.epochs = config.train.epochs;
    const RunMetrics m = parse_metrics(read_text(metrics_path, "the run's metrics"), metrics_path);
    result.steps = m.steps;
    result.test_error = 1.0 - m.test_accuracy;
    result.test_loss = m.test_loss;
    result.images_per_s = m.images_per_s;
    result.sync_bn_comm_ms = m.sync_bn_comm_ms;
    result.wall_s = wall;
    result.study_hash = hash;
    result.config_hash = hex64(train::config_hash(config));
    append_line(csv_path, csv_row(result));
    done.push_back(result);
    refresh_shown();
    write_outputs(study, shown, dir);

    spent += wall;
    ++launched;
    --remaining;
    std::printf("[%zu/%zu] %s: test error %.2f%%, %.0f img/s, SyncBN comm %.3f ms/step, %.1f s",
                i + 1, runs.size(), name.c_str(), 100.0 * result.test_error, result.images_per_s,
                result.sync_bn_comm_ms, wall);
    if (remaining > 0)
      std::printf(" (ETA %s)", format_duration(spent / static_cast<double>(launched) *
                                               static_cast<double>(remaining))
                                   .c_str());
    std::printf("\n");
    std::fflush(stdout);
  }
  write_outputs(study, shown, dir);
  std::printf(
      "study: done, %zu runs in %s; wrote results.md, error_vs_batch.svg, "
      "error_vs_batch.png\n",
      shown.size(), csv_path.c_str());
}

}  // namespace syncbn::study
