"""Models used in the comparison experiments, each with a BatchNorm on/off switch.

Batch normalization (Ioffe & Szegedy, 2015, arXiv:1502.03167) is inserted after each affine or
convolution layer and before its nonlinearity when ``batchnorm=True``; with it off, the layer is
an ``nn.Identity`` and the preceding layer keeps its bias.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

__all__ = [
    "MLP",
    "MODELS",
    "Conv1DNet",
    "LeNet5",
    "LogisticRegression",
    "ResNet18",
    "create",
]


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _check_shape(input_shape: Sequence[int], num_classes: int, ndim: int | None = None) -> None:
    if not input_shape or any(int(s) < 1 for s in input_shape):
        raise ValueError(f"input_shape must be positive sizes, got {tuple(input_shape)!r}")
    if ndim is not None and len(input_shape) != ndim:
        raise ValueError(
            f"input_shape must have {ndim} dimensions (channels, ...), got {tuple(input_shape)!r}"
        )
    if not (isinstance(num_classes, int) and num_classes >= 2):
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")


def _bn1d(n: int, on: bool) -> nn.Module:
    return nn.BatchNorm1d(n) if on else nn.Identity()


def _bn2d(n: int, on: bool) -> nn.Module:
    return nn.BatchNorm2d(n) if on else nn.Identity()


class LogisticRegression(nn.Sequential):
    """Multinomial logistic regression: softmax(W x + b), trained with cross-entropy.

    With ``batchnorm`` the inputs are standardised by a BatchNorm over features first.
    """

    def __init__(
        self, input_shape: Sequence[int], num_classes: int, *, batchnorm: bool = False
    ) -> None:
        _check_shape(input_shape, num_classes)
        d = _numel(input_shape)
        super().__init__(nn.Flatten(), _bn1d(d, batchnorm), nn.Linear(d, num_classes))


class MLP(nn.Sequential):
    """Fully connected ReLU network; default 2 hidden layers of 500 as in the comparison runs."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        hidden: Sequence[int] = (500, 500),
        batchnorm: bool = False,
    ) -> None:
        _check_shape(input_shape, num_classes)
        if not hidden or any(int(h) < 1 for h in hidden):
            raise ValueError(f"hidden must be positive layer widths, got {tuple(hidden)!r}")
        layers: list[nn.Module] = [nn.Flatten()]
        d = _numel(input_shape)
        for h in hidden:
            layers += [nn.Linear(d, h, bias=not batchnorm), _bn1d(h, batchnorm), nn.ReLU()]
            d = h
        layers.append(nn.Linear(d, num_classes))
        super().__init__(*layers)


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al., 1998): conv5-pool-conv5-pool-120-84-classes, with ReLU/max-pool.

    28x28 inputs are padded by 2 so the feature maps match the paper's 32x32 design; other
    sizes work because the first fully connected layer is sized from a dry run.
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 28, 28),
        num_classes: int = 10,
        *,
        batchnorm: bool = False,
    ) -> None:
        super().__init__()
        _check_shape(input_shape, num_classes, ndim=3)
        c, h, w = (int(s) for s in input_shape)
        if min(h, w) < 12:
            raise ValueError(f"input_shape must be at least 12x12 for LeNet-5, got {h}x{w}")
        pad = 2 if min(h, w) < 32 else 0
        self.features = nn.Sequential(
            nn.Conv2d(c, 6, 5, padding=pad, bias=not batchnorm),
            _bn2d(6, batchnorm),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5, bias=not batchnorm),
            _bn2d(16, batchnorm),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(2, c, h, w)).shape[1]
        self.classifier = nn.Sequential(
            nn.Linear(flat, 120, bias=not batchnorm),
            _bn1d(120, batchnorm),
            nn.ReLU(),
            nn.Linear(120, 84, bias=not batchnorm),
            _bn1d(84, batchnorm),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class Conv1DNet(nn.Module):
    """The 1-D CNN of the MNIST-1D paper (Greydanus & Kobak, 2020, arXiv:2011.14439).

    Three conv layers (25 channels, stride 2) and a linear classifier; inputs (N, length) or
    (N, 1, length).
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (40,),
        num_classes: int = 10,
        *,
        channels: int = 25,
        batchnorm: bool = False,
    ) -> None:
        super().__init__()
        _check_shape(input_shape, num_classes)
        length = int(input_shape[-1])
        self.features = nn.Sequential(
            nn.Conv1d(1, channels, 5, stride=2, padding=1, bias=not batchnorm),
            nn.BatchNorm1d(channels) if batchnorm else nn.Identity(),
            nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1, bias=not batchnorm),
            nn.BatchNorm1d(channels) if batchnorm else nn.Identity(),
            nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1, bias=not batchnorm),
            nn.BatchNorm1d(channels) if batchnorm else nn.Identity(),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(2, 1, length)).shape[1]
        self.classifier = nn.Linear(flat, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x.reshape(x.shape[0], 1, x.shape[-1])))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut (He et al., 2015)."""

    def __init__(self, cin: int, cout: int, stride: int, batchnorm: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=not batchnorm)
        self.bn1 = _bn2d(cout, batchnorm)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=not batchnorm)
        self.bn2 = _bn2d(cout, batchnorm)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=not batchnorm), _bn2d(cout, batchnorm)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18, CIFAR-style (He et al., 2015, arXiv:1512.03385).

    A 3x3 stride-1 stem without max-pool keeps small images (32x32 RGB, 28x28 grayscale) from
    shrinking to nothing; global average pooling makes the head independent of input size.
    Without BatchNorm each residual branch's last convolution starts at zero, so every block
    starts as its shortcut and 18 layers stay trainable (as in Fixup, Zhang et al., 2019,
    arXiv:1901.09321).
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (3, 32, 32),
        num_classes: int = 10,
        *,
        batchnorm: bool = True,
        width: int = 64,
    ) -> None:
        super().__init__()
        _check_shape(input_shape, num_classes, ndim=3)
        c = int(input_shape[0])
        self.stem = nn.Sequential(
            nn.Conv2d(c, width, 3, 1, 1, bias=not batchnorm), _bn2d(width, batchnorm), nn.ReLU()
        )
        blocks: list[nn.Module] = []
        cin = width
        for i, cout in enumerate((width, 2 * width, 4 * width, 8 * width)):
            for j in range(2):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(cin, cout, stride, batchnorm))
                cin = cout
        self.layers = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)
        )
        # He et al. (2015, arXiv:1502.01852) init, as torchvision: torch's default conv init
        # shrinks activations layer by layer, which only BatchNorm would undo.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if not batchnorm:
            for block in blocks:
                assert isinstance(block, BasicBlock)
                nn.init.zeros_(block.conv2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(self.stem(x)))


MODELS: dict[str, Callable[..., nn.Module]] = {
    "logreg": LogisticRegression,
    "mlp": MLP,
    "lenet5": LeNet5,
    "cnn1d": Conv1DNet,
    "resnet18": ResNet18,
}


def create(
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    *,
    batchnorm: bool | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a model by name (``MODELS`` keys) for inputs of ``input_shape`` (without batch).

    ``batchnorm=None`` keeps the model's own default (on for ResNet-18, off for the others).
    """
    try:
        factory = MODELS[name]
    except KeyError:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {name!r}") from None
    if batchnorm is not None:
        kwargs["batchnorm"] = batchnorm
    return factory(tuple(input_shape), num_classes, **kwargs)
