"""Text classification: the models read int32 token ids.  The student reads the data stage's word ids cut to its
own vocabulary and length; a Hugging Face teacher reads its own WordPiece ids (``text_teacher.py``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ..bundle import BundleInput
from ..console import get_console
from ..errors import ConfigError
from ..rundir import RunDir
from ..stages.data import load_splits, write_npz, write_splits
from ..stages.transfer import TRANSFER_REVISION
from . import Task
from .text_features import start_from_teacher_embeddings, teacher_hidden_states, teacher_view_bank, write_student_tokenizer
from .text_teacher import (TextTeacherSettings, encode_for_teacher, export_teacher_onnx, load_teacher, make_text_teacher, teacher_content_key,
                           teacher_inputs)

# Text students train on batches of 256 at a peak learning rate of 6e-3 (OneCycle).  Measured on wordnet-nouns
# (tiny-transformer 64x2, 8 epochs, seed 0): validation 0.8177 without KD and 0.8207 with logit KD, vs 0.8104 and
# 0.8174 with the image defaults (64, 3e-3) -- and 4x fewer optimizer steps per epoch.
STUDENT_BATCH, STUDENT_LR = 256, 6e-3
TEXT_TEST_NPZ = "bench/test_ids.npz"  # the student's int32 token ids and labels of the test split


@dataclass(frozen=True)
class TextDataSettings:
    data: str
    seed: int
    calib_count: int
    text_field: str
    label_field: str


@dataclass(frozen=True)
class TextUnlabelledSettings:
    unlabelled: str
    text_field: str
    label_field: str
    revision: int = TRANSFER_REVISION


class TextTask(Task):
    name = "text"
    default_student = "tiny-transformer"
    device_test_npz = TEXT_TEST_NPZ
    has_classical_baseline = True

    def claims(self, data: str) -> bool:
        from ..data.text import TEXT_DATASETS, is_text_file

        return data in TEXT_DATASETS or is_text_file(data)

    def refusal(self, data: str) -> tuple[str, str]:
        from ..data.text import TEXT_DATASETS

        return (f"--task text needs a text dataset, got --data {data}.",
                f"Use a built-in text dataset ({', '.join(TEXT_DATASETS.names())}) or a .csv / .jsonl file.")

    def check_options(self, options) -> None:
        """Options that only make sense for images, refused for text before anything runs."""
        _check_image_only_options(options)
        _check_text_teacher_options(options)

    # ---- data
    def data_settings(self, options) -> TextDataSettings:
        return TextDataSettings(options.data, options.seed, options.calib_count, options.text_field, options.label_field)

    def data_inputs(self, options) -> list[str]:
        from ..stages.data import content_key

        return [content_key(options.data)]

    def prepare_data(self, run: RunDir, settings: TextDataSettings):
        from ..data import DataResult
        from ..data.text import prepare_text, save_texts

        text = prepare_text(settings.data, settings.seed, settings.calib_count, settings.text_field, settings.label_field)
        write_splits(run, text.splits)
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

    def input_contract(self, spec):
        """int32 token ids of the data stage's vocabulary."""
        from ..convert import InputContract

        return InputContract(dtype="int32", low=0, high=spec.vocab_size - 1, num_classes=spec.num_classes, source=f"token ids of {spec.name}")

    # ---- teacher
    def teacher_settings(self, options, world_size: int) -> TextTeacherSettings:
        return TextTeacherSettings.from_options(options)

    def teacher_inputs(self, options) -> list[str]:
        return [teacher_content_key(options.teacher)] if options.teacher.startswith("hf:") else []

    def make_teacher(self, run, settings: TextTeacherSettings, data):
        return make_text_teacher(run, settings, data)

    def load_teacher(self, run, teacher, data):
        return load_teacher(run, data.spec)

    def teacher_split_inputs(self, run, teacher, splits, split: str):
        return teacher_inputs(run, teacher, splits, split)

    # ---- a transfer set
    def unlabelled_settings(self, options) -> TextUnlabelledSettings:
        return TextUnlabelledSettings(options.unlabelled, options.text_field, options.label_field)

    def check_unlabelled(self, options, data) -> None:
        from ..data.unlabelled import load_unlabelled_texts

        if options.unlabelled is not None:
            load_unlabelled_texts(options.unlabelled, options.text_field, options.label_field, data.spec.class_names)

    def prepare_unlabelled(self, run, settings: TextUnlabelledSettings, data, teacher):
        """Encoded by the data stage's tokenizer (fitted on the labelled training split) for the student, and by the
        teacher's own tokenizer for the teacher."""
        from ..data.overlap import same_texts
        from ..data.text import load_texts
        from ..data.tokenizer import WordTokenizer
        from ..data.unlabelled import load_unlabelled_texts
        from ..stages.transfer import TransferSet

        texts = load_unlabelled_texts(settings.unlabelled, settings.text_field, settings.label_field, data.spec.class_names)
        x = WordTokenizer.load(run.path(data.tokenizer_path)).encode(texts.texts)
        split_texts = load_texts(run.path(data.texts_path))
        overlap = {s: same_texts(texts.texts, split_texts[s]) for s in ("train", "val", "test")}
        return TransferSet(x, encode_for_teacher(run, teacher, texts.texts), texts.y, texts.source, overlap)

    # ---- students
    def student_constants(self) -> dict:
        from ..models.text import TEXT_STUDENT_REVISION

        return {"batch_size": STUDENT_BATCH, "lr": STUDENT_LR, "graph_revision": TEXT_STUDENT_REVISION}

    def student_splits(self, run, data, sizing):
        """The student reads ids of its own vocabulary and length."""
        splits = load_splits(run, data)
        return dataclasses.replace(splits, **{f"x_{s}": self.student_inputs(sizing, getattr(splits, f"x_{s}")) for s in ("train", "val", "test", "calib")})

    def student_inputs(self, sizing, x):
        from ..models.text import student_inputs

        return student_inputs(sizing.chosen, x)

    def student_reads_teacher(self, settings) -> bool:
        return settings.student_embeddings == "teacher"

    def init_student(self, model, run, settings, teacher, data, sizing, stage: str) -> None:
        # Both students start from the teacher's word vectors, so the baseline differs from the KD student in its
        # loss only and the KD gain is the soft targets' own (--student-embeddings random: both random).
        if settings.student_embeddings == "teacher":
            get_console().stage(stage, "starting the student's embeddings from the teacher's word vectors")
            start_from_teacher_embeddings(model, run, teacher, data, sizing.chosen)

    def view_bank(self, run, settings, teacher, data, sizing, splits, cfg, loss):
        """The teacher labels word-dropout copies of the training texts; the baseline trains on the same copies with
        their hard labels."""
        views = settings.views
        return teacher_view_bank(run, teacher, data, sizing.chosen, views.views, views.word_dropout, settings.seed), cfg

    def feature_bank(self, run, teacher, data, splits, loss):
        """A text teacher reads its own token ids, so it cannot run on the student's batch: its pooled hidden states
        are computed once and served, with its cached logits, as a one-view bank."""
        import numpy as np

        from ..distill import LOSSES
        from ..distill.views import ViewBank

        if not LOSSES.get(loss).needs_features:
            return None
        hidden = teacher_hidden_states(run, teacher, data.spec, load_splits(run, data))
        return ViewBank(splits.x_train[None], np.load(run.path(teacher.logits_path))[None], hidden[None])

    # ---- after training
    def classical_baseline(self, run, data):
        """What a linear model on word n-grams reaches on the same splits, beside the teacher."""
        from ..data.text import load_texts
        from ..models.classical import tfidf_logistic_regression

        splits = load_splits(run, data)
        return tfidf_logistic_regression(load_texts(run.path(data.texts_path)), splits.y_train, splits.y_val, splits.y_test,
                                         data.spec.num_classes, progress=get_console().progress)

    def export_for_device(self, run, data, sizing, teacher) -> list[Path]:
        files = [write_student_tokenizer(run, data, sizing.chosen)]  # ships with the model: the device tokenizes with it
        onnx_path = export_teacher_onnx(run, teacher, data.spec, load_splits(run, data))
        return files + ([onnx_path] if onnx_path else [])

    def bench_targets(self, run, data, sizing, teacher, conversion):
        """The student's int32 ids and, when it exported, the teacher's own."""
        splits = load_splits(run, data)
        write_npz(run, TEXT_TEST_NPZ, x=self.student_splits(run, data, sizing).x_test, y=splits.y_test)
        targets = []
        if run.path("teacher/teacher.onnx").is_file():
            write_npz(run, "bench/teacher_test_ids.npz", x=teacher_inputs(run, teacher, splits, "test"), y=splits.y_test)
            targets.append(("teacher (ONNX Runtime fp32)", run.path("teacher/teacher.onnx"), "bench/teacher_test_ids.npz"))
        return targets + [(f"student {f.variant}", run.path(f.path), TEXT_TEST_NPZ) for f in conversion.files
                          if f.variant.startswith("tflite") or f.variant == "onnx_int8_qdq"]  # ONNX Runtime INT8: the peer, on this host

    def bundle_input(self, run, data):
        """The device tokenizes with the student's tokenizer file and export/tokenizer.py."""
        import importlib.resources

        from ..data.tokenizer import WordTokenizer

        tokenizer = run.path("student/tokenizer.json")
        return ((1, WordTokenizer.load(tokenizer).seq_len), (str(tokenizer), str(importlib.resources.files("edge_distill.export") / "tokenizer.py")),
                TOKEN_INPUT)


class TokenInput(BundleInput):
    """Token ids, not pixels: the tokenizer file shipped beside the model is the whole preprocessing."""

    title = "Text"
    readmes = {"raspberry-pi": "README.raspberry-pi.text.md", "android": "README.android.text.md"}

    def android_tensor(self, facts, q):
        from ..tflite_metadata import TensorInfo

        return TensorInfo("token_ids", f"{q['shape'][-1]} {q['dtype']} token ids of one text, from tokenizer.json "
                                       "(padded at the end with its pad_id); see README.md for the tokenizer rule")

    def preprocess(self, facts, q_in, q_out):
        return {
            "task": "text-classification",
            "input": dict(q_in, meaning="int32 token ids of one text, from tokenizer.json (format edge-distill-words-1; "
                                        "tokenizer.py implements it with the standard library)"),
            "output": dict(q_out, meaning="class logits; index i is line i of labels.txt"),
            "tokenizer": "tokenizer.json",
        }, {}

    def template_values(self, facts):
        return {"IMAGE_SIZE": "", "IMAGE_MODE": "", "IMAGE_REQUIREMENTS": ""}


TOKEN_INPUT = TokenInput()


def _check_image_only_options(options) -> None:
    if options.augment_shift or options.augment_flip:
        raise ConfigError("--augment-shift and --augment-flip are image augmentations; this build is text.",
                          "Leave them out; text views come from --teacher-views K --word-dropout P.")
    if options.teacher_members > 1:
        raise ConfigError("--teacher-members trains an ensemble of the built-in image teacher; this build is text.",
                          "Leave it out (text teachers are minilm, hf:DIR or auto).")
    if options.kd_loss in ("fitnet", "attention"):
        raise ConfigError(f"--kd-loss {options.kd_loss} matches convolutional feature maps, which text models do not have.",
                          "Use --kd-loss logit, or hidden (pooled hidden-state distillation) for text.")
    if options.student_init != "scratch":
        raise ConfigError(f"--student-init {options.student_init} starts an image student; text students start from scratch or from the "
                          "teacher's word vectors.", "Leave --student-init out; --student-embeddings teacher is the text student's head start.")
    if options.init == "prune":
        raise ConfigError("--init prune cuts a student out of the built-in image teacher's convolutions; text students are not pruned yet.",
                          "Leave it out: text students already start from the teacher's word vectors (--student-embeddings teacher).")
    if options.image_options_given():
        raise ConfigError(f"{', '.join(options.image_options_given())}: image-data options; this build is text.",
                          "Leave them out (a text dataset's test split comes from --data).")


def _check_text_teacher_options(options) -> None:
    if options.teacher_views and options.kd_loss == "hidden":
        raise ConfigError("--kd-loss hidden with --teacher-views is not supported yet: the teacher's hidden states are cached "
                          "for the training texts as they are, not for their word-dropout views.",
                          "Use --kd-loss logit with --teacher-views, or --kd-loss hidden without it.")
    if options.nproc > 1:
        raise ConfigError("--nproc > 1 is not supported for text builds yet.", "Use --nproc 1.")
    if options.unlabelled and options.kd_loss == "hidden":
        raise ConfigError("--kd-loss hidden with --unlabelled is not supported yet: the teacher's hidden states are cached for the "
                          "labelled training texts only.", "Use --kd-loss logit with --unlabelled.")
    if options.teacher not in ("auto", "minilm") and not options.teacher.startswith("hf:"):
        raise ConfigError(f"--teacher {options.teacher!r} is not a text teacher.",
                          "Use --teacher minilm (all-MiniLM-L6-v2, fine-tuned), hf:DIR (a local Hugging Face model) or auto.")
    if options.teacher_input != "auto":
        raise ConfigError("--teacher-input describes an image teacher's pixels; a text teacher reads its own tokenizer's ids.",
                          "Leave --teacher-input out for text builds.")


TASK = TextTask()
