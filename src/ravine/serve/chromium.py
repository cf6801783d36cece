"""How ravine drives Debian's Chromium (the browser tests and benchmarks/serve_latency.py).

Headless, and nothing that talks to the network on its own: without the background-networking
flags Chromium's own connections are refused on an offline machine, many at a time, and the
page's "zero non-loopback requests" check would see them. ``RAVINE_CHROMIUM`` overrides the path.
"""

from __future__ import annotations

import os

PATH = os.environ.get("RAVINE_CHROMIUM", "/usr/bin/chromium")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
