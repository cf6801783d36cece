"""Optimizers on loss surfaces: trajectories, contour plots, animations, 3-D views, loss curves;
and training curves of ravine.fit runs.

Example::

    from ravine.viz import animate, plot, plot_histories, run

    trajs = run("beale", ["sgd:lr=0.001", "adam:lr=0.1"], steps=300)
    fig = plot(trajs, "beale.png")  # view="contour" | "3d" | "loss"; PNG or SVG; the Figure
    animate(trajs, "beale.gif")  # GIF, or MP4 where ffmpeg is installed
    ax = plot_histories({"adam": h_adam, "sgd": h_sgd}, metric="loss")  # fit() histories

Nothing here changes matplotlib's backend.
"""

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

from ravine import extras

if TYPE_CHECKING:
    from ravine.viz.animation import animate, render_frames
    from ravine.viz.history import history_figure, plot_histories, plot_history
    from ravine.viz.plots import (
        contour_figure,
        loss_figure,
        panels_figure,
        plot,
        surface3d_figure,
    )
    from ravine.viz.specs import OptimizerSpec, parse_spec, parse_specs
    from ravine.viz.trajectory import Trajectory, run, run_one

# Names load on first use (PEP 562): the playground imports ravine.viz.specs and .trajectory to
# serve its first picture, and matplotlib (0.4 s of the figure machinery) is not needed there.
_WHERE = {
    "animate": "animation",
    "render_frames": "animation",
    "history_figure": "history",
    "plot_histories": "history",
    "plot_history": "history",
    "contour_figure": "plots",
    "loss_figure": "plots",
    "panels_figure": "plots",
    "plot": "plots",
    "surface3d_figure": "plots",
    "OptimizerSpec": "specs",
    "parse_spec": "specs",
    "parse_specs": "specs",
    "Trajectory": "trajectory",
    "run": "trajectory",
    "run_one": "trajectory",
}


def _check_extra() -> None:
    """The viz extra is installed (found, not imported): ``import ravine.viz`` says so at once,
    as it did when it imported matplotlib."""
    for module in ("matplotlib", "PIL"):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ValueError, AttributeError):  # a None or spec-less entry in sys.modules
            found = False
        if not found:
            missing = ModuleNotFoundError(f"No module named {module!r}", name=module)
            extras.reraise(missing, __name__)


_check_extra()


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        module = importlib.import_module(f"{__name__}.{where}")
    except ModuleNotFoundError as err:
        extras.reraise(err, __name__)
    value = getattr(module, name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})


__all__ = [
    "OptimizerSpec",
    "Trajectory",
    "animate",
    "contour_figure",
    "history_figure",
    "loss_figure",
    "panels_figure",
    "parse_spec",
    "parse_specs",
    "plot",
    "plot_histories",
    "plot_history",
    "render_frames",
    "run",
    "run_one",
    "surface3d_figure",
]
