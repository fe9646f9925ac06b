"""``http-request``, ``http-response`` and ``http-after-response`` rules, and the unique id keywords.

Each supported action is a keyword of its own (``http-request set-header``...) whose parse function
builds a ``model.HttpRule`` appended to the proxy's list for that rule set, in the order written;
``proxy.rules`` carries them out. Values are HAProxy log-format expressions (``proxy.logformat``),
parsed here: an expression that cannot be parsed, or that reads what its rule set cannot see (the
response in a request rule, the request's headers in a response rule), is an error at load time,
worded as HAProxy's ("error detected in frontend 'fe' while parsing 'http-request set-header' rule :
..."). Actions:

- all three sets: ``set-header``, ``add-header``, ``del-header [-m str|beg|end|sub|reg]``,
  ``replace-header``, ``replace-value``, ``allow``, ``strict-mode on|off``;
- ``http-request`` also: ``set-path``, ``set-query``, ``set-uri``, ``redirect``, ``deny
  [deny_status <code>]``, ``return``;
- ``http-response`` also: ``deny [deny_status <code>]`` (502 by default).

Every other action HAProxy has is refused with the list of the supported ones. Rules are refused
in ``defaults`` sections (HAProxy accepts them only in named ones), as before.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from proxy.config.acl_syntax import parse_condition
from proxy.config.errors import DirectiveError
from proxy.config.kwtypes import FRONT, RULES, Directive, Keyword, Section, SectionState, unsupported
from proxy.config.model import Condition, HttpReturn, HttpRule, Redirect
from proxy.config.timeunit import parse_int
from proxy.logformat import FormatError, LogFormat, Stage, parse

DEFAULTS = frozenset({Section.DEFAULTS})
SETS = {"http-request": Stage.REQUEST, "http-response": Stage.RESPONSE, "http-after-response": Stage.RESPONSE}
REDIRECT_CODES = (301, 302, 303, 307, 308)
DEL_MATCHES = ("str", "beg", "end", "sub", "reg")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


class _Rule:
    """The words of one rule line, and the error wording for it."""

    def __init__(self, st: SectionState, d: Directive) -> None:
        self.st = st
        self.d = d
        self.set_name, _, self.action = d.keyword.partition(" ")
        self.stage = SETS[self.set_name]
        args = list(d.args)
        cut = next((i for i, w in enumerate(args) if w in ("if", "unless")), len(args))
        self.args, self.cond_words = args[:cut], args[cut:]

    def fail(self, text: str) -> DirectiveError:
        where = f"{self.st.section.value} '{self.st.px.name}'"
        return DirectiveError(f"error detected in {where} while parsing '{self.d.keyword}' rule : {text}")

    def expect(self, count: int, what: str = "") -> None:
        if len(self.args) != count:
            plural = "s" if count > 1 else ""
            raise self.fail(f"expects exactly {count} argument{plural}{' ' + what if what else ''}.")

    def fmt(self, text: str) -> LogFormat:
        try:
            return parse(text, self.stage)
        except FormatError as exc:
            raise self.fail(str(exc)) from None

    def header(self, name: str) -> bytes:
        if not _HEADER_NAME.match(name):
            raise self.fail(f"invalid header name '{name}'.")
        return name.encode()

    def regex(self, text: str) -> re.Pattern[bytes]:
        try:
            return re.compile(text.encode())
        except re.error as exc:
            raise self.fail(f"invalid regular expression '{text}': {exc}.") from None

    def cond(self) -> Condition | None:
        if not self.cond_words:
            return None
        return parse_condition(self.cond_words, self.st.px.acls.get, self.d.where, self.d.keyword)

    def add(self, rule: HttpRule) -> None:
        rule.cond = self.cond()
        rule.where = self.d.where
        getattr(self.st.px, self.set_name.replace("-", "_")).append(rule)


def _set_header(st: SectionState, d: Directive) -> None:
    r = _Rule(st, d)
    r.expect(2)
    r.add(HttpRule(r.action, name=r.header(r.args[0]), fmt=r.fmt(r.args[1])))


def _del_header(st: SectionState, d: Directive) -> None:
    r = _Rule(st, d)
    if len(r.args) == 3 and r.args[1] == "-m":
        if r.args[2] not in DEL_MATCHES:
            raise r.fail(f"unsupported matching method '{r.args[2]}' (expected {', '.join(DEL_MATCHES)}).")
        match = r.args[2]
    elif len(r.args) == 1:
        match = "str"
    else:
        raise r.fail("expects exactly 1 argument, optionally followed by '-m <method>'.")
    rule = HttpRule("del-header", match=match)
    if match == "reg":
        try:
            rule.regex = re.compile(r.args[0].encode(), re.IGNORECASE)  # header names: any case
        except re.error as exc:
            raise r.fail(f"invalid regular expression '{r.args[0]}': {exc}.") from None
    else:
        rule.name = r.args[0].encode()
    r.add(rule)


def _replace_header(st: SectionState, d: Directive) -> None:
    r = _Rule(st, d)
    r.expect(3)
    r.add(HttpRule(r.action, name=r.header(r.args[0]), regex=r.regex(r.args[1]), fmt=r.fmt(r.args[2])))


def _set_target(st: SectionState, d: Directive) -> None:
    r = _Rule(st, d)
    r.expect(1, "<format>")
    r.add(HttpRule(r.action, fmt=r.fmt(r.args[0])))


def _allow(st: SectionState, d: Directive) -> None:
    r = _Rule(st, d)
    r.expect(0)
    r.add(HttpRule("allow"))


def _strict_mode(st: SectionState, d: Directive) -> None:
    r = _Rule(st, d)
    if len(r.args) != 1 or r.args[0] not in ("on", "off"):
        raise r.fail("expects 'on' or 'off' as argument.")
    r.add(HttpRule("strict-mode", strict=r.args[0] == "on"))


def _deny(st: SectionState, d: Directive) -> None:
    r = _Rule(st, d)
    status = 403 if r.stage is Stage.REQUEST else 502
    args = list(r.args)
    while args:
        opt = args.pop(0)
        if opt != "deny_status":
            raise r.fail(f"'{opt}' is not supported yet (supported: deny_status <code>).")
        if not args:
            raise r.fail("missing status code after 'deny_status'.")
        code = args.pop(0)
        try:
            status = parse_int(code, 200, 599)
        except ValueError:
            raise r.fail(f"Unexpected status code '{code}'.") from None
    r.add(HttpRule("deny", status=status))


def _redirect(st: SectionState, d: Directive) -> None:
    r = _Rule(st, d)
    args = list(r.args)
    kind: str | None = None
    value = ""
    code, drop_query, append_slash = 302, False, False
    while args:  # options may come before the type, as in HAProxy ("redirect code 301 prefix /")
        opt = args.pop(0)
        if opt in ("location", "prefix", "scheme"):
            if not args:
                raise r.fail(f"missing argument for '{opt}'.")
            kind, value = opt, args.pop(0)
        elif opt == "code":
            text = args.pop(0) if args else ""
            if not text.isdigit() or int(text) not in REDIRECT_CODES:
                raise r.fail(
                    f"'code': unsupported HTTP code '{text}' (must be one of 301, 302, 303, 307 or 308)."
                )
            code = int(text)
        elif opt == "drop-query":
            drop_query = True
        elif opt == "append-slash":
            append_slash = True
        elif opt in ("set-cookie", "clear-cookie", "ignore-empty"):
            raise r.fail(f"'{opt}' is not supported yet (supported: code, drop-query, append-slash).")
        else:
            raise r.fail(
                "expects 'code', 'drop-query', 'append-slash', 'set-cookie', 'clear-cookie' or"
                f" 'ignore-empty', but got '{opt}'."
            )
    if kind is None:
        raise r.fail("redirection type expected ('prefix', 'location', or 'scheme').")
    r.add(HttpRule("redirect", redirect=Redirect(kind, r.fmt(value), code, drop_query, append_slash)))


def _read_file(r: _Rule, path: str) -> bytes:
    try:
        with open(r.st.path(path), "rb") as f:
            return f.read()
    except OSError as exc:
        raise r.d.fail(f"cannot read file '{path}': {exc.strerror}") from None


def _return(st: SectionState, d: Directive) -> None:
    r = _Rule(st, d)
    ret = HttpReturn(where=d.where)
    body_from: str | None = None
    args = list(r.args)
    while args:
        opt = args.pop(0)
        if opt in ("errorfile", "errorfiles", "default-errorfiles", "lf-file"):
            raise d.fail(
                f"'{opt}' is not supported yet"
                " (supported: status, content-type, string, lf-string, file, hdr)"
            )
        if opt not in ("status", "content-type", "string", "lf-string", "file", "hdr"):
            raise d.fail(
                f"unknown argument '{opt}' (expected status, content-type, string, lf-string,"
                " file, hdr, if or unless)"
            )
        if not args:
            raise d.fail(f"'{opt}' expects a value")
        value = args.pop(0)
        if opt == "status":
            try:
                ret.status = parse_int(value, 200, 599)
            except ValueError as exc:
                raise d.fail(f"status: {exc}") from None
        elif opt == "content-type":
            ret.content_type = value
        elif opt == "hdr":
            if not args:
                raise d.fail("'hdr' expects a name and a value: hdr <name> <fmt>")
            ret.headers.append((r.header(value), r.fmt(args.pop(0))))
        else:
            if body_from is not None:
                raise d.fail(f"'{opt}' conflicts with '{body_from}': give one body only")
            body_from = opt
            if opt == "string":
                ret.body = value.encode()
            elif opt == "lf-string":
                fmt = r.fmt(value)
                constant = fmt.constant
                if constant is None:
                    ret.body_fmt = fmt
                else:
                    ret.body = constant
            else:
                ret.body = _read_file(r, value)
    if body_from in ("string", "lf-string") or (body_from == "file" and ret.body):
        if ret.content_type is None:
            raise d.fail(f"'{body_from}' requires a 'content-type'")
    else:
        ret.content_type = None  # HAProxy ignores it without a body
    rule = HttpRule("return", ret=ret)
    r.add(rule)
    ret.cond = rule.cond


SERVICES = ("prometheus-exporter",)


def _use_service(st: SectionState, d: Directive) -> None:
    r = _Rule(st, d)
    r.expect(1, "<service-name>")
    if r.args[0] not in SERVICES:
        raise r.fail(f"unknown service '{r.args[0]}' (supported: {', '.join(SERVICES)}).")
    r.add(HttpRule("use-service", name=r.args[0].encode()))


def _unique_id_format(st: SectionState, d: Directive) -> None:
    d.expect(1, "<format>")
    try:
        st.px.unique_id_format = parse(d.args[0], Stage.REQUEST) if d.args[0] else None
    except FormatError as exc:
        raise d.fail(str(exc)) from None


def _unique_id_header(st: SectionState, d: Directive) -> None:
    d.expect(1, "<name>")
    if not _HEADER_NAME.match(d.args[0]):
        raise d.fail(f"invalid header name '{d.args[0]}'")
    st.px.unique_id_header = d.args[0].encode()


ParseFn = Callable[[SectionState, Directive], None]
_HEADER_ACTIONS: list[tuple[str, str, str, ParseFn]] = [
    ("set-header", "<name> <fmt>", "Set a header (every earlier value removed) to the expression's value.",
     _set_header),
    ("add-header", "<name> <fmt>", "Add a header with the expression's value.", _set_header),
    ("del-header", "<name> [-m str|beg|end|sub|reg]", "Remove every header whose name matches.",
     _del_header),
    ("replace-header", "<name> <regex> <fmt>",
     "Replace a header's whole value that matches <regex> (\\1.. are its groups).", _replace_header),
    ("replace-value", "<name> <regex> <fmt>",
     "As replace-header, for each comma-separated value of the header.", _replace_header),
    ("allow", "", "Stop evaluating the rules of this set in this proxy.", _allow),
    ("strict-mode", "on|off", "Whether a rewrite that fails (CR, LF, NUL) fails the exchange (500).",
     _strict_mode),
]  # fmt: skip
_REQUEST_ONLY: list[tuple[str, str, str, ParseFn]] = [
    ("set-path", "<fmt>", "Replace the request path (the query is kept).", _set_target),
    ("set-query", "<fmt>", "Replace the query string (empty: remove it with its '?').", _set_target),
    ("set-uri", "<fmt>", "Replace the whole request target.", _set_target),
    ("redirect", "location|prefix|scheme <fmt> [code <code>] [drop-query] [append-slash]",
     "Answer with a redirection (302 unless 'code' says otherwise).", _redirect),
    ("deny", "[deny_status <code>]", "Answer with the error page for <code> (403).", _deny),
    ("return", "[status <code>] [content-type <type>] [string <str> | lf-string <fmt> | file <path>]"
     " [hdr <name> <fmt>]...", "Answer the request directly with this response.", _return),
    ("use-service", "prometheus-exporter",
     "Answer with a service: 'prometheus-exporter' (the metrics, HAProxy's names and ours).",
     _use_service),
]  # fmt: skip
_RESPONSE_ONLY: list[tuple[str, str, str, ParseFn]] = [
    ("deny", "[deny_status <code>]", "Replace the response by the error page for <code> (502).", _deny),
]

KEYWORDS: list[Keyword] = []
for _set, _own in (("http-request", _REQUEST_ONLY), ("http-response", _RESPONSE_ONLY),
                   ("http-after-response", [])):  # fmt: skip
    for _action, _synopsis, _doc, _fn in _HEADER_ACTIONS + _own:
        _cond = " [if|unless <condition>]"
        KEYWORDS.append(Keyword(f"{_set} {_action}", RULES, _synopsis + _cond, _doc, _fn))
        KEYWORDS.append(unsupported(f"{_set} {_action}",
                                    "not supported in 'defaults' sections yet (declare it in each proxy)",
                                    DEFAULTS))  # fmt: skip

KEYWORDS += [
    Keyword("unique-id-format", FRONT, "<fmt>",
            "How the request's unique id (%ID, unique-id) is made, a log-format expression.",
            _unique_id_format, default="none"),
    Keyword("unique-id-header", FRONT, "<name>", "Send the unique id to the server in this header.",
            _unique_id_header, default="none"),
]  # fmt: skip

_SUPPORTED = {
    name: ", ".join(a for a, *_ in _HEADER_ACTIONS + own)
    for name, own in (("http-request", _REQUEST_ONLY), ("http-response", _RESPONSE_ONLY),
                      ("http-after-response", []))
}  # fmt: skip
_REFUSED = {
    "http-request": (
        "tarpit", "auth", "replace-path", "replace-pathq", "replace-uri", "set-pathq", "set-method",
        "set-var", "set-var-fmt", "unset-var", "set-src", "set-src-port", "set-dst", "set-dst-port",
        "capture", "set-log-level", "set-nice", "set-mark", "set-tos", "track-sc0", "track-sc1",
        "track-sc2", "lua", "wait-for-body", "wait-for-handshake", "early-hint",
        "normalize-uri", "cache-use", "silent-drop", "reject", "set-timeout", "disable-l7-retry",
        "set-map", "del-map", "add-acl", "del-acl", "do-resolve", "set-priority-class",
        "set-priority-offset", "set-bandwidth-limit", "sc-inc-gpc0", "sc-inc-gpc1", "sc-set-gpt0",
        "send-spoe-group",
    ),
    "http-response": (
        "set-status", "redirect", "return", "set-var", "set-var-fmt", "unset-var", "capture",
        "set-log-level", "set-nice", "set-mark", "set-tos", "track-sc0", "track-sc1", "track-sc2",
        "lua", "cache-store", "silent-drop", "set-map", "del-map", "add-acl", "del-acl", "wait-for-body",
        "sc-inc-gpc0", "sc-inc-gpc1", "sc-set-gpt0", "send-spoe-group", "set-bandwidth-limit",
    ),
    "http-after-response": (
        "set-status", "set-var", "set-var-fmt", "unset-var", "capture", "set-map", "del-map", "add-acl",
        "del-acl", "sc-inc-gpc0", "sc-inc-gpc1", "sc-set-gpt0", "set-log-level",
    ),
}  # fmt: skip
KEYWORDS += [
    unsupported(
        f"{rule_set} {action}", f"not supported yet (supported {rule_set} actions: {_SUPPORTED[rule_set]})"
    )
    for rule_set, actions in _REFUSED.items()
    for action in actions
]
