"""edge_distill: distil a teacher into a device-sized student, export it to verified INT8 TFLite,
benchmark it where it will run, and bundle it.

The public API is small; everything else is reachable through the CLI (``edge-distill --help``).
"""

from .versions import __version__  # noqa: E402

from .errors import EdgeDistillError  # noqa: E402


def build(options=None, **kwargs):
    """Run the full pipeline (``edge-distill build``).  Pass a ``BuildOptions`` or its fields as keywords."""
    from .options import BuildOptions
    from .pipeline import build as _build

    return _build(options or BuildOptions(**kwargs))


__all__ = ["EdgeDistillError", "__version__", "build"]
