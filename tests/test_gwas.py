"""Secure GWAS (QC, PCA, trend test) against the plaintext reference and PLINK 2.

A simulated structured cohort (3 sites, 3 populations, confounded case/control
phenotype, a few causal SNPs, missing calls, rare SNPs, high-missingness
samples and SNPs) is masked as providers do and analysed by dealer + 3 nodes
(threads).  Checks:

- QC keep sets identical to protocols.reference.qc, and to plink2's --mind
  (samples) and --geno --maf (SNPs, on the same kept samples);
- secure PCs span the reference's randomized-PCA subspace (cosines >= 0.9999)
  and the exact PCs' real axes (cosines >= 0.99);
- CHISQ within 1e-5 relative of the reference running the same algorithm,
  for every SNP with CHISQ > 1;
- -log10 P correlation >= 0.999 with plink2 --glm (linear; the same PCs and
  covariates as covariates);
- the causal SNPs are the strongest hits; lambda_GC near 1 with PCs and
  inflated without them;
- with the policy entry gwas.pca_eigenvalues for the nodes: ordered PCs and
  eigenvalues against the reference (column by column), the exact PCs and
  plink2 --pca's eigenvalues, in 200 PCA rounds fewer.

Scale: 1200 samples x 4000 SNPs by default (threads, ~20 s).  The issue's full
scale runs through the real daemons (the analyst's files: a study policy that
also lets the analyst see the sample keep mask and the PCs, and a second study
that reveals the PCA eigenvalues to the nodes) with

    MPCGWAS_GWAS_SCALE=2000x20000 python -m pytest tests/test_gwas.py -v
"""
from __future__ import annotations

import os

import numpy as np
import pytest
from bed_reader import open_bed

from mpc.reveal import reveal
from parties import report
from parties.analyses import gwas_inputs, ritz_pcs
from parties.cohort import StoredCohort
from parties.harness import run_threads
from parties.local import LocalStudy
from parties.simulate import SimulationTruth, simulate
from parties.sites import read_site
from protocols import association as assoc
from protocols import pca
from protocols import qc as qcp
from protocols import reference as ref
from tests import plinkutil
from tests.memcohort import make_submissions

OPTIONS = {"pheno": "CASE", "covar_names": "AGE", "mind": 0.05, "geno": 0.05, "maf": 0.02, "hwe": 1e-6,
           "het_min": None, "het_max": None, "het_sd": None, "pcs": 5, "pca_oversample": 5,
           "pca_iters": 3, "pca_eig_iters": 10, "ld_dist": 100000, "pca_seed": 3}
POLICY = {**{k: list(v) for k, v in qcp.POLICY.items()}, **{k: list(v) for k, v in assoc.POLICY.items()},
          "test.pcs": ["nodes"], "gwas.pca_eigenvalues": ["analyst"]}


def _node(ctx, subs, options):
    cohort = StoredCohort(ctx, subs)
    qc, pcs, y, kind, cov, names, public = gwas_inputs(ctx, cohort, options)
    res = assoc.trend_test(ctx, cohort, qc, y, pcs=pcs, covariates=cov, covariate_names=names)
    pcs_open = reveal(ctx, pcs, "test.pcs") if pcs is not None else None
    return np.concatenate(qc.sample_keep), qc.snp_keep, qc.snp_reason, res.snp_mask, pcs_open, public


def _r_from(outputs_per_node, name="gwas.r"):
    """An output reconstructed from the nodes' shares (None if it was not sent)."""
    from mpc import field

    shares = [dict(((n, m.get("key")), (s, m["frac"])) for n, s, m in out) for out in outputs_per_node]
    if (name, None) not in shares[0]:
        return None
    total, frac = shares[0][(name, None)]
    for sh in shares[1:]:
        total = field.add(total, sh[(name, None)][0])
    return field.decode_fixed(total, frac)


def _daemon_runs(root, sites):
    """The same three runs through dealer + 3 node daemons, read back from the
    analyst's files (the "ordered" run in a study whose policy reveals the
    PCA eigenvalues to the nodes)."""
    runs = {}
    released = {"qc.sample_keep": ["nodes", "analyst"], "gwas.pcs": ["analyst"]}
    for name, policy, labels in (("study", released, ("pcs", "nopcs")),
                                 ("study_ordered", {**released, pca.EIGENVALUES: ["nodes", "analyst"]}, ("ordered",))):
        # Two threads per node for the genotype passes: the daemons' threaded path (--workers).
        study = LocalStudy(root / name, timeout=30.0, block_snps=1024, workers=2, policy=policy)
        try:
            for s, site in zip(sites, ("site1", "site2", "site3")):
                study.submit(s, site)
            for label in labels:
                runs[label] = _daemon_run(study, root / f"out_{label}", OPTIONS["pcs"] if label != "nopcs" else 0)
        finally:
            study.close()
    return runs


def _daemon_run(study, out, pcs):
    summary = study.run("gwas", out, **dict(OPTIONS, pcs=pcs))
    print(f"{out.name}: {summary['seconds']} s, phases {summary['phases']}")
    keep = np.loadtxt(out / "qc_sample_keep.txt", dtype=int).astype(bool)
    qc = plinkutil.read_table(out / "qc_snps.tsv")
    snp_keep = qc["KEPT"].astype(bool)
    reason = np.where(qc["REASON"] == ".", "", qc["REASON"]).astype("<U4")
    gw = plinkutil.read_table(out / "gwas.tsv")
    chisq = dict(zip(gw["ID"], gw["CHISQ"].astype(float)))
    tested = np.array([np.isfinite(chisq.get(i, np.nan)) for i in qc["ID"]])
    r = np.sqrt(np.array([chisq[i] for i in qc["ID"][tested]]) / keep.sum())
    pcs_open = np.loadtxt(out / "pcs.tsv", ndmin=2, skiprows=1) if pcs else None     # PC1.. (ordered)
    values = np.loadtxt(out / "pca.eigenval", ndmin=1) if pcs else None
    return {"result": (keep, snp_keep, reason, tested, pcs_open, summary), "r": r,
            "pca_rounds": summary["phases"].get("pca", {}).get("rounds"), "eigenvalues": values,
            "ordered": pcs_open}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("gwas")
    scale = os.environ.get("MPCGWAS_GWAS_SCALE")
    samples, snps = (int(x) for x in scale.split("x")) if scale else (1200, 4000)
    truth = simulate(out_dir=root / "sites", sites=3, samples=samples, snps=snps, seed=11, n_causal=4)
    sites = [root / "sites" / f"site{i}" for i in (1, 2, 3)]
    G, phen, cov = [], [], []
    for s in sites:
        site = read_site(s)
        with open_bed(s / "genotypes.bed") as bed:
            g = bed.read(dtype="int8")
        G.append(np.where(g < 0, -1, g).astype(np.int8))
        phen.append({"CASE": (site.phenotypes()["CASE"], "binary")})
        c = site.covariates()
        cov.append((["AGE"], np.asarray(c["AGE"]).reshape(-1, 1)))
    snps = read_site(sites[0]).snps
    if scale:
        runs = _daemon_runs(root, sites)
    else:
        subs, seeds = make_submissions(G, 3, block_snps=512, phenotypes=phen, covariates=cov,
                                       chrom=snps.chrom, pos=snps.pos)
        runs = {}
        for label, pcs, policy in (("pcs", OPTIONS["pcs"], POLICY), ("nopcs", 0, POLICY),
                                   ("ordered", OPTIONS["pcs"], {**POLICY, pca.EIGENVALUES: ["nodes", "analyst"]})):
            opts = dict(OPTIONS, pcs=pcs)
            out = run_threads(3, _node, (subs, opts), extra_seeds=seeds, policy=policy, full=True, timeout=900)
            outputs = [o["outputs"] for o in out[:3]]
            keep, pcs_open, public = out[0]["result"][0], out[0]["result"][4], out[0]["result"][5]
            ritz = _r_from(outputs, pca.EIGENVALUES)
            if ritz is not None:          # what the analyst makes of B = Uᵀ S U (parties.analyses)
                values, ordered = ritz_pcs(ritz, int(keep.sum()), pcs_open)
            else:                         # revealed to the nodes: the PCs came ordered
                values, ordered = public.get("pca_eigenvalues"), pcs_open
            runs[label] = {"result": out[0]["result"], "r": _r_from(outputs),
                           "pca_rounds": out[0]["traffic"].get("pca", {}).get("rounds"),
                           "eigenvalues": None if values is None else np.asarray(values), "ordered": ordered}
    allg = np.vstack(G)
    plain = {
        "dosage": np.where(allg < 0, 0, allg), "missing": allg < 0, "het": allg == 1,
        "y": np.concatenate([p["CASE"][0] for p in phen]),
        "age": np.concatenate([c[1][:, 0] for c in cov]),
        "site": np.concatenate([np.full(g.shape[0], i) for i, g in enumerate(G)]),
        "snps": snps,
    }
    return {"root": root, "sites": sites, "truth": truth, "runs": runs, "plain": plain}


def _reference_qc(plain):
    return ref.qc(plain["dosage"], plain["missing"], plain["het"], mind=OPTIONS["mind"], geno=OPTIONS["geno"],
                  maf=OPTIONS["maf"], hwe=OPTIONS["hwe"],
                  pheno_missing=np.isnan(plain["y"]) | np.isnan(plain["age"]))


def test_qc_keep_sets_equal_reference(study):
    keep, snp_keep, reason, _, _, _ = study["runs"]["pcs"]["result"]
    r = _reference_qc(study["plain"])
    assert np.array_equal(keep, r.sample_keep)
    assert np.array_equal(snp_keep, r.snp_keep)
    assert np.array_equal(reason, r.snp_reason)
    assert (~r.sample_keep).sum() > 0 and (~r.snp_keep).sum() > 0       # the filters did something


def test_qc_keep_sets_equal_plink2(study, tmp_path):
    keep, snp_keep, reason, _, _, _ = study["runs"]["pcs"]["result"]
    plain = study["plain"]
    prefix = plinkutil.merge_sites(study["sites"], tmp_path / "pooled")
    ids = np.array([l.split()[1] for l in (tmp_path / "pooled.fam").read_text().splitlines()])
    # --mind alone: the samples plink2 keeps, minus those without phenotype / covariate.
    plinkutil.run(["--bfile", prefix, "--mind", OPTIONS["mind"], "--write-samples", "--out", tmp_path / "mind"])
    kept_ids = set(plinkutil.read_ids(tmp_path / "mind.id")[1:]) if (tmp_path / "mind.id").exists() else set()
    plink_keep = np.isin(ids, list(kept_ids)) & ~np.isnan(plain["y"]) & ~np.isnan(plain["age"])
    assert np.array_equal(plink_keep, keep)
    # --geno --maf on exactly our kept samples.
    (tmp_path / "keep.txt").write_text("\n".join(f"{i}\t{i}" for i in ids[keep]) + "\n")
    plinkutil.run(["--bfile", prefix, "--keep", tmp_path / "keep.txt", "--geno", OPTIONS["geno"],
                   "--maf", OPTIONS["maf"], "--write-snplist", "--out", tmp_path / "snps"])
    plink_snps = set(plinkutil.read_ids(tmp_path / "snps.snplist"))
    ours = set(plain["snps"].id[snp_keep | (reason == "hwe")])            # HWE is not PLINK's exact test
    assert ours == plink_snps


def _pca_snps(plain):
    """The PCA's SNPs by the reference: QC-kept, polymorphic, LD-thinned."""
    r = _reference_qc(plain)
    poly = r.snp_keep & (r.alt_freq > 0) & (r.alt_freq < 1)
    return ref.ld_thin(plain["snps"].chrom, plain["snps"].pos, poly, OPTIONS["ld_dist"])


def test_pcs_match_reference_and_real_axes(study):
    keep, _, _, tested, pcs, _ = study["runs"]["pcs"]["result"]
    plain, truth = study["plain"], study["truth"]
    mask = _pca_snps(plain)
    kw = dict(k=OPTIONS["pcs"], oversample=OPTIONS["pca_oversample"], iters=OPTIONS["pca_iters"],
              eig_iters=OPTIONS["pca_eig_iters"], seed=OPTIONS["pca_seed"], site=plain["site"])
    rp = ref.pca(plain["dosage"], plain["missing"], keep, mask, **kw)
    assert ref.principal_cosines(pcs, rp.pcs).min() >= 0.9999
    n_real = len(set(truth.population.tolist())) - 1
    exact = ref.pca_exact(plain["dosage"], plain["missing"], keep, mask, k=n_real, site=plain["site"])
    assert ref.principal_cosines(pcs, exact.pcs)[:n_real].min() >= 0.99


def test_ordered_pcs_and_eigenvalues(study):
    """With the policy entry gwas.pca_eigenvalues for the nodes, the small
    eigenproblem reveals only S's spectrum (mpc.linalg.eigh_rotated): the PCs
    are then PC1..PCk individually — each within cosine 0.9999 of the
    reference's Ritz vector (same projection and power iterations), the real
    axes within 0.99 of the exact PCs — and the eigenvalues (PLINK's GRM
    scale) within 1e-6 relative of the reference's, the real axes' within 2 %
    of the exact ones.  The PCA costs 200 rounds fewer than without."""
    run = study["runs"]["ordered"]
    keep, pcs = run["result"][0], run["ordered"]
    plain, truth = study["plain"], study["truth"]
    mask = _pca_snps(plain)
    rp = ref.pca(plain["dosage"], plain["missing"], keep, mask, k=OPTIONS["pcs"],
                 oversample=OPTIONS["pca_oversample"], iters=OPTIONS["pca_iters"], seed=OPTIONS["pca_seed"],
                 site=plain["site"], eig="rotated")
    cos = np.abs(np.sum(pcs * rp.pcs, axis=0))
    assert cos.min() >= 0.9999, cos
    n1 = int(keep.sum())
    values = run["eigenvalues"]
    np.testing.assert_allclose(values, n1 * rp.eigenvalues, rtol=1e-6)
    assert np.all(np.diff(values) <= 0)
    n_real = len(set(truth.population.tolist())) - 1
    exact = ref.pca_exact(plain["dosage"], plain["missing"], keep, mask, k=n_real, site=plain["site"])
    assert np.abs(np.sum(pcs[:, :n_real] * exact.pcs, axis=0)).min() >= 0.99
    np.testing.assert_allclose(values[:n_real], n1 * exact.singular_values ** 2, rtol=0.02)
    rounds = {label: study["runs"][label]["pca_rounds"] for label in ("pcs", "ordered")}
    assert rounds["pcs"] - rounds["ordered"] >= 200, rounds


def test_analyst_eigenvalues_and_ordered_pcs_without_a_node_reveal(study):
    """The default policy (gwas.pca_eigenvalues for the analyst only): the
    analyst gets B = Uᵀ S U; its eigenvalues (x N1) match the reference's
    B = Uᵀ S U within 1e-5 relative and, on the real axes, the exact PCA
    within 2 %; the basis rotated by its eigenvectors gives the real axes
    individually (cosines >= 0.99).  The nodes revealed nothing for it."""
    run = study["runs"]["pcs"]
    keep, values, ordered = run["result"][0], run["eigenvalues"], run["ordered"]
    plain, truth = study["plain"], study["truth"]
    mask = _pca_snps(plain)
    rp = ref.pca(plain["dosage"], plain["missing"], keep, mask, k=OPTIONS["pcs"],
                 oversample=OPTIONS["pca_oversample"], iters=OPTIONS["pca_iters"],
                 eig_iters=OPTIONS["pca_eig_iters"], seed=OPTIONS["pca_seed"], site=plain["site"])
    n1 = int(keep.sum())
    expected = n1 * np.sort(np.linalg.eigvalsh(rp.u.T @ rp.s @ rp.u))[::-1]
    np.testing.assert_allclose(values, expected, rtol=1e-5)
    n_real = len(set(truth.population.tolist())) - 1
    exact = ref.pca_exact(plain["dosage"], plain["missing"], keep, mask, k=n_real, site=plain["site"])
    np.testing.assert_allclose(values[:n_real], n1 * exact.singular_values ** 2, rtol=0.02)
    assert np.abs(np.sum(ordered[:, :n_real] * exact.pcs, axis=0)).min() >= 0.99


def test_eigenvalues_match_plink2_pca(study, tmp_path):
    """The released eigenvalues of the real axes against plink2 --pca on the
    same samples and SNPs, within 1 %.  Both are eigenvalues of the
    variance-standardised relationship matrix, but plink2 divides each entry
    by the number of SNPs observed in both samples ("correcting for
    missingness") where ours divides by M3 (missing calls imputed): with 1 %
    missing calls its entries are ~2 % larger, so ours are scaled by the mean
    over sample pairs of M3 / (SNPs observed in both) first."""
    run = study["runs"]["ordered"]
    keep = run["result"][0]
    plain, truth = study["plain"], study["truth"]
    mask = _pca_snps(plain)
    prefix = plinkutil.merge_sites(study["sites"], tmp_path / "pooled")
    ids = np.array([l.split()[1] for l in (tmp_path / "pooled.fam").read_text().splitlines()])
    (tmp_path / "keep.txt").write_text("\n".join(f"{i}\t{i}" for i in ids[keep]) + "\n")
    (tmp_path / "snps.txt").write_text("\n".join(plain["snps"].id[mask]) + "\n")
    plinkutil.run(["--bfile", prefix, "--keep", tmp_path / "keep.txt", "--extract", tmp_path / "snps.txt",
                   "--pca", OPTIONS["pcs"], "--out", tmp_path / "pca"])
    theirs = np.loadtxt(tmp_path / "pca.eigenval")
    observed = (~plain["missing"][keep][:, mask]).astype(float)
    both = observed @ observed.T
    correction = (mask.sum() / both)[~np.eye(len(both), dtype=bool)].mean()
    n_real = len(set(truth.population.tolist())) - 1
    ours = run["eigenvalues"][:n_real] * correction
    np.testing.assert_allclose(ours, theirs[:n_real], rtol=0.01)


def test_chisq_matches_reference(study):
    keep, _, _, tested, pcs, _ = study["runs"]["pcs"]["result"]
    plain = study["plain"]
    r = study["runs"]["pcs"]["r"]
    # The reference's own PCs (same public projection and iterations), not the secure ones.
    rq = _reference_qc(plain)
    poly = rq.snp_keep & (rq.alt_freq > 0) & (rq.alt_freq < 1)
    mask = ref.ld_thin(plain["snps"].chrom, plain["snps"].pos, poly, OPTIONS["ld_dist"])
    rp = ref.pca(plain["dosage"], plain["missing"], keep, mask, k=OPTIONS["pcs"],
                 oversample=OPTIONS["pca_oversample"], iters=OPTIONS["pca_iters"],
                 eig_iters=OPTIONS["pca_eig_iters"], seed=OPTIONS["pca_seed"], site=plain["site"])
    tt = ref.trend_test(plain["dosage"], plain["missing"], plain["het"], plain["y"], plain["age"][:, None],
                        rp.pcs, keep, tested, site=plain["site"])
    chisq = keep.sum() * r * r
    big = tt.chisq > 1
    assert big.sum() > 50
    rel = np.abs(chisq[big] - tt.chisq[big]) / tt.chisq[big]
    assert rel.max() <= 1e-5, f"max relative CHISQ error {rel.max():.2e}"


def test_plink2_glm_agrees(study, tmp_path):
    keep, snp_keep, _, tested, pcs, _ = study["runs"]["pcs"]["result"]
    plain = study["plain"]
    r = study["runs"]["pcs"]["r"]
    prefix = plinkutil.merge_sites(study["sites"], tmp_path / "pooled")
    ids = np.array([l.split()[1] for l in (tmp_path / "pooled.fam").read_text().splitlines()])
    kept = ids[keep]
    y = plain["y"][keep]
    # Case/control coded 3/4 so that plink2 fits the linear model.
    (tmp_path / "pheno.txt").write_text("#FID\tIID\tY\n" + "".join(
        f"{i}\t{i}\t{3 + int(v)}\n" for i, v in zip(kept, y)))
    cols = [f"PC{j + 1}" for j in range(pcs.shape[1])] + ["AGE"]
    (tmp_path / "covar.txt").write_text("#FID\tIID\t" + "\t".join(cols) + "\n" + "".join(
        f"{i}\t{i}\t" + "\t".join(f"{v:.12g}" for v in row) + "\n"
        for i, row in zip(kept, np.column_stack([pcs, plain["age"][keep]]))))
    (tmp_path / "keep.txt").write_text("\n".join(f"{i}\t{i}" for i in kept) + "\n")
    snp_ids = plain["snps"].id[tested]
    (tmp_path / "extract.txt").write_text("\n".join(snp_ids) + "\n")
    plinkutil.run(["--bfile", prefix, "--keep", tmp_path / "keep.txt", "--extract", tmp_path / "extract.txt",
                   "--pheno", tmp_path / "pheno.txt", "--covar", tmp_path / "covar.txt",
                   "--covar-variance-standardize", "--glm", "hide-covar", "--out", tmp_path / "glm"])
    glm = plinkutil.read_table(tmp_path / "glm.Y.glm.linear")
    theirs = dict(zip(glm["ID"], -np.log10(glm["P"].astype(float))))
    ours = report.neglog10_p(keep.sum() * r * r)
    pairs = np.array([(o, theirs[s]) for s, o in zip(snp_ids, ours) if np.isfinite(theirs.get(s, np.nan))])
    assert len(pairs) > 0.95 * len(snp_ids)
    assert np.corrcoef(pairs[:, 0], pairs[:, 1])[0, 1] >= 0.999


def test_causal_snps_found_and_lambda(study):
    truth: SimulationTruth = study["truth"]
    plain = study["plain"]
    keep = study["runs"]["pcs"]["result"][0]
    n1 = keep.sum()
    lam = {}
    for label in ("pcs", "nopcs"):
        tested = study["runs"][label]["result"][3]
        chisq = n1 * study["runs"][label]["r"] ** 2
        lam[label] = report.genomic_control(chisq)
        if label == "pcs":
            ids = plain["snps"].id[tested]
            causal = {c.id for c in truth.causal}
            top = set(ids[np.argsort(-chisq)[:2 * len(causal)]])
            assert causal <= top, (causal, top)
            neglog = dict(zip(ids, report.neglog10_p(chisq)))
            assert all(neglog[c] > 4 for c in causal), {c: neglog[c] for c in causal}
    assert lam["pcs"] < 1.1, lam
    assert lam["nopcs"] > 1.3, lam
