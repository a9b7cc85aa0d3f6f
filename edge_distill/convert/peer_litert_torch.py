"""The litert-torch peer: the same fp32 student converted by Google's litert-torch, scored beside our onnx2tf files.

    python = setup_peer()                                                  # once (pip, minutes); then cached
    result = convert_with_litert_torch(model, (1, 8, 8), calib_nchw, out_dir)
    result.files["tflite_int8_litert_torch"]   # or result.errors[...]: the converter's own words

litert-torch 0.10 pins ai-edge-litert 2.3 and torch < 2.15, which the converter's environment (onnx2tf's pins)
cannot hold, so it lives in its own venv made by ``bench.runtime_env.runtime_venv`` like a device runtime, and
``litert_torch_worker.py`` runs there in a subprocess.  The student crosses the boundary as a ``torch.export``
program, so the peer venv needs none of edge_distill; its torch is pinned to this process's torch release because a
saved program is read back reliably only by the torch that wrote it.

The exported program takes NHWC input (a permute in front of the student), as our TFLite files do, so the ledger and
the bench feed both the same NHWC samples.  Neither variant is a gate candidate: a peer never ships.
"""

from __future__ import annotations

import importlib.resources
import json
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..console import get_console
from ..errors import BenchError, ConfigError, DataError

PEER_NAME = "litert-torch"
PEER_VERSION = "0.10.0"
PEER_FP32, PEER_INT8 = "tflite_fp32_litert_torch", "tflite_int8_litert_torch"
PEER_FILE_NAMES = {PEER_FP32: "student_fp32_litert_torch.tflite", PEER_INT8: "student_int8_litert_torch.tflite"}
_WORKER_FILES = {PEER_FP32: "fp32", PEER_INT8: "int8"}  # the worker's result keys
_TORCH_RANGE = ((2, 4), (2, 15))  # litert-torch 0.10's torch pin: >=2.4, <2.15


@dataclass(frozen=True)
class PeerResult:
    """What the peer produced: a file per variant that converted, the converter's error text per one that did not."""

    files: dict[str, Path] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str | None] = field(default_factory=dict)

    def describe(self) -> str:
        version = self.versions.get("litert-torch") or PEER_VERSION
        said = [f"{v}: {self.files[v].stat().st_size:,} B in {self.seconds.get(v, 0):.1f} s" for v in self.files]
        said += [f"{v}: could not be converted — {e}" for v, e in self.errors.items()]
        return f"litert-torch {version} (torch {self.versions.get('torch') or '?'}): " + "; ".join(said)


def peer_requirements() -> tuple[str, ...]:
    """litert-torch with this process's torch release (see the module doc), refused where litert-torch cannot use it."""
    import torch

    release = re.match(r"(\d+)\.(\d+)\.(\d+)", torch.__version__)
    if release is None:
        raise ConfigError(f"torch {torch.__version__} has no release number the litert-torch peer can pin.", "Use a released torch build.")
    major_minor = (int(release.group(1)), int(release.group(2)))
    if not _TORCH_RANGE[0] <= major_minor < _TORCH_RANGE[1]:
        raise ConfigError(f"The litert-torch {PEER_VERSION} peer needs torch >= 2.4 and < 2.15 (to read this process's exported "
                          f"student), but this environment has torch {torch.__version__}.", "Run the build with a torch in that range, or leave --peer out.")
    return (f"{PEER_NAME}=={PEER_VERSION}", f"torch=={release.group(0)}")


def peer_python(cache_root: Path | str | None = None) -> Path | None:
    """The peer venv's Python when ``setup_peer`` has made it, else None (builds nothing, needs no network)."""
    from ..bench.runtime_env import find_runtime_venv

    return find_runtime_venv(peer_requirements(), cache_root)


def names_peer(text: str) -> bool:
    """Does ``text`` name the peer (``litert-torch`` or ``litert-torch==VERSION``), as `runner setup` accepts it?"""
    return isinstance(text, str) and text.split("==")[0].strip().lower().replace("_", "-") == PEER_NAME


def setup_peer(cache_root: Path | str | None = None, *, progress: Callable[[str], None] | None = None, force: bool = False,
               timeout_s: float = 3600, spec: str = PEER_NAME) -> Path:
    """Make (once) the peer venv and check that litert-torch imports there; returns its Python.  ``force`` rebuilds it.

    Raises ``ConfigError`` for a release other than 0.10.0 (the one checked here) and ``BenchError`` when pip cannot
    install it (no index, no wheel) or the installed package does not import."""
    from ..bench.runtime_env import READY, runtime_venv, venv_environ

    version = spec.partition("==")[2].strip()
    if version and version != PEER_VERSION:
        raise ConfigError(f"litert-torch {version} is not supported as a peer: only {PEER_VERSION} has been checked here.",
                          f"Use litert-torch=={PEER_VERSION}.")
    found = peer_python(cache_root)
    if found is not None and force:  # without its stamp the venv counts as unfinished: runtime_venv rebuilds it under its lock
        (found.parent.parent / READY).unlink(missing_ok=True)
    python = runtime_venv(peer_requirements(), cache_root, progress=progress or get_console().info, timeout_s=timeout_s)
    probe = "import json, litert_torch, torch; print(json.dumps([litert_torch.__version__, torch.__version__]))"
    proc = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL, env=venv_environ())
    try:
        version, _ = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        tail = "\n".join(proc.stderr.strip().splitlines()[-8:])
        raise BenchError(f"litert-torch is installed in {Path(python).parent.parent} but does not import:\n{tail}",
                         "Remove that folder and run the build again to set the peer up afresh.") from None
    if version != PEER_VERSION:
        raise BenchError(f"The peer venv imports litert-torch {version}, not {PEER_VERSION}.", f"Remove {Path(python).parent.parent} and try again.")
    return python


def _channels_last_input(model):
    """The student behind a permute: takes NHWC (N, H, W, C), hands the student NCHW -- the layout our TFLite files take."""
    import torch

    class ChannelsLastInput(torch.nn.Module):
        def __init__(self, student: torch.nn.Module) -> None:
            super().__init__()
            self.student = student

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.student(x.permute(0, 3, 1, 2))

    return ChannelsLastInput(model).eval()


def _check_inputs(input_shape: tuple[int, ...], calib: np.ndarray) -> np.ndarray:
    """The calibration samples as the peer's program takes them: NHWC float32 for an image student (C, H, W), int32 token
    ids for a text student (L,) -- the input dtypes and layouts of our own TFLite files."""
    if len(input_shape) not in (1, 3):
        raise ConfigError(f"The litert-torch peer converts image students (input C, H, W) and token-id students (input L); this one "
                          f"takes {tuple(input_shape)}.", "Leave --peer out for this student.")
    calib = np.asarray(calib)
    if calib.ndim != len(input_shape) + 1 or tuple(calib.shape[1:]) != tuple(input_shape) or len(calib) == 0:
        raise DataError(f"Peer calibration samples have shape {calib.shape}, expected (N ≥ 1, {', '.join(map(str, input_shape))}).")
    if len(input_shape) == 1:
        if calib.dtype.kind not in "iu":
            raise DataError(f"Peer calibration samples of a text student must be integer token ids, got {calib.dtype}.")
        return np.ascontiguousarray(calib, dtype=np.int32)
    if calib.dtype.kind != "f" or not np.all(np.isfinite(calib)):
        raise DataError(f"Peer calibration samples must be finite floats (the student's normalized input), got {calib.dtype}.")
    return np.ascontiguousarray(calib.transpose(0, 2, 3, 1), dtype=np.float32)


def _export_program(model, sample_nhwc: np.ndarray, path: Path) -> str:
    """Save the NHWC-wrapped student as a torch.export program; "" or why it could not be exported."""
    import copy

    import torch

    try:
        student = copy.deepcopy(model).cpu().eval()
        wrapped = _channels_last_input(student) if sample_nhwc.ndim == 4 else student  # token ids need no permute
        with torch.no_grad():
            program = torch.export.export(wrapped, (torch.from_numpy(sample_nhwc),))
        torch.export.save(program, str(path))
    except Exception as exc:  # noqa: BLE001  a student torch.export cannot trace is a peer finding, not a build failure
        return f"torch.export could not trace the student: {type(exc).__name__}: {str(exc).strip()[:1500]}"
    return ""


def _run_worker(python: Path, program: Path, calib: Path, out: Path, timeout_s: float) -> dict:
    from ..bench.runtime_env import venv_environ

    result = out / "result.json"
    worker = importlib.resources.files("edge_distill.convert") / "litert_torch_worker.py"
    with importlib.resources.as_file(worker) as worker_path:
        try:
            proc = subprocess.run([str(python), str(worker_path), str(program), str(calib), str(out), str(result)], capture_output=True,
                                  text=True, timeout=timeout_s, stdin=subprocess.DEVNULL, env=venv_environ(), cwd=str(out))
        except subprocess.TimeoutExpired:
            return {"error": f"the litert-torch worker did not finish within {timeout_s:.0f} s"}
    if not result.is_file():
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-12:])
        return {"error": f"the litert-torch worker exited with code {proc.returncode} and wrote no result:\n{tail}"}
    return json.loads(result.read_text())


def convert_with_litert_torch(model, input_chw: tuple[int, ...], calib_nchw: np.ndarray, out_dir: Path | str, *,
                              python: Path | str | None = None, timeout_s: float = 1800) -> PeerResult:
    """Convert ``model`` (a torch student taking NCHW ``input_chw``, or int token ids of shape ``(L,)``) with litert-torch
    to fp32 and PT2E INT8 files under ``out_dir`` (``PEER_FILE_NAMES``), both taking NHWC float32 input (int32 ids for
    a text student).  Calibrates on ``calib_nchw``.

    Never raises for a conversion that fails: its text is in ``errors``.  Raises ``ConfigError``/``DataError`` for
    input it cannot take and ``BenchError`` when the peer venv cannot be set up."""
    calib = _check_inputs(tuple(input_chw), calib_nchw)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    python = Path(python) if python is not None else (peer_python() or setup_peer())
    with tempfile.TemporaryDirectory(prefix="litert-torch-peer-", dir=out_dir) as tmp:
        work = Path(tmp)
        error = _export_program(model, calib[:1], work / "student.pt2")
        if not error:
            np.savez(work / "calib.npz", x=calib)
            raw = _run_worker(python, work / "student.pt2", work / "calib.npz", work, timeout_s)
            error = raw.get("error", "")
        if error:
            return PeerResult(errors={v: error for v in PEER_FILE_NAMES})
        files, errors, seconds = {}, {}, {}
        for variant, key in _WORKER_FILES.items():
            entry = raw.get(key) or {"error": "the worker did not report it", "seconds": 0.0}
            seconds[variant] = float(entry.get("seconds") or 0.0)
            built = work / str(entry.get("file", ""))
            if entry.get("error") or not built.is_file() or built.stat().st_size == 0:
                errors[variant] = entry.get("error") or "the converter reported success but wrote no file"
                continue
            final = out_dir / PEER_FILE_NAMES[variant]
            built.replace(final)  # same filesystem: atomic, so a half-written peer file never looks finished
            files[variant] = final
        return PeerResult(files, errors, seconds, dict(raw.get("versions") or {}))


def peer_model_files(run, model, input_chw: tuple[int, ...], calib_nchw: np.ndarray, subdir: str = "student"):
    """The convert stage's side of ``--peer litert-torch``: (``ModelFile``s for the peer files written under
    ``subdir``, an ``Unconverted`` per variant that could not be made, wall seconds per variant and in total).  Never raises for the peer's own failures --
    venv set-up included: the build goes on, and the ledger's row for that variant says why."""
    from ..errors import EdgeDistillError
    from .model_info import model_file_info
    from .results import Unconverted

    say = get_console()
    out_dir = run.path(subdir)
    for name in PEER_FILE_NAMES.values():  # an earlier build's peer file must not pass for this student's
        (out_dir / name).unlink(missing_ok=True)
    started = time.perf_counter()
    try:
        result = convert_with_litert_torch(model, input_chw, calib_nchw, out_dir)
    except EdgeDistillError as exc:
        reason = f"litert-torch peer not run — {exc.message}" + (f" ({exc.hint})" if exc.hint else "")
        say.warn(reason)
        return (), tuple(Unconverted(v, reason) for v in PEER_FILE_NAMES), {}
    seconds = {**result.seconds, f"{PEER_NAME} total": round(time.perf_counter() - started, 2)}
    say.info(result.describe())
    files = tuple(model_file_info(run, v, p, tuple(input_chw)) for v, p in result.files.items())
    version = result.versions.get("litert-torch") or PEER_VERSION
    failed = tuple(Unconverted(v, f"litert-torch {version}: {e}") for v, e in result.errors.items())
    for f in failed:
        say.warn(f"{f.variant} could not be converted — {f.reason}")
    return files, failed, seconds
