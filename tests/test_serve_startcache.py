"""The start cache: a server answers its first page from the last server's answers while its
playground loads, only under the same fingerprint, and checks them once loaded.

The file: one answer per route (the first a server gave), JSON written atomically, anything
unreadable or foreign ignored and rewritten. The server: identical requests replayed (marked by
a header) before the load, computed after it; a kept answer that differs from what the loaded
server computes is replaced with a warning. ``ravine serve`` itself: a second start replays the
first one's paths, and they equal ``ravine.viz.run`` bit for bit.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ravine.serve import server as server_module
from ravine.serve.startcache import (
    FORMAT,
    ROUTES,
    StartCache,
    default_path,
    fingerprint,
    request_key,
    stream_answer,
)
from ravine.viz import parse_specs, run
from serve_process import kept_answers, ravine_serve

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("one_thread")]

STATE = request_key("/api/state", {})
PATHS = request_key(
    "/api/trajectories",
    {"surface": "beale", "start": "1,1.5", "steps": 30, "optimizers": ["sgd", "adam:lr=0.1"]},
)


def opened(path: Path, key: str = "fp") -> StartCache:
    cache = StartCache(path, fingerprint=lambda: key)
    cache.open()
    return cache


# -- the file ----------------------------------------------------------------------------------


def test_answers_come_back_under_the_same_fingerprint_only(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "serve-start.json"
    first = opened(path)
    assert first.answer(STATE) is None
    first.capture(STATE, ('{"a": 1}',))
    first.capture(PATHS, ('{"index": 0}', '{"done": true, "command": null}'))
    assert json.loads(path.read_text())["format"] == FORMAT

    again = opened(path)
    assert again.answer(STATE) == ('{"a": 1}',)
    assert again.answer(PATHS) == ('{"index": 0}', '{"done": true, "command": null}')
    assert again.answer(request_key("/api/state", {"steps": "10"})) is None
    assert again.replayed == 2
    assert opened(path, "another torch").answer(STATE) is None


def test_each_route_keeps_the_first_answer_a_server_gave(tmp_path: Path) -> None:
    path = tmp_path / "serve-start.json"
    cache = opened(path)
    cache.capture(STATE, ("1",))
    cache.capture(request_key("/api/state", {"steps": "10"}), ("2",))  # a later one: not kept
    assert opened(path).answer(STATE) == ("1",)
    # The next server's first answer of the route replaces the last server's.
    later = opened(path)
    other = request_key("/api/state", {"steps": "10"})
    later.capture(other, ("2",))
    after = opened(path)
    assert after.answer(STATE) is None and after.answer(other) == ("2",)
    # A route replayed counts as this server's first answer of it.
    replaying = opened(path)
    assert replaying.answer(other) == ("2",)
    replaying.capture(STATE, ("3",))
    assert opened(path).answer(other) == ("2",)
    # Other routes are not kept.
    replaying.capture(request_key("/api/inspect", {}), ("4",))
    assert request_key("/api/inspect", {}) not in json.loads(path.read_text())["answers"]


def test_the_page_fields_are_not_part_of_a_request() -> None:
    body = {"surface": "beale", "optimizers": ["sgd"]}
    assert request_key("/api/trajectories", {**body, "client": "x", "seq": 3}) == request_key(
        "/api/trajectories", dict(reversed(body.items()))
    )


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b'{"format": "ravine-serve-start/1", "fingerprint": "fp", "ans',  # torn by a kill
        b"[1, 2]",
        b'{"format": "something else", "fingerprint": "fp", "answers": {}}',
        b'{"format": "ravine-serve-start/1", "fingerprint": "fp", "answers": {"k": [1]}}',
        b"\x80\x04\x95 not json at all",  # e.g. a pickle: never loaded as one
    ],
    ids=["empty", "torn", "a list", "another format", "answers not text", "binary"],
)
def test_an_unusable_file_is_ignored_and_rewritten(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "serve-start.json"
    path.write_bytes(content)
    cache = opened(path)
    assert cache.answer(STATE) is None and not cache.disabled
    cache.capture(STATE, ("1",))
    assert opened(path).answer(STATE) == ("1",)


def test_a_cache_that_cannot_be_written_is_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a file"
    blocker.write_text("")
    cache = opened(blocker / "serve-start.json")  # its folder cannot be made
    cache.capture(STATE, ("1",))
    assert cache.disabled and "cannot be written" in capsys.readouterr().err
    assert cache.answer(STATE) is None


def test_a_failed_fingerprint_disables_the_cache(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken() -> str:
        raise OSError("no /proc")

    cache = StartCache(tmp_path / "serve-start.json", fingerprint=broken)
    cache.open()
    assert cache.disabled and "not used" in capsys.readouterr().err
    cache.capture(STATE, ("1",))
    assert not (tmp_path / "serve-start.json").exists()


def test_verify_replaces_what_differs_and_drops_what_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "serve-start.json"
    cache = opened(path)
    cache.capture(STATE, ("right",))
    cache.capture(PATHS, ("stale",))
    cache.capture(request_key("/api/surfaces", {}), ("gone",))
    truth = {STATE: ("right",), PATHS: ("fresh",)}

    def compute(key: str) -> tuple[str, ...] | None:
        if key not in truth:
            raise RuntimeError("cannot be computed")
        return truth[key]

    assert sorted(cache.verify(compute)) == sorted([PATHS, request_key("/api/surfaces", {})])
    assert "differed" in capsys.readouterr().err
    kept = json.loads(path.read_text())["answers"]
    assert kept == {STATE: ["right"], PATHS: ["fresh"]}
    assert opened(path).verify(compute) == []


def test_verify_leaves_an_answer_given_meanwhile(tmp_path: Path) -> None:
    """The page's own first answer of a route, given while the check runs, is what stays."""
    path = tmp_path / "serve-start.json"
    opened(path).capture(STATE, ("last server's",))
    cache = opened(path)
    newer = request_key("/api/state", {"steps": "10"})

    def compute(key: str) -> tuple[str, ...]:
        cache.capture(newer, ("this server's",))  # a request answered during the check
        return ("recomputed",)

    cache.verify(compute)
    assert json.loads(path.read_text())["answers"] == {newer: ["this server's"]}


def test_a_stream_is_kept_without_its_previews_and_timing() -> None:
    lines = [
        {"index": 0, "points": [[0, 0]], "partial": True, "cached": False},
        {"index": 1, "error": "Invalid lr: -1"},
        {"index": 0, "points": [[0, 0], [1, 1]], "partial": False, "cached": False},
        {"done": True, "command": "ravine viz", "server_ms": 12.5},
    ]
    kept = stream_answer(lines)
    assert kept is not None
    assert [json.loads(t) for t in kept] == [
        {"index": 1, "error": "Invalid lr: -1", "cached": True},
        {"index": 0, "points": [[0, 0], [1, 1]], "partial": False, "cached": True},
        {"done": True, "command": "ravine viz"},
    ]
    assert stream_answer([{"stale": True}]) is None
    assert stream_answer([{"error": "busy"}]) is None
    assert stream_answer(lines[:3]) is None  # cut short


def test_the_fingerprint_follows_ravines_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = fingerprint()
    assert fingerprint() == before and re.fullmatch(r"[0-9a-f]{64}", before)
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    assert fingerprint() != before
    monkeypatch.delenv("ATEN_CPU_CAPABILITY")
    import ravine

    fake = tmp_path / "ravine"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    monkeypatch.setattr(ravine, "__file__", str(fake / "__init__.py"))
    other = fingerprint()
    assert other != before
    (fake / "__init__.py").write_text("# edited")
    assert fingerprint() != other


def test_the_default_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAVINE_CACHE_DIR", str(tmp_path / "r"))
    assert default_path() == tmp_path / "r" / "serve-start.json"
    monkeypatch.delenv("RAVINE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_path() == tmp_path / "x" / "ravine" / "serve-start.json"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_path() == Path.home() / ".cache" / "ravine" / "serve-start.json"


# -- the server ----------------------------------------------------------------------------------


def get(url: str) -> tuple[dict[str, str], bytes]:
    with urllib.request.urlopen(url, timeout=60) as resp:
        return dict(resp.headers), resp.read()


def post(url: str, body: dict[str, Any]) -> tuple[dict[str, str], list[dict[str, Any]]]:
    req = urllib.request.Request(url, data=json.dumps(body).encode())
    with urllib.request.urlopen(req, timeout=60) as resp:
        return dict(resp.headers), [json.loads(x) for x in resp.read().decode().splitlines()]


PAGE_BODY = {
    "surface": "beale",
    "start": "1,1.5",
    "steps": 40,
    "optimizers": ["sgd", "adam:lr=0.1", "momentum"],
    "client": "page-1",
    "seq": 1,
}


@pytest.fixture
def gated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """Starts servers with one start cache whose playgrounds load only once ``gate`` is set:
    ``gated()`` is (server, its warm-up thread)."""
    gate = threading.Event()
    make = server_module._make_playground

    def held_make(workers: int) -> Any:
        assert gate.wait(60)
        return make(workers)

    monkeypatch.setattr(server_module, "_make_playground", held_make)
    started: list[tuple[Any, threading.Thread]] = []

    def start() -> tuple[Any, threading.Thread]:
        gate.clear()
        srv = server_module.make_server(start_cache=tmp_path / "serve-start.json")
        srv.gate = gate
        thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        started.append((srv, thread))
        return srv, srv.warm_up()

    yield start
    gate.set()
    for srv, thread in started:
        srv.shutdown()
        srv.server_close()
        thread.join(10)


def test_a_second_server_answers_its_first_page_while_it_loads(gated: Any) -> None:
    srv, warm = gated()
    # The first server: every request waits for the load, and is kept.
    answers: dict[str, Any] = {}

    def ask() -> None:
        answers["state"] = get(srv.url + "api/state?")
        answers["paths"] = post(srv.url + "api/trajectories", PAGE_BODY)

    asker = threading.Thread(target=ask)
    asker.start()
    asker.join(0.5)
    assert asker.is_alive()  # waiting for the load
    srv.gate.set()
    asker.join(60)
    warm.join(60)
    assert "X-Ravine-Start-Cache" not in answers["state"][0]

    # The second: the same requests answered before the load, the same bytes and paths.
    srv2, warm2 = gated()
    headers, state = get(srv2.url + "api/state?")
    assert headers["X-Ravine-Start-Cache"] == "replayed" and state == answers["state"][1]
    headers, lines = post(srv2.url + "api/trajectories", {**PAGE_BODY, "client": "page-2"})
    assert headers["X-Ravine-Start-Cache"] == "replayed"
    assert lines[-1]["replayed"] is True
    first = {x["index"]: x for x in answers["paths"][1] if "points" in x and not x["partial"]}
    again = {x["index"]: x for x in lines if "points" in x}
    assert {i: x["points"] for i, x in again.items()} == {i: x["points"] for i, x in first.items()}
    reference = run(
        "beale", parse_specs(PAGE_BODY["optimizers"]), steps=PAGE_BODY["steps"], start=(1, 1.5)
    )
    for i, traj in enumerate(reference):
        assert again[i]["points"] == traj.points.tolist()
        assert again[i]["losses"] == traj.losses.tolist()
    # A request the first page did not make waits for the load; then nothing is replayed.
    other = threading.Thread(target=get, args=(srv2.url + "api/state?steps=10",))
    other.start()
    other.join(0.5)
    assert other.is_alive()
    srv2.gate.set()
    other.join(60)
    warm2.join(60)
    headers, _ = get(srv2.url + "api/state?")
    assert "X-Ravine-Start-Cache" not in headers
    assert srv2.start_cache.replayed == 2


def test_a_wrong_kept_answer_is_replaced_once_loaded(
    gated: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    srv, warm = gated()
    srv.gate.set()
    warm.join(60)
    post(srv.url + "api/trajectories", PAGE_BODY)
    path = tmp_path / "serve-start.json"
    data = {"format": FORMAT, "fingerprint": fingerprint(), "answers": kept_answers(path)}
    key = request_key("/api/trajectories", PAGE_BODY)
    lines = data["answers"][key]
    wrong = json.loads(lines[0])
    wrong["points"][3][0] += 1e-9
    data["answers"][key] = [json.dumps(wrong), *lines[1:]]
    path.write_text(json.dumps(data))

    srv2, warm2 = gated()
    _, replayed = post(srv2.url + "api/trajectories", PAGE_BODY)
    assert replayed[0]["points"][3] == wrong["points"][3]  # replayed as kept, until checked
    srv2.gate.set()
    warm2.join(60)
    assert "differed" in capsys.readouterr().err
    assert json.loads(path.read_text())["answers"][key] == lines


# -- ravine serve ----------------------------------------------------------------------------------


def test_ravine_serve_replays_its_last_first_page(tmp_path: Path) -> None:
    routes = ["api/optimizers", "api/surfaces", "api/contours?surface=beale", "api/state?"]
    with ravine_serve(cache=tmp_path) as url:
        first = {r: get(url + r)[1] for r in routes}
        _, paths = post(url + "api/trajectories", PAGE_BODY)
        answers = kept_answers(tmp_path / "serve-start.json", len(ROUTES))
    assert {k.partition(" ")[0] for k in answers} == set(ROUTES)

    with ravine_serve(cache=tmp_path) as url:
        for r in routes:
            headers, body = get(url + r)
            assert headers.get("X-Ravine-Start-Cache") == "replayed", r
            assert body == first[r], r
        headers, again = post(url + "api/trajectories", PAGE_BODY)
        assert headers.get("X-Ravine-Start-Cache") == "replayed"
        assert [x.get("points") for x in again] == [
            x.get("points") for x in paths if not x.get("partial")
        ]

    with ravine_serve("--no-start-cache", cache=tmp_path) as url:
        headers, body = get(url + "api/state?")
        assert "X-Ravine-Start-Cache" not in headers and body == first["api/state?"]
