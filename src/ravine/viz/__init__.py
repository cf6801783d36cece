"""Optimizers on loss surfaces: trajectories, contour plots, animations, 3-D views, loss curves."""
