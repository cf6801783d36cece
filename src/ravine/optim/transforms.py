"""Gradient transforms: what maps the step's gradients to those the update rule sees.

- :class:`GradientTransform` is the protocol (``grad_transforms=`` of every ravine optimizer,
  :class:`ravine.optim.wrappers.TransformGradients` around any other optimizer).
- :class:`GradientNoise` is annealed Gaussian gradient noise (``grad_noise=``).

This module imports neither the optimizer base class nor the wrappers, which both import it.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor

from ravine.optim.hyperparameters import NONNEGATIVE, check_hyperparameter, checked_count

NOISE_PAPER = (
    "Neelakantan, Vilnis, Le, Sutskever, Kaiser, Kurach & Martens 2015, 'Adding Gradient Noise "
    "Improves Learning for Very Deep Networks', arXiv:1511.06807"
)


class GradientTransform(Protocol):
    """Maps the step's gradients to the gradients the rule sees (noise, clipping...).

    Called once per step with every parameter that has a gradient, across all groups, before
    ``maximize`` and weight decay. Must not modify ``grads`` in place (they may be the user's
    ``.grad``); returns a list of the same length. Its state (e.g. a generator, a counter) is
    saved and restored with the optimizer's ``state_dict``.
    """

    def __call__(self, params: list[Tensor], grads: list[Tensor]) -> list[Tensor]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any]) -> None: ...


class GradientNoise:
    """Annealed Gaussian gradient noise (Neelakantan et al. 2015, arXiv:1511.06807), section 2,
    as a :class:`GradientTransform`::

        g_t <- g_t + N(0, sigma_t^2),   sigma_t^2 = eta / (1 + t)^gamma

    t counts the steps this transform has seen, from 0 at the first (the paper leaves the
    origin implicit). Defaults: eta = 0.01 (the smallest of the paper's {0.01, 0.3, 1.0}),
    gamma = 0.55 (the paper's). Every coordinate gets independent noise of variance sigma_t^2
    (complex gradients: each of the real and imaginary parts); a sparse gradient gets noise on
    its stored values only, so it stays sparse. eta = 0 returns the gradients untouched.

    The noise is drawn from a ``torch.Generator`` per device seeded with ``seed`` (default:
    ``torch.initial_seed()``, so ``torch.manual_seed`` makes runs reproducible); its state and
    the step counter are saved in the optimizer's ``state_dict``, so a resumed run draws the
    same noise as an uninterrupted one. Use as ``ravine.Adam(params, grad_noise=0.01)``,
    ``grad_transforms=[GradientNoise(...)]``, or around a torch.optim optimizer with
    :class:`~ravine.optim.wrappers.TransformGradients`.
    """

    paper: ClassVar[str] = NOISE_PAPER

    def __init__(self, eta: float = 0.01, gamma: float = 0.55, seed: int | None = None) -> None:
        eta = check_hyperparameter("eta", eta, NONNEGATIVE)
        gamma = check_hyperparameter("gamma", gamma, NONNEGATIVE)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"Invalid seed: {seed!r} (expected an integer or None)")
        self.eta = eta
        self.gamma = gamma
        self.seed = torch.initial_seed() if seed is None else seed
        self.t = 0
        self._generators: dict[str, torch.Generator] = {}

    def __repr__(self) -> str:
        return f"GradientNoise(eta={self.eta}, gamma={self.gamma}, seed={self.seed})"

    def variance(self, t: int) -> float:
        """sigma_t^2 = eta / (1 + t)^gamma."""
        return self.eta / (1 + t) ** self.gamma

    def _generator(self, device: torch.device) -> torch.Generator:
        key = str(device)
        gen = self._generators.get(key)
        if gen is None:
            gen = self._generators[key] = torch.Generator(device).manual_seed(self.seed)
        return gen

    @torch.no_grad()
    def __call__(self, params: list[Tensor], grads: list[Tensor]) -> list[Tensor]:
        sigma = math.sqrt(self.variance(self.t))
        self.t += 1
        if sigma == 0:
            return list(grads)
        # One draw per (device, dtype), split over the tensors: the same numbers whatever the
        # implementation, and one kernel instead of one per parameter.
        values = [_noise_target(g) for g in grads]
        kinds: dict[tuple[torch.device, torch.dtype], list[int]] = {}
        for i, v in enumerate(values):
            kinds.setdefault((v.device, v.dtype), []).append(i)
        noisy: list[Tensor | None] = [None] * len(grads)
        for (device, dtype), indices in kinds.items():
            draw_dtype = dtype if dtype in (torch.float32, torch.float64) else torch.float32
            total = sum(values[i].numel() for i in indices)
            noise = torch.randn(
                total, generator=self._generator(device), dtype=draw_dtype, device=device
            )
            offset = 0
            for i in indices:
                n = values[i].numel()
                chunk = noise[offset : offset + n].view_as(values[i]).to(dtype)
                offset += n
                noisy[i] = _with_values(grads[i], values[i].add(chunk, alpha=sigma))
        return noisy  # type: ignore[return-value]

    def state_dict(self) -> dict[str, Any]:
        return {
            "eta": self.eta,
            "gamma": self.gamma,
            "seed": self.seed,
            "t": self.t,
            "generators": {k: g.get_state() for k, g in self._generators.items()},
        }

    def validate_state_dict(self, state_dict: Any) -> None:
        """Raise ValueError unless ``state_dict`` is one this transform can load."""
        keys = {"eta", "gamma", "seed", "t", "generators"}
        if not isinstance(state_dict, dict) or not keys <= set(state_dict):
            raise ValueError(f"not a GradientNoise state_dict (expected {', '.join(sorted(keys))})")
        check_hyperparameter("eta", state_dict["eta"], NONNEGATIVE)
        check_hyperparameter("gamma", state_dict["gamma"], NONNEGATIVE)
        checked_count("GradientNoise t", state_dict["t"])
        seed = state_dict["seed"]
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"Invalid GradientNoise seed: {seed!r} (expected an integer)")
        generators = state_dict["generators"]
        if not isinstance(generators, dict) or not all(
            isinstance(v, Tensor) and v.dtype == torch.uint8 for v in generators.values()
        ):
            raise ValueError("Invalid GradientNoise generators: expected generator states")

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.validate_state_dict(state_dict)
        self.eta, self.gamma = state_dict["eta"], state_dict["gamma"]
        self.seed, self.t = state_dict["seed"], state_dict["t"]
        self._generators = {}
        for key, gen_state in state_dict["generators"].items():
            self._generator(torch.device(key)).set_state(gen_state)


def _noise_target(g: Tensor) -> Tensor:
    """The real tensor the noise is added to: the stored values of a sparse gradient, the real
    view of a complex one."""
    if g.is_sparse:
        g = g.coalesce().values()
    return torch.view_as_real(g) if g.is_complex() else g


def _with_values(g: Tensor, values: Tensor) -> Tensor:
    """A gradient like ``g`` holding ``values`` (as produced by :func:`_noise_target`)."""
    if g.is_sparse:
        g = g.coalesce()
        v = torch.view_as_complex(values) if g.is_complex() else values
        return torch.sparse_coo_tensor(
            g.indices(), v, g.shape, dtype=g.dtype, device=g.device, check_invariants=False
        )
    return torch.view_as_complex(values) if g.is_complex() else values
