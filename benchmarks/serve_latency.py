"""Playground latency in a real browser: headless Chromium (Debian's) driving `ravine serve`.

Measured, each against its goal and beside the server's own compute time for the same work
(``ravine.viz.run`` called in this process, no HTTP or browser, timed between the browser's
samples: the reference for the overhead):

- page ready: from starting ``ravine serve`` (a fresh process) to the frame of its first page
  (the default picture: the 7 classic optimizers on Beale, 200 steps) with every path drawn
  (<= 2 s), read from the page's own clock (``performance.timeOrigin``); shown
  beside it: when the server printed its address (it serves the page from then on), when the
  page had its controls and contour map drawn, and when the server had loaded its playground
  (from then on it computes every request). Servers that answer the first page from the start
  cache (``ravine.serve.startcache``; a temporary one, filled by one untimed start) alternate
  with servers started with ``--no-start-cache`` (the first start after an install or upgrade)
- slider to redraw: one optimizer's lr slider moved to the frame its new path is drawn in,
  on Beale with 7 optimizers x 300 steps (only that one is recomputed) (p95 <= 100 ms)
- click to all paths: a click on the contour to the frame all 7 new paths (300 steps each)
  are drawn in (p95 <= 350 ms)
- first path: the same click to the first path drawn (an exact prefix of it; p95 <= 60 ms)

Each interactive figure is broken down (medians) from the page's own marks and the time the
server reports in its last line: input to request sent, the server (checking, computing, JSON,
sending), the rest of the transfer, and drawing up to the frame that shows it.

The slider and click figures are taken with ``ravine serve``'s default worker processes (one per
core but one, at most 4), and with ``--other`` also with the other choice (``--workers 0`` where
the default has workers, ``--workers 2`` where it has none).

``--against OTHER/src`` alternates page ready with fresh servers of another checkout (a
``git worktree add /tmp/base HEAD~1``, compiled with ``python -m compileall -q``): a change's
effect on start-up, paired, on a machine whose speed drifts over minutes.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/serve_latency.py [--repeats 20]``
(needs /usr/bin/chromium: ``sudo bash scripts/ci/40-chromium.sh``; and ``pip install playwright``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from ravine.serve import chromium

STEPS = 300
QUERY = f"?surface=beale&steps={STEPS}"
#: The start-up moments, in the order they come.
ORDER = ("address printed", "page shown", "page ready", "loaded")
GOALS_MS = {
    "page ready": 2000,
    "slider to redraw": 100,
    "click to all paths": 350,
    "first path": 60,
}

# Resolves once a new input has been followed by the wanted paths, at the animation frame after
# they were drawn (so the time includes the frame that shows them), with the marks since then.
WAIT_JS = """
async ([n0, ids, first]) => {
  const done = () => {
    const m = window.ravineMetrics.slice(n0);
    const input = m.find(x => x.kind === 'input');
    if (!input) return null;
    const drawn = m.filter(x => x.kind === 'drawn' && x.t >= input.t);
    if (first) return drawn.length ? input.t : null;
    const full = new Set(drawn.filter(x => !x.partial).map(x => x.id));
    return ids.every(id => full.has(id)) ? input.t : null;
  };
  const deadline = performance.now() + 60000;  // bounded: a lost update fails the run
  return await new Promise((resolve, reject) => {
    const check = () => {
      const t0 = done();
      if (t0 !== null) resolve({ms: performance.now() - t0, marks: window.ravineMetrics.slice(n0)});
      else if (performance.now() > deadline) reject(new Error('no redraw within 60 s'));
      else requestAnimationFrame(check);
    };
    check();
  });
}
"""
PHASES = ("to request", "server", "transfer", "draw + frame")


def phases(result: dict[str, Any]) -> dict[str, float] | None:
    """Where one sample's time went, from the page's marks (None if a mark is missing: the
    request that drew was not the first one sent after the input)."""
    marks = result["marks"]
    try:
        t_in = next(m["t"] for m in marks if m["kind"] == "input")
        t_req = next(m["t"] for m in marks if m["kind"] == "request" and m["t"] >= t_in)
        lines = [m["t"] for m in marks if m["kind"] == "line" and m["t"] >= t_req]
        server = next(m["server"] for m in marks if m["kind"] == "done" and m["t"] >= t_req)
    except StopIteration:
        return None
    if not lines or server is None:
        return None
    received = max(lines)
    return {
        "to request": t_req - t_in,
        "server": server,
        "transfer": max(0.0, received - t_req - server),
        "draw + frame": result["ms"] - (received - t_in),
    }


def moment(name: str) -> str:
    """A start-up figure's moment: "page ready" of "page ready, no start cache"."""
    return re.split(r",| \(", name)[0]


def start_server(
    *extra: str, src: Path | None = None, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], str, float]:
    """``ravine serve --port 0`` in a fresh process, ravine imported from ``src`` (a checkout's
    src folder; None: this environment's), with ``env`` added to the environment: (process,
    url, time it was started)."""
    env = {**os.environ, **(env or {})}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ravine", "serve", "--port", "0", *extra],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    # Bounded: a server that never prints its address is killed, not waited on forever.
    ready, _, _ = select.select([proc.stdout], [], [], 120)
    line = proc.stdout.readline() if ready else ""
    found = re.search(r"http://\S+/", line)
    if not found:
        proc.kill()
        raise RuntimeError(f"ravine serve printed {line!r}")
    return proc, found.group(0), t0


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.wait(timeout=30)


def wait_for_workers(url: str) -> int:
    """The server's worker count, once they have all started (up to two minutes)."""
    deadline = time.monotonic() + 120
    while True:
        with urllib.request.urlopen(url + "api/stats", timeout=30) as resp:
            stats = json.loads(resp.read())
        if stats["workers_ready"] or stats["workers"] == 0 or time.monotonic() > deadline:
            return int(stats["workers"])
        time.sleep(0.2)


# Resolves at the first animation frame in which the page is ready (every default path drawn),
# with that moment on the epoch clock: polled every frame, not by Playwright's selector polling,
# whose 100-500 ms steps added up to half a second to the figure.
READY_JS = """
() => document.body.dataset.ready === 'true' ? performance.timeOrigin + performance.now() : null
"""


def page_ready(browser: Any, repeats: int, against: Path | None = None) -> dict[str, list[float]]:
    """Per fresh server: when it printed its address, when the page showed its controls and
    contour map, the frame in which every default path was drawn, and when the server had its
    playground loaded (ms after ``ravine serve`` started; the page's moments read on the epoch
    clock the browser and this process share).

    Servers with the start cache (in a temporary folder, filled by one untimed start first) and
    without it (``--no-start-cache``: the first start after an install or upgrade) alternate
    (ABBA order); with ``against`` (another checkout's src folder), so do that checkout's
    servers, whose page ready times come as "page ready (against)": paired comparisons that a
    machine's drift over the run moves alike."""
    variants: list[tuple[str, tuple[str, ...], Path | None]] = [
        ("", (), None),
        (", no start cache", ("--no-start-cache",), None),
    ]
    if against is not None:
        variants.append((" (against)", (), against))
    out: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="ravine-serve-cache-") as cache:
        env = {"RAVINE_CACHE_DIR": cache}
        _page_ready_once(browser, {}, "", env=env)  # fills the start cache
        for i in range(repeats):
            for label, extra, src in variants if i % 2 == 0 else variants[::-1]:
                _page_ready_once(browser, out, label, *extra, src=src, env=env)
    return out


def _page_ready_once(
    browser: Any,
    out: dict[str, list[float]],
    label: str,
    *extra: str,
    src: Path | None = None,
    env: dict[str, str] | None = None,
) -> None:
    """One fresh server (ravine from ``src``) and one page load; its moments appended to
    ``out`` under names ending in ``label``."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    proc, url, t0 = start_server(*extra, src=src, env=env)
    # The epoch time at which `ravine serve` was started.
    epoch0 = time.time() - (time.perf_counter() - t0)
    moments: dict[str, float] = {"address printed": 1000 * (time.perf_counter() - t0)}
    try:
        page.goto(url)
        ready = page.wait_for_function(READY_JS, polling="raf", timeout=60_000).json_value()
        moments["page ready"] = ready - 1000 * epoch0
        shown = page.evaluate(
            "performance.timeOrigin + window.ravineMetrics.find(m => m.kind === 'shown').t"
        )
        moments["page shown"] = shown - 1000 * epoch0
        # /api/stats waits for the playground: from then on every request is computed.
        with urllib.request.urlopen(url + "api/stats", timeout=120) as resp:
            resp.read()
        moments["loaded"] = 1000 * (time.perf_counter() - t0)
        time.sleep(0.3)  # the paths' answer is kept after it is sent: let the file be written
    finally:
        page.close()
        stop(proc)
    for name in ("address printed", "page shown", "page ready", "loaded"):
        out.setdefault(name + label, []).append(moments[name])


def run_ids(page: Any) -> dict[str, int]:
    return page.evaluate(
        "() => Object.fromEntries([...document.querySelectorAll('.run')]"
        ".map(c => [c.dataset.name, Number(c.dataset.id)]))"
    )


def reference(specs: list[str], start: tuple[float, float]) -> float:
    """``ravine.viz.run`` alone, in this process, in ms: the compute the server cannot avoid.
    Timed between the browser's samples, so both see the same machine."""
    from ravine.viz import run

    t0 = time.perf_counter()
    run("beale", specs, steps=STEPS, start=start)
    return 1000 * (time.perf_counter() - t0)


def settled(page: Any, result: dict[str, Any], n0: int) -> None:
    """Wait for the request to end; its marks then include the server's last line."""
    page.wait_for_function("() => document.body.dataset.busy !== 'true'", timeout=60_000)
    result["marks"] = page.evaluate("n => window.ravineMetrics.slice(n)", n0)


def slider(page: Any, repeats: int) -> tuple[list[dict[str, Any]], list[float]]:
    ids = run_ids(page)
    out, ref = [], []
    for k in range(repeats):
        n0 = page.evaluate("window.ravineMetrics.length")
        # distinct values, so none is served from a cache
        page.evaluate(
            """v => { const s = document.querySelector(
                '.run[data-name=adam] input[type=range][data-param=lr]');
              s.value = v; s.dispatchEvent(new Event('input', {bubbles: true})); }""",
            str(700 + 7 * k),
        )
        out.append(page.evaluate(WAIT_JS, [n0, [ids["adam"]], False]))
        settled(page, out[-1], n0)
        ref.append(reference([f"adam:lr={0.01 + k * 1e-4}"], (1.0, 1.5)))
    return out, ref


def clicks(
    page: Any, repeats: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[float]]:
    from ravine.viz.gallery import CLASSIC

    ids = list(run_ids(page).values())
    box = page.locator("#overlay").bounding_box()
    rng = np.random.default_rng(0)
    all_paths, first, ref = [], [], []
    for k in range(repeats):
        # starts around the default one, (1, 1.5): x in [0.5, 2.5], y in [0, 2] of [-4.5, 4.5]^2
        fx, fy = rng.uniform(5.0 / 9, 7.0 / 9), rng.uniform(2.5 / 9, 4.5 / 9)
        n0 = page.evaluate("window.ravineMetrics.length")
        page.mouse.click(
            box["x"] + 34 + fx * (box["width"] - 68), box["y"] + 34 + fy * (box["height"] - 68)
        )
        first.append(page.evaluate(WAIT_JS, [n0, ids, True]))
        all_paths.append(page.evaluate(WAIT_JS, [n0, ids, False]))
        settled(page, all_paths[-1], n0)
        ref.append(reference(list(CLASSIC), (1.0 + k * 1e-3, 1.5)))
    return all_paths, first, ref


def p95(values: list[float]) -> float:
    return float(np.percentile(values, 95))


def interactive(
    browser: Any, repeats: int, *extra: str
) -> tuple[int, dict[str, list[dict[str, Any]]], dict[str, float]]:
    """Slider and click latencies against one ``ravine serve`` (its workers started), and the
    median of ``viz.run`` alone for the same work, timed between them."""
    proc, url, _ = start_server("--no-start-cache", *extra)  # the user's cache untouched
    try:
        workers = wait_for_workers(url)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(url + QUERY)
        page.wait_for_selector("body[data-ready=true]", timeout=60_000)
        slide, slide_ref = slider(page, repeats)
        all_paths, first, click_ref = clicks(page, repeats)
        page.close()
    finally:
        stop(proc)
    samples = {"slider to redraw": slide, "click to all paths": all_paths, "first path": first}
    refs = {
        "slider to redraw": float(np.median(slide_ref)),
        "click to all paths": float(np.median(click_ref)),
    }
    return workers, samples, refs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=20, help="samples per figure (20)")
    parser.add_argument("--ready-repeats", type=int, default=3, help="fresh servers started (3)")
    parser.add_argument(
        "--other", action="store_true", help="also measure the other worker setting"
    )
    parser.add_argument(
        "--against",
        type=Path,
        help="another checkout's src folder: its fresh servers alternate with this one's in the "
        "page ready figure (e.g. a `git worktree` of the previous commit, compiled)",
    )
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from ravine.serve.workers import default_workers

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium.PATH, args=list(chromium.FLAGS))
        ready = page_ready(browser, args.ready_repeats, args.against)
        configs = [interactive(browser, args.repeats)]
        if args.other:
            # The default (one worker per core but one, at most 4) and the other choice.
            other = ["--workers", "0"] if default_workers() else ["--workers", "2"]
            configs.append(interactive(browser, args.repeats, *other))
        browser.close()
    print(f"Beale, {STEPS} steps, the 7 classic optimizers; headless Chromium; times in ms")
    print(
        f"{'figure':<20s} {'server':<10s} {'n':>3s} {'median':>8s} {'p95':>8s} {'goal':>6s}  "
        f"{'met':<4s} {'viz.run alone':>14s} {'p95 / viz.run':>14s}"
    )
    for name, values in sorted(ready.items(), key=lambda kv: ORDER.index(moment(kv[0]))):
        goal = GOALS_MS.get(moment(name))
        met = "" if goal is None else "yes" if p95(values) <= goal else "NO"
        print(
            f"{name:<20s} {'default':<10s} {len(values):3d} {statistics.median(values):8.1f} "
            f"{p95(values):8.1f} {goal or '':>6}  {met:<4s}"
        )
    breakdowns = []
    for workers, samples, refs in configs:
        for name, results in samples.items():
            values = [r["ms"] for r in results]
            ok = "yes" if p95(values) <= GOALS_MS[name] else "NO"
            ref = refs.get(name)
            extra = f" {ref:14.1f} {p95(values) / ref:14.2f}" if ref else ""
            print(
                f"{name:<20s} {'workers=' + str(workers):<10s} {len(values):3d} "
                f"{statistics.median(values):8.1f} {p95(values):8.1f} {GOALS_MS[name]:6d}  "
                f"{ok:<4s}{extra}"
            )
            if name != "first path":
                parts = [p for p in map(phases, results) if p is not None]
                breakdowns.append((name, workers, parts))
    print("\nwhere the time goes (medians, ms; server: checking, computing, JSON and sending)")
    print(f"{'figure':<20s} {'server':<10s} {'n':>3s} " + " ".join(f"{p:>13s}" for p in PHASES))
    for name, workers, parts in breakdowns:
        cells = " ".join(f"{statistics.median(p[k] for p in parts):13.1f}" for k in PHASES)
        print(f"{name:<20s} {'workers=' + str(workers):<10s} {len(parts):3d} {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
