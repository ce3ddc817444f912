"""Gradient checking: backprop against the two-sided numerical gradient.

g_num[i] = (J(θ + h·eᵢ) − J(θ − h·eᵢ)) / 2h over the whole parameter vector θ (a network's
flat buffer), compared by the relative difference ‖g − g_num‖ / (‖g‖ + ‖g_num‖). The course's
verdict bands: < 1e-7 fine, around 1e-5 look closer, > 1e-3 almost surely a bug.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import numpy as np

from . import checks
from .backend import array_module, to_numpy


def relative_difference(g, g_num, atol: float = 1e-8) -> float:
    """‖g − g_num‖ / (‖g‖ + ‖g_num‖).

    0 when ‖g‖ + ‖g_num‖ ≤ atol: both gradients are zero up to the float64 rounding noise of
    a two-sided difference (≈ ε·|J|/h per element), as for the bias of a layer followed by
    BatchNorm, where the ratio of two noises would score a meaningless ~1.
    """
    checks.non_negative("atol", atol)
    g, g_num = to_numpy(g), to_numpy(g_num)
    for name, a in (("g", g), ("g_num", g_num)):
        if a.dtype.kind not in "biuf":
            raise TypeError(f"{name} must be an array of numbers, got dtype {a.dtype}")
    if g.shape != g_num.shape:
        raise ValueError(f"g and g_num must have the same shape, got {g.shape} and "
                         f"{g_num.shape}")
    g, g_num = g.ravel(), g_num.ravel()
    denom = np.linalg.norm(g) + np.linalg.norm(g_num)
    if denom <= atol:
        return 0.0
    return float(np.linalg.norm(g - g_num) / denom)


def verdict(diff: float) -> str:
    """The course's reading of a relative difference (NaN reads "wrong")."""
    if isinstance(diff, bool) or not isinstance(diff, numbers.Real):
        raise TypeError(f"diff must be a relative difference (a number >= 0), got "
                        f"{diff!r:.100}")
    if diff < 0:
        raise ValueError(f"diff must be >= 0, got {diff!r}")
    if diff < 1e-7:
        return "fine"
    if diff <= 1e-3:
        return "look closer"
    return "wrong"


def numerical_gradient(f, x, h: float = 1e-5):
    """Two-sided difference of the scalar function ``f()`` w.r.t. the array ``x``, which ``f``
    reads; ``x`` is perturbed in place one element at a time and restored exactly."""
    checks.callable_("f", f)
    checks.positive("h", h)
    if not hasattr(x, "dtype") or x.dtype.kind != "f":
        raise TypeError(f"x must be a float array (perturbed in place), got "
                        f"{getattr(x, 'dtype', type(x).__name__)}")
    xp = array_module(x)
    grad = xp.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i].copy()
        flat[i] = old + h
        f_plus = float(f())
        flat[i] = old - h
        f_minus = float(f())
        flat[i] = old
        gflat[i] = (f_plus - f_minus) / (2 * h)
    return grad


@dataclass
class GradCheckResult:
    """Relative differences over the whole θ and per parameter, with the verdict."""

    difference: float
    per_param: dict = field(default_factory=dict)
    norms: dict = field(default_factory=dict)  # name → ‖g‖ (backprop), for context

    @property
    def verdict(self) -> str:
        return verdict(self.difference)

    def report(self) -> str:
        rows = [f"{'param':>8}  {'rel. diff':>9}  {'|g|':>9}  verdict"]
        rows += [f"{k:>8}  {d:9.3e}  {self.norms.get(k, float('nan')):9.3e}  {verdict(d)}"
                 for k, d in self.per_param.items()]
        rows.append(f"{'theta':>8}  {self.difference:9.3e}  {'':>9}  {self.verdict}")
        return "\n".join(rows)


def check_network(network, x, t, h: float = 1e-5) -> GradCheckResult:
    """Compare ``network.gradient(x, t)`` with the numerical gradient of its training loss.

    Needs float64 (float32 rounding swamps the difference) and no dropout (the loss must be
    a fixed function of θ). With BatchNorm the running averages move at every loss
    evaluation, but the train-mode loss does not read them, so the check stays exact.
    """
    checks.positive("h", h)
    if not all(hasattr(network, a) for a in ("dtype", "dropout", "prepare", "loss_and_grads",
                                             "params")):
        raise TypeError(f"network must be a network such as accel.MultiLayerNet(...), got "
                        f"{network!r:.200}")
    if network.dtype != np.float64:
        raise TypeError(f"gradient checking needs dtype float64, the network has "
                        f"{network.dtype} (build it with dtype=np.float64)")
    if network.dropout:
        raise ValueError(f"gradient checking needs dropout off (dropout={network.dropout}): "
                         "random masks make the loss a different function at every call")
    x, t = network.prepare(x, t)
    g = network.loss_and_grads(x, t)[1].flat.copy()
    g_num = numerical_gradient(lambda: network.loss(x, t, train=True), network.params.flat, h)
    offsets = network.params.offsets()
    per = {k: relative_difference(g[a:b], g_num[a:b]) for k, (a, b) in offsets.items()}
    norms = {k: float(np.linalg.norm(to_numpy(g[a:b]))) for k, (a, b) in offsets.items()}
    return GradCheckResult(relative_difference(g, g_num), per, norms)
