#!/usr/bin/python3
"""PyTorch 1.13 reference cases for syncbn's CPU normalization kernels (STYLE.md rules 10, 12).

Run with Debian's interpreter (`/usr/bin/python3`, package python3-torch); CTest runs it at test
time into the build directory, and torch_ref_test compares src/norm against what it writes.
Nothing it produces is committed.

Every case draws float32 inputs (x, dy, weight, bias, running stats), converts them to float64
and runs the torch.nn module (BatchNorm1d/2d/3d, GroupNorm, LayerNorm, InstanceNorm1d/2d/3d) and
autograd in float64, so the reference is exact to ~1e-15 for exactly the float32 values the C++
side gets. A case is a sequence of steps on one module (so running statistics and
num_batches_tracked carry over, as in training): each step is a forward in train or eval mode
followed by a backward with a random upstream gradient dy. Every array in the file is in LOGICAL
order (N, C, *spatial); for channels-last cases the C++ side converts with
Tensor::to(MemoryFormat::kChannelsLast), and this script checks PyTorch's own channels_last path
against the contiguous one (see Generator.run_steps).

The file is a reference-case file of tests/common/torch_ref.py (safetensors: attributes in the
metadata, arrays as tensors, both under the case id).

Attributes (all strings; numbers in Python repr, which round-trips float64):

    op            batch_norm | group_norm | layer_norm | instance_norm
    shape         x's logical shape, comma-separated, e.g. "2,3,7,5"
    format        contiguous | channels_last
    eps           float
    momentum      float, or "none" (cumulative moving average)       [batch_norm, instance_norm]
    affine        1 | 0  (weight and bias present)
    track         1 | 0  (running_mean, running_var, num_batches_tracked present)
    nbt_init      initial num_batches_tracked                         [track = 1]
    groups        number of groups                                    [group_norm]
    normalized_shape  comma-separated trailing dims                   [layer_norm]
    steps         number of steps K (0 for an error case)
    mode.k        train | eval, for step k in [0, K)
    scale.NAME.k  for every NAME compared but num_batches_tracked: the size of the terms
                  the array is computed from (see term_scales below)
    nbt.k         num_batches_tracked after step k                    [track = 1]
    error_phrase  a phrase PyTorch's error message contains; the C++ adapter must throw
                  syncbn::Error whose message contains it too, for the forward of x with
                  mode.0, momentum and track (batch_norm, instance_norm), groups or
                  normalized_shape                                      [error cases, steps = 0]
    torch_error   PyTorch's full message, for the reader               [error cases]
    torch_channels_last_mismatch  arrays where PyTorch's channels_last path is wrong, for the
                  reader (the reference is the contiguous result)       [channels_last]

Arrays (float32 = inputs as the C++ side must use them; float64 = references):

    weight, bias                 f32  (C), or normalized_shape for layer_norm   [affine = 1]
    running_mean, running_var    f32  (C), initial values                       [track = 1]
    x.k, dy.k                    f32  like x
    y.k, dx.k                    f64  like x
    dweight.k, dbias.k           f64  like weight                               [affine = 1]
    running_mean.k, running_var.k  f64 (C) after step k's forward                [track = 1]
    x                            f32  the input of an error case
"""

import argparse
import copy
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
from torch_ref import CaseWriter, attr_string  # noqa: E402

F32, F64 = np.float32, np.float64

# (mean, stddev) of the float32 inputs, one drawn per step. The "offset" cases add data at
# |mean|/std = 1e3 and 1e4 (DESIGN.md §2: variance must survive them, which float32
# E[x²] − E[x]² does not); there y and dx can only be as good as float32 x − mean allows, and the
# term scales (see term_scales) say so, but the running variance stays exact to float32.
DISTRIBUTIONS = [(0.0, 1.0), (3.0, 2.0), (-5.0, 0.5), (10.0, 3.0), (0.0, 0.05)]


class Case:
    def __init__(self, case_id):
        self.id = case_id
        self.attrs = {}
        self.arrays = {}

    def attr(self, key, value):
        self.attrs[key] = attr_string(value)

    def array(self, name, values, dtype):
        if isinstance(values, torch.Tensor):
            # Logical order whatever the layout; a copy, since module buffers change later.
            values = values.detach().contiguous().numpy()
        self.arrays[name] = np.array(values, dtype=dtype, order="C", copy=True)


def term_scales(case, module, x, dy, training):
    """Largest magnitude among the terms each compared array is computed from, for one step.

    Float32 rounding error is relative to the terms a value is computed from, not to the value:
    where they cancel, the value can be far smaller (a one-element group has dx = 0 exactly;
    y = (x − mean)·invstd·γ + β loses the offset's digits; a running mean can average +10 and
    −5 to ~0). The C++ test floors its relative error with these (see torch_ref_test.cc):

        y             x·a, mean·a, β  with a = γ·invstd (γ = 1 without affine)
        dx            a·dy and, with batch statistics, a·(|x| + |mean|)·invstd·mean_set(dy·x̂)
        running_mean  running_mean before the step, the batch mean(s)
        running_var   running_var before the step, the unbiased batch variance(s)
        dweight       the 2-norm over each weight's terms of dy·(|x| + |mean|)·invstd, the
                      size of x̂'s rounding in Σ dy·x̂ (2-norm: independent roundings)
        dbias         the 2-norm of dy over each weight's terms

    mean_set averages over each normalization set (BN: N and spatial, per channel; IN: spatial;
    GN: group; LN: trailing dims). Must be called before the step's forward.
    """
    op, shape = case.attrs["op"], x.shape
    eps = float(case.attrs["eps"])
    channel_view = [1, shape[1]] + [1] * (len(shape) - 2)
    if op == "group_norm":
        groups = module.num_groups

        def mean_set(t):
            m = t.reshape(shape[0], groups, -1).mean(dim=2, keepdim=True)
            return m.expand(shape[0], groups, t.numel() // (shape[0] * groups)).reshape(shape)
    else:
        if op == "layer_norm":
            dims = tuple(range(len(shape) - len(module.normalized_shape), len(shape)))
        elif op == "batch_norm":
            dims = tuple(d for d in range(len(shape)) if d != 1)
        else:
            dims = tuple(range(2, len(shape)))

        def mean_set(t):
            return t.mean(dim=dims, keepdim=True).expand(shape)

    mean = mean_set(x)
    var = mean_set((x - mean) ** 2)
    scales = {}
    batch_stats = True
    if op in ("batch_norm", "instance_norm") and module.track_running_stats:
        scales["running_mean"] = float(module.running_mean.abs().max())
        scales["running_var"] = float(module.running_var.abs().max())
        if training:
            n = x.numel() // shape[1] if op == "batch_norm" else x[0, 0].numel()
            scales["running_mean"] = max(scales["running_mean"], float(mean.abs().max()))
            scales["running_var"] = max(scales["running_var"], float(var.max()) * n / (n - 1))
        else:
            batch_stats = False
            mean = module.running_mean.view(channel_view).expand(shape)
            var = module.running_var.view(channel_view).expand(shape)
    invstd = 1.0 / torch.sqrt(var + eps)
    a = invstd
    beta = 0.0
    if case.attrs["affine"] == "1":
        weight = module.weight.detach()
        a = a * (weight if op == "layer_norm" else weight.view(channel_view))
        beta = float(module.bias.detach().abs().max())
    scales["y"] = max(float((x * a).abs().max()), float((mean * a).abs().max()), beta)
    scales["dx"] = float((a * dy).abs().max())
    if batch_stats:
        xhat = (x - mean) * invstd
        third = a * (x.abs() + mean.abs()) * invstd * mean_set(dy * xhat).abs()
        scales["dx"] = max(scales["dx"], float(third.max()))
    if case.attrs["affine"] == "1":
        # Independent roundings add up like a random walk: the 2-norm of the terms per weight.
        if op == "layer_norm":
            weight_dims = tuple(range(len(shape) - len(module.normalized_shape)))
        else:
            weight_dims = tuple(d for d in range(len(shape)) if d != 1)

        def norm2(terms):
            return float((terms**2).sum(dim=weight_dims).max().sqrt())

        scales["dweight"] = norm2(dy * (x.abs() + mean.abs()) * invstd)
        scales["dbias"] = norm2(dy)
    return scales


def forward_backward(module, x, dy, memory_format, affine, track):
    """One forward and backward of module (its buffers update) with x and dy laid out in
    memory_format; returns y, dx, [dweight, dbias], [running_mean, running_var]."""
    x = x.detach().clone(memory_format=memory_format).requires_grad_(True)
    dy = dy.clone(memory_format=memory_format)
    module.zero_grad(set_to_none=True)
    y = module(x)
    y.backward(dy)
    results = [y.detach(), x.grad]
    if affine:
        results += [module.weight.grad, module.bias.grad]
    if track:
        results += [module.running_mean.clone(), module.running_var.clone()]
    return results


class Generator:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.cases = []

    def new_case(self, op, tag):
        case = Case("%s_%03d_%s" % (op, len(self.cases), tag))
        self.cases.append(case)
        return case

    def f32(self, shape, mean=0.0, std=1.0):
        return (mean + std * self.rng.standard_normal(shape)).astype(np.float32)

    def data(self, shape, dist=None):
        mean, std = dist or DISTRIBUTIONS[self.rng.integers(len(DISTRIBUTIONS))]
        return self.f32(shape, mean, std)

    def affine_params(self, case, module, shape):
        weight = self.f32(shape, 1.0, 0.5)
        bias = self.f32(shape, 0.0, 0.5)
        case.array("weight", weight, F32)
        case.array("bias", bias, F32)
        with torch.no_grad():
            module.weight.copy_(torch.from_numpy(weight))
            module.bias.copy_(torch.from_numpy(bias))

    def running_stats(self, case, module, channels, nbt_init):
        running_mean = self.f32(channels, 0.0, 0.5)
        running_var = self.rng.uniform(0.5, 2.0, channels).astype(np.float32)
        case.array("running_mean", running_mean, F32)
        case.array("running_var", running_var, F32)
        case.attr("nbt_init", nbt_init)
        with torch.no_grad():
            module.running_mean.copy_(torch.from_numpy(running_mean))
            module.running_var.copy_(torch.from_numpy(running_var))
            module.num_batches_tracked.fill_(nbt_init)

    def run_steps(self, case, module, shape, channels_last, modes, affine, track, dist=None):
        """Forward + backward per step, in float64, recording inputs and references.

        The reference comes from contiguous memory. For channels-last cases PyTorch's
        channels_last path runs too, on a copy of the module, and must agree, or the script
        fails. One known exception: PyTorch 1.13 gets InstanceNorm's backward wrong for
        channels_last with N = 1 (dx, dweight, dbias; even dx = dy·invstd in eval); those cases
        keep the contiguous result and say so on stderr and in torch_channels_last_mismatch.
        """
        case.attr("steps", len(modes))
        layout = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
        names = ["y", "dx"] + (["dweight", "dbias"] if affine else [])
        mismatches = []
        for k, mode in enumerate(modes):
            case.attr("mode.%d" % k, mode)
            module.train(mode == "train")
            x32, dy32 = self.data(shape, dist), self.f32(shape)
            case.array("x.%d" % k, x32, F32)
            case.array("dy.%d" % k, dy32, F32)
            x = torch.from_numpy(x32).double()
            dy = torch.from_numpy(dy32).double()
            twin = copy.deepcopy(module) if channels_last else None
            scales = term_scales(case, module, x, dy, mode == "train")
            for name, scale in scales.items():
                case.attr("scale.%s.%d" % (name, k), scale)
            results = forward_backward(module, x, dy, torch.contiguous_format, affine, track)
            for name, value in zip(names + ["running_mean", "running_var"], results):
                case.array("%s.%d" % (name, k), value, F64)
            if track:
                case.attr("nbt.%d" % k, int(module.num_batches_tracked.item()))
            if twin is not None:
                twin_results = forward_backward(twin, x, dy, layout, affine, track)
                for name, ref, got in zip(names + ["running_mean", "running_var"], results,
                                          twin_results):
                    # float64 rounding, relative to the terms (PyTorch's channels_last GroupNorm
                    # loses ~1e-8 to data offset by 1e4).
                    scale = max(float(ref.abs().max()), scales.get(name, 0.0))
                    if (got - ref).abs().max() > 1e-9 * (1 + scale):
                        mismatches.append("%s.%d" % (name, k))
        if mismatches:
            known_bug = case.attrs["op"] == "instance_norm" and shape[0] == 1
            if not known_bug:
                sys.exit("make_reference: %s: PyTorch's channels_last and contiguous results "
                         "differ on %s; no trustworthy reference" %
                         (case.id, ", ".join(mismatches)))
            case.attr("torch_channels_last_mismatch", mismatches)
            print("make_reference: %s: PyTorch's channels_last path disagrees with contiguous "
                  "on %s (known PyTorch 1.13 bug); using the contiguous result" %
                  (case.id, ", ".join(mismatches)), file=sys.stderr)

    def common_attrs(self, case, op, shape, channels_last, eps, affine):
        case.attr("op", op)
        case.attr("shape", list(shape))
        case.attr("format", "channels_last" if channels_last else "contiguous")
        case.attr("eps", float(eps))
        case.attr("affine", affine)

    # BatchNorm / InstanceNorm share the _NormBase module shape: weight, bias, running stats.
    def stats_norm_case(self, op, classes, shape, channels_last, cfg):
        tag = "%s_%s_%s" % ("x".join(map(str, shape)), "cl" if channels_last else "nc",
                            cfg["name"])
        case = self.new_case(op, tag)
        eps, momentum = cfg["eps"], cfg["momentum"]
        affine, track = cfg["affine"], cfg["track"]
        self.common_attrs(case, op, shape, channels_last, eps, affine)
        case.attr("momentum", "none" if momentum is None else float(momentum))
        case.attr("track", track)
        cls = classes[max(len(shape) - 2, 1)]
        module = cls(shape[1], eps=eps, momentum=momentum, affine=affine,
                     track_running_stats=track).double()
        if affine:
            self.affine_params(case, module, shape[1])
        if track:
            self.running_stats(case, module, shape[1], cfg.get("nbt_init", 0))
        self.run_steps(case, module, shape, channels_last, cfg["modes"], affine, track,
                       cfg.get("dist"))

    def batch_norm_cases(self):
        classes = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
        shapes = [
            ((5, 3), False), ((2, 1), False), ((16, 7), False), ((3, 4, 9), False),
            ((1, 3, 11), False),
            ((2, 3, 7, 5), False), ((2, 3, 7, 5), True), ((1, 1, 3, 3), False),
            ((4, 8, 5, 6), True), ((1, 5, 4, 3), True),
            ((2, 3, 3, 4, 5), False), ((2, 3, 3, 4, 5), True), ((1, 2, 3, 5, 7), True),
            ((3, 4, 2, 3, 2), False),
            # Large enough for vectorized and threaded paths, with remainders.
            ((8, 19, 9, 11), False), ((4, 35, 7, 9), True),
        ]
        for shape, channels_last in shapes:
            mixed_momentum = [0.01, 0.5, 1.0][self.rng.integers(3)]
            configs = [
                dict(name="train", modes=["train"], eps=1e-5, momentum=0.1, affine=True,
                     track=True),
                dict(name="eval", modes=["eval"], eps=1e-3, momentum=0.1, affine=True,
                     track=True),
                dict(name="notrack_train", modes=["train"], eps=1e-5, momentum=0.1,
                     affine=True, track=False),
                dict(name="notrack_eval", modes=["eval"], eps=1e-2, momentum=0.1, affine=True,
                     track=False),
                dict(name="noaffine", modes=["train", "eval"], eps=1e-5, momentum=0.3,
                     affine=False, track=True),
                dict(name="cma3", modes=["train", "train", "train"], eps=1e-5, momentum=None,
                     affine=True, track=True),
                dict(name="cma_eval", modes=["train", "train", "eval"], eps=1e-4,
                     momentum=None, affine=True, track=True, nbt_init=4),
                dict(name="mom_eps0p1", modes=["train", "train"], eps=0.1,
                     momentum=mixed_momentum, affine=bool(self.rng.integers(2)), track=True),
            ]
            for cfg in configs:
                self.stats_norm_case("batch_norm", classes, shape, channels_last, cfg)
        # N = 1 with a single value per channel is fine in eval mode with running stats.
        self.stats_norm_case("batch_norm", classes, (1, 3), False,
                             dict(name="eval_n1", modes=["eval"], eps=1e-5, momentum=0.1,
                                  affine=True, track=True))
        for shape, channels_last in [((6, 5, 7, 3), False), ((3, 4, 5, 6), True), ((64, 9), False)]:
            for offset in (1e3, -1e4):
                self.stats_norm_case("batch_norm", classes, shape, channels_last,
                                     dict(name="offset%g" % abs(offset), modes=["train", "eval"],
                                          eps=1e-5, momentum=0.1, affine=True, track=True,
                                          dist=(offset, 1.0)))

    def instance_norm_cases(self):
        classes = {1: nn.InstanceNorm1d, 2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}
        shapes = [
            ((3, 4, 7), False), ((1, 3, 10), False), ((2, 1, 9), False),
            ((2, 3, 5, 7), False), ((2, 3, 5, 7), True), ((1, 2, 4, 4), True),
            ((2, 2, 3, 4, 5), False), ((2, 3, 2, 3, 4), True), ((4, 16, 12, 13), True),
        ]
        configs = [
            dict(name="default", modes=["train", "eval"], eps=1e-5, momentum=0.1, affine=False,
                 track=False),
            dict(name="affine_eval", modes=["eval"], eps=1e-3, momentum=0.1, affine=True,
                 track=False),
            dict(name="track", modes=["train", "train", "eval"], eps=1e-5, momentum=0.1,
                 affine=True, track=True),
            dict(name="track_eval", modes=["eval"], eps=0.1, momentum=0.5, affine=False,
                 track=True),
        ]
        for shape, channels_last in shapes:
            for cfg in configs:
                self.stats_norm_case("instance_norm", classes, shape, channels_last, cfg)
        self.stats_norm_case("instance_norm", classes, (2, 3, 6, 7), False,
                             dict(name="offset1e3", modes=["train", "eval"], eps=1e-5,
                                  momentum=0.1, affine=True, track=True, dist=(1e3, 1.0)))

    def group_norm_cases(self):
        cases = [
            ((2, 6, 5), False, 1), ((2, 6, 5), False, 2), ((2, 6, 5), False, 3),
            ((2, 6, 5), False, 6), ((3, 1, 7), False, 1), ((1, 4, 3, 3), False, 2),
            ((1, 4, 3, 3), True, 2), ((2, 6, 4, 5), True, 3), ((2, 6, 4, 5), False, 6),
            ((2, 6, 4, 5), True, 1), ((2, 8, 2, 3, 2), False, 4), ((2, 8, 2, 3, 2), True, 2),
            ((4, 6), False, 3), ((4, 6), False, 6), ((1, 3, 7, 5), False, 3),
            ((1, 3, 7, 5), False, 1), ((4, 32, 8, 9), False, 8), ((3, 24, 5, 7), True, 4),
        ]
        cases = [case + (None,) for case in cases]
        cases += [((2, 6, 4, 5), False, 3, (1e3, 1.0)), ((2, 6, 4, 5), True, 2, (-1e4, 1.0))]
        for i, (shape, channels_last, groups, dist) in enumerate(cases):
            affine = i % 3 != 2
            eps = [1e-5, 1e-3, 0.1][i % 3]
            tag = "%s_%s_g%d%s" % ("x".join(map(str, shape)), "cl" if channels_last else "nc",
                                   groups, "_offset%g" % abs(dist[0]) if dist else "")
            case = self.new_case("group_norm", tag)
            self.common_attrs(case, "group_norm", shape, channels_last, eps, affine)
            case.attr("groups", groups)
            module = nn.GroupNorm(groups, shape[1], eps=eps, affine=affine).double()
            if affine:
                self.affine_params(case, module, shape[1])
            self.run_steps(case, module, shape, channels_last, ["train"], affine, False, dist)

    def layer_norm_cases(self):
        shapes = [
            ((4, 10), [10]), ((1, 7), [7]), ((3, 1), [1]), ((2, 3, 8), [8]),
            ((2, 3, 8), [3, 8]), ((2, 3, 4, 5), [5]), ((2, 3, 4, 5), [4, 5]),
            ((2, 3, 4, 5), [3, 4, 5]), ((5, 3, 3), [3, 3]), ((2, 2, 3, 2, 3), [3, 2, 3]),
            ((64, 257), [257]),
        ]
        cases = [(shape, ns, affine, None) for shape, ns in shapes for affine in (True, False)]
        cases += [((6, 40), [40], True, (1e3, 1.0)), ((3, 5, 16), [5, 16], True, (-1e4, 1.0))]
        for shape, normalized_shape, affine, dist in cases:
            eps = [1e-5, 1e-3, 0.1][self.rng.integers(3)]
            tag = "%s_ns%s_%s%s" % ("x".join(map(str, shape)), "x".join(map(str, normalized_shape)),
                                    "affine" if affine else "noaffine",
                                    "_offset%g" % abs(dist[0]) if dist else "")
            case = self.new_case("layer_norm", tag)
            self.common_attrs(case, "layer_norm", shape, False, eps, affine)
            case.attr("normalized_shape", normalized_shape)
            module = nn.LayerNorm(normalized_shape, eps=eps, elementwise_affine=affine).double()
            if affine:
                self.affine_params(case, module, normalized_shape)
            self.run_steps(case, module, shape, False, ["train"], affine, False, dist)

    def error_cases(self):
        """Inputs PyTorch rejects; the C++ adapters must throw syncbn::Error saying why."""
        per_channel = "Expected more than 1 value per channel when training"
        spatial = "Expected more than 1 spatial element when training"
        errors = [
            ("batch_norm", (1, 3), False, dict(mode="train", track=1), per_channel),
            ("batch_norm", (1, 4, 1, 1), True, dict(mode="train", track=1), per_channel),
            ("batch_norm", (1, 2, 1), False, dict(mode="train", track=0), per_channel),
            # Without running stats eval falls back to batch statistics, so n = 1 fails too.
            ("batch_norm", (1, 3), False, dict(mode="eval", track=0), per_channel),
            ("instance_norm", (2, 3, 1), False, dict(mode="train", track=1), spatial),
            ("instance_norm", (2, 3, 1, 1), False, dict(mode="eval", track=0), spatial),
            ("group_norm", (2, 6, 3), False, dict(groups=4), "divisible by num_groups"),
            ("layer_norm", (2, 3, 4), False, dict(normalized_shape=[5]), "normalized_shape"),
        ]
        for op, shape, channels_last, args, phrase in errors:
            case = self.new_case(op, "error_%s" % "x".join(map(str, shape)))
            self.common_attrs(case, op, shape, channels_last, 1e-5, False)
            case.attr("steps", 0)
            x32 = self.f32(shape)
            case.array("x", x32, F32)
            x = torch.from_numpy(x32).double()
            channels = shape[1]
            track = args.get("track", 0)
            if op in ("batch_norm", "instance_norm"):
                case.attr("momentum", 0.1)
                case.attr("track", track)
                case.attr("mode.0", args["mode"])
                if track:
                    case.attr("nbt_init", 0)
                    case.array("running_mean", np.zeros(channels, np.float32), F32)
                    case.array("running_var", np.ones(channels, np.float32), F32)
            running_mean = torch.zeros(channels, dtype=torch.float64) if track else None
            running_var = torch.ones(channels, dtype=torch.float64) if track else None
            try:
                if op == "batch_norm":
                    F.batch_norm(x, running_mean, running_var,
                                 training=args["mode"] == "train" or not track)
                elif op == "instance_norm":
                    F.instance_norm(x, running_mean, running_var,
                                    use_input_stats=args["mode"] == "train" or not track)
                elif op == "group_norm":
                    case.attr("groups", args["groups"])
                    F.group_norm(x, args["groups"])
                else:
                    case.attr("normalized_shape", args["normalized_shape"])
                    F.layer_norm(x, args["normalized_shape"])
            except (ValueError, RuntimeError) as e:
                message = str(e)
            else:
                sys.exit("make_reference: PyTorch accepted error case %s" % case.id)
            if phrase not in message:
                sys.exit("make_reference: case %s: PyTorch says %r, not %r" %
                         (case.id, message, phrase))
            case.attr("error_phrase", phrase)
            case.attr("torch_error", message)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="file to write the cases to")
    parser.add_argument("--seed", type=int, default=20240613, help="random seed")
    args = parser.parse_args()

    if not torch.__version__.startswith("1.13"):
        print("make_reference: warning: expected PyTorch 1.13, running %s" % torch.__version__,
              file=sys.stderr)
    torch.use_deterministic_algorithms(True)
    gen = Generator(args.seed)
    gen.batch_norm_cases()
    gen.group_norm_cases()
    gen.layer_norm_cases()
    gen.instance_norm_cases()
    gen.error_cases()
    writer = CaseWriter("tests/torch_ref/make_reference.py")
    for case in gen.cases:
        writer.add(case.id, case.attrs, case.arrays)
    writer.write(args.out)
    counts = {}
    for case in gen.cases:
        counts[case.attrs["op"]] = counts.get(case.attrs["op"], 0) + 1
    print("make_reference: wrote %d cases to %s (%s)" %
          (len(gen.cases), args.out, ", ".join("%s %d" % kv for kv in sorted(counts.items()))))


if __name__ == "__main__":
    main()
