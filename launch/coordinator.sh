# shellcheck shell=bash
# The coordinator of one run, kept alive: sourced by launch/train.sh and launch/run.sh.
#
#   start_coordinator NAME OUT LISTEN [coordinator options...]   # sets coordinator_address
#   ...                                                          # the run
#   stop_coordinator
#
# Starts `syncbn coordinator` with its state in OUT/coordinator and its log in
# OUT/coordinator.log, under a watcher that restarts it whenever it exits without being asked to
# (a crash, an OOM kill, kill -9), on the same address (the port the first start got, when
# LISTEN ends in :0) and the same state directory, at most $SYNCBN_COORDINATOR_MAX_RESTARTS
# times (default 10); each restart is logged with its count, on stderr and in the log. The
# trainers' background clients reconnect on their own (DESIGN.md §4). OUT/coordinator.pid holds
# the current process id. Needs $binary.

coordinator_watcher=
coordinator_address=

start_coordinator() {
  local name=$1 out=$2 listen=$3
  shift 3
  local log=$out/coordinator.log max=${SYNCBN_COORDINATOR_MAX_RESTARTS:-10} first
  # The log may hold earlier runs' lines (run.sh appends): this run's start after them.
  first=$(($(cat "$log" 2>/dev/null | wc -l) + 1))
  [[ $max =~ ^[0-9]+$ ]] || {
    echo "$name: SYNCBN_COORDINATOR_MAX_RESTARTS must be an integer >= 0, got '$max'" >&2
    return 2
  }
  (
    pid=
    trap 'if [[ -n $pid ]]; then kill "$pid" 2>/dev/null; wait "$pid"; fi; exit 0' TERM
    restarts=0
    while :; do
      "${binary:?}" coordinator --listen "$listen" --state-dir "$out/coordinator" "$@" >>"$log" 2>&1 &
      pid=$!
      echo "$pid" >"$out/coordinator.pid"
      status=0
      wait "$pid" 2>/dev/null || status=$?  # (no "Killed" job notice)
      address=$(sed -n "$first,\$ s/^listening on //p" "$log" | head -1)
      [[ -n $address ]] || exit 1  # it never started: start_coordinator reports that
      listen=$address
      if ((restarts >= max)); then
        echo "$name: the coordinator (pid $pid) exited with status $status; not restarting it" \
          "again ($restarts restarts, the limit)" | tee -a "$log" >&2
        exit 1
      fi
      restarts=$((restarts + 1))
      echo "$name: the coordinator (pid $pid) exited with status $status; restarting it on" \
        "$listen with the same state (restart $restarts of $max)" | tee -a "$log" >&2
      sleep 0.2
    done
  ) &
  coordinator_watcher=$!
  coordinator_address=
  for _ in $(seq 100); do
    coordinator_address=$(sed -n "$first,\$ s/^listening on //p" "$log" | head -1)
    [[ -n $coordinator_address ]] && return 0
    kill -0 "$coordinator_watcher" 2>/dev/null || break
    sleep 0.1
  done
  echo "$name: the coordinator did not start:" >&2
  cat "$log" >&2
  stop_coordinator
  return 1
}

stop_coordinator() {
  if [[ -n $coordinator_watcher ]]; then
    kill -TERM "$coordinator_watcher" 2>/dev/null || true
    wait "$coordinator_watcher" 2>/dev/null || true
    coordinator_watcher=
  fi
}

# A fresh secret for this run, readable only by its owner: loopback is no trust boundary on a
# shared machine, so every run has one. Prints the file's path.
new_token_file() {
  local file=$1/token
  rm -f "$file"
  (umask 077 && head -c 32 /dev/urandom | base64 | tr -d '\n=+/' >"$file")
  echo "$file"
}
