"""Meta-weights on disk, apart from any optimizer state.

A weights file is a ``torch.save`` of plain data (tensors, strings, numbers, lists, dicts), read
back with ``torch.load(weights_only=True)``: nothing in it is unpickled as code.

    {"format": FORMAT, "kind": "l2l" | "mlp", "architecture": {...}, "config": {...},
     "task": "quadratic", "seed": 0, "evaluation": {...}, "state_dict": {name: tensor},
     "made_on": {"torch": ..., "cpu": ..., "cpu_capability": ..., "machine": ...}}

``made_on`` (absent from files written before it was recorded) says where the weights were
computed: ``ravine meta-train`` regenerates a file bit for bit on the same kind of CPU with the
same torch build, not across them (PyTorch's CPU kernels pick vector widths and summation orders
by CPU and build, and a meta-training run of thousands of steps amplifies the last bit).

The bundled files live in ``ravine/learned/weights/<kind>/<name>.pt`` (package data) and are
what ``ravine meta-train`` writes for that task and seed; ``L2L(params, weights="quadratic")``
loads one by name, ``weights="/path/file.pt"`` any file.
"""

from __future__ import annotations

import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import torch

from ravine.learned.nets import LearnedNetwork, build
from ravine.optim.hyperparameters import HyperparameterError

__all__ = [
    "BUNDLED_DIR",
    "FORMAT",
    "atomic_save",
    "bundled",
    "environment",
    "load",
    "load_network",
    "record",
    "save",
]

FORMAT = "ravine.learned.weights/1"
BUNDLED_DIR = Path(__file__).resolve().parent / "weights"
_KEYS = ("format", "kind", "architecture", "config", "task", "seed", "evaluation", "state_dict")


def environment() -> dict[str, str]:
    """What decides the bits of a meta-training run besides its configuration: the torch build,
    the CPU model and the vector instructions ATen dispatches to on it."""
    return {
        "torch": str(torch.__version__),  # a TorchVersion would not load with weights_only
        "cpu": _cpu_model(),
        "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "machine": platform.machine(),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def bundled(kind: str) -> list[str]:
    """The names of the bundled weights of ``kind`` (``weights=`` values that need no path)."""
    return sorted(p.stem for p in (BUNDLED_DIR / kind).glob("*.pt"))


def _path(weights: str | os.PathLike[str], kind: str) -> Path:
    text = os.fspath(weights)
    if os.sep not in text and not text.endswith(".pt"):
        path = BUNDLED_DIR / kind / f"{text}.pt"
        if not path.is_file():
            raise ValueError(
                f"Invalid weights: {text!r} (expected one of the bundled {kind} weights "
                f"{', '.join(bundled(kind)) or '(none installed)'}, or a path to a .pt file)"
            )
        return path
    path = Path(text)
    if not path.is_file():
        raise ValueError(f"Invalid weights: {text!r} (no such file)")
    return path


def save(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Write a weights record atomically (a temporary file in the same folder, then
    ``os.replace``): a killed process leaves the old file or the new one, never half of one."""
    missing = [k for k in _KEYS if k not in record]
    if missing:
        raise ValueError(f"weights record lacks {', '.join(missing)}")
    atomic_save(record, path)


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` to ``path`` through a temporary file and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide bundled weights from other users
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(weights: str | os.PathLike[str], kind: str) -> dict[str, Any]:
    """A weights record of ``kind`` by bundled name or path, checked: format, keys, kind."""
    if not isinstance(weights, (str, os.PathLike)):
        raise HyperparameterError(
            f"Invalid weights: {type(weights).__name__} {weights!r} (expected a bundled name, a "
            "path or a weights record)"
        )
    path = _path(weights, kind)
    record = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        got = record.get("format") if isinstance(record, dict) else type(record).__name__
        raise ValueError(f"Invalid weights file {str(path)!r}: format {got!r} (expected {FORMAT})")
    missing = [k for k in _KEYS if k not in record]
    if missing:
        raise ValueError(f"Invalid weights file {str(path)!r}: it lacks {', '.join(missing)}")
    if record["kind"] != kind:
        raise ValueError(
            f"Invalid weights: {str(path)!r} holds {record['kind']!r} weights (expected {kind!r})"
        )
    return record


def load_network(weights: str | os.PathLike[str] | dict[str, Any], kind: str) -> LearnedNetwork:
    """The network a weights record describes (a record, a bundled name or a path), checked to
    be of ``kind``; its parameters do not require gradients."""
    record = weights if isinstance(weights, dict) else load(weights, kind)
    if record.get("kind") != kind:
        raise ValueError(
            f"Invalid weights: a record of kind {record.get('kind')!r} (expected {kind!r})"
        )
    net = build(kind, record["architecture"])
    net.load_state_dict(record["state_dict"])
    net.requires_grad_(False)
    return net.eval()


def record(
    net: LearnedNetwork,
    *,
    config: dict[str, Any] | None = None,
    task: str = "",
    seed: int | None = None,
    evaluation: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A weights record of ``net`` (float32 copies of its weights) with its provenance."""
    return {
        "format": FORMAT,
        "kind": net.kind,
        "architecture": net.architecture(),
        "config": dict(config or {}),
        "task": task,
        "seed": seed,
        "evaluation": dict(evaluation or {}),
        "state_dict": {k: v.detach().float().clone() for k, v in net.state_dict().items()},
        "made_on": environment(),
    }
