"""Optimizer specs, ``"name"`` or ``"name:key=value,key=value"``, built through ravine's registry.

Syntax (what ``ravine viz --optimizers`` takes)::

    adam                              registry defaults
    adam:lr=0.1                       one hyperparameter
    adam:lr=0.1,betas=(0.9,0.99)      values are Python literals (numbers, tuples, True/False/None);
                                      true/false/yes/no (any case) are booleans; another bare
                                      word such as impl=loop is taken as a string
    sgd,momentum:lr=0.01,adam:lr=0.1  several specs in one string: an item of the form
                                      key=value belongs to the spec before it; any other item
                                      starts a new spec
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ravine.optim.hyperparameters import parse_literal

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]*$")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def optimizer_names() -> list[str]:
    """Names ravine's registry knows, in its order."""
    from ravine.optim import registry

    return list(registry.names())


def create_optimizer(
    name: str, params: Iterable[torch.Tensor], **hparams: Any
) -> torch.optim.Optimizer:
    """Build optimizer ``name`` through ``ravine.create``, with a close-match hint for typos."""
    known = optimizer_names()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(
            f"optimizer={name!r} is not in ravine's registry (expected one of "
            f"{', '.join(known)}){hint}"
        )
    import ravine

    return ravine.create(name, params, **hparams)


@dataclass(frozen=True)
class OptimizerSpec:
    """An optimizer name with hyperparameters; ``build(params)`` makes the optimizer."""

    name: str
    hparams: tuple[tuple[str, Any], ...] = ()

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.hparams)

    @property
    def label(self) -> str:
        """Short legend text, e.g. ``adam lr=0.1``."""
        if not self.hparams:
            return self.name
        return self.name + " " + " ".join(f"{k}={_fmt(v)}" for k, v in self.hparams)

    def build(self, params: Iterable[torch.Tensor]) -> torch.optim.Optimizer:
        try:
            return create_optimizer(self.name, params, **self.kwargs)
        except TypeError as err:
            # a hyperparameter of the wrong type: name the spec, as for a bad value
            raise ValueError(f"optimizer spec {str(self)!r}: {err}") from None

    def __str__(self) -> str:
        if not self.hparams:
            return self.name
        return self.name + ":" + ",".join(f"{k}={_fmt(v)}" for k, v in self.hparams)


def _fmt(value: Any) -> str:
    if isinstance(value, tuple):
        return "(" + ",".join(_fmt(v) for v in value) + ")"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _split_top_level(text: str, what: str) -> list[str]:
    """Split at commas outside brackets, so ``betas=(0.9,0.99)`` stays whole."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth < 0:
                raise ValueError(f"{what}={text!r}: unbalanced {ch!r}")
        if ch == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    if depth != 0:
        raise ValueError(f"{what}={text!r}: unclosed bracket")
    parts.append("".join(current).strip())
    return parts


def _parse_value(key: str, raw: str, spec: str) -> Any:
    try:
        return parse_literal(raw)
    except ValueError:
        pass
    if _KEY.match(raw):
        return raw
    raise ValueError(
        f"optimizer spec {spec!r}: value {raw!r} for {key!r} is not a number, tuple, "
        "True/False/None or a bare word"
    )


def _is_assignment(item: str) -> bool:
    head = item.split("=", 1)[0]
    return "=" in item and ":" not in head and bool(_KEY.match(head.strip()))


def parse_spec(text: str) -> OptimizerSpec:
    """Parse one spec ``name[:key=value,...]``; ValueError says what is wrong with it."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"optimizer spec {text!r}: expected 'name' or 'name:key=value,...'")
    text = text.strip()
    name, sep, rest = text.partition(":")
    name = name.strip()
    if not _NAME.match(name):
        raise ValueError(
            f"optimizer spec {text!r}: {name!r} is not an optimizer name; expected 'name' or "
            "'name:key=value,...' (e.g. 'adam:lr=0.1,betas=(0.9,0.99)')"
        )
    hparams: dict[str, Any] = {}
    if sep:
        if not rest.strip():
            raise ValueError(f"optimizer spec {text!r}: expected key=value after ':'")
        for item in _split_top_level(rest, "optimizer spec"):
            key, eq, raw = item.partition("=")
            key = key.strip()
            if not eq or not _KEY.match(key) or not raw.strip():
                raise ValueError(
                    f"optimizer spec {text!r}: {item!r} is not key=value (e.g. lr=0.1)"
                )
            if key in hparams:
                raise ValueError(f"optimizer spec {text!r}: {key!r} given twice")
            if key == "params":
                raise ValueError(
                    f"optimizer spec {text!r}: 'params' is not a hyperparameter (the point on "
                    "the surface is the parameter)"
                )
            hparams[key] = _parse_value(key, raw.strip(), text)
    return OptimizerSpec(name.lower(), tuple(hparams.items()))


def parse_specs(specs: str | Sequence[str | OptimizerSpec]) -> list[OptimizerSpec]:
    """Parse a comma-separated string (see module docstring) or a sequence of specs."""
    items: Sequence[str | OptimizerSpec] = [specs] if isinstance(specs, str) else specs
    out: list[OptimizerSpec] = []
    for item in items:
        if isinstance(item, OptimizerSpec):
            out.append(item)
            continue
        groups: list[str] = []
        for part in _split_top_level(item, "optimizers"):
            if not part:
                raise ValueError(f"optimizers={item!r}: empty entry between commas")
            if _is_assignment(part):
                if not groups or ":" not in groups[-1]:
                    raise ValueError(
                        f"optimizers={item!r}: {part!r} must follow 'name:' "
                        "(e.g. 'adam:lr=0.1,betas=(0.9,0.99)')"
                    )
                groups[-1] += "," + part
            else:
                groups.append(part)
        out.extend(parse_spec(g) for g in groups)
    if not out:
        raise ValueError(f"optimizers={specs!r}: expected at least one optimizer spec")
    return out


# --- the optimizers `ravine viz` and the playground draw by default -----------------------------

CLASSIC_NAMES = ("sgd", "momentum", "nag", "adagrad", "adadelta", "rmsprop", "adam")
LATER_NAMES = ("amsgrad", "adamw", "qhadam", "aggmo", "adabound", "radam", "ranger")


def tuned(surface: str, names: Sequence[str]) -> tuple[str, ...]:
    """Optimizer specs with the hyperparameters ravine.optim.catalog gives for ``surface``."""
    from ravine.optim import catalog

    def spec(name: str) -> str:
        hp = catalog.get(name).surfaces[surface].hp
        return name + (":" + ",".join(f"{k}={v!r}" for k, v in hp.items()) if hp else "")

    return tuple(spec(n) for n in names)


CLASSIC = tuned("beale", CLASSIC_NAMES)
