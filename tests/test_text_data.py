"""Text data: the wordnet-nouns task, user .csv/.jsonl files, and the tokenizer that must match on the device."""

import json

import numpy as np
import pytest

from edge_distill.data.text import load_text_file, load_wordnet_nouns, prepare_text
from edge_distill.data.tokenizer import PAD_ID, UNK_ID, WordTokenizer, restrict_ids
from edge_distill.errors import DataError
from edge_distill.export.tokenizer import Tokenizer as DeviceTokenizer
from system_packages import require_wordnet


@pytest.fixture(scope="module")
def wordnet():
    require_wordnet()
    return load_wordnet_nouns()


@pytest.fixture(scope="module")
def wordnet_data():
    require_wordnet()
    return prepare_text("wordnet-nouns", seed=0, calib_count=200)


def test_wordnet_nouns_is_25_lexicographer_classes_with_a_fixed_split(wordnet):
    assert len(wordnet.class_names) == 25 and "noun.animal" in wordnet.class_names and "noun.Tops" not in wordnet.class_names
    assert len(wordnet.texts) == 82_115 - 51  # every noun synset but the 51 in noun.Tops
    counts = np.bincount(wordnet.labels, minlength=25)
    assert counts.min() > 0 and counts[wordnet.class_names.index("noun.artifact")] == 11_587
    split = wordnet.split
    together = np.concatenate([split["train"], split["val"], split["test"]])
    assert len(together) == len(set(together.tolist())) == len(wordnet.texts)
    assert abs(len(split["test"]) / len(wordnet.texts) - 0.2) < 0.001  # every 5th synset
    assert len(wordnet.texts[0]) > 0 and "|" not in wordnet.texts[0]
    again = load_wordnet_nouns()  # deterministic, independent of any seed
    assert all(np.array_equal(split[s], again.split[s]) for s in split)


def test_missing_wordnet_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGE_DISTILL_WORDNET", str(tmp_path / "nope"))
    with pytest.raises(DataError) as err:
        load_wordnet_nouns()
    assert "apt-get install wordnet-base" in err.value.hint


def test_prepared_text_splits_hold_int32_ids_and_a_balanced_calibration_set(wordnet_data):
    spec, s = wordnet_data.spec, wordnet_data.splits
    assert spec.task == "text" and spec.input_shape == (wordnet_data.tokenizer.seq_len,) and spec.vocab_size == wordnet_data.tokenizer.vocab_size
    assert s.x_train.dtype == np.int32 and s.x_train.shape[1] == spec.input_shape[0]
    assert s.x_train.min() >= 0 and s.x_train.max() < spec.vocab_size
    assert np.all(np.bincount(s.y_calib, minlength=25) == 8)
    assert len(wordnet_data.texts["test"]) == len(s.y_test)
    # The vocabulary comes from the training split only: a word that appears only in test texts is [UNK].
    train_words = set(wordnet_data.tokenizer.vocab)
    assert (s.x_test == UNK_ID).sum() > 0 and "[UNK]" in train_words


def test_device_tokenizer_matches_the_host_on_1000_real_glosses(wordnet_data, tmp_path):
    host = wordnet_data.tokenizer.restrict(4096, 24)
    host.save(tmp_path / "tokenizer.json")
    device = DeviceTokenizer.from_file(str(tmp_path / "tokenizer.json"))
    texts = wordnet_data.texts["test"][:1000]
    expected = host.encode(texts)
    assert device.encode(texts).dtype == np.int32
    assert np.array_equal(device.encode(texts), expected)
    # ... and the restricted ids equal restricting the data stage's ids, so training used the device's ids.
    assert np.array_equal(restrict_ids(wordnet_data.splits.x_test[:1000], 4096, 24), expected)
    assert (expected == UNK_ID).sum() > 0 and (expected == PAD_ID).sum() > 0  # both rules were exercised


def test_tokenizer_rule_on_awkward_text(tmp_path):
    tok = WordTokenizer.fit(["Café au lait", "the CAFÉ", "x_y z"], max_vocab=100, seq_len=4)
    tok.save(tmp_path / "t.json")
    device = DeviceTokenizer.from_file(str(tmp_path / "t.json"))
    for text in ("CAFE\u0301 ﬁne", "Ｃａｆé  au\tlait!", "x_y", "", "a b c d e f"):  # combining accent, ligature, full-width, underscore
        assert device.ids(text) == tok.encode([text])[0].tolist()
    assert WordTokenizer.load(tmp_path / "t.json") == tok


def _write_csv(path, rows, header="text,label"):
    path.write_text(header + "\n" + "".join(f"{t},{l}\n" for t, l in rows))
    return path


def test_csv_and_jsonl_loaders_map_string_labels(tmp_path):
    rows = [(f"sample number {i}", "spam" if i % 2 else "ham") for i in range(40)]
    csv_raw = load_text_file(str(_write_csv(tmp_path / "d.csv", rows)))
    assert csv_raw.class_names == ("ham", "spam") and csv_raw.labels[1] == 1
    jl = tmp_path / "d.jsonl"
    jl.write_text("".join(json.dumps({"body": t, "y": 7 if l == "spam" else 3}) + "\n" for t, l in rows) + "\n")
    raw = load_text_file(str(jl), text_field="body", label_field="y")
    assert raw.class_names == ("3", "7") and len(raw.texts) == 40
    data = prepare_text(str(jl), seed=0, calib_count=10, text_field="body", label_field="y")
    assert data.spec.class_names == ("3", "7") and len(data.splits.y_test) == 8


@pytest.mark.parametrize("content,suffix,words", [
    ("", ".csv", "holds no samples"),
    ("text,label\n", ".csv", "holds no samples"),
    ("words,label\nhello,a\n", ".csv", "no field 'text'"),
    ("".join(f"t{i},same\n" for i in range(30)), ".csv", "at least 2 classes"),
    ("".join(f"t{i},{'a' if i < 25 else 'b'}\n" for i in range(30)), ".csv", "fewer than 10"),
    ('{"text": "a", "label": "x"}\nnot json\n', ".jsonl", "line 2: not JSON"),
    ('["a list"]\n', ".jsonl", "not an object"),
    ('{"text": null, "label": "x"}\n', ".jsonl", "expected text"),
    ('{"text": "hi", "label": ""}\n', ".jsonl", "expected a class name"),
])
def test_bad_text_files_say_what_is_wrong(tmp_path, content, suffix, words):
    path = tmp_path / f"data{suffix}"
    if suffix == ".csv" and content and not content.startswith(("text", "words")):
        content = "text,label\n" + content
    path.write_text(content)
    with pytest.raises(DataError, match=words):
        load_text_file(str(path))


def test_non_utf8_file_is_refused(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"text,label\n\xff\xfe,a\n")
    with pytest.raises(DataError, match="not UTF-8"):
        load_text_file(str(path))


def test_word_dropout_keeps_punctuation_a_word_and_its_seed():
    from edge_distill.data.text_augment import drop_words
    from edge_distill.data.tokenizer import words
    from edge_distill.errors import ConfigError

    texts = ["a small domesticated carnivorous mammal with soft fur; (cat)", "one", "", "e.g. the U.S. army's 1st division"] * 50
    first, again, other = drop_words(texts, 0.3, 7), drop_words(texts, 0.3, 7), drop_words(texts, 0.3, 8)
    assert first == again and first != other
    for before, after in zip(texts, first):
        kept = words(after)
        assert (len(kept) >= 1) == bool(words(before))  # never an empty text from a non-empty one
        it = iter(words(before))
        assert all(any(w == v for v in it) for w in kept)  # the kept words, in their order
        assert [c for c in after if c in ";()'."] == [c for c in before if c in ";()'."]  # punctuation untouched
    dropped = sum(len(words(t)) for t in texts) - sum(len(words(t)) for t in first)
    assert 0.2 < dropped / sum(len(words(t)) for t in texts) < 0.4
    with pytest.raises(ConfigError, match="within"):
        drop_words(texts, 1.0, 0)
