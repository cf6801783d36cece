"""The non-finite guard's errors and its cheap test: which steps may overflow.

Shared by the engines (:mod:`ravine.optim.engines`, :mod:`ravine.optim.compiled`) and re-exported
by :mod:`ravine.optim.base`; imports no other module of ``ravine.optim``.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor


class NonFiniteGradientError(FloatingPointError):
    """A gradient held NaN or Inf; raised before any parameter or state was written."""


class NonFiniteUpdateError(NonFiniteGradientError):
    """Finite gradients whose update would write NaN or Inf (e.g. a float16 overflow).

    Raised under ``nonfinite="raise"`` before any parameter or state was written; under
    ``"skip"`` such a step is skipped and counted in ``skipped_steps``, as a non-finite gradient.
    """


# -- the update guard's cheap test (see EagerEngine.guarded_step) ---------------------------------
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
    betas included): how much a hyperparameter (a large lr or weight decay) may scale g.

    Runs on every guarded step: plain floats, ints and tuples of them (nearly every group) are
    read by their exact type first, since ``isinstance(x, Tensor)`` goes through torch's
    metaclass (this function was the largest item in a profile of 2-element Adam steps, a
    fifth of the step); anything else, numpy and 0-d tensor values included, takes the
    general checks.
    """
    scale = 1.0
    todo = [group.get(k) for k in keys]
    while todo:
        x = todo.pop()
        kind = type(x)
        if kind is float or kind is int:
            scale = max(scale, abs(x))
        elif x is None or kind is bool or kind is str:
            continue
        elif isinstance(x, (tuple, list)):
            todo.extend(x)
        elif isinstance(x, Tensor) and x.numel() == 1:
            scale = max(scale, abs(float(x)))
        elif isinstance(x, (int, float)) and not isinstance(x, bool):
            scale = max(scale, abs(x))
    return scale


#: Up to this many elements in all, CPU tensors' max|x| is read in one host copy each
#: (``tolist``) and taken in Python: for the 2-element points of ``ravine.viz`` the reductions'
#: per-op dispatch (aminmax, stack, max, item: four ops a step) cost more than the data.
SMALL_NUMEL = 64


def max_abs(tensors: Iterable[Tensor]) -> dict[tuple[torch.device, torch.dtype], float] | None:
    """max|x| over ``tensors`` per (device, real dtype), or None if any holds NaN or Inf.

    One pass over the tensors and one sync per (device, dtype): ``torch._foreach_norm(inf)``
    (one fused launch on accelerators), ``torch.aminmax`` per tensor on CPU, where it is 4-7
    times faster than the inf-norm (10M floats: 16 vs 69 ms, benchmarks/step_speed.py's
    machine). Sparse tensors count by their (coalesced) values, complex ones by their real view.
    A few elements on the CPU are read in one host copy instead (:data:`SMALL_NUMEL`).
    """
    tensors = list(tensors)
    handled, small = _small_max_abs(tensors)
    if handled:
        return small
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


def _small_max_abs(
    tensors: list[Tensor],
) -> tuple[bool, dict[tuple[torch.device, torch.dtype], float] | None]:
    """:func:`max_abs` of dense real CPU tensors with at most :data:`SMALL_NUMEL` elements in
    all, read through ``tolist``: (True, its result), or (False, None) where the general path
    must run (other devices or layouts, complex tensors, more elements)."""
    total = 0
    for x in tensors:
        if x.layout != torch.strided or x.is_complex() or x.device.type != "cpu":
            return False, None
        total += x.numel()
        if total > SMALL_NUMEL:
            return False, None
    bounds: dict[tuple[torch.device, torch.dtype], float] = {}
    for x in tensors:
        kind = (x.device, x.dtype)
        values = (x if x.dim() == 1 else x.reshape(-1)).tolist()
        if not all(math.isfinite(v) for v in values):  # NaN or Inf anywhere refuses the step
            return True, None
        bounds[kind] = max([bounds.get(kind, 0.0), *(abs(v) for v in values)])
    return True, bounds


# -- the guard on CUDA: decided on the device, read by the host one step later --------------------
_F = TypeVar("_F", bound=Callable[..., Any])


def outside_graph(method: _F) -> _F:
    """Run ``method`` eagerly when dynamo traces its caller (a torch.compile'd training step).

    The flat-buffer bookkeeping of impl="compiled" (storage use counts, ``p.data = view``, our
    own compiled kernels) cannot go into a traced graph: dynamo refuses ``maybe_mark_dynamic``
    and storage internals; nor can the guard's pinned copies, events and host reads on CUDA.
    Under tracing the call becomes a graph break and the step runs as it does eagerly; outside
    tracing this costs one flag check.
    """
    eager: Callable[..., Any] | None = None

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal eager
        # Nothing traces before torch._dynamo is imported; importing it for the decorator
        # (torch._dynamo.disable) cost `import ravine` about a second, so it waits until then.
        if "torch._dynamo" not in sys.modules:
            return method(*args, **kwargs)
        if eager is None:
            eager = torch._dynamo.disable(method, recursive=True)
        if torch.compiler.is_compiling():
            return eager(*args, **kwargs)
        return method(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


# Tests set this to run the CUDA path on CPU (``bool``/``item`` calls can then be counted).
DEFER_ON_CPU = False


def deferred(device: torch.device) -> bool:
    """Whether the guard decides a step on ``device`` itself and the host reads the verdict
    later (CUDA; other accelerators read it at once, as the CPU does)."""
    return device.type == "cuda" or (DEFER_ON_CPU and device.type == "cpu")


def finite_flags(tensors: Sequence[Tensor]) -> tuple[Tensor, list[int]]:
    """Whether each tensor is finite, as one bool vector on their device, and the index in
    ``tensors`` of each of its entries (they are grouped by dtype): one max-norm kernel per
    dtype, no host read."""
    by_dtype: dict[torch.dtype, list[int]] = {}
    reals = [torch.view_as_real(x) if x.is_complex() else x for x in tensors]
    for i, x in enumerate(reals):
        by_dtype.setdefault(x.dtype, []).append(i)
    parts, order = [], []
    for indices in by_dtype.values():
        norms = torch._foreach_norm([reals[i] for i in indices], math.inf)
        parts.append(torch.isfinite(torch.stack(norms)))
        order.extend(indices)
    return torch.cat(parts), order


def checked_on_device(
    grads: Sequence[Tensor], written: Sequence[Tensor], update: Callable[[], None]
) -> tuple[Tensor, list[int]]:
    """Run ``update`` (which writes ``written`` in place) so that it writes nothing unless the
    gradients and everything it wrote are finite, deciding on the device: the written tensors
    are copied, the update runs, and ``torch.where`` puts the copies back if a flag is false.

    Returns the flags (gradients first, then the written tensors; see :func:`finite_flags`)
    and their order. No host read: the verdict stays on the device until :class:`Verdict`
    reads it. If ``update`` raises, the copies go back at once and the error propagates.
    """
    g_flags, g_order = finite_flags(grads)
    saved = [torch.empty_like(x) for x in written]
    torch._foreach_copy_(saved, written)
    try:
        update()
    except BaseException:
        torch._foreach_copy_(list(written), saved)
        raise
    w_flags, w_order = finite_flags(written)
    flags = torch.cat([g_flags, w_flags])
    ok = flags.all()
    for x, s in zip(written, saved):
        torch.where(ok, x, s, out=x)
    return flags, g_order + [len(grads) + i for i in w_order]


class Verdict:
    """A guarded step whose outcome the host has not read yet (CUDA).

    ``flags`` (a device bool vector, see :func:`checked_on_device`) is copied to pinned host
    memory without waiting and an event is recorded after the copy; :meth:`failure` waits for
    that event only, i.e. until the device has finished that step, not for work queued after it
    (the next forward and backward pass), and reads the copy. ``undo`` puts the host's
    bookkeeping of the step back (step counts, lazily created state); ``error(index)`` builds
    the error for the first non-finite tensor (an index into gradients, then written tensors).
    """

    def __init__(
        self,
        flags: Tensor,
        order: list[int],
        undo: Callable[[], None],
        error: Callable[[int], NonFiniteGradientError],
    ) -> None:
        self.order, self.undo, self.error = order, undo, error
        self.event: Any = None
        if flags.device.type == "cuda":
            self.flags = torch.empty(flags.shape, dtype=flags.dtype, pin_memory=True)
            self.flags.copy_(flags, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        else:
            self.flags = flags

    def failure(self) -> NonFiniteGradientError | None:
        """The error of the step if it was refused (its bookkeeping then undone), else None."""
        if self.event is not None:
            self.event.synchronize()
        finite = self.flags.numpy()  # host memory: no device read
        if finite.all():
            return None
        self.undo()
        return self.error(self.order[int(finite.argmin())])


DEFERRED_NOTE = (
    " (on cuda the guard decides on the device and the host reads its verdict when the next "
    "step, state_dict() or flush_guard() comes: this is reported late, and nothing was "
    "written by this step)"
)
