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

# Public name -> the module that defines it (a submodule's own name maps to itself). The names
# load on first use (PEP 562), so `import ravine` costs no torch import: `ravine serve` prints
# its address and serves the page while torch loads, and `ravine --help` answers at once.
# tests/test_packaging.py checks that this table and the imports above name the same things.
_WHERE: dict[str, str] = {
    "AMSBound": "ravine.optim",
    "AMSGrad": "ravine.optim",
    "AdaBound": "ravine.optim",
    "AdaMax": "ravine.optim",
    "Adadelta": "ravine.optim",
    "Adagrad": "ravine.optim",
    "Adam": "ravine.optim",
    "AdamW": "ravine.optim",
    "Adamax": "ravine.optim",
    "AggMo": "ravine.optim",
    "CSVLogger": "ravine.loggers",
    "Callback": "ravine.callbacks",
    "CorruptCheckpointError": "ravine.train",
    "DelayTolerantAdagrad": "ravine.optim",
    "EarlyStopping": "ravine.train",
    "GradcheckResult": "ravine.gradcheck",
    "GradientNoise": "ravine.optim",
    "History": "ravine.train",
    "LBFGS": "ravine.optim",
    "Lookahead": "ravine.optim",
    "Momentum": "ravine.optim",
    "NAG": "ravine.optim",
    "NAdam": "ravine.optim",
    "Nadam": "ravine.optim",
    "NonFiniteGradientError": "ravine.optim",
    "NonFiniteLossError": "ravine.train",
    "NonFiniteParametersError": "ravine.train",
    "NonFiniteUpdateError": "ravine.optim",
    "Optimizer": "ravine.optim",
    "QHAdam": "ravine.optim",
    "QHM": "ravine.optim",
    "RAdam": "ravine.optim",
    "RMSprop": "ravine.optim",
    "Ranger": "ravine.optim",
    "Rprop": "ravine.optim",
    "SGD": "ravine.optim",
    "TL": "ravine.tensorlist",
    "TensorBoardLogger": "ravine.loggers",
    "TransformGradients": "ravine.optim",
    "create": "ravine.optim",
    "data": "ravine.data",
    "evaluate": "ravine.train",
    "fit": "ravine.train",
    "gradcheck": "ravine.gradcheck",
    "models": "ravine.models",
    "optimizers": "ravine.optim.registry",
    "schedules": "ravine.schedules",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        # A subpackage (`ravine.optim.registry`, `ravine.train.fit`, `ravine.bench`): an eager
        # `import ravine` used to import most of them, and code that relies on that still works.
        module = f"{__name__}.{name}"
        if name.startswith("_") or importlib.util.find_spec(module) is None:
            raise AttributeError(f"module 'ravine' has no attribute {name!r}")
    loaded = importlib.import_module(module)
    value = loaded if module == f"{__name__}.{name}" else getattr(loaded, name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})
