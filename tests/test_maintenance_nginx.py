"""maintenance.on / .off / .status (nginx strategy) on two SSH hosts, each with its own real nginx."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from indostar_ops.context import Context
from indostar_ops.errors import UsageError
from indostar_ops.runner import Runner
from indostar_ops.steps.nginx import MARKER, NginxMaintenanceOn
from tests.host_support import free_port, host_inventory, targets
from tests.rig.nginx import NginxRig
from tests.rig.sshd import SshRig
from tests.support import InventoryDir, cli_json


@pytest.fixture(scope="module")
def nginxes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[NginxRig]]:
    """One private nginx (with backend) per simulated web host."""
    rigs: list[NginxRig] = []
    try:
        for _ in range(2):
            rig = NginxRig(tmp_path_factory.mktemp("nginx"), http_port=free_port(), https_port=free_port(),
                           backend_port=free_port())
            rig.start()
            rigs.append(rig)
        yield rigs
    finally:
        for rig in rigs:
            rig.stop()


@pytest.fixture
def fresh(nginxes: list[NginxRig]) -> list[NginxRig]:
    """Each test starts with maintenance off and no snippet or page installed."""
    for rig in nginxes:
        (rig.workdir / "flag" / "maintenance.on").unlink(missing_ok=True)
        (rig.workdir / "html" / "maintenance.html").unlink(missing_ok=True)
        if rig.maintenance_snippet.read_text():
            rig.maintenance_snippet.write_text("")
            rig.reload()
    return nginxes


def nginx_vars(rig: NginxRig, **extra: Any) -> dict[str, Any]:
    return {"nginx": {
        "command": rig.nginx_cmd_prefix(),
        "maintenance_snippet": str(rig.maintenance_snippet),
        "maintenance_flag": str(rig.workdir / "flag" / "maintenance.on"),
        "maintenance_page_dir": str(rig.workdir / "html"),
        "probe_url": rig.http_url + "/shop/cart",
        "probe_wait_s": 15,
        **extra,
    }}


@pytest.fixture
def web_env(inventory: InventoryDir, ssh_rig: SshRig, fresh: list[NginxRig], tmp_path: Path):
    """Inventory 'web': host-1 and host-2 (SSH) in front of their own nginx; returns the env name."""
    def make(strategy: str = "nginx", **per_host: dict[str, Any]) -> str:
        hosts = ssh_rig.hosts[:2]
        host_vars = {h.name: nginx_vars(rig, **per_host.get(h.name.replace("-", "_"), {}))
                     for h, rig in zip(hosts, fresh, strict=True)}
        inventory.write("web", host_inventory(ssh_rig, hosts, tmp_path, host_vars,
                                              maintenance={"strategy": strategy}))
        return "web"
    return make


def maintenance_on(env: str, rigs: list[NginxRig]) -> tuple[int, dict[str, Any]]:
    """Run maintenance.on; where it installed the snippet (and reloaded), wait for the old workers to exit."""
    workers = [rig.worker_pids() for rig in rigs]
    code, doc = cli_json("maintenance.on", "--env", env)
    installed = targets(doc, "maintenance.install") if doc.get("steps") else {}
    for i, rig in enumerate(rigs):
        if installed.get(f"host-{i + 1}", {}).get("status") == "changed":
            rig.wait_reloaded(workers[i])
    return code, doc


def get(rig: NginxRig, path: str = "/shop/cart") -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(rig.http_url + path, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_on_check_mode_changes_nothing(web_env, fresh: list[NginxRig]) -> None:
    """maintenance.on --check plans page, snippet and flag, and writes none of them."""
    code, doc = cli_json("maintenance.on", "--env", web_env(), "--check")
    assert code == 0
    install = targets(doc, "maintenance.install")
    assert all(r["status"] == "changed" and len(r["changes"]) == 2 for r in install.values())
    assert all(r["status"] == "changed" for r in targets(doc, "maintenance.on").values())
    for rig in fresh:
        assert rig.maintenance_snippet.read_text() == ""
        assert not (rig.workdir / "flag" / "maintenance.on").exists()
        assert not (rig.workdir / "html" / "maintenance.html").exists()
        assert get(rig) == (200, b"backend ok\n")


def test_on_then_off_with_real_http(web_env, fresh: list[NginxRig]) -> None:
    """on: 503 with the page on both hosts, upstream untouched; off: the upstream answers again; both idempotent."""
    env = web_env()
    code, doc = maintenance_on(env, fresh)
    assert code == 0, doc
    for rig in fresh:
        before = len(rig.backend_requests)
        status, body = get(rig)
        assert status == 503 and MARKER.encode() in body and b"scheduled maintenance" in body
        assert len(rig.backend_requests) == before
    results = targets(doc, "maintenance.on")
    assert all(r["data"]["probe"]["maintenance_page"] for r in results.values())

    code, doc = cli_json("maintenance.on", "--env", env)
    assert code == 0
    assert "already installed" in targets(doc, "maintenance.install")["host-1"]["reason"]
    assert "already on" in targets(doc, "maintenance.on")["host-2"]["reason"]

    code, doc = cli_json("maintenance.status", "--env", env)
    status_result = targets(doc, "maintenance.status")["host-1"]
    assert code == 0 and status_result["data"]["maintenance"] == "on" and status_result["severity"] == "OK"

    code, doc = cli_json("maintenance.off", "--env", env, "--check")
    assert code == 0 and all(get(rig)[0] == 503 for rig in fresh)

    code, doc = cli_json("maintenance.off", "--env", env)
    assert code == 0, doc
    assert all(get(rig) == (200, b"backend ok\n") for rig in fresh)
    code, doc = cli_json("maintenance.off", "--env", env)
    assert code == 0 and "already off" in targets(doc, "maintenance.off")["host-1"]["reason"]


def test_toggling_needs_no_reload_once_installed(web_env, fresh: list[NginxRig]) -> None:
    """After the first install, on/off only touch the flag file: the nginx workers are never replaced."""
    env = web_env()
    assert maintenance_on(env, fresh)[0] == 0
    assert cli_json("maintenance.off", "--env", env)[0] == 0
    workers = [rig.worker_pids() for rig in fresh]
    code, doc = cli_json("maintenance.on", "--env", env)
    assert code == 0 and all(r["status"] == "ok" for r in targets(doc, "maintenance.install").values())
    assert all(get(rig)[0] == 503 for rig in fresh)
    assert cli_json("maintenance.off", "--env", env)[0] == 0
    assert [rig.worker_pids() for rig in fresh] == workers


def test_exempt_uri_still_reaches_the_upstream(web_env, fresh: list[NginxRig]) -> None:
    """A URI listed in maintenance_exempt (e.g. a health check) is proxied while everything else gets 503."""
    env = web_env(host_1={"maintenance_exempt": ["/health"]}, host_2={"maintenance_exempt": ["/health"]})
    assert maintenance_on(env, fresh)[0] == 0
    try:
        assert get(fresh[0], "/health") == (200, b"backend ok\n")
        assert get(fresh[0], "/shop")[0] == 503
    finally:
        assert cli_json("maintenance.off", "--env", env)[0] == 0


def test_other_503s_keep_nginx_page_when_off(web_env, fresh: list[NginxRig]) -> None:
    """A 503 nginx makes for another reason (a stand-in for limit_req) shows the maintenance page only when on."""
    env, rig = web_env(), fresh[0]
    assert maintenance_on(env, fresh)[0] == 0 and cli_json("maintenance.off", "--env", env)[0] == 0
    with rig.maintenance_snippet.open("a") as snippet:
        snippet.write("location = /busy { return 503; }\n")
    rig.reload()
    status, body = get(rig, "/busy")
    assert status == 503 and MARKER.encode() not in body
    flag = rig.workdir / "flag" / "maintenance.on"
    flag.touch()  # what maintenance.on does once the snippet is installed
    try:
        assert get(rig, "/busy")[0] == 503 and MARKER.encode() in get(rig, "/busy")[1]
    finally:
        flag.unlink()


def test_snippet_not_included_fails_verification_on_that_host_only(web_env, fresh: list[NginxRig]) -> None:
    """If nginx does not include the snippet, 'on' fails on that host with a hint; the other host still goes on."""
    stray = fresh[0].workdir / "not-included.conf"
    env = web_env(host_1={"maintenance_snippet": str(stray), "probe_wait_s": 2})
    code, doc = maintenance_on(env, fresh)
    results = targets(doc, "maintenance.on")
    assert code == 1
    assert results["host-1"]["status"] == "failed" and "not 503" in results["host-1"]["error"]
    assert str(stray) in results["host-1"]["error"]
    assert results["host-2"]["status"] == "changed"
    # the failed run unwinds what it did (host-2's receipt: maintenance.off), so no host is left in maintenance
    assert any(s["step"] == "maintenance.off" for s in doc["steps"])
    assert get(fresh[1]) == (200, b"backend ok\n")
    assert cli_json("maintenance.off", "--env", env)[0] == 0


def test_config_failing_nginx_t_is_rolled_back_and_not_reloaded(web_env, fresh: list[NginxRig]) -> None:
    """If nginx -t fails once the snippet is in place, the old snippet is put back, nothing is reloaded,
    nginx's error is shown, and no host is put in maintenance."""
    env, rig = web_env(), fresh[0]
    workers = rig.worker_pids()
    rig.conf_path.write_text(rig.conf_path.read_text() + "broken_directive on;\n")
    try:
        code, doc = cli_json("maintenance.on", "--env", env)
    finally:
        rig.write_conf()
    install = targets(doc, "maintenance.install")["host-1"]
    assert code == 1 and "NOT reloaded" in install["error"] and "broken_directive" in install["error"]
    assert rig.maintenance_snippet.read_text() == ""
    assert rig.worker_pids() == workers and get(rig) == (200, b"backend ok\n")
    assert all(r["status"] == "skipped" for r in targets(doc, "maintenance.on").values())
    assert all(get(other)[0] == 200 for other in fresh)


def test_alb_strategy_never_touches_nginx(web_env, fresh: list[NginxRig]) -> None:
    """With maintenance.strategy alb (and no aws section here) the task stops with exit 2; nginx is untouched."""
    code, doc = cli_json("maintenance.on", "--env", web_env(strategy="alb"))
    assert code == 2 and "steps" not in doc and doc["error"]
    assert fresh[0].maintenance_snippet.read_text() == "" and get(fresh[0])[0] == 200


def test_steps_check_the_strategy_themselves(web_env, inventory: InventoryDir, fresh: list[NginxRig]) -> None:
    """Run outside the task (e.g. by a playbook), NginxMaintenanceOn still refuses an alb environment."""
    env = inventory.load(web_env(strategy="alb"))
    with pytest.raises(UsageError, match="not implemented yet"), Context(env, interactive=False) as ctx:
        Runner(ctx).run([NginxMaintenanceOn()], task="maintenance.on")  # preflight: nothing connects
    assert not any((rig.workdir / "flag" / "maintenance.on").exists() for rig in fresh)


def test_a_flag_in_a_symlinked_directory_is_never_written_through(web_env, fresh: list[NginxRig],
                                                                  tmp_path: Path) -> None:
    """maintenance_flag whose directory is a symlink: refused on the host, naming both paths; nothing created."""
    victim = tmp_path / "victim"
    victim.mkdir()
    alias = fresh[0].workdir / "flag-alias"
    alias.unlink(missing_ok=True)
    alias.symlink_to(victim)
    try:
        env = web_env(host_1={"maintenance_flag": str(alias / "maintenance.on")})
        code, doc = maintenance_on(env, fresh)
        result = targets(doc, "maintenance.on")["host-1"]
        assert code == 1 and "refusing to write through it" in result["error"]
        assert f"'{alias}' resolves to '{victim}'" in result["error"]
        assert list(victim.iterdir()) == [] and get(fresh[0])[0] == 200
    finally:
        alias.unlink()
