"""What ``ibfab up`` shows on stderr while the fabric comes up: the launcher's phases (hosts
started, links trained, SM sweep, LIDs, routes, IPoIB joins; :func:`fabric.launcher.up`).

On a terminal the phase under way is one line redrawn in place with a bar, and each phase that
completes stays as a line with its time; otherwise only those lines are written, one per phase
("links trained 16/16 (0.4 s)"), so that logs hold no carriage returns.
"""

from __future__ import annotations

import time


def reporter(stream, *, quiet: bool = False):
    """The ``progress`` callback for ``stream``: None (the launcher's silence) when ``quiet``."""
    if quiet:
        return None
    isatty = getattr(stream, "isatty", None)
    return TtyReporter(stream) if isatty is not None and isatty() else LineReporter(stream)


def counted(phase: str, done, total) -> str:
    return phase if total is None else f"{phase} {done}/{total}"


class LineReporter:
    """One line per completed phase, with the time since the previous one completed."""

    def __init__(self, stream, clock=time.monotonic):
        self.stream = stream
        self.clock = clock
        self.mark = clock()

    def __call__(self, phase: str, done, total, final: bool = False) -> None:
        if final:
            self._finished(phase, done, total)

    def _finished(self, phase, done, total) -> str:
        now = self.clock()
        line = f"{counted(phase, done, total)} ({now - self.mark:.1f} s)"
        self.mark = now
        self._write(line + "\n")
        return line

    def close(self) -> None:
        """The launch ended (also by an error): nothing of it may stay half-drawn."""

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed or broken stderr must not fail the launch


class TtyReporter(LineReporter):
    """The phase under way redrawn in place (carriage return, erase line) with a bar."""

    BAR = 30
    REDRAW_S = 0.05  # at most 20 redraws a second: a big fabric reports many small steps

    def __init__(self, stream, clock=time.monotonic):
        super().__init__(stream, clock)
        self.drawn = None
        self.last_draw = 0.0

    def close(self) -> None:
        if self.drawn is not None:  # an error comes next: on a line of its own
            self._write("\r\x1b[K")
            self.drawn = None

    def __call__(self, phase: str, done, total, final: bool = False) -> None:
        if final:
            self._write("\r\x1b[K")
            self._finished(phase, done, total)
            self.drawn = None
            return
        now = self.clock()
        state = (phase, done, total)
        if state == self.drawn or (self.drawn is not None and self.drawn[0] == phase
                                   and now - self.last_draw < self.REDRAW_S):
            return
        self.drawn, self.last_draw = state, now
        if total:
            filled = min(self.BAR, self.BAR * done // total)
            bar = "[" + "#" * filled + "-" * (self.BAR - filled) + "] "
        else:
            bar = ""
        self._write(f"\r\x1b[K{phase} {bar}{'' if total is None else f'{done}/{total}'}"
                    f" {now - self.mark:.1f} s")
