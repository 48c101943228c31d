"""Requests and replies between clients (providers, analysts) and daemons.

A message is ``[command]`` or ``[command, array header, chunk, ...]``: the
command is a small msgpack map (``{"cmd": "status"}``, ``{"event": "progress",
...}``), optionally followed by one array in the channel wire format
(mpc.net.frames).  Everything from the network is validated before use; a
malformed message gets an error reply and never crashes a daemon.

``ServiceClient`` is a DEALER socket to one daemon (CURVE client when the
study uses CurveZMQ) with bounded waits: a daemon that does not answer within
the timeout is reported by name ("is it running?").

Routing ids: a client connects as ``<name>.<random hex>``, and the server
admits a request only if ``<name>`` is the party its CurveZMQ key belongs to.
The random part matters: ZeroMQ routes a reply to whichever connection holds
the routing id *now*, and a ROUTER hands an id over to a newer connection, so
with bare names any study key (a provider) could connect as ``analyst`` and
take the analyst's result shares.  The random part travels inside the CURVE
handshake (encrypted) and is known only to the client that drew it.
"""
from __future__ import annotations

import logging
import traceback
import secrets
import time

import msgpack
import numpy as np
import zmq
from zmq.utils.monitor import recv_monitor_message

from mpc.errors import MpcError, ProtocolError
from mpc.net import frames
from mpc.net.zmq_channel import PEER_ZAP_DOMAIN, KeyRing, make_client, make_server, start_authenticator

MAX_COMMAND_BYTES = 1 << 20


class ServiceError(MpcError):
    """A daemon refused or failed a request; the message says why."""


def pack(cmd: dict, array: np.ndarray | None = None, is_field: bool = True) -> list:
    out = [msgpack.packb(cmd)]
    if array is not None:
        out += frames.encode_data(cmd.get("name", "array"), array, is_field)
    return out


def unpack(msg: list, sender: str, max_payload: int = frames.DEFAULT_MAX_PAYLOAD):
    """(command dict, array or None) from message frames; ProtocolError if malformed."""
    if not msg:
        raise ProtocolError(f"empty message from {sender}")
    raw = bytes(msg[0])
    if len(raw) > MAX_COMMAND_BYTES:
        raise ProtocolError(f"command from {sender} is {len(raw)} bytes (limit {MAX_COMMAND_BYTES})")
    try:
        cmd = msgpack.unpackb(raw, raw=False, strict_map_key=True, max_bin_len=1 << 16)
    except Exception as exc:  # noqa: BLE001 - msgpack raises many types on garbage
        raise ProtocolError(f"malformed command from {sender}: {exc}") from None
    if not isinstance(cmd, dict):
        raise ProtocolError(f"malformed command from {sender}: not a map")
    array = None
    if len(msg) > 1:
        header = frames.decode_header(bytes(msg[1]), sender, max_payload)
        if not isinstance(header, frames.Header):
            raise ProtocolError(f"malformed array header from {sender}")
        array = frames.decode_payload(header, [memoryview(f) for f in msg[2:]], sender)
    return cmd, array


class ServiceServer:
    """A daemon's service socket: a ROUTER that knows who is speaking.

    With CurveZMQ the authenticated key names the client (study key ring);
    without it (plaintext mode) the client's routing id is trusted."""

    def __init__(self, context, endpoint: str, keys, ring: KeyRing | None, log: logging.Logger):
        self.sock = make_server(context, endpoint, keys, linger=1000)
        self.ring = ring
        self.curve = keys is not None
        self.log = log

    def recv(self, timeout_ms: int):
        """(client routing id, client name, frames) or None on timeout."""
        if not self.sock.poll(timeout_ms):
            return None
        msg = self.sock.recv_multipart(copy=False)
        if len(msg) < 2:
            return None
        ident = bytes(msg[0])
        claimed = ident.decode("utf-8", "replace")
        base = claimed.split(".", 1)[0]       # party names contain no "." (parties.study)
        if self.curve:
            try:
                user = msg[1].get("User-Id")
            except zmq.ZMQError:
                user = None
            name = self.ring.name_of(user) if user else None
            if name is None or name != base:
                self.log.warning("dropped a request whose routing id %r does not match its key (%s)",
                                 claimed, name or "unknown")
                return None
        else:
            name = base
        return ident, name, msg[1:]

    def serve_one(self, timeout_ms: int, handle, who: str) -> None:
        """Answer at most one request: unpack it, call handle(name, ident, cmd, array)
        and send its reply (None: no reply).  A refused request (a user or peer
        mistake) gets its error; anything else is logged with its traceback and
        refused too: a bad request never ends the daemon."""
        got = self.recv(timeout_ms)
        if got is None:
            return
        ident, name, frames_ = got
        try:
            cmd, array = unpack(frames_, name)
            reply = handle(name, ident, cmd, array)
        except (MpcError, ValueError, KeyError, TypeError) as exc:
            self.log.warning("request from %s refused: %s", name, exc)
            reply = {"ok": False, "error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - a bad request never stops the daemon
            self.log.error("request from %s failed: %s: %s\n%s", name, type(exc).__name__, exc,
                           traceback.format_exc())
            reply = {"ok": False, "error": f"{who} could not handle the request: {type(exc).__name__}: {exc}"}
        if reply is not None:
            self.reply(ident, reply)

    def reply(self, ident: bytes, cmd: dict, array: np.ndarray | None = None, is_field: bool = True):
        self.sock.send_multipart([ident] + pack(cmd, array, is_field), copy=False)

    def close(self):
        self.sock.close()


DISCONNECT_GRACE = 2.0
"""Seconds a client's closed connection to a daemon may stay closed before the
daemon is taken for gone (a restarted daemon is back well within it)."""


class ServiceClient:
    """A client's connection to one daemon's service socket.

    A daemon whose process ends closes its TCP connection; a monitor sees
    that, so a wait for its answer ends DISCONNECT_GRACE seconds later
    instead of after the whole `timeout` (which bounds a daemon that is up
    but silent, or slow on a large request)."""

    def __init__(self, context, endpoint: str, me: str, peer: str, keys=None, server_key=None,
                 timeout: float = 30.0):
        self.peer = peer
        self.timeout = timeout
        # A routing id no other party can guess (see the module docstring).
        self.routing_id = f"{me}.{secrets.token_hex(8)}"
        self.sock = make_client(context, endpoint, self.routing_id, keys, server_key, linger=2000)
        # An address of its own: pyzmq's default (from the socket's file descriptor)
        # collides when a closed client's monitor endpoint is not yet released.
        self._monitor = self.sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED,
                                                     addr=f"inproc://monitor.{self.routing_id}")
        self._lost = None

    def send(self, cmd: dict, array: np.ndarray | None = None, is_field: bool = True) -> None:
        self.sock.send_multipart(pack(cmd, array, is_field), copy=False)

    def connection_lost(self) -> float | None:
        """Seconds since the connection to the daemon closed and stayed closed, or None."""
        while self._monitor is not None:
            try:
                event = recv_monitor_message(self._monitor, flags=zmq.NOBLOCK)["event"]
            except zmq.Again:
                break
            if event == zmq.EVENT_DISCONNECTED:
                self._lost = self._lost or time.monotonic()
            elif event == zmq.EVENT_CONNECTED:
                self._lost = None
        return None if self._lost is None else time.monotonic() - self._lost

    def recv(self, timeout: float | None = None):
        """(reply, array); ServiceError if the daemon is silent for `timeout` s or its
        connection closed more than DISCONNECT_GRACE s ago."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while not self.sock.poll(int(1000 * min(0.25, max(0.0, deadline - time.monotonic())))):
            lost = self.connection_lost()
            if lost is not None and lost > DISCONNECT_GRACE:
                raise ServiceError(f"no answer from {self.peer}: its connection closed {lost:.1f} s ago "
                                   f"and did not come back (did it stop?)")
            if time.monotonic() >= deadline:
                raise ServiceError(f"no answer from {self.peer} within {timeout:g} s "
                                   f"(is it running, and is this party's key in the study?)")
        reply, array = unpack(self.sock.recv_multipart(copy=False), self.peer)
        return reply, array

    def call(self, cmd: dict, array: np.ndarray | None = None, timeout: float | None = None,
             is_field: bool = True):
        """Send a request and return (reply, array); a refusal raises ServiceError."""
        self.send(cmd, array, is_field)
        reply, out = self.recv(timeout)
        if not reply.get("ok", False):
            raise ServiceError(f"{self.peer}: {reply.get('error', 'request refused')}")
        return reply, out

    def close(self):
        if self._monitor is not None:
            try:
                self.sock.disable_monitor()
            except zmq.ZMQError:
                pass
            self._monitor.close(0)
            self._monitor = None
        self.sock.close()


class ClientContext:
    """A zmq context (with ZAP) for a client talking to the daemons of a study."""

    def __init__(self, study, me: str, key_file=None):
        self.study = study
        self.me = me
        self.context = zmq.Context()
        self.keys = study.load_keys(me, key_file)
        self.started = time.monotonic()

    def client(self, peer: str, endpoint: str, timeout: float = 30.0) -> ServiceClient:
        server_key = self.study.public_keys()[peer] if self.keys else None
        return ServiceClient(self.context, endpoint, self.me, peer, self.keys, server_key, timeout)

    def node(self, i: int, timeout: float = 30.0) -> ServiceClient:
        ep = self.study.node(i)
        return self.client(ep.name, ep.service, timeout)

    def dealer(self, timeout: float = 30.0) -> ServiceClient:
        return self.client(self.study.dealer.name, self.study.dealer.service, timeout)

    def close(self):
        self.context.destroy(linger=1000)


def daemon_context(study, me: str, log: logging.Logger, key_file=None):
    """(zmq context, keys, key ring, authenticator) for a daemon of the study.

    Its peer socket should be made with ``peer_server``: only the dealer and
    the nodes may connect there."""
    context = zmq.Context()
    keys = study.load_keys(me, key_file)
    ring, auth = None, None
    if keys is not None:
        ring = KeyRing(study.public_keys())
        # Peer sockets (made with PEER_ZAP_DOMAIN) admit only the dealer and the nodes.
        auth = start_authenticator(context, ring, log, peers=[study.dealer.name] + [n.name for n in study.nodes])
    else:
        log.warning("PLAINTEXT MODE: CurveZMQ is off in %s; traffic is neither encrypted nor "
                    "authenticated. Use this only for benchmarks on loopback.", study.path)
    return context, keys, ring, auth


def peer_server(context, endpoint: str, keys):
    """A daemon's peer ROUTER: CurveZMQ admits only the dealer and the nodes."""
    return make_server(context, endpoint, keys, zap_domain=PEER_ZAP_DOMAIN)
