"""The order in which examples are visited: per-epoch shuffling and curriculum learning.

Shuffling every epoch keeps the optimizer from seeing examples in a meaningful order that could
bias it (Ruder, 2016, arXiv:1609.04747, "Shuffling and Curriculum Learning"). Curriculum learning
(Bengio et al., 2009, "Curriculum learning", ICML) does the opposite on purpose: examples come in
order of a difficulty score. Zaremba & Sutskever (2014, "Learning to Execute", arXiv:1410.4615)
found the naive easy-to-hard order worse than mixing difficulties; both strategies, and their
"combined" one, are here:

    naive     easiest first, hardest last (ties in random order)
    mixed     each position draws a difficulty level uniformly at random from the levels that
              still have examples, then a random example of that level
    combined  each position takes, with probability 1/2, the easiest example left (naive), and
              otherwise a uniformly random one left (mixed)

Every order is a permutation of range(N) drawn from a generator seeded by (seed, epoch), so a run
repeats exactly with its seed, each epoch differs, and a resumed run needs no generator state.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

__all__ = ["STRATEGIES", "curriculum_order", "epoch_rng", "loss_difficulty", "shuffled"]

STRATEGIES = ("naive", "mixed", "combined")


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """Independent, reproducible random stream for one epoch of one run."""
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed and epoch must be >= 0, got seed={seed!r}, epoch={epoch!r}")
    return np.random.default_rng(np.random.SeedSequence([seed, epoch]))


def shuffled(n: int, seed: int, epoch: int) -> torch.Tensor:
    """A uniformly random permutation of range(n) for this (seed, epoch)."""
    return torch.from_numpy(epoch_rng(seed, epoch).permutation(n))


def _levels(order: np.ndarray, levels: int) -> list[np.ndarray]:
    """Split indices sorted by difficulty into ``levels`` contiguous, near-equal groups."""
    return [chunk for chunk in np.array_split(order, min(levels, len(order))) if len(chunk)]


def curriculum_order(
    scores: torch.Tensor | np.ndarray,
    strategy: str,
    seed: int = 0,
    epoch: int = 0,
    *,
    levels: int = 10,
) -> torch.Tensor:
    """Permutation of range(N) by ``strategy`` (see module docstring); low score = easy."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if not (isinstance(levels, int) and levels >= 1):
        raise ValueError(f"levels must be an integer >= 1, got {levels!r}")
    s = scores.detach().cpu().double().numpy() if isinstance(scores, torch.Tensor) else scores
    s = np.asarray(s, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"scores must be 1-D (one per example), got shape {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite, got NaN or inf")
    n = len(s)
    rng = epoch_rng(seed, epoch)
    # a random permutation first, then a stable sort: equal scores come in random order
    pre = rng.permutation(n)
    easy_to_hard = pre[np.argsort(s[pre], kind="stable")]
    if strategy == "naive":
        return torch.from_numpy(easy_to_hard)

    out = np.empty(n, dtype=np.int64)
    if strategy == "mixed":
        groups = [rng.permutation(g) for g in _levels(easy_to_hard, levels)]
        pos = [0] * len(groups)
        active = list(range(len(groups)))
        u = rng.random(n)
        for i in range(n):
            j = active[int(u[i] * len(active))]
            out[i] = groups[j][pos[j]]
            pos[j] += 1
            if pos[j] == len(groups[j]):
                active.remove(j)
        return torch.from_numpy(out)

    # combined: two cursors, one over the easy-to-hard order and one over a random order
    random_order = rng.permutation(n)
    coin = rng.random(n) < 0.5
    used = np.zeros(n, dtype=bool)
    a = b = 0
    for i in range(n):
        if coin[i]:
            while used[easy_to_hard[a]]:
                a += 1
            k = easy_to_hard[a]
        else:
            while used[random_order[b]]:
                b += 1
            k = random_order[b]
        used[k] = True
        out[i] = k
    return torch.from_numpy(out)


@torch.no_grad()
def loss_difficulty(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable[..., torch.Tensor] = torch.nn.functional.cross_entropy,
    batch_size: int = 1024,
) -> torch.Tensor:
    """Per-example loss under ``model`` (eval mode): the built-in difficulty score.

    Scored under the initial model this is the "loss under an untrained model" proxy; scored under
    a briefly trained one it is the transfer-teacher score of Hacohen & Weinshall (2019,
    arXiv:1904.03626). ``loss_fn`` must accept ``reduction="none"``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        parts = [
            loss_fn(
                model(x[i : i + batch_size].to(device)),
                y[i : i + batch_size].to(device),
                reduction="none",
            )
            .reshape(-1)
            .cpu()
            for i in range(0, len(x), batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(parts).double()
