"""Allele frequency and missingness per SNP, pooled over all providers.

Protocol (one round in all):

1. For each SNP block and provider, each node sums its shares of the imputed
   dosage and missing columns (local: a sum of shares is a share of the sum):
   ``S_jp = Σ_i imputed_ij = 2^f alt_jp + mean_jp miss_jp`` and ``miss_jp``.
2. One batch of Beaver products gives ``mean_jp miss_jp`` for every SNP and
   provider; ``alt_jp = (S_jp - mean_jp miss_jp) 2^-f`` is exact (the field
   inverse of 2^f divides an exact multiple).
3. The pooled counts ``alt_j = Σ_p alt_jp`` and ``miss_j = Σ_p miss_jp`` are
   output to the analyst (policy entry ``freq.counts``); nodes learn nothing.
   The analyst forms ALT_FREQS = alt / (2 (N - miss)), MISSING_RATE = miss / N
   and OBS_CT = 2 (N - miss) in plaintext.
"""
from __future__ import annotations

import numpy as np

from mpc import beaver
from mpc.reveal import output
from mpc.shared import concatenate

POLICY = {"freq.counts": ("analyst",)}


def pooled_counts(ctx, cohort, sample_keep=None, het: bool = False):
    """Exact per-SNP ALT and missing counts (and heterozygote counts) over
    (kept) samples, pooled over providers.

    Parameters
    ----------
    sample_keep : list of bool arrays (one per provider), optional
        Public row selection; all samples when omitted.
    het : bool
        Also return c1, the number of heterozygous calls per SNP.

    Returns
    -------
    alt, miss (, c1) : SharedArray (n_snps,), integers (frac 0)
    """
    matrices = ("imputed", "missing", "mean") + (("het",) if het else ())
    sums, pairs = [], []
    for b in range(len(cohort.blocks)):
        blocks = cohort.genotype_block(b, matrices)
        for p in range(len(cohort.providers)):
            imp, miss = blocks["imputed"][p], blocks["missing"][p]
            h = blocks["het"][p] if het else None
            if sample_keep is not None:
                rows = np.asarray(sample_keep[p], dtype=bool)
                imp, miss = imp[rows], miss[rows]
                h = h[rows] if het else None
            m = miss.sum(axis=0)
            sums.append((imp.sum(axis=0), m, h.sum(axis=0) if het else None))
            pairs.append((blocks["mean"][p], m))
        ctx.progress("counts", b + 1, len(cohort.blocks))
    corrections = beaver.mul_many(ctx, pairs)          # mean_jp * miss_jp, frac f (exact)
    alt_blocks, miss_blocks, het_blocks = [], [], []
    n_prov = len(cohort.providers)
    for b in range(len(cohort.blocks)):
        alt = miss = c1 = None
        for p in range(n_prov):
            s, m, h = sums[b * n_prov + p]
            a = (s - corrections[b * n_prov + p]).rescale_exact(0)  # 2^f alt_jp is a multiple of 2^f
            alt = a if alt is None else alt + a
            miss = m if miss is None else miss + m
            if het:
                c1 = h if c1 is None else c1 + h
        alt_blocks.append(alt)
        miss_blocks.append(miss)
        het_blocks.append(c1)
    out = (concatenate(alt_blocks), concatenate(miss_blocks))
    return out + (concatenate(het_blocks),) if het else out


def allele_counts(ctx, cohort) -> None:
    """Output per-SNP ALT allele counts and missing-call counts to the analyst."""
    with ctx.phase("freq"):
        alt, miss = pooled_counts(ctx, cohort)
        output(ctx, alt, "freq.counts", key="alt")
        output(ctx, miss, "freq.counts", key="missing")
