"""Genotype passes Z W and Zᵀ Q (protocols.genotype_products): exact against
plaintext, with the block products on one thread and on several.

The imputed matrix holds integers (dosage 2^f, or the site mean) and W, Q are
public integers here, so both products are exact integers: the secure result
must equal the plaintext one exactly, for every row/column selection, and the
threaded pass (``ctx.workers``) must give the same field elements.
"""
from __future__ import annotations

import numpy as np
import pytest

from mpc import field
from mpc.params import Params
from mpc.shared import SharedArray
from parties.cohort import StoredCohort
from parties.harness import run_threads
from parties.provider import impute_site_mean
from protocols.genotype_products import GenotypeMatrix
from tests.memcohort import make_submissions

F = Params().f


def _job(ctx, subs, keep, snp_mask, W, Q, workers, matrix):
    ctx.workers = workers
    Z = GenotypeMatrix(ctx, StoredCohort(ctx, subs), keep, snp_mask, matrix)
    zw = Z.z_times(SharedArray.public(ctx, W), Z.frac, ctx.params)
    ztq = Z.zt_times(SharedArray.public(ctx, Q), Z.frac, ctx.params)
    return zw.share, ztq.share


def _open(results):
    out = []
    for k in range(2):
        total = results[0][k]
        for r in results[1:]:
            total = field.add(total, r[k])
        out.append(field.to_int64(total))
    return out


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(8)
    sizes, m = [37, 52, 29], 150
    G = [rng.binomial(2, rng.uniform(0.05, 0.5, m), size=(n, m)).astype(np.int8) for n in sizes]
    for g in G:
        g[rng.random(g.shape) < 0.05] = -1
    subs, seeds = make_submissions(G, 3, block_snps=32)
    keep = [rng.random(n) < 0.8 for n in sizes]
    snp_mask = rng.random(m) < 0.6
    plain = {}
    for matrix in ("imputed", "missing"):
        rows = []
        for g, k in zip(G, keep):
            miss = g < 0
            if matrix == "imputed":
                imp = field.to_int64(impute_site_mean(np.where(miss, 0, g), miss.astype(np.uint8), F)[0])
            else:
                imp = miss.astype(np.int64)
            rows.append(imp[k][:, snp_mask])
        plain[matrix] = np.vstack(rows)
    return subs, seeds, keep, snp_mask, plain


@pytest.mark.parametrize("matrix", ["imputed", "missing"])
def test_passes_exact_and_the_same_on_several_threads(data, matrix):
    subs, seeds, keep, snp_mask, plain = data
    rng = np.random.default_rng(3)
    Z = plain[matrix]
    W = rng.integers(-50, 50, size=(Z.shape[1], 4))
    Q = rng.integers(-50, 50, size=(Z.shape[0], 3))
    results = {}
    for workers in (1, 3):
        shares = run_threads(3, _job, (subs, keep, snp_mask, W, Q, workers, matrix), extra_seeds=seeds)
        results[workers] = _open(shares)
    zw, ztq = results[1]
    assert np.array_equal(zw, Z @ W)
    assert np.array_equal(ztq, Z.T @ Q)
    assert all(np.array_equal(a, b) for a, b in zip(results[1], results[3]))
