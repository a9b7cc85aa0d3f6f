"""The data stage's shared pieces: the data's content key, and the splits it wrote (the task prepares them)."""

from __future__ import annotations

from pathlib import Path

from ..data import DataResult
from ..rundir import RunDir


def content_key(path: str) -> str:
    """A user's file or folder is keyed by its content, so editing the data redoes the build; a built-in dataset by its name."""
    from ..data.user import fingerprint, is_user_data

    return fingerprint(path) if is_user_data(path) else path


def path_content_key(path: str) -> str:
    """A path that is never a built-in dataset's name (--unlabelled), keyed by its content: a folder called digits too."""
    from ..data.user import fingerprint

    return fingerprint(path)


def load_splits(run: RunDir, data: DataResult):
    from ..data import Splits

    return Splits.load(run.path(data.splits_path))


def write_splits(run: RunDir, splits) -> Path:
    with run.atomic_path("data/splits.npz") as tmp:
        with open(tmp, "wb") as fh:
            splits.save(fh)
    return run.path("data/splits.npz")


def write_npz(run: RunDir, relative: str, **arrays) -> Path:
    import numpy as np

    with run.atomic_path(relative) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return run.path(relative)


def write_npy(run: RunDir, relative: str, array) -> Path:
    import numpy as np

    with run.atomic_path(relative) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array)
    return run.path(relative)
