"""ravine: gradient-descent optimization library and lab.

Example::

    import ravine
    opt = ravine.Adam(model.parameters(), lr=1e-3)          # drop-in for torch.optim.Adam
    opt = ravine.create("nadam", model.parameters())         # any registered optimizer by name
    ravine.optimizers()                                      # every name: paper, defaults, use
    history = ravine.fit(model, opt, train, val, batch_size=128, epochs=5)
"""

__version__ = "0.1.0"

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

__all__ = [
    "LBFGS",
    "NAG",
    "QHM",
    "SGD",
    "TL",
    "AMSBound",
    "AMSGrad",
    "AdaBound",
    "AdaMax",
    "Adadelta",
    "Adagrad",
    "Adam",
    "AdamW",
    "Adamax",
    "AggMo",
    "CSVLogger",
    "Callback",
    "CorruptCheckpointError",
    "DelayTolerantAdagrad",
    "EarlyStopping",
    "GradcheckResult",
    "GradientNoise",
    "History",
    "Lookahead",
    "Momentum",
    "NAdam",
    "Nadam",
    "NonFiniteGradientError",
    "NonFiniteLossError",
    "NonFiniteParametersError",
    "NonFiniteUpdateError",
    "Optimizer",
    "QHAdam",
    "RAdam",
    "RMSprop",
    "Ranger",
    "Rprop",
    "TensorBoardLogger",
    "TransformGradients",
    "create",
    "data",
    "evaluate",
    "fit",
    "gradcheck",
    "models",
    "optimizers",
    "schedules",
]
