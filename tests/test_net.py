"""Tests of mpc.net: the wire format, the in-process and ZeroMQ channels.

What is checked:

- frames: every dtype round-trips (one chunk and many, empty arrays); the
  receiver rejects garbage, oversized and incomplete headers, unknown dtypes,
  bad shapes (including extents whose product overflows int64), payloads of
  the wrong size or over the limit, and non-canonical field elements — always
  with a ProtocolError naming the sender, never a numpy error or a hang;
- channels: a tag, dtype or shape mismatch is an error naming both parties and
  the step; traffic is counted per phase (bytes, messages, rounds); an abort
  reaches the peers as PeerAborted; a silent peer is a PeerTimeout naming it;
  the hop clock counts the one-way latencies of the longest causal chain
  (an exchange is one hop, a relay two, a stale message none); `pending`
  looks at what has arrived without blocking;
- ZeroMQ: arrays of every size cross CurveZMQ links intact; a key that is not
  in the KeyRing is refused and the refusal is logged; a registered key cannot
  speak under another party's name; heartbeats keep a slow peer alive, their
  absence raises PeerTimeout naming the peer, a party back from a long
  computation is not fooled by its own stale clock, and a peer whose
  connection drops is reported long before the timeout.
"""
from __future__ import annotations

import logging
import threading
import time

import msgpack
import numpy as np
import pytest
import zmq

from mpc import field
from mpc.errors import PeerAborted, PeerTimeout, ProtocolError
from mpc.net import frames
from mpc.net.channel import InProcessHub
from mpc.net.zmq_channel import KeyRing, ZmqChannel, make_client, make_server, start_authenticator
from mpc.params import P
from mpc.prg import Prg

SEED = bytes(range(16))


def field_array(shape, label="x"):
    return Prg(SEED, label).field(shape)


# ----------------------------------------------------------------- frames

def roundtrip(tag, array, is_field):
    msg = frames.encode_data(tag, array, is_field)
    header = frames.decode_header(bytes(msg[0]), "peer")
    assert isinstance(header, frames.Header)
    return header, frames.decode_payload(header, [bytes(c) for c in msg[1:]], "peer")


@pytest.mark.parametrize("array, is_field, code", [
    (field_array((5, 3)), True, "f127"),
    (field_array((0,)), True, "f127"),
    (field_array(()), True, "f127"),
    (np.arange(7, dtype=np.uint64), False, "u64"),
    (np.arange(6, dtype=np.uint8).reshape(2, 3), False, "u8"),
    (np.arange(-3, 3, dtype=np.int64), False, "i64"),
    (np.linspace(-1, 1, 4), False, "f64"),
    (np.zeros((0, 4), dtype=np.int64), False, "i64"),
])
def test_frames_roundtrip(array, is_field, code):
    header, out = roundtrip("step", array, is_field)
    assert header.tag == "step" and header.dtype == code
    assert header.shape == (array.shape[:-1] if is_field else array.shape)
    assert out.dtype == array.dtype and out.shape == array.shape
    np.testing.assert_array_equal(out, array)


def test_frames_many_chunks(monkeypatch):
    monkeypatch.setattr(frames, "CHUNK_BYTES", 1000)
    array = field_array((333,))  # 5328 bytes -> 6 chunks, the last one short
    msg = frames.encode_data("big", array, True)
    assert len(msg) == 1 + 6 and all(len(c) <= 1000 for c in msg[1:])
    header = frames.decode_header(bytes(msg[0]), "peer")
    out = frames.decode_payload(header, [bytes(c) for c in msg[1:]], "peer")
    np.testing.assert_array_equal(out, array)


def test_frames_payload_is_zero_copy():
    array = field_array((100,))
    msg = frames.encode_data("z", array, True)
    assert np.shares_memory(np.frombuffer(msg[1], dtype=np.uint64), array)


@pytest.mark.parametrize("chunk", [1000, 1 << 20])
def test_frames_parts_arrive_as_their_concatenation(monkeypatch, chunk):
    monkeypatch.setattr(frames, "CHUNK_BYTES", chunk)
    parts = [field_array((40, 3), "p0"), field_array((0,), "p1"), field_array((7,), "p2"),
             field_array((100,), "p3")]
    msg, nbytes = frames.encode_parts("open", parts, True)
    expected = np.concatenate([p.reshape(-1, 2) for p in parts])
    assert nbytes == expected.nbytes
    if chunk == 1000:  # no concatenated copy: the payload chunks point into the parts
        assert len(msg) > 2 and np.shares_memory(np.frombuffer(msg[1], dtype=np.uint64), parts[0])
    else:  # small totals travel as one frame
        assert len(msg) == 2
    header = frames.decode_header(bytes(msg[0]), "peer")
    assert header.shape == (expected.shape[0],) and header.nbytes == nbytes
    out = frames.decode_payload(header, [bytes(c) for c in msg[1:]], "peer")
    np.testing.assert_array_equal(out, expected)


def test_frames_parts_of_mixed_dtypes_are_refused():
    with pytest.raises(ProtocolError, match="several dtypes"):
        frames.encode_parts("x", [np.zeros(3, dtype=np.int64), np.zeros(3, dtype=np.uint64)], False)


def test_frames_refuse_unknown_dtype():
    with pytest.raises(ProtocolError, match="dtype"):
        frames.encode_data("t", np.zeros(3, dtype=np.float32), False)


def header(**fields):
    base = {"t": "step", "d": "u64", "s": [4], "n": 32}
    base.update(fields)
    return msgpack.packb({k: v for k, v in base.items() if v is not None})


@pytest.mark.parametrize("raw, pattern", [
    (b"\xc1garbage", "malformed header from nodeX"),
    (msgpack.packb([1, 2, 3]), "not a map"),
    (msgpack.packb({"t": "x" * 5000}), r"bytes \(limit 4096\)"),
    (header(t=None), "lacks field 't'"),
    (header(n=None), "lacks field 'n'"),
    (header(t=7), "bad tag"),
    (header(d="f32"), "unknown dtype"),
    (header(s=[-1]), "bad shape"),
    (header(s=[2.5]), "bad shape"),
    (header(s="abc"), "bad shape"),
    (header(s=[1] * 9), "bad shape"),
    (header(s=[2**41]), "bad shape"),
    (header(n=31), "payload size 31 does not match"),
    (header(n="32"), "payload size"),
    (header(d="f127", s=[4], n=32), "payload size 32 does not match dtype f127 shape"),
    (msgpack.packb({"c": 3}), "malformed control header"),
    (header(j=5), "bad session"),
    (msgpack.packb({"t": "step", "d": "u64", "s": [4], "n": b"\x00" * 8}), "malformed header"),
])
def test_frames_reject_bad_headers(raw, pattern):
    with pytest.raises(ProtocolError, match=pattern):
        frames.decode_header(raw, "nodeX")


def test_frames_shape_product_does_not_wrap():
    # 8 extents of 2^39: the element count is 2^312, which wraps to 0 in int64;
    # a header claiming 0 payload bytes must still be refused.
    raw = header(s=[2**39] * 8, n=0)
    with pytest.raises(ProtocolError, match="payload size 0 does not match"):
        frames.decode_header(raw, "nodeX")


def test_frames_payload_limit():
    raw = header(s=[1000], n=8000)
    assert frames.decode_header(raw, "p", max_payload=8000).nbytes == 8000
    with pytest.raises(ProtocolError, match="over the 7999-byte limit"):
        frames.decode_header(raw, "p", max_payload=7999)


def test_frames_wrong_payload_size():
    array = np.arange(4, dtype=np.uint64)
    msg = frames.encode_data("step", array, False)
    h = frames.decode_header(bytes(msg[0]), "nodeX")
    for chunks in ([bytes(msg[1])[:-8]], [bytes(msg[1]) + b"\x00"], [], [bytes(msg[1]), b"\x00" * 8]):
        with pytest.raises(ProtocolError, match=r"nodeX \(tag step\): \d+ payload bytes, header announced 32"):
            frames.decode_payload(h, chunks, "nodeX")


@pytest.mark.parametrize("value", [P, P + 1, 2**127, 2**128 - 1])
def test_frames_reject_noncanonical_field_elements(value):
    array = field_array((6,))
    bad = array.copy()
    bad[3] = [value & (2**64 - 1), value >> 64]
    msg = frames.encode_data("open", bad, True)
    h = frames.decode_header(bytes(msg[0]), "nodeX")
    with pytest.raises(ProtocolError, match=r"nodeX \(tag open\) holds non-canonical"):
        frames.decode_payload(h, [bytes(c) for c in msg[1:]], "nodeX")
    # the same bytes as raw words are fine: only field elements must be canonical
    msg = frames.encode_data("open", bad.reshape(-1), False)
    h = frames.decode_header(bytes(msg[0]), "nodeX")
    frames.decode_payload(h, [bytes(c) for c in msg[1:]], "nodeX")


def test_frames_accept_edge_field_elements():
    edge = field.from_ints(np.array([0, 1, P - 2, P - 1], dtype=object))
    _, out = roundtrip("edge", edge, True)
    np.testing.assert_array_equal(out, edge)


# ----------------------------------------------------------------- in-process channels

def run_parallel(*fns, timeout=30):
    """Run callables in threads; return their results, re-raise the first error."""
    results, errors = [None] * len(fns), []

    def target(i):
        try:
            results[i] = fns[i]()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "a party is still running"
    if errors:
        raise errors[0]
    return results


@pytest.fixture
def hub():
    return InProcessHub(["node0", "node1", "node2"], timeout=5.0)


def test_inprocess_send_recv_and_stats(hub):
    a, b = hub.channel("node0"), hub.channel("node1")
    x = field_array((10, 3))
    with a.stats.phase("load"):
        a.send("node1", "x", x)
        a.send("node1", "w", np.arange(5, dtype=np.int64))
    got = b.recv("node0", "x", dtype="f127", shape=(10, 3))
    np.testing.assert_array_equal(got, x)
    np.testing.assert_array_equal(b.recv("node0", "w", dtype="i64"), np.arange(5))
    load = a.stats.phases["load"]
    assert load.messages_sent == 2
    assert load.bytes_sent > x.nbytes + 40  # payloads plus headers
    assert load.bytes_sent < x.nbytes + 40 + 2 * 64
    assert a.stats.phases["setup"].bytes_sent == 0
    assert b.stats.now.bytes_received == x.nbytes + 40 and b.stats.now.rounds == 2


def test_inprocess_exchange_is_one_round(hub):
    names = ["node0", "node1", "node2"]
    chans = {n: hub.channel(n) for n in names}
    values = {n: field_array((4,), n) for n in names}

    def party(me):
        ch = chans[me]
        with ch.stats.phase("open"):
            got = ch.exchange([p for p in names if p != me], "d", values[me], dtype="f127", shape=(4,))
        return got

    results = run_parallel(*[lambda n=n: party(n) for n in names])
    for me, got in zip(names, results):
        assert set(got) == set(names) - {me}
        for peer, arr in got.items():
            np.testing.assert_array_equal(arr, values[peer])
        assert chans[me].stats.phases["open"].rounds == 1
        assert chans[me].stats.phases["open"].messages_sent == 2
    assert chans["node0"].stats.total().rounds == 1


def test_hop_clock_counts_the_longest_causal_chain(hub):
    a, b, c = (hub.channel(n) for n in ("node0", "node1", "node2"))
    x = field_array((3,))
    a.send("node1", "early", x)            # sent at hop 0, read late: adds one hop, not more
    a.send("node1", "x", x)
    assert b.hops == 0
    b.recv("node0", "early")
    b.recv("node0", "x")
    assert b.hops == 1 and b.stats.now.hops == 1
    b.send("node2", "relay", x)            # a -> b -> c: two one-way latencies
    c.recv("node1", "relay")
    assert c.hops == 2
    c.send("node0", "back", x)
    a.recv("node2", "back")
    assert a.hops == 3
    with b.stats.phase("open"):
        results = run_parallel(
            lambda: a.exchange(["node1", "node2"], "d", x, dtype="f127", shape=(3,)),
            lambda: b.exchange(["node0", "node2"], "d", x, dtype="f127", shape=(3,)),
            lambda: c.exchange(["node0", "node1"], "d", x, dtype="f127", shape=(3,)))
    assert len(results) == 3
    # each clock ends one past the largest it received: a's 3 reached b and c,
    # while a, ahead of both, keeps its own
    assert (a.hops, b.hops, c.hops) == (3, 4, 4)
    assert b.stats.phases["open"].hops == 3 and b.stats.phases["open"].rounds == 1


def test_inprocess_exchange_parts(hub, monkeypatch):
    monkeypatch.setattr(frames, "CHUNK_BYTES", 512)
    names = ["node0", "node1", "node2"]
    chans = {n: hub.channel(n) for n in names}
    parts = {n: [field_array((30,), n + "a"), field_array((5, 4), n + "b")] for n in names}

    def party(me):
        with chans[me].stats.phase("open"):
            return chans[me].exchange_parts([p for p in names if p != me], "d", parts[me])

    for me, got in zip(names, run_parallel(*[lambda n=n: party(n) for n in names])):
        for peer, arr in got.items():
            np.testing.assert_array_equal(arr, np.concatenate([p.reshape(-1, 2) for p in parts[peer]]))
        traffic = chans[me].stats.phases["open"]
        assert traffic.rounds == 1 and traffic.messages_sent == 2
        assert traffic.bytes_received == 2 * 50 * 16
        assert 2 * 50 * 16 < traffic.bytes_sent < 2 * (50 * 16 + 64)


def test_inprocess_messages_are_copies(hub):
    a, b = hub.channel("node0"), hub.channel("node1")
    x = np.arange(4, dtype=np.uint64)
    a.send("node1", "x", x)
    x[:] = 99
    np.testing.assert_array_equal(b.recv("node0", "x"), [0, 1, 2, 3])


def test_mismatch_errors_name_both_parties_and_step(hub):
    a, b = hub.channel("node0"), hub.channel("node1")
    a.send("node1", "beaver", field_array((3,)))
    with b.stats.phase("qc"), pytest.raises(ProtocolError) as info:
        b.recv("node0", "trunc")
    msg = str(info.value)
    assert "node1" in msg and "node0" in msg and "'trunc'" in msg and "'beaver'" in msg and "qc" in msg

    a.send("node1", "beaver", field_array((3,)))
    with pytest.raises(ProtocolError, match=r"node1 expected dtype u64 from node0 at step 'beaver', got f127"):
        b.recv("node0", "beaver", dtype="u64")

    a.send("node1", "beaver", field_array((3,)))
    with pytest.raises(ProtocolError, match=r"node1 expected shape \(4,\) from node0 at step 'beaver', got \(3,\)"):
        b.recv("node0", "beaver", dtype="f127", shape=(4,))

    with pytest.raises(ProtocolError, match="'node7' is not a peer"):
        b.recv("node7", "x")


def test_any_order_takes_the_oldest_matching(hub):
    a, b = hub.channel("node0"), hub.channel("node1")
    for tag, v in [("t/a", 1), ("t/b", 2), ("t/a", 3)]:
        a.send("node1", tag, np.array([v], dtype=np.int64))
    assert b.recv("node0", "t/b", any_order=True)[0] == 2
    assert b.recv("node0", "t/a", any_order=True)[0] == 1
    assert b.recv("node0", "t/a")[0] == 3


def test_inprocess_malformed_message_names_both_ends(hub):
    b = hub.channel("node1")
    hub.queues[("node0", "node1")].put([b"\xc1\xc1"])
    with pytest.raises(ProtocolError, match="malformed header from node0 to node1"):
        b.recv("node0", "x")
    bad = field_array((2,)).copy()
    bad[0, 1] = 2**63
    hub.queues[("node0", "node1")].put([bytes(f) for f in frames.encode_data("x", bad, True)])
    with pytest.raises(ProtocolError, match="from node0 to node1 .* non-canonical"):
        b.recv("node0", "x")


def test_inprocess_abort_and_timeout():
    hub = InProcessHub(["node0", "node1"], timeout=0.3)
    a, b = hub.channel("node0"), hub.channel("node1")
    start = time.monotonic()
    with pytest.raises(PeerTimeout, match=r"node1: no message from node0 within 0.3 s \(waiting for step 'x'"):
        b.recv("node0", "x")
    assert time.monotonic() - start < 2
    a.abort("ValueError: disk full")
    with pytest.raises(PeerAborted, match="node1: peer node0 stopped: ValueError: disk full"):
        b.recv("node0", "x")


# ----------------------------------------------------------------- ZeroMQ channels

class ZmqWorld:
    """ZmqChannels between named parties inside this process (one context)."""

    def __init__(self, names, *, curve=True, timeout=5.0, heartbeat=0.2, startup_grace=30.0,
                 bare=(), log_name="mpcgwas.test.zap", **kw):
        self.context = zmq.Context()
        self.names = list(names) + list(bare)
        self.keys = {n: zmq.curve_keypair() for n in self.names} if curve else {}
        self.ring = KeyRing({n: k[0] for n, k in self.keys.items()}) if curve else None
        self.auth = start_authenticator(self.context, self.ring, logging.getLogger(log_name)) if curve else None
        self.routers = {n: make_server(self.context, "tcp://127.0.0.1:0", self.keys.get(n), linger=0)
                        for n in self.names}
        self.endpoints = {n: r.getsockopt(zmq.LAST_ENDPOINT).decode() for n, r in self.routers.items()}
        public = {n: k[0] for n, k in self.keys.items()} if curve else None
        self.channels = {
            n: ZmqChannel(n, self.routers[n], {p: self.endpoints[p] for p in self.names if p != n},
                          context=self.context, keys=self.keys.get(n), peer_keys=public, ring=self.ring,
                          timeout=timeout, heartbeat=heartbeat, startup_grace=startup_grace, **kw)
            for n in names
        }
        self.extra = []

    def client(self, target, routing_id, keys):
        sock = make_client(self.context, self.endpoints[target], routing_id, keys,
                           self.keys[target][0] if keys else None, linger=0)
        self.extra.append(sock)
        return sock

    def close(self):
        for ch in self.channels.values():
            ch.close()
        for s in self.extra:
            s.close(0)
        for r in self.routers.values():
            r.close(0)
        if self.auth is not None:
            self.auth.stop()
        self.context.term()


@pytest.fixture
def world_factory():
    worlds = []

    def make(*args, **kw):
        w = ZmqWorld(*args, **kw)
        worlds.append(w)
        return w

    yield make
    for w in worlds:
        w.close()


@pytest.mark.parametrize("curve", [True, False])
def test_zmq_roundtrip_all_sizes(world_factory, monkeypatch, curve):
    monkeypatch.setattr(frames, "CHUNK_BYTES", 64 << 10)  # many chunks without huge arrays
    w = world_factory(["node0", "node1"], curve=curve)
    a, b = w.channels["node0"], w.channels["node1"]
    arrays = [field_array((0,)), field_array((1,)), field_array((300, 7)), field_array((50_000,)),
              np.arange(10, dtype=np.int64), np.frombuffer(b"seed" * 4, dtype=np.uint8)]
    for i, x in enumerate(arrays):
        a.send("node1", f"m{i}", x)
    for i, x in enumerate(arrays):
        got = b.recv("node0", f"m{i}")
        assert got.dtype == x.dtype and got.shape == x.shape
        np.testing.assert_array_equal(got, x)


def test_zmq_exchange_three_parties(world_factory):
    names = ["node0", "node1", "node2"]
    w = world_factory(names)
    values = {n: field_array((1000,), n) for n in names}

    def party(me):
        ch = w.channels[me]
        with ch.stats.phase("open"):
            return ch.exchange([p for p in names if p != me], "d", values[me], dtype="f127", shape=(1000,))

    results = run_parallel(*[lambda n=n: party(n) for n in names])
    for me, got in zip(names, results):
        for peer, arr in got.items():
            np.testing.assert_array_equal(arr, values[peer])
        assert w.channels[me].stats.phases["open"].rounds == 1


@pytest.mark.parametrize("kind", ["inprocess", "zmq"])
def test_pending_looks_without_waiting(kind, world_factory, hub):
    """Channel.pending (the dealer's check for waiting requests) never blocks and
    sees only what has arrived, with the asked-for tag."""
    if kind == "zmq":
        w = world_factory(["node0", "node1"])
        a, b = w.channels["node0"], w.channels["node1"]
    else:
        a, b = hub.channel("node0"), hub.channel("node1")
    start = time.monotonic()
    assert not b.pending("node0", "req")
    assert time.monotonic() - start < 0.5
    a.send("node1", "other", np.arange(2, dtype=np.int64))
    a.send("node1", "req", np.arange(3, dtype=np.int64))
    deadline = time.monotonic() + 5
    while not b.pending("node0", "req"):
        assert time.monotonic() < deadline, "the message never showed as pending"
        time.sleep(0.01)
    np.testing.assert_array_equal(b.recv("node0", "req", any_order=True), [0, 1, 2])
    assert not b.pending("node0", "req") and b.pending("node0", "other")


def test_zmq_any_order_wait_does_not_spin(world_factory):
    """Waiting for a later tag while an earlier one is queued blocks in poll."""
    w = world_factory(["node0", "node1"])
    a, b = w.channels["node0"], w.channels["node1"]
    a.send("node1", "t/a", np.arange(2, dtype=np.int64))
    b.recv("node0", "t/a", any_order=True)
    a.send("node1", "t/a", np.arange(2, dtype=np.int64))
    timer = threading.Timer(1.0, lambda: a.send("node1", "t/b", np.arange(3, dtype=np.int64)))
    timer.start()
    wall, cpu = time.monotonic(), time.process_time()
    np.testing.assert_array_equal(b.recv("node0", "t/b", any_order=True), [0, 1, 2])
    wall, cpu = time.monotonic() - wall, time.process_time() - cpu
    timer.join()
    assert wall > 0.8 and cpu < 0.5 * wall, (wall, cpu)
    np.testing.assert_array_equal(b.recv("node0", "t/a"), [0, 1])


def test_zmq_mismatch_names_both_parties(world_factory):
    w = world_factory(["node0", "node1"])
    w.channels["node0"].send("node1", "beaver", field_array((3,)))
    with pytest.raises(ProtocolError, match=r"node1 expected step 'trunc' from node0 but received 'beaver'"):
        w.channels["node1"].recv("node0", "trunc")


def test_zmq_abort_reaches_peer(world_factory):
    w = world_factory(["node0", "node1"])
    w.channels["node0"].abort("RuntimeError: out of memory")
    with pytest.raises(PeerAborted, match="node1: peer node0 stopped: RuntimeError: out of memory"):
        w.channels["node1"].recv("node0", "x")


def wait_for_record(caplog, text, seconds=5.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = [r for r in caplog.records if text in r.getMessage()]
        if found:
            return found
        time.sleep(0.05)
    return []


def test_curve_refuses_unknown_key_and_logs_it(world_factory, caplog):
    caplog.set_level(logging.WARNING)
    # "node1" is a study party (its key is in the ring) with no channel: only
    # what the clients below send can reach node0 under that name.
    w = world_factory(["node0"], bare=["node1"], timeout=1.0, startup_grace=0.0,
                      log_name="mpcgwas.test.zap.refuse")
    # the registered key gets through
    legit = w.client("node0", "node1", w.keys["node1"])
    legit.send_multipart(frames.encode_data("x", np.arange(3, dtype=np.int64), False))
    np.testing.assert_array_equal(w.channels["node0"].recv("node1", "x"), [0, 1, 2])
    # a key not in the ring, claiming the same name, does not
    intruder_keys = zmq.curve_keypair()
    intruder = w.client("node0", "node1", intruder_keys)
    intruder.send_multipart(frames.encode_data("y", np.arange(3, dtype=np.int64), False))
    refused = wait_for_record(caplog, "refused a CurveZMQ connection from a key not in the study")
    assert refused, "the refusal was not logged"
    assert intruder_keys[0].decode() in refused[0].getMessage()
    assert refused[0].name == "mpcgwas.test.zap.refuse"
    with pytest.raises(PeerTimeout, match="node0: peer node1 silent"):
        w.channels["node0"].recv("node1", "y")


def test_curve_key_cannot_speak_under_another_name(world_factory, caplog):
    caplog.set_level(logging.WARNING)
    w = world_factory(["node0"], bare=["node1", "node2"], timeout=1.0, startup_grace=0.0)
    liar = w.client("node0", "node1", w.keys["node2"])  # node2's key, node1's name
    liar.send_multipart(frames.encode_data("x", np.arange(3, dtype=np.int64), False))
    with pytest.raises(PeerTimeout, match="peer node1"):
        w.channels["node0"].recv("node1", "x")
    assert wait_for_record(caplog, "does not match its key")


def test_curve_client_with_wrong_server_key_gets_nowhere(world_factory):
    w = world_factory(["node0"], bare=["node1"], timeout=1.0, startup_grace=0.0)
    sock = make_client(w.context, w.endpoints["node0"], "node1", w.keys["node1"],
                       zmq.curve_keypair()[0], linger=0)  # not node0's public key
    w.extra.append(sock)
    sock.send_multipart(frames.encode_data("x", np.arange(3, dtype=np.int64), False))
    with pytest.raises(PeerTimeout):
        w.channels["node0"].recv("node1", "x")


def test_heartbeat_timeout_names_the_peer(world_factory):
    # node1's router exists but nobody runs its channel: no data, no heartbeats.
    w = world_factory(["node0"], bare=["node1"], timeout=1.0, startup_grace=0.0)
    start = time.monotonic()
    with w.channels["node0"].stats.phase("pca"), pytest.raises(PeerTimeout) as info:
        w.channels["node0"].recv("node1", "power-iteration")
    elapsed = time.monotonic() - start
    assert 0.9 < elapsed < 5.0
    msg = str(info.value)
    assert "node0: peer node1 silent" in msg and "'power-iteration'" in msg and "pca" in msg


def test_heartbeats_keep_a_slow_peer_alive(world_factory):
    w = world_factory(["node0", "node1"], timeout=1.5, heartbeat=0.2, startup_grace=0.0)
    a, b = w.channels["node0"], w.channels["node1"]

    def slow():
        time.sleep(3.2)  # twice the timeout, but node1 keeps heartbeating
        b.send("node0", "late", np.arange(2, dtype=np.int64))

    def wait():
        return a.recv("node1", "late")

    _, got = run_parallel(slow, wait)
    np.testing.assert_array_equal(got, [0, 1])


def test_busy_party_is_not_fooled_by_its_own_stale_clock(world_factory):
    """A party that computed for longer than the timeout without reading its
    socket finds its peers' heartbeats queued there: no false PeerTimeout."""
    w = world_factory(["node0", "node1"], timeout=1.0, heartbeat=0.2, startup_grace=0.0)
    a, b = w.channels["node0"], w.channels["node1"]
    b.send("node0", "first", np.arange(1, dtype=np.int64))
    a.recv("node1", "first")

    def node1():
        time.sleep(2.5)
        b.send("node0", "second", np.arange(1, dtype=np.int64))

    def node0():
        time.sleep(2.0)  # "busy": does not read its socket for 2 timeouts
        return a.recv("node1", "second")

    run_parallel(node1, node0)


def test_dropped_connection_is_reported_before_the_timeout(world_factory):
    w = world_factory(["node0", "node1"], timeout=30.0, heartbeat=0.2, disconnect_grace=0.5)
    a, b = w.channels["node0"], w.channels["node1"]
    b.send("node0", "hello", np.arange(1, dtype=np.int64))
    a.recv("node1", "hello")
    b.send("node0", "last", np.arange(1, dtype=np.int64))
    time.sleep(0.3)
    b.close()  # node1 goes away: its router closes our link to it
    w.routers["node1"].close(0)
    del w.channels["node1"]
    # its last message, sent before it left, is still delivered
    np.testing.assert_array_equal(a.recv("node1", "last"), [0])
    start = time.monotonic()
    with pytest.raises(PeerTimeout, match="node0: peer node1 closed its connection") as info:
        a.recv("node1", "never")
    assert time.monotonic() - start < 5.0
    assert "'never'" in str(info.value)


def test_a_lingering_channel_of_the_same_party_does_not_steal_its_messages(world_factory):
    """A node restarted right after a failed job has its new channel and the
    old one (still lingering, reconnecting) both connected under its name: the
    newer connection must not take the older one's messages away."""
    w = world_factory(["node0", "node1"], timeout=1.0, heartbeat=0.1, startup_grace=0.0)
    a = w.channels["node0"]
    peers = {"node0": w.endpoints["node0"]}
    public = {n: k[0] for n, k in w.keys.items()}

    def channel():
        ch = ZmqChannel("node1", w.routers["node1"], peers, context=w.context, keys=w.keys["node1"],
                        peer_keys=public, ring=w.ring, timeout=1.0, heartbeat=0.1, startup_grace=0.0)
        w.channels[f"node1-{len(w.channels)}"] = ch
        return ch

    newer = channel()
    time.sleep(0.3)
    channel()                       # connects last, under the same party name
    time.sleep(0.3)
    newer.send("node0", "x", np.arange(3, dtype=np.int64))
    np.testing.assert_array_equal(a.recv("node1", "x"), [0, 1, 2])


def test_messages_lost_in_transit_fail_the_wait(world_factory):
    """A live peer (heartbeats keep coming) whose message never arrives: the
    wait fails after lost_grace instead of hanging."""
    w = world_factory(["node0", "node1"], timeout=0.5, heartbeat=0.1, startup_grace=0.0)
    a, b = w.channels["node0"], w.channels["node1"]
    b.send("node0", "first", np.arange(1, dtype=np.int64))
    a.recv("node1", "first")
    b._sent["node0"] += 1           # as if a message had gone out and vanished
    start = time.monotonic()
    with pytest.raises(PeerTimeout, match=r"1 message\(s\) from node1 were lost in transit") as info:
        a.recv("node1", "second")
    assert a.lost_grace - 0.2 < time.monotonic() - start < a.lost_grace + 3.0
    assert "'second'" in str(info.value)
