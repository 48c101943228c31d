"""Tests of mpc.prg: the keystream, uniformity, determinism and rejection sampling.

The reference twin of the PRG is its specification written out here with
hashlib and the cryptography package: key = BLAKE2b-128(label; key = seed,
person = "mpcgwas-prg-v1"), keystream = the first 64 KiB of SHAKE-128(key),
then AES-128-CTR(key) from counter block 4096 over zero bytes, field
candidates = pairs of little-endian 64-bit words with the top bit of the high
word dropped, the non-residue 2^127 - 1 skipped.
"""
from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from mpc import field
from mpc.params import P
from mpc.prg import SEED_BYTES, Prg, new_seed

MASK64 = (1 << 64) - 1
HI_MASK = (1 << 63) - 1
ALPHA = 1e-6  # a uniformity check fails wrongly with probability 1e-6
CHUNK_ELEMENTS = (1 << 20) // 16  # the PRG encrypts in 1 MiB chunks
SEED = bytes(range(16))


# ----------------------------------------------------------------- reference twin

XOF_BYTES = 1 << 16


def ref_keystream(seed: bytes, label: bytes, n_bytes: int) -> bytes:
    key = hashlib.blake2b(label, key=seed, digest_size=16, person=b"mpcgwas-prg-v1").digest()
    head = hashlib.shake_128(key).digest(min(n_bytes, XOF_BYTES))
    rest = max(0, n_bytes - XOF_BYTES)
    tail = Cipher(algorithms.AES(key), modes.CTR((XOF_BYTES // 16).to_bytes(16, "big"))).encryptor().update(
        bytes(rest)) if rest else b""
    return head + tail


def ref_candidates(words) -> list[int]:
    """Accepted 127-bit candidates from a word sequence, in stream order."""
    out = []
    for i in range(0, len(words) - 1, 2):
        value = (int(words[i + 1]) & HI_MASK) << 64 | int(words[i])
        if value != P:
            out.append(value)
    return out


def ref_field(seed: bytes, label: bytes, n: int) -> np.ndarray:
    words = np.frombuffer(ref_keystream(seed, label, 16 * n), dtype="<u8")
    values = ref_candidates(words)
    assert len(values) == n  # a rejection here has probability n 2^-127
    out = np.zeros((n, 2), dtype=np.uint64)
    for i, v in enumerate(values):
        out[i] = (v & MASK64, v >> 64)
    return out


def test_known_answer_vector():
    """Pins the stream definition: changing it silently would desynchronise parties."""
    prg = Prg(SEED, "kat")
    assert prg.bytes(32).hex() == ("85bdbd4c7838eca7da99070ddff072a6"
                                   "86afa1aa7b0847af5ebc12e2ea2060a3")
    assert ref_keystream(SEED, b"kat", 32).hex().startswith("85bdbd4c7838eca7")
    x = Prg(SEED, "kat").field(2)
    assert x.tolist() == [[12100108388172414341, 2770541561573251546],
                          [12630073007220567942, 2549073582279015518]]


# ----------------------------------------------------------------- stream content

@pytest.mark.parametrize("n", [0, 1, 2, 7, 4095, 4096, 4097, CHUNK_ELEMENTS - 1, CHUNK_ELEMENTS, CHUNK_ELEMENTS + 1,
                               CHUNK_ELEMENTS + 2, 2 * CHUNK_ELEMENTS + 1, 3 * CHUNK_ELEMENTS + 5])
def test_field_matches_reference(n):
    got = Prg(SEED, "ref").field(n)
    assert got.shape == (n, 2) and got.dtype == np.uint64
    assert np.array_equal(got, ref_field(SEED, b"ref", n))


@pytest.mark.parametrize("n_bytes", [0, 1, 15, 16, 17, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, (1 << 20) + 8,
                                     (1 << 20) + 15, (1 << 20) + 16, (1 << 20) + 17, (2 << 20) + 24, (3 << 20) + 3])
def test_bytes_match_reference(n_bytes):
    got = Prg(SEED, b"bytes").bytes(n_bytes)
    assert isinstance(got, bytes) and got == ref_keystream(SEED, b"bytes", n_bytes)


def test_calls_continue_one_stream():
    """Successive draws of any kind read the keystream in order, without gaps."""
    prg = Prg(SEED, "seq")
    parts = [prg.bytes(5), prg.words(3).tobytes(), prg.field(4).tobytes(),
             prg.uint(2, 64).tobytes(), prg.bits(1).tobytes(), prg.field((1 << 16) + 3).tobytes(),
             prg.bytes(11)]
    stream = ref_keystream(SEED, b"seq", sum(map(len, parts)))
    pos = 0
    for i, part in enumerate(parts):
        want = stream[pos:pos + len(part)]
        if i in (2, 5):  # field elements: the top bit of each high limb is dropped
            w = np.frombuffer(want, dtype="<u8").copy()
            w[1::2] &= np.uint64(HI_MASK)
            want = w.tobytes()
        assert part == want, f"part {i}"
        pos += len(part)


def test_field_shapes_and_out_buffer():
    x = Prg(SEED, "shape").field((3, 4))
    assert x.shape == (3, 4, 2) and field.count_noncanonical(x) == 0
    assert np.array_equal(x.reshape(12, 2), ref_field(SEED, b"shape", 12))
    assert Prg(SEED, "shape").field(()).shape == (2,)
    assert Prg(SEED, "shape").field((0, 5)).shape == (0, 5, 2)
    out = np.full((3, 4, 2), 99, dtype=np.uint64)
    prg = Prg(SEED, "shape")
    res = prg.field((3, 4), out=out)
    assert np.shares_memory(res, out) and np.array_equal(out, x) and np.array_equal(res, x)
    # reusing the buffer continues the stream
    prg.field((3, 4), out=out)
    assert np.array_equal(out.reshape(12, 2), ref_field(SEED, b"shape", 24)[12:])


@pytest.mark.parametrize("out", [
    np.zeros((4, 3, 2), dtype=np.uint64),
    np.zeros((3, 4, 2), dtype=np.int64),
    np.zeros((2, 4, 3), dtype=np.uint64).transpose(2, 1, 0),
])
def test_field_bad_out(out):
    with pytest.raises(ValueError, match=r"field: out must be a C-contiguous uint64 array of shape \(3, 4, 2\)"):
        Prg(SEED, "x").field((3, 4), out=out)


# ----------------------------------------------------------------- rejection

def test_from_random_words_rejects_p():
    p_lo, p_hi = MASK64, HI_MASK
    words = np.array([p_lo, p_hi, 5, 6], dtype=np.uint64)
    got, used = field.from_random_words(words, 1)
    assert got.tolist() == [[5, 6]] and used == 4
    # the dropped top bit makes 2^128 - 1 the same rejected candidate
    words = np.array([MASK64, MASK64, 1, (1 << 63) | 3], dtype=np.uint64)
    got, used = field.from_random_words(words, 2)
    assert got.tolist() == [[1, 3]] and used == 4
    # near misses are residues and are kept
    words = np.array([MASK64 - 1, p_hi, MASK64, p_hi - 1, 0, 0], dtype=np.uint64)
    got, used = field.from_random_words(words, 3)
    assert got.tolist() == [[MASK64 - 1, p_hi], [MASK64, p_hi - 1], [0, 0]] and used == 6
    # words run out: fewer elements; an odd trailing word is not used
    got, used = field.from_random_words(np.array([p_lo, p_hi, 7], dtype=np.uint64), 1)
    assert got.shape == (0, 2) and used == 2
    got, used = field.from_random_words(np.array([1, 2, 3], dtype=np.uint64), 5)
    assert got.tolist() == [[1, 2]] and used == 2
    got, used = field.from_random_words(np.zeros(0, dtype=np.uint64), 0)
    assert got.shape == (0, 2) and used == 0


@settings(max_examples=50, deadline=None)
@given(st.lists(st.one_of(st.just("p"), st.just("p_top"), st.integers(0, MASK64)), min_size=0, max_size=40)
       .map(lambda xs: [w for x in xs for w in ((MASK64, HI_MASK) if x == "p" else (MASK64, MASK64)
                                                 if x == "p_top" else (x, x ^ 0xA5A5A5A5A5A5A5A5))]),
       st.integers(0, 25), st.booleans())
def test_from_random_words_matches_reference(words, n, strided):
    arr = np.array(words, dtype=np.uint64)
    if strided:
        big = np.zeros(2 * arr.size, dtype=np.uint64)
        big[::2] = arr
        arr = big[::2]
    got, used = field.from_random_words(arr, n)
    want = ref_candidates(words)[:n]
    assert [(int(hi) << 64) | int(lo) for lo, hi in got] == want
    assert field.count_noncanonical(got) == 0
    # used = words up to and including the last candidate taken (or all pairs)
    if len(want) == n:
        assert len(ref_candidates(words[:used])) == n and (used == 0 or len(ref_candidates(words[:used - 2])) < n)
    else:
        assert used == len(words) - len(words) % 2


class _RejectingStream:
    """Wraps a Prg's keystream source and turns chosen field candidates of its
    stream (by index in the stream, 16 bytes each) into rejected ones: all
    ones, the top bit of the high word either set or not (it is dropped)."""

    def __init__(self, prg, bad: list[int]):
        self.prg, self.fill, self.bad = prg, prg._fill_range, sorted(bad)

    def __call__(self, raw, start, stop):
        pos = self.prg._pos
        self.fill(raw, start, stop)
        for k in self.bad:
            for j in range(16):
                at = 16 * k + j - pos
                if 0 <= at < stop - start:
                    raw[start + at] = 0x7F if (j == 15 and k % 2 == 0) else 0xFF


@pytest.mark.parametrize("n, bad", [
    (10, [3]),
    (10, [0, 9]),
    (10, [2, 3, 4, 10]),                          # a rejected candidate in the refill too
    (10, [9, 10, 11, 12]),                        # only rejects at first in the refill
    (3, [0, 1, 2, 3, 4, 5]),
    (CHUNK_ELEMENTS // 4 + 7, [5, CHUNK_ELEMENTS // 4 + 1, CHUNK_ELEMENTS // 4 + 7]),  # across chunks
    (CHUNK_ELEMENTS + 3, [CHUNK_ELEMENTS + 1, 5]),
])
def test_prg_field_rejection_path(n, bad):
    prg = Prg(SEED, "reject")
    prg._fill_range = _RejectingStream(prg, bad)
    out = np.empty((n, 2), dtype=np.uint64)
    res = prg.field(n, out=out)
    # reference: the same stream with the rejected candidates skipped
    total = n + len(bad)
    stream = ref_field(SEED, b"reject", total)
    keep = np.ones(total, dtype=bool)
    keep[bad] = False
    want = stream[keep][:n]
    assert np.array_equal(res, want)
    assert np.array_equal(out, want), "the caller's out buffer holds the result"
    assert field.count_noncanonical(res) == 0
    # the stream continues right after the last candidate consumed
    assert np.array_equal(prg.field(2), ref_field(SEED, b"reject", total + 2)[total:])


# ----------------------------------------------------------------- uniformity

def _chi2_pvalue(categories: np.ndarray, n_categories: int) -> float:
    counts = np.bincount(categories.astype(np.int64), minlength=n_categories)
    assert counts.size == n_categories
    return float(chisquare(counts).pvalue)


def test_chi2_check_can_fail():
    skewed = np.arange(100_000) % 200  # never hits 200..256
    assert _chi2_pvalue(skewed, 257) < ALPHA
    mildly = np.concatenate([np.arange(256_000) % 256, np.zeros(3000, dtype=np.int64)])
    assert _chi2_pvalue(mildly, 256) < ALPHA


@pytest.mark.parametrize("seed, label", [(SEED, "uniform/a"), (bytes(16), "uniform/b")])
def test_field_elements_are_uniform(seed, label):
    n = 1 << 18
    x = Prg(seed, label).field(n)
    lo, hi = x[:, 0], x[:, 1]
    assert field.count_noncanonical(x) == 0
    # residues mod 257: value = hi 2^64 + lo, and 2^64 = 1 (mod 257)
    c = pow(2, 64, 257)
    mod257 = (lo % np.uint64(257) + (hi % np.uint64(257)) * np.uint64(c)) % np.uint64(257)
    assert _chi2_pvalue(mod257, 257) > ALPHA
    assert _chi2_pvalue(lo & np.uint64(0xFF), 256) > ALPHA                 # low byte
    assert _chi2_pvalue(hi >> np.uint64(56), 128) > ALPHA                  # top 7 bits (120..126)
    assert _chi2_pvalue((hi >> np.uint64(20)) & np.uint64(0x3FF), 1024) > ALPHA


def test_words_and_uint_are_uniform():
    prg = Prg(SEED, "uniform/words")
    w = prg.words(1 << 18)
    assert _chi2_pvalue(w & np.uint64(0xFF), 256) > ALPHA
    assert _chi2_pvalue(w >> np.uint64(56), 256) > ALPHA
    u = prg.uint(1 << 16, 5)
    assert _chi2_pvalue(u, 32) > ALPHA


@pytest.mark.parametrize("bits", [0, 1, 5, 31, 32, 33, 63, 64])
def test_uint_range(bits):
    u = Prg(SEED, f"uint{bits}").uint((40, 25), bits)
    assert u.shape == (40, 25) and u.dtype == np.uint64
    if bits == 0:
        assert not u.any()
    elif bits < 64:
        assert int(u.max()) < 1 << bits
        assert int(u.max()) >= 1 << (bits - 1)  # the top bit does occur (fails with prob 2^-1000)
    else:
        assert int(u.max()) >= 1 << 63


@pytest.mark.parametrize("bits", [-1, 65])
def test_uint_bad_bits(bits):
    with pytest.raises(ValueError, match=rf"uint: bits must be in \[0, 64\], got {bits}"):
        Prg(SEED, "x").uint(3, bits)


# ----------------------------------------------------------------- independence and determinism

def test_streams_differ_across_labels_and_seeds():
    other = bytes(15) + b"\x01"
    draws = {
        ("seed", "a"): Prg(SEED, "a").field(64).tobytes(),
        ("seed", "b"): Prg(SEED, "b").field(64).tobytes(),
        ("seed", "ab"): Prg(SEED, "ab").field(64).tobytes(),
        ("seed", ""): Prg(SEED, "").field(64).tobytes(),
        ("other", "a"): Prg(other, "a").field(64).tobytes(),
        ("zero", "a"): Prg(bytes(16), "a").field(64).tobytes(),
    }
    assert len(set(draws.values())) == len(draws)
    assert Prg(SEED, "a").field(64).tobytes() == draws[("seed", "a")]
    assert Prg(SEED, b"a").field(64).tobytes() == draws[("seed", "a")]  # str labels are UTF-8


_CHILD = """
import hashlib, sys
from mpc.prg import Prg
seed = bytes.fromhex(sys.argv[1])
x = Prg(seed, sys.argv[2]).field(70000)
print(hashlib.sha256(x.tobytes()).hexdigest())
"""


def test_same_stream_in_another_process():
    label = "job7/t42/a"
    here = hashlib.sha256(Prg(SEED, label).field(70000).tobytes()).hexdigest()
    child = subprocess.run([sys.executable, "-c", _CHILD, SEED.hex(), label],
                           capture_output=True, text=True, timeout=60, check=True)
    assert child.stdout.strip() == here


def test_seed_and_label_validation():
    for bad in [b"short", bytes(17), "0" * 16, None]:
        with pytest.raises(ValueError, match=r"PRG seed must be 16 bytes"):
            Prg(bad, "x")
    with pytest.raises(TypeError, match=r"PRG label must be str or bytes, got int"):
        Prg(SEED, 7)
    Prg(bytearray(SEED), "x")  # a bytearray seed is accepted


def test_new_seed():
    a, b = new_seed(), new_seed()
    assert isinstance(a, bytes) and len(a) == SEED_BYTES and a != b


def test_bits_are_words():
    assert np.array_equal(Prg(SEED, "bits").bits(9), Prg(SEED, "bits").words(9))
