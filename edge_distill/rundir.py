"""The run directory: where every artifact of a build lives, plus the manifest that makes builds resumable.

Rules that keep a build trustworthy:
- nothing is written outside ``root`` (paths are resolved and checked);
- every file is written to a temporary name and renamed, so an interrupted build never leaves a
  half-written file that looks finished;
- a stage counts as finished only once its manifest entry is written, after all its files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from .errors import RunDirError

MANIFEST = "manifest.json"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hash_inputs(*parts: Any) -> str:
    """A stable short hash of JSON-able stage inputs (dict key order does not matter)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class RunDir:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise RunDirError(
                f"Cannot write to the run directory {self.root}: {exc.strerror or exc}.",
                "Choose a writable location with --out DIR (or fix the directory's permissions).",
            ) from None

    # ---- paths -------------------------------------------------------------------------------
    def path(self, relative: str | Path) -> Path:
        """A path inside the run directory; refuses anything that would escape it."""
        target = (self.root / relative).resolve()
        if target != self.root and self.root not in target.parents:
            raise RunDirError(f"Refusing to write outside the run directory: {relative}")
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def relative(self, path: Path) -> str:
        return str(Path(path).resolve().relative_to(self.root))

    @contextlib.contextmanager
    def atomic_path(self, relative: str | Path) -> Iterator[Path]:
        """Yields a temporary path next to the target; renames it onto the target only on success."""
        target = self.path(relative)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts are meant to be shared
        try:
            yield tmp_path
            os.replace(tmp_path, target)
        finally:
            if tmp_path.exists():
                tmp_path.unlink()

    def write_text(self, relative: str | Path, text: str) -> Path:
        with self.atomic_path(relative) as tmp:
            tmp.write_text(text)
        return self.path(relative)

    def write_json(self, relative: str | Path, data: Any) -> Path:
        return self.write_text(relative, json.dumps(data, indent=2, sort_keys=False) + "\n")

    # ---- manifest ----------------------------------------------------------------------------
    def load_manifest(self) -> dict[str, Any]:
        path = self.root / MANIFEST
        if not path.exists():
            return {"stages": {}}
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            # A manifest we cannot read is treated as empty: every stage is redone, nothing is trusted.
            return {"stages": {}}

    def finished_stage(self, stage: str, key: str) -> dict[str, Any] | None:
        """The manifest entry of ``stage`` if it finished with the same input key and its files are intact."""
        entry = self.load_manifest()["stages"].get(stage)
        if not entry or entry.get("key") != key:
            return None
        for rel, digest in entry.get("files", {}).items():
            path = self.root / rel
            if not path.exists() or sha256_file(path) != digest:
                return None
        return entry

    def started_key(self, stage: str) -> str | None:
        """The input key the last (possibly unfinished) computation of ``stage`` began with."""
        return self.load_manifest().get("started", {}).get(stage)

    def mark_started(self, stage: str, key: str) -> None:
        manifest = self.load_manifest()
        manifest.setdefault("started", {})[stage] = key
        self.write_json(MANIFEST, manifest)

    def record_stage(self, stage: str, key: str, result: Any, files: list[Path], seconds: float, memory: dict | None = None) -> None:
        manifest = self.load_manifest()
        manifest["stages"][stage] = {
            "key": key,
            "result": result,
            "files": {self.relative(p): sha256_file(p) for p in files},
            "seconds": round(seconds, 3),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **({"memory": memory} if memory is not None else {}),  # stages/memory.py's StageMemory
        }
        self.write_json(MANIFEST, manifest)
