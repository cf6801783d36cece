"""The base class every ravine optimizer derives from: ``step()`` is written here, once.

A subclass declares only its validated defaults, the names of its per-parameter state tensors and
one ``update`` over :class:`~ravine.tensorlist.TL` lists that mirrors the paper::

    class Adam(Optimizer):
        state_names = ("m", "v")
        def update(self, p, g, m, v, *, t, lr, betas, eps): ...

Everything else is the base class's or its engine's, written once: the closure, ``maximize``,
L2 or decoupled weight decay (``_rule``, the body every engine runs), validation, state_dict
extras, hooks; and, in the engine ``impl`` picks (:mod:`ravine.optim.engines`: eager foreach or
loop; :mod:`ravine.optim.compiled`: flat buffers and one compiled kernel), gradient transforms,
lazy state, the per-parameter step count, grouping of parameters by (device, dtype, step) so
one call updates a whole group, the non-finite guard, complex parameters (viewed as pairs of
reals, as torch.optim does) and sparse gradients where the rule defines them.

``update`` contract: ``p`` and the state lists are updated in place; ``g`` is read-only (it may
be the user's ``.grad``); ``t`` is the 1-based step count of every parameter in the call; the
keyword-only arguments other than ``t`` are read from the parameter group by name.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from ravine.optim.compiled import FlatEngine
from ravine.optim.engines import EagerEngine, Engine, resolve

# Re-exported: optimizer files and user code import the guard's errors and bounds and the range
# constants from here.
from ravine.optim.guard import (  # noqa: F401
    NonFiniteGradientError,
    NonFiniteUpdateError,
    hyperparameter_scale,
    max_abs,
    overflow_limit,
)
from ravine.optim.hyperparameters import (  # noqa: F401
    FLAG,
    NONNEGATIVE,
    POSITIVE,
    UNIT,
    UNIT_OPEN_HIGH,
    HyperparameterError,
    Interval,
    Kind,
    check_hyperparameter,
    check_hyperparameters,
    checked_count,
)
from ravine.optim.torch_format import (
    TorchCounterpart,
    check_format,
    from_torch,
    is_torch_state_dict,
    register,
    to_torch,
)
from ravine.optim.torch_format import group_lists as _group_lists
from ravine.optim.transforms import GradientNoise, GradientTransform  # GradientTransform: re-export
from ravine.tensorlist import TL

# impl -> a new engine for one optimizer; the compiled one flattens on its first step.
ENGINES: dict[str, Callable[[], Engine]] = {
    "foreach": lambda: EagerEngine(foreach=True),
    "loop": lambda: EagerEngine(foreach=False),
    "compiled": FlatEngine,
}
IMPLS = tuple(ENGINES)
NONFINITE_POLICIES = ("raise", "skip", "ignore")


def _step_wrapper(step: Callable[..., Any]) -> Callable[..., Any]:
    """``step`` under no_grad, with torch.optim's step hooks and profiler label.

    torch.optim wraps every optimizer's ``step`` with a ``record_function`` and the hook loops;
    that costs two dispatcher calls a step, ~5 us warm but 100-300 us when the step runs just
    after a backward pass that evicted the optimizer from the caches (measured on the 1000 x 1k
    layout of benchmarks/step_speed.py). So torch's wrapper only runs when a hook is registered
    or a profiler is on; the ``hooked`` flag tells torch.optim not to wrap ``step`` again. A
    subclass that overrides ``step`` gets it wrapped too (:func:`wrap_step`, from
    ``__init_subclass__``); its ``super().step()`` then runs bare.
    """
    hooked = torch.optim.Optimizer.profile_hook_step(step)
    registries = _hook_registries()

    @functools.wraps(step)
    def wrapper(self: Optimizer, *args: Any, **kwargs: Any) -> Any:
        if self.__dict__.get("_stepping"):  # an override's super().step(): hooks ran already
            return step(self, *args, **kwargs)
        self._stepping = True
        try:
            return run(self, *args, **kwargs)
        finally:
            self._stepping = False

    def run(self: Optimizer, *args: Any, **kwargs: Any) -> Any:
        if (
            registries is None
            or any(registries)
            or self._optimizer_step_pre_hooks
            or self._optimizer_step_post_hooks
            or torch.autograd.profiler._is_profiler_enabled
        ):
            with torch.no_grad():
                return hooked(self, *args, **kwargs)
        previous = torch.is_grad_enabled()
        torch._C._set_grad_enabled(False)
        try:
            return step(self, *args, **kwargs)
        finally:
            torch._C._set_grad_enabled(previous)

    wrapper.hooked = True  # type: ignore[attr-defined]
    return wrapper


def wrap_step(cls: type) -> None:
    """Wrap the ``step`` that ``cls`` defines itself (not one it inherits) with
    :func:`_step_wrapper`, unless it is wrapped already: called by ``__init_subclass__`` of
    :class:`Optimizer` and of the wrappers, so that no subclass has to remember the decorator."""
    step = cls.__dict__.get("step")
    if callable(step) and not getattr(step, "hooked", False):
        cls.step = _step_wrapper(step)  # type: ignore[attr-defined]


def _hook_registries() -> tuple[dict[Any, Any], ...] | None:
    """torch.optim's global step pre- and post-hook dicts (None if this torch has none)."""
    import importlib

    module = importlib.import_module("torch.optim.optimizer")
    pre = getattr(module, "_global_optimizer_pre_hooks", None)
    post = getattr(module, "_global_optimizer_post_hooks", None)
    return None if pre is None or post is None else (pre, post)


def _check_params(params: list[Any], group_index: int, groups: list[dict[str, Any]]) -> None:
    """Refuse, naming group and index, what torch.optim would accept and then fail on or warn
    about: a non-tensor, an integer or bool tensor (no gradient descent on those), and a
    parameter listed twice in the new group or already in one of ``groups``."""
    seen: dict[int, str] = {
        id(p): f"parameter {pi} of group {gi}"
        for gi, group in enumerate(groups)
        for pi, p in enumerate(group["params"])
    }
    for pi, p in enumerate(params):
        where = f"parameter {pi} of group {group_index}"
        if not isinstance(p, Tensor):
            raise TypeError(
                f"optimizer can only optimize Tensors, but {where} is {torch.typename(p)}"
            )
        if not (p.is_floating_point() or p.is_complex()):
            raise ValueError(
                f"Invalid {where}: dtype {p.dtype} (expected a floating point or complex tensor)"
            )
        if id(p) in seen:
            raise ValueError(
                f"Invalid {where}: it is {seen[id(p)]} too (a parameter may be listed once, in "
                "one group; torch.optim warns that this will become an error)"
            )
        seen[id(p)] = where


class Optimizer(torch.optim.Optimizer):
    """Base class of ravine's optimizers; a drop-in ``torch.optim.Optimizer``.

    Options every optimizer takes (keyword-only):

    - ``maximize`` (bool, default False): ascend instead of descend; per parameter group.
    - ``impl``: ``"foreach"`` (default) updates each (device, dtype) group with multi-tensor
      kernels; ``"loop"`` runs the same ``update`` one tensor at a time with ordinary ops (the
      reference). ``foreach=False`` as in torch.optim is accepted as ``impl="loop"``.
      ``"compiled"`` keeps parameters, gradients and state in flat buffers and runs the same
      ``update`` as one torch.compile'd kernel (see :mod:`ravine.optim.compiled`).
    - ``nonfinite``: ``"raise"`` (default) refuses a step whose gradients hold NaN/Inf and raises
      :class:`NonFiniteGradientError` naming the group, parameter and step, before anything is
      written, and a step whose finite gradients would write NaN/Inf (a float16 overflow) with
      :class:`NonFiniteUpdateError`, nothing changed either; ``"skip"`` skips such steps
      (counted in ``skipped_steps``); ``"ignore"`` does not check (saves one read of the
      gradients per step). Only float16 steps and steps with huge gradients pay more than that
      read (see ``EagerEngine.guarded_step`` and :func:`overflow_limit`).

      On CUDA the guard reads nothing back per step (no host sync): the device decides, and
      the host reads the verdict when the next ``step()`` (after its closure), ``state_dict()``
      or :meth:`flush_guard` comes, waiting only for the device to finish that step. What
      differs there: a refused step writes nothing, as on CPU, but its error is raised (or
      its skip counted in ``skipped_steps``) by that next call, one step late; the step count
      moves back then (and Lookahead takes back the step it had counted). With
      impl="foreach"/"loop" every step runs checked on the device (a copy of the parameters
      and state is held during the step, and the copies go back unless everything is
      finite: ~2x the step's memory traffic); with impl="compiled" the fused kernel decides
      from max|g| as on CPU, but a finite gradient above the overflow limit is refused rather
      than run checked (float16 groups run checked on the device instead). Gradient
      transforms, sparse gradients, parameters on several devices, and impl="compiled" with
      several groups read the verdict at once, as on CPU (docs/nonfinite.md).
    - ``grad_transforms``: a sequence of :class:`GradientTransform` applied in order.
    - ``grad_noise``: annealed Gaussian gradient noise, shorthand for appending
      ``ravine.optim.transforms.GradientNoise(eta=grad_noise)`` (or the transform given) to
      ``grad_transforms``.
    """

    state_names: ClassVar[tuple[str, ...]] = ()
    # "l2": g += wd * p (coupled, as torch.optim's weight_decay); "decoupled": p *= 1 - lr * wd
    # before the update (Loshchilov & Hutter); None: the rule takes no weight_decay.
    weight_decay_mode: ClassVar[str | None] = "l2"
    # The kind of every group entry the rule reads (Interval: one finite real in that range);
    # weight_decay and maximize are added by the base class. Every default must have one.
    hyperparameter_kinds: ClassVar[dict[str, Kind]] = {}
    # Numeric hyperparameters the update branches on by value (``if x > 0``): impl="compiled"
    # makes them compile-time constants instead of tensors (booleans and None always are).
    static_hyperparameters: ClassVar[tuple[str, ...]] = ()
    paper: ClassVar[str] = ""
    # The torch.optim class with this rule and how its state dicts map to this class's
    # (ravine.optim.torch_format); None where torch.optim has none.
    torch_counterpart: ClassVar[TorchCounterpart | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        wrap_step(cls)
        register(cls)

    @property
    def impl(self) -> str:
        """``"foreach"``, ``"loop"`` or ``"compiled"``; setting it picks the engine that applies
        the updates (:attr:`engine`, see :mod:`ravine.optim.engines`)."""
        return self._impl

    @impl.setter
    def impl(self, impl: str) -> None:
        if impl not in ENGINES:
            raise ValueError(f"Invalid impl: {impl!r} (expected one of {', '.join(IMPLS)})")
        self._impl = impl
        self.engine: Engine = ENGINES[impl]()

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        defaults: dict[str, Any],
        *,
        maximize: bool = False,
        impl: str = "foreach",
        foreach: bool | None = None,
        nonfinite: str = "raise",
        grad_transforms: Sequence[GradientTransform] = (),
        grad_noise: float | GradientTransform | None = None,
    ) -> None:
        if foreach is False:
            impl = "loop"
        if impl not in IMPLS:
            raise ValueError(f"Invalid impl: {impl!r} (expected one of {', '.join(IMPLS)})")
        if nonfinite not in NONFINITE_POLICIES:
            raise ValueError(
                f"Invalid nonfinite: {nonfinite!r} "
                f"(expected one of {', '.join(NONFINITE_POLICIES)})"
            )
        self.impl = impl
        self.nonfinite = nonfinite
        transforms = list(grad_transforms)
        if grad_noise is not None:
            noise = grad_noise if callable(grad_noise) else GradientNoise(eta=grad_noise)
            transforms.append(noise)
        for i, transform in enumerate(transforms):
            missing = [
                m
                for m in ("__call__", "state_dict", "load_state_dict")
                if not hasattr(transform, m)
            ]
            if missing:
                raise TypeError(
                    f"Invalid grad_transforms[{i}]: {transform!r} (expected a GradientTransform: "
                    f"a callable with state_dict and load_state_dict; missing {', '.join(missing)})"
                )
        self.grad_transforms = transforms
        self.skipped_steps = 0
        # Steps the host counted as taken and the device refused (CUDA, read one step late).
        self.late_refusals = 0
        if not callable(getattr(type(self), "update", None)):
            raise TypeError(f"{type(self).__name__} must define update()")
        # The defaults are checked even where every group overrides them: a group added later
        # takes them.
        defaults = self._checked_group(dict(defaults, maximize=maximize))
        super().__init__(params, defaults)

    # -- hyperparameters ------------------------------------------------------------------------
    @classmethod
    def kinds(cls) -> dict[str, Kind]:
        """The kind of every hyperparameter a group of this optimizer holds."""
        return {"weight_decay": NONNEGATIVE, "maximize": FLAG, **cls.hyperparameter_kinds}

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """torch.optim's, with every check made before the group is added: a refused group
        leaves ``param_groups`` as it was, so a corrected retry works.

        Beyond torch's checks: the hyperparameters (kinds and ranges), the parameters' dtypes
        (floating point or complex), and a parameter listed twice, in this group or in another
        (torch only warns about the first).
        """
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group)}")
        params = param_group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, set):
            raise TypeError(
                "optimizer parameters need to be organized in ordered collections, but the "
                "ordering of tensors in sets will change between runs. Please use a list instead."
            )
        else:
            params = list(params)  # once: it may be a generator
        tensors = [p[1] if isinstance(p, tuple) else p for p in params]
        _check_params(tensors, len(self.param_groups), self.param_groups)
        group = self._checked_group({**self.defaults, **param_group, "params": tensors})
        param_group["params"] = params
        param_group.update({k: group[k] for k in self.kinds() if k in param_group})
        super().add_param_group(param_group)

    def _checked_group(self, group: dict[str, Any]) -> dict[str, Any]:
        """A copy of ``group`` with its hyperparameters checked and normalised (numpy scalars to
        Python numbers, lists of reals to tuples), then the cross-field rules checked."""
        checked = check_hyperparameters(group, self.kinds())
        self.validate_group(checked)
        return checked

    def validate_group(self, group: dict[str, Any]) -> None:
        """Check every hyperparameter of ``group`` (defaults filled in) without changing it;
        subclasses add cross-field rules after ``super().validate_group(group)``."""
        check_hyperparameters(group, self.kinds())
        if self.weight_decay_mode is None and group.get("weight_decay", 0) != 0:
            raise ValueError(
                f"Invalid weight_decay: {group['weight_decay']!r} "
                f"({type(self).__name__} takes no weight_decay; expected 0)"
            )

    @classmethod
    def _update_keys(cls) -> tuple[str, ...]:
        keys = cls.__dict__.get("_cached_update_keys")
        if keys is None:
            sig = inspect.signature(cls.update)
            keys = tuple(
                n
                for n, prm in sig.parameters.items()
                if prm.kind is inspect.Parameter.KEYWORD_ONLY and n != "t"
            )
            cls._cached_update_keys = keys
        return keys

    @classmethod
    def _config_keys(cls) -> tuple[str, ...]:
        """Every group entry that shapes impl="compiled"'s kernel or its scalars."""
        keys = cls.__dict__.get("_cached_config_keys")
        if keys is None:
            extra = ("weight_decay", "lr", "maximize", "decoupled_weight_decay")
            keys = (*cls._update_keys(), *(k for k in extra if k not in cls._update_keys()))
            cls._cached_config_keys = keys
        return keys

    # -- the rule --------------------------------------------------------------------------------
    # Subclasses define ``update(self, p, g, *state, t, **hyperparameters) -> None`` (see the
    # module docstring); its keyword-only parameters name the group entries it reads.
    update: ClassVar[Callable[..., None]]

    # Rules that define an update for sparse gradients set this to a method with the signature
    # of ``update``, called with one-tensor lists whose gradient is a sparse COO tensor.
    update_sparse: ClassVar[Callable[..., None] | None] = None

    def init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        """Fresh state of one parameter: zeros for each of ``state_names`` unless overridden."""
        names = self.state_names_for(group)
        return {n: torch.zeros_like(p, memory_format=torch.preserve_format) for n in names}

    def state_names_for(self, group: dict[str, Any]) -> tuple[str, ...]:
        """Names of the state tensors ``update`` takes, in order (a flag may add one)."""
        return self.state_names

    # -- step ------------------------------------------------------------------------------------
    def _evaluate_closure(self, closure: Callable[[], Any] | None) -> Any:
        if closure is None:
            return None
        with torch.enable_grad():
            return closure()

    @_step_wrapper
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One optimization step; ``closure`` re-evaluates the model and returns the loss."""
        loss = self._evaluate_closure(closure)
        resolve(self)  # after the closure: the device is busy with its passes meanwhile
        self.engine.step(self)
        return loss

    def flush_guard(self) -> None:
        """Read now the non-finite guard's verdict on the last step where it is still on the
        device (CUDA, see ``nonfinite``): a refused step is raised (``"raise"``) or counted in
        ``skipped_steps`` (``"skip"``). Waits for the device to finish that step; a no-op
        when no verdict is pending (always on CPU). ``step`` and ``state_dict`` call it."""
        resolve(self)

    def _rule(
        self,
        p: TL,
        g: TL,
        states: list[TL],
        *,
        t: Any,
        hyper: dict[str, Any],
        maximize: bool,
        weight_decay: Any,
        decoupled: bool,
        lr: Any,
    ) -> None:
        """maximize, weight decay, then the update: the body every engine runs.

        It stays here, not in an engine: it is the optimizer's rule (``update`` with the terms
        every rule shares), which the eager engine runs on lists and the compiled engine traces
        on a bare instance of the class.

        The scalars (``t``, ``hyper``'s numbers, ``weight_decay``, ``lr``) are Python numbers for
        impl="foreach"/"loop" and 0-d tensors when impl="compiled" traces this; ``weight_decay``
        is None when there is none.
        """
        if maximize:
            g = g.neg()
        if weight_decay is not None:
            if decoupled:
                p.mul_(1 - lr * weight_decay)
            else:
                g = g.add(p, alpha=weight_decay)
        self.update(p, g, *states, t=t, **hyper)

    def check_layout(self) -> None:
        """impl="compiled": check now that every parameter still holds its views of the flat
        buffers (copying fresh ``.grad`` tensors in, rebuilding after a replaced ``.data``).

        Each step does this cheaply, from signs that cover what training code does (see
        :meth:`ravine.optim.compiled.FlatEngine._current`); call it after surgery that could
        hide from them. A no-op for the other impls and before the first step.
        """
        self.engine.check_layout(self)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """As torch.optim's, except that impl="compiled" zeroes its flat gradients in place."""
        self.engine.zero_grad(self, set_to_none)

    # -- state_dict ------------------------------------------------------------------------------
    def state_dict(self, format: str = "ravine") -> dict[str, Any]:
        """torch.optim's state dict with ravine's state names and a ``"ravine"`` record (the
        class, ``skipped_steps``, the gradient transforms' state); ``format="torch"`` gives the
        state dict of the torch.optim class with the same rule instead, which it loads and
        continues from exactly (see :mod:`ravine.optim.torch_format`; ValueError where torch
        has no such class or setting)."""
        check_format(format)
        resolve(self)  # a checkpoint never holds the step count of a refused step
        state = self.engine.state_dict(super().state_dict())
        state["ravine"] = {
            "optimizer": type(self).__name__,
            "skipped_steps": self.skipped_steps,
            "grad_transforms": [tr.state_dict() for tr in self.grad_transforms],
        }
        return to_torch(self, state) if format == "torch" else state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch.optim's, after :meth:`validate_state_dict` checked the whole dict: on an error
        nothing has changed. Load-state-dict pre-hooks run once, before the check.

        Also loads the state dict of the torch.optim class with the same rule
        (``torch.optim.Adam(...).state_dict()`` into ``ravine.Adam``): its state names, step
        tensors and param_group keys are mapped to ravine's first (see
        :mod:`ravine.optim.torch_format`), and the run continues as torch's would have."""
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        state_dict = state_dict.copy()
        hooks = self._optimizer_load_state_dict_pre_hooks
        for hook in hooks.values():
            result = hook(self, state_dict)
            if result is not None:
                state_dict = result
        if is_torch_state_dict(state_dict):
            state_dict = from_torch(self, state_dict)
        checked = self.validate_state_dict(state_dict)
        extra = state_dict.get("ravine", {})
        for transform, saved in zip(self.grad_transforms, extra.get("grad_transforms", [])):
            check = getattr(transform, "validate_state_dict", None)
            if check is not None:
                check(saved)
        self._optimizer_load_state_dict_pre_hooks = type(hooks)()  # they ran above
        self.__dict__.pop("_pending_verdict", None)  # the loaded state replaces that step's
        try:
            super().load_state_dict(checked)
        finally:
            self._optimizer_load_state_dict_pre_hooks = hooks
        self.skipped_steps = extra.get("skipped_steps", 0)
        for transform, saved in zip(self.grad_transforms, extra.get("grad_transforms", [])):
            transform.load_state_dict(saved)

    def validate_state_dict(self, state_dict: dict[str, Any]) -> dict[str, Any]:
        """Check a whole state_dict against this optimizer and its parameters, changing nothing;
        return it ready for torch's loader (hyperparameters normalised, steps as ints).

        Checked: the optimizer class it was saved from (recorded by :meth:`state_dict`), the
        number and sizes of the groups, every group's hyperparameters (the constructor's
        checks), each parameter's state names, the shapes and dtypes of its state tensors and
        its step count, and the ravine extras. Raises ValueError naming group, parameter and
        field. A state dict in torch.optim's format is mapped to ravine's first
        (:func:`ravine.optim.torch_format.from_torch`).
        """
        if is_torch_state_dict(state_dict):
            state_dict = from_torch(self, state_dict)
        return _validate_state_dict(self, state_dict)


# -- state_dict checks ---------------------------------------------------------------------------
def display_name(cls: type) -> str:
    """``ravine.Adam`` for ravine's classes, the bare class name for others (messages)."""
    return f"ravine.{cls.__name__}" if cls.__module__.startswith("ravine.") else cls.__name__


def check_state_tensor(where: str, value: Any, p: Tensor, finite: bool = True) -> None:
    """A state tensor of parameter ``p``: its shape exactly (a broadcastable one would fail, or
    worse, half-way through a step), a real floating dtype for a real parameter and a complex
    one for a complex parameter (the precision may differ: torch casts it to ``p``'s), and,
    when ``finite``, no NaN or Inf."""
    if not isinstance(value, Tensor):
        raise ValueError(f"Invalid {where}: {type(value).__name__} (expected a tensor)")
    if value.shape != p.shape:
        raise ValueError(
            f"Invalid {where}: shape {tuple(value.shape)} (expected the parameter's shape "
            f"{tuple(p.shape)})"
        )
    kind_ok = value.is_complex() if p.is_complex() else value.is_floating_point()
    if not kind_ok or value.is_sparse:
        expected = "a complex" if p.is_complex() else "a real floating point"
        raise ValueError(f"Invalid {where}: dtype {value.dtype} (expected {expected} dtype)")
    if finite and value.numel() and not bool(torch.isfinite(value).all()):
        raise ValueError(f"Invalid {where}: it holds NaN or Inf")


def _validate_state_dict(opt: Optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
    who = display_name(type(opt))
    extra = state_dict.get("ravine", {}) if isinstance(state_dict, dict) else {}
    if not isinstance(extra, dict):
        raise ValueError(f"Invalid ravine entry: {type(extra).__name__} (expected a dict)")
    saved_class = extra.get("optimizer")
    if saved_class is not None and saved_class != type(opt).__name__:
        raise ValueError(
            f"state_dict was saved from ravine.{saved_class}, not {who}: load it into a "
            f"ravine.{saved_class}"
        )
    groups = _group_lists(
        state_dict, len(opt.param_groups), [len(g["params"]) for g in opt.param_groups], who
    )
    new_groups, where_is = [], {}
    for gi, (saved, current) in enumerate(zip(groups, opt.param_groups)):
        # The hyperparameters the rule reads (torch's loader adds "differentiable" to defaults).
        missing = [k for k in opt.kinds() if k in opt.defaults and k not in saved]
        if missing:
            raise ValueError(
                f"group {gi} of the state_dict lacks hyperparameter(s) {', '.join(missing)} "
                f"that {who} needs"
            )
        try:
            checked = opt._checked_group({**saved, "params": current["params"]})
        except ValueError as e:
            raise ValueError(f"group {gi} of the state_dict: {e}") from None
        new_groups.append({**checked, "params": saved["params"]})
        names = opt.state_names_for(checked)
        for pi, (key, p) in enumerate(zip(saved["params"], current["params"])):
            where_is[key] = (gi, pi, p, names)

    state = state_dict["state"]
    if not isinstance(state, dict):
        raise ValueError(f"Invalid state: {type(state).__name__} (expected a dict)")
    new_state: dict[Any, Any] = {}
    finite_checks: list[tuple[int, int, str, Tensor]] = []
    for key, entry in state.items():
        if key not in where_is:
            raise ValueError(
                f"state_dict holds state for parameter {key!r}, which no group of it lists"
            )
        new_state[key] = _checked_entry(entry, *where_is[key], who, finite_checks)
    if opt.nonfinite != "ignore":
        _check_finite(finite_checks)

    checked_count("skipped_steps", extra.get("skipped_steps", 0))
    saved_transforms = extra.get("grad_transforms", [])
    if not isinstance(saved_transforms, list) or len(saved_transforms) != len(opt.grad_transforms):
        count = len(saved_transforms) if isinstance(saved_transforms, list) else "invalid"
        raise ValueError(
            f"state_dict holds {count} gradient transforms but this optimizer has "
            f"{len(opt.grad_transforms)}"
        )
    out = {k: v for k, v in state_dict.items() if k != "ravine"}
    out["param_groups"] = new_groups
    out["state"] = new_state
    return out


def _checked_entry(
    entry: Any,
    gi: int,
    pi: int,
    p: Tensor,
    names: tuple[str, ...],
    who: str,
    finite_checks: list[tuple[int, int, str, Tensor]],
) -> dict[str, Any]:
    """One parameter's state: exactly ``step`` and the rule's state names, each valid (their
    finiteness is left to :func:`_check_finite`, for every parameter at once)."""
    if not isinstance(entry, dict):
        raise ValueError(
            f"Invalid state of parameter {pi} of group {gi}: {type(entry).__name__} "
            "(expected a dict)"
        )
    if not entry:  # a parameter that has not been stepped yet
        return {}
    if len(entry) != len(names) + 1 or "step" not in entry or any(n not in entry for n in names):
        _refuse_state_names(entry, gi, pi, names, who)
    out = dict(entry)
    out["step"] = checked_count(f"state 'step' of parameter {pi} of group {gi}", entry["step"])
    for name in names:
        value = entry[name]
        if (
            not isinstance(value, Tensor)
            or value.shape != p.shape
            or value.is_sparse
            or not (value.is_complex() if p.is_complex() else value.is_floating_point())
        ):
            check_state_tensor(f"state {name!r} of parameter {pi} of group {gi}", value, p)
        finite_checks.append((gi, pi, name, value))
    return out


def _refuse_state_names(
    entry: dict[str, Any], gi: int, pi: int, names: tuple[str, ...], who: str
) -> None:
    where = f"parameter {pi} of group {gi}"
    keeps = ", ".join(names) if names else "no state tensors with these hyperparameters"
    for key in entry:
        if key != "step" and key not in names:
            raise ValueError(f"unexpected state {key!r} for {where}; {who} keeps {keeps}")
    for key in ("step", *names):
        if key not in entry:
            raise ValueError(f"missing state {key!r} for {where}; {who} keeps step, {keeps}")


def _check_finite(checks: list[tuple[int, int, str, Tensor]]) -> None:
    """No NaN or Inf in the tensors: one max-norm kernel per (device, dtype), then, only if
    one is not finite, a search for the first such to name it."""
    by_kind: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
    for *_, value in checks:
        real = torch.view_as_real(value) if value.is_complex() else value
        if real.numel():
            by_kind.setdefault((real.device, real.dtype), []).append(real)
    if all(
        bool(torch.isfinite(torch.stack(torch._foreach_norm(ts, math.inf))).all())
        for ts in by_kind.values()
    ):
        return
    for gi, pi, name, value in checks:
        if not bool(torch.isfinite(value).all()):
            where = f"state {name!r} of parameter {pi} of group {gi}"
            raise ValueError(f"Invalid {where}: it holds NaN or Inf")
