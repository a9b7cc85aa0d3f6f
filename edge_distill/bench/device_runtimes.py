"""The TFLite runtimes a device installs, each in its own cached venv (``runtime_env.runtime_venv``).

    python = setup_device_runtime("litert==2.3.0")      # once; later calls return the cached venv at once
    device_runtime_python("litert==2.3.0")              # that venv's Python, or None when not set up

The host's own ``ai-edge-litert`` is whatever onnx2tf pins (2.1.0), not what a device runs: a phone or a board
installs the current release.  An INT8 file must be judged on the device's runtime, because a runtime's kernels
can be wrong for one op: LiteRT 2.1.0's XNNPACK delegate computes statically quantized BATCH_MATMUL between two
activations wrongly when the right-hand side has a non-zero zero point (fixed from 2.1.3).

Only the runtimes listed in ``DEVICE_RUNTIMES`` are accepted, so a typo or an untested release is refused with the
list instead of silently building a venv that nobody has checked.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..console import get_console
from ..errors import BenchError, ConfigError
from .runtime_env import READY, find_runtime_venv, runtime_packages, runtime_venv, venv_environ


@dataclass(frozen=True)
class DeviceRuntime:
    spec: str  # what users write, e.g. "litert==2.3.0"
    distribution: str  # the pip distribution, e.g. "ai-edge-litert"
    version: str
    module: str  # what the agent imports, e.g. "ai_edge_litert"
    requirements: tuple[str, ...]  # exactly what the venv holds
    note: str

    @property
    def label(self) -> str:
        return f"{self.module} {self.version}"


DEVICE_RUNTIMES: dict[str, DeviceRuntime] = {
    r.spec: r for r in (
        # numpy unpinned: a device installs the current numpy next to the current LiteRT.
        DeviceRuntime("litert==2.3.0", "ai-edge-litert", "2.3.0", "ai_edge_litert", ("ai-edge-litert==2.3.0", "numpy"),
                      "newest LiteRT on PyPI for Python 3.11 (Android, 64-bit Raspberry Pi OS, x86-64)"),
        # tflite-runtime's last release is built against NumPy 1.x (see export/agent.py).
        DeviceRuntime("tflite-runtime==2.14.0", "tflite-runtime", "2.14.0", "tflite_runtime",
                      ("tflite-runtime==2.14.0", "numpy<2"), "last tflite-runtime (32-bit Raspberry Pi OS)"),
    )
}
DEFAULT_DEVICE_RUNTIME = "litert==2.3.0"  # the newest supported runtime: what a device installs today

# Names users may write for a distribution, mapped to the one in DEVICE_RUNTIMES' specs.
_ALIASES = {"litert": "litert", "ai-edge-litert": "litert", "ai_edge_litert": "litert",
            "tflite-runtime": "tflite-runtime", "tflite_runtime": "tflite-runtime"}
_PROBE = ("import json, sys; mod = __import__(sys.argv[1] + '.interpreter', fromlist=['Interpreter']); "
          "top = sys.modules[sys.argv[1]]; import numpy; "
          "kinds = sorted(getattr(getattr(mod, 'OpResolverType', None), '__members__', {})); "
          "print(json.dumps({'version': getattr(top, '__version__', 'unknown'), 'numpy': numpy.__version__, "
          "'resolvers': kinds}))")


def _supported() -> str:
    return ", ".join(DEVICE_RUNTIMES)


def names_device_runtime(text: str) -> bool:
    """Does ``text`` name a device runtime's distribution (supported release or not)?  ``litert==9.9`` does."""
    return isinstance(text, str) and text.split("==")[0].strip().lower() in _ALIASES


def parse_device_runtime(text: str) -> DeviceRuntime:
    """``litert==2.3.0`` / ``ai-edge-litert==2.3.0`` / ``tflite-runtime==2.14.0`` (or a bare name: its only
    supported release) → its ``DeviceRuntime``; anything else is a ``ConfigError`` listing the supported ones."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"Device runtime {text!r} is invalid.", f"Use one of: {_supported()}.")
    match = re.fullmatch(r"\s*([A-Za-z0-9_.-]+?)\s*(?:==\s*([0-9][0-9A-Za-z.]*))?\s*", text)
    name = _ALIASES.get(match.group(1).lower()) if match else None
    if name is None:
        raise ConfigError(f"Unknown device runtime {text!r}.", f"Use one of: {_supported()}.")
    candidates = [r for r in DEVICE_RUNTIMES.values() if r.spec.split("==")[0] == name]
    version = match.group(2)
    if version is None:
        return max(candidates, key=lambda r: tuple(int(p) for p in r.version.split(".")))
    for runtime in candidates:
        if runtime.version == version:
            return runtime
    raise ConfigError(f"Device runtime {text!r} is not supported: {name} {version} has not been checked here.",
                      f"Use one of: {_supported()}.")


def device_runtime_python(spec: str | DeviceRuntime, cache_root: Path | str | None = None) -> Path | None:
    """The Python of ``spec``'s venv when ``setup_device_runtime`` has made it, else None (builds nothing)."""
    runtime = spec if isinstance(spec, DeviceRuntime) else parse_device_runtime(spec)
    return find_runtime_venv(runtime.requirements, cache_root)


def installed_device_runtimes(cache_root: Path | str | None = None) -> list[tuple[DeviceRuntime, Path]]:
    """Every supported runtime whose venv is set up on this machine, with its Python."""
    found = [(r, device_runtime_python(r, cache_root)) for r in DEVICE_RUNTIMES.values()]
    return [(r, python) for r, python in found if python is not None]


def probe_runtime(python: Path | str, runtime: DeviceRuntime) -> dict:
    """What the venv's runtime reports about itself: ``version``, ``numpy``, ``resolvers`` (OpResolverType names)."""
    proc = subprocess.run([str(python), "-c", _PROBE, runtime.module], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, env=venv_environ())
    try:
        return dict(json.loads(proc.stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError):
        tail = "\n".join(proc.stderr.strip().splitlines()[-8:])
        raise BenchError(f"{runtime.spec} is installed in {Path(python).parent.parent} but does not import:\n{tail}",
                         "Remove that folder and set the runtime up again.") from None


def setup_device_runtime(spec: str | DeviceRuntime, cache_root: Path | str | None = None, *,
                         progress: Callable[[str], None] | None = None, force: bool = False,
                         timeout_s: float = 1800) -> Path:
    """Make (once) and check the venv of a device runtime; returns its Python.

    A cached venv is reused without network; ``force`` rebuilds it.  Raises ``ConfigError`` for an unsupported spec and ``BenchError``
    when pip cannot install it here (no network, no wheel for this Python and machine) or it does not import."""
    runtime = spec if isinstance(spec, DeviceRuntime) else parse_device_runtime(spec)
    say = progress or get_console().info
    python = device_runtime_python(runtime, cache_root)
    if python is not None and force:
        # Without its stamp the venv counts as unfinished: runtime_venv rebuilds it, under its lock.
        (Path(python).parent.parent / READY).unlink(missing_ok=True)
        python = None
    if python is None:
        python = runtime_venv(runtime.requirements, cache_root, progress=say, timeout_s=timeout_s)
    facts = probe_runtime(python, runtime)
    if facts["version"] != runtime.version:
        raise BenchError(f"{runtime.spec}'s venv imports {runtime.module} {facts['version']}, not {runtime.version}.",
                         f"Remove {Path(python).parent.parent} and set the runtime up again.")
    packages = runtime_packages(python)
    say(f"{runtime.spec}: {runtime.module} {facts['version']} with numpy {facts['numpy']} "
        f"(pip: {runtime.distribution} {packages.get(runtime.distribution, '?')}), "
        f"op resolvers {', '.join(facts['resolvers']) or 'none'}; python {python}")
    return python
