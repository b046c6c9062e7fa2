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
loads as torch.load reads it."""
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
    return json.loads(out.stdout)


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
    assert {"quantized_per_tensor.pt", "quantized_per_channel.pt", "quantize_dynamic_linear.pt",
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
