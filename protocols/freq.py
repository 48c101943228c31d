"""Allele frequency and missingness per SNP, pooled over all providers.

Protocol (no communication until the output):

1. For each SNP block and provider, each node sums its shares of the dosage
   and missing columns (local: the sum of shares is a share of the sum).
2. The per-provider sums are added: exact integer counts per SNP,
   ``alt_j = Σ_i d_ij`` and ``miss_j = Σ_i m_ij``.
3. Both count vectors are output to the analyst (policy entry ``freq.counts``);
   nodes learn nothing.  The analyst forms ALT_FREQS = alt / (2 (N - miss)),
   MISSING_RATE = miss / N and OBS_CT = 2 (N - miss) in plaintext.
"""
from __future__ import annotations

from mpc.reveal import output
from mpc.shared import concatenate

POLICY = {"freq.counts": ("analyst",)}


def allele_counts(ctx, cohort) -> None:
    """Output per-SNP ALT allele counts and missing-call counts to the analyst.

    Parameters
    ----------
    ctx : PartyContext
    cohort : protocols.cohort.Cohort
    """
    alt_blocks, miss_blocks = [], []
    with ctx.phase("freq"):
        for b in range(len(cohort.blocks)):
            blocks = cohort.genotype_block(b, ("dosage", "missing"))
            alt = miss = None
            for dosage, missing in zip(blocks["dosage"], blocks["missing"]):
                alt = dosage.sum(axis=0) if alt is None else alt + dosage.sum(axis=0)
                miss = missing.sum(axis=0) if miss is None else miss + missing.sum(axis=0)
            alt_blocks.append(alt)
            miss_blocks.append(miss)
            ctx.progress("freq", b + 1, len(cohort.blocks))
        output(ctx, concatenate(alt_blocks), "freq.counts", key="alt")
        output(ctx, concatenate(miss_blocks), "freq.counts", key="missing")
