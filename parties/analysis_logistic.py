"""The ``logreg`` and ``gwas-logistic`` analyses: secure logistic regression.

    mpcgwas run logreg --label NAME [--features A,B,..] [--standardize] [--l2 L] [--no-intercept]
    mpcgwas run gwas-logistic [QC / PCA options of gwas] [--top K] [--wald-iters T]

``logreg`` fits a diagnosis model: the binary phenotype NAME (PLINK coding
1/2, or 0/1 with ``submit --pheno-01``) on the sites' ``features.tsv``
columns, pooled (protocols.logistic.train).  Observations with a missing
label or feature are dropped; the nodes learn only how many per site.
Coefficients are on the features' own units, or with ``--standardize`` per
standard deviation of each feature (population SD over the complete
observations, features centred) — the output says which.  ``--l2`` is a
ridge penalty on the summed log-likelihood, never on the intercept (as
scikit-learn's C = 1/l2).  Writes OUT/logreg.tsv (TERM BETA SE Z_STAT P)
and the same table in summary.json.

``gwas-logistic`` runs QC and PCA as ``gwas`` does, fits the null model
(intercept, PCs, covariates) once, runs a score test for every SNP, then a
full Wald fit for the K SNPs with the largest score statistics
(protocols.logistic).  Writes OUT/gwas_logistic.tsv in the style of
``plink2 --glm`` (#CHROM POS ID REF ALT A1 OBS_CT SCORE_CHISQ SCORE_P BETA
SE Z_STAT P; A1 is the ALT allele, the Wald columns are NA outside the top
K and for a fit that failed: its reason is in summary.json), qc_snps.tsv,
qc_samples.tsv, Manhattan and QQ plots of the score test.

What the analyst receives is listed in protocols.logistic.POLICY: for logreg
the coefficients and their covariance on the fitted (standardised) scale and,
for the report in the features' own units, each feature's mean and 1/SD over
the complete observations (the unit conversion is done here, in plaintext);
for gwas-logistic the score statistic of every tested SNP and the Wald
estimate, SE and status of the top K.  The nodes learn one-bit checks
(classes present, feature ranges, constant / collinear columns, convergence,
conditioning), the per-site counts of complete observations, and for the
top-K search the SNP counts above public thresholds and the chosen indices.
The logistic phases are not checkpointed (QC and PCA are, as for gwas).
"""
from __future__ import annotations

import numpy as np

from mpc.errors import InputError
from protocols import logistic as lp

LOGREG_OPTIONS = (
    ("--label", dict(default=None, help="binary phenotype to predict (logreg)")),
    ("--features", dict(default="", help="comma-separated feature columns (default: all of features.tsv)")),
    ("--standardize", dict(action="store_true",
                           help="report coefficients per SD of each feature (features centred and scaled)")),
    ("--l2", dict(type=float, default=0.0, help="ridge penalty on the summed log-likelihood (0: none)")),
    ("--no-intercept", dict(action="store_true", help="fit without an intercept")),
    ("--max-iter", dict(type=int, default=16, help="Newton iterations (fixed: the rounds are public)")),
)

GWAS_LOGISTIC_OPTIONS = (
    ("--top", dict(type=int, default=100, help="SNPs with the largest score statistic to fit fully (Wald)")),
    ("--wald-iters", dict(type=int, default=4, help="Newton steps of each Wald fit (from the null fit)")),
)


# ------------------------------------------------------------ logreg

def _logreg_node(ctx, cohort, options):
    cohort.require("phenotypes", "logreg")
    cohort.require("features", "logreg")
    label = options.get("label")
    phenos = cohort.table_names("phenotypes")
    if not label:
        raise InputError(f"logreg needs --label NAME, one of the phenotypes: {', '.join(phenos)}")
    if label not in phenos:
        raise InputError(f"--label {label!r} is not a phenotype every site submitted ({', '.join(phenos)})")
    y, y_missing, kind = cohort.phenotype(label)
    if kind != "binary":
        raise InputError(f"--label {label!r} is quantitative: logreg needs a binary (case/control) label")
    wanted = [f for f in str(options.get("features") or "").split(",") if f]
    X, x_missing, names = cohort.features(wanted or None)
    opts = lp.TrainOptions(intercept=not options.get("no_intercept"), l2=float(options.get("l2") or 0.0),
                           standardize=bool(options.get("standardize")),
                           iters=int(options.get("max_iter") or lp.TrainOptions.iters))
    res = lp.train(ctx, X, y, [y_missing, x_missing], cohort.sample_counts, list(names), opts)
    return {"label": label, "terms": res.terms, "n_obs": res.n_obs, "n_samples": cohort.n_samples,
            "site_counts": dict(zip(cohort.providers, res.site_counts)), "kappa": res.kappa,
            "intercept": opts.intercept, "standardize": opts.standardize, "l2": opts.l2,
            "iterations": opts.iters, "converged": res.converged}


def _logreg_finalize(result, options, out_dir):
    from parties import report

    pub = result.public
    scale = None if pub["standardize"] else result.outputs.get(("logreg.scale", "scale"))
    mean = None if pub["standardize"] else result.outputs.get(("logreg.scale", "mean"))
    c = lp.coefficients(pub["terms"], result.outputs[("logreg.fit", "beta")], result.outputs[("logreg.fit", "ncov")],
                        int(pub["n_obs"]), bool(pub["intercept"]), pub["kappa"], mean, scale)
    with open(out_dir / "logreg.tsv", "w") as fh:
        fh.write("TERM\tBETA\tSE\tZ_STAT\tP\n")
        for row in zip(c.terms, c.beta, c.se, c.z, c.p):
            fh.write(f"{row[0]}\t{report.fmt(float(row[1]))}\t{report.fmt(float(row[2]))}\t"
                     f"{report.fmt(float(row[3]))}\t{report.fmt(float(row[4]), 4)}\n")
    units = ("per standard deviation of each feature (features centred and scaled to variance 1 over the "
             "complete observations)") if pub["standardize"] else "per unit of each feature as submitted"
    return {
        "label": pub["label"], "observations": pub["n_obs"], "samples_submitted": pub["n_samples"],
        "observations_per_site": pub["site_counts"], "intercept": pub["intercept"], "l2": pub["l2"],
        "coefficient_scale": "standardized" if pub["standardize"] else "raw", "coefficient_units": units,
        "newton_iterations": pub["iterations"], "converged": pub["converged"],
        "coefficients": [{"TERM": t, "BETA": float(b), "SE": float(s), "Z_STAT": float(z), "P": float(p)}
                         for t, b, s, z, p in zip(c.terms, c.beta, c.se, c.z, c.p)],
        "files": ["logreg.tsv"],
    }


# ------------------------------------------------------------ gwas-logistic

def _gwas_logistic_node(ctx, cohort, options):
    from parties.analyses import gwas_inputs

    top_k = int(options.get("top") if options.get("top") is not None else 100)
    wald_iters = int(options.get("wald_iters") or 4)
    if top_k < 0:
        raise InputError(f"--top must be >= 0, got {top_k}")
    if wald_iters < 1:
        raise InputError(f"--wald-iters must be >= 1, got {wald_iters}")
    qc, pcs, y, kind, cov, names, public = gwas_inputs(ctx, cohort, options)
    if kind != "binary":
        raise InputError(f"gwas-logistic needs a binary phenotype; {public['pheno']!r} is quantitative "
                         "(use gwas for the trend test)")
    # Checkpoints after the null fit and after the score test + top-K choice
    # (a resumed job re-sends their outputs; the Wald fits are the last phase).
    saved = ctx.resume("logistic-null")
    if saved is None:
        null = lp.null_model(ctx, y, pcs, cov, names)
        ctx.save("logistic-null", lp.null_state(null))
    else:
        null = lp.null_from_state(ctx, saved)
    tested = qc.pca_ok
    saved = ctx.resume("logistic-score")
    if saved is None:
        t = lp.score_test(ctx, cohort, qc, null, tested)
        chosen = lp.select_top(ctx, t, min(top_k, int(tested.sum()))) if top_k else np.zeros(0, dtype=np.int64)
        ctx.save("logistic-score", {"chosen": np.asarray(chosen, dtype=np.int64)})
    else:
        chosen = saved["chosen"]
    top = np.flatnonzero(tested)[chosen]
    mask = np.zeros(cohort.n_snps, dtype=bool)
    mask[top] = True
    lp.wald_top(ctx, cohort, qc, null, mask, iters=wald_iters)
    public.update(tested=tested.tolist(), top=[int(j) for j in top], n_kept=int(qc.n_kept),
                  top_k=top_k, wald_iters=wald_iters)
    return public


WALD_STATUS = ("collinear", "no_convergence", "ill_conditioned")


def _gwas_logistic_finalize(result, options, out_dir):
    from parties import report
    from parties.analyses import _write_pca_files, _write_qc_files

    pub = result.public
    snps, keep = _write_qc_files(result, out_dir)
    tested = np.array(pub["tested"], bool)
    top = np.array(pub["top"], dtype=np.int64)
    n1 = int(pub["n_kept"])
    m = len(snps)
    chisq = np.full(m, np.nan)
    t = result.outputs[("gwas_logistic.score", None)]
    chisq[tested] = n1 * t * t
    score_p = np.exp(-report.neglog10_p(chisq) * np.log(10))
    beta, se, z, p = (np.full(m, np.nan) for _ in range(4))
    failed = []
    if top.size:
        b = result.outputs[("gwas_logistic.wald", "beta")]
        s = result.outputs[("gwas_logistic.wald", "se_root_n")] / np.sqrt(n1)
        status = np.asarray(result.outputs[("gwas_logistic.wald", "status")], dtype=np.int64).reshape(3, -1)
        ok = ~status.any(axis=0)
        beta[top[ok]], se[top[ok]] = b[ok], s[ok]
        z[top] = beta[top] / se[top]
        p[top] = np.exp(-report.neglog10_p(z[top] ** 2) * np.log(10))
        for i in np.flatnonzero(~ok):
            failed.append({"ID": str(snps.id[top[i]]),
                           "status": ",".join(w for w, bit in zip(WALD_STATUS, status[:, i]) if bit)})
    with open(out_dir / "gwas_logistic.tsv", "w") as fh:
        fh.write("#CHROM\tPOS\tID\tREF\tALT\tA1\tOBS_CT\tSCORE_CHISQ\tSCORE_P\tBETA\tSE\tZ_STAT\tP\n")
        for j in np.flatnonzero(keep):
            fh.write(f"{snps.chrom[j]}\t{snps.pos[j]}\t{snps.id[j]}\t{snps.ref[j]}\t{snps.alt[j]}\t{snps.alt[j]}\t"
                     f"{n1}\t{report.fmt(chisq[j])}\t{report.fmt(score_p[j], 4)}\t{report.fmt(beta[j])}\t"
                     f"{report.fmt(se[j])}\t{report.fmt(z[j])}\t{report.fmt(p[j], 4)}\n")
    files = ["gwas_logistic.tsv", "qc_snps.tsv", "qc_samples.tsv", "manhattan.png", "qq.png"]
    if pub.get("sample_keep") is not None:
        np.savetxt(out_dir / "qc_sample_keep.txt", np.array(pub["sample_keep"], dtype=int), fmt="%d")
        files.append("qc_sample_keep.txt")
    files += _write_pca_files(result, out_dir)
    title = f"{pub['pheno']}: logistic score test, {pub['pcs']} PCs"
    report.manhattan(out_dir / "manhattan.png", snps.chrom[keep], snps.pos[keep], chisq[keep], title)
    report.qq(out_dir / "qq.png", chisq[keep], title)
    order = np.argsort(-np.nan_to_num(chisq, nan=-1))[:10]
    return {
        "phenotype": pub["pheno"], "covariates": pub["covariates"], "pcs": pub["pcs"],
        "samples_before_qc": pub["n_samples"], "samples_after_qc": n1,
        "snps_before_qc": pub["n_snps"], "snps_after_qc": int(keep.sum()), "snps_tested": int(tested.sum()),
        "pca_snps": pub["pca_snps"], "lambda_gc": round(report.genomic_control(chisq[keep]), 4),
        "wald_top_k": int(top.size), "wald_newton_steps": pub["wald_iters"], "wald_failed": failed,
        "top_hits": [{"ID": str(snps.id[j]), "CHROM": str(snps.chrom[j]), "POS": int(snps.pos[j]),
                      "SCORE_CHISQ": float(chisq[j]), "SCORE_P": float(score_p[j]),
                      "BETA": None if np.isnan(beta[j]) else float(beta[j]),
                      "SE": None if np.isnan(se[j]) else float(se[j]),
                      "P": None if np.isnan(p[j]) else float(p[j])}
                     for j in order if np.isfinite(chisq[j])],
        "files": files,
    }


def __getattr__(name):
    """``ANALYSES``, built on first use: parties.analyses imports this module to
    register it, so its names cannot be imported here at module level."""
    if name != "ANALYSES":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if "ANALYSES" not in globals():
        from parties.analyses import QC_OPTIONS, Analysis
        from protocols import association as assoc_protocol
        from protocols import pca as pca_protocol
        from protocols import qc as qc_protocol

        logreg_policy = {k: v for k, v in lp.POLICY.items() if k.startswith("logreg.")}
        gwas_policy = {k: v for k, v in lp.POLICY.items() if k.startswith("gwas_logistic.")}
        globals()["ANALYSES"] = {
            "logreg": Analysis("logreg", "logistic regression of a binary label on the sites' features (diagnosis model)",
                               _logreg_node, _logreg_finalize, logreg_policy, LOGREG_OPTIONS),
            "gwas-logistic": Analysis(
                "gwas-logistic", "QC, PCA, logistic null model, score test for every SNP and Wald fits of the top K",
                _gwas_logistic_node, _gwas_logistic_finalize,
                {**qc_protocol.POLICY, **pca_protocol.POLICY,
                 "gwas.covariate_check": assoc_protocol.POLICY["gwas.covariate_check"], **gwas_policy},
                tuple(QC_OPTIONS) + GWAS_LOGISTIC_OPTIONS),
        }
    return globals()["ANALYSES"]
