#!/usr/bin/env python3
"""A second, independent client of the coordinator: Debian's python3-grpcio against the real
server process (`coordinator_cli coordinator`, the code of `syncbn coordinator`), plus the CLI's
own behaviour (bound address printed, second coordinator on the same port, non-loopback without
a token, SIGTERM, `syncbn status`, restart on the same state directory).

    python_client_test.py CLI PROTO_DIR PROTOC GRPC_PYTHON_PLUGIN

Exits 77 (skipped) when the grpc module is missing.
"""
import functools
import os
import select
import signal
import subprocess
import sys
import tempfile
import time

try:
    import grpc
except ImportError:
    print("python3-grpcio is not installed: skipped")
    sys.exit(77)

CLI, PROTO_DIR, PROTOC, PLUGIN = sys.argv[1:5]
TOKEN = "py-token-0123456789abcdef"


def fnv1a(text):
    h = 1469598103934665603
    for b in text.encode():
        h = ((h ^ b) * 1099511628211) % (1 << 64)
    return h


HASH = fnv1a("seed: 1\n")  # the coordinator checks that a config hash is its YAML's


@functools.lru_cache(maxsize=64)  # pure Python is slow: each payload is checksummed once
def crc32c(data):
    """Byte-at-a-time table CRC32C, written independently of the C++ one."""
    table = crc32c.table
    crc = 0xFFFFFFFF
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc ^ 0xFFFFFFFF


crc32c.table = []  # set before the first call
for n in range(256):
    c = n
    for _ in range(8):
        c = (c >> 1) ^ (0x82F63B78 if c & 1 else 0)
    crc32c.table.append(c)
assert crc32c(b"123456789") == 0xE3069283

failures = []


def check(condition, what):
    print(("ok   " if condition else "FAIL ") + what)
    if not condition:
        failures.append(what)


def start_coordinator(args, state_dir, stderr_path):
    process = subprocess.Popen(
        [CLI, "coordinator", "--state-dir", state_dir] + args,
        stdout=subprocess.PIPE, stderr=open(stderr_path, "ab"), text=True)
    ready, _, _ = select.select([process.stdout], [], [], 20)
    line = process.stdout.readline().strip() if ready else ""
    if not line.startswith("listening on "):
        process.kill()
        raise SystemExit(f"coordinator did not start: {line!r}; see {stderr_path}")
    return process, line[len("listening on "):]


def main():
    tmp = tempfile.mkdtemp(prefix="syncbn-pyclient-")
    subprocess.run([PROTOC, "-I", PROTO_DIR, f"--python_out={tmp}", f"--grpc_python_out={tmp}",
                    f"--plugin=protoc-gen-grpc_python={PLUGIN}", "syncbn/v1/coordinator.proto"],
                   check=True)
    sys.path.insert(0, tmp)
    from syncbn.v1 import coordinator_pb2 as pb
    from syncbn.v1 import coordinator_pb2_grpc as pb_grpc

    token_file = os.path.join(tmp, "token")
    with open(token_file, "w") as f:
        f.write(TOKEN + "\n")
    os.chmod(token_file, 0o600)
    state = os.path.join(tmp, "state")
    stderr_path = os.path.join(tmp, "coordinator.stderr")
    process, address = start_coordinator(
        ["--listen", "127.0.0.1:0", "--token-file", token_file, "--keep-last", "2"], state,
        stderr_path)
    check(address.startswith("127.0.0.1:") and not address.endswith(":0"),
          f"prints the bound address ({address})")
    channel = grpc.insecure_channel(address)
    stub = pb_grpc.CoordinatorStub(channel)
    auth = [("authorization", "Bearer " + TOKEN)]

    def code_of(call, *args, **kwargs):
        try:
            call(*args, timeout=kwargs.pop("timeout", 10), **kwargs)
            return grpc.StatusCode.OK, ""
        except grpc.RpcError as e:
            return e.code(), e.details()

    def join(rank, generation=3, config_hash=HASH, metadata=auth, **fields):
        request = pb.JoinRequest(run_id="py", rank=rank, world_size=2, generation=generation,
                                 host="pyhost", pid=os.getpid(), config_yaml="seed: 1\n",
                                 config_hash=config_hash, **fields)
        return stub.Join(request, metadata=metadata, timeout=10)

    # Join and the token.
    code, _ = code_of(stub.Join, pb.JoinRequest(run_id="py"))
    check(code == grpc.StatusCode.UNAUTHENTICATED, "Join without a token: UNAUTHENTICATED")
    code, _ = code_of(stub.Join, pb.JoinRequest(run_id="py"),
                      metadata=[("authorization", "Bearer wrong-token-000000000")])
    check(code == grpc.StatusCode.UNAUTHENTICATED, "Join with a wrong token: UNAUTHENTICATED")
    first = join(0)
    second = join(1)
    check(first.config_yaml == second.config_yaml == "seed: 1\n" and
          second.config_hash == HASH and second.generation == 3, "Join returns the run's config")
    code, details = code_of(stub.Join, pb.JoinRequest(
        run_id="py", rank=1, world_size=2, generation=3, config_yaml="seed: 2\n",
        config_hash=fnv1a("seed: 2\n")), metadata=auth)
    check(code == grpc.StatusCode.FAILED_PRECONDITION and "config hash" in details,
          f"Join with another config hash: FAILED_PRECONDITION ({details})")

    # Heartbeat and metrics.
    stub.Heartbeat(pb.HeartbeatRequest(run_id="py", rank=1, generation=3, step=7),
                   metadata=auth, timeout=10)
    stub.ReportMetrics(pb.ReportMetricsRequest(run_id="py", rank=0, generation=3, step=7,
                                               metrics=[pb.Metric(name="loss", value=0.5)]),
                       metadata=auth, timeout=10)
    code, details = code_of(stub.Heartbeat, pb.HeartbeatRequest(
        run_id="py", rank=0, generation=2, step=7), metadata=auth)
    check(code == grpc.StatusCode.FAILED_PRECONDITION, f"stale heartbeat refused ({details})")

    # PutCheckpoint in 2 MiB chunks.
    data = os.urandom((2 << 20) + (1 << 19) + 5)
    chunk_size = 2 << 20

    def messages(payload, step, offsets=None, crc_override=None, commit=True):
        offsets = offsets or range(0, len(payload), chunk_size)
        for offset in offsets:
            piece = payload[offset:offset + chunk_size]
            yield pb.PutCheckpointRequest(chunk=pb.CheckpointChunk(
                offset=offset, data=piece, crc32c=crc32c(piece)))
        if commit:
            yield pb.PutCheckpointRequest(commit=pb.CheckpointCommit(
                run_id="py", step=step, generation=3, config_hash=HASH, world_size=2,
                format_version=1, size_bytes=len(payload),
                crc32c=crc_override if crc_override is not None else crc32c(payload)))

    response = stub.PutCheckpoint(messages(data, 50), metadata=auth, timeout=30)
    check(response.checkpoint.step == 50 and response.checkpoint.size_bytes == len(data) and
          response.checkpoint.crc32c == crc32c(data), "PutCheckpoint commits")
    code, _ = code_of(stub.PutCheckpoint, messages(data, 60, offsets=[0, chunk_size + 1]),
                      metadata=auth)
    check(code == grpc.StatusCode.INVALID_ARGUMENT, "chunk gap: INVALID_ARGUMENT")
    code, _ = code_of(stub.PutCheckpoint, messages(data, 60, crc_override=1), metadata=auth)
    check(code == grpc.StatusCode.DATA_LOSS, "whole checksum mismatch: DATA_LOSS")
    code, _ = code_of(stub.PutCheckpoint, messages(data, 60, commit=False), metadata=auth)
    check(code == grpc.StatusCode.INVALID_ARGUMENT, "stream ended early: INVALID_ARGUMENT")
    code, _ = code_of(stub.PutCheckpoint, messages(data, 50), metadata=auth)
    check(code == grpc.StatusCode.ALREADY_EXISTS, "duplicate step: ALREADY_EXISTS")
    code, _ = code_of(stub.Join, pb.JoinRequest(run_id="../py", rank=0, world_size=1,
                                                config_yaml="x", config_hash=1), metadata=auth)
    check(code == grpc.StatusCode.INVALID_ARGUMENT, "run id with ../: INVALID_ARGUMENT")
    code, _ = code_of(stub.Join, pb.JoinRequest(run_id="py", config_yaml="y" * (5 << 20)),
                      metadata=auth)
    check(code == grpc.StatusCode.RESOURCE_EXHAUSTED, "oversized message: RESOURCE_EXHAUSTED")
    code, _ = code_of(stub.GetRunStatus, pb.GetRunStatusRequest(), metadata=auth,
                      timeout=-1)  # a deadline already in the past
    check(code == grpc.StatusCode.DEADLINE_EXCEEDED, "expired deadline: DEADLINE_EXCEEDED")
    small = b"second checkpoint"
    stub.PutCheckpoint(messages(small, 60), metadata=auth, timeout=30)

    # GetCheckpoint, newest and by step.
    def get(step=None):
        request = pb.GetCheckpointRequest(run_id="py")
        if step is not None:
            request.step = step
        stream = list(stub.GetCheckpoint(request, metadata=auth, timeout=30))
        info = stream[0].info
        payload = b""
        for message in stream[1:]:
            assert message.chunk.offset == len(payload)
            assert crc32c(message.chunk.data) == message.chunk.crc32c
            payload += message.chunk.data
        return info, payload

    info, payload = get()
    check(info.step == 60 and payload == small and crc32c(payload) == info.crc32c,
          "GetCheckpoint serves the newest")
    info, payload = get(50)
    check(info.step == 50 and payload == data, "GetCheckpoint serves a given step")
    code, _ = code_of(lambda *a, **k: list(stub.GetCheckpoint(*a, **k)),
                      pb.GetCheckpointRequest(run_id="py", step=55), metadata=auth)
    check(code == grpc.StatusCode.NOT_FOUND, "GetCheckpoint of a missing step: NOT_FOUND")
    listed = stub.ListCheckpoints(pb.ListCheckpointsRequest(run_id="py"), metadata=auth,
                                  timeout=10)
    check([c.step for c in listed.checkpoints] == [60, 50], "ListCheckpoints newest first")
    status = stub.GetRunStatus(pb.GetRunStatusRequest(run_id="py"), metadata=auth, timeout=10)
    run = status.runs[0]
    check(run.generation == 3 and len(run.ranks) == 2 and run.ranks[1].last_step == 7 and
          run.newest_checkpoint.step == 60 and run.recent_metrics[0].metrics[0].name == "loss",
          "GetRunStatus")

    # Health (no token) and reflection, as raw calls: no generated stubs needed.
    health = channel.unary_unary("/grpc.health.v1.Health/Check",
                                 request_serializer=lambda b: b,
                                 response_deserializer=lambda b: b)
    check(health(b"", timeout=10) == b"\x08\x01", "health check SERVING without a token")
    reflection = channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        request_serializer=lambda b: b, response_deserializer=lambda b: b)
    replies = b"".join(reflection(iter([b"\x3a\x00"]), timeout=10))  # list_services: ""
    check(b"syncbn.v1.Coordinator" in replies, "server reflection lists syncbn.v1.Coordinator")

    # `syncbn status`.
    shown = subprocess.run([CLI, "status", "--coordinator", address, "--run", "py",
                            "--token-file", token_file], capture_output=True, text=True,
                           timeout=30)
    check(shown.returncode == 0 and "run py: generation 3, world size 2" in shown.stdout and
          "newest checkpoint: step 60" in shown.stdout and "pyhost" in shown.stdout and
          "loss 0.5" in shown.stdout, "syncbn status prints the run:\n" + shown.stdout)
    shown = subprocess.run([CLI, "status", "--coordinator", address], capture_output=True,
                           text=True, timeout=30)
    check(shown.returncode == 1 and "UNAUTHENTICATED" in shown.stderr,
          "syncbn status without the token fails: " + shown.stderr.strip())

    # A second coordinator on the same port, and a public address without a token.
    second = subprocess.run([CLI, "coordinator", "--listen", address, "--state-dir",
                             os.path.join(tmp, "state2"), "--token-file", token_file],
                            capture_output=True, text=True, timeout=30)
    check(second.returncode == 1 and f"cannot listen on '{address}'" in second.stderr,
          "second coordinator on the same port fails: " + second.stderr.strip()[-200:])
    public = subprocess.run([CLI, "coordinator", "--listen", "0.0.0.0:0", "--state-dir",
                             os.path.join(tmp, "state3")], capture_output=True, text=True,
                            timeout=30)
    check(public.returncode == 1 and "requires --token-file" in public.stderr,
          "non-loopback address without a token file fails: " + public.stderr.strip())

    # SIGTERM stops it cleanly; a restart on the same state serves the same checkpoints and
    # still refuses the stale generation.
    process.send_signal(signal.SIGTERM)
    check(process.wait(timeout=15) == 0, "SIGTERM: exit 0")
    channel.close()
    process, address = start_coordinator(["--token-file", token_file], state, stderr_path)
    channel = grpc.insecure_channel(address)
    stub = pb_grpc.CoordinatorStub(channel)
    info, payload = get()
    check(info.step == 60 and payload == small, "after a restart the newest checkpoint is served")
    code, _ = code_of(stub.Join, pb.JoinRequest(run_id="py", rank=0, world_size=2, generation=2,
                                                config_yaml="seed: 1\n", config_hash=HASH),
                      metadata=auth)
    check(code == grpc.StatusCode.FAILED_PRECONDITION,
          "after a restart a stale generation is still refused")
    process.send_signal(signal.SIGINT)
    check(process.wait(timeout=15) == 0, "SIGINT: exit 0")
    channel.close()

    with open(stderr_path) as f:
        log = f.read()
    check(TOKEN not in log, "the token never appears in the coordinator's output")
    if failures:
        print(f"{len(failures)} check(s) failed; coordinator log:\n{log}")
        sys.exit(1)
    subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()
