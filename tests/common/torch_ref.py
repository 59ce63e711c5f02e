"""safetensors for the PyTorch 1.13 side of the tests, and the reference-case files built on it.

The format is read and written here with struct + json (Debian has no python3-safetensors),
independently of syncbn's C++ code: an 8-byte little-endian header length, a JSON header
{"__metadata__": {str: str}, name: {"dtype", "shape", "data_offsets"}}, then the row-major
little-endian data. Dtypes: F32, F64, I64.

A reference-case file (CaseWriter; read by tests/common/torch_reference.h) is a safetensors file
holding named cases, each with string attributes and arrays:

    __metadata__  "cases": the case ids in order, comma-separated; "producer": the script;
                  "ID/KEY": attribute KEY of case ID
    tensors       "ID/NAME": array NAME of case ID (float32 inputs as F32, float64 references as
                  F64, integers as I64), in logical row-major order

Case ids contain no "/" or ",".
"""
import json
import os
import struct

import numpy as np
import torch

DTYPES = {"F32": torch.float32, "F64": torch.float64, "I64": torch.int64}
NAMES = {v: k for k, v in DTYPES.items()}


def read_safetensors(path):
    """(tensors by name, metadata) of a safetensors file."""
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
        dtype = DTYPES[info["dtype"]]
        t = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        tensors[name] = t.reshape(info["shape"])
    return tensors, metadata


def write_safetensors(path, tensors, metadata=None):
    """Writes torch tensors or numpy arrays (float32, float64, int64) in name order, through a
    temporary file, so that a reader never finds half a file under `path`."""
    header = {"__metadata__": metadata} if metadata is not None else {}
    chunks, offset = [], 0
    for name in sorted(tensors):
        t = torch.as_tensor(tensors[name]).detach().contiguous()
        raw = t.numpy().tobytes()
        header[name] = {"dtype": NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode("utf-8")  # ensure_ascii: non-ASCII as \u escapes
    text += b" " * (-len(text) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(chunks))
    os.replace(tmp, path)


def attr_string(value):
    """An attribute as text: bools as 1/0, lists as comma-separated items, floats as their repr
    (which reads back as the same double)."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return repr(value) if isinstance(value, float) else str(value)


class CaseWriter:
    """Collects reference cases and writes them as one safetensors file (see the module doc)."""

    def __init__(self, producer):
        self.ids = []
        self.metadata = {"producer": producer}
        self.tensors = {}

    def add(self, case_id, attrs, arrays):
        """attrs: key -> value (see attr_string); arrays: name -> torch tensor or numpy array,
        float32, float64 or an integer type (stored as int64)."""
        assert "/" not in case_id and "," not in case_id and case_id not in self.ids, case_id
        self.ids.append(case_id)
        for key, value in attrs.items():
            self.metadata["%s/%s" % (case_id, key)] = attr_string(value)
        for name, value in arrays.items():
            if isinstance(value, torch.Tensor):
                value = value.detach().contiguous().numpy()
            # A copy: a module's buffers change in place after they are added.
            value = np.array(value, order="C", copy=True)
            if value.dtype.kind in "iu":
                value = value.astype(np.int64)
            assert value.dtype in (np.float32, np.float64, np.int64), (case_id, name, value.dtype)
            self.tensors["%s/%s" % (case_id, name)] = value

    def write(self, path):
        write_safetensors(path, self.tensors, dict(self.metadata, cases=",".join(self.ids)))
