"""Build and step torch.optim-based optimizers without importing ``torch._dynamo`` (until it is
imported for a reason): what lets ``ravine serve`` show its first picture about 1.5 s sooner.

Why: ``torch.optim.Optimizer.add_param_group``, ``zero_grad``, ``state_dict`` and
``load_state_dict`` are wrapped by ``torch._disable_dynamo``, which on the first call of each
imports ``torch._dynamo`` (about 1.5-1.8 s of CPU, more than ``import torch`` itself) only to make
``torch._dynamo.disable(fn)`` and cache it on ``fn`` as ``fn.__dynamo_disable``. So building any
optimizer imports dynamo, although a process that never compiles has no use for it.

What :func:`defer` does: while ``torch._dynamo`` is not imported, it caches each of those
functions as its own "disabled" version (``fn.__dynamo_disable = fn``), so the wrapper calls
``fn`` directly instead of importing dynamo. That is exactly what the disabled version does when
nothing is being traced, and nothing can be traced before ``torch._dynamo`` is imported. The
moment anything imports ``torch._dynamo`` (``torch.compile``, ``impl="compiled"``, user code),
an import hook removes those cached entries first, before dynamo's module runs, so from then on
every wrapper makes and caches the real ``torch._dynamo.disable(fn)`` as stock torch does: a
compiled training step that calls ``opt.zero_grad()`` still breaks the graph there.

Steps, numbers and state are untouched (the same function runs); only when dynamo loads moves.
"""

from __future__ import annotations

import importlib.abc
import sys
import threading
from collections.abc import Callable, Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

import torch

_ATTR = "__dynamo_disable"
_DYNAMO = "torch._dynamo"
_lock = threading.Lock()
# The functions whose cached "disabled" version defer() set to themselves (undone on import).
_preset: list[Callable[..., Any]] = []


def _noop() -> None:
    """Wrapped once to learn the code object of torch._disable_dynamo's wrapper."""


def _wrapped(candidate: Any, wrapper_code: Any) -> Callable[..., Any] | None:
    """The function a ``torch._disable_dynamo`` wrapper calls, or None if ``candidate`` is not
    such a wrapper (recognised by its code object, and checked to hold the function)."""
    if getattr(candidate, "__code__", None) is not wrapper_code:
        return None
    fn = getattr(candidate, "__wrapped__", None)
    cells = [c.cell_contents for c in candidate.__closure__ or ()]
    return fn if fn is not None and any(c is fn for c in cells) else None


def wrapped_functions(classes: Sequence[type] = (torch.optim.Optimizer,)) -> list[Callable]:
    """The functions behind the ``torch._disable_dynamo`` wrappers among the classes' methods."""
    code = torch._disable_dynamo(_noop).__code__
    out = []
    for cls in classes:
        for value in vars(cls).values():
            fn = _wrapped(value, code)
            if fn is not None:
                out.append(fn)
    return out


class _UndoOnImport(importlib.abc.MetaPathFinder):
    """Removes defer()'s cached entries when ``torch._dynamo`` is about to be imported, then
    lets the ordinary finders import it."""

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name == _DYNAMO:
            undo()
        return None


_finder = _UndoOnImport()


def undo() -> None:
    """Back to stock torch: the wrappers make the real ``torch._dynamo.disable`` on next call."""
    with _lock:
        for fn in _preset:
            # Only our own entry: one torch cached meanwhile is the real thing and stays.
            if getattr(fn, _ATTR, None) is fn:
                delattr(fn, _ATTR)
        _preset.clear()
        if _finder in sys.meta_path:
            sys.meta_path.remove(_finder)


def defer() -> bool:
    """Let torch.optim's optimizers be built, stepped and saved without importing dynamo, until
    something imports it (then undone first). False, and nothing changed, if it is imported."""
    with _lock:
        if _DYNAMO in sys.modules:
            return False
        if _finder not in sys.meta_path:
            sys.meta_path.insert(0, _finder)
        for fn in wrapped_functions():
            if getattr(fn, _ATTR, None) is None:
                setattr(fn, _ATTR, fn)
                _preset.append(fn)
    # Imported by another thread between the check and the hook: undo at once.
    if _DYNAMO in sys.modules:
        undo()
        return False
    return True


def deferred() -> bool:
    """Whether :func:`defer` is in effect (dynamo not imported since)."""
    with _lock:
        return bool(_preset)
