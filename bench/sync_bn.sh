#!/usr/bin/env bash
# SyncBatchNorm (G = world) against local BN, per layer, under mpirun: one Markdown table per
# rank count on stdout (bench/sync_bn_bench.cc says what is timed and how); build progress goes
# to stderr.
#
#   bench/sync_bn.sh [R...]        (default: 2 4)
#
# Environment:
#   BUILD_DIR         CMake build directory (default: build); configured here if it has no
#                     CMakeCache.txt yet.
#   THREADS_PER_RANK  OMP_NUM_THREADS of every rank (default 1: the ranks already share the cores).
#   YIELD_WHEN_IDLE   Open MPI's mpi_yield_when_idle (default 1): ranks waiting in a collective
#                     or barrier yield the core instead of spinning. Open MPI enables it by
#                     itself only when oversubscribed; we set it for every R because a spinning
#                     rank also starves a peer descheduled by other load (sync_bn_bench.cc has
#                     the measurements). 0 to compare.
#   SECONDS_PER_CASE  timed seconds per (C, b) case (default 0.4), within [30, 2000] iterations.
#
# On a machine with fewer cores than R × THREADS_PER_RANK the ranks are oversubscribed and the
# syncbn numbers measure the scheduler more than the allreduce; the tables say so. 24 cases per
# rank count: about 12 s per R with an up-to-date build, a little more under load.
set -euo pipefail

ranks=("$@")
if ((${#ranks[@]} == 0)); then
  ranks=(2 4)
fi
for r in "${ranks[@]}"; do
  if ! [[ "${r}" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [R...]  (rank counts must be positive integers, got '${r}')" >&2
    exit 2
  fi
done

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${repo_root}"
build_dir="${BUILD_DIR:-build}"
threads="${THREADS_PER_RANK:-1}"
yield="${YIELD_WHEN_IDLE:-1}"
seconds="${SECONDS_PER_CASE:-0.4}"

if [[ ! -f "${build_dir}/CMakeCache.txt" ]]; then
  echo "== configuring ${build_dir}" >&2
  cmake -S . -B "${build_dir}" >&2
fi
echo "== building sync_bn_bench in ${build_dir}" >&2
cmake --build "${build_dir}" --target sync_bn_bench --parallel "$(nproc)" >&2

mpirun_flags=(--oversubscribe --bind-to none --mca mpi_yield_when_idle "${yield}"
  -x OMP_NUM_THREADS)
if [[ "$(id -u)" -eq 0 ]]; then
  mpirun_flags+=(--allow-run-as-root)
fi

cores="$(nproc)"
echo "# SyncBN vs local BN, per layer ($(date -u '+%Y-%m-%d %H:%M UTC'), ${cores} cores, $(uname -m))"
echo
echo "OMP_NUM_THREADS=${threads} per rank, mpi_yield_when_idle=${yield}, ${seconds} s timed per case."
echo "With R × threads above ${cores} cores the ranks are oversubscribed: those numbers are"
echo "dominated by OS scheduling (a collective waits for every descheduled peer), not by the"
echo "allreduce. Other load on the machine (see the load averages) inflates syncbn more than local,"
echo "for the same reason."
echo
for r in "${ranks[@]}"; do
  command=(mpirun -np "${r}" "${mpirun_flags[@]}" "${build_dir}/bench/sync_bn_bench"
    --seconds-per-case "${seconds}")
  echo "\`OMP_NUM_THREADS=${threads} ${command[*]}\`"
  echo
  OMP_NUM_THREADS="${threads}" "${command[@]}"
done
