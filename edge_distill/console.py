"""What a build shows the user while it runs: stage headers, messages, progress bars and errors.

Everything shown on the console is also appended to the run's log file (``build.log``), so a CI log
or a remote session can be read afterwards: messages, warnings, errors with their hint, the result
line, Python warnings, and the start/end (with duration) of every progress bar.  Each
invocation starts with a separator line, so a resumed build's log reads as one story.
``quiet`` hides progress bars and info lines, never warnings, errors or the result.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


class Console:
    def __init__(self, quiet: bool = False, log_path: Path | None = None) -> None:
        self.quiet = quiet
        self.log_path = log_path
        self._bars = 0  # progress bars currently drawn: messages must go through tqdm.write meanwhile
        if log_path is not None:
            self._log(f"---- {time.strftime('%Y-%m-%d %H:%M:%S %z')}: {' '.join(sys.argv) or 'python'} ----")

    def _log(self, line: str) -> None:
        if self.log_path is None:
            return
        try:
            with open(self.log_path, "a") as fh:
                fh.write(f"{time.strftime('%H:%M:%S')} {line}\n")
        except OSError:
            pass  # a full or vanished disk must not turn a message into a crash; the console still shows it

    def _print(self, message: str, stream=None) -> None:
        stream = stream or sys.stderr
        if self._bars:
            from tqdm import tqdm

            tqdm.write(message, file=stream)  # keeps an active bar intact below the message
        else:
            print(message, file=stream, flush=True)

    def stage(self, name: str, message: str) -> None:
        self.info(f"[{name}] {message}")

    def info(self, message: str) -> None:
        self._log(message)
        if not self.quiet:
            self._print(message)

    def warn(self, message: str) -> None:
        self._log(f"WARNING: {message}")
        self._print(f"WARNING: {message}")

    def error(self, message: str, hint: str = "") -> None:
        """A failure the user must act on: shown even when quiet, with its hint."""
        self._log(f"error: {message}" + (f" | hint: {hint}" if hint else ""))
        self._print(f"error: {message}")
        if hint:
            self._print(f"hint: {hint}")

    def result(self, message: str) -> None:
        """The command's answer: stdout (so scripts can capture it), shown even when quiet."""
        self._log(message)
        self._print(message, sys.stdout)

    def progress(self, items: Iterable[T], total: int | None = None, desc: str = "", closing_line: bool = True) -> Iterator[T]:
        """Iterate with a progress bar on stderr (none when quiet); logs start and end to the log file.

        On a terminal the bar redraws in place.  Written to a file or a pipe (nohup, CI, ``| tee``) a bar would be
        thousands of carriage-return fragments, so there it becomes one line when the loop ends (an epoch, a
        calibration pass), and a line every ``HEARTBEAT_S`` seconds in between for a long one.  ``closing_line=False``
        leaves the closing line to the caller (training prints its own line per epoch, with loss and accuracy).
        """
        self._log(f"{desc}: started" + (f" ({total} steps)" if total is not None else ""))
        t0 = time.perf_counter()
        if self.quiet:
            yield from items
        elif not _is_terminal(sys.stderr):
            yield from self._lines(items, total, desc, t0, closing_line)
        else:
            from tqdm import tqdm

            self._bars += 1
            try:
                yield from tqdm(items, total=total, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True)
            finally:
                self._bars -= 1
        self._log(f"{desc}: done in {time.perf_counter() - t0:.1f} s")

    def _lines(self, items: Iterable[T], total: int | None, desc: str, t0: float, closing_line: bool) -> Iterator[T]:
        done, last = 0, t0
        for item in items:
            yield item
            done += 1
            now = time.perf_counter()
            if now - last >= HEARTBEAT_S:
                last = now
                self._print(f"{desc}: {done}/{total if total is not None else '?'} ({now - t0:.0f} s)")
        if closing_line:
            self._print(f"{desc}: {done} steps in {time.perf_counter() - t0:.1f} s")


HEARTBEAT_S = 60.0


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


_current = Console()
_original_showwarning = warnings.showwarning


def get_console() -> Console:
    return _current


def set_console(console: Console) -> None:
    """Make ``console`` the one every module prints through; Python warnings are copied to its log too."""
    global _current
    _current = console

    def showwarning(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001 - warnings' signature
        _current._log(f"{category.__name__}: {message} ({filename}:{lineno})")
        _original_showwarning(message, category, filename, lineno, file, line)

    warnings.showwarning = showwarning
