"""Cryptographic pseudo-random generator: (seed, label) -> uniform field elements.

A 128-bit seed and a context label select one AES-128-CTR keystream:
the stream key is BLAKE2b-128 keyed with the seed over the label, the counter
starts at zero, and each key encrypts exactly one stream, so streams of
different labels are independent and the same (seed, label) gives the same
stream in every process.  Field elements come from the keystream by rejection
(``mpc.field.from_random_words``), so they are exactly uniform.  Never numpy's
generators: those are not cryptographic.
"""
from __future__ import annotations

import hashlib
import secrets

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from mpc import field

SEED_BYTES = 16
_CHUNK = 1 << 20
_ZEROS = memoryview(bytes(_CHUNK))  # read-only plaintext of the keystream
_HI_MASK = np.uint64((1 << 63) - 1)


def new_seed() -> bytes:
    """A fresh 128-bit seed from the operating system's CSPRNG."""
    return secrets.token_bytes(SEED_BYTES)


def _label_bytes(label) -> bytes:
    if isinstance(label, bytes):
        return label
    if isinstance(label, str):
        return label.encode()
    raise TypeError(f"PRG label must be str or bytes, got {type(label).__name__}")


class Prg:
    """One deterministic keystream for (seed, label).

    Parameters
    ----------
    seed : bytes
        16 secret bytes.
    label : str or bytes
        Public context (for example ``"job7/t42/a"``); distinct labels give
        independent streams.
    """

    def __init__(self, seed: bytes, label):
        if not isinstance(seed, (bytes, bytearray)) or len(seed) != SEED_BYTES:
            raise ValueError(f"PRG seed must be {SEED_BYTES} bytes, got "
                             f"{len(seed) if isinstance(seed, (bytes, bytearray)) else type(seed).__name__}")
        key = hashlib.blake2b(_label_bytes(label), key=bytes(seed), digest_size=16,
                              person=b"mpcgwas-prg-v1").digest()
        self._enc = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()

    def _fill(self, out: np.ndarray) -> None:
        """Overwrite out (a C-contiguous numpy array) with keystream bytes.

        Encrypts a reused zero buffer in 1 MiB chunks straight into out's
        memory (update_into needs 15 spare bytes after each chunk, which the
        rest of out provides; the last chunk goes through a small buffer)."""
        raw = out.view(np.uint8).reshape(-1)
        n = raw.size
        view = memoryview(raw)
        pos = 0
        while n - pos > _CHUNK + 16:
            self._enc.update_into(_ZEROS, view[pos:pos + _CHUNK + 16])
            pos += _CHUNK
        rest = n - pos
        if rest:
            tail = bytearray(rest + 16)
            self._enc.update_into(_ZEROS[:rest], tail)
            raw[pos:] = np.frombuffer(tail, dtype=np.uint8, count=rest)

    def bytes(self, n: int) -> bytes:
        out = np.empty(n, dtype=np.uint8)
        self._fill(out)
        return out.tobytes()

    def words(self, n: int) -> np.ndarray:
        """n uniform 64-bit words."""
        out = np.empty(n, dtype=np.uint64)
        self._fill(out)
        return out

    def uint(self, shape, bits: int) -> np.ndarray:
        """Uniform integers in [0, 2^bits) as uint64, 0 <= bits <= 64."""
        if not 0 <= bits <= 64:
            raise ValueError(f"uint: bits must be in [0, 64], got {bits}")
        shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
        n = int(np.prod(shape, dtype=np.int64))
        w = self.words(n)
        if bits < 64:
            w &= np.uint64((1 << bits) - 1)
        return w.reshape(shape)

    def field(self, shape, out: np.ndarray | None = None) -> np.ndarray:
        """Uniform field elements of the given logical shape.

        Candidates are 127-bit numbers from two keystream words; the single
        non-residue 2^127 - 1 is rejected and replaced from the continuing
        stream (probability 2^-127 per element, but handled exactly)."""
        shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
        n = int(np.prod(shape, dtype=np.int64))
        if out is None:
            out = np.empty((n, field.LIMBS), dtype=np.uint64)
        else:
            if out.shape != shape + (field.LIMBS,) or out.dtype != np.uint64 or not out.flags.c_contiguous:
                raise ValueError(f"field: out must be a C-contiguous uint64 array of shape "
                                 f"{shape + (field.LIMBS,)}, got {out.dtype} {out.shape}")
            out = out.reshape(n, field.LIMBS)
        self._fill(out)
        out[:, 1] &= _HI_MASK
        rejected = (out[:, 1] == _HI_MASK) & (out[:, 0] == np.uint64(2**64 - 1))
        while rejected.any():
            out = out[~rejected]
            more = np.empty((n - out.shape[0], field.LIMBS), dtype=np.uint64)
            self._fill(more)
            more[:, 1] &= _HI_MASK
            out = np.concatenate([out, more])
            rejected = (out[:, 1] == _HI_MASK) & (out[:, 0] == np.uint64(2**64 - 1))
        return out.reshape(shape + (field.LIMBS,))

    def bits(self, n_words: int) -> np.ndarray:
        """Packed uniform bits: n_words 64-bit words (64 bits each)."""
        return self.words(n_words)
