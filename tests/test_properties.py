"""Property-based tests (hypothesis): profile TOML parsing, the data loaders and splitters, the PNG
reader, and the report renderer.  The common property: any input gives a valid result or the
project's own error type — never a crash with some other exception."""

import json
import math
import struct
import tomllib
import zlib
from importlib import resources

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from edge_distill.data.images import decode_png
from edge_distill.data.splits import balanced_subset, stratified_split
from edge_distill.data.user import load_npz
from edge_distill.errors import DataError, ProfileError
from edge_distill.profiles import DeviceProfile, load_profile, parse_profile
from edge_distill.report.html import render_html
from edge_distill.report.svg import log_ticks, nice_ticks

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
BASE = tomllib.loads((resources.files("edge_distill.profiles") / "rpi4.toml").read_text())


# ---- profile TOML ------------------------------------------------------------------------------------


def to_toml(raw: dict) -> str:
    """A small TOML writer for a profile's shape: top-level scalars, then one level of tables."""

    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)  # a JSON string is a valid TOML basic string
        if isinstance(v, float):
            return repr(v) if math.isfinite(v) else ("nan" if v != v else ("inf" if v > 0 else "-inf"))
        return str(v)

    lines = [f"{k} = {value(v)}" for k, v in raw.items() if not isinstance(v, dict)]
    for k, v in raw.items():
        if isinstance(v, dict):
            lines += ["", f"[{k}]"] + [f"{kk} = {value(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"


def numeric_fields(raw, prefix=""):
    for k, v in raw.items():
        if isinstance(v, dict):
            yield from numeric_fields(v, f"{prefix}{k}.")
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            yield f"{prefix}{k}", v


def set_field(raw, path, v):
    raw = json.loads(json.dumps(raw))
    *parents, last = path.split(".")
    node = raw
    for p in parents:
        node = node[p]
    node[last] = v
    return raw


FIELDS = [name for name, _ in numeric_fields(BASE)]
scalars = st.one_of(st.integers(-10**9, 10**9), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8), st.booleans())


@FAST
@given(field=st.sampled_from(FIELDS), factor=st.floats(0.01, 100))
def test_scaled_positive_numbers_round_trip_through_toml(tmp_path, field, factor):
    original = dict(numeric_fields(BASE))[field]
    new = max(1, round(original * factor)) if isinstance(original, int) else original * factor
    raw = set_field(BASE, field, new)
    if field in ("threads", "cpu.cores"):  # threads <= cores is its own rule
        raw = set_field(set_field(raw, "threads", 1), "cpu.cores", max(1, int(new)))
    path = tmp_path / "p.toml"
    path.write_text(to_toml(raw))
    try:
        prof = load_profile(str(path))
    except ProfileError as exc:
        assert field.split(".")[-1] in exc.message or "threads" in exc.message
        return
    assert isinstance(prof, DeviceProfile)
    node = prof
    for part in field.split("."):
        node = getattr(node, part)
    assert node == pytest.approx(raw_value(raw, field))


def raw_value(raw, path):
    for part in path.split("."):
        raw = raw[part]
    return raw


@FAST
@given(field=st.sampled_from(FIELDS), v=scalars)
def test_any_value_in_any_field_parses_or_names_the_field(field, v):
    raw = set_field(BASE, field, v)
    try:
        parse_profile(raw, "prop.toml")
    except ProfileError as exc:
        assert exc.hint
        assert field.split(".")[-1] in exc.message or "threads" in exc.message


@FAST
@given(section=st.sampled_from([None, "cpu", "budget", "throughput"]), key=st.text(st.characters(min_codepoint=97, max_codepoint=122), min_size=1, max_size=12), v=scalars)
def test_unknown_keys_are_refused_by_name(section, key, v):
    raw = json.loads(json.dumps(BASE))
    target = raw if section is None else raw[section]
    assume(key not in target)
    target[key] = v
    with pytest.raises(ProfileError, match=f"unknown key '{(section + '.') if section else ''}{key}'"):
        parse_profile(raw, "prop.toml")


@FAST
@given(text=st.text(max_size=300))
def test_arbitrary_text_is_a_profile_or_a_profile_error(tmp_path, text):
    path = tmp_path / "any.toml"
    path.write_text(text)
    try:
        load_profile(str(path))
    except ProfileError as exc:
        assert exc.message and exc.hint


# ---- data loaders and splitters ----------------------------------------------------------------------


shapes = st.one_of(
    st.tuples(st.integers(0, 40), st.integers(1, 6), st.integers(1, 6)),
    st.tuples(st.integers(0, 40), st.sampled_from([1, 2, 3, 4]), st.integers(1, 6), st.integers(1, 6)),
    st.tuples(st.integers(0, 40), st.integers(1, 6), st.integers(1, 6), st.sampled_from([1, 3, 5])),
    st.tuples(st.integers(0, 5), st.integers(1, 3)),
)


@FAST
@given(shape=shapes, dtype=st.sampled_from(["uint8", "float32", "int16", "float64"]), k=st.integers(1, 5), shift=st.integers(-2, 2),
       n_labels_delta=st.sampled_from([0, 0, 0, 1, -1]), names=st.booleans(), seed=st.integers(0, 2**16))
def test_npz_loader_returns_valid_data_or_a_data_error(tmp_path, shape, dtype, k, shift, n_labels_delta, names, seed):
    rng = np.random.default_rng(seed)
    x = (rng.random(shape) * 255).astype(dtype)
    n = shape[0] + n_labels_delta if shape[0] + n_labels_delta >= 0 else 0
    y = rng.integers(0, k, n) + shift
    extra = {"class_names": np.array([f"c{i}" for i in range(k)])} if names else {}
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=y, **extra)
    try:
        raw = load_npz(path)
    except DataError as exc:
        assert exc.message and exc.hint
        return
    n_img, c, h, w = raw.images.shape
    assert raw.images.dtype == np.float32 and c in (1, 3) and n_img == len(raw.labels) > 0
    assert raw.labels.min() >= 0 and raw.labels.max() < len(raw.class_names)
    assert raw.pixel_scale > 0 and np.isfinite(raw.images).all()


@FAST
@given(counts=st.lists(st.integers(1, 40), min_size=1, max_size=6), seed=st.integers(0, 1000),
       fractions=st.sampled_from([{"train": 0.7, "val": 0.1, "test": 0.2}, {"train": 0.9, "val": 0.1}, {"a": 0.5, "b": 0.5}]))
def test_stratified_split_is_a_seeded_partition(counts, seed, fractions):
    y = np.concatenate([np.full(c, i) for i, c in enumerate(counts)])
    parts = stratified_split(y, fractions, seed)
    joined = np.concatenate(list(parts.values()))
    assert sorted(joined.tolist()) == list(range(len(y)))  # disjoint and complete
    for name, frac in fractions.items():
        for cls, c in enumerate(counts):
            got = int((y[parts[name]] == cls).sum())
            assert abs(got - frac * c) <= len(fractions)  # each class spread in proportion (rounding aside)
    again = stratified_split(y, fractions, seed)
    assert all(np.array_equal(parts[n], again[n]) for n in parts)


@FAST
@given(counts=st.lists(st.integers(1, 30), min_size=1, max_size=6), want=st.integers(0, 120), seed=st.integers(0, 1000))
def test_balanced_subset_is_exact_balanced_or_a_data_error(counts, want, seed):
    y = np.concatenate([np.full(c, i) for i, c in enumerate(counts)])
    try:
        idx = balanced_subset(y, want, seed)
    except DataError as exc:
        assert want < len(counts) or want > len(y), exc.message
        return
    assert len(idx) == want == len(set(idx.tolist()))
    per_class = np.bincount(y[idx], minlength=len(counts))
    # Round robin: a class gets fewer than another only when it ran out of samples.
    for i, got in enumerate(per_class):
        assert got == counts[i] or got >= per_class.max() - 1


# ---- the PNG reader ----------------------------------------------------------------------------------


def encode_png(img, filters):
    """PNG with a chosen filter per row (0-4), so every filter path of the decoder gets exercised."""
    h, w, c = img.shape
    colour = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    data = img.astype(np.int32).reshape(h, w * c)
    rows = []
    for y in range(h):
        cur, prev = data[y], data[y - 1] if y else np.zeros(w * c, np.int32)
        left = np.concatenate([np.zeros(c, np.int32), cur[:-c]])
        up_left = np.concatenate([np.zeros(c, np.int32), prev[:-c]])
        kind = filters[y % len(filters)]
        if kind == 0:
            pred = np.zeros_like(cur)
        elif kind == 1:
            pred = left
        elif kind == 2:
            pred = prev
        elif kind == 3:
            pred = (left + prev) // 2
        else:
            p = left + prev - up_left
            pa, pb, pc = abs(p - left), abs(p - prev), abs(p - up_left)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, up_left))
        rows.append(bytes([kind]) + ((cur - pred) & 0xFF).astype(np.uint8).tobytes())

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b""))


@FAST
@given(h=st.integers(1, 9), w=st.integers(1, 9), c=st.sampled_from([1, 2, 3, 4]), filters=st.lists(st.integers(0, 4), min_size=1, max_size=5),
       seed=st.integers(0, 2**16))
def test_png_reader_undoes_every_filter(h, w, c, filters, seed):
    img = np.random.default_rng(seed).integers(0, 256, (h, w, c)).astype(np.uint8)
    assert np.array_equal(decode_png(encode_png(img, filters)), img)


# ---- the report renderer -----------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=25,
)
REPORT_KEYS = ["profile", "data", "teacher", "sizing", "students", "conversion", "ledger", "bench", "stage_times", "options", "tools", "unlabelled",
               "extra"]


@FAST
@given(report=st.dictionaries(st.sampled_from(REPORT_KEYS) | st.text(max_size=6), json_values, max_size=8))
def test_html_renderer_never_raises_and_escapes_everything(report):
    html = render_html(report)
    assert html.startswith("<!doctype html>") and html.rstrip().endswith("</html>")
    assert "<script" not in html.lower()  # user text can never become markup


@FAST
@given(lo=st.floats(-1e6, 1e6), span=st.floats(1e-6, 1e6))
def test_linear_ticks_cover_the_range_in_order(lo, span):
    ticks = nice_ticks(lo, lo + span)
    assert ticks == sorted(ticks) and 1 <= len(ticks) <= 12
    assert all(lo - 1e-6 * span <= t <= lo + span * (1 + 1e-6) for t in ticks)


@FAST
@given(lo=st.floats(1e-6, 1e6), ratio=st.floats(1.001, 1e6))
def test_log_ticks_stay_inside_the_range(lo, ratio):
    hi = lo * ratio
    assert all(lo * (1 - 1e-9) <= t <= hi * (1 + 1e-9) for t in log_ticks(lo, hi))
