#!/usr/bin/env bash
# GPU benchmark in one command: the BN CUDA stages' GB/s against the device's measured copy
# bandwidth, and SyncBN's per-layer overhead over NCCL with one rank per GPU (bench/gpu_bench.cc
# says what is timed and how), then training images/s of `syncbn train` with device: cuda
# (small_cnn, SyncBN, per-GPU batch 4 and 32) next to the CPU trainer on the same ranks. Markdown
# tables on stdout; build progress on stderr.
#
#   bench/gpu.sh [--iters N]      (--iters goes to gpu_bench)
#
# Environment:
#   BUILD_DIR  CMake build directory (default: build); configured here if it has no
#              CMakeCache.txt yet. CUDA must be found at configure time (SYNCBN_CUDA=AUTO/ON).
#   GPUS       ranks = GPUs to use (default: every GPU nvidia-smi lists).
#   TRAIN_STEPS  steps per training run (default 300 on the GPU, 40 on the CPU); images/s is
#              the last window of 50 (GPU) or 10 (CPU) steps, after cuDNN's planning and warm-up.
#
# Exits 2 with a message on a machine without a GPU (or a build without CUDA).
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
cmake --build "${build_dir}" -j "${JOBS:-$(nproc)}" --target gpu_bench syncbn >&2

mpi_flags=(--oversubscribe --bind-to none)
if [[ "$(id -u)" == 0 ]]; then
  mpi_flags+=(--allow-run-as-root)
fi
echo "# syncbn GPU benchmark: ${gpus} GPU(s), $(date -u +%Y-%m-%dT%H:%MZ)"
echo
mpirun -np "${gpus}" "${mpi_flags[@]}" "${build_dir}/bench/gpu_bench" "$@"

# Training throughput: images/s over all ranks in the last logged window (train metrics'
# images_per_s), evaluation left to the end on 1000 test images.
train_images_per_s() {  # device per_rank_batch steps log_every
  local out
  out=$(mktemp -d)
  local threads=$(( $(nproc) / gpus > 0 ? $(nproc) / gpus : 1 ))
  mpirun -np "${gpus}" "${mpi_flags[@]}" "${build_dir}/src/cli/syncbn" train \
    --config configs/fashion_mnist.yaml --no-progress --metrics-out "${out}/m.jsonl" \
    --set "device=$1" --set "train.per_rank_batch=$2" --set "train.steps=$3" --set train.epochs=0 \
    --set "train.log_every=$4" --set train.warmup_steps=0 --set train.eval_every_epochs=0 \
    --set data.test_limit=1000 \
    --set "train.threads=${threads}" >"${out}/log" 2>&1 || {
    echo "bench/gpu.sh: syncbn train (device $1, batch $2) failed:" >&2
    cat "${out}/log" >&2
    rm -rf "${out}"
    return 1
  }
  python3 -c 'import json,sys; print("%.0f" % [json.loads(l) for l in open(sys.argv[1]) if "\"train\"" in l][-1]["images_per_s"])' "${out}/m.jsonl"
  rm -rf "${out}"
}

echo
echo "## Training images/s (small_cnn, SyncBN, ${gpus} rank(s))"
echo
echo "| trainer | per-rank batch | global batch | images/s (all ranks) |"
echo "|---|---:|---:|---:|"
gpu_steps="${TRAIN_STEPS:-300}"
cpu_steps="${TRAIN_STEPS:-40}"
for batch in 4 32; do
  echo "| CUDA (1 GPU per rank) | ${batch} | $((batch * gpus)) | $(train_images_per_s cuda "${batch}" "${gpu_steps}" 50) |"
  echo "| CPU ($(( $(nproc) / gpus > 0 ? $(nproc) / gpus : 1 )) threads per rank) | ${batch} | $((batch * gpus)) | $(train_images_per_s cpu "${batch}" "${cpu_steps}" 10) |"
done
