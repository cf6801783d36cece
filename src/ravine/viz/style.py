"""What the pictures look like, without matplotlib: colours, contour levels, clipped paths.

The static plots (:mod:`ravine.viz.plots`) and the playground's page (:mod:`ravine.serve`) both
draw from here, so they agree. Nothing here imports matplotlib: the playground serves its first
picture without it (importing matplotlib's figure machinery took 0.4 s of a 2.4 s start, and
torch takes most of the rest). Where a value is matplotlib's own (the tab10 and Blues colours,
how a colormap samples its table, how a norm scales), it is written once here, and
tests/test_viz_style.py checks it against matplotlib, bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ravine.surfaces import Surface, Window
from ravine.viz.trajectory import Trajectory

# matplotlib's "tab10" and "tab20" (Tableau's categorical palettes), as hex.
TAB10 = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip
TAB20 = (
    "#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728", "#ff9896",
    "#9467bd", "#c5b0d5", "#8c564b", "#c49c94", "#e377c2", "#f7b6d2", "#7f7f7f", "#c7c7c7",
    "#bcbd22", "#dbdb8d", "#17becf", "#9edae5",
)  # fmt: skip

# ColorBrewer's 9-class "Blues" (Cynthia Brewer), the nodes of matplotlib's "Blues" colormap.
_BLUES = (
    "#f7fbff", "#deebf7", "#c6dbef", "#9ecae1", "#6baed6", "#4292c6", "#2171b5", "#08519c",
    "#08306b",
)  # fmt: skip
_LUT_SIZE = 256  # entries in matplotlib's colormaps (rcParams["image.lut"])
CONTOUR_LEVELS = 28


def colors(n: int) -> list[str]:
    """Distinct colours that read on the pale contour background: tab10, then tab20."""
    base = TAB10 if n <= len(TAB10) else TAB20
    return [base[i % len(base)] for i in range(n)]


def _rgb(hex_colour: str) -> tuple[float, float, float]:
    return tuple(int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5))  # type: ignore[return-value]


def _segmented_lut(nodes: Sequence[str], n: int) -> np.ndarray:
    """The (n, 4) table of a colormap interpolated linearly between evenly spaced ``nodes``
    (matplotlib's ``LinearSegmentedColormap.from_list``, its ``_create_lookup_table``)."""
    x = np.linspace(0, 1, len(nodes)) * (n - 1)
    xind = (n - 1) * np.linspace(0, 1, n) ** 1.0
    ind = np.searchsorted(x, xind)[1:-1]
    distance = (xind[1:-1] - x[ind - 1]) / (x[ind] - x[ind - 1])
    lut = np.ones((n, 4))
    for channel, y in enumerate(np.array([_rgb(c) for c in nodes]).T):
        inner = distance * (y[ind] - y[ind - 1]) + y[ind - 1]
        lut[:, channel] = np.clip(np.concatenate([[y[0]], inner, [y[-1]]]), 0.0, 1.0)
    return lut


def sample(lut: np.ndarray, values: np.ndarray) -> np.ndarray:
    """A colormap's table read at ``values`` in [0, 1] (matplotlib's ``Colormap.__call__``:
    the entry floor(v * N), with v = 1 the last one)."""
    n = len(lut)
    xa = np.array(values, dtype=np.float64) * n
    xa[xa == n] = n - 1
    index = np.clip(xa, 0, n - 1).astype(int)
    return lut[index]


def background_rgba() -> np.ndarray:
    """The contour background's 256 colours: the lighter half of Blues, reversed (low values a
    medium blue, high ones near white, so the coloured paths keep their contrast near the
    minima, where they end up)."""
    return sample(_segmented_lut(_BLUES, _LUT_SIZE), np.linspace(0.5, 0.02, _LUT_SIZE))


def to_hex(rgba: np.ndarray) -> str:
    """``#rrggbb`` as matplotlib's ``to_hex`` writes it (each channel rounded, half to even)."""
    return "#" + "".join(format(round(float(v) * 255), "02x") for v in rgba[:3])


def shift(surface: Surface, Z: np.ndarray) -> float:
    """What log-spaced levels are measured from: the surface's minimum value, else the lowest
    finite value on the grid (0 when nothing is finite)."""
    if surface.min_value is not None:
        return float(surface.min_value)
    finite = Z[np.isfinite(Z)]
    return float(finite.min()) if finite.size else 0.0


@dataclass(frozen=True)
class Levels:
    """What a contour map draws: the values ``z`` (shifted and clipped for log levels), the
    ``levels`` (an array, or a count that matplotlib's locator spreads), on a log scale or not,
    and the ``shift`` added back to name a level's value."""

    z: np.ndarray
    levels: np.ndarray | int
    log: bool
    shift: float = 0.0


def contour_levels(surface: Surface, Z: np.ndarray) -> Levels:
    """The levels of a surface's contour map (the static plots' and the page's)."""
    if surface.log_levels:
        # Values span many decades: space levels geometrically above the minimum value.
        offset = shift(surface, Z)
        zs = Z - offset
        lo = max(float(np.nanpercentile(zs, 0.5)), 1e-3)
        levels = np.geomspace(lo, float(np.nanmax(zs)), CONTOUR_LEVELS)
        return Levels(np.clip(zs, lo, None), levels, True, offset)
    if surface.min_value is not None:
        # Squared spacing puts more levels near the minimum, where the paths end up.
        zmin, zmax = float(np.nanmin(Z)), float(np.nanmax(Z))
        levels = zmin + (zmax - zmin) * np.linspace(0.0, 1.0, CONTOUR_LEVELS) ** 2
        return Levels(Z, levels, False)
    return Levels(Z, CONTOUR_LEVELS, False)


def band_colours(levels: np.ndarray, log: bool) -> list[str]:
    """The background colour of each band between consecutive ``levels``, as matplotlib's
    ``contourf`` gives it: the colormap at the band's midpoint (geometric on a log scale),
    normalized to the levels' range (``Normalize`` or ``LogNorm``)."""
    levels = np.asarray(levels, dtype=np.float64)
    if log:
        layers = np.sqrt(levels[:-1]) * np.sqrt(levels[1:])
        t = np.log10(layers)
        t_min, t_max = np.log10([levels.min(), levels.max()])
        t -= t_min
        t /= t_max - t_min
    else:
        layers = 0.5 * (levels[:-1] + levels[1:])
        vmin, vmax = levels.min(), levels.max()
        t = layers - vmin
        t /= vmax - vmin
    return [to_hex(c) for c in sample(background_rgba(), t)]


def level_label(surface: Surface) -> str:
    """What the contour levels of ``surface`` measure (log-level ones are shifted to be > 0)."""
    if not surface.log_levels:
        return "f(x, y)"
    return "f(x, y) - f*" if surface.min_value is not None else "f(x, y) - min over the window"


def _inside(points: np.ndarray, window: Window) -> np.ndarray:
    xmin, xmax, ymin, ymax = window
    x, y = points[:, 0], points[:, 1]
    return (x >= xmin) & (x <= xmax) & (y >= ymin) & (y <= ymax)


def clip_diverged(traj: Trajectory, window: Window) -> np.ndarray:
    """The part of a diverged path up to where it first leaves ``window`` (ending on the edge);
    other paths whole (the axes clip them, and they may come back into view)."""
    pts = traj.points
    if not traj.diverged:
        return pts
    inside = _inside(pts, window)
    if inside.all() or not inside[0]:
        return pts[np.isfinite(pts).all(axis=1)]
    first_out = int(np.argmin(inside))
    edge = exit_point(pts, window)
    assert edge is not None
    return np.vstack([pts[:first_out], np.array([edge])])


def exit_point(points: np.ndarray, window: Window) -> tuple[float, float] | None:
    """Where the path first crosses out of ``window`` (its end if it never does), or None when
    it starts outside."""
    xmin, xmax, ymin, ymax = window
    inside = _inside(points, window)
    if inside.all():
        return float(points[-1, 0]), float(points[-1, 1])
    first_out = int(np.argmin(inside))
    if first_out == 0:
        return None
    a, b = points[first_out - 1], points[first_out]
    d = b - a
    # Smallest fraction of the segment a->b that reaches a window edge.
    ts = []
    for k, (lo, hi) in enumerate(((xmin, xmax), (ymin, ymax))):
        if d[k] > 0:
            ts.append((hi - a[k]) / d[k])
        elif d[k] < 0:
            ts.append((lo - a[k]) / d[k])
    t = min(ts) if ts else 0.0
    p = a + t * d
    return float(p[0]), float(p[1])


def legend_label(traj: Trajectory) -> str:
    if traj.diverged:
        return f"{traj.label} (diverged)"
    return f"{traj.label} ({traj.status})" if traj.status else traj.label
