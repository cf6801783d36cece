"""Parallel and distributed SGD with real processes: Hogwild!, Downpour (sharded parameter server,
any ravine optimizer per shard, delay-tolerant AdaGrad), async EASGD/EAMSGD, sync EASGD and
all-reduce. Reports loss against wall time and updates, updates per second, bytes per message
kind, the staleness histogram and the faults seen (JSON under --out).

examples:
  ravine parallel --algo downpour --workers 2 --shards 2
  ravine parallel --algo downpour --server-optimizer delay_tolerant_adagrad --workers 4
  ravine parallel --algo hogwild --workers 2 --steps 20000 --problem sparse
  ravine parallel --algo eamsgd --tau 4 --time-limit 30
  ravine parallel --compare --workers 2 --time-limit 10          (plot + table + JSON)
  ravine parallel --algo downpour --simulate --workers 8          (one process, no sockets)
  torchrun --nnodes 2 --nproc-per-node 2 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
      --no-python ravine parallel --algo downpour --workers 2 --shards 2
                                   (WORLD_SIZE = shards + workers; see docs/parallel.md)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ravine.parallel.config import ALGOS, SERVER_ALGOS

COMPARE_DEFAULT = ("hogwild", "downpour", "easgd", "eamsgd", "easgd-sync", "allreduce")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--algo", choices=ALGOS, default="downpour", help="(default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default: 2)")
    parser.add_argument("--shards", type=int, default=2, help="server shards (default: 2)")
    parser.add_argument(
        "--problem",
        choices=("sparse", "dense"),
        default="sparse",
        help="logistic regression on power-law sparse features, or every feature present",
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="steps per worker (default: 400; Hogwild! 10000)"
    )
    parser.add_argument("--time-limit", type=float, default=None, metavar="SECONDS")
    parser.add_argument("--lr", type=float, default=None, help="(default: per algorithm)")
    parser.add_argument("--batch-size", type=int, default=32, help="examples per worker step")
    parser.add_argument(
        "--server-optimizer", default="adagrad", metavar="NAME", help="Downpour's (adagrad)"
    )
    parser.add_argument(
        "--hp", nargs="*", default=[], metavar="K=V", help="server optimizer hyperparameters"
    )
    parser.add_argument("--n-fetch", type=int, default=1, help="Downpour: fetch every N steps")
    parser.add_argument("--n-push", type=int, default=1, help="Downpour: push every N steps")
    parser.add_argument(
        "--local-lr", type=float, default=0.0, help="Downpour: local step between fetches"
    )
    parser.add_argument("--max-delay", type=int, default=None, help="DT-AdaGrad (8 per worker)")
    parser.add_argument("--tau", type=int, default=4, help="EASGD period (default: 4)")
    parser.add_argument("--beta", type=float, default=0.9, help="EASGD (default: 0.9)")
    parser.add_argument("--alpha", type=float, default=None, help="EASGD (default: beta/workers)")
    parser.add_argument("--delta", type=float, default=0.99, help="EAMSGD momentum (0.99)")
    parser.add_argument("--lock", action="store_true", help="Hogwild! with a lock (comparison)")
    parser.add_argument("--seed", type=int, default=0, help="data order and problem seed")
    parser.add_argument(
        "--compare",
        action="store_true",
        help="run the algorithms of --algos side by side: plot, table and JSON under --out",
    )
    parser.add_argument(
        "--algos", default=",".join(COMPARE_DEFAULT), help="for --compare (default: all)"
    )
    parser.add_argument("--simulate", action="store_true", help="the single-process simulator")
    parser.add_argument("--out", default="out/parallel", help="folder (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1", help="control-plane address")
    parser.add_argument("--port", type=int, default=0, help="control-plane port (0: a free one)")
    parser.add_argument(
        "--hang-timeout",
        type=float,
        default=3.0,
        metavar="SECONDS",
        help="a process whose heartbeat is older than this is killed and replaced",
    )


def _config(args: argparse.Namespace, algo: str):
    from ravine.cli.train import key_values
    from ravine.parallel import Config

    steps = args.steps if args.steps is not None else (10_000 if algo == "hogwild" else 400)
    return Config(
        algo=algo,
        workers=args.workers,
        shards=args.shards,
        problem=args.problem,
        steps=steps,
        time_limit=args.time_limit,
        lr=args.lr,
        batch_size=args.batch_size,
        n_fetch=args.n_fetch,
        n_push=args.n_push,
        local_lr=args.local_lr,
        server_optimizer=args.server_optimizer,
        server_hp=key_values(args.hp, "--hp"),
        max_delay=args.max_delay,
        beta=args.beta,
        alpha=args.alpha,
        tau=args.tau,
        delta=args.delta,
        lock=args.lock,
        seed=args.seed,
    )


def _print_run(result, out: Path) -> None:
    from ravine.parallel.report import format_table

    print(format_table([result]))
    if result.staleness:
        hist = ", ".join(f"{k}: {v}" for k, v in sorted(result.staleness.items()))
        print(f"staleness histogram (pushes per delay): {hist}")
    if result.bytes:
        print("bytes: " + ", ".join(f"{k} {v}" for k, v in sorted(result.bytes.items())))
    for key in ("lost_updates", "startup_s", "pushes_dropped", "resumed_versions"):
        if result.extra.get(key):
            print(f"{key}: {result.extra[key]}")
    for fault in result.faults:
        print(f"fault at {fault['t']:.2f} s: {fault['kind']} {fault['who']} ({fault['detail']})")


def run(args: argparse.Namespace) -> int:
    from ravine.paths import check_output_path

    algos = [a.strip() for a in args.algos.split(",") if a.strip()] if args.compare else [args.algo]
    try:
        out = check_output_path(args.out, "--out", directory=True)
        for a in algos:
            if a not in ALGOS:
                raise ValueError(
                    f"Invalid --algos entry: {a!r} (expected one of {', '.join(ALGOS)})"
                )
        configs = [_config(args, a) for a in algos]
        if not args.hang_timeout > 0:
            raise ValueError(f"Invalid --hang-timeout: {args.hang_timeout!r} (expected > 0)")
        if not 0 <= args.port <= 65535:
            raise ValueError(f"Invalid --port: {args.port!r} (expected 0..65535, 0: a free one)")
    except (ValueError, KeyError) as e:
        print(f"ravine parallel: error: {e}", file=sys.stderr)
        return 2
    from ravine.parallel.launch import under_torchrun

    if under_torchrun():
        return _run_torchrun(configs[0], out)
    results = []
    for config in configs:
        print(f"== {config.algo}: {config.workers} workers", end="")
        print(f", {config.shards} shards" if config.algo in SERVER_ALGOS else "", flush=True)
        if args.simulate:
            results.append(_simulated(config))
        else:
            from ravine.parallel.launch import run as run_processes
            from ravine.parallel.transport import TransportError

            try:
                results.append(
                    run_processes(
                        config, host=args.host, port=args.port, hang_timeout=args.hang_timeout
                    )
                )
            except (TimeoutError, TransportError, RuntimeError) as e:  # says what it waited for
                print(f"ravine parallel: error: {e}", file=sys.stderr)
                return 1
        _print_run(results[-1], out)
    out.mkdir(parents=True, exist_ok=True)
    if args.compare:
        from ravine.parallel.report import format_table, plot_compare

        _write(out / "compare.md", format_table(results) + "\n")
        _write(out / "compare.json", json.dumps([r.to_dict() for r in results], indent=1))
        png = plot_compare(results, out / "compare.png")
        print(
            f"\n{format_table(results)}\nwrote {out / 'compare.md'}, {out / 'compare.json'}, {png}"
        )
    else:
        path = out / f"parallel-{configs[0].algo}.json"
        _write(path, json.dumps(results[0].to_dict(), indent=1))
        print(f"wrote {path}")
    return 0


def _write(path: Path, text: str) -> None:
    from ravine.parallel.runtime import atomic_write_bytes

    atomic_write_bytes(path, text.encode())


def _simulated(config):
    """A simulator run reported like a process run (no wall clock, no bytes: updates only)."""
    from ravine.parallel import simulate
    from ravine.parallel.runtime import RunResult

    sim = simulate(config)
    curve = [
        (0.0, (i * config.eval_every + 1) * config.workers, loss)
        for i, loss in enumerate(sim.losses[0])
    ]
    return RunResult(
        config.to_dict(),
        0.0,
        sim.updates,
        sim.final_loss,
        curve,
        staleness=dict(sim.staleness),
        extra={"simulated": True},
        params=sim.w,
    )


def _run_torchrun(config, out: Path) -> int:
    from ravine.parallel.launch import run_torchrun
    from ravine.parallel.transport import TransportError

    try:
        result = run_torchrun(config, run_dir=out / f"rank{os.environ['RANK']}")
    except (ValueError, TransportError) as e:
        print(f"ravine parallel: error: {e}", file=sys.stderr, flush=True)
        return 2
    if result is not None:
        _print_run(result, out)
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"parallel-{config.algo}.json"
        _write(path, json.dumps(result.to_dict(), indent=1))
        print(f"wrote {path}", flush=True)
    sys.stdout.flush()
    # gloo pairs still held by daemon threads must not be torn down by interpreter shutdown
    os._exit(0)
