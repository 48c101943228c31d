"""Simulated multi-site cohorts with known truth, for tests, demos and benchmarks.

:func:`simulate` writes K site folders (``site1``, ``site2``, ...) in the layout
:mod:`parties.sites` reads, plus ``truth.json`` at the top of the output folder.

The model, step by step:

1. **SNPs.**  Spread over chromosomes 1..22 in proportion to their GRCh37
   lengths, at sorted distinct positions drawn uniformly along each
   chromosome (so LD thinning at 100 kb keeps most of them until there are
   tens of thousands).  IDs ``rs1``, ``rs2``, ... in genome order; REF and ALT
   two distinct random bases.
2. **Ancestral ALT frequencies** p ~ U(0.05, 0.95); a fraction
   ``rare_fraction`` of SNPs is rare instead, p ~ U(0.005, 0.05), half of
   them with the ALT allele as the major one (p -> 1 - p), so a MAF filter
   has something to remove whichever allele is counted.
3. **Population structure** (Balding-Nichols): population q has its own
   F_q (spread evenly over ``fst_range``) and frequencies
   p_q ~ Beta(p (1 - F_q) / F_q, (1 - p)(1 - F_q) / F_q).
4. **Samples.**  Site k (k = 0 .. K-1) gets a share of the cohort
   proportional to 2K - k (unequal sites: 40/33/27% for K = 3); its samples
   come from population k mod P with probability 0.6 and from each other
   population equally otherwise, so the sites differ in ancestry.  IDs ``s<site>_<number>``, FID = IID.
5. **Genotypes** ~ Binomial(2, p_q) per sample, generated and written in
   blocks of SNPs, so memory is bounded by a block.  Calls go missing with
   probability ``missing_rate``, plus about 1% of samples (at least one)
   with a missing rate of 10-30% (for ``--mind``) and about 1% of SNPs (at
   least one) with a missing rate of 10-30% (for ``--geno``).
6. **Covariates** ``AGE`` (years; the site mean rises by 4 years per site),
   ``SEX`` (0 = male, 1 = female) and ``BMI``.
7. **Phenotypes** (PLINK coding, ``-9`` missing at ``pheno_missing_rate``):
   ``CASE`` (1 control / 2 case) from a logistic model with ``n_causal``
   causal SNPs whose ALT frequency is within [0.2, 0.8] in every population
   (log odds ratio 0.75-1.0 per ALT allele, random sign: each reaches
   genome-wide significance with about 2000 samples once PCs and covariates
   are adjusted for), a population effect (the case rate differs by ancestry: confounding that PCs
   must remove) and covariate effects; ``QT``, a normal trait with the same
   causal SNPs (0.25-0.4 per ALT allele, noise SD 1), population and covariates;
   ``DIAGNOSIS`` (1 / 2) from a logistic model of the clinical features.
8. **Features**: seven correlated clinical measurements (glucose and HbA1c,
   systolic and diastolic pressure, LDL and HDL cholesterol, log CRP) from
   a multivariate normal.  ``truth.json`` holds the DIAGNOSIS model on the
   scale of the written features, so a logistic regression of DIAGNOSIS on
   them estimates exactly those coefficients.
9. **Survival**: GROUP ``A``/``B`` (``C`` too with ``survival_groups=3``)
   with hazard ratios 1, 1.7, 2.5, an age effect, exponential event times,
   uniform censoring and end of follow-up at 2000 days; TIME in whole days
   (>= 1), EVENT 0/1, STRATUM the sex (``female``/``male``).

Randomness comes from numpy's ``default_rng`` keyed by the seed and a stream
number per purpose (and per SNP block), so the output is a function of the
arguments only.  This is public test data, not a secret: numpy's generators
are fine here and nowhere in the protocols.
"""
from __future__ import annotations

import contextlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mpc.errors import InputError

CHROMOSOME_LENGTHS = (
    249_250_621, 243_199_373, 198_022_430, 191_154_276, 180_915_260, 171_115_067,
    159_138_663, 146_364_022, 141_213_431, 135_534_747, 135_006_516, 133_851_895,
    115_169_878, 107_349_540, 102_531_392, 90_354_753, 81_195_210, 78_077_248,
    59_128_983, 63_025_520, 48_129_895, 51_304_566,
)
"""GRCh37 lengths of chromosomes 1..22 (bp)."""

BASES = np.array(["A", "C", "G", "T"])
SNP_BLOCK = 2048
"""SNPs generated and written per block (fixed: the output must not depend on it)."""

FEATURES = (
    # name, mean, standard deviation of the written value
    ("GLUCOSE", 100.0, 15.0),
    ("HBA1C", 5.7, 0.6),
    ("SBP", 128.0, 15.0),
    ("DBP", 80.0, 10.0),
    ("LDL", 120.0, 30.0),
    ("HDL", 55.0, 12.0),
    ("LOG_CRP", 0.5, 0.8),
)
FEATURE_CORRELATION = np.array([
    [1.0, 0.7, 0.2, 0.1, 0.1, -0.2, 0.2],
    [0.7, 1.0, 0.2, 0.1, 0.1, -0.2, 0.2],
    [0.2, 0.2, 1.0, 0.6, 0.1, -0.1, 0.1],
    [0.1, 0.1, 0.6, 1.0, 0.1, -0.1, 0.1],
    [0.1, 0.1, 0.1, 0.1, 1.0, -0.3, 0.1],
    [-0.2, -0.2, -0.1, -0.1, -0.3, 1.0, -0.1],
    [0.2, 0.2, 0.1, 0.1, 0.1, -0.1, 1.0],
])
DIAGNOSIS_STANDARDISED = (1.0, 0.6, 0.5, 0.0, 0.4, -0.5, 0.3)
"""Log odds of DIAGNOSIS per standard deviation of each feature."""
DIAGNOSIS_INTERCEPT = -0.8

CASE_PREVALENCE = 0.4
CASE_COVARIATES = {"AGE": 0.03, "SEX": 0.3, "BMI": 0.06}
"""Log odds of CASE per unit of each (centred) covariate."""
QT_COVARIATES = {"AGE": 0.02, "SEX": 0.2, "BMI": 0.05}
POPULATION_EFFECT_CASE = 0.6
"""Log odds of CASE spread evenly over [-0.6, 0.6] across populations."""
POPULATION_EFFECT_QT = 0.3

SURVIVAL_GROUPS = ("A", "B", "C")
SURVIVAL_HAZARD_RATIOS = (1.0, 1.7, 2.5)
SURVIVAL_MEDIAN_DAYS = 900.0
"""Median event time of group A at age 55."""
SURVIVAL_AGE_LOG_HR = 0.02
FOLLOW_UP_DAYS = 2000

# Random streams, one per purpose: adding a stream never changes the others.
_STREAM_SNPS, _STREAM_SAMPLES, _STREAM_PHENOTYPES, _STREAM_FEATURES = 1, 2, 3, 4
_STREAM_SURVIVAL, _STREAM_MISSING_PHENO, _STREAM_GENOTYPES = 5, 6, 100


@dataclass(frozen=True)
class CausalSnp:
    """One causal SNP of the simulated traits (effects per ALT allele)."""

    index: int
    id: str
    chrom: str
    pos: int
    ancestral_alt_freq: float
    case_log_odds_ratio: float
    qt_effect: float


@dataclass(frozen=True, eq=False)
class SimulationTruth:
    """What :func:`simulate` built, as written to ``truth.json``.

    Attributes
    ----------
    parameters : dict
        The arguments of the call.
    site_names : tuple of str
    sample_ids : str array, shape (n_samples,)
        Every sample, sites in order.
    sample_site : str array, shape (n_samples,)
    population : int64 array, shape (n_samples,)
        Population index 0..P-1 of every sample.
    site_population_proportions : float64 array, shape (n_sites, P)
    population_fst : tuple of float
    causal : tuple of CausalSnp
    high_missing_samples, high_missing_snps : tuple of str
    case_model, qt_model, diagnosis_model, survival_model : dict
        The generating models (intercepts, effects), JSON-ready.
    """

    parameters: dict
    site_names: tuple[str, ...]
    sample_ids: np.ndarray
    sample_site: np.ndarray
    population: np.ndarray
    site_population_proportions: np.ndarray
    population_fst: tuple[float, ...]
    causal: tuple[CausalSnp, ...]
    high_missing_samples: tuple[str, ...]
    high_missing_snps: tuple[str, ...]
    case_model: dict
    qt_model: dict
    diagnosis_model: dict
    survival_model: dict

    @property
    def causal_ids(self) -> tuple[str, ...]:
        return tuple(snp.id for snp in self.causal)

    def to_json(self) -> dict:
        """A JSON-ready dictionary (the content of ``truth.json``)."""
        return {
            "format": "mpcgwas.simulation.v1",
            "parameters": self.parameters,
            "site_names": list(self.site_names),
            "samples": {
                "iid": self.sample_ids.tolist(),
                "site": self.sample_site.tolist(),
                "population": self.population.tolist(),
            },
            "site_population_proportions": self.site_population_proportions.tolist(),
            "population_fst": list(self.population_fst),
            "causal": [asdict(snp) for snp in self.causal],
            "high_missing_samples": list(self.high_missing_samples),
            "high_missing_snps": list(self.high_missing_snps),
            "case_model": self.case_model,
            "qt_model": self.qt_model,
            "diagnosis_model": self.diagnosis_model,
            "survival_model": self.survival_model,
        }

    @classmethod
    def from_json(cls, data: dict) -> SimulationTruth:
        """Inverse of :meth:`to_json`."""
        if data.get("format") != "mpcgwas.simulation.v1":
            raise InputError(f"truth.json: unknown format {data.get('format')!r}")
        samples = data["samples"]
        return cls(
            parameters=data["parameters"],
            site_names=tuple(data["site_names"]),
            sample_ids=np.array(samples["iid"], dtype=np.str_),
            sample_site=np.array(samples["site"], dtype=np.str_),
            population=np.array(samples["population"], dtype=np.int64),
            site_population_proportions=np.array(data["site_population_proportions"], dtype=np.float64),
            population_fst=tuple(data["population_fst"]),
            causal=tuple(CausalSnp(**snp) for snp in data["causal"]),
            high_missing_samples=tuple(data["high_missing_samples"]),
            high_missing_snps=tuple(data["high_missing_snps"]),
            case_model=data["case_model"],
            qt_model=data["qt_model"],
            diagnosis_model=data["diagnosis_model"],
            survival_model=data["survival_model"],
        )

    @classmethod
    def read(cls, out_dir) -> SimulationTruth:
        """Load ``truth.json`` from a simulation's output folder."""
        path = Path(out_dir) / "truth.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise InputError(f"{path}: cannot be read ({err})") from None
        return cls.from_json(data)


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, *stream])


def _split_evenly(total: int, weights) -> np.ndarray:
    """Integers proportional to weights summing to total (largest remainder)."""
    weights = np.asarray(weights, dtype=np.float64)
    exact = total * weights / weights.sum()
    counts = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: total - counts.sum()]] += 1
    return counts


def _snp_table(n_snps: int, rng: np.random.Generator):
    """Chromosomes, sorted distinct positions, IDs and REF/ALT alleles."""
    per_chrom = _split_evenly(n_snps, CHROMOSOME_LENGTHS)
    chrom, pos = [], []
    for c, (count, length) in enumerate(zip(per_chrom, CHROMOSOME_LENGTHS), start=1):
        if count == 0:
            continue
        # Sorted draws from [1, length - count], shifted by their rank: strictly
        # increasing, still uniform-looking, and inside the chromosome.
        draws = np.sort(rng.integers(1, length - count + 1, size=count))
        pos.append(draws + np.arange(count))
        chrom.append(np.full(count, str(c)))
    chrom = np.concatenate(chrom)
    pos = np.concatenate(pos).astype(np.int64)
    ids = np.array([f"rs{j + 1}" for j in range(n_snps)])
    ref_index = rng.integers(0, 4, size=n_snps)
    alt_index = (ref_index + rng.integers(1, 4, size=n_snps)) % 4
    return chrom, pos, ids, BASES[ref_index], BASES[alt_index]


def _ancestral_frequencies(n_snps: int, rare_fraction: float, rng: np.random.Generator):
    freq = rng.uniform(0.05, 0.95, size=n_snps)
    rare = rng.random(n_snps) < rare_fraction
    rare_freq = rng.uniform(0.005, 0.05, size=n_snps)
    flip = rng.random(n_snps) < 0.5
    rare_freq = np.where(flip, 1.0 - rare_freq, rare_freq)
    return np.where(rare, rare_freq, freq), rare


def _population_frequencies(freq: np.ndarray, fst: np.ndarray, rng: np.random.Generator):
    """Balding-Nichols: p_q ~ Beta(p (1-F)/F, (1-p)(1-F)/F), shape (P, n_snps)."""
    out = np.empty((len(fst), len(freq)), dtype=np.float64)
    for q, f in enumerate(fst):
        scale = (1.0 - f) / f
        out[q] = rng.beta(freq * scale, (1.0 - freq) * scale)
    return out


def _format_column(values: np.ndarray, fmt: str, missing: np.ndarray | None = None) -> list[str]:
    text = [fmt % v for v in values.tolist()]
    if missing is not None:
        for i in np.flatnonzero(missing):
            text[i] = "-9"
    return text


def _write_table(path: Path, header: list[str], columns: list[list[str]]) -> None:
    rows = ["\t".join(header)]
    rows.extend("\t".join(cells) for cells in zip(*columns))
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


def simulate(
    out_dir,
    sites: int = 3,
    samples: int = 1000,
    snps: int = 5000,
    seed: int = 0,
    n_causal: int = 5,
    missing_rate: float = 0.01,
    *,
    n_populations: int = 3,
    fst_range: tuple[float, float] = (0.05, 0.10),
    rare_fraction: float = 0.1,
    pheno_missing_rate: float = 0.02,
    survival_groups: int = 2,
) -> SimulationTruth:
    """Simulate a structured multi-site cohort and write it as site folders.

    Parameters
    ----------
    out_dir : str or os.PathLike
        Output folder (created); gets ``site1`` .. ``site<sites>`` and ``truth.json``.
        Existing files of the same names are overwritten; other files are left
        alone.  The ``.fam`` phenotype column is -9: phenotypes live in
        ``phenotypes.tsv``.
    sites : int
        Number of sites K (>= 1).
    samples : int
        Total number of samples over all sites (>= 4 K).
    snps : int
        Number of SNPs (>= n_causal + 2).
    seed : int
        Non-negative seed; the output is a function of the arguments.
    n_causal : int
        Causal SNPs of CASE and QT (ALT frequency within [0.2, 0.8] in every
        population, not among the high-missingness SNPs).
    missing_rate : float
        Background probability that a genotype call is missing.
    n_populations : int
        Number of ancestral populations P.
    fst_range : (float, float)
        F_ST of the populations, spread evenly over this range.
    rare_fraction : float
        Fraction of SNPs with a minor allele frequency in [0.005, 0.05].
    pheno_missing_rate : float
        Probability that a phenotype value (CASE, QT, DIAGNOSIS) is ``-9``.
    survival_groups : int
        2 (groups A, B) or 3 (A, B, C).

    Returns
    -------
    SimulationTruth
        Also written to ``out_dir/truth.json``.
    """
    from bed_reader import create_bed

    _check_arguments(sites, samples, snps, seed, n_causal, missing_rate, n_populations,
                     fst_range, rare_fraction, pheno_missing_rate, survival_groups)
    out = Path(out_dir)
    site_names = tuple(f"site{k + 1}" for k in range(sites))
    for name in site_names:
        (out / name).mkdir(parents=True, exist_ok=True)

    # 1-3. SNPs, ancestral and population frequencies.
    rng = _rng(seed, _STREAM_SNPS)
    chrom, pos, ids, ref, alt = _snp_table(snps, rng)
    ancestral, rare = _ancestral_frequencies(snps, rare_fraction, rng)
    fst = np.linspace(fst_range[0], fst_range[1], n_populations)
    pop_freq = _population_frequencies(ancestral, fst, rng)
    hom_alt = (pop_freq**2).astype(np.float32)
    not_hom_ref = (1.0 - (1.0 - pop_freq) ** 2).astype(np.float32)
    n_bad_snps = max(1, round(0.01 * snps))
    bad_snps = np.sort(rng.choice(snps, size=n_bad_snps, replace=False))
    snp_extra_missing = np.zeros(snps, dtype=np.float64)
    snp_extra_missing[bad_snps] = rng.uniform(0.1, 0.3, size=n_bad_snps)
    common_everywhere = (pop_freq.min(axis=0) >= 0.2) & (pop_freq.max(axis=0) <= 0.8)
    eligible = np.flatnonzero(common_everywhere & (snp_extra_missing == 0))
    if len(eligible) < n_causal:
        raise InputError(
            f"simulate: only {len(eligible)} SNPs are common in every population, "
            f"fewer than n_causal = {n_causal}; raise snps"
        )
    causal = np.sort(rng.choice(eligible, size=n_causal, replace=False))
    case_effect = rng.uniform(0.75, 1.0, size=n_causal) * rng.choice((-1.0, 1.0), size=n_causal)
    qt_effect = rng.uniform(0.25, 0.4, size=n_causal) * rng.choice((-1.0, 1.0), size=n_causal)

    # 4. Samples, sites and populations; 6. covariates.
    rng = _rng(seed, _STREAM_SAMPLES)
    site_sizes = _split_evenly(samples, [2 * sites - k for k in range(sites)])
    proportions = np.zeros((sites, n_populations))
    for k in range(sites):
        if n_populations == 1:
            proportions[k] = 1.0
        else:
            proportions[k] = 0.4 / (n_populations - 1)
            proportions[k, k % n_populations] = 0.6
    site_index = np.repeat(np.arange(sites), site_sizes)
    sample_ids = np.array([
        f"s{k + 1}_{i + 1:05d}" for k, size in enumerate(site_sizes) for i in range(size)
    ])
    population = np.concatenate([
        rng.choice(n_populations, size=size, p=proportions[k]) for k, size in enumerate(site_sizes)
    ]).astype(np.int64)
    age = np.clip(rng.normal(50.0 + 4.0 * site_index, 10.0), 18.0, 90.0).round(1)
    sex = (rng.random(samples) < 0.5).astype(np.int64)
    bmi = np.clip(rng.normal(27.0, 4.5, size=samples), 15.0, 55.0).round(1)
    n_bad_samples = max(1, round(0.01 * samples))
    bad_samples = np.sort(rng.choice(samples, size=n_bad_samples, replace=False))
    sample_extra_missing = np.zeros(samples, dtype=np.float64)
    sample_extra_missing[bad_samples] = rng.uniform(0.1, 0.3, size=n_bad_samples)

    # 5. Genotypes, block by block; the causal columns are kept for the traits.
    causal_dosage = np.empty((samples, n_causal), dtype=np.float64)
    bounds = np.concatenate([[0], np.cumsum(site_sizes)])
    keep_call = ((1.0 - missing_rate) * (1.0 - sample_extra_missing)).astype(np.float32)
    keep_snp = (1.0 - snp_extra_missing).astype(np.float32)
    with contextlib.ExitStack() as stack:
        writers = []
        for k, name in enumerate(site_names):
            rows = slice(bounds[k], bounds[k + 1])
            properties = {
                "fid": sample_ids[rows], "iid": sample_ids[rows],
                "father": ["0"] * site_sizes[k], "mother": ["0"] * site_sizes[k],
                "sex": (sex[rows] + 1).tolist(), "pheno": ["-9"] * site_sizes[k],
                "chromosome": chrom, "sid": ids, "cm_position": np.zeros(snps),
                "bp_position": pos, "allele_1": alt, "allele_2": ref,
            }
            writers.append(stack.enter_context(create_bed(
                out / name / "genotypes.bed", iid_count=int(site_sizes[k]), sid_count=snps,
                properties=properties,
            )))
        for block, j0 in enumerate(range(0, snps, SNP_BLOCK)):
            j1 = min(snps, j0 + SNP_BLOCK)
            rng = _rng(seed, _STREAM_GENOTYPES, block)
            # One uniform u per call: dosage = [u < p^2] + [u < 1 - (1 - p)^2]
            # is Binomial(2, p) (P(2) = p^2, P(0) = (1 - p)^2).
            u = rng.random((samples, j1 - j0), dtype=np.float32)
            dosage = (u < hom_alt[:, j0:j1][population]).view(np.int8)
            dosage += u < not_hom_ref[:, j0:j1][population]
            in_block = (causal >= j0) & (causal < j1)
            causal_dosage[:, in_block] = dosage[:, causal[in_block] - j0]
            keep = np.outer(keep_call, keep_snp[j0:j1])  # P(call observed), float32
            dosage[rng.random(keep.shape, dtype=np.float32) >= keep] = -127
            for k, writer in enumerate(writers):
                site_block = np.asfortranarray(dosage[bounds[k]:bounds[k + 1]])
                for j in range(j1 - j0):
                    writer.write(site_block[:, j])

    # 7. Phenotypes from the true (complete) causal genotypes.
    rng = _rng(seed, _STREAM_PHENOTYPES)
    centred = causal_dosage - 2.0 * ancestral[causal]
    covariates = {"AGE": age, "SEX": sex.astype(np.float64), "BMI": bmi}
    centres = {"AGE": 55.0, "SEX": 0.5, "BMI": 27.0}
    population_case = np.linspace(-POPULATION_EFFECT_CASE, POPULATION_EFFECT_CASE, n_populations)
    population_qt = np.linspace(-POPULATION_EFFECT_QT, POPULATION_EFFECT_QT, n_populations)
    if n_populations == 1:
        population_case[:] = 0.0
        population_qt[:] = 0.0
    case_intercept = math.log(CASE_PREVALENCE / (1 - CASE_PREVALENCE))
    case_logit = case_intercept + centred @ case_effect + population_case[population]
    qt = centred @ qt_effect + population_qt[population] + rng.normal(0.0, 1.0, size=samples)
    for name, value in covariates.items():
        case_logit += CASE_COVARIATES[name] * (value - centres[name])
        qt += QT_COVARIATES[name] * (value - centres[name])
    case = rng.random(samples) < 1.0 / (1.0 + np.exp(-case_logit))

    # 8. Features and DIAGNOSIS.
    rng = _rng(seed, _STREAM_FEATURES)
    z = rng.multivariate_normal(np.zeros(len(FEATURES)), FEATURE_CORRELATION, size=samples,
                                method="cholesky")
    means = np.array([mean for _, mean, _ in FEATURES])
    sds = np.array([sd for _, _, sd in FEATURES])
    features = means + sds * z
    diagnosis_logit = DIAGNOSIS_INTERCEPT + z @ np.array(DIAGNOSIS_STANDARDISED)
    diagnosis = rng.random(samples) < 1.0 / (1.0 + np.exp(-diagnosis_logit))
    raw_coefficients = np.array(DIAGNOSIS_STANDARDISED) / sds
    raw_intercept = DIAGNOSIS_INTERCEPT - float(raw_coefficients @ means)

    # 9. Survival.
    rng = _rng(seed, _STREAM_SURVIVAL)
    group = rng.integers(0, survival_groups, size=samples)
    base_rate = math.log(2.0) / SURVIVAL_MEDIAN_DAYS
    rate = base_rate * np.array(SURVIVAL_HAZARD_RATIOS)[group] * np.exp(SURVIVAL_AGE_LOG_HR * (age - 55.0))
    event_time = rng.exponential(1.0 / rate)
    censor_time = np.minimum(rng.uniform(300.0, 2500.0, size=samples), FOLLOW_UP_DAYS)
    event = event_time <= censor_time
    time = np.maximum(1, np.ceil(np.minimum(event_time, censor_time))).astype(np.int64)

    # Missing phenotypes, then the tables.
    rng = _rng(seed, _STREAM_MISSING_PHENO)
    missing = {name: rng.random(samples) < pheno_missing_rate for name in ("CASE", "QT", "DIAGNOSIS")}
    # A quantitative value that prints as -9 would read back as missing: nudge it.
    qt = np.where(np.round(qt, 4) == -9.0, -9.0001, qt)
    for k, name in enumerate(site_names):
        rows = slice(bounds[k], bounds[k + 1])
        folder = out / name
        iid = sample_ids[rows].tolist()
        _write_table(folder / "phenotypes.tsv", ["FID", "IID", "CASE", "QT", "DIAGNOSIS"], [
            iid, iid,
            _format_column(1 + case[rows].astype(np.int64), "%d", missing["CASE"][rows]),
            _format_column(qt[rows], "%.4f", missing["QT"][rows]),
            _format_column(1 + diagnosis[rows].astype(np.int64), "%d", missing["DIAGNOSIS"][rows]),
        ])
        _write_table(folder / "covariates.tsv", ["FID", "IID", "AGE", "SEX", "BMI"], [
            iid, iid,
            _format_column(age[rows], "%.1f"),
            _format_column(sex[rows], "%d"),
            _format_column(bmi[rows], "%.1f"),
        ])
        _write_table(folder / "survival.tsv", ["IID", "TIME", "EVENT", "GROUP", "STRATUM"], [
            iid,
            _format_column(time[rows], "%d"),
            _format_column(event[rows].astype(np.int64), "%d"),
            [SURVIVAL_GROUPS[g] for g in group[rows]],
            ["female" if s else "male" for s in sex[rows]],
        ])
        _write_table(folder / "features.tsv", ["IID"] + [name for name, _, _ in FEATURES], [iid] + [
            _format_column(features[rows, f], "%.3f") for f in range(len(FEATURES))
        ])

    truth = SimulationTruth(
        parameters={
            "sites": sites, "samples": samples, "snps": snps, "seed": seed,
            "n_causal": n_causal, "missing_rate": missing_rate,
            "n_populations": n_populations, "fst_range": list(fst_range),
            "rare_fraction": rare_fraction, "pheno_missing_rate": pheno_missing_rate,
            "survival_groups": survival_groups,
        },
        site_names=site_names,
        sample_ids=sample_ids,
        sample_site=np.array(site_names)[site_index],
        population=population,
        site_population_proportions=proportions,
        population_fst=tuple(float(f) for f in fst),
        causal=tuple(
            CausalSnp(
                index=int(j), id=str(ids[j]), chrom=str(chrom[j]), pos=int(pos[j]),
                ancestral_alt_freq=float(ancestral[j]),
                case_log_odds_ratio=float(case_effect[c]), qt_effect=float(qt_effect[c]),
            )
            for c, j in enumerate(causal)
        ),
        high_missing_samples=tuple(sample_ids[bad_samples].tolist()),
        high_missing_snps=tuple(ids[bad_snps].tolist()),
        case_model={
            "link": "logit",
            "intercept": case_intercept,
            "genotype_centring": "dosage - 2 * ancestral_alt_freq",
            "population_effects": population_case.tolist(),
            "covariate_effects": CASE_COVARIATES,
            "covariate_centres": centres,
        },
        qt_model={
            "link": "identity",
            "noise_sd": 1.0,
            "population_effects": population_qt.tolist(),
            "covariate_effects": QT_COVARIATES,
            "covariate_centres": centres,
        },
        diagnosis_model={
            "link": "logit",
            "intercept": raw_intercept,
            "coefficients": dict(zip([name for name, _, _ in FEATURES], raw_coefficients.tolist())),
            "standardised_intercept": DIAGNOSIS_INTERCEPT,
            "standardised_coefficients": dict(zip([name for name, _, _ in FEATURES], DIAGNOSIS_STANDARDISED)),
        },
        survival_model={
            "groups": list(SURVIVAL_GROUPS[:survival_groups]),
            "hazard_ratios": list(SURVIVAL_HAZARD_RATIOS[:survival_groups]),
            "baseline_median_days_at_age_55": SURVIVAL_MEDIAN_DAYS,
            "age_log_hazard_ratio_per_year": SURVIVAL_AGE_LOG_HR,
            "censoring": "uniform(300, 2500) days, follow-up ends at 2000 days",
            "stratum": "sex",
        },
    )
    (out / "truth.json").write_text(json.dumps(truth.to_json(), indent=1) + "\n", encoding="utf-8")
    return truth


def _check_arguments(sites, samples, snps, seed, n_causal, missing_rate, n_populations,
                     fst_range, rare_fraction, pheno_missing_rate, survival_groups) -> None:
    def need(condition: bool, message: str) -> None:
        if not condition:
            raise InputError(f"simulate: {message}")

    for name, value in (("sites", sites), ("samples", samples), ("snps", snps), ("seed", seed),
                        ("n_causal", n_causal), ("n_populations", n_populations),
                        ("survival_groups", survival_groups)):
        need(isinstance(value, (int, np.integer)) and not isinstance(value, bool),
             f"{name} must be an integer, got {value!r}")
    need(sites >= 1, f"sites must be >= 1, got {sites}")
    need(samples >= 4 * sites, f"samples must be >= 4 per site ({4 * sites}), got {samples}")
    need(seed >= 0, f"seed must be >= 0, got {seed}")
    need(n_causal >= 0, f"n_causal must be >= 0, got {n_causal}")
    need(snps >= n_causal + 2, f"snps must be >= n_causal + 2 ({n_causal + 2}), got {snps}")
    need(n_populations >= 1, f"n_populations must be >= 1, got {n_populations}")
    need(0.0 <= missing_rate < 0.5, f"missing_rate must be in [0, 0.5), got {missing_rate}")
    need(0.0 <= pheno_missing_rate < 0.5, f"pheno_missing_rate must be in [0, 0.5), got {pheno_missing_rate}")
    need(0.0 <= rare_fraction <= 1.0, f"rare_fraction must be in [0, 1], got {rare_fraction}")
    need(len(fst_range) == 2 and 0.0 < fst_range[0] <= fst_range[1] < 1.0,
         f"fst_range must be (low, high) with 0 < low <= high < 1, got {fst_range}")
    need(survival_groups in (2, 3), f"survival_groups must be 2 or 3, got {survival_groups}")
