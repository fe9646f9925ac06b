"""poolproxy: a multi-process HTTP reverse proxy with HAProxy-style shared server-side pooling."""

__version__ = "0.1.0"


def _pure() -> None:
    # ``POOLPROXY_PURE=1``: the mypyc-compiled modules are imported from their Python source.
    from proxy.native import install_pure_finder

    install_pure_finder()


_pure()
