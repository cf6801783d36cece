"""Train a model on an offline dataset with ravine.fit and report its test loss and accuracy.

examples:
  ravine train --dataset digits --model logreg --optimizer adadelta   (its registered lr=1.0)
  ravine train --dataset digits --model logreg --optimizer sgd --lr 0.5 --epochs 3
  ravine train --dataset mnist1d --optimizer adam --hp "betas=(0.9,0.99)" amsgrad=False
  ravine train --schedule cosine --schedule-every batch        (t_max: the run's scheduler steps)
  ravine train --checkpoint-dir ck --epochs 10 --history h.json --plot curves.png
  ravine train --checkpoint-dir ck --epochs 20 --resume
  ravine train --device cuda --verbose 2

Hyperparameters not given take the optimizer's registered defaults (`ravine optimizers` lists
them). --hp and --schedule-arg values are Python literals (numbers, tuples, None, True/False, as
in `ravine viz` specs); true/false/yes/no in any case are booleans too; a bare word is a string.
A schedule's arguments not given come from the run's length T (scheduler steps: --epochs, times
the batches per epoch with --schedule-every batch): cosine t_max=T; exponential, inverse_time
and piecewise end at 1% of the initial lr (piecewise: x0.1 at T/2 and again at 3T/4); warmup
over the first 5% of T. Output paths are checked before any work, and printed when written.
"""

from __future__ import annotations

import argparse
import inspect
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ravine.data.order import STRATEGIES
from ravine.optim.hyperparameters import parse_literal

# Bounds for the integer flags: far beyond any real run, small enough that nothing overflows.
MAX_EPOCHS = 1_000_000
MAX_BATCH = 2**31 - 1
MAX_SEED = 2**32 - 1
#: Optimizers whose registered learning rates --help quotes (they differ by orders of magnitude).
LR_EXAMPLES = ("adam", "adadelta", "adagrad", "rprop", "lbfgs")


def _int_in(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected an integer in [{lo}, {hi}], got {text!r}"
            ) from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"expected an integer in [{lo}, {hi}], got {value}")
        return value

    return parse


def _finite_float(lo: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number >= {lo}, got {text!r}") from None
        if not (math.isfinite(value) and value >= lo):
            raise argparse.ArgumentTypeError(f"expected a finite number >= {lo}, got {text!r}")
        return value

    return parse


def parse_value(raw: str) -> Any:
    """A --hp / --schedule-arg value: a Python literal, a boolean word, or else the string."""
    try:
        return parse_literal(raw)
    except ValueError:
        return raw


def key_values(items: Sequence[str], what: str) -> dict[str, Any]:
    """``["k=v", ...]`` as a dict; a malformed item or a repeated key is a ValueError."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ValueError(f"{what} must look like key=value, got {item!r}")
        if key in out:
            raise ValueError(f"{what} gives {key!r} twice")
        out[key] = parse_value(value)
    return out


def _bool_flags(optimizer: str) -> set[str]:
    """Hyperparameters of ``optimizer`` whose defaults are booleans (1/0 accepted for them)."""
    from ravine.optim import Optimizer, registry

    try:
        factory = registry.get(optimizer).factory
    except (KeyError, ValueError):
        return set()
    found: set[str] = set()
    for fn in (factory, Optimizer.__init__):
        try:
            params = inspect.signature(fn).parameters.values()
        except (TypeError, ValueError):
            continue
        found |= {p.name for p in params if isinstance(p.default, bool)}
    return found


def optimizer_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """--lr (when given) plus --hp; --hp lr=... is refused (two learning rates, only one can win).

    What is left out takes the optimizer's registered default, as ravine.create gives it.
    """
    hp = key_values(args.hp, "--hp")
    if "lr" in hp:
        raise ValueError(f"--hp lr={hp['lr']!r} duplicates --lr: give the learning rate with --lr")
    objects = sorted({"params", "grad_transforms", "optimizer"} & hp.keys())
    if objects:
        raise ValueError(
            f"--hp {objects[0]}=... cannot be given on the command line (it takes Python "
            "objects; use ravine.fit from Python)"
        )
    for key in _bool_flags(args.optimizer) & hp.keys():
        if type(hp[key]) is int and hp[key] in (0, 1):
            hp[key] = bool(hp[key])
    return hp if args.lr is None else {"lr": args.lr, **hp}


def schedule_defaults(name: str, total: int) -> dict[str, Any]:
    """Arguments of schedule ``name`` for a run of ``total`` scheduler steps (see the module
    docstring): every decaying schedule ends at 1% of the initial learning rate."""
    if name == "cosine":
        return {"t_max": total}
    if name == "exponential":  # exp(-T / r) = 0.01
        return {"r": total / math.log(100.0)}
    if name == "inverse_time":  # (1 + T / r) ** -1 = 0.01
        return {"r": total / 99.0}
    if name == "piecewise":
        milestones = sorted({m for m in (total // 2, 3 * total // 4) if m >= 1})
        return {"milestones": tuple(milestones), "factors": (1.0, 0.1, 0.01)[: len(milestones) + 1]}
    if name == "warmup":
        return {"warmup_steps": max(1, round(0.05 * total))}
    return {}  # performance: its own defaults need no run length


def _device(text: str) -> str:
    """--device: a torch device that exists here (checked by fit's own check, before any work)."""
    from ravine.train import _as_device

    try:
        _as_device(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``ravine train`` (one model, one optimizer, one dataset)."""
    from ravine.data import DATASETS
    from ravine.models import MODELS
    from ravine.optim import registry
    from ravine.schedules import SCHEDULES

    p.add_argument("--dataset", default="mnist", choices=sorted(DATASETS), help="offline dataset")
    p.add_argument(
        "--data-dir",
        help="folder with IDX files (MNIST, Fashion-MNIST) or CIFAR-10 (default: the dataset's "
        "own place, see ravine.data)",
    )
    p.add_argument("--model", default="mlp", choices=sorted(MODELS), help="model architecture")
    p.add_argument(
        "--batchnorm",
        choices=("on", "off"),
        help="BatchNorm layers (default: the model's own, on only for resnet18)",
    )
    p.add_argument(
        "--optimizer", default="adam", help="a registered optimizer name (`ravine optimizers`)"
    )
    # Examples read from the registry: the help never disagrees with the defaults.
    examples = ", ".join(f"{n} {registry.get(n).defaults['lr']!r}" for n in LR_EXAMPLES)
    p.add_argument(
        "--lr",
        type=_finite_float(0.0),
        help=f"learning rate (default: the optimizer's registered one, e.g. {examples}; "
        "`ravine optimizers` lists them)",
    )
    p.add_argument(
        "--hp",
        nargs="*",
        default=[],
        metavar="K=V",
        help="more optimizer hyperparameters as Python literals, e.g. betas=(0.9,0.99) eps=1e-8 "
        "amsgrad=False (default: the registered ones)",
    )
    p.add_argument(
        "--batch-size", type=_int_in(0, MAX_BATCH), default=128, help="0 for full-batch GD"
    )
    p.add_argument("--epochs", type=_int_in(1, MAX_EPOCHS), default=5, help="passes over the data")
    p.add_argument(
        "--schedule", choices=sorted(SCHEDULES), help="learning-rate schedule (default: none)"
    )
    p.add_argument(
        "--schedule-arg",
        nargs="*",
        default=[],
        metavar="K=V",
        help="schedule arguments, e.g. r=10 (default: from the run's length, see above)",
    )
    p.add_argument(
        "--schedule-every",
        choices=("epoch", "batch"),
        default="epoch",
        help="step the schedule after every epoch or every batch",
    )
    p.add_argument(
        "--curriculum", choices=STRATEGIES, help="order examples by difficulty (default: shuffle)"
    )
    p.add_argument("--no-shuffle", action="store_true", help="visit examples in index order")
    p.add_argument(
        "--patience",
        type=_int_in(1, MAX_EPOCHS),
        help="early stopping on validation loss after this many epochs without improvement "
        "(default: off)",
    )
    p.add_argument(
        "--min-delta",
        type=_finite_float(0.0),
        default=0.0,
        help="early stopping: the least decrease that counts as an improvement",
    )
    p.add_argument(
        "--checkpoint-dir",
        help="write checkpoint.pt here every --checkpoint-every epochs (default: no checkpoints)",
    )
    p.add_argument(
        "--checkpoint-every",
        type=_int_in(1, MAX_EPOCHS),
        default=1,
        help="epochs between checkpoints",
    )
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint-dir")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start over although --checkpoint-dir holds a checkpoint (it is deleted)",
    )
    p.add_argument(
        "--override-hyperparameters",
        action="store_true",
        help="with --resume: continue with the given --lr/--hp instead of refusing a difference",
    )
    p.add_argument("--seed", type=_int_in(0, MAX_SEED), default=0, help="random seed")
    p.add_argument(
        "--device",
        type=_device,
        help="cpu, cuda or cuda:N (default: cpu, where the model is built)",
    )
    p.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        help="0 quiet, 1 a progress bar, 2 one line per epoch (default: the bar on a terminal, "
        "lines otherwise)",
    )
    p.add_argument("--no-progress", action="store_true", help="the same as --verbose 0")
    p.add_argument("--history", help="write the metrics history here (JSON; default: not saved)")
    p.add_argument(
        "--plot", help="write loss/accuracy curves here (PNG, SVG, PDF...; default: none)"
    )


def run(args: argparse.Namespace) -> int:
    """Train, report test loss/accuracy, optionally save history and curves."""
    from ravine.data import DatasetNotFoundError
    from ravine.optim import NonFiniteGradientError
    from ravine.train import NonFiniteLossError

    try:
        return _run(args)
    # OSError: e.g. a full disk while writing a checkpoint (DatasetNotFoundError is one too)
    except (
        ValueError,
        OSError,
        DatasetNotFoundError,
        NonFiniteLossError,
        NonFiniteGradientError,
    ) as e:
        print(f"ravine train: {e}", file=sys.stderr)
        return 2


def check_outputs(args: argparse.Namespace) -> None:
    """Every output path, before any work: a bad one would lose a finished run."""
    from ravine.paths import check_output_path
    from ravine.train import check_checkpoint_dir

    if args.history:
        check_output_path(args.history, "--history")
    if args.plot:
        check_output_path(args.plot, "--plot")
        suffix = Path(args.plot).suffix.lstrip(".").lower()
        from matplotlib.backend_bases import FigureCanvasBase

        formats = FigureCanvasBase.get_supported_filetypes()
        if suffix not in formats:
            raise ValueError(
                f"--plot={args.plot!r}: the file name must end in one of "
                f"{', '.join('.' + f for f in sorted(formats))} (matplotlib's formats)"
            )
    if args.checkpoint_dir:
        check_checkpoint_dir(args.checkpoint_dir, resume=args.resume, overwrite=args.overwrite)
    elif args.resume or args.overwrite:
        flag = "--resume" if args.resume else "--overwrite"
        raise ValueError(f"{flag} needs --checkpoint-dir")
    if args.override_hyperparameters and not args.resume:
        raise ValueError("--override-hyperparameters applies to --resume only")


def _build(args: argparse.Namespace, splits: Any) -> tuple[Any, Any, Any]:
    """Model, optimizer and schedule, each error naming the flag it comes from."""
    import torch

    from ravine import models, optim, schedules

    torch.manual_seed(args.seed)
    try:
        model = models.create(
            args.model,
            splits.input_shape,
            splits.num_classes,
            batchnorm=None if args.batchnorm is None else args.batchnorm == "on",
        )
    except TypeError as e:
        raise ValueError(f"--model {args.model} with --batchnorm {args.batchnorm}: {e}") from None
    x = splits.train[0][:2]
    try:
        was_training = model.training
        model.eval()  # no BatchNorm statistics moved, no dropout drawn: the RNG stays untouched
        with torch.no_grad():
            model(x)
        model.train(was_training)
    except RuntimeError as e:
        raise ValueError(
            f"--model {args.model} does not take --dataset {args.dataset} inputs of shape "
            f"{tuple(splits.input_shape)}: {str(e).splitlines()[0]}"
        ) from None
    kwargs = optimizer_kwargs(args)
    try:
        opt = optim.create(args.optimizer, model.parameters(), **kwargs)
    except (TypeError, KeyError) as e:
        raise ValueError(f"--optimizer {args.optimizer} --hp: {e}") from None
    sched = None
    if args.schedule:
        given = key_values(args.schedule_arg, "--schedule-arg")
        per_epoch = 1
        if args.schedule_every == "batch":
            n, bs = len(splits.train[0]), args.batch_size or len(splits.train[0])
            per_epoch = math.ceil(n / min(bs, n))
        sargs = {**schedule_defaults(args.schedule, args.epochs * per_epoch), **given}
        try:
            sched = schedules.create(args.schedule, opt, **sargs)
        except TypeError as e:
            raise ValueError(f"--schedule {args.schedule} --schedule-arg: {e}") from None
    return model, opt, sched


def _run(args: argparse.Namespace) -> int:
    from ravine import data
    from ravine.train import EarlyStopping, evaluate, fit

    check_outputs(args)
    early_stopping = None
    if args.patience is not None:
        early_stopping = EarlyStopping(patience=args.patience, min_delta=args.min_delta)
    kwargs: dict[str, Any] = {}
    if args.data_dir:
        kwargs["data_dir"] = args.data_dir
    splits = data.load(args.dataset, **kwargs)
    model, opt, sched = _build(args, splits)
    print(describe_optimizer(args, opt), flush=True)
    has_val = len(splits.val[0]) > 0
    if early_stopping is not None and not has_val:
        raise ValueError(f"--patience needs a validation set, and {args.dataset} has none")
    history = fit(
        model,
        opt,
        splits.train,
        splits.val if has_val else None,
        batch_size=args.batch_size or None,
        epochs=args.epochs,
        scheduler=sched,
        schedule_every=args.schedule_every,
        shuffle=not args.no_shuffle,
        seed=args.seed,
        curriculum=args.curriculum,
        early_stopping=early_stopping,
        checkpoint_dir=args.checkpoint_dir,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        overwrite=args.overwrite,
        override_hyperparameters=args.override_hyperparameters,
        device=args.device,
        verbose=0 if args.no_progress else ("auto" if args.verbose is None else args.verbose),
    )
    test_loss, test_acc = evaluate(model, splits.test)
    acc = "" if test_acc is None else f", test accuracy {test_acc:.4f}"
    print(
        f"{args.model} on {args.dataset} with {args.optimizer}: {len(history.epoch)} epochs, "
        f"{history.steps} steps ({history.stop_reason}); test loss {test_loss:.4f}{acc}"
    )
    if args.checkpoint_dir:
        from ravine.train import CHECKPOINT_NAME

        print(f"checkpoint: {Path(args.checkpoint_dir) / CHECKPOINT_NAME}")
    if args.history:
        history.save(args.history)
        print(f"history: {args.history}")
    if args.plot:
        from ravine.viz.history import history_figure

        history_figure(history, args.plot)
        print(f"plot: {args.plot}")
    return 0


def describe_optimizer(args: argparse.Namespace, opt: Any) -> str:
    """``adadelta lr=1.0 (registered default)``, then the --hp given: what the run really uses."""
    group = opt.param_groups[0]
    parts = [args.optimizer]
    if "lr" in group:
        lr = group["lr"]
        parts.append(f"lr={lr!r} " + ("(registered default)" if args.lr is None else "(--lr)"))
    given = key_values(args.hp, "--hp")
    if given:
        parts.append(", ".join(f"{k}={group.get(k, v)!r}" for k, v in given.items()))
    return " ".join(parts)
