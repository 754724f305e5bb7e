"""Dependency-free progress reporting for the step loop (a bar on a terminal, plain lines otherwise)."""
from __future__ import annotations

import math
import sys
import time
from typing import Any, Callable, TextIO

from launch.outputs.files import to_jsonable

__all__ = ["format_duration", "Progress"]


def format_duration(seconds: float) -> str:
    """``H:MM:SS`` (hours unbounded); ``?`` for unknown/non-finite."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}"


def _format_scalar(value: Any) -> str:
    value = to_jsonable(value)
    if isinstance(value, bool) or isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.3e}"
    return str(value)


class Progress:
    """Dependency-free progress reporting for the step loop.

    On a terminal (``stream.isatty()``) a single bar is redrawn in place with ``\\r`` (at most every
    ``min_interval`` seconds, and always on ``force=True`` or the last step); otherwise plain lines such as
    ``step 120/1000  loss 1.234e+00  12.3 it/s  eta 0:01:11`` are printed every ``log_every`` steps
    (default ``max(1, total // 20)``), on ``force=True`` and at the last step.

    The rate is measured from the FIRST ``update`` call (whose step usually includes jit compilation), i.e.
    ``(step - first_step) / (now - first_time)``; until a second update it is unknown (``? it/s  eta ?``).
    The first update is always shown (it marks the end of compilation).
    ``initial`` is the starting step (e.g. after a resume). ``clock`` is injectable for tests.
    """

    def __init__(self, total: int, initial: int = 0, stream: TextIO | None = None, *, log_every: int | None = None,
                 desc: str = "", width: int = 24, min_interval: float = 0.1,
                 clock: Callable[[], float] = time.monotonic):
        self.total = int(total)
        self.step = int(initial)
        self.stream = sys.stderr if stream is None else stream
        isatty = getattr(self.stream, "isatty", None)
        try:
            self.tty = bool(isatty()) if callable(isatty) else False
        except (ValueError, OSError):
            self.tty = False
        self.log_every = max(1, int(log_every) if log_every else max(1, self.total // 20))
        self.desc = desc
        self.width = width
        self.min_interval = min_interval
        self._clock = clock
        self._start = clock()
        self._first: tuple[int, float] | None = None  # (step, time) of the first update
        self._last_logged = int(initial)
        self._last_draw = -math.inf
        self._last_len = 0
        self._scalars: dict[str, Any] = {}
        self._pending = False  # an update that was not printed yet
        self._closed = False

    # ---- rate / eta ---------------------------------------------------------------------------------------
    def rate(self) -> float | None:
        """Steps per second since the first update, or None when not measurable yet."""
        if self._first is None:
            return None
        step0, t0 = self._first
        dt = self._clock() - t0
        if self.step <= step0 or dt <= 0:
            return None
        return (self.step - step0) / dt

    def eta(self) -> float | None:
        """Estimated seconds to ``total``, or None."""
        r = self.rate()
        if r is None:
            return None
        return max(0, self.total - self.step) / r

    def _text(self) -> str:
        r = self.rate()
        parts = [f"step {self.step}/{self.total}"]
        parts += [f"{k} {_format_scalar(v)}" for k, v in self._scalars.items()]
        parts.append(f"{r:.1f} it/s" if r is not None else "? it/s")
        parts.append(f"eta {format_duration(self.eta()) if r is not None else '?'}")
        return "  ".join(parts)

    # ---- public -------------------------------------------------------------------------------------------
    def update(self, step: int, force: bool = False, **scalars: Any) -> None:
        """Record that ``step`` steps are done (absolute, not an increment) with optional scalars to show."""
        if self._closed:
            return
        self.step = int(step)
        if self._first is None:  # shown at once: it tells the user the first (compiling) step is done
            self._first = (self.step, self._clock())
            force = True
        if scalars:
            self._scalars.update(scalars)
        done = self.step >= self.total
        if self.tty:
            now = self._clock()
            if force or done or now - self._last_draw >= self.min_interval:
                self._draw()
                self._last_draw = now
                self._pending = False
            else:
                self._pending = True
        else:
            if force or done or self.step - self._last_logged >= self.log_every:
                self._log()
            else:
                self._pending = True

    def write(self, message: str) -> None:
        """Print a message line without corrupting the bar (the bar is redrawn after it on a terminal)."""
        if self.tty and self._last_len:
            self.stream.write("\r" + " " * self._last_len + "\r")
            self._last_len = 0
        self.stream.write(message.rstrip("\n") + "\n")
        if self.tty and self._first is not None:
            self._draw()
            self._last_draw = self._clock()
            self._pending = False
        self.stream.flush()

    def close(self) -> None:
        """Finish: draw/log the latest state if not shown yet and end the bar's line (idempotent)."""
        if self._closed:
            return
        if self.tty:
            if self._pending or (self._last_len == 0 and self._first is not None):
                self._draw()
            if self._last_len:
                self.stream.write("\n")
        elif self._pending:
            self._log()
        self.stream.flush()
        self._closed = True

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- rendering ----------------------------------------------------------------------------------------
    def _log(self) -> None:
        prefix = f"{self.desc}  " if self.desc else ""
        self.stream.write(prefix + self._text() + "\n")
        self.stream.flush()
        self._last_logged = self.step
        self._pending = False

    def _draw(self) -> None:
        frac = min(1.0, max(0.0, self.step / self.total)) if self.total > 0 else 1.0
        filled = int(round(frac * self.width))
        bar = "#" * filled + "-" * (self.width - filled)
        prefix = f"{self.desc} " if self.desc else ""
        line = f"{prefix}[{bar}] {100 * frac:3.0f}%  {self._text()}"
        pad = max(0, self._last_len - len(line))
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()
        self._last_len = len(line)
