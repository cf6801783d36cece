"""Shared fixtures; tests/ is on sys.path so tests import optim_specs, optim_harness and reference.

A test module opts in with ``pytestmark = pytest.mark.usefixtures("one_thread")`` or
``@pytest.mark.usefixtures("float64_default")``; a module that defines a fixture of the same
name uses its own.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
# What the tests' `ravine serve` processes keep between starts goes to a folder of this run,
# not the user's ~/.cache/ravine (ravine.serve.startcache).
os.environ["RAVINE_CACHE_DIR"] = tempfile.mkdtemp(prefix="ravine-tests-cache-")
atexit.register(shutil.rmtree, os.environ["RAVINE_CACHE_DIR"], ignore_errors=True)


@pytest.fixture
def float64_default() -> Iterator[None]:
    """float64 as torch's default dtype: torch.optim keeps scalar state (step, mu_product) in
    the default dtype, and in float64 a comparison is not limited by float32 scalars."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread for a module of tiny tensors: more only adds contention on a busy
    machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
