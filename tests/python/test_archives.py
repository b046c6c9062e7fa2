"""Issue 14, item 4: tar and 7z archives are read member by member (each
member is a file of its own: what a user unpacks and loads). An archive
holding model files is judged by them: benign members make it safe, a
hostile member makes it dangerous; an archive of no model file is "not a
model file", like any other file."""
import io
import os
import subprocess
import tarfile

import pytest

from ckg import PYTHON, describe, load_runs_payload, marker_path, scan

MAKE = r"""
import sys, torch
torch.save({"w": torch.arange(6.0).reshape(2, 3), "step": 3}, sys.argv[1])
"""


def tar_of(path, members):
    with tarfile.open(path, "w") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))


def seven_zip_of(path, folder):
    """A 7z archive of `folder`'s files, written by libarchive's bsdtar."""
    subprocess.run(["bsdtar", "--format", "7zip", "-cf", str(path), "-C", str(folder), "."], check=True, timeout=60)


@pytest.fixture(scope="module")
def benign(tmp_path_factory):
    d = tmp_path_factory.mktemp("archives")
    ckpt = d / "model.pt"
    subprocess.run([PYTHON, "-c", MAKE, str(ckpt)], check=True, timeout=300)
    return ckpt.read_bytes()


def payload_pickle(marker):
    # os.system('touch MARKER') as protocol 2: GLOBAL posix system, REDUCE.
    cmd = ("touch " + marker).encode()
    return b"\x80\x02cposix\nsystem\nq\x00X" + len(cmd).to_bytes(4, "little") + cmd + b"\x85R."


def test_tar_of_checkpoints_is_judged_by_its_members(tmp_path, benign):
    path = tmp_path / "models.tar"
    tar_of(path, {"a/model.pt": benign, "b/model.pt": benign, "README.txt": b"two checkpoints\n"})
    r = scan(path)
    assert r["verdict"] == "safe", describe(r)
    assert not r.get("error"), describe(r)


def test_seven_zip_of_checkpoints_is_judged_by_its_members(tmp_path, benign):
    folder = tmp_path / "content"
    folder.mkdir()
    (folder / "model.pt").write_bytes(benign)
    path = tmp_path / "models.7z"
    seven_zip_of(path, folder)
    r = scan(path)
    assert r["verdict"] == "safe", describe(r)


def test_a_hostile_member_makes_the_archive_dangerous(tmp_path, benign):
    marker = marker_path()
    hostile = payload_pickle(marker)
    loose = tmp_path / "payload.pkl"
    loose.write_bytes(hostile)
    assert load_runs_payload(loose, marker)  # proven with the real unpickler
    for kind in ("tar", "7z"):
        path = tmp_path / ("models." + kind)
        if kind == "tar":
            tar_of(path, {"model.pt": benign, "extra/state.pkl": hostile})
        else:
            folder = tmp_path / "content7z"
            folder.mkdir(exist_ok=True)
            (folder / "model.pt").write_bytes(benign)
            (folder / "state.pkl").write_bytes(hostile)
            seven_zip_of(path, folder)
        r = scan(path)
        assert r["verdict"] == "dangerous", describe(r)
        assert any(f.get("global") == "posix.system" for f in r["findings"]), describe(r)
    assert not os.path.exists(marker)


def test_an_archive_of_no_model_file_is_not_a_model_file(tmp_path):
    path = tmp_path / "notes.tar"
    tar_of(path, {"notes.txt": b"nothing to load\n"})
    r = scan(path)
    assert r["verdict"] == "error", describe(r)
    assert "not a model file" in r["error"]["detail"], describe(r)
