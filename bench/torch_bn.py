#!/usr/bin/python3
"""Times PyTorch's CPU BatchNorm on the shapes and passes of bench/bn_bench.cc.

Run with Debian's PyTorch 1.13 (python3-torch), i.e. /usr/bin/python3, not a pyenv python:

    /usr/bin/python3 bench/torch_bn.py --threads 2

Each case is a fresh nn.BatchNorm{1,2}d(C) in training mode (affine, running stats, momentum
0.1), float32, channels_last where the layout says nhwc -- what bn_bench's adapters do:
  fwd      y = bn(x), grad mode on as in a training step (x does not require grad)
  fwd_bwd  y = bn(x); y.backward(dy) with x requiring grad: dx, dweight and dbias; the grads are
           reset to None first so backward allocates them rather than accumulating, as our
           adapter allocates dx/dweight/dbias.
x and dy are allocated once; each call is timed on its own with perf_counter_ns after a warm-up
and the median (and interquartile range) is reported. Times include the Python/dispatcher overhead of a module call
(a few microseconds), which matters only for the smallest shapes.

Output: one line per case, tab-separated, after a header line:
    torch_bn <shape> <layout> <pass> <median_us> <iqr_us> <reps> <threads>
with shape like 32x64x28x28, layout nchw|nhwc, pass fwd|fwd_bwd.
"""

import argparse
import statistics
import sys
import time

import torch

CASES = [
    ((32, 64, 28, 28), "nchw"),
    ((32, 64, 28, 28), "nhwc"),
    ((8, 128, 14, 14), "nchw"),
    ((4, 256, 7, 7), "nchw"),
    ((256, 512), "nchw"),
]


def make_case(shape, layout):
    generator = torch.Generator().manual_seed(2024)
    x = torch.randn(shape, generator=generator, dtype=torch.float32)
    dy = torch.randn(shape, generator=generator, dtype=torch.float32)
    if layout == "nhwc":
        x = x.contiguous(memory_format=torch.channels_last)
        dy = dy.contiguous(memory_format=torch.channels_last)
    module = torch.nn.BatchNorm2d if len(shape) == 4 else torch.nn.BatchNorm1d
    bn = module(shape[1]).train()
    return bn, x, dy


def time_calls(call, warmup, min_reps, min_seconds):
    """Median and interquartile range of call()'s wall time in microseconds, and the count."""
    for _ in range(warmup):
        call()
    samples = []
    start = time.perf_counter()
    while len(samples) < min_reps or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter_ns()
        call()
        samples.append(time.perf_counter_ns() - t0)
    quartiles = statistics.quantiles(samples, n=4)
    return statistics.median(samples) / 1e3, (quartiles[2] - quartiles[0]) / 1e3, len(samples)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, required=True, help="torch.set_num_threads")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--min-reps", type=int, default=100)
    parser.add_argument("--min-seconds", type=float, default=1.0, help="per case and pass")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    print(f"# torch {torch.__version__} threads={torch.get_num_threads()} "
          f"python={sys.executable}", file=sys.stderr)
    print("torch_bn\tshape\tlayout\tpass\tmedian_us\tiqr_us\treps\tthreads")

    for shape, layout in CASES:
        bn, x, dy = make_case(shape, layout)

        def forward():
            bn(x)

        x_grad = x.detach().requires_grad_(True)

        def forward_backward():
            bn.weight.grad = None
            bn.bias.grad = None
            x_grad.grad = None
            bn(x_grad).backward(dy)

        # One checked call: the layout must survive (channels_last in, channels_last out).
        y = bn(x_grad)
        y.backward(dy)
        if layout == "nhwc":
            for t in (y, x_grad.grad):
                assert t.is_contiguous(memory_format=torch.channels_last), "lost channels_last"

        name = "x".join(str(d) for d in shape)
        for pass_name, call in (("fwd", forward), ("fwd_bwd", forward_backward)):
            median_us, iqr_us, reps = time_calls(call, args.warmup, args.min_reps,
                                                 args.min_seconds)
            print(f"torch_bn\t{name}\t{layout}\t{pass_name}\t{median_us:.2f}\t{iqr_us:.2f}\t"
                  f"{reps}\t{torch.get_num_threads()}", flush=True)


if __name__ == "__main__":
    main()
