"""Wire format: a msgpack header then the raw array buffer (never pickle).

A data message is ``[header, chunk, chunk, ...]``: the header is a msgpack map
``{"t": tag, "d": dtype code, "s": shape, "n": payload bytes, "h": hops}`` and the chunks
are the array's bytes, split into pieces of at most ``CHUNK_BYTES`` (ZeroMQ
moves 1–4 MiB frames fastest).  ``hops`` is the sender's hop clock (a Lamport
clock counting one-way message latencies on the longest causal chain that led
to the message; mpc.net.channel), optional.  A control message has a header
``{"c": kind, ...}`` and no payload (heartbeat, abort).

The receiver validates everything before use: header size and type, known
dtype code, shape of non-negative ints within limits, payload length equal to
what dtype and shape imply, field elements canonical.
"""
from __future__ import annotations

from dataclasses import dataclass

import msgpack
import numpy as np

from mpc import field
from mpc.errors import ProtocolError

CHUNK_BYTES = 4 << 20
MAX_HEADER_BYTES = 4096
MAX_NDIM = 8
DEFAULT_MAX_PAYLOAD = 4 << 30

# dtype code -> (numpy dtype, trailing axis or None)
DTYPES = {
    "f127": (np.dtype(np.uint64), field.LIMBS),  # field elements: logical shape + limb axis
    "u64": (np.dtype(np.uint64), None),           # packed bits, raw words
    "u8": (np.dtype(np.uint8), None),
    "i64": (np.dtype(np.int64), None),
    "f64": (np.dtype(np.float64), None),
}


def dtype_code(array: np.ndarray, is_field: bool) -> str:
    if is_field:
        return "f127"
    for code, (dt, trail) in DTYPES.items():
        if trail is None and array.dtype == dt:
            return code
    raise ProtocolError(f"cannot send arrays of dtype {array.dtype}")


@dataclass(frozen=True)
class Header:
    tag: str
    dtype: str
    shape: tuple
    nbytes: int
    session: str | None = None
    hops: int = 0


MAX_BATCH_ITEMS = 100000


def encode_batch(items, session: str | None = None, hops: int = 0) -> list:
    """Several small arrays as one message of three frames: a control header
    {"c": "batch", "n": count}, the msgpack list of their data headers, and their
    payloads concatenated (one copy; for small arrays, where per-frame costs
    dominate).  Items are (tag, array, is_field)."""
    heads, payload = [], []
    for tag, array, is_field in items:
        array = np.ascontiguousarray(array)
        code = dtype_code(array, is_field)
        shape = array.shape[:-1] if is_field else array.shape
        heads.append({"t": tag, "d": code, "s": list(shape), "n": array.nbytes, "j": session, "h": hops})
        payload.append(array.tobytes())
    return encode_control("batch", n=len(heads), j=session) + [msgpack.packb(heads), b"".join(payload)]


def decode_batch(frames_: list, count: int, sender: str, max_payload: int = DEFAULT_MAX_PAYLOAD) -> list:
    """(Header, array) items of a batch message's two frames after its control header."""
    if len(frames_) != 2 or not isinstance(count, int) or not 0 < count <= MAX_BATCH_ITEMS:
        raise ProtocolError(f"malformed batch message from {sender}")
    raw_heads = bytes(frames_[0])
    if len(raw_heads) > 256 * count:
        raise ProtocolError(f"batch headers from {sender} are too large")
    try:
        heads = msgpack.unpackb(raw_heads, raw=False, strict_map_key=True, max_bin_len=0,
                                max_array_len=max(count, MAX_NDIM + 8), max_map_len=16, max_str_len=1024)
    except Exception as exc:  # noqa: BLE001 - msgpack raises several types for garbage
        raise ProtocolError(f"malformed batch headers from {sender}: {exc}") from None
    if not isinstance(heads, list) or len(heads) != count:
        raise ProtocolError(f"malformed batch headers from {sender}")
    payload = memoryview(frames_[1])
    out, pos = [], 0
    for obj in heads:
        h = data_header(obj, sender, max_payload)
        if pos + h.nbytes > len(payload):
            raise ProtocolError(f"batch payload from {sender} is shorter than its headers say")
        out.append((h, decode_payload(h, [payload[pos:pos + h.nbytes]], sender)))
        pos += h.nbytes
    if pos != len(payload):
        raise ProtocolError(f"batch payload from {sender} has {len(payload) - pos} stray bytes")
    return out


def n_chunks(nbytes: int) -> int:
    """How many payload frames encode_data makes for nbytes (one even when empty)."""
    return max(1, -(-nbytes // CHUNK_BYTES))


def encode_data(tag: str, array: np.ndarray, is_field: bool, session: str | None = None,
                hops: int = 0) -> list:
    """Header and zero-copy payload chunks for one array.

    `session` (a job id) lets a receiver drop stale messages of an earlier job."""
    array = np.ascontiguousarray(array)
    code = dtype_code(array, is_field)
    shape = array.shape[:-1] if is_field else array.shape
    head = {"t": tag, "d": code, "s": list(shape), "n": array.nbytes, "h": hops}
    if session is not None:
        head["j"] = session
    header = msgpack.packb(head)
    raw = memoryview(array).cast("B") if array.nbytes else memoryview(b"")
    chunks = [raw[i:i + CHUNK_BYTES] for i in range(0, array.nbytes, CHUNK_BYTES)] or [raw]
    return [header] + chunks


def encode_parts(tag: str, parts, is_field: bool, session: str | None = None, hops: int = 0) -> tuple:
    """One message carrying the concatenation of `parts`, each flattened
    (field arrays to shape (k, 2)), without building it in memory: every
    part's bytes become payload chunks of the same message.  The receiver
    sees an ordinary 1-D array.  Small totals are concatenated instead, so
    they travel as one frame (zero-copy on receipt).

    Returns (frames, payload bytes)."""
    flat = [np.ascontiguousarray(p).reshape((-1, field.LIMBS) if is_field else -1) for p in parts]
    if not flat:
        raise ValueError("encode_parts: no parts")
    dtypes = {p.dtype for p in flat}
    if len(dtypes) != 1:
        raise ProtocolError(f"encode_parts: parts of several dtypes {sorted(map(str, dtypes))}")
    total = sum(p.nbytes for p in flat)
    if len(flat) == 1 or total <= CHUNK_BYTES:
        array = flat[0] if len(flat) == 1 else np.concatenate(flat)
        return encode_data(tag, array, is_field, session, hops), array.nbytes
    code = dtype_code(flat[0], is_field)
    length = sum(p.shape[0] for p in flat)
    head = {"t": tag, "d": code, "s": [length], "n": total, "h": hops}
    if session is not None:
        head["j"] = session
    chunks = []
    for p in flat:
        if not p.nbytes:
            continue
        raw = memoryview(p).cast("B")
        chunks.extend(raw[i:i + CHUNK_BYTES] for i in range(0, p.nbytes, CHUNK_BYTES))
    return [msgpack.packb(head)] + chunks, total


def encode_control(kind: str, **fields) -> list:
    return [msgpack.packb({"c": kind, **fields})]


def decode_header(raw: bytes, sender: str, max_payload: int = DEFAULT_MAX_PAYLOAD):
    """Parse and validate a header frame; returns Header or ('control', dict)."""
    if len(raw) > MAX_HEADER_BYTES:
        raise ProtocolError(f"header from {sender} is {len(raw)} bytes (limit {MAX_HEADER_BYTES})")
    try:
        obj = msgpack.unpackb(raw, raw=False, strict_map_key=True, max_bin_len=0,
                              max_array_len=MAX_NDIM + 8, max_map_len=16, max_str_len=1024)
    except Exception as exc:  # msgpack raises several types for garbage
        raise ProtocolError(f"malformed header from {sender}: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"malformed header from {sender}: not a map")
    if "c" in obj:
        if not isinstance(obj["c"], str):
            raise ProtocolError(f"malformed control header from {sender}")
        return "control", obj
    return data_header(obj, sender, max_payload)


def data_header(obj, sender: str, max_payload: int = DEFAULT_MAX_PAYLOAD) -> Header:
    """Validate a data header map (tag, dtype, shape, size, session, hops)."""
    if not isinstance(obj, dict):
        raise ProtocolError(f"malformed header from {sender}: not a map")
    try:
        tag, code, shape, nbytes = obj["t"], obj["d"], obj["s"], obj["n"]
    except KeyError as exc:
        raise ProtocolError(f"header from {sender} lacks field {exc}") from None
    if not isinstance(tag, str) or not isinstance(code, str) or code not in DTYPES:
        raise ProtocolError(f"header from {sender}: bad tag or unknown dtype {code!r}")
    if (not isinstance(shape, list) or len(shape) > MAX_NDIM
            or not all(isinstance(s, int) and 0 <= s < 2**40 for s in shape)):
        raise ProtocolError(f"header from {sender} (tag {tag}): bad shape {shape!r}")
    dt, trail = DTYPES[code]
    full = tuple(shape) + ((trail,) if trail else ())
    # Python integers: a product of eight 40-bit extents overflows int64 (and
    # could wrap to a small number that an attacker's "n" then matches).
    expected = dt.itemsize
    for extent in full:
        expected *= extent
    if not isinstance(nbytes, int) or nbytes != expected:
        raise ProtocolError(f"header from {sender} (tag {tag}): payload size {nbytes!r} does not match "
                            f"dtype {code} shape {tuple(shape)} ({expected} bytes)")
    if expected > max_payload:
        raise ProtocolError(f"message from {sender} (tag {tag}) is {expected} bytes, over the "
                            f"{max_payload}-byte limit")
    session = obj.get("j")
    if session is not None and not isinstance(session, str):
        raise ProtocolError(f"header from {sender} (tag {tag}): bad session {session!r}")
    hops = obj.get("h", 0)
    if not isinstance(hops, int) or not 0 <= hops < 2**40:
        raise ProtocolError(f"header from {sender} (tag {tag}): bad hop clock {hops!r}")
    return Header(tag, code, tuple(shape), nbytes, session, hops)


def decode_payload(header: Header, chunks: list, sender: str) -> np.ndarray:
    """Array view of the payload chunks (zero-copy for one chunk)."""
    dt, trail = DTYPES[header.dtype]
    full = header.shape + ((trail,) if trail else ())
    total = sum(len(c) for c in chunks)
    if total != header.nbytes:
        raise ProtocolError(f"message from {sender} (tag {header.tag}): {total} payload bytes, "
                            f"header announced {header.nbytes}")
    if len(chunks) == 1:
        array = np.frombuffer(chunks[0], dtype=dt).reshape(full)
    else:
        array = np.empty(full, dtype=dt)
        flat = array.reshape(-1).view(np.uint8)
        pos = 0
        for c in chunks:
            n = len(c)
            flat[pos:pos + n] = np.frombuffer(c, dtype=np.uint8)
            pos += n
    if header.dtype == "f127" and array.size and field.count_noncanonical(array):
        raise ProtocolError(f"message from {sender} (tag {header.tag}) holds non-canonical field elements")
    return array
