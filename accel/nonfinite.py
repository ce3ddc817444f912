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
    """``loss_and_grads(x, t)`` of ``network``, checked: sum(loss, the flat gradient) is one
    reduction, and NaN and ±Inf survive a sum. A bad step restores the BatchNorm running
    statistics its forward pass moved, then raises NonFiniteError (mode "raise") or returns
    (loss, None) (mode "skip"). Mode None checks nothing."""

    def __init__(self, network, mode="raise"):
        if mode not in MODES:
            raise ValueError(f"on_nonfinite={mode!r} is not one of {MODES}")
        self.network, self.mode = network, mode

    def loss_and_grads(self, x, t, iteration, epoch):
        net = self.network
        if self.mode is None:
            return net.loss_and_grads(x, t)
        bns = net.batchnorm_layers()
        saved = [(bn.running_mean.copy(), bn.running_var.copy()) for bn in bns]
        loss, grads = net.loss_and_grads(x, t)
        if bool(net.backend.xp.isfinite(loss + grads.flat.sum())):
            return loss, grads
        for bn, (mean, var) in zip(bns, saved):
            bn.running_mean[...] = mean
            bn.running_var[...] = var
        if self.mode == "raise":
            raise self.error(loss, iteration, epoch)
        return loss, None

    def error(self, loss, iteration, epoch) -> NonFiniteError:
        """Name the parameters whose gradient holds NaN/Inf (found through the offsets of
        their views in the flat buffer; this runs only after the cheap check failed)."""
        xp, grads = self.network.backend.xp, self.network.grads
        loss = float(loss)
        bad = [k for k, (a, b) in grads.offsets().items()
               if not bool(xp.isfinite(grads.flat[a:b]).all())]
        if bad:
            what = f"the gradient of {', '.join(bad)} contains NaN/Inf (loss {loss})"
        elif not np.isfinite(loss):
            what = f"the loss is {loss} (every gradient is finite)"
        else:
            big = max(grads.offsets().items(),
                      key=lambda kv: float(xp.abs(grads.flat[kv[1][0]:kv[1][1]]).max()))[0]
            what = f"the gradient's sum overflows {grads.flat.dtype} (largest in {big})"
        return NonFiniteError(
            f"non-finite values at iteration {iteration} (epoch {epoch}): {what}; the step "
            "was not applied. Lower the learning rate, check the inputs, or pass "
            "on_nonfinite='skip'", iteration=iteration, epoch=epoch, names=bad)
