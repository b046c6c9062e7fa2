"""torch.distributed.checkpoint folders as torch 2.x's FileSystemWriter
writes them, made with Debian's torch 1.13 (which has no
torch.distributed.checkpoint).

A DCP folder holds `.metadata`, `pickle.dump` of a Metadata dataclass, and
`__<rank>_<n>.distcp` files. Each write item of a rank is appended to its file:
a non-tensor value as the bytes of `torch.save(value, BytesIO)`, a tensor
chunk as `torch.save(chunk, file)`; so a .distcp file is several torch
archives back to back. `storage_data` maps MetadataIndex(fqn, chunk offsets)
to _StorageInfo(relative_path, offset, length). FileSystemReader reads the
metadata with pickle.load and each item with torch.load of its byte range.

The classes below have torch 2.x's module names, fields and pickled forms
(TensorProperties pickles its state as a tuple); they are registered under
those names only when the real module does not exist, so that pickle writes
and reads them by the same globals torch does.
"""
import dataclasses
import enum
import io
import os
import pathlib
import pickle
import sys
import types
import uuid
from typing import Any, List, Optional

import torch

META = "torch.distributed.checkpoint.metadata"
FILESYSTEM = "torch.distributed.checkpoint.filesystem"


@dataclasses.dataclass
class ChunkStorageMetadata:
    offsets: torch.Size
    sizes: torch.Size


class _MEM_FORMAT_ENCODING(enum.Enum):
    TORCH_CONTIGUOUS_FORMAT = 0
    TORCH_CHANNELS_LAST = 1
    TORCH_PRESERVE_FORMAT = 2


@dataclasses.dataclass
class TensorProperties:
    dtype: torch.dtype = torch.float32
    layout: torch.layout = torch.strided
    requires_grad: bool = False
    memory_format: Any = torch.contiguous_format
    pin_memory: bool = False

    def __getstate__(self):
        # As torch 2.x: torch.memory_format cannot be pickled.
        return (self.dtype, self.layout, self.requires_grad, _MEM_FORMAT_ENCODING.TORCH_CONTIGUOUS_FORMAT,
                self.pin_memory)

    def __setstate__(self, state):
        self.dtype, self.layout, self.requires_grad, _, self.pin_memory = state
        self.memory_format = torch.contiguous_format


@dataclasses.dataclass
class TensorStorageMetadata:
    properties: TensorProperties
    size: torch.Size
    chunks: List[ChunkStorageMetadata]


@dataclasses.dataclass
class BytesStorageMetadata:
    pass


@dataclasses.dataclass
class StorageMeta:
    checkpoint_id: Any = None
    save_id: Optional[str] = None
    load_id: Optional[str] = None
    modules: List[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Metadata:
    state_dict_metadata: dict
    planner_data: Any = None
    storage_data: Any = None
    storage_meta: Optional[StorageMeta] = None
    version: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class MetadataIndex:
    fqn: str
    offset: Optional[torch.Size] = None
    index: Optional[int] = dataclasses.field(hash=False, compare=False, default=None)


@dataclasses.dataclass
class _StorageInfo:
    relative_path: str
    offset: int
    length: int


def _register():
    """Gives the classes torch 2.x's module names (pickle looks them up there)."""
    for name, classes in ((META, (ChunkStorageMetadata, _MEM_FORMAT_ENCODING, TensorProperties, TensorStorageMetadata,
                                  BytesStorageMetadata, StorageMeta, Metadata, MetadataIndex)),
                          (FILESYSTEM, (_StorageInfo,))):
        module = sys.modules.get(name)
        if module is None:
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                sub = ".".join(parts[:i])
                if sub not in sys.modules:
                    sys.modules[sub] = types.ModuleType(sub)
                    if i > 1:
                        setattr(sys.modules[".".join(parts[:i - 1])], parts[i - 1], sys.modules[sub])
            module = sys.modules[name]
        for cls in classes:
            cls.__module__ = name
            setattr(module, cls.__name__, cls)


_register()


def flatten(state_dict, prefix=(), out=None):
    """DefaultSavePlanner's flatten_state_dict: nested dicts become dotted
    keys, each mapped (planner_data) to its path of keys."""
    out = {} if out is None else out
    for key, value in state_dict.items():
        path = prefix + (key,)
        if isinstance(value, dict) and value:
            flatten(value, path, out)
        else:
            out[".".join(str(p) for p in path)] = (path, value)
    return out


class ShardTensorProperties(TensorProperties):
    """torch 2.0's TensorProperties, from the sharded-tensor module."""


ShardTensorProperties.__name__ = ShardTensorProperties.__qualname__ = "TensorProperties"
SHARD_META = "torch.distributed._shard.sharded_tensor.metadata"
if SHARD_META not in sys.modules or not hasattr(sys.modules[SHARD_META], "TensorProperties"):
    # Debian's torch 1.13 cannot import that module under Python 3.11.
    for i, part in enumerate(SHARD_META.split(".")):
        name = ".".join(SHARD_META.split(".")[:i + 1])
        if name not in sys.modules:
            sys.modules[name] = types.ModuleType(name)
    ShardTensorProperties.__module__ = SHARD_META
    sys.modules[SHARD_META].TensorProperties = ShardTensorProperties
else:
    ShardTensorProperties = sys.modules[SHARD_META].TensorProperties


def save(state_dict, folder, ranks=1, split_dim0=(), split_dim1=(), raw_items=None, properties=None,
         edit_chunk=None):
    """Writes `state_dict` as a DCP folder. Tensors named in `split_dim0`
    (`split_dim1`) are split along dimension 0 (1) into `ranks` chunks, chunk
    r written by rank r (as FSDP or DTensor shards do); every other value is
    written whole by rank 0.
    `raw_items` (fqn -> bytes) replaces what a BYTE_IO item writes (a hostile
    item); `properties` is the TensorProperties class (torch 2.0's:
    ShardTensorProperties); `edit_chunk(fqn, chunk)` replaces the tensor a
    chunk is saved as (a hostile chunk). Returns the Metadata."""
    properties = properties or TensorProperties
    os.makedirs(folder, exist_ok=True)
    flat = flatten(state_dict)
    sd_meta, storage, planner = {}, {}, {}
    per_rank = [[] for _ in range(ranks)]
    for fqn, (path, value) in flat.items():
        planner[fqn] = path
        if isinstance(value, torch.Tensor):
            value = value.detach()
            if fqn in split_dim0 or fqn in split_dim1:
                dim = 0 if fqn in split_dim0 else 1
                bounds = [value.shape[dim] * r // ranks for r in range(ranks + 1)]
                chunks = []
                for r in range(ranks):
                    offsets = [0] * value.dim()
                    offsets[dim] = bounds[r]
                    offsets = torch.Size(offsets)
                    part = value.narrow(dim, bounds[r], bounds[r + 1] - bounds[r]).clone()
                    chunks.append(ChunkStorageMetadata(offsets, part.size()))
                    if edit_chunk is not None:
                        part = edit_chunk(fqn, part)
                    per_rank[r].append(("tensor", MetadataIndex(fqn, offsets, r), part))
            else:
                offsets = torch.Size([0] * value.dim())
                chunks = [ChunkStorageMetadata(offsets, value.size())]
                per_rank[0].append(("tensor", MetadataIndex(fqn, offsets), value))
            props = properties(dtype=value.dtype, requires_grad=value.requires_grad)
            sd_meta[fqn] = TensorStorageMetadata(props, value.size(), chunks)
        else:
            sd_meta[fqn] = BytesStorageMetadata()
            if raw_items and fqn in raw_items:
                data = raw_items[fqn]
            else:
                buf = io.BytesIO()
                torch.save(value, buf)
                data = buf.getvalue()
            per_rank[0].append(("bytes", MetadataIndex(fqn), data))
    for rank, items in enumerate(per_rank):
        if not items:
            continue
        name = "__%d_0.distcp" % rank
        with open(os.path.join(folder, name), "wb") as stream:
            # _write_files_from_queue: the BYTE_IO items first, then tensors.
            for kind, index, data in sorted(items, key=lambda item: item[0] != "bytes"):
                offset = stream.tell()
                if kind == "bytes":
                    stream.write(data)
                else:
                    torch.save(data, stream)
                storage[index] = _StorageInfo(name, offset, stream.tell() - offset)
    metadata = Metadata(sd_meta, planner, storage, StorageMeta(pathlib.PosixPath(folder), str(uuid.uuid4())))
    with open(os.path.join(folder, ".metadata"), "wb") as f:
        pickle.dump(metadata, f)
    return metadata


def load(folder):
    """What FileSystemReader + DefaultLoadPlanner give (torch 2.x, with
    flatten): fqn -> tensor (chunks assembled) or value, read the way they
    read it (pickle.load of .metadata, torch.load of each byte range)."""
    with open(os.path.join(folder, ".metadata"), "rb") as f:
        metadata = pickle.load(f)
    out = {}
    for fqn, md in metadata.state_dict_metadata.items():
        if isinstance(md, BytesStorageMetadata):
            info = metadata.storage_data[MetadataIndex(fqn)]
            with open(os.path.join(folder, info.relative_path), "rb") as f:
                f.seek(info.offset)
                out[fqn] = torch.load(io.BytesIO(f.read(info.length)))
            continue
        full = torch.zeros(md.size, dtype=md.properties.dtype)
        for chunk in md.chunks:
            info = metadata.storage_data[MetadataIndex(fqn, chunk.offsets)]
            with open(os.path.join(folder, info.relative_path), "rb") as f:
                f.seek(info.offset)
                part = torch.load(io.BytesIO(f.read(info.length)))
            view = full
            for dim, (o, s) in enumerate(zip(chunk.offsets, chunk.sizes)):
                view = view.narrow(dim, o, s)
            view.copy_(part)
        out[fqn] = full
    return out
