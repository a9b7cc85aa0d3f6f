"""What input a user's teacher file expects, and the adapter that gives it exactly that.

Every model in a build reads the build's own input: NCHW float32 pixels normalized with the training split's
statistics, ``x = (p / pixel_scale - mean) / std``.  A teacher trained elsewhere was trained on *its* preprocessing
— often [0, 1] pixels, ImageNet's per-channel mean/std, or NHWC — and fed the build's input it scores far below
itself without any error.  So a teacher file states its input contract (``--teacher-input``, or an
``edge_distill.json`` inside the TorchScript / torch.export archive), and ``InputAdapter`` converts the build's
input to it inside the model (``models/teacher.py``): logits caching, online KD, the ledger and the teacher's ONNX file all see the
teacher as it was trained.

The contract's text form (the flag's value and the metadata's ``"input"`` field), items separated by commas:
    normalized            the build's own normalization (the default)
    unit                  pixels scaled to [0, 1]                 (p / pixel_scale)
    raw                   raw pixel values                         (p, e.g. 0..255)
    mean=M,std=S          (p / pixel_scale - M) / S; M and S one value, or one per channel joined by '/'
                          (ImageNet: mean=0.485/0.456/0.406,std=0.229/0.224/0.225)
    nchw | nhwc           the layout the teacher takes (default nchw); e.g. ``unit,nhwc``
    size=N | size=WxH     the image size the teacher was trained at (width x height); the adapter resizes the build's
                          images to it (bilinear), and without --image-size an image folder is prepared at it
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, TeacherError

METADATA_FILE = "edge_distill.json"  # torch.jit.save(..., _extra_files={...}) / torch.export.save(..., extra_files={...})
SCALES = ("normalized", "unit", "raw", "custom")
LAYOUTS = ("nchw", "nhwc")
_SYNTAX = ("normalized | unit | raw | mean=M,std=S (per channel: mean=0.485/0.456/0.406,std=0.229/0.224/0.225), "
           "optionally followed by ,nhwc or ,nchw and ,size=N or ,size=WxH (the size it was trained at)")


@dataclass(frozen=True)
class TeacherInput:
    scale: str = "normalized"
    mean: tuple[float, ...] = ()  # only for scale "custom", on the [0, 1] pixel scale
    std: tuple[float, ...] = ()
    layout: str = "nchw"
    size: tuple[int, int] = ()  # (height, width) the teacher was trained at; () = the build's image size

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ConfigError(f"Teacher input scale {self.scale!r} is not one of {', '.join(SCALES)}.", f"Use {_SYNTAX}.")
        if self.layout not in LAYOUTS:
            raise ConfigError(f"Teacher input layout {self.layout!r} is not nchw or nhwc.", f"Use {_SYNTAX}.")
        if (self.scale == "custom") != bool(self.mean and self.std):
            raise ConfigError("A custom teacher input needs both mean= and std= (and only it takes them).", f"Use {_SYNTAX}.")
        if any(s <= 0 for s in self.std):
            raise ConfigError(f"Teacher input std {self.std} must be > 0.", "std divides the pixels; e.g. std=0.229/0.224/0.225.")
        if self.size and (len(self.size) != 2 or min(self.size) < 1):
            raise ConfigError(f"Teacher input size {self.size} must be (height, width) in pixels.", f"Use {_SYNTAX}.")

    def text(self) -> str:
        """The canonical text form, which ``parse_teacher_input`` reads back."""
        if self.scale == "custom":
            scale = f"mean={'/'.join(f'{v:g}' for v in self.mean)},std={'/'.join(f'{v:g}' for v in self.std)}"
        else:
            scale = self.scale
        text = scale if self.layout == "nchw" else f"{scale},{self.layout}"
        return text + (f",size={self.size[1]}x{self.size[0]}" if self.size else "")

    def describe(self, pixel_scale: float) -> str:
        what = {
            "normalized": "the build's normalization",
            "unit": f"pixels in [0, 1] (p / {pixel_scale:g})",
            "raw": f"raw pixels (0..{pixel_scale:g})",
            "custom": f"(p / {pixel_scale:g} - mean) / std with mean {'/'.join(f'{v:g}' for v in self.mean)}, "
                      f"std {'/'.join(f'{v:g}' for v in self.std)}",
        }[self.scale]
        at = f", resized to {self.size[1]}x{self.size[0]}" if self.size else ""
        return f"{what}, {self.layout.upper()}{at}"


def parse_teacher_input(text: str) -> TeacherInput:
    """``unit,nhwc`` → TeacherInput; a malformed value is a ConfigError that shows the syntax."""
    scale, mean, std, layout, size = "", (), (), "nchw", ()
    for item in (part.strip().lower() for part in str(text).split(",") if part.strip()):
        if item in LAYOUTS:
            layout = item
        elif item.startswith("size="):
            size = _size(item[5:], text)
        elif item in ("normalized", "unit", "raw"):
            scale = _once(scale, item, text)
        elif item.startswith(("mean=", "std=")):
            key, _, values = item.partition("=")
            try:
                numbers = tuple(float(v) for v in values.split("/"))
            except ValueError:
                raise ConfigError(f"--teacher-input {text!r}: {key}= must be numbers joined by '/', got {values!r}.", f"Use {_SYNTAX}.") from None
            if key == "mean":
                mean = numbers
            else:
                std = numbers
            scale = "custom"
        else:
            raise ConfigError(f"--teacher-input {text!r}: {item!r} is not understood.", f"Use {_SYNTAX}.")
    return TeacherInput(scale or "normalized", mean, std, layout, size)


def _size(value: str, text: str) -> tuple[int, int]:
    """``128`` or ``160x128`` (width x height, as --image-size) → (height, width)."""
    from ..export.imageprep import parse_size

    try:
        return parse_size(value)
    except ValueError:
        raise ConfigError(f"--teacher-input {text!r}: size={value} is not N or WxH in pixels.",
                          "E.g. size=128 (128x128) or size=160x128 (160 wide, 128 high): the size the teacher was trained at.") from None


def _once(current: str, new: str, text: str) -> str:
    if current:
        raise ConfigError(f"--teacher-input {text!r} names two scalings ({current} and {new}).", f"Use {_SYNTAX}.")
    return new


def contract_from_metadata(path: Path) -> TeacherInput | None:
    """The contract stored in a TorchScript / torch.export archive's ``extra/edge_distill.json``, if any."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.endswith(f"/extra/{METADATA_FILE}")]
            if not names:
                return None
            raw = zf.read(names[0])
    except (OSError, zipfile.BadZipFile):
        return None  # not an archive: the loader reports that with its own message
    try:
        meta = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TeacherError(f"Teacher file {path}: its {METADATA_FILE} is not valid JSON ({exc}).",
                           f'Store e.g. {{"input": "unit"}} ({_SYNTAX}).') from None
    if "input" not in meta:
        return None
    try:
        return parse_teacher_input(meta["input"])
    except ConfigError as exc:
        raise TeacherError(f"Teacher file {path}: {METADATA_FILE} says input {meta['input']!r}, which is not understood.",
                           exc.hint) from None


def exported_input_size(path: Path) -> tuple[int, int] | None:
    """(height, width) of a ``torch.export`` program's image input when it was exported with a fixed size; None for a
    TorchScript file (its saved graph keeps no shapes), a dynamic side, or a file that does not load (the teacher
    stage reports that with its own message)."""
    if not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as zf:
        if not any(n.endswith(".json") and "exported_program" in n or n.endswith("models/model.json") for n in zf.namelist()):
            return None  # TorchScript: no exported program inside
    try:
        import torch

        program = torch.export.load(str(path))
    except Exception:
        return None
    from torch.export.graph_signature import InputKind

    user = {spec.arg.name for spec in program.graph_signature.input_specs if spec.kind == InputKind.USER_INPUT}
    shapes = [node.meta["val"].shape for node in program.graph.nodes if node.op == "placeholder" and node.name in user and "val" in node.meta]
    if len(shapes) != 1 or len(shapes[0]) != 4:
        return None
    h, w = shapes[0][2], shapes[0][3]  # NCHW, as the adapter feeds it (an NHWC teacher declares its size in its contract)
    return (h, w) if isinstance(h, int) and isinstance(w, int) else None


def candidate_contracts(channels: int) -> list[TeacherInput]:
    """The scalings a mis-declared teacher most often expects, in both layouts; ImageNet's statistics for RGB."""
    scales = [TeacherInput("normalized"), TeacherInput("unit"), TeacherInput("raw")]
    if channels == 3:
        scales.append(TeacherInput("custom", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
    return [TeacherInput(s.scale, s.mean, s.std, layout) for layout in LAYOUTS for s in scales]


# The sizes image teachers are most often trained at (ImageNet fine-tuning at 96-224 px).
TRAINING_SIDES = (96, 128, 160, 224)


def size_candidates(contract: TeacherInput, build_hw: tuple[int, int]) -> list[TeacherInput]:
    """``contract`` at the usual training sizes other than the build's, when it does not state a size itself: a teacher
    fine-tuned at 128 px and fed 64-px images scores far below itself with no error, like a wrong scaling."""
    if contract.size:
        return []
    return [TeacherInput(contract.scale, contract.mean, contract.std, contract.layout, (side, side))
            for side in TRAINING_SIDES if (side, side) != tuple(build_hw)]


@dataclass(frozen=True)
class InputCandidate:
    """A teacher file's validation accuracy when fed one input scaling (``None`` when it could not run on it)."""

    contract: str
    description: str
    val_accuracy: float | None
    error: str = ""


# An undeclared teacher is taken to read the build's normalization unless another usual scaling beats that by more
# than this (2 points: beyond the noise of a few hundred validation samples, far below what a wrong scaling costs —
# 39 points for a [0, 1] digits teacher fed normalized pixels).
UNDECLARED_MARGIN = 0.02
# A teacher this close to always answering the most frequent class has learnt nothing usable from this input.
FLOOR_MARGIN = 0.05


def vet_teacher_input(scored: tuple[InputCandidate, ...], source: str, majority_share: float, origin: str) -> None:
    """Stop a build whose teacher file reads the wrong input.  ``scored[0]`` is the contract in use.

    Raises when the images resized to another size do clearly better (a teacher trained at another size, whatever its
    contract's scaling), when the contract was not declared (``source == "default"``) and another scaling does clearly
    better, or when the teacher is at the trivial floor under the contract in use; the error lists every input tried.
    """
    used = scored[0]
    runnable = [c for c in scored if c.val_accuracy is not None]
    best = max(runnable, key=lambda c: c.val_accuracy) if runnable else used
    table = format_candidates(scored)
    resized = best is not used and best.contract.startswith(used.contract + ",size=")
    if resized and used.val_accuracy is not None and best.val_accuracy - used.val_accuracy > UNDECLARED_MARGIN:
        size = best.contract.rpartition("size=")[2]
        raise TeacherError(
            f"Teacher {origin} scores {_pct(used.val_accuracy)} on the validation split at the build's image size, but "
            f"{_pct(best.val_accuracy)} with the images resized to {size}: it was trained at another size.\n{table}",
            f"Pass --teacher-input {best.contract} (and leave --image-size out, so the images are prepared at {size}), or store "
            f'{{"input": "{best.contract}"}} as {METADATA_FILE} in the archive.',
        )
    if source == "default" and best is not used and best.val_accuracy - used.val_accuracy > UNDECLARED_MARGIN:
        raise TeacherError(
            f"Teacher {origin} scores {_pct(used.val_accuracy)} on the validation split when fed {used.description}, but "
            f"{_pct(best.val_accuracy)} with {best.description}: it was trained on another input, and distilling it as it "
            f"is would copy its mistakes into the student.\n{table}",
            f"Pass --teacher-input {best.contract} (the scaling it scores best with), or store "
            f'{{"input": "{best.contract}"}} as {METADATA_FILE} in the archive; --teacher-input normalized insists on the '
            "build's own input.",
        )
    if used.val_accuracy is not None and used.val_accuracy <= majority_share + FLOOR_MARGIN:
        better = f" Pass --teacher-input {best.contract} ({_pct(best.val_accuracy)})." if best is not used and best.val_accuracy > used.val_accuracy else ""
        raise TeacherError(
            f"Teacher {origin} scores {_pct(used.val_accuracy)} on the validation split fed {used.description} ({source}): "
            f"no better than always answering the most frequent class ({_pct(majority_share)}).\n{table}",
            "Check that the teacher was trained on these classes, in this order, and on this input; --teacher-input "
            f"states its input ({_SYNTAX}).{better}",
        )


def weak_teacher_error(teacher_val: float, baseline_val: float, n_val: int, origin: str, contract: str,
                       candidates: tuple[InputCandidate, ...]) -> TeacherError:
    """The error for a teacher file that scores below the student trained without it."""
    table = ("\n" + format_candidates(candidates)) if candidates else ""
    return TeacherError(
        f"Teacher {origin} scores {_pct(teacher_val)} on the {n_val} validation samples, below the no-KD student trained "
        f"on hard labels alone ({_pct(baseline_val)}): distilling it would make the student worse.{table}",
        f"Check the teacher's input contract (now {contract or 'normalized'}; --teacher-input {_SYNTAX}), its class order, "
        "or use --teacher auto.",
    )


def format_candidates(scored: tuple[InputCandidate, ...]) -> str:
    lines = [f"  {'input given to the teacher':<64} {'val acc':>8}"]
    for i, c in enumerate(scored):
        acc = f"{c.val_accuracy:.4f}" if c.val_accuracy is not None else "fails"
        mark = "  <- used" if i == 0 else ""
        lines.append(f"  {(c.contract + ': ' + c.description)[:64]:<64} {acc:>8}{mark}")
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"
