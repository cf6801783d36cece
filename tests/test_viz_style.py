"""ravine.viz.style against matplotlib: the colours, colormap sampling and norms it writes
without matplotlib, and the playground's contour map computed from them, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from import_checks import assert_runs_fresh, type_checking_imports

matplotlib = pytest.importorskip("matplotlib", reason='the viz extra: pip install "ravine[viz]"')

from matplotlib import colors as mcolors  # noqa: E402
from matplotlib.path import Path as MplPath  # noqa: E402

from ravine import surfaces  # noqa: E402
from ravine.serve import playground as pg  # noqa: E402
from ravine.viz import style  # noqa: E402


@pytest.mark.parametrize("n", [1, 7, 10, 11, 20, 25])
def test_colors_are_matplotlibs_tab10_then_tab20(n: int) -> None:
    base = matplotlib.colormaps["tab10" if n <= 10 else "tab20"].colors
    assert style.colors(n) == [mcolors.to_hex(base[i % len(base)]) for i in range(n)]


def test_background_is_matplotlibs_blues_sampled() -> None:
    blues = matplotlib.colormaps["Blues"]
    want = blues(np.linspace(0.5, 0.02, 256))
    assert np.array_equal(style.background_rgba(), want)


def test_sample_reads_a_table_as_a_colormap_does() -> None:
    cmap = mcolors.ListedColormap(style.background_rgba())
    values = np.array([0.0, 1.0, 0.5, 1 / 256, 255 / 256, 0.999999, 1e-12, *np.linspace(0, 1, 97)])
    assert np.array_equal(style.sample(style.background_rgba(), values), cmap(values))


@pytest.mark.parametrize("log", [False, True])
def test_band_colours_are_contourfs(log: bool) -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        levels = np.sort(rng.uniform(0.01, 50.0, size=int(rng.integers(3, 30))))
        if log:
            levels = np.geomspace(levels[0], levels[-1], len(levels))
        norm = mcolors.LogNorm() if log else mcolors.Normalize()
        layers = (
            np.sqrt(levels[:-1]) * np.sqrt(levels[1:]) if log else (levels[:-1] + levels[1:]) / 2
        )
        norm.autoscale_None(levels)
        cmap = mcolors.ListedColormap(style.background_rgba())
        want = [mcolors.to_hex(c) for c in cmap(norm(layers))]
        assert style.band_colours(levels, log) == want


def test_constants_are_matplotlibs() -> None:
    assert (pg._MOVETO, pg._LINETO, pg._CLOSEPOLY) == (
        MplPath.MOVETO, MplPath.LINETO, MplPath.CLOSEPOLY,
    )  # fmt: skip
    assert matplotlib.rcParams["contour.algorithm"] == pg._ALGORITHM
    assert matplotlib.rcParams["contour.corner_mask"] == pg._CORNER_MASK


@pytest.mark.parametrize("n", [40, pg.CONTOUR_GRID])
@pytest.mark.parametrize("name", [*surfaces.names(), "expr:x**2 + 3*y**2"])
def test_the_pages_map_is_the_static_plots(name: str, n: int) -> None:
    """Every band's colour and rings and every level's lines, computed with contourpy alone,
    equal what the static plot's matplotlib figure holds."""
    surface = surfaces.get(name)
    assert pg.contour_json(surface, n) == pg.contour_json_matplotlib(surface, n)


def test_the_first_picture_needs_no_matplotlib() -> None:
    """The playground's default map and paths are computed without importing matplotlib (its
    figure machinery was 0.4 s of the server's first picture)."""
    code = (
        "import sys\n"
        "from ravine.serve.playground import Playground\n"
        "from ravine.serve.workers import Workers\n"
        "pg = Playground(workers=Workers(0))\n"
        "pg.warm_up()\n"
        "pg.trajectory_json if hasattr(pg, 'trajectory_json') else None\n"
        "from ravine.serve import playground\n"
        "playground.palette(10)\n"
        "loaded = sorted(m for m in sys.modules if m.partition('.')[0] == 'matplotlib')\n"
        "assert not loaded, loaded[:5]\n"
    )
    assert_runs_fresh(code)


def test_viz_names_load_lazily_and_match_the_typed_imports() -> None:
    """ravine.viz's run-time table names what its TYPE_CHECKING imports name, every public
    name resolves, and an unknown one is an AttributeError."""
    import ravine.viz as viz

    typed = {
        bound: module.rpartition(".")[2] for module, _, bound in type_checking_imports(viz.__file__)
    }
    assert typed == viz._WHERE
    assert set(viz.__all__) == set(viz._WHERE)
    assert all(callable(getattr(viz, name)) for name in viz.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        viz.nope  # noqa: B018
