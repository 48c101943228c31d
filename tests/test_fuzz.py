"""Fuzzing a running node with random and mutated frames (hypothesis), real daemons.

A dealer and two nodes (``python -m parties.cli``, CurveZMQ) on loopback; two
providers have submitted.  Then:

- **service socket**: an authorised provider's client (site1, which has
  already submitted, so nothing it may legitimately do changes stored data —
  the fuzzer never asks to replace) sends node0 one hypothesis-generated
  message per example: raw garbage frames, truncated msgpack, command maps
  with random or wrong-role commands and random fields, submission metadata
  with bad ids, counts and block lists, array headers with wrong or unknown
  dtypes, negative, huge or mismatched shapes and sizes, truncated or
  oversized payloads, non-canonical field elements, byte-flipped copies of
  valid requests, and a frame over the size limit (which closes that
  connection).  After every example a second client (site2) must get
  an answer to ``ping`` within 5 s (no crash, no hang);
- **peer sockets**: node1's key (a node's peer link, the only kind of key
  node0's and the dealer's peer sockets admit) sends random and mutated
  channel frames (garbage, headers of other jobs or of none, aborts and
  batches for unknown jobs) while no job runs;

and afterwards: the daemons are all alive and answer, no job is stuck (status
not busy), node0's stored files are byte-identical and verify, nothing is
left in staging, node0 logged no unexpected exception, and a freq analysis
(whose job drains whatever the peer fuzzer left queued) gives the same
output as before the fuzzing.  The number of inputs tried is printed.
"""
from __future__ import annotations

import hashlib
import secrets
import time
from datetime import timedelta

import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from mpc.net import frames
from mpc.net.zmq_channel import MAX_FRAME_BYTES, make_client
from parties import keys as keyfiles
from parties.local import LocalStudy
from parties.service import ServiceClient
from parties.simulate import simulate
from parties.storage import Submission

pytestmark = pytest.mark.slow

SERVICE_EXAMPLES = 1500
PEER_EXAMPLES = 800
COUNTS = {"service": 0, "peer": 0}


# ------------------------------------------------------------------ the running study

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    simulate(out_dir=root / "sites", sites=2, samples=120, snps=150, seed=3, n_causal=1)
    study = LocalStudy(root / "study", nodes=2, providers=("site1", "site2", "site3"), timeout=5.0,
                       block_snps=64)
    try:
        for name in ("site1", "site2"):
            study.submit(root / "sites" / name, name)
        study.run("freq", root / "before")
        w = {"root": root, "study": study, "status": study.status(), "files": _digests(study),
             "context": zmq.Context()}
        w["checker"] = _client(study, w["context"], "site2", 0)
        yield w
        w["context"].destroy(linger=0)
    finally:
        study.close()


def _digests(study):
    """sha256 of every file under node0's submissions/."""
    base = study.root / "data" / "node0" / "submissions"
    return {str(p.relative_to(base)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(base.rglob("*")) if p.is_file()}


def _keys(study, name):
    return keyfiles.read(study.study.key_file(name)).pair


def _client(study, context, name, node):
    ep = study.study.node(node)
    return ServiceClient(context, ep.service, name, ep.name, _keys(study, name), ep.public_key, timeout=5.0)


# ------------------------------------------------------------------ strategies

SCALARS = (hs.none() | hs.booleans() | hs.integers(-2**63, 2**64 - 1) | hs.floats(allow_nan=True)
           | hs.text(max_size=16) | hs.binary(max_size=32))
VALUES = hs.recursive(SCALARS, lambda inner: hs.lists(inner, max_size=4)
                      | hs.dictionaries(hs.text(max_size=8), inner, max_size=4), max_leaves=10)
COMMANDS = ("ping", "status", "run", "submit_begin", "submit_array", "submit_commit", "submit_abort",
            "register", "shutdown", "")
DTYPE_CODES = tuple(frames.DTYPES) + ("f128", "object", "<U8", "")


def _meta():
    return hs.fixed_dictionaries({}, optional={
        "provider": hs.sampled_from(["site1", "site2", "site9", "analyst", ""]) | VALUES,
        "submission": hs.sampled_from(["site1-abc123", "site1-", "site2-00", "site1-../../x", "site1-" + "a" * 80])
        | VALUES,
        "n_samples": hs.integers(-3, 2**41) | VALUES,
        "n_snps": hs.integers(-3, 2**41) | VALUES,
        "blocks": hs.lists(hs.lists(hs.integers(-5, 300), max_size=3), max_size=4) | VALUES,
        "tables": hs.dictionaries(hs.text(max_size=8), VALUES, max_size=3) | VALUES,
        "arrays": hs.just({"geno/imputed/0": {"file": "../../../etc/passwd", "sha256": "0" * 64}}) | VALUES,
    })


def _command():
    return hs.fixed_dictionaries({"cmd": hs.sampled_from(COMMANDS) | VALUES}, optional={
        "meta": _meta() | VALUES,
        "seed": hs.sampled_from(["00" * 16, "zz", "00" * 15, ""]) | VALUES,
        "name": hs.sampled_from(["geno/imputed/0", "../x", "/abs", "", "a" * 300]) | VALUES,
        "job": hs.text(max_size=20) | VALUES,
        "analysis": hs.sampled_from(["freq", "gwas", "nope"]) | VALUES,
        "submissions": hs.dictionaries(hs.text(max_size=8), VALUES, max_size=3) | VALUES,
        "options": VALUES,
        "seeds": VALUES,
    })


@hs.composite
def _array(draw):
    """A small valid array and whether it is field elements."""
    kind = draw(hs.sampled_from(["f127", "u8", "i64", "f64", "u64"]))
    shape = tuple(draw(hs.lists(hs.integers(0, 5), max_size=3)))
    n = int(np.prod(shape, dtype=np.int64))
    if kind == "f127":
        limbs = draw(hs.lists(hs.integers(0, 2**64 - 1), min_size=2 * n, max_size=2 * n))
        return np.array(limbs, dtype=np.uint64).reshape(shape + (2,)), True
    dt = {"u8": np.uint8, "i64": np.int64, "f64": np.float64, "u64": np.uint64}[kind]
    raw = draw(hs.binary(min_size=n * np.dtype(dt).itemsize, max_size=n * np.dtype(dt).itemsize))
    return np.frombuffer(raw, dtype=dt).reshape(shape), False


@hs.composite
def _header_and_payload(draw):
    """Array frames: valid, or with one or more header fields or the payload broken."""
    array, is_field = draw(_array())
    msg = [bytes(f) for f in frames.encode_data(draw(hs.text(max_size=12)), array, is_field,
                                                 draw(hs.none() | hs.text(max_size=17)))]
    head = msgpack.unpackb(msg[0], raw=False)
    broken = draw(hs.sets(hs.sampled_from(["d", "s", "n", "t", "j", "payload", "extra", "drop", "huge",
                                          "noncanonical"]), max_size=3))
    if "d" in broken:
        head["d"] = draw(hs.sampled_from(DTYPE_CODES) | VALUES)
    if "s" in broken:
        head["s"] = draw(hs.lists(hs.integers(-2, 2**41), max_size=10) | VALUES)
    if "n" in broken:
        head["n"] = draw(hs.integers(-1, 2**63) | VALUES)
    if "t" in broken:
        head["t"] = draw(VALUES)
    if "j" in broken:
        head["j"] = draw(VALUES)
    if "huge" in broken:      # a header announcing gigabytes, with or without a matching size
        head["d"], head["s"] = "f127", [2**20, 2**14]
        head["n"] = draw(hs.sampled_from([2**20 * 2**14 * 16, 16, 0]))
    payload = msg[1:]
    if "noncanonical" in broken and is_field and array.size:
        bad = array.copy()
        bad.reshape(-1, 2)[0] = (2**64 - 1, 2**63 - 1)       # p itself, and above
        payload = [bad.tobytes()]
    if "payload" in broken:
        cut = draw(hs.integers(0, max(0, sum(len(p) for p in payload) - 1)))
        payload = [b"".join(payload)[:cut]]
    if "extra" in broken:
        payload = payload + [draw(hs.binary(max_size=64))]
    if "drop" in broken:
        payload = []
    try:
        packed = msgpack.packb(head)
    except (TypeError, ValueError, OverflowError):
        packed = msgpack.packb({"t": "x", "d": "u8", "s": [1], "n": 2})
    return [packed] + payload


@hs.composite
def _service_message(draw):
    """One request's frames, in one of several families."""
    family = draw(hs.sampled_from(["garbage", "truncated", "command", "command+array", "flipped"]))
    if family == "garbage":
        return draw(hs.lists(hs.binary(max_size=256), min_size=1, max_size=5))
    try:
        command = msgpack.packb(draw(_command()))
    except (TypeError, ValueError, OverflowError):
        command = msgpack.packb({"cmd": "ping"})
    if family == "truncated":
        return [command[:draw(hs.integers(0, max(0, len(command) - 1)))]]
    if family == "command":
        return [command]
    msg = [command] + draw(_header_and_payload())
    if family == "flipped":
        valid = [msgpack.packb({"cmd": draw(hs.sampled_from(["submit_begin", "submit_array", "run"])),
                                "name": "geno/imputed/0", "meta": {"provider": "site1",
                                "submission": "site1-abc", "n_samples": 3}, "seed": "00" * 16})]
        valid += [bytes(f) for f in frames.encode_data("geno/imputed/0", np.zeros((3, 2, 2), np.uint64), True)]
        flips = draw(hs.lists(hs.tuples(hs.integers(0, len(valid) - 1), hs.integers(0, 10**6),
                                        hs.integers(1, 255)), min_size=1, max_size=6))
        msg = [bytearray(f) for f in valid]
        for k, pos, bit in flips:
            if msg[k]:
                msg[k][pos % len(msg[k])] ^= bit
        msg = [bytes(f) for f in msg]
    return msg


@hs.composite
def _peer_message(draw):
    """Frames a node's peer socket might get: channel headers, controls, batches, garbage."""
    family = draw(hs.sampled_from(["garbage", "data", "control", "batch", "truncated"]))
    if family == "garbage":
        return draw(hs.lists(hs.binary(max_size=256), min_size=1, max_size=5))
    if family == "data":
        return draw(_header_and_payload())
    if family == "control":
        head = {"c": draw(hs.sampled_from(["hb", "abort", "batch", "x"]) | VALUES)}
        head.update(draw(hs.dictionaries(hs.sampled_from(["j", "reason", "n"]), VALUES, max_size=3)))
        try:
            return [msgpack.packb(head)] + draw(hs.lists(hs.binary(max_size=64), max_size=3))
        except (TypeError, ValueError, OverflowError):
            return [b"\x80"]
    if family == "batch":
        items = draw(hs.lists(_header_and_payload(), max_size=3))
        head = {"c": "batch", "n": draw(hs.integers(-1, 5)), "j": draw(hs.none() | hs.text(max_size=17))}
        return [msgpack.packb(head)] + [f for item in items for f in item]
    raw = msgpack.packb({"t": "x", "d": "u8", "s": [4], "n": 4, "j": "0123456789abcdef"})
    return [raw[:draw(hs.integers(0, len(raw) - 1))], b"abcd"]


# ------------------------------------------------------------------ tests

FUZZ_SETTINGS = dict(deadline=timedelta(seconds=10), database=None, derandomize=False,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                            HealthCheck.data_too_large, HealthCheck.filter_too_much])


def _alive(world):
    reply, _ = world["checker"].call({"cmd": "ping"}, timeout=5.0)
    assert reply == {"ok": True, "node": "node0"}


def test_fuzz_service_socket(world):
    study, context = world["study"], world["context"]
    ep = study.study.node(0)
    fuzz = make_client(context, ep.service, f"site1.{secrets.token_hex(8)}", _keys(study, "site1"),
                       ep.public_key, linger=0)
    replies = []

    @settings(max_examples=SERVICE_EXAMPLES, **FUZZ_SETTINGS)
    @given(_service_message())
    def one(msg):
        COUNTS["service"] += 1
        fuzz.send_multipart(msg)
        _alive(world)                       # node0 answers within 5 s after every input
        while fuzz.poll(0):
            replies.append(fuzz.recv_multipart())

    start = time.monotonic()
    try:
        one()
        # A few inputs hypothesis is unlikely to draw: oversized command and header frames.
        for msg in ([b"\x81\xa3cmd\xa4ping" + b"\x00" * (2 << 20)],
                    [msgpack.packb({"cmd": "submit_array", "name": "x"}), b"\x80" * 5000, b""],
                    [msgpack.packb({"cmd": "ping"})] + [b""] * 2000):
            COUNTS["service"] += 1
            fuzz.send_multipart(msg)
            _alive(world)
        time.sleep(0.2)
        while fuzz.poll(0):
            replies.append(fuzz.recv_multipart())
        # A frame over the size limit: ZeroMQ drops it and closes that connection (no reply, no buffering).
        monitor = fuzz.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        COUNTS["service"] += 1
        fuzz.send_multipart([msgpack.packb({"cmd": "ping"}), b"\x00" * (MAX_FRAME_BYTES + 1)])
        assert monitor.poll(10_000), "the oversized frame did not close the connection"
        fuzz.disable_monitor()
        monitor.close(0)
        _alive(world)
    finally:
        fuzz.close(0)
    took = time.monotonic() - start
    refused = sum(1 for r in replies if b"error" in r[0])
    print(f"service fuzz: {COUNTS['service']} inputs to node0 in {took:.1f} s, {len(replies)} replies "
          f"({refused} refusals)")
    assert COUNTS["service"] >= SERVICE_EXAMPLES // 2


def test_fuzz_peer_sockets_while_idle(world):
    study, context = world["study"], world["context"]
    socks = []
    for target, key in ((study.study.node(0), study.study.node(0).public_key),
                        (study.study.dealer, study.study.dealer.public_key)):
        for rid in ("node1", "node1#hb"):
            socks.append(make_client(context, target.peer, rid, _keys(study, "node1"), key, linger=2000))

    @settings(max_examples=PEER_EXAMPLES, **FUZZ_SETTINGS)
    @given(hs.sampled_from(range(len(socks))), _peer_message())
    def one(k, msg):
        COUNTS["peer"] += 1
        socks[k].send_multipart(msg)

    start = time.monotonic()
    one()
    for s in socks:
        s.close()                           # linger: what was sent is delivered
    time.sleep(0.5)
    print(f"peer fuzz: {COUNTS['peer']} inputs to node0's and the dealer's peer sockets "
          f"in {time.monotonic() - start:.1f} s")
    assert COUNTS["peer"] >= PEER_EXAMPLES // 2
    _alive(world)


def test_after_fuzzing_nothing_changed_and_jobs_run(world):
    study, root = world["study"], world["root"]
    assert all(p.poll() is None for p in study.procs.values()), "a daemon died"
    after = study.status()
    assert [a["submissions"] for a in after] == [b["submissions"] for b in world["status"]]
    assert all(a["busy"] is False for a in after)
    assert _digests(study) == world["files"]
    data = study.root / "data" / "node0"
    assert not list((data / "staging").iterdir())
    for d in (data / "submissions").iterdir():
        Submission(d).verify()
    for name in ("node0", "dealer"):
        log = (study.root / "logs" / f"{name}.log").read_text()
        assert "Traceback" not in log and " could not handle the request" not in log, name
    # A job after the fuzzing: the peer sockets' leftovers must not disturb it, the result is the same.
    study.run("freq", root / "after")
    assert (root / "after" / "freq.tsv").read_text() == (root / "before" / "freq.tsv").read_text()
    for name in ("node0", "dealer"):    # the junk reached the channels, which dropped it with a warning
        log = (study.root / "logs" / f"{name}.log").read_text()
        assert "dropped a malformed message from node1 that belongs to no current job" in log, name
    print(f"fuzz inputs in all: {sum(COUNTS.values())} ({COUNTS})")
