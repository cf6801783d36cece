"""How a step's update is applied: the engines behind ``Optimizer.step``.

:class:`~ravine.optim.base.Optimizer` writes ``step()`` once and hands the work to its engine,
chosen from ``impl``:

- :class:`EagerEngine` (``impl="foreach"``, ``impl="loop"``): the parameters with a gradient,
  the non-finite guard (the at-risk batches run checked), the gradient transforms, batches of one
  (group, device, dtype, step count), and the rule run on each batch with multi-tensor ops or one
  tensor at a time.
- :class:`ravine.optim.compiled.FlatEngine` (``impl="compiled"``): flat buffers and one
  torch.compile'd kernel per batch; what it cannot flatten goes through an :class:`EagerEngine`.

Both implement :class:`Engine`. The rule body itself (maximize, weight decay, ``update``) stays
on the optimizer as ``Optimizer._rule``: it is the one piece both engines run (the compiled one
traces it on a bare instance of the class), and the subclass's ``update`` it calls is the
optimizer's own. Everything around it (which tensors, in which batches, guarded how) is here.

This module imports no other module of ``ravine.optim`` but :mod:`ravine.optim.guard`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor

from ravine.optim.guard import (
    DEFERRED_NOTE,
    NonFiniteGradientError,
    NonFiniteUpdateError,
    Verdict,
    checked_on_device,
    deferred,
    hyperparameter_scale,
    max_abs,
    outside_graph,
    overflow_limit,
)
from ravine.tensorlist import TL

if TYPE_CHECKING:
    from ravine.optim.base import Optimizer

# (group index, index in group, parameter, gradient) of each parameter with a gradient
Entries = list[tuple[int, int, Tensor, Tensor]]


class FlatLayout(Protocol):
    """Parameters whose values live in one flat buffer (``impl="compiled"``): ``buffer`` holds
    ``params`` back to back, and ``views(flat)`` cuts a buffer of the same layout into one view
    per parameter (shaped like it), in the order of ``params``."""

    params: list[Tensor]

    @property
    def buffer(self) -> Tensor: ...

    def views(self, flat: Tensor) -> list[Tensor]: ...


class Engine(Protocol):
    """What ``Optimizer`` asks of an engine; each method takes the optimizer it serves."""

    def step(self, opt: Optimizer) -> None:
        """Update every parameter that has a gradient (closure, hooks and no_grad are the
        optimizer's); under ``opt.nonfinite`` "raise"/"skip" nothing non-finite is written."""
        ...

    def zero_grad(self, opt: Optimizer, set_to_none: bool) -> None:
        """As ``torch.optim.Optimizer.zero_grad``."""
        ...

    def state_dict(self, state: dict[str, Any]) -> dict[str, Any]:
        """torch's ``state_dict`` of the optimizer, fixed up to the form every engine loads."""
        ...

    def check_layout(self, opt: Optimizer) -> None:
        """Check now that the engine's view of the parameters still holds (see
        ``Optimizer.check_layout``)."""
        ...

    def layout(self) -> tuple[FlatLayout, ...]:
        """The flat buffers the parameters live in (empty when none): a new tuple whenever the
        layout changes, the same one while it holds."""
        ...


@dataclass
class Batch:
    """Parameters of one group sharing device, dtype and step count: one ``update`` call."""

    group_index: int
    params: list[Tensor]
    grads: list[Tensor]
    states: list[dict[str, Any]]
    sparse: bool


class EagerEngine:
    """``impl="foreach"`` (``foreach=True``: each batch in multi-tensor ops) and ``impl="loop"``
    (the same rule on one-tensor lists, the reference). Keeps no state of its own."""

    def __init__(self, foreach: bool) -> None:
        self.foreach = foreach

    def __repr__(self) -> str:
        return f"EagerEngine(foreach={self.foreach})"

    # -- Engine --------------------------------------------------------------------------------
    def step(self, opt: Optimizer) -> None:
        entries: Entries = []
        for gi, group in enumerate(opt.param_groups):
            for pi, p in enumerate(group["params"]):
                if p.grad is not None:
                    entries.append((gi, pi, p, p.grad))
        if not entries:
            return
        if opt.nonfinite == "ignore":
            grads = transformed(opt, entries, [e[3] for e in entries])
            for batch in self.batches(opt, entries, grads):
                self.apply(opt, batch)
        elif can_defer(opt, entries):
            self.deferred_step(opt, entries)
        else:
            self.guarded_step(opt, entries)

    def zero_grad(self, opt: Optimizer, set_to_none: bool) -> None:
        torch.optim.Optimizer.zero_grad(opt, set_to_none)

    def state_dict(self, state: dict[str, Any]) -> dict[str, Any]:
        return state

    def check_layout(self, opt: Optimizer) -> None:
        """Nothing to check: the eager engine reads the parameters afresh every step."""

    def layout(self) -> tuple[FlatLayout, ...]:
        return ()

    # -- the guard -----------------------------------------------------------------------------
    def guarded_step(self, opt: Optimizer, entries: Entries) -> None:
        """A step under ``nonfinite="raise"``/``"skip"``: nothing non-finite is written.

        1. max|g| per (device, dtype) (:func:`~ravine.optim.guard.max_abs`, one sync each: the
           read of the gradients the guard always cost). NaN or Inf refuses the step with
           :class:`NonFiniteGradientError` before anything is written.
        2. The gradient transforms run; with any, the bound is taken again on their output (a
           transform that makes a gradient non-finite refuses the step, its state restored).
        3. Finite gradients can still overflow (float16's range is 65504: Adam's g*g for
           g = 300, SGD pushing p past the range; float32 with |g| ~ 1e20). A batch is *at
           risk* (:meth:`at_risk`) when its dtype is that narrow or max|g| is large; only
           at-risk batches run checked (:meth:`apply_checked`, which rolls them back and
           refuses the step with :class:`NonFiniteUpdateError` if a result is not finite),
           the others as under ``"ignore"``: the default float32 step costs no extra pass.
        """
        grads = [e[3] for e in entries]
        bounds = max_abs(grads)
        if bounds is None:
            refuse(opt, lambda: NonFiniteGradientError(nonfinite_message(opt, entries)))
            return
        saved = [tr.state_dict() for tr in opt.grad_transforms]
        if saved:
            grads = transformed(opt, entries, grads)
            bounds = max_abs(grads)
            if bounds is None:
                restore_transforms(opt, saved)
                refuse(opt, lambda: NonFiniteUpdateError(transform_message(opt, entries, grads)))
                return
        fresh: list[Tensor] = []
        safe, risky = [], []
        for batch in self.batches(opt, entries, grads, fresh):
            (risky if self.at_risk(opt, batch, bounds) else safe).append(batch)
        culprit = self.apply_checked(opt, risky) if risky else None
        if culprit is not None:
            for p in fresh:  # lazily created state: as if the step never began
                del opt.state[p]
            restore_transforms(opt, saved)
            refuse(opt, lambda: NonFiniteUpdateError(update_message(opt, entries, culprit)))
            return
        for batch in safe:
            self.apply(opt, batch)

    @staticmethod
    def at_risk(opt: Optimizer, batch: Batch, bounds: dict[tuple[Any, Any], float]) -> bool:
        """Whether the update of ``batch`` might overflow, judged from max|g| (``bounds``, per
        (device, real dtype)) times the group's hyperparameter scale, against
        :func:`~ravine.optim.guard.overflow_limit` of the dtype. Always true for float16."""
        p = batch.params[0]
        dtype = p.dtype.to_real()
        scale = hyperparameter_scale(opt.param_groups[batch.group_index], opt._config_keys())
        return bounds[(p.device, dtype)] * scale > overflow_limit(dtype)

    def apply_checked(self, opt: Optimizer, batches: list[Batch]) -> Tensor | None:
        """Apply ``batches`` and roll them back if a written value is not finite; returns the
        first parameter whose update (parameter or state) was not finite, None if all went in.

        What the update writes (parameters and state) is copied first, the update runs in
        place, every written tensor is checked (one reduction per dtype), and the copies go
        back if one holds NaN or Inf. This rather than updating clones and copying them back:
        the usual outcome, a finite step, then costs no copy back. Nothing else sees the
        tensors in between (the step holds them for the whole call; not for Hogwild! style
        concurrent readers).
        """
        owners, written = self.written(opt, batches)
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
                self.apply(opt, batch)
        except RuntimeError as error:
            roll_back()
            # torch refuses a Python scalar too large for the dtype (weight_decay=1e308 on
            # float32: "value cannot be converted to type float without overflow"): an overflow
            # like any other, refused by the policy rather than as torch's RuntimeError.
            if "without overflow" not in str(error):
                raise
            return batch.params[0]
        except BaseException:
            roll_back()
            raise
        if max_abs(written) is not None:
            return None
        try:
            return next(p for p, x in zip(owners, written) if not bool(torch.isfinite(x).all()))
        finally:
            roll_back()

    @staticmethod
    def written(opt: Optimizer, batches: list[Batch]) -> tuple[list[Tensor], list[Tensor]]:
        """What an update of ``batches`` writes (each parameter and its state tensors), and the
        parameter each belongs to."""
        owners: list[Tensor] = []
        written: list[Tensor] = []
        for batch in batches:
            names = opt.state_names_for(opt.param_groups[batch.group_index])
            for p, state in zip(batch.params, batch.states):
                for x in (p, *(state[n] for n in names)):
                    owners.append(p)
                    written.append(x.detach())
        return owners, written

    @outside_graph
    def deferred_step(self, opt: Optimizer, entries: Entries) -> None:
        """A guarded step on CUDA, with no host read (:func:`can_defer` says when).

        Every step runs checked on the device (:func:`~ravine.optim.guard.checked_on_device`:
        the parameters and state are copied, the update runs, and the copies go back unless
        the gradients and all that was written are finite), so no at-risk test is needed. The
        host counts the step as taken; the verdict is read when the next step, ``state_dict``
        or ``flush_guard`` comes (:class:`~ravine.optim.guard.Verdict`), which then undoes the
        step counts and lazily created state of a refused step and raises or counts it.
        """
        grads = [e[3] for e in entries]
        fresh: list[Tensor] = []
        batches = self.batches(opt, entries, grads, fresh)
        owners, written = self.written(opt, batches)
        steps = [batch.states[0]["step"] for batch in batches]
        current: list[Batch] = []

        def undo() -> None:
            for batch, step in zip(batches, steps):
                for state in batch.states:
                    state["step"] = step
            for p in fresh:  # lazily created state: as if the step never began
                del opt.state[p]

        def update() -> None:
            for batch in batches:
                current[:] = [batch]
                self.apply(opt, batch)

        try:
            flags, order = checked_on_device(grads, written, update)
        except RuntimeError as error:
            undo()
            # A Python scalar too large for the dtype: refused at once, as by apply_checked.
            if "without overflow" not in str(error):
                raise
            culprit = current[0].params[0]
            refuse(opt, lambda: NonFiniteUpdateError(update_message(opt, entries, culprit)))
            return

        def error(index: int) -> NonFiniteGradientError:
            if index < len(entries):
                gi, pi, p, _ = entries[index]
                return NonFiniteGradientError(gradient_message(opt, gi, pi, p) + DEFERRED_NOTE)
            culprit = owners[index - len(entries)]
            return NonFiniteUpdateError(update_message(opt, entries, culprit) + DEFERRED_NOTE)

        opt._pending_verdict = Verdict(flags, order, undo, error)

    # -- batches and the rule ------------------------------------------------------------------
    @staticmethod
    def batches(
        opt: Optimizer, entries: Entries, grads: list[Tensor], fresh: list[Tensor] | None = None
    ) -> list[Batch]:
        """Group the step's parameters into batches, creating missing state (those parameters
        are appended to ``fresh``)."""
        batches: dict[tuple[Any, ...], Batch] = {}
        for (gi, _, p, _), g in zip(entries, grads):
            group = opt.param_groups[gi]
            state = opt.state[p]
            if not state:
                state["step"] = 0
                if p.is_complex():  # initialise on the real view so values fill both parts
                    init = opt.init_state(torch.view_as_real(p), group)
                    state.update({k: torch.view_as_complex(v) for k, v in init.items()})
                else:
                    state.update(opt.init_state(p, group))
                if fresh is not None:
                    fresh.append(p)
            if g.is_sparse:
                batches[(gi, id(p))] = Batch(gi, [p], [g], [state], sparse=True)
                continue
            key = (gi, p.device, p.dtype, state["step"])
            batch = batches.get(key)
            if batch is None:
                batch = batches[key] = Batch(gi, [], [], [], sparse=False)
            batch.params.append(p)
            batch.grads.append(g)
            batch.states.append(state)
        return list(batches.values())

    def apply(self, opt: Optimizer, batch: Batch) -> None:
        """One update of ``batch``; the step counts move only once it went through."""
        t = batch.states[0]["step"] + 1
        self._update_batch(opt, batch, t)
        for state in batch.states:
            state["step"] = t

    def _update_batch(self, opt: Optimizer, batch: Batch, t: Any) -> None:
        group = opt.param_groups[batch.group_index]
        names = opt.state_names_for(group)
        hyper = {k: group[k] for k in opt._update_keys()}
        weight_decay = group.get("weight_decay", 0)

        if batch.sparse:
            if opt.update_sparse is None:
                raise RuntimeError(
                    f"{type(opt).__name__} does not support sparse gradients (parameter group "
                    f"{batch.group_index}); use a dense gradient or ravine.SGD / ravine.Adagrad"
                )
            if weight_decay != 0:
                raise RuntimeError(
                    f"{type(opt).__name__}: weight_decay is not supported with sparse gradients"
                )
            p, g, state = batch.params[0], batch.grads[0], batch.states[0]
            p_tl, g_tl = TL([p], foreach=False), TL([g], foreach=False)
            if group["maximize"]:
                g_tl = g_tl.neg()
            states = [TL([state[n]], foreach=False) for n in names]
            opt.update_sparse(p_tl, g_tl, *states, t=t, **hyper)
            return

        params, grads = batch.params, batch.grads
        state_lists = [[s[n] for s in batch.states] for n in names]
        if params[0].is_complex():
            params = [torch.view_as_real(x) for x in params]
            grads = [torch.view_as_real(x) for x in grads]
            state_lists = [[torch.view_as_real(x) for x in lst] for lst in state_lists]

        if self.foreach:
            run(opt, params, grads, state_lists, group, t, hyper, weight_decay, foreach=True)
            return
        for i in range(len(params)):
            run(
                opt,
                params[i : i + 1],
                grads[i : i + 1],
                [lst[i : i + 1] for lst in state_lists],
                group,
                t,
                hyper,
                weight_decay,
                foreach=False,
            )


def run(
    opt: Optimizer,
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
    """The optimizer's rule body (``Optimizer._rule``) on lists of tensors."""
    decoupled = opt.weight_decay_mode == "decoupled" or bool(
        group.get("decoupled_weight_decay", False)
    )
    opt._rule(
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


# -- gradient transforms and refused steps (every engine) ---------------------------------------
def transformed(opt: Optimizer, entries: Entries, grads: list[Tensor]) -> list[Tensor]:
    for transform in opt.grad_transforms:
        grads = transform([e[2] for e in entries], grads)
    return grads


def restore_transforms(opt: Optimizer, saved: list[dict[str, Any]]) -> None:
    """Put the transforms' state back (a refused step must not advance, e.g., the noise)."""
    for transform, state in zip(opt.grad_transforms, saved):
        transform.load_state_dict(state)


def refuse(opt: Optimizer, error: Callable[[], NonFiniteGradientError]) -> None:
    """A refused step, nothing written: counted under "skip", raised under "raise"."""
    if opt.nonfinite == "skip":
        opt.skipped_steps += 1
        return
    raise error()


def can_defer(opt: Optimizer, entries: Entries) -> bool:
    """Whether the guard can decide this step on the device (EagerEngine.deferred_step): all
    gradients dense and on one CUDA device, and no gradient transforms (their state lives on
    the host). Otherwise the verdict is read at once."""
    device = entries[0][3].device
    return (
        deferred(device)
        and not opt.grad_transforms
        and all(g.device == device and not g.is_sparse for *_, g in entries)
    )


@outside_graph
def resolve(opt: Optimizer) -> None:
    """Read the verdict of the last deferred guarded step, if the host has not yet: a refused
    step has its bookkeeping undone and is counted (``"skip"``) or raised (``"raise"``)."""
    verdict = opt.__dict__.pop("_pending_verdict", None)
    if verdict is None:
        return
    error = verdict.failure()
    if error is not None:
        opt.late_refusals = (
            getattr(opt, "late_refusals", 0) + 1
        )  # a wrapper that counted the step takes it back (Lookahead)
        refuse(opt, lambda: error)


def gradient_message(opt: Optimizer, gi: int, pi: int, p: Tensor) -> str:
    step = int(opt.state.get(p, {}).get("step", 0)) + 1
    return (
        f"non-finite gradient (NaN or Inf) in parameter group {gi}, parameter {pi} "
        f"(shape {tuple(p.shape)}) at step {step}; no parameter or state was updated. "
        "Pass nonfinite='skip' to skip such steps."
    )


def nonfinite_message(opt: Optimizer, entries: Entries) -> str:
    for gi, pi, p, g in entries:
        values = g.coalesce().values() if g.is_sparse else g
        if not bool(torch.isfinite(values).all()):
            return gradient_message(opt, gi, pi, p)
    return "non-finite gradient"  # pragma: no cover - max_abs said otherwise


def transform_message(opt: Optimizer, entries: Entries, grads: Sequence[Tensor]) -> str:
    for (_, _, p, _), g in zip(entries, grads):
        values = g.coalesce().values() if g.is_sparse else g
        if not bool(torch.isfinite(values).all()):
            return update_message(opt, entries, p, "the gradient transforms made")
    return "non-finite transformed gradient"  # pragma: no cover - max_abs said otherwise


def update_message(
    opt: Optimizer, entries: Entries, culprit: Tensor, what: str = "the update would write"
) -> str:
    gi, pi = next((gi, pi) for gi, pi, p, _ in entries if p is culprit)
    step = int(opt.state.get(culprit, {}).get("step", 0)) + 1
    return (
        f"non-finite update: {what} NaN or Inf from finite gradients (an overflow in "
        f"{culprit.dtype}, or a division by a state or eps that is 0 in it?) in parameter "
        f"group {gi}, parameter {pi} (shape {tuple(culprit.shape)}) or its state at step "
        f"{step}; no parameter or state was updated. Pass nonfinite='skip' to skip such steps."
    )
