"""The keyword registry: every configuration keyword poolproxy knows, declared once.

``REGISTRY`` drives parsing (the parser asks it which keyword a line starts with and calls that
keyword's parse function), validation (sections allowed, ``no`` prefix, unsupported keywords) and the
reference page ``docs/configuration.md`` (``tools/gen_config_doc.py`` renders it from here, and a test
checks that the committed page is current). The declarations live by section in ``kw_global``,
``kw_proxy``, ``kw_server``, ``kw_rules``, ``kw_http`` and ``errorfile``; server parameters in
``kw_server.PARAMS`` and ACL criteria in ``acl_syntax.CRITERIA``, which the reference renders too.

To add a keyword: declare a ``Keyword`` in the module of its section with its parse function, run
``python tools/gen_config_doc.py`` and commit the page with the code.
"""

from __future__ import annotations

from proxy.config import errorfile, kw_global, kw_http, kw_proxy, kw_rules, kw_server
from proxy.config.acl_syntax import CRITERIA, PREDEFINED, Criterion
from proxy.config.kw_server import PARAMS as SERVER_PARAMS
from proxy.config.kw_server import ServerParam
from proxy.config.kwtypes import Keyword, Registry, Section

_ALL = [*kw_global.KEYWORDS, *kw_proxy.KEYWORDS, *kw_server.KEYWORDS, *kw_rules.KEYWORDS, *kw_http.KEYWORDS]
REGISTRY = Registry([*_ALL, *errorfile.KEYWORDS])

# Section names HAProxy has that poolproxy does not read: their whole body is skipped with one error.
UNSUPPORTED_SECTIONS: dict[str, str] = {
    name: "not supported"
    for name in (
        "userlist", "peers", "resolvers", "mailers", "ring", "cache", "program",
        "crt-store", "traces", "log-forward", "fcgi-app", "dynamic-update", "ssl-f-use", "acme",
    )
}  # fmt: skip

__all__ = [
    "CRITERIA",
    "PREDEFINED",
    "REGISTRY",
    "SERVER_PARAMS",
    "UNSUPPORTED_SECTIONS",
    "Criterion",
    "Keyword",
    "Registry",
    "Section",
    "ServerParam",
]
