"""Versioned search spaces and pre-registered, non-adaptive trial lists.

Each optimizer's space lists the knobs that Choi et al. (2019, arXiv:1910.05446) show change its
ranking: the learning rate (log-uniform over about four decades around the paper default), the
momentum / beta terms (as 1 - beta, log-uniform, so 0.9, 0.99 and 0.999 are equally likely) and
eps where it acts as a damping term (Adam family, RMSprop, Adagrad, Adadelta). The ranges follow
Schmidt, Schneider & Hennig (2021, arXiv:2007.01547, "Descending through a Crowded Valley").

Trials: trial 0 is the optimizer's one-shot default (its constructor's defaults); trials 1..K are
the first K points of a scrambled Halton sequence (scipy.stats.qmc; Owen scrambling seeded by
(space version, optimizer, seed)), mapped into the space. Halton (as AlgoPerf's halton.py) rather
than Sobol because its prefixes of any length are balanced, so K need not be a power of two; and
a trial's values depend only on (version, optimizer, seed, index), so the list for K is a prefix
of the list for K' > K. A released version never changes: a new space is a new version.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CURRENT_VERSION",
    "SPACES",
    "Knob",
    "Space",
    "Trial",
    "get",
    "trials",
]


@dataclass(frozen=True)
class Knob:
    """One searched hyperparameter.

    ``scale``: "log" draws x = exp(U(log low, log high)); "one_minus_log" draws 1 - x from that
    (momentum and betas: 1 - beta in [low, high]). ``name`` may index a tuple: "betas.0".
    """

    name: str
    low: float
    high: float
    scale: str = "log"

    def __post_init__(self) -> None:
        if not (0 < self.low < self.high and math.isfinite(self.high)):
            raise ValueError(f"{self.name}: need 0 < low < high, got {self.low}, {self.high}")
        if self.scale not in ("log", "one_minus_log"):
            raise ValueError(f"{self.name}: scale must be 'log' or 'one_minus_log'")

    def value(self, u: float) -> float:
        """The value at quantile u in [0, 1)."""
        x = math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        return 1.0 - x if self.scale == "one_minus_log" else x

    def bounds(self) -> tuple[float, float]:
        """(smallest, largest) value the knob takes."""
        if self.scale == "one_minus_log":
            return 1.0 - self.high, 1.0 - self.low
        return self.low, self.high

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "low": self.low, "high": self.high, "scale": self.scale}


@dataclass(frozen=True)
class Space:
    """An optimizer's knobs; hyperparameters not listed keep the constructor's defaults."""

    optimizer: str
    knobs: tuple[Knob, ...]

    def spec(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer, "knobs": [k.spec() for k in self.knobs]}


def _lr(low: float, high: float) -> Knob:
    return Knob("lr", low, high)


def _beta(name: str, low: float, high: float) -> Knob:
    return Knob(name, low, high, "one_minus_log")


def _eps(low: float = 1e-10, high: float = 1.0) -> Knob:
    return Knob("eps", low, high)


_ADAM_LIKE = (_lr(1e-5, 1e-1), _beta("betas.0", 1e-3, 1.0), _beta("betas.1", 1e-4, 1e-1), _eps())

# version -> optimizer -> space. Optimizers absent from a version have no space there (full-batch
# methods such as rprop and lbfgs are not mini-batch competitors).
SPACES: Mapping[str, Mapping[str, Space]] = {
    "v1": {
        s.optimizer: s
        for s in (
            Space("sgd", (_lr(1e-3, 10.0),)),
            Space("momentum", (_lr(1e-4, 1.0), _beta("momentum", 1e-3, 1.0))),
            Space("nag", (_lr(1e-4, 1.0), _beta("momentum", 1e-3, 1.0))),
            Space("adagrad", (_lr(1e-4, 1.0), _eps())),
            Space("adadelta", (_lr(1e-2, 1e2), _beta("rho", 1e-3, 1e-1), _eps(1e-10, 1e-2))),
            Space("rmsprop", (_lr(1e-5, 1e-1), _beta("alpha", 1e-3, 1e-1), _eps())),
            Space("adam", _ADAM_LIKE),
            Space("amsgrad", _ADAM_LIKE),
            Space("adamw", (*_ADAM_LIKE, Knob("weight_decay", 1e-5, 1e-1))),
            Space("adamax", (_lr(1e-5, 1e-1), *_ADAM_LIKE[1:])),
            Space("nadam", _ADAM_LIKE),
            Space("radam", _ADAM_LIKE),
            Space("qhm", (_lr(1e-4, 1.0), _beta("momentum", 1e-3, 1e-1), Knob("nu", 0.1, 1.0))),
            Space("adabound", (_lr(1e-5, 1e-1), Knob("final_lr", 1e-3, 1.0))),
            Space("ranger", (_lr(1e-5, 1e-1), *_ADAM_LIKE[1:])),
        )
    }
}
CURRENT_VERSION = "v1"


def get(optimizer: str, version: str = CURRENT_VERSION) -> Space:
    """The space of ``optimizer`` in ``version``; ValueError names what exists."""
    if version not in SPACES:
        raise ValueError(f"space version must be one of {list(SPACES)}, got {version!r}")
    try:
        return SPACES[version][optimizer]
    except KeyError:
        raise ValueError(
            f"optimizer {optimizer!r} has no search space in {version} "
            f"(spaces: {', '.join(SPACES[version])})"
        ) from None


@dataclass(frozen=True)
class Trial:
    """Trial ``index`` of an optimizer's list: 0 is the one-shot default, 1..K the QMC points.

    ``hp`` holds only the searched knobs (tuples assembled, e.g. betas); everything else is the
    constructor's default. The default trial has ``hp == {}``.
    """

    optimizer: str
    version: str
    seed: int
    index: int
    hp: Mapping[str, Any]

    @property
    def is_default(self) -> bool:
        return self.index == 0


def _scramble_seed(version: str, optimizer: str, seed: int) -> int:
    # A stable digest: Python's hash() of a str changes between interpreters.
    digest = hashlib.sha256(f"{version}/{optimizer}/{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _assemble(space: Space, u: Any, defaults: Mapping[str, Any]) -> dict[str, Any]:
    hp: dict[str, Any] = {}
    for knob, ui in zip(space.knobs, u):
        name, _, index = knob.name.partition(".")
        value = knob.value(float(ui))
        if index:
            current = list(hp.get(name, defaults[name]))
            current[int(index)] = value
            hp[name] = tuple(current)
        else:
            hp[name] = value
    return hp


def trials(optimizer: str, k: int, seed: int = 0, version: str = CURRENT_VERSION) -> list[Trial]:
    """The pre-registered list: the default, then K scrambled-Halton points (a pure function).

    Same K for every optimizer is the caller's contract (the sweep asserts it).
    """
    if not (isinstance(k, int) and 0 <= k <= 100_000):
        raise ValueError(f"k must be an integer in [0, 100000], got {k!r}")
    if not (isinstance(seed, int) and seed >= 0):
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    space = get(optimizer, version)
    try:
        from scipy.stats import qmc
    except ImportError:
        raise ImportError(
            "the bench's trial lists need scipy (scipy.stats.qmc): pip install 'ravine[lab]'"
        ) from None

    from ravine.optim import catalog

    defaults = catalog.get(optimizer).defaults
    out = [Trial(optimizer, version, seed, 0, {})]
    if k:
        sampler = qmc.Halton(
            d=len(space.knobs), scramble=True, seed=_scramble_seed(version, optimizer, seed)
        )
        for i, u in enumerate(sampler.random(k), start=1):
            out.append(Trial(optimizer, version, seed, i, _assemble(space, u, defaults)))
    return out
