"""Issue 17: sharded checkpoints as Hugging Face writes them (an index
mapping every tensor to its shard), with shards made by real torch 1.13 and
safetensors shards made by `ckptguard convert`. `verify INDEX` checks every
shard and the index against them; `latest` takes a Trainer folder whose
weights are sharded."""
import json
import os
import shutil
import subprocess

import pytest

from ckg import CLI, PYTHON, run_cli

# transformers' shard_checkpoint: shards in key order, named
# pytorch_model-0000i-of-0000n.bin, and an index with total_size.
MAKE = r"""
import json, os, sys, torch
folder = sys.argv[1]
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 32), torch.nn.Linear(32, 4))
sd = net.state_dict()
keys = list(sd)
shards = [keys[:3], keys[3:]]
weight_map, total = {}, 0
for i, part in enumerate(shards, 1):
    name = "pytorch_model-%05d-of-%05d.bin" % (i, len(shards))
    torch.save({k: sd[k] for k in part}, os.path.join(folder, name))
    for k in part:
        weight_map[k] = name
        total += sd[k].numel() * sd[k].element_size()
json.dump({"metadata": {"total_size": total}, "weight_map": weight_map},
          open(os.path.join(folder, "pytorch_model.bin.index.json"), "w"), indent=2)
"""

INDEX = "pytorch_model.bin.index.json"


def run(*args):
    return run_cli(*args, timeout=300)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    d = tmp_path_factory.mktemp("sharded") / "model"
    d.mkdir()
    subprocess.run([PYTHON, "-c", MAKE, str(d)], check=True, timeout=300)
    return d


def copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def only_file(out):
    """The object of the only file in the one document of inspect, verify
    or check --json."""
    doc = json.loads(out.stdout)
    assert len(doc["files"]) == 1, doc
    return doc["files"][0]


def verify(index):
    out = run("verify", "--json", str(index))
    report = only_file(out)
    ok = 1 if report["ok"] else 0
    assert json.loads(out.stdout)["summary"] == {"files": 1, "ok": ok, "failed": 1 - ok}
    return out.returncode, report


def details(report):
    return "\n".join("[%s] %s: %s" % (p["kind"], p["entry"], p["detail"]) for p in report["problems"])


def test_a_whole_sharded_checkpoint_verifies(sharded):
    code, report = verify(sharded / INDEX)
    assert code == 0, details(report)
    assert report["format"] == "sharded" and report["ok"]
    assert report["tensors"] == 6


def test_safetensors_shards_verify_too(sharded, tmp_path):
    st = tmp_path / "st"
    st.mkdir()
    index = json.loads((sharded / INDEX).read_text())
    renamed = {}
    for shard in sorted(set(index["weight_map"].values())):
        target = shard.replace("pytorch_model", "model").replace(".bin", ".safetensors")
        out = run("convert", str(sharded / shard), str(st / target))
        assert out.returncode == 0, out.stderr.decode()
        renamed[shard] = target
    index["weight_map"] = {k: renamed[v] for k, v in index["weight_map"].items()}
    (st / "model.safetensors.index.json").write_text(json.dumps(index))
    code, report = verify(st / "model.safetensors.index.json")
    assert code == 0, details(report)
    assert report["tensors"] == 6


def test_a_missing_shard_is_named(sharded, tmp_path):
    d = copy(sharded, tmp_path / "m")
    os.remove(d / "pytorch_model-00002-of-00002.bin")
    code, report = verify(d / INDEX)
    assert code == 1
    assert "shard pytorch_model-00002-of-00002.bin is missing" in details(report)


def test_a_torn_shard_is_named(sharded, tmp_path):
    d = copy(sharded, tmp_path / "t")
    shard = d / "pytorch_model-00001-of-00002.bin"
    shard.write_bytes(shard.read_bytes()[:-100])
    code, report = verify(d / INDEX)
    assert code == 1
    assert any(p["entry"].startswith("pytorch_model-00001-of-00002.bin") for p in report["problems"]), details(report)


def test_a_tensor_in_two_shards_or_in_the_wrong_one(sharded, tmp_path):
    d = copy(sharded, tmp_path / "two")
    index = json.loads((d / INDEX).read_text())
    first = "pytorch_model-00001-of-00002.bin"
    # The second shard also holds a tensor of the first: transformers would
    # load whichever comes last.
    extra = (
        "import sys, torch; a = torch.load(sys.argv[1]); b = torch.load(sys.argv[2]); "
        "k = sorted(a)[0]; b[k] = a[k] + 1; torch.save(b, sys.argv[2])"
    )
    subprocess.run([PYTHON, "-c", extra, str(d / first), str(d / "pytorch_model-00002-of-00002.bin")], check=True)
    code, report = verify(d / INDEX)
    assert code == 1
    text = details(report)
    assert "is in two shards" in text, text
    assert "which the index does not map to it" in text, text

    w = copy(sharded, tmp_path / "wrong")
    index = json.loads((w / INDEX).read_text())
    key = next(k for k, v in index["weight_map"].items() if v == first)
    index["weight_map"][key] = "pytorch_model-00002-of-00002.bin"
    (w / INDEX).write_text(json.dumps(index))
    code, report = verify(w / INDEX)
    assert code == 1
    assert 'tensor "%s" is mapped to pytorch_model-00002-of-00002.bin, which does not hold it' % key in details(report)


@pytest.mark.parametrize("shard", ["../outside.bin", "/etc/passwd", "a//b.bin", ""])
def test_a_shard_path_never_leaves_the_folder(sharded, tmp_path, shard):
    d = copy(sharded, tmp_path / "esc")
    index = json.loads((d / INDEX).read_text())
    index["weight_map"][next(iter(index["weight_map"]))] = shard
    (d / INDEX).write_text(json.dumps(index))
    code, report = verify(d / INDEX)
    assert code == 1
    assert report["problems"][0]["kind"] == "index", details(report)
    assert json.dumps(shard)[1:-1] in details(report)


def test_latest_takes_a_trainer_folder_with_sharded_weights(sharded, tmp_path):
    out = tmp_path / "output"
    for step in (100, 200):
        d = copy(sharded, out / ("checkpoint-%d" % step))
        (d / "trainer_state.json").write_text(json.dumps({"global_step": step, "epoch": step / 100}))
    # The newest folder lost a shard.
    os.remove(out / "checkpoint-200" / "pytorch_model-00002-of-00002.bin")
    res = run("latest", "--json", str(out))
    doc = json.loads(res.stdout)
    assert res.returncode == 0
    assert os.path.basename(doc["chosen"]["path"]) == "checkpoint-100"
    assert doc["chosen"]["files"] == [INDEX]
    assert doc["chosen"]["tensors"] == 6
    assert [os.path.basename(c["path"]) for c in doc["skipped"]] == ["checkpoint-200"]
    assert "is missing" in details(doc["skipped"][0])


DIGESTS = r"""
import hashlib, json, sys, torch
folder, index = sys.argv[1], json.load(open(sys.argv[2]))
out = {}
for shard in sorted(set(index["weight_map"].values())):
    for k, v in torch.load(folder + "/" + shard).items():
        out[k] = hashlib.sha256(v.contiguous().numpy().tobytes()).hexdigest()
print(json.dumps(out))
"""


def test_inspect_loads_the_shards_as_one_state_dict_with_torchs_values(sharded):
    out = run("inspect", "--json", str(sharded / INDEX))
    assert out.returncode == 0, out.stderr.decode()
    doc = only_file(out)
    assert doc["kind"] == "sharded" and doc["tensors"] == 6
    ours = {}
    for shard in doc["shards"]:
        for name, t in shard["tensors"].items():
            assert name not in ours
            ours[name] = t["sha256"]
    torch_digests = subprocess.run([PYTHON, "-c", DIGESTS, str(sharded), str(sharded / INDEX)], check=True,
                                   capture_output=True, text=True, timeout=300)
    assert ours == json.loads(torch_digests.stdout)
    text = run("inspect", str(sharded / INDEX))
    assert b"format: sharded (2 shards, 6 tensors)" in text.stdout


def test_inspect_refuses_an_index_the_shards_contradict(sharded, tmp_path):
    w = copy(sharded, tmp_path / "contra")
    index = json.loads((w / INDEX).read_text())
    key = next(iter(index["weight_map"]))
    index["weight_map"][key] = "pytorch_model-00002-of-00002.bin" if index["weight_map"][key].endswith(
        "00001-of-00002.bin") else "pytorch_model-00001-of-00002.bin"
    (w / INDEX).write_text(json.dumps(index))
    out = run("inspect", str(w / INDEX))
    assert out.returncode == 2
    assert ("tensor \"%s\" is mapped to" % key).encode() in out.stderr, out.stderr.decode()


def test_convert_merges_the_shards_into_one_safetensors_file(sharded, tmp_path):
    merged = tmp_path / "model.safetensors"
    out = run("convert", str(sharded / INDEX), str(merged))
    assert out.returncode == 0, out.stderr.decode()
    assert b"6 tensors written as safetensors" in out.stdout
    doc = only_file(run("inspect", "--json", str(merged)))
    torch_digests = subprocess.run([PYTHON, "-c", DIGESTS, str(sharded), str(sharded / INDEX)], check=True,
                                   capture_output=True, text=True, timeout=300)
    assert {k: t["sha256"] for k, t in doc["tensors"].items()} == json.loads(torch_digests.stdout)
    # A contradicted index writes nothing.
    bad = copy(sharded, tmp_path / "bad")
    os.remove(bad / "pytorch_model-00002-of-00002.bin")
    out = run("convert", str(bad / INDEX), str(tmp_path / "none.safetensors"))
    assert out.returncode == 2 and not (tmp_path / "none.safetensors").exists()
    assert b"is missing" in out.stderr


REFERENCE = r"""
import sys, torch
torch.manual_seed(0)
out = int(sys.argv[2])
net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 32), torch.nn.Linear(32, out))
torch.save(net.state_dict(), sys.argv[1])
"""


def reference(tmp_path, out_features):
    path = tmp_path / ("ref%d.pt" % out_features)
    subprocess.run([PYTHON, "-c", REFERENCE, str(path), str(out_features)], check=True, timeout=300)
    return path


def test_check_takes_an_index_as_the_checkpoint(sharded, tmp_path):
    """`check INDEX`: the shards' tensors are one state dict, as
    transformers' load_sharded_checkpoint loads them into the model."""
    out = run("check", "--json", "--expect", str(reference(tmp_path, 4)), str(sharded / INDEX))
    assert out.returncode == 0, out.stderr
    doc = only_file(out)
    assert doc["ok"] and doc["state_dict"]["keys"] == 6 and doc["missing"] == [] and doc["unexpected"] == []
    assert sorted(doc["loaded"]) == sorted(json.load(open(sharded / INDEX))["weight_map"])
    bad = run("check", "--expect", str(reference(tmp_path, 5)), str(sharded / INDEX))
    assert bad.returncode == 1
    assert ("size mismatch for 3.weight: copying a param with shape torch.Size([4, 32]) from checkpoint, "
            "the shape in current model is torch.Size([5, 32]).") in bad.stdout.decode(), bad.stdout


def test_check_takes_an_index_as_the_reference(sharded, tmp_path):
    out = run("check", "--json", "--expect", str(sharded / INDEX), str(reference(tmp_path, 4)))
    assert out.returncode == 0, out.stderr
    doc = only_file(out)
    assert doc["ok"] and doc["expected"] == {"source": "reference sharded checkpoint", "tensors": 6,
                                             "has_metadata": False}


def test_check_of_an_index_names_a_missing_shard_and_refuses_a_prefix(sharded, tmp_path):
    ref = str(reference(tmp_path, 4))
    out = run("check", "--prefix", "model", "--expect", ref, str(sharded / INDEX))
    assert out.returncode == 2 and b"--prefix does not apply to a sharded state dict" in out.stderr, out.stderr
    broken = copy(sharded, tmp_path / "broken")
    os.remove(broken / "pytorch_model-00002-of-00002.bin")
    out = run("check", "--expect", ref, str(broken / INDEX))
    assert out.returncode == 2 and b"pytorch_model-00002-of-00002.bin" in out.stderr, out.stderr


def test_check_of_an_index_strips_a_wrapper_prefix_across_shards(sharded, tmp_path):
    """Shards of a DataParallel model (every key under 'module.'): the hint
    names --strip-prefix, and with it the keys of both shards fit."""
    wrapped = tmp_path / "wrapped"
    wrapped.mkdir()
    script = MAKE.replace("sd = net.state_dict()", "sd = torch.nn.DataParallel(net).state_dict()")
    subprocess.run([PYTHON, "-c", script, str(wrapped)], check=True, timeout=300)
    assert all(k.startswith("module.") for k in json.load(open(wrapped / INDEX))["weight_map"])
    ref = str(reference(tmp_path, 4))
    out = run("check", "--json", "--expect", ref, str(wrapped / INDEX))
    assert out.returncode == 1
    doc = only_file(out)
    assert any("--strip-prefix module." in h for h in doc["hints"]), doc["hints"]
    out = run("check", "--json", "--strip-prefix", "module.", "--expect", ref, str(wrapped / INDEX))
    assert out.returncode == 0, out.stdout
    assert only_file(out)["ok"]
