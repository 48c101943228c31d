"""The analyses a study can run: node-side protocol call and analyst-side report.

Each Analysis names the protocol function the nodes run on the pooled cohort
(``node``), the reveal-policy entries it needs (``policy``, written into new
studies), its command-line options, and the analyst-side ``finalize`` that
turns reconstructed outputs into result files and a summary dict.

``node(ctx, cohort, options)`` returns a dict of public information (values
every node knows: sample counts, the SNP list, revealed QC masks) that node 0
sends to the analyst with the results.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from protocols import freq as freq_protocol


@dataclass(frozen=True)
class Analysis:
    name: str
    help: str
    node: object
    finalize: object
    policy: dict
    options: tuple = ()   # (flag, argparse kwargs) pairs


# ------------------------------------------------------------ freq

def _freq_node(ctx, cohort, options):
    cohort.require("genotypes", "freq")
    freq_protocol.allele_counts(ctx, cohort)
    return {"n_samples": cohort.n_samples, "sample_counts": dict(zip(cohort.providers, cohort.sample_counts)),
            "snps": cohort.snps_text()}


def _freq_finalize(result, options, out_dir):
    from parties.cohort import SnpInfo

    snps = SnpInfo(result.public["snps"])
    n = int(result.public["n_samples"])
    alt = result.outputs[("freq.counts", "alt")].astype(np.int64)
    miss = result.outputs[("freq.counts", "missing")].astype(np.int64)
    obs = 2 * (n - miss)
    with np.errstate(invalid="ignore", divide="ignore"):
        alt_freq = np.where(obs > 0, alt / np.maximum(obs, 1), np.nan)
    missing_rate = miss / n
    path = out_dir / "freq.tsv"
    with open(path, "w") as fh:
        fh.write("#CHROM\tPOS\tID\tREF\tALT\tALT_FREQS\tMISSING_RATE\tOBS_CT\n")
        for row in zip(snps.chrom, snps.pos, snps.id, snps.ref, snps.alt, alt_freq, missing_rate, obs):
            fh.write("\t".join(str(v) for v in row[:5]) + f"\t{row[5]:.6g}\t{row[6]:.6g}\t{row[7]}\n")
    maf = np.minimum(alt_freq, 1 - alt_freq)
    return {
        "n_samples": n,
        "sample_counts": result.public["sample_counts"],
        "n_snps": int(len(snps)),
        "mean_missing_rate": float(missing_rate.mean()) if len(snps) else None,
        "snps_maf_below_0.01": int(np.sum(maf < 0.01)),
        "files": ["freq.tsv"],
    }


ANALYSES = {
    "freq": Analysis("freq", "allele frequency and missingness per SNP (plink2 --freq --missing)",
                     _freq_node, _freq_finalize, freq_protocol.POLICY),
}


def default_policy() -> dict:
    """Every analysis' policy entries: what a new study allows."""
    out = {}
    for a in ANALYSES.values():
        for name, to in a.policy.items():
            out[name] = sorted(set(out.get(name, ())) | set(to))
    return out
