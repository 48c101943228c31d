"""Run one function on every computation node, with a dealer: threads or processes.

``run_threads`` runs dealer + n nodes as threads of this process over
in-memory queues (fast unit tests).  ``run_processes`` runs each party as a
real process talking ZeroMQ over TCP on random loopback ports, with CurveZMQ
keys generated for the run; it re-raises any child's exception (with the
child's traceback in the message) and kills every process it started after a
hard timeout.  Both return the per-node return values in node order.

The job setup is the real one: the dealer draws a fresh seed per node and
sends it over the (encrypted) channel; node n-1 streams tuple requests to the
dealer and ends the job with a "done" request.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import threading
import time
import traceback

from mpc.context import node_name
from mpc.errors import PeerAborted
from mpc.net.channel import InProcessHub
from mpc.params import Params
from mpc.triples import DEALER
from parties.jobs import dealer_job, node_context, profiled


class ChildError(RuntimeError):
    """A party raised; the message carries its name and traceback."""


@profiled("node")
def _run_node(channel, index, n, fn, args, params, policy, extra_seeds, job):
    outputs = []
    own = {owner: s[index] for owner, s in extra_seeds.items()}
    ctx = node_context(channel, index, n, params, policy, own, job,
                       emit=lambda name, share, meta: outputs.append((name, share.copy(), meta)))
    result = fn(ctx, *args)
    ctx.tuples.finish()
    return {"result": result, "outputs": outputs, "traffic": channel.stats.as_dict()}


def run_threads(n: int, fn, args=(), *, params: Params | None = None, policy: dict | None = None,
                extra_seeds: dict | None = None, timeout: float = 60.0, full: bool = False):
    """Run fn(ctx, *args) on n nodes as threads, with a dealer thread.

    Returns the list of fn's return values (or, with full=True, dicts with
    result, outputs and traffic per node, plus the dealer's as the last item)."""
    params = params or Params()
    extra_seeds = extra_seeds or {}
    names = [node_name(i) for i in range(n)] + [DEALER]
    hub = InProcessHub(names, timeout=timeout)
    results, errors = [None] * (n + 1), []

    def target(i):
        ch = hub.channel(names[i])
        try:
            if i == n:
                results[i] = dealer_job(ch, n, extra_seeds)
            else:
                results[i] = _run_node(ch, i, n, fn, args, params, policy, extra_seeds, "job")
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            errors.append((names[i], exc, traceback.format_exc()))
            ch.abort(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(n + 1)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    if errors:
        # The cause is an error that is not a peer reacting to another's abort.
        causes = [e for e in errors if not isinstance(e[1], PeerAborted)] or errors
        name, exc, tb = causes[0]
        raise ChildError(f"{name} failed: {type(exc).__name__}: {exc}\n{tb}") from exc
    if any(t.is_alive() for t in threads):
        raise ChildError(f"parties still running after {timeout} s")
    return results if full else [r["result"] for r in results[:n]]


# ------------------------------------------------------------ processes

def tune_allocator() -> bool:
    """Keep freed memory in this process instead of returning it to the OS.

    glibc serves large arrays (a 10^6-element field array is 16 MB) with
    fresh mmaps and unmaps them on free, so every new array pays page faults
    and zeroing again: measured here, a third of the CPU of a secure
    multiplication and half the CPU of moving a message.  Party processes
    allocate the same sizes over and over; heap reuse removes that cost.
    Returns False where mallopt is unavailable (not glibc)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 1 << 30))


def _child_main(role: str, index: int, n: int, conn, fn, args, params, policy, extra_seeds,
                curve: bool, timeout: float):
    import zmq

    from mpc.net.zmq_channel import KeyRing, ZmqChannel, make_server, start_authenticator

    logging.basicConfig(level=logging.WARNING)
    tune_allocator()
    name = DEALER if role == "dealer" else node_name(index)
    context = zmq.Context()
    auth = None
    try:
        keys = zmq.curve_keypair() if curve else None
        ring = KeyRing({}) if curve else None
        if curve:  # ZAP runs before anyone can connect; it admits keys once the book arrives
            auth = start_authenticator(context, ring, logging.getLogger(f"mpcgwas.{name}"))
        router = make_server(context, "tcp://127.0.0.1:0", keys)
        endpoint = router.getsockopt(zmq.LAST_ENDPOINT).decode()
        conn.send((name, endpoint, keys[0] if keys else None))
        book, public_keys = conn.recv()
        if curve:
            ring.update(public_keys)
        conn.send("ready")  # nobody connects before every party admits every key
        conn.recv()
        peers = {p: ep for p, ep in book.items() if p != name}
        channel = ZmqChannel(name, router, peers, context=context, keys=keys, peer_keys=public_keys,
                             ring=ring, timeout=timeout, heartbeat=min(1.0, timeout / 4))
        try:
            if role == "dealer":
                out = dealer_job(channel, n, extra_seeds)
            else:
                out = _run_node(channel, index, n, fn, args, params, policy, extra_seeds, "job")
            conn.send(("ok", out))
        except BaseException as exc:  # noqa: BLE001
            channel.abort(f"{type(exc).__name__}: {exc}")
            conn.send(("error", f"{type(exc).__name__}: {exc}", traceback.format_exc()))
        finally:
            channel.close()
            router.close(linger=500)
    finally:
        if auth is not None:
            auth.stop()
        context.term()


def _exit_status(p) -> str:
    code = p.exitcode
    if code is None:
        return "stopped responding (still running)"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name} (exit code {code})"
        except ValueError:
            pass
    return f"exited with code {code}"


def run_processes(n: int, fn, args=(), *, params: Params | None = None, policy: dict | None = None,
                  extra_seeds: dict | None = None, timeout: float = 120.0, peer_timeout: float = 10.0,
                  curve: bool = True, full: bool = False, on_started=None):
    """Run fn(ctx, *args) on n node processes plus a dealer process (ZeroMQ, CurveZMQ).

    fn must be importable (a module-level function).  `on_started(pids)` is
    called with {name: pid} once every party is up (fault-injection tests)."""
    params = params or Params()
    extra_seeds = extra_seeds or {}
    ctx = mp.get_context("spawn")
    procs, conns = {}, {}
    roles = [("node", i) for i in range(n)] + [("dealer", n)]
    deadline = float("inf")
    try:
        for role, i in roles:
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_child_main, args=(role, i, n, child, fn, args, params, policy,
                                                      extra_seeds, curve, peer_timeout), daemon=True)
            p.start()
            name = DEALER if role == "dealer" else node_name(i)
            procs[name], conns[name] = p, parent
        deadline = time.monotonic() + timeout
        book, keys = {}, {}
        for name, conn in conns.items():
            if not conn.poll(max(0.0, deadline - time.monotonic())):
                raise ChildError(f"{name} did not start within {timeout} s")
            try:
                got_name, endpoint, public = conn.recv()
            except EOFError:
                raise ChildError(f"{name} exited during start-up (exit code {procs[name].exitcode})") from None
            book[got_name], keys[got_name] = endpoint, public
        for conn in conns.values():
            conn.send((book, keys if curve else None))
        for name, conn in conns.items():
            if not conn.poll(max(0.0, deadline - time.monotonic())):
                raise ChildError(f"{name} did not get ready within {timeout} s")
            try:
                conn.recv()
            except EOFError:
                raise ChildError(f"{name} exited during start-up (exit code {procs[name].exitcode})") from None
        for conn in conns.values():
            conn.send("go")
        if on_started is not None:
            on_started({name: p.pid for name, p in procs.items()})
        results, errors = {}, []
        pending = dict(conns)
        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ChildError(f"parties {sorted(pending)} still running after {timeout} s; killed")
            ready = mp.connection.wait(list(pending.values()), timeout=min(remaining, 0.5))
            for conn in ready:
                name = next(k for k, v in pending.items() if v is conn)
                try:
                    msg = conn.recv()
                except EOFError:
                    procs[name].join(timeout=1)  # reap it, so the exit code is known
                    msg = ("error", f"process {_exit_status(procs[name])} without a result", "")
                del pending[name]
                if msg[0] == "ok":
                    results[name] = msg[1]
                else:
                    errors.append((name, msg[1], msg[2]))
            for name in list(pending):
                if not procs[name].is_alive() and not pending[name].poll():
                    errors.append((name, f"process {_exit_status(procs[name])}", ""))
                    del pending[name]
        if errors:
            causes = [e for e in errors if "stopped:" not in e[1]] or errors
            name, msg, tb = causes[0]
            others = "; ".join(f"{n}: {m}" for n, m, _ in errors if n != name)
            raise ChildError(f"{name} failed: {msg}\n{tb}" + (f"\nalso: {others}" if others else ""))
        ordered = [results[node_name(i)] for i in range(n)] + [results[DEALER]]
        return ordered if full else [r["result"] for r in ordered[:n]]
    finally:
        # One grace period for all (not 2 s each), none after the hard timeout.
        grace = 0.0 if time.monotonic() >= deadline else 2.0
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None:
                for p in procs.values():
                    if p.is_alive():
                        os.kill(p.pid, sig)
            until = time.monotonic() + grace
            for p in procs.values():
                p.join(timeout=max(0.0, until - time.monotonic()))
            grace = 2.0
