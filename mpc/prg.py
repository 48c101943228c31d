"""Cryptographic pseudo-random generator: (seed, label) -> uniform field elements.

A 128-bit seed and a context label select one keystream: the stream key is
BLAKE2b-128 keyed with the seed over the label; the first 64 KiB of the stream
are SHAKE-128 output of that key (FIPS 202; cheap to start, which matters for
the many small masks of a protocol round), and every byte after that is
AES-128-CTR under the same key (AES-NI: several GB/s for genotype-sized masks)
with the counter starting at block 4096, the stream position.  Each key serves
one stream, so streams of different labels are independent and the same
(seed, label) gives the same stream in every process.  Field elements come from the keystream by rejection
(``mpc.field.from_random_words``), so they are exactly uniform.  Never numpy's
generators: those are not cryptographic.
"""
from __future__ import annotations

import hashlib
import secrets

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from mpc import field
from mpc._kernels import field as _kernels

SEED_BYTES = 16
# Keystream is produced in 1 MiB chunks: Prg.field turns each chunk into field
# elements right after encrypting it, while it is still (mostly) cached, and
# the per-chunk Python overhead (a few microseconds) stays below 1%.
_CHUNK = 1 << 20
_ZEROS = memoryview(bytes(_CHUNK))  # read-only plaintext of the keystream
# Older `cryptography` releases require update_into's output buffer to have
# block_size - 1 bytes to spare after the data (CTR writes only len(data)).
_SPARE = 15
_ELEMENT_BYTES = 8 * field.LIMBS
_XOF_BYTES = 1 << 16        # stream bytes [0, 64 KiB) come from SHAKE-128, the rest from AES-CTR
_CHUNK_ELEMENTS = _CHUNK // _ELEMENT_BYTES


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
        self._key = hashlib.blake2b(_label_bytes(label), key=bytes(seed), digest_size=16,
                                    person=b"mpcgwas-prg-v1").digest()
        self._pos = 0            # stream position (bytes)
        self._enc_ctx = None     # the AES-CTR part, created when the stream gets there

    @property
    def _enc(self):
        if self._enc_ctx is None:
            start = (_XOF_BYTES // 16).to_bytes(16, "big")
            self._enc_ctx = Cipher(algorithms.AES(self._key), modes.CTR(start)).encryptor()
        return self._enc_ctx

    def _fill(self, out: np.ndarray) -> None:
        """Overwrite out (a C-contiguous numpy array) with keystream bytes."""
        raw = out.view(np.uint8).reshape(-1)
        self._fill_range(raw, 0, raw.size)

    def _fill_range(self, raw: np.ndarray, start: int, stop: int) -> None:
        """Write the next stop - start keystream bytes to raw[start:stop]."""
        if self._pos < _XOF_BYTES and stop > start:
            k = min(stop - start, _XOF_BYTES - self._pos)
            out = hashlib.shake_128(self._key).digest(self._pos + k)
            raw[start:start + k] = np.frombuffer(out, dtype=np.uint8, offset=self._pos, count=k)
            self._pos += k
            start += k
        if stop > start:
            self._aes_fill_range(raw, start, stop)
            self._pos += stop - start

    def _aes_fill_range(self, raw: np.ndarray, start: int, stop: int) -> None:
        """Write the next stop - start AES-CTR keystream bytes to raw[start:stop].

        Encrypts a reused zero buffer straight into raw's memory, chunk by
        chunk.  Bytes of raw after stop serve as update_into's spare room
        (they are left as they were or overwritten: callers fill them later);
        only the last few bytes of raw go through a small buffer."""
        view = memoryview(raw)
        pos = start
        while pos < stop:
            size = min(_CHUNK, stop - pos)
            if pos + size + _SPARE > raw.size:
                # The end of raw: all but the last _SPARE bytes directly ...
                direct = size - _SPARE
                if direct > 0:
                    self._enc.update_into(_ZEROS[:direct], view[pos:pos + size])
                    pos += direct
                    size -= direct
                # ... and those through a buffer with room to spare.
                tail = bytearray(size + _SPARE)
                self._enc.update_into(_ZEROS[:size], tail)
                raw[pos:pos + size] = np.frombuffer(tail, dtype=np.uint8, count=size)
            else:
                self._enc.update_into(_ZEROS[:size], view[pos:pos + size + _SPARE])
            pos += size

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
            out = np.empty(shape + (field.LIMBS,), dtype=np.uint64)
        elif out.shape != shape + (field.LIMBS,) or out.dtype != np.uint64 or not out.flags.c_contiguous:
            raise ValueError(f"field: out must be a C-contiguous uint64 array of shape "
                             f"{shape + (field.LIMBS,)}, got {out.dtype} {out.shape}")
        flat = out.reshape(n, field.LIMBS)
        words = flat.reshape(-1)
        raw = flat.view(np.uint8).reshape(-1)
        # Elements [0, done) are final.  Each pass writes the next candidates
        # of the stream over [done, done + size) and compacts the accepted ones
        # to its front, in place (the kernel's writes never overtake its
        # reads); a rejected candidate leaves one slot for the next pass.
        done = 0
        while done < n:
            size = min(_CHUNK_ELEMENTS, n - done)
            self._fill_range(raw, _ELEMENT_BYTES * done, _ELEMENT_BYTES * (done + size))
            accepted, _ = _kernels.sample_uniform(words[2 * done:2 * (done + size)],
                                                  flat[done:done + size])
            done += accepted
        return out

    def bits(self, n_words: int) -> np.ndarray:
        """Packed uniform bits: n_words 64-bit words (64 bits each)."""
        return self.words(n_words)
