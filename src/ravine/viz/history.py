"""Training curves from a :class:`ravine.History`: one run, or several overlaid on one Axes.

Nothing here calls ``matplotlib.use`` or otherwise touches the user's backend. With ``ax=None`` a
new pyplot figure is made (so it shows in a notebook or with ``plt.show()``); pass ``ax=`` to draw
into a figure of your own, e.g. to compare optimizers side by side::

    import matplotlib.pyplot as plt
    from ravine.viz.history import plot_histories

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    plot_histories({"adam": h_adam, "sgd": h_sgd}, ax=left, metric="loss")
    plot_histories({"adam": h_adam, "sgd": h_sgd}, ax=right, metric="accuracy")

:func:`history_figure` is what ``History.plot(path)`` draws: loss and accuracy panels, written
with matplotlib's object API (no pyplot, no GUI window) when a path is given.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Composite metrics: each draws a train curve (solid) and a validation curve (dashed).
PAIRS = {"loss": ("train_loss", "val_loss"), "accuracy": ("train_accuracy", "val_accuracy")}
#: Per-step columns, drawn against the optimizer step instead of the epoch.
STEP_COLUMNS = ("step_loss",)


def column(history: Any, name: str) -> list[float] | None:
    """The values of ``name`` in ``history`` (a History, or a dict such as ``History.to_dict()``),
    looked up as a field, then in its ``metrics`` mapping; None when it has no such column."""
    if isinstance(history, Mapping):
        value = history.get(name)
        extra = history.get("metrics")
    else:
        value = getattr(history, name, None)
        extra = getattr(history, "metrics", None)
    if value is None and isinstance(extra, Mapping):
        value = extra.get(name)
    if value is None:
        return None
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise ValueError(f"history column {name!r} is a {type(value).__name__}, not a list")
    # Per-step losses may be kept one list per epoch: one curve, step after step.
    if value and isinstance(value[0], Sequence):
        value = [v for epoch in value for v in epoch]
    return [float(v) for v in value]


def _columns(history: Any) -> list[str]:
    """The column names ``history`` has, for an error message."""
    d = history if isinstance(history, Mapping) else vars(history)
    names = [k for k, v in d.items() if isinstance(v, list) and v]
    extra = d.get("metrics")
    if isinstance(extra, Mapping):
        names += [k for k, v in extra.items() if v]
    names += [m for m, (tr, va) in PAIRS.items() if tr in names or va in names]
    return sorted(set(names))


def _x(history: Any, n: int, name: str) -> tuple[list[float], str]:
    if name in STEP_COLUMNS:
        return list(range(1, n + 1)), "step"
    epochs = column(history, "epoch")
    if epochs is None or len(epochs) != n:
        return list(range(1, n + 1)), "epoch"
    return epochs, "epoch"


def _new_axes() -> Axes:
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
    return ax


def _finish(ax: Axes, ylabel: str, xlabel: str, values: list[float]) -> None:
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    # Epochs and steps are whole numbers: no tick at 2.5.
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    finite = [v for v in values if math.isfinite(v)]
    if "loss" in ylabel and finite and min(finite) > 0:
        ax.set_yscale("log")
        # 0.4, 2 rather than 4x10^-1, 2x10^0: losses are read as plain numbers.
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=9)


def plot_history(
    history: Any,
    ax: Axes | None = None,
    *,
    metric: str = "loss",
    label: str | None = None,
    color: str | None = None,
) -> Axes:
    """Draw one run's ``metric`` against epoch on ``ax`` and return the Axes.

    metric: "loss" or "accuracy" (train solid, validation dashed, one colour; a half that the
        run did not record is left out), or any column of the history (``"lr"``, ``"time"``,
        ``"step_loss"`` against the step, a user metric such as ``"val_f1"``).
    label: prefix of the legend entries (``"adam"`` gives "adam train", "adam val").
    ax: the Axes to draw on; None makes a new pyplot figure. The backend is never changed.

    Loss axes are logarithmic when every value is positive; x ticks are whole epochs (steps).
    """
    names = PAIRS.get(metric, (metric,))
    curves = [(n, column(history, n)) for n in names]
    curves = [(n, v) for n, v in curves if v]
    if not curves:
        raise ValueError(
            f"metric={metric!r}: the history has no such values (it has: "
            f"{', '.join(_columns(history)) or 'nothing recorded'})"
        )
    if ax is None:
        ax = _new_axes()
    values: list[float] = []
    xlabel = "epoch"
    for name, ys in curves:
        xs, xlabel = _x(history, len(ys), name)
        part = name.split("_")[0] if metric in PAIRS else name
        text = f"{label} {part}" if label else part
        style = "--" if name.startswith("val_") and metric in PAIRS else "-"
        (line,) = ax.plot(
            xs, ys, style, color=color, label=text, marker="o" if len(ys) < 12 else None
        )
        color = line.get_color()  # the validation half takes the train half's colour
        values += ys
    _finish(ax, metric if metric in PAIRS else metric.replace("_", " "), xlabel, values)
    return ax


def plot_histories(
    histories: Mapping[str, Any],
    ax: Axes | None = None,
    *,
    metric: str = "loss",
) -> Axes:
    """Overlay several runs (name -> History) on one Axes, one colour per run; return the Axes.

    ``metric`` as in :func:`plot_history`; a run without that metric raises ValueError naming it.
    """
    if not histories:
        raise ValueError("histories={}: expected at least one name -> History")
    if ax is None:
        ax = _new_axes()
    for name, history in histories.items():
        try:
            plot_history(history, ax, metric=metric, label=name)
        except ValueError as e:
            raise ValueError(f"histories[{name!r}]: {e}") from None
    if metric in PAIRS:
        _pair_legend(ax)
    return ax


def _pair_legend(ax: Axes) -> None:
    """One entry per run (its colour) and one per line style (train solid, val dashed), instead
    of runs x halves entries."""
    from matplotlib.colors import to_hex
    from matplotlib.lines import Line2D

    runs: dict[str, str] = {}
    styles: dict[str, str] = {}
    for line in ax.get_lines():
        name, _, half = str(line.get_label()).rpartition(" ")
        runs.setdefault(name, to_hex(line.get_color()))
        styles.setdefault(half, str(line.get_linestyle()))
    handles = [Line2D([], [], color=c, label=n) for n, c in runs.items()]
    if len(styles) > 1:
        handles += [Line2D([], [], color="0.3", ls=ls, label=h) for h, ls in styles.items()]
    ax.legend(handles=handles, fontsize=9)


def history_figure(
    history: Any, path: str | os.PathLike[str] | None = None, *, size: tuple[int, int] = (900, 350)
) -> Figure:
    """Loss, and accuracy where recorded, side by side; saved to ``path`` when given.

    With a path the figure is built without pyplot (nothing is shown, no figure is left open);
    without one it is a pyplot figure, so it displays in a notebook.
    """
    panels = ["loss"] + (["accuracy"] if any(column(history, n) for n in PAIRS["accuracy"]) else [])
    figsize = (size[0] / 100, size[1] / 100)
    if path is None:
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=figsize, dpi=100, layout="constrained")
    else:
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize, dpi=100, layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, metric in zip(axes, panels):
        plot_history(history, ax, metric=metric, color="C0")
    if path is not None:
        fig.savefig(path)
    return fig
