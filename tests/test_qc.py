"""Secure QC against the plaintext reference, filter by filter.

Every threshold of protocols.qc (--mind, --geno, --maf, --hwe, --het-min,
--het-max, --het-sd) on a cohort built to trip each of them: the keep sets
and the per-SNP reasons must be identical to protocols.reference.qc.
"""
from __future__ import annotations

import numpy as np
import pytest

from parties.cohort import StoredCohort
from parties.harness import run_threads
from protocols import qc as qcp
from protocols import reference as ref
from tests.memcohort import make_submissions

POLICY = {k: list(v) + ["analyst"] for k, v in qcp.POLICY.items()}


def _job(ctx, subs, opts, pheno_missing, chunk_snps=qcp.CHUNK_SNPS):
    from mpc.shared import SharedArray

    cohort = StoredCohort(ctx, subs)
    extra = [("pheno", SharedArray.public(ctx, pheno_missing.astype(np.int64)))] if pheno_missing is not None else []
    keep, names = qcp.sample_qc(ctx, cohort, opts, extra)
    res = qcp.snp_qc(ctx, cohort, opts, keep, chunk_snps=chunk_snps)
    return np.concatenate(keep), res.snp_keep, res.snp_reason, res.pca_ok


@pytest.fixture(scope="module")
def cohort():
    rng = np.random.default_rng(21)
    sizes, m = [110, 90, 60], 240
    p = rng.uniform(0.004, 0.6, m)
    G = [rng.binomial(2, p, size=(n, m)).astype(np.int8) for n in sizes]
    for g in G:
        g[rng.random(g.shape) < 0.02] = -1
        g[:2] = np.where(rng.random((2, m)) < 0.25, -1, g[:2])            # high-missingness samples
        g[2, :] = np.where(g[2] >= 0, 1, -1)                                # an all-heterozygous sample
        g[3, :] = np.where(g[3] >= 0, 2 * (g[3] > 0), -1)                   # a sample without heterozygotes
        g[:, 5] = np.where(rng.random(g.shape[0]) < 0.3, -1, g[:, 5])       # a high-missingness SNP
        g[:, 10:13] = np.where(g[:, 10:13] >= 0, 1, -1)                     # HWE violations
    subs, seeds = make_submissions(G, 3, block_snps=64)
    allg = np.vstack(G)
    return subs, seeds, np.where(allg < 0, 0, allg), allg < 0, allg == 1


@pytest.mark.parametrize("opts", [
    dict(mind=0.1, geno=0.05, maf=0.02, hwe=1e-6),
    dict(het_min=0.2, het_max=0.55),
    dict(mind=0.1, het_sd=2.0),
    dict(maf=0.0, hwe=1e-3, geno=0.0),
])
def test_secure_qc_equals_reference(cohort, opts):
    subs, seeds, d, m, h = cohort
    pheno_missing = np.zeros(d.shape[0], bool)
    pheno_missing[[7, 150]] = True
    keep, snp_keep, reason, _ = run_threads(3, _job, (subs, qcp.QcOptions(**opts), pheno_missing),
                                            extra_seeds=seeds, policy=POLICY)[0]
    r = ref.qc(d, m, h, pheno_missing=pheno_missing, **opts)
    assert np.array_equal(keep, r.sample_keep)
    assert np.array_equal(snp_keep, r.snp_keep)
    assert np.array_equal(reason, r.snp_reason)
    assert (~keep).sum() >= 2


def test_snp_qc_in_chunks_equals_one_batch(cohort):
    """Chunks of 37 SNPs (7 chunks, the last one short, not aligned with the
    64-SNP storage blocks) give the same keep mask, reasons and PCA set."""
    subs, seeds, d, m, h = cohort
    opts = qcp.QcOptions(mind=0.1, geno=0.05, maf=0.02, hwe=1e-6)
    chunked = run_threads(3, _job, (subs, opts, None, 37), extra_seeds=seeds, policy=POLICY)[0]
    r = ref.qc(d, m, h, mind=0.1, geno=0.05, maf=0.02, hwe=1e-6)
    assert np.array_equal(chunked[0], r.sample_keep)
    assert np.array_equal(chunked[1], r.snp_keep)
    assert np.array_equal(chunked[2], r.snp_reason)
    assert set(r.snp_reason) >= {"", "geno", "hwe", "maf"}
    kept = r.sample_keep
    alt, n_obs = d[kept].sum(axis=0), (~m[kept]).sum(axis=0)
    polymorphic = (alt >= 1) & (alt <= 2 * n_obs - 1)
    assert np.array_equal(chunked[3], r.snp_keep & polymorphic)


def test_indicators_stored_before_narrow_masks_still_read(cohort):
    """Submissions stored as field elements for the 0/1 matrices (before narrow
    masks) are read by their dtype and give the same QC."""
    from mpc import field
    from mpc.prg import Prg
    from mpc.triples import narrow_mask_ints, narrow_mask_width
    from parties.cohort import array_label, is_narrow

    subs, seeds, d, m, h = cohort
    w = narrow_mask_width(3)
    legacy = []
    for sub in subs:
        arrays = dict(sub.arrays)
        for name, masked in sub.arrays.items():
            if not is_narrow(name):
                continue
            label = array_label(sub["submission"], name)
            x = masked.copy()
            for s in seeds[sub["submission"]]:
                x += narrow_mask_ints(s, label, x.shape, w).astype(np.int64)
            old = field.from_int(x)
            for s in seeds[sub["submission"]]:
                old = field.sub(old, Prg(s, label).field(x.shape))
            arrays[name] = old
        legacy.append(type(sub)(sub.meta, arrays, sub.snps_text))
    opts = qcp.QcOptions(mind=0.1, geno=0.05, maf=0.02, hwe=1e-6)
    got = run_threads(3, _job, (legacy, opts, None), extra_seeds=seeds, policy=POLICY)[0]
    r = ref.qc(d, m, h, mind=0.1, geno=0.05, maf=0.02, hwe=1e-6)
    assert any(a.dtype == np.uint64 for a in legacy[0].arrays.values())
    assert np.array_equal(got[0], r.sample_keep) and np.array_equal(got[1], r.snp_keep)
    assert np.array_equal(got[2], r.snp_reason)
