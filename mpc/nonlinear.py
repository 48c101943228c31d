"""Non-linear functions accurate over the whole fixed-point range.

reciprocal, divide, sqrt, inv_sqrt, log, exp and sigmoid, each batched over
whole arrays.  The approximations never see a wide range: a secure
normalisation (mpc.compare.leading_one) brings |x| to a mantissa m in [0.5, 1]
with an exact power-of-two scale, and exp splits its argument exactly into an
integer and a fractional part with the bit machinery.  So each function needs
only one fixed polynomial on [-1, 1]:

    reciprocal  1/m            degree 12 in s = 4m - 3   error 4.5e-10
    inv_sqrt    1/sqrt(m)      degree 12 in s = 4m - 3   error 5.7e-11
    sqrt        sqrt(m)        degree 12 in s = 4m - 3   error 1.6e-12
    log         ln(m)          degree 12 in s = 4m - 3   error 2.4e-11
    exp         2^t, t ~ [0,1] degree 6 in s = 2t - 1    error 2.8e-9 (relative 2.0e-9)

(Chebyshev interpolants converted to monomials in s; the coefficients are
literals so that every party encodes bit-identical constants; the test suite
re-derives them with numpy and checks these bounds.)  Polynomials run at
F = 40 fractional bits (``_internal_frac``) with probabilistic truncation, so
their rounding adds about 2^-37; outputs are rounded once more to params.f
bits.  Guarantees below are for the default format (k = 56, f = 28,
sigma = 40; ulp = 2^-28 ~ 3.7e-9) and inputs at frac f; "4 ulp" means
4 2^-f absolute.

Round counts are for k = 56.  The normalisation costs 17 rounds (14 to find
the leading one, 2 rounds of products for the scale and the mantissa, 1 to
round the mantissa to F bits); a degree-12 polynomial costs 8 (3 levels of
powers, one product with the upper half, each followed by a truncation) when
every product opens its operands.  With the core's masked truncation outputs
(mpc.truncate: a truncated value comes out masked, so products of truncated
values open nothing) some of those product rounds vanish; the per-function
counts below give both, as "now (at most)".

Division by zero and out-of-domain inputs have defined results, documented
per function; intermediate values stay bounded for every input, so nothing
ever exceeds a truncation's masking bound (which would leak).

    function        domain (k=56, f=28)        outside it            rounds   accuracy
    reciprocal(x)   |x| > 2^-27                x = 0 -> 0            24 (27)  2^-27 rel + 1 ulp
    divide(a, b)    |a/b| < 2^27               b = 0 -> 0, saturates 27 (30)  2^-26 rel + 1 ulp
    sqrt(x)         x >= 0                     x < 0 -> 0            24 (27)  2^-26 rel + 1 ulp
    inv_sqrt(x)     x > 0                      x <= 0 -> 0           24 (27)  2^-26 rel + 1 ulp
    log(x)          x > 0                      x <= 0 -> -f ln 2     22 (25)  2^-30 abs + 1 ulp
    exp(x)          x < 18.71                  saturates; 0 below   17 (17)  2^-27 rel + 1 ulp
    sigmoid(x)      all x                      -                     22 (27)  2 ulp abs
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mpc import beaver, field
from mpc.compare import (Circuit, DecomposeCircuit, LessThanCircuit, Level, bits_to_field, check_thresholds,
                         decompose_plan, gate_counts, leading_one, leading_one_planes, lt_plan, open_masked,
                         request_and_gates, request_dabits, run_circuits, table_planes, threshold_ints,
                         xor_public)
from mpc.shared import SharedArray
from mpc.triples import n_words
from mpc.truncate import max_bits as _max_trunc_bits, plan_rescale, rescale_many

# ------------------------------------------------------------ polynomial coefficients
# Degree 12 on s in [-1, 1] (m = (s + 3) / 4 in [0.5, 1]); max error in comments.
_RECIPROCAL = (  # 4 / (s + 3) = 1/m, error 4.47e-10
    1.3333333333333341, -0.4444444405741458, 0.14814814685798333, -0.049382823987692406,
    0.01646094133009086, -0.005486113496422614, 0.0018287044949399423, -0.0006125405545752588,
    0.00020418019247618745, -6.310608138595703e-05, 2.1035353664459454e-05, -1.097497084780156e-05,
    3.6583258666625477e-06)
_INV_SQRT = (  # 2 / sqrt(s + 3) = 1/sqrt(m), error 5.74e-11
    1.1547005383792524, -0.1924500892237344, 0.048112522269460105, -0.01336460368393529,
    0.0038980098360457604, -0.0011692896781591872, 0.00035728112140951085, -0.00011097525728848861,
    3.4683321415366774e-05, -1.0271911991668874e-05, 3.249604198914269e-06, -1.5513879859612333e-06,
    4.966407682883875e-07)
_SQRT = (  # sqrt(s + 3) / 2 = sqrt(m), error 1.59e-12
    0.8660254037844392, 0.14433756728294952, -0.012028130603834909, 0.002004688838172779,
    -0.0004176435439871789, 9.74469302960001e-05, -2.436157832213937e-05, 6.391477761472233e-06,
    -1.7313235673609609e-06, 4.6249567596408e-07, -1.307745821676222e-07, 5.238064793457266e-08,
    -1.536650630623176e-08)
_LOG = (  # ln((s + 3) / 4) = ln(m), error 2.37e-11
    -0.2876820724517812, 0.3333333331211511, -0.05555555548966016, 0.01234568493289118,
    -0.0030864215914896114, 0.0008229983121944319, -0.00022860910700696802, 6.547946124929669e-05,
    -1.910114713359614e-05, 5.388773375972711e-06, -1.6139839953171787e-06, 7.05661034482349e-07,
    -2.165032879224542e-07)
# Degree 6 on s in [-1 - 2^-9, 1 + 2^-9]: 2^((s + 1) / 2) = 2^t, error 2.80e-9.
_EXP2 = (1.4142135623730947, 0.49012909043799147, 0.0849328968555752, 0.009811683889363817,
         0.0008501240871740685, 5.922324317029607e-05, 3.4165790040852595e-06)

POLYNOMIALS = {"reciprocal": (_RECIPROCAL, (-1.0, 1.0), lambda s: 4.0 / (s + 3.0)),
               "inv_sqrt": (_INV_SQRT, (-1.0, 1.0), lambda s: 2.0 / np.sqrt(s + 3.0)),
               "sqrt": (_SQRT, (-1.0, 1.0), lambda s: np.sqrt(s + 3.0) / 2.0),
               "log": (_LOG, (-1.0, 1.0), lambda s: np.log((s + 3.0) / 4.0)),
               "exp2": (_EXP2, (-1 - 2.0 ** -9, 1 + 2.0 ** -9), lambda s: 2.0 ** ((s + 1.0) / 2.0))}
"""name -> (coefficients, interval of s, the function approximated) — for tests."""

_TRUNC_BITS_MAX = 85  # bits + sigma + 1 <= 126 with sigma = 40 (recomputed below for other sigma)


# ------------------------------------------------------------ small helpers

def _internal_frac(params) -> int:
    """F: fractional bits of the polynomial stage (40 with sigma = 40)."""
    return min(40, (126 - params.sigma - 1 - 4) // 2)


def _max_bits(params) -> int:
    """Largest `bits` a truncation accepts: bits + sigma + 1 <= 126."""
    return _max_trunc_bits(params)


def _sa(ctx, share, frac=0) -> SharedArray:
    return SharedArray(ctx, share, frac)


def _enc(value: float, frac: int) -> int:
    return int(round(value * 2.0 ** frac))


def _lin(ctx, terms, const: int = 0, n: int | None = None) -> np.ndarray:
    """sum_i c_i x_i + const (leading node) for field shares x_i and integers c_i."""
    total = None
    for coeff, x in terms:
        if coeff == 0:
            continue
        term = x if coeff == 1 else field.mul_scalar(x, int(coeff))
        total = term.copy() if total is None else field.add(total, term)
    if total is None:
        total = field.zeros((n,))
    if const and ctx.leads:
        total = field.add_scalar(total, int(const))
    return total


def _trunc(ctx, items, plans=None) -> list:
    """truncate_many over (SharedArray, shift, bits) with shift <= 0 meaning an exact
    scale up by 2^-shift (so the caller's formulas hold for any format); `plans`
    from _plans, requested before the products that make the inputs."""
    return rescale_many(ctx, items, plans)


def _plans(ctx, specs) -> list:
    """Truncation pairs for later _trunc items, specs (shape, shift, bits): asked
    for with the next product round's requests, so that the truncation after
    it does not wait a round trip for the dealer."""
    return [plan_rescale(ctx, tuple(shape), shift, bits) for shape, shift, bits in specs]


def _mul_trunc(ctx, items, truncs, sides=()) -> list:
    """One product round for `items`, each result then rescaled by
    its (shift, bits) in `truncs` (one round), the pairs requested first."""
    plans = _plans(ctx, [(beaver.product_shape(op, x, y)[0], shift, bits)
                         for (op, x, y), (shift, bits) in zip(items, truncs)])
    raw = _products(ctx, items, sides)
    return _trunc(ctx, [(r, shift, bits) for r, (shift, bits) in zip(raw, truncs)], plans)


def _unit_bits(params) -> int:
    """Bits bounding (1/m at f bits) times 2^(K-L): |R S| <= (2^(f+1) + 1) 2^(K-1).

    fo + K + 2 where the masking budget allows it (always with sigma = 40 and
    k + f <= 84); when k + f + sigma + 2 = 127 exactly, fo + K + 1, which
    |x| = 2^-fx alone (m = 0.5, R rounded up) may exceed by 2^(K-1): the
    truncation mask then hides the value with distance 2^-(f+sigma+1)
    instead of 2^-sigma."""
    return min(_max_bits(params), params.f + params.k + 1)


def _bits_for(max_abs: float, frac: int) -> int:
    """bits with |v 2^frac| < 2^(bits-1) for |v| <= max_abs."""
    return max(1, math.ceil(math.log2(max_abs))) + frac + 1 if max_abs > 0 else frac + 1


class _Side:
    """Products that ride along in another computation's product rounds.

    Wraps a generator that yields lists of product items and receives their
    results (see _product_tree); ``value`` is what it returns at the end."""

    def __init__(self, gen):
        self.gen = gen
        self.done = False
        self.value = None
        self.items = []
        self._advance(None)

    def _advance(self, results):
        try:
            self.items = self.gen.send(results) if results is not None else next(self.gen)
        except StopIteration as stop:
            self.done, self.value, self.items = True, stop.value, []

    def feed(self, results):
        if not self.done:
            self._advance(results)

    def finish(self, ctx):
        """Run the remaining levels on their own rounds."""
        while not self.done:
            self.feed(beaver.products(ctx, self.items))
        return self.value


def _products(ctx, items, sides=()) -> list:
    """One product round for `items` plus whatever the side computations need now."""
    extra = [(side, len(side.items)) for side in sides if not side.done]
    all_items = list(items) + [it for side, _ in extra for it in side.items]
    if not all_items:
        return []
    res = beaver.products(ctx, all_items)
    pos = len(items)
    for side, k in extra:
        side.feed(res[pos:pos + k])
        pos += k
    return res[:len(items)]


def _product_tree(factors):
    """Generator for the product of integer SharedArrays, ceil(log2 len) levels."""
    level = list(factors)
    while len(level) > 1:
        pairs = [(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        res = yield [("mul", a, b) for a, b in pairs]
        level = list(res) + ([level[-1]] if len(level) % 2 else [])
    return level[0]


# ------------------------------------------------------------ polynomial evaluation

class _PolyPlan:
    """The dealer requests of one _poly evaluation, made before s exists.

    Every truncation pair, and — when s's mask spec is known — every product
    (their operands' masks are s's and the truncations' outputs'), so that no
    round of the polynomial waits a round trip for the dealer.  Made by
    _normalise, with the truncation that makes s, or by _poly itself."""

    def __init__(self, ctx, spec_s, n, F: int, coeff_sets, out_frac: int, max_abs: float):
        self.n, self.F, self.d = tuple(n), int(F), len(coeff_sets[0]) - 1
        self.G = min(2 * F, _max_bits(ctx.params) - 1 - max(0, math.ceil(math.log2(max_abs))))
        self.out_items = (self.G - out_frac, _bits_for(max_abs, self.G))
        if self.d <= 1:
            return
        n, d, G = self.n, self.d, self.G
        self.D = D = math.ceil(math.log2(d + 1))
        self.h = h = 1 << (D - 1)
        self.merged = d - h <= h // 2
        self.power_bits = 2 * F + 2          # |s^a s^b| < 2 at 2F fractional bits
        self.q1_bits = [_bits_for(sum(abs(c) for c in cs[h:]) * 1.1, 2 * F) for cs in coeff_sets]
        self.levels = {level: self._level_items(level) for level in range(1, D)}
        self.plans = {level: _plans(ctx, [(n, F, self.power_bits)] * len(items))
                      for level, items in self.levels.items()}
        self.q1_plans = _plans(ctx, [(n, 3 * F - G, b) for b in self.q1_bits])
        self.out_plans = _plans(ctx, [(n,) + self.out_items] * len(coeff_sets))
        self.ahead = {}
        if spec_s is None:
            return
        spec = {1: spec_s}
        for level, items in self.levels.items():
            spec.update((p, plan.spec) for (p, *_), plan in zip(items, self.plans[level]))
        for level in range(1, D):
            self.ahead[level] = [beaver.request_product(ctx, op, spec[a], None if b is None else spec[b], n)
                                 for _, op, a, b in self.levels[level]]
        self.ahead[D] = [beaver.request_product(ctx, "mul", spec[h], plan.spec, n) for plan in self.q1_plans]

    def _level_items(self, level):
        """(power, op, a, b): the products of a level, as exponents of their operands."""
        half = 1 << (level - 1)
        return [(p, "square", half, None) if p == 2 * half else (p, "mul", half, p - half)
                for p in range(half + 1, 2 * half + 1) if p <= self.h]


def _poly(ctx, s: SharedArray, coeff_sets, out_frac: int, max_abs: float, extra=None, sides=(), plan=None):
    """p_k(s) = sum_i c_ki s^i for |s| <= 1 + 2^-9, sharing the powers of s.

    s has frac F (_internal_frac).  With d the degree, D = ceil(log2(d + 1))
    and h = 2^(D-1):

    1. levels 1 .. D-1: powers s^(2^(l-1)+1) .. s^(2^l) as products of a
       lower power with s^(2^(l-1)); one product round and one truncation
       round per level;
    2. q1_k = sum_j c_k,h+j s^j, truncated with the last level when it only
       needs powers up to h/2 (d <= 3h/2: degree 6 and 12), else in a round
       of its own;
    3. one product round: s^h q1_k; the sum with q0_k = sum_{i<h} c_ki s^i
       (plus `extra(G)`, shares at the common frac G) is truncated to
       `out_frac` (one round).

    Rounds: 2D (6 for degree 6, 8 for degree 12).  `max_abs` bounds every
    |p_k(s)| (+ extra), which sets G so the last truncation fits the mask budget.
    `sides` ride along in the product rounds.  `plan` (a _PolyPlan for the
    same arguments, made a round before s exists) holds every dealer
    request; without one they are made here (the products too when s is
    masked), and the first level's wait a round trip."""
    if plan is None:
        plan = _PolyPlan(ctx, None if s.mask is None else s.mask.spec, s.shape, s.frac, coeff_sets,
                         out_frac, max_abs)
    F, G, d, n = s.frac, plan.G, plan.d, s.shape
    if d <= 1:
        out = []
        for cs in coeff_sets:
            v = _lin(ctx, [(_enc(cs[1], G - F), s.share)] if d == 1 else [], _enc(cs[0], G), n[0])
            out.append(_sa(ctx, v, G))
        if extra is not None:
            out = [_sa(ctx, field.add(v.share, extra(G)), G) for v in out]
        return _trunc(ctx, [(v, G - out_frac, _bits_for(max_abs, G)) for v in out])
    D, h = plan.D, plan.h
    powers = {1: s}

    def q1_raw(cs):
        terms = [(_enc(cs[h + j], F), powers[j].share) for j in range(1, d - h + 1)]
        return _sa(ctx, _lin(ctx, terms, _enc(cs[h], 2 * F), n[0]), 2 * F)

    def products(level, items):
        """A level's products (level D: step 3's), with the side computations' round."""
        if level in plan.ahead:
            _products(ctx, [], sides)
            return [beaver.combine(ctx, op, x, y, c) for (op, x, y), c in zip(items, plan.ahead[level])]
        return _products(ctx, items, sides)

    q1 = None
    q1_items = [(3 * F - G, b) for b in plan.q1_bits]
    for level in range(1, D):                                            # step 1
        raw = products(level, [(op, powers[a], None if b is None else powers[b])
                               for _, op, a, b in plan.levels[level]])
        todo, todo_plans = [(r, F, plan.power_bits) for r in raw], list(plan.plans[level])
        if plan.merged and level == D - 1:                               # step 2 (merged)
            todo += [(q1_raw(cs), m, b) for cs, (m, b) in zip(coeff_sets, q1_items)]
            todo_plans += plan.q1_plans
        done = _trunc(ctx, todo, todo_plans)
        for (p, *_), r in zip(plan.levels[level], done):
            powers[p] = r
        if plan.merged and level == D - 1:
            q1 = done[len(plan.levels[level]):]
    if q1 is None:                                                       # step 2 (own round)
        q1 = _trunc(ctx, [(q1_raw(cs), m, b) for cs, (m, b) in zip(coeff_sets, q1_items)], plan.q1_plans)
    top = products(D, [("mul", powers[h], q) for q in q1])               # step 3
    out = []
    for cs, t in zip(coeff_sets, top):
        q0 = _lin(ctx, [(_enc(cs[i], G - F), powers[i].share) for i in range(1, h)], _enc(cs[0], G), n[0])
        v = field.add(t.share, q0)
        if extra is not None:
            v = field.add(v, extra(G))
        out.append((_sa(ctx, v, G),) + plan.out_items)
    return _trunc(ctx, out, plan.out_plans)


# ------------------------------------------------------------ normalisation stage

def _flat(x: SharedArray) -> np.ndarray:
    return np.ascontiguousarray(x.share).reshape(-1, field.LIMBS)


def _check_input(x: SharedArray, name: str) -> bool:
    """Validate the input's frac; True when it is empty (nothing to compute)."""
    k = x.ctx.params.k
    if not 0 <= x.frac <= k - 1:
        raise ValueError(f"{name}: input frac must be in [0, {k - 1}], got {x.frac}")
    return x.size == 0


def _empty(x: SharedArray) -> SharedArray:
    return SharedArray(x.ctx, field.zeros(x.shape), x.ctx.params.f)


def _pow2_halves(lead, table: int):
    """Shares of 2^(T mod 8) and 2^(8 (T div 8)) (zeros where the table has no entry)."""
    return lead.combine(table, [1 << a for a in range(8)], [1 << (8 * b) for b in range(8)])


def _normalise(ctx, X: np.ndarray, tables, mode: str, out_products=(), polys=()):
    """Shared first stage: the mantissa s = 4m - 3 at F bits, and scales.

    mode "abs": m from |x| (x < 0 allowed); mode "pos": m from max(x, 0).
    `tables` after the first (the normalisation table T[j] = K - 1 - j) are
    output tables whose scales the caller forms; `out_products(lead, sign)`
    returns round-B product items (multiplied with `sign` = 1 - 2 neg for
    "abs", 1 - neg for "pos").

    1. leading one of |x| - [x<0] and the tables (14 rounds);
    2. round A: S = 2^(K-L) from its halves, and |x| (or max(x, 0));
    3. round B: m 2^K = |x| S, plus the caller's products;
    4. m rounded to F bits (one round).  Where x = 0 (or x < 0 in "pos"
       mode) m is set to 0.5 so that s stays in [-1, 1].

    `polys` lists the caller's polynomials of s, (coeff_sets, out_frac,
    max_abs) each: their dealer requests go with m's truncation pair.

    Returns (s, lead, round-B results, S, sign, a _PolyPlan per entry of polys)."""
    params = ctx.params
    k = params.k
    K = k - 1
    F = _internal_frac(params)
    n = X.shape[0]
    lead = leading_one(ctx, X, [[K - 1 - j for j in range(K)]] + list(tables), k)          # step 1
    lo, hi = _pow2_halves(lead, 0)
    neg = _sa(ctx, lead.negative)
    sign = (1 - 2 * neg) if mode == "abs" else (1 - neg)
    S, xs = _products(ctx, [("mul", _sa(ctx, lo), _sa(ctx, hi)), ("mul", _sa(ctx, X), sign)])  # step 2
    nz = _sa(ctx, lead.nonzero())
    items = [("mul", xs, S)]
    if mode == "pos":
        items.append(("mul", nz, sign))
    items += list(out_products(lead, sign, S))
    m_plan = _plans(ctx, [((n,), K - F, K + 2)])
    # s = 4m - 3 will carry the mask of m's truncation, scaled by 4
    poly_plans = [_PolyPlan(ctx, m_plan[0].spec.scaled(4), (n,), F, *poly) for poly in polys]
    res = _products(ctx, items)                                                                # step 3
    m_int = res[0]
    if mode == "pos":
        nz, rest = res[1], res[2:]
    else:
        rest = res[1:]
    # zero (or excluded) inputs: m = 0.5
    m_int = field.add(m_int.share, field.mul_pow2(_lin(ctx, [(-1, nz.share)], 1, n), K - 1))
    m = _trunc(ctx, [(_sa(ctx, m_int, K), K - F, K + 2)], m_plan)[0]                           # step 4
    # s = 4m - 3 keeps m's mask (a truncation's output): the polynomial's products of
    # s open nothing, and their corrections were asked for with m's truncation pair.
    return m * 4 - 3.0, lead, rest, S, nz, poly_plans


# ------------------------------------------------------------ reciprocal and divide

def reciprocal(x: SharedArray) -> SharedArray:
    """1/x elementwise, at params.f fractional bits.

    Domain: |1/x| representable, i.e. |x| > 2^-(k-1-f) (|x| >= 2^(1-f) always
    works).  x = 0 gives exactly 0 (documented division by zero); for
    0 < |x| <= 2^(1-f) the true result exceeds the format and the result is
    undefined (bounded, never a leak).  Inputs of any frac fx <= k - 1 are
    accepted (e.g. integer counts); the output has frac params.f.

    Accuracy: relative error <= 2^-27 plus one unit in the last place, for
    every input in the domain.

    Protocol (24 rounds; at most 27): normalisation |x| = m 2^(L - fx), m in
    [0.5, 1] (17 rounds, _normalise); 1/m by the degree-12 polynomial in s = 4m - 3
    rounded to f bits (at most 8 rounds); y = (1/m) 2^(K-L) (1 - 2 [x<0]) shifted by
    K - fx (one product round, one truncation).

    Tuples per element: 399 AND gates, 17 daBits, 1 rbits, 13 Beaver
    products, 11 truncation pairs."""
    if _check_input(x, "reciprocal"):
        return _empty(x)
    ctx = x.ctx
    params = ctx.params
    K = params.k - 1
    fo = params.f
    X = _flat(x)
    poly = ([_RECIPROCAL], fo, 2.0 + 2.0 ** -20)
    s, lead, (S_sgn,), S, nz, (plan,) = _normalise(ctx, X, [], "abs", lambda lead, sign, S: [("mul", S, sign)],
                                                   [poly])
    R = _poly(ctx, s, *poly, plan=plan)[0]
    Y = _mul_trunc(ctx, [("mul", R, S_sgn)], [(K - x.frac, _unit_bits(params))])[0]
    return _sa(ctx, Y.share.reshape(x.shape + (field.LIMBS,)), fo)


def divide(a: SharedArray, b: SharedArray) -> SharedArray:
    """a / b elementwise, at params.f fractional bits (a, b of any fracs <= k - 1).

    Domain: every pair.  b = 0 gives exactly 0; a quotient below half a unit
    gives 0; |a/b| above the format saturates at +-(2^(k-1-f) - 2^-f) (up to
    a factor 2 beyond the largest value it may instead come out unsaturated,
    below 2^(k-f)).

    Accuracy: relative error <= 2^-26 plus one unit in the last place, for
    every pair (both operands are normalised, so small numerators over small
    denominators keep their precision).

    Protocol (27 rounds; at most 30):

    1. leading ones of 2|a| - [a<0] and 2|b| - [b<0] (so that -2^-f keeps
       one), in the same rounds (13);
    2. one AND level: with j_a, j_b the leading positions (|x| = m 2^(j - fx),
       m in [0.5, 1]) and v = j_a - j_b + fb - fa + f + 1 the output exponent,
       [v >= 0] and [v > k] are inner products of a's one-hot with shifted
       prefixes [j_b <= i] of b's (local shifts, 2k ANDs per element);
    3. signs, range flags and the one-hot halves of three tables to field
       elements (1 round);
    4. round A: S_a = 2^(k-1-j_a), S_b = 2^(k-1-j_b), 2^(j_a), |2b|; round B:
       m_a = 2a S_a (signed), m_b = 2|b| S_b, 2^(j_a) S_b; mantissas rounded
       to F bits (1 round) — 3 rounds;
    5. 1/m_b by the degree-12 polynomial (8 rounds); meanwhile T = 2^v (zero
       outside [0, k], signed by b) and the saturation sign, as product trees
       riding along;
    6. q = m_a / m_b rounded to 27 bits (2 rounds), y = q T shifted (2 rounds),
       plus the saturation value.

    Tuples per element: 938 AND gates, 52 daBits, 2 rbits, 21 Beaver
    products, 13 truncation pairs."""
    empty = _check_input(a, "divide") | _check_input(b, "divide")
    if a.shape != b.shape:
        raise ValueError(f"divide: shapes {a.shape} and {b.shape} differ")
    if empty:
        return _empty(a)
    ctx = a.ctx
    params = ctx.params
    k, fo = params.k, params.f
    F = _internal_frac(params)
    A2 = field.add(_flat(a), _flat(a))                     # 2a, 2b: |2x| < 2^k, and x = -2^-fx
    B2 = field.add(_flat(b), _flat(b))                     # keeps a leading one in 2|x| - [x<0]
    n = B2.shape[0]
    pre = {}

    def prefetch():  # the AND level of step 2 and the daBits of step 3, before the first opening
        pre["and"] = request_and_gates(ctx, [[2 * k]], [n_words(n)])
        pre["dabits"] = request_dabits(ctx, 4 + 3 * 16, n)

    la, lb = leading_one_planes(ctx, [A2, B2], k + 1, prefetch)                        # step 1
    # |x| = m 2^(j - fx) with j the leading position of 2|X| - [x<0] (k positions each), so
    # a / b 2^f = (m_a / m_b) 2^(v - 1), v = j_a - j_b + d0 + 1, d0 = fb - fa + f
    d0 = b.frac - a.frac + fo
    V = k
    in_lo, over = _exponent_flags(ctx, la, lb, [d0 + 1, d0 - V], pre["and"])         # step 2
    t_norm = [k - 1 - j for j in range(k)]                   # 2^(k - L) with L = j + 1
    t_pow = [j for j in range(k)]                            # 2^j
    planes = np.concatenate([la.negative[None], lb.negative[None], in_lo[None], over[None],
                             table_planes(la, t_norm), table_planes(la, t_pow), table_planes(lb, t_norm)])
    arith = bits_to_field(ctx, planes, n, pre["dabits"])                              # step 3
    neg_a, neg_b, f_lo, f_over = (_sa(ctx, arith[i]) for i in range(4))
    halves = [(arith[4 + 16 * i:12 + 16 * i], arith[12 + 16 * i:20 + 16 * i]) for i in range(3)]
    pw = [1 << a_ for a_ in range(8)], [1 << (8 * b_) for b_ in range(8)]
    S = []
    for lo, hi in halves:
        lo_v = _lin(ctx, [(c, lo[i]) for i, c in enumerate(pw[0])], 0, n)
        hi_v = _lin(ctx, [(c, hi[i]) for i, c in enumerate(pw[1])], 0, n)
        S.append((_sa(ctx, lo_v), _sa(ctx, hi_v)))
    sgn_b = 1 - 2 * neg_b
    S_a, P_a, S_b, abs_b = _products(ctx, [("mul", *S[0]), ("mul", *S[1]), ("mul", *S[2]),
                                          ("mul", _sa(ctx, B2), sgn_b)])                # step 4
    m_plans = _plans(ctx, [((n,), k - F, k + 2)] * 2)
    m_a, m_b, SAB = _products(ctx, [("mul", _sa(ctx, A2), S_a), ("mul", abs_b, S_b), ("mul", P_a, S_b)])
    nz_b = field.sum(halves[2][0], axis=0)
    m_b = field.add(m_b.share, field.mul_pow2(_lin(ctx, [(-1, nz_b)], 1, n), k - 1))  # b = 0: m_b = 0.5
    m_a, m_b = _trunc(ctx, [(_sa(ctx, m_a.share, k), k - F, k + 2), (_sa(ctx, m_b, k), k - F, k + 2)], m_plans)
    # 2^v = 2^(j_a) 2^(k - 1 - j_b) 2^(d0 + 2 - k), exact where v >= 0
    Tv = _sa(ctx, field.mul_pow2(SAB.share, d0 + 2 - k))
    in_range = f_lo - f_over
    t_tree = _Side(_product_tree([Tv, in_range, sgn_b]))
    sat_tree = _Side(_product_tree([f_over, 1 - 2 * neg_a, sgn_b]))
    s = _sa(ctx, _lin(ctx, [(4, m_b.share)], -3 << F, n), F)
    R = _poly(ctx, s, [_RECIPROCAL], F, 2.0 + 2.0 ** -20, sides=[t_tree, sat_tree])[0]  # step 5
    T, sat = t_tree.finish(ctx), sat_tree.finish(ctx)
    FQ = min(F, _max_bits(params) - k - 2)
    Q = _mul_trunc(ctx, [("mul", m_a, R)], [(2 * F - FQ, 2 * F + 3)])[0]              # step 6
    Y = _mul_trunc(ctx, [("mul", Q, T)], [(FQ + 1, k + FQ + 2)])[0]
    Y = field.add(Y.share, field.mul_scalar(sat.share, (1 << (k - 1)) - 1))
    return _sa(ctx, Y.reshape(a.shape + (field.LIMBS,)), fo)


def _exponent_flags(ctx, la, lb, shifts, batches=None):
    """XOR shares of [j_b <= j_a + d] for each d: inner products of a's one-hot
    with b's prefix flags pre_b[i] = [j_b <= i] (0 for i < 0, [b != 0] past
    the top), one AND level for all."""
    wa, wb = la.onehot.shape[0], lb.onehot.shape[0]
    W = la.onehot.shape[1]
    zero = np.zeros(W, dtype=np.uint64)
    nonzero_b = lb.none_from[wb] ^ lb.none_from[0]               # N_w = 1, N_0 = [b = 0]

    def pre_b(i):
        if i < 0:
            return zero
        if i >= wb - 1:
            return nonzero_b
        return lb.none_from[i + 1] ^ lb.none_from[0]

    rows = [la.onehot]
    for d in shifts:
        rows.append(np.stack([pre_b(j + d) for j in range(wa)]))
    regs = np.concatenate(rows + [np.zeros((wa * len(shifts), W), dtype=np.uint64)])
    base = wa * (1 + len(shifts))
    ops = [(j, wa * (1 + t) + j, base + wa * t + j) for t in range(len(shifts)) for j in range(wa)]
    arr = np.array(ops, dtype=np.int64)
    circuit = Circuit(regs, [Level(arr[:, 0], arr[:, 1], arr[:, 2], np.zeros(len(ops), dtype=bool))])
    run_circuits(ctx, [circuit], batches)
    return [np.bitwise_xor.reduce(circuit.registers[base + wa * t:base + wa * (t + 1)], axis=0)
            for t in range(len(shifts))]


# ------------------------------------------------------------ sqrt and inverse sqrt

def _sqrt_tables(params, fx: int):
    """Per output: the table u(j) = e - e0 of the leading-one position j, e0 / 2,
    and log2 of the largest output encoding (see sqrt_inv_sqrt)."""
    k, fo = params.k, params.f
    K = k - 1
    out = {}
    # sqrt: y 2^fo = sqrt(m) 2^(e/2), e = L - fx + 2 fo
    e_min = 1 - fx + 2 * fo
    e0 = e_min - (e_min % 2)
    out["sqrt"] = ([j + 1 - fx + 2 * fo - e0 for j in range(K)], e0 // 2, (k - 1 - fx) / 2 + fo)
    # 1/sqrt: y 2^fo = m^-1/2 2^(e/2), e = fx - L + 2 fo
    e_min = fx - K + 2 * fo
    e0 = e_min - (e_min % 2)
    out["inv_sqrt"] = ([fx - (j + 1) + 2 * fo - e0 for j in range(K)], e0 // 2, fx / 2 + fo)
    return out


@dataclass(frozen=True)
class SqrtPair:
    """sqrt(x) and 1/sqrt(x) (None where not asked for)."""

    sqrt: SharedArray | None
    inv_sqrt: SharedArray | None


def sqrt_inv_sqrt(x: SharedArray, want_sqrt: bool = True, want_inv: bool = True) -> SqrtPair:
    """sqrt(x) and/or 1/sqrt(x) from one normalisation and one set of powers
    (see sqrt, inv_sqrt): 24 rounds (at most 27) for both; tuples as for one plus 16
    daBits and 2 products per element for the second output table."""
    if _check_input(x, "sqrt"):
        return SqrtPair(_empty(x) if want_sqrt else None, _empty(x) if want_inv else None)
    ctx = x.ctx
    params = ctx.params
    fo = params.f
    F = _internal_frac(params)
    tabs = _sqrt_tables(params, x.frac)
    names = [nm for nm, want in (("sqrt", want_sqrt), ("inv_sqrt", want_inv)) if want]
    plans = []
    for nm in names:
        table, half_e0, log_ymax = tabs[nm]
        # y = R S_out 2^(half_e0 - 2 F2): R at F2 bits, S_out = 2^(u/2) at F2 bits; the
        # product y 2^shift must stay below 2^(bits - 1) with bits <= the masking budget
        F2 = min(F, (_max_bits(params) - math.floor(log_ymax) - 2 + half_e0) // 2)
        shift = 2 * F2 - half_e0
        plans.append((nm, table, F2, shift, math.floor(log_ymax) + 2 + shift))

    def out_products(lead, sign, S):
        items = []
        for i, (nm, table, F2, _, _) in enumerate(plans):
            lo, hi = lead.combine(1 + i, [_enc(2.0 ** (a / 2), F2) for a in range(8)],
                                  [1 << (4 * b) for b in range(8)])
            items.append(("mul", _sa(ctx, lo), _sa(ctx, hi)))
        return items

    X = _flat(x)
    polys = {"sqrt": _SQRT, "inv_sqrt": _INV_SQRT}
    together = len({p[2] for p in plans}) == 1
    poly_args = ([([polys[p[0]] for p in plans], plans[0][2], 1.5)] if together else
                 [([polys[nm]], F2, 1.5) for nm, _, F2, _, _ in plans])
    s, lead, outs, S, nz, poly_plans = _normalise(ctx, X, [p[1] for p in plans], "pos", out_products, poly_args)
    # zero the output scales for x < 0: rides along in the polynomial's first product round
    keep = 1 - _sa(ctx, lead.negative)
    zeroed = _Side((lambda: (yield [("mul", so, keep) for so in outs]))())
    if together:
        vals = _poly(ctx, s, *poly_args[0], sides=[zeroed], plan=poly_plans[0])
    else:
        vals = [_poly(ctx, s, *args, sides=[zeroed], plan=pp)[0] for args, pp in zip(poly_args, poly_plans)]
    scales = zeroed.value if zeroed.done else zeroed.finish(ctx)
    done = _mul_trunc(ctx, [("mul", v, so) for v, so in zip(vals, scales)],
                      [(shift, bits) for (_, _, _, shift, bits) in plans])
    results = {nm: _sa(ctx, y.share.reshape(x.shape + (field.LIMBS,)), fo)
               for (nm, *_), y in zip(plans, done)}
    return SqrtPair(results.get("sqrt"), results.get("inv_sqrt"))


def sqrt(x: SharedArray) -> SharedArray:
    """sqrt(x) elementwise, at params.f fractional bits.

    Domain: x >= 0, the whole format.  x < 0 gives exactly 0 (documented:
    negative inputs are treated as 0, never garbage).

    Accuracy: relative error <= 2^-26 plus one unit in the last place.

    Protocol (24 rounds; at most 27): normalisation |x| = m 2^(L - fx) (17; its
    round B also forms the output scale 2^(e/2), e = L - fx + 2f, from a
    second table's one-hot halves, odd exponents through the constant
    2^(1/2)); sqrt(m) by the degree-12 polynomial (8; zeroing the scale for
    x < 0 rides along); y = sqrt(m) 2^(e/2), one product and one shift (2).

    Tuples per element: 399 AND gates, 33 daBits, 1 rbits, 15 Beaver
    products, 11 truncation pairs."""
    return sqrt_inv_sqrt(x, True, False).sqrt


def inv_sqrt(x: SharedArray) -> SharedArray:
    """1/sqrt(x) elementwise, at params.f fractional bits.

    Domain: x > 0, the whole format (1/sqrt(2^-f) = 2^(f/2) is representable).
    x = 0 and x < 0 give exactly 0 (documented).

    Accuracy: relative error <= 2^-26 plus one unit in the last place.

    Protocol: as sqrt with e = fx - L + 2f (24 rounds, the same tuples);
    sqrt_inv_sqrt gives both from one normalisation and one set of powers."""
    return sqrt_inv_sqrt(x, False, True).inv_sqrt


# ------------------------------------------------------------ log

def log(x: SharedArray) -> SharedArray:
    """Natural logarithm elementwise, at params.f fractional bits.

    Domain: x > 0, the whole format.  x <= 0 gives log(2^-fx) = -fx ln 2
    (the log of the smallest positive value; documented, not garbage).

    Accuracy: absolute error <= 2^-30 + one unit in the last place (below
    2 ulp), for every positive input.

    Protocol (22 rounds; at most 25): normalisation (17; round B also zeroes the
    exponent and the one-hot for x <= 0); ln(m) by a degree-12 polynomial
    in s = 4m - 3 plus (L - fx) ln 2 added before the last truncation (8).

    Tuples per element: 399 AND gates, 17 daBits, 1 rbits, 13 Beaver
    products, 10 truncation pairs."""
    if _check_input(x, "log"):
        return _empty(x)
    ctx = x.ctx
    params = ctx.params
    K = params.k - 1
    fx, fo = x.frac, params.f
    X = _flat(x)
    n = X.shape[0]

    def out_products(lead, sign, S):
        L_raw = _lin(ctx, [(K, lead.nonzero()), (-1, lead.value(0))], 0, lead.n)
        return [("mul", _sa(ctx, L_raw), sign)]

    max_abs = max(fx, K - fx) * math.log(2) + 1.0
    s, lead, (L_pos,), S, nz_pos, (plan,) = _normalise(ctx, X, [], "pos", out_products, [([_LOG], fo, max_abs)])
    # exponent: L for x > 0, 1 where m was set to 0.5 (so log = ln(0.5) + (1 - fx) ln 2)
    L_eff = _lin(ctx, [(1, L_pos.share), (-1, nz_pos.share)], 1, n)
    extra = lambda G: _lin(ctx, [(_enc(math.log(2), G), L_eff)], -fx * _enc(math.log(2), G), n)  # noqa: E731
    y = _poly(ctx, s, [_LOG], fo, max_abs, extra=extra, plan=plan)[0]
    return _sa(ctx, y.share.reshape(x.shape + (field.LIMBS,)), fo)


# ------------------------------------------------------------ exp and sigmoid

def _exp_input(x: SharedArray) -> SharedArray:
    """x with at most EXP_MAX_FRAC fractional bits (one truncation round if it
    has more): the split below keeps M = frac + 16 bits of W and needs
    M + 35 <= the masking budget for a 32-bit correction factor."""
    limit = _max_bits(x.ctx.params) - 35 - 16
    if x.frac <= limit:
        return x
    return _trunc(x.ctx, [(x, x.frac - limit, x.ctx.params.k + 1)])[0]


class _ExpPlan:
    """Constants of the exact split x log2(e) = n + t (see exp)."""

    def __init__(self, params, fx: int, n_nodes: int):
        k, fo, sigma = params.k, params.f, params.sigma
        self.F = _internal_frac(params)
        # u = n + bias must hold n in [-fo, k - 2 - fo] (every representable e^x)
        self.nb = 6
        while (1 << (self.nb - 1)) < max(fo, k - 1 - fo):
            self.nb += 1
        self.bias = 1 << (self.nb - 1)
        self.g = 16                                        # log2(e) to g fractional bits
        self.q_int = _enc(math.log2(math.e), self.g)
        self.M = fx + self.g                               # fractional bits of W = X q
        self.w = self.M + self.nb                          # circuit window
        bound = (1 << (k - 1)) * self.q_int + self.bias * (1 << self.M)
        self.B = bound.bit_length() + 1                    # |W'| < 2^(B-1)
        log_n = max(1, math.ceil(math.log2(n_nodes)))
        if self.B + sigma + log_n + 1 > 126 or self.B - self.w + sigma > 126:
            raise ValueError(f"exp: format k = {k}, f = {fo}, sigma = {sigma} leaves no room for the split")
        q = self.q_int / 2.0 ** self.g
        delta = (math.log2(math.e) - q) / q                # x log2 e = (n + phi)(1 + delta)
        self.G1 = min(32, _max_bits(params) - 3 - self.M)
        self.Q1 = _enc(1.0 + delta, self.G1)
        self.Q2 = _enc(delta, self.M + self.G1)
        self.fx, self.fo = fx, fo


def _exp_split(ctx, x: SharedArray, plan: _ExpPlan, tests, sign_test: bool):
    """Steps 1-3 of exp/sigmoid: openings, circuits, bits to field.

    tests: public thresholds T (integers at x's frac) for [x < T].
    Returns (opening of W', field bits of u (nb, n), of the flipped u when
    sign_test, borrow out b_w, test results (len(tests), n), sign [x<0] or None)."""
    params = ctx.params
    X = _flat(x)
    n = X.shape[0]
    W = field.mul_scalar(X, plan.q_int)
    if ctx.leads:
        W = field.add_scalar(W, plan.bias << plan.M)
    Bt = params.k + 1
    borrows = tuple(range(plan.M, plan.M + plan.nb)) + (plan.w,)
    n_tests = len(tests) + (1 if sign_test else 0)
    pre = {}

    def prefetch():  # every AND triple and daBit of steps 2-3, before the opening
        plans = [decompose_plan(plan.w, borrows)] + [lt_plan(Bt)] * n_tests
        pre["and"] = request_and_gates(ctx, [gate_counts(p) for p in plans], [n_words(n)] * len(plans))
        pre["dabits"] = request_dabits(ctx, plan.nb + 1 + n_tests + (plan.nb if sign_test else 0), n)

    mW, mX = open_masked(ctx, [(W, plan.B, plan.w), (X, Bt, Bt)], prefetch)           # step 1
    dec = DecomposeCircuit(ctx, mW, borrows)
    cmp = [LessThanCircuit(ctx, mX, check_thresholds(T, Bt)) for T in tests]
    if sign_test:
        cmp.append(LessThanCircuit(ctx, mX, 0))
    run_circuits(ctx, [dec.circuit] + [c.circuit for c in cmp], pre["and"])           # step 2
    u_bits = [dec.bit(plan.M + b) for b in range(plan.nb)]
    planes = u_bits + [dec.borrow(plan.w)] + [c.result() for c in cmp]
    if sign_test:
        neg = cmp[-1].result()                 # x < 0: keep u; x >= 0: flip (-n-1 in two's complement)
        planes += [xor_public(ctx, ub ^ neg, np.full_like(neg, np.uint64(0xFFFFFFFFFFFFFFFF)))
                   for ub in u_bits]
    arith = bits_to_field(ctx, np.stack(planes), n, pre["dabits"])                    # step 3
    nb = plan.nb
    u = arith[:nb]
    b_w = arith[nb]
    res = arith[nb + 1:nb + 1 + len(cmp)]
    flipped = arith[nb + 1 + len(cmp):] if sign_test else None
    return mW, u, b_w, res, flipped


def _phi_raw(ctx, mW, plan: _ExpPlan, u, b_w) -> np.ndarray:
    """Shares of (W' mod 2^M) = (c mod 2^w) - r_lo + 2^w b_w - 2^M u (frac M)."""
    n = mW.n
    c_low = np.zeros((n, field.LIMBS), dtype=np.uint64)
    c_low[:, 0] = mW.c[:, 0] & np.uint64((1 << plan.w) - 1) if plan.w < 64 else mW.c[:, 0]
    if plan.w > 64:
        c_low[:, 1] = mW.c[:, 1] & np.uint64((1 << (plan.w - 64)) - 1)
    u_val = _lin(ctx, [(1 << b, u[b]) for b in range(plan.nb)], 0, n)
    phi = _lin(ctx, [(-1, mW.r_lo), (1 << plan.w, b_w), (-(1 << plan.M), u_val)], 0, n)
    if ctx.leads:
        phi = field.add(phi, c_low)
    return phi, u_val


def _s_raw(ctx, plan: _ExpPlan, phi, u_val) -> np.ndarray:
    """Shares of s = 2t - 1 at frac M + G1, t = phi + (u - bias + phi) delta."""
    n = phi.shape[0]
    return _lin(ctx, [(2 * plan.Q1, phi), (2 * plan.Q2, u_val)],
                -2 * plan.bias * plan.Q2 - (1 << (plan.M + plan.G1)), n)


def _pow2_factors(ctx, u, nb):
    """Integer SharedArrays 1 + u_b (2^(2^b) - 1), whose product is 2^u."""
    n = u.shape[1]
    return [_sa(ctx, _lin(ctx, [((1 << (1 << b)) - 1, u[b])], 1, n)) for b in range(nb)]


def exp(x: SharedArray) -> SharedArray:
    """e^x elementwise, at params.f fractional bits.

    Domain: the whole format.  For x > (k-1-f) ln 2 - 2^-20 (e^x not
    representable) the result saturates at the largest value 2^(k-1-f) - 2^-f;
    for x < -f ln 2 + 2^-10 it is 0 (the true value is at most one unit).

    Accuracy: relative error <= 2^-27 plus one unit in the last place.
    Inputs with more than 34 fractional bits are first rounded to 34 (one
    more round).

    Protocol (17 rounds):

    1. one round: masked openings of W = x round(log2(e) 2^16) + 32 2^M
       (M = fx + 16; its low M + 6 bits are the circuit window) and of x
       (for the two range tests);
    2. in parallel (6 rounds): borrows of W's window at positions M .. M+5
       and M+6, and the tests [x < lo], [x < hi];
    3. bits to field (1 round): u = floor(W / 2^M) mod 64 = n + 32 (n the
       integer part of x log2(e) rounded through q), the borrow (giving the
       exact fractional part phi = (W mod 2^M) / 2^M), the tests;
    4. t = phi + (n + phi) delta, delta = (log2 e - q) / q, exactly the
       fractional exponent, rounded to F bits as s = 2t - 1 (1 round);
    5. 2^t by a degree-6 polynomial (6 rounds); meanwhile 2^u times the range
       flag as a product tree of 1 + u_b (2^(2^b) - 1) (3 levels, riding
       along in the polynomial's product rounds);
    6. y = 2^t 2^(n + f) shifted by f (2 rounds), plus the saturation value
       where x is above the range.

    Nothing out of range is ever large: u has 6 bits whatever x is, so t
    stays within [-2^-10, 1 + 2^-10].

    Tuples per element: 324 AND gates, 9 daBits, 2 rbits, 11 Beaver
    products, 7 truncation pairs."""
    if _check_input(x, "exp"):
        return _empty(x)
    x = _exp_input(x)
    ctx = x.ctx
    params = ctx.params
    k, fo = params.k, params.f
    plan = _ExpPlan(params, x.frac, ctx.n)
    n_min = -min(fo, plan.bias)
    x_lo = n_min * math.log(2) + 2.0 ** -10
    x_hi = (k - 1 - fo) * math.log(2) - 2.0 ** -20
    T_lo = threshold_ints(x_lo, x.frac)                  # x < x_lo       -> 0
    T_hi = threshold_ints(x_hi, x.frac, above=True)      # x >= T_hi      -> saturate
    mW, u, b_w, (lt_lo, lt_hi), _ = _exp_split(ctx, x, plan, [T_lo, T_hi], False)        # steps 1-3
    n = mW.n
    phi, u_val = _phi_raw(ctx, mW, plan, u, b_w)
    s_item = (plan.M + plan.G1 - plan.F, plan.M + plan.G1 + 3)
    s_plan = _plans(ctx, [((n,),) + s_item])
    poly = ([_EXP2], fo, 2.0 + 2.0 ** -8)
    poly_plan = _PolyPlan(ctx, s_plan[0].spec, (n,), plan.F, *poly)     # requested with s's pair
    s = _trunc(ctx, [(_sa(ctx, _s_raw(ctx, plan, phi, u_val), plan.M + plan.G1),) + s_item], s_plan)[0]  # 4
    in_range = _sa(ctx, field.sub(lt_hi, lt_lo))
    tree = _Side(_product_tree(_pow2_factors(ctx, u, plan.nb) + [in_range]))
    P = _poly(ctx, s, *poly, sides=[tree], plan=poly_plan)[0]                             # step 5
    T = tree.finish(ctx)
    # T = 2^(n + bias) for x in range; 2^(n + fo) = T 2^(fo - bias), exact there (n >= -fo)
    T = _sa(ctx, field.mul_pow2(T.share, fo - plan.bias))
    Y = _mul_trunc(ctx, [("mul", P, T)], [(fo, k + fo)])[0]                               # step 6
    over = _lin(ctx, [(-1, lt_hi)], 1, n)
    Y = field.add(Y.share, field.mul_scalar(over, (1 << (k - 1)) - 1))
    return _sa(ctx, Y.reshape(x.shape + (field.LIMBS,)), fo)


def sigmoid(x: SharedArray) -> SharedArray:
    """The logistic function 1 / (1 + e^-x) elementwise, at params.f bits.

    Domain: the whole format.  Computed as 1/(1 + e^-|x|) for x >= 0 and
    1 - that for x < 0, so nothing overflows; for |x| beyond (f + 2) ln 2
    (~ 20.8) e^-|x| < 2^-(f+2) is taken as 0.

    Accuracy: absolute error <= 2 units in the last place (|error| <= 2^-27).

    Protocol (22 rounds; at most 27):

    1-3. as exp (8 rounds), with a third test [x < 0] in the same circuits;
       the bits of u for -|x| are those of x's split, complemented for
       x >= 0 (-(n + phi) = (-n-1) + (1 - phi); -n-1 is NOT n), a local XOR;
    4. phi' = phi or 1 - phi by the sign (one product round), then
       s = 2t - 1 (one truncation round);
    5. e = e^-|x| = 2^t 2^(n') in (0, 1] at F bits: polynomial (6), product
       with the tree's 2^(n' + 32) and shift (2);
    6. r = 1/(1 + e): (1 + e)/2 in (0.5, 1] needs no normalisation, so the
       degree-12 reciprocal polynomial in s = 2e - 1 gives it directly (7:
       s keeps the mask of e's truncation, with which its products were asked for);
    7. sigmoid = [x<0] + (1 - 2 [x<0]) r (one product round).

    Tuples per element: 428 AND gates, 16 daBits, 2 rbits, 21 Beaver
    products, 16 truncation pairs."""
    if _check_input(x, "sigmoid"):
        return _empty(x)
    x = _exp_input(x)
    ctx = x.ctx
    params = ctx.params
    fo = params.f
    plan = _ExpPlan(params, x.frac, ctx.n)
    F = plan.F
    # e^-|x| matters down to 2^-(fo+2); below, e = 0 (sigmoid off by < 1/4 unit)
    n_max = min(plan.bias, fo + 2)
    x_c = n_max * math.log(2) - 2.0 ** -10
    T_lo = threshold_ints(-x_c, x.frac)              # x < -x_c: e^-|x| -> 0
    T_hi = threshold_ints(x_c, x.frac, above=True)   # x >= T_hi: likewise
    mW, u, b_w, (lt_lo, lt_hi, lt0), u_flip = _exp_split(ctx, x, plan, [T_lo, T_hi], True)  # 1-3
    n = mW.n
    phi, u_val = _phi_raw(ctx, mW, plan, u, b_w)
    neg = _sa(ctx, lt0)
    # phi' = phi (x < 0) or 2^M - phi (x >= 0): phi' = (1 - neg) 2^M + (2 neg - 1) phi
    neg_phi = _products(ctx, [("mul", neg, _sa(ctx, phi))])[0]                                   # 4
    phi_f = _lin(ctx, [(2, neg_phi.share), (-1, phi), (-(1 << plan.M), lt0)], 1 << plan.M, n)
    uf_val = _lin(ctx, [(1 << b, u_flip[b]) for b in range(plan.nb)], 0, n)
    s_item = (plan.M + plan.G1 - F, plan.M + plan.G1 + 3)
    s_plan = _plans(ctx, [((n,),) + s_item])
    poly = ([_EXP2], F, 2.0 + 2.0 ** -8)
    poly_plan = _PolyPlan(ctx, s_plan[0].spec, (n,), F, *poly)           # requested with s's pair
    s = _trunc(ctx, [(_sa(ctx, _s_raw(ctx, plan, phi_f, uf_val), plan.M + plan.G1),) + s_item], s_plan)[0]
    in_range = _sa(ctx, field.sub(lt_hi, lt_lo))
    tree = _Side(_product_tree(_pow2_factors(ctx, u_flip, plan.nb) + [in_range]))
    P = _poly(ctx, s, *poly, sides=[tree], plan=poly_plan)[0]                                    # 5
    T = tree.finish(ctx)                                   # 2^(n' + bias), -n_max <= n' <= -1
    T = _sa(ctx, field.mul_pow2(T.share, n_max - plan.bias))           # 2^(n' + n_max), exact in range
    e_item = (n_max, F + n_max + 2)
    e_plan = _plans(ctx, [((n,),) + e_item])
    recip = ([_RECIPROCAL], fo - 1, 2.0 + 2.0 ** -20)                 # 2/(1+e) at fo - 1 bits
    recip_plan = _PolyPlan(ctx, e_plan[0].spec.scaled(2), (n,), F, *recip)   # s2 = 2e - 1 keeps e's mask
    e = _trunc(ctx, [(_products(ctx, [("mul", P, T)])[0],) + e_item], e_plan)[0]
    e = SharedArray(ctx, e.share, F, e.mask)                         # e^-|x| at F bits (T held 2^n_max)
    s2 = e * 2 - 1.0                                                 # 2e - 1 in [-1, 1], e's mask
    R = _poly(ctx, s2, *recip, plan=recip_plan)[0]                                               # 6
    r = SharedArray(ctx, R.share, fo, R.mask)                         # = 1/(1+e) at fo bits (same encoding)
    signed = _products(ctx, [("mul", 1 - 2 * neg, r)])[0]                                        # 7
    y = field.add(signed.share, field.mul_pow2(neg.share, fo))
    return _sa(ctx, y.reshape(x.shape + (field.LIMBS,)), fo)
