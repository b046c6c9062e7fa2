#!/usr/bin/python3
"""Writes .npy and .npz files with real numpy, each with F.expect.json in the
corpus format (kind, tensors with dtype/shape/stride/storage_offset/sha256,
skeleton), for the loader's interop test.

Usage: gen_numpy_arrays.py OUTDIR [--seed N] [--count N]

Covers every dtype the loader maps, both byte orders, C and Fortran order,
0-d and empty arrays, and stored and deflated .npz archives. The digest is of
the elements in C order, little-endian, as the corpus defines it.
"""
import argparse, hashlib, json, os, sys
import numpy as np

DTYPES = {  # numpy dtype -> torch-style name the loader reports
    "f2": "float16", "f4": "float32", "f8": "float64",
    "i1": "int8", "i2": "int16", "i4": "int32", "i8": "int64",
    "u1": "uint8", "u2": "uint16", "u4": "uint32", "u8": "uint64",
    "b1": "bool", "c8": "complex64", "c16": "complex128",
}


def random_array(rng, code):
    ndim = int(rng.integers(0, 4))
    shape = tuple(int(rng.integers(0, 5)) if rng.random() < 0.15 else int(rng.integers(1, 7)) for _ in range(ndim))
    raw = rng.integers(0, 256, size=int(np.prod(shape, dtype=np.int64)) * np.dtype(code).itemsize, dtype=np.uint8)
    a = np.frombuffer(raw.tobytes(), dtype=np.dtype(code)).reshape(shape).copy()
    if code == "b1":
        a = raw[: a.size].reshape(shape) % 2 == 1
    order = rng.choice(["<", ">"]) if np.dtype(code).itemsize > 1 else "|"
    a = a.astype(np.dtype(code).newbyteorder(order)) if order != "|" else a
    if ndim >= 2 and rng.random() < 0.5:
        a = np.asfortranarray(a)
    return a


def describe(a):
    c = np.ascontiguousarray(a)
    raw = c.astype(c.dtype.newbyteorder("<")).tobytes() if c.dtype.itemsize > 1 else c.astype(np.uint8 if c.dtype == np.bool_ else c.dtype).tobytes()
    stride = []
    step = 1
    dims = list(a.shape)
    fortran = a.ndim >= 2 and a.flags["F_CONTIGUOUS"] and not a.flags["C_CONTIGUOUS"]
    order = range(len(dims)) if fortran else reversed(range(len(dims)))
    stride = [0] * len(dims)
    for i in order:
        stride[i] = step
        step *= max(dims[i], 1)
    return {"dtype": DTYPES[a.dtype.str[1:]], "shape": dims, "stride": stride, "storage_offset": 0,
            "sha256": hashlib.sha256(raw).hexdigest(), "parameter": False}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--count", type=int, default=16)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    codes = list(DTYPES)
    for n in range(args.count):
        if n % 2 == 0:
            a = random_array(rng, codes[(n // 2) % len(codes)])
            path = os.path.join(args.out, f"array_{n:03d}.npy")
            np.save(path, a)
            expect = {"kind": "numpy", "tensors": {"": describe(a)}, "skeleton": "<tensor>"}
        else:
            arrays = {f"m{i}": random_array(rng, codes[int(rng.integers(0, len(codes)))]) for i in range(int(rng.integers(1, 5)))}
            path = os.path.join(args.out, f"arrays_{n:03d}.npz")
            (np.savez_compressed if n % 4 == 1 else np.savez)(path, **arrays)
            expect = {"kind": "numpy-zip", "tensors": {k: describe(v) for k, v in arrays.items()},
                      "skeleton": {"__dict__": [[k, "<tensor>"] for k in arrays]}}
        with open(path + ".expect.json", "w") as f:
            json.dump(expect, f, indent=1, sort_keys=True)
    print(f"gen_numpy_arrays: {args.count} files in {args.out} (seed {args.seed}, numpy {np.__version__})", file=sys.stderr)


if __name__ == "__main__":
    main()
