"""Python packages for guests without a network, built on the host.

- ``build_wheelhouse``: podium's wheel (from a copy of the working tree) beside the
  wheels of its dependencies: what ``deploy/provision.sh --wheelhouse`` installs.
- ``build_site``: the dependencies and pytest unpacked into one directory, for a
  guest that runs the project's tests straight from the shared source tree.

Dependency wheels are cached (keyed by the dependency list and the interpreter)
beside the guest image; the cold build fetches them from the package index.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.vm.image import CACHE

# What the guests' test runs need on top of podium's dependencies.
TEST_TOOLS = ("pytest>=8", "pytest-timeout>=2.2", "hypothesis>=6.100")
# provision.sh runs pip from its wheel when the wheelhouse has one (no ensurepip).
INSTALLER = ("pip",)
# What a wheel of podium is built from; tests, docs and the venv stay behind.
SOURCES = ("runtime", "agent", "scheduler", "client", "proto", "pyproject.toml", "README.md")


class WheelhouseError(RuntimeError):
    """Building wheels failed; the message names the step and pip's last words."""


def dependencies(project: Path) -> list[str]:
    data = tomllib.loads((project / "pyproject.toml").read_text())
    return list(data["project"]["dependencies"])


def _pip(args: list[str], what: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-4:])
        raise WheelhouseError(f"{what} failed: {tail}")


def dependency_wheels(project: Path, cache: Path = CACHE) -> Path:
    """A cached directory of wheels for podium's dependencies and the test tools."""
    wanted = sorted(dependencies(project)) + list(TEST_TOOLS) + list(INSTALLER)
    key = hashlib.sha256("\0".join([sys.version, *wanted]).encode()).hexdigest()[:16]
    final = cache / f"wheels-{key}"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".wheels.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time; the others reuse it
        if not (final / "done").is_file():
            _build_dependency_wheels(final, wanted, cache)
    return final


def _build_dependency_wheels(final: Path, wanted: list[str], cache: Path) -> None:
    key = final.name.removeprefix("wheels-")
    work = cache / f"wheels-{key}.tmp"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    _pip(["wheel", "-q", "-w", str(work), *wanted], "pip wheel of the dependencies")
    (work / "done").write_text("\n".join(wanted) + "\n")
    for old in cache.glob("wheels-*"):
        if old != work:
            shutil.rmtree(old, ignore_errors=True)
    work.rename(final)


def build_wheelhouse(project: Path, dest: Path, cache: Path = CACHE) -> Path:
    """``dest`` with podium's wheel and every wheel it needs."""
    deps = dependency_wheels(project, cache)
    dest.mkdir(parents=True, exist_ok=True)
    for wheel in deps.glob("*.whl"):
        shutil.copy2(wheel, dest / wheel.name)
    # Build from a copy: building in the tree would leave build/ and egg-info there.
    copy = dest.parent / "podium-src"
    shutil.rmtree(copy, ignore_errors=True)
    copy.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in SOURCES:
        src = project / name
        if src.is_dir():
            shutil.copytree(src, copy / name, ignore=ignore)
        else:
            shutil.copy2(src, copy / name)
    _pip(["wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dest), str(copy)],
         "pip wheel of podium")
    shutil.rmtree(copy)
    return dest


def build_site(project: Path, dest: Path, cache: Path = CACHE) -> Path:
    """``dest`` holding podium's dependencies and pytest, for PYTHONPATH in a guest."""
    deps = dependency_wheels(project, cache)
    wanted = dependencies(project) + list(TEST_TOOLS)
    _pip(["install", "-q", "--no-index", "--find-links", str(deps), "--target", str(dest),
          "--no-compile", *wanted], "pip install --target")
    return dest


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[2]
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(os.getcwd()) / "wheelhouse"
    print(build_wheelhouse(root, out))
