"""Loggers: callbacks that write a run's history as it goes, for other tools to read.

``CSVLogger(path)`` keeps a CSV file with one row per epoch; ``TensorBoardLogger(log_dir)``
writes TensorBoard event files through ``torch.utils.tensorboard`` (the optional extra
``pip install "ravine[tensorboard]"``). Both are ravine.Callback objects::

    fit(model, opt, train, val, batch_size=64, epochs=10,
        callbacks=[CSVLogger("runs/adam.csv"), TensorBoardLogger("runs/adam")])
"""

from __future__ import annotations

import csv
import io
import itertools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ravine.callbacks import Callback
from ravine.files import atomic_write
from ravine.paths import check_output_path

if TYPE_CHECKING:
    from ravine.train import History, Run

__all__ = ["CSVLogger", "TensorBoardLogger"]


class CSVLogger(Callback):
    """One CSV row per epoch: epoch, train_loss, train_accuracy, val_loss, ..., lr, time.

    The columns are the run's ``History.columns()``. After every epoch the whole file is
    rewritten atomically (a temporary file, then ``os.replace``), so a kill -9 at any moment
    leaves a complete, readable file. The file mirrors the run's history: a resumed run
    (``fit(resume=True)``) rewrites it with the checkpoint's epochs and appends from there, so
    an epoch redone after a crash appears once; a fresh run replaces an existing file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = check_output_path(path, "CSVLogger path")

    def on_train_begin(self, run: Run) -> None:
        if run.history.epoch:  # resumed: drop rows written after the checkpoint
            self.write(run.history)

    def on_epoch_end(self, epoch: int, logs: dict[str, float], run: Run) -> None:
        self.write(run.history)

    def write(self, history: History) -> None:
        """Write ``history``'s per-epoch columns to the file, atomically."""
        columns = history.columns()
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(itertools.zip_longest(*columns.values(), fillvalue=""))
        atomic_write(self.path, text.getvalue().encode())

    def __repr__(self) -> str:
        return f"CSVLogger({str(self.path)!r})"


class TensorBoardLogger(Callback):
    """TensorBoard scalars against the optimizer step: each History column, and each step's loss.

    At the end of every epoch the epoch's columns ("train_loss", "val_accuracy", "lr", "time",
    "train_<metric>", ..., and "epoch" itself) are written at the run's step count, and
    "step_loss" at each step of the epoch (read from ``history.step_loss``, so there is no
    per-step wait for the device); events are flushed every epoch. A resumed run purges what a
    crashed one wrote after its checkpoint (``SummaryWriter(purge_step=...)``), so an epoch
    redone after a crash appears once. Needs ``tensorboard``: ``pip install "ravine[tensorboard]"``.
    """

    def __init__(self, log_dir: str | os.PathLike[str]) -> None:
        self.log_dir: Path = check_output_path(log_dir, "log_dir", directory=True)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise ImportError(
                "TensorBoardLogger needs the tensorboard package, which is not installed: "
                'pip install "ravine[tensorboard]" (or pip install tensorboard)'
            ) from e
        self._summary_writer = SummaryWriter
        self.writer: Any = None
        self._logged_steps = 0

    def on_train_begin(self, run: Run) -> None:
        self.close()
        history = run.history
        # A resumed run: events at later steps came from a run that died after its checkpoint.
        purge = history.steps + 1 if history.epoch else None
        self.writer = self._summary_writer(log_dir=str(self.log_dir), purge_step=purge)
        self._logged_steps = len(history.step_loss)

    def on_epoch_end(self, epoch: int, logs: dict[str, float], run: Run) -> None:
        history = run.history
        # step_loss may start after step 1 (a history from before it existed): count back
        first_step = history.steps - len(history.step_loss) + 1
        for i in range(self._logged_steps, len(history.step_loss)):
            self.writer.add_scalar("step_loss", history.step_loss[i], first_step + i)
        self._logged_steps = len(history.step_loss)
        self.writer.add_scalar("epoch", epoch, history.steps)
        for name, value in logs.items():
            self.writer.add_scalar(name, value, history.steps)
        self.writer.flush()

    def on_train_end(self, history: History, run: Run) -> None:
        self.close()

    def close(self) -> None:
        """Flush and close the event file (fit does it at the end of the run)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def __repr__(self) -> str:
        return f"TensorBoardLogger({str(self.log_dir)!r})"
