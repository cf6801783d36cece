"""Models: shapes, parameter counts from the papers, the BatchNorm switch, and that they train."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ravine import models

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (tests/conftest.py)


CASES = [
    ("logreg", (1, 28, 28)),
    ("mlp", (1, 28, 28)),
    ("mlp", (1, 8, 8)),
    ("lenet5", (1, 28, 28)),
    ("lenet5", (3, 32, 32)),
    ("cnn1d", (40,)),
    ("resnet18", (1, 28, 28)),
    ("resnet18", (3, 32, 32)),
]


def _n_bn(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@pytest.mark.parametrize(("name", "shape"), CASES)
@pytest.mark.parametrize("batchnorm", [False, True])
def test_output_shape_and_batchnorm_switch(name, shape, batchnorm):
    torch.manual_seed(0)
    model = models.create(name, shape, 10, batchnorm=batchnorm)
    out = model(torch.randn(3, *shape))
    assert out.shape == (3, 10)
    assert (_n_bn(model) > 0) is batchnorm


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("name", "shape", "batchnorm", "expected"),
    [
        ("logreg", (1, 28, 28), False, 784 * 10 + 10),
        # 784-500-500-10
        ("mlp", (1, 28, 28), False, 784 * 500 + 500 + 500 * 500 + 500 + 500 * 10 + 10),
        # LeCun et al. (1998) layout: 156 + 2416 + 48120 + 10164 + 850
        ("lenet5", (1, 28, 28), False, 61706),
        # the CIFAR ResNet-18 count everyone quotes; 1-channel input saves 2 * 64 * 9 weights
        ("resnet18", (3, 32, 32), True, 11_173_962),
        ("resnet18", (1, 28, 28), True, 11_173_962 - 2 * 64 * 9),
        # MNIST-1D paper CNN: conv(1->25,5) + 2 conv(25->25,3) + linear(125 -> 10)
        ("cnn1d", (40,), False, 150 + 2 * (25 * 25 * 3 + 25) + 1260),
    ],
)
def test_parameter_counts(name, shape, batchnorm, expected):
    assert _n_params(models.create(name, shape, 10, batchnorm=batchnorm)) == expected


@pytest.mark.parametrize(("name", "shape"), [c for c in CASES if c[0] != "resnet18"])
@pytest.mark.parametrize("batchnorm", [False, True])
def test_models_fit_a_small_batch(name, shape, batchnorm):
    torch.manual_seed(0)
    model = models.create(name, shape, 10, batchnorm=batchnorm)
    x, y = torch.randn(32, *shape), torch.arange(32) % 10
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        loss = nn.functional.cross_entropy(model(x), y)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


@pytest.mark.parametrize("batchnorm", [False, True])
def test_resnet18_trains_on_1_channel_28x28(batchnorm):
    torch.manual_seed(0)
    model = models.ResNet18((1, 28, 28), 10, batchnorm=batchnorm, width=8)
    y = torch.arange(16) % 10
    x = torch.randn(10, 1, 28, 28)[y] + 0.3 * torch.randn(16, 1, 28, 28)  # noisy class templates
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(20):
        loss = nn.functional.cross_entropy(model(x), y)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < 0.7 * losses[0]


@pytest.mark.parametrize(
    ("name", "shape", "classes", "match"),
    [
        ("mlp", (1, 0, 28), 10, "input_shape"),
        ("lenet5", (28, 28), 10, "input_shape must have 3"),
        ("lenet5", (1, 8, 8), 10, "at least 12x12"),
        ("logreg", (4,), 1, "num_classes"),
        ("vgg", (1, 28, 28), 10, "model must be one of"),
    ],
)
def test_bad_arguments(name, shape, classes, match):
    with pytest.raises(ValueError, match=match):
        models.create(name, shape, classes)


@pytest.mark.parametrize(
    ("name", "shape", "default_bn"), [("resnet18", (1, 28, 28), True), ("mlp", (4,), False)]
)
def test_create_keeps_the_model_default_batchnorm(name, shape, default_bn):
    assert (_n_bn(models.create(name, shape, 10)) > 0) is default_bn


def test_mlp_hidden_sizes():
    model = models.MLP((4,), 3, hidden=(7,))
    assert [m.out_features for m in model if isinstance(m, nn.Linear)] == [7, 3]
    with pytest.raises(ValueError, match="hidden"):
        models.MLP((4,), 3, hidden=())
