"""Image classification: NCHW float inputs for torch and ONNX, NHWC for the .tflite file and the device."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..bundle import BundleInput, pin, template
from ..errors import ConfigError
from ..stages.data import content_key, load_splits, write_npz, write_splits
from ..stages.transfer import TRANSFER_REVISION
from . import Task
from .vision_teacher import VisionTeacherSettings, check_teacher_against_baseline, load_vision_teacher, make_vision_teacher, teacher_file


@dataclass(frozen=True)
class VisionDataSettings:
    data: str
    seed: int
    calib_count: int
    image_size: tuple[int, int] | None  # (height, width); None: the folder's median
    channels: str  # auto, 1 or 3
    skip_bad_images: bool
    test_data: str | None
    # How the split file holds photos (data/pixels.py): a new format re-prepares old run directories' data.
    storage: str = "uint8-pixels"


@dataclass(frozen=True)
class VisionUnlabelledSettings:
    unlabelled: str
    skip_bad_images: bool
    revision: int = TRANSFER_REVISION


class VisionTask(Task):
    name = "vision"
    default_student = "auto"  # sizing.choose_student: every image family at >= 96 px (models/students.auto_families), cnn below
    device_test_npz = "bench/test_nhwc.npz"
    takes_modules = True  # the data's images, normalized, are the batch a module is checked and traced on

    def check_options(self, options) -> None:
        if options.word_dropout:
            raise ConfigError("--word-dropout drops words of training texts; this build is vision.",
                              "Leave it out; image views come from --augment-shift / --augment-flip.")

    # ---- data
    def data_settings(self, options) -> VisionDataSettings:
        return VisionDataSettings(options.data, options.seed, options.calib_count, options.image_hw() or declared_teacher_size(options),
                                  options.channels, options.skip_bad_images, options.test_data)

    def data_inputs(self, options) -> list[str]:
        return [content_key(options.data), *([content_key(options.test_data)] if options.test_data else [])]

    def prepare_data(self, run, settings: VisionDataSettings):
        from ..data import DataResult, prepare

        spec, splits = prepare(settings.data, settings.seed, settings.calib_count, image_size=settings.image_size,
                               channels=None if settings.channels == "auto" else int(settings.channels),
                               skip_bad_images=settings.skip_bad_images, test_data=settings.test_data)
        path = write_splits(run, splits)
        result = DataResult(spec, run.relative(path), len(splits.y_train), len(splits.y_val), len(splits.y_test), len(splits.y_calib))
        return result, [path]

    def input_contract(self, spec):
        """Pixels p in [0, pixel_scale] normalized as ((p / scale) - mean) / std with the training split's statistics,
        so normalized training data has mean 0 and std 1."""
        from ..convert import InputContract

        return InputContract(
            dtype="float32", low=(0.0 - spec.mean) / spec.std, high=(1.0 - spec.mean) / spec.std, mean=0.0, std=1.0,
            num_classes=spec.num_classes,
            source=f"pixels in [0, {spec.pixel_scale:g}] normalized as ((p / {spec.pixel_scale:g}) - {spec.mean:.4g}) / {spec.std:.4g}, "
            "statistics of the training split",
        )

    # ---- teacher
    def teacher_settings(self, options, world_size: int) -> VisionTeacherSettings:
        return VisionTeacherSettings.from_options(options, world_size)

    def teacher_inputs(self, options) -> list[str]:
        from ..rundir import sha256_file

        return [] if options.teacher == "auto" else [sha256_file(teacher_file(options.teacher))]

    def make_teacher(self, run, settings: VisionTeacherSettings, data):
        return make_vision_teacher(run, settings, data)

    def load_teacher(self, run, teacher, data):
        return load_vision_teacher(run, teacher, data.spec)

    def check_teacher(self, teacher, baseline_val_accuracy: float, data) -> None:
        check_teacher_against_baseline(teacher, baseline_val_accuracy, data)

    # ---- a transfer set
    def unlabelled_settings(self, options) -> VisionUnlabelledSettings:
        return VisionUnlabelledSettings(options.unlabelled, options.skip_bad_images)

    def check_unlabelled(self, options, data) -> None:
        from ..data.unlabelled import check_unlabelled_images

        if options.unlabelled is not None:
            check_unlabelled_images(options.unlabelled, data.spec)

    def prepare_unlabelled(self, run, settings: VisionUnlabelledSettings, data, teacher):
        """Brought to the labelled data's size, channels and pixel scale, normalized with its training split's statistics;
        the teacher reads the same normalized images (a teacher file's input contract applies on top, as for the splits)."""
        from ..data.overlap import same_images
        from ..data.unlabelled import load_unlabelled_images
        from ..stages.transfer import TransferSet

        images = load_unlabelled_images(settings.unlabelled, data.spec, settings.skip_bad_images)
        splits = load_splits(run, data)
        overlap = {s: same_images(images.x, getattr(splits, f"x_{s}")) for s in ("train", "val", "test")}
        return TransferSet(images.x, images.x, images.y, images.source, overlap)

    # ---- students
    def view_bank(self, run, settings, teacher, data, sizing, splits, cfg, loss):
        """A bank of fixed augmented views with the teacher's outputs on each replaces the online teacher; the no-KD
        baseline trains on the same views, so the comparison isolates the teacher's signal."""
        import hashlib

        import numpy as np

        from ..distill import LOSSES, TrainConfig
        from ..distill.views import bank_workers, build_view_bank
        from ..rundir import hash_inputs
        from ..stages.data import write_npy

        with_maps = LOSSES.get(loss).needs_features
        # The views are redrawn from their seed for every student; the teacher's logits on them are kept in the run
        # directory, keyed by the teacher's training-split logits (teacher and data) and how the views are drawn, so
        # the no-KD, KD and from-scratch students of one build run the teacher once.
        teacher_answers = hashlib.sha256(run.path(teacher.logits_path).read_bytes()).hexdigest()
        key = hash_inputs(teacher_answers, settings.views.views, cfg.augment_shift, cfg.augment_flip, cfg.background, settings.seed,
                          list(splits.x_train.shape))
        cached = run.path(f"distill/view_logits_{key}.npy")
        logits = np.load(cached) if cached.exists() and not with_maps else None
        bank = build_view_bank(self.load_teacher(run, teacher, data), splits.x_train, settings.views.views, cfg.augment_shift,
                               cfg.augment_flip, cfg.background, settings.seed, with_maps=with_maps, workers=bank_workers(), logits=logits)
        if logits is None and not with_maps:
            write_npy(run, cached.relative_to(run.root).as_posix(), bank.logits)
        return bank, TrainConfig(epochs=cfg.epochs, seed=cfg.seed)  # the views hold the augmentation

    # ---- after training
    def export_for_device(self, run, data, sizing, teacher) -> list[Path]:
        """The teacher goes to ONNX too, so it can be benchmarked in the same kind of separate process."""
        from ..convert import export_onnx

        export_onnx(self.load_teacher(run, teacher, data), data.spec.input_shape, run.path("teacher/teacher.onnx"))
        return [run.path("teacher/teacher.onnx")]

    def bench_targets(self, run, data, sizing, teacher, conversion):
        import numpy as np

        splits = load_splits(run, data)
        splits_y = splits.y_test
        # The agent reads test data already in each model's input layout: NCHW for ONNX, NHWC for TFLite.
        x_test = np.asarray(splits.x_test)  # normalized float32 (uint8 photos normalized once, here), as the agent reads it
        del splits
        write_npz(run, "bench/test_nchw.npz", x=x_test, y=splits_y)
        write_npz(run, self.device_test_npz, x=x_test.transpose(0, 2, 3, 1), y=splits_y)
        targets = [("teacher (ONNX Runtime fp32)", run.path("teacher/teacher.onnx"), "bench/test_nchw.npz")]
        # ONNX Runtime's INT8 is the peer a user would pick instead: timed by the same agent, on this host (NCHW).
        return targets + [(f"student {f.variant}", run.path(f.path), self.device_test_npz if f.variant.startswith("tflite") else "bench/test_nchw.npz")
                          for f in conversion.files if f.variant.startswith("tflite") or f.variant == "onnx_int8_qdq"]

    def bundle_input(self, run, data):
        shape = tuple(data.spec.input_shape)
        # Images are (C, H, W) for torch and NHWC in the .tflite file; other inputs keep their shape.
        return ((1, shape[1], shape[2], shape[0]) if len(shape) == 3 else (1, *shape)), (), IMAGE_INPUT


class ImageInput(BundleInput):
    """Raw pixels normalized with the training split's statistics; image files prepared by imageprep.py."""

    title = "Image"
    readmes = {"raspberry-pi": "README.raspberry-pi.md", "android": "README.android.md"}

    def check(self, facts) -> None:
        if len(facts.input_shape_nhwc) != 4:
            raise ConfigError(f"Bundle input shape {facts.input_shape_nhwc} is not NHWC.", "Image models take (1, H, W, C).")

    def android_tensor(self, facts, q):
        from ..tflite_metadata import TensorInfo

        _, h, w, c = facts.input_shape_nhwc
        color = "GRAYSCALE" if c == 1 else "RGB"
        # Training normalized p/pixel_scale with mean/std; in raw pixel units that is (p - mean·s) / (std·s).
        mean, std = facts.mean * facts.pixel_scale, facts.std * facts.pixel_scale
        lo, hi = (0.0 - mean) / std, (facts.pixel_scale - mean) / std
        return TensorInfo(
            "image",
            f"{color.lower()} image, {w}x{h}, raw pixel values 0..{facts.pixel_scale:g}, NHWC. Normalize as "
            f"(p - {mean:.6g}) / {std:.6g}, then quantize to {q['dtype']} with scale {q['scale']:.6g} and "
            f"zero point {q['zero_point']}.",
            image=(color, w, h), mean=(mean,), std=(std,), value_range=(lo, hi))

    def preprocess(self, facts, q_in, q_out):
        """preprocess.json, and imageprep.py: infer.py photo.jpg prepares image files the way the build did."""
        from ..export import imageprep

        _, h, w, c = facts.input_shape_nhwc
        preprocess = {
            "task": "image-classification",
            "input": dict(q_in, layout="NHWC"),
            "output": dict(q_out, meaning="class logits; index i is line i of labels.txt"),
            "normalization": {"pixel_scale": facts.pixel_scale, "mean": facts.mean, "std": facts.std,
                              "formula": "x = ((p / pixel_scale) - mean) / std, in float32"},
            "raw_pixel_range": [0, facts.pixel_scale],
            "image_files": dict(
                imageprep.describe((h, w), c, facts.resize or imageprep.RESIZE_POLICY),
                to_raw_pixels=f"p = v * {facts.pixel_scale:g} / 255 (v itself when pixel_scale is 255), then the normalization above",
                trained_on="image files prepared this way" if facts.resize else "arrays of this size (image files are prepared this way)"),
        }
        return preprocess, {"imageprep.py": template("imageprep.py").encode()}

    def template_values(self, facts):
        return {
            "IMAGE_SIZE": f"{facts.input_shape_nhwc[2]}x{facts.input_shape_nhwc[1]}",
            "IMAGE_MODE": "grey" if facts.input_shape_nhwc[-1] == 1 else "RGB",
            # Image bundles read photos with imageprep.py: the Pillow the build prepared its own image files with
            # (JPEG decoding and resampling may differ by a grey level between Pillow versions).
            "IMAGE_REQUIREMENTS": f"# infer.py photo.jpg: imageprep.py decodes and resizes image files with Pillow.\n{pin('pillow')}\n",
        }


IMAGE_INPUT = ImageInput()


TASK = VisionTask()


def declared_teacher_size(options) -> tuple[int, int] | None:
    """Without --image-size, an image folder is prepared at the size the teacher file says it was trained at
    (``--teacher-input ...,size=``, else its archive's metadata, else a torch.export program's fixed input shape), not at
    the folder's median cut to 64 px."""
    from ..models.teacher_input import contract_from_metadata, exported_input_size, parse_teacher_input

    if options.teacher == "auto" or not Path(options.data).is_dir():
        return None
    contract = parse_teacher_input(options.teacher_input) if options.teacher_input != "auto" else contract_from_metadata(Path(options.teacher))
    if contract is not None and contract.size:
        return tuple(contract.size)
    return exported_input_size(Path(options.teacher)) if Path(options.teacher).is_file() else None
