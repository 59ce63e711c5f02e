#!/usr/bin/python3
"""Training throughput of PyTorch DDP (gloo, localhost) with an all-reduce SyncBN.

The PyTorch side of bench/train_compare.sh: the same model as `syncbn train` (the program
printed by `syncbn model --config FILE --torch`, ending in `model = SyncbnModel()`, read from
--model-file), trained with SGD (momentum 0.9, Nesterov, weight decay 5e-4, lr 0.05) on
Fashion-MNIST, one process per rank, one thread per rank. Every BatchNorm2d is replaced by
AllReduceSyncBN: in training it computes the local per-channel mean and mean of squares, sums
the concatenated vector over the ranks with ONE dist.all_reduce, divides by the world size and
normalizes with the global statistics (the idea of Detectron2's NaiveSyncBatchNorm; equal
per-rank batches assumed). The all_reduce is differentiable through a custom autograd Function
whose backward all-reduces the incoming gradient.

Run with Debian's interpreter (torch 1.13, no torchvision):

    /usr/bin/python3 bench/torch_ddp_train.py --model-file MODEL.txt --per-rank-batch 4 \\
        --warmup 10 --steps 100

Rank 0 prints one machine-readable line on stdout (everything else goes to stderr):

    RESULT per_rank_batch=4 world_size=2 steps=100 seconds=... images_per_s=... \\
        syncbn_allreduce_frac=... params=... peak_rss_mib=...

images_per_s is global (world_size * per_rank_batch * steps / seconds), timed on rank 0 from a
barrier after the warm-up steps to the end of the last step's optimizer update.
syncbn_allreduce_frac is the part of that time rank 0 spent inside the SyncBN all_reduce calls
(forward and backward; it includes waiting for the other rank). --compare-safetensors FILE
checks that the model has exactly the parameter and buffer names and shapes of a safetensors
file exported by `syncbn train --export-weights FILE`. peak_rss_mib is the peak resident memory
of the largest rank (bench/memory.sh).
"""

import argparse
import gzip
import json
import os
import resource
import socket
import struct
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

MEAN, STD = 0.2860, 0.3530


class _Timer:
    """Seconds spent in the SyncBN all_reduce calls (forward and backward) of this process."""

    seconds = 0.0


class DifferentiableAllReduce(torch.autograd.Function):
    """Sum over the ranks; the gradient of each rank's input is the sum of the output grads."""

    @staticmethod
    def forward(ctx, tensor):
        out = tensor.clone()
        start = time.perf_counter()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        _Timer.seconds += time.perf_counter() - start
        return out

    @staticmethod
    def backward(ctx, grad_output):
        grad = grad_output.clone()
        start = time.perf_counter()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        _Timer.seconds += time.perf_counter() - start
        return grad


class AllReduceSyncBN(torch.nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are the global batch's, from one all_reduce.

    Same parameters and buffers (names and shapes) as torch.nn.BatchNorm2d, so state dicts are
    interchangeable. Assumes every rank has the same local batch size.
    """

    def forward(self, x):
        if not self.training or dist.get_world_size() == 1:
            return super().forward(x)
        channels = x.shape[1]
        local_mean = x.mean(dim=(0, 2, 3))
        local_sqr = (x * x).mean(dim=(0, 2, 3))
        stats = DifferentiableAllReduce.apply(torch.cat([local_mean, local_sqr]))
        stats = stats * (1.0 / dist.get_world_size())
        mean, sqr = stats[:channels], stats[channels:]
        var = (sqr - mean * mean).clamp_min(0.0)
        invstd = torch.rsqrt(var + self.eps)
        scale = self.weight * invstd
        shift = self.bias - mean * scale

        with torch.no_grad():
            count = x.numel() // channels * dist.get_world_size()
            unbiased = var * (count / max(count - 1, 1))
            self.running_mean.mul_(1.0 - self.momentum).add_(mean.detach(), alpha=self.momentum)
            self.running_var.mul_(1.0 - self.momentum).add_(unbiased.detach(),
                                                            alpha=self.momentum)
            self.num_batches_tracked.add_(1)

        return x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)


def build_model(program):
    scope = {}
    exec(program, scope)  # the trusted output of `syncbn model --torch`
    model = scope.get("model")
    if not isinstance(model, torch.nn.Module):
        raise SystemExit("error: the model program does not define `model`, a torch.nn.Module")
    # Every BatchNorm2d of the tree (residual blocks and their downsample included).
    for parent in list(model.modules()):
        for name, module in list(parent.named_children()):
            if type(module) is torch.nn.BatchNorm2d:
                sync = AllReduceSyncBN(module.num_features, eps=module.eps,
                                       momentum=module.momentum, affine=module.affine,
                                       track_running_stats=module.track_running_stats)
                sync.load_state_dict(module.state_dict())
                setattr(parent, name, sync)
    return model


def count_parameters(model):
    return sum(p.numel() for p in model.parameters())


def safetensors_shapes(path):
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
    return {name: tuple(entry["shape"]) for name, entry in header.items()
            if name != "__metadata__"}


def compare_with_safetensors(model, path):
    """Returns (ok, message, our parameter count from the file)."""
    theirs = safetensors_shapes(path)
    mine = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    problems = []
    for name in sorted(set(mine) | set(theirs)):
        if name not in theirs:
            problems.append(f"{name} missing from {path}")
        elif name not in mine:
            problems.append(f"{name} only in {path}")
        elif mine[name] != theirs[name]:
            problems.append(f"{name}: torch {list(mine[name])}, {path} {list(theirs[name])}")
    param_names = {name for name, _ in model.named_parameters()}
    file_params = 0
    for name, shape in theirs.items():
        if name in param_names:
            n = 1
            for d in shape:
                n *= d
            file_params += n
    return not problems, "; ".join(problems), file_params


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, count = struct.unpack(">II", data[:8])
    if magic == 2051:  # images: count, rows, cols
        rows, cols = struct.unpack(">II", data[8:16])
        return torch.frombuffer(bytearray(data[16:]), dtype=torch.uint8).view(count, 1, rows, cols)
    if magic == 2049:  # labels
        return torch.frombuffer(bytearray(data[8:]), dtype=torch.uint8).to(torch.int64)
    raise SystemExit(f"error: {path} is not an IDX file (magic {magic})")


def log(rank, message):
    if rank == 0:
        print(f"[torch_ddp_train] {message}", file=sys.stderr, flush=True)


def worker(rank, args, program):
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{args.port}", rank=rank,
                            world_size=args.world_size)
    torch.manual_seed(args.seed)

    images = read_idx(os.path.join(args.data_dir, "train-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(args.data_dir, "train-labels-idx1-ubyte.gz"))

    model = build_model(program)
    # Running statistics are identical on every rank (global batch statistics): no broadcast.
    ddp = torch.nn.parallel.DistributedDataParallel(model, broadcast_buffers=False)
    opt = torch.optim.SGD(ddp.parameters(), lr=args.lr, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)

    b = args.per_rank_batch
    global_batch = b * args.world_size
    generator = torch.Generator().manual_seed(args.seed)
    order = torch.randperm(images.shape[0], generator=generator)
    steps_per_epoch = images.shape[0] // global_batch

    def train_step(step):
        start = (step % steps_per_epoch) * global_batch + rank * b
        idx = order[start:start + b]
        x = (images[idx].to(torch.float32) * (1.0 / 255.0) - MEAN) * (1.0 / STD)
        y = labels[idx]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(ddp(x), y)
        loss.backward()
        opt.step()
        return loss

    ddp.train()
    for step in range(args.warmup):
        train_step(step)
    dist.barrier()
    _Timer.seconds = 0.0
    t0 = time.perf_counter()
    for step in range(args.warmup, args.warmup + args.steps):
        loss = train_step(step)
    seconds = time.perf_counter() - t0
    allreduce_seconds = _Timer.seconds
    # Peak resident memory of the largest rank (ru_maxrss is in KiB on Linux).
    peak_rss = torch.tensor([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss], dtype=torch.float64)
    dist.all_reduce(peak_rss, op=dist.ReduceOp.MAX)

    if rank == 0:
        params = count_parameters(model)
        images_per_s = global_batch * args.steps / seconds
        log(rank, f"last loss {loss.item():.4f}, {args.steps} steps in {seconds:.3f} s")
        print(f"RESULT per_rank_batch={b} world_size={args.world_size} steps={args.steps} "
              f"seconds={seconds:.4f} images_per_s={images_per_s:.1f} "
              f"syncbn_allreduce_frac={allreduce_seconds / seconds:.4f} params={params} "
              f"peak_rss_mib={peak_rss.item() / 1024:.0f}",
              flush=True)
    # Both ranks tear the group down together: a rank destroying it while the other still
    # holds it once left rank 0 spinning in gloo's teardown forever.
    dist.barrier()
    dist.destroy_process_group()


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-file", required=True,
                        help="file holding the output of `syncbn model --config FILE --torch`")
    parser.add_argument("--per-rank-batch", type=int, default=4)
    parser.add_argument("--world-size", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--steps", type=int, default=100, help="timed steps")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--port", type=int, default=0, help="rendezvous port (0: pick a free one)")
    parser.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--compare-safetensors", metavar="FILE",
                        help="only check the model against FILE's names and shapes, then exit")
    args = parser.parse_args()
    if min(args.per_rank_batch, args.world_size, args.threads, args.steps) < 1 or args.warmup < 0:
        parser.error("batch, world size, threads and steps must be positive, warmup >= 0")

    with open(args.model_file) as f:
        program = f.read().strip()

    if args.compare_safetensors:
        model = build_model(program)
        ok, message, file_params = compare_with_safetensors(model, args.compare_safetensors)
        print(f"ARCH same={'yes' if ok else 'no'} torch_params={count_parameters(model)} "
              f"ours_params={file_params}")
        if not ok:
            print(f"error: architectures differ: {message}", file=sys.stderr)
            sys.exit(1)
        return

    if args.port == 0:
        args.port = free_port()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    mp.spawn(worker, args=(args, program), nprocs=args.world_size, join=True)


if __name__ == "__main__":
    main()
