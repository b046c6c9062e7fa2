"""ckptguard.torch: a drop-in for ``torch.load(path, weights_only=True)``.

    >>> import ckptguard.torch
    >>> state = ckptguard.torch.load("model.pt")
    >>> model.load_state_dict(state)

The file is read by ckptguard's restricted pickle machine: nothing in it is
imported or called, every stage is bounded, and what it may hold is exactly
what ``torch.load(weights_only=True)`` accepts (``weights_only=False`` also
loads declared data records as ckptguard.Record, still without calling
anything). Tensors share the memory-mapped file with no copy: the file is
mapped copy-on-write, so writing a tensor in place changes this process's
copy of that page only, never the file. Tensors torch would give as views of
one storage share memory here too. Works with the torch you have (tested
with Debian's torch 1.13).
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Union

import numpy as _np
import torch as _torch

import ckptguard as _ckg

__all__ = ["load"]

# Torch dtypes by ckptguard's names, for arrays of raw bits (numpy lacks them).
_RAW_DTYPES = {
    "bfloat16": "bfloat16", "complex32": "complex32", "float8_e5m2": "float8_e5m2",
    "float8_e4m3fn": "float8_e4m3fn", "qint8": "int8", "quint8": "uint8", "qint32": "int32",
}


def _torch_dtype(name: str) -> "_torch.dtype":
    dtype = getattr(_torch, _RAW_DTYPES.get(name, name), None)
    if not isinstance(dtype, _torch.dtype):
        raise _ckg.UnsupportedFormatError(f"dtype {name} does not exist in torch {_torch.__version__}",
                                          "unsupported_format")
    return dtype


class _Tensors:
    """Makes each tensor once, as torch.load would give it."""

    def __init__(self, loaded: Any, device: Optional["_torch.device"]) -> None:
        self.loaded = loaded
        self.device = device
        self.made: Dict[int, Any] = {}

    def __call__(self, index: int) -> Any:
        if index not in self.made:
            info = self.loaded.info(index)
            t = self.make(index, info)
            if self.device is not None and self.device.type != "cpu":
                t = t.to(self.device)
            if info["parameter"]:
                t = _torch.nn.Parameter(t, requires_grad=info["requires_grad"])
            elif info["requires_grad"]:
                t.requires_grad_(True)
            self.made[index] = t
        return self.made[index]

    def plain(self, index: int) -> "_torch.Tensor":
        array = self.loaded.array(index)
        name = (array.dtype.metadata or {}).get("ckptguard_dtype")
        if name is not None and "shape" in array.dtype.metadata:
            raise _ckg.UnsupportedFormatError(f"tensor of packed dtype {name}", "unsupported_format")
        if not array.dtype.isnative:
            array = array.astype(array.dtype.newbyteorder("="))  # torch has no byte order: a copy
        if array.dtype.kind == "u" and array.dtype.itemsize > 1:
            # Raw bits, or uint16/32/64 values: torch.from_numpy takes no wide
            # unsigned type, so the bits go through the signed one of their width.
            target = _torch_dtype(name if name is not None else "uint%d" % (8 * array.dtype.itemsize))
            return _torch.from_numpy(array.view("=i%d" % array.dtype.itemsize)).view(target)
        t = _torch.from_numpy(array)
        if name is not None:
            t = t.view(_torch_dtype(name))
        return t

    def make(self, index: int, info: Dict[str, Any]) -> "_torch.Tensor":
        dtype = info["dtype"]
        shape = tuple(info["shape"])
        if info["meta"]:
            return _torch.empty(shape, dtype=_torch_dtype(dtype), device="meta")
        layout = info["layout"]
        if layout == "nested":
            parts = _ckg._Arrays(self.loaded).nested_components(info)
            return _torch.nested.nested_tensor([_torch.from_numpy(_np.array(p)) for p in parts])
        if layout != "strided":
            values = self.plain(info["values"])
            if layout == "sparse_coo":
                t = _torch.sparse_coo_tensor(self.plain(info["indices"]), values, shape)
                return t._coalesced_(True) if info.get("coalesced") else t
            make = {"sparse_csr": _torch.sparse_csr_tensor, "sparse_csc": _torch.sparse_csc_tensor,
                    "sparse_bsr": getattr(_torch, "sparse_bsr_tensor", None),
                    "sparse_bsc": getattr(_torch, "sparse_bsc_tensor", None)}[layout]
            if make is None:
                raise _ckg.UnsupportedFormatError(f"layout {layout} does not exist in torch {_torch.__version__}",
                                                  "unsupported_format")
            return make(self.plain(info["indices"]), self.plain(info["plain_indices"]), values, shape)
        t = self.plain(index)
        if info["quantized"]:
            if info["qscheme"] == "per_tensor_affine":
                return _torch._make_per_tensor_quantized_tensor(t, info["scale"], info["zero_point"])
            scales = self.plain(info["scales"])
            zero_points = self.plain(info["zero_points"])
            return _torch._make_per_channel_quantized_tensor(t, scales, zero_points, info["axis"])
        return t


def load(f: Union[str, "_ckg.os.PathLike[str]"], map_location: Union[None, str, "_torch.device"] = None, *,
         weights_only: bool = True, rules: Optional[str] = None, limits: Optional[Dict[str, int]] = None) -> Any:
    """Load a checkpoint as ``torch.load(f, map_location, weights_only=True)``
    would, without running anything from it.

    ``map_location``: None or "cpu" keeps tensors on the CPU, sharing the
    mapped file; a device ("cuda:0") copies them there. ``weights_only=False``
    also loads declared data records (argparse.Namespace, dataclasses, Enum
    members, numpy RNG state...) as ckptguard.Record, calling nothing;
    ``rules`` is a rules file vouching for more globals and ``limits`` the
    file's budget by name (ckptguard.load). Raises ckptguard.Error
    (ForbiddenGlobalError for a file that would import or call anything else).
    """
    device = None if map_location is None else _torch.device(map_location)
    loaded = _ckg._open(f, rules, not weights_only, copy_on_write=True, limits=limits)
    return loaded.tree(_Tensors(loaded, device), _ckg._record, _ckg.ScriptObject, _ckg.Global, _ckg.Device)
