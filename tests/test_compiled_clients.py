"""impl="compiled" under real client code that works with torch.optim and with impl="foreach".

Each case runs the real client (torch.compile, ZeroRedundancyOptimizer on gloo processes) in
float64 and compares with torch.optim or with ravine's foreach path (issue 10, defect 13).
"""

from __future__ import annotations

import copy
import socket
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.distributed.optim import ZeroRedundancyOptimizer

import ravine
from optim_harness import max_rel_diff

TOL = 1e-12  # float64, relative to each tensor's scale


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3), nn.Linear(3, 1)).double()


def _data(steps: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(8, 4, generator=gen, dtype=torch.float64) for _ in range(steps)]


def _params(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


# -- 13(a): inside a torch.compile'd training step ---------------------------------------------
def _compiled_training(make: Callable[[Any], Any], steps: int = 4) -> tuple[list[Any], Any]:
    model = _model()
    opt = make(model.parameters())

    @torch.compile
    def train_step(x: torch.Tensor) -> torch.Tensor:
        opt.zero_grad()
        loss = model(x).pow(2).mean()
        loss.backward()
        opt.step()
        return loss

    for x in _data(steps):
        train_step(x)
    return _params(model), opt


def _eager_training(make: Callable[[Any], Any], steps: int = 4) -> list[Any]:
    model = _model()
    opt = make(model.parameters())
    for x in _data(steps):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
    return _params(model)


@pytest.mark.usefixtures("float64_default")
def test_compiled_impl_inside_a_torch_compiled_training_step() -> None:
    """The flat-buffer setup is not traceable; the step runs outside the graph and matches
    torch.optim.Adam (eager here; in the same compiled step below, under -m slow)."""
    ours, opt = _compiled_training(lambda ps: ravine.Adam(ps, lr=0.01, impl="compiled"))
    theirs = _eager_training(lambda ps: torch.optim.Adam(ps, lr=0.01))
    assert len(opt.engine.groups) == 1  # the flat path ran, not a fallback
    assert max_rel_diff(ours, theirs) <= TOL
    assert max_rel_diff(theirs, _params(_model())) > 1e-3  # the runs moved


@pytest.mark.slow  # torch.optim.Adam traced into the step: 15-50 s of compiling on 2 cores
@pytest.mark.usefixtures("float64_default")
def test_compiled_impl_matches_torch_adam_in_the_same_compiled_step() -> None:
    theirs, _ = _compiled_training(lambda ps: torch.optim.Adam(ps, lr=0.01))
    ours, opt = _compiled_training(lambda ps: ravine.Adam(ps, lr=0.01, impl="compiled"))
    assert len(opt.engine.groups) == 1
    assert max_rel_diff(ours, theirs) <= TOL


# -- 13(c): clients that replace opt.state entries -----------------------------------------------
def _replace_dict(opt: Any, p: torch.Tensor, saved: dict[str, Any]) -> None:
    opt.state[p] = copy.deepcopy(saved)  # an earlier state of this parameter, fresh tensors


def _replace_tensor(opt: Any, p: torch.Tensor, saved: dict[str, Any]) -> None:
    opt.state[p]["m"] = torch.full_like(p, 0.1)


def _replace_step(opt: Any, p: torch.Tensor, saved: dict[str, Any]) -> None:
    opt.state[p]["step"] = 1  # bias correction restarts for this parameter only


def _delete_state(opt: Any, p: torch.Tensor, saved: dict[str, Any]) -> None:
    del opt.state[p]  # fresh state on the next step


REPLACEMENTS: dict[str, Callable[[Any, torch.Tensor, dict[str, Any]], None]] = {
    "state dict replaced": _replace_dict,
    "state tensor replaced": _replace_tensor,
    "step replaced": _replace_step,
    "state deleted": _delete_state,
}


@pytest.mark.parametrize("replace", REPLACEMENTS)
def test_replaced_state_entries_are_followed(replace: str) -> None:
    """opt.state[p] entries replaced between steps take effect as with impl="foreach"."""
    results = []
    for impl in ("foreach", "compiled"):
        model = _model()
        opt = ravine.Adam(model.parameters(), lr=0.01, impl=impl)
        target = list(model.parameters())[2]
        saved: dict[str, Any] = {}
        for i, x in enumerate(_data(7)):
            if i == 1:
                saved = copy.deepcopy(dict(opt.state[target]))
                saved["step"] = int(saved["step"])
            if i == 4:
                REPLACEMENTS[replace](opt, target, saved)
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
        results.append((_params(model), opt))
    (want, _), (got, opt) = results
    assert opt.engine.groups  # the flat path ran
    assert max_rel_diff(got, want) <= TOL
    untouched = _model()
    opt = ravine.Adam(untouched.parameters(), lr=0.01)
    for x in _data(7):
        opt.zero_grad()
        untouched(x).pow(2).mean().backward()
        opt.step()
    assert max_rel_diff(want, _params(untouched)) > 1e-6  # the replacement mattered


def test_replaced_state_kept_alive_is_found_by_check_layout() -> None:
    """The old state dict held elsewhere keeps its views alive (the use counts do not move):
    opt.check_layout(), as documented, finds the replacement."""
    results = []
    for impl in ("foreach", "compiled"):
        model = _model()
        opt = ravine.Adam(model.parameters(), lr=0.01, impl=impl)
        target = list(model.parameters())[2]
        held = []
        for i, x in enumerate(_data(6)):
            if i == 3:
                held.append(opt.state[target])
                opt.state[target] = {**copy.deepcopy(dict(held[0])), "step": 1}
                opt.check_layout()
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
        results.append(_params(model))
    assert max_rel_diff(results[1], results[0]) <= TOL


@pytest.fixture
def single_process_group():
    """A gloo group of one process, in this process (ZeRO needs a default group)."""
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.usefixtures("single_process_group")
def test_zero_load_state_dict_is_followed() -> None:
    """ZeroRedundancyOptimizer.load_state_dict replaces ``opt.state[p]`` of its local
    optimizer: a rewind to a checkpoint must continue as with impl="foreach"."""
    results = []
    for impl in ("foreach", "compiled"):
        model = _model()
        zero = ZeroRedundancyOptimizer(
            model.parameters(), optimizer_class=ravine.Adam, lr=0.01, impl=impl
        )
        data = _data(6)
        for i, x in enumerate(data):
            if i == 3:
                zero.consolidate_state_dict(to=0)
                checkpoint = copy.deepcopy((zero.state_dict(), _params(model)))
            zero.zero_grad()
            model(x).pow(2).mean().backward()
            zero.step()
        saved, weights = checkpoint
        with torch.no_grad():
            for p, w in zip(model.parameters(), weights):
                p.copy_(w)
        zero.load_state_dict(saved)
        for x in data[3:]:
            zero.zero_grad()
            model(x).pow(2).mean().backward()
            zero.step()
        results.append((_params(model), zero.optim))
    (want, _), (got, inner) = results
    assert inner.engine.groups  # the flat path ran
    assert max_rel_diff(got, want) <= TOL


# -- 13(b): parameters whose storage belongs to someone else -----------------------------------
def _view_of_larger(owner: list[torch.Tensor]) -> list[torch.Tensor]:
    big = torch.randn(20, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    owner.append(big)
    return [nn.Parameter(big[2:8]), nn.Parameter(big[10:16].view(2, 3))]


def _transposed(owner: list[torch.Tensor]) -> list[torch.Tensor]:
    w = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    return [nn.Parameter(w.t())]  # non-contiguous: a flat view would change its strides


NOT_OWNED: dict[str, Callable[[list[torch.Tensor]], list[torch.Tensor]]] = {
    "views of a larger storage": _view_of_larger,
    "non-contiguous": _transposed,
}


@pytest.mark.parametrize("case", NOT_OWNED)
def test_parameters_not_owning_their_storage_keep_it(case: str) -> None:
    """Such parameters keep their storage (and strides) and are updated in it, as by foreach;
    an owned parameter next to them is still flattened."""
    results = []
    for impl in ("foreach", "compiled"):
        owner: list[torch.Tensor] = []
        kept = NOT_OWNED[case](owner)
        own = nn.Parameter(torch.linspace(-1, 1, 5, dtype=torch.float64))
        layout = [(p.untyped_storage().data_ptr(), p.stride()) for p in kept]
        opt = ravine.Adam([*kept, own], lr=0.05, impl=impl)
        for i in range(4):
            opt.zero_grad()
            sum(((p - 0.1 * i) ** 2).sum() for p in (*kept, own)).backward()
            opt.step()
        assert [(p.untyped_storage().data_ptr(), p.stride()) for p in kept] == layout
        results.append([p.detach().clone() for p in (*kept, own)])
    assert max_rel_diff(results[1], results[0]) <= TOL
    assert [fg.params for fg in opt.engine.groups] == [[own]]


def _zero_run(cls: type, kw: dict, bucket_view: bool, steps: int) -> tuple[Any, Any]:
    """(model, ZeRO optimizer) after ``steps`` steps of ZeRO around ``cls``, from _model()."""
    model = _model()
    zero = ZeroRedundancyOptimizer(
        model.parameters(),
        optimizer_class=cls,
        parameters_as_bucket_view=bucket_view,
        lr=0.01,
        **kw,
    )
    for x in _data(steps):  # every rank sees the same batches: the same gradients
        zero.zero_grad()
        model(x).pow(2).mean().backward()
        zero.step()
    return model, zero


@pytest.mark.usefixtures("single_process_group", "float64_default")
def test_zero_bucket_views_stay_in_the_buckets() -> None:
    """ZeRO's parameters_as_bucket_view lays the parameters out in its buckets: they stay
    there (ZeRO broadcasts the buckets) and the run matches ZeRO around torch.optim.Adam."""
    runs = []
    for cls, kw in ((torch.optim.Adam, {}), (ravine.Adam, {"impl": "compiled"})):
        model, zero = _zero_run(cls, kw, bucket_view=True, steps=3)
        bucket = zero._buckets[0][0].untyped_storage().data_ptr()
        assert all(p.untyped_storage().data_ptr() == bucket for p in model.parameters())
        runs.append(_params(model))
    assert max_rel_diff(runs[1], runs[0]) <= TOL


# -- 13(b): ZeroRedundancyOptimizer over two gloo processes --------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _zero_worker(rank: int, port: int, out: str, bucket_view: bool, steps: int) -> None:
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=2,
        timeout=timedelta(seconds=60),
    )
    try:
        runs = {}
        for name, cls, kw in (
            ("torch", torch.optim.Adam, {}),
            ("ravine", ravine.Adam, {"impl": "compiled"}),
        ):
            model, _ = _zero_run(cls, kw, bucket_view, steps)
            runs[name] = _params(model)
        torch.save(runs, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _spawn(fn: Callable[..., None], args: tuple[Any, ...], nprocs: int, timeout: float) -> None:
    ctx = mp.spawn(fn, args=args, nprocs=nprocs, join=False)
    deadline = time.monotonic() + timeout
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for process in ctx.processes:
                process.kill()
            pytest.fail(f"{fn.__name__} did not finish within {timeout:g} s")


@pytest.mark.slow  # two fresh processes: ~25 s on 2 cores (the in-process test above is fast)
@pytest.mark.parametrize("bucket_view", [True, False], ids=["bucket-views", "own-params"])
def test_zero_redundancy_optimizer_on_two_processes(bucket_view: bool) -> None:
    """Both ranks hold the same parameters, equal to ZeRO around torch.optim.Adam. With
    parameters_as_bucket_view, ZeRO owns the storage: ravine must not move it."""
    with tempfile.TemporaryDirectory() as out:
        _spawn(_zero_worker, (_free_port(), out, bucket_view, 4), nprocs=2, timeout=240)
        ranks = [torch.load(Path(out) / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for runs in ranks:
        assert max_rel_diff(runs["ravine"], runs["torch"]) <= TOL
    assert all(torch.equal(a, b) for a, b in zip(ranks[0]["ravine"], ranks[1]["ravine"]))
    assert max_rel_diff(ranks[0]["torch"], _params(_model())) > 1e-3  # the runs moved
