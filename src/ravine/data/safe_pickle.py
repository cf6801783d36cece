"""A restricted unpickler for data files: plain containers and numeric numpy arrays, nothing else.

``pickle.load`` runs whatever callable a file names, so a crafted "dataset" can execute code. The
python-batches formats (CIFAR-10, Nielsen's MNIST pickle) only ever hold dicts, lists, tuples,
str/bytes, numbers and numpy arrays: those are all :func:`load` admits. Every other global is
refused by name, before anything is called, with an error naming the file.
"""

from __future__ import annotations

import codecs
import importlib
import pickle
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = ["UnsafePickleError", "load"]


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """A pickle names something other than what a data file may hold."""


def _numpy_attr(module: str, name: str) -> Any:
    """``numpy._core.<module>.<name>`` (numpy 2) or ``numpy.core.<module>.<name>`` (numpy 1)."""
    # numpy 1.26 has a numpy._core too, but only as a shim without these submodules.
    core = "numpy._core" if int(np.__version__.split(".")[0]) >= 2 else "numpy.core"
    return getattr(importlib.import_module(f"{core}.{module}"), name)


def _latin1_encode(text: object, encoding: object = "latin1") -> bytes:
    # Protocol 2 writes bytes as _codecs.encode(str, "latin1"); admit that one use, no other codec.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"_codecs.encode({type(text).__name__}, {encoding!r})")
    return codecs.encode(text, "latin1")


# What numpy writes for an array (protocols 0-4: _reconstruct + setstate; 5: _frombuffer) and
# for its dtype, under both the numpy 1 and numpy 2 module names.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}
for _core in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_core}.multiarray", "_reconstruct")] = _numpy_attr("multiarray", "_reconstruct")
    _ALLOWED[(f"{_core}.numeric", "_frombuffer")] = _numpy_attr("numeric", "_frombuffer")

_PLAIN = (dict, list, tuple, str, bytes, int, float, bool, type(None))


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], *, encoding: str, source: str) -> None:
        super().__init__(file, encoding=encoding)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"the data loader refuses to load {module}.{name} from {self.source}: a data "
                "file may hold only dicts, lists, tuples, str/bytes, numbers and numeric numpy "
                "arrays"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(
            f"the data loader refuses to load a persistent id from {self.source}"
        )


def _check_contents(obj: Any, source: str) -> None:
    """Admit plain containers and numpy arrays of numeric dtype (walked without recursion)."""
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, np.ndarray):
            if item.dtype.hasobject or item.dtype.kind not in "biufc":
                raise UnsafePickleError(
                    f"the data loader refuses to load a numpy array of dtype {item.dtype} from "
                    f"{source}: expected a numeric dtype"
                )
        elif type(item) in _PLAIN:
            if isinstance(item, dict):
                stack.extend(item.keys())
                stack.extend(item.values())
            elif isinstance(item, list | tuple):
                stack.extend(item)
        else:
            raise UnsafePickleError(
                f"the data loader refuses to load {type(item).__qualname__} from {source}"
            )


def load(
    file: str | Path | IO[bytes], *, encoding: str = "bytes", source: str | None = None
) -> Any:
    """Unpickle a data file admitting only containers, str/bytes, numbers and numeric arrays.

    ``file`` is a path or an open binary file; ``source`` names it in errors (default: the path).
    ``encoding`` decodes Python 2 strings as in :func:`pickle.load` (``"bytes"`` keeps them bytes).
    Raises :class:`UnsafePickleError` (a ValueError) for anything else, and ValueError naming the
    file when it is corrupt or truncated.
    """
    if isinstance(file, str | Path):
        with open(file, "rb") as f:
            return load(f, encoding=encoding, source=source or str(file))
    name = source or getattr(file, "name", "<stream>")
    try:
        obj = _Unpickler(file, encoding=encoding, source=str(name)).load()
    except UnsafePickleError as err:
        if str(name) in str(err):
            raise
        raise UnsafePickleError(f"the data loader refuses to load {err} from {name}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError) as err:
        # What a truncated or garbled pickle raises; AttributeError/ImportError cannot occur
        # (find_class never imports), MemoryError is left alone.
        raise ValueError(f"{name} is corrupt or truncated (not a readable pickle: {err})") from None
    _check_contents(obj, str(name))
    return obj
