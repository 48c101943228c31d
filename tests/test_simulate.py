"""The simulated cohort (parties.simulate): deterministic, readable, and with
the structure and signals the analyses are meant to find.

Two simulations: a small one (3 sites, 300 samples, 2000 SNPs) for layout,
determinism and PLINK 2, and one of 2000 samples x 1000 SNPs for the claims
about power (causal SNPs at genome-wide significance, the log-rank test, the
diagnosis model).
"""
import filecmp
import shutil
import subprocess

import numpy as np
import pytest
from scipy import stats

from mpc.errors import InputError
from parties.simulate import SimulationTruth, simulate
from parties.sites import check_snps_agree, encode_genotypes, read_site

SMALL = dict(sites=3, samples=300, snps=2000, seed=7, n_causal=5, missing_rate=0.01)
LARGE = dict(sites=3, samples=2000, snps=1000, seed=3)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("small")
    truth = simulate(out, **SMALL)
    return out, truth


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    out = tmp_path_factory.mktemp("large")
    truth = simulate(out, **LARGE)
    sites = [read_site(out / name) for name in truth.site_names]
    return out, truth, sites


def pooled_genotypes(sites) -> np.ndarray:
    """All samples' dosages as float, NaN missing, sites stacked in order."""
    block = np.vstack([site.genotype_block(0, site.n_snps) for site in sites]).astype(np.float64)
    block[block < 0] = np.nan
    return block


def standardised(genotypes: np.ndarray) -> np.ndarray:
    """Mean-imputed, centred, unit-variance columns (monomorphic columns all 0)."""
    mean = np.nanmean(genotypes, axis=0)
    filled = np.where(np.isnan(genotypes), mean, genotypes) - mean
    sd = filled.std(axis=0)
    return filled / np.where(sd > 0, sd, 1.0)


def top_pcs(genotypes: np.ndarray, k: int) -> np.ndarray:
    u, _, _ = np.linalg.svd(standardised(genotypes), full_matrices=False)
    return u[:, :k]


def trend_p(genotypes: np.ndarray, y: np.ndarray, adjust: np.ndarray | None) -> np.ndarray:
    """Cochran-Armitage trend test (N r^2) after projecting out [1, adjust]."""
    keep = ~np.isnan(y)
    x = standardised(genotypes[keep])
    basis = np.ones((keep.sum(), 1)) if adjust is None else np.column_stack([np.ones(keep.sum()), adjust[keep]])
    q, _ = np.linalg.qr(basis)
    x = x - q @ (q.T @ x)
    yc = y[keep] - q @ (q.T @ y[keep])
    with np.errstate(invalid="ignore"):  # monomorphic SNPs: r = 0 / 0 = NaN
        r = (x.T @ yc) / np.sqrt((x * x).sum(axis=0) * (yc @ yc))
    return stats.chi2.sf(keep.sum() * r**2, 1)


def plink2(*args, cwd):
    exe = shutil.which("plink2")
    if exe is None:
        pytest.fail("plink2 is not on PATH (CI installs it: apt-get install plink2)")
    result = subprocess.run([exe, "--threads", "1", *args], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, f"plink2 {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"


# ---------------------------------------------------------------------------
# Layout and determinism
# ---------------------------------------------------------------------------

def test_deterministic_per_seed(small, tmp_path):
    out, _ = small
    again = tmp_path / "again"
    simulate(again, **SMALL)
    files = ["truth.json"] + [
        f"site{k}/{name}" for k in (1, 2, 3)
        for name in ("genotypes.bed", "genotypes.bim", "genotypes.fam", "phenotypes.tsv",
                     "covariates.tsv", "survival.tsv", "features.tsv")
    ]
    match, mismatch, errors = filecmp.cmpfiles(out, again, files, shallow=False)
    assert mismatch == [] and errors == [] and len(match) == len(files)
    other = tmp_path / "other"
    simulate(other, **{**SMALL, "seed": 8})
    assert (out / "site1/genotypes.bed").read_bytes() != (other / "site1/genotypes.bed").read_bytes()
    assert (out / "site1/phenotypes.tsv").read_text() != (other / "site1/phenotypes.tsv").read_text()


def test_truth_json_round_trip(small):
    out, truth = small
    loaded = SimulationTruth.read(out)
    assert loaded.to_json() == truth.to_json()
    assert loaded.parameters["samples"] == 300 and loaded.parameters["n_causal"] == 5
    assert len(loaded.causal) == 5 and loaded.causal_ids == truth.causal_ids


def test_sites_read_back(small):
    out, truth = small
    sites = [read_site(out / name) for name in truth.site_names]
    assert [site.name for site in sites] == ["site1", "site2", "site3"]
    sizes = [site.n_samples for site in sites]
    assert sum(sizes) == 300 and sizes[0] > sizes[1] > sizes[2]  # unequal sites
    ids = np.concatenate([site.sample_ids for site in sites])
    assert ids.tolist() == truth.sample_ids.tolist() and len(set(ids.tolist())) == 300
    assert all(iid.startswith(f"s{k + 1}_") for k, site in enumerate(sites) for iid in site.sample_ids)
    fam = (out / "site1/genotypes.fam").read_text().split()
    assert fam[0] == fam[1] == sites[0].sample_ids[0]  # FID = IID
    check_snps_agree({site.name: site.snps for site in sites})

    snps = sites[0].snps
    assert len(snps) == 2000 and snps.id.tolist() == [f"rs{j + 1}" for j in range(2000)]
    assert sorted(set(snps.chrom.tolist()), key=int) == [str(c) for c in range(1, 23)]
    chrom = snps.chrom.astype(int)
    assert np.all(np.diff(chrom) >= 0)
    same = np.diff(chrom) == 0
    assert np.all(np.diff(snps.pos)[same] > 0)  # sorted, distinct positions
    assert np.all(snps.ref != snps.alt) and set(snps.ref) | set(snps.alt) <= set("ACGT")
    for causal in truth.causal:
        assert snps.id[causal.index] == causal.id and snps.pos[causal.index] == causal.pos

    for site in sites:
        assert site.phenotype_kinds() == {"CASE": "binary", "QT": "quantitative", "DIAGNOSIS": "binary"}
        assert list(site.covariates()) == ["AGE", "SEX", "BMI"]
        assert set(np.unique(site.covariates()["SEX"])) == {0.0, 1.0}
        survival = site.survival()
        assert set(survival.group.tolist()) == {"A", "B"}
        assert set(survival.stratum.tolist()) == {"female", "male"}
        assert set(survival.event.tolist()) == {0, 1}
        assert np.all(survival.time == np.round(survival.time)) and survival.time.min() >= 1
        assert survival.time.max() <= 2000
        features = site.features()
        assert 5 <= len(features.names) <= 8 and not np.isnan(features.values).any()
    case = np.concatenate([site.phenotypes()["CASE"] for site in sites])
    assert 0 < np.isnan(case).sum() < 30  # ~2% missing phenotypes
    assert 0.2 < np.nanmean(case) < 0.8


def test_ld_thinning_keeps_a_good_fraction(small):
    out, truth = small
    snps = read_site(out / "site1").snps
    kept, last_chrom, last_pos = 0, None, None
    for chrom, pos in zip(snps.chrom.tolist(), snps.pos.tolist()):
        if chrom != last_chrom or pos - last_pos >= 100_000:
            kept, last_chrom, last_pos = kept + 1, chrom, pos
    assert kept > 0.8 * len(snps)


def test_missingness_and_rare_snps(small):
    out, truth = small
    sites = [read_site(out / name) for name in truth.site_names]
    genotypes = pooled_genotypes(sites)
    missing = np.isnan(genotypes)
    assert 0.005 < missing.mean() < 0.03
    per_sample = missing.mean(axis=1)
    bad_samples = np.isin(truth.sample_ids, truth.high_missing_samples)
    assert bad_samples.sum() >= 1 and per_sample[bad_samples].min() > 0.08
    assert per_sample[~bad_samples].max() < 0.05  # --mind 0.05 removes exactly the bad samples
    per_snp = missing.mean(axis=0)
    bad_snps = np.isin(sites[0].snps.id, truth.high_missing_snps)
    assert bad_snps.sum() >= 10 and per_snp[bad_snps].min() > 0.06
    assert per_snp[~bad_snps].max() < 0.05
    alt_freq = np.nanmean(genotypes, axis=0) / 2
    maf = np.minimum(alt_freq, 1 - alt_freq)
    assert 0.05 < (maf < 0.05).mean() < 0.25  # a MAF filter has work to do
    assert (alt_freq > 0.95).any() and (alt_freq < 0.05).any()  # rare ALT and rare REF alleles


def test_population_structure(small):
    out, truth = small
    sites = [read_site(out / name) for name in truth.site_names]
    pcs = top_pcs(pooled_genotypes(sites), 2)
    population = truth.population
    for k in range(2):
        pc = pcs[:, k]
        between = sum((population == q).sum() * (pc[population == q].mean() - pc.mean()) ** 2 for q in range(3))
        assert between / ((pc - pc.mean()) ** 2).sum() > 0.9  # the PC is almost a population label
    # Sites differ in ancestry: site k is mostly population k.
    for k, name in enumerate(truth.site_names):
        labels = population[truth.sample_site == name]
        assert np.bincount(labels, minlength=3).argmax() == k


def test_plink2_reads_the_sites(small, tmp_path):
    out, truth = small
    for name in truth.site_names:
        plink2("--bfile", str(out / name / "genotypes"), "--freq", "--missing",
               "--out", str(tmp_path / name), cwd=tmp_path)
        site = read_site(out / name)
        rows = [line.split("\t") for line in (tmp_path / f"{name}.afreq").read_text().splitlines()[1:]]
        assert [r[1] for r in rows] == site.snps.id.tolist()
        assert [r[3] for r in rows] == site.snps.alt.tolist()  # plink2 ALT = our ALT
        encoded = encode_genotypes(site.genotype_block(0, site.n_snps))
        observed = 2 * (site.n_samples - encoded.missing.sum(axis=0))
        np.testing.assert_allclose([float(r[4]) for r in rows], encoded.dosage.sum(axis=0) / observed, rtol=1e-5)
        np.testing.assert_array_equal([int(r[5]) for r in rows], observed)


def test_bad_arguments(tmp_path):
    with pytest.raises(InputError, match="samples must be >= 4 per site"):
        simulate(tmp_path, sites=3, samples=10, snps=100)
    with pytest.raises(InputError, match="survival_groups"):
        simulate(tmp_path, samples=40, snps=100, survival_groups=4)
    with pytest.raises(InputError, match="seed"):
        simulate(tmp_path, samples=40, snps=100, seed=-1)


def test_three_survival_groups(tmp_path):
    truth = simulate(tmp_path, sites=2, samples=60, snps=50, seed=1, survival_groups=3)
    groups = np.concatenate([read_site(tmp_path / name).survival().group for name in truth.site_names])
    assert set(groups.tolist()) == {"A", "B", "C"}


# ---------------------------------------------------------------------------
# Signals, on 2000 samples
# ---------------------------------------------------------------------------

def test_causal_snps_reach_genome_wide_significance(large):
    _, truth, sites = large
    genotypes = pooled_genotypes(sites)
    case = np.concatenate([site.phenotypes()["CASE"] for site in sites])
    covariates = np.column_stack([
        np.concatenate([site.covariates()[name] for site in sites]) for name in ("AGE", "SEX", "BMI")
    ])
    adjust = np.column_stack([top_pcs(genotypes, 2), covariates])
    p_adjusted = trend_p(genotypes, case, adjust)
    causal = np.array([snp.index for snp in truth.causal])
    assert np.all(p_adjusted[causal] < 5e-8), p_adjusted[causal]
    null = np.delete(np.arange(genotypes.shape[1]), causal)
    null = null[np.nanstd(genotypes[:, null], axis=0) > 0]
    # Confounding by ancestry inflates the unadjusted null statistics; PCs remove it.
    # (a SNP can be monomorphic among the samples with a phenotype: NaN, ignored)
    lambda_adjusted = np.nanmedian(stats.chi2.isf(p_adjusted[null], 1)) / stats.chi2.ppf(0.5, 1)
    p_raw = trend_p(genotypes[:, null], case, None)
    lambda_raw = np.nanmedian(stats.chi2.isf(p_raw, 1)) / stats.chi2.ppf(0.5, 1)
    assert 0.85 < lambda_adjusted < 1.2  # 1000 SNPs: the median itself is noisy
    assert lambda_raw > 1.5
    qt = np.concatenate([site.phenotypes()["QT"] for site in sites])
    assert np.all(trend_p(genotypes[:, causal], qt, adjust) < 1e-4)


def test_survival_groups_differ(large):
    from lifelines.statistics import logrank_test

    _, truth, sites = large
    time = np.concatenate([site.survival().time for site in sites])
    event = np.concatenate([site.survival().event for site in sites])
    group = np.concatenate([site.survival().group for site in sites])
    a, b = group == "A", group == "B"
    result = logrank_test(time[a], time[b], event_observed_A=event[a], event_observed_B=event[b])
    assert result.p_value < 1e-8
    assert 0.3 < event.mean() < 0.9  # censoring, but most of the follow-up is informative


def test_diagnosis_model_is_recoverable(large):
    import statsmodels.api as sm

    _, truth, sites = large
    features = np.vstack([site.features().values for site in sites])
    names = sites[0].features().names
    diagnosis = np.concatenate([site.phenotypes()["DIAGNOSIS"] for site in sites])
    keep = ~np.isnan(diagnosis)
    fit = sm.Logit(diagnosis[keep], sm.add_constant(features[keep])).fit(disp=0)
    model = truth.diagnosis_model
    expected = np.array([model["intercept"]] + [model["coefficients"][name] for name in names])
    z = (fit.params - expected) / fit.bse
    assert np.all(np.abs(z) < 4), z
    assert fit.pvalues[1] < 1e-6  # GLUCOSE, the strongest feature, is clearly found
