#!/usr/bin/python3
"""`syncbn train` on CIFAR-10-format files that this script writes, under mpirun (CTest, label e2e).

  cifar10_e2e.py BIN train    a tiny learnable set in the binary format: 2 ranks x 8 with SyncBN
                              equal 1 rank x 16 with BN step by step (augmentation on), the model
                              takes 3x32x32 inputs; over 60 steps the loss falls and the test
                              accuracy is far above chance; PyTorch, given the exported weights
                              and the test file normalized on its own, gets the same test loss
                              and accuracy, for small_cnn and for resnet20
  cifar10_e2e.py BIN resume   a rank killed after an epoch boundary, relaunched with --resume
                              (and another checkpoint.every_steps): weights byte-identical to
                              an uninterrupted run; resuming the
                              checkpoint with another data.format is refused on every rank
  cifar10_e2e.py BIN errors   a file of the wrong size, a truncated file, a label out of range, a
                              missing directory, the Python version, no data.dir: every rank
                              prints the error naming the file, non-zero exit, no hang

The base config is configs/ci_tiny.yaml (through tests/train/e2e.py's helpers).
"""
import os
import random
import shutil
import sys
import tempfile

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TESTS, "train"))
import e2e  # noqa: E402

RECORD = 3073  # 1 label byte + 3 x 32 x 32 pixel bytes (CHW)


def sample(label, rng):
    """One 3x32x32 image: noise, plus a bright 12x12 block in channel label % 3 at quadrant
    label // 3 (0..3), so that the class can be learned and survives a crop of 4 pixels."""
    pixels = bytearray(rng.randrange(0, 128) for _ in range(3 * 32 * 32))
    channel, quadrant = label % 3, label // 3
    top, left = 16 * (quadrant // 2) + 2, 16 * (quadrant % 2) + 2
    for y in range(top, top + 12):
        for x in range(left, left + 12):
            pixels[channel * 1024 + y * 32 + x] = 255
    return bytes([label]) + bytes(pixels)


def write_set(directory, per_train_file=64, test_records=200, seed=0):
    os.makedirs(directory, exist_ok=True)
    rng = random.Random(seed)
    names = [f"data_batch_{k}.bin" for k in range(1, 6)]
    counts = [per_train_file] * 5
    for name, count in zip(names + ["test_batch.bin"], counts + [test_records]):
        with open(os.path.join(directory, name), "wb") as f:
            for _ in range(count):
                f.write(sample(rng.randrange(10), rng))
    return directory


def cifar_sets(directory):
    return ["data.format=cifar10", f"data.dir={directory}", "data.train_limit=0",
            "data.test_limit=0"]


def train(binary, out):
    data = write_set(os.path.join(out, "cifar"))
    base = cifar_sets(data) + ["data.augment=true", "data.shuffle=true", "train.log_every=1",
                               "train.warmup_steps=0"]
    # The exact global batch: as tests/train/e2e.py's equivalence check, on 3x32x32 inputs.
    short = base + ["train.steps=20", e2e.EQUIVALENCE_LR]
    ma, wa, _ = e2e.train(binary, 2, out, "cifar_np2", short + ["model.norm=syncbn",
                                                                 "train.per_rank_batch=8"])
    mb, wb, _ = e2e.train(binary, 1, out, "cifar_np1", short + ["model.norm=bn",
                                                                 "train.per_rank_batch=16"])
    e2e.compare_runs(ma, wa, mb, wb, 1e-4, "cifar10 20 steps: np2x8 syncbn vs np1x16 bn",
                     weight_tol=1e-2)
    first_conv = e2e.read_safetensors(wa)["0.weight"][0]
    if first_conv[1] != 3:
        sys.exit(f"train: the first conv has shape {first_conv}; expected 3 input channels")
    # It learns: 60 steps (3 epochs of 320 images) with SyncBN on 2 ranks.
    m, weights, _ = e2e.train(binary, 2, out, "cifar_learn",
                        base + ["train.steps=60", "train.lr=0.05", "model.norm=syncbn",
                                "train.per_rank_batch=8"])
    metrics = e2e.read_metrics(m)
    losses = [r["loss"] for r in metrics if r["kind"] == "train"]
    evals = [r for r in metrics if r["kind"] == "eval"]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    if not last < 0.7 * first:
        sys.exit(f"train: the loss did not fall: mean of the first 5 steps {first:.3f}, "
                 f"of the last 5 {last:.3f}")
    if not evals or evals[-1]["accuracy"] < 0.5:
        sys.exit(f"train: test accuracy {evals[-1]['accuracy'] if evals else None}; expected "
                 f">= 0.5 (chance is 0.1)")
    print(f"train: first conv {first_conv}, loss {first:.3f} -> {last:.3f} over 60 steps, "
          f"test accuracy {evals[-1]['accuracy']:.3f} on 200 images")
    torch_eval(binary, data, weights, evals[-1])
    # resnet20 (He et al.'s CIFAR network) on the same files: 3-channel conv1, and PyTorch agrees.
    m, weights, _ = e2e.train(binary, 2, out, "cifar_resnet20",
                              base + ["train.steps=8", "train.lr=0.05", "model.norm=syncbn",
                                      "model.preset=resnet20", "train.per_rank_batch=8"])
    conv1 = e2e.read_safetensors(weights)["conv1.weight"][0]
    if conv1 != [16, 3, 3, 3]:
        sys.exit(f"train: resnet20's conv1 has shape {conv1}; expected [16, 3, 3, 3]")
    torch_eval(binary, data, weights, [r for r in e2e.read_metrics(m) if r["kind"] == "eval"][-1],
               "resnet20")


def torch_eval(binary, data, weights, ours, preset="small_cnn"):
    """The exported weights in the PyTorch model `syncbn model --torch` prints, on test_batch.bin
    read and normalized here: the same test loss and accuracy as our evaluation."""
    import subprocess
    import torch
    code = subprocess.run([binary, "model", "--config", e2e.CONFIG, "--set", "data.format=cifar10",
                           "--set", f"data.dir={data}", "--set", f"model.preset={preset}",
                           "--torch"], capture_output=True, text=True, check=True).stdout
    scope = {}
    exec(code, scope)  # the program ends in `model = SyncbnModel()`
    model = scope["model"]
    state = {name: torch.tensor(values, dtype=torch.float32 if isinstance(values[0], float)
                                else torch.int64).reshape(shape)
             for name, (shape, values) in e2e.read_safetensors(weights).items()}
    model.load_state_dict(state, strict=True)
    model.eval()
    with open(os.path.join(data, "test_batch.bin"), "rb") as f:
        records = torch.frombuffer(bytearray(f.read()), dtype=torch.uint8).reshape(-1, RECORD)
    labels = records[:, 0].long()
    images = records[:, 1:].reshape(-1, 3, 32, 32).float() / 255.0
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).reshape(1, 3, 1, 1)
    std = torch.tensor([0.2470, 0.2435, 0.2616]).reshape(1, 3, 1, 1)
    with torch.no_grad():
        logits = model((images - mean) / std)
    loss = float(torch.nn.functional.cross_entropy(logits.double(), labels))
    accuracy = int((logits.argmax(1) == labels).sum()) / len(labels)
    print(f"torch_eval {preset}: weights loaded strictly; test loss ours {ours['loss']:.6f}, torch "
          f"{loss:.6f}; accuracy ours {ours['accuracy']:.3f}, torch {accuracy:.3f}")
    if (abs(ours["loss"] - loss) > 1e-4 * loss
            or abs(ours["accuracy"] - accuracy) > 1.5 / len(labels)):
        sys.exit("torch_eval: our evaluation and PyTorch's disagree")


def resume(binary, out):
    data = write_set(os.path.join(out, "cifar"))
    # 320 images in global batches of 16: the kill at step 22 is after the epoch boundary (20).
    base = cifar_sets(data) + ["data.augment=true", "train.steps=28", "checkpoint.every_steps=4",
                               "train.log_every=1"]
    _, whole, _ = e2e.train(binary, 2, out, "whole", base)
    # The relaunch also saves less often, which does not change the training.
    _, w, saved = e2e.killed_then_resumed(binary, out, "killed", 2, base, 22, 1,
                                          resume_sets=["checkpoint.every_steps=10"])
    if not e2e.same_bytes(w, whole):
        sys.exit(f"resume: weights differ from the uninterrupted run (checkpoints {saved})")
    print(f"resume: rank 1 killed after step 22, resumed from {saved[-1]} with another "
          "checkpoint.every_steps: weights byte-identical to the uninterrupted run")
    # The checkpoint remembers the format: resuming it on another data set is refused.
    ck = [f"checkpoint.dir={os.path.join(out, 'killed_ck')}", "train.steps=28",
          "checkpoint.every_steps=4"]
    expect_every_rank(binary, out, "resume_other_format", ck, [
        "data.format differs (checkpoint: cifar10, now: fashion_mnist)"], extra=["--resume"])


def expect_every_rank(binary, out, name, sets, fragments, np_=2, extra=()):
    _, _, proc = e2e.train(binary, np_, out, name, sets, extra, check=False, timeout=120)
    text = proc.stdout + proc.stderr
    if proc.returncode == 0:
        sys.exit(f"errors/{name}: exited 0; expected a failure mentioning {fragments}")
    if "MPI_ABORT" in text or "Signal:" in text:
        sys.exit(f"errors/{name}: an abort instead of a clean exit:\n{text}")
    for rank in range(np_):
        lines = [l for l in text.splitlines() if f"[rank {rank}] error:" in l]
        if not any(all(f in l for f in fragments) for l in lines):
            sys.exit(f"errors/{name}: rank {rank} did not say {fragments}:\n{text}")
    print(f"errors/{name}: exit {proc.returncode}, all {np_} ranks said {fragments}")


def errors(binary, out):
    good = write_set(os.path.join(out, "good"), per_train_file=4, test_records=4)

    def broken(name, file, data):
        d = os.path.join(out, name)
        shutil.copytree(good, d)
        with open(os.path.join(d, file), "wb") as f:
            f.write(data)
        return d

    with open(os.path.join(good, "data_batch_2.bin"), "rb") as f:
        batch2 = f.read()
    # CIFAR-100's records carry two label bytes: 4 of them are 12296 bytes.
    d = broken("wrong_size", "data_batch_2.bin", bytes(4 * 3074))
    expect_every_rank(binary, out, "wrong_size", cifar_sets(d),
                      [os.path.join(d, "data_batch_2.bin"), "12296 bytes is not a whole number"])
    d = broken("truncated", "test_batch.bin", batch2[:RECORD + 100])
    expect_every_rank(binary, out, "truncated", cifar_sets(d),
                      [os.path.join(d, "test_batch.bin"), "1 records and 100 bytes over",
                       "truncated"])
    bad_label = batch2[:2 * RECORD] + b"\x0a" + batch2[2 * RECORD + 1:]  # record 2's label is 10
    d = broken("bad_label", "data_batch_5.bin", bad_label)
    expect_every_rank(binary, out, "bad_label", cifar_sets(d),
                      [os.path.join(d, "data_batch_5.bin"), "label 10 of record 2",
                       "expected 0..9"], np_=3)
    expect_every_rank(binary, out, "missing_dir", cifar_sets("/nonexistent/cifar"),
                      ["/nonexistent/cifar", "does not exist", "cifar-10-binary.tar.gz"])
    python = os.path.join(out, "python_version")
    os.makedirs(python)
    for name in ["data_batch_%d" % k for k in range(1, 6)] + ["test_batch", "batches.meta"]:
        with open(os.path.join(python, name), "wb") as f:
            f.write(b"\x80\x02")
    expect_every_rank(binary, out, "python_version", cifar_sets(python),
                      ["data_batch_1.bin: no such file", "the Python version"])
    expect_every_rank(binary, out, "no_dir", ["data.format=cifar10"],
                      ["config key 'data.dir' must be set with data.format: cifar10"])


def main():
    binary, check = sys.argv[1], sys.argv[2]
    with tempfile.TemporaryDirectory(prefix="syncbn-cifar10-") as out:
        {"train": train, "resume": resume, "errors": errors}[check](binary, out)


if __name__ == "__main__":
    main()
