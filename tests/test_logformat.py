"""Log-format expressions: parsing (HAProxy's errors) and rendering against one exchange."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from proxy.logformat import FormatError, SampleCtx, Stage, parse, render
from proxy.message import RequestHead

TS = 1_700_000_000.25  # 2023-11-14 22:13:20.250 UTC


def ctx(target: bytes = b"/p/q?a=1&b=%0D%0A", headers: list[tuple[bytes, bytes]] | None = None) -> SampleCtx:
    head = RequestHead(
        b"GET", target, b"1.1",
        headers if headers is not None else [
            (b"Host", b"Example.COM:8080"), (b"X-Multi", b"one, two"), (b"x-multi", b"three"),
        ],
    )  # fmt: skip
    return SampleCtx(
        head, "10.1.2.3", 40000, TS, "fe", local_addr=lambda: ("127.0.0.1", 8080), request_no=7,
    )  # fmt: skip


def out(text: str, c: SampleCtx | None = None, stage: Stage = Stage.REQUEST) -> bytes:
    return render(parse(text, stage), c if c is not None else ctx())


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("plain text", b"plain text"),
        ("100%% sure", b"100% sure"),
        ("%ci:%cp", b"10.1.2.3:40000"),
        ("%fi:%fp", b"127.0.0.1:8080"),
        ("%[src] %[src_port] %[dst]:%[dst_port]", b"10.1.2.3 40000 127.0.0.1:8080"),
        ("%[req.hdr(host)]", b"Example.COM:8080"),
        ("%[req.hdr(host),lower]", b"example.com:8080"),
        ("%[hdr(x-multi)]", b"three"),  # the last value, comma-separated values apart
        ("%[req.hdr(x-multi,1)]|%[req.hdr(X-MULTI,2)]|%[req.hdr(x-multi,-2)]", b"one|two|two"),
        ("%[req.fhdr(x-multi,1)]", b"one, two"),
        ("<%[req.hdr(absent)]>", b"<>"),
        ("%[path]|%[query]|%[url]|%[method]|%[req.ver]", b"/p/q|a=1&b=%0D%0A|/p/q?a=1&b=%0D%0A|GET|1.1"),
        ("%[path,upper]", b"/P/Q"),
        ("%[pathq]|%[ssl_fc]", b"/p/q?a=1&b=%0D%0A|0"),
        ("%[query,url_dec]", b"a=1&b=\r\n"),
        ("%[str(hi),base64]|%[str(hi),hex]", b"aGk=|6869"),
        ("%HM %HU %HP %HQ %HV", b"GET /p/q?a=1&b=%0D%0A /p/q ?a=1&b=%0D%0A HTTP/1.1"),
        ("%r", b"GET /p/q?a=1&b=%0D%0A HTTP/1.1"),
        ("%Ts.%ms %T", b"1700000000.250 14/Nov/2023:22:13:20.250"),
        ("%f/%b/%rt", b"fe/-/7"),
        ("%[fe_name]:%[be_name]", b"fe:"),
        ("%{+Q}ci %ci", b'"10.1.2.3" 10.1.2.3'),
        ("%{+X}o %ci:%cp_%fi:%fp_%Ts_%rt", b" 0A010203:9C40_7F000001:1F90_6553F100_0007"),
        ("%{+X}o%{-X}cp %cp", b"40000 9C40"),
        ("%{+Q}[str(x)]", b'"x"'),
    ],
)
def test_render(text: str, value: bytes) -> None:
    assert out(text) == value


def test_tls_client_connection() -> None:
    c = ctx()
    assert out("%ft %[ssl_fc]", c) == b"fe 0"
    c.ssl = True
    assert out("%ft %f %[ssl_fc]", c) == b"fe~ fe 1"


def test_aliases_of_the_process() -> None:
    assert out("%pid") == str(os.getpid()).encode()
    assert out("%H") and b"%" not in out("%H")


def test_unique_id_is_made_once_from_the_format() -> None:
    c = ctx()
    c.unique_id_format = parse("%ci_%rt_%ID")  # naming itself: empty there, not a loop
    assert out("%ID", c) == b"10.1.2.3_7_-"
    c.request_no = 8
    assert out("%[unique-id]", c) == b"10.1.2.3_7_-"  # kept
    assert out("%ID") == b"-" and out("<%[unique-id]>") == b"<>"  # no format: none


def test_response_fetches() -> None:
    c = ctx()
    c.resp_status, c.resp_headers = 404, [(b"Server", b"origin"), (b"Set-Cookie", b"a=1")]
    assert out("%[status] %[res.hdr(server)] %[hdr(set-cookie)]", c, Stage.RESPONSE) == b"404 origin a=1"
    assert parse("%[hdr(x)]", Stage.RESPONSE).nodes[0].fetch.name == "res.hdr"  # type: ignore[union-attr]
    assert parse("%[hdr(x)]", Stage.REQUEST).nodes[0].fetch.name == "req.hdr"  # type: ignore[union-attr]


def test_pathq_of_an_absolute_form_target() -> None:
    assert out("%[pathq]", ctx(b"http://h.example:81/x?y")) == b"/x?y"
    assert out("%[pathq]", ctx(b"http://h.example?y")) == b"/?y"


def test_constant() -> None:
    assert parse("a %% b").constant == b"a % b"
    assert parse("a %ci").constant is None


@pytest.mark.parametrize(
    ("text", "stage", "message"),
    [
        ("%zz", Stage.REQUEST, "no such format variable 'zz'. If you wanted to emit the '%' character"
                               " verbatim, you need to use '%%'."),
        ("50%", Stage.REQUEST, "no such format variable ''."),
        ("%[nosuchfetch]", Stage.REQUEST,
         "failed to parse sample expression <nosuchfetch]> : unknown fetch method 'nosuchfetch'."),
        ("%[req.hdr(host),nosuchconv]", Stage.REQUEST,
         "failed to parse sample expression <req.hdr(host),nosuchconv]> : unknown converter 'nosuchconv'."),
        ("%[src", Stage.REQUEST, "missing ']' after 'src'."),
        ("%[req.hdr]", Stage.REQUEST, "fetch method 'req.hdr' expects 1 to 2 argument(s)."),
        ("%[req.hdr(a,x)]", Stage.REQUEST, "invalid occurrence 'x'."),
        ("%[res.hdr(server)]", Stage.REQUEST,
         "sample fetch <res.hdr(server)]> may not be reliably used here because it needs"
         " 'HTTP response headers' which is not available here."),
        ("%[req.hdr(host)]", Stage.RESPONSE,
         "sample fetch <req.hdr(host)]> may not be reliably used here because it needs"
         " 'HTTP request headers' which is not available here."),
        ("%{+E}ci", Stage.REQUEST, "flag '+E' is not supported"),
        ("%{Q}ci", Stage.REQUEST, "invalid flag 'Q'"),
        ("%{+Qci", Stage.REQUEST, "missing '}' after"),
        ("%[src,lower(1)]", Stage.REQUEST, "converter 'lower' takes no argument."),
    ],
)  # fmt: skip
def test_errors(text: str, stage: Stage, message: str) -> None:
    with pytest.raises(FormatError) as err:
        parse(text, stage)
    assert message in str(err.value)


HAPROXY = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)


@pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed")
@pytest.mark.parametrize(
    "value", ["%zz", "%[nosuchfetch]", "%[req.hdr(host),nosuchconv]", "%[src", "%[res.hdr(server)]"]
)
def test_errors_are_worded_as_haproxy_words_them(value: str, tmp_path: Path) -> None:
    from proxy.config import ConfigError, load

    path = tmp_path / "t.cfg"
    path.write_text(
        "defaults\n    mode http\n    timeout client 1s\n    timeout connect 1s\n    timeout server 1s\n"
        f"frontend fe\n    bind 127.0.0.1:18090\n    http-request set-header X {value}\n"
    )
    assert HAPROXY is not None
    run = subprocess.run([HAPROXY, "-c", "-f", str(path)], capture_output=True, text=True, timeout=30)
    (theirs,) = [line for line in run.stderr.splitlines() if "[ALERT]" in line and "parsing [" in line]
    with pytest.raises(ConfigError) as err:
        load([str(path)], env={})
    (ours,) = err.value.messages
    strip = re.compile(r"^.*?parsing \[[^]]*\] : ")
    assert strip.sub("", ours) == strip.sub("", theirs)
