"""Measure a machine's effective TFLite rates so the cost model's latency estimates can be checked and trusted.

The latency model is ``ms = MACs / rate + ops × per_op + activation elements × per_elem`` (see
``DeviceProfile.estimate_latency_ms``): compute, interpreter dispatch, and memory traffic — the last one
is what makes a narrow network on a large image slower than its MACs suggest.
We convert a ladder of probe students (small to large, two input sizes) to fp32 and full-INT8 TFLite,
time each with the device agent in a separate process, and fit ``int8_gmacs``, ``fp32_gmacs`` and
``per_op_us`` and ``act_ns_per_elem`` by least squares on *relative* error — the estimate is judged by ±%, so a 20 µs model
must count as much as a 5 ms one.  The result is a profile TOML whose throughput says where it was measured.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .console import get_console
from .data.spec import DataSpec
from .errors import ConfigError
from .profiles import DeviceProfile, Throughput
from .rundir import RunDir


@dataclass(frozen=True)
class ProbePoint:
    label: str
    precision: str  # "int8" | "fp32"
    macs: int
    n_ops: int
    act_elems: int
    measured_ms: float  # p50 from the device agent
    estimated_ms: float = 0.0  # from the fitted rates

    @property
    def relative_error(self) -> float:
        return self.estimated_ms / self.measured_ms - 1


@dataclass(frozen=True)
class Calibration:
    throughput: Throughput
    points: tuple[ProbePoint, ...]
    threads: int
    where: str  # the agent's description of the machine

    def max_abs_relative_error(self) -> float:
        return max(abs(p.relative_error) for p in self.points)


def fit_rates(points: list[ProbePoint]) -> tuple[float, float, float, float]:
    """Least squares on relative error; returns (int8_gmacs, fp32_gmacs, per_op_us, act_ns_per_elem)."""
    rows, target = [], []
    for p in points:
        # Unknowns: seconds per int8 MAC, per fp32 MAC, per op, per activation element.  Dividing by the
        # measurement turns absolute into relative error.
        row = [p.macs if p.precision == "int8" else 0.0, p.macs if p.precision == "fp32" else 0.0, p.n_ops, p.act_elems]
        rows.append([v / (p.measured_ms / 1e3) for v in row])
        target.append(1.0)
    solution, *_ = np.linalg.lstsq(np.array(rows), np.array(target), rcond=None)
    s_int8, s_fp32, s_op, s_elem = (max(float(v), 1e-15) for v in solution)  # a negative fit is noise: clamp
    return 1 / s_int8 / 1e9, 1 / s_fp32 / 1e9, s_op * 1e6, s_elem * 1e9


def with_estimates(points: list[ProbePoint], throughput: Throughput, base: DeviceProfile) -> list[ProbePoint]:
    prof = dataclasses.replace(base, throughput=throughput)
    return [dataclasses.replace(p, estimated_ms=round(prof.estimate_latency_ms(p.macs, p.n_ops, p.act_elems, p.precision), 6)) for p in points]


PROBE_SPECS = (
    DataSpec("probe-8x8x1", "vision", (1, 8, 8), 10, tuple("0123456789"), 1.0, 0.0, 1.0, "random probe"),
    DataSpec("probe-28x28x1", "vision", (1, 28, 28), 10, tuple("0123456789"), 1.0, 0.0, 1.0, "random probe"),
    DataSpec("probe-32x32x3", "vision", (3, 32, 32), 10, tuple("0123456789"), 1.0, 0.0, 1.0, "random probe"),
)
PROBE_WIDTHS = ((8, 2), (16, 2), (32, 3), (64, 3))


def measure_probes(run: RunDir, base: DeviceProfile, threads: int, runs: int = 100) -> list[ProbePoint]:
    """Convert and time the probe ladder with the device agent (local runner); returns unfitted points."""
    import torch

    from .bench import bench_model
    from .convert import convert_student
    from .models.students import StudentConfig, build_student
    from .sizing import measure_cost

    console = get_console()
    points: list[ProbePoint] = []
    rng = np.random.default_rng(0)
    for spec in PROBE_SPECS:
        for width, depth in PROBE_WIDTHS:
            config = StudentConfig("cnn", width, depth)
            torch.manual_seed(0)
            model = build_student(config, spec).eval()
            cost = measure_cost(model, spec, base)
            x = rng.standard_normal((64, *spec.input_shape)).astype(np.float32)
            label = f"{spec.name} {config.label()}"
            console.stage("calibrate", f"{label}: {cost.macs:,} MACs, converting")
            # An untrained probe has near-tied logits, so INT8 top-1 agreement means little here: timing only,
        # with the check kept as a guard against a broken file.
            result = convert_student(model, spec.input_shape, x[:32], x[32:], run, subdir=f"probes/{spec.name}-w{width}-d{depth}", int8_min_agreement=0.01,
                                     escalate=False, variants=(), layer_analysis=False)
            for variant, precision in (("tflite_int8", "int8"), ("tflite_fp32", "fp32")):
                bench = bench_model(run.path(result.file(variant).path), threads, warmup=10, runs=runs)
                points.append(ProbePoint(label, precision, cost.macs, cost.n_ops, cost.act_elems, bench.p50_ms))
    return points


def calibrate(run: RunDir, base: DeviceProfile, threads: int | None = None, runs: int = 100) -> Calibration:
    from .bench import describe_host

    threads = threads or min(base.threads, os.cpu_count() or 1)
    if threads < 1:
        raise ConfigError(f"threads must be ≥ 1, got {threads}.", "Pass --threads N.")
    points = measure_probes(run, base, threads, runs)
    int8, fp32, per_op, per_elem = fit_rates(points)
    where = describe_host()
    throughput = Throughput(
        int8_gmacs=round(int8, 3),
        fp32_gmacs=round(fp32, 3),
        per_op_us=round(per_op, 3),
        act_ns_per_elem=round(per_elem, 4),
        source=f"measured by `edge-distill profiles calibrate` on {where}, {threads} threads, {time.strftime('%Y-%m-%d')}",
    )
    return Calibration(throughput, tuple(with_estimates(points, throughput, base)), threads, where)


def profile_toml(base: DeviceProfile, cal: Calibration) -> str:
    """``base`` with measured throughput, as TOML text (a user profile file)."""
    b, c, t = base.budget, base.cpu, cal.throughput
    return f"""# Generated by `edge-distill profiles calibrate` from profile {base.name!r}.
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
source = "{t.source}"
"""


def write_profile(path: Path, base: DeviceProfile, cal: Calibration) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(profile_toml(base, cal))
    os.replace(tmp, path)
    return path
