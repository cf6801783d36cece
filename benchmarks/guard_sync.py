"""Does the non-finite guard make the host wait for the GPU at every step? ravine vs torch.optim.

    .venv/bin/python benchmarks/guard_sync.py                    # CUDA if there is one, else CPU
    .venv/bin/python benchmarks/guard_sync.py --optimizers adam,sgd --layout 100x100k --steps 50

On CUDA, for each optimizer and impl, with nonfinite="ignore" and "skip" (the guard; "raise"
costs the same), and for torch.optim's fastest path (fused or foreach), it runs --steps steps,
each after a queued "backward pass" (a matmul chain that keeps the GPU busy for about
--busy-ms), and prints:

- syncs/step: the synchronizing CUDA calls per step that ``torch.cuda.set_sync_debug_mode("warn")``
  reports (0 expected for ravine under "skip"; a NaN gradient in one step adds none either);
- ms/step: the wall time per step of the whole loop (the queued work included). A step that
  syncs makes the host wait for the GPU each time, so the host cannot queue the next pass
  ahead: ms/step then exceeds the GPU's own time per step;
- x ignore: ms/step under "skip" over "ignore" (the guard's price).

Without CUDA it runs the CUDA code path on CPU (``ravine.optim.guard.DEFER_ON_CPU``) and counts,
instead of syncs, the Tensor methods that read a value back (item, tolist, bool, float, int)
per step; the times are then only the CPU's. Timings on a shared machine are noisy: say so when
quoting them.
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch

import ravine
from ravine.optim import guard

TORCH_EQUIVALENT = {
    "sgd": ("SGD", {"lr": 1e-3, "momentum": 0.9}),
    "adam": ("Adam", {"lr": 1e-3}),
    "adamw": ("AdamW", {"lr": 1e-3}),
    "rmsprop": ("RMSprop", {"lr": 1e-3}),
    "adagrad": ("Adagrad", {"lr": 1e-2}),
}
RAVINE_HP = {"sgd": {"lr": 1e-3, "momentum": 0.9}}
HOST_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__")


def _params(layout: str, device: str) -> list[torch.nn.Parameter]:
    count, size = (int(x.replace("k", "000").replace("M", "000000")) for x in layout.split("x"))
    gen = torch.Generator().manual_seed(0)
    params = []
    for _ in range(count):
        p = torch.nn.Parameter(torch.randn(size, generator=gen).to(device))
        p.grad = torch.randn(size, generator=gen).to(device) * 1e-2
        params.append(p)
    return params


class HostReads:
    """Counts the Tensor methods that read a value back while active (the CPU stand-in)."""

    def __init__(self) -> None:
        self.count = 0
        self.saved: dict[str, Any] = {}

    def __enter__(self) -> HostReads:
        for name in HOST_READS:
            method = getattr(torch.Tensor, name)
            self.saved[name] = method

            def counted(*args: Any, _method: Any = method, **kwargs: Any) -> Any:
                self.count += 1
                return _method(*args, **kwargs)

            setattr(torch.Tensor, name, counted)
        return self

    def __exit__(self, *exc: Any) -> None:
        for name, method in self.saved.items():
            setattr(torch.Tensor, name, method)


def _run(
    make: Callable[[list[torch.nn.Parameter]], Any],
    args: argparse.Namespace,
    busy: Callable[[], None],
) -> tuple[float, float]:
    """(syncs or host reads per step, ms per step) over args.steps steps."""
    params = _params(args.layout, args.device)
    opt = make(params)
    nan_at = args.steps // 2 if args.nan_step else None

    def one(i: int) -> None:
        busy()
        for p in params:  # as a backward pass writes them
            p.grad.mul_(1)
        if i == nan_at:
            params[0].grad[0] = math.nan
        opt.step()
        if i == nan_at:
            params[0].grad[0] = 0.0

    for i in range(args.warmup):
        one(-1 - i)
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for i in range(args.steps):
                one(i)
        torch.cuda.set_sync_debug_mode("default")
        reads = sum("synchroniz" in str(w.message) for w in caught)
    else:
        with HostReads() as counter:
            for i in range(args.steps):
                one(i)
        reads = counter.count
    flush = getattr(opt, "flush_guard", None)
    if flush is not None:
        flush()
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(args.steps):
        one(args.steps + i)
    if flush is not None:
        flush()
    if cuda:
        torch.cuda.synchronize()
    return reads / args.steps, (time.perf_counter() - start) / args.steps * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--optimizers", default="adam,sgd", help="comma-separated names")
    parser.add_argument("--impls", default="foreach,compiled")
    parser.add_argument("--layout", default="100x100k", help="COUNTxSIZE float32 tensors")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--busy-ms", type=float, default=5.0, help="queued GPU work per step")
    parser.add_argument("--nan-step", action="store_true", help="one NaN gradient mid-run")
    args = parser.parse_args()

    if args.device.startswith("cuda"):
        a = torch.randn(2048, 2048, device=args.device)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(10):
            a @ a
        torch.cuda.synchronize()
        per_matmul = (time.perf_counter() - start) / 10 * 1e3
        repeats = max(1, round(args.busy_ms / per_matmul))

        def busy() -> None:
            for _ in range(repeats):
                a @ a

        what = "syncs/step"
    else:
        guard.DEFER_ON_CPU = True

        def busy() -> None:
            pass

        what = "reads/step"
    print(
        f"# guard_sync: torch {torch.__version__}, {args.device}, layout {args.layout}, "
        f"{args.steps} steps, ~{args.busy_ms} ms of queued work per step"
        + (", one NaN gradient" if args.nan_step else "")
    )
    print(
        f"{'optimizer':<10} {'impl':<9} {'nonfinite':<9} {what:>10} {'ms/step':>9} {'x ignore':>9}"
    )
    for name in args.optimizers.split(","):
        for impl in args.impls.split(","):
            times = {}
            for policy in ("ignore", "skip"):
                hp = {**RAVINE_HP.get(name, {}), "impl": impl, "nonfinite": policy}
                reads, ms = _run(
                    lambda ps, name=name, hp=hp: ravine.create(name, ps, **hp), args, busy
                )
                times[policy] = ms
                ratio = f"{ms / times['ignore']:.2f}" if policy == "skip" else ""
                print(f"{name:<10} {impl:<9} {policy:<9} {reads:>10.1f} {ms:>9.2f} {ratio:>9}")
        if name in TORCH_EQUIVALENT:
            cls_name, hp = TORCH_EQUIVALENT[name]
            cls = getattr(torch.optim, cls_name)
            fused = args.device.startswith("cuda") and cls_name in ("Adam", "AdamW", "SGD")
            options = {"fused": True} if fused else {"foreach": True}
            reads, ms = _run(
                lambda ps, cls=cls, hp=hp, options=options: cls(ps, **hp, **options), args, busy
            )
            path = "fused" if fused else "foreach"
            print(f"{name:<10} {'torch-' + path:<9} {'-':<9} {reads:>10.1f} {ms:>9.2f} {'':>9}")


if __name__ == "__main__":
    main()
