"""The plaintext reference against PLINK 2, statsmodels, lifelines and hand formulas.

Every secure protocol is tested against ``protocols.reference``; these tests
check that the reference itself computes the usual statistics.  Tolerances
are stated next to each comparison.  PLINK 2 is required: its absence is a
failure, not a skip.
"""
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
from bed_reader import open_bed, to_bed
from scipy import optimize, stats

from mpc.errors import InputError
from protocols import reference as R

SITE1 = Path("/work/shared/data/secure-gwas-1k/site1/genotypes")


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def single_blas_thread():
    """Small matrices: one BLAS thread avoids spin-waiting against other jobs on 2 cores."""
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def plink2():
    path = shutil.which("plink2")
    if path is None:
        pytest.fail("plink2 is not on PATH: the PLINK 2 comparisons cannot run")
    return path


def run_plink2(plink2, *args):
    done = subprocess.run([plink2, "--threads", "1", "--memory", "1024", *map(str, args)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise AssertionError(f"plink2 {' '.join(map(str, args))} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def read_table(path):
    """A PLINK 2 text report as {column: array of str}."""
    lines = Path(path).read_text().splitlines()
    header = lines[0].lstrip("#").split()
    rows = [line.split() for line in lines[1:] if line.strip()]
    columns = list(zip(*rows)) if rows else [()] * len(header)
    return {name: np.array(values) for name, values in zip(header, columns)}


def write_bed(path, genotypes, chrom=None, pos=None):
    """Write ALT dosages (float, NaN = missing) to a .bed; allele_1 (A1 = ALT) is 'A'."""
    n, m = genotypes.shape
    ids = [f"s{i}" for i in range(n)]
    to_bed(path, genotypes.astype(np.float32), properties={
        "fid": ids, "iid": ids,
        "sid": [f"v{j}" for j in range(m)],
        "chromosome": [str(c) for c in (chrom if chrom is not None else ["1"] * m)],
        "bp_position": pos if pos is not None else (np.arange(m) + 1) * 1000,
        "allele_1": ["A"] * m, "allele_2": ["G"] * m,
    })
    return Path(path).with_suffix("")


def random_genotypes(rng, n, m, *, missing_scale=0.08, rare_fraction=0.3):
    """ALT dosages with heterogeneous missingness and rare variants (NaN = missing)."""
    freqs = np.where(rng.uniform(size=m) < rare_fraction, rng.uniform(0.001, 0.03, m),
                     rng.uniform(0.03, 0.97, m))
    genotypes = rng.binomial(2, freqs, size=(n, m)).astype(float)
    rates = (rng.uniform(0, missing_scale, n) ** 2 / missing_scale)[:, None] \
        + (rng.uniform(0, missing_scale, m) ** 2 / missing_scale)[None, :]
    genotypes[rng.uniform(size=(n, m)) < rates] = np.nan
    return genotypes


def indicators(genotypes):
    g = R.genotype_indicators(genotypes)
    return g.dosage, g.missing, g.het


def balding_nichols(rng, n_per_population, m, fst, n_populations=3):
    """Genotypes of populations drifted from shared ancestral frequencies."""
    ancestral = rng.uniform(0.1, 0.9, m)
    a = ancestral * (1 - fst) / fst
    b = (1 - ancestral) * (1 - fst) / fst
    blocks, labels = [], []
    for k in range(n_populations):
        p = rng.beta(a, b)
        blocks.append(rng.binomial(2, p, size=(n_per_population, m)))
        labels += [k] * n_per_population
    return np.vstack(blocks).astype(float), np.array(labels)


def projector(Q):
    return Q @ Q.T


# --------------------------------------------------------------------------
# allele frequency and missingness
# --------------------------------------------------------------------------

def compare_freq_with_plink2(plink2, prefix, out, dosage, missing, alt_alleles):
    run_plink2(plink2, "--bfile", prefix, "--freq", "--missing", "--out", out)
    result = R.freq(dosage, missing)
    afreq = read_table(f"{out}.afreq")
    vmiss = read_table(f"{out}.vmiss")
    assert np.array_equal(afreq["ALT"], alt_alleles), "plink2's ALT is the .bim column 5 allele"
    assert np.array_equal(afreq["OBS_CT"].astype(int), result.obs_ct)
    assert np.array_equal(vmiss["MISSING_CT"].astype(int), result.missing_count)
    # plink2 prints 6 significant digits
    np.testing.assert_allclose(result.alt_freq, afreq["ALT_FREQS"].astype(float), rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(result.missing_rate, vmiss["F_MISS"].astype(float), rtol=1e-5, atol=1e-12)
    return result


def test_freq_matches_plink2_on_site1(plink2, tmp_path):
    with open_bed(SITE1.with_suffix(".bed")) as bed:
        values = bed.read(dtype="int8")  # counts allele_1 = .bim column 5 (count_A1=True)
        alt_alleles = np.asarray(bed.allele_1)
    dosage, missing, _ = indicators(values)
    result = compare_freq_with_plink2(plink2, SITE1, tmp_path / "site1", dosage, missing, alt_alleles)
    assert result.obs_ct.shape == (1000,)


def test_freq_matches_plink2_with_missing_calls(plink2, tmp_path):
    rng = np.random.default_rng(11)
    genotypes = random_genotypes(rng, 150, 400)
    genotypes[:, 7] = np.nan                      # a SNP with no call at all
    assert np.isnan(genotypes).mean() > 0.02
    prefix = write_bed(tmp_path / "random.bed", genotypes)
    with open_bed(prefix.with_suffix(".bed")) as bed:
        dosage, missing, _ = indicators(bed.read(dtype="int8"))
    assert np.array_equal(missing, np.isnan(genotypes))
    # plink2 reports NaN as "NaN" for the all-missing SNP: compare it apart
    run_plink2(plink2, "--bfile", prefix, "--freq", "--out", tmp_path / "r")
    result = R.freq(dosage, missing)
    afreq = read_table(tmp_path / "r.afreq")
    assert np.isnan(result.alt_freq[7]) and result.obs_ct[7] == 0
    assert afreq["OBS_CT"][7] == "0"
    keep = np.ones(400, bool)
    keep[7] = False
    np.testing.assert_allclose(result.alt_freq[keep], afreq["ALT_FREQS"][keep].astype(float), rtol=1e-5)
    run_plink2(plink2, "--bfile", prefix, "--missing", "--out", tmp_path / "r")
    vmiss = read_table(tmp_path / "r.vmiss")
    assert np.array_equal(vmiss["MISSING_CT"].astype(int), result.missing_count)
    np.testing.assert_allclose(result.missing_rate, vmiss["F_MISS"].astype(float), rtol=1e-5)


def test_genotype_indicators_and_input_checks():
    values = np.array([[0, 1, 2, -127], [2, -127, 1, 0]], dtype=np.int8)
    g = R.genotype_indicators(values)
    assert g.dosage.tolist() == [[0, 1, 2, 0], [2, 0, 1, 0]]
    assert g.missing.tolist() == [[False, False, False, True], [False, True, False, False]]
    assert g.het.tolist() == [[False, True, False, False], [False, False, True, False]]
    same = R.genotype_indicators(np.where(values == -127, np.nan, values.astype(float)))
    assert np.array_equal(same.dosage, g.dosage) and np.array_equal(same.missing, g.missing)
    with pytest.raises(InputError, match="0, 1, 2"):
        R.genotype_indicators(np.array([[3]], dtype=np.int8))
    with pytest.raises(InputError, match="0 where the call is missing"):
        R.freq(np.array([[1]], dtype=np.uint8), np.array([[1]]))
    with pytest.raises(InputError, match="integer"):
        R.freq(np.array([[1.0]]), np.array([[0]]))
    with pytest.raises(InputError, match="het must be 1 exactly"):
        R.qc(g.dosage, g.missing, ~g.het)


# --------------------------------------------------------------------------
# quality control
# --------------------------------------------------------------------------

def test_qc_keep_sets_match_plink2(plink2, tmp_path):
    """PLINK 2 applies --mind first, then --geno and --maf on the kept samples."""
    rng = np.random.default_rng(5)
    n, m = 300, 500
    genotypes = random_genotypes(rng, n, m, missing_scale=0.1)
    # exact ties at the --mind bound: 25 = 0.05 * 500 missing calls is kept, 26 is not
    for i, count in ((0, 25), (1, 26)):
        row = ~np.isnan(genotypes[i])
        observed = np.flatnonzero(row)
        target = count - (m - row.sum())
        if target > 0:
            genotypes[i, observed[:target]] = np.nan
        else:
            genotypes[i, np.flatnonzero(~row)[:-target]] = 1.0
    prefix = write_bed(tmp_path / "qc.bed", genotypes)
    thresholds = {"mind": 0.05, "geno": 0.04, "maf": 0.02}
    run_plink2(plink2, "--bfile", prefix, "--mind", thresholds["mind"], "--geno", thresholds["geno"],
               "--maf", thresholds["maf"], "--hardy", "--write-samples", "--write-snplist",
               "--out", tmp_path / "qc")
    dosage, missing, het = indicators(genotypes)
    result = R.qc(dosage, missing, het, **thresholds)

    plink_samples = read_table(tmp_path / "qc.id")["IID"]
    plink_snps = np.array((tmp_path / "qc.snplist").read_text().split())
    assert result.sample_missing[0] == 25 and result.sample_keep[0]
    assert result.sample_missing[1] == 26 and result.sample_reason[1] == "mind"
    assert np.array_equal(np.array([f"s{i}" for i in np.flatnonzero(result.sample_keep)]), plink_samples)
    assert np.array_equal(np.array([f"v{j}" for j in np.flatnonzero(result.snp_keep)]), plink_snps)
    assert set(result.snp_reason) == {"", "geno", "maf"} and set(result.sample_reason) == {"", "mind"}

    # --hardy reports genotype counts of the post---mind samples: (c0, c1, c2) agree
    hardy = read_table(tmp_path / "qc.hardy")
    index = np.array([int(s[1:]) for s in hardy["ID"]])
    assert np.all(hardy["A1"] == "G"), "--hardy's A1 is REF here, so HOM_A1_CT counts ALT dosage 0"
    counts = np.column_stack([hardy["HOM_A1_CT"], hardy["HET_A1_CT"], hardy["TWO_AX_CT"]]).astype(int)
    assert np.array_equal(counts, result.genotype_counts[index])

    # the order matters on this data: SNP QC over all samples would give other keep-sets
    geno_first = R.qc(dosage, missing, het, geno=thresholds["geno"], maf=thresholds["maf"])
    assert not np.array_equal(geno_first.snp_keep, result.snp_keep)


def test_qc_integer_threshold_rules():
    # 6 samples x 6 SNPs; rows are samples
    genotypes = np.array([
        [1, 1, 0, 2, 0, 0],        # het 2/6 = 1/3 exactly
        [1, 1, 1, 1, 1, 1],        # het 1
        [0, 0, 0, 0, 0, 0],        # het 0
        [1, np.nan, 0, 2, 0, 1],   # het 2/5
        [np.nan, np.nan, 0, 1, 2, 0],  # 2 missing
        [1, 2, 0, 1, 0, 0],        # het 1/3, phenotype missing
    ])
    dosage, missing, het = indicators(genotypes)
    pheno_missing = np.array([0, 0, 0, 0, 0, 1], bool)
    result = R.qc(dosage, missing, het, mind=1 / 6, het_min=1 / 3, het_max=1 / 3 + 0.1,
                  pheno_missing=pheno_missing)
    # 1/3 is not a multiple of 2^-28: rounded down for het_min, so 2/6 is kept
    assert result.sample_reason.tolist() == ["", "het", "het", "", "mind", "pheno"]
    assert result.thresholds["mind_max_missing"] == 1
    np.testing.assert_allclose(result.het_rate, [1 / 3, 1, 0, 0.4, 0.25, 1 / 3])
    upper = R.qc(dosage, missing, het, het_max=1 / 3)   # rounded up: 1/3 kept, 0.4 not
    assert upper.sample_keep.tolist() == [True, False, True, False, True, True]
    # het_sd over the samples passing mind (all here)
    rates = result.het_rate
    spread = R.qc(dosage, missing, het, het_sd=1.0)
    expected = np.abs(rates - rates.mean()) <= rates.std(ddof=1)
    assert np.array_equal(spread.sample_keep, expected) and not expected.all()

    # SNP rules over the kept samples (0 and 3): SNP 1 is missing in one of two
    kept = R.qc(dosage, missing, het, mind=1 / 6, het_min=1 / 3, het_max=1 / 3 + 0.1,
                pheno_missing=pheno_missing, geno=0.49, maf=0.25)
    assert kept.n_samples_kept == 2
    assert kept.snp_missing.tolist() == [0, 1, 0, 0, 0, 0]
    assert kept.alt_freq.tolist() == [0.5, 0.5, 0.0, 1.0, 0.0, 0.25]
    # SNP 5 has maf 0.25 exactly: kept (ties kept); 0.0 and 1.0 fail
    assert kept.snp_reason.tolist() == ["", "geno", "maf", "maf", "maf", ""]


def test_qc_hardy_weinberg_chi2_and_threshold():
    rng = np.random.default_rng(3)
    genotypes = rng.binomial(2, rng.uniform(0.05, 0.95, 300), size=(400, 300)).astype(float)
    genotypes[:150, :40] = 1.0                                  # excess heterozygotes
    genotypes[rng.uniform(size=genotypes.shape) < 0.01] = np.nan
    dosage, missing, het = indicators(genotypes)
    result = R.qc(dosage, missing, het, hwe=1e-4)
    # Pearson chi-square on the three genotype classes with one estimated allele frequency
    for j in range(0, 300, 7):
        observed = result.genotype_counts[j].astype(float)
        n = observed.sum()
        q = (observed[1] + 2 * observed[2]) / (2 * n)
        expected = n * np.array([(1 - q) ** 2, 2 * q * (1 - q), q ** 2])
        pearson = stats.chisquare(observed, expected, ddof=1).statistic
        assert result.hwe_chi2[j] == pytest.approx(pearson, rel=1e-10)
    limit = stats.chi2.isf(1e-4, 1)
    assert np.array_equal(result.snp_keep, result.hwe_chi2 <= limit)
    assert (result.snp_reason == "hwe").sum() >= 30
    # monomorphic SNP: chi-square 0, kept
    mono = R.qc(np.zeros((5, 1), np.uint8), np.zeros((5, 1), bool), np.zeros((5, 1), bool), hwe=0.5)
    assert mono.hwe_chi2[0] == 0.0 and mono.snp_keep[0]


# --------------------------------------------------------------------------
# PCA
# --------------------------------------------------------------------------

def test_ld_thin_positional_rule():
    chrom = np.array(["1", "1", "1", "1", "1", "2", "2", "2"])
    pos = np.array([100, 50_000, 100_100, 150_000, 200_099, 100, 99_000, 100_100])
    keep = np.array([1, 1, 1, 1, 1, 1, 1, 0], bool)
    thinned = R.ld_thin(chrom, pos, keep, dist=100_000)
    # 100 kept; 100_100 is exactly 100_000 after it (kept); 200_099 < 200_100 not; new chromosome kept
    assert thinned.tolist() == [True, False, True, False, False, True, False, False]
    with pytest.raises(InputError, match="sorted"):
        R.ld_thin(chrom, pos[::-1], np.ones(8, bool))
    with pytest.raises(InputError, match="reappears"):
        R.ld_thin(["1", "2", "1"], [1, 2, 3], np.ones(3, bool))


def test_orth_newton_schulz_matches_exact():
    rng = np.random.default_rng(2)
    Y = rng.standard_normal((300, 12)) @ np.diag(np.linspace(1, 8, 12))  # condition ~8
    Q = R.orth(Y)
    exact = R.orth_exact(Y)
    assert np.max(np.abs(Q.T @ Q - np.eye(12))) < 1e-12
    assert np.max(np.abs(projector(Q) - projector(exact))) < 1e-12
    assert np.max(np.abs(Q - exact)) < 1e-12          # the same polar factor, column for column
    # rank-deficient: 3 of 8 columns are combinations of the first 5
    base = rng.standard_normal((300, 5))
    deficient = np.column_stack([base, base @ rng.standard_normal((5, 3))])
    Qd = R.orth(deficient)
    basis = np.linalg.svd(base, full_matrices=False)[0]
    assert np.max(np.abs(projector(Qd) - projector(basis))) < 1e-9
    assert np.max(np.abs(projector(R.orth_exact(deficient)) - projector(basis))) < 1e-12
    assert np.array_equal(R.orth(np.zeros((4, 2))), np.zeros((4, 2)))
    # documented limit: 24 steps need the Gram matrix's eigenvalues above ~1e-7 of its trace
    spread = rng.standard_normal((300, 12)) @ np.diag(np.logspace(0, -3, 12))
    assert np.max(np.abs(projector(R.orth(spread)) - projector(R.orth_exact(spread)))) < 1e-12


def test_pca_recovers_population_structure():
    rng = np.random.default_rng(7)
    genotypes, population = balding_nichols(rng, 200, 2000, fst=0.02)
    genotypes[rng.uniform(size=genotypes.shape) < 0.005] = np.nan
    dosage, missing, het = indicators(genotypes)
    sample_keep = np.ones(600, bool)
    sample_keep[::50] = False                       # some samples dropped by QC
    snp_keep = np.ones(2000, bool)
    snp_keep[::9] = False

    result = R.pca(dosage, missing, sample_keep, snp_keep, k=10, seed=1)
    exact = R.pca_exact(dosage, missing, sample_keep, snp_keep, k=10)
    assert result.pcs.shape == (588, 10) and result.q.shape == (588, 20)
    assert np.max(np.abs(result.pcs.T @ result.pcs - np.eye(10))) < 1e-10
    assert result.orthonormality_error < 1e-12
    # the two real axes (3 populations) lie in the randomized subspace
    cosines = R.principal_cosines(exact.pcs[:, :2], result.pcs)
    assert cosines.min() >= 0.9999
    assert exact.singular_values[1] > 1.5 * exact.singular_values[2]
    # the PCs separate the populations
    labels = population[sample_keep]
    design = np.column_stack([np.ones(588), result.pcs])
    for k in range(3):
        fitted = design @ np.linalg.lstsq(design, labels == k, rcond=None)[0]
        assert np.corrcoef(fitted, labels == k)[0, 1] ** 2 > 0.95
    # same seed, same PCs; standardisation as ALGORITHMS.md step 2
    again = R.pca(dosage, missing, sample_keep, snp_keep, k=10, seed=1)
    assert np.array_equal(again.pcs, result.pcs)
    X, alt_freq = R.standardise(dosage, missing, sample_keep, snp_keep)
    d = genotypes[np.ix_(sample_keep, snp_keep)]
    f = np.nanmean(d, axis=0) / 2
    direct = np.nan_to_num((d - 2 * f) / np.sqrt(2 * f * (1 - f)) / np.sqrt(588 * snp_keep.sum()))
    assert np.max(np.abs(X - direct)) < 1e-14
    assert np.allclose(alt_freq, f, rtol=1e-14)


def test_principal_cosines():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((50, 3))
    B = np.column_stack([A @ rng.standard_normal((3, 2)), rng.standard_normal(50)])
    cosines = R.principal_cosines(A, B)
    assert cosines[:2] == pytest.approx([1.0, 1.0], abs=1e-12) and cosines[2] < 0.9


# --------------------------------------------------------------------------
# trend test
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def association_data():
    """600 samples x 300 SNPs, 2 covariates, a quantitative and a binary phenotype."""
    rng = np.random.default_rng(21)
    genotypes, population = balding_nichols(rng, 200, 300, fst=0.05)
    genotypes[rng.uniform(size=genotypes.shape) < 0.003] = np.nan
    n = genotypes.shape[0]
    covariates = np.column_stack([rng.normal(50, 10, n), rng.integers(0, 2, n)])
    imputed = np.where(np.isnan(genotypes), np.nanmean(genotypes, axis=0), genotypes)
    signal = imputed[:, :10] @ rng.normal(0, 0.3, 10)
    quantitative = signal + 0.02 * covariates[:, 0] + 0.5 * population + rng.normal(0, 1, n)
    eta = -0.5 + 0.6 * (signal - signal.mean()) + 0.3 * covariates[:, 1] + 0.3 * population
    binary = (rng.uniform(size=n) < 1 / (1 + np.exp(-eta))).astype(float)
    sample_keep = np.ones(n, bool)
    sample_keep[[3, 77, 400]] = False
    return dict(genotypes=genotypes, covariates=covariates, quantitative=quantitative, binary=binary,
                sample_keep=sample_keep, snp_keep=np.ones(300, bool))


def rng_normal(size, seed=99):
    return np.random.default_rng(seed).standard_normal(size)


def imputed_kept(data):
    g = data["genotypes"][data["sample_keep"]]
    return np.where(np.isnan(g), np.nanmean(g, axis=0), g)


def test_trend_without_adjustment_is_pearson(association_data):
    data = association_data
    dosage, missing, het = indicators(data["genotypes"])
    result = R.trend_test(dosage, missing, het, data["binary"], None, None,
                          data["sample_keep"], data["snp_keep"])
    x, y = imputed_kept(data), data["binary"][data["sample_keep"]]
    pearson = np.array([np.corrcoef(x[:, j], y)[0, 1] for j in range(300)])
    assert np.max(np.abs(result.r - pearson)) < 1e-13
    assert np.allclose(result.chisq, 597 * pearson ** 2, rtol=1e-11)
    assert np.allclose(result.p, stats.chi2.sf(result.chisq, 1), rtol=1e-12)
    assert np.allclose(result.neglog10_p, -np.log10(result.p), rtol=1e-10)


def test_trend_with_covariates_is_partial_correlation(association_data):
    data = association_data
    dosage, missing, het = indicators(data["genotypes"])
    keep = data["sample_keep"]
    pcs = R.pca(dosage, missing, keep, data["snp_keep"], k=3, oversample=5).pcs
    result = R.trend_test(dosage, missing, het, data["quantitative"], data["covariates"], pcs,
                          keep, data["snp_keep"])
    x, y = imputed_kept(data), data["quantitative"][keep]
    C = np.column_stack([np.ones(keep.sum()), pcs, data["covariates"][keep]])

    def residual(v):
        return v - C @ np.linalg.lstsq(C, v, rcond=None)[0]

    ry = residual(y)
    partial = np.array([residual(x[:, j]) @ ry / np.sqrt(residual(x[:, j]) @ residual(x[:, j]) * (ry @ ry))
                        for j in range(300)])
    assert np.max(np.abs(result.r - partial)) < 1e-12
    assert result.n_samples == 597 and result.n_adjust == 6
    # the secure protocol's Newton–Schulz orthonormalisation gives the same r
    ns = R.trend_test(dosage, missing, het, data["quantitative"], data["covariates"], pcs,
                      keep, data["snp_keep"], orthonormalise=R.orth, covariate_scale=[0.02, 1.0])
    assert np.max(np.abs(ns.r - result.r)) < 1e-10
    # ... but only on covariates of moderate scale: a year of birth (1950 +- 10) unscaled breaks it
    birth_year = np.column_stack([1950 + 10 * rng_normal(keep.sum())])
    with pytest.raises(InputError, match="Newton"):
        R.trend_test(dosage, missing, het, data["quantitative"], birth_year, pcs, keep,
                     data["snp_keep"], orthonormalise=R.orth)
    exact_year = R.trend_test(dosage, missing, het, data["quantitative"], birth_year, pcs, keep,
                              data["snp_keep"])
    scaled_year = R.trend_test(dosage, missing, het, data["quantitative"], (birth_year - 1950) / 10, pcs,
                               keep, data["snp_keep"], orthonormalise=R.orth)
    assert np.max(np.abs(exact_year.r - scaled_year.r)) < 1e-10
    # N0-row and N1-row inputs are the same thing
    again = R.trend_test(dosage, missing, het, data["quantitative"][keep], data["covariates"][keep],
                         pcs, keep, data["snp_keep"])
    assert np.array_equal(again.r, result.r)


def test_trend_matches_plink2_glm(plink2, tmp_path, association_data):
    data = association_data
    genotypes, keep = data["genotypes"], data["sample_keep"]
    dosage, missing, het = indicators(genotypes)
    pcs = R.pca(dosage, missing, keep, data["snp_keep"], k=3, oversample=5).pcs
    result = R.trend_test(dosage, missing, het, data["quantitative"], data["covariates"], pcs,
                          keep, data["snp_keep"])
    prefix = write_bed(tmp_path / "assoc.bed", genotypes)
    ids = [f"s{i}" for i in np.flatnonzero(keep)]
    with open(tmp_path / "pheno.txt", "w") as fh:
        fh.write("#FID\tIID\tY\n")
        for sample, value in zip(ids, data["quantitative"][keep]):
            fh.write(f"{sample}\t{sample}\t{float(value)!r}\n")
    with open(tmp_path / "covar.txt", "w") as fh:
        fh.write("#FID\tIID\tPC1\tPC2\tPC3\tAGE\tSEX\n")
        for sample, row in zip(ids, np.column_stack([pcs, data["covariates"][keep]])):
            fh.write(f"{sample}\t{sample}\t" + "\t".join(repr(float(v)) for v in row) + "\n")
    (tmp_path / "keep.txt").write_text("".join(f"{s}\t{s}\n" for s in ids))
    run_plink2(plink2, "--bfile", prefix, "--keep", tmp_path / "keep.txt", "--pheno", tmp_path / "pheno.txt",
               "--covar", tmp_path / "covar.txt", "--glm", "hide-covar", "--covar-variance-standardize", "--out", tmp_path / "glm")
    glm = read_table(tmp_path / "glm.Y.glm.linear")
    assert np.array_equal(glm["ID"], [f"v{j}" for j in range(300)])
    plink_p = glm["P"].astype(float)
    # PLINK 2 regresses on the observed calls only (OBS_CT varies); we mean-impute
    correlation = np.corrcoef(-np.log10(plink_p), result.neglog10_p)[0, 1]
    assert correlation >= 0.999
    # plink2 --glm's A1 (the tested allele) is the minor allele, not always ALT
    beta_alt = np.where(glm["A1"] == glm["ALT"], 1.0, -1.0) * glm["BETA"].astype(float)
    clear = result.chisq > 1
    assert np.all(np.sign(beta_alt[clear]) == np.sign(result.r[clear]))


def write_sample_table(path, ids, header, rows):
    with open(path, "w") as fh:
        fh.write("#FID\tIID\t" + "\t".join(header) + "\n")
        for sample, row in zip(ids, rows):
            fh.write(f"{sample}\t{sample}\t" + "\t".join(repr(float(v)) for v in np.atleast_1d(row)) + "\n")


def test_binary_phenotype_matches_plink2(plink2, tmp_path, association_data):
    """Trend test and per-SNP Wald fits on a case/control phenotype, against PLINK 2.

    PLINK 2 reads 1/2 as control/case and runs logistic regression (Firth
    fallback unless no-firth); 0/1 would read as missing/control.  Coded 3/4
    the same phenotype is quantitative and gets linear regression.  No
    missing calls here, so PLINK 2's per-SNP sample sets equal ours.
    """
    data = association_data
    genotypes = np.nan_to_num(data["genotypes"], nan=0.0)
    keep, y = data["sample_keep"], data["binary"]
    dosage, missing, het = indicators(genotypes)
    ids = [f"s{i}" for i in np.flatnonzero(keep)]
    prefix = write_bed(tmp_path / "binary.bed", genotypes)
    covariates = data["covariates"][keep]
    write_sample_table(tmp_path / "covar.txt", ids, ["AGE", "SEX"], covariates)
    (tmp_path / "keep.txt").write_text("".join(f"{s}\t{s}\n" for s in ids))
    common = ["--bfile", prefix, "--keep", tmp_path / "keep.txt", "--covar", tmp_path / "covar.txt",
              "--covar-variance-standardize"]

    write_sample_table(tmp_path / "quant.txt", ids, ["Y"], y[keep] + 3)
    run_plink2(plink2, *common, "--pheno", tmp_path / "quant.txt", "--glm", "hide-covar",
               "--out", tmp_path / "linear")
    linear = read_table(tmp_path / "linear.Y.glm.linear")
    trend = R.trend_test(dosage, missing, het, y, data["covariates"], None, keep, data["snp_keep"])
    assert np.corrcoef(-np.log10(linear["P"].astype(float)), trend.neglog10_p)[0, 1] >= 0.9999

    write_sample_table(tmp_path / "case.txt", ids, ["Y"], y[keep] + 1)
    run_plink2(plink2, *common, "--pheno", tmp_path / "case.txt", "--glm", "hide-covar", "no-firth",
               "--out", tmp_path / "logistic")
    logistic = read_table(tmp_path / "logistic.Y.glm.logistic")
    top = np.argsort(trend.p)[:8]
    C = np.column_stack([np.ones(keep.sum()), covariates])
    wald = R.wald_per_snp(dosage, missing, het, y, C, keep, top)
    sign = np.where(logistic["A1"] == logistic["ALT"], 1.0, -1.0)[top]
    plink_beta = sign * np.log(logistic["OR"].astype(float)[top])
    assert np.all(wald.status == "")
    # PLINK 2 prints 6 significant digits
    assert np.allclose(wald.beta, plink_beta, rtol=1e-5, atol=1e-6)
    assert np.allclose(wald.se, logistic["LOG(OR)_SE"].astype(float)[top], rtol=1e-5)
    assert np.allclose(wald.p, logistic["P"].astype(float)[top], rtol=1e-4)


def test_trend_p_values_do_not_underflow():
    neglog = R.neglog10_chi2_sf(np.array([0.0, 10.0, 2000.0, 1e5]))
    assert neglog[0] == 0.0
    assert neglog[1] == pytest.approx(-np.log10(stats.chi2.sf(10.0, 1)), rel=1e-12)
    assert np.all(np.isfinite(neglog)) and neglog[3] > 2e4


# --------------------------------------------------------------------------
# logistic regression
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def breast_cancer():
    from sklearn.datasets import load_breast_cancer
    data = load_breast_cancer()
    X = (data.data - data.data.mean(axis=0)) / data.data.std(axis=0)
    return X, data.target.astype(float), list(data.feature_names)


def test_logistic_matches_statsmodels(breast_cancer):
    import statsmodels.api as sm
    X, y, names = breast_cancer
    mean_features = [j for j, name in enumerate(names) if name.startswith("mean ")]
    assert len(mean_features) == 10
    Xm = X[:, mean_features]
    fit = R.logistic_fit(Xm, y, names=[names[j] for j in mean_features])
    model = sm.Logit(y, sm.add_constant(Xm)).fit(method="newton", tol=1e-12, maxiter=100, disp=0)
    assert fit.converged and fit.terms[0] == "const" and fit.terms[1] == "mean radius"
    assert np.max(np.abs(fit.beta - model.params)) < 1e-6
    assert np.max(np.abs(fit.se / model.bse - 1)) < 1e-6
    assert np.max(np.abs(fit.p / model.pvalues - 1)) < 1e-6
    assert fit.loglik == pytest.approx(model.llf, rel=1e-12)
    no_intercept = R.logistic_fit(Xm, y, intercept=False)
    model0 = sm.Logit(y, Xm).fit(method="newton", tol=1e-12, maxiter=100, disp=0)
    assert np.max(np.abs(no_intercept.beta - model0.params)) < 1e-6


def test_logistic_refuses_separation_and_collinearity(breast_cancer):
    X, y, _ = breast_cancer
    with pytest.raises(R.SeparationError, match="complete separation"):
        R.logistic_fit(X, y)                                    # all 30 features separate
    with pytest.raises(R.CollinearityError, match="constant"):
        R.logistic_fit(np.column_stack([X[:, :3], np.full(len(y), 2.0)]), y)
    with pytest.raises(R.CollinearityError, match="linear combinations"):
        R.logistic_fit(np.column_stack([X[:, :3], X[:, 0] - 2 * X[:, 1]]), y)
    with pytest.raises(InputError, match="single class"):
        R.logistic_fit(X[:, :3], np.ones(len(y)))
    # quasi-complete separation: one feature orders the classes except for ties at 0
    rng = np.random.default_rng(4)
    x = rng.normal(size=200)
    labels = (x > 0).astype(float)
    x[:20] = 0.0
    labels[:10], labels[10:20] = 1.0, 0.0
    with pytest.raises(R.SeparationError, match="quasi-complete"):
        R.logistic_fit(np.column_stack([x, rng.normal(size=200)]), labels)
    assert issubclass(R.SeparationError, InputError) and issubclass(R.CollinearityError, InputError)


def test_logistic_l2_penalty_matches_direct_optimisation(breast_cancer):
    from sklearn.linear_model import LogisticRegression
    X, y, _ = breast_cancer
    fit = R.logistic_fit(X, y, l2=2.0)                       # separable data: finite with a penalty
    assert fit.converged and np.all(np.isfinite(fit.se))
    design = np.column_stack([np.ones(len(y)), X])

    def objective(b):
        eta = design @ b
        return -np.sum(y * eta - np.logaddexp(0, eta)) + 1.0 * np.sum(b[1:] ** 2)

    def gradient(b):
        g = -design.T @ (y - 1 / (1 + np.exp(-design @ b)))
        g[1:] += 2.0 * b[1:]
        return g

    direct = optimize.minimize(objective, np.zeros(31), jac=gradient, method="BFGS",
                               options={"gtol": 1e-10, "maxiter": 10000})
    assert np.max(np.abs(fit.beta - direct.x)) < 1e-6
    # scikit-learn: C = 1 / l2, intercept not penalised; its Newton solver agrees closely
    sk = LogisticRegression(C=0.5, tol=1e-14, max_iter=1000, solver="newton-cholesky").fit(X, y)
    assert np.max(np.abs(fit.beta - np.r_[sk.intercept_, sk.coef_[0]])) < 1e-10
    # SEs from the penalised Hessian
    mu = 1 / (1 + np.exp(-design @ fit.beta))
    hessian = design.T @ (design * (mu * (1 - mu))[:, None]) + np.diag(np.r_[0.0, np.full(30, 2.0)])
    assert np.allclose(fit.se, np.sqrt(np.diag(np.linalg.inv(hessian))), rtol=1e-10)
    # a constant column is fine with a penalty (its coefficient is shrunk, identified)
    assert R.logistic_fit(np.column_stack([X[:, :3], np.ones(len(y))]), y, l2=1.0).converged


@pytest.fixture(scope="module")
def logistic_gwas(association_data):
    data = association_data
    dosage, missing, het = indicators(data["genotypes"])
    keep = data["sample_keep"]
    n1 = keep.sum()
    C = np.column_stack([np.ones(n1), data["covariates"][keep]])
    C[:, 1] = (C[:, 1] - 50) / 10
    return data, dosage, missing, het, C


def test_score_test_matches_statsmodels(logistic_gwas):
    import statsmodels.api as sm
    data, dosage, missing, het, C = logistic_gwas
    keep, y = data["sample_keep"], data["binary"]
    result = R.score_test(dosage, missing, het, y, C, keep, data["snp_keep"])
    null_model = sm.GLM(y[keep], C, family=sm.families.Binomial()).fit(tol=1e-12)
    assert np.max(np.abs(result.null.fit.beta - null_model.params)) < 1e-8
    x = imputed_kept(data)
    for j in range(0, 300, 15):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            chi2, p, df = null_model.model.score_test(null_model.params, exog_extra=x[:, [j]])
        assert result.chisq[j] == pytest.approx(np.ravel(chi2)[0], rel=1e-7)
        assert result.p[j] == pytest.approx(np.ravel(p)[0], rel=1e-6)
    # the same from the definitions, with the score and the information written out
    mu = result.null.mu
    w = mu * (1 - mu)
    j = 4
    info = np.column_stack([C, x[:, j]]).T @ (np.column_stack([C, x[:, j]]) * w[:, None])
    schur = info[-1, -1] - info[-1, :-1] @ np.linalg.solve(info[:-1, :-1], info[:-1, -1])
    assert result.variance[j] == pytest.approx(schur, rel=1e-10)
    assert result.score[j] == pytest.approx(x[:, j] @ (y[keep] - mu), rel=1e-10)


def test_wald_per_snp_matches_statsmodels(logistic_gwas):
    import statsmodels.api as sm
    data, dosage, missing, het, C = logistic_gwas
    keep, y = data["sample_keep"], data["binary"]
    top = [0, 3, 8, 150, 299]
    result = R.wald_per_snp(dosage, missing, het, y, C, keep, top)
    x = imputed_kept(data)
    for s, j in enumerate(top):
        model = sm.Logit(y[keep], np.column_stack([C, x[:, j]])).fit(method="newton", tol=1e-12, disp=0)
        assert result.status[s] == ""
        assert result.beta[s] == pytest.approx(model.params[-1], abs=1e-8)
        assert result.se[s] == pytest.approx(model.bse[-1], rel=1e-7)
        assert result.p[s] == pytest.approx(model.pvalues[-1], rel=1e-6)
    # a SNP that separates the cases from the controls is reported, not fitted
    genotypes = data["genotypes"].copy()
    genotypes[:, 5] = np.where(data["binary"] == 1, 2.0, 0.0)
    genotypes[:, 6] = np.nan
    d2, m2, h2 = indicators(genotypes)
    flagged = R.wald_per_snp(d2, m2, h2, y, C, keep, [5, 6, 7])
    assert flagged.status.tolist() == ["separation", "collinear", ""]
    assert np.isnan(flagged.beta[:2]).all() and np.isfinite(flagged.beta[2])
    with pytest.raises(InputError, match="intercept"):
        R.wald_per_snp(dosage, missing, het, y, C[:, 1:], keep, [0])


# --------------------------------------------------------------------------
# log-rank and Kaplan–Meier
# --------------------------------------------------------------------------

def survival_table(time, event, group, groups=None, grid=None):
    groups = sorted(set(np.asarray(group).tolist())) if groups is None else groups
    grid = np.unique(time) if grid is None else grid
    return R.count_table(time, event, group, groups, grid)


def test_logrank_two_groups_matches_lifelines():
    from lifelines.datasets import load_rossi, load_waltons
    from lifelines.statistics import logrank_test
    for frame, time, event, group in ((load_waltons(), "T", "E", "group"),
                                      (load_rossi(), "week", "arrest", "fin")):
        t, e, g = frame[time].to_numpy(float), frame[event].to_numpy(), frame[group].to_numpy()
        labels = sorted(set(g))
        table = survival_table(t, e, g, labels)
        result = R.logrank(table.at_risk, table.events)
        a, b = g == labels[0], g == labels[1]
        expected = logrank_test(t[a], t[b], e[a], e[b])
        assert result.df == 1
        assert result.chisq == pytest.approx(expected.test_statistic, rel=1e-10)
        assert result.p == pytest.approx(expected.p_value, rel=1e-9)
        assert result.observed.tolist() == [e[a].sum(), e[b].sum()]
        assert result.expected.sum() == pytest.approx(e.sum(), rel=1e-12)
        # the grid of event times only gives the same table rows at those times
        events_only = survival_table(t, e, g, labels, grid=np.unique(t[e == 1]))
        assert R.logrank(events_only.at_risk, events_only.events).chisq == pytest.approx(result.chisq, rel=1e-12)


def test_logrank_several_groups_matches_lifelines():
    from lifelines.datasets import load_lung, load_rossi
    from lifelines.statistics import multivariate_logrank_test
    lung = load_lung().dropna(subset=["ph.ecog"])
    rossi = load_rossi()
    rossi["prio_band"] = np.minimum(rossi["prio"] // 3, 3)
    for frame, time, event, group in ((lung, "time", "status", "ph.ecog"),      # ecog 3 has 1 subject
                                      (rossi, "week", "arrest", "prio_band")):
        t, e, g = frame[time].to_numpy(float), frame[event].to_numpy(), frame[group].to_numpy()
        table = survival_table(t, e, g)
        result = R.logrank(table.at_risk, table.events)
        expected = multivariate_logrank_test(t, g, e)
        assert result.df == len(table.groups) - 1 == expected.degrees_of_freedom
        assert result.chisq == pytest.approx(expected.test_statistic, rel=1e-9)
        assert result.p == pytest.approx(expected.p_value, rel=1e-8)
        assert np.allclose(result.variance.sum(axis=1), 0, atol=1e-9)


def test_logrank_tables_from_providers_add_up():
    from lifelines.datasets import load_rossi
    rossi = load_rossi()
    t, e, g = rossi["week"].to_numpy(float), rossi["arrest"].to_numpy(), rossi["race"].to_numpy()
    grid = np.arange(1, 53, dtype=float)
    pooled = R.count_table(t, e, g, [0, 1], grid)
    parts = np.array_split(np.random.default_rng(0).permutation(len(t)), 3)
    summed = sum((R.count_table(t[p], e[p], g[p], [0, 1], grid) for p in parts[1:]),
                 R.count_table(t[parts[0]], e[parts[0]], g[parts[0]], [0, 1], grid))
    assert np.array_equal(summed.at_risk, pooled.at_risk) and np.array_equal(summed.events, pooled.events)
    with pytest.raises(InputError, match="not on the public time grid"):
        R.count_table([1.5], [1], [0], [0, 1], grid)
    with pytest.raises(InputError, match="not one of"):
        R.count_table([1.0], [1], [2], [0, 1], grid)


def direct_logrank_terms(time, event, group, labels):
    """O - E and V of one stratum, straight from the subjects, time by time."""
    size = len(labels)
    o_minus_e, variance = np.zeros(size), np.zeros((size, size))
    for u in np.unique(time[event == 1]):
        at_risk = np.array([np.sum((time >= u) & (group == label)) for label in labels], float)
        deaths = np.array([np.sum((time == u) & (event == 1) & (group == label)) for label in labels], float)
        n, d = at_risk.sum(), deaths.sum()
        o_minus_e += deaths - at_risk * d / n
        if n > 1:
            share = at_risk / n
            variance += d * (n - d) / (n - 1) * (np.diag(share) - np.outer(share, share))
    return o_minus_e, variance


def test_logrank_stratified_matches_hand_formula():
    from lifelines.datasets import load_rossi
    rossi = load_rossi()
    t, e = rossi["week"].to_numpy(float), rossi["arrest"].to_numpy()
    group, stratum = rossi["fin"].to_numpy(), rossi["wexp"].to_numpy() * 2 + rossi["mar"].to_numpy()
    tables, o_minus_e, variance = [], 0, 0
    for s in np.unique(stratum):
        rows = stratum == s
        tables.append(R.count_table(t[rows], e[rows], group[rows], [0, 1], np.unique(t[rows])))
        ome, v = direct_logrank_terms(t[rows], e[rows], group[rows], [0, 1])
        o_minus_e, variance = o_minus_e + ome, variance + v
    result = R.logrank_stratified(tables)
    assert result.chisq == pytest.approx(o_minus_e[0] ** 2 / variance[0, 0], rel=1e-12)
    assert np.allclose(result.observed - result.expected, o_minus_e, atol=1e-10)
    assert result.df == 1
    # a single stratum is the plain test; arrays work as well as tables
    single = R.logrank_stratified([(tables[0].at_risk, tables[0].events)])
    assert single.chisq == pytest.approx(R.logrank(tables[0].at_risk, tables[0].events).chisq, rel=1e-14)
    # three groups: the quadratic form with the full variance matrix
    three = np.minimum(rossi["prio"].to_numpy() // 3, 2)
    tables3, ome3, v3 = [], 0, 0
    for s in np.unique(stratum):
        rows = stratum == s
        tables3.append(R.count_table(t[rows], e[rows], three[rows], [0, 1, 2], np.unique(t[rows])))
        ome, v = direct_logrank_terms(t[rows], e[rows], three[rows], [0, 1, 2])
        ome3, v3 = ome3 + ome, v3 + v
    result3 = R.logrank_stratified(tables3)
    assert result3.df == 2
    assert result3.chisq == pytest.approx(ome3[:2] @ np.linalg.solve(v3[:2, :2], ome3[:2]), rel=1e-12)


def test_logrank_edge_cases():
    # ties across groups, and a group without any event
    time = np.array([1, 1, 2, 2, 2, 3, 4, 4, 5, 5], float)
    event = np.array([1, 1, 1, 0, 1, 1, 0, 1, 0, 0])
    group = np.array([0, 1, 0, 0, 1, 1, 2, 0, 2, 2])
    table = R.count_table(time, event, group, [0, 1, 2], np.arange(1, 6, dtype=float))
    result = R.logrank(table.at_risk, table.events)
    assert result.observed.tolist() == [3, 3, 0] and result.df == 2
    ome, v = direct_logrank_terms(time, event, group, [0, 1, 2])
    assert result.chisq == pytest.approx(ome[:2] @ np.linalg.solve(v[:2, :2], ome[:2]), rel=1e-12)
    from lifelines.statistics import multivariate_logrank_test
    assert result.chisq == pytest.approx(multivariate_logrank_test(time, group, event).test_statistic,
                                         rel=1e-10)
    # a single time point: everyone has the event or is censored at t = 1
    single = R.logrank([[3], [5]], [[2], [1]])
    n, d = 8, 3
    v11 = d * (n - d) / (n - 1) * 3 / 8 * 5 / 8
    assert single.chisq == pytest.approx((2 - 3 * 3 / 8) ** 2 / v11, rel=1e-14)
    # one subject left at risk: counts in E, not in V; no events at all: no test
    lone = R.logrank([[2, 1], [2, 0]], [[1, 1], [1, 0]])
    assert lone.expected[0] == pytest.approx(1 * 2 / 4 * 2 + 1.0)
    empty = R.logrank([[3, 2], [2, 2]], [[0, 0], [0, 0]])
    assert empty.df == 0 and empty.chisq == 0.0 and np.isnan(empty.p)
    with pytest.raises(InputError, match="events among"):
        R.logrank([[1]], [[2]])


def test_kaplan_meier_matches_lifelines():
    from lifelines import KaplanMeierFitter
    from lifelines.datasets import load_lung, load_waltons
    for frame, time, event, group in ((load_waltons(), "T", "E", "group"),
                                      (load_lung(), "time", "status", "sex")):
        t, e, g = frame[time].to_numpy(float), frame[event].to_numpy(), frame[group].to_numpy()
        table = survival_table(t, e, g)
        km = R.kaplan_meier(table.at_risk, table.events)
        z = stats.norm.isf(0.025)
        for row, label in enumerate(table.groups):
            members = g == label
            fitter = KaplanMeierFitter().fit(t[members], e[members], timeline=table.grid)
            survival = fitter.survival_function_.to_numpy()[:, 0]
            assert np.max(np.abs(km.survival[row] - survival)) < 1e-10
            # lifelines' log(-log) interval carries the Greenwood sum: back it out
            lower = fitter.confidence_interval_.to_numpy()[:, 0]
            inside = (survival > 0.02) & (survival < 0.98)
            v = np.log(survival[inside])
            greenwood_root = (np.log(-v) - np.log(-np.log(lower[inside]))) * v / z
            assert np.allclose(np.sqrt(km.greenwood[row, inside]), greenwood_root, rtol=1e-6)
            # and the direct Greenwood formula for the SE of S
            direct = np.empty(table.grid.size)
            for k, u in enumerate(table.grid):
                total = 0.0
                for w in np.unique(t[members & (e == 1) & (t <= u)]):
                    n = np.sum(t[members] >= w)
                    d = np.sum((t[members] == w) & (e[members] == 1))
                    total += d / (n * (n - d)) if n > d else np.inf
                direct[k] = survival[k] * np.sqrt(total) if np.isfinite(total) else np.nan
            assert np.allclose(km.se[row], direct, rtol=1e-12, equal_nan=True)


def test_kaplan_meier_edge_cases():
    # everyone at risk dies at the last time: S = 0 and the Greenwood SE is undefined (NaN)
    km = R.kaplan_meier([[4, 3, 2], [5, 5, 5]], [[1, 0, 2], [0, 0, 0]])
    assert km.survival[0].tolist() == pytest.approx([0.75, 0.75, 0.0])
    assert km.se[0, 0] == pytest.approx(0.75 * np.sqrt(1 / (4 * 3)))
    assert np.isnan(km.se[0, 2]) and np.isinf(km.greenwood[0, 2])
    # a group with no events: S = 1 and SE 0 throughout
    assert km.survival[1].tolist() == [1.0, 1.0, 1.0] and km.se[1].tolist() == [0.0, 0.0, 0.0]
    # a single time point, 1-D input; nobody at risk leaves the curve unchanged
    one = R.kaplan_meier([10], [3])
    assert one.survival.shape == (1, 1) and one.survival[0, 0] == pytest.approx(0.7)
    gone = R.kaplan_meier([[2, 0]], [[1, 0]])
    assert gone.survival[0].tolist() == [0.5, 0.5]
