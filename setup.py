"""The wheel's package list, by discovery; everything else about the package is in pyproject.toml.

pyproject.toml's `[tool.setuptools.packages.find]` names each package after its path under `where`, so it could find
export/ only as a top-level `export`, never as `edge_distill.export`.  Here each folder of pyproject's `package-dir`
(package -> folder, the one place that mapping is written) is searched on its own and its subfolders are named under
the package it maps to, so a new folder (with or without an __init__.py) reaches the wheel without anyone listing
it.  Every non-.py file under those folders ships too (include-package-data + MANIFEST.in).  tests/test_wheel.py
builds and installs the wheel to prove both.
"""

import tomllib
from pathlib import Path

from setuptools import find_namespace_packages, setup

PACKAGE_DIR = tomllib.loads((Path(__file__).parent / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]


def discover(package_dir: dict[str, str]) -> list[str]:
    found = []
    for name, folder in package_dir.items():
        subpackages = find_namespace_packages(folder, exclude=["__pycache__", "*.__pycache__"])
        found += [name] + [f"{name}.{sub}" for sub in subpackages]
    return sorted(found)


setup(packages=discover(PACKAGE_DIR))
