"""Progress of a long offline command on stderr: a tqdm bar on a terminal, plain lines otherwise.

A bar redrawn with carriage returns is noise in a CI log or a file, so when stderr is not a
terminal the progress is one line every few seconds (and one at the end)::

    report: 12000/50000 events (24%), 4100 events/s
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from tqdm import tqdm

#: Seconds between two plain progress lines.
PLAIN_EVERY_S = 5.0


class PlainProgress:
    """``tqdm``'s ``update``/``close`` as periodic lines (for a stderr that is no terminal).

    Examples
    --------
    >>> import io
    >>> out, now = io.StringIO(), iter([0.0, 1.0, 6.0, 7.0]).__next__
    >>> bar = PlainProgress(100, "replay", "ev", out, clock=now)
    >>> bar.update(10); bar.update(40); bar.close()
    >>> print(out.getvalue(), end="")
    replay: 50/100 ev (50%), 8.33 ev/s
    replay: done, 50 ev in 7 s
    """

    def __init__(
        self,
        total: int | None,
        desc: str,
        unit: str,
        file: TextIO,
        every_s: float = PLAIN_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.desc, self.unit, self.file = total, desc, unit, file
        self.every_s, self.clock = every_s, clock
        self.n = 0
        self._t0 = self._last = clock()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if now - self._last >= self.every_s:
            self._last = now
            of = "" if not self.total else f"/{self.total}"
            pct = "" if not self.total else f" ({100 * self.n / self.total:.0f}%)"
            rate = self.n / max(now - self._t0, 1e-9)
            print(
                f"{self.desc}: {self.n}{of} {self.unit}{pct}, {rate:.3g} {self.unit}/s",
                file=self.file,
                flush=True,
            )

    def close(self) -> None:
        took = self.clock() - self._t0
        print(
            f"{self.desc}: done, {self.n} {self.unit} in {took:.0f} s", file=self.file, flush=True
        )


def progress_bar(
    total: int | None, desc: str, unit: str = "ev", enabled: bool = True, file: TextIO | None = None
) -> Any:
    """A tqdm bar on a terminal ``file`` (default stderr), `PlainProgress` lines on anything else,
    a silent one when not ``enabled``; each has ``update(n)`` and ``close()``."""
    out = sys.stderr if file is None else file
    if enabled and not out.isatty():
        return PlainProgress(total, desc, unit, out)
    return tqdm(total=total, unit=unit, desc=desc, disable=not enabled, file=out)
