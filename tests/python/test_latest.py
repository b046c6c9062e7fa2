"""Issue 17: `ckptguard latest` on the folders trainers write, made by real
torch 1.13: Lightning-style files whose progress is in the name or stored
as a tensor, and Hugging Face Trainer checkpoint-N folders taken as one
unit (their rng_state.pth holds numpy's RNG state, a declared record). stdout
is the chosen path alone, whatever else is said goes to stderr."""
import json
import os
import subprocess

import pytest

from ckg import CLI, PYTHON, run_cli

MAKE = r"""
import json, os, random, sys, numpy, torch
root = sys.argv[1]
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
sched = torch.optim.lr_scheduler.StepLR(opt, step_size=10)
net(torch.randn(3, 4)).sum().backward()
opt.step(); sched.step()

# Lightning-style files: progress in the checkpoint, the step once as a
# 0-dim tensor (some loops keep it that way), once only in the name.
light = os.path.join(root, "light")
os.makedirs(light)
def lightning(epoch, step):
    return {"state_dict": net.state_dict(), "optimizer_states": [opt.state_dict()],
            "lr_schedulers": [sched.state_dict()], "epoch": epoch, "global_step": step}
torch.save(lightning(3, 400), os.path.join(light, "epoch=3-step=400.ckpt"))
torch.save(lightning(9, torch.tensor(1000)), os.path.join(light, "run-a.ckpt"))
torch.save(net.state_dict(), os.path.join(light, "epoch=5-step=600.ckpt"))

# Hugging Face Trainer folders.
out = os.path.join(root, "trainer")
for step, epoch in ((500, 1.0), (1000, 2.0), (1500, 3.0)):
    d = os.path.join(out, "checkpoint-%d" % step)
    os.makedirs(d)
    torch.save(net.state_dict(), os.path.join(d, "pytorch_model.bin"))
    torch.save(opt.state_dict(), os.path.join(d, "optimizer.pt"))
    torch.save(sched.state_dict(), os.path.join(d, "scheduler.pt"))
    # As the Trainer writes it (_save_rng_state): numpy's state holds an array.
    torch.save({"python": random.getstate(), "numpy": numpy.random.get_state(), "cpu": torch.get_rng_state()},
               os.path.join(d, "rng_state.pth"))
    with open(os.path.join(d, "trainer_state.json"), "w") as f:
        json.dump({"global_step": step, "epoch": epoch, "log_history": [{"loss": 0.5, "step": step}]}, f)
# The newest folder was cut off while its scheduler state was written.
cut = os.path.join(out, "checkpoint-1500", "scheduler.pt")
data = open(cut, "rb").read()
open(cut, "wb").write(data[: len(data) - 40])
"""


def run(*args):
    return run_cli(*args, timeout=300)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("latest")
    subprocess.run([PYTHON, "-c", MAKE, str(d)], check=True, timeout=300)
    return d


def test_a_step_stored_as_a_tensor_counts_as_a_step(runs):
    light = runs / "light"
    # Make the tensor-step file the oldest: it must win on its step, not its time.
    os.utime(light / "run-a.ckpt", (1, 1))
    out = run("latest", str(light))
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.decode() == str(light / "run-a.ckpt") + "\n"
    doc = json.loads(run("latest", "--json", str(light)).stdout)
    assert doc["order"] == "step"
    assert doc["chosen"]["progress"] == {"step": 1000, "step_from": "global_step", "epoch": 9, "epoch_from": "epoch"}
    older = {os.path.basename(c["path"]): c["progress"] for c in doc["older"]}
    # A bare state dict's progress comes from its Lightning name.
    assert older["epoch=5-step=600.ckpt"] == {"step": 600, "step_from": "file name", "epoch": 5,
                                             "epoch_from": "file name"}
    assert older["epoch=3-step=400.ckpt"]["step"] == 400


def test_a_trainer_folder_is_one_checkpoint(runs):
    trainer = runs / "trainer"
    out = run("latest", str(trainer))
    assert out.returncode == 0, out.stderr.decode()
    # checkpoint-1500's scheduler state is torn: the whole folder is skipped.
    assert out.stdout.decode() == str(trainer / "checkpoint-1000") + "\n"
    err = out.stderr.decode()
    assert "skipped " + str(trainer / "checkpoint-1500") in err, err
    assert "scheduler.pt" in err, err
    doc = json.loads(run("latest", "--json", str(trainer)).stdout)
    chosen = doc["chosen"]
    assert chosen["folder"] is True and chosen["ok"] is True
    assert chosen["files"] == ["optimizer.pt", "pytorch_model.bin", "rng_state.pth", "scheduler.pt"]
    assert chosen["progress"]["step"] == 1000 and chosen["progress"]["step_from"] == "trainer_state.json"
    assert [os.path.basename(c["path"]) for c in doc["skipped"]] == ["checkpoint-1500"]
    assert [os.path.basename(c["path"]) for c in doc["older"]] == ["checkpoint-500"]


def test_the_resume_idiom_gets_a_path_torch_loads(runs):
    trainer = runs / "trainer"
    chosen = run("latest", str(trainer)).stdout.decode().rstrip("\n")
    load = "import sys, torch; sd = torch.load(sys.argv[1] + '/pytorch_model.bin'); print(len(sd))"
    out = subprocess.run([PYTHON, "-c", load, chosen], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip() == "4"
