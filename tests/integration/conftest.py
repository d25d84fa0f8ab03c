"""Fixtures several integration modules share: registries on loopback, a fork server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.forkserver import ForkServer
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


@pytest.fixture
def fork_server() -> Iterator[ForkServer]:
    fs = ForkServer.start()
    yield fs
    fs.close()
