"""``impl="compiled"``: every rule's own ``update`` through torch.compile, over flat buffers.

The fast path of DESIGN.md's performance principles, for every optimizer at once and with no code
per rule:

* **Flat storage.** On the first step the parameters of each (group, device, dtype, step count)
  batch are copied into one contiguous buffer, and each parameter's ``.data`` becomes a view into
  it; the same is done for the gradients (each ``.grad`` a view into one flat gradient buffer, so
  ``backward`` accumulates straight into it) and for every state tensor (``opt.state[p]["m"]`` is
  a view into the flat ``m``). An update then touches three to five big tensors, whatever the
  number of parameters: one kernel, constant Python work per step.
* **One compiled kernel per configuration.** The rule's ``update`` (via ``Optimizer._rule``,
  which adds ``maximize`` and weight decay exactly as the other impls do) is traced over
  one-tensor TLs by ``torch.compile(fullgraph=True)``; inductor fuses it into a single pass over
  memory. Numeric hyperparameters and the step count enter as the elements of one float64 tensor
  (0-d tensors inside the rule, so scalar algebra such as ``1 - beta2**t`` runs in double
  precision, as the eager impls compute it in Python), and the flat length is dynamic: a
  learning-rate schedule, the step count moving or a model of another size never recompiles.
  Booleans, ``None``, strings and the names in ``static_hyperparameters`` are compile-time
  constants, on which the rule may branch. Kernels are cached by (class, state names, structure
  of the hyperparameters, maximize / weight-decay flavour, dtype, device type, non-finite
  guard) and shared by every optimizer instance.

  What a rule must do to be traceable: no Python branch on a hyperparameter's value or on ``t``
  (declare the hyperparameter static, branch on the state it owns as in ``if buf:``, or write it
  branch-free), no ``math.*`` on scalars (``x ** 0.5``, not ``math.sqrt(x)``), and scalar
  arithmetic on TLs as methods (``v.add(eps)``) rather than operators (``v + eps``): dynamo
  cannot trace an operator between a user-defined object and a tensor.
* **Constant Python work per step.** Whether every parameter still holds its views is read
  from a few numbers, not from the parameters: the use counts of the flat storages (a
  parameter whose ``.data`` or ``.grad`` is replaced drops its view) and the version counter of
  the gradient buffer (``backward`` accumulating into the views moves it); any other sign sends
  the step through a per-parameter check (``FlatEngine._current``). After dynamo has run a
  kernel on a flat group once (checking its guards), later steps call the compiled graph
  directly; the step count and the kernel's scalars live in Python arrays that back CPU
  tensors, and ``step()`` only enters torch's ``record_function`` when a profiler or a step hook
  wants it. A step after a backward pass finds the optimizer's code and objects out of the
  caches, where each call into torch costs tens of microseconds: on 1000 tensors of 1k floats
  the fixed cost went from ~1 ms to under 0.1 ms this way. The direct call can be switched
  off (every step through dynamo and its guards, for debugging or to rule it out) with the
  environment variable ``RAVINE_COMPILED_DIRECT=0`` before import, or
  ``ravine.optim.compiled.DIRECT_CALL = False`` at run time (flat groups that already call
  directly keep doing so; new optimizers and rebuilt layouts take the switch).
* **Inside a torch.compile'd training step** (``opt.step()`` traced by dynamo), the flat-buffer
  bookkeeping runs outside the traced graph (a graph break, see :func:`_outside_graph`), as it
  would eagerly.
* **The non-finite guard inside the kernel.** With ``nonfinite="raise"``/``"skip"`` and one flat
  group, the kernel first reduces over g (finite, and max|g| below the overflow limit of
  :func:`ravine.optim.base.overflow_limit` scaled by the hyperparameters) and then writes the
  update only if that holds: no extra pass, no call back into Python. When it does not hold,
  a non-finite gradient refuses the step; a finite one is *at risk* of an overflow and the step
  runs checked (``FlatEngine._checked``: the buffers are copied, the update runs, every written
  value is checked and the copies go back if one is NaN or Inf, refusing the step with
  ``NonFiniteUpdateError``). float16 groups (range 65504) always run checked. With several
  groups (or gradient transforms, or parameters outside the flat buffers) the gradients of all
  of them are bounded first and the at-risk ones checked together, so that a refused step
  writes nothing anywhere.
* **Never a crash.** If compiling fails (a rule the tracer cannot handle, no C compiler...), a
  warning says so once per configuration and the same update runs eagerly with foreach ops on
  the flat buffers.

Semantics that differ from the non-flat impls, by design:

* ``zero_grad()`` zeroes the flat gradient buffer in place (``set_to_none`` is ignored for flat
  parameters) so the views survive; a parameter whose ``.grad`` is a zero view takes a step with a
  zero gradient, as in torch with ``set_to_none=False``. ``model.zero_grad()`` still works: the
  fresh gradients are copied back into the flat buffer on the next step (one extra copy and a
  per-parameter check; counted in ``FlatEngine.resyncs``).
* ``opt.state[p]["step"]`` is one 0-d int64 tensor shared by the group's parameters (torch.optim
  keeps tensor steps too); ``state_dict()`` holds plain ints, as the other impls write.
* Replacing a parameter's ``.data`` (``model.to(...)``, ``p.data = ...``) after the first step
  detaches it from the flat buffer: it is detected and the buffers are rebuilt.
* Parameters in shared memory (``share_memory_()``, as Hogwild! uses) keep their storage and are
  updated by the foreach path, as are sparse and complex ones.

``state_dict()`` stays per parameter (views into the flat state, with the usual integer ``step``),
so checkpoints move freely between ``impl="compiled"`` and the other impls.
"""

from __future__ import annotations

import array
import math
import operator
import os
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.multiprocessing.reductions import StorageWeakRef

from ravine.optim.engines import (
    EagerEngine,
    FlatLayout,
    nonfinite_message,
    refuse,
    restore_transforms,
    run,
    update_message,
)
from ravine.optim.guard import (
    DEFERRED_NOTE,
    NonFiniteGradientError,
    NonFiniteUpdateError,
    Verdict,
    checked_on_device,
    deferred,
    hyperparameter_scale,
    max_abs,
    overflow_limit,
)
from ravine.optim.guard import outside_graph as _outside_graph
from ravine.tensorlist import TL

if TYPE_CHECKING:
    from ravine.optim.base import Optimizer

    # A refused step: builds the error to raise (only under nonfinite="raise").
    Refusal = Callable[[], NonFiniteGradientError]

# Parameter views start on 64-byte boundaries so the model's own kernels (matmul, conv) see
# aligned data; the padding is zero in every buffer and costs under 64 bytes per parameter.
_ALIGN_BYTES = 64

# A hyperparameter's place in the compiled call: ("static", value) is a compile-time constant,
# ("slot", i) is element i of the scalars tensor, ("seq", type, specs) rebuilds a tuple/list.
Spec = tuple[Any, ...]


# -- compiled kernels, shared by every optimizer instance ---------------------------------------
@dataclass
class Kernel:
    """One compiled update for one configuration, with what compiling it cost."""

    key: tuple[Any, ...]
    fn: Callable[..., None] | None
    compiles: int = 0
    compile_seconds: float = 0.0
    failed: str | None = None
    # Set while a call goes through dynamo: the tensors of that call, then the compiled graph
    # that ran and how to build its arguments from them (see ``_compile``).
    calling: tuple[Tensor, ...] = ()
    last: tuple[Callable[..., Any], tuple[int, ...]] | None = None


_KERNELS: dict[tuple[Any, ...], Kernel] = {}


def direct_call_from(environ: Mapping[str, str]) -> bool:
    """``RAVINE_COMPILED_DIRECT``: "0" switches the direct call of compiled graphs off."""
    return environ.get("RAVINE_COMPILED_DIRECT", "1").strip() != "0"


# Whether steps after the first call the compiled graph directly (see ``_run_kernel``).
DIRECT_CALL = direct_call_from(os.environ)


def kernels() -> dict[tuple[Any, ...], Kernel]:
    """The kernel cache (configuration key -> :class:`Kernel`), for benchmarks and tests."""
    return _KERNELS


def total_compiles() -> int:
    """Graphs compiled so far by all kernels (first compiles plus recompiles)."""
    return sum(k.compiles for k in _KERNELS.values())


def _assemble(spec: Spec, scalars: Tensor) -> Any:
    kind = spec[0]
    if kind == "static":
        return spec[1]
    if kind == "slot":
        return scalars[spec[1]]
    return spec[1](_assemble(s, scalars) for s in spec[2])


def _make_body(
    cls: type[Optimizer],
    hyper_specs: tuple[tuple[str, Spec], ...],
    maximize: bool,
    decay: str | None,
    decay_slots: tuple[int, int] | None,
    guard: bool,
    limit_slot: int | None = None,
) -> Callable[..., Any]:
    # The kernel is shared by every instance of ``cls``, so it must not see any one of them (dynamo
    # would guard on that object and recompile for the next): it runs the rule on a bare instance.
    # An update that reads instance attributes fails to trace and falls back to foreach.
    rule = object.__new__(cls)

    def run_rule(p: Tensor, g: Tensor, states: list[Tensor], scalars: Tensor) -> None:
        hyper = {name: _assemble(spec, scalars) for name, spec in hyper_specs}
        lr = weight_decay = None
        if decay_slots is not None:
            lr, weight_decay = scalars[decay_slots[0]], scalars[decay_slots[1]]
        rule._rule(
            TL([p], foreach=False),
            TL([g], foreach=False),
            [TL([s], foreach=False) for s in states],
            t=scalars[0],
            hyper=hyper,
            maximize=maximize,
            weight_decay=weight_decay,
            decoupled=decay == "decoupled",
            lr=lr,
        )

    def body(
        p: Tensor, g: Tensor, states: list[Tensor], scalars: Tensor
    ) -> tuple[Tensor, Tensor] | None:
        if not guard:
            run_rule(p, g, states, scalars)
            return None
        # The non-finite guard inside the kernel: one reduction over g (finite, and no |g|
        # above the overflow limit: any() rather than amax() so an empty buffer passes), then
        # the update computed from copies and written only where the reduction said yes
        # (inductor fuses the copies away: one pass over memory after the reduction, no call
        # back into Python between). NaN compares false, hence the separate isfinite.
        finite = torch.isfinite(g).all()
        ok = finite & ~(g.abs() > scalars[limit_slot]).any()
        new_p, new_states = p.clone(), [s.clone() for s in states]
        run_rule(new_p, g, new_states, scalars)
        p.copy_(torch.where(ok, new_p, p))
        for s, new in zip(states, new_states):
            s.copy_(torch.where(ok, new, s))
        return ok, finite

    # Dynamo keeps its cache of compiled code on the code object; configurations sharing one code
    # object would evict each other past torch's recompile limit, so each gets a fresh copy.
    body.__code__ = body.__code__.replace(co_name=f"ravine_update_{len(_KERNELS)}")
    return body


def _compile(kernel: Kernel, body: Callable[..., None]) -> Callable[..., None]:
    inductor = torch._dynamo.lookup_backend("inductor")

    def counting_backend(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Any:
        kernel.compiles += 1
        start = time.perf_counter()
        try:
            compiled = inductor(gm, example_inputs)
        finally:
            kernel.compile_seconds += time.perf_counter() - start
        plan = _argument_plan(example_inputs, kernel.calling)

        def run(*args: Any) -> Any:
            kernel.last = None if plan is None else (compiled, plan)
            return compiled(*args)

        return run

    return torch.compile(body, backend=counting_backend, fullgraph=True)


def _argument_plan(
    example_inputs: list[Any], calling: tuple[Tensor, ...]
) -> tuple[int, ...] | None:
    """How to call the compiled graph directly: for each of its inputs, the index of the tensor
    in ``calling`` (p, g, *states, scalars), or -1 for the flat length (dynamo's one symbolic
    size). None if an input is anything else; that kernel then always goes through dynamo."""
    plan = []
    for x in example_inputs:
        if isinstance(x, torch.SymInt):
            plan.append(-1)
            continue
        index = next((i for i, t in enumerate(calling) if t is x), None)
        if index is None:
            return None
        plan.append(index)
    return tuple(plan)


# -- flat buffers -------------------------------------------------------------------------------
@dataclass
class FlatGroup:
    """One (group, device, dtype, step) batch living in flat buffers."""

    group_index: int
    params: list[Tensor]
    # No reference to the parameters' state dicts: ``opt.state[p]`` holds the only one, so a
    # client replacing it (or one of its tensors) drops a view and the use counts show it.
    names: tuple[str, ...]
    p: Tensor
    g: Tensor
    state: list[Tensor]
    offsets: list[int]  # element offset of each parameter in the flat buffers
    data_ptrs: list[int]  # where each parameter's data and gradient must point
    grad_ptrs: list[int]
    state_ptrs: list[list[int]]  # where each state tensor must point, one list per name
    step: int
    # One 0-d int64 number that every ``opt.state[p]["step"]`` of the group views (one view per
    # parameter, so that a replaced entry shows in the use count), so that a step writes one
    # number, not one per parameter (state_dict() gives ints); it lives in ``step_cell``, see
    # _scalar_cells.
    step_tensor: Tensor
    step_cell: array.array
    # Handles on the storages of the flat parameters, gradients and state tensors and of the
    # step number (they keep the storages alive, so their C pointers stay valid), those
    # pointers, and the use counts when the layout was last verified.
    storages: tuple[Any, ...]
    cdatas: tuple[int, ...] = ()
    uses: tuple[int, ...] = ()
    g_version: int = -1  # the gradient buffer's version counter at the end of the last step
    # (hyperparameter values, kernel, scalar cells, scalars tensor) of the last step: reused
    # while the values stay the same, see FlatEngine._update
    config: tuple[tuple[Any, ...], Kernel, array.array, Tensor] | None = None
    scalar_dtype: torch.dtype = torch.float64  # float32 on MPS, which has no float64
    kernel: Kernel | None = None  # the kernel of the last step
    warned: set[tuple[Any, ...]] = field(default_factory=set)
    # (kernel, compiled graph, argument plan) once dynamo has run that kernel on these buffers:
    # later steps call the graph directly (see ``_run_kernel``).
    direct: tuple[Kernel, Callable[..., Any], tuple[int, ...]] | None = None

    @property
    def buffer(self) -> Tensor:
        """The flat parameter buffer ``p``, by the name that
        :class:`~ravine.optim.engines.FlatLayout` gives it."""
        return self.p

    def views(self, flat: Tensor) -> list[Tensor]:
        """Per-parameter views of a buffer laid out as this group's (``self.p``, ``self.g``)."""
        return _views(flat, self.params, self.offsets)

    def grad_views(self) -> list[Tensor]:
        """Fresh per-parameter views of the gradient buffer."""
        return self.views(self.g)

    def _uses(self) -> tuple[int, ...]:
        # One C-level map: ~0.15 us a storage (a Python helper per storage costs ~0.5 us).
        return tuple(map(torch._C._storage_Use_Count, self.cdatas))

    def record_uses(self) -> None:
        """Remember the storage use counts of a layout just built or verified."""
        self.uses = self._uses()

    def views_intact(self) -> bool:
        """Use counts as recorded: every parameter, gradient and state entry still holds its
        view (see _current)."""
        return self._uses() == self.uses

    def state_dicts(self, opt: Optimizer) -> list[dict[str, Any]]:
        """The parameters' current ``opt.state`` entries."""
        return [opt.state[p] for p in self.params]


def _flattenable(p: Tensor, grad: Tensor | None) -> bool:
    return (
        grad is not None
        and not grad.is_sparse
        and p.is_floating_point()
        and grad.dtype == p.dtype
        and grad.device == p.device
        # A parameter in shared memory (Hogwild!) must keep its storage: other processes see it.
        and not (p.device.type == "cpu" and p.is_shared())
    )


# The storages of every FlatEngine's flat parameter buffers, by data pointer, weakly (the
# parameters' views keep a storage alive after its engine is gone): a parameter viewing one of
# them is ravine's to re-flatten (a new optimizer over the parameters of an earlier one).
_PARAM_STORAGES: dict[int, StorageWeakRef] = {}


def _register_storage(flat: Tensor) -> None:
    for ptr in [k for k, ref in _PARAM_STORAGES.items() if ref.expired()]:
        del _PARAM_STORAGES[ptr]
    _PARAM_STORAGES[flat.data_ptr()] = StorageWeakRef(flat.untyped_storage())


def _owns_storage(p: Tensor) -> bool:
    """Whether ``p`` is the whole of its storage, or a view into a flat buffer of ravine's.

    A parameter that views a larger storage belongs to whoever laid that storage out (ZeRO's
    bucket views, FSDP's flat parameters, cuDNN's RNN weights): moving it into a flat buffer
    of ours would leave the owner with stale values, so it keeps its storage and is updated by
    the foreach path. So is a non-contiguous one (a flat view would change its strides).
    """
    storage = p.untyped_storage()
    ref = _PARAM_STORAGES.get(storage.data_ptr())
    if ref is not None and not ref.expired():  # alive: the storage at that address is ours
        return True
    return (
        p.is_contiguous()
        and p.storage_offset() == 0
        and storage.nbytes() == p.numel() * p.element_size()
    )


_GRAD = operator.attrgetter("grad")


def _data_ptr(t: Any) -> int | None:
    return t.data_ptr() if isinstance(t, Tensor) else None


def _views(flat: Tensor, params: list[Tensor], offsets: list[int]) -> list[Tensor]:
    return [flat[o : o + p.numel()].view(p.shape) for p, o in zip(params, offsets)]


class FlatEngine:
    """Owns the flat buffers of one optimizer and runs its compiled steps: the
    :class:`~ravine.optim.engines.Engine` of ``impl="compiled"``.

    Built with the optimizer, it flattens on the first step (the parameters may still move,
    e.g. ``model.to(device)``, between construction and training); until then it acts as the
    eager engine. What it cannot flatten goes through an eager foreach engine (``self.eager``).
    """

    def __init__(self) -> None:
        self.eager = EagerEngine(foreach=True)
        self.signature: tuple[Any, ...] | None = None  # None: not flattened yet
        self.groups: list[FlatGroup] = []
        self._layout: tuple[FlatGroup, ...] = ()
        # (group index, index in group, param) left to the regular path (no grad, sparse...)
        self.outside: list[tuple[int, int, Tensor]] = []
        self.rebuilds = 0  # full re-flattenings (first step, new params, load_state_dict...)
        self.resyncs = 0  # steps whose .grad tensors had been replaced and were copied back
        self.verifications = 0  # per-parameter checks of a flat group (see _current)
        # (ok, finite) of the last deferred guarded kernel, on the device (_deferred_update)
        self.flags: tuple[Tensor, Tensor] | None = None

    # -- layout --------------------------------------------------------------------------------
    def _signature(self, opt: Optimizer) -> tuple[Any, ...]:
        return (
            id(opt.state),
            id(opt.param_groups),
            tuple((id(g["params"]), len(g["params"])) for g in opt.param_groups),
        )

    def _build(self, opt: Optimizer) -> None:
        self.rebuilds += 1
        batches: dict[tuple[Any, ...], list[Tensor]] = {}
        self.outside = []
        for gi, group in enumerate(opt.param_groups):
            for pi, p in enumerate(group["params"]):
                if not (_flattenable(p, p.grad) and _owns_storage(p)):
                    self.outside.append((gi, pi, p))
                    continue
                state = opt.state[p]
                if not state:
                    state["step"] = 0
                    state.update(opt.init_state(p, group))
                step = int(state["step"])  # a shared step tensor of an earlier layout, or int
                batches.setdefault((gi, p.device, p.dtype, step), []).append(p)
        self.groups = [self._flatten(opt, key, params) for key, params in batches.items()]
        self._layout = tuple(self.groups)
        self.signature = self._signature(opt)

    @torch.no_grad()
    def _flatten(self, opt: Optimizer, key: tuple[Any, ...], params: list[Tensor]) -> FlatGroup:
        gi, device, dtype, step = key
        group = opt.param_groups[gi]
        names = opt.state_names_for(group)
        align = max(1, _ALIGN_BYTES // torch.empty((), dtype=dtype).element_size())
        offsets, total = [], 0
        for p in params:
            offsets.append(total)
            total += -(-p.numel() // align) * align

        def buffer(values: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
            flat = torch.zeros(total, dtype=dtype, device=device)
            views = _views(flat, params, offsets)
            torch._foreach_copy_(views, values)
            return flat, views

        states = [opt.state[p] for p in params]
        fresh: dict[int, dict[str, Tensor]] = {}

        def state_buffer(name: str) -> Tensor:
            values = []
            for i, (p, s) in enumerate(zip(params, states)):
                if name not in s:  # a flag turned on mid-run added a state tensor
                    s[name] = fresh.setdefault(i, opt.init_state(p, group))[name]
                values.append(s[name])
            flat, views = buffer(values)
            for s, v in zip(states, views):
                s[name] = v
            return flat

        state_flats = [state_buffer(name) for name in names]
        p_flat, p_views = buffer([p.detach() for p in params])
        _register_storage(p_flat)
        g_flat, g_views = buffer([p.grad for p in params])
        for p, pv, gv in zip(params, p_views, g_views):
            p.data = pv
            p.grad = gv
        for flat in (p_flat, g_flat, *state_flats):
            torch._dynamo.maybe_mark_dynamic(flat, 0)  # one kernel for every model size
        step_cell, step_tensor = _scalar_cells([step], torch.int64)
        step_tensor = step_tensor.view(())
        for s in states:
            s["step"] = step_tensor.view(())
        fg = FlatGroup(
            group_index=gi,
            params=params,
            names=names,
            p=p_flat,
            g=g_flat,
            state=state_flats,
            offsets=offsets,
            data_ptrs=[p.data_ptr() for p in params],
            grad_ptrs=[g.data_ptr() for g in g_views],
            state_ptrs=[[s[name].data_ptr() for s in states] for name in names],
            step=step,
            step_tensor=step_tensor,
            step_cell=step_cell,
            storages=tuple(
                t.untyped_storage() for t in (p_flat, g_flat, *state_flats, step_tensor)
            ),
        )
        del p_views, g_views, gv, pv  # the parameters and their state hold the only views
        if device.type == "mps":
            fg.scalar_dtype = torch.float32
        # A storage's use count: how many tensors (plus storage handles) share it; each view
        # holds one.
        fg.cdatas = tuple(storage._cdata for storage in fg.storages)
        fg.record_uses()
        return fg

    def _current(self, opt: Optimizer) -> bool:
        """Whether the flat layout still describes the optimizer, in constant time per group.

        A parameter whose ``.data`` is replaced (``model.to``, ``p.data = ...``) or whose
        ``.grad`` is replaced or dropped (``model.zero_grad()``, ``p.grad = None``) stops holding
        a view of the flat buffer, which lowers that buffer's storage use count; and if the
        gradients were not written in place since the last step (fresh tensors from
        ``backward`` while the old views are kept alive elsewhere), the gradient buffer's
        version counter has not moved. Either sign, or any other change of the use counts
        (another view of a buffer held somewhere), triggers the per-parameter check of
        :meth:`_verify`, which copies fresh gradients back into the buffer or asks for a
        rebuild. What this cannot see: a parameter leaving the buffer while exactly as many
        other views of it appear and some other gradient is written in place; call
        ``opt.check_layout()`` (:meth:`verify`) after such surgery.

        The state is watched the same way: each ``opt.state[p]`` entry holds its own views of
        the flat state and step buffers (the engine keeps no reference to the dicts), so a
        client that replaces a state dict (ZeRO's ``load_state_dict``) or one of its tensors
        (``opt.state[p]["m"] = t``) lowers a use count, and the rebuild copies its values in.
        Unless the replaced dict or tensor is kept alive elsewhere (its views with it): call
        ``opt.check_layout()`` after such a replacement.
        """
        if self._signature(opt) != self.signature:
            return False
        for fg in self.groups:
            if fg.names != opt.state_names_for(opt.param_groups[fg.group_index]):
                return False
            suspect = not fg.views_intact() or fg.g._version == fg.g_version
            if suspect and not self._verify(opt, fg):
                return False
        return not any(_flattenable(p, p.grad) and _owns_storage(p) for _, _, p in self.outside)

    def _verify(self, opt: Optimizer, fg: FlatGroup) -> bool:
        """Per-parameter check of one flat group (C-level loops); False asks for a rebuild."""
        self.verifications += 1
        if list(map(Tensor.data_ptr, fg.params)) != fg.data_ptrs:
            return False
        states = fg.state_dicts(opt)
        for name, ptrs in zip(fg.names, fg.state_ptrs):
            if [_data_ptr(s.get(name)) for s in states] != ptrs:
                return False  # a state tensor was replaced: its values go into a new buffer
        step_ptr = fg.step_tensor.data_ptr()
        if any(_data_ptr(s.get("step")) != step_ptr for s in states):
            return False
        del states
        grads = list(map(_GRAD, fg.params))
        if list(map(_data_ptr, grads)) != fg.grad_ptrs:
            if any(g is None or not _flattenable(p, g) for p, g in zip(fg.params, grads)):
                return False  # a parameter lost its gradient: membership changes
            # Fresh .grad tensors (model.zero_grad() then backward): copy them into the buffer.
            views = fg.grad_views()
            torch._foreach_copy_(views, grads)
            for p, gv in zip(fg.params, views):
                p.grad = gv
            self.resyncs += 1
            del views, gv
        del grads
        fg.record_uses()
        return True

    def layout(self) -> tuple[FlatLayout, ...]:
        """The flat groups (see :class:`~ravine.optim.engines.FlatLayout`); a new tuple after
        each rebuild."""
        return self._layout

    def state_dict(self, state: dict[str, Any]) -> dict[str, Any]:
        """Steps as ints: the flat groups share one step tensor each, and checkpoints hold
        ints, as the eager engine writes them, so that they load into any impl."""
        state["state"] = {
            k: {**v, "step": int(v["step"])} if isinstance(v.get("step"), Tensor) else v
            for k, v in state["state"].items()
        }
        return state

    def check_layout(self, opt: Optimizer) -> None:
        """:meth:`verify` once flattened; nothing to check before the first step."""
        if self.signature is not None:
            self.verify(opt)

    @_outside_graph
    def verify(self, opt: Optimizer) -> None:
        """Check every parameter now (rebuilding if needed), whatever the cheap signs say."""
        if self._signature(opt) != self.signature or not all(
            self._verify(opt, fg) for fg in self.groups
        ):
            self._build(opt)

    # -- step ----------------------------------------------------------------------------------
    @_outside_graph
    def step(self, opt: Optimizer) -> None:
        """One step of ``opt``: flat groups through their kernels, the rest through foreach.

        Runs under ``Optimizer.step``'s ``torch.no_grad()``.
        """
        if not self._current(opt):
            self._build(opt)
        guard = opt.nonfinite != "ignore"
        if not self.outside and not opt.grad_transforms and (not guard or len(self.groups) == 1):
            # The common case, in as little Python as possible; with one flat group the
            # non-finite guard runs inside its kernel.
            for fg in self.groups:
                refusal = self._guarded_update(opt, fg) if guard else None
                if not guard:
                    self._update(opt, fg, fg.g)
                fg.g_version = fg.g._version
                if refusal is not None:
                    refuse(opt, refusal)
            return
        rest = [(gi, pi, p, p.grad) for gi, pi, p in self.outside if p.grad is not None]
        if guard:
            refusal = self._guarded_step(opt, rest)
            if refusal is not None:
                refuse(opt, refusal)
            return
        grads = [fg.g for fg in self.groups]
        rest_grads = [e[3] for e in rest]
        if opt.grad_transforms:
            grads, rest_grads = self._transform(opt, rest, rest_grads)
        for fg, g in zip(self.groups, grads):
            self._update(opt, fg, g)
            fg.g_version = fg.g._version
        for batch in self.eager.batches(opt, rest, rest_grads):
            self.eager.apply(opt, batch)

    def _guarded_update(self, opt: Optimizer, fg: FlatGroup) -> Refusal | None:
        """One guarded step of a lone flat group; a refusal (nothing written) or None.

        The guarded kernel writes the update if g is finite and below the overflow limit (one
        reduction over g, the guard's usual cost); otherwise a finite g runs checked. float16
        skips the guarded kernel (its limit is -inf: every step is at risk).

        On CUDA nothing is read back (:meth:`_deferred_update`).
        """
        if deferred(fg.p.device):
            return self._deferred_update(opt, fg)
        if overflow_limit(fg.p.dtype) == -math.inf:
            applied, finite = False, bool(_all_finite(fg.g))
        else:
            applied, finite = self._update(opt, fg, fg.g, guard=True)
        if applied:
            return None
        if not finite:
            return lambda: NonFiniteGradientError(nonfinite_message(opt, _entries(opt)))
        culprit, _ = self._checked(opt, [(fg, fg.g)])
        if culprit is None:
            return None
        return lambda: NonFiniteUpdateError(update_message(opt, _entries(opt), culprit))

    def _deferred_update(self, opt: Optimizer, fg: FlatGroup) -> Refusal | None:
        """:meth:`_guarded_update` deciding on the device (CUDA): the guarded kernel writes
        nothing unless g is finite and below the overflow limit, and its flags become the step's
        pending verdict (``ravine.optim.guard.Verdict``), read when the next step begins; the
        host counts the step as taken meanwhile, and the verdict undoes that if it was refused.
        Unlike the CPU path a finite g above the limit is refused, not run checked: the host
        only learns of it after the gradients are gone. float16 groups (every step at risk) run
        checked on the device instead (``checked_on_device``). Only the eager fallback of a
        kernel that failed to compile still reads its verdict at once."""
        step = fg.step
        group_index = fg.group_index

        def undo() -> None:
            fg.step = step
            fg.step_cell[0] = step

        def error(index: int) -> NonFiniteGradientError:
            where = f"parameter group {group_index} (impl='compiled', flat buffers)"
            if index == 0:
                return NonFiniteGradientError(
                    f"non-finite gradient (NaN or Inf) in {where} at step {step + 1}; no "
                    "parameter or state was updated. Pass nonfinite='skip' to skip such steps."
                    + DEFERRED_NOTE
                )
            return NonFiniteUpdateError(
                f"non-finite update: a gradient in {where} at step {step + 1} was above the "
                "overflow limit (ravine.optim.guard.overflow_limit times the hyperparameters), "
                "or the update would write NaN or Inf; no parameter or state was updated. On "
                "cuda, impl='compiled' refuses such a step instead of running it checked."
                + DEFERRED_NOTE
            )

        if overflow_limit(fg.p.dtype) == -math.inf:
            flags, order = checked_on_device(
                [fg.g], [fg.p, *fg.state], lambda: self._update(opt, fg, fg.g)
            )
            opt._pending_verdict = Verdict(flags, order, undo, error)
            return None
        self.flags = None
        applied, finite = self._update(opt, fg, fg.g, guard=True, defer=True)
        if self.flags is None:  # the eager fallback decided on the host
            if applied:
                return None
            if not finite:
                return lambda: NonFiniteGradientError(nonfinite_message(opt, _entries(opt)))
            culprit, _ = self._checked(opt, [(fg, fg.g)])
            if culprit is None:
                return None
            return lambda: NonFiniteUpdateError(update_message(opt, _entries(opt), culprit))
        ok, finite_g = self.flags
        self.flags = None
        opt._pending_verdict = Verdict(torch.stack([finite_g, ok]), [0, 1], undo, error)
        return None

    def _guarded_step(
        self, opt: Optimizer, rest: list[tuple[int, int, Tensor, Tensor]]
    ) -> Refusal | None:
        """A guarded step over several flat groups, transforms or parameters outside the flat
        buffers (see EagerEngine.guarded_step, which this mirrors): every gradient is bounded
        first, the at-risk flat groups and batches run checked together, the others after."""
        grads = [fg.g for fg in self.groups]
        rest_grads = [e[3] for e in rest]
        bounds, rest_bounds = _flat_bounds(grads), max_abs(rest_grads)
        if bounds is None or rest_bounds is None:
            return lambda: NonFiniteGradientError(nonfinite_message(opt, _entries(opt)))
        saved = [tr.state_dict() for tr in opt.grad_transforms]
        if saved:
            grads, rest_grads = self._transform(opt, rest, rest_grads)
            bounds, rest_bounds = _flat_bounds(grads), max_abs(rest_grads)
            if bounds is None or rest_bounds is None:
                restore_transforms(opt, saved)
                culprits = [_first_nonfinite(fg, [g]) for fg, g in zip(self.groups, grads)]
                culprits += [e[2] for e, g in zip(rest, rest_grads) if max_abs([g]) is None]
                culprit = next(p for p in culprits if p is not None)
                what = "the gradient transforms made"
                return lambda: NonFiniteUpdateError(
                    update_message(opt, _entries(opt), culprit, what)
                )
        risky, safe = [], []
        for fg, g, bound in zip(self.groups, grads, bounds):
            group = opt.param_groups[fg.group_index]
            scale = hyperparameter_scale(group, opt._config_keys())
            (risky if bound * scale > overflow_limit(fg.p.dtype) else safe).append((fg, g))
        fresh: list[Tensor] = []
        batches = self.eager.batches(opt, rest, rest_grads, fresh)
        risky_batches = [b for b in batches if self.eager.at_risk(opt, b, rest_bounds)]
        culprit, roll_back = self._checked(opt, risky) if risky else (None, None)
        if culprit is None and risky_batches:
            culprit = self.eager.apply_checked(opt, risky_batches)
            if culprit is not None and roll_back is not None:
                roll_back()  # the flat groups went through: undo them too
        if culprit is not None:
            for p in fresh:
                del opt.state[p]
            restore_transforms(opt, saved)
            return lambda: NonFiniteUpdateError(update_message(opt, _entries(opt), culprit))
        for fg, g in safe:
            self._update(opt, fg, g)
        for fg in self.groups:
            fg.g_version = fg.g._version
        for batch in batches:
            if not any(batch is b for b in risky_batches):
                self.eager.apply(opt, batch)
        return None

    def _checked(
        self, opt: Optimizer, pairs: list[tuple[FlatGroup, Tensor]]
    ) -> tuple[Tensor | None, Callable[[], None]]:
        """Update flat groups (with their gradients) so that a non-finite result is rolled back.

        As EagerEngine.apply_checked: the buffers are copied, the unguarded kernel updates them
        in place, each is checked (one compiled pass per buffer: eager reductions over float16
        cost several times more on CPU) and the copies go back if one holds NaN or Inf.
        Returns the first parameter whose update was not finite (None if all went in) and a
        function that rolls the groups back (for a later failure elsewhere).
        """
        written = [x for fg, _ in pairs for x in (fg.p, *fg.state)]
        saved = [torch.empty_like(x) for x in written]
        torch._foreach_copy_(saved, written)
        steps = [fg.step for fg, _ in pairs]

        def roll_back() -> None:
            torch._foreach_copy_(written, saved)
            for (fg, _), step in zip(pairs, steps):
                fg.step = step
                fg.step_cell[0] = step

        try:
            for fg, g in pairs:
                self._update(opt, fg, g)
        except BaseException:
            roll_back()
            raise
        if all(bool(_all_finite(x)) for x in written):
            return None, roll_back
        try:
            culprits = (_first_nonfinite(fg, [fg.p, *fg.state]) for fg, _ in pairs)
            culprit = next(p for p in culprits if p is not None)
        finally:
            roll_back()
        return culprit, roll_back

    def _transform(
        self, opt: Optimizer, rest: list[tuple[int, int, Tensor, Tensor]], rest_grads: list[Tensor]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Run the gradient transforms on per-parameter views, as the other impls see them."""
        params = [p for fg in self.groups for p in fg.params] + [e[2] for e in rest]
        originals = [v for fg in self.groups for v in fg.grad_views()]
        views = originals + rest_grads
        for transform in opt.grad_transforms:
            views = transform(params, views)
        flat_grads, i = [], 0
        for fg in self.groups:
            mine = views[i : i + len(fg.params)]
            if all(map(operator.is_, mine, originals[i : i + len(fg.params)])):
                flat_grads.append(fg.g)  # transformed in place
            else:
                g = torch.zeros_like(fg.g)
                torch._foreach_copy_(fg.views(g), mine)
                flat_grads.append(g)
            i += len(fg.params)
        return flat_grads, views[i:]

    def _update(
        self, opt: Optimizer, fg: FlatGroup, g: Tensor, guard: bool = False, defer: bool = False
    ) -> tuple[bool, bool]:
        """One step of a flat group; returns (applied, gradient finite). With ``guard``, a
        gradient holding NaN or Inf or above the overflow limit (at risk, see
        :meth:`_guarded_update`) leaves everything (parameters, state, step count) as it
        was and ``applied`` is False. With ``defer`` too, the guarded kernel's (ok, finite)
        flags are left on the device in ``self.flags`` unread, and the step counted as
        applied (see :meth:`_deferred_update`)."""
        group = opt.param_groups[fg.group_index]
        t = fg.step + 1
        # The hyperparameters seldom change between steps: reuse the kernel and scalars found
        # for the same values (never when a value is a tensor, which may change in place).
        values = (guard, *map(group.get, opt._config_keys()))
        config = fg.config
        if config is not None and config[0] == values:
            kernel, cells, host = config[1], config[2], config[3]
            cells[0] = t  # writes the scalars tensor: no torch call, see _scalar_cells
        else:
            key, hyper_specs, decay, decay_slots, slots = _configuration(opt, group, fg, guard)
            kernel = _KERNELS.get(key)
            if kernel is None:
                kernel = _KERNELS[key] = Kernel(key, None)
                body = _make_body(
                    type(opt),
                    hyper_specs,
                    group["maximize"],
                    decay,
                    decay_slots,
                    guard,
                    len(slots) if guard else None,  # the limit is the last slot
                )
                kernel.fn = _compile(kernel, body)
            cells, host = _scalar_cells([t, *slots], fg.scalar_dtype)
            fg.config = None if _holds_tensor(values) else (values, kernel, cells, host)
        key = kernel.key
        fg.kernel = kernel
        done = False
        if kernel.fn is not None:
            scalars = host if fg.p.device.type == "cpu" else _to_device(host, fg.p.device)
            try:
                flags = self._run_kernel(fg, kernel, (fg.p, g, *fg.state, scalars))
                done = True
            except Exception as exc:  # any compile failure falls back, loudly
                kernel.fn, kernel.failed = None, f"{type(exc).__name__}: {exc}"
            if done and guard and defer:
                self.flags = flags
            elif done and guard and not bool(flags[0]):
                cells[0] = fg.step
                return False, bool(flags[1])
        if not done:
            if guard:
                finite = bool(torch.isfinite(g).all())
                if not finite or bool((g.abs() > _limit(opt, group, fg)).any()):
                    return False, finite
            if key not in fg.warned:
                fg.warned.add(key)
                warnings.warn(
                    f"impl='compiled': could not compile {type(opt).__name__}'s update "
                    f"({(kernel.failed or '')[:300]}); running it with foreach ops instead",
                    RuntimeWarning,
                    stacklevel=4,
                )
            run(
                opt,
                [fg.p],
                [g],
                [[s] for s in fg.state],
                group,
                t,
                _hyper(opt, group),
                group.get("weight_decay", 0),
                foreach=True,
            )
        fg.step = t
        fg.step_cell[0] = t
        return True, True

    @staticmethod
    def _run_kernel(fg: FlatGroup, kernel: Kernel, tensors: tuple[Tensor, ...]) -> Any:
        """Run the kernel on (p, g, *states, scalars); its result (the (ok, finite) flags of a
        guarded kernel, else None).

        The first call of a kernel on a flat group goes through dynamo, which checks its guards
        (dtypes, devices, strides, the flat length being >= 2, global state) and compiles if it
        must. The buffers of a flat group never change, so once those guards have passed for
        them, later steps call the compiled graph straight away: dynamo's frame and guard
        evaluation cost ~15 us a call, which matters when a step's kernel takes 100 us.
        """
        direct = fg.direct
        if direct is not None and direct[0] is kernel:
            n = fg.p.numel()
            outputs = direct[1](*[tensors[i] if i >= 0 else n for i in direct[2]])
            return outputs[:2] if outputs else None  # the graph returns a list of outputs
        kernel.calling, kernel.last = tensors, None
        try:
            assert kernel.fn is not None
            result = kernel.fn(tensors[0], tensors[1], list(tensors[2:-1]), tensors[-1])
        finally:
            kernel.calling = ()
        if kernel.last is not None and DIRECT_CALL:
            fg.direct = (kernel, *kernel.last)
        return result

    # -- zero_grad -----------------------------------------------------------------------------
    @_outside_graph
    @torch.no_grad()
    def zero_grad(self, opt: Optimizer, set_to_none: bool) -> None:
        """Zero flat gradients in place (keeping the views); the others as torch.optim does
        (all of them before the first step)."""
        if self.signature is None:
            torch.optim.Optimizer.zero_grad(opt, set_to_none)
            return
        for fg in self.groups:
            if fg.views_intact():  # every .grad still a view
                fg.g.zero_()
                continue
            for p, ptr in zip(fg.params, fg.grad_ptrs):
                if p.grad is not None and p.grad.data_ptr() == ptr:
                    p.grad.zero_()
                else:
                    _zero_one(p, set_to_none)
        for _, _, p in self.outside:
            _zero_one(p, set_to_none)


def _to_device(host: Tensor, device: torch.device) -> Tensor:
    """The kernel's scalars on ``device``. On CUDA through a pinned copy, without waiting: a
    copy from pageable memory makes the host wait for the device to catch up (a sync every
    step); the pinned block is not reused before the copy has run (torch's host allocator
    records the stream), and ``host`` may change right after."""
    if device.type == "cuda":
        return host.pin_memory().to(device, non_blocking=True)
    return host.to(device)


def _isfinite_all(g: Tensor) -> Tensor:
    return torch.isfinite(g).all()


_compiled_isfinite_all: Callable[[Tensor], Tensor] | None = None


def _all_finite(g: Tensor) -> Tensor:
    """torch.isfinite(g).all() as one compiled pass over g (eager allocates a bool copy of g)."""
    global _compiled_isfinite_all
    if _compiled_isfinite_all is None:
        _compiled_isfinite_all = torch.compile(_isfinite_all, fullgraph=True)
    try:
        return _compiled_isfinite_all(g)
    except Exception:  # no compiler: the eager check is slower, never wrong
        _compiled_isfinite_all = _isfinite_all
        return _isfinite_all(g)


def _zero_one(p: Tensor, set_to_none: bool) -> None:
    if p.grad is None:
        return
    if set_to_none:
        p.grad = None
    else:
        if p.grad.grad_fn is not None:
            p.grad.detach_()
        else:
            p.grad.requires_grad_(False)
        p.grad.zero_()


def _limit(opt: Optimizer, group: dict[str, Any], fg: FlatGroup) -> float:
    """max|g| above which a step of ``fg`` is at risk of overflowing (see overflow_limit)."""
    return overflow_limit(fg.p.dtype) / hyperparameter_scale(group, opt._config_keys())


def _entries(opt: Optimizer) -> list[tuple[int, int, Tensor, Tensor]]:
    """(group index, index in group, parameter, gradient) of every parameter with a gradient,
    for the messages of a refused step."""
    return [
        (gi, pi, p, p.grad)
        for gi, group in enumerate(opt.param_groups)
        for pi, p in enumerate(group["params"])
        if p.grad is not None
    ]


def _flat_bounds(grads: list[Tensor]) -> list[float] | None:
    """max|g| of each flat gradient buffer, or None if one holds NaN or Inf (on CPU one
    torch.aminmax pass each: as fast as the compiled isfinite pass it replaces)."""
    bounds = []
    for g in grads:
        bound = max_abs([g])
        if bound is None:
            return None
        bounds.append(max(bound.values(), default=0.0))
    return bounds


def _first_nonfinite(fg: FlatGroup, flats: list[Tensor]) -> Tensor | None:
    """The first parameter of ``fg`` whose view of one of ``flats`` holds NaN or Inf."""
    views = [fg.views(flat) for flat in flats]
    for i, p in enumerate(fg.params):
        if not all(bool(torch.isfinite(v[i]).all()) for v in views):
            return p
    return None


def _hyper(opt: Optimizer, group: dict[str, Any]) -> dict[str, Any]:
    return {k: group[k] for k in opt._update_keys()}


_TYPECODES = {torch.float64: "d", torch.float32: "f", torch.int64: "q"}


def _scalar_cells(values: list[float], dtype: torch.dtype) -> tuple[array.array, Tensor]:
    """A CPU tensor over a Python array: ``cells[i] = x`` changes it without a torch call.

    A step's fixed cost is mostly calls into torch, and when the step follows a backward pass
    that pushed the optimizer's code and data out of the caches, each one costs tens of
    microseconds: the step count and the scalars of a kernel are written this way instead.
    """
    cells = array.array(_TYPECODES[dtype], values)
    return cells, torch.frombuffer(cells, dtype=dtype)


def _holds_tensor(values: Any) -> bool:
    if isinstance(values, Tensor):
        return True
    return isinstance(values, (tuple, list)) and any(map(_holds_tensor, values))


def _split(name: str, value: Any, static: bool, slots: list[float]) -> Spec:
    """Where ``value`` goes in the compiled call; numbers are appended to ``slots``."""
    if static or value is None or isinstance(value, (bool, str)):
        hash(value)  # a compile-time constant is part of the cache key
        return ("static", value)
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, (int, float)):
        slots.append(float(value))
        return ("slot", len(slots))  # element 0 of the scalars tensor is the step count
    if isinstance(value, (tuple, list)):
        return ("seq", type(value), tuple(_split(name, v, False, slots) for v in value))
    hash(value)
    return ("static", value)


def _configuration(
    opt: Optimizer, group: dict[str, Any], fg: FlatGroup, guard: bool = False
) -> tuple[tuple[Any, ...], tuple[tuple[str, Spec], ...], str | None, Any, list[float]]:
    """The kernel cache key, and this step's scalar values, for one flat group (``guard``: the
    kernel checks the gradients for NaN/Inf and for the overflow limit, the last slot, and
    writes nothing if either fails)."""
    slots: list[float] = []
    static = set(opt.static_hyperparameters)
    hyper_specs = tuple(
        (name, _split(name, group[name], name in static, slots)) for name in opt._update_keys()
    )
    weight_decay = group.get("weight_decay", 0)
    decay, decay_slots = None, None
    if weight_decay != 0:
        decoupled = opt.weight_decay_mode == "decoupled" or group.get("decoupled_weight_decay")
        decay = "decoupled" if decoupled else "l2"
        slots.extend([float(group.get("lr", 0.0)), float(weight_decay)])
        decay_slots = (len(slots) - 1, len(slots))
    if guard:
        slots.append(_limit(opt, group, fg))
    key = (
        type(opt),
        fg.names,
        hyper_specs,
        bool(group["maximize"]),
        decay,
        decay_slots,
        fg.p.dtype,
        fg.p.device.type,
        guard,
    )
    return key, hyper_specs, decay, decay_slots, slots
