"""The gallery: the survey's and the comparison notes' figures, remade with ravine's optimizers.

Scenes (one table, below):

- ``beale``: SGD, Momentum, NAG, Adagrad, Adadelta, RMSprop and Adam on the Beale function (the
  survey's Image 5), as a contour map, an animation, a 3-D view and loss curves.
- ``saddle``: the same seven on x^2 - y^2 from (7, 0.001) (the survey's Image 6; the notes'
  Figures 6 and 7).
- ``quadratic-sgd``: SGD on x^2 + 10y^2 from (7, 5) at several learning rates (notes, Figure 2).
- ``quadratic-momentum``: Momentum and NAG at several gammas (notes, Figure 3).
- ``quadratic-adaptive``: Adagrad, Adadelta, RMSprop, Adam (notes, Figure 4).
- ``later``: AMSGrad, AdamW, QHAdam, AggMo, AdaBound, RAdam, Ranger on Beale (the survey's list
  of later optimizers). Any that ravine's registry does not have is left out, and the figure
  says so in its title.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ravine.surfaces import Window, get
from ravine.viz.animation import animate
from ravine.viz.plots import (
    colors,
    contour_figure,
    loss_figure,
    panels_figure,
    save,
    surface3d_figure,
)
from ravine.viz.specs import (  # the defaults live with the specs (no matplotlib needed)
    CLASSIC,
    CLASSIC_NAMES,
    LATER_NAMES,
    optimizer_names,
    parse_specs,
    tuned,
)
from ravine.viz.trajectory import run


@dataclass(frozen=True)
class Scene:
    """One gallery entry: a surface, optimizers, and which views to draw."""

    name: str
    surface: str
    optimizers: tuple[str, ...]
    steps: int
    title: str
    views: tuple[str, ...] = ("contour", "loss")
    window: Window | None = None
    start: tuple[float, float] | None = None
    stride: int = 3
    #: Per optimizer: index into the colour palette and line style (default: a colour each).
    style: tuple[tuple[int, str], ...] | None = None
    #: Contour view as panels side by side: the optimizers' indices in each (default: one map).
    panels: tuple[tuple[int, ...], ...] | None = None


SCENES: tuple[Scene, ...] = (
    Scene(
        "beale",
        "beale",
        CLASSIC,
        steps=300,
        title="Beale function: the classic optimizers (survey, Image 5)",
        views=("contour", "gif", "3d", "loss"),
        window=(-0.5, 4.5, -1.5, 3.5),
    ),
    Scene(
        "saddle",
        "saddle",
        tuned("saddle", CLASSIC_NAMES),
        steps=150,
        title="Saddle point from (7, 0.001) (survey, Image 6)",
        views=("contour", "gif", "3d", "loss"),
        stride=2,
    ),
    Scene(
        "quadratic-sgd",
        "quadratic",
        ("sgd:lr=0.01", "sgd:lr=0.05", "sgd:lr=0.09", "sgd:lr=0.105"),
        steps=100,
        title="SGD at several learning rates (comparison, Figure 2)",
    ),
    Scene(
        "quadratic-momentum",
        "quadratic",
        (
            "momentum:lr=0.01,momentum=0.5",
            "momentum:lr=0.01,momentum=0.9",
            "momentum:lr=0.01,momentum=0.95",
            "nag:lr=0.01,momentum=0.5",
            "nag:lr=0.01,momentum=0.9",
            "nag:lr=0.01,momentum=0.95",
        ),
        steps=150,
        title="Momentum and NAG at several gammas (comparison, Figure 3)",
        # One colour per gamma in both panels, so each Momentum/NAG pair reads as a pair; the
        # loss view overlays them, NAG dashed.
        style=((0, "-"), (1, "-"), (3, "-"), (0, "--"), (1, "--"), (3, "--")),
        panels=((0, 1, 2), (3, 4, 5)),
    ),
    Scene(
        "quadratic-adaptive",
        "quadratic",
        tuned("quadratic", ("adagrad", "adadelta", "rmsprop", "adam")),
        steps=100,
        title="Adaptive learning rates (comparison, Figure 4)",
    ),
    Scene(
        "later",
        "beale",
        tuned("beale", LATER_NAMES),
        steps=500,
        title="Later optimizers on Beale (RAdam, Ranger: momentum-SGD warm-up steps first)",
        window=(-0.5, 4.5, -1.5, 3.5),
    ),
)

SIZE = (900, 640)
QUICK_SIZE = (640, 460)


def scene_names() -> list[str]:
    return [s.name for s in SCENES]


def available(optimizers: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split specs into those whose optimizer the registry has and those it lacks."""
    known = set(optimizer_names())
    have, missing = [], []
    for spec in optimizers:
        (parsed,) = parse_specs([spec])
        (have if parsed.name in known else missing).append(spec)
    return have, [parse_specs([m])[0].name for m in missing]


def render_scene(
    scene: Scene, out_dir: str | Path, *, quick: bool = False, verbose: bool = False
) -> list[Path]:
    """Run the scene's optimizers once and draw each of its views into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    specs, missing = available(scene.optimizers)
    if not specs:
        if verbose:
            print(f"  {scene.name}: skipped, none of its optimizers is registered ({missing})")
        return []
    title = scene.title
    if missing:
        title += f"\n(not in ravine yet: {', '.join(missing)})"
        if verbose:
            print(f"  {scene.name}: left out {', '.join(missing)} (not in ravine's registry)")
    surface = get(scene.surface)
    steps = max(10, scene.steps // 3) if quick else scene.steps
    size = QUICK_SIZE if quick else SIZE
    trajectories = run(surface, specs, steps=steps, start=scene.start)
    kept = [i for i, spec in enumerate(scene.optimizers) if spec in specs]
    style = None
    if scene.style is not None:
        palette = colors(10)
        style = [(palette[scene.style[i][0]], scene.style[i][1]) for i in kept]
    paths: list[Path] = []
    for view in scene.views:
        if view == "contour" and scene.panels is not None:
            # Positions among the optimizers kept (a missing one leaves its panel smaller).
            where = {i: k for k, i in enumerate(kept)}
            groups = [[where[i] for i in panel if i in where] for panel in scene.panels]
            groups = [g for g in groups if g]
            fig = panels_figure(
                [[trajectories[k] for k in g] for g in groups],
                size=size,
                title=title,
                window=scene.window,
                # Solid everywhere: the panels already tell the methods apart.
                style=None if style is None else [[(style[k][0], "-") for k in g] for g in groups],
            )
            paths.append(save(fig, out_dir / f"{scene.name}.png"))
        elif view == "contour":
            fig = contour_figure(
                trajectories, size=size, title=title, window=scene.window, style=style
            )
            paths.append(save(fig, out_dir / f"{scene.name}.png"))
        elif view == "loss":
            fig = loss_figure(trajectories, size=size, title=f"{title}: loss per step", style=style)
            paths.append(save(fig, out_dir / f"{scene.name}_loss.png"))
        elif view == "3d":
            fig = surface3d_figure(
                trajectories, size=size, title=title, window=scene.window, style=style
            )
            paths.append(save(fig, out_dir / f"{scene.name}_3d.png"))
        elif view == "gif":
            stride = scene.stride * (2 if quick else 1)
            paths.append(
                animate(
                    trajectories,
                    out_dir / f"{scene.name}.gif",
                    stride=stride,
                    size=size,
                    title=title,
                    window=scene.window,
                    style=style,
                )
            )
        else:
            raise ValueError(
                f"view={view!r} in scene {scene.name!r}: expected contour, loss, 3d, gif"
            )
    return paths


def make_gallery(
    out_dir: str | Path,
    *,
    quick: bool = False,
    scenes: Sequence[str] | None = None,
    verbose: bool = False,
) -> list[Path]:
    """Render the gallery into ``out_dir`` and return the files written.

    ``quick`` runs a third of the steps at a smaller size (for tests and smoke runs).
    ``scenes`` picks scenes by name (default: all).
    """
    chosen = list(SCENES)
    if scenes is not None:
        by_name = {s.name: s for s in SCENES}
        unknown = [n for n in scenes if n not in by_name]
        if unknown:
            raise ValueError(
                f"scenes={list(scenes)!r}: unknown {unknown}; expected names from {scene_names()}"
            )
        chosen = [by_name[n] for n in scenes]
    paths: list[Path] = []
    for scene in chosen:
        t0 = time.perf_counter()
        written = render_scene(scene, out_dir, quick=quick, verbose=verbose)
        paths.extend(written)
        if verbose:
            names = ", ".join(p.name for p in written)
            print(f"  {scene.name:<20s} {time.perf_counter() - t0:5.1f} s  {names}")
    return paths
