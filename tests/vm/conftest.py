"""The VM tier: real Debian 12 guests under QEMU (software emulation), pure cgroup v2.

These tests are marked ``vm`` and run only when asked for: ``make test-vm``
(``pytest -m vm tests/vm``). A plain ``pytest tests`` leaves them out (they
take minutes and build a guest image on first use).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import need, need_root
from tests.vm.image import GuestImage, ensure_image
from tests.vm.wheelhouse import build_site, build_wheelhouse

PROJECT = Path(__file__).resolve().parents[2]
TOOLS = ("qemu-system-x86_64", "debootstrap", "mkfs.ext4", "cpio", "apt-get", "dpkg-deb",
         "timeout", "ip")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "vm: boots QEMU guests (make test-vm)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    expr = config.option.markexpr or ""
    if "vm" in expr and "not vm" not in expr:
        return
    here = Path(__file__).parent
    left = [i for i in items if here in Path(str(i.fspath)).parents]
    if left:
        config.hook.pytest_deselected(items=left)
        items[:] = [i for i in items if i not in left]


@pytest.fixture(scope="session")
def vm_image() -> GuestImage:
    need_root()
    missing = [t for t in TOOLS if shutil.which(t) is None]
    need(not missing, f"the VM tier needs {', '.join(missing)} (make test-vm installs them)")
    return ensure_image()


@pytest.fixture(scope="session")
def vm_work() -> Iterator[Path]:
    """The host side of the guests' ``work`` share, for the whole session."""
    path = Path(tempfile.mkdtemp(prefix=f"podium-vmtest-{os.getpid()}-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def wheelhouse(vm_work: Path) -> Path:
    """podium and its dependencies as wheels, at /vmwork/wheelhouse in the guests."""
    return build_wheelhouse(PROJECT, vm_work / "wheelhouse")


@pytest.fixture(scope="session")
def guest_site(vm_work: Path) -> Path:
    """The dependencies and pytest, at /vmwork/site in the guests (for PYTHONPATH)."""
    return build_site(PROJECT, vm_work / "site")
