"""Issue 16: text output never writes control characters, C1 controls,
bidi controls or invalid UTF-8 from a file to the terminal. A checkpoint
made by real torch carries them in its keys, string values, its archive
folder name (torch.save names the folder after the file) and its file name;
every command's text output (stdout and stderr) shows them escaped."""
import os
import subprocess

import pytest

from ckg import CLI, PYTHON, run_cli

# ESC (title, clear screen, colour), BEL, CR (overwrite the line), the C1 CSI
# (U+009B) and RIGHT-TO-LEFT OVERRIDE (U+202E).
HOSTILE = ["\x1b]0;pwned\x07", "\x1b[2J", "\x1b[31m", "\r", "\u009b", "\u202e"]
RAW = [b"\x1b", b"\x07", b"\r", "\u009b".encode(), "\u202e".encode()]

MAKE = r"""
import sys, torch
path, ref = sys.argv[1], sys.argv[2]
hostile = ["\x1b]0;pwned\x07", "\x1b[2J", "\x1b[31m", "\r", "\u009b", "\u202e"]
ckpt = {"w" + h + str(i): torch.full((2,), float(i)) for i, h in enumerate(hostile)}
ckpt["note"] = "step \x1b[1mbold\x1b[0m \u202eevil"
ckpt["step"] = 7
torch.save(ckpt, path)
torch.save({"expected" + h: torch.zeros(3) for h in hostile}, ref)
"""


def run(*args):
    return run_cli(*args, timeout=120)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("terminal")
    folder = d / "runs"
    folder.mkdir()
    # The file name itself carries ESC: torch.save names the archive's folder
    # after it, so every entry name does too.
    path = folder / "ck\x1b[31mpt\u202e.pt"
    ref = d / "reference.pt"
    subprocess.run([PYTHON, "-c", MAKE, str(path), str(ref)], check=True, timeout=300)
    torn = d / "torn\x1b[2J.pt"
    torn.write_bytes(path.read_bytes()[:-200])
    return {"path": str(path), "ref": str(ref), "folder": str(folder), "torn": str(torn)}


COMMANDS = {
    "inspect": lambda f: ["inspect", f["path"]],
    "inspect torn": lambda f: ["inspect", f["torn"]],
    "info": lambda f: ["info", f["path"]],
    "info torn": lambda f: ["info", f["torn"]],
    "disasm": lambda f: ["disasm", f["path"]],
    "verify": lambda f: ["verify", f["path"]],
    "verify torn": lambda f: ["verify", f["torn"]],
    "latest": lambda f: ["latest", f["folder"]],
    "scan text": lambda f: ["scan", f["path"], f["torn"]],
    "check": lambda f: ["check", f["path"], "--expect", f["ref"]],
}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_text_output_escapes_what_the_file_says(files, name):
    out = run(*COMMANDS[name](files))
    for stream, data in (("stdout", out.stdout), ("stderr", out.stderr)):
        for raw in RAW:
            assert raw not in data, "%s %s writes %r raw:\n%s" % (name, stream, raw, data.decode(errors="replace"))
        data.decode("utf-8")  # never invalid UTF-8 either
    # Not vacuous: the hostile text is shown, escaped.
    assert b"\\x1B" in out.stdout + out.stderr, (out.stdout + out.stderr).decode(errors="replace")


def test_invalid_utf8_in_a_path_is_escaped(tmp_path):
    bad = tmp_path / os.fsdecode(b"bad\xff\xfe.pt")
    bad.write_bytes(b"not a model")
    for args in (["inspect", str(bad)], ["info", str(bad)], ["verify", str(bad)], ["scan", str(bad)]):
        out = run(*args)
        (out.stdout + out.stderr).decode("utf-8")
        assert b"\\xFF\\xFE" in out.stdout + out.stderr, (args, out.stdout, out.stderr)
