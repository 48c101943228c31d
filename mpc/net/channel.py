"""The Channel interface, traffic accounting, and the in-process implementation.

A Channel connects one party to its peers.  ``send`` is asynchronous;
``recv`` blocks for the next message from one peer and checks that its tag,
dtype and shape are the expected ones; ``exchange`` sends to several peers and
then receives from each of them: one communication round.  Every channel
counts bytes, messages and rounds per named phase (``stats``).

Rounds count a party's own waits; **hops** count latency.  Every data message
carries its sender's hop clock and a receiver moves its clock to at least the
message's plus one (a Lamport clock), so a party's clock is the number of
one-way message latencies on the longest causal chain behind what it has
received, the dealer's requests and answers included.  On a link with one-way
delay D the wall time is at least hops x D: the figure to minimise for WANs.
A phase's hops are the advances of the clock during it.

Messages from one peer arrive in the order they were sent.  ``recv`` takes
the head of that peer's queue and a different tag there is a protocol error
(the parties disagree about the step) — except with ``any_order=True`` (the
dealer link, where responses are consumed in request order but the protocol
may collect them later).
"""
from __future__ import annotations

import collections
import queue
import threading
import time
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, field as dc_field

import numpy as np

from mpc.errors import PeerAborted, PeerTimeout, ProtocolError
from mpc.net import frames


@dataclass
class PhaseTraffic:
    bytes_sent: int = 0
    bytes_received: int = 0
    messages_sent: int = 0
    rounds: int = 0
    hops: int = 0
    seconds: float = 0.0


@dataclass
class TrafficStats:
    """Bytes, messages and rounds per named phase."""

    phases: dict = dc_field(default_factory=lambda: collections.defaultdict(PhaseTraffic))
    current: str = "setup"

    @contextmanager
    def phase(self, name: str):
        previous, self.current = self.current, name
        start = time.perf_counter()
        try:
            yield self.phases[name]
        finally:
            self.phases[name].seconds += time.perf_counter() - start
            self.current = previous

    @property
    def now(self) -> PhaseTraffic:
        return self.phases[self.current]

    def total(self) -> PhaseTraffic:
        out = PhaseTraffic()
        for p in self.phases.values():
            out.bytes_sent += p.bytes_sent
            out.bytes_received += p.bytes_received
            out.messages_sent += p.messages_sent
            out.rounds += p.rounds
            out.hops += p.hops
        return out

    def as_dict(self) -> dict:
        return {name: vars(p).copy() for name, p in self.phases.items()}


class Channel(ABC):
    """One party's links to its peers.

    Parameters
    ----------
    me : str
        This party's name (``node0``, ``dealer``, ...).
    peers : sequence of str
        Names of the parties it talks to.
    """

    def __init__(self, me: str, peers, session: str | None = None):
        self.me = me
        self.peers = tuple(peers)
        self.session = session
        self.stats = TrafficStats()
        self.hops = 0                     # the hop clock (module docstring)
        self._inbox = {p: collections.deque() for p in self.peers}

    # -- to be provided by an implementation
    @abstractmethod
    def _send_frames(self, peer: str, frames_: list) -> None: ...

    @abstractmethod
    def _pump(self, peer: str, tag: str) -> None:
        """Block until at least one more message from `peer` is in its inbox
        (raising PeerTimeout / PeerAborted instead of waiting forever)."""

    def close(self) -> None:
        pass

    def abort(self, reason: str) -> None:
        """Tell every peer that this party stops (best effort)."""
        for p in self.peers:
            try:
                self._send_frames(p, frames.encode_control("abort", reason=reason[:500], j=self.session))
            except Exception:  # noqa: BLE001 - the peer may already be gone
                pass

    # -- public interface
    def _check_peer(self, peer: str) -> None:
        if peer not in self._inbox:
            raise ProtocolError(f"{self.me}: {peer!r} is not a peer of this channel (peers: {self.peers})")

    def send(self, peer: str, tag: str, array: np.ndarray, *, is_field: bool | None = None) -> None:
        """Send one array (field arrays are uint64 with a trailing limb axis of 2).

        The array must not be modified afterwards (it may be sent zero-copy)."""
        self._check_peer(peer)
        if is_field is None:  # a uint64 array with a trailing axis of 2 is taken for field elements
            is_field = array.dtype == np.uint64 and array.ndim >= 2 and array.shape[-1] == 2
        msg = frames.encode_data(tag, array, is_field, self.session, self.hops)
        self._send_frames(peer, msg)
        self.stats.now.bytes_sent += array.nbytes + len(msg[0])
        self.stats.now.messages_sent += 1

    def recv(self, peer: str, tag: str, *, dtype: str | None = None, shape=None,
             any_order: bool = False, count_round: bool = True) -> np.ndarray:
        """Receive the next array from `peer`, which must carry `tag`.

        Parameters
        ----------
        dtype : str, optional
            Expected dtype code ("f127", "u64", ...); checked when given.
        shape : tuple, optional
            Expected logical shape; checked when given.
        any_order : bool
            Take the oldest message with this tag even if others precede it.
        count_round : bool
            Count this wait as a communication round of the current phase.
        """
        self._check_peer(peer)
        box = self._inbox[peer]
        while True:
            found = None
            if any_order:
                for i, (h, _) in enumerate(box):
                    if h.tag == tag:
                        found = i
                        break
            elif box:
                found = 0
            if found is not None:
                break
            self._pump(peer, tag)
        header, array = box[found]
        del box[found]
        if header.tag != tag:
            raise ProtocolError(f"{self.me} expected step {tag!r} from {peer} but received {header.tag!r} "
                                f"(phase {self.stats.current}): the parties are out of step")
        if dtype is not None and header.dtype != dtype:
            raise ProtocolError(f"{self.me} expected dtype {dtype} from {peer} at step {tag!r}, got {header.dtype}")
        if shape is not None and tuple(header.shape) != tuple(shape):
            raise ProtocolError(f"{self.me} expected shape {tuple(shape)} from {peer} at step {tag!r}, "
                                f"got {tuple(header.shape)}")
        self.stats.now.bytes_received += array.nbytes
        if header.hops >= self.hops:
            self.stats.now.hops += header.hops + 1 - self.hops
            self.hops = header.hops + 1
        if count_round:
            self.stats.now.rounds += 1
        return array

    def pending(self, peer: str, tag: str) -> bool:
        """Whether a message with `tag` from `peer` has already arrived (never blocks)."""
        self._check_peer(peer)
        self._poll_nowait(peer)
        return any(h.tag == tag for h, _ in self._inbox[peer])

    def _poll_nowait(self, peer: str) -> None:
        """Move whatever has arrived from `peer` into its inbox without waiting."""

    def exchange(self, peers, tag: str, arrays, *, dtype: str | None = None, shape=None) -> dict:
        """Send to each peer (one array for all, or a dict per peer), then
        receive one array from each: one round."""
        peers = tuple(peers)
        is_field = None if dtype is None else dtype == "f127"
        for p in peers:
            a = arrays[p] if isinstance(arrays, dict) else arrays
            self.send(p, tag, a, is_field=is_field)
        out = {}
        for p in peers:
            out[p] = self.recv(p, tag, dtype=dtype, shape=shape, count_round=False)
        self.stats.now.rounds += 1
        return out

    def exchange_parts(self, peers, tag: str, parts, *, dtype: str = "f127") -> dict:
        """Like exchange, for the concatenation of `parts` (each flattened;
        field arrays to (k, 2)) without building it: one message per peer,
        then one 1-D array received from each peer.  One round."""
        peers = tuple(peers)
        msg, nbytes = frames.encode_parts(tag, parts, dtype == "f127", self.session, self.hops)
        length = (sum(p.size // 2 if dtype == "f127" else p.size for p in parts),)
        for p in peers:
            self._check_peer(p)
            self._send_frames(p, msg)
            self.stats.now.bytes_sent += nbytes + len(msg[0])
            self.stats.now.messages_sent += 1
        out = {p: self.recv(p, tag, dtype=dtype, shape=length, count_round=False) for p in peers}
        self.stats.now.rounds += 1
        return out

    def broadcast(self, peers, tag: str, array: np.ndarray) -> None:
        for p in peers:
            self.send(p, tag, array)

    def _deliver(self, sender: str, msg_frames: list) -> None:
        """Validate one incoming message and queue it (or act on a control message)."""
        route = f"{sender} to {self.me}"  # errors name both ends of the link
        parsed = frames.decode_header(bytes(msg_frames[0]), route)
        if isinstance(parsed, tuple):
            kind, obj = parsed
            if obj.get("c") == "batch" and obj.get("j") == self.session:
                self._deliver_batch(sender, obj, msg_frames[1:], route)
                return
            if obj.get("c") == "abort" and obj.get("j") == self.session:
                raise PeerAborted(f"{self.me}: peer {sender} stopped: {str(obj.get('reason', ''))[:500]}")
            return  # heartbeats, other jobs' aborts and unknown control kinds only prove liveness
        if parsed.session != self.session:
            return  # a stale message of another job
        array = frames.decode_payload(parsed, [memoryview(f) for f in msg_frames[1:]], route)
        self._inbox[sender].append((parsed, array))


    def _deliver_batch(self, sender: str, obj: dict, rest: list, route: str) -> None:
        """Queue every array of a batch message (send_batch), in order."""
        for header, array in frames.decode_batch(rest, obj.get("n"), route):
            if header.session != self.session:
                raise ProtocolError(f"batch item of another job from {route}")
            self._inbox[sender].append((header, array))

    def send_batch(self, peer: str, items) -> None:
        """Send several small (tag, array, is_field) in one message; each is received on its own.
        (Three frames whatever the count: per-frame costs dominate small messages.)"""
        self._check_peer(peer)
        items = list(items)
        if not items:
            return
        msg = frames.encode_batch(items, self.session, self.hops)
        self._send_frames(peer, msg)
        self.stats.now.bytes_sent += sum(len(f) for f in msg)
        self.stats.now.messages_sent += 1


class InProcessHub:
    """Queues between parties that run as threads of one process (unit tests)."""

    def __init__(self, names, timeout: float = 30.0):
        self.names = tuple(names)
        self.timeout = timeout
        self.queues = {(a, b): queue.Queue() for a in self.names for b in self.names if a != b}
        self.closed = threading.Event()

    def channel(self, me: str, peers=None) -> "InProcessChannel":
        peers = [n for n in self.names if n != me] if peers is None else peers
        return InProcessChannel(self, me, peers)


class InProcessChannel(Channel):
    """Channel over in-memory queues; messages are copied, as on a wire."""

    def __init__(self, hub: InProcessHub, me: str, peers):
        super().__init__(me, peers)
        self.hub = hub

    def _send_frames(self, peer, msg_frames):
        self.hub.queues[(self.me, peer)].put([bytes(f) for f in msg_frames])

    def _poll_nowait(self, peer):
        q = self.hub.queues[(peer, self.me)]
        while True:
            try:
                msg = q.get_nowait()
            except queue.Empty:
                return
            self._deliver(peer, msg)

    def _pump(self, peer, tag):
        try:
            msg = self.hub.queues[(peer, self.me)].get(timeout=self.hub.timeout)
        except queue.Empty:
            raise PeerTimeout(f"{self.me}: no message from {peer} within {self.hub.timeout} s "
                              f"(waiting for step {tag!r}, phase {self.stats.current})") from None
        self._deliver(peer, msg)
