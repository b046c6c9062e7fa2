#!/usr/bin/python3
"""Loads FILE with PyTorch and prints its expect JSON (the format of tests/data/corpus) to stdout.

    /usr/bin/python3 tests/interop/describe_with_torch.py FILE [--kind torch-zip|torch-legacy]
                                                         [--loader weights_only|restricted]

--loader weights_only (default): torch.load(FILE, map_location="cpu", weights_only=True).
--loader restricted: the same allowlist plus Python floats and bytes (see restricted_load.py),
  for files torch 1.13's weights-only unpickler refuses only because of those (optimizer states).
The output is json.dumps(..., indent=1, sort_keys=True), byte-identical to the corpus files,
plus a newline, with "file" set to FILE's base name. Exit status 1 (message on stderr) if torch refuses FILE.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from expect_format import dumps_expect, expect_json  # noqa: E402
from restricted_load import restricted_load  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("file")
    ap.add_argument("--kind", default="torch-zip")
    ap.add_argument("--loader", choices=["weights_only", "restricted"], default="weights_only")
    args = ap.parse_args()
    try:
        if args.loader == "weights_only":
            obj = torch.load(args.file, map_location="cpu", weights_only=True)
        else:
            obj = restricted_load(args.file)
    except Exception as e:  # noqa: BLE001
        print(f"describe_with_torch: {args.file}: {args.loader} load failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(dumps_expect(expect_json(obj, args.kind, file=os.path.basename(args.file))) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
