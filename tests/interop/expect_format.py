"""The `.expect.json` format of tests/data/corpus (see gen_benign.py there), as a module.

`expect_json(obj, kind, file=None)` returns the dict the corpus writes for a checkpoint whose
top object is `obj`: {"file", "kind", "torch_version", "tensors", "skeleton"}. Write it with
`json.dump(..., indent=1, sort_keys=True)` (what `dump_expect` does) to match the corpus files.

Rules (copied from gen_benign.py, keep them in step):
- tensors: dotted key path -> dtype, shape, stride, storage_offset, parameter, sha256 of the
  elements in C order, little-endian (bool as one byte, bfloat16 as its 16 bits);
- skeleton: dict and OrderedDict -> {"__dict__": [[k, v], ...]}, list -> {"__list__": [...]},
  tuple -> {"__tuple__": [...]}, bytes -> {"__bytes__": hex}, nan/inf -> {"__float__": repr},
  int with |i| >= 2**53 -> {"__bigint__": str}, tensors -> "<tensor>".
"""
import hashlib
import json
import math

import numpy as np
import torch
from torch import nn


def tensor_digest(t):
    t = t.detach()
    if t.is_quantized:
        t = t.int_repr()
    a = t.contiguous().cpu()
    if a.dtype == torch.bfloat16:
        raw = a.view(torch.int16).numpy().astype("<i2").tobytes()
    elif a.dtype == torch.bool:
        raw = a.numpy().astype(np.uint8).tobytes()
    else:
        arr = a.numpy()
        raw = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
    return hashlib.sha256(raw).hexdigest()


def describe(obj, path, out):
    if isinstance(obj, torch.Tensor):
        if obj.is_sparse:
            out[path] = {"dtype": str(obj.dtype).replace("torch.", ""), "shape": list(obj.shape), "layout": "sparse_coo"}
            return
        out[path] = {
            "dtype": str(obj.dtype).replace("torch.", ""),
            "shape": list(obj.shape),
            "stride": list(obj.stride()),
            "storage_offset": obj.storage_offset(),
            "sha256": tensor_digest(obj),
            "parameter": isinstance(obj, nn.Parameter),
        }
    elif isinstance(obj, dict):
        for k, v in obj.items():
            describe(v, f"{path}.{k}" if path else str(k), out)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            describe(v, f"{path}.{i}" if path else str(i), out)


def plain(obj):
    """The non-tensor skeleton of obj, for checking containers and scalars."""
    if isinstance(obj, torch.Tensor):
        return "<tensor>"
    if isinstance(obj, dict):
        return {"__dict__": [[plain(k), plain(v)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {("__tuple__" if isinstance(obj, tuple) else "__list__"): [plain(v) for v in obj]}
    if isinstance(obj, float) and not math.isfinite(obj):
        return {"__float__": repr(obj)}
    if isinstance(obj, bytes):
        return {"__bytes__": obj.hex()}
    if isinstance(obj, int) and not isinstance(obj, bool) and abs(obj) >= 2**53:
        return {"__bigint__": str(obj)}
    return obj


def expect_json(obj, kind, file=None):
    """The expect dict for a checkpoint holding `obj` (kind: "torch-zip", "torch-legacy", ...)."""
    tensors = {}
    describe(obj, "", tensors)
    out = {"kind": kind, "torch_version": torch.__version__, "tensors": tensors, "skeleton": plain(obj)}
    if file is not None:
        out["file"] = file
    return out


def dumps_expect(expect):
    """Serialised exactly as the corpus writes it."""
    return json.dumps(expect, indent=1, sort_keys=True)


def dump_expect(expect, path):
    with open(path, "w") as f:
        f.write(dumps_expect(expect))
