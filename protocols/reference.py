"""Plaintext reference of every analysis of docs/ALGORITHMS.md, in numpy/scipy.

The secure protocols (``protocols/qc.py``, ``pca.py``, ``association.py``,
``logistic.py``, ``logrank.py``) implement the same definitions on
secret-shared arrays; their tests compare against the functions here, and the
functions here are compared with PLINK 2, statsmodels and lifelines in
``tests/test_reference.py``.  Everything runs in float64 except where
ALGORITHMS.md prescribes an exact integer comparison (QC thresholds), which is
done here in exact integer arithmetic so that keep-sets are bit-identical to a
secure implementation doing the same comparisons.

Notation (as ALGORITHMS.md): N0 samples and M0 SNPs as submitted, N1 samples
kept by QC, M2 SNPs kept by QC, M3 SNPs used for PCA.  Genotypes come as three
(N0, M0) indicator-style arrays: ``dosage`` (ALT allele count 0/1/2, 0 where
missing), ``missing`` (1 where the call is missing) and ``het`` (1 where the
call is heterozygous); :func:`genotype_indicators` builds them from a
bed-reader matrix.

Contents, in pipeline order:

- genotypes:     :func:`genotype_indicators`
- frequencies:   :func:`freq`
- QC:            :func:`qc`
- PCA:           :func:`ld_thin`, :func:`orth`, :func:`orth_exact`,
                 :func:`standardise`, :func:`pca`, :func:`pca_exact`,
                 :func:`principal_cosines`
- association:   :func:`trend_test`
- logistic:      :func:`logistic_fit`, :func:`logistic_null`,
                 :func:`score_test`, :func:`wald_per_snp`
- survival:      :func:`count_table`, :func:`logrank`,
                 :func:`logrank_stratified`, :func:`kaplan_meier`
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from scipy import linalg, optimize, special, stats

from mpc.errors import InputError

__all__ = [
    "SeparationError", "CollinearityError",
    "GenotypeIndicators", "genotype_indicators",
    "FreqResult", "freq",
    "QcResult", "qc", "hwe_chi2",
    "ld_thin", "orth", "orth_exact", "standardise",
    "PcaResult", "ExactPcaResult", "pca", "pca_exact", "principal_cosines",
    "TrendResult", "trend_test", "neglog10_chi2_sf",
    "LogisticResult", "logistic_fit", "LogisticNullModel", "logistic_null",
    "ScoreResult", "score_test", "WaldResult", "wald_per_snp",
    "CountTable", "count_table", "LogrankResult", "logrank", "logrank_stratified",
    "KaplanMeierResult", "kaplan_meier",
]

# SNPs per block when a float copy of the genotypes is needed: bounds the
# temporary memory to N1 x _SNP_BLOCK float64 values.
_SNP_BLOCK = 2048


class SeparationError(InputError):
    """Logistic regression without penalty has no finite maximum-likelihood
    estimate: the classes are (quasi-)completely separated by the design."""


class CollinearityError(InputError):
    """A design matrix column is constant (next to an intercept) or a linear
    combination of the other columns, so its coefficient is not identified."""


# --------------------------------------------------------------------------
# input checking
# --------------------------------------------------------------------------

def _indicator(name, values, shape=None):
    """Return ``values`` as a bool array, checking that it holds only 0/1."""
    arr = np.asarray(values)
    if shape is not None and arr.shape != shape:
        raise InputError(f"{name} must have shape {shape}, got {arr.shape}")
    if arr.dtype == bool:
        return arr
    if arr.dtype.kind not in "iu":
        raise InputError(f"{name} must be a bool or 0/1 integer array, got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() > 1):
        raise InputError(f"{name} must hold only 0 and 1, found values in [{arr.min()}, {arr.max()}]")
    return arr.astype(bool)


def _genotypes(dosage, missing, het):
    """Check the (N0, M0) genotype indicator arrays; return (dosage, missing, het).

    ``dosage`` keeps its integer dtype (no copy); ``missing`` and ``het`` come
    back as bool arrays.
    """
    dosage = np.asarray(dosage)
    if dosage.ndim != 2:
        raise InputError(f"dosage must be a 2-D (n_samples, n_snps) array, got shape {dosage.shape}")
    if dosage.dtype.kind not in "iu":
        raise InputError(f"dosage must be an integer array (0/1/2, 0 where missing), got dtype {dosage.dtype}; "
                         "use genotype_indicators() to convert a bed-reader matrix")
    missing = _indicator("missing", missing, dosage.shape)
    if dosage.size:
        lo, hi = dosage.min(), dosage.max()
        if lo < 0 or hi > 2:
            raise InputError(f"dosage must hold 0, 1 or 2, found values in [{lo}, {hi}]; "
                             "use genotype_indicators() to convert a bed-reader matrix")
        if np.any(missing & (dosage != 0)):
            i, j = np.argwhere(missing & (dosage != 0))[0]
            raise InputError(f"dosage must be 0 where the call is missing (sample {i}, SNP {j} "
                             f"has dosage {dosage[i, j]})")
    if het is not None:
        het = _indicator("het", het, dosage.shape)
        expected = (dosage == 1) & ~missing
        if not np.array_equal(het, expected):
            i, j = np.argwhere(het != expected)[0]
            raise InputError(f"het must be 1 exactly where dosage == 1 and the call is observed "
                             f"(sample {i}, SNP {j}: het {int(het[i, j])}, dosage {dosage[i, j]}, "
                             f"missing {int(missing[i, j])})")
    return dosage, missing, het


def _mask(name, values, length):
    arr = np.asarray(values)
    if arr.shape != (length,):
        raise InputError(f"{name} must have shape ({length},), got {arr.shape}")
    return _indicator(name, arr)


def _per_sample(name, values, keep, *, ndim, allow_none=False):
    """Rows of a per-sample array for the kept samples, as float64.

    ``values`` may have N0 rows (every submitted sample; rows of dropped samples
    are ignored and may be NaN) or N1 rows (kept samples only).  When N0 == N1
    both readings agree.
    """
    n_all, n_kept = keep.shape[0], int(keep.sum())
    if values is None:
        if allow_none:
            return np.zeros((n_kept, 0))
        raise InputError(f"{name} is required")
    arr = np.asarray(values, dtype=float)
    if ndim == 2 and arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != ndim:
        raise InputError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    if arr.shape[0] == n_all:
        arr = arr[keep]
    elif arr.shape[0] != n_kept:
        raise InputError(f"{name} has {arr.shape[0]} rows; expected {n_all} (all samples) "
                         f"or {n_kept} (samples kept by QC)")
    if not np.all(np.isfinite(arr)):
        rows = np.flatnonzero(~np.isfinite(arr).reshape(arr.shape[0], -1).all(axis=1))
        raise InputError(f"{name} is missing or not finite for {rows.size} kept sample(s) "
                         f"(first at kept row {rows[0]}): drop them in QC (pheno_missing)")
    return arr


def _imputed_block(dosage_kept, missing_kept, columns, imputed_kept=None):
    """Imputed dosages of some SNPs over the kept samples.

    Without ``imputed_kept``: pooled-mean imputation ``x_ij = d_ij + m_ij mu_j``
    with ``mu_j = alt_j / n_j`` (NaN when ``n_j = 0``).  With it (the
    site-mean imputed matrix of :func:`site_mean_imputed`, kept rows): its
    columns.  Returns the (N1, len(columns)) float64 block and the
    observed-genotype counts ``n_j``.
    """
    m = missing_kept[:, columns]
    n_obs = m.shape[0] - m.sum(axis=0)
    if imputed_kept is not None:
        return np.array(imputed_kept[:, columns], dtype=np.float64), n_obs
    d = dosage_kept[:, columns].astype(np.float64)
    alt = d.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mu = alt / n_obs
    x = np.where(m, mu, d)
    return x, n_obs


def site_mean_imputed(dosage, missing, site, f=28):
    """The dosage matrix as providers submit it: missing calls replaced by the
    provider's own mean ALT dosage over *all* its samples, rounded to 2^-f
    (0 where a provider observed nothing), as parties.provider does.

    Parameters
    ----------
    dosage : array of int, shape (N0, M0)
    missing : array of bool or 0/1, shape (N0, M0)
    site : array of int, shape (N0,)
        Provider index of each sample.
    f : int
        Fractional bits of the rounding.

    Returns
    -------
    ndarray of float64, shape (N0, M0)
    """
    d = np.asarray(dosage).astype(np.float64)
    m = np.asarray(missing).astype(bool)
    site = np.asarray(site)
    out = np.where(m, 0.0, d)
    one = float(1 << int(f))
    for s in np.unique(site):
        rows = site == s
        n_obs = (~m[rows]).sum(axis=0)
        alt = np.where(m[rows], 0.0, d[rows]).sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(n_obs > 0, np.rint(alt * one / np.maximum(n_obs, 1)) / one, 0.0)
        out[rows] = np.where(m[rows], mean[None, :], d[rows])
    return out


def neglog10_chi2_sf(chisq, df=1):
    """-log10 of the upper tail of a chi-square distribution, without underflow.

    For one degree of freedom ``chi2.sf(x, 1) = 2 norm.sf(sqrt(x))`` and
    ``norm.logsf`` stays finite far beyond the x ~ 1,420 where ``chi2.logsf``
    returns -inf.

    Parameters
    ----------
    chisq : array_like
        Statistics (NaN propagates).
    df : int
        Degrees of freedom.

    Returns
    -------
    ndarray of float64, same shape as ``chisq``.
    """
    chisq = np.asarray(chisq, dtype=float)
    if df == 1:
        log_p = np.log(2.0) + stats.norm.logsf(np.sqrt(chisq))
    else:
        log_p = stats.chi2.logsf(chisq, df)
    return -log_p / np.log(10.0)


# --------------------------------------------------------------------------
# genotypes
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class GenotypeIndicators:
    """Genotypes as the linear indicators providers share.

    Attributes
    ----------
    dosage : ndarray of uint8, shape (n_samples, n_snps)
        ALT allele count 0/1/2, 0 where missing.
    missing : ndarray of bool, shape (n_samples, n_snps)
    het : ndarray of bool, shape (n_samples, n_snps)
        ``dosage == 1`` on observed calls.
    """

    dosage: np.ndarray
    missing: np.ndarray
    het: np.ndarray


def genotype_indicators(values):
    """Split a genotype matrix into dosage, missing and heterozygous indicators.

    Parameters
    ----------
    values : array_like, shape (n_samples, n_snps)
        ALT allele counts as bed-reader returns them: int8 with -127 for a
        missing call, or float with NaN for a missing call.

    Returns
    -------
    GenotypeIndicators
    """
    values = np.asarray(values)
    if values.ndim != 2:
        raise InputError(f"genotypes must be a 2-D (n_samples, n_snps) array, got shape {values.shape}")
    if values.dtype.kind == "f":
        missing = np.isnan(values)
        observed = np.where(missing, 0.0, values)
        if not np.all(np.isin(observed, (0.0, 1.0, 2.0))):
            raise InputError("genotypes must be 0, 1, 2 or NaN (missing)")
    elif values.dtype.kind in "iu":
        missing = values == -127 if values.dtype.kind == "i" else np.zeros(values.shape, bool)
        observed = np.where(missing, 0, values)
        if observed.size and (observed.min() < 0 or observed.max() > 2):
            raise InputError("genotypes must be 0, 1, 2 or -127 (missing)")
    else:
        raise InputError(f"genotypes must be an integer or float array, got dtype {values.dtype}")
    dosage = observed.astype(np.uint8)
    return GenotypeIndicators(dosage=dosage, missing=missing, het=(dosage == 1) & ~missing)


# --------------------------------------------------------------------------
# allele frequency and missingness
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class FreqResult:
    """Per-SNP allele frequency and missingness over all N0 samples.

    Attributes
    ----------
    alt_count : ndarray of int64, shape (n_snps,)
        ``Σ_i d_ij``.
    missing_count : ndarray of int64, shape (n_snps,)
        ``Σ_i m_ij``.
    obs_ct : ndarray of int64, shape (n_snps,)
        Allele observations ``2 (N0 - missing_count)`` (``plink2 --freq`` OBS_CT).
    alt_freq : ndarray of float64, shape (n_snps,)
        ``alt_count / obs_ct`` (ALT_FREQS), NaN where ``obs_ct == 0``.
    missing_rate : ndarray of float64, shape (n_snps,)
        ``missing_count / N0`` (``plink2 --missing`` F_MISS).
    """

    alt_count: np.ndarray
    missing_count: np.ndarray
    obs_ct: np.ndarray
    alt_freq: np.ndarray
    missing_rate: np.ndarray


def freq(dosage, missing):
    """ALT allele frequency and missing rate of every SNP (ALGORITHMS.md "freq").

    Parameters
    ----------
    dosage : array of int, shape (n_samples, n_snps)
        ALT allele count 0/1/2, 0 where missing.
    missing : array of bool or 0/1, shape (n_samples, n_snps)

    Returns
    -------
    FreqResult
    """
    dosage, missing, _ = _genotypes(dosage, missing, None)
    n_samples = dosage.shape[0]
    if n_samples == 0:
        raise InputError("freq needs at least one sample")
    alt_count = dosage.sum(axis=0, dtype=np.int64)
    missing_count = missing.sum(axis=0, dtype=np.int64)
    obs_ct = 2 * (n_samples - missing_count)
    alt_freq = np.full(alt_count.shape, np.nan)
    np.divide(alt_count, obs_ct, out=alt_freq, where=obs_ct > 0)
    return FreqResult(alt_count=alt_count, missing_count=missing_count, obs_ct=obs_ct,
                      alt_freq=alt_freq, missing_rate=missing_count / n_samples)


# --------------------------------------------------------------------------
# quality control
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class QcResult:
    """Keep masks, failure reasons and the statistics behind them.

    Attributes
    ----------
    sample_keep : ndarray of bool, shape (N0,)
    sample_reason : ndarray of str, shape (N0,)
        ``''`` (kept), ``'mind'``, ``'het'`` or ``'pheno'``: the first rule the
        sample fails, in that order.
    snp_keep : ndarray of bool, shape (M0,)
    snp_reason : ndarray of str, shape (M0,)
        ``''``, ``'geno'``, ``'maf'`` or ``'hwe'``, first failure in that order.
    sample_missing : ndarray of int64, shape (N0,)
        ``miss_i``, missing calls over all M0 SNPs.
    sample_het : ndarray of int64, shape (N0,)
        ``h_i``, heterozygous calls over all M0 SNPs.
    het_rate : ndarray of float64, shape (N0,)
        ``h_i / (M0 - miss_i)``, NaN for a sample with no observed call.
    snp_missing : ndarray of int64, shape (M0,)
        ``miss_j`` over the N1 kept samples.
    snp_observed : ndarray of int64, shape (M0,)
        ``n_j = N1 - miss_j``.
    alt_count : ndarray of int64, shape (M0,)
        ``alt_j`` over the kept samples.
    het_count : ndarray of int64, shape (M0,)
        ``c1``, heterozygous calls over the kept samples.
    genotype_counts : ndarray of int64, shape (M0, 3)
        ``(c0, c1, c2)``: ALT-allele dosage 0, 1, 2 counts over the kept samples.
    alt_freq : ndarray of float64, shape (M0,)
        ``alt_j / (2 n_j)``, NaN where ``n_j == 0``.
    maf : ndarray of float64, shape (M0,)
        ``min(alt_freq, 1 - alt_freq)``.
    hwe_chi2 : ndarray of float64, shape (M0,)
        One-degree-of-freedom Hardy–Weinberg chi-square.
    thresholds : dict
        The integer forms of the thresholds actually compared (for audit).
    """

    sample_keep: np.ndarray
    sample_reason: np.ndarray
    snp_keep: np.ndarray
    snp_reason: np.ndarray
    sample_missing: np.ndarray
    sample_het: np.ndarray
    het_rate: np.ndarray
    snp_missing: np.ndarray
    snp_observed: np.ndarray
    alt_count: np.ndarray
    het_count: np.ndarray
    genotype_counts: np.ndarray
    alt_freq: np.ndarray
    maf: np.ndarray
    hwe_chi2: np.ndarray
    thresholds: dict = field(default_factory=dict)

    @property
    def n_samples_kept(self) -> int:
        return int(self.sample_keep.sum())

    @property
    def n_snps_kept(self) -> int:
        return int(self.snp_keep.sum())


def _check_rate(name, value, low, high):
    if value is None:
        return None
    value = float(value)
    if not (low <= value <= high):
        raise InputError(f"{name} must lie in [{low}, {high}], got {value}")
    return value


def _exact(values):
    """int64 counts as Python-int object arrays: products below cannot overflow."""
    return np.asarray(values, dtype=np.int64).astype(object)


def hwe_chi2(genotype_counts):
    """Hardy–Weinberg chi-square (1 df) from genotype counts.

    ``n (4 c0 c2 - c1^2)^2 / ((2 c0 + c1)^2 (2 c2 + c1)^2)``, 0 when a
    denominator factor is 0 (a monomorphic SNP).

    Parameters
    ----------
    genotype_counts : array of int, shape (..., 3)
        ``(c0, c1, c2)``.

    Returns
    -------
    ndarray of float64, shape (...)
    """
    counts = np.asarray(genotype_counts, dtype=np.float64)
    c0, c1, c2 = counts[..., 0], counts[..., 1], counts[..., 2]
    n = c0 + c1 + c2
    numerator = n * (4.0 * c0 * c2 - c1 * c1) ** 2
    denominator = (2.0 * c0 + c1) ** 2 * (2.0 * c2 + c1) ** 2
    out = np.zeros(np.shape(n))
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def qc(dosage, missing, het, *, mind=None, geno=None, maf=None, hwe=None,
       het_min=None, het_max=None, het_sd=None, pheno_missing=None, f=28):
    """Sample and SNP quality control exactly as ALGORITHMS.md "Quality control".

    Sample QC first, over all M0 SNPs, then SNP QC over the N1 kept samples.
    Every threshold comparison is an exact integer comparison:

    - ``--mind T``: keep ``miss_i <= floor(T M0 + 1e-9)``.
    - ``--het-min L``: keep ``h_i 2^f >= floor(L 2^f) (M0 - miss_i)``;
      ``--het-max U``: keep ``h_i 2^f <= ceil(U 2^f) (M0 - miss_i)``
      (L rounded down, U rounded up to 2^-f).  A sample with no observed call
      passes both (0 >= 0, 0 <= 0) and fails only through ``--mind``.
    - ``--het-sd S``: keep ``|het_i - mean| <= S sd`` (float64; mean and sd,
      ddof = 1, over the samples that pass ``--mind`` and have an observed
      call; a sample with no observed call fails).
    - samples with a missing phenotype (``pheno_missing``) fail with reason
      ``pheno``.
    - ``--geno T``: keep ``miss_j <= floor(T N1 + 1e-9)``.
    - ``--maf T``: keep ``alt_j 2^f >= 2 floor(T 2^f) n_j`` and
      ``alt_j 2^f <= 2 (2^f - floor(T 2^f)) n_j`` (T rounded down); ``n_j = 0``
      fails.
    - ``--hwe P``: keep ``hwe_j <= chi2.isf(P, 1)``, compared exactly as
      ``n (4 c0 c2 - c1^2)^2 2^f <= ceil(t 2^f) (2 c0 + c1)^2 (2 c2 + c1)^2``
      with the threshold t rounded *up* to 2^-f (ALGORITHMS.md does not say how
      the chi-square threshold is rounded; rounding up is lenient, as for the
      other bounds).

    Parameters
    ----------
    dosage : array of int, shape (N0, M0)
        ALT allele count 0/1/2, 0 where missing.
    missing, het : array of bool or 0/1, shape (N0, M0)
    mind, geno : float in [0, 1], optional
        Largest missing rate kept (ties kept).
    maf : float in [0, 0.5], optional
        Smallest minor allele frequency kept (ties kept).
    hwe : float in (0, 1], optional
        Hardy–Weinberg p-value threshold (chi-square approximation).
    het_min, het_max : float in [0, 1], optional
        Bounds on the observed heterozygosity rate.
    het_sd : float > 0, optional
        Largest distance from the mean heterozygosity, in standard deviations.
    pheno_missing : array of bool, shape (N0,), optional
        Samples whose phenotype is missing.
    f : int
        Fractional bits of the fixed-point format the thresholds are rounded to.

    Returns
    -------
    QcResult
    """
    dosage, missing, het = _genotypes(dosage, missing, het)
    n_all, m_all = dosage.shape
    mind = _check_rate("mind", mind, 0.0, 1.0)
    geno = _check_rate("geno", geno, 0.0, 1.0)
    maf = _check_rate("maf", maf, 0.0, 0.5)
    het_min = _check_rate("het_min", het_min, 0.0, 1.0)
    het_max = _check_rate("het_max", het_max, 0.0, 1.0)
    if hwe is not None and not (0.0 < float(hwe) <= 1.0):
        raise InputError(f"hwe must lie in (0, 1], got {hwe}")
    if het_sd is not None and not float(het_sd) > 0:
        raise InputError(f"het_sd must be positive, got {het_sd}")
    if int(f) != f or not 1 <= f <= 60:
        raise InputError(f"f must be an integer number of fractional bits in [1, 60], got {f}")
    one = 1 << int(f)
    thresholds = {"f": int(f)}

    # ---- sample QC, over all M0 SNPs ----
    sample_missing = missing.sum(axis=1, dtype=np.int64)
    sample_het = het.sum(axis=1, dtype=np.int64)
    observed = m_all - sample_missing
    het_rate = np.full(n_all, np.nan)
    np.divide(sample_het, observed, out=het_rate, where=observed > 0)

    pass_mind = np.ones(n_all, bool)
    if mind is not None:
        max_missing = math.floor(mind * m_all + 1e-9)
        thresholds["mind_max_missing"] = max_missing
        pass_mind = sample_missing <= max_missing
    pass_het = np.ones(n_all, bool)
    h_scaled, obs_exact = _exact(sample_het) * one, _exact(observed)
    if het_min is not None:
        low = math.floor(het_min * one)
        thresholds["het_min_scaled"] = low
        pass_het &= (h_scaled >= low * obs_exact).astype(bool)
    if het_max is not None:
        high = math.ceil(het_max * one)
        thresholds["het_max_scaled"] = high
        pass_het &= (h_scaled <= high * obs_exact).astype(bool)
    if het_sd is not None:
        reference = pass_mind & (observed > 0)
        if reference.sum() < 2:
            raise InputError("het_sd needs at least 2 samples with observed calls that pass mind")
        rates = het_rate[reference]
        mean, sd = rates.mean(), rates.std(ddof=1)
        thresholds["het_sd_mean"], thresholds["het_sd_sd"] = float(mean), float(sd)
        with np.errstate(invalid="ignore"):
            pass_het &= np.abs(het_rate - mean) <= float(het_sd) * sd  # NaN fails
    has_pheno = np.ones(n_all, bool)
    if pheno_missing is not None:
        has_pheno = ~_mask("pheno_missing", pheno_missing, n_all)

    sample_reason = np.full(n_all, "", dtype="<U5")
    sample_reason[~has_pheno] = "pheno"
    sample_reason[~pass_het] = "het"
    sample_reason[~pass_mind] = "mind"
    sample_keep = sample_reason == ""

    # ---- SNP QC, over the N1 kept samples ----
    n_kept = int(sample_keep.sum())
    d_kept, m_kept, h_kept = dosage[sample_keep], missing[sample_keep], het[sample_keep]
    snp_missing = m_kept.sum(axis=0, dtype=np.int64)
    snp_observed = n_kept - snp_missing
    alt_count = d_kept.sum(axis=0, dtype=np.int64)
    c1 = h_kept.sum(axis=0, dtype=np.int64)
    c2 = (alt_count - c1) // 2
    c0 = snp_observed - c1 - c2
    genotype_counts = np.stack([c0, c1, c2], axis=1)
    alt_freq = np.full(m_all, np.nan)
    np.divide(alt_count, 2 * snp_observed, out=alt_freq, where=snp_observed > 0)
    maf_values = np.minimum(alt_freq, 1.0 - alt_freq)
    hwe_values = hwe_chi2(genotype_counts)

    pass_geno = np.ones(m_all, bool)
    if geno is not None:
        max_missing = math.floor(geno * n_kept + 1e-9)
        thresholds["geno_max_missing"] = max_missing
        pass_geno = snp_missing <= max_missing
    pass_maf = np.ones(m_all, bool)
    if maf is not None:
        t_scaled = math.floor(maf * one)
        thresholds["maf_scaled"] = t_scaled
        alt_scaled, n_exact = _exact(alt_count) * one, _exact(snp_observed)
        pass_maf = ((alt_scaled >= 2 * t_scaled * n_exact)
                    & (alt_scaled <= 2 * (one - t_scaled) * n_exact)).astype(bool)
        pass_maf &= snp_observed > 0
    pass_hwe = np.ones(m_all, bool)
    if hwe is not None:
        t_scaled = math.ceil(float(stats.chi2.isf(float(hwe), 1)) * one)
        thresholds["hwe_chi2_scaled"] = t_scaled
        e0, e1, e2 = _exact(c0), _exact(c1), _exact(c2)
        lhs = (e0 + e1 + e2) * (4 * e0 * e2 - e1 * e1) ** 2 * one
        rhs = t_scaled * (2 * e0 + e1) ** 2 * (2 * e2 + e1) ** 2
        pass_hwe = (lhs <= rhs).astype(bool)

    snp_reason = np.full(m_all, "", dtype="<U4")
    snp_reason[~pass_hwe] = "hwe"
    snp_reason[~pass_maf] = "maf"
    snp_reason[~pass_geno] = "geno"
    return QcResult(
        sample_keep=sample_keep, sample_reason=sample_reason,
        snp_keep=snp_reason == "", snp_reason=snp_reason,
        sample_missing=sample_missing, sample_het=sample_het, het_rate=het_rate,
        snp_missing=snp_missing, snp_observed=snp_observed, alt_count=alt_count,
        het_count=c1, genotype_counts=genotype_counts, alt_freq=alt_freq,
        maf=maf_values, hwe_chi2=hwe_values, thresholds=thresholds)


# --------------------------------------------------------------------------
# PCA
# --------------------------------------------------------------------------

def ld_thin(chrom, pos, keep, dist=100000):
    """Public positional LD thinning (ALGORITHMS.md PCA step 1).

    Walk the kept SNPs in input order; keep a SNP when it is on another
    chromosome than the last kept SNP, or at least ``dist`` bp after it.

    Parameters
    ----------
    chrom : array_like, shape (M0,)
        Chromosome labels (any comparable values).
    pos : array of int, shape (M0,)
        Base-pair positions.
    keep : array of bool, shape (M0,)
        SNPs eligible (kept by QC).
    dist : int
        Minimum distance in bp between consecutive kept SNPs of a chromosome.

    Returns
    -------
    ndarray of bool, shape (M0,)
        A subset of ``keep``.

    Raises
    ------
    InputError
        If the eligible SNPs are not sorted by position within a chromosome or
        a chromosome reappears after another one.
    """
    chrom = np.asarray(chrom)
    pos = np.asarray(pos)
    m_all = chrom.shape[0]
    if chrom.shape != (m_all,) or pos.shape != (m_all,):
        raise InputError(f"chrom and pos must be 1-D of the same length, got {chrom.shape} and {pos.shape}")
    keep = _mask("keep", keep, m_all)
    if dist < 0:
        raise InputError(f"dist must be >= 0, got {dist}")
    out = np.zeros(m_all, bool)
    seen = set()
    last_chrom, last_pos, last_seen = None, None, None
    for j in np.flatnonzero(keep):
        c, p = chrom[j].item(), int(pos[j])
        if c != last_seen:
            if c in seen:
                raise InputError(f"SNP {j}: chromosome {c!r} reappears after {last_seen!r}; "
                                 "SNPs must be sorted by chromosome and position")
            seen.add(c)
            prev_pos = None
        elif p < prev_pos:
            raise InputError(f"SNP {j}: position {p} on chromosome {c!r} is before the previous SNP's "
                             f"{prev_pos}; SNPs must be sorted by position")
        last_seen, prev_pos = c, p
        if c != last_chrom or p - last_pos >= dist:
            out[j] = True
            last_chrom, last_pos = c, p
    return out


NS_FAST_A = 2.0
"""Fast Newton–Schulz steps use T = 2I - Z Y: an eigenvalue m of M = Z Y maps to
m (2 - m)^2, so small ones grow 4x per step (2.25x in a standard step,
T = (3I - Z Y) / 2), and the band [NS_BAND_LOW, 1.185] maps into itself without
converging to 1 in it: enough where only the span matters."""
NS_BAND_LOW = 0.787
NS_FINISH_STEPS = 5
"""Standard steps that take the band to exact orthonormality: the error
max |m - 1| <= 0.213 falls to 0.036, 1e-3, 7e-7, 4e-13, below the format."""


def orth(Y, ns_iters=24, bound=None, fast=0):
    """Löwdin orthonormalisation ``Y (YᵀY)^(-1/2)`` by coupled Newton–Schulz.

    Exactly ALGORITHMS.md PCA step 5: ``G = YᵀY``, ``A = G / c`` with c the
    trace or, given a bound, the power of four at or above it; ``Y0 = A,
    Z0 = I``, then ``fast`` fast steps (``T = 2I - Z Y``, NS_FAST_A) and
    ``ns_iters`` standard ones (``T = (3I - Z Y)/2``), each ``Y = Y T; Z = T Z``;
    the result is ``Y Z / sqrt(c)``.

    A standard step converges for an eigenvalue ``a`` of A (0 < a <= 1) once
    roughly ``log(1/a) / log(2.25)`` steps have passed, then quadratically, so
    24 steps handle Gram matrices whose smallest non-zero eigenvalue is above
    ~1e-7 of the trace (measured: a 12-column Y with condition number 1e3 is
    exact to 1e-15, with 1e4 its projector is off by 4e-3).  Fast steps take
    ``log(1/a) / log(4)`` to reach the band; NS_FINISH_STEPS standard steps
    then finish.  Centre and scale columns before calling it.
    Null directions of a rank-deficient Y contribute nothing in exact
    arithmetic; in float64 their rounding noise is amplified by at most
    ``2^fast 1.5^ns_iters``.

    Parameters
    ----------
    Y : array_like, shape (n, k)
    ns_iters, fast : int
    bound : float, optional
        A public upper bound on the eigenvalues of YᵀY (below 3 times the
        largest) to normalise by (rounded up to a power of four) instead of
        the trace; the secure protocol uses it where the scaling of Y is
        known, which spares an inverse square root.

    Returns
    -------
    ndarray of float64, shape (n, k)
        Orthonormal columns (on the column span of Y); zeros if Y is zero.
    """
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim != 2:
        raise InputError(f"orth needs a 2-D matrix, got shape {Y.shape}")
    for name, v in (("ns_iters", ns_iters), ("fast", fast)):
        if int(v) != v or v < 0:
            raise InputError(f"{name} must be a non-negative integer, got {v}")
    G = Y.T @ Y
    if bound is None:
        scale = float(np.trace(G))
    else:
        scale = 4.0 ** math.ceil(math.log(float(bound), 4) - 1e-12)   # as mpc.linalg.bound_exponent
    if scale == 0.0:
        return np.zeros_like(Y)
    eye = np.eye(G.shape[0])
    Yk, Zk = G / scale, eye
    for step in range(int(fast) + int(ns_iters)):
        T = NS_FAST_A * eye - Zk @ Yk if step < fast else (3.0 * eye - Zk @ Yk) / 2.0
        Yk = Yk @ T
        Zk = T @ Zk
    return Y @ (Zk / math.sqrt(scale))


def orth_exact(Y, rtol=None):
    """The polar factor ``Y (YᵀY)^(+1/2)`` by SVD: what :func:`orth` converges to.

    Singular values below ``rtol * s_max`` count as zero (rank handling), so a
    rank-deficient Y gives ``U_r V_rᵀ``, whose column span and projector
    ``U_r U_rᵀ`` are those of Y.

    Parameters
    ----------
    Y : array_like, shape (n, k)
    rtol : float, optional
        Relative rank tolerance; default ``max(n, k) * eps``.

    Returns
    -------
    ndarray of float64, shape (n, k)
    """
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim != 2:
        raise InputError(f"orth_exact needs a 2-D matrix, got shape {Y.shape}")
    if Y.size == 0:
        return Y.copy()
    U, s, Vt = np.linalg.svd(Y, full_matrices=False)
    if rtol is None:
        rtol = max(Y.shape) * np.finfo(np.float64).eps
    rank = int(np.sum(s > rtol * s[0])) if s[0] > 0 else 0
    return U[:, :rank] @ Vt[:rank]


def _column_basis(A, rtol=None):
    """Orthonormal basis (n, r) of the column span of A."""
    A = np.asarray(A, dtype=np.float64)
    if A.ndim == 1:
        A = A[:, None]
    U, s, _ = np.linalg.svd(A, full_matrices=False)
    if rtol is None:
        rtol = max(A.shape) * np.finfo(np.float64).eps
    rank = int(np.sum(s > rtol * s[0])) if s.size and s[0] > 0 else 0
    return U[:, :rank]


def standardise(dosage, missing, sample_keep, snp_keep, *, site=None, f=28):
    """Standardised genotype matrix X of ALGORITHMS.md PCA step 2.

    ``X_ij = (d_ij - 2 f_j) s_j / sqrt(N1 M3)`` where observed, 0 where
    missing, with ``f_j`` the ALT frequency over the kept samples and
    ``s_j = 1 / sqrt(2 f_j (1 - f_j))`` (0 when f_j is 0, 1 or undefined).

    Parameters
    ----------
    dosage : array of int, shape (N0, M0)
    missing : array of bool or 0/1, shape (N0, M0)
    sample_keep : array of bool, shape (N0,)
    snp_keep : array of bool, shape (M0,)
        The M3 SNPs used (QC-kept and LD-thinned).
    site : array of int, shape (N0,), optional
        Provider of each sample: missing calls then take the provider's own
        (rounded) mean dosage (:func:`site_mean_imputed`) instead of 0 after
        centring, as the secure protocol does.
    f : int
        Fractional bits of that rounding.

    Returns
    -------
    X : ndarray of float64, shape (N1, M3)
    alt_freq : ndarray of float64, shape (M3,)
    """
    dosage, missing, _ = _genotypes(dosage, missing, None)
    sample_keep = _mask("sample_keep", sample_keep, dosage.shape[0])
    snp_keep = _mask("snp_keep", snp_keep, dosage.shape[1])
    n_kept, m_used = int(sample_keep.sum()), int(snp_keep.sum())
    if n_kept == 0 or m_used == 0:
        raise InputError(f"PCA needs kept samples and SNPs, got {n_kept} samples and {m_used} SNPs")
    d = dosage[np.ix_(sample_keep, snp_keep)].astype(np.float64)
    m = missing[np.ix_(sample_keep, snp_keep)]
    n_obs = n_kept - m.sum(axis=0)
    alt_freq = np.full(m_used, np.nan)
    np.divide(d.sum(axis=0), 2.0 * n_obs, out=alt_freq, where=n_obs > 0)
    variance = 2.0 * alt_freq * (1.0 - alt_freq)
    scale = np.zeros(m_used)
    np.divide(1.0, np.sqrt(variance, where=variance > 0, out=np.zeros(m_used)),
              out=scale, where=variance > 0)
    centre = np.where(np.isfinite(alt_freq), 2.0 * alt_freq, 0.0)
    if site is not None:
        imputed = site_mean_imputed(dosage, missing, site, f)[np.ix_(sample_keep, snp_keep)]
        X = (imputed - centre) * scale / math.sqrt(n_kept * m_used)
    else:
        X = np.where(m, 0.0, (d - centre) * scale) / math.sqrt(n_kept * m_used)
    return X, alt_freq


@dataclass(frozen=True)
class PcaResult:
    """Randomized PCA output and its intermediates.

    Attributes
    ----------
    pcs : ndarray of float64, shape (N1, k)
        ``Q U``: orthonormal basis of the estimated top-k principal subspace.
        With the subspace iteration (``eig="iterate"``) it is a rotation of the
        leading left singular vectors, not sorted or signed; with
        ``eig="rotated"`` the columns are the Ritz vectors in decreasing order
        of their eigenvalue, each signed so that its largest coordinate in the
        l-dimensional basis is positive.
    q : ndarray of float64, shape (N1, l)
        Range basis after the power iterations, l = k + oversample.
    s : ndarray of float64, shape (l, l)
        ``S = Zᵀ Z`` with ``Z = Xᵀ Q``.
    u : ndarray of float64, shape (l, k)
        Top-k eigenspace basis of S.
    orthonormality_error : float
        ``max(|QᵀQ - I|, |UᵀU - I|)``: small (~1e-14) when every Newton–Schulz
        orthonormalisation converged.
    snp_index : ndarray of int64, shape (M3,)
        Columns of the input used.
    alt_freq : ndarray of float64, shape (M3,)
    eigenvalues : ndarray of float64, shape (k,), or None
        With ``eig="rotated"``: the top-k eigenvalues of S (the Ritz values,
        approximating the top eigenvalues of X Xᵀ), decreasing; else None.
    """

    pcs: np.ndarray
    q: np.ndarray
    s: np.ndarray
    u: np.ndarray
    snp_index: np.ndarray
    alt_freq: np.ndarray
    orthonormality_error: float
    eigenvalues: np.ndarray | None = None


@dataclass(frozen=True)
class ExactPcaResult:
    """Exact PCA by SVD of the same standardised X.

    Attributes
    ----------
    pcs : ndarray of float64, shape (N1, k)
        Top-k left singular vectors, by decreasing singular value.
    singular_values : ndarray of float64, shape (k,)
    """

    pcs: np.ndarray
    singular_values: np.ndarray


def ns_fast_steps(smallest: float, margin: int) -> int:
    """Fast Newton–Schulz steps that take an eigenvalue `smallest` of A into the
    band [NS_BAND_LOW, 1.185], plus `margin` (each a factor ~4 on `smallest`)."""
    m, steps = float(smallest), 0
    while m < NS_BAND_LOW:
        m, steps = m * (NS_FAST_A - m) ** 2, steps + 1
    return steps + int(margin)


def ns_finish_steps(low: float, high: float = 1.185, tol: float = 2.0 ** -40) -> int:
    """Standard Newton–Schulz steps that take every eigenvalue of A in [low, high]
    (0 < low, high < 3) to within `tol` of 1."""
    m, steps = np.array([float(low), float(high)]), 0
    while np.max(np.abs(m - 1.0)) > tol:
        m, steps = m * (1.5 - 0.5 * m) ** 2, steps + 1
    return steps


def ns_steps_carry(n_rows: int) -> int:
    """Fast Newton–Schulz steps of the orthonormalisations *inside* the power
    iterations (and, then NS_FINISH_STEPS standard ones, of the last).

    There only the column span matters, not exact orthonormality.  A direction
    whose Gram eigenvalue a (of A = G) has not reached the band leaves the
    orthonormalisation with a norm below 1 instead of about 1, and the next
    half step multiplies it by a singular value of X.  With ||X||_F^2 ~ 1 the
    l-th singular value of X is at least the bulk edge, a = sigma^2 >= ~2 / N1
    (measured 1.87 / N1 on the simulated cohort, 4.9 / N1 on secure-gwas's
    data); 1 more step is the margin (a factor 4 on a): 6 at N1 = 1000,
    9 at 100 000.  (The rule with standard steps had a margin of 4 steps, a
    factor 26: 3 fewer — a factor 2.25 — still gave PCs within cosines
    1 - 1e-7, 5 fewer lost the tail.)"""
    return ns_fast_steps(2.0 / max(n_rows, 2), 1)


def ns_steps_eig(n_rows: int) -> int:
    """Fast Newton–Schulz steps of the small eigenproblem's orthonormalisations,
    orth(S U) (the last adds NS_FINISH_STEPS standard ones).

    The same argument as ns_steps_carry: a top-k direction of S = Zᵀ Z has
    eigenvalue lambda_i(S) = sigma_i^2 >= sigma_k^2 >= ~2 / N1 (and at most
    ||X||_F^2 ~ 1), so the Gram eigenvalue of S U is at least (2 / N1)^2; the
    same margin of 1 (11 at N1 = 1000, 17 at 100 000)."""
    return ns_fast_steps((2.0 / max(n_rows, 2)) ** 2, 1)


def ns_steps_start(m_cols: int) -> int:
    """Fast Newton–Schulz steps of the first orthonormalisation, orth(X Ω).

    Ω has N(0, 1/M3) entries, so the Gram matrix of X Ω is about I / M3 with
    ||X||_F^2 ~ 1: 2 steps more than reaching the band from 1 / M3 are the
    margin (a factor 16; 8 at M3 = 1000)."""
    return ns_fast_steps(1.0 / max(m_cols, 2), 2)


def pca(dosage, missing, sample_keep, snp_keep_pca, *, k=10, oversample=10, iters=10,
        eig_iters=30, seed=0, finish_steps=NS_FINISH_STEPS, site=None, f=28, eig="iterate"):
    """Randomized PCA exactly as ALGORITHMS.md PCA steps 2–5, in float64.

    1. X = :func:`standardise` (N1 × M3).
    2. Ω = ``np.random.default_rng(seed).standard_normal((M3, l)) / sqrt(M3)``, l = k + oversample.
    3. ``Q = orth(X Ω)``; ``iters`` times ``Q = orth(X orth(Xᵀ Q))``.  The
       orthonormalisations take :func:`ns_steps_start` (the first) and
       :func:`ns_steps_carry` (the others) fast Newton–Schulz steps; the last
       one, whose Q is the result, ``finish_steps`` standard ones after them;
       in step 4 likewise :func:`ns_steps_eig`.
    4. ``Z = Xᵀ Q``, ``S = Zᵀ Z``; ``U = I[:, :k]``; ``eig_iters`` times
       ``U = orth(S U)`` (``eig="iterate"``), or U = S's top-k eigenvectors
       (``eig="rotated"``: what mpc.linalg.eigh_rotated computes, see
       :func:`ritz_vectors`).
    5. PCs = ``Q U``.

    ``orth`` is :func:`orth` with the public bound 1 on the Gram eigenvalues
    (||X||_F^2 ~ 1).

    Parameters
    ----------
    dosage : array of int, shape (N0, M0)
    missing : array of bool or 0/1, shape (N0, M0)
    sample_keep : array of bool, shape (N0,)
    snp_keep_pca : array of bool, shape (M0,)
    k, oversample, iters, eig_iters, seed, finish_steps : int

    Returns
    -------
    PcaResult
    """
    X, alt_freq = standardise(dosage, missing, sample_keep, snp_keep_pca, site=site, f=f)
    n_kept, m_used = X.shape
    l = int(k) + int(oversample)
    if k < 1 or oversample < 0 or l > min(n_kept, m_used):
        raise InputError(f"k + oversample = {l} must be between 1 and min(N1, M3) = "
                         f"{min(n_kept, m_used)} (k = {k} >= 1, oversample = {oversample} >= 0)")
    omega = np.random.default_rng(seed).standard_normal((m_used, l)) / math.sqrt(m_used)
    # ||X||_F^2 is about 1 (standardised columns, scaled by 1/sqrt(N1 M3)), so the
    # Gram matrices of X Ω, X P and Xᵀ Q have eigenvalues below ~1: public bound 1.
    carry, start, finish = ns_steps_carry(n_kept), ns_steps_start(m_used), int(finish_steps)
    Q = orth(X @ omega, 0 if iters else finish, bound=1.0, fast=start)
    for t in range(int(iters)):
        Q = orth(X @ orth(X.T @ Q, 0, bound=1.0, fast=carry), 0 if t + 1 < iters else finish, bound=1.0,
                 fast=carry)
    Z = X.T @ Q
    S = Z.T @ Z
    eigenvalues = None
    if eig == "rotated":
        eigenvalues, U = ritz_vectors(S, k)
    elif eig == "iterate":
        U = np.eye(l)[:, :k]
        eig_steps = ns_steps_eig(n_kept)
        for t in range(int(eig_iters)):
            U = orth(S @ U, 0 if t + 1 < eig_iters else finish, bound=1.0, fast=eig_steps)
    else:
        raise ValueError(f"pca: eig must be 'iterate' or 'rotated', got {eig!r}")
    error = max(np.max(np.abs(Q.T @ Q - np.eye(l))), np.max(np.abs(U.T @ U - np.eye(k))))
    return PcaResult(pcs=Q @ U, q=Q, s=S, u=U,
                     snp_index=np.flatnonzero(np.asarray(snp_keep_pca, bool)), alt_freq=alt_freq,
                     orthonormality_error=float(error), eigenvalues=eigenvalues)


def ritz_vectors(S, k):
    """The top-k eigenpairs of a symmetric S, decreasing, each eigenvector
    signed so that its largest-magnitude coordinate is positive (ties: the
    first).  mpc.linalg.eigh_rotated finds the same pairs from Rᵀ S R with
    arbitrary signs: the secure PCs match these up to sign.

    Returns
    -------
    (values (k,), vectors (l, k))
    """
    S = np.asarray(S, dtype=np.float64)
    w, V = np.linalg.eigh((S + S.T) / 2.0)
    order = np.argsort(-w, kind="stable")[: int(k)]
    w, V = w[order], V[:, order]
    lead = V[np.argmax(np.abs(V), axis=0), np.arange(V.shape[1])]
    return w, V * np.where(lead < 0, -1.0, 1.0)


def pca_exact(dosage, missing, sample_keep, snp_keep_pca, *, k=10, site=None, f=28):
    """Top-k left singular vectors of the standardised X (numpy SVD).

    Parameters
    ----------
    dosage : array of int, shape (N0, M0)
    missing : array of bool or 0/1, shape (N0, M0)
    sample_keep : array of bool, shape (N0,)
    snp_keep_pca : array of bool, shape (M0,)
    k : int

    Returns
    -------
    ExactPcaResult
    """
    X, _ = standardise(dosage, missing, sample_keep, snp_keep_pca, site=site, f=f)
    if not 1 <= k <= min(X.shape):
        raise InputError(f"k must be between 1 and min(N1, M3) = {min(X.shape)}, got {k}")
    U, s, _ = np.linalg.svd(X, full_matrices=False)
    return ExactPcaResult(pcs=U[:, :k], singular_values=s[:k])


def principal_cosines(A, B):
    """Cosines of the principal angles between the column spans of A and B.

    Parameters
    ----------
    A : array_like, shape (n, a)
    B : array_like, shape (n, b)

    Returns
    -------
    ndarray of float64, shape (min(rank A, rank B),)
        In decreasing order, clipped to [0, 1]; 1 means a shared direction.
    """
    A, B = np.asarray(A, float), np.asarray(B, float)
    if A.ndim == 1:
        A = A[:, None]
    if B.ndim == 1:
        B = B[:, None]
    if A.shape[0] != B.shape[0]:
        raise InputError(f"A and B must have the same number of rows, got {A.shape[0]} and {B.shape[0]}")
    QA, QB = _column_basis(A), _column_basis(B)
    if QA.shape[1] == 0 or QB.shape[1] == 0:
        return np.zeros(0)
    return np.clip(np.linalg.svd(QA.T @ QB, compute_uv=False), 0.0, 1.0)


# --------------------------------------------------------------------------
# covariate-adjusted trend test
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class TrendResult:
    """Covariate-adjusted Cochran–Armitage trend test, one entry per kept SNP.

    Attributes
    ----------
    snp_index : ndarray of int64, shape (M2,)
        Input column of each SNP.
    r : ndarray of float64, shape (M2,)
        Partial correlation of genotype and phenotype given [1, PCs, covariates];
        NaN where the adjusted genotype is constant (``x'Px <= 1e-12 x'x``) or
        no genotype is observed.
    chisq : ndarray of float64, shape (M2,)
        ``N1 r^2``.
    p : ndarray of float64, shape (M2,)
        ``chi2.sf(chisq, 1)`` (0 once it underflows).
    neglog10_p : ndarray of float64, shape (M2,)
        ``-log10 p`` without underflow.
    n_samples : int
        N1 (OBS_CT).
    n_adjust : int
        Rank of C = [1, PCs, covariates].
    """

    snp_index: np.ndarray
    r: np.ndarray
    chisq: np.ndarray
    p: np.ndarray
    neglog10_p: np.ndarray
    n_samples: int
    n_adjust: int


def trend_test(dosage, missing, het, y, covariates, pcs, sample_keep, snp_keep, *,
               orthonormalise: Callable | None = None, covariate_scale=1.0, site=None, f=28):
    """Covariate-adjusted Cochran–Armitage trend test (ALGORITHMS.md "Association").

    Over the N1 kept samples: ``x_j`` is the dosage with missing calls replaced
    by the SNP's mean over the observed kept samples, ``C = [1, PCs,
    covariates]``, ``V`` an orthonormal basis of C's columns, ``P = I - V Vᵀ``,
    ``r_j = x_jᵀ P y / sqrt((x_jᵀ P x_j)(yᵀ P y))``, ``CHISQ = N1 r_j^2``,
    ``P = chi2.sf(CHISQ, 1)``.

    Before orthonormalisation the columns of C are scaled as the secure
    protocol does: the intercept to ``1/sqrt(N1)``, covariates by
    ``covariate_scale / sqrt(N1)`` (the span, and so the result, does not
    depend on the scaling when ``orthonormalise`` is exact).

    Parameters
    ----------
    dosage : array of int, shape (N0, M0)
    missing, het : array of bool or 0/1, shape (N0, M0)
    y : array of float, shape (N0,) or (N1,)
        Phenotype (0/1 case/control or quantitative); rows of dropped samples
        are ignored when N0 rows are given.
    covariates : array of float, shape (N0, c) or (N1, c), or None
        Without the intercept column (it is added here).
    pcs : array of float, shape (N1, k) or (N0, k), or None
    sample_keep : array of bool, shape (N0,)
    snp_keep : array of bool, shape (M0,)
    orthonormalise : callable, optional
        ``V = orthonormalise(C)``; default :func:`orth_exact` (SVD with rank
        handling).  Pass :func:`orth` to follow the secure protocol's
        Newton–Schulz orthonormalisation.
    covariate_scale : float or array of float, shape (c,)
        Public scale applied to the covariate columns before orthonormalisation.
    site : array of int, shape (N0,), optional
        Provider of each sample: use site-mean imputation (:func:`site_mean_imputed`)
        as the secure protocol does, instead of the pooled mean.
    f : int
        Fractional bits of the site means.

    Returns
    -------
    TrendResult
    """
    dosage, missing, het = _genotypes(dosage, missing, het)
    n_all, m_all = dosage.shape
    sample_keep = _mask("sample_keep", sample_keep, n_all)
    snp_keep = _mask("snp_keep", snp_keep, m_all)
    n_kept = int(sample_keep.sum())
    if n_kept < 2:
        raise InputError(f"the trend test needs at least 2 kept samples, got {n_kept}")
    y_kept = _per_sample("y", y, sample_keep, ndim=1)
    cov = _per_sample("covariates", covariates, sample_keep, ndim=2, allow_none=True)
    pc = _per_sample("pcs", pcs, sample_keep, ndim=2, allow_none=True)
    scale = np.broadcast_to(np.asarray(covariate_scale, float), (cov.shape[1],))
    root = 1.0 / math.sqrt(n_kept)
    C = np.column_stack([np.full(n_kept, root), pc, cov * (scale * root)])
    V = (orthonormalise or orth_exact)(C)
    n_adjust = int(np.linalg.matrix_rank(C))
    gram = V.T @ V
    idempotency = float(np.max(np.abs(gram @ gram - gram)))
    if idempotency > 1e-8:
        # V Vᵀ is not a projector: Newton–Schulz has not converged on this C
        raise InputError(f"orthonormalising [1, PCs, covariates] failed (|G^2 - G| = {idempotency:.2e} "
                         "for G = VᵀV): centre and scale the covariates (covariate_scale) or use "
                         "more Newton–Schulz iterations")

    Py = y_kept - V @ (V.T @ y_kept)
    yPy = float(Py @ Py)
    if not yPy > 1e-12 * float(y_kept @ y_kept):
        raise InputError("the phenotype is constant after adjusting for [1, PCs, covariates]")

    snp_index = np.flatnonzero(snp_keep)
    r = np.full(snp_index.size, np.nan)
    d_kept, m_kept = dosage[sample_keep], missing[sample_keep]
    imputed = None if site is None else site_mean_imputed(dosage, missing, site, f)[sample_keep]
    for start in range(0, snp_index.size, _SNP_BLOCK):
        columns = snp_index[start:start + _SNP_BLOCK]
        x, n_obs = _imputed_block(d_kept, m_kept, columns, imputed)
        Px = x - V @ (V.T @ x)
        xPx = np.einsum("ij,ij->j", Px, Px)
        xx = np.einsum("ij,ij->j", x, x)
        xPy = Px.T @ Py
        ok = (n_obs > 0) & (xPx > 1e-12 * xx)
        with np.errstate(invalid="ignore", divide="ignore"):
            r[start:start + columns.size] = np.where(ok, xPy / np.sqrt(xPx * yPy), np.nan)
    chisq = n_kept * r * r
    return TrendResult(snp_index=snp_index, r=r, chisq=chisq, p=stats.chi2.sf(chisq, 1),
                       neglog10_p=neglog10_chi2_sf(chisq, 1), n_samples=n_kept, n_adjust=n_adjust)


# --------------------------------------------------------------------------
# logistic regression
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class LogisticResult:
    """A fitted logistic regression.

    Attributes
    ----------
    terms : tuple of str, length P
        ``'const'`` first when an intercept was added, then the column names.
    beta, se, z, p : ndarray of float64, shape (P,)
        Coefficients, standard errors ``sqrt(diag(H^-1))`` with H the
        (penalised) Hessian at the optimum, Wald ``z = beta / se`` and
        two-sided ``p = 2 norm.sf(|z|)``.
    iterations : int
        Newton steps taken.
    converged : bool
    loglik : float
        Log-likelihood at ``beta`` (without the penalty).
    l2 : float
        Penalty weight used.
    n_obs : int
    """

    terms: tuple
    beta: np.ndarray
    se: np.ndarray
    z: np.ndarray
    p: np.ndarray
    iterations: int
    converged: bool
    loglik: float
    l2: float
    n_obs: int


def _log_likelihood(eta, y):
    # log(1 + e^eta) without overflow
    return float(np.sum(y * eta - np.logaddexp(0.0, eta)))


def _check_rank(design, names, intercept):
    """Raise CollinearityError for a constant or linearly dependent column."""
    n, p = design.shape
    first = 1 if intercept else 0
    for j in range(first, p):
        column = design[:, j]
        if intercept and np.all(column == column[0]):
            raise CollinearityError(f"column {names[j]!r} is constant: it duplicates the intercept")
        if not np.any(column):
            raise CollinearityError(f"column {names[j]!r} is all zero")
    if n < p:
        raise CollinearityError(f"{p} coefficients cannot be identified from {n} observations")
    norms = np.linalg.norm(design, axis=0)
    _, R, pivots = linalg.qr(design / norms, mode="economic", pivoting=True)
    diagonal = np.abs(np.diag(R))
    rank = int(np.sum(diagonal > 1e-10 * diagonal[0]))
    if rank < p:
        dependent = [names[j] for j in sorted(pivots[rank:])]
        raise CollinearityError(f"the design has rank {rank} < {p} columns: {dependent} "
                                "are linear combinations of the other columns")


def _find_separation(design, y):
    """Look for a direction b that (quasi-)separates the classes.

    Linear programme (after Konis 2007): maximise ``Σ_i s_i a_iᵀb`` subject to
    ``s_i a_iᵀb >= 0`` for every row and ``-1 <= b <= 1``, with ``s_i = 2 y_i - 1``
    and the columns scaled to max |a_ij| = 1.  For a full-rank design the
    optimum is 0 exactly when the maximum-likelihood estimate is finite.  When
    it is positive, a second programme (maximise t subject to
    ``s_i a_iᵀb >= t``) tells complete (t > 0) from quasi-complete separation.

    Returns
    -------
    None, or (complete, n_separated, weights): whether every observation can
    be separated with a positive margin, how many the first direction
    separates strictly, and that direction's weights per column.
    """
    n, p = design.shape
    scale = np.max(np.abs(design), axis=0)
    scale[scale == 0] = 1.0
    margins_matrix = (2.0 * y - 1.0)[:, None] * (design / scale)
    result = optimize.linprog(-margins_matrix.sum(axis=0), A_ub=-margins_matrix, b_ub=np.zeros(n),
                              bounds=[(-1.0, 1.0)] * p, method="highs")
    if result.status != 0 or -result.fun <= 1e-6:
        return None
    margins = margins_matrix @ result.x
    if margins.min() < -1e-7:
        return None
    objective = np.zeros(p + 1)
    objective[-1] = -1.0
    widest = optimize.linprog(objective, A_ub=np.column_stack([-margins_matrix, np.ones(n)]),
                              b_ub=np.zeros(n), bounds=[(-1.0, 1.0)] * p + [(None, 1.0)],
                              method="highs")
    complete = widest.status == 0 and -widest.fun > 1e-7
    return complete, int(np.sum(margins > 1e-7)), result.x / scale


def logistic_fit(X, y, *, intercept=True, l2=0.0, max_iter=100, tol=1e-10, names=None):
    """Logistic regression by Newton's method (ALGORITHMS.md "Logistic regression").

    Maximises ``loglik(beta) - l2/2 Σ_{j non-intercept} beta_j^2`` with
    ``loglik = Σ_i y_i eta_i - log(1 + exp(eta_i))``, ``eta = A beta``,
    A = [1, X] (or X when ``intercept`` is False).  Newton step
    ``beta += (AᵀWA + l2 D)^-1 (Aᵀ(y - mu) - l2 D beta)``, W = diag(mu(1-mu)),
    D = diag(0 for the intercept, 1 otherwise), started at 0, with step
    halving if the penalised log-likelihood decreases; stops when
    ``max |step| <= tol (1 + max |beta|)``.  Standard errors come from
    ``(AᵀWA + l2 D)^-1`` at the optimum; z and p are Wald statistics.

    Without a penalty (``l2 == 0``) the maximum-likelihood estimate must
    exist: a constant column (next to the intercept), linearly dependent
    columns, or (quasi-)complete separation of the classes raise instead of
    returning huge coefficients.

    Parameters
    ----------
    X : array of float, shape (n, q)
        Features (without an intercept column when ``intercept`` is True).
    y : array of 0/1, shape (n,)
    intercept : bool
        Prepend a column of ones (named ``'const'``), not penalised.
    l2 : float >= 0
        Ridge penalty weight on the non-intercept coefficients (on the scale
        of the summed log-likelihood, not the mean).
    max_iter : int
    tol : float
    names : sequence of str, length q, optional
        Column names; default ``x1`` .. ``xq``.

    Returns
    -------
    LogisticResult

    Raises
    ------
    CollinearityError
        (``l2 == 0``) A constant, all-zero or linearly dependent column.
    SeparationError
        (``l2 == 0``) The classes are (quasi-)completely separated.
    InputError
        Malformed input, or y with a single class.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2:
        raise InputError(f"X must be 2-D (n_obs, n_features), got shape {X.shape}")
    n, q = X.shape
    y = np.asarray(y)
    if y.shape != (n,):
        raise InputError(f"y must have shape ({n},) to match X, got {y.shape}")
    y = y.astype(np.float64)
    if not np.all((y == 0) | (y == 1)):
        raise InputError("y must hold only 0 and 1")
    if not np.all(np.isfinite(X)):
        raise InputError("X has missing or non-finite values")
    if y.min() == y.max():
        raise InputError(f"y has a single class ({int(y[0])} for all {n} observations): "
                         "the model has no finite fit")
    l2 = float(l2)
    if not l2 >= 0:
        raise InputError(f"l2 must be >= 0, got {l2}")
    if names is None:
        names = [f"x{j + 1}" for j in range(q)]
    names = [str(s) for s in names]
    if len(names) != q:
        raise InputError(f"names has {len(names)} entries for {q} columns")
    if intercept:
        design, terms = np.column_stack([np.ones(n), X]), ["const"] + names
    else:
        design, terms = X, names
    p = design.shape[1]
    if p == 0:
        raise InputError("the model has no coefficient (no column and no intercept)")
    penalty = np.full(p, l2)
    if intercept:
        penalty[0] = 0.0

    if l2 == 0.0:
        _check_rank(design, terms, intercept)
        separation = _find_separation(design, y)
        if separation is not None:
            complete, n_separated, weights = separation
            involved = [terms[j] for j in np.flatnonzero(np.abs(weights) > 1e-9 * np.abs(weights).max())]
            shown = ", ".join(involved[:8]) + (f", ... ({len(involved)} columns)" if len(involved) > 8 else "")
            if complete:
                what = f"complete separation: a linear combination of {shown} predicts all {n} outcomes"
            else:
                what = (f"quasi-complete separation: a linear combination of {shown} predicts "
                        f"{n_separated} of {n} outcomes")
            raise SeparationError(f"{what} perfectly, so the maximum-likelihood estimate is infinite; "
                                  "remove the separating columns or set l2 > 0")

    def objective(b):
        return _log_likelihood(design @ b, y) - 0.5 * float(np.sum(penalty * b * b))

    beta = np.zeros(p)
    current = objective(beta)
    converged, iterations = False, 0
    for iterations in range(1, int(max_iter) + 1):
        mu = special.expit(design @ beta)
        gradient = design.T @ (y - mu) - penalty * beta
        hessian = design.T @ (design * (mu * (1.0 - mu))[:, None]) + np.diag(penalty)
        try:
            step = linalg.solve(hessian, gradient, assume_a="pos")
        except (linalg.LinAlgError, ValueError) as exc:
            raise CollinearityError(f"the Hessian is singular at iteration {iterations}: {exc}") from exc
        scale = 1.0
        for _ in range(30):
            trial = beta + scale * step
            value = objective(trial)
            if value >= current - 1e-12 * abs(current):
                break
            scale /= 2.0
        beta, current = trial, value
        if np.max(np.abs(scale * step)) <= tol * (1.0 + np.max(np.abs(beta))):
            converged = True
            break

    eta = design @ beta
    mu = special.expit(eta)
    if not converged and l2 == 0.0 and np.min(np.minimum(mu, 1.0 - mu)) < 1e-12:
        raise SeparationError(f"Newton did not converge in {max_iter} iterations and some fitted "
                              "probabilities are 0 or 1: the classes are (quasi-)separated")
    hessian = design.T @ (design * (mu * (1.0 - mu))[:, None]) + np.diag(penalty)
    covariance = linalg.inv(hessian)
    se = np.sqrt(np.diag(covariance))
    z = beta / se
    return LogisticResult(terms=tuple(terms), beta=beta, se=se, z=z,
                          p=2.0 * stats.norm.sf(np.abs(z)), iterations=iterations,
                          converged=converged, loglik=_log_likelihood(eta, y), l2=l2, n_obs=n)


@dataclass(frozen=True)
class LogisticNullModel:
    """Null model of a logistic GWAS, fitted once on [intercept, covariates].

    Attributes
    ----------
    fit : LogisticResult
    mu : ndarray of float64, shape (N1,)
        Fitted probabilities.
    c : ndarray of float64, shape (N1, K)
        The design C it was fitted on.
    y : ndarray of float64, shape (N1,)
    """

    fit: LogisticResult
    mu: np.ndarray
    c: np.ndarray
    y: np.ndarray


def _check_has_intercept(C):
    constant = np.all(C == C[:1], axis=0) & np.any(C != 0, axis=0)
    if not np.any(constant):
        raise InputError("C must include the intercept column (a constant non-zero column)")


def logistic_null(y, C, *, max_iter=100, tol=1e-10):
    """Fit the null model ``logit P(y = 1) = C beta`` (no penalty).

    Parameters
    ----------
    y : array of 0/1, shape (n,)
    C : array of float, shape (n, K)
        Includes the intercept column.

    Returns
    -------
    LogisticNullModel
    """
    C = np.asarray(C, dtype=np.float64)
    if C.ndim != 2 or C.shape[0] == 0:
        raise InputError(f"C must be a 2-D (n_samples, K) array, got shape {C.shape}")
    _check_has_intercept(C)
    fit = logistic_fit(C, y, intercept=False, max_iter=max_iter, tol=tol,
                       names=[f"c{j}" for j in range(C.shape[1])])
    mu = special.expit(C @ fit.beta)
    return LogisticNullModel(fit=fit, mu=mu, c=C, y=np.asarray(y, dtype=np.float64))


@dataclass(frozen=True)
class ScoreResult:
    """Per-SNP logistic score test against a covariate-only null model.

    Attributes
    ----------
    snp_index : ndarray of int64, shape (M2,)
    score : ndarray of float64, shape (M2,)
        ``U = xᵀ(y - mu)``.
    variance : ndarray of float64, shape (M2,)
        ``V = xᵀWx - xᵀWC (CᵀWC)^-1 CᵀWx``.
    chisq : ndarray of float64, shape (M2,)
        ``U^2 / V``; NaN where ``V <= 1e-12 xᵀWx`` (x in the span of C) or
        no genotype is observed.
    p, neglog10_p : ndarray of float64, shape (M2,)
    n_samples : int
    null : LogisticNullModel
    """

    snp_index: np.ndarray
    score: np.ndarray
    variance: np.ndarray
    chisq: np.ndarray
    p: np.ndarray
    neglog10_p: np.ndarray
    n_samples: int
    null: LogisticNullModel


def _logistic_gwas_inputs(dosage, missing, het, y, C, sample_keep, site=None, f=28):
    """Kept rows of the genotypes, y and C, and the site-mean imputed matrix
    (kept rows) when ``site`` is given, else None (pooled-mean imputation)."""
    dosage, missing, het = _genotypes(dosage, missing, het)
    sample_keep = _mask("sample_keep", sample_keep, dosage.shape[0])
    y_kept = _per_sample("y", y, sample_keep, ndim=1)
    C_kept = _per_sample("C", C, sample_keep, ndim=2)
    imputed = None
    if site is not None:
        site = np.asarray(site)
        if site.shape != (dosage.shape[0],):
            raise InputError(f"site must have shape ({dosage.shape[0]},), got {site.shape}")
        imputed = site_mean_imputed(dosage, missing, site, f)[sample_keep]
    return dosage[sample_keep], missing[sample_keep], y_kept, C_kept, imputed


def score_test(dosage, missing, het, y, C, sample_keep, snp_keep, *, null=None, site=None, f=28):
    """Logistic score test of every kept SNP (ALGORITHMS.md "Logistic GWAS").

    With the null model fitted once (``mu``, ``W = diag(mu (1 - mu))``) and
    ``x`` the mean-imputed dosage as in the trend test (pooled mean, or the
    providers' site means with ``site``):
    ``U = xᵀ(y - mu)``, ``V = xᵀWx - xᵀWC (CᵀWC)^-1 CᵀWx``, ``CHISQ = U^2 / V``
    (1 df).

    Parameters
    ----------
    dosage : array of int, shape (N0, M0)
    missing, het : array of bool or 0/1, shape (N0, M0)
    y : array of 0/1, shape (N0,) or (N1,)
    C : array of float, shape (N0, K) or (N1, K)
        [1, PCs, covariates]: includes the intercept column.
    sample_keep : array of bool, shape (N0,)
    snp_keep : array of bool, shape (M0,)
    null : LogisticNullModel, optional
        A null model already fitted on the same kept samples.
    site : array of int, shape (N0,), optional
        Provider of each sample: use site-mean imputation (:func:`site_mean_imputed`)
        as the secure protocol does, instead of the pooled mean.
    f : int
        Fractional bits of the site means.

    Returns
    -------
    ScoreResult
    """
    d_kept, m_kept, y_kept, C_kept, imputed = _logistic_gwas_inputs(dosage, missing, het, y, C, sample_keep,
                                                                     site, f)
    snp_keep = _mask("snp_keep", snp_keep, d_kept.shape[1])
    if null is None:
        null = logistic_null(y_kept, C_kept)
    elif null.mu.shape != y_kept.shape or not (np.array_equal(null.y, y_kept)
                                               and np.array_equal(null.c, C_kept)):
        raise InputError("the null model was fitted on other samples, phenotype or covariates")
    mu = null.mu
    w = mu * (1.0 - mu)
    residual = y_kept - mu
    CWC = C_kept.T @ (C_kept * w[:, None])
    cho = linalg.cho_factor(CWC)

    snp_index = np.flatnonzero(snp_keep)
    score = np.full(snp_index.size, np.nan)
    variance = np.full(snp_index.size, np.nan)
    for start in range(0, snp_index.size, _SNP_BLOCK):
        columns = snp_index[start:start + _SNP_BLOCK]
        x, n_obs = _imputed_block(d_kept, m_kept, columns, imputed)
        x[:, n_obs == 0] = 0.0
        # residual of x after the W-weighted projection on C
        x_adjusted = x - C_kept @ linalg.cho_solve(cho, C_kept.T @ (x * w[:, None]))
        block = slice(start, start + columns.size)
        score[block] = x.T @ residual
        v = np.einsum("ij,ij,i->j", x_adjusted, x_adjusted, w)
        xWx = np.einsum("ij,ij,i->j", x, x, w)
        variance[block] = np.where((n_obs > 0) & (v > 1e-12 * xWx), v, np.nan)
    chisq = score ** 2 / variance
    return ScoreResult(snp_index=snp_index, score=score, variance=variance, chisq=chisq,
                       p=stats.chi2.sf(chisq, 1), neglog10_p=neglog10_chi2_sf(chisq, 1),
                       n_samples=y_kept.size, null=null)


@dataclass(frozen=True)
class WaldResult:
    """Per-SNP full logistic fits ``logit P(y = 1) = C gamma + x_j beta_j``.

    Attributes
    ----------
    snp_index : ndarray of int64, shape (S,)
    beta, se, z, p : ndarray of float64, shape (S,)
        The SNP's coefficient and its Wald statistics; NaN where ``status`` is
        not empty.
    status : ndarray of str, shape (S,)
        ``''`` (fitted), ``'separation'``, ``'collinear'`` (x_j constant or in
        the span of C, e.g. all calls missing) or ``'no_convergence'``,
        as PLINK 2's ERRCODE column does for failed fits.
    iterations : ndarray of int64, shape (S,)
    n_samples : int
    """

    snp_index: np.ndarray
    beta: np.ndarray
    se: np.ndarray
    z: np.ndarray
    p: np.ndarray
    status: np.ndarray
    iterations: np.ndarray
    n_samples: int


def wald_per_snp(dosage, missing, het, y, C, sample_keep, snp_indices, *, max_iter=100, tol=1e-10,
                 site=None, f=28):
    """Full per-SNP logistic fit with [C, x_j] for a list of SNPs (the top hits).

    ``x_j`` is the mean-imputed dosage over the kept samples (as in the trend
    and score tests; the providers' site means with ``site``); each fit is :func:`logistic_fit` with ``intercept=False``
    on ``[C, x_j]`` and no penalty.  A fit that fails (separation, collinear,
    no convergence) gets NaN statistics and a ``status``, not an exception.

    Parameters
    ----------
    dosage : array of int, shape (N0, M0)
    missing, het : array of bool or 0/1, shape (N0, M0)
    y : array of 0/1, shape (N0,) or (N1,)
    C : array of float, shape (N0, K) or (N1, K)
        Includes the intercept column.
    sample_keep : array of bool, shape (N0,)
    snp_indices : sequence of int, length S
        Input columns (0 .. M0-1) of the SNPs to fit.
    site : array of int, shape (N0,), optional
        Provider of each sample: site-mean imputation, as in :func:`score_test`.
    f : int
        Fractional bits of the site means.

    Returns
    -------
    WaldResult
    """
    d_kept, m_kept, y_kept, C_kept, imputed = _logistic_gwas_inputs(dosage, missing, het, y, C, sample_keep,
                                                                     site, f)
    _check_has_intercept(C_kept)
    snp_indices = np.asarray(snp_indices, dtype=np.int64).reshape(-1)
    if snp_indices.size and (snp_indices.min() < 0 or snp_indices.max() >= d_kept.shape[1]):
        raise InputError(f"snp_indices must lie in [0, {d_kept.shape[1]}), "
                         f"got values in [{snp_indices.min()}, {snp_indices.max()}]")
    size = snp_indices.size
    beta, se, z, p = (np.full(size, np.nan) for _ in range(4))
    status = np.full(size, "", dtype="<U14")
    iterations = np.zeros(size, dtype=np.int64)
    names = [f"c{j}" for j in range(C_kept.shape[1])] + ["snp"]
    for s, j in enumerate(snp_indices):
        x, n_obs = _imputed_block(d_kept, m_kept, np.array([j]), imputed)
        if n_obs[0] == 0:
            status[s] = "collinear"
            continue
        try:
            fit = logistic_fit(np.column_stack([C_kept, x]), y_kept, intercept=False,
                               max_iter=max_iter, tol=tol, names=names)
        except SeparationError:
            status[s] = "separation"
            continue
        except CollinearityError:
            status[s] = "collinear"
            continue
        iterations[s] = fit.iterations
        if not fit.converged:
            status[s] = "no_convergence"
            continue
        beta[s], se[s], z[s], p[s] = fit.beta[-1], fit.se[-1], fit.z[-1], fit.p[-1]
    return WaldResult(snp_index=snp_indices, beta=beta, se=se, z=z, p=p, status=status,
                      iterations=iterations, n_samples=y_kept.size)


# --------------------------------------------------------------------------
# survival: count tables, log-rank, Kaplan–Meier
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class CountTable:
    """At-risk and event counts per group on a public time grid.

    One provider's table holds its own subjects; the pooled table is the sum
    of the providers' tables (``table_a + table_b``).

    Attributes
    ----------
    groups : tuple, length G
    grid : ndarray of float64, shape (T,)
        Strictly increasing times.
    at_risk : ndarray of int64, shape (G, T)
        ``n_gt``: subjects of group g with time >= grid[t].
    events : ndarray of int64, shape (G, T)
        ``d_gt``: subjects of group g with an event at time grid[t].
    """

    groups: tuple
    grid: np.ndarray
    at_risk: np.ndarray
    events: np.ndarray

    def __add__(self, other):
        if not isinstance(other, CountTable):
            return NotImplemented
        if tuple(self.groups) != tuple(other.groups) or not np.array_equal(self.grid, other.grid):
            raise InputError("count tables can only be added on the same groups and time grid")
        return CountTable(groups=self.groups, grid=self.grid, at_risk=self.at_risk + other.at_risk,
                          events=self.events + other.events)


def count_table(time, event, group, groups, grid):
    """One provider's at-risk and event counts per group at each grid time.

    ``at_risk[g, t] = #{i in g : time_i >= grid[t]}`` (subjects censored at
    grid[t] are still at risk there, as in lifelines and R's survdiff);
    ``events[g, t] = #{i in g : event_i and time_i == grid[t]}``.

    Parameters
    ----------
    time : array of float, shape (n,)
        Event or censoring time of each subject.  Event times must be grid
        values; censoring times may lie anywhere.
    event : array of bool or 0/1, shape (n,)
        1 for an event, 0 for censoring.
    group : array, shape (n,)
        Group label of each subject; every label must be in ``groups``.
    groups : sequence, length G
        The distinct group labels, in the order of the table's rows.
    grid : array of float, shape (T,)
        Public, strictly increasing time grid.

    Returns
    -------
    CountTable
    """
    time = np.asarray(time, dtype=np.float64)
    n = time.shape[0]
    if time.shape != (n,):
        raise InputError(f"time must be 1-D, got shape {time.shape}")
    if not np.all(np.isfinite(time)):
        raise InputError(f"time has missing or non-finite values (row {np.flatnonzero(~np.isfinite(time))[0]})")
    event = _mask("event", event, n)
    group = np.asarray(group)
    if group.shape != (n,):
        raise InputError(f"group must have shape ({n},), got {group.shape}")
    groups = tuple(groups)
    if len(groups) == 0 or len(set(groups)) != len(groups):
        raise InputError(f"groups must be non-empty and distinct, got {groups}")
    grid = np.asarray(grid, dtype=np.float64)
    if grid.ndim != 1 or grid.size == 0 or not np.all(np.isfinite(grid)):
        raise InputError("grid must be a non-empty 1-D array of finite times")
    if np.any(np.diff(grid) <= 0):
        raise InputError("grid must be strictly increasing")
    row_of = {label: g for g, label in enumerate(groups)}
    group_row = np.array([row_of.get(label, -1) for label in group.tolist()], dtype=np.int64)
    if np.any(group_row < 0):
        i = np.flatnonzero(group_row < 0)[0]
        raise InputError(f"row {i}: group {group[i]!r} is not one of {groups}")
    position = np.searchsorted(grid, time, side="left")
    on_grid = (position < grid.size) & (grid[np.minimum(position, grid.size - 1)] == time)
    if np.any(event & ~on_grid):
        i = np.flatnonzero(event & ~on_grid)[0]
        raise InputError(f"row {i}: event time {time[i]} is not on the public time grid")

    at_risk = np.zeros((len(groups), grid.size), dtype=np.int64)
    events = np.zeros((len(groups), grid.size), dtype=np.int64)
    for g in range(len(groups)):
        members = group_row == g
        times = np.sort(time[members])
        at_risk[g] = times.size - np.searchsorted(times, grid, side="left")
        events[g] = np.bincount(position[members & event], minlength=grid.size)
    return CountTable(groups=groups, grid=grid, at_risk=at_risk, events=events)


def _tables(at_risk, events):
    at_risk, events = np.asarray(at_risk), np.asarray(events)
    if at_risk.ndim == 1:
        at_risk, events = at_risk[None, :], np.asarray(events).reshape(1, -1)
    if at_risk.ndim != 2 or at_risk.shape != events.shape or at_risk.shape[1] == 0:
        raise InputError(f"at_risk and events must be (groups, times) arrays of one shape, "
                         f"got {at_risk.shape} and {events.shape}")
    for name, arr in (("at_risk", at_risk), ("events", events)):
        if arr.dtype.kind not in "iuf" or not np.all(np.isfinite(arr)) or np.any(arr < 0) \
                or np.any(arr != np.round(arr)):
            raise InputError(f"{name} must hold non-negative integer counts")
    at_risk, events = at_risk.astype(np.int64), events.astype(np.int64)
    if np.any(events > at_risk):
        g, t = np.argwhere(events > at_risk)[0]
        raise InputError(f"group {g}, time {t}: {events[g, t]} events among {at_risk[g, t]} at risk")
    return at_risk, events


def _logrank_sums(at_risk, events):
    """Observed, expected and variance matrix of one (stratum's) table.

    ``E_g = Σ_t n_gt d_t / n_t`` over times with n_t > 0;
    ``V_gh = Σ_t d_t (n_t - d_t) / (n_t - 1) · (n_gt / n_t) (δ_gh - n_ht / n_t)``
    over times with n_t > 1 (a time with a single subject at risk has
    d_t (n_t - d_t) = 0 and contributes no variance).
    """
    n_gt, d_gt = at_risk.astype(np.float64), events.astype(np.float64)
    n_t, d_t = n_gt.sum(axis=0), d_gt.sum(axis=0)
    observed = d_gt.sum(axis=1)
    share = np.zeros_like(n_gt)
    np.divide(n_gt, n_t, out=share, where=n_t > 0)
    expected = share @ d_t
    factor = np.zeros_like(n_t)
    np.divide(d_t * (n_t - d_t), n_t - 1.0, out=factor, where=n_t > 1)
    variance = np.diag((share * factor) @ np.ones_like(n_t)) - (share * factor) @ share.T
    return observed, expected, variance


@dataclass(frozen=True)
class LogrankResult:
    """Log-rank test of equal survival across groups.

    Attributes
    ----------
    chisq : float
        ``(O - E)ᵀ V^+ (O - E)`` over the groups with E > 0, one group left out.
    df : int
        Rank of that variance matrix (G - 1 in the regular case).
    p : float
        ``chi2.sf(chisq, df)``; NaN when df == 0.
    observed, expected : ndarray of float64, shape (G,)
        Events per group and their expectation under the null.
    variance : ndarray of float64, shape (G, G)
        Covariance matrix of O - E (rows sum to 0).
    """

    chisq: float
    df: int
    p: float
    observed: np.ndarray
    expected: np.ndarray
    variance: np.ndarray


def _logrank_statistic(observed, expected, variance):
    used = np.flatnonzero(expected > 0)
    if used.size < 2:
        return LogrankResult(chisq=0.0, df=0, p=float("nan"), observed=observed,
                             expected=expected, variance=variance)
    difference = (observed - expected)[used[:-1]]
    v = variance[np.ix_(used[:-1], used[:-1])]
    eigenvalues = np.linalg.eigvalsh(v)
    df = int(np.sum(eigenvalues > 1e-10 * max(eigenvalues.max(), 0.0))) if eigenvalues.max() > 0 else 0
    if df == 0:
        return LogrankResult(chisq=0.0, df=0, p=float("nan"), observed=observed,
                             expected=expected, variance=variance)
    if df == used.size - 1:
        chisq = float(difference @ linalg.solve(v, difference, assume_a="pos"))
    else:
        chisq = float(difference @ np.linalg.pinv(v, rcond=1e-10, hermitian=True) @ difference)
    return LogrankResult(chisq=chisq, df=df, p=float(stats.chi2.sf(chisq, df)), observed=observed,
                         expected=expected, variance=variance)


def logrank(at_risk, events):
    """Log-rank test for two or more groups (ALGORITHMS.md "Log-rank").

    Parameters
    ----------
    at_risk : array of int, shape (G, T)
        ``n_gt`` of the pooled table.
    events : array of int, shape (G, T)
        ``d_gt`` of the pooled table.

    Returns
    -------
    LogrankResult
        Groups never at risk at an event time (E_g = 0, hence O_g = 0) are
        left out of the statistic and of df.  Times with nobody at risk are
        skipped; times with one subject at risk add to E but not to V.
    """
    at_risk, events = _tables(at_risk, events)
    return _logrank_statistic(*_logrank_sums(at_risk, events))


def logrank_stratified(tables: Sequence):
    """Stratified log-rank test: O - E and V summed over strata.

    Parameters
    ----------
    tables : sequence of CountTable or (at_risk, events) pairs
        One pooled table per stratum, all with the same G groups in the same
        order (their time grids may differ).

    Returns
    -------
    LogrankResult
        ``observed``, ``expected`` and ``variance`` are the sums over strata.
    """
    tables = list(tables)
    if not tables:
        raise InputError("logrank_stratified needs at least one stratum table")
    totals, n_groups, group_labels = None, None, None
    for s, table in enumerate(tables):
        if isinstance(table, CountTable):
            if group_labels is not None and tuple(table.groups) != group_labels:
                raise InputError(f"stratum {s} has groups {table.groups}, stratum 0 {group_labels}")
            group_labels = tuple(table.groups)
            at_risk, events = table.at_risk, table.events
        else:
            at_risk, events = table
        at_risk, events = _tables(at_risk, events)
        if n_groups is not None and at_risk.shape[0] != n_groups:
            raise InputError(f"stratum {s} has {at_risk.shape[0]} groups, stratum 0 has {n_groups}")
        n_groups = at_risk.shape[0]
        sums = _logrank_sums(at_risk, events)
        totals = sums if totals is None else tuple(a + b for a, b in zip(totals, sums))
    return _logrank_statistic(*totals)


@dataclass(frozen=True)
class KaplanMeierResult:
    """Kaplan–Meier survival per group at every grid time.

    Attributes
    ----------
    survival : ndarray of float64, shape (G, T)
        ``S_g(t) = Π_{u <= t} (1 - d_gu / n_gu)`` over times with n_gu > 0.
    se : ndarray of float64, shape (G, T)
        Greenwood standard error of S: ``S sqrt(Σ_{u <= t} d / (n (n - d)))``;
        NaN from the first time with n == d > 0 on (S = 0 there and the
        Greenwood sum is infinite).
    greenwood : ndarray of float64, shape (G, T)
        The cumulative Greenwood sum ``Σ d / (n (n - d))`` (the variance of
        log S); +inf from a time with n == d > 0 on.
    """

    survival: np.ndarray
    se: np.ndarray
    greenwood: np.ndarray


def kaplan_meier(at_risk, events):
    """Kaplan–Meier curves with Greenwood standard errors, per group.

    Parameters
    ----------
    at_risk : array of int, shape (G, T) or (T,)
    events : array of int, shape (G, T) or (T,)

    Returns
    -------
    KaplanMeierResult
        Arrays of shape (G, T) (G = 1 for 1-D input).  Times where a group
        has nobody at risk leave its curve unchanged.
    """
    at_risk, events = _tables(at_risk, events)
    n, d = at_risk.astype(np.float64), events.astype(np.float64)
    hazard = np.zeros_like(n)
    np.divide(d, n, out=hazard, where=n > 0)
    survival = np.cumprod(1.0 - hazard, axis=1)
    term = np.zeros_like(n)
    np.divide(d, n * (n - d), out=term, where=(d > 0) & (n > d))
    term[(d > 0) & (n == d)] = np.inf
    greenwood = np.cumsum(term, axis=1)
    se = np.full_like(n, np.nan)
    finite = np.isfinite(greenwood)
    se[finite] = survival[finite] * np.sqrt(greenwood[finite])
    return KaplanMeierResult(survival=survival, se=se, greenwood=greenwood)
