"""The computation node daemon: stores submissions, runs analyses for the analyst.

Sockets: a *peer* ROUTER (other nodes and the dealer, used by jobs) and a
*service* ROUTER (providers and analysts).  With CurveZMQ both admit only the
study's keys; each request is attributed to the authenticated party, and
what it may ask depends on its role:

- providers: ``submit_begin``, ``submit_array``, ``submit_commit``,
  ``submit_abort`` (their own data only);
- analysts: ``status``, ``run``;
- anyone in the study: ``ping``.

A job runs in a worker thread with its own channel on the peer socket
(messages stamped with the job id); the service loop stays responsive and
forwards the job's progress, result shares and final status to the analyst
who started it.  SIGTERM stops the daemon cleanly: a running job is aborted
(its peers stop too) and half-received submissions are discarded.
"""
from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
import time
import traceback

import numpy as np

from mpc.errors import MpcError, ProtocolError, StorageError
from mpc.net.zmq_channel import ZmqChannel
from mpc.triples import narrow_mask_width
from parties.analyses import ANALYSES
from parties.checkpoint import Checkpoints, job_key
from parties.cohort import SnpInfo, StoredCohort, is_narrow
from parties.jobs import node_context
from parties.service import ServiceServer, daemon_context, peer_server
from parties.storage import NodeStore
from parties.study import DEALER


ALIVE_INTERVAL = 1.0     # seconds between "alive" events to the analyst while a job runs


class NodeDaemon:
    """One computation node of a study.

    Parameters
    ----------
    study : parties.study.Study
    index : int
    data_dir : path
    key_file : path, optional (default: the study's key directory)
    """

    def __init__(self, study, index: int, data_dir, key_file=None, workers: int = 1):
        self.study = study
        self.index = index
        self.workers = max(1, int(workers))     # threads for the block products of genotype passes
        self.me = study.node(index).name
        self.log = logging.getLogger(f"mpcgwas.{self.me}")
        self.store = NodeStore(data_dir)
        self.context, self.keys, self.ring, self.auth = daemon_context(study, self.me, self.log, key_file)
        ep = study.node(index)
        self.peer_router = peer_server(self.context, ep.peer_listen, self.keys)
        self.service = ServiceServer(self.context, ep.service_listen, self.keys, self.ring, self.log)
        self.uploads = {}          # provider -> Staging
        self.job = None            # (job id, analyst ident, thread)
        self.events = queue.Queue()
        self.stop = threading.Event()
        self.log.info("%s listening: peers on %s, service on %s", self.me, ep.peer, ep.service)

    # ------------------------------------------------------------ main loop
    def serve_forever(self) -> None:
        try:
            while not self.stop.is_set():
                self._forward_events()
                self.service.serve_one(100, self.handle, self.me)
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        self.stop.set()
        for st in self.uploads.values():
            st.abort()
        self.uploads.clear()
        if self.job is not None:
            self.job["cancel"].set()
            self.job["thread"].join(timeout=self.study.timeout + 5)
            self._forward_events()
        self.service.close()
        self.peer_router.close(linger=0)
        if self.auth is not None:
            self.auth.stop()
        self.context.term()
        self.log.info("%s stopped", self.me)

    # ------------------------------------------------------------ requests
    def handle(self, name: str, ident: bytes, cmd: dict, array):
        role = self.study.role_of(name)
        op = cmd.get("cmd")
        if role is None:
            raise ProtocolError(f"{name!r} is not a party of this study")
        if op == "ping":
            return {"ok": True, "node": self.me}
        if role == "provider" and op in ("submit_begin", "submit_array", "submit_commit", "submit_abort"):
            return getattr(self, "_" + op)(name, ident, cmd, array)
        if role == "analyst" and op == "status":
            return self._status()
        if role == "analyst" and op == "run":
            return self._run(name, ident, cmd)
        raise ProtocolError(f"{role} {name} may not ask for {op!r}")

    def _status(self):
        self._settle()
        subs = {p: {"submission": s["submission"], "n_samples": s["n_samples"],
                    "n_snps": s.get("n_snps", 0), "tables": sorted(s.get("tables", {})),
                    "fingerprint": s.get("snps_fingerprint")}
                for p, s in self.store.list().items()}
        return {"ok": True, "node": self.me, "submissions": subs, "busy": self.job is not None}

    def _upload(self, provider, ident, op):
        """The staging area of this client's upload (an upload belongs to the connection
        that began it: a later submit_begin of the same provider supersedes it)."""
        staging = self.uploads.get(provider)
        if staging is None:
            raise ProtocolError(f"{provider}: {op} without an upload in progress (this client began none, "
                                f"or a newer upload of {provider} superseded it)")
        if staging.owner != ident:
            raise ProtocolError(f"{provider}: this upload was superseded by a newer upload of {provider} "
                                f"(submit_begin from another client); nothing of it is kept")
        return staging

    def _submit_begin(self, provider, ident, cmd, array):
        self._settle()
        if self.job is not None:
            raise StorageError(f"{self.me} is running a job; submit when it has finished")
        meta = _checked_meta(provider, cmd.get("meta"))
        stored = self.store.list()
        if provider in stored and not cmd.get("replace"):
            raise StorageError(f"provider {provider} has already submitted "
                               f"({stored[provider]['submission']}); use --replace to replace it")
        snps_text = bytes(array).decode() if array is not None else ""
        if meta.get("n_snps"):
            mine = SnpInfo(snps_text)
            if len(mine) != meta["n_snps"]:
                raise ProtocolError(f"{provider}: SNP list has {len(mine)} rows, meta says {meta['n_snps']}")
            for other, sub in stored.items():
                if other == provider or not sub.get("n_snps"):
                    continue
                msg = _first_snp_mismatch(SnpInfo(sub.text("snps.tsv")), mine, other, provider)
                if msg:
                    raise StorageError(f"SNP lists disagree: {msg}")
        old = self.uploads.pop(provider, None)
        if old is not None:
            old.abort()
        meta["seed"] = str(cmd["seed"])
        if len(bytes.fromhex(meta["seed"])) != 16:
            raise ProtocolError("bad seed")
        meta["snps_fingerprint"] = hashlib.sha256(snps_text.encode()).hexdigest()
        staging = self.store.begin(provider, meta)
        staging.replace = bool(cmd.get("replace"))
        staging.owner = ident
        staging.write_text("snps.tsv", snps_text)
        self.uploads[provider] = staging
        return {"ok": True}

    def _submit_array(self, provider, ident, cmd, array):
        staging = self._upload(provider, ident, "submit_array")
        name = str(cmd.get("name", ""))
        if array is None or not name or ".." in name or name.startswith("/"):
            raise ProtocolError(f"{provider}: malformed submit_array")
        array = np.array(array)
        if is_narrow(name):
            # x - a with x in {0, 1} and a < n 2^w (mpc.triples.narrow_mask_width)
            low = -(self.study.n_nodes << narrow_mask_width(self.study.n_nodes))
            if array.dtype != np.int64 or (array.size and (array.max() > 1 or array.min() <= low)):
                raise ProtocolError(f"{provider}: {name} must be an int64 narrow-masked 0/1 array")
        elif array.dtype != np.uint64 or array.ndim < 1 or array.shape[-1] != 2:
            raise ProtocolError(f"{provider}: {name} must be an array of field elements")
        staging.write_array(name, array)
        return {"ok": True}

    def _submit_commit(self, provider, ident, cmd, array):
        staging = self._upload(provider, ident, "submit_commit")
        del self.uploads[provider]
        try:
            target = staging.commit(replace=staging.replace)
        except BaseException:
            staging.abort()
            raise
        self.log.info("stored submission %s of %s at %s", staging.meta["submission"], provider, target)
        return {"ok": True}

    def _submit_abort(self, provider, ident, cmd, array):
        staging = self.uploads.get(provider)
        if staging is not None and staging.owner == ident:   # never another client's upload
            del self.uploads[provider]
            staging.abort()
        return {"ok": True}

    # ------------------------------------------------------------ jobs
    def _run(self, analyst, ident, cmd):
        self._settle(wait=2.0)       # the previous job may be closing its channel
        if self.job is not None:
            raise ProtocolError(f"{self.me} is already running job {self.job['id']}")
        analysis = ANALYSES.get(cmd.get("analysis"))
        if analysis is None:
            raise ProtocolError(f"unknown analysis {cmd.get('analysis')!r}")
        job = str(cmd["job"])
        wanted = dict(cmd["submissions"])
        stored = self.store.list()
        subs = []
        for provider, sub_id in wanted.items():
            if provider not in stored or stored[provider]["submission"] != sub_id:
                raise StorageError(f"{self.me} does not hold submission {sub_id} of {provider}")
            subs.append(stored[provider])
        cancel = threading.Event()
        thread = threading.Thread(target=self._job_main, args=(job, analysis, subs, dict(cmd.get("options", {})),
                                                                cancel), name=f"job-{job}", daemon=True)
        self.job = {"id": job, "analyst": ident, "thread": thread, "cancel": cancel}
        thread.start()
        return {"ok": True, "job": job}

    def _job_main(self, job, analysis, subs, options, cancel):
        study = self.study
        peers = {n.name: n.peer for n in study.nodes if n.name != self.me}
        peers[DEALER] = study.dealer.peer
        channel = None
        final = None            # the job's last event: "done" or "error"
        start = time.monotonic()
        try:
            channel = ZmqChannel(self.me, self.peer_router, peers, context=self.context, keys=self.keys,
                                 peer_keys=study.public_keys() if self.keys else None, ring=self.ring,
                                 timeout=study.timeout, heartbeat=min(1.0, study.timeout / 4),
                                 session=job, log=self.log)

            def emit(name, share, meta):
                self.events.put(({"event": "output", "name": name, "meta": meta}, np.array(share)))

            def progress(phase, done, total):
                if cancel.is_set():
                    raise MpcError(f"{self.me}: job {job} cancelled (node shutting down) in phase {phase}")
                self.events.put(({"event": "progress", "phase": phase, "done": done, "total": total}, None))

            own_seeds = {s["submission"]: bytes.fromhex(s["seed"]) for s in subs}
            checkpoints = Checkpoints(self.store.root, job_key(analysis.name, options,
                                                               {s.provider: s["submission"] for s in subs}),
                                      self.log)
            ctx = node_context(channel, self.index, study.n_nodes, study.params, study.policy, own_seeds,
                               job, emit=emit, log=self.log, progress=progress, checkpoint=checkpoints,
                               workers=self.workers)
            cohort = StoredCohort(ctx, subs)
            public = analysis.node(ctx, cohort, options)
            ctx.tuples.finish()
            checkpoints.clear()
            # Public results (SNP lists, QC masks) can be large: they travel as a JSON
            # payload next to the event, not inside the size-limited command frame.
            public_json = json.dumps(public if self.index == 0 else {}).encode()
            final = ({"event": "done", "public_bytes": len(public_json),
                      "traffic": channel.stats.as_dict(), "reveals": ctx.policy.records,
                      "seconds": time.monotonic() - start},
                     np.frombuffer(public_json, dtype=np.uint8))
            self.log.info("job %s (%s) done in %.1f s", job, analysis.name, time.monotonic() - start)
        except BaseException as exc:  # noqa: BLE001 - reported to the analyst, daemon lives on
            self.log.error("job %s failed: %s", job, exc)
            self.log.debug("%s", traceback.format_exc())
            if channel is not None:
                channel.abort(f"{self.me}: {type(exc).__name__}: {exc}")
            final = {"event": "error", "message": f"{self.me}: {exc}"}
        finally:
            if channel is not None:
                channel.close()
            # The analyst hears the outcome once the channel is closed: a next job may start at once.
            if final is not None:
                self.events.put(final if isinstance(final, tuple) else (final, None))
            self.events.put((None, None))  # job over

    def _settle(self, wait: float = 0.0) -> None:
        """Forward the last events of a job whose thread has ended (or ends within `wait` s),
        so that the job is over before a request that depends on it is answered."""
        if self.job is not None:
            self.job["thread"].join(timeout=wait)
            if not self.job["thread"].is_alive():
                self._forward_events()

    def _forward_events(self) -> None:
        if self.job is not None and time.monotonic() - self.job.get("told", 0.0) > ALIVE_INTERVAL:
            # The analyst reads silence as a dead node (parties.reader).
            self.job["told"] = time.monotonic()
            self.service.reply(self.job["analyst"], {"ok": True, "event": "alive"})
        while True:
            try:
                event, array = self.events.get_nowait()
            except queue.Empty:
                return
            if self.job is None:
                continue
            if event is None:
                self.job["thread"].join(timeout=5)
                self.job = None
                continue
            is_field = array is not None and array.dtype == np.uint64 and array.shape[-1:] == (2,)
            self.service.reply(self.job["analyst"], {"ok": True, **event}, array, is_field=is_field)


def _checked_meta(provider: str, meta) -> dict:
    """A submission's metadata from the network, checked before anything is staged.

    The node writes its own ``arrays``, ``seed`` and ``snps_fingerprint``
    entries: a provider cannot name the files of a manifest."""
    if not isinstance(meta, dict):
        raise ProtocolError(f"{provider}: submit_begin without a metadata map")
    meta = dict(meta)
    if meta.get("provider") != provider:
        raise ProtocolError(f"{provider} may only submit its own data")
    sub = meta.get("submission")
    token = sub[len(provider) + 1:] if isinstance(sub, str) and sub.startswith(provider + "-") else ""
    if not (0 < len(token) <= 64 and token.isascii() and token.isalnum()):
        raise ProtocolError(f"{provider}: bad submission id {sub!r}")

    def count(key, default=None):
        v = meta.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**40:
            raise ProtocolError(f"{provider}: metadata {key!r} must be a non-negative integer, got {v!r}")
        return v

    count("n_samples")
    m = count("n_snps", 0)
    if m:
        blocks = meta.get("blocks")
        ok = isinstance(blocks, list) and blocks and all(
            isinstance(b, list) and len(b) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in b)
            for b in blocks)
        if not ok or blocks[0][0] != 0 or blocks[-1][1] != m or any(
                b[0] >= b[1] or (k and b[0] != blocks[k - 1][1]) for k, b in enumerate(blocks)):
            raise ProtocolError(f"{provider}: metadata 'blocks' must split 0..{m} into consecutive SNP ranges")
    if not isinstance(meta.get("tables", {}), dict):
        raise ProtocolError(f"{provider}: metadata 'tables' must be a map")
    meta["arrays"] = {}
    return meta


def _first_snp_mismatch(a, b, name_a, name_b):
    """A message naming the first SNP where two lists differ, or None."""
    if len(a) != len(b):
        return f"{name_a} has {len(a)} SNPs, {name_b} has {len(b)}"
    fields = ("id", "chrom", "pos", "ref", "alt")
    differ = np.zeros(len(a), dtype=bool)
    for f in fields:
        differ |= getattr(a, f) != getattr(b, f)
    if not differ.any():
        return None
    j = int(np.argmax(differ))
    parts = [f"{f} {getattr(a, f)[j]} at {name_a} vs {getattr(b, f)[j]} at {name_b}"
             for f in fields if getattr(a, f)[j] != getattr(b, f)[j]]
    return f"SNP #{j + 1} ({a.id[j]}): " + "; ".join(parts)
