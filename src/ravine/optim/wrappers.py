"""What wraps other optimizers: Lookahead, Ranger = Lookahead(RAdam), gradient transforms.

- :class:`Lookahead` and :class:`Ranger` wrap an optimizer; :class:`TransformGradients` runs
  gradient transforms in front of one that takes none (torch.optim's).
- :class:`GradientNoise`, a gradient transform (``grad_transforms=`` or ``grad_noise=`` of
  every ravine optimizer), lives in :mod:`ravine.optim.transforms` and is importable from here.
- :class:`LBFGS` is torch.optim.LBFGS itself, registered for comparisons.

A wrapper is a ``torch.optim.Optimizer`` whose ``param_groups`` *are* its inner optimizer's (the
same list, so learning-rate schedulers, ``add_param_group`` and checkpoints act on the inner
optimizer), and whose ``state_dict`` nests the inner one's under ``"inner"``. The inner optimizer
may be ravine's or torch.optim's.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from ravine.optim.base import (
    NonFiniteGradientError,
    NonFiniteUpdateError,
    Optimizer,
    _check_params,
    _group_lists,
    check_state_tensor,
    display_name,
    max_abs,
    wrap_step,
)
from ravine.optim.engines import FlatLayout
from ravine.optim.hyperparameters import (
    NONNEGATIVE,
    POSITIVE,
    UNIT,
    Choice,
    Integer,
    Interval,
    Kind,
    OrNone,
    check_hyperparameter,
    check_hyperparameters,
    checked_count,
)
from ravine.optim.radam import RAdam
from ravine.optim.torch_format import check_format
from ravine.optim.transforms import NOISE_PAPER, GradientNoise, GradientTransform  # noqa: F401

LOOKAHEAD_PAPER = (
    "Zhang, Lucas, Hinton & Ba 2019, NeurIPS, 'Lookahead Optimizer: k steps forward, 1 step "
    "back', arXiv:1907.08610"
)


class _Wrapper(torch.optim.Optimizer):
    """Delegates ``param_groups``, ``defaults``, ``zero_grad`` and ``add_param_group`` to the
    inner optimizer; subclasses keep their own per-parameter ``state``. A subclass's ``step``
    is wrapped as :class:`ravine.optim.base.Optimizer`'s (:func:`ravine.optim.base.wrap_step`).
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        wrap_step(cls)

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"{type(self).__name__} wraps a torch.optim.Optimizer, got {type(optimizer)!r}"
            )
        for gi, group in enumerate(optimizer.param_groups):  # torch.optim's only warns
            _check_params(group["params"], gi, optimizer.param_groups[:gi])
        self._ready = False
        self.optimizer = optimizer
        # torch's __init__ sets up the step hooks and profiling; the placeholder group it is
        # given is dropped at once for the inner optimizer's groups.
        super().__init__([{"params": []}], dict(optimizer.defaults))
        self.state = defaultdict(dict)
        self._ready = True

    @property  # type: ignore[override]
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups if self._ready else self._own_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        if getattr(self, "_ready", False):
            self.optimizer.param_groups = value
        else:
            self._own_groups = value

    @property  # type: ignore[override]
    def defaults(self) -> dict[str, Any]:
        return self.optimizer.defaults if getattr(self, "_ready", False) else self._own_defaults

    @defaults.setter
    def defaults(self, value: dict[str, Any]) -> None:
        self._own_defaults = value

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if not getattr(self, "_ready", False):
            super().add_param_group(param_group)
            return
        checks_itself = isinstance(self.optimizer, (Optimizer, LBFGS))
        if not checks_itself and isinstance(param_group, dict) and "params" in param_group:
            # A torch.optim optimizer accepts integer tensors and only warns about repeats.
            params = param_group["params"]
            params = [params] if isinstance(params, Tensor) else params
            if not isinstance(params, set):
                param_group["params"] = params = list(params)
                tensors = [p[1] if isinstance(p, tuple) else p for p in params]
                _check_params(tensors, len(self.param_groups), self.param_groups)
        self.optimizer.add_param_group(param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none)

    def flush_guard(self) -> None:
        """The inner optimizer's :meth:`ravine.optim.base.Optimizer.flush_guard`, if it has
        one."""
        flush = getattr(self.optimizer, "flush_guard", None)
        if flush is not None:
            flush()

    def _params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    # torch.optim.Optimizer pickles only defaults/state/param_groups; a wrapper also needs its
    # inner optimizer and settings (copy.deepcopy, torch.save of the object).
    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__.copy()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._describe()}, optimizer={self.optimizer!r})"

    def _describe(self) -> str:
        return ""


def _inner_from(
    optimizer: torch.optim.Optimizer | Iterable[Any],
    inner: str | Callable[..., torch.optim.Optimizer],
    hyperparameters: dict[str, Any],
    who: str,
) -> torch.optim.Optimizer:
    """The optimizer to wrap: given, or built over ``params`` from a registry name or a class."""
    if isinstance(optimizer, torch.optim.Optimizer):
        if hyperparameters:
            raise TypeError(
                f"{who}: hyperparameters {sorted(hyperparameters)} are for building the inner "
                "optimizer; pass them to the optimizer you wrap instead"
            )
        return optimizer
    if isinstance(inner, str):
        from ravine.optim.registry import create  # the registry imports this module

        return create(inner, optimizer, **hyperparameters)
    return inner(optimizer, **hyperparameters)


class Lookahead(_Wrapper):
    """Lookahead (Zhang, Lucas, Hinton & Ba, NeurIPS 2019, arXiv:1907.08610), Algorithm 1,
    around any optimizer A (ravine's or torch.optim's)::

        phi_0 = theta_0                        (slow weights: the parameters at the first step)
        every step:     theta <- theta + A(grad)                     (fast weights, k steps)
        every k steps:  phi <- phi + alpha (theta - phi);  theta <- phi

    Defaults: k = 5, alpha = 0.5 (the paper's). The counter is one for the whole model, as in
    the algorithm (which updates the whole parameter vector): a parameter that stopped
    receiving gradients mid-cycle is still pulled back at the next synchronisation. The inner
    optimizer's state (momentum, second moments) is kept across synchronisations, as in the
    paper's experiments. Steps the inner optimizer skipped (``nonfinite="skip"``) are not
    counted.

    Peer implementations part from Algorithm 1 here: torch_optimizer's Lookahead (the
    pytorch-optimizer package) creates phi from the fast weights *after* the first inner step,
    so phi_0 = theta_1 and the cycles are offset by one step, and it saves the slow weights keyed
    by ``id(tensor)``, which a fresh process cannot match, so a resumed run loses them;
    lonePatient/lookahead_pytorch's ``state_dict`` is the inner optimizer's alone (slow weights
    and counter are not saved). ravine takes phi_0 from the parameters at the first step, before
    the inner update, and saves slow weights by parameter index with the counter (tested against
    a transcription of Algorithm 1 and by resuming mid-cycle).

    ``Lookahead(optimizer, k, alpha)`` wraps an optimizer; ``Lookahead(params, k, alpha,
    inner="sgd", lr=0.1, ...)`` (and ``ravine.create("lookahead", params, inner=...)``) builds
    the inner one from a registry name or class. With k = 1 and alpha = 1 it is the inner
    optimizer, bit for bit. ``state_dict()`` nests the inner optimizer's and holds the slow
    weights, the step counter, k and alpha.
    """

    paper: ClassVar[str] = LOOKAHEAD_PAPER

    def __init__(
        self,
        optimizer: torch.optim.Optimizer | Iterable[Any],
        k: int = 5,
        alpha: float = 0.5,
        *,
        inner: str | Callable[..., torch.optim.Optimizer] = "adam",
        **inner_hyperparameters: Any,
    ) -> None:
        k = check_hyperparameter("k", k, LOOKAHEAD_KINDS["k"])
        alpha = check_hyperparameter("alpha", alpha, LOOKAHEAD_KINDS["alpha"])
        inner_opt = _inner_from(optimizer, inner, inner_hyperparameters, type(self).__name__)
        super().__init__(inner_opt)
        self.k = k
        self.alpha = alpha
        self.lookahead_steps = 0  # inner steps taken; synchronise when a multiple of k
        # (fast flat buffer, slow flat buffer) pairs and the parameters outside them, valid
        # for the layout in _slow_layout (see _start_slow_weights)
        self._slow_flats: list[tuple[Tensor, Tensor]] = []
        self._slow_rest: list[Tensor] = []
        self._slow_layout: tuple[Any, ...] | None = None
        self._slow_flat_layout: tuple[FlatLayout, ...] = ()

    def _describe(self) -> str:
        return f"k={self.k}, alpha={self.alpha}"

    def _layout(self) -> tuple[Any, ...]:
        """What the slow weights' layout depends on: the parameters, the state dict, and the
        flat buffers of an inner ``impl="compiled"`` optimizer (constant time to compute): the
        id of the engine's layout tuple, a new one after each rebuild (``_slow_flat_layout``
        holds the tuple, so the id is not reused while compared)."""
        return (
            id(self.state),
            id(self.param_groups),
            tuple((id(g["params"]), len(g["params"])) for g in self.param_groups),
            id(_flat_layout(self.optimizer)),
        )

    @torch.no_grad()
    def _start_slow_weights(self) -> None:
        """phi_0 = theta for every parameter without slow weights; when the inner optimizer
        keeps its parameters in flat buffers (impl="compiled"), the slow weights live in flat
        buffers of the same layout, so that a synchronisation is two kernels, not two per
        parameter. Per-parameter work only when the layout changed."""
        layout = self._layout()
        if layout == self._slow_layout:
            return
        for p in self._params():
            state = self.state[p]
            if "slow_param" not in state:
                state["slow_param"] = p.detach().clone(memory_format=torch.preserve_format)
        self._slow_flats, flat_params = [], set()
        self._slow_flat_layout = _flat_layout(self.optimizer)
        for flat in self._slow_flat_layout:
            slow = torch.zeros_like(flat.buffer)
            views = flat.views(slow)
            torch._foreach_copy_(views, [self.state[p]["slow_param"] for p in flat.params])
            for p, view in zip(flat.params, views):
                self.state[p]["slow_param"] = view
            self._slow_flats.append((flat.buffer, slow))
            flat_params.update(flat.params)
        self._slow_rest = [p for p in self._params() if p not in flat_params]
        self._slow_layout = layout

    @torch.no_grad()
    def synchronize(self) -> None:
        """phi <- phi + alpha (theta - phi); theta <- phi, for every parameter."""
        self._start_slow_weights()
        # lerp with weight 1 returns the end point exactly, so k = 1, alpha = 1 is the inner
        # optimizer bit for bit.
        for fast, slow in self._slow_flats:
            slow.lerp_(fast, self.alpha)
            fast.copy_(slow)
        if not self._slow_rest:  # every parameter has slow weights since _start_slow_weights
            return
        slow_list = [self.state[p]["slow_param"] for p in self._slow_rest]
        fast_list = [p.detach() for p in self._slow_rest]
        torch._foreach_lerp_(slow_list, fast_list, self.alpha)
        torch._foreach_copy_(fast_list, slow_list)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """The inner step, then every k steps the slow weights' step. A refused inner step
        does not count among the k; on CUDA the inner optimizer learns of a refusal one step
        late (see ``nonfinite``), and the step counted meanwhile is taken back then (if a
        synchronisation fell on it, it stays done: the fast weights had not moved)."""
        self._start_slow_weights()
        with self._late_refusals():
            skipped = getattr(self.optimizer, "skipped_steps", None)
            late = getattr(self.optimizer, "late_refusals", 0)
            loss = self.optimizer.step(closure) if closure is not None else self.optimizer.step()
            late = getattr(self.optimizer, "late_refusals", 0) - late  # skipped, but not now
        if skipped is not None and self.optimizer.skipped_steps - late != skipped:
            return loss
        self.lookahead_steps += 1
        if self.lookahead_steps % self.k == 0:
            self.synchronize()  # re-checks the layout: the inner step may have rebuilt it
        return loss

    def flush_guard(self) -> None:
        """The inner optimizer's, taking back a step counted that the device refused."""
        with self._late_refusals():
            super().flush_guard()

    @contextlib.contextmanager
    def _late_refusals(self) -> Iterator[None]:
        """Un-count the steps the inner optimizer finds refused while this runs (CUDA)."""
        before = getattr(self.optimizer, "late_refusals", 0)
        try:
            yield
        finally:
            self.lookahead_steps -= getattr(self.optimizer, "late_refusals", 0) - before

    def state_dict(self, format: str = "ravine") -> dict[str, Any]:
        """The inner optimizer's state dict under ``"inner"``, the slow weights under
        ``"lookahead"``; ``format="torch"`` is refused (torch.optim has no Lookahead)."""
        _refuse_torch_format(self, format)
        self.flush_guard()
        index = {p: i for i, p in enumerate(self._params())}
        slow = {index[p]: s["slow_param"] for p, s in self.state.items() if "slow_param" in s}
        return {
            "inner": self.optimizer.state_dict(),
            "lookahead": {
                "optimizer": type(self).__name__,
                "k": self.k,
                "alpha": self.alpha,
                "steps": self.lookahead_steps,
                "slow": slow,
            },
        }

    @torch.no_grad()
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Checks the whole dict first (the wrapper's part here, the inner optimizer's with its
        own ``validate_state_dict`` where it has one): on an error nothing has changed."""
        k, alpha, steps, slow = self._validate_lookahead(state_dict)
        check_inner = getattr(self.optimizer, "validate_state_dict", None)
        if check_inner is not None:
            check_inner(state_dict["inner"])
        self.optimizer.load_state_dict(state_dict["inner"])
        self.k, self.alpha, self.lookahead_steps = k, alpha, steps
        params = self._params()
        self.state = defaultdict(dict)
        for i, tensor in slow.items():
            p = params[i]
            self.state[p]["slow_param"] = tensor.detach().to(device=p.device, dtype=p.dtype).clone()

    def _validate_lookahead(self, state_dict: Any) -> tuple[int, float, int, dict[int, Tensor]]:
        who = type(self).__name__
        if not isinstance(state_dict, dict) or not {"inner", "lookahead"} <= set(state_dict):
            raise ValueError(f"not a {who} state_dict (expected 'inner' and 'lookahead' keys)")
        saved = state_dict["lookahead"]
        if not isinstance(saved, dict) or not {"k", "alpha", "steps", "slow"} <= set(saved):
            raise ValueError(
                f"not a {who} state_dict (expected 'k', 'alpha', 'steps' and 'slow' under "
                "'lookahead')"
            )
        saved_class = saved.get("optimizer")
        if saved_class is not None and saved_class != who:
            raise ValueError(
                f"state_dict was saved from ravine.{saved_class}, not ravine.{who}: load it "
                f"into a ravine.{saved_class}"
            )
        checked = check_hyperparameters(saved, LOOKAHEAD_KINDS)
        steps = checked_count("lookahead steps", saved["steps"])
        positions = [
            (gi, pi, p)
            for gi, g in enumerate(self.param_groups)
            for pi, p in enumerate(g["params"])
        ]
        if not isinstance(saved["slow"], dict):
            raise ValueError(
                f"Invalid slow weights: {type(saved['slow']).__name__} (expected a dict)"
            )
        slow = {}
        for i, tensor in saved["slow"].items():
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(positions):
                raise ValueError(
                    f"state_dict holds slow weights for parameter {i!r}, but the groups hold "
                    f"{len(positions)} parameters"
                )
            gi, pi, p = positions[i]
            check_state_tensor(f"slow weights of parameter {pi} of group {gi}", tensor, p)
            slow[i] = tensor
        return checked["k"], checked["alpha"], steps, slow


LOOKAHEAD_KINDS: dict[str, Kind] = {"k": Integer(Interval(1)), "alpha": UNIT}


class Ranger(Lookahead):
    """Ranger (Wright 2019): :class:`Lookahead` around :class:`~ravine.optim.radam.RAdam`.

    No paper of its own: the combination of RAdam (Liu et al., ICLR 2020, arXiv:1908.03265) and
    Lookahead (Zhang et al., NeurIPS 2019, arXiv:1907.08610) released as code by L. Wright in
    2019. Defaults are that code's: lr = 1e-3, betas = (0.95, 0.999), eps = 1e-5, k = 6,
    alpha = 0.5 and the rectification switch at rho_t > 5 (``rho_threshold=5.0``, as the RAdam
    authors' code; RAdam's paper says 4). Other keyword options (``impl``, ``maximize``...) go
    to the inner RAdam. Ranger's later gradient-centralisation variant is not included.
    """

    paper: ClassVar[str] = (
        "Wright 2019 (Ranger): RAdam, Liu et al. 2020, arXiv:1908.03265 + Lookahead, Zhang et "
        "al. 2019, arXiv:1907.08610"
    )

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.95, 0.999),
        eps: float = 1e-5,
        weight_decay: float = 0.0,
        rho_threshold: float = 5.0,
        k: int = 6,
        alpha: float = 0.5,
        **options: Any,
    ) -> None:
        inner = RAdam(
            params,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            rho_threshold=rho_threshold,
            **options,
        )
        super().__init__(inner, k, alpha)


def _flat_layout(optimizer: torch.optim.Optimizer) -> tuple[FlatLayout, ...]:
    """The flat buffers of a ravine optimizer's engine (empty for other optimizers)."""
    engine = getattr(optimizer, "engine", None)
    return () if engine is None else engine.layout()


class TransformGradients(_Wrapper):
    """Gradient transforms (e.g. :class:`GradientNoise`) around any optimizer, for those that
    take no ``grad_transforms`` (torch.optim's)::

        opt = TransformGradients(torch.optim.SGD(params, lr=0.1), GradientNoise(0.01, seed=0))

    ``step(closure)`` evaluates the closure once, replaces each ``.grad`` by its transformed
    value for the inner step, and puts the original gradients back afterwards (so ``.grad``
    stays what backward computed, as with ravine's own ``grad_transforms``). Optimizers that
    re-evaluate the closure inside their step (L-BFGS) cannot be wrapped this way.
    ``state_dict()`` nests the inner optimizer's and holds the transforms' states.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, *transforms: GradientTransform) -> None:
        if isinstance(optimizer, torch.optim.LBFGS):
            raise TypeError(
                "TransformGradients cannot wrap LBFGS: it re-evaluates the closure inside its step"
            )
        super().__init__(optimizer)
        self.transforms: list[GradientTransform] = list(transforms)

    def _describe(self) -> str:
        return f"transforms={self.transforms!r}"

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params = [p for p in self._params() if p.grad is not None]
        originals = [p.grad for p in params]
        grads: Sequence[Tensor] = originals
        for transform in self.transforms:
            grads = transform(params, list(grads))
        try:
            for p, g in zip(params, grads):
                p.grad = g
            self.optimizer.step()
        finally:
            for p, g in zip(params, originals):
                p.grad = g
        return loss

    def state_dict(self, format: str = "ravine") -> dict[str, Any]:
        """The inner optimizer's state dict and the transforms' states; ``format="torch"`` is
        refused (torch.optim runs no gradient transforms)."""
        _refuse_torch_format(self, format)
        return {
            "inner": self.optimizer.state_dict(),
            "grad_transforms": [tr.state_dict() for tr in self.transforms],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Checks the whole dict first (the inner optimizer's part with its own
        ``validate_state_dict`` where it has one): on an error nothing has changed."""
        if not isinstance(state_dict, dict) or not {"inner", "grad_transforms"} <= set(state_dict):
            raise ValueError(
                "not a TransformGradients state_dict (expected 'inner' and 'grad_transforms')"
            )
        saved = state_dict["grad_transforms"]
        if not isinstance(saved, list) or len(saved) != len(self.transforms):
            count = len(saved) if isinstance(saved, list) else "invalid"
            raise ValueError(
                f"state_dict holds {count} gradient transforms but this wrapper has "
                f"{len(self.transforms)}"
            )
        for transform, s in zip(self.transforms, saved):
            check = getattr(transform, "validate_state_dict", None)
            if check is not None:
                check(s)
        check_inner = getattr(self.optimizer, "validate_state_dict", None)
        if check_inner is not None:
            check_inner(state_dict["inner"])
        self.optimizer.load_state_dict(state_dict["inner"])
        for transform, s in zip(self.transforms, saved):
            transform.load_state_dict(s)


def _refuse_torch_format(wrapper: _Wrapper, format: str) -> None:
    """A wrapper's state has no torch.optim form: say so, and what can be exported."""
    check_format(format)
    if format == "torch":
        raise ValueError(
            f"state_dict(format='torch'): torch.optim has no {type(wrapper).__name__}; the "
            "inner optimizer's state exports alone (wrapper.optimizer.state_dict(format="
            f"'torch')), without the {type(wrapper).__name__}'s own state"
        )


class LBFGS(torch.optim.LBFGS):
    """L-BFGS (Liu & Nocedal 1989, "On the limited memory BFGS method for large scale
    optimization", Math. Programming 45): torch.optim.LBFGS itself, registered for comparisons.

    The algorithm is torch's, unchanged (a two-loop recursion over the last ``history_size``
    pairs on the flattened parameters, optionally a strong-Wolfe line search); this class adds
    ravine's hyperparameter checks, a clear error when ``step`` gets no closure (L-BFGS
    re-evaluates the function several times per step, so the closure is required), and the
    sparse and non-finite checks of ravine's optimizers on the gradients of the closure's first
    evaluation, before anything is written. Defaults are torch's: lr = 1, max_iter = 20,
    max_eval = max_iter * 1.25, tolerance_grad = 1e-7, tolerance_change = 1e-9,
    history_size = 100, no line search. One parameter group only (torch's restriction).

    ``impl`` is accepted for interface compatibility with the other optimizers ("foreach" or
    "loop"); the update works on one flat vector either way. ``maximize`` is not supported.
    """

    paper: ClassVar[str] = (
        "Liu & Nocedal 1989, Math. Programming 45, 'On the limited memory BFGS method for large "
        "scale optimization'"
    )

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1.0,
        max_iter: int = 20,
        max_eval: int | None = None,
        tolerance_grad: float = 1e-7,
        tolerance_change: float = 1e-9,
        history_size: int = 100,
        line_search_fn: str | None = None,
        *,
        impl: str = "foreach",
    ) -> None:
        if impl not in ("foreach", "loop"):
            raise ValueError(f"Invalid impl: {impl!r} (expected one of foreach, loop for LBFGS)")
        self.impl = impl
        # Checked before torch's constructor, which computes max_eval from max_iter.
        hyper = check_hyperparameters(
            dict(
                lr=lr,
                max_iter=max_iter,
                max_eval=max_eval,
                tolerance_grad=tolerance_grad,
                tolerance_change=tolerance_change,
                history_size=history_size,
                line_search_fn=line_search_fn,
            ),
            LBFGS_KINDS,
        )
        super().__init__(params, **hyper)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group)}")
        group = check_hyperparameters({**self.defaults, **param_group}, LBFGS_KINDS)
        if self.param_groups:
            raise ValueError(
                "LBFGS takes one parameter group (torch.optim.LBFGS works on one flat vector "
                "with one set of hyperparameters)"
            )
        params = param_group["params"]
        params = [params] if isinstance(params, Tensor) else params
        if not isinstance(params, set):  # torch refuses sets
            param_group["params"] = params = list(params)
            _check_params([p[1] if isinstance(p, tuple) else p for p in params], 0, [])
        param_group.update({k: group[k] for k in LBFGS_KINDS if k in param_group})
        super().add_param_group(param_group)

    def flush_guard(self) -> None:
        """Nothing to read: L-BFGS checks each step at once, on every device (its line search
        reads values back anyway)."""

    def state_dict(self, format: str = "ravine") -> dict[str, Any]:
        """torch's, with a ``"ravine"`` record of the class and ravine's step counter;
        ``format="torch"`` gives torch.optim.LBFGS's own (which this class also loads)."""
        check_format(format)
        state = super().state_dict()
        if format == "torch":
            state["state"] = {
                k: {n: v for n, v in entry.items() if n != "ravine_steps"}
                for k, entry in state["state"].items()
            }
            return state
        state["ravine"] = {"optimizer": type(self).__name__}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's, after checking the whole dict (class, group, hyperparameters, the L-BFGS
        state against the parameters): on an error nothing has changed."""
        self.validate_state_dict(state_dict)
        super().load_state_dict({k: v for k, v in state_dict.items() if k != "ravine"})

    def validate_state_dict(self, state_dict: Any) -> None:
        """Raise ValueError naming the field unless this LBFGS can load ``state_dict``."""
        who = display_name(type(self))
        extra = state_dict.get("ravine", {}) if isinstance(state_dict, dict) else {}
        saved_class = extra.get("optimizer") if isinstance(extra, dict) else None
        if saved_class is not None and saved_class != type(self).__name__:
            raise ValueError(
                f"state_dict was saved from ravine.{saved_class}, not {who}: load it into a "
                f"ravine.{saved_class}"
            )
        groups = _group_lists(state_dict, 1, [len(self._params)], who)
        missing = [k for k in LBFGS_KINDS if k not in groups[0]]
        if missing:
            raise ValueError(
                f"group 0 of the state_dict lacks hyperparameter(s) {', '.join(missing)}"
            )
        try:
            check_hyperparameters(groups[0], LBFGS_KINDS)
        except ValueError as e:
            raise ValueError(f"group 0 of the state_dict: {e}") from None
        state = state_dict["state"]
        if not isinstance(state, dict) or not set(state) <= set(groups[0]["params"][:1]):
            raise ValueError(
                "Invalid state: LBFGS keeps state for the first parameter of its group only"
            )
        for entry in state.values():
            _check_lbfgs_state(entry, self._params, who)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """torch's L-BFGS step, all or nothing: the gradients of every closure evaluation are
        checked (a step can move the parameters to where the gradient is NaN/Inf), and so are
        the parameters and the L-BFGS state it leaves; on a failure (or any exception from the
        closure) parameters and state are put back as they were and the error raised:
        :class:`NonFiniteGradientError` for the first evaluation, :class:`NonFiniteUpdateError`
        after the step moved. Costs a copy of the parameters and of the few state vectors and
        one read of the state per step (an L-BFGS iteration reads the whole history anyway).
        """
        if closure is None:
            self._check_gradients()
            raise RuntimeError(
                "LBFGS re-evaluates the function several times per step: pass a closure that "
                "zeroes the gradients, computes the loss, calls backward and returns the loss"
            )
        params = self._params
        state = self.state[params[0]]
        step = state.get("ravine_steps", 0) + 1
        evaluations = 0

        def checked() -> Any:
            nonlocal evaluations
            loss = closure()
            evaluations += 1
            self._check_gradients(step, evaluations)
            return loss

        saved_params = [p.detach().clone() for p in params]
        # torch replaces the state's lists and tensors, except prev_flat_grad (copied into)
        # and the lists it appends to: shallow copies of those, clones of the tensors.
        saved_state = {
            k: list(v) if isinstance(v, list) else v.clone() if isinstance(v, Tensor) else v
            for k, v in state.items()
        }
        try:
            loss = super().step(checked)
            self._check_result(step)
        except BaseException:
            with torch.no_grad():
                torch._foreach_copy_([p.detach() for p in params], saved_params)
            state.clear()
            state.update(saved_state)
            raise
        # Steps (calls), not torch's n_iter (iterations, up to max_iter per step): for messages.
        state["ravine_steps"] = step
        return loss

    def _check_gradients(self, step: int | None = None, evaluation: int = 1) -> None:
        """Sparse or non-finite gradients of the closure's ``evaluation``-th call in a step."""
        if step is None:
            step = self.state[self._params[0]].get("ravine_steps", 0) + 1
        for gi, group in enumerate(self.param_groups):
            for pi, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(
                        f"LBFGS does not support sparse gradients (parameter group {gi})"
                    )
                if bool(torch.isfinite(p.grad).all()):
                    continue
                where = f"parameter group {gi}, parameter {pi} (shape {tuple(p.shape)})"
                if evaluation == 1:
                    raise NonFiniteGradientError(
                        f"non-finite gradient (NaN or Inf) in {where} at step {step}; no "
                        "parameter or state was updated"
                    )
                raise NonFiniteUpdateError(
                    f"non-finite update: the step moved the parameters to where the gradient "
                    f"is NaN or Inf (evaluation {evaluation} of the closure) in {where} at step "
                    f"{step}; the step was undone: no parameter or state was updated. A "
                    "smaller lr or line_search_fn='strong_wolfe' may avoid it"
                )

    def _check_result(self, step: int) -> None:
        """NonFiniteUpdateError if the step left a parameter or L-BFGS state vector NaN/Inf."""
        state = self.state[self._params[0]]
        vectors = [
            t
            for v in state.values()
            for t in (v if isinstance(v, list) else [v])
            if isinstance(t, Tensor) and t.is_floating_point()
        ]
        params = [p.detach() for p in self._params]
        if max_abs(params + vectors) is not None:
            return
        bad = [i for i, p in enumerate(params) if not bool(torch.isfinite(p).all())]
        where = (
            f"parameter {bad[0]} (shape {tuple(params[bad[0]].shape)})"
            if bad
            else ("parameter 0 (the L-BFGS state)")
        )
        raise NonFiniteUpdateError(
            f"non-finite update: the step would write NaN or Inf from finite gradients into "
            f"parameter group 0, {where} at step {step}; the step was undone: no parameter "
            "or state was updated"
        )


LBFGS_KINDS: dict[str, Kind] = {
    "lr": POSITIVE,
    "max_iter": Integer(Interval(1)),
    "max_eval": OrNone(Interval(1)),  # torch computes max_iter * 5 // 4 for None
    "tolerance_grad": NONNEGATIVE,
    "tolerance_change": NONNEGATIVE,
    "history_size": Integer(Interval(1)),
    "line_search_fn": Choice((None, "strong_wolfe")),
}
# torch.optim.LBFGS's state (on the first parameter) plus ravine's step counter.
_LBFGS_COUNTS = ("func_evals", "n_iter", "ravine_steps")
_LBFGS_VECTORS = ("d", "prev_flat_grad")
_LBFGS_HISTORIES = ("old_dirs", "old_stps")
_LBFGS_OTHER = ("t", "ro", "al", "H_diag", "prev_loss")


def _check_lbfgs_state(entry: Any, params: list[Tensor], who: str) -> None:
    """The flat vectors against the parameters' total size; the counters as counts."""
    known = {*_LBFGS_COUNTS, *_LBFGS_VECTORS, *_LBFGS_HISTORIES, *_LBFGS_OTHER}
    if not isinstance(entry, dict):
        raise ValueError(f"Invalid LBFGS state: {type(entry).__name__} (expected a dict)")
    for key in entry:
        if key not in known:
            raise ValueError(
                f"unexpected state {key!r} for parameter 0 of group 0; {who} keeps "
                f"{', '.join(sorted(known))}"
            )
    size = sum(p.numel() * (2 if p.is_complex() else 1) for p in params)
    flat = torch.empty(size)
    for key in _LBFGS_COUNTS:
        if key in entry:
            checked_count(f"state {key!r} of parameter 0 of group 0", entry[key])
    vectors = [(key, entry[key]) for key in _LBFGS_VECTORS if entry.get(key) is not None]
    for key in _LBFGS_HISTORIES:
        history = entry.get(key, [])
        if not isinstance(history, list):
            raise ValueError(f"Invalid state {key!r} of parameter 0 of group 0: expected a list")
        vectors += [(f"{key}[{i}]", v) for i, v in enumerate(history)]
    if len(entry.get("old_dirs", [])) != len(entry.get("old_stps", [])):
        raise ValueError("Invalid LBFGS state: old_dirs and old_stps differ in length")
    for name, value in vectors:
        check_state_tensor(f"state {name!r} of parameter 0 of group 0", value, flat)
