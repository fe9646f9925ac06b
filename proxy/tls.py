"""TLS listeners: the server-side ``ssl.SSLContext`` of a ``bind ... ssl crt PEM`` line (pure: no
event loop; the worker hands the context to its event loop's server).

What applies, HAProxy's way: the ``global`` section's ``ssl-default-bind-options``,
``ssl-default-bind-ciphers`` and ``ssl-default-bind-ciphersuites``, then the bind line's own
``ciphers``, ``ssl-min-ver``/``ssl-max-ver``, ``no-tlsv1x``... (a setting on the line wins).

- Versions: ``ssl-min-ver``/``ssl-max-ver`` bound them; ``no-sslv3``, ``no-tlsv10``... turn versions
  off, which moves the bounds past them (a hole in the middle is refused: OpenSSL can only bound).
  The default minimum is TLSv1.2, as HAProxy's. SSLv3 is never offered (Python's ``ssl`` has none).
- ``no-tls-tickets``: no session tickets. The server's cipher order is preferred unless
  ``prefer-client-ciphers``.
- ``ciphersuites`` (TLS 1.3): Python's ``ssl`` module cannot set them, so the only list accepted
  is OpenSSL's default one (in any order, which is what Debian's stock configuration says); any
  other is refused with the reason, never ignored.
- ``alpn h2,http/1.1``: offered by ALPN in that order; without ``alpn``, no ALPN (HTTP/1.1).
- ``crt``: one PEM file holding the certificate chain and its private key. A directory or a
  ``crt-list`` is refused. An unreadable or invalid file is a ``TlsError`` naming the file.
"""

from __future__ import annotations

import os
import ssl

from proxy.config.model import BindTls, TlsOptions

VERSIONS: dict[str, ssl.TLSVersion] = {
    "SSLv3": ssl.TLSVersion.SSLv3,
    "TLSv1.0": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}
ORDER = tuple(VERSIONS)
# ``no-sslv3`` ... ``no-tlsv13``: the version each turns off
NO_VERSION = {"no-sslv3": "SSLv3", "no-tlsv10": "TLSv1.0", "no-tlsv11": "TLSv1.1", "no-tlsv12": "TLSv1.2",
              "no-tlsv13": "TLSv1.3"}  # fmt: skip
DEFAULT_MIN = "TLSv1.2"
# OpenSSL's default TLS 1.3 suites: the only list Python's ssl can honour (by not setting any)
DEFAULT_SUITES = frozenset(
    {"TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_GCM_SHA256"}
)
ALPN_KNOWN = frozenset({"h2", "http/1.1"})


class TlsError(ValueError):
    """A TLS setting that cannot be applied; the message says which and why."""


def check_ciphersuites(value: str) -> None:
    suites = {s for s in value.split(":") if s}
    if suites != DEFAULT_SUITES:
        raise TlsError(
            f"TLS 1.3 cipher suites '{value}' cannot be applied: Python's ssl module cannot set them "
            f"(only OpenSSL's default list is accepted: {':'.join(sorted(DEFAULT_SUITES))})"
        )


def parse_alpn(value: str) -> tuple[str, ...]:
    protos = tuple(p for p in value.split(",") if p)
    unknown = [p for p in protos if p not in ALPN_KNOWN]
    if not protos or unknown:
        raise TlsError(f"alpn '{value}': poolproxy speaks h2 and http/1.1 only")
    return protos


def merged(line: TlsOptions, defaults: TlsOptions) -> TlsOptions:
    """The bind line's options over the ``ssl-default-bind-*`` ones."""
    return TlsOptions(
        min_ver=line.min_ver or defaults.min_ver,
        max_ver=line.max_ver or defaults.max_ver,
        disabled=line.disabled | defaults.disabled,
        no_tickets=line.no_tickets if line.no_tickets is not None else defaults.no_tickets,
        prefer_client_ciphers=(
            line.prefer_client_ciphers
            if line.prefer_client_ciphers is not None
            else defaults.prefer_client_ciphers
        ),
        ciphers=line.ciphers or defaults.ciphers,
        ciphersuites=line.ciphersuites or defaults.ciphersuites,
    )


def version_bounds(opts: TlsOptions) -> tuple[str, str]:
    """(lowest, highest) version enabled; TlsError when none is, or when the enabled ones have a hole."""
    lo = ORDER.index(opts.min_ver or DEFAULT_MIN)
    hi = ORDER.index(opts.max_ver or "TLSv1.3")
    enabled = [v for v in ORDER[lo : hi + 1] if v not in opts.disabled]
    if not enabled:
        raise TlsError("every TLS version is disabled (ssl-min-ver, ssl-max-ver, no-tlsv1x)")
    first, last = ORDER.index(enabled[0]), ORDER.index(enabled[-1])
    if len(enabled) != last - first + 1:
        raise TlsError(f"TLS versions enabled with a hole between them: {', '.join(enabled)}")
    if enabled[0] == "SSLv3":
        enabled = enabled[1:] or enabled
    return enabled[0], enabled[-1]


def server_context(tls: BindTls, defaults: TlsOptions) -> ssl.SSLContext:
    """The context a TLS listener serves with; TlsError says what is wrong."""
    crt = tls.crt
    if os.path.isdir(crt):
        raise TlsError(f"'{crt}' is a directory: poolproxy loads one PEM file per bind line (no directory)")
    opts = merged(tls.options, defaults)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(crt)
    except FileNotFoundError:
        raise TlsError(f"unable to load SSL certificate file '{crt}': file not found") from None
    except (ssl.SSLError, OSError) as exc:
        why = getattr(exc, "reason", None) or exc.strerror or str(exc)
        raise TlsError(
            f"unable to load SSL certificate and private key from PEM file '{crt}': it must hold the"
            f" certificate chain and its private key (OpenSSL: {why})"
        ) from None
    lo, hi = version_bounds(opts)
    try:
        ctx.minimum_version = VERSIONS[lo]
        ctx.maximum_version = VERSIONS[hi]
    except (ValueError, ssl.SSLError) as exc:
        raise TlsError(f"TLS versions {lo}..{hi}: {exc}") from None
    if opts.ciphers:
        try:
            ctx.set_ciphers(opts.ciphers)
        except ssl.SSLError:
            raise TlsError(f"unable to set the cipher list '{opts.ciphers}'") from None
    if opts.ciphersuites:
        check_ciphersuites(opts.ciphersuites)
    if opts.no_tickets:
        ctx.options |= ssl.OP_NO_TICKET
    if opts.prefer_client_ciphers:
        ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    if tls.alpn:
        ctx.set_alpn_protocols(list(tls.alpn))
    return ctx


def apply_option(opts: TlsOptions, words: list[str]) -> int:
    """Apply the option that starts ``words`` (``ssl-default-bind-options`` or a bind line's);
    returns how many words it took. TlsError for an unknown option or a bad value."""
    word = words[0]
    if word in ("ssl-min-ver", "ssl-max-ver"):
        if len(words) < 2 or words[1] not in VERSIONS:
            raise TlsError(f"'{word}' expects one of {', '.join(ORDER)}")
        if word == "ssl-min-ver":
            opts.min_ver = words[1]
        else:
            opts.max_ver = words[1]
        return 2
    if word in NO_VERSION:
        opts.disabled = opts.disabled | {NO_VERSION[word]}
        return 1
    if word.startswith("force-") and "no-" + word[6:] in NO_VERSION:
        opts.min_ver = opts.max_ver = NO_VERSION["no-" + word[6:]]
        return 1
    if word == "no-tls-tickets":
        opts.no_tickets = True
        return 1
    if word == "prefer-client-ciphers":
        opts.prefer_client_ciphers = True
        return 1
    raise TlsError(
        f"unknown TLS option '{word}' (supported: ssl-min-ver, ssl-max-ver, no-sslv3, no-tlsv10, no-tlsv11, "
        "no-tlsv12, no-tlsv13, force-tlsv1x, no-tls-tickets, prefer-client-ciphers)"
    )
