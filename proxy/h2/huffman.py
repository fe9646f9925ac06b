"""HPACK's Huffman code (RFC 7541 section 5.2 and Appendix B): encoding, and a table-driven decoder.

Contract:

- ``encode(data)`` returns the Huffman coding of ``data``, its last byte padded with the most
  significant bits of EOS (ones), as RFC 7541 section 5.2 requires; ``encoded_length(data)`` is its
  length in bytes without building it (the encoder uses the coding only when it is shorter).
- ``decode(data)`` returns the bytes ``data`` codes, and raises ``hpack``'s ``HPACKDecodingError``
  when the string is invalid: it contains EOS, or it ends with padding longer than 7 bits, or with
  padding that is not a prefix of EOS (not all ones) -- the three errors of section 5.2.

Theory of operation of the decoder: the code is a binary tree of 257 leaves, hence 256 inner nodes,
numbered at import. A decoder state is an inner node (0, the root, between two symbols). The
decoder reads one byte at a time: ``_DECODE[state << 8 | byte]``, built at import (by walking the
tree from every state for every nibble, then joining two nibbles per byte), says in one int which
state follows, which symbols (zero, one or two: the shortest code has 5 bits) the byte completed,
whether the byte reached EOS (an error), and whether the state reached is a valid end of string (the
root, or a node on the all-ones path at most 7 bits deep: the only legal padding). One list lookup
and a few shifts per byte, instead of a walk per bit.
"""

from __future__ import annotations

from typing import Final

from hpack.exceptions import HPACKDecodingError
from mypy_extensions import i64

# RFC 7541 Appendix B: (code, length in bits) of symbols 0..255 and of EOS (256), in order.
CODES: Final[tuple[tuple[int, int], ...]] = (
    (0x1FF8, 13), (0x7FFFD8, 23), (0xFFFFFE2, 28), (0xFFFFFE3, 28), (0xFFFFFE4, 28), (0xFFFFFE5, 28),
    (0xFFFFFE6, 28), (0xFFFFFE7, 28), (0xFFFFFE8, 28), (0xFFFFEA, 24), (0x3FFFFFFC, 30), (0xFFFFFE9, 28),
    (0xFFFFFEA, 28), (0x3FFFFFFD, 30), (0xFFFFFEB, 28), (0xFFFFFEC, 28), (0xFFFFFED, 28), (0xFFFFFEE, 28),
    (0xFFFFFEF, 28), (0xFFFFFF0, 28), (0xFFFFFF1, 28), (0xFFFFFF2, 28), (0x3FFFFFFE, 30), (0xFFFFFF3, 28),
    (0xFFFFFF4, 28), (0xFFFFFF5, 28), (0xFFFFFF6, 28), (0xFFFFFF7, 28), (0xFFFFFF8, 28), (0xFFFFFF9, 28),
    (0xFFFFFFA, 28), (0xFFFFFFB, 28), (0x14, 6), (0x3F8, 10), (0x3F9, 10), (0xFFA, 12),
    (0x1FF9, 13), (0x15, 6), (0xF8, 8), (0x7FA, 11), (0x3FA, 10), (0x3FB, 10),
    (0xF9, 8), (0x7FB, 11), (0xFA, 8), (0x16, 6), (0x17, 6), (0x18, 6),
    (0x0, 5), (0x1, 5), (0x2, 5), (0x19, 6), (0x1A, 6), (0x1B, 6),
    (0x1C, 6), (0x1D, 6), (0x1E, 6), (0x1F, 6), (0x5C, 7), (0xFB, 8),
    (0x7FFC, 15), (0x20, 6), (0xFFB, 12), (0x3FC, 10), (0x1FFA, 13), (0x21, 6),
    (0x5D, 7), (0x5E, 7), (0x5F, 7), (0x60, 7), (0x61, 7), (0x62, 7),
    (0x63, 7), (0x64, 7), (0x65, 7), (0x66, 7), (0x67, 7), (0x68, 7),
    (0x69, 7), (0x6A, 7), (0x6B, 7), (0x6C, 7), (0x6D, 7), (0x6E, 7),
    (0x6F, 7), (0x70, 7), (0x71, 7), (0x72, 7), (0xFC, 8), (0x73, 7),
    (0xFD, 8), (0x1FFB, 13), (0x7FFF0, 19), (0x1FFC, 13), (0x3FFC, 14), (0x22, 6),
    (0x7FFD, 15), (0x3, 5), (0x23, 6), (0x4, 5), (0x24, 6), (0x5, 5),
    (0x25, 6), (0x26, 6), (0x27, 6), (0x6, 5), (0x74, 7), (0x75, 7),
    (0x28, 6), (0x29, 6), (0x2A, 6), (0x7, 5), (0x2B, 6), (0x76, 7),
    (0x2C, 6), (0x8, 5), (0x9, 5), (0x2D, 6), (0x77, 7), (0x78, 7),
    (0x79, 7), (0x7A, 7), (0x7B, 7), (0x7FFE, 15), (0x7FC, 11), (0x3FFD, 14),
    (0x1FFD, 13), (0xFFFFFFC, 28), (0xFFFE6, 20), (0x3FFFD2, 22), (0xFFFE7, 20), (0xFFFE8, 20),
    (0x3FFFD3, 22), (0x3FFFD4, 22), (0x3FFFD5, 22), (0x7FFFD9, 23), (0x3FFFD6, 22), (0x7FFFDA, 23),
    (0x7FFFDB, 23), (0x7FFFDC, 23), (0x7FFFDD, 23), (0x7FFFDE, 23), (0xFFFFEB, 24), (0x7FFFDF, 23),
    (0xFFFFEC, 24), (0xFFFFED, 24), (0x3FFFD7, 22), (0x7FFFE0, 23), (0xFFFFEE, 24), (0x7FFFE1, 23),
    (0x7FFFE2, 23), (0x7FFFE3, 23), (0x7FFFE4, 23), (0x1FFFDC, 21), (0x3FFFD8, 22), (0x7FFFE5, 23),
    (0x3FFFD9, 22), (0x7FFFE6, 23), (0x7FFFE7, 23), (0xFFFFEF, 24), (0x3FFFDA, 22), (0x1FFFDD, 21),
    (0xFFFE9, 20), (0x3FFFDB, 22), (0x3FFFDC, 22), (0x7FFFE8, 23), (0x7FFFE9, 23), (0x1FFFDE, 21),
    (0x7FFFEA, 23), (0x3FFFDD, 22), (0x3FFFDE, 22), (0xFFFFF0, 24), (0x1FFFDF, 21), (0x3FFFDF, 22),
    (0x7FFFEB, 23), (0x7FFFEC, 23), (0x1FFFE0, 21), (0x1FFFE1, 21), (0x3FFFE0, 22), (0x1FFFE2, 21),
    (0x7FFFED, 23), (0x3FFFE1, 22), (0x7FFFEE, 23), (0x7FFFEF, 23), (0xFFFEA, 20), (0x3FFFE2, 22),
    (0x3FFFE3, 22), (0x3FFFE4, 22), (0x7FFFF0, 23), (0x3FFFE5, 22), (0x3FFFE6, 22), (0x7FFFF1, 23),
    (0x3FFFFE0, 26), (0x3FFFFE1, 26), (0xFFFEB, 20), (0x7FFF1, 19), (0x3FFFE7, 22), (0x7FFFF2, 23),
    (0x3FFFE8, 22), (0x1FFFFEC, 25), (0x3FFFFE2, 26), (0x3FFFFE3, 26), (0x3FFFFE4, 26), (0x7FFFFDE, 27),
    (0x7FFFFDF, 27), (0x3FFFFE5, 26), (0xFFFFF1, 24), (0x1FFFFED, 25), (0x7FFF2, 19), (0x1FFFE3, 21),
    (0x3FFFFE6, 26), (0x7FFFFE0, 27), (0x7FFFFE1, 27), (0x3FFFFE7, 26), (0x7FFFFE2, 27), (0xFFFFF2, 24),
    (0x1FFFE4, 21), (0x1FFFE5, 21), (0x3FFFFE8, 26), (0x3FFFFE9, 26), (0xFFFFFFD, 28), (0x7FFFFE3, 27),
    (0x7FFFFE4, 27), (0x7FFFFE5, 27), (0xFFFEC, 20), (0xFFFFF3, 24), (0xFFFED, 20), (0x1FFFE6, 21),
    (0x3FFFE9, 22), (0x1FFFE7, 21), (0x1FFFE8, 21), (0x7FFFF3, 23), (0x3FFFEA, 22), (0x3FFFEB, 22),
    (0x1FFFFEE, 25), (0x1FFFFEF, 25), (0xFFFFF4, 24), (0xFFFFF5, 24), (0x3FFFFEA, 26), (0x7FFFF4, 23),
    (0x3FFFFEB, 26), (0x7FFFFE6, 27), (0x3FFFFEC, 26), (0x3FFFFED, 26), (0x7FFFFE7, 27), (0x7FFFFE8, 27),
    (0x7FFFFE9, 27), (0x7FFFFEA, 27), (0x7FFFFEB, 27), (0xFFFFFFE, 28), (0x7FFFFEC, 27), (0x7FFFFED, 27),
    (0x7FFFFEE, 27), (0x7FFFFEF, 27), (0x7FFFFF0, 27), (0x3FFFFEE, 26), (0x3FFFFFFF, 30),
)  # fmt: skip

EOS: Final = 256
_CODE: Final[list[int]] = [code for code, _ in CODES[:256]]
_BITS: Final[list[int]] = [bits for _, bits in CODES[:256]]

# An entry of _DECODE, packed in one int (bits 0-7 the next state, 8-9 how many symbols, then flags
# and the symbols themselves).
_NEXT_MASK: Final = 0xFF
_COUNT_SHIFT: Final = 8
_FAIL: Final = 1 << 10  # the byte completed EOS
_ACCEPT: Final = 1 << 11  # the state reached may end a string (padding of at most 7 one bits)
_SYM1_SHIFT: Final = 12
_SYM2_SHIFT: Final = 20


def _build_tree() -> tuple[list[int], list[int]]:
    """The code tree as two lists (child 0 and child 1 of each inner node): a child ``>= 0`` is an
    inner node, a child ``< 0`` is the leaf of symbol ``-child - 1``."""
    zero: list[int] = [0]
    one: list[int] = [0]
    for sym, (code, bits) in enumerate(CODES):
        node = 0
        for shift in range(bits - 1, 0, -1):
            bit = (code >> shift) & 1
            child = one[node] if bit else zero[node]
            if child == 0:  # no inner node there yet (the root is never anyone's child)
                zero.append(0)
                one.append(0)
                child = len(zero) - 1
                if bit:
                    one[node] = child
                else:
                    zero[node] = child
            node = child
        if code & 1:
            one[node] = -sym - 1
        else:
            zero[node] = -sym - 1
    return zero, one


def _build_decode() -> list[int]:
    zero, one = _build_tree()
    nstates = len(zero)
    if nstates != 256:
        raise AssertionError(f"the Huffman tree has {nstates} inner nodes, not 256")
    # the valid ends: the root and the all-ones path down to 7 bits deep
    accepting = [False] * nstates
    accepting[0] = True
    node = 0
    for _ in range(7):
        node = one[node]
        accepting[node] = True
    # First each state's walk over 4 bits (a nibble completes at most one symbol: codes have 5 bits
    # or more), then each byte as two nibbles: 4096 walks instead of 65536.
    nib_next = [0] * (nstates * 16)
    nib_sym = [-1] * (nstates * 16)  # the symbol completed, -1 none, EOS: an error
    for state in range(nstates):
        for nib in range(16):
            node = state
            sym = -1
            for shift in (3, 2, 1, 0):
                child = one[node] if (nib >> shift) & 1 else zero[node]
                if child < 0:
                    sym = -child - 1
                    node = 0
                    if sym == EOS:
                        break
                else:
                    node = child
            nib_next[state * 16 + nib] = node
            nib_sym[state * 16 + nib] = sym
    table = [0] * (nstates * 256)
    for state in range(nstates):
        for byte in range(256):
            first = state * 16 + (byte >> 4)
            mid = nib_next[first]
            second = mid * 16 + (byte & 15)
            sym1, sym2 = nib_sym[first], nib_sym[second]
            if sym1 == EOS or sym2 == EOS:
                table[(state << 8) | byte] = _FAIL
                continue
            node = nib_next[second]
            count = 0
            syms = 0
            for sym in (sym1, sym2):
                if sym >= 0:
                    syms |= sym << (_SYM1_SHIFT + 8 * count)
                    count += 1
            entry = node | (count << _COUNT_SHIFT) | syms
            if accepting[node]:
                entry |= _ACCEPT
            table[(state << 8) | byte] = entry
    return table


_DECODE: Final[list[int]] = _build_decode()


def encoded_length(data: bytes) -> int:
    """The length in bytes of ``encode(data)``."""
    bits_of = _BITS
    bits: i64 = 0
    n: i64 = len(data)
    i: i64 = 0
    while i < n:
        bits += bits_of[data[i]]
        i += 1
    return (bits + 7) >> 3


def encode(data: bytes) -> bytes:
    """The Huffman coding of ``data``, padded with ones to a whole byte."""
    out: list[int] = []
    code_of = _CODE
    bits_of = _BITS
    acc: i64 = 0  # the bits not written yet, at most 7 + 30
    nbits: i64 = 0
    n: i64 = len(data)
    i: i64 = 0
    while i < n:
        byte = data[i]
        i += 1
        bits: i64 = bits_of[byte]
        acc = (acc << bits) | code_of[byte]
        nbits += bits
        while nbits >= 8:
            nbits -= 8
            out.append((acc >> nbits) & 0xFF)
        acc &= (1 << nbits) - 1
    if nbits:
        out.append(((acc << (8 - nbits)) | (0xFF >> nbits)) & 0xFF)
    return bytes(out)


def decode(data: bytes) -> bytes:
    """The bytes that the Huffman string ``data`` codes (``HPACKDecodingError`` if invalid)."""
    out: list[int] = []
    table = _DECODE
    state: i64 = 0
    entry: i64 = _ACCEPT
    n: i64 = len(data)
    i: i64 = 0
    while i < n:
        entry = table[(state << 8) | data[i]]
        i += 1
        if entry & _FAIL:
            raise HPACKDecodingError("EOS in a Huffman-coded string")
        count = (entry >> _COUNT_SHIFT) & 3
        if count:
            out.append((entry >> _SYM1_SHIFT) & 0xFF)
            if count == 2:
                out.append(entry >> _SYM2_SHIFT)
        state = entry & _NEXT_MASK
    if not entry & _ACCEPT:
        raise HPACKDecodingError("invalid padding at the end of a Huffman-coded string")
    return bytes(out)
