#!/usr/bin/python3
"""The `syncbn` command line as a user meets it: help, usage errors, overrides.

  cli_test.py BIN help        `syncbn <command> --help` / `-h` print that command's usage, options
                              and environment variables on stdout and exit 0
  cli_test.py BIN usage       unknown options, missing values and malformed integers name the
                              option and print the command's usage, exit 2 (under mpirun: on
                              every rank, and the job ends)
  cli_test.py BIN overrides   under mpirun -np 2: --set train.steps=N over a config with epochs
                              runs N steps, rank 0 says which key won, and a warmup longer than
                              the run is shortened with one note
"""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "fashion_mnist.yaml")
MPIRUN = ["mpirun", "--allow-run-as-root", "--oversubscribe"]


def fail(message):
    sys.exit(f"FAIL: {message}")


def run(cmd, timeout=120):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return proc


def expect(proc, code, stream, *fragments):
    text = proc.stdout if stream == "stdout" else proc.stderr
    if proc.returncode != code:
        fail(f"{proc.args}: exit {proc.returncode}, expected {code}\n{proc.stdout}{proc.stderr}")
    for f in fragments:
        if f not in text:
            fail(f"{proc.args}: {stream} lacks {f!r}:\n{text}")


def check_help(binary):
    # Each command's own usage, not the general one: a line that only its help has.
    own = {
        "train": ["usage: mpirun -np N syncbn train", "--set KEY=VALUE", "--export-weights",
                  "SYNCBN_COORDINATOR_TOKEN_FILE"],
        "model": ["usage: syncbn model --config FILE", "--torch"],
        "study": ["usage: syncbn study --config FILE --out DIR", "--dry-run"],
    }
    for command, fragments in own.items():
        for flag in ("--help", "-h"):
            proc = run([binary, command, flag])
            expect(proc, 0, "stdout", *fragments)
            if "commands:" in proc.stdout:
                fail(f"syncbn {command} {flag} printed the general usage:\n{proc.stdout}")
    # Help wins wherever it stands, also after other options.
    expect(run([binary, "train", "--config", CONFIG, "--help"]), 0, "stdout", "--init-from")
    expect(run([binary, "--help"]), 0, "stdout", "commands:", "syncbn <command> --help")


def check_usage(binary):
    train_usage = "usage: mpirun -np N syncbn train"
    expect(run([binary, "train", "--config", CONFIG, "--bogus"]), 2, "stderr",
           "syncbn train: unknown option '--bogus'", train_usage)
    expect(run([binary, "train"]), 2, "stderr", "--config FILE is required", train_usage)
    expect(run([binary, "train", "--config"]), 2, "stderr", "option --config needs a value")
    expect(run([binary, "train", "--config", CONFIG, "--generation", "12abc"]), 2, "stderr",
           "--generation expects an integer, got '12abc'")
    expect(run([binary, "model", "--config", CONFIG]), 2, "stderr",
           "--torch is required", "usage: syncbn model")
    expect(run([binary, "model", "--frob"]), 2, "stderr", "unknown option '--frob'",
           "usage: syncbn model")
    expect(run([binary, "study", "--frob"]), 2, "stderr", "unknown option '--frob'",
           "usage: syncbn study")
    expect(run([binary, "frob"]), 2, "stderr", "unknown command 'frob'")
    # Under mpirun every rank reports the mistake and the job ends (no rank waits in MPI_Init).
    proc = run([*MPIRUN, "-np", "2", binary, "train", "--config", CONFIG, "--bogus"], timeout=60)
    if proc.returncode == 0:
        fail("mpirun with a bad option exited 0")
    if proc.stderr.count("unknown option '--bogus'") != 2:
        fail(f"expected the message from both ranks:\n{proc.stderr}")


def check_overrides(binary):
    base = [*MPIRUN, "-np", "2", binary, "train", "--config", CONFIG, "--no-progress",
            "--set", "data.test_limit=64"]
    # The config has epochs: 2 and warmup_steps: 200.
    proc = run([*base, "--set", "train.steps=20"], timeout=300)
    expect(proc, 0, "stdout", "after 20 steps",
           "note: --set train.steps=20 replaces train.epochs=2 (train.epochs cleared)",
           "note: train.warmup_steps (200) is longer than the run (20 steps): shortened to 19")
    lines = proc.stdout.splitlines()
    if not lines or not lines[0].startswith("note: --set train.steps=20"):
        fail(f"rank 0's first line should say which key won:\n{proc.stdout}")
    if proc.stdout.count("shortened to") != 1:
        fail(f"the warmup note should be printed once:\n{proc.stdout}")
    # Both on the command line: the last one wins (epochs=1 over steps=20 is a whole epoch, so
    # limit the data to make that quick: 64 samples / global batch 16 = 4 steps).
    proc = run([*base, "--set", "data.train_limit=64", "--set", "train.steps=20",
                "--set", "train.epochs=1"], timeout=300)
    expect(proc, 0, "stdout", "after 4 steps", "--set train.epochs=1 replaces train.steps=20")


def main():
    binary, check = sys.argv[1], sys.argv[2]
    {"help": check_help, "usage": check_usage, "overrides": check_overrides}[check](binary)
    print(f"ok: {check}")


if __name__ == "__main__":
    main()
