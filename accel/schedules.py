"""Learning-rate schedules: callables t → lr, t counting from 0.

t is the epoch or the iteration (mini-batch number), as ``Trainer(schedule_unit=)`` says:
with ``"epoch"`` (default) the trainer sets lr = schedule(e) at the start of epoch e, with
``"iteration"`` lr = schedule(i) before step i. The course's lectures decay by either; its
assignment's loop sets decay(α0, e) *after* epoch e, so its epoch e + 1 runs at what accel
runs in epoch e (``lambda e: s(max(e - 1, 0))`` reproduces the lag).

========================  =====================================  ================================
schedule                  lr(t)                                  the course's name for it
========================  =====================================  ================================
InverseTimeDecay          lr0 / (1 + rate·t)                     lecture: α = α0/(1 + decay_rate·
                                                                 epoch_num); assignment update_lr
ExponentialDecay          lr0 · base^t (base 0.95)               lecture: "exponential decay",
                                                                 α = 0.95^epoch_num·α0
InverseSqrtDecay          lr0 / √t (lr0 at t = 0)                lecture: α = k/√epoch_num·α0,
                                                                 or k/√t with t the mini-batch
                                                                 number (lr0 = k·α0)
StaircaseDecay            lr0 / (1 + rate·⌊t/interval⌋)          assignment schedule_lr_decay:
                                                                 "fixed interval scheduling"
StepDecay                 lr0 · factor^⌊t/step⌋                  lecture: "discrete staircase"
                                                                 (PyTorch StepLR)
Constant                  lr0                                    no decay
========================  =====================================  ================================
"""

from __future__ import annotations

import math

from . import checks


class Schedule:
    """A learning-rate schedule: ``schedule(t)`` → lr, t the epoch or iteration from 0."""

    def __init__(self, lr0):
        self.lr0 = float(checks.positive("lr0", lr0))

    def __call__(self, t) -> float:
        """lr at ``t`` (the epoch or the iteration); ValueError naming this schedule when it
        is not a positive finite number there (it decayed to 0, or overflowed)."""
        try:
            lr = self.lr(checks.number("t (the epoch or iteration)", t, low=0))
        except OverflowError:
            lr = math.inf
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"{self!r} gives lr = {lr} at t = {t!r}: an lr must be a "
                             "positive finite number")
        return lr

    def lr(self, t) -> float:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class Constant(Schedule):
    """lr0 at every t."""

    def lr(self, t):
        return self.lr0


class StepDecay(Schedule):
    """lr0 · factor^⌊t/step⌋: the lectures' "discrete staircase" (PyTorch's StepLR)."""

    def __init__(self, lr0, step=10, factor=0.1):
        super().__init__(lr0)
        self.step = checks.positive("step", step, integer=True)
        self.factor = checks.positive("factor", factor)

    def lr(self, t):
        return self.lr0 * self.factor ** (t // self.step)


class ExponentialDecay(Schedule):
    """lr0 · base^t: the lectures' exponential decay α = 0.95^epoch_num·α0. Per iteration
    it shrinks lr ~iterations-per-epoch times faster (pick base closer to 1)."""

    def __init__(self, lr0, base=0.95):
        super().__init__(lr0)
        self.base = checks.positive("base", base)

    def lr(self, t):
        return self.lr0 * self.base ** t


class InverseSqrtDecay(Schedule):
    """lr0/√t: the lectures' α = k/√epoch_num·α0 per epoch, or k/√t with t the mini-batch
    number per iteration (lr0 = k·α0); t = 0 gives lr0 (1/√0 is undefined)."""

    def lr(self, t):
        return self.lr0 / math.sqrt(max(t, 1))


class InverseTimeDecay(Schedule):
    """lr0 / (1 + rate·t): the lectures' α = α0/(1 + decay_rate·epoch_num), the
    assignment's ``update_lr``."""

    def __init__(self, lr0, rate=1.0):
        super().__init__(lr0)
        self.rate = checks.non_negative("rate", rate)

    def lr(self, t):
        return self.lr0 / (1 + self.rate * t)


class StaircaseDecay(Schedule):
    """lr0 / (1 + rate·⌊t/interval⌋): inverse-time decay held fixed for ``interval`` epochs
    (or iterations), the assignment's ``schedule_lr_decay`` ("fixed interval scheduling")."""

    def __init__(self, lr0, rate=1.0, interval=1000):
        super().__init__(lr0)
        self.rate = checks.non_negative("rate", rate)
        self.interval = checks.positive("interval", interval, integer=True)

    def lr(self, t):
        return self.lr0 / (1 + self.rate * (t // self.interval))


SCHEDULES = {cls.__name__: cls for cls in (Constant, StepDecay, ExponentialDecay,
                                           InverseSqrtDecay, InverseTimeDecay,
                                           StaircaseDecay)}
