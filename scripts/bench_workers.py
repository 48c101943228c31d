#!/usr/bin/env python3
"""Threads for a genotype pass: the local block products of one node (no network).

A node's share of Z W sums, block by block, d_b (B_b) + a_b (W - B)_b (+ d_b
(W - B)_b on the leading node): stored masked block d_b, the node's mask share
a_b regenerated from its seed (AES-CTR), and two or three field matrix
products.  ``mpcgwas node --workers K`` spreads the blocks over K threads (the
field kernels and the AES keystream release the GIL); this prints the time of
one pass over NB blocks of N x MB genotypes against L columns for 1 .. K
workers and the speed-up.

    python scripts/bench_workers.py [--n 2000] [--block 1024] [--cols 20] [--blocks 16] [--max-workers K]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mpc import beaver, field  # noqa: E402
from mpc.prg import Prg, new_seed  # noqa: E402
from mpc.shared import Mask, SharedArray  # noqa: E402
from mpc.triples import DEALER, MaskSpec, NodeTuples  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--block", type=int, default=1024)
    ap.add_argument("--cols", type=int, default=20)
    ap.add_argument("--blocks", type=int, default=16)
    ap.add_argument("--max-workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    n, mb, l, nb = args.n, args.block, args.cols, args.blocks
    tuples = NodeTuples(0, 3, {"sub": new_seed(), DEALER: new_seed()}, None)
    ctx = types.SimpleNamespace(tuples=tuples, leads=True, workers=1)
    blocks = [Prg(new_seed(), f"d{b}").field((n, mb)) for b in range(nb)]
    w = Prg(new_seed(), "w").field((mb, l))

    def one_pass():
        pairs = [(SharedArray(ctx, None, 0, Mask(MaskSpec("sub", f"sub/geno/imputed/{b}", (n, mb)), blocks[b])),
                  SharedArray(ctx, None, 0, Mask(MaskSpec("sub", f"sub/w/{b}", (mb, l)), w)))
                 for b in range(nb)]
        h = beaver.MatmulSum(ctx, pairs, {"c": field.zeros((n, l))})
        start = time.perf_counter()
        beaver.finish_all(ctx, [h])
        return time.perf_counter() - start

    print(f"one node's pass: {nb} blocks of {n} x {mb} genotypes @ {mb} x {l}, "
          f"{os.cpu_count()} CPUs; best of {args.repeat}")
    base = None
    for workers in range(1, max(1, args.max_workers) + 1):
        ctx.workers = workers
        best = min(one_pass() for _ in range(args.repeat))
        base = base or best
        print(f"  workers {workers}: {best:.3f} s  ({n * mb * nb / best / 1e6:.0f} M genotypes/s, "
              f"speed-up {base / best:.2f}x)")


if __name__ == "__main__":
    main()
