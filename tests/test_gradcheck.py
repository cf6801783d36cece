"""gradcheck passes right gradients and flags deliberately wrong ones."""

from __future__ import annotations

import pytest
import torch

from ravine import gradcheck


class Softplus(torch.autograd.Function):
    """softplus(x) = log(1 + e^x), with a switchable bug in the backward pass."""

    buggy = False

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.nn.functional.softplus(x)

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)
        # the bug: the derivative of softplus is sigmoid, not sigmoid * (1 - sigmoid)
        return grad_out * (s * (1 - s) if Softplus.buggy else s)


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 5, generator=g, dtype=torch.float64)
    y = (torch.rand(32, generator=g, dtype=torch.float64) > 0.5).double()
    return x, y


def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 1)
    ).double()


@pytest.mark.parametrize("buggy", [False, True])
def test_custom_backward(data, buggy, monkeypatch):
    x, y = data
    monkeypatch.setattr(Softplus, "buggy", buggy)
    model = _mlp()

    def loss():
        return Softplus.apply(model(x).squeeze(1) * (1 - 2 * y)).mean()

    result = gradcheck(loss, model.named_parameters())
    assert set(result.errors) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert result.passed is (not buggy)
    if buggy:
        assert result.worst > 1e-2
        assert result.failed
    else:
        assert result.worst < 1e-6


def test_user_supplied_gradient_of_logistic_regression(data):
    x, y = data
    w = torch.randn(5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def loss():
        return torch.nn.functional.binary_cross_entropy_with_logits(x @ w, y)

    right = x.T @ (torch.sigmoid(x @ w) - y) / len(y)
    wrong = x.T @ (torch.sigmoid(x @ w) - y) / len(y) ** 0.5  # mis-normalized
    assert gradcheck(loss, [w], [right]).passed
    bad = gradcheck(loss, {"w": w}, [wrong])
    assert not bad and bad.failed == ["w"]
    assert "FAIL" in str(bad)


def test_only_the_wrong_parameter_is_flagged(data):
    x, y = data
    model = _mlp()

    def loss():
        return torch.nn.functional.binary_cross_entropy_with_logits(model(x).squeeze(1), y)

    grads = torch.autograd.grad(loss(), list(model.parameters()))
    grads = [g.clone() for g in grads]
    grads[2][0, 3] += 0.1  # one entry of the second weight matrix is off
    result = gradcheck(loss, model.named_parameters(), grads, max_entries=None)
    assert result.failed == ["2.weight"]


def test_params_are_restored_exactly(data):
    x, _ = data
    model = _mlp()
    before = [p.detach().clone() for p in model.parameters()]
    gradcheck(lambda: model(x).pow(2).mean(), model.parameters())
    for b, p in zip(before, model.parameters()):
        assert torch.equal(b, p)


def test_float32_uses_looser_defaults():
    w = torch.randn(10, requires_grad=True)
    result = gradcheck(lambda: (w.sin() * w).sum(), [w])
    assert result.passed and result.tolerance == 1e-2


def test_max_entries_subsamples():
    w = torch.randn(1000, dtype=torch.float64, requires_grad=True)
    result = gradcheck(lambda: w.pow(3).sum(), [w], max_entries=50, tolerance=1e-3)
    assert result.checked == {"param0": 50} and result.passed


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"eps": 0.0}, "eps must be"),
        ({"tolerance": -1.0}, "tolerance must be"),
        ({"max_entries": 0}, "max_entries must be"),
    ],
)
def test_bad_arguments(kwargs, match):
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match=match):
        gradcheck(lambda: w.sum(), [w], **kwargs)


def test_wrong_grad_shapes_and_counts():
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match="one tensor per param"):
        gradcheck(lambda: w.sum(), [w], [])
    with pytest.raises(ValueError, match="shape"):
        gradcheck(lambda: w.sum(), [w], [torch.zeros(4)])
    with pytest.raises(ValueError, match="scalar"):
        gradcheck(lambda: w * 2, [w])
