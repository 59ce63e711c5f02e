#!/usr/bin/python3
"""safetensors interop with PyTorch 1.13, for torch_interop_test.

The format is read and written by tests/common/torch_ref.py, independently of syncbn's C++ code:

  check MODEL_FILE VALUES_FILE   load MODEL_FILE into torch.nn.Sequential(Conv2d(2, 4, 3),
                                 BatchNorm2d(4)) with load_state_dict(strict=True) and compare
                                 every tensor, dtype included, with VALUES_FILE
  write MODEL_FILE VALUES_FILE   write such a model's state dict (after two training steps, so
                                 the running stats are not the defaults) and its values

VALUES_FILE lines: name dtype v1 v2 ... (floats as repr of the float32 value, exact).
"""
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
from torch_ref import DTYPES, NAMES, read_safetensors, write_safetensors  # noqa: E402


def make_model():
    return torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.BatchNorm2d(4))


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
