"""Trainer: shuffled mini-batch epochs with an optimizer and an optional lr schedule.

Reliability: optional checkpoints every N epochs and an exact ``resume=``, a non-finite guard
(on by default), and Ctrl-C handling that stops at a step boundary, writes a final checkpoint
and raises ``TrainingInterrupted``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from . import checkpoint, checks
from .history import History
from .interrupt import StepBoundary, TrainingInterrupted
from .nonfinite import MODES as NONFINITE_MODES
from .nonfinite import NonFiniteError, NonFiniteGuard
from .preprocessing import batch_bounds, minibatch_partition

__all__ = ["Trainer", "History", "NonFiniteError", "TrainingInterrupted"]

CHECKPOINT_NAME = "last.npz"
RECORD_LOSS = ("before_update", "after_update")
SCHEDULE_UNITS = ("epoch", "iteration")


class Trainer:
    """Train ``network`` with ``optimizer`` on (x_train, t_train).

    Each epoch visits the training set once in a fresh random order (seeded by ``seed``, so
    two trainers with the same seed see the same mini-batches), cut by
    ``accel.preprocessing.minibatch_partition``: full batches and the last partial batch
    (for a BatchNorm network a last batch of one sample is merged into the one before it:
    ``iterations_per_epoch()`` counts the steps); ``max_iterations`` stops early.

    ``schedule`` (a callable t → lr, e.g. ``accel.schedules``) sets ``optimizer.lr``:
    with ``schedule_unit="epoch"`` (default) to ``schedule(e)`` at the start of epoch e
    (from 0: the first epoch runs at schedule(0); the course's loop sets decay(α0, e) after
    epoch e, one epoch later); with ``"iteration"`` to ``schedule(i)`` before step i, i
    counted from 0 over the whole run (a resume continues the count).

    Every ``evaluate_every`` epochs (and after the last) the accuracies are measured on
    ``evaluate_sample`` samples of each set (all when None): training data,
    ``validation_data=(x_val, t_val)`` into ``History.val_acc``, and (x_test, t_test) into
    ``History.test_acc``; then each ``on_evaluate`` hook (a callable or a list of them, in
    order) is called with the trainer. A hook ends the run normally by
    ``trainer.request_stop(reason)`` (``accel.EarlyStopping`` does), or at once by raising
    (a search's "prune this trial"); hooks with a ``state_dict`` are saved in checkpoints.
    Progress is a tqdm bar on a terminal or in a notebook and one line per evaluation
    otherwise; ``verbose=False`` prints nothing.

    Reliability:

    - ``checkpoint_dir``: write ``<checkpoint_dir>/last.npz`` (atomically) every
      ``checkpoint_every`` epochs (default 1), when the run ends, and on Ctrl-C. It holds the
      network, the optimizer state, the epoch and position in it, the shuffling generator's
      state and the history.
    - ``resume``: a checkpoint path (or True: ``<checkpoint_dir>/last.npz`` if it exists when
      ``fit()`` starts) to continue from. The resumed run is bit-identical to an
      uninterrupted one on the same backend, parameters and history. Pass the same network
      architecture, optimizer type, data and batch size; ``epochs`` may be larger than the
      saved run's (to train longer).
    - ``fit()`` called again on the same trainer (after Ctrl-C, or with a larger
      ``epochs``/``max_iterations``) continues exactly where it stopped, as a resume would
      (with ``resume=True``, from the folder's checkpoint if another run has written one
      since). An evaluation made only because the run stopped off the ``evaluate_every``
      grid (at ``max_iterations``, or at ``epochs`` raised later) is replaced when it goes on.
    - Every write into ``checkpoint_dir`` (``fit()``'s and ``save_checkpoint()``'s) holds the
      folder's lock: a second run there gets DirectoryInUseError.
    - ``on_nonfinite``: "raise" (default) stops with NonFiniteError naming the iteration and
      the parameters whose gradient is NaN/Inf; "skip" drops that step (no update, BatchNorm
      running statistics restored) and counts it in ``History.skipped_steps``; None turns the
      check off. The check is one fused op per step, decided on the device (``accel.nonfinite``):
      the host learns of a bad step where it waits for the device anyway (the end of the
      epoch, a progress refresh), and then raises or counts it; with "raise" every step
      after the bad one is skipped too, so the parameters, the optimizer state and its step
      counter, the running statistics and ``History.iterations`` are those before it.
    - Ctrl-C (SIGINT) stops at the next step boundary, writes a final checkpoint when
      ``checkpoint_dir`` is set, prints its path and raises TrainingInterrupted (a
      KeyboardInterrupt); a second Ctrl-C stops at once.
    """

    def __init__(self, network, optimizer, x_train, t_train, x_test=None, t_test=None, *,
                 epochs=20, batch_size=100, schedule=None, evaluate_sample=None,
                 evaluate_every=1, max_iterations=None, seed=None, verbose=True,
                 validation_data=None, on_evaluate=None, record_loss="before_update",
                 checkpoint_dir=None, checkpoint_every=None, resume=None,
                 on_nonfinite="raise", schedule_unit="epoch"):
        self.network, self.optimizer, self.schedule = network, optimizer, schedule
        if isinstance(network, type) or not all(callable(getattr(network, m, None)) for m in (
                "prepare", "loss_and_grads", "accuracy")):
            raise TypeError(f"network must be a network such as accel.MultiLayerNet(...) (with "
                            f"prepare, loss_and_grads and accuracy), got {network!r:.200}")
        if isinstance(optimizer, type) or not callable(getattr(optimizer, "update", None)):
            raise TypeError(f"optimizer must have an update(params, grads) method (an "
                            f"instance such as optim.Adam(lr=1e-3)), got {optimizer!r}")
        if schedule is not None and not callable(schedule):
            raise TypeError(f"schedule must be callable, got {schedule!r}")
        self.schedule_unit = checks.one_of("schedule_unit", schedule_unit, SCHEDULE_UNITS)
        self.on_evaluate = _hooks(on_evaluate)
        self.record_loss = checks.one_of("record_loss", record_loss, RECORD_LOSS)
        on_nonfinite = checks.one_of("on_nonfinite", on_nonfinite, NONFINITE_MODES)
        if checkpoint_every is not None:
            checks.positive("checkpoint_every", checkpoint_every, integer=True)
            if checkpoint_dir is None:
                raise ValueError(f"checkpoint_every={checkpoint_every!r} needs checkpoint_dir")
        checks.optional(checks.path, "checkpoint_dir", checkpoint_dir)
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        if self.checkpoint_dir is not None and self.checkpoint_dir.exists() and \
                not self.checkpoint_dir.is_dir():
            raise NotADirectoryError(f"checkpoint_dir={str(checkpoint_dir)!r} is a file, not a "
                                     "folder")
        self.checkpoint_every = checkpoint_every or 1
        self.resume = self._resume_request(resume)
        self.epochs = checks.positive("epochs", epochs, integer=True)
        self.batch_size = checks.positive("batch_size", batch_size, integer=True)
        self.max_iterations = checks.optional(checks.positive, "max_iterations", max_iterations,
                                              integer=True)
        self.evaluate_sample = checks.optional(checks.positive, "evaluate_sample",
                                               evaluate_sample, integer=True)
        self.evaluate_every = checks.positive("evaluate_every", evaluate_every, integer=True)
        self.verbose = verbose
        # Checked and moved to the device once, so the loop itself does no checking.
        if t_train is None:
            raise TypeError("t_train must be the training labels, got None")
        self.x_train, self.t_train = network.prepare(x_train, t_train,
                                                     names=("x_train", "t_train"))
        if (x_test is None) != (t_test is None):
            raise ValueError("x_test and t_test must be given together")
        self.test = None if x_test is None else network.prepare(x_test, t_test,
                                                                names=("x_test", "t_test"))
        if validation_data is not None and (
                not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2
                or validation_data[1] is None):
            raise TypeError(f"validation_data must be a pair (x_val, t_val), got "
                            f"{validation_data!r:.200}")
        self.validation = None if validation_data is None else network.prepare(
            *validation_data, names=("validation_data[0]", "validation_data[1]"))
        if network.batchnorm and min(self.batch_size, self.n_train) < 2:
            raise ValueError(
                f"a BatchNorm network needs batches of at least 2 samples (the variance of one "
                f"is 0), got batch_size={self.batch_size} and {self.n_train} training "
                "sample(s): training would run no step")
        # The epoch's batches (accel.preprocessing.batch_bounds): for BatchNorm a last batch of
        # one sample (no variance) joins the batch before it, so every sample is still seen.
        self.min_last = 2 if network.batchnorm else 1
        self.batches = batch_bounds(self.n_train, self.batch_size, self.min_last)
        self.guard = NonFiniteGuard(network, on_nonfinite,
                                    capacity=self.iterations_per_epoch() + 1)
        self._positions = {}  # iteration → (epoch, offset) where it started, since the last sync
        self.rng = np.random.default_rng(checks.seed("seed", seed))
        self.history = History()
        self.epoch, self.offset = 0, 0  # where the next step starts: epoch, sample index
        self._epoch_rng_state = None  # the shuffling state before this epoch's permutation
        self._data_crc = None  # fingerprint of (x_train, t_train), computed for checkpoints
        self.last_checkpoint = None
        self._lock = None  # the checkpoint folder's lock while fit() runs
        self._own_files = {}  # checkpoint path -> identity of the file this trainer wrote/read
        self._provisional = False  # the last evaluation was made only because the run stopped

    def _resume_request(self, resume):
        """None, True (decided when fit() starts) or the checkpoint path to resume from."""
        if resume is True:
            if self.checkpoint_dir is None:
                raise ValueError("resume=True needs checkpoint_dir (or pass a checkpoint path)")
            return True
        if resume is None or resume is False:
            return None
        if not isinstance(resume, (str, os.PathLike)):
            raise TypeError(f"resume must be a path or True, got {resume!r}")
        checks.path("resume", resume)
        if not Path(resume).is_file():
            raise FileNotFoundError(f"resume={str(resume)!r}: no checkpoint file there")
        return resume

    def _resume_source(self):
        """The checkpoint this fit() starts from, decided now (under the folder's lock): the
        path given, or with resume=True the folder's last.npz when it exists and is not the
        file this trainer itself wrote or read last (its state is already in memory)."""
        if self.resume is not True:
            return self.resume
        path = self.checkpoint_path
        if path.is_file() and self._own_files.get(path) != _file_id(path):
            return path
        return None

    @property
    def n_train(self) -> int:
        return self.x_train.shape[0]

    @property
    def checkpoint_path(self):
        """``<checkpoint_dir>/last.npz``, or None when checkpointing is off."""
        return None if self.checkpoint_dir is None else self.checkpoint_dir / CHECKPOINT_NAME

    def iterations_per_epoch(self) -> int:
        """Steps per epoch: ⌈n_train/batch_size⌉, one fewer for a BatchNorm network whose
        last batch would hold one sample (it is merged into the batch before it)."""
        return len(self.batches)

    # -- one evaluation, one step

    def evaluate(self, epoch) -> None:
        """Record the accuracies (and lr) at ``epoch``, then call ``on_evaluate``."""
        h, n = self.history, self.evaluate_sample
        h.epoch.append(epoch)
        for acc, data in ((h.train_acc, (self.x_train, self.t_train)),
                          (h.val_acc, self.validation), (h.test_acc, self.test)):
            if data is not None:
                acc.append(self.network.accuracy(data[0][:n], data[1][:n]))
        h.lr.append(self.optimizer.lr)
        for hook in self.on_evaluate:
            hook(self)

    def request_stop(self, reason: str) -> None:
        """End ``fit()`` normally after the current evaluation (for an ``on_evaluate`` hook,
        e.g. ``EarlyStopping``): ``History.stop_reason`` = ``reason`` and
        ``History.stopped_epoch`` = the epoch of that evaluation. A stopped run stays
        stopped: a second ``fit()`` or a resume from its checkpoint trains no further."""
        if not isinstance(reason, str) or not reason:
            raise TypeError(f"reason must be a non-empty str, got {reason!r}")
        self.history.stop_reason = reason
        self.history.stopped_epoch = self.history.epoch[-1] if self.history.epoch else 0

    @property
    def stopped(self) -> bool:
        """True once a hook has called ``request_stop``."""
        return self.history.stop_reason is not None

    def _apply_schedule(self, t) -> None:
        """optimizer.lr = schedule(t), t the epoch or iteration (from 0)."""
        try:
            self.optimizer.lr = self.schedule(t)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"schedule {self.schedule!r} at {self.schedule_unit} {t}: "
                            f"{exc}") from exc

    def step(self, x, t):
        """One mini-batch: gradient, non-finite check, optimizer update. Returns the loss
        (a 0-d device array). Nothing is read back from the device: a step the guard finds
        bad is not applied, and the host learns of it at the next ``sync_guard()``."""
        h = self.history
        loss, grads, record = self.guard.step(x, t, h.iterations + 1)
        h.iterations += 1
        self.optimizer.update(self.network.params, grads, record=record)
        return loss

    def sync_guard(self) -> None:
        """Read the non-finite guard's record (one small device→host copy; ``fit`` does at
        the end of each epoch and at progress refreshes): with "raise" and a bad step, put
        the position back to it and raise NonFiniteError; with "skip", count the skipped
        steps in the history. The optimizer's step counter drops the skipped updates."""
        verdict = self.guard.sync()
        positions, self._positions = self._positions, {}
        if verdict is None:
            return
        self.optimizer.skipped(verdict.skipped)
        h = self.history
        if self.guard.mode == "raise" or verdict.parameters:
            self.epoch, self.offset = positions.get(verdict.first, (self.epoch, self.offset))
            h.iterations = verdict.first - 1
            raise self.guard.error(verdict, self.epoch + 1)
        h.skipped_steps += verdict.skipped
        h.skipped.extend(verdict.iterations)

    # -- the loop

    def fit(self) -> History:
        """Run the epochs; returns (and keeps in ``self.history``) the History.

        With ``resume``, first restores the checkpoint and continues where it stopped.
        Ctrl-C: see the class docstring (raises TrainingInterrupted)."""
        self._lock = None if self.checkpoint_dir is None else \
            checkpoint.DirectoryLock(self.checkpoint_dir)
        with self._lock or contextlib.nullcontext(), StepBoundary() as stop, \
                _progress_logging(self._bar_wanted()):
            path = self._resume_source()
            resumed = path is not None
            if resumed:
                self.load_checkpoint(path)
                if self.resume is not True:
                    self.resume = None  # a second fit() continues from memory
                self._say(f"resumed from {path} at epoch {self.epoch + 1}, iteration "
                          f"{self.history.iterations}")
            self.guard.begin()
            if not resumed and not self.history.epoch:
                if self.schedule is not None:
                    self._apply_schedule(0)
                self.evaluate(0)
            if self._provisional and self.epoch < self.epochs and \
                    not self._at_max_iterations() and not self.stopped:
                self._drop_last_evaluation()  # the run goes on: that stop is not one
            try:
                was_stopped = self.stopped
                while self.epoch < self.epochs and not self._at_max_iterations() and \
                        not self.stopped:
                    self._run_epoch(stop)
                if self.stopped and not was_stopped:
                    self._say(f"stopped at epoch {self.history.stopped_epoch:g}: "
                              f"{self.history.stop_reason}")
            except KeyboardInterrupt as exc:
                if not isinstance(exc, TrainingInterrupted):
                    last = f"; the last checkpoint is {self.last_checkpoint}" if (
                        self.last_checkpoint) else ""
                    self._say(f"stopped at once, no checkpoint written{last}", always=True)
                raise
        return self.history

    def _run_epoch(self, stop) -> None:
        """The rest of the current epoch (all of it, unless it is being continued)."""
        h, epoch = self.history, self.epoch
        self._clock = time.perf_counter()
        per_step = self.schedule is not None and self.schedule_unit == "iteration"
        if self.offset == 0 and self.schedule is not None and not per_step:
            self._apply_schedule(epoch)
        order = self._epoch_order()
        bar = self._bar(epoch)
        losses = []
        try:
            for start, end in self.batches:
                if start < self.offset:  # continuing an epoch: these batches are done
                    continue
                idx = order[start:end]
                x, t = self.x_train[idx], self.t_train[idx]
                self._positions[h.iterations + 1] = (epoch, start)
                if per_step:  # schedule(iteration), the iteration counted from 0 over the run
                    self._apply_schedule(h.iterations)
                losses.append(self.step(x, t))
                if self.record_loss == "after_update":  # the book's trainer
                    losses[-1] = self.network.forward_loss(x, t)
                if bar is not None:
                    bar.update(1)
                    if h.iterations % 20 == 0:  # a refresh reads the device: sync here
                        self.sync_guard()
                        bar.set_postfix(loss=f"{float(losses[-1]):.4g}", refresh=False)
                self.offset = end % self.n_train
                if stop.hit or self._at_max_iterations():
                    break
            self.sync_guard()
        except NonFiniteError:
            if bar is not None:
                bar.close()
            raise
        # Losses stay on the device until here: one transfer per epoch, not one per step.
        if losses:
            self.history.train_loss.extend(
                self.network.backend.xp.stack(losses).astype(float).tolist())
        self._tick()
        if stop.hit and self.offset:
            self._interrupted(bar)
        if self.offset == 0:
            self.epoch += 1
        last = self.epoch >= self.epochs or self._at_max_iterations()
        on_grid = self.offset == 0 and self.epoch % self.evaluate_every == 0
        if last or on_grid:
            self._provisional = not on_grid
            self.evaluate(round(epoch + (self.offset / self.n_train or 1.0), 4))
            last = last or self.stopped  # an on_evaluate hook ended the run here
            self._tick()
            self._report(bar, epoch)
        elif bar is not None:
            bar.close()
        if self.checkpoint_dir is not None and (
                last or self.epoch % self.checkpoint_every == 0 or stop.hit):
            self.save_checkpoint()
        self._tick()
        if stop.hit:
            self._interrupted(None)

    def _tick(self) -> None:
        """Add the time since the last tick to ``History.elapsed_s``."""
        now = time.perf_counter()
        self.history.elapsed_s += now - self._clock
        self._clock = now

    def _drop_last_evaluation(self) -> None:
        """Remove the last evaluation row (one made only because the run stopped there), so a
        continued run records what an uninterrupted one does."""
        h = self.history
        n = len(h.epoch)
        for values in (h.epoch, h.train_acc, h.val_acc, h.test_acc, h.lr):
            if len(values) == n:
                values.pop()
        self._provisional = False

    def _at_max_iterations(self) -> bool:
        return self.max_iterations is not None and self.history.iterations >= self.max_iterations

    def _epoch_order(self):
        """This epoch's permutation of the training set: a fresh draw at its start, the same
        draw again when the epoch is being continued (after Ctrl-C, a resume, or a stop at
        max_iterations), so every sample is still seen once."""
        if self.offset == 0:
            self._epoch_rng_state = self.rng.bit_generator.state
        else:
            self.rng.bit_generator.state = self._epoch_rng_state
        order, _ = minibatch_partition(self.n_train, self.batch_size, self.rng,
                                       min_last=self.min_last)
        return self.network.backend.xp.asarray(order)  # one transfer per epoch

    def _interrupted(self, bar):
        if bar is not None:
            bar.close()
        where = f"epoch {self.epoch + 1}, iteration {self.history.iterations}"
        if self.checkpoint_dir is None:
            path = None
            msg = f"interrupted at {where}; no checkpoint written"
            hint = " (pass checkpoint_dir= to keep one)"
        else:
            path = self.last_checkpoint if self.offset == 0 and self.last_checkpoint else \
                self.save_checkpoint()
            msg = f"interrupted at {where}; checkpoint written to {path}"
            hint = f" (continue with Trainer(..., resume={str(path)!r}))"
        # the facts on stderr; the advice about the Python API goes with the exception, which
        # a command-line script catches and words for its own flags
        self._say(msg, always=True)
        raise TrainingInterrupted(msg + hint, checkpoint=path, history=self.history)

    # -- progress

    def _bar_wanted(self) -> bool:
        return bool(self.verbose) and _interactive()

    def _bar(self, epoch):
        """A tqdm bar for the epoch on a terminal or in a notebook; None elsewhere."""
        if not self._bar_wanted():
            return None
        from tqdm.auto import tqdm

        done = sum(start < self.offset for start, _ in self.batches)
        return tqdm(total=self.iterations_per_epoch(), initial=done,
                    desc=f"epoch {epoch + 1}/{self.epochs}", leave=False,
                    file=sys.stderr, dynamic_ncols=True)

    def _report(self, bar, epoch) -> None:
        """The evaluation's numbers as one line (in place of the epoch's bar, if any)."""
        h = self.history
        info = {"loss": h.train_loss[-1] if h.train_loss else float("nan"),
                "train_acc": h.train_acc[-1]}
        if h.val_acc:
            info["val_acc"] = h.val_acc[-1]
        if h.test_acc:
            info["test_acc"] = h.test_acc[-1]
        info["lr"] = self.optimizer.lr
        text = "  ".join(f"{k} {v:.4g}" for k, v in info.items())
        line = f"epoch {epoch + 1}/{self.epochs}  {text}  ({h.elapsed_s:.1f}s)"
        if bar is not None:  # the bar gives way to the line (as its postfix it was cut off
            bar.close()      # at the terminal's width)
            bar.write(line, file=sys.stderr)
        elif self.verbose:
            print(line, file=sys.stderr, flush=True)

    def _say(self, msg, always=False) -> None:
        """A status line on stderr (Ctrl-C's always: the user asked for it)."""
        if self.verbose or always:
            print(f"accel: {msg}", file=sys.stderr, flush=True)

    # -- checkpoints: the state protocol

    def state_dict(self) -> dict:
        """Everything a resume needs: the network's and the optimizer's ``state_dict``, the
        position (epoch, sample offset), the shuffling generator's state at the start of the
        current epoch (its permutation is drawn again on resume), the data's size and CRC-32,
        the batch size and the history."""
        hist = self.history.to_dict()
        hist["train_loss"] = np.asarray(hist["train_loss"], dtype=np.float64)
        rng = self._epoch_rng_state if self.offset else self.rng.bit_generator.state
        return {
            "network": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "trainer": {"epoch": self.epoch, "offset": self.offset, "rng": rng,
                        "n_train": self.n_train, "data_crc32": self.data_fingerprint(),
                        "batch_size": self.batch_size, "epochs": self.epochs,
                        "history": hist, "provisional_evaluation": self._provisional,
                        "hooks": {
                            str(i): {"type": type(hook).__name__, "state": hook.state_dict()}
                            for i, hook in self._stateful_hooks()}},
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned; it must fit this trainer (same data, batch
        size, architecture, optimizer type, and ``epochs`` not below the saved position).
        Checked before anything changes."""
        tr = state["trainer"]
        for name, mine in (("n_train", self.n_train), ("batch_size", self.batch_size)):
            if tr[name] != mine:
                raise ValueError(f"saved with {name}={tr[name]}, this trainer has "
                                 f"{name}={mine}; resume needs the same data and batches")
        # the network first: its dtype is part of the data's fingerprint
        self.network.check_state_dict(state["network"])
        if tr["data_crc32"] != self.data_fingerprint():
            raise ValueError("saved from a run on other training data (same size, different "
                             f"CRC-32: {tr['data_crc32']:#010x}, here "
                             f"{self.data_fingerprint():#010x}); resume needs the same data")
        if tr["epoch"] > self.epochs:
            raise ValueError(f"saved at epoch {tr['epoch']}, beyond this trainer's "
                             f"epochs={self.epochs}; pass epochs >= {tr['epoch']}")
        opt = state["optimizer"]
        if opt["type"] != type(self.optimizer).__name__:
            raise ValueError(f"saved with optimizer {opt['type']}, this trainer has "
                             f"{type(self.optimizer).__name__}")
        history = History.from_dict(tr["history"])
        epoch, offset, rng = tr["epoch"], tr["offset"], tr["rng"]
        if not (isinstance(epoch, int) and isinstance(offset, int) and epoch >= 0
                and offset in {start for start, _ in self.batches}):
            raise ValueError(f"bad position epoch={epoch!r}, offset={offset!r}")
        if rng["bit_generator"] != type(self.rng.bit_generator).__name__:
            raise ValueError(f"shuffling generator {rng['bit_generator']!r}")
        hooks = tr.get("hooks", {})  # on_evaluate hooks with a state (EarlyStopping)
        for i, hook in self._stateful_hooks():
            saved = hooks.get(str(i))
            if saved is not None and saved.get("type") != type(hook).__name__:
                raise ValueError(f"on_evaluate[{i}] is {type(hook).__name__}, the checkpoint "
                                 f"holds the state of {saved.get('type')}")
        self.network.load_state_dict(state["network"])
        self.optimizer.load_state_dict(opt, backend=self.network.backend)
        self.rng.bit_generator.state = rng
        self._epoch_rng_state = rng
        self.history, self.epoch, self.offset = history, epoch, offset
        self._provisional = tr.get("provisional_evaluation", False) is True
        for i, hook in self._stateful_hooks():
            if str(i) in hooks:
                hook.load_state_dict(hooks[str(i)]["state"])
            else:
                warnings.warn(f"the checkpoint holds no state for on_evaluate[{i}] "
                              f"({type(hook).__name__}): it starts afresh", stacklevel=3)

    def _stateful_hooks(self):
        """(index, hook) of the on_evaluate hooks with a state_dict (kept in checkpoints)."""
        return [(i, h) for i, h in enumerate(self.on_evaluate)
                if callable(getattr(h, "state_dict", None))]

    def data_fingerprint(self) -> int:
        """CRC-32 of the training data (x and t), computed once."""
        if self._data_crc is None:
            self._data_crc = checkpoint.fingerprint(self.x_train, self.t_train)
        return self._data_crc

    def save_checkpoint(self, path=None) -> Path:
        """Write a checkpoint (default ``checkpoint_path``) atomically, holding its folder's
        lock (DirectoryInUseError when another run writes there); returns its path."""
        checks.optional(checks.path, "path", path)
        path = self.checkpoint_path if path is None else Path(path)
        if path is None:
            raise ValueError("save_checkpoint needs a path when checkpoint_dir is not set")
        lock = self._lock
        if lock is None or not lock.holds(path.parent):
            with checkpoint.DirectoryLock(path.parent) as held:
                return self._save(path, held)
        return self._save(path, lock)

    def _save(self, path, lock) -> Path:
        self.last_checkpoint = checkpoint.save(path, self.state_dict(), kind="trainer",
                                               lock=lock)
        self._own_files[path] = _file_id(path)
        return self.last_checkpoint

    def load_checkpoint(self, path) -> None:
        """Restore network, optimizer, position, shuffling generator and history from the
        Trainer checkpoint at ``path`` (CheckpointError naming the file if it does not fit)."""
        header = checkpoint.load(path)
        if header.get("kind") != "trainer":
            raise checkpoint.CheckpointError(
                f"{path}: a {header.get('kind')!r} checkpoint, not a Trainer checkpoint")
        if header["format_version"] < 2:
            raise checkpoint.CheckpointError(
                f"{path}: a Trainer checkpoint of format version {header['format_version']} "
                f"(accel {header.get('accel_version', '?')}); this accel resumes from format "
                f"{checkpoint.FORMAT_VERSION} only. Its network still loads with "
                "MultiLayerNet.load(path)")
        checkpoint.restore(self, header["state"], path)
        self._own_files[Path(path)] = _file_id(path)


def _file_id(path):
    """What tells one write of a file from another: (device, inode, size, mtime); each
    checkpoint is a new file renamed into place."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _hooks(on_evaluate) -> tuple:
    """``on_evaluate`` as a tuple of callables: None, one callable, or a list of them."""
    if on_evaluate is None:
        return ()
    if not isinstance(on_evaluate, (list, tuple)):
        if not callable(on_evaluate):
            raise TypeError(f"on_evaluate must be callable or a list of callables, got "
                            f"{on_evaluate!r}")
        return (on_evaluate,)
    for i, hook in enumerate(on_evaluate):
        if not callable(hook):
            raise TypeError(f"on_evaluate[{i}] must be callable, got {hook!r}")
    return tuple(on_evaluate)


def _interactive() -> bool:
    """True on a terminal or in a Jupyter kernel: where a live bar can be redrawn."""
    if getattr(sys.stderr, "isatty", lambda: False)():
        return True
    shell = sys.modules.get("IPython")
    ip = shell.get_ipython() if shell is not None and hasattr(shell, "get_ipython") else None
    return ip is not None and "IPKernelApp" in getattr(ip, "config", {})


def _progress_logging(bar: bool):
    """Route logging through tqdm while a bar is live, so log lines do not break it."""
    if not bar:
        return contextlib.nullcontext()
    from tqdm.contrib.logging import logging_redirect_tqdm

    return logging_redirect_tqdm()
