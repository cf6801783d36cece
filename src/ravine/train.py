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

import json
import math
import os
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

__all__ = ["CHECKPOINT_NAME", "EarlyStopping", "History", "NonFiniteLossError", "evaluate", "fit"]

CHECKPOINT_NAME = "checkpoint.pt"
_FORMAT = 1

Pair = tuple[torch.Tensor, torch.Tensor]
LossFn = Callable[..., torch.Tensor]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped before applying that step."""

    def __init__(
        self,
        loss: float,
        epoch: int,
        batch: int,
        n_batches: int,
        checkpoint: Path | None,
        checkpoint_epoch: int | None,
        history: History,
    ) -> None:
        where = (
            f"last good checkpoint: {checkpoint} (after epoch {checkpoint_epoch})"
            if checkpoint is not None
            else "no checkpoint was written (pass checkpoint_dir= to keep one)"
        )
        super().__init__(
            f"non-finite loss ({loss}) at epoch {epoch}, batch {batch}/{n_batches}; {where}. "
            "Try a smaller learning rate or gradient clipping."
        )
        self.loss, self.epoch, self.batch = loss, epoch, batch
        self.checkpoint = checkpoint
        self.history = history


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
        to checkpoint_dir/checkpoint.pt; with resume=True a run starts from that file if present
        and ends bit-identical to an uninterrupted one.
    progress: a tqdm bar with loss and lr; None shows it only when stderr is a terminal.
    callbacks: functions f(epoch, history) called after each epoch.

    The train and val tensors are moved once to the device of the model's parameters.

    A NaN or infinite training loss raises NonFiniteLossError (epoch, batch, last checkpoint)
    before that step is applied.
    """
    x, y = _as_pair("train", train)
    val_pair = None if val is None else _as_pair("val", val)
    n = len(x)
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
    plateau = isinstance(scheduler, ReduceLROnPlateau)
    if plateau and schedule_every == "batch":
        raise ValueError(
            "schedule_every must be 'epoch' for a ReduceLROnPlateau scheduler, got 'batch'"
        )
    if curriculum is not None and curriculum not in STRATEGIES:
        raise ValueError(f"curriculum must be one of {STRATEGIES} or None, got {curriculum!r}")
    if not (isinstance(seed, int) and seed >= 0):
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if early_stopping is not None and early_stopping.monitor.startswith("val") and val is None:
        raise ValueError(f"early_stopping monitors {early_stopping.monitor!r} but val is None")
    if eval_batch_size < 1:
        raise ValueError(f"eval_batch_size must be >= 1, got {eval_batch_size!r}")

    device = next(iter(model.parameters())).device
    x, y = x.to(device), y.to(device)
    if val_pair is not None:
        val_pair = (val_pair[0].to(device), val_pair[1].to(device))
    bs = n if batch_size is None else min(batch_size, n)
    n_batches = math.ceil(n / bs)
    full_batch = bs == n and curriculum is None
    config = {"batch_size": bs, "seed": seed, "shuffle": shuffle, "curriculum": curriculum}

    history = History()
    start_epoch = 0
    best: float | None = None
    bad_epochs = 0
    best_state: dict[str, torch.Tensor] | None = None
    scores: torch.Tensor | None = None

    path = None if checkpoint_dir is None else Path(checkpoint_dir) / CHECKPOINT_NAME
    last_ckpt_epoch: int | None = None
    if resume and path is None:
        raise ValueError("resume=True needs checkpoint_dir, got None")
    if resume and path is not None and path.exists():
        ckpt = torch.load(path, map_location=device, weights_only=True)
        if ckpt.get("format") != _FORMAT:
            raise ValueError(f"{path} is not a ravine fit checkpoint (format {ckpt.get('format')})")
        if ckpt["config"] != config:
            raise ValueError(
                f"resume must use the checkpoint's settings {ckpt['config']}, got {config}"
            )
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if scheduler is not None:
            if ckpt["scheduler"] is None:
                raise ValueError(f"{path} was written without a scheduler, but one was given")
            scheduler.load_state_dict(ckpt["scheduler"])
        history = History.from_dict(ckpt["history"])
        best, bad_epochs, best_state = ckpt["best"], ckpt["bad_epochs"], ckpt["best_state"]
        scores = ckpt["scores"]
        start_epoch = last_ckpt_epoch = ckpt["epoch"]
        _set_rng_state(ckpt["rng"])
        if history.stop_reason == "early_stopping" or start_epoch >= epochs:
            return history

    if curriculum is not None and scores is None:
        if difficulty is None:
            scores = loss_difficulty(model, x, y, loss_fn, eval_batch_size)
        elif callable(difficulty):
            scores = torch.as_tensor(difficulty(model, x, y)).detach().double().cpu()
        else:
            scores = torch.as_tensor(difficulty).detach().double().cpu()
        if scores.shape != (n,):
            raise ValueError(
                f"difficulty must give one score per training example ({n}), "
                f"got shape {tuple(scores.shape)}"
            )

    def save(epoch_done: int) -> None:
        nonlocal last_ckpt_epoch
        if path is None:
            return
        ckpt = {
            "format": _FORMAT,
            "epoch": epoch_done,
            "config": config,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": None if scheduler is None else scheduler.state_dict(),
            "rng": _rng_state(),
            "history": history.to_dict(),
            "best": best,
            "bad_epochs": bad_epochs,
            "best_state": best_state,
            "scores": scores,
        }
        _atomic_write(path, lambda f: torch.save(ckpt, f))
        last_ckpt_epoch = epoch_done

    bar = None
    if progress or (progress is None and sys.stderr.isatty()):
        from tqdm.auto import tqdm

        bar = tqdm(
            total=epochs * n_batches,
            initial=start_epoch * n_batches,
            unit="step",
            dynamic_ncols=True,
            leave=True,
        )
    step_scheduler = scheduler is not None and schedule_every == "batch"
    history.stop_reason = "running"
    last_postfix = 0.0

    try:
        for epoch in range(start_epoch, epochs):
            t0 = time.perf_counter()
            if full_batch:
                order = None
            elif curriculum is not None:
                assert scores is not None
                order = curriculum_order(scores, curriculum, seed, epoch, levels=curriculum_levels)
            elif shuffle:
                order = shuffled(n, seed, epoch)
            else:
                order = None
            if order is not None:
                order = order.to(device)
            history.lr.append(float(optimizer.param_groups[0]["lr"]))
            model.train()
            loss_sum = 0.0
            for b in range(n_batches):
                if order is None:
                    xb, yb = x[b * bs : (b + 1) * bs], y[b * bs : (b + 1) * bs]
                else:
                    idx = order[b * bs : (b + 1) * bs]
                    xb, yb = x[idx], y[idx]
                first_loss: list[float] = []

                # A closure, so that rules which re-evaluate the loss (L-BFGS) work too; the others
                # call it exactly once. A non-finite loss raises before the step is applied.
                def closure(
                    xb: torch.Tensor = xb,
                    yb: torch.Tensor = yb,
                    where: tuple[int, int] = (epoch + 1, b + 1),
                    seen: list[float] = first_loss,
                ) -> torch.Tensor:
                    loss = loss_fn(model(xb), yb)
                    value = loss.item()
                    if not math.isfinite(value):
                        history.stop_reason = "non_finite_loss"
                        raise NonFiniteLossError(
                            value,
                            *where,
                            n_batches,
                            path if last_ckpt_epoch is not None else None,
                            last_ckpt_epoch,
                            history,
                        )
                    if not seen:
                        seen.append(value)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    return loss

                optimizer.step(closure)
                value = first_loss[0]
                if step_scheduler:
                    scheduler.step()  # type: ignore[union-attr]
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
            history.steps += n_batches
            history.epoch.append(epoch + 1)
            history.train_loss.append(loss_sum / n)
            if val_pair is not None:
                vl, va = evaluate(model, val_pair, loss_fn, eval_batch_size)
                history.val_loss.append(vl)
                if va is not None:
                    history.val_accuracy.append(va)
            if scheduler is not None and not step_scheduler:
                if plateau:
                    scheduler.step(
                        history.val_loss[-1] if history.val_loss else history.train_loss[-1]
                    )
                else:
                    scheduler.step()  # type: ignore[call-arg]
            stop = False
            if early_stopping is not None:
                series = getattr(history, early_stopping.monitor)
                if not series:
                    raise ValueError(
                        f"early_stopping monitors {early_stopping.monitor!r}, "
                        "which this run does not record"
                    )
                if early_stopping.improved(series[-1], best):
                    best, bad_epochs, history.best_epoch = series[-1], 0, epoch + 1
                    if early_stopping.restore_best:
                        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:
                    bad_epochs += 1
                    stop = bad_epochs >= early_stopping.patience
            history.time.append(time.perf_counter() - t0)
            if stop or epoch + 1 == epochs:
                history.stop_reason = "early_stopping" if stop else "completed"
                if best_state is not None:
                    model.load_state_dict(best_state)
            if stop or (epoch + 1) % checkpoint_every == 0 or epoch + 1 == epochs:
                save(epoch + 1)
            for callback in callbacks:
                callback(epoch + 1, history)
            if stop:
                break
    finally:
        if bar is not None:
            bar.close()
    return history


# ------------------------------------------------------------------ `ravine train` subcommand


def _key_values(items: Sequence[str], what: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{what} must look like key=value, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def add_arguments(p: Any) -> None:
    """Arguments of ``ravine train`` (one model, one optimizer, one dataset)."""
    from ravine.data import DATASETS
    from ravine.models import MODELS
    from ravine.schedules import SCHEDULES

    p.add_argument("--dataset", default="mnist", choices=sorted(DATASETS))
    p.add_argument("--data-dir", help="folder with IDX files (MNIST, Fashion-MNIST) or CIFAR-10")
    p.add_argument("--model", default="mlp", choices=sorted(MODELS))
    p.add_argument(
        "--batchnorm",
        choices=("on", "off"),
        help="BatchNorm layers (default: the model's own, on only for resnet18)",
    )
    p.add_argument("--optimizer", default="adam", help="a ravine optimizer name")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument(
        "--hp",
        nargs="*",
        default=[],
        metavar="K=V",
        help="more optimizer hyperparameters, e.g. betas=[0.9,0.99] eps=1e-8",
    )
    p.add_argument("--batch-size", type=int, default=128, help="0 for full-batch GD")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--schedule", choices=sorted(SCHEDULES))
    p.add_argument(
        "--schedule-arg",
        nargs="*",
        default=[],
        metavar="K=V",
        help="schedule arguments, e.g. r=10 (exponential), t_max=5 (cosine)",
    )
    p.add_argument("--schedule-every", choices=("epoch", "batch"), default="epoch")
    p.add_argument("--curriculum", choices=STRATEGIES)
    p.add_argument("--no-shuffle", action="store_true", help="visit examples in index order")
    p.add_argument("--patience", type=int, help="early stopping on validation loss")
    p.add_argument("--min-delta", type=float, default=0.0)
    p.add_argument("--checkpoint-dir")
    p.add_argument("--checkpoint-every", type=int, default=1)
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint-dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--history", help="write the metrics history here (JSON)")
    p.add_argument("--plot", help="write loss/accuracy curves here (PNG)")
    p.add_argument("--no-progress", action="store_true")


def run(args: Any) -> int:
    """Train, report test loss/accuracy, optionally save history and curves."""
    from ravine.data import DatasetNotFoundError

    try:
        return _run(args)
    except (ValueError, DatasetNotFoundError, NonFiniteLossError) as e:
        print(f"ravine train: {e}", file=sys.stderr)
        return 2


def _run(args: Any) -> int:
    from ravine import data, models, optim, schedules

    kwargs: dict[str, Any] = {}
    if args.data_dir:
        kwargs["data_dir"] = args.data_dir
    splits = data.load(args.dataset, **kwargs)
    torch.manual_seed(args.seed)
    model = models.create(
        args.model,
        splits.input_shape,
        splits.num_classes,
        batchnorm=None if args.batchnorm is None else args.batchnorm == "on",
    )
    opt = optim.create(
        args.optimizer, model.parameters(), lr=args.lr, **_key_values(args.hp, "--hp")
    )
    sched = None
    if args.schedule:
        sched = schedules.create(
            args.schedule, opt, **_key_values(args.schedule_arg, "--schedule-arg")
        )
    history = fit(
        model,
        opt,
        splits.train,
        splits.val if len(splits.val[0]) else None,
        batch_size=args.batch_size or None,
        epochs=args.epochs,
        scheduler=sched,
        schedule_every=args.schedule_every,
        shuffle=not args.no_shuffle,
        seed=args.seed,
        curriculum=args.curriculum,
        early_stopping=None
        if args.patience is None
        else EarlyStopping(patience=args.patience, min_delta=args.min_delta),
        checkpoint_dir=args.checkpoint_dir,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        progress=False if args.no_progress else None,
    )
    test_loss, test_acc = evaluate(model, splits.test)
    acc = "" if test_acc is None else f", test accuracy {test_acc:.4f}"
    print(
        f"{args.model} on {args.dataset} with {args.optimizer}: {len(history.epoch)} epochs, "
        f"{history.steps} steps ({history.stop_reason}); test loss {test_loss:.4f}{acc}"
    )
    if args.history:
        history.save(args.history)
    if args.plot:
        history.plot(args.plot)
    return 0
