"""Early stopping (course 2, week 1, "other regularization methods"): stop training when the
validation accuracy stops improving, and keep the parameters of its best evaluation.

``EarlyStopping`` is an ``on_evaluate`` hook of ``accel.Trainer``; it can sit in a list
beside others (a search's pruning hook)::

    stop = accel.EarlyStopping(metric="val_acc", patience=5)
    Trainer(net, opt, x, t, validation_data=(x_val, t_val), on_evaluate=[stop]).fit()
"""

from __future__ import annotations

from . import checks

__all__ = ["EarlyStopping"]

METRICS = ("val_acc", "train_acc", "test_acc")  # History lists, one value per evaluation


class EarlyStopping:
    """Stop ``fit()`` when ``history.<metric>`` has not improved for ``patience`` evaluations.

    An evaluation improves when its value > best + ``min_delta`` (accuracies: higher is
    better); the first evaluation (epoch 0, before training) sets the first best. After
    ``patience`` evaluations in a row without improvement the trainer stops normally: no
    exception, ``History.stop_reason`` says why and ``History.stopped_epoch`` when. With
    ``restore_best`` the network is then given back the parameters *and* BatchNorm running
    statistics of its best evaluation (copies of the two flat buffers, taken on the device at
    each improvement). A run that reaches ``epochs`` without stopping keeps its last
    parameters; ``restore(network)`` takes the best ones on request.

    The state (best value and epoch, evaluations waited, the best parameters) is part of the
    Trainer's checkpoint, so a resumed run stops where the uninterrupted one would. Patience
    counts evaluations: epochs with ``evaluate_every=1`` (the default).
    """

    def __init__(self, metric: str = "val_acc", patience: int = 5, min_delta: float = 0.0,
                 restore_best: bool = True):
        self.metric = checks.one_of("metric", metric, METRICS)
        self.patience = checks.integer("patience", patience, low=0)
        self.min_delta = checks.non_negative("min_delta", min_delta)
        self.restore_best = checks.boolean("restore_best", restore_best)
        self.best = None  # best value so far, and the (fractional) epoch it was measured at
        self.best_epoch = None
        self.wait = 0  # evaluations since the best
        self._params = self._buffers = None  # the network's flat buffers at the best

    def __repr__(self) -> str:
        return (f"EarlyStopping(metric={self.metric!r}, patience={self.patience}, "
                f"min_delta={self.min_delta}, restore_best={self.restore_best})")

    def __call__(self, trainer) -> None:
        h = trainer.history
        values = getattr(h, self.metric)
        if len(values) != len(h.epoch):
            raise ValueError(f"EarlyStopping(metric={self.metric!r}): the trainer records no "
                             f"{self.metric} (pass "
                             + ("validation_data=(x_val, t_val)" if self.metric == "val_acc"
                                else "x_test and t_test") + ")")
        value, epoch = float(values[-1]), h.epoch[-1]
        if self.best is None or value > self.best + self.min_delta:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best:
                self._snapshot(trainer.network)
            return
        self.wait += 1
        if self.wait >= self.patience:
            restored = ""
            if self.restore_best:
                self.restore(trainer.network)
                restored = f"; parameters restored to epoch {self.best_epoch:g}"
            trainer.request_stop(
                f"early stopping: {self.metric} did not improve by more than "
                f"{self.min_delta:g} for {self.wait} evaluation(s) (best {self.best:.4g} at "
                f"epoch {self.best_epoch:g}){restored}")

    # -- the best parameters

    def _snapshot(self, network) -> None:
        self._params = _copy_into(self._params, network.params.flat)
        self._buffers = _copy_into(self._buffers, network.buffers.flat)

    def restore(self, network) -> None:
        """Copy the best evaluation's parameters and BatchNorm running statistics into
        ``network`` (the one being trained). RuntimeError when none were kept."""
        if self._params is None:
            raise RuntimeError("EarlyStopping has no parameters to restore (restore_best=False, "
                               "or no evaluation yet)")
        for name, target, saved in (("params", network.params.flat, self._params),
                                    ("buffers", network.buffers.flat, self._buffers)):
            if saved.shape != target.shape or saved.dtype != target.dtype:
                raise ValueError(f"the kept {name} are {saved.dtype} {saved.shape}, the network "
                                 f"has {target.dtype} {target.shape}: another network")
            target[...] = network.backend.asarray(saved)

    # -- checkpoints (the state protocol of accel.checkpoint)

    def state_dict(self) -> dict:
        return {"metric": self.metric, "best": self.best, "best_epoch": self.best_epoch,
                "wait": self.wait,
                "params": None if self._params is None else self._params.copy(),
                "buffers": None if self._buffers is None else self._buffers.copy()}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a ``state_dict`` (checked before anything changes). The settings
        (patience, min_delta, restore_best) stay this object's; the metric must match."""
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict, got {type(state).__name__}")
        if state.get("metric") != self.metric:
            raise ValueError(f"the saved early stopping watched {state.get('metric')!r}, this "
                             f"one watches {self.metric!r}")
        best, wait = state.get("best"), state.get("wait")
        if best is not None:
            checks.number("best", best)
        checks.integer("wait", wait, low=0)
        arrays = [state.get("params"), state.get("buffers")]
        if (arrays[0] is None) != (arrays[1] is None) or any(
                a is not None and (getattr(a, "ndim", None) != 1 or a.dtype.kind != "f")
                for a in arrays):
            raise ValueError("the saved best parameters must be two 1-D float arrays or none")
        self.best, self.best_epoch, self.wait = best, state.get("best_epoch"), wait
        self._params, self._buffers = arrays


def _copy_into(kept, flat):
    """``flat`` copied into ``kept`` when it fits (no new allocation), else a new copy."""
    if kept is not None and type(kept) is type(flat) and kept.shape == flat.shape and \
            kept.dtype == flat.dtype:
        kept[...] = flat
        return kept
    return flat.copy()
