"""Tests of mpc.linalg.orth, the secure Newton–Schulz orthonormalisation.

What is checked:

- the secure result equals protocols.reference.orth with the same schedule
  (fast and standard steps, the bound rounded up to a power of four, ridge)
  within 1e-7, and the exact polar factor (SVD) within 1e-7 once finished;
- fast steps alone keep the span exactly and leave singular values in the
  band [0.88, 1.09] (known answer of the step map);
- known answers for the cost: 2 (fast + standard) rounds (+1 when Y has no
  mask yet: the last step makes Q), and one hop more than rounds (every dealer request travels a
  step ahead of its values; only the first, G's, waits for the dealer);
- the with_root factor is (YᵀY + 4^e ridge I)^(-1/2).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from mpc import beaver, field, linalg
from mpc.shared import SharedArray
from parties.harness import run_threads
from protocols import reference as R

F = 36


def _job(ctx, Y0, steps, fast, bound, ridge, premask):
    Y = SharedArray.public(ctx, Y0, F)
    if premask:                      # a truncation output: comes masked
        Y = beaver.fixed_products(ctx, [("mul", Y, SharedArray.public(ctx, np.ones_like(Y0), F))],
                                  fmt=linalg.wide(ctx.params))[0]
    with ctx.channel.stats.phase("orth"):
        Q, W = linalg.orth(ctx, Y, steps, bound=bound, ridge=ridge, fast=fast, with_root=True)
    return Q, W, ctx.channel.stats.phases["orth"]


def secure_orth(Y0, steps, fast=0, bound=1.0, ridge=None, premask=False):
    res = run_threads(3, _job, (Y0, steps, fast, bound, ridge, premask))
    out = []
    for i in range(2):
        total = res[0][i].share
        for r in res[1:]:
            total = field.add(total, r[i].share)
        out.append(field.decode_fixed(total, res[0][i].frac))
    return out[0], out[1], res[0][2]


def columns(rng, n, scales):
    return rng.standard_normal((n, len(scales))) * np.asarray(scales) / math.sqrt(n)


@pytest.mark.parametrize("steps,fast,bound", [(24, 0, 1.0), (5, 8, 1.0), (5, 9, 7.0), (24, 0, 16.0)])
def test_orth_matches_reference_and_exact(steps, fast, bound):
    rng = np.random.default_rng(3)
    Y0 = columns(rng, 300, np.linspace(0.05, 1.0, 10))     # Gram eigenvalues 2.5e-3 .. 1
    Q, W, traffic = secure_orth(Y0, steps, fast, bound)
    # truncation errors (2^-36 each) grow with ||Z|| <= 1 / sqrt(smallest eigenvalue of A) ~ 80 here
    assert np.max(np.abs(Q - R.orth(Y0, steps, bound=bound, fast=fast))) < 1e-7
    assert np.max(np.abs(Q - R.orth_exact(Y0))) < 1e-7
    assert np.max(np.abs(W @ W - np.linalg.inv(Y0.T @ Y0))) < 1e-6 * np.max(np.abs(np.linalg.inv(Y0.T @ Y0)))
    assert traffic.rounds == 2 * (steps + fast) + 1
    assert traffic.hops == traffic.rounds + 1


@pytest.mark.parametrize("steps,fast", [(1, 0), (0, 1), (1, 1)])
def test_one_and_two_steps_match_the_reference(steps, fast):
    """The first step (Z0 = I) and the last (which makes Q) in every combination."""
    rng = np.random.default_rng(6)
    Y0 = columns(rng, 120, np.linspace(0.3, 1.0, 6))
    Q, _, traffic = secure_orth(Y0, steps, fast, bound=3.0)
    assert np.max(np.abs(Q - R.orth(Y0, steps, bound=3.0, fast=fast))) < 1e-8
    assert traffic.rounds == 2 * (steps + fast) + 1


def test_large_operands_make_q_after_the_last_step(monkeypatch):
    """Above FUSE_MAX_ELEMENTS, Q = Y Zk takes a round of its own (no extra n x l opening)."""
    monkeypatch.setattr(linalg, "FUSE_MAX_ELEMENTS", 100)
    rng = np.random.default_rng(3)
    Y0 = columns(rng, 300, np.linspace(0.05, 1.0, 10))
    Q, _, traffic = secure_orth(Y0, 5, 8, 7.0)
    assert np.max(np.abs(Q - R.orth(Y0, 5, bound=7.0, fast=8))) < 1e-7
    assert traffic.rounds == 2 * (5 + 8) + 2 and traffic.hops == traffic.rounds + 1


def test_fast_steps_keep_the_span():
    rng = np.random.default_rng(4)
    Y0 = columns(rng, 200, np.logspace(-1.5, 0, 8))         # Gram eigenvalues 1e-3 .. 1
    fast = R.ns_fast_steps(1e-3, 1)
    Q, _, traffic = secure_orth(Y0, 0, fast, premask=True)
    s = np.linalg.svd(Q, compute_uv=False)
    assert s.min() >= 0.88 and s.max() <= 1.09, s
    exact = R.orth_exact(Y0)
    assert np.max(np.abs(Q @ np.linalg.pinv(Q) - exact @ exact.T)) < 1e-8
    assert np.max(np.abs(Q - R.orth(Y0, 0, bound=1.0, fast=fast))) < 1e-8
    assert traffic.rounds == 2 * fast and traffic.hops == traffic.rounds + 1


def test_ridge_root():
    rng = np.random.default_rng(5)
    Y0 = columns(rng, 150, [1.0, 0.8, 0.5])
    Y0 = np.column_stack([Y0, Y0[:, 0] * 0.6 + Y0[:, 1] * 0.8])   # rank-deficient: unit-norm 4th column
    ridge = 2.0 ** -22
    Q, W, _ = secure_orth(Y0, 24, 0, bound=4.0, ridge=ridge)
    expect = np.linalg.inv(Y0.T @ Y0 + 4.0 * ridge * np.eye(4))
    assert np.max(np.abs(W @ W - expect)) < 1e-4 * np.max(np.abs(expect))
    basis = np.linalg.svd(Y0[:, :3], full_matrices=False)[0]
    assert np.max(np.abs(Q @ Q.T @ basis - basis)) < 1e-5     # Q still spans the columns (ridge ~1e-6)


def test_ns_fast_steps_known_answers():
    # m -> m (2 - m)^2 from 0.002: 0.00798, 0.0317, 0.123, 0.433, 1.06 (in the band)
    assert R.ns_fast_steps(0.002, 0) == 5
    assert R.ns_fast_steps(0.9, 0) == 0 and R.ns_fast_steps(0.5, 2) == 3
    m = np.linspace(R.NS_BAND_LOW, 1.185, 101)
    image = m * (R.NS_FAST_A - m) ** 2
    assert image.min() >= R.NS_BAND_LOW and image.max() <= 1.1852
    assert R.ns_steps_carry(1000) == 6 and R.ns_steps_start(1000) == 8 and R.ns_steps_eig(1000) == 11
    # standard steps from the band: 0.213 -> 0.036 -> 1e-3 -> 7e-7 -> 4e-13 (NS_FINISH_STEPS has one to spare)
    assert R.ns_finish_steps(R.NS_BAND_LOW) == 4 == R.NS_FINISH_STEPS - 1
    m = np.array([R.NS_BAND_LOW, 1.0, 1.185])
    for _ in range(R.NS_FINISH_STEPS):
        m = m * (1.5 - 0.5 * m) ** 2
    assert np.max(np.abs(m - 1)) < 1e-15


# ------------------------------------------------------------ eigh_rotated

def _eig_job(ctx, S0, k, name):
    fmt = linalg.wide(ctx.params)
    rotation = linalg.request_rotation(ctx, S0.shape[0], fmt)
    S = SharedArray.public(ctx, S0, fmt.f)
    with ctx.channel.stats.phase("eig"):
        U, values = linalg.eigh_rotated(ctx, S, rotation, k, name, fmt)
    return U, values, ctx.channel.stats.phases["eig"], ctx.policy.records


def test_eigh_rotated_matches_numpy_and_reveals_only_the_spectrum():
    """Known answer: the top-k eigenpairs of a symmetric S (numpy eigh) within
    1e-8, from 5 rounds; what the nodes saw (the policy records one (l, l)
    reveal) is Rᵀ S R: S's eigenvalues, not S."""
    rng = np.random.default_rng(5)
    l, k = 8, 3
    V, _ = np.linalg.qr(rng.standard_normal((l, l)))
    lam = np.array([0.9, 0.5, 0.3, 0.1, 0.05, 0.02, 0.01, 0.001])
    S0 = (V * lam) @ V.T
    res = run_threads(3, _eig_job, (S0, k, "test.spectrum"), policy={"test.spectrum": ["nodes"]})
    total = res[0][0].share
    for r in res[1:]:
        total = field.add(total, r[0].share)
    U = field.decode_fixed(total, res[0][0].frac)
    np.testing.assert_allclose(res[0][1], lam[:k], atol=1e-9)
    assert all(np.array_equal(r[1], res[0][1]) for r in res)         # every node has the leader's values
    cos = np.abs(np.sum(U * V[:, :k], axis=0))
    assert cos.min() >= 1 - 1e-8, cos
    np.testing.assert_allclose(U.T @ U, np.eye(k), atol=1e-9)
    assert res[0][2].rounds == 5
    assert [(r["name"], r["shape"], r["to"]) for r in res[0][3]] == [("test.spectrum", [l, l], "nodes")]


def test_eigh_rotated_needs_the_policy_entry():
    from parties.harness import ChildError

    with pytest.raises(ChildError, match="PolicyError.*does not allow revealing 'test.spectrum' to nodes"):
        run_threads(3, _eig_job, (np.eye(4) * 0.5, 2, "test.spectrum"), policy={})


def test_haar_rotation_is_orthogonal_and_fresh():
    """The dealer's rotation (triples kind "orthogonal") is orthogonal, differs
    per label, and a malformed request is refused."""
    from mpc.errors import ProtocolError
    from mpc.prg import Prg, new_seed
    from mpc.triples import KINDS, haar_orthogonal

    seed = new_seed()
    a = haar_orthogonal(Prg(seed, "a"), 12)
    b = haar_orthogonal(Prg(seed, "b"), 12)
    np.testing.assert_allclose(a.T @ a, np.eye(12), atol=1e-12)
    assert np.abs(a - b).max() > 0.1
    for bad in ({"l": 0, "frac": 36}, {"l": 4, "frac": 100}, {"l": "4", "frac": 36}):
        with pytest.raises(ProtocolError):
            KINDS["orthogonal"].check(bad)
