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
"""

from ravine.serve.playground import Playground, PlaygroundError
from ravine.serve.server import PlaygroundServer, make_server, running

__all__ = ["Playground", "PlaygroundError", "PlaygroundServer", "make_server", "running"]
