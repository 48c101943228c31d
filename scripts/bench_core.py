"""Benchmark the multi-process core: Beaver products, a secret matrix product,
truncated fixed-point products, with the dealer and the nodes as processes.

Each configuration starts the dealer and n computation nodes as separate
processes talking ZeroMQ over TCP on loopback (parties.harness.run_processes),
with CurveZMQ encryption or, for comparison, in plaintext.  On every node:

1. ``mul``: z = x * y for secret vectors of --size elements (fresh operands
   every repetition, so each pays its opening: one round);
2. ``fmul``: the same with fixed-point operands, then truncation (two rounds);
3. ``matmul``: X @ Y with X of --dim x --dim and Y of --dim x --cols, both
   fresh (one round);
4. ``matmul, X reused``: X @ Y' with X already masked (as a submitted genotype
   matrix is): only Y' - B is opened.

Before each repetition the nodes meet at a barrier (a tiny exchange), so an
operation's time is the slowest node's wall time from a common start.  Bytes
are counted by each channel per phase; the dealer's bytes are those node n-1
receives from it in the phase (the dealer sends to nobody else).

Goals (issue "multi-process core"): >= 10 M secure multiplications per second
on 10^6-element vectors; dealer traffic <= 1 field element (16 bytes) per
triple element.

Usage::

    python scripts/bench_core.py [--nodes 3] [--size 1000000] [--dim 2000] [--cols 16]
                                 [--repeat 5] [--mode both|curve|plain] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict

import numpy as np

from mpc import beaver, field
from mpc.prg import Prg, new_seed
from mpc.shared import SharedArray
from mpc.triples import DEALER
from parties.harness import run_processes

ELEMENT_BYTES = 16
GOAL_MULS_PER_SECOND = 10e6


def _count_dealer_bytes(ctx) -> dict:
    """Tally bytes node n-1 receives from the dealer, per phase."""
    tally = defaultdict(int)
    recv = ctx.channel.recv

    def counting_recv(peer, tag, **kw):
        array = recv(peer, tag, **kw)
        if peer == DEALER:
            tally[ctx.channel.stats.current] += array.nbytes
        return array

    ctx.channel.recv = counting_recv
    return tally


def _barrier(ctx) -> None:
    ctx.channel.exchange(ctx.others, "barrier", np.zeros(1, dtype=np.int64), dtype="i64")


def _random_share(ctx, shape, frac=0) -> SharedArray:
    """A fresh share of a random secret (its value does not matter for timing)."""
    return SharedArray(ctx, Prg(new_seed(), "bench").field(shape), frac)


def _random_fixed_share(ctx, shape) -> SharedArray:
    """Shares of a fixed-point secret in [-1, 1): node i holds a seeded pad
    p_i, the leading node also adds value - sum(p)."""
    f = ctx.params.f
    seed = b"bench-fixed-pads"
    value = field.encode_fixed(np.random.default_rng(ctx.index).uniform(-1, 1, shape), ctx.params, f) \
        if ctx.leads else field.zeros(shape)
    pads = [Prg(seed, f"pad{i}").field(shape) for i in range(ctx.n)]
    total = pads[0]
    for p in pads[1:]:
        total = field.add(total, p)
    share = field.add(value, pads[ctx.index])
    if ctx.leads:
        share = field.sub(share, total)
    return SharedArray(ctx, share, f)


def _timed(ctx, name, repeat, make, run):
    """Run `run(*make())` `repeat` times after a warm-up, each from a barrier."""
    times = []
    for r in range(repeat + 1):
        operands = make()
        _barrier(ctx)
        phase = name if r else f"{name} (warm-up)"
        with ctx.phase(phase):
            start = time.perf_counter()
            run(*operands)
            elapsed = time.perf_counter() - start
        if r:
            times.append(elapsed)
    return times


def bench_job(ctx, size, dim, cols, repeat):
    dealer_bytes = _count_dealer_bytes(ctx) if ctx.index == ctx.n - 1 else None
    times = {}
    times["mul"] = _timed(ctx, "mul", repeat,
                          lambda: (_random_share(ctx, (size,)), _random_share(ctx, (size,))),
                          beaver.mul)
    times["fmul"] = _timed(ctx, "fmul", repeat,
                           lambda: (_random_fixed_share(ctx, (size,)), _random_fixed_share(ctx, (size,))),
                           beaver.fmul)
    times["matmul"] = _timed(ctx, "matmul", repeat,
                             lambda: (_random_share(ctx, (dim, dim)), _random_share(ctx, (dim, cols))),
                             beaver.matmul)
    x = _random_share(ctx, (dim, dim))
    beaver.matmul(x, _random_share(ctx, (dim, cols)))  # masks x once
    times["matmul, X reused"] = _timed(ctx, "matmul, X reused", repeat,
                                       lambda: (x, _random_share(ctx, (dim, cols))), beaver.matmul)
    traffic = {name: vars(p).copy() for name, p in ctx.channel.stats.phases.items()}
    return {"times": times, "traffic": traffic,
            "dealer_bytes": dict(dealer_bytes) if dealer_bytes is not None else None}


def summarise(full, n, size, dim, cols, repeat) -> dict:
    nodes = [r["result"] for r in full[:n]]
    dealer = nodes[n - 1]["dealer_bytes"]
    ops = {"mul": size, "fmul": size, "matmul": dim * cols, "matmul, X reused": dim * cols}
    rows = {}
    for name, n_out in ops.items():
        per_rep = [max(node["times"][name][r] for node in nodes) for r in range(repeat)]
        seconds = statistics.median(per_rep)
        sent = [node["traffic"][name]["bytes_sent"] / repeat for node in nodes]
        rounds = nodes[0]["traffic"][name]["rounds"] / repeat
        rows[name] = {
            "seconds": seconds, "best": min(per_rep), "outputs": n_out,
            "per_second": n_out / seconds,
            "node_bytes_per_output": [s / n_out for s in sent],
            "node_bytes": sent,
            "dealer_bytes_per_output": dealer[name] / repeat / n_out,
            "dealer_bytes": dealer[name] / repeat,
            "rounds": rounds,
        }
    return rows


def print_rows(title, rows, n, size, dim, cols):
    print(f"\n{title}")
    print(f"{'operation':<20} {'size':>22} {'median s':>9} {'best s':>8} {'per second':>12} "
          f"{'B/out/node':>11} {'dealer B/out':>13} {'rounds':>7}")
    sizes = {"mul": f"{size:,}", "fmul": f"{size:,}", "matmul": f"{dim}x{dim} @ {dim}x{cols}",
             "matmul, X reused": f"{dim}x{dim} @ {dim}x{cols}"}
    for name, r in rows.items():
        per_node = max(r["node_bytes_per_output"])
        print(f"{name:<20} {sizes[name]:>22} {r['seconds']:>9.3f} {r['best']:>8.3f} "
              f"{r['per_second'] / 1e6:>10.2f} M {per_node:>11.1f} {r['dealer_bytes_per_output']:>13.2f} "
              f"{r['rounds']:>7.0f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--size", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=2000)
    ap.add_argument("--cols", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--mode", choices=["both", "curve", "plain"], default="both")
    ap.add_argument("--json", help="write the figures to this file")
    args = ap.parse_args(argv)
    n = args.nodes
    modes = {"both": [True, False], "curve": [True], "plain": [False]}[args.mode]
    report = {"nodes": n, "size": args.size, "dim": args.dim, "cols": args.cols, "repeat": args.repeat}
    print(f"dealer + {n} nodes as processes on this machine; median of {args.repeat} repetitions "
          f"after a warm-up; B/out = bytes sent per output element (one field element = 16 B)")
    for curve in modes:
        start = time.perf_counter()
        full = run_processes(n, bench_job, (args.size, args.dim, args.cols, args.repeat),
                             curve=curve, full=True, timeout=1800, peer_timeout=60)
        rows = summarise(full, n, args.size, args.dim, args.cols, args.repeat)
        label = "CurveZMQ (encrypted)" if curve else "plaintext TCP"
        print_rows(f"{label}  [run took {time.perf_counter() - start:.1f} s]", rows, n,
                   args.size, args.dim, args.cols)
        report["curve" if curve else "plain"] = rows
    best = max(report[m]["mul"]["per_second"] for m in ("curve", "plain") if m in report)
    dealer = max(report[m][op]["dealer_bytes_per_output"] for m in ("curve", "plain") if m in report
                 for op in ("mul", "matmul"))
    print(f"\ngoal >= {GOAL_MULS_PER_SECOND / 1e6:.0f} M multiplications/s: reached {best / 1e6:.2f} M/s "
          f"({'met' if best >= GOAL_MULS_PER_SECOND else 'NOT met'})")
    print(f"goal dealer <= {ELEMENT_BYTES} B per triple element: {dealer:.2f} B "
          f"({'met' if dealer <= ELEMENT_BYTES + 0.5 else 'NOT met'}; the excess is message headers)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)


if __name__ == "__main__":
    main()
