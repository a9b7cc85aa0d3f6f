"""Device profiles: what a target can hold and how fast it computes, each figure with its source.

A profile is a TOML file (built-ins live next to this module) parsed into a frozen ``DeviceProfile``.
Parsing is strict: an unknown key, a wrong type, a missing field or a non-positive budget raises a
``ProfileError`` that names the field and says what is allowed — a typo in a budget must never be
silently ignored, because the budget decides the student.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import ProfileError

ISAS = ("aarch64", "armv7", "x86_64")
PRECISIONS = ("int8", "fp16", "fp32")


@dataclass(frozen=True)
class CPU:
    isa: str
    core: str
    cores: int
    clock_ghz: float

    def __post_init__(self) -> None:
        _one_of("cpu.isa", self.isa, ISAS)
        _positive("cpu.cores", self.cores)
        _positive("cpu.clock_ghz", self.clock_ghz)


@dataclass(frozen=True)
class Budget:
    """Limits the student must respect on this device."""

    max_params: int  # parameter count
    model_bytes: int  # size of the deployed .tflite file
    arena_bytes: int  # peak live activations (the TFLite tensor arena)
    latency_ms: float  # target p50 single-image latency

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _positive(f"budget.{f.name}", getattr(self, f.name))


@dataclass(frozen=True)
class Overheads:
    """The cost terms besides the dense MAC rate.  A profile states them once for every precision, and may
    override them per precision (``[throughput.int8]`` / ``[throughput.fp32]``): on x86 hosts int8 kernels pay
    more per operator (requantisation) and int8 depthwise convolutions run far slower than fp32 ones, so one
    shared set of overheads over-estimates fp32 and under-estimates int8."""

    per_op_us: float  # fixed interpreter overhead per operator
    act_ns_per_elem: float  # time per activation element an operator writes (memory-bound work: pooling, large maps)
    # Optional refinements, fitted by `profiles measure` (0 = not modelled).  Depthwise convolutions do
    # few MACs per byte moved and run at a far lower MAC rate than dense ones; and every output position of
    # a convolution costs a fixed amount beyond its MACs (microkernel calls, indirection), which dominates
    # narrow convolutions on large maps.
    dw_gmacs: float = 0.0  # depthwise-convolution MAC rate; 0 = the dense rate
    ns_per_position: float = 0.0  # per output spatial position of every convolution

    def __post_init__(self) -> None:
        for name in ("per_op_us", "act_ns_per_elem", "dw_gmacs", "ns_per_position"):
            if getattr(self, name) < 0:
                raise ProfileError(f"throughput.{name} must be ≥ 0, got {getattr(self, name)}.", "Use 0 or a positive number.")


@dataclass(frozen=True)
class Throughput:
    """Effective end-to-end compute rates used by the latency estimate (giga multiply-accumulates per second)."""

    int8_gmacs: float
    fp32_gmacs: float
    per_op_us: float
    act_ns_per_elem: float
    source: str  # where the rates come from: a publication, a derivation, or a measurement
    dw_gmacs: float = 0.0
    ns_per_position: float = 0.0
    int8: Overheads | None = None  # per-precision overrides of the four terms above
    fp32: Overheads | None = None

    def __post_init__(self) -> None:
        _positive("throughput.int8_gmacs", self.int8_gmacs)
        _positive("throughput.fp32_gmacs", self.fp32_gmacs)
        self.shared_overheads()  # validates the shared terms

    def shared_overheads(self) -> Overheads:
        return Overheads(self.per_op_us, self.act_ns_per_elem, self.dw_gmacs, self.ns_per_position)

    def overheads(self, precision: str) -> Overheads:
        """The terms for ``precision`` (fp16 runs on the fp32 kernels here): its override, else the shared ones."""
        override = self.int8 if precision == "int8" else self.fp32
        return override or self.shared_overheads()


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    description: str
    ram_mb: int
    threads: int
    precision: str
    cpu: CPU
    budget: Budget
    throughput: Throughput

    def __post_init__(self) -> None:
        _positive("ram_mb", self.ram_mb)
        _positive("threads", self.threads)
        _one_of("precision", self.precision, PRECISIONS)
        if self.threads > self.cpu.cores:
            raise ProfileError(
                f"threads = {self.threads} exceeds cpu.cores = {self.cpu.cores}.",
                "Use at most one thread per core.",
            )

    def estimate_latency_ms(self, macs: int, n_ops: int, act_elems: int = 0, precision: str | None = None,
                            dw_macs: int = 0, conv_positions: int = 0) -> float:
        """Compute time at the profile's effective rates, plus per-operator dispatch, plus activation traffic.

        ``macs`` counts every MAC; ``dw_macs`` (a part of it) are the depthwise ones, timed at ``dw_gmacs``
        when the profile has that rate.
        """
        t = self.throughput
        precision = precision or self.precision
        rate = t.int8_gmacs if precision == "int8" else t.fp32_gmacs
        o = t.overheads(precision)
        dw_rate = o.dw_gmacs or rate
        compute_s = (macs - dw_macs) / (rate * 1e9) + dw_macs / (dw_rate * 1e9)
        return compute_s * 1e3 + n_ops * o.per_op_us / 1e3 + act_elems * o.act_ns_per_elem / 1e6 + conv_positions * o.ns_per_position / 1e6


def builtin_names() -> list[str]:
    folder = resources.files(__name__)
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_profile(name_or_path: str | Path) -> DeviceProfile:
    """A built-in profile by name, or a user's TOML file by path."""
    text, origin = _read(str(name_or_path))
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"Profile {origin} is not valid TOML: {exc}.", "Fix the syntax (see the built-in profiles for examples).") from None
    return parse_profile(raw, origin)


def parse_profile(raw: dict[str, Any], origin: str = "<dict>") -> DeviceProfile:
    try:
        return _build(DeviceProfile, raw, "")
    except ProfileError as exc:
        raise ProfileError(f"Profile {origin}: {exc.message}", exc.hint) from None


def _read(name_or_path: str) -> tuple[str, str]:
    if name_or_path in builtin_names():
        return (resources.files(__name__) / f"{name_or_path}.toml").read_text(), f"'{name_or_path}' (built-in)"
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        try:
            return path.read_text(), str(path)
        except OSError as exc:
            raise ProfileError(f"Cannot read profile file {path}: {exc.strerror or exc}.", "Check the path.") from None
    raise ProfileError(
        f"Unknown profile {name_or_path!r}.",
        f"Built-in profiles: {', '.join(builtin_names())}; or pass the path of your own .toml file.",
    )


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ProfileError(f"{prefix.rstrip('.') or 'profile'} must be a table.", "See the built-in profiles for the layout.")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise ProfileError(
            f"unknown key '{prefix}{unknown[0]}'.", f"Allowed keys{' in [' + prefix.rstrip('.') + ']' if prefix else ''}: {', '.join(names)}."
        )
    optional = {f.name for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
    missing = [n for n in names if n not in raw and n not in optional]
    if missing:
        raise ProfileError(f"missing field '{prefix}{missing[0]}'.", f"Add {prefix}{missing[0]} (see the built-in profiles).")
    values = {}
    for name in names:
        if name not in raw:
            continue  # an optional field: its default applies
        tp, value, field = _optional_inner(hints[name]), raw[name], f"{prefix}{name}"
        if dataclasses.is_dataclass(tp):
            values[name] = _build(tp, value, f"{field}.")
        else:
            values[name] = _check_type(field, value, tp)
    return cls(**values)


def _optional_inner(tp: Any) -> Any:
    """``X | None`` → ``X`` (an optional sub-table); any other type unchanged."""
    args = typing.get_args(tp)
    if args and type(None) in args and len(args) == 2:
        return next(a for a in args if a is not type(None))
    return tp


def _check_type(field: str, value: Any, tp: type) -> Any:
    ok = isinstance(value, tp) and not (tp is int and isinstance(value, bool))
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not ok:
        raise ProfileError(
            f"'{field}' must be {tp.__name__}, got {type(value).__name__} {value!r}.", f"Write {field} as a {tp.__name__}."
        )
    return value


def _positive(field: str, value: float) -> None:
    if not value > 0:
        raise ProfileError(f"'{field}' must be positive, got {value}.", f"Set {field} to a number greater than 0.")


def _one_of(field: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ProfileError(f"'{field}' = {value!r} is not allowed.", f"Use one of: {', '.join(allowed)}.")


__all__ = ["CPU", "Budget", "DeviceProfile", "Overheads", "Throughput", "builtin_names", "load_profile", "parse_profile"]
