"""In-memory objects given to ``edge_distill.build`` → files in the run directory, named by their content.

The stages key everything by content (``stages/data.py`` fingerprints a user's data file, the teacher stage hashes its
file), so the API only has to turn each object into the file a CLI user would have given, under
``runs/<name>/inputs/``: ``(x, y)`` arrays or a torch ``Dataset`` → an ``.npz``, a teacher ``nn.Module`` → a TorchScript
archive.  The file's name carries a hash of the object's content (array bytes; a module's weights and code), and an
existing file of that name is kept as it is: ``torch.jit.save`` of a traced module differs between traces (TorchScript
mangles class names per process), so writing the same content again could give other bytes, a new fingerprint, and a
rerun that redoes every stage.  Arrays are written with fixed zip timestamps for the same reason.

Every object is checked before anything is written, with the same ``DataError`` / ``TeacherError`` a bad file gets.
"""

from __future__ import annotations

import hashlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DataError, EdgeDistillError, TeacherError

if TYPE_CHECKING:
    from torch import nn

    from ..rundir import RunDir

INPUTS = "inputs"  # the run directory's folder for materialised objects
_ARRAYS_HINT = ("Give (x, y) numpy arrays -- x images as (N, H, W), (N, C, H, W) or (N, H, W, C) with C = 1 or 3, uint8 (0..255) "
                "or float; y one integer label 0..K-1 per image -- a torch Dataset of (image, label) pairs, or a path.")


@dataclass(frozen=True)
class Arrays:
    """Images and (for labelled data) labels, as numpy arrays, checked enough to be written."""

    x: np.ndarray
    y: np.ndarray | None


def is_path(value: Any) -> bool:
    return isinstance(value, (str, Path))


def to_arrays(value: Any, what: str, labelled: bool) -> Arrays:
    """``(x, y)``, ``x`` (unlabelled only) or a torch ``Dataset`` → checked numpy arrays.  ``what`` names the argument."""
    if _is_dataset(value):
        x, y = _dataset_arrays(value, what, labelled)
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        x, y = (_as_array(v, what, name) for v, name in zip(value, ("x", "y")))
    elif _is_array(value) and not labelled:
        x, y = _as_array(value, what, "x"), None
    else:
        shown = type(value).__name__ if not isinstance(value, (tuple, list)) else f"a {type(value).__name__} of {len(value)}"
        raise DataError(f"{what} is {shown}; expected a path, {'an (x, y) pair of arrays' if labelled else 'x, or (x, y) arrays'} "
                        "or a torch Dataset.", _ARRAYS_HINT)
    _check(x, y, what)
    return Arrays(x, y)


def _is_tensor(value: Any) -> bool:
    import torch

    return isinstance(value, torch.Tensor)


def _is_array(value: Any) -> bool:
    return isinstance(value, np.ndarray) or _is_tensor(value)


def _as_array(value: Any, what: str, name: str) -> np.ndarray:
    if _is_tensor(value):
        value = value.detach().cpu().numpy()
    if not isinstance(value, np.ndarray):
        raise DataError(f"{what}: {name} is {type(value).__name__}; expected a numpy array.", _ARRAYS_HINT)
    return value


def _is_dataset(value: Any) -> bool:
    from torch.utils.data import Dataset

    return isinstance(value, Dataset)


def _dataset_arrays(dataset, what: str, labelled: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Every item of a map-style Dataset: ``(image, label)`` (or an image alone, for unlabelled data)."""
    try:
        n = len(dataset)
    except TypeError:
        raise DataError(f"{what} is an iterable-style torch Dataset without len().", "Give a map-style Dataset (with __len__ and "
                        "__getitem__), or the arrays themselves.") from None
    if n == 0:
        raise DataError(f"{what} is an empty Dataset.", "Give at least a few dozen images per class.")
    xs, ys = [], []
    for i in range(n):
        item = dataset[i]
        pair = isinstance(item, (tuple, list))
        if labelled and not (pair and len(item) >= 2):
            raise DataError(f"{what}[{i}] is {type(item).__name__}; a labelled Dataset yields (image, label) pairs.", _ARRAYS_HINT)
        x = item[0] if pair else item
        xs.append(np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x))
        if pair and len(item) >= 2:
            label = item[1]
            ys.append(int(label.item() if hasattr(label, "item") else label))
    shapes = {a.shape for a in xs}
    if len(shapes) > 1:
        raise DataError(f"{what}: the Dataset's images have {len(shapes)} different shapes (e.g. {sorted(shapes)[:3]}).",
                        "Every image must have the same size; resize them in the Dataset's transform.")
    # Labels only where every item has one: a partly labelled transfer set counts as unlabelled.
    return np.stack(xs), (np.asarray(ys, np.int64) if len(ys) == n else None)


def _check(x: np.ndarray, y: np.ndarray | None, what: str) -> None:
    """What writing the arrays needs (the data stage checks the rest, as for a file): numbers, one label per image."""
    if x.dtype.kind not in "uif" or x.dtype == np.bool_:
        raise DataError(f"{what}: x has dtype {x.dtype}; expected numbers.", "Give images as uint8 (0..255) or float.")
    if y is None:
        return
    if y.ndim != 1 or y.dtype.kind not in "ui" and not (y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0)):
        raise DataError(f"{what}: y has shape {y.shape} and dtype {y.dtype}; expected one integer label per image.",
                        "Give y as a 1-D integer array of class indices 0..K-1.")
    if len(x) != len(y):
        raise DataError(f"{what} has {len(x)} images but {len(y)} labels.", "Give exactly one label per image.")


def arrays_key(arrays: Arrays) -> str:
    """The arrays' content: dtype, shape and bytes of each."""
    digest = hashlib.sha256()
    for a in (arrays.x, arrays.y):
        if a is not None:
            digest.update(f"{a.dtype.str}{a.shape}".encode())
            digest.update(np.ascontiguousarray(a).tobytes())
    return digest.hexdigest()[:16]


def write_arrays(run: RunDir, role: str, arrays: Arrays, what: str, train: str | None = None) -> str:
    """``inputs/<role>-<content hash>.npz``, written once and checked now by the data stage's own loader, so a bad object
    fails before any training, with the file's message naming the argument (``what``) instead of the file.  A test set
    is checked against the training data ``train`` when that is an .npz (reading a folder again would cost its decoding)."""
    from ..data.user import load_npz, load_test_data, load_user_data, to_nchw

    if role == "unlabelled":  # its other checks need the labelled data's spec: the build runs them before the teacher
        to_nchw(arrays.x, what)
    path = _content_file(run, role, arrays_key(arrays), ".npz")
    if not path.exists():
        with run.atomic_path(path) as tmp:
            _write_npz(tmp, {"x": arrays.x} if arrays.y is None else {"x": arrays.x, "y": arrays.y})
    if role == "unlabelled":
        return str(path)
    try:  # a test set is checked as --test-data is (no per-class minimum: it is not split)
        if role == "data":
            load_user_data(str(path))
        elif train is not None and train.endswith(".npz") and Path(train).is_file():
            load_test_data(str(path), load_npz(Path(train)))
        else:
            load_npz(path)
    except DataError as exc:
        path.unlink()  # not a file to keep: the next call checks the objects afresh
        raise DataError(exc.message.replace(f"Dataset file {path}", what).replace(f"Dataset {path}", what).replace(str(path), what),
                        exc.hint) from None
    return str(path)


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An .npz that ``np.load`` reads, with fixed zip timestamps (``np.savez`` stamps the time): the same arrays give the
    same bytes, so the data stage's content fingerprint stays the same even when inputs/ was deleted and rewritten."""
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, a in arrays.items():
            with zf.open(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.ascontiguousarray(a), allow_pickle=False)


def _content_file(run: RunDir, role: str, key: str, suffix: str) -> Path:
    """The file for this content; older files of the same role (objects since changed) are removed."""
    path = run.path(f"{INPUTS}/{role}-{key}{suffix}")
    for stale in path.parent.glob(f"{role}-*{suffix}"):
        if stale != path:
            stale.unlink()
    return path


def raw_data(data: str, options: dict[str, Any]):
    """The data as the data stage reads it (``RawDataset``; an image folder at ``image_size`` / ``channels``): a sample of
    it is what a module is checked and traced on."""
    from ..data.builtin import DATASETS
    from ..data.user import is_user_data, load_user_data
    from ..options import BuildOptions

    if not is_user_data(data):
        return DATASETS.get(data)()
    size = BuildOptions(image_size=options.get("image_size"), quiet=True).image_hw()
    channels = options.get("channels", "auto")
    return load_user_data(data, size, None if channels == "auto" else int(channels), options.get("skip_bad_images", False))


def normalized_sample(raw, n: int = 4):
    """``n`` images normalized as the build normalizes them (statistics of all of them, close to the training split's)."""
    import torch

    scaled = raw.images / np.float32(raw.pixel_scale)
    x = (scaled[:n] - scaled.mean()) / max(float(scaled.std()), 1e-6)
    return torch.from_numpy(np.ascontiguousarray(x, np.float32)), float(scaled.mean()), max(float(scaled.std()), 1e-6)


def teacher_sample(raw, input_contract: str):
    """What a teacher with this ``--teacher-input`` contract reads of a normalized batch (its scaling, layout, size)."""
    from torch import nn

    from ..models.teacher import InputAdapter
    from ..models.teacher_input import TeacherInput, parse_teacher_input

    x, mean, std = normalized_sample(raw)
    contract = TeacherInput() if input_contract == "auto" else parse_teacher_input(input_contract)
    return InputAdapter(nn.Identity(), contract, raw.pixel_scale, mean, std)(x)


# ---- modules -------------------------------------------------------------------------------------------------


def module_key(module: nn.Module) -> str:
    """A module's content: every parameter and buffer (name, dtype, shape, bytes), its structure (``repr``) and the source
    of each of its classes' ``forward`` (TorchScript: its compiled code), so new weights or new code give a new key."""
    import torch

    digest = hashlib.sha256(repr(module).encode())
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}{t.dtype}{tuple(t.shape)}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    for sub in module.modules():
        digest.update(_code_of(sub).encode())
    return digest.hexdigest()[:16]


def _code_of(module: nn.Module) -> str:
    code = getattr(module, "code", None)  # a ScriptModule's compiled forward
    if isinstance(code, str):
        return code
    try:
        return inspect.getsource(type(module))
    except (OSError, TypeError):  # a class defined at a prompt: its name and qualified path at least
        return f"{type(module).__module__}.{type(module).__qualname__}"


def check_module(module: Any, sample, num_classes: int, what: str, hint: str, error: type[EdgeDistillError] = TeacherError) -> None:
    """``module`` maps ``sample`` (a batch the way it will read the data) to ``(batch, num_classes)`` logits; else ``error``."""
    import torch
    from torch import nn

    if not isinstance(module, nn.Module):
        raise error(f"{what} is {type(module).__name__}; expected a torch nn.Module.", hint)
    shape = ", ".join(map(str, sample.shape))
    try:
        with torch.no_grad():
            out = _in_eval(module, lambda: module(sample))
    except Exception as exc:  # whatever the user's forward raises, said in one line
        raise error(f"{what} fails on a batch of the data of shape ({shape}): {type(exc).__name__}: {exc}".split("\n")[0],
                    hint) from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (len(sample), num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise error(f"{what} returns {got} for a batch of {len(sample)} of shape ({shape}); expected logits of shape "
                    f"({len(sample)}, {num_classes}).", f"The data has {num_classes} classes: the model must return one logit per class.")


def _in_eval(module: nn.Module, call):
    """Run ``call`` with ``module`` in eval mode (BatchNorm statistics, no dropout), then put its mode back."""
    was_training = module.training
    module.eval()
    try:
        return call()
    finally:
        module.train(was_training)


def write_teacher(run: RunDir, module: nn.Module, sample, num_classes: int, input_contract: str) -> str:
    """A teacher ``nn.Module`` → ``inputs/teacher-<content hash>.pt`` (TorchScript: scripted, else traced on ``sample``)."""
    import torch

    hint = (f"The teacher must take a float32 batch shaped like ({', '.join(map(str, sample.shape[1:]))}) after its input contract "
            f"teacher_input={input_contract!r} and return one logit per class; say what it was trained on with teacher_input= "
            "(the values of --teacher-input, e.g. 'unit' or 'unit,nhwc').")
    check_module(module, sample, num_classes, "The teacher module", hint)
    path = _content_file(run, "teacher", module_key(module), ".pt")
    if path.exists():
        return str(path)
    scripted = _in_eval(module, lambda: _to_torchscript(module, sample))
    with run.atomic_path(path) as tmp:
        torch.jit.save(scripted, str(tmp))
    return str(path)


def _to_torchscript(module: nn.Module, sample):
    """``torch.jit.script`` keeps its control flow; a module it cannot compile is traced on the sample instead."""
    import torch

    if isinstance(module, torch.jit.ScriptModule):
        return module
    try:
        return torch.jit.script(module)
    except Exception:  # TorchScript's compiler refuses much ordinary Python; tracing records what this input runs
        pass
    try:
        with torch.no_grad():
            return torch.jit.trace(module, sample, check_trace=False)
    except Exception as exc:
        raise TeacherError(f"The teacher module can be neither scripted nor traced: {exc}".split("\n")[0],
                           "Save it yourself with torch.jit.save(torch.jit.script(model), 'teacher.pt') or torch.export, "
                           "and pass that path as teacher=.") from None
