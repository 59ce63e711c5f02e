#!/usr/bin/python3
"""safetensors interop with PyTorch 1.13, for torch_interop_test.

The format is read and written here with struct + json, independently of syncbn's C++ code
(Debian has no python3-safetensors):

  check MODEL_FILE VALUES_FILE   load MODEL_FILE into torch.nn.Sequential(Conv2d(2, 4, 3),
                                 BatchNorm2d(4)) with load_state_dict(strict=True) and compare
                                 every tensor, dtype included, with VALUES_FILE
  write MODEL_FILE VALUES_FILE   write such a model's state dict (after two training steps, so
                                 the running stats are not the defaults) and its values

VALUES_FILE lines: name dtype v1 v2 ... (floats as repr of the float32 value, exact).
"""
import json
import struct
import sys

import torch

DTYPES = {"F32": torch.float32, "I64": torch.int64}
NAMES = {v: k for k, v in DTYPES.items()}


def make_model():
    return torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.BatchNorm2d(4))


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    data = blob[8 + n:]
    metadata = header.pop("__metadata__", {})
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        raw = bytearray(data[begin:end])
        t = torch.frombuffer(raw, dtype=DTYPES[info["dtype"]]) if raw else torch.empty(
            0, dtype=DTYPES[info["dtype"]])
        tensors[name] = t.reshape(info["shape"])
    return tensors, metadata


def write_safetensors(path, tensors, metadata):
    header = {"__metadata__": metadata}
    chunks, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        raw = t.numpy().tobytes()
        header[name] = {"dtype": NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode("utf-8")  # ensure_ascii: non-ASCII as \u escapes
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(chunks))


def read_values(path):
    out = {}
    with open(path) as f:
        for line in f:
            name, dtype, *values = line.split()
            out[name] = (dtype, values)
    return out


def check(model_file, values_file):
    tensors, metadata = read_safetensors(model_file)
    assert metadata == {"format": "pt", "producer": "syncbn \u2713"}, metadata
    model = make_model()
    model.load_state_dict(tensors, strict=True)
    expected = read_values(values_file)
    state = model.state_dict()
    assert sorted(state) == sorted(expected), (sorted(state), sorted(expected))
    for name, value in state.items():
        dtype, values = expected[name]
        assert tensors[name].dtype == value.dtype == DTYPES[dtype], (name, tensors[name].dtype)
        assert tensors[name].shape == value.shape, (name, tensors[name].shape, value.shape)
        want = torch.tensor([float(v) if dtype == "F32" else int(v) for v in values],
                            dtype=value.dtype)
        assert torch.equal(value.flatten(), want), (name, value.flatten(), want)
    # The loaded BN uses the file's running stats in eval: a property of the values, not names.
    x = torch.randn(3, 2, 5, 5)
    model.eval()
    bn = model[1]
    conv_out = model[0](x)
    want = (conv_out - bn.running_mean[None, :, None, None]) / torch.sqrt(
        bn.running_var[None, :, None, None] + bn.eps) * bn.weight[None, :, None, None] + \
        bn.bias[None, :, None, None]
    assert torch.allclose(model(x), want, atol=1e-5)
    print("check ok:", len(state), "tensors")


def write(model_file, values_file):
    torch.manual_seed(0)
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(8, 2, 6, 6)).square().mean().backward()
        opt.step()
    state = model.state_dict()
    assert int(state["1.num_batches_tracked"]) == 2
    write_safetensors(model_file, state, {"format": "pt", "note": "gr\u00f6\u00dfe \u2713"})
    with open(values_file, "w") as f:
        for name, t in state.items():
            values = t.flatten().tolist()
            f.write(" ".join([name, NAMES[t.dtype]] + [repr(v) for v in values]) + "\n")
    print("write ok:", len(state), "tensors")


if __name__ == "__main__":
    {"check": check, "write": write}[sys.argv[1]](sys.argv[2], sys.argv[3])
