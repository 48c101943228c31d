"""The ZeroMQ Channel: TCP, CurveZMQ, heartbeats and bounded waits.

Topology: every party binds one ROUTER socket and connects one DEALER socket
to each peer's ROUTER, so a message from A to B travels A.dealer[B] ->
B.router and arrives tagged with A's routing id: its name and a nonce of the
channel (``node1@3fa2c0de``).  The nonce keeps a job's sockets apart from those
of an earlier job still lingering (a node restarted within a second of a failed
job would otherwise have its new socket's connection handed over to the old
one, and messages lost).  With
CurveZMQ the ROUTER is a CURVE server that admits only the public keys of the
study (ZAP through pyzmq's ThreadAuthenticator; a daemon's peer socket only
those of the nodes and the dealer); the authenticated key is checked against
the routing id, so a party cannot speak under another's name.  Frames over
MAX_FRAME_BYTES close the sender's connection; a malformed message that does
not carry the current job's id (junk queued while no job ran) is logged and
dropped, one that does stops the job.

Liveness: a heartbeat thread sends a control message to every peer every
``heartbeat`` seconds over its own DEALER sockets (routing id
``name#hb@nonce``), carrying how many messages the channel has sent that peer.
While a party waits for a peer, any message from that peer (data or
heartbeat) proves it alive; after ``timeout`` seconds of silence the wait
raises PeerTimeout naming the peer, the step and the phase.  A dropped TCP
connection (the peer's process died) fails the wait sooner, after
``disconnect_grace`` seconds without a message.  A peer that is alive but
whose messages stopped arriving (its heartbeats count more messages than came)
fails the wait after ``3 * timeout`` seconds without a message from it, instead
of never.  A party that fails sends an abort control message so the others stop
at once.
"""
from __future__ import annotations

import logging
import secrets
import threading
import time

import msgpack
import zmq
import zmq.auth.thread
from zmq.utils.monitor import recv_monitor_message

from mpc.errors import PeerAborted, PeerTimeout, ProtocolError
from mpc.net import frames
from mpc.net.channel import Channel

HB_SUFFIX = "#hb"
NONCE_SEP = "@"
MAX_FRAME_BYTES = 64 << 20
"""Largest frame a server socket accepts (ZMQ_MAXMSGSIZE): every frame a party
sends is a small header or a payload chunk of at most frames.CHUNK_BYTES, so a
bigger one is hostile or broken; ZeroMQ drops it and closes that connection
before buffering it (the sender may reconnect)."""
ZERO_COPY_BYTES = 64 << 10
ZAP_DOMAIN = "mpcgwas"
PEER_ZAP_DOMAIN = "mpcgwas-peer"      # peer sockets: computation nodes and the dealer only


class KeyRing:
    """Public keys of the study, z85 text -> party name."""

    def __init__(self, names_to_keys: dict):
        self.by_key = {}
        self.update(names_to_keys)

    def update(self, names_to_keys: dict) -> None:
        for name, key in names_to_keys.items():
            k = key.decode() if isinstance(key, bytes) else str(key)
            self.by_key[k] = name

    def name_of(self, z85_key) -> str | None:
        k = z85_key.decode() if isinstance(z85_key, bytes) else str(z85_key)
        return self.by_key.get(k)


class _KeyCallback:
    def __init__(self, ring: KeyRing, log: logging.Logger, admit=None, what: str = "this"):
        self.ring = ring
        self.log = log
        self.admit = None if admit is None else frozenset(admit)
        self.what = what

    def callback(self, domain, key):
        name = self.ring.name_of(key)
        if name is None:
            self.log.warning("refused a CurveZMQ connection from a key not in the study: %s",
                             key.decode() if isinstance(key, bytes) else key)
            return False
        if self.admit is not None and name not in self.admit:
            self.log.warning("refused a CurveZMQ connection from %s to the %s socket (only %s may connect)",
                             name, self.what, ", ".join(sorted(self.admit)))
            return False
        return True


def start_authenticator(context: zmq.Context, ring: KeyRing, log: logging.Logger, peers=None):
    """Start ZAP for `context`: only keys of `ring` may connect to CURVE servers.

    With `peers` (names), sockets made with ``zap_domain=PEER_ZAP_DOMAIN``
    admit only those parties (a daemon's peer socket: nodes and the dealer;
    providers and analysts have no business there)."""
    auth = zmq.auth.thread.ThreadAuthenticator(context, log=logging.getLogger("mpcgwas.zap"))
    auth.start()
    auth.configure_curve_callback(domain=ZAP_DOMAIN, credentials_provider=_KeyCallback(ring, log))
    if peers is not None:
        auth.configure_curve_callback(domain=PEER_ZAP_DOMAIN,
                                      credentials_provider=_KeyCallback(ring, log, peers, "peer"))
    return auth


def make_server(context, endpoint: str, keys, *, linger: int = 1000, zap_domain: str = ZAP_DOMAIN,
                max_frame: int = MAX_FRAME_BYTES):
    """A bound ROUTER (CURVE server when keys = (public, secret)).

    `zap_domain` picks who may connect (see ``start_authenticator``); a frame
    over `max_frame` bytes closes the sender's connection."""
    sock = context.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, linger)
    sock.setsockopt(zmq.MAXMSGSIZE, max(max_frame, 2 * frames.CHUNK_BYTES))
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
    if keys is not None:
        sock.curve_server = True
        sock.curve_publickey, sock.curve_secretkey = keys
        sock.zap_domain = zap_domain.encode()
    sock.bind(endpoint)
    return sock


def make_client(context, endpoint: str, routing_id: str, keys, server_key, *, linger: int = 1000):
    """A DEALER connected to `endpoint` (CURVE client when keys are given)."""
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, linger)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.setsockopt(zmq.ROUTING_ID, routing_id.encode())
    sock.setsockopt(zmq.IMMEDIATE, 0)
    if keys is not None:
        sock.curve_publickey, sock.curve_secretkey = keys
        sock.curve_serverkey = server_key if isinstance(server_key, bytes) else server_key.encode()
    sock.connect(endpoint)
    return sock


class ZmqChannel(Channel):
    """Channel over ZeroMQ TCP sockets.

    Parameters
    ----------
    me : str
    router : zmq.Socket
        This party's bound ROUTER (see ``make_server``); the channel reads it.
    peers : dict name -> endpoint
    keys : (public, secret) z85 bytes or None
        None only for the explicit plaintext mode (benchmarks on loopback).
    peer_keys : dict name -> z85 public key, or None
    ring : KeyRing or None
        Maps authenticated keys to names (required with CURVE).
    timeout : float
        Seconds of silence after which a peer is declared dead.
    heartbeat : float
        Seconds between heartbeats.
    startup_grace : float
        Extra seconds allowed for a peer's first sign of life.
    session : str, optional
        Job id stamped on every message; messages of other jobs are dropped.
    disconnect_grace : float
        Seconds a wait for a peer whose TCP connection dropped may still last
        without a message from it (capped at `timeout`).
    """

    def __init__(self, me, router, peers: dict, *, context, keys=None, peer_keys=None,
                 ring: KeyRing | None = None, timeout: float = 10.0, heartbeat: float = 1.0,
                 startup_grace: float = 30.0, log: logging.Logger | None = None,
                 session: str | None = None, disconnect_grace: float = 2.0):
        super().__init__(me, peers.keys(), session)
        self.log = log or logging.getLogger(f"mpcgwas.net.{me}")
        self.context = context
        self.router = router
        self.timeout = timeout
        self.keys = keys
        self.ring = ring
        if keys is not None and ring is None:
            raise ValueError("ZmqChannel: CURVE mode needs a KeyRing to check peer identities")
        nonce = secrets.token_hex(4)
        self._data_id = f"{me}{NONCE_SEP}{nonce}"
        self._hb_id = f"{me}{HB_SUFFIX}{NONCE_SEP}{nonce}"
        self.dealers = {
            name: make_client(context, ep, self._data_id, keys, (peer_keys or {}).get(name))
            for name, ep in peers.items()
        }
        # Lost-message watch: messages sent to each peer (announced in our
        # heartbeats), messages received per sender routing id, and what each
        # peer's heartbeats announced: (its data routing id, count).
        self._sent = {p: 0 for p in self.peers}
        self._got = {}
        self._got_at = {}
        self._announced = {}
        self._short_since = {}
        self.lost_grace = 3.0 * timeout
        # A peer whose process dies closes its TCP connections: the monitor of
        # our link to it reports the disconnection at once, and a wait for it
        # fails after disconnect_grace seconds without a message (time for data
        # still in flight), instead of after the full timeout.
        self.disconnect_grace = min(disconnect_grace, timeout)
        # Monitor endpoints of their own: pyzmq's default (from the socket's file
        # descriptor) collides when a closed socket's monitor is not yet released.
        self._monitors = {name: sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED,
                                                        addr=f"inproc://monitor.{me}.{name}.{secrets.token_hex(8)}")
                          for name, sock in self.dealers.items()}
        self._lost = {}
        now = time.monotonic()
        self.last_seen = {p: now + startup_grace for p in self.peers}
        self._heard = {p: 0.0 for p in self.peers}
        self._stop = threading.Event()
        self._hb = threading.Thread(target=self._heartbeat_loop,
                                    args=(dict(peers), peer_keys, heartbeat),
                                    name=f"{me}-heartbeat", daemon=True)
        self._hb.start()
        self._poller = zmq.Poller()
        self._poller.register(router, zmq.POLLIN)
        for monitor in self._monitors.values():
            self._poller.register(monitor, zmq.POLLIN)

    # -- heartbeats
    def _heartbeat_loop(self, peers, peer_keys, interval):
        socks = {n: make_client(self.context, ep, self._hb_id, self.keys,
                                (peer_keys or {}).get(n), linger=0) for n, ep in peers.items()}
        try:
            while not self._stop.wait(interval):
                for n, s in socks.items():
                    try:
                        s.send_multipart(frames.encode_control("hb", n=self._sent[n]), flags=zmq.NOBLOCK)
                    except zmq.Again:
                        pass
        finally:
            for s in socks.values():
                s.close(0)

    # -- Channel primitives
    def _send_frames(self, peer, msg_frames):
        # Zero-copy pays only for large frames; small ones are cheaper copied (measured 3 vs 8 us).
        big = sum(len(f) for f in msg_frames) >= ZERO_COPY_BYTES
        self.dealers[peer].send_multipart(msg_frames, copy=not big)
        self._sent[peer] += 1

    def _identify(self, msg):
        """(Sender name, routing id) of a ROUTER message, the name checked
        against its CURVE key; None for a message to drop."""
        claimed = bytes(msg[0]).decode("utf-8", "replace")
        base = claimed.split(NONCE_SEP, 1)[0]
        base = base[:-len(HB_SUFFIX)] if base.endswith(HB_SUFFIX) else base
        if self.keys is not None:
            try:
                user = msg[1].get("User-Id")
            except (zmq.ZMQError, AttributeError):
                user = None
            if user is None or self.ring.name_of(user) != base:
                self.log.warning("dropped a message whose routing id %r does not match its key", claimed)
                return None
        if base not in self._inbox:
            self.log.warning("dropped a message from %r, not a peer of %s", claimed, self.me)
            return None
        return base, claimed

    def _drain(self) -> None:
        """Move every message waiting in the ROUTER into the inboxes."""
        while True:
            try:
                msg = self.router.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            if len(msg) < 2:
                continue
            who = self._identify(msg)
            if who is None:
                continue
            sender, claimed = who
            now = time.monotonic()
            self.last_seen[sender] = now
            self._heard[sender] = now
            base = claimed.split(NONCE_SEP, 1)[0]
            if base.endswith(HB_SUFFIX):
                self._note_heartbeat(sender, claimed, msg[1])
                continue
            self._got[claimed] = self._got.get(claimed, 0) + 1
            self._got_at[claimed] = now
            self._deliver(sender, msg[1:])

    def _note_heartbeat(self, sender, claimed, raw) -> None:
        """Remember how many messages `sender`'s channel says it has sent us."""
        try:
            parsed = frames.decode_header(bytes(raw), f"{sender} to {self.me}")
        except ProtocolError:
            return
        count = parsed[1].get("n") if isinstance(parsed, tuple) else None
        if isinstance(count, int) and NONCE_SEP in claimed:
            nonce = claimed.split(NONCE_SEP, 1)[1]
            self._announced[sender] = (f"{sender}{NONCE_SEP}{nonce}", count)

    def _check_lost(self, peer, tag, now) -> None:
        """Fail if `peer` announced messages that have not come for lost_grace seconds."""
        announced = self._announced.get(peer)
        if announced is None:
            return
        data_id, count = announced
        got = self._got.get(data_id, 0)
        if got >= count:
            self._short_since.pop(peer, None)
            return
        since = max(self._short_since.setdefault(peer, now), self._got_at.get(data_id, 0.0))
        if now - since > self.lost_grace:
            raise PeerTimeout(f"{self.me}: {count - got} message(s) from {peer} were lost in transit (it sent "
                              f"{count}, {got} arrived; nothing came for {now - since:.1f} s) while waiting for "
                              f"step {tag!r} in phase {self.stats.current}")

    def _deliver(self, sender, msg_frames) -> None:
        """Channel._deliver, except that a malformed message which does not claim
        this job is logged and dropped.

        A peer's ROUTER socket queues whatever arrives while no job runs, and
        the next job's channel drains it all: junk from that time must not
        stop the job.  Every message of a job carries its id (``j``), so a
        malformed message that names this job is a protocol error; one that
        names no job, or another, belongs to no one and is dropped."""
        try:
            super()._deliver(sender, msg_frames)
        except PeerAborted:
            raise
        except ProtocolError as exc:
            if self.session is None or self._claims_this_job(msg_frames[0]):
                raise
            self.log.warning("%s dropped a malformed message from %s that belongs to no current job: %s",
                             self.me, sender, exc)

    def _claims_this_job(self, raw) -> bool:
        try:
            obj = msgpack.unpackb(bytes(raw)[:frames.MAX_HEADER_BYTES], raw=False, strict_map_key=False,
                                  max_bin_len=0, max_array_len=64, max_map_len=16, max_str_len=1024)
        except Exception:  # noqa: BLE001 - garbage: it claims nothing
            return False
        return isinstance(obj, dict) and obj.get("j") == self.session

    def _watch_links(self) -> None:
        """Note TCP disconnections (and reconnections) of our link to each peer."""
        for peer, monitor in self._monitors.items():
            while True:
                try:
                    event = recv_monitor_message(monitor, flags=zmq.NOBLOCK)["event"]
                except zmq.Again:
                    break
                if event == zmq.EVENT_DISCONNECTED:
                    self._lost.setdefault(peer, time.monotonic())
                elif event == zmq.EVENT_CONNECTED:
                    self._lost.pop(peer, None)

    def _poll_nowait(self, peer):
        self._drain()

    def _pump(self, peer, tag):
        queued = len(self._inbox[peer])  # return once one more message is there
        while True:
            # Drain first: a party back from a long computation finds its
            # peers' heartbeats queued in the socket, not a stale last_seen.
            try:
                self._drain()
            except PeerAborted as exc:   # say where this party was when the news came
                raise PeerAborted(f"{exc} (while {self.me} waited for {peer} at step {tag!r} in phase "
                                  f"{self.stats.current})") from None
            self._watch_links()
            if len(self._inbox[peer]) > queued:
                return
            now = time.monotonic()
            silent = now - self.last_seen[peer]
            if silent > self.timeout:
                raise PeerTimeout(f"{self.me}: peer {peer} silent for {silent:.1f} s (limit {self.timeout} s) "
                                  f"while waiting for step {tag!r} in phase {self.stats.current}")
            self._check_lost(peer, tag, now)
            lost = self._lost.get(peer)
            if lost is not None and now - max(lost, self._heard[peer]) > self.disconnect_grace:
                raise PeerTimeout(f"{self.me}: peer {peer} closed its connection {now - lost:.1f} s ago and "
                                  f"sent nothing since, while waiting for step {tag!r} in phase "
                                  f"{self.stats.current}")
            self._poller.poll(timeout=250)  # wakes on a message or a link event

    def close(self) -> None:
        self._stop.set()
        self._hb.join(timeout=5)
        for peer, monitor in self._monitors.items():
            try:
                self.dealers[peer].disable_monitor()
            except zmq.ZMQError:
                pass
            monitor.close(0)
        self._monitors = {}
        for s in self.dealers.values():
            s.close()
