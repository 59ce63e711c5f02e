#!/usr/bin/env bash
# Our CPU Conv2d (bench/conv_bench) against PyTorch 1.13 (bench/torch_conv.py) on resnet20's
# convolutions, one thread each, as one Markdown table on stdout; progress goes to stderr.
#
#   bench/conv_compare.sh [rounds=5] [filter=regex on '<pass>/<case>', default all]
#
# Environment:
#   BUILD_DIR     CMake build directory (default: build); configured here if it has no
#                 CMakeCache.txt yet.
#   PYTHON        interpreter with python3-torch (default: /usr/bin/python3, Debian's).
#   BASELINE_BIN  optional second conv_bench binary (say, built from an older commit), run in
#                 the same rounds; adds its columns to the table (before/after comparisons).
#   GLIBC_TUNABLES  passed to every program; default: glibc malloc's mmap and trim thresholds at
#                 256 MiB. With glibc's defaults PyTorch's CPU allocator returns the pages of
#                 every freed activation-sized tensor to the kernel and faults them in again on the
#                 next call: on the loaded dev VM some shapes (4x16x32x32, 32x16x28x28) then took
#                 10-30x their time, and fwd alone more than fwd+bwd. conv_bench's tensors come from
#                 our block cache and do not churn. Set GLIBC_TUNABLES= (empty) for glibc's
#                 defaults, i.e. what a PyTorch run gets out of the box.
#
# The rounds interleave the programs (ours, baseline, torch, ours, ...) so that a machine whose
# load changes over the run disturbs all of them alike. Each round times every case once per
# program, the same way for both (a loop of >= 0.05 s, and >= 10 calls for torch; time per call =
# total / calls); the table gives the median over rounds. Two clocks: the thread's CPU time (with
# one thread all the work runs on the calling thread; what a loaded machine disturbs least, and the
# ratio this script leads with) and wall time, which on a loaded machine includes the time the
# process waited for a core. speedup = torch / ours, > 1 means we are faster.
# The "resnet20 step" rows weight each conv by how often resnet20 runs it (conv1 1, layer1
# 3x3 6, layer2/3 stride-2 3x3 1 each, projections 1 each, layer2/3 3x3 stride 1 5 each).
set -euo pipefail

rounds="${1:-5}"
filter="${2:-}"
if ! [[ "${rounds}" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 [rounds=5] [filter]  (rounds must be a positive integer, got '${rounds}')" >&2
  exit 2
fi

# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
baseline="${BASELINE_BIN:-}"
export GLIBC_TUNABLES="${GLIBC_TUNABLES-glibc.malloc.mmap_threshold=268435456:glibc.malloc.trim_threshold=268435456}"

build_target conv_bench
if [[ -n "${baseline}" && ! -x "${baseline}" ]]; then
  echo "error: BASELINE_BIN '${baseline}' is not an executable file" >&2
  exit 1
fi
require_torch
make_work_dir
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"

run_bench() {  # binary, output json
  OMP_NUM_THREADS=1 "$1" --benchmark_min_time=0.05 --benchmark_filter="${filter:-.}" \
    --benchmark_out="$2" --benchmark_out_format=json >/dev/null
}

for round in $(seq 1 "${rounds}"); do
  echo "== round ${round}/${rounds}: conv_bench" >&2
  run_bench "${build_dir}/bench/conv_bench" "${work_dir}/ours.${round}.json"
  if [[ -n "${baseline}" ]]; then
    echo "== round ${round}/${rounds}: baseline ${baseline}" >&2
    run_bench "${baseline}" "${work_dir}/baseline.${round}.json"
  fi
  echo "== round ${round}/${rounds}: torch_conv.py" >&2
  OMP_NUM_THREADS=1 "${python}" bench/torch_conv.py --threads 1 --warmup 3 --min-reps 10 \
    --min-seconds 0.05 --filter "${filter}" >"${work_dir}/torch.${round}.tsv" 2>/dev/null
done
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

"${python}" - "${work_dir}" "${rounds}" "${load_before}" "${load_after}" "${baseline}" \
  "${GLIBC_TUNABLES}" <<'PY'
import csv
import json
import statistics
import sys

work_dir, rounds, load_before, load_after, baseline, tunables = sys.argv[1:7]
rounds = int(rounds)
to_us = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}


def read_bench(prefix):
    """{(pass, case): ([cpu us per round], [wall us per round])}"""
    times = {}
    for r in range(1, rounds + 1):
        with open(f"{work_dir}/{prefix}.{r}.json") as f:
            for run in json.load(f)["benchmarks"]:
                name = run["name"].removesuffix("/real_time")
                pass_name, case = name.split("/", 1)
                unit = to_us[run["time_unit"]]
                cpu, wall = times.setdefault((pass_name, case), ([], []))
                cpu.append(run["cpu_time"] * unit)
                wall.append(run["real_time"] * unit)
    return times


def read_torch():
    times = {}
    for r in range(1, rounds + 1):
        with open(f"{work_dir}/torch.{r}.tsv") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                cpu, wall = times.setdefault((row["pass"], row["case"]), ([], []))
                cpu.append(float(row["cpu_us"]))
                wall.append(float(row["wall_us"]))
    return times


def medians(times):
    return {k: (statistics.median(c), statistics.median(w)) for k, (c, w) in times.items()}


ours = medians(read_bench("ours"))
torch = medians(read_torch())
base = medians(read_bench("baseline")) if baseline else {}

# How often resnet20 runs each case (by its conv part of the name, for either input size).
def resnet20_count(case):
    shape, conv, bias = case.split("/")
    _, c_in, h, _ = shape.split("x")
    if bias == "bias":
        return 0
    if c_in in ("1", "3"):
        return 1
    k, s = conv.split("k")[1].split("s")
    if s == "2":
        return 1
    return {"16": 6, "32": 5, "64": 5}[c_in]


print(f"Threads: 1. Rounds: {rounds} (interleaved; medians over rounds). "
      f"Load average before/after: {load_before} / {load_after}. "
      f"GLIBC_TUNABLES={tunables or '(glibc defaults)'}.")
print()
head = "| pass | case | ours CPU µs | torch CPU µs | speedup CPU | ours wall µs | torch wall µs " \
       "| speedup wall |"
rule = "|---|---|---:|---:|---:|---:|---:|---:|"
if base:
    head += " baseline CPU µs | baseline speedup CPU |"
    rule += "---:|---:|"
print(head)
print(rule)
totals = {}
for key, (cpu, wall) in ours.items():
    pass_name, case = key
    t = torch.get(key)
    b = base.get(key)
    row = f"| {pass_name} | {case} | {cpu:.0f} | "
    row += f"{t[0]:.0f} | {t[0] / cpu:.2f} | {wall:.0f} | {t[1]:.0f} | {t[1] / wall:.2f} |" \
        if t else "n/a | n/a | {wall:.0f} | n/a | n/a |"
    if base:
        row += f" {b[0]:.0f} | {t[0] / b[0]:.2f} |" if (b and t) else " n/a | n/a |"
    print(row)
    count = resnet20_count(case)
    if t and count:
        batch, _, h, _ = case.split("/")[0].split("x")
        group = (pass_name, int(batch), "cifar10" if h in ("32", "16", "8") else "fashion_mnist")
        acc = totals.setdefault(group, [0.0, 0.0, 0.0, 0.0, 0.0])
        acc[0] += count * cpu
        acc[1] += count * t[0]
        acc[2] += count * wall
        acc[3] += count * t[1]
        acc[4] += count * (b[0] if b else 0.0)
if totals:
    print()
    print("resnet20 step, all convs weighted by their count in the network:")
    print()
    print("| pass | batch | input | ours CPU µs | torch CPU µs | speedup CPU | ours wall µs "
          "| torch wall µs | speedup wall |" + (" baseline speedup CPU |" if base else ""))
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if base else ""))
    for (pass_name, batch, data), acc in sorted(totals.items()):
        row = (f"| {pass_name} | {batch} | {data} | {acc[0]:.0f} | {acc[1]:.0f} | "
               f"{acc[1] / acc[0]:.2f} | {acc[2]:.0f} | {acc[3]:.0f} | {acc[3] / acc[2]:.2f} |")
        if base:
            row += f" {acc[1] / acc[4]:.2f} |" if acc[4] else " n/a |"
        print(row)
PY
