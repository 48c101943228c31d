#!/usr/bin/env python3
"""Benchmark the secure log-rank test and Kaplan–Meier curves with dealer + 3 node daemons.

Workload (defaults): 100 000 patients in 2 groups, split by rows over 3
providers; follow-up in whole days on the study's default grid (0 .. 10 000
days, resolution 1: 10 001 grid times), event times spread over the whole
grid (earlier in the second group) with uniform censoring: about 73 000
events at 10^4 distinct event times.
The study's policy releases the Kaplan–Meier curves too (``logrank.km``),
and the run computes both the test and the curves.

Printed: submission time, analysis wall time, time / rounds / bytes per phase
(node 0), bytes sent per node, CPU seconds and peak memory per daemon, the
plaintext reference (protocols.reference from the same records: count tables,
logrank, kaplan_meier) as the baseline ratio, and the secure result's error
against it.

    python scripts/bench_logrank.py [--patients 100000] [--groups 2] [--strata 1]
                                    [--no-km] [--work DIR] [--plaintext-channels]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from parties.local import LocalStudy  # noqa: E402
from protocols import reference as ref  # noqa: E402

MAX_TIME = 10000          # the default study grid: [survival] max_time = 10000, resolution = 1


def simulate(n: int, groups: int, strata: int, seed: int):
    rng = np.random.default_rng(seed)
    group = rng.integers(0, groups, n)
    stratum = rng.integers(0, strata, n)
    # events spread over the whole grid (about 7 a day), earlier in higher groups and strata
    event_time = rng.uniform(0, 1.3 * MAX_TIME, n) * 0.87 ** group / (1.0 + 0.1 * stratum)
    censor_time = rng.uniform(0, 3 * MAX_TIME, n)
    time_ = np.minimum(np.minimum(event_time, censor_time), MAX_TIME)
    event = (event_time <= np.minimum(censor_time, MAX_TIME)).astype(int)
    return np.rint(time_), event, group, stratum


def write_sites(root: Path, t, e, g, s, n_sites: int, with_strata: bool):
    sites = []
    for i, rows in enumerate(np.array_split(np.arange(t.size), n_sites)):
        site = root / f"site{i + 1}"
        site.mkdir(parents=True)
        header = "IID\tTIME\tEVENT\tGROUP" + ("\tSTRATUM" if with_strata else "")
        lines = [header] + [f"p{j}\t{int(t[j])}\t{e[j]}\tg{g[j]}" + (f"\ts{s[j]}" if with_strata else "")
                            for j in rows]
        (site / "survival.tsv").write_text("\n".join(lines) + "\n")
        sites.append(site)
    return sites


def plaintext(t, e, g, s, n_sites: int, groups, stratified: bool, km: bool):
    """The same analysis in float64 from the records: (seconds, logrank result, KM result)."""
    grid = np.arange(MAX_TIME + 1, dtype=float)
    labels = [f"g{k}" for k in groups]
    start = time.perf_counter()
    parts = np.array_split(np.arange(t.size), n_sites)
    by_stratum = np.unique(s) if stratified else [None]
    tables = []
    for st in by_stratum:
        total = None
        for rows in parts:
            rows = rows if st is None else rows[s[rows] == st]
            table = ref.count_table(t[rows], e[rows], np.array([f"g{x}" for x in g[rows]]), labels, grid)
            total = table if total is None else total + table
        tables.append(total)
    test = ref.logrank_stratified(tables) if stratified else ref.logrank(tables[0].at_risk, tables[0].events)
    curves = None
    if km:
        at_risk = sum(tb.at_risk for tb in tables)
        events = sum(tb.events for tb in tables)
        curves = ref.kaplan_meier(at_risk, events)
    return time.perf_counter() - start, test, curves


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, default=100000)
    ap.add_argument("--groups", type=int, default=2)
    ap.add_argument("--strata", type=int, default=1, help="strata (> 1: a stratified test)")
    ap.add_argument("--sites", type=int, default=3)
    ap.add_argument("--no-km", action="store_true", help="the test only")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=None, help="keep the study here (default: a temporary folder)")
    ap.add_argument("--plaintext-channels", action="store_true", help="no CurveZMQ (loopback only)")
    args = ap.parse_args(argv)

    t, e, g, s = simulate(args.patients, args.groups, args.strata, args.seed)
    stratified = args.strata > 1
    km = not args.no_km
    print(f"workload: {t.size} patients, {args.groups} groups, {args.strata} strat{'a' if args.strata > 1 else 'um'}, {args.sites} sites; "
          f"{int(e.sum())} events at {np.unique(t[e == 1]).size} distinct times; "
          f"grid 0..{MAX_TIME} (resolution 1: {MAX_TIME + 1} times)")

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_logrank_"))
    if work.exists() and args.work:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    sites = write_sites(work / "sites", t, e, g, s, args.sites, stratified)
    start = time.perf_counter()
    study = LocalStudy(work / "study", providers=[f"site{i + 1}" for i in range(args.sites)],
                       timeout=30.0, curve=not args.plaintext_channels,
                       policy={"logrank.km": ["analyst"]})
    try:
        print(f"daemons up in {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        for i, site in enumerate(sites):
            study.submit(site, f"site{i + 1}")
        print(f"submission: {time.perf_counter() - start:.2f} s for {args.sites} sites")
        options = {"strata": stratified, "time_resolution": None, "km": "yes" if km else "no",
                   "km_min_at_risk": 0}
        before = study.usage()
        start = time.perf_counter()
        summary = study.run("logrank", work / "out", **options)
        wall = time.perf_counter() - start
        after = study.usage()
    finally:
        study.close()

    print(f"\nsecure logrank{' + Kaplan-Meier' if km else ''}: wall {wall:.2f} s (job {summary['seconds']:.2f} s)")
    print(f"{'phase':>16} {'seconds':>9} {'rounds':>7} {'hops':>6} {'MB sent':>9}")
    for name, p in summary["phases"].items():
        print(f"{name:>16} {p['seconds']:9.2f} {p['rounds']:7d} {p.get('hops', 0):6d} {p['bytes_sent'] / 1e6:9.1f}")
    total_rounds = sum(p["rounds"] for p in summary["phases"].values())
    print(f"{'total':>16} {sum(p['seconds'] for p in summary['phases'].values()):9.2f} {total_rounds:7d} "
          f"{sum(p['bytes_sent'] for p in summary['phases'].values()) / 1e6:9.1f}")
    print("bytes sent per node: " + ", ".join(f"{n} {b / 1e6:.1f} MB" for n, b in summary["traffic_bytes_sent"].items()))
    print("daemon CPU s / peak MiB during the run: " + ", ".join(
        f"{n} {after[n][0] - before[n][0]:.1f} / {after[n][1]:.0f}" for n in after))

    seconds, test, curves = plaintext(t, e, g, s, args.sites, range(args.groups), stratified, km)
    print(f"\nplaintext reference (float64, same records): {seconds:.3f} s; secure / plaintext = "
          f"{wall / seconds:.0f}x")
    rel = abs(summary["chisq"] / test.chisq - 1) if test.chisq else abs(summary["chisq"])
    print(f"chisq {summary['chisq']:.10g} (reference {test.chisq:.10g}, relative error {rel:.1e}), "
          f"df {summary['df']}, p {summary['p']:.4g}")
    expected = np.array([summary["expected"][f"g{k}"] for k in range(args.groups)])
    print(f"expected events: max abs error {np.max(np.abs(expected - test.expected)):.1e}")
    if km:
        rows = [line.split("\t") for line in (work / "out" / "km.tsv").read_text().splitlines()[1:]]
        err_s, err_se = 0.0, 0.0
        for label, time_, _, _, surv, se in rows:
            k, tt = int(label[1:]), int(float(time_))
            err_s = max(err_s, abs(float(surv) - curves.survival[k, tt]))
            if se != "NA" and np.isfinite(curves.se[k, tt]):
                err_se = max(err_se, abs(float(se) - curves.se[k, tt]))
        print(f"Kaplan-Meier: max |S - reference| {err_s:.1e}, max |SE - reference| {err_se:.1e} "
              f"over {len(rows)} km.tsv rows (values printed with 10 significant digits)")
    print(json.dumps({"patients": int(t.size), "distinct_event_times": int(np.unique(t[e == 1]).size),
                      "wall_s": round(wall, 2), "rounds": total_rounds,
                      "bytes_sent_node0": summary["traffic_bytes_sent"].get("node0"),
                      "plaintext_s": round(seconds, 4), "chisq_rel_error": rel}))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
