"""torch → ONNX: one static-shape graph that onnx2tf converts without guesswork."""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used, so importing this package stays cheap
    import torch

from ..errors import ConversionError

# onnx2tf 1.29 maps every opset-13..17 op a small CNN or encoder uses (17 adds LayerNormalization as one op,
# which onnx2tf converts directly instead of pattern-matching a dozen primitives).
OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def export_onnx(model: torch.nn.Module, input_shape: tuple[int, ...], path: Path, input_dtype: str = "float32") -> Path:
    """Write ``model`` as ONNX with a static batch of 1 and tensors named ``input`` / ``logits``.

    ``input_shape`` excludes the batch, e.g. ``(1, 28, 28)`` for NCHW images or ``(40,)`` for token ids;
    ``input_dtype`` is the graph input's type (``int32`` for token ids).  The file appears at ``path`` only
    once it is complete.
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    example = torch.zeros((1, *input_shape), dtype=getattr(torch, input_dtype), device=device)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    was_training = model.training
    model.eval()  # BatchNorm/Dropout must be exported in inference form
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # The TorchScript exporter warns that it is deprecated in favour of dynamo=True; we choose it on
            # purpose: for static-shape conv/MLP students it is fast (<1 s) and its graph (constant-folded,
            # no shape subgraphs) is the form onnx2tf handles best.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (example,),
                str(tmp),
                dynamo=False,
                opset_version=OPSET,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                do_constant_folding=True,
                # Static batch 1: TFLite and the on-device agent run one sample at a time, and a dynamic batch
                # dimension makes onnx2tf emit shape-handling ops that do not quantize.
                dynamic_axes=None,
            )
        # mkstemp creates the file 0600; give the published model the usual umask-based mode like any other file.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except Exception as exc:  # the exporter raises many types; the user needs to know which model broke
        raise ConversionError(
            f"Exporting the model to ONNX failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
            "The student uses an operation the ONNX exporter cannot express; rerun with --debug for the traceback.",
        ) from exc
    finally:
        if tmp.exists():
            tmp.unlink()
        model.train(was_training)
    return path
