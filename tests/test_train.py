"""fit(): GD variants, data order, schedules, early stopping, checkpoints, resume, guards."""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import ravine
from ravine import schedules
from ravine.data import curriculum_order, loss_difficulty, shuffled
from ravine.train import (
    CHECKPOINT_NAME,
    EarlyStopping,
    History,
    NonFiniteLossError,
    NonFiniteParametersError,
    fit,
    load_checkpoint,
)

N, D, C = 23, 5, 3


pytestmark = pytest.mark.usefixtures("one_thread")


def _data(n: int = N, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, D, generator=g), torch.randint(0, C, (n,), generator=g)


def _model(seed: int = 0, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(D, 8), nn.Tanh(), nn.Dropout(dropout), nn.Linear(8, C))


def _count_steps(opt: torch.optim.Optimizer) -> list[int]:
    calls = [0]

    def hook(*_):
        calls[0] += 1

    opt.register_step_post_hook(hook)
    return calls


# ------------------------------------------------------------------------- GD variants


@pytest.mark.parametrize(
    ("batch_size", "per_epoch"),
    [(None, 1), (N, 1), (N + 5, 1), (1, N), (7, math.ceil(N / 7)), (10, 3), (N - 1, 2)],
)
def test_number_of_updates_per_epoch(batch_size, per_epoch):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    calls = _count_steps(opt)
    h = fit(model, opt, _data(), batch_size=batch_size, epochs=3)
    assert calls[0] == 3 * per_epoch == h.steps
    assert h.epoch == [1, 2, 3] and h.stop_reason == "completed"


@pytest.mark.parametrize("batch_size", [None, N])
def test_batch_gd_is_one_full_gradient_step(batch_size):
    x, y = _data()
    model, reference = _model(), _model()
    lr = 0.5
    fit(model, torch.optim.SGD(model.parameters(), lr=lr), (x, y), batch_size=batch_size, epochs=1)
    loss = nn.functional.cross_entropy(reference(x), y)
    grads = torch.autograd.grad(loss, list(reference.parameters()))
    with torch.no_grad():
        for p, g in zip(reference.parameters(), grads):
            p -= lr * g
    for a, b in zip(model.parameters(), reference.parameters()):
        assert torch.equal(a, b)


def test_closure_rules_work_and_are_called_once_per_batch_by_the_others():
    """fit passes a closure: L-BFGS re-evaluates it, ordinary rules evaluate it exactly once."""
    x, y = _data()
    model = _model()
    lbfgs = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=4)
    h = fit(model, lbfgs, (x, y), batch_size=None, epochs=4)
    assert h.train_loss[-1] < h.train_loss[0]

    evaluations = [0]

    def counting_loss(out, target):
        if out.requires_grad:
            evaluations[0] += 1
        return nn.functional.cross_entropy(out, target)

    model = _model()
    fit(
        model,
        ravine.Adam(model.parameters()),
        (x, y),
        batch_size=10,
        epochs=2,
        loss_fn=counting_loss,
    )
    assert evaluations[0] == 2 * math.ceil(N / 10)


class Recorder:
    """A loss function that records which examples (targets are their indices) each step saw."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __call__(self, out, target, **kwargs):
        if out.requires_grad:  # training steps only, not evaluation
            self.batches.append(target.tolist())
        return out.sum() * 0 + out.pow(2).mean()


def _orders(batch_size: int, epochs: int, **kwargs) -> list[list[int]]:
    rec = Recorder()
    x = torch.randn(N, D)
    model = nn.Linear(D, 1)
    fit(
        model,
        torch.optim.SGD(model.parameters(), lr=1e-3),
        (x, torch.arange(N)),
        batch_size=batch_size,
        epochs=epochs,
        loss_fn=rec,
        **kwargs,
    )
    per_epoch = math.ceil(N / batch_size)
    return [
        list(itertools.chain(*rec.batches[e * per_epoch : (e + 1) * per_epoch]))
        for e in range(epochs)
    ]


def test_minibatches_cover_a_fresh_seeded_permutation_each_epoch():
    orders = _orders(5, 3, seed=11)
    for e, order in enumerate(orders):
        assert order == shuffled(N, 11, e).tolist()
    assert orders[0] != orders[1]
    assert _orders(5, 3, seed=11) == orders
    assert _orders(5, 1, seed=12)[0] != orders[0]
    assert _orders(5, 2, shuffle=False) == [list(range(N))] * 2


@pytest.mark.parametrize("strategy", ["naive", "mixed", "combined"])
def test_curriculum_order_in_fit(strategy):
    scores = torch.rand(N, generator=torch.Generator().manual_seed(3))
    orders = _orders(4, 2, curriculum=strategy, difficulty=scores, seed=2, curriculum_levels=3)
    for e in range(2):
        assert orders[e] == curriculum_order(scores, strategy, 2, e, levels=3).tolist()
    if strategy == "naive":
        assert orders[0] == torch.argsort(scores).tolist()


def test_default_difficulty_is_loss_under_the_initial_model():
    x, y = _data()
    model = _model()
    expected = curriculum_order(loss_difficulty(_model(), x, y), "naive", 0, 0).tolist()
    seen: list[torch.Tensor] = []
    # record the inputs of each step through a forward pre-hook
    model.register_forward_pre_hook(lambda m, a: seen.append(a[0].clone()) if m.training else None)
    fit(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        (x, y),
        batch_size=1,
        epochs=1,
        curriculum="naive",
    )
    got = [int((x == s).all(1).nonzero()) for s in seen]
    assert got == expected


# --------------------------------------------------------------------------- schedules


@pytest.mark.parametrize(("every", "steps_per_epoch"), [("epoch", 1), ("batch", 3)])
def test_schedule_stepped_per_epoch_or_batch(every, steps_per_epoch):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    h = fit(
        model,
        opt,
        _data(),
        batch_size=10,
        epochs=4,
        scheduler=schedules.exponential(opt, r=5.0),
        schedule_every=every,
    )
    expected = [0.2 * math.exp(-e * steps_per_epoch / 5.0) for e in range(4)]
    assert h.lr == pytest.approx(expected, rel=1e-12)


def test_plateau_schedule_reads_the_monitored_loss():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # no learning: the loss never improves
    sched = schedules.performance(opt, patience=1)
    opt.param_groups[0]["lr"] = 1e-30  # effectively zero, but halvings are visible
    h = fit(model, opt, _data(), _data(seed=1), batch_size=N, epochs=5, scheduler=sched)
    # epoch 1 sets the baseline; epochs 2, 3 are bad; decay starts after epoch 3
    assert h.lr == pytest.approx([1e-30, 1e-30, 1e-30, 0.5e-30, 0.25e-30])
    with pytest.raises(ValueError, match="schedule_every must be 'epoch'"):
        fit(model, opt, _data(), batch_size=5, epochs=1, scheduler=sched, schedule_every="batch")


# ----------------------------------------------------------------------- early stopping


def _scripted_fit(monkeypatch, values, es: EarlyStopping, epochs: int = 10):
    """fit with evaluate() replaced by a script of validation losses; snapshots per epoch."""
    it = iter(values)
    monkeypatch.setattr(ravine.train, "_evaluate", lambda *a, **k: {"loss": next(it)})
    model = _model()
    snaps: dict[int, list[torch.Tensor]] = {}
    h = fit(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        _data(),
        _data(seed=1),
        batch_size=5,
        epochs=epochs,
        early_stopping=es,
        callbacks=[lambda e, h: snaps.__setitem__(e, [p.clone() for p in model.parameters()])],
    )
    return model, h, snaps


def test_early_stopping_stops_at_the_right_epoch_and_restores_best(monkeypatch):
    values = [1.0, 0.8, 0.7, 0.75, 0.72, 0.71, 0.5, 0.4]
    model, h, snaps = _scripted_fit(monkeypatch, values, EarlyStopping(patience=3))
    assert h.epoch == [1, 2, 3, 4, 5, 6] and h.stop_reason == "early_stopping"
    assert h.best_epoch == 3
    for p, best in zip(model.parameters(), snaps[3]):
        assert torch.equal(p, best)
    assert not all(torch.equal(p, q) for p, q in zip(model.parameters(), snaps[5]))


def test_early_stopping_min_delta(monkeypatch):
    values = [1.0, 0.9, 0.88, 0.87, 0.86, 0.85]
    _, h, _ = _scripted_fit(monkeypatch, values, EarlyStopping(patience=2, min_delta=0.05))
    assert (h.epoch[-1], h.best_epoch) == (4, 2)
    _, h, _ = _scripted_fit(monkeypatch, values, EarlyStopping(patience=2), epochs=6)
    assert (h.epoch[-1], h.best_epoch, h.stop_reason) == (6, 6, "completed")


@pytest.mark.parametrize(
    ("values", "best_epoch", "last_epoch"),
    [
        ([math.nan, 0.8, 0.9, 0.95, 0.99, 0.7], 2, 5),
        ([math.inf, 0.8, 0.9, 0.95, 0.99, 0.7], 2, 5),
        ([-math.inf, 0.8, 0.9, 0.95, 0.99, 0.7], 2, 5),
        ([1.0, 0.8, math.nan, 0.9, 0.7, 0.6], 6, 6),
    ],
    ids=["nan-first", "inf-first", "minus-inf-first", "nan-later"],
)
def test_non_finite_monitored_values_never_count_as_best(
    monkeypatch, values, best_epoch, last_epoch
):
    model, h, snaps = _scripted_fit(monkeypatch, values, EarlyStopping(patience=3), epochs=6)
    assert (h.best_epoch, h.epoch[-1]) == (best_epoch, last_epoch)
    for p, best in zip(model.parameters(), snaps[best_epoch]):
        assert torch.equal(p, best)
    assert not EarlyStopping().improved(math.nan, None)
    assert not EarlyStopping(monitor="val_accuracy").improved(math.inf, 0.5)


def test_early_stopping_on_accuracy_maximizes():
    x, y = _data(200)
    model = _model()
    es = EarlyStopping(patience=2, monitor="val_accuracy")
    h = fit(
        model,
        torch.optim.SGD(model.parameters(), lr=0.0),
        (x, y),
        (x, y),
        batch_size=50,
        epochs=10,
        early_stopping=es,
    )
    # lr = 0: accuracy is constant, so epoch 1 is best and epochs 2, 3 exhaust the patience
    assert es.mode == "max" and h.epoch == [1, 2, 3] and h.best_epoch == 1


# ------------------------------------------------------------------ checkpoint and resume


class Interrupt(Exception):
    pass


def _interrupt_after(k: int):
    def cb(epoch: int, _h: History) -> None:
        if epoch == k:
            raise Interrupt

    return cb


def _setup(cfg: dict):
    model = _model(dropout=0.2)  # dropout draws from torch's RNG: resume must restore it
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    sched = None
    if cfg.get("sched") == "plateau":
        sched = schedules.performance(opt, patience=0)
    elif cfg.get("sched") == "inverse_time":
        sched = schedules.inverse_time(opt, r=3.0)
    return model, opt, sched


RESUME_CASES = [
    {"batch_size": 4},
    {"batch_size": 4, "sched": "inverse_time", "schedule_every": "batch"},
    {"batch_size": 8, "sched": "plateau"},
    {"batch_size": 3, "curriculum": "combined"},
    {"batch_size": 5, "early_stopping": True},
]


@pytest.mark.parametrize("cfg", RESUME_CASES, ids=lambda c: "-".join(map(str, c.values())))
def test_interrupted_and_resumed_run_is_bit_identical(tmp_path, cfg):
    kw = {k: v for k, v in cfg.items() if k not in ("sched", "early_stopping")}
    if cfg.get("early_stopping"):
        kw["early_stopping"] = EarlyStopping(patience=4, min_delta=1e-3)
    train, val = _data(40), _data(20, seed=1)

    model, opt, sched = _setup(cfg)
    h_ref = fit(model, opt, train, val, epochs=7, scheduler=sched, **kw)
    ref = [p.clone() for p in model.parameters()]

    model, opt, sched = _setup(cfg)
    with pytest.raises(Interrupt):
        fit(
            model,
            opt,
            train,
            val,
            epochs=7,
            scheduler=sched,
            checkpoint_dir=tmp_path,
            checkpoint_every=2,
            callbacks=[_interrupt_after(3)],
            **kw,
        )
    assert load_checkpoint(tmp_path / CHECKPOINT_NAME)["epoch"] == 2
    torch.manual_seed(999)  # the resumed process's RNG state is whatever it is
    model, opt, sched = _setup(cfg)
    h = fit(
        model,
        opt,
        train,
        val,
        epochs=7,
        scheduler=sched,
        checkpoint_dir=tmp_path,
        checkpoint_every=2,
        resume=True,
        **kw,
    )
    for a, b in zip(model.parameters(), ref):
        assert torch.equal(a, b)
    for key in ("epoch", "train_loss", "val_loss", "val_accuracy", "lr", "steps", "best_epoch"):
        assert getattr(h, key) == getattr(h_ref, key), key


KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import torch
    from torch import nn
    from ravine import fit, schedules

    torch.set_num_threads(1)
    ckpt_dir, out = sys.argv[1], sys.argv[2]
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 10, generator=g), torch.randint(0, 4, (300,), generator=g)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.3),
                          nn.Linear(32, 4))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = schedules.cosine(opt, t_max=8 * 10)

    def report(epoch, history):
        print(f"epoch {epoch}", flush=True)
        if len(sys.argv) > 3:
            time.sleep(0.3)  # leave the parent time to kill us mid-run

    fit(model, opt, (x[:250], y[:250]), (x[250:], y[250:]), batch_size=25, epochs=8,
        scheduler=sched, schedule_every="batch", checkpoint_dir=ckpt_dir, resume=True,
        callbacks=[report], seed=3, verbose=0)
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, out)
    """
)


def _run(script: Path, ckpt: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, str(script), str(ckpt), str(out), *extra],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def _assert_same(a, b):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for u, v in zip(a, b):
            _assert_same(u, v)
    else:
        assert a == b


def test_sigkill_after_a_checkpoint_then_resume_is_bit_identical(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT)
    ref = _run(script, tmp_path / "ref", tmp_path / "ref.pt")
    assert ref.wait(timeout=120) == 0

    proc = _run(script, tmp_path / "ck", tmp_path / "resumed.pt", "slow")
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip() == "epoch 3":  # the epoch-3 checkpoint is on disk before callbacks run
            proc.send_signal(signal.SIGKILL)
            break
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert not (tmp_path / "resumed.pt").exists()
    killed_at = load_checkpoint(tmp_path / "ck" / CHECKPOINT_NAME)["epoch"]
    assert 3 <= killed_at < 8

    again = _run(script, tmp_path / "ck", tmp_path / "resumed.pt")
    assert again.stdout is not None
    resumed_epochs = [line.strip() for line in again.stdout]
    assert again.wait(timeout=120) == 0
    assert resumed_epochs[0] == f"epoch {killed_at + 1}"
    _assert_same(torch.load(tmp_path / "ref.pt"), torch.load(tmp_path / "resumed.pt"))


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    fit(model, opt, _data(), batch_size=5, epochs=1, checkpoint_dir=tmp_path)
    good = (tmp_path / CHECKPOINT_NAME).read_bytes()

    real_save = torch.save

    def crash(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        f.truncate(100)  # half-written file
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        fit(model, opt, _data(), batch_size=5, epochs=2, checkpoint_dir=tmp_path, resume=True)
    assert (tmp_path / CHECKPOINT_NAME).read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_NAME]  # no temp file left


def test_resume_refuses_different_settings_and_finished_runs_return(tmp_path):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    h = fit(model, opt, _data(), batch_size=5, epochs=2, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="resume must use the checkpoint's settings"):
        fit(model, opt, _data(), batch_size=6, epochs=2, checkpoint_dir=tmp_path, resume=True)
    calls = _count_steps(opt)
    h2 = fit(model, opt, _data(), batch_size=5, epochs=2, checkpoint_dir=tmp_path, resume=True)
    assert calls[0] == 0 and h2.train_loss == h.train_loss
    h3 = fit(model, opt, _data(), batch_size=5, epochs=3, checkpoint_dir=tmp_path, resume=True)
    assert calls[0] == 5 and h3.epoch == [1, 2, 3]


# ------------------------------------------------------------------------ non-finite loss


def test_non_finite_loss_stops_with_epoch_batch_and_checkpoint(tmp_path):
    calls = [0]

    def loss_fn(out, y, **kw):
        loss = nn.functional.cross_entropy(out, y)
        if out.requires_grad:
            calls[0] += 1
            if calls[0] == 5 + 3:  # epoch 2 (5 batches per epoch), batch 3
                return loss * float("nan")
        return loss

    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    after_good_step: list[list[torch.Tensor]] = []
    opt.register_step_post_hook(
        lambda *_: after_good_step.append([p.clone() for p in model.parameters()])
    )
    with pytest.raises(NonFiniteLossError) as info:
        fit(model, opt, _data(), batch_size=5, epochs=3, loss_fn=loss_fn, checkpoint_dir=tmp_path)
    msg = str(info.value)
    assert "epoch 2, batch 3/5" in msg and "nan" in msg
    assert str(tmp_path / CHECKPOINT_NAME) in msg and "after epoch 1" in msg
    assert info.value.history.stop_reason == "non_finite_loss"
    # the bad step was not applied: weights are those after the last good step
    for p, q in zip(model.parameters(), after_good_step[-1]):
        assert torch.equal(p, q)
    assert len(after_good_step) == 7


def _poison_after(
    model: nn.Module, opt: torch.optim.Optimizer, step: int, value: float = math.nan
) -> None:
    """Make optimizer step ``step`` write ``value`` into the model although its loss was finite."""
    calls = [0]

    def hook(*_):
        calls[0] += 1
        if calls[0] == step:
            with torch.no_grad():
                next(iter(model.parameters()))[0, 0] = value

    opt.register_step_post_hook(hook)


def test_a_step_that_writes_inf_is_reported_truly_at_the_next_loss(tmp_path):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    _poison_after(model, opt, 5 + 2)  # epoch 2, batch 2 (5 batches per epoch)
    with pytest.raises(NonFiniteLossError) as info:
        fit(model, opt, _data(), batch_size=5, epochs=3, checkpoint_dir=tmp_path)
    msg = str(info.value)
    assert "epoch 2, batch 3/5" in msg
    assert "the parameters were already non-finite: the previous step wrote NaN/Inf" in msg
    assert "after epoch 1" in msg and load_checkpoint(tmp_path / CHECKPOINT_NAME)["epoch"] == 1


def test_a_last_step_that_writes_inf_stops_before_the_checkpoint(tmp_path):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    _poison_after(model, opt, 5 + 5)  # the last step of epoch 2: no later loss sees it
    # (an inf weight into tanh leaves every loss finite: only the parameter check sees it)
    _poison_after(model, opt, 5 + 1, math.inf)
    with pytest.raises(NonFiniteParametersError, match="became non-finite during epoch 2") as info:
        fit(model, opt, _data(), batch_size=5, epochs=3, checkpoint_dir=tmp_path)
    assert isinstance(info.value, NonFiniteLossError)
    assert info.value.history.stop_reason == "non_finite_loss"
    ckpt = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert ckpt["epoch"] == 1 and all(t.isfinite().all() for t in ckpt["model"].values())


@pytest.mark.parametrize("lbfgs", [torch.optim.LBFGS, ravine.LBFGS], ids=["torch", "ravine"])
def test_lbfgs_step_with_a_non_finite_reevaluation_is_rolled_back(lbfgs):
    calls = [0]

    def loss_fn(out, y):
        loss = nn.functional.cross_entropy(out, y)
        if out.requires_grad:
            calls[0] += 1
            if calls[0] == 4 + 3:  # step 2, third evaluation: after the parameters moved
                return loss * math.inf
        return loss

    model = _model()
    opt = lbfgs(model.parameters(), lr=0.5, max_iter=4, tolerance_grad=0, tolerance_change=0)
    before_step: list[tuple[list[torch.Tensor], dict]] = []
    opt.register_step_pre_hook(
        lambda *_: before_step.append(
            ([p.detach().clone() for p in model.parameters()], copy.deepcopy(opt.state_dict()))
        )
    )
    with pytest.raises(NonFiniteLossError) as info:
        fit(model, opt, _data(), batch_size=None, epochs=3, loss_fn=loss_fn)
    msg = str(info.value)
    assert "epoch 2, batch 1/1" in msg and "the step was rolled back" in msg
    assert "not applied" not in msg
    params, state = before_step[-1]
    for p, q in zip(model.parameters(), params):
        assert torch.equal(p, q)
    _assert_same(opt.state_dict(), state)


def test_non_finite_loss_without_checkpoint_says_so():
    model = nn.Linear(D, 1)
    x = torch.randn(N, D)
    opt = torch.optim.SGD(model.parameters(), lr=10.0)  # far past 2 / L: diverges geometrically
    with pytest.raises(NonFiniteLossError, match="no checkpoint was written") as info:
        fit(
            model,
            opt,
            (x, x.sum(1, keepdim=True)),
            batch_size=N,
            epochs=500,
            loss_fn=nn.functional.mse_loss,
        )
    assert 1 < info.value.epoch < 500 and info.value.batch == 1
    assert "pass checkpoint_dir=" in str(info.value)


def test_non_finite_loss_before_the_first_checkpoint_does_not_ask_for_checkpoint_dir(tmp_path):
    model = nn.Linear(D, 1)
    x = torch.randn(N, D)
    opt = torch.optim.SGD(model.parameters(), lr=1e30)  # non-finite within the first epoch
    with pytest.raises(NonFiniteLossError) as info:
        fit(
            model,
            opt,
            (x, x.sum(1, keepdim=True)),
            batch_size=1,
            epochs=2,
            loss_fn=nn.functional.mse_loss,
            checkpoint_dir=tmp_path,
        )
    assert info.value.epoch == 1 and info.value.checkpoint is None
    assert "no checkpoint was written yet" in str(info.value)
    assert "pass checkpoint_dir=" not in str(info.value)


# ------------------------------------------------------------------ history and progress


def test_history_json_round_trip_and_plot(tmp_path):
    model = _model()
    h = fit(
        model,
        torch.optim.Adam(model.parameters(), lr=0.05),
        _data(100),
        _data(50, seed=1),
        batch_size=10,
        epochs=3,
    )
    assert len(h.train_loss) == len(h.val_loss) == len(h.val_accuracy) == len(h.time) == 3
    assert h.train_loss[-1] < h.train_loss[0]
    assert all(0 <= a <= 1 for a in h.val_accuracy) and all(t > 0 for t in h.time)
    h.save(tmp_path / "h.json")
    assert History.load(tmp_path / "h.json") == h
    assert json.loads(h.to_json())["steps"] == 30
    h.plot(tmp_path / "h.png")
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"


def test_progress_bar_shows_loss_and_lr_and_is_quiet_off_a_terminal(capsys):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    fit(model, opt, _data(), batch_size=5, epochs=2)  # stderr is not a TTY under pytest
    assert capsys.readouterr().err == ""
    fit(model, opt, _data(), batch_size=5, epochs=2, progress=True)
    err = capsys.readouterr().err
    assert "10/10" in err and "loss=" in err and "lr=" in err


def test_validation_metrics_match_evaluate():
    x, y = _data(60)
    model = _model()
    h = fit(
        model, torch.optim.SGD(model.parameters(), lr=0.1), (x, y), (x, y), batch_size=10, epochs=1
    )
    with torch.no_grad():
        out = model(x)
    assert h.val_loss[0] == pytest.approx(nn.functional.cross_entropy(out, y).item(), rel=1e-6)
    assert h.val_accuracy[0] == pytest.approx((out.argmax(1) == y).double().mean().item())


def test_regression_targets_get_no_accuracy():
    x = torch.randn(30, D)
    y = x.sum(1, keepdim=True)
    model = nn.Linear(D, 1)
    h = fit(
        model,
        torch.optim.SGD(model.parameters(), lr=0.05),
        (x, y),
        (x, y),
        batch_size=10,
        epochs=30,
        loss_fn=nn.functional.mse_loss,
    )
    assert h.val_accuracy == [] and h.val_loss[-1] < 0.01


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size must be"),
        ({"epochs": 0}, "epochs must be"),
        ({"schedule_every": "step"}, "schedule_every must be"),
        ({"curriculum": "reverse"}, "curriculum must be one of"),
        ({"early_stopping": EarlyStopping()}, "val is None"),
        ({"resume": True}, "resume=True needs checkpoint_dir"),
        ({"checkpoint_every": 0}, "checkpoint_every must be"),
        ({"seed": -1}, "seed must be"),
        ({"curriculum": "naive", "difficulty": torch.zeros(3)}, "one score per training example"),
        ({"train": (torch.zeros(3, D), torch.zeros(4))}, "equal length"),
        ({"train": [torch.zeros(3, D)]}, "train must be an"),
    ],
)
def test_bad_arguments(kwargs, match):
    model = _model()
    args = {"batch_size": 5, "epochs": 1, **kwargs}
    train = args.pop("train", _data())
    with pytest.raises(ValueError, match=match):
        fit(model, torch.optim.SGD(model.parameters(), lr=0.1), train, **args)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"patience": 0}, "patience must be"),
        ({"min_delta": -1.0}, "min_delta must be"),
        ({"monitor": "f1"}, "monitor must be"),
        ({"monitor": "val_"}, "monitor must be"),
        ({"mode": "up"}, "mode must be"),
    ],
)
def test_early_stopping_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EarlyStopping(**kwargs)


def test_tensordataset_input_and_ravine_export():
    model = _model()
    ds = torch.utils.data.TensorDataset(*_data())
    h = ravine.fit(model, torch.optim.SGD(model.parameters(), lr=0.1), ds, batch_size=4, epochs=1)
    assert h.steps == 6


# ----------------------------------------------------------------------- ravine train (CLI)


def _cli(argv: list[str]) -> int:
    import argparse

    from ravine.cli import train as train_cli

    parser = argparse.ArgumentParser()
    train_cli.add_arguments(parser)
    return train_cli.run(parser.parse_args(argv))


def test_train_subcommand_writes_history_and_plot(tmp_path, capsys):
    argv = [
        "--dataset",
        "digits",
        "--model",
        "logreg",
        "--optimizer",
        "sgd",
        "--lr",
        "0.5",
        "--epochs",
        "2",
        "--batch-size",
        "0",
        "--schedule",
        "exponential",
        "--schedule-arg",
        "r=1",
        "--history",
        str(tmp_path / "h.json"),
        "--plot",
        str(tmp_path / "h.png"),
    ]
    assert _cli(argv) == 0
    out = capsys.readouterr().out
    assert "2 epochs, 2 steps (completed)" in out and "test accuracy" in out
    h = History.load(tmp_path / "h.json")
    assert h.lr == pytest.approx([0.5, 0.5 * math.exp(-1)])
    assert (tmp_path / "h.png").exists()


def test_train_subcommand_reports_bad_input(tmp_path, capsys):
    assert _cli(["--dataset", "cifar10", "--data-dir", str(tmp_path)]) == 2
    assert "never downloads" in capsys.readouterr().err
    assert _cli(["--dataset", "digits", "--hp", "betas"]) == 2
    assert "--hp must look like key=value" in capsys.readouterr().err


# -------------------------------------------------------- accuracy anchors (make test-slow)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model_name", "kwargs", "minimum"),
    [("mlp", {}, 0.97), ("logreg", {}, 0.91)],  # MLP = 2 hidden layers of 500
)
def test_mnist_accuracy_anchor(model_name, kwargs, minimum):
    from ravine.data import mnist
    from ravine.models import create
    from ravine.train import evaluate

    s = mnist()
    torch.manual_seed(0)
    model = create(model_name, s.input_shape, s.num_classes, **kwargs)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    fit(model, opt, s.train, batch_size=128, epochs=5)
    _, accuracy = evaluate(model, s.test)
    print(f"{model_name}: test accuracy {accuracy:.4f}")
    assert accuracy >= minimum, f"test accuracy {accuracy:.4f} < {minimum}"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model_name", "kwargs", "minimum"),
    # the MNIST-1D paper (Greydanus & Kobak, 2020) reports 68% (MLP) and 94% (CNN) with this
    # setup: 4000 training signals, Adam lr 1e-2, batch 100, 6000 steps
    [("mlp", {"hidden": (100, 100)}, 0.60), ("cnn1d", {}, 0.85)],
)
def test_mnist1d_accuracy_anchor(model_name, kwargs, minimum):
    from ravine.data import mnist1d
    from ravine.models import create
    from ravine.train import evaluate

    s = mnist1d(val_fraction=0.0)
    torch.manual_seed(0)
    model = create(model_name, s.input_shape, s.num_classes, **kwargs)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    fit(model, opt, s.train, batch_size=100, epochs=150)
    _, accuracy = evaluate(model, s.test)
    print(f"{model_name}: test accuracy {accuracy:.4f}")
    assert accuracy >= minimum, f"test accuracy {accuracy:.4f} < {minimum}"
