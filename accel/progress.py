"""A dependency-free progress bar: redrawn in place on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time


def _fmt_time(s: float) -> str:
    m, s = divmod(int(s), 60)
    return f"{m:d}:{s:02d}"


class Progress:
    """``Progress(total, desc)``; ``update(n, **info)`` advances; ``close(**info)`` ends.

    On a terminal the bar is redrawn at most every 0.1 s with rate and ETA; when the stream is
    not a terminal (a log file, CI) nothing is printed until ``close``, which prints one line.
    """

    def __init__(self, total: int, desc: str = "", stream=None, enabled: bool = True,
                 width: int = 24):
        self.total, self.desc, self.width = max(int(total), 0), desc, width
        self.stream = sys.stderr if stream is None else stream
        self.enabled = enabled
        self.tty = enabled and getattr(self.stream, "isatty", lambda: False)()
        self.n, self.start, self._last = 0, time.perf_counter(), 0.0

    def _info(self, info: dict) -> str:
        return "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                         for k, v in info.items())

    def update(self, n: int = 1, **info) -> None:
        self.n += n
        if not self.tty:
            return
        now = time.perf_counter()
        if now - self._last < 0.1 and self.n < self.total:
            return
        self._last = now
        elapsed = now - self.start
        frac = self.n / self.total if self.total else 1.0
        filled = int(self.width * frac)
        bar = "#" * filled + "-" * (self.width - filled)
        rate = self.n / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.n) / rate if rate > 0 else 0.0
        line = (f"\r{self.desc} [{bar}] {self.n}/{self.total} {rate:.1f} it/s "
                f"eta {_fmt_time(eta)}  {self._info(info)}")
        self.stream.write(line.ljust(100)[:160])
        self.stream.flush()

    def close(self, **info) -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        line = f"{self.desc}  {self._info(info)}  {_fmt_time(elapsed)} ({elapsed:.1f}s)"
        self.stream.write(("\r" + line.ljust(100) if self.tty else line) + "\n")
        self.stream.flush()
