"""Files written so that a crash (kill -9, power cut) leaves the old file or the new one, whole."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO

__all__ = ["atomic_write"]


def atomic_write(
    path: str | os.PathLike[str],
    data: bytes | Callable[[IO[bytes]], object],
    *,
    durable: bool = True,
) -> None:
    """Write ``data`` (bytes, or a function writing to a binary file) to ``path`` atomically.

    The bytes go to a temporary file in the same folder and replace ``path`` in one
    ``os.replace``, so a killed process (kill -9) leaves the old file or the new one, whole.
    ``durable=True`` also flushes the file and then its folder to disk (fsync) around the
    rename, so that a power cut or OS crash keeps that guarantee too; ``durable=False`` skips
    both fsyncs (the kernel still has the bytes: only a machine crash can lose or tear the
    file). The file gets the ordinary mode (0o666 less the umask, e.g. 0o644), not mkstemp's
    0o600; missing parent folders are created.
    """
    if not isinstance(durable, bool):
        raise ValueError(f"durable must be True or False, got {durable!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, bytes | bytearray | memoryview):
                f.write(data)
            else:
                data(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable and hasattr(os, "O_DIRECTORY"):  # make the rename itself survive a power cut (POSIX)
        dfd = os.open(path.parent, os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
