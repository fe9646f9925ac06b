"""The request context the rules see: the path of origin-form and absolute-form targets."""

from __future__ import annotations

import pytest

from proxy.frontend import request_ctx
from proxy.message import RequestHead


@pytest.mark.parametrize(
    ("target", "path"),
    [
        (b"/x?y", b"/x"),
        (b"/", b"/"),
        (b"http://a.example/p?q=1", b"/p"),
        (b"http://a.example", b"/"),
        (b"http://a.example:8080/p/q", b"/p/q"),
        # Regression (h1 review): the authority ends at "?" too, so "/y" in the query is no path.
        (b"http://a.example?x=/y", b"/"),
        (b"*", b"*"),
    ],
)
def test_rules_see_the_path_of_the_target(target: bytes, path: bytes) -> None:
    assert request_ctx(RequestHead(b"GET", target, b"1.1", []), "127.0.0.1").path == path
