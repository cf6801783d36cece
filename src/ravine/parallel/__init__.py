"""Parallel and distributed SGD on PyTorch's own engine (Ruder's survey, section 4).

Hogwild! (shared memory, lock-free), Downpour SGD with a sharded parameter server (any ravine
optimizer per shard, delay-tolerant AdaGrad fed the measured staleness), asynchronous EASGD and
EAMSGD against the server's center, synchronous EASGD and all-reduce over gloo collectives; a
deterministic simulator of asynchrony that runs the same math in one process.

    from ravine.parallel import Config, Fault, run, simulate
    simulate(Config(algo="downpour", workers=4))           # one process, a schedule of turns
    run(Config(algo="downpour", workers=2, shards=2))      # real processes on loopback
"""

from ravine.parallel.config import ALGOS, Config
from ravine.parallel.launch import Fault, run
from ravine.parallel.problem import Problem, make_problem
from ravine.parallel.runtime import RunResult
from ravine.parallel.simulator import SimResult, simulate

__all__ = [
    "ALGOS",
    "Config",
    "Fault",
    "Problem",
    "RunResult",
    "SimResult",
    "make_problem",
    "run",
    "simulate",
]
