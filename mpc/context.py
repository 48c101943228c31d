"""The party context: everything a node's protocol code may use, passed explicitly.

One PartyContext per node per job: the parameters, this node's index among n,
its channel to the other nodes, its tuple source, the reveal policy, a label
counter (every random object gets a unique public label, the same on every
node because all nodes run the same steps), and an ``emit`` hook through which
result shares leave for the analyst.
"""
from __future__ import annotations

import itertools
import logging
from contextlib import contextmanager

import numpy as np

from mpc import field
from mpc.params import Params


def node_name(i: int) -> str:
    return f"node{i}"


class PartyContext:
    """A computation node's view of one job.

    Parameters
    ----------
    params : Params
    index : int
        This node's index, 0 <= index < n.
    n : int
        Number of computation nodes (>= 2).
    channel : Channel
        Links to the other nodes (peer names ``node0`` .. ``node{n-1}``).
    tuples : NodeTuples
    policy : RevealPolicy
    job : str
        Public job id, prefixed to every label.
    emit : callable(name, share, meta) or None
        Receives result shares addressed to the analyst.
    checkpoint : object or None
        Where completed phases are kept (parties.checkpoint.Checkpoints): an
        object with has(phase), load(phase) -> (state, outputs) and
        save(phase, state, outputs).  None: no checkpoints (tests).
    """

    def __init__(self, params: Params, index: int, n: int, channel, tuples, policy,
                 job: str = "job", emit=None, log: logging.Logger | None = None, progress=None,
                 checkpoint=None):
        if n < 2:
            raise ValueError(f"need at least 2 computation nodes, got {n}")
        if not 0 <= index < n:
            raise ValueError(f"node index {index} out of range for {n} nodes")
        self.params = params
        self.index = index
        self.n = n
        self.channel = channel
        self.tuples = tuples
        self.policy = policy
        self.job = job
        self._emit = emit
        self.checkpoint = checkpoint
        self.workers = 1             # threads for the local block products of a genotype pass
        self._emitted = []          # outputs since the last checkpoint (re-sent on resume)
        self._reveal_mark = 0       # reveal records before that belong to saved phases
        self.log = log or logging.getLogger(f"mpcgwas.{node_name(index)}")
        self.progress = progress or (lambda phase, done, total: None)
        self.name = node_name(index)
        self.others = tuple(node_name(i) for i in range(n) if i != index)
        self._counter = itertools.count()

    @property
    def emit(self):
        if self._emit is None:
            return None
        return self._record_and_emit

    def _record_and_emit(self, name, share, meta):
        self._emitted.append((name, share, meta))
        self._emit(name, share, meta)

    # ------------------------------------------------------------ checkpoints
    def resume(self, phase: str):
        """The saved state of `phase` if every node has it, else None (one round).

        On resume the outputs the phase sent to the analyst are sent again, so
        the analyst's view does not depend on where the job restarted."""
        if self.checkpoint is None:
            return None
        have = np.array([1 if self.checkpoint.has(phase) else 0], dtype=np.int64)
        got = self.channel.exchange(self.others, f"checkpoint:{phase}", have, dtype="i64", shape=(1,))
        if not (have[0] and all(int(v[0]) == 1 for v in got.values())):
            return None
        state, outputs = self.checkpoint.load(phase, self)
        for name, share, meta in outputs:
            self._record_and_emit(name, share, meta)
        self._emitted = []
        self.policy.records.extend(state.pop("_reveals", []))
        self._reveal_mark = len(self.policy.records)
        self.log.info("resumed %s from its checkpoint", phase)
        return state

    def save(self, phase: str, state: dict) -> None:
        """Keep `phase`'s state (and the outputs it sent) for a later resume."""
        if self.checkpoint is not None:
            reveals = self.policy.records[self._reveal_mark:]
            self.checkpoint.save(phase, {**state, "_reveals": reveals}, self._emitted)
        self._emitted = []
        self._reveal_mark = len(self.policy.records)

    @property
    def leads(self) -> bool:
        """Whether this node adds public constants (exactly one node does)."""
        return self.index == 0

    def label(self, kind: str) -> str:
        return f"{self.job}/{next(self._counter)}{kind}"

    @contextmanager
    def phase(self, name: str):
        """Account traffic to `name` and report its start and end as progress
        (done = total = 0 at the start, -1 at the end; protocols report steps
        in between with ctx.progress(name, done, total))."""
        self.progress(name, 0, 0)
        with self.channel.stats.phase(name):
            yield
        self.progress(name, -1, -1)

    # ------------------------------------------------------------ opening
    def open_many(self, shares: list, tag: str = "open") -> list:
        """Open several field arrays in one round (internal: masked values only).

        Each node sends its shares, concatenated, to every other node; the sum
        of all shares comes back.  Values that are not one-time-masked must go
        through mpc.reveal, which checks the reveal policy."""
        shares = [np.ascontiguousarray(s) for s in shares]
        if not shares:
            return []
        parts = [s.reshape(-1, field.LIMBS) for s in shares]
        self.tuples.flush()
        # One message per peer carries every part (no concatenated copy);
        # each opened value is the sum of the slices at its offset.
        received = self.channel.exchange_parts(self.others, tag, parts, dtype="f127")
        out, pos = [], 0
        for s, part in zip(shares, parts):
            k = part.shape[0]
            total = None
            for peer in self.others:
                piece = received[peer][pos:pos + k]
                total = field.add(part, piece) if total is None else field.add(total, piece, out=total)
            out.append(total.reshape(s.shape))
            pos += k
        return out

    def open_bits_many(self, words: list, tag: str = "openx") -> list:
        """Open several XOR-shared packed-bit arrays in one round."""
        words = [np.ascontiguousarray(w, dtype=np.uint64) for w in words]
        if not words:
            return []
        flat = np.concatenate([w.reshape(-1) for w in words])
        self.tuples.flush()
        received = self.channel.exchange(self.others, tag, flat, dtype="u64", shape=flat.shape)
        total = flat.copy()
        for peer in self.others:
            total ^= received[peer]
        out, pos = [], 0
        for w in words:
            out.append(total[pos:pos + w.size].reshape(w.shape))
            pos += w.size
        return out
