"""Benchmark the F_p (p = 2^127 - 1) kernels and the PRG on one core.

Reports, for each kernel, the median wall time of several repetitions after a
warm-up call (the first call on fresh arrays pays for first-touch page faults,
which would otherwise dominate), the time per element (elementwise kernels) or
per multiply-accumulate (matrix products), and numpy's own uint64 operation on
an array of the same logical size as a baseline.

Targets (one core): mul <= 4 ns/element, matmul <= 2.5 ns/MAC (the scalar
kernel), PRG >= 200 M field elements/s; where the AVX-512 IFMA kernels run
(mpc._kernels.field.IFMA_KERNELS), matmul and matmul_tn <= 0.8 ns/MAC.

The matrix products are timed through the public wrappers (matmul,
matmul_tn: what the library runs) and per implementation (*_scalar: the
x86-64 assembly dot product or its portable twin; *_ifma: AVX-512 IFMA), on
a square matrix (--dim) times a thin one (--cols), and on the shapes of the
secure GWAS (group "blocks"): a block of the genotype matrix,
--block-rows x --block-cols, times --thin columns, and its transpose product
(block.T @ a --block-rows x --thin matrix).

Usage::

    python scripts/bench_kernels.py [--n 10000000] [--dim 2000] [--cols 16] [--repeat 7]
                                    [--block-rows 20000] [--block-cols 1024] [--thin 20]
                                    [--block-repeat 3]
                                    [--only elementwise|matmul|blocks|prg ...]

On a shared machine compare the "best" column too: other processes inflate
the median of wall times.
"""
from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import numpy as np

from mpc import field
from mpc._kernels import field as kernels
from mpc.prg import Prg


@dataclass(frozen=True)
class Row:
    """One line of the result table."""

    name: str
    size: str
    seconds: float
    per_unit_ns: float
    best_ns: float
    unit: str
    baseline_ns: float | None
    target: str
    ok: bool | None


@dataclass(frozen=True)
class Timing:
    """Median and best wall time of repeated calls, in seconds."""

    median: float
    best: float


def time_calls(fn, repeat: int) -> Timing:
    """Wall time of fn() over `repeat` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return Timing(statistics.median(times), min(times))


def median_seconds(fn, repeat: int) -> float:
    return time_calls(fn, repeat).median


def bench_elementwise(n: int, repeat: int, prg: Prg) -> list[Row]:
    a = prg.field(n)
    b = prg.field(n)
    out = np.empty_like(a)
    # numpy baseline: uint64 ops on n words, the same number of elements.
    x = a[:, 0].copy()
    y = b[:, 0].copy()
    z = np.empty_like(x)
    baselines = {
        "mul": median_seconds(lambda: np.multiply(x, y, out=z), repeat),
        "add": median_seconds(lambda: np.add(x, y, out=z), repeat),
        "sub": median_seconds(lambda: np.subtract(x, y, out=z), repeat),
    }
    kernels = {
        "mul": lambda: field.mul(a, b, out=out),
        "add": lambda: field.add(a, b, out=out),
        "sub": lambda: field.sub(a, b, out=out),
    }
    targets = {"mul": 4.0}
    rows = []
    for name, fn in kernels.items():
        timing = time_calls(fn, repeat)
        sec, ns = timing.median, timing.median / n * 1e9
        target = targets.get(name)
        rows.append(Row(name, f"{n:.0e}", sec, ns, timing.best / n * 1e9, "ns/elem", baselines[name] / n * 1e9,
                        f"<= {target} ns" if target else "", None if target is None else ns <= target))
    return rows


IFMA_TARGET_NS = 0.8


def bench_products(a: np.ndarray, b: np.ndarray, c: np.ndarray, repeat: int, public_target: bool) -> list[Row]:
    """a @ b and a.T @ c (field arrays a (m, K), b (K, n), c (m, n')): the public
    wrappers, then each implementation of the kernels."""
    (m, k), n, n_tn = a.shape[:2], b.shape[1], c.shape[1]
    products = [  # (name, size, public call, kernel operands and output, MACs, numpy baseline)
        ("matmul", f"{m}x{k}@{k}x{n}", lambda: field.matmul(a, b), (a, b, np.empty((m, n, 2), np.uint64)),
         m * k * n, lambda x, y, z: x @ y),
        ("matmul_tn", f"{m}x{k}.T@{m}x{n_tn}", lambda: field.matmul_tn(a, c),
         (a, c, np.empty((k, n_tn, 2), np.uint64)), m * k * n_tn, lambda x, y, z: x.T @ z),
    ]
    # numpy baseline: uint64 matrix product of the same shapes (wraps mod 2^64).
    x, y, z = (v[:, :, 0].copy() for v in (a, b, c))
    suffixes = ["_scalar"] + (["_ifma"] if kernels.IFMA_KERNELS else [])
    rows = []
    for name, size, public, operands, macs, numpy_op in products:
        base = median_seconds(lambda: numpy_op(x, y, z), repeat) / macs * 1e9
        timing = time_calls(public, repeat)
        ns = timing.median / macs * 1e9
        target = 2.5 if name == "matmul" and public_target else None
        rows.append(Row(name, size, timing.median, ns, timing.best / macs * 1e9, "ns/MAC", base,
                        f"<= {target} ns" if target else "", None if target is None else ns <= target))
        scalar_ns = None
        for suffix in suffixes:
            fn = getattr(kernels, name + suffix)
            timing = time_calls(lambda: fn(*operands), repeat)
            ns = timing.median / macs * 1e9
            if suffix == "_scalar":
                scalar_ns = ns
                rows.append(Row(name + suffix, size, timing.median, ns, timing.best / macs * 1e9, "ns/MAC",
                                base, "", None))
            else:
                rows.append(Row(name + suffix, size, timing.median, ns, timing.best / macs * 1e9, "ns/MAC",
                                base, f"<= {IFMA_TARGET_NS} ns, {scalar_ns / ns:.1f}x scalar",
                                ns <= IFMA_TARGET_NS))
    return rows


def bench_matmul(dim: int, cols: int, repeat: int, prg: Prg) -> list[Row]:
    a = prg.field((dim, dim))
    b = prg.field((dim, cols))
    return bench_products(a, b, b, repeat, public_target=True)


def bench_blocks(rows: int, cols: int, thin: int, repeat: int, prg: Prg) -> list[Row]:
    """The secure GWAS's products: a block of the genotype matrix (rows x cols)
    times a thin matrix (cols x thin), and block.T @ (rows x thin)."""
    block = prg.field((rows, cols))
    return bench_products(block, prg.field((cols, thin)), prg.field((rows, thin)), repeat, public_target=False)


def bench_prg(n: int, repeat: int) -> list[Row]:
    prg = Prg(bytes(16), "bench/prg")
    out = np.empty((n, field.LIMBS), dtype=np.uint64)
    timing = time_calls(lambda: prg.field(n, out=out), repeat)
    sec = timing.median
    rate = n / sec
    # numpy baseline: filling the same number of bytes with a copy.
    src = np.ones_like(out)
    base = median_seconds(lambda: np.copyto(out, src), repeat) / n * 1e9
    return [Row("prg.field", f"{n:.0e}", sec, sec / n * 1e9, timing.best / n * 1e9, "ns/elem", base,
                f">= 200 M/s ({rate / 1e6:.0f} M/s)", rate >= 200e6)]


def print_table(rows: list[Row]) -> None:
    header = f"{'kernel':<16} {'size':<22} {'median s':>9} {'median':>8} {'best':>8} {'unit':<8} " \
             f"{'numpy':>7} {'ratio':>6}  target (judged on the median)"
    print(header)
    print("-" * len(header))
    for r in rows:
        base = f"{r.baseline_ns:7.2f}" if r.baseline_ns else " " * 7
        ratio = f"{r.per_unit_ns / r.baseline_ns:6.1f}" if r.baseline_ns else " " * 6
        verdict = "" if r.ok is None else ("  ok" if r.ok else "  MISSED")
        print(f"{r.name:<16} {r.size:<22} {r.seconds:9.4f} {r.per_unit_ns:8.3f} {r.best_ns:8.3f} {r.unit:<8} "
              f"{base} {ratio}  {r.target}{verdict}")
    print("median / best: time per unit over the timed repetitions.  numpy: median time per unit of "
          "numpy's uint64 multiply / add / subtract on as many words (mul, add, sub), its uint64 "
          "matmul of the same shapes (matrix products), a copy of the same bytes (prg.field); "
          "ratio = median / numpy.")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000_000, help="elements for elementwise kernels and the PRG")
    parser.add_argument("--dim", type=int, default=2000, help="rows and inner dimension of the matmul")
    parser.add_argument("--cols", type=int, default=16, help="columns of the right matmul operand")
    parser.add_argument("--repeat", type=int, default=7, help="timed repetitions (median reported)")
    parser.add_argument("--block-rows", type=int, default=20000, help="rows (samples) of the genotype block")
    parser.add_argument("--block-cols", type=int, default=1024, help="columns (SNPs) of the genotype block")
    parser.add_argument("--thin", type=int, default=20, help="columns of the thin operand of the block products")
    parser.add_argument("--block-repeat", type=int, default=3, help="timed repetitions of the block products")
    parser.add_argument("--only", choices=["elementwise", "matmul", "blocks", "prg"], action="append",
                        help="run only these groups (repeatable)")
    args = parser.parse_args(argv)
    groups = args.only or ["elementwise", "matmul", "blocks", "prg"]
    print(f"F_p kernels: {'x86-64 assembly' if kernels.ASM_KERNELS else 'portable Cython'} "
          f"(mpc._kernels.field.ASM_KERNELS = {kernels.ASM_KERNELS}); matrix products: "
          f"{'AVX-512 IFMA' if kernels.IFMA_KERNELS else 'scalar'} "
          f"(IFMA_KERNELS = {kernels.IFMA_KERNELS})")
    prg = Prg(bytes(range(16)), "bench/inputs")
    rows: list[Row] = []
    if "elementwise" in groups:
        rows += bench_elementwise(args.n, args.repeat, prg)
    if "matmul" in groups:
        rows += bench_matmul(args.dim, args.cols, args.repeat, prg)
    if "blocks" in groups:
        rows += bench_blocks(args.block_rows, args.block_cols, args.thin, args.block_repeat, prg)
    if "prg" in groups:
        rows += bench_prg(args.n, args.repeat)
    print_table(rows)


if __name__ == "__main__":
    main()
