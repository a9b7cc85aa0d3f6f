"""The convert stage: torch student → ONNX → TFLite fp32 → every quantized variant, each one verified.

    torch ─► ONNX fp32 ─► (onnx2tf) TFLite fp32 + SavedModel ─┬► fp16 (onnx2tf's own file)
                      │                                      ├► dynamic range
                      │                                      ├► calibrate once ─► full INT8 ─► quality gate ─► escalation
                      │                                      └► int16 activations (16x8)
                      └► ONNX Runtime static INT8 (QDQ), the peer toolchain

Float hops must match the hop before them (a mismatch is a broken conversion and raises); quantized models
go through the quality gate instead (``escalate.py``), which never raises: its verdict travels in the
result and the verify stage fails the build when nothing passed.

Everything is built in a scratch directory inside the run directory (same filesystem, so the final
``os.replace`` is atomic) and published only at the end: a model that failed its check never sits in the
run directory under a name that looks finished.  The tools' own temporary files go there too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import numpy as np

if TYPE_CHECKING:  # torch is imported where it is used, so importing this package stays cheap
    import torch

from ..console import Console, get_console
from ..errors import ConversionError, DataError
from ..rundir import RunDir
from . import checks as hop_checks
from . import tflite_quant
from .calibration import InputContract, check_calibration, to_model_input
from .escalate import Judge, Ladder, Outcome, climb
from .model_info import model_file_info
from .onnx_export import OPSET, export_onnx
from .quiet import captured_output
from .results import CalibrationInfo, ConvertResult, HopCheck, LayerError, ModelFile, Unconverted, reference_kernels_note
from .runtimes import converter_runtime, run_onnx, run_tflite, tflite_interpreter
from .tflite_convert import onnx_to_tflite_fp32

FILE_NAMES = {
    "onnx_fp32": "student.onnx",
    "tflite_fp32": "student_fp32.tflite",
    "tflite_fp16": "student_fp16.tflite",
    "tflite_dynamic": "student_dynamic_range.tflite",
    "tflite_int8": "student_int8.tflite",
    "tflite_int16x8": "student_int16x8.tflite",
    "tflite_mixed": "student_mixed_int8_float.tflite",
    "onnx_int8_qdq": "student_int8_qdq.onnx",
}
# Built for the ledger on every conversion unless ``variants`` says otherwise; the others are always built
# (onnx_fp32, tflite_fp32, tflite_int8) or only by the escalation (tflite_mixed).
OPTIONAL_VARIANTS = ("tflite_fp16", "tflite_dynamic", "tflite_int16x8", "onnx_int8_qdq")
LAYER_ANALYSIS_SAMPLES = 64  # enough for stable per-layer averages; the debugger runs one sample at a time
# The quality gate's "more calibration" rung factor: that rung recalibrates on a class-balanced draw this many
# times the size of the build's calibration set, so the convert stage sizes ``more_calib_x`` with it.
MORE_CALIBRATION_FACTOR = 4


def _validate_samples(name: str, x: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != len(input_shape) + 1 or tuple(x.shape[1:]) != tuple(input_shape):
        raise DataError(
            f"{name} has shape {tuple(x.shape)}, expected (N, {', '.join(map(str, input_shape))}) to match the student input."
        )
    if len(x) == 0:
        raise DataError(f"{name} is empty; the convert stage needs samples to calibrate and verify with.")
    if not np.all(np.isfinite(x)):
        raise DataError(f"{name} contains NaN or infinite values.")
    # Integer inputs (token ids) stay integers; float inputs are float32, as the exported graph expects.
    return x if x.dtype.kind in "iu" else x.astype(np.float32, copy=False)


def _float32_unless_integer(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    return x if x.dtype.kind in "iu" else x.astype(np.float32, copy=False)


def _torch_logits(model: torch.nn.Module, x: np.ndarray, batch: int = 256) -> np.ndarray:
    import torch

    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    outputs = []
    with torch.no_grad():
        for start in range(0, len(x), batch):
            chunk = torch.from_numpy(x[start : start + batch]).to(device)
            outputs.append(model(chunk).float().cpu().numpy())
    return np.concatenate(outputs).reshape(len(x), -1)


def _hop_failed(hop: str, exc: ConversionError, tool_output: str = "") -> str:
    text = f"{hop}: could not be converted — {exc.message}"
    if tool_output:
        text += "\n    last lines of the converter's output:\n      " + tool_output.replace("\n", "\n      ")
    return text


@contextlib.contextmanager
def _scratch_tempdir(work: Path) -> Iterator[None]:
    """Point Python's and C++'s temporary directory at our scratch space: ONNX Runtime's quantizer and
    TensorFlow write temporary models there, and a build must not write outside its run directory."""
    saved_tempdir, saved_env = tempfile.tempdir, os.environ.get("TMPDIR")
    tmp = work / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    tempfile.tempdir = str(tmp)
    os.environ["TMPDIR"] = str(tmp)
    try:
        yield
    finally:
        tempfile.tempdir = saved_tempdir
        if saved_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved_env


def _optional(failed: list[Unconverted], variant: str, build: Callable[[], Path]) -> Path | None:
    """Build an optional ledger variant; a failure becomes a ledger row that says why, instead of failing the build."""
    try:
        with captured_output() as log:
            return build()
    except ConversionError as exc:
        reason = exc.message.splitlines()[0] if exc.message else "unknown error"
        tail = log.tail(3)
        failed.append(Unconverted(variant, reason + (f" ({tail.splitlines()[-1][:200]})" if tail else "")))
        return None


def convert_student(
    model: torch.nn.Module,
    input_shape: tuple[int, int, int],
    calib_x: np.ndarray,
    check_x: np.ndarray,
    run: RunDir,
    subdir: str = "student",
    int8_min_agreement: float = 0.9,
    *,
    check_y: np.ndarray | None = None,
    calib_y: np.ndarray | None = None,
    contract: InputContract | None = None,
    more_calib_x: np.ndarray | None = None,
    max_int8_drop: float = 1.0,
    escalate: bool = True,
    variants: Iterable[str] | None = None,
    layer_analysis: bool = True,
    threads: int = 2,
    tflite_logits: Callable[..., np.ndarray] | None = None,
    gate_runtime: str = "",
) -> ConvertResult:
    """Convert an eval-mode float32 classifier (NCHW in, logits out), verify every hop, gate the INT8 model.

    ``calib_x`` (optionally with ``calib_y``) calibrates the quantized models and is checked against
    ``contract`` first (``CalibrationError`` on a mismatch).  ``check_x`` are held-out samples for the hop
    checks and the quality gate; with ``check_y`` the gate compares accuracy, without it top-1 agreement.
    When full INT8 loses more than ``max_int8_drop`` points, the gate escalates (``escalate.py``);
    ``more_calib_x`` feeds its "more calibration" rung.  ``tflite_logits`` (``run_tflite``'s signature) scores the INT8
    candidates for the gate -- the device's runtime (``bench.device_scoring``); default: this process's LiteRT, which
    ``gate_runtime`` then names in the result.  ``variants`` limits the optional ledger variants
    (default: all of ``OPTIONAL_VARIANTS``).  Writes the files under ``<subdir>/`` (names in ``FILE_NAMES``).
    Raises ``ConversionError`` listing every failed float hop, with the numbers; a quantized model that
    fails the gate does not raise -- ``result.deploy_variant`` is then None.
    """
    console = get_console()
    input_shape = tuple(int(d) for d in input_shape)
    # Every input is checked before anything is written, so a bad call leaves the run directory untouched.
    wanted = _wanted_variants(int8_min_agreement, variants)
    calibration, calib_x, more_calib_x = _checked_calibration(calib_x, calib_y, more_calib_x, input_shape, contract)
    check_x = _validate_samples("check_x", check_x, input_shape)
    model.eval()

    out_dir = run.path(subdir)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".convert-", dir=out_dir))
    started = time.perf_counter()
    hops = _Conversion(
        console, model, input_shape, calib_x=calib_x, check_x=check_x, check_y=check_y, more_calib_x=more_calib_x,
        calibration=calibration, wanted=wanted, work=work, threads=threads, int8_min_agreement=int8_min_agreement,
        max_int8_drop=max_int8_drop, escalate=escalate, tflite_logits=tflite_logits or run_tflite,
        gate_runtime=gate_runtime or converter_runtime(),
    )
    try:
        with _scratch_tempdir(work):
            hops.torch_to_onnx()
            hops.onnx_to_tflite_fp32()
            hops.fit_samples_to_model_input()
            hops.build_fp16()
            hops.build_dynamic_range()
            hops.calibrate_int8()
            hops.build_int16x8()
            if layer_analysis:
                hops.analyse_int8_layers()
            hops.gate_int8()
            hops.check_plain_int8()
            hops.build_onnx_int8_qdq()
            files = hops.publish(run, out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return hops.result(files, started)


def _wanted_variants(int8_min_agreement: float, variants: Iterable[str] | None) -> set[str]:
    """The optional variants to build, after refusing arguments that could never work."""
    if not 0.0 < int8_min_agreement <= 1.0:
        raise ConversionError(f"int8_min_agreement must be in (0, 1], got {int8_min_agreement}")
    wanted = set(OPTIONAL_VARIANTS if variants is None else variants)
    unknown = wanted - set(OPTIONAL_VARIANTS)
    if unknown:
        raise ConversionError(f"Unknown optional variant(s) {sorted(unknown)}.", f"Choose from {', '.join(OPTIONAL_VARIANTS)}.")
    return wanted


def _checked_calibration(
    calib_x: np.ndarray,
    calib_y: np.ndarray | None,
    more_calib_x: np.ndarray | None,
    input_shape: tuple[int, ...],
    contract: InputContract | None,
) -> tuple[CalibrationInfo, np.ndarray, np.ndarray | None]:
    """Both calibration sets checked against the contract, then cast as the exported graph expects."""
    calibration = check_calibration(calib_x, input_shape, contract, calib_y)
    calib_x = _float32_unless_integer(calib_x)
    if more_calib_x is not None:
        check_calibration(more_calib_x, input_shape, contract)
        more_calib_x = _float32_unless_integer(more_calib_x)
    return calibration, calib_x, more_calib_x


class _Conversion:
    """One conversion's hops, in the order ``convert_student`` calls them, and the state they hand on.

    Every file is written into the scratch directory ``work`` and recorded in ``built``; only ``publish``
    moves files into the run directory, so a hop that raises leaves nothing there that looks finished.
    """

    # Set by the hops, for the hops after them.
    onnx_path: Path
    torch_logits: np.ndarray
    onnx_logits: np.ndarray
    saved_model: Path
    fp32_path: Path
    fp32_logits: np.ndarray
    model_shape: tuple[int, ...]
    model_dtype: str
    calib_m: np.ndarray
    check_m: np.ndarray
    layout: str
    calibrated: bytes
    judge: Judge
    outcome: Outcome

    def __init__(
        self,
        console: Console,
        model: torch.nn.Module,
        input_shape: tuple[int, ...],
        *,
        calib_x: np.ndarray,
        check_x: np.ndarray,
        check_y: np.ndarray | None,
        more_calib_x: np.ndarray | None,
        calibration: CalibrationInfo,
        wanted: set[str],
        work: Path,
        threads: int,
        int8_min_agreement: float,
        max_int8_drop: float,
        escalate: bool,
        tflite_logits: Callable[..., np.ndarray],
        gate_runtime: str,
    ) -> None:
        self.console = console
        self.tflite_logits, self.gate_runtime = tflite_logits, gate_runtime
        self.model = model
        self.input_shape = input_shape
        self.calib_x, self.check_x, self.check_y, self.more_calib_x = calib_x, check_x, check_y, more_calib_x
        self.calibration = calibration
        self.wanted = wanted
        self.work = work
        self.threads = threads
        self.int8_min_agreement = int8_min_agreement
        self.max_int8_drop = max_int8_drop
        self.escalate = escalate
        # What the result reports, filled in hop by hop.
        self.checks: list[HopCheck] = []
        self.notes: list[str] = []
        self.unconverted: list[Unconverted] = []
        self.peer_seconds: dict[str, float] = {}
        self.layer_errors: list[LayerError] = []
        self.layer_note = ""
        self.built: dict[str, Path] = {}
        # Both the ledger (or the report) and a rung of the gate may ask for these; each is computed at most once.
        self._int16x8_model: bytes | None = None
        self._ranking: list[str] | None = None

    def _stage(self, message: str) -> None:
        self.console.stage("convert", message)

    def _build_optional(self, variant: str, build: Callable[[], Path]) -> None:
        _store(self.built, variant, _optional(self.unconverted, variant, build))

    # ---- torch -> ONNX ------------------------------------------------------------------------------------

    def torch_to_onnx(self) -> None:
        check_x = self.check_x
        self._stage(f"torch -> ONNX (opset {OPSET}, static batch 1)")
        # Token ids keep their integer type into the graph (a Gather index); images are float32.
        input_dtype = check_x.dtype.name if check_x.dtype.kind in "iu" else "float32"
        self.onnx_path = export_onnx(self.model, self.input_shape, self.work / FILE_NAMES["onnx_fp32"], input_dtype=input_dtype)
        self.built["onnx_fp32"] = self.onnx_path
        self.torch_logits = _torch_logits(self.model, check_x)
        self.onnx_logits = run_onnx(self.onnx_path, check_x, self.threads)
        self.checks.append(hop_checks.compare_float("torch->onnx", self.torch_logits, self.onnx_logits, hop_checks.TORCH_ONNX_ATOL))
        self._stage(self.checks[-1].describe())

    # ---- ONNX -> TFLite fp32 (onnx2tf) --------------------------------------------------------------------

    def onnx_to_tflite_fp32(self) -> None:
        check_x = self.check_x
        self._stage("ONNX -> TFLite fp32 (onnx2tf, NCHW -> NHWC)")
        # onnx2tf runs the graph on sample images for its shape checks; these are the ones it gets (see tflite_convert).
        samples_nhwc = np.transpose(check_x[:20], (0, 2, 3, 1)) if check_x.ndim == 4 else check_x[:20]
        try:
            with captured_output() as log:
                self.saved_model, fp32_tmp = onnx_to_tflite_fp32(self.onnx_path, self.work / "onnx2tf", samples_nhwc)
        except ConversionError as exc:
            hop_checks.raise_if_failed(self.checks, [_hop_failed("onnx->tflite_fp32", exc, log.tail())])
            raise
        self.fp32_path = self.work / FILE_NAMES["tflite_fp32"]
        os.replace(fp32_tmp, self.fp32_path)
        self.built["tflite_fp32"] = self.fp32_path
        self.fp32_logits = run_tflite(self.fp32_path, check_x, self.threads)
        self.checks.append(hop_checks.compare_float("onnx->tflite_fp32", self.onnx_logits, self.fp32_logits, hop_checks.ONNX_TFLITE_ATOL))
        self._stage(self.checks[-1].describe())
        # A broken float hop makes every quantized model meaningless: stop before calibrating anything.
        hop_checks.raise_if_failed(self.checks)

    def fit_samples_to_model_input(self) -> None:
        """The calibration contract checked against the converted model's real input (layout and dtype)."""
        model_input = tflite_interpreter(self.fp32_path, threads=1).get_input_details()[0]
        self.model_shape = tuple(int(d) for d in model_input["shape"])
        self.model_dtype = np.dtype(model_input["dtype"]).name
        self.calib_m, self.layout = to_model_input(self.calib_x, self.model_shape, self.model_dtype)
        self.calibration = _with_layout(self.calibration, self.layout)
        self.check_m, _ = to_model_input(self.check_x, self.model_shape, self.model_dtype)

    # ---- float16 and dynamic range (no calibration) ---------------------------------------------------------

    def build_fp16(self) -> None:
        if "tflite_fp16" not in self.wanted:
            return
        fp16_src = self.saved_model / "model_float16.tflite"

        def fp16() -> Path:
            if not fp16_src.is_file():
                raise ConversionError("onnx2tf did not write model_float16.tflite.")
            target = self.work / FILE_NAMES["tflite_fp16"]
            shutil.copyfile(fp16_src, target)
            return target

        self._build_optional("tflite_fp16", fp16)

    def build_dynamic_range(self) -> None:
        if "tflite_dynamic" not in self.wanted:
            return
        self._stage("TFLite dynamic range (int8 weights, float activations)")
        self._build_optional("tflite_dynamic", lambda: _write(
            self.work / FILE_NAMES["tflite_dynamic"], tflite_quant.convert_dynamic_range(self.saved_model)))

    # ---- full INT8: calibrate once, then quantize as many ways as the gate needs ------------------------------

    def calibrate_int8(self) -> None:
        self._stage(f"calibrating INT8 on {len(self.calib_x)} samples ({self.layout}, {self.calibration.expected})")
        try:
            with captured_output() as log:
                self.calibrated = tflite_quant.calibrate(self.saved_model, self.calib_m)
        except ConversionError as exc:
            hop_checks.raise_if_failed(self.checks, [_hop_failed("tflite_fp32->tflite_int8", exc, log.tail())])
            raise

    def int16x8(self) -> bytes:
        """The 16x8 model, converted once whether the ledger or the gate's int16 rung asks first."""
        if self._int16x8_model is None:
            with captured_output():
                self._int16x8_model = tflite_quant.convert_int16x8(self.saved_model, self.calib_m)
        return self._int16x8_model

    def build_int16x8(self) -> None:
        if "tflite_int16x8" not in self.wanted:
            return
        self._stage("TFLite int16 activations / int8 weights (16x8)")
        self._build_optional("tflite_int16x8", lambda: _write(self.work / FILE_NAMES["tflite_int16x8"], self.int16x8()))

    def analyse_int8_layers(self) -> None:
        self._stage(f"per-layer INT8 error analysis on {min(len(self.check_m), LAYER_ANALYSIS_SAMPLES)} held-out samples")
        self.layer_errors, ranking, self.layer_note = _layer_analysis(self.calibrated, self.check_m[:LAYER_ANALYSIS_SAMPLES])
        if ranking is not None:
            self._ranking = ranking

    def ranking(self) -> list[str]:
        """Worst layers first, for the float-fallback rung; analysed here only when the report skipped it."""
        if self._ranking is None:
            _, ranked, note = _layer_analysis(self.calibrated, self.check_m[:LAYER_ANALYSIS_SAMPLES])
            if ranked is None:
                raise ConversionError(note)
            self._ranking = ranked
        return self._ranking

    def quantize(self, calibrated_model: bytes, per_channel: bool = True, float_nodes: Iterable[str] = ()) -> bytes:
        with captured_output():
            return tflite_quant.quantize_calibrated(calibrated_model, per_channel=per_channel, float_nodes=float_nodes)

    def recalibrate(self) -> bytes:
        more_m, _ = to_model_input(self.more_calib_x, self.model_shape, self.model_dtype)
        with captured_output():
            return tflite_quant.calibrate(self.saved_model, more_m)

    def gate_int8(self) -> None:
        """Score full INT8 against the gate, escalate when it fails, and keep the files the gate publishes."""
        from .layer_error import float_fallback_nodes

        self.judge = Judge(self.check_x, self.check_y, self.torch_logits, self.max_int8_drop, self.work, self.threads, self.tflite_logits)
        more_calib_x = self.more_calib_x
        ladder = Ladder(
            calibrated=self.calibrated,
            calib_count=len(self.calib_x),
            quantize=self.quantize,
            recalibrate=self.recalibrate if more_calib_x is not None else None,
            pool_count=0 if more_calib_x is None else len(more_calib_x),
            int16x8=self.int16x8,
            ranking=self.ranking,
            fallback_nodes=float_fallback_nodes,
        )
        self.outcome = climb(self.judge, ladder, escalate=self.escalate)
        for attempt in self.outcome.attempts:
            self._stage(_describe_attempt(attempt, self.judge))
        for variant, path in self.outcome.published.items():
            target = self.work / FILE_NAMES[variant]
            if path != target:
                os.replace(path, target)
            self.built[variant] = target

    def check_plain_int8(self) -> None:
        if "tflite_int8" in self.built:
            int8_logits = self.tflite_logits(self.built["tflite_int8"], self.check_x, self.threads)
            # Informational now: the gate above decides what may ship; this says what plain INT8 did to top-1.
            self.checks.append(hop_checks.compare_top1("tflite_fp32->tflite_int8", self.fp32_logits, int8_logits, self.int8_min_agreement))
            self._stage(self.checks[-1].describe())
        else:
            # Built but unusable (e.g. LiteRT refuses to prepare it): there is no tflite_int8 file to publish, and
            # the ledger shows the row as missing; the gate's attempts say why.
            self.notes.append(f"tflite_int8: the full-INT8 model could not be used — {self.outcome.attempts[0].error}")

    # ---- the peer toolchain: ONNX Runtime static INT8 -----------------------------------------------------

    def build_onnx_int8_qdq(self) -> None:
        if "onnx_int8_qdq" not in self.wanted:
            return
        from .onnx_quant import quantize_onnx_qdq

        self._stage("ONNX Runtime static INT8 (QDQ, per-channel)")
        started = time.perf_counter()
        self._build_optional("onnx_int8_qdq", lambda: quantize_onnx_qdq(
            self.onnx_path, self.calib_x, self.work / FILE_NAMES["onnx_int8_qdq"], self.work / "ort"))
        self.peer_seconds["onnx_int8_qdq"] = round(time.perf_counter() - started, 2)
        if "onnx_int8_qdq" in self.built:
            from .onnx_quant import kernel_note, x86_without_vnni

            qdq, check_x, threads = self.built["onnx_int8_qdq"], self.check_x, self.threads
            # ORT's default kernels too where the ledger leaves them, so the report shows what they would have scored.
            default = run_onnx(qdq, check_x, threads, exact_int8=False) if x86_without_vnni() else None
            note = kernel_note(self.onnx_logits, run_onnx(qdq, check_x, threads), run_onnx(qdq, check_x, threads, graph_optimizations=False), default)
            if note:
                self.notes.append(note)

    # ---- publish ------------------------------------------------------------------------------------------

    def publish(self, run: RunDir, out_dir: Path) -> list[ModelFile]:
        """Move every built file into the run directory and describe it; remove an earlier conversion's leftovers."""
        files = []
        for variant, name in FILE_NAMES.items():  # FILE_NAMES order is the ledger's order
            if variant not in self.built:
                continue
            final = out_dir / name
            os.replace(self.built[variant], final)
            files.append(model_file_info(run, variant, final, self.input_shape))
        # Files of an earlier conversion that this one did not produce (e.g. tflite_mixed) must not linger
        # next to the new ones looking current.
        for variant, name in FILE_NAMES.items():
            if variant not in self.built and (out_dir / name).exists():
                (out_dir / name).unlink()
        return files

    def result(self, files: list[ModelFile], started: float) -> ConvertResult:
        gate = self.judge.gate(self.outcome.deploy_variant)
        self._stage(
            f"done in {time.perf_counter() - started:.1f} s: "
            + ", ".join(f"{f.path} ({f.bytes / 1024:.1f} KiB)" for f in files)
            + (f"; ships {gate.deploy_variant}" if gate.deploy_variant else "; NO quantized model met the quality gate"),
        )
        return ConvertResult(
            files=tuple(files),
            checks=tuple(self.checks),
            gate=gate,
            attempts=tuple(self.outcome.attempts),
            layer_errors=tuple(self.layer_errors),
            layer_error_note=self.layer_note,
            calibration=self.calibration,
            notes=tuple(self.notes),
            unconverted=tuple(self.unconverted),
            peer_seconds=dict(self.peer_seconds),
            gate_runtime=self.gate_runtime,
        )

def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def _store(built: dict[str, Path], variant: str, path: Path | None) -> None:
    if path is not None:
        built[variant] = path


def _with_layout(info, layout: str):
    from dataclasses import replace

    return replace(info, layout=layout)


def _layer_analysis(calibrated: bytes, samples: np.ndarray) -> tuple[list[LayerError], list[str] | None, str]:
    """(top layers, full ranking or None, note).  Never raises: the analysis informs, it does not gate."""
    from .layer_error import analyse

    try:
        with captured_output():  # the MLIR quantizer prints its settings from C++
            debug = tflite_quant.debug_model(calibrated)
        layers, ranking = analyse(debug, calibrated, samples)
    except Exception as exc:  # TF and LiteRT raise ValueError/RuntimeError from deep inside
        first = (str(getattr(exc, "message", exc)).strip().splitlines() or [type(exc).__name__])[0][:200]
        return [], None, f"per-layer analysis could not run: {type(exc).__name__}: {first}"
    note = (
        f"TensorFlow's quantization-debugger model (NumericVerify ops) run in LiteRT on {len(samples)} held-out samples, "
        f"full-INT8 model with the build's calibration; each layer's float twin gets the same dequantized input, so a row "
        f"is the error that layer adds"
    )
    return layers, ranking, note


def _margin_words(attempt, n: int) -> str:
    """The drop's sampling margin on these samples (escalate.sampling_margin), when there is one."""
    return f", beyond it only if more than its 95 % sampling margin {attempt.margin_points:.2f} on {n} samples" if attempt.margin_points else ""


def _describe_attempt(attempt, judge: Judge) -> str:
    verdict = "passed" if attempt.passed else "failed"
    if attempt.error:
        return f"gate attempt {attempt.step} ({attempt.strategy}): {attempt.settings} — could not run: {attempt.error}"
    measure = (
        f"accuracy {attempt.accuracy:.2%} vs fp32 {judge.reference_accuracy:.2%}" if attempt.accuracy is not None
        else f"agreement {attempt.agreement:.2%}"
    )
    note = reference_kernels_note(attempt.drop_points, attempt.reference_kernels_drop, judge.max_drop)
    return (
        f"gate attempt {attempt.step} ({attempt.strategy}): {attempt.settings} — {measure} on {len(judge.x)} held-out samples, "
        f"drop {attempt.drop_points:.2f} points (max {judge.max_drop:.2f}{_margin_words(attempt, len(judge.x))}): {verdict}"
        + (f". {note}" if note else "")
    )
