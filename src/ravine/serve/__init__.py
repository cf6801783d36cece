"""The playground: ``ravine serve``, a local page where ravine's own optimizers race on surfaces.

The server (:mod:`ravine.serve.server`, the standard library's ThreadingHTTPServer) answers the
page from :mod:`ravine.serve.playground`, which runs :func:`ravine.viz.run` (so a path on the
page is the path ``ravine viz`` draws, bit for bit), and serves the page's static files from
``ravine/serve/static`` (nothing from a CDN; works offline).

Example::

    from ravine.serve import make_server

    server = make_server("127.0.0.1", 0)  # port 0: a free port
    print(server.url)
    server.serve_forever()

The names load on first use: ``ravine serve`` binds and serves the page before the playground
(matplotlib, ``ravine.viz``) is imported.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "Playground": "ravine.serve.playground",
    "PlaygroundError": "ravine.serve.errors",
    "PlaygroundServer": "ravine.serve.server",
    "make_server": "ravine.serve.server",
    "running": "ravine.serve.server",
}

__all__ = ["Playground", "PlaygroundError", "PlaygroundServer", "make_server", "running"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'ravine.serve' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
