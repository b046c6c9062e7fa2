#!/usr/bin/python3
"""Makes the benign real-world corpus of tests/data/realworld (issue 14, item 7).

Run with Debian's interpreter and packages (python3 3.11, torch 1.13, numpy 1.24):

    /usr/bin/python3 tests/data/realworld/make_realworld.py tests/data/realworld

Every file is what a real training stack writes: torch.save / pickle.dump of
the objects those stacks put in checkpoints. No file may be called dangerous by
`ckptguard scan` (tests/python/test_realworld.py); most are "suspicious" since
torch.load(weights_only=True) refuses them.

Packages Debian does not ship (pytorch-lightning, omegaconf, transformers,
torch >= 2.0's torch.distributed.checkpoint) are stood in for by classes
defined here under the real module and class names, with the same pickling
behaviour as the real ones (the same __reduce_ex__ path, the same
__getstate__ results), so the pickle opcodes are those the real packages
write. Each stand-in says which upstream version it follows. The files then
load only where those modules are importable, which is fine for a scanner
corpus: nothing here is meant to be loaded by the tests.
"""
import argparse
import copy
import dataclasses
import enum
import functools
import os
import pathlib
import pickle
import sys
import types
import typing
from collections import OrderedDict, defaultdict

import numpy as np
import torch

OUT = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__)))


def module(name):
    """A stand-in module registered under `name` (and its parents)."""
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        sub = ".".join(parts[:i])
        if sub not in sys.modules:
            sys.modules[sub] = types.ModuleType(sub)
            if i > 1:
                setattr(sys.modules[".".join(parts[:i - 1])], parts[i - 1], sys.modules[sub])
    return sys.modules[name]


def place(cls, modname):
    m = module(modname)
    cls.__module__ = modname
    setattr(m, cls.__name__, cls)
    return cls


# --- omegaconf 2.3 stand-ins (omegaconf/base.py, nodes.py, dictconfig.py) ---
@dataclasses.dataclass
class Metadata:
    ref_type: typing.Any
    object_type: typing.Any
    optional: bool
    key: typing.Any
    flags: typing.Optional[typing.Dict[str, bool]] = None
    flags_root: bool = False
    resolver_cache: typing.Dict[str, typing.Any] = dataclasses.field(default_factory=lambda: defaultdict(dict))


@dataclasses.dataclass
class ContainerMetadata(Metadata):
    key_type: typing.Any = None
    element_type: typing.Any = None


place(Metadata, "omegaconf.base")
place(ContainerMetadata, "omegaconf.base")


class Node:
    def __getstate__(self):
        # omegaconf 2.3 Node.__getstate__: the flags cache is not pickled.
        state = copy.copy(self.__dict__)
        del state["_flags_cache"]
        return state


class AnyNode(Node):
    def __init__(self, value, key, parent):
        self.__dict__["_metadata"] = Metadata(ref_type=typing.Any, object_type=None, optional=True, key=key)
        self.__dict__["_parent"] = parent
        self.__dict__["_flags_cache"] = None
        self.__dict__["_val"] = value


class IntegerNode(AnyNode):
    pass


class FloatNode(AnyNode):
    pass


class StringNode(AnyNode):
    pass


for c in (AnyNode, IntegerNode, FloatNode, StringNode):
    place(c, "omegaconf.nodes")


class DictConfig(Node):
    def __init__(self, content, key=None, parent=None):
        self.__dict__["_metadata"] = ContainerMetadata(ref_type=typing.Any, object_type=dict, optional=True, key=key,
                                                       key_type=typing.Any, element_type=typing.Any)
        self.__dict__["_parent"] = parent
        self.__dict__["_flags_cache"] = None
        nodes = {}
        for k, v in content.items():
            if isinstance(v, dict):
                nodes[k] = DictConfig(v, key=k, parent=self)
            elif isinstance(v, list):
                nodes[k] = ListConfig(v, key=k, parent=self)
            elif isinstance(v, bool) or v is None:
                nodes[k] = AnyNode(v, k, self)
            elif isinstance(v, int):
                nodes[k] = IntegerNode(v, k, self)
            elif isinstance(v, float):
                nodes[k] = FloatNode(v, k, self)
            else:
                nodes[k] = StringNode(v, k, self)
        self.__dict__["_content"] = nodes

    def __getstate__(self):
        # omegaconf 2.3 Container.__getstate__.
        state = copy.copy(self.__dict__)
        state.pop("_flags_cache", None)
        state["_metadata"] = copy.copy(state["_metadata"])
        return state


class ListConfig(DictConfig):
    def __init__(self, content, key=None, parent=None):
        self.__dict__["_metadata"] = ContainerMetadata(ref_type=typing.Any, object_type=list, optional=True, key=key,
                                                       key_type=int, element_type=typing.Any)
        self.__dict__["_parent"] = parent
        self.__dict__["_flags_cache"] = None
        self.__dict__["_content"] = [AnyNode(v, i, self) for i, v in enumerate(content)]


place(DictConfig, "omegaconf.dictconfig")
place(ListConfig, "omegaconf.listconfig")


# --- pytorch-lightning 1.9 AttributeDict (lightning_fabric/utilities/data.py) ---
class AttributeDict(dict):
    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError as e:
            raise AttributeError(key) from e

    def __setattr__(self, key, val):
        self[key] = val


place(AttributeDict, "lightning_fabric.utilities.data")


# --- transformers 4.3x TrainingArguments (training_args.py, trainer_utils.py) ---
class ExplicitEnum(str, enum.Enum):
    pass


class IntervalStrategy(ExplicitEnum):
    NO = "no"
    STEPS = "steps"
    EPOCH = "epoch"


class SchedulerType(ExplicitEnum):
    LINEAR = "linear"
    COSINE = "cosine"


class OptimizerNames(ExplicitEnum):
    ADAMW_HF = "adamw_hf"
    ADAMW_TORCH = "adamw_torch"


class HubStrategy(ExplicitEnum):
    END = "end"
    EVERY_SAVE = "every_save"


place(ExplicitEnum, "transformers.utils.generic")
place(IntervalStrategy, "transformers.trainer_utils")
place(SchedulerType, "transformers.trainer_utils")
place(HubStrategy, "transformers.trainer_utils")
place(OptimizerNames, "transformers.training_args")


@dataclasses.dataclass
class TrainingArguments:
    output_dir: str
    overwrite_output_dir: bool = False
    do_train: bool = True
    evaluation_strategy: IntervalStrategy = IntervalStrategy.STEPS
    per_device_train_batch_size: int = 8
    learning_rate: float = 5e-5
    weight_decay: float = 0.0
    num_train_epochs: float = 3.0
    lr_scheduler_type: SchedulerType = SchedulerType.LINEAR
    warmup_ratio: float = 0.0
    logging_strategy: IntervalStrategy = IntervalStrategy.STEPS
    save_strategy: IntervalStrategy = IntervalStrategy.EPOCH
    seed: int = 42
    optim: OptimizerNames = OptimizerNames.ADAMW_TORCH
    hub_strategy: HubStrategy = HubStrategy.EVERY_SAVE
    report_to: typing.List[str] = dataclasses.field(default_factory=lambda: ["tensorboard"])
    logging_dir: typing.Optional[str] = None


place(TrainingArguments, "transformers.training_args")


# --- torch 2.x torch.distributed.checkpoint records (metadata.py, filesystem.py) ---
class _MEM_FORMAT_ENCODING(enum.Enum):
    TORCH_CONTIGUOUS_FORMAT = 0
    TORCH_CHANNELS_LAST = 1
    TORCH_PRESERVE_FORMAT = 2


@dataclasses.dataclass
class ChunkStorageMetadata:
    offsets: torch.Size
    sizes: torch.Size


@dataclasses.dataclass
class TensorProperties:
    dtype: torch.dtype = dataclasses.field(default_factory=torch.get_default_dtype)
    layout: torch.layout = torch.strided
    requires_grad: bool = False
    memory_format: torch.memory_format = torch.contiguous_format
    pin_memory: bool = False

    def __getstate__(self):
        # torch 2.x: torch.memory_format cannot be pickled, so an enum member.
        return (self.dtype, self.layout, self.requires_grad, _MEM_FORMAT_ENCODING.TORCH_CONTIGUOUS_FORMAT,
                self.pin_memory)

    def __setstate__(self, state):
        self.dtype, self.layout, self.requires_grad, _, self.pin_memory = state
        self.memory_format = torch.contiguous_format


@dataclasses.dataclass
class TensorStorageMetadata:
    properties: TensorProperties
    size: torch.Size
    chunks: typing.List[ChunkStorageMetadata]


@dataclasses.dataclass
class BytesStorageMetadata:
    pass


@dataclasses.dataclass(frozen=True)
class MetadataIndex:
    fqn: str
    offset: typing.Optional[torch.Size] = None
    index: typing.Optional[int] = dataclasses.field(hash=False, compare=False, default=None)


@dataclasses.dataclass
class DcpMetadata:
    state_dict_metadata: typing.Dict[str, typing.Any]
    planner_data: typing.Any = None
    storage_data: typing.Any = None


DcpMetadata.__name__ = DcpMetadata.__qualname__ = "Metadata"


@dataclasses.dataclass
class _StorageInfo:
    relative_path: str
    offset: int
    length: int


for c in (_MEM_FORMAT_ENCODING, ChunkStorageMetadata, TensorProperties, TensorStorageMetadata, BytesStorageMetadata,
          MetadataIndex, DcpMetadata):
    place(c, "torch.distributed.checkpoint.metadata")
place(_StorageInfo, "torch.distributed.checkpoint.filesystem")


# --- the files ---------------------------------------------------------------
def model_and_optimizer(opt_cls, **kw):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = opt_cls(model.parameters(), **kw)
    loss = model(torch.randn(3, 4)).sum()
    loss.backward()
    opt.step()
    return model, opt


def lightning_checkpoint():
    model, opt = model_and_optimizer(torch.optim.Adam, lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=10)
    cfg = DictConfig({"model": {"hidden": 8, "dropout": 0.1, "act": "relu"},
                      "data": {"root": "/data/train", "batch_size": 32, "shuffle": True},
                      "trainer": {"max_epochs": 10, "devices": [0, 1]}})
    hparams = AttributeDict(
        args=argparse.Namespace(lr=1e-3, batch_size=32, data_dir=pathlib.PosixPath("/data/train"),
                                out=pathlib.Path("runs/exp1"), amp=False),
        optimizer=functools.partial(torch.optim.Adam, lr=1e-3, betas=(0.9, 0.999)),
        scheduler=functools.partial(torch.optim.lr_scheduler.StepLR, step_size=10),
        dtype=np.dtype("float32"),
        label_dtype=np.dtype([("x", "<f4"), ("y", "<i8")]),
        threshold=np.float64(0.5),
        counts=np.arange(5, dtype=np.int64),
        config=cfg,
        record=types.SimpleNamespace(name="exp1", tags=["a", "b"]),
    )
    return {
        "epoch": 3,
        "global_step": 300,
        "pytorch-lightning_version": "1.9.5",
        "state_dict": model.state_dict(),
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 3, "completed": 3}}}},
        "callbacks": {"ModelCheckpoint{'monitor': 'val_loss'}": {"best_model_score": torch.tensor(0.25),
                                                                 "best_model_path": "/runs/epoch=2.ckpt",
                                                                 "dirpath": "/runs"}},
        "optimizer_states": [opt.state_dict()],
        "lr_schedulers": [sched.state_dict()],
        "hparams_name": "kwargs",
        "hyper_parameters": hparams,
    }


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    ckpt = lightning_checkpoint()
    torch.save(ckpt, OUT / "lightning_hparams.ckpt")
    torch.save(ckpt, OUT / "lightning_hparams_legacy.ckpt", _use_new_zipfile_serialization=False)
    with open(OUT / "hydra_config.pkl", "wb") as f:
        pickle.dump(ckpt["hyper_parameters"]["config"], f, protocol=4)

    args = TrainingArguments(output_dir="out/run1", logging_dir="out/run1/logs")
    torch.save(args, OUT / "training_args.bin")
    with open(OUT / "training_args_p4.pkl", "wb") as f:
        pickle.dump(args, f, protocol=4)

    np.random.seed(0)
    rng = np.random.default_rng(1234)
    rng.random(3)
    legacy = np.random.RandomState(7)
    rng_states = {
        "numpy_global": np.random.get_state(),
        "numpy_bit_generator": rng.bit_generator.state,
        "numpy_generator": rng,
        "numpy_random_state": legacy,
        "torch": torch.get_rng_state(),
        "python": __import__("random").getstate(),
    }
    torch.save(rng_states, OUT / "rng_states.pt")
    with open(OUT / "rng_states_p2.pkl", "wb") as f:
        # Without the torch tensor: plain pickle writes a tensor as
        # torch.storage._load_from_bytes(bytes), a nested loader (dangerous by name).
        pickle.dump({k: v for k, v in rng_states.items() if k != "torch"}, f, protocol=2)
    with open(OUT / "rng_states_p5.pkl", "wb") as f:
        pickle.dump({k: v for k, v in rng_states.items() if k != "torch"}, f, protocol=5)

    optimizers = {
        "sgd": (torch.optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True)),
        "adam": (torch.optim.Adam, dict(lr=1e-3, amsgrad=True)),
        "adamw": (torch.optim.AdamW, dict(lr=1e-3, weight_decay=0.01)),
        "rmsprop": (torch.optim.RMSprop, dict(lr=1e-2, momentum=0.5, centered=True)),
        "adagrad": (torch.optim.Adagrad, dict(lr=1e-2)),
        "adadelta": (torch.optim.Adadelta, dict()),
        "nadam": (torch.optim.NAdam, dict()),
    }
    for name, (cls, kw) in optimizers.items():
        model, opt = model_and_optimizer(cls, **kw)
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 1},
                   OUT / ("optimizer_%s.pt" % name))
    model, opt = model_and_optimizer(torch.optim.SGD, lr=0.1, momentum=0.9)
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 1},
               OUT / "optimizer_sgd_legacy.pt", _use_new_zipfile_serialization=False)

    # Records of the standard library and numpy that configs and loggers keep.
    import array
    import collections
    import datetime
    import decimal
    import fractions
    import random
    import re
    import uuid
    misc = {
        "when": datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.timezone.utc),
        "day": datetime.date(2024, 5, 1),
        "took": datetime.timedelta(hours=3, seconds=5),
        "price": decimal.Decimal("1.25"),
        "ratio": fractions.Fraction(1, 3),
        "run_id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "recent": collections.deque([1, 2, 3], maxlen=5),
        "by_class": defaultdict(list, {"a": [1]}),
        "counts": collections.Counter("hello"),
        "ordered": OrderedDict(a=1),
        "ns": types.SimpleNamespace(a=1),
        "pure": pathlib.PurePosixPath("/x/y"),
        "pattern": re.compile(r"layer\.(\d+)\.weight"),
        "ints": array.array("i", [1, 2, 3]),
        "py_rng": random.Random(5),
        "seed_seq": np.random.SeedSequence(42),
        "masked": np.ma.masked_array([1.0, 2.0], [0, 1]),
        "when64": np.datetime64("2024-05-01"),
        "range": range(0, 10, 2),
        "cut": slice(1, 5),
        "frozen": frozenset({1, 2}),
        "cplx": complex(1, 2),
    }
    for protocol in (2, 4, 5):
        with open(OUT / ("stdlib_records_p%d.pkl" % protocol), "wb") as f:
            pickle.dump(misc, f, protocol=protocol)

    w = TensorProperties(dtype=torch.float32)
    metadata = DcpMetadata(
        state_dict_metadata={
            "model.weight": TensorStorageMetadata(properties=w, size=torch.Size([4, 4]),
                                                  chunks=[ChunkStorageMetadata(offsets=torch.Size([0, 0]),
                                                                               sizes=torch.Size([4, 4]))]),
            "model.bias": TensorStorageMetadata(properties=TensorProperties(dtype=torch.float16), size=torch.Size([4]),
                                                chunks=[ChunkStorageMetadata(offsets=torch.Size([0]),
                                                                             sizes=torch.Size([4]))]),
            "step": BytesStorageMetadata(),
        },
        planner_data={"model.weight": ("model", "weight"), "model.bias": ("model", "bias"), "step": ("step",)},
        storage_data={
            MetadataIndex(fqn="model.weight", offset=torch.Size([0, 0]), index=0):
                _StorageInfo(relative_path="__0_0.distcp", offset=0, length=64),
            MetadataIndex(fqn="model.bias", offset=torch.Size([0]), index=0):
                _StorageInfo(relative_path="__0_0.distcp", offset=64, length=8),
            MetadataIndex(fqn="step"): _StorageInfo(relative_path="__0_0.distcp", offset=72, length=40),
        },
    )
    # torch.distributed.checkpoint.FileSystemWriter.finish: pickle.dump(metadata, f) (protocol 4 on 3.11).
    with open(OUT / "dcp.metadata", "wb") as f:
        pickle.dump(metadata, f)


if __name__ == "__main__":
    main()
