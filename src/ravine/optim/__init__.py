"""ravine's optimizers: drop-in ``torch.optim.Optimizer`` subclasses, each one update rule."""

from ravine.optim.adabound import AdaBound, AMSBound
from ravine.optim.adadelta import Adadelta
from ravine.optim.adagrad import Adagrad
from ravine.optim.adam import Adam, AdaMax, AdamW, AMSGrad, NAdam
from ravine.optim.aggmo import AggMo
from ravine.optim.base import (
    GradientTransform,
    NonFiniteGradientError,
    NonFiniteUpdateError,
    Optimizer,
)
from ravine.optim.delay import DelayTolerantAdagrad
from ravine.optim.qh import QHM, QHAdam
from ravine.optim.radam import RAdam
from ravine.optim.registry import create, get, names, register
from ravine.optim.rmsprop import RMSprop
from ravine.optim.rprop import Rprop
from ravine.optim.sgd import NAG, SGD, Momentum
from ravine.optim.torch_format import to_torch_state_dict
from ravine.optim.wrappers import LBFGS, GradientNoise, Lookahead, Ranger, TransformGradients

Nadam = NAdam
Adamax = AdaMax

__all__ = [
    "LBFGS",
    "NAG",
    "QHM",
    "SGD",
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
    "DelayTolerantAdagrad",
    "GradientNoise",
    "GradientTransform",
    "Lookahead",
    "Momentum",
    "NAdam",
    "Nadam",
    "NonFiniteGradientError",
    "NonFiniteUpdateError",
    "Optimizer",
    "QHAdam",
    "RAdam",
    "RMSprop",
    "Ranger",
    "Rprop",
    "TransformGradients",
    "create",
    "get",
    "names",
    "register",
    "to_torch_state_dict",
]
