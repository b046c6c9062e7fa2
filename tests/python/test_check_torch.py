"""Issue 16: `ckptguard check` answers what torch 1.13's
Module.load_state_dict answers. check_oracle.py makes every (model,
checkpoint) pair with real torch in one subprocess and records what
load_state_dict(strict=True) and (strict=False) raise or return; each pair is
then checked with both kinds of reference `check --expect` takes (a
torch.save(model.state_dict()) reference checkpoint and the JSON schema),
and check must name the same exception (type and exact message), the same
missing and unexpected keys in torch's order, the same mismatched keys and
the same tensors loaded by strict=False."""
import collections
import concurrent.futures
import json
import os
import re
import subprocess

import pytest

from ckg import CLI, PYTHON
import check_oracle

HERE = os.path.dirname(os.path.abspath(__file__))
KINDS = ("reference", "schema")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    out = tmp_path_factory.mktemp("check_torch")
    subprocess.run([PYTHON, os.path.join(HERE, "check_oracle.py"), str(out)], check=True, timeout=600,
                   capture_output=True)
    with open(out / "manifest.json") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def json_runs(manifest):
    """`check --json` of every pair with both kinds of reference. Pairs that
    share a reference (and --prefix/--strip-prefix) go through one run with
    several FILEs (an ASan build takes most of a second to start): one JSON
    document, its files[] one object per FILE, in FILE order. Each pair's
    run holds its own object as stdout."""
    groups = collections.OrderedDict()
    for name in check_oracle.CASES:
        p = manifest[name]
        groups.setdefault((p["group"], p["prefix"], p["strip"], p["model_class"]), []).append(name)
    jobs = [(names, kind) for names in groups.values() for kind in KINDS]

    def run(job):
        names, kind = job
        first = manifest[names[0]]
        out = check(first, kind, "--json", *[manifest[n]["checkpoint"] for n in names[1:]])
        doc = json.loads(out.stdout)
        assert doc["tool"]["command"] == "check", out.stdout
        files = doc["files"]
        assert len(files) == len(names), (out.stdout, out.stderr)
        assert [f["path"] for f in files] == [manifest[n]["checkpoint"] for n in names]
        return [((n, kind), subprocess.CompletedProcess(out.args, out.returncode, json.dumps(f), out.stderr))
                for n, f in zip(names, files)]

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        return dict(item for items in pool.map(run, jobs) for item in items)


def check(pair, kind, *extra):
    assert CLI, "CKPTGUARD_CLI is not set (run through ctest)"
    args = [CLI, "check", pair["checkpoint"], "--expect", pair[kind], "--model-class", pair["model_class"]]
    if pair["prefix"]:
        args += ["--prefix", pair["prefix"]]
    if pair["strip"]:
        args += ["--strip-prefix", pair["strip"]]
    return subprocess.run(args + list(extra), capture_output=True, text=True, timeout=120)


def mismatched_keys(message):
    """The keys torch's error messages name (size mismatches, non-tensors)."""
    return sorted(re.findall(r"size mismatch for (.*?): copying", message) +
                  re.findall(r'While copying the parameter named "(.*?)"', message))


def test_enough_pairs():
    assert len(check_oracle.CASES) >= 60


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", list(check_oracle.CASES))
def test_check_agrees_with_torch(manifest, json_runs, name, kind):
    pair = manifest[name]
    run = json_runs[(name, kind)]
    assert run.returncode in (0, 1), run.stderr
    got = json.loads(run.stdout)
    for mode in ("strict", "non_strict"):
        want = pair["torch"][mode]
        mine = got["results"][mode]
        if want["raised"]:
            assert mine["exception"] is not None, (mode, want)
            assert mine["exception"]["type"] == want["type"], (mode, mine, want)
            assert mine["exception"]["message"] == want["message"], mode
            if want["type"] == "RuntimeError":
                assert sorted(m["key"] for m in got["mismatched"]) == mismatched_keys(want["message"])
        else:
            assert mine["exception"] is None, (mode, mine)
            assert got["missing"] == want["missing"], mode
            assert got["unexpected"] == want["unexpected"], mode
            # What strict=False loads: every tensor torch changed, and no other.
            certain = [k for k in got["loaded"] if k not in want["uncertain"]]
            assert sorted(certain) == sorted(want["changed"]), mode
    assert run.returncode in (0, 1)
    assert got["ok"] == (not pair["torch"]["strict"]["raised"])


@pytest.mark.parametrize("name", ["data_parallel_into_plain", "lightning_checkpoint_top", "partial_overlap",
                                  "non_tensor_at_expected_key_int", "zero_d_from_empty", "exact"])
def test_exit_status_follows_the_mode(manifest, name):
    pair = manifest[name]
    for mode, flag in (("strict", "--strict"), ("non_strict", "--non-strict")):
        run = check(pair, "schema", flag)
        assert run.returncode == (1 if pair["torch"][mode]["raised"] else 0), run.stdout + run.stderr


HINTS = {
    "data_parallel_into_plain": "--strip-prefix module.",
    "sequential_zero_prefix_into_plain": "--strip-prefix 0.",
    "lightning_model_prefix": "--strip-prefix model.",
    "lightning_checkpoint_top": "--prefix state_dict --strip-prefix model.",
    "state_dict_wrapper_top": "--prefix state_dict",
    "plain_into_data_parallel": "model.module.load_state_dict",
    "plain_into_sequential_zero_prefix": "every key would fit under '0.'",
    "torch_compile_prefix": "--strip-prefix _orig_mod.",
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", sorted(HINTS))
def test_wrapper_prefixes_are_hints_not_fixes(json_runs, name, kind):
    got = json.loads(json_runs[(name, kind)].stdout)
    assert not got["ok"] and got["results"]["strict"]["exception"]  # still fails, as torch does
    assert any(HINTS[name] in h for h in got["hints"]), got["hints"]


@pytest.mark.parametrize("name", ["different_architecture", "partial_overlap", "size_mismatch_wider"])
def test_no_hint_when_nothing_would_fit(json_runs, name):
    got = json.loads(json_runs[(name, "reference")].stdout)
    assert got["hints"] == []


def test_text_warns_when_non_strict_loads_nothing(manifest):
    out = check(manifest["data_parallel_into_plain"], "reference").stdout
    assert "WARNING: strict=False would load NOTHING" in out, out
    assert "strict=True:  raises RuntimeError: Error(s) in loading state_dict for Net:" in out, out
    assert 'Missing key(s) in state_dict: "fc1.weight"' in out, out
    assert "hint: every key would fit with 'module.' stripped: --strip-prefix module." in out, out
    partial = check(manifest["partial_overlap"], "reference").stdout
    assert "WARNING: strict=False would load only 1 of the model's 4 tensors (25%)" in partial, partial


def test_text_names_what_torch_ignores_and_fills(manifest):
    out = check(manifest["child_module_names_as_keys"], "schema").stdout
    assert "ignored (2)" in out and "names the child module 'act'" in out, out
    none = check(manifest["none_child_keys"], "reference").stdout
    assert "a child registered as None" in none, none
    bn = check(manifest["batchnorm_no_num_batches_tracked_no_metadata"], "reference").stdout
    assert "filled (1)" in bn and "bn.num_batches_tracked" in bn and "_NormBase._load_from_state_dict" in bn, bn
    meta = check(manifest["batchnorm_exact"], "reference").stdout
    assert "_metadata: '' v1, 'conv' v1, 'bn' v2" in meta, meta


def test_extra_state_depends_on_user_code(json_runs):
    got = json.loads(json_runs[("extra_state_present", "reference")].stdout)
    assert any("set_extra_state" in c and "user code" in c for c in got["caveats"]), got["caveats"]


def test_not_a_state_dict_invents_no_keys(json_runs):
    for name in ("list_at_top", "bare_tensor_at_top"):
        got = json.loads(json_runs[(name, "schema")].stdout)
        assert got["missing"] == [] and got["unexpected"] == [] and got["loaded"] == []
        assert got["results"]["strict"]["exception"]["type"] == "TypeError"


def test_a_lazy_reference_loads_and_scans_clean(manifest):
    """The reference of an uninitialised LazyLinear pickles
    torch.nn.parameter.UninitializedParameter: loaded as a placeholder
    (nothing runs), and the scanner does not flag it."""
    ref = manifest["lazy_model_initialised_checkpoint"]["reference"]
    scan = subprocess.run([CLI, "scan", "--format", "json", ref], capture_output=True, text=True, timeout=120)
    assert scan.returncode == 0, scan.stdout + scan.stderr
    assert json.loads(scan.stdout)["files"][0]["verdict"] == "safe"
    tree = subprocess.run([CLI, "inspect", ref], capture_output=True, text=True, timeout=120)
    assert tree.returncode == 0, tree.stderr
    assert "lazy.weight: torch.nn.parameter.UninitializedParameter" in tree.stdout, tree.stdout


def test_spectral_norm_hook_is_named_when_it_may_act(json_runs):
    """SpectralNormLoadStateDictPreHook is torch's, but not modelled: check
    says so when the checkpoint's _metadata does not rule it out."""
    plain = json.loads(json_runs[("spectral_norm_plain_dict", "reference")].stdout)
    assert any("SpectralNormLoadStateDictPreHook" in c for c in plain["caveats"]), plain["caveats"]
    exact = json.loads(json_runs[("spectral_norm_exact", "schema")].stdout)
    assert not any("SpectralNorm" in c for c in exact["caveats"]), exact["caveats"]
