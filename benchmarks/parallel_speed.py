"""Parallel SGD speed: Hogwild! speedup, every algorithm's throughput, push/pull vs raw gloo.

    .venv/bin/python benchmarks/parallel_speed.py                 # everything (~3 min quiet)
    .venv/bin/python benchmarks/parallel_speed.py --only hogwild --repeats 3
    .venv/bin/python benchmarks/parallel_speed.py --only rtt --sizes 1001,1000000

1. Hogwild! (Niu et al. 2011) on the sparse problem: 2 processes against 1, lock-free and
   locked, in updates per second and in time to a target loss (the first sampled point at or
   below --target; the same number of examples in total). Goal on 2 cores: >= 1.6x both,
   lock-free. The dense problem shows where lock-freedom stops paying (lost updates).
2. Every algorithm with --workers processes for a fixed wall budget (--seconds): updates per
   second, bytes per update and the loss reached.
3. Round trip of a pull and a push to one shard process (ravine's protocol, header + payload,
   through the worker's client) against a raw gloo send/recv of the same bytes between two
   processes. Goal: <= 1.5x.

Every figure is a median over --repeats runs and printed beside its reference and their ratio.
On a machine shared with other work the ratios are noisy: rerun on a quiet one.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any


def time_to(curve: list[tuple[float, int, float]], target: float) -> float:
    """Seconds until the sampled loss first reaches ``target`` (inf if it never does)."""
    return next((t for t, _, loss in curve if loss <= target), float("inf"))


def hogwild(args: argparse.Namespace) -> None:
    from ravine.parallel import Config
    from ravine.parallel.launch import run

    targets = {"sparse": args.target, "dense": args.target_dense}
    print(f"== Hogwild! speedup, {args.examples} examples in total, target loss {targets} ==")
    print(f"{'problem':8s} {'variant':10s} {'P':>2s} {'updates/s':>10s} {'t->target':>10s} "
          f"{'loss':>7s} {'lost':>8s}   speedup: updates/s, time to target")  # fmt: skip
    for problem in ("sparse", "dense"):
        for lock in (False, True):
            base: dict[str, float] = {}
            for workers in (1, 2):
                runs = [
                    run(
                        Config(
                            algo="hogwild",
                            workers=workers,
                            steps=args.examples // workers,
                            problem=problem,
                            lock=lock,
                            seed=r,
                        )
                    )
                    for r in range(args.repeats)
                ]
                ups = statistics.median(r.updates_per_s for r in runs)
                ttt = statistics.median(time_to(r.curve, targets[problem]) for r in runs)
                loss = statistics.median(r.final_loss for r in runs)
                lost = statistics.median(r.extra["lost_updates"] for r in runs)
                ratio = ""
                if workers == 1:
                    base = {"ups": ups, "ttt": ttt}
                else:
                    speedup = base["ttt"] / ttt if ttt < float("inf") else float("nan")
                    ratio = f"   {ups / base['ups']:.2f}x, {speedup:.2f}x"
                variant = "locked" if lock else "lock-free"
                print(f"{problem:8s} {variant:10s} {workers:2d} {ups:10.0f} {ttt:9.2f}s "
                      f"{loss:7.4f} {lost:8.0f}{ratio}")  # fmt: skip


def algorithms(args: argparse.Namespace) -> None:
    from ravine.parallel import ALGOS, Config
    from ravine.parallel.launch import run
    from ravine.parallel.report import staleness_summary

    print(f"\n== every algorithm, {args.workers} workers (2 shards), {args.seconds:g} s budget ==")
    print(f"{'algo':11s} {'updates/s':>10s} {'bytes/update':>13s} {'loss':>7s}  staleness")
    for algo in ALGOS:
        runs = [
            run(
                Config(
                    algo=algo,
                    workers=args.workers,
                    shards=2,
                    steps=10**7,
                    time_limit=args.seconds,
                    seed=r,
                )
            )
            for r in range(args.repeats)
        ]
        ups = statistics.median(r.updates_per_s for r in runs)
        bpu = statistics.median(r.bytes_per_update for r in runs)
        loss = statistics.median(r.final_loss for r in runs)
        stale = staleness_summary(runs[0].staleness)
        print(f"{algo:11s} {ups:10.0f} {bpu:13.0f} {loss:7.4f}  {stale}")


def _round_trips(serve: Any, rounds: int) -> tuple[float, float]:
    """Median and fastest seconds of one call of ``serve`` after a warm-up (on a busy machine
    the median measures the scheduler; the fastest is the transport's own cost)."""
    for _ in range(min(20, rounds)):
        serve()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        serve()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def rtt(args: argparse.Namespace) -> None:
    import torch

    from ravine.parallel import Config
    from ravine.parallel.algorithms import Pull, Push
    from ravine.parallel.runtime import Children, Recorder, RunSpec
    from ravine.parallel.server import shard_main
    from ravine.parallel.transport import HEADER_BYTES, Pair, connect_store, echo_main
    from ravine.parallel.worker import ServerClient

    print("\n== round trip to one shard: ravine's pull/push against raw gloo, same bytes ==")
    print(f"{'floats':>9s} {'kind':5s} {'ravine':>10s} {'raw gloo':>10s} {'ratio':>6s}   "
          "fastest: ravine, raw, ratio")  # fmt: skip
    header = HEADER_BYTES // 4
    rounds = args.rounds
    for n in args.sizes:
        config = Config(algo="downpour", workers=1, shards=1, n_features=n - 1, n_samples=10**4,
                        server_optimizer="sgd")  # fmt: skip
        store = connect_store("127.0.0.1", 0, 30.0, master=True)
        spec = RunSpec("127.0.0.1", store.port, "/tmp", time.time())
        with Children() as children:
            # raw: a request of header floats answered by n + header (pull), and the reverse
            raw = {}
            for kind, (n_in, n_out) in {"pull": (header, n + header), "push": (n, header)}.items():
                total = rounds + min(20, rounds)
                children.start(echo_main, "127.0.0.1", store.port, f"raw-{kind}/", n_in, n_out,
                               total, 60.0, name=f"echo-{kind}")  # fmt: skip
                pair = Pair(store, f"raw-{kind}/", 0, 60.0)
                out, back = torch.zeros(n_in), torch.zeros(n_out)

                def once(pair=pair, out=out, back=back) -> None:
                    pair.send(out).wait()
                    pair.recv(back).wait()

                raw[kind] = _round_trips(once, rounds)
            children.start(shard_main, config, spec, 0, 0, name="shard")
            client = ServerClient(config, spec, spec.store(), 0, 0, Recorder("worker", 0, 0, 0))
            grad = torch.zeros(n)
            ours = {
                "pull": _round_trips(lambda c=client: c.serve(Pull()), rounds),
                "push": _round_trips(lambda c=client, g=grad: c.serve(Push(g, [0])), rounds),
            }
            client.bye()
            spec.store().set("stop", "1")
        for kind in ("pull", "push"):
            (ours_med, ours_min), (raw_med, raw_min) = ours[kind], raw[kind]
            print(f"{n:9d} {kind:5s} {ours_med * 1e6:8.0f}us {raw_med * 1e6:8.0f}us "
                  f"{ours_med / raw_med:5.2f}x   {ours_min * 1e6:6.0f}us {raw_min * 1e6:6.0f}us "
                  f"{ours_min / raw_min:5.2f}x")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=("hogwild", "algorithms", "rtt"), default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--examples", type=int, default=40_000, help="Hogwild! examples in all")
    parser.add_argument("--target", type=float, default=0.34, help="Hogwild! target, sparse")
    parser.add_argument("--target-dense", type=float, default=0.63, help="and dense")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5.0, help="budget per algorithm run")
    parser.add_argument("--rounds", type=int, default=300, help="round trips timed")
    parser.add_argument(
        "--sizes", default="1001,100000", help="floats per message, comma-separated"
    )
    args = parser.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",")]
    import torch

    torch.set_num_threads(1)
    for name, bench in (("hogwild", hogwild), ("algorithms", algorithms), ("rtt", rtt)):
        if args.only in (None, name):
            bench(args)


if __name__ == "__main__":
    main()
