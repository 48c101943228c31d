"""Property tests of mpc.field (F_p, p = 2^127 - 1) against gmpy2 big integers.

Every kernel wrapper is compared with its reference twin: the same operation
on gmpy2 ``mpz`` values reduced mod p.  Inputs mix uniform residues with edge
values (0, 1, p-1, p-2, 2^64, 2^126, 2^64-1, 2^63), cover empty, one-element
and 0-d logical shapes, and arrive in several memory layouts (contiguous,
strided, reversed, transposed) that the wrappers must copy, never misread.

The conversions to and from field arrays used as the oracle here are written
out independently (``_encode`` / ``_decode``), so a bug in
``mpc.field.from_ints`` / ``to_ints`` cannot hide a bug elsewhere.
"""
from __future__ import annotations

import math

import gmpy2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mpc import field
from mpc._kernels import field as kernels
from mpc.errors import EncodingError, ParamError
from mpc.params import P, Params

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MASK64 = (1 << 64) - 1
EDGES = [0, 1, P - 1, P - 2, 1 << 64, 1 << 126, (1 << 64) - 1, 1 << 63]
INT64_EDGES = [0, 1, -1, 2**63 - 1, -(2**63), -(2**63) + 1, 2**32, -(2**32)]


# ----------------------------------------------------------------- reference twin

def _encode(values, shape) -> np.ndarray:
    """Integers (any size and sign) to a field array, the slow obvious way."""
    flat = [int(v) % P for v in np.asarray(values, dtype=object).reshape(-1)]
    out = np.zeros((len(flat), 2), dtype=np.uint64)
    for i, v in enumerate(flat):
        out[i, 0] = v & MASK64
        out[i, 1] = v >> 64
    return out.reshape(tuple(shape) + (2,))


def _decode(x: np.ndarray) -> np.ndarray:
    """A field array to an object array of gmpy2 mpz (no reduction)."""
    assert x.dtype == np.uint64 and x.shape[-1] == 2
    flat = x.reshape(-1, 2)
    out = np.empty(flat.shape[0], dtype=object)
    for i in range(flat.shape[0]):
        out[i] = gmpy2.mpz(int(flat[i, 1])) << 64 | gmpy2.mpz(int(flat[i, 0]))
    return out.reshape(x.shape[:-1])


def _mpz_array(values, shape) -> np.ndarray:
    out = np.empty(int(np.prod(shape, dtype=np.int64)), dtype=object)
    for i, v in enumerate(np.asarray(values, dtype=object).reshape(-1)):
        out[i] = gmpy2.mpz(v) % P
    return out.reshape(shape)


def assert_field_equal(result: np.ndarray, expected) -> None:
    """result is a canonical field array equal to expected (mpz, reduced here)."""
    expected = np.asarray(expected, dtype=object)
    assert isinstance(result, np.ndarray) and result.dtype == np.uint64
    assert result.shape == expected.shape + (2,), (result.shape, expected.shape)
    got = _decode(result)
    for idx, v in np.ndenumerate(got):
        assert 0 <= v < P, f"non-canonical {v} at {idx}"
        want = gmpy2.mpz(expected[idx]) % P
        assert v == want, f"at {idx}: got {v}, expected {want}"


# ----------------------------------------------------------------- strategies

elements = st.one_of(st.sampled_from(EDGES), st.integers(0, P - 1))
shapes = st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple)
nonempty_shapes = st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple)
layouts = st.sampled_from(["contiguous", "strided", "reversed", "transposed", "fortran"])


def _relayout(x: np.ndarray, layout: str) -> np.ndarray:
    """A view of a copy of x with the same logical content and another memory layout."""
    logical = x.shape[:-1]
    if layout == "contiguous" or len(logical) == 0:
        return x.copy()
    if layout == "strided":
        big = np.full((2 * logical[0],) + x.shape[1:], 0xDEADBEEF, dtype=np.uint64)
        big[::2] = x
        view = big[::2]
    elif layout == "reversed":
        view = x[::-1].copy()[::-1]
    elif layout == "transposed":
        if len(logical) < 2:
            return _relayout(x, "strided")
        axes = tuple(range(len(logical)))[::-1] + (len(logical),)
        view = np.ascontiguousarray(x.transpose(axes)).transpose(axes)
    else:  # fortran: limb axis not innermost in memory
        view = np.asfortranarray(x)
    assert view.shape == x.shape and np.array_equal(view, x)
    return view


@st.composite
def field_arrays(draw, shape=None):
    """(mpz object array, field array) of one logical shape."""
    shape = draw(shapes) if shape is None else shape
    n = int(np.prod(shape, dtype=np.int64))
    values = draw(st.lists(elements, min_size=n, max_size=n))
    ints = _mpz_array(values, shape)
    return ints, _relayout(_encode(values, shape), draw(layouts))


@st.composite
def same_shape_pair(draw):
    shape = draw(shapes)
    return draw(field_arrays(shape)), draw(field_arrays(shape))


# ----------------------------------------------------------------- known answers

def test_known_answers():
    cases = [
        (field.mul, 1 << 126, 2, 1),                 # 2^127 = 1
        (field.mul, P - 1, P - 1, 1),                # (-1)^2
        (field.mul, 1 << 64, 1 << 64, 2),            # 2^128 = 2
        (field.mul, (1 << 64) - 1, (1 << 64) - 1, ((1 << 64) - 1) ** 2 % P),
        (field.add, P - 1, 1, 0),
        (field.add, P - 1, P - 1, P - 2),
        (field.sub, 0, 1, P - 1),
        (field.sub, 1 << 63, 1 << 64, (P - (1 << 63)) % P),
    ]
    for fn, x, y, want in cases:
        got = fn(_encode([x], (1,)), _encode([y], (1,)))
        assert int(_decode(got)[0]) == want, (fn.__name__, x, y)


# ----------------------------------------------------------------- elementwise

@FAST
@given(same_shape_pair())
def test_add_sub_mul(pair):
    (xa, a), (xb, b) = pair
    assert_field_equal(field.add(a, b), (xa + xb) % P if xa.size else xa)
    assert_field_equal(field.sub(a, b), (xa - xb) % P if xa.size else xa)
    assert_field_equal(field.mul(a, b), (xa * xb) % P if xa.size else xa)


@FAST
@given(field_arrays())
def test_neg(pair):
    xa, a = pair
    assert_field_equal(field.neg(a), (-xa) % P if xa.size else xa)


@FAST
@given(field_arrays(), st.one_of(st.sampled_from(EDGES + [-1, P, 2 * P + 3, -(1 << 200)]),
                                 st.integers(-(1 << 300), 1 << 300)))
def test_scalar_ops(pair, scalar):
    xa, a = pair
    s = gmpy2.mpz(scalar)
    assert_field_equal(field.mul_scalar(a, scalar), (xa * s) % P if xa.size else xa)
    assert_field_equal(field.add_scalar(a, scalar), (xa + s) % P if xa.size else xa)


@FAST
@given(field_arrays(), st.one_of(st.sampled_from([0, 1, 63, 64, 65, 126, 127, 128, -1, -127, 254]),
                                 st.integers(-1000, 1000)))
def test_mul_pow2(pair, k):
    xa, a = pair
    factor = gmpy2.mpz(pow(2, k, P))  # negative k: the inverse of 2^|k|
    assert_field_equal(field.mul_pow2(a, k), (xa * factor) % P if xa.size else xa)


@FAST
@given(st.data())
def test_beaver_combine(data):
    shape = data.draw(shapes)
    (xc, c), (xd, d), (xb, b), (xe, e), (xa, a) = [data.draw(field_arrays(shape)) for _ in range(5)]
    for add_de in (False, True):
        got = field.beaver_combine(c, d, b, e, a, add_de)
        want = (xc + xd * xb + xe * xa + (xd * xe if add_de else 0)) % P if xc.size else xc
        assert_field_equal(got, want)


def test_beaver_combine_reconstructs_a_product():
    """Two-party use: sum of the combined shares is x*y for a correct triple."""
    rng = np.random.default_rng(1)  # test data only; secrets come from mpc.prg
    ints = [int.from_bytes(rng.bytes(16), "little") % P for _ in range(12)]
    x, y, ta, tb = (_mpz_array(ints[3 * i:3 * i + 3], (3,)) for i in range(4))
    tc = (ta * tb) % P
    a0 = _mpz_array(rng.integers(0, 1 << 62, 3), (3,))
    b0 = _mpz_array(rng.integers(0, 1 << 62, 3), (3,))
    c0 = _mpz_array(rng.integers(0, 1 << 62, 3), (3,))
    shares = [(a0, b0, c0), ((ta - a0) % P, (tb - b0) % P, (tc - c0) % P)]
    d = _encode((x - ta) % P, (3,))
    e = _encode((y - tb) % P, (3,))
    total = np.zeros(3, dtype=object)
    for i, (sa, sb, sc) in enumerate(shares):
        z = field.beaver_combine(_encode(sc, (3,)), d, _encode(sb, (3,)), e, _encode(sa, (3,)), i == 0)
        total = total + _decode(z)
    assert all(int(t) % P == int(v) for t, v in zip(total, (x * y) % P))


def test_elementwise_in_place():
    x = _encode(EDGES, (len(EDGES),))
    y = _encode(EDGES[::-1], (len(EDGES),))
    want = (_decode(x) * _decode(y)) % P
    field.mul(x, y, out=x)
    assert_field_equal(x, want)
    x2 = _encode(EDGES, (len(EDGES),))
    field.add(x2, x2, out=x2)
    assert_field_equal(x2, (2 * _mpz_array(EDGES, (len(EDGES),))) % P)


@FAST
@given(st.data())
def test_broadcasting(data):
    rows, cols = data.draw(st.integers(0, 4)), data.draw(st.integers(0, 4))
    xa, a = data.draw(field_arrays((rows, 1)))
    xb, b = data.draw(field_arrays((1, cols)))
    if rows * cols:
        want = (np.broadcast_to(xa, (rows, cols)) * np.broadcast_to(xb, (rows, cols))) % P
    else:
        want = np.empty((rows, cols), dtype=object)
    assert_field_equal(field.mul(a, b), want)


# ----------------------------------------------------------------- argument checks

@pytest.mark.parametrize("fn", [field.add, field.sub, field.mul])
def test_mismatched_shapes_name_the_arguments(fn):
    a = field.zeros(3)
    b = field.zeros(4)
    with pytest.raises(ValueError, match=r"a has shape \(3,\).*b has shape \(4,\)"):
        fn(a, b)


def test_beaver_combine_mismatch_names_the_argument():
    ok = field.zeros(3)
    with pytest.raises(ValueError, match=r"\be has shape \(4,\)"):
        field.beaver_combine(ok, ok, ok, field.zeros(4), ok, True)


@pytest.mark.parametrize("bad, pattern", [
    (np.zeros((3, 2), dtype=np.int64), r"b: expected dtype uint64, got int64"),
    (np.zeros((3, 3), dtype=np.uint64), r"b: expected a trailing limb axis of length 2, got shape \(3, 3\)"),
    (np.zeros((), dtype=np.uint64), r"b: expected a trailing limb axis"),
])
def test_bad_field_arrays_are_named(bad, pattern):
    with pytest.raises(ValueError, match=pattern):
        field.add(field.zeros(3), bad)


def test_non_array_is_a_type_error():
    with pytest.raises(TypeError, match=r"a: expected a numpy uint64 field array, got list"):
        field.neg([[0, 0]])


@pytest.mark.parametrize("out", [
    np.zeros((4, 2), dtype=np.uint64),
    np.zeros((3, 2), dtype=np.int64),
    np.zeros((2, 3), dtype=np.uint64).T,  # right shape, not C-contiguous
])
def test_bad_out_is_named(out):
    with pytest.raises(ValueError, match=r"^out: expected a C-contiguous uint64 array"):
        field.mul(field.zeros(3), field.zeros(3), out=out)


# ----------------------------------------------------------------- reductions

@FAST
@given(field_arrays())
def test_sum_every_axis(pair):
    xa, a = pair
    got = field.sum(a)
    assert got.shape == (2,)
    assert int(_decode(got)) == int(sum(int(v) for v in xa.reshape(-1)) % P)
    for axis in range(-xa.ndim, xa.ndim):
        want = np.sum(xa, axis=axis) % P if xa.size else np.zeros(
            xa.shape[:axis % xa.ndim] + xa.shape[axis % xa.ndim + 1:], dtype=object)
        assert_field_equal(field.sum(a, axis=axis), want)


def test_sum_many_terms_of_p_minus_1():
    """Delayed reduction: 10^5 copies of p-1 (both limbs near their maximum)."""
    n = 100_000
    a = field.full(n, P - 1)
    assert int(_decode(field.sum(a))) == (n * (P - 1)) % P
    m = field.full((n, 3), P - 1)
    assert_field_equal(field.sum(m, axis=0), _mpz_array([(n * (P - 1)) % P] * 3, (3,)))


def test_sum_axis_out_of_range():
    with pytest.raises(ValueError, match=r"sum: axis 2 out of range for shape \(3, 4\)"):
        field.sum(field.zeros((3, 4)), axis=2)


# ----------------------------------------------------------------- matrix products

def _ref_matmul(xa: np.ndarray, xb: np.ndarray) -> np.ndarray:
    a2 = xa.reshape(1, -1) if xa.ndim == 1 else xa
    b2 = xb.reshape(-1, 1) if xb.ndim == 1 else xb
    m, k = a2.shape
    n = b2.shape[1]
    out = np.empty((m, n), dtype=object)
    for i in range(m):
        for j in range(n):
            out[i, j] = gmpy2.mpz(sum(int(a2[i, t]) * int(b2[t, j]) for t in range(k)) % P)
    if xa.ndim == 1 and xb.ndim == 1:
        return out.reshape(())
    if xa.ndim == 1:
        return out.reshape(n)
    if xb.ndim == 1:
        return out.reshape(m)
    return out


@FAST
@given(st.data())
def test_matmul(data):
    m, k, n = (data.draw(st.integers(0, 5)) for _ in range(3))
    a_vec, b_vec = data.draw(st.booleans()), data.draw(st.booleans())
    xa, a = data.draw(field_arrays((k,) if a_vec else (m, k)))
    xb, b = data.draw(field_arrays((k,) if b_vec else (k, n)))
    assert_field_equal(field.matmul(a, b), _ref_matmul(xa, xb))


@FAST
@given(st.data())
def test_matmul_out(data):
    m, k, n = (data.draw(st.integers(0, 4)) for _ in range(3))
    xa, a = data.draw(field_arrays((m, k)))
    xb, b = data.draw(field_arrays((k, n)))
    out = np.full((m, n, 2), 7, dtype=np.uint64)
    res = field.matmul(a, b, out=out)
    assert res is out
    assert_field_equal(out, _ref_matmul(xa, xb))


@FAST
@given(st.data())
def test_matmul_tn(data):
    k, m, n = (data.draw(st.integers(0, 5)) for _ in range(3))
    xa, a = data.draw(field_arrays((k, m)))
    xb, b = data.draw(field_arrays((k, n)))
    assert_field_equal(field.matmul_tn(a, b), _ref_matmul(xa.T, xb))


def test_matmul_long_inner_dimension_of_maximal_limbs():
    """Delayed reduction over K = 4096 products of p-1 and 2^127-2^64 style values."""
    k = 4096
    vals_a = [P - 1, P - 2, (1 << 127) - (1 << 64) - 1, (1 << 64) - 1]
    vals_b = [P - 1, (1 << 126), P - 2, 1 << 64]
    xa = _mpz_array([vals_a[t % 4] for t in range(2 * k)], (2, k))
    xb = _mpz_array([vals_b[t % 4] for t in range(3 * k)], (k, 3))
    a, b = _encode(xa, (2, k)), _encode(xb, (k, 3))
    want = _ref_matmul(xa, xb)
    assert_field_equal(field.matmul(a, b), want)
    assert_field_equal(field.matmul_tn(np.ascontiguousarray(a.transpose(1, 0, 2)), b), want)


def test_matmul_tn_large_output_path():
    """m * n large enough that matmul_tn transposes a and calls matmul instead."""
    m, n = 2100, 2100  # 2100^2 * 64 bytes of accumulators > 256 MiB
    a = _encode([(7 * i + 3) * (1 << 100) + i for i in range(m)], (1, m))
    b = _encode([(P - 1 - 5 * j) for j in range(n)], (1, n))
    got = field.matmul_tn(a, b)
    want = field.mul(a[0][:, None], b[0][None, :])  # the outer product (mul is tested above)
    assert np.array_equal(got, want)
    for i, j in [(0, 0), (m - 1, n - 1), (1234, 17)]:
        assert int(_decode(got[i, j])) == int(_decode(a[0, i])) * int(_decode(b[0, j])) % P


@pytest.mark.parametrize("sa, sb, pattern", [
    ((2, 3), (4, 2), r"matmul: inner dimensions differ: a is \(2, 3\), b is \(4, 2\)"),
    ((3,), (4,), r"matmul: inner dimensions differ"),
    ((2, 2, 2), (2, 2), r"matmul: expected 1-D or 2-D operands"),
])
def test_matmul_shape_errors(sa, sb, pattern):
    with pytest.raises(ValueError, match=pattern):
        field.matmul(field.zeros(sa), field.zeros(sb))


def test_matmul_tn_shape_errors():
    with pytest.raises(ValueError, match=r"matmul_tn: row counts differ"):
        field.matmul_tn(field.zeros((3, 2)), field.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"matmul_tn: expected 2-D operands"):
        field.matmul_tn(field.zeros(3), field.zeros((3, 2)))


# ----------------------------------------------------------------- portable twins
#
# Where the build has the x86-64 assembly (kernels.ASM_KERNELS), the public
# functions above run it; the portable Cython product and dot product it
# replaces are reachable as *_portable kernels, tested here the same way, so
# that one test run covers both implementations.

def _kernel_mul(fn, a, b):
    a = np.ascontiguousarray(a).reshape(-1, 2)
    b = np.ascontiguousarray(b).reshape(-1, 2)
    out = np.empty_like(a)
    fn(a, b, out)
    return out


@FAST
@given(same_shape_pair())
def test_mul_portable_and_assembly(pair):
    (xa, a), (xb, b) = pair
    want = np.asarray((xa * xb) % P, dtype=object).reshape(-1)
    for fn in (kernels.mul, kernels.mul_portable):
        assert_field_equal(_kernel_mul(fn, a, b), want)


def test_mul_edges_all_pairs_both_implementations():
    grid = [(x, y) for x in EDGES for y in EDGES]
    a = _encode([x for x, _ in grid], (len(grid),))
    b = _encode([y for _, y in grid], (len(grid),))
    want = _mpz_array([x * y for x, y in grid], (len(grid),))
    for fn in (kernels.mul, kernels.mul_portable):
        assert_field_equal(_kernel_mul(fn, a, b), want)


# Matrix products: every implementation this build and CPU can run, one
# suite.  matmul / matmul_tn run the AVX-512 IFMA kernel (f127_ifma.pxd) where
# kernels.IFMA_KERNELS, else the scalar one; *_scalar is the dot3 product
# (assembly where kernels.ASM_KERNELS), *_portable its portable Cython twin,
# *_ifma the IFMA kernel (only where it can run).

MATMULS = [kernels.matmul, kernels.matmul_scalar, kernels.matmul_portable]
MATMULS_TN = [kernels.matmul_tn, kernels.matmul_tn_scalar, kernels.matmul_tn_portable]
if kernels.IFMA_KERNELS:
    MATMULS.append(kernels.matmul_ifma)
    MATMULS_TN.append(kernels.matmul_tn_ifma)
needs_ifma = pytest.mark.skipif(not kernels.IFMA_KERNELS,
                                reason="no AVX-512 IFMA kernels in this build or on this CPU")


def _run_kernel(fn, a, b, shape) -> np.ndarray:
    out = np.full(tuple(shape) + (2,), 5, dtype=np.uint64)  # garbage every output must overwrite
    fn(np.ascontiguousarray(a), np.ascontiguousarray(b), out)
    return out


def _every_product(a: np.ndarray, b: np.ndarray) -> dict:
    """{kernel name: a @ b} by every matmul kernel and every matmul_tn kernel (on a.T)."""
    shape = (a.shape[0], b.shape[1])
    at = np.ascontiguousarray(a.transpose(1, 0, 2))
    results = {fn.__name__: _run_kernel(fn, a, b, shape) for fn in MATMULS}
    results.update({fn.__name__: _run_kernel(fn, at, b, shape) for fn in MATMULS_TN})
    return results


def _assert_every_result(results: dict, want) -> None:
    for name, got in results.items():
        try:
            assert_field_equal(got, want)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from None


def _ref_matmul_dot(xa: np.ndarray, xb: np.ndarray) -> np.ndarray:
    """(xa @ xb) mod p for 2-D object arrays of mpz (numpy's object matmul, exact)."""
    m, n = xa.shape[0], xb.shape[1]
    if xa.shape[1] == 0:
        return _mpz_array([0] * (m * n), (m, n))
    return np.dot(xa, xb) % P if m * n else np.empty((m, n), dtype=object)


def _random_residues(rng, shape) -> np.ndarray:
    """Uniform residues (test data only) as mpz, for _encode."""
    words = rng.integers(0, 1 << 64, size=(int(np.prod(shape, dtype=np.int64)), 2), dtype=np.uint64)
    values = [(int(hi) >> 1 << 64 | int(lo)) % P for lo, hi in words]
    return _mpz_array(values, shape)


@FAST
@given(st.data())
def test_matmul_every_implementation(data):
    """Random and edge values; m across strips of 8 rows (1..17), n odd or even
    (pairs of columns), K from 0."""
    m, k, n = data.draw(st.integers(0, 17)), data.draw(st.integers(0, 10)), data.draw(st.integers(0, 11))
    xa, a = data.draw(field_arrays((m, k)))
    xb, b = data.draw(field_arrays((k, n)))
    want = _ref_matmul(xa, xb)
    _assert_every_result(_every_product(a, b), want)


def test_matmul_edge_value_pairs():
    """Every pair of edge values meets in some product (a[i, k] b[k, j] with
    a[i, k] = EDGES[(i + k) % 8], b[k, j] = EDGES[(j + 3k) % 8])."""
    m, k, n = 9, 8, 11
    xa = _mpz_array([EDGES[(i + t) % 8] for i in range(m) for t in range(k)], (m, k))
    xb = _mpz_array([EDGES[(j + 3 * t) % 8] for t in range(k) for j in range(n)], (k, n))
    want = _ref_matmul(xa, xb)
    _assert_every_result(_every_product(_encode(xa, (m, k)), _encode(xb, (k, n))), want)
    for i in range(m):  # one edge value times every edge value, K = 1
        col = _mpz_array([EDGES[i % 8]], (1, 1))
        row = _mpz_array(EDGES, (1, 8))
        _assert_every_result(_every_product(_encode(col, (1, 1)), _encode(row, (1, 8))), (col * row) % P)


@pytest.mark.parametrize("m, k, n", [
    (1, 1, 1), (8, 1, 8), (7, 1, 9), (9, 7, 1), (15, 9, 2), (17, 3, 3), (16, 33, 17),
    (3, 0, 5), (0, 4, 3), (4, 3, 0), (0, 0, 0), (33, 515, 7), (9, 2049, 3), (2, 4100, 1),
    (40, 64, 32), (12, 100, 25),
])
def test_matmul_odd_shapes(m, k, n):
    """Partial strips (m mod 8), odd n, K = 0 and 1, K across the kernels' blocks."""
    rng = np.random.default_rng(1000 * m + 10 * k + n)  # test data only
    xa, xb = _random_residues(rng, (m, k)), _random_residues(rng, (k, n))
    want = _ref_matmul_dot(xa, xb)
    _assert_every_result(_every_product(_encode(xa, (m, k)), _encode(xb, (k, n))), want)


@pytest.mark.parametrize("k, n", [(1, 3), (3000, 3), (9000, 3), (9000, 1)])
def test_matmul_long_inner_dimension_largest_limbs(k, n):
    """Delayed reduction at the accumulators' limits: p - 1 has every limb
    (52- and 51-bit) at or next to its maximum and makes every term of the
    scalar accumulator carry; K = 9000 is past what one register block of the
    IFMA kernels may hold (4095) and spans blocks of every kernel (with n = 1,
    matmul_tn's blocks are the longest).  p itself is not canonical, but its
    limbs are all ones: the kernels sum it exactly."""
    values = [P - 1, P, P - 2, (1 << 127) - (1 << 64) - 1, (1 << 64) - 1, 1 << 126]
    m = 9
    raw_a = [P - 1 if (i + t) % 3 else values[(i + t) % 6] for i in range(m) for t in range(k)]
    raw_b = [P - 1 if (t + j) % 2 else values[(t * 5 + j) % 6] for t in range(k) for j in range(n)]
    want = _ref_matmul_dot(_mpz_array(raw_a, (m, k)), _mpz_array(raw_b, (k, n)))

    def encode_unreduced(values, shape):  # _encode would turn p into 0
        out = np.array([(v & MASK64, v >> 64) for v in values], dtype=np.uint64)
        return out.reshape(tuple(shape) + (2,))

    _assert_every_result(_every_product(encode_unreduced(raw_a, (m, k)), encode_unreduced(raw_b, (k, n))),
                         want)


def test_dot_carries_every_implementation():
    """Every product of p-1 by p-1 makes all three terms of the scalar
    accumulator carry; K = 3000 spans several blocks of matmul_tn."""
    k = 3000
    a = field.full((3, k), P - 1)
    b = field.full((k, 2), P - 1)
    want = _mpz_array([k % P] * 6, (3, 2))  # (p-1)^2 = 1
    _assert_every_result(_every_product(a, b), want)


@needs_ifma
@pytest.mark.parametrize("m, k, n", [
    (9, 1800, 200),   # matmul packs b in two blocks of columns (16 MiB each at most)
    (10, 700, 131),   # matmul_tn runs over b in blocks of 128 columns
    (21, 5000, 1),    # matmul_tn: blocks of 2048 rows
    (67, 300, 20),
])
def test_matmul_ifma_blocking_agrees_with_scalar(m, k, n):
    rng = np.random.default_rng(7 * m + k + n)  # test data only
    a = field.from_random_words(rng.integers(0, 1 << 64, size=4 * m * k, dtype=np.uint64), m * k)[0]
    b = field.from_random_words(rng.integers(0, 1 << 64, size=4 * k * n, dtype=np.uint64), k * n)[0]
    a, b = a.reshape(m, k, 2), b.reshape(k, n, 2)
    results = _every_product(a, b)
    for name in ("matmul_ifma", "matmul_tn_ifma", "matmul", "matmul_tn", "matmul_tn_scalar"):
        assert np.array_equal(results[name], results["matmul_scalar"]), name
    assert field.count_noncanonical(results["matmul_ifma"]) == 0


def test_kernel_flags_and_ifma_guard():
    """IFMA_KERNELS only on a CPU that has the instructions; without them the
    explicit IFMA entry points refuse to run."""
    assert isinstance(kernels.ASM_KERNELS, bool)
    assert isinstance(kernels.IFMA_KERNELS, bool)
    if kernels.IFMA_KERNELS:
        try:
            with open("/proc/cpuinfo") as f:
                assert "avx512ifma" in f.read().split()
        except OSError:
            pass  # not Linux: nothing to compare with
    else:
        out = np.empty((2, 4, 2), dtype=np.uint64)
        with pytest.raises(RuntimeError, match=r"matmul_ifma: .*IFMA_KERNELS is False"):
            kernels.matmul_ifma(field.zeros((2, 3)), field.zeros((3, 4)), out)
        with pytest.raises(RuntimeError, match=r"matmul_tn_ifma: .*IFMA_KERNELS is False"):
            kernels.matmul_tn_ifma(field.zeros((3, 2)), field.zeros((3, 4)), out)


# ----------------------------------------------------------------- conversions

@FAST
@given(st.lists(st.one_of(st.sampled_from(INT64_EDGES), st.integers(-(2**63), 2**63 - 1)), max_size=20),
       st.sampled_from([np.int64, np.int32, np.int8]))
def test_from_int_to_int64_round_trip(values, dtype):
    info = np.iinfo(dtype)
    values = [min(max(v, info.min), info.max) for v in values]
    arr = np.array(values, dtype=dtype)
    x = field.from_int(arr)
    assert_field_equal(x, _mpz_array(values, (len(values),)))
    back = field.to_int64(x)
    assert back.dtype == np.int64 and back.tolist() == values


def test_from_int_other_inputs():
    assert_field_equal(field.from_int(np.array([0, 2**64 - 1, 2**63], dtype=np.uint64)),
                       _mpz_array([0, 2**64 - 1, 2**63], (3,)))
    assert_field_equal(field.from_int(np.array([[True, False]])), _mpz_array([1, 0], (1, 2)))
    assert_field_equal(field.from_int([[1, -2], [3, -4]]), _mpz_array([1, -2, 3, -4], (2, 2)))
    assert_field_equal(field.from_int(np.uint64(5)), _mpz_array([5], ()))
    assert_field_equal(field.from_int([2**100, -(2**100)]), _mpz_array([2**100, -(2**100)], (2,)))
    assert_field_equal(field.from_int(np.zeros((0, 3), dtype=np.int64)), np.empty((0, 3), dtype=object))
    strided = np.arange(20, dtype=np.int64)[::-3]
    assert_field_equal(field.from_int(strided), _mpz_array(strided.tolist(), strided.shape))
    with pytest.raises(ValueError, match=r"from_int: expected an integer array, got dtype float64"):
        field.from_int(np.array([1.5]))


def test_from_int_scalar_keeps_0d_shape():
    assert field.from_int(-5).shape == (2,)


def test_to_int64_centered_lift_edges():
    half = (P - 1) // 2
    fits = [0, 1, 2**63 - 1, P - 2**63, P - 1]
    assert field.to_int64(_encode(fits, (5,))).tolist() == [0, 1, 2**63 - 1, -(2**63), -1]
    for bad in [2**63, half, half + 1, P - 2**63 - 1, 1 << 126]:
        with pytest.raises(ValueError, match=r"to_int64: 1 of 2 elements do not fit"):
            field.to_int64(_encode([5, bad], (2,)))


@FAST
@given(field_arrays())
def test_to_int64_non_contiguous(pair):
    xa, a = pair
    fits = all(int(v) < 2**63 or P - int(v) <= 2**63 for v in xa.reshape(-1))
    if fits:
        want = [int(v) if int(v) < 2**63 else int(v) - P for v in xa.reshape(-1)]
        assert field.to_int64(a).reshape(-1).tolist() == want
    else:
        with pytest.raises(ValueError, match=r"to_int64"):
            field.to_int64(a)


@FAST
@given(st.lists(st.one_of(st.sampled_from(EDGES + [P, P + 1, -1, -P, 2**200]),
                          st.integers(-(1 << 400), 1 << 400)), max_size=12))
def test_from_ints_to_ints(values):
    x = field.from_ints(values)
    assert_field_equal(x, _mpz_array(values, (len(values),)))
    back = field.to_ints(x)
    assert back.dtype == object and back.shape == (len(values),)
    assert all(type(v) is int and v == int(v0) % P for v, v0 in zip(back, values))


@FAST
@given(field_arrays())
def test_to_ints_and_mpz_layouts(pair):
    xa, a = pair
    ints = field.to_ints(a)
    assert ints.shape == xa.shape and all(int(u) == int(v) for u, v in zip(ints.flat, xa.flat))
    mp = field.to_mpz(a)
    assert mp.shape == xa.shape
    assert all(isinstance(v, type(gmpy2.mpz(0))) and v == w for v, w in zip(mp.flat, xa.flat))
    assert np.array_equal(field.from_mpz(mp), np.ascontiguousarray(a))
    assert np.array_equal(field.from_ints(ints), np.ascontiguousarray(a))


def test_from_mpz_reduces_any_size_and_sign():
    vals = [gmpy2.mpz(-1), gmpy2.mpz(P), gmpy2.mpz(2) ** 300 + 5, -gmpy2.mpz(2) ** 200]
    grid = np.array(vals, dtype=object).reshape(2, 2)
    assert_field_equal(field.from_mpz(grid), _mpz_array(vals, (2, 2)))


def test_count_noncanonical():
    x = _encode([0, 1, P - 1, P - 2], (4,))
    assert field.count_noncanonical(x) == 0
    bad = np.array([[MASK64, (1 << 63) - 1],   # p itself
                    [0, 1 << 63],              # hi limb too big
                    [MASK64, MASK64],          # 2^128 - 1
                    [MASK64, (1 << 63) - 2]],  # p - 2^64: canonical
                   dtype=np.uint64)
    assert field.count_noncanonical(bad) == 3
    assert field.count_noncanonical(bad.T.copy().T) == 3
    assert field.count_noncanonical(field.zeros((0, 5))) == 0


# ----------------------------------------------------------------- creation

def test_zeros_full():
    assert_field_equal(field.zeros((2, 0)), np.empty((2, 0), dtype=object))
    assert_field_equal(field.full(3, -1), _mpz_array([P - 1] * 3, (3,)))
    assert_field_equal(field.full((2, 2), P + 7), _mpz_array([7] * 4, (2, 2)))
    assert field.shape_of(field.zeros((4, 5))) == (4, 5)


# ----------------------------------------------------------------- fixed point

PARAMS = [Params(), Params(k=40, f=30, sigma=40), Params(k=57, f=28, sigma=40)]


@FAST
@given(st.sampled_from(PARAMS), st.data())
def test_fixed_point_round_trip(params, data):
    # Stay a step inside the range: round(x 2^f) of a value within half a step
    # of the bound is the bound itself, which is out of range.  (For f = 28,
    # 2^27 - 2^-28 is not a double: take the double just below 2^27.)
    bound = min(params.max_value - params.resolution, float(np.nextafter(params.max_value, 0)))
    values = data.draw(st.lists(st.one_of(
        st.sampled_from([0.0, -0.0, params.resolution, -params.resolution, 0.5 * params.resolution,
                         bound, -bound, 1.0, -1.0, 1 / 3]),
        st.floats(-bound, bound)), max_size=20))
    x = np.array(values, dtype=np.float64)
    enc = field.encode_fixed(x, params)
    assert field.count_noncanonical(enc) == 0
    back = field.decode_fixed(enc, params.f)
    assert back.dtype == np.float64 and back.shape == x.shape
    assert np.all(np.abs(back - x) <= params.resolution / 2)
    # The encoding itself is round(x 2^f) mod p.
    want = [int(np.rint(v * 2.0 ** params.f)) % P for v in values]
    assert_field_equal(enc, _mpz_array(want, (len(values),)))


def test_fixed_point_shapes_and_frac():
    params = Params()
    grid = np.array([[0.25, -3.5], [7.0, -0.125]])
    enc = field.encode_fixed(grid, params, frac=40)
    assert enc.shape == (2, 2, 2)
    assert np.array_equal(field.decode_fixed(enc, 40), grid)
    assert np.array_equal(field.decode_fixed(np.ascontiguousarray(enc.transpose(1, 0, 2)).transpose(1, 0, 2), 40),
                          grid)
    assert field.decode_fixed(field.encode_fixed(np.zeros((0, 4)), params), params.f).shape == (0, 4)
    # decoding a product's 2f fractional bits
    prod = field.mul(field.encode_fixed([1.5], params), field.encode_fixed([-2.25], params))
    assert field.decode_fixed(prod, 2 * params.f).tolist() == [-3.375]


@pytest.mark.filterwarnings("ignore:overflow encountered in multiply:RuntimeWarning")
@pytest.mark.parametrize("value", [2.0**27, -(2.0**27), 1e30, -1e300, float("nan"), float("inf"), float("-inf")])
def test_encoding_out_of_range_names_the_value(value):
    params = Params()
    x = np.array([0.5, value, 1.0])
    with pytest.raises(EncodingError) as info:
        field.encode_fixed(x, params)
    assert repr(value) in str(info.value) or str(value) in str(info.value)
    assert "(1,)" in str(info.value)


def test_encoding_scalar_out_of_range_names_the_value():
    with pytest.raises(EncodingError, match=r"1e\+30"):
        field.encode_fixed(1e30, Params())


def test_encoding_scalar_nan_raises():
    with pytest.raises(EncodingError, match=r"nan"):
        field.encode_fixed(float("nan"), Params())


# ----------------------------------------------------------------- parameters

def test_params_defaults_are_valid():
    p = Params()
    assert (p.k, p.f, p.sigma) == (56, 28, 40)
    assert p.k + p.f + p.sigma + 2 <= 127
    assert p.p == P and p.max_value == 2.0**27 and p.resolution == 2.0**-28
    assert "2^127 - 1" in p.describe()


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(sigma=39), r"sigma must be >= 40.*got 39"),
    (dict(f=27), r"f must be >= 28.*got 27"),
    (dict(k=58), r"k \+ f \+ sigma \+ 2 = 58 \+ 28 \+ 40 \+ 2 = 128 exceeds"),
    (dict(k=40, f=30, sigma=56), r"= 128 exceeds"),
    (dict(k=29), r"k \(29\) must exceed f \+ 1"),
    (dict(k=65, f=28, sigma=40), r"k must be <= 64|exceeds"),
])
def test_params_violations(kwargs, pattern):
    with pytest.raises(ParamError, match=pattern):
        Params(**kwargs)


def test_params_frozen():
    with pytest.raises(Exception):
        Params().f = 30  # type: ignore[misc]


def test_budget_is_tight():
    """k + f + sigma + 2 = 127 exactly is allowed."""
    p = Params(k=57, f=28, sigma=40)
    assert p.k + p.f + p.sigma + 2 == 127
    assert math.isclose(p.max_value, 2.0**28)

