"""Checkpoints of a node's completed phases, for resuming a job after a crash.

A job's checkpoints live in ``<data>/checkpoints/<job key>/``, where the key
hashes the analysis, its options and the submissions it reads, so re-running
the same command finds them.  Each completed phase is one file, written
atomically, holding this node's shares (SharedArray: share + frac), the public
values the phase produced (revealed masks, counts) and the result shares it
sent the analyst.  Files are msgpack (never pickle) with a SHA-256 trailer
checked on read; a damaged file counts as absent.  Shares are this node's own
data: they never leave it.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import msgpack
import numpy as np

from mpc.shared import SharedArray
from parties.storage import atomic_write_bytes


def job_key(analysis: str, options: dict, submissions: dict) -> str:
    """The same analysis, options and data give the same key on every node."""
    text = json.dumps({"analysis": analysis, "options": options, "submissions": submissions},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _pack_array(a: np.ndarray) -> dict:
    a = np.ascontiguousarray(a)
    if a.dtype.hasobject:
        raise TypeError("checkpoint: object arrays are not stored")
    return {"dtype": a.dtype.str, "shape": list(a.shape), "data": a.tobytes()}


def _unpack_array(obj: dict) -> np.ndarray:
    dt = np.dtype(obj["dtype"])
    if dt.hasobject:
        raise ValueError("checkpoint: object dtype")
    return np.frombuffer(obj["data"], dtype=dt).reshape(obj["shape"]).copy()


def _pack_value(v):
    if isinstance(v, SharedArray):
        return {"kind": "shared", "frac": v.frac, "array": _pack_array(v.share)}
    if isinstance(v, np.ndarray):
        return {"kind": "array", "array": _pack_array(v)}
    if isinstance(v, (list, tuple)) and v and all(isinstance(x, (np.ndarray, SharedArray)) for x in v):
        return {"kind": "list", "items": [_pack_value(x) for x in v]}
    return {"kind": "plain", "value": v}


def _unpack_value(obj, ctx):
    kind = obj["kind"]
    if kind == "shared":
        return SharedArray(ctx, _unpack_array(obj["array"]), int(obj["frac"]))
    if kind == "array":
        return _unpack_array(obj["array"])
    if kind == "list":
        return [_unpack_value(x, ctx) for x in obj["items"]]
    return obj["value"]


class Checkpoints:
    """One job's checkpoints on one node (the object PartyContext.checkpoint expects)."""

    def __init__(self, root, key: str, log=None):
        self.dir = Path(root) / "checkpoints" / key
        self.log = log

    def _path(self, phase: str) -> Path:
        return self.dir / f"{phase}.ckpt"

    def _read(self, phase: str):
        try:
            raw = self._path(phase).read_bytes()
        except OSError:
            return None
        body, digest = raw[:-32], raw[-32:]
        if hashlib.sha256(body).digest() != digest:
            if self.log:
                self.log.warning("checkpoint %s is damaged; the phase will be recomputed", self._path(phase))
            return None
        return msgpack.unpackb(body, raw=False, strict_map_key=False)

    def has(self, phase: str) -> bool:
        return self._read(phase) is not None

    def save(self, phase: str, state: dict, outputs: list) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        doc = {"state": {k: _pack_value(v) for k, v in state.items()},
               "outputs": [{"name": n, "share": _pack_array(s), "meta": m} for n, s, m in outputs]}
        body = msgpack.packb(doc, use_bin_type=True)
        atomic_write_bytes(self._path(phase), body + hashlib.sha256(body).digest())

    def load(self, phase: str, ctx):
        doc = self._read(phase)
        state = {k: _unpack_value(v, ctx) for k, v in doc["state"].items()}
        outputs = [(o["name"], _unpack_array(o["share"]), o["meta"]) for o in doc["outputs"]]
        return state, outputs

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
