#!/usr/bin/python3
"""PyTorch 1.13 reference cases for syncbn's layers (src/nn/layers.h; STYLE.md rules 10, 12).

Run with Debian's interpreter (`/usr/bin/python3`, package python3-torch). CTest runs it at test
time into the build directory as a fixture; torch_layers_test reads what it writes. Nothing it
produces is committed.

Every case draws float32 inputs (x, weight, bias, upstream gradient dy, labels), converts them to
float64 and runs the torch.nn module or functional and autograd in float64, so the references are
exact to ~1e-15 for exactly the float32 values the C++ side gets.

The file is a reference-case file of tests/common/torch_ref.py (safetensors: attributes in the
metadata, arrays as tensors, both under the case id).

Ops (attribute op), their other attributes (decimal integers) and arrays (f32 = inputs,
f64 = references):

    conv2d         in, out, kernel, stride, padding, bias (1|0)
                   x, weight, [bias], dy (f32); y, dx, dweight, [dbias] (f64)
    linear         in, out, bias
                   x, weight, [bias], dy; y, dx, dweight, [dbias]
    max_pool2d     kernel, stride, padding              x, dy; y, dx
    adaptive_avg_pool2d  out_h, out_w                   x, dy; y, dx
    relu           -                                    x, dy; y, dx
    cross_entropy  correct (argmax hits)                logits (f32), labels (i64);
                                                        loss (f64, shape [1], mean reduction),
                                                        dlogits (f64, gradient of the mean)
"""

import argparse
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
from torch_ref import CaseWriter  # noqa: E402


class Writer(CaseWriter):
    def add(self, case_id, op, attrs, arrays):
        super().add(case_id, dict(attrs, op=op), arrays)


def f32(gen, shape, scale=1.0):
    return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).float()


def uniform_f32(gen, shape, bound):
    return ((torch.rand(*shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound).float()


def leaf(t):
    """A float64 leaf requiring grad, holding exactly the float32 values of t."""
    return t.double().requires_grad_(True)


def np64(t):
    return t.detach().double().numpy()


def np32(t):
    return t.detach().float().numpy()


def conv_cases(w, gen):
    # (N, C_in, H, W, C_out, kernel, stride, padding, bias)
    shapes = [
        (8, 32, 28, 28, 32, 3, 1, 1, True),  # the benchmark shape
        (4, 3, 28, 28, 8, 3, 1, 1, True),
        (2, 8, 14, 13, 16, 3, 2, 1, True),  # stride 2, odd width
        (3, 5, 9, 11, 7, 5, 1, 2, False),  # 5x5, no bias
        (2, 16, 7, 7, 32, 1, 1, 0, True),  # 1x1
        (5, 4, 10, 10, 6, 3, 2, 0, True),  # stride 2, no padding
        (1, 1, 6, 6, 1, 2, 2, 0, True),  # N = 1, even kernel
        (3, 4, 56, 56, 8, 3, 1, 1, True),  # im2col chunks of 2 samples and a partial one
        (2, 64, 7, 7, 64, 3, 1, 1, True),  # small maps, many channels: one chunk for the batch
    ]
    for i, (n, cin, h, wd, cout, k, s, p, bias) in enumerate(shapes):
        bound = 1.0 / (cin * k * k) ** 0.5
        x = f32(gen, (n, cin, h, wd))
        weight = uniform_f32(gen, (cout, cin, k, k), bound)
        b = uniform_f32(gen, (cout,), bound) if bias else None
        xd, wdd = leaf(x), leaf(weight)
        bd = leaf(b) if bias else None
        y = F.conv2d(xd, wdd, bd, stride=s, padding=p)
        dy = f32(gen, tuple(y.shape))
        y.backward(dy.double())
        arrays = {"x": np32(x), "weight": np32(weight)}
        if bias:
            arrays["bias"] = np32(b)
        arrays.update({"dy": np32(dy), "y": np64(y), "dx": np64(xd.grad),
                       "dweight": np64(wdd.grad)})
        if bias:
            arrays["dbias"] = np64(bd.grad)
        w.add(f"conv2d_{i}", "conv2d",
              {"in": cin, "out": cout, "kernel": k, "stride": s, "padding": p,
               "bias": int(bias)}, arrays)


def linear_cases(w, gen):
    for i, (n, fin, fout, bias) in enumerate([(8, 64, 10, True), (3, 7, 5, False),
                                              (1, 128, 33, True), (32, 512, 100, True)]):
        bound = 1.0 / fin ** 0.5
        x = f32(gen, (n, fin))
        weight = uniform_f32(gen, (fout, fin), bound)
        b = uniform_f32(gen, (fout,), bound) if bias else None
        xd, wdd = leaf(x), leaf(weight)
        bd = leaf(b) if bias else None
        y = F.linear(xd, wdd, bd)
        dy = f32(gen, tuple(y.shape))
        y.backward(dy.double())
        arrays = {"x": np32(x), "weight": np32(weight)}
        if bias:
            arrays["bias"] = np32(b)
        arrays.update({"dy": np32(dy), "y": np64(y), "dx": np64(xd.grad),
                       "dweight": np64(wdd.grad)})
        if bias:
            arrays["dbias"] = np64(bd.grad)
        w.add(f"linear_{i}", "linear", {"in": fin, "out": fout, "bias": int(bias)}, arrays)


def unary(w, gen, case_id, op, attrs, shape, fn):
    x = f32(gen, shape)
    xd = leaf(x)
    y = fn(xd)
    dy = f32(gen, tuple(y.shape))
    y.backward(dy.double())
    w.add(case_id, op, attrs, {"x": np32(x), "dy": np32(dy), "y": np64(y), "dx": np64(xd.grad)})


def pool_cases(w, gen):
    for i, (k, s, p, shape) in enumerate([(2, 2, 0, (4, 3, 28, 28)), (3, 2, 1, (2, 5, 13, 11)),
                                          (3, 1, 0, (2, 2, 7, 6)), (2, 1, 0, (1, 3, 5, 5)),
                                          (2, 2, 0, (2, 4, 7, 7))]):
        unary(w, gen, f"max_pool2d_{i}", "max_pool2d", {"kernel": k, "stride": s, "padding": p},
              shape, lambda x, k=k, s=s, p=p: F.max_pool2d(x, k, s, p))
    for i, (oh, ow, shape) in enumerate([(1, 1, (4, 8, 7, 7)), (1, 1, (2, 3, 5, 9)),
                                         (2, 3, (2, 3, 5, 7)), (3, 3, (1, 2, 8, 8))]):
        unary(w, gen, f"adaptive_avg_pool2d_{i}", "adaptive_avg_pool2d",
              {"out_h": oh, "out_w": ow}, shape,
              lambda x, oh=oh, ow=ow: F.adaptive_avg_pool2d(x, (oh, ow)))
    for i, shape in enumerate([(4, 3, 8, 8), (5, 17)]):
        unary(w, gen, f"relu_{i}", "relu", {}, shape, F.relu)


def cross_entropy_cases(w, gen):
    for i, (n, k, scale) in enumerate([(16, 10, 1.0), (5, 3, 3.0), (1, 7, 1.0), (64, 10, 10.0)]):
        logits = f32(gen, (n, k), scale)
        labels = torch.randint(0, k, (n,), generator=gen)
        ld = leaf(logits)
        loss = F.cross_entropy(ld, labels, reduction="mean")
        loss.backward()
        correct = int((logits.argmax(dim=1) == labels).sum())
        w.add(f"cross_entropy_{i}", "cross_entropy", {"correct": correct},
              {"logits": np32(logits), "labels": labels.int().numpy(),
               "loss": np.array([loss.item()], dtype=np.float64), "dlogits": np64(ld.grad)})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="file to write")
    parser.add_argument("--seed", type=int, default=1913)
    args = parser.parse_args()
    if not torch.__version__.startswith("1.13"):
        print(f"warning: expected PyTorch 1.13, running {torch.__version__}", file=sys.stderr)
    gen = torch.Generator().manual_seed(args.seed)
    w = Writer("tests/nn/torch_layers.py")
    conv_cases(w, gen)
    linear_cases(w, gen)
    pool_cases(w, gen)
    cross_entropy_cases(w, gen)
    w.write(args.out)
    print(f"wrote {len(w.ids)} cases to {args.out}")


if __name__ == "__main__":
    main()
