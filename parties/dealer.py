"""The dealer daemon (CP0): correlated randomness for the nodes, nothing else.

Sockets: a *peer* ROUTER (the nodes connect to it during jobs) and a
*service* ROUTER (providers register the mask seeds of their submissions;
analysts announce jobs).  For each job it draws a fresh seed per node, sends
it over the encrypted channel, and serves node n-1's tuple requests until the
job ends (mpc.triples.DealerEngine).  It never sees a masked value: it knows
masks, not data.
"""
from __future__ import annotations

import logging
import threading
import time

from mpc.errors import ProtocolError
from mpc.net.zmq_channel import ZmqChannel
from parties.jobs import dealer_job
from parties.service import ServiceServer, daemon_context, peer_server
from parties.storage import SeedStore
from parties.study import DEALER


class DealerDaemon:
    def __init__(self, study, data_dir, key_file=None):
        self.study = study
        self.log = logging.getLogger("mpcgwas.dealer")
        self.seeds = SeedStore(data_dir)
        self.context, self.keys, self.ring, self.auth = daemon_context(study, DEALER, self.log, key_file)
        self.peer_router = peer_server(self.context, study.dealer.peer_listen, self.keys)
        self.service = ServiceServer(self.context, study.dealer.service_listen, self.keys, self.ring, self.log)
        self.job = None
        self.stop = threading.Event()
        self.log.info("dealer listening: peers on %s, service on %s", study.dealer.peer, study.dealer.service)

    def serve_forever(self) -> None:
        try:
            while not self.stop.is_set():
                if self.job is not None and not self.job["thread"].is_alive():
                    self.job = None
                self.service.serve_one(100, lambda name, ident, cmd, array: self.handle(name, cmd), "the dealer")
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        self.stop.set()
        if self.job is not None:
            self.job["thread"].join(timeout=self.study.timeout + 5)
        self.service.close()
        self.peer_router.close(linger=0)
        if self.auth is not None:
            self.auth.stop()
        self.context.term()
        self.log.info("dealer stopped")

    def handle(self, name: str, cmd: dict):
        role = self.study.role_of(name)
        op = cmd.get("cmd")
        if role is None:
            raise ProtocolError(f"{name!r} is not a party of this study")
        if op == "ping":
            return {"ok": True, "node": DEALER}
        if role == "provider" and op == "register":
            seeds = [bytes.fromhex(s) for s in cmd["seeds"]]
            submission = str(cmd["submission"])
            if len(seeds) != self.study.n_nodes or any(len(s) != 16 for s in seeds):
                raise ProtocolError(f"{name}: expected {self.study.n_nodes} 16-byte seeds")
            if not submission.startswith(name + "-"):
                raise ProtocolError(f"{name} may only register its own submissions")
            self.seeds.put(name, submission, seeds)
            return {"ok": True}
        if role == "analyst" and op == "run":
            return self._run(cmd)
        raise ProtocolError(f"{role} {name} may not ask the dealer for {op!r}")

    def _run(self, cmd):
        if self.job is not None:
            self.job["thread"].join(timeout=2.0)   # a job that just ended may be closing its channel
            if not self.job["thread"].is_alive():
                self.job = None
        if self.job is not None:
            raise ProtocolError(f"the dealer is already serving job {self.job['id']}")
        job = str(cmd["job"])
        extra = {sub: self.seeds.get(sub) for sub in dict(cmd["submissions"]).values()}
        thread = threading.Thread(target=self._job_main, args=(job, extra), name=f"job-{job}", daemon=True)
        self.job = {"id": job, "thread": thread}
        thread.start()
        return {"ok": True, "job": job}

    def _job_main(self, job, extra):
        study = self.study
        peers = {n.name: n.peer for n in study.nodes}
        channel = None
        start = time.monotonic()
        try:
            channel = ZmqChannel(DEALER, self.peer_router, peers, context=self.context, keys=self.keys,
                                 peer_keys=study.public_keys() if self.keys else None, ring=self.ring,
                                 timeout=study.timeout, heartbeat=min(1.0, study.timeout / 4),
                                 session=job, log=self.log)
            out = dealer_job(channel, study.n_nodes, extra)
            self.log.info("job %s: served %d tuples (%d elements to %s) in %.1f s", job, out["tuples"],
                          out["elements"], study.nodes[-1].name, time.monotonic() - start)
        except BaseException as exc:  # noqa: BLE001 - logged; the daemon lives on
            self.log.error("job %s failed: %s", job, exc)
            if channel is not None:
                channel.abort(f"dealer: {type(exc).__name__}: {exc}")
        finally:
            if channel is not None:
                channel.close()
