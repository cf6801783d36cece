"""Every optimizer by name, with its defaults and paper: ``ravine.create("adam", params, lr=1e-3)``.

An entry maps a lower-case name to a factory (usually the class) called as
``factory(params, **hyperparameters)``. ravine's own optimizers are registered from
:mod:`ravine.optim.catalog`; later modules add theirs with :func:`register`.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from ravine.optim import catalog
from ravine.optim.base import Optimizer


@dataclass(frozen=True)
class Entry:
    """A registered optimizer: its name, factory, fixed keyword arguments and paper reference."""

    name: str
    factory: Callable[..., torch.optim.Optimizer]
    paper: str
    fixed: dict[str, Any] = field(default_factory=dict)

    @property
    def defaults(self) -> dict[str, Any]:
        """The hyperparameters the factory takes, with their default values."""
        return {**catalog.signature_defaults(self.factory), **self.fixed}

    def accepted(self) -> set[str] | None:
        """Keyword arguments the factory takes, or None when it forwards arbitrary ones."""
        params = inspect.signature(self.factory).parameters
        names = {n for n, p in params.items() if p.kind is not p.VAR_KEYWORD} - {"params"}
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return names
        if isinstance(self.factory, type) and issubclass(self.factory, Optimizer):
            # **options go to ravine's base class: its keyword-only options are the rest.
            base = inspect.signature(Optimizer.__init__).parameters
            return names | {n for n, p in base.items() if p.kind is p.KEYWORD_ONLY}
        return None

    def create(self, params: Iterable[Any], **hyperparameters: Any) -> torch.optim.Optimizer:
        accepted = self.accepted()
        unknown = sorted(set(hyperparameters) - accepted) if accepted is not None else []
        if unknown:
            hints = {u: difflib.get_close_matches(u, accepted, n=1) for u in unknown}
            said = ", ".join(
                f"{u!r}" + (f" (did you mean {hints[u][0]!r}?)" if hints[u] else "")
                for u in unknown
            )
            raise ValueError(
                f"Unknown hyperparameter {said} for optimizer {self.name!r} "
                f"(accepted: {', '.join(sorted(accepted))})"
            )
        return self.factory(params, **{**self.fixed, **hyperparameters})


_REGISTRY: dict[str, Entry] = {}


def register(
    name: str,
    factory: Callable[..., torch.optim.Optimizer],
    *,
    paper: str | None = None,
    **fixed: Any,
) -> Entry:
    """Add ``name`` (case-insensitive); ``paper`` defaults to the factory's ``paper`` attribute."""
    key = name.lower()
    if key in _REGISTRY:
        raise ValueError(f"optimizer {name!r} is already registered")
    entry = Entry(
        key, factory, paper if paper is not None else getattr(factory, "paper", ""), fixed
    )
    _REGISTRY[key] = entry
    return entry


def names() -> list[str]:
    """Registered names, in registration order."""
    return list(_REGISTRY)


def get(name: str) -> Entry:
    """The entry for ``name``; an unknown name raises ValueError listing the closest names."""
    key = name.lower().strip()
    if key in _REGISTRY:
        return _REGISTRY[key]
    close = difflib.get_close_matches(key, _REGISTRY, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"Unknown optimizer {name!r}{hint} (known: {', '.join(_REGISTRY)})")


def create(name: str, params: Iterable[Any], **hyperparameters: Any) -> torch.optim.Optimizer:
    """Build the optimizer registered as ``name`` over ``params``."""
    return get(name).create(params, **hyperparameters)


# ravine's own optimizers, from the catalog (one row each, with the paper).
for _row in catalog.ROWS:
    register(_row.name, _row.cls, paper=str(_row.paper))
