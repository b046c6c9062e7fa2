#!/usr/bin/python3
"""Writes checkpoints for the scan benchmark with torch.save (deterministic).

  make_many_checkpoints.py wide OUT [--tensors 20000]   one state dict of N small tensors
  make_many_checkpoints.py folder DIR [--count 1000]    N small checkpoints (an MLP state dict
                                                        with optimizer state), zip format
"""
import argparse, os, sys
import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["wide", "folder"])
    ap.add_argument("out")
    ap.add_argument("--tensors", type=int, default=20000)
    ap.add_argument("--count", type=int, default=1000)
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.mode == "wide":
        sd = {f"blocks.{i // 8}.layer{i % 8}.weight": torch.randn(4, 4) for i in range(args.tensors)}
        torch.save(sd, args.out)
        print(f"{args.out}: {len(sd)} tensors, {os.path.getsize(args.out)} bytes", file=sys.stderr)
    else:
        os.makedirs(args.out, exist_ok=True)
        net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        net(torch.randn(2, 16)).sum().backward()
        opt.step()
        for i in range(args.count):
            torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "step": i},
                       os.path.join(args.out, f"ckpt_{i:05d}.pt"))
        print(f"{args.out}: {args.count} checkpoints", file=sys.stderr)


if __name__ == "__main__":
    main()
