"""poolproxy's configuration: HAProxy's language (the subset we support) in, ``model.Config`` out.

Public API:

- ``load(paths, *, env=None) -> Config``: read the files (a directory stands for its ``*.cfg`` files
  in lexical order), apply ``defaults`` inheritance and validate. Raises ``ConfigError`` whose
  ``messages`` list every problem found, each naming ``file:line`` and the keyword at fault.
- ``check(paths, *, env=None) -> list[str]``: the same, for ``poolproxy -c``: the alerts
  (an empty list means "Configuration file is valid"). Warnings do not refuse a configuration
  (unless ``zero-warning``/``-dW``): a loaded ``Config`` lists them in ``warnings``,
  ``ConfigError.warnings`` when it is refused.
- ``ConfigError``; the model classes live in ``proxy.config.model``; the keyword registry, which
  also produces ``docs/configuration.md``, in ``proxy.config.keywords``.

``env`` supplies the environment variables for ``${NAME}`` expansion (default: ``os.environ``).
Loading is pure apart from reading the configuration files (and the files named by
``http-request return ... file``): it opens no socket and starts nothing, so the master can load a
new configuration while serving and keep the old one if the new one is refused.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from proxy.config.errors import ConfigError
from proxy.config.model import Config
from proxy.config.parser import parse_files

VALID_MESSAGE = "Configuration file is valid"


def load(paths: list[str], *, env: Mapping[str, str] | None = None, zero_warning: bool = False) -> Config:
    """The validated configuration read from ``paths``; ``ConfigError`` if anything is wrong.
    ``zero_warning`` (``-dW``) refuses a configuration that causes warnings."""
    return parse_files(list(paths), os.environ if env is None else env, zero_warning)


def check(paths: list[str], *, env: Mapping[str, str] | None = None) -> list[str]:
    """Every error message for ``paths``, one line each; empty when the configuration is valid."""
    try:
        load(paths, env=env)
    except ConfigError as exc:
        return exc.messages
    return []


__all__ = ["VALID_MESSAGE", "Config", "ConfigError", "check", "load"]
