#!/usr/bin/env bash
# The main job: SyncBN training of small_cnn on Fashion-MNIST under mpirun, 4 ranks.
#
#   launch/train.sh [--np N] [--config FILE] [-- extra `syncbn train` arguments]
#
# Builds first if needed (launch/setup.sh). Prints progress on rank 0 and the final test
# accuracy; metrics go to runs/<timestamp>/metrics.jsonl, the weights to
# runs/<timestamp>/weights.safetensors (loadable into the torch.nn.Sequential that
# `syncbn model --config FILE --torch` prints).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

np=4
config=configs/fashion_mnist.yaml
extra=()
while (($#)); do
  case $1 in
    --np) np=$2; shift 2 ;;
    --config) config=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "train.sh: unknown option '$1'; expected --np N, --config FILE or -- ARGS" >&2; exit 2 ;;
  esac
done

binary=build/src/cli/syncbn
[[ -x $binary ]] || launch/setup.sh

run_dir=runs/$(date +%Y%m%d-%H%M%S)
mkdir -p "$run_dir"

mpi_flags=(--bind-to none --mca mpi_yield_when_idle 1)
((np > $(nproc))) && mpi_flags+=(--oversubscribe)
[[ $(id -u) -eq 0 ]] && mpi_flags+=(--allow-run-as-root)

echo "train.sh: $np ranks, $config, output in $run_dir"
start=$(date +%s)
mpirun -np "$np" "${mpi_flags[@]}" "$binary" train --config "$config" \
  --metrics-out "$run_dir/metrics.jsonl" --export-weights "$run_dir/weights.safetensors" \
  "${extra[@]}"
echo "train.sh: finished in $(($(date +%s) - start)) s"
