"""One row per optimizer: every fact about it except its update rule and its defaults.

A row gives the registry name, the class, the paper, the torch.optim class with the same rule,
the hyperparameters the demo and the gallery's surfaces are known to work with, the README's
notes and when to use it (``ravine optimizers``). The registry (``ravine.create``), the demo,
the benchmarks, the tests and the README's optimizer table read it; adding an optimizer touches its
own file and one row of :data:`ROWS`. The bench's search spaces are versioned, so they live in
their own table (``ravine.bench.spaces``), not here.

Defaults stay in each class's signature (one place for each fact): :attr:`Row.defaults` reads
them from there.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import torch

from ravine.learned.optimizers import L2L, LearnedMLP
from ravine.optim.adabound import AdaBound, AMSBound
from ravine.optim.adadelta import Adadelta
from ravine.optim.adagrad import Adagrad
from ravine.optim.adam import Adam, AdaMax, AdamW, AMSGrad, NAdam
from ravine.optim.aggmo import AggMo
from ravine.optim.delay import DelayTolerantAdagrad
from ravine.optim.qh import QHM, QHAdam
from ravine.optim.radam import RAdam
from ravine.optim.rmsprop import RMSprop
from ravine.optim.rprop import Rprop
from ravine.optim.sgd import NAG, SGD, Momentum
from ravine.optim.wrappers import LBFGS, Lookahead, Ranger


def signature_defaults(factory: Callable[..., Any]) -> dict[str, Any]:
    """The keyword arguments ``factory`` takes that have a default, with that default."""
    return {
        n: p.default
        for n, p in inspect.signature(factory).parameters.items()
        if p.default is not inspect.Parameter.empty and p.kind is not p.VAR_KEYWORD
    }


@dataclass(frozen=True)
class Paper:
    """Where an optimizer comes from: ``Paper("Kingma & Ba", 2015, "...", "1412.6980")``."""

    authors: str  # as cited: "Kingma & Ba", "Luo, Xiong, Liu & Sun"
    year: int
    title: str
    arxiv: str | None = None  # the arXiv id, without the "arXiv:" prefix
    venue: str = ""  # journal, conference or lecture; a section when the rule is one part of it

    def short(self) -> str:
        """'Kingma & Ba 2015, arXiv:1412.6980'; more than two authors become 'Luo et al.'."""
        names = self.authors.replace(" & ", ", ").split(", ")
        who = self.authors if len(names) <= 2 else f"{names[0]} et al."
        where = f"arXiv:{self.arxiv}" if self.arxiv else self.venue
        return f"{who} {self.year}" + (f", {where}" if where else "")

    def __str__(self) -> str:
        parts = [f"{self.authors} {self.year}", self.venue, f"'{self.title}'"]
        if self.arxiv:
            parts.append(f"arXiv:{self.arxiv}")
        return ", ".join(p for p in parts if p)


@dataclass(frozen=True)
class Setting:
    """Hyperparameters that work on a problem; ``lr_gamma`` multiplies lr after every step."""

    hp: Mapping[str, Any]
    lr_gamma: float | None = None

    def __post_init__(self) -> None:
        # Rows are shared by everything that reads the catalog: a caller cannot edit one.
        object.__setattr__(self, "hp", MappingProxyType(dict(self.hp)))


@dataclass(frozen=True)
class Row:
    """The facts about one optimizer (see the module docstring)."""

    name: str  # the registry name, lower case
    cls: Callable[..., torch.optim.Optimizer]
    paper: Paper
    # The torch.optim class that computes the same update given the same keyword arguments
    # (its defaults may differ), or None where no torch.optim class does.
    torch_rule: str | None
    # The demo: Rosenbrock from (-1.5, 2) in float64, and an MLP on MNIST-1D in mini-batches of
    # 100 (None: a full-batch method, left out of mini-batch training).
    rosenbrock: Setting
    mnist1d: Setting | None
    # The gallery's surfaces (ravine.surfaces names) that an optimizer is shown on, one setting
    # each; what is absent was not tuned there.
    surfaces: Mapping[str, Setting] = field(default_factory=dict)
    # The README table: which defaults it shows, and a note.
    readme_defaults: tuple[str, ...] = ("lr",)
    notes: str = ""
    # One line for `ravine optimizers` and the docs: the situation this optimizer is made for.
    use_when: str = ""

    @property
    def defaults(self) -> dict[str, Any]:
        """The constructor's defaults, read from the class signature (they live there)."""
        return signature_defaults(self.cls)


def _s(**hp: Any) -> Setting:
    return Setting(hp)


ADAM_PAPER = Paper(
    "Kingma & Ba", 2015, "Adam: A Method for Stochastic Optimization", "1412.6980", "ICLR"
)
QH_PAPER = Paper(
    "Ma & Yarats",
    2019,
    "Quasi-hyperbolic momentum and Adam for deep learning",
    "1810.06801",
    "ICLR",
)
ADABOUND_PAPER = Paper(
    "Luo, Xiong, Liu & Sun",
    2019,
    "Adaptive Gradient Methods with Dynamic Bound of Learning Rate",
    "1902.09843",
    "ICLR",
)
ADAGRAD_PAPER = Paper(
    "Duchi, Hazan & Singer",
    2011,
    "Adaptive Subgradient Methods for Online Learning and Stochastic Optimization",
    venue="JMLR 12",
)
MNIST1D_LR = _s(lr=1e-3)  # Adam's default: the adaptive methods need no tuning here

ROWS: tuple[Row, ...] = (
    Row(
        "sgd",
        SGD,
        Paper(
            "Robbins & Monro", 1951, "A Stochastic Approximation Method", venue="Ann. Math. Stat."
        ),
        "SGD",
        rosenbrock=_s(lr=2e-3),
        mnist1d=_s(lr=0.1),
        surfaces={"beale": _s(lr=0.001), "saddle": _s(lr=0.01)},
        readme_defaults=("lr", "momentum", "dampening", "nesterov"),
        notes="= torch.optim.SGD; sparse gradients",
        use_when="a baseline, or tuned with a schedule on vision models; no state to store",
    ),
    Row(
        "momentum",
        Momentum,
        Paper(
            "Qian",
            1999,
            "On the momentum term in gradient descent learning algorithms",
            venue="Neural Networks 12",
        ),
        "SGD",
        rosenbrock=_s(lr=5e-4),
        mnist1d=_s(lr=0.01),
        surfaces={"beale": _s(lr=0.001, momentum=0.9), "saddle": _s(lr=0.01, momentum=0.9)},
        readme_defaults=("lr", "momentum"),
        notes="torch's lr placement (b = mu b + g; p -= lr b)",
        use_when="ill-conditioned (ravine-shaped) losses: damps zig-zag, speeds along the valley",
    ),
    Row(
        "nag",
        NAG,
        Paper(
            "Sutskever, Martens, Dahl & Hinton",
            2013,
            "On the importance of initialization and momentum in deep learning",
            venue="ICML",
        ),
        None,
        rosenbrock=_s(lr=1e-3),
        mnist1d=_s(lr=0.01),
        surfaces={"beale": _s(lr=0.001, momentum=0.9), "saddle": _s(lr=0.01, momentum=0.9)},
        readme_defaults=("lr", "momentum", "form"),
        notes='`form="sutskever"` evaluates the gradient at the look-ahead point (closure)',
        use_when="as momentum, with a look-ahead correction that overshoots less at high momentum",
    ),
    Row(
        "adagrad",
        Adagrad,
        ADAGRAD_PAPER,
        "Adagrad",
        rosenbrock=_s(lr=1.0),
        mnist1d=_s(lr=0.01),
        surfaces={"beale": _s(lr=0.5), "saddle": _s(lr=0.5), "quadratic": _s(lr=1)},
        readme_defaults=("lr", "eps"),
        notes="= torch.optim.Adagrad; sparse gradients",
        use_when="sparse features (NLP, recommendation), convex problems; steps only shrink",
    ),
    Row(
        "adadelta",
        Adadelta,
        Paper("Zeiler", 2012, "ADADELTA: An Adaptive Learning Rate Method", "1212.5701"),
        "Adadelta",
        # Adadelta circles the minimum at a constant lr; a gentle decay lets it settle.
        rosenbrock=Setting({"lr": 1.0, "rho": 0.95}, lr_gamma=0.999),
        mnist1d=_s(lr=1.0),
        surfaces={"beale": _s(lr=5), "saddle": _s(lr=5), "quadratic": _s(lr=50)},
        readme_defaults=("lr", "rho", "eps"),
        notes="= torch.optim.Adadelta; lr is only a multiplier (Zeiler's rule needs none)",
        use_when="no learning rate to tune (lr=1.0 is a multiplier); Adagrad without shrinkage",
    ),
    Row(
        "rmsprop",
        RMSprop,
        Paper(
            "Hinton",
            2012,
            "Neural Networks for Machine Learning",
            venue="lecture 6e",
        ),
        "RMSprop",
        rosenbrock=_s(lr=3e-3),
        mnist1d=MNIST1D_LR,
        surfaces={"beale": _s(lr=0.02), "saddle": _s(lr=0.05), "quadratic": _s(lr=0.1)},
        readme_defaults=("lr", "alpha", "eps"),
        notes="Hinton's defaults (torch: 1e-2, 0.99); `centered`, `momentum`",
        use_when="non-stationary objectives, RNNs, RL: scaling that forgets old gradients",
    ),
    Row(
        "rprop",
        Rprop,
        Paper(
            "Riedmiller & Braun",
            1993,
            "A direct adaptive method for faster backpropagation learning: the RPROP algorithm",
            venue="ICNN",
        ),
        "Rprop",
        rosenbrock=_s(lr=0.01),
        mnist1d=None,  # sign tests assume the same loss at every step
        readme_defaults=("lr", "etas", "step_sizes"),
        notes="= torch.optim.Rprop (iRprop-); lr is the initial step Delta_0; full batch",
        use_when="full-batch training of small networks: gradient signs only, any scale",
    ),
    Row(
        "adam",
        Adam,
        ADAM_PAPER,
        "Adam",
        rosenbrock=_s(lr=0.02),
        mnist1d=MNIST1D_LR,
        surfaces={"beale": _s(lr=0.1), "saddle": _s(lr=0.1), "quadratic": _s(lr=0.5)},
        readme_defaults=("lr", "betas", "eps"),
        notes="= torch.optim.Adam incl. `amsgrad`, `decoupled_weight_decay`",
        use_when="the first thing to try on a deep network: little tuning, any gradient scale",
    ),
    Row(
        "amsgrad",
        AMSGrad,
        Paper(
            "Reddi, Kale & Kumar",
            2018,
            "On the Convergence of Adam and Beyond",
            "1904.09237",
            "ICLR",
        ),
        None,
        rosenbrock=_s(lr=0.05),
        mnist1d=MNIST1D_LR,
        surfaces={"beale": _s(lr=0.05)},
        readme_defaults=("lr", "betas", "eps"),
        notes="paper/survey form: max of v, no debiasing; `debias=True` = torch's",
        use_when="Adam oscillates or diverges late in training: a step size that never grows back",
    ),
    Row(
        "adamw",
        AdamW,
        Paper(
            "Loshchilov & Hutter",
            2019,
            "Decoupled Weight Decay Regularization",
            "1711.05101",
            "ICLR",
        ),
        "AdamW",
        rosenbrock=_s(lr=0.05, weight_decay=0.0),
        mnist1d=_s(lr=1e-3, weight_decay=1e-2),
        surfaces={"beale": _s(lr=0.05)},
        readme_defaults=("lr", "betas", "eps", "weight_decay"),
        notes="= torch.optim.AdamW (decay scaled by lr)",
        use_when="training with weight decay (transformers, fine-tuning): decay kept apart",
    ),
    Row(
        "adamax",
        AdaMax,
        replace(ADAM_PAPER, venue="ICLR, section 7.1"),
        "Adamax",
        rosenbrock=_s(lr=0.05),
        mnist1d=MNIST1D_LR,
        readme_defaults=("lr", "betas"),
        notes="= torch.optim.Adamax; the paper's section 7.1",
        use_when="gradients with rare large outliers (embeddings): infinity-norm scaling",
    ),
    Row(
        "nadam",
        NAdam,
        Paper(
            "Dozat",
            2016,
            "Incorporating Nesterov Momentum into Adam",
            venue="ICLR workshop",
        ),
        None,
        rosenbrock=_s(lr=0.01),
        mnist1d=MNIST1D_LR,
        readme_defaults=("lr", "betas", "momentum_decay"),
        notes="survey's form; `momentum_decay=4e-3` = torch.optim.NAdam",
        use_when="Adam with Nesterov momentum: often a little faster early on at the same settings",
    ),
    Row(
        "qhm",
        QHM,
        QH_PAPER,
        None,
        rosenbrock=_s(lr=2e-3, momentum=0.99),
        mnist1d=_s(lr=0.1),
        readme_defaults=("lr", "momentum", "nu"),
        notes="nu=1: momentum, nu=0: SGD",
        use_when="momentum SGD with noisy momentum: nu mixes plain SGD and momentum steps",
    ),
    Row(
        "qhadam",
        QHAdam,
        QH_PAPER,
        None,
        rosenbrock=_s(lr=0.01),
        mnist1d=MNIST1D_LR,
        surfaces={"beale": _s(lr=0.05)},
        readme_defaults=("lr", "betas", "nus"),
        notes="nus=(1, 1): Adam",
        use_when="Adam whose momentum amplifies noise: nus set how much of the average is used",
    ),
    Row(
        "aggmo",
        AggMo,
        Paper("Lucas, Sun, Zemel & Grosse", 2019, "Aggregated Momentum", "1804.00325", "ICLR"),
        None,
        rosenbrock=_s(lr=2e-4),
        mnist1d=_s(lr=0.01),
        surfaces={"beale": _s(lr=0.0002)},
        readme_defaults=("lr", "betas"),
        notes="one beta: momentum; a zero beta keeps no buffer",
        use_when="momentum where a high beta oscillates: several betas, the small ones damping",
    ),
    Row(
        "adabound",
        AdaBound,
        ADABOUND_PAPER,
        None,
        rosenbrock=_s(lr=0.3, gamma=1e-6, betas=(0.9, 0.99)),
        mnist1d=MNIST1D_LR,
        surfaces={"beale": _s(lr=0.1)},
        readme_defaults=("lr", "final_lr", "gamma"),
        notes="bounds move from Adam to SGD; `sqrt_t_decay=False, debias=True`: authors' code",
        use_when="Adam's fast start with SGD's generalisation: steps bounded, closing on final_lr",
    ),
    Row(
        "amsbound",
        AMSBound,
        ADABOUND_PAPER,
        None,
        rosenbrock=_s(lr=0.05, final_lr=2e-3, gamma=0.01, sqrt_t_decay=False),
        mnist1d=MNIST1D_LR,
        readme_defaults=("lr", "final_lr", "gamma"),
        notes="AdaBound on the running maximum of v",
        use_when="AdaBound where the second moment should never shrink (AMSGrad's fix)",
    ),
    Row(
        "radam",
        RAdam,
        Paper(
            "Liu, Jiang, He, Chen, Liu, Gao & Han",
            2020,
            "On the Variance of the Adaptive Learning Rate and Beyond",
            "1908.03265",
            "ICLR",
        ),
        None,
        # Its first steps are momentum-SGD steps: lr 0.02 already diverges on Rosenbrock.
        rosenbrock=_s(lr=5e-3, betas=(0.9, 0.99)),
        mnist1d=MNIST1D_LR,
        surfaces={"beale": _s(lr=0.01)},
        readme_defaults=("lr", "rho_threshold"),
        notes="the paper's switch rho_t > 4; `rho_threshold=5.0` = torch.optim.RAdam",
        use_when="Adam without a warm-up schedule: the rectification replaces lr warm-up",
    ),
    Row(
        "lookahead",
        Lookahead,
        Paper(
            "Zhang, Lucas, Hinton & Ba",
            2019,
            "Lookahead Optimizer: k steps forward, 1 step back",
            "1907.08610",
            "NeurIPS",
        ),
        None,
        rosenbrock=_s(lr=0.02),
        mnist1d=MNIST1D_LR,
        readme_defaults=("k", "alpha", "inner"),
        notes="wraps any ravine or torch optimizer",
        use_when="steadier training with any optimizer, less sensitive to its lr",
    ),
    Row(
        "ranger",
        Ranger,
        Paper(
            "Wright",
            2019,
            "Ranger: RAdam + Lookahead",
            venue="github.com/lessw2020/Ranger-Deep-Learning-Optimizer",
        ),
        None,
        rosenbrock=_s(lr=5e-3, betas=(0.9, 0.99)),
        mnist1d=MNIST1D_LR,
        surfaces={"beale": _s(lr=0.01)},
        readme_defaults=("lr", "betas", "eps", "k", "alpha"),
        notes="Lookahead(RAdam) with the code's defaults",
        use_when="RAdam and Lookahead together: a robust default for CNNs without warm-up tuning",
    ),
    Row(
        "delay_tolerant_adagrad",
        DelayTolerantAdagrad,
        Paper(
            "McMahan & Streeter",
            2014,
            "Delay-Tolerant Algorithms for Asynchronous Distributed Online Learning",
            venue="NIPS",
        ),
        None,
        rosenbrock=_s(lr=1.0),
        mnist1d=_s(lr=0.01),
        readme_defaults=("lr", "max_delay"),
        notes="`step(delay=...)`; zero delay = Adagrad",
        use_when="asynchronous training where gradients arrive stale (step(delay=...))",
    ),
    Row(
        "lbfgs",
        LBFGS,
        Paper(
            "Liu & Nocedal",
            1989,
            "On the limited memory BFGS method for large scale optimization",
            venue="Math. Programming 45",
        ),
        "LBFGS",
        rosenbrock=_s(line_search_fn="strong_wolfe"),
        mnist1d=None,  # its line search assumes the same loss at every evaluation
        readme_defaults=("lr", "max_iter", "history_size"),
        notes="torch.optim.LBFGS (needs a closure); full batch",
        use_when="small smooth deterministic problems, full batch: curvature from past steps",
    ),
    Row(
        "l2l",
        L2L,
        Paper(
            "Andrychowicz, Denil, Gomez, Hoffman, Pfau, Schaul, Shillingford & de Freitas",
            2016,
            "Learning to learn by gradient descent by gradient descent",
            "1606.04474",
            "NIPS",
        ),
        None,
        # Its weights meta-trained on 10-d quadratics keep stepping near the minimum; a decay
        # lets it settle (5000 steps from (-1.5, 2): |x - x*| 3e-3).
        rosenbrock=Setting({"lr": 1.0}, lr_gamma=0.999),
        mnist1d=_s(lr=1.0),
        readme_defaults=("lr", "weights"),
        notes="coordinatewise LSTM, meta-trained by `ravine meta-train`; lr scales its step",
        use_when="problems like those it was meta-trained on (weights=): it does not transfer far",
    ),
    Row(
        "learned_mlp",
        LearnedMLP,
        Paper(
            "Metz, Freeman, Harrison, Maheswaranathan & Sohl-Dickstein",
            2022,
            "Practical tradeoffs between memory, compute, and performance in learned optimizers",
            "2203.11860",
            "CoLLAs",
        ),
        None,
        rosenbrock=Setting({"lr": 1.0}, lr_gamma=0.999),  # |x - x*| 5e-4 after 5000 steps
        mnist1d=_s(lr=1.0),
        readme_defaults=("lr", "weights"),
        notes="per-parameter MLP (small_fc_lopt style), meta-trained by ravine; 4 floats of state",
        use_when="small networks like its meta-training task; Adam-like features transfer better",
    ),
)

_BY_NAME = {row.name: row for row in ROWS}


def names() -> list[str]:
    """The catalog's names, in its order."""
    return list(_BY_NAME)


def get(name: str) -> Row:
    """The row for ``name`` (lower case); KeyError names the known ones."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"{name!r} is not in the catalog (known: {', '.join(_BY_NAME)})") from None


def _value(v: Any) -> str:
    """A default as the README writes it: 1e-3, (0.9, 0.999), "adam", None."""
    if isinstance(v, (tuple, list)):
        return "(" + ", ".join(_value(x) for x in v) + ")"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, float) and v != 0 and abs(v) <= 0.01 and float(f"{v:.0e}") == v:
        mantissa, exponent = f"{v:.0e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    return repr(v)


def readme_table() -> str:
    """The README's optimizer table, one line per row; tests/test_optim_catalog.py checks that
    README.md holds it (print it with ``python -c "from ravine.optim import catalog;
    print(catalog.readme_table(), end='')"``)."""
    lines = ["| name | paper | defaults | notes |", "|---|---|---|---|"]
    for row in ROWS:
        defaults = row.defaults
        shown = ", ".join(f"{k} {_value(defaults[k])}" for k in row.readme_defaults)
        lines.append(f"| `{row.name}` | {row.paper.short()} | {shown} | {row.notes} |")
    return "\n".join(lines) + "\n"
