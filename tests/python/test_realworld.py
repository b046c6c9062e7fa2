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
