#!/usr/bin/python3
"""Writes random but deterministic PyTorch checkpoints, each with its corpus-format expect JSON.

    /usr/bin/python3 tests/interop/gen_torch_checkpoints.py OUTDIR [--seed N] [--count N] [--strict]

Case i uses recipe i % len(RECIPES) and is written as case_NNN.pt (zip, kind "torch-zip") or
case_NNN.pth (legacy, kind "torch-legacy"); the format alternates so every recipe gets both.
Each file F gets F.expect.json (the format of tests/data/corpus, see expect_format.py), and
OUTDIR/manifest.jsonl gets one line per file: file, kind, recipe, and whether torch 1.13's
torch.load(weights_only=True) accepts it.

torch 1.13's weights-only unpickler refuses Python floats (no BINFLOAT opcode) and bytes
(pickled as _codecs.encode), so optimizer state_dicts and the scalar recipes are refused by it.
For those files the script checks that weights_only=True does refuse them and reloads them with
restricted_load (the same allowlist plus floats and bytes) instead. --strict replaces every
Python float by a 0-dim float64 tensor and every bytes by a uint8 tensor, so that every file
loads with weights_only=True.

Every file is reloaded and its expect JSON recomputed from the loaded object; any difference
is an error. Content is a function of (seed, case index) only; the legacy files' bytes still
differ between runs because torch names legacy storages by their memory address.
"""
import argparse
import json
import math
import os
import random
import struct
import sys
import time
from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from expect_format import dump_expect, dumps_expect, expect_json  # noqa: E402
from restricted_load import restricted_load  # noqa: E402

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int8, torch.int16,
          torch.int32, torch.int64, torch.uint8, torch.bool, torch.complex64, torch.complex128]

# smallest subnormal, a mid subnormal, the largest finite value, per floating dtype
SPECIALS = {
    torch.float32: [1e-45, 3e-39, 3.4028234663852886e38],
    torch.float64: [5e-324, 1e-310, 1.7976931348623157e308],
    torch.float16: [2.0 ** -24, 2.0 ** -20, 65504.0],
    torch.bfloat16: [2.0 ** -133, 2.0 ** -128, 3.3895313892515355e38],
}


def dname(d):
    return str(d).replace("torch.", "")


# ---------------------------------------------------------------- random tensors

def rand_shape(rng, max_numel=3000):
    r = rng.random()
    if r < 0.1:
        return []                                   # 0-dim scalar
    if r < 0.2:                                     # an empty dimension somewhere
        shape = [rng.randint(1, 5) for _ in range(rng.randint(1, 3))]
        shape.insert(rng.randint(0, len(shape)), 0)
        return shape
    ndim = rng.randint(1, 4)
    shape = [rng.randint(1, 40) for _ in range(ndim)]
    while math.prod(shape) > max_numel:
        i = max(range(ndim), key=lambda j: shape[j])
        shape[i] = max(1, shape[i] // 2)
    return shape


def rand_bits(rng, shape, dtype):
    """Tensor of uniformly random bit patterns (NaN payloads, subnormals, extremes included)."""
    n = math.prod(shape)
    size = torch.empty((), dtype=dtype).element_size()
    raw = bytearray(rng.getrandbits(8) for _ in range(n * size)) if n else bytearray()
    if not n:
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(raw, dtype=dtype).clone().reshape(shape)


def rand_tensor(rng, dtype, shape=None, specials=True):
    shape = rand_shape(rng) if shape is None else shape
    if dtype == torch.bool:
        return torch.randint(0, 2, shape).bool()
    if dtype.is_complex:
        t = torch.randn(shape, dtype=dtype)
    elif dtype.is_floating_point:
        if rng.random() < 0.25:
            t = rand_bits(rng, shape, dtype)
        else:
            t = (torch.randn(shape) * 10 ** rng.randint(-3, 3)).to(dtype)
    else:
        info = torch.iinfo(dtype)
        if rng.random() < 0.5:
            t = rand_bits(rng, shape, dtype)
        else:
            t = torch.randint(max(info.min, -1000), min(info.max, 1000) + 1, shape, dtype=dtype)
    if specials and t.numel() and (dtype.is_floating_point or dtype.is_complex):
        flat = t.view(-1)
        vals = [float("nan"), float("inf"), float("-inf"), -0.0, 0.0]
        if dtype in SPECIALS:
            vals += SPECIALS[dtype] + [-v for v in SPECIALS[dtype]]
        for _ in range(min(flat.numel(), rng.randint(1, 6))):
            v = rng.choice(vals)
            flat[rng.randrange(flat.numel())] = complex(v, rng.choice(vals)) if dtype.is_complex else v
    return t


# ---------------------------------------------------------------- recipes

def recipe_dtypes(rng):
    """Every dtype torch 1.13 saves with a legacy storage, random shapes, special values."""
    out = OrderedDict() if rng.random() < 0.5 else {}
    for d in DTYPES:
        out[dname(d)] = rand_tensor(rng, d)
        out[dname(d) + "_scalar"] = rand_tensor(rng, d, shape=[])
        out[dname(d) + "_empty"] = rand_tensor(rng, d, shape=[0, rng.randint(1, 4)])
    for d, extremes in SPECIALS.items():   # built in the dtype itself, so subnormals survive
        vals = [0.0, -0.0, float("inf"), float("-inf"), float("nan")] + extremes + [-v for v in extremes]
        out["special_" + dname(d)] = torch.tensor(vals, dtype=d)
    out["special_complex64"] = torch.tensor([complex(float("nan"), -0.0), complex(float("-inf"), 1e-45)],
                                            dtype=torch.complex64)
    return out


def recipe_views(rng):
    """Views sharing one storage: offsets, strides, transposes, stride 0, and aliases."""
    d = rng.choice(DTYPES)
    rows, cols = rng.randint(4, 30), rng.randint(4, 30)
    base = rand_tensor(rng, d, shape=[rows, cols])
    r, c = rng.randrange(rows), rng.randrange(cols)
    out = {
        "base": base,
        "row": base[r],                                      # storage offset r*cols
        "col": base[:, c],                                   # stride (cols,)
        "t": base.t(),                                       # transposed
        "step": base[1::2, ::3],                             # step slicing
        "narrow": base.narrow(0, r, rows - r).narrow(1, c, cols - c),   # offset + partial
        "corner": base[rows - 1:, cols - 1:],                # offset at the very end
        "elem": base[r, c],                                  # 0-dim view with offset
        "empty_view": base[r:r],                             # no elements, offset kept
        "expand": base[r:r + 1, :].expand(rng.randint(2, 5), cols),   # stride 0
        "flat": base.view(-1)[rng.randrange(rows * cols):],  # 1-d tail
    }
    if rows >= 2 and cols >= 2:
        out["permuted"] = base.view(rows, cols, 1).permute(2, 1, 0)
    vec = rand_tensor(rng, d, shape=[rng.randint(1, 6)])
    out["vec_expand"] = vec.expand(rng.randint(1, 4), rng.randint(1, 4), vec.numel())
    out["scalar_expand"] = rand_tensor(rng, d, shape=[]).expand(3, 2)
    out["alias_of_base"] = base                              # the same tensor under two keys
    out["nested"] = {"again": base, "list": [out["t"], out["row"]], "tuple": (out["col"],)}
    # a second, unrelated storage with its own views
    d2 = rng.choice(DTYPES)
    four = rand_tensor(rng, d2, shape=[rng.randint(1, 5) for _ in range(4)])
    out["four_d"] = four
    out["four_d_perm"] = four.permute(3, 1, 0, 2)
    out["four_d_slice"] = four[..., ::2]
    keys = list(out)
    rng.shuffle(keys)
    return {k: out[k] for k in keys}


def recipe_parameters(rng):
    """nn.Parameter with requires_grad True and False, views, and a plain alias of one."""
    out = OrderedDict()
    for i in range(rng.randint(3, 6)):
        d = rng.choice([torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.complex64])
        out[f"p{i}"] = nn.Parameter(rand_tensor(rng, d, specials=False), requires_grad=rng.random() < 0.7)
    out["frozen_int"] = nn.Parameter(rand_tensor(rng, torch.int64), requires_grad=False)
    out["frozen_bool"] = nn.Parameter(rand_tensor(rng, torch.bool), requires_grad=False)
    base = torch.randn(rng.randint(2, 9), rng.randint(2, 9))
    out["param_of_view"] = nn.Parameter(base.t())           # a parameter whose data is a view
    out["plain_alias"] = base                                # same storage as param_of_view
    out["param_scalar"] = nn.Parameter(torch.tensor(rng.random()))
    out["param_empty"] = nn.Parameter(torch.empty(0, 3), requires_grad=False)
    out["same_param_twice"] = [out["p0"], out["p0"]]
    return out


class ConvNet(nn.Module):
    def __init__(self, rng):
        super().__init__()
        c_in, c1 = rng.randint(1, 4), rng.randint(2, 12)
        self.c_in = c_in
        self.conv1 = nn.Conv2d(c_in, c1, rng.choice([1, 3]), bias=rng.random() < 0.5)
        self.bn1 = nn.BatchNorm2d(c1)
        self.deep = rng.random() < 0.5
        c_out = c1
        if self.deep:
            c_out = rng.randint(2, 12)
            self.conv2 = nn.Conv2d(c1, c_out, 3, padding=1, groups=1)
            self.bn2 = nn.BatchNorm2d(c_out, affine=rng.random() < 0.7)
        self.head = nn.Linear(c_out, rng.randint(2, 10))

    def example(self):
        return torch.randn(2, self.c_in, 8, 8)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        if self.deep:
            x = F.relu(self.bn2(self.conv2(x)))
        return self.head(x.mean(dim=(2, 3)))


class TokenNet(nn.Module):
    def __init__(self, rng):
        super().__init__()
        self.vocab, d, h = rng.randint(10, 60), rng.choice([8, 16, 24]), rng.choice([16, 32, 48])
        self.embed = nn.Embedding(self.vocab, d, padding_idx=0 if rng.random() < 0.5 else None)
        self.ln = nn.LayerNorm(d)
        self.block = nn.ModuleDict({"fc1": nn.Linear(d, h), "fc2": nn.Linear(h, d)})
        self.ln_f = nn.LayerNorm(d, elementwise_affine=rng.random() < 0.8)
        self.lm_head = nn.Linear(d, self.vocab, bias=False)
        if rng.random() < 0.5:
            self.lm_head.weight = self.embed.weight               # tied weights: one storage, two keys
        self.register_buffer("position", torch.arange(16, dtype=torch.int64))

    def example(self):
        return torch.randint(0, self.vocab, (2, 7))

    def forward(self, x):
        x = self.ln(self.embed(x))
        x = x + self.block["fc2"](F.gelu(self.block["fc1"](x)))
        return self.lm_head(self.ln_f(x)).mean(dim=1)


def recipe_training(rng, opt_name):
    """A full training checkpoint after one or two real optimizer steps."""
    net = ConvNet(rng) if rng.random() < 0.5 else TokenNet(rng)
    params = list(net.parameters())
    if len(params) > 2 and rng.random() < 0.5:
        params[rng.randrange(len(params))].requires_grad_(False)   # a frozen parameter: no state
    lr = rng.choice([1e-3, 3e-4, 0.1, 0.05])
    if opt_name == "adam":
        opt = torch.optim.Adam(net.parameters(), lr=lr, amsgrad=rng.random() < 0.5)
    elif opt_name == "adamw":
        opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.01)
    else:
        opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, nesterov=rng.random() < 0.5,
                              weight_decay=rng.choice([0, 1e-4]))
    steps = rng.randint(1, 2)
    for _ in range(steps):
        opt.zero_grad()
        net(net.example()).pow(2).mean().backward()
        opt.step()
    ckpt = {
        "model": net.state_dict(),
        "optimizer": opt.state_dict(),
        "epoch": rng.randint(0, 500),
        "step": rng.randint(0, 10 ** 7),
        "rng_state": torch.get_rng_state(),
        "meta": {"arch": type(net).__name__, "optimizer": type(opt).__name__, "steps_taken": steps,
                 "lr": lr, "note": "générée — ckptguard ✓", "best_loss": float("inf"),
                 "config": {"seed": rng.randint(0, 2 ** 31), "layers": [n for n, _ in net.named_children()]}},
    }
    if rng.random() < 0.5:
        ckpt["scheduler"] = {"last_epoch": ckpt["epoch"], "base_lrs": [lr], "_step_count": steps + 1}
    return ckpt


def recipe_scalars(rng):
    """Every kind of non-tensor value, with edge cases of the pickle encodings."""
    ints = [0, 1, -1, 255, 256, 65535, 65536, 2 ** 31 - 1, -(2 ** 31), 2 ** 31, 2 ** 53, -(2 ** 53),
            2 ** 63 - 1, -(2 ** 63), 2 ** 64, 2 ** 64 + 1, -(2 ** 64) - 1, 2 ** 100 + rng.randint(0, 99), -(3 ** 70)]
    floats = [0.0, -0.0, 0.1, -2.5, 1e308, -1e-308, 5e-324, float("nan"), float("inf"), float("-inf"),
              rng.random(), struct.unpack("<d", struct.pack("<Q", rng.getrandbits(62)))[0]]
    strs = ["", "ascii", "héllo wörld", "日本語", "emoji 😀 astral", "tab\tnl\nnul\x00", "x" * 300]
    raw = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 40)))
    out = {
        "ints": ints, "floats": floats, "strs": strs,
        "bytes": raw, "bytes_empty": b"", "bytes_all": bytes(range(256)),
        "none": None, "true": True, "false": False,
        "tuples": ((), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4), ((("deep",),),)),
        "int_keys": {i: f"v{i}" for i in (0, 1, -1, 300, 2 ** 40)},
        "tuple_keys": {(1, "a"): 1, (): 2},
        "ordered": OrderedDict([("z", 1), ("a", 2), ("m", [3])]),
        "long_list": [rng.randint(-10 ** 6, 10 ** 6) for _ in range(rng.randint(1001, 2500))],
        "big_dict": {f"k{i}": i for i in range(rng.randint(1001, 1500))},
        "mixed_list": [1, 2.5, "x", None, True, b"\x00\xff", (1,), [], {}],
        "empty_list": [], "empty_dict": {}, "empty_tuple": (),
        "tensors": [torch.ones(2), {"inner": rand_tensor(rng, rng.choice(DTYPES))}],
    }
    shared = [1, 2, 3]
    out["shared_list"] = [shared, shared]                    # memoised object referenced twice
    node = {"leaf": rand_tensor(rng, torch.float32, shape=[2, 2]), "n": 0}
    for depth in range(1, rng.randint(6, 12)):
        node = {"level": depth, "child": node, "also": [node["n"] if "n" in node else depth, (depth,)]}
    out["nested"] = node
    keys = list(out)
    rng.shuffle(keys)
    return OrderedDict((k, out[k]) for k in keys)


def random_tree(rng, depth):
    r = rng.random()
    if depth <= 0 or r < 0.3:
        leaf = rng.random()
        if leaf < 0.45:
            return rand_tensor(rng, rng.choice(DTYPES))
        if leaf < 0.55:
            return nn.Parameter(rand_tensor(rng, torch.float32, specials=False), requires_grad=rng.random() < 0.5)
        return rng.choice([None, True, False, rng.randint(-2 ** 70, 2 ** 70), rng.randint(-300, 300),
                           rng.random() * 1e6, "ß-" + str(rng.randint(0, 99)), bytes([rng.randint(0, 255)]) * 3])
    n = rng.randint(0, 5)
    if r < 0.6:
        kind = OrderedDict if rng.random() < 0.3 else dict
        return kind((rng.choice([f"key{i}", i, f"ключ{i}"]), random_tree(rng, depth - 1)) for i in range(n))
    if r < 0.8:
        return [random_tree(rng, depth - 1) for _ in range(n)]
    return tuple(random_tree(rng, depth - 1) for _ in range(n))


def recipe_random_tree(rng):
    """A random nest of containers, scalars and tensors, some tensors reused in two places."""
    tree = {"root": random_tree(rng, rng.randint(3, 6)), "extra": random_tree(rng, 3)}
    t = rand_tensor(rng, rng.choice(DTYPES), shape=[3, 4])
    tree["reuse"] = [t, {"again": t, "view": t[1:, ::2]}]
    return tree


RECIPES = [
    ("dtypes", recipe_dtypes),
    ("views", recipe_views),
    ("parameters", recipe_parameters),
    ("train_adam", lambda rng: recipe_training(rng, "adam")),
    ("train_sgd_momentum", lambda rng: recipe_training(rng, "sgd")),
    ("train_adamw", lambda rng: recipe_training(rng, "adamw")),
    ("scalars", recipe_scalars),
    ("random_tree", recipe_random_tree),
]


# ---------------------------------------------------------------- weights-only helpers

def beyond_weights_only(obj):
    """True if obj holds a Python float or bytes, which torch 1.13's weights_only refuses."""
    if isinstance(obj, (float, bytes)):
        return True
    if isinstance(obj, dict):
        return any(beyond_weights_only(k) or beyond_weights_only(v) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return any(beyond_weights_only(v) for v in obj)
    return False


def strictify(obj, memo=None):
    """floats -> 0-dim float64 tensors, bytes -> uint8 tensors; shared tensors stay shared."""
    if memo is None:
        memo = {}
    if isinstance(obj, float):
        return torch.tensor(obj, dtype=torch.float64)
    if isinstance(obj, bytes):
        return torch.tensor(list(obj), dtype=torch.uint8)
    if isinstance(obj, torch.Tensor):
        return obj
    if id(obj) in memo:
        return memo[id(obj)]
    if isinstance(obj, dict):
        new = type(obj)((strictify(k, memo) if not isinstance(k, (float, bytes)) else repr(k), strictify(v, memo))
                        for k, v in obj.items())
        if hasattr(obj, "_metadata"):
            new._metadata = obj._metadata
    elif isinstance(obj, list):
        new = [strictify(v, memo) for v in obj]
    elif isinstance(obj, tuple):
        new = tuple(strictify(v, memo) for v in obj)
    else:
        return obj
    memo[id(obj)] = new
    return new


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--count", type=int, default=24)
    ap.add_argument("--strict", action="store_true",
                    help="no Python floats or bytes, so every file loads with torch 1.13 weights_only=True")
    args = ap.parse_args()
    os.makedirs(args.outdir, exist_ok=True)
    t0 = time.perf_counter()
    manifest = []
    n_wo = 0
    for i in range(args.count):
        case_seed = args.seed * 1_000_003 + i
        rng = random.Random(case_seed)
        torch.manual_seed(case_seed)
        rname, recipe = RECIPES[i % len(RECIPES)]
        obj = recipe(rng)
        if args.strict:
            obj = strictify(obj)
        zip_fmt = (i + i // len(RECIPES)) % 2 == 0
        name = f"case_{i:03d}.pt" if zip_fmt else f"case_{i:03d}.pth"
        kind = "torch-zip" if zip_fmt else "torch-legacy"
        path = os.path.join(args.outdir, name)
        torch.save(obj, path, _use_new_zipfile_serialization=zip_fmt)
        expect = expect_json(obj, kind, file=name)
        dump_expect(expect, path + ".expect.json")

        # reload and compare
        wo_expected = not beyond_weights_only(obj)
        try:
            back = torch.load(path, map_location="cpu", weights_only=True)
            wo_ok = True
        except Exception as e:  # noqa: BLE001
            wo_ok, wo_err = False, str(e).split("WeightsUnpickler error: ")[-1]
        if wo_ok != wo_expected:
            raise SystemExit(f"{name} ({rname}): torch weights_only={'accepted' if wo_ok else 'refused: ' + wo_err}, "
                             f"expected the opposite")
        if not wo_ok:
            back = restricted_load(path)
        got = dumps_expect(expect_json(back, kind, file=name))
        with open(path + ".expect.json") as f:
            want = f.read()
        if got != want:
            raise SystemExit(f"{name} ({rname}): the reloaded object's expect JSON differs from the written one")
        n_wo += wo_ok
        entry = {"file": name, "kind": kind, "recipe": rname, "seed": args.seed, "case": i,
                 "torch_weights_only_loads": wo_ok, "tensors": len(expect["tensors"])}
        if not wo_ok:
            entry["weights_only_refusal"] = wo_err
        manifest.append(entry)
    with open(os.path.join(args.outdir, "manifest.jsonl"), "w") as f:
        for e in manifest:
            f.write(json.dumps(e, sort_keys=True) + "\n")
    print(f"gen_torch_checkpoints: {args.count} files in {args.outdir} (seed {args.seed}, torch {torch.__version__}); "
          f"{n_wo} load with weights_only=True, {args.count - n_wo} need floats/bytes; all reloads match; "
          f"{time.perf_counter() - t0:.1f}s", file=sys.stderr)


if __name__ == "__main__":
    main()
