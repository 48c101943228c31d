"""Covariate-adjusted Cochran–Armitage trend test for every kept SNP.

Definitions: docs/ALGORITHMS.md "Association" (protocols.reference.trend_test
with site-mean imputation).  Protocol:

1. **Adjustment basis**: C = [1/sqrt(N1), PCs, covariates] where each
   covariate is centred and scaled to unit norm in MPC (mean, variance,
   inverse square root); V = orth(C) (Newton–Schulz), so P = I - V Vᵀ.
   A covariate that is constant over the kept samples is reported (one bit
   per covariate, policy ``gwas.covariate_check``) and stops the analysis
   with a clear error.
2. **Phenotype**: ỹ = y - V (Vᵀ y), s_yy = ỹᵀ ỹ.
3. **One pass over the genotypes** (one round): Zᵀ [V, ỹ] gives, per SNP,
   a_j = Vᵀ x_j and s_xy = x_jᵀ ỹ.
4. **Per-SNP sums** (local plus one batch): x_jᵀ x_j = Σ d² + Σ_p μ_jp² miss_jp
   (exact counts from QC: Σ d² = 2 alt - c1), s_xx = x_jᵀ x_j - |a_j|².
5. **Correlation**: r_j = s_xy / sqrt(s_xx s_yy), with every quantity divided
   by N1 first so the inverse square roots work near 1.
6. r is output to the analyst only (policy ``gwas.r``); CHISQ = N1 r², P and
   the genomic-control λ are computed by the analyst in plaintext.

Checkpoints (a job resumed after a crash, parties.checkpoint): the basis V,
ỹ and s_yy after step 2 (``association``), then steps 3-5 run over chunks of
whole SNP blocks of about ``chunk_snps`` tested SNPs each, and every chunk's
r is kept (``association.<c>``).  A chunk costs the rounds of steps 3-5
(about 30), so a cohort of fewer than ``chunk_snps`` tested SNPs runs as one
chunk, exactly as without checkpoints.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mpc import beaver, compare, nonlinear
from mpc.errors import InputError
from mpc.linalg import broadcast, orth, to_frac, wide
from mpc.params import Params
from mpc.reveal import output, reveal
from mpc.shared import SharedArray, concatenate
from protocols.common import scale_public
from protocols.genotype_products import GenotypeMatrix
from protocols.reference import NS_BAND_LOW, NS_FINISH_STEPS, ns_fast_steps, ns_finish_steps

POLICY = {"gwas.r": ("analyst",), "gwas.covariate_check": ("nodes", "analyst")}
CHUNK_SNPS = 65536
"""Tested SNPs per association chunk (each chunk is checkpointed when it is done)."""


@dataclass
class TrendResult:
    snp_mask: np.ndarray     # public: SNPs with a statistic (kept and polymorphic)
    n_samples: int


CENTRED_LIMIT = 8192.0     # |x - mean| must stay below this: its square must fit the format


def standardise(ctx, x: SharedArray, names=()) -> SharedArray:
    """Centre and scale each column of x (N1,) or (N1, c) to mean 0, variance 1.

    Two checks, revealed as one bit per column under the policy entry
    ``gwas.covariate_check`` and raising InputError: a column that is (nearly)
    constant over the kept samples, and a column with a value more than 8192
    from its mean (its square would not fit the fixed-point format: rescale
    such a covariate, e.g. income in thousands)."""
    vector = x.ndim == 1
    X = x.reshape(-1, 1) if vector else x
    n1 = X.shape[0]
    mean = scale_public(ctx, [X.sum(axis=0)], [1.0 / n1])[0]
    centred = X - broadcast(mean.reshape(1, -1), X.shape)
    low, high = compare.less_than_public(centred, [-CENTRED_LIMIT, CENTRED_LIMIT])
    outside = (low + (1 - high)).sum(axis=0)                        # per column: values out of range
    wide = 1 - compare.eqz(outside)
    flags = reveal(ctx, wide, "gwas.covariate_check").astype(bool)
    what = "the phenotype" if vector else "covariate(s) " + ", ".join(
        [str(n) for n, b in zip(names, flags) if b] or [str(i) for i in np.flatnonzero(flags)])
    if flags.any():
        raise InputError(f"{what} has values more than {CENTRED_LIMIT:g} from the mean over the kept "
                         f"samples; rescale it (e.g. thousands instead of units)")
    var = scale_public(ctx, [beaver.fsquare(centred).sum(axis=0)], [1.0 / n1])[0]
    flags = reveal(ctx, compare.less_than_public(var, 1e-6), "gwas.covariate_check").astype(bool)
    if flags.any():
        bad = [str(n) for n, b in zip(names, flags) if b] or [str(i) for i in np.flatnonzero(flags)]
        what = "the phenotype is" if vector else f"covariate(s) {', '.join(bad)} are"
        raise InputError(f"{what} constant over the kept samples; nothing to adjust or test")
    inv_sd = nonlinear.inv_sqrt(var)
    z = beaver.fmul(centred, broadcast(inv_sd.reshape(1, -1), X.shape))
    return z.reshape(-1) if vector else z


def adjustment_basis(ctx, pcs, covariates, n1: int, names=()):
    """Step 1: V, an orthonormal basis of [1, PCs, standardised covariates] (N1, K)."""
    fmt = wide(ctx.params)
    f = fmt.f
    cols = [SharedArray.public(ctx, np.full((n1, 1), 1.0 / math.sqrt(n1)), f)]
    if pcs is not None:
        cols.append(to_frac(pcs, f))
    if covariates is not None and covariates.shape[1]:
        z = standardise(ctx, covariates, names)
        cols.append(scale_public(ctx, [z], [1.0 / math.sqrt(n1)], frac=f, bound_bits=fmt.k)[0])
    C = concatenate(cols, axis=1)
    # Every column has unit norm, so the Gram eigenvalues lie below K = trace: a public bound.
    K = float(C.shape[1])
    if covariates is not None and covariates.shape[1]:
        # The check's ridge basis C (CᵀC + 4^e ridge)^(-1/2), from fast steps only,
        # has Gram eigenvalues in the band times lambda / (lambda + 4^e ridge) once
        # the check passes: polish_steps(K) standard steps from there make it exact.
        Q = _check_collinear(ctx, C, K, names)
        return orth(ctx, Q, polish_steps(K), bound=1.0)
    return orth(ctx, C, NS_FINISH_STEPS, bound=K, fast=BASIS_FAST_STEPS)


RIDGE = 2.0 ** -22
BASIS_FAST_STEPS = ns_fast_steps(RIDGE, 1)
"""Fast Newton–Schulz steps of the basis orthonormalisation: every Gram
eigenvalue above the ridge (~2.4e-7 of the bound, what 24 standard steps
covered) reaches the band [NS_BAND_LOW, 1.185], with one step to spare (13;
the basis without covariates adds NS_FINISH_STEPS standard ones: 18 steps
instead of 24)."""


def polish_steps(K: float) -> int:
    """Standard steps that finish the ridge basis of K unit columns: its Gram
    eigenvalues lie in [NS_BAND_LOW phi, 1.185] with phi = lambda / (lambda +
    4^e ridge) >= 1e-4 / (1e-4 + 4^e ridge) (the check refuses smaller lambda);
    5 for K <= 64 (phi >= 0.87), plus one to spare."""
    scale = 4.0 ** math.ceil(math.log(K, 4) - 1e-12)
    phi = 1e-4 / (1e-4 + scale * RIDGE)
    return ns_finish_steps(NS_BAND_LOW * phi) + 1


COLLINEAR_TRACE = 1.0e4     # trace((CᵀC)^-1) above this: a direction with eigenvalue below ~1e-4


def _check_collinear(ctx, C, K, names):
    """Refuse (near-)collinear covariates before the exact orthonormalisation.

    Newton-Schulz on an exactly rank-deficient Gram matrix grows the null
    direction as 1.5^iterations, past the format; so first a ridge-regularised
    run (null directions stay below 2^11), then one revealed bit (policy
    ``gwas.covariate_check``): trace(W^2) ~ trace((CᵀC + 4^e ridge)^-1) above
    1e4 means an eigenvalue of CᵀC (unit columns) below about 1e-4, i.e.
    covariates (with the intercept and PCs) that are collinear (a correlation
    beyond 0.99995).  The run takes fast steps only (the span is what the
    polish needs), so W^2 is that inverse times a factor in [0.787, 1.185] per
    direction: the threshold holds within about 20 %, and a collinear design
    (trace ~ 1 / (4^e ridge) > 2.6e5) is far beyond it.  Returns the ridge
    basis C W."""
    Q, W = orth(ctx, C, 0, bound=K, ridge=RIDGE, with_root=True, fast=BASIS_FAST_STEPS)
    W28 = to_frac(W, ctx.params.f)
    trace = beaver.fsquare(W28).sum()
    flag = reveal(ctx, compare.greater_than_public(trace, COLLINEAR_TRACE), "gwas.covariate_check")
    if int(np.asarray(flag).reshape(-1)[0]):
        raise InputError(f"the covariates {', '.join(map(str, names))} are collinear with each other, the "
                         f"intercept or the PCs (e.g. every level of a categorical variable); drop one")
    return Q


def snp_chunks(cohort, snp_mask, chunk_snps: int = CHUNK_SNPS) -> list:
    """Public masks of consecutive groups of whole SNP blocks, each with at least
    `chunk_snps` of the SNPs in `snp_mask` (the last one: the rest); empty groups
    are left out."""
    snp_mask = np.asarray(snp_mask, dtype=bool)
    out, current = [], np.zeros_like(snp_mask)
    for j0, j1 in cohort.blocks:
        current[j0:j1] = snp_mask[j0:j1]
        if current.sum() >= max(1, chunk_snps):
            out.append(current)
            current = np.zeros_like(snp_mask)
    if current.any():
        out.append(current)
    return out or [snp_mask]


def _chunk_r(ctx, cohort, qc, mask, V, y_res, syy, n1: int) -> SharedArray:
    """Steps 3-5 for the SNPs of one chunk: r over the chunk's tested SNPs."""
    K = V.shape[1]
    # Step 3: one pass, Zᵀ [V, ỹ], at the study's 28 fractional bits (values up to ~2 N1).
    big = Params(k=49, f=ctx.params.f, sigma=ctx.params.sigma)
    Z = GenotypeMatrix(ctx, cohort, qc.sample_keep, mask)
    ztu = Z.zt_times(concatenate([V, y_res], axis=1), ctx.params.f, big)      # (M_c, K + 1)
    a, sxy = ztu[:, :K], ztu[:, K]
    # Step 4: x_jᵀ x_j from exact counts and the providers' imputation values.
    idx = np.flatnonzero(mask)
    alt, c1 = qc.alt[idx], qc.c1[idx]
    miss_p = Z.column_sums(("missing",))["missing"]
    means = Z.provider_means()
    mu2 = beaver.fixed_products(ctx, [("square", mu, None) for mu in means])
    fill = beaver.products(ctx, [("mul", m2, mp) for m2, mp in zip(mu2, miss_p)])  # exact: miss integer
    xx = (alt * 2 - c1).rescale_exact(ctx.params.f)
    for t in fill:
        xx = xx + t
    a2 = beaver.fsquare(a).sum(axis=1)
    # Step 5: everything over N1, then r = sxy / sqrt(sxx syy).
    sxx_n, sxy_n, syy_n = scale_public(ctx, [xx - a2, sxy, syy], [1.0 / n1] * 3)
    inv = nonlinear.inv_sqrt(concatenate([sxx_n, syy_n.reshape(1)]))
    inv_x, inv_y = inv[:-1], inv[-1:]
    return beaver.fmul(beaver.fmul(sxy_n, inv_x), broadcast(inv_y, sxy_n.shape))


def trend_test(ctx, cohort, qc, y: SharedArray, pcs=None, covariates=None, covariate_names=(),
               chunk_snps: int = CHUNK_SNPS) -> TrendResult:
    """Steps 1-6 over the kept samples; y and covariates have N1 rows (kept samples)."""
    n1 = qc.n_kept
    fmt = wide(ctx.params)
    f = fmt.f
    snp_mask = qc.pca_ok                      # kept and polymorphic: a defined statistic
    with ctx.phase("association"):
        # What the caller revealed or output before this phase, it does again on a resumed
        # run: close it off here, so that the checkpoints below hold only this phase's own.
        ctx.save("association.begin", {})
        saved = ctx.resume("association")
        if saved is None:
            V = adjustment_basis(ctx, pcs, covariates, n1, covariate_names)
            # Step 2: residual phenotype.
            y = to_frac(y, f)
            vty = beaver.fixed_products(ctx, [("matmul", V.T, y.reshape(-1, 1))], fmt=fmt)[0]
            fitted = beaver.fixed_products(ctx, [("matmul", V, vty)], fmt=fmt)[0]
            y_res = y.reshape(-1, 1) - fitted                                       # (N1, 1)
            syy = beaver.fsquare(y_res.reshape(-1), frac=ctx.params.f, fmt=fmt).sum()
            ctx.save("association", {"V": V, "y_res": y_res, "syy": syy})
        else:
            V, y_res, syy = saved["V"], saved["y_res"], saved["syy"]
        # Steps 3-5, chunk by chunk.
        chunks = snp_chunks(cohort, snp_mask, chunk_snps)
        parts = []
        for c, mask in enumerate(chunks):
            saved = ctx.resume(f"association.{c}")
            if saved is None:
                r_c = _chunk_r(ctx, cohort, qc, mask, V, y_res, syy, n1)
                ctx.save(f"association.{c}", {"r": r_c})
            else:
                r_c = saved["r"]
            parts.append(r_c)
            ctx.progress("association", c + 1, len(chunks))
        r = parts[0] if len(parts) == 1 else concatenate(parts)
        output(ctx, r, "gwas.r")
    return TrendResult(snp_mask=snp_mask, n_samples=n1)
