# Scalar arithmetic in F_p, p = 2^127 - 1, on unsigned 128-bit C integers.
#
# An element is stored as two uint64 limbs (lo, hi) with hi < 2^63; canonical
# values lie in [0, p - 1].  Reduction uses 2^127 = 1 (mod p): for v < 2^128,
# (v & p) + (v >> 127) < 2^127 + 1, and one conditional subtraction finishes.
# Multiplying a canonical value by 2^k (0 <= k < 127) is a 127-bit rotation.
#
# Two helpers have a hand-scheduled x86-64 version (BMI2 `mulx`, in the C block
# below, used when the compiler targets BMI2, as -march=native does on any
# x86-64 CPU since 2013) next to their portable Cython version: fmul and dot3.
# GCC 12 keeps 128-bit temporaries of the portable code on the stack and loads
# the same limbs several times; the assembly keeps every word in a register.
# On one AMD EPYC (Zen 4) core, scripts/bench_kernels.py measured mul going
# from 4.5 to 3.1 ns per element and matmul from 3.0 to 2.4 ns per product.
# The portable versions are the reference twins: field.pyx exposes
# mul_portable / matmul_portable / matmul_tn_portable so that the tests run
# both on any machine.  The matrix products have a third implementation,
# with AVX-512 IFMA, in f127_ifma.pxd (used where the build and the CPU have
# it; matmul_scalar / matmul_tn_scalar keep this file's assembly reachable).

from libc.stdint cimport uint64_t

cdef extern from *:
    ctypedef unsigned long long u128 "unsigned __int128"

cdef extern from *:
    """
    #if defined(__GNUC__) && defined(__x86_64__) && defined(__BMI2__)
    #define MPC_F127_ASM 1

    /* out = (a0 + a1 2^64) (b0 + b1 2^64) mod 2^127 - 1, canonical, for
       canonical inputs (a1, b1 < 2^63, not p); the same arithmetic as
       fmul_portable.  With mid = a0 b1 + a1 b0 < 2^128 the product has words
       w0..w3, and with 2^127 = 1 it is congruent to
       S = (product mod 2^127) + (product >> 127)
         = (w0 + (w1 mod 2^63) 2^64) + 2 (w2 + w3 2^64) + (w1 >> 63).
       One fold of bit 127 of S gives v = (S mod 2^127) + (S >> 127), and v is
       already canonical, so fmul_portable's final conditional subtraction is
       left out (it cost 15% of the time): for a, b <= p - 1 the product is at
       most 2^254 - 2^129 + 4, so S <= (2^127 - 1) + (2^127 - 4) = 2^128 - 5,
       which rules out v = 2^127 (S = 2^128 - 1); and v = p needs S = p or
       S = 2^128 - 2, both congruent to 0, while a product of nonzero
       residues is not 0 mod p (and a zero factor gives S = 0).
       A non-canonical input p (a 0) may give the non-canonical result p.
       rdx is mulx's implicit factor: a0, then a1. */
    static inline void mpc_f127_mul_asm(uint64_t a0, uint64_t a1, uint64_t b0, uint64_t b1,
                                        uint64_t* out)
    {
        uint64_t w0, w1, w2, w3, t0, t1;
        __asm__ (
            "mulx %[b0], %[w0], %[w1]\\n\\t"     /* a0 b0 */
            "mulx %[b1], %[t0], %[t1]\\n\\t"     /* a0 b1 */
            "movq %[a1], %%rdx\\n\\t"
            "mulx %[b0], %[w2], %[w3]\\n\\t"     /* a1 b0 */
            "addq %[w2], %[t0]\\n\\t"            /* (t0, t1) = mid */
            "adcq %[w3], %[t1]\\n\\t"
            "mulx %[b1], %[w2], %[w3]\\n\\t"     /* a1 b1 */
            "addq %[t0], %[w1]\\n\\t"            /* + mid 2^64: words w0..w3 */
            "adcq %[t1], %[w2]\\n\\t"
            "adcq $0, %[w3]\\n\\t"
            "shldq $1, %[w2], %[w3]\\n\\t"       /* (w2, w3) = 2 (w2 + w3 2^64) + (w1 >> 63) */
            "shldq $1, %[w1], %[w2]\\n\\t"
            "btrq $63, %[w1]\\n\\t"
            "addq %[w2], %[w0]\\n\\t"            /* S = (w0, w1) < 2^128 */
            "adcq %[w3], %[w1]\\n\\t"
            "movq %[w1], %[t0]\\n\\t"            /* fold bit 127: v canonical */
            "shrq $63, %[t0]\\n\\t"
            "btrq $63, %[w1]\\n\\t"
            "addq %[t0], %[w0]\\n\\t"
            "adcq $0, %[w1]\\n\\t"
            "movq %[w0], %[o0]\\n\\t"
            "movq %[w1], %[o1]\\n\\t"
            : [w0] "=&r" (w0), [w1] "=&r" (w1), [w2] "=&r" (w2), [w3] "=&r" (w3),
              [t0] "=&r" (t0), [t1] "=&r" (t1), "+&d" (a0),
              [o0] "=m" (out[0]), [o1] "=m" (out[1])
            : [a1] "rm" (a1), [b0] "r" (b0), [b1] "r" (b1)
            : "cc");
    }

    /* (acc[0], acc[1], acc[2]) += the n products a[k] b[k] (arrays of n limb
       pairs), congruent mod p and unreduced, as dot3_portable does:
       a0 b0 + lo64(mid) 2^64 + 2 (a1 b1 + hi64(mid)), mid = a0 b1 + a1 b0.
       The limbs of b[k] are loaded into registers once: `mulx` with a memory
       operand is slower here than a register load plus two `mulx`. */
    static inline void mpc_f127_dot3_asm(const uint64_t* a, const uint64_t* b,
                                         Py_ssize_t n, uint64_t* acc)
    {
        uint64_t x0 = acc[0], x1 = acc[1], x2 = acc[2];
        uint64_t t0, t1, m0, m1, b0, b1;
        Py_ssize_t k = -16 * n;  /* byte offset from the ends, counting up to 0 */
        if (n <= 0)
            return;
        a += 2 * n;
        b += 2 * n;
        __asm__ (
            "1:\\n\\t"
            "movq (%[a],%[k]), %%rdx\\n\\t"
            "movq (%[b],%[k]), %[b0]\\n\\t"
            "movq 8(%[b],%[k]), %[b1]\\n\\t"
            "mulx %[b0], %[t0], %[t1]\\n\\t"         /* a0 b0 */
            "addq %[t0], %[x0]\\n\\t"
            "adcq %[t1], %[x1]\\n\\t"
            "adcq $0, %[x2]\\n\\t"
            "mulx %[b1], %[m0], %[m1]\\n\\t"         /* a0 b1 */
            "movq 8(%[a],%[k]), %%rdx\\n\\t"
            "mulx %[b0], %[t0], %[t1]\\n\\t"         /* a1 b0 */
            "addq %[t0], %[m0]\\n\\t"                /* mid, no carry out */
            "adcq %[t1], %[m1]\\n\\t"
            "addq %[m0], %[x1]\\n\\t"                /* + lo64(mid) 2^64 */
            "adcq $0, %[x2]\\n\\t"
            "mulx %[b1], %[t0], %[t1]\\n\\t"         /* a1 b1 < 2^126 */
            "addq %[m1], %[t0]\\n\\t"                /* + hi64(mid) < 2^127 */
            "adcq $0, %[t1]\\n\\t"
            "shldq $1, %[t0], %[t1]\\n\\t"           /* doubled < 2^128 */
            "addq %[t0], %[t0]\\n\\t"
            "addq %[t0], %[x0]\\n\\t"
            "adcq %[t1], %[x1]\\n\\t"
            "adcq $0, %[x2]\\n\\t"
            "addq $16, %[k]\\n\\t"
            "jnz 1b\\n\\t"
            : [x0] "+&r" (x0), [x1] "+&r" (x1), [x2] "+&r" (x2),
              [t0] "=&r" (t0), [t1] "=&r" (t1), [m0] "=&r" (m0), [m1] "=&r" (m1),
              [b0] "=&r" (b0), [b1] "=&r" (b1), [k] "+&r" (k)
            : [a] "r" (a), [b] "r" (b)
            : "rdx", "cc", "memory");
        acc[0] = x0; acc[1] = x1; acc[2] = x2;
    }

    #else
    #define MPC_F127_ASM 0
    /* Never called: MPC_F127_ASM is 0 and the Cython callers test it first. */
    static inline void mpc_f127_mul_asm(uint64_t a0, uint64_t a1, uint64_t b0, uint64_t b1,
                                        uint64_t* out)
    { (void)a0; (void)a1; (void)b0; (void)b1; (void)out; }
    static inline void mpc_f127_dot3_asm(const uint64_t* a, const uint64_t* b,
                                         Py_ssize_t n, uint64_t* acc)
    { (void)a; (void)b; (void)n; (void)acc; }
    #endif
    """
    bint F127_ASM "MPC_F127_ASM"
    void fmul_asm "mpc_f127_mul_asm" (uint64_t a0, uint64_t a1, uint64_t b0, uint64_t b1,
                                      uint64_t* out) noexcept nogil
    void dot3_asm "mpc_f127_dot3_asm" (const uint64_t* a, const uint64_t* b, Py_ssize_t n,
                                       uint64_t* acc) noexcept nogil

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

cdef inline u128 fmul_portable(u128 a, u128 b) noexcept nogil:
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

cdef inline u128 fmul(u128 a, u128 b) noexcept nogil:
    """a * b mod p for canonical a, b (assembly where available)."""
    cdef uint64_t r[2]
    if F127_ASM:
        fmul_asm(<uint64_t>a, <uint64_t>(a >> 64), <uint64_t>b, <uint64_t>(b >> 64), r)
        return load(r)
    return fmul_portable(a, b)

cdef inline void fmul_to(const uint64_t* a, const uint64_t* b, uint64_t* out) noexcept nogil:
    """out = a * b mod p on limb pairs (what fmul computes, stored in place)."""
    if F127_ASM:
        fmul_asm(a[0], a[1], b[0], b[1], out)
    else:
        store(out, fmul_portable(load(a), load(b)))

cdef inline void dot3_portable(const uint64_t* a, const uint64_t* b, Py_ssize_t n,
                               uint64_t* acc) noexcept nogil:
    """acc += sum_k a[k] b[k] mod p, unreduced, over n elements (limb pairs).

    acc holds three words, X = acc[0] + acc[1] 2^64 + acc[2] 2^128.  With
    mid = a0 b1 + a1 b0 (< 2^128 as a1, b1 < 2^63) a product is
    a0 b0 + mid 2^64 + a1 b1 2^128 = a0 b0 + lo64(mid) 2^64 + 2 (a1 b1 + hi64(mid))
    (mod p, as 2^128 = 2), three terms below 2^128 each.
    Overflow budget: acc[2] counts the carries, at most 3 per product, so
    n < 2^62 products fit (dot3_finish needs acc[2] < 2^126).
    """
    cdef:
        Py_ssize_t k
        u128 x = load(acc), t, mid, z
        uint64_t x2 = acc[2], a0, a1, b0, b1
    for k in range(n):
        a0 = a[2 * k]
        a1 = a[2 * k + 1]
        b0 = b[2 * k]
        b1 = b[2 * k + 1]
        mid = (<u128>a0) * b1 + (<u128>a1) * b0
        z = (<u128>a1) * b1 + (mid >> 64)  # < 2^127
        t = x + (<u128>a0) * b0
        x2 += t < x
        x = t
        t = x + ((mid & 0xFFFFFFFFFFFFFFFFULL) << 64)
        x2 += t < x
        x = t
        t = x + (z << 1)
        x2 += t < x
        x = t
    store(acc, x)
    acc[2] = x2

cdef inline void dot3(const uint64_t* a, const uint64_t* b, Py_ssize_t n,
                      uint64_t* acc) noexcept nogil:
    """dot3_portable, in assembly where available."""
    if F127_ASM:
        dot3_asm(a, b, n, acc)
    else:
        dot3_portable(a, b, n, acc)

cdef inline u128 dot3_finish(const uint64_t* acc) noexcept nogil:
    """The canonical value of a dot3 accumulator, for acc[2] < 2^126 (2^128 = 2)."""
    cdef u128 lo = load(acc)
    return reduce128((lo & P127()) + (lo >> 127) + ((<u128>acc[2]) << 1))
