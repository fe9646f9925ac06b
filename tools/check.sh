#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what the tests need, then runs
# ruff, mypy and pytest. `.ci/run` runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v apt-get >/dev/null 2>&1; then
    missing=""
    # haproxy: the tests compare formats with HAProxy's real output (runtime API, log formats, warnings)
    # hey: the reference lab's smoke test (tests/test_lab_tool.py) drives both proxies with it
    # chromium: the stats page is loaded in a real headless browser
    # h2load (Debian package nghttp2-client): the HTTP/2 load tests and tools/bench.py --h2
    # openssl: the TLS tests make their certificate with it
    for pair in curl:curl socat:socat haproxy:haproxy hey:hey chromium:chromium h2load:nghttp2-client \
                openssl:openssl; do
        tool=${pair%%:*}
        command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing="$missing ${pair#*:}"
    done
    # systemd-analyze (package systemd): tests/test_cmdline.py verifies conf/poolproxy.service with it
    command -v systemd-analyze >/dev/null 2>&1 || missing="$missing systemd"
    if [ -n "$missing" ]; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq && apt-get install -y -qq $missing >/dev/null
    fi
fi
python3 -m pip install -q --disable-pip-version-check -e '.[test]'

python3 -m ruff check proxy tools tests
python3 -m mypy
python3 -m pytest -q -p no:cacheprovider "$@"
# The hot path runs compiled by mypyc (proxy/native.py); its Python source is the fallback: the unit
# tests once more on it (about a minute; tests/test_native.py runs a real proxy on it too).
POOLPROXY_PURE=1 python3 -m pytest -q -p no:cacheprovider -m "not e2e" "$@"
