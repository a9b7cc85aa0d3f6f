"""Host-side inference for the files the convert stage writes: ONNX Runtime and LiteRT, batch-1 loops.

Both runners take NCHW float32 (what the torch student sees) and hide the per-format details — layout,
quantization of int8 inputs, dequantization of int8 outputs — so every hop can be compared on the same
numbers.  A missing or corrupt file raises ``ConversionError`` instead of a runtime's C++ message.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConversionError
from .quiet import captured_output

_TFLITE_IDENTIFIER = b"TFL3"  # flatbuffer file identifier at bytes 4..8 of every .tflite file


def _check_threads(threads: int) -> int:
    if not isinstance(threads, int) or threads < 1:
        raise ConversionError(f"threads must be a positive integer, got {threads!r}")
    return threads


def _require_file(path: Path, kind: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{kind} model not found: {path}", "Check the path, or rerun the convert stage.")
    return path


def _unreadable(path: Path, kind: str, exc: BaseException) -> ConversionError:
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return ConversionError(
        f"Cannot load {kind} model {path}: {first_line}",
        "The file is corrupt or not a model of this kind; delete it and rerun the convert stage (--force).",
    )


def converter_runtime() -> str:
    """The LiteRT this process runs (the version onnx2tf pins for conversion), in words."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"ai_edge_litert {version('ai-edge-litert')} (the converter's, in-process)"
    except PackageNotFoundError:  # pragma: no cover - the toolchain pins it
        return "ai_edge_litert (the converter's, in-process)"


# ---- ONNX ------------------------------------------------------------------------------------------
def onnx_session(path: Path, threads: int = 2, graph_optimizations: bool = True, exact_int8: bool | None = None) -> Any:
    """``graph_optimizations=False`` runs a QDQ graph op by op in float (quantization simulated), instead of
    the fused integer kernels ONNX Runtime normally substitutes: it separates quantization error from kernel
    effects such as int8 overflow.

    ``exact_int8`` sets ORT's ``session.x64quantprecision`` (U8U8 instead of U8S8 integer matmuls); ``None``
    turns it on exactly where ORT documents that its U8S8 kernels overflow: x86 without VNNI.  There the
    default kernels sum pairs of u8*s8 products in a saturating 16-bit register (VPMADDUBSW) and a
    statically quantized conv student loses up to half of its answers (issue #40: 0.76 top-1 agreement vs
    0.985 for the same file in U8U8 and in LiteRT), so a ledger row scored with them measures this build
    host, not the quantized model.  ARM (the targets) and VNNI CPUs compute exactly either way."""
    import onnxruntime as ort

    path = _require_file(path, "ONNX")
    options = ort.SessionOptions()
    if not graph_optimizations:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = _check_threads(threads)
    options.inter_op_num_threads = 1  # one sample at a time: no independent branches worth a second pool
    options.log_severity_level = 3  # errors only; ORT warns about unused initializers etc.
    if exact_int8 is None:
        from .onnx_quant import x86_without_vnni

        exact_int8 = x86_without_vnni()
    if exact_int8:
        options.add_session_config_entry("session.x64quantprecision", "1")
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own pybind exception types (InvalidProtobuf, Fail, ...)
        raise _unreadable(path, "ONNX", exc) from None


def run_onnx(
    path: Path, x_nchw: np.ndarray, threads: int = 2, latencies: list[float] | None = None, graph_optimizations: bool = True,
    exact_int8: bool | None = None,
) -> np.ndarray:
    """Logits (N, classes) as float32 for NCHW float32 ``x_nchw``; loops batch-1 like the exported graph.

    With ``latencies``, the wall time of every ``run`` call (seconds) is appended to it.
    ``graph_optimizations`` and ``exact_int8`` are ``onnx_session``'s.
    """
    session = onnx_session(path, threads, graph_optimizations, exact_int8)
    model_input = session.get_inputs()[0]
    x = np.asarray(x_nchw)
    if model_input.type == "tensor(float)":
        x = x.astype(np.float32, copy=False)
    expected = tuple(model_input.shape[1:])
    if all(isinstance(d, int) for d in expected) and tuple(x.shape[1:]) != expected:
        raise ConversionError(
            f"Input of shape {tuple(x.shape)} does not match the ONNX model {path} (expects (N, {', '.join(map(str, expected))}))."
        )
    outputs = []
    for i in range(len(x)):
        feed = {model_input.name: x[i : i + 1]}
        t0 = time.perf_counter()
        outputs.append(session.run(None, feed)[0])
        if latencies is not None:
            latencies.append(time.perf_counter() - t0)
    return np.concatenate(outputs, axis=0).astype(np.float32, copy=False).reshape(len(x), -1)


# ---- TFLite ----------------------------------------------------------------------------------------
def tflite_interpreter(path: Path, threads: int = 2, xnnpack: bool = True) -> Any:
    """A LiteRT interpreter with tensors allocated; ``num_threads`` is always explicit (LiteRT treats None as 1).

    ``xnnpack=False`` runs LiteRT's built-in reference kernels instead of the XNNPACK delegate that every
    default LiteRT runtime (Python, Android, Raspberry Pi) applies: the deployment truth is XNNPACK, the
    reference kernels tell a file's quantization apart from one delegate's kernels."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    path = _require_file(path, "TFLite")
    content = path.read_bytes()
    if len(content) < 8 or content[4:8] != _TFLITE_IDENTIFIER:
        raise ConversionError(
            f"Cannot load TFLite model {path}: not a TFLite flatbuffer (missing the 'TFL3' identifier).",
            "The file is corrupt or not a .tflite model; delete it and rerun the convert stage (--force).",
        )
    threads = _check_threads(threads)
    try:
        # LiteRT prints an INFO line about the XNNPACK delegate from C++ on every load; the captured text is
        # quoted only when loading fails (it often holds the real reason, e.g. an unknown op).
        with captured_output() as log:
            # model_content, not model_path: LiteRT runs the flatbuffer verifier only on in-memory models, and
            # a truncated or bit-flipped file given by path segfaults the interpreter instead of raising.
            resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
            interpreter = Interpreter(model_content=content, num_threads=threads, experimental_op_resolver_type=resolver)
            interpreter.allocate_tensors()
    except Exception as exc:
        error = _unreadable(path, "TFLite", exc)
        if log.tail(5):
            error.message += "\n" + log.tail(5)
            error.args = (error.message,)
        raise error from None
    return interpreter


def nchw_to_model_layout(x: np.ndarray, model_shape: tuple[int, ...]) -> np.ndarray:
    """Transpose NCHW samples to NHWC when the model's 4-D input is NHWC (onnx2tf's layout for images).

    When C == H == W both layouts fit; onnx2tf always emits NHWC for 4-D inputs, so NHWC wins.
    """
    if x.ndim != 4 or len(model_shape) != 4:
        return x
    sample = tuple(x.shape[1:])
    c, h, w = sample
    if tuple(model_shape[1:]) == (h, w, c):
        return np.transpose(x, (0, 2, 3, 1))
    if tuple(model_shape[1:]) == sample:
        return x
    raise ConversionError(
        f"Input samples of shape (N, {c}, {h}, {w}) fit neither layout of the TFLite input {tuple(model_shape)}."
    )


def quantize(x: np.ndarray, dtype: np.dtype, scale: float, zero_point: int) -> np.ndarray:
    info = np.iinfo(dtype)
    q = np.round(x / scale) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return ((q.astype(np.float32) - zero_point) * scale).astype(np.float32)


def run_tflite(path: Path, x_nchw: np.ndarray, threads: int = 2, latencies: list[float] | None = None, xnnpack: bool = True) -> np.ndarray:
    """Logits (N, classes) as float32 for NCHW float32 ``x_nchw``, whatever the model's layout and dtypes.

    With ``latencies``, the wall time of every ``invoke`` (seconds) is appended to it.
    """
    interpreter = tflite_interpreter(path, threads, xnnpack)
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    x = nchw_to_model_layout(np.asarray(x_nchw), tuple(int(d) for d in inp["shape"]))
    in_dtype = np.dtype(inp["dtype"])
    in_scale, in_zero = inp["quantization"]
    out_dtype = np.dtype(out["dtype"])
    out_scale, out_zero = out["quantization"]

    # int16 inputs belong to the 16x8 variant (int16 activations); its input is quantized like an int8 one.
    if in_dtype in (np.int8, np.uint8, np.int16) and np.issubdtype(x.dtype, np.floating):
        if in_scale == 0:
            raise ConversionError(f"TFLite model {path} has a {in_dtype} input without quantization parameters.")
        x = quantize(x, in_dtype, in_scale, in_zero)
    else:
        x = x.astype(in_dtype, copy=False)

    results = np.empty((len(x), int(np.prod(out["shape"][1:]))), dtype=np.float32)
    for i in range(len(x)):
        interpreter.set_tensor(inp["index"], x[i : i + 1])
        t0 = time.perf_counter()
        interpreter.invoke()
        if latencies is not None:
            latencies.append(time.perf_counter() - t0)
        y = interpreter.get_tensor(out["index"]).reshape(-1)
        if out_dtype in (np.int8, np.uint8, np.int16) and out_scale != 0:
            y = dequantize(y, out_scale, out_zero)
        results[i] = y
    return results
