"""A bank of fixed augmented views with the teacher's outputs on each: consistent-view KD at cached cost.

Distilling on augmented inputs needs the teacher's output on the *same* view the student sees (Beyer et
al. 2022).  Running the teacher at every step costs a teacher forward pass per student step — for a
teacher 4x the student's size that more than doubles training time, and it is paid again by every
student trained from the same teacher (seeds, KD variants, the sizing proxy).  The bank pays it once:
``K`` views of every training image (view 0 is the image itself, the others random shift/flip views),
with the teacher's logits — and, for feature losses, its last feature map, stored as float16 — on each.
Each epoch every sample draws one of its ``K`` views, so a student sees ``K`` distinct inputs per image
over training, each with exactly matching teacher targets.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..console import get_console
from ..errors import ConfigError
from .augment import augment
from .features import capture_features
from .layout import channels_last_input, set_memory_format


@dataclass(frozen=True)
class ViewBank:
    x: np.ndarray  # (K, N, *input_shape) float32 inputs
    logits: np.ndarray  # (K, N, classes) float32 teacher logits on each view
    maps: np.ndarray | None = None  # (K, N, C, H, W) float16 teacher feature maps, for feature losses

    @property
    def views(self) -> int:
        return int(self.x.shape[0])

    def __post_init__(self) -> None:
        if self.x.shape[:2] != self.logits.shape[:2] or (self.maps is not None and self.maps.shape[:2] != self.x.shape[:2]):
            raise ConfigError(
                f"View bank arrays disagree: inputs {self.x.shape[:2]}, logits {self.logits.shape[:2]}"
                + (f", maps {self.maps.shape[:2]}" if self.maps is not None else "") + " (views, samples).",
                "Rebuild the bank with build_view_bank.",
            )


def build_view_bank(
    teacher: nn.Module,
    x: np.ndarray,
    views: int,
    shift: int,
    flip: bool,
    background: float,
    seed: int = 0,
    with_maps: bool = False,
    batch_size: int = 512,
    workers: int = 1,
    logits: np.ndarray | None = None,
) -> ViewBank:
    """``views`` views of every row of ``x`` (view 0 unaugmented) and the teacher's outputs on them.

    ``workers`` > 1 runs the teacher in that many processes of one thread each, on the same inputs, when it would
    take more than ``PROCESSES_PAY_AFTER_S`` here (timed on the first chunk): on the 2-core build VM one process on
    two threads ran the fashion-mnist teacher only 1.39x faster than on one thread, two one-thread processes ran 2
    trainings at ~1.9x (the suite's bank: 9.1 min in one process, 6.6 in two).  The views are drawn here first, in one
    order, so the bank is the same for any ``workers`` (the logits to float rounding).  The teacher must pickle (a
    built-in or plain PyTorch module; a TorchScript teacher is run here, in this process)."""
    if views < 1:
        raise ConfigError(f"A view bank needs at least 1 view, got {views}.", "Use 1 (no augmentation) or more.")
    if views > 1 and shift <= 0 and not flip:
        raise ConfigError("A view bank with more than one view needs augmentation (shift > 0 or flip).", "Set a shift or flip, or use 1 view.")
    inputs = _view_inputs(x, views, shift, flip, background, seed, batch_size)
    if logits is not None and not with_maps:  # the teacher's answers on these very views, kept from an earlier stage
        return ViewBank(np.concatenate(inputs).astype(np.float32).reshape(views, len(x), *x.shape[1:]), logits)
    outputs = _outputs_here(teacher, inputs[:1], with_maps, None)  # also times one chunk: would processes pay?
    rest = None
    if workers > 1 and _processes_pay(outputs[0][2], len(inputs) - 1):
        rest = _outputs_in_processes(teacher, inputs[1:], with_maps, workers)
    outputs += rest if rest is not None else _outputs_here(teacher, inputs[1:], with_maps, f"teacher on {views} views")
    n = len(x)

    def stack(parts: list[np.ndarray]) -> np.ndarray:
        flat = np.concatenate(parts)
        return flat.reshape(views, n, *flat.shape[1:])

    return ViewBank(stack(inputs).astype(np.float32), stack([o[0] for o in outputs]),
                    stack([o[1] for o in outputs]) if with_maps else None)


# Starting a worker (spawn, import torch, unpickle the teacher) took ~4 s on the 2-core build VM; below this much
# teacher time in this process the workers cost more than they save (the test suite's digits banks take < 1 s).
PROCESSES_PAY_AFTER_S = 30.0


def _processes_pay(chunk_seconds: float, chunks_left: int) -> bool:
    return chunk_seconds * chunks_left > PROCESSES_PAY_AFTER_S


def bank_workers() -> int:
    """Teacher processes for a build's bank: one per core, at most 8 -- every worker holds its own copy of the teacher,
    and more than 2 has not been measured here (the build VM has 2 cores).  One when the main script could not take
    worker processes: spawn imports it again in each, and a script without ``if __name__ == "__main__":`` would start
    its build again there."""
    if not main_module_guarded():
        return 1
    return max(1, min(os.cpu_count() or 1, 8))


def main_module_guarded() -> bool:
    """Whether spawned workers can import the main module safely: an interactive session or notebook (no file), or a
    script or module whose source has the ``__main__`` guard (the ``edge-distill`` command's has)."""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    if not path:
        return True
    try:
        source = Path(path).read_text(errors="replace")
    except OSError:
        return False
    return "__name__ == \"__main__\"" in source or "__name__ == '__main__'" in source


def _view_inputs(x: np.ndarray, views: int, shift: int, flip: bool, background: float, seed: int,
                 batch_size: int) -> list[np.ndarray]:
    """Every view's inputs in chunks of ``batch_size``, view by view; the augmentations drawn in this order from
    one generator, so a bank is reproducible from its seed."""
    generator = torch.Generator().manual_seed(seed * 6_151 + 17)
    chunks = []
    for view in range(views):
        for start in range(0, len(x), batch_size):
            xb = torch.from_numpy(x[start : start + batch_size])
            chunks.append((augment(xb, generator, shift, flip, background) if view > 0 else xb).numpy())
    return chunks


@torch.no_grad()
def _teacher_outputs(teacher: nn.Module, xb: np.ndarray, with_maps: bool) -> tuple[np.ndarray, np.ndarray | None, float]:
    """The teacher's float32 logits on one chunk, with ``with_maps`` its last feature map as float16, and the seconds
    it took."""
    started = time.perf_counter()
    xin = channels_last_input(torch.from_numpy(xb))
    if not with_maps:
        return teacher(xin).float().numpy(), None, time.perf_counter() - started
    with capture_features(teacher) as captured:
        out = teacher(xin)
    return out.float().numpy(), captured[0].to(torch.float16).numpy(), time.perf_counter() - started


def _outputs_here(teacher: nn.Module, inputs: list[np.ndarray], with_maps: bool, label: str | None) -> list:
    """The teacher's outputs on ``inputs`` in this process, with a progress bar named ``label`` (``None``: none)."""
    if not inputs:
        return []
    teacher.eval()
    images = inputs[0].ndim == 4
    if images:
        set_memory_format(torch.channels_last, teacher)
    try:
        chunks = get_console().progress(inputs, len(inputs), label) if label else inputs
        return [_teacher_outputs(teacher, xb, with_maps) for xb in chunks]
    finally:
        if images:
            set_memory_format(torch.contiguous_format, teacher)


def _outputs_in_processes(teacher: nn.Module, inputs: list[np.ndarray], with_maps: bool, workers: int) -> list | None:
    """The teacher's outputs on ``inputs`` from ``workers`` one-thread CPU processes, in order; ``None`` when the teacher
    is on an accelerator or does not pickle (then the caller runs it here)."""
    import multiprocessing
    import pickle
    from concurrent.futures import ProcessPoolExecutor, as_completed

    if any(t.device.type != "cpu" for t in teacher.state_dict().values()):
        return None  # an accelerator runs it faster here than CPU processes would
    try:
        # By value through the pipe, not shared memory: containers often mount a small /dev/shm.
        packed = pickle.dumps(teacher.eval())
    except Exception as exc:  # TorchScript modules and closures do not pickle
        get_console().stage("distill", f"view bank: the teacher does not pickle ({type(exc).__name__}); running it in this process")
        return None
    blocks = [list(range(i, len(inputs), 8 * workers)) for i in range(min(len(inputs), 8 * workers))]
    outputs: list = [None] * len(inputs)
    # spawn, not fork: a forked child inherits this process's torch thread pool in an undefined state.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_teacher_on_chunks, packed, [inputs[i] for i in block], with_maps): block for block in blocks}
        done = get_console().progress(as_completed(futures), len(futures), f"teacher on the views, {workers} processes")
        for future in done:
            for i, out in zip(futures[future], future.result()):
                outputs[i] = out
    return outputs


def _teacher_on_chunks(packed: bytes, chunks: list[np.ndarray], with_maps: bool) -> list:
    """A worker process: the pickled teacher on each chunk, on one thread."""
    import pickle

    torch.set_num_threads(1)
    teacher = pickle.loads(packed)
    if chunks[0].ndim == 4:
        set_memory_format(torch.channels_last, teacher)
    return [_teacher_outputs(teacher, xb, with_maps) for xb in chunks]


def draw_views(bank: ViewBank, seed: int, epoch: int) -> torch.Tensor:
    """Which view every sample trains on this epoch; depends only on (seed, epoch), so resumes repeat it."""
    generator = torch.Generator().manual_seed(seed * 104_729 + epoch)
    return torch.randint(0, bank.views, (bank.x.shape[1],), generator=generator)
