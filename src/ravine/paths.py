"""Output paths checked before the work that writes them: one check for every command."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["check_output_path"]


def check_output_path(path: str | os.PathLike[str], what: str, *, directory: bool = False) -> Path:
    """Fail early (ValueError naming ``what`` and ``path``) unless ``path`` can be written later.

    ``path`` is a file to write (``directory=False``) or a folder to write into. Nothing is
    created: missing folders are fine (the writer makes them) as long as the nearest existing
    ancestor is a writable folder; an existing path must be of the wanted kind, and an existing
    file writable.
    """
    path = Path(path)
    shown = f"{what}={str(path)!r}"
    try:
        if path.exists() and directory != path.is_dir():
            kind = "is not a directory" if directory else "is a directory, expected a file"
            raise ValueError(f"{shown} {kind}")
        folder = path if directory else path.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            raise ValueError(f"{shown}: {str(folder)!r} is not a directory")
    except OSError as e:  # e.g. a name too long for the file system
        raise ValueError(f"{shown} cannot be used: {e.strerror or e}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{shown}: directory {str(folder)!r} is not writable")
    if not directory and path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{shown}: the file exists and is not writable")
    return path
