"""Durable storage of submissions (nodes) and mask seeds (dealer).

Every file is written atomically (temporary file, fsync, rename) and every
array carries a SHA-256 checksum in its submission's manifest, verified on
read.  A submission is staged in ``staging/`` and becomes visible only when
its whole directory is renamed into ``submissions/<provider>``: a crash at any
point leaves either the old submission or the new one, never a mix.  Staging
directories left by a crash are removed at start-up.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from pathlib import Path

import numpy as np

from mpc.errors import StorageError

MANIFEST = "manifest.json"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=1, sort_keys=True).encode())


def _array_bytes(array: np.ndarray) -> bytes:
    array = np.ascontiguousarray(array)
    header = json.dumps({"dtype": array.dtype.str, "shape": list(array.shape)}).encode()
    return len(header).to_bytes(4, "little") + header + array.tobytes()


def _array_from_bytes(raw: bytes, where: str) -> np.ndarray:
    try:
        n = int.from_bytes(raw[:4], "little")
        meta = json.loads(raw[4:4 + n])
        dtype = np.dtype(meta["dtype"])
        shape = tuple(int(s) for s in meta["shape"])
        body = memoryview(raw)[4 + n:]
        if dtype.hasobject or len(body) != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
            raise ValueError("size mismatch")
        return np.frombuffer(body, dtype=dtype).reshape(shape)
    except (ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise StorageError(f"{where}: unreadable array file ({exc})") from None


class Staging:
    """A submission being received; invisible until commit()."""

    def __init__(self, store: "NodeStore", provider: str, meta: dict):
        self.store = store
        self.provider = provider
        self.meta = dict(meta)
        self.meta.setdefault("arrays", {})
        self.dir = store.staging / f"{provider}.{secrets.token_hex(6)}"
        self.dir.mkdir(parents=True)

    def write_array(self, name: str, array: np.ndarray, **info) -> None:
        raw = _array_bytes(array)
        fname = hashlib.sha256(name.encode()).hexdigest()[:24] + ".arr"
        atomic_write_bytes(self.dir / fname, raw)
        self.meta["arrays"][name] = {"file": fname, "sha256": hashlib.sha256(raw).hexdigest(),
                                     "shape": list(array.shape), "dtype": array.dtype.str, **info}

    def write_text(self, name: str, text: str) -> None:
        atomic_write_bytes(self.dir / name, text.encode())

    def commit(self, replace: bool = False) -> Path:
        """Make the submission visible atomically (refuse or replace an existing one)."""
        atomic_write_json(self.dir / MANIFEST, self.meta)
        target = self.store.submissions / self.provider
        if target.exists():
            if not replace:
                self.abort()
                raise StorageError(f"provider {self.provider} has already submitted; "
                                   f"resubmit with --replace to replace its data")
            trash = self.store.root / "trash" / f"{self.provider}.{secrets.token_hex(6)}"
            trash.parent.mkdir(exist_ok=True)
            os.replace(target, trash)
            os.replace(self.dir, target)
            _fsync_dir(self.store.submissions)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(self.dir, target)
            _fsync_dir(self.store.submissions)
        return target

    def abort(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class Submission:
    """A committed submission: its manifest and checksum-verified arrays."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.meta = json.loads((path / MANIFEST).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise StorageError(f"{path}: unreadable manifest ({exc})") from None
        self.provider = self.meta["provider"]
        self._verified = {}

    def __getitem__(self, key):
        return self.meta[key]

    def get(self, key, default=None):
        return self.meta.get(key, default)

    def has(self, name: str) -> bool:
        return name in self.meta["arrays"]

    def array(self, name: str) -> np.ndarray:
        """A stored array, its checksum verified on the first read.

        Later reads through this object (one job) re-verify only if the file's
        size or modification time changed; protocols read each genotype block
        once per pass over the data, and hashing every pass would cost more
        than the products."""
        info = self.meta["arrays"].get(name)
        if info is None:
            raise StorageError(f"submission of {self.provider} has no array {name!r}")
        path = self.path / info["file"]
        where = f"{path} ({self.provider}:{name})"
        try:
            st = path.stat()
            raw = path.read_bytes()
        except OSError as exc:
            raise StorageError(f"{where}: {exc.strerror}") from None
        stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
        if self._verified.get(name) != stamp:
            if hashlib.sha256(raw).hexdigest() != info["sha256"]:
                raise StorageError(f"{where}: checksum mismatch: the stored data is corrupt")
            self._verified[name] = stamp
        return _array_from_bytes(raw, where)

    def text(self, name: str) -> str:
        return (self.path / name).read_text()

    def verify(self) -> None:
        for name in self.meta["arrays"]:
            self.array(name)


class NodeStore:
    """A node's data directory: submissions/, staging/, trash/."""

    def __init__(self, root):
        self.root = Path(root)
        self.submissions = self.root / "submissions"
        self.staging = self.root / "staging"
        for d in (self.submissions, self.staging):
            d.mkdir(parents=True, exist_ok=True)
        self.recover()

    def recover(self) -> None:
        """Drop half-received submissions left by a crash."""
        for d in self.staging.iterdir():
            shutil.rmtree(d, ignore_errors=True)
        trash = self.root / "trash"
        if trash.exists():
            for d in trash.iterdir():
                provider = d.name.split(".")[0]
                if not (self.submissions / provider).exists():
                    os.replace(d, self.submissions / provider)  # crash between the two renames
                else:
                    shutil.rmtree(d, ignore_errors=True)

    def begin(self, provider: str, meta: dict) -> Staging:
        return Staging(self, provider, meta)

    def list(self) -> dict:
        out = {}
        for d in sorted(self.submissions.iterdir()):
            if (d / MANIFEST).exists():
                sub = Submission(d)
                out[sub.provider] = sub
        return out


class SeedStore:
    """The dealer's record of each submission's per-node mask seeds.

    Keyed by submission id, so a replacement never overwrites the seeds of
    the data the nodes still hold until they commit the new submission."""

    def __init__(self, root):
        self.dir = Path(root) / "seeds"
        self.dir.mkdir(parents=True, exist_ok=True)

    def _path(self, submission: str) -> Path:
        if not submission.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise StorageError(f"bad submission id {submission!r}")
        return self.dir / f"{submission}.json"

    def put(self, provider: str, submission: str, seeds: list) -> None:
        atomic_write_json(self._path(submission), {"provider": provider, "submission": submission,
                                                   "seeds": [s.hex() for s in seeds]})

    def get(self, submission: str) -> list:
        try:
            rec = json.loads(self._path(submission).read_text())
        except (OSError, json.JSONDecodeError):
            raise StorageError(f"the dealer has no mask seeds for submission {submission}: "
                               f"resubmit that site") from None
        return [bytes.fromhex(s) for s in rec["seeds"]]
