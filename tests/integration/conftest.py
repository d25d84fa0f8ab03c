"""Fixtures several integration modules share: registries on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.registry import Registry, need_registry_tools


@pytest.fixture
def registry(tmp_dir: Path) -> Iterator[Registry]:
    need_registry_tools()
    reg = Registry(tmp_dir / "registry").start()
    yield reg
    reg.stop()


@pytest.fixture
def auth_registry(tmp_dir: Path) -> Iterator[Registry]:
    need_registry_tools()
    reg = Registry(tmp_dir / "auth-registry", users={"alice": "s3cret"}).start()
    yield reg
    reg.stop()
