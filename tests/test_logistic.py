"""Secure logistic regression (protocols/logistic.py) against statsmodels, the reference and PLINK 2.

Model training on scikit-learn's breast-cancer data (569 patients, split over
three providers):

- the ten "mean ..." features, standardised: coefficients within 1e-3
  absolute and p-values within 1e-3 relative of statsmodels' Logit (radius,
  perimeter and area are nearly collinear: smallest eigenvalue of their
  correlation matrix 3e-4);
- the same features in their own units with missing values, and with
  --standardize: the reference fit on the complete observations;
- all 30 features are completely separable: a SeparationError without a
  penalty, the penalised fit (protocols.reference.logistic_fit) with one;
- constant, collinear and out-of-range columns and a single-class label stop
  with a clear message (a constant column with a penalty is fitted).

Logistic GWAS on a small simulated cohort with missing calls (site-mean
imputation): score statistics within 1e-3 relative of
protocols.reference.score_test (CHISQ >= 0.01; absolutely within 1e-5
below), the top-K set equal to the reference's, Wald β and SE of the top K
within 1e-4 relative of reference.wald_per_snp and of statsmodels; and every
truncation input of the protocol inside the bound it declares.

Through the real daemons (parties.local.LocalStudy): ``mpcgwas run logreg``
on simulated clinical features against the reference, and ``mpcgwas run
gwas-logistic`` against plink2 --glm (logistic, no-firth, same covariates)
on a cohort without missing calls after QC.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
import threading

import numpy as np
import pytest

from mpc import field
from parties.cohort import StoredCohort
from parties.harness import run_threads
from protocols import logistic as lp
from protocols import qc as qcp
from protocols import reference as R
from tests.memcohort import make_submissions

POLICY = {k: list(v) for k, v in {**lp.POLICY, **qcp.POLICY, "gwas.covariate_check": ("nodes", "analyst")}.items()}


@pytest.fixture(scope="module", autouse=True)
def single_blas_thread():
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=1):
        yield


def decoded(out, n_nodes=3) -> dict:
    """The analyst's reconstruction of every output: (name, key) -> array."""
    parts = {}
    for node in out[:n_nodes]:
        for name, share, meta in node["outputs"]:
            parts.setdefault((name, meta.get("key")), []).append((share, meta["frac"]))
    res = {}
    for key, shares in parts.items():
        total = shares[0][0]
        for sh, _ in shares[1:]:
            total = field.add(total, sh)
        frac = shares[0][1]
        res[key] = field.to_int64(total) if frac == 0 else field.decode_fixed(total, frac)
    return res


# ------------------------------------------------------------ model training

def _train_node(ctx, subs, opts):
    cohort = StoredCohort(ctx, subs)
    X, x_missing, names = cohort.features()
    y, y_missing, _ = cohort.phenotype("Y")
    return lp.train(ctx, X, y, [y_missing, x_missing], cohort.sample_counts, list(names), opts)


def secure_fit(X, y, names, **options):
    """Train on X, y (NaN = missing) split over three providers; returns the analyst's Coefficients."""
    parts = np.array_split(np.arange(len(y)), 3)
    geno = [np.zeros((len(r), 0), np.int8) for r in parts]
    subs, seeds = make_submissions(geno, 3, phenotypes=[{"Y": (y[r], "binary")} for r in parts],
                                   features=[(list(names), X[r]) for r in parts])
    opts = lp.TrainOptions(**options)
    out = run_threads(3, _train_node, (subs, opts), extra_seeds=seeds, policy=POLICY, full=True, timeout=300)
    res, dec = out[0]["result"], decoded(out)
    scale = None if opts.standardize else dec.get(("logreg.scale", "scale"))
    mean = None if opts.standardize else dec.get(("logreg.scale", "mean"))
    return lp.coefficients(res.terms, dec[("logreg.fit", "beta")], dec[("logreg.fit", "ncov")], res.n_obs,
                           opts.intercept, res.kappa, mean, scale), res, out


@pytest.fixture(scope="module")
def breast_cancer():
    from sklearn.datasets import load_breast_cancer
    data = load_breast_cancer()
    return data.data, data.target.astype(float), [str(n) for n in data.feature_names]


def _standardised(X):
    return (X - X.mean(axis=0)) / X.std(axis=0)


def test_mean_features_match_statsmodels(breast_cancer):
    import statsmodels.api as sm
    X, y, names = breast_cancer
    cols = [j for j, n in enumerate(names) if n.startswith("mean ")]
    Xs = _standardised(X[:, cols])
    c, res, out = secure_fit(Xs, y, [names[j] for j in cols])
    model = sm.Logit(y, sm.add_constant(Xs)).fit(method="newton", tol=1e-12, maxiter=100, disp=0)
    assert res.converged and res.n_obs == 569 and res.site_counts == [190, 190, 189]
    assert c.terms[0] == "const" and c.terms[1] == "mean radius"
    assert np.max(np.abs(c.beta - model.params)) < 1e-3
    assert np.max(np.abs(c.p / model.pvalues - 1)) < 1e-3
    assert np.max(np.abs(c.se / model.bse - 1)) < 1e-4
    # in practice much closer than the stated tolerances
    assert np.max(np.abs(c.beta - model.params)) < 1e-4
    rounds = sum(v["rounds"] for v in out[0]["traffic"].values())
    assert rounds < 2000


def test_raw_units_with_missing_values_and_standardize(breast_cancer):
    X, y, names = breast_cancer
    cols = [j for j, n in enumerate(names) if n.startswith("mean ")]
    Xm, ym = X[:, cols].copy(), y.copy()
    Xm[[5, 300], [2, 7]] = np.nan
    ym[[7, 420]] = np.nan
    complete = ~np.isnan(Xm).any(axis=1) & ~np.isnan(ym)
    ref = R.logistic_fit(Xm[complete], ym[complete])
    c, res, _ = secure_fit(Xm, ym, [names[j] for j in cols])
    assert res.n_obs == complete.sum() == 565
    assert np.max(np.abs(c.beta / ref.beta - 1)) < 1e-3
    assert np.max(np.abs(c.se / ref.se - 1)) < 1e-4
    assert np.max(np.abs(c.p / ref.p - 1)) < 1e-3
    # --standardize: per SD of each feature (population SD over the complete observations)
    Xc = Xm[complete]
    ref_std = R.logistic_fit((Xc - Xc.mean(axis=0)) / Xc.std(axis=0), ym[complete])
    c, _, _ = secure_fit(Xm, ym, [names[j] for j in cols], standardize=True)
    assert np.max(np.abs(c.beta - ref_std.beta)) < 1e-4
    assert np.max(np.abs(c.p / ref_std.p - 1)) < 1e-3


def test_separable_features_stop_without_penalty_and_fit_with_one(breast_cancer):
    X, y, names = breast_cancer
    Xs = _standardised(X)
    with pytest.raises(Exception, match="separated"):
        secure_fit(Xs, y, names, iters=10)
    ref = R.logistic_fit(Xs, y, l2=1.0)
    c, res, _ = secure_fit(Xs, y, names, l2=1.0, iters=10)
    assert res.converged
    assert np.max(np.abs(c.beta - ref.beta)) < 1e-4
    assert np.max(np.abs(c.se / ref.se - 1)) < 1e-4
    assert np.max(np.abs(c.p / ref.p - 1)) < 1e-3


def test_bad_columns_and_labels(breast_cancer):
    X, y, names = breast_cancer
    cols = [j for j, n in enumerate(names) if n.startswith("mean ")][:4]
    base, sub = X[:, cols], [names[j] for j in cols]
    constant = base.copy()
    constant[:, 1] = 2.5
    with pytest.raises(Exception, match="mean texture are constant .* duplicate the intercept"):
        secure_fit(constant, y, sub)
    # ... but with a penalty the constant column is fitted (coefficient 0, as the reference)
    ref = R.logistic_fit(constant, y, l2=2.0)
    c, _, _ = secure_fit(constant, y, sub, l2=2.0)
    # Unstandardised features: the intercept is 19.3, and the fixed-point error is
    # relative to a coefficient's size (measured up to 1.3e-5 of max(1, |beta|) over
    # 30 runs; an absolute 1e-4 failed about one run in ten).
    assert np.all(np.abs(c.beta - ref.beta) < 5e-5 * np.maximum(1.0, np.abs(ref.beta))) and abs(c.beta[2]) < 1e-6
    assert np.max(np.abs(c.se / ref.se - 1)) < 1e-4
    collinear = base.copy()
    collinear[:, 3] = collinear[:, 0] * 2.0 - collinear[:, 2] / 100.0
    with pytest.raises(Exception, match=r"rank deficient: mean radius, mean area are"):
        secure_fit(collinear, y, sub)
    big = base.copy()
    big[:, 3] *= 10.0                     # mean area in mm^2 x 10: up to 25 000
    with pytest.raises(Exception, match="mean area have values beyond"):
        secure_fit(big, y, sub)
    with pytest.raises(Exception, match="single class"):
        secure_fit(base, np.ones_like(y), sub)


# ------------------------------------------------------------ logistic GWAS

def _newton_inverse_job(ctx, H0, iters):
    from mpc.linalg import wide
    from mpc.shared import SharedArray

    H = SharedArray.public(ctx, H0, wide(ctx.params).f)
    with ctx.phase("inverse"):
        X, _ = lp.newton_inverse(ctx, H, iters)
        ctx.tuples.flush()
    return X, ctx.channel.stats.phases["inverse"]


def test_newton_inverse_known_answer_rounds_and_hops():
    """X = (I - (I - H)^(2^t)) H^-1 (known answer, within 1e-6) for a batch of
    SPD matrices; iters + 1 rounds (H's opening, one truncation per step) and
    as many hops plus 1: every step's products and truncation pairs are
    requested a round trip ahead (it waited for the dealer in every step)."""
    rng = np.random.default_rng(4)
    K, m, iters = 3, 4, 10
    A = rng.standard_normal((K, m, m))
    H0 = A @ A.transpose(0, 2, 1)
    H0 = H0 / (1.2 * np.linalg.eigvalsh(H0).max(axis=1))[:, None, None] + 0.05 * np.eye(m)
    res = run_threads(3, _newton_inverse_job, (H0, iters))
    total = res[0][0].share
    for r in res[1:]:
        total = field.add(total, r[0].share)
    X = field.decode_fixed(total, res[0][0].frac)
    E = np.linalg.matrix_power(np.eye(m) - H0, 2 ** iters)
    np.testing.assert_allclose(X, (np.eye(m) - E) @ np.linalg.inv(H0), atol=1e-6)
    stats = res[0][1]
    assert stats.rounds == iters + 1
    assert stats.hops <= stats.rounds + 1, (stats.rounds, stats.hops)


def _gwas_node(ctx, subs, top_k):
    cohort = StoredCohort(ctx, subs)
    y, y_missing, _ = cohort.phenotype("CASE")
    cov, c_missing, names = cohort.covariates()
    opts = qcp.QcOptions()
    keep, _ = qcp.sample_qc(ctx, cohort, opts, [("pheno", y_missing), ("covar", c_missing)])
    qc = qcp.snp_qc(ctx, cohort, opts, keep)
    allkeep = np.concatenate(keep)
    null = lp.null_model(ctx, y[allkeep], None, cov[allkeep], names)
    tested = qc.pca_ok
    t = lp.score_test(ctx, cohort, qc, null, tested)
    top = np.flatnonzero(tested)[lp.select_top(ctx, t, top_k)]
    mask = np.zeros(cohort.n_snps, dtype=bool)
    mask[top] = True
    lp.wald_top(ctx, cohort, qc, null, mask)
    return allkeep, tested, top


def _simulated_gwas(seed=3, sizes=(160, 130, 110), m=150):
    rng = np.random.default_rng(seed)
    G, P, C = [], [], []
    for s, n in enumerate(sizes):
        f = rng.uniform(0.05, 0.5, m)
        g = rng.binomial(2, f, size=(n, m)).astype(np.int8)
        g[rng.random(g.shape) < 0.02] = -1
        d = np.where(g < 0, 0, g)
        age = rng.normal(50 + 3 * s, 10, n)
        sex = rng.integers(0, 2, n).astype(float)
        eta = -0.4 + 0.03 * (age - 50) + 0.4 * sex + 0.9 * d[:, 3] - 0.7 * d[:, 10] + 0.5 * d[:, 20]
        case = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
        case[rng.random(n) < 0.02] = np.nan
        G.append(g)
        P.append({"CASE": (case, "binary")})
        C.append((["AGE", "SEX"], np.column_stack([age, sex])))
    return G, P, C


@pytest.fixture(scope="module")
def gwas_run():
    G, P, C = _simulated_gwas()
    subs, seeds = make_submissions(G, 3, block_snps=64, phenotypes=P, covariates=C)
    out = run_threads(3, _gwas_node, (subs, 12), extra_seeds=seeds, policy=POLICY, full=True, timeout=600)
    allg = np.vstack(G)
    y = np.concatenate([p["CASE"][0] for p in P])
    cov = np.vstack([c[1] for c in C])
    plain = dict(dosage=np.where(allg < 0, 0, allg).astype(np.uint8), missing=allg < 0, het=allg == 1, y=y,
                 C=np.column_stack([np.ones(len(y)), cov]),
                 site=np.concatenate([np.full(g.shape[0], i) for i, g in enumerate(G)]))
    return out, decoded(out), plain


def test_score_test_matches_reference(gwas_run):
    out, dec, plain = gwas_run
    keep, tested, top = out[0]["result"]
    n1 = int(keep.sum())
    ref = R.score_test(plain["dosage"], plain["missing"], plain["het"], plain["y"], plain["C"], keep, tested,
                       site=plain["site"])
    chisq = n1 * dec[("gwas_logistic.score", None)] ** 2
    big = ref.chisq >= 0.01
    assert big.sum() > 100
    assert np.max(np.abs(chisq[big] / ref.chisq[big] - 1)) < 1e-3
    assert np.max(np.abs(chisq[~big] - ref.chisq[~big])) < 1e-5
    # the top K are the reference's top K, causal SNPs first
    assert set(top) == set(ref.snp_index[np.argsort(-ref.chisq)[:12]])
    assert {3, 10, 20} <= set(top)
    rounds = {k: v["rounds"] for k, v in out[0]["traffic"].items()}
    assert rounds["logistic-score"] < 60 and rounds["logistic-top"] < 60


def test_wald_top_matches_reference_and_statsmodels(gwas_run):
    import statsmodels.api as sm
    out, dec, plain = gwas_run
    keep, tested, top = out[0]["result"]
    n1 = int(keep.sum())
    beta = dec[("gwas_logistic.wald", "beta")]
    se = dec[("gwas_logistic.wald", "se_root_n")] / math.sqrt(n1)
    assert not dec[("gwas_logistic.wald", "status")].any()
    ref = R.wald_per_snp(plain["dosage"], plain["missing"], plain["het"], plain["y"], plain["C"], keep, top,
                         site=plain["site"])
    assert np.all(ref.status == "")
    assert np.max(np.abs(beta / ref.beta - 1)) < 1e-4
    assert np.max(np.abs(se / ref.se - 1)) < 1e-4
    imputed = R.site_mean_imputed(plain["dosage"], plain["missing"], plain["site"])[keep]
    y, C = plain["y"][keep], plain["C"][keep]
    for k, j in enumerate(top[:4]):
        fit = sm.Logit(y, np.column_stack([C, imputed[:, j]])).fit(method="newton", tol=1e-12, disp=0)
        assert beta[k] == pytest.approx(fit.params[-1], rel=1e-4)
        assert se[k] == pytest.approx(fit.bse[-1], rel=1e-4)


def _gwas_pcs_node(ctx, subs, options):
    from mpc.reveal import reveal
    from parties.analyses import gwas_inputs

    cohort = StoredCohort(ctx, subs)
    qc, pcs, y, _, cov, names, _ = gwas_inputs(ctx, cohort, options)
    null = lp.null_model(ctx, y, pcs, cov, names)
    t = lp.score_test(ctx, cohort, qc, null, qc.pca_ok)
    top = np.flatnonzero(qc.pca_ok)[lp.select_top(ctx, t, 6)]
    mask = np.zeros(cohort.n_snps, dtype=bool)
    mask[top] = True
    lp.wald_top(ctx, cohort, qc, null, mask)
    return np.concatenate(qc.sample_keep), qc.pca_ok, top, reveal(ctx, pcs, "test.pcs")


def test_null_model_with_pcs():
    """The default analysis adjusts for PCs: score and Wald statistics against the
    reference with the same (revealed, for the test) PCs as covariates."""
    from protocols import association as assoc
    from protocols import pca as pcap

    options = {"pheno": "CASE", "covar_names": "AGE,SEX", "mind": None, "geno": None, "maf": 0.01, "hwe": None,
               "het_min": None, "het_max": None, "het_sd": None, "pcs": 2, "pca_oversample": 3, "pca_iters": 2,
               "pca_eig_iters": 8, "ld_dist": 1, "pca_seed": 1}
    G, P, C = _simulated_gwas(seed=11, sizes=(120, 100, 90), m=100)
    subs, seeds = make_submissions(G, 3, block_snps=64, phenotypes=P, covariates=C)
    policy = {**POLICY, **{k: list(v) for k, v in {**pcap.POLICY, **assoc.POLICY}.items()}, "test.pcs": ["nodes"]}
    out = run_threads(3, _gwas_pcs_node, (subs, options), extra_seeds=seeds, policy=policy, full=True, timeout=600)
    keep, tested, top, pcs = out[0]["result"]
    dec = decoded(out)
    allg = np.vstack(G)
    d, m = np.where(allg < 0, 0, allg).astype(np.uint8), allg < 0
    y = np.concatenate([p["CASE"][0] for p in P])
    cov = np.vstack([c[1] for c in C])
    site = np.concatenate([np.full(g.shape[0], i) for i, g in enumerate(G)])
    Cm = np.column_stack([np.ones(keep.sum()), pcs, cov[keep]])
    ref = R.score_test(d, m, d == 1, y, Cm, keep, tested, site=site)
    chisq = keep.sum() * dec[("gwas_logistic.score", None)] ** 2
    big = ref.chisq >= 0.01
    assert np.max(np.abs(chisq[big] / ref.chisq[big] - 1)) < 1e-3
    wald = R.wald_per_snp(d, m, d == 1, y, Cm, keep, top, site=site)
    beta = dec[("gwas_logistic.wald", "beta")]
    se = dec[("gwas_logistic.wald", "se_root_n")] / math.sqrt(keep.sum())
    assert np.max(np.abs(beta / wald.beta - 1)) < 1e-4 and np.max(np.abs(se / wald.se - 1)) < 1e-4


def test_every_truncation_input_is_within_its_bound(monkeypatch, breast_cancer):
    """The bounds this protocol declares for its own truncations hold on real
    runs (penalised raw-scale training, and a GWAS): each reconstructed input
    lies strictly inside 2^(bits - 1)."""
    real = lp.truncate_many
    seen, lock = {}, threading.Lock()

    def recording(ctx, xs, shifts, bits=None, plans=None):
        xs = list(xs)
        declared = [p.bits if p is not None else b for p, b in zip(plans or [None] * len(xs), bits)]
        with lock:
            seen.setdefault(ctx.index, []).append([(x.share.copy(), b) for x, b in zip(xs, declared)])
        return real(ctx, xs, shifts, bits, plans=plans)

    monkeypatch.setattr(lp, "truncate_many", recording)
    X, y, names = breast_cancer
    cols = [j for j, n in enumerate(names) if n.startswith("mean ")][:6]
    secure_fit(X[:, cols], y, [names[j] for j in cols], l2=0.5, iters=8)
    G, P, C = _simulated_gwas(seed=5, sizes=(80, 70, 60), m=40)
    subs, seeds = make_submissions(G, 3, block_snps=32, phenotypes=P, covariates=C)
    run_threads(3, _gwas_node, (subs, 6), extra_seeds=seeds, policy=POLICY, timeout=600)
    worst, count = -np.inf, 0
    for k in range(len(seen[0])):
        for j, (share, bits) in enumerate(seen[0][k]):
            total = share
            for node in (1, 2):
                total = field.add(total, seen[node][k][j][0])
            magnitude = float(np.max(np.abs(field.decode_fixed(total, 0)))) if total.size else 0.0
            count += 1
            if magnitude:
                worst = max(worst, math.log2(magnitude) - (bits - 1))
    print(f"{count} truncations; largest input: 2^{worst:.2f} of its bound")
    assert count > 100 and worst < 0


# ------------------------------------------------------------ through the daemons

def _run_cli(study, out, *args):
    cmd = [sys.executable, "-m", "parties.cli", "run", "--study", str(study.path), "--out", str(out),
           "--no-progress", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "summary.json").read_text())


def _table(path):
    lines = path.read_text().splitlines()
    header = lines[0].lstrip("#").split("\t")
    rows = [line.split("\t") for line in lines[1:]]
    return {h: np.array([r[i] for r in rows]) for i, h in enumerate(header)}


def _site_tables(sites):
    from parties.sites import read_site
    X, y, cov, ids = [], [], [], []
    for s in sites:
        site = read_site(s)
        X.append(site.features().values)
        y.append(site.phenotypes()["DIAGNOSIS"])
        c = site.covariates()
        cov.append(np.column_stack([c[n] for n in ("AGE", "SEX", "BMI")]))
        ids += list(site.sample_ids)
    return np.vstack(X), np.concatenate(y), np.vstack(cov), np.array(ids), read_site(sites[0]).features().names


@pytest.fixture(scope="module")
def daemon_study(tmp_path_factory):
    """Dealer + 3 node daemons holding three simulated sites (genotypes without missing
    calls outside the high-missingness samples / SNPs, covariates, clinical features,
    DIAGNOSIS and CASE), submitted once for both CLI tests."""
    from parties.local import LocalStudy
    from parties.simulate import simulate

    root = tmp_path_factory.mktemp("logistic_daemons")
    simulate(out_dir=root / "sites", sites=3, samples=500, snps=150, seed=9, n_causal=3, missing_rate=0.0)
    sites = [root / "sites" / f"site{i}" for i in (1, 2, 3)]
    study = LocalStudy(root / "study", timeout=30.0, policy={"qc.sample_keep": ["nodes", "analyst"]})
    try:
        for i, s in enumerate(sites):
            study.submit(s, f"site{i + 1}")
        yield study, sites
    finally:
        study.close()


def test_cli_logreg_end_to_end(daemon_study, tmp_path):
    study, sites = daemon_study
    X, y, _, _, names = _site_tables(sites)
    complete = ~np.isnan(y) & ~np.isnan(X).any(axis=1)
    summary = _run_cli(study, tmp_path / "out", "logreg", "--label", "DIAGNOSIS")["logreg"]
    ref = R.logistic_fit(X[complete], y[complete], names=list(names))
    table = _table(tmp_path / "out" / "logreg.tsv")
    assert list(table["TERM"]) == ["const"] + list(names)
    assert np.max(np.abs(table["BETA"].astype(float) / ref.beta - 1)) < 1e-4
    assert np.max(np.abs(table["SE"].astype(float) / ref.se - 1)) < 1e-4
    assert np.max(np.abs(table["P"].astype(float) / ref.p - 1)) < 1e-3
    assert summary["observations"] == int(complete.sum()) and summary["coefficient_scale"] == "raw"
    assert [r["TERM"] for r in summary["coefficients"]] == list(table["TERM"])
    assert {r["name"] for r in summary["reveals"]} == {"logreg.counts", "logreg.checks", "logreg.fit",
                                                       "logreg.scale"}
    std = study.run("logreg", tmp_path / "out2", label="DIAGNOSIS", standardize=True, l2=0.0,
                    no_intercept=False, max_iter=16, features="")
    Xc = X[complete]
    ref_std = R.logistic_fit((Xc - Xc.mean(axis=0)) / Xc.std(axis=0), y[complete])
    assert std["coefficient_scale"] == "standardized"
    assert np.max(np.abs(np.array([r["BETA"] for r in std["coefficients"]]) - ref_std.beta)) < 1e-4


def test_cli_gwas_logistic_matches_plink2(daemon_study, tmp_path):
    from tests import plinkutil

    study, sites = daemon_study
    _, _, cov, ids, _ = _site_tables(sites)
    summary = _run_cli(study, tmp_path / "out", "gwas-logistic", "--pheno", "CASE",
                       "--covar-names", "AGE,SEX,BMI", "--pcs", "0", "--mind", "0.05", "--geno", "0.05",
                       "--maf", "0.01", "--hwe", "none", "--top", "8")["gwas-logistic"]
    out = tmp_path / "out"
    table = _table(out / "gwas_logistic.tsv")
    assert list(table) == ["CHROM", "POS", "ID", "REF", "ALT", "A1", "OBS_CT", "SCORE_CHISQ", "SCORE_P",
                           "BETA", "SE", "Z_STAT", "P"]
    fitted = table["BETA"] != "NA"
    assert fitted.sum() == 8 == summary["wald_top_k"] and not summary["wald_failed"]
    keep = np.loadtxt(out / "qc_sample_keep.txt").astype(bool)
    kept = ids[keep]
    prefix = plinkutil.merge_sites(sites, tmp_path / "pooled")
    (tmp_path / "keep.txt").write_text("".join(f"{i}\t{i}\n" for i in kept))
    (tmp_path / "extract.txt").write_text("\n".join(table["ID"][fitted]) + "\n")
    (tmp_path / "covar.txt").write_text("#FID\tIID\tAGE\tSEX\tBMI\n" + "".join(
        f"{i}\t{i}\t" + "\t".join(f"{v:.12g}" for v in row) + "\n" for i, row in zip(kept, cov[keep])))
    pheno = [line.split("\t") for line in sum(((s / "phenotypes.tsv").read_text().splitlines()[1:]
                                              for s in sites), [])]
    (tmp_path / "pheno.txt").write_text("#FID\tIID\tCASE\n" + "".join(f"{r[1]}\t{r[1]}\t{r[2]}\n" for r in pheno))
    plinkutil.run(["--bfile", prefix, "--keep", tmp_path / "keep.txt", "--extract", tmp_path / "extract.txt",
                   "--pheno", tmp_path / "pheno.txt", "--covar", tmp_path / "covar.txt",
                   "--glm", "hide-covar", "no-firth", "--out", tmp_path / "glm"])
    glm = plinkutil.read_table(tmp_path / "glm.CASE.glm.logistic")
    theirs = {str(r["ID"]): r for r in glm}
    n_kept = int(keep.sum())
    for sid, b, se, n in zip(table["ID"][fitted], table["BETA"][fitted], table["SE"][fitted],
                             table["OBS_CT"][fitted]):
        row = theirs[sid]
        assert int(row["OBS_CT"]) == int(n) == n_kept          # no missing call left after QC
        sign = 1.0 if row["A1"] == row["ALT"] else -1.0        # plink2's A1 is the minor allele
        assert float(b) == pytest.approx(sign * math.log(float(row["OR"])), rel=1e-3)
        assert float(se) == pytest.approx(float(row["LOGOR_SE"]), rel=1e-3)
    assert summary["samples_after_qc"] == n_kept and (out / "manhattan.png").stat().st_size > 0
