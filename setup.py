"""The wheel's package list, by discovery: everything else about the package is in pyproject.toml.

pyproject.toml's `[tool.setuptools.packages.find]` names each package after its path under `where`, so it can find
export/ only as a top-level `export`; the device side ships as `edge_distill.export`.  Each source folder below is
searched on its own and its subpackages are named under the package it maps to, so a new folder (with or without an
__init__.py) reaches the wheel without anyone listing it.  Every non-.py file under these folders ships too
(include-package-data + MANIFEST.in).  tests/test_wheel.py builds and installs the wheel to prove both.
"""

from setuptools import find_namespace_packages, setup

# installed package -> source folder
PACKAGE_DIR = {"edge_distill": "edge_distill", "edge_distill.export": "export"}


def discover(package_dir: dict[str, str]) -> list[str]:
    found = []
    for name, folder in package_dir.items():
        subpackages = find_namespace_packages(folder, exclude=["__pycache__", "*.__pycache__"])
        found += [name] + [f"{name}.{sub}" for sub in subpackages]
    return sorted(found)


setup(package_dir=PACKAGE_DIR, packages=discover(PACKAGE_DIR))
