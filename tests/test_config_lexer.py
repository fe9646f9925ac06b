"""Words, values and addresses: the lexer's quoting and expansion rules, times, sizes, addresses."""

from __future__ import annotations

import re

import pytest

from proxy.config.address import parse_bind_address, parse_server_address, parse_source_address
from proxy.config.errors import DirectiveError
from proxy.config.lexer import iter_lines, split_words
from proxy.config.timeunit import parse_int, parse_size, parse_time

ENV = {"PORT": "8080", "TWO": "a b", "EMPTY": "", "SPACED": " x  y "}

WORDS = [
    ("", []),
    ("   # only a comment", []),
    ("bind :8080", ["bind", ":8080"]),
    ("  timeout\tclient   5s  ", ["timeout", "client", "5s"]),
    ("a b#comment", ["a", "b"]),
    ("a b #comment", ["a", "b"]),
    (r"a b\#c", ["a", "b#c"]),
    ('a "b # c"', ["a", "b # c"]),
    ("a 'b # c'", ["a", "b # c"]),
    ('a "x \\" y"', ["a", 'x " y']),
    ("a 'x \\ y'", ["a", "x \\ y"]),  # no escape inside single quotes
    (r"a x\ y", ["a", "x y"]),
    (r"a \x41\x62", ["a", "Ab"]),
    (r"a \t\n\r\\", ["a", "\t\n\r\\"]),
    (r"path_reg ^/a\.b\d+$", ["path_reg", r"^/a\.b\d+$"]),  # unknown escapes kept
    ('pre"fix  x"post', ["prefix  xpost"]),
    ("a ''b", ["a", "b"]),
    ("a 'it'\\''s'", ["a", "it's"]),
    ('a "$PORT" "${PORT}" ${PORT}', ["a", "8080", "8080", "8080"]),
    ('a ":${PORT}" x${PORT}y', ["a", ":8080", "x8080y"]),
    ('a "${NOPE-default value}"', ["a", "default value"]),
    ('a "${EMPTY-not used}x"', ["a", "x"]),  # the default is for unset variables only
    ('a "${TWO}"', ["a", "a b"]),
    ('a "${TWO[*]}" z', ["a", "a", "b", "z"]),
    ("a ${TWO[*]}", ["a", "a", "b"]),
    ('a "${SPACED[*]}"', ["a", "x", "y"]),
    ('a "${NOPE[*]}" z', ["a", "z"]),  # an unset list makes no word at all
    ('a "\\$PORT" $PORT \\${PORT}', ["a", "$PORT", "$PORT", "\\${PORT}"]),
    ("path_reg ^/a$ ^/b$|^/c$ ${ ${1}", ["path_reg", "^/a$", "^/b$|^/c$", "${", "${1}"]),
    ('a "${.FILE}:${.LINE}" ${.SECTION}', ["a", "f.cfg:7", "backend"]),
]


@pytest.mark.parametrize(("line", "words"), WORDS)
def test_split_words(line: str, words: list[str]) -> None:
    assert split_words(line, ENV, "f.cfg", 7, "backend") == words


LEX_ERRORS = [
    ('a "b', "unmatched double quote"),
    ("a 'b", "unmatched single quote"),
    ("a b \\", "trailing backslash"),
    (r"a \xg0", "invalid hexadecimal escape"),
    ('a "$1"', "invalid environment variable name at '$1'"),
    ('a "${PORT"', "unmatched brace"),
    ('a "${PORT[x]}"', "invalid word expansion"),
    ('a "${.NOPE}"', "unknown internal variable '.NOPE'"),
    ('a "" b', "argument 2 is empty"),
    ('a "${NOPE}" b', "argument 2 is empty because environment variable 'NOPE' is not set"),
    ('a "${EMPTY}"', "argument 2 is empty"),
    ("a ${NOPE}", "environment variable 'NOPE' is not set"),
]


@pytest.mark.parametrize(("line", "message"), LEX_ERRORS)
def test_lexer_errors(line: str, message: str) -> None:
    with pytest.raises(DirectiveError) as err:
        split_words(line, ENV)
    assert message in err.value.text


def test_iter_lines_strips_line_endings() -> None:
    assert list(iter_lines("a\r\nb\n\nc")) == [(1, "a"), (2, "b"), (3, ""), (4, "c")]


TIMES = [("0", 0.0), ("250", 0.25), ("10us", 1e-05), ("1500ms", 1.5), ("5s", 5.0), ("2m", 120.0),
         ("1h", 3600.0), ("1d", 86400.0), ("2147483647", 2147483.647)]  # fmt: skip


@pytest.mark.parametrize(("text", "seconds"), TIMES)
def test_parse_time(text: str, seconds: float) -> None:
    assert parse_time(text) == seconds


def test_parse_time_default_unit() -> None:
    assert parse_time("3", default_unit="s") == 3.0


@pytest.mark.parametrize(
    ("text", "message"),
    [("10sx", "invalid time unit 'sx' in '10sx'"), ("s", "invalid time 's'"), ("-1s", "invalid time"),
     ("1.5s", "fractions are not accepted"), ("25d", "too large"), ("", "invalid time")],
)  # fmt: skip
def test_parse_time_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_time(text)


def test_sizes_and_ints() -> None:
    assert [parse_size(t) for t in ("16384", "16k", "16K", "1m", "1g")] == [16384, 16384, 16384, 2**20, 2**30]
    assert parse_int("-1", -1) == -1
    for bad in ("1.0", "", "x", "1e3", "٣"):
        with pytest.raises(ValueError):
            parse_int(bad)
    with pytest.raises(ValueError, match=r"out of range 0\.\.256"):
        parse_int("257", 0, 256)


BINDS = [
    (":80", [("", 80)]),
    ("*:80", [("", 80)]),
    ("127.0.0.1:80", [("127.0.0.1", 80)]),
    ("[::1]:80", [("::1", 80)]),
    ("::1:80", [("::1", 80)]),
    (":::80", [("::", 80)]),
    ("ipv6@[::]:80", [("::", 80)]),
    ("localhost:80", [("localhost", 80)]),
    ("127.0.0.1:80-82", [("127.0.0.1", 80), ("127.0.0.1", 81), ("127.0.0.1", 82)]),
]


@pytest.mark.parametrize(("text", "pairs"), BINDS)
def test_bind_addresses(text: str, pairs: list[tuple[str, int]]) -> None:
    assert parse_bind_address(text) == pairs


@pytest.mark.parametrize(
    ("text", "message"),
    [("127.0.0.1", "missing port"), (":0", "out of range"), (":82-80", "empty port range"),
     ("/run/x.sock", "Unix sockets are not supported"), ("fd@3", "'fd@' are not supported"),
     ("ipv4@[::1]:80", "not an IPv4 address"), ("bad_host!:80", "invalid address"),
     ("[::1:80", "unmatched '['"), (":1-5000", "too wide")],
)  # fmt: skip
def test_bind_address_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_bind_address(text)


def test_server_and_source_addresses() -> None:
    assert parse_server_address("[2001:db8::1]:443") == ("2001:db8::1", 443)
    assert parse_server_address("backend.example.com:8080") == ("backend.example.com", 8080)
    for bad, message in [("10.0.0.1", "missing port"), (":80", "missing host"), ("10.0.0.1:", "missing port"),
                         ("10.0.0.1:+1", "port offsets"), ("1.2.3:80", "invalid address")]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            parse_server_address(bad)
    assert [parse_source_address(t) for t in ("0.0.0.0", "10.0.0.1:0", "[::1]:5000", "::1")] == [
        "0.0.0.0", "10.0.0.1:0", "[::1]:5000", "::1",
    ]  # fmt: skip
    for bad in ("example.com", "10.0.0.1:1000-2000"):
        with pytest.raises(ValueError):
            parse_source_address(bad)
