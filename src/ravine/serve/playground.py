"""What the playground's page asks for, answered from ravine itself and free of HTTP.

Every picture the page draws comes from here: trajectories from :func:`ravine.viz.run` (cached per
(surface, start, steps, spec), the newest request of a page winning over its older ones), contour
lines from the same matplotlib/contourpy call the static plots make, an optimizer's real state at
a step (replayed through its own ``step``), controls generated from the registry's kinds, and the
same PNG/SVG/GIF/MP4 files ``ravine viz`` writes. :mod:`ravine.serve.server` only moves JSON.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import shlex
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ravine import surfaces
from ravine.optim import hyperparameters as hp
from ravine.optim.base import NonFiniteGradientError
from ravine.serve.errors import BusyError, PlaygroundError
from ravine.serve.workers import Share, Workers
from ravine.surfaces import Surface
from ravine.viz.specs import OptimizerSpec, parse_specs
from ravine.viz.trajectory import Trajectory, check_start, check_work, race
from ravine.viz.trajectory import run as run_trajectories

#: Bounds on one request, tighter than the CLI's: the page is interactive, and anyone who can
#: reach the port can send a request.
MAX_STEPS = 5000
MAX_OPTIMIZERS = 16
MAX_SPEC_CHARS = 4000
MAX_SURFACE_CHARS = surfaces.MAX_FORMULA_CHARS + len("expr:")
#: How long a request waits for the one computation slot before it is refused (no unbounded
#: queue of waiting threads).
WAIT_SECONDS = 30.0
#: A cut prefix of every run, streamed before the full runs when a request has several steps to
#: compute, so the page shows paths at once. A shorter run is an exact prefix of a longer one.
PREVIEW_STEPS = 10
#: ... when the request is this much work (steps x optimizers) or more; below it, the preview
#: would only delay the full paths.
PREVIEW_WORK = 1000
CONTOUR_GRID = 160
CACHE_SIZE = 512
EXPORT_FORMATS = ("png", "svg", "gif", "mp4")


def finite(values: np.ndarray) -> list[Any]:
    """A float array as nested lists, non-finite entries as None (JSON has no inf or nan)."""
    arr = np.asarray(values, dtype=np.float64)
    out = arr.tolist()
    if np.isfinite(arr).all():
        return out
    mask = np.isfinite(arr).tolist()

    def clean(v: Any, m: Any) -> Any:
        if isinstance(v, list):
            return [clean(a, b) for a, b in zip(v, m)]
        return v if m else None

    return clean(out, mask)


def jsonable(value: Any) -> Any:
    """Hyperparameter values for JSON: tuples as lists, non-finite floats as their names."""
    if isinstance(value, (tuple, list)):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return repr(value)


# --- specs written exactly -----------------------------------------------------------------------


def literal(value: Any) -> str:
    """``value`` as a spec writes it, exactly (``str(OptimizerSpec)`` rounds floats with %g)."""
    if isinstance(value, tuple):
        return "(" + ",".join(literal(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, list):
        return "[" + ",".join(literal(v) for v in value) + "]"
    if isinstance(value, str):
        return value if value.isidentifier() else repr(value)
    return repr(value)


def spec_text(spec: OptimizerSpec) -> str:
    """``name`` or ``name:key=value,...``, parsing back to the same spec."""
    if not spec.hparams:
        return spec.name
    return spec.name + ":" + ",".join(f"{k}={literal(v)}" for k, v in spec.hparams)


# --- a request, checked ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Scene:
    """A surface, a start and a step count: what every optimizer of a request shares."""

    surface_text: str
    surface: Surface
    start: tuple[float, float]
    steps: int

    @property
    def key(self) -> tuple[str, float, float, int]:
        return (self.surface_text, self.start[0], self.start[1], self.steps)


def _text(params: Mapping[str, Any], name: str, limit: int, default: str | None = None) -> str:
    value = params.get(name, default)
    if value is None:
        raise PlaygroundError(f"{name} is missing")
    if not isinstance(value, str):
        raise PlaygroundError(f"{name}={value!r}: expected a string")
    if len(value) > limit:
        raise PlaygroundError(f"{name} is {len(value)} characters long; expected at most {limit}")
    return value


def _integer(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise PlaygroundError(f"{name}={value!r}: expected an integer from {low} to {high}")
    return value


def _start(value: Any, surface: Surface) -> tuple[float, float]:
    if value is None or value == "":
        return surface.start
    if isinstance(value, str):
        value = value.split(",")
    try:
        return check_start(value)
    except ValueError as err:
        raise PlaygroundError(str(err)) from None


def canonical_surface(text: str) -> str:
    """The name a surface is cached and linked under: a registered name, or ``expr:FORMULA``."""
    stripped = text.strip()
    if stripped.lower().startswith("expr:"):
        return "expr:" + stripped[len("expr:") :].strip()
    return surfaces.get(stripped).name


# --- controls from the registry -------------------------------------------------------------------

#: Shown on an optimizer's card; the rest of its hyperparameters fold under "more".
PRIMARY = ("lr", "momentum", "betas", "rho", "alpha", "nu", "nus", "k", "final_lr", "inner")
#: Not a hyperparameter of the rule (how it runs, not what it computes).
HIDDEN = ("impl", "params")


def _interval(kind: hp.Interval) -> dict[str, Any]:
    return {
        "low": kind.low,
        "high": kind.high,
        "low_open": kind.low_open,
        "high_open": kind.high_open,
    }


def _scale(kind: hp.Interval, default: Any) -> dict[str, Any] | None:
    """The slider for a real: linear over a bounded range, logarithmic around a positive default
    on an unbounded one, none where neither applies (a number field only)."""
    if kind.low is not None and kind.high is not None:
        return {"scale": "linear", "min": kind.low, "max": kind.high}
    if isinstance(default, (int, float)) and not isinstance(default, bool) and default > 0:
        lo = default / 1000.0
        hi = default * 1000.0
        if kind.low is not None:
            lo = max(lo, kind.low)
        return {"scale": "log", "min": lo, "max": hi}
    return None


def control(name: str, default: Any, kind: hp.Kind | None) -> dict[str, Any]:
    """One hyperparameter's control: its kind, default, valid range and slider (JSON)."""
    out: dict[str, Any] = {
        "name": name,
        "default": jsonable(default),
        "primary": name in PRIMARY,
        "expected": kind.describe() if kind is not None else None,
    }
    if isinstance(kind, hp.OrNone):
        out["nullable"] = True
        kind = kind.kind
    if isinstance(kind, hp.Interval):
        out.update(type="real", range=_interval(kind), slider=_scale(kind, default))
    elif isinstance(kind, hp.Reals):
        sliders = [
            _scale(kind.interval, d) for d in (default if isinstance(default, tuple) else ())
        ]
        out.update(type="reals", arity=kind.arity, range=_interval(kind.interval), sliders=sliders)
    elif isinstance(kind, hp.Flag):
        out.update(type="flag")
    elif isinstance(kind, hp.Integer):
        out.update(type="integer", range=_interval(kind.interval))
    elif isinstance(kind, hp.Choice):
        out.update(type="choice", choices=[jsonable(v) for v in kind.values])
    elif isinstance(default, bool):  # no declared kind (wrappers, L-BFGS): the default's type
        out.update(type="flag")
    elif isinstance(default, int):
        out.update(type="integer", range=None)
    elif isinstance(default, float):
        scale = _scale(hp.Interval(), default)
        out.update(type="real", range=None, slider=scale)
    else:
        out.update(type="text")
    return out


def palette(n: int = 10) -> list[str]:
    """The static plots' colours, in their order (the page gives each optimizer a fixed one)."""
    from ravine.viz.style import colors

    return colors(n)


def optimizer_controls() -> list[dict[str, Any]]:
    """Every registered optimizer (read now, so a later ``register`` shows up) with controls."""
    from ravine.optim import registry

    out = []
    for name in registry.names():
        entry = registry.get(name)
        kinds_of = getattr(entry.factory, "kinds", None)
        kinds: dict[str, hp.Kind] = kinds_of() if callable(kinds_of) else {}
        controls = [
            control(k, v, kinds.get(k)) for k, v in entry.defaults.items() if k not in HIDDEN
        ]
        out.append({"name": name, "paper": entry.paper, "controls": controls})
    return out


def surface_info(surface: Surface, text: str) -> dict[str, Any]:
    return {
        "name": text,
        "title": surface.name,
        "formula": surface.formula,
        "description": surface.description,
        "window": list(surface.window),
        "start": list(surface.start),
        "minima": [list(m) for m in surface.minima],
        "saddles": [list(s) for s in surface.saddles],
        "min_value": surface.min_value,
        "log_levels": surface.log_levels,
    }


# --- the newest request wins ----------------------------------------------------------------------


class Latest:
    """The newest sequence number seen per page (client id): older requests are stale."""

    def __init__(self, size: int = 256) -> None:
        self._seen: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()
        self._size = size

    def register(self, client: str | None, seq: int) -> None:
        if client is None:
            return
        with self._lock:
            self._seen[client] = max(seq, self._seen.get(client, seq))
            self._seen.move_to_end(client)
            while len(self._seen) > self._size:
                self._seen.popitem(last=False)

    def stale(self, client: str | None, seq: int) -> bool:
        if client is None:
            return False
        with self._lock:
            return self._seen.get(client, seq) > seq


class LRU:
    """A bounded mapping, least recently used entries dropped first; safe across threads."""

    def __init__(self, size: int) -> None:
        self._data: OrderedDict[Any, Any] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            if key not in self._data:
                return None
            self._data.move_to_end(key)
            return self._data[key]

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self._size:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


# --- the playground -------------------------------------------------------------------------------


def trajectory_json(
    traj: Trajectory, index: int, text: str, *, cached: bool, partial: bool = False
) -> dict[str, Any]:
    """One run as the page draws it, with the legend text and end marker of the static plots."""
    from ravine.viz.style import clip_diverged, legend_label

    window = traj.surface.window
    drawn = clip_diverged(traj, window)
    end = "diverged" if traj.diverged else ("escaped" if traj.escaped_at is not None else "end")
    if end == "end" and not traj.in_window:
        end = "left"
    return {
        "index": index,
        "spec": text,
        "label": legend_label(traj),
        "status": traj.status,
        "points": finite(traj.points),
        "losses": finite(traj.losses),
        # What the static plots draw of a diverged run (cut at the window's edge); None: all.
        "drawn": None if drawn is traj.points else finite(drawn),
        "end": end,
        "diverged_at": traj.diverged_at,
        "escaped_at": traj.escaped_at,
        "steps": traj.steps,
        "cached": cached,
        "partial": partial,
    }


class Playground:
    """The state behind one ``ravine serve``: caches, the computation slot, counters."""

    def __init__(
        self, *, wait_seconds: float = WAIT_SECONDS, workers: Workers | None = None
    ) -> None:
        self.wait_seconds = wait_seconds
        self.workers = workers or Workers(0)
        self.latest = Latest()
        self.trajectories = LRU(CACHE_SIZE)
        self.contours = LRU(32)
        self.replays = LRU(8)
        self._surfaces = LRU(64)
        self._defaults = LRU(256)
        self._compute = threading.Lock()
        self._export = threading.Lock()
        self._drawing = threading.Lock()
        self.stats = {"computed": 0, "stale": 0, "runs": 0, "cache_hits": 0, "in_workers": 0}
        self._stats_lock = threading.Lock()

    def _count(self, name: str, n: int = 1) -> None:
        with self._stats_lock:
            self.stats[name] += n

    # -- parsing -------------------------------------------------------------------------------

    def surface(self, text: str) -> tuple[str, Surface]:
        """A surface by name or ``expr:`` formula (bounded), compiled once per text."""
        if len(text) > MAX_SURFACE_CHARS:
            raise PlaygroundError(
                f"surface is {len(text)} characters long; expected at most {MAX_SURFACE_CHARS}"
            )
        canon = canonical_surface(text)
        found = self._surfaces.get(canon)
        if found is None:
            found = surfaces.get(canon)
            self._surfaces.put(canon, found)
        return canon, found

    def scene(self, params: Mapping[str, Any]) -> Scene:
        canon, surface = self.surface(_text(params, "surface", MAX_SURFACE_CHARS, "beale"))
        steps = _integer("steps", params.get("steps", 200), 1, MAX_STEPS)
        return Scene(canon, surface, _start(params.get("start"), surface), steps)

    def specs(self, params: Mapping[str, Any], scene: Scene) -> list[OptimizerSpec]:
        value = params.get("optimizers")
        if isinstance(value, list):
            if not all(isinstance(v, str) for v in value):
                raise PlaygroundError("optimizers: expected a list of spec strings")
            value = ",".join(value)
        text = _text({"optimizers": value}, "optimizers", MAX_SPEC_CHARS)
        specs = parse_specs(text)
        if len(specs) > MAX_OPTIMIZERS:
            raise PlaygroundError(
                f"optimizers: {len(specs)} specs; expected at most {MAX_OPTIMIZERS}"
            )
        check_work(specs, scene.steps)
        return specs

    def state(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """A page state (surface, start, steps, optimizers) checked and written back canonically:
        what a link opens, and the ``ravine viz`` command that draws the same picture."""
        scene = self.scene(params)
        if "optimizers" not in params:
            from ravine.viz.specs import CLASSIC  # what `ravine viz` draws by default

            params = {**params, "optimizers": ",".join(CLASSIC)}
        specs = self.specs(params, scene) if params["optimizers"] else []
        for spec in specs:
            self._check_builds(spec, scene)
        return {
            "surface": surface_info(scene.surface, scene.surface_text),
            "start": list(scene.start),
            "steps": scene.steps,
            "optimizers": [
                {"name": s.name, "spec": spec_text(s), "hparams": dict(jsonable(s.hparams))}
                for s in specs
            ],
            "command": viz_command(scene, specs) if specs else None,
        }

    @staticmethod
    def _check_builds(spec: OptimizerSpec, scene: Scene) -> None:
        """Build the optimizer once on a throwaway point: a bad hyperparameter fails here, with
        ravine's own message, before any work is queued."""
        spec.build([torch.tensor(scene.start, dtype=torch.float64, requires_grad=True)])

    # -- trajectories --------------------------------------------------------------------------

    def _key(self, scene: Scene, spec: OptimizerSpec) -> tuple[Any, ...]:
        """The cache key: the scene and every hyperparameter the optimizer is built with, the
        registry's defaults included, so ``sgd`` and ``sgd:lr=0.001`` (the page writes only
        what differs from the defaults; ``ravine viz``'s default picture spells them out) are
        one entry. Values by repr: an int where the default is a float is another entry."""
        defaults = self._defaults.get(spec.name)
        if defaults is None:
            from ravine.optim import registry

            try:
                defaults = {k: repr(v) for k, v in registry.get(spec.name).defaults.items()}
            except ValueError:  # not registered (yet): its spec as written
                defaults = {}
            self._defaults.put(spec.name, defaults)
        merged = {**defaults, **{k: repr(v) for k, v in spec.hparams}}
        return (*scene.key, spec.name, tuple(sorted(merged.items())))

    def _cached(self, scene: Scene, spec: OptimizerSpec) -> Trajectory | None:
        """The cached trajectory of ``spec``, labelled as ``spec`` is written."""
        traj = self.trajectories.get(self._key(scene, spec))
        if traj is None or traj.spec == spec:
            return traj
        return dataclasses.replace(traj, spec=spec)

    def checked_items(
        self, params: Mapping[str, Any], scene: Scene
    ) -> list[OptimizerSpec | PlaygroundError]:
        """The page's optimizers one by one (a list of spec strings): each a spec that builds,
        or the error that says why not, so one bad hyperparameter leaves the others drawn. A
        single string is checked as a whole (any error fails the request)."""
        value = params.get("optimizers")
        if not isinstance(value, list):
            specs = self.specs(params, scene)
            for spec in specs:
                self._check_builds(spec, scene)
            return list(specs)
        if not value or len(value) > MAX_OPTIMIZERS:
            raise PlaygroundError(f"optimizers: {len(value)} specs; expected 1 to {MAX_OPTIMIZERS}")
        items: list[OptimizerSpec | PlaygroundError] = []
        for item in value:
            try:
                found = self.specs({"optimizers": item}, scene)
                if len(found) != 1:
                    raise PlaygroundError(
                        f"optimizers: {item!r} holds {len(found)} specs; expected one per entry"
                    )
                spec = found[0]
                self._check_builds(spec, scene)
            except ValueError as err:
                items.append(PlaygroundError(str(err)))
            else:
                items.append(spec)
        return items

    def stream(
        self, params: Mapping[str, Any], *, client: str | None = None, seq: int = 0
    ) -> Iterator[dict[str, Any]]:
        """Trajectories as they become ready: cached ones at once, then a short exact preview of
        the rest, then the full runs; a last ``done`` line (or ``stale`` when a newer request of
        the same page arrived first, in which case nothing more is computed). An optimizer that
        cannot be built is an ``{"index", "error"}`` line."""
        began = time.perf_counter()
        scene = self.scene(params)
        items = self.checked_items(params, scene)
        self.latest.register(client, seq)
        specs = [s for s in items if isinstance(s, OptimizerSpec)]
        missing: list[int] = []
        for i, item in enumerate(items):
            if isinstance(item, PlaygroundError):
                yield {"index": i, "error": str(item)}
                continue
            traj = self._cached(scene, item)
            if traj is None:
                missing.append(i)
            else:
                self._count("cache_hits")
                yield trajectory_json(traj, i, spec_text(item), cached=True)
        if missing:
            todo = {i: items[i] for i in missing}
            yield from self._compute_missing(scene, todo, client, seq)  # type: ignore[arg-type]
        yield {
            "done": True,
            "command": viz_command(scene, specs) if specs else None,
            # Time in the server (JSON and sending of the lines included, but not of this one):
            # what benchmarks/serve_latency.py sets against the page's own timings.
            "server_ms": round(1000 * (time.perf_counter() - began), 2),
        }

    def _compute_missing(
        self,
        scene: Scene,
        todo: dict[int, OptimizerSpec],
        client: str | None,
        seq: int,
    ) -> Iterator[dict[str, Any]]:
        if not self._compute.acquire(timeout=self.wait_seconds):
            raise BusyError(f"the playground was busy for {self.wait_seconds:g} s; try again")
        try:
            if self.latest.stale(client, seq):
                self._count("stale")
                yield {"stale": True}
                return
            # What the slot's last holder computed meanwhile (the warm-up's default picture
            # while the first page waited) is not computed again.
            for i, spec in list(todo.items()):
                traj = self._cached(scene, spec)
                if traj is not None:
                    del todo[i]
                    self._count("cache_hits")
                    yield trajectory_json(traj, i, spec_text(spec), cached=True)
            if not todo:
                return
            index = list(todo)
            specs = list(todo.values())
            texts = [spec_text(s) for s in specs]
            pooled = len(specs) > 1 and self.workers.can_run(
                scene.surface_text, [s.name for s in specs]
            )
            # The workers start on their shares before the server runs its own one here.
            submitted, kept = (
                self.workers.submit(scene.surface_text, texts, scene.steps, scene.start, keep=True)
                if pooled
                else (None, list(range(len(specs))))
            )
            # The server's runs: continued after the preview, so its paths cost nothing.
            here = race(
                scene.surface, [specs[k] for k in kept], steps=scene.steps, start=scene.start
            )
            if scene.steps > 2 * PREVIEW_STEPS and scene.steps * len(specs) >= PREVIEW_WORK:
                here.advance(PREVIEW_STEPS)
                for k, traj in zip(kept, here.trajectories()):
                    partial = not here.finished
                    yield trajectory_json(traj, index[k], texts[k], cached=False, partial=partial)
                if self.latest.stale(client, seq):
                    self._count("stale")
                    yield {"stale": True}
                    return
            self._count("computed")
            self._count("runs", len(specs))
            shares: list[Iterable[tuple[list[int], list[Share] | None]]] = [
                [(kept, None)],
                [] if submitted is None else self.workers.finished(submitted),
            ]
            for share, results in itertools.chain(*shares):
                if results is None and share is kept:
                    # The same runs, and so the same numbers, as
                    # ``ravine.viz.run(surface, specs, steps=..., start=...)``.
                    trajs = here.advance().trajectories()
                elif results is None:  # a share a worker could not run
                    trajs = run_trajectories(
                        scene.surface,
                        [specs[k] for k in share],
                        steps=scene.steps,
                        start=scene.start,
                    )
                else:
                    self._count("in_workers", len(share))
                    trajs = [
                        Trajectory(specs[k], scene.surface, points, losses, scene.steps, div, esc)
                        for k, (points, losses, div, esc) in zip(share, results)
                    ]
                for k, traj in zip(share, trajs):
                    self.trajectories.put(self._key(scene, specs[k]), traj)
                    yield trajectory_json(traj, index[k], texts[k], cached=False)
        finally:
            self._compute.release()

    def trajectories_for(self, scene: Scene, specs: list[OptimizerSpec]) -> list[Trajectory]:
        """Every spec's trajectory, from the cache or computed (not streamed; export, inspect)."""
        out: list[Trajectory | None] = [self._cached(scene, s) for s in specs]
        missing = [i for i, t in enumerate(out) if t is None]
        if missing:
            if not self._compute.acquire(timeout=self.wait_seconds):
                raise BusyError(f"the playground was busy for {self.wait_seconds:g} s; try again")
            try:
                # Computed by the slot's last holder meanwhile: taken from the cache.
                for i in missing:
                    out[i] = self._cached(scene, specs[i])
                missing = [i for i in missing if out[i] is None]
                todo = [specs[i] for i in missing]
                full = (
                    run_trajectories(scene.surface, todo, steps=scene.steps, start=scene.start)
                    if todo
                    else []
                )
                if todo:
                    self._count("computed")
                    self._count("runs", len(todo))
            finally:
                self._compute.release()
            for i, traj in zip(missing, full):
                self.trajectories.put(self._key(scene, specs[i]), traj)
                out[i] = traj
        return [t for t in out if t is not None]

    # -- contours ------------------------------------------------------------------------------

    def warm_up(self) -> None:
        """Compute what the page shows first: the default surface's contours (no optimizer
        needed), then the default state's paths."""
        self.contour({"surface": self.scene({}).surface_text})
        first = self.state({})
        scene = self.scene({"surface": first["surface"]["name"], "steps": first["steps"]})
        self.trajectories_for(
            scene, self.specs({"optimizers": [o["spec"] for o in first["optimizers"]]}, scene)
        )

    def contour(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Filled bands (with their colours) and level lines, as the static contour plot draws
        them: :func:`ravine.viz.plots.draw_contours` on an off-screen figure, read back."""
        text, surface = self.surface(_text(params, "surface", MAX_SURFACE_CHARS, "beale"))
        # One drawing at a time: the page asking while the warm-up draws waits for its result
        # instead of drawing the same surface again beside it.
        if not self._drawing.acquire(timeout=self.wait_seconds):
            raise BusyError(f"the contours took more than {self.wait_seconds:g} s; try again")
        try:
            found = self.contours.get(text)
            if found is None:
                found = contour_json(surface)
                found["surface"] = surface_info(surface, text)
                self.contours.put(text, found)
        finally:
            self._drawing.release()
        return found

    # -- the step inspector --------------------------------------------------------------------

    def inspect(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Optimizer ``spec``'s real state after ``step`` steps, replayed through its ``step``."""
        scene = self.scene(params)
        specs = self.specs({"optimizers": _text(params, "spec", MAX_SPEC_CHARS)}, scene)
        if len(specs) != 1:
            raise PlaygroundError(f"spec: {len(specs)} optimizer specs; expected one")
        spec = specs[0]
        step = _integer("step", params.get("step", 0), 0, scene.steps)
        (traj,) = self.trajectories_for(scene, [spec])
        step = min(step, len(traj.points) - 1)  # a diverged run stops early
        key = self._key(scene, spec)
        if not self._compute.acquire(timeout=self.wait_seconds):
            raise BusyError(f"the playground was busy for {self.wait_seconds:g} s; try again")
        try:
            replay = self.replays.get(key)
            if replay is None or replay.t > step:
                replay = Replay(scene.surface, spec, scene.start)
                self.replays.put(key, replay)
            replay.advance(step)
        finally:
            self._compute.release()
        if not np.array_equal(replay.point(), traj.points[step]):
            raise RuntimeError(
                f"replaying {spec_text(spec)} reached {replay.point()} at step {step}, but the "
                f"trajectory is at {traj.points[step]}"
            )
        out = replay.describe()
        out.update(spec=spec_text(spec), step=step, last_step=len(traj.points) - 1)
        if step + 1 < len(traj.points):
            out["update"] = finite(traj.points[step + 1] - traj.points[step])
        return out

    # -- export --------------------------------------------------------------------------------

    def export(self, params: Mapping[str, Any]) -> tuple[bytes, str, str]:
        """The file ``ravine viz`` writes for this state: (bytes, content type, file name)."""
        from ravine.viz.animation import MissingFFmpegError, animate, check_animation, ffmpeg_path
        from ravine.viz.plots import DEFAULT_SIZE, VIEWS, plot

        scene = self.scene(params)
        specs = self.specs(params, scene)
        fmt = _text(params, "format", 8, "png").lower()
        view = _text(params, "view", 16, "contour")
        if fmt not in EXPORT_FORMATS:
            raise PlaygroundError(f"format={fmt!r}: expected one of {', '.join(EXPORT_FORMATS)}")
        if view not in VIEWS:
            raise PlaygroundError(f"view={view!r}: expected one of {', '.join(VIEWS)}")
        animated = fmt in ("gif", "mp4")
        if animated:
            check_animation(scene.steps, 2, 20, DEFAULT_SIZE)
            if fmt == "mp4" and ffmpeg_path() is None:
                raise MissingFFmpegError("format=mp4 needs ffmpeg and none was found; use gif")
        trajs = self.trajectories_for(scene, specs)
        name = scene.surface.name if scene.surface.name.replace("-", "").isalnum() else "surface"
        name += "" if view == "contour" or animated else f"_{view}"
        if not self._export.acquire(timeout=self.wait_seconds):
            raise BusyError(f"an export was running for {self.wait_seconds:g} s; try again")
        try:
            with tempfile.TemporaryDirectory(prefix="ravine-serve-") as tmp:
                path = Path(tmp) / f"{name}.{fmt}"
                if animated:
                    animate(trajs, path, fmt=fmt, stride=2, fps=20)
                else:
                    plot(trajs, path, view=view, fmt=fmt)
                data = path.read_bytes()
        finally:
            self._export.release()
        types = {"png": "image/png", "svg": "image/svg+xml", "gif": "image/gif", "mp4": "video/mp4"}
        return data, types[fmt], path.name


# --- contours ------------------------------------------------------------------------------------

# Path codes, as matplotlib's Path and contourpy both write them.
_MOVETO, _LINETO, _CLOSEPOLY = 1, 2, 79
# matplotlib's defaults for contour maps (rcParams "contour.algorithm" and "contour.corner_mask"),
# which the static plots use: the page's map is computed the same way (tests check both).
_ALGORITHM, _CORNER_MASK = "mpl2014", True


@dataclass(frozen=True)
class _Arrays:
    """A path's vertices and codes, as contourpy gives them (a matplotlib Path holds the same)."""

    vertices: np.ndarray
    codes: np.ndarray | None


def _polylines(path: Any, digits: int) -> list[list[float]]:
    """A path (matplotlib's or :class:`_Arrays`) split at its MOVETO codes: flat [x0, y0, x1,
    y1, ...] lists, rounded to ``digits`` decimals (a CLOSEPOLY repeats its sub-path's first
    point).

    Rounded in numpy, not point by point (Python's ``round`` of 80 000 coordinates was half the
    page's first map on the server): a coordinate exactly halfway can round the other way,
    10**-digits apart, far below a pixel. A path with NaNs, other codes or a CLOSEPOLY inside
    a sub-path goes through matplotlib's segment iterator (:func:`_polylines_by_segment`)."""
    verts, codes = np.asarray(path.vertices, dtype=np.float64), path.codes
    if len(verts) == 0:
        return []
    if codes is None or len(codes) == 0 or not np.isfinite(verts).all():
        return _polylines_by_segment(path, digits)
    moveto, closepoly = codes == _MOVETO, codes == _CLOSEPOLY
    # every CLOSEPOLY ends its sub-path; the first code starts one
    ends = np.append(moveto[1:], True)
    if (
        not moveto[0]
        or not np.isin(codes, (_MOVETO, _LINETO, _CLOSEPOLY)).all()
        or (closepoly & ~ends).any()
        or (closepoly & moveto).any()
    ):
        return _polylines_by_segment(path, digits)
    starts = np.flatnonzero(moveto)
    closing = np.flatnonzero(closepoly)
    # a CLOSEPOLY's point is its sub-path's first one
    owner = starts[np.searchsorted(starts, closing, side="right") - 1]
    verts = verts.copy()
    verts[closing] = verts[owner]
    rounded = np.round(verts, digits)
    bounds = [*starts.tolist(), len(codes)]
    return [rounded[a:b].ravel().tolist() for a, b in itertools.pairwise(bounds)]


def _polylines_by_segment(path: Any, digits: int) -> list[list[float]]:
    """:func:`_polylines` through matplotlib's segment iterator (NaNs dropped, any code)."""
    from matplotlib.path import Path as MplPath

    if not isinstance(path, MplPath):
        path = MplPath(path.vertices, path.codes)
    out: list[list[float]] = []
    current: list[float] = []
    for (x, y), code in path.iter_segments(simplify=False, curves=False):
        if code == MplPath.MOVETO and current:
            out.append(current)
            current = []
        if code == MplPath.CLOSEPOLY:
            if current:
                current.extend(current[:2])
            continue
        current.extend((round(float(x), digits), round(float(y), digits)))
    if current:
        out.append(current)
    return out


def _digits(surface: Surface) -> int:
    # A ten-thousandth of the window is below a pixel at any size the page draws.
    xmin, xmax, ymin, ymax = surface.window
    return max(0, 4 - math.floor(math.log10(max(xmax - xmin, ymax - ymin))))


def contour_json(surface: Surface, n: int = CONTOUR_GRID) -> dict[str, Any]:
    """The filled bands and level lines of :func:`ravine.viz.plots.draw_contours` (same levels,
    same colours), so the page's background is the static plot's.

    Computed as matplotlib's ``contourf`` and ``contour`` compute them, without matplotlib:
    contourpy's generator with matplotlib's algorithm, the levels of
    :func:`ravine.viz.style.contour_levels`, the lowest band widened to hold the minimum, the
    colours of :func:`ravine.viz.style.band_colours`. Importing matplotlib's figure machinery
    and drawing a figure was a fifth of the server's first picture; tests check every surface
    against :func:`contour_json_matplotlib`. A surface whose levels matplotlib's locator picks
    (a count, not values) goes through matplotlib."""
    import contourpy

    from ravine.viz.style import band_colours, contour_levels

    X, Y, Z = (t.numpy() for t in surface.grid(n))
    chosen = contour_levels(surface, Z)
    if isinstance(chosen.levels, int):
        return contour_json_matplotlib(surface, n)
    levels = np.asarray(chosen.levels, dtype=np.float64)
    z = np.ma.masked_invalid(np.asarray(chosen.z, dtype=np.float64), copy=False)
    zmin = z.min()
    if chosen.log and zmin <= 0:
        z = np.ma.masked_where(z <= 0, z)
    generator = contourpy.contour_generator(
        np.asarray(X, dtype=np.float64),
        np.asarray(Y, dtype=np.float64),
        z,
        name=_ALGORITHM,
        corner_mask=_CORNER_MASK,
        line_type=contourpy.LineType.SeparateCode,
        fill_type=contourpy.FillType.OuterCode,
        chunk_size=0,
    )
    lowers = levels[:-1].copy()
    if zmin == lowers[0]:  # the lowest band holds the minimum (matplotlib's rule)
        lowers[0] = 0.99 * zmin if chosen.log else lowers[0] - 1
    digits = _digits(surface)

    def arrays(vertices: list[np.ndarray], codes: list[np.ndarray]) -> _Arrays:
        if not len(vertices):
            return _Arrays(np.empty((0, 2)), None)
        return _Arrays(np.concatenate(vertices), np.concatenate(codes))

    bands = [
        {"color": colour, "rings": _polylines(arrays(*generator.filled(lo, hi)), digits)}
        for lo, hi, colour in zip(lowers, levels[1:], band_colours(levels, chosen.log))
    ]
    lines = [
        {"level": float(level), "lines": _polylines(arrays(*generator.lines(level)), digits)}
        for level in levels
    ]
    return {
        "bands": bands,
        "levels": lines,
        "band_levels": finite(levels + chosen.shift),
        "log": bool(surface.log_levels),
    }


def contour_json_matplotlib(surface: Surface, n: int = CONTOUR_GRID) -> dict[str, Any]:
    """:func:`contour_json` read back from the static plot's own matplotlib figure (the
    reference; and the route for levels that matplotlib's locator picks)."""
    from matplotlib import colors as mcolors
    from matplotlib.contour import ContourSet

    from ravine.viz.plots import draw_contours, new_figure
    from ravine.viz.style import shift

    fig = new_figure((400, 400))
    ax = fig.add_subplot()
    draw_contours(ax, surface, n=n)
    sets = [c for c in ax.collections if isinstance(c, ContourSet)]
    digits = _digits(surface)
    filled = next(c for c in sets if c.filled)
    lines = next(c for c in sets if not c.filled)
    bands = []
    for path, colour in zip(filled.get_paths(), filled.get_facecolor()):
        bands.append({"color": mcolors.to_hex(colour), "rings": _polylines(path, digits)})
    levels = []
    for level, path in zip(lines.levels, lines.get_paths()):
        levels.append({"level": float(level), "lines": _polylines(path, digits)})
    offset = shift(surface, surface.grid(n)[2].numpy()) if surface.log_levels else 0.0
    return {
        "bands": bands,
        "levels": levels,
        "band_levels": finite(np.asarray(filled.levels, dtype=np.float64) + offset),
        "log": bool(surface.log_levels),
    }


# --- replaying one optimizer for the inspector ----------------------------------------------------


class Replay:
    """One optimizer driven as :func:`ravine.viz.run` drives it (one evaluation, then
    ``step(closure)`` returning that loss), kept so that scrubbing forward continues it."""

    def __init__(self, surface: Surface, spec: OptimizerSpec, start: tuple[float, float]) -> None:
        self.fn = surface.fn
        self.param = torch.tensor(start, dtype=torch.float64, requires_grad=True)
        self.opt = spec.build([self.param])
        self.t = 0
        self.grad: torch.Tensor | None = None
        self.stopped = False
        self.pending: torch.Tensor | None = None

    def _evaluate(self) -> torch.Tensor:
        self.param.grad = None
        x, y = self.param.unbind()
        loss = self.fn(x, y)
        loss.backward()
        return loss.detach()

    def _closure(self) -> torch.Tensor:
        # The first call of a step returns the loss evaluated before it (as the runner's does);
        # only a rule that evaluates again within a step (L-BFGS) pays for a fresh one.
        pending, self.pending = self.pending, None
        if pending is not None:
            return pending
        self.opt.zero_grad()
        x, y = self.param.unbind()
        value = self.fn(x, y)
        value.backward()
        return value

    def advance(self, step: int) -> None:
        """Step on until ``step`` steps are done (or the run blew up)."""
        while self.t < step and not self.stopped:
            self.pending = self._evaluate()
            try:
                self.opt.step(self._closure)
            except NonFiniteGradientError:
                self.stopped = True
                return
            self.t += 1
        # The gradient at the point reached: what the next step will use.
        self._evaluate()
        assert self.param.grad is not None
        self.grad = self.param.grad.detach().clone()

    def point(self) -> np.ndarray:
        return self.param.detach().numpy().astype(np.float64)

    def describe(self) -> dict[str, Any]:
        """The optimizer's state as the page shows it: 2-vectors (drawn as arrows when signed,
        as bars when accumulated squares), scalars, and Adam-style bias corrections."""
        vectors: list[dict[str, Any]] = []
        scalars: list[dict[str, Any]] = []
        _walk(self.opt.state_dict(), "", vectors, scalars)
        group = _group(self.opt)
        corrections = bias_corrections(group, _step_count(scalars))
        return {
            "point": finite(self.point()),
            "gradient": finite(self.grad.numpy()) if self.grad is not None else None,
            "vectors": vectors,
            "scalars": scalars,
            "bias_corrections": corrections,
            "hyperparameters": {
                k: jsonable(v) for k, v in group.items() if k != "params" and _simple(v)
            },
        }


def _simple(value: Any) -> bool:
    if isinstance(value, (tuple, list)):
        return all(_simple(v) for v in value)
    return isinstance(value, (bool, int, float, str)) or value is None


#: State entries that accumulate squares (or maxima of them, or step sizes): never negative,
#: so drawn as bars. Every other 2-vector (momentum buffers, first moments, Lookahead's slow
#: weights) is a direction, drawn as an arrow from the current point.
MAGNITUDES = ("v", "v_max", "sum", "Eg2", "Edx2", "u", "step_size", "square_avg", "acc_delta")


def _walk(
    obj: Any, path: str, vectors: list[dict[str, Any]], scalars: list[dict[str, Any]]
) -> None:
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if k in ("param_groups", "ravine"):
                continue
            # One parameter: its index (and the "state" level above it) adds nothing to a name.
            name = "" if k == "state" or isinstance(k, int) else str(k)
            _walk(v, f"{path}.{name}".strip(".") if name else path, vectors, scalars)
    elif isinstance(obj, torch.Tensor):
        if obj.numel() == 2:
            leaf = path.rsplit(".", 1)[-1]
            kind = "magnitude" if leaf in MAGNITUDES else "direction"
            if leaf == "slow":
                kind = "point"
            vectors.append({"name": path, "kind": kind, "value": finite(obj.detach().numpy())})
        elif obj.numel() == 1:
            scalars.append({"name": path, "value": jsonable(float(obj))})
    elif isinstance(obj, (bool, int, float)) and not isinstance(obj, bool):
        scalars.append({"name": path, "value": jsonable(obj)})


def _group(opt: torch.optim.Optimizer) -> dict[str, Any]:
    inner = getattr(opt, "inner", None) or getattr(opt, "optimizer", None)
    groups = getattr(opt, "param_groups", None) or getattr(inner, "param_groups", [{}])
    return dict(groups[0]) if groups else {}


def _step_count(scalars: Sequence[Mapping[str, Any]]) -> int | None:
    for s in scalars:
        if s["name"].rsplit(".", 1)[-1] == "step":
            return int(s["value"])
    return None


def bias_corrections(group: Mapping[str, Any], t: int | None) -> list[dict[str, Any]] | None:
    """``1 - beta_i^t`` for a group with Adam-style ``betas`` after ``t`` steps (Kingma & Ba,
    2015, Algorithm 1): the factors m and v are divided by; ``applied`` is False where the rule
    skips them (``debias=False``)."""
    betas = group.get("betas")
    if not t or not isinstance(betas, tuple) or len(betas) != 2:
        return None
    applied = bool(group.get("debias", True))
    return [
        {"name": f"1 - beta{i + 1}^t", "beta": b, "value": 1.0 - float(b) ** t, "applied": applied}
        for i, b in enumerate(betas)
    ]


# --- the equivalent command -----------------------------------------------------------------------


def viz_command(scene: Scene, specs: Sequence[OptimizerSpec]) -> str:
    """The ``ravine viz`` line that draws this state (the page's "copy as command")."""
    parts = ["ravine", "viz", "--surface", scene.surface_text]
    if scene.start != scene.surface.start:
        parts.append(f"--start={literal(scene.start[0])},{literal(scene.start[1])}")
    parts += ["--steps", str(scene.steps), "--optimizers", *(spec_text(s) for s in specs)]
    return " ".join(shlex.quote(p) for p in parts)
