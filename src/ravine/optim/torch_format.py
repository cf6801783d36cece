"""torch.optim's state dicts, both ways: a ravine optimizer loads the state dict of the torch.optim
class with the same rule, and ``state_dict(format="torch")`` writes one that torch.optim loads.

A run can switch from ``torch.optim.Adam`` to ``ravine.Adam`` mid-way (or back) and continue as
the run it left would have: the state tensors are renamed (torch's ``exp_avg``/``exp_avg_sq`` are
ravine's ``m``/``v``), the per-parameter step count converted (torch keeps a 0-d float tensor,
ravine an int), and the param_groups' keys translated (torch's ``foreach``, ``fused``,
``capturable`` and ``differentiable`` choose a kernel, not a rule: they are dropped on load and
written with torch's defaults on export; ravine's own hyperparameters that torch's rule fixes,
such as ``RAdam.rho_threshold = 5``, are set on load and required on export).

Each optimizer declares its counterpart next to its rule (``torch_counterpart``, a
:class:`TorchCounterpart`); what has no torch.optim equivalent is refused with the reason, before
anything changes: a state dict of another torch.optim class (recognised from its param_groups'
keys), ``differentiable=True``, NAdam's ``mu_product`` when it is not the product ravine derives
from the step count (momentum_decay or betas changed during the torch run), and on export a
setting torch's class cannot express (``NAdam(momentum_decay=None)``, ``NAG(form="sutskever")``,
gradient transforms, Lookahead).

Differences a switch keeps, by design: torch.optim.SGD keeps no step count, so a parameter with
a momentum buffer loads with step 1 (the only thing ravine's SGD reads from it is whether the
first step was taken); ravine's ``skipped_steps`` and the optimizer's impl and ``nonfinite``
policy are not part of torch's format.

This module imports no other module of ``ravine.optim`` but :mod:`~ravine.optim.hyperparameters`
(the optimizers and :mod:`~ravine.optim.base` import it).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ravine.optim.hyperparameters import checked_count

if TYPE_CHECKING:
    from ravine.optim.base import Optimizer

STATE_DICT_FORMATS = ("ravine", "torch")
# Group keys that choose how torch.optim computes a step, not which step: no ravine meaning.
TORCH_IMPL_KEYS = ("foreach", "fused", "capturable", "differentiable")
# Keys torch.optim added to a class's param_groups in a later release, with the value an older
# state dict means by leaving them out (torch 2.6 gave Adam decoupled_weight_decay).
TORCH_ADDED_KEYS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        "Adam": {"decoupled_weight_decay": False},
        "NAdam": {"decoupled_weight_decay": False},
        "RAdam": {"decoupled_weight_decay": False},
    }
)


def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class TorchCounterpart:
    """How one ravine optimizer's state dict corresponds to torch.optim's.

    ``torch_classes``: the torch.optim classes whose state dicts it loads; the first is the one
    ``state_dict(format="torch")`` writes for. ``state``: ravine's state name -> torch's.
    ``step``: torch keeps a per-parameter ``step`` tensor (all but SGD). ``requires``: torch
    group values the ravine class's rule needs (``amsgrad=True`` for AMSGrad), checked on load
    and written on export. ``implied``: ravine hyperparameters torch's rule fixes, set on load
    and required on export (``rho_threshold=5.0`` for RAdam). ``derived``: torch state entries
    ravine derives from the group and the step count instead of keeping them (NAdam's
    ``mu_product``), checked on load and computed on export. ``check(optimizer, group)``: a
    reason the instance or group has no torch form, or None.
    """

    torch_classes: tuple[str, ...]
    state: Mapping[str, str] = field(default_factory=dict)
    step: bool = True
    requires: Mapping[str, Any] = field(default_factory=dict)
    implied: Mapping[str, Any] = field(default_factory=dict)
    derived: Mapping[str, Callable[[Mapping[str, Any], int], float]] = field(default_factory=dict)
    check: Callable[[Any, Mapping[str, Any]], str | None] | None = None

    def __post_init__(self) -> None:
        for name in ("state", "requires", "implied", "derived"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))

    @property
    def torch_name(self) -> str:
        """``torch.optim.Adam``: the class state_dict(format="torch") writes for."""
        return f"torch.optim.{self.torch_classes[0]}"


# torch.optim class name -> the ravine classes that load its state dicts (for messages); filled
# by :func:`register` as the optimizer classes are defined.
_LOADERS: dict[str, list[str]] = {}


def register(cls: type) -> None:
    """Record that ``cls`` (a ravine optimizer with a counterpart) loads its torch classes'
    state dicts; called by ``Optimizer.__init_subclass__``."""
    counterpart = counterpart_of(cls)
    if counterpart is None or not cls.__module__.startswith("ravine."):
        return
    for name in counterpart.torch_classes:
        loaders = _LOADERS.setdefault(name, [])
        if f"ravine.{cls.__name__}" not in loaders:
            loaders.append(f"ravine.{cls.__name__}")


def counterpart_of(cls: type) -> TorchCounterpart | None:
    """The counterpart ``cls`` declares or inherits, unless a class between it and the declaring
    one changes the rule (``update``, ``_rule``, ``state_names_for``, ``init_state``): a subclass
    with its own rule has no torch.optim form."""
    for klass in cls.__mro__:
        if "torch_counterpart" in klass.__dict__:
            return klass.__dict__["torch_counterpart"]
        if any(m in klass.__dict__ for m in ("update", "_rule", "state_names_for", "init_state")):
            return None
    return None


def _no_counterpart(who: str) -> str:
    known = ", ".join(sorted({c for cs in _LOADERS.values() for c in cs}))
    return f"{who} has no torch.optim counterpart (the optimizers that have one: {known})"


# -- torch.optim's classes, as the installed torch writes them -----------------------------------
@functools.cache
def torch_defaults(name: str) -> Mapping[str, Any] | None:
    """The param_group entries (without ``params``) of ``torch.optim.<name>`` with its defaults,
    read from an instance on a one-element tensor (so the installed torch's keys), or None if
    that class cannot be built so."""
    cls = getattr(torch.optim, name, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        return None
    try:
        instance = cls([torch.zeros(1, requires_grad=True)])
    except Exception:  # a class that needs other arguments: not one a counterpart names
        return None
    return _frozen({k: v for k, v in instance.param_groups[0].items() if k != "params"})


@functools.cache
def _torch_classes() -> tuple[str, ...]:
    names = [
        n
        for n, c in vars(torch.optim).items()
        if isinstance(c, type)
        and issubclass(c, torch.optim.Optimizer)
        and c is not torch.optim.Optimizer
    ]
    return tuple(n for n in sorted(names) if torch_defaults(n) is not None)


def _semantic(keys: Any) -> set[str]:
    return {k for k in keys if k not in TORCH_IMPL_KEYS and k != "maximize"}


def identify(group: Mapping[str, Any]) -> str | None:
    """The torch.optim class a param_group was most likely written by: the one whose keys it
    matches best (fewest of the class's keys missing plus fewest keys of other torch classes
    present; keys no torch class has, such as a scheduler's ``initial_lr``, do not count).
    None when it shares no rule key with any class."""
    every = set().union(*(_semantic(torch_defaults(n) or {}) for n in _torch_classes()))
    present = _semantic(group) & every
    best, best_score = None, math.inf
    for name in _torch_classes():
        keys = _semantic(torch_defaults(name) or {})
        if not keys & present:
            continue
        score = len(keys - present) + len(present - keys)
        if score < best_score:
            best, best_score = name, score
    return best


def is_torch_state_dict(state_dict: Any) -> bool:
    """Whether ``state_dict`` is in torch.optim's format rather than ravine's: it has no
    ``"ravine"`` record, and its groups hold torch's kernel keys (foreach, fused, capturable,
    differentiable) or its state holds tensor step counts (ravine writes ints)."""
    if not isinstance(state_dict, dict) or "ravine" in state_dict:
        return False
    groups = state_dict.get("param_groups")
    if isinstance(groups, list) and any(
        isinstance(g, dict) and any(k in g for k in TORCH_IMPL_KEYS) for g in groups
    ):
        return True
    state = state_dict.get("state")
    return isinstance(state, dict) and any(
        isinstance(e, dict) and isinstance(e.get("step"), Tensor) for e in state.values()
    )


def scalar_dtype() -> torch.dtype:
    """The dtype torch.optim gives its step counts (float64 under a float64 default dtype)."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


# -- structure -----------------------------------------------------------------------------------
def group_lists(state_dict: Any, n_groups: int, sizes: list[int], who: str) -> list[Any]:
    """The state_dict's param_groups, after checking their number and sizes (every loader runs
    this first, whatever the format)."""
    if not isinstance(state_dict, dict) or not {"state", "param_groups"} <= set(state_dict):
        raise ValueError(
            f"not an optimizer state_dict for {who} (expected a dict with 'state' and "
            "'param_groups')"
        )
    groups = state_dict["param_groups"]
    if not isinstance(groups, list) or not all(
        isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups
    ):
        raise ValueError("Invalid param_groups: expected a list of dicts with a 'params' list")
    if len(groups) != n_groups:
        raise ValueError(
            f"state_dict has {len(groups)} parameter groups; this {who} has {n_groups}"
        )
    for gi, (saved, size) in enumerate(zip(groups, sizes)):
        if len(saved["params"]) != size:
            raise ValueError(
                f"group {gi} of the state_dict has {len(saved['params'])} parameters; "
                f"group {gi} of this {who} has {size}"
            )
    return groups


# -- torch -> ravine -----------------------------------------------------------------------------
def from_torch(opt: Optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
    """``state_dict`` (torch.optim's format) as the ravine-format dict that means the same run
    for ``opt``; raises ValueError naming the group, parameter and field, changing nothing.

    The result still goes through ``opt.validate_state_dict`` (shapes, dtypes, ranges,
    finiteness) like any ravine state dict.
    """
    who = f"ravine.{type(opt).__name__}"
    counterpart = counterpart_of(type(opt))
    if counterpart is None:
        raise ValueError(
            f"state_dict is in torch.optim's format, but {_no_counterpart(who)}: it loads "
            "only its own state dicts"
        )
    groups = group_lists(
        state_dict, len(opt.param_groups), [len(g["params"]) for g in opt.param_groups], who
    )
    new_groups = [
        _group_from_torch(opt, counterpart, saved, gi, who) for gi, saved in enumerate(groups)
    ]
    index: dict[Any, tuple[int, int, dict[str, Any]]] = {}
    for gi, (saved, group) in enumerate(zip(groups, new_groups)):
        try:
            checked = opt._checked_group({**group, "params": opt.param_groups[gi]["params"]})
        except ValueError as e:
            raise ValueError(f"group {gi} of the state_dict: {e}") from None
        for pi, key in enumerate(saved["params"]):
            index[key] = (gi, pi, checked)
    state = state_dict["state"]
    if not isinstance(state, dict):
        raise ValueError(f"Invalid state: {type(state).__name__} (expected a dict)")
    new_state = {}
    for key, entry in state.items():
        if key not in index:
            raise ValueError(
                f"state_dict holds state for parameter {key!r}, which no group of it lists"
            )
        converted = _entry_from_torch(opt, counterpart, entry, *index[key])
        if converted:
            new_state[key] = converted
    extra = {
        "optimizer": type(opt).__name__,
        "skipped_steps": getattr(opt, "skipped_steps", 0),
        # torch has no gradient transforms: theirs stay as they are
        "grad_transforms": [tr.state_dict() for tr in getattr(opt, "grad_transforms", ())],
    }
    out = {k: v for k, v in state_dict.items() if k not in ("state", "param_groups")}
    return {**out, "state": new_state, "param_groups": new_groups, "ravine": extra}


def _group_from_torch(
    opt: Optimizer, counterpart: TorchCounterpart, saved: dict[str, Any], gi: int, who: str
) -> dict[str, Any]:
    where = f"group {gi} of the state_dict"
    name = identify(saved)
    if name not in counterpart.torch_classes:
        loads = " or ".join(f"torch.optim.{n}" for n in counterpart.torch_classes)
        if name is None:
            raise ValueError(
                f"{where} is not a torch.optim param_group {who} can load (expected one of "
                f"{loads}; its keys: {', '.join(sorted(k for k in saved if k != 'params'))})"
            )
        into = _LOADERS.get(name)
        hint = f": load it into {' or '.join(into)}" if into else " (no ravine optimizer has it)"
        raise ValueError(
            f"{where} is torch.optim.{name}'s (its keys: "
            f"{', '.join(sorted(_semantic(saved) & _semantic(torch_defaults(name) or {})))}), "
            f"but {who} loads the state dicts of {loads}{hint}"
        )
    if saved.get("differentiable"):
        raise ValueError(
            f"Invalid differentiable: True in {where} (ravine's steps run under no_grad: no "
            "gradient flows through them; expected False)"
        )
    torch_group = {**TORCH_ADDED_KEYS.get(name, {}), **saved}
    for key, value in counterpart.requires.items():
        if torch_group.get(key) != value:
            raise ValueError(
                f"Invalid {key}: {torch_group.get(key)!r} in {where} ({who} is torch.optim."
                f"{counterpart.torch_classes[0]} with {key}={value!r}; expected {value!r})"
            )
    torch_keys = torch_defaults(name) or {}
    for key in _semantic(torch_keys):
        # A rule key of torch's that the ravine class lacks must be at torch's default.
        if (
            key not in opt.defaults
            and key not in counterpart.requires
            and key in torch_group
            and torch_group[key] != torch_keys[key]
        ):
            raise ValueError(
                f"Invalid {key}: {torch_group[key]!r} in {where} ({who} has no {key}; "
                f"expected torch's default {torch_keys[key]!r})"
            )
    group = {
        k: v
        for k, v in torch_group.items()
        if k not in TORCH_IMPL_KEYS and (k in opt.defaults or k not in torch_keys)
    }
    group.update(counterpart.implied)
    if counterpart.check is not None:
        reason = counterpart.check(opt, group)
        if reason is not None:
            raise ValueError(f"{where}: {reason}")
    return group


def _entry_from_torch(
    opt: Optimizer,
    counterpart: TorchCounterpart,
    entry: Any,
    gi: int,
    pi: int,
    group: dict[str, Any],
) -> dict[str, Any]:
    """One parameter's state in ravine's names ({} for none)."""
    where = f"parameter {pi} of group {gi}"
    if not isinstance(entry, dict):
        raise ValueError(f"Invalid state of {where}: {type(entry).__name__} (expected a dict)")
    entry = {k: v for k, v in entry.items() if v is not None}  # torch's SGD: a None buffer
    if not entry:
        return {}
    names = opt.state_names_for(group)
    theirs = {n: counterpart.state.get(n, n) for n in names}
    # torch's names, or ravine's own where a load_state_dict pre-hook renamed them already
    to_ravine = {**{t: n for n, t in theirs.items()}, **{n: n for n in names}}
    scalars = [*(["step"] if counterpart.step else []), *counterpart.derived]
    keeps = ", ".join([*scalars[:1], *theirs.values(), *scalars[1:]]) or "none"
    what = f"torch.optim.{counterpart.torch_classes[0]} with this group's settings keeps {keeps}"
    for key in entry:
        if key not in to_ravine and key not in scalars:
            raise ValueError(f"unexpected state {key!r} for {where}; {what}")
    renamed = {to_ravine[k]: v for k, v in entry.items() if k in to_ravine}
    if len(renamed) < sum(k in to_ravine for k in entry):
        raise ValueError(f"Invalid state of {where}: it names a state twice ({what})")
    missing = [theirs[n] for n in names if n not in renamed] + [
        k for k in scalars if k not in entry
    ]
    if missing:
        raise ValueError(f"missing state {missing[0]!r} for {where}; {what}")
    # torch.optim.SGD counts no steps; the buffer means the first step was taken.
    step = checked_count(f"state 'step' of {where}", entry["step"]) if counterpart.step else 1
    for key, derive in counterpart.derived.items():
        ours = derive(group, step)
        theirs = _scalar(entry[key], f"state {key!r} of {where}")
        if not math.isclose(theirs, ours, rel_tol=1e-4, abs_tol=1e-7):
            raise ValueError(
                f"Invalid state {key!r} of {where}: {theirs!r}, but ravine.{type(opt).__name__} "
                f"derives {ours!r} from step {step} and the group's hyperparameters (were they "
                "changed during the torch.optim run?); it cannot carry another value"
            )
    return {"step": step, **renamed}


def _scalar(value: Any, where: str) -> float:
    if isinstance(value, Tensor) and value.numel() == 1 and not value.is_complex():
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"Invalid {where}: {value!r} (expected a finite real number)")
    return float(value)


# -- ravine -> torch -----------------------------------------------------------------------------
def to_torch(opt: Optimizer, state: dict[str, Any]) -> dict[str, Any]:
    """``state`` (``opt``'s ravine-format state dict) in the format of ``opt``'s torch.optim
    counterpart: what ``torch.optim.<Class>.load_state_dict`` loads and continues from exactly.
    The tensors are the optimizer's own, not copies (as torch's state_dict)."""
    who = f"ravine.{type(opt).__name__}"
    counterpart = counterpart_of(type(opt))
    if counterpart is None:
        raise ValueError(f"state_dict(format='torch'): {_no_counterpart(who)}")
    if getattr(opt, "grad_transforms", None):
        raise ValueError(
            f"state_dict(format='torch'): {who} has gradient transforms (grad_transforms or "
            "grad_noise), which torch.optim does not run: build it without them to export"
        )
    target = counterpart.torch_classes[0]
    defaults = torch_defaults(target)
    assert defaults is not None, target  # a counterpart names classes torch builds
    hyper = set(type(opt).kinds())
    groups = []
    for gi, group in enumerate(state["param_groups"]):
        where = f"group {gi}"
        for key, value in counterpart.implied.items():
            if group.get(key) != value:
                raise ValueError(
                    f"state_dict(format='torch'): {where} has {key}={group.get(key)!r}; "
                    f"{counterpart.torch_name}'s rule is {who}'s with {key}={value!r}"
                )
        if counterpart.check is not None:
            reason = counterpart.check(opt, group)
            if reason is not None:
                raise ValueError(f"state_dict(format='torch'): {where}: {reason}")
        out = {k: v for k, v in group.items() if k not in hyper and k != "params"}
        for key, default in defaults.items():
            if key == "decoupled_weight_decay":
                out[key] = opt.weight_decay_mode == "decoupled" or bool(group.get(key, False))
            elif key in group:
                out[key] = group[key]
            else:
                out[key] = counterpart.requires.get(key, default)
        out["params"] = group["params"]
        groups.append(out)
    dtype = scalar_dtype()
    group_of = {key: g for g in state["param_groups"] for key in g["params"]}
    new_state = {}
    for key, entry in state["state"].items():
        group = group_of[key]
        names = opt.state_names_for(group)
        if not entry or (not names and not counterpart.step):
            continue  # SGD without momentum: torch keeps nothing
        torch_entry: dict[str, Any] = {counterpart.state.get(n, n): entry[n] for n in names}
        step = int(entry["step"])
        if counterpart.step:
            torch_entry["step"] = torch.tensor(float(step), dtype=dtype)
        for name, derive in counterpart.derived.items():
            torch_entry[name] = torch.tensor(derive(group, step), dtype=dtype)
        new_state[key] = torch_entry
    out_dict = {k: v for k, v in state.items() if k not in ("state", "param_groups", "ravine")}
    return {**out_dict, "state": new_state, "param_groups": groups}


def check_format(format: str) -> None:
    if format not in STATE_DICT_FORMATS:
        raise ValueError(
            f"Invalid format: {format!r} (expected one of {', '.join(STATE_DICT_FORMATS)})"
        )


def to_torch_state_dict(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The state dict of ``optimizer`` in torch.optim's format: ``state_dict(format="torch")`` of
    a ravine optimizer (ValueError where torch.optim has no counterpart), ``state_dict()`` of a
    torch.optim one."""
    if type(optimizer).__module__.startswith("ravine."):
        return optimizer.state_dict(format="torch")  # type: ignore[call-arg]
    return optimizer.state_dict()
