# shellcheck shell=bash
# The set-up that the bench/ scripts comparing with PyTorch share. Sourced, not run: it moves to
# the repository root and sets build_dir (BUILD_DIR, default build) and python (PYTHON, default
# /usr/bin/python3, Debian's with python3-torch, not pyenv's).
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
build_dir="${BUILD_DIR:-build}"
python="${PYTHON:-/usr/bin/python3}"

# build_target TARGET: configures build_dir (Release) unless it has a CMakeCache.txt, then builds
# TARGET. Progress on stderr.
build_target() {
  if [[ ! -f "${build_dir}/CMakeCache.txt" ]]; then
    echo "== configuring ${build_dir}" >&2
    cmake -S . -B "${build_dir}" -DCMAKE_BUILD_TYPE=Release >&2
  fi
  echo "== building $1 in ${build_dir}" >&2
  cmake --build "${build_dir}" --target "$1" --parallel >&2
}

# Exits 1 unless python imports torch.
require_torch() {
  if ! "${python}" -c 'import torch' 2>/dev/null; then
    echo "error: ${python} cannot import torch (install python3-torch, or set PYTHON)" >&2
    exit 1
  fi
}

# Sets work_dir to a new temporary directory, removed when the script exits.
make_work_dir() {
  work_dir="$(mktemp -d)"
  trap 'rm -rf "${work_dir}"' EXIT
}
