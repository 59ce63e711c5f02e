#!/usr/bin/python3
"""Times PyTorch's CPU Conv2d on the cases of bench/conv_bench.cc (same case names).

Run with Debian's PyTorch 1.13 (python3-torch), i.e. /usr/bin/python3, not a pyenv python:

    /usr/bin/python3 bench/torch_conv.py --threads 1

Each case is a fresh nn.Conv2d(C_in, C_out, k, stride, padding=k // 2, bias=...) in training
mode, float32, NCHW (PyTorch 1.13 runs these on oneDNN's convolution primitives through ideep):
  conv_fwd      y = conv(x) with grad mode on, x requiring grad (as conv_bench's forward keeps
                what its backward needs)
  conv_fwd_bwd  y = conv(x); y.backward(dy): dx, dweight (+ dbias); the grads are reset to None
                first, so backward allocates them
x and dy are allocated once; after a warm-up, calls run in a loop of at least --min-reps calls and
--min-seconds, and the loop's wall time and the thread's CPU time per call are reported (with the
interquartile range of the single calls' wall times). Times include the Python/dispatcher
overhead of a module call (a few microseconds), which matters only for the smallest cases.

Output: a header line, then one tab-separated line per case and pass:
    torch_conv <pass> <case> <wall_us> <cpu_us> <iqr_us> <reps> <threads>
with case as in conv_bench, e.g. 4x16x32x32/16k3s1/nobias.
"""

import argparse
import re
import statistics
import sys
import time

import torch


def resnet20_cases(n, channels, size):
    """resnet20's distinct convs (conv1, layer1..3, the stride-2 3x3 and 1x1 projections), then
    the 3x3 stride-1 shapes with bias; the list and order of conv_bench.cc."""
    s1 = size
    s2 = (size + 1) // 2
    s3 = (s2 + 1) // 2
    cases = [
        (n, channels, s1, 16, 3, 1, False),
        (n, 16, s1, 16, 3, 1, False),
        (n, 16, s1, 32, 3, 2, False),
        (n, 16, s1, 32, 1, 2, False),
        (n, 32, s2, 32, 3, 1, False),
        (n, 32, s2, 64, 3, 2, False),
        (n, 32, s2, 64, 1, 2, False),
        (n, 64, s3, 64, 3, 1, False),
    ]
    for c, h in ((16, s1), (32, s2), (64, s3)):
        cases.append((n, c, h, c, 3, 1, True))
    return cases


def all_cases():
    cases = []
    for n in (4, 32):
        for channels, size in ((3, 32), (1, 28)):
            cases += resnet20_cases(n, channels, size)
    return cases


def case_name(case):
    n, c_in, h, c_out, k, s, bias = case
    return f"{n}x{c_in}x{h}x{h}/{c_out}k{k}s{s}/{'bias' if bias else 'nobias'}"


def time_calls(call, warmup, min_reps, min_seconds):
    """Mean wall time and mean CPU time of the calling thread per call over the timed loop, in
    microseconds, as Google Benchmark measures conv_bench (total over the iterations / count),
    plus the interquartile range of the single calls' wall times and the count. With one thread
    all of the work runs on the calling thread, so its CPU time is what a loaded machine disturbs
    least; the wall time includes the time the process waited for a core."""
    for _ in range(warmup):
        call()
    wall = []
    cpu0 = time.thread_time_ns()
    start = time.perf_counter_ns()
    while len(wall) < min_reps or time.perf_counter_ns() - start < min_seconds * 1e9:
        t0 = time.perf_counter_ns()
        call()
        wall.append(time.perf_counter_ns() - t0)
    total_wall = time.perf_counter_ns() - start
    total_cpu = time.thread_time_ns() - cpu0
    quartiles = statistics.quantiles(wall, n=4)
    return (total_wall / len(wall) / 1e3, total_cpu / len(wall) / 1e3,
            (quartiles[2] - quartiles[0]) / 1e3, len(wall))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--min-reps", type=int, default=20)
    parser.add_argument("--min-seconds", type=float, default=0.2, help="per case and pass")
    parser.add_argument("--filter", default="", help="regular expression on '<pass>/<case>'")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    print(f"# torch {torch.__version__} threads={torch.get_num_threads()} "
          f"python={sys.executable}", file=sys.stderr)
    print("torch_conv\tpass\tcase\twall_us\tcpu_us\tiqr_us\treps\tthreads")
    pattern = re.compile(args.filter)
    generator = torch.Generator().manual_seed(2024)
    for case in all_cases():
        n, c_in, h, c_out, k, s, bias = case
        conv = torch.nn.Conv2d(c_in, c_out, k, stride=s, padding=k // 2, bias=bias).train()
        x = torch.randn((n, c_in, h, h), generator=generator).requires_grad_(True)
        ho = (h + 2 * (k // 2) - k) // s + 1
        dy = torch.randn((n, c_out, ho, ho), generator=generator)

        def forward():
            conv(x)

        def forward_backward():
            conv.weight.grad = None
            if conv.bias is not None:
                conv.bias.grad = None
            x.grad = None
            conv(x).backward(dy)

        for pass_name, call in (("conv_fwd", forward), ("conv_fwd_bwd", forward_backward)):
            if not pattern.search(f"{pass_name}/{case_name(case)}"):
                continue
            wall_us, cpu_us, iqr_us, reps = time_calls(call, args.warmup, args.min_reps,
                                                       args.min_seconds)
            print(f"torch_conv\t{pass_name}\t{case_name(case)}\t{wall_us:.2f}\t{cpu_us:.2f}\t"
                  f"{iqr_us:.2f}\t{reps}\t{torch.get_num_threads()}", flush=True)


if __name__ == "__main__":
    main()
