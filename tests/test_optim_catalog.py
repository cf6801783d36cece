"""The catalog: one row per registered optimizer, and what reads it agrees with it."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from optim_harness import make_model, max_rel_diff, params_of, train
from ravine.optim import catalog, registry

README = Path(__file__).resolve().parents[1] / "README.md"
NAMES = catalog.names()


def test_catalog_imports_alone() -> None:
    """No import cycle: the catalog imports in a fresh interpreter before anything else."""
    subprocess.run([sys.executable, "-c", "import ravine.optim.catalog"], check=True)


def test_registry_is_the_catalog() -> None:
    assert registry.names() == NAMES
    for row in catalog.ROWS:
        entry = registry.get(row.name)
        assert entry.factory is row.cls and entry.paper == str(row.paper)
        assert entry.defaults == row.defaults


def test_readme_table_is_the_catalogs() -> None:
    text = README.read_text()
    match = re.search(
        r"<!-- optimizer table:[^\n]*-->\n(.*?)<!-- end of optimizer table -->", text, re.S
    )
    assert match, "README.md lost the optimizer table's markers"
    assert match.group(1) == catalog.readme_table(), (
        "README.md's optimizer table differs from the catalog; paste catalog.readme_table()"
    )


@pytest.mark.parametrize("name", NAMES)
def test_class_paper_attribute_agrees(name: str) -> None:
    """The classes still carry a ``paper`` string: it must cite the catalog's paper."""
    row = catalog.get(name)
    cited = getattr(row.cls, "paper", "")
    surname = re.split(r"[ ,&]", row.paper.authors)[0]
    assert surname in cited and str(row.paper.year) in cited, cited
    if row.paper.arxiv:
        assert f"arXiv:{row.paper.arxiv}" in cited, cited


@pytest.mark.parametrize("name", NAMES)
def test_tested_settings_are_accepted(name: str) -> None:
    """Every setting names hyperparameters the optimizer takes (the registry refuses others)."""
    row = catalog.get(name)
    assert set(row.readme_defaults) <= set(row.defaults)
    settings = [row.rosenbrock, *([row.mnist1d] if row.mnist1d else []), *row.surfaces.values()]
    for setting in settings:
        registry.create(name, [torch.nn.Parameter(torch.zeros(2))], **setting.hp)


@pytest.mark.parametrize("name", [r.name for r in catalog.ROWS if r.torch_rule])
def test_torch_rule_is_the_same_update(name: str) -> None:
    """Given ravine's defaults explicitly, the torch.optim class named computes the same steps."""
    row = catalog.get(name)
    torch_cls = getattr(torch.optim, row.torch_rule)
    accepted = inspect.signature(torch_cls).parameters
    hp = {k: v for k, v in row.defaults.items() if k in accepted}
    assert set(row.defaults) - set(hp) <= {"impl"}, "a default torch.optim cannot be given"
    ours, _ = train(lambda ps: row.cls(ps, **hp), 5)
    theirs, _ = train(lambda ps: torch_cls(ps, **hp), 5)
    assert max_rel_diff(params_of(ours), params_of(theirs)) < 1e-10
    assert max_rel_diff(params_of(ours), params_of(make_model())) > 0  # it moved


@pytest.mark.slow
def test_demo_rosenbrock_settings_work() -> None:
    """The catalog's Rosenbrock settings are what the demo shows: each one must get close."""
    from ravine import demo

    for name, hp, loss, dist in demo.rosenbrock_table(5000):
        assert loss < 1e-2 and dist < 0.2, f"{name} ({hp}): loss {loss:.2e}, |x - x*| {dist:.2e}"
