#!/usr/bin/env python3
"""Benchmark the secure GWAS (QC + PCA + association) with dealer + 3 node daemons.

Workloads:
  1k     secure-gwas's own example (../shared/data/secure-gwas-1k: 1000 individuals x
         1000 SNPs x 10 covariates in 3 sites), 5 PCs, 5 oversampling columns,
         10 power iterations, secure-gwas's QC thresholds (mind 0.05, geno 0.1,
         heterozygosity in [0.2, 0.5], no MAF / HWE filter).
  20k    a simulated structured cohort: 2000 individuals x 20 000 SNPs in 3 sites,
         the analysis' default options (10 PCs).

For each: submission time, analysis wall time, time / rounds / bytes per phase
(node 0), bytes sent per node, CPU seconds and peak memory per daemon, and the
plaintext reference (protocols.reference, same algorithm) as the baseline ratio.

    python scripts/bench_gwas.py [--workload 1k|20k|all] [--work DIR] [--plaintext-channels]
                                 [--allow gwas.pca_eigenvalues=nodes]
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

from bed_reader import open_bed  # noqa: E402

from parties.local import LocalStudy  # noqa: E402
from parties.simulate import simulate  # noqa: E402
from parties.sites import read_site  # noqa: E402
from protocols import reference as ref  # noqa: E402

SHARED_1K = ROOT.parent / "shared" / "data" / "secure-gwas-1k"

WORKLOADS = {
    "1k": dict(options={"pheno": "CASE", "covar_names": "all", "mind": 0.05, "geno": 0.1, "maf": None,
                        "hwe": None, "het_min": 0.2, "het_max": 0.5, "het_sd": None, "pcs": 5,
                        "pca_oversample": 5, "pca_iters": 10, "pca_eig_iters": 10, "ld_dist": 1,
                        "pca_seed": 0}),
    "20k": dict(options={"pheno": "CASE", "covar_names": "", "mind": 0.1, "geno": 0.1, "maf": 0.01,
                         "hwe": 1e-6, "het_min": None, "het_max": None, "het_sd": None, "pcs": 10,
                         "pca_oversample": 10, "pca_iters": 4, "pca_eig_iters": 10, "ld_dist": 100000,
                         "pca_seed": 0}),
}


def load_plain(sites):
    """Pooled plaintext inputs of the sites (for the reference baseline)."""
    G, y, cov, site_idx = [], [], [], []
    for i, s in enumerate(sites):
        site = read_site(s)
        with open_bed(Path(s) / "genotypes.bed") as bed:
            G.append(bed.read(dtype="int8"))
        ph = site.phenotypes()
        y.append(ph["CASE"])
        c = site.covariates()
        cov.append(np.column_stack([c[n] for n in c]) if c else np.zeros((site.n_samples, 0)))
        site_idx.append(np.full(site.n_samples, i))
    g = np.vstack(G)
    missing = g < 0
    dosage = np.where(missing, 0, g)
    return dosage, missing, dosage == 1, np.concatenate(y), np.vstack(cov), np.concatenate(site_idx), \
        [read_site(s).snps for s in sites][0]


def plaintext_baseline(sites, opts):
    """Seconds for the same pipeline in float64 (protocols.reference)."""
    d, m, h, y, cov, site, snps = load_plain(sites)
    start = time.perf_counter()
    qc = ref.qc(d, m, h, mind=opts["mind"], geno=opts["geno"], maf=opts["maf"], hwe=opts["hwe"],
                het_min=opts["het_min"], het_max=opts["het_max"], pheno_missing=np.isnan(y))
    poly = qc.snp_keep & (qc.alt_freq > 0) & (qc.alt_freq < 1) if hasattr(qc, "alt_freq") else qc.snp_keep
    mask = ref.ld_thin(snps.chrom, snps.pos, poly, opts["ld_dist"])
    pca = ref.pca(d, m, qc.sample_keep, mask, k=opts["pcs"], oversample=opts["pca_oversample"],
                  iters=opts["pca_iters"], eig_iters=opts["pca_eig_iters"], seed=opts["pca_seed"], site=site)
    covs = cov if opts["covar_names"] else None
    ref.trend_test(d, m, h, y, covs, pca.pcs, qc.sample_keep, poly, site=site)
    return time.perf_counter() - start


def bench(name, sites, work, curve=True, policy=None):
    opts = WORKLOADS[name]["options"]
    providers = tuple(f"site{i + 1}" for i in range(len(sites)))
    study = LocalStudy(work / "study", providers=providers, curve=curve, timeout=30.0, policy=policy)
    try:
        t0 = time.perf_counter()
        for s, p in zip(sites, providers):
            study.submit(s, p)
        t_submit = time.perf_counter() - t0
        before = study.usage()
        t0 = time.perf_counter()
        summary = study.run("gwas", work / "out", **opts)
        wall = time.perf_counter() - t0
        after = study.usage()
    finally:
        study.close()
    baseline = plaintext_baseline(sites, opts)
    print(f"\n=== {name}: {summary['samples_before_qc']} samples x {summary['snps_before_qc']} SNPs "
          f"(after QC {summary['samples_after_qc']} x {summary['snps_after_qc']}, PCA on {summary['pca_snps']} SNPs, "
          f"{opts['pcs']} PCs, {'CurveZMQ' if curve else 'plaintext channels'})")
    print(f"submission (3 sites): {t_submit:.1f} s")
    print(f"analysis wall time:   {wall:.1f} s   (plaintext reference {baseline:.2f} s: ratio {wall / baseline:.0f}x)")
    print(f"lambda_GC {summary['lambda_gc']}; top hit {summary['top_hits'][0]['ID'] if summary['top_hits'] else '-'}")
    print(f"{'phase':<14}{'seconds':>10}{'rounds':>10}{'hops':>8}{'MB sent':>12}")
    for phase, p in summary["phases"].items():
        print(f"{phase:<14}{p['seconds']:>10.2f}{p['rounds']:>10}{p['hops']:>8}{p['bytes_sent'] / 1e6:>12.1f}")
    print("bytes sent per node: " + ", ".join(f"{n} {b / 1e6:.1f} MB" for n, b in summary["traffic_bytes_sent"].items()))
    print(f"{'party':<8}{'CPU s (job)':>12}{'peak MiB':>10}")
    for party in after:
        print(f"{party:<8}{after[party][0] - before[party][0]:>12.1f}{after[party][1]:>10.0f}")
    return {"workload": name, "submit_s": t_submit, "wall_s": wall, "baseline_s": baseline, "summary": summary,
            "cpu": {p: after[p][0] - before[p][0] for p in after}, "peak_mib": {p: after[p][1] for p in after}}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", default="all", choices=["1k", "20k", "all"])
    ap.add_argument("--work", default=None, help="working directory (default: a temporary one)")
    ap.add_argument("--plaintext-channels", action="store_true", help="no CurveZMQ (loopback only)")
    ap.add_argument("--json", default=None, help="also write the figures here")
    ap.add_argument("--allow", action="append", default=[],
                    help="a reveal-policy entry NAME=RECIPIENTS, e.g. gwas.pca_eigenvalues=nodes")
    args = ap.parse_args(argv)
    policy = {}
    for entry in args.allow:
        name, _, to = entry.partition("=")
        policy[name] = [t for t in to.split(",") if t]
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_gwas_"))
    results = []
    try:
        for name in (["1k", "20k"] if args.workload == "all" else [args.workload]):
            wdir = work / name
            if name == "1k":
                sites = [SHARED_1K / f"site{i}" for i in (1, 2, 3)]
            else:
                simulate(out_dir=wdir / "sites", sites=3, samples=2000, snps=20000, seed=7)
                sites = [wdir / "sites" / f"site{i}" for i in (1, 2, 3)]
            results.append(bench(name, sites, wdir, curve=not args.plaintext_channels, policy=policy))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
