"""The reveal policy: the one way a non-masked value leaves the shares.

Every reveal names a policy entry.  ``reveal`` opens values to all computation
nodes (for example the QC keep masks the nodes need to select rows); ``output``
sends this node's share to the analyst, who reconstructs it (nodes never see
results).  Anything the policy does not list for that recipient raises
PolicyError before a byte is sent.  Every reveal is logged (name, shape,
recipient) without its value, and kept in ``RevealPolicy.records``.
"""
from __future__ import annotations

import logging
import time

import numpy as np

from mpc import field
from mpc.errors import PolicyError

NODES = "nodes"
ANALYST = "analyst"


class RevealPolicy:
    """Which named values may be revealed, and to whom.

    Parameters
    ----------
    allowed : dict name -> iterable of recipients ("nodes", "analyst")
    """

    def __init__(self, allowed: dict, log: logging.Logger | None = None):
        self.allowed = {name: frozenset(to) for name, to in allowed.items()}
        for name, to in self.allowed.items():
            unknown = to - {NODES, ANALYST}
            if unknown:
                raise PolicyError(f"policy entry {name!r} names unknown recipients {sorted(unknown)}")
        self.log = log or logging.getLogger("mpcgwas.reveal")
        self.records = []

    def allows(self, name: str, to: str) -> bool:
        return to in self.allowed.get(name, ())

    def check(self, name: str, to: str) -> None:
        if to not in self.allowed.get(name, ()):
            raise PolicyError(f"the reveal policy does not allow revealing {name!r} to {to}")

    def record(self, name: str, shape, to: str) -> None:
        self.records.append({"name": name, "shape": list(shape), "to": to, "time": time.time()})
        self.log.info("revealed %s (shape %s) to %s", name, tuple(shape), to)


def _decode(opened: np.ndarray, frac: int) -> np.ndarray:
    return field.to_int64(opened) if frac == 0 else field.decode_fixed(opened, frac)


def reveal(ctx, xs, name: str) -> list:
    """Open shared arrays to every computation node (one round for the batch).

    Returns decoded values: int64 for frac 0, float64 otherwise."""
    single = not isinstance(xs, (list, tuple))
    xs = [xs] if single else list(xs)
    ctx.policy.check(name, NODES)
    opened = ctx.open_many([x.share for x in xs], tag=f"reveal:{name}")
    for x in xs:
        ctx.policy.record(name, x.shape, NODES)
    values = [_decode(o, x.frac) for o, x in zip(opened, xs)]
    return values[0] if single else values


def reveal_bits(ctx, words, name: str):
    """Open XOR-shared packed bits to every node (one round)."""
    ctx.policy.check(name, NODES)
    opened = ctx.open_bits_many([words], tag=f"reveal:{name}")[0]
    ctx.policy.record(name, np.shape(words), NODES)
    return opened


def disclose(ctx, value, name: str):
    """Pass a value the nodes already know (an earlier reveal to the nodes) on to
    the analyst, if the policy lists the analyst for `name`; returns it or None.

    The disclosure is checked and logged like any reveal."""
    if not ctx.policy.allows(name, ANALYST):
        return None
    ctx.policy.record(name, np.shape(value), ANALYST)
    return value


def output(ctx, x, name: str, **meta) -> None:
    """Send this node's share of x to the analyst under policy entry `name`."""
    ctx.policy.check(name, ANALYST)
    if ctx.emit is None:
        raise PolicyError(f"no analyst is attached to this job: cannot output {name!r}")
    ctx.policy.record(name, x.shape, ANALYST)
    ctx.emit(name, x.share, {"frac": x.frac, **meta})
