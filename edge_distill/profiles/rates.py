"""Measure a machine's effective TFLite rates so the cost model's latency estimates can be checked and trusted.

The latency model (``DeviceProfile.estimate_latency_ms``) is

    ms = dense MACs / rate + depthwise MACs / dw_rate + ops × per_op + activation elements × per_elem
         + conv output positions × per_position

compute (dense and depthwise convolutions run at very different MAC rates), interpreter dispatch, memory
traffic, and the fixed work per output position of a convolution — the last two are what make a narrow
network on a large image slower than its MACs suggest.  We convert a ladder of probe students (plain and
depthwise-separable, narrow to wide, three input sizes) to fp32 and full-INT8 TFLite, time each with the
device agent in a separate process, and fit the five coefficients of each precision by non-negative
least squares on *relative* error — the estimate is judged by ±%, so a 20 µs model must count as much as a
5 ms one.  The result is a profile TOML whose throughput says where it was measured.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..console import get_console
from ..data.spec import DataSpec
from ..errors import ConfigError
from . import DeviceProfile, Overheads, Throughput
from ..rundir import RunDir


@dataclass(frozen=True)
class ProbePoint:
    label: str
    precision: str  # "int8" | "fp32"
    macs: int
    n_ops: int
    act_elems: int
    measured_ms: float  # p50 from the device agent
    estimated_ms: float = 0.0  # from the fitted rates
    dw_macs: int = 0
    conv_positions: int = 0

    @property
    def relative_error(self) -> float:
        return self.estimated_ms / self.measured_ms - 1


@dataclass(frozen=True)
class RateMeasurement:
    throughput: Throughput
    points: tuple[ProbePoint, ...]
    threads: int
    where: str  # the agent's description of the machine

    def max_abs_relative_error(self) -> float:
        return max(abs(p.relative_error) for p in self.points)


@dataclass(frozen=True)
class FittedRates:
    """One precision's fitted terms."""

    gmacs: float  # dense MAC rate
    overheads: Overheads  # depthwise rate (0 when the probes carried no depthwise work), per op, per element, per position


def fit_rates(points: list[ProbePoint]) -> dict[str, FittedRates]:
    """Each precision's five cost terms, by non-negative least squares on relative error over its own probes.

    Fitted per precision because the kernels differ in kind, not just in speed: measured on the x86 build
    host, int8 pays ~2x more per operator than fp32 and int8 depthwise runs ~3x slower — one shared set of
    overheads left int8 and fp32 errors of opposite sign, up to ±47%.
    """
    return {precision: _fit_one([p for p in points if p.precision == precision])
            for precision in sorted({p.precision for p in points})}


def _fit_one(points: list[ProbePoint]) -> FittedRates:
    from scipy.optimize import nnls

    rows = []
    for p in points:
        # Unknowns: seconds per dense MAC, per depthwise MAC, per op, per activation element, per conv output
        # position.  Dividing by the measurement turns absolute into relative error; non-negativity keeps every
        # term physical (a negative cost is noise, and would break extrapolation).
        row = [p.macs - p.dw_macs, p.dw_macs, p.n_ops, p.act_elems, p.conv_positions]
        rows.append([v / (p.measured_ms / 1e3) for v in row])
    a = np.array(rows, dtype=float)
    scale = np.where(a.max(0) > 0, a.max(0), 1.0)  # column scaling keeps NNLS well conditioned
    solution, _ = nnls(a / scale, np.ones(len(rows)))
    s_dense, s_dw, s_op, s_elem, s_pos = (float(v) for v in solution / scale)
    return FittedRates(
        gmacs=1 / max(s_dense, 1e-15) / 1e9,
        overheads=Overheads(per_op_us=s_op * 1e6, act_ns_per_elem=s_elem * 1e9,
                            dw_gmacs=1 / s_dw / 1e9 if s_dw > 0 else 0.0, ns_per_position=s_pos * 1e9),
    )


def _rounded(o: Overheads) -> Overheads:
    return Overheads(per_op_us=round(o.per_op_us, 3), act_ns_per_elem=round(o.act_ns_per_elem, 4),
                     dw_gmacs=round(o.dw_gmacs, 3), ns_per_position=round(o.ns_per_position, 3))


def with_estimates(points: list[ProbePoint], throughput: Throughput, base: DeviceProfile) -> list[ProbePoint]:
    prof = dataclasses.replace(base, throughput=throughput)
    return [dataclasses.replace(p, estimated_ms=round(prof.estimate_latency_ms(p.macs, p.n_ops, p.act_elems, p.precision, p.dw_macs,
                                                                               p.conv_positions), 6)) for p in points]


PROBE_SPECS = (
    DataSpec("probe-8x8x1", "vision", (1, 8, 8), 10, tuple("0123456789"), 1.0, 0.0, 1.0, "random probe"),
    DataSpec("probe-28x28x1", "vision", (1, 28, 28), 10, tuple("0123456789"), 1.0, 0.0, 1.0, "random probe"),
    DataSpec("probe-32x32x3", "vision", (3, 32, 32), 10, tuple("0123456789"), 1.0, 0.0, 1.0, "random probe"),
)
# (family, width, depth): plain CNNs narrow to wide, and depthwise-separable ones, so every cost term is
# exercised by several probes.
PROBE_MODELS = (("cnn", 4, 2), ("cnn", 8, 2), ("cnn", 16, 2), ("cnn", 32, 3), ("cnn", 64, 3),
                ("dscnn", 16, 2), ("dscnn", 32, 3), ("dscnn", 96, 3))


def median_p50s(paths: list[Path], threads: int, runs: int, repeats: int) -> list[float]:
    """Each model's median p50 over ``repeats`` rounds of timing (see ``bench.bench_in_rounds`` for why rounds)."""
    from ..bench import bench_in_rounds

    return [float(np.median([r.p50_ms for r in rounds])) for rounds in bench_in_rounds(paths, threads, repeats, warmup=10, runs=runs)]


def measure_probes(run: RunDir, base: DeviceProfile, threads: int, runs: int = 1000, repeats: int = 5) -> list[ProbePoint]:
    """Convert the probe ladder, then time it with the device agent (local runner); returns unfitted points."""
    import torch

    from ..convert import convert_student
    from ..models.students import StudentConfig, build_student
    from ..sizing import measure_cost

    console = get_console()
    pending: list[tuple[ProbePoint, Path]] = []
    rng = np.random.default_rng(0)
    for spec in PROBE_SPECS:
        for family, width, depth in PROBE_MODELS:
            config = StudentConfig(family, width, depth)
            torch.manual_seed(0)
            model = build_student(config, spec).eval()
            cost = measure_cost(model, spec, base)
            x = rng.standard_normal((64, *spec.input_shape)).astype(np.float32)
            label = f"{spec.name} {config.label()}"
            console.stage("measure", f"{label}: {cost.macs:,} MACs, converting")
            # An untrained probe has near-tied logits, so INT8 top-1 agreement means little here: timing only,
            # with the check kept as a guard against a broken file.
            result = convert_student(model, spec.input_shape, x[:32], x[32:], run, subdir=f"probes/{spec.name}-{family}-w{width}-d{depth}", int8_min_agreement=0.01,
                                     escalate=False, variants=(), layer_analysis=False)
            for variant, precision in (("tflite_int8", "int8"), ("tflite_fp32", "fp32")):
                point = ProbePoint(label, precision, cost.macs, cost.n_ops, cost.act_elems, 0.0, dw_macs=cost.dw_macs,
                                   conv_positions=cost.conv_positions)
                pending.append((point, run.path(result.file(variant).path)))
    p50s = median_p50s([path for _, path in pending], threads, runs, repeats)
    return [dataclasses.replace(point, measured_ms=p50) for (point, _), p50 in zip(pending, p50s)]


def measure_rates(run: RunDir, base: DeviceProfile, threads: int | None = None, runs: int = 1000, repeats: int = 5) -> RateMeasurement:
    from ..bench import describe_host

    threads = threads or min(base.threads, os.cpu_count() or 1)
    if threads < 1:
        raise ConfigError(f"threads must be ≥ 1, got {threads}.", "Pass --threads N.")
    if repeats < 1:
        raise ConfigError(f"repeats must be ≥ 1, got {repeats}.", "Pass --repeats N (3 is the default).")
    points = measure_probes(run, base, threads, runs, repeats)
    fits = fit_rates(points)
    where = describe_host()
    # The shared terms are the deployment precision's; the other precision's differ, so they go in its
    # own [throughput.<precision>] table.
    own, other = ("int8", "fp32") if base.precision == "int8" else ("fp32", "int8")
    shared = _rounded(fits[own].overheads)
    throughput = Throughput(
        int8_gmacs=round(fits["int8"].gmacs, 3),
        fp32_gmacs=round(fits["fp32"].gmacs, 3),
        per_op_us=shared.per_op_us,
        act_ns_per_elem=shared.act_ns_per_elem,
        dw_gmacs=shared.dw_gmacs,
        ns_per_position=shared.ns_per_position,
        source=f"measured by `edge-distill profiles measure` on {where}, {threads} threads, {time.strftime('%Y-%m-%d')}",
        **{other: _rounded(fits[other].overheads)},
    )
    return RateMeasurement(throughput, tuple(with_estimates(points, throughput, base)), threads, where)


def profile_toml(base: DeviceProfile, cal: RateMeasurement) -> str:
    """``base`` with measured throughput, as TOML text (a user profile file)."""
    b, c, t = base.budget, base.cpu, cal.throughput
    return f"""# Generated by `edge-distill profiles measure` from profile {base.name!r}.
# Throughput measured on: {cal.where}; {cal.threads} threads; {len(cal.points)} probe timings,
# worst estimate error {100 * cal.max_abs_relative_error():.0f}%.
name = "{base.name}"
description = "{base.description}"
ram_mb = {base.ram_mb}
threads = {cal.threads}
precision = "{base.precision}"

[cpu]
isa = "{c.isa}"
core = "{c.core}"
cores = {c.cores}
clock_ghz = {c.clock_ghz}

[budget]
max_params = {b.max_params}
model_bytes = {b.model_bytes}
arena_bytes = {b.arena_bytes}
latency_ms = {b.latency_ms}

[throughput]
int8_gmacs = {t.int8_gmacs}
fp32_gmacs = {t.fp32_gmacs}
per_op_us = {t.per_op_us}
act_ns_per_elem = {t.act_ns_per_elem}
dw_gmacs = {t.dw_gmacs}
ns_per_position = {t.ns_per_position}
source = "{t.source}"
{_overrides_toml(t)}"""


def _overrides_toml(t: Throughput) -> str:
    tables = []
    for precision in ("int8", "fp32"):
        o = getattr(t, precision)
        if o is not None:
            tables.append(f"""
[throughput.{precision}]
# {precision} kernels' own overheads (fitted on the {precision} probes only)
per_op_us = {o.per_op_us}
act_ns_per_elem = {o.act_ns_per_elem}
dw_gmacs = {o.dw_gmacs}
ns_per_position = {o.ns_per_position}
""")
    return "".join(tables)


def write_profile(path: Path, base: DeviceProfile, cal: RateMeasurement) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(profile_toml(base, cal))
    os.replace(tmp, path)
    return path
