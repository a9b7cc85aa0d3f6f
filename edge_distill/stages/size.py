"""The size stage: the largest student of the family that fits the profile's budgets (or the best of a brief trial)."""

from __future__ import annotations

from dataclasses import dataclass

from ..data import DataResult
from ..profiles import DeviceProfile
from ..rundir import RunDir


@dataclass(frozen=True)
class SizeSettings:
    family: str
    teacher_params: int  # the student has at most teacher_params / min_compression parameters
    min_compression: float
    search: str  # capacity or proxy
    proxy_top_k: int
    proxy_epochs: int
    seed: int

    @classmethod
    def from_options(cls, options, family: str, teacher_params: int) -> SizeSettings:
        return cls(family, teacher_params, options.min_compression, options.search, options.proxy_top_k, options.proxy_epochs, options.seed)


def choose_size(run: RunDir, settings: SizeSettings, data: DataResult, profile: DeviceProfile):
    from ..sizing import choose_student, proxy_select
    from .data import load_splits

    result = choose_student(data.spec, profile, settings.family, settings.teacher_params, settings.min_compression)
    if settings.search == "proxy":
        result = proxy_select(result, data.spec, load_splits(run, data), settings.proxy_top_k, settings.proxy_epochs, settings.seed,
                              run.path("size/proxy"))
    return result, []
