"""Additive secret sharing over F_p and XOR sharing of packed bits (pure, no I/O).

Seed compression: shares 0..n-2 are PRG outputs of seeds their holders know;
share n-1 is the correction ``x - sum(others)``, the only one that is sent.
"""
from __future__ import annotations

import numpy as np

from mpc import field
from mpc.prg import Prg, new_seed


def share(x: np.ndarray, n: int, label: str = "share", seeds: list[bytes] | None = None):
    """Split a field array into n additive shares.

    Parameters
    ----------
    x : field array, shape S + (2,)
    n : int
        Number of shares (n >= 2).
    label : str
        PRG label the seeded shares are drawn under.
    seeds : list of n - 1 seeds, optional
        Seeds of shares 0..n-2 (fresh ones when omitted).

    Returns
    -------
    shares : list of n field arrays
    seeds : the n - 1 seeds used
    """
    if n < 2:
        raise ValueError(f"share: need n >= 2 shares, got {n}")
    seeds = [new_seed() for _ in range(n - 1)] if seeds is None else list(seeds)
    if len(seeds) != n - 1:
        raise ValueError(f"share: expected {n - 1} seeds, got {len(seeds)}")
    shape = field.shape_of(x)
    shares = [Prg(s, label).field(shape) for s in seeds]
    correction = x
    for s in shares:
        correction = field.sub(correction, s)
    return shares + [correction], seeds


def reconstruct(shares) -> np.ndarray:
    """Sum of additive shares."""
    shares = list(shares)
    if not shares:
        raise ValueError("reconstruct: no shares")
    total = shares[0]
    for s in shares[1:]:
        total = field.add(total, s)
    return total


def zero_sharing(n: int, shape, label: str = "zero", seeds: list[bytes] | None = None):
    """n additive shares of zero (a fresh re-randomisation pad)."""
    return share(field.zeros(shape), n, label, seeds)


def share_bits(bits: np.ndarray, n: int, label: str = "xshare", seeds: list[bytes] | None = None):
    """Split packed bits (uint64 words) into n XOR shares; the last is the correction."""
    if n < 2:
        raise ValueError(f"share_bits: need n >= 2 shares, got {n}")
    seeds = [new_seed() for _ in range(n - 1)] if seeds is None else list(seeds)
    if len(seeds) != n - 1:
        raise ValueError(f"share_bits: expected {n - 1} seeds, got {len(seeds)}")
    words = np.asarray(bits, dtype=np.uint64)
    shares = [Prg(s, label).words(words.size).reshape(words.shape) for s in seeds]
    correction = words.copy()
    for s in shares:
        correction ^= s
    return shares + [correction], seeds


def reconstruct_bits(shares) -> np.ndarray:
    out = np.array(shares[0], dtype=np.uint64, copy=True)
    for s in shares[1:]:
        out ^= s
    return out
