#!/usr/bin/env bash
# Refresh Debian's package lists once, before the scripts that apt-get install components.
set -euo pipefail
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq
else
    echo "apt-get update skipped (not root or no apt-get)"
fi
