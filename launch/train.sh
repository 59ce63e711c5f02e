#!/usr/bin/env bash
# The main job: SyncBN training of small_cnn on Fashion-MNIST under mpirun, 4 ranks.
#
#   launch/train.sh [--np N] [--config FILE] [-- extra `syncbn train` arguments]
#
# Builds first if needed (launch/setup.sh). Starts a coordinator on a free loopback port with its
# state under runs/<timestamp>/coordinator (it hands every rank the config and stores the
# checkpoints), then the ranks. Prints progress on rank 0 and the final test accuracy; metrics go
# to runs/<timestamp>/metrics.jsonl, the weights to runs/<timestamp>/weights.safetensors
# (loadable into the torch.nn.Sequential that `syncbn model --config FILE --torch` prints).
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

# The coordinator: port 0 lets the kernel pick a free port, printed as "listening on ADDR".
"$binary" coordinator --listen 127.0.0.1:0 --state-dir "$run_dir/coordinator" \
  >"$run_dir/coordinator.log" 2>&1 &
coordinator_pid=$!
trap 'kill "$coordinator_pid" 2>/dev/null || true' EXIT
address=
for _ in $(seq 100); do
  address=$(sed -n 's/^listening on //p' "$run_dir/coordinator.log")
  [[ -n $address ]] && break
  kill -0 "$coordinator_pid" 2>/dev/null || break
  sleep 0.1
done
if [[ -z $address ]]; then
  echo "train.sh: the coordinator did not start:" >&2
  cat "$run_dir/coordinator.log" >&2
  exit 1
fi

echo "train.sh: $np ranks, $config, coordinator $address, output in $run_dir"
start=$(date +%s)
mpirun -np "$np" "${mpi_flags[@]}" -x SYNCBN_COORDINATOR="$address" "$binary" train \
  --config "$config" --run-id "$(basename "$run_dir")" \
  --metrics-out "$run_dir/metrics.jsonl" --export-weights "$run_dir/weights.safetensors" \
  "${extra[@]}"
echo "train.sh: finished in $(($(date +%s) - start)) s"
