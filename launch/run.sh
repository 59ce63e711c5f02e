#!/usr/bin/env bash
# Multi-node training with restart on failure (what torchrun --max-restarts does, for mpirun).
#
#   launch/run.sh --hostfile FILE --np N [--config FILE] [--max-restarts K] [options]
#                 [-- extra `syncbn train` arguments]
#
# Starts the coordinator on this host (the head node; restarted on the same address and state if
# it dies, see launch/coordinator.sh; a fresh 0600 token per run, also on loopback), then
# `mpirun` across the hostfile's hosts
# with the coordinator address, run id and launch generation forwarded to every rank (-x). When
# the job fails — a rank dies, a host drops, mpirun exits non-zero, or a rank stops making
# progress (no heartbeat for --stall-timeout seconds) — it relaunches with --resume and the next
# generation (the coordinator then refuses the old one), on the hosts still reachable and with
# the same global batch, up to K times. Then it gives up with exit code 3 and names the last
# failure.
#
# Options:
#   --hostfile FILE         Open MPI hostfile ("host slots=N" lines)
#   --np N                  ranks (the global batch is N × train.per_rank_batch)
#   --config FILE           training config (default configs/fashion_mnist.yaml)
#   --max-restarts K        relaunches after a failure (default 3)
#   --stall-timeout S       a rank without progress for S seconds counts as stuck (default 300)
#   --run-id ID             run id at the coordinator (default run-<timestamp>)
#   --out DIR               coordinator state, logs, metrics, weights (default runs/<run id>)
#   --tcp-include NET       interfaces or CIDR for Open MPI's TCP traffic
#                           (btl_tcp_if_include and oob_tcp_if_include), e.g. eth0 or 10.0.0.0/24
#   --coordinator-host A    address the ranks reach this host at (default: this host's address
#                           in --tcp-include, else the first of `hostname -I`; 127.0.0.1 when
#                           every host is this one)
#   --launch-agent CMD      how mpirun reaches a host (--mca plm_rsh_agent; default ssh)
#   --mpirun-arg ARG        one more mpirun argument (repeatable)
#
# Environment: SYNCBN_BIN (the syncbn binary; default build/src/cli/syncbn).
#
# Exit codes: 0 done, 2 usage, 3 failed after K+1 attempts, 1 anything else.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
  sed -n '4,5p;15,33p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}
bad_usage() {
  echo "run.sh: $*" >&2
  echo "run.sh: see launch/run.sh --help" >&2
  exit 2
}
log() { echo "run.sh: $*" >&2; }

hostfile='' np='' config=$root/configs/fashion_mnist.yaml max_restarts=3 stall_timeout=300
run_id='' out='' tcp_include='' coordinator_host='' launch_agent='' mpirun_extra=() train_extra=()
while (($#)); do
  case $1 in
    --hostfile | --np | --config | --max-restarts | --stall-timeout | --run-id | --out | \
      --tcp-include | --coordinator-host | --launch-agent | --mpirun-arg)
      (($# >= 2)) || bad_usage "option $1 needs a value"
      case $1 in
        --hostfile) hostfile=$2 ;;
        --np) np=$2 ;;
        --config) config=$2 ;;
        --max-restarts) max_restarts=$2 ;;
        --stall-timeout) stall_timeout=$2 ;;
        --run-id) run_id=$2 ;;
        --out) out=$2 ;;
        --tcp-include) tcp_include=$2 ;;
        --coordinator-host) coordinator_host=$2 ;;
        --launch-agent) launch_agent=$2 ;;
        --mpirun-arg) mpirun_extra+=("$2") ;;
      esac
      shift 2
      ;;
    -h | --help) usage ;;
    --) shift; train_extra=("$@"); break ;;
    *) bad_usage "unknown option '$1'" ;;
  esac
done
[[ -n $hostfile ]] || bad_usage "--hostfile FILE is required"
[[ -r $hostfile ]] || bad_usage "cannot read the hostfile '$hostfile'"
[[ $np =~ ^[1-9][0-9]*$ ]] || bad_usage "--np expects a positive integer, got '${np:-nothing}'"
[[ $max_restarts =~ ^[0-9]+$ ]] || bad_usage "--max-restarts expects an integer >= 0, got '$max_restarts'"
[[ $stall_timeout =~ ^[1-9][0-9]*$ ]] || bad_usage "--stall-timeout expects seconds > 0, got '$stall_timeout'"
[[ -r $config ]] || bad_usage "cannot read the config '$config'"
config=$(realpath "$config")  # the ranks may start in another directory
run_id=${run_id:-run-$(date +%Y%m%d-%H%M%S)}
[[ $run_id =~ ^[A-Za-z0-9_.-]{1,64}$ ]] || bad_usage "--run-id must match [A-Za-z0-9_.-]{1,64}, got '$run_id'"
out=${out:-$root/runs/$run_id}

binary=${SYNCBN_BIN:-$root/build/src/cli/syncbn}
[[ -x $binary ]] || "$root/launch/setup.sh"
# shellcheck source=launch/coordinator.sh
. "$root/launch/coordinator.sh"

# The hostfile: "host [slots=N]" lines; comments and blank lines skipped.
hosts=() slots=()
while read -r line; do
  line=${line%%#*}
  read -r -a words <<<"$line"
  ((${#words[@]})) || continue
  n=1
  for w in "${words[@]:1}"; do
    [[ $w =~ ^slots=([0-9]+)$ ]] && n=${BASH_REMATCH[1]}
  done
  hosts+=("${words[0]}")
  slots+=("$n")
done <"$hostfile"
((${#hosts[@]})) || bad_usage "the hostfile '$hostfile' names no host"

is_local() {
  case $1 in
    localhost | 127.* | ::1 | "$(hostname)" | "$(hostname -f 2>/dev/null || hostname)") return 0 ;;
  esac
  return 1
}
all_local=1
for h in "${hosts[@]}"; do is_local "$h" || all_local=0; done

# The global batch stays fixed across restarts; fewer ranks then take bigger slices.
per_rank_batch=$(sed -n 's/^[[:space:]]*per_rank_batch:[[:space:]]*\([0-9][0-9]*\).*/\1/p' "$config" | head -1)
for ((i = 0; i < ${#train_extra[@]}; ++i)); do
  [[ ${train_extra[i]} == --set && $((i + 1)) -lt ${#train_extra[@]} &&
    ${train_extra[i + 1]} =~ ^train\.per_rank_batch=([0-9]+)$ ]] && per_rank_batch=${BASH_REMATCH[1]}
done
[[ -n $per_rank_batch ]] || bad_usage "cannot find train.per_rank_batch in '$config'"
global_batch=$((np * per_rank_batch))

mkdir -p "$out"

# The coordinator: loopback when every host is this one; else an address the hosts reach. Either
# way with a fresh token (readable by the ranks: on a real cluster, keep --out on a shared file
# system).
if ((all_local)); then
  listen=127.0.0.1:0
else
  if [[ -z $coordinator_host ]]; then
    if [[ $tcp_include == */* ]]; then
      coordinator_host=$(ip -o -4 addr show | awk '{print $4}' | /usr/bin/python3 -c '
import ipaddress, sys
net = ipaddress.ip_network(sys.argv[1], strict=False)
print(next((a.split("/")[0] for a in sys.stdin.read().split()
            if ipaddress.ip_address(a.split("/")[0]) in net), ""))' "$tcp_include")
    elif [[ -n $tcp_include ]]; then
      coordinator_host=$(ip -o -4 addr show dev "${tcp_include%%,*}" | awk '{print $4}' | cut -d/ -f1 | head -1 || true)
    else
      coordinator_host=$(hostname -I | awk '{print $1}')
    fi
  fi
  [[ -n $coordinator_host ]] || bad_usage "cannot tell which address the hosts reach this one at; pass --coordinator-host"
  listen=$coordinator_host:0
fi
token_file=$(new_token_file "$out")
export SYNCBN_COORDINATOR_TOKEN_FILE=$token_file SYNCBN_SPILL_DIR=$out/spill

mpirun_pid=''
# shellcheck disable=SC2317  # called by the trap
cleanup() {
  if [[ -n $mpirun_pid ]]; then kill -KILL -- "-$mpirun_pid" 2>/dev/null || true; fi
  stop_coordinator
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_coordinator run.sh "$out" "$listen" --token-file "$token_file" || exit 1
address=$coordinator_address
export SYNCBN_COORDINATOR=$address SYNCBN_RUN_ID=$run_id

# A host is usable when the launch agent can run a command there that reaches the coordinator.
agent=(ssh -o BatchMode=yes -o ConnectTimeout=5)
[[ -n $launch_agent ]] && read -r -a agent <<<"$launch_agent"
reachable() {
  is_local "$1" && return 0
  timeout 10 "${agent[@]}" "$1" "bash -c 'exec 3<>/dev/tcp/${address%:*}/${address##*:}'" \
    >/dev/null 2>&1
}

mpi_flags=(--map-by slot --bind-to none --mca mpi_yield_when_idle 1)
[[ $(id -u) -eq 0 ]] && mpi_flags+=(--allow-run-as-root)
[[ -n $launch_agent ]] && mpi_flags+=(--mca plm_rsh_agent "$launch_agent")
[[ -n $tcp_include ]] && mpi_flags+=(--mca btl "tcp,vader,self" --mca btl_tcp_if_include
  "$tcp_include" --mca oob_tcp_if_include "$tcp_include")

# Stuck ranks: a rank of this generation whose heartbeat (sent as steps complete) is older than
# the bound, or one that never sent any that long after the launch.
stalled() {
  local launched=$1 report
  # No answer from the coordinator is not a verdict on the ranks (the ranks give up on their own
  # when it is gone too long).
  report=$("$binary" status --json --run "$run_id" 2>/dev/null) || return 1
  /usr/bin/python3 -c '
import json, sys, time
limit_ms, gen, np_, age_s = float(sys.argv[1]) * 1000, int(sys.argv[2]), int(sys.argv[3]), time.time() - float(sys.argv[4])
ranks = []
for line in sys.stdin:
    run = json.loads(line)
    if run["generation"] == gen:
        ranks = [r for r in run["ranks"] if r["generation"] == gen]
# A rank heartbeats from a background thread: its step (progress_age_ms: time since the step
# last changed) tells whether it trains; a heartbeat that stops means the process is gone or
# frozen.
def stuck_ms(r):
    return max(r["heartbeat_age_ms"], r.get("progress_age_ms", -1))
for r in sorted(ranks, key=lambda r: -stuck_ms(r)):
    if stuck_ms(r) > limit_ms:
        print("rank %d on %s (pid %d) made no progress for %.0f s (last step %d)" % (
            r["rank"], r["host"], r["pid"], stuck_ms(r) / 1000, r["step"]))
        sys.exit(0)
seen = {r["rank"] for r in ranks if r["heartbeat_age_ms"] >= 0}
if age_s * 1000 > limit_ms and len(seen) < np_:
    missing = sorted(set(range(np_)) - seen)
    print("rank(s) %s sent no heartbeat in the %.0f s since the launch" % (
        " ".join(map(str, missing)), age_s))
    sys.exit(0)
sys.exit(1)' "$stall_timeout" "$generation" "$ranks" "$launched" <<<"$report"
}

generation=0
last_failure=
while :; do
  # The hosts of this attempt: the reachable ones, and as many ranks as fit the global batch.
  attempt_hostfile=$out/hostfile.$generation
  : >"$attempt_hostfile"
  capacity=0
  for i in "${!hosts[@]}"; do
    if ((generation == 0)) || reachable "${hosts[i]}"; then
      echo "${hosts[i]} slots=${slots[i]}" >>"$attempt_hostfile"
      capacity=$((capacity + slots[i]))
    else
      log "host ${hosts[i]} is unreachable: leaving it out of generation $generation"
    fi
  done
  ranks=$np
  ((generation == 0 || ranks <= capacity)) || ranks=$capacity
  while ((ranks > 0 && global_batch % ranks != 0)); do ranks=$((ranks - 1)); done
  if ((ranks == 0)); then
    last_failure="no reachable host left (${last_failure:-})"
    break
  fi
  args=(train --config "$config" --metrics-out "$out/metrics.$generation.jsonl"
    --export-weights "$out/weights.safetensors")
  ((generation > 0)) && args+=(--resume)
  args+=("${train_extra[@]}")
  ((ranks != np)) && args+=(--set "train.per_rank_batch=$((global_batch / ranks))")
  export SYNCBN_GENERATION=$generation
  on=$(awk '{print $1}' "$attempt_hostfile" | paste -sd' ')
  log "generation $generation: $ranks ranks on $on, global batch $global_batch," \
    "coordinator $address, run $run_id, output in $out"
  launched=$(date +%s)
  setsid mpirun -np "$ranks" --hostfile "$attempt_hostfile" "${mpi_flags[@]}" "${mpirun_extra[@]}" \
    -x SYNCBN_COORDINATOR -x SYNCBN_RUN_ID -x SYNCBN_GENERATION \
    -x SYNCBN_COORDINATOR_TOKEN_FILE -x SYNCBN_SPILL_DIR "$binary" "${args[@]}" &
  mpirun_pid=$!
  reason=
  while kill -0 "$mpirun_pid" 2>/dev/null; do
    sleep 1
    if reason=$(stalled "$launched"); then
      log "generation $generation is stuck: $reason; stopping it"
      kill -TERM -- "-$mpirun_pid" 2>/dev/null || true
      for _ in $(seq 10); do kill -0 "$mpirun_pid" 2>/dev/null || break; sleep 1; done
      kill -KILL -- "-$mpirun_pid" 2>/dev/null || true
      break
    fi
    reason=
  done
  rc=0
  wait "$mpirun_pid" || rc=$?
  mpirun_pid=
  if [[ -z $reason && $rc -eq 0 ]]; then
    log "done: generation $generation finished in $(($(date +%s) - launched)) s; weights in $out/weights.safetensors"
    exit 0
  fi
  last_failure="generation $generation: ${reason:-mpirun exited with status $rc}"
  log "failed: $last_failure"
  ((generation < max_restarts)) || break
  generation=$((generation + 1))
done
log "giving up after $((generation + 1)) attempt(s) (--max-restarts $max_restarts); last failure: $last_failure"
exit 3
