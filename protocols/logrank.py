"""Secure log-rank test and Kaplan–Meier curves on pooled survival counts.

The definitions are those of docs/ALGORITHMS.md ("Log-rank test and
Kaplan–Meier"), as protocols.reference.logrank, logrank_stratified and
kaplan_meier implement them; the privacy-preserving setting is that of
von Maltitz et al. (JMIR Med Inform 2021): hospitals share per-time at-risk
and event counts on a public grid, and the nodes compute on their sum.

Input: the pooled table ``n_sgt`` (at risk) and ``d_sgt`` (events) per
stratum s, group g and grid time t — exact integers, the sum of the
providers' tables (parties.provider.survival_counts).  Everything below is
batched over all grid times; nothing is revealed to the nodes.

Numbers.  Counts are bounded by the public cohort size N <= 2^a.  Every
division is by a count, so it becomes ``rho = 2^a / x``: the study's
reciprocal (relative error < 2^-26) on x / 2^a, refined by one Newton step
whose error term ``1 - x rho`` is formed exactly from the integer x, so rho
has relative error about 2^-44 (``refined_reciprocal``).  Ratios such as
``n_gt / n_t`` are then integer times rho (exact) before one truncation.
Values are kept near 1 (ratios, normalised vectors) so that each truncation
loses only absolute 2^-32 .. 2^-44; sums of products (expected counts, the
variance matrix, the Greenwood sum) are formed exactly before their single
truncation.  The largest cohort is N < 2^20 (1,048,576 patients): the exact
integer test for groups with variance needs N^4 / 4 below the comparison
bound.

Log-rank protocol (``logrank_sums`` then ``logrank_statistic``):

1. Per (stratum, time) u: n_u = Σ_g n_gu, d_u = Σ_g d_gu (local).  One
   batched refined reciprocal gives rho_u = 2^a / n_u and
   rho'_u = 2^a / (n_u - 1) (0 where n_u = 0, resp. n_u = 1); its two
   Newton product rounds also carry the integer products
   D_u = d_u (n_u - d_u), n_gu d_u and q_gu = n_gu (n_u - n_gu), and
   A_g = Σ_u D_u q_gu.
2. One product round: E_g = Σ_u (n_gu d_u) rho_u / 2^a (a matrix product),
   c_u = D_u rho'_u / 2^a = d_u (n_u - d_u) / (n_u - 1), and
   p_gu = n_gu rho_u / 2^a = n_gu / n_u; one truncation round.
3. y_gu = c_u p_gu, then V = diag(Σ_u y_gu) - Y Pᵀ (two product and two
   truncation rounds).  O_g = Σ_u d_gu is exact.  Strata are just more
   columns u, so the sums over u are the stratified sums.
4. The statistic zᵀ V⁻ z, z = O - E, for any number of groups, without
   revealing which groups take part: a group has variance iff the exact
   integer A_g > 0 (then V_gg >= 1 / 2N); groups without variance have
   z_g = 0 and are neutralised, and the null direction of V is filled in:
   M = G V + tr(V) act actᵀ + G diag(1 - act) (= G times V plus a
   complement orthogonal to z), so zᵀ V⁻ z = G zᵀ M⁻¹ z exactly.
   z is scaled by a secret power of two (normalisation of Σ|z_g|), M by
   D = diag(M)^-1/2 (inv_sqrt; its error cancels: (Dz)ᵀ(DMD)⁻¹(Dz) =
   zᵀM⁻¹z for any D), Dz again by a power of two, and an LDLᵀ elimination
   with refined pivot reciprocals gives chi^ = ẑᵀ M̃⁻¹ ẑ in [1/4G^2, 2^19].
   Pivots below 2^-18 (a singular variance matrix: four or more groups
   whose risk sets never meet) are clamped, which keeps every truncation
   within its bound, and counted.
5. chi^ is normalised once more: what leaves is its mantissa m in [1/2, 1)
   and the exponent e of chisq = G m 2^e — a function of chisq alone.

Revealed to the analyst under ``logrank.test``: per group N_g (subjects),
O_g, E_g (sums over strata when stratified), the chisq mantissa and exponent,
the number of groups with variance (df = that - 1) and the count of clamped
pivots.  Nothing else; nodes see only one-time-masked values.

Kaplan–Meier protocol (``kaplan_meier``, per group, pooled over strata):

1. One comparison run (8 rounds) on n - d, n, d and 2 (n - m) + 1:
   w = [n = d > 0] (everyone at risk has the event), g = [d > 0] - w, and
   keep = [n >= m] for the minimum at risk m (when m > 0).
2. rho_gt = 2^a / n_gt and rho^nd_gt = 2^a / (n_gt - d_gt) come from the
   log-rank's batched refined reciprocal.  h = d rho / 2^a (exact product)
   and the Greenwood term d / (n (n - d)) = g (rho^nd - rho) / 2^a
   (1/(n-d) - 1/n, exact product with the 0/1 flag g) — one product and one
   truncation round, shared with log-rank step 2.
3. S = prefix products of 1 - h along the grid (Sklansky, 2 ceil(log2 T)
   rounds); the Greenwood sum GW is a prefix sum (local).  U = prefix sums
   of w flag the undefined SE (from a wipe-out on, as in the reference).
4. Suppression happens before anything is revealed: at risk, events, S, GW
   and U are multiplied by keep (one round, exact).
5. sqrt(GW) = GW inv_sqrt(GW) (28 + 2 rounds; relative precision even for
   tiny GW), SE = S sqrt(GW) (one round, not truncated).

Revealed to the analyst under ``logrank.km`` (an opt-in policy entry): per
group and grid time the at-risk and event counts, S, SE, the undefined-SE
flag and, with a minimum at risk, the keep flag — all zero where suppressed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mpc import beaver, compare, field, nonlinear
from mpc.errors import InputError, PolicyError
from mpc.reveal import ANALYST, output
from mpc.shared import SharedArray, concatenate
from mpc.truncate import plan_rescale, rescale_many

POLICY = {"logrank.test": ("analyst",)}
"""What a new study allows: the test only."""

KM_POLICY = {"logrank.km": ("analyst",)}
"""Opt-in: a study that lists this entry also releases Kaplan–Meier curves."""

MAX_COHORT_BITS = 20          # N < 2^20: see the module docstring
PIVOT_FLOOR_BITS = 18         # pivots below 2^-18 are clamped (and counted)
SOLVE_FRAC = 32               # fractional bits of the elimination (values < 2^19)
SOLVE_BOUND = 19
KM_FRAC = 40                  # S, 1 - h, the Greenwood sum (values <= 1)


# ============================================================ small helpers

def _sa(ctx, share, frac: int = 0) -> SharedArray:
    return SharedArray(ctx, np.ascontiguousarray(share), frac)


def _tile(x: SharedArray, lead) -> SharedArray:
    """x repeated along new leading axes: shape lead + x.shape (a local copy)."""
    share = np.broadcast_to(x.share, tuple(lead) + x.share.shape)
    return _sa(x.ctx, share, x.frac)


def _spread(x: SharedArray, m: int) -> SharedArray:
    """x repeated along a new trailing axis: shape x.shape + (m,), out[..., j] = x."""
    share = np.broadcast_to(x.share[..., None, :], x.share.shape[:-1] + (m, field.LIMBS))
    return _sa(x.ctx, share, x.frac)


def _max_compare_bits(ctx) -> int:
    return 126 - ctx.params.sigma - max(1, math.ceil(math.log2(ctx.n))) - 1


def _refrac(ctx, items, plans=None) -> list:
    """Re-encode each x with another number of fractional bits; one round.

    items: (x, frac, log2_bound) with |value of x| <= 2^log2_bound.  Going
    down truncates (the bound sets the truncation's masking width, checked
    against the budget); going up is exact and local.  `plans` (_plan_refrac,
    one per item) are pairs requested before the products that made the x."""
    return rescale_many(ctx, [(x, x.frac - frac, int(log2_bound) + x.frac + 2) for x, frac, log2_bound in items],
                        plans)


def _plan_refrac(ctx, shape, x_frac: int, frac: int, log2_bound) -> object:
    """The pair of a future _refrac item (an x of this shape at x_frac bits),
    requested now: with the product round that makes x, so its truncation
    does not wait a round trip for the dealer."""
    return plan_rescale(ctx, tuple(shape), x_frac - frac, int(log2_bound) + x_frac + 2)


def _at_frac(x: SharedArray, frac: int) -> SharedArray:
    """The same encoding read with `frac` fractional bits (divides the value
    by 2^(frac - x.frac); no arithmetic)."""
    return SharedArray(x.ctx, x.share, frac)


def _prefix_sum(x: SharedArray) -> SharedArray:
    """Inclusive prefix sums along the last axis (local, exact)."""
    share = x.share
    T = share.shape[-2]
    step = 1
    while step < T:
        nxt = share.copy()
        nxt[..., step:, :] = field.add(share[..., step:, :], share[..., :-step, :])
        share = nxt
        step *= 2
    return _sa(x.ctx, share, x.frac)


def refined_reciprocal(ctx, x: SharedArray, log2_max: int, out_frac: int, side_p=(), side_q=None):
    """1/x with relative error about 2^-out_frac, for |1/x| <= 2^log2_max.

    1. R = mpc.nonlinear.reciprocal(x) (27 rounds; relative error < 2^-26,
       R = 0 for x = 0);
    2. one product round: P = x R, exact, so e = 1 - x R is exact;
    3. one product round: R e (|R e| <= 2^(log2_max - 26), the bound of the
       truncation), then one truncation round: rho = R + R e = R (1 - eps^2).

    `side_p` are product items that ride along in round 2; `side_q(results of
    side_p)` returns the items that ride along in round 3.
    Returns (rho at out_frac, results of side_p, results of side_q)."""
    f = ctx.params.f
    if out_frac < f:
        raise ValueError(f"refined_reciprocal: out_frac {out_frac} below the study's f = {f}")
    R = nonlinear.reciprocal(x)
    res = beaver.products(ctx, [("mul", x, R)] + list(side_p))
    P, side_p_out = res[0], res[1:]
    e = 1 - P                                                   # exact: -eps
    plan = _plan_refrac(ctx, R.shape, R.frac + e.frac, out_frac, log2_max - 26)
    res = beaver.products(ctx, [("mul", R, e)] + (list(side_q(side_p_out)) if side_q else []))
    Q, side_q_out = res[0], res[1:]
    Q = _refrac(ctx, [(Q, out_frac, log2_max - 26)], [plan])[0]
    return R.rescale_exact(out_frac) + Q, side_p_out, side_q_out


def prefix_product(ctx, x: SharedArray, log2_bound: int = 1) -> SharedArray:
    """Inclusive prefix products along the last axis, at x's frac.

    Sklansky's network: level s multiplies every element whose index has bit
    s set by the last element of the lower half of its block, so each
    output is a product of at most ceil(log2 T) truncated partial products.
    Rounds: 2 ceil(log2 T) (a product and a truncation per level); T/2
    products per level.  |every partial product| <= 2^log2_bound."""
    T = x.shape[-1]
    share = x.share.copy()
    index = np.arange(T)
    s = 0
    while (1 << s) < T:
        upper = index[(index >> s) & 1 == 1]
        partner = ((upper >> (s + 1)) << (s + 1)) + (1 << s) - 1
        a = _sa(ctx, share[..., upper, :], x.frac)
        b = _sa(ctx, share[..., partner, :], x.frac)
        plan = _plan_refrac(ctx, a.shape, 2 * x.frac, x.frac, log2_bound)
        prod = beaver.products(ctx, [("mul", a, b)])[0]
        share[..., upper, :] = _refrac(ctx, [(prod, x.frac, log2_bound)], [plan])[0].share
        s += 1
    return _sa(ctx, share, x.frac)


# ============================================================ inputs

@dataclass(frozen=True)
class LogrankOptions:
    """What the analyst asked for.

    Attributes
    ----------
    stratified : bool
        Stratified test on the submitted strata (else strata are pooled).
    time_step : int
        Coarsening factor m >= 1 of the submitted grid (--time-resolution
        divided by the study's resolution).
    km : bool
        Compute and release Kaplan–Meier curves (needs ``logrank.km``).
    km_min_at_risk : int
        Suppress (zero and flag) KM rows with fewer at risk; 0: none.
    """

    stratified: bool = False
    time_step: int = 1
    km: bool = False
    km_min_at_risk: int = 0

    def __post_init__(self):
        if int(self.time_step) < 1:
            raise InputError(f"the time step must be a positive number of grid steps, got {self.time_step}")
        if int(self.km_min_at_risk) < 0:
            raise InputError(f"--km-min-at-risk must be >= 0, got {self.km_min_at_risk}")


@dataclass
class SurvivalTables:
    """The pooled counts as the protocol uses them (all local to each node).

    at_risk, events : SharedArray (G, U) integers, U = strata x times (the
        flattened stratum-major axis of the test).
    km_at_risk, km_events : SharedArray (G, T) integers, pooled over strata.
    groups, strata : labels; times : float (T,), the (coarsened) grid.
    bound_bits : a with every count <= 2^a.
    """

    at_risk: SharedArray
    events: SharedArray
    km_at_risk: SharedArray
    km_events: SharedArray
    groups: list
    strata: list
    times: np.ndarray
    bound_bits: int


def coarse_index(n_fine: int, step: int) -> np.ndarray:
    """Coarse grid index of each submitted grid index: the nearest multiple
    of `step` (ties upward), c(k) = floor((k + floor(step / 2)) / step)."""
    return (np.arange(n_fine) + step // 2) // step


def coarsen_counts(share: np.ndarray, step: int) -> np.ndarray:
    """(..., T, 2, limbs) at-risk/event shares on the coarse grid (local, exact).

    At risk at coarse point c is at risk at the first fine point mapped to c
    (everyone whose time maps to c or later); events are summed over the
    fine points mapped to c."""
    if step == 1:
        return share
    T = share.shape[-3]
    half = step // 2
    n_coarse = int(coarse_index(T, step)[-1]) + 1
    first = np.maximum(np.arange(n_coarse) * step - half, 0)
    at_risk = share[..., first, 0, :]
    padded = np.zeros(share.shape[:-3] + (n_coarse * step, field.LIMBS), dtype=np.uint64)
    padded[..., half:half + T, :] = share[..., :, 1, :]
    prefix = share.shape[:-3]
    events = field.sum(padded.reshape(prefix + (n_coarse, step, field.LIMBS)), axis=len(prefix) + 1)
    return np.stack([at_risk, events], axis=-2)


def survival_tables(ctx, cohort, options: LogrankOptions) -> SurvivalTables:
    """Pooled counts in the protocol's layout: coarsening, strata (local)."""
    counts, strata, groups, times = cohort.survival()
    if len(groups) < 2:
        raise InputError(f"the log-rank test needs at least two groups; the survival tables have "
                         f"{len(groups)} ({', '.join(map(str, groups)) or 'none'})")
    N = int(cohort.n_samples)
    a = max(1, int(N).bit_length())
    if a > MAX_COHORT_BITS:
        raise InputError(f"the log-rank protocol supports cohorts below 2^{MAX_COHORT_BITS} "
                         f"patients; this one has {N}")
    step = int(options.time_step)
    share = coarsen_counts(counts.share, step)       # (S, G, T, 2, limbs)
    spacing = float(times[1] - times[0]) if len(times) > 1 else 0.0
    times = float(times[0]) + np.arange(share.shape[2]) * spacing * step
    G = share.shape[1]
    km = field.sum(share, axis=0)                     # (G, T, 2, limbs)
    test = share if options.stratified else km[None]
    test = np.ascontiguousarray(test.transpose(1, 0, 2, 3, 4)).reshape(G, -1, 2, field.LIMBS)
    return SurvivalTables(at_risk=_sa(ctx, test[:, :, 0]), events=_sa(ctx, test[:, :, 1]),
                          km_at_risk=_sa(ctx, km[:, :, 0]), km_events=_sa(ctx, km[:, :, 1]),
                          groups=list(groups), strata=list(strata) if options.stratified else ["all"],
                          times=times, bound_bits=a)


# ============================================================ the batched counting stage

@dataclass
class Formats:
    """Fractional bits of the stage's results for a cohort bound 2^a and G groups."""

    a: int
    rho: int        # 2^a / x
    expected: int   # E and z = O - E
    ratio: int      # p = n_gu / n_u
    weight: int     # c_u = d (n - d) / (n - 1)
    product: int    # y = c p
    variance: int   # V and M

    @classmethod
    def for_cohort(cls, a: int, n_groups: int) -> "Formats":
        lg = max(1, math.ceil(math.log2(n_groups)))
        ratio = 34
        return cls(a=a,
                   rho=min(44, 83 - 2 * a),                           # E truncation: 2a + rho + 2 <= 85
                   expected=min(40, 62 - a - lg),                      # sum |z| normalised in <= 64 bits
                   ratio=ratio,
                   weight=min(40, 84 - a - ratio),                     # c p <= 2^(a-1)
                   product=min(40, 83 - a - ratio),                    # Y Pᵀ <= 2^a
                   variance=min(36, 54 - a - math.ceil(math.log2(n_groups + 1))))  # diag M < 2^55


@dataclass
class KmFlags:
    """0/1 integers (G, T): w = [n = d > 0], g = [d > 0] - w, keep = [n >= m] (None: m = 0)."""

    wipeout: SharedArray
    greenwood: SharedArray
    keep: SharedArray | None


def km_flags(ctx, n: SharedArray, d: SharedArray, min_at_risk: int, a: int) -> KmFlags:
    """Step 1 of the Kaplan–Meier protocol: one sign run (8 rounds) on
    n - d, n, d (>= 0: [x = 0] = 1 - sign) and 2 (n - m) + 1 (odd: never 0,
    [n < m] = (1 - sign) / 2 exactly)."""
    parts = [n - d, n, d]
    if min_at_risk > 0:
        parts.append(n * 2 - (2 * int(min_at_risk) - 1))
    stacked = concatenate([x.reshape((1,) + x.shape) for x in parts], axis=0)
    sgn = compare.sign(stacked, bits=a + 4 + max(0, int(min_at_risk).bit_length() - a))
    zero = [1 - sgn[i] for i in range(3)]
    wipeout = zero[0] - zero[1]                      # n = d and n > 0
    greenwood = (1 - zero[2]) - wipeout              # d > 0 and n > d
    keep = None
    if min_at_risk > 0:
        keep = 1 - (1 - sgn[3]).mul_pow2(-1)         # 1 - [n < m]; (1 - sign) is even
    return KmFlags(wipeout, greenwood, keep)


@dataclass
class Stage:
    """Results of the counting stage (secret).

    observed (G,) integers; expected (G,) and variance (G, G) fixed point;
    has_variance_raw (G,) integers A_g (> 0 iff the group has variance);
    km_h, km_greenwood_term (G, T) fixed point (Kaplan–Meier only)."""

    observed: SharedArray
    expected: SharedArray
    variance: SharedArray
    has_variance_raw: SharedArray
    km_h: SharedArray | None = None
    km_greenwood_term: SharedArray | None = None


def survival_sums(ctx, tables: SurvivalTables, fmt: Formats, flags: KmFlags | None) -> Stage:
    """Log-rank steps 1-3 and Kaplan–Meier step 2, batched (36 rounds)."""
    a = fmt.a
    n, d = tables.at_risk, tables.events                       # (G, U)
    G, U = n.shape
    n_u, d_u = n.sum(axis=0), d.sum(axis=0)                    # (U,)
    inputs = [n_u, n_u - 1]
    if flags is not None:
        nk, dk = tables.km_at_risk, tables.km_events            # (G, T)
        inputs += [nk.reshape(-1), (nk - dk).reshape(-1)]
    x = concatenate(inputs)
    # step 1: refined reciprocals, with the integer products riding along
    side_p = [("mul", d_u, n_u - d_u), ("mul", n, _tile(d_u, (G,))), ("mul", n, _tile(n_u, (G,)) - n)]
    rho_all, (D_u, nd, q), (A,) = refined_reciprocal(
        ctx, _at_frac(x, a), a, fmt.rho, side_p=side_p,
        side_q=lambda r: [("matmul", r[2], r[0].reshape(U, 1))])     # A_g = Σ_u q_gu D_u
    A = A.reshape(G)
    ctx.progress("survival-sums", 1, 3)
    rho, rho1 = rho_all[:U], rho_all[U:2 * U]
    # step 2: expected counts, weights c_u, ratios p_gu (and KM's h, Greenwood term)
    items = [("matmul", nd, rho.reshape(U, 1)),
             ("mul", D_u, rho1),
             ("mul", n, _tile(rho, (G,)))]
    if flags is not None:
        T = tables.km_at_risk.shape[1]
        rho_k = rho_all[2 * U:2 * U + G * T].reshape(G, T)
        rho_nd = rho_all[2 * U + G * T:].reshape(G, T)
        items += [("mul", tables.km_events, rho_k), ("mul", flags.greenwood, rho_nd - rho_k)]
    raw = beaver.products(ctx, items)
    hi = fmt.rho + a                                            # raw products carry value * 2^a
    todo = [(_at_frac(raw[0], hi).reshape(G), fmt.expected, a),
            (_at_frac(raw[1], hi), fmt.weight, a - 1),
            (_at_frac(raw[2], hi), fmt.ratio, 0)]
    if flags is not None:
        todo += [(_at_frac(raw[3], hi), KM_FRAC, 0), (_at_frac(raw[4], hi), KM_FRAC, 0)]
    done = _refrac(ctx, todo)
    E, c, p = done[:3]
    ctx.progress("survival-sums", 2, 3)
    # step 3: y = c p, V = diag(Σ y) - Y Pᵀ
    y = beaver.products(ctx, [("mul", _tile(c, (G,)), p)])[0]
    y = _refrac(ctx, [(y, fmt.product, a - 1)])[0]
    ypt = beaver.products(ctx, [("matmul", y, p.T)])[0]          # frac product + ratio
    diag = y.sum(axis=1).rescale_exact(ypt.frac)
    v_raw = -ypt
    share = v_raw.share.copy()
    idx = np.arange(G)
    share[idx, idx] = field.add(share[idx, idx], diag.share)
    V = _refrac(ctx, [(_sa(ctx, share, ypt.frac), fmt.variance, a)])[0]
    ctx.progress("survival-sums", 3, 3)
    stage = Stage(observed=d.sum(axis=1), expected=E, variance=V, has_variance_raw=A)
    if flags is not None:
        stage.km_h, stage.km_greenwood_term = done[3], done[4]
    return stage


# ============================================================ the statistic

@dataclass
class Statistic:
    """chisq = G mantissa 2^exponent (mantissa * G output), the number of
    groups with variance, and the number of clamped pivots (all secret)."""

    mantissa: SharedArray
    exponent: SharedArray
    groups_with_variance: SharedArray
    clamped: SharedArray


def _eliminate(ctx, A: SharedArray, b: SharedArray):
    """chi^ = bᵀ A⁻¹ b by LDLᵀ elimination at SOLVE_FRAC (A symmetric, unit
    diagonal up to rounding).  Per pivot k: clamp to >= 2^-18 (k > 0; a
    comparison and a product), refined reciprocal rho_k, then
    L_i = A_ik rho_k, A_ij -= L_i A_kj, b_i -= L_i b_k and the term
    b_k^2 rho_k (b_k^2 <= chi^ pi_k keeps every value below 2^19)."""
    F = SOLVE_FRAC
    G = A.shape[0]
    A_share, b_share = A.share.copy(), b.share.copy()
    terms, clamps = [], []
    floor = 2.0 ** -PIVOT_FLOOR_BITS
    for k in range(G):
        piv = _sa(ctx, A_share[k:k + 1, k], F)
        bk = _sa(ctx, b_share[k:k + 1], F)
        if k > 0:
            low = compare.less_than_public(piv, floor, bits=F + 3)
            clamps.append(low)
            fix = beaver.products(ctx, [("mul", low, SharedArray.public(ctx, np.array([floor]), F) - piv)])[0]
            piv = piv + fix
        rho, (sq,), _ = refined_reciprocal(ctx, piv, PIVOT_FLOOR_BITS, F, side_p=[("square", bk, None)])
        rest = np.arange(k + 1, G)
        if rest.size:
            row = _sa(ctx, A_share[k, rest], F)
            m = rest.size
            L = beaver.products(ctx, [("mul", row, _tile(rho, (m,)).reshape(m))])[0]
            L, sq = _refrac(ctx, [(L, F, (PIVOT_FLOOR_BITS + 1) // 2 + 1), (sq, F, SOLVE_BOUND)])
            upd = beaver.products(ctx, [("mul", _spread(L, m), _tile(row, (m,))),
                                        ("mul", L, _tile(bk, (m,)).reshape(m)),
                                        ("mul", sq, rho)])
            dA, db, t = _refrac(ctx, [(upd[0], F, 1), (upd[1], F, SOLVE_BOUND // 2 + 1), (upd[2], F, SOLVE_BOUND)])
            A_share[np.ix_(rest, rest)] = field.sub(A_share[np.ix_(rest, rest)], dA.share)
            b_share[rest] = field.sub(b_share[rest], db.share)
        else:
            sq = _refrac(ctx, [(sq, F, SOLVE_BOUND)])[0]
            t = beaver.products(ctx, [("mul", sq, rho)])[0]
            t = _refrac(ctx, [(t, F, SOLVE_BOUND)])[0]
        terms.append(t)
    chi = terms[0]
    for t in terms[1:]:
        chi = chi + t
    clamped = SharedArray.zeros(ctx, (1,))
    for c in clamps:
        clamped = clamped + c
    return chi, clamped


def logrank_statistic(ctx, stage: Stage, fmt: Formats) -> Statistic:
    """Log-rank steps 4-5: chisq = zᵀ V⁻ z, z = O - E, as a mantissa and an exponent."""
    a, F_E = fmt.a, fmt.expected
    G = stage.expected.shape[0]
    lg = max(1, math.ceil(math.log2(G)))
    z = stage.observed.rescale_exact(F_E) - stage.expected
    V = stage.variance
    bits = max(4 * a, a + F_E + 2)
    if bits > _max_compare_bits(ctx):
        raise InputError(f"the log-rank test needs {bits}-bit comparisons for this cohort; "
                         f"{ctx.n} nodes allow {_max_compare_bits(ctx)}")
    neg_z, has_var = compare.ltz_many(ctx, [z, -stage.has_variance_raw], bits)
    idx = np.arange(G)
    trace = _sa(ctx, field.sum(np.ascontiguousarray(V.share[idx, idx]), axis=0)[None], V.frac)
    abs_z, t_act = beaver.products(ctx, [("mul", z, 1 - neg_z * 2),
                                         ("mul", _tile(trace, (G,)).reshape(G), has_var)])
    # M = G V + tr(V) act actᵀ + G diag(1 - act); its diagonal needs act_g^2 = act_g only
    diag_V = _sa(ctx, V.share[idx, idx], V.frac)
    m_diag = diag_V * G + t_act + (1 - has_var) * G
    # z' = z 2^-e_z with sum |z'| in [1/2, 1)
    bz = a + lg + F_E + 2
    nz = compare.normalise(abs_z.sum().reshape(1), bits=bz)
    scale_z = _tile(nz.scale, (G,)).reshape(G)
    zs, azs, J = beaver.products(ctx, [("mul", z, scale_z), ("mul", abs_z, scale_z),
                                       ("mul", _spread(t_act, G), _tile(has_var, (G,)))])
    z1, az1 = _refrac(ctx, [(_at_frac(zs, bz - 1), 40, 0), (_at_frac(azs, bz - 1), 40, 0)])
    # D = diag(M)^-1/2 (its error cancels), Dz' and D Dᵀ
    D = nonlinear.inv_sqrt(m_diag)
    DD, zD, azD = beaver.products(ctx, [("mul", _spread(D, G), _tile(D, (G,))), ("mul", z1, D), ("mul", az1, D)])
    half = (a + 2) // 2 + 1
    DD, zD, azD = _refrac(ctx, [(DD, 40, a + 1), (zD, 40, half), (azD, 40, half)])
    # z'' = z' D 2^-e_2 with sum |z''| in [1/2, 1); M~ = D M D
    b2 = lg + half + 40 + 2
    n2 = compare.normalise(azD.sum().reshape(1), bits=b2)
    M = V * G + J
    share = M.share.copy()
    share[idx, idx] = field.add(share[idx, idx], ((1 - has_var) * G).rescale_exact(M.frac).share)
    M = _sa(ctx, share, M.frac)
    scale_2 = _tile(n2.scale, (G,)).reshape(G)
    Mt, zz = beaver.products(ctx, [("mul", M, DD), ("mul", zD, scale_2)])
    Mt, zz = _refrac(ctx, [(Mt, SOLVE_FRAC, 1), (_at_frac(zz, b2 - 1), SOLVE_FRAC, 0)])
    chi, clamped = _eliminate(ctx, Mt, zz)
    nc = compare.normalise(chi, frac=40, bits=SOLVE_BOUND + SOLVE_FRAC + 2)
    exponent = nc.exponent + nz.exponent * 2 + n2.exponent * 2
    return Statistic(mantissa=nc.mantissa * G, exponent=exponent,
                     groups_with_variance=has_var.sum().reshape(1), clamped=clamped)


# ============================================================ Kaplan–Meier

def kaplan_meier(ctx, tables: SurvivalTables, stage: Stage, flags: KmFlags) -> dict:
    """Kaplan–Meier steps 3-5 (after km_flags and the counting stage).

    Returns the arrays released under ``logrank.km`` (secret here):
    at_risk, events, undefined (integers), survival (frac 40), se (frac 80)
    and, with a minimum at risk, kept — each (G, T), zero where suppressed."""
    n, d = tables.km_at_risk, tables.km_events
    S = prefix_product(ctx, 1 - stage.km_h, log2_bound=1)                          # step 3
    ctx.progress("kaplan-meier", 1, 3)
    GW = _prefix_sum(stage.km_greenwood_term)
    U = _prefix_sum(flags.wipeout)
    if flags.keep is not None:                                                     # step 4
        n, d, S_out, GW, U = beaver.products(ctx, [("mul", x, flags.keep) for x in (n, d, S, GW, U)])
    else:
        S_out = S
    inv = nonlinear.inv_sqrt(GW)                                                    # step 5
    root = beaver.products(ctx, [("mul", GW, inv)])[0]
    root = _refrac(ctx, [(root, KM_FRAC, 0)])[0]
    ctx.progress("kaplan-meier", 2, 3)
    se = beaver.products(ctx, [("mul", S, root)])[0]
    ctx.progress("kaplan-meier", 3, 3)
    out = {"at_risk": n, "events": d, "survival": S_out, "se": se, "undefined": U}
    if flags.keep is not None:
        out["kept"] = flags.keep
    return out


# ============================================================ the whole analysis

def km_allowed(ctx) -> bool:
    """Whether the study's reveal policy releases Kaplan–Meier curves to the analyst."""
    return ctx.policy.allows("logrank.km", ANALYST)


def run(ctx, cohort, options: LogrankOptions) -> dict:
    """The log-rank test (and Kaplan–Meier curves) on the pooled cohort.

    Outputs go to the analyst under ``logrank.test`` (keys n, observed,
    expected, chisq_mantissa, chisq_exponent, groups_with_variance,
    clamped_pivots) and, when options.km, ``logrank.km`` (keys at_risk,
    events, survival, se, undefined, kept).  Returns the public facts every
    node knows (labels, grid, formats)."""
    if options.km and not km_allowed(ctx):
        raise PolicyError("the study's reveal policy does not release Kaplan–Meier curves: add "
                          "\"logrank.km\" = [\"analyst\"] to its [policy] table (or run without --km)")
    tables = survival_tables(ctx, cohort, options)
    G = len(tables.groups)
    fmt = Formats.for_cohort(tables.bound_bits, G)
    with ctx.phase("survival-sums"):
        flags = None
        if options.km:
            flags = km_flags(ctx, tables.km_at_risk, tables.km_events, int(options.km_min_at_risk),
                             tables.bound_bits)
        stage = survival_sums(ctx, tables, fmt, flags)
    with ctx.phase("logrank-test"):
        stat = logrank_statistic(ctx, stage, fmt)
        n_group = _sa(ctx, tables.km_at_risk.share[:, 0])
        for key, x in (("n", n_group), ("observed", stage.observed), ("expected", stage.expected),
                       ("chisq_mantissa", stat.mantissa), ("chisq_exponent", stat.exponent),
                       ("groups_with_variance", stat.groups_with_variance),
                       ("clamped_pivots", stat.clamped)):
            output(ctx, x, "logrank.test", key=key)
    if options.km:
        with ctx.phase("kaplan-meier"):
            curves = kaplan_meier(ctx, tables, stage, flags)
            for key, x in curves.items():
                output(ctx, x, "logrank.km", key=key)
    times = tables.times
    return {"groups": [str(g) for g in tables.groups], "strata": [str(s) for s in tables.strata],
            "stratified": bool(options.stratified), "time_start": float(times[0]),
            "time_step": float(times[1] - times[0]) if len(times) > 1 else 0.0, "n_times": int(len(times)),
            "km": bool(options.km), "km_min_at_risk": int(options.km_min_at_risk),
            "cohort_bound_bits": tables.bound_bits}
