"""ckptguard: load and scan PyTorch checkpoints without running them.

A PyTorch checkpoint is a pickle, and ``torch.load`` of an untrusted file can
run any code. ckptguard reads it with a restricted pickle machine written in
C++ that never imports or calls anything from the file:

    >>> import ckptguard
    >>> weights = ckptguard.load("model.pt")          # {"fc.weight": ndarray, ...}
    >>> ckpt = ckptguard.load_checkpoint("last.ckpt")  # the whole object tree
    >>> report = ckptguard.scan(["downloads/"])         # what the files would run
    >>> import ckptguard.torch                          # torch.load(weights_only=True), safer
    >>> state = ckptguard.torch.load("model.pt")

Arrays are read-only views of the memory-mapped file (no copy); the mapping
lives as long as any array does. Every failure raises ckptguard.Error (or a
subclass) with the error code, file, entry inside the file, byte offset and,
for a limit, its name.
"""
from __future__ import annotations

import collections
import json
import os
from typing import Any, Dict, Iterable, List, Optional, Union

from . import _core

__all__ = [
    "Error", "ForbiddenGlobalError", "LimitExceededError", "MalformedError", "UnsupportedFormatError",
    "Record", "ScriptObject", "Global", "Device", "SparseTensor", "NestedTensor", "MetaTensor",
    "check", "convert", "load", "load_checkpoint", "save_safetensors", "scan",
]

PathLike = Union[str, "os.PathLike[str]"]


class Error(Exception):
    """A file ckptguard refuses or cannot read.

    Attributes: ``code`` ("forbidden_global", "malformed", "truncated",
    "limit_exceeded", "unsupported_format", "io", ...), ``file``, ``entry`` (the
    member of an archive, e.g. "archive/data.pkl"; "" when none), ``offset``
    (the byte offset in the file) and ``limit`` (the limit's name when
    ``code`` is "limit_exceeded", else "").
    """

    def __init__(self, message: str, code: str = "", file: str = "", entry: str = "", offset: int = 0,
                 limit: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.file = file
        self.entry = entry
        self.offset = offset
        self.limit = limit

    def __new__(cls, message: str = "", code: str = "", *args: Any, **kwargs: Any) -> "Error":
        # The C++ core raises Error(...): pick the subclass of its code.
        if cls is Error:
            cls = _ERROR_CLASSES.get(code, Error)
        return super().__new__(cls)

    def __str__(self) -> str:
        where = self.file
        return f"{where}: {self.args[0]}" if where and not self.args[0].startswith(where) else str(self.args[0])


class ForbiddenGlobalError(Error):
    """The file imports or calls something that is not pure data (code "forbidden_global")."""


class LimitExceededError(Error):
    """A limit of the per-file budget was reached (code "limit_exceeded"; ``limit`` names it)."""


class MalformedError(Error):
    """The file is damaged or not what its format says (codes "malformed" and "truncated")."""


class UnsupportedFormatError(Error):
    """Known content this API does not turn into arrays (code "unsupported_format")."""


_ERROR_CLASSES = {
    "forbidden_global": ForbiddenGlobalError,
    "limit_exceeded": LimitExceededError,
    "malformed": MalformedError,
    "truncated": MalformedError,
    "unsupported_format": UnsupportedFormatError,
}
_core._set_error_class(Error)


class Record:
    """What a call of a declared data class would have built, built without calling it.

    ``cls`` is the dotted class name ("argparse.Namespace"), ``form`` how the
    pickle made it ("call", "new" or "member"), ``args`` the arguments and
    ``state`` the attributes pickle's BUILD gave it (a dict).
    """

    __slots__ = ("cls", "form", "args", "state")

    def __init__(self, cls: str, form: str, args: list, state: dict) -> None:
        self.cls, self.form, self.args, self.state = cls, form, args, state

    def __repr__(self) -> str:
        return f"Record({self.cls!r}, form={self.form!r}, args={self.args!r}, state={self.state!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Record) and (self.cls, self.form, self.args, self.state) == (
            other.cls, other.form, other.args, other.state)

    __hash__ = None  # type: ignore[assignment]


class ScriptObject:
    """A TorchScript object's attributes (``cls`` its class name); its code is never run."""

    __slots__ = ("cls", "attrs")

    def __init__(self, cls: str, attrs: dict) -> None:
        self.cls, self.attrs = cls, attrs

    def __repr__(self) -> str:
        return f"ScriptObject({self.cls!r}, {self.attrs!r})"


class Global(str):
    """An allowlisted global the file names as a value ("torch.float32", "collections.OrderedDict")."""

    def __repr__(self) -> str:
        return f"Global({str.__repr__(self)})"


class Device(str):
    """A torch.device as written ("cpu", "cuda:0"); data is always read to host memory."""

    def __repr__(self) -> str:
        return f"Device({str.__repr__(self)})"


SparseTensor = collections.namedtuple("SparseTensor", "layout shape dtype indices plain_indices values coalesced")
SparseTensor.__doc__ = """A sparse tensor as its components (numpy arrays): layout "sparse_coo",
"sparse_csr", "sparse_csc", "sparse_bsr" or "sparse_bsc"; COO has indices and
values (plain_indices None), compressed layouts crow/ccol indices, plain
indices and values, as torch's accessors give them."""
NestedTensor = collections.namedtuple("NestedTensor", "dtype components")
NestedTensor.__doc__ = "A nested tensor as the list of its component arrays."
MetaTensor = collections.namedtuple("MetaTensor", "dtype shape")
MetaTensor.__doc__ = "A tensor on torch's meta device: dtype name and shape, no data."


def _fspath(path: PathLike) -> str:
    return os.fspath(path)


def _open(path: PathLike, rules: Optional[PathLike], records: bool, copy_on_write: bool = False,
          limits: Optional[Dict[str, int]] = None) -> Any:
    return _core.load(_fspath(path), None if rules is None else _fspath(rules), records, copy_on_write,
                      dict(limits or {}))


class _Arrays:
    """Makes each tensor's Python object once (shared tensors stay shared)."""

    def __init__(self, loaded: Any) -> None:
        self.loaded = loaded
        self.made: Dict[int, Any] = {}

    def __call__(self, index: int) -> Any:
        if index not in self.made:
            self.made[index] = self.make(index)
        return self.made[index]

    def make(self, index: int) -> Any:
        info = self.loaded.info(index)
        layout = info["layout"]
        if info["meta"]:
            return MetaTensor(info["dtype"], tuple(info["shape"]))
        if layout == "nested":
            return NestedTensor(info["dtype"], self.nested_components(info))
        if layout != "strided":
            return SparseTensor(layout, tuple(info["shape"]), info["dtype"], self(info["indices"]),
                                None if layout == "sparse_coo" else self(info["plain_indices"]), self(info["values"]),
                                info.get("coalesced"))
        return self.loaded.array(index)

    def nested_components(self, info: dict) -> List[Any]:
        import numpy as np
        buffer, sizes, strides, offsets = (self(info[k]) for k in ("buffer", "sizes", "strides", "offsets"))
        unit = buffer.itemsize
        out = []
        for i in range(len(offsets)):
            out.append(np.lib.stride_tricks.as_strided(
                buffer[int(offsets[i]):], shape=tuple(int(x) for x in sizes[i]),
                strides=tuple(int(x) * unit for x in strides[i]), writeable=False))
        return out


def load(path: PathLike, *, prefix: Optional[str] = None, rules: Optional[PathLike] = None,
         limits: Optional[Dict[str, int]] = None, weights_only: bool = False) -> Dict[str, Any]:
    """Load the tensors of a checkpoint as ``{dotted name: numpy array}``.

    Reads torch zip checkpoints (``.pt``, ``.pth``, ``.bin``, ``.ckpt``), legacy
    torch files, TorchScript archives' tensors, safetensors, ``.npy``/``.npz`` and
    pickles, without running anything from the file. ``prefix`` selects a
    sub-dict ("model", "state_dict"); names are then relative to it.

    Each array is a read-only view of the memory-mapped file (no copy): the
    mapping lives as long as any array does. Values whose bytes differ from
    the file (torch's conjugate or negative bit, elements packed below a
    byte) are copies. A dtype numpy lacks (bfloat16, float8_*, ...) comes back
    as unsigned integers of its width holding its raw bits, with the torch
    name in ``array.dtype.metadata["ckptguard_dtype"]`` (never converted).
    Sparse, nested and meta tensors come back as SparseTensor, NestedTensor
    and MetaTensor.

    ``rules`` is a rules file (TOML) vouching for more globals, as the CLI's
    ``--rules``; ``weights_only=True`` refuses declared records too, as
    ``torch.load(weights_only=True)`` does. ``limits`` changes the file's
    budget, by name: ``{"max_opcodes": 10**6, "max_inflated_bytes": 2**30,
    ...}`` (every stage charges it; the defaults pass the largest real
    checkpoints). Raises Error (LimitExceededError names the limit).
    """
    loaded = _open(path, rules, not weights_only, limits=limits)
    arrays = _Arrays(loaded)
    return {name: arrays(index) for name, index in loaded.state_dict(prefix or "")}


def load_checkpoint(path: PathLike, *, rules: Optional[PathLike] = None, limits: Optional[Dict[str, int]] = None,
                    weights_only: bool = False) -> Any:
    """Load a whole checkpoint's object tree: dicts (OrderedDicts with their
    ``_metadata``), lists, tuples, sets, str, bytes, numbers, None, numpy
    arrays for tensors (as ``load`` makes them), Record for declared data
    classes (argparse.Namespace, dataclasses, Enum members, paths...),
    Global for allowlisted names, Device for torch devices.

    A training checkpoint (model, optimizer, scheduler, epoch, RNG state,
    hyper-parameters) loads completely; nothing is imported or called. Shared
    and cyclic lists and dicts stay shared. ``rules`` and ``limits`` as for
    ``load``. Raises Error.
    """
    loaded = _open(path, rules, not weights_only, limits=limits)
    return loaded.tree(_Arrays(loaded), _record, ScriptObject, Global, Device)


def _record(cls: str, form: str, args: list, state: list) -> Record:
    return Record(cls, form, args, dict(zip(state[0::2], state[1::2])))


def _tensor_bytes(name: str, value: Any) -> tuple:
    """(name, dtype, shape, C-order little-endian buffer) of an array or a
    torch tensor: the dtype is a torch dtype name, or the array's numpy dtype
    (the core maps it as the loader does)."""
    import numpy as np
    if type(value).__module__.startswith("torch"):
        import torch
        if value.is_quantized or value.layout != torch.strided or value.device.type == "meta":
            raise UnsupportedFormatError(f"{name}: a tensor without plain data has no safetensors form",
                                         "unsupported_format")
        t = value.detach().cpu().contiguous()
        dtype = str(t.dtype).replace("torch.", "")
        wide = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}.get(t.element_size())
        array = (t.view(wide) if dtype in ("bfloat16", "complex32") or dtype.startswith("float8") else t).numpy()
        return name, dtype, list(t.shape), np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name}: not a numpy array or torch tensor: {type(value).__name__}")
    meta = value.dtype.metadata or {}
    if "shape" in meta:
        raise UnsupportedFormatError(f"{name}: packed {meta['ckptguard_dtype']} values", "unsupported_format")
    if value.dtype.hasobject:  # (Python objects have no bytes to write)
        raise UnsupportedFormatError(f"{name}: numpy dtype {value.dtype} has no safetensors form", "unsupported_format")
    a = np.ascontiguousarray(value)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    return name, meta.get("ckptguard_dtype") or a.dtype, list(a.shape), a.reshape(-1).view(np.uint8)


def save_safetensors(tensors: Dict[str, Any], path: PathLike, *, metadata: Optional[Dict[str, str]] = None) -> None:
    """Write ``{name: numpy array or torch tensor}`` as a safetensors file, in
    the reference implementation's layout, atomically: the file is written
    beside its destination, read back with the strict reader and compared,
    and only then renamed over ``path``. Arrays of raw bits from ``load``
    keep their torch dtype (bfloat16 stays BF16). Raises Error.
    """
    items = [_tensor_bytes(name, value) for name, value in tensors.items()]
    _core.save_safetensors(_fspath(path), items, dict(metadata or {}))


def convert(src: PathLike, dst: PathLike, *, to: Optional[str] = None, prefix: Optional[str] = None,
            keep_metadata: bool = False, limits: Optional[Dict[str, int]] = None) -> Dict[str, Any]:
    """Convert a checkpoint as ``ckptguard convert SRC DST`` does, running
    nothing from it: to safetensors (``dst`` ends in .safetensors, or
    ``to="safetensors"``) or to a torch zip checkpoint (.pt/.pth/.bin/.ckpt, or
    ``to="pt"``). ``src`` may be a checkpoint file, a sharded checkpoint's
    ``*.index.json`` or a torch.distributed.checkpoint folder (both to
    safetensors). ``prefix`` converts only a sub-dict ("model");
    ``keep_metadata`` keeps plain values as JSON in safetensors' __metadata__
    instead of refusing them. Written atomically and read back before the
    rename. Returns ``{"format", "tensors", "aliases", "values"}``; raises Error.
    """
    return _core.convert(_fspath(src), _fspath(dst), to, prefix or "", keep_metadata, dict(limits or {}))


def check(path: PathLike, expect: PathLike, *, prefix: Optional[str] = None, strict: bool = True,
          strip_prefix: Optional[str] = None) -> Dict[str, Any]:
    """What ``model.load_state_dict(state_dict, strict=strict)`` would do with
    the checkpoint's state dict (at ``prefix``; ``path`` may also be a sharded
    checkpoint's ``*.index.json`` or a DCP folder), for the model ``expect``
    describes: a reference checkpoint of it or a JSON schema (key -> dtype and
    shape, optional ``_metadata``), as ``ckptguard check`` replays torch 1.13's
    loading, hooks of torch's own modules included; nothing is run.

    Returns ``{"ok", "missing", "unexpected", "mismatched": [{"key", "kind",
    "detail"}], "converted", "ignored", "filled", "loaded", "caveats",
    "hints", "strict_raises", "non_strict_raises": None or {"type",
    "message"} (what torch would raise), ...}``. Raises Error when a file
    cannot be loaded.
    """
    return _core.check(_fspath(path), _fspath(expect), prefix or "", strict, strip_prefix)


def scan(paths: Union[PathLike, Iterable[PathLike]]) -> Dict[str, Any]:
    """Scan files (folders: every file in them, recursively) for what loading
    them would run, as ``ckptguard scan --format json`` reports it:
    ``{"files": [{"path", "verdict", "findings": [...], ...}], ...}`` with
    verdicts "safe", "suspicious", "dangerous" or "error". Nothing is loaded or
    run; unreadable files are reported, not raised. Folders are walked here
    (every file, sorted; links to folders not followed), without the CLI's
    reports on links and on a DCP folder's item ranges.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: List[str] = []
    for p in paths:
        p = _fspath(p)
        if os.path.isdir(p):
            for root, dirs, names in os.walk(p):
                dirs.sort()
                files.extend(os.path.join(root, n) for n in sorted(names))
        else:
            files.append(p)
    return json.loads(_core.scan(files))
