"""Tests of mpc.sharing: additive shares over F_p and XOR shares of packed bits."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from mpc import field, sharing
from mpc.params import P
from mpc.prg import Prg

FAST = settings(max_examples=30, deadline=None)
ALPHA = 1e-6  # a uniformity check fails wrongly with probability 1e-6
EDGES = [0, 1, P - 1, P - 2, 1 << 64, 1 << 126, (1 << 64) - 1, 1 << 63]
SEEDS = [bytes([i]) * 16 for i in range(1, 5)]

values = st.one_of(st.sampled_from(EDGES), st.integers(0, P - 1))
shapes = st.lists(st.integers(0, 4), max_size=3).map(tuple)


@st.composite
def field_arrays(draw):
    shape = draw(shapes)
    n = int(np.prod(shape, dtype=np.int64))
    return field.from_ints(np.array(draw(st.lists(values, min_size=n, max_size=n)),
                                    dtype=object).reshape(shape))


def _mod257(x: np.ndarray) -> np.ndarray:
    """Residues mod 257 of field elements (2^64 = 1 mod 257)."""
    lo, hi = x[..., 0].reshape(-1), x[..., 1].reshape(-1)
    return (lo % np.uint64(257) + hi % np.uint64(257)) % np.uint64(257)


def _uniform_pvalue(categories: np.ndarray, n_categories: int) -> float:
    counts = np.bincount(categories.astype(np.int64).reshape(-1), minlength=n_categories)
    return float(chisquare(counts).pvalue)


# ----------------------------------------------------------------- additive sharing

@FAST
@given(field_arrays(), st.sampled_from([2, 3, 5]))
def test_share_reconstruct_round_trip(x, n):
    shares, seeds = sharing.share(x, n, label="t/rt")
    assert len(shares) == n and len(seeds) == n - 1
    for s in shares:
        assert s.shape == x.shape and s.dtype == np.uint64 and field.count_noncanonical(s) == 0
    assert np.array_equal(sharing.reconstruct(shares), x)
    assert np.array_equal(sharing.reconstruct(shares[::-1]), x)  # order does not matter


@FAST
@given(field_arrays(), field_arrays(), st.sampled_from([2, 3, 5]))
def test_seeded_shares_do_not_depend_on_x(x, y, n):
    """Shares 0..n-2 are PRG outputs of their seeds alone; only the correction
    share carries x, and it differs between x and y by exactly x - y."""
    y = field.from_ints(np.resize(field.to_ints(y), x.shape[:-1]))
    seeds = SEEDS[:n - 1]
    sx, _ = sharing.share(x, n, label="t/indep", seeds=seeds)
    sy, _ = sharing.share(y, n, label="t/indep", seeds=seeds)
    for i in range(n - 1):
        assert np.array_equal(sx[i], sy[i])
        assert np.array_equal(sx[i], Prg(seeds[i], "t/indep").field(x.shape[:-1]))
    assert np.array_equal(field.sub(sx[-1], sy[-1]), field.sub(x, y))


def test_share_is_deterministic_given_seeds_and_label():
    x = field.from_ints(EDGES)
    a, _ = sharing.share(x, 3, label="t/det", seeds=SEEDS[:2])
    b, _ = sharing.share(x, 3, label="t/det", seeds=SEEDS[:2])
    c, _ = sharing.share(x, 3, label="t/other", seeds=SEEDS[:2])
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    d, seeds = sharing.share(x, 3)  # fresh seeds
    e, _ = sharing.share(x, 3)
    assert len(set(seeds)) == 2 and not np.array_equal(d[0], e[0])


@pytest.mark.parametrize("n", [2, 3, 5])
@pytest.mark.parametrize("secret", [0, P - 1, 1 << 126])
def test_any_n_minus_1_shares_look_uniform(n, secret):
    """With x constant, every share (the correction included) is uniform, and
    any two shares are independent (joint chi-square on residues mod 16):
    every pair lies in some subset of n - 1 shares when n >= 3."""
    count = 1 << 15
    x = field.full(count, secret)
    shares, _ = sharing.share(x, n, label="t/uniform", seeds=SEEDS[:n - 1])
    residues = [_mod257(s) for s in shares]
    for r in residues:
        assert _uniform_pvalue(r, 257) > ALPHA
    for u in range(n):
        for v in range(u + 1, n if n >= 3 else 0):
            pair = (residues[u] % np.uint64(16)) * np.uint64(16) + residues[v] % np.uint64(16)
            assert _uniform_pvalue(pair, 256) > ALPHA, (u, v)


def test_uniformity_check_can_fail():
    """The chi-square check above does reject a share that leaks x."""
    x = field.full(1 << 15, 5)
    leaky = field.add(x, field.from_int(np.arange(1 << 15) % 3))  # x plus a tiny mask
    assert _uniform_pvalue(_mod257(leaky), 257) < ALPHA


@pytest.mark.parametrize("shape", [5, (2, 3), (0,), ()])
@pytest.mark.parametrize("n", [2, 3, 5])
def test_zero_sharing(shape, n):
    shares, seeds = sharing.zero_sharing(n, shape, label="t/zero")
    expected_shape = ((shape,) if isinstance(shape, int) else shape) + (2,)
    assert len(shares) == n and len(seeds) == n - 1
    assert all(s.shape == expected_shape for s in shares)
    assert not sharing.reconstruct(shares).any()
    if shape == 5:
        assert shares[0].any()  # not trivially zero


def test_share_argument_errors():
    x = field.zeros(3)
    with pytest.raises(ValueError, match=r"share: need n >= 2 shares, got 1"):
        sharing.share(x, 1)
    with pytest.raises(ValueError, match=r"share: expected 2 seeds, got 1"):
        sharing.share(x, 3, seeds=SEEDS[:1])
    with pytest.raises(ValueError, match=r"reconstruct: no shares"):
        sharing.reconstruct([])
    with pytest.raises(ValueError, match=r"shape mismatch"):
        sharing.reconstruct([field.zeros(3), field.zeros(4)])


# ----------------------------------------------------------------- XOR sharing of bits

@FAST
@given(st.lists(st.integers(0, (1 << 64) - 1), max_size=20), st.sampled_from([2, 3, 5]),
       st.booleans())
def test_share_bits_round_trip(words, n, as_matrix):
    bits = np.array(words, dtype=np.uint64)
    if as_matrix and bits.size % 2 == 0:
        bits = bits.reshape(2, -1)
    shares, seeds = sharing.share_bits(bits, n, label="t/bits")
    assert len(shares) == n and len(seeds) == n - 1
    assert all(s.shape == bits.shape and s.dtype == np.uint64 for s in shares)
    assert np.array_equal(sharing.reconstruct_bits(shares), bits)
    assert np.array_equal(sharing.reconstruct_bits(shares[::-1]), bits)


def test_bit_shares_independent_of_bits_and_uniform():
    seeds = SEEDS[:2]
    ones = np.full(1 << 14, (1 << 64) - 1, dtype=np.uint64)
    zeros = np.zeros(1 << 14, dtype=np.uint64)
    s1, _ = sharing.share_bits(ones, 3, label="t/xbits", seeds=seeds)
    s0, _ = sharing.share_bits(zeros, 3, label="t/xbits", seeds=seeds)
    for i in range(2):
        assert np.array_equal(s1[i], s0[i])
    assert np.array_equal(s1[2] ^ s0[2], ones)
    for s in s1:
        assert _uniform_pvalue(s & np.uint64(0xFF), 256) > ALPHA
        assert _uniform_pvalue(s >> np.uint64(56), 256) > ALPHA


def test_share_bits_errors():
    with pytest.raises(ValueError, match=r"share_bits: need n >= 2 shares, got 0"):
        sharing.share_bits(np.zeros(2, dtype=np.uint64), 0)


def test_share_bits_checks_the_seed_count():
    with pytest.raises(ValueError, match=r"expected 2 seeds"):
        sharing.share_bits(np.zeros(2, dtype=np.uint64), 3, seeds=SEEDS[:1])
