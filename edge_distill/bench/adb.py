"""The ``adb`` runner: the agent on an Android device over the Android Debug Bridge.

    edge-distill bench student_int8.tflite --runner adb                 # the only attached device
    edge-distill bench student_int8.tflite --runner adb://R58M12345     # one device by serial
    edge-distill bench student_int8.tflite --runner 'adb://emulator-5554?python=/data/local/tmp/py/bin/python3'

Push (agent, model, data into ``/data/local/tmp/edge-distill/``), run (the device's Python, output
redirected to a file there), pull (``adb exec-out cat`` of that file, so nothing is written on this
machine), clean up.  Android ships no Python: the device needs one that ``adb shell`` can execute, with
numpy and a TFLite runtime (``python=`` points at it).  Without ``adb`` or without a device the runner
stops with a message saying which.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..errors import BenchError, ConfigError
from .runners import RUNNERS, AgentOptions, Runner, parse_agent_output, run_command

REMOTE_DIR = "/data/local/tmp/edge-distill"  # the one place adb shell may write on any Android device
SETUP_TIMEOUT_S = 60.0
_SERIAL_RE = re.compile(r"^[A-Za-z0-9._:-]+$")


def attached_devices(timeout_s: float = 30.0) -> list[str]:
    """Serials of the devices ``adb devices`` lists as ready (not unauthorized/offline)."""
    proc = run_command(["adb", "devices"], "adb", timeout_s, "adb devices")
    if proc.returncode != 0:
        raise BenchError(f"`adb devices` failed (exit code {proc.returncode}): {proc.stderr.strip()[-300:]}",
                         "Check the adb installation (adb kill-server; adb start-server).")
    serials = []
    for line in proc.stdout.splitlines()[1:]:  # first line: "List of devices attached"
        fields = line.split()
        if len(fields) >= 2 and fields[1] == "device":
            serials.append(fields[0])
    return serials


@RUNNERS.register("adb")
class AdbRunner(Runner):
    """The agent on an Android device; numbers are the device's own."""

    name = "adb"

    def __init__(self, serial: str, python: str) -> None:
        self.serial, self.python = serial, python

    @classmethod
    def from_spec(cls, spec: str) -> "AdbRunner":
        how = "Use --runner adb, or adb://SERIAL (see `adb devices`), optionally ?python=/path/on/device."
        serial, python = None, "python3"
        if spec != "adb":
            parts = urlsplit(spec)
            if parts.scheme != "adb" or parts.path not in ("", "/") or parts.fragment:
                raise ConfigError(f"Runner {spec!r} is not an adb runner spec.", how)
            serial = parts.netloc or None
            if serial is not None and not _SERIAL_RE.match(serial):
                raise ConfigError(f"adb serial {serial!r} in {spec!r} has characters a serial cannot have.", how)
            query = parse_qs(parts.query, keep_blank_values=True)
            if set(query) - {"python"}:
                raise ConfigError(f"Runner {spec!r} has unknown option(s): {', '.join(sorted(set(query) - {'python'}))}.", how)
            python = query.get("python", [python])[-1] or python
        if shutil.which("adb") is None:
            raise BenchError("No Android device: the `adb` command is not installed, so no device can be reached.",
                             "Install the Android platform tools (Debian: apt-get install adb), connect a device "
                             "with USB debugging enabled, and check `adb devices`.")
        devices = attached_devices()
        if not devices:
            raise BenchError("No Android device: `adb devices` lists no device that is ready.",
                             "Connect a device with USB debugging enabled and accept the authorization prompt "
                             "(or start an emulator), then check `adb devices`.")
        if serial is None:
            if len(devices) > 1:
                raise ConfigError(f"Several Android devices are attached ({', '.join(devices)}).",
                                  "Pick one with --runner adb://SERIAL.")
            serial = devices[0]
        elif serial not in devices:
            raise BenchError(f"Android device {serial!r} is not attached (ready: {', '.join(devices)}).", how)
        runner = cls(serial, python)
        runner.spec = spec
        return runner

    def _adb(self, *args: str) -> list[str]:
        return ["adb", "-s", self.serial, *args]

    def _shell(self, script: str, label: str, timeout_s: float, what: str):
        # adb shell hands its argument to the device's sh; every argument inside is shlex-quoted.
        proc = run_command(self._adb("shell", script), label, timeout_s, what)
        if proc.returncode != 0:
            raise BenchError(f"adb runner: {what} on {self.serial} failed (exit code {proc.returncode}): "
                             f"{(proc.stderr or proc.stdout).strip()[-400:]}",
                             "Check the device with `adb shell`.")
        return proc

    def run_agent(self, agent: Path, model: Path, options: AgentOptions, eval_npz: Path | None,
                  timeout_s: float) -> dict[str, Any]:
        label = model.name
        q = shlex.quote
        self._shell(f"rm -rf {q(REMOTE_DIR)} && mkdir -p {q(REMOTE_DIR)}/model", label, SETUP_TIMEOUT_S, "making a work directory")
        try:
            for local, remote in [(agent, f"{REMOTE_DIR}/{agent.name}"), (model, f"{REMOTE_DIR}/model/{model.name}")] + (
                    [(eval_npz, f"{REMOTE_DIR}/{eval_npz.name}")] if eval_npz is not None else []):
                proc = run_command(self._adb("push", str(local), remote), label, max(SETUP_TIMEOUT_S, timeout_s), "adb push")
                if proc.returncode != 0:
                    raise BenchError(f"adb push of {local.name} to {self.serial} failed: {proc.stderr.strip()[-300:]}",
                                     "Check free space on the device (adb shell df /data/local/tmp).")
            argv = [self.python, f"{REMOTE_DIR}/{agent.name}", f"{REMOTE_DIR}/model/{model.name}", *options.argv()]
            if eval_npz is not None:
                argv += ["--npz", f"{REMOTE_DIR}/{eval_npz.name}"]
            # Output goes to files on the device and is pulled back: old adb versions mangle stdout (CRLF)
            # and lose the exit code.
            run = (f"{shlex.join(argv)} > {q(REMOTE_DIR)}/result.json 2> {q(REMOTE_DIR)}/stderr.txt; "
                   f"echo $? > {q(REMOTE_DIR)}/rc")
            self._shell(run, label, timeout_s, "running the agent")
            out = run_command(self._adb("exec-out", f"cat {q(REMOTE_DIR)}/result.json"), label, SETUP_TIMEOUT_S, "adb pull")
            err = run_command(self._adb("exec-out", f"cat {q(REMOTE_DIR)}/stderr.txt"), label, SETUP_TIMEOUT_S, "adb pull")
            rc = run_command(self._adb("exec-out", f"cat {q(REMOTE_DIR)}/rc"), label, SETUP_TIMEOUT_S, "adb pull")
            try:
                code = int(rc.stdout.strip())
            except ValueError:
                code = 1
            return parse_agent_output(label, code, out.stdout, err.stdout)
        finally:
            try:
                run_command(self._adb("shell", f"rm -rf {q(REMOTE_DIR)}"), label, SETUP_TIMEOUT_S, "adb clean-up")
            except BenchError:
                pass

    def where(self, facts: dict[str, Any]) -> str:
        what = facts.get("board") or facts.get("cpu_model") or "unknown CPU"
        return f"device {facts.get('machine', 'unknown')} ({what}) over adb {self.serial}"
