"""The output contract (docs/output.md): every --json output is one
document, carries schema_version and tool and validates against its JSON
Schema in docs/schemas/; every command answers a wrong command line with
exit status 3, apart from unreadable files (2)."""
import json
import pathlib
import subprocess

import pytest
from jsonschema import Draft202012Validator, RefResolver

from ckg import CLI, DATA

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "docs" / "schemas"
CORPUS = pathlib.Path(DATA) / "corpus"
EXAMPLES = ROOT / "examples"


def load_schemas():
    return {p.name: json.loads(p.read_text()) for p in SCHEMAS.glob("*.schema.json")}


def validator(name):
    schemas = load_schemas()
    store = {s["$id"]: s for s in schemas.values()}
    schema = schemas[name]
    return Draft202012Validator(schema, resolver=RefResolver.from_schema(schema, store=store))


def run(*args, stdin=None):
    return subprocess.run([CLI, *args], capture_output=True, timeout=300, input=stdin)


def corpus_files():
    files = sorted(p for sub in ("benign", "malicious") for p in (CORPUS / sub).iterdir()
                   if p.is_file() and not p.name.endswith(".expect.json"))
    assert len(files) > 20
    return files


def test_the_schemas_are_valid_json_schemas():
    schemas = load_schemas()
    assert {"tool.schema.json", "scan.schema.json", "verify.schema.json", "latest.schema.json",
            "check.schema.json", "inspect.schema.json"} <= set(schemas)
    for name, schema in schemas.items():
        Draft202012Validator.check_schema(schema)
        assert schema["$id"].endswith("/" + name)


def test_scan_reports_validate():
    v = validator("scan.schema.json")
    files = [str(p) for p in corpus_files()]
    for args in (files, ["--waive", "CKG-*", *files[:5]], ["https://127.0.0.1:1/absent.pt"], ["/nonexistent/x.pt"]):
        out = run("scan", "--format", "json", *args)
        assert out.returncode in (0, 1, 2)
        doc = json.loads(out.stdout)
        errors = sorted(v.iter_errors(doc), key=str)
        assert not errors, errors[0]
        assert doc["summary"]["files"] == len(doc["files"])
        assert sum(doc["summary"][k] for k in ("safe", "suspicious", "dangerous", "error")) == len(doc["files"])
    out = run("scan", "--format", "json", "-", stdin=(CORPUS / "malicious" / "os_system_p0.pkl").read_bytes())
    assert not list(v.iter_errors(json.loads(out.stdout)))


def test_verify_and_latest_validate(tmp_path):
    v = validator("verify.schema.json")
    files = [str(p) for p in corpus_files()]
    out = run("verify", "--json", *files, "/nonexistent/x.pt")
    assert out.returncode == 2  # the file that is not there
    doc = json.loads(out.stdout)
    errors = sorted(v.iter_errors(doc), key=str)
    assert not errors, errors[0]
    assert [f["path"] for f in doc["files"]] == files + ["/nonexistent/x.pt"]
    ok = sum(1 for f in doc["files"] if f["ok"])
    assert doc["summary"] == {"files": len(files) + 1, "ok": ok, "failed": len(files) + 1 - ok}
    assert 0 < ok < len(files)  # the corpus has whole and broken files
    latest = validator("latest.schema.json")
    for folder in (EXAMPLES, tmp_path):
        out = run("latest", "--json", str(folder))
        if out.stdout.strip():
            errors = list(latest.iter_errors(json.loads(out.stdout)))
            assert not errors, errors[0]


def test_check_validates():
    v = validator("check.schema.json")
    schema = str(EXAMPLES / "mlp.schema.json")
    good = run("check", "--json", str(EXAMPLES / "mlp.params"), "--expect", schema)
    bad = run("check", "--json", str(EXAMPLES / "mlp.params"), "--expect", "/nonexistent/schema.json")
    several = run("check", "--json", *[str(p) for p in corpus_files()], "--expect", schema)
    assert good.returncode == 0 and bad.returncode == 2 and several.returncode == 2
    for out, n in ((good, 1), (bad, 1), (several, len(corpus_files()))):
        doc = json.loads(out.stdout)
        errors = sorted(v.iter_errors(doc), key=str)
        assert not errors, errors[0]
        assert len(doc["files"]) == n
    assert "error" in json.loads(bad.stdout)["files"][0]
    kinds = {"error" in f for f in json.loads(several.stdout)["files"]}
    assert kinds == {True, False}  # the corpus has files check reads and files it refuses


def test_inspect_validates():
    v = validator("inspect.schema.json")
    files = [str(p) for p in corpus_files()]
    out = run("inspect", "--json", *files)
    assert out.returncode == 2  # the hostile files are refused
    doc = json.loads(out.stdout)
    errors = sorted(v.iter_errors(doc), key=str)
    assert not errors, errors[0]
    assert [f["path"] for f in doc["files"]] == files
    assert {"error" in f for f in doc["files"]} == {True, False}
    for f in doc["files"]:
        assert "schema_version" not in f and "tool" not in f  # the envelope's, once
    # A file that fails last still leaves one whole document.
    out = run("inspect", "--json", str(EXAMPLES / "mlp.params"), "/nonexistent/x.pt")
    assert out.returncode == 2
    doc = json.loads(out.stdout)
    assert not list(v.iter_errors(doc))
    assert doc["files"][1]["error"]["code"] == "io"


# Every command that prints JSON, and the schema its document keeps
# (info and disasm: the envelope).
SCHEMA_OF = {
    "scan": "scan.schema.json", "info": "tool.schema.json", "disasm": "tool.schema.json",
    "inspect": "inspect.schema.json", "verify": "verify.schema.json", "latest": "latest.schema.json",
    "check": "check.schema.json",
}


@pytest.mark.parametrize("args", [
    ["scan", "--format", "json"], ["info", "--json"], ["disasm", "--json"], ["inspect", "--json"],
    ["verify", "--json"], ["latest", "--json"], ["check", "--json", "--expect", str(EXAMPLES / "mlp.schema.json")],
], ids=lambda args: args[0])
def test_every_json_output_is_one_document_with_the_envelope(args):
    command = args[0]
    target = str(EXAMPLES if command == "latest" else EXAMPLES / "mlp.params")
    out = run(*args, target)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)  # one document: json.loads refuses anything after it
    assert not list(validator("tool.schema.json").iter_errors(doc))
    errors = sorted(validator(SCHEMA_OF[command]).iter_errors(doc), key=str)
    assert not errors, errors[0]
    assert doc["tool"]["command"] == command
    if command in ("inspect", "verify", "check"):
        # Printed while the files are done: the envelope comes first.
        assert list(doc)[:3] == ["schema_version", "tool", "files"]


def subcommands():
    help_text = run("--help").stdout.decode()
    names = []
    in_list = False
    for line in help_text.splitlines():
        if line.startswith("Subcommands:"):
            in_list = True
            continue
        if in_list and line.startswith("  ") and line.strip():
            names.append(line.split()[0])
        elif in_list and line and not line.startswith(" "):
            in_list = False
    assert "scan" in names and "registry" in names
    return names


def test_usage_errors_exit_3_in_every_command():
    assert run("--no-such-option").returncode == 3
    assert run("no-such-command").returncode == 3
    for name in subcommands():
        out = run(name, "--no-such-option")
        assert out.returncode == 3, (name, out.stderr)
    assert run("--help").returncode == 0
    assert run("--version").returncode == 0
    assert run("scan", "/nonexistent/model.pt").returncode == 2


@pytest.mark.parametrize("args", [
    ["info"], ["disasm"], ["inspect"], ["verify"], ["latest"],
    ["check", "--expect", str(EXAMPLES / "mlp.schema.json")],
])
def test_format_and_output_on_every_reporting_command(tmp_path, args):
    target = str(EXAMPLES if args[0] == "latest" else EXAMPLES / "mlp.params")
    flag = run(*args, "--json", target)
    fmt = run(*args, "--format", "json", target)
    assert fmt.returncode == flag.returncode
    assert fmt.stdout == flag.stdout
    out = tmp_path / "report.json"
    written = run(*args, "--format", "json", "--output", str(out), target)
    assert written.returncode == flag.returncode
    assert written.stdout == b""
    assert out.read_bytes() == flag.stdout
    assert run(*args, "--format", "xml", target).returncode == 3
    # An output path that is a link is refused; its target is untouched.
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / "link").symlink_to(victim)
    assert run(*args, "--output", str(tmp_path / "link"), target).returncode == 2
    assert victim.read_text() == "keep"
