"""Keep TensorFlow's and onnx2tf's chatter off the user's console without losing it when something breaks.

TensorFlow logs from C++ straight to file descriptor 2 (some of it before its own log level is read),
and onnx2tf prints banners to stdout, so Python-level redirection is not enough: ``captured_output``
points the process's stdout/stderr descriptors at a temporary file for the duration of the block.
The caller gets the captured text back, so a failure can quote the tool's last lines.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings
from typing import Iterator


class Captured:
    """Text a block wrote to stdout/stderr; filled in when the block ends (also when it raises)."""

    def __init__(self) -> None:
        self.text = ""

    def tail(self, lines: int = 15) -> str:
        kept = [line for line in self.text.splitlines() if line.strip()]
        return "\n".join(kept[-lines:])


def quiet_tensorflow_env() -> None:
    """Must run before tensorflow is imported: TF reads these once, at import time.

    ``setdefault`` so that someone debugging can still ask for the full logs with TF_CPP_MIN_LOG_LEVEL=0.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # oneDNN's notice about floating-point round-off is printed on every import and says nothing actionable.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def quiet_tensorflow_loggers() -> None:
    """Python-side loggers of TF/absl; called after the import, when those loggers exist."""
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # absl ships with tensorflow; without it there is nothing to quiet
        pass
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


@contextlib.contextmanager
def captured_output() -> Iterator[Captured]:
    captured = Captured()
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        saved = {fd: os.dup(fd) for fd in (1, 2)}
    except OSError:  # no stdout/stderr descriptors (a daemonized process): nothing reaches a console anyway
        yield captured
        return
    with tempfile.TemporaryFile(mode="w+b") as sink, warnings.catch_warnings():
        # The tools raise DeprecationWarnings/UserWarnings about their own internals; none are ours to act on.
        warnings.simplefilter("ignore")
        try:
            for fd in saved:
                os.dup2(sink.fileno(), fd)
            yield captured
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            sink.seek(0)
            captured.text = sink.read().decode("utf-8", errors="replace")
