"""`ravine parallel`: simulated runs and --compare in-process, a real run, torchrun standalone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ravine.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = ["--steps", "60"]


@pytest.mark.timeout(120)
def test_simulated_run_writes_its_report(tmp_path, capsys):
    code = main(["parallel", "--algo", "downpour", "--simulate", "--workers", "3", *SMALL,
                 "--out", str(tmp_path)])  # fmt: skip
    assert code == 0
    report = json.loads((tmp_path / "parallel-downpour.json").read_text())
    assert report["updates"] == 180 and report["final_loss"] < 0.6
    assert max(int(k) for k in report["staleness"]) > 0
    assert "staleness histogram" in capsys.readouterr().out


@pytest.mark.timeout(120)
def test_compare_writes_plot_table_and_json(tmp_path):
    code = main(["parallel", "--compare", "--simulate", "--algos", "downpour,easgd,allreduce",
                 *SMALL, "--out", str(tmp_path)])  # fmt: skip
    assert code == 0
    table = (tmp_path / "compare.md").read_text()
    assert all(f"| {a} |" in table for a in ("downpour", "easgd", "allreduce"))
    assert [r["config"]["algo"] for r in json.loads((tmp_path / "compare.json").read_text())] == [
        "downpour",
        "easgd",
        "allreduce",
    ]
    assert (tmp_path / "compare.png").stat().st_size > 10_000


@pytest.mark.timeout(180)
def test_a_real_run_from_the_command_line(tmp_path, capsys):
    code = main(["parallel", "--algo", "allreduce", "--workers", "2", *SMALL,
                 "--out", str(tmp_path)])  # fmt: skip
    assert code == 0
    report = json.loads((tmp_path / "parallel-allreduce.json").read_text())
    assert report["updates"] == 120 and report["bytes"]["allreduce:payload"] > 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--workers", "0"], "Invalid workers: 0"),
        (["--compare", "--algos", "downpour,sgd"], "Invalid --algos entry: 'sgd'"),
        (["--server-optimizer", "adamm"], "adam"),
        (["--hp", "eps"], "--hp"),
        (["--tau", "-1"], "Invalid tau: -1"),
        (["--hang-timeout", "0"], "Invalid --hang-timeout: 0.0"),
        (["--port", "70000"], "Invalid --port: 70000"),
    ],
)
def test_bad_arguments_fail_before_any_work_naming_the_value(tmp_path, capsys, argv, message):
    assert main(["parallel", *argv, "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_torchrun_standalone_runs_the_same_command(tmp_path):
    ravine = Path(sys.executable).with_name("ravine")
    torchrun = Path(sys.executable).with_name("torchrun")
    if not (ravine.exists() and torchrun.exists()):
        pytest.fail(f"the ravine and torchrun entry points must sit beside {sys.executable}")
    command = [str(torchrun), "--standalone", "--nproc-per-node", "4", "--no-python", str(ravine),
               "parallel", "--algo", "downpour", "--workers", "2", "--shards", "2", *SMALL,
               "--out", str(tmp_path)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "parallel-downpour.json").read_text())
    assert report["updates"] == 120 and report["extra"]["shard_versions"] == [120, 120]
    assert report["final_loss"] < 0.6
    # a wrong world size is refused with the sizes it expected
    command[3] = "3"
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode != 0
    assert "Invalid WORLD_SIZE: 3 (expected shards + workers = 4" in done.stderr
