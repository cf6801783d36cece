"""The playground: a local page where ravine's optimizers race on loss surfaces.

examples:
  ravine serve                 http://127.0.0.1:8000/ (loopback only)
  ravine serve --port 0 --open a free port, printed, opened in the default browser
  ravine serve --host 0.0.0.0  every interface: anyone who can reach the port can use it
  ravine serve --report report/report.html   the bench lab's report, opened from the page
                               (without --report: ./bench-report/ and ./out/demo/bench-report/)

The page runs every registered optimizer through ravine.viz (what `ravine viz` draws), keeps its
state in the URL, and turns into a `ravine viz` command or a PNG/SVG/GIF/MP4 with one click.
"""

from __future__ import annotations

import argparse
import signal
import sys
import webbrowser
from pathlib import Path
from types import FrameType

DEFAULT_PORT = 8000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback only)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port to bind, 0..65535; 0 picks a free one (default {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes that compute paths besides the server's (which computes a share of "
        "each request too), 0..64 (default: one per core but one, at most 4; none below 3 "
        "cores)",
    )
    parser.add_argument(
        "--report",
        type=Path,
        action="append",
        help="a bench report (HTML from `ravine report`) to open from the page; repeatable "
        "(default: bench-report/report.html and out/demo/bench-report/report.html in the "
        "working folder, where they exist, looked for at each page load)",
    )
    parser.add_argument(
        "--no-start-cache",
        action="store_true",
        help="answer the first page only once the playground is loaded (default: while it "
        "loads, identical first requests are answered as the last server answered them, "
        "kept in $RAVINE_CACHE_DIR or ~/.cache/ravine/serve-start.json and checked after)",
    )
    parser.add_argument("--open", action="store_true", help="open the page in a browser")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    from ravine.serve.server import make_server
    from ravine.serve.startcache import default_path
    from ravine.serve.workers import default_workers

    workers = default_workers() if args.workers is None else args.workers
    try:
        server = make_server(
            args.host,
            args.port,
            verbose=args.verbose,
            workers=workers,
            report=args.report,
            start_cache=None if args.no_start_cache else default_path(),
        )
    except (ValueError, OSError) as err:
        # OSError: the port is taken or the address is not this machine's
        print(
            f"ravine serve: error: --host={args.host} --port={args.port} --workers={workers}: "
            f"{err}",
            file=sys.stderr,
        )
        return 2
    # The address first: the warm-up thread's imports (torch, matplotlib) hold the GIL for
    # hundreds of ms at a time, and the browser's page load should overlap them, not follow.
    print(f"ravine serve: playground at {server.url}  (Ctrl-C stops it)", flush=True)
    # The page is served from here on; the playground (torch, matplotlib, the first optimizer)
    # loads and computes the default picture in the background.
    server.warm_up()
    if server.start_cache is not None:
        print(
            f"ravine serve: start cache {server.start_cache.path} (this page's first answers, "
            "for the next start; --no-start-cache: none)",
            flush=True,
        )
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"ravine serve: warning: bound to {args.host}, not loopback: anyone who can reach "
            "this port can run optimizers here",
            file=sys.stderr,
        )
    if args.open:
        webbrowser.open(server.url)
    # A plain `kill` stops the server as Ctrl-C does, workers included.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
