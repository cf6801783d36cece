"""`ravine bench`: arguments checked before any work, a tiny sweep, a clean stop at the limit."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from ravine.bench import open_store
from ravine.cli import main
from ravine.cli.bench import parse_duration

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["bench", "--problems", "bench_tiny:linear", "--optimizers", "sgd", "--trials", "1",
        "--seeds", "1", "--epochs", "2", "--batch-size", "50", "--threads", "1",
        "--no-progress", "--device", "cpu"]  # fmt: skip


def test_list_shows_problems_and_spaces(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--list"]) == 0
    out = capsys.readouterr().out
    assert "mnist1d-cnn" in out and "cifar10-resnet18" in out and "adam" in out and "eps in" in out


def test_a_tiny_sweep_runs_to_the_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "r.sqlite"
    assert main([*TINY, "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert "0 failed, 0 left" in out
    # the summary: one line per (problem, optimizer), default and tuned test accuracy
    line = next(x for x in out.splitlines() if x.startswith("bench_tiny:linear"))
    assert line.split()[1] == "sgd" and line.count("+-") == 2
    with open_store(store) as s:
        runs = s.runs()
    assert {r["status"] for r in runs} == {"finished"} and len(runs) in (3, 4)


@pytest.mark.timeout(120)
def test_time_limit_stops_cleanly_and_the_same_command_continues(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "r.sqlite"
    args = [*TINY[:2], "bench_tiny:slow_mlp", *TINY[3:], "--store", str(store)]
    args[args.index("--epochs") + 1] = "8"
    args[args.index("--trials") + 1] = "0"
    assert main([*args, "--time-limit", "0.5s"]) == 0
    captured = capsys.readouterr()
    assert "stopped at the time limit" in captured.err
    with open_store(store) as s:
        stopped = s.runs()
    assert {r["status"] for r in stopped} <= {"pending"}  # released, not lost
    assert any(r["epochs_done"] >= 1 for r in stopped)  # the work done so far is kept
    assert main(args) == 0
    with open_store(store) as s:
        runs = s.runs()
        epochs = s.epochs()
    assert {r["status"] for r in runs} == {"finished"}
    assert len(epochs) == 8 * len(runs)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["bench"], "--problems is required"),
        (["bench", "--problems", "mnist-transformer"], "problem must be one of"),
        (["bench", "--problems", "digits-mlp", "--optimizers", "lbfgs"], "has no search space"),
        (["bench", "--problems", "cifar10-resnet18"], "needs --data-dir"),
        (["bench", "--quick", "--store", "mysql://x"], "store must be a SQLite file path or"),
        (["bench", "--quick", "--device", "tpu"], "device must be"),
    ],
)
def test_bad_choices_exit_2_with_the_reason(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "flag, value",
    [("--trials", "-1"), ("--seeds", "0"), ("--workers", "0"), ("--time-limit", "soon"),
     ("--time-limit", "0"), ("--checkpoint-every", "-1"), ("--checkpoint-every", "inf")],
)  # fmt: skip
def test_bad_numbers_are_refused_by_the_parser(flag: str, value: str) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--quick", flag, value])
    assert exc.value.code == 2


@pytest.mark.parametrize(
    "text, seconds",
    [("90", 90.0), ("90s", 90.0), ("20m", 1200.0), ("1.5h", 5400.0), ("2d", 172800.0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
    with pytest.raises(argparse.ArgumentTypeError, match="duration"):
        parse_duration(text + "x")


def test_a_zero_duration_only_where_it_means_something() -> None:
    assert parse_duration("0", zero=True) == 0.0  # --checkpoint-every 0: every epoch
    with pytest.raises(argparse.ArgumentTypeError, match="duration > 0"):
        parse_duration("0")
