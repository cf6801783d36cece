"""ravine.learned: the update rules' invariances, state independence, the meta-gradient against
finite differences, reproducible and resumable meta-training, weights files, the bundled weights.

The contract every optimizer meets (resume, validation, guard, schedulers...) is the spec matrix's
(tests/optim_specs.py rows "l2l" and "learned_mlp").
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pytest
import torch

import ravine
from ravine.gradcheck import gradcheck
from ravine.learned import L2L, LearnedMLP, meta, nets, tasks
from ravine.learned import weights as weights_io

KINDS = {"l2l": L2L, "mlp": LearnedMLP}


def _record(kind: str, seed: int = 0, **architecture) -> dict:
    net = nets.build(kind, architecture, seed=seed)
    with torch.no_grad():  # untrained weights, made less trivial than the initialisation
        for p in net.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)))
    return weights_io.record(net)


def _steps(opt: torch.optim.Optimizer, params: list[torch.Tensor], grads: list[list[torch.Tensor]]):
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = g.clone()
        opt.step()


@pytest.mark.parametrize("kind", KINDS)
def test_permuting_a_tensors_coordinates_permutes_its_updates(kind: str) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, 6, generator=gen, dtype=torch.float64)
    other = torch.randn(5, generator=gen, dtype=torch.float64)
    perm = torch.randperm(x.numel(), generator=gen)
    a = [torch.nn.Parameter(x.clone()), torch.nn.Parameter(other.clone())]
    b = [torch.nn.Parameter(x.reshape(-1)[perm].reshape(4, 6)), torch.nn.Parameter(other.clone())]
    grads = [
        [
            torch.randn(4, 6, generator=gen, dtype=torch.float64),
            torch.randn(5, generator=gen, dtype=torch.float64),
        ]
        for _ in range(4)
    ]
    pgrads = [[g.reshape(-1)[perm].reshape(4, 6), h] for g, h in grads]
    record = _record(kind)
    _steps(KINDS[kind](a, weights=record), a, grads)
    _steps(KINDS[kind](b, weights=record), b, pgrads)
    torch.testing.assert_close(
        a[0].detach().reshape(-1)[perm].reshape(4, 6), b[0].detach(), rtol=1e-12, atol=1e-14
    )
    torch.testing.assert_close(a[1], b[1], rtol=1e-12, atol=1e-14)
    assert not torch.equal(a[0].detach(), x)  # it moved


@pytest.mark.parametrize("impl", ["foreach", "loop"])
@pytest.mark.parametrize("kind", KINDS)
def test_two_tensors_states_never_alias(kind: str, impl: str) -> None:
    """Two tensors stepped together end exactly as each stepped alone, and no state tensor of
    one shares memory with the other's (the shared-state slice of AdrienLE's notebook)."""
    gen = torch.Generator().manual_seed(2)
    init = [
        torch.randn(3, 4, generator=gen, dtype=torch.float64),
        torch.randn(12, generator=gen, dtype=torch.float64),
    ]
    grads = [
        [
            torch.randn(3, 4, generator=gen, dtype=torch.float64),
            torch.randn(12, generator=gen, dtype=torch.float64),
        ]
        for _ in range(5)
    ]
    record = _record(kind)
    both = [torch.nn.Parameter(t.clone()) for t in init]
    opt = KINDS[kind](both, weights=record, impl=impl)
    _steps(opt, both, grads)
    for i in range(2):
        alone = [torch.nn.Parameter(init[i].clone())]
        _steps(KINDS[kind](alone, weights=record, impl=impl), alone, [[gs[i]] for gs in grads])
        torch.testing.assert_close(alone[0], both[i], rtol=1e-12, atol=1e-14)
    ptrs = [
        {s.untyped_storage().data_ptr() for k, s in opt.state[p].items() if k != "step"}
        for p in both
    ]
    assert ptrs[0].isdisjoint(ptrs[1])


@pytest.mark.parametrize("kind", KINDS)
def test_meta_gradient_of_a_three_step_unroll_matches_central_differences(kind: str) -> None:
    torch.manual_seed(0)
    net = nets.build(kind, {"hidden": 4}, seed=3).double()
    task = tasks.QuadraticTask(dim=3, batch=2)
    problem = task.sample(5, 3, dtype=torch.float64)
    weights = dict(net.named_parameters())

    def meta_loss() -> torch.Tensor:
        # enable_grad: gradcheck evaluates the differences under no_grad, but the unroll takes
        # the optimizee's gradients with autograd.
        with torch.enable_grad():
            return _unroll()

    def _unroll() -> torch.Tensor:
        theta = {k: v.clone().requires_grad_(True) for k, v in problem.params.items()}
        state = [v.new_zeros(v.numel(), net.state_size) for v in theta.values()]
        initial = problem.losses(theta, 0).detach()
        loss, _, _ = meta.meta_loss_of_unroll(
            net,
            weights,
            problem,
            theta,
            state,
            0,
            3,
            initial=initial,
            loss_clip=1e6,
            second_order=True,  # the exact meta-gradient (the default drops d g / d phi)
        )
        return loss

    # h = 1e-4: the first layer's smallest meta-gradients (~1e-7) drown in rounding at the
    # default 1e-6 (the error grows as h shrinks: 7e-7 at 1e-4, 2e-5 at 1e-5, 7e-5 at 1e-6).
    result = gradcheck(meta_loss, net.named_parameters(), max_entries=12, eps=1e-4)
    assert result.passed, str(result)


def test_the_mlp_second_order_meta_gradient_is_finite_where_a_gradient_is_zero() -> None:
    """A coordinate whose gradient is exactly 0 (on digits, the weights of a pixel blank in the
    whole batch) made every second-order meta-gradient NaN through sqrt(v)'s infinite
    derivative at 0, so that second-order meta-training skipped every update."""
    net = nets.build("mlp", {"hidden": 4}, seed=0).double()
    g = torch.tensor([0.0, 0.5, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
    deltas, states = net([g.detach()], [g], [g.new_zeros(4, net.state_size)], 1)
    (deltas[0].sum() + states[0].sum()).backward()
    assert torch.isfinite(g.grad).all(), g.grad
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def _tiny_config(**kw) -> meta.MetaConfig:
    base = dict(
        kind="l2l",
        task="quadratic",
        task_options={"dim": 4, "batch": 8},
        architecture={"hidden": 6},
        iterations=6,
        horizon=8,
        unroll=4,
        meta_lr=0.01,
        eval_every=3,
        eval_problems=1,
    )
    return meta.MetaConfig(**{**base, **kw})


def _same_record(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if k == "state_dict":
            assert a[k].keys() == b[k].keys()
            for name in a[k]:
                assert torch.equal(a[k][name], b[k][name]), name
        else:
            assert a[k] == b[k], k


@pytest.mark.parametrize(
    ("kind", "second_order"), [("l2l", False), ("mlp", False), ("mlp", True)]
)  # second order: the digits preset's
def test_meta_training_is_bit_identical_across_runs_and_across_a_kill(
    kind: str, second_order: bool, tmp_path: Path
) -> None:
    config = _tiny_config(kind=kind, second_order=second_order)
    first = meta.meta_train(config, tmp_path / "a.pt")
    assert first.skipped == 0  # every update taken: the bits compared are trained ones
    second = meta.meta_train(config, tmp_path / "b.pt")
    _same_record(first.record, second.record)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    # Killed after 3 iterations (the checkpoint holds 2), then the same command again.
    meta.meta_train(config, tmp_path / "c.pt", stop_after=3, checkpoint_every=2)
    assert not (tmp_path / "c.pt").exists()
    resumed = meta.meta_train(config, tmp_path / "c.pt", checkpoint_every=2)
    _same_record(first.record, resumed.record)
    assert first.history == resumed.history
    loaded = weights_io.load(tmp_path / "c.pt", kind)
    _same_record(first.record, loaded)


def test_a_checkpoint_of_another_configuration_is_refused(tmp_path: Path) -> None:
    meta.meta_train(_tiny_config(), tmp_path / "w.pt", stop_after=2, checkpoint_every=1)
    with pytest.raises(ValueError, match="another configuration"):
        meta.meta_train(_tiny_config(meta_lr=0.02), tmp_path / "w.pt")


def test_no_nan_reaches_the_meta_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = meta.meta_loss_of_unroll
    calls = []

    def poisoned(*args, **kwargs):
        loss, theta, state = real(*args, **kwargs)
        calls.append(1)
        return (loss * float("nan") if len(calls) % 2 else loss), theta, state

    monkeypatch.setattr(meta, "meta_loss_of_unroll", poisoned)
    result = meta.meta_train(_tiny_config(iterations=3), tmp_path / "w.pt")
    assert result.skipped == 3
    for name, value in result.record["state_dict"].items():
        assert torch.isfinite(value).all(), name
    # Diverging optimizees (a huge meta learning rate) do not poison it either.
    monkeypatch.setattr(meta, "meta_loss_of_unroll", real)
    result = meta.meta_train(_tiny_config(meta_lr=1e3, iterations=4), tmp_path / "x.pt")
    assert all(torch.isfinite(v).all() for v in result.record["state_dict"].values())


@pytest.mark.parametrize(
    ("kw", "text"),
    [
        ({"unroll": 3}, "unroll: 3"),
        ({"iterations": 0}, "iterations: 0"),
        ({"meta_lr": -1.0}, "meta_lr: -1.0"),
        ({"seed": -2}, "seed: -2"),
    ],
)
def test_invalid_meta_config_is_refused_naming_the_field(kw: dict, text: str) -> None:
    with pytest.raises(ValueError, match=text):
        _tiny_config(**kw)


def test_weights_files_are_checked_and_loaded_without_code(tmp_path: Path) -> None:
    record = _record("l2l")
    path = tmp_path / "w.pt"
    weights_io.save(path, record)
    net = weights_io.load_network(path, "l2l")
    assert not any(p.requires_grad for p in net.parameters())
    with pytest.raises(ValueError, match="holds 'l2l' weights"):
        weights_io.load(path, "mlp")
    torch.save({"format": "other"}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="format 'other'"):
        weights_io.load(tmp_path / "bad.pt", "l2l")
    with pytest.raises(ValueError, match="Invalid weights: 'nope'"):
        L2L([torch.nn.Parameter(torch.zeros(2))], weights="nope")
    with pytest.raises(ValueError, match="impl: 'compiled'"):
        L2L([torch.nn.Parameter(torch.zeros(2))], weights=record, impl="compiled")


def test_preprocessing_is_the_papers() -> None:
    g = torch.tensor([1.0, -1e-3, 1e-6, -1e-6, 0.0], dtype=torch.float64)
    x = nets.preprocess(g, 10.0)
    p = 10.0
    expected = torch.tensor(
        [
            [0.0, 1.0],
            [torch.log(torch.tensor(1e-3, dtype=torch.float64)).item() / p, -1.0],
            [-1.0, 1e-6 * torch.exp(torch.tensor(p)).item()],
            [-1.0, -1e-6 * torch.exp(torch.tensor(p)).item()],
            [-1.0, 0.0],
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(x, expected)


@pytest.mark.parametrize(("name", "kind"), [("l2l", "l2l"), ("learned_mlp", "mlp")])
def test_registered_with_bundled_weights(name: str, kind: str) -> None:
    assert weights_io.bundled(kind), f"no bundled {kind} weights"
    p = torch.nn.Parameter(torch.ones(3))
    opt = ravine.create(name, [p])
    assert isinstance(opt, KINDS[kind])
    total = sum(f.stat().st_size for f in weights_io.BUNDLED_DIR.rglob("*.pt"))
    assert total <= 100 * 1024, f"bundled weights take {total} bytes"


@pytest.mark.timeout(300)
def test_meta_train_and_meta_eval_commands(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from ravine.cli import main

    out = tmp_path / "w.pt"
    train = ["meta-train", "--task", "quadratic", "--iterations", "2", "--horizon", "4"]
    train += ["--unroll", "2", "--eval-every", "1", "--out", str(out), "--quiet"]
    assert main(train) == 0
    assert "wrote" in capsys.readouterr().out
    record = weights_io.load(out, "l2l")
    assert record["config"]["iterations"] == 2 and record["seed"] == 0
    evaluate = ["meta-eval", "--task", "quadratic", "--learned", f"l2l={out}", "--steps", "4"]
    evaluate += ["--baselines", "sgd", "adam", "--out-dir", str(tmp_path / "eval")]
    assert main(evaluate) == 0
    table = capsys.readouterr().out
    assert "l2l[w]" in table and "adam" in table and "ratio" in table
    # A horizon other than the paper's 100 is in the file names (a 200-step run keeps the
    # 100-step figures).
    assert (tmp_path / "eval" / "quadratic-steps4.png").stat().st_size > 0
    assert (tmp_path / "eval" / "quadratic-steps4.md").read_text().count("ratio") == 1
    with pytest.raises(SystemExit, match="Invalid --learned"):
        main(["meta-eval", "--learned", "adam=quadratic", "--out-dir", str(tmp_path / "e")])
    with pytest.raises(SystemExit, match="iterations: 0"):
        main(["meta-train", "--iterations", "0", "--out", str(tmp_path / "x.pt")])


def test_the_lstm_layers_are_torch_lstm_cells() -> None:
    """One step of CoordinateLSTM equals torch.nn.LSTMCell given the same weights (the fused
    [x, h] matrix split into weight_ih and weight_hh)."""
    net = nets.build("l2l", {"hidden": 5}, seed=4).double()
    gen = torch.Generator().manual_seed(4)
    g = torch.randn(7, generator=gen, dtype=torch.float64)
    state = torch.randn(7, net.state_size, generator=gen, dtype=torch.float64)
    (delta,), (new,) = net([g], [g], [state], 1)
    x = nets.preprocess(g, net.p)
    for layer, fused in enumerate(net.cells):
        cell = torch.nn.LSTMCell(x.shape[1], 5, dtype=torch.float64)
        with torch.no_grad():
            cell.weight_ih.copy_(fused.weight[:, : x.shape[1]])
            cell.weight_hh.copy_(fused.weight[:, x.shape[1] :])
            cell.bias_ih.copy_(fused.bias)
            cell.bias_hh.zero_()
        h0, c0 = state[:, 10 * layer : 10 * layer + 5], state[:, 10 * layer + 5 : 10 * layer + 10]
        h, c = cell(x, (h0, c0))
        torch.testing.assert_close(new[:, 10 * layer : 10 * layer + 5], h)
        torch.testing.assert_close(new[:, 10 * layer + 5 : 10 * layer + 10], c)
        x = h
    torch.testing.assert_close(delta, net.out(x).squeeze(-1) * net.output_scale)


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize(("kind", "task"), list(meta.PRESETS))
def test_bundled_weights_regenerate_bit_identically(kind: str, task: str, tmp_path: Path) -> None:
    """`ravine meta-train --kind K --task T` writes the bundled file byte for byte (minutes:
    2-3 alone on 2 cores for the quadratic; digits 93 s of CPU time, one thread)."""
    from ravine.cli import main
    from ravine.cli.meta_train import OTHER_ENVIRONMENT

    threads = torch.get_num_threads()
    try:
        out = tmp_path / "w.pt"
        args = ["meta-train", "--kind", kind, "--task", task, "--out", str(out), "--quiet"]
        status = main([*args, "--check-bundled"])
    finally:
        torch.set_num_threads(threads)
    if status == OTHER_ENVIRONMENT:
        # Computed on another kind of CPU or torch build: the bits cannot be compared, the
        # outcome can. Same preset, same seed: an optimizer at most 10% worse on the held-out
        # problems. Not two-sided: a last-bit difference in the first steps sends meta-training
        # down another path, and the paths land on either side (the L2L quadratic preset, whose
        # file scores 143.9: 137.8 on AVX512 kernels, 133.0 on ATen's default ones, 127.6 on
        # AVX2 ones). What this guards against is a preset that no longer trains as well.
        ours = weights_io.load(out, kind)["evaluation"]["held_out_summed_loss"]
        theirs = weights_io.load(task, kind)["evaluation"]["held_out_summed_loss"]
        assert ours <= 1.1 * theirs, (ours, theirs)
        made_on = weights_io.load(task, kind).get("made_on") or "an unrecorded machine"
        pytest.xfail(
            f"bundled {kind}/{task} was computed on {made_on}, this machine is "
            f"{weights_io.environment()}: bit-identity is promised on the same kind only "
            f"(held-out {ours:.4g} here, {theirs:.4g} bundled)"
        )
    assert status == 0


def test_check_bundled_tells_another_environment_from_a_difference(tmp_path: Path) -> None:
    """--check-bundled: identical -> 0; different bits from the same environment -> 1; a bundled
    file from another CPU kind or torch build (or unrecorded) -> 3, with both held-out scores."""
    from ravine.cli.meta_train import OTHER_ENVIRONMENT, check_bundled

    net = nets.build("mlp", {})
    record = weights_io.record
    base = record(net, task="digits", seed=0, evaluation={"held_out_summed_loss": 20.0})
    bundled, out = tmp_path / "bundled.pt", tmp_path / "out.pt"
    weights_io.save(bundled, base)
    weights_io.save(out, base)
    assert check_bundled(out, bundled) == 0
    weights_io.save(out, {**base, "evaluation": {"held_out_summed_loss": 21.0}})
    assert check_bundled(out, bundled) == 1
    other = {**base["made_on"], "cpu_capability": "some other ISA"}
    weights_io.save(bundled, {**base, "made_on": other})
    assert check_bundled(out, bundled) == OTHER_ENVIRONMENT
    unrecorded = {k: v for k, v in base.items() if k != "made_on"}
    weights_io.save(bundled, unrecorded)
    assert check_bundled(out, bundled) == OTHER_ENVIRONMENT
    assert check_bundled(out, tmp_path / "missing.pt") == 1


def test_meta_train_flags_override_the_preset() -> None:
    """Flags given replace the preset's fields, the others stay the preset's (the documented
    150-iteration quadratic run is the preset plus three flags)."""
    import argparse

    from ravine.cli import meta_train

    parser = argparse.ArgumentParser()
    meta_train.add_arguments(parser)
    flags = "--task quadratic --iterations 150 --eval-every 25 --meta-lr-final 0.1 --seed 2"
    config = meta_train.config_from(parser.parse_args(flags.split()))
    expected = dataclasses.replace(
        meta.preset("l2l", "quadratic"),
        iterations=150,
        eval_every=25,
        meta_lr_final=0.1,
        seed=2,
    )
    assert config == expected
    digits = meta_train.config_from(parser.parse_args(["--kind", "mlp", "--task", "digits"]))
    assert digits.second_order
    first = "--kind mlp --task digits --no-second-order"
    assert not meta_train.config_from(parser.parse_args(first.split())).second_order
    with pytest.raises(ValueError, match="meta_lr_final: 0"):
        meta_train.config_from(parser.parse_args(["--meta-lr-final", "0"]))


def test_meta_lr_warmup_rises_linearly_then_follows_the_cosine() -> None:
    config = meta.MetaConfig(iterations=100, meta_lr=0.01, meta_lr_final=0.1, meta_lr_warmup=20)
    plain = dataclasses.replace(config, meta_lr_warmup=0)
    lrs = [meta._meta_lr(config, i) for i in range(100)]
    assert lrs[0] == pytest.approx(meta._meta_lr(plain, 0) / 20)
    assert lrs[9] == pytest.approx(meta._meta_lr(plain, 9) / 2)
    assert lrs[20:] == [meta._meta_lr(plain, i) for i in range(20, 100)]
    assert all(a < b for a, b in itertools.pairwise(lrs[:20]))
    # without a warmup, the configuration (and so a weights file's bytes) has no such field
    assert "meta_lr_warmup" not in plain.as_dict()
    assert config.as_dict()["meta_lr_warmup"] == 20
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="meta_lr_warmup"):
            meta.MetaConfig(meta_lr_warmup=bad)  # type: ignore[arg-type]
