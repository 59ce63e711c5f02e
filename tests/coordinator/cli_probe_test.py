"""The outside probe's findings about `syncbn ckpt`, `syncbn coordinator` and `syncbn status`,
each checked on the real binary (issue 13):

  help         ckpt/coordinator/status --help and -h print that command's usage, options and
               environment, exit 0
  integrity    a checkpoint file with one bit flipped in a tensor, and a safetensors file that is
               no syncbn checkpoint, are refused by ckpt inspect and export (exit 2, no output)
  inputs       /dev/zero, a directory, --step 12abc: a message and exit 2
  escapes      control characters in a checkpoint's metadata are printed escaped
  tokens       a 0644 token file is refused by ckpt list, also through
               SYNCBN_COORDINATOR_TOKEN_FILE
  listen       --listen 127.0.0.1:99999 and ::1:5000 are refused; a unix: socket is not
               accessible to group or others
  not-found    ckpt list of an unknown run: NOT_FOUND, exit 1

    cli_probe_test.py SYNCBN
"""
import json
import os
import stat
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "ci_tiny.yaml")


def fail(message):
    sys.exit("FAIL: " + message)


def run(binary, *args, env=None):
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def expect(proc, code, needle, what):
    text = proc.stdout + proc.stderr
    if proc.returncode != code or needle not in text:
        fail(f"{what}: expected exit {code} and {needle!r}, got {proc.returncode}:\n{text}")


def make_checkpoint(binary, out):
    ckdir = os.path.join(out, "ck")
    cmd = ["mpirun", "-np", "1", "--oversubscribe"]
    if os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    cmd += [binary, "train", "--config", CONFIG, "--no-progress", "--set", "train.steps=2",
            "--set", "checkpoint.every_steps=1", "--set", f"checkpoint.dir={ckdir}",
            "--set", "data.test_limit=100"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        fail(f"training for a checkpoint failed:\n{proc.stderr}")
    return os.path.join(ckdir, sorted(os.listdir(ckdir))[-1])


def split(path):
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n]), data[8 + n:]


def join(header, body, path):
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + body)


def main():
    binary = sys.argv[1]
    with tempfile.TemporaryDirectory(prefix="syncbn-probe-") as out:
        for command in ("ckpt", "coordinator", "status"):
            for flag in ("--help", "-h"):
                proc = run(binary, command, flag)
                expect(proc, 0, f"usage: syncbn {command}", f"{command} {flag}")
                if "SYNCBN_COORDINATOR" not in proc.stdout or "environment" not in proc.stdout:
                    fail(f"{command} {flag}: no environment section:\n{proc.stdout}")
        print("ok: ckpt, coordinator and status --help/-h: usage, options, environment, exit 0")

        good = make_checkpoint(binary, out)
        expect(run(binary, "ckpt", "inspect", "--file", good), 0, "tensors", "a good checkpoint")
        header, body = split(good)
        flipped = os.path.join(out, "flipped.safetensors")
        body = bytearray(body)
        body[len(body) // 2] ^= 0x10
        join(header, bytes(body), flipped)
        weights = os.path.join(out, "w.safetensors")
        expect(run(binary, "ckpt", "inspect", "--file", flipped), 2, "checksum mismatch",
               "inspect of a flipped bit")
        expect(run(binary, "ckpt", "export", "--file", flipped, "--out", weights), 2,
               "checksum mismatch", "export of a flipped bit")
        foreign = os.path.join(out, "foreign.safetensors")
        join({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0\0\0\0", foreign)
        expect(run(binary, "ckpt", "export", "--file", foreign, "--out", weights), 2,
               "not a syncbn checkpoint", "export of a foreign safetensors file")
        if os.path.exists(weights):
            fail("export wrote weights from a refused file")
        print("ok: a flipped bit and a non-syncbn safetensors file are refused, nothing exported")

        expect(run(binary, "ckpt", "inspect", "--file", "/dev/zero"), 2, "not a regular file",
               "inspect /dev/zero")
        expect(run(binary, "ckpt", "inspect", "--file", out), 2, "not a regular file",
               "inspect of a directory")
        expect(run(binary, "ckpt", "inspect", "--coordinator", "127.0.0.1:1", "--run", "r",
                   "--step", "12abc"), 2, "--step expects", "--step 12abc")
        print("ok: /dev/zero, a directory and --step 12abc: a message and exit 2")

        header, body = split(good)
        header["__metadata__"]["note"] = "\x1b]0;owned\x07\nsyncbn coordinator: forged"
        tricky = os.path.join(out, "tricky.safetensors")
        join(header, body, tricky)
        proc = run(binary, "ckpt", "inspect", "--file", tricky)
        expect(proc, 0, "note: \\e]0;owned\\x07\\nsyncbn coordinator: forged", "escaped metadata")
        if "\x1b" in proc.stdout or "\x07" in proc.stdout:
            fail("inspect printed raw control characters")
        print("ok: control characters in metadata are printed escaped")

        token = os.path.join(out, "token")
        with open(token, "w") as f:
            f.write("a" * 32)
        os.chmod(token, 0o644)
        expect(run(binary, "ckpt", "list", "--coordinator", "127.0.0.1:1", "--run", "r",
                   "--token-file", token), 2, "0644", "a 0644 token file")
        expect(run(binary, "ckpt", "list", "--coordinator", "127.0.0.1:1", "--run", "r",
                   env={"SYNCBN_COORDINATOR_TOKEN_FILE": token}), 2, "0644",
               "a 0644 token file through SYNCBN_COORDINATOR_TOKEN_FILE")
        print("ok: a 0644 token file is refused (flag and environment)")

        state = os.path.join(out, "state")
        expect(run(binary, "coordinator", "--state-dir", state, "--listen", "127.0.0.1:99999"), 1,
               "the port must be a number from 0 to 65535", "--listen 127.0.0.1:99999")
        expect(run(binary, "coordinator", "--state-dir", state, "--listen", "::1:5000"), 1,
               "[::1]:5000", "--listen ::1:5000")
        sock = os.path.join(out, "c.sock")
        coordinator = subprocess.Popen([binary, "coordinator", "--state-dir", state, "--listen",
                                        "unix:" + sock], stdout=subprocess.PIPE, text=True)
        try:
            line = coordinator.stdout.readline()
            if not line.startswith("listening on"):
                fail(f"a unix: coordinator did not start: {line!r}")
            mode = stat.S_IMODE(os.stat(sock).st_mode)
            if mode & 0o077:
                fail(f"the unix socket has mode {oct(mode)}: group or others may connect")
            proc = run(binary, "ckpt", "list", "--coordinator", "unix:" + sock, "--run", "nope")
            expect(proc, 1, "NOT_FOUND", "ckpt list of an unknown run")
        finally:
            coordinator.terminate()
            coordinator.wait(timeout=30)
        print(f"ok: --listen 99999 and ::1:5000 refused; unix socket mode {oct(mode)}; "
              "ckpt list of an unknown run: NOT_FOUND")


if __name__ == "__main__":
    main()
