"""Secure linear algebra on tall-thin and small matrices: Gram products and
symmetric (Löwdin) orthonormalisation by the coupled Newton–Schulz iteration.

These run in a wider fixed-point format than the study's default (``wide``):
more fractional bits (36 with sigma = 40) for values that stay below 2^12 —
orthonormal bases, normalised Gram matrices and their inverse square roots —
so errors do not accumulate over the dozens of products an orthonormalisation
takes.  The format still satisfies k + f + sigma + 2 <= 127 (mpc.params).
"""
from __future__ import annotations

import math

import numpy as np

from mpc import beaver, field, nonlinear
from mpc.params import P, Params
from mpc.shared import SharedArray
from mpc.truncate import plan_truncation, truncate, truncate_many

WIDE_INTEGER_BITS = 13   # |x| < 2^12 in the wide format


def wide(params: Params) -> Params:
    """The wide format for `params`: 12 integer bits, and as many fractional bits
    as the truncation budget k + f + sigma + 2 <= 127 leaves (36 for sigma = 40)."""
    f = (127 - 2 - params.sigma - WIDE_INTEGER_BITS) // 2
    if f <= params.f:
        return params
    return Params(k=WIDE_INTEGER_BITS + f, f=f, sigma=params.sigma)


def to_frac(x: SharedArray, frac: int, fmt: Params | None = None) -> SharedArray:
    """x with `frac` fractional bits: exact when going up, truncated going down."""
    if x.frac == frac:
        return x
    if x.frac < frac:
        return x.rescale_exact(frac)
    bits = None if fmt is None else fmt.k - fmt.f + x.frac
    return truncate(x, x.frac - frac, bits)


def broadcast(x: SharedArray, shape) -> SharedArray:
    """A shared scalar (or array) repeated to `shape` (local: a copy of the share)."""
    share = np.broadcast_to(x.share, tuple(shape) + x.share.shape[-1:])
    return SharedArray(x.ctx, np.ascontiguousarray(share), x.frac)


def _newton_schulz(ctx, Yk: SharedArray, Zk: SharedArray, iters: int, fmt: Params):
    """The coupled iteration T = 3/2 I - Zk Yk / 2; Yk = Yk T; Zk = T Zk, pipelined.

    Every truncated value comes masked and T keeps zy's mask, so each product's
    operands have known masks before their values exist: the dealer's c for the
    next products and the next truncation pairs are requested one step ahead,
    and each iteration waits only for its two truncation openings (2 rounds,
    one round trip each, the dealer's answers already there)."""
    f, l = fmt.f, Yk.shape[0]
    if iters <= 0:
        return Yk, Zk
    beaver.mask_many(ctx, [Yk, Zk])
    bits = fmt.k + f                         # |value| < 2^(k - f - 1) at 2f fractional bits
    pend_zy = beaver.request_product(ctx, "matmul", Zk.mask.spec, Yk.mask.spec, (l, l))
    for it in range(iters):
        # Truncating Zk Yk to f - 1 bits and reading the result at f bits halves it.
        plan_zy = plan_truncation(ctx, (l, l), f + 1, bits)
        spec_t = plan_zy.spec.scaled(P - 1)          # T = 3/2 I - zy: minus zy's mask
        pend_y = beaver.request_product(ctx, "matmul", Yk.mask.spec, spec_t, (l, l))
        pend_z = beaver.request_product(ctx, "matmul", spec_t, Zk.mask.spec, (l, l))
        plan_y, plan_z = plan_truncation(ctx, (l, l), f, bits), plan_truncation(ctx, (l, l), f, bits)
        if it + 1 < iters:
            pend_next = beaver.request_product(ctx, "matmul", plan_z.spec, plan_y.spec, (l, l))
        zy = truncate_many(ctx, [beaver.combine(ctx, "matmul", Zk, Yk, pend_zy)], [0], plans=[plan_zy])[0]
        T = 1.5 * np.eye(l) - zy.with_frac(f)      # a public matrix minus zy: keeps zy's mask
        Yk, Zk = truncate_many(ctx, [beaver.combine(ctx, "matmul", Yk, T, pend_y),
                                     beaver.combine(ctx, "matmul", T, Zk, pend_z)], [0, 0],
                               plans=[plan_y, plan_z])
        if it + 1 < iters:
            pend_zy = pend_next
    return Yk, Zk


def orth(ctx, Y: SharedArray, ns_iters: int = 24, fmt: Params | None = None,
         bound: float | None = None, ridge: float | None = None, with_root: bool = False):
    """Löwdin orthonormalisation Q = Y (YᵀY)^(-1/2), columns orthonormal.

    Parameters
    ----------
    Y : SharedArray, shape (n, l)
        |Y_ij| < 2^12 and ||Y||_F^2 < 2^12 (scale it first).
    ns_iters : int
        Newton–Schulz steps; converges when the smallest eigenvalue of
        YᵀY / trace exceeds about 2.25^-(ns_iters - 6) (1e-7 for 24).
    fmt : Params, optional
        Working format (default ``wide(params)``).
    bound : float, optional
        A public bound on the eigenvalues of YᵀY (under 3 times the largest):
        normalise by it instead of the secret trace, which spares the inverse
        square root (~28 rounds) when the caller knows the scale of Y.
    ridge : float, optional
        Add ridge * I to the normalised Gram matrix: null directions of a
        rank-deficient Y then converge to 1/sqrt(ridge) instead of growing as
        1.5^ns_iters past the format (use >= 2^-22 with the wide format).
    with_root : bool
        Also return W = (YᵀY + c ridge I)^(-1/2), whose size shows how close to
        rank-deficient Y is.

    Returns
    -------
    SharedArray, shape (n, l), frac fmt.f.

    Protocol (docs/ALGORITHMS.md, PCA step 5):

    1. G = YᵀY (one Beaver round; Y keeps its mask for step 5), truncated.
    2. c = 1/sqrt(trace G) (mpc.nonlinear.inv_sqrt), or 1/sqrt(bound) when a
       public bound is given; A = c^2 G has its eigenvalues in (0, 1].
    3. Yk = A, Zk = I; ns_iters times: T = 3/2 I - Zk Yk / 2 (one product,
       truncated by f + 1), then Yk = Yk T and Zk = T Zk (one batch): 2 rounds,
       the two truncation openings (truncated values come masked, and T keeps
       the mask of Zk Yk, so the products open nothing).
    4. W = c Zk = (YᵀY)^(-1/2).
    5. Q = Y W (one round: only W is opened).

    Rounds: about 2 ns_iters + 6 (plus one inverse square root without a bound).
    Nothing is revealed.
    """
    fmt = fmt or wide(ctx.params)
    f = fmt.f
    l = Y.shape[1]
    Y = to_frac(Y, f, fmt)
    G = beaver.fixed_products(ctx, [("matmul", Y.T, Y)], fmt=fmt)[0]
    if bound is None:
        tr = SharedArray(ctx, field.sum(np.ascontiguousarray(G.share[np.arange(l), np.arange(l)])), f)
        c = to_frac(nonlinear.inv_sqrt(to_frac(tr, ctx.params.f, fmt)), f)
        c2 = beaver.fixed_products(ctx, [("square", c, None)], fmt=fmt)[0]
        A = beaver.fixed_products(ctx, [("mul", G, broadcast(c2, G.shape))], fmt=fmt)[0]
    else:
        A = truncate(G.mul_public(1.0 / float(bound), f), f, fmt.k + f)
    if ridge:
        A = A + float(ridge) * np.eye(l)
    Yk, Zk = _newton_schulz(ctx, A, SharedArray.public(ctx, np.eye(l), f), int(ns_iters), fmt)
    if bound is None:
        W = beaver.fixed_products(ctx, [("mul", Zk, broadcast(c, Zk.shape))], fmt=fmt)[0]
    else:
        W = truncate(Zk.mul_public(1.0 / math.sqrt(float(bound)), f), f, fmt.k + f)
    Q = beaver.fixed_products(ctx, [("matmul", Y, W)], fmt=fmt)[0]
    return (Q, W) if with_root else Q
