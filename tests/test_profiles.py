import tomllib
from importlib import resources

import pytest

from edge_distill.errors import ProfileError
from edge_distill.profiles import builtin_names, load_profile, parse_profile


def _raw(name="rpi4"):
    return tomllib.loads((resources.files("edge_distill.profiles") / f"{name}.toml").read_text())


def test_builtins_include_the_documented_profiles():
    assert {"rpi4", "host", "rpi-zero-2w", "rpi5", "android-lowend", "android-midrange"} <= set(builtin_names())


@pytest.mark.parametrize("name", builtin_names())
def test_every_builtin_profile_parses_and_names_its_sources(name):
    prof = load_profile(name)
    assert prof.name == name
    assert prof.throughput.source
    assert prof.threads <= prof.cpu.cores
    # Faster per MAC in int8 than fp32 on ARM is what XNNPACK's published figures show.
    if prof.cpu.isa == "aarch64":
        assert prof.throughput.int8_gmacs > prof.throughput.fp32_gmacs


def test_unknown_profile_lists_builtins():
    with pytest.raises(ProfileError) as err:
        load_profile("rpi9")
    assert "rpi9" in err.value.message and "rpi4" in err.value.hint


def test_user_toml_by_path(tmp_path):
    text = (resources.files("edge_distill.profiles") / "rpi4.toml").read_text().replace('name = "rpi4"', 'name = "my-pi"')
    path = tmp_path / "my-pi.toml"
    path.write_text(text)
    assert load_profile(str(path)).name == "my-pi"


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda r: r["budget"].update(latency_ms=-1.0), "budget.latency_ms"),
        (lambda r: r["budget"].update(max_parms=5), "budget.max_parms"),
        (lambda r: r["cpu"].update(cores="four"), "cpu.cores"),
        (lambda r: r.pop("threads"), "threads"),
        (lambda r: r.update(precision="int4"), "precision"),
        (lambda r: r["cpu"].update(isa="mips"), "cpu.isa"),
    ],
)
def test_bad_profile_names_the_field(mutate, field):
    raw = _raw()
    mutate(raw)
    with pytest.raises(ProfileError) as err:
        parse_profile(raw, "test.toml")
    assert field in err.value.message and err.value.hint


def test_invalid_toml_syntax(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("name = \n")
    with pytest.raises(ProfileError, match="not valid TOML"):
        load_profile(str(path))
