#!/usr/bin/env bash
# Training throughput of `syncbn train` (2 MPI ranks, SyncBN) against PyTorch 1.13 DDP over gloo
# with an all-reduce SyncBN (bench/torch_ddp_train.py), same model (the program `syncbn model
# --torch` prints: block classes and all), same optimizer, 2 ranks x 1 thread, per-rank batch 4
# and 32. One Markdown table on stdout; progress on stderr. A benchmark, not a test: it fails only
# if a run fails or the two models differ.
#
#   bench/train_compare.sh                 # resnet20
#   MODEL=small_cnn bench/train_compare.sh
#
# Environment:
#   MODEL      model.preset of both sides (default resnet20; any preset, e.g. small_cnn).
#   BUILD_DIR  CMake build directory (default: build); configured here if it has no
#              CMakeCache.txt yet.
#   PYTHON     interpreter with python3-torch (default: /usr/bin/python3, Debian's, not pyenv).
#   REPS       repetitions of each (ours, torch) pair, interleaved (default 3). The table shows
#              medians with [min-max]; ours/torch is the median of the per-repetition ratios.
#              Every run is also listed with the 1-minute load average at its start.
#
# Timing: both sides run WARMUP=10 untimed steps, then N timed steps (100 at batch 4, 50 at
# batch 32). Ours logs every 10 steps and its images/s is the global images of the windows after
# step 10 divided by the sum of their durations (rank 0's clock, end of step 10 to end of the last
# step; the per-window loss all-reduce is included). Torch times rank 0 from a barrier after the
# warm-up to the end of the last optimizer step. "torch SyncBN all_reduce" is the part of torch's
# timed steps rank 0 spent in the SyncBN all_reduce calls (forward + backward, waiting for the
# other rank included). Takes about 1-2 minutes on an idle 2-core machine with an up-to-date
# build, up to 4 when other jobs share the CPUs.
set -euo pipefail

# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
reps="${REPS:-3}"
if ! [[ "${reps}" =~ ^[1-9][0-9]*$ ]]; then
  echo "error: REPS must be a positive integer, got '${reps}'" >&2
  exit 2
fi

world_size=2
warmup=10
log_every=10
batches=(4 32)
declare -A timed_steps=([4]=100 [32]=50)
config=configs/fashion_mnist.yaml
model="${MODEL:-resnet20}"
if ! [[ "${model}" =~ ^[a-z0-9_]+$ ]]; then
  echo "error: MODEL must be a model.preset name, got '${model}'" >&2
  exit 2
fi

build_target syncbn
syncbn="${build_dir}/src/cli/syncbn"
require_torch
make_work_dir

"${syncbn}" model --config "${config}" --set "model.preset=${model}" --torch \
  >"${work_dir}/model.txt"

mpi_flags=(--bind-to none --mca mpi_yield_when_idle 1)
((world_size > $(nproc))) && mpi_flags+=(--oversubscribe)
[[ $(id -u) -eq 0 ]] && mpi_flags+=(--allow-run-as-root)

ours_cmd() {  # ours_cmd BATCH METRICS_FILE -> sets cmd
  local batch="$1" metrics="$2"
  local steps=$((warmup + timed_steps[${batch}]))
  cmd=(mpirun -np "${world_size}" "${mpi_flags[@]}" "${syncbn}" train --config "${config}"
    --set "model.preset=${model}" --set "train.per_rank_batch=${batch}" --set train.epochs=0 --set "train.steps=${steps}"
    --set "train.log_every=${log_every}" --set train.schedule=constant
    --set train.warmup_steps=0 --set data.test_limit=100 --set train.threads=1
    --no-progress --metrics-out "${metrics}")
}

torch_cmd() {  # torch_cmd BATCH -> sets cmd
  local batch="$1"
  cmd=("${python}" bench/torch_ddp_train.py --model-file "${work_dir}/model.txt"
    --per-rank-batch "${batch}" --world-size "${world_size}" --threads 1
    --warmup "${warmup}" --steps "${timed_steps[${batch}]}" --lr 0.05)
}

uptime_before="$(uptime)"
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
echo "== load before: ${load_before}" >&2

# Same architecture: export our initial-run weights once and compare names/shapes with torch's.
ours_cmd 4 "${work_dir}/arch.jsonl"
"${cmd[@]}" --set train.steps=1 --export-weights "${work_dir}/arch.safetensors" >/dev/null
arch_line="$("${python}" bench/torch_ddp_train.py --model-file "${work_dir}/model.txt" \
  --compare-safetensors "${work_dir}/arch.safetensors")"
echo "== ${arch_line}" >&2

commands=()
for ((rep = 1; rep <= reps; rep++)); do
  for batch in "${batches[@]}"; do
    metrics="${work_dir}/ours_b${batch}_r${rep}.jsonl"
    ours_cmd "${batch}" "${metrics}"
    ((rep == 1)) && commands+=("$(printf '%q ' "${cmd[@]}")")
    echo "== rep ${rep}/${reps}: ours, per-rank batch ${batch}" >&2
    cut -d' ' -f1 /proc/loadavg >"${work_dir}/ours_b${batch}_r${rep}.load"
    "${cmd[@]}" >&2

    torch_cmd "${batch}"
    ((rep == 1)) && commands+=("$(printf '%q ' "${cmd[@]}")")
    echo "== rep ${rep}/${reps}: torch, per-rank batch ${batch}" >&2
    cut -d' ' -f1 /proc/loadavg >"${work_dir}/torch_b${batch}_r${rep}.load"
    "${cmd[@]}" | grep '^RESULT ' >"${work_dir}/torch_b${batch}_r${rep}.txt"
  done
done

load_after="$(cut -d' ' -f1-3 /proc/loadavg)"
echo "== load after: ${load_after}" >&2

"${python}" - "${work_dir}" "${reps}" "${warmup}" "${world_size}" "${load_before}" \
  "${load_after}" "${arch_line}" "${batches[*]}" "${model}" <<'PY'
import json
import statistics
import sys

work_dir, reps, warmup, world_size, load_before, load_after, arch_line, batches, model = \
    sys.argv[1:10]
reps, warmup, world_size = int(reps), int(warmup), int(world_size)
arch = dict(kv.split("=") for kv in arch_line.split()[1:])


def ours_images_per_s(path, batch):
    windows = []  # (images, seconds) of each log window after the warm-up
    last_step = warmup
    with open(path) as f:
        for line in f:
            record = json.loads(line)
            if record.get("kind") != "train" or record["step"] <= warmup:
                continue
            images = (record["step"] - last_step) * batch * world_size
            windows.append((images, images / record["images_per_s"]))
            last_step = record["step"]
    if not windows:
        sys.exit(f"error: no log windows after step {warmup} in {path}")
    return sum(i for i, _ in windows) / sum(s for _, s in windows)


def torch_result(path):
    with open(path) as f:
        line = f.read().split("\n")[0]
    if not line.startswith("RESULT "):
        sys.exit(f"error: no RESULT line from torch_ddp_train.py in {path}")
    return {k: float(v) for k, v in (kv.split("=") for kv in line.split()[1:])}


print(f"{model} on Fashion-MNIST, per-rank batch x {world_size} ranks, 1 thread per rank, SyncBN over all ranks; "
      f"{warmup} warm-up steps, then 100 (batch 4) / 50 (batch 32) timed steps; medians of "
      f"{reps} interleaved repetitions (range in brackets). Load average (1/5/15 min) "
      f"before/after: {load_before} / {load_after}.")
print(f"Same architecture: {arch['same']} (parameters: ours {int(arch['ours_params'])}, "
      f"torch {int(arch['torch_params'])}; state-dict names and shapes compared).")
print()
def load_at(side, batch, rep):
    with open(f"{work_dir}/{side}_b{batch}_r{rep}.load") as f:
        return f.read().strip()


print("| per-rank batch | ours img/s | torch img/s | ours/torch | torch SyncBN all_reduce |")
print("|---:|---:|---:|---:|---:|")
runs = []
for batch in map(int, batches.split()):
    ours = [ours_images_per_s(f"{work_dir}/ours_b{batch}_r{r}.jsonl", batch)
            for r in range(1, reps + 1)]
    theirs = [torch_result(f"{work_dir}/torch_b{batch}_r{r}.txt") for r in range(1, reps + 1)]
    torch_ips = [t["images_per_s"] for t in theirs]
    frac = statistics.median(t["syncbn_allreduce_frac"] for t in theirs)
    ratios = [o / t for o, t in zip(ours, torch_ips)]

    def cell(values, fmt):
        text = format(statistics.median(values), fmt)
        if len(values) > 1:
            text += f" [{format(min(values), fmt)}-{format(max(values), fmt)}]"
        return text

    print(f"| {batch} | {cell(ours, '.0f')} | {cell(torch_ips, '.0f')} | "
          f"{cell(ratios, '.2f')} | {frac:.0%} of step time |")
    for r in range(reps):
        rep = r + 1
        runs.append(f"batch {batch} rep {rep}: "
                    f"ours {ours[r]:.0f} (load {load_at('ours', batch, rep)}), "
                    f"torch {torch_ips[r]:.0f} (load {load_at('torch', batch, rep)}, "
                    f"all_reduce {theirs[r]['syncbn_allreduce_frac']:.0%})")
print()
print("Every run, img/s with the 1-minute load average at its start:")
print()
for line in runs:
    print(f"- {line}")
PY

echo
echo "Commands (repetition 1; \`syncbn model --config ${config} --set model.preset=${model} --torch\`"
echo "wrote model.txt):"
echo
echo '```'
for c in "${commands[@]}"; do
  echo "${c% }"
done
echo '```'
echo
echo "uptime before: ${uptime_before}"
echo "uptime after:  $(uptime)"
