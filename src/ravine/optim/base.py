"""The base class every ravine optimizer derives from: ``step()`` is written here, once.

A subclass declares only its validated defaults, the names of its per-parameter state tensors and
one ``update`` over :class:`~ravine.tensorlist.TL` lists that mirrors the paper::

    class Adam(Optimizer):
        state_names = ("m", "v")
        def update(self, p, g, m, v, *, t, lr, betas, eps): ...

Everything else lives here: the closure, ``maximize``, L2 or decoupled weight decay, gradient
transforms (noise, clipping), lazy state, the per-parameter step count, grouping of parameters
by (device, dtype, step) so one call updates a whole group, the non-finite guard, complex
parameters (viewed as pairs of reals, as torch.optim does), sparse gradients where the rule
defines them, state_dict extras, and the implementation switch (``impl="foreach" | "loop" |
"compiled"``; the compiled path and its flat buffers live in :mod:`ravine.optim.compiled`).

``update`` contract: ``p`` and the state lists are updated in place; ``g`` is read-only (it may
be the user's ``.grad``); ``t`` is the 1-based step count of every parameter in the call; the
keyword-only arguments other than ``t`` are read from the parameter group by name.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

# Re-exported: optimizer files and user code import the range constants from here.
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
from ravine.optim.transforms import GradientNoise, GradientTransform  # GradientTransform: re-export
from ravine.tensorlist import TL

IMPLS = ("foreach", "loop", "compiled")
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


class NonFiniteGradientError(FloatingPointError):
    """A gradient held NaN or Inf; raised before any parameter or state was written."""


class NonFiniteUpdateError(NonFiniteGradientError):
    """Finite gradients whose update would write NaN or Inf (e.g. a float16 overflow).

    Raised under ``nonfinite="raise"`` before any parameter or state was written; under
    ``"skip"`` such a step is skipped and counted in ``skipped_steps``, as a non-finite gradient.
    """


# -- the update guard's cheap test (see Optimizer._guarded_step) ---------------------------------
@functools.cache
def overflow_limit(dtype: torch.dtype) -> float:
    """The largest max|g| (times :func:`hyperparameter_scale`) whose step in ``dtype`` runs
    unchecked under the non-finite guard: sqrt(finfo.max) / 1e3, so that g*g stays below
    finfo.max / 1e6 and a million such squares still sum to a finite number. -inf (every step
    checked) for float16 and narrower formats, whose range one ordinary update can leave.

    The honest limit of the unchecked path: it looks at the gradients and hyperparameters, not
    at the values already held, so a parameter or accumulator within a factor ~1e3 of
    finfo.max (or an Adagrad sum of more than ~1e6 squares at the limit) can still overflow
    there. bfloat16 has float32's range and follows the same rule.
    """
    info = torch.finfo(dtype)
    if info.max < 2.0**32:
        return -math.inf
    return math.sqrt(info.max) / 1e3


def hyperparameter_scale(group: dict[str, Any], keys: Iterable[str]) -> float:
    """max(1, |x|) over the numbers among ``group[k]`` for ``k`` in ``keys`` (sequences such as
    betas included): how much a hyperparameter (a large lr or weight decay) may scale g."""
    scale = 1.0
    todo = [group.get(k) for k in keys]
    while todo:
        x = todo.pop()
        if isinstance(x, (tuple, list)):
            todo.extend(x)
        elif isinstance(x, Tensor) and x.numel() == 1:
            scale = max(scale, abs(float(x)))
        elif isinstance(x, (int, float)) and not isinstance(x, bool):
            scale = max(scale, abs(x))
    return scale


def max_abs(tensors: Iterable[Tensor]) -> dict[tuple[torch.device, torch.dtype], float] | None:
    """max|x| over ``tensors`` per (device, real dtype), or None if any holds NaN or Inf.

    One pass over the tensors and one sync per (device, dtype): ``torch._foreach_norm(inf)``
    (one fused launch on accelerators), ``torch.aminmax`` per tensor on CPU, where it is 4-7
    times faster than the inf-norm (10M floats: 16 vs 69 ms, benchmarks/step_speed.py's
    machine). Sparse tensors count by their (coalesced) values, complex ones by their real view.
    """
    by_kind: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
    for x in tensors:
        x = x.coalesce().values() if x.is_sparse else x
        x = torch.view_as_real(x) if x.is_complex() else x
        by_kind.setdefault((x.device, x.dtype), []).append(x)
    bounds = {}
    for kind, xs in by_kind.items():
        if kind[0].type == "cpu":
            ranges = [torch.aminmax(x) for x in xs if x.numel()]  # NaN propagates into both
            ends = [e for r in ranges for e in (r.max, r.min.neg())]
            bound = torch.stack(ends).max().item() if ends else 0.0
        else:
            bound = torch.stack(torch._foreach_norm(xs, math.inf)).max().item()
        if not math.isfinite(bound):  # NaN and Inf both make the max non-finite
            return None
        bounds[kind] = bound
    return bounds


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


@dataclass
class _Batch:
    """Parameters of one group sharing device, dtype and step count: one ``update`` call."""

    group_index: int
    params: list[Tensor]
    grads: list[Tensor]
    states: list[dict[str, Any]]
    sparse: bool


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
      read (see ``_guarded_step`` and :func:`overflow_limit`).
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

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        wrap_step(cls)

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
        self._flat: Any = None  # ravine.optim.compiled.FlatEngine, built on the first step
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
        if self.impl == "compiled":
            if self._flat is None:
                from ravine.optim.compiled import FlatEngine  # imports this module

                self._flat = FlatEngine(self)
            self._flat.step(self)
            return loss

        entries: list[tuple[int, int, Tensor, Tensor]] = []
        for gi, group in enumerate(self.param_groups):
            for pi, p in enumerate(group["params"]):
                if p.grad is not None:
                    entries.append((gi, pi, p, p.grad))
        if not entries:
            return loss
        if self.nonfinite == "ignore":
            grads = self._transformed(entries, [e[3] for e in entries])
            for batch in self._batches(entries, grads):
                self._apply(batch)
        else:
            self._guarded_step(entries)
        return loss

    def _guarded_step(self, entries: list[tuple[int, int, Tensor, Tensor]]) -> None:
        """A step under ``nonfinite="raise"``/``"skip"``: nothing non-finite is written.

        1. max|g| per (device, dtype): one ``torch._foreach_norm(inf)`` and one sync each (the
           read of the gradients the guard always cost). NaN or Inf refuses the step with
           :class:`NonFiniteGradientError` before anything is written.
        2. The gradient transforms run; with any, the bound is taken again on their output (a
           transform that makes a gradient non-finite refuses the step, its state restored).
        3. Finite gradients can still overflow (float16's range is 65504: Adam's g*g for
           g = 300, SGD pushing p past the range; float32 with |g| ~ 1e20). A batch is *at
           risk* (:meth:`_at_risk`) when its dtype is that narrow or max|g| is large; only
           at-risk batches run checked (:meth:`_apply_checked`, which rolls them back and
           refuses the step with :class:`NonFiniteUpdateError` if a result is not finite),
           the others as under ``"ignore"``: the default float32 step costs no extra pass.
        """
        grads = [e[3] for e in entries]
        bounds = max_abs(grads)
        if bounds is None:
            self._refuse(lambda: NonFiniteGradientError(self._nonfinite_message(entries)))
            return
        saved = [tr.state_dict() for tr in self.grad_transforms]
        if saved:
            grads = self._transformed(entries, grads)
            bounds = max_abs(grads)
            if bounds is None:
                self._restore_transforms(saved)
                self._refuse(lambda: NonFiniteUpdateError(self._transform_message(entries, grads)))
                return
        fresh: list[Tensor] = []
        safe, risky = [], []
        for batch in self._batches(entries, grads, fresh):
            (risky if self._at_risk(batch, bounds) else safe).append(batch)
        culprit = self._apply_checked(risky) if risky else None
        if culprit is not None:
            for p in fresh:  # lazily created state: as if the step never began
                del self.state[p]
            self._restore_transforms(saved)
            self._refuse(lambda: NonFiniteUpdateError(self._update_message(entries, culprit)))
            return
        for batch in safe:
            self._apply(batch)

    def _transformed(
        self, entries: list[tuple[int, int, Tensor, Tensor]], grads: list[Tensor]
    ) -> list[Tensor]:
        for transform in self.grad_transforms:
            grads = transform([e[2] for e in entries], grads)
        return grads

    def _restore_transforms(self, saved: list[dict[str, Any]]) -> None:
        """Put the transforms' state back (a refused step must not advance, e.g., the noise)."""
        for transform, state in zip(self.grad_transforms, saved):
            transform.load_state_dict(state)

    def _refuse(self, error: Callable[[], NonFiniteGradientError]) -> None:
        """A refused step, nothing written: counted under "skip", raised under "raise"."""
        if self.nonfinite == "skip":
            self.skipped_steps += 1
            return
        raise error()

    def _at_risk(self, batch: _Batch, bounds: dict[tuple[Any, Any], float]) -> bool:
        """Whether the update of ``batch`` might overflow, judged from max|g| (``bounds``, per
        (device, real dtype)) times the group's hyperparameter scale, against
        :func:`overflow_limit` of the dtype. Always true for float16."""
        p = batch.params[0]
        dtype = p.dtype.to_real()
        scale = hyperparameter_scale(self.param_groups[batch.group_index], self._config_keys())
        return bounds[(p.device, dtype)] * scale > overflow_limit(dtype)

    def _apply_checked(self, batches: list[_Batch]) -> Tensor | None:
        """Apply ``batches`` and roll them back if a written value is not finite; returns the
        first parameter whose update (parameter or state) was not finite, None if all went in.

        What the update writes (parameters and state) is copied first, the update runs in
        place, every written tensor is checked (one reduction per dtype), and the copies go
        back if one holds NaN or Inf. This rather than updating clones and copying them back:
        the usual outcome, a finite step, then costs no copy back. Nothing else sees the
        tensors in between (the step holds them for the whole call; not for Hogwild! style
        concurrent readers).
        """
        owners: list[Tensor] = []
        written: list[Tensor] = []
        for batch in batches:
            names = self.state_names_for(self.param_groups[batch.group_index])
            for p, state in zip(batch.params, batch.states):
                for x in (p, *(state[n] for n in names)):
                    owners.append(p)
                    written.append(x.detach())
        saved = [torch.empty_like(x) for x in written]
        torch._foreach_copy_(saved, written)
        steps = [batch.states[0]["step"] for batch in batches]

        def roll_back() -> None:
            torch._foreach_copy_(written, saved)
            for batch, step in zip(batches, steps):
                for state in batch.states:
                    state["step"] = step

        try:
            for batch in batches:
                self._apply(batch)
        except BaseException:
            roll_back()
            raise
        if max_abs(written) is not None:
            return None
        try:
            return next(p for p, x in zip(owners, written) if not bool(torch.isfinite(x).all()))
        finally:
            roll_back()

    def _nonfinite_message(self, entries: list[tuple[int, int, Tensor, Tensor]]) -> str:
        for gi, pi, p, g in entries:
            values = g.coalesce().values() if g.is_sparse else g
            if not bool(torch.isfinite(values).all()):
                step = int(self.state.get(p, {}).get("step", 0)) + 1
                return (
                    f"non-finite gradient (NaN or Inf) in parameter group {gi}, parameter {pi} "
                    f"(shape {tuple(p.shape)}) at step {step}; no parameter or state was updated. "
                    "Pass nonfinite='skip' to skip such steps."
                )
        return "non-finite gradient"  # pragma: no cover - max_abs said otherwise

    def _transform_message(
        self, entries: list[tuple[int, int, Tensor, Tensor]], grads: list[Tensor]
    ) -> str:
        for (_, _, p, _), g in zip(entries, grads):
            values = g.coalesce().values() if g.is_sparse else g
            if not bool(torch.isfinite(values).all()):
                return self._update_message(entries, p, "the gradient transforms made")
        return "non-finite transformed gradient"  # pragma: no cover - max_abs said otherwise

    def _update_message(
        self,
        entries: list[tuple[int, int, Tensor, Tensor]],
        culprit: Tensor,
        what: str = "the update would write",
    ) -> str:
        gi, pi = next((gi, pi) for gi, pi, p, _ in entries if p is culprit)
        step = int(self.state.get(culprit, {}).get("step", 0)) + 1
        return (
            f"non-finite update: {what} NaN or Inf from finite gradients (an overflow in "
            f"{culprit.dtype}, or a division by a state or eps that is 0 in it?) in parameter "
            f"group {gi}, parameter {pi} (shape {tuple(culprit.shape)}) or its state at step "
            f"{step}; no parameter or state was updated. Pass nonfinite='skip' to skip such steps."
        )

    def _batches(
        self,
        entries: list[tuple[int, int, Tensor, Tensor]],
        grads: list[Tensor],
        fresh: list[Tensor] | None = None,
    ) -> list[_Batch]:
        """Group the step's parameters into batches, creating missing state (those parameters
        are appended to ``fresh``)."""
        batches: dict[tuple[Any, ...], _Batch] = {}
        for (gi, _, p, _), g in zip(entries, grads):
            group = self.param_groups[gi]
            state = self.state[p]
            if not state:
                state["step"] = 0
                if p.is_complex():  # initialise on the real view so values fill both parts
                    init = self.init_state(torch.view_as_real(p), group)
                    state.update({k: torch.view_as_complex(v) for k, v in init.items()})
                else:
                    state.update(self.init_state(p, group))
                if fresh is not None:
                    fresh.append(p)
            if g.is_sparse:
                batches[(gi, id(p))] = _Batch(gi, [p], [g], [state], sparse=True)
                continue
            key = (gi, p.device, p.dtype, state["step"])
            batch = batches.get(key)
            if batch is None:
                batch = batches[key] = _Batch(gi, [], [], [], sparse=False)
            batch.params.append(p)
            batch.grads.append(g)
            batch.states.append(state)
        return list(batches.values())

    def _apply(self, batch: _Batch) -> None:
        """One update of ``batch``; the step counts move only once it went through."""
        t = batch.states[0]["step"] + 1
        self._update_batch(batch, t)
        for state in batch.states:
            state["step"] = t

    def _update_batch(self, batch: _Batch, t: Any) -> None:
        group = self.param_groups[batch.group_index]
        names = self.state_names_for(group)
        hyper = {k: group[k] for k in self._update_keys()}
        weight_decay = group.get("weight_decay", 0)

        if batch.sparse:
            if self.update_sparse is None:
                raise RuntimeError(
                    f"{type(self).__name__} does not support sparse gradients (parameter group "
                    f"{batch.group_index}); use a dense gradient or ravine.SGD / ravine.Adagrad"
                )
            if weight_decay != 0:
                raise RuntimeError(
                    f"{type(self).__name__}: weight_decay is not supported with sparse gradients"
                )
            p, g, state = batch.params[0], batch.grads[0], batch.states[0]
            p_tl, g_tl = TL([p], foreach=False), TL([g], foreach=False)
            if group["maximize"]:
                g_tl = g_tl.neg()
            states = [TL([state[n]], foreach=False) for n in names]
            self.update_sparse(p_tl, g_tl, *states, t=t, **hyper)
            return

        params, grads = batch.params, batch.grads
        state_lists = [[s[n] for s in batch.states] for n in names]
        if params[0].is_complex():
            params = [torch.view_as_real(x) for x in params]
            grads = [torch.view_as_real(x) for x in grads]
            state_lists = [[torch.view_as_real(x) for x in lst] for lst in state_lists]

        # impl="compiled" only gets here for what it cannot flatten (sparse or complex gradients).
        if self.impl in ("foreach", "compiled"):
            self._run(params, grads, state_lists, group, t, hyper, weight_decay, foreach=True)
        else:
            for i in range(len(params)):
                self._run(
                    params[i : i + 1],
                    grads[i : i + 1],
                    [lst[i : i + 1] for lst in state_lists],
                    group,
                    t,
                    hyper,
                    weight_decay,
                    foreach=False,
                )

    def _run(
        self,
        params: list[Tensor],
        grads: list[Tensor],
        state_lists: list[list[Tensor]],
        group: dict[str, Any],
        t: int,
        hyper: dict[str, Any],
        weight_decay: float,
        *,
        foreach: bool,
    ) -> None:
        decoupled = self.weight_decay_mode == "decoupled" or bool(
            group.get("decoupled_weight_decay", False)
        )
        self._rule(
            TL(params, foreach=foreach),
            TL(grads, foreach=foreach),
            [TL(s, foreach=foreach) for s in state_lists],
            t=t,
            hyper=hyper,
            maximize=group["maximize"],
            weight_decay=weight_decay if weight_decay != 0 else None,
            decoupled=decoupled,
            lr=group.get("lr"),
        )

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
        """maximize, weight decay, then the update: the body every impl runs.

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
        if self._flat is not None:
            self._flat.verify(self)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """As torch.optim's, except that impl="compiled" zeroes its flat gradients in place."""
        if getattr(self, "_flat", None) is not None:
            self._flat.zero_grad(set_to_none)
        else:
            super().zero_grad(set_to_none)

    # -- state_dict ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self._flat is not None:
            # impl="compiled" shares one step tensor per flat group; checkpoints hold ints, as
            # the other impls write them, so that they load anywhere.
            state["state"] = {
                k: {**v, "step": int(v["step"])} if isinstance(v.get("step"), Tensor) else v
                for k, v in state["state"].items()
            }
        state["ravine"] = {
            "optimizer": type(self).__name__,
            "skipped_steps": self.skipped_steps,
            "grad_transforms": [tr.state_dict() for tr in self.grad_transforms],
        }
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch.optim's, after :meth:`validate_state_dict` checked the whole dict: on an error
        nothing has changed. Load-state-dict pre-hooks run once, before the check."""
        if not isinstance(state_dict, dict):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        state_dict = state_dict.copy()
        hooks = self._optimizer_load_state_dict_pre_hooks
        for hook in hooks.values():
            result = hook(self, state_dict)
            if result is not None:
                state_dict = result
        checked = self.validate_state_dict(state_dict)
        extra = state_dict.get("ravine", {})
        for transform, saved in zip(self.grad_transforms, extra.get("grad_transforms", [])):
            check = getattr(transform, "validate_state_dict", None)
            if check is not None:
                check(saved)
        self._optimizer_load_state_dict_pre_hooks = type(hooks)()  # they ran above
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
        field.
        """
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


def _group_lists(state_dict: Any, n_groups: int, sizes: list[int], who: str) -> list[Any]:
    """The state_dict's param_groups, after checking their number and sizes."""
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
