"""Fixtures: isolation from the developer's environment, inventories, and the real-component rig."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.rig.sshd import RigHost, SshRig
from tests.support import InventoryDir

_LEAKY = ("AWS_", "PG", "INDOSTAR_", "KUBECONFIG", "REDIS_URL")


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Never read the developer's AWS, PostgreSQL, Kubernetes or indostar settings; journal in tmp."""
    for name in list(os.environ):
        if name.startswith(_LEAKY) and not name.startswith("INDOSTAR_TEST_"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("INDOSTAR_JOURNAL_DIR", str(tmp_path / "journal"))
    monkeypatch.setenv("INDOSTAR_SANDBOX_ROOT", str(tmp_path / "sandbox"))
    return tmp_path


@pytest.fixture
def inventory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> InventoryDir:
    directory = tmp_path / "inventory"
    directory.mkdir()
    monkeypatch.setenv("INDOSTAR_INVENTORY_DIR", str(directory))
    return InventoryDir(directory)


@pytest.fixture(scope="session")
def ssh_rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshRig]:
    """Three loopback hosts served by a private sshd on a free port, for the whole session."""
    rig = SshRig(tmp_path_factory.mktemp("sshd"), port=_free_port("127.0.2.1"))
    rig.start(3)
    yield rig
    rig.stop()


def _free_port(address: str) -> int:
    """A port free on `address`, so concurrent test sessions do not collide."""
    with socket.socket() as probe:
        probe.bind((address, 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def rig_hosts(ssh_rig: SshRig) -> list[RigHost]:
    return list(ssh_rig.hosts)


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    return os.environ.get("INDOSTAR_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def redis_url() -> str:
    return os.environ.get("INDOSTAR_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
