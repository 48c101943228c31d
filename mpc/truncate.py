"""Probabilistic truncation: divide a shared fixed-point value by 2^m.

For [x] with |x| < 2^(bits-1) (x read as a signed integer) and a dealer pair
([r], [r >> m]) with r uniform in [0, 2^(bits + sigma)):

1. each node forms c_i = x_i + r_i (+ 2^(bits-1) on the leading node), so
   c = x + 2^(bits-1) + r lies in [0, 2^(bits+sigma+1)) and never wraps mod p;
2. one round: c is opened (statistically masked by r: distance <= 2^-sigma);
3. [y] = (c >> m) - 2^(bits-1-m) - [r >> m]  (public terms on the leading node).

Then y = floor(x / 2^m) or floor(x / 2^m) + 1: the error is at most one unit
in the last place.  The public part of step 3, d = (c >> m) - 2^(bits-1-m),
equals y + (r >> m): y is born masked by the dealer's r >> m (statistically,
like c), so a later Beaver product with y reuses d and opens nothing for it
(MaskSpec.trunc; the dealer rebuilds r >> m from its private seed).  Requires bits + sigma + 1 <= 126 (checked by the dealer
request); the default bits = k + m covers the product of two k-bit values whose
result fits in k bits.
"""
from __future__ import annotations

from mpc import field
from mpc.shared import Mask, SharedArray
from mpc.params import P
from mpc.triples import DEALER, MaskSpec, shift_right


class TruncPlan:
    """A truncation requested ahead of its input (plan_truncation).

    Its output's mask is known from the start (``spec``), so products of that
    output can be requested from the dealer before the truncation happens."""

    def __init__(self, ctx, shape, m: int, bits: int):
        self.shape, self.m, self.bits = tuple(shape), int(m), int(bits)
        self.tup = ctx.tuples.request("trunc", ctx.label("t"), shape=list(self.shape), bits=self.bits,
                                      m=self.m, sigma=ctx.params.sigma)
        self.spec = MaskSpec(DEALER, self.tup.label, self.shape, trunc=(self.bits + ctx.params.sigma, self.m),
                             coef=P - 1)


def plan_truncation(ctx, shape, m: int, bits: int) -> TruncPlan:
    """Request the pair of a future truncation by 2^m of a value with |x| < 2^(bits-1)."""
    return TruncPlan(ctx, shape, m, bits)


def truncate_many(ctx, xs, shifts, bits=None, plans=None) -> list:
    """Truncate each x by its shift (no-op where the shift is <= 0), one round.

    Parameters
    ----------
    xs : list of SharedArray
    shifts : list of int (or one int for all)
    bits : int or list of int, optional
        Bound on each input: |x| < 2^(bits - 1) as an integer encoding.
        Default params.k + shift.
    plans : list of TruncPlan or None, optional
        Truncations requested ahead (plan_truncation): their shift and bits
        are used, and no new request is made.
    """
    xs = list(xs)
    if isinstance(shifts, int):
        shifts = [shifts] * len(xs)
    if bits is None or isinstance(bits, int):
        bits = [bits] * len(xs)
    params = ctx.params
    plans = plans if plans is not None else [None] * len(xs)
    work = []
    for i, (x, m, b, plan) in enumerate(zip(xs, shifts, bits, plans)):
        if plan is not None:
            if tuple(x.shape) != plan.shape:
                raise ValueError(f"truncate: planned for shape {plan.shape}, got {x.shape}")
            work.append((i, x, plan.m, plan.bits, plan.tup))
            continue
        if m <= 0:
            continue
        b = params.k + m if b is None else b
        tup = ctx.tuples.request("trunc", ctx.label("t"), shape=list(x.shape), bits=b, m=m,
                                 sigma=params.sigma)
        work.append((i, x, m, b, tup))
    out = list(xs)
    if not work:
        return out
    c_shares = []
    labels = []
    for _, x, m, b, tup in work:
        labels.append(tup.label)
        c = field.add(x.share, tup["r"])
        if ctx.leads:
            c = field.add_scalar(c, 1 << (b - 1))
        c_shares.append(c)
    opened = ctx.open_many(c_shares, tag="trunc")
    for (i, x, m, b, tup), c, label in zip(work, opened, labels):
        d = field.add_scalar(shift_right(c, m), -(1 << (b - 1 - m)))     # public: y + (r >> m)
        y = field.sub(d, tup["r_hi"]) if ctx.leads else field.neg(tup["r_hi"])
        # y comes masked: y = d - (r >> m), so a product with it opens nothing new.
        spec = MaskSpec(DEALER, label, x.shape, trunc=(b + params.sigma, m), coef=P - 1)
        out[i] = SharedArray(ctx, y, x.frac - m, Mask(spec, d))
    return out


def max_bits(params) -> int:
    """The widest truncation input the masking budget allows: bits + sigma + 1 <= 126."""
    return 125 - params.sigma


def plan_rescale(ctx, shape, shift: int, bits: int):
    """The pair of a future rescale_many item (x of this shape, shift, bits),
    requested now; None where the shift needs no truncation."""
    if shift <= 0:
        return None
    _check_budget(ctx, bits)
    return plan_truncation(ctx, shape, shift, bits)


def _check_budget(ctx, bits: int) -> None:
    if bits > max_bits(ctx.params):
        raise ValueError(f"internal: a {bits}-bit truncation exceeds the masking budget "
                         f"({max_bits(ctx.params)} bits with sigma = {ctx.params.sigma})")


def rescale_many(ctx, items, plans=None) -> list:
    """Scale each x by 2^-shift, one round for the batch: items are (x, shift, bits).

    shift > 0 truncates (bits bounds the input as in truncate_many, checked
    against the budget); shift <= 0 is an exact, local scale-up by 2^-shift.
    The result has frac x.frac - shift.  `plans` (plan_rescale, one per item)
    are pairs requested earlier, with the same shift and bits."""
    out, todo = [None] * len(items), []
    plans = [None] * len(items) if plans is None else list(plans)
    for i, ((x, shift, bits), plan) in enumerate(zip(items, plans)):
        if shift <= 0:
            out[i] = x.rescale_exact(x.frac - shift)
            continue
        _check_budget(ctx, bits)
        if plan is not None and (plan.m, plan.bits) != (shift, bits):
            raise ValueError(f"internal: a truncation planned as ({plan.m}, {plan.bits}) used as ({shift}, {bits})")
        todo.append((i, x, shift, bits, plan))
    if todo:
        res = truncate_many(ctx, [t[1] for t in todo], [t[2] for t in todo], [t[3] for t in todo],
                            plans=[t[4] for t in todo])
        for (i, *_), r in zip(todo, res):
            out[i] = r
    return out


def truncate(x: SharedArray, shift: int, bits: int | None = None) -> SharedArray:
    return truncate_many(x.ctx, [x], [shift], bits)[0]
