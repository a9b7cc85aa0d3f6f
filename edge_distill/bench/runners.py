"""Runners: how the device agent (``export/agent.py``) gets executed, and where.

A runner takes the agent script, a model and the agent's options, runs the agent somewhere (this
machine, an emulator, a board over ssh, a phone over adb), and returns the agent's JSON object.
``local`` lives here; ``qemu-arm64`` (qemu.py), ``ssh`` (ssh.py) and ``adb`` (adb.py) are further
``Runner`` subclasses registered in ``RUNNERS``: they copy the files over, run the same agent, and say
honestly in ``where()`` what the numbers mean there.

A runner is named by a *spec*: a registered name (``local``, ``qemu-arm64``, ``adb``) or a URL whose
scheme is one (``ssh://user@host:port``).  ``make_runner(spec)`` turns it into a ready ``Runner``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import BenchError, ConfigError
from ..registry import Registry


# The agent's --kernels modes (export/agent.py KERNELS): the default delegate, the optimized builtin kernels, the
# reference kernels.
KERNELS = ("xnnpack", "builtin", "reference")


@dataclass(frozen=True)
class AgentOptions:
    """The agent's command-line options, independent of where it runs (``logits`` excepted: a path there)."""

    threads: int
    warmup: int
    runs: int
    eval_limit: int = 0  # --batch-limit: evaluate at most this many --npz samples (0 = all)
    predictions: bool = False  # --predictions: also return every scored sample's top-1 class
    xnnpack: bool = True  # False: --no-xnnpack, the same as kernels="builtin"
    kernels: str = "xnnpack"  # --kernels: one of KERNELS
    logits: str | None = None  # --logits: where the agent writes the dequantized outputs (.npy, on its machine)

    def __post_init__(self) -> None:
        if self.kernels not in KERNELS:
            raise ConfigError(f"Kernels {self.kernels!r} are unknown.", f"Use one of: {', '.join(KERNELS)}.")
        if not self.xnnpack and self.kernels == "reference":
            raise ConfigError("xnnpack=False (builtin kernels) contradicts kernels='reference'.", "Give only kernels.")

    @property
    def effective_kernels(self) -> str:
        return "builtin" if not self.xnnpack else self.kernels

    def argv(self) -> list[str]:
        argv = ["--threads", str(self.threads), "--warmup", str(self.warmup), "--runs", str(self.runs),
                "--batch-limit", str(self.eval_limit)]
        argv += ["--predictions"] if self.predictions else []
        # builtin keeps its old spelling, which agents older than --kernels understand too.
        argv += {"xnnpack": [], "builtin": ["--no-xnnpack"], "reference": ["--kernels", "reference"]}[self.effective_kernels]
        return argv + (["--logits", self.logits] if self.logits else [])


class Runner(ABC):
    """Runs the agent once and returns its JSON object; raises ``BenchError`` with the agent's message."""

    name: str = ""
    spec: str = ""  # what the user wrote (e.g. ``ssh://pi@board:22``); results record it as their runner
    shares_files: bool = False  # True when the agent sees this machine's files (so --logits lands here)

    @classmethod
    def from_spec(cls, spec: str) -> "Runner":
        """Build the runner from its spec; raise ``ConfigError``/``BenchError`` if it cannot work here.

        Runners without parameters accept only their bare name."""
        if spec != cls.name:
            raise ConfigError(f"Runner {spec!r} takes no parameters.", f"Use --runner {cls.name}.")
        runner = cls()
        runner.spec = spec
        return runner

    @abstractmethod
    def run_agent(self, agent: Path, model: Path, options: AgentOptions, eval_npz: Path | None,
                  timeout_s: float) -> dict[str, Any]: ...

    @abstractmethod
    def where(self, facts: dict[str, Any]) -> str:
        """Where the numbers were measured, in words, from the agent's machine facts."""


RUNNERS: Registry[type[Runner]] = Registry("bench runner")


def make_runner(spec: str) -> Runner:
    """``local`` / ``qemu-arm64`` / ``adb`` / ``ssh://user@host[:port]`` → a ready runner.

    Unknown names raise ``ConfigError`` listing the known ones; a known runner that cannot work on this
    machine (no emulator root, no ``adb``) raises ``BenchError`` saying what to install or set up."""
    if not isinstance(spec, str) or not spec:
        raise ConfigError(f"Runner spec {spec!r} is invalid.", "Use local, qemu-arm64, adb or ssh://user@host[:port].")
    name = spec.split("://", 1)[0] if "://" in spec else spec
    return RUNNERS.get(name).from_spec(spec)


def venv_environ(base: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without what would make a venv's Python see other packages or another stdlib."""
    env = dict(os.environ if base is None else base)
    for name in ("PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE", "VIRTUAL_ENV", "__PYVENV_LAUNCHER__"):
        env.pop(name, None)
    return env


def user_cache_dir(override_env: str, leaf: str) -> Path:
    """``$override_env`` if set, else ``$XDG_CACHE_HOME`` (or ~/.cache) / edge-distill / ``leaf``: where the tool keeps
    what it builds once for the user (runtime venvs, the qemu-arm64 root)."""
    env = os.environ.get(override_env)
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "edge-distill" / leaf


def run_command(cmd: list[str], label: str, timeout_s: float, what: str, **kwargs: Any) -> subprocess.CompletedProcess:
    """Run one helper command (ssh, scp, adb, qemu) with a timeout; a timeout becomes a ``BenchError``."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL, **kwargs)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{what} for {label} did not finish within {timeout_s:g} s and was stopped.",
                         "Use fewer --runs / a smaller --npz, or check that the device is reachable.") from None
    except FileNotFoundError as exc:
        raise BenchError(f"{what} for {label} failed: {cmd[0]!r} is not installed ({exc.strerror}).",
                         "Install it, or use --runner local.") from None


def run_streaming(cmd: list[str], progress: Callable[[str], None], what: str, timeout_s: float, *, env: dict | None = None,
                  timeout_hint: str = "", failure_hint: str = "", missing_hint: str = "", indent: str = "") -> list[str]:
    """Run a long setup command (debootstrap, pip, venv), passing its output lines to ``progress`` as they come;
    returns its last 20 lines.  A timeout, a non-zero exit or a missing program is a ``BenchError`` with its hint."""
    start = time.monotonic()
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL, env=env)
    except FileNotFoundError:
        raise BenchError(f"{what}: {cmd[0]!r} is not installed.", missing_hint) from None
    tail: list[str] = []
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            line = line.rstrip()
            if line:
                tail = (tail + [line])[-20:]
                progress(indent + line)
            if time.monotonic() - start > timeout_s:
                raise subprocess.TimeoutExpired(cmd, timeout_s)
        proc.wait(timeout=max(1.0, timeout_s - (time.monotonic() - start)))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise BenchError(f"{what} did not finish within {timeout_s:g} s.", timeout_hint) from None
    if proc.returncode != 0:
        raise BenchError(f"{what} failed (exit code {proc.returncode}):\n" + "\n".join(tail), failure_hint)
    return tail


def parse_agent_output(label: str, returncode: int, stdout: str, stderr: str) -> dict[str, Any]:
    """The agent prints one JSON object; turn it (or its absence) into a result or a ``BenchError``."""
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    data: Any = None
    if lines:
        try:
            data = json.loads(lines[-1])
        except json.JSONDecodeError:
            data = None
    tail = "\n".join(stderr.strip().splitlines()[-15:])
    if isinstance(data, dict) and "error" in data:
        raise BenchError(f"Benchmark of {label} failed: {data['error']}", data.get("hint", ""))
    if returncode != 0 or not isinstance(data, dict):
        if returncode < 0:
            try:
                how = f"was killed by {signal.Signals(-returncode).name}"
            except ValueError:
                how = f"was killed by signal {-returncode}"
        elif returncode != 0:
            how = f"exited with code {returncode}"
        else:
            how = "printed no JSON result"
        raise BenchError(f"The benchmark agent {how} while running {label}.\nAgent stderr (last lines):\n{tail}",
                         "A crash while loading usually means a corrupt or unsupported model file.")
    return data


@RUNNERS.register("local")
class LocalRunner(Runner):
    """The agent in a fresh process of this Python on this machine (so imports and memory are isolated).

    ``python`` runs it under another interpreter instead, e.g. a device runtime's venv (device_runtimes.py)."""

    name = "local"
    shares_files = True

    def __init__(self, python: str | Path | None = None) -> None:
        self.python = str(python) if python is not None else sys.executable

    def run_agent(self, agent: Path, model: Path, options: AgentOptions, eval_npz: Path | None,
                  timeout_s: float) -> dict[str, Any]:
        cmd = [self.python, str(agent), str(model), *options.argv()]
        if eval_npz is not None:
            cmd += ["--npz", str(eval_npz)]
        # Another interpreter must not see this venv's packages through inherited PYTHON* variables.
        env = None if self.python == sys.executable else venv_environ()
        proc = run_command(cmd, model.name, timeout_s, "Benchmark", env=env)
        return parse_agent_output(model.name, proc.returncode, proc.stdout, proc.stderr)

    def where(self, facts: dict[str, Any]) -> str:
        machine = facts.get("machine", "unknown")
        if machine.lower() in ("x86_64", "amd64", "i386", "i686", "x86"):
            return f"host {machine} (build machine, not the target device)"
        return (f"host {machine} (local run on the build machine; it is the target device only if "
                f"edge-distill itself runs on the device)")
