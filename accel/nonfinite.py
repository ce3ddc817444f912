"""The non-finite guard: a training step whose loss or gradient is NaN/Inf is not applied."""

from __future__ import annotations

import numpy as np

MODES = ("raise", "skip", None)


class NonFiniteError(FloatingPointError):
    """The loss or a gradient became NaN/Inf; ``iteration``, ``epoch`` and ``names`` (the
    parameters whose gradient is not finite) say where. The step was not applied."""

    def __init__(self, message, iteration=None, epoch=None, names=()):
        super().__init__(message)
        self.iteration, self.epoch, self.names = iteration, epoch, tuple(names)


class NonFiniteGuard:
    """``loss_and_grads(x, t)`` of ``network``, checked: the loss, the flat gradient and the
    flat buffer of BatchNorm running statistics are summed (one reduction each; NaN and ±Inf
    survive a sum). A bad step puts back the running statistics its forward pass moved, then
    raises NonFiniteError (mode "raise") or returns (loss, None) (mode "skip"). Mode None
    checks nothing."""

    def __init__(self, network, mode="raise"):
        if mode not in MODES:
            raise ValueError(f"on_nonfinite={mode!r} is not one of {MODES}")
        self.network, self.mode = network, mode

    def loss_and_grads(self, x, t, iteration, epoch):
        net = self.network
        if self.mode is None:
            return net.loss_and_grads(x, t)
        buffers = net.buffers.flat
        saved = buffers.copy() if buffers.size else None
        loss, grads = net.loss_and_grads(x, t)
        total = loss + grads.flat.sum()
        if saved is not None:
            total = total + buffers.sum()
        xp = net.backend.xp
        if bool(xp.isfinite(total)):
            return loss, grads
        bad_stats = []
        if saved is not None:
            bad_stats = _nonfinite(net.buffers, xp)
            buffers[...] = saved
        if self.mode == "raise":
            raise self.error(loss, grads, bad_stats, iteration, epoch)
        return loss, None

    def error(self, loss, grads, bad_stats, iteration, epoch) -> NonFiniteError:
        """Say what is not finite: the gradients of which parameters, the loss, or which
        running statistics (found through the offsets of the views in the flat buffers; this
        runs only after the cheap check failed)."""
        xp = self.network.backend.xp
        loss = float(loss)
        bad = _nonfinite(grads, xp)
        if bad:
            what = f"the gradient of {', '.join(bad)} contains NaN/Inf (loss {loss})"
        elif not np.isfinite(loss):
            what = f"the loss is {loss} (every gradient is finite)"
        elif bad_stats:
            bad = bad_stats
            what = (f"the BatchNorm running statistics {', '.join(bad)} became NaN/Inf "
                    f"(loss {loss} and gradients finite; they were put back)")
        else:
            big = max(grads.offsets().items(),
                      key=lambda kv: float(xp.abs(grads.flat[kv[1][0]:kv[1][1]]).max()))[0]
            what = f"a sum overflows {grads.flat.dtype} (largest gradient in {big})"
        return NonFiniteError(
            f"non-finite values at iteration {iteration} (epoch {epoch}): {what}; the step "
            "was not applied. Lower the learning rate, check the inputs, or pass "
            "on_nonfinite='skip'", iteration=iteration, epoch=epoch, names=bad)


def _nonfinite(flat_dict, xp) -> list:
    """Names of the views of a FlatDict that hold NaN/Inf."""
    return [k for k, (a, b) in flat_dict.offsets().items()
            if not bool(xp.isfinite(flat_dict.flat[a:b]).all())]
