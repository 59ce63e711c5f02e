#!/usr/bin/python3
"""Step time with the coordinator up, down (SIGKILLed after the Join), and on checkpoint steps.

    bench/coordinator_outage.py [--syncbn build/src/cli/syncbn] [--np 2] [--steps 300]
                                [--every 10] [--rounds 3]

Each round runs `syncbn train` (configs/ci_tiny.yaml, log_every 1, a checkpoint every --every
steps) twice against a fresh coordinator: once with it up throughout, once with it killed as
soon as the first step is logged (the run then spills its checkpoints). The step time of step s
is global batch / images_per_s of its metrics line; a checkpoint's cost lands in the step after
it (the snapshot is taken after the step's timing window closes). Prints medians over the
rounds' steps (the first 10 steps of each run are skipped) and the ratios the issue asks for
(dead coordinator <= 1.05x the normal step time).
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_once(args, out, name, kill):
    coord_log = os.path.join(out, name + ".coord.log")
    coordinator = subprocess.Popen([args.syncbn, "coordinator", "--listen", "127.0.0.1:0",
                                    "--state-dir", os.path.join(out, name + ".state")],
                                   stdout=open(coord_log, "w"), stderr=subprocess.STDOUT)
    address = None
    for _ in range(200):
        text = open(coord_log).read()
        if "listening on" in text:
            address = text.split("listening on ")[1].split()[0]
            break
        time.sleep(0.05)
    metrics = os.path.join(out, name + ".jsonl")
    cmd = ["mpirun", "-np", str(args.np), "--oversubscribe", "--bind-to", "none"]
    if os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    cmd += [args.syncbn, "train", "--config", os.path.join(ROOT, "configs", "ci_tiny.yaml"),
            "--no-progress", "--coordinator", address, "--run-id", name, "--metrics-out", metrics,
            "--set", f"train.steps={args.steps}", "--set", f"checkpoint.every_steps={args.every}",
            "--set", "train.log_every=1",
            "--set", "data.train_limit=60000", "--set", "data.test_limit=100"]
    env = dict(os.environ, SYNCBN_SPILL_DIR=os.path.join(out, name + ".spill"))
    train = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env=env)
    if kill:
        while not (os.path.exists(metrics) and os.path.getsize(metrics) > 0):
            time.sleep(0.01)
        coordinator.send_signal(signal.SIGKILL)
    _, stderr = train.communicate(timeout=1800)
    if coordinator.poll() is None:
        coordinator.terminate()
    coordinator.wait()
    if train.returncode != 0:
        sys.exit(f"{name}: training failed:\n{stderr}")
    normal, after_checkpoint = [], []
    for line in open(metrics):
        m = json.loads(line)
        if m["kind"] != "train" or m["step"] <= 10:
            continue
        seconds = 8 * args.np / m["images_per_s"]  # ci_tiny: per_rank_batch 8
        (after_checkpoint if (m["step"] - 1) % args.every == 0 else normal).append(seconds)
    return normal, after_checkpoint


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--syncbn", default=os.path.join(ROOT, "build", "src", "cli", "syncbn"))
    parser.add_argument("--np", type=int, default=2)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    samples = {"up": ([], []), "down": ([], [])}
    with tempfile.TemporaryDirectory(prefix="syncbn-outage-bench-") as out:
        for r in range(args.rounds):
            for mode in ("up", "down"):  # interleaved, so drift in machine load hits both
                normal, ckpt = run_once(args, out, f"{mode}{r}", kill=mode == "down")
                samples[mode][0].extend(normal)
                samples[mode][1].extend(ckpt)
    med = {mode: (statistics.median(s[0]), statistics.median(s[1]))
           for mode, s in samples.items()}
    print(f"{args.np} ranks, ci_tiny (per-rank batch 8), {args.steps} steps x {args.rounds} "
          f"rounds, a checkpoint every {args.every} steps; median step time:")
    print(f"  coordinator up:   {1e3 * med['up'][0]:.2f} ms   after a checkpoint "
          f"{1e3 * med['up'][1]:.2f} ms")
    print(f"  coordinator down: {1e3 * med['down'][0]:.2f} ms   after a checkpoint "
          f"{1e3 * med['down'][1]:.2f} ms")
    print(f"  down / up: {med['down'][0] / med['up'][0]:.3f}x (target <= 1.05x); "
          f"checkpoint step / normal step (up): {med['up'][1] / med['up'][0]:.2f}x")


if __name__ == "__main__":
    main()
