"""`ravine train` as a hostile user would run it: every bad input is a clear error with exit 2."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ravine import schedules
from ravine.cli import main
from ravine.cli.train import key_values, parse_value
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
    assert "{demo,viz,train}" in out  # the top-level help lists every subcommand
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
        ("betas=(0.8,0.99)", "betas", (0.8, 0.99)),
    ],
    ids=["maximize-no", "amsgrad-yes", "amsgrad-1", "betas-tuple"],
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
        (["--schedule", "exponential"], "schedule 'exponential' needs r"),
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
