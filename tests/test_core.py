"""Multi-process tests of the core: Beaver products, masked-operand reuse,
truncation, the reveal policy, what a node sees, and a peer killed mid-protocol.

Every test here runs the dealer and n computation nodes as separate processes
talking ZeroMQ over CurveZMQ on loopback (parties.harness.run_processes).
Inputs are split into additive shares with seeds every node can derive, so no
node starts with a trivial sharing; results come back as shares and are
reconstructed here, then compared with plain Python integers (exact in the
field) or with the exact floor of the fixed-point product (truncation: the
result is floor(x y / 2^f) or one more, never anything else).
"""
from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import re
import signal
import threading
import time

import numpy as np
import pytest
from scipy.stats import chisquare, kstest

from mpc import beaver, field, sharing
from mpc.errors import PolicyError
from mpc.params import P, Params
from mpc.prg import Prg
from mpc.reveal import output, reveal
from mpc.shared import SharedArray
from parties.harness import ChildError, run_processes

PARAMS = Params()
F = PARAMS.f
HI_ALL_ONES = np.uint64(2**63 - 1)


# ----------------------------------------------------------------- inputs (same on every party)

def inputs() -> dict:
    """Public test inputs, regenerated identically by the test and by every node."""
    rng = np.random.default_rng(20240611)
    prg = lambda label, shape: Prg(b"test-inputs-0001", label).field(shape)  # noqa: E731
    return {
        # uniform over the whole field: exact products checked with Python ints
        "x": prg("x", (257,)), "y": prg("y", (257,)), "u": prg("u", (64,)),
        "A": prg("A", (13, 9)), "B": prg("B", (9, 5)),
        # genotype-like matrix and small weights: exact in int64 as well
        "G": rng.integers(-2**20, 2**20, (1000, 200)),
        "W": rng.integers(-2**20, 2**20, (200, 8)),
        "W2": rng.integers(-2**20, 2**20, (200, 8)),
        "V": rng.integers(-2**20, 2**20, (1000, 3)),
        # fixed-point reals
        "fx": rng.uniform(-100, 100, 2000), "fy": rng.uniform(-100, 100, 2000),
        "fA": rng.uniform(-3, 3, (20, 30)), "fB": rng.uniform(-3, 3, (30, 4)),
        "small": rng.integers(-1000, 1000, 50),
    }


def secret(ctx, values: np.ndarray, label: str, frac: int = 0) -> SharedArray:
    """This node's additive share of a field array (shares 0..n-2 from seeds)."""
    seeds = [hashlib.blake2b(f"{label}/{i}".encode(), digest_size=16).digest() for i in range(ctx.n - 1)]
    if ctx.index < ctx.n - 1:
        share = Prg(seeds[ctx.index], label).field(field.shape_of(values))
    else:
        share = sharing.share(values, ctx.n, label, seeds)[0][-1]
    return SharedArray(ctx, share, frac)


def secret_int(ctx, values, label):
    return secret(ctx, field.from_int(values), label)


def secret_real(ctx, values, label):
    return secret(ctx, field.encode_fixed(values, ctx.params, ctx.params.f), label, ctx.params.f)


def phase_traffic(ctx, name):
    return vars(ctx.channel.stats.phases[name]).copy()


# ----------------------------------------------------------------- the job run on every node

def core_job(ctx):
    data = inputs()
    out, traffic = {}, {}
    x, y, u = (secret(ctx, data[k], k) for k in ("x", "y", "u"))
    A, B = secret(ctx, data["A"], "A"), secret(ctx, data["B"], "B")

    # one batch, one round: elementwise product, square, matrix product
    with ctx.phase("batch"):
        out["xy"], out["uu"], out["AB"] = (z.share for z in beaver.products(
            ctx, [("mul", x, y), ("square", u, None), ("matmul", A, B)]))
    traffic["batch"] = phase_traffic(ctx, "batch")

    # x and y are masked now: the same product again costs no opening
    with ctx.phase("reuse"):
        out["xy_reuse"] = beaver.mul(x, y).share
        out["xx_reuse"] = beaver.square(x).share
        out["xy_mulmany"] = beaver.mul_many(ctx, [(x, y)])[0].share
    traffic["reuse"] = phase_traffic(ctx, "reuse")
    # ... and the same as with fresh, unmasked copies of the same shares
    out["xy_fresh"] = beaver.mul(SharedArray(ctx, x.share.copy()), SharedArray(ctx, y.share.copy())).share

    # a genotype-sized matrix product; G's opening is reused by later products
    G, W, W2, V = (secret_int(ctx, data[k], k) for k in ("G", "W", "W2", "V"))
    with ctx.phase("GW"):
        out["GW"] = beaver.matmul(G, W).share
    traffic["GW"] = phase_traffic(ctx, "GW")
    with ctx.phase("GW2"):
        out["GW2"] = beaver.matmul(G, W2).share      # opens only W2 - B
    traffic["GW2"] = phase_traffic(ctx, "GW2")
    with ctx.phase("GtV"):
        out["GtV"] = beaver.matmul(G.T, V).share     # the transposed mask, opens only V - B
    traffic["GtV"] = phase_traffic(ctx, "GtV")
    out["GW2_fresh"] = beaver.matmul(secret_int(ctx, data["G"], "G"), W2).share

    # fixed point with truncation: two rounds for the whole batch
    fx, fy = secret_real(ctx, data["fx"], "fx"), secret_real(ctx, data["fy"], "fy")
    fA, fB = secret_real(ctx, data["fA"], "fA"), secret_real(ctx, data["fB"], "fB")
    with ctx.phase("fixed"):
        zs = beaver.fixed_products(ctx, [("mul", fx, fy), ("square", fx, None), ("matmul", fA, fB)])
    traffic["fixed"] = phase_traffic(ctx, "fixed")
    out["fxy"], out["fxx"], out["fAB"] = (z.share for z in zs)
    frac = {name: z.frac for name, z in zip(("fxy", "fxx", "fAB"), zs)}
    out["fxy_single"] = beaver.fmul(fx, fy).share  # fx, fy masked: only the truncation round

    # the reveal policy
    small = secret_int(ctx, data["small"], "small")
    sq = beaver.square(small)
    revealed = reveal(ctx, [sq, small], "qc-mask")
    before = ctx.channel.stats.total().bytes_sent
    try:
        reveal(ctx, small, "genotypes")
        refused = None
    except PolicyError as exc:
        refused = str(exc)
    sent_after_refusal = ctx.channel.stats.total().bytes_sent - before
    output(ctx, sq, "result", column="sq")
    try:
        output(ctx, small, "qc-mask")
        refused_output = None
    except PolicyError as exc:
        refused_output = str(exc)
    return {"shares": out, "frac": frac, "traffic": traffic, "revealed": revealed,
            "refused": refused, "sent_after_refusal": sent_after_refusal,
            "refused_output": refused_output, "records": ctx.policy.records}


# ----------------------------------------------------------------- oracles

def ints(a: np.ndarray) -> np.ndarray:
    return field.to_ints(a)


def reconstruct(results, name):
    return sharing.reconstruct([r["shares"][name] for r in results])


def mat_mod(a, b):
    return np.array([[sum(int(a[i, k]) * int(b[k, j]) for k in range(a.shape[1])) % P
                      for j in range(b.shape[1])] for i in range(a.shape[0])], dtype=object)


def exact_fixed(values):
    return field.to_int64(field.encode_fixed(values, PARAMS, F)).astype(object)


def assert_truncated(result_share_sum, exact_wide):
    """result = floor(exact / 2^f) or floor(...) + 1, elementwise."""
    got = field.to_int64(result_share_sum).astype(object)
    floor = np.vectorize(lambda v: v >> F, otypes=[object])(exact_wide)
    diff = (got - floor).astype(np.int64)
    assert set(np.unique(diff)) <= {0, 1}, f"truncation errors {np.unique(diff)}"
    return diff


@pytest.fixture(scope="module", params=[2, 3, 5], ids=lambda n: f"{n}nodes")
def core_run(request):
    n = request.param
    policy = {"qc-mask": ["nodes"], "result": ["analyst"]}
    start = time.monotonic()
    full = run_processes(n, core_job, policy=policy, full=True, timeout=120)
    return n, full, time.monotonic() - start


def test_products_exact_in_the_field(core_run):
    n, full, _ = core_run
    results = [r["result"] for r in full[:n]]
    d = inputs()
    x, y, u = ints(d["x"]), ints(d["y"]), ints(d["u"])
    xy = (x * y) % P
    assert (ints(reconstruct(results, "xy")) == xy).all()
    assert (ints(reconstruct(results, "uu")) == (u * u) % P).all()
    assert (ints(reconstruct(results, "AB")) == mat_mod(ints(d["A"]), ints(d["B"]))).all()
    for name in ("xy_reuse", "xy_mulmany", "xy_fresh"):
        assert (ints(reconstruct(results, name)) == xy).all(), name
    assert (ints(reconstruct(results, "xx_reuse")) == (x * x) % P).all()


def test_genotype_sized_matrix_products(core_run):
    n, full, _ = core_run
    results = [r["result"] for r in full[:n]]
    d = inputs()
    G = d["G"]
    assert reconstruct(results, "GW").shape == (1000, 8, 2)
    np.testing.assert_array_equal(field.to_int64(reconstruct(results, "GW")), G @ d["W"])
    np.testing.assert_array_equal(field.to_int64(reconstruct(results, "GW2")), G @ d["W2"])
    np.testing.assert_array_equal(field.to_int64(reconstruct(results, "GW2_fresh")), G @ d["W2"])
    np.testing.assert_array_equal(field.to_int64(reconstruct(results, "GtV")), G.T @ d["V"])


def test_rounds_and_bytes(core_run):
    n, full, _ = core_run
    results = [r["result"] for r in full[:n]]
    for i, r in enumerate(results):
        t = r["traffic"]
        assert t["batch"]["rounds"] == 1, t["batch"]
        assert t["fixed"]["rounds"] == 2, t["fixed"]
        assert t["reuse"]["rounds"] == 0
        assert t["reuse"]["bytes_received"] == (3 * 257 * 16 if i == n - 1 else 0)  # corrections only
        # G (1000 x 200) is opened once; later products with it open only the small operand
        w_bytes = 200 * 8 * 16
        for ph in ("GW2", "GtV"):
            assert t[ph]["rounds"] == 1
        assert t["GW"]["bytes_received"] == (n - 1) * (1000 * 200 + 200 * 8) * 16 + \
            (1000 * 8 * 16 if i == n - 1 else 0)
        assert t["GW2"]["bytes_received"] == (n - 1) * w_bytes + (1000 * 8 * 16 if i == n - 1 else 0)
        assert t["GtV"]["bytes_received"] == (n - 1) * 1000 * 3 * 16 + (200 * 3 * 16 if i == n - 1 else 0)
        if i < n - 1:  # node n-1 also sends its tuple requests to the dealer
            assert t["reuse"]["bytes_sent"] == 0
            assert (n - 1) * w_bytes < t["GW2"]["bytes_sent"] < (n - 1) * (w_bytes + 200)
    # the dealer sends one field element per product element, to node n-1 only
    dealer = full[n]
    tuple_elements = (257 + 64 + 13 * 5) + 2 * 257 + 257 + 257 + 3 * 1000 * 8 + 200 * 3 \
        + (2000 + 2000 + 20 * 4) + 2 * (2000 + 2000 + 20 * 4) + 2000 + 2 * 2000 + 50
    assert dealer["elements"] == tuple_elements
    sent = sum(p["bytes_sent"] for p in dealer["traffic"].values())
    seeds = n * 16
    assert tuple_elements * 16 + seeds < sent < tuple_elements * 16 + seeds + 200 * dealer["tuples"] + 100 * n


def test_truncated_fixed_point_within_one_ulp(core_run):
    n, full, _ = core_run
    results = [r["result"] for r in full[:n]]
    d = inputs()
    assert results[0]["frac"] == {"fxy": F, "fxx": F, "fAB": F}
    ex, ey = exact_fixed(d["fx"]), exact_fixed(d["fy"])
    diffs = [assert_truncated(reconstruct(results, "fxy"), ex * ey),
             assert_truncated(reconstruct(results, "fxy_single"), ex * ey),
             assert_truncated(reconstruct(results, "fxx"), ex * ex)]
    eA, eB = exact_fixed(d["fA"]), exact_fixed(d["fB"])
    diffs.append(assert_truncated(reconstruct(results, "fAB"), eA.dot(eB)))
    both = np.concatenate([dd.ravel() for dd in diffs])
    assert 0.05 < both.mean() < 0.95  # the one-unit error is random, not a constant bias
    got = field.decode_fixed(reconstruct(results, "fxy"), F)
    np.testing.assert_allclose(got, d["fx"] * d["fy"], rtol=0, atol=2.0 ** -(F - 8))


def test_reveal_policy_and_analyst_output(core_run):
    n, full, _ = core_run
    results = [r["result"] for r in full[:n]]
    small = inputs()["small"]
    for r in results:
        np.testing.assert_array_equal(r["revealed"][0], small * small)
        np.testing.assert_array_equal(r["revealed"][1], small)
        assert "'genotypes'" in r["refused"] and "nodes" in r["refused"]
        assert r["sent_after_refusal"] == 0  # refused before a byte left
        assert "'qc-mask'" in r["refused_output"] and "analyst" in r["refused_output"]
        assert [(e["name"], e["shape"], e["to"]) for e in r["records"]] == \
            [("qc-mask", [50], "nodes"), ("qc-mask", [50], "nodes"), ("result", [50], "analyst")]
    # the analyst reconstructs the result from one share per node
    shares = []
    for node in full[:n]:
        (name, share, meta), = node["outputs"]
        assert name == "result" and meta == {"frac": 0, "column": "sq"}
        shares.append(share)
    np.testing.assert_array_equal(field.to_int64(sharing.reconstruct(shares)), small * small)


def test_core_run_time(core_run):
    n, _, seconds = core_run
    assert seconds < 40, f"{n} nodes took {seconds:.1f} s"


def batch_job(ctx):
    d = inputs()
    x, y, u = (secret(ctx, d[k], k) for k in ("x", "y", "u"))
    A, B = secret(ctx, d["A"], "A"), secret(ctx, d["B"], "B")
    with ctx.phase("batch"):
        zs = beaver.products(ctx, [("mul", x, y), ("square", u, None), ("matmul", A, B), ("mul", y, x)])
    return [z.share for z in zs], ctx.channel.stats.phases["batch"].rounds


def test_batched_opening_in_many_chunks(monkeypatch):
    """open_many sends every operand of a batch in one message per peer, as
    chunks pointing into the operands; here the chunks are tiny (threads)."""
    from mpc.net import frames
    from parties.harness import run_threads

    monkeypatch.setattr(frames, "CHUNK_BYTES", 256)
    results = run_threads(3, batch_job)
    d = inputs()
    x, y, u = ints(d["x"]), ints(d["y"]), ints(d["u"])
    shares = [sharing.reconstruct([r[0][i] for r in results]) for i in range(4)]
    assert (ints(shares[0]) == (x * y) % P).all() and (ints(shares[3]) == (x * y) % P).all()
    assert (ints(shares[1]) == (u * u) % P).all()
    assert (ints(shares[2]) == mat_mod(ints(d["A"]), ints(d["B"]))).all()
    assert all(r[1] == 1 for r in results)


# ----------------------------------------------------------------- a node's view

def view_job(ctx, n_elements):
    """Products of low-entropy secrets; record every array this node receives
    and every value it opens."""
    seen, opened = [], []
    deliver, open_many = ctx.channel._deliver, ctx.open_many

    def recording_deliver(sender, msg_frames):
        before = len(ctx.channel._inbox[sender])
        deliver(sender, msg_frames)
        if len(ctx.channel._inbox[sender]) > before:
            header, array = ctx.channel._inbox[sender][-1]
            if header.dtype == "f127":
                seen.append((sender, header.tag, np.array(array)))

    def recording_open_many(shares, tag="open"):
        values = open_many(shares, tag)
        opened.extend((tag, np.array(v)) for v in values)
        return values

    ctx.channel._deliver = recording_deliver
    ctx.open_many = recording_open_many
    zeros = np.zeros(n_elements, dtype=np.int64)
    ones = np.ones(n_elements, dtype=np.int64)
    ramp = np.arange(n_elements, dtype=np.int64) % 7 - 3
    x, y, w = secret_int(ctx, zeros, "zeros"), secret_int(ctx, ones, "ones"), secret_int(ctx, ramp, "ramp")
    beaver.mul(x, y)
    beaver.square(w)
    beaver.matmul(x.reshape(n_elements // 100, 100), w.reshape(100, n_elements // 100))
    fx = secret_real(ctx, np.full(n_elements, 0.5), "half")
    beaver.fmul(fx, fx)
    return seen, opened


def assert_uniform_field(values, what):
    """values (shape (N, 2)) look uniform over F_p and hold none of the test's secrets."""
    hi = values[:, 1]
    # every secret input here (0, 1, 2, 3, -1, -2, -3, 0.5 in fixed point) has hi limb 0 or 2^63 - 1
    assert not np.isin(hi, [0, HI_ALL_ONES]).any(), what
    # every bit of the high limb is a fair coin (6 sigma) ...
    bits = ((hi[:, None] >> np.arange(63, dtype=np.uint64)) & np.uint64(1)).mean(axis=0)
    assert np.all(np.abs(bits - 0.5) < 6 * 0.5 / np.sqrt(len(hi))), (what, bits)
    # ... and the top byte is uniform (chi-square, fails wrongly with probability 1e-6)
    counts = np.bincount((hi >> np.uint64(55)).astype(np.int64), minlength=256)
    assert chisquare(counts).pvalue > 1e-6, what


def test_node_view_is_uniformly_masked():
    n, m = 3, 20_000
    views = run_processes(n, view_job, (m,), timeout=60)
    for index, (seen, opened) in enumerate(views):
        # 1. every array received (peers' shares of openings, dealer corrections) is uniform
        senders = {s for s, _, _ in seen}
        assert senders == ({"node0", "node1", "node2", "dealer"} - {f"node{index}"} if index == n - 1
                           else {"node0", "node1", "node2"} - {f"node{index}"})
        for sender, tag, array in seen:
            assert_uniform_field(array.reshape(-1, 2), (index, sender, tag))
        # 2. the opened values: d = x - a is uniform over F_p
        tags = [t for t, _ in opened]
        assert tags.count("beaver") == 6 and tags.count("trunc") == 1, tags  # x, y; w; x, w reshaped; fx
        for tag, value in opened:
            if tag == "beaver":
                assert_uniform_field(value.reshape(-1, 2), (index, "opened", value.shape))
        # 3. the truncation opening c = x + 2^(b-1) + r is statistically masked by
        #    r < 2^(b + sigma): c / 2^(b + sigma) is uniform on [0, 1) up to 2^-sigma
        (c,) = [v for t, v in opened if t == "trunc"]
        b = PARAMS.k + PARAMS.f
        top = b + PARAMS.sigma - 64
        hi = c.reshape(-1, 2)[:, 1]
        assert (hi < np.uint64(1 << (top + 1))).all()
        u = hi.astype(np.float64) / 2.0 ** top
        assert (u < 1.0 + 2.0 ** -30).all()
        assert kstest(u, "uniform").pvalue > 1e-6
    # every node opened the same values
    for (_, o0), (_, o1) in zip(views[0][1], views[1][1]):
        np.testing.assert_array_equal(o0, o1)


# ----------------------------------------------------------------- a party killed mid-protocol

def loop_job(ctx, seconds):
    x = secret_int(ctx, np.arange(20_000), "x")
    y = secret_int(ctx, np.arange(20_000), "y")
    end = time.monotonic() + seconds
    rounds = 0
    while time.monotonic() < end:
        x = beaver.mul(SharedArray(ctx, x.share), y)
        rounds += 1
    return rounds


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize("victim", ["node1", "dealer", "node2"])
def test_killed_peer_stops_everyone(victim):
    killed = {}

    def on_started(pids):
        killed["pids"] = dict(pids)

        def kill():
            killed["at"] = time.monotonic()
            os.kill(pids[victim], signal.SIGKILL)

        timer = threading.Timer(1.5, kill)
        timer.daemon = True
        timer.start()
        killed["timer"] = timer

    start = time.monotonic()
    with pytest.raises(ChildError) as info:
        run_processes(3, loop_job, (60.0,), on_started=on_started, timeout=60)
    returned = time.monotonic()
    killed["timer"].join()
    assert "at" in killed, "the job ended before the kill"
    assert returned - killed["at"] < 10.0, f"took {returned - killed['at']:.1f} s after the kill"
    assert returned - start < 20
    message = str(info.value)
    first = message.splitlines()[0]
    assert first.startswith(f"{victim} failed: process was killed by SIGKILL (exit code -9)"), first
    # every other party stopped on its own, with an error that names the victim
    also = message.split("\nalso: ", 1)[1]
    for name in killed["pids"]:
        if name != victim:
            assert re.search(rf"(^|; ){name}: [^;]*{victim}", also), (name, also)
    assert all(pid_gone(pid) for pid in killed["pids"].values())
    assert mp.active_children() == []
