#!/usr/bin/env bash
# Debian's PostgreSQL server for the bench store's tests (tests/test_bench_store.py starts its own
# throw-away server with initdb/pg_ctl on a unix socket in a temp folder; no service is enabled or
# started here). Idempotent: installs only what is missing. psycopg 3 comes from the Python
# dependencies (the "postgres" extra).
set -euo pipefail
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    echo "postgresql: $(ls -d /usr/lib/postgresql/*/bin | tail -1)"
    exit 0
fi
if ! command -v apt-get >/dev/null || [ "$(id -u)" != 0 ]; then
    echo "postgresql: not installed and cannot install (needs root and apt-get): run as root" >&2
    exit 1
fi
# policy-rc.d 101: the package's post-install must not start a cluster service in CI
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql
ls -d /usr/lib/postgresql/*/bin
