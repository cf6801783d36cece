"""The playground page in a real headless Chromium (Debian's, driven by Playwright; never a
browser download): offline, clicks and sliders redraw what they should, the URL round-trips,
ravine's errors show inline, and a screenshot is saved.

Needs /usr/bin/chromium (``scripts/ci/40-chromium.sh`` installs it) and the ``playwright``
package. Without them these tests skip, naming what is missing; with ``CI=1`` they fail instead.
"""

from __future__ import annotations

import os
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from ravine.serve import chromium, running
from ravine.serve.startcache import ROUTES
from ravine.viz import parse_specs
from serve_process import kept_answers, ravine_serve

CHROMIUM = chromium.PATH
pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("one_thread")]


def _missing(what: str) -> None:
    message = f"{what}; run `sudo bash scripts/ci/40-chromium.sh` and `pip install playwright`"
    if os.environ.get("CI") == "1":
        pytest.fail(f"CI=1 and the browser tests cannot run: {message}")
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A Chromium context with a fresh profile; every request it makes is recorded."""
    if not (shutil.which(CHROMIUM) or os.access(CHROMIUM, os.X_OK)):
        _missing(f"no Chromium at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=CHROMIUM,
            args=list(chromium.FLAGS),
            headless=True,
            viewport={"width": 1400, "height": 900},
        )
        context.requests = []  # type: ignore[attr-defined]
        context.on("request", lambda r: context.requests.append(r.url))  # type: ignore[attr-defined]
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="module")
def server() -> Iterator[Any]:
    with running() as srv:
        yield srv


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    page = browser.new_page()
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    try:
        yield page
    finally:
        page.close()


def open_page(page: Any, server: Any, query: str = "") -> None:
    page.goto(server.url + query)
    page.wait_for_selector("body[data-ready=true]", timeout=60_000)


def revs(page: Any) -> dict[str, str]:
    return page.evaluate(
        "() => Object.fromEntries([...document.querySelectorAll('#paths g.path')]"
        ".map(g => [g.dataset.name + '#' + g.dataset.id, g.dataset.rev]))"
    )


def wait_settled(page: Any) -> None:
    page.wait_for_function(
        "() => document.body.dataset.busy !== 'true' && document.body.dataset.ready === 'true'",
        timeout=60_000,
    )


QUICK = "?surface=beale&steps=100"


def test_the_page_loads_offline_with_every_path(page: Any, browser: Any, server: Any) -> None:
    browser.requests.clear()
    open_page(page, server, QUICK)
    assert len(revs(page)) == 7
    points = page.eval_on_selector_all(
        "#paths polyline", "ps => ps.map(p => p.getAttribute('points').trim().split(' ').length)"
    )
    assert points == [101] * 7
    assert page.locator("#contours").count() == 1
    assert page.locator("#stationary .minimum").count() == 1
    host = server.url.rstrip("/")
    assert browser.requests and all(u.startswith(host + "/") for u in browser.requests), [
        u for u in browser.requests if not u.startswith(host + "/")
    ]
    assert not page.errors, page.errors


def test_the_bench_reports_found_are_linked(
    page: Any, server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ravine report`'s and `ravine demo`'s reports in the working folder open from the page."""
    monkeypatch.chdir(tmp_path)
    for i, name in enumerate(["bench-report/report.html", "out/demo/bench-report/report.html"]):
        (tmp_path / name).parent.mkdir(parents=True)
        (tmp_path / name).write_text(f"<!doctype html><title>r</title><h1>report {i}</h1>")
    open_page(page, server, QUICK)
    links = page.eval_on_selector_all(
        "#report-link, .report-link",
        "as => as.map(a => [a.getAttribute('href'), a.title, a.textContent, a.hidden])",
    )
    assert links == [
        ["/report/0", "bench-report/report.html", "bench report 1", False],
        ["/report/1", "out/demo/bench-report/report.html", "bench report 2", False],
    ]
    with page.context.expect_page() as opened:
        page.click(".report-link")
    report = opened.value
    report.wait_for_load_state()
    assert report.locator("h1").inner_text() == "report 1"
    report.close()
    assert not page.errors, page.errors


def test_a_click_moves_the_start_and_every_path_redraws(page: Any, server: Any) -> None:
    open_page(page, server, QUICK)
    before = revs(page)
    box = page.locator("#overlay").bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.7)
    page.wait_for_function(
        "before => [...document.querySelectorAll('#paths g.path')]"
        ".every(g => g.dataset.rev !== before[g.dataset.name + '#' + g.dataset.id])",
        arg=before,
        timeout=60_000,
    )
    wait_settled(page)
    start = parse_qs(urlsplit(page.url).query)["start"][0]
    x, y = (float(v) for v in start.split(","))
    assert -3 < x < -0.5 and -3 < y < -0.5
    first = page.eval_on_selector_all(
        "#paths polyline", "ps => ps.map(p => p.getAttribute('points').split(' ')[0])"
    )
    mark = page.eval_on_selector("#start-mark", "c => [c.getAttribute('cx'), c.getAttribute('cy')]")
    for p in first:
        px, py = (float(v) for v in p.split(","))
        assert abs(px - float(mark[0])) < 0.1 and abs(py - float(mark[1])) < 0.1
    assert not page.errors, page.errors


def test_a_slider_redraws_only_its_optimizer(page: Any, server: Any) -> None:
    open_page(page, server, QUICK)
    page.evaluate(
        """() => {
        window.mutated = new Set();
        new MutationObserver(records => records.forEach(r => {
            const g = (r.target.closest ? r.target : r.target.parentElement).closest('g.path');
            if (g) window.mutated.add(g.dataset.name);
        })).observe(document.getElementById('paths'),
                    {subtree: true, childList: true, attributes: true});
        }"""
    )
    before = revs(page)
    adam = page.locator('.run[data-name="adam"]')
    adam.locator('input[type=range][data-param="lr"]').fill("820")
    page.wait_for_function(
        "rev => document.querySelector('#paths g.path[data-name=adam]').dataset.rev !== rev",
        arg=next(v for k, v in before.items() if k.startswith("adam#")),
        timeout=60_000,
    )
    wait_settled(page)
    after = revs(page)
    changed = {k.split("#")[0] for k in after if after[k] != before[k]}
    assert changed == {"adam"}
    assert page.evaluate("[...window.mutated]") == ["adam"]
    lr = adam.locator('input[type=text][data-param="lr"]').input_value()
    assert f"adam:lr={lr}" in parse_qs(urlsplit(page.url).query)["optimizers"][0]


def test_the_url_round_trips(page: Any, server: Any) -> None:
    query = (
        "?surface=expr%3Ax%5E2%20%2B%203*sin(y)%5E2&start=2,-1.5&steps=80"
        "&optimizers=adam:lr=0.05,betas=(0.8,0.99),nag:lr=0.01,momentum=0.5,rmsprop"
    )
    open_page(page, server, query)
    state = parse_qs(urlsplit(page.url).query)
    assert state["surface"] == ["expr:x^2 + 3*sin(y)^2"]
    assert state["start"] == ["2,-1.5"] and state["steps"] == ["80"]
    specs = [str(s) for s in parse_specs(state["optimizers"][0])]
    assert specs == ["adam:lr=0.05,betas=(0.8,0.99)", "nag:lr=0.01,momentum=0.5", "rmsprop"]
    command = page.locator("#command").inner_text()
    assert "--surface 'expr:x^2 + 3*sin(y)^2' --start=2.0,-1.5 --steps 80" in command
    # Opening the page's own URL again gives the same state and the same command.
    url = page.url
    page.goto("about:blank")
    open_page(page, server, "?" + urlsplit(url).query)
    assert page.url == url and page.locator("#command").inner_text() == command
    assert page.locator("#formula").input_value() == "x^2 + 3*sin(y)^2"


def test_an_invalid_lr_shows_ravines_error(page: Any, server: Any) -> None:
    open_page(page, server, QUICK)
    field = page.locator('.run[data-name="adam"] input[type=text][data-param="lr"]')
    field.fill("-1")
    field.press("Enter")
    error = page.locator('.run[data-name="adam"] .error-line')
    error.wait_for(state="visible", timeout=60_000)
    assert "Invalid lr: -1 (expected a real number in [0, inf))" in error.inner_text()
    assert "invalid" in (field.get_attribute("class") or "")
    # The other optimizers are still drawn, and a bad formula is reported as ravine words it.
    assert page.locator('#paths g.path[data-name="sgd"] polyline').count() == 1
    page.select_option("#surface", "expr:")
    page.fill("#formula", "x^^2")
    page.press("#formula", "Enter")
    page.locator("#error").wait_for(state="visible", timeout=30_000)
    assert "is not a valid formula" in page.locator("#error").inner_text()


@pytest.mark.slow  # beyond the list; `make test-slow` runs it
def test_the_inspector_and_playback(page: Any, server: Any) -> None:
    open_page(page, server, QUICK)
    page.locator('.run[data-name="adam"] .name').click()
    page.locator("#inspector table").wait_for(timeout=30_000)
    text = page.locator("#inspector").inner_text()
    assert "1 - beta1^t" in text and "gradient g" in text
    assert {"m", "v"} <= set(
        page.eval_on_selector_all("#inspector td.k", "ts => ts.map(t => t.textContent)")
    )
    assert page.locator("#arrows .arrow").count() >= 2
    page.locator("#scrub").fill("10")
    page.wait_for_function(
        "() => document.getElementById('inspect-title').textContent.endsWith('step 10')",
        timeout=30_000,
    )
    page.locator("#play").click()
    page.wait_for_function(
        "() => Number(document.getElementById('scrub').value) > 10", timeout=30_000
    )


def test_a_screenshot_is_saved(page: Any, server: Any, tmp_path: Path) -> None:
    open_page(page, server, "?surface=beale&steps=200")
    page.locator('.run[data-name="adam"] .name').click()
    page.locator("#inspector table").wait_for(timeout=30_000)
    out = tmp_path / "playground.png"
    page.screenshot(path=str(out))
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (1400, 900)
    target = os.environ.get("RAVINE_SCREENSHOT")
    if target:  # how docs/images/playground.png is made
        shutil.copyfile(out, target)


def drawn_paths(page: Any) -> list[str]:
    return page.eval_on_selector_all(
        "#paths polyline", "ps => ps.map(p => p.getAttribute('points'))"
    )


def test_a_second_ravine_serve_draws_its_first_page_from_the_start_cache(
    page: Any, tmp_path: Path
) -> None:
    """The default page of a fresh `ravine serve` is answered from the last one's answers while
    its playground loads, and draws exactly what the first one drew."""
    replayed: list[str] = []
    page.on(
        "response",
        lambda r: (
            replayed.append(urlsplit(r.url).path)
            if r.headers.get("x-ravine-start-cache") == "replayed"
            else None
        ),
    )
    with ravine_serve(cache=tmp_path) as url:
        page.goto(url)
        page.wait_for_selector("body[data-ready=true]", timeout=60_000)
        first = drawn_paths(page)
        kept_answers(tmp_path / "serve-start.json", len(ROUTES))
    assert len(first) == 7 and not replayed
    with ravine_serve(cache=tmp_path) as url:
        page.goto(url)
        page.wait_for_selector("body[data-ready=true]", timeout=60_000)
        assert drawn_paths(page) == first
    assert {"/api/optimizers", "/api/contours", "/api/state", "/api/trajectories"} <= set(replayed)
    assert not page.errors, page.errors


@pytest.mark.slow  # beyond the list; `make test-slow` runs it
def test_quick_changes_to_two_optimizers_both_land(page: Any, server: Any) -> None:
    """The second change aborts the first one's request; the newer request carries both."""
    open_page(page, server, QUICK)
    before = revs(page)
    for name, value in (("adam", "640"), ("rmsprop", "300"), ("adam", "650")):
        page.locator(f'.run[data-name="{name}"] input[type=range][data-param="lr"]').fill(value)
    wait_settled(page)
    page.wait_for_function(
        "() => [...document.querySelectorAll('#paths g.path')].every(g => g.childElementCount)"
    )
    after = revs(page)
    assert {k.split("#")[0] for k in after if after[k] != before[k]} == {"adam", "rmsprop"}
    # Every path drawn is the one its card and the URL now say.
    drawn = page.eval_on_selector_all("#paths g.path", "gs => gs.map(g => g.dataset.spec)")
    in_url = [str(s) for s in parse_specs(parse_qs(urlsplit(page.url).query)["optimizers"][0])]
    assert [str(s) for s in parse_specs(",".join(drawn))] == in_url


@pytest.mark.slow  # beyond the list; `make test-slow` runs it
def test_export_downloads_the_file_ravine_viz_writes(
    page: Any, server: Any, tmp_path: Path
) -> None:
    open_page(page, server, "?surface=booth&steps=30&optimizers=adam:lr=0.5,sgd:lr=0.01")
    page.select_option("#export-view", "loss")
    with page.expect_download(timeout=60_000) as info:
        page.click('.export button[data-format="png"]')
    download = info.value
    assert download.suggested_filename == "booth_loss.png"
    saved = tmp_path / "booth_loss.png"
    download.save_as(str(saved))
    from ravine.viz import plot, run

    plot(run("booth", ["adam:lr=0.5", "sgd:lr=0.01"], steps=30), tmp_path / "cli.png", view="loss")
    assert saved.read_bytes() == (tmp_path / "cli.png").read_bytes()
