"""A local study: dealer and nodes as real daemon processes on loopback (tests, benchmarks).

Starts ``python -m parties.cli dealer|node`` subprocesses for a fresh study
(free ports, CurveZMQ keys), and stops exactly those processes (SIGTERM, then
SIGKILL) when closed.  ``usage()`` reads CPU time and peak memory of each
daemon from /proc.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from parties import study as st
from parties.analyses import default_policy
from parties.provider import submit
from parties.reader import run_analysis
from parties.service import ClientContext, ServiceError


class LocalStudy:
    def __init__(self, root, nodes: int = 3, providers=("site1", "site2", "site3"), timeout: float = 5.0,
                 block_snps: int = 256, curve: bool = True, policy: dict | None = None,
                 analysts=("analyst",), workers: int = 1):
        self.root = Path(root)
        self.workers = int(workers)          # each node's threads for genotype passes
        self.path = st.init_study(self.root / "study", nodes=nodes, providers=providers, analysts=analysts,
                                  policy={**default_policy(), **(policy or {})}, timeout=timeout,
                                  block_snps=block_snps, curve=curve)
        self.study = st.load(self.path)
        self.procs = {}
        self.start_all()

    def _cmd(self, role, i=None):
        data = self.root / "data" / (role if i is None else f"node{i}")
        cmd = [sys.executable, "-m", "parties.cli", role, "--study", str(self.path), "--data", str(data),
               "--log", str(self.root / "logs" / f"{role}{'' if i is None else i}.log")]
        if i is not None:
            cmd += ["--id", str(i), "--workers", str(self.workers)]
        return cmd

    def start(self, name):
        role, i = ("dealer", None) if name == "dealer" else ("node", int(name[4:]))
        log = open(self.root / f"{name}.stderr", "ab")
        self.procs[name] = subprocess.Popen(self._cmd(role, i), stdout=log, stderr=log)
        self.wait_ready([name])

    def start_all(self):
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        names = ["dealer"] + [f"node{i}" for i in range(self.study.n_nodes)]
        for name in names:
            role, i = ("dealer", None) if name == "dealer" else ("node", int(name[4:]))
            log = open(self.root / f"{name}.stderr", "ab")
            self.procs[name] = subprocess.Popen(self._cmd(role, i), stdout=log, stderr=log)
        self.wait_ready(names)

    def wait_ready(self, names, timeout: float = 30.0):
        client = ClientContext(self.study, next(iter(self.study.analysts)))
        deadline = time.monotonic() + timeout
        try:
            for name in names:
                while True:
                    c = client.dealer() if name == "dealer" else client.node(int(name[4:]))
                    try:
                        c.call({"cmd": "ping"}, timeout=0.5)
                        break
                    except ServiceError:
                        if time.monotonic() > deadline or self.procs[name].poll() is not None:
                            raise RuntimeError(f"{name} did not start: "
                                               f"{(self.root / f'{name}.stderr').read_text()[-2000:]}")
                    finally:
                        c.sock.close(linger=0)
        finally:
            client.close()

    def stop(self, name, sig=signal.SIGTERM, wait: float = 15.0):
        p = self.procs.pop(name, None)
        if p is None:
            return None
        if p.poll() is None:
            os.kill(p.pid, sig)
            try:
                p.wait(wait)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(5)
        return p.returncode

    def close(self):
        for name in list(self.procs):
            self.stop(name)

    def submit(self, site, name, **kw):
        return submit(self.study, site, name, **kw)

    def run(self, analysis, out, **options):
        return run_analysis(self.study, analysis, options, out, progress=False)

    def usage(self) -> dict:
        """{name: (cpu seconds, peak resident MiB)} of the running daemons (Linux /proc)."""
        out = {}
        tick = os.sysconf("SC_CLK_TCK")
        for name, p in self.procs.items():
            try:
                fields = open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()
                cpu = (int(fields[11]) + int(fields[12])) / tick
                peak = 0
                for line in open(f"/proc/{p.pid}/status"):
                    if line.startswith("VmHWM:"):
                        peak = int(line.split()[1]) / 1024
                out[name] = (cpu, peak)
            except (OSError, IndexError, ValueError):
                out[name] = (float("nan"), float("nan"))
        return out

    def status(self):
        client = ClientContext(self.study, next(iter(self.study.analysts)))
        try:
            return [client.node(i, 10.0).call({"cmd": "status"})[0] for i in range(self.study.n_nodes)]
        finally:
            client.close()
