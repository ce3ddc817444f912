"""Learning-rate schedules: callables epoch → lr (epoch counts from 0).

========================  =====================================  ===========================
schedule                  lr(epoch)                              source
========================  =====================================  ===========================
StepDecay                 lr0 · factor^⌊epoch/step⌋              PyTorch StepLR
ExponentialDecay          lr0 · base^epoch (base 0.95)           the course
InverseSqrtDecay          k / √epoch (lr0 at epoch 0)            the course, k = lr0
InverseTimeDecay          lr0 / (1 + rate·epoch)                 the course
StaircaseDecay            lr0 / (1 + rate·⌊epoch/interval⌋)      the course's fixed-interval
Constant                  lr0
========================  =====================================  ===========================
"""

from __future__ import annotations

import math

from . import checks


class Schedule:
    """A learning-rate schedule: ``schedule(epoch)`` → lr."""

    def __init__(self, lr0):
        self.lr0 = float(checks.positive("lr0", lr0))

    def __call__(self, epoch) -> float:
        """lr at ``epoch``; ValueError naming this schedule when it is not a positive number
        there (it decayed to 0, or overflowed)."""
        try:
            lr = self.lr(checks.number("epoch", epoch, low=0))
        except OverflowError:
            lr = math.inf
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"{self!r} gives lr = {lr} at epoch {epoch!r}: an lr must be a "
                             "positive finite number")
        return lr

    def lr(self, epoch) -> float:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class Constant(Schedule):
    """lr0 at every epoch."""

    def lr(self, epoch):
        return self.lr0


class StepDecay(Schedule):
    """lr0 · factor^⌊epoch/step⌋."""

    def __init__(self, lr0, step=10, factor=0.1):
        super().__init__(lr0)
        self.step = checks.positive("step", step, integer=True)
        self.factor = checks.positive("factor", factor)

    def lr(self, epoch):
        return self.lr0 * self.factor ** (epoch // self.step)


class ExponentialDecay(Schedule):
    """lr0 · base^epoch (the course's 0.95^epoch)."""

    def __init__(self, lr0, base=0.95):
        super().__init__(lr0)
        self.base = checks.positive("base", base)

    def lr(self, epoch):
        return self.lr0 * self.base ** epoch


class InverseSqrtDecay(Schedule):
    """k/√epoch with k = lr0; epoch 0 gives lr0 (1/√0 is undefined)."""

    def lr(self, epoch):
        return self.lr0 / math.sqrt(max(epoch, 1))


class InverseTimeDecay(Schedule):
    """lr0 / (1 + rate·epoch)."""

    def __init__(self, lr0, rate=1.0):
        super().__init__(lr0)
        self.rate = checks.non_negative("rate", rate)

    def lr(self, epoch):
        return self.lr0 / (1 + self.rate * epoch)


class StaircaseDecay(Schedule):
    """lr0 / (1 + rate·⌊epoch/interval⌋): inverse-time decay held fixed for ``interval`` epochs."""

    def __init__(self, lr0, rate=1.0, interval=1000):
        super().__init__(lr0)
        self.rate = checks.non_negative("rate", rate)
        self.interval = checks.positive("interval", interval, integer=True)

    def lr(self, epoch):
        return self.lr0 / (1 + self.rate * (epoch // self.interval))


SCHEDULES = {cls.__name__: cls for cls in (Constant, StepDecay, ExponentialDecay,
                                           InverseSqrtDecay, InverseTimeDecay,
                                           StaircaseDecay)}
