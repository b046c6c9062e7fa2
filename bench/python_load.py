#!/usr/bin/python3
"""ckptguard.torch.load vs torch.load(weights_only=True), side by side in one Python process.

    PYTHONPATH=build/release/python /usr/bin/python3 bench/python_load.py FILE [--repeat 5]

Both load FILE `--repeat` times, alternating (the file is in the page cache for both after the
first round); each time counts everything until the caller holds the tensors (for ckptguard:
mapping, the hardened load, and making every torch tensor). RSS growth is VmRSS (resident memory)
with the result held minus VmRSS before the load, so it shows what a load makes resident before
anything touches the tensors; for ckptguard, rss_after_touch_kib is the same after reading every
tensor once (the file's pages then count, as shared page cache). Prints one JSON line per loader.
"""
import argparse
import gc
import json
import os
import statistics
import sys
import time

import torch

import ckptguard.torch


def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def count_and_touch(obj, touch):
    n = 0
    todo = [obj]
    while todo:
        x = todo.pop()
        if isinstance(x, torch.Tensor):
            n += 1
            if touch and x.numel() and x.layout == torch.strided and not x.is_quantized and x.device.type != "meta":
                x.detach().reshape(-1)[-1].item()
                x.detach().float().sum().item()
        elif isinstance(x, dict):
            todo.extend(x.values())
        elif isinstance(x, (list, tuple)):
            todo.extend(x)
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("file")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    loaders = {
        "torch.load(weights_only=True)": lambda: torch.load(args.file, map_location="cpu", weights_only=True),
        "ckptguard.torch.load": lambda: ckptguard.torch.load(args.file),
    }
    times = {name: [] for name in loaders}
    growth = {name: [] for name in loaders}
    touched = []
    tensors = {}
    for _ in range(args.repeat):
        for name, load in loaders.items():
            gc.collect()
            before = rss_kib()
            t0 = time.perf_counter()
            out = load()
            times[name].append(time.perf_counter() - t0)
            growth[name].append(rss_kib() - before)
            tensors[name] = count_and_touch(out, False)
            if name == "ckptguard.torch.load":
                count_and_touch(out, True)
                touched.append(rss_kib() - before)
            del out
    for name in loaders:
        row = {"tool": name, "file": args.file, "file_bytes": os.path.getsize(args.file), "tensors": tensors[name],
               "repeat": args.repeat, "seconds_best": round(min(times[name]), 6),
               "seconds_median": round(statistics.median(times[name]), 6),
               "rss_growth_kib_median": int(statistics.median(growth[name]))}
        if name == "ckptguard.torch.load":
            row["rss_after_touch_kib_median"] = int(statistics.median(touched))
        print(json.dumps(row))
    best = {name: min(t) for name, t in times.items()}
    print(json.dumps({"speedup_best": round(best["torch.load(weights_only=True)"] / best["ckptguard.torch.load"], 1)}))


if __name__ == "__main__":
    sys.exit(main())
