"""Randomized PCA of the standardised genotypes, in MPC; the PCs stay secret-shared.

Definitions: docs/ALGORITHMS.md "PCA" (the same steps as protocols.reference.pca
with site-mean imputation).  Protocol:

1. **LD thinning** (public): among QC-kept polymorphic SNPs, keep a SNP on a
   new chromosome or at least ``ld_dist`` bp after the last kept one: M3 SNPs.
2. **Standardisation** (secret): f_j = alt_j / (2 n_j) from the exact QC counts
   and s̃_j = κ / sqrt(2 f_j (1 - f_j)) with the public κ = 1 / sqrt(N1 M3),
   both from one inverse square root of [m_j^2, 2 a_j (m_j - a_j)]
   (m = n / N1, a = alt / (2 N1): f = a / m, 1 / sqrt(2 f (1 - f)) =
   m / sqrt(2 a (m - a))).  X = (Z - 2f) s̃ is never formed: products use
   ``X W = Z (s̃ ∘ W) - 1 ((2f s̃)ᵀ W)`` (2 rounds: the scalings, one
   truncation after the pass) and ``Xᵀ Q = s̃ ∘ (Zᵀ Q - 2f (1ᵀ Q))`` (3
   rounds: 1ᵀ Q opened during the pass, two truncations), one pass of masked
   genotype products each.
3. **Subspace iteration**: Ω public standard normal / sqrt(M3) (seeded),
   Q = orth(X Ω); ``iters`` times Q = orth(X orth(Xᵀ Q)) (mpc.linalg.orth,
   Newton–Schulz with the public eigenvalue bound 1, since ||X||_F^2 ~ 1).
   Only the last orthonormalisation must be exact; the ones feeding another
   power step keep the span with fast steps only (mpc.linalg.FAST_A: small
   eigenvalues grow 4x per step; reference.ns_steps_start, ns_steps_carry: 8
   and 6 at N1 = M3 = 1000), 2 rounds each; the last adds
   reference.NS_FINISH_STEPS standard steps.
4. **Small eigenproblem**: Z = Xᵀ Q, S = Zᵀ Z (l x l, eigenvalues sigma_i^2 <= ~1).
   Two ways, chosen by the study's reveal policy:

   - nothing revealed (the default): U = I[:, :k]; ``eig_iters`` times
     U = orth(S U) with reference.ns_steps_eig fast steps (11 at N1 = 1000,
     17 at 100 000), the last finished exactly.  U spans S's top-k
     eigenspace, but its columns are a rotation of the eigenvectors: PCs = Q U
     is an orthonormal basis of the PC subspace (all the association needs),
     not the individual axes.
     When the policy lists ``gwas.pca_eigenvalues`` for the analyst only,
     B = Uᵀ S U (k x k, 2 rounds) goes to the analyst (``ritz``), who takes
     the eigenvalues from it and, with the PCs, rotates the basis into the
     Ritz vectors PC1..PCk (Rayleigh–Ritz in the top-k subspace); the nodes
     learn nothing.
   - the policy lists ``gwas.pca_eigenvalues`` for the nodes: the nodes learn
     S's l eigenvalues (N1 sigma_i^2 are PLINK's .eigenval of the genetic
     relationship matrix) through H = Rᵀ S R with a secret Haar-random
     rotation R from the dealer (mpc.linalg.eigh_rotated, 5 rounds instead of
     eig_iters x 2 x ns_steps_eig, 220 at N1 = 1000).  U holds the individual
     eigenvectors, so PCs = Q U are the Ritz vectors PC1..PCk in decreasing
     order of eigenvalue (signs arbitrary), and the eigenvalues can go on to
     the analyst (same entry).
   PCs = Q U (N1 x k), orthonormal.

Latency: every step's dealer requests are made one step ahead, from the mask
specs of values that do not exist yet (plan_t_times, plan_times,
mpc.linalg.plan_orth): a Newton–Schulz step costs 2 one-way latencies, the
whole PCA about 1.04 hops per round.

Nothing is revealed to the nodes unless the policy lists gwas.pca_eigenvalues for
them (step 4): the PCs feed the association test as shares.
Working format: mpc.linalg.wide (36 fractional bits with sigma = 40).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mpc import beaver, nonlinear
from mpc.linalg import broadcast, eigh_rotated, orth, plan_orth, request_rotation, to_frac, wide
from mpc.shared import SharedArray, concatenate
from mpc.truncate import plan_truncation, truncate, truncate_many
from protocols.common import scale_public
from protocols.genotype_products import GenotypeMatrix
from protocols.reference import NS_FINISH_STEPS, ld_thin, ns_steps_carry, ns_steps_eig, ns_steps_start

EIGENVALUES = "gwas.pca_eigenvalues"
"""The policy entry of the PCA eigenvalues (step 4): a new study lets the analyst
have them (computed in MPC, 2 rounds); listing the nodes too reveals the small
eigenproblem's spectrum to them (fewer rounds, ordered PCs for every use)."""
POLICY = {EIGENVALUES: ("analyst",)}   # PCs stay secret; a study may add "gwas.pcs" = ["analyst"]


@dataclass(frozen=True)
class PcaOptions:
    k: int = 10
    oversample: int = 10
    iters: int = 10
    eig_iters: int = 10
    finish_steps: int = NS_FINISH_STEPS
    ld_dist: int = 100000
    seed: int = 0


@dataclass
class PcaResult:
    pcs: SharedArray          # (N1, k), orthonormal columns, wide format
    snp_mask: np.ndarray      # public: the M3 SNPs used
    n_snps: int
    eigenvalues: np.ndarray | None = None   # known to the nodes when the policy lets them (step 4): PLINK's scale
    ritz: SharedArray | None = None         # B = Uᵀ S U for the analyst (step 4), when only the analyst may see them


def eigenvalues_revealed(ctx) -> bool:
    """Whether step 4 reveals S's spectrum to the nodes (the study's policy says)."""
    return ctx.policy.allows(EIGENVALUES, "nodes")


def pca_snps(cohort, qc, ld_dist: int) -> np.ndarray:
    """Step 1: the public SNP selection (QC-kept, polymorphic, LD-thinned)."""
    snps = cohort.snps
    return ld_thin(snps.chrom, snps.pos, qc.pca_ok, ld_dist)


class Standardised:
    """Products with X = (Z - 2f) s̃ over the PCA SNPs (step 2), for l columns."""

    def __init__(self, ctx, cohort, qc, snp_mask, l: int):
        self.ctx = ctx
        self.fmt = wide(ctx.params)
        self.Z = GenotypeMatrix(ctx, cohort, qc.sample_keep, snp_mask)
        n1, m3 = self.Z.n_rows, self.Z.n_cols
        idx = np.flatnonzero(snp_mask)
        alt, miss = qc.alt[idx], qc.miss[idx]
        # With n = N1 - miss, m = n / N1 and a = alt / (2 N1):  f = a / m and
        # 1 / sqrt(2 f (1 - f)) = m / sqrt(2 a (m - a)), so one inverse square root
        # of [m^2, 2 a (m - a)] (from exact integer products n^2, alt (2n - alt))
        # gives both: 1/m and the scale.
        n = n1 - miss
        nn, aa = beaver.products(ctx, [("square", n, None), ("mul", alt, 2 * n - alt)])
        m2, va, m, a = scale_public(ctx, [nn, aa, n, alt], [1.0 / n1 ** 2, 0.5 / n1 ** 2, 1.0 / n1, 0.5 / n1])
        inv = nonlinear.inv_sqrt(concatenate([m2, va]))
        freq, s = beaver.fixed_products(ctx, [("mul", a, inv[:m3]), ("mul", m, inv[m3:])])  # f; 1/sqrt(2f(1-f))
        kappa = 1.0 / math.sqrt(n1 * m3)
        f = self.fmt.f
        self.s = scale_public(ctx, [s], [kappa], frac=f, bound_bits=self.fmt.k)[0]
        two_f = to_frac(freq * 2, f)
        g = beaver.fixed_products(ctx, [("mul", two_f, self.s)], fmt=self.fmt)[0]   # 2 f s̃
        # The operands every power step uses, masked once (masked-operand reuse:
        # the passes' products then open only what is new).
        self.s_cols = broadcast(self.s.reshape(-1, 1), (m3, l))
        self.two_f = two_f.reshape(-1, 1)
        self.g = g.reshape(1, -1)
        beaver.mask_many(ctx, [self.s_cols, self.two_f, self.g])

    def plan_times(self, spec_w, shape, then=None) -> dict:
        """The dealer requests of times(W) — its scalings, the genotype pass
        with the scaled W, one truncation of Z (s̃ ∘ W) - 1 u — for a W that
        will carry the mask spec_w: pass the result to times().  ``then``
        (called with X W's mask spec and shape) makes the requests of what
        follows."""
        ctx, fmt, f = self.ctx, self.fmt, self.fmt.f
        shape, bits = tuple(shape), fmt.k + f
        plans = (plan_truncation(ctx, shape, f, bits), plan_truncation(ctx, (1, shape[1]), f, bits))
        out_shape = (self.Z.n_rows, shape[1])
        plan_out = plan_truncation(ctx, out_shape, f, bits)      # X W: Z (s̃ ∘ W) - 1 u, truncated once
        return {"s": beaver.request_product(ctx, "mul", self.s_cols.mask.spec, spec_w, shape),
                "u": beaver.request_product(ctx, "matmul", self.g.mask.spec, spec_w, (1, shape[1])),
                "plans": plans, "pass": self.Z.plan_z_times(plans[0].spec, shape[1], f, None, fmt),
                "out": plan_out, "then": None if then is None else then(plan_out.spec, out_shape),
                "ahead": then is not None}

    def times(self, W: SharedArray, plan=None):
        """X W for W (M3, l); `plan` from plan_times (else the requests go now;
        with plan_times' ``then``, returns (X W, its result))."""
        ctx, fmt, f = self.ctx, self.fmt, self.fmt.f
        l = W.shape[1]
        if plan is None:
            beaver.mask_many(ctx, [W])
            plan = self.plan_times(W.mask.spec, W.shape)
        sW, u = truncate_many(ctx, [beaver.combine(ctx, "mul", self.s_cols, W, plan["s"]),
                                    beaver.combine(ctx, "matmul", self.g, W, plan["u"])], [0, 0],
                              plans=list(plan["plans"]))
        zw = self.Z.z_times(sW, None, fmt, plan=plan["pass"])           # frac 2f, untruncated
        out = zw - broadcast(u.rescale_exact(2 * f), (zw.shape[0], l))
        out = truncate_many(ctx, [out], [0], plans=[plan["out"]])[0]      # comes masked: no opening for Q's G
        return (out, plan["then"]) if plan["ahead"] else out

    def times_public(self, omega: np.ndarray) -> SharedArray:
        """X Ω for a public Ω (M3, l): the scalings are local products with Ω."""
        fmt, f = self.fmt, self.fmt.f
        om = np.rint(omega * 2.0 ** f).astype(np.int64)
        sW = truncate(broadcast(self.s.reshape(-1, 1), omega.shape).mul_public(omega, f), f, fmt.k + f)
        gw = self.g.matmul_public(om)          # exact integer product: frac f + f
        u = truncate(SharedArray(self.ctx, gw.share, 2 * f), f, fmt.k + f)
        zw = self.Z.z_times(sW, f, fmt)
        return zw - broadcast(u, zw.shape)

    def plan_t_times(self, spec_q, l: int, ahead=None) -> dict:
        """The dealer requests of t_times for a Q (N1, l) that will carry the mask
        spec_q: the genotype pass, 1ᵀ Q's product, both truncations; ``ahead``
        (called with the result's mask spec and shape) makes the requests of
        what follows."""
        ctx, fmt, f = self.ctx, self.fmt, self.fmt.f
        shape, bits = (self.Z.n_cols, l), fmt.k + f
        plan = {"spec_cs": beaver.new_mask_spec(ctx, (1, l))}
        plan["cs"] = beaver.request_product(ctx, "matmul", self.two_f.mask.spec, plan["spec_cs"], shape)
        plan["c"] = plan_truncation(ctx, shape, f, bits)
        plan["x"] = beaver.request_product(ctx, "mul", self.s_cols.mask.spec, plan["c"].spec, shape)
        plan["plan_x"] = plan_truncation(ctx, shape, f, bits)
        plan["then"] = None if ahead is None else ahead(plan["plan_x"].spec, shape)
        plan["ahead"] = ahead is not None
        plan["pass"] = self.Z.plan_zt_times(spec_q, l)
        return plan

    def t_times(self, Q: SharedArray, plan=None):
        """Xᵀ Q = s̃ ∘ (Zᵀ Q - 2f (1ᵀ Q)) for Q (N1, l): 3 rounds — opening 1ᵀ Q
        (during the pass), one truncation of the centred sum, one of its
        product with s̃ — every dealer request made first (here, or before Q
        existed: `plan` from plan_times; with its ``ahead``, returns (Xᵀ Q,
        its result))."""
        ctx = self.ctx
        if plan is None:
            beaver.mask_many(ctx, [Q])
            plan = self.plan_t_times(Q.mask.spec, Q.shape[1])
        passes = self.Z.start_zt_times(Q, plan["pass"])
        colsum = Q.sum(axis=0).reshape(1, -1)
        beaver.mask_many(ctx, [colsum], specs=[plan["spec_cs"]])
        ztq = concatenate(beaver.finish_all(ctx, passes))                 # frac 2f, untruncated
        centred = ztq - beaver.combine(ctx, "matmul", self.two_f, colsum, plan["cs"])
        centred = truncate_many(ctx, [centred], [0], plans=[plan["c"]])[0]
        out = truncate_many(ctx, [beaver.combine(ctx, "mul", self.s_cols, centred, plan["x"])], [0],
                            plans=[plan["plan_x"]])[0]
        return (out, plan["then"]) if plan["ahead"] else out


def _top_eigenspace(ctx, S: SharedArray, k: int, iters: int, fast: int, finish: int, fmt):
    """Step 4's subspace iteration U = orth(S U) from U = I[:, :k], pipelined:
    S I[:, :k] is a selection of S's columns (keeps its mask), and each
    orthonormalisation requests, during its last step, the next S U and the
    next orthonormalisation (plan_orth), so no step waits for the dealer."""
    l, f = S.shape[0], fmt.f
    if iters == 0:
        return SharedArray.public(ctx, np.eye(l)[:, :k], f)

    def plan_for(t, spec):
        """Iteration t's orthonormalisation, of an S U that will carry `spec`."""
        last = t + 1 == iters
        return plan_orth(ctx, spec, (l, k), finish if last else 0, fmt, bound=1.0, fast=fast,
                         ahead=None if last else lambda spec_u: ahead(t, spec_u))

    def ahead(t, spec_u):
        """What iteration t asks for iteration t + 1: S U, its truncation, its orthonormalisation."""
        pend = beaver.request_product(ctx, "matmul", S.mask.spec, spec_u, (l, k))
        plan_su = plan_truncation(ctx, (l, k), f, fmt.k + f)
        return pend, plan_su, plan_for(t + 1, plan_su.spec)

    SU = S.select(cols=np.arange(l) < k)          # S I[:, :k]
    plan = plan_for(0, SU.mask.spec)
    for t in range(iters):
        res = orth(ctx, SU, plan=plan)
        if t + 1 == iters:
            return res
        U, (pend, plan_su, plan) = res
        SU = truncate_many(ctx, [beaver.combine(ctx, "matmul", S, U, pend)], [0], plans=[plan_su])[0]


def run_pca(ctx, cohort, qc, opts: PcaOptions) -> PcaResult:
    """Steps 1-4; see the module docstring."""
    mask = pca_snps(cohort, qc, opts.ld_dist)
    m3 = int(mask.sum())
    l = opts.k + opts.oversample
    if l > min(qc.n_kept, m3):
        raise ValueError(f"PCA needs k + oversample = {l} <= min(samples, SNPs) = {min(qc.n_kept, m3)} "
                         f"after QC and LD thinning; lower --pcs or --pca-oversample")
    with ctx.phase("pca"):
        rotated = eigenvalues_revealed(ctx)
        rotation = request_rotation(ctx, l, wide(ctx.params)) if rotated else None
        X = Standardised(ctx, cohort, qc, mask, l)
        omega = np.random.default_rng(opts.seed).standard_normal((m3, l)) / math.sqrt(m3)
        # ||X||_F^2 ~ 1, so every Gram matrix below has eigenvalues under ~1: public bound 1.
        # Orthonormalisations that feed another power step need only keep the span
        # (fast Newton-Schulz steps, reference.ns_steps_carry); the last is exact.
        carry, finish = ns_steps_carry(qc.n_kept), opts.finish_steps
        fmt, iters = X.fmt, opts.iters

        # Every step's dealer requests are made before its input exists, one
        # step ahead: Q's orthonormalisation asks for Xᵀ Q's, that for P's
        # orthonormalisation, that for X P's, that for the next Q's.
        def t_plan(t, spec_q):          # Xᵀ Q of power step t (t = iters: the small eigenproblem's Z)
            ahead = None if t == iters else (lambda spec, shape: p_plan(t, spec, shape))
            return X.plan_t_times(spec_q, l, ahead)

        def p_plan(t, spec, shape):     # P = orth(Xᵀ Q), then X P
            return plan_orth(ctx, spec, shape, 0, fmt, bound=1.0, fast=carry,
                             ahead=lambda spec_p: X.plan_times(spec_p, shape, lambda s, sh: q_plan(t, s, sh)))

        def q_plan(t, spec, shape):     # Q = orth(X P), then Xᵀ Q
            last = t + 1 == iters
            return plan_orth(ctx, spec, shape, finish if last else 0, fmt, bound=1.0, fast=carry,
                             ahead=lambda spec_q: t_plan(t + 1, spec_q))

        Q, plan = orth(ctx, X.times_public(omega), 0 if iters else finish, bound=1.0, fast=ns_steps_start(m3),
                       ahead=lambda spec_q: t_plan(0, spec_q))
        steps = 2 * iters + 2
        for t in range(iters):
            Y, plan = X.t_times(Q, plan)
            P, plan = orth(ctx, Y, plan=plan)
            Y, plan = X.times(P, plan)
            Q, plan = orth(ctx, Y, plan=plan)
            ctx.progress("pca", 2 * t + 2, steps)
        Zt = X.t_times(Q, plan)
        # S's eigenvalues are the sigma_i^2 <= ||X||_F^2 ~ 1: bound 1 holds without
        # normalising by the trace (which cost a reciprocal, 24 rounds).
        S = beaver.fixed_products(ctx, [("matmul", Zt.T, Zt)], fmt=fmt)[0]
        values, ritz = None, None
        if rotated:
            U, values = eigh_rotated(ctx, S, rotation, opts.k, EIGENVALUES, fmt)
            values = values * qc.n_kept           # eigenvalues of X_std X_stdᵀ / M3 (PLINK's GRM)
            pcs = beaver.fixed_products(ctx, [("matmul", Q, U)], fmt=fmt)[0]
        else:
            U = _top_eigenspace(ctx, S, opts.k, opts.eig_iters, ns_steps_eig(qc.n_kept), finish, fmt)
            if ctx.policy.allows(EIGENVALUES, "analyst"):
                pcs, SU = beaver.fixed_products(ctx, [("matmul", Q, U), ("matmul", S, U)], fmt=fmt)
                ritz = beaver.fixed_products(ctx, [("matmul", U.T, SU)], fmt=fmt)[0]
            else:
                pcs = beaver.fixed_products(ctx, [("matmul", Q, U)], fmt=fmt)[0]
        ctx.progress("pca", steps, steps)
    return PcaResult(pcs=pcs, snp_mask=mask, n_snps=m3, eigenvalues=values, ritz=ritz)
