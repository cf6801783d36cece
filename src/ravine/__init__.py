"""ravine: gradient-descent optimization library and lab.

    import ravine
    opt = ravine.Adam(model.parameters(), lr=1e-3)          # drop-in for torch.optim.Adam
    opt = ravine.create("nadam", model.parameters())         # any registered optimizer by name
    history = ravine.fit(model, opt, train, val, batch_size=128, epochs=5)
"""

__version__ = "0.1.0"

from ravine import data, models, schedules
from ravine.gradcheck import GradcheckResult, gradcheck
from ravine.optim import (
    NAG,
    SGD,
    Adadelta,
    Adagrad,
    Adam,
    AdaMax,
    Adamax,
    AdamW,
    AMSGrad,
    Momentum,
    NAdam,
    Nadam,
    NonFiniteGradientError,
    Optimizer,
    RMSprop,
    Rprop,
    create,
)
from ravine.tensorlist import TL
from ravine.train import EarlyStopping, History, NonFiniteLossError, fit

__all__ = [
    "NAG",
    "SGD",
    "TL",
    "AMSGrad",
    "AdaMax",
    "Adadelta",
    "Adagrad",
    "Adam",
    "AdamW",
    "Adamax",
    "EarlyStopping",
    "GradcheckResult",
    "History",
    "Momentum",
    "NAdam",
    "Nadam",
    "NonFiniteGradientError",
    "NonFiniteLossError",
    "Optimizer",
    "RMSprop",
    "Rprop",
    "create",
    "data",
    "fit",
    "gradcheck",
    "models",
    "schedules",
]
