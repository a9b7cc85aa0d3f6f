#!/usr/bin/env python3
"""Classify images (or texts) with the bundled model.tflite: numpy + a TFLite runtime only (no torch, no TensorFlow).

Part of the Raspberry Pi bundle that edge-distill writes; it reads ``model.tflite``, ``labels.txt`` and
``preprocess.json`` from its own directory.

    python3 infer.py photo.jpg more.png ...     # image files (JPEG, PNG, WebP, BMP, PGM/PPM), or folders of them
    python3 infer.py images.npy                 # raw pixels, (N, H, W) or (N, H, W, C)
    python3 infer.py data.npz                   # x = raw pixels, y = labels (optional): prints accuracy
    python3 infer.py data.npz --normalized      # x already normalized in the model's layout (NHWC)
    python3 infer.py data.npz --json            # one JSON object: predictions, labels, accuracy
    python3 infer.py --verify                   # check every file against manifest.json's sha256

Text bundles (preprocess.json task "text-classification") take texts instead, tokenized by tokenizer.py
with the bundled tokenizer.json exactly as in training:

    python3 infer.py texts.txt                  # one text per line
    python3 infer.py data.jsonl                 # {"text": ..., "label": ...} per line: prints accuracy
    python3 infer.py --text "a small domesticated carnivore"

Image files are read by imageprep.py (numpy + Pillow; ``pip install pillow``), the module the build read
its own image files with: EXIF orientation, alpha over white, grey or RGB, scaled to cover the model's
input size and centre-cropped (preprocess.json's ``image_files`` says which). For files it prints
``file<TAB>label<TAB>score``; when every file sits in a folder named after a class, also the accuracy.

Raw pixels are normalized exactly as during training, ``x = ((p / pixel_scale) - mean) / std``, then
quantized with the input tensor's scale and zero point when the model takes int8/uint8.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


# tflite-runtime's releases (the last is 2.14.0) are built against NumPy 1.x: under NumPy 2 the import works and
# the Interpreter fails with an opaque "SystemError: ... returned a result with an exception set".  A later
# release may be built for NumPy 2, so only these are refused up front; run() catches the SystemError itself.
TFLITE_RUNTIME_LAST_NUMPY1 = (2, 14)


def _major_minor(version):
    import re

    match = re.match(r"(\d+)\.(\d+)", str(version))
    return (int(match.group(1)), int(match.group(2))) if match else None


def _numpy2_error(runtime, version):
    import numpy

    return ('error: {0} {1} was built against NumPy 1.x and cannot run with the NumPy {2} installed here (its '
            'interpreter fails with an opaque SystemError).\nhint: pip install "numpy<2" in the same environment '
            '(for example: pip install {0}=={1} "numpy<2").'.format(runtime, version, numpy.__version__))


def _numpy_abi_failure(exc):
    """Is ``exc`` a native module's failure to load NumPy's C API (built for NumPy 1.x, running on 2.x)?"""
    for _ in range(10):
        if exc is None:
            return False
        text = str(exc)
        if isinstance(exc, (ImportError, AttributeError)) and ("_ARRAY_API" in text or "numpy.core.multiarray" in text):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _loaded_runtime():
    for name in ("tflite_runtime", "ai_edge_litert"):
        if name in sys.modules:
            return name.replace("_", "-"), getattr(sys.modules[name], "__version__", "unknown")
    return "the TFLite runtime", ""


def _interpreter_module():
    try:
        from ai_edge_litert import interpreter

        return interpreter, "ai_edge_litert"
    except ImportError:
        pass
    try:
        import numpy
        import tflite_runtime
        from tflite_runtime import interpreter
    except ImportError:
        sys.exit("error: no TFLite runtime found.\nhint: pip install -r requirements.txt "
                 '(ai-edge-litert; on 32-bit systems: pip install tflite-runtime "numpy<2")')
    version = getattr(tflite_runtime, "__version__", "unknown")
    release, numpy_release = _major_minor(version), _major_minor(numpy.__version__) or (0, 0)
    if release is not None and release <= TFLITE_RUNTIME_LAST_NUMPY1 and numpy_release >= (2, 0):
        sys.exit(_numpy2_error("tflite-runtime", version))
    return interpreter, "tflite_runtime"


def verify(directory: str) -> int:
    """Compare every file with the sha256 recorded in manifest.json; 0 when all match."""
    with open(os.path.join(directory, "manifest.json")) as fh:
        manifest = json.load(fh)
    bad = 0
    for entry in manifest["files"]:
        path = os.path.join(directory, entry["path"])
        try:
            with open(path, "rb") as fh:
                digest = hashlib.sha256(fh.read()).hexdigest()
        except OSError as exc:
            print("MISSING  {}: {}".format(entry["path"], exc.strerror))
            bad += 1
            continue
        ok = digest == entry["sha256"]
        bad += 0 if ok else 1
        print("{}  {}".format("OK      " if ok else "MODIFIED", entry["path"]))
    return 1 if bad else 0


class Classifier:
    def __init__(self, directory: str, threads: int) -> None:
        import numpy as np

        self.np = np
        with open(os.path.join(directory, "preprocess.json")) as fh:
            self.pre = json.load(fh)
        with open(os.path.join(directory, "labels.txt")) as fh:
            self.labels = [line.rstrip("\n") for line in fh]
        mod, self.runtime = _interpreter_module()
        # num_threads explicit: LiteRT treats "unset" as 1 thread.
        self.interp = mod.Interpreter(model_path=os.path.join(directory, "model.tflite"), num_threads=threads)
        self.interp.allocate_tensors()
        self.inp = self.interp.get_input_details()[0]
        self.out = self.interp.get_output_details()[0]

    @property
    def is_text(self) -> bool:
        return self.pre.get("task") == "text-classification"

    def tokenize(self, texts):
        """Texts → int32 ids with the bundle's tokenizer.json (tokenizer.py sits next to this file)."""
        sys.path.insert(0, HERE)
        from tokenizer import Tokenizer

        return Tokenizer.from_file(os.path.join(HERE, self.pre["tokenizer"])).encode(texts)

    def read_images(self, paths):
        """Image files → raw pixels (N, H, W, C) in the model's units, prepared by the bundled imageprep.py."""
        np = self.np
        sys.path.insert(0, HERE)
        try:
            import imageprep
        except ImportError as exc:
            if getattr(exc, "name", None) == "imageprep":
                sys.exit("error: imageprep.py is missing from this bundle, so infer.py cannot read image files.\nhint: "
                         "rebuild the bundle with a current edge-distill, or pass raw pixels as .npy/.npz.")
            sys.exit("error: reading image files needs Pillow, which is not installed ({}).\nhint: pip install pillow "
                     "(or: pip install -r requirements.txt)".format(exc))
        info = self.pre.get("image_files")
        if self.is_text or not info:
            sys.exit("error: this bundle's preprocess.json does not say how to prepare image files.\nhint: pass raw pixels as .npy/.npz.")
        size, channels = tuple(info["size"]), int(info["channels"])
        files = []
        for path in paths:
            if os.path.isdir(path):  # a folder: every image file under it, in sorted order
                files += sorted(os.path.join(d, f) for d, _, names in os.walk(path) for f in names
                                if os.path.splitext(f)[1].lower() in imageprep.IMAGE_SUFFIXES)
            elif not os.path.isfile(path):
                sys.exit("error: {} does not exist.\nhint: give image files (or folders of them).".format(path))
            else:
                files.append(path)
        if not files:
            sys.exit("error: no image files found in {}.\nhint: infer.py reads {}.".format(", ".join(paths), " ".join(imageprep.IMAGE_SUFFIXES)))
        raw = []
        for path in files:
            try:
                pixels = imageprep.load_image(path, size, channels, info.get("resize", imageprep.RESIZE_POLICY))
            except imageprep.ImageError as exc:
                sys.exit("error: {}.\nhint: infer.py reads JPEG, PNG, WebP, BMP and PGM/PPM files; re-save or leave out this one.".format(exc))
            except ValueError as exc:  # e.g. a resize policy newer than this imageprep.py
                sys.exit("error: {}.\nhint: use the imageprep.py that came with this bundle.".format(exc))
            raw.append(imageprep.to_raw(pixels, self.pre["normalization"]["pixel_scale"]))
        return files, np.stack(raw)

    def normalize(self, raw):
        """Raw pixels (N, H, W[, C]) → float32 NHWC, the same arithmetic (in float32) as training."""
        np = self.np
        x = np.asarray(raw, dtype=np.float32)
        if x.ndim == 3:
            x = x[..., None]
        p = self.pre["normalization"]
        return ((x / np.float32(p["pixel_scale"])) - p["mean"]) / p["std"]

    def _quantize(self, x):
        np = self.np
        dtype = np.dtype(self.inp["dtype"])
        scale, zero_point = self.inp["quantization"]
        if dtype in (np.int8, np.uint8, np.int16) and scale > 0:  # int16: the 16x8 variant
            info = np.iinfo(dtype)
            q = np.round(np.asarray(x, np.float32) / scale + zero_point)
            return np.clip(q, info.min, info.max).astype(dtype)
        return np.asarray(x, dtype=dtype)

    def scores(self, x_normalized):
        """Float class scores (dequantized logits) for each sample."""
        np = self.np
        want = tuple(int(s) for s in self.inp["shape"][1:])
        if tuple(x_normalized.shape[1:]) != want:
            sys.exit("error: samples have shape {}, the model expects {} (NHWC).\nhint: pass raw images "
                     "(N, H, W[, C]) or, with --normalized, x in the model's layout.".format(
                         tuple(x_normalized.shape[1:]), want))
        scale, zero_point = self.out["quantization"]
        result = []
        for i in range(len(x_normalized)):
            self.interp.set_tensor(self.inp["index"], self._quantize(x_normalized[i:i + 1]))
            self.interp.invoke()
            logits = self.interp.get_tensor(self.out["index"]).reshape(-1)
            if scale > 0:
                logits = (logits.astype(np.float32) - zero_point) * scale
            result.append(logits)
        return np.stack(result)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Classify images with the bundled TFLite model.")
    p.add_argument("data", nargs="?", help="image files (or folders of them), .npy of raw images, or .npz with x (and optionally "
                                          "y labels); text bundles: .txt or .jsonl")
    p.add_argument("more", nargs="*", help="more image files")
    p.add_argument("--text", action="append", help="text bundles: a text to classify (repeatable)")
    p.add_argument("--normalized", action="store_true", help="x is already normalized, in NHWC")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--verify", action="store_true", help="check the files against manifest.json and exit")
    args = p.parse_args(argv)
    if args.verify:
        return verify(HERE)
    if not args.data and not args.text:
        p.error("give image files, a .npy/.npz file of images, texts (.txt/.jsonl or --text), or --verify")

    import numpy as np

    y, files = None, None
    clf = Classifier(HERE, max(1, args.threads))
    if clf.is_text:
        texts, names = list(args.text or []), []
        if args.data and args.data.endswith(".jsonl"):
            with open(args.data, encoding="utf-8") as fh:
                rows = [json.loads(line) for line in fh if line.strip()]
            texts += [r["text"] for r in rows]
            names = [str(r["label"]) for r in rows if "label" in r]
        elif args.data:
            with open(args.data, encoding="utf-8") as fh:
                texts += [line.rstrip("\n") for line in fh if line.strip()]
        if names and len(names) == len(texts):
            y = np.array([clf.labels.index(n) if n in clf.labels else -1 for n in names])
        x = clf.tokenize(texts)
    elif args.more or not args.data.lower().endswith((".npy", ".npz")):  # image files
        files, x = clf.read_images([args.data, *args.more])
        folders = [os.path.basename(os.path.dirname(os.path.abspath(f))) for f in files]
        if all(name in clf.labels for name in folders):  # test/<class>/<file>: the folder is the label
            y = np.array([clf.labels.index(name) for name in folders])
    elif args.data.endswith(".npz"):
        with np.load(args.data, allow_pickle=False) as data:
            if "x" not in data.files:
                sys.exit("error: {} has no array 'x'.\nhint: numpy.savez(path, x=images, y=labels)".format(args.data))
            x = data["x"]
            y = data["y"].reshape(-1) if "y" in data.files else None
    else:
        x = np.load(args.data, allow_pickle=False)
    if not clf.is_text:
        x = np.asarray(x, np.float32) if args.normalized and files is None else clf.normalize(x)
    t0 = time.perf_counter()
    scores = clf.scores(x)
    seconds = time.perf_counter() - t0
    pred = scores.argmax(axis=1)
    accuracy = float((pred == y).mean()) if y is not None and len(y) == len(pred) else None
    if args.json:
        print(json.dumps({"n": int(len(pred)), "predictions": [int(v) for v in pred],
                          "labels": [clf.labels[int(v)] for v in pred], "accuracy": accuracy,
                          "runtime": clf.runtime, "seconds": seconds, **({"files": files} if files is not None else {})}))
        return 0
    for i, k in enumerate(pred):
        print("{}\t{}\t{:.3f}".format(files[i] if files is not None else i, clf.labels[int(k)], float(scores[i, int(k)])))
    summary = "{} samples in {:.3f} s ({})".format(len(pred), seconds, clf.runtime)
    if accuracy is not None:
        summary += ", accuracy {:.4f}".format(accuracy)
    print(summary, file=sys.stderr)
    return 0


def run(argv=None) -> int:
    """main(), with a runtime's native failure to load NumPy's C API as one clear error instead of a traceback."""
    try:
        return main(argv)
    except SystemError as exc:
        if not _numpy_abi_failure(exc):
            raise
        sys.exit(_numpy2_error(*_loaded_runtime()))


if __name__ == "__main__":
    sys.exit(run())
