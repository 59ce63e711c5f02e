#!/usr/bin/python3
"""PyTorch 1.13 side of model_torch_test: runs the model syncbn printed (`syncbn model --torch`)
on the weights and inputs syncbn wrote, in float64, and writes what it computed.

  model_reference.py MODE CODE_FILE WEIGHTS_FILE INPUTS_FILE OUT_FILE
  model_reference.py --jobs FILE    one job per line of FILE: MODE CODE_FILE WEIGHTS_FILE
                                    INPUTS_FILE OUT_FILE (one interpreter start for all)

CODE_FILE     torch_module_code(): a program ending in `model = SyncbnModel()`
WEIGHTS_FILE  our state dict (safetensors); loaded with load_state_dict(strict=True), which
              fails on any missing, unexpected or mis-shaped name
INPUTS_FILE   x (N, C, H, W) float32, labels (N) int64
MODE grad     a training-mode forward, loss = mean cross-entropy, backward; writes loss (1),
              logits, grad.NAME for every parameter and the running statistics after the step
MODE eval     an eval-mode forward; writes logits

safetensors is read and written by tests/common/torch_ref.py, independently of syncbn's C++
code. Outputs are float64 results rounded to float32.
"""
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
from torch_ref import read_safetensors, write_safetensors  # noqa: E402


def run(mode, code_file, weights_file, inputs_file, out_file):
    scope = {}
    with open(code_file) as f:
        exec(compile(f.read(), code_file, "exec"), scope)  # pylint: disable=exec-used
    model = scope["model"]
    state, _ = read_safetensors(weights_file)
    model.load_state_dict(state, strict=True)
    model = model.double()
    inputs, _ = read_safetensors(inputs_file)
    x = inputs["x"].double()
    out = {}
    if mode == "eval":
        model.eval()
        with torch.no_grad():
            out["logits"] = model(x)
    elif mode == "grad":
        model.train()
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits, inputs["labels"])
        loss.backward()
        out["loss"] = loss.reshape(1)
        out["logits"] = logits
        for name, p in model.named_parameters():
            out["grad." + name] = p.grad
        for name, b in model.named_buffers():
            out["buffer." + name] = b
    else:
        sys.exit("unknown mode " + mode)
    write_safetensors(out_file, {name: t.detach().float() if t.is_floating_point() else t
                                 for name, t in out.items()})


def main():
    if sys.argv[1] == "--jobs":
        with open(sys.argv[2]) as f:
            for line in f:
                if line.strip():
                    run(*line.split())
    else:
        run(*sys.argv[1:6])


if __name__ == "__main__":
    main()
