#!/usr/bin/python3
"""End-to-end checks of `syncbn study` on configs/study_tiny.yaml (run by CTest, label study).

  study_e2e.py BIN resume   the study killed (SIGKILL) right after its first run finished leaves
                            no run behind; the rerun skips that run, runs the other three, and
                            the outputs are complete and well formed (results.csv, results.md,
                            the SVG as XML with one line per norm, the PNG chunk by chunk); a
                            third run launches nothing; a changed base config is refused
  study_e2e.py BIN errors   bad study configs (bad norm, empty batch list, unknown key) fail
                            with the key named and nothing launched; a failing run stops the
                            study with its log's tail and a non-zero exit, recording nothing;
                            SIGTERM stops the study and its run with exit 143

Every check prints what it saw and exits non-zero on a mismatch.
"""
import csv
import os
import re
import signal
import struct
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "configs", "study_tiny.yaml")
COLUMNS = ["run", "norm", "per_rank_batch", "bn_group_size", "seed", "world_size", "global_batch",
           "lr", "steps", "epochs", "test_error", "test_loss", "images_per_s", "sync_bn_comm_ms",
           "wall_s", "study_hash", "config_hash"]
RUNS = ["bn-b2-s1", "syncbn-b2-s1", "bn-b8-s1", "syncbn-b8-s1"]  # study_tiny.yaml, in order


def fail(message):
    sys.exit("FAIL: " + message)


def study(binary, config, out, timeout=240):
    proc = subprocess.run([binary, "study", "--config", config, "--out", out],
                          capture_output=True, text=True, timeout=timeout)
    return proc


def csv_rows(out):
    path = os.path.join(out, "results.csv")
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def processes_mentioning(text):
    """Pids of live processes whose command line contains text (the test's unique temp dir)."""
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    pids.append(int(pid))
        except OSError:
            pass
    return pids


def check_csv(out):
    path = os.path.join(out, "results.csv")
    with open(path, newline="") as f:
        header = f.readline().strip().split(",")
    if header != COLUMNS:
        fail(f"results.csv columns {header}, expected {COLUMNS}")
    rows = csv_rows(out)
    names = [r["run"] for r in rows]
    if sorted(names) != sorted(RUNS):
        fail(f"results.csv runs {names}, expected each of {RUNS} exactly once")
    for r in rows:
        if int(r["world_size"]) != 2 or int(r["global_batch"]) != 2 * int(r["per_rank_batch"]):
            fail(f"row {r['run']}: world size / global batch wrong: {r}")
        if r["norm"] not in ("bn", "syncbn") or not r["run"].startswith(r["norm"] + "-b"):
            fail(f"row {r['run']}: norm {r['norm']}")
        if not 0.0 <= float(r["test_error"]) <= 1.0:
            fail(f"row {r['run']}: test_error {r['test_error']} outside [0, 1]")
        if float(r["images_per_s"]) <= 0 or int(r["steps"]) != 512 // int(r["global_batch"]):
            fail(f"row {r['run']}: images_per_s {r['images_per_s']}, steps {r['steps']}")
        expected_lr = 0.05 * int(r["global_batch"]) / 16
        if abs(float(r["lr"]) - expected_lr) > 1e-9:
            fail(f"row {r['run']}: lr {r['lr']}, expected {expected_lr} (linear rule)")
        comm = float(r["sync_bn_comm_ms"])
        if (r["norm"] == "syncbn") != (comm > 0):
            fail(f"row {r['run']}: sync_bn_comm_ms {comm} (SyncBN runs only)")
        if r["bn_group_size"] != {"bn": "1", "syncbn": "2"}[r["norm"]]:
            fail(f"row {r['run']}: bn_group_size {r['bn_group_size']}")
        if not re.fullmatch(r"[0-9a-f]{16}", r["study_hash"]) or not re.fullmatch(
                r"[0-9a-f]{16}", r["config_hash"]):
            fail(f"row {r['run']}: hashes {r['study_hash']} {r['config_hash']}")
    print(f"results.csv: {len(rows)} rows, columns as expected, values consistent")
    return rows


def check_markdown(out, rows):
    with open(os.path.join(out, "results.md")) as f:
        md = f.read()
    if "Fashion-MNIST, small_cnn, world size 2," not in md:
        fail(f"results.md does not name the dataset, model and world size:\n{md[:400]}")
    lines = [l for l in md.splitlines() if l.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    if header != ["per-rank batch", "global batch", "bn", "syncbn"]:
        fail(f"results.md table header {header}")
    if lines[1] != "| ---: | ---: | ---: | ---: |":
        fail(f"results.md separator {lines[1]}")
    body = lines[2:4]
    for line, batch in zip(body, ("2", "8")):
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] != batch or cells[1] != str(2 * int(batch)):
            fail(f"results.md row {line}")
        for norm, cell in zip(("bn", "syncbn"), cells[2:]):
            m = re.fullmatch(r"(\d+\.\d\d)( ± \d+\.\d\d)? \((\d+)\)", cell)
            if not m:
                fail(f"results.md cell '{cell}' is not 'mean ± std (n)'")
            row = [r for r in rows if r["norm"] == norm and r["per_rank_batch"] == batch][0]
            if abs(float(m.group(1)) - 100 * float(row["test_error"])) > 0.006:
                fail(f"results.md {norm} b{batch}: {cell} vs results.csv {row['test_error']}")
    print("results.md: table of mean test error per norm × per-rank batch matches results.csv")


def check_svg(out):
    root = ET.parse(os.path.join(out, "error_vs_batch.svg")).getroot()
    if root.tag != "{http://www.w3.org/2000/svg}svg":
        fail(f"SVG root is {root.tag}")
    lines = [p for p in root.iter("{http://www.w3.org/2000/svg}polyline")
             if p.get("class") == "series"]
    labels = sorted(p.get("data-label") for p in lines)
    if labels != ["bn", "syncbn"]:
        fail(f"SVG series {labels}, expected one polyline per norm")
    for p in lines:
        if len(p.get("points").split()) != 2:
            fail(f"SVG series {p.get('data-label')} has points {p.get('points')}")
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    # The title names the base config's dataset and model (ci_tiny: Fashion-MNIST, small_cnn).
    for needed in ("Fashion-MNIST, small_cnn: test error vs per-rank batch (world size 2)",
                   "per-rank batch size (log2 scale)", "test error (%)", "2", "4", "8", "bn",
                   "syncbn"):
        if needed not in texts:
            fail(f"SVG lacks the text '{needed}' (axis label, tick or legend): {texts}")
    print(f"error_vs_batch.svg: valid XML, series {labels}, axis labels, ticks and legend")


def check_png(out):
    with open(os.path.join(out, "error_vs_batch.png"), "rb") as f:
        blob = f.read()
    if blob[:8] != b"\x89PNG\r\n\x1a\n":
        fail("PNG signature")
    at, chunks, idat = 8, [], b""
    while at < len(blob):
        (length,) = struct.unpack(">I", blob[at:at + 4])
        kind, data = blob[at + 4:at + 8], blob[at + 8:at + 8 + length]
        (crc,) = struct.unpack(">I", blob[at + 8 + length:at + 12 + length])
        if zlib.crc32(kind + data) != crc:
            fail(f"PNG chunk {kind} CRC mismatch")
        chunks.append(kind)
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", data[:10])
        if kind == b"IDAT":
            idat += data
        at += 12 + length
    if chunks[0] != b"IHDR" or chunks[-1] != b"IEND":
        fail(f"PNG chunks {chunks}")
    channels = {2: 3, 6: 4}[color]
    raw = zlib.decompress(idat)
    if depth != 8 or len(raw) != height * (1 + width * channels) or width < 600:
        fail(f"PNG {width}x{height} depth {depth}: {len(raw)} bytes of pixels")
    print(f"error_vs_batch.png: {width}x{height}, chunks {[c.decode() for c in chunks]}, "
          "CRCs and zlib stream valid")


def resume(binary, tmp):
    out = os.path.join(tmp, "study")
    # Every step 30 ms slower (128 steps a run): the run in flight is surely still training
    # when the kill reaches it, on however fast a machine.
    proc = subprocess.Popen([binary, "study", "--config", TINY, "--out", out],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, SYNCBN_TEST_STEP_SLEEP_MS="30"))
    deadline = time.time() + 120
    while len(csv_rows(out)) < 1:
        if proc.poll() is not None:
            fail(f"the study ended before being killed:\n{proc.stdout.read()}")
        if time.time() > deadline:
            proc.kill()
            fail("no run finished within 120 s")
        time.sleep(0.05)
    # Kill it while the second run trains (its rank 0 has opened the metrics file).
    in_flight = os.path.join(out, "runs", RUNS[1], "metrics.jsonl")
    while not os.path.exists(in_flight) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    first_out = proc.communicate()[0]
    done = [r["run"] for r in csv_rows(out)]
    print(f"killed the study (SIGKILL) after {done} finished")
    if done != RUNS[:1]:
        fail(f"results.csv after the kill holds {done}, expected {RUNS[:1]}")
    # The run in flight dies with the study (PR_SET_PDEATHSIG on its mpirun).
    deadline = time.time() + 30
    while processes_mentioning(out):
        if time.time() > deadline:
            fail(f"processes of the killed study still run: {processes_mentioning(out)}")
        time.sleep(0.1)
    if os.path.exists(in_flight) and '"kind":"eval"' in open(in_flight).read():
        fail(f"the run in flight ({RUNS[1]}) finished after the study was killed")
    print(f"no process of the killed study is left; the run in flight ({RUNS[1]}) was stopped")
    first_log = os.path.join(out, "runs", RUNS[0], "train.log")
    first_mtime = os.stat(first_log).st_mtime_ns

    # A crash in the middle of appending a row leaves a torn last line: dropped on the rerun.
    with open(os.path.join(out, "results.csv"), "a") as f:
        f.write(RUNS[1] + ",syncbn,2,2,1")
    proc = study(binary, TINY, out)
    if "dropping a torn last line" not in proc.stdout:
        fail(f"the rerun does not drop the torn last line:\n{proc.stdout}\n{proc.stderr}")
    if proc.returncode != 0:
        fail(f"the rerun failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    ran = re.findall(r"\] (\S+): running", proc.stdout)
    skipped = re.findall(r"\] (\S+): skipped, already in results.csv", proc.stdout)
    print(f"rerun: skipped {skipped}, ran {ran}")
    if skipped != RUNS[:1] or ran != RUNS[1:]:
        fail(f"the rerun should skip {RUNS[:1]} and run {RUNS[1:]}:\n{first_out}\n{proc.stdout}")
    if "4 runs (1 already in" not in proc.stdout:
        fail(f"the rerun does not say what it skips:\n{proc.stdout}")
    if os.stat(first_log).st_mtime_ns != first_mtime:
        fail("the finished run's log was rewritten by the rerun")
    if len(re.findall(r"test error \d+\.\d\d%, \d+ img/s, SyncBN comm", proc.stdout)) != 3:
        fail(f"expected a progress line per run:\n{proc.stdout}")

    rows = check_csv(out)
    check_markdown(out, rows)
    check_svg(out)
    check_png(out)

    proc = study(binary, TINY, out)
    if proc.returncode != 0 or "running" in proc.stdout or proc.stdout.count("skipped") != 4:
        fail(f"a third run should skip all 4 runs:\n{proc.stdout}\n{proc.stderr}")
    if len(csv_rows(out)) != 4:
        fail("the third run changed results.csv")
    print("third run: all 4 skipped, nothing launched")

    # A different base config into the same directory: refused, results untouched.
    changed = os.path.join(tmp, "changed.yaml")
    with open(TINY) as f:
        text = f.read().replace("data.test_limit=200", "data.test_limit=100")
    with open(changed, "w") as f:
        f.write(text.replace("base: ci_tiny.yaml", f"base: {ROOT}/configs/ci_tiny.yaml"))
    proc = study(binary, changed, out)
    if proc.returncode == 0 or "of a different study" not in proc.stderr or "running" in proc.stdout:
        fail(f"a changed base config should be refused:\n{proc.stdout}\n{proc.stderr}")
    print("changed base config refused:", proc.stderr.strip().splitlines()[-1][:160], "...")


def errors(binary, tmp):
    base = f"base: {ROOT}/configs/ci_tiny.yaml\n"
    good = "world_size: 2\nper_rank_batch: [2]\nnorms: [bn]\nseeds: [1]\n"
    cases = [
        ("bad norm", good.replace("[bn]", "[bn, batchnorm]"),
         ["'norms'", "bn, syncbn, gn, ln, in, none", "'batchnorm'"]),
        ("empty batch list", good.replace("[2]", "[]"), ["'per_rank_batch'", "non-empty list"]),
        ("unknown key", good + "repeats: 3\n", ["unknown study key 'repeats'", "seeds"]),
    ]
    for what, body, fragments in cases:
        path = os.path.join(tmp, "bad.yaml")
        with open(path, "w") as f:
            f.write(base + body)
        out = os.path.join(tmp, "bad_out")
        proc = study(binary, path, out, timeout=30)
        if proc.returncode == 0 or any(f not in proc.stderr for f in fragments):
            fail(f"{what}: expected a non-zero exit and {fragments}:\n{proc.stdout}\n{proc.stderr}")
        if os.path.exists(out):
            fail(f"{what}: the output directory was created")
        print(f"{what}: exit {proc.returncode}: {proc.stderr.strip()}")

    # A run that fails (its data directory does not exist): the study stops, shows the log.
    path = os.path.join(tmp, "failing.yaml")
    with open(path, "w") as f:
        f.write(base + "set: [data.dir=/nonexistent/fashion-mnist, train.steps=2]\n" + good)
    out = os.path.join(tmp, "failing_out")
    proc = study(binary, path, out, timeout=120)
    if (proc.returncode != 1 or "run bn-b2-s1 failed (exit status" not in proc.stderr
            or "/nonexistent/fashion-mnist" not in proc.stderr
            or "rerun the same command" not in proc.stderr):
        fail(f"a failing run: expected exit 1, the run named and its log's tail:\n"
             f"{proc.stdout}\n{proc.stderr}")
    if csv_rows(out):
        fail("a failed run was recorded in results.csv")
    print("failing run: exit 1, stderr names the run and quotes its log:",
          [l for l in proc.stderr.splitlines() if "nonexistent" in l][0][:160])
    interrupt(binary, tmp)


def interrupt(binary, tmp):
    """SIGTERM (like Ctrl-C): the run in flight is stopped, exit 128 + 15, how to continue."""
    out = os.path.join(tmp, "interrupted")
    proc = subprocess.Popen([binary, "study", "--config", TINY, "--out", out],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    in_flight = os.path.join(out, "runs", RUNS[0], "metrics.jsonl")
    deadline = time.time() + 60
    while not os.path.exists(in_flight) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    if proc.returncode != 143 or "rerun the same command to continue" not in stderr:
        fail(f"SIGTERM: expected exit 143 and how to continue:\n{stdout}\n{stderr}")
    if processes_mentioning(out):
        fail(f"SIGTERM: processes of the study are left: {processes_mentioning(out)}")
    if csv_rows(out):
        fail("SIGTERM: the interrupted run was recorded")
    print(f"SIGTERM: exit 143, nothing left running: {stderr.strip()}")


def main():
    if len(sys.argv) != 3 or sys.argv[2] not in ("resume", "errors"):
        sys.exit(__doc__)
    binary, check = os.path.abspath(sys.argv[1]), sys.argv[2]
    with tempfile.TemporaryDirectory(prefix="syncbn-study-") as tmp:
        {"resume": resume, "errors": errors}[check](binary, tmp)
    print(f"study_e2e {check}: OK")


if __name__ == "__main__":
    main()
