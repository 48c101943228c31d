"""Tests of parties.harness: results in node order, a child's exception
re-raised with its name and traceback, the hard timeout, nothing left running."""
from __future__ import annotations

import multiprocessing as mp
import os
import time

import numpy as np
import pytest

from mpc import beaver
from mpc.shared import SharedArray
from parties.harness import ChildError, run_processes, run_threads


def who_job(ctx, extra):
    return {"index": ctx.index, "n": ctx.n, "name": ctx.name, "others": ctx.others, "extra": extra}


def boom_job(ctx):
    x = SharedArray.public(ctx, np.arange(10))
    for _ in range(3):
        beaver.mul(SharedArray(ctx, x.share), x)
    if ctx.index == 1:
        raise ValueError("boom at node1")
    beaver.mul(SharedArray(ctx, x.share), x)  # waits for node1, which is gone
    return "unreachable"


def sleep_job(ctx):
    if ctx.index == 1:
        time.sleep(600)
    return ctx.open_many([SharedArray.public(ctx, np.arange(3)).share])


def pid_gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize("runner", [run_threads, run_processes], ids=["threads", "processes"])
def test_results_in_node_order(runner):
    pids = {}
    kw = {"on_started": pids.update} if runner is run_processes else {}
    full = runner(3, who_job, ("x",), full=True, **kw)
    assert [r["result"]["index"] for r in full[:3]] == [0, 1, 2]
    assert full[1]["result"] == {"index": 1, "n": 3, "name": "node1", "others": ("node0", "node2"), "extra": "x"}
    assert set(full[3]) >= {"tuples", "elements", "traffic"}  # the dealer's report comes last
    if runner is run_processes:
        assert set(pids) == {"node0", "node1", "node2", "dealer"}
        assert all(pid_gone(p) for p in pids.values())


@pytest.mark.parametrize("runner", [run_threads, run_processes], ids=["threads", "processes"])
def test_child_exception_is_reraised_with_name_and_traceback(runner):
    start = time.monotonic()
    with pytest.raises(ChildError) as info:
        runner(3, boom_job, timeout=30)
    assert time.monotonic() - start < 15
    message = str(info.value)
    assert message.startswith("node1 failed: ValueError: boom at node1"), message
    assert "in boom_job" in message  # the child's traceback
    assert mp.active_children() == []


def test_hard_timeout_kills_everything():
    pids = {}
    start = time.monotonic()
    with pytest.raises(ChildError, match=r"still running after 3(\.0)? s; killed"):
        run_processes(2, sleep_job, timeout=3, on_started=pids.update)
    elapsed = time.monotonic() - start
    assert elapsed < 3 + 4, f"took {elapsed:.1f} s"
    assert pids and all(pid_gone(p) for p in pids.values())
    assert mp.active_children() == []
