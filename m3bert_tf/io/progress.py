"""A periodic progress line with rate and ETA, for long jobs."""

import sys
import time


def format_seconds(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """Prints `<name>: done/total (pct) <rate> ... ETA` at most every `interval` s.

    The rate (and so the ETA) counts from the first update on, so a job's
    start-up (imports, worker boot, tracing) does not inflate the ETA; the
    first line has none.

    Args:
      name: prefix of every line.
      total: units of work expected (files, steps).
      unit: name of one unit ("files", "steps").
      interval: seconds between lines; the last update always prints.
      stream: where lines go (default stderr).
    """

    def __init__(self, name, total, unit, interval=5.0, stream=None, start=0):
        self.name, self.total, self.unit = name, total, unit
        self.interval = interval
        self.stream = stream or sys.stderr
        self.start_count = self.done = start
        self.start_time = time.monotonic()
        self.last_print = 0.0
        self._rate_from: tuple[int, float] | None = (
            None  # (count, time) of the first update
        )

    def update(self, done: int, extra: str = "", force: bool = False) -> None:
        """Sets the count of finished units; `extra` is appended to the line."""
        self.done = done
        now = time.monotonic()
        first = self._rate_from is None
        if first:
            self._rate_from = (done, now)
        if (
            not (force or first)
            and done < self.total
            and now - self.last_print < self.interval
        ):
            return
        self.last_print = now
        elapsed = max(now - self.start_time, 1e-9)
        count0, time0 = self._rate_from
        rate = (done - count0) / (now - time0) if done > count0 and now > time0 else 0.0
        pct = 100.0 * done / self.total if self.total else 100.0
        if rate > 0:
            speed = f"{rate:.2f} {self.unit}/s, "
            eta = format_seconds((self.total - done) / rate)
        else:
            speed, eta = "", "0:00" if done >= self.total else "?"
        line = (
            f"{self.name}: {done}/{self.total} {self.unit} ({pct:.0f}%) "
            f"{speed}elapsed {format_seconds(elapsed)}, ETA {eta}"
        )
        print(line + (f", {extra}" if extra else ""), file=self.stream, flush=True)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start_time
