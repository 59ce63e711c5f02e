#!/usr/bin/python3
"""PyTorch 1.13 references for syncbn's optimizer and LR schedules (STYLE.md rules 10, 12).

Run with Debian's interpreter (`/usr/bin/python3`, package python3-torch); CTest runs it at test
time into the build directory and optim_torch_test replays it through src/optim. Nothing it
produces is committed.

Records:

  sgd           torch.optim.SGD (foreach=False) run for STEPS steps, in float32, on a few
                parameter tensors with random float32 initial values and gradients, the
                learning rate changing from step to step (set in param_groups, as a scheduler
                does). Attributes: momentum, dampening, weight_decay, nesterov (0|1), steps,
                params, name.j (j in [0, params)). Arrays: lr (steps), and per parameter j
                p.j.init, and for every step k: grad.j.k (the gradient of step k), p.j.k (the
                value after step k), buf.j.k (the momentum buffer after step k; momentum != 0).
  sgd_error     options torch.optim.SGD rejects. Attributes: lr, momentum, dampening,
                weight_decay, nesterov, torch_error (PyTorch's message). No arrays.
  schedule      the learning rate of every step 1..total of a warmup + schedule, as PyTorch's
                schedulers give it (see lr_schedule.h for the convention). Attributes: kind,
                base_lr, warmup_steps, total_steps, step_size, gamma, min_lr. Array: lr (total).

The file is a reference-case file of tests/common/torch_ref.py (safetensors: attributes in the
metadata, arrays as tensors, both under the case id); a record's case id is KIND.ID, e.g.
sgd.plain. float32 data is stored as F32, learning rates as F64.
"""

import argparse
import os
import sys
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
from torch_ref import CaseWriter  # noqa: E402

STEPS = 10

# (name, shape, value scale, gradient scale). The 4-D one is also replayed channels-last on the
# C++ side; the empty one checks that nothing breaks for numel = 0.
PARAMS = [
    ("conv.weight", (4, 3, 2, 2), 0.5, 1.0),
    ("bn.weight", (3,), 1.0, 0.1),
    ("fc.weight", (5, 7), 2.0, 3.0),
    ("fc.bias", (5,), 0.1, 0.01),
    ("empty", (0, 3), 1.0, 1.0),
]

SGD_CONFIGS = [
    # id, momentum, dampening, weight_decay, nesterov
    ("plain", 0.0, 0.0, 0.0, False),
    ("momentum", 0.9, 0.0, 0.0, False),
    ("momentum_dampening", 0.9, 0.3, 0.0, False),
    ("nesterov", 0.9, 0.0, 0.0, True),
    ("weight_decay", 0.0, 0.0, 1e-2, False),
    ("all_nesterov", 0.9, 0.0, 5e-3, True),
    ("all_dampening", 0.8, 0.5, 1e-2, False),
]

SGD_ERRORS = [
    # id, lr, momentum, dampening, weight_decay, nesterov
    ("negative_lr", -1, 0.0, 0.0, 0.0, False),
    ("negative_lr_fraction", -0.001, 0.9, 0.0, 0.0, False),
    ("negative_momentum", 0.1, -0.5, 0.0, 0.0, False),
    ("negative_weight_decay", 0.1, 0.9, 0.0, -0.01, False),
    ("nesterov_without_momentum", 0.1, 0.0, 0.0, 0.0, True),
    ("nesterov_with_dampening", 0.1, 0.9, 0.1, 0.0, True),
]

SCHEDULES = [
    # id, kind, base_lr, warmup_steps, total_steps, step_size, gamma, min_lr
    ("constant_warmup", "constant", 0.1, 4, 12, 1, 0.1, 0.0),
    ("constant", "constant", 0.05, 0, 5, 1, 0.1, 0.0),
    ("step_warmup", "step", 0.1, 5, 40, 7, 0.5, 0.0),
    ("step", "step", 0.4, 0, 30, 10, 0.1, 0.0),
    ("step_size_one", "step", 1.0, 3, 12, 1, 0.8, 0.0),
    ("cosine_warmup", "cosine", 0.4, 10, 110, 1, 0.1, 1e-3),
    ("cosine", "cosine", 0.1, 0, 50, 1, 0.1, 0.0),
    ("cosine_warmup_one", "cosine", 0.2, 1, 31, 1, 0.1, 0.02),
    ("cosine_single_step", "cosine", 0.3, 2, 3, 1, 0.1, 0.0),
    ("cosine_min_is_base", "cosine", 0.1, 2, 8, 1, 0.1, 0.1),
]


class Writer(CaseWriter):
    def record(self, kind, rid, attrs, arrays):
        self.add("%s.%s" % (kind, rid), attrs, arrays)


def sgd_records(writer, rng):
    # The same initial values, gradients and learning rates for every configuration, so a
    # difference between two configurations' trajectories is only the options'.
    inits = [(rng.standard_normal(shape) * scale).astype(np.float32)
             for _, shape, scale, _ in PARAMS]
    grads = [[(rng.standard_normal(shape) * gscale).astype(np.float32)
              for _, shape, _, gscale in PARAMS] for _ in range(STEPS)]
    lrs = [float(v) for v in rng.uniform(0.01, 0.5, STEPS)]

    for rid, momentum, dampening, weight_decay, nesterov in SGD_CONFIGS:
        params = [torch.tensor(v, dtype=torch.float32, requires_grad=True) for v in inits]
        opt = torch.optim.SGD(params, lr=lrs[0], momentum=momentum, dampening=dampening,
                              weight_decay=weight_decay, nesterov=nesterov, foreach=False)
        arrays = {"lr": np.array(lrs)}
        for j, v in enumerate(inits):
            arrays["p.%d.init" % j] = v
        for k in range(STEPS):
            for group in opt.param_groups:
                group["lr"] = lrs[k]
            for j, p in enumerate(params):
                p.grad = torch.from_numpy(grads[k][j].copy())
                arrays["grad.%d.%d" % (j, k)] = grads[k][j]
            opt.step()
            for j, p in enumerate(params):
                arrays["p.%d.%d" % (j, k)] = p.detach().numpy().copy()
                if momentum != 0:
                    arrays["buf.%d.%d" % (j, k)] = opt.state[p]["momentum_buffer"].numpy().copy()
                else:
                    assert opt.state[p].get("momentum_buffer") is None
        attrs = {"momentum": momentum, "dampening": dampening, "weight_decay": weight_decay,
                 "nesterov": int(nesterov), "steps": STEPS, "params": len(PARAMS)}
        for j, (name, _, _, _) in enumerate(PARAMS):
            attrs["name.%d" % j] = name
        writer.record("sgd", rid, attrs, arrays)


def sgd_error_records(writer):
    for rid, lr, momentum, dampening, weight_decay, nesterov in SGD_ERRORS:
        p = torch.zeros(2, requires_grad=True)
        try:
            torch.optim.SGD([p], lr=lr, momentum=momentum, dampening=dampening,
                            weight_decay=weight_decay, nesterov=nesterov)
        except ValueError as e:
            message = str(e)
        else:
            sys.exit("torch.optim.SGD accepted the options of error case %s" % rid)
        writer.record("sgd_error", rid,
                      {"lr": lr, "momentum": momentum, "dampening": dampening,
                       "weight_decay": weight_decay, "nesterov": int(nesterov),
                       "torch_error": message},
                      {})


def rates(make_scheduler, base_lr, count):
    """The lr the optimizer uses at each of `count` steps, the scheduler stepped after each."""
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=base_lr)
    scheduler = make_scheduler(opt)
    out = []
    for _ in range(count):
        out.append(opt.param_groups[0]["lr"])
        opt.step()  # no gradient: changes nothing, but keeps the scheduler from warning
        scheduler.step()
    return out


def schedule_records(writer):
    sched = torch.optim.lr_scheduler
    for rid, kind, base_lr, warmup, total, step_size, gamma, min_lr in SCHEDULES:
        lrs = []
        if warmup >= 2:
            lrs += rates(lambda o: sched.LinearLR(o, start_factor=1.0 / warmup, end_factor=1.0,
                                                  total_iters=warmup - 1), base_lr, warmup)
        elif warmup == 1:
            lrs += [base_lr]
        after = total - warmup
        if kind == "constant":
            lrs += rates(lambda o: sched.ConstantLR(o, factor=1.0, total_iters=0), base_lr, after)
        elif kind == "step":
            lrs += rates(lambda o: sched.StepLR(o, step_size=step_size, gamma=gamma), base_lr,
                         after)
        else:
            lrs += rates(lambda o: sched.CosineAnnealingLR(o, T_max=after, eta_min=min_lr),
                         base_lr, after)
        assert len(lrs) == total
        writer.record("schedule", rid,
                      {"kind": kind, "base_lr": base_lr, "warmup_steps": warmup,
                       "total_steps": total, "step_size": step_size, "gamma": gamma,
                       "min_lr": min_lr},
                      {"lr": np.array(lrs, dtype=np.float64)})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=20240613)
    args = parser.parse_args()
    print("torch", torch.__version__, file=sys.stderr)
    torch.set_num_threads(1)
    warnings.simplefilter("error")  # a scheduler warning would mean we drive it wrongly
    rng = np.random.default_rng(args.seed)
    writer = Writer("tests/optim/make_optim_reference.py")
    sgd_records(writer, rng)
    sgd_error_records(writer)
    schedule_records(writer)
    writer.write(args.out)
    print("wrote %d records to %s" % (len(writer.ids), args.out), file=sys.stderr)


if __name__ == "__main__":
    main()
