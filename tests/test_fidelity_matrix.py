"""The fidelity matrix: one INT8 file scored by the device agent under several real runtimes × kernel modes.

Real runtimes only: this venv's LiteRT 2.1.0 (onnx2tf's pin, "the converter"), ai-edge-litert 2.3.0 and
tflite-runtime 2.14.0 in cached venvs (``~/.cache/edge-distill/runtimes``, made once; without network the tests
that need them skip).  The test model is an attention block whose two activation × activation matmuls become
int8 BATCH_MATMULs with far-from-zero zero points, the case LiteRT 2.1.0's XNNPACK computes wrongly (fixed in
2.1.3): the converter's xnnpack cell must diverge and LiteRT 2.3.0's must not.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tflite_models import full_int8_tflite

from edge_distill.bench import bench_model, setup_runner
from edge_distill.bench.device_runtimes import (DEFAULT_DEVICE_RUNTIME, DEVICE_RUNTIMES, device_runtime_python,
                                                parse_device_runtime, setup_device_runtime)
from edge_distill.bench.fidelity_matrix import (FidelityMatrix, available_runtimes, fidelity_matrix, format_matrix,
                                                matrix_markdown)
from edge_distill.bench.runners import KERNELS, AgentOptions
from edge_distill.bench.runtime_env import runtime_packages
from edge_distill.errors import BenchError, ConfigError
from edge_distill.serde import from_jsonable, to_jsonable

ROOT = Path(__file__).resolve().parents[1]
AGENT = ROOT / "export" / "agent.py"
T, D, CLASSES = 8, 16, 4
QUIET = dict(progress=lambda line: None)


def _attention_keras():
    import tensorflow as tf

    inp = tf.keras.Input((T, D), batch_size=1)
    q = tf.keras.layers.Dense(D)(inp)
    # Keys and values shifted positive: their int8 zero points land far from 0, where 2.1.0's XNNPACK goes wrong.
    k = tf.keras.layers.Dense(D, bias_initializer=tf.keras.initializers.Constant(1.5))(inp)
    v = tf.keras.layers.Dense(D, bias_initializer=tf.keras.initializers.Constant(1.5))(inp)
    scores = tf.keras.layers.Lambda(lambda t: tf.matmul(t[0], t[1], transpose_b=True))([q, k])
    mixed = tf.keras.layers.Lambda(lambda t: tf.matmul(t[0], t[1]))([tf.keras.layers.Softmax()(scores), v])
    return tf.keras.Model(inp, tf.keras.layers.Dense(CLASSES)(tf.keras.layers.Flatten()(mixed)))


@pytest.fixture(scope="module")
def attention(tmp_path_factory) -> dict[str, Path]:
    """A full-INT8 attention block and a test set labelled by its float model, clear winners only (margin > 0.3:
    int8 rounding moves these logits by < 0.1, so a flipped sample means the kernels compute something else)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    out = tmp_path_factory.mktemp("attention")
    model = _attention_keras()
    x = np.random.default_rng(0).standard_normal((600, T, D)).astype(np.float32)
    logits = model.predict(x, verbose=0)
    top2 = np.sort(logits, axis=1)[:, -2:]
    keep = np.flatnonzero(top2[:, 1] - top2[:, 0] > 0.3)[:200]
    assert len(keep) == 200
    (out / "attn_int8.tflite").write_bytes(full_int8_tflite(model, x[:100]))
    np.savez(out / "test.npz", x=x[keep], y=logits[keep].argmax(1))
    (out / "not_tflite.onnx").write_bytes(b"never read: the kernels are refused before onnxruntime loads it")
    return {"model": out / "attn_int8.tflite", "npz": out / "test.npz", "onnx": out / "not_tflite.onnx"}


@pytest.fixture(scope="module")
def litert() -> Path:
    try:
        return setup_device_runtime("litert==2.3.0", **QUIET)
    except BenchError as exc:  # no network, no index, no wheel for this Python/machine
        pytest.skip(f"cannot set up litert==2.3.0: {exc.message.splitlines()[-1]}")


def _in_process(model: Path, npz: Path, kernels: str) -> np.ndarray:
    """This process's LiteRT on every sample: the dequantized outputs, computed without the agent."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = {"xnnpack": OpResolverType.AUTO, "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
                "reference": OpResolverType.BUILTIN_REF}[kernels]
    interp = Interpreter(model_path=str(model), num_threads=1, experimental_op_resolver_type=resolver)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    (s_in, z_in), (s_out, z_out) = inp["quantization"], out["quantization"]
    rows = []
    for sample in np.load(npz)["x"]:
        interp.set_tensor(inp["index"], np.clip(np.round(sample[None] / s_in + z_in), -128, 127).astype(np.int8))
        interp.invoke()
        rows.append((interp.get_tensor(out["index"]).reshape(-1).astype(np.float32) - z_out) * s_out)
    return np.stack(rows)


def _agent(model: Path, *args: str, python: str = sys.executable) -> dict:
    proc = subprocess.run([python, str(AGENT), str(model), "--runs", "2", "--warmup", "0", *args],
                          capture_output=True, text=True, timeout=300)
    return json.loads(proc.stdout)


# ---- the agent ---------------------------------------------------------------------------------------------

def test_agent_runs_each_kernel_mode_and_writes_the_dequantized_logits(attention, tmp_path):
    y = np.load(attention["npz"])["y"]
    for kernels in KERNELS:
        path = tmp_path / f"{kernels}.npy"
        out = _agent(attention["model"], "--npz", str(attention["npz"]), "--predictions", "--kernels", kernels,
                     "--logits", str(path))
        assert out["kernels"] == kernels and out["logits_path"] == str(path), out
        assert (out["delegate_nodes"] > 0) == (kernels == "xnnpack"), out["delegate"]
        logits = np.load(path)
        assert logits.dtype == np.float32 and list(logits.shape) == out["logits_shape"] == [len(y), CLASSES]
        assert logits.argmax(1).tolist() == out["predictions"]
        expected = _in_process(attention["model"], attention["npz"], kernels)
        np.testing.assert_array_equal(logits, expected)  # the same runtime and kernels: bit for bit
        assert out["accuracy"] == np.mean(expected.argmax(1) == y)
    assert not list(tmp_path.glob("*.partial"))


def test_agent_kernel_flags_old_and_new(attention):
    old = _agent(attention["model"], "--no-xnnpack")
    assert old["kernels"] == "builtin" and old["delegate"].startswith("none (XNNPACK off: ai_edge_litert's builtin")
    assert _agent(attention["model"])["kernels"] == "xnnpack"
    ref = bench_model(attention["model"], threads=1, warmup=0, runs=2, kernels="reference")
    assert ref.delegate == "none (XNNPACK off: ai_edge_litert's reference kernels)"
    for args, message in ((["--no-xnnpack", "--kernels", "reference"], "--no-xnnpack contradicts --kernels reference"),
                          (["--logits", "x.npy"], "--logits needs --npz")):
        assert message in _agent(attention["model"], *args)["error"]
    assert _agent(attention["onnx"], "--kernels", "reference")["error"] == "--kernels reference applies to .tflite models only."
    assert _agent(attention["onnx"], "--no-xnnpack")["error"] == "--no-xnnpack applies to .tflite models only."


def test_a_runtime_without_the_resolver_fails_that_mode_clearly(attention):
    """An older runtime whose OpResolverType lacks a member: an AgentError naming it, not an AttributeError."""
    import enum
    import types

    spec = importlib.util.spec_from_file_location("agent_under_test", AGENT)
    agent = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(agent)
    model = agent.TFLiteModel(str(attention["model"]), 1, "reference")
    model._mod = types.SimpleNamespace(OpResolverType=enum.Enum("OpResolverType", "AUTO BUILTIN"))
    model.runtime, model.runtime_version = "tflite_runtime", "2.3.0"
    with pytest.raises(agent.AgentError) as info:
        model.load()
    assert info.value.message == ("tflite_runtime 2.3.0 has no OpResolverType.BUILTIN_REF, so it cannot run "
                                  "--kernels reference.")
    assert "--kernels xnnpack" in info.value.hint


def test_agent_options_spell_the_kernels():
    assert AgentOptions(1, 0, 1).argv() == ["--threads", "1", "--warmup", "0", "--runs", "1", "--batch-limit", "0"]
    assert AgentOptions(1, 0, 1, xnnpack=False).argv()[-1] == "--no-xnnpack"  # understood by agents before --kernels
    assert AgentOptions(1, 0, 1, kernels="builtin").argv()[-1] == "--no-xnnpack"
    assert AgentOptions(1, 0, 1, predictions=True, kernels="reference", logits="/tmp/l.npy").argv()[-5:] == \
        ["--predictions", "--kernels", "reference", "--logits", "/tmp/l.npy"]
    with pytest.raises(ConfigError, match="Kernels 'ref' are unknown"):
        AgentOptions(1, 0, 1, kernels="ref")
    with pytest.raises(ConfigError, match="contradicts"):
        AgentOptions(1, 0, 1, xnnpack=False, kernels="reference")
    spec = importlib.util.spec_from_file_location("agent_kernels", AGENT)
    agent = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(agent)
    assert tuple(agent.KERNELS) == KERNELS


# ---- device runtimes ---------------------------------------------------------------------------------------

def test_device_runtime_specs():
    assert parse_device_runtime("litert==2.3.0").requirements == ("ai-edge-litert==2.3.0", "numpy")
    assert parse_device_runtime(" ai-edge-litert == 2.3.0 ").spec == "litert==2.3.0"
    assert parse_device_runtime("litert").spec == DEFAULT_DEVICE_RUNTIME == "litert==2.3.0"
    assert parse_device_runtime("tflite_runtime").requirements == ("tflite-runtime==2.14.0", "numpy<2")
    assert set(DEVICE_RUNTIMES) == {"litert==2.3.0", "tflite-runtime==2.14.0"}
    for text, message in (("litert==2.1.0", "is not supported: litert 2.1.0 has not been checked here"),
                          ("tensorflow==2.19.0", "Unknown device runtime 'tensorflow==2.19.0'"),
                          ("litert>=2", "Unknown device runtime"), ("", "is invalid")):
        with pytest.raises(ConfigError, match=message) as info:
            parse_device_runtime(text)
        assert "litert==2.3.0, tflite-runtime==2.14.0" in info.value.hint


def test_litert_2_3_is_set_up_once_and_found_later(litert, tmp_path):
    assert runtime_packages(litert)["ai-edge-litert"] == "2.3.0"
    assert device_runtime_python("litert==2.3.0") == device_runtime_python("ai-edge-litert") == litert
    lines: list[str] = []
    assert setup_device_runtime("litert==2.3.0", progress=lines.append) == litert
    assert len(lines) == 1 and lines[0].startswith("litert==2.3.0: ai_edge_litert 2.3.0 with numpy ")  # cached: no pip
    assert "BUILTIN_REF" in lines[0] and "BUILTIN_WITHOUT_DEFAULT_DELEGATES" in lines[0]
    assert device_runtime_python("litert==2.3.0", tmp_path) is None  # another cache: not set up there


def test_runner_setup_takes_device_runtimes(litert):
    """``edge-distill runner setup litert==2.3.0`` goes through setup_runner, with the CLI's qemu arguments."""
    lines: list[str] = []
    assert setup_runner("litert==2.3.0", root=None, suite="bookworm", mirror="http://deb.debian.org/debian",
                        force=False, progress=lines.append) == litert
    assert lines and lines[-1].startswith("litert==2.3.0: ai_edge_litert 2.3.0")
    with pytest.raises(ConfigError, match="is not supported"):
        setup_runner("litert==2.0.3", progress=lines.append)
    with pytest.raises(ConfigError, match="has no setup step") as info:
        setup_runner("ssh")
    assert "litert==2.3.0, tflite-runtime==2.14.0" in info.value.hint


@pytest.mark.slow
def test_a_cold_setup_and_a_forced_rebuild(tmp_path):
    """A fresh cache: pip installs ai-edge-litert 2.3.0 (~13 s here); force rebuilds the same venv in place."""
    lines: list[str] = []
    try:
        python = setup_device_runtime("litert==2.3.0", tmp_path, progress=lines.append)
    except BenchError as exc:
        pytest.skip(f"cannot set up litert==2.3.0: {exc.message.splitlines()[-1]}")
    assert any(line.startswith("[1/3] runtime venv for ai-edge-litert==2.3.0 numpy") for line in lines)
    assert device_runtime_python("litert==2.3.0", tmp_path) == python
    lines.clear()
    assert setup_device_runtime("litert==2.3.0", tmp_path, progress=lines.append, force=True) == python
    assert "unfinished" in lines[0] and any(line.startswith("[2/3] pip install") for line in lines)
    assert runtime_packages(python)["ai-edge-litert"] == "2.3.0"


# ---- the matrix --------------------------------------------------------------------------------------------

def test_matrix_over_the_converter_and_litert_2_3(attention, litert):
    m = fidelity_matrix(attention["model"], attention["npz"], ["converter", "litert==2.3.0"], **QUIET)
    assert m.runtimes == ("converter", "litert==2.3.0") and not m.failed and m.n == 200
    assert [(c.runtime, c.kernels) for c in m.cells] == [(r, k) for r in m.runtimes for k in KERNELS]
    assert m.reference == "converter / builtin"
    ref = m.cell("converter", "builtin")
    assert (ref.agreement, ref.max_abs_delta, ref.divergent) == (1.0, 0.0, False)
    y = np.load(attention["npz"])["y"]
    for kernels in KERNELS:  # the converter's cells are this process's LiteRT, run in the agent
        cell = m.cell("converter", kernels)
        assert cell.runtime_version == "ai_edge_litert 2.1.0" and cell.where.startswith("host ")
        assert cell.accuracy == round(float(np.mean(_in_process(attention["model"], attention["npz"], kernels).argmax(1) == y)), 6)
        assert m.cell("litert==2.3.0", kernels).runtime_version == "ai_edge_litert 2.3.0"
    # The same builtin kernels in both releases: the same answers.
    assert (m.cell("litert==2.3.0", "builtin").agreement, m.cell("litert==2.3.0", "builtin").max_abs_delta) == (1.0, 0.0)
    # Issue #24: 2.1.0's XNNPACK int8 BATCH_MATMUL is wrong, 2.3.0's is not.
    bad, fixed = m.cell("converter", "xnnpack"), m.cell("litert==2.3.0", "xnnpack")
    assert bad.divergent and bad.agreement < 0.95 and bad.accuracy < ref.accuracy - 0.05, format_matrix(m)
    assert not fixed.divergent and fixed.agreement == 1.0, format_matrix(m)
    # 2.3.0's XNNPACK is as far from the builtin kernels as the reference kernels are (one output step, measured),
    # 2.1.0's many times that.
    one_step = m.cell("converter", "reference").max_abs_delta
    assert fixed.max_abs_delta <= one_step + 1e-6 and bad.max_abs_delta > 10 * one_step, format_matrix(m)
    assert m.divergent == (bad,)
    assert from_jsonable(FidelityMatrix, json.loads(json.dumps(to_jsonable(m)))) == m
    table = format_matrix(m)
    assert len(table.splitlines()) == 2 + 6 + 2 and table.count("DIVERGENT") == 1
    assert "reference converter / builtin" in table.splitlines()[0]
    markdown = matrix_markdown(m).splitlines()
    assert markdown[2].startswith("| runtime | version | kernels | accuracy | agreement | max \\|Δ\\|")
    assert len(markdown) == 4 + 6 and sum("**DIVERGENT**" in line for line in markdown) == 1


def test_the_reference_kernels_can_be_the_reference(attention):
    m = fidelity_matrix(attention["model"], attention["npz"], ["converter"], kernels=("xnnpack", "reference"),
                        reference_kernels="reference", **QUIET)
    assert m.reference == "converter / reference" and len(m.cells) == 2
    assert (m.cell("converter", "reference").agreement, m.cell("converter", "reference").max_abs_delta) == (1.0, 0.0)
    assert m.cell("converter", "xnnpack").divergent


def test_a_runtime_that_is_not_set_up_fails_its_cells_only(attention, tmp_path):
    assert available_runtimes(tmp_path)[:2] in (["converter"], ["converter", "qemu-arm64"])
    m = fidelity_matrix(attention["model"], attention["npz"], ["converter", "litert"], cache_root=tmp_path,
                        kernels=("builtin",), **QUIET)
    missing = m.cell("litert==2.3.0", "builtin")
    assert missing.error == "litert==2.3.0 is not set up on this machine (edge-distill runner setup litert==2.3.0)"
    assert (missing.n, missing.accuracy, missing.divergent) == (0, None, False)
    assert m.cell("converter", "builtin").error is None and m.failed == (missing,)
    assert "error: litert==2.3.0 is not set up" in format_matrix(m)


def test_unknown_runtimes_and_kernels_are_refused(attention):
    for runtimes, message in ((["tensorflow==2.19.0"], "Unknown runtime 'tensorflow==2.19.0'"),
                              (["litert==2.2.0"], "is not supported"), ([], "at least one runtime")):
        with pytest.raises(ConfigError, match=message) as info:
            fidelity_matrix(attention["model"], attention["npz"], runtimes, **QUIET)
        assert "litert==2.3.0" in info.value.hint
    with pytest.raises(ConfigError, match="are invalid"):
        fidelity_matrix(attention["model"], attention["npz"], ["converter"], kernels=("fast",), **QUIET)
    with pytest.raises(ConfigError, match="with reference 'builtin' are invalid"):
        fidelity_matrix(attention["model"], attention["npz"], ["converter"], kernels=("xnnpack",), **QUIET)
    with pytest.raises(BenchError, match="Test data file not found"):
        fidelity_matrix(attention["model"], attention["npz"].with_name("missing.npz"), ["converter"], **QUIET)


def test_tflite_runtime_2_14_runs_every_mode(attention):
    """tflite-runtime has all three resolvers; its x86-64 build applies no XNNPACK delegate to this int8 file."""
    try:
        setup_device_runtime("tflite-runtime==2.14.0", **QUIET)
    except BenchError as exc:
        pytest.skip(f"cannot set up tflite-runtime==2.14.0: {exc.message.splitlines()[-1]}")
    m = fidelity_matrix(attention["model"], attention["npz"], ["tflite-runtime==2.14.0"], **QUIET)
    assert not m.failed and m.reference == "tflite-runtime==2.14.0 / builtin"
    assert {c.runtime_version for c in m.cells} == {"tflite_runtime 2.14.0"}
    assert m.cell("tflite-runtime==2.14.0", "xnnpack").delegate_nodes == 0
    assert "xnnpack (no delegate applied)" in format_matrix(m)


@pytest.mark.slow
def test_the_repo_convert_path_reproduces_the_xnnpack_defect(litert, tmp_path):
    """A tiny-transformer student through convert_student (torch → ONNX → onnx2tf → full INT8), ~50 s: LiteRT
    2.1.0's XNNPACK loses ~17 points on it, 2.3.0's XNNPACK gives the builtin kernels' answers."""
    import torch

    from edge_distill.convert import InputContract, convert_student
    from edge_distill.models.text import PAD_ID, TinyTransformer
    from edge_distill.rundir import RunDir

    torch.manual_seed(0)
    seq, vocab, width = 16, 300, 32
    model = TinyTransformer(vocab=vocab, seq_len=seq, width=width, depth=1, num_classes=5).eval()
    with torch.no_grad():
        model.head.weight.mul_(8.0)  # clear winners: rounding alone cannot flip them
        model.layers[0].attn.qkv.bias[width:].add_(2.0)  # positive keys/values: a zero point far from 0
    rng = np.random.default_rng(0)
    ids = rng.integers(1, vocab, size=(2100, seq)).astype(np.int32)
    for row, length in zip(ids, rng.integers(4, seq + 1, size=len(ids))):
        row[length:] = PAD_ID
    calib, pool = ids[:100], ids[100:]
    with torch.no_grad():
        logits = model(torch.from_numpy(pool).long()).numpy()
    top2 = np.sort(logits, axis=1)[:, -2:]
    keep = np.flatnonzero(top2[:, 1] - top2[:, 0] > 0.5)[:300]
    x, y = pool[keep], logits[keep].argmax(1)
    run = RunDir(tmp_path / "run")
    result = convert_student(model, (seq,), calib, x, run, check_y=y, contract=InputContract(dtype="int32", low=0, high=vocab - 1),
                             variants=(), layer_analysis=False, escalate=False, threads=1)
    np.savez(tmp_path / "ids.npz", x=x, y=y)
    m = fidelity_matrix(run.path(result.file("tflite_int8").path), tmp_path / "ids.npz", ["converter", "litert==2.3.0"],
                        kernels=("xnnpack", "builtin"), **QUIET)
    bad, fixed = m.cell("converter", "xnnpack"), m.cell("litert==2.3.0", "xnnpack")
    assert bad.divergent and bad.accuracy < 0.95, format_matrix(m)
    assert not fixed.divergent and fixed.accuracy >= m.cell("converter", "builtin").accuracy, format_matrix(m)


def test_fidelity_command_says_which_cells_diverge_and_exits_0(attention, capsys):
    """Divergence is a finding about the runtimes, not a failure: the table, then a verdict line, exit code 0."""
    from edge_distill.cli import main

    assert main(["fidelity", str(attention["model"]), "--npz", str(attention["npz"]), "--runtimes", "converter"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert sum("DIVERGENT" in line for line in lines) == 1 and "converter" in next(x for x in lines if "DIVERGENT" in x)
    assert lines[-1].startswith("1 of 3 cells divergent, 0 could not run. converter LiteRT 2.1.0 XNNPACK diverges from the "
                                "reference (converter LiteRT 2.1.0 builtin kernels): accuracy 0."), lines[-1]


def test_the_device_runtime_judges_int8_files_where_the_converter_gets_them_wrong(attention, litert):
    """bench.device_scoring: run_tflite's signature on litert 2.3.0's venv.  On the attention block the converter's
    XNNPACK (2.1.0) loses most samples; the device runtime answers like the converter's builtin kernels."""
    from edge_distill.bench.device_scoring import device_logits
    from edge_distill.convert import run_tflite

    with np.load(attention["npz"]) as npz:
        x, y = npz["x"], npz["y"]
    scorer, description, short = device_logits("litert==2.3.0")
    latencies: list[float] = []
    on_device = scorer(attention["model"], x, 1, latencies)
    assert "2.3.0" in description and short == "litert 2.3.0" and len(latencies) == 1 and latencies[0] > 0
    converter_latencies: list[float] = []
    builtin = run_tflite(attention["model"], x, 1, converter_latencies, xnnpack=False)
    # Seconds, like run_tflite's (the ledger multiplies by 1000): the agent's p50 in ms read as seconds was 1000x off.
    assert 0.02 < latencies[0] / float(np.median(converter_latencies)) < 50
    assert np.array_equal(on_device.argmax(1), builtin.argmax(1)) and float(np.mean(on_device.argmax(1) == y)) == 1.0
    assert float(np.mean(run_tflite(attention["model"], x, 1).argmax(1) == y)) < 0.5  # the converter's XNNPACK defect
    assert device_logits("converter")[0] is run_tflite
