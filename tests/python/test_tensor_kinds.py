"""Issue 17: tensor kinds beyond plain strided tensors load bit-exact.

The files of tests/data/tensors (made by make_tensors.py with Debian's torch
1.13) are loaded with torch.load (the oracle) and with `ckptguard inspect
--json`; every tensor torch holds must be in the JSON with its dtype, shape
and the SHA-256 of its elements in C order. A quantized tensor's elements are
its int_repr(); its qscheme, scale and zero point (or per-channel scales,
zero points and axis) must be the quantizer's, exactly. A tensor with the
conjugate or negative bit (torch >= 2.0's metadata argument of
_rebuild_tensor_v2, applied here as torch 2.x does with torch 1.13's
_set_conj/_set_neg) digests as the values torch gives (resolve_conj(),
resolve_neg()). A legacy file with Python 2's byte-string storage keys
loads as torch.load reads it.

Sparse and meta tensors (issue 17) are made here with torch 1.13: COO and CSR
as torch 1.13 saves them (_rebuild_sparse_tensor, _rebuild_sparse_csr_tensor,
layouts by torch.serialization._get_layout), and as torch 2.x saves them (COO
with its is_coalesced item; CSR, CSC, BSR and BSC through
_rebuild_sparse_tensor), the latter by giving torch 1.13's pickler torch 2.x's
reduction (torch 1.13 builds those layouts but cannot save them); meta tensors
from _rebuild_meta_tensor_no_storage. inspect --json must give each sparse
tensor's layout, dense size and each component as torch's accessors give it
(dtype, shape, SHA-256), and a meta tensor's dtype, shape and stride with no
digest; torch.load(weights_only=True) must load the same file (nothing loads
that torch refuses), and files whose components torch refuses (shapes that
disagree, index values out of range or unsorted) or silently converts (COO
indices of another dtype, which torch.save never writes) are refused naming
the problem."""
import hashlib
import json
import math
import os
import subprocess

import pytest

torch = pytest.importorskip("torch")

from ckg import CLI, DATA

TENSORS = os.path.join(DATA, "tensors")
FILES = sorted(f for f in os.listdir(TENSORS) if f.endswith(".pt"))


def inspect_json(path):
    assert CLI, "CKPTGUARD_CLI is not set (run through ctest)"
    out = subprocess.run([CLI, "inspect", "--json", str(path)], capture_output=True, timeout=300)
    assert out.returncode == 0, out.stderr.decode()
    doc = json.loads(out.stdout)
    assert len(doc["files"]) == 1, doc
    return doc["files"][0]


def rebuild_tensor_v2_with_metadata(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                                    metadata=None):
    """torch 2.x's _rebuild_tensor_v2: the metadata sets the lazy bits as
    torch::jit::setTensorMetadata does (a key present sets its bit)."""
    t = ORIGINAL_REBUILD(storage, storage_offset, size, stride, requires_grad, backward_hooks)
    if metadata:
        assert set(metadata) <= {"conj", "neg"}, metadata
        if "conj" in metadata:
            torch._C._set_conj(t, True)
        if "neg" in metadata:
            torch._C._set_neg(t, True)
    return t


ORIGINAL_REBUILD = torch._utils._rebuild_tensor_v2


def rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
    """torch 2.x's: Parameter(data, requires_grad), then _set_obj_state."""
    param = torch.nn.Parameter(data, requires_grad)
    dict_state, slots_state = state if isinstance(state, tuple) else (state, None)
    for k, v in (dict_state or {}).items():
        setattr(param, k, v)
    for k, v in (slots_state or {}).items():
        setattr(param, k, v)
    return param


def torch_load(path):
    torch._utils._rebuild_tensor_v2 = rebuild_tensor_v2_with_metadata
    torch._utils._rebuild_parameter_with_state = rebuild_parameter_with_state
    try:
        return torch.load(path)
    finally:
        torch._utils._rebuild_tensor_v2 = ORIGINAL_REBUILD
        del torch._utils._rebuild_parameter_with_state


def decode(v):
    """A skeleton value as Python (the subset a Parameter's state uses)."""
    if isinstance(v, dict) and "__dict__" in v:
        return {decode(k): decode(x) for k, x in v["__dict__"]}
    if isinstance(v, dict) and "__tuple__" in v:
        return tuple(decode(x) for x in v["__tuple__"])
    if isinstance(v, dict) and "__list__" in v:
        return [decode(x) for x in v["__list__"]]
    return v


def walk(value, path, out):
    """Tensors by dotted path, as ckptguard names them (dict keys and
    list/tuple indexes joined by '.')."""
    if isinstance(value, torch.Tensor):
        out[path] = value
    elif isinstance(value, dict):
        for k, v in value.items():
            walk(v, k if not path else path + "." + str(k), out)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            walk(v, str(i) if not path else path + "." + str(i), out)


def digest(t):
    data = t.int_repr() if t.is_quantized else t.detach().resolve_conj().resolve_neg()
    return hashlib.sha256(data.contiguous().numpy().tobytes()).hexdigest()


def same_float(a, b):
    return a == b or (math.isnan(a) and math.isnan(b))


def test_corpus_is_complete():
    assert {"quantized_per_tensor.pt", "quantized_per_channel.pt", "quantized_packed.pt", "quantize_dynamic_linear.pt",
            "tensor_metadata_v2.pt", "parameter_with_state.pt", "legacy_python2_keys.pt", "rebuild_tensor_v1.pt",
            "rebuild_tensor_v1_legacy.pt"} <= set(FILES)


@pytest.mark.parametrize("name", FILES)
def test_the_scanner_calls_every_kind_safe(name):
    """The loader and the scanner share the allowlist: what loads (torch's
    weights_only accepts each of these) is never called dangerous."""
    out = subprocess.run([CLI, "scan", "--format", "json", os.path.join(TENSORS, name)], capture_output=True,
                         timeout=300)
    report = json.loads(out.stdout)["files"][0]
    assert report["verdict"] == "safe", report


def test_metadata_bits_change_the_digest():
    got = inspect_json(os.path.join(TENSORS, "tensor_metadata_v2.pt"))["tensors"]
    assert got["conj"]["conj"] is True and got["neg"]["neg"] is True
    assert len({got[k]["sha256"] for k in ("plain", "conj", "neg", "conj_neg")}) == 4


@pytest.mark.parametrize("name", FILES)
def test_values_match_torch(name):
    path = os.path.join(TENSORS, name)
    want = {}
    walk(torch_load(path), "", want)
    got = inspect_json(path)["tensors"]
    assert sorted(got) == sorted(want)
    for key, t in want.items():
        g = got[key]
        assert g["dtype"] == str(t.dtype).removeprefix("torch."), key
        assert g["shape"] == list(t.shape), key
        assert g["stride"] == list(t.stride()), key
        assert g["storage_offset"] == t.storage_offset(), key
        assert g["sha256"] == digest(t), key
        assert g.get("conj", False) == t.is_conj(), key
        assert g.get("neg", False) == t.is_neg(), key
        if isinstance(t, torch.nn.Parameter) and vars(t):
            state = decode(g["state"])
            merged = {}
            for part in (state if isinstance(state, tuple) else (state,)):
                merged.update(part or {})
            assert merged == vars(t), key
        else:
            assert "state" not in g, key
        if not t.is_quantized:
            assert "qscheme" not in g, key
            continue
        assert g["qscheme"] == str(t.qscheme()).removeprefix("torch."), key
        if t.qscheme() == torch.per_tensor_affine:
            assert same_float(g["q_scale"], t.q_scale()), key
            assert g["q_zero_point"] == t.q_zero_point(), key
        else:
            assert g["q_per_channel_axis"] == t.q_per_channel_axis(), key
            scales = t.q_per_channel_scales().tolist()
            zero_points = t.q_per_channel_zero_points().tolist()
            assert len(g["q_per_channel_scales"]) == len(scales), key
            assert all(same_float(a, b) for a, b in zip(g["q_per_channel_scales"], scales)), key
            assert g["q_per_channel_zero_points"] == zero_points, key


def test_quantized_tensors_are_not_converted_to_safetensors(tmp_path):
    out = subprocess.run([CLI, "convert", os.path.join(TENSORS, "quantized_per_tensor.pt"),
                          str(tmp_path / "out.safetensors")], capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert "quantized" in out.stderr, out.stderr
    assert not (tmp_path / "out.safetensors").exists()


# --- sparse and meta tensors (issue 17) ---------------------------------------

ORIGINAL_REDUCE = torch.Tensor._reduce_ex_internal
ORIGINAL_REBUILD_SPARSE = torch._utils._rebuild_sparse_tensor
COMPRESSED = (torch.sparse_csr, torch.sparse_csc, torch.sparse_bsr, torch.sparse_bsc)


def torch2_reduce(self, proto):
    """torch 2.x's reduction of sparse tensors (torch/_tensor.py)."""
    if self.layout == torch.sparse_coo:
        return (torch._utils._rebuild_sparse_tensor,
                (self.layout, (self._indices(), self._values(), self.size(), self.is_coalesced())))
    if self.layout in COMPRESSED:
        if self.layout in (torch.sparse_csr, torch.sparse_bsr):
            compressed, plain = self.crow_indices(), self.col_indices()
        else:
            compressed, plain = self.ccol_indices(), self.row_indices()
        return (torch._utils._rebuild_sparse_tensor, (self.layout, (compressed, plain, self.values(), self.size())))
    return ORIGINAL_REDUCE(self, proto)


def torch2_rebuild_sparse(layout, data):
    """torch 2.x's _rebuild_sparse_tensor, validating as it does at the end
    of a load."""
    if layout == torch.sparse_coo:
        indices, values, size = data[:3]
        result = torch.sparse_coo_tensor(indices, values, size)
        torch._validate_sparse_coo_tensor_args(result._indices(), result._values(), result.size())
        return result
    if layout in COMPRESSED:
        compressed, plain, values, size = data
        return torch.sparse_compressed_tensor(compressed, plain, values, size, layout=layout)
    raise NotImplementedError(layout)


# The weights-only unpickler allows torch._utils functions by their __name__.
torch2_rebuild_sparse.__name__ = "_rebuild_sparse_tensor"


def save(obj, path, reduce=None):
    if reduce is not None:
        torch.Tensor._reduce_ex_internal = reduce
    try:
        torch.save(obj, path)
    finally:
        torch.Tensor._reduce_ex_internal = ORIGINAL_REDUCE


def weights_only_load(path, torch2=False):
    """torch.load(weights_only=True); torch2: with torch 2.x's
    _rebuild_sparse_tensor in the weights-only unpickler's allowed globals."""
    from torch import _weights_only_unpickler as wou
    if torch2:
        torch._utils._rebuild_sparse_tensor = torch2_rebuild_sparse
    wou._get_allowed_globals.cache_clear()
    try:
        return torch.load(path, weights_only=True)
    finally:
        torch._utils._rebuild_sparse_tensor = ORIGINAL_REBUILD_SPARSE
        wou._get_allowed_globals.cache_clear()


def run_text(*args):
    assert CLI, "CKPTGUARD_CLI is not set (run through ctest)"
    return subprocess.run([CLI, *map(str, args)], capture_output=True, text=True, timeout=300)


def coo():
    i = torch.tensor([[0, 1, 2, 2], [3, 0, 1, 3]])
    return torch.sparse_coo_tensor(i, torch.tensor([1.5, -2.0, 3.25, 4.0]), (3, 5))


def hybrid_coo():
    i = torch.tensor([[0, 3]])
    return torch.sparse_coo_tensor(i, torch.arange(6, dtype=torch.float64).reshape(2, 3), (5, 3))


def dense():
    d = torch.zeros(4, 6)
    d[0, 1], d[1, 4], d[2, 2], d[3, 0], d[3, 5] = 1.0, 2.0, 3.0, 4.0, 5.0
    return d


def components(t):
    """A sparse tensor's components under the names inspect --json uses."""
    if t.layout == torch.sparse_coo:
        return {"indices": t._indices(), "values": t._values()}
    if t.layout in (torch.sparse_csr, torch.sparse_bsr):
        return {"crow_indices": t.crow_indices(), "col_indices": t.col_indices(), "values": t.values()}
    return {"ccol_indices": t.ccol_indices(), "row_indices": t.row_indices(), "values": t.values()}


def check_sparse(got, t, coalesced=None):
    assert list(got) == sorted(got), "inspect --json writes every object's keys sorted"
    assert got["layout"] == str(t.layout).removeprefix("torch.")
    assert got["shape"] == list(t.shape)
    assert got["dtype"] == str(t.dtype).removeprefix("torch.")
    assert got["sparse_dim"] == t.sparse_dim()
    assert got["dense_dim"] == t.dense_dim()
    assert "sha256" not in got and "stride" not in got
    assert got.get("is_coalesced") == coalesced
    parts = components(t)
    assert sorted(k for k in got if isinstance(got[k], dict)) == sorted(parts)
    for name, c in parts.items():
        assert got[name]["dtype"] == str(c.dtype).removeprefix("torch."), name
        assert got[name]["shape"] == list(c.shape), name
        assert got[name]["sha256"] == digest(c), name


def test_torch_1_13_sparse_and_meta_load_as_torch_loads_them(tmp_path):
    path = tmp_path / "sd.pt"
    meta_linear = torch.nn.Linear(3, 4, device="meta")
    state = {
        "coo": coo(),
        "coo_uncoalesced": torch.sparse_coo_tensor(torch.tensor([[1, 0, 1]]), torch.tensor([1, 2, 3]), (2,)),
        "hybrid": hybrid_coo(),
        "csr": dense().to_sparse_csr(),
        "csr_int32": torch.sparse_csr_tensor(torch.tensor([0, 1, 1, 3], dtype=torch.int32),
                                             torch.tensor([2, 0, 1], dtype=torch.int32),
                                             torch.tensor([7, 8, 9], dtype=torch.int16), (3, 3)),
        "meta": torch.empty(3, 4, dtype=torch.float16, device="meta"),
        "meta_strided": torch.empty_strided((2, 3), (1, 2), device="meta"),
        "meta_param": meta_linear.weight,
        "plain": torch.arange(4.0),
    }
    save(state, path)
    want = weights_only_load(path)
    got = inspect_json(path)["tensors"]
    assert sorted(got) == sorted(want)
    for key in ("coo", "coo_uncoalesced", "hybrid", "csr", "csr_int32"):
        assert want[key].layout != torch.strided, key
        check_sparse(got[key], want[key])
    for key in ("meta", "meta_strided", "meta_param"):
        t = want[key]
        assert t.is_meta, key
        g = got[key]
        assert g["meta"] is True, key
        assert "sha256" not in g, key
        assert g["dtype"] == str(t.dtype).removeprefix("torch."), key
        assert g["shape"] == list(t.shape), key
        assert g["stride"] == list(t.stride()), key
        assert g["parameter"] == isinstance(t, torch.nn.Parameter), key
    assert got["plain"]["sha256"] == digest(want["plain"])
    assert "meta" not in got["plain"] and "layout" not in got["plain"]


@pytest.mark.parametrize("layout", ["coo", "csr", "csc", "bsr", "bsc", "csr_batched", "bsc_dense"])
def test_torch_2_sparse_layouts_load_as_torch_2_loads_them(tmp_path, layout):
    d = dense()
    t = {
        "coo": coo().coalesce(),
        "csr": d.to_sparse_csr(),
        "csc": d.to_sparse_csc(),
        "bsr": d.to_sparse_bsr((2, 3)),
        "bsc": d.to_sparse_bsc((2, 2)),
        "csr_batched": torch.stack([d, d * 2]).to_sparse_csr(),
        "bsc_dense": torch.sparse_bsc_tensor(torch.tensor([0, 1, 2]), torch.tensor([0, 1]),
                                             torch.arange(8.0).reshape(2, 2, 1, 2), (4, 2, 2)),
    }[layout]
    path = tmp_path / (layout + ".pt")
    save({"t": t}, path, torch2_reduce)
    want = weights_only_load(path, torch2=True)["t"]
    assert want.layout == t.layout
    check_sparse(inspect_json(path)["tensors"]["t"], t, coalesced=True if layout == "coo" else None)


def test_the_scanner_calls_sparse_and_meta_files_safe(tmp_path):
    save({"coo": coo(), "csr": dense().to_sparse_csr(), "meta": torch.empty(2, device="meta")}, tmp_path / "a.pt")
    save({"csc": dense().to_sparse_csc(), "bsr": dense().to_sparse_bsr((2, 2))}, tmp_path / "b.pt", torch2_reduce)
    for name in ("a.pt", "b.pt"):
        out = run_text("scan", "--format", "json", tmp_path / name)
        report = json.loads(out.stdout)["files"][0]
        assert report["verdict"] == "safe", report


def test_text_inspect_shows_layout_components_and_meta(tmp_path):
    path = tmp_path / "a.pt"
    t = coo()
    save({"coo": t, "meta": torch.empty(2, 3, device="meta")}, path)
    out = run_text("inspect", path)
    assert out.returncode == 0, out.stderr
    coo_line = next(line for line in out.stdout.splitlines() if line.strip().startswith("coo "))
    assert "sparse_coo" in coo_line and "indices int64 [2,4]" in coo_line, coo_line
    assert "indices sha256 " + digest(t._indices()) in coo_line, coo_line
    assert "values sha256 " + digest(t._values()) in coo_line, coo_line
    meta_line = next(line for line in out.stdout.splitlines() if line.strip().startswith("meta "))
    assert "meta (no data)" in meta_line and "sha256" not in meta_line, meta_line


@pytest.mark.parametrize("kind", ["sparse", "meta"])
def test_sparse_and_meta_tensors_are_not_converted_to_safetensors(tmp_path, kind):
    path = tmp_path / "in.pt"
    save({"x": coo() if kind == "sparse" else torch.empty(2, device="meta")}, path)
    out = run_text("convert", path, tmp_path / "out.safetensors")
    assert out.returncode != 0
    assert ("a sparse tensor (sparse_coo)" if kind == "sparse" else "a meta tensor") in out.stderr, out.stderr
    assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize("kind", ["sparse", "meta"])
@pytest.mark.parametrize("prefix", [[], ["--prefix", "sd"]])
def test_sparse_and_meta_tensors_are_not_converted_to_torch(tmp_path, kind, prefix):
    # The whole tree (the torch writer) and a sub-dict (convert's own copy)
    # both refuse them rather than write a tensor with no data or dense data.
    path = tmp_path / "in.pt"
    save({"sd": {"x": coo() if kind == "sparse" else torch.empty(2, device="meta")}}, path)
    out = run_text("convert", *prefix, path, tmp_path / "out.pt")
    assert out.returncode != 0
    what = "a sparse tensor (sparse_coo)" if kind == "sparse" else "a meta tensor (float32)"
    who = "the torch writer" if not prefix else "convert --to torch"
    assert what + ", which " + who + " does not write" in out.stderr, out.stderr
    assert not (tmp_path / "out.pt").exists()


def hostile_reduce(edit):
    """torch 1.13's reduction of a COO tensor with its data edited."""
    def reduce(self, proto):
        if self.layout == torch.sparse_coo:
            return (torch._utils._rebuild_sparse_tensor, (self.layout, edit(self._indices(), self._values(), self.size())))
        return ORIGINAL_REDUCE(self, proto)
    return reduce


# COO indices of another dtype: torch.save never writes them, but torch's
# rebuild (sparse_coo_tensor) converts any to int64, a float truncated
# toward zero and bool as 0/1; ckptguard converts them the same way.
CONVERTED = {
    "int32": lambda i: i.int(),
    "int16": lambda i: i.short(),
    "uint8": lambda i: i.to(torch.uint8),
    "float64 + 0.5": lambda i: i.double() + 0.5,
    "float32 + 0.75": lambda i: i.float() + 0.75,
    "bool": lambda i: (i > 0),
}


@pytest.mark.parametrize("name", sorted(CONVERTED))
def test_coo_indices_of_other_dtypes_are_converted_as_torch_converts_them(tmp_path, name):
    change = CONVERTED[name]
    path = tmp_path / "sd.pt"
    # bool indices would collide (coalesced duplicates): a 2 x 2 pattern
    # whose 0/1 indices stay distinct.
    base = (torch.sparse_coo_tensor(torch.tensor([[0, 0, 1, 1], [0, 1, 0, 1]]), torch.tensor([1.0, 2.0, 3.0, 4.0]),
                                    (2, 2)) if name == "bool" else coo())
    save({"x": base}, path, hostile_reduce(lambda i, v, s: (change(i), v, s)))
    want = weights_only_load(path)["x"]
    assert want._indices().dtype == torch.int64
    got = inspect_json(path)["tensors"]["x"]
    check_sparse(got, want)


# name -> (edit, what ckptguard says, whether torch refuses it too).
HOSTILE = {
    "float16 indices": (lambda i, v, s: (i.half(), v, s),
                        "indices must be an integer, bool or float32/64 tensor (torch converts them to int64), not "
                        "float16", False),
    "nnz disagrees": (lambda i, v, s: (i, torch.cat([v, v[:1]]), s), "indices give 4 elements (nnz), values 5", True),
    "size of too few dims": (lambda i, v, s: (i, v, torch.Size([3])),
                             "size [3] has 1 dimensions, but indices give 2 sparse and values 0 dense dimensions", True),
    "1-D indices": (lambda i, v, s: (i.reshape(-1), v, s), "indices must be sparse_dim x nnz, not of shape [8]", True),
    "negative size": (lambda i, v, s: (i, v, (3, -5)), "negative size [3, -5]", True),
    "index past its dimension": (lambda i, v, s: (i.index_put((torch.tensor(1), torch.tensor(0)), torch.tensor(7)), v, s),
                                 "indices[1][0] = 7 is out of range for dimension 1 of size 5", True),
    "negative index": (lambda i, v, s: (i.index_put((torch.tensor(0), torch.tensor(2)), torch.tensor(-1)), v, s),
                       "indices[0][2] = -1 is out of range for dimension 0 of size 3", True),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_sparse_components_are_refused_naming_the_problem(tmp_path, name):
    edit, needle, torch_refuses = HOSTILE[name]
    path = tmp_path / "bad.pt"
    save({"x": coo()}, path, hostile_reduce(edit))
    if torch_refuses:
        with pytest.raises(Exception):
            weights_only_load(path)
    else:
        assert weights_only_load(path)["x"]._indices().dtype == torch.int64  # converted, not kept
    out = run_text("inspect", "--json", path)
    assert out.returncode != 0
    assert needle in out.stderr, out.stderr
    if "is out of range" in needle:
        # Refused once the load has read the indices: named by its key.
        assert "sparse_coo tensor 'x' of size" in out.stderr, out.stderr


def edited(t, i, v):
    t = t.clone()
    t[i] = v
    return t


# CSR of dense(): crow_indices [0, 1, 2, 3, 5], col_indices [1, 4, 2, 0, 5].
HOSTILE_CSR = {
    "crow_indices not ending at nnz": (lambda c, p: (edited(c, 4, 4), p), "crow_indices of batch 0 does not end at nnz 5"),
    "crow_indices not starting at 0": (lambda c, p: (edited(c, 0, 1), p), "crow_indices of batch 0 does not start at 0"),
    "crow_indices decreasing": (lambda c, p: (edited(c, 2, 0), p), "crow_indices[2] - crow_indices[1] = -1 is not in [0, 6]"),
    "crow_indices past nnz in the middle": (lambda c, p: (edited(c, 1, 6), p), "crow_indices[1] = 6 is past nnz 5"),
    "col_indices past the columns": (lambda c, p: (c, edited(p, 0, 6)), "col_indices[0] = 6 is out of range [0, 6)"),
    "col_indices unsorted": (lambda c, p: (c, edited(edited(p, 3, 5), 4, 0)),
                             "col_indices are not sorted and distinct within crow_indices[3]:crow_indices[4]"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_CSR))
def test_hostile_compressed_indices_are_refused_naming_the_problem(tmp_path, name):
    edit, needle = HOSTILE_CSR[name]

    def reduce(self, proto):
        if self.layout == torch.sparse_csr:
            c, p = edit(self.crow_indices(), self.col_indices())
            return (torch._utils._rebuild_sparse_tensor, (self.layout, (c, p, self.values(), self.size())))
        return ORIGINAL_REDUCE(self, proto)

    path = tmp_path / "bad.pt"
    save({"x": dense().to_sparse_csr()}, path, reduce)
    with pytest.raises(Exception):
        weights_only_load(path, torch2=True)
    out = run_text("inspect", "--json", path)
    assert out.returncode != 0
    assert needle in out.stderr, out.stderr


# --- tensors of devices without storage, saved as numpy arrays -----------------

def numpy_reduce(device):
    """torch's reduction of an XLA/ORT/privateuse1 tensor (torch/_tensor.py),
    for every strided tensor, with `device` as the device string."""
    def reduce(self, proto):
        if self.layout == torch.strided and not self.is_meta:
            return (torch._utils._rebuild_device_tensor_from_numpy,
                    (self.detach().numpy(), self.dtype, device, self.requires_grad))
        return ORIGINAL_REDUCE(self, proto)
    return reduce


def numpy_state():
    return {
        "f32": torch.arange(12, dtype=torch.float32).reshape(3, 4) / 7,
        "i64": torch.tensor([1, -2, 3]),
        "f16_t": torch.arange(6, dtype=torch.float16).reshape(2, 3).t(),  # a Fortran-order array
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5, dtype=torch.float64),
    }


def test_device_tensors_from_numpy_load_as_torch_loads_them(tmp_path):
    # torch 1.13 cannot make an XLA tensor; "cpu" lets it load the file as
    # torch.from_numpy(data).to(dtype, device) does for any device.
    path = tmp_path / "np.pt"
    save(numpy_state(), path, numpy_reduce("cpu"))
    want = torch.load(path)  # the numpy globals are not weights-only for torch either
    got = inspect_json(path)["tensors"]
    assert sorted(got) == sorted(want)
    for key, t in want.items():
        assert got[key]["dtype"] == str(t.dtype).removeprefix("torch."), key
        assert got[key]["shape"] == list(t.shape), key
        assert got[key]["stride"] == list(t.stride()), key
        assert got[key]["sha256"] == digest(t), key
    # The device a file names does not change the values.
    xla = tmp_path / "xla.pt"
    save(numpy_state(), xla, numpy_reduce("xla:0"))
    assert {k: v["sha256"] for k, v in inspect_json(xla)["tensors"].items()} == {
        k: v["sha256"] for k, v in got.items()}


def test_device_tensor_from_numpy_of_another_dtype_is_refused(tmp_path):
    # torch 2.x writes a bfloat16 tensor as a float32 array and converts on
    # load; the file's data are not the tensor's, and ckptguard says so.
    def reduce(self, proto):
        return (torch._utils._rebuild_device_tensor_from_numpy,
                (self.detach().numpy(), torch.bfloat16, "xla:0", False))
    path = tmp_path / "bf16.pt"
    save({"x": torch.arange(3.0)}, path, reduce)
    out = run_text("inspect", "--json", path)
    assert out.returncode != 0
    assert "converting the array's float32 to bfloat16 is not supported" in out.stderr, out.stderr
    # --weights-only loads no numpy arrays (torch's weights_only refuses the
    # numpy globals), so the rebuild never gets an array.
    out = run_text("inspect", "--weights-only", "--json", tmp_path / "bf16.pt")
    assert out.returncode != 0
    assert "numpy" in out.stderr, out.stderr


# --- nested tensors, as torch 2.x saves them -----------------------------------
# torch 1.13 builds nested tensors but cannot pickle one; torch 2.x reduces
# one to _rebuild_nested_tensor(values(), _nested_tensor_size(),
# _nested_tensor_strides(), _nested_tensor_storage_offsets()). The reduction
# is given to torch 1.13's pickler by an object standing for the nested
# tensor, and the function is found under its torch 2.x name.

def torch2_rebuild_nested(buffer, sizes, strides, storage_offsets):
    """torch 2.x's _rebuild_nested_tensor (_nested_view_from_buffer): the
    components as views of the buffer."""
    return [buffer.as_strided(s.tolist(), st.tolist(), int(o)) for s, st, o in zip(sizes, strides, storage_offsets)]


torch2_rebuild_nested.__module__ = "torch._utils"
torch2_rebuild_nested.__name__ = torch2_rebuild_nested.__qualname__ = "_rebuild_nested_tensor"


class NestedStandIn:
    def __init__(self, buffer, sizes, strides, offsets):
        self.args = (buffer, sizes, strides, offsets)

    def __reduce_ex__(self, proto):
        return (torch2_rebuild_nested, self.args)


def nested_parts(components):
    """(buffer, sizes, strides, offsets) of contiguous components laid out
    one after another, as torch.nested.nested_tensor lays them out."""
    buffer = torch.cat([c.reshape(-1) for c in components])
    sizes = torch.tensor([list(c.shape) for c in components], dtype=torch.int64)
    strides = torch.tensor([list(c.stride()) for c in components], dtype=torch.int64)
    offsets = torch.tensor([0] + [c.numel() for c in components[:-1]], dtype=torch.int64).cumsum(0)
    return buffer, sizes, strides, offsets


def save_nested(path, parts):
    torch._utils._rebuild_nested_tensor = torch2_rebuild_nested
    try:
        torch.save({"nt": NestedStandIn(*parts), "plain": torch.ones(2)}, path)
    finally:
        del torch._utils._rebuild_nested_tensor


def test_torch_2_nested_tensors_load_as_their_components(tmp_path):
    components = [torch.arange(6.0).reshape(2, 3), torch.arange(8.0).reshape(4, 2) / 3]
    parts = nested_parts(components)
    path = tmp_path / "nested.pt"
    save_nested(path, parts)
    # The file holds what torch 2.x's rebuild makes back into the components.
    torch._utils._rebuild_nested_tensor = torch2_rebuild_nested
    try:
        back = torch.load(path)["nt"]
    finally:
        del torch._utils._rebuild_nested_tensor
    assert all(torch.equal(a, b) for a, b in zip(back, components))
    got = inspect_json(path)["tensors"]
    assert sorted(got) == ["nt", "plain"]
    nt = got["nt"]
    assert list(nt) == sorted(nt)
    assert nt["layout"] == "nested" and nt["dtype"] == "float32" and nt["shape"] == [2]
    assert "sha256" not in nt and "stride" not in nt
    for name, t in zip(("buffer", "nested_sizes", "nested_strides", "nested_storage_offsets"), parts):
        assert nt[name]["dtype"] == str(t.dtype).removeprefix("torch."), name
        assert nt[name]["shape"] == list(t.shape), name
        assert nt[name]["sha256"] == digest(t), name
    text = run_text("inspect", path)
    assert text.returncode == 0, text.stderr
    assert "nt  float32 [2] nested buffer float32 [14]" in text.stdout, text.stdout
    scan = json.loads(run_text("scan", "--format", "json", path).stdout)["files"][0]
    assert scan["verdict"] == "safe", scan
    out = run_text("convert", path, tmp_path / "out.safetensors")
    assert out.returncode != 0 and "a nested tensor (2 components) has no place in safetensors" in out.stderr, out.stderr


NESTED_HOSTILE = {
    # (edit of (buffer, sizes, strides, offsets), what ckptguard says)
    "a component past the buffer": (lambda b, s, st, o: (b, s, st, o + torch.tensor([0, 1])),
                                    "nested tensor 'nt', component 1: reaches buffer element 14, the buffer has 14"),
    "a negative offset": (lambda b, s, st, o: (b, s, st, o - 1), "component 0: negative storage offset -1"),
    "strides past 2^64": (lambda b, s, st, o: (b, torch.tensor([[3, 3], [4, 2]]), torch.tensor([[2 ** 62, 2 ** 62], [2, 1]]), o),
                          "component 0: view extent overflows"),
    "float sizes": (lambda b, s, st, o: (b, s.double(), st, o), "sizes must be an int64 tensor, not float64"),
    "strides of another shape": (lambda b, s, st, o: (b, s, st[:, :1], o), "strides of shape [2, 1] do not match sizes [2, 2]"),
    "offsets of another length": (lambda b, s, st, o: (b, s, st, o[:1]),
                                  "storage_offsets of shape [1] do not give one offset for each of 2 components"),
    "a 2-D buffer": (lambda b, s, st, o: (b.reshape(2, 7), s, st, o), "buffer must be 1-D, not of shape [2, 7]"),
}


@pytest.mark.parametrize("name", sorted(NESTED_HOSTILE))
def test_hostile_nested_components_are_refused_naming_the_problem(tmp_path, name):
    edit, needle = NESTED_HOSTILE[name]
    components = [torch.arange(6.0).reshape(2, 3), torch.arange(8.0).reshape(4, 2)]
    path = tmp_path / "bad.pt"
    save_nested(path, edit(*nested_parts(components)))
    out = run_text("inspect", "--json", path)
    assert out.returncode != 0
    assert needle in out.stderr, out.stderr
