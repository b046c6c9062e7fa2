#!/usr/bin/python3
"""Writes a big, deterministic, state-dict-like checkpoint with torch.save, for load benchmarks.

    /usr/bin/python3 bench/make_big_checkpoint.py OUT [--size-gb 1.0] [--tensors 300] [--seed 0] [--legacy]

The object is an OrderedDict shaped like a GPT-style transformer: token and position embeddings,
N layers of attention projections, layer norms and an MLP, a final norm and an untied lm_head.
Embeddings, norms and every third layer are float32; the other layers' weights and biases are
float16. Values are torch.randn * 0.02 (norm weights around 1) from a seeded generator, so the
file is the same for the same arguments. The layer count follows from --tensors (16 tensors a
layer) and the width d_model is the smallest multiple of 64 that makes the tensor bytes reach
--size-gb GiB (2**30 bytes), so the file is at least that big. Everything is built once in
memory and saved: peak memory is about the file size.
Prints one line: the path, its size in bytes and GiB, the tensor count and the shape parameters.
"""
import argparse
import os
import sys
from collections import OrderedDict

import torch


def layout(d, n_layers, vocab, ctx):
    """[(name, shape, dtype)] of the whole model."""
    ff = 4 * d
    out = [("tok_embed.weight", (vocab, d), torch.float32), ("pos_embed.weight", (ctx, d), torch.float32)]
    for i in range(n_layers):
        wd = torch.float32 if i % 3 == 0 else torch.float16
        p = f"layers.{i}."
        out += [(p + "ln1.weight", (d,), torch.float32), (p + "ln1.bias", (d,), torch.float32)]
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            out += [(p + f"attn.{proj}.weight", (d, d), wd), (p + f"attn.{proj}.bias", (d,), wd)]
        out += [(p + "ln2.weight", (d,), torch.float32), (p + "ln2.bias", (d,), torch.float32),
                (p + "mlp.fc1.weight", (ff, d), wd), (p + "mlp.fc1.bias", (ff,), wd),
                (p + "mlp.fc2.weight", (d, ff), wd), (p + "mlp.fc2.bias", (d,), wd)]
    out += [("ln_f.weight", (d,), torch.float32), ("ln_f.bias", (d,), torch.float32),
            ("lm_head.weight", (vocab, d), torch.float32)]
    return out


def nbytes(spec):
    total = 0
    for _, shape, dt in spec:
        n = 1
        for s in shape:
            n *= s
        total += n * torch.empty((), dtype=dt).element_size()
    return total


def plan(target_bytes, n_tensors):
    n_layers = max(1, (n_tensors - 5) // 16)
    d = 64
    while True:
        vocab, ctx = min(32000, 16 * d), min(2048, 4 * d)
        spec = layout(d, n_layers, vocab, ctx)
        if nbytes(spec) >= target_bytes:
            return d, n_layers, vocab, ctx, spec
        d += 64


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--size-gb", type=float, default=1.0, help="minimum size in GiB (default 1.0)")
    ap.add_argument("--tensors", type=int, default=300, help="about this many tensors (default 300)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--legacy", action="store_true", help="legacy (pre-zip) format instead of zip")
    args = ap.parse_args()
    d, n_layers, vocab, ctx, spec = plan(int(args.size_gb * 2**30), args.tensors)
    g = torch.Generator().manual_seed(args.seed)
    sd = OrderedDict()
    for name, shape, dt in spec:
        if ".ln" in name or name.startswith("ln_f"):
            base = 1.0 if name.endswith("weight") else 0.0
            t = base + 0.02 * torch.randn(shape, generator=g)
        else:
            t = torch.randn(shape, generator=g).mul_(0.02)
        sd[name] = t.to(dt)
        del t
    torch.save(sd, args.out, _use_new_zipfile_serialization=not args.legacy)
    size = os.path.getsize(args.out)
    print(f"{args.out} {size} bytes ({size / 2**30:.3f} GiB), {len(sd)} tensors, d_model {d}, "
          f"{n_layers} layers, vocab {vocab}, {'legacy' if args.legacy else 'zip'} format")
    return 0


if __name__ == "__main__":
    sys.exit(main())
