#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what the tests need, then runs
# ruff, mypy and pytest. `.ci/run` runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v apt-get >/dev/null 2>&1; then
    missing=""
    # haproxy: the tests compare formats with HAProxy's real output (runtime API, log formats, warnings)
    # openssl: the TLS end-to-end tests make their test certificate with it
    for tool in curl socat haproxy openssl; do
        command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing="$missing $tool"
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
