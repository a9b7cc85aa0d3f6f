"""The bundle stage: the shipped file with everything an Android or Raspberry Pi developer needs to run it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..profiles import DeviceProfile
from ..rundir import RunDir
from .convert import shipped_file


@dataclass(frozen=True)
class BundleSettings:
    profile: str  # the bundle's name and READMEs say which device it was built for
    device_runtime: str  # what requirements.txt installs

    @classmethod
    def from_options(cls, options, profile: DeviceProfile) -> BundleSettings:
        return cls(profile.name, options.device_runtime)


def bundle(run: RunDir, task, settings: BundleSettings, profile: DeviceProfile, data, conversion, verified):
    from ..bundle import ModelFacts, build_bundles

    spec, int8 = data.spec, shipped_file(conversion)
    input_shape, extra, input_format = task.bundle_input(run, data)
    facts = ModelFacts(
        extra_files=extra,
        name=f"{Path(spec.name).stem or spec.name}-{profile.name}", input_format=input_format, class_names=tuple(spec.class_names), input_shape_nhwc=input_shape,
        pixel_scale=getattr(spec, "pixel_scale", 1.0), mean=getattr(spec, "mean", 0.0), std=getattr(spec, "std", 1.0),
        variant=int8.variant,
        variant_description=int8.integer_description, accuracy=verified.row(int8.variant).accuracy, n_test=verified.n_test,
        profile=profile.name, resize=getattr(spec, "resize", ""), **_runtime_facts(settings.device_runtime),
    )
    return build_bundles(run, run.path(int8.path), facts)


def _runtime_facts(device_runtime: str) -> dict:
    """The device runtime the build judged with, as the bundle's requirements.txt installs it."""
    from ..bench.device_scoring import CONVERTER
    from ..bench.device_runtimes import parse_device_runtime

    if device_runtime == CONVERTER:
        return {}
    runtime = parse_device_runtime(device_runtime)
    # A board installs the current numpy beside ai-edge-litert; tflite-runtime's own numpy<2 pin stays.
    requirements = tuple("numpy>=1.23.2" if r == "numpy" else r for r in runtime.requirements)
    return {"verified_runtime": runtime.label, "runtime_requirements": requirements}
