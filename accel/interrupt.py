"""Ctrl-C during training: stop at a step boundary, not in the middle of an update."""

from __future__ import annotations

import signal
import sys
import threading


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped ``Trainer.fit`` at a step boundary. ``checkpoint`` is the path of the
    checkpoint written on the way out (None when checkpointing is off), ``history`` the
    History so far. A KeyboardInterrupt, so an uncaught one ends a script as Ctrl-C does."""

    def __init__(self, message, checkpoint=None, history=None):
        super().__init__(message)
        self.checkpoint, self.history = checkpoint, history


class StepBoundary:
    """While active (in the main thread, when SIGINT has Python's default handler), the
    first Ctrl-C only sets ``hit``, so the loop can stop between two steps with consistent
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
