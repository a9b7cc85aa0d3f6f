"""Per-layer INT8 error: which layers of the full-INT8 model lose the most, each measured on its own.

TensorFlow's quantization debugger works on a model in which every quantized op has a float twin fed the
same (dequantized) input, joined by a ``NumericVerify`` op; the difference between the two outputs is the
error that layer adds by itself, not the error it inherits.  We build that instrumented model the way
``tf.lite.experimental.QuantizationDebugger`` does (``tflite_quant.debug_model``) but run it ourselves in
LiteRT without delegates: the debugger's own runner is TensorFlow's deprecated interpreter with XNNPACK
applied, which refuses exactly the badly quantized models this analysis exists for.  We rank layers by ``channel_nsr`` -- the median over
output channels of RMS error / RMS signal -- because the classic failure (a few huge outliers stretching an
activation's range so that every other channel rounds to zero) leaves the error in quantization steps
(``rmse_over_scale``, TensorFlow's own suggestion) looking perfectly normal.

The ranking also picks the layers the quality gate keeps in float as its last resort (``float_fallback_nodes``).
"""

from __future__ import annotations

import numpy as np

from .quiet import captured_output
from .results import LayerError

TOP_LAYERS = 10  # rows kept for the report
# A channel whose RMS is below this fraction of the *median* channel's carries no signal for that sample (a
# ReLU channel that is off): its ratio would be noise over nothing.  Relative to the median, not the largest
# channel -- next to a 30,000x outlier channel every normal channel would otherwise count as "no signal".
SIGNAL_FLOOR = 1e-3


def _channel_rms(values: np.ndarray) -> np.ndarray:
    """RMS per channel (last axis, TFLite is channels-last) for spatial tensors; one value for vectors."""
    v = values.astype(np.float64)
    if v.ndim >= 3:
        return np.sqrt(np.mean(v.reshape(-1, v.shape[-1]) ** 2, axis=0))
    return np.sqrt(np.mean(v**2, keepdims=True)).reshape(1)


def _dequantized(quant: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return (quant.astype(np.float64) - zero_point) * scale


def channel_nsr(float_value: np.ndarray, quant_value: np.ndarray, scale: float, zero_point: int) -> float:
    """Median over channels with signal of RMS(error) / RMS(float output); NaN when no channel has signal."""
    signal = _channel_rms(float_value)
    noise = _channel_rms(float_value - _dequantized(quant_value, scale, zero_point))
    active = signal[signal > 0]
    if not active.size:
        return float("nan")
    keep = signal > SIGNAL_FLOOR * float(np.median(active))
    return float(np.median(noise[keep] / signal[keep])) if keep.any() else float("nan")


def tensor_nsr(float_value: np.ndarray, quant_value: np.ndarray, scale: float, zero_point: int) -> float:
    signal = float(np.sqrt(np.mean(float_value.astype(np.float64) ** 2)))
    if signal == 0:
        return float("nan")
    noise = float(np.sqrt(np.mean((float_value - _dequantized(quant_value, scale, zero_point)) ** 2)))
    return noise / signal


def _finite(value: float, digits: int = 6) -> float | None:
    """None instead of NaN (a layer whose output had no signal on any sample): JSON has no NaN."""
    return None if not np.isfinite(value) else round(float(value), digits)


def _short(name: str) -> str:
    """TF fuses names as 'model/tf.nn.relu/Relu;model/tf.math.add/Add;...;Const_51'; the first part is the op."""
    first = name.split(";")[0]
    return first if len(first) <= 60 else "…" + first[-59:]


def analyse(debug_model: bytes, calibrated: bytes, samples: np.ndarray, top: int = TOP_LAYERS) -> tuple[list[LayerError], list[str]]:
    """Rank the layers of the instrumented INT8 model on ``samples`` (in the model's input layout).

    Returns the ``top`` worst layers and the full ranking as output-tensor names of ``calibrated`` (the
    model the debug model was made from; worst first, for ``float_fallback_nodes``).  Raises when the model
    cannot be run; the caller records that as a note.
    """
    interpreter = _interpreter(debug_model, preserve=True)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    details = {int(t["index"]): t for t in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()  # noqa: SLF001 -- LiteRT's op table, as in model_info
    producer = {int(i): op["op_name"] for op in ops for i in op["outputs"] if i >= 0}
    pairs = [(int(op["inputs"][0]), int(op["inputs"][1])) for op in ops if op["op_name"] == "NumericVerify" and len(op["inputs"]) >= 2]
    if not pairs:
        raise ValueError("the debug model has no NumericVerify ops to read")
    stats: dict[int, dict[str, list[float]]] = {q: {"channel_nsr": [], "nsr": [], "mse": [], "max_abs": []} for q, _ in pairs}
    x = np.ascontiguousarray(samples).astype(inp["dtype"], copy=False)
    for i in range(len(x)):
        interpreter.set_tensor(inp["index"], x[i : i + 1])
        interpreter.invoke()
        for q, f in pairs:
            params = details[q]["quantization_parameters"]
            scale, zero_point = float(params["scales"][0]), int(params["zero_points"][0])
            quant, twin = interpreter.get_tensor(q), interpreter.get_tensor(f).astype(np.float64)
            diff = twin - _dequantized(quant, scale, zero_point)
            row = stats[q]
            row["channel_nsr"].append(channel_nsr(twin, quant, scale, zero_point))
            row["nsr"].append(tensor_nsr(twin, quant, scale, zero_point))
            row["mse"].append(float(np.mean(diff**2)))
            row["max_abs"].append(float(np.max(np.abs(diff))))

    def mean(values: list[float]) -> float:
        finite = [v for v in values if np.isfinite(v)]
        return float(np.mean(finite)) if finite else float("nan")

    names = _layer_names(debug_model, calibrated)
    summary = []
    for q, _ in pairs:
        scale = float(details[q]["quantization_parameters"]["scales"][0])
        mse = mean(stats[q]["mse"])
        summary.append({
            "q": q,
            "channel_nsr": mean(stats[q]["channel_nsr"]),
            "nsr": mean(stats[q]["nsr"]),
            "rmse_over_scale": float(np.sqrt(mse) / scale) if scale > 0 else float("nan"),
            "max_abs": max(stats[q]["max_abs"]),
            "scale": scale,
        })
    summary.sort(key=lambda r: -1.0 if np.isnan(r["channel_nsr"]) else r["channel_nsr"], reverse=True)
    ranking = [names.get(r["q"], details[r["q"]]["name"]) for r in summary]
    layers = [
        LayerError(
            rank=rank,
            op=producer.get(r["q"], "?"),
            tensor=_short(name),
            channel_nsr=_finite(r["channel_nsr"]),
            nsr=_finite(r["nsr"]),
            rmse_over_scale=_finite(r["rmse_over_scale"]),
            max_abs_error=_finite(r["max_abs"]),
            scale=_finite(r["scale"], 9),
        )
        for rank, (r, name) in enumerate(zip(summary, ranking), start=1)
        if rank <= top
    ]
    return layers, ranking


def _interpreter(model: bytes, preserve: bool = False):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    with captured_output():
        # LiteRT's reference kernels, no delegate: XNNPACK refuses some badly quantized graphs (an extreme
        # requantization scale), and those are exactly the ones this analysis must still be able to read.
        return Interpreter(
            model_content=model,
            num_threads=1,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
            experimental_preserve_all_tensors=preserve,  # keeps every intermediate readable after invoke
        )


def _layer_names(debug_model: bytes, calibrated: bytes) -> dict[int, str]:
    """Quantized tensor index in the debug model -> the same layer's output name in the calibrated model.

    The debug model renames things: each NumericVerify op reads the quantized output (the original name with
    a digit appended) and its float twin (usually the original name, but not for the graph output, whose
    original name moves to the final DEQUANTIZE).  TensorFlow's debugger strips the appended digit; we try
    that and the twin's name, and keep whichever exists in the calibrated model, so denylisting finds it.
    """
    debug = _interpreter(debug_model)
    debug_name = {int(t["index"]): t["name"] for t in debug.get_tensor_details()}
    known = {t["name"] for t in _interpreter(calibrated).get_tensor_details()}
    mapping = {}
    for op in debug._get_ops_details():  # noqa: SLF001 -- LiteRT's op table, as in model_info
        if op["op_name"] != "NumericVerify" or len(op["inputs"]) < 2:
            continue
        q_idx, f_idx = int(op["inputs"][0]), int(op["inputs"][1])
        quant, twin = debug_name.get(q_idx, ""), debug_name.get(f_idx, "")
        stripped = quant[:-1] if quant[-1:].isdigit() else quant
        mapping[q_idx] = next((c for c in (stripped, twin) if c in known), stripped)
    return mapping


def float_fallback_nodes(calibrated: bytes, worst: list[str], k: int) -> list[str]:
    """Output-tensor names of the ``k`` worst layers *and of the ops that consume them*.

    Keeping only the worst op in float does not help when its output is the problem: the tensor is then
    quantized on its way into the next op with the same stretched range.  Its consumers must stay float too,
    so that the damaged range never meets an int8 grid (measured: worst op alone 10.7% -> with consumers 94.5%
    on the fragile test model).
    """
    interpreter = _interpreter(calibrated)
    name_of = {int(t["index"]): t["name"] for t in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()  # noqa: SLF001 -- LiteRT's op table; model_info reads it the same way
    chosen: list[str] = []
    for name in worst[:k]:
        if name not in chosen:
            chosen.append(name)
        for op in ops:
            if any(name_of.get(i) == name for i in op["inputs"] if i >= 0):
                for out in op["outputs"]:
                    consumer = name_of.get(out)
                    if consumer and consumer not in chosen:
                        chosen.append(consumer)
    return chosen
