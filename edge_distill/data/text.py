"""Text classification data: the built-in ``wordnet-nouns`` task and a user's ``.csv`` / ``.jsonl`` file.

Both become a ``RawText`` (texts, integer labels, class names), then ``prepare_text`` splits it, fits the
student's word tokenizer on the training split (``tokenizer.py``) and encodes every split to int32 ids.
The raw texts travel with the ids, because a teacher with its own tokenizer (MiniLM's WordPiece) needs them.

User files: one sample per CSV row (with a header) or JSON Lines object; ``--text-field`` and
``--label-field`` name the columns (default ``text`` and ``label``).  Labels are strings (numbers are read
as their text); the class order is the sorted label names, stored in the ``DataSpec``.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import DataError
from ..registry import Registry
from .spec import DataSpec, Splits
from .splits import balanced_subset, stratified_split
from .tokenizer import WordTokenizer, words

TEXT_SUFFIXES = (".csv", ".jsonl")
SPLIT_FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}
MIN_PER_CLASS = 10  # as for images: each class is split 70/10/20
# The data stage's tokenizer: every student's tokenizer is a prefix of it (tokenizer.restrict).
MAX_VOCAB = 16_384
MIN_WORD_COUNT = 2  # a word seen once in training teaches the embedding nothing it can reuse
MAX_SEQ_LEN = 64
SEQ_LEN_COVERAGE = 99  # percentile of training-text lengths (in words) the longest student input covers


@dataclass(frozen=True)
class RawText:
    texts: list[str]
    labels: np.ndarray  # int64 class ids
    class_names: tuple[str, ...]
    source: str
    # A fixed split (indices into texts), when the dataset defines one; otherwise a seeded stratified split.
    split: dict[str, np.ndarray] | None = None


TEXT_DATASETS: Registry[Callable[[], RawText]] = Registry("text dataset")


# ---- WordNet nouns ---------------------------------------------------------------------------------
WORDNET_NOUNS = Path("/usr/share/wordnet/data.noun")
# Lexicographer files 4..28 (WordNet's lexnames): the 25 noun "unique beginners".  File 3, noun.Tops, holds
# the 51 synsets at the very top of the hierarchy (entity, abstraction, ...): not a topic, so it is left out.
NOUN_LEXNAMES = {
    4: "noun.act", 5: "noun.animal", 6: "noun.artifact", 7: "noun.attribute", 8: "noun.body", 9: "noun.cognition",
    10: "noun.communication", 11: "noun.event", 12: "noun.feeling", 13: "noun.food", 14: "noun.group",
    15: "noun.location", 16: "noun.motive", 17: "noun.object", 18: "noun.person", 19: "noun.phenomenon",
    20: "noun.plant", 21: "noun.possession", 22: "noun.process", 23: "noun.quantity", 24: "noun.relation",
    25: "noun.shape", 26: "noun.state", 27: "noun.substance", 28: "noun.time",
}
TOPS_LEXFILE = 3


@TEXT_DATASETS.register("wordnet-nouns")
def load_wordnet_nouns() -> RawText:
    """Every noun synset's gloss, labelled with its lexicographer file (25 classes).

    Split by position in ``data.noun`` (ordered by synset offset), independent of the seed so every build
    and benchmark scores the same synsets: every 5th synset is test; of the rest, every 10th is validation.
    Read from ``$EDGE_DISTILL_WORDNET`` (a data.noun file), else from Debian's ``wordnet-base`` package.
    """
    path = Path(os.environ.get("EDGE_DISTILL_WORDNET", WORDNET_NOUNS))
    if not path.is_file():
        raise DataError(
            f"WordNet's noun file {path} not found.",
            "Install Debian's package (apt-get install wordnet-base), or set EDGE_DISTILL_WORDNET to a WordNet 3.x data.noun file.",
        )
    texts, labels, position = [], [], []
    with open(path, encoding="utf-8", errors="strict") as fh:
        synset = 0
        for number, line in enumerate(fh, 1):
            if line.startswith("  "):  # the licence header
                continue
            fields = line.split(" ", 2)
            head, sep, gloss = line.partition(" | ")
            if len(fields) < 3 or not sep or not fields[1].isdigit():
                raise DataError(f"{path}, line {number}: not a WordNet data line.", "Point EDGE_DISTILL_WORDNET at an unmodified data.noun.")
            lexfile = int(fields[1])
            synset += 1
            if lexfile == TOPS_LEXFILE:
                continue
            if lexfile not in NOUN_LEXNAMES:
                raise DataError(f"{path}, line {number}: lexicographer file {lexfile} is not a noun file.", "Point EDGE_DISTILL_WORDNET at data.noun.")
            texts.append(gloss.strip())
            labels.append(lexfile)
            position.append(synset - 1)
    if not texts:
        raise DataError(f"{path} holds no synsets.", "Reinstall wordnet-base.")
    names = tuple(NOUN_LEXNAMES[k] for k in sorted(NOUN_LEXNAMES))
    ids = {k: i for i, k in enumerate(sorted(NOUN_LEXNAMES))}
    pos = np.array(position)
    test = pos % 5 == 4
    rest = np.flatnonzero(~test)
    val = np.zeros(len(pos), bool)
    val[rest[np.arange(len(rest)) % 10 == 9]] = True
    split = {"train": np.flatnonzero(~test & ~val), "val": np.flatnonzero(val), "test": np.flatnonzero(test)}
    return RawText(texts, np.array([ids[k] for k in labels], np.int64), names,
                   f"WordNet 3.x noun glosses ({path}), lexicographer file as label; every 5th synset is test", split)


# ---- a user's file ---------------------------------------------------------------------------------
def is_text_file(name: str) -> bool:
    return Path(name).suffix.lower() in TEXT_SUFFIXES


def read_rows(path: Path, hint: str, what: str) -> list:
    """(where, row) of every sample of a .csv / .jsonl; ``what`` names the file in the errors (e.g. "--unlabelled X")."""
    try:
        rows = _read_csv(path, hint) if path.suffix.lower() == ".csv" else _read_jsonl(path, hint)
    except UnicodeDecodeError as exc:
        raise DataError(f"{what} is not UTF-8 text ({exc.reason} at byte {exc.start}).", "Save the file as UTF-8.") from None
    if not rows:
        raise DataError(f"{what} holds no samples.", hint)
    return rows


def load_text_file(name: str, text_field: str = "text", label_field: str = "label") -> RawText:
    path = Path(name)
    hint = (f"Give a .csv with a header row, or a .jsonl with one JSON object per line, holding the fields "
            f"{text_field!r} (the text) and {label_field!r} (its class name); --text-field/--label-field rename them.")
    if not path.is_file():
        raise DataError(f"Text data file {path} does not exist.", hint)
    rows = read_rows(path, hint, f"Text data file {path}")
    texts, names = [], []
    for where, row in rows:
        for field in (text_field, label_field):
            if field not in row:
                raise DataError(f"{path}, {where}: no field {field!r} (fields: {', '.join(map(repr, list(row)[:8]))}).", hint)
        text, label = row[text_field], row[label_field]
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{path}, {where}: field {text_field!r} is {'empty' if isinstance(text, str) else type(text).__name__}; expected text.", hint)
        if label is None or isinstance(label, (dict, list)) or str(label).strip() == "":
            raise DataError(f"{path}, {where}: field {label_field!r} is {label!r}; expected a class name.", hint)
        texts.append(text)
        names.append(str(label).strip())
    class_names = tuple(sorted(set(names)))
    if len(class_names) < 2:
        raise DataError(f"{path}: every sample has the label {class_names[0]!r} in field {label_field!r}; classification needs at "
                        "least 2 classes.", f"Add samples of at least one other class, or point --label-field at the field that "
                        f"holds the class (fields: {', '.join(map(repr, list(rows[0][1])[:8]))}).")
    index = {n: i for i, n in enumerate(class_names)}
    labels = np.array([index[n] for n in names], np.int64)
    counts = np.bincount(labels, minlength=len(class_names))
    small = [(class_names[i], int(c)) for i, c in enumerate(counts) if c < MIN_PER_CLASS]
    if small:
        listing = ", ".join(f"{n!r}: {c}" for n, c in small[:5])
        raise DataError(
            f"{path}: {len(small)} class(es) have fewer than {MIN_PER_CLASS} samples ({listing}).",
            f"Every class is split 70/10/20 into train/val/test, so each needs at least {MIN_PER_CLASS}; add samples or drop the class.",
        )
    return RawText(texts, labels, class_names, f"user file {path} ({len(texts)} texts, {len(class_names)} classes)")


def _read_csv(path: Path, hint: str) -> list[tuple[str, dict]]:
    with open(path, encoding="utf-8-sig", newline="") as fh:  # -sig: spreadsheet exports often start with a BOM
        # strict: a quote that never closes is an error at the end of the file, not one text that swallows every row after it.
        reader = csv.DictReader(fh, strict=True)
        # A row is named by the line it ends on (blank lines counted; a quoted text may span lines).
        rows, ended = [], 1
        try:
            for row in reader:
                ended = reader.line_num
                if any((v or "").strip() for v in row.values() if isinstance(v, str)):
                    rows.append((f"line {ended}", row))
        except csv.Error as exc:
            raise DataError(f"{path} is not valid CSV in the row after line {ended}: {exc}.", hint + " A text that holds the "
                            "delimiter, a quote or a line break must be quoted, with its own quotes doubled (\"\").") from None
    return rows


def _read_jsonl(path: Path, hint: str) -> list[tuple[str, dict]]:
    rows = []
    with open(path, encoding="utf-8-sig") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}, line {number}: not JSON ({exc.msg}).", hint) from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}, line {number}: a JSON {type(obj).__name__}, not an object.", hint)
            rows.append((f"line {number}", obj))
    return rows


# ---- the data stage for text -----------------------------------------------------------------------
@dataclass(frozen=True)
class TextData:
    spec: DataSpec
    splits: Splits  # x_* are int32 token ids of ``tokenizer``
    texts: dict[str, list[str]]  # the raw texts of each split ("train", "val", "test", "calib")
    tokenizer: WordTokenizer


def load_raw_text(name: str, text_field: str = "text", label_field: str = "label") -> RawText:
    return load_text_file(name, text_field, label_field) if is_text_file(name) else TEXT_DATASETS.get(name)()


def prepare_text(name: str, seed: int, calib_count: int, text_field: str = "text", label_field: str = "label") -> TextData:
    raw = load_raw_text(name, text_field, label_field)
    idx = dict(raw.split) if raw.split is not None else stratified_split(raw.labels, SPLIT_FRACTIONS, seed)
    train_texts = [raw.texts[i] for i in idx["train"]]
    lengths = np.array([len(words(t)) for t in train_texts])
    # Long enough for all but the longest 1% of training texts, in steps of 8 (friendly to SIMD kernels).
    seq_len = int(min(MAX_SEQ_LEN, max(8, -(-np.percentile(lengths, SEQ_LEN_COVERAGE) // 8) * 8)))
    tokenizer = WordTokenizer.fit(train_texts, MAX_VOCAB, seq_len, min_count=MIN_WORD_COUNT if len(train_texts) >= 1000 else 1)
    idx["calib"] = idx["train"][balanced_subset(raw.labels[idx["train"]], calib_count, seed + 1)]
    texts = {s: [raw.texts[i] for i in idx[s]] for s in ("train", "val", "test", "calib")}
    x = {s: tokenizer.encode(texts[s]) for s in texts}
    splits = Splits(**{f"{k}_{s}": (x[s] if k == "x" else raw.labels[idx[s]]) for s in texts for k in ("x", "y")})
    spec = DataSpec(
        name=name, task="text", input_shape=(seq_len,), num_classes=len(raw.class_names), class_names=raw.class_names,
        pixel_scale=1.0, mean=0.0, std=1.0, source=raw.source, vocab_size=tokenizer.vocab_size,
    )
    return TextData(spec, splits, texts, tokenizer)


def save_texts(texts: dict[str, list[str]], path: Path) -> None:
    Path(path).write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")


def load_texts(path: Path) -> dict[str, list[str]]:
    return json.loads(Path(path).read_text(encoding="utf-8"))
