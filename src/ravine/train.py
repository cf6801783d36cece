"""fit(): batch, stochastic and mini-batch gradient descent, and the strategies around the rule.

The three variants of Ruder's survey (2016, arXiv:1609.04747) differ only in how many examples
each step sees: batch GD (batch_size = N, one step per epoch), stochastic GD (batch_size = 1, N
steps) and mini-batch GD (n, ceil(N / n) steps). Around them: per-epoch shuffling or a curriculum
(Bengio et al., 2009; Zaremba & Sutskever, 2014, arXiv:1410.4615), learning-rate schedules stepped
per batch or per epoch, early stopping on a validation metric ("beautiful free lunch", Hinton,
NIPS 2015 tutorial), atomic checkpoints that resume bit-identically, and a non-finite loss guard.

Works with any ``torch.optim.Optimizer`` (ravine's optimizers are ones) and any torch scheduler.
In-memory tensors are indexed directly, not through a DataLoader: that keeps the overhead over a
hand-written loop small (see benchmarks/fit_overhead.py). Datasets, DataLoaders and other
iterables of batches are accepted too (ravine.batches); callbacks and loggers hook into the loop
(ravine.callbacks, ravine.loggers).
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import math
import os
import pickle
import random
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from ravine.batches import Batches, IterableBatches, TensorBatches, Unpack, as_batches
from ravine.callbacks import Callback, EpochFunction, as_callbacks
from ravine.data.order import STRATEGIES, curriculum_order, loss_difficulty, shuffled
from ravine.files import atomic_write
from ravine.paths import check_output_path

__all__ = [
    "CHECKPOINT_NAME",
    "CorruptCheckpointError",
    "EarlyStopping",
    "History",
    "NonFiniteLossError",
    "NonFiniteParametersError",
    "Run",
    "RunState",
    "check_checkpoint_dir",
    "evaluate",
    "fit",
    "load_checkpoint",
    "save_checkpoint",
]

CHECKPOINT_NAME = "checkpoint.pt"
_FORMAT = 2

Pair = tuple[torch.Tensor, torch.Tensor]
LossFn = Callable[..., torch.Tensor]
Metric = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# Steps between host reads of the loss on an accelerator (fit's sync_every=None). A read waits
# for the device to drain its queue; every 50 steps that wait is amortized to nothing, and a
# non-finite loss is still found within 50 steps of where it appeared.
ACCELERATOR_SYNC_EVERY = 50

# Columns that metrics= may not take (they would shadow fit's own).
_RESERVED_METRICS = ("loss", "accuracy")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message says whether the parameters moved.

    ``parameters`` says what the model holds now, in words: by default "the step was not
    applied" (the closure raised before the backward pass, so the optimizer did nothing).
    """

    def __init__(
        self,
        loss: float,
        epoch: int,
        batch: int,
        n_batches: int | None,
        checkpoint: Path | None,
        checkpoint_epoch: int | None,
        history: History,
        parameters: str = "the step was not applied",
        *,
        checkpointing: bool = False,
    ) -> None:
        of = "" if n_batches is None else f"/{n_batches}"
        super().__init__(
            f"non-finite loss ({loss}) at epoch {epoch}, batch {batch}{of}; {parameters}; "
            f"{_last_checkpoint(checkpoint, checkpoint_epoch, checkpointing)}. "
            "Try a smaller learning rate or gradient clipping."
        )
        self.loss, self.epoch, self.batch = loss, epoch, batch
        self.checkpoint = checkpoint
        self.history = history


class NonFiniteParametersError(NonFiniteLossError):
    """A step wrote NaN or Inf into the parameters although every loss of the epoch was finite."""

    def __init__(
        self,
        epoch: int,
        checkpoint: Path | None,
        checkpoint_epoch: int | None,
        history: History,
        *,
        checkpointing: bool = False,
    ) -> None:
        RuntimeError.__init__(
            self,
            f"the parameters became non-finite during epoch {epoch} although every loss was "
            "finite (a step wrote NaN/Inf); the model holds them now and no checkpoint was written "
            f"for this epoch; {_last_checkpoint(checkpoint, checkpoint_epoch, checkpointing)}. "
            "Try a smaller learning rate or gradient clipping.",
        )
        self.loss, self.epoch, self.batch = math.nan, epoch, None
        self.checkpoint = checkpoint
        self.history = history


def _last_checkpoint(checkpoint: Path | None, epoch: int | None, checkpointing: bool) -> str:
    if checkpoint is None and checkpointing:
        return "no checkpoint was written yet (the first is written when an epoch ends)"
    if checkpoint is None:
        return "no checkpoint was written (pass checkpoint_dir= to keep one)"
    return f"last good checkpoint: {checkpoint} (after epoch {epoch})"


class CorruptCheckpointError(ValueError):
    """A checkpoint file is truncated, altered or not one that fit wrote."""


@dataclass
class EarlyStopping:
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    ``monitor`` is a History column: "val_loss" (default), "val_accuracy", "train_loss",
    "train_accuracy", or "val_<name>"/"train_<name>" for a metric given to fit's ``metrics=``;
    mode "min"/"max" defaults to "max" for accuracies and "min" otherwise. With
    ``restore_best`` the model ends with the weights of its best epoch.
    """

    patience: int = 5
    min_delta: float = 0.0
    monitor: str = "val_loss"
    mode: Literal["min", "max"] | None = None
    restore_best: bool = True

    def __post_init__(self) -> None:
        if not (isinstance(self.patience, int) and self.patience >= 1):
            raise ValueError(f"patience must be an integer >= 1, got {self.patience!r}")
        if not (math.isfinite(self.min_delta) and self.min_delta >= 0):
            raise ValueError(f"min_delta must be a finite number >= 0, got {self.min_delta!r}")
        if not (
            isinstance(self.monitor, str)
            and self.monitor.startswith(("val_", "train_"))
            and self.monitor not in ("val_", "train_")
        ):
            raise ValueError(
                "monitor must be 'val_loss', 'val_accuracy', 'train_loss', 'train_accuracy' or "
                f"'val_<metric>'/'train_<metric>' for a metric given to fit, got {self.monitor!r}"
            )
        if self.mode is None:
            self.mode = "max" if "accuracy" in self.monitor else "min"
        if self.mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {self.mode!r}")

    def improved(self, value: float, best: float | None) -> bool:
        """Whether ``value`` beats ``best``; a NaN or infinite value never does."""
        if not math.isfinite(value):
            return False
        if best is None:
            return True
        if self.mode == "min":
            return value < best - self.min_delta
        return value > best + self.min_delta


@dataclass
class History:
    """What a run recorded: per-epoch columns and per-step losses, saved as JSON.

    Per epoch: ``train_loss`` (mean over the epoch's examples), ``train_accuracy`` (for
    class-index targets), ``val_loss`` and ``val_accuracy``, ``lr`` (the first parameter group's
    learning rate at the start of the epoch), ``time`` (wall seconds, training and evaluation),
    and ``metrics["train_<name>"]`` / ``metrics["val_<name>"]`` for fit's ``metrics=``. Per
    step: ``step_loss`` (each optimizer step's training loss, read once per epoch). Files
    written before these fields existed still load (the new fields start empty).
    """

    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    time: list[float] = field(default_factory=list)
    steps: int = 0
    best_epoch: int | None = None
    stop_reason: str = "running"
    train_accuracy: list[float] = field(default_factory=list)
    step_loss: list[float] = field(default_factory=list)
    metrics: dict[str, list[float]] = field(default_factory=dict)

    def columns(self) -> dict[str, list[float]]:
        """The per-epoch series that the run recorded, by name (like Keras' history.history).

        Order: epoch, train_loss, train_accuracy, val_loss, val_accuracy, each metric (train,
        then val), lr, time; series the run did not record are left out.
        """
        cols: dict[str, list[Any]] = {
            "epoch": self.epoch,
            "train_loss": self.train_loss,
            "train_accuracy": self.train_accuracy,
            "val_loss": self.val_loss,
            "val_accuracy": self.val_accuracy,
        }
        cols.update(sorted(self.metrics.items(), key=lambda kv: not kv[0].startswith("train_")))
        cols.update(lr=self.lr, time=self.time)
        return {k: v for k, v in cols.items() if v}

    def series(self, name: str) -> list[float]:
        """One per-epoch column by name ("val_loss", "train_f1", ...); [] if not recorded."""
        if name in self.metrics:
            return self.metrics[name]
        value = getattr(self, name, None) if name in _SERIES else None
        return value if value is not None else []

    def logs(self) -> dict[str, float]:
        """The last epoch's values of every column but "epoch": what on_epoch_end receives."""
        return {k: float(v[-1]) for k, v in self.columns().items() if k != "epoch"}

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain data: each list copied, ``metrics`` a dict of copied lists.

        What ``dataclasses.asdict`` returns, without its per-element recursion: that made the
        per-epoch checkpoint's copy of ``step_loss`` cost O(steps) deep copies (0.1 ms at
        170 steps, growing with the run).
        """
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                value = list(value)
            elif isinstance(value, dict):
                value = {k: list(v) for k, v in value.items()}
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> History:
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the history as JSON, atomically, with the ordinary file mode (umask applies)."""
        atomic_write(path, self.to_json().encode())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> History:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def plot(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        ax: Any = None,
        metric: str | None = None,
    ) -> Any:
        """Plot the run; never changes matplotlib's backend (ravine.viz.history does the work).

        Without ``ax``/``metric``: loss and accuracy panels (``history_figure``), saved to
        ``path`` if given; returns the Figure. With ``ax`` and/or ``metric`` ("loss",
        "accuracy", or any column such as "lr", "step_loss", "val_f1"): one metric drawn on
        ``ax`` (a new one if None) by ``plot_history``; returns the Axes.
        """
        from ravine.viz.history import history_figure, plot_history

        if ax is None and metric is None:
            return history_figure(self, path)
        if path is not None:
            raise ValueError(
                "path= saves the two-panel figure; with ax= or metric= save the Axes' figure "
                "yourself (ax.figure.savefig(path))"
            )
        return plot_history(self, ax, metric=metric or "loss")


_SERIES = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "time")


def _check_metrics(metrics: Mapping[str, Metric] | None) -> dict[str, Metric]:
    if metrics is None:
        return {}
    if not isinstance(metrics, Mapping):
        raise ValueError(
            "metrics must be a mapping {name: f(outputs, targets) -> tensor}, "
            f"got {type(metrics).__name__}"
        )
    for name, fn in metrics.items():
        if not (isinstance(name, str) and name.isidentifier()) or name in _RESERVED_METRICS:
            raise ValueError(
                f"metrics names must be identifiers other than {_RESERVED_METRICS} (fit records "
                f"those itself), got {name!r}"
            )
        if not callable(fn):
            raise ValueError(
                f"metrics[{name!r}] must be a function f(outputs, targets) -> tensor, "
                f"got {type(fn).__name__}"
            )
    return dict(metrics)


def _classifies(out: Any, y: torch.Tensor) -> bool:
    """Class-index targets and one score column per class: accuracy is defined."""
    return (
        isinstance(out, torch.Tensor)
        and not (y.dtype.is_floating_point or y.dtype.is_complex)
        and out.ndim == 2
        and out.shape[1] > 1
        and y.ndim == 1
    )


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    raise ValueError("model has no parameters: there is nothing to train")


def _float_dtype(model: nn.Module) -> torch.dtype:
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


@torch.no_grad()
def _evaluate(
    model: nn.Module,
    data: Batches,
    loss_fn: LossFn,
    batch_size: int,
    device: torch.device,
    metrics: Mapping[str, Metric],
) -> dict[str, float]:
    """Mean loss, accuracy (class-index targets) and metrics of ``model`` in eval mode.

    Loss and accuracy are accumulated on the device and read once; metrics are computed once
    on the concatenated outputs, so a non-decomposable one (F1, AUC) gets its exact value.
    """
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    classify, n = True, 0
    outs: list[torch.Tensor] = []
    ys: list[torch.Tensor] = []
    try:
        for xb, yb in data.batches(batch_size, None, device):
            out = model(xb)
            total += loss_fn(out, yb).double() * len(yb)
            n += len(yb)
            classify = classify and _classifies(out, yb)
            if classify:
                correct += (out.argmax(1) == yb).sum()
            if metrics:
                outs.append(out)
                ys.append(yb)
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError("the evaluation data yielded no batches")
    result = {"loss": total.item() / n}
    if classify:
        result["accuracy"] = correct.item() / n
    if metrics:
        out_all, y_all = torch.cat(outs), torch.cat(ys)
        for name, fn in metrics.items():
            result[name] = float(fn(out_all, y_all))
    return result


def evaluate(
    model: nn.Module,
    data: Any,
    loss_fn: LossFn = nn.functional.cross_entropy,
    batch_size: int = 4096,
    *,
    metrics: Mapping[str, Metric] | None = None,
    device: str | torch.device | None = None,
    unpack: Unpack | None = None,
    return_dict: bool = False,
) -> Any:
    """Mean loss and, for class-index targets, accuracy of ``model`` (eval mode) on ``data``.

    ``data`` is any kind fit accepts (tensors, numpy arrays, a Dataset, a DataLoader, ...);
    tensors and Datasets are read ``batch_size`` examples at a time, loaders as they batch.
    Returns ``(loss, accuracy)`` (accuracy None for other targets); with ``return_dict=True``
    a dict ``{"loss", "accuracy" (if defined), <metric names>}``. ``metrics`` need
    ``return_dict=True``. ``device``: where to compute (default: the model's device; the model
    is not moved, so give the device it is on).
    """
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    checked = _check_metrics(metrics)
    if checked and not return_dict:
        raise ValueError("metrics need return_dict=True (the (loss, accuracy) pair has no room)")
    dev = _model_device(model) if device is None else _as_device(device)
    source = as_batches(
        "data", data, batch_size=batch_size, float_dtype=_float_dtype(model), unpack=unpack
    )
    result = _evaluate(model, source, loss_fn, batch_size, dev, checked)
    if return_dict:
        return result
    return result["loss"], result.get("accuracy")


def _as_device(device: str | torch.device) -> torch.device:
    """``device`` checked: a torch device that exists here, or ValueError naming it."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(
            f"device must be a torch device such as 'cpu' or 'cuda', got {device!r}: {e}"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r}: CUDA is not available (torch {torch.__version__})")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(
            f"device={device!r}: there are {torch.cuda.device_count()} CUDA devices (0-based)"
        )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={device!r}: MPS is not available")
    if dev.index is None and dev.type not in ("cpu", "meta"):
        dev = torch.empty(0, device=dev).device  # "cuda" is the current one: "cuda:0", ...
    return dev


def _rng_state() -> dict[str, Any]:
    """The global RNGs' states as checkpoint data: big integer arrays as int64 tensors.

    Python's Mersenne Twister state is 625 ints: pickled one by one they took about a third
    of torch.save's time for a small model's checkpoint (digits-mlp); as a tensor, one record.
    """
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "python": (
            version,
            torch.from_numpy(np.fromiter(internal, np.int64, len(internal))),
            gauss,
        ),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``_rng_state`` saved; also the older checkpoints' Python state (a tuple of
    ints instead of a tensor)."""
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    if isinstance(internal, torch.Tensor):
        internal = tuple(internal.tolist())
    random.setstate((version, internal, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------- checkpoint files

# A checkpoint is this line, the SHA-256 (hex) of the rest and a newline, then torch.save's bytes:
# a flipped bit or a truncated write is reported as such instead of failing inside torch's reader.
_MAGIC = b"ravine fit checkpoint\n"
_HEADER = len(_MAGIC) + 64 + 1


def save_checkpoint(
    path: str | os.PathLike[str], checkpoint: dict[str, Any], *, durable: bool = True
) -> None:
    """Write ``checkpoint`` (tensors and plain data) atomically, with a SHA-256 of its bytes.

    ``durable``: fsync the file and its folder (see ravine.files.atomic_write); without it a
    kill -9 still leaves a whole file, and a machine crash at worst a torn one, which
    load_checkpoint reports as CorruptCheckpointError. The file gets the ordinary mode (0o666
    less the umask), as torch.save's files do.
    """
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    body = buffer.getbuffer()
    digest = hashlib.sha256(body).hexdigest().encode()

    def write(f: Any) -> None:
        f.write(_MAGIC + digest + b"\n")
        f.write(body)

    atomic_write(path, write, durable=durable)


def load_checkpoint(
    path: str | os.PathLike[str], map_location: torch.device | str | None = None
) -> dict[str, Any]:
    """Read a checkpoint written by ``fit``: checksum verified, loaded with weights_only=True.

    Raises CorruptCheckpointError naming the file when it is empty, truncated, altered or not
    a fit checkpoint. Files of format 1 (a bare torch.save zip) load without a checksum.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw.startswith(_MAGIC):
        body = memoryview(raw)[_HEADER:]
        digest = raw[len(_MAGIC) : _HEADER - 1]
        if len(raw) < _HEADER or hashlib.sha256(body).hexdigest().encode() != digest:
            raise CorruptCheckpointError(
                f"checkpoint {path} is corrupt or truncated: its contents do not match the "
                "SHA-256 written with them"
            )
    elif raw.startswith(b"PK"):  # format 1: torch.save's zip without a checksum
        body = memoryview(raw)
    elif not raw:
        raise CorruptCheckpointError(f"checkpoint {path} is empty (truncated: a write never ended)")
    else:
        raise CorruptCheckpointError(
            f"checkpoint {path} is corrupt or not a checkpoint written by ravine.fit "
            f"(it starts with {raw[:16]!r})"
        )
    try:
        checkpoint = torch.load(io.BytesIO(body), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        # torch's message suggests weights_only=False: that would run code from the file.
        raise CorruptCheckpointError(
            f"checkpoint {path} holds objects other than tensors and plain data, so it was not "
            "loaded (fit never writes such files, and ravine does not unpickle arbitrary objects)"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        first_line = str(e).splitlines()[0] if str(e) else "no details"
        raise CorruptCheckpointError(
            f"checkpoint {path} is corrupt or truncated ({type(e).__name__}: {first_line})"
        ) from e
    found = checkpoint.get("format") if isinstance(checkpoint, dict) else type(checkpoint).__name__
    if found not in (1, _FORMAT):
        raise CorruptCheckpointError(
            f"checkpoint {path} is not a ravine fit checkpoint of a known format "
            f"(format {found!r}; expected 1 or {_FORMAT})"
        )
    return checkpoint


# ------------------------------------------------------------------------- run state


def _plain(value: Any) -> Any:
    """A hyperparameter as checkpoint data: tensors detached, other objects by their repr."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone().cpu()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, tuple | list):
        return type(value)(_plain(v) for v in value)
    return repr(value)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return bool(torch.as_tensor(a).cpu().eq(torch.as_tensor(b).cpu()).all())
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return len(a) == len(b) and all(_same(u, v) for u, v in zip(a, b))
    return a == b or (isinstance(a, float) and isinstance(b, float) and a != a and b != b)


def _hyperparameters(optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    return [
        {k: _plain(v) for k, v in group.items() if k != "params"}
        for group in optimizer.param_groups
    ]


def _class_name(obj: Any) -> str | None:
    return None if obj is None else f"{type(obj).__module__}.{type(obj).__qualname__}"


@dataclass(eq=False)
class Run:
    """The run being trained, as callbacks see it (fit builds it; do not construct one).

    Fixed for the whole call: ``model``, ``optimizer``, ``scheduler``, ``loss_fn``, ``metrics``,
    ``device``, ``epochs`` (the last epoch number), ``batch_size`` (None: the data batch
    themselves), ``n_batches`` (steps per full epoch; None when the data do not say),
    ``sync_every``. Changing as it goes: ``history`` (the History being filled), ``epoch``
    (the current or last epoch, from 1), ``last_loss`` (the most recent loss the host has read,
    a float, or None) and ``stop_training``: set it to True in any callback hook to end the run
    after the current batch or epoch.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler | ReduceLROnPlateau | None
    train: Batches
    val: Batches | None
    loss_fn: LossFn
    metrics: dict[str, Metric]
    device: torch.device
    config: dict[str, Any]
    epochs: int
    batch_size: int | None
    n_batches: int | None
    full_batch: bool
    schedule_per_batch: bool
    path: Path | None
    # L-BFGS re-evaluates the closure after moving the parameters: snapshot them before its
    # steps (full-batch and rare) so that a non-finite loss leaves the model as it was.
    rollback: bool
    sync_every: int
    eval_batch_size: int
    checkpoint_every: int
    checkpoint_every_seconds: float
    checkpoint_durable: bool
    checkpoint_at_end: bool
    history: History = field(default_factory=History)
    epoch: int = 0
    last_loss: float | None = None
    stop_training: bool = False

    @property
    def n(self) -> int | None:
        """Training examples, when the data say (tensors, Datasets)."""
        return self.train.n


@dataclass
class RunState:
    """What a run carries from one epoch to the next, and what its checkpoint holds.

    ``to_checkpoint`` and ``from_checkpoint`` are a pair: every field goes through both, with the
    model, optimizer, scheduler and RNG states beside them, so saving and loading cannot drift.
    ``hyperparameters`` are the optimizer's param groups (without params) when the run began;
    a resumed run compares the optimizer it is given against them.
    """

    epoch: int = 0
    history: History = field(default_factory=History)
    best: float | None = None
    bad_epochs: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    scores: torch.Tensor | None = None
    hyperparameters: list[dict[str, Any]] = field(default_factory=list)
    last_checkpoint: int | None = None  # epoch of the last checkpoint written or read (not saved)
    # when that checkpoint was written, or the epochs began (time.monotonic; not saved)
    checkpoint_clock: float = 0.0

    def to_checkpoint(self, run: Run) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "epoch": self.epoch,
            "config": run.config,
            "model": run.model.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "optimizer_class": _class_name(run.optimizer),
            "hyperparameters": self.hyperparameters,
            "scheduler": None if run.scheduler is None else run.scheduler.state_dict(),
            "scheduler_class": _class_name(run.scheduler),
            "rng": _rng_state(),
            "history": self.history.to_dict(),
            "best": self.best,
            "bad_epochs": self.bad_epochs,
            "best_state": self.best_state,
            "scores": self.scores,
        }

    @classmethod
    def from_checkpoint(
        cls, ckpt: dict[str, Any], run: Run, *, override_hyperparameters: bool = False
    ) -> RunState:
        """Check ``ckpt`` against the run first, then restore optimizer, model, scheduler, RNG.

        Nothing is changed when a check fails (ValueError naming the file and what differs).
        """
        given = _hyperparameters(run.optimizer)
        overrides = _check_resume(ckpt, run, given, override_hyperparameters)
        run.optimizer.load_state_dict(ckpt["optimizer"])  # ravine's validates before changing
        run.model.load_state_dict(ckpt["model"])
        if run.scheduler is not None:
            run.scheduler.load_state_dict(ckpt["scheduler"])
        for group, changes in zip(run.optimizer.param_groups, overrides):
            group.update(changes)
        _set_rng_state(ckpt["rng"])
        # format 1 recorded none; after an override the run continues with the given values
        recorded = ckpt.get("hyperparameters") or given
        return cls(
            epoch=ckpt["epoch"],
            history=History.from_dict(ckpt["history"]),
            best=ckpt["best"],
            bad_epochs=ckpt["bad_epochs"],
            best_state=ckpt["best_state"],
            scores=ckpt["scores"],
            hyperparameters=given if overrides else recorded,
            last_checkpoint=ckpt["epoch"],
        )


def _check_model(path: Path, model: nn.Module, saved: dict[str, torch.Tensor]) -> None:
    own = model.state_dict()
    problems = [f"missing {k!r}" for k in own if k not in saved]
    problems += [f"unexpected {k!r}" for k in saved if k not in own]
    for k in own.keys() & saved.keys():
        a, b = own[k], saved[k]
        if a.shape != b.shape:
            problems.append(f"{k!r} has shape {tuple(b.shape)} there, {tuple(a.shape)} here")
        elif a.dtype != b.dtype:
            problems.append(f"{k!r} has dtype {b.dtype} there, {a.dtype} here")
    if problems:
        more = f" and {len(problems) - 5} more" if len(problems) > 5 else ""
        raise ValueError(
            f"checkpoint {path} holds another model: {'; '.join(sorted(problems)[:5])}{more}; "
            "nothing was loaded"
        )


def _check_resume(
    ckpt: dict[str, Any], run: Run, given: list[dict[str, Any]], override: bool
) -> list[dict[str, Any]]:
    """Raise ValueError if ``ckpt`` cannot continue ``run``; return per-group overrides."""
    path = run.path
    if ckpt["config"] != run.config:
        raise ValueError(
            f"resume must use the checkpoint's settings {ckpt['config']}, got {run.config}"
        )
    _check_model(path, run.model, ckpt["model"])  # type: ignore[arg-type]
    saved_class = ckpt.get("optimizer_class")
    if saved_class is not None and saved_class != _class_name(run.optimizer):
        raise ValueError(
            f"checkpoint {path} was written by optimizer {saved_class}, "
            f"got {_class_name(run.optimizer)}; nothing was loaded"
        )
    validate = getattr(run.optimizer, "validate_state_dict", None)  # ravine's optimizers
    if validate is not None:
        try:
            validate(ckpt["optimizer"])
        except ValueError as e:
            raise ValueError(f"checkpoint {path}: {e}; nothing was loaded") from None
    # Wrappers (Lookahead) nest their inner optimizer's dict: their own load_state_dict checks it.
    saved_groups = ckpt["optimizer"].get("param_groups")
    sizes = None if saved_groups is None else [len(g["params"]) for g in saved_groups]
    own_sizes = [len(g["params"]) for g in run.optimizer.param_groups]
    if sizes is not None and sizes != own_sizes:
        raise ValueError(
            f"checkpoint {path} holds an optimizer over parameter groups of sizes {sizes}, "
            f"got {own_sizes}; nothing was loaded"
        )
    saved_sched = ckpt.get("scheduler_class")
    if run.scheduler is None and ckpt["scheduler"] is not None:
        raise ValueError(
            f"checkpoint {path} was written with a scheduler ({saved_sched or 'unknown'}), "
            "but none was given"
        )
    if run.scheduler is not None:
        if ckpt["scheduler"] is None:
            raise ValueError(f"{path} was written without a scheduler, but one was given")
        if saved_sched is not None and saved_sched != _class_name(run.scheduler):
            raise ValueError(
                f"checkpoint {path} was written with scheduler {saved_sched}, "
                f"got {_class_name(run.scheduler)}; nothing was loaded"
            )
    recorded = ckpt.get("hyperparameters")
    if not recorded:  # format 1 did not record them
        return []
    overrides: list[dict[str, Any]] = []
    differences: list[str] = []
    for i, (then, now) in enumerate(zip(recorded, given)):
        changed = {}
        keys = then.keys() | now.keys()
        if "initial_lr" in then and "initial_lr" in now:
            keys -= {"lr"}  # a scheduler moves lr; initial_lr is what the run was started with
        for key in sorted(keys):
            if key not in now or key not in then or not _same(then[key], now[key]):
                differences.append(
                    f"group {i} {key}: {then.get(key, '(absent)')!r} in the checkpoint, "
                    f"{now.get(key, '(absent)')!r} given"
                )
                if key in now:
                    changed[key] = run.optimizer.param_groups[i][key]
        overrides.append(changed)
    if differences and not override:
        raise ValueError(
            f"checkpoint {path} was written with other optimizer hyperparameters: "
            f"{'; '.join(differences)}. Pass the same values to continue the run, or "
            "override_hyperparameters=True (--override-hyperparameters) to continue it with "
            "the given ones"
        )
    if differences and run.scheduler is not None:
        lr_keys = {"lr", "initial_lr"}
        if any(lr_keys & o.keys() for o in overrides):
            raise ValueError(
                f"checkpoint {path}: cannot change the learning rate of a run with a scheduler "
                "on resume (the scheduler's saved state would keep driving it); "
                f"differences: {'; '.join(differences)}"
            )
    return overrides if differences else []


# ------------------------------------------------------------------------------- fit


class _Required:
    """fit's batch_size default: required for tensors and Datasets, None for loaders."""

    def __repr__(self) -> str:
        return "<required>"


_REQUIRED: Any = _Required()


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train: Any,
    val: Any = None,
    *,
    batch_size: int | None = _REQUIRED,
    epochs: int,
    loss_fn: LossFn = nn.functional.cross_entropy,
    scheduler: LRScheduler | ReduceLROnPlateau | None = None,
    schedule_every: Literal["epoch", "batch"] = "epoch",
    shuffle: bool = True,
    seed: int = 0,
    curriculum: str | None = None,
    difficulty: torch.Tensor
    | Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
    | None = None,
    curriculum_levels: int = 10,
    early_stopping: EarlyStopping | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    checkpoint_every: int = 1,
    checkpoint_every_seconds: float | None = None,
    checkpoint_durable: bool = True,
    checkpoint_at_end: bool = True,
    resume: bool = False,
    overwrite: bool = False,
    override_hyperparameters: bool = False,
    device: str | torch.device | None = None,
    verbose: Literal["auto", 0, 1, 2] = "auto",
    metrics: Mapping[str, Metric] | None = None,
    callbacks: Sequence[Callback | Callable[[int, History], Any]] = (),
    unpack: Unpack | None = None,
    sync_every: int | None = None,
    eval_batch_size: int = 4096,
    progress: bool | None = None,
) -> History:
    """Train ``model`` with ``optimizer`` on ``train`` for ``epochs`` epochs; return its History.

    train / val: the data, of one of these kinds (ravine.batches), with what resume guarantees:

        * an (inputs, targets) pair of tensors or numpy arrays, or a TensorDataset: moved once
          to the device and indexed directly (the fast path). Resume is bit-identical.
        * a map-style Dataset (+ batch_size): fit batches it in its own seeded order through a
          DataLoader (num_workers=0, pinned memory on CUDA). Resume is bit-identical when the
          dataset returns the same example for the same index and RNG state (random
          augmentation drawing from torch's global RNG is fine: fit restores it).
        * a DataLoader, or any re-iterable of batches (a list, an object whose ``__iter__``
          gives a fresh iterator): iterated once per epoch as given; leave batch_size out. An
          interrupted run resumes at the epoch boundary; it is bit-identical when the batches
          of an epoch depend only on torch's global RNG state (a DataLoader with shuffle=True
          and no ``generator=``, workers or not) or on nothing (a list). A loader with its own
          ``generator=``, or data that change between runs, give other batches. An
          IterableDataset is batched by a DataLoader with ``batch_size``, in its own order.
        * a one-shot iterator or generator is refused: every epoch iterates the data again.

        A batch is an (inputs, targets) pair, a dict (keys in ravine.batches.INPUT_KEYS and
        TARGET_KEYS, e.g. "inputs"/"targets", "image"/"label"), or whatever ``unpack(batch) ->
        (inputs, targets)`` reads. numpy floating arrays take the model's floating dtype and
        numpy integer targets become int64.
    batch_size: examples per step for tensors and Datasets (required for them); None or >= N is
        batch gradient descent (one step per epoch on the whole set, in index order since order
        cannot change a full-batch mean), 1 is stochastic, n is mini-batch (ceil(N / n) steps,
        the last one smaller). Leave it out for loaders, which batch themselves.
    shuffle / seed: a fresh permutation every epoch from a generator seeded by (seed, epoch)
        (tensors and Datasets; a loader keeps its own order).
    curriculum: "naive", "mixed" or "combined" (ravine.data.order) instead of shuffling, by
        ``difficulty`` scores (one per example, low = easy; or a function of (model, x, y)); by
        default each example's loss under the initial model (tensors only: a Dataset needs the
        scores as a tensor; loaders have no curriculum).
    scheduler: stepped after every optimizer step (schedule_every="batch") or epoch; a
        ReduceLROnPlateau (e.g. ravine.schedules.performance) is stepped per epoch with the
        validation loss (the training loss without ``val``).
    early_stopping: an EarlyStopping; the history records ``best_epoch`` and ``stop_reason``,
        and with restore_best the model ends (stopped early or completed) with its best weights.
    checkpoint_dir / checkpoint_every / resume: every N epochs (and at the end) the model,
        optimizer, scheduler, RNG states, history and early-stopping state are written atomically
        to checkpoint_dir/checkpoint.pt with a SHA-256 of its bytes; with resume=True a run
        starts from that file if present (see the data kinds above for what it guarantees).
    checkpoint_every_seconds: with it, an epoch that checkpoint_every selects is checkpointed
        only once this many seconds have passed since the last checkpoint (or since the run
        started or resumed), like Lightning's ``train_time_interval``: long epochs are each
        checkpointed as before, a run of short ones writes one checkpoint every few seconds
        instead of one per epoch. A kill then redoes at most that long plus one epoch, which
        resume makes bit-identical to no kill. The end follows checkpoint_at_end, and a
        callback's stop is always checkpointed. 0 checkpoints every selected epoch, like None.
    checkpoint_durable: True (the default) flushes each checkpoint and its folder to disk
        (two fsyncs: under a millisecond on an idle disk, several on a busy one) so that it
        survives a power cut or OS crash. False skips them: a killed process (kill -9) still
        leaves the last checkpoint whole, a machine crash at worst an older or torn one, which
        resume reports as CorruptCheckpointError. Meant for runs that are cheap to redo, like
        the benchmark lab's short ones (which then restart from their first epoch).
    checkpoint_at_end: False skips the checkpoint when the run ends (its last epoch or an early
        stop); the epochs before are checkpointed as checkpoint_every says. For callers that
        delete the checkpoint as soon as fit returns, like the benchmark lab: a run killed after
        its last epoch then redoes that epoch on resume (bit-identically). A callback's stop is
        still checkpointed, since a run stopped that way is one to resume (the lab's time
        limit).
    overwrite: without resume, an existing checkpoint is an error (it would be replaced);
        overwrite=True deletes it and starts over.
    override_hyperparameters: on resume the optimizer's class and hyperparameters (its param
        groups when the first run began) must match the checkpoint's, or a ValueError lists
        the differences; True continues with the given values instead (the learning rate of a
        scheduled run cannot be changed this way: the scheduler's state keeps its own).
    device: where to train: the model is moved there (before its optimizer has state) and every
        batch too (asynchronously from pinned memory). Default: the device of the model.
    verbose: 0 silent; 1 a tqdm bar on stderr (steps, loss, lr, epoch metrics); 2 one line per
        epoch on stdout (train and val loss and accuracy, metrics, lr, seconds), flushed;
        "auto" is 1 when stderr is a terminal, else 2 (notebooks, CI, nohup, pipes).
        ``progress`` is its deprecated alias (True: 1, False: 0).
    metrics: {name: f(outputs, targets) -> 0-d tensor}, recorded per epoch as
        ``history.metrics["train_<name>"]`` (the example-weighted mean of its per-batch values
        during the epoch, accumulated on the device) and ``"val_<name>"`` (computed once on all
        validation outputs, so F1-like metrics are exact). Accuracy is recorded without asking
        for class-index targets.
    callbacks: ravine.Callback objects (hooks at train, epoch and batch begin/end; a hook sets
        ``run.stop_training = True`` to stop: history.stop_reason becomes "callback", the epoch
        is recorded and checkpointed; a stop mid-epoch skips the rest of that epoch, also on
        resume; the weights stay those of the last step, without early stopping's restore)
        and plain functions f(epoch, history), called after each epoch's checkpoint.
        Loggers: ravine.loggers.CSVLogger, TensorBoardLogger.
    sync_every: steps between host reads of the loss (each read waits for the device). None:
        every step on CPU, where a read waits for nothing, and every 50 steps on accelerators.
    eval_batch_size: examples per evaluation batch (tensors and Datasets).

    Per step, fit keeps each loss as a device tensor (history.step_loss, read every sync_every
    steps), and predicted classes and metric sums on the device: with sync_every > 1 nothing
    in the loop waits for the device between reads.

    A NaN or infinite training loss raises NonFiniteLossError (epoch, batch, last checkpoint,
    and whether the parameters moved). When the loss is read every step (sync_every=1, the CPU
    default, and always for L-BFGS) the bad step is not applied (L-BFGS, which re-evaluates
    the loss after moving the parameters, is rolled back); with sync_every=K the error names
    the first bad batch within K steps, the steps up to the read having been applied.
    Parameters are checked once per epoch, and when a loss is non-finite: a step that writes
    NaN/Inf from a finite loss is reported at the next read loss or at the end of its epoch
    (NonFiniteParametersError), before any checkpoint holds it.
    """
    verbose = _check_verbose(verbose, progress)
    hooks = as_callbacks(callbacks)
    checked_metrics = _check_metrics(metrics)
    _validate(
        val,
        batch_size=None if batch_size is _REQUIRED else batch_size,
        epochs=epochs,
        checkpoint_every=checkpoint_every,
        checkpoint_every_seconds=checkpoint_every_seconds,
        checkpoint_durable=checkpoint_durable,
        checkpoint_at_end=checkpoint_at_end,
        schedule_every=schedule_every,
        scheduler=scheduler,
        curriculum=curriculum,
        seed=seed,
        early_stopping=early_stopping,
        metrics=checked_metrics,
        eval_batch_size=eval_batch_size,
        sync_every=sync_every,
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        overwrite=overwrite,
    )
    run = _prepare(
        model, optimizer, scheduler, train, val, loss_fn, batch_size, epochs, seed, shuffle,
        curriculum, difficulty, checkpoint_dir, schedule_every, device, unpack, checked_metrics,
        sync_every, eval_batch_size, checkpoint_every, checkpoint_every_seconds,
        checkpoint_durable, checkpoint_at_end,
    )  # fmt: skip
    state = _start(run, resume, override_hyperparameters)
    run.history = state.history
    if state.history.stop_reason == "early_stopping" or state.epoch >= epochs:
        return state.history
    if curriculum is not None and state.scores is None:
        state.scores = _difficulty_scores(run, difficulty, eval_batch_size)
    if overwrite and run.path is not None:
        run.path.unlink(missing_ok=True)  # all checks passed: start over as asked

    if verbose == "auto":
        verbose = 1 if sys.stderr.isatty() else 2
    display: list[Callback] = []
    if verbose == 1:
        from ravine.callbacks import _ProgressBar

        display.append(_ProgressBar(state.epoch))
    elif verbose == 2:
        from ravine.callbacks import _EpochLines

        display.append(_EpochLines())
    functions = [h for h in hooks if isinstance(h, EpochFunction)]
    hooks = display + [h for h in hooks if not isinstance(h, EpochFunction)]
    state.history.stop_reason = "running"
    try:
        _loop(run, state, hooks, functions, early_stopping, curriculum_levels)
    finally:
        for h in display:
            h.close()  # type: ignore[attr-defined]
    return state.history


def _loop(
    run: Run,
    state: RunState,
    hooks: list[Callback],
    functions: list[EpochFunction],
    early_stopping: EarlyStopping | None,
    curriculum_levels: int,
) -> None:
    """Phase 4: the epochs, with the callbacks' hooks around them."""
    history = state.history
    for h in hooks:
        h.on_train_begin(run)
    state.checkpoint_clock = time.monotonic()
    for epoch in range(state.epoch, run.epochs):
        run.epoch = epoch + 1
        if not run.stop_training:
            for h in hooks:
                h.on_epoch_begin(epoch + 1, run)
        if run.stop_training:  # asked before this epoch's first step: end at the last one
            history.stop_reason = "callback"
            if state.epoch > 0:  # it records the stop (and any unsaved epochs)
                _save(run, state)
            break
        t0 = time.perf_counter()
        order = _epoch_order(run, state, epoch, curriculum_levels)
        history.lr.append(float(run.optimizer.param_groups[0]["lr"]))
        sums = _train_epoch(run, state, epoch, order, hooks)
        # On CUDA a ravine optimizer's non-finite guard reports a refused step at its next
        # call; the epoch's last step has none, so its verdict is read here (one host read).
        flush_guard = getattr(run.optimizer, "flush_guard", None)
        if callable(flush_guard):
            flush_guard()
        stop = _end_epoch(run, state, epoch, sums, early_stopping, t0)
        logs = history.logs()
        for h in hooks:
            h.on_epoch_end(epoch + 1, logs, run)
        if run.stop_training and not stop:
            stop = True
            history.stop_reason = "callback"
        elif stop or epoch + 1 == run.epochs:
            _finish(run, state, "early_stopping" if stop else "completed")
        if stop or epoch + 1 == run.epochs:
            if run.checkpoint_at_end or history.stop_reason == "callback":
                _save(run, state)
        elif (epoch + 1) % run.checkpoint_every == 0 and (
            time.monotonic() - state.checkpoint_clock >= run.checkpoint_every_seconds
        ):
            _save(run, state)
        for f in functions:
            f.after_checkpoint(epoch + 1, history)
        if stop:
            break
    for h in hooks:
        h.on_train_end(history, run)


def _check_verbose(verbose: Any, progress: bool | None) -> Literal["auto", 0, 1, 2]:
    if progress is not None:
        warnings.warn(
            "fit(progress=...) is deprecated: use verbose=1 (bar) or verbose=0 (silent)",
            PendingDeprecationWarning,
            stacklevel=3,
        )
        if not isinstance(progress, bool):
            raise ValueError(f"progress must be True, False or None, got {progress!r}")
        if verbose != "auto":
            raise ValueError(
                f"progress={progress!r} and verbose={verbose!r} were both given: use verbose only"
            )
        return 1 if progress else 0
    if isinstance(verbose, bool) or verbose not in ("auto", 0, 1, 2):
        raise ValueError(f"verbose must be 'auto', 0, 1 or 2, got {verbose!r}")
    return verbose  # type: ignore[no-any-return]


def _validate(
    val: Any,
    *,
    batch_size: int | None,
    epochs: int,
    checkpoint_every: int,
    checkpoint_every_seconds: float | None,
    checkpoint_durable: bool,
    checkpoint_at_end: bool,
    schedule_every: str,
    scheduler: Any,
    curriculum: str | None,
    seed: int,
    early_stopping: EarlyStopping | None,
    metrics: dict[str, Metric],
    eval_batch_size: int,
    sync_every: int | None,
    checkpoint_dir: str | os.PathLike[str] | None,
    resume: bool,
    overwrite: bool,
) -> None:
    """Phase 1: every argument that can be checked alone, before any work."""
    if batch_size is not None and not (
        isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size >= 1
    ):
        raise ValueError(
            f"batch_size must be an integer >= 1 or None (full batch), got {batch_size!r}"
        )
    if not (isinstance(epochs, int) and epochs >= 1):
        raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
    if not (isinstance(checkpoint_every, int) and checkpoint_every >= 1):
        raise ValueError(f"checkpoint_every must be an integer >= 1, got {checkpoint_every!r}")
    if checkpoint_every_seconds is not None and not (
        isinstance(checkpoint_every_seconds, (int, float))
        and not isinstance(checkpoint_every_seconds, bool)
        and math.isfinite(checkpoint_every_seconds)
        and checkpoint_every_seconds >= 0
    ):
        raise ValueError(
            "checkpoint_every_seconds must be a finite number of seconds >= 0 or None, "
            f"got {checkpoint_every_seconds!r}"
        )
    if not isinstance(checkpoint_durable, bool):
        raise ValueError(f"checkpoint_durable must be True or False, got {checkpoint_durable!r}")
    if not isinstance(checkpoint_at_end, bool):
        raise ValueError(f"checkpoint_at_end must be True or False, got {checkpoint_at_end!r}")
    if schedule_every not in ("epoch", "batch"):
        raise ValueError(f"schedule_every must be 'epoch' or 'batch', got {schedule_every!r}")
    if isinstance(scheduler, ReduceLROnPlateau) and schedule_every == "batch":
        raise ValueError(
            "schedule_every must be 'epoch' for a ReduceLROnPlateau scheduler, got 'batch'"
        )
    if curriculum is not None and curriculum not in STRATEGIES:
        raise ValueError(f"curriculum must be one of {STRATEGIES} or None, got {curriculum!r}")
    if not (isinstance(seed, int) and seed >= 0):
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if early_stopping is not None:
        monitor = early_stopping.monitor
        if monitor.startswith("val") and val is None:
            raise ValueError(f"early_stopping monitors {monitor!r} but val is None")
        name = monitor.split("_", 1)[1]
        if name not in ("loss", "accuracy") and name not in metrics:
            raise ValueError(
                f"early_stopping monitors {monitor!r}, but metrics has no {name!r} "
                f"(metrics: {sorted(metrics)})"
            )
    if not (isinstance(eval_batch_size, int) and eval_batch_size >= 1):
        raise ValueError(f"eval_batch_size must be an integer >= 1, got {eval_batch_size!r}")
    if sync_every is not None and not (
        isinstance(sync_every, int) and not isinstance(sync_every, bool) and sync_every >= 1
    ):
        raise ValueError(f"sync_every must be an integer >= 1 or None, got {sync_every!r}")
    if checkpoint_dir is None:
        if resume:
            raise ValueError("resume=True needs checkpoint_dir, got None")
        return
    check_checkpoint_dir(checkpoint_dir, resume=resume, overwrite=overwrite)


def check_checkpoint_dir(
    checkpoint_dir: str | os.PathLike[str], *, resume: bool, overwrite: bool
) -> Path:
    """The checkpoint file's path, if it can be written and would not replace a run by mistake."""
    if resume and overwrite:
        raise ValueError("resume=True and overwrite=True exclude each other: pick one")
    folder = check_output_path(checkpoint_dir, "checkpoint_dir", directory=True)
    path = check_output_path(folder / CHECKPOINT_NAME, "checkpoint file")
    if path.exists() and not (resume or overwrite):
        raise ValueError(
            f"checkpoint {path} exists and would be replaced: pass resume=True to continue or "
            "overwrite=True to start over (--resume / --overwrite)"
        )
    return path


def _prepare(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler | ReduceLROnPlateau | None,
    train: Any,
    val: Any,
    loss_fn: LossFn,
    batch_size: int | None,
    epochs: int,
    seed: int,
    shuffle: bool,
    curriculum: str | None,
    difficulty: Any,
    checkpoint_dir: str | os.PathLike[str] | None,
    schedule_every: str,
    device: str | torch.device | None,
    unpack: Unpack | None,
    metrics: dict[str, Metric],
    sync_every: int | None,
    eval_batch_size: int,
    checkpoint_every: int,
    checkpoint_every_seconds: float | None,
    checkpoint_durable: bool,
    checkpoint_at_end: bool,
) -> Run:
    """Phase 2: data checked, model and data on the device, batch geometry, run settings."""
    current = _model_device(model)
    target = current if device is None else _as_device(device)
    dtype = _float_dtype(model)
    bs = None if batch_size is _REQUIRED else batch_size
    data = as_batches("train", train, batch_size=bs, float_dtype=dtype, unpack=unpack)
    val_data = None
    if val is not None:
        val_data = as_batches(
            "val", val, batch_size=eval_batch_size, float_dtype=dtype, unpack=unpack
        )
    if data.ordered and batch_size is _REQUIRED:
        raise ValueError(
            f"batch_size is required when train is a {type(train).__name__}: an integer >= 1 "
            "(mini-batch; 1: stochastic) or None (full batch)"
        )
    if isinstance(data, IterableBatches) and bs is not None and not data.batched_by_fit:
        raise ValueError(
            f"batch_size must be None (or left out) when train is a "
            f"{type(data.data).__name__}: it yields its own batches, got batch_size={bs!r}"
        )
    if curriculum is not None:
        if not data.ordered:
            raise ValueError(
                f"curriculum={curriculum!r} needs tensors or a Dataset: a "
                f"{type(getattr(data, 'data', train)).__name__} keeps its own order"
            )
        if not isinstance(data, TensorBatches) and not isinstance(difficulty, torch.Tensor):
            raise ValueError(
                f"curriculum={curriculum!r} on a Dataset needs difficulty= as a tensor of scores "
                "(one per example): the default and function forms read tensors"
            )
    if target != current:
        if optimizer.state:
            raise ValueError(
                f"device={str(target)!r}: the model is on {current} and its optimizer already "
                "holds state there; move the model before creating the optimizer (or before its "
                "first step), or leave device out"
            )
        model.to(target)
        target = _model_device(model)  # "cuda" -> "cuda:0"
    if isinstance(data, TensorBatches):
        data = data.to(target)  # once, not per batch: the fast path
    if isinstance(val_data, TensorBatches):
        val_data = val_data.to(target)
    if data.ordered:
        assert data.n is not None
        bs = data.n if bs is None else min(bs, data.n)
    if sync_every is None:
        sync_every = 1 if target.type == "cpu" else ACCELERATOR_SYNC_EVERY
    return Run(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        train=data,
        val=val_data,
        loss_fn=loss_fn,
        metrics=metrics,
        device=target,
        config={"batch_size": bs, "seed": seed, "shuffle": shuffle, "curriculum": curriculum},
        epochs=epochs,
        batch_size=bs,
        n_batches=data.n_batches(bs),
        full_batch=data.ordered and bs == data.n and curriculum is None,
        schedule_per_batch=scheduler is not None and schedule_every == "batch",
        path=None if checkpoint_dir is None else Path(checkpoint_dir) / CHECKPOINT_NAME,
        rollback=isinstance(optimizer, torch.optim.LBFGS),
        sync_every=sync_every,
        eval_batch_size=eval_batch_size,
        checkpoint_every=checkpoint_every,
        checkpoint_every_seconds=checkpoint_every_seconds or 0.0,
        checkpoint_durable=checkpoint_durable,
        checkpoint_at_end=checkpoint_at_end,
    )


def _start(run: Run, resume: bool, override: bool) -> RunState:
    """Phase 3: a fresh state, or the checkpoint's (checked against the run before loading)."""
    if resume and run.path is not None and run.path.exists():
        ckpt = load_checkpoint(run.path, map_location=run.device)
        return RunState.from_checkpoint(ckpt, run, override_hyperparameters=override)
    return RunState(hyperparameters=_hyperparameters(run.optimizer))


def _difficulty_scores(run: Run, difficulty: Any, eval_batch_size: int) -> torch.Tensor:
    data = run.train
    if difficulty is not None and not callable(difficulty):
        scores = torch.as_tensor(difficulty).detach().double().cpu()
    else:
        assert isinstance(data, TensorBatches)  # _prepare refused the other kinds
        if difficulty is None:
            scores = loss_difficulty(run.model, data.x, data.y, run.loss_fn, eval_batch_size)
        else:
            scores = torch.as_tensor(difficulty(run.model, data.x, data.y)).detach().double().cpu()
    if scores.shape != (run.n,):
        raise ValueError(
            f"difficulty must give one score per training example ({run.n}), "
            f"got shape {tuple(scores.shape)}"
        )
    return scores


def _epoch_order(run: Run, state: RunState, epoch: int, levels: int) -> torch.Tensor | None:
    """This epoch's visiting order (None: index order, or the loader's own)."""
    if run.full_batch or not run.train.ordered:
        return None
    assert run.n is not None
    curriculum = run.config["curriculum"]
    if curriculum is not None:
        assert state.scores is not None
        return curriculum_order(state.scores, curriculum, run.config["seed"], epoch, levels=levels)
    if run.config["shuffle"]:
        return shuffled(run.n, run.config["seed"], epoch)
    return None


class _BadLoss(Exception):
    """Raised by fit's closure on a non-finite loss, before the backward pass."""

    def __init__(self, value: float, evaluation: int) -> None:
        self.value, self.evaluation = value, evaluation


def _params_finite(model: nn.Module) -> bool:
    """One foreach max-norm per (device, dtype): only at epoch ends and on a non-finite loss.

    Measured at 11-22% of a step (logreg, MLP 2x500 on MNIST, 1 thread), too much per step.
    """
    params = [p.detach() for p in model.parameters() if p.is_floating_point() or p.is_complex()]
    if not params:
        return True
    norms = torch._foreach_norm(params, math.inf)
    return bool(torch.stack([n.to(norms[0].device) for n in norms]).isfinite().all())


@dataclass
class _EpochSums:
    """One epoch's training results, read from the device once."""

    losses: list[float]  # per step, as read
    sizes: list[int]  # examples per step
    examples: int
    correct: int | None  # None: not a classification run
    metrics: dict[str, float]  # example-weighted sums


# Most score elements (4 MB of float32) that _Sums holds before counting correct predictions.
_HELD_SCORES = 1 << 20


class _Sums:
    """Per-step accumulators of an epoch, kept on the device until the host reads them."""

    def __init__(self, run: Run) -> None:
        self.losses: list[torch.Tensor] = []  # detached 0-d losses, one per step
        self.read: list[float] = []  # the ones the host has read so far
        self.sizes: list[int] = []
        # Scores and targets of the steps not counted yet: one argmax and comparison over all
        # of them when they reach _HELD_SCORES elements or the epoch ends. Per step, the argmax
        # alone was ~2% of a small model's step (digits-mlp, batch 32, 1 thread).
        self.scores: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []
        self.held = 0
        self.correct = torch.zeros((), dtype=torch.int64, device=run.device)
        self.classify = True
        self.metrics = {
            name: torch.zeros((), dtype=torch.float64, device=run.device) for name in run.metrics
        }

    def add(self, run: Run, loss: torch.Tensor, out: Any, yb: torch.Tensor) -> None:
        """One step's detached loss and outputs (no autograd graph: nothing here records one)."""
        self.losses.append(loss)
        self.sizes.append(len(yb))
        if self.classify and _classifies(out, yb):
            if self.scores and out.shape[1] != self.scores[0].shape[1]:
                self._count()  # another number of classes: torch.cat needs equal widths
            self.scores.append(out)
            self.targets.append(yb)
            self.held += out.numel()
            if self.held >= _HELD_SCORES:
                self._count()
        else:
            self.classify = False
            self.scores.clear()
            self.targets.clear()
        if run.metrics:
            with torch.no_grad():
                for name, fn in run.metrics.items():
                    self.metrics[name] += fn(out, yb).detach().double() * len(yb)

    def _count(self) -> None:
        """Add the held steps' correct predictions to ``correct`` (on the device)."""
        if not self.scores:
            return
        if len(self.scores) == 1:
            scores, targets = self.scores[0], self.targets[0]
        else:  # cat promotes mixed dtypes exactly (autocast), so the argmax is unchanged
            scores, targets = torch.cat(self.scores), torch.cat(self.targets)
        self.correct += (scores.argmax(1) == targets).sum()
        self.scores.clear()
        self.targets.clear()
        self.held = 0

    def unread(self) -> list[float]:
        """Read the losses the host has not seen yet (one wait for the device)."""
        fresh = self.losses[len(self.read) :]
        if not fresh:
            return []
        if len({t.dtype for t in fresh}) > 1:  # e.g. autocast: a loss's dtype may change
            fresh = [t.double() for t in fresh]
        if len(fresh) == 1:
            values = [fresh[0].item()]
        else:  # reshape: a loss of shape (1,) backpropagates like a 0-d one
            values = torch.stack(fresh).double().reshape(len(fresh)).tolist()
        self.read.extend(values)
        return values

    def result(self) -> _EpochSums:
        correct = None
        if self.classify:
            self._count()
            correct = int(self.correct.item())
        return _EpochSums(
            losses=self.read,
            sizes=self.sizes,
            examples=sum(self.sizes),
            correct=correct,
            metrics={k: v.item() for k, v in self.metrics.items()},
        )


def _train_epoch(
    run: Run,
    state: RunState,
    epoch: int,
    order: torch.Tensor | None,
    hooks: list[Callback],
) -> _EpochSums:
    """One pass over the training set (or up to a callback's stop), accumulated on the device."""
    run.model.train()
    optimizer = run.optimizer
    sums = _Sums(run)
    # Reading the loss in the closure lets fit refuse a bad step before it is applied; it waits
    # for the device, so it happens only when every step is read anyway (CPU) or for L-BFGS,
    # which reads its loss itself.
    check_in_closure = run.sync_every == 1 or run.rollback
    b = -1
    for b, (xb, yb) in enumerate(run.train.batches(run.batch_size, order, run.device)):
        seen: list[Any] = []  # (outputs, loss, value read or None) of each evaluation

        # A closure, so that rules which re-evaluate the loss (L-BFGS) work too; the others
        # call it exactly once. A non-finite loss raises before its backward pass.
        def closure(xb: Any = xb, yb: torch.Tensor = yb, seen: list[Any] = seen) -> torch.Tensor:
            out = run.model(xb)
            loss = run.loss_fn(out, yb)
            value = None
            if check_in_closure:
                value = loss.item()
                if not math.isfinite(value):
                    raise _BadLoss(value, len(seen))
            seen.append((out.detach(), loss.detach(), value) if not seen else None)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            return loss

        snapshot = _snapshot(run) if run.rollback else None
        try:
            optimizer.step(closure)
        except _BadLoss as bad:
            raise _non_finite_loss(run, state, bad, epoch, b, snapshot) from None
        out, loss, value = seen[0]
        sums.add(run, loss, out, yb)
        if check_in_closure:
            sums.read.append(value)
            run.last_loss = value
        elif (b + 1) % run.sync_every == 0:
            _check_read(run, state, epoch, b, sums)
        if run.schedule_per_batch:
            run.scheduler.step()  # type: ignore[union-attr]
        for h in hooks:
            h.on_batch_end(state.history.steps + b + 1, loss, run)
        if run.stop_training:
            break
    if b < 0:
        raise ValueError(f"train yielded no batches in epoch {epoch + 1}")
    _check_read(run, state, epoch, b, sums)
    if not _params_finite(run.model):
        state.history.stop_reason = "non_finite_loss"
        raise NonFiniteParametersError(
            epoch + 1,
            _checkpoint_path(run, state),
            state.last_checkpoint,
            state.history,
            checkpointing=run.path is not None,
        )
    return sums.result()


def _check_read(run: Run, state: RunState, epoch: int, b: int, sums: _Sums) -> None:
    """Read the unread losses; a non-finite one raises, naming the first bad batch."""
    start = len(sums.read)
    values = sums.unread()
    if not values:
        return
    run.last_loss = values[-1]
    for i, v in enumerate(values):
        if not math.isfinite(v):
            first_bad = start + i
            finite = _params_finite(run.model)
            parameters = (
                f"the loss is read every {run.sync_every} steps, so the steps of batches "
                f"{first_bad + 1} to {b + 1} were applied; the parameters are "
                f"{'still finite' if finite else 'non-finite'}"
            )
            state.history.stop_reason = "non_finite_loss"
            raise NonFiniteLossError(
                v,
                epoch + 1,
                first_bad + 1,
                run.n_batches,
                _checkpoint_path(run, state),
                state.last_checkpoint,
                state.history,
                parameters,
                checkpointing=run.path is not None,
            )


def _snapshot(run: Run) -> tuple[list[torch.Tensor], dict[str, Any]]:
    params = [p.detach().clone() for p in run.model.parameters()]
    return params, copy.deepcopy(run.optimizer.state_dict())


def _checkpoint_path(run: Run, state: RunState) -> Path | None:
    return run.path if state.last_checkpoint is not None else None


def _non_finite_loss(
    run: Run,
    state: RunState,
    bad: _BadLoss,
    epoch: int,
    b: int,
    snapshot: tuple[list[torch.Tensor], dict[str, Any]] | None,
) -> NonFiniteLossError:
    """The error for a non-finite loss, saying truly what the parameters hold now."""
    if bad.evaluation == 0:
        if _params_finite(run.model):
            parameters = "the step was not applied (the parameters are those after the last step)"
        else:
            parameters = (
                "the step was not applied, but the parameters were already non-finite: the "
                "previous step wrote NaN/Inf into them although its loss was finite"
            )
    elif snapshot is not None:
        with torch.no_grad():
            for p, saved in zip(run.model.parameters(), snapshot[0]):
                p.copy_(saved)
        run.optimizer.load_state_dict(snapshot[1])
        parameters = (
            f"the step was rolled back (the loss was evaluation {bad.evaluation + 1} of the step, "
            "after the optimizer had moved the parameters; they and its state are restored)"
        )
    else:
        parameters = (
            f"the step was partly applied: the optimizer had moved the parameters before "
            f"evaluation {bad.evaluation + 1} of the loss, and they were not restored"
        )
    state.history.stop_reason = "non_finite_loss"
    return NonFiniteLossError(
        bad.value,
        epoch + 1,
        b + 1,
        run.n_batches,
        _checkpoint_path(run, state),
        state.last_checkpoint,
        state.history,
        parameters,
        checkpointing=run.path is not None,
    )


def _end_epoch(
    run: Run,
    state: RunState,
    epoch: int,
    sums: _EpochSums,
    early_stopping: EarlyStopping | None,
    t0: float,
) -> bool:
    """Phase 5: record the epoch, evaluate, step the scheduler, early stopping; True to stop."""
    history = state.history
    history.steps += len(sums.losses)
    history.epoch.append(epoch + 1)
    history.step_loss.extend(sums.losses)
    history.train_loss.append(sum(v * n for v, n in zip(sums.losses, sums.sizes)) / sums.examples)
    if sums.correct is not None:
        history.train_accuracy.append(sums.correct / sums.examples)
    for name, total in sums.metrics.items():
        history.metrics.setdefault(f"train_{name}", []).append(total / sums.examples)
    if run.val is not None:
        result = _evaluate(
            run.model, run.val, run.loss_fn, run.eval_batch_size, run.device, run.metrics
        )
        history.val_loss.append(result["loss"])
        if "accuracy" in result:
            history.val_accuracy.append(result["accuracy"])
        for name in run.metrics:
            history.metrics.setdefault(f"val_{name}", []).append(result[name])
    scheduler = run.scheduler
    if scheduler is not None and not run.schedule_per_batch:
        if isinstance(scheduler, ReduceLROnPlateau):
            scheduler.step(history.val_loss[-1] if history.val_loss else history.train_loss[-1])
        else:
            scheduler.step()
    stop = False
    if early_stopping is not None:
        series = history.series(early_stopping.monitor)
        if not series:
            raise ValueError(
                f"early_stopping monitors {early_stopping.monitor!r}, "
                "which this run does not record"
            )
        if early_stopping.improved(series[-1], state.best):
            state.best, state.bad_epochs, history.best_epoch = series[-1], 0, epoch + 1
            if early_stopping.restore_best:
                state.best_state = {
                    k: v.detach().clone() for k, v in run.model.state_dict().items()
                }
        else:
            state.bad_epochs += 1
            stop = state.bad_epochs >= early_stopping.patience
    history.time.append(time.perf_counter() - t0)
    state.epoch = epoch + 1
    return stop


def _finish(run: Run, state: RunState, reason: str) -> None:
    """The run ends (early stopping or its last epoch): the reason, and the best weights."""
    state.history.stop_reason = reason
    if state.best_state is not None:
        run.model.load_state_dict(state.best_state)


def _save(run: Run, state: RunState) -> None:
    """Phase 6: the checkpoint, when the run has a checkpoint_dir."""
    if run.path is None:
        return
    save_checkpoint(run.path, state.to_checkpoint(run), durable=run.checkpoint_durable)
    state.last_checkpoint = state.epoch
    state.checkpoint_clock = time.monotonic()
