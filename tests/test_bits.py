"""Tests of the bit-plane kernels (mpc/_kernels/bits.pyx) against numpy.

The reference twin: plane j of values v is np.packbits((v >> j) & 1) in
little-endian bit order, padded to whole 64-bit words.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpc._kernels import bits

FAST = settings(max_examples=60, deadline=None)
WORD_EDGES = [0, 1, 2**63, 2**64 - 1, 2**63 - 1, 0xAAAAAAAAAAAAAAAA, 0x5555555555555555]


def ref_planes(values: np.ndarray, n_bits: int) -> np.ndarray:
    """(n_bits, ceil(n / 64)) words: bit e % 64 of word e // 64 of plane j is bit j of values[e]."""
    n = values.size
    n_words = -(-n // 64)
    out = np.zeros((n_bits, n_words), dtype=np.uint64)
    for j in range(n_bits):
        plane_bits = ((values >> np.uint64(j)) & np.uint64(1)).astype(np.uint8)
        padded = np.zeros(64 * n_words, dtype=np.uint8)
        padded[:n] = plane_bits
        out[j] = np.packbits(padded, bitorder="little").view("<u8")
    return out


def ref_from_planes(planes: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n, dtype=np.uint64)
    for j in range(planes.shape[0]):
        plane_bits = np.unpackbits(planes[j].astype("<u8").view(np.uint8), bitorder="little")[:n]
        out |= plane_bits.astype(np.uint64) << np.uint64(j)
    return out


def to_planes(values: np.ndarray, n_bits: int) -> np.ndarray:
    out = np.zeros((n_bits, -(-values.size // 64)), dtype=np.uint64)
    bits.to_planes(np.ascontiguousarray(values, dtype=np.uint64), n_bits, out)
    return out


def from_planes(planes: np.ndarray, n: int) -> np.ndarray:
    out = np.empty(n, dtype=np.uint64)
    bits.from_planes(np.ascontiguousarray(planes), out)
    return out


words = st.one_of(st.sampled_from(WORD_EDGES), st.integers(0, 2**64 - 1))


@FAST
@given(st.lists(words, max_size=300), st.sampled_from([1, 2, 7, 8, 31, 32, 63, 64]))
def test_planes_match_reference_and_round_trip(values, n_bits):
    v = np.array(values, dtype=np.uint64)
    planes = to_planes(v, n_bits)
    assert np.array_equal(planes, ref_planes(v, n_bits))
    mask = np.uint64((1 << n_bits) - 1) if n_bits < 64 else np.uint64(2**64 - 1)
    back = from_planes(planes, v.size)
    assert np.array_equal(back, v & mask)
    assert np.array_equal(back, ref_from_planes(planes, v.size))


@pytest.mark.parametrize("n", [0, 1, 63, 64, 65, 127, 128, 129, 1000])
def test_lengths_not_multiple_of_64(n):
    rng = np.random.default_rng(n)  # test data only
    v = rng.integers(0, 2**64 - 1, size=n, dtype=np.uint64, endpoint=True)
    planes = to_planes(v, 64)
    assert planes.shape == (64, -(-n // 64))
    assert np.array_equal(planes, ref_planes(v, 64))
    assert np.array_equal(from_planes(planes, n), v)
    if n % 64:
        assert not (planes[:, -1] >> np.uint64(n % 64)).any(), "padding bits stay zero"


def test_plane_layout_known_answer():
    v = np.array([0b101, 0b010, 0b111], dtype=np.uint64)
    planes = to_planes(v, 3)
    # plane j, bit e: bit j of v[e]
    assert planes[:, 0].tolist() == [0b101, 0b110, 0b101]


def test_from_planes_ignores_padding_bits():
    planes = np.full((4, 2), 2**64 - 1, dtype=np.uint64)
    assert np.array_equal(from_planes(planes, 70), np.full(70, 15, dtype=np.uint64))


def test_to_planes_ors_into_out():
    """to_planes ORs bits into out: the caller must pass zeros (documented)."""
    v = np.array([1, 0], dtype=np.uint64)
    out = np.zeros((1, 1), dtype=np.uint64)
    bits.to_planes(v, 1, out)
    bits.to_planes(np.array([0, 1], dtype=np.uint64), 1, out)
    assert out.tolist() == [[0b11]]
