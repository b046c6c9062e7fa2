"""Issue 14, item 7: the benign real-world corpus (tests/data/realworld, made
by make_realworld.py with Debian's python3 3.11, torch 1.13 and numpy) is
never called dangerous: Lightning hyper-parameters, Hydra configs, HF
TrainingArguments with Enum members (pickled by 3.11 as getattr), numpy RNG
states, optimizer states, legacy-format files, torch.distributed.checkpoint
.metadata."""
import os

import pytest

from ckg import DATA, describe, scan

REALWORLD = os.path.join(DATA, "realworld")
FILES = sorted(f for f in os.listdir(REALWORLD) if not f.endswith(".py"))


def test_corpus_is_complete():
    assert len(FILES) >= 17, FILES


@pytest.mark.parametrize("name", FILES)
def test_never_dangerous(name):
    r = scan(os.path.join(REALWORLD, name))
    assert r["verdict"] in ("safe", "suspicious"), describe(r)
    assert not any(f["severity"] == "dangerous" for f in r["findings"]), describe(r)


@pytest.mark.parametrize("name", [f for f in FILES if f.startswith("optimizer_")])
def test_optimizer_states_are_weights_only(name):
    r = scan(os.path.join(REALWORLD, name))
    assert r["verdict"] == "safe", describe(r)


def test_enum_members_are_names_not_calls():
    # Python 3.11 pickles Enum members as getattr(EnumClass, 'NAME').
    r = scan(os.path.join(REALWORLD, "training_args.bin"))
    globals_ = {f.get("global") for f in r["findings"]}
    assert "transformers.trainer_utils.IntervalStrategy.STEPS" in globals_, describe(r)
    assert r["verdict"] == "suspicious", describe(r)


PLAIN_PICKLES = r"""
import pickle, sys, torch
state = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(3, dtype=torch.int64), "step": 4}
for protocol in (2, 4):
    with open(sys.argv[1] + "/plain_p%d.pkl" % protocol, "wb") as f:
        pickle.dump(state, f, protocol=protocol)
    back = pickle.loads(open(sys.argv[1] + "/plain_p%d.pkl" % protocol, "rb").read())
    assert torch.equal(back["w"], state["w"])
"""


def test_plainly_pickled_tensors_are_not_dangerous(tmp_path):
    # pickle.dump of tensors (not torch.save) writes every storage as
    # torch.storage._load_from_bytes(<torch.save of it>): the loader runs
    # exactly that literal, which is scanned (CKG-F062), so a benign one is
    # suspicious (not weights-only), never dangerous.
    import subprocess
    from ckg import PYTHON
    subprocess.run([PYTHON, "-c", PLAIN_PICKLES, str(tmp_path)], check=True, timeout=300)
    for protocol in (2, 4):
        r = scan(tmp_path / ("plain_p%d.pkl" % protocol))
        assert r["verdict"] == "suspicious", describe(r)
        assert any(f["rule"] == "CKG-F062" and f["global"] == "torch.storage._load_from_bytes"
                   for f in r["findings"]), describe(r)
