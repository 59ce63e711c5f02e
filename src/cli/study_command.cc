// `syncbn study --config FILE --out DIR [--dry-run] [--mpirun PATH]`: the batch-size study
// (src/study). Not run under mpirun itself: it launches one `mpirun ... syncbn train` per run.
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <cstring>
#include <string>

#include "cli/commands.h"
#include "core/error.h"
#include "study/study.h"

namespace {

constexpr const char* kStudyUsage =
    "usage: syncbn study --config FILE --out DIR [--dry-run] [--mpirun PATH]\n"
    "  Sweeps per-rank batch × norm (× bn_group_size) × seed at a fixed world size (see\n"
    "  configs/study_batch_size.yaml), one `mpirun -np W syncbn train` per run. Writes\n"
    "  DIR/results.csv (appended as runs finish), DIR/results.md, DIR/error_vs_batch.svg and\n"
    "  .png, and each run's config, metrics and log under DIR/runs/NAME/. Rerunning the same\n"
    "  command skips the runs already in DIR/results.csv.\n"
    "  --dry-run     list the runs (global batch, lr, warmup) and exit\n"
    "  --mpirun PATH the mpirun to use (default: mpirun from PATH)\n";

// This process's executable: the runs use the same syncbn binary as the study.
std::string self_executable() {
  char path[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", path, sizeof(path) - 1);
  SYNCBN_REQUIRE(n > 0,
                 "cannot find the syncbn binary: readlink /proc/self/exe: ", std::strerror(errno));
  path[n] = '\0';
  return path;
}

}  // namespace

int study_command(int argc, char** argv) {
  std::string config_path;
  syncbn::study::StudyOptions options;
  for (int i = 2; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "-h" || flag == "--help") {
      std::fputs(kStudyUsage, stdout);
      return 0;
    }
    if (flag == "--dry-run") {
      options.dry_run = true;
      continue;
    }
    if (flag != "--config" && flag != "--out" && flag != "--mpirun") {
      std::fprintf(stderr, "syncbn study: unknown option '%s'\n%s", flag.c_str(), kStudyUsage);
      return 2;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "syncbn study: option %s needs a value\n%s", flag.c_str(), kStudyUsage);
      return 2;
    }
    const std::string value = argv[++i];
    if (flag == "--config") config_path = value;
    if (flag == "--out") options.out_dir = value;
    if (flag == "--mpirun") options.mpirun = value;
  }
  if (config_path.empty() || options.out_dir.empty()) {
    std::fprintf(stderr, "syncbn study: needs --config FILE and --out DIR\n%s", kStudyUsage);
    return 2;
  }
  try {
    options.train_binary = self_executable();
    const syncbn::study::StudyConfig study = syncbn::study::load_study_config(config_path);
    syncbn::study::run_study(study, options);
    return 0;
  } catch (const syncbn::study::StudyInterrupted& e) {
    std::fprintf(stderr, "syncbn study: %s\n", e.what());
    return 128 + e.signal_number();
  } catch (const syncbn::Error& e) {
    std::fprintf(stderr, "syncbn study: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {  // std::filesystem errors: a path we cannot use
    std::fprintf(stderr, "syncbn study: error: %s\n", e.what());
    return 1;
  }
}
