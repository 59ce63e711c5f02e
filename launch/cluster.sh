#!/usr/bin/env bash
# A multi-host test bed on one machine: every "host" is a Linux network namespace with its own
# address, joined to this machine (the head node) by a veth pair on one bridge. mpirun reaches
# the hosts through launch/netns_agent.sh (--mca plm_rsh_agent) instead of ssh, and the ranks
# talk over Open MPI's TCP transport across the bridge.
#
#   launch/cluster.sh up [--hosts N] [--slots S]    create N hosts (default 3) of S slots (2)
#   launch/cluster.sh down                          remove everything `up` created
#   launch/cluster.sh run [--hosts N] [--slots S] -- COMMAND...
#                                                   up, run COMMAND, down (also on failure)
#   launch/cluster.sh kill-host HOST                SIGKILL every process of HOST, cut its link
#   launch/cluster.sh delay MS                      add MS ms of latency to every host's link
#   launch/cluster.sh status                        the hosts and their processes
#
# COMMAND gets SYNCBN_CLUSTER_HOSTFILE (an Open MPI hostfile), SYNCBN_CLUSTER_HEAD (the head's
# address on the bridge), SYNCBN_CLUSTER_SUBNET (for btl/oob_tcp_if_include) and
# SYNCBN_CLUSTER_MPI_ARGS (the mpirun flags that reach the hosts). Root only. Names:
# namespaces $SYNCBN_CLUSTER_NAME-h1.. (default "sbn"), subnet $SYNCBN_CLUSTER_NET.0/24
# (default 10.78.0), state in $SYNCBN_CLUSTER_DIR (default /tmp/syncbn-cluster-NAME).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
name=${SYNCBN_CLUSTER_NAME:-sbn}
net=${SYNCBN_CLUSTER_NET:-10.78.0}
state=${SYNCBN_CLUSTER_DIR:-/tmp/syncbn-cluster-$name}
bridge=$name-br
head=$net.1

die() {
  echo "cluster.sh: $*" >&2
  exit 1
}

usage() {
  sed -n '7,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

require_root() {
  [[ $(id -u) -eq 0 ]] || die "needs root (network namespaces, veth pairs, a bridge); run as root"
  command -v ip >/dev/null || die "needs 'ip' (Debian package iproute2)"
  command -v unshare >/dev/null || die "needs 'unshare' (Debian package util-linux)"
}

hosts_up() {
  ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$name-h[0-9]+$" | sort -V || true
}

kill_host_processes() {
  local ns=$1 pids
  pids=$(ip netns pids "$ns" 2>/dev/null || true)
  # shellcheck disable=SC2086  # one word per pid
  if [[ -n $pids ]]; then kill -9 $pids 2>/dev/null || true; fi
}

cmd_down() {
  local ns
  for ns in $(hosts_up); do
    kill_host_processes "$ns"
    ip link del "$ns-v" 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
  ip link del "$bridge" 2>/dev/null || true
  rm -rf "$state"
}

cmd_up() {
  local hosts=3 slots=2
  while (($#)); do
    case $1 in
      --hosts) hosts=$2; shift 2 ;;
      --slots) slots=$2; shift 2 ;;
      *) echo "cluster.sh up: unknown option '$1'; expected --hosts N or --slots S" >&2; exit 2 ;;
    esac
  done
  [[ $hosts =~ ^[1-9][0-9]?$ ]] || die "--hosts expects 1..99, got '$hosts'"
  [[ $slots =~ ^[1-9][0-9]*$ ]] || die "--slots expects a positive integer, got '$slots'"
  cmd_down
  trap 'cmd_down' ERR
  ip link add "$bridge" type bridge
  ip addr add "$head/24" dev "$bridge"
  ip link set "$bridge" up
  mkdir -p "$state"
  : >"$state/hostfile"
  local i ns
  for ((i = 1; i <= hosts; ++i)); do
    ns=$name-h$i
    ip netns add "$ns"
    ip link add "$ns-v" type veth peer name "$ns-p"
    ip link set "$ns-p" netns "$ns"
    ip link set "$ns-v" master "$bridge"
    ip link set "$ns-v" up
    ip -n "$ns" link set "$ns-p" name eth0
    ip -n "$ns" addr add "$net.$((10 + i))/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    ip -n "$ns" route add default via "$head"
    echo "$ns slots=$slots" >>"$state/hostfile"
  done
  trap - ERR
  echo "cluster.sh: $hosts hosts up ($(hosts_up | tr '\n' ' ')), $slots slots each, head $head," \
    "hostfile $state/hostfile"
}

mpi_args() {
  echo "--hostfile $state/hostfile --mca plm_rsh_agent $root/launch/netns_agent.sh" \
    "--mca btl tcp,vader,self --mca btl_tcp_if_include $net.0/24 --mca oob_tcp_if_include $net.0/24"
}

cmd_run() {
  local up_args=()
  while (($#)); do
    case $1 in
      --hosts | --slots) up_args+=("$1" "$2"); shift 2 ;;
      --) shift; break ;;
      *) echo "cluster.sh run: unknown option '$1'; expected --hosts N, --slots S, then -- COMMAND" >&2; exit 2 ;;
    esac
  done
  (($#)) || die "run needs a command after --"
  trap 'cmd_down' EXIT
  trap 'exit 130' INT TERM
  cmd_up "${up_args[@]}"
  SYNCBN_CLUSTER_HOSTFILE=$state/hostfile SYNCBN_CLUSTER_HEAD=$head SYNCBN_CLUSTER_SUBNET=$net.0/24 \
    SYNCBN_CLUSTER_MPI_ARGS=$(mpi_args) "$@"
}

cmd_kill_host() {
  local ns=${1:-}
  [[ -n $ns ]] || die "kill-host needs a host name (one of: $(hosts_up | tr '\n' ' '))"
  hosts_up | grep -qx -- "$ns" || die "no host '$ns'; the hosts are: $(hosts_up | tr '\n' ' ')"
  # Cut the link first so nothing the dying processes send gets out, then kill everything.
  ip link set "$ns-v" down
  kill_host_processes "$ns"
  echo "cluster.sh: host $ns is down (processes killed, link cut)"
}

cmd_delay() {
  local ms=${1:-}
  [[ $ms =~ ^[0-9]+$ ]] || die "delay expects milliseconds, got '$ms'"
  local ns
  for ns in $(hosts_up); do
    # netem where the kernel has it (sch_netem); else a token bucket whose queue adds delay.
    if ! ip netns exec "$ns" tc qdisc replace dev eth0 root netem delay "${ms}ms" 2>/dev/null; then
      ip netns exec "$ns" tc qdisc replace dev eth0 root tbf rate 20mbit burst 16kb \
        latency "$((ms > 0 ? ms : 1))ms" ||
        die "cannot shape $ns: tc has neither netem nor tbf here"
      echo "cluster.sh: $ns: no netem in this kernel; shaped with tbf (20 Mbit/s) instead" >&2
    fi
  done
}

cmd_status() {
  local ns
  for ns in $(hosts_up); do
    echo "$ns $(ip -n "$ns" -4 -o addr show dev eth0 | awk '{print $4}')" \
      "link $(cat /sys/class/net/"$ns-v"/operstate 2>/dev/null || echo gone)," \
      "$(ip netns pids "$ns" | wc -l) processes"
  done
}

(($#)) || usage
command=$1
shift
case $command in
  up) require_root; cmd_up "$@" ;;
  down) require_root; cmd_down ;;
  run) require_root; cmd_run "$@" ;;
  kill-host) require_root; cmd_kill_host "$@" ;;
  delay) require_root; cmd_delay "$@" ;;
  status) require_root; cmd_status ;;
  -h | --help) usage ;;
  *) echo "cluster.sh: unknown command '$command'; expected up, down, run, kill-host, delay or status" >&2; exit 2 ;;
esac
