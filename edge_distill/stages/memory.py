"""Peak memory of one stage: the build process's resident set, sampled while the stage runs.

``ru_maxrss`` is the process's peak since it started, so on its own it cannot say which stage peaked; a thread
reads ``VmRSS`` (the current resident set) from /proc/self/status every ``INTERVAL_S`` and keeps the highest,
which is this stage's own peak (to within the interval: a spike shorter than that can be missed, so the larger of
the samples and the growth of ``ru_maxrss`` during the stage is reported).  Child processes (the view bank's
workers, DDP ranks) are counted separately: ``ru_maxrss`` of RUSAGE_CHILDREN, the largest child waited for so far.
"""

from __future__ import annotations

import resource
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

INTERVAL_S = 0.05
_STATUS = Path("/proc/self/status")


@dataclass(frozen=True)
class StageMemory:
    peak_rss_mb: float  # the build process's highest resident set while this stage ran
    start_rss_mb: float  # its resident set when the stage began
    process_peak_mb: float  # ru_maxrss at the end of the stage: the process's peak so far (all stages until now)
    children_peak_mb: float  # the largest child process waited for so far (0: none)


def max_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    # Linux reports kilobytes, macOS bytes.
    kb = resource.getrusage(who).ru_maxrss / (1024 if sys.platform == "darwin" else 1)
    return round(kb / 1024, 1)


def current_rss_mb() -> float:
    """VmRSS now; ru_maxrss where /proc is missing (macOS), which is then an upper bound."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return max_rss_mb()


class RssSampler:
    """``with RssSampler() as s: ...`` then ``s.result``: the block's peak resident set."""

    def __enter__(self) -> "RssSampler":
        self.start, self.peak, self._start_max = current_rss_mb(), current_rss_mb(), max_rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(INTERVAL_S):
            self.peak = max(self.peak, current_rss_mb())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        end_max = max_rss_mb()
        # A new process-wide maximum reached during the block is this block's peak, even between two samples.
        peak = max(self.peak, current_rss_mb(), end_max if end_max > self._start_max else 0.0)
        self.result = StageMemory(round(peak, 1), self.start, end_max, max_rss_mb(resource.RUSAGE_CHILDREN))
