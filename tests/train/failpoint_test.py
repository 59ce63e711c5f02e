"""No hang, ever: one rank fails in one stage of a step; the whole job must end within seconds.

    failpoint_test.py SYNCBN NP

For each stage (forward, backward, the gradient allreduce, evaluation, checkpointing) runs
`mpirun -np NP syncbn train` with SYNCBN_TEST_FAIL_AT=STAGE:STEP:RANK (train/test_hooks.h) making
the last rank throw at step 3 (evaluation: the final one, step 6) while the other ranks are inside
a collective, and checks that the job exits non-zero, that the output holds that rank's message,
and that it ended less than 10 s after that message appeared. Before run_training aborted on such errors the
failing rank left the others waiting in their collective: the job hung until killed.
"""
import os
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "ci_tiny.yaml")
LIMIT_S = 10.0


def main():
    binary, np_ = sys.argv[1], int(sys.argv[2])
    rank = np_ - 1
    cases = [("forward", 3), ("backward", 3), ("allreduce", 3), ("eval", 6), ("checkpoint", 4)]
    failures = []
    with tempfile.TemporaryDirectory(prefix="syncbn-failpoint-") as out:
        for stage, step in cases:
            cmd = ["mpirun", "-np", str(np_), "--oversubscribe", "--bind-to", "none"]
            if os.geteuid() == 0:
                cmd.append("--allow-run-as-root")
            cmd += [binary, "train", "--config", CONFIG, "--no-progress",
                    "--set", "train.steps=6", "--set", "data.test_limit=200",
                    "--set", "checkpoint.every_steps=2",
                    "--set", "checkpoint.dir=" + os.path.join(out, stage)]
            env = dict(os.environ, SYNCBN_TEST_FAIL_AT=f"{stage}:{step}:{rank}")
            message = (f"[rank {rank}] error: test failpoint SYNCBN_TEST_FAIL_AT={stage}:{step}:"
                       f"{rank}: {stage} of step {step} failed on rank {rank}")
            start = time.monotonic()
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, env=env, start_new_session=True)
            lines, seen = [], []

            def read(proc=proc, lines=lines, seen=seen, message=message):
                for line in proc.stdout:
                    lines.append(line)
                    if message in line and not seen:
                        seen.append(time.monotonic())

            reader = threading.Thread(target=read)
            reader.start()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()
            reader.join()
            end = time.monotonic()
            text = "".join(lines)
            if end - start >= 60:
                failures.append(f"{stage}: still running after 60 s (hung):\n{text}")
                print(f"np {np_} {stage} at step {step} on rank {rank}: hung, killed after 60 s")
                continue
            elapsed = end - seen[0] if seen else end - start
            problems = []
            if proc.returncode == 0:
                problems.append("exit status 0")
            if message not in text:
                problems.append(f"no line {message!r}")
            if elapsed >= LIMIT_S:
                problems.append(f"ended {elapsed:.1f} s after the failure (limit {LIMIT_S:.0f} s)")
            if problems:
                failures.append(f"{stage}: {'; '.join(problems)}:\n{text}")
            print(f"np {np_} {stage} at step {step} on rank {rank}: exit {proc.returncode} "
                  f"{elapsed:.1f} s after the failure ({end - start:.1f} s in all)"
                  f"{'' if not problems else ' FAILED'}")
    if failures:
        sys.exit("\n".join(failures))


if __name__ == "__main__":
    main()
