"""tflite-runtime, the runtime 32-bit Raspberry Pi OS gets: the agent and the bundle's infer.py in its own venv.

tflite-runtime 2.14.0 (the last release; cp311 wheels) is built against NumPy 1.x.  With ``numpy<2`` it must
give the host LiteRT's answers sample by sample; with NumPy 2 its interpreter raises an opaque SystemError,
which the agent and infer.py must turn into one clear error naming ``numpy<2``.  The venvs are made once with
``runtime_venv`` and cached (``~/.cache/edge-distill/runtimes``); without network the tests skip.
"""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import pytest
from test_bundle import bundled, digits  # noqa: F401  (module fixtures: a real full-INT8 digits model and its bundles)

from edge_distill.bench.runners import AgentOptions, LocalRunner, parse_agent_output
from edge_distill.bench.runtime_env import READY, runtime_packages, runtime_venv, venv_environ
from edge_distill.errors import BenchError, ConfigError

ROOT = Path(__file__).resolve().parents[1]
AGENT = ROOT / "export" / "agent.py"
TFLITE_RUNTIME = "tflite-runtime==2.14.0"
OPTIONS = AgentOptions(threads=1, warmup=2, runs=10, predictions=True)


def _runtime(*requirements: str) -> Path:
    try:
        return runtime_venv(requirements, progress=lambda line: None)
    except BenchError as exc:  # no network, no index, no wheel for this Python/machine
        pytest.skip(f"cannot install {' '.join(requirements)}: {exc.message.splitlines()[-1]}")


@pytest.fixture(scope="module")
def numpy1():
    return _runtime(TFLITE_RUNTIME, "numpy<2")


@pytest.fixture(scope="module")
def numpy2():
    return _runtime(TFLITE_RUNTIME, "numpy>=2")


def _agent(python: Path, model: Path, npz: Path) -> subprocess.CompletedProcess:
    # The command the local runner builds, with the runtime venv's Python in place of the host's.
    return subprocess.run([str(python), str(AGENT), str(model), *OPTIONS.argv(), "--npz", str(npz)],
                          capture_output=True, text=True, timeout=300, env=venv_environ())


def _infer(python: Path, folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), str(folder / "infer.py"), *args], capture_output=True, text=True, timeout=300,
                          env=venv_environ())


def test_tflite_runtime_with_numpy1_gives_litert_s_answers(numpy1, bundled, digits):  # noqa: F811
    assert runtime_packages(numpy1)["tflite-runtime"] == "2.14.0"
    assert runtime_packages(numpy1)["numpy"].startswith("1.")
    folder = bundled["run"].path("bundle/raspberry-pi")
    model = folder / "model.tflite"
    host = LocalRunner().run_agent(AGENT, model, OPTIONS, digits["nhwc"], 300)
    assert host["runtime"] == "ai_edge_litert"

    proc = _agent(numpy1, model, digits["nhwc"])
    device = parse_agent_output(model.name, proc.returncode, proc.stdout, proc.stderr)
    assert (device["runtime"], device["runtime_version"]) == ("tflite_runtime", "2.14.0")
    assert device["n_eval"] == digits["facts"].n_test
    assert device["predictions"] == host["predictions"] == digits["logits"].argmax(1).tolist()
    assert device["accuracy"] == host["accuracy"] == digits["accuracy"]

    out = _infer(numpy1, folder, str(digits["raw"]), "--json", "--threads", "1")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["runtime"] == "tflite_runtime" and result["accuracy"] == digits["accuracy"]
    assert result["predictions"] == digits["logits"].argmax(1).tolist()


def _assert_clear(text: str) -> None:
    assert 'pip install "numpy<2"' in text and "tflite-runtime 2.14.0 was built against NumPy 1.x" in text, text
    assert "Traceback" not in text and "<built-in method" not in text, text


def test_tflite_runtime_with_numpy2_fails_with_a_clear_message(numpy2, bundled, digits):  # noqa: F811
    assert int(runtime_packages(numpy2)["numpy"].split(".")[0]) >= 2
    folder = bundled["run"].path("bundle/raspberry-pi")
    model = folder / "model.tflite"

    proc = _agent(numpy2, model, digits["nhwc"])
    assert proc.returncode == 2
    with pytest.raises(BenchError) as info:
        parse_agent_output(model.name, proc.returncode, proc.stdout, proc.stderr)
    _assert_clear(str(info.value))  # message + hint, as the CLI prints them

    out = _infer(numpy2, folder, str(digits["raw"]), "--json")
    assert out.returncode == 1 and out.stdout == ""
    _assert_clear(out.stderr)

    # The safety net: a tflite-runtime not known to need NumPy 1.x gets as far as the real SystemError, which is
    # still reported as the NumPy mismatch (agent: at load; infer.py: around main).
    probe = ("import json, sys; sys.path.insert(0, sys.argv[1]); import {mod}; {mod}.TFLITE_RUNTIME_LAST_NUMPY1 = (0, 0); "
             "sys.exit({mod}.{call}(sys.argv[2:]))")
    proc = subprocess.run([str(numpy2), "-c", probe.format(mod="agent", call="main"), str(AGENT.parent), str(model),
                           "--runs", "1"], capture_output=True, text=True, timeout=300, env=venv_environ())
    assert proc.returncode == 2 and "A module that was compiled using NumPy 1.x" in proc.stderr  # it really got there
    _assert_clear(json.loads(proc.stdout)["error"] + " " + json.loads(proc.stdout)["hint"])
    proc = subprocess.run([str(numpy2), "-c", probe.format(mod="infer", call="run"), str(folder), str(digits["raw"])],
                          capture_output=True, text=True, timeout=300, env=venv_environ())
    assert proc.returncode == 1 and "A module that was compiled using NumPy 1.x" in proc.stderr
    _assert_clear(proc.stderr[proc.stderr.index("error: "):])  # numpy's own warning above it, then ours, last


# ---- runtime_venv itself (no network: pip is already in every new venv) -----------------------------------

def test_runtime_venv_is_built_once_and_an_unfinished_one_is_rebuilt(tmp_path):
    lines: list[str] = []
    results: list[Path] = []
    # Two callers at once: one builds while the other waits on the lock, then both get the same venv.
    threads = [threading.Thread(target=lambda: results.append(runtime_venv(("pip",), tmp_path, progress=lines.append)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and results[0] == results[1] and results[0].is_file()
    python = results[0]
    venv = python.parent.parent
    assert sum(line.startswith("[1/3]") for line in lines) == 1 and (venv / READY).is_file()
    assert "pip" in runtime_packages(python)
    assert subprocess.run([str(python), "-c", "import numpy"], capture_output=True, env=venv_environ()).returncode != 0

    lines.clear()
    assert runtime_venv(("pip",), tmp_path, progress=lines.append) == python and lines == []  # cached: nothing to do

    (venv / READY).unlink()  # as if the install had been interrupted
    assert runtime_venv(("pip",), tmp_path, progress=lines.append) == python
    assert "unfinished" in lines[0] and (venv / READY).is_file()


def test_runtime_venv_failure_leaves_nothing_that_looks_finished(tmp_path):
    missing = str(tmp_path / "no_such_package-1.0-py3-none-any.whl")
    with pytest.raises(BenchError, match="pip install") as info:
        runtime_venv((missing,), tmp_path / "cache", progress=lambda line: None)
    assert "package index" in info.value.hint
    assert not [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]  # the half-built venv is gone
    with pytest.raises(ConfigError, match="are invalid"):
        runtime_venv(("--index-url=http://example.invalid",), tmp_path / "cache")
