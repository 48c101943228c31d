"""Arithmetic in F_p, p = 2^127 - 1, on numpy arrays.

An array of n-dimensional shape S holding field elements is a numpy ``uint64``
array of shape ``S + (2,)``: ``[..., 0]`` is the low limb, ``[..., 1]`` the high
limb (< 2^63).  Every function here validates its arguments (dtype, trailing
limb axis, shapes) and then calls a Cython kernel of ``mpc._kernels.field``;
inputs that are not C-contiguous are copied, never misread.  Results are always
canonical residues in [0, p - 1].

The reference twin of every kernel is plain Python integer arithmetic (see
``to_ints`` / ``from_ints``), which tests compare against with gmpy2.
"""
from __future__ import annotations

import numpy as np

from mpc._kernels import field as _k
from mpc.errors import EncodingError
from mpc.params import P, Params

LIMBS = 2
_MASK64 = (1 << 64) - 1


# ----------------------------------------------------------------- validation

def _check(x: np.ndarray, name: str) -> np.ndarray:
    """Validate a field array and return a C-contiguous version of it."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected a numpy uint64 field array, got {type(x).__name__}")
    if x.dtype != np.uint64:
        raise ValueError(f"{name}: expected dtype uint64, got {x.dtype}")
    if x.ndim == 0 or x.shape[-1] != LIMBS:
        raise ValueError(f"{name}: expected a trailing limb axis of length 2, got shape {x.shape}")
    return np.ascontiguousarray(x)


def _flat(x: np.ndarray) -> np.ndarray:
    return x.reshape(-1, LIMBS)


def shape_of(x: np.ndarray) -> tuple:
    """Logical shape of a field array (without the limb axis)."""
    return x.shape[:-1]


def _same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str):
    """Return a, b with equal logical shapes, broadcasting if numpy allows."""
    if a.shape == b.shape:
        return a, b
    try:
        shape = np.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    except ValueError:
        raise ValueError(
            f"shape mismatch: {name_a} has shape {a.shape[:-1]}, {name_b} has shape {b.shape[:-1]}"
        ) from None
    a = np.ascontiguousarray(np.broadcast_to(a, shape + (LIMBS,)))
    b = np.ascontiguousarray(np.broadcast_to(b, shape + (LIMBS,)))
    return a, b


def _out(shape, out: np.ndarray | None, name: str = "out") -> np.ndarray:
    if out is None:
        return np.empty(tuple(shape) + (LIMBS,), dtype=np.uint64)
    if out.dtype != np.uint64 or out.shape != tuple(shape) + (LIMBS,) or not out.flags.c_contiguous:
        raise ValueError(f"{name}: expected a C-contiguous uint64 array of shape "
                         f"{tuple(shape) + (LIMBS,)}, got {out.dtype} {out.shape}")
    return out


def _split(value: int) -> tuple[int, int]:
    value %= P
    return value & _MASK64, value >> 64


# ----------------------------------------------------------------- creation

def zeros(shape) -> np.ndarray:
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    return np.zeros(shape + (LIMBS,), dtype=np.uint64)


def full(shape, value: int) -> np.ndarray:
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    out = np.empty(shape + (LIMBS,), dtype=np.uint64)
    lo, hi = _split(int(value))
    out[..., 0] = lo
    out[..., 1] = hi
    return out


def from_int(values) -> np.ndarray:
    """Signed integers (int64-compatible array or nested lists) to field elements."""
    arr = np.asarray(values)
    if arr.dtype == np.uint64:
        out = np.empty(arr.shape + (LIMBS,), dtype=np.uint64)
        _k.from_uint64(np.ascontiguousarray(arr).reshape(-1), _flat(out))
        return out
    if arr.dtype == object:
        return from_ints(arr)
    if arr.dtype.kind not in "iub":
        raise ValueError(f"from_int: expected an integer array, got dtype {arr.dtype}")
    shape = arr.shape                       # ascontiguousarray would make a 0-d array 1-D
    arr = np.ascontiguousarray(arr, dtype=np.int64).reshape(-1)
    out = np.empty(shape + (LIMBS,), dtype=np.uint64)
    _k.from_int64(arr, _flat(out))
    return out


def to_int64(x: np.ndarray) -> np.ndarray:
    """Centered lift to int64 (values above (p-1)/2 are negative).

    Raises ValueError if an element's lift does not fit in int64."""
    x = _check(x, "x")
    out = np.empty(x.shape[:-1], dtype=np.int64)
    bad = _k.to_int64(_flat(x), out.reshape(-1))
    if bad:
        raise ValueError(f"to_int64: {bad} of {out.size} elements do not fit in a signed 64-bit integer")
    return out


def from_ints(values) -> np.ndarray:
    """Python (or gmpy2) integers of any size to field elements, reduced mod p."""
    arr = np.asarray(values, dtype=object)
    out = np.empty(arr.shape + (LIMBS,), dtype=np.uint64)
    flat = _flat(out)
    for i, v in enumerate(arr.reshape(-1)):
        v = int(v) % P
        flat[i, 0] = v & _MASK64
        flat[i, 1] = v >> 64
    return out


def to_ints(x: np.ndarray) -> np.ndarray:
    """Field elements to an object array of Python ints in [0, p - 1]."""
    x = _check(x, "x")
    flat = _flat(x)
    out = np.empty(flat.shape[0], dtype=object)
    for i in range(flat.shape[0]):
        out[i] = (int(flat[i, 1]) << 64) | int(flat[i, 0])
    return out.reshape(x.shape[:-1])


def from_mpz(values) -> np.ndarray:
    """gmpy2 ``mpz`` values (any size, any sign) to field elements."""
    return from_ints([int(v) for v in np.asarray(values, dtype=object).reshape(-1)]).reshape(
        np.asarray(values, dtype=object).shape + (LIMBS,))


def to_mpz(x: np.ndarray) -> np.ndarray:
    """Field elements to an object array of gmpy2 ``mpz``."""
    import gmpy2

    ints = to_ints(x)
    out = np.empty(ints.shape, dtype=object)
    for i, v in np.ndenumerate(ints):
        out[i] = gmpy2.mpz(v)
    return out


def count_noncanonical(x: np.ndarray) -> int:
    """How many entries are not canonical residues (for validating peer data)."""
    x = _check(x, "x")
    return int(_k.count_noncanonical(_flat(x)))


# ----------------------------------------------------------------- elementwise

def add(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    a, b = _same_shape(_check(a, "a"), _check(b, "b"), "a", "b")
    out = _out(a.shape[:-1], out)
    _k.add(_flat(a), _flat(b), _flat(out))
    return out


def sub(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    a, b = _same_shape(_check(a, "a"), _check(b, "b"), "a", "b")
    out = _out(a.shape[:-1], out)
    _k.sub(_flat(a), _flat(b), _flat(out))
    return out


def neg(a: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    a = _check(a, "a")
    out = _out(a.shape[:-1], out)
    _k.neg(_flat(a), _flat(out))
    return out


def mul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    a, b = _same_shape(_check(a, "a"), _check(b, "b"), "a", "b")
    out = _out(a.shape[:-1], out)
    _k.mul(_flat(a), _flat(b), _flat(out))
    return out


def mul_scalar(a: np.ndarray, scalar: int, out: np.ndarray | None = None) -> np.ndarray:
    """a * s for one integer s (any size; reduced mod p)."""
    a = _check(a, "a")
    out = _out(a.shape[:-1], out)
    lo, hi = _split(int(scalar))
    _k.mul_scalar(_flat(a), lo, hi, _flat(out))
    return out


def add_scalar(a: np.ndarray, scalar: int, out: np.ndarray | None = None) -> np.ndarray:
    a = _check(a, "a")
    out = _out(a.shape[:-1], out)
    lo, hi = _split(int(scalar))
    _k.add_scalar(_flat(a), lo, hi, _flat(out))
    return out


def mul_pow2(a: np.ndarray, k: int, out: np.ndarray | None = None) -> np.ndarray:
    """a * 2^k for any integer k (negative k multiplies by the inverse of 2^|k|)."""
    a = _check(a, "a")
    out = _out(a.shape[:-1], out)
    _k.mul_pow2(_flat(a), int(k) % 127, _flat(out))
    return out


def beaver_combine(c, d, b, e, a, add_de: bool, out: np.ndarray | None = None) -> np.ndarray:
    """c + d*b + e*a (+ d*e if add_de): a node's share of x*y (see mpc.beaver)."""
    arrays = [_check(v, n) for v, n in ((c, "c"), (d, "d"), (b, "b"), (e, "e"), (a, "a"))]
    shape = arrays[0].shape
    for v, n in zip(arrays[1:], "dbea"):
        if v.shape != shape:
            raise ValueError(f"beaver_combine: {n} has shape {v.shape[:-1]}, c has {shape[:-1]}")
    out = _out(shape[:-1], out)
    _k.beaver_combine(*[_flat(v) for v in arrays], bool(add_de), _flat(out))
    return out


# ----------------------------------------------------------------- reductions

def sum(a: np.ndarray, axis: int | None = None) -> np.ndarray:  # noqa: A001 (mirrors numpy)
    """Sum along one axis (or all axes when axis is None), reduced once at the end."""
    a = _check(a, "a")
    shape = a.shape[:-1]
    if axis is None:
        a = a.reshape(1, -1, LIMBS)
        pre, mid, post = 1, a.shape[1], 1
        out_shape = ()
    else:
        ndim = len(shape)
        if not -ndim <= axis < ndim:
            raise ValueError(f"sum: axis {axis} out of range for shape {shape}")
        axis %= ndim
        pre = int(np.prod(shape[:axis], dtype=np.int64))
        mid = shape[axis]
        post = int(np.prod(shape[axis + 1:], dtype=np.int64))
        out_shape = shape[:axis] + shape[axis + 1:]
    out = np.empty(tuple(out_shape) + (LIMBS,), dtype=np.uint64)
    if pre * post == 0:
        return out
    _k.sum_mid(a.reshape(pre, mid, post * LIMBS), out.reshape(-1, LIMBS))
    return out


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Matrix product with delayed reduction: (m, K) @ (K, n) -> (m, n).

    1-D operands are treated as numpy does (a vector on the left is a row, on
    the right a column) and the result drops that axis."""
    a = _check(a, "a")
    b = _check(b, "b")
    a_vec, b_vec = a.ndim == 2, b.ndim == 2
    a2 = a.reshape(1, -1, LIMBS) if a_vec else a
    b2 = b.reshape(-1, 1, LIMBS) if b_vec else b
    if a2.ndim != 3 or b2.ndim != 3:
        raise ValueError(f"matmul: expected 1-D or 2-D operands, got shapes {a.shape[:-1]} and {b.shape[:-1]}")
    if a2.shape[1] != b2.shape[0]:
        raise ValueError(f"matmul: inner dimensions differ: a is {a.shape[:-1]}, b is {b.shape[:-1]}")
    m, n = a2.shape[0], b2.shape[1]
    res = _out((m, n), None if (a_vec or b_vec) else out)
    _k.matmul(a2, b2, res)
    if a_vec and b_vec:
        return res.reshape(LIMBS)
    if a_vec:
        return res.reshape(n, LIMBS)
    if b_vec:
        return res.reshape(m, LIMBS)
    return res


def matmul_tn(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a.T @ b for a of shape (K, m) and b of shape (K, n), without a transposed copy."""
    a = _check(a, "a")
    b = _check(b, "b")
    if a.ndim != 3 or b.ndim != 3:
        raise ValueError(f"matmul_tn: expected 2-D operands, got shapes {a.shape[:-1]} and {b.shape[:-1]}")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"matmul_tn: row counts differ: a is {a.shape[:-1]}, b is {b.shape[:-1]}")
    m, n = a.shape[1], b.shape[1]
    out = np.empty((m, n, LIMBS), dtype=np.uint64)
    if m * n * 64 > 256 << 20:
        # Accumulators would exceed 256 MiB: transpose a instead.
        _k.matmul(np.ascontiguousarray(a.transpose(1, 0, 2)), b, out)
    else:
        _k.matmul_tn(a, b, out)
    return out


# ----------------------------------------------------------------- sampling

def from_random_words(words: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    """Uniform field elements from random uint64 words by rejection.

    Returns (elements, words consumed); fewer than n elements come back only
    when the words run out (each candidate is rejected with probability 2^-127)."""
    words = np.ascontiguousarray(words, dtype=np.uint64).reshape(-1)
    out = np.empty((n, LIMBS), dtype=np.uint64)
    filled, used = _k.sample_uniform(words, out)
    return out[:filled], used


# ----------------------------------------------------------------- fixed point

def encode_fixed(x, params: Params, frac: int | None = None) -> np.ndarray:
    """Encode float64 values as round(x 2^frac) mod p (frac defaults to params.f).

    Raises EncodingError naming the first value outside the format's range
    |x| < 2^(k-1-f) (or that is NaN / infinite)."""
    frac = params.f if frac is None else frac
    x = np.asarray(x, dtype=np.float64)
    scaled = np.rint(x * (2.0 ** frac))
    limit = 2.0 ** (params.k - 1)
    bad = ~(np.abs(scaled) < limit)  # also catches NaN
    if bad.any():
        idx = np.argwhere(bad)[0]
        value = float(x[tuple(idx)]) if x.ndim else float(x)
        raise EncodingError(
            f"value {value!r} at index {tuple(int(i) for i in idx)} cannot be encoded: the fixed-point "
            f"format holds |x| < 2^{params.k - 1 - frac} = {2.0 ** (params.k - 1 - frac):g}"
            + (" (NaN or infinite)" if not np.isfinite(value) else ""))
    return from_int(scaled.astype(np.int64))


def decode_fixed(a: np.ndarray, frac: int) -> np.ndarray:
    """Centered lift of field elements divided by 2^frac, as float64."""
    a = _check(a, "a")
    out = np.empty(a.shape[:-1], dtype=np.float64)
    _k.to_double(_flat(a), 2.0 ** -frac, out.reshape(-1))
    return out
