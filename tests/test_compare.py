"""Tests of mpc.compare: exact comparisons, equality, sign, select, min/max,
bit machinery (prefix networks, bit planes, the new tuple kinds) and
normalisation.

Multi-party tests run dealer + nodes as threads (parties.harness.run_threads)
except a few that run real processes over CurveZMQ.  Inputs are split into
proper additive shares (seeded pads; the leading node holds value - pads),
and results are revealed to the nodes only to compare them with numpy on the
encoded inputs: comparisons must be exact, ties included.
"""
from __future__ import annotations

import numpy as np
import pytest

from mpc import compare, field
from mpc.errors import InputError, ProtocolError
from mpc.compare import plan_and_prefix, plan_borrows
from mpc.params import Params
from mpc.prg import Prg, new_seed
from mpc.reveal import reveal
from mpc.shared import SharedArray
from mpc.triples import (DEALER, KINDS, DealerEngine, MaskSpec, _component_share, bit_mask_spec, mask_share,
                         n_words, pack_bits, planes_to_field, planes_to_words, unpack_bits, words_to_planes)
from parties.harness import run_processes, run_threads

F = Params().f
ULP = 2.0 ** -F
TOP = 2.0 ** (Params().k - 1 - F)            # |x| < TOP
POLICY = {"t": ["nodes"]}


# ----------------------------------------------------------------- helpers (run on every node)

def shared(ctx, values, frac=F, label="x") -> SharedArray:
    """A proper additive sharing of public test values: seeded pads on nodes
    1..n-1, value minus the pads on node 0.  Integer arrays are taken as
    encodings when frac == 0."""
    values = np.asarray(values)
    enc = field.from_int(values.astype(np.int64)) if frac == 0 else field.encode_fixed(values, ctx.params, frac)
    pads = [Prg(b"test-compare-pad", f"{label}/{i}").field(values.shape) for i in range(1, ctx.n)]
    if ctx.index == 0:
        share = enc
        for pad in pads:
            share = field.sub(share, pad)
    else:
        share = pads[ctx.index - 1]
    return SharedArray(ctx, share, frac)


def encoded(values, frac=F):
    return np.round(np.asarray(values, dtype=np.float64) * 2.0 ** frac) / 2.0 ** frac


def edge_values():
    """Ends of the range, zero, the smallest units, ties."""
    return np.array([0.0, ULP, -ULP, 2 * ULP, -2 * ULP, 1.0, -1.0, 0.5, -0.5,
                     TOP - 2.0 ** -24, -(TOP - 2.0 ** -24), TOP / 2, -TOP / 2, 1e-3, -1e-3])


# ----------------------------------------------------------------- pure parts

@pytest.mark.parametrize("w", [1, 2, 3, 7, 8, 13, 55, 64, 80])
def test_borrow_network_matches_sequential_prefix(w):
    rng = np.random.default_rng(w)
    r = rng.integers(0, 2, (w, 200)).astype(bool)
    c = rng.integers(0, 2, (w, 200)).astype(bool)
    g, p = r & ~c, ~(r ^ c)
    # sequential borrows: b_{i+1} = g_i | (p_i & b_i)
    seq, b = [], np.zeros(200, dtype=bool)
    for i in range(w):
        b = g[i] | (p[i] & b)
        seq.append(b.copy())
    for outputs in (list(range(w)), [w - 1], [0, w // 2, w - 1]):
        regs = np.concatenate([g, p]).copy()
        for lv in plan_borrows(w, outputs):
            z = regs[lv.x] & regs[lv.y]
            regs[lv.dst[lv.xor]] ^= z[lv.xor]
            regs[lv.dst[~lv.xor]] = z[~lv.xor]
        for i in outputs:
            assert np.array_equal(regs[i], seq[i]), (w, i)
    assert len(plan_borrows(w, [w - 1])) == (int(np.ceil(np.log2(w))) if w > 1 else 0)


@pytest.mark.parametrize("w", [1, 5, 55, 64])
def test_and_prefix_network(w):
    rng = np.random.default_rng(w)
    bits = rng.integers(0, 4, (w, 300)) > 0
    for reverse in (False, True):
        regs = bits.copy()
        for lv in plan_and_prefix(w, range(w), reverse=reverse):
            regs[lv.dst] = regs[lv.x] & regs[lv.y]
        for i in range(w):
            expect = bits[i:].all(axis=0) if reverse else bits[:i + 1].all(axis=0)
            assert np.array_equal(regs[i], expect)


def test_bit_planes_round_trip():
    from mpc._kernels import bits as kernels
    for n in (1, 63, 64, 65, 1000):
        v = np.random.default_rng(n).integers(0, 2**64, n, dtype=np.uint64)
        ref = np.zeros((64, n_words(n)), dtype=np.uint64)
        kernels.to_planes(v, 64, ref)
        planes = words_to_planes(v)
        assert np.array_equal(planes, ref)
        assert np.array_equal(planes_to_words(planes[:37], n), v & np.uint64(2**37 - 1))
        b = unpack_bits(planes, n)
        assert np.array_equal(pack_bits(b), planes)
    wide = np.zeros((70, 1), dtype=np.uint64)
    wide[69, 0] = 1
    wide[0, 0] = 3
    assert list(field.to_ints(planes_to_field(wide, 2))) == [1 + (1 << 69), 1]
    c = field.from_ints([(1 << 100) + 5, 7])
    pl = compare.public_planes(c, 0, 101)
    assert unpack_bits(pl[100], 2).tolist() == [1, 0] and unpack_bits(pl[0], 2).tolist() == [1, 1]


def test_bit_mask_specs_travel_and_rebuild_by_xor():
    spec = bit_mask_spec("job/1and/ab", (2, 5))
    assert MaskSpec.from_wire(spec.to_wire()) == spec
    field_spec = MaskSpec(DEALER, "m", (3, 4))
    assert len(field_spec.to_wire()) == 6 and MaskSpec.from_wire(field_spec.to_wire()) == field_spec
    seeds = [new_seed() for _ in range(3)]
    engine = DealerEngine(3, {DEALER: seeds})
    total = mask_share(seeds[0], spec) ^ mask_share(seeds[1], spec) ^ mask_share(seeds[2], spec)
    assert np.array_equal(engine.rebuild(spec), total)


@pytest.mark.parametrize("n_nodes", [2, 3, 4, 5])
def test_narrow_masks_keep_x_exact_and_fit_int64(n_nodes):
    """A narrow mask (MaskSpec.width): d = x - Σ a_i is an int64 for 0/1 x, the
    nodes' shares a_i (+ d on one) add up to x in the field, the spec travels,
    and the dealer rebuilds the same mask (for products with the matrix)."""
    from parties.provider import _mask
    from mpc.triples import narrow_mask_width

    w = narrow_mask_width(n_nodes)
    assert n_nodes * 2 ** w <= 2 ** 63 < n_nodes * 2 ** (w + 1)
    seeds = [new_seed() for _ in range(n_nodes)]
    x = (np.random.default_rng(n_nodes).random((7, 5)) < 0.4).astype(np.int64)
    d = _mask(x, seeds, "sub/geno/missing/0")
    assert d.dtype == np.int64 and d.max() <= 1 and d.min() > -(n_nodes << w)
    spec = MaskSpec("sub", "sub/geno/missing/0", (7, 5), width=w)
    wire = spec.to_wire()
    assert len(wire) == 10 and MaskSpec.from_wire(wire) == spec
    total = field.from_int(d)
    for s in seeds:
        total = field.add(total, mask_share(s, spec))
    assert np.array_equal(field.to_int64(total), x)
    engine = DealerEngine(n_nodes, {"sub": seeds})
    assert np.array_equal(field.add(engine.rebuild(spec), field.from_int(d)), field.from_int(x))
    sel = spec.select(rows=np.array([1, 0, 1, 1, 0, 0, 1], bool)).T()       # selections compose
    part = field.from_int(d[[0, 2, 3, 6]].T.copy())
    for s in seeds:
        part = field.add(part, mask_share(s, sel))
    assert np.array_equal(field.to_int64(part), x[[0, 2, 3, 6]].T)
    # The shares look uniform on [0, 2^w): top bit set about half the time.
    big = np.concatenate([mask_share(s, MaskSpec("sub", "big", (4000,), width=w))[:, 0] for s in seeds])
    assert np.all(big < np.uint64(2 ** w)) and 0.45 < np.mean(big >> np.uint64(w - 1)) < 0.55
    with pytest.raises(ProtocolError):
        MaskSpec.from_wire(wire[:9] + [63])
    with pytest.raises(InputError):
        _mask(x * 2, seeds, "sub/geno/het/0")


@pytest.mark.parametrize("n_nodes", [2, 3])
def test_new_tuple_kinds_reconstruct(n_nodes):
    """and, dabit, rbits: the dealer's corrections make every relation hold."""
    seeds = [new_seed() for _ in range(n_nodes)]
    engine = DealerEngine(n_nodes, {DEALER: seeds})
    prg = Prg(new_seed(), "private")

    def shares(req):
        out = {}
        for tag, value, is_field in engine.corrections(req, prg):
            comp = tag.rsplit("/", 1)[1]
            typ = "field" if is_field else "bits"
            parts = [_component_share(seeds[i], req["label"], comp, typ, value.shape[:-1] if is_field
                                      else value.shape) for i in range(n_nodes - 1)] + [value]
            if is_field:
                total = parts[0]
                for p_ in parts[1:]:
                    total = field.add(total, p_)
            else:
                total = np.bitwise_xor.reduce(parts)
            out[comp] = total
        return out

    def bits_of(label, shape):
        spec = bit_mask_spec(label, shape)
        return np.bitwise_xor.reduce([mask_share(s, spec) for s in seeds])

    c = shares({"kind": "and", "label": "L1", "n_words": 9})["c"]
    ab = bits_of("L1/ab", (2, 9))
    assert np.array_equal(c, ab[0] & ab[1])
    rho = shares({"kind": "dabit", "label": "L2", "g": 3, "n": 100})["rho"]
    assert np.array_equal(field.to_int64(rho), unpack_bits(bits_of("L2/x", (3, 2)), 100))
    r = shares({"kind": "rbits", "label": "L3", "n": 70, "width": 70})["r"]
    planes = bits_of("L3/x", (70, 2))
    ints = field.to_ints(r)
    for e in range(70):
        assert ints[e] == sum(int(unpack_bits(planes[j], 70)[e]) << j for j in range(70))
    for bad in ({"kind": "and", "label": "x", "n_words": 0}, {"kind": "rbits", "label": "x", "n": 3, "width": 127},
                {"kind": "dabit", "label": "x", "g": -1, "n": 3}):
        with pytest.raises(Exception):
            KINDS[bad["kind"]].check(bad)


# ----------------------------------------------------------------- comparisons (threads)

def _cmp_job(ctx, xv, yv, thresholds):
    x, y = shared(ctx, xv, label="x"), shared(ctx, yv, label="y")
    lt_pub = compare.less_than_public(x, thresholds + [yv])     # the last: a per-element public threshold
    out = [compare.ltz(x), compare.is_positive(x), compare.less_than(x, y), compare.greater_than(x, y),
           compare.less_equal(x, y), compare.greater_equal(x, y), compare.eqz(x), compare.equal(x, y),
           compare.sign(x), compare.greater_than_public(x, 0.5)] + lt_pub
    return reveal(ctx, out, "t")


@pytest.mark.parametrize("n_nodes", [2, 3])
def test_comparisons_exact_with_ties_and_range_ends(n_nodes):
    rng = np.random.default_rng(n_nodes)
    edges = edge_values()
    xv = np.concatenate([edges, rng.uniform(-1000, 1000, 300), rng.uniform(-TOP, TOP, 100) * 0.999])
    yv = np.concatenate([edges[::-1], rng.uniform(-1000, 1000, 300), rng.uniform(-TOP, TOP, 100) * 0.999])
    yv[20:60] = xv[20:60]                               # exact ties
    xv[60:70] = 0.5                                     # ties with a public threshold
    xe, ye = encoded(xv), encoded(yv)
    thresholds = [0.5, -1.25, 1.0 / 3.0, 0.0]          # 1/3 is between grid points
    res = run_threads(n_nodes, _cmp_job, (xv, yv, thresholds), policy=POLICY)[0]
    ltz, pos, lt, gt, le, ge, eq0, eq, sgn, gt_half = res[:10]
    assert np.array_equal(ltz, xe < 0)
    assert np.array_equal(pos, xe > 0)
    assert np.array_equal(lt, xe < ye) and np.array_equal(gt, xe > ye)
    assert np.array_equal(le, xe <= ye) and np.array_equal(ge, xe >= ye)
    assert np.array_equal(eq0, xe == 0) and np.array_equal(eq, xe == ye)
    assert np.array_equal(sgn, np.sign(xe))
    assert np.array_equal(gt_half, xe > 0.5)
    for t, got in zip(thresholds + [yv], res[10:]):
        assert np.array_equal(got, xe < t)
    assert ltz.dtype == np.int64 and set(np.unique(ltz)) <= {0, 1}


def _int_job(ctx, xv, yv, bits):
    x, y = shared(ctx, xv, 0, "x"), shared(ctx, yv, 0, "y")
    return reveal(ctx, [compare.ltz(x, bits), compare.less_than(x, y, bits), compare.eqz(x, bits)]
                  + compare.less_than_public(x, [3, -(2**60)], bits), "t")


def test_wide_integer_comparisons():
    """bits > k: integer counts far beyond the fixed-point range (up to 2^62 here)."""
    rng = np.random.default_rng(11)
    xv = rng.integers(-2**62, 2**62, 200)
    yv = rng.integers(-2**62, 2**62, 200)
    xv[:6] = [0, 1, -1, 3, 2**62 - 1, -(2**62)]
    yv[:6] = [0, 1, 0, 3, 2**62 - 1, -(2**62)]
    lt0, lt, eq0, l3, lbig = run_threads(3, _int_job, (xv, yv, 64), policy=POLICY)[0]
    assert np.array_equal(lt0, xv < 0) and np.array_equal(lt, xv < yv) and np.array_equal(eq0, xv == 0)
    assert np.array_equal(l3, xv < 3) and np.array_equal(lbig, xv < -(2**60))


def _select_job(ctx, xv, yv, matrix):
    x, y = shared(ctx, xv, label="x"), shared(ctx, yv, label="y")
    c = compare.less_than(x, y)
    M = shared(ctx, matrix, label="M")
    ints = shared(ctx, np.arange(len(xv)) - 3, 0, "i")
    return reveal(ctx, [compare.select(c, x, y), compare.select(c, 2.5, y), compare.select(c, x, -1.0),
                        compare.minimum(x, y), compare.maximum(x, y), compare.min_along(M, axis=1),
                        compare.max_along(M, axis=0), compare.max_along(ints.reshape(len(xv), 1), 0),
                        compare.select(c, ints, 7)], "t")


def test_select_min_max():
    rng = np.random.default_rng(3)
    xv = rng.uniform(-50, 50, 40)
    yv = rng.uniform(-50, 50, 40)
    yv[:10] = xv[:10]
    matrix = rng.uniform(-TOP, TOP, (9, 7)) * 0.99
    matrix[2] = 1.5                                      # all ties in one row
    matrix[:, 3] = -TOP * 0.99
    xe, ye, me = encoded(xv), encoded(yv), encoded(matrix)
    sel, sel_pub, sel_pub2, mn, mx, row_min, col_max, imax, isel = run_threads(
        3, _select_job, (xv, yv, matrix), policy=POLICY)[0]
    c = xe < ye
    assert np.array_equal(sel, np.where(c, xe, ye))
    assert np.array_equal(sel_pub, np.where(c, 2.5, ye)) and np.array_equal(sel_pub2, np.where(c, xe, -1.0))
    assert np.array_equal(mn, np.minimum(xe, ye)) and np.array_equal(mx, np.maximum(xe, ye))
    assert np.array_equal(row_min, me.min(axis=1)) and np.array_equal(col_max, me.max(axis=0))
    assert imax.tolist() == [len(xv) - 4]
    assert np.array_equal(isel, np.where(c, np.arange(len(xv)) - 3, 7))


def _rounds_job(ctx, xv):
    x = shared(ctx, xv)
    out = {}
    for name, fn in (("ltz", lambda: compare.ltz(x)), ("eqz", lambda: compare.eqz(x)),
                     ("sign", lambda: compare.sign(x)),
                     ("thresholds", lambda: compare.less_than_public(x, [0.1, 0.2, 0.3, 0.4])),
                     ("many", lambda: compare.ltz_many(ctx, [x, x[:5], x.reshape(2, -1)])),
                     ("select", lambda: compare.minimum(x, x * 2))):
        with ctx.phase(name):
            fn()
            ctx.tuples.flush()
        out[name] = ctx.channel.stats.phases[name].rounds
    return out


def test_rounds_are_logarithmic():
    """8 rounds for k = 56 (1 opening + 6 AND levels + 1 bit conversion),
    whatever the number of thresholds or arrays batched together."""
    rounds = run_threads(3, _rounds_job, (np.linspace(-5, 5, 100),))[0]
    assert rounds["ltz"] == rounds["eqz"] == rounds["sign"] == 8
    assert rounds["thresholds"] == 8 and rounds["many"] == 8
    assert rounds["select"] == 8 + 1


def _normalise_job(ctx, xv):
    x = shared(ctx, xv)
    nm = compare.normalise(x, frac=40)
    return reveal(ctx, [nm.mantissa, nm.exponent, nm.scale, nm.negative], "t")


def test_normalise_scales_into_half_open_unit_interval():
    rng = np.random.default_rng(5)
    xv = np.concatenate([[0.0, ULP, 2 * ULP, 3 * ULP, 1.0, 0.75, TOP - 2.0 ** -24, -1.0, -0.75, -ULP],
                         2.0 ** rng.uniform(-28, 26.9, 200)])
    xe = encoded(xv)
    m, e, scale, neg = run_threads(3, _normalise_job, (xv,), policy=POLICY)[0]
    K = Params().k - 1
    X = [int(v) for v in np.round(np.abs(xe) * 2.0 ** F)]
    nz = xe != 0
    assert m[0] == 0 and e[0] == 0 and scale[0] == 0
    for i in np.flatnonzero(nz):
        exact = X[i] * int(scale[i])            # |X| 2^(K-L): [2^(K-1), 2^K) for x > 0, (.., 2^K] for x < 0
        assert 2**(K - 1) <= exact < 2**K or (xe[i] < 0 and exact == 2**K)
        assert abs(m[i] - exact / 2.0**K) <= 2.0 ** -40          # rounded to 40 bits, within one unit
        assert abs(xe[i]) == exact / 2.0**K * 2.0 ** e[i]         # |x| = mantissa 2^exponent, exactly
    assert np.all((m[nz] >= 0.5) & (m[nz] <= 1.0))
    assert np.array_equal(neg, (xe < 0).astype(np.int64))


# ----------------------------------------------------------------- real processes

def _process_job(ctx, xv, yv):
    x, y = shared(ctx, xv, label="x"), shared(ctx, yv, label="y")
    return reveal(ctx, [compare.ltz(x), compare.less_than(x, y), compare.sign(x)], "t")


@pytest.mark.parametrize("n_nodes", [2, 3, 5])
def test_comparisons_as_processes(n_nodes):
    rng = np.random.default_rng(21)
    xv = np.concatenate([edge_values(), rng.uniform(-1e5, 1e5, 3000)])
    yv = xv.copy()
    yv[len(edge_values()):] = rng.uniform(-1e5, 1e5, 3000)
    xe, ye = encoded(xv), encoded(yv)
    for res in run_processes(n_nodes, _process_job, (xv, yv), policy=POLICY, timeout=120):
        lt0, lt, sgn = res
        assert np.array_equal(lt0, xe < 0) and np.array_equal(lt, xe < ye) and np.array_equal(sgn, np.sign(xe))
