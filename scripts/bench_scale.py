#!/usr/bin/env python3
"""Scaling of the secure GWAS (QC + PCA + association) with cohort size.

For each size N x M: simulate 3 sites, start dealer + 3 node daemons (fresh,
CurveZMQ), submit, then run `gwas` with its default options and report wall
time, time per million genotypes, bytes sent per node, and the peak memory of
each daemon during the analysis (VmHWM, reset after the submission) and per
phase (RSS sampled every 0.1 s), which must not grow with M at a fixed SNP
block size beyond the QC / association chunk sizes.

    python scripts/bench_scale.py [--sizes 2000x20000,2000x100000,5000x100000]
                                  [--block-snps 1024] [--work DIR] [--json FILE]

Disk: each node stores 32 bytes per genotype (the imputed dosage as 16-byte field
elements, the missing and heterozygous indicators as 8-byte narrow-masked int64); the script refuses a size whose three nodes would not fit on
the work directory's disk and says so.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from parties.local import LocalStudy  # noqa: E402
from parties.simulate import simulate  # noqa: E402

BYTES_PER_GENOTYPE = 16 + 8 + 8


def reset_peaks(study):
    for p in study.procs.values():
        try:
            Path(f"/proc/{p.pid}/clear_refs").write_text("5")
        except OSError:
            pass


class RssSampler:
    """Resident memory of each daemon every `period` seconds (Linux /proc), so the
    peak can be attributed to a phase from the phases' durations."""

    def __init__(self, procs, period: float = 0.1):
        self.procs, self.period = dict(procs), period
        self.samples = []              # (seconds since start, {name: MiB})
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.t0 = time.perf_counter()
        self._thread.start()

    def _rss(self, pid):
        try:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return float("nan")

    def _run(self):
        while not self._stop.is_set():
            self.samples.append((time.perf_counter() - self.t0,
                                 {k: self._rss(p.pid) for k, p in self.procs.items()}))
            self._stop.wait(self.period)

    def stop(self):
        self._stop.set()
        self._thread.join()

    def per_phase(self, phases: dict, wall: float) -> dict:
        """{phase: {daemon: peak MiB}}; phase windows laid end to end from the
        phases' durations, stretched to the measured wall time (the rest is the
        job's start and the analyst's reads)."""
        total = sum(p["seconds"] for p in phases.values()) or 1.0
        scale = wall / total if total < wall else 1.0
        out, start = {}, 0.0
        for name, p in phases.items():
            end = start + p["seconds"] * scale
            window = [r for t, r in self.samples if start <= t <= end]
            if window:
                out[name] = {k: max(r[k] for r in window) for k in window[0]}
            start = end
        return out


def run_size(n, m, work: Path, block_snps: int, options: dict):
    need = 3 * BYTES_PER_GENOTYPE * n * m * 1.05
    free = shutil.disk_usage(work).free
    if need > free:
        print(f"\n=== {n} x {m}: skipped — the three nodes would store {need / 1e9:.0f} GB and the disk has "
              f"{free / 1e9:.0f} GB free (each node needs {need / 3e9:.1f} GB on its own machine)")
        return {"n": n, "m": m, "skipped": f"needs {need / 1e9:.0f} GB of disk, {free / 1e9:.0f} GB free"}
    simulate(out_dir=work / "sites", sites=3, samples=n, snps=m, seed=5)
    sites = [work / "sites" / f"site{i}" for i in (1, 2, 3)]
    study = LocalStudy(work / "study", timeout=60.0, block_snps=block_snps)
    try:
        t0 = time.perf_counter()
        for s, name in zip(sites, ("site1", "site2", "site3")):
            study.submit(s, name)
        t_submit = time.perf_counter() - t0
        reset_peaks(study)
        before = study.usage()
        sampler = RssSampler(study.procs)
        t0 = time.perf_counter()
        try:
            summary = study.run("gwas", work / "out", **options)
        finally:
            sampler.stop()
        wall = time.perf_counter() - t0
        after = study.usage()
    finally:
        study.close()
        shutil.rmtree(work / "study", ignore_errors=True)
        shutil.rmtree(work / "sites", ignore_errors=True)
    mgeno = n * m / 1e6
    print(f"\n=== {n} x {m} ({mgeno:.0f} M genotypes, blocks of {block_snps} SNPs; after QC "
          f"{summary['samples_after_qc']} x {summary['snps_after_qc']}, PCA on {summary['pca_snps']} SNPs)")
    print(f"submission {t_submit:.1f} s; analysis {wall:.1f} s = {wall / mgeno:.3f} s per million genotypes")
    by_phase = sampler.per_phase(summary["phases"], wall)
    for phase, p in summary["phases"].items():
        peaks = by_phase.get(phase, {})
        nodes = [v for k, v in peaks.items() if k.startswith("node")]
        print(f"  {phase:<12}{p['seconds']:>9.1f} s{p['rounds']:>8} rounds{p.get('hops', 0):>6} hops"
              f"{p['bytes_sent'] / 1e6:>10.1f} MB"
              f"   node RSS peak {max(nodes, default=float('nan')):.0f} MiB")
    print("  bytes sent per node: " + ", ".join(f"{k} {v / 1e6:.0f} MB" for k, v in summary["traffic_bytes_sent"].items()))
    print("  CPU s / peak MiB during the analysis: " + ", ".join(
        f"{k} {after[k][0] - before[k][0]:.0f} / {after[k][1]:.0f}" for k in after))
    return {"n": n, "m": m, "submit_s": t_submit, "wall_s": wall, "s_per_mgeno": wall / mgeno,
            "phases": summary["phases"], "bytes_sent": summary["traffic_bytes_sent"],
            "cpu_s": {k: after[k][0] - before[k][0] for k in after}, "peak_mib": {k: after[k][1] for k in after},
            "peak_mib_by_phase": by_phase}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="2000x20000,2000x100000,5000x100000")
    ap.add_argument("--block-snps", type=int, default=1024)
    ap.add_argument("--work", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    options = {"pheno": "CASE", "covar_names": "", "mind": 0.1, "geno": 0.1, "maf": 0.01, "hwe": 1e-6,
               "het_min": None, "het_max": None, "het_sd": None, "pcs": 10, "pca_oversample": 10,
               "pca_iters": 4, "pca_eig_iters": 10, "ld_dist": 100000, "pca_seed": 0}
    base = Path(args.work or tempfile.mkdtemp(prefix="bench_scale_"))
    results = []
    try:
        for size in args.sizes.split(","):
            n, m = (int(x) for x in size.lower().split("x"))
            work = base / size
            work.mkdir(parents=True, exist_ok=True)
            results.append(run_size(n, m, work, args.block_snps, options))
    finally:
        if args.work is None:
            shutil.rmtree(base, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
