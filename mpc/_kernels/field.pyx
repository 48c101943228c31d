# Elementwise, reduction and matrix kernels over F_p, p = 2^127 - 1.
#
# Every function takes C-contiguous uint64 arrays of shape (n, 2) (or (m, k, 2)
# for matrices) holding canonical elements, and writes an explicit `out`.
# Shapes, dtypes and contiguity are checked by the Python wrapper in
# mpc/field.py before the call; here the loops run without the GIL.

from libc.stdint cimport uint64_t, int64_t
from libc.stdlib cimport calloc, malloc, free

from mpc._kernels.f127 cimport (
    u128, P127, load, store, reduce128, fadd, fsub, fneg, fmul, fmul_to, fmul_portable,
    dot3, dot3_portable, dot3_finish, rotl127, F127_ASM,
)

# AVX-512 IFMA matrix products: compiled only when the compiler targets IFMA,
# run only when the CPU has it (ifma_usable).
from mpc._kernels.f127_ifma cimport ifma_usable, ifma_matmul, ifma_matmul_tn

ASM_KERNELS = bool(F127_ASM)
"""True when fmul and the scalar matrix products run the x86-64 assembly of f127.pxd."""

cdef bint _ifma = ifma_usable()
IFMA_KERNELS = bool(_ifma)
"""True when matmul and matmul_tn run the AVX-512 IFMA kernels of f127_ifma.pxd
(the build targets IFMA and this CPU has it)."""


# The elementwise loops below walk raw pointers (element i is the limb pair at
# offset 2 i): indexing the memoryviews instead reloads their strides on every
# access and keeps the compiler from scheduling the loads freely.

def add(const uint64_t[:, ::1] a, const uint64_t[:, ::1] b, uint64_t[:, ::1] out):
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
            store(po + 2 * i, fadd(load(pa + 2 * i), load(pb + 2 * i)))


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
        const uint64_t* pa
        uint64_t* po
    if n == 0:
        return
    pa = &a[0, 0]
    po = &out[0, 0]
    with nogil:
        for i in range(n):
            store(po + 2 * i, fneg(load(pa + 2 * i)))


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
            fmul_to(pa + 2 * i, pb + 2 * i, po + 2 * i)


def mul_portable(const uint64_t[:, ::1] a, const uint64_t[:, ::1] b, uint64_t[:, ::1] out):
    """mul with the portable Cython product, whatever the build (for tests)."""
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
            store(po + 2 * i, fmul_portable(load(pa + 2 * i), load(pb + 2 * i)))


def mul_scalar(const uint64_t[:, ::1] a, uint64_t lo, uint64_t hi, uint64_t[:, ::1] out):
    cdef:
        Py_ssize_t i, n = a.shape[0]
        const uint64_t* pa
        uint64_t* po
        uint64_t s[2]
    if n == 0:
        return
    s[0] = lo
    s[1] = hi
    pa = &a[0, 0]
    po = &out[0, 0]
    with nogil:
        for i in range(n):
            fmul_to(pa + 2 * i, s, po + 2 * i)


def add_scalar(const uint64_t[:, ::1] a, uint64_t lo, uint64_t hi, uint64_t[:, ::1] out):
    cdef:
        Py_ssize_t i, n = a.shape[0]
        u128 s = ((<u128>hi) << 64) | lo
        const uint64_t* pa
        uint64_t* po
    if n == 0:
        return
    pa = &a[0, 0]
    po = &out[0, 0]
    with nogil:
        for i in range(n):
            store(po + 2 * i, fadd(load(pa + 2 * i), s))


def mul_pow2(const uint64_t[:, ::1] a, int k, uint64_t[:, ::1] out):
    """out = a * 2^k, 0 <= k < 127 (a rotation, no multiply)."""
    cdef:
        Py_ssize_t i, n = a.shape[0]
        const uint64_t* pa
        uint64_t* po
    if n == 0:
        return
    pa = &a[0, 0]
    po = &out[0, 0]
    with nogil:
        for i in range(n):
            store(po + 2 * i, rotl127(load(pa + 2 * i), k))


def beaver_combine(const uint64_t[:, ::1] c, const uint64_t[:, ::1] d,
                   const uint64_t[:, ::1] b, const uint64_t[:, ::1] e,
                   const uint64_t[:, ::1] a, bint add_de, uint64_t[:, ::1] out):
    """out = c + d*b + e*a (+ d*e): one node's share of x*y after opening
    d = x - a and e = y - b.  Exactly one node passes add_de.

    The two or three products are accumulated unreduced on top of c and
    reduced once (dot3_finish; acc[2] stays below 10).  The portable dot3 is
    used even where the assembly exists: inlined for a single product it is
    faster than the assembly loop, whose setup is then pure overhead."""
    cdef:
        Py_ssize_t i, n = c.shape[0]
        const uint64_t* pc
        const uint64_t* pd
        const uint64_t* pb
        const uint64_t* pe
        const uint64_t* pa
        uint64_t* po
        uint64_t acc[3]
    if n == 0:
        return
    pc = &c[0, 0]
    pd = &d[0, 0]
    pb = &b[0, 0]
    pe = &e[0, 0]
    pa = &a[0, 0]
    po = &out[0, 0]
    with nogil:
        for i in range(n):
            acc[0] = pc[2 * i]
            acc[1] = pc[2 * i + 1]
            acc[2] = 0
            dot3_portable(pd + 2 * i, pb + 2 * i, 1, acc)
            dot3_portable(pe + 2 * i, pa + 2 * i, 1, acc)
            if add_de:
                dot3_portable(pd + 2 * i, pe + 2 * i, 1, acc)
            store(po + 2 * i, dot3_finish(acc))


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


cdef enum:
    # matmul transposes b one tile of columns at a time, at most this many bytes
    # (at least one column): 4 MiB holds all 16 columns of a 2000-row b.
    MATMUL_TILE_BYTES = 1 << 22
    # matmul_tn transposes blocks of rows of a and b holding about this many
    # elements in all (1 MiB, the L2 cache of a recent core), 16 to 1024 rows.
    MATMUL_TN_BLOCK_ELEMENTS = 1 << 16


cdef inline void dot_into(const uint64_t* a, const uint64_t* b, Py_ssize_t n, uint64_t* acc,
                          bint portable) noexcept nogil:
    if portable:
        dot3_portable(a, b, n, acc)
    else:
        dot3(a, b, n, acc)


cdef int matmul_rows(const uint64_t* a, const uint64_t* b, uint64_t* out,
                     Py_ssize_t m, Py_ssize_t K, Py_ssize_t n, bint portable) noexcept nogil:
    """out (m, n) = a (m, K) @ b (K, n) on C-contiguous limb pairs; -1 if out of memory.

    Copies a tile of b's columns into rows (bt, column-major b), then every
    output is one dot product of two contiguous rows, accumulated in registers
    by dot3 and reduced once (dot3_finish)."""
    cdef:
        Py_ssize_t i, j, k, j0, tile, n_tile
        uint64_t* bt     # columns j0 .. j0 + n_tile - 1 of b, one row of K each
        uint64_t acc[3]  # dot3 accumulator of one output
    if m == 0 or n == 0:
        return 0
    if K == 0:
        for i in range(2 * m * n):
            out[i] = 0
        return 0
    tile = MATMUL_TILE_BYTES // (16 * K)
    tile = max(1, min(tile, n))
    bt = <uint64_t*> malloc(16 * K * tile + 16)
    if bt == NULL:
        return -1
    j0 = 0
    while j0 < n:
        n_tile = min(tile, n - j0)
        for k in range(K):
            for j in range(n_tile):
                bt[2 * (j * K + k)] = b[2 * (k * n + j0 + j)]
                bt[2 * (j * K + k) + 1] = b[2 * (k * n + j0 + j) + 1]
        for i in range(m):
            for j in range(n_tile):
                acc[0] = acc[1] = acc[2] = 0
                dot_into(a + 2 * i * K, bt + 2 * j * K, K, acc, portable)
                store(out + 2 * (i * n + j0 + j), dot3_finish(acc))
        j0 += n_tile
    free(bt)
    return 0


cdef int matmul_tn_blocks(const uint64_t* a, const uint64_t* b, uint64_t* out,
                          Py_ssize_t K, Py_ssize_t m, Py_ssize_t n, bint portable) noexcept nogil:
    """out (m, n) = a.T @ b for a (K, m), b (K, n); -1 if out of memory.

    Streams a and b once, a block of rows at a time: the block is transposed
    (bt, at: one contiguous row per column) and every output's dot3
    accumulator, kept in memory between blocks, takes the block's products."""
    cdef:
        Py_ssize_t i, j, kk, k0, block, n_block
        uint64_t* at   # rows k0 .. k0 + n_block - 1 of a, transposed: (m, n_block)
        uint64_t* bt   # the same rows of b, transposed: (n, n_block)
        uint64_t* acc  # dot3 accumulators of all outputs, (m, n, 3)
    if m == 0 or n == 0:
        return 0
    block = max(16, min(1024, MATMUL_TN_BLOCK_ELEMENTS // (m + n)))
    at = <uint64_t*> malloc(16 * m * block)
    bt = <uint64_t*> malloc(16 * n * block)
    acc = <uint64_t*> calloc(3 * m * n, sizeof(uint64_t))
    if at == NULL or bt == NULL or acc == NULL:
        free(at)
        free(bt)
        free(acc)
        return -1
    k0 = 0
    while k0 < K:
        n_block = min(block, K - k0)
        for kk in range(n_block):
            for i in range(m):
                at[2 * (i * n_block + kk)] = a[2 * ((k0 + kk) * m + i)]
                at[2 * (i * n_block + kk) + 1] = a[2 * ((k0 + kk) * m + i) + 1]
            for j in range(n):
                bt[2 * (j * n_block + kk)] = b[2 * ((k0 + kk) * n + j)]
                bt[2 * (j * n_block + kk) + 1] = b[2 * ((k0 + kk) * n + j) + 1]
        for i in range(m):
            for j in range(n):
                dot_into(at + 2 * i * n_block, bt + 2 * j * n_block, n_block,
                         acc + 3 * (i * n + j), portable)
        k0 += n_block
    for i in range(m):
        for j in range(n):
            store(out + 2 * (i * n + j), dot3_finish(acc + 3 * (i * n + j)))
    free(at)
    free(bt)
    free(acc)
    return 0


cdef inline const uint64_t* data3(const uint64_t[:, :, ::1] x) noexcept nogil:
    # The first limb of a matrix, or NULL when it has no elements.
    if x.shape[0] == 0 or x.shape[1] == 0:
        return NULL
    return &x[0, 0, 0]


cdef enum:
    # Which implementation _matmul / _matmul_tn run.
    KERNEL_AUTO = 0      # IFMA where usable, else the scalar one (assembly where available)
    KERNEL_SCALAR = 1    # dot3: the x86-64 assembly where available, else the portable Cython
    KERNEL_PORTABLE = 2  # dot3_portable
    KERNEL_IFMA = 3      # f127_ifma.pxd (callers check IFMA_KERNELS first)


def matmul(const uint64_t[:, :, ::1] a, const uint64_t[:, :, ::1] b, uint64_t[:, :, ::1] out):
    """out (m, n) = a (m, K) @ b (K, n) with delayed reduction.

    Each output is accumulated exactly over all K products and reduced once:
    by the AVX-512 IFMA kernel where IFMA_KERNELS, else by dot3 (f127.pxd,
    K < 2^62)."""
    _matmul(a, b, out, KERNEL_AUTO)


def matmul_scalar(const uint64_t[:, :, ::1] a, const uint64_t[:, :, ::1] b,
                  uint64_t[:, :, ::1] out):
    """matmul with the scalar dot product (the assembly where ASM_KERNELS), never IFMA."""
    _matmul(a, b, out, KERNEL_SCALAR)


def matmul_portable(const uint64_t[:, :, ::1] a, const uint64_t[:, :, ::1] b,
                    uint64_t[:, :, ::1] out):
    """matmul with the portable Cython dot product, whatever the build (for tests)."""
    _matmul(a, b, out, KERNEL_PORTABLE)


def matmul_ifma(const uint64_t[:, :, ::1] a, const uint64_t[:, :, ::1] b,
                uint64_t[:, :, ::1] out):
    """matmul with the AVX-512 IFMA kernel; RuntimeError unless IFMA_KERNELS (for tests)."""
    if not _ifma:
        raise RuntimeError("matmul_ifma: no AVX-512 IFMA kernels in this build or on this CPU "
                           "(IFMA_KERNELS is False)")
    _matmul(a, b, out, KERNEL_IFMA)


cdef _matmul(const uint64_t[:, :, ::1] a, const uint64_t[:, :, ::1] b, uint64_t[:, :, ::1] out,
             int kernel):
    cdef:
        Py_ssize_t m = a.shape[0], K = a.shape[1], n = b.shape[1]
        const uint64_t* pa = data3(a)
        const uint64_t* pb = data3(b)
        uint64_t* po
        int status
    if m == 0 or n == 0:
        return
    po = &out[0, 0, 0]
    if kernel == KERNEL_AUTO:
        kernel = KERNEL_IFMA if _ifma else KERNEL_SCALAR
    with nogil:
        if kernel == KERNEL_IFMA:
            status = ifma_matmul(pa, pb, po, m, K, n)
        else:
            status = matmul_rows(pa, pb, po, m, K, n, kernel == KERNEL_PORTABLE)
    if status:
        raise MemoryError(f"matmul: no memory for a packed or transposed copy of b ({K} x {n})")


def matmul_tn(const uint64_t[:, :, ::1] a, const uint64_t[:, :, ::1] b, uint64_t[:, :, ::1] out):
    """out (m, n) = a.T @ b for a (K, m), b (K, n), without transposing a whole.

    Streams the rows of a and b once (per 128 columns of b with IFMA), in
    blocks; keeps an accumulator per output (24 bytes, or 56 with IFMA)."""
    _matmul_tn(a, b, out, KERNEL_AUTO)


def matmul_tn_scalar(const uint64_t[:, :, ::1] a, const uint64_t[:, :, ::1] b,
                     uint64_t[:, :, ::1] out):
    """matmul_tn with the scalar dot product (the assembly where ASM_KERNELS), never IFMA."""
    _matmul_tn(a, b, out, KERNEL_SCALAR)


def matmul_tn_portable(const uint64_t[:, :, ::1] a, const uint64_t[:, :, ::1] b,
                       uint64_t[:, :, ::1] out):
    """matmul_tn with the portable Cython dot product, whatever the build (for tests)."""
    _matmul_tn(a, b, out, KERNEL_PORTABLE)


def matmul_tn_ifma(const uint64_t[:, :, ::1] a, const uint64_t[:, :, ::1] b,
                   uint64_t[:, :, ::1] out):
    """matmul_tn with the AVX-512 IFMA kernel; RuntimeError unless IFMA_KERNELS (for tests)."""
    if not _ifma:
        raise RuntimeError("matmul_tn_ifma: no AVX-512 IFMA kernels in this build or on this CPU "
                           "(IFMA_KERNELS is False)")
    _matmul_tn(a, b, out, KERNEL_IFMA)


cdef _matmul_tn(const uint64_t[:, :, ::1] a, const uint64_t[:, :, ::1] b, uint64_t[:, :, ::1] out,
                int kernel):
    cdef:
        Py_ssize_t K = a.shape[0], m = a.shape[1], n = b.shape[1]
        const uint64_t* pa = data3(a)
        const uint64_t* pb = data3(b)
        uint64_t* po
        int status
    if m == 0 or n == 0:
        return
    po = &out[0, 0, 0]
    if kernel == KERNEL_AUTO:
        kernel = KERNEL_IFMA if _ifma else KERNEL_SCALAR
    with nogil:
        if kernel == KERNEL_IFMA:
            status = ifma_matmul_tn(pa, pb, po, K, m, n)
        else:
            status = matmul_tn_blocks(pa, pb, po, K, m, n, kernel == KERNEL_PORTABLE)
    if status:
        raise MemoryError(f"matmul_tn: no memory for {m} x {n} accumulators")


cdef enum:
    # Elements per block of sample_uniform's fast path (see there).
    SAMPLE_BLOCK = 256


def sample_uniform(const uint64_t[::1] words, uint64_t[:, ::1] out):
    """Fill out with uniform elements from random 64-bit words by rejection.

    Two words give a 127-bit candidate (top bit of the high word dropped);
    the one candidate that is not a residue, 2^127 - 1 = p, is rejected.
    Returns (elements written, words consumed).

    words may be the very memory of out (mpc.prg converts its keystream in
    place): element i is written after words 2i and 2i + 1 have been read, and
    never to a word that is still to be read."""
    cdef:
        Py_ssize_t i = 0, w = 0, j, n = out.shape[0], n_words = words.shape[0]
        const uint64_t* pw
        uint64_t* po
        uint64_t lo, hi, bad
        bint in_place
    if n == 0 or n_words < 2:
        return 0, 0
    pw = &words[0]
    po = &out[0, 0]
    in_place = <const void*>pw == <const void*>po
    with nogil:
        # Fast path while nothing has been rejected, so element i comes from
        # words 2i, 2i + 1: blocks are masked branch-free (vectorised), and a
        # block holding a rejected candidate is redone by the exact loop below.
        # Candidate p is the one whose lo & (hi | top bit) has all bits set.
        while i + SAMPLE_BLOCK <= n and 2 * (i + SAMPLE_BLOCK) <= n_words:
            bad = 0
            if in_place:  # one pointer, so the compiler sees no aliasing
                for j in range(2 * i, 2 * (i + SAMPLE_BLOCK), 2):
                    bad |= (po[j] & (po[j + 1] | 0x8000000000000000ULL)) == 0xFFFFFFFFFFFFFFFFULL
                    po[j + 1] &= 0x7FFFFFFFFFFFFFFFULL
            else:
                for j in range(2 * i, 2 * (i + SAMPLE_BLOCK), 2):
                    bad |= (pw[j] & (pw[j + 1] | 0x8000000000000000ULL)) == 0xFFFFFFFFFFFFFFFFULL
                    po[j] = pw[j]
                    po[j + 1] = pw[j + 1] & 0x7FFFFFFFFFFFFFFFULL
            if bad:
                break
            i += SAMPLE_BLOCK
        # Exact loop: the tail, and everything from the first rejection on.
        w = 2 * i
        while i < n and w + 1 < n_words:
            lo = pw[w]
            hi = pw[w + 1] & 0x7FFFFFFFFFFFFFFFULL
            w += 2
            if (lo & (hi | 0x8000000000000000ULL)) == 0xFFFFFFFFFFFFFFFFULL:
                continue
            po[2 * i] = lo
            po[2 * i + 1] = hi
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
