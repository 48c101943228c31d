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

from mpc import beaver, field
from mpc.params import P, Params
from mpc.reveal import reveal
from mpc.shared import SharedArray
from mpc.triples import MAX_ORTHOGONAL
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


FAST_A = 2.0
"""A *fast* Newton–Schulz step uses T = 2I - Zk Yk instead of (3I - Zk Yk) / 2.
An eigenvalue m of M = Zk Yk maps to m (2 - m)^2: small ones grow 4x per step
(2.25x in a standard step), the band [0.787, 1.185] maps into itself, but the
iteration does not converge to 1 inside it.  Fast steps suffice where only the
column span matters; standard steps then finish exactly (5 from the band to
below 1e-12; protocols.reference.NS_FINISH_STEPS)."""


FUSE_MAX_ELEMENTS = 1 << 16
"""The largest n x l for which orth's last Newton–Schulz step also makes Q
(one round fewer, one n x l opening more: 1 MB per peer, ~8 ms at 1 Gbit/s,
less than a wide-area round trip)."""


def ns_schedule(fast: int, exact: int) -> list:
    """The step kinds of an orthonormalisation: `fast` fast steps, then `exact` standard ones."""
    return [True] * int(fast) + [False] * int(exact)


def _ns_requests(ctx, spec_y, spec_z, l: int, f: int, bits: int, fast: bool, final=None) -> dict:
    """Every dealer request of one Newton–Schulz step (after the first) whose
    iterates carry the masks spec_y, spec_z (known before their values:
    truncation outputs).  ``final`` = (spec of Y0, rows, shift) marks the last
    step: no Y update, but R = Y0 Zk (with zy) and Q = R T (with Z)."""
    r = {"zy": beaver.request_product(ctx, "matmul", spec_z, spec_y, (l, l)),
         # A standard step truncates Zk Yk to f - 1 bits and reads it at f bits: half of it.
         "plan_zy": plan_truncation(ctx, (l, l), f if fast else f + 1, bits)}
    spec_t = r["plan_zy"].spec.scaled(P - 1)          # T = a I - zy: minus zy's mask
    r["z"] = beaver.request_product(ctx, "matmul", spec_t, spec_z, (l, l))
    r["plan_z"] = plan_truncation(ctx, (l, l), f, bits)
    if final is None:
        r["y"] = beaver.request_product(ctx, "matmul", spec_y, spec_t, (l, l))
        r["plan_y"] = plan_truncation(ctx, (l, l), f, bits)
    else:
        spec_y0, rows, shift = final
        r["r"] = beaver.request_product(ctx, "matmul", spec_y0, spec_z, (rows, l))
        r["plan_r"] = plan_truncation(ctx, (rows, l), f, bits)
        r["q"] = beaver.request_product(ctx, "matmul", r["plan_r"].spec, spec_t, (rows, l))
        r["plan_q"] = plan_truncation(ctx, (rows, l), shift, bits)
    return r


class _NewtonSchulz:
    """The coupled iteration from Y0 = A, Z0 = I: T = a I - b Zk Yk; Yk = Yk T;
    Zk = T Zk (a, b = 3/2, 1/2, or 2, 1 in fast steps), pipelined, ending with
    Q = Y Zk / 2^e for the n x l matrix Y whose Gram matrix A is.

    Every truncated value comes masked and T keeps zy's mask, so every
    product's operands have known masks before their values exist: the
    dealer requests of step i + 1 (products and truncation pairs) travel
    during step i, those of step 1 with the truncation that makes A (only its
    mask spec is needed), and those of whatever follows (``ahead``, called
    with Q's mask spec) with the last step's.  The first step has Z0 = I, so
    zy = A and T = a I - b A are free: 1 round; every other step waits only
    for its two truncation openings (2 rounds, 2 hops).  The last step needs
    no Y update: R = Y Zk rides with its zy and Q = R T with its Z, so Q
    costs no round of its own (Zk and T commute: Y Zk T = Y T Zk) — for Y up
    to FUSE_MAX_ELEMENTS, since R's truncation opens n x l more elements;
    a larger Y gets Q = Y Zk / 2^e in a round after the last step."""

    def __init__(self, ctx, spec_a, spec_y, rows: int, e: int, schedule, fmt: Params, ahead=None):
        self.ctx, self.schedule, self.fmt = ctx, list(schedule), fmt
        f, l = fmt.f, spec_a.shape[0]
        self.l, self.bits = l, fmt.k + f
        self.final = (spec_y, rows, f + e)
        self.fuse = rows * l <= FUSE_MAX_ELEMENTS
        self.ahead, self.ahead_result = ahead, None
        fast, alone = self.schedule[0], len(self.schedule) == 1
        # Step 1: Y1 = A T (both masked: no opening), Z1 = T, with T = 2I - A
        # (exact) or (3I - A) / 2 (read at f + 1 bits, then truncated by 1);
        # when it is the only step, Q = Y T instead of Y1.
        spec_t = spec_a.scaled(P - 1)
        t_frac = f if fast else f + 1
        if alone:
            self.first = beaver.request_product(ctx, "matmul", spec_y, spec_t, (rows, l))
            self.plan_1 = plan_truncation(ctx, (rows, l), t_frac + e, self.bits)
        else:
            self.first = beaver.request_product(ctx, "matmul", spec_a, spec_t, (l, l))
            self.plan_1 = plan_truncation(ctx, (l, l), t_frac, self.bits)
        self.plan_z1 = None if fast else plan_truncation(ctx, (l, l), 1, fmt.k + 1)
        spec_z1 = spec_t if fast else self.plan_z1.spec
        if alone:
            self.next = None
            self._ask_ahead(self.plan_1.spec)
        else:
            self.next = self._requests(self.plan_1.spec, spec_z1, 1)

    def _ask_ahead(self, spec_q):
        if self.ahead is not None:
            self.ahead_result = self.ahead(spec_q)

    def _requests(self, spec_y, spec_z, i):
        """Step i's requests (and, for the last step, Q's and ahead's)."""
        last = i + 1 == len(self.schedule)
        r = _ns_requests(self.ctx, spec_y, spec_z, self.l, self.fmt.f, self.bits, self.schedule[i],
                         self.final if last and self.fuse else None)
        if last and not self.fuse:             # Q = Y Zk / 2^e in a round of its own
            spec_y0, rows, shift = self.final
            r["q_after"] = beaver.request_product(self.ctx, "matmul", spec_y0, r["plan_z"].spec, (rows, self.l))
            r["plan_q"] = plan_truncation(self.ctx, (rows, self.l), shift, self.bits)
        if last:
            self._ask_ahead(r["plan_q"].spec)
        return r

    def run(self, A: SharedArray, Y: SharedArray):
        """(Zk after every step, Q = Y Zk / 2^e at f bits)."""
        ctx, f, l = self.ctx, self.fmt.f, self.l
        fast = self.schedule[0]
        T = FAST_A * np.eye(l) - A if fast else (3.0 * np.eye(l) - A).with_frac(f + 1)
        first = beaver.combine(ctx, "matmul", Y if self.next is None else A, T, self.first)
        if fast:
            Yk = truncate_many(ctx, [first], [0], plans=[self.plan_1])[0]
            Zk = T
        else:
            Yk, Zk = truncate_many(ctx, [first, T], [0, 0], plans=[self.plan_1, self.plan_z1])
        if self.next is None:
            return Zk, Yk.with_frac(f)               # the only step made Q
        n = len(self.schedule)
        for i in range(1, n):
            req = self.next
            if i + 1 < n:
                self.next = self._requests(req["plan_y"].spec, req["plan_z"].spec, i + 1)
            last = "q" in req
            zy_raw = beaver.combine(ctx, "matmul", Zk, Yk, req["zy"])
            if last:
                zy, R = truncate_many(ctx, [zy_raw, beaver.combine(ctx, "matmul", Y, Zk, req["r"])], [0, 0],
                                      plans=[req["plan_zy"], req["plan_r"]])
            else:
                zy = truncate_many(ctx, [zy_raw], [0], plans=[req["plan_zy"]])[0]
            if self.schedule[i]:
                T = FAST_A * np.eye(l) - zy
            else:
                T = 1.5 * np.eye(l) - zy.with_frac(f)      # a public matrix minus zy: keeps zy's mask
            if last:
                Q, Zk = truncate_many(ctx, [beaver.combine(ctx, "matmul", R, T, req["q"]),
                                            beaver.combine(ctx, "matmul", T, Zk, req["z"])], [0, 0],
                                      plans=[req["plan_q"], req["plan_z"]])
                return Zk, Q.with_frac(f)
            Yk, Zk = truncate_many(ctx, [beaver.combine(ctx, "matmul", Yk, T, req["y"]),
                                         beaver.combine(ctx, "matmul", T, Zk, req["z"])], [0, 0],
                                   plans=[req["plan_y"], req["plan_z"]])
            if "q_after" in req:
                Q = truncate_many(ctx, [beaver.combine(ctx, "matmul", Y, Zk, req["q_after"])], [0],
                                  plans=[req["plan_q"]])[0]
                return Zk, Q.with_frac(f)
        raise AssertionError("unreachable")


def bound_exponent(bound: float) -> int:
    """e with 4^e the power of four at or above `bound`: orth normalises by 4^e
    (exact shifts) instead of `bound` itself."""
    if not bound > 0:
        raise ValueError(f"orth: the bound must be positive, got {bound}")
    return math.ceil(math.log(float(bound), 4) - 1e-12)


class OrthPlan:
    """The dealer requests of a bounded orth(Y) made from Y's mask spec alone,
    before Y exists (plan_orth): G's c and truncation, the Newton–Schulz
    steps' requests, and, during the last step, Q's product and truncation
    and whatever ``ahead`` asks for the caller's next step (called with Q's
    mask spec; its result is returned with Q)."""

    def __init__(self, ctx, spec_y, shape, schedule, fmt: Params, bound: float, ridge=None, ahead=None):
        f, (n, l) = fmt.f, tuple(shape)
        e = bound_exponent(bound)
        if not -f < 2 * e <= fmt.k - f - 3:
            raise ValueError(f"orth: bound {bound} is outside what the format can normalise by shifts")
        if ahead is not None and not schedule:
            raise ValueError("orth: requests ahead need at least one Newton-Schulz step")
        self.ctx, self.spec_y, self.shape, self.fmt, self.e, self.ridge = ctx, spec_y, (n, l), fmt, e, ridge
        self.ahead = ahead
        bits = fmt.k + f                   # values below 2^(k - f - 1) at 2f fractional bits
        self.plan_g = plan_truncation(ctx, (l, l), f + 2 * e, bits)        # A = G / 4^e
        self.pend_g = beaver.request_product(ctx, "matmul", spec_y.T(), spec_y, (l, l))
        self.ns = (_NewtonSchulz(ctx, self.plan_g.spec, spec_y, n, e, schedule, fmt, ahead)
                   if schedule else None)

    def run(self, Y: SharedArray, with_root: bool = False):
        """Q (and W with with_root, and ahead's result when there is one)."""
        ctx, f, e, l = self.ctx, self.fmt.f, self.e, self.shape[1]
        if tuple(Y.shape) != self.shape or (Y.mask is not None and Y.mask.spec != self.spec_y):
            raise ValueError("internal: orth planned for another operand")
        Y = to_frac(Y, f, self.fmt)
        beaver.mask_many(ctx, [Y], specs=[self.spec_y])
        A = truncate_many(ctx, [beaver.combine(ctx, "matmul", Y.T, Y, self.pend_g)], [0],
                          plans=[self.plan_g])[0].with_frac(f)
        if self.ridge:
            A = A + float(self.ridge) * np.eye(l)
        if self.ns is not None:
            Zk, Q = self.ns.run(A, Y)
        else:
            Zk = SharedArray.public(ctx, np.eye(l), f)
            Q = to_frac(Y.with_frac(f + e), f, self.fmt)
        out = (Q,) + ((Zk.with_frac(f + e),) if with_root else ())
        out += (self.ns.ahead_result,) if self.ahead is not None else ()
        return out if len(out) > 1 else Q


def plan_orth(ctx, spec_y, shape, ns_iters: int, fmt: Params | None = None, *, bound: float,
              ridge: float | None = None, fast: int = 0, ahead=None) -> OrthPlan:
    """Make the dealer requests of orth(Y, ns_iters, bound=..., fast=...) now,
    for a Y of this shape that will carry the mask `spec_y` (a planned
    truncation's output): pass the plan to orth, which then waits for no
    dealer answer."""
    fmt = fmt or wide(ctx.params)
    return OrthPlan(ctx, spec_y, shape, ns_schedule(fast, ns_iters), fmt, float(bound), ridge, ahead)


def orth(ctx, Y: SharedArray, ns_iters: int = 24, fmt: Params | None = None, *,
         bound: float | None = None, ridge: float | None = None, with_root: bool = False,
         fast: int = 0, ahead=None, plan: OrthPlan | None = None):
    """Löwdin orthonormalisation Q = Y (YᵀY)^(-1/2), columns orthonormal.

    Parameters
    ----------
    Y : SharedArray, shape (n, l)
        |Y_ij| < 2^12 and ||Y||_F^2 < 2^12 (scale it first).
    ns_iters : int
        Standard Newton–Schulz steps; they converge when the smallest
        eigenvalue of the normalised Gram matrix exceeds about
        2.25^-(ns_iters - 6) (1e-7 for 24).
    fmt : Params, optional
        Working format (default ``wide(params)``).
    bound : float
        A public bound on the eigenvalues of YᵀY (under 3 times the largest):
        normalise by 4^e, the power of four at or above it (exact shifts).
        Required unless `plan` is given: every caller knows the scale of its Y
        (normalising by the secret trace would cost an inverse square root).
    ridge : float, optional
        Add ridge * I to the normalised Gram matrix: null directions of a
        rank-deficient Y then converge to 1/sqrt(ridge) instead of growing as
        1.5^ns_iters past the format (use >= 2^-22 with the wide format).
    with_root : bool
        Also return W = (YᵀY + 4^e ridge I)^(-1/2),
        whose size shows how close to rank-deficient Y is.
    fast : int
        Fast steps (FAST_A) before the standard ones:
        they grow small eigenvalues 4x per step instead of 2.25x.  With
        ns_iters = 0 the result keeps the span of Y, orthonormal only up to
        singular values in [0.89, 1.09] once every direction reached the band.
    ahead : callable, optional
        Called with Q's mask spec during the last step, to make
        the dealer requests of the caller's next step; its result is
        returned after Q (and W).
    plan : OrthPlan, optional
        The requests made ahead by plan_orth (then the other options are its own).

    Returns
    -------
    SharedArray, shape (n, l), frac fmt.f (then W, then ahead's result, if asked for).

    Protocol (docs/ALGORITHMS.md, PCA step 5):

    1. G = YᵀY (one Beaver round unless Y is masked; Y keeps its mask for step 5),
       truncated.
    2. A = G / 4^e (the same truncation): eigenvalues in (0, 1] (up to 3).
    3. Yk = A, Zk = I; `fast` fast then ns_iters standard steps: T = 2I - Zk Yk
       or 3/2 I - Zk Yk / 2 (one product, truncated), then Yk = Yk T and
       Zk = T Zk (one batch): 2 rounds, the two truncation openings
       (truncated values come masked, and T keeps the mask of Zk Yk, so the
       products open nothing); the first step is 1 round (Z0 = I).
    4. W = Zk / 2^e = (YᵀY)^(-1/2).
    5. Q = Y W: Y Zk truncated by f + e (no opening), with the last step.

    Every dealer request travels one step ahead of its values
    (_NewtonSchulz): rounds 2 (fast + ns_iters) (+1 when Y has no mask),
    and as many hops (one-way latencies) plus one.  Nothing is revealed.
    """
    if plan is not None:
        return plan.run(Y, with_root)
    if bound is None:
        raise ValueError("orth: a public bound on YᵀY's eigenvalues is required")
    fmt = fmt or wide(ctx.params)
    Y = to_frac(Y, fmt.f, fmt)
    # Y's mask (one round if it has none) is chosen first, so that G's c, A's
    # truncation and the first steps' requests go to the dealer before that round.
    spec = Y.mask.spec if Y.mask is not None else beaver.fresh_mask_spec(ctx, Y)
    return plan_orth(ctx, spec, Y.shape, ns_iters, fmt, bound=bound, ridge=ridge, fast=fast,
                     ahead=ahead).run(Y, with_root)


def request_rotation(ctx, l: int, fmt: Params | None = None):
    """Ask the dealer for a secret Haar-random l x l orthogonal matrix (triples
    kind "orthogonal") in `fmt` (default wide), for eigh_rotated.  Ask well
    before it is used: its shares then arrive while the nodes work."""
    fmt = fmt or wide(ctx.params)
    if not 1 <= int(l) <= MAX_ORTHOGONAL:
        raise ValueError(f"request_rotation: l must be in [1, {MAX_ORTHOGONAL}], got {l}")
    return ctx.tuples.request("orthogonal", ctx.label("o"), l=int(l), frac=int(fmt.f))


def eigh_rotated(ctx, S: SharedArray, rotation, k: int, name: str, fmt: Params | None = None):
    """Top-k eigenpairs of a secret symmetric S (l x l, eigenvalues below ~2^11),
    by revealing H = Rᵀ S R to the nodes under policy entry `name`.

    H is S in a secret, uniformly random orthonormal basis R (`rotation`, from
    request_rotation in the same format): its distribution depends only on
    S's eigenvalues, which is all the nodes learn.  The leading node computes
    H = V Λ Vᵀ (numpy) and sends the top-k columns C of V and their
    eigenvalues to the others (one opening: every node then uses
    bit-identical C, whatever its LAPACK); U = R C.

    Rounds: 5 (R's mask, SR's truncation, the reveal, the leader's C, U's
    truncation); nothing waits for the dealer when R was requested ahead.

    Returns
    -------
    (U, values): U SharedArray (l, k) frac fmt.f, orthonormal columns in
    decreasing order of eigenvalue (signs arbitrary); values float64 (k,).
    """
    ctx.policy.check(name, "nodes")            # before any round
    fmt = fmt or wide(ctx.params)
    l, f = S.shape[0], fmt.f
    R = SharedArray(ctx, rotation["r"], f)
    if S.shape != (l, l) or R.shape != (l, l) or not 1 <= int(k) <= l:
        raise ValueError(f"eigh_rotated: S {S.shape} and R {R.shape} must be l x l with 1 <= k = {k} <= l")
    S = to_frac(S, f, fmt)
    beaver.mask_many(ctx, [S, R])
    SR = beaver.fixed_products(ctx, [("matmul", S, R)], fmt=fmt)[0]        # comes masked
    H = beaver.products(ctx, [("matmul", R.T, SR)])[0]                     # both masked: no opening
    h = reveal(ctx, H, name)
    w, V = np.linalg.eigh((h + h.T) / 2.0)
    top = np.argsort(-w, kind="stable")[: int(k)]
    mine = SharedArray.public(ctx, np.vstack([V[:, top], w[top][None, :]]), f)
    agreed = field.decode_fixed(ctx.open_many([mine.share], tag=f"agree:{name}")[0], f)
    C, values = agreed[:l], agreed[l]
    RC = SharedArray(ctx, R.matmul_public(np.rint(C * 2.0 ** f).astype(np.int64)).share, 2 * f)
    return truncate_many(ctx, [RC], [f], bits=fmt.k + f)[0], values
