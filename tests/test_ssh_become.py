"""`become` for real: the shipped inventories log in as an unprivileged `deploy` and write through
`sudo -n`. Here the login user is a real unprivileged account with a passwordless sudoers drop-in
(and another whose sudo wants a password), logging into the rig's sshd with the rig's key.

The hosts' files live under pytest's root-only (0700) temp directory, so the login user cannot
even read them: everything that works below went through sudo.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from indostar_ops import Context, load_environment
from indostar_ops.connectors.ssh import SSHConnector
from tests.host_support import targets
from tests.rig.sshd import RigHost, SshRig, ensure_login_user
from tests.support import InventoryDir, cli_json, rig_inventory

DEPLOY = "indostar-rig-deploy"
PWSUDO = "indostar-rig-pwsudo"


@pytest.fixture(scope="module")
def users() -> Iterator[None]:
    ensure_login_user(DEPLOY, sudo="nopasswd")
    ensure_login_user(PWSUDO, sudo="password")
    yield


def _inventory(inventory: InventoryDir, ssh_rig: SshRig, hosts: list[RigHost], root: Path, user: str) -> None:
    data = rig_inventory(ssh_rig, hosts, root)
    data["ssh"].update(user=user, become=True)
    inventory.write("rig", data)


def test_unprivileged_login_with_passwordless_sudo_installs_root_owned_files(
    users: None, inventory: InventoryDir, ssh_rig: SshRig, rig_hosts: list[RigHost], tmp_path: Path,
) -> None:
    root = tmp_path / "hosts"
    _inventory(inventory, ssh_rig, rig_hosts[:1], root, DEPLOY)
    installed = root / rig_hosts[0].name / "etc/logrotate.d/indostar"

    target = load_environment("rig").hosts()[0]
    plain = SSHConnector(target, load_environment("rig").ssh)
    try:  # the login really is unprivileged: it cannot see the host's files without sudo
        assert plain.run(["id", "-un"]).stdout.strip() == DEPLOY
        assert not plain.run(["ls", str(root)]).ok
    finally:
        plain.close()

    code, doc = cli_json("ssh.check", "--env", "rig")
    result = targets(doc, "ssh.check")[rig_hosts[0].name]
    assert code == 0 and result["data"]["sudo"] == "ok" and "sudo -n: ok" in result["reason"]

    code, doc = cli_json("logs.install-rotation", "--env", "rig", "--check")
    assert code == 0 and doc["counts"]["changed"] == 1 and not installed.exists()

    code, doc = cli_json("logs.install-rotation", "--env", "rig")
    assert code == 0, doc
    assert installed.stat().st_uid == 0 and installed.stat().st_gid == 0
    assert oct(installed.stat().st_mode & 0o777) == "0o644"
    code, again = cli_json("logs.install-rotation", "--env", "rig")
    assert code == 0 and again["counts"]["changed"] == 0

    # an upload (staged by the login user, then `sudo install`ed) lands root-owned with the asked mode
    page = root / rig_hosts[0].name / "etc/page.html"
    with Context(load_environment("rig")) as ctx:
        scoped = ctx.scoped("test.upload", target.name)
        scoped.host(target).upload(b"<p>back soon</p>\n", str(page), "install page", mode=0o640)
    assert page.read_bytes() == b"<p>back soon</p>\n"
    assert page.stat().st_uid == 0 and oct(page.stat().st_mode & 0o777) == "0o640"


def test_sudo_that_wants_a_password_is_a_clear_error_naming_the_host(
    users: None, inventory: InventoryDir, ssh_rig: SshRig, rig_hosts: list[RigHost], tmp_path: Path,
) -> None:
    root = tmp_path / "hosts"
    _inventory(inventory, ssh_rig, rig_hosts[:1], root, PWSUDO)
    host = rig_hosts[0].name

    code, doc = cli_json("logs.install-rotation", "--env", "rig")
    result = targets(doc, "logs.install-rotation")[host]
    assert code == 1 and result["status"] == "failed"
    assert result["error"].startswith(f"{host}: sudo wants a password for {PWSUDO}")
    assert "passwordless sudo" in result["error"]
    assert not (root / host / "etc/logrotate.d/indostar").exists()

    code, doc = cli_json("ssh.check", "--env", "rig")
    result = targets(doc, "ssh.check")[host]
    assert code == 2 and result["severity"] == "CRITICAL"
    assert f"sudo -n: sudo wants a password for {PWSUDO}" in result["reason"]
