"""ravine: gradient-descent optimization library and lab.

Example::

    import ravine
    opt = ravine.Adam(model.parameters(), lr=1e-3)          # drop-in for torch.optim.Adam
    opt = ravine.create("nadam", model.parameters())         # any registered optimizer by name
    ravine.optimizers()                                      # every name: paper, defaults, use
    history = ravine.fit(model, opt, train, val, batch_size=128, epochs=5)
"""

__version__ = "0.1.0"

import importlib
import importlib.util
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers and IDEs see; _WHERE says the same at run time
    from ravine import data, models, schedules
    from ravine.callbacks import Callback
    from ravine.gradcheck import GradcheckResult, gradcheck
    from ravine.loggers import CSVLogger, TensorBoardLogger
    from ravine.optim import (
        LBFGS,
        NAG,
        QHM,
        SGD,
        AdaBound,
        Adadelta,
        Adagrad,
        Adam,
        AdaMax,
        Adamax,
        AdamW,
        AggMo,
        AMSBound,
        AMSGrad,
        DelayTolerantAdagrad,
        GradientNoise,
        Lookahead,
        Momentum,
        NAdam,
        Nadam,
        NonFiniteGradientError,
        NonFiniteUpdateError,
        Optimizer,
        QHAdam,
        RAdam,
        Ranger,
        RMSprop,
        Rprop,
        TransformGradients,
        create,
    )
    from ravine.optim.registry import optimizers
    from ravine.tensorlist import TL
    from ravine.train import (
        CorruptCheckpointError,
        EarlyStopping,
        History,
        NonFiniteLossError,
        NonFiniteParametersError,
        evaluate,
        fit,
    )

# Public name -> "module:attribute" where it is defined, or the submodule itself. The names
# load on first use (PEP 562), so `import ravine` costs no torch import: `ravine serve` prints
# its address and serves the page while torch loads, and `ravine --help` answers at once.
# tests/test_packaging.py checks that this table and the imports above name the same things.
_WHERE: dict[str, str] = {
    "AMSBound": "ravine.optim:AMSBound",
    "AMSGrad": "ravine.optim:AMSGrad",
    "AdaBound": "ravine.optim:AdaBound",
    "AdaMax": "ravine.optim:AdaMax",
    "Adadelta": "ravine.optim:Adadelta",
    "Adagrad": "ravine.optim:Adagrad",
    "Adam": "ravine.optim:Adam",
    "AdamW": "ravine.optim:AdamW",
    "Adamax": "ravine.optim:Adamax",
    "AggMo": "ravine.optim:AggMo",
    "CSVLogger": "ravine.loggers:CSVLogger",
    "Callback": "ravine.callbacks:Callback",
    "CorruptCheckpointError": "ravine.train:CorruptCheckpointError",
    "DelayTolerantAdagrad": "ravine.optim:DelayTolerantAdagrad",
    "EarlyStopping": "ravine.train:EarlyStopping",
    "GradcheckResult": "ravine.gradcheck:GradcheckResult",
    "GradientNoise": "ravine.optim:GradientNoise",
    "History": "ravine.train:History",
    "LBFGS": "ravine.optim:LBFGS",
    "Lookahead": "ravine.optim:Lookahead",
    "Momentum": "ravine.optim:Momentum",
    "NAG": "ravine.optim:NAG",
    "NAdam": "ravine.optim:NAdam",
    "Nadam": "ravine.optim:Nadam",
    "NonFiniteGradientError": "ravine.optim:NonFiniteGradientError",
    "NonFiniteLossError": "ravine.train:NonFiniteLossError",
    "NonFiniteParametersError": "ravine.train:NonFiniteParametersError",
    "NonFiniteUpdateError": "ravine.optim:NonFiniteUpdateError",
    "Optimizer": "ravine.optim:Optimizer",
    "QHAdam": "ravine.optim:QHAdam",
    "QHM": "ravine.optim:QHM",
    "RAdam": "ravine.optim:RAdam",
    "RMSprop": "ravine.optim:RMSprop",
    "Ranger": "ravine.optim:Ranger",
    "Rprop": "ravine.optim:Rprop",
    "SGD": "ravine.optim:SGD",
    "TL": "ravine.tensorlist:TL",
    "TensorBoardLogger": "ravine.loggers:TensorBoardLogger",
    "TransformGradients": "ravine.optim:TransformGradients",
    "create": "ravine.optim:create",
    "data": "ravine.data",
    "evaluate": "ravine.train:evaluate",
    "fit": "ravine.train:fit",
    "gradcheck": "ravine.gradcheck:gradcheck",
    "models": "ravine.models",
    "optimizers": "ravine.optim.registry:optimizers",
    "schedules": "ravine.schedules",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        # A subpackage (`ravine.optim.registry`, `ravine.train.fit`, `ravine.bench`): an eager
        # `import ravine` used to import most of them, and code that relies on that still works.
        where = f"{__name__}.{name}"
        if name.startswith("_") or importlib.util.find_spec(where) is None:
            raise AttributeError(f"module 'ravine' has no attribute {name!r}")
    module, _, attribute = where.partition(":")
    loaded = importlib.import_module(module)
    value = getattr(loaded, attribute) if attribute else loaded
    globals()[name] = value  # later lookups skip __getattr__
    return value


class _Package(ModuleType):
    """Keeps ``ravine.gradcheck`` the function: importing the submodule of the same name sets
    the package's attribute to the module (after it ran), which the eager ``from
    ravine.gradcheck import gradcheck`` used to overwrite."""

    def __setattr__(self, name: str, value: Any) -> None:
        where = _WHERE.get(name, "")
        if isinstance(value, ModuleType) and where.startswith(value.__name__ + ":"):
            value = getattr(value, where.partition(":")[2])
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})
