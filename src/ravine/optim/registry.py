"""Every optimizer by name, with its defaults and paper: ``ravine.create("adam", params, lr=1e-3)``.

An entry maps a lower-case name to a factory (usually the class) called as
``factory(params, **hyperparameters)``. ravine's own optimizers are registered from
:mod:`ravine.optim.catalog`; later modules, and you, add more with :func:`register`::

    import ravine
    from ravine.optim import registry

    registry.register("sgd_nesterov", ravine.SGD, paper="Nesterov 1983", momentum=0.9,
                      nesterov=True, use_when="SGD with Nesterov momentum fixed on")
    opt = ravine.create("sgd_nesterov", model.parameters(), lr=0.1)

``ravine optimizers`` (or :func:`optimizers`, also ``ravine.optimizers()``) lists every entry
with its paper, defaults and when to use it.
"""

from __future__ import annotations

import difflib
import inspect
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from ravine.optim import catalog
from ravine.optim.base import Optimizer


@dataclass(frozen=True)
class Entry:
    """A registered optimizer: its name, factory, fixed keyword arguments, paper reference and a
    one-line "use when"."""

    name: str
    factory: Callable[..., torch.optim.Optimizer]
    paper: str
    fixed: dict[str, Any] = field(default_factory=dict)
    use_when: str = ""

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
    use_when: str = "",
    **fixed: Any,
) -> Entry:
    """Add ``name`` (case-insensitive) for ``factory(params, **hyperparameters)``.

    paper: the reference (default: the factory's ``paper`` attribute).
    use_when: one line saying when to choose it (shown by ``ravine optimizers``).
    fixed: keyword arguments always passed (a variant of a class: ``nesterov=True``); they
        appear among the entry's defaults and a caller's own value replaces them.

    A name already registered raises ValueError; nothing is replaced.
    """
    key = name.lower()
    if key in _REGISTRY:
        raise ValueError(f"optimizer {name!r} is already registered")
    paper = paper if paper is not None else getattr(factory, "paper", "")
    entry = Entry(key, factory, paper, fixed, use_when)
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
    """Build the optimizer registered as ``name`` over ``params``: ``create("adam", params)``.

    name: any registered name, case-insensitive (``ravine optimizers`` lists them with their
        papers and defaults; :func:`names` returns them). An unknown name raises ValueError
        with the closest names ("did you mean 'adam'?").
    hyperparameters: keyword arguments of the optimizer; what is left out takes its registered
        default (the class's own, as ``ravine optimizers`` shows). A name the optimizer does not
        take raises ValueError listing the accepted ones, with a close-match hint; each value
        is then checked by the optimizer against its range (:mod:`ravine.optim.hyperparameters`:
        ``Invalid lr: -1 (expected a real number in [0, inf))``) before anything is built.

    Register your own with ``ravine.optim.registry.register(name, factory, paper=...,
    use_when=..., **fixed)`` (:func:`register`).
    """
    return get(name).create(params, **hyperparameters)


def _json_value(value: Any) -> Any:
    """A default as JSON writes it: tuples as lists, anything not a JSON scalar as its repr."""
    if isinstance(value, (tuple, list)):
        return [_json_value(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def optimizers() -> list[dict[str, Any]]:
    """One row per registered optimizer, in registration order: ``name``, ``paper`` (short
    citation), ``citation`` (full), ``defaults`` (hyperparameter -> default, JSON-ready),
    ``use_when`` and ``factory`` (its import path). ``ravine optimizers`` prints these rows."""
    rows = []
    for entry in _REGISTRY.values():
        row = catalog.get(entry.name) if entry.name in catalog.names() else None
        factory = entry.factory
        rows.append(
            {
                "name": entry.name,
                "paper": row.paper.short() if row is not None else entry.paper,
                "citation": entry.paper,
                "defaults": {k: _json_value(v) for k, v in entry.defaults.items()},
                "use_when": entry.use_when,
                "factory": f"{factory.__module__}.{getattr(factory, '__qualname__', factory)}",
            }
        )
    return rows


# ravine's own optimizers, from the catalog (one row each, with the paper).
for _row in catalog.ROWS:
    register(_row.name, _row.cls, paper=str(_row.paper), use_when=_row.use_when)

# help(ravine.create) names what is registered at import, from the registry itself.
if create.__doc__ is not None:  # None under python -OO
    create.__doc__ = (
        create.__doc__.rstrip()
        + "\n\n"
        + textwrap.indent(
            textwrap.fill("Registered when ravine is imported: " + ", ".join(names()) + ".", 92),
            "    ",
        )
    )
