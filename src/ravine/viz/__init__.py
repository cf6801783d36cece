"""Optimizers on loss surfaces: trajectories, contour plots, animations, 3-D views, loss curves.

Example::

    from ravine.viz import animate, plot, run

    trajs = run("beale", ["sgd:lr=0.001", "adam:lr=0.1"], steps=300)
    plot(trajs, "beale.png")  # view="contour" | "3d" | "loss"; PNG or SVG
    animate(trajs, "beale.gif")  # GIF, or MP4 where ffmpeg is installed
"""

from ravine import extras

try:  # matplotlib and pillow come with the "viz" extra
    from ravine.viz.animation import animate, render_frames
    from ravine.viz.plots import contour_figure, loss_figure, plot, surface3d_figure
except ModuleNotFoundError as err:
    extras.reraise(err, "ravine.viz")
from ravine.viz.specs import OptimizerSpec, parse_spec, parse_specs
from ravine.viz.trajectory import Trajectory, run, run_one

__all__ = [
    "OptimizerSpec",
    "Trajectory",
    "animate",
    "contour_figure",
    "loss_figure",
    "parse_spec",
    "parse_specs",
    "plot",
    "render_frames",
    "run",
    "run_one",
    "surface3d_figure",
]
