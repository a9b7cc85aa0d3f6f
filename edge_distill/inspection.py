"""``edge-distill inspect MODEL``: what is inside a .tflite or .onnx file — ops, dtypes, quantization
parameters, size, parameters and multiply-accumulates — read from the file itself.

TFLite files are read with the flatbuffer schema that ships with LiteRT (pure Python), never by
building an interpreter: LiteRT's C++ loader can crash the whole process (SIGSEGV) on a damaged
file, while the Python reader raises, which becomes a clear error.  ONNX files are read with
``onnx`` and its shape inference.

MACs are counted for the operators that dominate compute — convolutions (regular, depthwise,
grouped, transposed), fully-connected/Gemm and matrix products — from the tensor shapes stored in
the file; element-wise ops, pooling and reductions count zero.  A dynamic dimension counts as 1.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ModelFileError

MACS_COUNTED = "conv, depthwise/grouped/transposed conv, fully-connected/Gemm, MatMul; other ops count 0"


@dataclass(frozen=True)
class TensorInfo:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    constant: bool  # holds data in the file (weights, biases, shape constants)
    scale: tuple[float, ...] = ()  # quantization scale(s); empty when the tensor is not quantized
    zero_point: tuple[int, ...] = ()
    axis: int | None = None  # the per-channel axis when there is more than one scale

    @property
    def elements(self) -> int:
        return int(math.prod(max(d, 1) for d in self.shape))

    @property
    def quantized(self) -> bool:
        return bool(self.scale)


@dataclass(frozen=True)
class OpInfo:
    index: int
    op: str
    inputs: tuple[int, ...]  # tensor indices; -1 = optional input left out
    outputs: tuple[int, ...]
    macs: int


@dataclass(frozen=True)
class ModelInspection:
    path: str
    format: str  # "tflite" | "onnx"
    bytes: int
    description: str  # "TFLite flatbuffer, schema v3, 1 subgraph", "ONNX opset 17, IR 8, producer pytorch 2.13"
    inputs: tuple[int, ...]  # tensor indices
    outputs: tuple[int, ...]
    tensors: tuple[TensorInfo, ...]
    ops: tuple[OpInfo, ...]

    @property
    def macs(self) -> int:
        return sum(op.macs for op in self.ops)

    @property
    def params(self) -> int:
        """Elements of weight tensors: float or quantized constants (integer shape/axis constants excluded)."""
        return sum(t.elements for t in self.tensors if _is_weight(t))

    def op_counts(self) -> dict[str, int]:
        return dict(Counter(op.op for op in self.ops))

    def dtypes(self) -> dict[str, dict[str, int]]:
        """Element counts per dtype, for weights (constant tensors) and activations (op outputs)."""
        produced = {i for op in self.ops for i in op.outputs}
        out: dict[str, dict[str, int]] = {"weights": {}, "activations": {}}
        for t in self.tensors:
            kind = "weights" if t.constant else "activations" if t.index in produced or t.index in self.inputs else None
            if kind:
                out[kind][t.dtype] = out[kind].get(t.dtype, 0) + t.elements
        return out


def _is_weight(t: TensorInfo) -> bool:
    return t.constant and (t.quantized or t.dtype.startswith(("float", "bfloat")))


def inspect_model(path: str | Path) -> ModelInspection:
    """Read a .tflite or .onnx file; raises ``ModelFileError`` when it is missing, unreadable or damaged."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"Model file {path} does not exist.", "Pass the path of a .tflite or .onnx file (e.g. runs/rpi4/student/student_int8.tflite).")
    if not path.is_file():
        raise ModelFileError(f"{path} is not a file.", "Pass the path of a .tflite or .onnx file.")
    suffix = path.suffix.lower()
    if suffix not in (".tflite", ".onnx"):
        raise ModelFileError(f"Cannot inspect {path}: only .tflite and .onnx files are supported.", "Convert the model first, e.g. with `edge-distill build`.")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"Cannot read {path}: {exc.strerror or exc}.", "Check the file's permissions.") from None
    return _inspect_tflite(path, data) if suffix == ".tflite" else _inspect_onnx(path, data)


# ---- TFLite --------------------------------------------------------------------------------------


def _inspect_tflite(path: Path, data: bytes) -> ModelInspection:
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelFileError(
            f"{path} is not a TFLite flatbuffer (file identifier {data[4:8]!r}, expected b'TFL3').",
            "The file is corrupt or not a TFLite model; rebuild it (edge-distill build --force) or pass the right file.",
        )
    try:
        return _read_tflite(path, data)
    except ModelFileError:
        raise
    except Exception as exc:  # struct.error / IndexError / ValueError from offsets that point outside the file
        raise ModelFileError(
            f"{path} is a damaged TFLite file ({type(exc).__name__}: {exc}); it is probably truncated or overwritten.",
            "Rebuild it (edge-distill build --force) or copy it again.",
        ) from None


def _enum_names(cls: type) -> dict[int, str]:
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


def _read_tflite(path: Path, data: bytes) -> ModelInspection:
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(data, 0)
    if model.SubgraphsLength() < 1:
        raise ModelFileError(f"{path} has no subgraph, so there is nothing to run.", "Rebuild the model.")
    op_names, type_names = _enum_names(schema.BuiltinOperator), _enum_names(schema.TensorType)
    graph = model.Subgraphs(0)  # the main graph; others are control-flow bodies
    n_buffers = model.BuffersLength()

    tensors = []
    for i in range(graph.TensorsLength()):
        t = graph.Tensors(i)
        shape = t.ShapeAsNumpy()
        shape = tuple(int(d) for d in shape) if isinstance(shape, np.ndarray) else ()
        constant = False
        if 0 < t.Buffer() < n_buffers:
            buf = model.Buffers(t.Buffer())
            if buf.DataLength() > 0:
                buf.DataAsNumpy()  # raises if the data runs past the end of the file
                constant = True
            elif buf.Offset() > 1:  # large models keep weights after the flatbuffer
                if buf.Offset() + buf.Size() > len(data):
                    raise ModelFileError(f"{path}: tensor {i}'s weights lie beyond the end of the file (truncated).", "Rebuild or copy it again.")
                constant = True
        q = t.Quantization()
        scale = tuple(float(s) for s in q.ScaleAsNumpy()) if q is not None and q.ScaleLength() else ()
        zp = tuple(int(z) for z in q.ZeroPointAsNumpy()) if q is not None and q.ZeroPointLength() else ()
        name = t.Name().decode("utf-8", "replace") if t.Name() else f"tensor_{i}"
        dtype = type_names.get(t.Type(), f"type{t.Type()}").lower()
        tensors.append(TensorInfo(i, name, shape, dtype, constant, scale, zp, q.QuantizedDimension() if len(scale) > 1 else None))

    ops = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())  # v3 files keep small codes in the deprecated field
        name = op_names.get(builtin, f"BUILTIN_{builtin}")
        if name == "CUSTOM":
            name = f"CUSTOM:{(code.CustomCode() or b'?').decode('utf-8', 'replace')}"
        ins = tuple(int(x) for x in op.InputsAsNumpy()) if op.InputsLength() else ()
        outs = tuple(int(x) for x in op.OutputsAsNumpy()) if op.OutputsLength() else ()
        for idx in ins + outs:
            if idx >= len(tensors):
                raise ModelFileError(f"{path}: operator {i} refers to tensor {idx}, but the graph has {len(tensors)}.", "The file is damaged; rebuild it.")
        adj_x = False
        if name == "BATCH_MATMUL" and op.BuiltinOptions() is not None:
            opts = schema.BatchMatMulOptions()
            table = op.BuiltinOptions()
            opts.Init(table.Bytes, table.Pos)
            adj_x = bool(opts.AdjX())
        ops.append(OpInfo(i, name, ins, outs, _tflite_macs(name, [tensors[j].shape if j >= 0 else () for j in ins],
                                                           [tensors[j].shape for j in outs], adj_x)))
    inputs = tuple(int(x) for x in graph.InputsAsNumpy()) if graph.InputsLength() else ()
    outputs = tuple(int(x) for x in graph.OutputsAsNumpy()) if graph.OutputsLength() else ()
    desc = f"TFLite flatbuffer, schema v{model.Version()}, {model.SubgraphsLength()} subgraph{'s' if model.SubgraphsLength() > 1 else ''}"
    return ModelInspection(str(path), "tflite", len(data), desc, inputs, outputs, tuple(tensors), tuple(ops))


def _prod(shape: tuple[int, ...]) -> int:
    return int(math.prod(max(d, 1) for d in shape))


def _tflite_macs(op: str, ins: list[tuple[int, ...]], outs: list[tuple[int, ...]], adj_x: bool) -> int:
    """TFLite layouts: CONV_2D filter [O, KH, KW, I/groups]; DEPTHWISE filter [1, KH, KW, O];
    FULLY_CONNECTED weights [O, I]; TRANSPOSE_CONV inputs (output_shape, filter [O, KH, KW, I], x)."""
    if not outs or not outs[0]:
        return 0
    out = _prod(outs[0])
    if op in ("CONV_2D", "CONV_3D") and len(ins) > 1 and len(ins[1]) >= 2:
        return out * _prod(ins[1][1:])  # each output element: KH*KW*(I/groups) products
    if op == "DEPTHWISE_CONV_2D" and len(ins) > 1 and len(ins[1]) == 4:
        return out * ins[1][1] * ins[1][2]
    if op == "FULLY_CONNECTED" and len(ins) > 1 and len(ins[1]) == 2:
        return out * ins[1][1]
    if op == "BATCH_MATMUL" and ins and ins[0]:
        return out * (ins[0][-2] if adj_x and len(ins[0]) >= 2 else ins[0][-1])
    if op in ("TRANSPOSE_CONV", "CONV_3D_TRANSPOSE") and len(ins) > 2 and len(ins[1]) >= 2 and ins[2]:
        return _prod(ins[2]) * _prod(ins[1][:-1])  # each input element scatters into O*KH*KW outputs
    return 0


# ---- ONNX ----------------------------------------------------------------------------------------


def _inspect_onnx(path: Path, data: bytes) -> ModelInspection:
    model = _load_onnx(path, data)
    graph = model.graph
    index, specs = _onnx_tensor_specs(graph)
    quant, qparam_names = _onnx_quant_params(graph)
    tensors = []
    for i, (name, shape, dt, constant) in enumerate(specs):
        scale, zp, axis = quant.get(name, ((), (), None))
        # A scale / zero point is quantization metadata, not a weight: mark it non-constant for the params count.
        tensors.append(TensorInfo(i, name, shape, dt, constant and name not in qparam_names, scale, zp, axis))

    shapes = {t.name: t.shape for t in tensors}
    ops = _onnx_ops(graph, index, shapes)
    initializer_names = {init.name for init in graph.initializer}
    inputs = tuple(index[vi.name] for vi in graph.input if vi.name not in initializer_names)
    outputs = tuple(index[vi.name] for vi in graph.output)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), "?")
    producer = f", producer {model.producer_name} {model.producer_version}".rstrip() if model.producer_name else ""
    desc = f"ONNX opset {opset}, IR {model.ir_version}{producer}"
    return ModelInspection(str(path), "onnx", len(data), desc, inputs, outputs, tuple(tensors), tuple(ops))


def _load_onnx(path: Path, data: bytes):
    """The checked model, with the shapes that shape inference could work out."""
    import onnx
    from onnx import shape_inference

    try:
        model = onnx.load_from_string(data)
        onnx.checker.check_model(model)
    except Exception as exc:  # protobuf DecodeError, ValidationError
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise ModelFileError(
            f"{path} is not a valid ONNX model ({type(exc).__name__}: {first}).",
            "The file is corrupt or truncated, or not ONNX at all; export it again (torch.onnx.export) or rebuild it.",
        ) from None
    try:
        model = shape_inference.infer_shapes(model)
    except Exception:  # shapes stay unknown where inference fails; MACs then count 0 for those ops
        pass
    return model


def _onnx_tensor_specs(graph) -> tuple[dict[str, int], list[list]]:
    """Every tensor the graph names, in first-seen order: ``(name → position, [name, shape, dtype, constant] each)``."""
    from onnx import helper

    def dtype(elem_type: int) -> str:
        try:
            return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).name
        except Exception:
            return f"onnx_type{elem_type}"

    index: dict[str, int] = {}
    specs: list[list] = []  # [name, shape, dtype, constant]

    def add(name: str, shape: tuple[int, ...], dt: str, constant: bool) -> None:
        if name and name not in index:
            index[name] = len(specs)
            specs.append([name, shape, dt, constant])

    for init in graph.initializer:
        add(init.name, tuple(int(d) for d in init.dims), dtype(init.data_type), True)
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        tt = vi.type.tensor_type
        shape = tuple(int(d.dim_value) if d.HasField("dim_value") else -1 for d in tt.shape.dim)
        add(vi.name, shape, dtype(tt.elem_type), False)
    for node in graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    add(node.output[0], tuple(int(d) for d in a.t.dims), dtype(a.t.data_type), True)
        for name in list(node.input) + list(node.output):
            add(name, (), "unknown", False)
    return index, specs


def _onnx_quant_params(graph) -> tuple[dict[str, tuple[tuple[float, ...], tuple[int, ...], int | None]], set[str]]:
    """``(quantized tensor → (scales, zero points, axis), names of the scale / zero point tensors)``."""
    from onnx import numpy_helper

    # Quantization parameters: the scale / zero point inputs of QuantizeLinear / DequantizeLinear.
    const_values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    quant: dict[str, tuple[tuple[float, ...], tuple[int, ...], int | None]] = {}
    qparam_names: set[str] = set()
    for node in graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) >= 2:
            scale = const_values.get(node.input[1])
            zp = const_values.get(node.input[2]) if len(node.input) > 2 else None
            qparam_names.update(node.input[1:3])
            quantized = node.output[0] if node.op_type == "QuantizeLinear" else node.input[0]
            if scale is not None:
                axis = next((a.i for a in node.attribute if a.name == "axis"), 1) if scale.size > 1 else None
                quant[quantized] = (tuple(float(s) for s in scale.ravel()),
                                    tuple(int(z) for z in zp.ravel()) if zp is not None else (0,) * scale.size, axis)
    return quant, qparam_names


def _onnx_ops(graph, index: dict[str, int], shapes: dict[str, tuple[int, ...]]) -> list[OpInfo]:
    ops = []
    for i, node in enumerate(graph.node):
        if node.op_type == "Constant":
            continue
        ins = tuple(index[n] if n else -1 for n in node.input)
        outs = tuple(index[n] for n in node.output if n)
        ops.append(OpInfo(len(ops), node.op_type, ins, outs, _onnx_macs(node, shapes)))
    return ops


def _onnx_macs(node, shapes: dict[str, tuple[int, ...]]) -> int:
    """ONNX layouts: Conv W [O, I/groups, KH, KW]; ConvTranspose W [I, O/groups, KH, KW]; Gemm A [M, K] (transA: [K, M])."""
    out = shapes.get(node.output[0], ()) if node.output else ()
    if not out or any(d == 0 for d in out):
        return 0

    def shape(i: int) -> tuple[int, ...]:
        return shapes.get(node.input[i], ()) if len(node.input) > i else ()

    if node.op_type == "Conv" and len(shape(1)) >= 3:
        return _prod(out) * _prod(shape(1)[1:])
    if node.op_type == "ConvTranspose" and len(shape(1)) >= 3 and shape(0):
        return _prod(shape(0)) * _prod(shape(1)[1:])
    if node.op_type == "Gemm" and len(shape(0)) == 2:
        trans_a = next((a.i for a in node.attribute if a.name == "transA"), 0)
        return _prod(out) * max(shape(0)[0 if trans_a else 1], 1)
    if node.op_type in ("MatMul", "MatMulInteger", "QLinearMatMul") and shape(0):
        return _prod(out) * max(shape(0)[-1], 1)
    return 0


# ---- text output ---------------------------------------------------------------------------------


def _shape(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join("?" if d < 0 else str(d) for d in shape) + "]"


def _quant(t: TensorInfo) -> str:
    if not t.scale:
        return ""
    if len(t.scale) == 1:
        return f"scale {t.scale[0]:.6g}, zero point {t.zero_point[0] if t.zero_point else 0}"
    zps = sorted(set(t.zero_point)) if t.zero_point else [0]
    zp = str(zps[0]) if len(zps) == 1 else f"{min(zps)}..{max(zps)}"
    return f"per-channel (axis {t.axis}, {len(t.scale)} ch): scale {min(t.scale):.4g}..{max(t.scale):.4g}, zero point {zp}"


def format_inspection(ins: ModelInspection) -> str:
    """The human-readable listing that ``edge-distill inspect`` prints."""
    t = ins.tensors
    dt = ins.dtypes()
    counts = ", ".join(f"{op} ×{n}" if n > 1 else op for op, n in ins.op_counts().items())

    def dtypes(kind: str) -> str:
        return ", ".join(f"{k} ({v:,} elements)" for k, v in sorted(dt[kind].items())) or "none"

    lines = [
        f"{ins.path}",
        f"  format       {ins.description}",
        f"  size         {ins.bytes:,} bytes",
        f"  parameters   {ins.params:,}",
        f"  MACs         {ins.macs:,}  (per inference; counts {MACS_COUNTED})",
        f"  weights      {dtypes('weights')}",
        f"  activations  {dtypes('activations')}",
        f"  ops          {len(ins.ops)}: {counts or 'none'}",
        "",
    ]
    for label, idxs in (("input", ins.inputs), ("output", ins.outputs)):
        for i in idxs:
            q = _quant(t[i])
            lines.append(f"  {label:<7}{t[i].name}  {_shape(t[i].shape)} {t[i].dtype}" + (f"  ({q})" if q else ""))
    lines += ["", f"  {'#':>3}  {'op':<22} {'output shape':<18} {'dtypes (inputs -> outputs)':<34} {'MACs':>12}"]
    for op in ins.ops:
        in_dt = ",".join(t[i].dtype for i in op.inputs if i >= 0)
        out_dt = ",".join(t[i].dtype for i in op.outputs)
        out_shape = _shape(t[op.outputs[0]].shape) if op.outputs else "-"
        lines.append(f"  {op.index:>3}  {op.op:<22} {out_shape:<18} {in_dt + ' -> ' + out_dt:<34} {op.macs:>12,}")
    quantized = [x for x in t if x.quantized]
    if quantized:
        lines += ["", f"  quantization parameters ({len(quantized)} tensors):"]
        for x in quantized:
            lines.append(f"    {x.name[:60]:<60} {x.dtype:<6} {_quant(x)}")
    else:
        lines += ["", "  quantization parameters: none (no tensor is quantized)"]
    return "\n".join(lines)
