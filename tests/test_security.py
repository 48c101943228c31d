"""Who may connect, who may ask for what, and who learns what — with real daemons.

A dealer and three nodes (``python -m parties.cli``) on loopback with
CurveZMQ; two providers, two analysts.  Checked:

- a key that is not in the study is refused at connect (the CURVE handshake
  fails, ZAP logs the refusal) on every socket: node and dealer, service and
  peer; a client without CurveZMQ gets no handshake either;
- a peer socket admits only the dealer and the nodes: a provider's or an
  analyst's (valid) key is refused there and the refusal is logged;
- a provider cannot start an analysis (node or dealer) nor read the nodes'
  status; an analyst cannot submit data;
- only the analyst who started a job receives its events: a second analyst
  connected to every node receives nothing, and a provider that connects
  under the analyst's name (the routing-id hand-over of a ZeroMQ ROUTER) gets
  nothing either, while the analyst's run completes;
- the reveal log of a full GWAS run (QC, PCA, covariate-adjusted trend test)
  lists exactly the reveals the policy names for this pipeline, each to the
  recipient the policy allows, and every node logged the same reveals;
- plaintext mode is an explicit option and is logged loudly.
"""
from __future__ import annotations

import collections
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from mpc.errors import InputError
from mpc.net.zmq_channel import make_client
from parties import keys as keyfiles
from parties import study as st
from parties.local import LocalStudy
from parties.reader import run_analysis
from parties.service import ClientContext, ServiceError, unpack
from parties.simulate import simulate

pytestmark = pytest.mark.slow

OPTIONS = {"pheno": "CASE", "covar_names": "AGE", "mind": 0.1, "geno": 0.1, "maf": 0.01, "hwe": 1e-6,
           "het_min": None, "het_max": None, "het_sd": None, "pcs": 2, "pca_oversample": 2,
           "pca_iters": 2, "pca_eig_iters": 6, "ld_dist": 100000, "pca_seed": 1}

# The reveals of the gwas pipeline (QC, PCA, trend test with covariates) and their recipients.
GWAS_REVEALS = {("qc.sample_keep", "nodes"), ("qc.sample_counts", "analyst"), ("qc.snp_keep", "nodes"),
                ("gwas.covariate_check", "nodes"), ("gwas.r", "analyst"), ("gwas.pca_eigenvalues", "analyst")}

HANDSHAKE_EVENTS = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
                    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("security")
    simulate(out_dir=root / "sites", sites=2, samples=200, snps=300, seed=7, n_causal=2)
    s = LocalStudy(root / "study", providers=("site1", "site2"), analysts=("analyst", "analyst2"),
                   timeout=5.0, block_snps=128)
    try:
        for name in ("site1", "site2"):
            s.submit(root / "sites" / name, name)
        yield s
    finally:
        s.close()


def _keypair(study, name):
    return keyfiles.read(study.study.key_file(name)).pair


def _endpoints(study):
    """(label, endpoint, server public key) of every socket of node0 and the dealer."""
    s = study.study
    return [("node0 service", s.node(0).service, s.node(0).public_key),
            ("node0 peer", s.node(0).peer, s.node(0).public_key),
            ("dealer service", s.dealer.service, s.dealer.public_key),
            ("dealer peer", s.dealer.peer, s.dealer.public_key)]


def _handshake(context, endpoint, routing_id, keys, server_key, timeout=5.0):
    """Connect, send a ping, and return (handshake event, reply or None)."""
    sock = make_client(context, endpoint, routing_id, keys, server_key, linger=0)
    monitor = sock.get_monitor_socket(HANDSHAKE_EVENTS)
    try:
        sock.send_multipart([b'\x81\xa3cmd\xa4ping'])       # msgpack {"cmd": "ping"}
        event = None
        if monitor.poll(int(timeout * 1000)):
            event = recv_monitor_message(monitor)["event"]
        reply = None
        if sock.poll(300):
            reply = unpack(sock.recv_multipart(), endpoint)[0]
        return event, reply
    finally:
        sock.disable_monitor()
        monitor.close(0)
        sock.close(0)


def _log(study, name):
    return (study.root / "logs" / f"{name}.log").read_text()


def test_curve_is_on_and_unknown_keys_are_refused_at_connect(study, tmp_path):
    assert study.study.curve
    rogue = keyfiles.generate()
    context = zmq.Context()
    try:
        for label, endpoint, server_key in _endpoints(study):
            event, reply = _handshake(context, endpoint, "analyst", rogue.pair, server_key)
            assert event == zmq.EVENT_HANDSHAKE_FAILED_AUTH, label
            assert reply is None, label
        # A client without CurveZMQ does not get through the handshake either.
        event, reply = _handshake(context, study.study.node(0).service, "analyst", None, None, timeout=2.0)
        assert event != zmq.EVENT_HANDSHAKE_SUCCEEDED and reply is None
    finally:
        context.destroy(linger=0)
    rogue_key = rogue.public.decode()
    for daemon in ("node0", "dealer"):
        text = _log(study, daemon)
        refusals = [line for line in text.splitlines() if "not in the study" in line and rogue_key in line]
        assert len(refusals) >= 2, f"{daemon} logged {len(refusals)} refusals of the rogue key (service + peer)"


def test_peer_sockets_admit_only_nodes_and_the_dealer(study):
    context = zmq.Context()
    try:
        for name in ("site1", "analyst"):
            for label, endpoint, server_key in _endpoints(study):
                event, reply = _handshake(context, endpoint, name, _keypair(study, name), server_key)
                if label.endswith("peer"):
                    assert event == zmq.EVENT_HANDSHAKE_FAILED_AUTH, (name, label)
                    assert reply is None
                else:
                    assert event == zmq.EVENT_HANDSHAKE_SUCCEEDED, (name, label)
                    assert reply == {"ok": True, "node": label.split()[0]}
    finally:
        context.destroy(linger=0)
    for daemon in ("node0", "dealer"):
        text = _log(study, daemon)
        for name in ("site1", "analyst"):
            assert re.search(rf"refused a CurveZMQ connection from {name} to the peer socket", text), (daemon, name)


def test_roles_are_enforced(study, tmp_path):
    s = study.study
    statuses = study.status()
    submissions = {p: v["submission"] for p, v in statuses[0]["submissions"].items()}
    run = {"cmd": "run", "job": "0123456789abcdef", "analysis": "freq", "options": {}, "submissions": submissions}
    provider = ClientContext(s, "site1")
    try:
        node = provider.node(0, timeout=5.0)
        with pytest.raises(ServiceError, match=r"provider site1 may not ask for 'run'"):
            node.call(run)
        with pytest.raises(ServiceError, match=r"provider site1 may not ask for 'status'"):
            node.call({"cmd": "status"})
        with pytest.raises(ServiceError, match=r"provider site1 may not ask the dealer for 'run'"):
            provider.dealer(timeout=5.0).call(run)
    finally:
        provider.close()
    # The analyst's client refuses a provider's name before connecting at all.
    with pytest.raises(InputError, match="not an analyst"):
        run_analysis(s, "freq", {}, tmp_path / "out", me="site1", progress=False)
    analyst = ClientContext(s, "analyst")
    try:
        meta = {"provider": "analyst", "submission": "analyst-00", "n_samples": 1}
        with pytest.raises(ServiceError, match=r"analyst analyst may not ask for 'submit_begin'"):
            analyst.node(0, timeout=5.0).call({"cmd": "submit_begin", "meta": meta, "seed": "00" * 16})
        with pytest.raises(ServiceError, match=r"analyst analyst may not ask the dealer for 'register'"):
            analyst.dealer(timeout=5.0).call({"cmd": "register", "submission": "analyst-00", "seeds": []})
    finally:
        analyst.close()
    assert [x["submissions"] for x in study.status()] == [x["submissions"] for x in statuses]
    for i in range(s.n_nodes):
        assert not list((study.root / "data" / f"node{i}" / "checkpoints").glob("*")), "no job may have started"


class _Listener:
    """Clients that stay connected to every node during a job and keep whatever reaches them."""

    def __init__(self, study, name, routing_id=None):
        self.context = zmq.Context()
        self.keys = _keypair(study, name)
        self.socks = []
        for i in range(study.study.n_nodes):
            ep = study.study.node(i)
            rid = routing_id or f"{name}.{i}listener"
            self.socks.append((ep.name, make_client(self.context, ep.service, rid, self.keys, ep.public_key,
                                                     linger=0)))
        self.received = collections.defaultdict(list)
        self.stop = threading.Event()
        for _, sock in self.socks:
            sock.send_multipart([b'\x81\xa3cmd\xa4ping'])
        self.thread = threading.Thread(target=self._listen, daemon=True)
        self.thread.start()

    def _listen(self):
        poller = zmq.Poller()
        for _, sock in self.socks:
            poller.register(sock, zmq.POLLIN)
        names = {sock: name for name, sock in self.socks}
        while not self.stop.is_set():
            for sock, _ in poller.poll(100):
                msg = sock.recv_multipart()
                self.received[names[sock]].append(unpack(msg, names[sock])[0])

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.context.destroy(linger=0)

    def events(self):
        return [m for msgs in self.received.values() for m in msgs if "event" in m]


@pytest.fixture(scope="module")
def gwas_run(study, tmp_path_factory):
    """One GWAS run by `analyst`, while a second analyst and a provider posing as
    the analyst listen on every node."""
    out = tmp_path_factory.mktemp("gwas_out")
    second = _Listener(study, "analyst2")
    result, listeners = {}, []

    def run():
        try:
            result["summary"] = run_analysis(study.study, "gwas", OPTIONS, out, me="analyst", progress=False)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            result["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    try:
        # Once the job runs (a node has checkpointed QC), connect as "analyst" with a provider's key:
        # a ROUTER hands a routing id over to the newest connection that claims it.
        ckpt = study.root / "data" / "node0" / "checkpoints"
        deadline = time.monotonic() + 60
        while not list(ckpt.glob("*/qc.ckpt")) and worker.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        listeners.append(_Listener(study, "site1", routing_id="analyst"))
        listeners.append(_Listener(study, "site2", routing_id="analyst.0123456789abcdef"))
        worker.join(120)
    finally:
        for x in listeners + [second]:
            x.close()
    assert not worker.is_alive(), "the analyst's run did not finish"
    if "error" in result:
        raise result["error"]
    return {"summary": result["summary"], "second": second, "impostors": listeners, "out": out}


def test_only_the_requesting_analyst_receives_results(gwas_run, study):
    summary = gwas_run["summary"]
    assert summary["snps_tested"] > 0 and (gwas_run["out"] / "gwas.tsv").exists()
    # The second analyst got the answers to its pings and nothing of the job.
    second = gwas_run["second"]
    assert sorted(second.received) == [n.name for n in study.study.nodes]
    for node, msgs in second.received.items():
        assert msgs == [{"ok": True, "node": node}]
    # The impostors (a provider's key under the analyst's name) got nothing at all:
    # their requests are dropped, and the job's events go to the analyst's own connection.
    for impostor in gwas_run["impostors"]:
        assert impostor.events() == [] and not impostor.received
    for i in range(study.study.n_nodes):
        assert "dropped a request whose routing id 'analyst' does not match its key (site1)" in _log(study, f"node{i}")


def test_reveal_log_lists_exactly_the_policy_reveals(gwas_run, study):
    summary = gwas_run["summary"]
    reveals = {(r["name"], r["to"]) for r in summary["reveals"]}
    assert reveals == GWAS_REVEALS
    policy = study.study.policy
    for r in summary["reveals"]:
        assert r["to"] in policy[r["name"]], r
    # The results themselves went to the analyst only (never to the nodes).
    assert not any(to == "nodes" for name, to in reveals if name.startswith("gwas.r"))
    # Shapes: keep masks over every sample / SNP, r over the tested SNPs.
    shapes = collections.defaultdict(set)
    for r in summary["reveals"]:
        shapes[r["name"]].add(tuple(r["shape"]))
    assert shapes["qc.sample_keep"] == {(summary["samples_before_qc"],)}
    assert shapes["qc.snp_keep"] == {(summary["snps_before_qc"],)}
    assert shapes["gwas.r"] == {(summary["snps_tested"],)}
    # The PCA eigenvalues: the analyst's k x k Rayleigh-Ritz matrix (never the nodes by default).
    assert shapes["gwas.pca_eigenvalues"] == {(OPTIONS["pcs"], OPTIONS["pcs"])}
    # Every node logged the same reveals as node0 reported to the analyst.
    expected = collections.Counter((r["name"], tuple(r["shape"]), r["to"]) for r in summary["reveals"])
    for i in range(study.study.n_nodes):
        logged = collections.Counter()
        for m in re.finditer(r"revealed (\S+) \(shape \(([\d, ]*)\)\) to (\w+)", _log(study, f"node{i}")):
            shape = tuple(int(x) for x in m.group(2).split(",") if x.strip())
            logged[(m.group(1), shape, m.group(3))] += 1
        assert logged == expected, f"node{i}"


def test_plaintext_mode_is_explicit_and_loud(tmp_path):
    path = st.init_study(tmp_path / "study", nodes=2, providers=("site1",), curve=False)
    study = st.load(path)
    assert not study.curve
    log = tmp_path / "node0.log"
    proc = subprocess.Popen([sys.executable, "-m", "parties.cli", "node", "--study", str(path), "--id", "0",
                             "--data", str(tmp_path / "data"), "--log", str(log)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while "listening" not in (log.read_text() if log.exists() else ""):
            assert proc.poll() is None and time.monotonic() < deadline, "the node did not start"
            time.sleep(0.1)
        text = log.read_text()
        assert re.search(r"WARNING PLAINTEXT MODE: CurveZMQ is off .* neither encrypted nor authenticated", text)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    # A study file says curve = true unless the operator asks for plaintext.
    default = st.load(st.init_study(tmp_path / "default", nodes=2, providers=("site1",)))
    assert default.curve and all(len(k) == 40 for k in default.public_keys().values())
