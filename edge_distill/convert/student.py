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

from ..console import get_console
from ..errors import ConversionError, DataError
from ..rundir import RunDir
from . import checks as hop_checks
from . import tflite_quant
from .calibration import InputContract, check_calibration, to_model_input
from .escalate import Judge, Ladder, climb
from .model_info import model_file_info
from .onnx_export import OPSET, export_onnx
from .quiet import captured_output
from .results import ConvertResult, HopCheck, LayerError, reference_kernels_note
from .runtimes import run_onnx, run_tflite, tflite_interpreter
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


def _optional(notes: list[str], variant: str, build: Callable[[], Path]) -> Path | None:
    """Build an optional ledger variant; a failure becomes a note in the result instead of failing the build."""
    try:
        with captured_output() as log:
            return build()
    except ConversionError as exc:
        reason = exc.message.splitlines()[0] if exc.message else "unknown error"
        tail = log.tail(3)
        notes.append(f"{variant}: not built — {reason}" + (f" ({tail.splitlines()[-1][:200]})" if tail else ""))
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
) -> ConvertResult:
    """Convert an eval-mode float32 classifier (NCHW in, logits out), verify every hop, gate the INT8 model.

    ``calib_x`` (optionally with ``calib_y``) calibrates the quantized models and is checked against
    ``contract`` first (``CalibrationError`` on a mismatch).  ``check_x`` are held-out samples for the hop
    checks and the quality gate; with ``check_y`` the gate compares accuracy, without it top-1 agreement.
    When full INT8 loses more than ``max_int8_drop`` points, the gate escalates (``escalate.py``);
    ``more_calib_x`` feeds its "more calibration" rung.  ``variants`` limits the optional ledger variants
    (default: all of ``OPTIONAL_VARIANTS``).  Writes the files under ``<subdir>/`` (names in ``FILE_NAMES``).
    Raises ``ConversionError`` listing every failed float hop, with the numbers; a quantized model that
    fails the gate does not raise -- ``result.deploy_variant`` is then None.
    """
    console = get_console()
    input_shape = tuple(int(d) for d in input_shape)
    if not 0.0 < int8_min_agreement <= 1.0:
        raise ConversionError(f"int8_min_agreement must be in (0, 1], got {int8_min_agreement}")
    wanted = set(OPTIONAL_VARIANTS if variants is None else variants)
    unknown = wanted - set(OPTIONAL_VARIANTS)
    if unknown:
        raise ConversionError(f"Unknown optional variant(s) {sorted(unknown)}.", f"Choose from {', '.join(OPTIONAL_VARIANTS)}.")
    calibration = check_calibration(calib_x, input_shape, contract, calib_y)
    calib_x = _float32_unless_integer(calib_x)
    if more_calib_x is not None:
        check_calibration(more_calib_x, input_shape, contract)
        more_calib_x = _float32_unless_integer(more_calib_x)
    check_x = _validate_samples("check_x", check_x, input_shape)
    model.eval()

    out_dir = run.path(subdir)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".convert-", dir=out_dir))
    started = time.perf_counter()
    checks: list[HopCheck] = []
    notes: list[str] = []
    layer_errors: list[LayerError] = []
    layer_note = ""
    built: dict[str, Path] = {}
    try:
        with _scratch_tempdir(work):
            # ---- torch -> ONNX -------------------------------------------------------------------
            console.stage("convert", f"torch -> ONNX (opset {OPSET}, static batch 1)")
            # Token ids keep their integer type into the graph (a Gather index); images are float32.
            onnx_path = export_onnx(model, input_shape, work / FILE_NAMES["onnx_fp32"], input_dtype=check_x.dtype.name if check_x.dtype.kind in "iu" else "float32")
            built["onnx_fp32"] = onnx_path
            torch_logits = _torch_logits(model, check_x)
            onnx_logits = run_onnx(onnx_path, check_x, threads)
            checks.append(hop_checks.compare_float("torch->onnx", torch_logits, onnx_logits, hop_checks.TORCH_ONNX_ATOL))
            console.stage("convert", checks[-1].describe())

            # ---- ONNX -> TFLite fp32 (onnx2tf) ---------------------------------------------------
            console.stage("convert", "ONNX -> TFLite fp32 (onnx2tf, NCHW -> NHWC)")
            # onnx2tf runs the graph on sample images for its shape checks; these are the ones it gets (see tflite_convert).
            samples_nhwc = np.transpose(check_x[:20], (0, 2, 3, 1)) if check_x.ndim == 4 else check_x[:20]
            try:
                with captured_output() as log:
                    saved_model, fp32_tmp = onnx_to_tflite_fp32(onnx_path, work / "onnx2tf", samples_nhwc)
            except ConversionError as exc:
                hop_checks.raise_if_failed(checks, [_hop_failed("onnx->tflite_fp32", exc, log.tail())])
                raise
            fp32_path = work / FILE_NAMES["tflite_fp32"]
            os.replace(fp32_tmp, fp32_path)
            built["tflite_fp32"] = fp32_path
            fp32_logits = run_tflite(fp32_path, check_x, threads)
            checks.append(hop_checks.compare_float("onnx->tflite_fp32", onnx_logits, fp32_logits, hop_checks.ONNX_TFLITE_ATOL))
            console.stage("convert", checks[-1].describe())
            # A broken float hop makes every quantized model meaningless: stop before calibrating anything.
            hop_checks.raise_if_failed(checks)

            # ---- calibration contract against the converted model's real input -----------------------
            model_input = tflite_interpreter(fp32_path, threads=1).get_input_details()[0]
            model_shape = tuple(int(d) for d in model_input["shape"])
            model_dtype = np.dtype(model_input["dtype"]).name
            calib_m, layout = to_model_input(calib_x, model_shape, model_dtype)
            calibration = _with_layout(calibration, layout)
            check_m, _ = to_model_input(check_x, model_shape, model_dtype)

            # ---- float16 and dynamic range (no calibration) -------------------------------------------
            if "tflite_fp16" in wanted:
                fp16_src = saved_model / "model_float16.tflite"

                def fp16() -> Path:
                    if not fp16_src.is_file():
                        raise ConversionError("onnx2tf did not write model_float16.tflite.")
                    target = work / FILE_NAMES["tflite_fp16"]
                    shutil.copyfile(fp16_src, target)
                    return target

                _store(built, "tflite_fp16", _optional(notes, "tflite_fp16", fp16))
            if "tflite_dynamic" in wanted:
                console.stage("convert", "TFLite dynamic range (int8 weights, float activations)")
                _store(built, "tflite_dynamic", _optional(notes, "tflite_dynamic", lambda: _write(
                    work / FILE_NAMES["tflite_dynamic"], tflite_quant.convert_dynamic_range(saved_model))))

            # ---- full INT8: calibrate once, then quantize as many ways as the gate needs ----------------------
            console.stage("convert", f"calibrating INT8 on {len(calib_x)} samples ({layout}, {calibration.expected})")
            try:
                with captured_output() as log:
                    calibrated = tflite_quant.calibrate(saved_model, calib_m)
            except ConversionError as exc:
                hop_checks.raise_if_failed(checks, [_hop_failed("tflite_fp32->tflite_int8", exc, log.tail())])
                raise

            int16_cache: dict[str, bytes] = {}

            def int16x8() -> bytes:
                if "model" not in int16_cache:
                    with captured_output():
                        int16_cache["model"] = tflite_quant.convert_int16x8(saved_model, calib_m)
                return int16_cache["model"]

            if "tflite_int16x8" in wanted:
                console.stage("convert", "TFLite int16 activations / int8 weights (16x8)")
                _store(built, "tflite_int16x8", _optional(notes, "tflite_int16x8", lambda: _write(work / FILE_NAMES["tflite_int16x8"], int16x8())))

            ranking_cache: dict[str, list[str]] = {}
            if layer_analysis:
                console.stage("convert", f"per-layer INT8 error analysis on {min(len(check_m), LAYER_ANALYSIS_SAMPLES)} held-out samples")
                layer_errors, ranking, layer_note = _layer_analysis(calibrated, check_m[:LAYER_ANALYSIS_SAMPLES])
                if ranking is not None:
                    ranking_cache["ranking"] = ranking

            def ranking() -> list[str]:
                if "ranking" not in ranking_cache:
                    _, ranked, note = _layer_analysis(calibrated, check_m[:LAYER_ANALYSIS_SAMPLES])
                    if ranked is None:
                        raise ConversionError(note)
                    ranking_cache["ranking"] = ranked
                return ranking_cache["ranking"]

            def quantize(calibrated_model: bytes, per_channel: bool = True, float_nodes: Iterable[str] = ()) -> bytes:
                with captured_output():
                    return tflite_quant.quantize_calibrated(calibrated_model, per_channel=per_channel, float_nodes=float_nodes)

            def recalibrate() -> bytes:
                more_m, _ = to_model_input(more_calib_x, model_shape, model_dtype)
                with captured_output():
                    return tflite_quant.calibrate(saved_model, more_m)

            from .layer_error import float_fallback_nodes

            judge = Judge(check_x, check_y, torch_logits, max_int8_drop, work, threads)
            ladder = Ladder(
                calibrated=calibrated,
                calib_count=len(calib_x),
                quantize=quantize,
                recalibrate=recalibrate if more_calib_x is not None else None,
                pool_count=0 if more_calib_x is None else len(more_calib_x),
                int16x8=int16x8,
                ranking=ranking,
                fallback_nodes=float_fallback_nodes,
            )
            outcome = climb(judge, ladder, escalate=escalate)
            for attempt in outcome.attempts:
                console.stage("convert", _describe_attempt(attempt, judge))
            for variant, path in outcome.published.items():
                target = work / FILE_NAMES[variant]
                if path != target:
                    os.replace(path, target)
                built[variant] = target
            if "tflite_int8" in built:
                int8_logits = run_tflite(built["tflite_int8"], check_x, threads)
                # Informational now: the gate above decides what may ship; this says what plain INT8 did to top-1.
                checks.append(hop_checks.compare_top1("tflite_fp32->tflite_int8", fp32_logits, int8_logits, int8_min_agreement))
                console.stage("convert", checks[-1].describe())
            else:
                # Built but unusable (e.g. LiteRT refuses to prepare it): there is no tflite_int8 file to publish, and
                # the ledger shows the row as missing; the gate's attempts say why.
                notes.append(f"tflite_int8: the full-INT8 model could not be used — {outcome.attempts[0].error}")

            # ---- the peer toolchain: ONNX Runtime static INT8 ------------------------------------------------
            if "onnx_int8_qdq" in wanted:
                from .onnx_quant import quantize_onnx_qdq

                console.stage("convert", "ONNX Runtime static INT8 (QDQ, per-channel)")
                _store(built, "onnx_int8_qdq", _optional(notes, "onnx_int8_qdq", lambda: quantize_onnx_qdq(
                    onnx_path, calib_x, work / FILE_NAMES["onnx_int8_qdq"], work / "ort")))
                if "onnx_int8_qdq" in built:
                    from .onnx_quant import kernel_note

                    qdq = built["onnx_int8_qdq"]
                    note = kernel_note(onnx_logits, run_onnx(qdq, check_x, threads), run_onnx(qdq, check_x, threads, graph_optimizations=False))
                    if note:
                        notes.append(note)

            # ---- publish ---------------------------------------------------------------------------
            files = []
            for variant, name in FILE_NAMES.items():  # FILE_NAMES order is the ledger's order
                if variant not in built:
                    continue
                final = out_dir / name
                os.replace(built[variant], final)
                files.append(model_file_info(run, variant, final, input_shape))
            # Files of an earlier conversion that this one did not produce (e.g. tflite_mixed) must not linger
            # next to the new ones looking current.
            for variant, name in FILE_NAMES.items():
                if variant not in built and (out_dir / name).exists():
                    (out_dir / name).unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    gate = judge.gate(outcome.deploy_variant)
    console.stage(
        "convert",
        f"done in {time.perf_counter() - started:.1f} s: "
        + ", ".join(f"{f.path} ({f.bytes / 1024:.1f} KiB)" for f in files)
        + (f"; ships {gate.deploy_variant}" if gate.deploy_variant else "; NO quantized model met the quality gate"),
    )
    return ConvertResult(
        files=tuple(files),
        checks=tuple(checks),
        gate=gate,
        attempts=tuple(outcome.attempts),
        layer_errors=tuple(layer_errors),
        layer_error_note=layer_note,
        calibration=calibration,
        notes=tuple(notes),
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
        f"drop {attempt.drop_points:.2f} points (max {judge.max_drop:.2f}): {verdict}" + (f". {note}" if note else "")
    )
