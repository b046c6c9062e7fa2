"""Issue 17: declared records. A Lightning-style training checkpoint made with
Debian's real torch 1.13 and numpy (model, optimizer, lr scheduler, epoch,
global step, numpy and torch RNG state, hyper-parameters as an
argparse.Namespace with paths and an Enum member, a SimpleNamespace, a
defaultdict, a timedelta, numpy scalars, a functools.partial of an optimizer
class) loads completely with `ckptguard inspect`: nothing refused, nothing
called. Every tensor torch.load gives, and every numpy array (now a tensor),
digests equal; records show their class, arguments and state.

Records never call: a file that calls a record (a partial of os.system), a
getattr result, or a class with arguments, or that keeps an unlisted global
as a value, provably runs its payload under pickle.loads and is refused by the
loader and called dangerous by the scanner."""
import argparse
import collections
import datetime
import functools
import hashlib
import json
import os
import pathlib
import pickle
import random
import struct
import subprocess
import sys
import types

import pytest

torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")

from ckg import CLI, load_runs_payload, marker_path, run_cli, scan

HP_MODULE = '''
import enum
class Mode(enum.Enum):
    TRAIN = "train"
    EVAL = "eval"
'''


def inspect_json(path, *extra):
    """The object of `path` in `inspect --json`'s document (its only file)."""
    out = run_cli("inspect", "--json", *extra, str(path))
    assert out.returncode == 0, out.stderr.decode()
    doc = json.loads(out.stdout)
    assert len(doc["files"]) == 1, doc
    return doc["files"][0]


@pytest.fixture(scope="module")
def lightning(tmp_path_factory):
    folder = tmp_path_factory.mktemp("records")
    (folder / "hp_types.py").write_text(HP_MODULE)
    sys.path.insert(0, str(folder))
    try:
        import hp_types
        torch.manual_seed(0)
        np.random.seed(1)
        model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        model(torch.randn(2, 4)).sum().backward()
        opt.step()
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=10)
        ckpt = {
            "epoch": 3,
            "global_step": 120,
            "pytorch-lightning_version": "1.9.0",
            "state_dict": model.state_dict(),
            "optimizer_states": [opt.state_dict()],
            "lr_schedulers": [sched.state_dict()],
            "hyper_parameters": argparse.Namespace(lr=1e-3, data_dir=pathlib.PurePosixPath("/data/set"),
                                                   mode=hp_types.Mode.TRAIN, layers=[4, 3, 2]),
            "extra": types.SimpleNamespace(a=1, b="x"),
            "callbacks": collections.defaultdict(list, {"k": [1]}),
            "elapsed": datetime.timedelta(days=1, seconds=5),
            "optimizer_factory": functools.partial(torch.optim.Adam, lr=0.5),
            "best_score": np.float64(0.25),
            "seen": np.int64(-7),
            "mask": np.array([[True, False], [False, True]]),
            "fortran": np.asfortranarray(np.arange(6, dtype=">i4").reshape(2, 3)),
            "rng_states": {"python": random.getstate(), "numpy": np.random.get_state(),
                           "torch": torch.get_rng_state()},
        }
        path = folder / "epoch=3-step=120.ckpt"
        torch.save(ckpt, path)
        loaded = torch.load(path)  # the oracle (this test made the file)
    finally:
        sys.path.remove(str(folder))
    return path, loaded


def walk(value, path, out):
    """Tensors and numpy arrays by dotted path, as ckptguard names them."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        out[path] = value
    elif isinstance(value, dict):
        for k, v in value.items():
            walk(v, str(k) if not path else path + "." + str(k), out)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            walk(v, str(i) if not path else path + "." + str(i), out)


def digest(a):
    if isinstance(a, torch.Tensor):
        a = a.detach().contiguous().numpy()
    a = np.ascontiguousarray(a)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    return hashlib.sha256(a.tobytes()).hexdigest()


def skeleton_entry(doc, key):
    for k, v in doc["skeleton"]["__dict__"]:
        if k == key:
            return v
    raise KeyError(key)


def state_of(record):
    return {k: v for k, v in record["state"]}


def test_lightning_checkpoint_loads_completely(lightning):
    path, loaded = lightning
    doc = inspect_json(path)
    want = {}
    walk(loaded, "", want)
    got = doc["tensors"]
    assert sorted(got) == sorted(want)
    for key, t in want.items():
        assert got[key]["shape"] == list(t.shape), key
        assert got[key]["sha256"] == digest(t), key
    assert got["mask"]["dtype"] == "bool"
    assert got["fortran"]["dtype"] == "int32" and got["fortran"]["stride"] == [1, 2]
    assert got["rng_states.numpy.1"]["dtype"] == "uint32"


def test_records_keep_class_arguments_and_state(lightning):
    path, loaded = lightning
    doc = inspect_json(path)
    hp = skeleton_entry(doc, "hyper_parameters")
    assert hp["__record__"] == "argparse.Namespace" and hp["form"] == "new" and hp["args"] == []
    st = state_of(hp)
    assert st["lr"] == 1e-3
    assert st["layers"] == {"__list__": [4, 3, 2]}
    assert st["data_dir"]["__record__"] == "pathlib.PurePosixPath"
    assert st["data_dir"]["args"] == list(loaded["hyper_parameters"].data_dir.parts)
    mode = st["mode"]  # Python 3.11+: getattr(hp_types.Mode, 'TRAIN')
    assert mode == {"__record__": "hp_types.Mode", "form": "member", "args": ["TRAIN"], "state": []}
    assert state_of(skeleton_entry(doc, "extra")) == {"a": 1, "b": "x"}
    elapsed = skeleton_entry(doc, "elapsed")
    assert elapsed["__record__"] == "datetime.timedelta" and elapsed["args"] == [1, 5, 0]
    partial = skeleton_entry(doc, "optimizer_factory")
    assert partial["__record__"] == "functools.partial"
    assert partial["args"] == [{"__global__": "torch.optim.adam.Adam"}]
    assert skeleton_entry(doc, "best_score") == 0.25
    assert skeleton_entry(doc, "seen") == -7
    assert skeleton_entry(doc, "callbacks") == {"__dict__": [["k", {"__list__": [1]}]]}
    attrs = {tuple(a["keys"]): a["attrs"] for a in doc.get("attrs", [])}
    assert attrs[("callbacks",)] == {"__dict__": [["default_factory", {"__global__": "builtins.list"}]]}


def test_text_output_and_verify(lightning):
    path, _ = lightning
    out = run_cli("inspect", str(path))
    assert out.returncode == 0, out.stderr.decode()
    text = out.stdout.decode()
    assert "record argparse.Namespace" in text and "member hp_types.Mode.TRAIN" in text
    out = run_cli("verify", str(path))
    assert out.returncode == 0, out.stderr.decode()
    assert "step 120" in out.stdout.decode()


def test_weights_only_refuses_records(lightning):
    path, _ = lightning
    out = run_cli("inspect", "--weights-only", str(path))
    assert out.returncode == 2
    assert "argparse.Namespace" in out.stderr.decode()


def test_scanner_calls_it_suspicious_not_dangerous(lightning):
    path, _ = lightning
    report = scan(path)
    assert report["verdict"] == "suspicious", report


def test_user_rules_vouch_for_a_class(tmp_path):
    sys.path.insert(0, str(tmp_path))
    (tmp_path / "my_cfg.py").write_text("class Config:\n    pass\n")
    try:
        import my_cfg
        cfg = my_cfg.Config()
        cfg.depth = 4
        path = tmp_path / "cfg.pt"
        torch.save({"cfg": cfg, "w": torch.ones(2)}, path)
    finally:
        sys.path.remove(str(tmp_path))
    out = run_cli("inspect", str(path))
    assert out.returncode == 2 and "my_cfg.Config" in out.stderr.decode()
    rules = tmp_path / "rules.toml"
    rules.write_text('version = 1\n[[allow]]\nglobal = "my_cfg.Config"\naction = "record"\nwhy = "our config"\n')
    doc = inspect_json(path, "--rules", str(rules))
    cfg_rec = skeleton_entry(doc, "cfg")
    assert cfg_rec["__record__"] == "my_cfg.Config" and state_of(cfg_rec) == {"depth": 4}


# --- records never call ----------------------------------------------------------
def s(text):
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def g(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def tup(*items):
    return b"(" + b"".join(items) + b"t"


def call(fn, *args):
    return fn + tup(*args) + b"R"


def p2(body):
    return b"\x80\x02" + body + b"."


def shell(marker):
    return s("touch " + marker)


GETATTR = g("builtins", "getattr")

HOSTILE = {
    # functools.partial(os.system, cmd)(): the partial record is called
    "partial_called": lambda m: p2(call(g("functools", "partial"), g("os", "system"), shell(m)) + b")R"),
    # getattr(shutil.os, 'system')(cmd): an attribute of a module (no class)
    "member_called": lambda m: p2(call(call(GETATTR, g("shutil", "os"), s("system")), shell(m))),
    # getattr(getattr(os.path, 'os'), 'system')(cmd): a module's attribute, then getattr of it
    "getattr_of_record": lambda m: p2(call(call(GETATTR, call(GETATTR, g("os", "path"), s("os")), s("system")),
                                           shell(m))),
    # functools.partial(os.system)(cmd) kept in a list: called before it is stored
    "partial_in_list": lambda m: p2(b"]" + b"(" + call(call(g("functools", "partial"), g("os", "system")), shell(m))
                                    + b"e"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_records_never_call(tmp_path, name):
    marker = marker_path()
    path = tmp_path / (name + ".pkl")
    path.write_bytes(HOSTILE[name](marker))
    assert load_runs_payload(path, marker), "the payload must run under pickle.loads"
    out = run_cli("inspect", str(path))
    assert out.returncode == 2, out.stdout.decode()
    assert "forbidden_global" in out.stderr.decode(), out.stderr.decode()
    assert not os.path.exists(marker)
    assert scan(path)["verdict"] == "dangerous"


def test_an_unlisted_global_kept_as_a_value_is_refused(tmp_path):
    path = tmp_path / "ref.pkl"
    path.write_bytes(p2(b"}" + s("f") + g("os", "system") + b"s"))  # {'f': os.system}
    out = run_cli("inspect", str(path))
    assert out.returncode == 2
    assert "global 'os.system' is not on the allowlist" in out.stderr.decode()
    # PROTO 2 (2 bytes), EMPTY_DICT (1), BINUNICODE 'f' (6): the GLOBAL is at 9.
    assert "forbidden_global at byte 9 " in out.stderr.decode(), out.stderr.decode()
