"""`import ckptguard` (issue 18): the Python package over the C++ loader and
scanner, run with Debian's python3, torch 1.13 and numpy.

- every benign corpus file loads, each array's bytes equal to the digest the
  real producer's values give (the corpus's .expect.json), and
  ckptguard.torch.load's tensors equal torch.load's;
- every hostile corpus file raises ckptguard.Error naming its global, and no
  payload marker appears;
- the corpus MLP, given ckptguard.torch.load's state dict, reproduces its
  recorded output bit for bit;
- arrays outlive everything that made them (the mapping stays until the last
  one goes), and writing a torch tensor never reaches the file.

CTest sets PYTHONPATH to the build's python/ folder (the package as built).
"""
import gc
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from ckg import DATA, PYTHON, marker_path  # noqa: E402

import ckptguard  # noqa: E402
import ckptguard.torch  # noqa: E402

BENIGN = os.path.join(DATA, "corpus", "benign")
MALICIOUS = os.path.join(DATA, "corpus", "malicious")


def expected(name):
    with open(os.path.join(BENIGN, name + ".expect.json")) as f:
        return json.load(f)


def contiguous_bytes(array):
    """The bytes the corpus digests: C order, little-endian, bool one byte each."""
    a = np.ascontiguousarray(array)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    return a.tobytes()


NUMPY_TO_TORCH = {"f4": "float32", "f8": "float64", "f2": "float16", "i1": "int8", "u1": "uint8", "i2": "int16",
                  "i4": "int32", "i8": "int64", "u2": "uint16", "u4": "uint32", "u8": "uint64", "b1": "bool",
                  "c8": "complex64", "c16": "complex128"}


def dtype_name(array):
    """The torch name of an array's dtype: its metadata's for raw bits."""
    meta = array.dtype.metadata or {}
    if "ckptguard_dtype" in meta:
        return meta["ckptguard_dtype"]
    return NUMPY_TO_TORCH[array.dtype.kind + str(array.dtype.itemsize)]


def benign_files():
    return sorted(os.path.basename(p)[: -len(".expect.json")] for p in glob.glob(os.path.join(BENIGN, "*.expect.json")))


# Files whose tensors load as arrays (the others: a whole pickled module and a
# TorchScript archive, which load refuses or reads as objects; exotic tensors
# have their own test below).
def plain_files():
    return [f for f in benign_files() if f not in ("whole_module.pt",)]


@pytest.mark.parametrize("name", plain_files())
def test_benign_arrays_equal_the_producers_values(name):
    exp = expected(name)
    path = os.path.join(BENIGN, name)
    if exp.get("kind") == "torchscript":
        arrays = ckptguard.load(path, weights_only=False)
    else:
        arrays = ckptguard.load(path)
    checked = 0
    for key, want in exp["tensors"].items():
        got = arrays[key]
        if isinstance(got, (ckptguard.SparseTensor, ckptguard.NestedTensor, ckptguard.MetaTensor)):
            continue  # components: test_exotic_tensors
        if "qscheme" in want:
            continue  # integer representation: test_exotic_tensors
        assert list(got.shape) == want["shape"], key
        assert not got.flags.writeable, key
        meta = got.dtype.metadata or {}
        assert dtype_name(got) == want["dtype"], key
        if "shape" not in meta:  # (packed values: their bytes)
            assert hashlib.sha256(contiguous_bytes(got)).hexdigest() == want["sha256"], key
        checked += 1
    assert checked > 0 or not exp["tensors"]


def test_arrays_view_the_mapped_file_without_a_copy():
    path = os.path.join(BENIGN, "mlp.params")
    arrays = ckptguard.load(path)
    w = arrays["hidden.weight"]
    assert w.base is not None and not w.flags.owndata  # a view: its base holds the mapping
    with pytest.raises(ValueError):
        w[0, 0] = 1.0  # read-only


def test_arrays_outlive_the_call_that_made_them():
    path = os.path.join(BENIGN, "mlp_full_checkpoint.pt")
    want = expected("mlp_full_checkpoint.pt")["tensors"]["model.hidden.weight"]["sha256"]
    w = ckptguard.load(path)["model.hidden.weight"]
    tree = ckptguard.load_checkpoint(path)
    b = tree["model"]["hidden.bias"]
    del tree
    gc.collect()
    # Load and drop many others: a use after unmap would read other bytes (or fault).
    for _ in range(20):
        ckptguard.load(os.path.join(BENIGN, "containers.pt"))
    gc.collect()
    assert hashlib.sha256(contiguous_bytes(w)).hexdigest() == want
    assert b.shape == (256,) and np.isfinite(b).all()


def test_load_checkpoint_gives_the_whole_training_state():
    path = os.path.join(BENIGN, "mlp_full_checkpoint.pt")
    tree = ckptguard.load_checkpoint(path)
    ref = torch.load(path)  # a benign file of the corpus, made by torch
    assert set(tree) == set(ref)
    assert tree["epoch"] == ref["epoch"]
    assert set(tree["optimizer"]) == set(ref["optimizer"])
    assert tree["optimizer"]["param_groups"][0]["lr"] == ref["optimizer"]["param_groups"][0]["lr"]
    for k, v in ref["model"].items():
        assert np.array_equal(tree["model"][k], v.numpy()), k
    # state_dict()._metadata is kept as the OrderedDict attribute torch sets.
    assert hasattr(tree["model"], "_metadata") == hasattr(ref["model"], "_metadata")


def test_torch_load_equals_torch_for_every_benign_file():
    for name in plain_files():
        path = os.path.join(BENIGN, name)
        if not name.endswith((".pt", ".pth", ".ckpt", ".bin", ".params")) or "torchscript" in name:
            continue
        if name == "torch2_bigendian_dtypes.pt":
            continue  # torch 1.13 ignores the byteorder record (torch 2.x swaps): the digests test it
        try:
            ref = torch.load(path, weights_only=True)
        except Exception:
            continue  # torch's weights_only refuses it (records, numpy): not this comparison
        got = ckptguard.torch.load(path)
        assert_same(got, ref, name)


def raw_bytes(t):
    t = t.detach().resolve_conj().resolve_neg().contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)  # numpy has no bfloat16
    return t.numpy().tobytes()


def assert_same(got, ref, where):
    if isinstance(ref, torch.Tensor):
        assert isinstance(got, torch.Tensor), where
        assert got.dtype == ref.dtype and got.shape == ref.shape, where
        assert type(got) is type(ref), where  # Parameter stays Parameter
        assert got.requires_grad == ref.requires_grad, where
        if ref.is_quantized:
            assert got.is_quantized and torch.equal(got.int_repr(), ref.int_repr()), where
            assert got.qscheme() == ref.qscheme(), where
        elif ref.is_sparse:
            assert torch.equal(got.to_dense(), ref.to_dense()), where
        elif ref.layout != torch.strided:
            assert torch.equal(got.to_dense(), ref.to_dense()), where
        else:
            assert raw_bytes(got) == raw_bytes(ref), where  # bit for bit (NaN and -0.0 too)
    elif isinstance(ref, dict):
        assert isinstance(got, dict) and list(got) == list(ref), where
        for k in ref:
            assert_same(got[k], ref[k], f"{where}.{k}")
    elif isinstance(ref, (list, tuple)):
        assert len(got) == len(ref), where
        for i, (g, r) in enumerate(zip(got, ref)):
            assert_same(g, r, f"{where}[{i}]")
    else:
        assert got == ref, where


def test_mlp_state_dict_reproduces_the_recorded_output_bit_for_bit():
    class MLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.hidden = torch.nn.Linear(20, 256)
            self.output = torch.nn.Linear(256, 10)

        def forward(self, x):
            return self.output(torch.relu(self.hidden(x)))

    net = MLP()
    net.load_state_dict(ckptguard.torch.load(os.path.join(BENIGN, "mlp.params")))
    x = ckptguard.torch.load(os.path.join(BENIGN, "mlp_input.pt"))
    y = ckptguard.torch.load(os.path.join(BENIGN, "mlp_output.pt"))
    with torch.no_grad():
        assert torch.equal(net(x), y)
        assert torch.equal(y, torch.load(os.path.join(BENIGN, "mlp_output.pt")))


def test_torch_tensors_share_the_file_and_writes_never_reach_it(tmp_path):
    path = tmp_path / "m.pt"
    shutil.copy(os.path.join(BENIGN, "mlp.params"), path)
    before = path.read_bytes()
    state = ckptguard.torch.load(path)
    w = state["hidden.weight"]
    w.add_(1.0)  # copy-on-write: this process's page only
    w2 = ckptguard.torch.load(path)["hidden.weight"]
    assert torch.equal(w2 + 1.0, w)
    assert path.read_bytes() == before
    net = torch.nn.Linear(20, 256)
    net.weight.data = w  # usable as any tensor
    assert net(torch.zeros(1, 20)).shape == (1, 256)


def test_dtypes_numpy_lacks_come_back_as_raw_bits():
    path = os.path.join(BENIGN, "dtypes.pt")
    exp = expected("dtypes.pt")["tensors"]
    arrays = ckptguard.load(path)
    tensors = ckptguard.torch.load(path)
    saw = set()
    for key, want in exp.items():
        a = arrays[key]
        if want["dtype"] == "bfloat16":
            assert a.dtype == np.uint16 and a.dtype.metadata["ckptguard_dtype"] == "bfloat16"
            assert tensors[key].dtype == torch.bfloat16
            assert hashlib.sha256(contiguous_bytes(a)).hexdigest() == want["sha256"]
            saw.add("bfloat16")
    assert "bfloat16" in saw


def test_big_endian_records_are_views_in_their_byte_order():
    path = os.path.join(BENIGN, "torch2_bigendian_dtypes.pt")
    exp = expected("torch2_bigendian_dtypes.pt")["tensors"]
    arrays = ckptguard.load(path)
    for key, want in exp.items():
        a = arrays[key]
        if a.dtype.itemsize > 1 and "ckptguard_dtype" not in (a.dtype.metadata or {}):
            assert a.dtype.byteorder == ">", key
        assert hashlib.sha256(contiguous_bytes(a)).hexdigest() == want["sha256"], key
    t = ckptguard.torch.load(path)
    for key in exp:
        if isinstance(t, dict) and key in t and isinstance(t[key], torch.Tensor):
            assert t[key].shape == tuple(exp[key]["shape"]), key


def test_exotic_tensors():
    path = os.path.join(BENIGN, "exotic_quantized_sparse.pt")
    exp = expected("exotic_quantized_sparse.pt")["tensors"]
    arrays = ckptguard.load(path)
    kinds = {type(v).__name__ for v in arrays.values()}
    assert "SparseTensor" in kinds
    ref = torch.load(path)
    got = ckptguard.torch.load(path, weights_only=False)
    assert_same(got, ref, "exotic")
    assert exp  # the corpus describes it


def manifest():
    with open(os.path.join(MALICIOUS, "manifest.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.mark.parametrize("entry", manifest(), ids=lambda e: e["file"])
def test_hostile_files_raise_naming_their_global_and_run_nothing(entry):
    path = os.path.join(MALICIOUS, entry["file"])
    before = set(glob.glob("/tmp/ckptguard-pwned-*"))
    if entry["verdict"] != "dangerous":
        # A declared record (argparse.Namespace): loads as data, calls nothing.
        tree = ckptguard.load_checkpoint(path)
        assert tree is not None
        with pytest.raises(ckptguard.ForbiddenGlobalError):
            ckptguard.torch.load(path)  # weights_only refuses it, as torch does
        return
    for load in (ckptguard.load, ckptguard.load_checkpoint, ckptguard.torch.load):
        with pytest.raises(ckptguard.Error) as info:
            load(path)
        e = info.value
        assert e.code in ("forbidden_global", "malformed", "unsupported_format", "truncated"), str(e)
        assert e.file == path
        if e.code == "forbidden_global":
            names = entry.get("globals", [])
            assert not names or any(n.split(".")[-1] in str(e) for n in names), str(e)
    assert set(glob.glob("/tmp/ckptguard-pwned-*")) == before


def test_a_payload_proven_to_run_is_refused_and_runs_nothing(tmp_path):
    # Made here, proven with the real loader in a subprocess, then loaded.
    marker = marker_path()
    src = tmp_path / "payload.pt"
    code = ("import os, torch\n"
            "class P:\n"
            "    def __reduce__(self): return (os.system, ('touch %s',))\n"
            "torch.save({'w': torch.zeros(2), 'p': P()}, %r)\n") % (marker, str(src))
    # (A sanitizer build preloads its runtime for this process, not for torch's.)
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "ASAN_OPTIONS")}
    subprocess.run([PYTHON, "-c", code], check=True, capture_output=True, timeout=120, env=env)
    subprocess.run([PYTHON, "-c", "import torch,sys; torch.load(sys.argv[1])", str(src)], capture_output=True,
                   timeout=120, env=env)
    assert os.path.exists(marker), "the payload does not run under torch.load"
    os.remove(marker)
    with pytest.raises(ckptguard.ForbiddenGlobalError) as info:
        ckptguard.torch.load(src)
    assert "system" in str(info.value)
    assert info.value.entry.endswith("data.pkl")
    assert info.value.offset > 0
    assert not os.path.exists(marker)


def test_scan_reports_as_the_cli_does():
    report = ckptguard.scan([os.path.join(BENIGN, "mlp.params"), os.path.join(MALICIOUS, "os_system_p2.pkl")])
    verdicts = [f["verdict"] for f in report["files"]]
    assert verdicts == ["safe", "dangerous"]
    folder = ckptguard.scan(MALICIOUS)
    by_name = {os.path.basename(f["path"]): f["verdict"] for f in folder["files"]}
    for entry in manifest():
        assert by_name[entry["file"]] != "safe", entry["file"]


def test_errors_carry_code_file_and_limit(tmp_path):
    with pytest.raises(ckptguard.Error) as info:
        ckptguard.load(tmp_path / "missing.pt")
    assert info.value.code == "io" and info.value.file.endswith("missing.pt")
    bad = tmp_path / "trunc.pt"
    bad.write_bytes(open(os.path.join(BENIGN, "mlp.params"), "rb").read()[:1000])
    with pytest.raises(ckptguard.Error) as info:
        ckptguard.load(bad)
    assert isinstance(info.value, ckptguard.Error) and info.value.code


def test_save_safetensors_round_trips_arrays_and_tensors(tmp_path):
    src = os.path.join(BENIGN, "dtypes.pt")
    # (Safetensors has no complex dtypes: those are refused, below.)
    arrays = {k: v for k, v in ckptguard.load(src).items()
              if isinstance(v, np.ndarray) and "shape" not in (v.dtype.metadata or {}) and "complex" not in dtype_name(v)}
    out = tmp_path / "a.safetensors"
    ckptguard.save_safetensors(arrays, out, metadata={"format": "np"})
    back = ckptguard.load(out)
    assert set(back) == set(arrays)
    for k, a in arrays.items():
        assert dtype_name(back[k]) == dtype_name(a), k
        assert contiguous_bytes(back[k]) == contiguous_bytes(a), k
    # From torch tensors (bfloat16 included), read back by torch's own reader
    # of our loader's output and compared bit for bit.
    tensors = {k: v for k, v in ckptguard.torch.load(src).items() if isinstance(v, torch.Tensor) and not v.is_complex()}
    out2 = tmp_path / "t.safetensors"
    ckptguard.save_safetensors(tensors, out2)
    again = ckptguard.torch.load(out2)
    for k, t in tensors.items():
        assert again[k].dtype == t.dtype and raw_bytes(again[k]) == raw_bytes(t), k
    with pytest.raises(ckptguard.UnsupportedFormatError):
        ckptguard.save_safetensors({"c": np.zeros(2, np.complex128)}, tmp_path / "c.safetensors")
    # Nothing half-written: a refused tensor leaves no file.
    with pytest.raises(ckptguard.Error):
        ckptguard.save_safetensors({"q": torch.quantize_per_tensor(torch.ones(2), 0.1, 0, torch.quint8)},
                                   tmp_path / "q.safetensors")
    assert not (tmp_path / "q.safetensors").exists()


def test_check_replays_load_state_dict():
    schema = os.path.join(BENIGN, "mlp.schema.json")
    fits = ckptguard.check(os.path.join(BENIGN, "mlp.params"), schema)
    assert fits["ok"] and not fits["missing"] and not fits["unexpected"] and fits["strict_raises"] is None
    # The full checkpoint's state dict is under "model": at the root it does
    # not fit, and torch would raise; the hint names the prefix.
    root = ckptguard.check(os.path.join(BENIGN, "mlp_full_checkpoint.pt"), schema)
    assert not root["ok"] and root["strict_raises"]["type"] == "RuntimeError"
    assert any("model" in h for h in root["hints"])
    assert ckptguard.check(os.path.join(BENIGN, "mlp_full_checkpoint.pt"), schema, prefix="model")["ok"]
    # Agrees with torch itself.
    net = torch.nn.Sequential()
    net.add_module("hidden", torch.nn.Linear(20, 256))
    net.add_module("output", torch.nn.Linear(256, 10))
    with pytest.raises(RuntimeError) as info:
        net.load_state_dict(torch.load(os.path.join(BENIGN, "mlp_full_checkpoint.pt")))
    # (torch names the model's class, which a state dict does not say.)
    assert str(info.value).split("\n", 1)[1] == root["strict_raises"]["message"].split("\n", 1)[1]


def test_limits_bound_the_load_and_are_named():
    path = os.path.join(BENIGN, "mlp_full_checkpoint.pt")
    with pytest.raises(ckptguard.LimitExceededError) as info:
        ckptguard.load(path, limits={"max_opcodes": 10})
    assert info.value.limit == "max_opcodes" and info.value.code == "limit_exceeded"
    with pytest.raises(ckptguard.LimitExceededError):
        ckptguard.torch.load(path, limits={"max_opcodes": 10})
    assert ckptguard.load(path, limits={"max_opcodes": 10**6})
    with pytest.raises(ckptguard.Error) as info:
        ckptguard.load(path, limits={"max_sheep": 1})
    assert "max_opcodes" in str(info.value)  # the known names are listed


def test_convert_writes_what_torch_and_the_loader_read_back(tmp_path):
    src = os.path.join(BENIGN, "mlp_full_checkpoint.pt")
    # Plain values have no place in safetensors: refused by name, nothing written.
    with pytest.raises(ckptguard.Error) as info:
        ckptguard.convert(src, tmp_path / "all.safetensors")
    assert "non-tensor value" in str(info.value) and not (tmp_path / "all.safetensors").exists()
    done = ckptguard.convert(src, tmp_path / "model.safetensors", prefix="model")
    assert done == {"format": "safetensors", "tensors": 4, "aliases": 0, "values": 0}
    ref = torch.load(src)["model"]
    back = ckptguard.torch.load(tmp_path / "model.safetensors")
    assert set(back) == set(ref) and all(torch.equal(back[k], ref[k]) for k in ref)
    # To a torch zip: torch itself loads it, with the same values.
    assert ckptguard.convert(src, tmp_path / "copy.pt")["format"] == "pt"
    again = torch.load(tmp_path / "copy.pt")
    assert again["epoch"] == torch.load(src)["epoch"]
    assert all(torch.equal(again["model"][k], ref[k]) for k in ref)
    with pytest.raises(ckptguard.Error):
        ckptguard.convert(src, tmp_path / "x.unknown")
    with pytest.raises(ckptguard.ForbiddenGlobalError):
        ckptguard.convert(os.path.join(MALICIOUS, "os_system_p2.pkl"), tmp_path / "bad.safetensors")
    assert not (tmp_path / "bad.safetensors").exists()


def test_check_takes_a_sharded_checkpoint(tmp_path):
    # Two shards and an index as transformers' shard_checkpoint writes them.
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    sd = net.state_dict()
    keys = list(sd)
    weight_map = {}
    for i, part in enumerate([keys[:2], keys[2:]], 1):
        name = "pytorch_model-%05d-of-00002.bin" % i
        torch.save({k: sd[k] for k in part}, tmp_path / name)
        weight_map.update({k: name for k in part})
    total = sum(t.numel() * t.element_size() for t in sd.values())
    (tmp_path / "pytorch_model.bin.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    torch.save(sd, tmp_path / "reference.pt")
    r = ckptguard.check(tmp_path / "pytorch_model.bin.index.json", tmp_path / "reference.pt")
    assert r["ok"] and r["num_keys"] == len(keys) and not r["missing"]
