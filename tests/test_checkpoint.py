"""fit's checkpoints: integrity (checksum, corrupt files named), resume checks, no overwrite."""

from __future__ import annotations

import dataclasses
import io
import os
import random
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import ravine
from ravine import schedules
from ravine.train import (
    CHECKPOINT_NAME,
    CorruptCheckpointError,
    RunState,
    fit,
    load_checkpoint,
    save_checkpoint,
)

N, D, C = 20, 4, 3


pytestmark = pytest.mark.usefixtures("one_thread")


def _data(n: int = N, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, D, generator=g), torch.randint(0, C, (n,), generator=g)


def _model(hidden: int = 6, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(D, hidden), nn.Tanh(), nn.Linear(hidden, C))


def _first_run(tmp_path: Path, make_opt=lambda p: torch.optim.Adam(p, lr=0.05), **kw) -> Path:
    model = _model()
    fit(model, make_opt(model.parameters()), _data(), batch_size=5, epochs=2,
        checkpoint_dir=tmp_path, **kw)  # fmt: skip
    return tmp_path / CHECKPOINT_NAME


def _snapshot(model: nn.Module, opt: torch.optim.Optimizer) -> tuple[list, dict]:
    return [p.detach().clone() for p in model.parameters()], {
        k: {n: t.clone() for n, t in v.items()} for k, v in opt.state.items()
    }


def _unchanged(model: nn.Module, opt: torch.optim.Optimizer, before: tuple[list, dict]) -> bool:
    params, state = before
    same_params = all(torch.equal(p, q) for p, q in zip(model.parameters(), params))
    same_state = opt.state.keys() == state.keys() and all(
        torch.equal(opt.state[k][n], t) for k, v in state.items() for n, t in v.items()
    )
    return same_params and same_state


# ------------------------------------------------------------------ defect 8: integrity


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _garbage(path: Path) -> None:
    path.write_bytes(os.urandom(300))


def _flip_a_bit(path: Path) -> None:
    """One bit of a stored tensor's bytes: torch itself loads this without a word."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(data[data.index(b"PK") :])), "r") as z:
        name = next(n for n in z.namelist() if "/data/" in n and z.getinfo(n).file_size >= 16)
        payload = z.read(name)
    at = data.index(payload) + 3
    data[at] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (_truncate, "corrupt or truncated"),
        (_empty, "is empty"),
        (_garbage, "corrupt or not a checkpoint"),
        (_flip_a_bit, "do not match the SHA-256"),
    ],
    ids=["truncated", "empty", "garbage", "one-flipped-bit"],
)
def test_a_damaged_checkpoint_is_named_and_nothing_is_loaded(tmp_path, damage, match):
    path = _first_run(tmp_path)
    damage(path)
    model = _model(seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    before = _snapshot(model, opt)
    with pytest.raises(ValueError, match=match) as info:
        fit(model, opt, _data(), batch_size=5, epochs=3, checkpoint_dir=tmp_path, resume=True)
    assert str(path) in str(info.value)
    assert _unchanged(model, opt, before)


class _Boom:
    def __reduce__(self):
        return (Path.touch, (Path(os.environ["RAVINE_TEST_MARKER"]),))


def test_a_checkpoint_with_foreign_objects_is_refused_without_running_them(tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    monkeypatch.setenv("RAVINE_TEST_MARKER", str(marker))
    path = tmp_path / CHECKPOINT_NAME
    torch.save({"format": 1, "model": _Boom()}, path)  # a format-1 file: no checksum
    with pytest.raises(CorruptCheckpointError, match="objects other than tensors") as info:
        load_checkpoint(path)
    assert "weights_only=False" not in str(info.value)
    assert not marker.exists()


def test_format_1_checkpoints_still_load(tmp_path):
    path = tmp_path / CHECKPOINT_NAME
    torch.save({"format": 1, "epoch": 3, "t": torch.arange(3)}, path)
    ckpt = load_checkpoint(path)
    assert ckpt["epoch"] == 3 and torch.equal(ckpt["t"], torch.arange(3))


def test_save_and_load_round_trip_and_unknown_formats(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"format": 2, "x": torch.ones(2)})
    assert torch.equal(load_checkpoint(path)["x"], torch.ones(2))
    save_checkpoint(path, {"format": 99})
    with pytest.raises(CorruptCheckpointError, match="format 99"):
        load_checkpoint(path)


def test_run_state_fields_all_go_through_the_checkpoint(tmp_path):
    """to_checkpoint/from_checkpoint are a pair: a new field that one forgets fails here."""
    path = _first_run(tmp_path)
    ckpt = load_checkpoint(path)
    saved = {f.name for f in dataclasses.fields(RunState)} - {"last_checkpoint", "checkpoint_clock"}
    assert saved <= ckpt.keys()


# ------------------------------------------------------ defect 3: another model or optimizer


def _other_model_bigger():
    return _model(hidden=7)


def _other_model_renamed():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(D, 6), nn.Tanh(), nn.Sequential(nn.Linear(6, C)))


def _other_model_float64():
    return _model().double()


@pytest.mark.parametrize(
    ("make_model", "match"),
    [
        (_other_model_bigger, r"'0.weight' has shape \(6, 4\) there, \(7, 4\) here"),
        (_other_model_renamed, "missing '2.0.weight'"),
        (_other_model_float64, "has dtype torch.float32 there, torch.float64 here"),
    ],
    ids=["other-shape", "other-keys", "other-dtype"],
)
def test_resume_with_another_model_fails_before_anything_changes(tmp_path, make_model, match):
    _first_run(tmp_path)
    model = make_model()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    before = _snapshot(model, opt)
    x, y = _data()
    with pytest.raises(ValueError, match=match) as info:
        fit(model, opt, (x.to(next(model.parameters()).dtype), y), batch_size=5, epochs=3,
            checkpoint_dir=tmp_path, resume=True)  # fmt: skip
    assert "holds another model" in str(info.value)
    assert _unchanged(model, opt, before)


def test_resume_with_another_optimizer_class_fails_before_the_model_is_touched(tmp_path):
    _first_run(tmp_path, lambda p: ravine.Adam(p, lr=0.05))
    model = _model(seed=1)
    opt = ravine.AdamW(model.parameters(), lr=0.05)
    before = _snapshot(model, opt)
    with pytest.raises(ValueError, match=r"ravine\.optim\.adam\.Adam, got .*AdamW"):
        fit(model, opt, _data(), batch_size=5, epochs=3, checkpoint_dir=tmp_path, resume=True)
    assert _unchanged(model, opt, before)


def test_resume_with_other_parameter_groups_fails_before_the_model_is_touched(tmp_path):
    _first_run(tmp_path)
    model = _model(seed=1)
    layers = list(model.parameters())
    opt = torch.optim.Adam([{"params": layers[:2]}, {"params": layers[2:]}], lr=0.05)
    before = _snapshot(model, opt)
    with pytest.raises(ValueError, match=r"groups of sizes \[4\], got \[2, 2\]"):
        fit(model, opt, _data(), batch_size=5, epochs=3, checkpoint_dir=tmp_path, resume=True)
    assert _unchanged(model, opt, before)


@pytest.mark.parametrize(
    ("tamper", "match"),
    [
        (lambda o: o["state"][0].update(m=torch.zeros(1)), r"shape"),
        (lambda o: o["param_groups"][0].update(lr=-5.0), r"lr: -5\.0"),
        (lambda o: o["state"][0].update(exp_avg=o["state"][0].pop("m")), r"'exp_avg'"),
    ],
    ids=["broadcastable-state-shape", "negative-lr", "torch-state-names"],
)
def test_resume_with_an_invalid_optimizer_state_fails_before_anything_changes(
    tmp_path, tamper, match
):
    path = _first_run(tmp_path, lambda p: ravine.Adam(p, lr=0.05))
    ckpt = load_checkpoint(path)
    tamper(ckpt["optimizer"])
    save_checkpoint(path, ckpt)
    model = _model(seed=1)
    opt = ravine.Adam(model.parameters(), lr=0.05)
    before = _snapshot(model, opt)
    with pytest.raises(ValueError, match=match) as info:
        fit(model, opt, _data(), batch_size=5, epochs=3, checkpoint_dir=tmp_path, resume=True)
    assert str(path) in str(info.value) and "nothing was loaded" in str(info.value)
    assert _unchanged(model, opt, before)


# ------------------------------------------------------------- defect 9: other hyperparameters


@pytest.mark.parametrize(
    ("make_opt", "match"),
    [
        (lambda p: torch.optim.Adam(p, lr=0.5), r"group 0 lr: 0\.05 in the checkpoint, 0\.5 given"),
        (
            lambda p: torch.optim.Adam(p, lr=0.05, betas=(0.8, 0.9)),
            r"betas: \(0\.9, 0\.999\) in the checkpoint, \(0\.8, 0\.9\) given",
        ),
        (lambda p: torch.optim.AdamW(p, lr=0.05), r"torch\.optim\.adam\.Adam, got .*AdamW"),
    ],
    ids=["lr", "betas", "adam-to-adamw"],
)
def test_resume_names_hyperparameters_that_differ(tmp_path, make_opt, match):
    _first_run(tmp_path)
    model = _model(seed=1)
    opt = make_opt(model.parameters())
    before = _snapshot(model, opt)
    with pytest.raises(ValueError, match=match):
        fit(model, opt, _data(), batch_size=5, epochs=3, checkpoint_dir=tmp_path, resume=True)
    assert _unchanged(model, opt, before)


def test_override_hyperparameters_continues_with_the_given_ones(tmp_path):
    _first_run(tmp_path)
    model = _model(seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=0.5)
    h = fit(model, opt, _data(), batch_size=5, epochs=3, checkpoint_dir=tmp_path, resume=True,
            override_hyperparameters=True)  # fmt: skip
    assert h.lr == [0.05, 0.05, 0.5] and opt.param_groups[0]["lr"] == 0.5
    # the checkpoint now records the new values: the next resume with them needs no override
    model = _model(seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=0.5)
    h = fit(model, opt, _data(), batch_size=5, epochs=4, checkpoint_dir=tmp_path, resume=True)
    assert h.lr == [0.05, 0.05, 0.5, 0.5]


def test_override_cannot_change_the_lr_of_a_scheduled_run(tmp_path):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    fit(model, opt, _data(), batch_size=5, epochs=2, checkpoint_dir=tmp_path,
        scheduler=schedules.exponential(opt, r=4.0))  # fmt: skip
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    with pytest.raises(ValueError, match="cannot change the learning rate of a run with a sched"):
        fit(model, opt, _data(), batch_size=5, epochs=3, checkpoint_dir=tmp_path, resume=True,
            scheduler=schedules.exponential(opt, r=4.0), override_hyperparameters=True)  # fmt: skip


def test_resume_without_the_checkpoints_scheduler_is_refused(tmp_path):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    fit(model, opt, _data(), batch_size=5, epochs=2, checkpoint_dir=tmp_path,
        scheduler=schedules.exponential(opt, r=4.0))  # fmt: skip
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"written with a scheduler \(.*ExponentialLR\), but none"):
        fit(model, opt, _data(), batch_size=5, epochs=3, checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(ValueError, match=r"scheduler .*ExponentialLR, got .*CosineAnnealingLR"):
        fit(model, opt, _data(), batch_size=5, epochs=3, checkpoint_dir=tmp_path, resume=True,
            scheduler=schedules.cosine(opt, t_max=3))  # fmt: skip


@pytest.mark.parametrize(
    "make_opt",
    [
        lambda p: ravine.create("adam", p, lr=0.05),
        lambda p: ravine.create("lookahead", p, lr=0.05),
        lambda p: torch.optim.LBFGS(p, lr=0.5, max_iter=3),
    ],
    ids=["ravine-adam", "ravine-lookahead", "torch-lbfgs"],
)
def test_resume_passes_the_checks_and_is_bit_identical(tmp_path, make_opt):
    model = _model()
    fit(model, make_opt(model.parameters()), _data(), batch_size=5, epochs=3)
    reference = [p.detach().clone() for p in model.parameters()]
    _first_run(tmp_path, make_opt)
    model = _model(seed=1)
    fit(model, make_opt(model.parameters()), _data(), batch_size=5, epochs=3,
        checkpoint_dir=tmp_path, resume=True)  # fmt: skip
    for p, q in zip(model.parameters(), reference):
        assert torch.equal(p, q)


def _rng_states() -> tuple:
    return random.getstate(), np.random.get_state(), torch.get_rng_state()


def _same_rng_states(a: tuple, b: tuple) -> bool:
    (py_a, np_a, t_a), (py_b, np_b, t_b) = a, b
    same_np = all(
        np.array_equal(u, v) if isinstance(u, np.ndarray) else u == v for u, v in zip(np_a, np_b)
    )
    return py_a == py_b and same_np and torch.equal(t_a, t_b)


@pytest.mark.parametrize("python_form", ["tensor", "tuple"], ids=["this-format", "older-files"])
def test_resume_restores_the_global_rngs_from_both_forms_of_python_state(tmp_path, python_form):
    """The Python RNG state is saved as an int64 tensor; files that hold it as the tuple of ints
    random.getstate() returns (written before) restore the same state."""
    path = _first_run(tmp_path)
    saved = _rng_states()  # nothing draws between the last checkpoint and fit's return
    ckpt = load_checkpoint(path)
    assert isinstance(ckpt["rng"]["python"][1], torch.Tensor)
    if python_form == "tuple":
        ckpt["rng"]["python"] = random.getstate()
        save_checkpoint(path, ckpt)
    random.seed(123), np.random.seed(123), torch.manual_seed(123)
    assert not _same_rng_states(_rng_states(), saved)
    model = _model()
    fit(model, torch.optim.Adam(model.parameters(), lr=0.05), _data(), batch_size=5, epochs=2,
        checkpoint_dir=tmp_path, resume=True)  # fmt: skip
    assert _same_rng_states(_rng_states(), saved)


# ------------------------------------------------------------------ defect 4: no silent overwrite


def test_a_second_run_without_resume_does_not_replace_the_checkpoint(tmp_path):
    path = _first_run(tmp_path)
    before = path.read_bytes()
    model = _model(seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    with pytest.raises(ValueError, match="pass resume=True to continue or overwrite=True") as info:
        fit(model, opt, _data(), batch_size=5, epochs=1, checkpoint_dir=tmp_path)
    assert str(path) in str(info.value)
    assert path.read_bytes() == before

    h = fit(model, opt, _data(), batch_size=5, epochs=1, checkpoint_dir=tmp_path, overwrite=True)
    assert h.epoch == [1] and load_checkpoint(path)["epoch"] == 1
    with pytest.raises(ValueError, match="exclude each other"):
        fit(model, opt, _data(), batch_size=5, epochs=1, checkpoint_dir=tmp_path, overwrite=True,
            resume=True)  # fmt: skip


# ------------------------------------------------------------ defect 7: checkpoint_dir, early


def _a_file(tmp_path: Path) -> Path:
    (tmp_path / "afile").write_text("x")
    return tmp_path / "afile"


def _under_a_file(tmp_path: Path) -> Path:
    (tmp_path / "afile").write_text("x")
    return tmp_path / "afile" / "ck"


def _checkpoint_is_a_folder(tmp_path: Path) -> Path:
    (tmp_path / "ck" / CHECKPOINT_NAME).mkdir(parents=True)
    return tmp_path / "ck"


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (_a_file, "checkpoint_dir=.* is not a directory"),
        (_under_a_file, "'.*afile' is not a directory"),
        (_checkpoint_is_a_folder, "checkpoint file=.* is a directory"),
    ],
    ids=["file", "under-a-file", "checkpoint-is-a-folder"],
)
def test_a_bad_checkpoint_dir_fails_before_any_step(tmp_path, make, match):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    steps = []
    opt.register_step_post_hook(lambda *_: steps.append(1))
    with pytest.raises(ValueError, match=match):
        fit(model, opt, _data(), batch_size=5, epochs=2, checkpoint_dir=make(tmp_path))
    assert steps == []


def test_an_unwritable_checkpoint_dir_fails_before_any_step(tmp_path, monkeypatch):
    # os.access stands in for the permission bits: root may write anywhere
    monkeypatch.setattr(ravine.train.os, "access", lambda path, mode: Path(path) != tmp_path)
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    steps = []
    opt.register_step_post_hook(lambda *_: steps.append(1))
    with pytest.raises(ValueError, match=f"directory '{tmp_path}' is not writable"):
        fit(model, opt, _data(), batch_size=5, epochs=2, checkpoint_dir=tmp_path / "a" / "ck")
    assert steps == [] and not (tmp_path / "a").exists()


# ------------------------------------------------------------ durability: fsync or not


@pytest.mark.parametrize(("durable", "fsyncs"), [(True, 2), (False, 0)], ids=["durable", "not"])
def test_checkpoint_durable_decides_the_fsyncs_and_resume_is_identical_either_way(
    tmp_path, monkeypatch, durable, fsyncs
):
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    model = _model()
    fit(model, torch.optim.Adam(model.parameters(), lr=0.05), _data(), batch_size=5, epochs=3)
    reference = [p.detach().clone() for p in model.parameters()]

    synced.clear()
    _first_run(tmp_path, checkpoint_durable=durable)  # 2 epochs, a checkpoint after each
    assert len(synced) == 2 * fsyncs  # the file, then its folder (the rename), per checkpoint
    assert not [p for p in tmp_path.iterdir() if p.name != CHECKPOINT_NAME]  # no temporaries
    assert (tmp_path / CHECKPOINT_NAME).stat().st_mode & 0o777 == 0o666 & ~_umask()
    model = _model(seed=1)
    fit(model, torch.optim.Adam(model.parameters(), lr=0.05), _data(), batch_size=5, epochs=3,
        checkpoint_dir=tmp_path, resume=True, checkpoint_durable=durable)  # fmt: skip
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), reference))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("bad", [None, 1, "no"])
def test_a_bad_checkpoint_durable_is_refused_before_anything_is_written(tmp_path, bad):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=f"checkpoint_durable must be True or False, got {bad!r}"):
        fit(model, opt, _data(), batch_size=5, epochs=1, checkpoint_dir=tmp_path / "ck",
            checkpoint_durable=bad)  # fmt: skip
    assert not (tmp_path / "ck").exists()
    with pytest.raises(ValueError, match="durable must be True or False"):
        save_checkpoint(tmp_path / "x.pt", {"format": 2}, durable=bad)
    assert not list(tmp_path.iterdir())


def test_checkpoint_at_end_false_skips_the_last_checkpoint_and_resume_redoes_that_epoch(tmp_path):
    model = _model()
    fit(model, torch.optim.Adam(model.parameters(), lr=0.05), _data(), batch_size=5, epochs=3)
    reference = [p.detach().clone() for p in model.parameters()]

    model = _model()
    h = fit(model, torch.optim.Adam(model.parameters(), lr=0.05), _data(), batch_size=5,
            epochs=3, checkpoint_dir=tmp_path, checkpoint_at_end=False)  # fmt: skip
    assert h.epoch == [1, 2, 3] and h.stop_reason == "completed"
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), reference))
    assert load_checkpoint(tmp_path / CHECKPOINT_NAME)["epoch"] == 2  # the last one skipped
    # a kill after the last epoch: the same call again redoes epoch 3 from the checkpoint of 2
    model = _model(seed=1)
    h = fit(model, torch.optim.Adam(model.parameters(), lr=0.05), _data(), batch_size=5,
            epochs=3, checkpoint_dir=tmp_path, checkpoint_at_end=False, resume=True)  # fmt: skip
    assert h.epoch == [1, 2, 3] and h.steps == 12
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), reference))
    assert load_checkpoint(tmp_path / CHECKPOINT_NAME)["epoch"] == 2


def test_checkpoint_at_end_false_keeps_checkpoint_every(tmp_path):
    model = _model()
    fit(model, torch.optim.SGD(model.parameters(), lr=0.1), _data(), batch_size=5, epochs=5,
        checkpoint_dir=tmp_path, checkpoint_every=2, checkpoint_at_end=False)  # fmt: skip
    assert load_checkpoint(tmp_path / CHECKPOINT_NAME)["epoch"] == 4
    with pytest.raises(ValueError, match="checkpoint_at_end must be True or False, got 0"):
        fit(model, torch.optim.SGD(model.parameters(), lr=0.1), _data(), batch_size=5, epochs=1,
            checkpoint_dir=tmp_path / "other", checkpoint_at_end=0)  # fmt: skip
    assert not (tmp_path / "other").exists()


def test_checkpoint_every_seconds_writes_one_once_the_interval_passed(tmp_path, monkeypatch):
    """Epochs end at t = 4, 8, 12, ... s (a fake clock): with a 10 s interval the checkpoint is
    written at epochs 3 and 6 (not at the end: checkpoint_at_end=False), and resuming from it
    gives the uninterrupted run bit for bit."""
    import ravine.train

    model = _model()
    fit(model, torch.optim.Adam(model.parameters(), lr=0.05), _data(), batch_size=5, epochs=7)
    reference = [p.detach().clone() for p in model.parameters()]

    now = [0.0]
    monkeypatch.setattr(ravine.train.time, "monotonic", lambda: now[0])
    seen: list[int | None] = []

    class Clock(ravine.Callback):
        def on_epoch_end(self, epoch, logs, run):
            now[0] = 4.0 * epoch

    def after_checkpoint(epoch, history):
        path = tmp_path / CHECKPOINT_NAME
        seen.append(load_checkpoint(path)["epoch"] if path.exists() else None)

    model = _model()
    fit(model, torch.optim.Adam(model.parameters(), lr=0.05), _data(), batch_size=5, epochs=7,
        checkpoint_dir=tmp_path, checkpoint_every_seconds=10, checkpoint_at_end=False,
        callbacks=[Clock(), after_checkpoint])  # fmt: skip
    assert seen == [None, None, 3, 3, 3, 6, 6]
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), reference))
    model = _model(seed=1)  # a kill after the last epoch: epoch 7 is redone from 6
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    h = fit(model, opt, _data(), batch_size=5, epochs=7, checkpoint_dir=tmp_path,
            checkpoint_every_seconds=10, resume=True)  # fmt: skip
    assert h.epoch == list(range(1, 8))
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), reference))


def test_a_callback_stop_is_checkpointed_whatever_the_interval_and_checkpoint_at_end(tmp_path):
    model = _model()
    fit(model, torch.optim.SGD(model.parameters(), lr=0.1), _data(), batch_size=5, epochs=4)
    reference = [p.detach().clone() for p in model.parameters()]

    class StopAt2(ravine.Callback):
        def on_epoch_end(self, epoch, logs, run):
            run.stop_training = epoch == 2

    model = _model()
    h = fit(model, torch.optim.SGD(model.parameters(), lr=0.1), _data(), batch_size=5, epochs=4,
            checkpoint_dir=tmp_path, checkpoint_every_seconds=1e9, checkpoint_at_end=False,
            callbacks=[StopAt2()])  # fmt: skip
    assert h.stop_reason == "callback"
    assert load_checkpoint(tmp_path / CHECKPOINT_NAME)["epoch"] == 2
    model = _model(seed=1)
    fit(model, torch.optim.SGD(model.parameters(), lr=0.1), _data(), batch_size=5, epochs=4,
        checkpoint_dir=tmp_path, resume=True)  # fmt: skip
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), reference))


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), True, "10"])
def test_checkpoint_every_seconds_is_checked_first(tmp_path, bad):
    model = _model()
    with pytest.raises(ValueError, match=f"checkpoint_every_seconds must be .*got {bad!r}"):
        fit(model, torch.optim.SGD(model.parameters(), lr=0.1), _data(), batch_size=5, epochs=1,
            checkpoint_dir=tmp_path / "ck", checkpoint_every_seconds=bad)  # fmt: skip
    assert not (tmp_path / "ck").exists()
