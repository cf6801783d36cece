"""Speed of one optimizer step, for every ravine optimizer and impl, against torch.optim and peers.

    .venv/bin/python benchmarks/step_speed.py                      # everything (several minutes)
    .venv/bin/python benchmarks/step_speed.py --optimizers adam,sgd --layouts 1000x1k

For each layout (1 x 10M, 100 x 100k, 1000 x 1k float32 tensors by default) and each optimizer it
prints the median step time of ravine's impls, of torch.optim's fastest path for the same
algorithm (fused where torch has it, else foreach) and of pytorch-optimizer's (a benchmark-only
dependency: ``pip install pytorch-optimizer``; its columns are blank without it), the speed-up of
ravine compiled over each, and the percentage of the memory-bandwidth limit: the bytes the
update must move per step (read p and g, read and write p and each state tensor) divided by the
bandwidth of an in-place ``a += s * b`` over the same number of elements, measured in the same
run, interleaved with the optimizer timings so that both see the same machine load (the
median %lim of a row uses the a += s*b median of that row's own rounds).

A second table gives the first compiled step (compiling included; inductor's on-disk caches are
off unless --warm-cache) and the number of recompiles over --schedule-steps steps of a cosine
learning-rate schedule.

All timings are medians over --repeats steps after --warmup steps, the contenders (ravine's
impls, torch, the peer and the a += s*b kernel) timed in turns, one step each, so that a load
spike from other processes hits them alike. Before each timed step, untimed, the contender's
gradients are rewritten in place (``g *= 1``; ``b`` for a += s*b), as the backward pass before a
real step writes them: a step never follows another step on untouched gradients in training,
and ravine's compiled path, which notices gradients that nothing wrote since the last step and
then checks every parameter's ``.grad``, would otherwise be timed on that rare path. ravine runs
with nonfinite="ignore" by default (torch.optim has no non-finite guard); --nonfinite raise adds the
guard's extra read of the gradients.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

LAYOUTS = {"1x10M": (1, 10_000_000), "100x100k": (100, 100_000), "1000x1k": (1000, 1000)}

# ravine name -> (torch.optim class name, kwargs) for the same algorithm with ravine's defaults.
TORCH_EQUIVALENT: dict[str, tuple[str, dict[str, Any]]] = {
    "sgd": ("SGD", {"lr": 1e-3}),
    "momentum": ("SGD", {"lr": 1e-3, "momentum": 0.9}),
    "nag": ("SGD", {"lr": 1e-3, "momentum": 0.9, "nesterov": True}),
    "adagrad": ("Adagrad", {"lr": 1e-2}),
    "adadelta": ("Adadelta", {"lr": 1.0, "rho": 0.9}),
    "rmsprop": ("RMSprop", {"lr": 1e-3, "alpha": 0.9}),
    "rprop": ("Rprop", {"lr": 0.1}),
    "adam": ("Adam", {"lr": 1e-3}),
    "amsgrad": ("Adam", {"lr": 1e-3, "amsgrad": True}),
    "adamw": ("AdamW", {"lr": 1e-3}),
    "adamax": ("Adamax", {"lr": 2e-3}),
    "nadam": ("NAdam", {"lr": 2e-3}),
    "radam": ("RAdam", {"lr": 1e-3}),
}

# ravine name -> (pytorch-optimizer name, kwargs): the peer library's version of the algorithm.
PEER_EQUIVALENT: dict[str, tuple[str, dict[str, Any]]] = {
    "adabound": ("adabound", {}),
    "amsbound": ("adabound", {"amsbound": True}),
    "qhadam": ("qhadam", {}),
    "qhm": ("qhm", {}),
    "aggmo": ("aggmo", {}),
    "radam": ("radam", {}),
    "ranger": ("ranger", {}),
    "adam": ("adamp", {}),  # no plain Adam of its own; AdamP is its Adam-family default
    "nadam": ("nadam", {}),
    "adamax": ("adamax", {}),
    "adadelta": ("adadelta", {}),
    "rmsprop": ("rmsprop", {}),
    "adagrad": ("adagrad", {}),
}


@dataclass
class Row:
    name: str
    bytes_per_element: int
    ms: dict[str, float]  # impl or "torch"/"peer" -> median ms
    best: dict[str, float]  # the same, minimum ms (the least disturbed step)
    torch_path: str = ""
    bandwidth: float = 0.0  # bytes/s of a += s*b, median over the same rounds as this row


def round_robin(
    contenders: dict[str, Callable[[], Any]],
    repeats: int,
    sync: Callable[[], None],
    before: dict[str, Callable[[], Any]] | None = None,
) -> tuple[dict[str, float], dict[str, float]]:
    """Median and minimum ms of each callable, timed in turns so that load spikes hit all alike;
    ``before[name]`` runs untimed before each call of ``name``."""
    times: dict[str, list[float]] = {k: [] for k in contenders}
    before = before or {}
    for _ in range(repeats):
        for name, fn in contenders.items():
            if name in before:
                before[name]()
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return (
        {k: statistics.median(v) * 1e3 for k, v in times.items()},
        {k: min(v) * 1e3 for k, v in times.items()},
    )


def make_params(n_tensors: int, size: int, dtype: Any, device: str) -> list[Any]:
    import torch

    gen = torch.Generator(device="cpu").manual_seed(0)
    params = []
    for _ in range(n_tensors):
        p = torch.randn(size, generator=gen, dtype=dtype).to(device).requires_grad_()
        p.grad = torch.randn(size, generator=gen, dtype=dtype).to(device).mul_(1e-3)
        params.append(p)
    return params


def rewrite_grads(params: list[Any]) -> Callable[[], None]:
    """What backward does to the gradients before a step: write them, in place."""
    import torch

    def rewrite() -> None:
        torch._foreach_mul_([p.grad for p in params], 1.0)

    return rewrite


def core(opt: Any) -> Any:
    """The ravine optimizer inside wrappers (Lookahead, Ranger) that hold one as .optimizer."""
    while not hasattr(opt, "state_names_for") and hasattr(opt, "optimizer"):
        opt = opt.optimizer
    return opt


def bytes_per_element(opt: Any, itemsize: int) -> int:
    """Read g; read and write p and every state tensor (a wrapper's own state not counted)."""
    opt = core(opt)
    group = opt.param_groups[0]
    return (1 + 2 * (1 + len(opt.state_names_for(group)))) * itemsize


def usable(label: str, make: Callable[[], Any]) -> Any | None:
    """make() then one step, or None with a note (L-BFGS, torch's closure-driven line search, takes
    none of ravine's impl/nonfinite options and is not an elementwise rule to time here)."""
    try:
        opt = make()
        opt.step()
        return opt
    except (RuntimeError, TypeError, ValueError) as exc:
        print(f"  ({label}: skipped, {type(exc).__name__}: {str(exc)[:120]})", file=sys.stderr)
        return None


def torch_fastest(name: str, params: list[Any]) -> tuple[Any, str] | None:
    import torch

    if name not in TORCH_EQUIVALENT:
        return None
    cls_name, kwargs = TORCH_EQUIVALENT[name]
    cls = getattr(torch.optim, cls_name)
    for path in ("fused", "foreach"):
        try:
            opt = cls(params, **kwargs, **{path: True})
            opt.step()  # fused support is only checked on the first step for some classes
            return opt, path
        except (RuntimeError, TypeError, ValueError):
            continue
    return None


def peer(name: str, params: list[Any]) -> Any | None:
    if name not in PEER_EQUIVALENT:
        return None
    try:
        from pytorch_optimizer import load_optimizer
    except ImportError:
        return None
    peer_name, kwargs = PEER_EQUIVALENT[name]
    try:
        return load_optimizer(peer_name)(params, **kwargs)
    except Exception as exc:  # a peer that cannot build this is reported, not fatal
        print(f"  (pytorch-optimizer {peer_name}: {type(exc).__name__}: {exc})", file=sys.stderr)
        return None


def run_layout(args: argparse.Namespace, layout: str, names: list[str]) -> list[Row]:
    import torch

    import ravine.optim as O

    n_tensors, size = LAYOUTS[layout]
    n = n_tensors * size
    dtype = getattr(torch, args.dtype)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    a = torch.zeros(n, dtype=dtype, device=args.device)
    b = torch.ones(n, dtype=dtype, device=args.device)
    axpy_bytes = 3 * n * a.element_size()
    bandwidths: list[float] = []
    best_bandwidths: list[float] = []
    rows = []
    for name in names:
        row = Row(name, 0, {}, {})
        contenders: dict[str, Callable[[], Any]] = {"a+=s*b": lambda: a.add_(b, alpha=1e-7)}
        before: dict[str, Callable[[], Any]] = {"a+=s*b": lambda: b.mul_(1.0)}
        for impl in args.impls:
            if impl == "loop" and n_tensors > args.loop_max_tensors:
                continue
            params = make_params(n_tensors, size, dtype, args.device)
            opt = usable(
                f"{name} {impl}",
                lambda: O.create(name, params, impl=impl, nonfinite=args.nonfinite),  # noqa: B023
            )
            if opt is None:
                continue
            row.bytes_per_element = bytes_per_element(opt, params[0].element_size())
            contenders[impl], before[impl] = opt.step, rewrite_grads(params)
        torch_params = make_params(n_tensors, size, dtype, args.device)
        found = torch_fastest(name, torch_params)
        if found is not None:
            contenders["torch"], row.torch_path = found[0].step, found[1]
            before["torch"] = rewrite_grads(torch_params)
        peer_params = make_params(n_tensors, size, dtype, args.device)
        other = peer(name, peer_params)
        if other is not None:
            contenders["peer"], before["peer"] = other.step, rewrite_grads(peer_params)
        for key, fn in contenders.items():
            for _ in range(args.warmup):
                before[key]()
                fn()
        row.ms, row.best = round_robin(contenders, args.repeats, sync, before)
        bandwidths.append(axpy_bytes / (row.ms.pop("a+=s*b") * 1e-3))
        row.bandwidth = bandwidths[-1]
        best_bandwidths.append(axpy_bytes / (row.best.pop("a+=s*b") * 1e-3))
        if any(k in row.ms for k in args.impls):
            rows.append(row)
        del contenders, found, other
        print(
            f"  {layout} {name}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in row.ms.items()),
            file=sys.stderr,
            flush=True,
        )
    print_layout(args, layout, rows, bandwidths, best_bandwidths, n)
    return rows


def print_layout(
    args: argparse.Namespace,
    layout: str,
    rows: list[Row],
    bandwidths: list[float],
    best_bandwidths: list[float],
    n: int,
) -> None:
    n_tensors, size = LAYOUTS[layout]
    gbps = statistics.median(bandwidths) / 1e9
    best_gbps = max(best_bandwidths) / 1e9
    print(
        f"\n## layout {layout}: {n_tensors} x {size:,} {args.dtype} on {args.device}, "
        f"{args.threads or 'default'} threads; a += s*b limit {gbps:.1f} GB/s median "
        f"(per-optimizer medians {min(bandwidths) / 1e9:.1f}-{max(bandwidths) / 1e9:.1f}), "
        f"{best_gbps:.1f} GB/s best"
    )
    impls = [i for i in args.impls if any(i in r.ms for r in rows)]
    # The 1000 x 1k goal compares every optimizer with torch's fused Adam (per-tensor overhead).
    fused_adam = next(
        (r for r in rows if r.name == "adam" and r.torch_path == "fused" and "torch" in r.ms), None
    )
    if n_tensors < 1000:
        fused_adam = None
    head = (
        ["optimizer", "B/elem"]
        + [f"{i} ms" for i in impls]
        + ["torch ms", "torch path", "peer ms", "x torch", "x peer"]
        + (["x fused Adam"] if fused_adam else [])
        + [f"{i} %lim" for i in impls if i != "loop"]
    )
    table = [head]

    def cell(r: Row, key: str) -> str:
        return f"{r.ms[key]:.2f}/{r.best[key]:.2f}" if key in r.ms else "-"

    def ratio(r: Row, key: str) -> str:
        if key not in r.ms or "compiled" not in r.ms:
            return "-"
        return f"{r.ms[key] / r.ms['compiled']:.1f}/{r.best[key] / r.best['compiled']:.1f}"

    for r in rows:
        limit_ms = r.bytes_per_element * n / r.bandwidth * 1e3  # this row's rounds
        best_limit_ms = r.bytes_per_element * n / (best_gbps * 1e9) * 1e3
        cells = [r.name, str(r.bytes_per_element)]
        cells += [cell(r, i) for i in impls]
        cells += [cell(r, "torch"), r.torch_path or "-", cell(r, "peer")]
        cells += [ratio(r, "torch"), ratio(r, "peer")]
        if fused_adam:
            cells.append(
                f"{fused_adam.ms['torch'] / r.ms['compiled']:.1f}/"
                f"{fused_adam.best['torch'] / r.best['compiled']:.1f}"
                if "compiled" in r.ms
                else "-"
            )
        cells += [
            f"{100 * limit_ms / r.ms[i]:.0f}/{100 * best_limit_ms / r.best[i]:.0f}%"
            if i in r.ms
            else "-"
            for i in impls
            if i != "loop"
        ]
        table.append(cells)
    widths = [max(len(row[c]) for row in table) for c in range(len(head))]
    for i, row in enumerate(table):
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print(
        "cells are median/best. x torch, x peer: their step time over ravine compiled's (higher: "
        "compiled is faster); x fused Adam: torch's fused Adam step over this compiled step. "
        "%lim: the time the update's bytes take at the a += s*b bandwidth over the step time "
        "(median: at the bandwidth measured in the same rounds as the row / best: at the best "
        "bandwidth of the run)."
    )


def compile_table(args: argparse.Namespace, names: list[str]) -> None:
    import torch

    import ravine.optim as O

    print(
        f"\n## compile: first compiled step and recompiles over {args.schedule_steps} steps of "
        f"CosineAnnealingLR (10 x 10k {args.dtype}; inductor caches "
        f"{'on' if args.warm_cache else 'off'})"
    )
    print(
        f"{'optimizer':>10}  {'first step s':>12}  {'compiles':>8}  {'recompiles after step 1':>24}"
    )
    dtype = getattr(torch, args.dtype)
    for name in names:
        params = make_params(10, 10_000, dtype, args.device)
        start = time.perf_counter()
        opt = usable(
            name,
            lambda: O.create(name, params, impl="compiled", nonfinite=args.nonfinite),  # noqa: B023
        )
        first = time.perf_counter() - start
        if opt is None:
            continue
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.schedule_steps)
        groups = core(opt).engine.groups
        kernels = {id(fg.kernel): fg.kernel for fg in groups if fg.kernel is not None}
        after_first = sum(k.compiles for k in kernels.values())
        for _ in range(args.schedule_steps - 1):
            opt.step()
            sched.step()  # a new lr every step, as a per-batch schedule gives
        total = sum(k.compiles for k in kernels.values())
        failed = [k.failed for k in kernels.values() if k.failed]
        note = f"  FELL BACK: {failed[0][:80]}" if failed else ""
        print(f"{name:>10}  {first:12.2f}  {total:8d}  {total - after_first:24d}{note}")


# The learned optimizers (ravine.learned) run a network per coordinate and keep its state: 80
# floats per parameter for L2L. On the 10M-element layouts that is gigabytes of state and
# activations, so they get a table of their own, on the layouts scaled down by --learned-scale.
LEARNED = ("l2l", "learned_mlp")


def learned_table(args: argparse.Namespace) -> None:
    """Step time of the learned optimizers against ravine's compiled Adam on the same layouts
    (scaled down), and the floats of state each keeps per parameter."""
    import torch

    import ravine.optim as O

    dtype = getattr(torch, args.dtype)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    print(
        f"\n## learned optimizers vs ravine Adam impl='compiled' (layouts / {args.learned_scale}, "
        f"{args.dtype})"
    )
    print(
        f"{'layout':>12}  {'optimizer':>12}  {'impl':>8}  {'ms':>9}  {'adam ms':>8}  "
        f"{'x adam':>7}  {'state floats/param':>18}"
    )
    for layout in filter(None, args.layouts.split(",")):
        n_tensors, size = LAYOUTS[layout]
        if n_tensors * size // args.learned_scale < 1:
            continue
        if size // args.learned_scale >= 1:
            n_tensors, size = n_tensors, size // args.learned_scale
        else:
            n_tensors = n_tensors * size // args.learned_scale
        shown = f"{n_tensors}x{size}"
        contenders: dict[str, Callable[[], Any]] = {}
        before: dict[str, Callable[[], Any]] = {}
        states: dict[str, int] = {}
        adam_params = make_params(n_tensors, size, dtype, args.device)
        adam = usable("adam compiled", lambda: O.create("adam", adam_params, impl="compiled"))  # noqa: B023
        if adam is not None:
            contenders["adam"], before["adam"] = adam.step, rewrite_grads(adam_params)
        for name in LEARNED:
            impl = "foreach"
            params = make_params(n_tensors, size, dtype, args.device)
            opt = usable(name, lambda: O.create(name, params, impl=impl))  # noqa: B023
            if opt is None:
                continue
            contenders[name], before[name] = opt.step, rewrite_grads(params)
            states[name] = len(opt.state_names_for(opt.param_groups[0]))
        for key, fn in contenders.items():
            for _ in range(args.warmup):
                before[key]()
                fn()
        ms, _ = round_robin(contenders, args.repeats, sync, before)
        for name in LEARNED:
            if name in ms:
                ratio = f"{ms[name] / ms['adam']:7.1f}" if "adam" in ms else f"{'':>7}"
                print(
                    f"{shown:>12}  {name:>12}  {'foreach':>8}  {ms[name]:9.2f}  "
                    f"{ms.get('adam', float('nan')):8.3f}  {ratio}  {states[name]:18d}"
                )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--optimizers", default="all", help="comma-separated registry names")
    parser.add_argument(
        "--layouts", default=",".join(LAYOUTS), help=f"{','.join(LAYOUTS)} ('' for none)"
    )
    parser.add_argument("--impls", default="compiled,foreach,loop")
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--loop-max-tensors", type=int, default=100, help="skip impl=loop above this many tensors"
    )
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--nonfinite", default="ignore", choices=["ignore", "raise", "skip"])
    parser.add_argument("--schedule-steps", type=int, default=1000)
    parser.add_argument("--no-compile-table", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--warm-cache", action="store_true", help="keep inductor's disk caches")
    parser.add_argument(
        "--learned-scale",
        type=int,
        default=100,
        help="the learned optimizers' table divides each layout's elements by this (0: no table)",
    )
    args = parser.parse_args(argv)
    args.impls = args.impls.split(",")
    if not args.warm_cache:  # the compile table measures a cold compile: fresh cache directory
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="ravine-bench-inductor-")
        os.environ["TORCHINDUCTOR_FX_GRAPH_CACHE"] = "0"
        os.environ["TORCHINDUCTOR_AUTOGRAD_CACHE"] = "0"

    import torch

    import ravine.optim as O

    if args.threads:
        torch.set_num_threads(args.threads)
    names = O.names() if args.optimizers == "all" else args.optimizers.split(",")
    wanted_learned = [n for n in names if n in LEARNED]
    names = [n for n in names if n not in LEARNED]
    try:
        import pytorch_optimizer

        peer_version = getattr(pytorch_optimizer, "__version__", "installed")
    except ImportError:
        peer_version = "not installed"
    print(
        f"# step_speed: torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"pytorch-optimizer {peer_version}, load average {os.getloadavg()[0]:.1f} at start; "
        f"median of {args.repeats} steps after {args.warmup} warm-up steps, "
        f"ravine nonfinite={args.nonfinite!r}"
    )
    if not args.no_compile_table:
        compile_table(args, names)
    for layout in filter(None, args.layouts.split(",")) if names else ():
        run_layout(args, layout, names)
    if wanted_learned and args.learned_scale > 0:
        learned_table(args)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
