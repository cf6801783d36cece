"""`ravine train` as a hostile user would run it: every bad input is a clear error with exit 2."""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ravine import schedules
from ravine.cli import SUBCOMMANDS, build_parser, main
from ravine.cli.train import _build, describe_optimizer, key_values, parse_value
from ravine.optim import registry
from ravine.train import CHECKPOINT_NAME, History, load_checkpoint

BASE = ["train", "--dataset", "digits", "--model", "logreg", "--epochs", "1", "--no-progress"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _ravine(*argv: str) -> int:
    """``ravine ARGV`` in process: argparse's own errors exit with 2 as well."""
    try:
        return main([*BASE, *argv])
    except SystemExit as e:
        return int(e.code or 0)


def test_help_does_not_import_matplotlib():
    code = (
        "import sys\n"
        "from ravine.cli import main\n"
        "for argv in (['--help'], ['train', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('matplotlib' in sys.modules, 'ravine.viz' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert all(name in out for name, _, _ in SUBCOMMANDS)  # the top-level help lists them
    assert "--override-hyperparameters" in out and "--overwrite" in out
    assert out.strip().splitlines()[-1] == "False False"


# ------------------------------------------------------------------ --hp and --schedule-arg


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("no", False),
        ("No", False),
        ("FALSE", False),
        ("yes", True),
        ("True", True),
        ("(0.9,0.99)", (0.9, 0.99)),
        ("[1, 2]", [1, 2]),
        ("1e-3", 1e-3),
        ("3", 3),
        ("None", None),
        ("loop", "loop"),
        ("__import__('os').system('x')", "__import__('os').system('x')"),  # a string, never run
    ],
    ids=lambda v: repr(v),
)
def test_hyperparameter_values_are_literals_or_boolean_words(raw, value):
    got = parse_value(raw)
    assert got == value and type(got) is type(value)


def test_key_values_refuses_repeats_and_non_identifiers():
    assert key_values(["maximize=no", "betas=(0.9,0.99)"], "--hp") == {
        "maximize": False,
        "betas": (0.9, 0.99),
    }
    with pytest.raises(ValueError, match="--hp gives 'eps' twice"):
        key_values(["eps=1e-8", "eps=1e-6"], "--hp")
    with pytest.raises(ValueError, match="--hp must look like key=value"):
        key_values(["a b=1"], "--hp")


@pytest.mark.parametrize(
    ("hp", "key", "expected"),
    [
        ("maximize=no", "maximize", False),
        ("amsgrad=yes", "amsgrad", True),
        ("amsgrad=1", "amsgrad", True),  # 1/0 are booleans for a flag
        ("amsgrad=False", "amsgrad", False),  # the issue: this used to turn AMSGrad on
        ("amsgrad=True", "amsgrad", True),
        ("betas=(0.8,0.99)", "betas", (0.8, 0.99)),
    ],
    ids=["maximize-no", "amsgrad-yes", "amsgrad-1", "amsgrad-False", "amsgrad-True", "betas-tuple"],
)
def test_hp_reaches_the_optimizer_with_its_type(tmp_path, hp, key, expected):
    ck = tmp_path / "ck"
    assert _ravine("--optimizer", "adam", "--hp", hp, "--checkpoint-dir", str(ck)) == 0
    group = load_checkpoint(ck / CHECKPOINT_NAME)["optimizer"]["param_groups"][0]
    assert group[key] == expected and type(group[key]) is type(expected)


# ------------------------------------------------------------------------- hostile input


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--hp", "lr=0.1"], "--hp lr=0.1 duplicates --lr"),
        (["--hp", "eps=1", "eps=2"], "--hp gives 'eps' twice"),
        (["--hp", "betas"], "--hp must look like key=value"),
        (["--hp", "betas=abc"], "betas"),
        (
            ["--hp", "grad_transforms=[1]"],
            "--hp grad_transforms=... cannot be given on the command",
        ),
        (["--epochs", "2**63"], "argument --epochs: expected an integer in [1, 1000000]"),
        (["--epochs", str(2**63)], "argument --epochs: expected an integer in [1, 1000000]"),
        (["--batch-size", "-1"], "argument --batch-size: expected an integer in [0, "),
        (["--seed", "-1"], "argument --seed: expected an integer in [0, "),
        (["--checkpoint-every", "0"], "argument --checkpoint-every"),
        (["--patience", "0"], "argument --patience"),
        (["--lr", "nan"], "argument --lr: expected a finite number"),
        (["--lr", "1e999"], "argument --lr: expected a finite number"),
        (["--min-delta", "inf"], "argument --min-delta: expected a finite number"),
        (["--schedule", "exponential", "--schedule-arg", "r=-1"], "r must be"),
        (["--schedule", "warmup", "--schedule-arg", "warmup_steps=0.5"], "warmup_steps must be"),
        (["--schedule", "cosine", "--schedule-arg", "t=3"], "schedule 'cosine' does not take t;"),
        (
            ["--schedule", "piecewise", "--schedule-arg", "milestones=5", "factors=(1,1)"],
            "milestones must be a list or tuple",
        ),
        (["--model", "cnn1d"], "--model cnn1d does not take --dataset digits inputs"),
        (["--resume"], "--resume needs --checkpoint-dir"),
        (["--overwrite"], "--overwrite needs --checkpoint-dir"),
        (["--override-hyperparameters"], "applies to --resume only"),
        (["--plot", "curves.txt"], "--plot='curves.txt': the file name must end in one of"),
        (["--optimizer", "nosuch"], "nosuch"),
        (["--verbose", "3"], "argument --verbose: invalid choice: 3"),
        (["--device", "gpu"], "argument --device: device must be a torch device such as 'cpu'"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_bad_input_is_a_clear_error_with_exit_2(capsys, argv, message):
    assert _ravine(*argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def _file(tmp_path: Path) -> Path:
    (tmp_path / "afile").write_text("x")
    return tmp_path / "afile"


@pytest.mark.parametrize(
    ("flag", "make", "message"),
    [
        ("--history", lambda t: _file(t) / "h.json", "afile' is not a directory"),
        ("--plot", lambda t: _file(t) / "p.png", "afile' is not a directory"),
        ("--history", lambda t: t, "is a directory, expected a file"),
        ("--checkpoint-dir", _file, "checkpoint_dir=" + "'{}' is not a directory"),
        ("--checkpoint-dir", lambda t: _file(t) / "ck", "afile' is not a directory"),
    ],
    ids=[
        "history-under-a-file",
        "plot-under-a-file",
        "history-is-a-folder",
        "ckpt-is-a-file",
        "ckpt-under-a-file",
    ],
)
def test_output_paths_are_checked_before_any_work(tmp_path, capsys, flag, make, message):
    path = make(tmp_path)
    assert _ravine("--epochs", "3", flag, str(path)) == 2
    captured = capsys.readouterr()
    assert message.format(path) in captured.err
    assert captured.out == ""  # nothing trained, nothing reported


# ------------------------------------------------------------------------- schedules


@pytest.mark.parametrize(("every", "per_epoch"), [("epoch", 1), ("batch", None)])
def test_cosine_without_t_max_spans_the_run(tmp_path, every, per_epoch):
    from ravine.data import digits

    if per_epoch is None:
        per_epoch = math.ceil(len(digits().train[0]) / 128)
    argv = ["--epochs", "3", "--lr", "0.1", "--schedule", "cosine", "--schedule-every", every]
    assert _ravine(*argv, "--history", str(tmp_path / "h.json")) == 0
    t_max = 3 * per_epoch
    expected = [0.05 * (1 + math.cos(math.pi * e * per_epoch / t_max)) for e in range(3)]
    assert History.load(tmp_path / "h.json").lr == pytest.approx(expected, rel=1e-9)


def test_schedules_create_names_missing_and_unknown_arguments():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    with pytest.raises(ValueError, match="schedule 'warmup' needs warmup_steps"):
        schedules.create("warmup", opt)
    with pytest.raises(ValueError, match="schedule 'exponential' does not take gamma; it takes r"):
        schedules.create("exponential", opt, r=2, gamma=0.5)


# ------------------------------------------------------------ checkpoints from the command line


def test_resume_flags_refuse_what_cannot_be_honoured(tmp_path, capsys):
    ck = ["--checkpoint-dir", str(tmp_path / "ck")]
    assert _ravine(*ck, "--lr", "0.01") == 0
    capsys.readouterr()
    assert _ravine(*ck, "--lr", "0.01") == 2
    assert "pass resume=True to continue or overwrite=True" in capsys.readouterr().err
    assert _ravine(*ck, "--epochs", "2", "--resume", "--lr", "0.5") == 2
    err = capsys.readouterr().err
    assert "group 0 lr: 0.01 in the checkpoint, 0.5 given" in err
    assert _ravine(*ck, "--epochs", "2", "--resume", "--optimizer", "adamw", "--lr", "0.01") == 2
    assert "AdamW" in capsys.readouterr().err
    argv = [*ck, "--epochs", "2", "--resume", "--lr", "0.5", "--override-hyperparameters"]
    assert _ravine(*argv, "--history", str(tmp_path / "h.json")) == 0
    assert History.load(tmp_path / "h.json").lr == [0.01, 0.5]
    assert _ravine(*ck, "--overwrite") == 0
    assert load_checkpoint(tmp_path / "ck" / CHECKPOINT_NAME)["epoch"] == 1


# ------------------------------------------------- registered defaults, schedules, devices


def _parse(*argv: str) -> argparse.Namespace:
    return build_parser("train").parse_args(["train", *BASE[1:], *argv])


@pytest.fixture(scope="module")
def digits_splits():
    from ravine.data import digits

    return digits()


# The four (their registered lr is not 1e-3) and ones whose lr is or is not Adam's.
@pytest.mark.parametrize("name", ["adadelta", "lbfgs", "rprop", "adagrad", "adamax", "adam", "sgd"])
def test_without_lr_the_optimizer_gets_its_registered_default(digits_splits, name):
    """The issue: --lr defaulted to 1e-3 and replaced each optimizer's own (Adadelta's 1.0)."""
    args = _parse("--optimizer", name)
    assert args.lr is None
    _, opt, _ = _build(args, digits_splits)
    expected = registry.get(name).defaults["lr"]
    assert opt.param_groups[0]["lr"] == expected
    assert describe_optimizer(args, opt) == f"{name} lr={expected!r} (registered default)"


def test_help_quotes_registered_learning_rates_from_the_registry():
    (sub,) = [a for a in build_parser("train")._actions if a.dest == "command"]
    text = " ".join(sub.choices["train"].format_help().split())
    for name in ("adam", "adadelta", "lbfgs"):
        assert f"{name} {registry.get(name).defaults['lr']!r}" in text


def test_lr_and_hp_given_win_and_are_reported(digits_splits):
    args = _parse("--optimizer", "adam", "--lr", "0.05", "--hp", "betas=(0.8,0.9)")
    _, opt, _ = _build(args, digits_splits)
    assert opt.param_groups[0]["lr"] == 0.05 and opt.param_groups[0]["betas"] == (0.8, 0.9)
    assert describe_optimizer(args, opt) == "adam lr=0.05 (--lr) betas=(0.8, 0.9)"


# (schedule, lr after the run's T steps as a fraction of the initial lr)
SCHEDULE_ENDS = [
    ("cosine", 0.0),
    ("exponential", 0.01),
    ("inverse_time", 0.01),
    ("piecewise", 0.01),
    ("warmup", 1.0),
    ("performance", 1.0),  # no validation loss given here: never stepped, stays put
]


def test_the_table_covers_every_schedule():
    assert sorted(name for name, _ in SCHEDULE_ENDS) == sorted(schedules.SCHEDULES)


@pytest.mark.parametrize("every", ["epoch", "batch"])
@pytest.mark.parametrize(("name", "end"), SCHEDULE_ENDS)
def test_every_schedule_without_arguments_spans_the_run(digits_splits, every, name, end):
    args = _parse(
        "--schedule", name, "--schedule-every", every, "--epochs", "8", "--batch-size", "128"
    )
    total = 8 * (math.ceil(len(digits_splits.train[0]) / 128) if every == "batch" else 1)
    _, opt, sched = _build(args, digits_splits)
    lr0 = registry.get("adam").defaults["lr"]
    if name != "performance":
        for _ in range(total):
            opt.step()
            sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(end * lr0, abs=1e-12)


def test_schedule_arguments_given_replace_the_run_defaults(digits_splits):
    args = _parse("--schedule", "piecewise", "--schedule-arg", "milestones=(1,)", "factors=(1,0.5)")
    _, opt, sched = _build(args, digits_splits)
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0005)


def test_device_cpu_and_verbose_lines_and_written_paths_are_printed(tmp_path, capsys):
    argv = ["--device", "cpu", "--verbose", "2", "--epochs", "2", "--optimizer", "adadelta"]
    files = ["--history", str(tmp_path / "h.json"), "--plot", str(tmp_path / "p.png")]
    ck = ["--checkpoint-dir", str(tmp_path / "ck")]
    assert main(["train", *BASE[1:-1], *argv, *files, *ck]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "adadelta lr=1.0 (registered default)"
    assert [line.split(" - ")[0] for line in out[1:3]] == ["epoch 1/2", "epoch 2/2"]
    assert out[-3:] == [
        f"checkpoint: {tmp_path / 'ck' / CHECKPOINT_NAME}",
        f"history: {tmp_path / 'h.json'}",
        f"plot: {tmp_path / 'p.png'}",
    ]
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is here: nothing to refuse")
def test_device_cuda_without_cuda_is_refused_before_any_work(capsys):
    assert _ravine("--device", "cuda") == 2
    captured = capsys.readouterr()
    assert "argument --device: device='cuda': CUDA is not available" in captured.err
    assert captured.out == ""


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_cuda_trains_there(capsys):
    assert _ravine("--device", "cuda", "--optimizer", "adadelta", "--epochs", "2") == 0
    assert "test accuracy" in capsys.readouterr().out
