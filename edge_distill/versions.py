"""edge-distill's version, and those of Python and the packages a build leans on, as report.json records them."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

# The package re-exports it as edge_distill.__version__; it lives here so that modules can name the version
# without importing the package's __init__, which reaches the pipeline.
__version__ = "0.1.0"


def tool_versions() -> dict[str, str]:
    out = {"edge-distill": __version__, "python": platform.python_version()}
    for pkg in ("torch", "onnx", "onnxruntime", "onnx2tf", "tensorflow", "ai-edge-litert", "numpy", "scikit-learn"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out
