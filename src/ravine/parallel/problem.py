"""The problems parallel SGD is run on: L2-regularised logistic regression on offline data.

Every algorithm in :mod:`ravine.parallel` trains one flat parameter vector ``w`` (the weights,
then the bias) so that a shard of the parameters is a contiguous slice. The loss of example i is

    l_i(w) = log(1 + exp(-s_i (x_i . w[:-1] + w[-1]))) + (l2 / 2) |w|^2,   s_i = +-1

``sparse`` is ravine's power-law problem (:func:`ravine.data.sparse_powerlaw`: feature j present
with frequency 0.5 j^-1), where Hogwild!'s updates rarely collide; ``dense`` has every feature
present in every example (max_freq = 1, alpha tiny, rows scaled by 1 / sqrt(d) so that one
learning rate suits both), where they always do. The mini-batch
gradient and the per-example sparse step (Hogwild!, Niu et al. 2011, arXiv:1106.5730: touch only
the coordinates of the example) are written here once and used by the simulator and the
processes alike.

Deviation: Hogwild!'s per-example step applies the L2 term only to the touched coordinates (as
the paper's sparse separable cost does); the mini-batch gradient applies it to all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ravine.data import sparse_powerlaw

PROBLEMS = ("sparse", "dense")


@dataclass(frozen=True)
class Problem:
    """Training data (dense and CSR), an evaluation subset and the loss/gradient of w.

    ``x`` is (n, d - 1) float32, ``y`` is +-1 float32; ``indptr/indices/values`` hold the same
    ``x`` in CSR form for the sparse per-example step.
    """

    name: str
    x: torch.Tensor
    y: torch.Tensor
    x_eval: torch.Tensor
    y_eval: torch.Tensor
    l2: float
    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    signs: np.ndarray  # y as float64 numpy, for the per-example step

    @property
    def dim(self) -> int:
        """Number of parameters: one weight per feature and a bias."""
        return self.x.shape[1] + 1

    @property
    def n(self) -> int:
        return self.x.shape[0]

    def init(self) -> torch.Tensor:
        """The starting point, zeros (loss log 2 = 0.693)."""
        return torch.zeros(self.dim, dtype=self.x.dtype)

    def loss(self, w: torch.Tensor, x: torch.Tensor | None = None) -> float:
        """Mean regularised logistic loss on the evaluation set (or on ``x`` rows given)."""
        xs, ys = (self.x_eval, self.y_eval) if x is None else (x, self.y)
        margin = ys * (xs @ w[:-1] + w[-1])
        reg = 0.5 * self.l2 * float(w.double().square().sum())
        return float(torch.nn.functional.softplus(-margin).double().mean()) + reg

    def grad(self, w: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Gradient of the mean loss over ``rows`` (a LongTensor of training indices) at ``w``."""
        xb, yb = self.x[rows], self.y[rows]
        # d/dm log(1 + exp(-m)) = -sigmoid(-m)
        r = -yb * torch.sigmoid(-yb * (xb @ w[:-1] + w[-1])) / len(rows)
        g = torch.empty_like(w)
        torch.mv(xb.t(), r, out=g[:-1])
        g[-1] = r.sum()
        return g.add_(w, alpha=self.l2)

    def shard(self, index: int, count: int) -> Problem:
        """The ``index``-th of ``count`` disjoint, contiguous, size-balanced shards of the data
        (the evaluation set is shared): each worker process gets only its own."""
        lo, hi = split_bounds(self.n, count)[index]
        start, stop = int(self.indptr[lo]), int(self.indptr[hi])
        return Problem(
            self.name,
            self.x[lo:hi].clone(),
            self.y[lo:hi].clone(),
            self.x_eval,
            self.y_eval,
            self.l2,
            self.indptr[lo : hi + 1] - start,
            self.indices[start:stop].copy(),
            self.values[start:stop].copy(),
            self.signs[lo:hi].copy(),
        )

    def example_step(self, w: np.ndarray, i: int, lr: float) -> tuple[np.ndarray, np.ndarray]:
        """Hogwild!'s sparse step for example ``i``: reads w at its coordinates (and the bias,
        the last one) and returns (coordinates, delta) to subtract there.

        numpy, not torch: on vectors of a few dozen entries torch's per-call overhead
        (a few microseconds per op) is most of the step.
        """
        a, b = self.indptr[i], self.indptr[i + 1]
        coords = self.indices[a:b]
        vals = self.values[a:b]
        wc = w[coords]
        s = self.signs[i]
        m = s * (float(wc @ vals) + float(w[-1]))
        # -s sigmoid(-m), without overflowing exp for a large margin of either sign
        r = -s * np.exp(-m) / (1.0 + np.exp(-m)) if m > 0 else -s / (1.0 + np.exp(m))
        delta = np.empty(len(coords) + 1, dtype=w.dtype)
        delta[:-1] = lr * (r * vals + self.l2 * wc)
        delta[-1] = lr * (r + self.l2 * w[-1])
        return np.append(coords, len(w) - 1), delta


def split_bounds(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous ranges covering 0..n, sizes differing by at most one."""
    if not (isinstance(parts, int) and 1 <= parts <= n):
        raise ValueError(f"Invalid number of parts: {parts!r} (expected an integer in [1, {n}])")
    base, extra = divmod(n, parts)
    bounds, lo = [], 0
    for i in range(parts):
        hi = lo + base + (i < extra)
        bounds.append((lo, hi))
        lo = hi
    return bounds


def make_problem(
    name: str = "sparse",
    *,
    n_samples: int = 10_000,
    n_features: int = 1_000,
    l2: float = 1e-4,
    n_eval: int = 1_000,
    seed: int = 0,
) -> Problem:
    """Build a problem by name (``PROBLEMS``) from ravine's offline generator."""
    if name not in PROBLEMS:
        raise ValueError(f"Invalid problem: {name!r} (expected one of {', '.join(PROBLEMS)})")
    if not l2 >= 0:
        raise ValueError(f"Invalid l2: {l2!r} (expected l2 >= 0)")
    if not (isinstance(n_eval, int) and n_eval >= 1):
        raise ValueError(f"Invalid n_eval: {n_eval!r} (expected an integer >= 1)")
    kwargs = {"alpha": 1e-9, "max_freq": 1.0} if name == "dense" else {}
    splits = sparse_powerlaw(n_samples, n_features, seed=seed, **kwargs)
    x, labels = splits.train
    y = labels.float() * 2 - 1
    x_val, labels_val = splits.val
    if name == "dense":  # rows of norm ~ 1 as in the sparse problem, so one lr suits both
        x, x_val = x / n_features**0.5, x_val / n_features**0.5
    csr = x.numpy()
    nz = csr != 0
    indptr = np.concatenate([[0], np.cumsum(nz.sum(1))]).astype(np.int64)
    indices = np.nonzero(nz)[1].astype(np.int64)
    values = csr[nz].astype(np.float32)
    return Problem(
        name,
        x,
        y,
        x_val[:n_eval],
        labels_val[:n_eval].float() * 2 - 1,
        float(l2),
        indptr,
        indices,
        values,
        y.double().numpy(),
    )
