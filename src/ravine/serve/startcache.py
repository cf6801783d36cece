"""The first page's answers of the last ``ravine serve``, replayed while the next one loads.

A fresh server answers its page's first requests only once torch is imported (1.2-2.5 s of CPU
on a 2-core machine, most of the time to the first picture). Those requests are nearly always
the same as the last time: the default picture, or the link the user keeps opening. This cache
keeps, per route, the answer to the first such request a server gave (the registry's controls,
the surfaces, the map, the state, the paths), and the next server answers an identical request
from it until its own playground is loaded; from then on every request is computed as before.

Exactness: an answer is replayed only under the same *fingerprint*, which covers what the
numbers depend on, read without importing any of it: the Python build, ravine's files (paths,
sizes, modification times), torch's, numpy's, matplotlib's and contourpy's version files and
torch's extension module, the CPU's model and flags and the environment variables that choose
torch's kernels. And once loaded, the server computes every answer of the cache again and
compares them (:meth:`StartCache.verify`): one that differs is replaced, with a warning, so a
wrong answer could live for one start at most.

The file is JSON (read back with :func:`json.loads`, never unpickled), written atomically (a
temporary file, then :func:`os.replace`), and a file that is unreadable, torn or not in this
format is ignored and rewritten. It lives in ``$RAVINE_CACHE_DIR``, else
``$XDG_CACHE_HOME/ravine``, else ``~/.cache/ravine``; ``ravine serve --no-start-cache`` neither
reads nor writes it.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from importlib.util import find_spec
from pathlib import Path
from typing import Any

FORMAT = "ravine-serve-start/1"
FILE_NAME = "serve-start.json"
#: The routes whose first answer is kept: what the page asks for when it opens.
ROUTES = ("/api/optimizers", "/api/surfaces", "/api/contours", "/api/state", "/api/trajectories")
#: A cache file larger than this is not read (the default picture's is about 0.6 MB).
MAX_BYTES = 16 * 1024 * 1024
#: How long a request waits for the cache file to be read (it takes milliseconds).
OPEN_SECONDS = 5.0
#: Request fields that identify the page, not the answer.
_PAGE_FIELDS = ("client", "seq")
#: Modules whose version files and extension module the answers depend on.
_DEPENDENCIES = {
    "torch": ("version.py", "_C"),
    "numpy": ("version.py",),
    "matplotlib": ("_version.py",),
    "contourpy": ("_version.py",),
}
#: The lines of /proc/cpuinfo that say which kernels torch picks (x86 and Arm).
_CPU_FIELDS = ("vendor_id", "cpu family", "model", "model name", "flags", "Features", "CPU part")
#: Environment variables that choose torch's kernels or threads.
_ENVIRONMENT = ("ATEN_CPU_CAPABILITY", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "PYTHONHASHSEED")

Answer = tuple[str, ...]


def default_path() -> Path:
    """Where ``ravine serve`` keeps its start cache (see the module docstring)."""
    base = os.environ.get("RAVINE_CACHE_DIR")
    if base:
        return Path(base) / FILE_NAME
    xdg = os.environ.get("XDG_CACHE_HOME")
    root = Path(xdg) if xdg else Path.home() / ".cache"
    return root / "ravine" / FILE_NAME


def request_key(route: str, params: Mapping[str, Any]) -> str:
    """One request as a string: its route and its parameters, less those naming the page."""
    kept = {k: v for k, v in params.items() if k not in _PAGE_FIELDS}
    return route + " " + json.dumps(kept, sort_keys=True, separators=(",", ":"))


def parse_key(key: str) -> tuple[str, dict[str, Any]]:
    """The route and parameters of :func:`request_key`'s string."""
    route, _, params = key.partition(" ")
    return route, json.loads(params)


def _files(root: Path) -> Iterable[str]:
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(names):
            path = os.path.join(folder, name)
            stat = os.stat(path)
            yield f"{os.path.relpath(path, root)}:{stat.st_size}:{stat.st_mtime_ns}"


def _dependency(name: str, files: tuple[str, ...]) -> Iterable[str]:
    spec = find_spec(name)  # finds the package without running it
    if spec is None or spec.origin is None:
        yield f"{name}: missing"
        return
    folder = Path(spec.origin).parent
    for file in files:
        if file.endswith(".py"):
            path = folder / file
            yield f"{name}/{file}:" + (path.read_text() if path.is_file() else "missing")
        else:  # an extension module: whichever suffix this build has
            for path in sorted(folder.glob(f"{file}.*")):
                stat = path.stat()
                yield f"{name}/{path.name}:{stat.st_size}:{stat.st_mtime_ns}"


def _cpu() -> str:
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            text = info.read(256 * 1024)
    except OSError:
        return f"{platform.machine()} {platform.processor()}"
    first = text.split("\n\n", 1)[0]
    kept = [line for line in first.splitlines() if line.split(":")[0].strip() in _CPU_FIELDS]
    return "\n".join(kept)


def fingerprint() -> str:
    """A hash of what the answers' numbers depend on (see the module docstring); tens of
    milliseconds, no import of torch or numpy."""
    # hashlib, platform and tempfile (below) are imported where used: they run in the warm-up
    # thread, and ``ravine serve`` imports this module before it prints its address.
    import hashlib
    import platform

    import ravine

    parts = [FORMAT, sys.version, sys.executable, platform.platform(), _cpu()]
    parts += [f"{k}={os.environ.get(k)}" for k in _ENVIRONMENT]
    parts += _files(Path(ravine.__file__).parent)
    for name, files in _DEPENDENCIES.items():
        parts += _dependency(name, files)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def stream_answer(lines: Iterable[Mapping[str, Any]]) -> Answer | None:
    """A finished trajectory stream as kept: its paths as if cached (no preview lines), and its
    last line without the server's timing. None if the stream is not one to replay (a newer
    request made it stale, or it failed as a whole)."""
    kept: list[str] = []
    for line in lines:
        if line.get("stale") or ("error" in line and "index" not in line):
            return None
        if line.get("partial"):
            continue
        if line.get("done"):
            kept.append(json.dumps({"done": True, "command": line.get("command")}))
            return tuple(kept)
        kept.append(json.dumps({**line, "cached": True}, allow_nan=False))
    return None  # no last line: cut short


class StartCache:
    """The cache file at ``path``: read by :meth:`open`, answered from by :meth:`answer` while
    the playground loads, added to by :meth:`capture`, checked by :meth:`verify`."""

    def __init__(self, path: Path, fingerprint: Callable[[], str] = fingerprint) -> None:
        self.path = Path(path)
        self._fingerprint = fingerprint
        self._key = ""
        self._answers: dict[str, Answer] = {}
        self._captured: set[str] = set()
        self._opened = threading.Event()
        self._lock = threading.Lock()
        self.replayed = 0
        self.disabled = False

    def open(self) -> None:
        """Work out the fingerprint and read the file (an unusable file counts as empty)."""
        try:
            self._key = self._fingerprint()
            self._answers = self._read()
        except Exception as err:  # the cache only saves time: never fail the server over it
            self._warn(f"not used ({type(err).__name__}: {err})")
            self.disabled = True
        finally:
            self._opened.set()

    def _read(self) -> dict[str, Answer]:
        try:
            if self.path.stat().st_size > MAX_BYTES:
                return {}
            data = json.loads(self.path.read_bytes())
        except (OSError, ValueError):
            return {}
        if not (
            isinstance(data, dict)
            and data.get("format") == FORMAT
            and data.get("fingerprint") == self._key
            and isinstance(data.get("answers"), dict)
        ):
            return {}
        answers = {}
        for key, texts in data["answers"].items():
            if not (isinstance(texts, list) and texts and all(isinstance(t, str) for t in texts)):
                return {}
            if key.partition(" ")[0] in ROUTES:
                answers[key] = tuple(texts)
        return answers

    def answer(self, key: str) -> Answer | None:
        """The kept answer to ``key`` (None: none kept, or the file is not read in time)."""
        if self.disabled or not self._opened.wait(OPEN_SECONDS):
            return None
        with self._lock:
            found = self._answers.get(key)
            if found is not None:
                self.replayed += 1
                self._captured.add(key.partition(" ")[0])
            return found

    def capture(self, key: str, answer: Answer) -> None:
        """Keep ``answer`` if it is the first of its route this server gave; then write the
        file. Each route keeps one answer (what the last server's page asked first)."""
        route = key.partition(" ")[0]
        if self.disabled or route not in ROUTES or not self._opened.is_set():
            return
        with self._lock:
            if route in self._captured:
                return
            self._captured.add(route)
            self._answers = {
                k: v for k, v in self._answers.items() if not k.startswith(route + " ")
            }
            self._answers[key] = answer
            self._write()

    def verify(self, compute: Callable[[str], Answer | None]) -> list[str]:
        """Compute every kept answer again (``compute``: the server's own route, loaded by now)
        and replace those that differ, or drop those that cannot be computed; the keys that
        differed. A difference means the fingerprint missed something: warned on stderr."""
        if self.disabled or not self._opened.is_set():
            return []
        with self._lock:
            kept = dict(self._answers)
        fresh = {}
        for key in kept:
            try:
                answer = compute(key)
            except Exception:  # e.g. the playground busy: not kept rather than unchecked
                answer = None
            if answer is not None:
                fresh[key] = answer
        differed = [k for k in kept if fresh.get(k) != kept[k]]
        if differed:
            with self._lock:
                for key in differed:
                    if key not in self._answers:
                        continue  # meanwhile replaced by this server's own first answer
                    if key in fresh:
                        self._answers[key] = fresh[key]
                    else:
                        self._answers.pop(key, None)
                self._write()
            wrong = [k for k in differed if k in fresh]
            if wrong:
                self._warn(
                    "the last start's answers differed from this start's (rewritten): "
                    + ", ".join(k.partition(" ")[0] for k in wrong)
                )
        return differed

    def _write(self) -> None:
        """The file, replaced atomically (a killed writer leaves the old one or none)."""
        import tempfile

        payload = {"format": FORMAT, "fingerprint": self._key, "answers": self._answers}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".serve-start-", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    json.dump(payload, out)
                os.replace(tmp, self.path)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as err:
            self._warn(f"cannot be written ({err}); the next start loads without it")
            self.disabled = True

    def _warn(self, message: str) -> None:
        print(f"ravine serve: start cache {self.path}: {message}", file=sys.stderr)
