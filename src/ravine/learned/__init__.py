"""Learned optimizers: the L2L coordinatewise LSTM (Andrychowicz et al. 2016) and a per-parameter
MLP (after Metz et al. 2022), their meta-training and evaluation, and bundled meta-weights.

    opt = ravine.create("l2l", model.parameters(), weights="quadratic")
    $ ravine meta-train --task quadratic ; ravine meta-eval --task quadratic

This package imports only torch (the optimizers are in the registry, which ``import ravine``
loads); meta-training and evaluation are in :mod:`ravine.learned.meta` and
:mod:`ravine.learned.evaluate`.
"""

# The registry lists these optimizers and they use its hyperparameter checks: ravine.optim loads
# first, so that either package can be the first one imported (`ravine meta-train` starts here).
import ravine.optim  # noqa: F401
from ravine.learned.nets import CoordinateLSTM, PerParameterMLP
from ravine.learned.optimizers import L2L, LearnedMLP, LearnedOptimizer

__all__ = ["L2L", "CoordinateLSTM", "LearnedMLP", "LearnedOptimizer", "PerParameterMLP"]
