"""docker.df / docker.prune over SSH against a fake `docker` first on the host's PATH (no engine runs here).

The fake (tests/rig/fakedocker.py) records every call with the SSH server address it
arrived on and prints the real CLI's output formats; the production code path is
unchanged: the inventory's `path_prefix` puts the fake's directory first on PATH.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from indostar_ops.steps.docker import parse_size, parse_system_df
from tests.host_support import host_inventory, targets
from tests.rig.fakedocker import install_fake_docker, read_docker_calls, read_docker_calls_by_host, set_daemon_down
from tests.rig.sshd import SshRig
from tests.support import InventoryDir, cli_json

EMPTY_DF = (
    "TYPE            TOTAL     ACTIVE    SIZE      RECLAIMABLE\n"
    "Images          4         4         2.1GB     0B (0%)\n"
    "Containers      4         4         12MB      0B (0%)\n"
    "Local Volumes   3         3         1.9GB     0B (0%)\n"
    "Build Cache     0         0         0B        0B\n"
)


@pytest.fixture
def fake(tmp_path: Path) -> tuple[Path, Path]:
    """(bindir, call log) of a freshly installed fake docker."""
    bindir, log = tmp_path / "fakebin", tmp_path / "docker-calls.log"
    install_fake_docker(bindir, log)
    return bindir, log


@pytest.fixture
def docker_env(inventory: InventoryDir, ssh_rig: SshRig, tmp_path: Path, fake: tuple[Path, Path]):
    """Write inventory 'dock' (hosts 1-2, fake docker on PATH); returns a function taking tier/overrides."""
    def make(tier: str = "staging", host_vars: dict[str, Any] | None = None, **overrides: Any) -> str:
        hosts = ssh_rig.hosts[:2]
        extra = {h.name: {"path_prefix": [str(fake[0])], "docker": {"data_root": str(tmp_path)},
                          **(host_vars or {})} for h in hosts}
        inventory.write("dock", host_inventory(ssh_rig, hosts, tmp_path, extra, tier=tier, **overrides))
        return "dock"
    return make


def prunes(log: Path) -> list[list[str]]:
    return [args for args in read_docker_calls(log) if "prune" in args]


def test_parse_sizes_like_docker() -> None:
    """Docker's decimal sizes, with or without the percentage, become bytes."""
    assert parse_size("3.12GB (58%)") == 3_120_000_000
    assert parse_size("409.6MB") == 409_600_000
    assert parse_size("0B") == 0
    assert parse_size("1.5kB") == 1500


def test_df_reports_usage_per_type_on_every_host(docker_env, fake) -> None:
    """docker.df runs `docker system df` on each host over SSH and reports bytes per type."""
    code, doc = cli_json("docker.df", "--env", docker_env())
    assert code == 0, doc
    for result in targets(doc, "docker.df").values():
        usage = {row["type"]: row for row in result["data"]["usage"]}
        assert usage["Images"]["reclaimable_bytes"] == 3_120_000_000
        assert usage["Build Cache"]["size_bytes"] == 1_200_000_000
    assert sorted(addr for addr, _ in read_docker_calls_by_host(fake[1])) == ["127.0.2.1", "127.0.2.2"]
    assert read_docker_calls(fake[1])[0] == ["system", "df", "--format", "{{json .}}"]


def test_prune_check_mode_runs_no_prune(docker_env, fake) -> None:
    """--check shows the classes that would be pruned and only ever calls `docker system df`."""
    code, doc = cli_json("docker.prune", "--env", docker_env(), "--check")
    assert code == 0
    summaries = [c["summary"] for c in targets(doc, "docker.prune")["host-1"]["changes"]]
    assert [s.split(" (")[0] for s in summaries] == ["prune stopped containers", "prune dangling images",
                                                      "prune build cache"]
    assert prunes(fake[1]) == []


def test_prune_defaults_never_touch_volumes_and_report_reclaimed(docker_env, fake) -> None:
    """Default prune: stopped containers, dangling images, build cache, each with --force; no volumes."""
    code, doc = cli_json("docker.prune", "--env", docker_env())
    assert code == 0, doc
    calls = read_docker_calls_by_host(fake[1])
    by_host = {addr: [a for a in [args for h, args in calls if h == addr] if "prune" in a] for addr, _ in calls}
    for host_calls in by_host.values():
        assert host_calls == [["container", "prune", "--force"], ["image", "prune", "--force"],
                              ["builder", "prune", "--force"]]
    result = targets(doc, "docker.prune")["host-2"]
    assert result["data"]["reclaimed_bytes"] == 1_020_000 + 3_120_000_000 + 1_200_000_000
    assert result["reason"].startswith("reclaimed 4.321GB")


def test_volumes_only_when_asked(docker_env, fake) -> None:
    """--volumes adds `docker volume prune`; --all-images and --until pass through to the image prune."""
    code, _doc = cli_json("docker.prune", "--env", docker_env(), "--classes", "images", "--volumes",
                          "--all-images", "--until", "24h", "--groups", "web")
    assert code == 0
    assert sorted(map(tuple, prunes(fake[1]))) == sorted([
        ("image", "prune", "--all", "--force", "--filter", "until=24h"), ("volume", "prune", "--force"),
    ] * 2)


def test_volumes_on_production_need_yes(docker_env, fake) -> None:
    """On a production tier, --volumes without --yes stops before any call (exit 2); with --yes it prunes."""
    env = docker_env(tier="production")
    code, doc = cli_json("docker.prune", "--env", env, "--volumes")
    assert code == 2 and "--yes" in doc["hint"]
    assert read_docker_calls(fake[1]) == []
    code, _doc = cli_json("docker.prune", "--env", env, "--volumes", "--yes")
    assert code == 0 and ["volume", "prune", "--force"] in prunes(fake[1])


@pytest.mark.parametrize(("warning", "pruned"), [(100, False), (0, True)])
def test_prune_only_over_the_disk_warning(docker_env, fake, warning: int, pruned: bool) -> None:
    """--if-over-warning prunes only where the Docker filesystem is over thresholds.disk_pct.warning."""
    env = docker_env(thresholds={"disk_pct": {"warning": warning, "critical": 100}})
    code, doc = cli_json("docker.prune", "--env", env, "--if-over-warning")
    assert code == 0
    assert bool(prunes(fake[1])) is pruned
    if not pruned:
        assert "not over the 100% warning threshold" in targets(doc, "docker.prune")["host-1"]["reason"]


def test_nothing_reclaimable_is_a_noop(docker_env, fake, tmp_path: Path) -> None:
    """When docker reports 0B reclaimable for every requested class, nothing is pruned and the reason says so."""
    install_fake_docker(fake[0], fake[1], df_output=EMPTY_DF)
    code, doc = cli_json("docker.prune", "--env", docker_env())
    assert code == 0 and prunes(fake[1]) == []
    assert "nothing reclaimable" in targets(doc, "docker.prune")["host-1"]["reason"]


def test_no_engine_and_no_docker_are_clear_errors(docker_env, fake) -> None:
    """Daemon down -> 'no engine is reachable'; CLI missing -> 'docker is not installed'; both name the host."""
    set_daemon_down(fake[0])
    code, doc = cli_json("docker.df", "--env", docker_env())
    error = targets(doc, "docker.df")["host-1"]["error"]
    assert code == 1 and error.startswith("host-1:") and "no engine is reachable" in error
    code, doc = cli_json("docker.df", "--env", docker_env(host_vars={"docker": {"command": ["/nonexistent/docker"]}}))
    error = targets(doc, "docker.df")["host-2"]["error"]
    assert code == 1 and error.startswith("host-2: docker is not installed")


def test_disabled_docker_is_skipped_with_a_reason(docker_env, fake) -> None:
    """docker.enabled: false makes df/prune a no-op that says why, without calling docker."""
    env = docker_env(host_vars={"docker": {"enabled": False}})
    code, doc = cli_json("docker.prune", "--env", env)
    assert code == 0 and "disabled" in targets(doc, "docker.prune")["host-1"]["reason"]
    assert read_docker_calls(fake[1]) == []


def test_parse_system_df_json_lines() -> None:
    """The `{{json .}}` format the CLI prints is parsed into typed rows."""
    rows = parse_system_df('{"Active":"4","Reclaimable":"3.12GB (58%)","Size":"5.369GB","TotalCount":"12",'
                           '"Type":"Images"}\n')
    assert rows["Images"].total == 12 and rows["Images"].reclaimable_bytes == 3_120_000_000
