"""The non-finite guard: a training step whose loss or gradient is NaN/Inf is not applied,
decided on the device, with nothing read back per step.

Each step, one fused op (``functional.nonfinite_guard``, its kernels in
``accel.kernels.guard_*``) sums the loss, the flat gradient and the flat buffer of BatchNorm
running statistics (NaN and ±Inf survive a sum) and writes the verdict into a small device
record (layout: ``accel.kernels.guard_record``); the optimizer's kernel reads it and changes
nothing for a bad step, and the guard puts the running statistics back. The host reads the
record only where it waits for the device anyway (``sync``: the end of an epoch, a progress
refresh, before a checkpoint), and then raises ``NonFiniteError`` naming the first bad
iteration and the parameters (mode "raise": the record is sticky, so every step after the
bad one is skipped too and the parameters are those before it) or reports the skipped
iterations (mode "skip").
"""

from __future__ import annotations

import numpy as np

from . import dispatch
from . import functional as F
from .backend import to_numpy
from .kernels import guard_record as R

MODES = ("raise", "skip", None)


class NonFiniteError(FloatingPointError):
    """The loss or a gradient became NaN/Inf; ``iteration``, ``epoch`` and ``names`` (the
    parameters whose gradient is not finite) say where. The step was not applied."""

    def __init__(self, message, iteration=None, epoch=None, names=()):
        super().__init__(message)
        self.iteration, self.epoch, self.names = iteration, epoch, tuple(names)


class NonFiniteGuard:
    """The guard of ``network``'s training steps (mode "raise", "skip", or None: no check).

    ``step(x, t, iteration)`` → (loss, grads, record): the network's ``loss_and_grads`` and
    the guard's verdict on the device, for ``optimizer.update(..., record=record)``.
    ``sync()`` reads the record and empties it: None when every step since the last sync was
    finite, else a ``Verdict``. ``capacity`` bounds the skipped iterations listed per sync
    (all are counted).
    """

    def __init__(self, network, mode="raise", capacity=4096):
        if mode not in MODES:
            raise ValueError(f"on_nonfinite={mode!r} is not one of {MODES}")
        self.network, self.mode = network, mode
        if mode is None:
            return
        xp = network.backend.xp
        self.grad_names, g_starts = _blocks(network.grads)
        self.buffer_names, b_starts = _blocks(network.buffers)
        self.g_starts = xp.asarray(np.asarray(g_starts, dtype=np.int64))
        self.b_starts = xp.asarray(np.asarray(b_starts, dtype=np.int64))
        self.listed_at = R.FLAGS + len(self.grad_names) + len(self.buffer_names)
        self.record = xp.zeros(R.size(len(self.grad_names), len(self.buffer_names),
                                      capacity), dtype=np.int64)
        self.saved = network.buffers.flat.copy()
        self.site = dispatch.Site(F.nonfinite_guard)
        self.host_loss = None  # a (1,) array that NumPy's scalar losses are copied into

    def begin(self) -> None:
        """The running statistics as they are now are the ones a bad step puts back (call
        when they were changed outside the steps, e.g. loaded from a checkpoint)."""
        if self.mode is not None:
            self.saved[...] = self.network.buffers.flat

    def step(self, x, t, iteration):
        net = self.network
        loss, grads = net.loss_and_grads(x, t)
        if self.mode is None:
            return loss, grads, None
        if isinstance(loss, np.generic):  # NumPy's sums give scalars, not arrays
            held = self.host_loss
            if held is None or held.dtype != loss.dtype:
                held = self.host_loss = np.empty(1, loss.dtype)
            held[0] = loss  # the same array at every step: the call site's plan knows it
        else:
            held = loss.reshape(1)  # a device's 0-d array: a view, no copy to launch
        self.site(held, grads.flat, self.g_starts, net.buffers.flat,
                  self.b_starts, self.saved, self.record,
                  scalars=(iteration, self.mode == "raise"))
        return loss, grads, self.record

    def sync(self):
        """Read the record (one small device→host copy) and empty it; a ``Verdict`` or None."""
        if self.mode is None:
            return None
        rec = np.array(to_numpy(self.record))  # a copy: the record is emptied below
        if not rec[R.SKIPPED] and not rec[R.FIRST]:
            return None
        self.record[R.SKIPPED:] = 0
        n_g = len(self.grad_names)
        flags = rec[R.FLAGS:self.listed_at]
        n = int(rec[R.SKIPPED])
        return Verdict(
            skipped=n, iterations=[int(i) for i in rec[self.listed_at:self.listed_at + n]],
            first=int(rec[R.FIRST]), what=int(rec[R.WHAT]),
            gradients=[k for k, f in zip(self.grad_names, flags[:n_g]) if f],
            statistics=[k for k, f in zip(self.buffer_names, flags[n_g:]) if f],
            parameters=_nonfinite(self.network.params))

    def error(self, verdict, epoch) -> NonFiniteError:
        """The NonFiniteError for a verdict: what was not finite, at which iteration."""
        it = verdict.first
        if verdict.parameters:
            names = verdict.parameters
            what = (f"the parameters {', '.join(names)} are NaN/Inf (an update made them so: "
                    "the step before this one's was applied)")
        elif verdict.what & R.GRADIENT:
            names = verdict.gradients
            what = f"the gradient of {', '.join(names)} contains NaN/Inf"
        elif verdict.what & R.LOSS:
            names = ()
            what = "the loss is NaN/Inf (every gradient is finite)"
        elif verdict.what & R.STATISTICS:
            names = verdict.statistics
            what = (f"the BatchNorm running statistics {', '.join(names)} became NaN/Inf "
                    "(loss and gradients finite; they were put back)")
        else:
            names = ()
            what = (f"a sum overflows {self.network.grads.flat.dtype} (loss, gradients and "
                    "running statistics are each finite)")
        return NonFiniteError(
            f"non-finite values at iteration {it} (epoch {epoch}): {what}; the step was not "
            "applied. Lower the learning rate, check the inputs, or pass "
            "on_nonfinite='skip'", iteration=it, epoch=epoch, names=names)


class Verdict:
    """What a ``sync`` read: ``skipped`` steps (their ``iterations``, as far as listed), the
    ``first`` bad iteration and ``what`` was not finite there (guard_record bits), the
    ``gradients`` and running ``statistics`` blocks that held NaN/Inf, and the
    ``parameters`` that hold NaN/Inf now."""

    def __init__(self, skipped, iterations, first, what, gradients, statistics, parameters):
        self.skipped, self.iterations, self.first, self.what = skipped, iterations, first, what
        self.gradients, self.statistics, self.parameters = gradients, statistics, parameters


def _blocks(flat_dict):
    """(names in the order of the flat buffer, [start of each, ..., end]) of a FlatDict."""
    spans = sorted(flat_dict.offsets().items(), key=lambda kv: kv[1][0])
    names = [k for k, _ in spans]
    starts = [a for _, (a, _) in spans] + [flat_dict.flat.size]
    return names, starts


def _nonfinite(flat_dict) -> list:
    """Names of the views of a FlatDict that hold NaN/Inf (read on the host: at a sync)."""
    values = to_numpy(flat_dict.flat)
    return [k for k, (a, b) in flat_dict.offsets().items()
            if not np.isfinite(values[a:b]).all()]
