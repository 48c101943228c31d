"""Small building blocks shared by the protocols (fixed-point plumbing)."""
from __future__ import annotations

from mpc.shared import SharedArray
from mpc.truncate import truncate_many

EXTRA_BITS = 28


def scale_public(ctx, xs, factors, frac: int | None = None, bound_bits: int | None = None) -> list:
    """x * c for public reals c, as fixed point with `frac` fractional bits (one round).

    Each x is multiplied by the integer round(c 2^(frac - x.frac + 28)) and the
    product truncated by 28 bits, so the public factor keeps about 28 more
    significant bits than a plain fixed-point encoding would (1/N for a cohort
    of 10^5 is 1e-5: it would keep only 11 significant bits at f = 28).

    Parameters
    ----------
    xs : list of SharedArray
    factors : list of float (one per x) or one float for all
    frac : int, default params.f
    bound_bits : int, optional
        Bound on the results: |x c| < 2^(bound_bits - 1 - frac); default params.k.
    """
    xs = list(xs)
    factors = list(factors) if isinstance(factors, (list, tuple)) else [factors] * len(xs)
    frac = ctx.params.f if frac is None else frac
    k = ctx.params.k if bound_bits is None else bound_bits
    scaled = []
    for x, c in zip(xs, factors):
        shift = frac - x.frac + EXTRA_BITS
        y = x * int(round(float(c) * 2.0 ** shift))
        scaled.append(SharedArray(ctx, y.share, frac + EXTRA_BITS))
    return truncate_many(ctx, scaled, EXTRA_BITS, k + EXTRA_BITS)


def product_tree(ctx, factors) -> SharedArray:
    """Elementwise product of several 0/1 (integer) arrays in ceil(log2 n) rounds."""
    from mpc import beaver

    level = list(factors)
    while len(level) > 1:
        pairs = [(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        nxt = beaver.mul_many(ctx, pairs)
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]
