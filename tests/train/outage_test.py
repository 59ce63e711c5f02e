"""The coordinator is a service, not a single point of failure (DESIGN.md §4).

    outage_test.py SYNCBN CHECK

Checks, each against an uninterrupted run without a coordinator (same config, same steps):

  restart   the coordinator is SIGKILLed mid-run and restarted on the same address and state
            directory: the run goes on, says once that it is gone and once that it is back,
            finishes with byte-identical weights, and every checkpoint step ends up committed.
  gone      the coordinator is SIGKILLed and never comes back: the run still finishes (exit 0,
            identical weights) and names its spill directory and the `syncbn ckpt push` command;
            that command then uploads every spilled step to a new coordinator.
  resume    the coordinator is SIGKILLed, then a rank is killed: a relaunch (generation 1, a
            coordinator restarted on the old state) resumes from the spill directory, which is
            newer than the coordinator's checkpoint, says so, and ends byte-identical.
"""
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "ci_tiny.yaml")
SETS = ["train.steps=40", "checkpoint.every_steps=4", "checkpoint.keep_last=20",
        "data.test_limit=200"]
SLOW = {"SYNCBN_TEST_STEP_SLEEP_MS": "150"}


def fail(message):
    sys.exit("FAIL: " + message)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Coordinator:
    def __init__(self, binary, state_dir, address):
        self.log = open(state_dir + ".log", "a")
        self.proc = subprocess.Popen([binary, "coordinator", "--listen", address, "--state-dir",
                                      state_dir], stdout=self.log, stderr=subprocess.STDOUT)
        self.log_path = state_dir + ".log"
        for _ in range(300):
            if "listening on" in open(self.log_path).read():
                return
            if self.proc.poll() is not None:
                fail(f"the coordinator exited:\n{open(self.log_path).read()}")
            time.sleep(0.05)
        fail("the coordinator did not start")

    def wait_for_commit(self, step):
        needle = f"committed checkpoint step {step} "
        for _ in range(1200):
            if needle in open(self.log_path).read():
                return
            time.sleep(0.05)
        fail(f"the coordinator never committed step {step}")

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


def train(binary, out, name, extra=(), env=None, wait=True):
    weights = os.path.join(out, name + ".safetensors")
    cmd = ["mpirun", "-np", "2", "--oversubscribe", "--bind-to", "none"]
    if os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    cmd += [binary, "train", "--config", CONFIG, "--no-progress", "--export-weights", weights]
    for s in SETS:
        cmd += ["--set", s]
    cmd += list(extra)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **SLOW, **(env or {})})
    return weights, proc


def finish(proc, timeout=300):
    stdout, stderr = proc.communicate(timeout=timeout)
    return proc.returncode, stdout, stderr


def same_bytes(a, b):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        return fa.read() == fb.read()


def committed_steps(binary, address, run):
    listing = subprocess.run([binary, "ckpt", "list", "--coordinator", address, "--run", run],
                             capture_output=True, text=True, timeout=60)
    if listing.returncode != 0:
        fail(f"ckpt list failed: {listing.stderr}")
    return sorted(int(line.split()[0]) for line in listing.stdout.splitlines()[1:])


def reference(binary, out):
    weights, proc = train(binary, out, "reference", env={"SYNCBN_TEST_STEP_SLEEP_MS": "0"})
    rc, stdout, stderr = finish(proc)
    if rc != 0:
        fail(f"uninterrupted run failed:\n{stderr}")
    return weights


def check_restart(binary, out):
    ref = reference(binary, out)
    address = f"127.0.0.1:{free_port()}"
    state = os.path.join(out, "state")
    coordinator = Coordinator(binary, state, address)
    weights, proc = train(binary, out, "restart",
                          ["--coordinator", address, "--run-id", "restart"])
    coordinator.wait_for_commit(4)
    coordinator.kill()
    time.sleep(3)
    coordinator = Coordinator(binary, state, address)
    try:
        rc, stdout, stderr = finish(proc)
        if rc != 0:
            fail(f"restart: the run failed ({rc}):\n{stderr}")
        gone = stderr.count("is unreachable (")
        back = stderr.count("is back after")
        if gone != 1 or back != 1:
            fail(f"restart: expected one 'unreachable' and one 'back' line, got {gone} and "
                 f"{back}:\n{stderr}")
        if not same_bytes(weights, ref):
            fail("restart: weights differ from the uninterrupted run")
        steps = committed_steps(binary, address, "restart")
        if steps != list(range(4, 41, 4)):
            fail(f"restart: committed steps {steps}, expected 4, 8, ..., 40")
    finally:
        coordinator.stop()
    print("ok: coordinator killed after step 4 and restarted: one warning each way, weights "
          "byte-identical, steps 4..40 all committed")


def check_gone(binary, out):
    ref = reference(binary, out)
    address = f"127.0.0.1:{free_port()}"
    state = os.path.join(out, "state")
    coordinator = Coordinator(binary, state, address)
    weights, proc = train(binary, out, "gone", ["--coordinator", address, "--run-id", "gone"])
    coordinator.wait_for_commit(4)
    coordinator.kill()
    rc, stdout, stderr = finish(proc)
    spill = os.path.join(out, "spill-gone")
    command = f"syncbn ckpt push --coordinator {address} --run gone {spill}"
    if rc != 0:
        fail(f"gone: the run failed ({rc}) without its coordinator:\n{stderr}")
    if command not in stderr or stderr.count("is unreachable (") != 1:
        fail(f"gone: expected one 'unreachable' line and the push command {command!r}:\n{stderr}")
    if not same_bytes(weights, ref):
        fail("gone: weights differ from the uninterrupted run")
    spilled = sorted(int(n[5:17]) for n in os.listdir(spill) if n.endswith(".safetensors"))
    if spilled[-1] != 40:
        fail(f"gone: the final checkpoint is not in the spill directory: {spilled}")
    print(f"ok: coordinator gone for good: exit 0, identical weights, steps {spilled} spilled, "
          f"warning names `{command}`")
    coordinator = Coordinator(binary, state, address)
    try:
        push = subprocess.run([binary] + command.split()[1:], capture_output=True, text=True,
                              timeout=120)
        if push.returncode != 0:
            fail(f"gone: ckpt push failed ({push.returncode}):\n{push.stdout}{push.stderr}")
        steps = committed_steps(binary, address, "gone")
        if steps != list(range(4, 41, 4)):
            fail(f"gone: after ckpt push the coordinator holds {steps}, expected 4, 8, ..., 40")
    finally:
        coordinator.stop()
    print("ok: ckpt push uploaded the spilled steps; the coordinator holds 4..40")


def check_resume(binary, out):
    ref = reference(binary, out)
    address = f"127.0.0.1:{free_port()}"
    state = os.path.join(out, "state")
    run = ["--coordinator", address, "--run-id", "resume"]
    coordinator = Coordinator(binary, state, address)
    _, proc = train(binary, out, "killed", run, env={"SYNCBN_TEST_KILL_AT_STEP": "26:1"})
    coordinator.wait_for_commit(4)
    coordinator.kill()
    rc, _, stderr = finish(proc)
    if rc == 0:
        fail("resume: the run with a killed rank exited 0")
    coordinator = Coordinator(binary, state, address)
    try:
        weights, proc = train(binary, out, "resumed", run + ["--generation", "1", "--resume"])
        rc, stdout, stderr = finish(proc)
        if rc != 0:
            fail(f"resume: the relaunch failed ({rc}):\n{stderr}")
        said = re.search(r"resuming from step 24 \(.*spill-resume/step-0+24-[0-9a-f]{8}"
                         r"\.safetensors from the spill directory, newer than the "
                         r"coordinator's step 4\)", stdout)
        if not said:
            fail(f"resume: expected a resume from the spilled step 24:\n{stdout}\n{stderr}")
        if not same_bytes(weights, ref):
            fail("resume: weights differ from the uninterrupted run")
    finally:
        coordinator.stop()
    print("ok: rank killed at step 26 with the coordinator gone; the relaunch resumed from the "
          "spilled step 24 (the coordinator had step 4): weights byte-identical")


def main():
    binary, check = sys.argv[1], sys.argv[2]
    with tempfile.TemporaryDirectory(prefix="syncbn-outage-") as out:
        {"restart": check_restart, "gone": check_gone, "resume": check_resume}[check](binary, out)


if __name__ == "__main__":
    main()
