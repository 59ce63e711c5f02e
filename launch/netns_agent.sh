#!/usr/bin/env bash
# Open MPI launch agent for the test cluster of launch/cluster.sh: what ssh is to a real cluster.
# mpirun calls it as `netns_agent.sh [ssh-style options] HOST COMMAND...` (--mca plm_rsh_agent);
# it runs COMMAND with /bin/sh inside the network namespace named HOST, in a UTS namespace of its
# own whose hostname is HOST, so every test host has its own name, address and network stack.
# Root only (ip netns exec needs it).
set -euo pipefail

# Skip the options an rsh/ssh launcher may put before the host name.
while (($#)) && [[ $1 == -* ]]; do
  case $1 in
    -l | -p | -o | -i) shift 2 ;;
    *) shift ;;
  esac
done
if (($# < 2)); then
  echo "netns_agent.sh: usage: netns_agent.sh HOST COMMAND..." >&2
  exit 255
fi
host=$1
shift
if ! ip netns list | awk '{print $1}' | grep -qx -- "$host"; then
  # 255 is what ssh returns when it cannot reach the host.
  echo "netns_agent.sh: no test host '$host' (no network namespace of that name; is the cluster up?)" >&2
  exit 255
fi
# ssh runs the words it is given as one command line through the remote shell; so does this.
# shellcheck disable=SC2016  # $1 and $* expand in that inner shell
exec ip netns exec "$host" unshare --uts /bin/sh -c 'hostname "$1"; shift; eval "$*"' sh "$host" "$*"
