"""What a build shows the user while it runs: stage headers, messages and progress bars.

Everything shown on the console is also appended to the run's log file (``build.log``), so a CI log
or a remote session can be read afterwards.  ``quiet`` hides progress bars and info lines, never errors.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


class Console:
    def __init__(self, quiet: bool = False, log_path: Path | None = None) -> None:
        self.quiet = quiet
        self.log_path = log_path

    def _log(self, line: str) -> None:
        if self.log_path is not None:
            with open(self.log_path, "a") as fh:
                fh.write(f"{time.strftime('%H:%M:%S')} {line}\n")

    def stage(self, name: str, message: str) -> None:
        self.info(f"[{name}] {message}")

    def info(self, message: str) -> None:
        self._log(message)
        if not self.quiet:
            print(message, file=sys.stderr, flush=True)

    def warn(self, message: str) -> None:
        self._log(f"WARNING: {message}")
        print(f"WARNING: {message}", file=sys.stderr, flush=True)

    def progress(self, items: Iterable[T], total: int | None = None, desc: str = "") -> Iterator[T]:
        """Iterate with a progress bar on stderr (none when quiet); logs start and end to the log file."""
        self._log(f"{desc}: started")
        if self.quiet:
            yield from items
        else:
            from tqdm import tqdm

            yield from tqdm(items, total=total, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True)
        self._log(f"{desc}: done")


_current = Console()


def get_console() -> Console:
    return _current


def set_console(console: Console) -> None:
    global _current
    _current = console
