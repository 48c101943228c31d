# Scalar arithmetic in F_p, p = 2^127 - 1, on unsigned 128-bit C integers.
#
# An element is stored as two uint64 limbs (lo, hi) with hi < 2^63; canonical
# values lie in [0, p - 1].  Reduction uses 2^127 = 1 (mod p): for v < 2^128,
# (v & p) + (v >> 127) < 2^127 + 1, and one conditional subtraction finishes.
# Multiplying a canonical value by 2^k (0 <= k < 127) is a 127-bit rotation.

from libc.stdint cimport uint64_t

cdef extern from *:
    ctypedef unsigned long long u128 "unsigned __int128"

cdef inline u128 P127() noexcept nogil:
    return ((<u128>1) << 127) - 1

cdef inline u128 load(const uint64_t* x) noexcept nogil:
    return ((<u128>x[1]) << 64) | (<u128>x[0])

cdef inline void store(uint64_t* x, u128 v) noexcept nogil:
    x[0] = <uint64_t>v
    x[1] = <uint64_t>(v >> 64)

cdef inline u128 reduce128(u128 v) noexcept nogil:
    """Any v < 2^128 to its canonical residue."""
    cdef u128 p = P127()
    v = (v & p) + (v >> 127)
    if v >= p:
        v -= p
    return v

cdef inline u128 fadd(u128 a, u128 b) noexcept nogil:
    # a, b < 2^127, so a + b < 2^128 fits.
    return reduce128(a + b)

cdef inline u128 fsub(u128 a, u128 b) noexcept nogil:
    # a + (p - b) < 2^128; the fold in reduce128 is branch-free, which matters
    # because a < b half the time on random data.
    return reduce128(a + (P127() - b))

cdef inline u128 fneg(u128 a) noexcept nogil:
    if a == 0:
        return 0
    return P127() - a

cdef inline u128 rotl127(u128 x, int k) noexcept nogil:
    """x * 2^k mod p for canonical x and 0 <= k < 127."""
    if k == 0:
        return x
    return ((x << k) | (x >> (127 - k))) & P127()

cdef inline u128 fmul(u128 a, u128 b) noexcept nogil:
    # Schoolbook on 64-bit limbs; a1, b1 < 2^63 so p01 + p10 < 2^128 fits.
    cdef uint64_t a0 = <uint64_t>a
    cdef uint64_t a1 = <uint64_t>(a >> 64)
    cdef uint64_t b0 = <uint64_t>b
    cdef uint64_t b1 = <uint64_t>(b >> 64)
    cdef u128 p00 = (<u128>a0) * b0
    cdef u128 mid = (<u128>a0) * b1 + (<u128>a1) * b0
    cdef u128 p11 = (<u128>a1) * b1
    cdef u128 t = (p00 >> 64) + (mid & 0xFFFFFFFFFFFFFFFFULL)
    cdef uint64_t r0 = <uint64_t>p00
    cdef uint64_t r1 = <uint64_t>t
    # full product = r0 + r1 2^64 + hi 2^128, and hi < 2^126 since a b < 2^254
    cdef u128 hi = (t >> 64) + (mid >> 64) + p11
    cdef u128 low127 = ((<u128>(r1 & 0x7FFFFFFFFFFFFFFFULL)) << 64) | r0
    cdef u128 high = (hi << 1) | (r1 >> 63)
    return reduce128(low127 + high)

cdef inline void mac4(u128* acc, u128 a, u128 b) noexcept nogil:
    """Accumulate a*b into four 64-bit-weighted 128-bit sums, unreduced.

    acc[w] collects terms of weight 2^(64 w); every term added is < 2^64 + 2^64
    so K products fit before any acc[w] can exceed 2^128 as long as K < 2^62.
    """
    cdef uint64_t a0 = <uint64_t>a
    cdef uint64_t a1 = <uint64_t>(a >> 64)
    cdef uint64_t b0 = <uint64_t>b
    cdef uint64_t b1 = <uint64_t>(b >> 64)
    cdef u128 p00 = (<u128>a0) * b0
    cdef u128 mid = (<u128>a0) * b1 + (<u128>a1) * b0
    cdef u128 p11 = (<u128>a1) * b1
    acc[0] += <uint64_t>p00
    acc[1] += (p00 >> 64) + (mid & 0xFFFFFFFFFFFFFFFFULL)
    acc[2] += (mid >> 64) + (p11 & 0xFFFFFFFFFFFFFFFFULL)
    acc[3] += p11 >> 64

cdef inline u128 finish4(const u128* acc) noexcept nogil:
    """Reduce acc[0] + acc[1] 2^64 + acc[2] 2^128 + acc[3] 2^192 modulo p.

    2^128 = 2 and 2^192 = 2^65 (mod p), so each weight is a rotation.
    """
    cdef u128 s = reduce128(acc[0])
    s = fadd(s, rotl127(reduce128(acc[1]), 64))
    s = fadd(s, rotl127(reduce128(acc[2]), 1))
    s = fadd(s, rotl127(reduce128(acc[3]), 65))
    return s
