#!/usr/bin/env bash
# Our CPU BatchNorm (bench/bn_bench) against PyTorch 1.13 (bench/torch_bn.py) with the same
# thread count, in one run, as one Markdown table on stdout; progress goes to stderr.
#
#   bench/compare_torch.sh [threads=2]
#
# Environment:
#   BUILD_DIR  CMake build directory (default: build, as made by launch/setup.sh); configured
#              here if it has no CMakeCache.txt yet.
#   PYTHON     interpreter with python3-torch (default: /usr/bin/python3, Debian's, not pyenv).
#
# Times are medians: of 9 Google Benchmark repetitions (each at least 0.1 s of iterations) for
# ours, of at least 100 individually timed calls (at least 0.5 s) for torch. GB/s uses the byte
# model in bench/bn_bench.cc (forward 12 B/element, fwd+bwd 32 B/element); "% triad" compares it
# with the STREAM-style triad measured in the same run. Working sets that fit in L3 can exceed
# 100%. Runs in well under two minutes on an idle 2-core machine with an up-to-date build.
set -euo pipefail

threads="${1:-2}"
if ! [[ "${threads}" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 [threads=2]  (threads must be a positive integer, got '${threads}')" >&2
  exit 2
fi

# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
build_target bn_bench
require_torch
make_work_dir
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"

echo "== bn_bench, OMP_NUM_THREADS=${threads}" >&2
OMP_NUM_THREADS="${threads}" "${build_dir}/bench/bn_bench" \
  --benchmark_repetitions=9 \
  --benchmark_min_time=0.1 \
  --benchmark_report_aggregates_only=true \
  --benchmark_out="${work_dir}/ours.json" \
  --benchmark_out_format=json >&2

echo "== torch_bn.py, ${threads} threads" >&2
OMP_NUM_THREADS="${threads}" "${python}" bench/torch_bn.py --threads "${threads}" \
  --min-reps 100 --min-seconds 0.5 >"${work_dir}/torch.tsv"

load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

"${python}" - "${work_dir}/ours.json" "${work_dir}/torch.tsv" "${threads}" \
  "${load_before}" "${load_after}" <<'PY'
import csv
import json
import sys

ours_path, torch_path, threads, load_before, load_after = sys.argv[1:6]
to_seconds = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}
pass_names = {"bn_forward": "fwd", "bn_fwd_bwd": "fwd_bwd"}

with open(ours_path) as f:
    report = json.load(f)
ours = {}  # (shape, layout, pass) -> (median seconds, GB/s)
ours_cv = {}  # run_name -> coefficient of variation of the repetitions' times
triad_gbps = None
for run in report["benchmarks"]:
    if run.get("run_type") != "aggregate":
        continue
    if run.get("aggregate_name") == "cv":
        ours_cv[run["run_name"]] = run["real_time"]
    if run.get("aggregate_name") != "median":
        continue
    seconds = run["real_time"] * to_seconds[run["time_unit"]]
    gbps = run.get("bytes_per_iter", 0.0) / seconds / 1e9
    # run_name is "<kind>/<shape>/<layout>/real_time" or "stream_triad/3x64MiB/real_time".
    kind, *rest = run["run_name"].split("/")
    if kind == "stream_triad":
        triad_gbps = gbps
    elif kind in pass_names:
        shape, layout = rest[:2]
        ours[(shape, layout, pass_names[kind])] = (seconds, gbps)
if triad_gbps is None:
    sys.exit("error: no stream_triad median in bn_bench's output")

torch_us = {}
torch_iqr = {}
with open(torch_path) as f:
    for row in csv.DictReader(f, delimiter="\t"):
        key = (row["shape"], row["layout"], row["pass"])
        torch_us[key] = float(row["median_us"])
        torch_iqr[key] = float(row["iqr_us"]) / float(row["median_us"])

print(f"Threads: {threads}. STREAM triad (3x64 MiB, median): {triad_gbps:.1f} GB/s. "
      f"Load average before/after: {load_before} / {load_after}.")
print()
print("| shape | layout | pass | ours (µs) | torch (µs) | ours/torch | ours GB/s | % triad |")
print("|---|---|---|---:|---:|---:|---:|---:|")
for key, (seconds, gbps) in ours.items():
    shape, layout, pass_name = key
    us = seconds * 1e6
    theirs = torch_us.get(key)
    theirs_text = f"{theirs:.1f}" if theirs else "n/a"
    ratio_text = f"{us / theirs:.2f}" if theirs else "n/a"
    print(f"| {shape} | {layout} | {pass_name} | {us:.1f} | {theirs_text} | {ratio_text} "
          f"| {gbps:.1f} | {100 * gbps / triad_gbps:.0f}% |")
missing = sorted(set(torch_us) - set(ours))
if missing:
    print(f"\nOnly in torch_bn.py: {missing}")

# Flag what a loaded machine did to the medians: ours' coefficient of variation over the
# repetitions, torch's interquartile range over single calls, both relative to the median.
noisy = [f"ours {name.removesuffix('/real_time')} (cv {cv:.0%})"
         for name, cv in ours_cv.items() if cv > 0.10]
noisy += [f"torch {'/'.join(key)} (iqr {spread:.0%})"
          for key, spread in torch_iqr.items() if spread > 0.10]
if noisy:
    print(f"\nNoisy (spread > 10% of the median): {', '.join(noisy)}.")
PY
