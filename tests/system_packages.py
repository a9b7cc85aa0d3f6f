"""Skipping a test whose Debian package is missing, with the package's name.

``make test`` installs tests/system-packages.txt first when it can (root + apt-get); where it cannot, the tests
that need a package skip with a one-line reason naming it and the command that installs it, never an error.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

PACKAGE_LIST = Path(__file__).with_name("system-packages.txt")


def listed_packages() -> set[str]:
    lines = (line.split() for line in PACKAGE_LIST.read_text().splitlines() if not line.startswith("#"))
    return {words[0] for words in lines if words}


def skip_reason(package: str, what: str) -> str:
    # The list is the one place the packages are named; a test may only ask for a package that `make test` installs.
    assert package in listed_packages(), f"{package} is not in {PACKAGE_LIST.name}; add it there so `make system-deps` installs it"
    return f"needs Debian's {package} ({what}): `make system-deps` as root, or `sudo apt-get install -y {package}`"


def require_package(package: str, present: bool, what: str) -> None:
    """Skip the calling test (or fixture) when ``present`` is false."""
    if not present:
        pytest.skip(skip_reason(package, what))


def wordnet_present() -> bool:
    return Path(os.environ.get("EDGE_DISTILL_WORDNET", "/usr/share/wordnet/data.noun")).is_file()


def require_wordnet() -> None:
    require_package("wordnet-base", wordnet_present(), "WordNet's noun glosses, /usr/share/wordnet/data.noun")


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def sshd_path() -> str | None:
    return shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)
