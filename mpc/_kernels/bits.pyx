# Bit-plane transposition for XOR-shared bits.
#
# Boolean circuits (comparison, bit decomposition) run on "planes": plane j
# holds bit j of every element, packed 64 elements per uint64 word, so one
# numpy AND/XOR on a plane evaluates a gate for 64 elements at once.

from libc.stdint cimport uint64_t


def to_planes(const uint64_t[::1] values, int n_bits, uint64_t[:, ::1] out):
    """out[j, e // 64] bit (e % 64) = bit j of values[e], for j < n_bits.

    out has shape (n_bits, ceil(n / 64)) and must be zeroed by the caller."""
    cdef:
        Py_ssize_t e, n = values.shape[0]
        int j
        uint64_t v, bit
    with nogil:
        for e in range(n):
            v = values[e]
            bit = (<uint64_t>1) << (e & 63)
            for j in range(n_bits):
                if (v >> j) & 1:
                    out[j, e >> 6] |= bit


def from_planes(const uint64_t[:, ::1] planes, uint64_t[::1] out):
    """Inverse of to_planes: out[e] = sum_j bit(planes[j], e) 2^j."""
    cdef:
        Py_ssize_t e, n = out.shape[0]
        int j, n_bits = planes.shape[0]
        uint64_t v
    with nogil:
        for e in range(n):
            v = 0
            for j in range(n_bits):
                v |= ((planes[j, e >> 6] >> (e & 63)) & 1) << j
            out[e] = v
