#!/usr/bin/env bash
# The test command: setup (packages + Release build), the whole CTest suite except the `gpu`
# label (lint and the package check included), then the unit tests again under
# AddressSanitizer + UndefinedBehaviorSanitizer, and the coordinator's store and state machine
# under ThreadSanitizer.
# Exits non-zero on any failure.
#
#   launch/test.sh            everything but GPU tests
#   launch/test.sh --gpu      only the GPU tests (skipped, not passed, without a GPU)
#   launch/test.sh --no-asan  skip the sanitizer builds (ASan + UBSan, TSan)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

gpu=0
asan=1
for arg in "$@"; do
  case $arg in
    --gpu) gpu=1 ;;
    --no-asan) asan=0 ;;
    *) echo "test.sh: unknown option '$arg'; expected --gpu or --no-asan" >&2; exit 2 ;;
  esac
done

launch/setup.sh
jobs=${JOBS:-$(nproc)}

if ((gpu)); then
  ctest --test-dir build -L gpu --output-on-failure --no-tests=error
  exit
fi

# Tests without MPI ranks, timeouts or network namespaces run $jobs at a time; the ones that
# start ranks or measure time keep the machine to themselves, one after another.
serial='mpi|e2e|launch|cluster'
echo "== ctest (Release, every label but gpu: single-process tests, $jobs at a time)"
ctest --test-dir build -LE "gpu|$serial" -j "$jobs" --output-on-failure --timeout 300
echo "== ctest (Release, every label but gpu: multi-rank and timed tests, one at a time)"
ctest --test-dir build -L "$serial" -LE gpu --output-on-failure --timeout 300

# GPU tests report themselves skipped (not passed) on a machine without a GPU; listing them
# here keeps that visible. `launch/test.sh --gpu` runs only these.
echo "== ctest (gpu label: skipped without a GPU)"
ctest --test-dir build -L gpu --output-on-failure --timeout 300

if ((asan)); then
  echo "== ctest (ASan + UBSan, unit tests)"
  # Only the unit-test executables, at -O1 with line tables: what the sanitizers need, in about
  # half the build time of a full RelWithDebInfo tree.
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug "-DCMAKE_CXX_FLAGS_DEBUG=-O1 -g1" \
    -DSYNCBN_SANITIZE=ON -DSYNCBN_WERROR=ON -DSYNCBN_BUILD_BENCH=OFF -DSYNCBN_CUDA=OFF >/dev/null
  cmake --build build-asan -j "$jobs" --target syncbn_unit_tests
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir build-asan -L unit -j "$jobs" --output-on-failure --timeout 300

  echo "== ctest (TSan, the coordinator's store and state machine)"
  # The gRPC server tests are not run here: Debian's gRPC and Abseil are not built with TSan, so
  # their hand-offs between threads are invisible to it and every call reports false races.
  cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug "-DCMAKE_CXX_FLAGS_DEBUG=-O1 -g1" \
    -DSYNCBN_TSAN=ON -DSYNCBN_WERROR=ON -DSYNCBN_BUILD_BENCH=OFF -DSYNCBN_CUDA=OFF >/dev/null
  cmake --build build-tsan -j "$jobs" --target coordinator_unit_test
  TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
    ctest --test-dir build-tsan -R '^(CoordinatorState|CheckpointStore|Crc32c|Upload)' \
    -j "$jobs" --output-on-failure --timeout 300 --no-tests=error
fi
