#!/usr/bin/env bash
# Debian's Chromium and ChromeDriver for the playground's browser tests (tests/test_serve_browser.py)
# and benchmarks/serve_latency.py. Playwright drives this system browser; nothing is downloaded by
# Playwright itself. Idempotent: installs only what is missing.
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    echo "chromium: $(/usr/bin/chromium --version 2>/dev/null || echo present)"
    exit 0
fi
if ! command -v apt-get >/dev/null || [ "$(id -u)" != 0 ]; then
    echo "chromium: not installed and cannot install (needs root and apt-get): run as root" >&2
    exit 1
fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver
/usr/bin/chromium --version
