"""The playground's server over real HTTP, without a browser: what it serves is ravine.viz's.

Trajectories served equal ``ravine.viz.run`` bit for bit; errors are JSON with ravine's own
message; a page's 20 rapid requests leave no backlog; the inspector shows the optimizer's real
state; export writes the file ``ravine viz`` writes; the command it offers parses back.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from import_checks import assert_runs_fresh
from ravine.serve import running
from ravine.serve.playground import (
    MAX_STEPS,
    PREVIEW_STEPS,
    PREVIEW_WORK,
    Playground,
    spec_text,
)
from ravine.viz import parse_specs, plot, run
from ravine.viz.gallery import CLASSIC
from serve_process import ravine_serve

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def server() -> Iterator[Any]:
    with running() as srv:
        yield srv


def request(
    srv: Any, path: str, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(srv.url.rstrip("/") + path, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def trajectories(srv: Any, **body: Any) -> list[dict[str, Any]]:
    status, headers, raw = request(srv, "/api/trajectories", body)
    assert status == 200, raw
    assert headers["Content-Type"] == "application/x-ndjson"
    return [json.loads(line) for line in raw.decode().splitlines()]


def full_runs(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(
        (x for x in lines if "points" in x and not x["partial"]), key=lambda x: x["index"]
    )


CASES = [
    ("beale, the classic seven", "beale", list(CLASSIC), 300, None),
    ("rosenbrock from a given start", "rosenbrock", ["adam:lr=0.05", "nag:lr=0.0005"], 150, "-1,2"),
    ("a formula", "expr:x^2 + 3*sin(y)^2", ["rmsprop:lr=0.05", "radam:lr=0.1"], 120, None),
    ("a diverging run", "quadratic", ["sgd:lr=0.2", "sgd:lr=0.01"], 60, None),
    ("an escaping run", "saddle", ["sgd:lr=0.1", "adam:lr=0.5"], 200, None),
    ("wrappers and L-BFGS", "himmelblau", ["ranger:lr=0.05", "lbfgs:lr=0.5"], 30, None),
]


@pytest.mark.parametrize(
    ("surface", "specs", "steps", "start"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_trajectories_equal_viz_run_bit_for_bit(
    server: Any, surface: str, specs: list[str], steps: int, start: str | None
) -> None:
    body = {"surface": surface, "optimizers": specs, "steps": steps}
    if start is not None:
        body["start"] = start
    start_xy = None if start is None else tuple(float(v) for v in start.split(","))
    expected = run(surface, specs, steps=steps, start=start_xy)
    for attempt in ("computed", "cached"):
        got = full_runs(trajectories(server, **body))
        assert [g["cached"] for g in got] == [attempt == "cached"] * len(specs)
        for g, e in zip(got, expected):
            # JSON floats are written with repr, which round-trips every float64 exactly.
            assert np.array_equal(np.array(g["points"], dtype=np.float64), e.points), g["spec"]
            assert np.array_equal(np.array(g["losses"], dtype=np.float64), e.losses), g["spec"]
            assert (g["diverged_at"], g["escaped_at"]) == (e.diverged_at, e.escaped_at)
            assert g["spec"] == spec_text(e.spec)


def test_a_spec_that_spells_out_its_defaults_is_the_same_cache_entry(server: Any) -> None:
    """The page writes ``sgd``, ``ravine viz``'s default picture ``sgd:lr=0.001``: one entry
    (the first page load takes the warm-up's paths), served under the spec as asked."""
    body = {"surface": "beale", "steps": 77, "start": "0.5,1.25"}
    first = full_runs(trajectories(server, **body, optimizers=["sgd:lr=0.001", "adam:lr=0.05"]))
    assert [g["cached"] for g in first] == [False, False]
    again = full_runs(trajectories(server, **body, optimizers=["sgd", "adam:lr=0.05,eps=1e-08"]))
    assert [g["cached"] for g in again] == [True, True]
    assert [g["spec"] for g in again] == ["sgd", "adam:lr=0.05,eps=1e-08"]
    assert [g["label"] for g in again] == ["sgd", "adam lr=0.05 eps=1e-08"]
    for g, e in zip(
        again, run("beale", ["sgd", "adam:lr=0.05,eps=1e-08"], steps=77, start=(0.5, 1.25))
    ):
        assert np.array_equal(np.array(g["points"], dtype=np.float64), e.points)
    # A value that differs from the default, or only in type, is another entry.
    other = full_runs(
        trajectories(server, **body, optimizers=["sgd:lr=0.002", "adam:lr=0.05,weight_decay=0"])
    )
    assert [g["cached"] for g in other] == [False, False]


def test_diverged_and_escaped_runs_are_marked(server: Any) -> None:
    lines = full_runs(
        trajectories(server, surface="quadratic", optimizers=["sgd:lr=0.2"], steps=60)
    )
    assert lines[0]["end"] == "diverged" and "diverged at step" in lines[0]["status"]
    assert lines[0]["label"] == "sgd lr=0.2 (diverged)"
    lines = full_runs(
        trajectories(server, surface="saddle", optimizers=["sgd:lr=0.1", "adam:lr=0.5"], steps=200)
    )
    assert lines[0]["end"] == "escaped" and lines[0]["escaped_at"] is not None
    assert lines[1]["end"] == "left" and lines[1]["status"] == "left the view"


def test_preview_is_an_exact_prefix_then_done_carries_the_command(server: Any) -> None:
    specs = ["adam:lr=0.01,betas=(0.8,0.99)", "sgd:lr=0.0011"]
    steps = PREVIEW_WORK // len(specs)  # just enough work for a preview
    assert steps > 2 * PREVIEW_STEPS
    lines = trajectories(server, surface="beale", optimizers=specs, steps=steps)
    previews = [x for x in lines if x.get("partial")]
    fulls = full_runs(lines)
    assert len(previews) == 2 and lines.index(previews[-1]) < lines.index(fulls[0])
    for p, f in zip(previews, fulls):
        assert p["points"] == f["points"][: PREVIEW_STEPS + 1]
    done = lines[-1]
    assert done["done"] is True
    argv = shlex.split(done["command"])
    assert argv[:2] == ["ravine", "viz"]
    from ravine.cli import build_parser

    args = build_parser("viz").parse_args(argv[1:])
    assert [spec_text(s) for s in parse_specs(args.optimizers)] == specs
    assert (args.surface, args.steps, args.start) == ("beale", steps, None)


def _bad_trajectories(**changes: Any) -> dict[str, Any]:
    return {"surface": "beale", "optimizers": ["sgd"], "steps": 20, **changes}


ERRORS = [
    ("unknown surface", _bad_trajectories(surface="bael"), "is not a known surface"),
    ("bad formula", _bad_trajectories(surface="expr:x^^2"), "not a valid formula"),
    ("formula too long", _bad_trajectories(surface="expr:" + "x+" * 600 + "y"), "characters"),
    (
        "formula too complex",
        _bad_trajectories(surface="expr:" + "+".join(["x*y"] * 150)),
        "too complex",
    ),
    ("forbidden formula", _bad_trajectories(surface="expr:__import__('os')"), "not allowed"),
    ("no steps", _bad_trajectories(steps=0), f"expected an integer from 1 to {MAX_STEPS}"),
    ("too many steps", _bad_trajectories(steps=MAX_STEPS + 1), "steps="),
    ("bad start", _bad_trajectories(start="1,nan"), "expected a finite point"),
    ("no optimizers", _bad_trajectories(optimizers=[]), "optimizers"),
    ("bad spec string", _bad_trajectories(optimizers="adam:lr=-1"), "Invalid lr: -1"),
    ("bad seq", _bad_trajectories(seq="x"), "seq="),
]


@pytest.mark.parametrize(("body", "message"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_errors_are_json_with_ravines_message(
    server: Any, body: dict[str, Any], message: str
) -> None:
    status, headers, raw = request(server, "/api/trajectories", body)
    assert status == 400
    assert headers["Content-Type"] == "application/json"
    assert message in json.loads(raw)["error"]


SPEC_ERRORS = [
    ("negative lr", "adam:lr=-1", "optimizer spec 'adam:lr=-1': Invalid lr: -1 (expected"),
    ("unknown hyperparameter", "adam:lrr=1", "did you mean 'lr'?"),
    ("unknown optimizer", "adamm", "did you mean 'adam'"),
    ("wrong type", "adam:betas=0.9", "Invalid betas: 0.9"),
    ("two in one entry", "sgd,adam", "holds 2 specs; expected one per entry"),
]


@pytest.mark.parametrize(
    ("spec", "message"), [e[1:] for e in SPEC_ERRORS], ids=[e[0] for e in SPEC_ERRORS]
)
def test_a_bad_optimizer_is_an_error_line_and_the_others_still_run(
    server: Any, spec: str, message: str
) -> None:
    lines = trajectories(server, surface="booth", optimizers=["sgd:lr=0.01", spec], steps=10)
    errors = [x for x in lines if "error" in x]
    assert len(errors) == 1 and errors[0]["index"] == 1 and message in errors[0]["error"]
    assert [x["index"] for x in full_runs(lines)] == [0]
    assert lines[-1]["command"].endswith("--optimizers sgd:lr=0.01")


def test_the_state_endpoint_reports_the_same_errors(server: Any) -> None:
    status, _, raw = request(server, "/api/state?surface=beale&optimizers=adam:lr%3D-1")
    assert status == 400 and "Invalid lr: -1" in json.loads(raw)["error"]


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/nowhere", {}, 404),
        ("/static/..%2Fplayground.py", {}, 404),
        ("/static/missing.js", {}, 404),
        ("/api/state", {"Host": "attacker.example:80"}, 403),
    ],
    ids=["unknown path", "traversal", "missing file", "rebound host"],
)
def test_refusals_are_json(server: Any, path: str, headers: dict[str, str], status: int) -> None:
    got, hdrs, raw = request(server, path, headers=headers)
    assert got == status and hdrs["Content-Type"] == "application/json"
    assert json.loads(raw)["error"]


def test_bad_bodies_are_refused(server: Any) -> None:
    req = urllib.request.Request(server.url + "api/trajectories", data=b"[1, 2")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=30)
    assert info.value.code == 400 and "not JSON" in json.loads(info.value.read())["error"]


def test_the_page_and_its_files_are_served_with_a_strict_policy(server: Any) -> None:
    status, headers, raw = request(server, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    for name in re.findall(r'(?:src|href)="/static/([^"]+)"', raw.decode()):
        assert request(server, f"/static/{name}")[0] == 200, name
    # Everything the page loads or links is this server's (xmlns names are not requests).
    links = re.findall(r'(?:src|href)="([^"]+)"', raw.decode())
    assert links and all(u.startswith("/static/") or u == "/report/0" for u in links), links


def test_rapid_requests_leave_no_backlog() -> None:
    """20 requests of one page at once, arriving while a computation holds the slot: the newest
    computes, the 19 stale ones compute nothing, and nothing is left queued."""
    with running() as srv:
        results: dict[int, list[dict[str, Any]]] = {}

        def send(seq: int) -> None:
            start = f"{1 + seq / 100},1.5"
            results[seq] = trajectories(
                srv,
                surface="beale",
                optimizers=list(CLASSIC),
                steps=200,
                start=start,
                client="page-1",
                seq=seq,
            )

        threads = [threading.Thread(target=send, args=(seq,)) for seq in range(20)]
        pg = srv.playground
        # Stand in for a long computation, so that every request arrives while it runs
        # whatever the machine's speed.
        assert pg._compute.acquire(timeout=30)
        try:
            for t in threads:
                t.start()
            deadline = time.monotonic() + 60
            while not pg.latest.stale("page-1", 18) and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            pg._compute.release()
        for t in threads:
            t.join(timeout=90)
        newest = results[19]
        assert newest[-1]["done"] and len(full_runs(newest)) == 7
        expected = run("beale", list(CLASSIC), steps=200, start=(1.19, 1.5))
        assert all(
            np.array_equal(np.array(g["points"]), e.points)
            for g, e in zip(full_runs(newest), expected)
        )
        stale = [s for s, lines in results.items() if {"stale": True} in lines]
        assert sorted(stale) == list(range(19)), sorted(results)
        assert all(not full_runs(results[s]) for s in stale)
        assert (pg.stats["computed"], pg.stats["stale"]) == (1, 19)
        # Nothing is left queued: the same picture again comes from the cache.
        again = trajectories(
            srv, surface="beale", optimizers=list(CLASSIC), steps=200, start="1.19,1.5"
        )
        assert all(x["cached"] for x in full_runs(again))
        assert pg.stats["computed"] == 1


def test_controls_come_from_the_registry(server: Any) -> None:
    from ravine.optim import registry
    from ravine.optim.sgd import SGD

    _, _, raw = request(server, "/api/optimizers")
    by_name = {o["name"]: o for o in json.loads(raw)["optimizers"]}
    assert list(by_name) == registry.names()
    lr = next(c for c in by_name["adam"]["controls"] if c["name"] == "lr")
    assert lr["default"] == 0.001 and lr["range"]["low"] == 0 and lr["slider"]["scale"] == "log"
    betas = next(c for c in by_name["adam"]["controls"] if c["name"] == "betas")
    assert betas["type"] == "reals" and betas["range"]["high_open"] is True
    rho = next(c for c in by_name["adadelta"]["controls"] if c["name"] == "rho")
    assert rho["slider"] == {"scale": "linear", "min": 0, "max": 1}
    # A newly registered optimizer appears without touching the page.
    registry.register("test_serve_sgd", SGD, paper="test")
    try:
        _, _, raw = request(server, "/api/optimizers")
        assert "test_serve_sgd" in [o["name"] for o in json.loads(raw)["optimizers"]]
        lines = trajectories(
            server, surface="booth", optimizers=["test_serve_sgd:lr=0.01"], steps=5
        )
        assert (
            full_runs(lines)[0]["points"]
            == run("booth", ["sgd:lr=0.01"], steps=5)[0].points.tolist()
        )
    finally:
        registry._REGISTRY.pop("test_serve_sgd", None)


def test_surfaces_and_contours(server: Any) -> None:
    _, _, raw = request(server, "/api/surfaces")
    from ravine import surfaces

    assert [s["name"] for s in json.loads(raw)["surfaces"]] == surfaces.names()
    _, _, raw = request(server, "/api/contours?surface=beale")
    contours = json.loads(raw)
    assert len(contours["bands"]) == 27 and len(contours["levels"]) == 28
    assert contours["surface"]["minima"] == [[3.0, 0.5]]
    assert all(re.fullmatch(r"#[0-9a-f]{6}", b["color"]) for b in contours["bands"])
    xs = [v for b in contours["bands"] for ring in b["rings"] for v in ring[0::2]]
    assert min(xs) == pytest.approx(-4.5) and max(xs) == pytest.approx(4.5)


@pytest.mark.parametrize("name", ["beale", "rastrigin", "expr:x^2 + 3*sin(y)^2"])
def test_contours_read_in_numpy_equal_matplotlibs_segments(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The map's polygons read from the path arrays are matplotlib's segments, each coordinate
    rounded as before or (at an exact half) one last digit apart."""
    from ravine import surfaces
    from ravine.serve import playground as pg

    fast = pg.contour_json(surfaces.get(name))
    monkeypatch.setattr(pg, "_polylines", pg._polylines_by_segment)
    slow = pg.contour_json(surfaces.get(name))
    assert [b["color"] for b in fast["bands"]] == [b["color"] for b in slow["bands"]]
    got = [r for b in fast["bands"] for r in b["rings"]] + [
        ln for v in fast["levels"] for ln in v["lines"]
    ]
    want = [r for b in slow["bands"] for r in b["rings"]] + [
        ln for v in slow["levels"] for ln in v["lines"]
    ]
    assert [len(r) for r in got] == [len(r) for r in want]
    np.testing.assert_allclose(np.concatenate(got), np.concatenate(want), rtol=0, atol=1.01e-4)


def test_unusual_paths_go_through_matplotlibs_segments() -> None:
    from matplotlib.path import Path as MplPath

    from ravine.serve.playground import _polylines, _polylines_by_segment

    M, L, C = MplPath.MOVETO, MplPath.LINETO, MplPath.CLOSEPOLY
    square = [(0, 0), (1, 0), (1, 1), (0, 0)]
    cases = [
        MplPath([*square, (5, 5), (6, 5), (0, 0)], [M, L, L, C, M, L, C]),  # closed rings
        MplPath([(0, 0), (np.nan, 1), (2, 2), (3, 3)], [M, L, L, L]),  # a NaN
        MplPath([*square, (2, 2)], [M, L, L, C, L]),  # a line after the close
        MplPath([(0.123456, 1), (2, 2.000049)], None),  # no codes
    ]
    for path in cases:
        assert _polylines(path, 4) == _polylines_by_segment(path, 4)
    assert _polylines(cases[0], 4) == [[0, 0, 1, 0, 1, 1, 0, 0], [5, 5, 6, 5, 5, 5]]


def test_inspector_shows_the_real_state(server: Any) -> None:
    """Adam after one step: m = (1 - b1) g0, v = (1 - b2) g0^2 (Kingma & Ba, Algorithm 1)."""
    q = "surface=beale&steps=50&spec=adam:lr%3D0.1,betas%3D(0.8,0.9)"
    _, _, raw = request(server, f"/api/inspect?{q}&step=1")
    state = json.loads(raw)
    p = torch.tensor([1.0, 1.5], dtype=torch.float64, requires_grad=True)
    from ravine import surfaces

    (g0,) = torch.autograd.grad(surfaces.get("beale").loss(p), p)
    vectors = {v["name"]: v for v in state["vectors"]}
    assert vectors["m"]["kind"] == "direction" and vectors["v"]["kind"] == "magnitude"
    assert np.allclose(vectors["m"]["value"], (0.2 * g0).tolist(), rtol=1e-15)
    assert np.allclose(vectors["v"]["value"], (0.1 * g0**2).tolist(), rtol=1e-15)
    assert [b["value"] for b in state["bias_corrections"]] == pytest.approx([0.2, 0.1])
    traj = run("beale", ["adam:lr=0.1,betas=(0.8,0.9)"], steps=50)[0]
    assert state["point"] == traj.points[1].tolist()
    assert state["update"] == (traj.points[2] - traj.points[1]).tolist()
    # Scrubbing back and forth gives the same state as a fresh replay.
    for step in (30, 7, 30):
        _, _, raw = request(server, f"/api/inspect?{q}&step={step}")
        assert json.loads(raw)["point"] == traj.points[step].tolist()
    fresh = Playground().inspect(
        {"surface": "beale", "steps": 50, "spec": "adam:lr=0.1,betas=(0.8,0.9)", "step": 30}
    )
    assert fresh["vectors"] == json.loads(raw)["vectors"]


def test_export_writes_what_ravine_viz_writes(server: Any, tmp_path: Any) -> None:
    specs = ["sgd:lr=0.001", "adam:lr=0.1"]
    q = "surface=beale&steps=40&optimizers=sgd:lr%3D0.001,adam:lr%3D0.1"
    status, headers, data = request(server, f"/api/export?{q}&format=png")
    assert status == 200 and headers["Content-Type"] == "image/png"
    assert 'filename="beale.png"' in headers["Content-Disposition"]
    plot(run("beale", specs, steps=40), tmp_path / "beale.png")
    assert data == (tmp_path / "beale.png").read_bytes()
    status, _, raw = request(server, f"/api/export?{q}&format=jpg")
    assert status == 400 and "format='jpg'" in json.loads(raw)["error"]


@pytest.mark.slow
def test_export_animates_the_race(server: Any) -> None:
    q = "surface=beale&steps=40&optimizers=sgd:lr%3D0.001,adam:lr%3D0.1&format=gif"
    status, headers, data = request(server, f"/api/export?{q}")
    assert status == 200 and headers["Content-Type"] == "image/gif" and data[:6] == b"GIF89a"
    from PIL import Image

    assert Image.open(io.BytesIO(data)).n_frames == 20  # stride 2, as ravine viz's default


def test_ravine_serve_command_prints_its_url_and_serves() -> None:
    with ravine_serve() as url, urllib.request.urlopen(url + "api/stats", timeout=30) as resp:
        assert json.loads(resp.read())["computed"] == 0


def test_ravine_serve_prints_its_address_before_numpy_or_torch() -> None:
    """What `ravine serve` imports before it prints its address and starts the playground's
    imports (ravine.cli.serve's run up to make_server) loads neither numpy nor torch: either
    would hold up the torch import on the way to the first picture (numpy, for a type alias,
    was 65 ms of it)."""
    code = (
        "import sys\n"
        "import ravine.cli, ravine.cli.serve\n"
        "from ravine.serve.server import make_server\n"
        "from ravine.serve.startcache import default_path\n"
        "from ravine.serve.workers import default_workers\n"
        "make_server('127.0.0.1', 0, workers=default_workers(), start_cache=default_path())"
        ".server_close()\n"
        "heavy = sorted(m for m in ('numpy', 'torch', 'matplotlib') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    assert_runs_fresh(code)


def test_the_load_pauses_the_collector_and_puts_it_back(server: Any) -> None:
    """The playground's imports run with the garbage collector off (a tenth of `import torch`)
    and leave it as they found it: on after the load, off where the caller had it off, and put
    back when the block raises."""
    import gc

    from ravine.serve.server import _collector_paused

    assert server.load() is not None and gc.isenabled()
    with _collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), _collector_paused():
        raise RuntimeError("a failed import")
    assert gc.isenabled()
    gc.disable()
    try:
        with _collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--port", "70000"], "expected an integer from 0 to 65535"), (["--host", "192.0.2.1"], "")],
    ids=["port out of range", "not this machine's address"],
)
def test_ravine_serve_refuses_bad_addresses(argv: list[str], message: str) -> None:
    from ravine.cli import main

    err = io.StringIO()
    old, sys.stderr = sys.stderr, err
    try:
        assert main(["serve", *argv]) == 2
    finally:
        sys.stderr = old
    assert "ravine serve: error:" in err.getvalue() and message in err.getvalue()


@pytest.mark.slow
def test_worker_processes_give_the_same_paths() -> None:
    """Shares of a request run in two spawned workers equal one ravine.viz.run of all of them;
    what a fresh process cannot rebuild (an optimizer registered at run time) runs here."""
    from ravine.optim import registry
    from ravine.optim.sgd import SGD

    with running(workers=2) as srv:
        deadline = time.monotonic() + 120
        while not srv.playground.workers.ready and time.monotonic() < deadline:
            time.sleep(0.2)
        assert srv.playground.workers.ready
        for surface, steps in (("beale", 300), ("expr:sin(x)*cos(y) + 0.1*(x^2 + y^2)", 120)):
            lines = trajectories(srv, surface=surface, optimizers=list(CLASSIC), steps=steps)
            expected = run(surface, list(CLASSIC), steps=steps)
            got = full_runs(lines)
            assert [g["index"] for g in got] == list(range(7))
            for g, e in zip(got, expected):
                assert np.array_equal(np.array(g["points"], dtype=np.float64), e.points)
                assert np.array_equal(np.array(g["losses"], dtype=np.float64), e.losses)
        # 7 specs in 3 shares: 0, 3, 6 in the server, the other 4 in the workers
        assert srv.playground.stats["in_workers"] == 8
        registry.register("test_serve_workers_sgd", SGD, paper="test")
        try:
            specs = ["test_serve_workers_sgd:lr=0.001", "adam:lr=0.1"]
            got = full_runs(trajectories(srv, surface="beale", optimizers=specs, steps=50))
            expected = run("beale", ["sgd:lr=0.001", "adam:lr=0.1"], steps=50)
            assert [g["points"] for g in got] == [e.points.tolist() for e in expected]
            assert srv.playground.stats["in_workers"] == 8
        finally:
            registry._REGISTRY.pop("test_serve_workers_sgd", None)


def test_a_refused_post_does_not_poison_the_connection(server: Any) -> None:
    """A body refused unread (too large, wrong path) closes the connection rather than being
    read as the next request."""
    import http.client

    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.request(
        "POST", "/api/nowhere", body=b'{"x": 1}', headers={"Content-Type": "application/json"}
    )
    resp = conn.getresponse()
    assert resp.status == 405 and "is not served" in json.loads(resp.read())["error"]
    assert resp.getheader("Connection") == "close"
    conn.close()
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.request("POST", "/api/trajectories", body=b"x" * (70 * 1024))
    resp = conn.getresponse()
    assert resp.status == 400 and "expected at most" in json.loads(resp.read())["error"]
    conn.close()


def test_a_bench_report_opens_from_the_page(tmp_path: Any) -> None:
    """`ravine serve --report FILE` serves that HTML page at /report, shown and never run."""
    page = tmp_path / "report.html"
    page.write_text("<!doctype html><html><body><h1>bench</h1></body></html>")
    with running(report=page) as srv:
        _, _, raw = request(srv, "/api/links")
        assert json.loads(raw) == {
            "report": "/report",
            "reports": [{"href": "/report/0", "name": str(page)}],
        }
        for path in ("/report", "/report/0"):
            status, headers, body = request(srv, path)
            assert status == 200 and body == page.read_bytes()
            assert "script-src" not in headers["Content-Security-Policy"]
            assert headers["Content-Security-Policy"].startswith("default-src 'none'")


def test_without_a_report_there_is_no_link(
    server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no bench-report/ here
    _, _, raw = request(server, "/api/links")
    assert json.loads(raw) == {"report": None, "reports": []}
    status, _, raw = request(server, "/report")
    assert status == 404 and "--report" in json.loads(raw)["error"]


def test_reports_in_the_working_folder_are_found(
    server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --report, the page links what `ravine report` and `ravine demo` write by
    default under the folder the server runs in, looked for at each request."""
    monkeypatch.chdir(tmp_path)
    found = []
    for i, name in enumerate(["bench-report/report.html", "out/demo/bench-report/report.html"]):
        (tmp_path / name).parent.mkdir(parents=True)
        (tmp_path / name).write_text(f"<!doctype html><p>report {i}</p>")
        found.append({"href": f"/report/{i}", "name": name})
    _, _, raw = request(server, "/api/links")
    assert json.loads(raw) == {"report": "/report", "reports": found}
    status, _, body = request(server, "/report/1")
    assert status == 200 and body == b"<!doctype html><p>report 1</p>"
    for missing in ("/report/2", "/report/x", "/report/-1"):
        status, _, raw = request(server, missing)
        assert status == 404 and "no such bench report" in json.loads(raw)["error"], missing


@pytest.mark.parametrize("name", ["report.txt", "missing.html"])
def test_a_bad_report_is_refused_before_binding(tmp_path: Any, name: str) -> None:
    (tmp_path / "report.txt").write_text("not html")
    from ravine.serve import make_server

    with pytest.raises(ValueError, match="expected an HTML file written by ravine report"):
        make_server(report=tmp_path / name)


@pytest.mark.parametrize("cores, workers", [(1, 0), (2, 0), (3, 2), (4, 3), (5, 4), (64, 4)])
def test_default_workers_by_cores(
    cores: int, workers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from ravine.serve.workers import default_workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert default_workers() == workers


# The serve process builds optimizers without importing torch._dynamo (ravine.optim.lazy_dynamo):
# checked in a fresh interpreter, where dynamo is not imported yet.
LAZY_DYNAMO_SCRIPT = r"""
import sys

import torch

import ravine.optim
from ravine.optim import lazy_dynamo, registry
from ravine.viz import run

specs = registry.names()
assert lazy_dynamo.defer() and lazy_dynamo.deferred()
before = run("beale", specs, steps=60)
opt = ravine.optim.Adam([torch.zeros(2, requires_grad=True)], lr=0.1)
opt.load_state_dict(opt.state_dict())
opt.zero_grad()
assert "torch._dynamo" not in sys.modules, "building or saving an optimizer imported dynamo"

p = torch.ones(2, requires_grad=True)
opt = ravine.optim.SGD([p], lr=0.5)


def train(x):
    opt.zero_grad()  # torch.optim disables dynamo here: a graph break, as in stock torch
    loss = (p * x).sum()
    loss.backward()
    opt.step()
    return loss


compiled = torch.compile(train, backend="eager")
import torch._dynamo

assert not lazy_dynamo.deferred()
explained = torch._dynamo.explain(train)(torch.full((2,), 3.0))
assert explained.graph_break_count >= 1, explained
compiled(torch.full((2,), 3.0))
assert torch.equal(p.detach(), torch.tensor([-2.0, -2.0])), p
for fn in lazy_dynamo.wrapped_functions():
    cached = getattr(fn, "__dynamo_disable", None)
    assert cached is not fn, fn  # the real torch._dynamo.disable(fn), or not made yet

# The real compiler too, and an optimizer of ravine's compiled engine.
assert torch.equal(torch.compile(lambda x: x * 2 + 1)(torch.ones(3)), torch.full((3,), 3.0))
q = torch.ones(4, requires_grad=True)
c = ravine.optim.Adam([q], lr=0.1, impl="compiled")
q.grad = torch.ones(4)
c.step()
e = torch.ones(4, requires_grad=True)
ref = ravine.optim.Adam([e], lr=0.1)
e.grad = torch.ones(4)
ref.step()
assert torch.allclose(q, e), (q, e)

after = run("beale", specs, steps=60)
for a, b in zip(before, after):
    assert a.points.tobytes() == b.points.tobytes() and a.losses.tobytes() == b.losses.tobytes()
    assert (a.diverged_at, a.escaped_at) == (b.diverged_at, b.escaped_at), a.label
print("ok", len(specs))
"""


@pytest.mark.timeout(600)
def test_optimizers_build_without_dynamo_and_compile_still_works() -> None:
    """Every registered optimizer runs with dynamo deferred, without importing it; once anything
    imports dynamo the deferral is undone first: torch.compile (dynamo's graph break at
    ``zero_grad`` included, inductor, ravine's compiled engine) works, and the paths are the same
    bit for bit as before."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", LAZY_DYNAMO_SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        timeout=560,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.startswith("ok "), done.stdout
