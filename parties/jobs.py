"""Setting up one job on the dealer and on a node (shared by daemons and the test harness).

1. The dealer draws a fresh 128-bit seed per node and sends it over the
   (CurveZMQ-encrypted) channel: tag "seed".
2. Each node builds its tuple source from that seed plus its seeds of the
   submissions the job uses; node n-1 gets the dealer link for corrections.
3. The dealer serves node n-1's requests until "done".
"""
from __future__ import annotations

import os

import numpy as np

from mpc.context import PartyContext, node_name
from mpc.prg import new_seed
from mpc.reveal import RevealPolicy
from mpc.triples import DEALER, DealerEngine, NodeTuples


def profiled(name: str):
    """Decorator: with MPCGWAS_PROFILE=DIR set, write a cProfile of each call to
    DIR/<name>-<pid>.prof (for finding where a party's time goes)."""
    def wrap(fn):
        def inner(*args, **kwargs):
            target = os.environ.get("MPCGWAS_PROFILE")
            if not target:
                return fn(*args, **kwargs)
            import cProfile

            prof = cProfile.Profile()
            try:
                return prof.runcall(fn, *args, **kwargs)
            finally:
                os.makedirs(target, exist_ok=True)
                prof.dump_stats(os.path.join(target, f"{name}-{os.getpid()}.prof"))
        return inner
    return wrap


@profiled("dealer")
def dealer_job(channel, n: int, extra_seeds: dict) -> dict:
    """Dealer side of one job; returns what it served and its traffic."""
    seeds = [new_seed() for _ in range(n)]
    for i in range(n):
        channel.send(node_name(i), "seed", np.frombuffer(seeds[i], dtype=np.uint8))
    engine = DealerEngine(n, {DEALER: seeds, **extra_seeds})
    engine.serve(channel, node_name(n - 1), new_seed())
    return {"tuples": engine.tuples_served, "elements": engine.elements_sent,
            "traffic": channel.stats.as_dict()}


def node_context(channel, index: int, n: int, params, policy: dict | None, own_seeds: dict,
                 job: str, emit=None, log=None, progress=None, checkpoint=None, workers: int = 1) -> PartyContext:
    """A node's PartyContext for one job, after receiving its seed from the dealer.

    own_seeds maps a submission id to this node's mask seed for it; workers is
    the number of threads for the block products of a genotype pass."""
    seed = channel.recv(DEALER, "seed", dtype="u8", shape=(16,), count_round=False).tobytes()
    tuples = NodeTuples(index, n, {DEALER: seed, **own_seeds}, channel if index == n - 1 else None)
    ctx = PartyContext(params, index, n, channel, tuples, RevealPolicy(policy or {}, log), job=job,
                       emit=emit, log=log, progress=progress, checkpoint=checkpoint)
    ctx.workers = max(1, int(workers))
    return ctx
