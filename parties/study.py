"""The study file: parties, addresses, public keys, parameters and reveal policy.

One TOML file describes a study::

    [study]
    name = "local"
    curve = true          # CurveZMQ on every connection (false: plaintext, loudly logged)
    timeout = 10.0        # seconds of peer silence before a job stops everywhere
    keys = "keys"         # where this machine keeps secret key files (relative to the file)
    block_snps = 1024     # genotype columns per block: memory per node is bounded by a block

    [params]              # fixed-point format (mpc.params.Params)
    k = 56
    f = 28
    sigma = 40

    [survival]            # the public time grid of survival tables
    resolution = 1.0
    max_time = 10000

    [dealer]
    peer = "tcp://127.0.0.1:7000"       # nodes connect here
    service = "tcp://127.0.0.1:7001"    # providers and analysts connect here
    public_key = "..."
    # peer_bind / service_bind: where to bind when others connect through a relay

    [[nodes]]                            # node0, node1, ... in order
    peer = "..."
    service = "..."
    public_key = "..."

    [[providers]]
    name = "site1"
    public_key = "..."

    [[analysts]]
    name = "analyst"
    public_key = "..."

    [policy]                             # what may be revealed, to whom
    "qc.sample_keep" = ["nodes", "analyst"]

Secret keys never enter the study file: each party reads its own key file.
"""
from __future__ import annotations

import socket
import tomllib
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from mpc.errors import InputError
from mpc.params import Params
from parties import keys as keyfiles

DEALER = "dealer"


def node_name(i: int) -> str:
    return f"node{i}"


@dataclass(frozen=True)
class Endpoint:
    """A daemon's addresses: where others connect (peer, service) and, when that
    is a relay or a NAT address, where the daemon itself binds (peer_bind,
    service_bind; default: the same)."""

    name: str
    peer: str | None
    service: str | None
    public_key: bytes
    peer_bind: str | None = None
    service_bind: str | None = None

    @property
    def peer_listen(self) -> str:
        return self.peer_bind or self.peer

    @property
    def service_listen(self) -> str:
        return self.service_bind or self.service


@dataclass(frozen=True)
class Study:
    path: Path
    name: str
    params: Params
    curve: bool
    timeout: float
    key_dir: Path
    dealer: Endpoint
    nodes: tuple
    providers: dict
    analysts: dict
    policy: dict
    survival_resolution: float = 1.0
    survival_max_time: float = 10000.0
    block_snps: int = 1024

    @property
    def n_nodes(self) -> int:
        return len(self.nodes)

    def node(self, i: int) -> Endpoint:
        if not 0 <= i < len(self.nodes):
            raise InputError(f"node id {i} is not in the study (it has nodes 0..{len(self.nodes) - 1})")
        return self.nodes[i]

    def public_keys(self) -> dict:
        """Every party's public key by name."""
        out = {DEALER: self.dealer.public_key}
        out.update({n.name: n.public_key for n in self.nodes})
        out.update({name: k for name, k in self.providers.items()})
        out.update({name: k for name, k in self.analysts.items()})
        return out

    def role_of(self, name: str) -> str | None:
        if name == DEALER:
            return "dealer"
        if any(n.name == name for n in self.nodes):
            return "node"
        if name in self.providers:
            return "provider"
        if name in self.analysts:
            return "analyst"
        return None

    def key_file(self, name: str) -> Path:
        return self.key_dir / f"{name}.key"

    def load_keys(self, name: str, key_file=None):
        """This party's key pair (None in plaintext mode)."""
        if not self.curve:
            return None
        kp = keyfiles.read(key_file or self.key_file(name))
        if kp.public != self.public_keys().get(name):
            raise InputError(f"the key file of {name} does not match its public key in {self.path}")
        return kp.pair


def _require(table: dict, key: str, where: str):
    if key not in table:
        raise InputError(f"study file: [{where}] lacks '{key}'")
    return table[key]


def _endpoint(table: dict, name: str, where: str, curve: bool) -> Endpoint:
    key = table.get("public_key", "")
    if curve and (not isinstance(key, str) or len(key) != 40):
        raise InputError(f"study file: [{where}] needs a 40-character z85 public_key")
    return Endpoint(name, _require(table, "peer", where), _require(table, "service", where), key.encode(),
                    table.get("peer_bind"), table.get("service_bind"))


def load(path) -> Study:
    """Read and validate a study file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise InputError(f"cannot read study file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"study file {path} is not valid TOML: {exc}") from None
    st = data.get("study", {})
    curve = bool(st.get("curve", True))
    try:
        params = Params(**data.get("params", {}))
    except TypeError as exc:
        raise InputError(f"study file {path}: [params]: {exc}") from None
    dealer = _endpoint(_require(data, "dealer", "dealer"), DEALER, "dealer", curve)
    nodes = tuple(_endpoint(t, node_name(i), f"nodes #{i}", curve) for i, t in enumerate(data.get("nodes", [])))
    if len(nodes) < 2:
        raise InputError(f"study file {path}: at least 2 [[nodes]] are needed, found {len(nodes)}")
    names = {DEALER} | {n.name for n in nodes}
    groups = {}
    for section in ("providers", "analysts"):
        groups[section] = {}
        for t in data.get(section, []):
            name = _require(t, "name", section)
            if name in names or not name.replace("_", "").replace("-", "").isalnum():
                raise InputError(f"study file {path}: {section} name {name!r} is reserved, repeated "
                                 f"or not alphanumeric")
            names.add(name)
            key = t.get("public_key", "")
            if curve and len(key) != 40:
                raise InputError(f"study file {path}: {section} {name!r} needs a 40-character public_key")
            groups[section][name] = key.encode()
    policy = {}
    for name, to in data.get("policy", {}).items():
        if not isinstance(to, list) or not all(t in ("nodes", "analyst") for t in to):
            raise InputError(f"study file {path}: policy entry {name!r} must list 'nodes' and/or 'analyst'")
        policy[name] = tuple(to)
    surv = data.get("survival", {})
    return Study(path=path, name=st.get("name", path.stem), params=params, curve=curve,
                 timeout=float(st.get("timeout", 10.0)),
                 key_dir=(path.parent / st.get("keys", "keys")).resolve(),
                 dealer=dealer, nodes=nodes, providers=groups["providers"], analysts=groups["analysts"],
                 policy=policy, survival_resolution=float(surv.get("resolution", 1.0)),
                 survival_max_time=float(surv.get("max_time", 10000.0)),
                 block_snps=int(st.get("block_snps", 1024)))


def free_ports(count: int, host: str = "127.0.0.1") -> list:
    """Ports free on `host` right now (bound then released)."""
    socks, ports = [], []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def init_study(out_dir, *, nodes: int = 3, providers=("site1", "site2", "site3"),
               analysts=("analyst",), host: str = "127.0.0.1", base_port: int | None = None,
               curve: bool = True, policy: dict | None = None, params: Params | None = None,
               timeout: float = 10.0, name: str = "local", block_snps: int = 1024) -> Path:
    """Write a local study: study.toml plus a key pair for every party under keys/."""
    if nodes < 2:
        raise InputError(f"a study needs at least 2 nodes, got {nodes}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_ports = 2 * (nodes + 1)
    ports = list(range(base_port, base_port + n_ports)) if base_port else free_ports(n_ports, host)
    params = params or Params()
    all_keys = {}

    def keyed(name):
        kp = keyfiles.generate()
        keyfiles.write(out / "keys" / f"{name}.key", kp)
        all_keys[name] = kp
        return kp.public.decode()

    doc = {
        "study": {"name": name, "curve": curve, "timeout": timeout, "keys": "keys", "block_snps": block_snps},
        "params": {"k": params.k, "f": params.f, "sigma": params.sigma},
        "survival": {"resolution": 1.0, "max_time": 10000.0},
        "dealer": {"peer": f"tcp://{host}:{ports[0]}", "service": f"tcp://{host}:{ports[1]}",
                   "public_key": keyed(DEALER)},
        "nodes": [{"peer": f"tcp://{host}:{ports[2 + 2 * i]}", "service": f"tcp://{host}:{ports[3 + 2 * i]}",
                   "public_key": keyed(node_name(i))} for i in range(nodes)],
        "providers": [{"name": p, "public_key": keyed(p)} for p in providers],
        "analysts": [{"name": a, "public_key": keyed(a)} for a in analysts],
        "policy": {k: list(v) for k, v in (policy or {}).items()},
    }
    path = out / "study.toml"
    path.write_text(tomli_w.dumps(doc))
    return path
