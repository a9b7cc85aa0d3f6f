"""Describe a written model file from what is inside it, so a variant's name can never overstate it.

"INT8" on a label means little by itself: a model can have int8 weights but float activations, or int8
internals behind float32 input/output.  ``model_file_info`` reads the file and reports what it found.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import ConversionError
from ..rundir import RunDir
from .results import ModelFile
from .runtimes import tflite_interpreter


def _names(dtypes: Iterable[str]) -> str:
    return "/".join(sorted(set(dtypes))) or "none"


INTEGER_IO = {"int8", "uint8", "int16"}
QUANTIZED = {"int8", "uint8", "int16"}
FLOATS = {"float32", "float16"}


def _biases(weights: set[str]) -> str:
    wide = sorted(weights & {"int32", "int64"})
    return f" ({'/'.join(wide)} biases)" if wide else ""


def describe_precision(
    weights: set[str],
    activations: set[str],
    input_dtype: str,
    output_dtype: str,
    float_ops: int | None = None,
    total_ops: int | None = None,
) -> str:
    """One honest sentence about the numeric types a model computes in.

    ``float_ops``/``total_ops`` (ops whose output is float, not counting DEQUANTIZE) let a partly quantized
    model say how much of it is still float.
    """
    io = f"{input_dtype} input and output" if input_dtype == output_dtype else f"{input_dtype} input, {output_dtype} output"
    everything = weights | activations | {input_dtype, output_dtype}
    # int32/int64 tensors in a float graph are shape/index constants, not quantized data.
    if everything <= {"float32", "int32", "int64"} and "float32" in everything:
        return "float32 throughout"
    quant_acts = activations & QUANTIZED
    if "float16" in weights and not quant_acts and not weights & QUANTIZED:
        return f"float16 weights (expanded to float32 at load), float32 activations; {io}"
    if weights & QUANTIZED and not quant_acts and activations & FLOATS:
        return (
            f"{_names(weights & QUANTIZED)} weights, float32 activations (dynamic range: kernels may quantize "
            f"activations on the fly){_biases(weights)}; {io}"
        )
    if not FLOATS & everything:
        w = _names(weights & QUANTIZED) if weights & QUANTIZED else _names(weights)
        a = _names(quant_acts) if quant_acts else _names(activations)
        full = " (full integer)" if {input_dtype, output_dtype} <= INTEGER_IO else ""
        return f"{w} weights and {a} activations{_biases(weights)}; {io}{full}"
    share = f"{float_ops} of {total_ops} ops compute in float; " if float_ops is not None and total_ops else ""
    return f"mixed precision: {share}weights {_names(weights)}, activations {_names(activations)}; {io}"


def describe_qdq(weights: set[str], activations: set[str], input_dtype: str, output_dtype: str) -> str:
    """An ONNX QDQ graph stores float tensors between QuantizeLinear/DequantizeLinear pairs; ONNX Runtime
    fuses each pattern into an integer kernel where it has one, so the integer types are those of the pairs."""
    io = f"{input_dtype} input and output" if input_dtype == output_dtype else f"{input_dtype} input, {output_dtype} output"
    return (
        f"QDQ: {_names(weights & QUANTIZED) or _names(weights)} weights{_biases(weights)} and "
        f"{_names(activations) or 'no'} activations between QuantizeLinear/DequantizeLinear pairs "
        f"(ONNX Runtime runs them with integer kernels where it has one); {io}"
    )


def _layout(model_shape: tuple[int, ...], chw: tuple[int, ...] | None) -> str:
    if len(model_shape) == 4 and chw is not None and len(chw) == 3:
        c, h, w = chw
        if tuple(model_shape[1:]) == (h, w, c):
            return "NHWC"
        if tuple(model_shape[1:]) == (c, h, w):
            return "NCHW"
    return f"rank-{len(model_shape)}"


def _tflite_info(path: Path) -> tuple[tuple[int, ...], str, str, set[str], set[str], int | None, int | None]:
    interpreter = tflite_interpreter(path, threads=1)
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    dtype_of = {t["index"]: np.dtype(t["dtype"]).name for t in interpreter.get_tensor_details()}
    graph_inputs = {d["index"] for d in interpreter.get_input_details()}
    # Op outputs are activations; op inputs that no op produces (and that are not graph inputs) are
    # weights/biases.  _get_ops_details is LiteRT's op table; without it, count every tensor as both.
    ops = getattr(interpreter, "_get_ops_details", lambda: [])()
    if ops:
        produced = {i for op in ops for i in op["outputs"] if i >= 0}
        consumed = {i for op in ops for i in op["inputs"] if i >= 0}
        activations = {dtype_of[i] for i in produced if i in dtype_of}
        weights = {dtype_of[i] for i in consumed - produced - graph_inputs if i in dtype_of}
        # DEQUANTIZE only converts (fp16 weights, or int8 back to float); it is not a layer computing in float.
        compute = [op for op in ops if op["op_name"] != "DEQUANTIZE"]
        float_ops = sum(1 for op in compute if any(dtype_of.get(i) in FLOATS for i in op["outputs"] if i >= 0))
        total_ops = len(compute)
    else:
        activations = weights = set(dtype_of.values())
        float_ops = total_ops = None
    shape = tuple(int(d) for d in inp["shape"])
    return shape, np.dtype(inp["dtype"]).name, np.dtype(out["dtype"]).name, weights, activations, float_ops, total_ops


def _onnx_info(path: Path) -> tuple[tuple[int, ...], str, str, set[str], set[str], bool]:
    import onnx
    from onnx import helper, shape_inference

    try:
        model = shape_inference.infer_shapes(onnx.load(str(path)))
    except Exception as exc:  # protobuf DecodeError and friends
        raise ConversionError(
            f"Cannot read ONNX model {path}: {type(exc).__name__}: {exc}",
            "The file is corrupt or not an ONNX model; delete it and rerun the convert stage (--force).",
        ) from None
    graph = model.graph

    def np_name(elem_type: int) -> str:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).name

    initializer_names = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializer_names]
    in_type = inputs[0].type.tensor_type
    shape = tuple(int(d.dim_value) for d in in_type.shape.dim)
    weights = {np_name(t.data_type) for t in graph.initializer}
    weights |= {
        np_name(a.t.data_type)
        for node in graph.node
        if node.op_type == "Constant"
        for a in node.attribute
        if a.name == "value"
    }
    activations = {np_name(v.type.tensor_type.elem_type) for v in list(graph.value_info) + list(graph.output)}
    out_dtype = np_name(graph.output[0].type.tensor_type.elem_type)
    qdq = any(node.op_type == "QuantizeLinear" for node in graph.node)
    if qdq:
        # Weights are what DequantizeLinear reads from initializers; activation types are the zero points of
        # the QuantizeLinear nodes (their output type).
        dtype_of = {t.name: np_name(t.data_type) for t in graph.initializer}
        weights = {dtype_of[n.input[0]] for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in dtype_of}
        activations = {dtype_of[n.input[2]] for n in graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in dtype_of}
    return shape, np_name(in_type.elem_type), out_dtype, weights, activations, qdq


def model_file_info(run: RunDir, variant: str, path: Path, input_chw: tuple[int, ...] | None = None) -> ModelFile:
    """A ``ModelFile`` for ``path`` (inside ``run``), read from the file; ``input_chw`` is the torch input
    shape without batch, used to tell NCHW from NHWC."""
    path = Path(path)
    if path.suffix == ".onnx":
        shape, in_dtype, out_dtype, weights, activations, qdq = _onnx_info(path)
        description = (describe_qdq if qdq else describe_precision)(weights, activations, in_dtype, out_dtype)
    else:
        shape, in_dtype, out_dtype, weights, activations, float_ops, total_ops = _tflite_info(path)
        description = describe_precision(weights, activations, in_dtype, out_dtype, float_ops, total_ops)
    return ModelFile(
        variant=variant,
        path=run.relative(path),
        bytes=path.stat().st_size,
        input_layout=_layout(shape, input_chw),
        input_shape=shape,
        input_dtype=in_dtype,
        output_dtype=out_dtype,
        integer_description=description,
    )
