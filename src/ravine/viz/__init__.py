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

from ravine import extras

try:  # matplotlib and pillow come with the "viz" extra
    from ravine.viz.animation import animate, render_frames
    from ravine.viz.history import history_figure, plot_histories, plot_history
    from ravine.viz.plots import (
        contour_figure,
        loss_figure,
        panels_figure,
        plot,
        surface3d_figure,
    )
except ModuleNotFoundError as err:
    extras.reraise(err, "ravine.viz")
from ravine.viz.specs import OptimizerSpec, parse_spec, parse_specs
from ravine.viz.trajectory import Trajectory, run, run_one

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
