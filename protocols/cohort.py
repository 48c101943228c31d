"""What a protocol sees of the pooled cohort (the interface; parties/cohort.py implements it).

Individuals are the providers' rows concatenated in job order; SNPs are the
common SNP list, processed in blocks of columns so memory is bounded by a
block.  Genotype blocks come **per provider** because each provider masked
its own rows with its own mask: a product with the pooled genotype matrix is
a batch of per-provider products (stack the rows for G Y, sum for Gᵀ Y).
"""
from __future__ import annotations

from typing import Protocol


class Cohort(Protocol):
    """The pooled inputs of one job, as secret shares plus public metadata.

    Attributes
    ----------
    providers : list of str
        Provider names in job order.
    sample_counts : list of int
        Individuals per provider (public), same order.
    n_samples : int
        Total individuals N0.
    n_snps : int
        Total SNPs M0.
    snps : SnpTable-like
        Public SNP metadata: chrom, pos, id, ref, alt arrays of length M0.
    blocks : list of (j0, j1)
        SNP column blocks.
    """

    providers: list
    sample_counts: list
    n_samples: int
    n_snps: int
    snps: object
    blocks: list

    def genotype_block(self, b: int, matrices=("imputed", "missing", "het", "mean")) -> dict:
        """For block b: {name: [SharedArray per provider]}, each masked:

        - ``imputed`` (n_p, B), fixed point (frac f): the ALT dosage where observed and
          the provider's own mean dosage ``mean`` where missing (site-mean imputation,
          done by the provider before masking);
        - ``mean`` (B,), fixed point: that per-SNP imputed value of the provider;
        - ``missing`` (n_p, B) and ``het`` (n_p, B): 0/1 integers (frac 0).

        The dosage itself is ``imputed - mean * missing`` (exact)."""

    def phenotype(self, name: str):
        """(values SharedArray (N,), missing SharedArray (N,) 0/1, kind 'binary'|'quantitative').

        Binary values are 0/1 integers (frac 0); quantitative ones fixed point."""

    def covariates(self, names=None):
        """(matrix SharedArray (N, C) fixed point, any_missing SharedArray (N,) 0/1, names)."""

    def features(self, names=None):
        """(matrix SharedArray (N, F) fixed point, any_missing SharedArray (N,) 0/1, names)."""

    def survival(self):
        """Pooled count table: (counts SharedArray (S, G, T, 2) integers — at risk, events —,
        strata labels, group labels, grid times)."""

    def has(self, table: str) -> bool:
        """Whether every provider submitted `table` ("genotypes", "phenotypes", ...)."""
