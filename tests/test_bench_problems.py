"""The problems table and users' own problems (module:function)."""

from __future__ import annotations

import pytest
import torch

from ravine.bench import problems

ISSUE_PROBLEMS = [
    "mnist-logreg", "mnist-mlp", "mnist-lenet5", "fashion-logreg", "fashion-mlp",
    "fashion-lenet5", "mnist1d-logreg", "mnist1d-mlp", "mnist1d-cnn", "digits-mlp",
    "sparse-logreg", "fashion-resnet18", "cifar10-resnet18",
]  # fmt: skip


def test_the_table_holds_the_issues_problems() -> None:
    assert set(ISSUE_PROBLEMS) <= set(problems.names())
    for p in problems.PROBLEMS:
        assert p.batch_size >= 1 and p.epochs >= 1 and p.metric in ("val_accuracy", "val_loss")


def test_same_seed_same_initial_weights_whatever_the_optimizer() -> None:
    p = problems.get("digits-mlp")
    a, b, c = problems.build(p, 5), problems.build(p, 5), problems.build(p, 6)
    for x, y in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(x, y)
    assert not torch.equal(next(a.model.parameters()), next(c.model.parameters()))
    assert len(a.train[0]) + len(a.val[0]) + len(a.test[0]) == 1797


def test_cifar10_needs_a_data_dir() -> None:
    with pytest.raises(ValueError, match="needs --data-dir"):
        problems.get("cifar10-resnet18")


def test_user_problem_is_built_by_its_function() -> None:
    p = problems.user_problem("bench_tiny:linear", batch_size=16, epochs=2)
    built = problems.build(p, 0)
    assert isinstance(built.model, torch.nn.Linear) and len(built.train[0]) == 400


@pytest.mark.parametrize(
    "spec, error, message",
    [
        ("bench_tiny:raises", RuntimeError, "broken on purpose"),
        (
            "bench_tiny:wrong_types",
            TypeError,
            r"must return \(model, loss_fn, \(train, val, test\)\)",
        ),
        ("bench_tiny:nothing_here", TypeError, "is not a function of module"),
    ],
)
def test_a_bad_factory_raises_a_clear_error(spec: str, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        problems.build(problems.user_problem(spec), 0)


@pytest.mark.parametrize("spec", ["nocolon", "a b:c", "mod:", ":f", "mod:1x"])
def test_a_malformed_spec_is_refused(spec: str) -> None:
    with pytest.raises(ValueError, match=r"package\.module:function"):
        problems.user_problem(spec)


def test_unknown_problem_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="mnist-mlp"):
        problems.get("mnist-transformer")


def test_a_recorded_spec_gives_back_the_problem() -> None:
    import json

    for p in problems.PROBLEMS:
        assert problems.Problem.from_spec(p.spec()) == p
    # through the store's JSON (tuples become lists) the model is the same
    p = problems.get("digits-mlp")
    again = problems.Problem.from_spec(json.loads(json.dumps(p.spec())))
    sizes = [t.shape for t in problems.build(again, 0).model.parameters()]
    assert sizes == [t.shape for t in problems.build(p, 0).model.parameters()]
