"""TL: every operation gives the same result through foreach kernels and per-tensor ops, with
Python scalars, 0-d tensor scalars and per-tensor scalar lists."""

from __future__ import annotations

import pytest
import torch

from ravine.tensorlist import TL


def _lists(seed: int = 0) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    shapes = [(3,), (2, 4), (5, 1, 2)]
    a = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    b = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    c = [torch.rand(s, generator=gen, dtype=torch.float64) + 0.5 for s in shapes]
    return a, b, c


OPS = {
    "add_scalar": lambda x, y, z: x.add_(0.5),
    "add_list_alpha": lambda x, y, z: x.add_(y, alpha=-0.3),
    "add_tensor_alpha": lambda x, y, z: x.add_(y, alpha=torch.tensor(-0.3, dtype=torch.float64)),
    "add_out_of_place": lambda x, y, z: x.add(y, alpha=2.0),
    "mul_scalar": lambda x, y, z: x.mul_(1.5),
    "mul_tensor": lambda x, y, z: x.mul_(torch.tensor(1.5, dtype=torch.float64)),
    "mul_scalars": lambda x, y, z: x.mul_([1.0, 2.0, 3.0]),
    "mul_list": lambda x, y, z: x.mul_(y),
    "mul_out_of_place": lambda x, y, z: x.mul(y),
    "div_list": lambda x, y, z: x.div_(z),
    "div_out_of_place": lambda x, y, z: x.div(z),
    "lerp": lambda x, y, z: x.lerp_(y, 0.1),
    "addcmul": lambda x, y, z: x.addcmul_(y, z, value=-0.2),
    "addcmul_tensor": lambda x, y, z: x.addcmul_(
        y, z, value=torch.tensor(0.2, dtype=torch.float64)
    ),
    "addcdiv": lambda x, y, z: x.addcdiv_(y, z, value=0.7),
    "addcdiv_scalars": lambda x, y, z: x.addcdiv_(y, z, value=[0.1, 0.2, 0.3]),
    "addcdiv_tensor": lambda x, y, z: x.addcdiv_(
        y, z, value=torch.tensor(0.7, dtype=torch.float64)
    ),
    "maximum": lambda x, y, z: x.maximum_(y),
    "clamp": lambda x, y, z: x.clamp_(min=-0.5, max=0.5),
    "sqrt": lambda x, y, z: z.sqrt(),
    "sqrt_": lambda x, y, z: z.sqrt_(),
    "reciprocal_": lambda x, y, z: z.reciprocal_(),
    "abs_sign_neg": lambda x, y, z: x.abs().add_(x.sign()).neg(),
    "operators": lambda x, y, z: x * 2.0 - y * z - 0.5,
    "copy_clone": lambda x, y, z: x.copy_(y).add_(z.clone()),
    "map": lambda x, y, z: x.map(lambda a, b: torch.where(a > 0, a, b), y),
}


@pytest.mark.parametrize("op", OPS)
def test_foreach_equals_loop(op: str) -> None:
    results = []
    for foreach in (True, False):
        a, b, c = _lists()
        x, y, z = (TL(t, foreach=foreach) for t in (a, b, c))
        out = OPS[op](x, y, z)
        results.append([t.clone() for t in out] + [t.clone() for t in a])
    for r1, r2 in zip(*results):
        torch.testing.assert_close(r1, r2, rtol=1e-14, atol=1e-15)


def test_in_place_ops_return_self_and_write_through() -> None:
    a, b, _ = _lists()
    x = TL(a)
    assert x.mul_(2.0).add_(TL(b)) is x
    torch.testing.assert_close(a[0], _lists()[0][0] * 2 + _lists()[1][0])


def test_container_protocol() -> None:
    a, _, _ = _lists()
    x = TL(a)
    assert len(x) == 3
    assert x[1] is a[1]
    assert list(x) == a
    assert "(2, 4)" in repr(x)
