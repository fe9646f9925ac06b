"""Numbers as HAProxy writes them: times with units, sizes with suffixes, bounded integers.

Every parser takes the text of one argument and returns the value, or raises ``ValueError`` whose text
is the complaint without the keyword (the caller prefixes ``'<keyword>': ``).

Times (HAProxy's rules): a non-negative integer followed by an optional unit ``us``, ``ms``, ``s``,
``m``, ``h`` or ``d``; with no unit the keyword's default unit applies (milliseconds for every
timeout). Fractions are not accepted (HAProxy does not accept them either). A time longer than
2^31-1 milliseconds (about 24.8 days) overflows HAProxy's timers and is refused the same way here.
Results are seconds as floats, which is what the model stores.

Sizes: a non-negative integer with an optional ``k``, ``m`` or ``g`` suffix (powers of 1024).
"""

from __future__ import annotations

# microseconds per unit: integers, so that "10us" is exactly 10 / 1e6 seconds
TIME_UNITS: dict[str, int] = {
    "us": 1,
    "ms": 1_000,
    "s": 1_000_000,
    "m": 60_000_000,
    "h": 3_600_000_000,
    "d": 86_400_000_000,
}

MAX_TIME_US = (2**31 - 1) * 1_000

SIZE_SUFFIXES: dict[str, int] = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def _split_number(text: str) -> tuple[str, str]:
    i = 0
    while i < len(text) and "0" <= text[i] <= "9":
        i += 1
    return text[:i], text[i:]


def parse_time(text: str, default_unit: str = "ms") -> float:
    """``10s`` → 10.0, ``250`` → 0.25 (default unit ms), ``1500us`` → 0.0015."""
    digits, unit = _split_number(text)
    if not digits:
        raise ValueError(
            f"invalid time '{text}' (expected a number with an optional unit us, ms, s, m, h or d)"
        )
    if unit[:1] == "." and unit[1:2].isdigit():
        raise ValueError(f"invalid time '{text}' (fractions are not accepted: use a smaller unit)")
    factor = TIME_UNITS.get(unit or default_unit)
    if factor is None:
        raise ValueError(f"invalid time unit '{unit}' in '{text}' (expected us, ms, s, m, h or d)")
    micros = int(digits) * factor
    if micros > MAX_TIME_US:
        raise ValueError(f"time '{text}' is too large (the maximum is 2147483647ms, about 24.8 days)")
    return micros / 1e6


def parse_size(text: str) -> int:
    """``16384`` → 16384, ``16k`` → 16384, ``1m`` → 1048576."""
    digits, suffix = _split_number(text)
    mult = SIZE_SUFFIXES.get(suffix.lower())
    if not digits or mult is None:
        raise ValueError(f"invalid size '{text}' (expected a number with an optional k, m or g suffix)")
    return int(digits) * mult


def parse_int(text: str, lo: int | None = None, hi: int | None = None) -> int:
    """A decimal integer (an optional leading ``-``), checked against ``lo..hi`` when given."""
    body = text[1:] if text.startswith("-") else text
    if not body.isdigit() or not body.isascii():
        raise ValueError(f"'{text}' is not a valid integer")
    value = int(text)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        if hi is None:
            raise ValueError(f"{value} is out of range (the minimum is {lo})")
        if lo is None:
            raise ValueError(f"{value} is out of range (the maximum is {hi})")
        raise ValueError(f"{value} is out of range {lo}..{hi}")
    return value
