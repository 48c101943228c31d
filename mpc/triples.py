"""Correlated randomness: what the dealer makes and how a node takes its share.

Every random object is defined by seeds and a public label:

- a **mask** (``MaskSpec``) is uniform and additively shared with *every*
  node's share drawn from that node's seed for the mask's owner: no traffic.
  The owner is ``"dealer"`` (the per-job seeds the dealer sent each node) or a
  provider's submission (seeds the provider gave each node and the dealer).
  The dealer, holding all seeds, can rebuild any mask.
- a **correlated tuple** (a Beaver product ``c = a*b``, a truncation pair
  ``(r, r >> m)``, ...) has components that nodes 0..n-2 draw from their
  dealer seeds under ``label/component``; the dealer computes the secret
  component and sends node n-1 only the correction ``secret - sum(others)``.
  Dealer traffic: one element per tuple element, whatever n is.

Requests are sent by node n-1 as soon as the protocol knows it will need a
tuple and the corrections are collected when they are used, so the dealer
works while the nodes exchange their openings.

``KINDS`` is the one registry of tuple kinds: for each, the components it has
and how the dealer computes them from the request.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass, replace

import msgpack
import numpy as np

from mpc import field
from mpc.errors import ProtocolError
from mpc.params import P
from mpc.prg import Prg

DEALER = "dealer"
BATCH_BYTES = 64 << 10     # corrections up to this size travel together in one message
MAX_REQUEST_ELEMENTS = 1 << 28


@dataclass(frozen=True)
class MaskSpec:
    """A uniform random field array shared by seeds.

    Parameters
    ----------
    owner : str
        Whose seeds: ``"dealer"`` or a submission id.
    label : str
        PRG label.
    shape : tuple
        Logical shape of the mask as generated.
    transposed : bool
        The operand is the transpose of the (selected) mask (2-D only).
    rows, cols : bytes or None
        Public selections of rows / columns of the generated 2-D mask, as
        packed bit masks (numpy.packbits); None keeps every row / column.
        The operand is ``generated[rows][:, cols]`` (then transposed).
    bits : bool
        A *bit mask*: uniform 64-bit words, XOR-shared (each node's share is
        its PRG's words, the mask is their XOR) instead of additively shared
        field elements.  No selection or transposition (mpc.compare uses
        these for AND triples and random bits).
    coef : int
        The operand is coef times the mask (mod p): masks follow negation and
        multiplication by public integers of the value they mask.
    width : int
        A *narrow* mask (0: uniform field elements): each seed's share is a
        uniform integer in [0, 2^width), so the mask, their sum, stays below
        n 2^width and ``x - a`` of a small x fits an int64 (providers store 0/1
        indicator matrices so: 8 bytes instead of 16).  It hides x up to
        statistical distance |x - x'| / 2^width per element from any n - 1 nodes
        (the missing node's share alone is uniform on 2^width values); see
        narrow_mask_width.
    trunc : tuple (rbits, m) or None
        Not a seed mask but the high part r >> m of the dealer's truncation
        pair under `label` (r uniform in [0, 2^rbits)): the output of a
        truncation is ``(c >> m) - 2^(bits-1-m) - (r >> m)`` with c already
        opened, so it comes masked (mpc.truncate) and its next product needs
        no opening.  Nodes hold their shares of it; only the dealer rebuilds it.
    """

    owner: str
    label: str
    shape: tuple
    transposed: bool = False
    rows: bytes | None = None
    cols: bytes | None = None
    bits: bool = False
    coef: int = 1
    trunc: tuple | None = None
    width: int = 0

    def scaled(self, k: int) -> "MaskSpec":
        """The spec of k times this operand (k a public integer)."""
        return replace(self, coef=(self.coef * int(k)) % P)

    def _index(self, axis: int):
        packed = self.rows if axis == 0 else self.cols
        if packed is None:
            return None
        bits = np.unpackbits(np.frombuffer(packed, dtype=np.uint8), count=self.shape[axis])
        return np.flatnonzero(bits)

    @property
    def selected_shape(self) -> tuple:
        shape = list(self.shape)
        for axis in (0, 1):
            idx = self._index(axis) if len(shape) == 2 else None
            if idx is not None:
                shape[axis] = len(idx)
        return tuple(shape)

    @property
    def operand_shape(self) -> tuple:
        shape = self.selected_shape
        return tuple(reversed(shape)) if self.transposed else shape

    def T(self) -> "MaskSpec":
        if len(self.shape) != 2:
            raise ValueError(f"transpose of a {len(self.shape)}-D mask")
        return replace(self, transposed=not self.transposed)

    def select(self, rows=None, cols=None) -> "MaskSpec":
        """The spec of operand[rows][:, cols] for boolean masks over the operand's axes."""
        if len(self.shape) != 2:
            raise ValueError(f"select on a {len(self.shape)}-D mask")
        gen_rows, gen_cols = (cols, rows) if self.transposed else (rows, cols)
        packed = []
        for axis, sel in ((0, gen_rows), (1, gen_cols)):
            current = self._index(axis)
            current = np.arange(self.shape[axis]) if current is None else current
            if sel is not None:
                sel = np.asarray(sel, dtype=bool)
                if sel.shape != current.shape:
                    raise ValueError(f"select: mask of length {sel.size} for an axis of length {current.size}")
                current = current[sel]
            if len(current) == self.shape[axis] and sel is None and (self.rows if axis == 0 else self.cols) is None:
                packed.append(None)
            else:
                bits = np.zeros(self.shape[axis], dtype=np.uint8)
                bits[current] = 1
                packed.append(np.packbits(bits).tobytes())
        return replace(self, rows=packed[0], cols=packed[1])

    def apply(self, a: np.ndarray) -> np.ndarray:
        """The operand from the generated mask (or share) a."""
        if len(self.shape) == 2:
            r, c = self._index(0), self._index(1)
            if r is not None:
                a = np.take(a, r, axis=0)       # take is ~8x faster than boolean indexing here
            if c is not None:
                a = np.take(a, c, axis=1)
            if self.transposed:
                a = a.transpose(1, 0, 2)
        return np.ascontiguousarray(a)

    def to_wire(self) -> list:
        wire = [self.owner, self.label, list(self.shape), self.transposed, self.rows, self.cols]
        if self.width:
            return wire + [self.bits, str(self.coef), None if self.trunc is None else list(self.trunc),
                           self.width]
        if self.coef != 1 or self.trunc is not None:
            return wire + [self.bits, str(self.coef), None if self.trunc is None else list(self.trunc)]
        return (wire + [True]) if self.bits else wire

    @staticmethod
    def from_wire(obj) -> "MaskSpec":
        try:
            owner, label, shape, transposed = obj[:4]
            rows, cols = (obj[4], obj[5]) if len(obj) in (6, 7, 9, 10) else (None, None)
            bits = bool(obj[6]) if len(obj) in (7, 9, 10) else False
            coef = int(obj[7]) % P if len(obj) in (9, 10) else 1
            width = int(obj[9]) if len(obj) == 10 else 0
            if not 0 <= width <= 62:
                raise ValueError(f"narrow mask width {width} out of range")
            trunc = None
            if len(obj) in (9, 10) and obj[8] is not None:
                rbits, m = (int(v) for v in obj[8])
                if not (0 < m < rbits <= 126):
                    raise ValueError(f"truncation mask ({rbits}, {m}) out of range")
                trunc = (rbits, m)
            spec = MaskSpec(str(owner), str(label), tuple(int(s) for s in shape), bool(transposed),
                            None if rows is None else bytes(rows), None if cols is None else bytes(cols),
                            bits, coef, trunc, width)
        except (TypeError, ValueError, IndexError) as exc:
            raise ProtocolError(f"malformed mask spec {obj!r}: {exc}") from None
        for axis, packed in ((0, spec.rows), (1, spec.cols)):
            if packed is not None and (len(spec.shape) != 2 or len(packed) != (spec.shape[axis] + 7) // 8):
                raise ProtocolError(f"mask spec {spec.label}: selection does not fit shape {spec.shape}")
        if spec.transposed and len(spec.shape) != 2:
            raise ProtocolError(f"mask spec {spec.label}: only 2-D masks transpose")
        if spec.bits and (spec.transposed or spec.rows is not None or spec.cols is not None):
            raise ProtocolError(f"mask spec {spec.label}: a bit mask has no selection or transposition")
        if spec.width and (spec.bits or spec.trunc is not None):
            raise ProtocolError(f"mask spec {spec.label}: a narrow mask is a plain seed mask")
        return spec


def narrow_mask_width(n_nodes: int) -> int:
    """The width of narrow masks among n nodes: the largest w with n 2^w <= 2^63,
    so that x - a (x in {0, 1}, a < n 2^w) is an int64 (61 bits for 3 nodes)."""
    n = int(n_nodes)
    if n < 2:
        raise ValueError(f"narrow_mask_width: need at least two nodes, got {n}")
    return 63 - (n - 1).bit_length()


def narrow_mask_ints(seed: bytes, label: str, shape, width: int) -> np.ndarray:
    """One seed's share of a narrow mask as uint64 integers in [0, 2^width)."""
    return Prg(seed, label).uint(_n_elements(shape), width).reshape(tuple(shape))


def seed_mask(seed: bytes, spec: MaskSpec) -> np.ndarray:
    """One seed's share of a (field or narrow) seed mask, as generated (no selection)."""
    if spec.width:
        return field.from_int(narrow_mask_ints(seed, spec.label, spec.shape, spec.width))
    return Prg(seed, spec.label).field(spec.shape)


def mask_share(seed: bytes, spec: MaskSpec) -> np.ndarray:
    """A node's share of a mask, as the operand (selected, transposed and scaled as the spec says)."""
    if spec.bits:
        return Prg(seed, spec.label).words(_n_elements(spec.shape)).reshape(spec.shape)
    if spec.trunc is not None:
        raise ProtocolError(f"mask {spec.label} is a truncation mask: nodes hold their shares of it")
    a = spec.apply(seed_mask(seed, spec))
    return a if spec.coef == 1 else field.mul_scalar(a, spec.coef)


# ------------------------------------------------------------ tuple kinds

def _n_elements(shape) -> int:
    return int(np.prod(shape, dtype=np.int64)) if len(shape) else 1


def _product_components(req):
    return [("c", "field", tuple(req["out"]))]


def _product_make(req, rebuild):
    if req["op"] == "matmul_sum":
        # One correction for a whole sum of products: the dealer streams the pairs,
        # so a pass over a blocked genotype matrix costs one output-sized message.
        total = None
        for a_wire, b_wire in req["pairs"]:
            a_spec, b = MaskSpec.from_wire(a_wire), rebuild(MaskSpec.from_wire(b_wire))
            if a_spec.transposed and len(a_spec.shape) == 2:    # aᵀ b without a transposed copy
                c = field.matmul_tn(rebuild(replace(a_spec, transposed=False)), b)
            else:
                c = field.matmul(rebuild(a_spec), b)
            total = c if total is None else field.add(total, c, out=total)
        return {"c": total}
    a = rebuild(MaskSpec.from_wire(req["a"]))
    op = req["op"]
    if op == "square":
        return {"c": field.mul(a, a)}
    b = rebuild(MaskSpec.from_wire(req["b"]))
    if op == "mul":
        return {"c": field.mul(a, b)}
    if op == "matmul":
        return {"c": field.matmul(a, b)}
    raise ProtocolError(f"unknown product op {op!r}")


def _check_product(req):
    op = req.get("op")
    out = tuple(req["out"])
    if op == "matmul_sum":
        pairs = req.get("pairs")
        if not isinstance(pairs, list) or not pairs or len(pairs) > 100000:
            raise ProtocolError("matmul_sum request: bad list of pairs")
        for pair in pairs:
            if not isinstance(pair, list) or len(pair) != 2:
                raise ProtocolError("matmul_sum request: a pair is not [a, b]")
            sa, sb = MaskSpec.from_wire(pair[0]).operand_shape, MaskSpec.from_wire(pair[1]).operand_shape
            if len(sa) != 2 or len(sb) != 2 or sa[1] != sb[0] or (sa[0], sb[1]) != out:
                raise ProtocolError(f"matmul_sum request: shapes {sa} and {sb} do not give {out}")
        return
    a = MaskSpec.from_wire(req["a"])
    if op == "square":
        expect = a.operand_shape
    else:
        b = MaskSpec.from_wire(req["b"])
        if op == "mul":
            if a.operand_shape != b.operand_shape:
                raise ProtocolError(f"product request: shapes {a.operand_shape} and {b.operand_shape} differ")
            expect = a.operand_shape
        elif op == "matmul":
            sa, sb = a.operand_shape, b.operand_shape
            if len(sa) != 2 or len(sb) != 2 or sa[1] != sb[0]:
                raise ProtocolError(f"matmul request: shapes {sa} and {sb} do not chain")
            expect = (sa[0], sb[1])
        else:
            raise ProtocolError(f"unknown product op {op!r}")
    if out != expect:
        raise ProtocolError(f"product request: output shape {out} should be {expect}")


def _uint_field(prg: Prg, shape, bits: int) -> np.ndarray:
    """Uniform integers in [0, 2^bits) as field elements (bits <= 126)."""
    n = _n_elements(shape)
    out = np.zeros((n, field.LIMBS), dtype=np.uint64)
    out[:, 0] = prg.uint(n, min(bits, 64))
    if bits > 64:
        out[:, 1] = prg.uint(n, bits - 64)
    return out.reshape(tuple(shape) + (field.LIMBS,))


def shift_right(x: np.ndarray, m: int) -> np.ndarray:
    """floor(x / 2^m) for canonical field elements read as integers in [0, p)."""
    if not 0 <= m < 127:
        raise ValueError(f"shift_right: m must be in [0, 127), got {m}")
    out = np.empty_like(x)
    lo, hi = x[..., 0], x[..., 1]
    if m == 0:
        out[...] = x
    elif m < 64:
        out[..., 0] = (lo >> np.uint64(m)) | (hi << np.uint64(64 - m))
        out[..., 1] = hi >> np.uint64(m)
    else:
        out[..., 0] = hi >> np.uint64(m - 64)
        out[..., 1] = 0
    return out


def _trunc_components(req):
    shape = tuple(req["shape"])
    return [("r", "field", shape), ("r_hi", "field", shape)]


def trunc_pair(private_seed: bytes, label: str, shape, rbits: int, m: int):
    """The dealer's truncation pair (r, r >> m) for `label`: r uniform in [0, 2^rbits),
    drawn from the dealer's private seed under the label, so the dealer can rebuild
    r >> m later when a product uses the truncated value (MaskSpec.trunc)."""
    r = _uint_field(Prg(private_seed, f"dealer-trunc:{label}"), shape, rbits)
    return r, shift_right(r, m)


def _trunc_make(req, rebuild, prg):
    r, r_hi = trunc_pair(prg.seed, req["label"], tuple(req["shape"]), req["bits"] + req["sigma"], req["m"])
    return {"r": r, "r_hi": r_hi}


def _check_trunc(req):
    bits, m, sigma = req.get("bits"), req.get("m"), req.get("sigma")
    if not all(isinstance(v, int) for v in (bits, m, sigma)):
        raise ProtocolError("trunc request: bits, m and sigma must be integers")
    if not (0 < m < bits and sigma >= 40 and bits + sigma + 1 <= 126):
        raise ProtocolError(f"trunc request: bits={bits}, m={m}, sigma={sigma} break 0 < m < bits, "
                            f"sigma >= 40, bits + sigma + 1 <= 126")


def batched_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(K, m, l) @ (K, l, r) -> (K, m, r) on field arrays."""
    out = np.empty((a.shape[0], a.shape[1], b.shape[2], field.LIMBS), dtype=np.uint64)
    for k in range(a.shape[0]):
        out[k] = field.matmul(a[k], b[k])
    return out


def _bmatmul_check(req):
    a, b = MaskSpec.from_wire(req["a"]), MaskSpec.from_wire(req["b"])
    sa, sb = a.operand_shape, b.operand_shape
    if len(sa) != 3 or len(sb) != 3 or sa[0] != sb[0] or sa[2] != sb[1]:
        raise ProtocolError(f"bmatmul request: shapes {sa} and {sb} do not chain")
    if tuple(req["out"]) != (sa[0], sa[1], sb[2]):
        raise ProtocolError(f"bmatmul request: output shape {tuple(req['out'])} should be {(sa[0], sa[1], sb[2])}")


def _bmatmul_make(req, rebuild, prg):
    return {"c": batched_matmul(rebuild(MaskSpec.from_wire(req["a"])), rebuild(MaskSpec.from_wire(req["b"])))}


MAX_ORTHOGONAL = 1024


def haar_orthogonal(prg: Prg, l: int) -> np.ndarray:
    """A Haar-distributed l x l orthogonal matrix from `prg`: the Q of a QR
    decomposition of a standard normal matrix (Box-Muller from 53-bit
    uniforms), its columns' signs fixed by R's diagonal (Mezzadri 2007)."""
    u = (prg.uint(2 * l * l, 53).astype(np.float64) + 1.0) * 2.0 ** -53      # (0, 1]
    g = np.sqrt(-2.0 * np.log(u[: l * l])) * np.cos(2.0 * np.pi * u[l * l:])
    q, r = np.linalg.qr(g.reshape(l, l))
    return q * np.where(np.diag(r) < 0, -1.0, 1.0)


def _orthogonal_make(req, rebuild, prg):
    q = haar_orthogonal(Prg(prg.seed, f"dealer-orth:{req['label']}"), req["l"])
    return {"r": field.from_int(np.rint(q * 2.0 ** req["frac"]).astype(np.int64))}


def _check_orthogonal(req):
    l, frac = req.get("l"), req.get("frac")
    if not (isinstance(l, int) and isinstance(frac, int) and 1 <= l <= MAX_ORTHOGONAL and 1 <= frac <= 60):
        raise ProtocolError(f"orthogonal request: l={l!r}, frac={frac!r} break 1 <= l <= {MAX_ORTHOGONAL}, "
                            f"1 <= frac <= 60")


@dataclass(frozen=True)
class Kind:
    components: object  # req -> list of (name, 'field'|'bits', shape)
    make: object        # (req, rebuild, prg) -> dict name -> secret array
    check: object       # req -> None or raise ProtocolError


KINDS = {
    "product": Kind(_product_components, lambda req, rebuild, prg: _product_make(req, rebuild), _check_product),
    "trunc": Kind(_trunc_components, _trunc_make, _check_trunc),
    # batched matrix products (K independent small products; protocols.logistic's Wald fits)
    "bmatmul": Kind(lambda req: [("c", "field", tuple(req["out"]))], _bmatmul_make, _bmatmul_check),
    # a secret random rotation (mpc.linalg.eigh_rotated): nodes learn R^T S R, not S
    "orthogonal": Kind(lambda req: [("r", "field", (req["l"], req["l"]))], _orthogonal_make, _check_orthogonal),
}


def register_kind(name: str, kind: Kind) -> None:
    """Add a tuple kind (used by higher layers such as mpc.compare)."""
    if name in KINDS and KINDS[name] is not kind:
        raise ValueError(f"tuple kind {name!r} already registered")
    KINDS[name] = kind


def _component_share(seed: bytes, label: str, comp: str, typ: str, shape) -> np.ndarray:
    prg = Prg(seed, f"{label}/{comp}")
    if typ == "field":
        return prg.field(shape)
    return prg.words(_n_elements(shape)).reshape(shape)


# ------------------------------------------------------------ node side

class Pending:
    """A node's shares of one correlated tuple, resolved on first use."""

    def __init__(self, source: "NodeTuples", label: str, components):
        self._source = source
        self._label = label
        self._components = components
        self._values = None

    @property
    def label(self) -> str:
        return self._label

    def __getitem__(self, comp: str) -> np.ndarray:
        if self._values is None:
            self._values = self._source._resolve(self._label, self._components)
        return self._values[comp]


class NodeTuples:
    """Where a computation node gets masks and correlated tuples.

    Parameters
    ----------
    index, n : int
        This node's index and the number of nodes.
    seeds : dict owner -> 16-byte seed
        ``seeds["dealer"]`` is the per-job seed shared with the dealer.
    channel : Channel or None
        The link to the dealer (node n-1 only).
    """

    def __init__(self, index: int, n: int, seeds: dict, channel=None):
        self.index = index
        self.n = n
        self.seeds = dict(seeds)
        self.corrected = index == n - 1
        self.channel = channel
        if self.corrected and channel is None:
            raise ValueError("node n-1 needs a channel to the dealer")
        self._queued = []

    def mask(self, spec: MaskSpec) -> np.ndarray:
        try:
            seed = self.seeds[spec.owner]
        except KeyError:
            raise ProtocolError(f"node{self.index} has no seed for mask owner {spec.owner!r}") from None
        return mask_share(seed, spec)

    def request(self, kind: str, label: str, **req) -> Pending:
        """Ask for one correlated tuple; returns its (lazy) shares."""
        req = {"kind": kind, "label": label, **req}
        k = KINDS[kind]
        k.check(req)
        comps = k.components(req)
        if self.corrected:
            self._queued.append(req)
        return Pending(self, label, comps)

    def flush(self) -> None:
        """Send queued requests to the dealer (node n-1; a no-op elsewhere)."""
        if self.corrected and self._queued:
            payload = np.frombuffer(msgpack.packb({"reqs": self._queued}), dtype=np.uint8)
            self.channel.send(DEALER, "req", payload)
            self._queued = []

    def _resolve(self, label, comps) -> dict:
        if not self.corrected:
            seed = self.seeds[DEALER]
            return {c: _component_share(seed, label, c, t, s) for c, t, s in comps}
        self.flush()
        out = {}
        for c, t, s in comps:
            out[c] = self.channel.recv(DEALER, f"{label}/{c}", dtype="f127" if t == "field" else "u64",
                                       shape=s, any_order=True, count_round=False)
        return out

    def finish(self) -> None:
        """Tell the dealer this job is over (node n-1)."""
        if self.corrected:
            self.flush()
            self.channel.send(DEALER, "req", np.frombuffer(msgpack.packb({"done": True}), dtype=np.uint8))


# ------------------------------------------------------------ dealer side

class _PrivateRandom(Prg):
    """The dealer's private stream (sequential draws), which also knows its seed
    for label-derived private values (truncation pairs)."""

    def __init__(self, seed: bytes):
        super().__init__(seed, "dealer-private")
        self.seed = seed


class DealerEngine:
    """Computes corrections for node n-1 from every node's seeds.

    Parameters
    ----------
    n : int
        Number of computation nodes.
    seeds : dict owner -> list of n seeds (one per node)
    """

    def __init__(self, n: int, seeds: dict):
        self.n = n
        self.seeds = {k: list(v) for k, v in seeds.items()}
        for owner, s in self.seeds.items():
            if len(s) != n:
                raise ValueError(f"dealer: owner {owner!r} has {len(s)} seeds for {n} nodes")
        self.tuples_served = 0
        self.elements_sent = 0
        self.private_seed = None

    def rebuild(self, spec: MaskSpec) -> np.ndarray:
        """The full mask (sum of every node's share)."""
        if spec.owner not in self.seeds:
            raise ProtocolError(f"dealer has no seeds for mask owner {spec.owner!r}")
        if _n_elements(spec.shape) > MAX_REQUEST_ELEMENTS:
            raise ProtocolError(f"mask {spec.label} of shape {spec.shape} is over the size limit")
        total = None
        if spec.trunc is not None:
            if self.private_seed is None:
                raise ProtocolError(f"dealer: truncation mask {spec.label} outside a job")
            _, r_hi = trunc_pair(self.private_seed, spec.label, spec.shape, *spec.trunc)
            a = spec.apply(r_hi)
            return a if spec.coef == 1 else field.mul_scalar(a, spec.coef)
        if spec.bits:  # XOR-shared words
            for seed in self.seeds[spec.owner]:
                a = mask_share(seed, spec)
                total = a if total is None else np.bitwise_xor(total, a, out=total)
            return total
        for seed in self.seeds[spec.owner]:
            a = seed_mask(seed, spec)
            total = a if total is None else field.add(total, a, out=total)
        total = spec.apply(total)
        return total if spec.coef == 1 else field.mul_scalar(total, spec.coef)

    def corrections(self, req: dict, private_prg: Prg):
        """(tag, array, is_field) triples to send node n-1 for one request."""
        kind = KINDS.get(req.get("kind"))
        if kind is None:
            raise ProtocolError(f"dealer: unknown tuple kind {req.get('kind')!r}")
        label = req.get("label")
        if not isinstance(label, str):
            raise ProtocolError("dealer: request without a label")
        kind.check(req)
        comps = kind.components(req)
        for _, _, shape in comps:
            if _n_elements(shape) > MAX_REQUEST_ELEMENTS:
                raise ProtocolError(f"dealer: request {label} of shape {shape} is over the size limit")
        secret = kind.make(req, self.rebuild, private_prg)
        dealer_seeds = self.seeds[DEALER]
        out = []
        for comp, typ, shape in comps:
            value = secret[comp]
            for i in range(self.n - 1):
                other = _component_share(dealer_seeds[i], label, comp, typ, shape)
                value = field.sub(value, other) if typ == "field" else value ^ other
            out.append((f"{label}/{comp}", value, typ == "field"))
            self.elements_sent += _n_elements(shape)
        self.tuples_served += 1
        return out

    def serve(self, channel, last_node: str, private_seed: bytes) -> None:
        """Answer node n-1's requests until it says the job is done.

        Heavy requests (the genotype passes' matmul sums, which stream whole
        blocked matrices) wait while newer light ones are answered: the nodes
        make them steps ahead (protocols.pca), and the small corrections of
        the steps in between are on the critical path.  A heavy one is worked
        on whenever no request is waiting, so it is ready when needed."""
        self.private_seed = private_seed
        prg = _PrivateRandom(private_seed)
        heavy = collections.deque()
        while True:
            if heavy and not channel.pending(last_node, "req"):
                self._answer(channel, last_node, [heavy.popleft()], prg)
                continue
            raw = channel.recv(last_node, "req", dtype="u8", count_round=False)
            try:
                msg = msgpack.unpackb(raw.tobytes(), raw=False, strict_map_key=True)
            except Exception as exc:  # noqa: BLE001
                raise ProtocolError(f"dealer: malformed request from {last_node}: {exc}") from None
            if not isinstance(msg, dict):
                raise ProtocolError(f"dealer: malformed request from {last_node}")
            if msg.get("done"):
                return
            reqs = msg.get("reqs")
            if not isinstance(reqs, list) or not all(isinstance(r, dict) for r in reqs):
                raise ProtocolError(f"dealer: malformed request from {last_node}")
            heavy.extend(r for r in reqs if r.get("op") == "matmul_sum")
            self._answer(channel, last_node, [r for r in reqs if r.get("op") != "matmul_sum"], prg)

    def _answer(self, channel, last_node: str, reqs, prg) -> None:
        """Compute and send the corrections of `reqs`: the small ones in one message."""
        batch = []
        for req in reqs:
            batch += self.corrections(req, prg)
        small = [item for item in batch if item[1].nbytes <= BATCH_BYTES]
        if small:
            channel.send_batch(last_node, small)     # one message for the small corrections
        for tag, value, is_field in batch:
            if value.nbytes > BATCH_BYTES:
                channel.send(last_node, tag, value, is_field=is_field)


# ============================================================ comparison tuples
#
# Tuple kinds for the boolean side of comparisons, bit decomposition and
# normalisation (mpc.compare).  Their XOR-shared parts are *bit masks*
# (MaskSpec(bits=True)) under labels derived from the request's label: every
# node draws its share from its dealer seed, nothing is sent for them, and the
# dealer corrects only the part that depends on them.  Bits are packed 64
# elements per uint64 word, element e in bit e % 64 of word e // 64; a "plane"
# is one such row of words (bit j of every element).
#
# - "and"   n_words AND triples: (a, b) = bit mask "<label>/ab" of shape
#           (2, n_words), c = a & b corrected: one bit of dealer traffic per AND.
# - "dabit" random bits rho both XOR-shared (bit mask "<label>/x", shape
#           (g, W)) and additively shared as field elements (component "rho",
#           shape (g, n), corrected): one field element per bit.
# - "rbits" random w-bit integers r: XOR-shared bit planes (bit mask
#           "<label>/x", shape (w, W)) and one additively shared field element
#           each (component "r", shape (n,), corrected).

def n_words(n: int) -> int:
    """Words needed to pack n bits."""
    return (int(n) + 63) // 64


def bit_mask_spec(label: str, shape) -> MaskSpec:
    """A bit mask drawn from the dealer seeds (see MaskSpec.bits)."""
    return MaskSpec(DEALER, label, tuple(int(s) for s in shape), bits=True)


def unpack_bits(words: np.ndarray, n: int) -> np.ndarray:
    """Packed words (..., W) to 0/1 uint8 values (..., n)."""
    words = np.ascontiguousarray(words, dtype="<u8")
    return np.unpackbits(words.view(np.uint8), axis=-1, bitorder="little")[..., :n]


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """0/1 values (..., n) to packed words (..., ceil(n / 64)); padding bits are 0."""
    bits = np.asarray(bits, dtype=np.uint8)
    n = bits.shape[-1]
    pad = n_words(n) * 64 - n
    if pad:
        bits = np.concatenate([bits, np.zeros(bits.shape[:-1] + (pad,), dtype=np.uint8)], axis=-1)
    return np.ascontiguousarray(np.packbits(bits, axis=-1, bitorder="little")).view("<u8").astype(np.uint64)


_DELTA_SWAPS = ((7, 0x00AA00AA00AA00AA), (14, 0x0000CCCC0000CCCC), (28, 0x00000000F0F0F0F0))


def _transpose8(x: np.ndarray) -> np.ndarray:
    """Transpose the 8x8 bit matrix in every word (row i = byte i, column j = bit j)."""
    for shift, mask in _DELTA_SWAPS:
        t = ((x >> np.uint64(shift)) ^ x) & np.uint64(mask)
        x = x ^ t ^ (t << np.uint64(shift))
    return x


def words_to_planes(values: np.ndarray) -> np.ndarray:
    """64 bit planes (64, ceil(n / 64)) of n uint64 values: plane j holds bit j of each.

    Vectorised 8x8 bit-matrix transposes (about 20 ns per value); padding
    elements are 0.  The reference twin is mpc._kernels.bits.to_planes."""
    values = np.asarray(values, dtype=np.uint64).reshape(-1)
    n = values.size
    W = n_words(n)
    padded = np.zeros(W * 64, dtype="<u8")
    padded[:n] = values
    G = W * 8                                   # groups of 8 elements
    # rows[B, g] = byte B of the 8 elements of group g (element e in byte e)
    rows = np.ascontiguousarray(padded.view(np.uint8).reshape(G, 8, 8).transpose(2, 0, 1)).view("<u8")
    cols = _transpose8(rows.reshape(8, G))      # byte b of [B, g]: bit 8B + b of the 8 elements
    planes = np.ascontiguousarray(cols.view(np.uint8).reshape(8, G, 8).transpose(0, 2, 1))
    return planes.reshape(64, G).view("<u8").astype(np.uint64, copy=False)


def planes_to_words(planes: np.ndarray, n: int) -> np.ndarray:
    """Inverse of words_to_planes: up to 64 planes (w, W) to n uint64 values."""
    w, W = planes.shape
    full = np.zeros((64, W), dtype="<u8")
    full[:w] = planes
    G = W * 8
    cols = np.ascontiguousarray(full.view(np.uint8).reshape(8, 8, G).transpose(0, 2, 1)).view("<u8")
    rows = _transpose8(cols.reshape(8, G))
    values = np.ascontiguousarray(rows.view(np.uint8).reshape(8, G, 8).transpose(1, 2, 0)).view("<u8")
    return values.reshape(-1)[:n].astype(np.uint64, copy=False)


def planes_to_field(planes: np.ndarray, n: int) -> np.ndarray:
    """Bit planes (w, W), w <= 126, to the n integers they hold, as field elements."""
    w = planes.shape[0]
    if not 0 < w <= 126:
        raise ValueError(f"planes_to_field: expected 1..126 planes, got {w}")
    if planes.shape[1] * 64 < n:
        raise ValueError(f"planes_to_field: {planes.shape[1]} words per plane cannot hold {n} elements")
    out = np.zeros((n, field.LIMBS), dtype=np.uint64)
    out[:, 0] = planes_to_words(planes[:min(w, 64)], n)
    if w > 64:
        out[:, 1] = planes_to_words(planes[64:], n)
    return out


def _check_positive_ints(req, names, what):
    for name in names:
        value = req.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= MAX_REQUEST_ELEMENTS:
            raise ProtocolError(f"{what} request: {name} must be an integer in [1, {MAX_REQUEST_ELEMENTS}], "
                                f"got {value!r}")


def _check_and(req):
    _check_positive_ints(req, ("n_words",), "and")


def _and_make(req, rebuild, prg):
    ab = rebuild(bit_mask_spec(f"{req['label']}/ab", (2, req["n_words"])))
    return {"c": ab[0] & ab[1]}


def _check_dabit(req):
    _check_positive_ints(req, ("g", "n"), "dabit")
    if req["g"] * req["n"] > MAX_REQUEST_ELEMENTS:
        raise ProtocolError(f"dabit request: {req['g']} x {req['n']} bits is over the size limit")


def _dabit_make(req, rebuild, prg):
    g, n = req["g"], req["n"]
    rho = rebuild(bit_mask_spec(f"{req['label']}/x", (g, n_words(n))))
    return {"rho": field.from_int(unpack_bits(rho, n).astype(np.uint64))}


def _check_rbits(req):
    _check_positive_ints(req, ("n", "width"), "rbits")
    if req["width"] > 126:
        raise ProtocolError(f"rbits request: width {req['width']} is over 126 bits")


def _rbits_make(req, rebuild, prg):
    n, width = req["n"], req["width"]
    planes = rebuild(bit_mask_spec(f"{req['label']}/x", (width, n_words(n))))
    return {"r": planes_to_field(planes, n)}


KINDS["and"] = Kind(lambda req: [("c", "bits", (req["n_words"],))], _and_make, _check_and)
KINDS["dabit"] = Kind(lambda req: [("rho", "field", (req["g"], req["n"]))], _dabit_make, _check_dabit)
KINDS["rbits"] = Kind(lambda req: [("r", "field", (req["n"],))], _rbits_make, _check_rbits)
