"""Training curves (ravine.viz.history): the backend stays the user's, ax= is honoured, Axes come
back, several runs overlay on one Axes, epoch ticks are whole numbers."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pytest
from matplotlib.figure import Figure

from ravine.train import History
from ravine.viz.history import column, history_figure, plot_histories, plot_history


def _history(n: int = 3, *, scale: float = 1.0) -> History:
    return History(
        epoch=list(range(1, n + 1)),
        train_loss=[scale / (e + 1) for e in range(n)],
        val_loss=[scale * 1.2 / (e + 1) for e in range(n)],
        val_accuracy=[0.5 + 0.1 * e for e in range(n)],
        lr=[0.1] * n,
        time=[1.0] * n,
    )


@pytest.fixture
def no_backend_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything calls matplotlib.use (it would switch the user's backend)."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"matplotlib.use{args} called")

    monkeypatch.setattr(matplotlib, "use", refuse)


def _axes() -> tuple[Figure, object]:
    fig = Figure()
    return fig, fig.add_subplot()


@pytest.mark.usefixtures("no_backend_switch")
def test_plot_history_draws_on_the_given_axes_and_returns_it() -> None:
    _, ax = _axes()
    assert plot_history(_history(), ax) is ax
    (train, val) = ax.get_lines()
    assert train.get_color() == val.get_color()  # one run, one colour
    assert (train.get_linestyle(), val.get_linestyle()) == ("-", "--")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train", "val"]
    assert ax.get_yscale() == "log" and ax.get_xlabel() == "epoch"
    ax.figure.canvas.draw()
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)


@pytest.mark.usefixtures("no_backend_switch")
def test_overlay_gives_each_run_its_own_colour() -> None:
    _, ax = _axes()
    plot_histories({"adam": _history(3), "sgd": _history(5, scale=2)}, ax, metric="loss")
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["adam train", "adam val", "sgd train", "sgd val"]
    colours = [line.get_color() for line in ax.get_lines()]
    assert colours[0] == colours[1] != colours[2] == colours[3]
    # The legend: a colour per run, a line style per half (not runs x halves entries).
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["adam", "sgd", "train", "val"]


@pytest.mark.parametrize(
    ("metric", "lines", "xlabel"),
    [
        ("loss", 2, "epoch"),
        ("accuracy", 1, "epoch"),  # no train accuracy recorded: only the validation half
        ("lr", 1, "epoch"),
        ("val_f1", 1, "epoch"),  # a user metric, from history.metrics
        ("step_loss", 1, "step"),  # per step, kept one list per epoch
    ],
)
def test_every_kind_of_column_can_be_plotted(metric: str, lines: int, xlabel: str) -> None:
    h = _history().to_dict()
    h["metrics"] = {"val_f1": [0.1, 0.2, 0.3]}
    h["step_loss"] = [[3.0, 2.0], [1.5, 1.0], [0.8, 0.7]]
    _, ax = _axes()
    plot_history(h, ax, metric=metric)
    assert len(ax.get_lines()) == lines and ax.get_xlabel() == xlabel
    assert column(h, "step_loss") == [3.0, 2.0, 1.5, 1.0, 0.8, 0.7]


def test_unknown_metric_and_empty_overlay_are_clear_errors() -> None:
    _, ax = _axes()
    with pytest.raises(ValueError, match=r"metric='f1': .* \(it has: .*train_loss"):
        plot_history(_history(), ax, metric="f1")
    with pytest.raises(ValueError, match=r"histories\['b'\]: metric='val_loss'"):
        plot_histories({"a": _history(), "b": History()}, ax, metric="val_loss")
    with pytest.raises(ValueError, match="expected at least one"):
        plot_histories({}, ax)


@pytest.mark.usefixtures("no_backend_switch")
def test_history_figure_to_a_file_leaves_no_pyplot_figure(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    fig = history_figure(_history(), tmp_path / "h.png")
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"
    assert len(fig.axes) == 2 and plt.get_fignums() == before


@pytest.mark.usefixtures("no_backend_switch")
def test_without_ax_a_pyplot_figure_in_the_current_backend() -> None:
    import matplotlib.pyplot as plt

    backend = matplotlib.get_backend()
    ax = plot_history(_history())
    try:
        assert ax.figure.number in plt.get_fignums()
        assert matplotlib.get_backend() == backend
    finally:
        plt.close(ax.figure)


@pytest.mark.usefixtures("no_backend_switch")
def test_the_plotting_page_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/plotting.md's Python blocks, in order, in an empty folder (the second one reads the
    two history files its shell commands write: here, the first block's runs saved)."""
    import re

    import matplotlib.pyplot as plt

    page = Path(__file__).resolve().parents[1] / "docs" / "plotting.md"
    first, second = re.findall(r"```python\n(.*?)```", page.read_text(), re.S)
    monkeypatch.chdir(tmp_path)
    before = plt.get_fignums()
    namespace: dict[str, object] = {}
    exec(compile(first, f"{page}:first block", "exec"), namespace)
    histories = namespace["histories"]
    assert isinstance(histories, dict) and set(histories) == {"adam", "adadelta", "sgd"}
    assert plt.get_fignums() == before  # the block closes what it opened
    histories["adadelta"].save(tmp_path / "default.json")
    histories["sgd"].save(tmp_path / "lr1e-3.json")
    exec(compile(second, f"{page}:second block", "exec"), {})
    assert (tmp_path / "adadelta-digits.png").read_bytes()[:4] == b"\x89PNG"
