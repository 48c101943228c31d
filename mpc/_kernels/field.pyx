# Elementwise, reduction and matrix kernels over F_p, p = 2^127 - 1.
#
# Every function takes C-contiguous uint64 arrays of shape (n, 2) (or (m, k, 2)
# for matrices) holding canonical elements, and writes an explicit `out`.
# Shapes, dtypes and contiguity are checked by the Python wrapper in
# mpc/field.py before the call; here the loops run without the GIL.

from libc.stdint cimport uint64_t, int64_t
from libc.stdlib cimport calloc, free

from mpc._kernels.f127 cimport (
    u128, P127, load, store, reduce128, fadd, fsub, fneg, fmul, mac4, finish4,
    rotl127,
)


def add(const uint64_t[:, ::1] a, const uint64_t[:, ::1] b, uint64_t[:, ::1] out):
    cdef:
        Py_ssize_t i, n = a.shape[0]
    with nogil:
        for i in range(n):
            store(&out[i, 0], fadd(load(&a[i, 0]), load(&b[i, 0])))


def sub(const uint64_t[:, ::1] a, const uint64_t[:, ::1] b, uint64_t[:, ::1] out):
    cdef:
        Py_ssize_t i, n = a.shape[0]
        const uint64_t* pa
        const uint64_t* pb
        uint64_t* po
    if n == 0:
        return
    pa = &a[0, 0]
    pb = &b[0, 0]
    po = &out[0, 0]
    with nogil:
        for i in range(n):
            store(po + 2 * i, fsub(load(pa + 2 * i), load(pb + 2 * i)))


def neg(const uint64_t[:, ::1] a, uint64_t[:, ::1] out):
    cdef:
        Py_ssize_t i, n = a.shape[0]
    with nogil:
        for i in range(n):
            store(&out[i, 0], fneg(load(&a[i, 0])))


def mul(const uint64_t[:, ::1] a, const uint64_t[:, ::1] b, uint64_t[:, ::1] out):
    cdef:
        Py_ssize_t i, n = a.shape[0]
        const uint64_t* pa
        const uint64_t* pb
        uint64_t* po
    if n == 0:
        return
    pa = &a[0, 0]
    pb = &b[0, 0]
    po = &out[0, 0]
    with nogil:
        for i in range(n):
            store(po + 2 * i, fmul(load(pa + 2 * i), load(pb + 2 * i)))


def mul_scalar(const uint64_t[:, ::1] a, uint64_t lo, uint64_t hi, uint64_t[:, ::1] out):
    cdef:
        Py_ssize_t i, n = a.shape[0]
        u128 s = ((<u128>hi) << 64) | lo
    with nogil:
        for i in range(n):
            store(&out[i, 0], fmul(load(&a[i, 0]), s))


def add_scalar(const uint64_t[:, ::1] a, uint64_t lo, uint64_t hi, uint64_t[:, ::1] out):
    cdef:
        Py_ssize_t i, n = a.shape[0]
        u128 s = ((<u128>hi) << 64) | lo
    with nogil:
        for i in range(n):
            store(&out[i, 0], fadd(load(&a[i, 0]), s))


def mul_pow2(const uint64_t[:, ::1] a, int k, uint64_t[:, ::1] out):
    """out = a * 2^k, 0 <= k < 127 (a rotation, no multiply)."""
    cdef:
        Py_ssize_t i, n = a.shape[0]
    with nogil:
        for i in range(n):
            store(&out[i, 0], rotl127(load(&a[i, 0]), k))


def beaver_combine(const uint64_t[:, ::1] c, const uint64_t[:, ::1] d,
                   const uint64_t[:, ::1] b, const uint64_t[:, ::1] e,
                   const uint64_t[:, ::1] a, bint add_de, uint64_t[:, ::1] out):
    """out = c + d*b + e*a (+ d*e): one node's share of x*y after opening
    d = x - a and e = y - b.  Exactly one node passes add_de."""
    cdef:
        Py_ssize_t i, n = c.shape[0]
        u128 di, ei, s
    with nogil:
        for i in range(n):
            di = load(&d[i, 0])
            ei = load(&e[i, 0])
            s = fadd(load(&c[i, 0]), fmul(di, load(&b[i, 0])))
            s = fadd(s, fmul(ei, load(&a[i, 0])))
            if add_de:
                s = fadd(s, fmul(di, ei))
            store(&out[i, 0], s)


def sum_mid(const uint64_t[:, :, ::1] a, uint64_t[:, ::1] out):
    """out[p, q] = sum_j a[p, j*Q + q] for a viewed as (P, A*Q, 2) -> (P*Q, 2).

    The wrapper passes a as shape (P, A, Q*2) flattened to (P, A, 2Q)."""
    cdef:
        Py_ssize_t p, j, q
        Py_ssize_t n_p = a.shape[0], n_a = a.shape[1], n_q = a.shape[2] // 2
        u128* acc
        u128 s
    # Overflow budget: each limb added is < 2^64, so a 128-bit sum per limb
    # holds 2^64 terms; axis lengths here are far below that.
    acc = <u128*> calloc(2 * n_q + 1, sizeof(u128))
    if acc == NULL:
        raise MemoryError("sum_mid: accumulator allocation failed")
    with nogil:
        for p in range(n_p):
            for q in range(2 * n_q):
                acc[q] = 0
            for j in range(n_a):
                for q in range(2 * n_q):
                    acc[q] += a[p, j, q]
            for q in range(n_q):
                s = fadd(reduce128(acc[2 * q]), rotl127(reduce128(acc[2 * q + 1]), 64))
                store(&out[p * n_q + q, 0], s)
    free(acc)


def matmul(const uint64_t[:, :, ::1] a, const uint64_t[:, :, ::1] b, uint64_t[:, :, ::1] out):
    """out (m, n) = a (m, K) @ b (K, n) with delayed reduction.

    Each product is split into four 64-bit-weighted partial sums (mac4); one
    reduction per output element, after all K terms (K < 2^62)."""
    cdef:
        Py_ssize_t i, j, k
        Py_ssize_t m = a.shape[0], K = a.shape[1], n = b.shape[1]
        u128 av
        u128* acc
    acc = <u128*> calloc(4 * n + 1, sizeof(u128))
    if acc == NULL:
        raise MemoryError("matmul: accumulator allocation failed")
    with nogil:
        for i in range(m):
            for j in range(4 * n):
                acc[j] = 0
            for k in range(K):
                av = load(&a[i, k, 0])
                if av == 0:
                    continue
                for j in range(n):
                    mac4(&acc[4 * j], av, load(&b[k, j, 0]))
            for j in range(n):
                store(&out[i, j, 0], finish4(&acc[4 * j]))
    free(acc)


def matmul_tn(const uint64_t[:, :, ::1] a, const uint64_t[:, :, ::1] b, uint64_t[:, :, ::1] out):
    """out (m, n) = a.T @ b for a (K, m), b (K, n), without transposing a.

    Streams the rows of a and b once; keeps m*n four-limb accumulators."""
    cdef:
        Py_ssize_t i, j, k
        Py_ssize_t K = a.shape[0], m = a.shape[1], n = b.shape[1]
        u128 av
        u128* acc
    acc = <u128*> calloc(4 * m * n + 1, sizeof(u128))
    if acc == NULL:
        raise MemoryError("matmul_tn: accumulator allocation failed")
    with nogil:
        for k in range(K):
            for i in range(m):
                av = load(&a[k, i, 0])
                if av == 0:
                    continue
                for j in range(n):
                    mac4(&acc[4 * (i * n + j)], av, load(&b[k, j, 0]))
        for i in range(m):
            for j in range(n):
                store(&out[i, j, 0], finish4(&acc[4 * (i * n + j)]))
    free(acc)


def sample_uniform(const uint64_t[::1] words, uint64_t[:, ::1] out):
    """Fill out with uniform elements from random 64-bit words by rejection.

    Two words give a 127-bit candidate (top bit of the high word dropped);
    the one candidate that is not a residue, 2^127 - 1 = p, is rejected.
    Returns (elements written, words consumed)."""
    cdef:
        Py_ssize_t i = 0, w = 0, n = out.shape[0], n_words = words.shape[0]
        uint64_t lo, hi
    with nogil:
        while i < n and w + 1 < n_words:
            lo = words[w]
            hi = words[w + 1] & 0x7FFFFFFFFFFFFFFFULL
            w += 2
            if hi == 0x7FFFFFFFFFFFFFFFULL and lo == 0xFFFFFFFFFFFFFFFFULL:
                continue
            out[i, 0] = lo
            out[i, 1] = hi
            i += 1
    return i, w


def from_int64(const int64_t[::1] v, uint64_t[:, ::1] out):
    """Signed 64-bit integers to field elements (negative x -> p - |x|)."""
    cdef:
        Py_ssize_t i, n = v.shape[0]
        uint64_t mag
    with nogil:
        for i in range(n):
            if v[i] >= 0:
                out[i, 0] = <uint64_t>v[i]
                out[i, 1] = 0
            else:
                mag = (<uint64_t>(-(v[i] + 1))) + 1
                store(&out[i, 0], P127() - mag)


def from_uint64(const uint64_t[::1] v, uint64_t[:, ::1] out):
    cdef:
        Py_ssize_t i, n = v.shape[0]
    with nogil:
        for i in range(n):
            out[i, 0] = v[i]
            out[i, 1] = 0


def to_int64(const uint64_t[:, ::1] a, int64_t[::1] out):
    """Centered lift (values above (p-1)/2 are negative) to int64.

    Returns the number of elements whose lift does not fit in int64; those
    are written as 0 and the wrapper raises."""
    cdef:
        Py_ssize_t i, n = a.shape[0], bad = 0
        u128 x, half = P127() >> 1, mag
    with nogil:
        for i in range(n):
            x = load(&a[i, 0])
            if x <= half:
                if x >> 63:
                    bad += 1
                    out[i] = 0
                else:
                    out[i] = <int64_t>x
            else:
                mag = P127() - x
                if mag > ((<u128>1) << 63):
                    bad += 1
                    out[i] = 0
                else:
                    out[i] = -(<int64_t>(mag - 1)) - 1
    return bad


def to_double(const uint64_t[:, ::1] a, double scale, double[::1] out):
    """Centered lift times scale, as float64 (rounded, never out of range)."""
    cdef:
        Py_ssize_t i, n = a.shape[0]
        u128 x, half = P127() >> 1
    with nogil:
        for i in range(n):
            x = load(&a[i, 0])
            if x <= half:
                out[i] = (<double>x) * scale
            else:
                out[i] = -(<double>(P127() - x)) * scale


def count_noncanonical(const uint64_t[:, ::1] a):
    """Number of entries that are not canonical residues (hi >= 2^63 or == p)."""
    cdef:
        Py_ssize_t i, n = a.shape[0], bad = 0
    with nogil:
        for i in range(n):
            if a[i, 1] > 0x7FFFFFFFFFFFFFFFULL:
                bad += 1
            elif a[i, 1] == 0x7FFFFFFFFFFFFFFFULL and a[i, 0] == 0xFFFFFFFFFFFFFFFFULL:
                bad += 1
    return bad
