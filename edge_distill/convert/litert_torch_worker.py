"""Runs inside the litert-torch peer venv (``peer_litert_torch.py`` starts it): never imported by edge_distill itself.

    python litert_torch_worker.py PROGRAM.pt2 CALIB.npz OUT_DIR RESULT.json

PROGRAM.pt2 is a ``torch.export`` program of the student that already takes NHWC float32 input (the host wraps it;
a text student takes int32 token ids), so both files this writes take the same input as our onnx2tf files.  It writes ``fp32.tflite`` (litert-torch's
float conversion) and ``int8.tflite`` (PT2E static INT8: per-channel symmetric int8 weights, per-tensor int8
activations, observers fed CALIB.npz's ``x``, the build's own calibration samples), then RESULT.json:

    {"versions": {...}, "fp32": {"file": "fp32.tflite", "seconds": 1.2, "error": ""}, "int8": {...}}

A conversion that raises is recorded with its error text and the other one still runs: a converter that cannot
lower one operator is a finding for the report, not a crash.  Only torch, numpy and litert-torch are imported here.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path


def _error_text(exc: BaseException) -> str:
    """The converter's own message plus where in its code it raised: enough to see which operator it refused."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name})" if frames else ""
    message = str(exc).strip() or "(no message)"
    if len(message) > 1500:  # MLIR dumps can be megabytes; the head names the op
        message = message[:1500] + " [...]"
    return f"{type(exc).__name__}: {message}{where}"


def _timed(fn):
    t0 = time.monotonic()
    try:
        fn()
        return {"seconds": round(time.monotonic() - t0, 2), "error": ""}
    except Exception as exc:  # noqa: BLE001  every converter failure becomes data for the report
        return {"seconds": round(time.monotonic() - t0, 2), "error": _error_text(exc)}


def convert_fp32(module, sample, out: Path) -> None:
    import litert_torch

    litert_torch.convert(module, (sample,)).export(str(out))


def convert_int8(module, sample, calib, out: Path) -> None:
    import litert_torch
    import torch
    from litert_torch.quantize import pt2e_quantizer
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import quantize_pt2e

    # Per-channel symmetric weights, per-tensor activations: litert-torch's documented PT2E static recipe.
    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True))
    graph = torch.export.export(module, (sample,)).module()
    prepared = quantize_pt2e.prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for i in range(len(calib)):  # batch 1: the program was exported with a fixed batch of one
            prepared(torch.from_numpy(calib[i : i + 1]))
    quantized = quantize_pt2e.convert_pt2e(prepared, fold_quantize=False)
    # quant_config tells the converter the Q/DQ pairs are static INT8 (without it they stay float ops).
    litert_torch.convert(quantized, (sample,), quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(str(out))


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("litert-torch", "torch", "torchao", "ai-edge-litert", "ai-edge-quantizer", "litert-converter"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    program, calib_npz, out_dir, result_path = (Path(a) for a in argv)
    import numpy as np
    import torch

    result: dict = {"versions": _versions()}
    try:
        module = torch.export.load(str(program)).module()
        calib = np.load(calib_npz)["x"]  # NHWC float32 pixels, or int32 token ids: the program's own input dtype
    except Exception as exc:  # noqa: BLE001
        result["error"] = f"could not read the exported student or calibration samples: {_error_text(exc)}"
    else:
        sample = torch.from_numpy(calib[:1].copy())
        out_dir.mkdir(parents=True, exist_ok=True)
        result["fp32"] = {"file": "fp32.tflite", **_timed(lambda: convert_fp32(module, sample, out_dir / "fp32.tflite"))}
        result["int8"] = {"file": "int8.tflite", **_timed(lambda: convert_int8(module, sample, calib, out_dir / "int8.tflite"))}
    tmp = result_path.with_suffix(".partial")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(result_path)  # the host reads only a finished result
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
