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
3. Round trip of a pull, a push and a push-pull to one shard (one message each way: the
   16-byte header and the payload packed together; a request's payload past 64 KiB is a second
   message) against a raw gloo send then recv of the same bytes between two processes, which do
   no work (each posting its receive before it sends, as the protocol does). Goal: <= 1.5x for
   a pull and a push to a real shard (the last line per size says whether the medians meet it).
   Three figures per message: "transport", ravine's protocol to a peer that does no work
   either; "shard", through the worker's client to a real shard process, which answers a push
   before it applies it (asynchronous pushes, as in DistBelief: the optimizer step, sgd with
   ravine's non-finite guard, follows the reply) but a push-pull, Downpour's message when a
   fetch is due after the push, only after the step, since the reply carries the parameters
   after it; "step", that step alone in one process, warm and cold. The variants take turns
   round by round, so a change of load hits them alike.
4. Where a push's time goes: the worker's client, sending the request, waiting for the reply;
   in the shard process (instrumented), receive to reply, the reply, and the optimizer step
   that follows it.

Every figure of parts 1 and 2 is a median over --repeats runs; part 3 gives the median and the
fastest of --rounds round trips, part 4 medians. Each is printed beside its reference and their
ratio.
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


def _interleaved(calls: dict[str, Any], rounds: int) -> dict[str, list[float]]:
    """Seconds of each call, ``rounds`` times after a warm-up, the calls taking turns within a
    round in a shuffled order, so that a change of machine load or a place in the order favours
    none of them."""
    import random

    for _ in range(min(20, rounds)):
        for call in calls.values():
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    order, rng = list(calls), random.Random(0)
    for _ in range(rounds):
        rng.shuffle(order)
        for name in order:
            start = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - start)
    return times


def protocol_echo_main(host: str, port: int, prefix: str, n: int, timeout: float) -> None:
    """A shard that does no work: ravine's protocol alone (the shard's end of the pair)."""
    import torch

    from ravine.parallel.transport import Kind, Pair, ShardEndpoint, connect_store

    torch.set_num_threads(1)
    endpoint = ShardEndpoint(Pair(connect_store(host, port, timeout), prefix, 0, timeout), n)
    while True:
        kind, _, _ = endpoint.receive()
        if kind is Kind.BYE:
            return
        endpoint.respond(kind, 0, 0, None if kind is Kind.PUSH else endpoint.reply.payload)


def step_alone(n: int, rounds: int, pause: float) -> float:
    """Median seconds of the shard's update alone (Shard.push: ravine's sgd on n floats, with its
    non-finite guard), in this process, each after sleeping ``pause`` s: in a shard the step
    follows a wait for the message, and measured cold like that it costs 2-4x a back-to-back
    step (caches and the interpreter's state gone cold)."""
    import torch

    from ravine.parallel import Config
    from ravine.parallel.algorithms import Shard

    config = Config(algo="downpour", workers=1, shards=1, n_features=n - 1, n_samples=10**4,
                    server_optimizer="sgd")  # fmt: skip
    shard, grad = Shard(0, 0, n, torch.zeros(n), config), torch.zeros(n)
    times = []
    for _ in range(rounds):
        if pause:
            time.sleep(pause)
        start = time.perf_counter()
        shard.push(grad, shard.version)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def rtt(args: argparse.Namespace) -> None:
    """Round trips to one shard, the variants taking turns (see the module docstring)."""
    import torch

    from ravine.parallel import Config
    from ravine.parallel.algorithms import Pull, Push
    from ravine.parallel.runtime import Children, Recorder, RunSpec
    from ravine.parallel.server import shard_main
    from ravine.parallel.transport import (
        HEADER_BYTES,
        Kind,
        Pair,
        ShardChannel,
        connect_store,
        echo_main,
    )
    from ravine.parallel.worker import ServerClient

    print("\n== round trip to one shard against raw gloo send/recv of the same bytes ==")
    print("transport: ravine's protocol to a shard that does no work; shard: a real shard")
    print("process (it answers a push before its sgd step, a push-pull after it); step: that")
    print("step alone in one process, warm (back to back) / cold (each after a 1 ms sleep)")
    print(f"{'floats':>7s} {'kind':9s} {'':7s} {'raw gloo':>9s} {'transport':>15s} "
          f"{'shard':>15s} {'step':>11s}")  # fmt: skip
    header = HEADER_BYTES // 4
    rounds = args.rounds
    for n in args.sizes:
        config = Config(algo="downpour", workers=1, shards=1, n_features=n - 1, n_samples=10**4,
                        server_optimizer="sgd")  # fmt: skip
        store = connect_store("127.0.0.1", 0, 30.0, master=True)
        spec = RunSpec("127.0.0.1", store.port, "/tmp", time.time())
        total = rounds + min(20, rounds)
        with Children() as children:
            calls: dict[str, Any] = {}
            sizes = {
                "pull": (header, n + header),
                "push": (n, header),
                "push-pull": (n, n + header),
            }
            for kind, (n_in, n_out) in sizes.items():
                children.start(echo_main, "127.0.0.1", store.port, f"raw-{kind}/", n_in, n_out,
                               total, 60.0, name=f"echo-{kind}")  # fmt: skip
                pair = Pair(store, f"raw-{kind}/", 0, 60.0)
                out, back = torch.zeros(n_in), torch.zeros(n_out)

                def once(pair=pair, out=out, back=back) -> None:
                    answer = pair.recv(back)  # posted first, as the protocol does
                    pair.send(out).wait()
                    answer.wait()

                calls[f"{kind} raw"] = once
            children.start(protocol_echo_main, "127.0.0.1", store.port, "proto/", n, 60.0,
                           name="protocol")  # fmt: skip
            channel = ShardChannel(Pair(store, "proto/", 1, 60.0), n)
            grad = torch.zeros(n)

            def transport(kind: Kind, payload: torch.Tensor | None, c=channel) -> None:
                c.start(kind, 0, payload)
                c.finish()

            calls["pull transport"] = lambda: transport(Kind.PULL, None)
            calls["push transport"] = lambda g=grad: transport(Kind.PUSH, g)
            calls["push-pull transport"] = lambda g=grad: transport(Kind.PUSH_PULL, g)
            children.start(shard_main, config, spec, 0, 0, name="shard")
            client = ServerClient(config, spec, spec.store(), 0, 0, Recorder("worker", 0, 0, 0))
            calls["pull shard"] = lambda c=client: c.serve(Pull())
            calls["push shard"] = lambda c=client, g=grad: c.serve(Push(g, [0]))
            calls["push-pull shard"] = lambda c=client, g=grad: c.serve(Push(g, [0], pull=True))
            times = _interleaved(calls, rounds)
            client.bye()
            channel.start(Kind.BYE)
            channel.finish()
            spec.store().set("stop", "1")
        steps = [step_alone(n, rounds, pause) for pause in (0.0, 0.001)]
        for kind in ("pull", "push", "push-pull"):
            for stat, how in (("median", statistics.median), ("fastest", min)):
                raw = how(times[f"{kind} raw"])
                cells = []
                for variant in ("transport", "shard"):
                    t = how(times[f"{kind} {variant}"])
                    cells.append(f"{t * 1e6:7.0f}us {t / raw:5.2f}x")
                step_cell = ""
                if kind != "pull" and stat == "median":
                    step_cell = f"{steps[0] * 1e6:.0f}/{steps[1] * 1e6:.0f}us"
                print(f"{n:7d} {kind:9s} {stat:7s} {raw * 1e6:7.0f}us {cells[0]} {cells[1]} "
                      f"{step_cell:>11s}")  # fmt: skip
        median = {name: statistics.median(t) for name, t in times.items()}
        ratios = {k: median[f"{k} shard"] / median[f"{k} raw"] for k in ("pull", "push")}
        verdict = "met" if max(ratios.values()) <= 1.5 else "NOT met"
        print(f"{n:7d} goal <= 1.5x raw gloo, medians to a real shard: pull {ratios['pull']:.2f}x, "
              f"push {ratios['push']:.2f}x: {verdict}")  # fmt: skip


def timed_shard_main(config: Any, spec: Any) -> None:
    """shard 0 with its parts timed (the serving thread's receive-to-reply, the optimizer step,
    the reply); the medians go to the store as ``breakdown`` when the run stops."""
    import json

    from ravine.parallel import transport
    from ravine.parallel.algorithms import Shard
    from ravine.parallel.server import shard_main

    parts: dict[str, list[float]] = {"handling": [], "step": [], "reply": []}
    receive, respond, push = (
        transport.ShardEndpoint.receive,
        transport.ShardEndpoint.respond,
        Shard.push,
    )
    got = [0.0]

    def timed_receive(self: Any) -> Any:
        request = receive(self)
        got[0] = time.perf_counter()
        return request

    def timed_respond(self: Any, *args: Any) -> None:
        start = time.perf_counter()
        parts["handling"].append(start - got[0])
        respond(self, *args)
        parts["reply"].append(time.perf_counter() - start)

    def timed_push(self: Any, grad: Any, base_version: int) -> int:
        start = time.perf_counter()
        staleness = push(self, grad, base_version)
        parts["step"].append(time.perf_counter() - start)
        return staleness

    transport.ShardEndpoint.receive = timed_receive
    transport.ShardEndpoint.respond = timed_respond
    Shard.push = timed_push
    shard_main(config, spec, 0, 0)
    medians = {k: statistics.median(v[20:]) for k, v in parts.items()}
    spec.store().set("breakdown", json.dumps(medians))


def breakdown(args: argparse.Namespace) -> None:
    """Where a push to a real shard spends its time: the worker's side timed here, the shard's
    by timed_shard_main."""
    import json

    import torch

    from ravine.parallel import Config
    from ravine.parallel.algorithms import Push
    from ravine.parallel.runtime import Children, Recorder, RunSpec
    from ravine.parallel.transport import Pair, connect_store, echo_main, wait_key
    from ravine.parallel.worker import ServerClient

    print("\n== where a push's time goes (medians; shard process instrumented) ==")
    for n in args.sizes:
        config = Config(algo="downpour", workers=1, shards=1, n_features=n - 1, n_samples=10**4,
                        server_optimizer="sgd")  # fmt: skip
        store = connect_store("127.0.0.1", 0, 30.0, master=True)
        spec = RunSpec("127.0.0.1", store.port, "/tmp", time.time())
        total = args.rounds + 20
        with Children() as children:
            children.start(echo_main, "127.0.0.1", store.port, "raw/", n, 4, total, 60.0,
                           name="echo")  # fmt: skip
            pair = Pair(store, "raw/", 0, 60.0)
            out, back = torch.zeros(n), torch.zeros(4)
            children.start(timed_shard_main, config, spec, name="shard")
            client = ServerClient(config, spec, spec.store(), 0, 0, Recorder("worker", 0, 0, 0))
            channel, grad = client.channels[0], torch.zeros(n)
            times: dict[str, list[float]] = {"raw": [], "push": [], "start": [], "finish": []}
            start_request, finish_request = channel.start, channel.finish

            def timed(method: Any, key: str, times: dict[str, list[float]] = times) -> Any:
                def call(*a: Any) -> Any:
                    t = time.perf_counter()
                    result = method(*a)
                    times[key].append(time.perf_counter() - t)
                    return result

                return call

            channel.start, channel.finish = (
                timed(start_request, "start"),
                timed(finish_request, "finish"),
            )
            for _ in range(total):
                t = time.perf_counter()
                answer = pair.recv(back)
                pair.send(out).wait()
                answer.wait()
                times["raw"].append(time.perf_counter() - t)
                t = time.perf_counter()
                client.serve(Push(grad, [0]))
                times["push"].append(time.perf_counter() - t)
            channel.start, channel.finish = start_request, finish_request
            client.bye()
            spec.store().set("stop", "1")
            shard = json.loads(wait_key(spec.store(), "breakdown", 60.0, "the shard's timings"))
        # one start and one finish per push (one shard): the client's own time, round by round
        times["client"] = [
            p - s - f
            for p, s, f in zip(times["push"], times["start"], times["finish"], strict=True)
        ]
        med = {k: statistics.median(v[20:]) * 1e6 for k, v in times.items()}
        print(f"{n} floats: raw gloo {med['raw']:.0f}us; push {med['push']:.0f}us. Worker: "
              f"client {med['client']:.0f}us, request out (pack, copy, post the reply's "
              f"receive, send) {med['start']:.0f}us, waiting for the reply {med['finish']:.0f}us."
              f" Shard: receive to reply {shard['handling'] * 1e6:.0f}us; reply (post the next "
              f"receive, send) {shard['reply'] * 1e6:.0f}us; then, after the reply, the "
              f"optimizer step {shard['step'] * 1e6:.0f}us")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--only", choices=("hogwild", "algorithms", "rtt", "breakdown"), default=None
    )
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
    parts = (
        ("hogwild", hogwild),
        ("algorithms", algorithms),
        ("rtt", rtt),
        ("breakdown", breakdown),
    )
    for name, bench in parts:
        if args.only in (None, name):
            bench(args)


if __name__ == "__main__":
    main()
