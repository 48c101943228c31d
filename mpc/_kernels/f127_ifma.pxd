# AVX-512 IFMA matrix products over F_p, p = 2^127 - 1, for field.pyx's
# matmul and matmul_tn; the scalar products of f127.pxd stay as the fallback
# and as the reference twins.  The C below (intrinsics) is compiled into
# mpc._kernels.field, which cimports the three functions declared after it.
# It is kept in a .pxd, as the assembly of f127.pxd is, so that it ships with
# the sources (pyproject.toml packages the .pxd and .pyx files of
# mpc/_kernels) and cythonize rebuilds field.pyx when it changes.

from libc.stdint cimport uint64_t

cdef extern from *:
    """
    /* Matrix products over F_p, p = 2^127 - 1, with AVX-512 IFMA (vpmadd52luq /
     * vpmadd52huq), compiled into field.pyx, which keeps the scalar kernels of
     * f127.pxd as the fallback and as the reference twins.
     *
     * Guard.  The vector code is compiled only when the compiler targets
     * AVX-512F and AVX-512 IFMA (__AVX512F__ and __AVX512IFMA__: -march=native
     * defines them on a CPU that has them, MPCGWAS_PORTABLE=1 never does);
     * otherwise MPC_IFMA_COMPILED is 0 and the entry points are stubs returning
     * -2 that are never called.  mpc_ifma_usable() also asks the CPU (cpuid, and
     * the OS's XCR0 for the zmm state, through GCC's __builtin_cpu_supports), so a
     * module built for IFMA and loaded on another CPU falls back to the scalar
     * kernels instead of dying of SIGILL in them.
     *
     * Limbs.  A canonical element x < 2^127 is split into three limbs of radix
     * W = 2^51: x = x0 + x1 W + x2 W^2 with x0, x1 < 2^51 and x2 < 2^25, so that
     * the limb sums x01 = x0 + x1, x02 = x0 + x2, x12 = x1 + x2 stay below 2^52,
     * the width of an IFMA operand.  A product is computed with Karatsuba's six
     * limb products
     *
     *   P0 = x0 y0,  P1 = x1 y1,  P2 = x2 y2 (< 2^50),
     *   Q01 = x01 y01,  Q02 = x02 y02,  Q12 = x12 y12  (each < 2^104):
     *
     *   x y = P0 (1 - W - W^2) + P1 (-W + W^2 - W^3) + P2 (-W^2 - W^3 + W^4)
     *         + Q01 W + Q02 W^2 + Q12 W^3.
     *
     * The kernels accumulate, over many k, the low and the high 52 bits of each
     * limb product in its own 64-bit accumulator: 11 accumulators (P2 has no high
     * half) and 11 IFMA instructions per 8 products, where the schoolbook product
     * on 52-bit limbs needs 17.  The signed combination above is applied to the
     * sums only when they are spilled to memory (mpc_ifma_spill), and the exact
     * integer sum is reduced mod p once per output (mpc_ifma_finish).
     *
     * Vectorisation.  A zmm lane holds one output out[i, j]: 8 consecutive i
     * (a "strip" of 8 rows of the result) and one j.  Both products have the form
     * out[i, j] = sum_k A[k, i] B[k, j]: for matmul A[k, i] = a[i, k] (a strip of
     * 8 rows of a, transposed while packing: mpc_ifma_pack_a_nn), for matmul_tn
     * A = a, whose row k holds 8 consecutive A[k, i] that the kernel loads and
     * splits itself (no copy).  The limbs of B are packed per k and j as scalars
     * that the kernel broadcasts.  Two columns j are handled together: 22
     * accumulators, 6 limb vectors of A, 3 broadcast temporaries (of 32 zmm).
     */
    #ifndef MPC_F127_IFMA_H
    #define MPC_F127_IFMA_H

    #include <stddef.h>
    #include <stdint.h>
    #include <stdlib.h>
    #include <string.h>

    #if defined(__GNUC__) && defined(__x86_64__) && defined(__AVX512F__) && defined(__AVX512IFMA__)
    #define MPC_IFMA_COMPILED 1
    #include <immintrin.h>
    #else
    #define MPC_IFMA_COMPILED 0
    #endif

    /* 1 if the IFMA kernels were compiled in and this CPU (and OS) can run them. */
    static int mpc_ifma_usable(void)
    {
    #if MPC_IFMA_COMPILED
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512ifma");
    #else
        return 0;
    #endif
    }

    #if MPC_IFMA_COMPILED

    /* Values of k accumulated in registers between two spills (at most).
     * Overflow budget: an accumulator lane gains one term below 2^52 per k, so
     * 4096 values of k fit in 64 bits (4096 (2^52 - 1) < 2^64); the blocks are
     * sized for the caches and at most 2048 long: every lane stays below 2^63. */
    #define MPC_IFMA_KC_MAX 2048
    /* matmul_tn packs B for one block of k at a time, about this many words
     * (192 KiB, next to the strip of A kept for the later columns in L2). */
    #ifndef MPC_IFMA_B_TILE_WORDS  /* (-D overrides: tests of the blocking) */
    #define MPC_IFMA_B_TILE_WORDS (24 * 1024)
    #endif
    /* Words of the memory accumulator of 8 outputs: 7 signed radix-2^51 columns
     * of 8 lanes. */
    #define MPC_IFMA_ACC_WORDS 56
    /* Packed limbs per element: x0, x1, x2, x01, x02, x12. */
    #define MPC_IFMA_LIMBS 6

    #define MPC_IFMA_M51 0x7FFFFFFFFFFFFULL

    typedef unsigned __int128 mpc_ifma_u128;

    /* 64-byte aligned array of `words` uint64 (NULL if out of memory). */
    static inline uint64_t* mpc_ifma_alloc(size_t words)
    {
        size_t bytes = (words * sizeof(uint64_t) + 63) & ~(size_t)63;
        return (uint64_t*)aligned_alloc(64, bytes ? bytes : 64);
    }

    /* The six limb vectors of 8 elements given by their low and high words. */
    static inline void mpc_ifma_split(__m512i lo, __m512i hi, __m512i* x)
    {
        const __m512i m51 = _mm512_set1_epi64((long long)MPC_IFMA_M51);
        x[0] = _mm512_and_si512(lo, m51);
        x[1] = _mm512_and_si512(_mm512_or_si512(_mm512_srli_epi64(lo, 51), _mm512_slli_epi64(hi, 13)),
                                m51);
        x[2] = _mm512_srli_epi64(hi, 38);
        x[3] = _mm512_add_epi64(x[0], x[1]);
        x[4] = _mm512_add_epi64(x[0], x[2]);
        x[5] = _mm512_add_epi64(x[1], x[2]);
    }

    /* The same for one element, as scalars (for broadcasting). */
    static inline void mpc_ifma_split1(const uint64_t* x, uint64_t* dst)
    {
        uint64_t x0 = x[0] & MPC_IFMA_M51;
        uint64_t x1 = ((x[0] >> 51) | (x[1] << 13)) & MPC_IFMA_M51;
        uint64_t x2 = x[1] >> 38;
        dst[0] = x0;
        dst[1] = x1;
        dst[2] = x2;
        dst[3] = x0 + x1;
        dst[4] = x0 + x2;
        dst[5] = x1 + x2;
    }

    /* bp[6 (kk nb + jj) + t] = limb t of b[k0 + kk, j0 + jj] for b (K, n),
     * kk < kc, jj < nb. */
    static void mpc_ifma_pack_b(const uint64_t* b, ptrdiff_t n, ptrdiff_t k0, ptrdiff_t kc,
                                ptrdiff_t j0, ptrdiff_t nb, uint64_t* bp)
    {
        ptrdiff_t kk, jj;
        for (kk = 0; kk < kc; kk++)
            for (jj = 0; jj < nb; jj++)
                mpc_ifma_split1(b + 2 * ((k0 + kk) * n + j0 + jj),
                                bp + MPC_IFMA_LIMBS * (kk * nb + jj));
    }

    /* In place 8 x 8 transpose of 64-bit lanes: lane j of r[i] goes to lane i of r[j]. */
    static inline void mpc_ifma_transpose8(__m512i* r)
    {
        const __m512i pair_lo = _mm512_set_epi64(13, 12, 5, 4, 9, 8, 1, 0);
        const __m512i pair_hi = _mm512_set_epi64(15, 14, 7, 6, 11, 10, 3, 2);
        const __m512i half_lo = _mm512_set_epi64(11, 10, 9, 8, 3, 2, 1, 0);
        const __m512i half_hi = _mm512_set_epi64(15, 14, 13, 12, 7, 6, 5, 4);
        __m512i t[8], u[8];
        int q;
        /* t[2q] = r[2q][0] r[2q+1][0] r[2q][2] r[2q+1][2] ... (even lanes), t[2q+1]: odd lanes */
        for (q = 0; q < 4; q++) {
            t[2 * q] = _mm512_unpacklo_epi64(r[2 * q], r[2 * q + 1]);
            t[2 * q + 1] = _mm512_unpackhi_epi64(r[2 * q], r[2 * q + 1]);
        }
        /* u[4q] = r[4q..4q+3][0], then r[4q..4q+3][4]; u[4q+1]: lanes 1, 5; u[4q+2]: 2, 6; u[4q+3]: 3, 7 */
        for (q = 0; q < 2; q++) {
            u[4 * q] = _mm512_permutex2var_epi64(t[4 * q], pair_lo, t[4 * q + 2]);
            u[4 * q + 1] = _mm512_permutex2var_epi64(t[4 * q + 1], pair_lo, t[4 * q + 3]);
            u[4 * q + 2] = _mm512_permutex2var_epi64(t[4 * q], pair_hi, t[4 * q + 2]);
            u[4 * q + 3] = _mm512_permutex2var_epi64(t[4 * q + 1], pair_hi, t[4 * q + 3]);
        }
        for (q = 0; q < 4; q++) {
            r[q] = _mm512_permutex2var_epi64(u[q], half_lo, u[q + 4]);
            r[q + 4] = _mm512_permutex2var_epi64(u[q], half_hi, u[q + 4]);
        }
    }

    /* Strip of matmul: ap[48 kk + 8 t + r] = limb t of a[i0 + r, k0 + kk] for
     * a (m, K), r < lanes (<= 8), kk < kc; lanes past `lanes` are 0.  Eight
     * values of k at a time: 8 elements of each row are loaded, their low and
     * high words separated and transposed (8 x 8) to lanes over the rows; the
     * last kc mod 8 values of k are gathered. */
    static void mpc_ifma_pack_a_nn(const uint64_t* a, ptrdiff_t K, ptrdiff_t i0, int lanes,
                                   ptrdiff_t k0, ptrdiff_t kc, uint64_t* ap)
    {
        const __m512i even = _mm512_set_epi64(14, 12, 10, 8, 6, 4, 2, 0);
        const __m512i odd = _mm512_set_epi64(15, 13, 11, 9, 7, 5, 3, 1);
        const __m512i rows = _mm512_mullo_epi64(_mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0),
                                                _mm512_set1_epi64(2 * K));
        const __mmask8 mask = (__mmask8)((1u << lanes) - 1);
        const uint64_t* base = a + 2 * (i0 * K + k0);
        __m512i lo[8], hi[8], x[MPC_IFMA_LIMBS];
        ptrdiff_t kk = 0;
        int r, t, q;
        for (; kk + 8 <= kc; kk += 8) {
            for (r = 0; r < 8; r++) {
                if (r < lanes) {
                    const uint64_t* src = base + 2 * (r * K + kk);
                    __m512i v0 = _mm512_loadu_si512((const void*)src);
                    __m512i v1 = _mm512_loadu_si512((const void*)(src + 8));
                    lo[r] = _mm512_permutex2var_epi64(v0, even, v1);
                    hi[r] = _mm512_permutex2var_epi64(v0, odd, v1);
                } else {
                    lo[r] = hi[r] = _mm512_setzero_si512();
                }
            }
            mpc_ifma_transpose8(lo);
            mpc_ifma_transpose8(hi);
            for (q = 0; q < 8; q++) {
                mpc_ifma_split(lo[q], hi[q], x);
                for (t = 0; t < MPC_IFMA_LIMBS; t++)
                    _mm512_store_si512((void*)(ap + 48 * (kk + q) + 8 * t), x[t]);
            }
        }
        for (; kk < kc; kk++) {
            __m512i l = _mm512_mask_i64gather_epi64(_mm512_setzero_si512(), mask, rows,
                                                    (const void*)(base + 2 * kk), 8);
            __m512i h = _mm512_mask_i64gather_epi64(_mm512_setzero_si512(), mask, rows,
                                                    (const void*)(base + 2 * kk + 1), 8);
            mpc_ifma_split(l, h, x);
            for (t = 0; t < MPC_IFMA_LIMBS; t++)
                _mm512_store_si512((void*)(ap + 48 * kk + 8 * t), x[t]);
        }
    }

    /* acc[0..10] += the halves of the six limb products of x (vectors) and y
     * (scalars, broadcast). */
    static inline __attribute__((always_inline)) void
    mpc_ifma_mac(__m512i* acc, const __m512i* x, const uint64_t* y)
    {
        const __m512i y0 = _mm512_set1_epi64((long long)y[0]);
        const __m512i y1 = _mm512_set1_epi64((long long)y[1]);
        const __m512i y2 = _mm512_set1_epi64((long long)y[2]);
        const __m512i y01 = _mm512_set1_epi64((long long)y[3]);
        const __m512i y02 = _mm512_set1_epi64((long long)y[4]);
        const __m512i y12 = _mm512_set1_epi64((long long)y[5]);
        acc[0] = _mm512_madd52lo_epu64(acc[0], x[0], y0);
        acc[1] = _mm512_madd52hi_epu64(acc[1], x[0], y0);
        acc[2] = _mm512_madd52lo_epu64(acc[2], x[1], y1);
        acc[3] = _mm512_madd52hi_epu64(acc[3], x[1], y1);
        acc[4] = _mm512_madd52lo_epu64(acc[4], x[2], y2);  /* x2 y2 < 2^50: no high half */
        acc[5] = _mm512_madd52lo_epu64(acc[5], x[3], y01);
        acc[6] = _mm512_madd52hi_epu64(acc[6], x[3], y01);
        acc[7] = _mm512_madd52lo_epu64(acc[7], x[4], y02);
        acc[8] = _mm512_madd52hi_epu64(acc[8], x[4], y02);
        acc[9] = _mm512_madd52lo_epu64(acc[9], x[5], y12);
        acc[10] = _mm512_madd52hi_epu64(acc[10], x[5], y12);
    }

    /* The radix-2^51 digits (d0 < 2^51, d1 < 2^53, d2 < 2^14) of L + H 2^52
     * = L + 2 H W, for the sums L, H of the low and high halves of a product. */
    static inline void mpc_ifma_digits(__m512i L, __m512i H, __m512i* d)
    {
        const __m512i m51 = _mm512_set1_epi64((long long)MPC_IFMA_M51);
        d[0] = _mm512_and_si512(L, m51);
        d[1] = _mm512_add_epi64(_mm512_srli_epi64(L, 51), _mm512_slli_epi64(_mm512_and_si512(H, m51), 1));
        d[2] = _mm512_slli_epi64(_mm512_srli_epi64(H, 51), 1);
    }

    /* mem (7 columns of 8 lanes, radix W = 2^51) += the exact sum held by the
     * 11 accumulators, then carries normalised.
     *
     * With the digits D = d0 + d1 W + d2 W^2 of each limb product's sum and the
     * Karatsuba coefficients (see the top of the file), column e of the block's
     * sum is a signed combination of at most 10 digits below 2^53: |col| < 2^57.
     * mem's columns 0..5 are in [0, 2^51) before the call, so each sum fits a
     * signed 64-bit lane, and the arithmetic carries are below 2^7 in size.
     * After the call columns 0..5 are in [0, 2^51) again, and column 6 is
     * floor(total / W^6) >= 0 (the total, a sum of products, is >= 0). */
    static inline void mpc_ifma_spill(const __m512i* acc, uint64_t* mem)
    {
        const __m512i m51 = _mm512_set1_epi64((long long)MPC_IFMA_M51);
        __m512i p0[3], p1[3], q01[3], q02[3], q12[3], p2_0, p2_1, c[7];
        int e;
        mpc_ifma_digits(acc[0], acc[1], p0);
        mpc_ifma_digits(acc[2], acc[3], p1);
        mpc_ifma_digits(acc[5], acc[6], q01);
        mpc_ifma_digits(acc[7], acc[8], q02);
        mpc_ifma_digits(acc[9], acc[10], q12);
        p2_0 = _mm512_and_si512(acc[4], m51);
        p2_1 = _mm512_srli_epi64(acc[4], 51);
    #define ADD_ _mm512_add_epi64
    #define SUB_ _mm512_sub_epi64
        /* P0 (1 - W - W^2) */
        c[0] = p0[0];
        c[1] = SUB_(p0[1], p0[0]);
        c[2] = SUB_(SUB_(p0[2], p0[1]), p0[0]);
        c[3] = SUB_(_mm512_setzero_si512(), ADD_(p0[2], p0[1]));
        c[4] = SUB_(_mm512_setzero_si512(), p0[2]);
        /* P1 (-W + W^2 - W^3) */
        c[1] = SUB_(c[1], p1[0]);
        c[2] = ADD_(c[2], SUB_(p1[0], p1[1]));
        c[3] = ADD_(c[3], SUB_(p1[1], ADD_(p1[0], p1[2])));
        c[4] = ADD_(c[4], SUB_(p1[2], p1[1]));
        c[5] = SUB_(_mm512_setzero_si512(), p1[2]);
        /* P2 (-W^2 - W^3 + W^4), digits p2_0, p2_1 */
        c[2] = SUB_(c[2], p2_0);
        c[3] = SUB_(c[3], ADD_(p2_0, p2_1));
        c[4] = ADD_(c[4], SUB_(p2_0, p2_1));
        c[5] = ADD_(c[5], p2_1);
        /* Q01 W, Q02 W^2, Q12 W^3 */
        c[1] = ADD_(c[1], q01[0]);
        c[2] = ADD_(c[2], ADD_(q01[1], q02[0]));
        c[3] = ADD_(c[3], ADD_(ADD_(q01[2], q02[1]), q12[0]));
        c[4] = ADD_(c[4], ADD_(q02[2], q12[1]));
        c[5] = ADD_(c[5], q12[2]);
        c[6] = _mm512_setzero_si512();
        for (e = 0; e < 7; e++)
            c[e] = ADD_(c[e], _mm512_load_si512((const void*)(mem + 8 * e)));
        for (e = 0; e < 6; e++) {
            c[e + 1] = ADD_(c[e + 1], _mm512_srai_epi64(c[e], 51));
            _mm512_store_si512((void*)(mem + 8 * e), _mm512_and_si512(c[e], m51));
        }
        _mm512_store_si512((void*)(mem + 48), c[6]);
    #undef ADD_
    #undef SUB_
    }

    /* Where mpc_ifma_block takes the strip of A from. */
    enum {
        MPC_IFMA_A_PACKED = 0,  /* ap, 48 words per kk (mpc_ifma_pack_a_nn) */
        MPC_IFMA_A_RAW = 1,     /* 8 elements at araw + astride kk, split in registers */
        MPC_IFMA_A_RAW_KEEP = 2 /* the same, and the limbs stored to ap for the next columns */
    };
    /* What mpc_ifma_block prefetches of a for the next strip: 2 cache lines
     * (16 words) per kk, from word pf.offset of pf.base on, never past word
     * pf.limit (the end of a); pf.offset < 0 for none. */
    enum {
        MPC_IFMA_PF_ROWS = 1,   /* 8 rows pf.stride words apart, 2 kc words each (matmul) */
        MPC_IFMA_PF_COLUMN = 2  /* 16 words per row, rows pf.stride words apart (matmul_tn) */
    };
    typedef struct {
        const uint64_t* base;
        ptrdiff_t limit, offset, stride;
    } mpc_ifma_prefetch;

    /* mem[c] += sum_{kk < kc} A[kk] * B[kk, c] for C (1 or 2) output columns.
     * The strip of A comes from ap or from rows of a (src, see above; the raw
     * loads mask off the lanes >= `lanes`).  bp is the packed B at the first
     * column (bstride words per kk), mem the columns' memory accumulators
     * (MPC_IFMA_ACC_WORDS each).  kc <= MPC_IFMA_KC_MAX (the overflow budget).
     * pf: the next strip's data, loaded into the cache while the IFMA units are
     * busy (a strip's loads would otherwise wait for memory). */
    static inline __attribute__((always_inline)) void
    mpc_ifma_block(uint64_t* ap, const uint64_t* araw, ptrdiff_t astride, int lanes,
                   const int src, const uint64_t* bp, ptrdiff_t bstride, ptrdiff_t kc,
                   const int C, uint64_t* mem, mpc_ifma_prefetch pf, const int pf_kind)
    {
        const __m512i even = _mm512_set_epi64(14, 12, 10, 8, 6, 4, 2, 0);
        const __m512i odd = _mm512_set_epi64(15, 13, 11, 9, 7, 5, 3, 1);
        const __mmask8 m0 = (__mmask8)(lanes >= 4 ? 0xFF : (1u << (2 * lanes)) - 1);
        const __mmask8 m1 = (__mmask8)(lanes <= 4 ? 0 : lanes == 8 ? 0xFF
                                                      : (1u << (2 * (lanes - 4))) - 1);
        __m512i acc[2][11];
        __m512i x[MPC_IFMA_LIMBS];
        ptrdiff_t kk;
        int c, t;
        for (c = 0; c < C; c++)
            for (t = 0; t < 11; t++)
                acc[c][t] = _mm512_setzero_si512();
        /* Overflow budget: each pass adds one term below 2^52 to every
           accumulator lane, and kc <= MPC_IFMA_KC_MAX = 2048 keeps them below
           2^63 (4096 would still fit); mpc_ifma_spill empties them. */
        for (kk = 0; kk < kc; kk++) {
            const uint64_t* y = bp + kk * bstride;
            if (pf.offset >= 0) {
                ptrdiff_t q = pf.offset + (pf_kind == MPC_IFMA_PF_ROWS
                                           ? (kk & 7) * pf.stride + 16 * (kk >> 3)
                                           : kk * pf.stride);
                if (q + 16 <= pf.limit) {
                    _mm_prefetch((const char*)(pf.base + q), _MM_HINT_T0);
                    _mm_prefetch((const char*)(pf.base + q + 8), _MM_HINT_T0);
                }
            }
            if (src == MPC_IFMA_A_PACKED) {
                for (t = 0; t < MPC_IFMA_LIMBS; t++)
                    x[t] = _mm512_load_si512((const void*)(ap + 48 * kk + 8 * t));
            } else {
                const uint64_t* row = araw + kk * astride;
                __m512i v0, v1;
                if (lanes == 8) {
                    v0 = _mm512_loadu_si512((const void*)row);
                    v1 = _mm512_loadu_si512((const void*)(row + 8));
                } else {  /* masked loads never touch the words past the strip */
                    v0 = _mm512_maskz_loadu_epi64(m0, (const void*)row);
                    v1 = _mm512_maskz_loadu_epi64(m1, (const void*)(row + 8));
                }
                mpc_ifma_split(_mm512_permutex2var_epi64(v0, even, v1),
                               _mm512_permutex2var_epi64(v0, odd, v1), x);
                if (src == MPC_IFMA_A_RAW_KEEP)
                    for (t = 0; t < MPC_IFMA_LIMBS; t++)
                        _mm512_store_si512((void*)(ap + 48 * kk + 8 * t), x[t]);
            }
            for (c = 0; c < C; c++)
                mpc_ifma_mac(acc[c], x, y + MPC_IFMA_LIMBS * c);
        }
        for (c = 0; c < C; c++)
            mpc_ifma_spill(acc[c], mem + MPC_IFMA_ACC_WORDS * c);
    }

    /* All n output columns of one strip of matmul over kc values of k, from
     * the packed strip ap; the first block prefetches pf. */
    static void mpc_ifma_strip_nn(uint64_t* ap, const uint64_t* bp, ptrdiff_t n, ptrdiff_t kc,
                                  uint64_t* mem, mpc_ifma_prefetch pf)
    {
        mpc_ifma_prefetch none = pf;
        ptrdiff_t j;
        none.offset = -1;
        for (j = 0; j + 2 <= n; j += 2)
            mpc_ifma_block(ap, NULL, 0, 8, MPC_IFMA_A_PACKED, bp + MPC_IFMA_LIMBS * j,
                           MPC_IFMA_LIMBS * n, kc, 2, mem + MPC_IFMA_ACC_WORDS * j,
                           j == 0 ? pf : none, MPC_IFMA_PF_ROWS);
        if (j < n)
            mpc_ifma_block(ap, NULL, 0, 8, MPC_IFMA_A_PACKED, bp + MPC_IFMA_LIMBS * j,
                           MPC_IFMA_LIMBS * n, kc, 1, mem + MPC_IFMA_ACC_WORDS * j,
                           j == 0 ? pf : none, MPC_IFMA_PF_ROWS);
    }

    /* All n output columns of one strip of matmul_tn over kc values of k: the
     * strip is read from a (araw, row stride astride, `lanes` valid lanes) by
     * the first block, which prefetches pf and keeps the limbs in ap for the
     * other blocks. */
    static inline __attribute__((always_inline)) void
    mpc_ifma_strip_tn_lanes(uint64_t* ap, const uint64_t* araw, ptrdiff_t astride, int lanes,
                            const uint64_t* bp, ptrdiff_t n, ptrdiff_t kc, uint64_t* mem,
                            mpc_ifma_prefetch pf)
    {
        const ptrdiff_t bstride = MPC_IFMA_LIMBS * n;
        mpc_ifma_prefetch none = pf;
        ptrdiff_t j;
        none.offset = -1;
        if (n == 1) {
            mpc_ifma_block(ap, araw, astride, lanes, MPC_IFMA_A_RAW, bp, bstride, kc, 1, mem,
                           pf, MPC_IFMA_PF_COLUMN);
            return;
        }
        if (n == 2) {
            mpc_ifma_block(ap, araw, astride, lanes, MPC_IFMA_A_RAW, bp, bstride, kc, 2, mem,
                           pf, MPC_IFMA_PF_COLUMN);
            return;
        }
        mpc_ifma_block(ap, araw, astride, lanes, MPC_IFMA_A_RAW_KEEP, bp, bstride, kc, 2, mem,
                       pf, MPC_IFMA_PF_COLUMN);
        for (j = 2; j + 2 <= n; j += 2)
            mpc_ifma_block(ap, NULL, 0, 8, MPC_IFMA_A_PACKED, bp + MPC_IFMA_LIMBS * j, bstride, kc,
                           2, mem + MPC_IFMA_ACC_WORDS * j, none, MPC_IFMA_PF_COLUMN);
        if (j < n)
            mpc_ifma_block(ap, NULL, 0, 8, MPC_IFMA_A_PACKED, bp + MPC_IFMA_LIMBS * j, bstride, kc,
                           1, mem + MPC_IFMA_ACC_WORDS * j, none, MPC_IFMA_PF_COLUMN);
    }

    static void mpc_ifma_strip_tn(uint64_t* ap, const uint64_t* araw, ptrdiff_t astride, int lanes,
                                  const uint64_t* bp, ptrdiff_t n, ptrdiff_t kc, uint64_t* mem,
                                  mpc_ifma_prefetch pf)
    {
        if (lanes == 8)  /* the common case, with unmasked loads */
            mpc_ifma_strip_tn_lanes(ap, araw, astride, 8, bp, n, kc, mem, pf);
        else
            mpc_ifma_strip_tn_lanes(ap, araw, astride, lanes, bp, n, kc, mem, pf);
    }

    /* x mod p for x < 2^128. */
    static inline mpc_ifma_u128 mpc_ifma_reduce(mpc_ifma_u128 x)
    {
        const mpc_ifma_u128 p = (((mpc_ifma_u128)1) << 127) - 1;
        x = (x & p) + (x >> 127);
        return x >= p ? x - p : x;
    }

    /* out[0..1] = the canonical residue of X = sum_e c_e W^e (W = 2^51), for
     * any c_0..c_6 < 2^64.  Mod p, W^3 = 2^26, W^4 = 2^77, W^5 = 2, W^6 = 2^52;
     * c_2 W^2 and c_4 W^4 are folded at 2^127 = 1, the other terms are small. */
    static inline void mpc_ifma_finish_digits(const uint64_t* c, uint64_t* out)
    {
        /* < 2^64 + 2^115 + 2^90 + 2^65 + 2^116 < 2^117 */
        mpc_ifma_u128 s = (mpc_ifma_u128)c[0] + ((mpc_ifma_u128)c[1] << 51)
                          + ((mpc_ifma_u128)c[3] << 26) + ((mpc_ifma_u128)c[5] << 1)
                          + ((mpc_ifma_u128)c[6] << 52);
        /* c_2 2^102 = (c_2 mod 2^25) 2^102 + (c_2 >> 25) 2^127: < 2^127 - 2^102 + 2^39 */
        mpc_ifma_u128 t2 = (((mpc_ifma_u128)(c[2] & 0x1FFFFFFULL)) << 102) + (c[2] >> 25);
        /* c_4 2^77 = (c_4 mod 2^50) 2^77 + (c_4 >> 50) 2^127: < 2^127 - 2^77 + 2^14 */
        mpc_ifma_u128 t4 = (((mpc_ifma_u128)(c[4] & 0x3FFFFFFFFFFFFULL)) << 77) + (c[4] >> 50);
        mpc_ifma_u128 v = mpc_ifma_reduce(s + t2);  /* < 2^117 + 2^127 */
        v = mpc_ifma_reduce(v + t4);                /* < 2^127 + 2^127 */
        out[0] = (uint64_t)v;
        out[1] = (uint64_t)(v >> 64);
    }

    /* The canonical residue of lane r of a memory accumulator. */
    static inline void mpc_ifma_finish(const uint64_t* mem, int r, uint64_t* out)
    {
        uint64_t c[7];
        int e;
        for (e = 0; e < 7; e++)
            c[e] = mem[8 * e + r];
        mpc_ifma_finish_digits(c, out);
    }

    /* Columns of b per pass: matmul packs all of b (48 bytes per element) unless
     * that exceeds MPC_IFMA_NN_B_WORDS (16 MiB; then at least 2 columns per
     * pass, each pass packing the strips of a again); matmul_tn reads a once per
     * MPC_IFMA_TN_COLUMNS columns of b. */
    #ifndef MPC_IFMA_NN_B_WORDS  /* (-D overrides: tests of the blocking) */
    #define MPC_IFMA_NN_B_WORDS (2 * 1024 * 1024)
    #endif
    /* Values of k per packed strip of matmul (512: 192 KiB). */
    #ifndef MPC_IFMA_NN_KC
    #define MPC_IFMA_NN_KC 512
    #endif
    _Static_assert(MPC_IFMA_NN_KC <= MPC_IFMA_KC_MAX, "matmul's blocks exceed the overflow budget");
    #ifndef MPC_IFMA_TN_COLUMNS  /* (-D overrides: tests of the blocking) */
    #define MPC_IFMA_TN_COLUMNS 128
    #endif

    static inline ptrdiff_t mpc_ifma_min(ptrdiff_t x, ptrdiff_t y) { return x < y ? x : y; }
    static inline ptrdiff_t mpc_ifma_max(ptrdiff_t x, ptrdiff_t y) { return x > y ? x : y; }

    /* out (m, n) = a (m, K) @ b (K, n), all C-contiguous limb pairs, m, n >= 1.
     * For each block of columns of b (usually all n): pack them whole (48 bytes
     * per element), then for each strip of 8 rows of a, pack 512 columns of the
     * strip at a time, run every column of b over them and reduce the strip's
     * outputs.  Returns 0, or -1 if out of memory. */
    static int mpc_ifma_matmul(const uint64_t* a, const uint64_t* b, uint64_t* out,
                               ptrdiff_t m, ptrdiff_t K, ptrdiff_t n)
    {
        const ptrdiff_t kc_max = MPC_IFMA_NN_KC;
        const ptrdiff_t nb_max = mpc_ifma_min(n, mpc_ifma_max(2, MPC_IFMA_NN_B_WORDS
                                                                 / (MPC_IFMA_LIMBS * mpc_ifma_max(K, 1))));
        uint64_t* bp = mpc_ifma_alloc((size_t)(MPC_IFMA_LIMBS * K * nb_max));
        uint64_t* ap = mpc_ifma_alloc((size_t)(48 * kc_max));
        uint64_t* mem = mpc_ifma_alloc((size_t)(MPC_IFMA_ACC_WORDS * nb_max));
        ptrdiff_t i0, k0, j0, j;
        int r, lanes;
        if (bp == NULL || ap == NULL || mem == NULL) {
            free(bp); free(ap); free(mem);
            return -1;
        }
        for (j0 = 0; j0 < n; j0 += nb_max) {
            const ptrdiff_t nb = mpc_ifma_min(nb_max, n - j0);
            mpc_ifma_pack_b(b, n, 0, K, j0, nb, bp);
            for (i0 = 0; i0 < m; i0 += 8) {
                lanes = (int)mpc_ifma_min(8, m - i0);
                memset(mem, 0, sizeof(uint64_t) * MPC_IFMA_ACC_WORDS * nb);
                for (k0 = 0; k0 < K; k0 += kc_max) {
                    const ptrdiff_t kc = mpc_ifma_min(kc_max, K - k0);
                    /* the block packed next: the same rows further right, or the next strip */
                    mpc_ifma_prefetch pf = {a, 2 * m * K, -1, 2 * K};
                    if (k0 + kc < K)
                        pf.offset = 2 * (i0 * K + k0 + kc);
                    else if (i0 + 8 < m)
                        pf.offset = 2 * (i0 + 8) * K;
                    mpc_ifma_pack_a_nn(a, K, i0, lanes, k0, kc, ap);
                    mpc_ifma_strip_nn(ap, bp + MPC_IFMA_LIMBS * k0 * nb, nb, kc, mem, pf);
                }
                for (r = 0; r < lanes; r++)
                    for (j = 0; j < nb; j++)
                        mpc_ifma_finish(mem + MPC_IFMA_ACC_WORDS * j, r,
                                        out + 2 * ((i0 + r) * n + j0 + j));
            }
        }
        free(bp); free(ap); free(mem);
        return 0;
    }

    /* out (m, n) = a.T @ b for a (K, m), b (K, n), all C-contiguous limb pairs,
     * m, n >= 1.  Keeps the memory accumulators of all outputs (56 bytes per
     * output; the wrapper in mpc/field.py bounds m n) and streams a and b once
     * per block of up to MPC_IFMA_TN_COLUMNS columns of b (usually all n): a
     * block of rows of b is packed (about MPC_IFMA_B_TILE_WORDS words), then
     * each strip of 8 columns of a runs over it.  Returns 0, or -1 if out of memory. */
    static int mpc_ifma_matmul_tn(const uint64_t* a, const uint64_t* b, uint64_t* out,
                                  ptrdiff_t K, ptrdiff_t m, ptrdiff_t n)
    {
        const ptrdiff_t strips = (m + 7) / 8;
        const ptrdiff_t nb_max = mpc_ifma_min(n, MPC_IFMA_TN_COLUMNS);
        /* values of k per block: the packed block of b about MPC_IFMA_B_TILE_WORDS */
        const ptrdiff_t kc_max = mpc_ifma_max(64, mpc_ifma_min(
            MPC_IFMA_KC_MAX, MPC_IFMA_B_TILE_WORDS / (MPC_IFMA_LIMBS * nb_max)));
        uint64_t* bp = mpc_ifma_alloc((size_t)(MPC_IFMA_LIMBS * kc_max * nb_max));
        uint64_t* ap = mpc_ifma_alloc((size_t)(48 * kc_max));
        uint64_t* mem = mpc_ifma_alloc((size_t)(MPC_IFMA_ACC_WORDS * n * strips));
        ptrdiff_t s, k0, j0, j;
        int r, lanes;
        if (bp == NULL || ap == NULL || mem == NULL) {
            free(bp); free(ap); free(mem);
            return -1;
        }
        memset(mem, 0, sizeof(uint64_t) * MPC_IFMA_ACC_WORDS * n * strips);
        for (j0 = 0; j0 < n; j0 += nb_max) {
            const ptrdiff_t nb = mpc_ifma_min(nb_max, n - j0);
            for (k0 = 0; k0 < K; k0 += kc_max) {
                const ptrdiff_t kc = mpc_ifma_min(kc_max, K - k0);
                mpc_ifma_pack_b(b, n, k0, kc, j0, nb, bp);
                for (s = 0; s < strips; s++) {
                    /* the strip read next: 8 columns right, or the first of the next block */
                    mpc_ifma_prefetch pf = {a, 2 * K * m, -1, 2 * m};
                    if (s + 1 < strips)
                        pf.offset = 2 * (k0 * m + 8 * (s + 1));
                    else if (k0 + kc < K)
                        pf.offset = 2 * (k0 + kc) * m;
                    lanes = (int)mpc_ifma_min(8, m - 8 * s);
                    mpc_ifma_strip_tn(ap, a + 2 * (k0 * m + 8 * s), 2 * m, lanes, bp, nb, kc,
                                      mem + MPC_IFMA_ACC_WORDS * (n * s + j0), pf);
                }
            }
        }
        for (s = 0; s < strips; s++) {
            lanes = (int)mpc_ifma_min(8, m - 8 * s);
            for (r = 0; r < lanes; r++)
                for (j = 0; j < n; j++)
                    mpc_ifma_finish(mem + MPC_IFMA_ACC_WORDS * (n * s + j), r,
                                    out + 2 * ((8 * s + r) * n + j));
        }
        free(bp); free(ap); free(mem);
        return 0;
    }

    #else  /* not compiled for IFMA: never called, mpc_ifma_usable() is 0 */

    static int mpc_ifma_matmul(const uint64_t* a, const uint64_t* b, uint64_t* out,
                               ptrdiff_t m, ptrdiff_t K, ptrdiff_t n)
    { (void)a; (void)b; (void)out; (void)m; (void)K; (void)n; return -2; }

    static int mpc_ifma_matmul_tn(const uint64_t* a, const uint64_t* b, uint64_t* out,
                                  ptrdiff_t K, ptrdiff_t m, ptrdiff_t n)
    { (void)a; (void)b; (void)out; (void)K; (void)m; (void)n; return -2; }

    #endif
    #endif
    """
    int ifma_usable "mpc_ifma_usable" () noexcept nogil
    int ifma_matmul "mpc_ifma_matmul" (const uint64_t* a, const uint64_t* b, uint64_t* out,
                                       Py_ssize_t m, Py_ssize_t K, Py_ssize_t n) noexcept nogil
    int ifma_matmul_tn "mpc_ifma_matmul_tn" (const uint64_t* a, const uint64_t* b, uint64_t* out,
                                             Py_ssize_t K, Py_ssize_t m, Py_ssize_t n) noexcept nogil
