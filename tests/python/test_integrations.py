"""The integration files, run as their hosts would run them: the pre-commit
hook (.pre-commit-hooks.yaml: entry + args + the staged files its `files`
pattern selects) and the GitHub Action (action.yml: its shell steps with
the inputs as environment, GITHUB_OUTPUT and GITHUB_PATH as files), with
the built ckptguard first on PATH."""
import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess

import pytest
import yaml

from ckg import CLI, DATA

ROOT = pathlib.Path(__file__).resolve().parents[2]
BENIGN = pathlib.Path(DATA) / "corpus" / "benign" / "mlp.params"
SUSPICIOUS = pathlib.Path(DATA) / "corpus" / "benign" / "whole_module.pt"
HOSTILE = pathlib.Path(DATA) / "corpus" / "malicious" / "os_system_p0.pkl"


def env_with_cli():
    env = dict(os.environ)
    env["PATH"] = str(pathlib.Path(CLI).parent) + os.pathsep + env.get("PATH", "")
    return env


@pytest.fixture
def repo(tmp_path):
    """A working tree with a benign, a suspicious-only and a hostile model file."""
    (tmp_path / "models").mkdir()
    shutil.copy(BENIGN, tmp_path / "models" / "weights.pt")
    shutil.copy(SUSPICIOUS, tmp_path / "models" / "module.pth")
    shutil.copy(HOSTILE, tmp_path / "models" / "checkpoint.ckpt")
    (tmp_path / "README.md").write_text("not a model\n")
    return tmp_path


def hook():
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    (h,) = [h for h in hooks if h["id"] == "ckptguard-scan"]
    return h


def run_hook(repo, files, args=()):
    """pre-commit's way: entry, the hook's args, then the staged files that match `files`."""
    h = hook()
    selected = [f for f in files if re.search(h["files"], f)]
    if not selected:
        return None
    cmd = shlex.split(h["entry"]) + list(args) + selected
    return subprocess.run(cmd, cwd=repo, env=env_with_cli(), capture_output=True, text=True, timeout=120)


def test_pre_commit_hook_selects_model_files_and_blocks_hostile_ones(repo):
    h = hook()
    assert h["language"] == "system"
    for name in ["a.pt", "b.PTH", "c.bin", "d.ckpt", "e.pkl", "f.safetensors", "g.npy", "h.npz", "i.joblib"]:
        assert re.search(h["files"], name), name
    for name in ["README.md", "train.py", "config.yaml"]:
        assert not re.search(h["files"], name), name
    assert run_hook(repo, ["README.md"]) is None  # nothing to scan: the hook does not run
    clean = run_hook(repo, ["models/weights.pt", "README.md"])
    assert clean.returncode == 0, clean.stdout + clean.stderr
    blocked = run_hook(repo, ["models/weights.pt", "models/checkpoint.ckpt"])
    assert blocked.returncode == 1
    assert "dangerous" in blocked.stdout
    # A user's args come before the files: only dangerous files block.
    assert run_hook(repo, ["models/module.pth"]).returncode == 1
    assert run_hook(repo, ["models/module.pth"], ["--fail-on", "dangerous"]).returncode == 0


def action_step(name):
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    assert action["runs"]["using"] == "composite"
    (step,) = [s for s in action["runs"]["steps"] if s.get("name") == name]
    return action, step


def run_action(repo, tmp_path, **inputs):
    """The action's Scan step (then its Verdict step) as the runner runs them."""
    action, scan = action_step("Scan")
    values = {k: str(v.get("default", "")) for k, v in action["inputs"].items()}
    values.update({k.replace("_", "-"): v for k, v in inputs.items()})
    env = env_with_cli()
    for key, expr in scan["env"].items():
        m = re.fullmatch(r"\$\{\{ inputs\.([a-z-]+) \}\}", expr)
        assert m, expr
        env[key] = values[m.group(1)]
    out_file = tmp_path / "github_output"
    out_file.write_text("")
    env["GITHUB_OUTPUT"] = str(out_file)
    step = subprocess.run(["bash", "-e", "-c", scan["run"]], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=120)
    assert step.returncode == 0, step.stdout + step.stderr  # the Scan step itself never fails
    outputs = dict(line.split("=", 1) for line in out_file.read_text().splitlines())
    _, verdict = action_step("Verdict")
    script = verdict["run"].replace("${{ steps.scan.outputs.exit-code }}", outputs["exit-code"])
    final = subprocess.run(["bash", "-e", "-c", script], cwd=repo, capture_output=True, text=True)
    return int(outputs["exit-code"]), final.returncode, repo / values["sarif"]


def test_github_action_writes_sarif_and_fails_the_job_on_findings(repo, tmp_path):
    code, job, sarif = run_action(repo, tmp_path, paths="models")
    assert code == 1 and job == 1
    report = json.loads(sarif.read_text())
    assert report["version"] == "2.1.0"
    results = report["runs"][0]["results"]
    assert any(r["level"] == "error" and "checkpoint.ckpt" in r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
               for r in results)
    # The upload step reads the same report.
    action, upload = action_step("Upload SARIF")
    assert upload["uses"].startswith("github/codeql-action/upload-sarif@")
    assert upload["with"]["sarif_file"] == "${{ inputs.sarif }}"


def test_github_action_inputs_fail_on_and_waive(repo, tmp_path):
    (repo / "models" / "checkpoint.ckpt").unlink()
    code, job, _ = run_action(repo, tmp_path, paths="models", fail_on="dangerous")
    assert code == 0 and job == 0  # suspicious only
    code, _, _ = run_action(repo, tmp_path, paths="models/weights.pt models/module.pth")
    assert code == 1
    shutil.copy(HOSTILE, repo / "models" / "checkpoint.ckpt")
    rules = {f["rule"] for f in json.loads(subprocess.run([CLI, "scan", "--format", "json", str(HOSTILE)],
                                                          capture_output=True, text=True).stdout)["files"][0]["findings"]}
    waive = " ".join(r + ":checkpoint.ckpt" for r in sorted(rules))
    code, job, sarif = run_action(repo, tmp_path, paths="models", fail_on="dangerous", waive=waive, sarif="out.sarif")
    assert code == 0 and job == 0
    suppressed = [r for r in json.loads(sarif.read_text())["runs"][0]["results"] if r.get("suppressions")]
    assert len(suppressed) >= 1
    code, _, _ = run_action(repo, tmp_path, paths="models", fail_on="nonsense")
    assert code == 3
