"""Issue 17: torch.distributed.checkpoint folders (.metadata + .distcp files
of torch archives back to back), written as torch 2.x's FileSystemWriter
writes them (dcp_writer.py, with Debian's torch 1.13 making every archive).
inspect, verify, convert, check and latest take the folder; digests equal
the values torch's reader gives (dcp_writer.load reads them as
FileSystemReader does). Hostile folders: the loaders that DCP uses (pickle.load
of .metadata, torch.load of an item's byte range) run the payload; ckptguard
refuses the folder naming the global, and scan calls it dangerous."""
import hashlib
import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
import dcp_writer  # noqa: E402
from ckg import PYTHON, describe, marker_path, run_cli, scan  # noqa: E402


def digest(t):
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()


def training_state():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.randn(2, 4)).sum().backward()
    opt.step()
    return {
        "model": net.state_dict(),
        "extra": {"emb": torch.arange(60, dtype=torch.float32).reshape(3, 4, 5),
                  "half": torch.randn(8, 2).to(torch.bfloat16),
                  "ids": torch.arange(10, dtype=torch.int64)},
        "optim": {"param_groups": opt.state_dict()["param_groups"]},
        "step": 1200,
        "epoch": 3,
        "note": "warmup done",
    }


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("dcp") / "step-1200"
    # Chunks split along dimension 0 (two ranks), and a 3-d tensor split
    # along dimension 1 too (runs of the last dimension land apart).
    dcp_writer.save(training_state(), str(d), ranks=2, split_dim0=("model.0.weight", "extra.half"),
                    split_dim1=("extra.emb",))
    return d


def inspect_json(path, *args):
    """The object of `path` in `inspect --json`'s document (its only file)."""
    out = run_cli("inspect", "--json", *args, str(path))
    assert out.returncode == 0, out.stderr.decode()
    doc = json.loads(out.stdout)
    assert len(doc["files"]) == 1, doc
    return doc["files"][0]


def test_a_distcp_file_is_archives_back_to_back(folder):
    r = scan(folder / "__0_0.distcp")
    assert r["verdict"] == "safe", describe(r)
    assert r["format"] == "zip-sequence", describe(r)
    info = run_cli("info", str(folder / "__0_0.distcp"))
    assert b"format: zip-sequence" in info.stdout
    # Loading the file alone says what it is.
    out = run_cli("inspect", str(folder / "__0_0.distcp"))
    assert out.returncode == 2
    assert b"load the checkpoint's folder" in out.stderr


def test_inspect_digests_equal_what_torch_reads(folder):
    doc = inspect_json(folder)
    assert doc["kind"] == "dcp"
    assert doc["files"] == ["__0_0.distcp", "__1_0.distcp"]
    want = dcp_writer.load(str(folder))
    tensors = {k: v for k, v in want.items() if isinstance(v, torch.Tensor)}
    assert set(doc["tensors"]) == set(tensors)
    for key, t in tensors.items():
        got = doc["tensors"][key]
        assert got["dtype"] == str(t.dtype).replace("torch.", ""), key
        assert got["shape"] == list(t.shape), key
        # bfloat16 has no numpy dtype: its bits, as int16.
        ref = t.view(torch.int16) if t.dtype == torch.bfloat16 else t
        assert got["sha256"] == digest(ref), key
    assert doc["tensors"]["model.0.weight"]["chunks"] == 2
    assert doc["tensors"]["extra.emb"]["chunks"] == 2
    assert doc["values"]["step"] == 1200
    assert doc["values"]["epoch"] == 3
    assert doc["values"]["note"] == "warmup done"
    assert doc["values"]["optim.param_groups"]["__list__"][0]["__dict__"][0] == ["lr", 0.1]
    # --prefix: the keys under model only.
    sub = inspect_json(folder, "--prefix", "model")
    assert set(sub["tensors"]) == {k for k in tensors if k.startswith("model.")}
    assert sub["values"] == {}


def test_torch_2_0_tensor_properties(tmp_path):
    # torch 2.0's .metadata names the sharded-tensor module's TensorProperties.
    d = tmp_path / "old"
    meta = dcp_writer.save({"w": torch.arange(6.0).reshape(2, 3)}, str(d), properties=dcp_writer.ShardTensorProperties)
    assert type(meta.state_dict_metadata["w"].properties).__module__ == dcp_writer.SHARD_META
    doc = inspect_json(d)
    assert doc["tensors"]["w"]["sha256"] == digest(torch.arange(6.0).reshape(2, 3))


def test_verify_and_latest(folder, tmp_path):
    out = run_cli("verify", "--json", str(folder))
    assert out.returncode == 0, out.stdout.decode()
    doc = json.loads(out.stdout)
    assert doc["summary"] == {"files": 1, "ok": 1, "failed": 0}, doc
    report = doc["files"][0]
    assert report["ok"] and report["format"] == "dcp"
    runs = tmp_path / "runs"
    shutil.copytree(folder, runs / "step-1200")
    shutil.copytree(folder, runs / "step-2400")
    # The newer one is torn: its rank-0 file was cut short.
    torn = runs / "step-2400" / "__0_0.distcp"
    with open(torn, "r+b") as f:
        f.truncate(os.path.getsize(torn) // 2)
    out = run_cli("latest", str(runs))
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.decode().strip() == str(runs / "step-1200")
    assert b"step-2400" in out.stderr and b"runs past the end of the file" in out.stderr
    out = run_cli("verify", str(runs / "step-2400"))
    assert out.returncode == 1
    assert b"BROKEN" in out.stdout


def read_safetensors(path):
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    return header, data[8 + n:]


def test_convert_assembles_chunks(folder, tmp_path):
    out_path = tmp_path / "model.safetensors"
    out = run_cli("convert", "--prefix", "model", str(folder), str(out_path))
    assert out.returncode == 0, out.stderr.decode()
    header, body = read_safetensors(out_path)
    want = dcp_writer.load(str(folder))
    for key, t in want.items():
        if not key.startswith("model."):
            continue
        h = header[key[len("model."):]]
        begin, end = h["data_offsets"]
        assert hashlib.sha256(body[begin:end]).hexdigest() == digest(t), key
    # The whole folder holds values: refused by name unless kept as JSON.
    out = run_cli("convert", str(folder), str(tmp_path / "all.safetensors"))
    assert out.returncode == 2
    assert b"step" in out.stderr and b"--keep-metadata" in out.stderr
    out = run_cli("convert", "--keep-metadata", str(folder), str(tmp_path / "all.safetensors"))
    assert out.returncode == 0, out.stderr.decode()
    header, _ = read_safetensors(tmp_path / "all.safetensors")
    values = json.loads(header["__metadata__"]["ckptguard.values"])
    assert values["step"] == 1200 and values["note"] == "warmup done"


def test_check_against_the_model(folder, tmp_path):
    ref = tmp_path / "ref.pt"
    torch.save(training_state()["model"], ref)
    out = run_cli("check", str(folder), "--expect", str(ref), "--prefix", "model")
    assert out.returncode == 0, out.stdout.decode()
    out = run_cli("check", str(folder), "--expect", str(ref), "--prefix", "extra")
    assert out.returncode == 1
    # The folder as the reference: a file saved from the model fits it.
    out = run_cli("check", str(ref), "--expect", str(folder), "--expect-prefix", "model")
    assert out.returncode == 0, out.stdout.decode()
    other = tmp_path / "other.pt"
    torch.save(torch.nn.Sequential(torch.nn.Linear(4, 7)).state_dict(), other)
    out = run_cli("check", str(other), "--expect", str(folder), "--expect-prefix", "model")
    assert out.returncode == 1
    assert b"size mismatch for 0.weight" in out.stdout, out.stdout.decode()


def broken_copy(folder, tmp_path, edit):
    """A copy of the folder whose Metadata `edit` changed."""
    d = tmp_path / "broken"
    shutil.copytree(folder, d)
    with open(d / ".metadata", "rb") as f:
        meta = pickle.load(f)
    edit(meta)
    with open(d / ".metadata", "wb") as f:
        pickle.dump(meta, f)
    return d


def storage_of(meta, fqn):
    return next(v for k, v in meta.storage_data.items() if k.fqn == fqn)


@pytest.mark.parametrize("edit,message", [
    (lambda m: setattr(storage_of(m, "step"), "relative_path", "../outside.distcp"), b"leaves the folder"),
    (lambda m: setattr(storage_of(m, "step"), "relative_path", "__9_0.distcp"), b"__9_0.distcp"),
    (lambda m: setattr(storage_of(m, "step"), "length", 10**9), b"runs past the end of the file"),
    (lambda m: setattr(m.state_dict_metadata["model.0.weight"].chunks[1], "offsets", torch.Size([2, 0])),
     b"model.0.weight"),
    (lambda m: m.state_dict_metadata["model.0.weight"].chunks.pop(), b"elements of"),
    (lambda m: setattr(m.state_dict_metadata["model.2.bias"], "size", torch.Size([4])), b"model.2.bias"),
    # One stored chunk named for both chunks of a tensor: refused, never
    # assembled twice over.
    (lambda m: m.storage_data.__setitem__(
        next(k for k in m.storage_data if k.fqn == "extra.half" and k.offset[0] > 0),
        next(v for k, v in m.storage_data.items() if k.fqn == "extra.half" and k.offset[0] == 0)),
     b"name the same item"),
])
def test_inconsistent_metadata_is_refused(folder, tmp_path, edit, message):
    d = broken_copy(folder, tmp_path, edit)
    out = run_cli("inspect", str(d))
    assert out.returncode == 2, out.stdout.decode()
    assert message in out.stderr, out.stderr.decode()
    out = run_cli("verify", str(d))
    assert out.returncode != 0 and b"BROKEN" in out.stdout


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, ("touch " + self.marker,))


def test_hostile_metadata(folder, tmp_path):
    marker = marker_path()
    d = tmp_path / "evil"
    shutil.copytree(folder, d)
    with open(d / ".metadata", "wb") as f:
        pickle.dump(Payload(marker), f)
    # FileSystemReader.read_metadata is pickle.load of the file.
    subprocess.run([PYTHON, "-c", "import pickle,sys; pickle.load(open(sys.argv[1], 'rb'))", str(d / ".metadata")],
                   capture_output=True, timeout=120)
    assert os.path.exists(marker)
    os.remove(marker)
    out = run_cli("inspect", str(d))
    assert out.returncode == 2
    assert b"system" in out.stderr and b".metadata" in out.stderr
    out = run_cli("scan", "--format", "json", str(d))
    report = json.loads(out.stdout)
    verdicts = {os.path.basename(f["path"]): f["verdict"] for f in report["files"]}
    assert verdicts[".metadata"] == "dangerous", verdicts
    assert not os.path.exists(marker)


LOAD_SLICE = r"""
import io, sys, torch
path, offset, length = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(path, "rb") as f:
    f.seek(offset)
    data = f.read(length)
# DefaultLoadPlanner.load_bytes before torch 2.6: torch.load of the item.
torch.load(io.BytesIO(data))
"""


@pytest.mark.parametrize("item", ["note", "step"])
def test_hostile_item_among_benign_ones(folder, tmp_path, item):
    marker = marker_path()
    d = tmp_path / "evil"
    buf = io.BytesIO()
    torch.save(Payload(marker), buf)
    meta = dcp_writer.save(training_state(), str(d), ranks=2, split_dim0=("model.0.weight",),
                           raw_items={item: buf.getvalue()})
    info = storage_of(meta, item)
    subprocess.run([PYTHON, "-c", LOAD_SLICE, str(d / info.relative_path), str(info.offset), str(info.length)],
                   capture_output=True, timeout=120)
    assert os.path.exists(marker)
    os.remove(marker)
    # The payload is one archive among several in the rank-0 file.
    r = scan(d / info.relative_path)
    assert r["verdict"] == "dangerous", describe(r)
    assert any("system" in f.get("global", "") for f in r["findings"]), describe(r)
    out = run_cli("inspect", str(d))
    assert out.returncode == 2
    assert b"system" in out.stderr and info.relative_path.encode() in out.stderr
    # The .metadata alone: the files it names are not in the scan, so every
    # range it names is scanned on its own.
    report = json.loads(run_cli("scan", "--format", "json", str(d / ".metadata")).stdout)
    by_path = {f["path"]: f["verdict"] for f in report["files"]}
    assert by_path[str(d / info.relative_path) + "@" + str(info.offset)] == "dangerous", by_path
    assert not os.path.exists(marker)


def split_end_records(archive, junk=b"\0" * 16):
    """The archive with bytes between its zip64 end record and the locator:
    torch's reader (miniz) follows the locator and loads it all the same,
    but the archive's end no longer tells where it begins."""
    at = archive.rfind(b"PK\x06\x07")
    assert at > 0 and archive.rfind(b"PK\x06\x06") == at - 56
    return archive[:at] + junk + archive[at:]


def test_hostile_item_placed_only_by_the_metadata(tmp_path):
    marker = marker_path()
    buf = io.BytesIO()
    torch.save(Payload(marker), buf)
    hidden = split_end_records(buf.getvalue())
    d = tmp_path / "evil"
    meta = dcp_writer.save(training_state(), str(d), ranks=1, raw_items={"note": hidden})
    info = storage_of(meta, "note")
    subprocess.run([PYTHON, "-c", LOAD_SLICE, str(d / info.relative_path), str(info.offset), str(info.length)],
                   capture_output=True, timeout=120)
    assert os.path.exists(marker)
    os.remove(marker)
    out = run_cli("scan", "--format", "json", str(d))
    report = json.loads(out.stdout)
    by_path = {f["path"]: f for f in report["files"]}
    item = by_path.get(str(d / info.relative_path) + "@" + str(info.offset))
    assert item is not None, sorted(by_path)
    assert item["verdict"] == "dangerous", item
    assert any(f["rule"] == "CKG-W013" for f in item["findings"])
    # The file itself does not read as archives back to back: an error.
    assert by_path[str(d / info.relative_path)]["verdict"] == "error"
    assert out.returncode == 2
    # A benign folder's ranges are all archives its files' scans read: no
    # report of their own.
    clean = tmp_path / "clean"
    dcp_writer.save(training_state(), str(clean), ranks=2, split_dim0=("model.0.weight",))
    report = json.loads(run_cli("scan", "--format", "json", str(clean)).stdout)
    assert all("@" not in f["path"] for f in report["files"]), [f["path"] for f in report["files"]]
    assert not os.path.exists(marker)


def test_many_chunks_split_along_one_dimension(tmp_path):
    # 512 ranks, each saving a column block: checked by a sweep, assembled
    # into the values torch's reader gives.
    d = tmp_path / "wide"
    t = torch.arange(4 * 1024, dtype=torch.float32).reshape(4, 1024)
    dcp_writer.save({"w": t}, str(d), ranks=512, split_dim1=("w",))
    doc = inspect_json(d)
    assert doc["tensors"]["w"]["chunks"] == 512
    assert doc["tensors"]["w"]["sha256"] == digest(t)


def test_a_broadcast_chunk_is_not_assembled(tmp_path):
    # A chunk saved as a stride-0 view of one element claims 2^20 elements:
    # assembling it would make memory no file holds; torch's writer never
    # saves one (it clones any view whose storage is not its own).
    d = tmp_path / "broadcast"
    big = torch.zeros(2, 1 << 20)
    dcp_writer.save({"w": big}, str(d), ranks=2, split_dim0=("w",),
                    edit_chunk=lambda fqn, part: torch.zeros(1).expand(part.shape))
    assert os.path.getsize(d / "__0_0.distcp") < 4096
    out = run_cli("inspect", str(d))
    assert out.returncode == 2
    assert b"a broadcast view" in out.stderr, out.stderr.decode()


def test_scan_reports_item_files_outside_the_folder_or_missing(folder, tmp_path):
    def edit(m):
        storage_of(m, "step").relative_path = "../outside.distcp"
        storage_of(m, "note").relative_path = "__7_0.distcp"
    d = broken_copy(folder, tmp_path, edit)
    out = run_cli("scan", "--format", "json", str(d))
    assert out.returncode == 2  # something a loader reads was not scanned
    by_path = {f["path"]: f for f in json.loads(out.stdout)["files"]}
    outside = by_path[str(d / "../outside.distcp")]
    assert outside["findings"][0]["rule"] == "CKG-W010" and outside["verdict"] == "error"
    missing = by_path[str(d / "__7_0.distcp")]
    assert missing["findings"][0]["rule"] == "CKG-W011"
