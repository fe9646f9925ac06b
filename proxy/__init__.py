"""poolproxy: a multi-process HTTP reverse proxy with HAProxy-style shared server-side pooling."""

__version__ = "0.1.0"
