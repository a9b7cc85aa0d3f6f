"""The bundle stage: deployable Raspberry Pi and Android folders (and zips) around the verified INT8 model.

    runs/<name>/bundle/
      raspberry-pi/   model.tflite, labels.txt, preprocess.json, infer.py, imageprep.py (images), requirements.txt, README.md,
                      manifest.json
      android/        model.tflite (with TFLite metadata + labels inside), labels.txt, README.md, manifest.json
      raspberry-pi.zip, android.zip, SHA256SUMS

Each folder's ``manifest.json`` records the sha256 and size of every other file in it, what the model
is (a *full-INT8* file: the variant name says what is integer, nothing more), and the accuracy the
verify stage measured for exactly these model bytes.  The zips are byte-reproducible (fixed
timestamps, sorted entries), so a rerun with the same inputs produces the same checksums.
``infer.py`` and the README templates come from ``export/`` (the device side), never import torch or
TensorFlow, and read normalization from ``preprocess.json``, so the bundle needs nothing from the host.
An image bundle also ships ``imageprep.py`` (numpy + Pillow): the very module the build read its image
files with, so ``infer.py photo.jpg`` resizes, crops and converts a photo exactly as the build did.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import io
import json
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .versions import __version__
from .errors import ConfigError
from .rundir import RunDir

TARGETS = ("raspberry-pi", "android")
ZIP_DATE = (2020, 1, 1, 0, 0, 0)  # fixed timestamp: identical inputs give identical zip bytes


@dataclass(frozen=True)
class BundleFile:
    path: str  # relative to the bundle folder
    bytes: int
    sha256: str


@dataclass(frozen=True)
class Bundle:
    target: str  # "raspberry-pi" or "android"
    directory: str  # relative to the run directory
    archive: str  # the zip, relative to the run directory
    archive_bytes: int
    archive_sha256: str
    files: tuple[BundleFile, ...]


@dataclass(frozen=True)
class BundleResult:
    model_variant: str  # the ledger variant bundled, e.g. "tflite_int8"
    model_description: str  # what is integer inside, in words
    source_model: str  # the run-directory file the bundles were made from
    source_sha256: str
    accuracy: float  # the ledger's accuracy for these model bytes, on the test split
    n_test: int
    bundles: tuple[Bundle, ...]
    checksums: str  # SHA256SUMS of the zips, relative to the run directory

    def bundle(self, target: str) -> Bundle:
        return next(b for b in self.bundles if b.target == target)


@dataclass(frozen=True)
class ModelFacts:
    """What a bundle needs to know about the model and its data, independent of the pipeline's classes."""

    name: str  # e.g. "digits-rpi4"
    input_format: BundleInput  # what the model reads and how a device prepares it (the task's: tasks/*.py)
    class_names: tuple[str, ...]
    input_shape_nhwc: tuple[int, ...]  # (1, H, W, C)
    pixel_scale: float
    mean: float
    std: float
    variant: str
    variant_description: str
    accuracy: float
    n_test: int
    profile: str
    extra_files: tuple[str, ...] = ()  # e.g. tokenizer files for text models (absolute paths)
    resize: str = ""  # images: how image files are brought to the input size (DataSpec.resize; "": imageprep's default)
    # The device runtime that judged the model (bench.device_runtimes): its name and version, and the pip lines that
    # install it; empty: the converter's LiteRT in this process.
    verified_runtime: str = ""
    runtime_requirements: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.input_format.check(self)
        if any("\n" in n or "\r" in n for n in self.class_names):
            raise ConfigError("A class name contains a line break; labels.txt holds one name per line.",
                              "Rename the class.")


class BundleInput:
    """What a bundle says about the model's input; each task gives one (``tasks/vision.py``, ``tasks/text.py``)."""

    title = ""  # "Image" / "Text", in the Android metadata's description
    readmes: dict[str, str] = {}  # bundle target → its README template in export/

    def check(self, facts: ModelFacts) -> None:
        """Refuse facts this input cannot describe."""

    def android_tensor(self, facts: ModelFacts, q: dict[str, Any]):
        """The input tensor's TFLite metadata (``tflite_metadata.TensorInfo``); ``q`` is its quantization."""
        raise NotImplementedError

    def preprocess(self, facts: ModelFacts, q_in: dict[str, Any], q_out: dict[str, Any]) -> tuple[dict[str, Any], dict[str, bytes]]:
        """preprocess.json's contents, and files the Raspberry Pi bundle needs to prepare inputs."""
        raise NotImplementedError

    def template_values(self, facts: ModelFacts) -> dict[str, Any]:
        """Placeholders of this input's README and requirements.txt templates."""
        return {}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def template(name: str) -> str:
    return (importlib.resources.files("edge_distill.export") / name).read_text()


def _tensor_details(model: bytes) -> tuple[dict, dict]:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=model, num_threads=1)
    interp.allocate_tensors()
    return interp.get_input_details()[0], interp.get_output_details()[0]


def _quant(d: dict) -> dict[str, Any]:
    scale, zero_point = d["quantization"]
    import numpy as np

    return {"name": d["name"], "shape": [int(s) for s in d["shape"]], "dtype": np.dtype(d["dtype"]).name,
            "scale": float(scale), "zero_point": int(zero_point)}


def _android_model(model: bytes, facts: ModelFacts, inp: dict, out: dict, labels: bytes) -> bytes:
    from .tflite_metadata import AssociatedFile, ModelInfo, TensorInfo, build_metadata, populate

    labels_file = AssociatedFile("labels.txt", "Class names, one per line; line i names output index i.", "TENSOR_AXIS_LABELS")
    q = _quant(inp)
    tensor_in = facts.input_format.android_tensor(facts, q)
    tensor_out = TensorInfo(
        "logits",
        f"{len(facts.class_names)} class scores (logits, {_quant(out)['dtype']}; dequantize with the "
        "tensor's scale/zero point, softmax for probabilities). Index i is line i of labels.txt.",
        files=(labels_file,))
    info = ModelInfo(
        name=f"edge-distill {facts.name}",
        description=(f"{facts.input_format.title} classifier ({len(facts.class_names)} classes) distilled by edge-distill for {facts.profile}; "
                     f"{facts.variant_description}. Test accuracy {100 * facts.accuracy:.2f}% on {facts.n_test} held-out samples "
                     f"(measured on the build host with LiteRT)."),
        version=f"edge-distill {__version__}",
        author="edge-distill",
        inputs=(tensor_in,),
        outputs=(tensor_out,),
    )
    return populate(model, build_metadata(info), {"labels.txt": labels})


def _write_bundle(run: RunDir, target: str, files: dict[str, bytes], facts: ModelFacts, model_sha: str) -> Bundle:
    directory = f"bundle/{target}"
    shutil.rmtree(run.path(directory), ignore_errors=True)  # nothing stale from an earlier build survives
    entries = [BundleFile(name, len(data), _sha256(data)) for name, data in sorted(files.items())]
    manifest = {
        "bundle": target,
        "made_by": f"edge-distill {__version__}",
        "model": {"file": "model.tflite", "variant": facts.variant, "description": facts.variant_description,
                  "verified_model_sha256": model_sha,
                  "accuracy": facts.accuracy, "n_test": facts.n_test,
                  "accuracy_measured": "on the build host with LiteRT, on the held-out test split"},
        "files": [{"path": e.path, "bytes": e.bytes, "sha256": e.sha256} for e in entries],
    }
    files = dict(files, **{"manifest.json": (json.dumps(manifest, indent=2) + "\n").encode()})
    for name, data in files.items():
        with run.atomic_path(f"{directory}/{name}") as tmp:
            tmp.write_bytes(data)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(files):
            info = zipfile.ZipInfo(f"{target}/{name}", date_time=ZIP_DATE)
            info.external_attr = (0o755 if name.endswith(".py") else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, files[name])
    archive = f"bundle/{target}.zip"
    with run.atomic_path(archive) as tmp:
        tmp.write_bytes(buf.getvalue())
    return Bundle(target, directory, archive, len(buf.getvalue()), _sha256(buf.getvalue()),
                  tuple(entries) + (BundleFile("manifest.json", len(files["manifest.json"]), _sha256(files["manifest.json"])),))


def _fill(template: str, values: dict[str, Any]) -> str:
    # str.format would trip over the braces in code samples; placeholders are {{NAME}}.
    for key, value in values.items():
        template = template.replace("{{" + key + "}}", str(value))
    return template


def build_bundles(run: RunDir, model_path: Path, facts: ModelFacts) -> tuple[BundleResult, list[Path]]:
    """Write both bundles, their zips and SHA256SUMS into ``run``; returns the result and every file written."""
    model = Path(model_path).read_bytes()
    model_sha = _sha256(model)
    inp, out = _tensor_details(model)
    labels = ("\n".join(facts.class_names) + "\n").encode()
    extras = _extra_files(facts)
    q_in, q_out = _quant(inp), _quant(out)
    preprocess, pi_image_files = facts.input_format.preprocess(facts, q_in, q_out)
    values = _template_values(facts, model, q_in, q_out)
    pi_files = {
        "model.tflite": model,
        "labels.txt": labels,
        "preprocess.json": (json.dumps(preprocess, indent=2) + "\n").encode(),
        "infer.py": template("infer.py").encode(),
        "requirements.txt": _fill(template("requirements.txt"), values).encode(),
        "README.md": _fill(template(facts.input_format.readmes["raspberry-pi"]), values).encode(),
        **pi_image_files,
        **extras,
    }
    android_files = {
        "model.tflite": _android_model(model, facts, inp, out, labels),
        "labels.txt": labels,
        "README.md": _fill(template(facts.input_format.readmes["android"]), values).encode(),
        **extras,
    }
    bundles = (_write_bundle(run, "raspberry-pi", pi_files, facts, model_sha),
               _write_bundle(run, "android", android_files, facts, model_sha))
    sums = "".join(f"{b.archive_sha256}  {Path(b.archive).name}\n" for b in bundles)
    run.write_text("bundle/SHA256SUMS", sums)
    result = BundleResult(facts.variant, facts.variant_description, run.relative(Path(model_path)), model_sha,
                          facts.accuracy, facts.n_test, bundles, "bundle/SHA256SUMS")
    written = [run.path(b.archive) for b in bundles] + [run.path("bundle/SHA256SUMS")]
    written += [run.path(f"{b.directory}/{f.path}") for b in bundles for f in b.files]
    return result, written


def _extra_files(facts: ModelFacts) -> dict[str, bytes]:
    extras = {}
    for extra in facts.extra_files:
        path = Path(extra)
        if not path.is_file():
            raise ConfigError(f"Bundle file {path} does not exist.", "It is listed by the data spec (e.g. a tokenizer file).")
        extras[path.name] = path.read_bytes()
    return extras


def _template_values(facts: ModelFacts, model: bytes, q_in: dict[str, Any], q_out: dict[str, Any]) -> dict[str, Any]:
    """What the bundle's templates (README, requirements.txt) fill in."""
    return {
        "NAME": facts.name, "PROFILE": facts.profile, "VERSION": __version__, "VARIANT": facts.variant,
        "VARIANT_DESCRIPTION": facts.variant_description, "ACCURACY": f"{100 * facts.accuracy:.2f}",
        "N_TEST": facts.n_test, "N_CLASSES": len(facts.class_names), "MODEL_BYTES": f"{len(model):,}",
        "INPUT_SHAPE": tuple(q_in["shape"]), "INPUT_DTYPE": q_in["dtype"], "INPUT_SCALE": f"{q_in['scale']:.9g}",
        "INPUT_ZERO_POINT": q_in["zero_point"], "OUTPUT_SCALE": f"{q_out['scale']:.9g}",
        "OUTPUT_ZERO_POINT": q_out["zero_point"], "OUTPUT_DTYPE": q_out["dtype"],
        "PIXEL_SCALE": f"{facts.pixel_scale:g}", "MEAN": repr(facts.mean), "STD": repr(facts.std),
        "RAW_MEAN": f"{facts.mean * facts.pixel_scale:.9g}", "RAW_STD": f"{facts.std * facts.pixel_scale:.9g}",
        "VERIFIED_RUNTIME": facts.verified_runtime or f"ai_edge_litert {_litert_version()}",
        "RUNTIME_REQUIREMENTS": "\n".join(facts.runtime_requirements or (f"ai-edge-litert=={_litert_version()}", "numpy>=1.23.2")),
        **facts.input_format.template_values(facts),
    }


def _litert_version() -> str:
    return _version("ai-edge-litert")


def pin(package: str) -> str:
    return f"{package}=={_version(package)}" if _version(package) else package


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:  # pragma: no cover - the toolchain pins it
        return ""
