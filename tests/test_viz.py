"""ravine.viz: specs, trajectories (checked on the numbers), images, animations, CLI, gallery."""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

import ravine
from ravine import surfaces
from ravine.cli.viz import main as viz_main
from ravine.viz import animation as animate_mod
from ravine.viz.animation import MissingFFmpegError, animate, frame_steps, render_frames
from ravine.viz.gallery import SCENES, make_gallery, render_scene
from ravine.viz.plots import (
    clip_diverged,
    contour_figure,
    exit_point,
    panels_figure,
    plot,
    split_labels,
)
from ravine.viz.specs import parse_spec, parse_specs
from ravine.viz.trajectory import race, run, run_one

# --- specs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "name", "hparams"),
    [
        ("adam", "adam", ()),
        ("Adam:lr=0.1", "adam", (("lr", 0.1),)),
        ("adam:lr=0.1,betas=(0.9,0.99)", "adam", (("lr", 0.1), ("betas", (0.9, 0.99)))),
        ("sgd:lr=1e-3, momentum=0.5", "sgd", (("lr", 1e-3), ("momentum", 0.5))),
        ("rmsprop:centered=true", "rmsprop", (("centered", True),)),
        ("nag:form=lookahead", "nag", (("form", "lookahead"),)),
        # "no" was the string 'no', which is true: maximize=no maximized
        ("sgd:lr=0.01,maximize=no", "sgd", (("lr", 0.01), ("maximize", False))),
        ("adam:amsgrad=YES", "adam", (("amsgrad", True),)),
    ],
)
def test_parse_spec(text: str, name: str, hparams: tuple) -> None:
    spec = parse_spec(text)
    assert (spec.name, spec.hparams) == (name, hparams)
    assert parse_spec(str(spec)) == spec  # the canonical form parses back


def test_maximize_no_minimizes() -> None:
    plain, no = run("quadratic", ["sgd:lr=0.01", "sgd:lr=0.01,maximize=no"], steps=5)
    assert np.array_equal(plain.points, no.points) and no.losses[-1] < no.losses[0]


def test_parse_specs_groups_key_values_with_the_spec_before_them() -> None:
    got = parse_specs("sgd,momentum:lr=0.01,momentum=0.5,adam:lr=0.1,betas=(0.9,0.99),nag")
    assert [str(s) for s in got] == [
        "sgd",
        "momentum:lr=0.01,momentum=0.5",
        "adam:lr=0.1,betas=(0.9,0.99)",
        "nag",
    ]
    assert parse_specs(["sgd", "adam:lr=0.1"]) == [parse_spec("sgd"), parse_spec("adam:lr=0.1")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected 'name' or 'name:key=value"),
        (":lr=1", "is not an optimizer name"),
        ("adam:", "expected key=value after ':'"),
        ("adam:lr", "'lr' is not key=value"),
        ("adam:lr=0.1,lr=0.2", "'lr' given twice"),
        ("adam:betas=(0.9,0.99", "unclosed bracket"),
        ("adam:lr=0.1)", "unbalanced"),
        ("adam:lr=0.1.2", "value '0.1.2' for 'lr'"),
        ("adam:1x=2", "is not key=value"),
    ],
)
def test_malformed_specs_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_spec(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lr=0.1,adam", "'lr=0.1' must follow 'name:'"),
        ("sgd,,adam", "empty entry"),
        ([], "at least one optimizer spec"),
    ],
)
def test_malformed_spec_lists(text: str | list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_specs(text)


def test_unknown_optimizer_suggests_registry_names() -> None:
    with pytest.raises(ValueError, match=r"optimizer='adm' is not in ravine's registry.*'adam'"):
        parse_spec("adm").build([torch.zeros(2, requires_grad=True)])


def test_specs_build_ravine_optimizers() -> None:
    opt = parse_spec("adam:lr=0.1,betas=(0.8,0.9)").build([torch.zeros(2, requires_grad=True)])
    assert isinstance(opt, ravine.Optimizer)
    assert opt.param_groups[0]["lr"] == 0.1 and tuple(opt.param_groups[0]["betas"]) == (0.8, 0.9)


# --- trajectories on the numbers -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("surface", "spec"),
    [
        ("beale", "sgd:lr=0.001"),
        ("beale", "momentum:lr=0.001,momentum=0.9"),
        ("rosenbrock", "nag:lr=0.0005"),
        ("himmelblau", "adam:lr=0.05"),
        ("rastrigin", "rmsprop:lr=0.01"),
        ("booth", "adagrad:lr=0.5"),
        ("monkey-saddle", "adadelta:lr=1"),
        ("beale", "qhadam:lr=0.05"),
        ("beale", "aggmo:lr=0.0002"),
        ("beale", "adabound:lr=0.1"),
        ("beale", "radam:lr=0.01"),
        ("beale", "ranger:lr=0.01"),
        ("rosenbrock", "lbfgs:lr=0.5"),
    ],
)
def test_trajectory_equals_the_optimizers_own_steps(surface: str, spec: str) -> None:
    steps = 40
    traj = run_one(surface, spec, steps=steps)
    s = surfaces.get(surface)
    parsed = parse_spec(spec)
    p = torch.tensor(s.start, dtype=torch.float64, requires_grad=True)
    opt = ravine.create(parsed.name, [p], **parsed.kwargs)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = s.loss(p)
        loss.backward()
        return loss

    expected = [p.detach().clone()]
    for _ in range(steps):
        opt.step(closure)
        expected.append(p.detach().clone())
    assert traj.points.shape == (steps + 1, 2)
    np.testing.assert_array_equal(traj.points, torch.stack(expected).numpy())
    np.testing.assert_allclose(
        traj.losses, [float(s.loss(q)) for q in expected], rtol=1e-12, atol=1e-15
    )


@pytest.mark.parametrize("surface", ["beale", "rastrigin", "himmelblau"])
def test_runs_together_equal_runs_alone(surface: str) -> None:
    """The shared, batched surface evaluation changes no bit of any trajectory."""
    specs = ["sgd:lr=0.001", "momentum:lr=0.001", "adam:lr=0.05", "rmsprop:lr=0.01", "nag"]
    together = run(surface, specs, steps=60)
    for spec, traj in zip(specs, together):
        alone = run_one(surface, spec, steps=60)
        np.testing.assert_array_equal(traj.points, alone.points)
        np.testing.assert_array_equal(traj.losses, alone.losses)


def test_a_diverging_run_does_not_disturb_the_others() -> None:
    together = run("quadratic", "sgd:lr=0.2,sgd:lr=0.01", steps=50)
    assert together[0].diverged and not together[1].diverged
    np.testing.assert_array_equal(
        together[1].points, run_one("quadratic", "sgd:lr=0.01", steps=50).points
    )


@pytest.mark.parametrize(
    ("surface", "specs", "pieces"),
    [
        ("beale", "sgd:lr=0.001,adam:lr=0.05,nag,lbfgs", (7, 30, 60)),
        ("quadratic", "sgd:lr=0.2,sgd:lr=0.01", (3, 6, 25, 60)),  # one diverges at step 6
        ("saddle", "sgd:lr=0.3,adam:lr=0.5", (10, 31, 59, 60)),  # one escapes at step 31
        ("beale", "adam:lr=0.02", (1, 2, 60)),  # alone: the unbatched evaluation
    ],
)
def test_a_race_advanced_in_pieces_is_run_exactly(
    surface: str, specs: str, pieces: tuple[int, ...]
) -> None:
    """What the playground streams: every snapshot is an exact prefix, and the race continued
    after them ends where one run() does, bit for bit."""
    whole = run(surface, specs, steps=60)
    r = race(surface, specs, steps=60)
    for t in pieces:
        r.advance(t)
        for part, full in zip(r.trajectories(), whole):
            n = len(part.points)
            assert n <= t + 1 and part.steps == (60 if r.finished else t)
            np.testing.assert_array_equal(part.points, full.points[:n])
            np.testing.assert_array_equal(part.losses, full.losses[:n])
    assert r.finished
    for got, want in zip(r.trajectories(), whole):
        np.testing.assert_array_equal(got.points, want.points)
        np.testing.assert_array_equal(got.losses, want.losses)
        assert (got.diverged_at, got.escaped_at, got.steps) == (
            want.diverged_at,
            want.escaped_at,
            want.steps,
        )


@pytest.mark.parametrize("lr", [0.01, 0.04, 0.09])
def test_sgd_on_the_quadratic_matches_the_closed_form(lr: float) -> None:
    """x^2 + 10y^2: SGD multiplies x by (1 - 2 lr) and y by (1 - 20 lr) every step."""
    traj = run_one("quadratic", f"sgd:lr={lr}", steps=30)
    t = np.arange(31)
    np.testing.assert_allclose(traj.points[:, 0], 7 * (1 - 2 * lr) ** t, rtol=1e-12)
    np.testing.assert_allclose(traj.points[:, 1], 5 * (1 - 20 * lr) ** t, rtol=1e-10, atol=1e-300)


ADAPTIVE = ["adagrad", "adadelta", "rmsprop", "adam", "amsgrad", "adamw", "adamax", "nadam"]


@pytest.mark.parametrize("name", ADAPTIVE)
def test_adaptive_methods_approach_the_quadratics_minimum(name: str) -> None:
    """From (7, 5), with registry defaults (small steps) and with a tuned learning rate."""
    start_distance = math.hypot(7, 5)
    default = run_one("quadratic", name, steps=100, start=(7, 5))
    assert math.hypot(*default.final) < start_distance
    assert default.losses[-1] < default.losses[0]
    tuned = run_one("quadratic", f"{name}:lr={50 if name == 'adadelta' else 0.5}", steps=100)
    assert math.hypot(*tuned.final) < 0.1 * start_distance
    assert not tuned.diverged


def test_on_the_saddle_sgd_lingers_while_adam_and_rmsprop_escape() -> None:
    steps = 150
    trajs = {
        t.spec.name: t
        for t in run("saddle", "sgd:lr=0.01,adam:lr=0.01,rmsprop:lr=0.01", steps=steps)
    }
    assert trajs["sgd"].points[0].tolist() == [7.0, 0.001]
    x, y = trajs["sgd"].final
    assert abs(y) < 0.05 and math.hypot(x, y) < 0.5  # drawn into the saddle, not out of it
    for name in ("adam", "rmsprop"):
        assert abs(trajs[name].final[1]) > 1.0, name


def test_divergence_is_detected_and_cut_not_crashed_on() -> None:
    traj = run_one("quadratic", "sgd:lr=0.2", steps=500)  # |1 - 20 lr| = 3: blows up
    assert traj.diverged and traj.status.startswith("diverged at step")
    assert traj.diverged_at is not None and traj.diverged_at < 20
    assert len(traj.points) == traj.diverged_at + 1
    assert np.isfinite(traj.points).all()


def test_running_off_an_unbounded_surface_is_escape_not_divergence() -> None:
    traj = run_one("saddle", "momentum:lr=0.01,momentum=0.9", steps=400)
    assert traj.escaped_at is not None and not traj.diverged
    assert traj.status == "left the view"


def test_non_finite_gradient_stops_the_run_as_diverged() -> None:
    # d/dx sqrt(|x|) at x = 0 is not finite: ravine refuses the step.
    s = surfaces.from_expression("sqrt(abs(x)) + y^2", start=(0.0, 1.0))
    traj = run_one(s, "sgd:lr=0.1", steps=10)
    assert traj.diverged_at == 1 and len(traj.points) == 1


def test_closure_optimizers_are_stepped_with_the_closure() -> None:
    """L-BFGS evaluates the loss several times per step: only step(closure) can drive it, and
    it must see fresh evaluations after the shared one that starts each step."""
    together = run("rosenbrock", "lbfgs:line_search_fn=strong_wolfe,adam:lr=0.01", steps=8)
    assert together[0].losses[-1] < 1e-9 < together[0].losses[0]
    np.testing.assert_array_equal(
        together[0].points,
        run_one("rosenbrock", "lbfgs:line_search_fn=strong_wolfe", steps=8).points,
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": 0}, "steps=0: expected an integer from 1 to 100000"),
        ({"steps": -5}, "steps=-5: expected an integer from 1 to 100000"),
        # 10**9 preallocated 16 GB and ran for hours; 2**63 crashed inside torch
        ({"steps": 10**9}, "steps=1000000000: expected an integer from 1 to 100000"),
        ({"steps": 2**63}, "steps=9223372036854775808: expected an integer"),
        ({"steps": 5.0}, "steps=5.0: expected an integer"),
        ({"steps": 5, "start": (1.0,)}, r"start=\(1.0,\): expected a finite point"),
        ({"steps": 5, "start": (1.0, math.nan)}, "expected a finite point"),
        ({"steps": 5, "start": (1.0, 1e400)}, "expected a finite point"),
        ({"steps": 5, "start": ("a", 1.0)}, "expected a finite point"),
    ],
    ids=[
        "zero-steps",
        "negative-steps",
        "billion-steps",
        "2**63-steps",
        "float-steps",
        "one-coordinate",
        "nan-start",
        "inf-start",
        "text-start",
    ],
)
@pytest.mark.timeout(10)
def test_run_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run_one("beale", "sgd", **kwargs)


def test_exit_point_and_clipping() -> None:
    pts = np.array([[0.0, 0.0], [0.5, 0.5], [3.0, 0.5], [50.0, 0.5]])
    assert exit_point(pts, (-1.0, 1.0, -1.0, 1.0)) == (1.0, 0.5)
    traj = run_one("quadratic", "sgd:lr=0.2", steps=50)
    clipped = clip_diverged(traj, (-8.0, 8.0, -8.0, 8.0))
    assert len(clipped) < len(traj.points)
    assert np.abs(clipped).max() == pytest.approx(8.0)  # ends on the window's edge


# --- images --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def beale_trajs():
    return run("beale", "sgd:lr=0.001,momentum:lr=0.001,adam:lr=0.05", steps=60)


@pytest.mark.parametrize("view", ["contour", "3d", "loss"])
@pytest.mark.parametrize("size", [(640, 480), (900, 640)])
def test_png_views_are_valid_images_of_the_requested_size(
    tmp_path: Path, beale_trajs, view: str, size: tuple[int, int]
) -> None:
    path = tmp_path / f"{view}.png"
    assert isinstance(plot(beale_trajs, path, view=view, size=size), Figure)
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == size
        colours = len(im.convert("RGB").getcolors(maxcolors=1 << 20) or [])
    assert colours > 50  # contours, paths and text were drawn, not a blank canvas


@pytest.mark.parametrize("view", ["contour", "3d", "loss"])
def test_surfaces_undefined_in_part_of_the_window_still_draw(tmp_path: Path, view: str) -> None:
    # log(x) is NaN for x < 0: the 3-D view's floor and lift came out NaN and matplotlib
    # failed while drawing ("operands could not be broadcast ...")
    trajs = run("expr:log(x) + y**2", "sgd:lr=0.01", steps=5, start=(2.0, 1.0))
    path = tmp_path / "hole.png"
    plot(trajs, path, view=view, size=(320, 240))
    with Image.open(path) as im:
        assert im.size == (320, 240)


def test_3d_view_of_a_surface_undefined_everywhere_says_so(tmp_path: Path) -> None:
    trajs = run("expr:log(-1 - abs(x)) + y", "sgd:lr=0.01", steps=2)
    with pytest.raises(ValueError, match="has no finite value in the window"):
        plot(trajs, tmp_path / "none.png", view="3d")


def test_svg_is_a_valid_svg_of_the_requested_size(tmp_path: Path, beale_trajs) -> None:
    path = tmp_path / "beale.svg"
    plot(beale_trajs, path, size=(640, 480))
    root = ET.parse(path).getroot()
    assert root.tag.endswith("svg")
    assert root.get("width") == "460.8pt" and root.get("height") == "345.6pt"  # 72 pt per inch


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"view": "side"}, "view='side': expected one of contour, 3d, loss"),
        ({"fmt": "jpg"}, "format='jpg': expected one of png, svg"),
        ({"size": (10, 10)}, r"size=\(10, 10\): expected"),
        # wrote SVG into a .png file
        ({"fmt": "svg"}, "format='svg' does not match the file .*x.png.*SVG into a .png file"),
    ],
    ids=["bad-view", "bad-format", "tiny-size", "format-suffix-mismatch"],
)
def test_plot_rejects_bad_arguments(tmp_path: Path, beale_trajs, kwargs: dict, message) -> None:
    with pytest.raises(ValueError, match=message):
        plot(beale_trajs, tmp_path / "x.png", **kwargs)
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(
    ("name", "fmt"), [("x", "svg"), ("x.SVG", "svg"), ("x.dat", "png")], ids=str
)
def test_plot_format_for_a_suffix_that_names_no_image_type(
    tmp_path: Path, beale_trajs, name: str, fmt: str
) -> None:
    path = tmp_path / name
    plot(beale_trajs, path, fmt=fmt, size=(320, 240))
    head = path.read_bytes()[:200]
    assert (b"<svg" in head) if fmt == "svg" else head.startswith(b"\x89PNG")


def _render(fig) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(int)


def test_drawing_a_trajectory_changes_the_pixels_where_it_runs(beale_trajs) -> None:
    fig = contour_figure(beale_trajs, size=(800, 600))
    ax = fig.axes[0]
    (line,) = [ln for ln in ax.lines if ln.get_label() == "adam lr=0.05"]
    with_path = _render(fig)
    line.set_visible(False)
    without = _render(fig)
    height = with_path.shape[0]
    xy = ax.transData.transform(beale_trajs[2].points[10:50])
    changed = 0
    for x, y in xy:
        col, row = round(x), round(height - y)
        changed += bool(np.abs(with_path[row, col] - without[row, col]).sum() > 30)
    assert changed >= 0.8 * len(xy)
    # Far from every path (the top-left corner of the plot) nothing moved.
    x0, y0 = ax.transData.transform((-4.0, 4.0))
    corner = (
        slice(round(height - y0) - 5, round(height - y0) + 5),
        slice(round(x0), round(x0) + 10),
    )
    assert np.array_equal(with_path[corner], without[corner])


@pytest.mark.parametrize(("steps", "stride"), [(12, 1), (30, 4), (31, 10)])
def test_gif_has_one_frame_per_stride(tmp_path: Path, steps: int, stride: int) -> None:
    trajs = run("saddle", "sgd:lr=0.01,adam:lr=0.1", steps=steps)
    path = animate(trajs, tmp_path / "saddle.gif", stride=stride, size=(480, 360))
    with Image.open(path) as im:
        assert im.format == "GIF" and im.size == (480, 360)
        assert im.n_frames == math.ceil(steps / stride) == len(frame_steps(steps, stride))
    assert frame_steps(steps, stride)[-1] == steps


def test_animation_frames_grow_the_paths() -> None:
    trajs = run("quadratic", "sgd:lr=0.01,rmsprop:lr=0.1", steps=20)
    frames = list(render_frames(trajs, stride=10, size=(480, 360)))
    assert len(frames) == 2 and frames[0].shape == (360, 480, 3)
    assert not np.array_equal(frames[0], frames[1])


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("q.png", {"fmt": "gif"}, "format='gif' does not match the file .*q.png"),
        ("q.gif", {"fps": 0}, "fps=0: expected an integer from 1 to 100"),
        ("q.gif", {"stride": 0}, "stride=0: expected a positive integer"),
        ("q.gif", {"size": (8000, 8000), "stride": 1}, "makes 8 frames of 8000x8000; .* most 5"),
    ],
    ids=["format-suffix-mismatch", "zero-fps", "zero-stride", "frames-over-memory-budget"],
)
def test_animate_rejects_bad_arguments_before_rendering(
    tmp_path: Path, monkeypatch, name: str, kwargs: dict, message: str
) -> None:
    monkeypatch.setattr(animate_mod, "render_frames", _must_not_be_called)
    monkeypatch.setattr(animate_mod, "MAX_FRAME_BYTES", 5 * 8000 * 8000 * 3)
    trajs = run("quadratic", "sgd:lr=0.01", steps=8)
    with pytest.raises(ValueError, match=message):
        animate(trajs, tmp_path / name, **{"stride": 2, **kwargs})
    assert not (tmp_path / name).exists()


def _must_not_be_called(*args, **kwargs):
    raise AssertionError("the work started although the arguments were bad")


def test_mp4_without_ffmpeg_says_so(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(animate_mod, "ffmpeg_path", lambda: None)
    trajs = run("quadratic", "sgd:lr=0.01", steps=4)
    with pytest.raises(MissingFFmpegError, match="needs ffmpeg"):
        animate(trajs, tmp_path / "q.mp4")


@pytest.mark.skipif(animate_mod.ffmpeg_path() is None, reason="ffmpeg not installed")
def test_mp4_with_ffmpeg(tmp_path: Path) -> None:
    trajs = run("quadratic", "sgd:lr=0.01", steps=8)
    path = animate(trajs, tmp_path / "q.mp4", size=(480, 360))
    data = path.read_bytes()
    assert len(data) > 1000
    assert data[4:8] == b"ftyp"  # an ISO media (MP4) container
    assert b"avc1" in data  # with an H.264 video track


# --- command line and gallery --------------------------------------------------------------------


def test_viz_is_a_ravine_subcommand() -> None:
    from ravine.cli import SUBCOMMANDS

    assert ("viz", "ravine.cli.viz") in [(n, m) for n, m, _ in SUBCOMMANDS]


def test_cli_writes_the_requested_file(tmp_path: Path, capsys) -> None:
    out = tmp_path / "q.png"
    args = ["--surface", "quadratic", "--optimizers", "sgd:lr=0.01", "adam:lr=0.5"]
    rc = viz_main([*args, "--steps", "20", "--start=7,5", "--out", str(out), "--size", "640x480"])
    assert rc == 0
    with Image.open(out) as im:
        assert im.size == (640, 480)
    printed = capsys.readouterr().out
    assert "adam lr=0.5" in printed and f"wrote {out}" in printed


def test_cli_gif_format(tmp_path: Path) -> None:
    out = tmp_path / "s.gif"
    args = ["--surface", "saddle", "--optimizers", "rmsprop:lr=0.05", "--steps", "10"]
    assert viz_main([*args, "--stride", "5", "--out", str(out), "--size", "480x360"]) == 0
    with Image.open(out) as im:
        assert im.n_frames == 2


def test_cli_list(capsys) -> None:
    assert viz_main(["--list"]) == 0
    printed = capsys.readouterr().out
    for name in [*surfaces.names(), *ravine.optim.registry.names()]:
        assert name in printed


# Each error case is refused before any trajectory is computed (the run is patched to fail):
# "{tmp}" is the test's folder, which holds a file "afile" and a folder "adir.png".
CLI_ERRORS = [
    ("unknown-surface", ["--surface", "bael"], "did you mean 'beale'"),
    ("malformed-spec", ["--optimizers", "adam:lr"], "'lr' is not key=value"),
    ("params-in-spec", ["--optimizers", "adam:params=1"], "'params' is not a hyperparameter"),
    ("hostile-formula", ["--surface", "expr:9**9**9+x"], "has exponent 3.8742e+08"),
    ("zero-steps", ["--steps", "0"], "steps=0: expected an integer from 1 to 100000"),
    ("negative-steps", ["--steps", "-5"], "steps=-5: expected an integer from 1 to 100000"),
    ("billion-steps", ["--steps", str(10**9)], "steps=1000000000: expected an integer from 1"),
    ("2**63-steps", ["--steps", str(2**63)], "steps=9223372036854775808: expected an integer"),
    ("nan-start", ["--start=nan,1"], "start=(nan, 1.0): expected a finite point"),
    (
        "lbfgs-max-iter-huge",  # ran 10**8 inner iterations per step
        ["--optimizers", "lbfgs:max_iter=100000000,tolerance_grad=0,tolerance_change=0"],
        "runs up to 1000000000 inner iterations; expected at most 2000000",
    ),
    ("svg-into-png", ["--format", "svg", "--out", "{tmp}/x.png"], "SVG into a .png file"),
    ("gif-into-png", ["--format", "gif", "--out", "{tmp}/x.png"], "GIF into a .png file"),
    ("unknown-suffix", ["--out", "{tmp}/x.txt"], "suffix '.txt' is not one of .png, .svg"),
    ("out-under-a-file", ["--out", "{tmp}/afile/x.png"], "afile' is not a directory"),
    ("out-is-a-folder", ["--format", "png", "--out", "{tmp}"], "is a directory, expected a file"),
    ("out-folder-named-png", ["--out", "{tmp}/adir.png"], "adir.png' is a directory"),
    (
        "3d-view-for-animation",
        ["--format", "gif", "--view", "3d"],
        "--view=3d is for png/svg; an animation (--format gif) shows the contour view only",
    ),
    ("loss-view-for-mp4", ["--format", "mp4", "--view", "loss"], "--view=loss is for png/svg"),
    ("zero-stride", ["--format", "gif", "--stride", "0"], "stride=0: expected a positive"),
    ("zero-fps", ["--format", "gif", "--fps", "0"], "fps=0: expected an integer from 1 to 100"),
    ("huge-fps", ["--format", "gif", "--fps", str(10**30)], "fps=1000000000000000000000000000"),
    (
        "too-many-frames",
        ["--format", "gif", "--steps", "100000", "--stride", "1"],
        "makes 100000 frames of 900x640; expected at most 621",
    ),
    ("tiny-size", ["--size", "10x10"], "size=(10, 10): expected (width, height)"),
    ("gallery-into-a-file", ["--gallery", "--out", "{tmp}/afile"], "afile' is not a directory"),
    ("gallery-under-a-file", ["--gallery", "--out", "{tmp}/afile/g"], "afile' is not a directory"),
]


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("argv", "message"), [c[1:] for c in CLI_ERRORS], ids=[c[0] for c in CLI_ERRORS]
)
def test_cli_errors_are_one_clear_line_before_any_work(
    tmp_path: Path, capsys, monkeypatch, argv: list[str], message: str
) -> None:
    import ravine.cli.viz as viz_cli
    import ravine.viz.gallery as gallery

    monkeypatch.setattr(viz_cli, "run_trajectories", _must_not_be_called)
    monkeypatch.setattr(gallery, "make_gallery", _must_not_be_called)
    monkeypatch.chdir(tmp_path)  # a default output name would land here
    (tmp_path / "afile").write_text("not a folder")
    (tmp_path / "adir.png").mkdir()
    before = sorted(tmp_path.rglob("*"))
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert viz_main(["--optimizers", "sgd:lr=0.01", "--steps", "10", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ravine viz: error:") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert sorted(tmp_path.rglob("*")) == before  # nothing written, no folder made


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("adam:betas=0.9", "optimizer spec 'adam:betas=0.9'"),  # was a TypeError traceback
        ("adam:lr=-1", "lr"),
    ],
    ids=["wrong-type", "bad-value"],
)
def test_cli_bad_hyperparameters_are_one_clear_line(capsys, tmp_path, spec, message) -> None:
    argv = ["--optimizers", spec, "--steps", "5", "--out", str(tmp_path / "x.png")]
    assert viz_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("ravine viz: error:") and message in err and err.count("\n") == 1
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--size", "infx3"], "--size='infx3': expected whole pixels"),
        (["--size", "nanxnan"], "--size='nanxnan': expected whole pixels"),
        (["--start=1,2,3"], "--start='1,2,3': expected two numbers"),
        (["--steps", "2**63"], "invalid int value: '2**63'"),
    ],
    ids=["inf-size", "nan-size", "three-coordinates", "steps-expression"],
)
def test_cli_argument_errors_exit_2_without_traceback(capsys, argv, message) -> None:
    with pytest.raises(SystemExit) as exit_:
        viz_main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_cli_refuses_an_unwritable_folder(tmp_path: Path, capsys, monkeypatch) -> None:
    import ravine.cli.viz as viz_cli

    monkeypatch.setattr(viz_cli, "run_trajectories", _must_not_be_called)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.access(locked, os.W_OK):  # root writes anyway: make the folder read-only for the check
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != locked and real(p, mode))
    assert viz_main(["--out", str(locked / "sub" / "x.png")]) == 2
    assert f"directory '{locked}' is not writable" in capsys.readouterr().err


def test_cli_write_failure_is_one_clear_line(tmp_path: Path, capsys, monkeypatch) -> None:
    import ravine.cli.viz as viz_cli

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "x.png"))

    monkeypatch.setattr(viz_cli, "plot", full_disk)
    argv = ["--surface", "quadratic", "--optimizers", "sgd:lr=0.01", "--steps", "3"]
    assert viz_main([*argv, "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ravine viz: error: [Errno 28] No space left") and err.count("\n") == 1


def test_cli_makes_missing_folders_for_out(tmp_path: Path) -> None:
    out = tmp_path / "some" / "missing" / "dir" / "x.png"
    args = ["--surface", "quadratic", "--optimizers", "sgd:lr=0.01", "--steps", "5"]
    assert viz_main([*args, "--out", str(out), "--size", "320x240"]) == 0
    with Image.open(out) as im:
        assert im.format == "PNG"


def _gallery_size(size: tuple[int, int]) -> bool:
    """The gallery's 6.4 x 4.6 in at 100 dpi: 640 x 460 (matplotlib 3.10 rounds to 459 rows)."""
    return size[0] == 640 and abs(size[1] - 460) <= 1


def test_gallery_scene_quick(tmp_path: Path) -> None:
    paths = make_gallery(tmp_path, quick=True, scenes=["quadratic-sgd", "saddle"])
    names = sorted(p.name for p in paths)
    assert names == sorted(
        [
            "quadratic-sgd.png",
            "quadratic-sgd_loss.png",
            "saddle.png",
            "saddle.gif",
            "saddle_3d.png",
            "saddle_loss.png",
        ]
    )
    for p in paths:
        with Image.open(p) as im:
            assert _gallery_size(im.size)


def test_gallery_rejects_unknown_scenes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"scenes=\['beal'\]: unknown"):
        make_gallery(tmp_path, scenes=["beal"])


def test_gallery_covers_the_seeds_figures() -> None:
    by_name = {s.name: s for s in SCENES}
    classic = {"sgd", "momentum", "nag", "adagrad", "adadelta", "rmsprop", "adam"}
    assert {parse_spec(o).name for o in by_name["beale"].optimizers} == classic
    assert {parse_spec(o).name for o in by_name["saddle"].optimizers} == classic
    assert "gif" in by_name["beale"].views and "gif" in by_name["saddle"].views
    later = {parse_spec(o).name for o in by_name["later"].optimizers}
    assert later == {"amsgrad", "adamw", "qhadam", "aggmo", "adabound", "radam", "ranger"}


@pytest.mark.slow
def test_whole_gallery(tmp_path: Path) -> None:
    paths = make_gallery(tmp_path)
    assert len(paths) >= 14
    for p in paths:
        with Image.open(p) as im:
            im.verify()


# --- figures returned, colour bars, panels, legends (issue 15, point 7) --------------------------


def test_plot_returns_the_figure_and_writes_only_when_given_a_path(tmp_path: Path, beale_trajs):
    fig = plot(beale_trajs, view="loss", size=(320, 240))
    assert isinstance(fig, Figure) and list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="fmt='svg' without a path"):
        plot(beale_trajs, fmt="svg")


@pytest.mark.parametrize(
    ("surface", "label", "scale"),
    [("beale", "f(x, y) - f*", "log"), ("quadratic", "f(x, y)", "linear")],
)
def test_contour_maps_have_a_colour_bar_saying_what_the_levels_are(surface, label, scale):
    trajs = run(surface, "sgd:lr=0.001", steps=5)
    fig = contour_figure(trajs, size=(640, 480))
    fig.canvas.draw()
    (ax,) = fig.axes
    (bar,) = ax.child_axes  # an inset, so it follows the map's box
    assert bar.get_ylabel() == label and bar.get_yscale() == scale
    # Between the map and the legend, overlapping neither.
    legend = ax.get_legend().get_window_extent()
    box, bar_box = ax.get_window_extent(), bar.get_tightbbox()
    assert box.x1 < bar_box.x0 and bar_box.x1 <= legend.x0 <= fig.bbox.width


def test_panels_share_one_legend_of_short_labels() -> None:
    trajs = run(
        "quadratic", ["momentum:lr=0.01,momentum=0.5", "momentum:lr=0.01,momentum=0.9"], steps=5
    )
    nag = run("quadratic", ["nag:lr=0.01,momentum=0.5", "nag:lr=0.01,momentum=0.9"], steps=5)
    fig = panels_figure([trajs, nag], size=(640, 460))
    fig.canvas.draw()
    left, right, bar = fig.axes
    assert (left.get_title(), right.get_title()) == ("momentum lr=0.01", "nag lr=0.01")
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [
        "momentum=0.5",
        "momentum=0.9",
        "minimum",
        "start",
    ]
    assert bar.get_ylabel() == "f(x, y)"


def test_split_labels_moves_shared_words_to_the_title() -> None:
    trajs = run("quadratic", ["sgd:lr=0.01", "sgd:lr=0.05"], steps=2)
    assert split_labels(trajs) == ("sgd", ["lr=0.01", "lr=0.05"])
    assert split_labels(trajs[:1]) == ("sgd lr=0.01", ["sgd lr=0.01"])


def test_loss_view_legend_sits_under_the_curves_and_leaves_them_the_width(beale_trajs):
    fig = plot(beale_trajs, view="loss", size=(900, 640))
    fig.canvas.draw()
    (ax,) = fig.axes
    (legend,) = fig.legends
    box = ax.get_window_extent()
    assert legend.get_window_extent().y1 < box.y0
    assert box.width > 0.8 * fig.bbox.width


def test_gallery_momentum_scene_is_two_panels(tmp_path: Path) -> None:
    (path,) = render_scene(
        replace(next(s for s in SCENES if s.name == "quadratic-momentum"), views=("contour",)),
        tmp_path,
        quick=True,
    )
    assert path.name == "quadratic-momentum.png"
    with Image.open(path) as im:
        assert _gallery_size(im.size)


# --- ravine.viz.tape: the surface's gradient in floats, autograd's bits -------------------------

# Every built-in surface but Rastrigin (its cosines stay on autograd), and expr: formulas.
TAPE_SURFACES = [
    *(name for name in surfaces.names() if name != "rastrigin"),
    "expr:(x-1)^2*(y+2)^3 - 3*x*y + 0.5*y^2",
    "expr:x^2",
]


def _tape_points(n: int, seed: int) -> np.ndarray:
    """Points over many magnitudes, with exact zeros (-0.0 too) and integers among them."""
    rng = np.random.default_rng(seed)
    pts = rng.standard_normal((n, 2)) * np.exp(rng.uniform(-8, 3, (n, 2)))
    pts[:40] = np.round(pts[:40])
    pts[40:50] = 0.0
    pts[50:55, 0] = -0.0
    return pts


@pytest.mark.parametrize("name", TAPE_SURFACES)
def test_the_tape_gives_autograds_value_and_gradient_bit_for_bit(name: str) -> None:
    from ravine.viz.tape import compile_surface

    fn = surfaces.get(name).fn
    pts = _tape_points(3000, seed=len(name))
    # Batched, as the runner evaluates several runs: rows of stacked parameters.
    params = [torch.tensor(p, dtype=torch.float64, requires_grad=True) for p in pts]
    points = torch.stack(params)
    losses = fn(points[:, 0], points[:, 1])
    losses.sum().backward()
    batched = compile_surface(fn, True)
    got = np.array([batched(float(x), float(y)) for x, y in pts])
    want = np.column_stack([losses.detach().numpy(), torch.stack([p.grad for p in params])])
    assert got.tobytes() == want.tobytes()
    # Alone: x, y = p.unbind(), as the runner evaluates one run.
    single = compile_surface(fn, False)
    for x, y in pts[:300]:
        p = torch.tensor([x, y], dtype=torch.float64, requires_grad=True)
        loss = fn(*p.unbind())
        loss.backward()
        want_one = np.array([loss.item(), *p.grad.tolist()])
        assert np.array(single(float(x), float(y))).tobytes() == want_one.tobytes(), (x, y)


def test_torchs_kernels_are_what_the_tape_assumes() -> None:
    """``t ** 2`` and ``t ** 3`` multiply (others call pow); ``t.pow(1)`` is ``t``."""
    v = _tape_points(200_000, seed=3).ravel()
    t = torch.tensor(v)
    assert (t**2).numpy().tobytes() == (v * v).tobytes()
    assert (t**3).numpy().tobytes() == (v * v * v).tobytes()
    assert (t**3.0).numpy().tobytes() == (v * v * v).tobytes()
    assert t.pow(1.0).numpy().tobytes() == v.tobytes()


@pytest.mark.parametrize(
    "name",
    ["rastrigin", "expr:sin(x) + y^2", "expr:x/2 + y^2", "expr:x^4 + y^2", "expr:x^0.5 + y"],
)
def test_the_tape_refuses_what_it_cannot_replay(name: str) -> None:
    from ravine.viz.tape import Unsupported, compile_surface

    with pytest.raises(Unsupported):
        compile_surface(surfaces.get(name).fn, False)


def test_the_tape_refuses_a_branch_on_a_value() -> None:
    from ravine.viz.tape import Unsupported, compile_surface

    def kinked(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x * x if x > 0 else y * y  # type: ignore[operator]

    with pytest.raises(Unsupported):
        compile_surface(kinked, False)


@pytest.mark.parametrize("surface", ["beale", "rosenbrock", "himmelblau", "monkey-saddle"])
def test_runs_with_the_tape_equal_runs_through_autograd(
    surface: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every registered optimizer, batched and alone, from the default start and from x = 0
    (exact zero gradients, where batching flips the sign of a zero): the same bits."""
    from ravine.optim import registry
    from ravine.viz import trajectory
    from ravine.viz.tape import Unsupported

    def autograd_only(*args: object) -> None:
        raise Unsupported("autograd, for the comparison")

    specs = registry.names()

    def runs() -> list[trajectory.Trajectory]:
        together = [t for s in (None, (0.0, 1.0)) for t in run(surface, specs, steps=40, start=s)]
        return [*together, run_one(surface, "adam:lr=0.05", steps=40, start=(0.0, 1.0))]

    fast = runs()
    monkeypatch.setattr(trajectory, "compile_surface", autograd_only)
    for got, want in zip(fast, runs(), strict=True):
        assert got.points.tobytes() == want.points.tobytes(), got.label
        assert got.losses.tobytes() == want.losses.tobytes(), got.label
        assert (got.diverged_at, got.escaped_at) == (want.diverged_at, want.escaped_at)


def test_a_surface_of_yours_stays_on_autograd(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only ravine's own surfaces are replayed: a function of yours may read state that changes
    after a trace (here a scale), which autograd sees and a replay would not."""
    from ravine.viz import trajectory

    scale = [1.0]

    def bowl(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return scale[0] * (x * x + y * y)

    mine = surfaces.custom("bowl", bowl, window=(-2, 2, -2, 2), start=(1.0, 1.0))
    traced: list[object] = []
    monkeypatch.setattr(trajectory, "compile_surface", lambda fn, b: traced.append(fn))
    first = run(mine, "sgd:lr=0.1", steps=3)[0]
    scale[0] = 2.0
    second = run(mine, "sgd:lr=0.1", steps=3)[0]
    assert not traced
    np.testing.assert_allclose(first.points[1], [0.8, 0.8])
    np.testing.assert_allclose(second.points[1], [0.6, 0.6])
