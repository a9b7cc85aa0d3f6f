"""edge_distill: distil a teacher into a device-sized student, export it to verified INT8 TFLite,
benchmark it where it will run, and bundle it.

The public API is small (``__all__``): ``build``, ``convert``, ``bench`` and what they return; see docs/python-api.md.
The CLI (``edge-distill --help``) is a client of the same functions.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from .versions import __version__  # noqa: E402

from .errors import EdgeDistillError  # noqa: E402
from .api import Build, Conversion, bench, build, convert  # noqa: E402  (light: torch and numpy load inside the calls)

# Result types whose modules import numpy or the bench package: loaded on first use, so `import edge_distill` stays instant.
_LAZY = {"LedgerRow": "edge_distill.verify", "BenchResult": "edge_distill.bench.result", "BuildOptions": "edge_distill.options",
         "HopCheck": "edge_distill.convert.results", "ConvertResult": "edge_distill.convert.results"}


class _Package(types.ModuleType):
    """``edge_distill.convert`` and ``edge_distill.bench`` are the API's functions, named like the subpackages that do the
    work.  Importing a submodule sets it as an attribute of its parent, which would replace the function the first time
    anything imports ``edge_distill.convert.*``; this keeps the function.  The subpackages stay what ``from
    edge_distill.convert import ...`` and ``sys.modules`` give."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("bench", "convert") and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edge_distill' has no attribute {name!r}")


__all__ = ["BenchResult", "Build", "BuildOptions", "Conversion", "ConvertResult", "EdgeDistillError", "HopCheck", "LedgerRow",
           "__version__", "bench", "build", "convert"]
