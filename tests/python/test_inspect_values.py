"""Issue 16: `ckptguard inspect --json` holds every value torch.load gives.

Each case saves a checkpoint with Debian's real torch 1.13, loads it back with
torch.load (the oracle), runs `inspect --json` on it and compares: the
skeleton decoded to Python values against torch.load's values (floats
bit-for-bit: nan, inf, -0.0), every tensor torch.load holds against the
tensors and collisions of the JSON (dtype, shape and the SHA-256 of its
elements), and OrderedDict attributes (state_dict()._metadata) against
vars() of torch.load's OrderedDicts. Nothing may be lost: two keys differing
only in a lone surrogate stay two tensors, and a path shared by two tensors
({'a.b': t1, 'a': {'b': t2}}) lists both."""
import collections
import hashlib
import json
import math
import subprocess

import pytest

torch = pytest.importorskip("torch")

from ckg import CLI

NAN = float("nan")
INF = float("inf")


class TensorMark:
    """What the skeleton shows for a tensor ("<tensor>")."""

    def __eq__(self, other):
        return isinstance(other, TensorMark)

    def __repr__(self):
        return "<tensor>"


def inspect_json(path, *extra):
    assert CLI, "CKPTGUARD_CLI is not set (run through ctest)"
    out = subprocess.run([CLI, "inspect", "--json", *extra, str(path)], capture_output=True, timeout=300)
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    # Lone surrogates arrive as \\udXXX escapes: the bytes are ASCII-safe JSON.
    doc = json.loads(out.stdout.decode("utf-8"))
    assert len(doc["files"]) == 1, out.stdout
    return doc["files"][0]


def inspect_text(path):
    out = subprocess.run([CLI, "inspect", str(path)], capture_output=True, timeout=300)
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    return out.stdout.decode("utf-8")


def decode(node):
    """The Python value a skeleton node stands for (iterative over a work list
    would be overkill here: test inputs are shallow)."""
    if isinstance(node, list):
        raise AssertionError("bare JSON array in a skeleton: %r" % (node,))
    if not isinstance(node, dict):
        if node == "<tensor>":
            return TensorMark()
        return node
    assert len(node) in (1, 2), node
    if "__dict__" in node:
        pairs = [(decode(k), decode(v)) for k, v in node["__dict__"]]
        if "__object__" in node:
            return ("object", node["__object__"], pairs)
        return pairs
    ((tag, body),) = node.items()
    if tag == "__list__":
        return [decode(x) for x in body]
    if tag == "__tuple__":
        return tuple(decode(x) for x in body)
    if tag == "__set__":
        return {decode(x) for x in body}
    if tag == "__bytes__":
        return bytes.fromhex(body)
    if tag == "__float__":
        return float(body)
    if tag == "__bigint__":
        return int(body)
    if tag == "__complex__":
        return complex(decode(body[0]), decode(body[1]))
    if tag == "__str__":
        return bytes.fromhex(body).decode("utf-8", "surrogatepass")
    raise AssertionError("unknown skeleton tag %r" % tag)


def same_float(a, b):
    return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))


def assert_same(torch_value, decoded, where="root"):
    """torch.load's value against a decoded skeleton, exactly."""
    work = [(torch_value, decoded, where)]
    while work:
        want, got, at = work.pop()
        if isinstance(want, torch.Tensor):
            assert got == TensorMark(), at
        elif isinstance(want, dict):
            assert isinstance(got, list), (at, got)
            assert len(got) == len(want), (at, list(want), got)
            for (wk, wv), (gk, gv) in zip(want.items(), got):
                assert type(wk) is type(gk) and wk == gk, (at, wk, gk)
                work.append((wv, gv, "%s[%r]" % (at, wk)))
        elif isinstance(want, (list, tuple)):
            assert type(want) is type(got), (at, want, got)
            assert len(want) == len(got), (at, want, got)
            for i, (w, g) in enumerate(zip(want, got)):
                work.append((w, g, "%s[%d]" % (at, i)))
        elif isinstance(want, bool) or want is None:
            assert got is want, (at, want, got)
        elif isinstance(want, int):
            assert type(got) is int and got == want, (at, want, got)
        elif isinstance(want, float):
            assert isinstance(got, (float, int)) and same_float(want, float(got)), (at, want, got)
        elif isinstance(want, complex):
            assert isinstance(got, complex), (at, want, got)
            assert same_float(want.real, got.real) and same_float(want.imag, got.imag), (at, want, got)
        elif isinstance(want, str):
            assert type(got) is str and got == want, (at, want, got)
        else:
            assert want == got, (at, want, got)


def digest(t):
    t = t.detach().contiguous().reshape(-1)
    if t.dtype == torch.bool:
        t = t.to(torch.uint8)
    return hashlib.sha256(t.view(torch.uint8).numpy().tobytes()).hexdigest()


def torch_tensors(value):
    """(keys, tensor) of every tensor reachable through dicts, lists and
    tuples, depth first in order, as torch.load gives them."""
    out = []
    work = [((), value)]
    while work:
        keys, v = work.pop()
        if isinstance(v, torch.Tensor):
            out.append((keys, v))
        elif isinstance(v, dict):
            work.extend(reversed([(keys + (k,), x) for k, x in v.items()]))
        elif isinstance(v, (list, tuple)):
            work.extend(reversed([(keys + (i,), x) for i, x in enumerate(v)]))
    return out


def json_key(keys):
    return ".".join(str(k) for k in keys)


def assert_tensors(loaded, doc):
    """Every tensor of torch.load's value is in the JSON: alone under its path
    in "tensors", or under "collisions" with its keys when its path names
    several."""
    want = collections.OrderedDict()
    for keys, t in torch_tensors(loaded):
        # A JSON reader joins surrogate pairs: the path as it reads it back.
        path = json.loads(json.dumps(json_key(keys)))
        want.setdefault(path, []).append((keys, t))
    collisions = {c["path"]: c["tensors"] for c in doc.get("collisions", [])}
    assert set(doc["tensors"]) == set(want), (sorted(doc["tensors"]), sorted(want))
    for path, entries in want.items():
        if len(entries) == 1:
            assert path not in collisions, path
            got = [doc["tensors"][path]]
        else:
            assert path in collisions, (path, list(collisions))
            got = collisions[path]
            assert len(got) == len(entries), (path, got)
            for (keys, _), g in zip(entries, got):
                assert [decode(k) for k in g["keys"]] == list(keys), (path, g["keys"], keys)
            # "tensors" holds the first of them.
            assert doc["tensors"][path]["sha256"] == got[0]["sha256"]
        for (keys, t), g in zip(entries, got):
            assert g["dtype"] == str(t.dtype).replace("torch.", ""), (path, g)
            assert g["shape"] == list(t.shape), (path, g)
            assert g["sha256"] == digest(t), path
    assert len(collisions) == sum(1 for e in want.values() if len(e) > 1)


def ordered_dicts_with_attrs(value):
    """(keys, vars(od)) of every OrderedDict with attributes, depth first."""
    out = []
    work = [((), value)]
    while work:
        keys, v = work.pop()
        if isinstance(v, collections.OrderedDict) and vars(v):
            out.append((keys, vars(v)))
        if isinstance(v, dict):
            work.extend(reversed([(keys + (k,), x) for k, x in v.items()]))
        elif isinstance(v, (list, tuple)):
            work.extend(reversed([(keys + (i,), x) for i, x in enumerate(v)]))
    return out


def check(tmp_path, name, value, **save_options):
    """Saves `value` with torch (torch.save's keyword `save_options`),
    compares inspect --json with torch.load."""
    path = tmp_path / (name + ".pt")
    torch.save(value, path, **save_options)
    loaded = torch.load(path)
    doc = inspect_json(path)
    legacy = save_options.get("_use_new_zipfile_serialization", True) is False
    assert doc["kind"] == ("torch-legacy" if legacy else "torch-zip")
    assert_same(loaded, decode(doc["skeleton"]))
    assert_tensors(loaded, doc)
    want_attrs = ordered_dicts_with_attrs(loaded)
    got_attrs = doc.get("attrs", [])
    assert len(got_attrs) == len(want_attrs), (got_attrs, [k for k, _ in want_attrs])
    for (keys, attrs), got in zip(want_attrs, got_attrs):
        assert [decode(k) for k in got["keys"]] == list(keys)
        assert_same(attrs, decode(got["attrs"]), "attrs of %r" % (keys,))
    return loaded, doc


def test_optimizer_and_scheduler_state(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, amsgrad=True)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(5, 4)).sum().backward()
        opt.step()
        sched.step()
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    model(torch.randn(5, 4)).sum().backward()
    sgd.step()
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(sgd)
    plateau.step(1.5)
    loaded, doc = check(tmp_path, "optim", {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "sgd": sgd.state_dict(),
        "plateau": plateau.state_dict(),
        "epoch": 3,
    })
    # Adam after steps: per-parameter exp_avg, exp_avg_sq, max_exp_avg_sq and a step tensor.
    assert "optimizer.state.0.exp_avg" in doc["tensors"]
    assert "optimizer.state.0.max_exp_avg_sq" in doc["tensors"]
    assert [decode(k) for k in doc["attrs"][0]["keys"]] == ["model"]


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_every_pickle_protocol_torch_writes(tmp_path, protocol, legacy):
    # Protocols 4 and 5 frame every pickle (FRAME): the legacy format's
    # magic-number and version pickles too. Protocols 0 and 1 write text
    # persistent ids, which torch.load itself refuses.
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    value = {"model": model.state_dict(), "optimizer": opt.state_dict(), "view": torch.arange(12.0).view(3, 4)[:, 1:]}
    options = {"pickle_protocol": protocol}
    if legacy:
        options["_use_new_zipfile_serialization"] = False
    check(tmp_path, "p%d" % protocol, value, **options)
    report = json.loads(subprocess.run([CLI, "scan", "--format", "json", str(tmp_path / ("p%d.pt" % protocol))],
                                       capture_output=True, text=True, timeout=120).stdout)
    assert report["files"][0]["verdict"] == "safe", report


def test_big_ints(tmp_path):
    check(tmp_path, "ints", {
        "2**64": 2**64, "2**70": 2**70, "-2**70": -2**70, "-2**64-1": -2**64 - 1, "10**100": 10**100,
        "-10**100": -10**100, "2**63-1": 2**63 - 1, "-2**63": -2**63, "2**53": 2**53, "-(2**53)": -2**53,
        "2**53-1": 2**53 - 1, "small": [0, 1, -1, 255, 256, 65535, -32769, 2**31, -2**31 - 1],
        2**80: "an int key beyond 2**64", -7: "a negative int key",
    })


def test_special_floats(tmp_path):
    loaded, doc = check(tmp_path, "floats", {
        "nan": NAN, "inf": INF, "-inf": -INF, "-0.0": -0.0, "0.0": 0.0, "tiny": 5e-324, "max": 1.7976931348623157e308,
        "list": [NAN, -0.0, INF, -INF, 0.1, 1e16, 1e-5], "tuple": (-0.0,), "t": torch.tensor([NAN, -0.0, INF]),
    })
    # -0.0 keeps its sign in the JSON text itself.
    assert dict(decode(doc["skeleton"]))["-0.0"] == 0.0
    assert math.copysign(1, dict(decode(doc["skeleton"]))["-0.0"]) == -1


def test_lone_surrogates_in_strings_and_keys(tmp_path):
    t1, t2, t3 = torch.arange(3.0), torch.arange(4.0), torch.ones(2, dtype=torch.int64)
    loaded, doc = check(tmp_path, "surrogates", {
        "w\udc80": t1, "w\udc81": t2, "w\ufffd": t3,  # three keys, three tensors
        "s": "x\ud800y\udfffz", "high end": "\udbff", "low": "\udc00", "nested": {"k\ud800": ["\udc80\udc80"]},
        "pair as two code points": "\ud83d\ude00", "astral": "\U0001f600", "reversed pair": "\ude00\ud83d",
    })
    assert len(doc["tensors"]) == 3
    assert {"w\udc80", "w\udc81", "w\ufffd"} == set(doc["tensors"])
    # What json.dumps writes: a \\udXXX escape.
    path = tmp_path / "surrogates.pt"
    raw = subprocess.run([CLI, "inspect", "--json", str(path)], capture_output=True, timeout=300).stdout
    assert b'"w\\udc80"' in raw and b'"x\\ud800y\\udfffz"' in raw
    # Text output escapes what is not well-formed UTF-8 (inspect_text decodes
    # strictly) and keeps the three keys apart.
    text = inspect_text(path)
    assert "  w\\xED\\xB2\\x80  float32 [3]" in text and "  w\\xED\\xB2\\x81  float32 [4]" in text
    assert "  w\ufffd  int64 [2]" in text and "collision" not in text


def test_surrogate_pair_key_and_astral_key_collide_in_json(tmp_path):
    # '\ud83d\ude00' (two code points) and '\U0001f600' (one) are two keys to
    # torch; a JSON reader reads both escapes as one, so they are a collision.
    loaded, doc = check(tmp_path, "pair_keys", {"\ud83d\ude00": torch.zeros(1), "\U0001f600": torch.ones(1)})
    assert len(doc["collisions"]) == 1
    keys = [[decode(k) for k in c["keys"]] for c in doc["collisions"][0]["tensors"]]
    assert keys == [["\ud83d\ude00"], ["\U0001f600"]]


def test_complex_with_nan_and_inf_parts(tmp_path):
    check(tmp_path, "complex", {
        "nan+infj": complex(NAN, INF), "-inf+1.5j": complex(-INF, 1.5), "-0-nanj": complex(-0.0, -NAN),
        "1+2j": 1 + 2j, "0-0j": complex(0.0, -0.0), "list": [complex(INF, -INF), complex(NAN, NAN)],
        "t": torch.tensor([complex(NAN, INF)], dtype=torch.complex64),
    })


def test_colliding_dotted_paths(tmp_path):
    t1, t2, t3, t4 = torch.zeros(2), torch.ones(3), torch.full((2, 2), 7.0), torch.arange(5)
    loaded, doc = check(tmp_path, "collide", {"a.b": t1, "a": {"b": t2}, "x": [t3], "x.0": t4, "ok": t1})
    paths = {c["path"]: [[decode(k) for k in e["keys"]] for e in c["tensors"]] for c in doc["collisions"]}
    assert paths == {"a.b": [["a.b"], ["a", "b"]], "x.0": [["x", 0], ["x.0"]]}
    text = inspect_text(tmp_path / "collide.pt")
    assert "collision: 2 tensors have the path a.b" in text
    assert "collision: 2 tensors have the path x.0" in text
    assert "tensors (5)" in text


def test_no_collisions_member_without_collisions(tmp_path):
    loaded, doc = check(tmp_path, "plain", {"a": {"b": torch.zeros(1)}, "c": [torch.ones(2)]})
    assert "collisions" not in doc


def test_metadata_of_real_state_dicts(tmp_path):
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.ReLU(),
        torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.LayerNorm(2)))
    sd = model.state_dict()
    loaded, doc = check(tmp_path, "metadata", sd)
    assert len(doc["attrs"]) == 1 and doc["attrs"][0]["keys"] == []
    metadata = dict(dict(decode(doc["attrs"][0]["attrs"]))["_metadata"])
    assert metadata == {k: list(v.items()) for k, v in sd._metadata.items()}
    assert dict(metadata["1"])["version"] == 2  # BatchNorm's version drives its load hook
    # Nested and twice: a training checkpoint with a model and an EMA copy.
    loaded, doc = check(tmp_path, "metadata_nested", {"model": sd, "ema": [model.state_dict()]})
    assert [[decode(k) for k in a["keys"]] for a in doc["attrs"]] == [["model"], ["ema", 0]]


def test_every_json_output_keeps_surrogate_keys_apart(tmp_path):
    """check, verify, info and inspect write their JSON alike: keys that differ
    only in a lone surrogate come out as two \\udXXX-escaped keys, never as
    one U+FFFD key (check --json lists what strict=False would load)."""
    path = tmp_path / "surrogate_keys.pt"
    sd = collections.OrderedDict([("w\udc80", torch.zeros(2)), ("w\udc81", torch.ones(3))])
    torch.save(sd, path)
    out = subprocess.run([CLI, "check", str(path), "--expect", str(path), "--json"], capture_output=True, timeout=300)
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    doc = json.loads(out.stdout.decode("utf-8"))["files"][0]
    assert doc["loaded"] == list(sd.keys())
    assert b"\\udc80" in out.stdout and "\ufffd".encode() not in out.stdout
    assert sorted(inspect_json(path)["tensors"]) == sorted(sd.keys())


SCRIPTED_MODULES = r"""
import sys, torch
from typing import Dict, List
torch.manual_seed(0)

class Typed(torch.nn.Module):
    # Attributes of every list type torch.jit.save tags (build_intlist,
    # build_doublelist, build_boollist, build_tensorlist, restore_type_tag).
    def __init__(self):
        super().__init__()
        self.ints: List[int] = [1, 2, 3]
        self.floats: List[float] = [0.5, 1.5]
        self.flags: List[bool] = [True, False]
        self.names: List[str] = ["a", "b"]
        self.nested: List[List[int]] = [[1], [2, 3]]
        self.table: Dict[str, int] = {"x": 1}
        self.tensors: List[torch.Tensor] = [torch.arange(3.0), torch.ones(2, 2)]
        self.w = torch.nn.Parameter(torch.randn(3, 2))
    def forward(self, x):
        return x @ self.w

modules = {
    "conv2d": torch.nn.Conv2d(3, 4, 3, stride=2),
    "conv_bn": torch.nn.Sequential(torch.nn.Conv1d(2, 3, 2), torch.nn.BatchNorm1d(3)),
    "lstm": torch.nn.LSTM(3, 4, num_layers=2),
    "gru": torch.nn.GRU(3, 4),
    "typed": Typed(),
}
for name, module in modules.items():
    torch.jit.save(torch.jit.script(module), sys.argv[1] + "/" + name + ".pt")
"""


@pytest.mark.parametrize("name", ["conv2d", "conv_bn", "lstm", "gru", "typed"])
def test_scripted_modules_load_their_weights(tmp_path_factory, name):
    # Scripted modules pickle typed lists through torch.jit._pickle's
    # helpers, which return their argument: the weights load, equal to
    # torch.jit.load's, and the code is never run.
    folder = tmp_path_factory.getbasetemp() / "scripted"
    if not (folder / "typed.pt").exists():
        folder.mkdir(exist_ok=True)
        script = folder / "make.py"
        script.write_text(SCRIPTED_MODULES)  # torch.jit.script reads the source
        made = subprocess.run(["/usr/bin/python3", str(script), str(folder)], capture_output=True, timeout=300)
        assert made.returncode == 0, made.stderr.decode(errors="replace")
    path = folder / (name + ".pt")
    doc = inspect_json(path)
    assert doc["kind"] == "torchscript"
    loaded = torch.jit.load(str(path))
    want = {k: v for k, v in loaded.state_dict().items()}
    got = doc["tensors"]
    for key, t in want.items():
        assert key in got, (key, sorted(got))
        assert got[key]["dtype"] == str(t.dtype).replace("torch.", ""), key
        assert got[key]["shape"] == list(t.shape), key
        assert got[key]["sha256"] == digest(t), key
    if name == "typed":
        for i, t in enumerate(loaded.tensors):
            assert got["tensors.%d" % i]["sha256"] == digest(t)
