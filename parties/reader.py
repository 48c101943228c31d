"""The analyst's client: start an analysis, follow it, reconstruct and report the results.

1. Ask every node for the submissions it holds; all nodes must agree.
2. Announce the job to the dealer, then start it on every node.
3. Follow progress (a bar per phase) until every node reports done or one
   reports an error (which names the failing party; the others stop too).
   Nodes send an ``alive`` event every second while a job runs, so a node
   that says nothing for ``timeout`` seconds is gone; once one node has
   reported an error, the others get ``study.timeout`` more seconds to
   report theirs (a dead node never will); a node whose connection closed
   and stayed closed for DISCONNECT_GRACE seconds is gone at once.
4. Reconstruct each output by adding the nodes' shares — the only place the
   results exist in the clear — and let the analysis write its files and its
   entry in ``OUT/summary.json``.
"""
from __future__ import annotations

import json
import logging
import secrets
import sys
import time
from dataclasses import dataclass, field as dc_field
from pathlib import Path

import numpy as np

from mpc import field
from mpc.errors import InputError
from parties.analyses import ANALYSES
from parties.service import DISCONNECT_GRACE, ClientContext, ServiceError
from parties.storage import atomic_write_json

log = logging.getLogger("mpcgwas.analyst")


@dataclass
class AnalystResult:
    analysis: str
    outputs: dict = dc_field(default_factory=dict)    # (name, key) -> decoded array
    public: dict = dc_field(default_factory=dict)
    traffic: dict = dc_field(default_factory=dict)    # node -> phase -> counters
    reveals: list = dc_field(default_factory=list)
    seconds: float = 0.0


class _Progress:
    """One progress bar per phase (tqdm on a terminal, log lines otherwise)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None
        self.phase = None
        try:
            from tqdm import tqdm
            self.tqdm = tqdm
        except ImportError:  # pragma: no cover - tqdm is a dependency
            self.tqdm = None

    def update(self, phase, done, total):
        if not self.enabled:
            return
        if phase != self.phase:
            self.close()
            self.phase = phase
            if self.tqdm is not None:
                self.bar = self.tqdm(total=None, desc=f"{phase:>14}", unit="step", leave=True,
                                     file=sys.stderr, dynamic_ncols=True)
        if self.bar is None:
            return
        if total < 0:          # phase finished
            if self.bar.total is None:
                self.bar.total = max(self.bar.n, 1)
            self.bar.n = self.bar.total
        elif total > 0:
            self.bar.total = total
            self.bar.n = done
        self.bar.refresh()

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _agree(statuses: dict) -> dict:
    """The submissions every node holds: {provider: submission id}, or an error."""
    first_node, first = next(iter(statuses.items()))
    want = {p: s["submission"] for p, s in first["submissions"].items()}
    for node, st in statuses.items():
        got = {p: s["submission"] for p, s in st["submissions"].items()}
        if got != want:
            diff = sorted(set(got.items()) ^ set(want.items()))
            raise ServiceError(f"{first_node} and {node} hold different submissions ({diff}): "
                               f"a submission did not complete everywhere; resubmit with --replace")
        if st.get("busy"):
            raise ServiceError(f"{node} is busy with another job; try again when it has finished")
    if not want:
        raise InputError("no provider has submitted data yet")
    return want


def run_analysis(study, analysis: str, options: dict, out_dir, *, me: str | None = None, key_file=None,
                 progress: bool = True, timeout: float | None = None, connect_timeout: float = 30.0) -> dict:
    """Run one analysis and write its results under out_dir; returns its summary."""
    if analysis not in ANALYSES:
        raise InputError(f"unknown analysis {analysis!r} (known: {', '.join(sorted(ANALYSES))})")
    me = me or next(iter(study.analysts), None)
    if me is None or me not in study.analysts:
        raise InputError(f"{me!r} is not an analyst of study {study.path}")
    spec = ANALYSES[analysis]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    silence = timeout or max(30.0, 3 * study.timeout)
    client = ClientContext(study, me, key_file)
    start = time.monotonic()
    bars = _Progress(progress)
    try:
        nodes = [client.node(i, timeout=connect_timeout) for i in range(study.n_nodes)]
        statuses = {c.peer: c.call({"cmd": "status"})[0] for c in nodes}
        submissions = _agree(statuses)
        job = secrets.token_hex(8)
        client.dealer(timeout=connect_timeout).call({"cmd": "run", "job": job, "submissions": submissions})
        for c in nodes:
            c.call({"cmd": "run", "job": job, "analysis": analysis, "options": options,
                    "submissions": submissions})
        result = AnalystResult(analysis)
        shares, metas = {}, {}
        pending = {c.peer: c for c in nodes}
        last = {c.peer: time.monotonic() for c in nodes}
        errors = []
        failed_at = None        # when the first node reported an error
        while pending:
            for name, c in list(pending.items()):
                if not c.sock.poll(50):
                    now = time.monotonic()
                    lost = c.connection_lost()
                    if lost is not None and lost > DISCONNECT_GRACE:
                        errors.append(f"{name}: its connection closed {lost:.1f} s ago (did {name} stop?)")
                        failed_at = failed_at or now
                        del pending[name]
                    elif now - last[name] > silence:
                        errors.append(f"{name}: no news for {silence:g} s")
                        del pending[name]
                    elif failed_at is not None and now - max(last[name], failed_at) > study.timeout:
                        errors.append(f"{name}: no word for {now - last[name]:.1f} s, and the job failed "
                                      f"elsewhere (is {name} running?)")
                        del pending[name]
                    continue
                event, array = c.recv()
                last[name] = time.monotonic()
                kind = event.get("event")
                if kind == "progress" and name == nodes[0].peer:
                    bars.update(event["phase"], event["done"], event["total"])
                elif kind == "output":
                    key = (event["name"], event["meta"].get("key"))
                    shares.setdefault(key, []).append(np.array(array))
                    metas[key] = event["meta"]
                elif kind == "done":
                    if name == nodes[0].peer and array is not None:
                        result.public = json.loads(bytes(array))      # node 0 reports the public results
                    result.traffic[name] = event.get("traffic", {})
                    if name == nodes[0].peer:
                        result.reveals = event.get("reveals", [])
                    del pending[name]
                elif kind == "error":
                    errors.append(event.get("message", f"{name}: unknown error"))
                    failed_at = failed_at or time.monotonic()
                    del pending[name]
        bars.close()
        if errors:
            # A party that stopped because another did ("peer X stopped: <its error>") repeats that
            # one's error: keep the errors themselves, and the relayed ones of parties that do not
            # report to the analyst (the dealer, whose error names the phase when it noticed first).
            direct = [e for e in errors if "stopped:" not in e]
            relayed = [e.split("stopped:", 1)[1].strip() for e in errors if "stopped:" in e]
            causes = direct + [r for r in dict.fromkeys(relayed) if not any(r in d or d in r for d in direct)]
            raise ServiceError(f"{analysis} failed: " + " | ".join(causes))
        for key, parts in shares.items():
            if len(parts) != study.n_nodes:
                raise ServiceError(f"output {key} came from {len(parts)} of {study.n_nodes} nodes")
            total = parts[0]
            for p in parts[1:]:
                total = field.add(total, p)
            frac = int(metas[key]["frac"])
            result.outputs[key] = field.to_int64(total) if frac == 0 else field.decode_fixed(total, frac)
        result.seconds = time.monotonic() - start
        summary = spec.finalize(result, options, out_dir)
        lead = result.traffic.get(nodes[0].peer, {})
        summary.update(job=job, seconds=round(result.seconds, 3),
                       phases={name: {"seconds": round(p["seconds"], 3), "rounds": p["rounds"],
                                      "hops": p.get("hops", 0), "bytes_sent": p["bytes_sent"]} for name, p in lead.items()},
                       traffic_bytes_sent={n: sum(p["bytes_sent"] for p in t.values())
                                           for n, t in result.traffic.items()},
                       rounds={n: sum(p["rounds"] for p in t.values()) for n, t in result.traffic.items()},
                       hops={n: sum(p.get("hops", 0) for p in t.values()) for n, t in result.traffic.items()},
                       reveals=[{k: r[k] for k in ("name", "shape", "to")} for r in result.reveals])
        path = out_dir / "summary.json"
        try:
            current = json.loads(path.read_text()) if path.exists() else {}
        except json.JSONDecodeError:
            current = {}
        current[analysis] = summary
        atomic_write_json(path, current)
        return summary
    finally:
        bars.close()
        client.close()
