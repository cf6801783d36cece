"""fit(): batch, stochastic and mini-batch gradient descent, and the strategies around the rule.

The three variants of Ruder's survey (2016, arXiv:1609.04747) differ only in how many examples
each step sees: batch GD (batch_size = N, one step per epoch), stochastic GD (batch_size = 1, N
steps) and mini-batch GD (n, ceil(N / n) steps). Around them: per-epoch shuffling or a curriculum
(Bengio et al., 2009; Zaremba & Sutskever, 2014, arXiv:1410.4615), learning-rate schedules stepped
per batch or per epoch, early stopping on a validation metric ("beautiful free lunch", Hinton,
NIPS 2015 tutorial), atomic checkpoints that resume bit-identically, and a non-finite loss guard.

Works with any ``torch.optim.Optimizer`` (ravine's optimizers are ones) and any torch scheduler.
Data are tensors indexed directly, not a DataLoader: for in-memory sets that is what keeps the
overhead over a hand-written loop small (see benchmarks/fit_overhead.py).
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
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from ravine.data.order import STRATEGIES, curriculum_order, loss_difficulty, shuffled
from ravine.paths import check_output_path

__all__ = [
    "CHECKPOINT_NAME",
    "CorruptCheckpointError",
    "EarlyStopping",
    "History",
    "NonFiniteLossError",
    "NonFiniteParametersError",
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
        n_batches: int,
        checkpoint: Path | None,
        checkpoint_epoch: int | None,
        history: History,
        parameters: str = "the step was not applied",
    ) -> None:
        super().__init__(
            f"non-finite loss ({loss}) at epoch {epoch}, batch {batch}/{n_batches}; {parameters}; "
            f"{_last_checkpoint(checkpoint, checkpoint_epoch)}. "
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
    ) -> None:
        RuntimeError.__init__(
            self,
            f"the parameters became non-finite during epoch {epoch} although every loss was "
            "finite (a step wrote NaN/Inf); the model holds them now and no checkpoint was written "
            f"for this epoch; {_last_checkpoint(checkpoint, checkpoint_epoch)}. "
            "Try a smaller learning rate or gradient clipping.",
        )
        self.loss, self.epoch, self.batch = math.nan, epoch, None
        self.checkpoint = checkpoint
        self.history = history


def _last_checkpoint(checkpoint: Path | None, epoch: int | None) -> str:
    if checkpoint is None:
        return "no checkpoint was written (pass checkpoint_dir= to keep one)"
    return f"last good checkpoint: {checkpoint} (after epoch {epoch})"


class CorruptCheckpointError(ValueError):
    """A checkpoint file is truncated, altered or not one that fit wrote."""


@dataclass
class EarlyStopping:
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    ``monitor`` is a History series: "val_loss" (default), "val_accuracy" or "train_loss"; mode
    "min"/"max" defaults to "max" for accuracies. With ``restore_best`` the model ends with the
    weights of its best epoch.
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
        if self.monitor not in ("val_loss", "val_accuracy", "train_loss"):
            raise ValueError(
                f"monitor must be 'val_loss', 'val_accuracy' or 'train_loss', got {self.monitor!r}"
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
    """Per-epoch metrics of a run: plain lists, saved as JSON, plotted with ``plot``.

    ``lr`` is the first parameter group's learning rate at the start of each epoch; ``time`` is
    wall seconds per epoch (training and evaluation).
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> History:
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def save(self, path: str | os.PathLike[str]) -> None:
        _atomic_write(Path(path), lambda f: f.write(self.to_json().encode()))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> History:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def plot(self, path: str | os.PathLike[str] | None = None) -> Any:
        """Loss (train and val) and val accuracy against epoch; saves to ``path`` if given."""
        import matplotlib

        if path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2 if self.val_accuracy else 1, figsize=(9, 3.5), squeeze=False)
        ax = axes[0, 0]
        ax.plot(self.epoch, self.train_loss, label="train")
        if self.val_loss:
            ax.plot(self.epoch, self.val_loss, label="val")
        ax.set(xlabel="epoch", ylabel="loss", yscale="log")
        ax.legend()
        if self.val_accuracy:
            axes[0, 1].plot(self.epoch, self.val_accuracy)
            axes[0, 1].set(xlabel="epoch", ylabel="val accuracy")
        fig.tight_layout()
        if path is not None:
            fig.savefig(path)
            plt.close(fig)
        return fig


def _atomic_write(path: Path, write: Callable[[Any], Any]) -> None:
    """Write via a temp file in the same folder and os.replace: a crash leaves the old file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself survive a power cut (POSIX)
        dfd = os.open(path.parent, os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _as_pair(name: str, data: Any) -> Pair:
    if isinstance(data, torch.utils.data.TensorDataset):
        data = data.tensors
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise ValueError(
            f"{name} must be an (inputs, targets) pair of tensors or a TensorDataset, "
            f"got {type(data).__name__}"
        )
    x, y = data
    if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
        raise ValueError(f"{name} must hold tensors, got {type(x).__name__}, {type(y).__name__}")
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(
            f"{name} inputs and targets must be non-empty and of equal length, "
            f"got {len(x)} and {len(y)}"
        )
    return x, y


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Pair,
    loss_fn: LossFn = nn.functional.cross_entropy,
    batch_size: int = 4096,
) -> tuple[float, float | None]:
    """Mean loss and, for class-index targets, accuracy of ``model`` (eval mode) on ``data``."""
    x, y = data
    was_training = model.training
    model.eval()
    total, correct = 0.0, 0
    classify = not y.dtype.is_floating_point
    try:
        for i in range(0, len(x), batch_size):
            out = model(x[i : i + batch_size])
            yb = y[i : i + batch_size]
            total += float(loss_fn(out, yb)) * len(yb)
            classify = classify and out.ndim == 2 and out.shape[1] > 1
            if classify:
                correct += int((out.argmax(1) == yb).sum())
    finally:
        model.train(was_training)
    return total / len(x), (correct / len(x) if classify else None)


def _rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------- checkpoint files

# A checkpoint is this line, the SHA-256 (hex) of the rest and a newline, then torch.save's bytes:
# a flipped bit or a truncated write is reported as such instead of failing inside torch's reader.
_MAGIC = b"ravine fit checkpoint\n"
_HEADER = len(_MAGIC) + 64 + 1


def save_checkpoint(path: str | os.PathLike[str], checkpoint: dict[str, Any]) -> None:
    """Write ``checkpoint`` (tensors and plain data) atomically, with a SHA-256 of its bytes."""
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    body = buffer.getbuffer()
    digest = hashlib.sha256(body).hexdigest().encode()

    def write(f: Any) -> None:
        f.write(_MAGIC + digest + b"\n")
        f.write(body)

    _atomic_write(Path(path), write)


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


@dataclass
class _Run:
    """What a run is given and derives once: fixed for its whole length."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler | ReduceLROnPlateau | None
    x: torch.Tensor
    y: torch.Tensor
    val: Pair | None
    loss_fn: LossFn
    config: dict[str, Any]
    epochs: int
    batch_size: int
    n_batches: int
    full_batch: bool
    schedule_per_batch: bool
    path: Path | None
    # L-BFGS re-evaluates the closure after moving the parameters: snapshot them before its
    # steps (full-batch and rare) so that a non-finite loss leaves the model as it was.
    rollback: bool

    @property
    def n(self) -> int:
        return len(self.x)


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

    def to_checkpoint(self, run: _Run) -> dict[str, Any]:
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
        cls, ckpt: dict[str, Any], run: _Run, *, override_hyperparameters: bool = False
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
    ckpt: dict[str, Any], run: _Run, given: list[dict[str, Any]], override: bool
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


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train: Pair | torch.utils.data.TensorDataset,
    val: Pair | torch.utils.data.TensorDataset | None = None,
    *,
    batch_size: int | None,
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
    resume: bool = False,
    overwrite: bool = False,
    override_hyperparameters: bool = False,
    progress: bool | None = None,
    eval_batch_size: int = 4096,
    callbacks: Sequence[Callable[[int, History], Any]] = (),
) -> History:
    """Train ``model`` with ``optimizer`` on ``train`` for ``epochs`` epochs; return its History.

    batch_size: examples per step; None or >= N is batch gradient descent (one step per epoch on
        the whole set, in index order since order cannot change a full-batch mean), 1 is
        stochastic, n is mini-batch (ceil(N / n) steps, the last one smaller).
    shuffle / seed: a fresh permutation every epoch from a generator seeded by (seed, epoch).
    curriculum: "naive", "mixed" or "combined" (ravine.data.order) instead of shuffling, by
        ``difficulty`` scores (one per example, low = easy; or a function of (model, x, y)); by
        default each example's loss under the initial model.
    scheduler: stepped after every optimizer step (schedule_every="batch") or epoch; a
        ReduceLROnPlateau (e.g. ravine.schedules.performance) is stepped per epoch with the
        validation loss (the training loss without ``val``).
    early_stopping: an EarlyStopping; the history records ``best_epoch`` and ``stop_reason``,
        and with restore_best the model ends (stopped early or not) with its best weights.
    checkpoint_dir / checkpoint_every / resume: every N epochs (and at the end) the model,
        optimizer, scheduler, RNG states, history and early-stopping state are written atomically
        to checkpoint_dir/checkpoint.pt with a SHA-256 of its bytes; with resume=True a run
        starts from that file if present and ends bit-identical to an uninterrupted one.
    overwrite: without resume, an existing checkpoint is an error (it would be replaced);
        overwrite=True deletes it and starts over.
    override_hyperparameters: on resume the optimizer's class and hyperparameters (its param
        groups when the first run began) must match the checkpoint's, or a ValueError lists
        the differences; True continues with the given values instead (the learning rate of a
        scheduled run cannot be changed this way: the scheduler's state keeps its own).
    progress: a tqdm bar with loss and lr; None shows it only when stderr is a terminal.
    callbacks: functions f(epoch, history) called after each epoch.

    The train and val tensors are moved once to the device of the model's parameters.

    A NaN or infinite training loss raises NonFiniteLossError (epoch, batch, last checkpoint,
    and whether the parameters moved: for L-BFGS, which re-evaluates the loss after moving
    them, the step is rolled back). Parameters are checked once per epoch, and when a loss is
    non-finite: a step that writes NaN/Inf from a finite loss is reported at the next loss or
    at the end of its epoch (NonFiniteParametersError), before any checkpoint holds it.
    """
    _validate(
        val,
        batch_size=batch_size,
        epochs=epochs,
        checkpoint_every=checkpoint_every,
        schedule_every=schedule_every,
        scheduler=scheduler,
        curriculum=curriculum,
        seed=seed,
        early_stopping=early_stopping,
        eval_batch_size=eval_batch_size,
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        overwrite=overwrite,
    )
    run = _prepare(
        model, optimizer, scheduler, train, val, loss_fn, batch_size, epochs, seed, shuffle,
        curriculum, checkpoint_dir, schedule_every,
    )  # fmt: skip
    state = _start(run, resume, override_hyperparameters)
    if state.history.stop_reason == "early_stopping" or state.epoch >= epochs:
        return state.history
    if curriculum is not None and state.scores is None:
        state.scores = _difficulty_scores(run, difficulty, eval_batch_size)
    if overwrite and run.path is not None:
        run.path.unlink(missing_ok=True)  # all checks passed: start over as asked

    bar = None
    if progress or (progress is None and sys.stderr.isatty()):
        from tqdm.auto import tqdm

        bar = tqdm(
            total=epochs * run.n_batches,
            initial=state.epoch * run.n_batches,
            unit="step",
            dynamic_ncols=True,
            leave=True,
        )
    state.history.stop_reason = "running"
    try:
        for epoch in range(state.epoch, epochs):
            t0 = time.perf_counter()
            order = _epoch_order(run, state, epoch, curriculum_levels)
            state.history.lr.append(float(optimizer.param_groups[0]["lr"]))
            loss_sum = _train_epoch(run, state, epoch, order, bar)
            stop = _end_epoch(run, state, epoch, loss_sum, early_stopping, eval_batch_size, t0)
            if stop or (epoch + 1) % checkpoint_every == 0 or epoch + 1 == epochs:
                _save(run, state)
            for callback in callbacks:
                callback(epoch + 1, state.history)
            if stop:
                break
    finally:
        if bar is not None:
            bar.close()
    return state.history


def _validate(
    val: Any,
    *,
    batch_size: int | None,
    epochs: int,
    checkpoint_every: int,
    schedule_every: str,
    scheduler: Any,
    curriculum: str | None,
    seed: int,
    early_stopping: EarlyStopping | None,
    eval_batch_size: int,
    checkpoint_dir: str | os.PathLike[str] | None,
    resume: bool,
    overwrite: bool,
) -> None:
    """Phase 1: every argument that can be checked alone, before any work."""
    if batch_size is not None and not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(
            f"batch_size must be an integer >= 1 or None (full batch), got {batch_size!r}"
        )
    if not (isinstance(epochs, int) and epochs >= 1):
        raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
    if not (isinstance(checkpoint_every, int) and checkpoint_every >= 1):
        raise ValueError(f"checkpoint_every must be an integer >= 1, got {checkpoint_every!r}")
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
    if early_stopping is not None and early_stopping.monitor.startswith("val") and val is None:
        raise ValueError(f"early_stopping monitors {early_stopping.monitor!r} but val is None")
    if not (isinstance(eval_batch_size, int) and eval_batch_size >= 1):
        raise ValueError(f"eval_batch_size must be an integer >= 1, got {eval_batch_size!r}")
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
    checkpoint_dir: str | os.PathLike[str] | None,
    schedule_every: str,
) -> _Run:
    """Phase 2: data checked and moved to the model's device, batch geometry, run settings."""
    x, y = _as_pair("train", train)
    val_pair = None if val is None else _as_pair("val", val)
    device = next(iter(model.parameters())).device
    x, y = x.to(device), y.to(device)
    if val_pair is not None:
        val_pair = (val_pair[0].to(device), val_pair[1].to(device))
    n = len(x)
    bs = n if batch_size is None else min(batch_size, n)
    return _Run(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        x=x,
        y=y,
        val=val_pair,
        loss_fn=loss_fn,
        config={"batch_size": bs, "seed": seed, "shuffle": shuffle, "curriculum": curriculum},
        epochs=epochs,
        batch_size=bs,
        n_batches=math.ceil(n / bs),
        full_batch=bs == n and curriculum is None,
        schedule_per_batch=scheduler is not None and schedule_every == "batch",
        path=None if checkpoint_dir is None else Path(checkpoint_dir) / CHECKPOINT_NAME,
        rollback=isinstance(optimizer, torch.optim.LBFGS),
    )


def _start(run: _Run, resume: bool, override: bool) -> RunState:
    """Phase 3: a fresh state, or the checkpoint's (checked against the run before loading)."""
    if resume and run.path is not None and run.path.exists():
        device = next(iter(run.model.parameters())).device
        ckpt = load_checkpoint(run.path, map_location=device)
        return RunState.from_checkpoint(ckpt, run, override_hyperparameters=override)
    return RunState(hyperparameters=_hyperparameters(run.optimizer))


def _difficulty_scores(run: _Run, difficulty: Any, eval_batch_size: int) -> torch.Tensor:
    if difficulty is None:
        scores = loss_difficulty(run.model, run.x, run.y, run.loss_fn, eval_batch_size)
    elif callable(difficulty):
        scores = torch.as_tensor(difficulty(run.model, run.x, run.y)).detach().double().cpu()
    else:
        scores = torch.as_tensor(difficulty).detach().double().cpu()
    if scores.shape != (run.n,):
        raise ValueError(
            f"difficulty must give one score per training example ({run.n}), "
            f"got shape {tuple(scores.shape)}"
        )
    return scores


def _epoch_order(run: _Run, state: RunState, epoch: int, levels: int) -> torch.Tensor | None:
    """This epoch's visiting order (None: index order)."""
    if run.full_batch:
        return None
    curriculum = run.config["curriculum"]
    if curriculum is not None:
        assert state.scores is not None
        order = curriculum_order(state.scores, curriculum, run.config["seed"], epoch, levels=levels)
    elif run.config["shuffle"]:
        order = shuffled(run.n, run.config["seed"], epoch)
    else:
        return None
    return order.to(run.x.device)


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


def _train_epoch(
    run: _Run,
    state: RunState,
    epoch: int,
    order: torch.Tensor | None,
    bar: Any,
) -> float:
    """Phase 4: one pass over the training set; returns the sum of per-example losses."""
    run.model.train()
    bs, optimizer = run.batch_size, run.optimizer
    loss_sum = 0.0
    last_postfix = 0.0
    for b in range(run.n_batches):
        if order is None:
            xb, yb = run.x[b * bs : (b + 1) * bs], run.y[b * bs : (b + 1) * bs]
        else:
            idx = order[b * bs : (b + 1) * bs]
            xb, yb = run.x[idx], run.y[idx]
        seen: list[float] = []

        # A closure, so that rules which re-evaluate the loss (L-BFGS) work too; the others
        # call it exactly once. A non-finite loss raises before its backward pass.
        def closure(
            xb: torch.Tensor = xb, yb: torch.Tensor = yb, seen: list[float] = seen
        ) -> torch.Tensor:
            loss = run.loss_fn(run.model(xb), yb)
            value = loss.item()
            if not math.isfinite(value):
                raise _BadLoss(value, len(seen))
            seen.append(value)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            return loss

        snapshot = _snapshot(run) if run.rollback else None
        try:
            optimizer.step(closure)
        except _BadLoss as bad:
            raise _non_finite_loss(run, state, bad, epoch, b, snapshot) from None
        value = seen[0]
        if run.schedule_per_batch:
            run.scheduler.step()  # type: ignore[union-attr]
        loss_sum += value * len(yb)
        if bar is not None:
            bar.update(1)
            now = time.monotonic()
            if now - last_postfix > 0.2:
                last_postfix = now
                bar.set_postfix(
                    epoch=epoch + 1,
                    loss=f"{value:.4g}",
                    lr=f"{optimizer.param_groups[0]['lr']:.3g}",
                    refresh=False,
                )
    if not _params_finite(run.model):
        state.history.stop_reason = "non_finite_loss"
        raise NonFiniteParametersError(
            epoch + 1, _checkpoint_path(run, state), state.last_checkpoint, state.history
        )
    return loss_sum


def _snapshot(run: _Run) -> tuple[list[torch.Tensor], dict[str, Any]]:
    params = [p.detach().clone() for p in run.model.parameters()]
    return params, copy.deepcopy(run.optimizer.state_dict())


def _checkpoint_path(run: _Run, state: RunState) -> Path | None:
    return run.path if state.last_checkpoint is not None else None


def _non_finite_loss(
    run: _Run,
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
    )


def _end_epoch(
    run: _Run,
    state: RunState,
    epoch: int,
    loss_sum: float,
    early_stopping: EarlyStopping | None,
    eval_batch_size: int,
    t0: float,
) -> bool:
    """Phase 5: record the epoch, evaluate, step the scheduler, early stopping; True to stop."""
    history = state.history
    history.steps += run.n_batches
    history.epoch.append(epoch + 1)
    history.train_loss.append(loss_sum / run.n)
    if run.val is not None:
        vl, va = evaluate(run.model, run.val, run.loss_fn, eval_batch_size)
        history.val_loss.append(vl)
        if va is not None:
            history.val_accuracy.append(va)
    scheduler = run.scheduler
    if scheduler is not None and not run.schedule_per_batch:
        if isinstance(scheduler, ReduceLROnPlateau):
            scheduler.step(history.val_loss[-1] if history.val_loss else history.train_loss[-1])
        else:
            scheduler.step()
    stop = False
    if early_stopping is not None:
        series = getattr(history, early_stopping.monitor)
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
    if stop or epoch + 1 == run.epochs:
        history.stop_reason = "early_stopping" if stop else "completed"
        if state.best_state is not None:
            run.model.load_state_dict(state.best_state)
    return stop


def _save(run: _Run, state: RunState) -> None:
    """Phase 6: the checkpoint, when the run has a checkpoint_dir."""
    if run.path is None:
        return
    save_checkpoint(run.path, state.to_checkpoint(run))
    state.last_checkpoint = state.epoch
