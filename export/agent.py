#!/usr/bin/env python3
"""edge_distill device agent: load one model, time it, optionally score it, print ONE JSON object.

Runs on the target (Raspberry Pi, Android/Termux, or the host) with only numpy and a TFLite runtime
(``ai_edge_litert`` preferred, else ``tflite_runtime``); ``onnxruntime`` is imported only for ``.onnx``.
It must never import torch, tensorflow, onnx or edge_distill: a device has none of them.

    python3 agent.py MODEL [--threads N] [--warmup W] [--runs R] [--npz DATA.npz] [--batch-limit K]
                           [--predictions] [--logits OUT.npy] [--kernels xnnpack|builtin|reference]

Kernels (.tflite only): ``xnnpack`` is what every LiteRT app gets by default (the XNNPACK delegate takes the
ops it supports); ``builtin`` is the runtime's own optimized kernels with no default delegate (``--no-xnnpack``
is its old name); ``reference`` is its plain reference kernels (slow, written for correctness).

stdout carries exactly one JSON object; everything else (runtime logs included) goes to stderr.
On failure the object is ``{"error": "...", "hint": "..."}`` and the exit code is 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import socket
import sys
import time
import zipfile

AGENT_VERSION = 1
SEED = 0
# --kernels → the OpResolverType member it needs (xnnpack: none, the interpreter's default resolver).
KERNELS = {"xnnpack": None, "builtin": "BUILTIN_WITHOUT_DEFAULT_DELEGATES", "reference": "BUILTIN_REF"}

_JSON_OUT = None  # the real stdout, set by main(); see _guard_stdout
_RUNTIME = ["the TFLite runtime", ""]  # name and version once imported, for errors raised outside the model classes


def _guard_stdout():
    """Native runtimes may print to fd 1: keep a private handle on the real stdout for the one JSON
    object and point fd 1 (and sys.stdout) at stderr, so nothing else can corrupt it."""
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return out


class AgentError(Exception):
    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


# ---- machine facts --------------------------------------------------------------------------------
def _cpuinfo() -> dict:
    fields: dict = {}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, sep, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if sep and value and key not in fields:
                    fields[key] = value
    except OSError:
        pass
    return fields


def _board() -> str | None:
    # Raspberry Pi and most ARM boards name themselves in the device tree.
    try:
        with open("/proc/device-tree/model", "rb") as fh:
            return fh.read().rstrip(b"\x00").decode(errors="replace").strip() or None
    except OSError:
        return _cpuinfo().get("Model")


def machine_facts() -> dict:
    info = _cpuinfo()
    cpu = info.get("model name") or info.get("Model") or info.get("Hardware") or info.get("Processor")
    return {
        "machine": platform.machine(),
        "system": platform.system(),
        "release": platform.release(),
        "cpu_model": cpu or platform.processor() or "unknown",
        "board": _board(),
        "android": bool(os.environ.get("ANDROID_ROOT") or os.environ.get("TERMUX_VERSION")),
        "cpu_count": os.cpu_count() or 1,
        "python_version": platform.python_version(),
        "hostname": socket.gethostname(),
    }


# ---- memory ---------------------------------------------------------------------------------------
def _status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _maxrss_mb() -> float | None:
    try:
        import resource
    except ImportError:  # not on this platform
        return None
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / (1024.0 * 1024.0) if sys.platform == "darwin" else maxrss / 1024.0  # bytes vs kB


def rss_mb() -> float | None:
    return _status_mb("VmRSS")


def peak_rss() -> tuple[float | None, str]:
    hwm = _status_mb("VmHWM")
    if hwm is not None:
        return hwm, "VmHWM (/proc/self/status)"
    return _maxrss_mb(), "ru_maxrss (resource.getrusage)"


# ---- npz ------------------------------------------------------------------------------------------
def peek_npz_x(path: str, np):
    """Shape, dtype and first sample of ``x`` without reading the whole array (keeps RSS honest)."""
    try:
        with zipfile.ZipFile(path) as zf:
            if "x.npy" not in zf.namelist():
                raise AgentError(f"{path} has no array 'x' (found: {', '.join(zf.namelist()) or 'nothing'}).",
                                 "Save it with numpy.savez(path, x=inputs, y=labels).")
            with zf.open("x.npy") as fh:
                version = np.lib.format.read_magic(fh)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
                elif version == (2, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
                else:  # rare header version: read the whole array once instead
                    with np.load(path, allow_pickle=False) as data:
                        x = data["x"]
                    return x.shape, x.dtype, (x[0].copy() if len(x) else None)
                if fortran or len(shape) < 1 or shape[0] < 1 or dtype.hasobject:
                    return shape, dtype, None
                count = int(np.prod(shape[1:], dtype=np.int64))
                first = np.frombuffer(fh.read(count * dtype.itemsize), dtype=dtype, count=count)
                return shape, dtype, first.reshape(shape[1:])
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise AgentError(f"Cannot read {path} as a .npz file: {exc}.",
                         "Save it with numpy.savez(path, x=inputs, y=labels).") from None


# ---- runtimes -------------------------------------------------------------------------------------
def _import_tflite():
    try:
        import ai_edge_litert
        from ai_edge_litert import interpreter as mod

        _RUNTIME[:] = ["ai_edge_litert", getattr(ai_edge_litert, "__version__", "unknown")]
        return mod, *_RUNTIME
    except ImportError:
        pass
    try:
        import tflite_runtime
        from tflite_runtime import interpreter as mod
    except ImportError:
        raise AgentError("No TFLite runtime found (neither ai_edge_litert nor tflite_runtime is installed).",
                         "On the device: pip install ai-edge-litert numpy "
                         "(32-bit ARM: pip install tflite-runtime \"numpy<2\")") from None
    version = getattr(tflite_runtime, "__version__", "unknown")
    _RUNTIME[:] = ["tflite_runtime", version]
    if tflite_runtime_needs_numpy1(version):
        raise AgentError(*numpy2_message("tflite_runtime", version))
    return mod, "tflite_runtime", version


# tflite-runtime's releases (the last is 2.14.0, 2023) are compiled against NumPy 1.x.  With NumPy 2 the
# import succeeds and only the Interpreter fails, with "SystemError: <built-in method CreateWrapperFromFile
# of PyCapsule object ...> returned a result with an exception set" (numpy prints its own ABI warning on
# stderr first).  A later release may be built for NumPy 2, so only these are refused before loading; the
# SystemError is still recognised wherever it happens (see numpy_abi_failure).
TFLITE_RUNTIME_LAST_NUMPY1 = (2, 14)


def _major_minor(version: str) -> tuple[int, int] | None:
    import re

    match = re.match(r"(\d+)\.(\d+)", str(version))
    return (int(match.group(1)), int(match.group(2))) if match else None


def tflite_runtime_needs_numpy1(version: str) -> bool:
    """True when this tflite-runtime release is known not to work with the NumPy installed here."""
    import numpy as np

    release, numpy_release = _major_minor(version), _major_minor(np.__version__) or (0, 0)
    return release is not None and release <= TFLITE_RUNTIME_LAST_NUMPY1 and numpy_release >= (2, 0)


def numpy2_message(runtime: str, version: str) -> tuple[str, str]:
    """(error, hint) for a runtime built against NumPy 1.x running with NumPy 2."""
    import numpy as np

    dist = runtime.replace("_", "-")
    return (f"{dist} {version} was built against NumPy 1.x and cannot run with the NumPy {np.__version__} "
            "installed here: its Interpreter fails with an opaque SystemError "
            "(\"... returned a result with an exception set\").",
            'Install NumPy 1.x in the same environment: pip install "numpy<2" '
            f'(for example pip install {dist}=={version} "numpy<2").')


def numpy_abi_failure(exc: BaseException) -> bool:
    """Is ``exc`` a native module's failure to import NumPy's C API (built for NumPy 1.x, running on 2.x)?"""
    seen = 0
    while exc is not None and seen < 10:
        text = str(exc)
        if isinstance(exc, (ImportError, AttributeError)) and ("_ARRAY_API" in text or "numpy.core.multiarray" in text):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def native_failure(exc: SystemError, runtime: str, version: str) -> AgentError:
    """A SystemError from a runtime's native code, as one clear error (the NumPy mismatch by name)."""
    if numpy_abi_failure(exc):
        return AgentError(*numpy2_message(runtime, version))
    return AgentError(f"{runtime} {version} failed inside its native code: {exc}",
                      "Reinstall the runtime (pip install --force-reinstall) and check it matches this Python and numpy.")


def _dtype_name(dtype) -> str:
    import numpy as np

    return np.dtype(dtype).name


class TFLiteModel:
    format = "tflite"
    timed_call = "Interpreter.invoke()"

    def __init__(self, path: str, threads: int, kernels: str = "xnnpack") -> None:
        with open(path, "rb") as fh:
            head = fh.read(8)
        if len(head) < 8 or head[4:8] != b"TFL3":
            raise AgentError(f"{path} is not a valid TFLite flatbuffer (file identifier {head[4:8]!r}, expected b'TFL3').",
                             "Pass a .tflite file produced by a TFLite converter, or a .onnx file.")
        mod, self.runtime, self.runtime_version = _import_tflite()
        self.path, self.threads, self.kernels = path, threads, kernels
        self._mod = mod

    def _resolver_kwargs(self) -> dict:
        member = KERNELS[self.kernels]
        if member is None:  # the default resolver: whatever delegate the runtime applies by default
            return {}
        resolver = getattr(getattr(self._mod, "OpResolverType", None), member, None)
        if resolver is None:
            raise AgentError(f"{self.runtime} {self.runtime_version} has no OpResolverType.{member}, so it cannot run "
                             f"--kernels {self.kernels}.",
                             "Use --kernels xnnpack here, or install ai-edge-litert (pip install ai-edge-litert numpy).")
        return {"experimental_op_resolver_type": resolver}

    def load(self) -> None:
        kwargs = self._resolver_kwargs()
        try:
            # num_threads always explicit: LiteRT treats None as 1 thread.
            self.interp = self._mod.Interpreter(model_path=self.path, num_threads=self.threads, **kwargs)
            for d in self.interp.get_input_details():
                sig = d.get("shape_signature")
                if sig is not None and any(int(s) < 0 for s in sig):
                    self.interp.resize_tensor_input(d["index"], [1 if int(s) < 0 else int(s) for s in sig])
            self.interp.allocate_tensors()
        except (ValueError, RuntimeError, UnicodeDecodeError) as exc:
            raise AgentError(f"{self.path} could not be loaded as a TFLite model: {exc}".rstrip(),
                             "The file may be truncated or not a TFLite flatbuffer; re-export it.") from None
        except SystemError as exc:  # native code failed, e.g. tflite-runtime (NumPy 1.x ABI) under NumPy 2
            raise native_failure(exc, self.runtime, self.runtime_version) from None
        self.inputs = [self._describe(d) for d in self.interp.get_input_details()]
        self.outputs = [self._describe(d) for d in self.interp.get_output_details()]

    @staticmethod
    def _describe(d) -> dict:
        scale, zero_point = d.get("quantization", (0.0, 0))
        return {"index": int(d["index"]), "name": d["name"], "shape": [int(s) for s in d["shape"]],
                "dtype": _dtype_name(d["dtype"]), "scale": float(scale), "zero_point": int(zero_point)}

    def delegate(self) -> tuple[str, int | None]:
        # With the default op resolver the runtime applies its default delegate (XNNPACK, the only one
        # TFLite ships as default) at allocate time; a delegated partition shows up as a DELEGATE node.
        try:
            ops = self.interp._get_ops_details()
        except Exception:  # private API; absent in some runtimes
            return "unknown (runtime does not expose its execution plan)", None
        n = sum(1 for op in ops if op.get("op_name") == "DELEGATE")
        if self.kernels != "xnnpack":
            which = "builtin optimized kernels" if self.kernels == "builtin" else "reference kernels"
            return f"none (XNNPACK off: {self.runtime}'s {which})" + (f", yet {n} DELEGATE nodes" if n else ""), n
        return ("xnnpack (default CPU delegate)" if n else "none"), n

    def set_inputs(self, arrays) -> None:
        for spec, arr in zip(self.inputs, arrays):
            self.interp.set_tensor(spec["index"], arr)

    def run(self) -> None:
        self.interp.invoke()

    def output(self, i: int = 0):
        return self.interp.get_tensor(self.outputs[i]["index"])


_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
               "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int16)": "int16",
               "tensor(int32)": "int32", "tensor(int64)": "int64", "tensor(bool)": "bool"}


class OnnxModel:
    format = "onnx"
    timed_call = "InferenceSession.run()"

    def __init__(self, path: str, threads: int) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise AgentError("onnxruntime is not installed, so a .onnx model cannot be benchmarked here.",
                             "pip install onnxruntime, or benchmark the .tflite file instead.") from None
        self._ort = ort
        self.runtime, self.runtime_version = "onnxruntime", ort.__version__
        self.path, self.threads = path, threads

    def load(self) -> None:
        ort = self._ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        if platform.machine().lower() in ("x86_64", "amd64") and "vnni" not in _cpuinfo().get("flags", "vnni"):
            # ORT's U8S8 int8 kernels saturate 16-bit sums on x86 without VNNI (issue #40); U8U8 is its documented
            # remedy, and what the build's ledger scored (edge_distill.convert.runtimes.onnx_session).
            opts.add_session_config_entry("session.x64quantprecision", "1")
        try:
            self.sess = ort.InferenceSession(self.path, sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types (InvalidProtobuf, Fail, ...)
            raise AgentError(f"{self.path} could not be loaded as an ONNX model: {exc}".rstrip(),
                             "The file may be truncated or not an ONNX model; re-export it.") from None
        self.inputs = [self._describe(d) for d in self.sess.get_inputs()]
        self.outputs = [self._describe(d) for d in self.sess.get_outputs()]
        self._feed: dict = {}

    @staticmethod
    def _describe(d) -> dict:
        # Symbolic (dynamic) dimensions are benchmarked at 1; the agent runs batch-1 inference.
        shape = [s if isinstance(s, int) and s > 0 else 1 for s in d.shape]
        return {"name": d.name, "shape": shape, "dtype": _ORT_DTYPES.get(d.type, d.type),
                "dynamic": [i for i, s in enumerate(d.shape) if not (isinstance(s, int) and s > 0)],
                "scale": 0.0, "zero_point": 0}

    def delegate(self) -> tuple[str, int | None]:
        return "none", None

    def set_inputs(self, arrays) -> None:
        self._feed = {spec["name"]: arr for spec, arr in zip(self.inputs, arrays)}

    def run(self) -> None:
        self._result = self.sess.run(None, self._feed)

    def output(self, i: int = 0):
        return self._result[i]


def open_model(path: str, threads: int, kernels: str = "xnnpack", flag: str = "--kernels"):
    """``flag`` is how the user chose the kernels, so an error names what they wrote."""
    if not os.path.isfile(path):
        raise AgentError(f"Model file not found: {path}", "Check the path (the agent runs on the device).")
    if path.lower().endswith(".onnx"):
        if kernels != "xnnpack":
            raise AgentError(f"{flag} applies to .tflite models only.", f"Drop {flag} for an .onnx model.")
        return OnnxModel(path, threads)
    return TFLiteModel(path, threads, kernels)


# ---- inputs ---------------------------------------------------------------------------------------
def to_input(x, spec: dict, np):
    """A float sample in the model's layout → the input tensor's dtype (quantized when int8/uint8/int16)."""
    dtype = np.dtype(spec["dtype"])
    # int16 inputs belong to the 16x8 variant (int16 activations) and are quantized the same way.
    if dtype in (np.int8, np.uint8, np.int16) and spec["scale"] > 0:
        info = np.iinfo(dtype)
        q = np.round(np.asarray(x, np.float32) / spec["scale"] + spec["zero_point"])
        return np.clip(q, info.min, info.max).astype(dtype)
    return np.asarray(x).astype(dtype, copy=False)


def random_input(spec: dict, rng, np):
    shape, dtype = spec["shape"], np.dtype(spec["dtype"])
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype in (np.int8, np.uint8, np.int16) and spec["scale"] > 0:
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    # Unquantized integers are usually token ids or masks: 0/1 is valid for any vocabulary.
    return rng.integers(0, 2, size=shape).astype(dtype)


def check_sample_shape(x_shape, spec: dict, path: str) -> None:
    want = list(spec["shape"][1:])
    got = list(x_shape[1:])
    dynamic = {i - 1 for i in spec.get("dynamic", []) if i > 0}
    ok = len(got) == len(want) and all(i in dynamic or g == w for i, (g, w) in enumerate(zip(got, want)))
    if not ok:
        raise AgentError(
            f"{path}: per-sample shape of x is {tuple(got)}, but the model input {spec['name']!r} expects "
            f"{tuple(want)} (full input shape {tuple(spec['shape'])}).",
            "Save x in the model's own input layout (e.g. NHWC for TFLite), one sample per row.")


# ---- the measurement ------------------------------------------------------------------------------
def percentile(sorted_vals, q: float) -> float:
    # Linear interpolation between closest ranks (numpy's default), kept dependency-free.
    if len(sorted_vals) == 1:
        return sorted_vals[0]
    pos = (len(sorted_vals) - 1) * q / 100.0
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (pos - lo)


def latency_stats(times_ms: list) -> dict:
    s = sorted(times_ms)
    mean = sum(s) / len(s)
    std = math.sqrt(sum((t - mean) ** 2 for t in s) / len(s))
    return {"p50_ms": percentile(s, 50), "p90_ms": percentile(s, 90), "p99_ms": percentile(s, 99),
            "mean_ms": mean, "std_ms": std, "min_ms": s[0], "max_ms": s[-1]}


def parse_args(argv):
    p = argparse.ArgumentParser(description="Benchmark one .tflite/.onnx model; prints one JSON object.")
    p.add_argument("model")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--npz", default=None, help="x (float32, model input layout) and y (int labels)")
    p.add_argument("--batch-limit", type=int, default=0, help="evaluate at most K samples of --npz (0 = all)")
    p.add_argument("--predictions", action="store_true",
                   help="with --npz: also report each scored sample's top-1 class (for cross-runtime checks)")
    p.add_argument("--logits", default=None, metavar="OUT.npy",
                   help="with --npz: write every scored sample's output (dequantized, float32, shape N x outputs) here")
    p.add_argument("--kernels", choices=sorted(KERNELS), default=None,
                   help="xnnpack (default: the runtime's default delegate), builtin (its optimized kernels, no "
                        "delegate) or reference (its reference kernels); .tflite only")
    p.add_argument("--no-xnnpack", action="store_true", help="the same as --kernels builtin")
    args = p.parse_args(argv)
    if args.no_xnnpack and args.kernels not in (None, "builtin"):
        raise AgentError(f"--no-xnnpack contradicts --kernels {args.kernels}.", "Give only --kernels.")
    args.kernels_flag = "--no-xnnpack" if args.no_xnnpack else f"--kernels {args.kernels}"
    args.kernels = args.kernels or ("builtin" if args.no_xnnpack else "xnnpack")
    if args.threads < 1:
        raise AgentError(f"--threads must be >= 1, got {args.threads}.")
    if args.warmup < 0:
        raise AgentError(f"--warmup must be >= 0, got {args.warmup}.")
    if args.runs < 1:
        raise AgentError(f"--runs must be >= 1, got {args.runs}.")
    if args.batch_limit < 0:
        raise AgentError(f"--batch-limit must be >= 0, got {args.batch_limit}.")
    if args.predictions and not args.npz:
        raise AgentError("--predictions needs --npz (the samples to predict).")
    if args.logits and not args.npz:
        raise AgentError("--logits needs --npz (the samples whose outputs it writes).")
    return args


def measure(args) -> dict:
    t_start = time.perf_counter()
    import numpy as np

    model = open_model(args.model, args.threads, args.kernels, args.kernels_flag)  # imports the runtime
    rss_baseline = rss_mb()

    npz_head = peek_npz_x(args.npz, np) if args.npz else None

    t0 = time.perf_counter()
    model.load()
    load_ms = (time.perf_counter() - t0) * 1e3
    rss_after_load = rss_mb()
    delegate, delegate_nodes = model.delegate()

    spec = model.inputs[0]
    rng = np.random.default_rng(SEED)
    feeds = [random_input(s, rng, np) for s in model.inputs]
    timing_input = f"random (seed {SEED})"
    if npz_head is not None:
        if len(model.inputs) != 1:
            raise AgentError(f"--npz supports single-input models; this model has {len(model.inputs)} inputs.")
        x_shape, _, first = npz_head
        check_sample_shape(x_shape, spec, args.npz)
        if first is not None:
            feeds[0] = to_input(first[None, ...], spec, np)
            timing_input = "first --npz sample"

    model.set_inputs(feeds)
    t0 = time.perf_counter()
    model.run()
    first_ms = (time.perf_counter() - t0) * 1e3
    for _ in range(args.warmup):
        model.run()
    times = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        model.run()
        times.append((time.perf_counter() - t0) * 1e3)
    rss_end = rss_mb()
    # Peak is read before --npz is loaded, so it covers load + inference, not the evaluation data.
    peak, peak_source = peak_rss()

    accuracy, n_eval, predictions, logits = None, 0, None, None
    if args.npz:
        accuracy, n_eval, predictions, logits = evaluate(model, spec, args.npz, args.batch_limit, np, bool(args.logits))
    if args.logits:
        write_logits(args.logits, logits, np)

    out0 = model.outputs[0]
    result = {
        "agent_version": AGENT_VERSION,
        "model": os.path.abspath(args.model),
        "model_bytes": os.path.getsize(args.model),
        "format": model.format,
        "runtime": model.runtime,
        "runtime_version": model.runtime_version,
        "threads": args.threads,
        "kernels": model.kernels if model.format == "tflite" else None,
        "delegate": delegate,
        "delegate_nodes": delegate_nodes,
        "timed_call": model.timed_call,
        "timing_input": timing_input,
        **machine_facts(),
        "inputs": [{k: v for k, v in s.items() if k != "index"} for s in model.inputs],
        "outputs": [{k: v for k, v in s.items() if k != "index"} for s in model.outputs],
        "input_shape": spec["shape"],
        "input_dtype": spec["dtype"],
        "output_shape": out0["shape"],
        "output_dtype": out0["dtype"],
        "load_ms": load_ms,
        "first_inference_ms": first_ms,
        "warmup": args.warmup,
        "runs": args.runs,
        **latency_stats(times),
        "rss_baseline_mb": rss_baseline,
        "rss_after_load_mb": rss_after_load,
        "rss_end_mb": rss_end,
        "peak_rss_mb": peak,
        "peak_rss_source": peak_source,
        "rss_growth_mb": (rss_end - rss_after_load) if rss_end is not None and rss_after_load is not None else None,
        "accuracy": accuracy,
        "n_eval": n_eval,
        **({"predictions": predictions} if args.predictions else {}),
        **({"logits_path": os.path.abspath(args.logits), "logits_shape": list(logits.shape)} if args.logits else {}),
        "agent_wall_s": time.perf_counter() - t_start,
    }
    return result


def evaluate(model, spec: dict, path: str, limit: int, np, keep_logits: bool = False) -> tuple[float, int, list, object]:
    """(accuracy, n, top-1 per sample, float32 outputs N x K when ``keep_logits`` else None)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if "y" not in data.files:
                raise AgentError(f"{path} has no array 'y' (labels).",
                                 "Save it with numpy.savez(path, x=inputs, y=labels).")
            x, y = data["x"], data["y"]
    except (OSError, ValueError) as exc:
        raise AgentError(f"Cannot read {path}: {exc}.") from None
    y = np.asarray(y).reshape(-1)
    if len(y) != len(x):
        raise AgentError(f"{path}: x has {len(x)} samples but y has {len(y)} labels.")
    if not np.issubdtype(y.dtype, np.integer):
        raise AgentError(f"{path}: y must hold integer class labels, got dtype {y.dtype}.")
    n = len(x) if limit == 0 else min(limit, len(x))
    if n == 0:
        raise AgentError(f"{path} holds no samples.")
    out = model.outputs[0]
    predictions, kept = [], []
    for i in range(n):
        model.set_inputs([to_input(x[i : i + 1], spec, np)])
        model.run()
        logits = model.output(0).reshape(-1)
        if out["scale"] > 0:  # int8 outputs: dequantize (argmax is unchanged, but keep it exact)
            logits = (logits.astype(np.float32) - out["zero_point"]) * out["scale"]
        predictions.append(int(np.argmax(logits)))
        if keep_logits:
            kept.append(np.asarray(logits, np.float32))
    correct = sum(int(p == int(t)) for p, t in zip(predictions, y[:n]))
    return correct / n, n, predictions, (np.stack(kept) if keep_logits else None)


def write_logits(path: str, logits, np) -> None:
    # A temp file renamed into place: a host that reads the path never sees half an array.
    tmp = path + ".partial"
    try:
        with open(tmp, "wb") as fh:
            np.save(fh, logits, allow_pickle=False)
        os.replace(tmp, path)
    except OSError as exc:
        raise AgentError(f"Cannot write the logits to {path}: {exc.strerror or exc}.",
                         "Pass a --logits path in a writable folder on the machine the agent runs on.") from None


def _emit(obj: dict) -> None:
    _JSON_OUT.write(json.dumps(obj, allow_nan=False) + "\n")
    _JSON_OUT.flush()


def main(argv=None) -> int:
    global _JSON_OUT
    if _JSON_OUT is None:
        _JSON_OUT = _guard_stdout()
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        _emit(measure(args))
        return 0
    except AgentError as exc:
        _emit({"error": exc.message, "hint": exc.hint, "agent_version": AGENT_VERSION})
        return 2
    except SystemExit as exc:  # argparse: usage already on stderr
        if exc.code in (0, None):
            return 0
        _emit({"error": "invalid command line (see usage on stderr)", "hint": "", "agent_version": AGENT_VERSION})
        return 2
    except SystemError as exc:  # a runtime's native code, outside load (invoke, set_tensor, ...)
        err = native_failure(exc, *_RUNTIME)
        _emit({"error": err.message, "hint": err.hint, "agent_version": AGENT_VERSION})
        return 2
    except Exception as exc:  # anything unexpected still yields one JSON object
        _emit({"error": f"{type(exc).__name__}: {exc}", "hint": "", "agent_version": AGENT_VERSION})
        return 2


if __name__ == "__main__":
    sys.exit(main())
