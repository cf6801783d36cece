"""fit()'s progress, history, metrics, callbacks and loggers (issue 15 points 2, 6 and 11)."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import sys

import pytest
import torch
from torch import nn

import ravine
from fit_tiny import C, make_data, make_model
from ravine.callbacks import Callback
from ravine.loggers import CSVLogger, TensorBoardLogger
from ravine.train import CHECKPOINT_NAME, History, NonFiniteLossError, fit, load_checkpoint

N = 20

pytestmark = pytest.mark.usefixtures("one_thread")


def _data(n: int = N, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    return make_data(n, seed)


_model = make_model


def _fit(model=None, epochs=3, **kw) -> History:
    model = model or _model()
    kw.setdefault("verbose", 0)
    return fit(model, torch.optim.SGD(model.parameters(), lr=0.1), _data(), _data(10, seed=1),
               batch_size=4, epochs=epochs, **kw)  # fmt: skip


# ------------------------------------------------------------------------------ verbosity

LINE = re.compile(
    r"epoch (\d+)/3 - train_loss (\S+) - train_accuracy (\S+) - val_loss (\S+) - "
    r"val_accuracy (\S+) - lr (\S+) - (\S+)s"
)


@pytest.mark.parametrize("verbose", [2, "auto"])  # pytest's stderr is no terminal: auto is 2
def test_verbose_2_prints_one_flushed_line_per_epoch(capsys, verbose):
    h = _fit(verbose=verbose)
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert len(lines) == 3
    for i, line in enumerate(lines):
        m = LINE.fullmatch(line)
        assert m, line
        assert int(m[1]) == i + 1
        assert float(m[2]) == pytest.approx(h.train_loss[i], rel=1e-3)
        assert float(m[3]) == pytest.approx(h.train_accuracy[i], abs=1e-4)
        assert float(m[4]) == pytest.approx(h.val_loss[i], rel=1e-3)
        assert float(m[5]) == pytest.approx(h.val_accuracy[i], abs=1e-4)
        assert float(m[6]) == pytest.approx(0.1) and float(m[7]) >= 0


def test_verbose_1_is_a_bar_on_stderr_and_0_is_silent(capsys):
    _fit(verbose=1)
    out, err = capsys.readouterr()
    assert out == "" and "15/15" in err and "loss=" in err and "lr=" in err
    assert "val_loss=" in err  # the last epoch's metrics ride on the bar
    _fit(verbose=0)
    assert capsys.readouterr() == ("", "")


def test_the_bar_counts_steps_of_data_without_a_length(capsys):
    class Batches:  # re-iterable, no __len__: the bar has no total
        def __iter__(self):
            x, y = _data()
            return iter([(x[i : i + 4], y[i : i + 4]) for i in range(0, N, 4)])

    model = _model()
    fit(model, torch.optim.SGD(model.parameters(), lr=0.1), Batches(), epochs=2, verbose=1)
    err = capsys.readouterr().err
    assert "10step" in err.replace(" ", "") and "loss=" in err


@pytest.mark.parametrize(("progress", "bar"), [(True, True), (False, False)])
def test_progress_is_a_deprecated_alias(capsys, progress, bar):
    with pytest.warns(PendingDeprecationWarning, match="use verbose=1"):
        _fit(verbose="auto", progress=progress)
    out, err = capsys.readouterr()
    assert out == "" and ("15/15" in err) == bar


def test_a_resumed_run_counts_its_epochs_from_the_checkpoint(tmp_path, capsys):
    _fit(epochs=2, checkpoint_dir=tmp_path, verbose=2)
    capsys.readouterr()
    _fit(epochs=3, checkpoint_dir=tmp_path, resume=True, verbose=2)
    assert capsys.readouterr().out.startswith("epoch 3/3 - ")


# ------------------------------------------------------------------------- history, metrics


def test_history_records_step_losses_and_train_accuracy():
    x, y = _data()
    model = _model()
    seen: list[torch.Tensor] = []
    params: list[list[torch.Tensor]] = []

    class Record(Callback):
        def on_epoch_begin(self, epoch, run):
            params.append([p.detach().clone() for p in model.parameters()])

    h = fit(model, torch.optim.SGD(model.parameters(), lr=0.1), (x, y), batch_size=4, epochs=2,
            shuffle=False, callbacks=[Record()], verbose=0)  # fmt: skip
    assert h.steps == 10 and len(h.step_loss) == 10
    # train_loss is the example-weighted mean of the step losses of its epoch
    assert h.train_loss[0] == pytest.approx(sum(h.step_loss[:5]) / 5)
    # the first step's loss is the initial model's loss on the first batch
    torch.manual_seed(0)
    first = nn.functional.cross_entropy(_model()(x[:4]), y[:4]).item()
    assert h.step_loss[0] == pytest.approx(first)
    assert all(0 <= a <= 1 for a in h.train_accuracy) and len(h.train_accuracy) == 2
    del seen


@pytest.mark.parametrize(
    "held", [1, 13, None], ids=["count-every-step", "every-2-steps", "default"]
)
def test_train_accuracy_counts_each_steps_predictions_however_many_are_held(monkeypatch, held):
    """fit counts correct predictions over held scores (one argmax per _HELD_SCORES elements,
    not per step): the count is the one a hand loop gets from each step's own outputs."""
    import ravine.train

    if held is not None:
        monkeypatch.setattr(ravine.train, "_HELD_SCORES", held)  # 12 scores a step here
    x, y = _data(22)  # batches of 4, 4, 4, 4, 4 and 2
    model, ref = _model(), _model()
    h = fit(model, torch.optim.SGD(model.parameters(), lr=0.5), (x, y), batch_size=4, epochs=2,
            shuffle=False, verbose=0)  # fmt: skip
    opt = torch.optim.SGD(ref.parameters(), lr=0.5)
    expected = []
    for _ in range(2):
        correct = 0
        for i in range(0, len(x), 4):
            out = ref(x[i : i + 4])
            correct += int((out.argmax(1) == y[i : i + 4]).sum())
            loss = nn.functional.cross_entropy(out, y[i : i + 4])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        expected.append(correct / len(x))
    assert h.train_accuracy == expected
    assert 0 < min(expected) < max(expected) < 1  # the epochs differ: a real count, not 0 or 1


def _f1(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Macro F1 over C classes: not a mean of per-example values."""
    pred = out.argmax(1)
    scores = []
    for c in range(C):
        tp = ((pred == c) & (y == c)).sum()
        fp = ((pred == c) & (y != c)).sum()
        fn = ((pred != c) & (y == c)).sum()
        scores.append(2 * tp / (2 * tp + fp + fn).clamp(min=1))
    return torch.stack(scores).double().mean()


def test_metrics_are_recorded_for_train_and_val():
    model = _model()
    batch_means: list[float] = []
    mae = lambda o, t: (o.argmax(1) - t).abs().double().mean()  # noqa: E731

    def recording_mae(o, t):
        batch_means.append(float(mae(o, t)))
        return mae(o, t)

    h = _fit(model, epochs=1, metrics={"f1": _f1, "mae": recording_mae})
    # train: the example-weighted mean of the batch values (5 batches of 4)
    assert h.metrics["train_mae"] == [pytest.approx(sum(batch_means[:5]) / 5)]
    # val: computed once on all validation outputs (exact for F1)
    xv, yv = _data(10, seed=1)
    with torch.no_grad():
        out = model(xv)
    assert h.metrics["val_f1"] == [pytest.approx(float(_f1(out, yv)))]
    assert list(h.columns()) == [
        "epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
        "train_f1", "train_mae", "val_f1", "val_mae", "lr", "time",
    ]  # fmt: skip


def test_early_stopping_can_monitor_a_metric():
    stop = ravine.EarlyStopping(monitor="val_f1", mode="max", patience=1)
    h = _fit(epochs=6, metrics={"f1": _f1}, early_stopping=stop)
    f1 = h.metrics["val_f1"]
    assert h.best_epoch == 1 + f1.index(max(f1))
    with pytest.raises(ValueError, match="metrics has no 'auc'"):
        _fit(early_stopping=ravine.EarlyStopping(monitor="val_auc", mode="max"))


def test_history_plot_draws_through_viz_and_keeps_the_backend(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    backend = matplotlib.get_backend()
    h = _fit(epochs=2, metrics={"f1": _f1})
    h.plot(tmp_path / "h.png")
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"
    ax = h.plot(metric="step_loss")
    assert ax.get_xlabel() == "step" and len(ax.lines[0].get_xdata()) == h.steps
    assert h.plot(ax=ax, metric="val_f1") is ax
    with pytest.raises(ValueError, match="path= saves the two-panel figure"):
        h.plot(tmp_path / "x.png", metric="loss")
    assert matplotlib.get_backend() == backend
    plt.close("all")


def test_old_history_files_still_load(tmp_path):
    h = _fit(epochs=2)
    old = {k: v for k, v in h.to_dict().items()
           if k not in ("train_accuracy", "step_loss", "metrics")}  # fmt: skip
    (tmp_path / "old.json").write_text(json.dumps(old))
    loaded = History.load(tmp_path / "old.json")
    assert loaded.train_loss == h.train_loss and loaded.step_loss == [] and loaded.metrics == {}
    h.save(tmp_path / "new.json")
    assert History.load(tmp_path / "new.json") == h


# ------------------------------------------------------------------------------ callbacks


class Recorder(Callback):
    def __init__(self, stop_at: tuple[str, int] | None = None) -> None:
        self.calls: list[tuple] = []
        self.stop_at = stop_at

    def _maybe_stop(self, hook, n, run):
        if self.stop_at == (hook, n):
            run.stop_training = True

    def on_train_begin(self, run):
        self.calls.append(("train_begin",))
        self._maybe_stop("train_begin", 0, run)

    def on_epoch_begin(self, epoch, run):
        self.calls.append(("epoch_begin", epoch))
        self._maybe_stop("epoch_begin", epoch, run)

    def on_batch_end(self, step, loss, run):
        assert isinstance(loss, torch.Tensor) and loss.ndim == 0 and not loss.requires_grad
        self.calls.append(("batch_end", step))
        self._maybe_stop("batch_end", step, run)

    def on_epoch_end(self, epoch, logs, run):
        assert logs == run.history.logs() and set(logs) >= {"train_loss", "val_loss", "lr"}
        self.calls.append(("epoch_end", epoch))
        self._maybe_stop("epoch_end", epoch, run)

    def on_train_end(self, history, run):
        self.calls.append(("train_end", history.stop_reason))


def test_hooks_run_in_order_with_step_numbers():
    rec = Recorder()
    functions: list[int] = []
    _fit(epochs=2, callbacks=[rec, lambda e, h: functions.append(e)])
    batches = [("batch_end", s) for s in range(1, 11)]
    assert rec.calls == [
        ("train_begin",),
        ("epoch_begin", 1), *batches[:5], ("epoch_end", 1),
        ("epoch_begin", 2), *batches[5:], ("epoch_end", 2),
        ("train_end", "completed"),
    ]  # fmt: skip
    assert functions == [1, 2]


# where the stop is asked, the steps and epochs recorded, the epoch the checkpoint holds
STOPS = [
    (("batch_end", 7), 7, [1, 2], 2),  # mid-epoch 2: the rest of epoch 2 is skipped
    (("epoch_end", 2), 10, [1, 2], 2),
    (("epoch_begin", 2), 5, [1], 1),
    (("train_begin", 0), 0, [], 0),
]


@pytest.mark.parametrize(("stop_at", "steps", "epochs", "saved"), STOPS, ids=lambda v: str(v))
def test_a_callback_stops_training_cleanly(tmp_path, stop_at, steps, epochs, saved):
    rec = Recorder(stop_at)
    model = _model()
    h = _fit(model, epochs=4, callbacks=[rec], checkpoint_dir=tmp_path)
    assert h.stop_reason == "callback" and h.steps == steps and h.epoch == epochs
    assert rec.calls[-1] == ("train_end", "callback")
    if saved:  # the checkpoint holds exactly what the model holds now
        ckpt = load_checkpoint(tmp_path / CHECKPOINT_NAME)
        assert ckpt["epoch"] == saved and ckpt["history"]["stop_reason"] == "callback"
        for k, v in model.state_dict().items():
            assert torch.equal(ckpt["model"][k], v)
        # resuming continues from the next epoch to the end
        h2 = _fit(_model(), epochs=4, checkpoint_dir=tmp_path, resume=True)
        assert h2.epoch == [1, 2, 3, 4] and h2.stop_reason == "completed"
        assert h2.steps == steps + 5 * (4 - saved)


# --------------------------------------------------------------------------------- loggers


def _interrupt(epoch: int):
    def f(e, h):
        if e == epoch:
            raise KeyboardInterrupt

    return f


def test_csv_logger_writes_a_row_per_epoch_and_resumes_without_duplicates(tmp_path):
    path = tmp_path / "log.csv"
    with pytest.raises(KeyboardInterrupt):
        _fit(epochs=4, checkpoint_dir=tmp_path / "ck", checkpoint_every=2,
             callbacks=[CSVLogger(path), _interrupt(3)])  # fmt: skip
    rows = list(csv.DictReader(path.open()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]  # epoch 3 is past the checkpoint
    h = _fit(epochs=4, checkpoint_dir=tmp_path / "ck", checkpoint_every=2, resume=True,
             callbacks=[CSVLogger(path)])  # fmt: skip
    rows = list(csv.DictReader(path.open()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4"]
    assert [float(r["val_loss"]) for r in rows] == h.val_loss
    assert list(rows[0]) == list(h.columns())


def test_csv_logger_leaves_a_whole_file_when_a_write_dies(tmp_path, monkeypatch):
    path = tmp_path / "log.csv"
    _fit(epochs=1, callbacks=[CSVLogger(path)])
    good = path.read_bytes()

    def die(src, dst):
        raise OSError("killed during the write")

    monkeypatch.setattr(os, "replace", die)
    with pytest.raises(OSError, match="killed"):
        _fit(epochs=2, callbacks=[CSVLogger(path)])
    assert path.read_bytes() == good and [p.name for p in tmp_path.iterdir()] == ["log.csv"]


def test_tensorboard_logger_writes_epoch_and_step_scalars(tmp_path):
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "1":  # CI installs the extra: missing there is a failure
            raise
        pytest.skip('tensorboard is not installed: pip install "ravine[tensorboard]"')
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    h = _fit(epochs=2, callbacks=[TensorBoardLogger(tmp_path)], metrics={"f1": _f1})
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train_loss", "val_loss", "val_accuracy", "val_f1", "lr", "step_loss"} <= tags
    assert [e.step for e in events.Scalars("val_loss")] == [5, 10]  # the step count
    assert [e.value for e in events.Scalars("epoch")] == [1, 2]
    assert [e.value for e in events.Scalars("val_loss")] == pytest.approx(h.val_loss)
    assert [e.step for e in events.Scalars("step_loss")] == list(range(1, 11))


def test_tensorboard_logger_purges_what_a_crashed_run_wrote_after_its_checkpoint(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ck, tb = tmp_path / "ck", tmp_path / "tb"
    with pytest.raises(KeyboardInterrupt):
        _fit(epochs=4, checkpoint_dir=ck, checkpoint_every=2,
             callbacks=[TensorBoardLogger(tb), _interrupt(3)])  # fmt: skip
    h = _fit(epochs=4, checkpoint_dir=ck, checkpoint_every=2, resume=True,
             callbacks=[TensorBoardLogger(tb)])  # fmt: skip
    events = EventAccumulator(str(tb))
    events.Reload()
    assert [e.step for e in events.Scalars("val_loss")] == [5, 10, 15, 20]
    assert [e.value for e in events.Scalars("val_loss")] == pytest.approx(h.val_loss)
    assert [e.step for e in events.Scalars("step_loss")] == list(range(1, 21))


def test_tensorboard_logger_without_tensorboard_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.raises(ImportError, match=r'pip install "ravine\[tensorboard\]"'):
        TensorBoardLogger(tmp_path)


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_get_ordinary_modes(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        h = _fit(epochs=1, checkpoint_dir=tmp_path, callbacks=[CSVLogger(tmp_path / "log.csv")])
        h.save(tmp_path / "history.json")
    finally:
        os.umask(old)
    for name in (CHECKPOINT_NAME, "log.csv", "history.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name


# ------------------------------------------------------------------- host reads (GPU ready)


def _count_reads(monkeypatch) -> list[int]:
    """Count Tensor.item / __bool__ / __float__ / tolist: each waits for an accelerator."""
    count = [0]
    for name in ("item", "__bool__", "__float__", "tolist"):
        real = getattr(torch.Tensor, name)

        def counted(self, *a, _real=real, **k):
            count[0] += 1
            return _real(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return count


def _reads(monkeypatch, n: int, epochs: int, **kw) -> int:
    x, y = _data(n)
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    count = _count_reads(monkeypatch)
    fit(model, opt, (x, y), (x[:8], y[:8]), batch_size=4, epochs=epochs, verbose=0, **kw)
    monkeypatch.undo()
    return count[0]


def test_host_reads_grow_with_epochs_not_steps(monkeypatch):
    few_steps = _reads(monkeypatch, 8, 2, sync_every=1000)  # 2 steps per epoch
    many_steps = _reads(monkeypatch, 80, 2, sync_every=1000)  # 20 steps per epoch
    more_epochs = _reads(monkeypatch, 80, 4, sync_every=1000)
    assert few_steps == many_steps and more_epochs == 2 * many_steps
    # every K steps is one more read per K steps, and CPU's default reads every step
    assert _reads(monkeypatch, 80, 2, sync_every=5) == many_steps + 2 * 3
    assert _reads(monkeypatch, 80, 2) == many_steps + 2 * 19


def test_a_non_finite_loss_between_reads_names_its_batch(tmp_path):
    calls = [0]

    def loss_fn(out, y):
        loss = nn.functional.cross_entropy(out, y)
        if out.requires_grad:
            calls[0] += 1
            if calls[0] == 5 + 2:  # epoch 2, batch 2
                return loss * math.nan
        return loss

    with pytest.raises(NonFiniteLossError) as info:
        _fit(epochs=3, loss_fn=loss_fn, sync_every=3, checkpoint_dir=tmp_path)
    msg = str(info.value)
    assert "epoch 2, batch 2/5" in msg and "read every 3 steps" in msg
    assert "the steps of batches 2 to 3 were applied" in msg and "after epoch 1" in msg
    assert info.value.history.stop_reason == "non_finite_loss"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_the_default_reads_grow_with_epochs_not_steps(monkeypatch):
    def reads(n: int, epochs: int) -> int:
        x, y = _data(n)
        model = _model()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        count = _count_reads(monkeypatch)
        fit(model, opt, (x, y), (x[:8], y[:8]), batch_size=4, epochs=epochs, verbose=0,
            device="cuda")  # fmt: skip
        monkeypatch.undo()
        return count[0]

    assert reads(8, 2) == reads(160, 2) and reads(160, 4) == 2 * reads(160, 2)
