"""The trend test's covariate checks: clear errors, never garbage.

Collinear covariates (a duplicated column), a covariate too wide for the
fixed-point square (values far from the mean) and a constant covariate each
stop the analysis with an InputError naming the covariate, after one revealed
bit per check (policy gwas.covariate_check); a well-posed design gives the
reference's statistic.
"""
from __future__ import annotations

import numpy as np
import pytest

from parties.analyses import gwas_inputs
from parties.cohort import StoredCohort
from parties.harness import ChildError, run_threads
from protocols import association as assoc
from protocols import qc as qcp
from protocols import reference as ref
from tests.memcohort import make_submissions

POLICY = {**{k: list(v) for k, v in qcp.POLICY.items()}, **{k: list(v) for k, v in assoc.POLICY.items()}}
OPTIONS = {"pheno": "CASE", "covar_names": "A,B", "mind": None, "geno": None, "maf": 0.05, "hwe": None,
           "het_min": None, "het_max": None, "het_sd": None, "pcs": 0}


def _node(ctx, subs, options):
    cohort = StoredCohort(ctx, subs)
    qc, pcs, y, kind, cov, names, public = gwas_inputs(ctx, cohort, options)
    assoc.trend_test(ctx, cohort, qc, y, pcs=pcs, covariates=cov, covariate_names=names)
    return qc.pca_ok


def _cohort(rng, a, b):
    sizes = [80, 70]
    G = [rng.binomial(2, 0.3, size=(n, 40)).astype(np.int8) for n in sizes]
    y = [(rng.random(n) < 0.5).astype(float) for n in sizes]
    edges = np.cumsum([0] + sizes)
    cov = [(["A", "B"], np.column_stack([a[edges[i]:edges[i + 1]], b[edges[i]:edges[i + 1]]]))
           for i in range(2)]
    subs, seeds = make_submissions(G, 3, block_snps=32, phenotypes=[{"CASE": (v, "binary")} for v in y],
                                   covariates=cov)
    return subs, seeds, G, y


@pytest.mark.parametrize("case, message", [
    ("collinear", "collinear"),
    ("wide", "rescale"),
    ("constant", "constant"),
])
def test_bad_covariates_give_clear_errors(case, message):
    rng = np.random.default_rng(7)
    a = rng.normal(50, 10, 150)
    b = {"collinear": 2 * a - 3, "wide": rng.normal(0, 1e5, 150), "constant": np.full(150, 4.0)}[case]
    subs, seeds, _, _ = _cohort(rng, a, b)
    with pytest.raises(ChildError, match=message):
        run_threads(3, _node, (subs, OPTIONS), extra_seeds=seeds, policy=POLICY)


def test_good_covariates_match_the_reference():
    rng = np.random.default_rng(8)
    a, b = rng.normal(50, 10, 150), rng.integers(0, 2, 150).astype(float)
    subs, seeds, G, y = _cohort(rng, a, b)
    out = run_threads(3, _node, (subs, OPTIONS), extra_seeds=seeds, policy=POLICY, full=True)
    from mpc import field
    total = out[0]["outputs"][-1][1]
    for o in out[1:3]:
        total = field.add(total, o["outputs"][-1][1])
    r = field.decode_fixed(total, 28)
    tested = out[0]["result"]
    g = np.vstack(G)
    site = np.repeat([0, 1], [80, 70])
    tt = ref.trend_test(np.where(g < 0, 0, g), g < 0, g == 1, np.concatenate(y), np.column_stack([a, b]), None,
                        np.ones(150, bool), tested, site=site)
    assert np.allclose(150 * r ** 2, tt.chisq, rtol=1e-5, atol=1e-6)
