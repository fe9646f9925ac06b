"""Socket addresses as HAProxy writes them on ``bind``, ``server`` and ``source`` lines.

Forms accepted: ``host:port``, ``[ipv6]:port``, ``ipv6:port`` (HAProxy's rule: without brackets the
last colon starts the port), ``:port`` and ``*:port`` (every address, ``bind`` only), and the prefixes
``ipv4@`` / ``ipv6@``, which force the family. ``host`` is an IPv4 or IPv6 literal or a host name
(resolved later, when the socket is made). Unix sockets, ``fd@``, ``abns@`` and other families are
refused as not supported. Errors are ``ValueError`` with the complaint; the caller adds the keyword.

``log`` targets have their own forms (``parse_log_address``): ``stdout``/``stderr`` (``fd@1``/``fd@2``),
a Unix datagram socket (``/path`` or ``unix@/path``), or a UDP address (``host[:port]``, port 514 by
default, with an optional ``udp@``, ``udp4@``, ``udp6@``, ``ipv4@`` or ``ipv6@``; an IPv6 address
with a port in brackets, ``[::1]:514``: a bare IPv6 address is taken whole, port 514), a host name
resolved there and then, once (HAProxy resolves at parsing too: after a ``chroot`` a worker could
not). TCP, ``ring@`` and the other families are refused as not supported.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import Any

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62}))*\.?$"
)
_FAMILIES_UNSUPPORTED = (
    "unix@", "abns@", "abnsz@", "fd@", "sockpair@", "uxst@", "uxdg@", "udp@", "udp4@", "udp6@",
    "quic4@", "quic6@", "rhttp@", "tcp@", "tcp4@", "tcp6@", "mptcp@",
)  # fmt: skip


def _family_prefix(text: str) -> tuple[int | None, str]:
    """Strip ``ipv4@`` / ``ipv6@``; refuse the other families."""
    if text.startswith("ipv4@"):
        return 4, text[5:]
    if text.startswith("ipv6@"):
        return 6, text[5:]
    if text.startswith("/") or text.startswith(_FAMILIES_UNSUPPORTED):
        kind = (
            "Unix sockets"
            if text.startswith(("/", "unix@", "uxst@", "uxdg@"))
            else f"'{text.split('@')[0]}@'"
        )
        raise ValueError(f"{kind} are not supported in address '{text}'")
    return None, text


def split_host_port(text: str) -> tuple[str, str | None]:
    """``host`` and the port text (``None`` when there is no colon), brackets removed."""
    family, rest = _family_prefix(text)
    if rest.startswith("["):
        close = rest.find("]")
        if close < 0:
            raise ValueError(f"unmatched '[' in address '{text}'")
        host, after = rest[1:close], rest[close + 1 :]
        if after and not after.startswith(":"):
            raise ValueError(f"unexpected '{after}' after ']' in address '{text}'")
        port = after[1:] if after else None
    elif ":" in rest:
        host, port = rest.rsplit(":", 1)
    else:
        host, port = rest, None
    if family is not None and host not in ("", "*"):
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            ip = None
        if ip is not None and ip.version != family:
            raise ValueError(f"'{host}' is not an IPv{family} address in '{text}'")
    return host, port


def check_host(host: str, text: str) -> str:
    """``host`` if it is an IP literal or a host name, else ``ValueError``."""
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    if _HOSTNAME.match(host) and not host.replace(".", "").isdigit():
        return host
    hint = " (write IPv6 addresses in brackets, like [::1]:80)" if ":" in host else ""
    raise ValueError(f"invalid address '{host}' in '{text}'{hint}")


def parse_port(port: str, text: str) -> int:
    if not port.isdigit() or not port.isascii():
        if port[:1] in "+-" and port[1:].isdigit():
            raise ValueError(f"port offsets are not supported in '{text}'")
        raise ValueError(f"invalid port '{port}' in '{text}'")
    value = int(port)
    if not 1 <= value <= 65535:
        raise ValueError(f"port {value} is out of range 1..65535 in '{text}'")
    return value


def parse_bind_address(text: str) -> list[tuple[str, int]]:
    """One ``bind`` address (no comma): ``[(host, port), ...]``; a port range gives several."""
    host, port = split_host_port(text)
    if not port:
        raise ValueError(f"missing port in address '{text}'")
    host = "" if host in ("", "*") else check_host(host, text)
    if "-" in port:
        low_text, high_text = port.split("-", 1)
        low, high = parse_port(low_text, text), parse_port(high_text, text)
        if high < low:
            raise ValueError(f"empty port range '{port}' in '{text}'")
        if high - low >= 1024:
            raise ValueError(f"port range '{port}' is too wide (more than 1024 ports) in '{text}'")
        return [(host, p) for p in range(low, high + 1)]
    return [(host, parse_port(port, text))]


def parse_server_address(text: str) -> tuple[str, int]:
    """A ``server`` address: ``host:port`` with a port (HAProxy's port-less form is refused)."""
    host, port = split_host_port(text)
    if not port:
        raise ValueError(f"missing port in address '{text}' (expected <host>:<port>)")
    if host in ("", "*"):
        raise ValueError(f"missing host in address '{text}'")
    return check_host(host, text), parse_port(port, text)


def parse_source_address(text: str) -> str:
    """A ``source`` address, ``ip[:port]``, normalised: ``1.2.3.4``, ``1.2.3.4:5000``, ``::1`` (bare
    when there is no port) or ``[::1]:5000``. Port 0 means "any port"; port ranges are refused."""
    try:  # a bare address first: "::1" is an IPv6 address here, not host ":" and port 1
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    host, port = split_host_port(text)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"invalid source address '{host}' in '{text}' (expected an IP address)") from None
    if not port:
        return str(ip)
    if "-" in port:
        raise ValueError(f"source port ranges are not supported in '{text}'")
    number = 0 if port == "0" else parse_port(port, text)
    return f"[{ip}]:{number}" if ip.version == 6 else f"{ip}:{number}"


def resolve_server_host(host: str, port: int) -> str:
    """A server's host as an address: itself when it is an IP literal, else the first address it
    resolves to (OSError or UnicodeError when it does not)."""
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    return str(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4][0])


SUN_PATH_MAX = 107  # bytes of a Unix socket path, without the NUL that ends it in sun_path
_LOG_UDP_PREFIXES = {"udp@": None, "udp4@": 4, "udp6@": 6, "ipv4@": 4, "ipv6@": 6}


def parse_log_address(text: str) -> tuple[str, int, Any]:
    """A ``log`` target: ``("fd", 0, 1 or 2)``, ``("unix", AF_UNIX, path)`` or ``("udp", family,
    (ip, port))``, the host resolved now (``ValueError`` when it cannot be)."""
    if text in ("stdout", "fd@1"):
        return "fd", 0, 1
    if text in ("stderr", "fd@2"):
        return "fd", 0, 2
    if text.startswith("unix@"):
        text = text[5:]
        if not text.startswith("/"):
            raise ValueError(f"a Unix socket path must be absolute in 'unix@{text}'")
    if text.startswith("/"):
        if "\0" in text:
            raise ValueError(f"a NUL byte in the Unix socket path {text!r}")
        return "unix", socket.AF_UNIX, text
    family = None
    prefix, at, rest = text.partition("@")
    if at:
        if prefix + "@" not in _LOG_UDP_PREFIXES:
            kind = "TCP" if prefix.startswith("tcp") else f"'{prefix}@'"
            supported = "UDP, a Unix socket, stdout, stderr"
            raise ValueError(f"{kind} log targets are not supported in '{text}' ({supported})")
        family, text = _LOG_UDP_PREFIXES[prefix + "@"], rest
    try:  # a bare IPv6 literal: no port
        ip = ipaddress.ip_address(text)
        host, port_text = str(ip), None
    except ValueError:
        host, port_text = split_host_port(text)
    if not host:
        raise ValueError(f"missing host in log target '{text}'")
    host = check_host(host, text)
    port = parse_port(port_text, text) if port_text is not None else 514
    want = {None: socket.AF_UNSPEC, 4: socket.AF_INET, 6: socket.AF_INET6}[family]
    try:
        infos = socket.getaddrinfo(host, port, want, socket.SOCK_DGRAM)
    except (OSError, UnicodeError) as exc:
        raise ValueError(f"could not resolve address '{host}' in '{text}' ({exc})") from None
    # Without a prefix, IPv4 first ("localhost" may list ::1 first, where a syslog daemon bound to
    # 127.0.0.1 would lose every line)
    af, _, _, _, sockaddr = min(infos, key=lambda info: info[0] != socket.AF_INET)
    return "udp", int(af), (sockaddr[0], sockaddr[1])
