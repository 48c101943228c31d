"""Accuracy, throughput and rounds of the comparison and non-linear primitives.

The dealer and the computation nodes run as separate processes talking ZeroMQ
over CurveZMQ on loopback (parties.harness.run_processes).  Inputs are public
test vectors split into proper additive shares (seeded pads on every node; the
leading node holds value - sum of pads), so no node starts from a trivial
sharing.  Results are revealed to the nodes only for the comparison below.

1. Accuracy: for each function, inputs log-uniform from 2^-16 up to the largest
   value the fixed-point format holds (and the negative range for reciprocal),
   exp on [-30, 15], sigmoid on [-40, 40]; the error is taken against float64
   evaluated at the *encoded* input.  Reported: max and median absolute error,
   max and median relative error, and the worst ratio error / tolerance with
   tolerance = max(1e-6 |f(x)|, 4 2^-f) (<= 1 everywhere is the goal).
2. Throughput: elements per second of one call on --size elements (the
   slowest node's wall time from a barrier; after a warm-up call on a tenth
   of the inputs, the median of --repeat calls), rounds per call (from the
   channels' traffic counters), bytes sent per element per node, and dealer
   bytes per element (to node n-1); and the CPU seconds of the nodes (all
   their threads, summed over nodes), which unlike wall time does not
   depend on what else the machine runs.
3. Comparisons: [x < 0], [x < y] and [x == 0] on --cmp-size elements (goal:
   >= 10^6 per second on 10^6-element vectors).

Usage::

    python scripts/bench_nonlinear.py [--nodes 3] [--size 100000] [--acc-size 100000]
                                      [--cmp-size 1000000] [--repeat 3] [--only reciprocal,exp]
                                      [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from mpc import compare, field, nonlinear  # noqa: E402
from mpc.params import Params  # noqa: E402
from mpc.prg import Prg  # noqa: E402
from mpc.reveal import reveal  # noqa: E402
from mpc.shared import SharedArray  # noqa: E402
from mpc.triples import DEALER  # noqa: E402
from parties.harness import run_processes  # noqa: E402

PAD_SEED = b"bench-nonlinear!"
FUNCTIONS = ["reciprocal", "sqrt", "inv_sqrt", "log", "exp", "sigmoid", "divide"]
COMPARISONS = ["ltz", "less_than", "eqz"]
REFERENCE = {
    "reciprocal": lambda x: 1.0 / x,
    "sqrt": np.sqrt,
    "inv_sqrt": lambda x: 1.0 / np.sqrt(x),
    "log": np.log,
    "exp": np.exp,
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
}


# ----------------------------------------------------------------- inputs

def accuracy_inputs(name: str, n: int, params: Params) -> np.ndarray:
    """Encoded test inputs (float64 values exactly on the fixed-point grid)."""
    rng = np.random.default_rng(sum(map(ord, name)))
    top = params.k - 1 - params.f
    if name == "exp":
        x = rng.uniform(-30.0, 15.0, n)
    elif name == "sigmoid":
        x = rng.uniform(-40.0, 40.0, n)
    else:
        x = 2.0 ** rng.uniform(-16.0, top, n)
        x[:2] = [2.0 ** -16, 2.0 ** top * (1 - 2.0 ** -40)]
        if name == "reciprocal":
            x *= rng.choice([-1.0, 1.0], n)
    x = np.round(x * 2.0 ** params.f) / 2.0 ** params.f
    limit = 2.0 ** top - 2.0 ** (top - 52)
    return np.clip(x, -limit, limit)


def divide_inputs(n: int, params: Params):
    rng = np.random.default_rng(77)
    top = params.k - 1 - params.f
    a = rng.choice([-1.0, 1.0], n) * 2.0 ** rng.uniform(-16.0, top, n)
    b = rng.choice([-1.0, 1.0], n) * 2.0 ** rng.uniform(-16.0, top, n)
    a = np.round(a * 2.0 ** params.f) / 2.0 ** params.f
    b = np.round(b * 2.0 ** params.f) / 2.0 ** params.f
    keep = np.abs(a / b) < 2.0 ** (top - 1)
    return a[keep], b[keep]


def shared_input(ctx, values: np.ndarray, label: str) -> SharedArray:
    """A proper additive sharing of public values: pads from a common seed."""
    f = ctx.params.f
    enc = field.encode_fixed(values, ctx.params, f)
    pads = [Prg(PAD_SEED, f"{label}/{i}").field(values.shape) for i in range(1, ctx.n)]
    if ctx.index == 0:
        share = enc
        for pad in pads:
            share = field.sub(share, pad)
    else:
        share = pads[ctx.index - 1]
    return SharedArray(ctx, share, f)


# ----------------------------------------------------------------- node side

def _barrier(ctx) -> None:
    ctx.channel.exchange(ctx.others, "barrier", np.zeros(1, dtype=np.int64), dtype="i64")


def _count_dealer_bytes(ctx) -> dict:
    tally = defaultdict(int)
    recv = ctx.channel.recv

    def counting_recv(peer, tag, **kw):
        array = recv(peer, tag, **kw)
        if peer == DEALER:
            tally[ctx.channel.stats.current] += array.nbytes
        return array

    ctx.channel.recv = counting_recv
    return tally


def _call(ctx, name, xs):
    if name in ("ltz", "eqz"):
        return getattr(compare, name)(xs[0])
    if name == "less_than":
        return compare.less_than(xs[0], xs[1])
    if name == "divide":
        return nonlinear.divide(xs[0], xs[1])
    return getattr(nonlinear, name)(xs[0])


def node_job(ctx, tasks, repeat):
    """Run every task (phase, name, inputs, reveal?): one warm-up call on a
    tenth of the inputs, then `repeat` timed calls, each from a barrier."""
    dealer = _count_dealer_bytes(ctx)
    out = {}
    for phase, name, inputs, want in tasks:
        xs = [shared_input(ctx, v, f"{phase}/{i}") for i, v in enumerate(inputs)]
        warm = [shared_input(ctx, v[: max(1, v.size // 10)], f"{phase}/w{i}") for i, v in enumerate(inputs)]
        with ctx.phase(f"warmup:{phase}"):
            _call(ctx, name, warm)
            ctx.tuples.flush()
        times, cpu, y = [], [], None
        for r in range(repeat):
            _barrier(ctx)
            with ctx.phase(phase if r == 0 else f"{phase}#{r}"):
                start, cpu_start = time.perf_counter(), time.process_time()
                y = _call(ctx, name, xs)
                ctx.tuples.flush()
                times.append(time.perf_counter() - start)
                cpu.append(time.process_time() - cpu_start)     # all threads of this node
        values = reveal(ctx, [y], "bench")[0] if want else None
        out[phase] = {"seconds": times, "cpu": cpu, "values": values if ctx.index == 0 else None,
                      "dealer_bytes": dealer.get(phase, 0)}
    return out


# ----------------------------------------------------------------- driver

def run(tasks, nodes: int, params: Params, repeat: int):
    results = run_processes(nodes, node_job, (tasks, repeat), params=params, policy={"bench": ["nodes"]},
                            timeout=3600, peer_timeout=300, full=True)
    per_node = [r["result"] for r in results[:nodes]]
    traffic = [r["traffic"] for r in results[:nodes]]
    summary = {}
    for phase, name, inputs, _ in tasks:
        n = inputs[0].size
        # the slowest node's time per repetition; the median repetition
        seconds = float(np.median(np.max([p[phase]["seconds"] for p in per_node], axis=0)))
        node_cpu = float(np.median(np.sum([p[phase]["cpu"] for p in per_node], axis=0)))
        summary[phase] = {
            "name": name, "n": n, "seconds": seconds, "per_second": n / seconds, "node_cpu": node_cpu,
            "rounds": max(t.get(phase, {}).get("rounds", 0) for t in traffic),
            "bytes_per_element": max(t.get(phase, {}).get("bytes_sent", 0) for t in traffic) / n,
            "dealer_bytes_per_element": per_node[nodes - 1][phase]["dealer_bytes"] / n,
            "values": per_node[0][phase]["values"],
        }
    return summary


def error_stats(name, inputs, values, f):
    """Errors against float64 at the encoded input: absolute (in units of
    2^-f) where |f(x)| < 1, relative where |f(x)| >= 1, and the worst ratio to
    the goal's tolerance max(1e-6 |f(x)|, 4 2^-f) over all inputs."""
    with np.errstate(all="ignore"):
        exact = inputs[0] / inputs[1] if name == "divide" else REFERENCE[name](inputs[0])
    err = np.abs(values - exact)
    tol = np.maximum(1e-6 * np.abs(exact), 4 * 2.0 ** -f)
    small, large = np.abs(exact) < 1, np.abs(exact) >= 1
    ulp = err * 2.0 ** f
    rel = err[large] / np.abs(exact[large])
    return {"n_small": int(small.sum()), "n_large": int(large.sum()),
            "max_ulp_small": float(ulp[small].max()) if small.any() else None,
            "median_ulp_small": float(np.median(ulp[small])) if small.any() else None,
            "max_rel_large": float(rel.max()) if large.any() else None,
            "median_rel_large": float(np.median(rel)) if large.any() else None,
            "worst_ratio": float(np.max(err / tol)), "failures": int(np.sum(err > tol))}


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--size", type=int, default=100_000, help="elements per call for throughput")
    ap.add_argument("--acc-size", type=int, default=100_000, help="elements for the accuracy table")
    ap.add_argument("--cmp-size", type=int, default=1_000_000, help="elements for comparisons")
    ap.add_argument("--only", default="", help="comma-separated subset of functions / comparisons")
    ap.add_argument("--repeat", type=int, default=3, help="timed repetitions (median reported)")
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)
    params = Params()
    only = set(filter(None, args.only.split(",")))
    pick = (lambda nm: not only or nm in only)
    f = params.f

    # accuracy (one call per function on --acc-size elements; also timed)
    tasks, inputs_of = [], {}
    for name in FUNCTIONS:
        if not pick(name):
            continue
        inputs = list(divide_inputs(args.acc_size, params)) if name == "divide" \
            else [accuracy_inputs(name, args.acc_size, params)]
        inputs_of[name] = inputs
        tasks.append((f"acc:{name}", name, inputs, True))
    # throughput at --size (when it differs from the accuracy size)
    if args.size != args.acc_size:
        for name in FUNCTIONS:
            if pick(name):
                inputs = list(divide_inputs(args.size, params)) if name == "divide" \
                    else [accuracy_inputs(name, args.size, params)]
                tasks.append((f"speed:{name}", name, inputs, False))
    rng = np.random.default_rng(5)
    for name in COMPARISONS:
        if pick(name):
            x = np.round(rng.uniform(-1e6, 1e6, args.cmp_size) * 2.0 ** f) / 2.0 ** f
            x[: args.cmp_size // 10] = 0.0
            ins = [x, np.round(rng.uniform(-1e6, 1e6, args.cmp_size) * 2.0 ** f) / 2.0 ** f] \
                if name == "less_than" else [x]
            if name == "less_than":
                ins[1][: args.cmp_size // 10] = x[: args.cmp_size // 10]
            tasks.append((f"cmp:{name}", name, ins, True))
            inputs_of[f"cmp:{name}"] = ins

    load_before = os.getloadavg()[0]
    started = time.time()
    summary = run(tasks, args.nodes, params, args.repeat)
    wall = time.time() - started

    print(f"# bench_nonlinear: dealer + {args.nodes} nodes as processes (ZeroMQ + CurveZMQ, loopback), "
          f"{os.cpu_count()} CPUs (1-minute load average {load_before:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after); {params.describe()}")
    print(f"# accuracy on {args.acc_size} inputs per function; errors against float64 at the encoded input;"
          f" tolerance max(1e-6 |f|, 4 * 2^-{f})")
    print()
    print("| function | input range | max err (ulp), abs f < 1 | median (ulp) | max rel err, abs f >= 1 "
          "| median rel err | worst err / tolerance | failures |")
    print("|---|---|---|---|---|---|---|---|")
    ranges = {"reciprocal": "+-[2^-16, 2^27)", "sqrt": "[2^-16, 2^27)", "inv_sqrt": "[2^-16, 2^27)",
              "log": "[2^-16, 2^27)", "exp": "[-30, 15]", "sigmoid": "[-40, 40]",
              "divide": "a, b in +-[2^-16, 2^27), abs(a/b) < 2^26"}
    report = {"params": vars(params), "nodes": args.nodes, "wall_seconds": wall, "accuracy": {},
              "throughput": {}, "comparisons": {}}
    for name in FUNCTIONS:
        key = f"acc:{name}"
        if key not in summary:
            continue
        st = error_stats(name, inputs_of[name], summary[key]["values"], f)
        report["accuracy"][name] = st
        print(f"| {name} | {ranges[name]} | {_fmt(st['max_ulp_small'], '.2f')} | "
              f"{_fmt(st['median_ulp_small'], '.2f')} | {_fmt(st['max_rel_large'], '.2e')} | "
              f"{_fmt(st['median_rel_large'], '.2e')} | {st['worst_ratio']:.3f} | {st['failures']} |")
    print()
    print("| function | elements | seconds | elements/s | node CPU s (sum) | rounds | bytes sent/element/node "
          "| dealer bytes/element |")
    print("|---|---|---|---|---|---|---|---|")
    for name in FUNCTIONS:
        key = f"speed:{name}" if f"speed:{name}" in summary else f"acc:{name}"
        if key not in summary:
            continue
        s = summary[key]
        report["throughput"][name] = {k: v for k, v in s.items() if k != "values"}
        print(f"| {name} | {s['n']} | {s['seconds']:.3f} | {s['per_second']:,.0f} | {s['node_cpu']:.2f} | "
              f"{s['rounds']} | {s['bytes_per_element']:.0f} | {s['dealer_bytes_per_element']:.0f} |")
    cmp_rows = [nm for nm in COMPARISONS if f"cmp:{nm}" in summary]
    if cmp_rows:
        print()
        print("| comparison | elements | seconds | elements/s | node CPU s (sum) | rounds "
              "| bytes sent/element/node | dealer bytes/element | exact |")
        print("|---|---|---|---|---|---|---|---|---|")
        for name in cmp_rows:
            s = summary[f"cmp:{name}"]
            ins = inputs_of[f"cmp:{name}"]
            expect = {"ltz": lambda: ins[0] < 0, "eqz": lambda: ins[0] == 0,
                      "less_than": lambda: ins[0] < ins[1]}[name]()
            exact = bool(np.array_equal(s["values"], expect.astype(np.int64)))
            report["comparisons"][name] = {**{k: v for k, v in s.items() if k != "values"}, "exact": exact}
            print(f"| {name} | {s['n']} | {s['seconds']:.3f} | {s['per_second']:,.0f} | {s['node_cpu']:.2f} | "
                  f"{s['rounds']} | {s['bytes_per_element']:.0f} | {s['dealer_bytes_per_element']:.0f} | {exact} |")
    print(f"\n# total wall time {wall:.1f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1, default=float)


if __name__ == "__main__":
    main()
