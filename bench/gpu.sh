#!/usr/bin/env bash
# GPU benchmark in one command: the BN CUDA stages' GB/s against the device's measured copy
# bandwidth, and SyncBN's per-layer overhead over NCCL with one rank per GPU (bench/gpu_bench.cc
# says what is timed and how). Markdown tables on stdout; build progress on stderr.
#
#   bench/gpu.sh [--iters N]
#
# Environment:
#   BUILD_DIR  CMake build directory (default: build); configured here if it has no
#              CMakeCache.txt yet. CUDA must be found at configure time (SYNCBN_CUDA=AUTO/ON).
#   GPUS       ranks = GPUs to use (default: every GPU nvidia-smi lists).
#
# Exits 2 with a message on a machine without a GPU (or a build without CUDA).
# Training images/s on the GPU needs the CUDA trainer backend, which is not built yet.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${repo_root}"
build_dir="${BUILD_DIR:-build}"

gpus="${GPUS:-}"
if [[ -z "${gpus}" ]]; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
  else
    gpus=0
  fi
fi
if ! [[ "${gpus}" =~ ^[0-9]+$ ]] || ((gpus == 0)); then
  echo "bench/gpu.sh: no GPU found on this machine (nvidia-smi lists none; set GPUS=N to" \
    "override). This benchmark needs at least one NVIDIA GPU." >&2
  exit 2
fi

if [[ ! -f "${build_dir}/CMakeCache.txt" ]]; then
  cmake -S . -B "${build_dir}" -DCMAKE_BUILD_TYPE=Release -DSYNCBN_CUDA=ON >&2
fi
targets=$(cmake --build "${build_dir}" --target help 2>/dev/null || true)
if [[ "${targets}" != *gpu_bench* ]]; then
  echo "bench/gpu.sh: ${build_dir} was configured without CUDA (no gpu_bench target); configure" \
    "it with -DSYNCBN_CUDA=ON on a machine with nvcc and NCCL" >&2
  exit 2
fi
cmake --build "${build_dir}" -j "${JOBS:-$(nproc)}" --target gpu_bench >&2

mpi_flags=(--oversubscribe --bind-to none)
if [[ "$(id -u)" == 0 ]]; then
  mpi_flags+=(--allow-run-as-root)
fi
echo "# syncbn GPU benchmark: ${gpus} GPU(s), $(date -u +%Y-%m-%dT%H:%MZ)"
echo
mpirun -np "${gpus}" "${mpi_flags[@]}" "${build_dir}/bench/gpu_bench" "$@"
