"""What a text student takes from its teacher beyond logits: views of the training texts labelled by the teacher,
its pooled hidden states, its vectors for the student's words, and the student's own tokenizer file.

The student's ids come from the data stage's word tokenizer restricted to the sized student's vocabulary and
length (``models.text.student_inputs``); ``student/tokenizer.json`` is that restricted tokenizer, the file that
ships with the model and that ``export/tokenizer.py`` reads on the device.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..console import get_console
from ..rundir import RunDir
from ..stages.data import load_splits
from .text_teacher import _length_ordered_chunks, _logits_with_progress, _teacher_encoder, load_teacher, teacher_inputs

def teacher_view_bank(run: RunDir, teacher, data, student_config, views: int, word_dropout: float, seed: int):
    """The teacher's logits on ``views`` views of every training text -- view 0 as it is (the cached
    logits), views 1.. with words dropped (``data.text_augment``) -- and the student's ids of each view.

    The views are strings, so the teacher and the student each tokenize them their own way; the teacher's
    logits on them are computed once and cached under ``teacher/``, keyed by the teacher weights' content and
    the view settings, and hold the data stage's ids so any student size can be cut from them.
    """
    from ..data.text import load_texts
    from ..data.text_augment import drop_words
    from ..data.tokenizer import WordTokenizer
    from ..data.user import fingerprint
    from ..distill.views import ViewBank
    from ..models.text import student_inputs

    splits = load_splits(run, data)
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


def teacher_hidden_states(run: RunDir, teacher, spec, splits) -> np.ndarray:
    """The teacher's pooled hidden state (the vector its head reads) on every training text, float16, cached.

    Computed once per teacher, on the teacher's own token ids (a teacher and a student tokenize differently,
    so only sentence-level vectors can be matched); keyed by the teacher weights' content so a retrained
    teacher never meets stale states.
    """
    from ..data.user import fingerprint

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

    from ..distill.features import capture_features

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
    from ..data.tokenizer import WordTokenizer
    from ..data.user import fingerprint

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

    from ..data.tokenizer import PAD_ID

    table = torch.from_numpy(teacher_word_embeddings(run, teacher, data, student_config))
    keep = torch.arange(table.shape[0]) != PAD_ID
    with torch.no_grad():
        model.embed.weight[keep] = table[keep]


def write_student_tokenizer(run: RunDir, data, config) -> Path:
    """student/tokenizer.json: the data stage's tokenizer restricted to the student's vocabulary and length."""
    from ..data.tokenizer import WordTokenizer

    tokenizer = WordTokenizer.load(run.path(data.tokenizer_path)).restrict(config.vocab, config.seq_len)
    with run.atomic_path("student/tokenizer.json") as tmp:
        tokenizer.save(tmp)
    return run.path("student/tokenizer.json")
