#!/usr/bin/env bash
# Peak resident memory per rank of `syncbn train` against PyTorch 1.13 DDP (bench/torch_ddp_train.py)
# for the same model, 2 ranks x 1 thread, per-rank batch 8 (SyncBN, SGD with momentum), after a
# short run. One Markdown table on stdout; progress on stderr.
#
#   bench/memory.sh                        # resnet20 and resnet50
#   MODELS="small_cnn resnet18" BATCH=4 bench/memory.sh
#
# Environment: MODELS (model.preset names), BATCH (per-rank batch, default 8), STEPS (training
# steps, default 20), TEST_LIMIT (test images ours evaluates at the end, default 100; 0 = all
# 10000), BUILD_DIR (default build), PYTHON (default /usr/bin/python3).
# Ours: each rank runs under a small Python wrapper that prints the peak RSS (ru_maxrss) of the
# syncbn process it started; the table shows the largest rank. Torch: the largest rank's
# ru_maxrss, reported by torch_ddp_train.py (it includes the imported torch library).
set -euo pipefail
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

read -r -a models <<<"${MODELS:-resnet20 resnet50}"
batch="${BATCH:-8}"
steps="${STEPS:-20}"
test_limit="${TEST_LIMIT:-100}"
if ! [[ "${test_limit}" =~ ^[0-9]+$ ]]; then
  echo "error: TEST_LIMIT must be a whole number, got '${test_limit}'" >&2
  exit 2
fi
for value in "${batch}" "${steps}"; do
  if ! [[ "${value}" =~ ^[1-9][0-9]*$ ]]; then
    echo "error: BATCH and STEPS must be positive integers, got '${value}'" >&2
    exit 2
  fi
done
world_size=2
config=configs/fashion_mnist.yaml

build_target syncbn
syncbn="${build_dir}/src/cli/syncbn"
require_torch
make_work_dir

mpi_flags=(--bind-to none --mca mpi_yield_when_idle 1)
((world_size > $(nproc))) && mpi_flags+=(--oversubscribe)
[[ $(id -u) -eq 0 ]] && mpi_flags+=(--allow-run-as-root)
# argv[1:] runs as a child; its peak RSS in KiB goes to the file named by PEAK_RSS_DIR/rank.
wrapper='import os, resource, subprocess, sys
code = subprocess.run(sys.argv[1:]).returncode
rank = os.environ.get("OMPI_COMM_WORLD_RANK", "0")
with open(os.path.join(os.environ["PEAK_RSS_DIR"], rank), "w") as f:
    f.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code)'

echo "Peak resident memory per rank (MiB, the largest of ${world_size} ranks), per-rank batch" \
  "${batch}, ${steps} training steps, 1 thread per rank, Fashion-MNIST."
echo
echo "| model | parameters | ours | torch DDP | ours/torch |"
echo "|---|---:|---:|---:|---:|"
for model in "${models[@]}"; do
  "${syncbn}" model --config "${config}" --set "model.preset=${model}" --torch \
    >"${work_dir}/${model}.py"
  mkdir -p "${work_dir}/${model}.rss"
  echo "== ${model}: ours" >&2
  PEAK_RSS_DIR="${work_dir}/${model}.rss" mpirun -np "${world_size}" "${mpi_flags[@]}" \
    -x PEAK_RSS_DIR "${python}" -c "${wrapper}" "${syncbn}" train --config "${config}" \
    --set "model.preset=${model}" --set "train.per_rank_batch=${batch}" \
    --set "train.steps=${steps}" --set train.warmup_steps=0 --set "data.test_limit=${test_limit}" \
    --set train.threads=1 --no-progress >&2
  ours_kib=$(sort -n "${work_dir}/${model}.rss"/* | tail -1)
  echo "== ${model}: torch" >&2
  result=$("${python}" bench/torch_ddp_train.py --model-file "${work_dir}/${model}.py" \
    --per-rank-batch "${batch}" --world-size "${world_size}" --threads 1 --warmup 1 \
    --steps "${steps}" | grep '^RESULT ')
  torch_mib=$(sed -n 's/.* peak_rss_mib=\([0-9]*\).*/\1/p' <<<"${result}")
  params=$(sed -n 's/.* params=\([0-9]*\).*/\1/p' <<<"${result}")
  awk -v m="${model}" -v p="${params}" -v o="${ours_kib}" -v t="${torch_mib}" \
    'BEGIN { printf "| %s | %d | %.0f | %d | %.2f |\n", m, p, o / 1024, t, o / 1024 / t }'
done
