"""Trainer: shuffled mini-batch epochs with an optimizer and an optional lr schedule."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from . import checks
from .progress import Progress


@dataclass
class History:
    """What a run recorded: loss per iteration; accuracies and lr per evaluation.

    ``epoch[i]`` is the (possibly fractional, when stopped by ``max_iterations``) epoch at
    which ``train_acc[i]`` and ``test_acc[i]`` were measured; index 0 is before training.
    """

    train_loss: list = field(default_factory=list)
    epoch: list = field(default_factory=list)
    train_acc: list = field(default_factory=list)
    test_acc: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    iterations: int = 0
    elapsed_s: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


class Trainer:
    """Train ``network`` with ``optimizer`` on (x_train, t_train).

    Each epoch visits the training set once in a fresh random order (seeded by ``seed``, so
    two trainers with the same seed see the same mini-batches), including the last partial
    batch; ``max_iterations`` stops early. ``schedule(epoch)`` sets ``optimizer.lr`` at the
    start of each epoch. After every epoch the accuracies are measured on
    ``evaluate_sample`` samples of each set (all when None). Progress is a bar on a
    terminal and one line per epoch otherwise; ``verbose=False`` prints nothing.
    """

    def __init__(self, network, optimizer, x_train, t_train, x_test=None, t_test=None, *,
                 epochs=20, batch_size=100, schedule=None, evaluate_sample=None,
                 max_iterations=None, seed=None, verbose=True):
        self.network, self.optimizer, self.schedule = network, optimizer, schedule
        self.epochs = checks.positive("epochs", epochs, integer=True)
        self.batch_size = checks.positive("batch_size", batch_size, integer=True)
        if max_iterations is not None:
            checks.positive("max_iterations", max_iterations, integer=True)
        if evaluate_sample is not None:
            checks.positive("evaluate_sample", evaluate_sample, integer=True)
        self.max_iterations, self.evaluate_sample = max_iterations, evaluate_sample
        self.verbose = verbose
        # Checked and moved to the device once, so the loop itself does no checking.
        self.x_train = network._x(x_train)
        self.t_train = network._t(t_train, self.x_train.shape[0])
        self.x_test = self.t_test = None
        if (x_test is None) != (t_test is None):
            raise ValueError("x_test and t_test must be given together")
        if x_test is not None:
            self.x_test = network._x(x_test)
            self.t_test = network._t(t_test, self.x_test.shape[0])
        self.rng = np.random.default_rng(seed)
        self.history = History()

    @property
    def n_train(self) -> int:
        return self.x_train.shape[0]

    def iterations_per_epoch(self) -> int:
        return -(-self.n_train // self.batch_size)

    def _sample(self, x, t):
        n = self.evaluate_sample
        if n is None or n >= x.shape[0]:
            return x, t
        return x[:n], t[:n]

    def evaluate(self, epoch) -> None:
        """Record train/test accuracy at ``epoch``."""
        h, net = self.history, self.network
        h.epoch.append(epoch)
        h.train_acc.append(net._accuracy(*self._sample(self.x_train, self.t_train)))
        if self.x_test is not None:
            h.test_acc.append(net._accuracy(*self._sample(self.x_test, self.t_test)))
        h.lr.append(self.optimizer.lr)

    def step(self, x, t) -> None:
        """One mini-batch: gradient, then optimizer update."""
        grads = self.network._gradient(x, t)
        self.optimizer.update(self.network.params, grads)

    def fit(self) -> History:
        """Run the epochs; returns (and keeps in ``self.history``) the History."""
        h, net, xp = self.history, self.network, self.network.backend.xp
        start = time.perf_counter()
        skip_single = net.batchnorm  # a batch of one has no variance to normalize by
        if self.schedule is not None:
            self.optimizer.lr = self.schedule(0)
        self.evaluate(0)
        per_epoch = self.iterations_per_epoch()
        for epoch in range(self.epochs):
            if self.schedule is not None:
                self.optimizer.lr = self.schedule(epoch)
            bar = Progress(per_epoch, f"epoch {epoch + 1}/{self.epochs}", enabled=self.verbose)
            order = xp.asarray(self.rng.permutation(self.n_train))
            losses = []
            for s in range(0, self.n_train, self.batch_size):
                idx = order[s:s + self.batch_size]
                if skip_single and idx.shape[0] < 2:
                    continue
                self.step(self.x_train[idx], self.t_train[idx])
                losses.append(net.last_loss)
                h.iterations += 1
                if self.verbose and bar.tty:
                    bar.update(1, loss=float(net.last_loss))
                if self.max_iterations is not None and h.iterations >= self.max_iterations:
                    break
            # Losses stay on the device until the epoch ends: one transfer, not one per step.
            if losses:
                h.train_loss.extend(xp.stack(losses).astype(float).tolist())
            done = self.max_iterations is not None and h.iterations >= self.max_iterations
            frac = (s + self.batch_size) / self.n_train if done else 1.0
            self.evaluate(round(epoch + min(frac, 1.0), 4))
            info = {"loss": h.train_loss[-1] if h.train_loss else float("nan"),
                    "train_acc": h.train_acc[-1]}
            if h.test_acc:
                info["test_acc"] = h.test_acc[-1]
            info["lr"] = self.optimizer.lr
            bar.close(**info)
            if done:
                break
        h.elapsed_s = time.perf_counter() - start
        return h
