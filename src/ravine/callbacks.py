"""Callbacks: code that ``ravine.fit`` runs at the start and end of the run, epochs and batches.

A callback subclasses :class:`Callback` and overrides the hooks it needs (the others do nothing),
in the style of Keras' ``keras.callbacks.Callback`` and Lightning's ``Callback``. Every hook gets
the :class:`ravine.train.Run` being trained: its model, optimizer, history and ``stop_training``
flag. Setting ``run.stop_training = True`` from any hook ends the run cleanly: after the current
batch (``on_batch_end``) or epoch, with that epoch recorded, the checkpoint written and
``history.stop_reason == "callback"``.

A plain function ``f(epoch, history)`` is still accepted by ``fit(callbacks=...)``: it is called
after each epoch, after the checkpoint of that epoch is on disk.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from ravine.train import History, Run

__all__ = ["Callback", "EpochFunction"]


class Callback:
    """Base class of fit's callbacks: every hook is a no-op until overridden.

    Hooks, in the order fit calls them::

        on_train_begin(run)                       once, before the first epoch (also on resume)
        on_epoch_begin(epoch, run)                epoch counts from 1
        on_batch_end(step, loss, run)             after each optimizer step
        on_epoch_end(epoch, logs, run)            after evaluation, before the checkpoint
        on_train_end(history, run)                once, when the run ends without an error

    ``step`` is the run's optimizer-step count (1 for the first step; a resumed run continues the
    count). ``loss`` is that step's training loss as a detached 0-d tensor on the training device:
    reading it (``float(loss)``, ``loss.item()``) waits for the accelerator, so a callback that
    needs every value should collect the tensors and read them at epoch end, or read
    ``run.history.step_loss`` there. ``logs`` maps the epoch's columns ("train_loss", "val_loss",
    "train_accuracy", "val_accuracy", "lr", "time", and "train_<m>"/"val_<m>" for each metric)
    to floats.
    """

    def on_train_begin(self, run: Run) -> None:
        """Called once before the first epoch of this call to fit."""

    def on_epoch_begin(self, epoch: int, run: Run) -> None:
        """Called before the first batch of ``epoch`` (counting from 1)."""

    def on_batch_end(self, step: int, loss: torch.Tensor, run: Run) -> None:
        """Called after optimizer step ``step`` with its loss (detached, 0-d, not read)."""

    def on_epoch_end(self, epoch: int, logs: dict[str, float], run: Run) -> None:
        """Called when ``epoch`` is recorded in ``run.history``, before its checkpoint."""

    def on_train_end(self, history: History, run: Run) -> None:
        """Called once when the run completes or is stopped (not when an error ends it)."""


class EpochFunction(Callback):
    """A plain function ``f(epoch, history)`` as a callback: fit calls it after each checkpoint."""

    def __init__(self, function: Callable[[int, History], Any]) -> None:
        self.function = function

    def after_checkpoint(self, epoch: int, history: History) -> None:
        self.function(epoch, history)

    def __repr__(self) -> str:
        return f"EpochFunction({self.function!r})"


def as_callbacks(
    callbacks: Sequence[Callback | Callable[[int, History], Any]] | None,
) -> list[Callback]:
    """Check ``fit(callbacks=...)`` and wrap plain functions; ValueError naming a bad entry."""
    if callbacks is None:
        return []
    if isinstance(callbacks, Callback) or callable(callbacks):
        raise ValueError(
            f"callbacks must be a sequence of Callback objects or functions f(epoch, history), "
            f"got a single {type(callbacks).__name__}: pass [it]"
        )
    result: list[Callback] = []
    for i, c in enumerate(callbacks):
        if isinstance(c, Callback):
            result.append(c)
        elif isinstance(c, type) and issubclass(c, Callback):
            raise ValueError(
                f"callbacks[{i}] is the class {c.__name__}, expected an instance: {c.__name__}(...)"
            )
        elif callable(c):
            result.append(EpochFunction(c))
        else:
            raise ValueError(
                f"callbacks[{i}] must be a Callback or a function f(epoch, history), "
                f"got {type(c).__name__}"
            )
    return result


def _format(name: str, value: float) -> str:
    if name == "time":
        return f"{value:.2f}s"
    if name == "lr":
        return f"lr {value:.3g}"
    if name.endswith("accuracy"):
        return f"{name} {value:.4f}"
    return f"{name} {value:.4g}"


def format_logs(logs: dict[str, float]) -> list[str]:
    """An epoch's logs as "name value" fields, time (seconds) last: the verbose=2 line's parts."""
    fields = [_format(k, v) for k, v in logs.items() if k != "time"]
    if "time" in logs:
        fields.append(_format("time", logs["time"]))
    return fields


class _EpochLines(Callback):
    """fit(verbose=2): one line per epoch on stdout, flushed (logs, pipes, notebooks, CI)."""

    def on_epoch_end(self, epoch: int, logs: dict[str, float], run: Run) -> None:
        print(" - ".join([f"epoch {epoch}/{run.epochs}", *format_logs(logs)]), flush=True)

    def close(self) -> None:
        pass


class _ProgressBar(Callback):
    """fit(verbose=1): a tqdm bar on stderr with the loss, lr and the last epoch's metrics."""

    def __init__(self, initial_epoch: int) -> None:
        self.initial_epoch = initial_epoch
        self.bar: Any = None
        self.epoch_fields: dict[str, str] = {}
        self.last_postfix = 0.0

    def on_train_begin(self, run: Run) -> None:
        from tqdm.auto import tqdm

        per_epoch = run.n_batches
        self.bar = tqdm(
            total=None if per_epoch is None else run.epochs * per_epoch,
            initial=0 if per_epoch is None else self.initial_epoch * per_epoch,
            unit="step",
            dynamic_ncols=True,
            leave=True,
        )

    def _postfix(self, run: Run) -> None:
        fields = {"epoch": run.epoch}
        if run.last_loss is not None:
            fields["loss"] = f"{run.last_loss:.4g}"  # type: ignore[assignment]
        fields["lr"] = f"{run.optimizer.param_groups[0]['lr']:.3g}"  # type: ignore[assignment]
        self.bar.set_postfix({**fields, **self.epoch_fields}, refresh=False)

    def on_batch_end(self, step: int, loss: torch.Tensor, run: Run) -> None:
        self.bar.update(1)
        now = time.monotonic()
        if now - self.last_postfix > 0.2:  # the postfix is text work: not every step
            self.last_postfix = now
            self._postfix(run)

    def on_epoch_end(self, epoch: int, logs: dict[str, float], run: Run) -> None:
        keep = ("train_accuracy", "val_loss", "val_accuracy")
        self.epoch_fields = {k: f"{v:.4g}" for k, v in logs.items() if k in keep}
        self._postfix(run)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
