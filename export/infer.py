#!/usr/bin/env python3
"""Classify images (or texts) with the bundled model.tflite: numpy + a TFLite runtime only (no torch, no TensorFlow).

Part of the Raspberry Pi bundle that edge-distill writes; it reads ``model.tflite``, ``labels.txt`` and
``preprocess.json`` from its own directory.

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


def _interpreter_module():
    try:
        from ai_edge_litert import interpreter

        return interpreter, "ai_edge_litert"
    except ImportError:
        pass
    try:
        from tflite_runtime import interpreter

        return interpreter, "tflite_runtime"
    except ImportError:
        sys.exit("error: no TFLite runtime found.\nhint: pip install -r requirements.txt "
                 "(ai-edge-litert; on 32-bit systems: pip install tflite-runtime)")


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
    p.add_argument("data", nargs="?", help=".npy of raw images, or .npz with x (and optionally y labels); text bundles: .txt or .jsonl")
    p.add_argument("--text", action="append", help="text bundles: a text to classify (repeatable)")
    p.add_argument("--normalized", action="store_true", help="x is already normalized, in NHWC")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--verify", action="store_true", help="check the files against manifest.json and exit")
    args = p.parse_args(argv)
    if args.verify:
        return verify(HERE)
    if not args.data and not args.text:
        p.error("give a .npy/.npz file of images, texts (.txt/.jsonl or --text), or --verify")

    import numpy as np

    y = None
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
    elif args.data.endswith(".npz"):
        with np.load(args.data, allow_pickle=False) as data:
            if "x" not in data.files:
                sys.exit("error: {} has no array 'x'.\nhint: numpy.savez(path, x=images, y=labels)".format(args.data))
            x = data["x"]
            y = data["y"].reshape(-1) if "y" in data.files else None
    else:
        x = np.load(args.data, allow_pickle=False)
    if not clf.is_text:
        x = np.asarray(x, np.float32) if args.normalized else clf.normalize(x)
    t0 = time.perf_counter()
    scores = clf.scores(x)
    seconds = time.perf_counter() - t0
    pred = scores.argmax(axis=1)
    accuracy = float((pred == y).mean()) if y is not None and len(y) == len(pred) else None
    if args.json:
        print(json.dumps({"n": int(len(pred)), "predictions": [int(v) for v in pred],
                          "labels": [clf.labels[int(v)] for v in pred], "accuracy": accuracy,
                          "runtime": clf.runtime, "seconds": seconds}))
        return 0
    for i, k in enumerate(pred):
        print("{}\t{}\t{:.3f}".format(i, clf.labels[int(k)], float(scores[i, int(k)])))
    summary = "{} samples in {:.3f} s ({})".format(len(pred), seconds, clf.runtime)
    if accuracy is not None:
        summary += ", accuracy {:.4f}".format(accuracy)
    print(summary, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
