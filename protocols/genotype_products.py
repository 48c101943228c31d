"""Products of the pooled (kept samples x chosen SNPs) imputed-dosage matrix with secrets.

The matrix Z is stored per provider and per SNP block, each piece masked by
its provider (Z = d + a, d public to the nodes).  A product never opens Z:

- ``z_times(W)``  = Z[rows][:, cols] @ W  — per provider, sum over blocks;
- ``zt_times(Q)`` = Z[rows][:, cols]ᵀ @ Q — per block, sum over providers;

each is one batch of Beaver products (one round: only W, or the provider
slices of Q, are opened), with the dealer forming a_pb @ b for every piece
(mpc.beaver, masks with public row/column selections).  Sums of untruncated
products are truncated once.  Memory: one block of every provider at a time
on the dealer; the nodes hold the pieces they are given.
"""
from __future__ import annotations

import numpy as np

from mpc import beaver
from mpc.params import Params
from mpc.shared import SharedArray, concatenate
from mpc.truncate import truncate_many


class GenotypeMatrix:
    """Z restricted to public row (per provider) and column (per SNP) selections.

    Parameters
    ----------
    cohort : protocols.cohort.Cohort
    sample_keep : list of bool arrays, one per provider
    snp_mask : bool array (n_snps,)
    matrix : str
        Which stored matrix: "imputed" (fixed point, the default), "missing"
        or "het" (0/1 integers).
    """

    def __init__(self, ctx, cohort, sample_keep, snp_mask, matrix: str = "imputed"):
        self.ctx = ctx
        self.cohort = cohort
        self.matrix = matrix
        self.rows = [np.asarray(k, dtype=bool) for k in sample_keep]
        self.snp_mask = np.asarray(snp_mask, dtype=bool)
        self.row_counts = [int(r.sum()) for r in self.rows]
        self.n_rows = sum(self.row_counts)
        self.block_cols = [self.snp_mask[j0:j1] for j0, j1 in cohort.blocks]
        self.n_cols = int(self.snp_mask.sum())
        self.frac = ctx.params.f if matrix == "imputed" else 0

    def _pieces(self, b):
        blocks = self.cohort.genotype_block(b, (self.matrix,))[self.matrix]
        return [z.select(r, self.block_cols[b]) for z, r in zip(blocks, self.rows)]

    def _used_blocks(self):
        return [b for b, c in enumerate(self.block_cols) if c.any()]

    def z_times(self, W: SharedArray, frac: int, fmt: Params) -> SharedArray:
        """Z @ W for W of shape (n_cols, l); result (n_rows, l) at `frac` bits."""
        items, owners = [], []
        start = 0
        for b in self._used_blocks():
            width = int(self.block_cols[b].sum())
            rows = np.zeros(W.shape[0], dtype=bool)
            rows[start:start + width] = True
            Wb = W.select(rows)                 # a selection keeps W's mask (if it has one)
            start += width
            for p, piece in enumerate(self._pieces(b)):
                if piece.shape[0]:
                    items.append(("matmul", piece, Wb))
                    owners.append(p)
        raw = beaver.products(self.ctx, items)
        sums = [None] * len(self.rows)
        for p, z in zip(owners, raw):
            sums[p] = z if sums[p] is None else sums[p] + z
        parts = [s for s in sums if s is not None]
        return concatenate(self._to_frac(parts, frac, fmt))

    def zt_times(self, Q: SharedArray, frac: int, fmt: Params) -> SharedArray:
        """Zᵀ @ Q for Q of shape (n_rows, l); result (n_cols, l) at `frac` bits."""
        offsets = np.cumsum([0] + self.row_counts)
        slices = []
        for p in range(len(self.rows)):
            rows = np.zeros(Q.shape[0], dtype=bool)
            rows[offsets[p]:offsets[p + 1]] = True
            slices.append(Q.select(rows))       # keeps Q's mask: nothing to open when Q is masked
        items, owners = [], []
        for b in self._used_blocks():
            for p, piece in enumerate(self._pieces(b)):
                if piece.shape[0]:
                    items.append(("matmul", piece.T, slices[p]))
                    owners.append(b)
        raw = beaver.products(self.ctx, items)
        sums = {}
        for b, z in zip(owners, raw):
            sums[b] = z if b not in sums else sums[b] + z
        parts = [sums[b] for b in self._used_blocks()]
        return concatenate(self._to_frac(parts, frac, fmt))

    def _to_frac(self, parts, frac, fmt):
        """Sums of untruncated products, brought to `frac` bits (one truncation round,
        or none when an integer matrix times W already has the right scale)."""
        m = parts[0].frac - frac
        if m <= 0:
            return [p.rescale_exact(frac) for p in parts]
        return truncate_many(self.ctx, parts, m, fmt.k - fmt.f + frac + m)

    def column_sums(self, names=("imputed", "missing")) -> dict:
        """Per-provider column sums over the selected rows and columns (local).

        Returns {name: [SharedArray (n_cols,) per provider]}."""
        out = {n: [[] for _ in self.rows] for n in names}
        for b in self._used_blocks():
            blocks = self.cohort.genotype_block(b, names)
            for n in names:
                for p, (x, r) in enumerate(zip(blocks[n], self.rows)):
                    out[n][p].append(x.select(r, self.block_cols[b]).sum(axis=0))
        return {n: [concatenate(parts) for parts in per_p] for n, per_p in out.items()}

    def provider_means(self) -> list:
        """Each provider's per-SNP imputation value over the selected columns."""
        parts = [[] for _ in self.rows]
        for b in self._used_blocks():
            means = self.cohort.genotype_block(b, ("mean",))["mean"]
            for p, mu in enumerate(means):
                parts[p].append(mu[self.block_cols[b]])
        return [concatenate(x) for x in parts]
