#!/usr/bin/python3
"""Times torch.load(FILE, map_location="cpu", weights_only=True) and reports its peak memory.

    /usr/bin/python3 bench/torch_load.py FILE [--repeat 3]

Run it as its own process (it is one): the peak RSS is the process's ru_maxrss (KiB on Linux),
which includes the interpreter and torch; baseline_rss_kib is ru_maxrss right after
`import torch`, before any load, so peak_rss_kib - baseline_rss_kib is what loading cost.
The load is repeated N times (the loaded object is freed in between, so the peak is one load's);
seconds_best / seconds_median are over those repeats, with time.perf_counter. The first repeat
may read from disk, later ones from the page cache. Prints one JSON line on stdout.
"""
import argparse
import gc
import json
import os
import resource
import statistics
import sys
import time


def maxrss_kib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def count_tensors(obj, torch):
    if isinstance(obj, torch.Tensor):
        return 1
    if isinstance(obj, dict):
        return sum(count_tensors(v, torch) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(count_tensors(v, torch) for v in obj)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("file")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    import torch
    baseline = maxrss_kib()
    times, n = [], 0
    for _ in range(max(1, args.repeat)):
        t0 = time.perf_counter()
        obj = torch.load(args.file, map_location="cpu", weights_only=True)
        times.append(time.perf_counter() - t0)
        n = count_tensors(obj, torch)
        del obj
        gc.collect()
    peak = maxrss_kib()
    print(json.dumps({
        "tool": "torch.load(weights_only=True)",
        "file": args.file,
        "file_bytes": os.path.getsize(args.file),
        "tensors": n,
        "repeat": len(times),
        "seconds_best": round(min(times), 6),
        "seconds_median": round(statistics.median(times), 6),
        "seconds_all": [round(t, 6) for t in times],
        "peak_rss_kib": peak,
        "baseline_rss_kib": baseline,
        "torch_version": torch.__version__,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
