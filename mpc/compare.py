"""Comparisons, bit decomposition and normalisation of secret-shared numbers.

Everything here works on the integer encodings of SharedArrays: a fixed-point
value is compared through its encoding (operands are brought to a common
``frac`` first), so results are exact — no approximation, ties included.

Method (statistical masking, then boolean circuits on packed bit planes):

1. **Masked opening.** For an integer x with |x| < 2^(B-1), y = x + 2^(B-1)
   lies in [0, 2^B).  The dealer supplies uniform w-bit integers r_lo, both
   as XOR-shared bit planes and additively shared ("rbits" tuples, w <= B);
   each node adds its own uniform r_hi,i in [0, 2^(B - w + sigma)) drawn from
   its seed, so r = sum_i r_hi,i 2^w + r_lo.  c = y + r is opened (one round):
   c < 2^(B + sigma + ceil(log2 n) + 1) < p never wraps, and it hides y up to
   statistical distance 2^-sigma (a coalition missing one node still faces
   that node's r_hi,i 2^w + r_lo, uniform on 2^(B + sigma) values).
2. **Subtraction circuit.** y mod 2^w = (c mod 2^w) - r_lo + 2^w [c mod 2^w < r_lo]:
   a public number minus a shared one.  With generate g_i = r_i AND NOT c_i and
   propagate p_i = NOT(r_i XOR c_i) (local: c is public), the borrow into bit
   i+1 is the prefix G[0..i] of the associative operator
   (G, P)_high o (G, P)_low = (G_h XOR P_h G_l, P_h P_l), evaluated by a
   Sklansky parallel-prefix network pruned to the outputs a caller needs:
   ceil(log2 w) rounds of AND gates.  Then bit i of y is c_i XOR r_i XOR b_i,
   and [x < 0] = NOT y_{B-1}.
3. **AND gates** run on planes packed 64 elements per uint64 word, a whole
   level of every circuit in one opening: with a dealer triple (a, b, c = a b)
   the nodes open d = x XOR a, e = y XOR b and take c XOR d b XOR e a (XOR d e
   on the leading node).  a and b are bit masks drawn from seeds; only c is
   corrected, so the dealer sends one bit per AND.
4. **Bits to field elements** with daBits (a random bit rho both XOR-shared
   and additively shared): open e = b XOR rho (one round, one bit per bit),
   then b = e + rho - 2 e rho.

Every tuple a comparison needs is requested before its first opening, and
node n-1 opens with a pad of its own so the dealer's answer overlaps the
exchange (open_masked): the dealer is off the critical path.

API (all exact, all batched over whole arrays; 8 rounds for bits <= 65):
ltz, is_positive, less_than, greater_than, less_equal, greater_equal,
less_than_public / greater_than_public (several public thresholds from one
opening), eqz, equal, sign, ltz_many / eqz_many (several arrays in the same
rounds); select (1 round), minimum / maximum (9), min_along / max_along
(9 ceil(log2 len)); normalise (17) and the building blocks leading_one,
leading_one_planes, open_masked, run_circuits, bits_to_field used by
mpc.nonlinear.

References: the masked-opening comparison follows Catrina and de Hoogh
(ESORICS 2010) in the statistically secure setting; the prefix network is
Sklansky's (1960); daBits are from Rotaru and Wood (INDOCRYPT 2019).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from mpc import beaver, field
from mpc.context import node_name
from mpc.shared import SharedArray, concatenate
from mpc.triples import DEALER, MaskSpec, bit_mask_spec, n_words, pack_bits, unpack_bits, words_to_planes
from mpc.truncate import truncate_many

_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)


# ============================================================ bit planes

def public_planes(values: np.ndarray, start: int, count: int) -> np.ndarray:
    """Bits start .. start+count-1 of public field elements (read as integers
    in [0, p)), as planes of shape (count, ceil(n / 64))."""
    values = np.ascontiguousarray(values).reshape(-1, field.LIMBS)
    n = values.shape[0]
    out = np.empty((count, n_words(n)), dtype=np.uint64)
    for limb in (0, 1):
        lo, hi = max(start, 64 * limb), min(start + count, 64 * (limb + 1))
        if lo < hi:
            out[lo - start:hi - start] = words_to_planes(values[:, limb])[lo - 64 * limb:hi - 64 * limb]
    return out


def _not(ctx, planes: np.ndarray) -> np.ndarray:
    """NOT of XOR-shared planes (the leading node flips every bit)."""
    return planes ^ _ALL if ctx.leads else planes.copy()


def xor_public(ctx, planes: np.ndarray, public: np.ndarray) -> np.ndarray:
    return planes ^ public if ctx.leads else planes.copy()


# ============================================================ boolean circuits

@dataclass(frozen=True)
class Level:
    """One round of AND gates on a register file of planes:
    ``reg[dst] = reg[x] & reg[y]`` (or ``^=`` where ``xor``), all read first."""

    x: np.ndarray
    y: np.ndarray
    dst: np.ndarray
    xor: np.ndarray


def _level(ops_xor, ops_set) -> Level:
    ops = list(ops_xor) + list(ops_set)
    arr = np.array(ops, dtype=np.int64).reshape(-1, 3)
    return Level(arr[:, 0], arr[:, 1], arr[:, 2],
                 np.array([True] * len(ops_xor) + [False] * len(ops_set), dtype=bool))


def _low_partner(i: int, s: int) -> int:
    """Sklansky: the last position of the lower half of i's block at level s."""
    return ((i >> (s + 1)) << (s + 1)) + (1 << s) - 1


def plan_borrows(w: int, outputs) -> list:
    """Pruned Sklansky network for prefixes G[0..i], i in `outputs`, of w (G, P) pairs.

    Registers: G_i is row i, P_i is row w + i.  Returns the levels (at most
    ceil(log2 w)); only gates some requested output depends on are kept."""
    depth = max(0, math.ceil(math.log2(w))) if w > 1 else 0
    need_g, need_p = set(outputs), set()
    levels = [None] * depth
    for s in reversed(range(depth)):
        ops_g, ops_p = [], []
        new_g, new_p = set(), set()
        for i in sorted(need_g):
            if (i >> s) & 1:
                j = _low_partner(i, s)
                ops_g.append((w + i, j, i))          # G_i ^= P_i & G_j
                new_g.update((i, j))
                new_p.add(i)
            else:
                new_g.add(i)
        for i in sorted(need_p):
            if (i >> s) & 1:
                j = _low_partner(i, s)
                ops_p.append((w + i, w + j, w + i))  # P_i = P_i & P_j
                new_p.update((i, j))
            else:
                new_p.add(i)
        levels[s] = _level(ops_g, ops_p)
        need_g, need_p = new_g, new_p
    return [lv for lv in levels if lv.x.size]


def plan_and_prefix(w: int, outputs, reverse: bool = False) -> list:
    """Pruned Sklansky network for prefix ANDs A[0..i] of w bits in registers
    0..w-1 (suffix ANDs A[i..w-1] when reverse: output i is then register i)."""
    reg = (lambda q: w - 1 - q) if reverse else (lambda q: q)
    depth = max(0, math.ceil(math.log2(w))) if w > 1 else 0
    need = {(w - 1 - i) if reverse else i for i in outputs}
    levels = [None] * depth
    for s in reversed(range(depth)):
        ops, new = [], set()
        for q in sorted(need):
            if (q >> s) & 1:
                j = _low_partner(q, s)
                ops.append((reg(q), reg(j), reg(q)))
                new.update((q, j))
            else:
                new.add(q)
        levels[s] = _level([], ops)
        need = new
    return [lv for lv in levels if lv.x.size]


@dataclass
class Circuit:
    """A register file (this node's XOR shares, shape (R, W)) and the AND levels to run on it."""

    registers: np.ndarray
    levels: list


def request_and_gates(ctx, counts, widths) -> list:
    """Ask the dealer for the AND triples of circuits evaluated in lockstep.

    counts: per circuit, the number of AND gates (planes) per level;
    widths: per circuit, words per plane.  One request per level; returns the
    batches for run_circuits.  Calling this before an earlier opening lets
    the dealer compute them while the nodes exchange."""
    depth = max((len(g) for g in counts), default=0)
    batches = []
    for d in range(depth):
        size = sum(g[d] * w for g, w in zip(counts, widths) if d < len(g))
        label = ctx.label("and")
        batches.append((ctx.tuples.request("and", label, n_words=size), bit_mask_spec(f"{label}/ab", (2, size))))
    return batches


def run_circuits(ctx, circuits, batches=None) -> None:
    """Evaluate circuits in lockstep: level d of every circuit in one round.

    1. Node n-1 asks the dealer for one AND-triple batch per level, all before
       the first round (the dealer works ahead while the nodes compute), unless
       `batches` were requested earlier (request_and_gates).
    2. Per level: gather the gate inputs x, y of every circuit; open
       d = x XOR a and e = y XOR b together (one round); z = c XOR d b XOR e a
       (XOR d e on the leading node); write z back.

    Rounds: the deepest circuit's number of levels.  Dealer traffic: one bit per AND."""
    circuits = [c for c in circuits if c.levels]
    if not circuits:
        return
    depth = max(len(c.levels) for c in circuits)
    if batches is None:  # step 1
        batches = request_and_gates(ctx, [[lv.x.size for lv in c.levels] for c in circuits],
                                    [c.registers.shape[1] for c in circuits])
    if len(batches) != depth:
        raise ValueError(f"run_circuits: {len(batches)} prefetched AND batches for {depth} levels")
    for d in range(depth):  # step 2
        live = [c for c in circuits if d < len(c.levels)]
        x = np.concatenate([c.registers[c.levels[d].x].reshape(-1) for c in live])
        y = np.concatenate([c.registers[c.levels[d].y].reshape(-1) for c in live])
        tup, spec = batches[d]
        ab = ctx.tuples.mask(spec)
        a, b = ab[0], ab[1]
        dd, ee = ctx.open_bits_many([x ^ a, y ^ b], tag="and")
        z = tup["c"] ^ (dd & b)
        z ^= ee & a
        if ctx.leads:
            z ^= dd & ee
        pos = 0
        for c in live:
            lv = c.levels[d]
            width = c.registers.shape[1]
            zc = z[pos:pos + lv.x.size * width].reshape(lv.x.size, width)
            pos += zc.size
            c.registers[lv.dst[lv.xor]] ^= zc[lv.xor]
            c.registers[lv.dst[~lv.xor]] = zc[~lv.xor]


def request_dabits(ctx, g: int, n: int):
    """Ask the dealer for g x n daBits (see bits_to_field)."""
    label = ctx.label("db")
    return ctx.tuples.request("dabit", label, g=g, n=n), bit_mask_spec(f"{label}/x", (g, n_words(n)))


def bits_to_field(ctx, planes: np.ndarray, n: int, dabits=None) -> np.ndarray:
    """XOR-shared bit planes (g, W) to additive shares of the bits, field (g, n).

    One round: with daBits (rho XOR-shared and additive), open e = b XOR rho;
    then b = e + rho - 2 e rho.  Dealer traffic: one field element per bit."""
    g = planes.shape[0]
    if g == 0:
        return field.zeros((0, n))
    tup, spec = request_dabits(ctx, g, n) if dabits is None else dabits
    if spec.shape != (g, n_words(n)):
        raise ValueError(f"bits_to_field: prefetched daBits of shape {spec.shape} for {g} x {n} bits")
    rho_x = ctx.tuples.mask(spec)
    e = ctx.open_bits_many([planes ^ rho_x], tag="b2a")[0]
    e_bits = unpack_bits(e, n)
    rho = tup["rho"]
    out = np.where(e_bits.astype(bool)[..., None], field.neg(rho), rho)
    if ctx.leads:
        out = field.add(out, field.from_int(e_bits.astype(np.uint64)))
    return out


def _dabit_layout(items):
    """(g, n) of the daBit request for bits_to_field_many over (g_i, n_i) items."""
    if len(items) == 1:
        return items[0]
    return 1, sum(g * n for g, n in items)


def bits_to_field_many(ctx, items, dabits=None) -> list:
    """bits_to_field for several (planes (g_i, W_i), n_i) in one round.

    Several items are flattened into one bit vector (unpack, concatenate,
    repack: local), converted together and split again."""
    if len(items) == 1:
        planes, n = items[0]
        return [bits_to_field(ctx, planes, n, dabits)]
    flat = np.concatenate([unpack_bits(planes, n).reshape(-1) for planes, n in items])
    total = flat.size
    arith = bits_to_field(ctx, pack_bits(flat)[None], total, dabits)[0]
    out, pos = [], 0
    for planes, n in items:
        g = planes.shape[0]
        out.append(arith[pos:pos + g * n].reshape(g, n, field.LIMBS))
        pos += g * n
    return out


# ============================================================ masked opening

@dataclass
class MaskedOpening:
    """This node's view of c = x + 2^(B-1) + r for a flat integer array x.

    Attributes
    ----------
    n, B, w : int
        Elements, bound |x| < 2^(B-1), window bits (r_lo has w bits).
    c : field array (n,)
        The opened value (public).
    r_planes : uint64 (w, ceil(n / 64))
        This node's XOR share of r_lo's bit planes.
    r_lo : field array (n,)
        This node's additive share of r_lo.
    """

    n: int
    B: int
    w: int
    c: np.ndarray
    r_planes: np.ndarray
    r_lo: np.ndarray

    def c_minus(self, threshold) -> np.ndarray:
        """c - T: the opening of x - T for a public integer T (an int, or int64 per element)."""
        if isinstance(threshold, (int, np.integer)):
            return field.add_scalar(self.c, -int(threshold)) if threshold else self.c
        return field.sub(self.c, field.from_int(np.asarray(threshold, dtype=np.int64).reshape(-1)))


def open_masked(ctx, groups, prefetch=None) -> list:
    """Masked openings of several flat integer arrays in one round.

    Parameters
    ----------
    groups : list of (share, B, w)
        share : this node's share, field array (n,) of an integer x with
        |x| < 2^(B-1); w <= B: bits of r_lo (the circuit window).
    prefetch : callable, optional
        Called after the rbits requests and before the opening: requests it
        makes reach the dealer together with them.

    Returns
    -------
    list of MaskedOpening

    The dealer is kept off the critical path: the node whose shares of r_lo
    come from the dealer (node n-1) opens with a one-time pad rho of its own
    (a uniform field element from its seed) in place of its share r_{n-1},
    and sends eps = r_{n-1} - rho to the others once the dealer has answered,
    while the opening is under way; everyone then adds eps.  eps is uniform
    and independent of everything else (rho is used once), so the view is
    that of the plain opening of c.  Like the dealer link, this one-way
    message is not counted as a round: it overlaps the exchange."""
    params = ctx.params
    log_n = max(1, math.ceil(math.log2(ctx.n)))
    corrected = ctx.tuples.corrected             # node n-1: its r_lo shares come from the dealer
    prepared = []
    for share, B, w in groups:
        share = np.ascontiguousarray(share).reshape(-1, field.LIMBS)
        n = share.shape[0]
        hb = B - w + params.sigma
        if not (0 < w <= B and B + params.sigma + log_n + 1 <= 126 and w <= 126):
            raise ValueError(f"masked opening: bound B = {B}, window w = {w}, sigma = {params.sigma} and "
                             f"{ctx.n} nodes break 0 < w <= B, B + sigma + ceil(log2 n) + 1 <= 126")
        label = ctx.label("rb")
        tup = ctx.tuples.request("rbits", label, n=n, width=w)
        r_planes = ctx.tuples.mask(bit_mask_spec(f"{label}/x", (w, n_words(n))))
        # r_hi,i: this node's own uniform hb-bit integers (the dealer never needs them)
        hi_words = ctx.tuples.mask(bit_mask_spec(f"{label}/hi", (n, 1 if hb <= 64 else 2)))
        r_hi = np.zeros((n, field.LIMBS), dtype=np.uint64)
        r_hi[:, 0] = hi_words[:, 0] if hb >= 64 else hi_words[:, 0] & np.uint64((1 << hb) - 1)
        if hb > 64:
            r_hi[:, 1] = hi_words[:, 1] & np.uint64((1 << (hb - 64)) - 1)
        x_plus = field.add(share, field.mul_pow2(r_hi, w))
        if ctx.leads:
            x_plus = field.add_scalar(x_plus, 1 << (B - 1))
        rho = ctx.tuples.mask(MaskSpec(DEALER, f"{label}/rho", (n,))) if corrected else None
        prepared.append((n, B, w, r_planes, tup, x_plus, rho))
    if prefetch is not None:
        prefetch()
    if corrected:
        c_shares = [field.add(x_plus, rho) for *_, x_plus, rho in prepared]
    else:
        c_shares = [field.add(x_plus, tup["r"]) for *_, tup, x_plus, _ in prepared]
    opened = ctx.open_many(c_shares, tag="cmp")
    sizes = [item[0] for item in prepared]
    tag = f"{ctx.label('eps')}"
    if corrected:                                   # the dealer's answer arrives during the exchange
        eps = np.concatenate([field.sub(tup["r"], rho) for *_, tup, _, rho in prepared])
        for peer in ctx.others:
            ctx.channel.send(peer, tag, eps, is_field=True)
    else:
        eps = ctx.channel.recv(node_name(ctx.n - 1), tag, dtype="f127", shape=(sum(sizes),), count_round=False)
    out, pos = [], 0
    for (n, B, w, r_planes, tup, _, _), c in zip(prepared, opened):
        c = field.add(c, eps[pos:pos + n])
        pos += n
        out.append(MaskedOpening(n, B, w, c, r_planes, tup["r"]))
    return out


# ============================================================ circuit builders

@functools.lru_cache(maxsize=None)
def lt_plan(B: int) -> tuple:
    return tuple(plan_borrows(B - 1, [B - 2])) if B > 1 else ()


@functools.lru_cache(maxsize=None)
def _eq_plan(B: int) -> tuple:
    return tuple(plan_and_prefix(B, [B - 1]))


@functools.lru_cache(maxsize=None)
def decompose_plan(w: int, outputs: tuple) -> tuple:
    return tuple(plan_borrows(w, [i - 1 for i in outputs]))


@functools.lru_cache(maxsize=None)
def _suffix_plan(w: int) -> tuple:
    return tuple(plan_and_prefix(w, range(w), reverse=True))


def gate_counts(plan) -> list:
    """AND gates per level of a plan (for request_and_gates)."""
    return [lv.x.size for lv in plan]


class LessThanCircuit:
    """[x < T] from a masked opening with window w = B: NOT bit B-1 of
    y - T = (c - T) - r, the borrow over the low B-1 bits via a pruned tree."""

    def __init__(self, ctx, m: MaskedOpening, threshold):
        self.ctx, self.m = ctx, m
        B = m.B
        c = m.c_minus(threshold)
        allp = public_planes(c, 0, B)
        self.c_top, cp = allp[B - 1], allp[:B - 1]
        r = m.r_planes[:B - 1]
        regs = np.empty((2 * (B - 1), cp.shape[1]), dtype=np.uint64)
        regs[:B - 1] = r & ~cp                      # g_i = r_i AND NOT c_i
        regs[B - 1:] = xor_public(ctx, r, ~cp)      # p_i = r_i XOR NOT c_i
        self.circuit = Circuit(regs, list(lt_plan(B)))

    def result(self) -> np.ndarray:
        """XOR share of [x < T], one plane."""
        B = self.m.B
        borrow = self.circuit.registers[B - 2] if B > 1 else np.zeros_like(self.c_top)
        top = self.m.r_planes[B - 1] ^ borrow          # y_{B-1} = c ^ r ^ borrow
        return xor_public(self.ctx, top, ~self.c_top)  # NOT y_{B-1}


class EqualCircuit:
    """[x == T]: y - T = 2^(B-1) iff every bit of (c - T) XOR 2^(B-1) equals r's."""

    def __init__(self, ctx, m: MaskedOpening, threshold):
        B = m.B
        cp = public_planes(m.c_minus(threshold), 0, B)
        cp[B - 1] = ~cp[B - 1]
        regs = xor_public(ctx, m.r_planes[:B], ~cp)   # bit equal: NOT(r XOR c')
        self.circuit = Circuit(regs, list(_eq_plan(B)))
        self.B = B

    def result(self) -> np.ndarray:
        return self.circuit.registers[self.B - 1]


class DecomposeCircuit:
    """Bits of y mod 2^w (y = x + 2^(B-1)): borrows at the requested positions."""

    def __init__(self, ctx, m: MaskedOpening, borrows_into):
        """borrows_into: positions i (1 <= i <= w) whose borrow b_i is needed."""
        w = m.w
        self.ctx, self.m = ctx, m
        self.cp = public_planes(m.c, 0, w)
        r = m.r_planes
        regs = np.empty((2 * w, self.cp.shape[1]), dtype=np.uint64)
        regs[:w] = r & ~self.cp
        regs[w:] = xor_public(ctx, r, ~self.cp)
        self.circuit = Circuit(regs, list(decompose_plan(w, tuple(borrows_into))))

    def borrow(self, i: int) -> np.ndarray:
        """XOR share of the borrow into bit i (i = w: [c mod 2^w < r_lo])."""
        if i == 0:
            return np.zeros_like(self.cp[0])
        return self.circuit.registers[i - 1]

    def bit(self, i: int) -> np.ndarray:
        """XOR share of bit i of y."""
        return xor_public(self.ctx, self.m.r_planes[i] ^ self.borrow(i), self.cp[i])


# ============================================================ helpers

def _flat_share(x: SharedArray) -> np.ndarray:
    return np.ascontiguousarray(x.share).reshape(-1, field.LIMBS)


def _as_shared(ctx, share: np.ndarray, shape, frac: int = 0) -> SharedArray:
    return SharedArray(ctx, np.ascontiguousarray(share).reshape(tuple(shape) + (field.LIMBS,)), frac)


def _bound(ctx, bits) -> int:
    return ctx.params.k if bits is None else int(bits)


def threshold_ints(t, frac: int, above: bool = False):
    """Integer thresholds T for real (or integer) public t at `frac` bits:
    X < T iff X / 2^frac < t (above=False: T = ceil(t 2^frac)), or
    X >= T iff X / 2^frac > t (above=True: T = floor(t 2^frac) + 1).
    Returns a Python int for a scalar t, else an int64 array."""
    arr = np.asarray(t)
    if arr.dtype.kind in "iub":
        T = arr.astype(object) * (1 << frac) + (1 if above else 0)
    else:
        scaled = arr.astype(np.float64) * 2.0 ** frac
        if not np.all(np.isfinite(scaled)):
            raise ValueError("comparison threshold is not finite")
        T = (np.floor(scaled) + 1 if above else np.ceil(scaled)).astype(object)
    if arr.ndim == 0:
        return int(T)
    return T


def check_thresholds(T, B: int):
    """Thresholds as int64 arrays or ints, within the comparison bound."""
    limit = 1 << (B - 2)
    values = [T] if isinstance(T, int) else list(np.asarray(T, dtype=object).reshape(-1))
    if any(abs(int(v)) >= limit for v in values):
        raise ValueError(f"comparison threshold outside the {B - 1}-bit range of the operands")
    if isinstance(T, int):
        return T
    return np.asarray(T, dtype=object).astype(np.int64)


def _compare_openings(ctx, items):
    """Shared driver: items are (flat share, B, [('lt'|'eq', T), ...]).

    One opening for all (with every AND triple and daBit requested before
    it, so the dealer works during the rounds), the circuits in lockstep, one
    bit conversion.  Returns, per item, a list of field arrays (n,) of 0/1."""
    sizes = [np.asarray(share).reshape(-1, field.LIMBS).shape[0] for share, _, _ in items]
    if any(n == 0 for n in sizes):                  # empty arrays: nothing to compare (a public fact)
        live = [i for i, n in enumerate(sizes) if n]
        res = _compare_openings(ctx, [items[i] for i in live]) if live else []
        out = [[field.zeros((0,)) for _ in tests] for _, _, tests in items]
        for i, r in zip(live, res):
            out[i] = r
        return out
    plans, widths, layout = [], [], []
    for share, B, tests in items:
        n = np.asarray(share).reshape(-1, field.LIMBS).shape[0]
        for kind, _ in tests:
            plans.append(lt_plan(B) if kind == "lt" else _eq_plan(B))
            widths.append(n_words(n))
        if tests:
            layout.append((len(tests), n))
    pre = {}

    def prefetch():
        pre["and"] = request_and_gates(ctx, [gate_counts(p) for p in plans], widths)
        if layout:
            pre["dabits"] = request_dabits(ctx, *_dabit_layout(layout))

    openings = open_masked(ctx, [(share, B, B) for share, B, _ in items], prefetch)
    builders = []
    for m, (_, _, tests) in zip(openings, items):
        builders.append([(LessThanCircuit if kind == "lt" else EqualCircuit)(ctx, m, T) for kind, T in tests])
    run_circuits(ctx, [b.circuit for bs in builders for b in bs], pre["and"])
    conv = [(np.stack([b.result() for b in bs]), m.n) for m, bs in zip(openings, builders) if bs]
    arith = iter(bits_to_field_many(ctx, conv, pre.get("dabits")) if conv else [])
    out = []
    for bs in builders:
        if not bs:
            out.append([])
            continue
        bits = next(arith)
        out.append([bits[i] for i in range(len(bs))])
    return out


# ============================================================ public API: comparisons

def ltz_many(ctx, xs, bits: int | None = None) -> list:
    """[x < 0] for several shared arrays in the same rounds.

    Parameters
    ----------
    xs : list of SharedArray (any shapes; fixed point or integer)
    bits : int, optional
        Bound on the encodings, |x 2^frac| < 2^(bits-1); default params.k.
        Up to about 126 - sigma - log2(n) - 1 (85 with the defaults), e.g.
        for integer counts beyond the fixed-point range.

    Returns
    -------
    list of SharedArray of 0/1 integers (frac 0), shapes of the inputs.

    Rounds: 1 (opening) + ceil(log2(bits - 1)) (AND levels) + 1 (to field):
    8 for bits = 56.  Tuples per element: about 2 bits AND gates (102 for
    bits = 56), 1 daBit, 1 rbits."""
    B = _bound(ctx, bits)
    res = _compare_openings(ctx, [(_flat_share(x), B, [("lt", 0)]) for x in xs])
    return [_as_shared(ctx, r[0], x.shape) for r, x in zip(res, xs)]


def ltz(x: SharedArray, bits: int | None = None) -> SharedArray:
    """[x < 0] elementwise, as 0/1 integers.  Exact; 8 rounds (see ltz_many)."""
    return ltz_many(x.ctx, [x], bits)[0]


def is_positive(x: SharedArray, bits: int | None = None) -> SharedArray:
    """[x > 0] = [-x < 0]; exact, 8 rounds."""
    return ltz(-x, bits)


def less_than(a: SharedArray, b: SharedArray, bits: int | None = None) -> SharedArray:
    """[a < b] for shared a, b (brought to a common frac); exact, ties give 0.

    `bits` bounds each operand's encoding at that common frac (default
    params.k: an integer compared with a fixed-point value is scaled by
    2^frac first, so it must stay below 2^(bits-1-frac)); the difference is
    compared with one more bit.  8 rounds."""
    return ltz(a - b, _bound(a.ctx, bits) + 1)


def greater_than(a: SharedArray, b: SharedArray, bits: int | None = None) -> SharedArray:
    """[a > b]; 8 rounds."""
    return less_than(b, a, bits)


def less_equal(a: SharedArray, b: SharedArray, bits: int | None = None) -> SharedArray:
    """[a <= b] = 1 - [b < a]; 8 rounds."""
    return 1 - less_than(b, a, bits)


def greater_equal(a: SharedArray, b: SharedArray, bits: int | None = None) -> SharedArray:
    """[a >= b] = 1 - [a < b]; 8 rounds."""
    return 1 - less_than(a, b, bits)


def _public_tests(x: SharedArray, ts, above: bool, B: int) -> list:
    tests = []
    for t in ts:
        T = threshold_ints(t, x.frac, above)
        if not isinstance(T, int):
            T = np.broadcast_to(T, x.shape).reshape(-1)
        tests.append(("lt", check_thresholds(T, B)))
    return tests


def less_than_public(x: SharedArray, thresholds, bits: int | None = None):
    """[x < t] for public thresholds t, all from one masked opening of x.

    Parameters
    ----------
    x : SharedArray
    thresholds : scalar, array broadcastable to x.shape, or a list of such
        Real thresholds are compared exactly with x's encoding (x < t iff
        X < ceil(t 2^frac)); integer thresholds are scaled by 2^frac.
    bits : int, optional
        Bound on x's encoding (default params.k); thresholds must satisfy the
        same bound.

    Returns
    -------
    SharedArray of 0/1 (a list of them when `thresholds` is a list).

    Rounds: 8, however many thresholds (one opening, circuits in parallel)."""
    many = isinstance(thresholds, (list, tuple))
    ts = list(thresholds) if many else [thresholds]
    B = _bound(x.ctx, bits) + 1
    res = _compare_openings(x.ctx, [(_flat_share(x), B, _public_tests(x, ts, False, B))])[0]
    out = [_as_shared(x.ctx, r, x.shape) for r in res]
    return out if many else out[0]


def greater_than_public(x: SharedArray, thresholds, bits: int | None = None):
    """[x > t] for public thresholds: 1 - [X < floor(t 2^frac) + 1].  8 rounds;
    a list of thresholds shares the rounds (as in less_than_public)."""
    many = isinstance(thresholds, (list, tuple))
    ts = list(thresholds) if many else [thresholds]
    B = _bound(x.ctx, bits) + 1
    res = _compare_openings(x.ctx, [(_flat_share(x), B, _public_tests(x, ts, True, B))])[0]
    out = [1 - _as_shared(x.ctx, r, x.shape) for r in res]
    return out if many else out[0]


def eqz_many(ctx, xs, bits: int | None = None) -> list:
    """[x == 0] for several shared arrays in the same rounds.

    Rounds: 1 + ceil(log2 bits) + 1 (8 for bits = 56).  Tuples per element:
    bits - 1 AND gates, 1 daBit, 1 rbits."""
    B = _bound(ctx, bits)
    res = _compare_openings(ctx, [(_flat_share(x), B, [("eq", 0)]) for x in xs])
    return [_as_shared(ctx, r[0], x.shape) for r, x in zip(res, xs)]


def eqz(x: SharedArray, bits: int | None = None) -> SharedArray:
    """[x == 0] elementwise, exact; 8 rounds."""
    return eqz_many(x.ctx, [x], bits)[0]


def equal(a: SharedArray, b: SharedArray, bits: int | None = None) -> SharedArray:
    """[a == b] (common frac); 8 rounds."""
    return eqz(a - b, _bound(a.ctx, bits) + 1)


def sign(x: SharedArray, bits: int | None = None) -> SharedArray:
    """-1, 0 or +1 as integers: 1 - 2 [x < 0] - [x == 0].

    Both tests share one opening and run in parallel: 8 rounds; 157 AND
    gates, 2 daBits, 1 rbits per element (bits = 56)."""
    B = _bound(x.ctx, bits)
    lt, eq = _compare_openings(x.ctx, [(_flat_share(x), B, [("lt", 0), ("eq", 0)])])[0]
    out = field.neg(field.add(field.add(lt, lt), eq))
    if x.ctx.leads:
        out = field.add_scalar(out, 1)
    return _as_shared(x.ctx, out, x.shape)


# ============================================================ select, min, max

def _at_frac(x: SharedArray, frac: int) -> SharedArray:
    """The same value encoded with `frac` >= x.frac fractional bits (exact)."""
    if x.frac == frac:
        return x
    return SharedArray(x.ctx, field.mul_pow2(x.share, frac - x.frac), frac)


def _public_like(x: SharedArray, value) -> SharedArray:
    """A public value as a trivial sharing at x's frac and shape."""
    value = np.broadcast_to(np.asarray(value), x.shape)
    if x.frac == 0:
        if value.dtype.kind == "f" and not np.all(value == np.round(value)):
            raise ValueError("select: a non-integer public value with an integer (frac 0) operand")
        return SharedArray.public(x.ctx, value.astype(np.int64))
    return SharedArray.public(x.ctx, value.astype(np.float64), x.frac)


def select(cond: SharedArray, a, b) -> SharedArray:
    """cond ? a : b elementwise, for a 0/1 integer `cond` (an oblivious if-else).

    a, b: SharedArrays of cond's shape, or public values (at least one shared);
    the result has the larger frac of the two.  One round: b + cond (a - b),
    one product, no truncation."""
    if cond.frac != 0:
        raise ValueError(f"select: the condition must be a 0/1 integer (frac 0), got frac {cond.frac}")
    ctx = cond.ctx
    if isinstance(a, SharedArray) and isinstance(b, SharedArray):
        frac = max(a.frac, b.frac)
        a, b = _at_frac(a, frac), _at_frac(b, frac)
    elif isinstance(a, SharedArray):
        b = _public_like(a, b)
    elif isinstance(b, SharedArray):
        a = _public_like(b, a)
    else:
        raise TypeError("select: a or b must be a SharedArray (for two public values use cond * (a - b) + b)")
    if cond.shape != a.shape:
        raise ValueError(f"select: condition shape {cond.shape} differs from operand shape {a.shape}")
    prod = beaver.products(ctx, [("mul", cond, a - b)])[0]
    return SharedArray(ctx, field.add(prod.share, b.share), a.frac)


def minimum(a: SharedArray, b: SharedArray, bits: int | None = None) -> SharedArray:
    """Elementwise min(a, b); 9 rounds (comparison, then select)."""
    return select(less_than(a, b, bits), a, b)


def maximum(a: SharedArray, b: SharedArray, bits: int | None = None) -> SharedArray:
    """Elementwise max(a, b); 9 rounds."""
    return select(less_than(a, b, bits), b, a)


def _reduce(x: SharedArray, axis: int, take_max: bool, bits) -> SharedArray:
    ctx = x.ctx
    axis = axis % x.ndim
    moved = np.moveaxis(x.share, axis, 0)
    cur = SharedArray(ctx, np.ascontiguousarray(moved), x.frac)
    while cur.shape[0] > 1:
        half = cur.shape[0] // 2
        lo, hi = cur[:half], cur[half:2 * half]
        rest = cur[2 * half:] if cur.shape[0] % 2 else None
        lt = less_than(lo, hi, bits)
        best = select(lt, hi, lo) if take_max else select(lt, lo, hi)
        cur = best if rest is None else _concat0(best, rest)
    return SharedArray(ctx, np.ascontiguousarray(cur.share[0]), cur.frac)


def _concat0(a: SharedArray, b: SharedArray) -> SharedArray:
    return concatenate([a, b], axis=0)


def min_along(x: SharedArray, axis: int = -1, bits: int | None = None) -> SharedArray:
    """Minimum over one axis (a tournament): 9 ceil(log2 len) rounds; len - 1
    comparisons per reduced vector."""
    return _reduce(x, axis, False, bits)


def max_along(x: SharedArray, axis: int = -1, bits: int | None = None) -> SharedArray:
    """Maximum over one axis: 9 ceil(log2 len) rounds."""
    return _reduce(x, axis, True, bits)


# ============================================================ leading one, normalisation

@dataclass
class LeadingOne:
    """Where the leading one of a value is, in arithmetic form (see leading_one).

    Attributes
    ----------
    n : int
    negative : field array (n,)
        Additive shares of [x < 0].
    tables : list of (lo, hi)
        Per requested table T: lo (8, n) and hi (8, n) additive shares of the
        one-hot vectors of T[j] mod 8 and T[j] div 8, j the leading-one position.
    """

    n: int
    negative: np.ndarray
    tables: list

    def nonzero(self, table: int = 0) -> np.ndarray:
        """Shares of [a leading one exists and the table has an entry for it]."""
        return field.sum(self.tables[table][0], axis=0)

    def value(self, table: int = 0) -> np.ndarray:
        """Shares of T[j] (0 when the table has no entry, or no leading one)."""
        lo, hi = self.tables[table]
        total = field.zeros((self.n,))
        for a in range(1, 8):
            total = field.add(total, field.mul_scalar(lo[a], a))
            total = field.add(total, field.mul_scalar(hi[a], 8 * a))
        return total

    def combine(self, table: int, lo_weights, hi_weights):
        """Shares of sum_a lo_a w_lo[a] and sum_b hi_b w_hi[b] (field constants)."""
        lo, hi = self.tables[table]
        out = []
        for onehot, weights in ((lo, lo_weights), (hi, hi_weights)):
            total = field.zeros((self.n,))
            for a, wt in enumerate(weights):
                if wt:
                    total = field.add(total, field.mul_scalar(onehot[a], int(wt)))
            out.append(total)
        return out


@dataclass
class LeadingBits:
    """XOR-shared planes locating the leading one (see leading_one_planes).

    Attributes
    ----------
    n : int
    negative : uint64 (W,)
        [x < 0].
    onehot : uint64 (w, W), w = bits - 1
        v_j = [the leading one of z = |x| - [x<0] is bit j].
    none_from : uint64 (w + 1, W)
        N_i = [z has no one at bits >= i] (N_0 = [z = 0], N_w = 1).
    """

    n: int
    negative: np.ndarray
    onehot: np.ndarray
    none_from: np.ndarray


def leading_one_planes(ctx, shares, bits=None, extra_prefetch=None) -> list:
    """Steps 1-3 of leading_one for several flat arrays, in the same rounds.

    `bits` is one bound for all (default params.k) or a list, one per share;
    `extra_prefetch()` may request the caller's later tuples together with
    these (before the first opening).

    Protocol (1 + 2 ceil(log2(bits - 1)) rounds, 13 for bits = 56):

    1. masked openings (1 round);
    2. borrows of (c - r) mod 2^bits at every position (ceil(log2(bits-1))
       rounds): y = x + 2^(bits-1) bit by bit, neg = NOT y_{bits-1};
    3. z = y_low XOR neg (= |x| - neg, local); suffix ANDs N_i of NOT z from
       the top (ceil(log2(bits - 1)) rounds); v_j = N_j XOR N_{j+1}."""
    shares = [np.ascontiguousarray(sh).reshape(-1, field.LIMBS) for sh in shares]
    Bs = list(bits) if isinstance(bits, (list, tuple)) else [_bound(ctx, bits)] * len(shares)
    if any(B > 65 for B in Bs):
        raise ValueError(f"leading_one: bits must be <= 65, got {Bs}")
    pre = {}

    def prefetch():
        widths = [n_words(sh.shape[0]) for sh in shares]
        pre["borrows"] = request_and_gates(ctx, [gate_counts(decompose_plan(B, tuple(range(1, B)))) for B in Bs],
                                           widths)
        pre["suffix"] = request_and_gates(ctx, [gate_counts(_suffix_plan(B - 1)) for B in Bs], widths)
        if extra_prefetch is not None:
            extra_prefetch()

    openings = open_masked(ctx, [(sh, B, B) for sh, B in zip(shares, Bs)], prefetch)    # step 1
    decs = [DecomposeCircuit(ctx, m, tuple(range(1, m.B))) for m in openings]
    run_circuits(ctx, [d.circuit for d in decs], pre["borrows"])                        # step 2
    negs, suffixes = [], []
    for dec, B in zip(decs, Bs):                                                        # step 3
        w = B - 1
        neg = _not(ctx, dec.bit(B - 1))
        z = np.stack([dec.bit(i) ^ neg for i in range(w)])
        negs.append(neg)
        suffixes.append(Circuit(_not(ctx, z), list(_suffix_plan(w))))
    run_circuits(ctx, suffixes, pre["suffix"])
    out = []
    for m, neg, suf in zip(openings, negs, suffixes):
        w = m.B - 1
        none_from = np.empty((w + 1, suf.registers.shape[1]), dtype=np.uint64)
        none_from[:w] = suf.registers
        none_from[w] = _ALL if ctx.leads else 0
        out.append(LeadingBits(m.n, neg, suf.registers ^ none_from[1:], none_from))
    return out


def table_planes(lead: LeadingBits, table) -> np.ndarray:
    """One-hot halves of a public table at the leading one, XOR-shared (local).

    table[j] in [0, 63] or None for a leading one at bit j; returns (16, W):
    rows 0..7 the one-hot of T[j] mod 8, rows 8..15 of T[j] div 8 (all zero
    when z = 0 or T[j] is None)."""
    out = np.zeros((16, lead.onehot.shape[1]), dtype=np.uint64)
    for j, v in enumerate(table):
        if v is not None:
            out[v % 8] ^= lead.onehot[j]
            out[8 + v // 8] ^= lead.onehot[j]
    return out


def leading_one(ctx, share: np.ndarray, tables, bits: int | None = None) -> LeadingOne:
    """Locate the leading one of |x| - [x < 0] and look it up in public tables.

    Parameters
    ----------
    share : field array (n,)
        This node's share of integers x with |x| < 2^(bits-1).
    tables : list of sequences of length bits - 1
        T[j] in [0, 63] or None, for a leading one at bit j (so
        2^j <= |x| - [x<0] < 2^(j+1)).  None entries (and z = 0) give all-zero
        one-hot vectors.
    bits : int, optional
        Default params.k; at most 65.

    Protocol (14 rounds for bits = 56): leading_one_planes (13 rounds); the
    one-hot halves of each table, lo_a = XOR of v_j with T[j] mod 8 = a and
    hi_b likewise (local); neg and every lo/hi vector to field elements
    (1 round).  Nothing is revealed (only masked values and masked bits are
    opened)."""
    B = _bound(ctx, bits)
    for t in tables:
        if len(t) != B - 1 or any(v is not None and not 0 <= v < 64 for v in t):
            raise ValueError(f"leading_one: each table needs {B - 1} entries in [0, 63] or None")
    n = np.asarray(share).reshape(-1, field.LIMBS).shape[0]
    pre = {}
    lead = leading_one_planes(ctx, [share], B,
                              lambda: pre.setdefault("dabits", request_dabits(ctx, 1 + 16 * len(tables), n)))[0]
    planes = np.concatenate([lead.negative[None]] + [table_planes(lead, t) for t in tables])
    arith = bits_to_field(ctx, planes, lead.n, pre["dabits"])
    return LeadingOne(lead.n, arith[0], [(arith[1 + 16 * i:9 + 16 * i], arith[9 + 16 * i:17 + 16 * i])
                                         for i in range(len(tables))])


def _pow2_weights():
    return [1 << a for a in range(8)], [1 << (8 * b) for b in range(8)]


@dataclass(frozen=True)
class Normalised:
    """x = (-1)^negative * mantissa * 2^exponent (see normalise).

    Attributes
    ----------
    mantissa : SharedArray, frac `frac`
        |x| 2^-exponent rounded to `frac` bits (within one unit, so it can
        round up to 1.0): in [0.5, 1) for x > 0; in (0.5, 1] for x < 0, where
        the scale comes from |x| - 2^-frac (two's complement, no carry chain),
        so a negative power of two gives exactly 1; 0 for x = 0.
    exponent : SharedArray (integer)
        The bit length of |X| (of |X| - 1 for x < 0, X the encoding) minus
        x's frac; 0 for x = 0.
    scale : SharedArray (integer)
        2^(bits - 1 - exponent - x.frac): the exact factor with
        mantissa 2^(bits-1) = |X| scale before rounding (X the encoding).
    negative : SharedArray (0/1 integer)
    """

    mantissa: SharedArray
    exponent: SharedArray
    scale: SharedArray
    negative: SharedArray


def normalise(x: SharedArray, frac: int | None = None, bits: int | None = None) -> Normalised:
    """Scale |x| into [0.5, 1) securely and return the scale (see Normalised).

    Parameters
    ----------
    x : SharedArray, |x 2^x.frac| < 2^(bits-1)
    frac : int, optional
        Fractional bits of the mantissa (default params.f).
    bits : int, optional
        Default params.k (at most 64).

    Protocol (17 rounds): leading_one of 2x (so that x = -2^-frac still has
    one: 2|X| - [x<0] > 0) with the table T[j] = bits - 1 - j, 14 rounds;
    scale = lo . hi and |x| = x (1 - 2 neg) (one round of products);
    mantissa = |x| scale (one round), rounded to `frac` bits (one round).
    Exact up to that rounding.  Tuples per element: 413 AND gates,
    17 daBits, 1 rbits, 3 Beaver products, 1 truncation pair (bits = 56)."""
    ctx = x.ctx
    B = _bound(ctx, bits)
    K = B - 1
    frac = ctx.params.f if frac is None else frac
    if x.size == 0:
        z = field.zeros(x.shape)
        return Normalised(SharedArray(ctx, z, frac), *(SharedArray(ctx, z.copy(), 0) for _ in range(3)))
    flat = _flat_share(x)
    lead = leading_one(ctx, field.add(flat, flat), [[B - 1 - j for j in range(B)]], B + 1)
    lo, hi = lead.combine(0, *_pow2_weights())
    neg = SharedArray(ctx, lead.negative, 0)
    X = SharedArray(ctx, flat, 0)
    scale, absx = beaver.products(ctx, [("mul", SharedArray(ctx, lo, 0), SharedArray(ctx, hi, 0)),
                                        ("mul", X, 1 - neg * 2)])
    m_int = beaver.products(ctx, [("mul", absx, scale)])[0]            # m 2^K exactly
    if K > frac:
        m = truncate_many(ctx, [m_int], [K - frac], [K + 2])[0]
    else:
        m = m_int.mul_pow2(frac - K)
    nz = lead.nonzero()
    # L = bit length of 2|x| - neg = B - T[j] where there is a one; exponent = L - 1 - x.frac
    exponent = field.sub(field.mul_scalar(nz, B - 1 - x.frac), lead.value())
    shape = x.shape
    return Normalised(_as_shared(ctx, m.share, shape, frac), _as_shared(ctx, exponent, shape),
                      _as_shared(ctx, scale.share, shape), _as_shared(ctx, neg.share, shape))
