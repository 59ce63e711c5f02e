#!/usr/bin/python3
"""Checks of launch/run.sh (the restarting supervisor) and launch/cluster.sh (the test cluster).

  launch_test.py BIN usage      run.sh / cluster.sh refuse bad arguments with a message, exit 2
                                (cluster.sh as a non-root user: a clear "needs root", exit 1)
  launch_test.py BIN restart    hostfile `localhost slots=4`: a rank killed in generation 0 and a
                                rank stuck in generation 0 are each restarted with --resume; the
                                final weights equal an uninterrupted run's, byte for byte; no
                                process is left behind
  launch_test.py BIN budget     a job that always fails (a rank killed, or stuck before its
                                first step) stops after exactly K+1 attempts, exit 3, naming the
                                last failure
  launch_test.py BIN coordinator  launch/train.sh and launch/run.sh: the coordinator SIGKILLed
                                three times mid-run is restarted each time (counted in the log);
                                the run finishes with weights byte-identical to an uninterrupted
                                run and every checkpoint step committed; each run has a fresh
                                0600 token
  launch_test.py BIN cluster-match    3 hosts (network namespaces) × 2 ranks == one host × 6
  launch_test.py BIN cluster-failure  every process of one host killed and its link cut mid-run:
                                      restarted on the 2 others (4 ranks, same global batch) from
                                      the newest checkpoint; the run finishes and its first loss
                                      after the resume matches the uninterrupted run
  launch_test.py BIN cluster-latency  latency on every link: slower, same weights

BIN is the syncbn binary (run.sh uses it through SYNCBN_BIN). The cluster checks need root and
network namespaces; without them they exit 77 (CTest: skipped) saying why.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUN = os.path.join(ROOT, "launch", "run.sh")
CLUSTER = os.path.join(ROOT, "launch", "cluster.sh")
AGENT = os.path.join(ROOT, "launch", "netns_agent.sh")
CONFIG = os.path.join(ROOT, "configs", "ci_tiny.yaml")
SKIP = 77
# Small and quick: 24 samples a step, a checkpoint every 4 steps.
TRAIN_ARGS = ["--no-progress", "--set", "train.per_rank_batch=4", "--set", "train.steps=16",
              "--set", "checkpoint.every_steps=4", "--set", "data.test_limit=300"]
CLUSTER_NAME = "sbnt"
CLUSTER_NET = "10.79.0"


def fail(message):
    sys.exit(f"FAIL: {message}")


def run_sh(binary, out, hostfile, np_, extra=(), env=None, train_args=TRAIN_ARGS, timeout=300):
    cmd = [RUN, "--hostfile", hostfile, "--np", str(np_), "--config", CONFIG, "--out", out,
           "--run-id", os.path.basename(out), *extra, "--", *train_args]
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, SYNCBN_BIN=binary, **(env or {})))
    proc.seconds = time.time() - start
    proc.log = proc.stdout + proc.stderr
    return proc


def expect_ok(proc, what):
    if proc.returncode != 0:
        fail(f"{what}: run.sh exited {proc.returncode}:\n{proc.log[-4000:]}")


def weights(out):
    with open(os.path.join(out, "weights.safetensors"), "rb") as f:
        return f.read()


def metrics(out, generation):
    with open(os.path.join(out, f"metrics.{generation}.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def leftovers(marker):
    """Processes whose command line names this test's output directory."""
    ps = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return [line for line in ps.splitlines() if marker in line and "launch_test.py" not in line]


def localhost_hostfile(tmp, slots):
    path = os.path.join(tmp, f"hosts.local{slots}")
    with open(path, "w") as f:
        f.write(f"# this machine only\nlocalhost slots={slots}\n")
    return path


def expect_failure(cmd, code, needle, env=None):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    if proc.returncode != code or needle not in proc.stderr:
        fail(f"{' '.join(cmd)}: expected exit {code} and '{needle}' on stderr, got "
             f"{proc.returncode}:\n{proc.stdout}{proc.stderr}")
    print(f"ok: {' '.join(os.path.basename(c) if c.startswith('/') else c for c in cmd)} -> "
          f"exit {code}, '{needle}'")


def check_usage(binary, tmp):
    hosts = localhost_hostfile(tmp, 2)
    env = dict(os.environ, SYNCBN_BIN=binary)
    expect_failure([RUN, "--np", "2"], 2, "--hostfile FILE is required", env)
    expect_failure([RUN, "--hostfile", "/nonexistent/hosts", "--np", "2"], 2,
                   "cannot read the hostfile '/nonexistent/hosts'", env)
    expect_failure([RUN, "--hostfile", hosts, "--np", "two"], 2,
                   "--np expects a positive integer, got 'two'", env)
    expect_failure([RUN, "--hostfile", hosts, "--np", "2", "--max-restarts", "-1"], 2,
                   "--max-restarts expects an integer >= 0", env)
    expect_failure([RUN, "--hostfile", hosts, "--np", "2", "--run-id", "../x"], 2,
                   "--run-id must match", env)
    expect_failure([RUN, "--hostfile", hosts, "--np", "2", "--bogus"], 2,
                   "unknown option '--bogus'", env)
    empty = os.path.join(tmp, "hosts.empty")
    with open(empty, "w") as f:
        f.write("# nothing\n\n")
    expect_failure([RUN, "--hostfile", empty, "--np", "2"], 2, "names no host", env)
    expect_failure([CLUSTER, "sideways"], 2, "unknown command 'sideways'")
    if os.geteuid() == 0:
        # As an unprivileged user, cluster.sh must say it needs root rather than half-build.
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        expect_failure(nobody + [CLUSTER, "up"], 1, "needs root")
        expect_failure([CLUSTER, "kill-host", "nohost"], 1, "no host 'nohost'")
    else:
        expect_failure([CLUSTER, "up"], 1, "needs root")


def check_restart(binary, tmp):
    hosts = localhost_hostfile(tmp, 4)
    base = os.path.join(tmp, "uninterrupted")
    expect_ok(run_sh(binary, base, hosts, 2), "uninterrupted run")
    reference = weights(base)

    # A rank killed after step 6 of generation 0: restarted from the step-4 checkpoint.
    killed = os.path.join(tmp, "killed")
    proc = run_sh(binary, killed, hosts, 2, ["--max-restarts", "2"],
                  env={"SYNCBN_TEST_KILL_AT_STEP": "6:1:0"})
    expect_ok(proc, "killed run")
    for needle in ["failed: generation 0: mpirun exited with status", "generation 1: 2 ranks",
                   "resuming from step 4", "done: generation 1"]:
        if needle not in proc.log:
            fail(f"killed run: '{needle}' missing from the output:\n{proc.log[-3000:]}")
    if weights(killed) != reference:
        fail("killed and restarted run: weights differ from the uninterrupted run")
    print("ok: rank killed at step 6, restarted from step 4: weights byte-identical")

    # A rank stuck (alive, no progress) after step 9: found by heartbeat age, job restarted.
    stuck = os.path.join(tmp, "stuck")
    proc = run_sh(binary, stuck, hosts, 2, ["--max-restarts", "1", "--stall-timeout", "4"],
                  env={"SYNCBN_TEST_HANG_AT_STEP": "9:0:0"})
    expect_ok(proc, "stuck run")
    if not re.search(r"generation 0 is stuck: rank \d+ .* made no progress for \d+ s", proc.log):
        fail(f"stuck run: no stall report:\n{proc.log[-3000:]}")
    if "resuming from step 8" not in proc.log:
        fail(f"stuck run: did not resume from step 8:\n{proc.log[-3000:]}")
    if weights(stuck) != reference:
        fail("stuck and restarted run: weights differ from the uninterrupted run")
    print(f"ok: rank stuck after step 9, detected and restarted: weights byte-identical "
          f"({proc.seconds:.0f} s)")
    time.sleep(1)
    for out in (base, killed, stuck):
        left = leftovers(out)
        if left:
            fail(f"processes left behind by {out}:\n" + "\n".join(left))
    print("ok: no process left behind")


def check_budget(binary, tmp):
    hosts = localhost_hostfile(tmp, 2)
    out = os.path.join(tmp, "doomed")
    proc = run_sh(binary, out, hosts, 2, ["--max-restarts", "2"],
                  env={"SYNCBN_TEST_KILL_AT_STEP": "2:1"})
    launches = re.findall(r"run.sh: generation (\d+): \d+ ranks", proc.log)
    if proc.returncode != 3:
        fail(f"always-failing job: expected exit 3, got {proc.returncode}:\n{proc.log[-3000:]}")
    if launches != ["0", "1", "2"]:
        fail(f"always-failing job: expected exactly 3 launches (generations 0 1 2), got {launches}")
    if not re.search(r"giving up after 3 attempt\(s\) \(--max-restarts 2\); last failure: "
                     r"generation 2: mpirun exited with status \d+", proc.log):
        fail(f"always-failing job: no final message naming the last failure:\n{proc.log[-2000:]}")
    print("ok: always-failing job stopped after exactly 3 attempts with exit 3")

    # Stuck before the first step in every generation: its heartbeats (from the background
    # thread) carry step 0 and never move on; caught all the same.
    out = os.path.join(tmp, "silent")
    proc = run_sh(binary, out, hosts, 2, ["--max-restarts", "1", "--stall-timeout", "3"],
                  env={"SYNCBN_TEST_HANG_AT_STEP": "0:1"})
    if proc.returncode != 3 or not re.search(
            r"giving up after 2 attempt\(s\) \(--max-restarts 1\); last failure: generation 1: "
            r"(rank\(s\) [0-9 ]+ sent no heartbeat in the \d+ s since the launch|"
            r"rank \d+ on .* made no progress for \d+ s \(last step 0\))", proc.log):
        fail(f"job stuck before its first step: expected exit 3 after 2 attempts naming the "
             f"silent ranks, got {proc.returncode}:\n{proc.log[-2000:]}")
    print("ok: a job stuck before its first step is detected without any heartbeat; 2 attempts")


# ---- the cluster ----------------------------------------------------------------------------

def cluster(*args, check=True):
    env = dict(os.environ, SYNCBN_CLUSTER_NAME=CLUSTER_NAME, SYNCBN_CLUSTER_NET=CLUSTER_NET)
    proc = subprocess.run([CLUSTER, *args], capture_output=True, text=True, timeout=60, env=env)
    if check and proc.returncode != 0:
        fail(f"cluster.sh {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
    return proc


def cluster_up(hosts=3, slots=2):
    if os.geteuid() != 0:
        print("SKIP: the cluster checks need root (network namespaces, veth pairs, a bridge)")
        sys.exit(SKIP)
    if subprocess.run(["ip", "netns", "add", "sbnt-probe"], capture_output=True).returncode != 0:
        print("SKIP: cannot create network namespaces here (no CAP_SYS_ADMIN/CAP_NET_ADMIN?)")
        sys.exit(SKIP)
    subprocess.run(["ip", "netns", "del", "sbnt-probe"], capture_output=True)
    print(cluster("up", "--hosts", str(hosts), "--slots", str(slots)).stdout.strip())
    hostfile = f"/tmp/syncbn-cluster-{CLUSTER_NAME}/hostfile"
    return hostfile, ["--tcp-include", f"{CLUSTER_NET}.0/24", "--launch-agent", AGENT]


def cluster_down():
    cluster("down")
    if any(line.split()[0].startswith(CLUSTER_NAME + "-h") for line in
           subprocess.run(["ip", "netns", "list"], capture_output=True,
                          text=True).stdout.splitlines() if line.strip()):
        fail("cluster.sh down left namespaces behind")


def with_cluster(body):
    def wrapped(binary, tmp):
        try:
            body(binary, tmp, *cluster_up())
        finally:
            cluster_down()
    return wrapped


@with_cluster
def check_cluster_match(binary, tmp, hostfile, cluster_args):
    spread = os.path.join(tmp, "cluster6")
    proc = run_sh(binary, spread, hostfile, 6, cluster_args)
    expect_ok(proc, "cluster run")
    if f"generation 0: 6 ranks on {CLUSTER_NAME}-h1 {CLUSTER_NAME}-h2 {CLUSTER_NAME}-h3" \
            not in proc.log:
        fail(f"cluster run did not use the three hosts:\n{proc.log[-2000:]}")
    single = os.path.join(tmp, "single6")
    expect_ok(run_sh(binary, single, localhost_hostfile(tmp, 6), 6), "single-host run")
    # Everything but the timing must agree to the bit.
    timing = ("_per_s", "_ms")
    a, b = ([{k: v for k, v in m.items() if not k.endswith(timing)} for m in metrics(out, 0)]
            for out in (spread, single))
    if a != b:
        diff = next(i for i in range(min(len(a), len(b))) if a[i] != b[i]) if a and b else 0
        fail(f"3 hosts × 2 ranks and 1 host × 6 ranks: metrics differ first at line {diff}: "
             f"{a[diff] if a else None} vs {b[diff] if b else None}")
    if weights(spread) != weights(single):
        fail("3 hosts × 2 ranks and 1 host × 6 ranks: the metrics agree but the weights differ")
    print(f"ok: 3 hosts × 2 ranks == 1 host × 6 ranks: {len(a)} metric lines and the weights "
          f"byte-identical ({proc.seconds:.0f} s across the cluster)")


@with_cluster
def check_cluster_failure(binary, tmp, hostfile, cluster_args):
    out = os.path.join(tmp, "hostdown")
    # 40 steps; the host goes down once step 6 is logged, while the job runs.
    cmd = [RUN, "--hostfile", hostfile, "--np", "6", "--config", CONFIG, "--out", out,
           "--run-id", "hostdown", "--max-restarts", "2", *cluster_args, "--",
           *TRAIN_ARGS, "--set", "train.steps=40"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, SYNCBN_BIN=binary))
    deadline = time.time() + 120
    first = os.path.join(out, "metrics.0.jsonl")
    while time.time() < deadline:
        if os.path.exists(first) and sum(1 for _ in open(first)) >= 6:
            break
        if proc.poll() is not None:
            fail(f"the run ended before the host could be killed:\n{proc.stdout.read()}")
        time.sleep(0.2)
    else:
        proc.kill()
        fail("the run never reached step 6")
    print(cluster("kill-host", f"{CLUSTER_NAME}-h3").stdout.strip())
    log, _ = proc.communicate(timeout=300)
    if proc.returncode != 0:
        fail(f"run.sh exited {proc.returncode} after the host failure:\n{log[-4000:]}")
    for needle in [f"host {CLUSTER_NAME}-h3 is unreachable: leaving it out of generation 1",
                   f"generation 1: 4 ranks on {CLUSTER_NAME}-h1 {CLUSTER_NAME}-h2, global batch 24",
                   "done: generation 1"]:
        if needle not in log:
            fail(f"'{needle}' missing:\n{log[-4000:]}")
    resumed = re.search(r"resuming from step (\d+)", log)
    if not resumed or int(resumed.group(1)) < 4:
        fail(f"generation 1 did not resume from a checkpoint:\n{log[-3000:]}")
    step = int(resumed.group(1))
    after = metrics(out, 1)
    if after[0]["step"] != step + 1 or after[-1]["kind"] != "eval" or after[-1]["step"] != 40:
        fail(f"generation 1 metrics do not continue from step {step + 1} to the end at 40")
    # The uninterrupted 6-rank run, extended to 40 steps, for the loss right after the resume.
    ref40 = os.path.join(tmp, "reference40")
    expect_ok(run_sh(binary, ref40, localhost_hostfile(tmp, 6), 6,
                     train_args=TRAIN_ARGS + ["--set", "train.steps=40"]), "reference 40 steps")
    want = {m["step"]: m["loss"] for m in metrics(ref40, 0) if m["kind"] == "train"}
    got = after[0]
    rel = abs(got["loss"] - want[got["step"]]) / abs(want[got["step"]])
    if rel > 1e-4:
        fail(f"step {got['step']} loss on 4 ranks {got['loss']} vs uninterrupted 6 ranks "
             f"{want[got['step']]}: relative difference {rel:.2e} > 1e-4")
    print(f"ok: host {CLUSTER_NAME}-h3 killed at step >= 6; restarted on 2 hosts × 2 ranks from "
          f"step {step}; step {got['step']} loss matches the uninterrupted run ({rel:.1e}); "
          f"finished at step 40")
    time.sleep(1)
    left = leftovers(out)
    if left:
        fail("processes left behind:\n" + "\n".join(left))


@with_cluster
def check_cluster_latency(binary, tmp, hostfile, cluster_args):
    short = TRAIN_ARGS + ["--set", "train.steps=6"]
    plain = os.path.join(tmp, "plain")
    p0 = run_sh(binary, plain, hostfile, 6, cluster_args, train_args=short)
    expect_ok(p0, "cluster run")
    shaped = cluster("delay", "20")
    how = "tbf" if "no netem" in shaped.stderr else "netem"
    slow = os.path.join(tmp, "slow")
    p1 = run_sh(binary, slow, hostfile, 6, cluster_args, train_args=short)
    expect_ok(p1, "cluster run with latency")
    if weights(slow) != weights(plain):
        fail("the run with added latency ended with different weights")
    if how == "netem" and p1.seconds <= p0.seconds:
        fail(f"20 ms of netem latency did not slow the run ({p1.seconds:.1f} s vs {p0.seconds:.1f} s)")
    note = " (this kernel has no netem: tbf at 20 Mbit/s with 20 ms of queue)" if how == "tbf" else ""
    print(f"ok: links shaped with {how}{note}: the run took {p1.seconds:.1f} s vs "
          f"{p0.seconds:.1f} s unshaped and ended with the same weights")


TRAIN_SH = os.path.join(ROOT, "launch", "train.sh")
OUTAGE_ARGS = ["--no-progress", "--set", "train.steps=40", "--set", "checkpoint.every_steps=4",
               "--set", "checkpoint.keep_last=20", "--set", "data.test_limit=200"]


def committed(binary, out, run_id):
    """The steps the run's coordinator state holds, read through a coordinator started on it
    (the launcher stopped its own)."""
    token = os.path.join(out, "token")
    coordinator = subprocess.Popen([binary, "coordinator", "--listen", "127.0.0.1:0",
                                    "--state-dir", os.path.join(out, "coordinator"),
                                    "--token-file", token], stdout=subprocess.PIPE, text=True)
    try:
        line = coordinator.stdout.readline()
        if not line.startswith("listening on "):
            fail(f"a coordinator on {out}/coordinator did not start: {line!r}")
        listing = subprocess.run([binary, "ckpt", "list", "--run", run_id, "--token-file", token,
                                  "--coordinator", line.split()[-1]],
                                 capture_output=True, text=True, timeout=60)
    finally:
        coordinator.terminate()
        coordinator.wait(timeout=30)
    if listing.returncode != 0:
        fail(f"ckpt list of {out}: {listing.stderr}")
    return sorted(int(line.split()[0]) for line in listing.stdout.splitlines()[1:])


def kill_coordinator_three_times(out, proc):
    """SIGKILLs the coordinator of a launcher run three times, once it has committed step 4 and
    then every 2.5 s; returns the launcher's output."""
    log = os.path.join(out, "coordinator.log")
    for _ in range(600):
        if os.path.exists(log) and "committed checkpoint step 4 " in open(log).read():
            break
        time.sleep(0.05)
    else:
        proc.kill()
        fail(f"{out}: the coordinator never committed step 4")
    for _ in range(3):
        pid = int(open(os.path.join(out, "coordinator.pid")).read())
        os.kill(pid, 9)
        time.sleep(2.5)
    stdout, stderr = proc.communicate(timeout=300)
    return proc.returncode, stdout + stderr


def check_coordinator(binary, tmp):
    env = dict(os.environ, SYNCBN_BIN=binary)
    # train.sh: uninterrupted, then with the coordinator killed three times.
    runs = {}
    for name, slow in (("plain", "0"), ("killed", "150")):
        out = os.path.join(tmp, name)
        proc = subprocess.Popen([TRAIN_SH, "--np", "2", "--config", CONFIG, "--out", out, "--",
                                 *OUTAGE_ARGS], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=dict(env, SYNCBN_TEST_STEP_SLEEP_MS=slow))
        if name == "killed":
            rc, log = kill_coordinator_three_times(out, proc)
        else:
            stdout, stderr = proc.communicate(timeout=300)
            rc, log = proc.returncode, stdout + stderr
        if rc != 0:
            fail(f"train.sh ({name}) exited {rc}:\n{log[-3000:]}")
        runs[name] = (out, log)
    out, log = runs["killed"]
    if "restart 3 of 10" not in log:
        fail(f"train.sh: no third coordinator restart in its log:\n{log[-3000:]}")
    if weights(out) != weights(runs["plain"][0]):
        fail("train.sh: weights differ from the uninterrupted run's")
    steps = committed(binary, out, "killed")
    if steps != list(range(4, 41, 4)):
        fail(f"train.sh: the coordinator holds steps {steps}, expected 4, 8, ..., 40")
    for name in runs:
        mode = os.stat(os.path.join(runs[name][0], "token")).st_mode & 0o777
        if mode != 0o600:
            fail(f"train.sh: the run's token file has mode {oct(mode)}, expected 0600")
    print("ok: train.sh: coordinator killed 3 times, restarted 3 times; weights byte-identical; "
          "steps 4..40 committed; 0600 token")

    # run.sh: the same, against an uninterrupted run.sh run.
    hosts = localhost_hostfile(tmp, 2)
    base = os.path.join(tmp, "run_plain")
    expect_ok(run_sh(binary, base, hosts, 2, train_args=OUTAGE_ARGS), "uninterrupted run.sh run")
    out = os.path.join(tmp, "run_killed")
    cmd = [RUN, "--hostfile", hosts, "--np", "2", "--config", CONFIG, "--out", out,
           "--run-id", "run_killed", "--", *OUTAGE_ARGS]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(env, SYNCBN_TEST_STEP_SLEEP_MS="150"))
    rc, log = kill_coordinator_three_times(out, proc)
    if rc != 0 or "restart 3 of 10" not in log or "generation 1" in log:
        fail(f"run.sh: expected one generation and three coordinator restarts, exit 0; got "
             f"{rc}:\n{log[-3000:]}")
    if weights(out) != weights(base):
        fail("run.sh: weights differ from the uninterrupted run's")
    steps = committed(binary, out, "run_killed")
    if steps != list(range(4, 41, 4)):
        fail(f"run.sh: the coordinator holds steps {steps}, expected 4, 8, ..., 40")
    print("ok: run.sh: coordinator killed 3 times, restarted 3 times, no relaunch; weights "
          "byte-identical; steps 4..40 committed")


CHECKS = {
    "usage": check_usage,
    "coordinator": check_coordinator,
    "restart": check_restart,
    "budget": check_budget,
    "cluster-match": check_cluster_match,
    "cluster-failure": check_cluster_failure,
    "cluster-latency": check_cluster_latency,
}


def main():
    if len(sys.argv) != 3 or sys.argv[2] not in CHECKS:
        sys.exit(f"usage: launch_test.py BIN {{{'|'.join(CHECKS)}}}")
    binary = os.path.abspath(sys.argv[1])
    tmp = tempfile.mkdtemp(prefix=f"syncbn-launch-{sys.argv[2]}-")
    try:
        CHECKS[sys.argv[2]](binary, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
