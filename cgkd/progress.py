"""Progress of long work: a tqdm bar in a terminal, periodic plain lines in logs.

Every long stage (build and minimise, equilibration, production, training epochs, CG MD replicas,
comparison) reports through :func:`progress`. When stderr is a terminal it is a tqdm bar; otherwise
(a log file, a pipe, a batch job) it writes one line at most every ``LINE_INTERVAL_S`` seconds and
one at the end, e.g. ``water production: 1200/2000 frame (60%), 3.1 frame/s, 4m18s left``.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Optional, TextIO

#: Seconds between plain progress lines when stderr is not a terminal (``CGKD_PROGRESS_INTERVAL`` overrides).
LINE_INTERVAL_S = 30.0


def _fmt_s(s: float) -> str:
    s = int(round(s))
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


class LineProgress:
    """The tqdm subset cgkd uses (``update``, ``set_postfix_str``, ``close``), printed as periodic lines."""

    def __init__(self, total: Optional[int], desc: str, unit: str = "it", initial: int = 0,
                 stream: Optional[TextIO] = None, interval: Optional[float] = None):
        self.total, self.desc, self.unit = total, desc, unit
        self.n = self._n0 = int(initial)
        self.stream = stream if stream is not None else sys.stderr
        env = os.environ.get("CGKD_PROGRESS_INTERVAL")
        self.interval = float(env) if interval is None and env else (LINE_INTERVAL_S if interval is None else interval)
        self.postfix = ""
        self._t0 = self._last = time.monotonic()
        self._closed = False
        if initial:
            self._line(f"resuming at {initial}")

    def _line(self, note: str = "") -> None:
        elapsed = time.monotonic() - self._t0
        done = self.n - self._n0
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.n}/{self.total} {self.unit}" if self.total else f"{self.n} {self.unit}"]
        if self.total:
            parts[0] += f" ({100.0 * self.n / self.total:.0f}%)"
        if done > 0 and elapsed > 0:
            parts.append(f"{rate:.3g} {self.unit}/s")
            if self.total and self.n < self.total:
                parts.append(f"{_fmt_s((self.total - self.n) / rate)} left")
        if self.postfix:
            parts.append(self.postfix)
        if note:
            parts.append(note)
        print(f"{self.desc}: " + ", ".join(parts), file=self.stream, flush=True)

    def update(self, n: int = 1) -> None:
        self.n += int(n)
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._line()

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:  # noqa: ARG002 - tqdm's signature
        self.postfix = str(text)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self.n != self._n0 or not self.total:
                self._line("done" if self.total and self.n >= self.total else "stopped")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Silent:
    n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def progress(total: Optional[int], desc: str, *, unit: str = "it", initial: int = 0, enabled: bool = True,
             leave: bool = True):
    """A progress reporter for ``total`` units of work.

    Parameters
    ----------
    total : int or None
    desc : str
        What is running (``"water production"``).
    unit : str
    initial : int
        Units already done (a resumed run); a plain-line reporter says "resuming at N".
    enabled : bool
        False: report nothing.
    leave : bool
        Keep the finished bar on screen (terminal only).
    """
    if not enabled:
        return _Silent()
    stream = sys.stderr
    if stream is not None and hasattr(stream, "isatty") and stream.isatty():
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=leave)
    return LineProgress(total, desc, unit=unit, initial=initial, stream=stream)


def note(message: str) -> None:
    """One status line on stderr (e.g. ``"resuming from ..."``), flushed at once."""
    print(message, file=sys.stderr, flush=True)


__all__ = ["progress", "note", "LineProgress", "LINE_INTERVAL_S"]
