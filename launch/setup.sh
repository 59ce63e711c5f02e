#!/usr/bin/env bash
# One-command setup: installs every Debian package syncbn needs (idempotent, quick when all are
# present), then configures and builds a Release tree in build/.
#
#   launch/setup.sh [--no-build]
#   launch/setup.sh --print-packages    the package list, one per line (launch/check_packages.py)
#
# Environment: BUILD_DIR (default build), SYNCBN_WERROR (default ON), JOBS (default nproc).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

packages=(
  build-essential cmake pkg-config git
  libgtest-dev libgmock-dev libbenchmark-dev
  openmpi-bin libopenmpi-dev
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  libyaml-cpp-dev libsqlite3-dev libdnnl-dev ocl-icd-opencl-dev zlib1g-dev
  python3-torch python3-numpy python3-grpcio dataset-fashion-mnist
  iproute2 shellcheck clang-format
  librsvg2-dev fonts-dejavu-core
)

if [[ ${1:-} == --print-packages ]]; then
  printf '%s\n' "${packages[@]}"
  exit 0
fi

missing=()
for pkg in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "setup: need root or sudo to install ${missing[*]}" >&2; exit 1; }
    sudo=(sudo)
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "setup: all ${#packages[@]} packages present"
fi

[[ ${1:-} == --no-build ]] && exit 0

build_dir=${BUILD_DIR:-build}
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DSYNCBN_WERROR="${SYNCBN_WERROR:-ON}" >/dev/null
cmake --build "$build_dir" -j "${JOBS:-$(nproc)}"
