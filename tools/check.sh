#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what the tests need, then runs
# ruff, mypy and pytest. `.ci/run` runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v apt-get >/dev/null 2>&1; then
    missing=""
    # haproxy: the tests compare formats with HAProxy's real output (runtime API, log formats, warnings)
    # h2load (Debian package nghttp2-client): the HTTP/2 load tests and tools/bench.py --h2
    # openssl: the TLS tests make their certificate with it
    for pair in curl:curl socat:socat haproxy:haproxy h2load:nghttp2-client openssl:openssl; do
        tool=${pair%%:*}
        command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing="$missing ${pair#*:}"
    done
    if [ -n "$missing" ]; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq && apt-get install -y -qq $missing >/dev/null
    fi
fi
python3 -m pip install -q --disable-pip-version-check -e '.[test]'

python3 -m ruff check proxy tools tests
python3 -m mypy
python3 -m pytest -q -p no:cacheprovider "$@"
