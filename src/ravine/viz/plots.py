"""Static pictures of trajectories: contour map, 3-D surface, loss versus step.

Figures are built on matplotlib's object API with an Agg canvas (no pyplot, no global backend), so
drawing is safe in scripts, tests and notebooks alike. Sizes are in pixels and are exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colors as mcolors
from matplotlib import ticker
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.contour import QuadContourSet
from matplotlib.figure import Figure

from ravine.surfaces import Surface, Window
from ravine.viz.style import (  # the style names are ravine.viz.plots' too (its API before)
    background_rgba,
    clip_diverged,
    colors,
    contour_levels,
    exit_point,  # noqa: F401
    legend_label,
    level_label,
)
from ravine.viz.style import shift as _shift
from ravine.viz.trajectory import Trajectory

DEFAULT_SIZE = (900, 640)
DPI = 100
STATIC_FORMATS = ("png", "svg")


def new_figure(size: tuple[int, int] = DEFAULT_SIZE, *, dpi: int = DPI) -> Figure:
    """A figure of exactly ``size`` pixels with an Agg canvas attached."""
    width, height = check_size(size)
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def check_size(size: Sequence[int]) -> tuple[int, int]:
    if len(size) != 2 or not all(isinstance(v, int | np.integer) and 64 <= v <= 8000 for v in size):
        raise ValueError(f"size={tuple(size)!r}: expected (width, height) in pixels, each 64..8000")
    return int(size[0]), int(size[1])


#: Suffixes that name an image or video type: writing another format under one of them is refused.
IMAGE_SUFFIXES = ("png", "svg", "gif", "mp4", "jpg", "jpeg", "pdf", "webp", "tif", "tiff", "bmp")


def output_format(path: str | Path, fmt: str | None, allowed: Sequence[str]) -> str:
    """The format to write to ``path``: ``fmt``, or else the file's suffix.

    A suffix that names another image type (``fmt="svg"`` for ``x.png``) is refused rather than
    writing SVG into a .png file; a path without such a suffix takes any allowed ``fmt``.
    """
    suffix = Path(path).suffix.lstrip(".").lower()
    chosen = (fmt or suffix).lower()
    if chosen not in allowed:
        raise ValueError(
            f"format={chosen!r}: expected one of {', '.join(allowed)} (writing {str(path)!r})"
        )
    if suffix in IMAGE_SUFFIXES and suffix != chosen:
        raise ValueError(
            f"format={chosen!r} does not match the file {str(path)!r}: that would write "
            f"{chosen.upper()} into a .{suffix} file; name it .{chosen} or drop the format"
        )
    return chosen


def save(fig: Figure, path: str | Path, fmt: str | None = None) -> Path:
    """Write ``fig`` as PNG or SVG (from ``fmt`` or the file suffix) and return the path."""
    path = Path(path)
    fmt = output_format(path, fmt, STATIC_FORMATS)
    path.parent.mkdir(parents=True, exist_ok=True)
    # savefig, not bbox_inches="tight": the requested pixel size is kept exactly.
    fig.savefig(
        path, format=fmt, dpi=fig.dpi, metadata={"Software": "ravine"} if fmt == "png" else None
    )
    return path


# --- contour map ---------------------------------------------------------------------------------


# ravine.viz.style holds the colours (matplotlib-free, for the playground's first picture).
BACKGROUND = mcolors.ListedColormap(background_rgba(), name="ravine_bg")


def draw_contours(
    ax: Axes, surface: Surface, *, window: Window | None = None, n: int = 240
) -> QuadContourSet:
    """Pale filled contours with thin level lines, minima (stars) and other stationary points;
    returns the filled contours (for a colour bar: :func:`level_label` says what they show)."""
    window = window or surface.window
    X, Y, Z = (t.numpy() for t in surface.grid(n, window))
    chosen = contour_levels(surface, Z)
    norm = mcolors.LogNorm() if chosen.log else None
    filled = ax.contourf(X, Y, chosen.z, levels=chosen.levels, norm=norm, cmap=BACKGROUND)
    ax.contour(X, Y, chosen.z, levels=chosen.levels, norm=norm, colors="0.45", linewidths=0.4)
    for i, (mx, my) in enumerate(surface.minima):
        ax.plot(
            mx,
            my,
            "*",
            color="gold",
            mec="black",
            mew=0.8,
            ms=15,
            zorder=6.5,
            label="minimum" if i == 0 else None,
        )
    for i, (sx, sy) in enumerate(surface.saddles):
        ax.plot(
            sx,
            sy,
            "P",
            color="white",
            mec="black",
            mew=0.8,
            ms=10,
            zorder=5,
            label="stationary point" if i == 0 else None,
        )
    ax.set_xlim(window[0], window[1])
    ax.set_ylim(window[2], window[3])
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    return filled


Style = tuple[str, str]  # (colour, matplotlib line style)


def styles(
    n: int, palette: Sequence[str] | None = None, linestyles: Sequence[str] | None = None
) -> list[Style]:
    """One (colour, line style) per trajectory: a distinct colour each unless ``palette`` says
    otherwise (e.g. one colour per gamma, dashed for NAG and solid for Momentum)."""
    palette = list(palette) if palette is not None else colors(n)
    linestyles = list(linestyles) if linestyles is not None else ["-"] * n
    if len(palette) < n or len(linestyles) < n:
        raise ValueError(
            f"palette/linestyles of lengths {len(palette)}/{len(linestyles)}: expected at least "
            f"one entry per trajectory ({n})"
        )
    return list(zip(palette[:n], linestyles[:n]))


def draw_trajectories(
    ax: Axes,
    trajectories: Sequence[Trajectory],
    *,
    upto: int | None = None,
    style: Sequence[Style] | None = None,
) -> None:
    """Each path in its own colour, the start as a black dot, the end as a filled circle, and a
    cross where a diverged run leaves the view."""
    style = style or styles(len(trajectories))
    window = ax.get_xlim() + ax.get_ylim()
    for traj, (color, ls) in zip(trajectories, style):
        pts = clip_diverged(traj, window)
        if upto is not None:
            pts = pts[: upto + 1]
        ax.plot(pts[:, 0], pts[:, 1], ls, color=color, lw=1.8, label=legend_label(traj), zorder=6)
        if traj.diverged and (upto is None or upto >= len(pts) - 1):
            # clip_on=False: the cross sits on the window edge and would be cut in half.
            ax.plot(
                *pts[-1], "X", color=color, mec="black", mew=0.8, ms=11, zorder=8, clip_on=False
            )
        elif np.isfinite(pts[-1]).all():
            ax.plot(pts[-1, 0], pts[-1, 1], "o", color=color, mec="black", mew=0.6, ms=6, zorder=7)
    if trajectories:
        x0, y0 = trajectories[0].points[0]
        ax.plot(x0, y0, "o", color="black", ms=7, zorder=9, label="start")


def _title(surface: Surface, trajectories: Sequence[Trajectory], title: str | None) -> str:
    """Two lines, left-aligned by the caller: what is shown, then the formula."""
    steps = max((t.steps for t in trajectories), default=0)
    head = title if title is not None else f"{surface.name}, {steps} steps"
    if surface.formula and surface.formula != surface.name:
        return f"{head}\nf(x, y) = {surface.formula}"
    return head


def set_title(ax: Axes, text: str) -> None:
    ax.set_title(text, loc="left", fontsize=10, linespacing=1.4)


def contour_figure(
    trajectories: Sequence[Trajectory],
    surface: Surface | None = None,
    *,
    size: tuple[int, int] = DEFAULT_SIZE,
    title: str | None = None,
    window: Window | None = None,
    style: Sequence[Style] | None = None,
) -> Figure:
    """Contour map with every trajectory, legend outside the axes on the right."""
    surface = surface or trajectories[0].surface
    fig = new_figure(size)
    ax = fig.add_subplot()
    filled = draw_contours(ax, surface, window=window)
    draw_trajectories(ax, trajectories, style=style)
    ax.set_aspect("equal", adjustable="box")
    set_title(ax, _title(surface, trajectories, title))
    _legend(ax, colorbar=(filled, level_label(surface)))
    return fig


def add_colorbar(filled: QuadContourSet, label: str, **where: Any) -> Any:
    """A slim colour bar for filled contours, ticked at round values (10^k on a log scale)
    rather than at the contours' odd levels; ``where``: ``cax=`` or ``ax=`` as for
    ``Figure.colorbar``."""
    fig = filled.axes.get_figure(root=True)
    assert fig is not None
    bar = fig.colorbar(filled, spacing="proportional", **where)
    if isinstance(filled.norm, mcolors.LogNorm):
        bar.locator = ticker.LogLocator()
        bar.formatter = ticker.LogFormatterSciNotation()
    else:
        bar.locator = ticker.MaxNLocator(7)
        bar.formatter = ticker.ScalarFormatter()
    bar.set_label(label, fontsize=9)
    bar.ax.tick_params(labelsize=8)
    bar.outline.set_linewidth(0.5)
    return bar


def split_labels(trajectories: Sequence[Trajectory]) -> tuple[str, list[str]]:
    """The words every label shares (``"momentum lr=0.01"``) and what is left of each label
    (``"momentum=0.5"``): a panel's title, and short legend entries."""
    words = [t.label.split() for t in trajectories]
    common = [w for w in words[0] if all(w in other for other in words[1:])] if words else []
    rest = [" ".join(w for w in ws if w not in common) or " ".join(ws) for ws in words]
    return " ".join(common), rest


def panels_figure(
    panels: Sequence[Sequence[Trajectory]],
    surface: Surface | None = None,
    *,
    size: tuple[int, int] = DEFAULT_SIZE,
    title: str | None = None,
    window: Window | None = None,
    style: Sequence[Sequence[Style]] | None = None,
) -> Figure:
    """Contour maps side by side, one group of trajectories each (e.g. Momentum | NAG at the
    same gammas): what a group shares titles its panel, the rest labels its paths, and paths
    of the same colour and label share one legend entry under the panels."""
    if not panels or not all(panels):
        raise ValueError("panels: expected one or more non-empty groups of trajectories")
    surface = surface or panels[0][0].surface
    fig = new_figure(size)
    fig.set_layout_engine("constrained", w_pad=0.08, h_pad=0.08)
    axes = fig.subplots(1, len(panels), sharex=True, sharey=True, squeeze=False)[0]
    entries: dict[tuple[str, str, str], Any] = {}
    filled = None
    for i, (ax, group) in enumerate(zip(axes, panels)):
        filled = draw_contours(ax, surface, window=window)
        group_style = style[i] if style is not None else styles(len(group))
        draw_trajectories(ax, group, style=group_style)
        head, rest = split_labels(group)
        handles, labels = ax.get_legend_handles_labels()
        by_label = dict(zip(labels, handles))
        for traj, short, (color, ls) in zip(group, rest, group_style):
            # One entry per (colour, short label): the pairs read across the panels.
            entries.setdefault(
                (color, ls if len(panels) == 1 else "-", short), by_label.get(legend_label(traj))
            )
        for name in ("minimum", "start"):
            if name in by_label:
                entries.setdefault(("", "", name), by_label[name])
        ax.set_aspect("equal", adjustable="box")
        ax.set_title(head, fontsize=10)
        if i:
            ax.set_ylabel("")
    assert filled is not None
    # The equal-aspect panels are shorter than their row: a shorter bar lines up better.
    add_colorbar(filled, level_label(surface), ax=list(axes), shrink=0.72, pad=0.02)
    shown = [(h, k[2]) for k, h in entries.items() if h is not None]
    fig.legend(
        [h for h, _ in shown],
        [label for _, label in shown],
        loc="outside lower center",
        ncol=min(len(shown), 5),
        fontsize=9,
        frameon=False,
    )
    steps = max(t.steps for group in panels for t in group)
    head = title if title is not None else f"{surface.name}, {steps} steps"
    fig.suptitle(f"{head}\nf(x, y) = {surface.formula}", x=0.02, ha="left", fontsize=10)
    return fig


# --- 3-D surface ---------------------------------------------------------------------------------


def _height(surface: Surface, Z: np.ndarray, shift: float) -> np.ndarray:
    if surface.log_levels:
        return np.log10(np.maximum(Z - shift, 0.0) + 1.0)
    return Z


def surface3d_figure(
    trajectories: Sequence[Trajectory],
    surface: Surface | None = None,
    *,
    size: tuple[int, int] = DEFAULT_SIZE,
    title: str | None = None,
    window: Window | None = None,
    style: Sequence[Style] | None = None,
    elev: float = 35.0,
    azim: float = -60.0,
) -> Figure:
    """The surface in 3-D with trajectories riding on it (log height for log-level surfaces)."""
    surface = surface or trajectories[0].surface
    fig = new_figure(size)
    # Paths drawn last and on top: depth-sorting them with the surface would hide most of them.
    ax = fig.add_subplot(projection="3d", computed_zorder=False)
    window = window or surface.window
    X, Y, Z = (t.numpy() for t in surface.grid(100, window))
    shift = _shift(surface, Z)
    H = _height(surface, Z, shift)
    # Where the surface is undefined (log(x) for x < 0) leave a hole: a NaN floor offset or
    # lift would make matplotlib fail while drawing.
    finite = np.isfinite(H)
    if not finite.any():
        raise ValueError(
            f"surface {surface.name!r} has no finite value in the window {window}: nothing to draw"
        )
    H = np.where(finite, H, np.nan)
    low, high = float(H[finite].min()), float(H[finite].max())
    ax.plot_surface(
        X, Y, H, cmap=BACKGROUND, alpha=0.8, linewidth=0, antialiased=True, rcount=80, ccount=80
    )
    ax.contour(X, Y, H, levels=18, zdir="z", offset=low, colors="0.5", linewidths=0.4)
    xmin, xmax, ymin, ymax = window
    lift = 0.01 * (high - low)
    for traj, (color, ls) in zip(trajectories, style or styles(len(trajectories))):
        pts = traj.points.copy()
        outside = (pts[:, 0] < xmin) | (pts[:, 0] > xmax) | (pts[:, 1] < ymin) | (pts[:, 1] > ymax)
        # 3-D axes do not clip, so points outside the window are cut out of the line.
        pts[outside] = np.nan
        h = _height(surface, traj.losses, shift) + lift
        h = np.where(outside, np.nan, h)
        ax.plot(
            pts[:, 0], pts[:, 1], h, ls, color=color, lw=2.0, label=legend_label(traj), zorder=10
        )
    for mx, my in surface.minima:
        ax.scatter(
            [mx],
            [my],
            [float(_height(surface, np.array(surface.value(mx, my)), shift)) + lift],
            marker="*",
            s=160,
            color="gold",
            edgecolors="black",
            depthshade=False,
        )
    ax.set_xlim(xmin, xmax)
    ax.set_ylim(ymin, ymax)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_zlabel("log10(f - f* + 1)" if surface.log_levels else "f(x, y)")
    ax.view_init(elev=elev, azim=azim)
    # The 3-D box leaves wide margins inside its axes; zoom in so the surface fills them.
    set_title(ax, _title(surface, trajectories, title))
    # Legend under the plot: beside it, it would squeeze the 3-D box, whose projection needs
    # the width more than the height.
    _legend_below(ax, left=0, right=0, bottom=4)
    return fig


# --- loss versus step ----------------------------------------------------------------------------


def loss_figure(
    trajectories: Sequence[Trajectory],
    surface: Surface | None = None,
    *,
    size: tuple[int, int] = DEFAULT_SIZE,
    title: str | None = None,
    style: Sequence[Style] | None = None,
) -> Figure:
    """``f - f*`` against step on a log scale (symlog when the surface is unbounded below)."""
    surface = surface or trajectories[0].surface
    fig = new_figure(size)
    ax = fig.add_subplot()
    known = surface.min_value is not None
    for traj, (color, ls) in zip(trajectories, style or styles(len(trajectories))):
        y = traj.losses - surface.min_value if known else traj.losses
        y = np.where(np.isfinite(y), y, np.nan)
        if known:
            # Exactly reaching the minimum would vanish from a log axis; floor it visibly instead.
            y = np.maximum(y, 1e-16)
        steps = np.arange(len(y))
        ax.plot(steps, y, ls, color=color, lw=1.6, label=legend_label(traj))
        if traj.diverged and np.isfinite(y).any():
            last = int(np.flatnonzero(np.isfinite(y))[-1])
            ax.plot(steps[last], y[last], "X", color=color, mec="black", ms=10)
    if known:
        ax.set_yscale("log")
        ax.set_ylabel("f(x, y) - f*")
    else:
        ax.set_yscale("symlog", linthresh=1e-2)
        ax.set_ylabel("f(x, y)  (symlog)")
    ax.set_xlabel("step")
    ax.grid(True, which="major", alpha=0.3)
    set_title(ax, _title(surface, trajectories, title or f"{surface.name}: loss per step"))
    # Below, not beside: long labels would take half the width from the curves.
    _legend_below(ax)
    return fig


#: Pixels a colour bar takes beside the axes: gap, bar, tick labels and its label.
COLORBAR_GAP, COLORBAR_WIDTH, COLORBAR_LABELS = 10, 14, 64


def _legend(
    ax: Axes,
    *,
    left: int = 70,
    bottom: int = 50,
    gap: int = 16,
    colorbar: tuple[QuadContourSet, str] | None = None,
) -> None:
    """Legend outside the axes on the right, and the axes sized (in pixels) to leave it room;
    with ``colorbar`` (filled contours, label) a colour bar between the axes and the legend.

    Laid out by hand: constrained layout misjudges an equal-aspect axes with a legend hanging off
    it and either clips the legend or the y label.
    """
    fig = ax.get_figure(root=True)
    assert fig is not None
    legend = ax.legend(
        loc="upper left", bbox_to_anchor=(1.0, 1.0), borderaxespad=0.0, fontsize=9, frameon=False
    )
    width, height = fig.bbox.width, fig.bbox.height
    top = 20 + 17 * (ax.get_title(loc="left").count("\n") + 1)
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    legend_w = legend.get_window_extent(renderer).width
    if ax.name != "3d":
        # Wide tick labels (symlog's -10^7) plus the y label must fit in the left margin.
        yaxis = ax.yaxis.get_tightbbox(renderer)
        if yaxis is not None:
            left = max(left, int(yaxis.width + 16))
    bar = COLORBAR_GAP + COLORBAR_WIDTH + COLORBAR_LABELS if colorbar is not None else 0
    right = max(width - legend_w - 2 * gap - bar, left + 0.4 * width)
    legend.set_bbox_to_anchor((1.0 + (gap + bar) / (right - left), 1.0))
    ax.set_position(
        (left / width, bottom / height, (right - left) / width, (height - top - bottom) / height)
    )
    # With an equal aspect the axes shrinks inside that box; keep it at the left so the legend that
    # hangs off its right edge stays next to it.
    ax.set_anchor("W")
    if colorbar is not None:
        # An inset in axes coordinates follows the axes' box once the aspect has shrunk it.
        span = right - left
        cax = ax.inset_axes((1.0 + COLORBAR_GAP / span, 0.0, COLORBAR_WIDTH / span, 1.0))
        add_colorbar(colorbar[0], colorbar[1], cax=cax)
        # The legend goes right of what the bar really took (tick labels vary in width).
        ax.apply_aspect()
        taken = cax.get_tightbbox(renderer)
        box = ax.get_window_extent(renderer)
        if taken is not None:
            legend.set_bbox_to_anchor(((taken.x1 + gap - box.x0) / box.width, 1.0))


def _legend_below(
    ax: Axes, *, left: int = 70, right: int = 24, bottom: int = 46, ncol: int = 2
) -> None:
    """The figure's legend in ``ncol`` columns under the axes, which take the rest of the
    figure (pixels: ``left`` margin for the y labels, ``bottom`` for the x labels above it)."""
    fig = ax.get_figure(root=True)
    assert fig is not None
    legend = fig.legend(loc="lower center", ncol=ncol, fontsize=9, frameon=False)
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    legend_h = legend.get_window_extent(renderer).height
    width, height = fig.bbox.width, fig.bbox.height
    top = 20 + 17 * (ax.get_title(loc="left").count("\n") + 1)
    if ax.name != "3d":
        yaxis = ax.yaxis.get_tightbbox(renderer)
        if yaxis is not None:
            left = max(left, int(yaxis.width + 16))
    low = legend_h + bottom
    ax.set_position(
        (left / width, low / height, (width - left - right) / width, (height - top - low) / height)
    )


VIEWS = {"contour": contour_figure, "3d": surface3d_figure, "loss": loss_figure}


def plot(
    trajectories: Sequence[Trajectory],
    path: str | Path | None = None,
    *,
    view: str = "contour",
    fmt: str | None = None,
    size: tuple[int, int] = DEFAULT_SIZE,
    title: str | None = None,
) -> Figure:
    """Draw ``view`` (contour, 3d or loss) of the trajectories and return the Figure; with
    ``path`` it is also saved, as PNG or SVG (``fmt``, or else the file's suffix).

    The figure has its own Agg canvas: no pyplot, the backend is never changed; in a notebook
    it displays as the cell's value.
    """
    if not trajectories:
        raise ValueError("trajectories=[]: expected at least one trajectory to draw")
    try:
        make = VIEWS[view]
    except KeyError:
        raise ValueError(f"view={view!r}: expected one of {', '.join(VIEWS)}") from None
    if path is not None:
        output_format(path, fmt, STATIC_FORMATS)  # a bad format is refused before drawing
    elif fmt is not None:
        raise ValueError(f"fmt={fmt!r} without a path: give the file to write")
    fig = make(trajectories, size=size, title=title)
    if path is not None:
        save(fig, path, fmt)
    return fig
