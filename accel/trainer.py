"""Trainer: shuffled mini-batch epochs with an optimizer and an optional lr schedule.

Reliability: optional checkpoints every N epochs and an exact ``resume=``, a non-finite guard
(on by default), and Ctrl-C handling that stops at a step boundary, writes a final checkpoint
and raises ``TrainingInterrupted``.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from . import checkpoint, checks
from .progress import Progress

CHECKPOINT_NAME = "last.npz"
NONFINITE_MODES = ("raise", "skip", None)


class NonFiniteError(FloatingPointError):
    """The loss or a gradient became NaN/Inf; ``iteration``, ``epoch`` and ``names`` (the
    parameters whose gradient is not finite) say where. The step was not applied."""

    def __init__(self, message, iteration=None, epoch=None, names=()):
        super().__init__(message)
        self.iteration, self.epoch, self.names = iteration, epoch, tuple(names)


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped ``Trainer.fit`` at a step boundary. ``checkpoint`` is the path of the
    checkpoint written on the way out (None when checkpointing is off), ``history`` the
    History so far. A KeyboardInterrupt, so an uncaught one ends a script as Ctrl-C does."""

    def __init__(self, message, checkpoint=None, history=None):
        super().__init__(message)
        self.checkpoint, self.history = checkpoint, history


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
    skipped_steps: int = 0  # steps not applied because of NaN/Inf (on_nonfinite="skip")
    skipped: list = field(default_factory=list)  # their iteration numbers (1-based)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> History:
        """The History ``to_dict`` described (unknown keys refused)."""
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"History.from_dict: unknown keys {sorted(unknown)}")
        return cls(**{k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in d.items()})


class Trainer:
    """Train ``network`` with ``optimizer`` on (x_train, t_train).

    Each epoch visits the training set once in a fresh random order (seeded by ``seed``, so
    two trainers with the same seed see the same mini-batches), including the last partial
    batch; ``max_iterations`` stops early. ``schedule(epoch)`` sets ``optimizer.lr`` at the
    start of each epoch. Every ``evaluate_every`` epochs (and after the last) the accuracies
    are measured on ``evaluate_sample`` samples of each set (all when None). Progress is a bar on a
    terminal and one line per epoch otherwise; ``verbose=False`` prints nothing.

    Reliability:

    - ``checkpoint_dir``: write ``<checkpoint_dir>/last.npz`` (atomically) every
      ``checkpoint_every`` epochs (default 1), when the run ends, and on Ctrl-C. It holds the
      network, the optimizer state, the epoch and position in it, the shuffling generator's
      state and the history.
    - ``resume``: a checkpoint path (or True: ``<checkpoint_dir>/last.npz`` if it exists) to
      continue from. The resumed run is bit-identical to an uninterrupted one on the same
      backend. Pass the same network architecture, optimizer type, data and batch size;
      ``epochs`` may be larger than the saved run's (to train longer).
    - ``on_nonfinite``: "raise" (default) stops with NonFiniteError naming the iteration and
      the parameters whose gradient is NaN/Inf; "skip" drops that step (no update, BatchNorm
      running statistics restored) and counts it in ``History.skipped_steps``; None turns the
      check off. The check is one reduction over the flat gradient buffer per step.
    - Ctrl-C (SIGINT) stops at the next step boundary, writes a final checkpoint when
      ``checkpoint_dir`` is set, prints its path and raises TrainingInterrupted (a
      KeyboardInterrupt); a second Ctrl-C stops at once.
    """

    def __init__(self, network, optimizer, x_train, t_train, x_test=None, t_test=None, *,
                 epochs=20, batch_size=100, schedule=None, evaluate_sample=None,
                 evaluate_every=1, max_iterations=None, seed=None, verbose=True,
                 checkpoint_dir=None, checkpoint_every=None, resume=None,
                 on_nonfinite="raise"):
        self.network, self.optimizer, self.schedule = network, optimizer, schedule
        if not callable(getattr(optimizer, "update", None)):
            raise TypeError(f"optimizer must have an update(params, grads) method, got "
                            f"{optimizer!r}")
        if schedule is not None and not callable(schedule):
            raise TypeError(f"schedule must be a callable epoch -> lr, got {schedule!r}")
        if on_nonfinite not in NONFINITE_MODES:
            raise ValueError(f"on_nonfinite={on_nonfinite!r} is not one of {NONFINITE_MODES}")
        self.on_nonfinite = on_nonfinite
        if checkpoint_every is not None:
            checks.positive("checkpoint_every", checkpoint_every, integer=True)
            if checkpoint_dir is None:
                raise ValueError(f"checkpoint_every={checkpoint_every!r} needs checkpoint_dir")
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.checkpoint_every = checkpoint_every or 1
        if resume is True:
            if self.checkpoint_dir is None:
                raise ValueError("resume=True needs checkpoint_dir (or pass a checkpoint path)")
            resume = self.checkpoint_path if self.checkpoint_path.is_file() else None
        elif resume is False:
            resume = None
        elif resume is not None:
            if not isinstance(resume, (str, Path)):
                raise TypeError(f"resume must be a path or True, got {resume!r}")
            if not Path(resume).is_file():
                raise FileNotFoundError(f"resume={str(resume)!r}: no checkpoint file there")
        self.resume = resume
        self.epochs = checks.positive("epochs", epochs, integer=True)
        self.batch_size = checks.positive("batch_size", batch_size, integer=True)
        if max_iterations is not None:
            checks.positive("max_iterations", max_iterations, integer=True)
        if evaluate_sample is not None:
            checks.positive("evaluate_sample", evaluate_sample, integer=True)
        self.max_iterations, self.evaluate_sample = max_iterations, evaluate_sample
        self.evaluate_every = checks.positive("evaluate_every", evaluate_every, integer=True)
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
        self.rng = np.random.default_rng(checks.seed("seed", seed))
        self.history = History()
        self.epoch, self.offset = 0, 0  # where the next step starts: epoch, sample index
        self._epoch_rng_state = None  # the shuffling state before this epoch's permutation
        self.last_checkpoint = None

    @property
    def n_train(self) -> int:
        return self.x_train.shape[0]

    @property
    def checkpoint_path(self):
        """``<checkpoint_dir>/last.npz``, or None when checkpointing is off."""
        return None if self.checkpoint_dir is None else self.checkpoint_dir / CHECKPOINT_NAME

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

    def step(self, x, t) -> bool:
        """One mini-batch: gradient, non-finite check, then optimizer update. Returns False
        when the step was skipped (on_nonfinite="skip"); raises NonFiniteError ("raise")."""
        net = self.network
        if self.on_nonfinite is None:
            self.optimizer.update(net.params, net._gradient(x, t))
            return True
        bns = net.batchnorm_layers()
        saved = [(bn.running_mean.copy(), bn.running_var.copy()) for bn in bns]
        grads = net._gradient(x, t)
        # One reduction over the flat buffer; NaN and ±Inf survive a sum.
        if bool(net.backend.xp.isfinite(net.last_loss + grads.flat.sum())):
            self.optimizer.update(net.params, grads)
            return True
        for bn, (mean, var) in zip(bns, saved):  # the bad forward pass moved them
            bn.running_mean[...] = mean
            bn.running_var[...] = var
        iteration = self.history.iterations + 1
        if self.on_nonfinite == "raise":
            raise self._nonfinite_error(iteration)
        self.history.skipped_steps += 1
        self.history.skipped.append(iteration)
        return False

    def _nonfinite_error(self, iteration) -> NonFiniteError:
        """Name the parameters whose gradient holds NaN/Inf (found through the offsets of
        their views in the flat buffer; this runs only after the cheap check failed)."""
        net, xp = self.network, self.network.backend.xp
        grads = net.grads
        loss = float(net.last_loss)
        bad = [k for k, (a, b) in grads.offsets().items()
               if not bool(xp.isfinite(grads.flat[a:b]).all())]
        where = f"iteration {iteration} (epoch {self.epoch + 1})"
        if bad:
            what = f"the gradient of {', '.join(bad)} contains NaN/Inf (loss {loss})"
        elif not np.isfinite(loss):
            what = f"the loss is {loss} (every gradient is finite)"
        else:
            big = max(grads.offsets().items(),
                      key=lambda kv: float(xp.abs(grads.flat[kv[1][0]:kv[1][1]]).max()))[0]
            what = f"the gradient's sum overflows {grads.flat.dtype} (largest in {big})"
        return NonFiniteError(
            f"non-finite values at {where}: {what}; the step was not applied. Lower the "
            "learning rate, check the inputs, or pass on_nonfinite='skip'",
            iteration=iteration, epoch=self.epoch + 1, names=bad)

    # -- checkpoints

    def state(self) -> tuple[dict, dict]:
        """(header, arrays) of a Trainer checkpoint at the current step boundary."""
        h = self.history
        net_section, arrays = self.network.state()
        sd = self.optimizer.state_dict()
        for key, named in sd["state"].items():
            for n, a in named.items():
                arrays[f"optimizer/{key}/{n}"] = a
        rng = self._epoch_rng_state if self.offset else self.rng.bit_generator.state
        hist = h.to_dict()
        arrays["history/train_loss"] = np.asarray(hist.pop("train_loss"), dtype=np.float64)
        header = {
            "kind": "trainer",
            "network": net_section,
            "optimizer": {"type": sd["type"], "hyperparameters": sd["hyperparameters"],
                          "t": sd["t"], "keys": list(sd["state"])},
            "trainer": {"epoch": self.epoch, "offset": self.offset, "rng": rng,
                        "n_train": self.n_train, "batch_size": self.batch_size,
                        "epochs": self.epochs, "history": hist},
        }
        return header, arrays

    def save_checkpoint(self, path=None) -> Path:
        """Write a checkpoint (default ``checkpoint_path``) atomically; returns its path."""
        path = self.checkpoint_path if path is None else Path(path)
        if path is None:
            raise ValueError("save_checkpoint needs a path when checkpoint_dir is not set")
        header, arrays = self.state()
        self.last_checkpoint = checkpoint.save(path, header, arrays)
        return self.last_checkpoint

    def load_checkpoint(self, path) -> None:
        """Restore network, optimizer, position, shuffling generator and history from the
        Trainer checkpoint at ``path`` (CheckpointError/ValueError if it does not fit)."""
        header, arrays = checkpoint.load(path)
        if header.get("kind") != "trainer":
            raise checkpoint.CheckpointError(
                f"{path}: a {header.get('kind')!r} checkpoint, not a Trainer checkpoint")
        try:
            tr, opt = header["trainer"], header["optimizer"]
            for name, mine in (("n_train", self.n_train), ("batch_size", self.batch_size)):
                if tr[name] != mine:
                    raise ValueError(f"{path}: saved with {name}={tr[name]}, this trainer has "
                                     f"{name}={mine}; resume needs the same data and batches")
            if opt["type"] != type(self.optimizer).__name__:
                raise ValueError(f"{path}: saved with a {opt['type']} optimizer, this trainer "
                                 f"has {type(self.optimizer).__name__}")
            state = {key: {n: arrays[f"optimizer/{key}/{n}"]
                           for n in type(self.optimizer).state_names} for key in opt["keys"]}
            hist = dict(tr["history"], train_loss=arrays["history/train_loss"].tolist())
            history = History.from_dict(hist)
            epoch, offset, rng = int(tr["epoch"]), int(tr["offset"]), tr["rng"]
            if not 0 <= offset < self.n_train or epoch < 0:
                raise checkpoint.CheckpointError(f"{path}: bad position epoch={epoch}, "
                                                 f"offset={offset}")
            rng_type = rng["bit_generator"]
        except (KeyError, TypeError, AttributeError) as exc:
            raise checkpoint.CheckpointError(
                f"{path}: malformed Trainer checkpoint ({type(exc).__name__}: {exc})") from exc
        if rng_type != type(self.rng.bit_generator).__name__:
            raise checkpoint.CheckpointError(f"{path}: shuffling generator {rng_type!r}")
        self.network.load_state(header["network"], arrays, path)
        self.optimizer.load_state_dict(
            {"type": opt["type"], "hyperparameters": opt["hyperparameters"], "t": opt["t"],
             "state": state}, backend=self.network.backend)
        self.rng.bit_generator.state = rng
        self.history, self.epoch, self.offset = history, epoch, offset

    # -- the loop

    def fit(self) -> History:
        """Run the epochs; returns (and keeps in ``self.history``) the History.

        With ``resume``, first restores the checkpoint and continues where it stopped.
        Ctrl-C: see the class docstring (raises TrainingInterrupted)."""
        if self.resume is not None:
            path, self.resume = self.resume, None  # a second fit() continues from memory
            self.load_checkpoint(path)
            if self.verbose:
                print(f"accel: resumed from {path} at epoch {self.epoch + 1}, iteration "
                      f"{self.history.iterations}", file=sys.stderr)
        elif not self.history.epoch:
            if self.schedule is not None:
                self.optimizer.lr = self.schedule(0)
            self.evaluate(0)
        with _SigintFlag() as sigint:
            try:
                return self._loop(sigint)
            except KeyboardInterrupt as exc:
                if isinstance(exc, TrainingInterrupted):
                    raise
                last = f"; the last checkpoint is {self.last_checkpoint}" if (
                    self.last_checkpoint) else ""
                print(f"accel: stopped at once, no checkpoint written{last}", file=sys.stderr)
                raise

    def _loop(self, sigint) -> History:
        h, net, xp = self.history, self.network, self.network.backend.xp
        start, elapsed0 = time.perf_counter(), h.elapsed_s
        skip_single = net.batchnorm  # a batch of one has no variance to normalize by
        per_epoch = self.iterations_per_epoch()
        done = self.max_iterations is not None and h.iterations >= self.max_iterations
        while self.epoch < self.epochs and not done:
            epoch = self.epoch
            if self.offset == 0 and self.schedule is not None:
                self.optimizer.lr = self.schedule(epoch)
            bar = Progress(per_epoch, f"epoch {epoch + 1}/{self.epochs}", enabled=self.verbose)
            self._epoch_rng_state = self.rng.bit_generator.state
            order = xp.asarray(self.rng.permutation(self.n_train))
            losses = []
            s = self.offset
            for s in range(self.offset, self.n_train, self.batch_size):
                idx = order[s:s + self.batch_size]
                if not (skip_single and idx.shape[0] < 2):
                    self.step(self.x_train[idx], self.t_train[idx])
                    losses.append(net.last_loss)
                    h.iterations += 1
                    if self.verbose and bar.tty:
                        bar.update(1, loss=float(net.last_loss))
                self.offset = min(s + self.batch_size, self.n_train) % self.n_train
                done = self.max_iterations is not None and h.iterations >= self.max_iterations
                if sigint.hit and self.offset:
                    self._flush(losses)
                    h.elapsed_s = elapsed0 + time.perf_counter() - start
                    self._interrupted()
                if done:
                    break
            # Losses stay on the device until the epoch ends: one transfer, not one per step.
            self._flush(losses)
            frac = (s + self.batch_size) / self.n_train if done else 1.0
            last = done or epoch + 1 >= self.epochs
            info = {"loss": h.train_loss[-1] if h.train_loss else float("nan")}
            if last or (epoch + 1) % self.evaluate_every == 0:
                self.evaluate(round(epoch + min(frac, 1.0), 4))
                info["train_acc"] = h.train_acc[-1]
                if h.test_acc:
                    info["test_acc"] = h.test_acc[-1]
            elif not bar.tty:
                bar.enabled = False  # a plain log gets a line per evaluation only
            self.epoch, self.offset = epoch + 1, 0
            info["lr"] = self.optimizer.lr
            bar.close(**info)
            h.elapsed_s = elapsed0 + time.perf_counter() - start
            if self.checkpoint_dir is not None and (
                    last or self.epoch % self.checkpoint_every == 0 or sigint.hit):
                self.save_checkpoint()
            if sigint.hit:
                self._interrupted()
        h.elapsed_s = elapsed0 + time.perf_counter() - start
        return h

    def _flush(self, losses) -> None:
        if losses:
            xp = self.network.backend.xp
            self.history.train_loss.extend(xp.stack(losses).astype(float).tolist())
            losses.clear()

    def _interrupted(self):
        h = self.history
        where = f"epoch {self.epoch + 1}, iteration {h.iterations}"
        if self.checkpoint_dir is None:
            msg = (f"interrupted at {where}; no checkpoint written (pass checkpoint_dir= to "
                   "keep one)")
            path = None
        else:
            path = self.last_checkpoint if self.offset == 0 and self.last_checkpoint else \
                self.save_checkpoint()
            msg = (f"interrupted at {where}; checkpoint written to {path} (continue with "
                   f"Trainer(..., resume={str(path)!r}))")
        print(f"accel: {msg}", file=sys.stderr)
        raise TrainingInterrupted(msg, checkpoint=path, history=h)


class _SigintFlag:
    """While active (in the main thread, when SIGINT has Python's default handler), the
    first Ctrl-C only sets ``hit``, so the loop stops at a step boundary with consistent
    state; a second Ctrl-C raises KeyboardInterrupt at once."""

    def __init__(self):
        self.hit = False
        self._previous = None

    def __enter__(self):
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, signum, frame):
        if self.hit:
            raise KeyboardInterrupt
        self.hit = True
        print("\naccel: interrupt received, stopping after this step (Ctrl-C again to stop at "
              "once)", file=sys.stderr)

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False
