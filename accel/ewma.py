"""Exponentially weighted moving averages: v_t = β·v_{t−1} + (1 − β)·θ_t, v_0 = 0.

With bias correction v̂_t = v_t / (1 − βᵗ), which removes the pull toward 0 of the first
steps (the course's week-2 lesson). The average spans about 1/(1 − β) samples.
"""

from __future__ import annotations

import numpy as np

from . import checks


def ewma(values, beta: float = 0.9, bias_correction: bool = True) -> np.ndarray:
    """The EWMA of a 1-D sequence, as a float64 array of the same length."""
    checks.in_unit_interval("beta", beta)
    checks.boolean("bias_correction", bias_correction)
    try:
        values = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"values must be a 1-D sequence of numbers, got {values!r:.200}") from None
    if values.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {values.shape}")
    out = np.empty_like(values)
    v = 0.0
    for i, x in enumerate(values):
        v = beta * v + (1 - beta) * x
        out[i] = v / (1 - beta ** (i + 1)) if bias_correction else v
    return out


class EWMA:
    """Running EWMA: ``update(x)`` returns the (bias-corrected) average so far."""

    def __init__(self, beta: float = 0.9, bias_correction: bool = True):
        self.beta = checks.in_unit_interval("beta", beta)
        self.bias_correction = checks.boolean("bias_correction", bias_correction)
        self.value, self.t = 0.0, 0

    def update(self, x) -> float:
        try:
            x = float(x)
        except (TypeError, ValueError):
            raise TypeError(f"x must be a number, got {x!r:.200}") from None
        self.t += 1
        self.value = self.beta * self.value + (1 - self.beta) * x
        return self.average

    @property
    def average(self) -> float:
        if self.t == 0:
            return float("nan")
        if self.bias_correction:
            return self.value / (1 - self.beta ** self.t)
        return self.value
