"""The non-finite guard's cheap paths for tiny parameters (ravine.viz's 2-element points) give
what its general paths give: max|x| read on the host, and the hyperparameter scale read by
exact type."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from ravine.optim import guard
from ravine.optim.guard import SMALL_NUMEL, hyperparameter_scale, max_abs

NAN, INF = math.nan, math.inf


def _general(tensors: list[torch.Tensor]) -> Any:
    """max_abs with the small path turned off: the reference."""
    saved = guard.SMALL_NUMEL
    guard.SMALL_NUMEL = -1
    try:
        return max_abs(tensors)
    finally:
        guard.SMALL_NUMEL = saved


def t(values: Any, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype)


CASES = {
    "one point": [t([0.5, -1.5])],
    "several dtypes": [t([1.0, -2.0]), t([3.0, -0.25], torch.float32), t([7.0], torch.float16)],
    "bfloat16": [t([-3.5, 2.0], torch.bfloat16)],
    "zeros and -0.0": [t([0.0, -0.0]), t([-0.0])],
    "an empty tensor": [t([]), t([2.0, -4.0])],
    "only empty": [t([]), t([], torch.float32)],
    "nothing": [],
    "NaN": [t([1.0, NAN])],
    "NaN first": [t([NAN, 1.0])],
    "Inf": [t([1.0, 2.0]), t([-INF, 0.0], torch.float32)],
    "huge but finite": [t([1e308, -1.7e308])],
    "float16 max": [t([65504.0, -1.0], torch.float16)],
    "a 0-d tensor": [t(-3.0)],
    "a matrix": [t([[1.0, -9.0], [3.0, 4.0]])],
    "non-contiguous": [t([[1.0, -9.0, 5.0], [3.0, 4.0, -11.0]]).t()],
    "integers": [torch.tensor([3, -7])],
    "at the size limit": [torch.linspace(-5, 3, SMALL_NUMEL, dtype=torch.float64)],
    "past the size limit": [torch.linspace(-5, 3, SMALL_NUMEL + 1, dtype=torch.float64)],
    "complex (general path)": [torch.tensor([1 + 2j, -3 - 0.5j])],
    "sparse (general path)": [t([[0.0, -6.0], [2.0, 0.0]]).to_sparse()],
}


@pytest.mark.parametrize("name", CASES)
def test_max_abs_small_path_equals_the_general_one(name: str) -> None:
    tensors = CASES[name]
    got, want = max_abs(tensors), _general(tensors)
    assert got == want
    if got is not None:  # the same keys, and values that compare equal in the same order
        assert list(got) == list(want)


def test_max_abs_small_path_is_taken_and_reads_each_tensor_once() -> None:
    handled, bounds = guard._small_max_abs([t([1.0, -2.0])])
    assert handled and bounds == {(torch.device("cpu"), torch.float64): 2.0}
    assert guard._small_max_abs([torch.zeros(SMALL_NUMEL + 1)]) == (False, None)
    assert guard._small_max_abs([torch.tensor([1j])]) == (False, None)


@pytest.mark.parametrize(
    ("group", "expected"),
    [
        ({"lr": 0.1, "betas": (0.9, 0.999), "eps": 1e-8}, 1.0),
        ({"lr": 1e300}, 1e300),
        ({"lr": -7}, 7),
        ({"betas": [0.5, (3.0, -40.0)]}, 40.0),
        ({"lr": True, "maximize": True, "nesterov": False}, 1.0),  # flags are not scales
        ({"lr": None, "name": "x" * 10}, 1.0),
        ({"lr": np.float64(250.0)}, 250.0),  # numpy scalars: through the general checks
        ({"lr": np.int64(-30)}, 1.0),  # not a Python int: ignored, as it always was
        ({"lr": torch.tensor(12.0)}, 12.0),  # a 0-d tensor
        ({"lr": torch.tensor([12.0, 1.0])}, 1.0),  # not a scalar: ignored
        ({"lr": 2.0, "other": 1e9}, 2.0),  # only the keys asked for
    ],
)
def test_hyperparameter_scale(group: dict[str, Any], expected: float) -> None:
    keys = [k for k in group if k != "other"]
    assert hyperparameter_scale(group, keys) == expected
