"""The analyses a study can run: node-side protocol call and analyst-side report.

Each Analysis names the protocol function the nodes run on the pooled cohort
(``node``), the reveal-policy entries it needs (``policy``, written into new
studies), its command-line options, and the analyst-side ``finalize`` that
turns reconstructed outputs into result files and a summary dict.

``node(ctx, cohort, options)`` returns a dict of public information (values
every node knows: sample counts, the SNP list, revealed QC masks) that node 0
sends to the analyst with the results.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mpc.errors import InputError
from mpc.reveal import disclose, output
from parties import analysis_logrank
from protocols import association as assoc_protocol
from protocols import freq as freq_protocol
from protocols import pca as pca_protocol
from protocols import qc as qc_protocol
from protocols import reference


@dataclass(frozen=True)
class Analysis:
    name: str
    help: str
    node: object
    finalize: object
    policy: dict
    options: tuple = ()   # (flag, argparse kwargs) pairs


# ------------------------------------------------------------ freq

def _freq_node(ctx, cohort, options):
    cohort.require("genotypes", "freq")
    freq_protocol.allele_counts(ctx, cohort)
    return {"n_samples": cohort.n_samples, "sample_counts": dict(zip(cohort.providers, cohort.sample_counts)),
            "snps": cohort.snps_text()}


def _freq_finalize(result, options, out_dir):
    from parties.cohort import SnpInfo

    snps = SnpInfo(result.public["snps"])
    n = int(result.public["n_samples"])
    alt = result.outputs[("freq.counts", "alt")].astype(np.int64)
    miss = result.outputs[("freq.counts", "missing")].astype(np.int64)
    obs = 2 * (n - miss)
    with np.errstate(invalid="ignore", divide="ignore"):
        alt_freq = np.where(obs > 0, alt / np.maximum(obs, 1), np.nan)
    missing_rate = miss / n
    path = out_dir / "freq.tsv"
    with open(path, "w") as fh:
        fh.write("#CHROM\tPOS\tID\tREF\tALT\tALT_FREQS\tMISSING_RATE\tOBS_CT\n")
        for row in zip(snps.chrom, snps.pos, snps.id, snps.ref, snps.alt, alt_freq, missing_rate, obs):
            fh.write("\t".join(str(v) for v in row[:5]) + f"\t{row[5]:.6g}\t{row[6]:.6g}\t{row[7]}\n")
    maf = np.minimum(alt_freq, 1 - alt_freq)
    return {
        "n_samples": n,
        "sample_counts": result.public["sample_counts"],
        "n_snps": int(len(snps)),
        "mean_missing_rate": float(missing_rate.mean()) if len(snps) else None,
        "snps_maf_below_0.01": int(np.sum(maf < 0.01)),
        "files": ["freq.tsv"],
    }


# ------------------------------------------------------------ gwas

def _rate(text):
    """A threshold option: a number, or 'none' / 'off' for no filter."""
    if text is None or str(text).lower() in ("none", "off", ""):
        return None
    return float(text)


QC_OPTIONS = (
    ("--pheno", dict(default=None, help="phenotype column (default: the first one)")),
    ("--covar-names", dict(default="", help="comma-separated covariate columns; 'all' for every one")),
    ("--mind", dict(type=_rate, default=0.1, help="max sample missing rate ('none' to disable)")),
    ("--geno", dict(type=_rate, default=0.1, help="max SNP missing rate")),
    ("--maf", dict(type=_rate, default=0.01, help="min minor allele frequency")),
    ("--hwe", dict(type=_rate, default=1e-6, help="min Hardy-Weinberg p (chi-square approximation)")),
    ("--het-min", dict(type=_rate, default=None, help="min observed heterozygosity rate")),
    ("--het-max", dict(type=_rate, default=None, help="max observed heterozygosity rate")),
    ("--het-sd", dict(type=_rate, default=None, help="max distance from mean heterozygosity, in SDs")),
    ("--qc-chunk-snps", dict(type=int, default=None,
                             help=f"SNPs per batch of SNP QC tests (default {qc_protocol.CHUNK_SNPS}); "
                                  "bounds memory")),
    ("--pcs", dict(type=int, default=10, help="principal components to adjust for (0: none)")),
    ("--pca-oversample", dict(type=int, default=10)),
    ("--pca-iters", dict(type=int, default=4, help="power iterations")),
    ("--pca-eig-iters", dict(type=int, default=10, help="subspace iterations on the small matrix")),
    ("--ld-dist", dict(type=int, default=100000, help="LD thinning distance for PCA SNPs (bp)")),
    ("--pca-seed", dict(type=int, default=0, help="seed of the public random projection")),
)


def _qc_options(options) -> "qc_protocol.QcOptions":
    try:
        return qc_protocol.QcOptions(mind=options.get("mind"), geno=options.get("geno"),
                                     maf=options.get("maf"), hwe=options.get("hwe"),
                                     het_min=options.get("het_min"), het_max=options.get("het_max"),
                                     het_sd=options.get("het_sd"))
    except ValueError as exc:
        raise InputError(str(exc)) from None


def _chunk(options, name: str, default: int) -> int:
    """A chunk-size option: a positive number of SNPs (default when not given)."""
    value = options.get(name)
    if value is None:
        return default
    if int(value) < 1:
        raise InputError(f"--{name.replace('_', '-')} must be a positive number of SNPs, got {value}")
    return int(value)


def gwas_inputs(ctx, cohort, options):
    """QC and PCA shared by the GWAS analyses: returns (qc, pcs, y, kind, covariates, names, public)."""
    cohort.require("genotypes", "a GWAS")
    cohort.require("phenotypes", "a GWAS")
    pheno = options.get("pheno") or cohort.table_names("phenotypes")[0]
    y, y_missing, kind = cohort.phenotype(pheno)
    extra = [("pheno", y_missing)]
    cov, names = None, []
    wanted = [c for c in str(options.get("covar_names") or "").split(",") if c]
    if wanted:
        cov, c_missing, names = cohort.covariates(None if wanted == ["all"] else wanted)
        extra.append(("covar", c_missing))
    qopts = _qc_options(options)
    saved = ctx.resume("qc")
    if saved is None:
        with ctx.phase("qc"):
            keep, tests = qc_protocol.sample_qc(ctx, cohort, qopts, extra)
            qc = qc_protocol.snp_qc(ctx, cohort, qopts, keep,
                                    chunk_snps=_chunk(options, "qc_chunk_snps", qc_protocol.CHUNK_SNPS))
        ctx.save("qc", {"keep": keep, "tests": tests, "snp_keep": qc.snp_keep, "snp_reason": qc.snp_reason,
                        "pca_ok": qc.pca_ok, "n_kept": qc.n_kept, "alt": qc.alt, "miss": qc.miss, "c1": qc.c1})
    else:
        keep, tests = saved["keep"], saved["tests"]
        qc = qc_protocol.QcResult(sample_keep=keep, snp_keep=saved["snp_keep"], snp_reason=saved["snp_reason"],
                                  pca_ok=saved["pca_ok"], n_kept=saved["n_kept"], alt=saved["alt"],
                                  miss=saved["miss"], c1=saved["c1"])
    if qc.n_kept < 3 or not qc.snp_keep.any():
        raise InputError(f"QC kept {qc.n_kept} samples and {int(qc.snp_keep.sum())} SNPs: "
                         f"nothing to analyse; relax the thresholds")
    pcs, n_pca, eigenvalues = None, 0, None
    if int(options.get("pcs", 0)) > 0:
        saved = ctx.resume("pca")
        if saved is None:
            popts = pca_protocol.PcaOptions(k=int(options["pcs"]), oversample=int(options["pca_oversample"]),
                                            iters=int(options["pca_iters"]),
                                            eig_iters=int(options["pca_eig_iters"]),
                                            ld_dist=int(options["ld_dist"]), seed=int(options["pca_seed"]))
            try:
                res = pca_protocol.run_pca(ctx, cohort, qc, popts)
            except ValueError as exc:
                raise InputError(str(exc)) from None
            pcs, n_pca, eigenvalues = res.pcs, res.n_snps, res.eigenvalues
            if res.ritz is not None:              # the analyst's Rayleigh-Ritz matrix (pca step 4)
                output(ctx, res.ritz, pca_protocol.EIGENVALUES)
            ctx.save("pca", {"pcs": pcs, "n_pca": n_pca, "eigenvalues": eigenvalues})
        else:
            pcs, n_pca, eigenvalues = saved["pcs"], saved["n_pca"], saved.get("eigenvalues")
    allkeep = np.concatenate(keep)
    y_kept = y[allkeep]
    cov_kept = None if cov is None else cov[allkeep]
    public = {
        "sample_keep": _disclosed(ctx, allkeep, "qc.sample_keep"),
        "n_samples": cohort.n_samples, "n_snps": cohort.n_snps,
        "sample_counts": dict(zip(cohort.providers, cohort.sample_counts)),
        "kept_counts": dict(zip(cohort.providers, [int(k.sum()) for k in keep])),
        "sample_tests": tests, "snps": cohort.snps_text(),
        "snp_keep": qc.snp_keep.tolist(), "snp_reason": qc.snp_reason.tolist(),
        "pheno": pheno, "pheno_kind": kind, "covariates": names, "pcs": int(options.get("pcs", 0)),
        "pca_snps": n_pca, "pcs_ordered": eigenvalues is not None,
        "pca_eigenvalues": None if eigenvalues is None else _disclosed_floats(ctx, eigenvalues),
    }
    return qc, pcs, y_kept, kind, cov_kept, names, public


def _disclosed(ctx, mask, name):
    value = disclose(ctx, mask, name)
    return None if value is None else np.asarray(value, dtype=int).tolist()


def _disclosed_floats(ctx, values):
    value = disclose(ctx, values, pca_protocol.EIGENVALUES)
    return None if value is None else [float(v) for v in value]


GWAS_OPTIONS = (
    ("--assoc-chunk-snps", dict(type=int, default=None,
                                help="tested SNPs per association chunk, each checkpointed when done "
                                     f"(default {assoc_protocol.CHUNK_SNPS})")),
)


def _gwas_node(ctx, cohort, options):
    qc, pcs, y, kind, cov, names, public = gwas_inputs(ctx, cohort, options)
    if pcs is not None and ctx.policy.allows("gwas.pcs", "analyst"):
        output(ctx, pcs, "gwas.pcs")
    if kind == "quantitative":
        y = assoc_protocol.standardise(ctx, y)
    res = assoc_protocol.trend_test(ctx, cohort, qc, y, pcs=pcs, covariates=cov, covariate_names=names,
                                    chunk_snps=_chunk(options, "assoc_chunk_snps", assoc_protocol.CHUNK_SNPS))
    public["tested"] = res.snp_mask.tolist()
    return public


def _write_qc_files(result, out_dir):
    """qc_snps.tsv and qc_samples.tsv (counts per site only)."""
    from parties.cohort import SnpInfo

    pub = result.public
    snps = SnpInfo(pub["snps"])
    keep, reason = np.array(pub["snp_keep"], bool), np.array(pub["snp_reason"], str)
    with open(out_dir / "qc_snps.tsv", "w") as fh:
        fh.write("ID\tKEPT\tREASON\n")
        for sid, k, r in zip(snps.id, keep, reason):
            fh.write(f"{sid}\t{int(k)}\t{r or '.'}\n")
    fails = result.outputs.get(("qc.sample_counts", "fails"))
    tests = pub["sample_tests"]
    with open(out_dir / "qc_samples.tsv", "w") as fh:
        fh.write("SITE\tSUBMITTED\tKEPT" + "".join(f"\tFAIL_{t.upper()}" for t in tests) + "\n")
        for p, site in enumerate(pub["sample_counts"]):
            row = [site, pub["sample_counts"][site], pub["kept_counts"][site]]
            row += [int(fails[t, p]) for t in range(len(tests))] if fails is not None else []
            fh.write("\t".join(str(v) for v in row) + "\n")
    return snps, keep


def ritz_pcs(ritz, n1: int, basis=None):
    """The analyst's Rayleigh-Ritz step (protocols.pca step 4): from B = Uᵀ S U,
    the eigenvalues in decreasing order on PLINK's scale (N1 times B's) and,
    given the released basis Q U, the PCs PC1..PCk = Q U V (V: B's
    eigenvectors in that order); None for the PCs without a basis."""
    ritz = np.asarray(ritz, dtype=float)
    w, V = reference.ritz_vectors(ritz, ritz.shape[0])
    pcs = None if basis is None else np.asarray(basis, dtype=float) @ V
    return (w * n1).tolist(), pcs


def _write_pca_files(result, out_dir) -> list:
    """pca.eigenval (PLINK's scale) and pca_eigenvalues.png when the policy
    released the eigenvalues; pcs.tsv when it released the PCs: the ordered
    PC1..PCk (each signed so that its largest entry is positive) when the
    eigenvalues were released too, else an orthonormal basis of the PC
    subspace (header BASIS1..), plus pcs.png (PC1 against PC2, by site).

    The eigenvalues come from the nodes (revealed to them: the PCs are then
    ordered already) or, to the analyst alone, as B = Uᵀ S U: its
    eigenvectors V rotate the basis into the Ritz vectors, PCs = basis V."""
    from parties import report

    pub, files = result.public, []
    values = pub.get("pca_eigenvalues")
    pcs = result.outputs.get(("gwas.pcs", None))
    ordered = bool(pub.get("pcs_ordered"))
    ritz = result.outputs.get((pca_protocol.EIGENVALUES, None))
    if ritz is not None:
        values, pcs = ritz_pcs(ritz, sum(pub["kept_counts"].values()), pcs)
        ordered = pcs is not None
    if values is not None:
        np.savetxt(out_dir / "pca.eigenval", np.asarray(values), fmt="%.10g")
        report.scree(out_dir / "pca_eigenvalues.png", values, f"{pub['pheno']}: PCA eigenvalues")
        files += ["pca.eigenval", "pca_eigenvalues.png"]
    if pcs is None:
        return files
    pcs = np.asarray(pcs, dtype=float)
    if ordered:
        lead = pcs[np.argmax(np.abs(pcs), axis=0), np.arange(pcs.shape[1])]
        pcs = pcs * np.where(lead < 0, -1.0, 1.0)
    name = "PC" if ordered else "BASIS"
    np.savetxt(out_dir / "pcs.tsv", pcs, delimiter="\t", fmt="%.12g", comments="",
               header="\t".join(f"{name}{i + 1}" for i in range(pcs.shape[1])))
    files.append("pcs.tsv")
    if ordered and pcs.shape[1] >= 2:
        sites = np.repeat(list(pub["kept_counts"]), list(pub["kept_counts"].values()))
        report.pc_scatter(out_dir / "pcs.png", pcs[:, 0], pcs[:, 1], sites, f"{pub['pheno']}: PC1 and PC2")
        files.append("pcs.png")
    return files


def _gwas_finalize(result, options, out_dir):
    from parties import report

    pub = result.public
    snps, keep = _write_qc_files(result, out_dir)
    tested = np.array(pub["tested"], bool)
    n1 = sum(pub["kept_counts"].values())
    r = result.outputs[("gwas.r", None)]
    chisq = np.full(len(snps), np.nan)
    chisq[tested] = n1 * r * r
    p = np.exp(-report.neglog10_p(chisq) * np.log(10))
    with open(out_dir / "gwas.tsv", "w") as fh:
        fh.write("#CHROM\tPOS\tID\tREF\tALT\tA1\tOBS_CT\tCHISQ\tP\n")
        for j in np.flatnonzero(keep):
            fh.write(f"{snps.chrom[j]}\t{snps.pos[j]}\t{snps.id[j]}\t{snps.ref[j]}\t{snps.alt[j]}\t"
                     f"{snps.alt[j]}\t{n1}\t{report.fmt(chisq[j])}\t{report.fmt(p[j], 4)}\n")
    files = ["gwas.tsv", "qc_snps.tsv", "qc_samples.tsv", "manhattan.png", "qq.png"]
    if pub.get("sample_keep") is not None:
        np.savetxt(out_dir / "qc_sample_keep.txt", np.array(pub["sample_keep"], dtype=int), fmt="%d")
        files.append("qc_sample_keep.txt")
    files += _write_pca_files(result, out_dir)
    title = f"{pub['pheno']}: trend test, {pub['pcs']} PCs"
    report.manhattan(out_dir / "manhattan.png", snps.chrom[keep], snps.pos[keep], chisq[keep], title)
    report.qq(out_dir / "qq.png", chisq[keep], title)
    order = np.argsort(-np.nan_to_num(chisq, nan=-1))[:10]
    lam = report.genomic_control(chisq[keep])
    return {
        "phenotype": pub["pheno"], "covariates": pub["covariates"], "pcs": pub["pcs"],
        "samples_before_qc": pub["n_samples"], "samples_after_qc": n1,
        "snps_before_qc": pub["n_snps"], "snps_after_qc": int(keep.sum()), "snps_tested": int(tested.sum()),
        "pca_snps": pub["pca_snps"], "lambda_gc": round(lam, 4),
        "top_hits": [{"ID": str(snps.id[j]), "CHROM": str(snps.chrom[j]), "POS": int(snps.pos[j]),
                      "CHISQ": float(chisq[j]), "P": float(p[j])} for j in order if np.isfinite(chisq[j])],
        "files": files,
    }


ANALYSES = {
    "freq": Analysis("freq", "allele frequency and missingness per SNP (plink2 --freq --missing)",
                     _freq_node, _freq_finalize, freq_protocol.POLICY),
    "gwas": Analysis("gwas", "QC, PCA and the covariate-adjusted trend test for every kept SNP",
                     _gwas_node, _gwas_finalize,
                     {**qc_protocol.POLICY, **pca_protocol.POLICY, **assoc_protocol.POLICY},
                     tuple(QC_OPTIONS) + GWAS_OPTIONS),
    "logrank": analysis_logrank.ANALYSIS,
}


def default_policy() -> dict:
    """Every analysis' policy entries: what a new study allows."""
    out = {}
    for a in ANALYSES.values():
        for name, to in a.policy.items():
            out[name] = sorted(set(out.get(name, ())) | set(to))
    return out


from parties import analysis_logistic  # noqa: E402  (it needs the names above)

ANALYSES.update(analysis_logistic.ANALYSES)
