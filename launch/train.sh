#!/usr/bin/env bash
# The main job: SyncBN training of small_cnn on Fashion-MNIST under mpirun, 4 ranks.
#
#   launch/train.sh [--np N] [--config FILE] [--out DIR] [-- extra `syncbn train` arguments]
#
# Builds first if needed (launch/setup.sh). Starts a coordinator on a free loopback port with its
# state under runs/<timestamp>/coordinator (it hands every rank the config and stores the
# checkpoints; a fresh 0600 token in runs/<timestamp>/token keeps other users out), restarted if
# it dies (launch/coordinator.sh), then the ranks. Checkpoints the coordinator cannot take wait
# in runs/<timestamp>/spill. --out DIR replaces runs/<timestamp>. Prints progress on rank 0 and the final test accuracy; metrics go
# to runs/<timestamp>/metrics.jsonl, the weights to runs/<timestamp>/weights.safetensors
# (loadable with strict=True into the model that `syncbn model --config FILE --torch` prints).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

np=4
config=configs/fashion_mnist.yaml
run_dir=
extra=()
while (($#)); do
  case $1 in
    --np) np=$2; shift 2 ;;
    --config) config=$2; shift 2 ;;
    --out) run_dir=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "train.sh: unknown option '$1'; expected --np N, --config FILE, --out DIR or -- ARGS" >&2; exit 2 ;;
  esac
done

binary=${SYNCBN_BIN:-build/src/cli/syncbn}
[[ -x $binary ]] || launch/setup.sh
# shellcheck source=launch/coordinator.sh
. launch/coordinator.sh

run_dir=${run_dir:-runs/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$run_dir"

mpi_flags=(--bind-to none --mca mpi_yield_when_idle 1)
((np > $(nproc))) && mpi_flags+=(--oversubscribe)
[[ $(id -u) -eq 0 ]] && mpi_flags+=(--allow-run-as-root)

# The coordinator: port 0 lets the kernel pick a free port, kept across restarts.
token_file=$(new_token_file "$run_dir")
trap stop_coordinator EXIT
start_coordinator train.sh "$run_dir" 127.0.0.1:0 --token-file "$token_file" || exit 1
address=$coordinator_address

echo "train.sh: $np ranks, $config, coordinator $address, output in $run_dir"
start=$(date +%s)
mpirun -np "$np" "${mpi_flags[@]}" -x SYNCBN_COORDINATOR="$address" \
  -x SYNCBN_COORDINATOR_TOKEN_FILE="$token_file" -x SYNCBN_SPILL_DIR="$run_dir/spill" \
  "$binary" train --config "$config" --run-id "$(basename "$run_dir")" \
  --metrics-out "$run_dir/metrics.jsonl" --export-weights "$run_dir/weights.safetensors" \
  "${extra[@]}"
echo "train.sh: finished in $(($(date +%s) - start)) s"
