"""How far a long command has got: a live bar on a terminal, plain lines otherwise.

Requeueing 5,000 dead letters at 10 a second takes over 8 minutes, and a command
that prints nothing for that long looks hung. On a terminal, rich draws a bar
with the count and the time left. Where the output is a file, a pipe or a CI log,
a bar would be thousands of carriage returns, so a plain line is written
instead ("requeued 1200/5000, 6 m 20 s left") every COMMAND_PROGRESS_SECONDS
seconds (5 by default), and one at the end if any was. A command that ends
within that time prints what it always printed, and nothing more.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from rich.progress import Progress as RichProgress


class Output(Protocol):
    """A text stream: a file, sys.stdout, or a management command's OutputWrapper."""

    def write(self, text: str) -> Any: ...

    def isatty(self) -> bool: ...


def duration(seconds: float) -> str:
    """A short span for a person: 40 s, 6 m 20 s, 1 h 5 m."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} m {seconds} s" if seconds and minutes < 10 else f"{minutes} m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} m" if minutes else f"{hours} h"


class Progress:
    """Count `done` up to `total` (None while unknown) under a label such as "requeued".

    Use as a context manager; call advance() as items finish and say() for a line
    of the command's own (it is printed above the bar, not through it)."""

    def __init__(
        self,
        out: Output,
        label: str,
        total: int | None,
        *,
        every_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.out = out
        self.label = label
        self.total = total
        self.done = 0
        if every_seconds is None:
            from django.conf import settings

            every_seconds = settings.COMMAND_PROGRESS_SECONDS
        self.every_seconds = every_seconds
        self.lines = 0
        self.clock = clock
        self.started = clock()
        self.last_line_at = self.started
        self.last_line_done = 0
        self._bar: RichProgress | None = None
        self._task: Any = None
        if out.isatty():
            # Imported only for a terminal: the sweeper runs in every worker, which never needs it.
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            # A management command's OutputWrapper appends a newline to every write; rich
            # needs the raw stream underneath to redraw its line in place.
            raw: Any = getattr(out, "_out", out)
            console = Console(file=raw)
            self._bar = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                TimeElapsedColumn(),
                console=console,
            )

    def __enter__(self) -> Progress:
        if self._bar is not None:
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=self.total)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
        elif self.lines and self.done != self.last_line_done:
            self._line()

    def set_total(self, total: int | None) -> None:
        self.total = total
        if self._bar is not None:
            self._bar.update(self._task, total=total)

    def advance(self, count: int = 1) -> None:
        self.done += count
        if self.total is not None and self.done > self.total:
            self.set_total(self.done)  # more than foreseen (a topic still being written to)
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)
            return
        now = self.clock()
        if now - self.last_line_at >= self.every_seconds:
            self._line()

    def say(self, text: str) -> None:
        if self._bar is not None:
            self._bar.console.print(text, markup=False, highlight=False)
        else:
            self.out.write(text + "\n")

    def _line(self) -> None:
        now = self.clock()
        text = f"{self.label} {self.done}/{self.total}" if self.total is not None else f"{self.label} {self.done}"
        elapsed = now - self.started
        if self.total is not None and self.done >= self.total:
            text += f", done in {duration(elapsed)}"
        elif self.total is not None and self.done:
            text += f", {duration(elapsed / self.done * (self.total - self.done))} left"
        self.out.write(text + "\n")
        self.last_line_at, self.last_line_done = now, self.done
        self.lines += 1


class Quiet:
    """Progress that shows nothing: for callers nobody watches (a Celery task, the admin)."""

    def __enter__(self) -> Quiet:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        return None

    def set_total(self, total: int | None) -> None:
        return None

    def advance(self, count: int = 1) -> None:
        return None

    def say(self, text: str) -> None:
        return None


# What a long operation takes to report on itself: called with a label ("re-driven")
# and the total (None while unknown), it gives a context manager to advance.
ProgressFactory = Callable[[str, "int | None"], "Progress | Quiet"]


def quiet(label: str, total: int | None) -> Quiet:
    return Quiet()


def to(out: Output) -> ProgressFactory:
    """Progress on a command's output: `sweep(progress=progress.to(self.stdout))`."""
    return lambda label, total: Progress(out, label, total)
