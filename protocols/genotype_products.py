"""Products of the pooled (kept samples x chosen SNPs) imputed-dosage matrix with secrets.

The matrix Z is stored per provider and per SNP block, each piece masked by
its provider (Z = d + a, d public to the nodes).  A product never opens Z:

- ``z_times(W)``  = Z[rows][:, cols] @ W  — per provider, a sum over blocks;
- ``zt_times(Q)`` = Z[rows][:, cols]ᵀ @ Q — per block, a sum over providers;

each sum is one dealer correction (mpc.beaver.start_matmul_sum: the dealer
streams a_pb @ b over the pieces, masks with public row/column selections) and
at most one round (opening W or Q, none when it is already masked, e.g. a
truncation's output).  Sums of untruncated products are truncated once.
Memory: the nodes and the dealer read one block of one provider at a time, so
a pass needs no more memory for 10^5 SNPs than for 10^4.
"""
from __future__ import annotations

import numpy as np

from mpc import beaver
from mpc.params import Params
from mpc.shared import SharedArray, concatenate
from mpc.truncate import plan_truncation, truncate_many


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

    def _used_blocks(self):
        return [b for b, c in enumerate(self.block_cols) if c.any()]

    def z_times(self, W: SharedArray, frac, fmt: Params, plan=None) -> SharedArray:
        """Z @ W for W of shape (n_cols, l); result (n_rows, l) at `frac` bits
        (frac None: untruncated, at W.frac + self.frac).

        Per provider, one dealer correction for the sum over SNP blocks
        (beaver.start_matmul_sum); W is masked once for all (no opening when it
        comes masked).  The nodes read one block of one provider at a time.
        `plan` (plan_z_times) holds the requests made before W existed."""
        ctx = self.ctx
        if plan is None:
            spec = W.mask.spec if W.mask is not None else beaver.fresh_mask_spec(ctx, W)
            plan = self.plan_z_times(spec, W.shape[1], W.frac, frac, fmt)
            beaver.mask_many(ctx, [W], specs=[spec])
            ctx.tuples.flush()                   # the dealer starts while the nodes read blocks
        tups, plans = plan
        selections = self._w_selections()
        pending = [beaver.MatmulSum(ctx, [(self._piece(b, p), W.select(rows)) for b, rows in selections], tup)
                   for p, tup in zip(self._providers(), tups)]
        parts = beaver.finish_all(ctx, pending)
        return concatenate(parts if frac is None else self._to_frac(parts, frac, plans))

    def plan_z_times(self, spec_w, l: int, w_frac: int, frac, fmt: Params):
        """The dealer requests of z_times for a W (n_cols, l) at w_frac bits that will
        carry the mask spec_w: each provider's correction and the truncations
        (none with frac None: z_times then returns the untruncated sum)."""
        plans = None if frac is None else self._plan_to_frac([(self.row_counts[p], l) for p in self._providers()],
                                                               w_frac, frac, fmt)
        tups = [beaver.request_matmul_sum(self.ctx, [(self._piece(b, p).mask.spec, spec_w.select(rows))
                                                     for b, rows in self._w_selections()],
                                          (self.row_counts[p], l))
                for p in self._providers()]
        return tups, plans

    def _providers(self):
        return [p for p in range(len(self.rows)) if self.row_counts[p]]

    def _w_selections(self):
        """(block, rows of W it multiplies) for every used block."""
        out, start = [], 0
        for b in self._used_blocks():
            width = int(self.block_cols[b].sum())
            rows = np.zeros(self.n_cols, dtype=bool)
            rows[start:start + width] = True
            out.append((b, rows))
            start += width
        return out

    def zt_times(self, Q: SharedArray, frac: int, fmt: Params) -> SharedArray:
        """Zᵀ @ Q for Q of shape (n_rows, l); result (n_cols, l) at `frac` bits.

        Per SNP block, one dealer correction for the sum over providers; every
        request goes out first, then the nodes stream the blocks."""
        plans = self._plan_to_frac([(int(self.block_cols[b].sum()), Q.shape[1]) for b in self._used_blocks()],
                                   Q.frac, frac, fmt)
        return concatenate(self._to_frac(beaver.finish_all(self.ctx, self.start_zt_times(Q)), frac, plans))

    def start_zt_times(self, Q: SharedArray, tups=None) -> list:
        """Zᵀ @ Q (untruncated, frac Q.frac + self.frac) as per-block MatmulSums
        (concatenate their finish_all() in order); `tups` from plan_zt_times
        when the requests were made before Q existed."""
        if tups is None:
            beaver.mask_many(self.ctx, [Q])
            tups = self.plan_zt_times(Q.mask.spec, Q.shape[1])
            self.ctx.tuples.flush()              # the dealer starts while the nodes read blocks
        slices = [Q.select(rows) for rows in self._q_selections()]    # keep Q's mask: nothing to open
        return [beaver.MatmulSum(self.ctx, [(self._piece(b, p).T, slices[i])
                                            for i, p in enumerate(self._providers())], tup)
                for b, tup in zip(self._used_blocks(), tups)]

    def plan_zt_times(self, spec_q, l: int) -> list:
        """The dealer requests of start_zt_times for a Q (n_rows, l) that will
        carry the mask spec_q: one correction per SNP block."""
        sel = [spec_q.select(rows) for rows in self._q_selections()]
        return [beaver.request_matmul_sum(self.ctx, [(self._piece(b, p).mask.spec.T(), sel[i])
                                                     for i, p in enumerate(self._providers())],
                                          (int(self.block_cols[b].sum()), l))
                for b in self._used_blocks()]

    def _q_selections(self):
        """Rows of Q (n_rows) that belong to each provider with kept rows."""
        offsets = np.cumsum([0] + self.row_counts)
        out = []
        for p in self._providers():
            rows = np.zeros(self.n_rows, dtype=bool)
            rows[offsets[p]:offsets[p + 1]] = True
            out.append(rows)
        return out

    def _piece(self, b, p) -> SharedArray:
        """Provider p's part of block b, rows and columns selected (read lazily)."""
        return self.cohort.genotype_block(b, (self.matrix,))[self.matrix][p].select(
            self.rows[p], self.block_cols[b])

    def _plan_to_frac(self, shapes, w_frac, frac, fmt):
        """The truncations that bring a pass's sums (of these shapes) to `frac`
        bits, requested with the pass (None when the scale is already right)."""
        m = self.frac + w_frac - frac
        if m <= 0:
            return None
        return [plan_truncation(self.ctx, shape, m, fmt.k - fmt.f + frac + m) for shape in shapes]

    def _to_frac(self, parts, frac, plans):
        """Sums of untruncated products, brought to `frac` bits (one truncation round,
        or none when an integer matrix times W already has the right scale)."""
        if plans is None:
            return [p.rescale_exact(frac) for p in parts]
        return truncate_many(self.ctx, parts, [0] * len(parts), plans=plans)

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
