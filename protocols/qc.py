"""Quality control on the pooled cohort: sample QC, then SNP QC on the kept samples.

Definitions are those of docs/ALGORITHMS.md ("Quality control"), the same as
protocols.reference.qc; thresholds are compared exactly as integers where the
reference does (missingness, heterozygosity bounds, MAF), and in fixed point
for the Hardy–Weinberg chi-square (normalised genotype frequencies).

Protocol:

1. **Sample statistics** (local): per individual, missing calls and
   heterozygous calls over all M0 SNPs (row sums of the masked matrices).
2. **Sample tests** (one batched comparison, 8 rounds): ``--mind``,
   ``--het-min``/``--het-max``; ``--het-sd`` in fixed point (reciprocal,
   square root); a missing phenotype or covariate fails the sample.
3. **Sample keep mask** = product of the pass bits (log rounds); revealed to
   the nodes (policy ``qc.sample_keep``; the analyst sees it only if the study's
   policy adds "analyst" there); per-provider counts of failures per test go
   to the analyst only (``qc.sample_counts``).
4. **SNP statistics** over kept samples (local sums plus one round):
   missing calls, exact ALT counts, heterozygote counts.
5. **SNP tests** (fixed-point HWE chi-square, then one batched comparison):
   ``--geno``, ``--maf`` (and "no observed call"), ``--hwe``, and the
   polymorphism test used to choose PCA SNPs.
6. The per-SNP pass/fail bit of each test is revealed to the nodes and the
   analyst (policy ``qc.snp_keep``): the SNP keep mask and the reason a SNP
   failed.  Steps 5-6 run over chunks of ``CHUNK_SNPS`` SNPs, so a node's
   memory does not grow with the number of SNPs.  Nothing else leaves the shares; the per-SNP counts stay secret
   for the later phases.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field as dc_field

import numpy as np
from scipy import stats

from mpc import beaver, compare
from mpc.reveal import output, reveal
from mpc.shared import SharedArray, concatenate
from protocols.common import product_tree, scale_public
from protocols.freq import pooled_counts

POLICY = {
    "qc.sample_keep": ("nodes",),            # add "analyst" to let the analyst see per-individual QC
    "qc.sample_counts": ("analyst",),
    "qc.snp_keep": ("nodes", "analyst"),
}


@dataclass(frozen=True)
class QcOptions:
    """Thresholds, named like PLINK's options (None: no filter)."""

    mind: float | None = None
    geno: float | None = None
    maf: float | None = None
    hwe: float | None = None
    het_min: float | None = None
    het_max: float | None = None
    het_sd: float | None = None

    def __post_init__(self):
        for name in ("mind", "geno", "het_min", "het_max"):
            v = getattr(self, name)
            if v is not None and not 0.0 <= v <= 1.0:
                raise ValueError(f"--{name.replace('_', '-')} must lie in [0, 1], got {v}")
        if self.maf is not None and not 0.0 <= self.maf <= 0.5:
            raise ValueError(f"--maf must lie in [0, 0.5], got {self.maf}")
        if self.hwe is not None and not 0.0 < self.hwe <= 1.0:
            raise ValueError(f"--hwe must lie in (0, 1], got {self.hwe}")
        if self.het_sd is not None and not self.het_sd > 0:
            raise ValueError(f"--het-sd must be positive, got {self.het_sd}")


@dataclass
class QcResult:
    """What QC leaves for the later phases.

    Public (revealed): sample_keep (per provider), snp_keep, snp_reason,
    pca_ok (polymorphic kept SNPs).  Secret: per-SNP counts over kept samples."""

    sample_keep: list
    snp_keep: np.ndarray
    snp_reason: np.ndarray
    pca_ok: np.ndarray
    n_kept: int
    alt: SharedArray = None        # ALT allele count over kept samples (integer)
    miss: SharedArray = None       # missing calls over kept samples (integer)
    c1: SharedArray = None         # heterozygous calls over kept samples (integer)
    sample_tests: list = dc_field(default_factory=list)


def _bits_for(limit: int) -> int:
    """Comparison width for integers of magnitude up to `limit`."""
    return max(8, int(limit).bit_length() + 2)


def sample_qc(ctx, cohort, opts: QcOptions, extra_fail=()):
    """Steps 1-3.  extra_fail: (name, SharedArray 0/1 of shape (N0,)) samples to drop
    (missing phenotype / covariates).  Returns (keep masks per provider, test names)."""
    f = ctx.params.f
    m0 = cohort.n_snps
    miss_parts = [None] * len(cohort.providers)
    het_parts = [None] * len(cohort.providers)
    for b in range(len(cohort.blocks)):
        blocks = cohort.genotype_block(b, ("missing", "het"))
        for p in range(len(cohort.providers)):
            m = blocks["missing"][p].sum(axis=1)
            h = blocks["het"][p].sum(axis=1)
            miss_parts[p] = m if miss_parts[p] is None else miss_parts[p] + m
            het_parts[p] = h if het_parts[p] is None else het_parts[p] + h
        ctx.progress("sample-qc", b + 1, len(cohort.blocks))
    miss, het = concatenate(miss_parts), concatenate(het_parts)
    observed = m0 - miss                                    # public M0 minus secret count
    fails, names = [], []
    bits = _bits_for(m0 << f)
    if opts.mind is not None:
        t = math.floor(opts.mind * m0 + 1e-9)
        names.append("mind")
        fails.append(t - miss)                               # < 0 iff miss > t
    if opts.het_min is not None:
        names.append("het_min")
        fails.append(het * (1 << f) - observed * math.floor(opts.het_min * (1 << f)))
    if opts.het_max is not None:
        names.append("het_max")
        fails.append(observed * math.ceil(opts.het_max * (1 << f)) - het * (1 << f))
    fail_bits = compare.ltz_many(ctx, fails, bits) if fails else []
    if opts.het_sd is not None:
        names.append("het_sd")
        fail_bits.append(_het_sd_fail(ctx, het, observed, fail_bits[0] if opts.mind is not None else None,
                                      opts.het_sd, m0))
    for name, bit in extra_fail:
        names.append(name)
        fail_bits.append(bit)
    if fail_bits:
        keep = product_tree(ctx, [1 - b for b in fail_bits])
        keep_public = reveal(ctx, keep, "qc.sample_keep").astype(bool)
    else:
        keep_public = np.ones(cohort.n_samples, dtype=bool)
    # Per-provider failure counts per test, to the analyst only.
    if fail_bits:
        counts = []
        edges = np.cumsum([0] + list(cohort.sample_counts))
        for bit in fail_bits:
            counts.append(concatenate([bit[edges[p]:edges[p + 1]].sum().reshape(1)
                                       for p in range(len(cohort.providers))]))
        from mpc.shared import stack
        output(ctx, stack(counts), "qc.sample_counts", key="fails", tests=names)
    edges = np.cumsum([0] + list(cohort.sample_counts))
    return [keep_public[edges[p]:edges[p + 1]] for p in range(len(cohort.providers))], names


def _het_sd_fail(ctx, het, observed, mind_fail, sd_mult, m0):
    """[|het_i - mean| > S sd] in fixed point, with mean and sd (ddof 1) over the
    samples that pass --mind and have an observed call; a sample with no
    observed call fails.  Ratios are formed on values scaled near 1 (counts
    divided by the public M0 or N0) so the reciprocals keep full precision."""
    from mpc import nonlinear

    n0 = het.shape[0]
    obs_pos = 1 - compare.ltz(observed - 1, _bits_for(m0))          # observed >= 1
    ref = obs_pos if mind_fail is None else beaver.mul(obs_pos, 1 - mind_fail)
    safe_obs = observed + (1 - obs_pos)                             # >= 1 everywhere
    obs_norm, het_norm = scale_public(ctx, [safe_obs, het], [1.0 / m0, 1.0 / m0])
    rate = beaver.fmul(het_norm, nonlinear.reciprocal(obs_norm))    # het / observed, in [0, 1]
    n_ref = ref.sum()
    sum_norm, n_norm, n1_norm = scale_public(ctx, [beaver.mul(rate, ref).sum(), n_ref, n_ref - 1],
                                             [1.0 / n0, 1.0 / n0, 1.0 / n0])
    mean = beaver.fmul(sum_norm, nonlinear.reciprocal(n_norm))      # sum / n_ref
    dev = rate - mean
    ss_norm = scale_public(ctx, [beaver.mul(beaver.fsquare(dev), ref).sum()], [1.0 / n0])[0]
    var = beaver.fmul(ss_norm, nonlinear.reciprocal(n1_norm))       # ss / (n_ref - 1)
    bound = scale_public(ctx, [var], [float(sd_mult) ** 2])[0]
    over = compare.ltz(bound - beaver.fsquare(dev))                 # dev^2 > S^2 var
    return 1 - beaver.mul(1 - over, obs_pos)


CHUNK_SNPS = 65536
"""SNPs tested per batch of comparisons in SNP QC: bounds a node's memory
(about 1.5 KB per SNP in flight) independently of the number of SNPs, at the
cost of the tests' ~20 rounds once more per extra chunk."""


def snp_qc(ctx, cohort, opts: QcOptions, sample_keep, chunk_snps: int = CHUNK_SNPS) -> QcResult:
    """Steps 4-6 over the kept samples; the tests of step 5 run over chunks of
    `chunk_snps` SNPs (one chunk, as one batch, when the cohort has fewer)."""
    n1 = int(sum(int(k.sum()) for k in sample_keep))
    alt, miss, c1 = pooled_counts(ctx, cohort, sample_keep, het=True)
    m0 = cohort.n_snps
    step = max(1, int(chunk_snps))
    fail, order = {}, []
    for j0 in range(0, m0, step):
        j1 = min(m0, j0 + step)
        order, revealed = _snp_tests(ctx, opts, n1, alt[j0:j1], miss[j0:j1], c1[j0:j1])
        for r, v in zip(order, revealed):
            fail.setdefault(r, np.zeros(m0, dtype=bool))[j0:j1] = v.astype(bool)
        ctx.progress("snp-qc", j1, m0)
    reason = np.full(m0, "", dtype="<U4")
    for r in ("hwe", "maf", "geno"):            # the first failing test in PLINK's order wins
        if r in fail:
            reason[fail[r]] = r
    keep = reason == ""
    pca_ok = keep & ~fail.get("mono", np.zeros(m0, dtype=bool))
    return QcResult(sample_keep=sample_keep, snp_keep=keep, snp_reason=reason, pca_ok=pca_ok,
                    n_kept=n1, alt=alt, miss=miss, c1=c1)


def _snp_tests(ctx, opts: QcOptions, n1: int, alt, miss, c1):
    """Step 5 for a run of SNPs: (reasons, their revealed fail bits)."""
    f = ctx.params.f
    n_obs = n1 - miss
    int_bits = _bits_for((2 * n1 + 2) << f)
    tests, names = [], []
    if opts.geno is not None:
        t = math.floor(opts.geno * n1 + 1e-9)
        names.append("geno")
        tests.append(t - miss)
    if opts.maf is not None:
        t = math.floor(opts.maf * (1 << f))
        names += ["maf_low", "maf_high", "maf_none"]
        tests += [alt * (1 << f) - n_obs * (2 * t),
                  n_obs * (2 * ((1 << f) - t)) - alt * (1 << f),
                  n_obs - 1]
    # Polymorphic (both alleles seen): what PCA can standardise.
    names += ["mono_alt", "mono_ref"]
    tests += [alt - 1, (n_obs * 2 - 1) - alt]
    if opts.hwe is not None:
        names.append("hwe")
        tests.append(_hwe_margin(ctx, alt, c1, n_obs, n1, opts.hwe))
    # One comparison batch; the widest operands are the HWE margins (N1 2^2f).
    cmp_bits = max(int_bits, _bits_for(n1 << (2 * f)) + 6) if opts.hwe is not None else int_bits
    fails = compare.ltz_many(ctx, tests, cmp_bits)
    by_name = dict(zip(names, fails))
    groups = {"geno": ["geno"], "maf": ["maf_low", "maf_high", "maf_none"], "hwe": ["hwe"],
              "mono": ["mono_alt", "mono_ref"]}
    combined, order = [], []
    for reason in ("geno", "maf", "hwe", "mono"):
        bits = [by_name[n] for n in groups[reason] if n in by_name]
        if not bits:
            continue
        order.append(reason)
        combined.append(bits[0] if len(bits) == 1 else 1 - product_tree(ctx, [1 - b for b in bits]))
    return order, reveal(ctx, combined, "qc.snp_keep")


def _hwe_margin(ctx, alt, c1, n_obs, n1, p_threshold):
    """T' B - LHS 2^f, negative iff the HWE chi-square exceeds chi2.isf(P, 1).

    With q_k = c_k / N1 (fixed point): LHS = N1 (q0+q1+q2) (4 q0 q2 - q1^2)^2 and
    B = (2 q0 + q1)^2 (2 q2 + q1)^2, so LHS / B is the chi-square; T' = ceil(t 2^f)."""
    f = ctx.params.f
    c2 = (alt - c1).mul_pow2(-1)                # alt - c1 = 2 c2 exactly: exact halving
    c0 = n_obs - c1 - c2
    q0, q1, q2 = scale_public(ctx, [c0, c1, c2], [1.0 / n1] * 3)
    prods = beaver.fixed_products(ctx, [("mul", q0, q2), ("square", q1, None),
                                        ("mul", q0 * 2 + q1, q2 * 2 + q1)])
    a = prods[0] * 4 - prods[1]                 # 4 q0 q2 - q1^2
    a2, b = beaver.fixed_products(ctx, [("square", a, None), ("square", prods[2], None)])
    s = q0 + q1 + q2
    lhs = beaver.fixed_products(ctx, [("mul", s, a2)])[0] * n1      # frac f, <= N1
    t = math.ceil(float(stats.chi2.isf(float(p_threshold), 1)) * (1 << f))
    return b * t - lhs * (1 << f)               # values B T' and LHS 2^f, both at frac f
