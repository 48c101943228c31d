"""The secret-shared array: one node's additive share plus what is public about it.

A SharedArray holds this node's share of a field array, its fixed-point
scale ``frac`` (the value is share-sum / 2^frac, signed; integers have
frac = 0), and optionally a **mask**: a public d with x = d + a for a
seed-shared mask a (MaskSpec).  A masked array's share is derived on demand
(a_i, plus d on the leading node), and every product with it reuses d
instead of opening x again — this is how a submitted genotype matrix enters
every product without an N x M opening.

Local operations (no communication): +, - with shared or public operands,
multiplication by public integers or public reals (the latter raises frac),
sums, reshape, transpose, slicing, concatenation.  Products of two secrets
are in mpc.beaver, truncation in mpc.truncate, reveals in mpc.reveal.
A secret has no truth value: ``bool(x)`` and ``float(x)`` raise.
"""
from __future__ import annotations

import numpy as np

from mpc import field
from mpc.params import P
from mpc.triples import MaskSpec


def _take2(a: np.ndarray, rows, cols) -> np.ndarray:
    """a[rows][:, cols] for boolean masks (None: all), as a contiguous copy."""
    if rows is not None:
        a = np.take(a, np.flatnonzero(np.asarray(rows, dtype=bool)), axis=0)
    if cols is not None:
        a = np.take(a, np.flatnonzero(np.asarray(cols, dtype=bool)), axis=1)
    return np.ascontiguousarray(a)


class Mask:
    """x = d + a with d public to the nodes and a shared by seeds (spec).

    d may be given as a loader (a callable returning it): stored genotype
    blocks are then read only when a product needs them, and selections and
    transposes compose lazily, so a pass over a large matrix holds one block
    at a time."""

    __slots__ = ("spec", "_d", "_loader", "source")

    def __init__(self, spec: MaskSpec, d: np.ndarray | None = None, loader=None):
        if d is None and loader is None:
            raise ValueError("Mask needs d or a loader")
        self.spec = spec
        self._d = d
        self._loader = loader
        self.source = None       # for a transpose: the Mask it transposes (products use it untransposed)

    @property
    def d(self) -> np.ndarray:
        if self._d is None:
            self._d = self._loader()
        return self._d

    def _derived(self, spec, transform) -> "Mask":
        if self._d is not None:
            return Mask(spec, transform(self._d))
        load = self._loader
        return Mask(spec, loader=lambda: transform(load()))

    def T(self) -> "Mask":
        out = self._derived(self.spec.T(), lambda d: np.ascontiguousarray(d.transpose(1, 0, 2)))
        out.source = self
        return out

    def select(self, rows=None, cols=None) -> "Mask":
        return self._derived(self.spec.select(rows, cols), lambda d: _take2(d, rows, cols))


class SharedArray:
    """One node's share of a secret field array.

    Parameters
    ----------
    ctx : PartyContext
    share : field array, shape S + (2,), or None when `mask` is given
    frac : int
        Fractional bits of the encoding (0 for integers).
    mask : Mask, optional
    """

    __slots__ = ("ctx", "_share", "frac", "mask")
    __array_priority__ = 100  # make numpy defer to our operators

    def __init__(self, ctx, share=None, frac: int = 0, mask: Mask | None = None):
        if share is None and mask is None:
            raise ValueError("SharedArray needs a share or a mask")
        self.ctx = ctx
        self._share = share
        self.frac = int(frac)
        self.mask = mask

    # ------------------------------------------------------------ construction
    @classmethod
    def from_mask(cls, ctx, mask: Mask, frac: int = 0) -> "SharedArray":
        return cls(ctx, None, frac, mask)

    @classmethod
    def zeros(cls, ctx, shape, frac: int = 0) -> "SharedArray":
        return cls(ctx, field.zeros(shape), frac)

    @classmethod
    def public(cls, ctx, values, frac: int | None = None) -> "SharedArray":
        """A public value as a (trivial) sharing: the leading node holds it.

        Integer arrays are encoded exactly (frac 0 unless given); float arrays
        in fixed point with `frac` (default params.f) fractional bits."""
        values = np.asarray(values)
        if values.dtype.kind == "f" or (frac is not None and frac > 0):
            frac = ctx.params.f if frac is None else frac
            enc = field.encode_fixed(values, ctx.params, frac)
        else:
            frac = 0
            enc = field.from_int(values)
        share = enc if ctx.leads else field.zeros(values.shape)
        return cls(ctx, share, frac)

    @property
    def share(self) -> np.ndarray:
        if self._share is None:
            a = self.ctx.tuples.mask(self.mask.spec)
            self._share = field.add(a, self.mask.d) if self.ctx.leads else a
        return self._share

    # ------------------------------------------------------------ shape
    @property
    def shape(self) -> tuple:
        if self._share is not None:
            return self._share.shape[:-1]
        return self.mask.spec.operand_shape

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def __len__(self):
        return self.shape[0]

    def __repr__(self):
        return f"SharedArray(shape={self.shape}, frac={self.frac}, masked={self.mask is not None})"

    def __bool__(self):
        raise TypeError("a secret-shared value has no truth value: reveal it through the policy, "
                        "or use an oblivious select")

    def __float__(self):
        raise TypeError("a secret-shared value cannot be converted to float: reveal it through the policy")

    __int__ = __float__

    def _like(self, share, frac=None) -> "SharedArray":
        return SharedArray(self.ctx, share, self.frac if frac is None else frac)

    def _affine(self, share, scale: int = 1, offset=None, frac=None) -> "SharedArray":
        """A result share of scale * x (+ public offset), keeping x's mask: the new
        value is masked by scale * a with public part scale * d (+ offset)."""
        mask = None
        if self.mask is not None and share.shape == self.mask.d.shape:
            d = self.mask.d if scale == 1 else field.mul_scalar(self.mask.d, scale)
            if offset is not None:
                d = field.add(d, offset)
            mask = Mask(self.mask.spec.scaled(scale), d)
        return SharedArray(self.ctx, share, self.frac if frac is None else frac, mask)

    def with_frac(self, frac: int) -> "SharedArray":
        """The same encoding read with `frac` fractional bits (value times 2^(self.frac - frac))."""
        return SharedArray(self.ctx, self._share, frac, self.mask)

    def reshape(self, *shape) -> "SharedArray":
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return self._like(self.share.reshape(tuple(shape) + (field.LIMBS,)))

    @property
    def T(self) -> "SharedArray":
        if self.ndim != 2:
            raise ValueError(f"T: expected a 2-D array, got shape {self.shape}")
        out = SharedArray(self.ctx, None if self._share is None else
                          np.ascontiguousarray(self._share.transpose(1, 0, 2)),
                          self.frac, None if self.mask is None else self.mask.T())
        return out

    def select(self, rows=None, cols=None) -> "SharedArray":
        """Public selection of rows / columns (boolean masks) of a 2-D array.

        Unlike indexing, this keeps a mask: products with the selection still
        reuse the opened d (the dealer selects the same rows of its mask)."""
        if self.ndim != 2:
            raise ValueError(f"select: expected a 2-D array, got shape {self.shape}")
        share = None if self._share is None else _take2(self._share, rows, cols)
        mask = None if self.mask is None else self.mask.select(rows, cols)
        return SharedArray(self.ctx, share, self.frac, mask)

    def __getitem__(self, index) -> "SharedArray":
        if not isinstance(index, tuple):
            index = (index,)
        if any(i is Ellipsis for i in index):
            raise IndexError("SharedArray indexing does not support Ellipsis")
        full = index + (slice(None),) * (self.ndim - len(index)) + (slice(None),)
        return self._like(np.ascontiguousarray(self.share[full]))

    def copy(self) -> "SharedArray":
        return self._like(self.share.copy())

    # ------------------------------------------------------------ linear ops
    def _align(self, other: "SharedArray"):
        """Shares of self and other at a common frac (exact upscaling)."""
        if other.ctx is not self.ctx:
            raise ValueError("operands belong to different party contexts")
        a, b = self.share, other.share
        if self.frac == other.frac:
            return a, b, self.frac
        if self.frac < other.frac:
            return field.mul_pow2(a, other.frac - self.frac), b, other.frac
        return a, field.mul_pow2(b, self.frac - other.frac), self.frac

    def _public_encoding(self, value):
        """Encoding of a public value at this array's frac, as a field array."""
        value = np.asarray(value)
        if value.dtype.kind in "iub" and self.frac == 0:
            return field.from_int(value)
        if value.dtype.kind in "iub":
            return field.mul_pow2(field.from_int(value), self.frac)
        return field.encode_fixed(value, self.ctx.params, self.frac)

    def __add__(self, other):
        if isinstance(other, SharedArray):
            a, b, frac = self._align(other)
            return self._like(field.add(a, b), frac)
        enc = self._public_encoding(other)
        if enc.shape[:-1] != self.shape:
            enc = np.ascontiguousarray(np.broadcast_to(enc, np.broadcast_shapes(self.shape, enc.shape[:-1])
                                                       + (field.LIMBS,)))
        if not self.ctx.leads:
            share = self.share if enc.shape == self.share.shape else \
                np.ascontiguousarray(np.broadcast_to(self.share, enc.shape))
            return self._affine(share, offset=enc)
        return self._affine(field.add(self.share, enc), offset=enc)

    __radd__ = __add__

    def __neg__(self):
        return self._affine(field.neg(self.share), P - 1)

    def __sub__(self, other):
        if isinstance(other, SharedArray):
            a, b, frac = self._align(other)
            return self._like(field.sub(a, b), frac)
        return self + (-np.asarray(other))

    def __rsub__(self, other):
        return (-self) + other

    def __mul__(self, other):
        """Multiplication by a public value (secret x secret is mpc.beaver.mul).

        Integers multiply exactly; reals are encoded with params.f bits and
        the result carries frac + f (truncate it with mpc.truncate)."""
        if isinstance(other, SharedArray):
            raise TypeError("secret * secret needs a communication round: use mpc.beaver.mul / fmul")
        value = np.asarray(other)
        if value.dtype.kind in "iub":
            if value.ndim == 0:
                return self._affine(field.mul_scalar(self.share, int(value)), int(value) % P)
            return self._like(field.mul(self.share, field.from_int(value)))
        if value.dtype.kind != "f":
            raise TypeError(f"cannot multiply a SharedArray by {value.dtype}")
        return self.mul_public(value)

    def mul_public(self, values, frac: int | None = None) -> "SharedArray":
        """x * c for public reals c encoded with `frac` bits (default params.f);
        the result carries frac + self.frac bits (truncate it with mpc.truncate)."""
        frac = self.ctx.params.f if frac is None else frac
        value = np.asarray(values, dtype=np.float64)
        scaled = np.rint(value * 2.0 ** frac)
        if not np.all(np.abs(scaled) < 2.0 ** 63):
            raise ValueError(f"mul_public: a factor is too large for {frac} fractional bits")
        enc = field.from_int(scaled.astype(np.int64))
        if value.ndim == 0:
            return self._affine(field.mul_scalar(self.share, int(scaled)), int(scaled) % P, frac=self.frac + frac)
        return self._like(field.mul(self.share, enc), self.frac + frac)

    __rmul__ = __mul__

    def mul_pow2(self, k: int) -> "SharedArray":
        """Exact multiplication by 2^k (k may be negative: the inverse of 2^|k|)."""
        return self._affine(field.mul_pow2(self.share, k), pow(2, int(k), P))

    def rescale_exact(self, frac: int) -> "SharedArray":
        """The same value with `frac` fractional bits, without rounding.

        Going up multiplies by 2^(frac - self.frac); going down multiplies by the
        field inverse of 2^(self.frac - frac), which is exact only when the
        encoding is a multiple of it (the caller's guarantee, e.g. a count known
        to be an integer) — otherwise the result is garbage, not a rounding."""
        return self._affine(field.mul_pow2(self.share, frac - self.frac), pow(2, frac - self.frac, P), frac=frac)

    def sum(self, axis=None) -> "SharedArray":
        return self._like(field.sum(self.share, axis))

    def matmul_public(self, public, side: str = "right", encoded: bool = False) -> "SharedArray":
        """x @ M (side='right') or M @ x (side='left') for a public integer
        matrix M, or a public field array M when encoded=True.  Exact; frac
        is unchanged."""
        m = public if encoded else field.from_int(np.asarray(public))
        if side == "right":
            return self._like(field.matmul(self.share, m))
        return self._like(field.matmul(m, self.share))


def concatenate(arrays, axis: int = 0) -> SharedArray:
    """Concatenate SharedArrays (brought to a common frac) along an existing axis."""
    arrays = list(arrays)
    if not arrays:
        raise ValueError("concatenate: no arrays")
    frac = max(a.frac for a in arrays)
    shares = [a.share if a.frac == frac else field.mul_pow2(a.share, frac - a.frac) for a in arrays]
    ndim = arrays[0].ndim
    axis = axis % ndim if ndim else 0
    return SharedArray(arrays[0].ctx, np.concatenate(shares, axis=axis), frac)


def stack(arrays, axis: int = 0) -> SharedArray:
    arrays = list(arrays)
    ndim = arrays[0].ndim
    axis = axis % (ndim + 1)
    return concatenate([a.reshape(a.shape[:axis] + (1,) + a.shape[axis:]) for a in arrays], axis)
