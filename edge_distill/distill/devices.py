"""Where a one-process build trains and runs its torch models: ``--device auto|cpu|cuda``.

The default install is the pinned CPU torch wheel, where ``auto`` means the CPU and nothing changes.  A user who
installs a CUDA build of torch gets the GPU with ``auto`` and no code change: training (students and the built-in
teacher), the teacher's cached logits and its view bank, and every accuracy the build measures in torch.  Export and
conversion always run on the CPU (the exported graph must not depend on the device).  DDP ranks pick their own GPU
(``procgroup.device``).  The choice is held here for the process, like the console, because it describes the
machine, not the experiment: it is recorded in each training result, never in a stage key, so a run directory
trained on one machine is reused on another.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")
_selected = torch.device("cpu")


def resolve_device(name: str) -> torch.device:
    """``auto`` → the first CUDA GPU when this torch build sees one, else the CPU; ``cuda`` without one is refused."""
    if name not in DEVICES:
        raise ConfigError(f"--device must be one of {', '.join(DEVICES)}, got {name!r}.", "Use --device auto (the default).")
    cuda = torch.cuda.is_available()
    if name == "cuda" and not cuda:
        build = torch.__version__ + (f", CUDA {torch.version.cuda}" if torch.version.cuda else ", a CPU-only build")
        raise ConfigError(f"--device cuda, but this torch ({build}) sees no CUDA GPU.",
                          "Install a CUDA build of torch on a machine with an NVIDIA GPU, or use --device auto / cpu.")
    return torch.device("cuda", 0) if name == "cuda" or (name == "auto" and cuda) else torch.device("cpu")


def select_training_device(name: str, cpu_threads: int) -> str:
    """Make ``name`` the device this process trains on; returns a line saying what was chosen."""
    global _selected
    _selected = resolve_device(name)
    torch.set_num_threads(cpu_threads)
    return describe(_selected) + ("" if _selected.type == "cuda" else f", {cpu_threads} threads")


def training_device() -> torch.device:
    return _selected


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{device.index or 0} ({torch.cuda.get_device_name(device)}, torch {torch.__version__})"
    return f"cpu (torch {torch.__version__})"
