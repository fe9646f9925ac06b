"""The stats page keywords of a proxy section: ``stats enable``, ``uri``, ``refresh``,
``show-modules``, ``realm``, ``auth`` (HAProxy's; any of them enables the page, as in HAProxy).
The other ``stats`` words (``admin``, ``scope``, ``hide-version``, ...) are refused with a reason."""

from __future__ import annotations

from proxy.config.kwtypes import ALL_PROXIES, Directive, Keyword, SectionState, unsupported
from proxy.config.model import StatsPage
from proxy.config.timeunit import parse_time


def _page(st: SectionState) -> StatsPage:
    if st.px.stats is None:
        st.px.stats = StatsPage()
    return st.px.stats


def _enable(st: SectionState, d: Directive) -> None:
    d.expect(0, "")
    _page(st)


def _uri(st: SectionState, d: Directive) -> None:
    d.expect(1, "<prefix>")
    _page(st).uri = d.args[0]


def _refresh(st: SectionState, d: Directive) -> None:
    d.expect(1, "<delay>")
    try:
        _page(st).refresh = parse_time(d.args[0])
    except ValueError as exc:
        raise d.fail(f"'stats refresh' {exc}") from None


def _show_modules(st: SectionState, d: Directive) -> None:
    d.expect(0, "")
    _page(st).show_modules = True


def _realm(st: SectionState, d: Directive) -> None:
    if not d.args:
        raise d.fail("'stats realm' needs an realm name.")
    _page(st).realm = " ".join(d.args)


def _auth(st: SectionState, d: Directive) -> None:
    d.expect(1, "<user>:<passwd>")
    user, sep, password = d.args[0].partition(":")
    if not sep or not user:
        raise d.fail("'stats auth' needs a user:password account.")
    _page(st).auth.append((user, password))


_NOT_YET = "not supported yet (poolproxy's stats page: enable, uri, refresh, show-modules, realm, auth)"
KEYWORDS: list[Keyword] = [
    Keyword("stats enable", ALL_PROXIES, "", "Serve the HTML stats page (at 'stats uri').", _enable),
    Keyword("stats uri", ALL_PROXIES, "<prefix>",
            "Requests whose target starts with <prefix> get the stats page (';csv' after it: the CSV).",
            _uri, default="/haproxy?stats"),
    Keyword("stats refresh", ALL_PROXIES, "<delay>", "The page asks the browser to reload it this often.",
            _refresh, default="none"),
    Keyword("stats show-modules", ALL_PROXIES, "",
            "Also show poolproxy's pool columns per worker (idle, safe, used, takeovers).", _show_modules),
    Keyword("stats realm", ALL_PROXIES, "<realm>", "The Basic authentication realm of the page.", _realm,
            default="HAProxy Statistics"),
    Keyword("stats auth", ALL_PROXIES, "<user>:<passwd>",
            "Require Basic authentication with this account (several lines: several accounts).", _auth),
    *(unsupported(f"stats {w}", _NOT_YET) for w in (
        "admin", "scope", "hide-version", "show-legends", "show-desc", "show-node", "http-request")),
]  # fmt: skip
