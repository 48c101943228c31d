"""The one frozen parameter object: field, fixed-point format and masking.

Values are signed fixed-point numbers x encoded as round(x 2^f) mod p with
|x 2^f| < 2^(k-1).  A product of two encodings carries 2f fractional bits and
magnitude below 2^(k+f-1) once its result is known to fit in k bits; the
probabilistic truncation (mpc.truncate) adds a (k+f+sigma)-bit mask to it and
opens the sum, which must not wrap modulo p: k + f + sigma + 2 <= 127.
"""
from dataclasses import dataclass

from mpc.errors import ParamError

P = (1 << 127) - 1
"""The Mersenne prime 2^127 - 1."""

FIELD_BITS = 127


@dataclass(frozen=True)
class Params:
    """Arithmetic parameters shared by every party of a study.

    Parameters
    ----------
    k : int
        Total bits of a fixed-point value, sign included: |x| < 2^(k-f-1).
    f : int
        Fractional bits: resolution 2^-f.
    sigma : int
        Statistical security of one-time masks, in bits.
    """

    k: int = 56
    f: int = 28
    sigma: int = 40

    def __post_init__(self):
        if self.sigma < 40:
            raise ParamError(f"sigma must be >= 40 bits of statistical security, got {self.sigma}")
        if self.f < 28:
            raise ParamError(f"f must be >= 28 fractional bits, got {self.f}")
        if self.k <= self.f + 1:
            raise ParamError(f"k ({self.k}) must exceed f + 1 ({self.f + 1}) to hold any integer part")
        if self.k > 64:
            raise ParamError(f"k must be <= 64 (values are encoded through int64), got {self.k}")
        budget = self.k + self.f + self.sigma + 2
        if budget > FIELD_BITS:
            raise ParamError(
                f"truncation budget k + f + sigma + 2 = {self.k} + {self.f} + {self.sigma} + 2 = "
                f"{budget} exceeds the {FIELD_BITS}-bit field"
            )

    @property
    def p(self) -> int:
        return P

    @property
    def max_value(self) -> float:
        """Largest magnitude a fixed-point value may have (exclusive)."""
        return float(2 ** (self.k - 1 - self.f))

    @property
    def resolution(self) -> float:
        return 2.0 ** -self.f

    def describe(self) -> str:
        return (f"F_p with p = 2^127 - 1; fixed point k = {self.k}, f = {self.f} "
                f"(|x| < 2^{self.k - 1 - self.f}, step 2^-{self.f}); sigma = {self.sigma}")
