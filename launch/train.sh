#!/usr/bin/env bash
# The main job: data-parallel training with SyncBN on Fashion-MNIST under mpirun.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

[[ -x build/src/cli/syncbn ]] || launch/setup.sh
if ! build/src/cli/syncbn train --help >/dev/null 2>&1; then
  echo "train.sh: the trainer is not built yet in this version of syncbn (see README.md)" >&2
  exit 3
fi
