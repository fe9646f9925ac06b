"""HPACK (RFC 7541), compiled: an ``Encoder`` and a ``Decoder`` that replace the ``hpack`` library's
in an ``h2`` connection (``install``).

Contract -- the ``hpack`` 4 interface, as ``h2`` 4 uses it:

- ``Encoder.encode(headers, huffman=True) -> bytes``: ``headers`` is an iterable of ``(name,
  value)`` or ``(name, value, sensitive)`` tuples of ``bytes`` or ``str`` (or a ``dict``, its
  pseudo-headers first); a ``NeverIndexedHeaderTuple`` (or a true ``sensitive``) is always sent as
  a never-indexed literal (even when the table holds it: the mark must reach the next hop, RFC 7541
  section 7.1.3) and never enters the table. A field found whole in the static or dynamic
  table is sent as an index; otherwise its name's index (or the literal name) and its value are sent
  with incremental indexing, as ``hpack`` does. A string is Huffman-coded when ``huffman`` and the
  encoder's ``huffman`` attribute allow it and the coding is shorter. ``header_table_size`` may be
  set at any time (the peer's SETTINGS_HEADER_TABLE_SIZE, or a smaller one of ours): the next block
  opens with the dynamic table size updates (the smallest size set since the last block, then the
  last one) and the table is shrunk at once.
- ``Decoder.decode(data, raw=False) -> list``: the header list of one whole header block, each field
  a ``HeaderTuple`` (``NeverIndexedHeaderTuple`` for a never-indexed literal) of ``bytes`` if ``raw``
  else of ``str``; with ``header_tuples`` False (``install`` sets it where ``h2`` decodes no header
  to text), an indexable field is a plain tuple, cheaper to build. ``max_header_list_size`` bounds
  the decoded list (RFC 9113's size: 32 bytes per field plus its name and value):
  ``OversizedHeaderListError`` as soon as it is exceeded, before a string larger than what is left
  is even decoded (the HPACK bomb). ``max_allowed_table_size`` bounds the dynamic table size updates
  (``InvalidTableSizeError``, also when the block leaves the table larger than that).
  Every other malformed block raises ``HPACKDecodingError`` (``InvalidTableIndex`` for an index
  outside both tables): an update after a field, a truncated integer or string, an integer longer
  than 4 continuation bytes, a Huffman string with EOS or bad padding, UTF-8 that is not, unless raw.
  After an error the decoder's table is unusable, as with ``hpack``: ``h2`` ends the connection
  (COMPRESSION_ERROR, or ENHANCE_YOUR_CALM for an oversized list).
- ``table_state()`` / ``restore(state)`` give and take the dynamic table and sizes as plain values
  (``proxy.h2_handover``).

The dynamic table is a list, oldest entry first (RFC 7541's index 62 is its last item): adding is an
append, evicting pops the front (at most 128 entries of 32 bytes fit in 4096). The encoder also
keeps, for each (name, value) and each name in its table, the sequence number of the newest such
entry, so a lookup is a dictionary access rather than a walk of the table.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from hpack.exceptions import (
    HPACKDecodingError,
    InvalidTableIndex,
    InvalidTableSizeError,
    OversizedHeaderListError,
)
from hpack.struct import HeaderTuple, NeverIndexedHeaderTuple

from proxy.h2 import huffman

__all__ = [
    "DEFAULT_MAX_HEADER_LIST_SIZE",
    "DEFAULT_TABLE_SIZE",
    "STATIC_TABLE",
    "Decoder",
    "Encoder",
    "install",
]

DEFAULT_TABLE_SIZE: Final = 4096  # RFC 9113 SETTINGS_HEADER_TABLE_SIZE's initial value
DEFAULT_MAX_HEADER_LIST_SIZE: Final = 1 << 16  # hpack's default
ENTRY_OVERHEAD: Final = 32  # RFC 7541 section 4.1
MAX_INT_CONTINUATIONS: Final = 4  # an integer longer than its prefix plus 4 bytes is refused

# RFC 7541 Appendix A: indexes 1 to 61.
STATIC_TABLE: Final[tuple[tuple[bytes, bytes], ...]] = (
    (b":authority", b""), (b":method", b"GET"), (b":method", b"POST"), (b":path", b"/"),
    (b":path", b"/index.html"), (b":scheme", b"http"), (b":scheme", b"https"), (b":status", b"200"),
    (b":status", b"204"), (b":status", b"206"), (b":status", b"304"), (b":status", b"400"),
    (b":status", b"404"), (b":status", b"500"), (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"), (b"accept-language", b""), (b"accept-ranges", b""),
    (b"accept", b""), (b"access-control-allow-origin", b""), (b"age", b""), (b"allow", b""),
    (b"authorization", b""), (b"cache-control", b""), (b"content-disposition", b""),
    (b"content-encoding", b""), (b"content-language", b""), (b"content-length", b""),
    (b"content-location", b""), (b"content-range", b""), (b"content-type", b""), (b"cookie", b""),
    (b"date", b""), (b"etag", b""), (b"expect", b""), (b"expires", b""), (b"from", b""), (b"host", b""),
    (b"if-match", b""), (b"if-modified-since", b""), (b"if-none-match", b""), (b"if-range", b""),
    (b"if-unmodified-since", b""), (b"last-modified", b""), (b"link", b""), (b"location", b""),
    (b"max-forwards", b""), (b"proxy-authenticate", b""), (b"proxy-authorization", b""),
    (b"range", b""), (b"referer", b""), (b"refresh", b""), (b"retry-after", b""), (b"server", b""),
    (b"set-cookie", b""), (b"strict-transport-security", b""), (b"transfer-encoding", b""),
    (b"user-agent", b""), (b"vary", b""), (b"via", b""), (b"www-authenticate", b""),
)  # fmt: skip
STATIC_LEN: Final = 61


def _static_fields() -> dict[object, int]:
    out: dict[object, int] = {}
    for i, field in enumerate(STATIC_TABLE):
        out.setdefault(field, i + 1)
    return out


def _static_names() -> dict[bytes, int]:
    out: dict[bytes, int] = {}
    for i, (name, _) in enumerate(STATIC_TABLE):
        out.setdefault(name, i + 1)
    return out


_STATIC_FIELDS: Final[dict[object, int]] = _static_fields()
_STATIC_NAMES: Final[dict[bytes, int]] = _static_names()

# The first byte of each representation (RFC 7541 section 6).
_INDEXED: Final = 0x80
_INCREMENTAL: Final = 0x40
_SIZE_UPDATE: Final = 0x20
_NEVER: Final = 0x10
_HUFFMAN: Final = 0x80


def _to_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return str(value).encode("utf-8")


_BYTE: Final[list[bytes]] = [bytes((i,)) for i in range(256)]


def _put_int(out: list[bytes], first: int, prefix_bits: int, value: int) -> None:
    """Append ``value`` as an HPACK integer of ``prefix_bits`` whose first byte carries ``first``."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        out.append(_BYTE[first | value])
        return
    code = [first | limit]
    value -= limit
    while value >= 0x80:
        code.append((value & 0x7F) | 0x80)
        value >>= 7
    code.append(value)
    out.append(bytes(code))


def _field_size(name: bytes, value: bytes) -> int:
    return ENTRY_OVERHEAD + len(name) + len(value)


class Encoder:
    """An HPACK encoder: a header list in, a header block out (see the module doc)."""

    __slots__ = ("_changes", "_fields", "_inserted", "_maxsize", "_names", "_size", "entries", "huffman")

    def __init__(self) -> None:
        self.entries: list[tuple[bytes, bytes]] = []  # the dynamic table, oldest first
        self._size = 0  # its size as RFC 7541 counts it
        self._maxsize = DEFAULT_TABLE_SIZE
        self._inserted = 0  # entries ever added: the newest has sequence number _inserted - 1
        self._fields: dict[object, int] = {}  # (name, value) -> sequence number of its newest entry
        self._names: dict[bytes, int] = {}  # name -> sequence number of its newest entry
        self._changes: list[int] = []  # table sizes set since the last block
        self.huffman = True  # False: never Huffman-code, whatever encode() is asked

    def __repr__(self) -> str:
        return f"<Encoder table {len(self.entries)} entries {self._size}/{self._maxsize}>"

    @property
    def header_table_size(self) -> int:
        """The dynamic table's maximum size; setting it shrinks the table and owes the peer an update."""
        return self._maxsize

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        value = int(value)
        if value < 0:
            raise ValueError(f"negative table size {value}")
        if value == self._maxsize:
            return
        self._changes.append(value)
        self._maxsize = value
        self._evict(value)

    def encode(self, headers: Iterable[Any] | dict[Any, Any], huffman: bool = True) -> bytes:
        """The header block of ``headers`` (see the module doc)."""
        out: list[bytes] = []
        if self._changes:
            smallest = min(self._changes)
            if smallest < self._maxsize:
                _put_int(out, _SIZE_UPDATE, 5, smallest)
            _put_int(out, _SIZE_UPDATE, 5, self._maxsize)
            self._changes = []
        use_huffman = huffman and self.huffman
        fields: Iterable[Any] = _dict_fields(headers) if isinstance(headers, dict) else headers
        for header in fields:
            if isinstance(header, HeaderTuple):
                sensitive = not header.indexable
            else:
                sensitive = len(header) > 2 and bool(header[2])
            self._add(out, _to_bytes(header[0]), _to_bytes(header[1]), sensitive, use_huffman)
        return b"".join(out)

    def _add(self, out: list[bytes], name: bytes, value: bytes, sensitive: bool, use_huffman: bool) -> None:
        key: object = (name, value)  # boxed once (a typed tuple would be rebuilt for each lookup)
        if not sensitive:  # a sensitive field is always a never-indexed literal: the mark travels on
            index = _STATIC_FIELDS.get(key, 0)
            if not index:
                seq = self._fields.get(key, -1)
                if seq >= 0:
                    index = STATIC_LEN + self._inserted - seq
            if index:
                _put_int(out, _INDEXED, 7, index)
                return
        name_index = _STATIC_NAMES.get(name, 0)
        if not name_index:
            seq = self._names.get(name, -1)
            if seq >= 0:
                name_index = STATIC_LEN + self._inserted - seq
        if sensitive:
            _put_int(out, _NEVER, 4, name_index)
        else:
            _put_int(out, _INCREMENTAL, 6, name_index)
        if not name_index:
            _put_string(out, name, use_huffman)
        _put_string(out, value, use_huffman)
        if not sensitive:
            self._insert(name, value, key)

    def _insert(self, name: bytes, value: bytes, key: object) -> None:
        size = _field_size(name, value)
        if size > self._maxsize:  # RFC 7541 section 4.4: the table ends empty
            self._evict(0)
            return
        self._evict(self._maxsize - size)
        seq = self._inserted
        self._inserted = seq + 1
        self.entries.append((name, value))
        self._size += size
        self._fields[key] = seq
        self._names[name] = seq

    def _evict(self, room: int) -> None:
        """Drop the oldest entries until the table's size is at most ``room``."""
        entries = self.entries
        drop = 0
        size = self._size
        while size > room:
            name, value = entries[drop]
            size -= _field_size(name, value)
            seq = self._inserted - len(entries) + drop
            # the newest entry of a field or name is never evicted before an older one of it
            key: object = (name, value)
            if self._fields.get(key, -1) == seq:
                del self._fields[key]
            if self._names.get(name, -1) == seq:
                del self._names[name]
            drop += 1
        if drop:
            del entries[:drop]
            self._size = size

    def table_state(self) -> tuple[tuple[tuple[bytes, bytes], ...], int, tuple[int, ...]]:
        """(entries oldest first, maximum size, size updates owed to the peer) as plain values."""
        return tuple(self.entries), self._maxsize, tuple(self._changes)

    def restore(self, entries: Iterable[tuple[bytes, bytes]], maxsize: int, changes: Iterable[int]) -> None:
        """Take the state ``table_state`` gave (``ValueError`` if it does not fit its size)."""
        self.entries = []
        self._size = 0
        self._inserted = 0
        self._fields = {}
        self._names = {}
        self._maxsize = int(maxsize)
        if self._maxsize < 0:
            raise ValueError(f"negative table size {maxsize}")
        items = [(bytes(name), bytes(value)) for name, value in entries]
        for name, value in items:
            self._insert(name, value, (name, value))
        if len(self.entries) != len(items):
            raise ValueError("the entries do not fit the table")
        self._changes = [int(n) for n in changes]


def _put_string(out: list[bytes], data: bytes, use_huffman: bool) -> None:
    if use_huffman and data:
        length = huffman.encoded_length(data)
        if length < len(data):
            _put_int(out, _HUFFMAN, 7, length)
            out.append(huffman.encode(data))
            return
    _put_int(out, 0, 7, len(data))
    out.append(data)


def _dict_fields(headers: dict[Any, Any]) -> list[tuple[Any, Any]]:
    """A dict's fields, pseudo-headers first (hpack's order for a dict)."""
    return sorted(headers.items(), key=lambda kv: not _to_bytes(kv[0]).startswith(b":"))


class Decoder:
    """An HPACK decoder: a header block in, a header list out (see the module doc)."""

    __slots__ = (
        "_maxsize",
        "_size",
        "entries",
        "header_tuples",
        "max_allowed_table_size",
        "max_header_list_size",
    )

    def __init__(self, max_header_list_size: int = DEFAULT_MAX_HEADER_LIST_SIZE) -> None:
        self.entries: list[tuple[bytes, bytes]] = []  # the dynamic table, oldest first
        self._size = 0
        self._maxsize = DEFAULT_TABLE_SIZE
        self.max_header_list_size = max_header_list_size
        self.max_allowed_table_size = DEFAULT_TABLE_SIZE
        self.header_tuples = True  # False: indexable fields as plain tuples

    def __repr__(self) -> str:
        return f"<Decoder table {len(self.entries)} entries {self._size}/{self._maxsize}>"

    @property
    def header_table_size(self) -> int:
        """The dynamic table's current maximum size (the peer's last size update)."""
        return self._maxsize

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        self._maxsize = int(value)
        self._evict(self._maxsize)

    def decode(self, data: bytes, raw: bool = False) -> list[Any]:
        """The header list of the header block ``data`` (see the module doc for the errors)."""
        if not isinstance(data, bytes):
            data = bytes(data)
        end = len(data)
        pos = 0
        budget = self.max_header_list_size  # what the list may still grow by
        fields: list[Any] = []
        plain = not self.header_tuples
        while pos < end:
            first = data[pos]
            never = False
            if first & _INDEXED:
                index, pos = _get_int(data, pos, 7)
                name, value = self._field(index)
            elif first & _INCREMENTAL or not first & _SIZE_UPDATE:
                if first & _INCREMENTAL:
                    index, pos = _get_int(data, pos, 6)
                else:
                    never = bool(first & _NEVER)
                    index, pos = _get_int(data, pos, 4)
                if index:
                    name = self._field(index)[0]
                else:
                    name, pos = _get_string(data, pos, budget)
                value, pos = _get_string(data, pos, budget - len(name))
                if first & _INCREMENTAL:
                    self._insert(name, value)
            else:
                if fields:
                    raise HPACKDecodingError("a table size update after a header field")
                size, pos = _get_int(data, pos, 5)
                if size > self.max_allowed_table_size:
                    raise InvalidTableSizeError(
                        f"table size update to {size}, more than the {self.max_allowed_table_size} allowed"
                    )
                self._maxsize = size
                self._evict(size)
                continue
            budget -= ENTRY_OVERHEAD + len(name) + len(value)
            if budget < 0:
                raise OversizedHeaderListError(
                    f"a header list larger than {self.max_header_list_size} has been received"
                )
            if raw:
                if never:
                    fields.append(NeverIndexedHeaderTuple(name, value))
                elif plain:
                    fields.append((name, value))
                else:
                    fields.append(HeaderTuple(name, value))
            else:
                fields.append(_text_field(name, value, never, plain))
        if self._maxsize > self.max_allowed_table_size:
            raise InvalidTableSizeError(
                f"table size {self._maxsize} left above the {self.max_allowed_table_size} allowed"
            )
        return fields

    def _field(self, index: int) -> tuple[bytes, bytes]:
        if 0 < index <= STATIC_LEN:
            return STATIC_TABLE[index - 1]
        dynamic = index - STATIC_LEN
        count = len(self.entries)
        if index <= 0 or dynamic > count:
            raise InvalidTableIndex(f"invalid table index {index}")
        return self.entries[count - dynamic]

    def _insert(self, name: bytes, value: bytes) -> None:
        size = _field_size(name, value)
        if size > self._maxsize:
            self._evict(0)
            return
        self._evict(self._maxsize - size)
        self.entries.append((name, value))
        self._size += size

    def _evict(self, room: int) -> None:
        entries = self.entries
        drop = 0
        size = self._size
        while size > room:
            name, value = entries[drop]
            size -= _field_size(name, value)
            drop += 1
        if drop:
            del entries[:drop]
            self._size = size

    def table_state(self) -> tuple[tuple[tuple[bytes, bytes], ...], int]:
        """(entries oldest first, current maximum size) as plain values."""
        return tuple(self.entries), self._maxsize

    def restore(self, entries: Iterable[tuple[bytes, bytes]], maxsize: int) -> None:
        """Take the state ``table_state`` gave (``ValueError`` if it does not fit its size)."""
        self.entries = []
        self._size = 0
        self._maxsize = int(maxsize)
        items = [(bytes(name), bytes(value)) for name, value in entries]
        for name, value in items:
            self._insert(name, value)
        if len(self.entries) != len(items):
            raise ValueError("the entries do not fit the table")


def _text_field(name: bytes, value: bytes, never: bool, plain: bool) -> Any:
    try:
        n = name.decode("utf-8")
        v = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HPACKDecodingError("a header field that is not UTF-8") from exc
    if never:
        return NeverIndexedHeaderTuple(n, v)
    if plain:
        return (n, v)
    return HeaderTuple(n, v)


def _get_int(data: bytes, pos: int, prefix_bits: int) -> tuple[int, int]:
    """The integer of ``prefix_bits`` at ``pos`` and the position after it."""
    limit = (1 << prefix_bits) - 1
    value = data[pos] & limit
    pos += 1
    if value < limit:
        return value, pos
    shift = 0
    end = len(data)
    for _ in range(MAX_INT_CONTINUATIONS):
        if pos >= end:
            raise HPACKDecodingError("truncated integer")
        byte = data[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise HPACKDecodingError("integer longer than the limit")


def _get_string(data: bytes, pos: int, budget: int) -> tuple[bytes, int]:
    """The string at ``pos`` and the position after it; ``OversizedHeaderListError`` before decoding
    it when it cannot fit in ``budget`` (a Huffman code is at most 30 bits a byte)."""
    if pos >= len(data):
        raise HPACKDecodingError("truncated header block")
    coded = data[pos] & _HUFFMAN
    length, pos = _get_int(data, pos, 7)
    end = pos + length
    if end > len(data):
        raise HPACKDecodingError("truncated string")
    least = length * 8 // 30 if coded else length
    if least > budget:
        raise OversizedHeaderListError(f"a string of at least {least} bytes, more than the list may hold")
    if coded:
        return huffman.decode(data[pos:end]), end
    return data[pos:end], end


def install(conn: Any, *, huffman: bool = True) -> None:
    """Give the ``h2`` connection ``conn`` this module's encoder and decoder in place of the
    ``hpack`` library's, before it sends or receives anything (the limits set on the library's
    carry over). ``huffman`` False: the encoder never Huffman-codes."""
    old_enc, old_dec = conn.encoder, conn.decoder
    if isinstance(old_enc, Encoder) and isinstance(old_dec, Decoder):
        old_enc.huffman = huffman
        return
    if getattr(old_enc.header_table, "dynamic_entries", None) or getattr(
        old_dec.header_table, "dynamic_entries", None
    ):
        raise ValueError("install before the connection encodes or decodes anything")
    enc = Encoder()
    enc.huffman = huffman
    enc.header_table_size = int(old_enc.header_table_size)
    dec = Decoder(int(old_dec.max_header_list_size))
    dec.max_allowed_table_size = int(old_dec.max_allowed_table_size)
    dec.header_table_size = int(old_dec.header_table_size)
    dec.header_tuples = bool(conn.config.header_encoding)  # h2 asserts HeaderTuple only to decode text
    conn.encoder = enc
    conn.decoder = dec
