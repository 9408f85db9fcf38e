"""Inventory: the shipped environments load, and every kind of mistake is a clear exit-2 error."""

from __future__ import annotations

from pathlib import Path

import pytest

from indostar_ops.errors import InventoryError, UnknownEnvironment
from indostar_ops.inventory import list_environments, load_environment
from indostar_ops.severity import Severity
from tests.support import REPO, InventoryDir, cli_json, run_cli

SHIPPED = REPO / "inventory"


def test_shipped_environments_describe_the_runbook_topology() -> None:
    """prod carries the runbook's real topology, thresholds, window and escalation path."""
    assert {"sandbox", "staging", "prod"} <= set(list_environments(SHIPPED))
    prod = load_environment("prod", directory=SHIPPED)
    assert prod.is_production and prod.tier == "production"
    assert prod.platform is not None and prod.platform.kind == "kubernetes"
    assert prod.platform.namespace == "indostar-naturals"
    assert prod.database is not None
    assert (prod.database.rds_instance, prod.database.name, prod.database.user) == (
        "indostar-production", "indostar_naturals", "indostar_user")
    assert prod.aws is not None and prod.aws.region == "ap-south-1"
    assert prod.timezone == "Asia/Kolkata"
    assert (prod.maintenance.window.start_time.hour, prod.maintenance.window.end_time.hour) == (2, 4)
    assert [level.after_minutes for level in prod.escalation] == [15, 30, 60, 120]
    t = prod.thresholds
    assert (t.response_time_s.warning, t.response_time_s.critical) == (1, 2)
    assert (t.error_rate_pct.warning, t.error_rate_pct.critical) == (1, 5)
    assert (t.cpu_pct.warning, t.cpu_pct.critical) == (70, 90)
    assert (t.memory_pct.warning, t.memory_pct.critical) == (80, 95)
    assert (t.disk_pct.warning, t.disk_pct.critical) == (80, 90)
    assert (t.payment_failures_per_hour.warning, t.payment_failures_per_hour.critical) == (5, 10)
    assert [h.name for h in prod.hosts(["web"])] == ["web-1", "web-2"]
    staging = load_environment("staging", directory=SHIPPED)
    assert not staging.is_production and staging.database is not None
    assert staging.database.rds_instance == "indostar-staging"


def test_thresholds_grade_values_in_both_directions() -> None:
    """Higher-is-worse (disk %) and lower-is-worse (certificate days left) thresholds both grade correctly."""
    t = load_environment("prod", directory=SHIPPED).thresholds
    assert [t.disk_pct.evaluate(v) for v in (50, 85, 95)] == [Severity.OK, Severity.WARNING, Severity.CRITICAL]
    assert [t.cert_days_left.evaluate(v) for v in (60, 20, 3)] == [
        Severity.OK, Severity.WARNING, Severity.CRITICAL]


def test_host_vars_merge_group_then_host(inventory: InventoryDir) -> None:
    """Host vars override group vars key by key; untouched keys keep the group's value."""
    inventory.write("mixed", {
        "tier": "staging",
        "groups": {"web": {"vars": {"log_dirs": ["/srv/logs"], "tmp_dirs": ["/srv/tmp"]},
                           "hosts": {"a": {}, "b": {"vars": {"log_dirs": ["/data/logs"]}}}}},
    })
    a, b = inventory.load("mixed").hosts()
    assert a.settings.log_dirs == ["/srv/logs"] and b.settings.log_dirs == ["/data/logs"]
    assert b.settings.tmp_dirs == ["/srv/tmp"]


def test_unknown_environment_lists_the_known_ones(inventory: InventoryDir) -> None:
    """A typo in --env names the known environments and the nearest one."""
    inventory.write("staging", {"tier": "staging"})
    inventory.write("prod", {"tier": "production"})
    with pytest.raises(UnknownEnvironment) as err:
        load_environment("stagin", directory=inventory.path)
    assert "did you mean 'staging'" in str(err.value)
    assert "known environments: prod, staging" in str(err.value)


def test_yaml_syntax_error_names_file_and_line(inventory: InventoryDir) -> None:
    """Broken YAML is reported with the file and the line, not a traceback."""
    path = inventory.write("broken", "tier: staging\ngroups:\n  web: [unclosed\n")
    with pytest.raises(InventoryError) as err:
        load_environment("broken", directory=inventory.path)
    assert f"{path}:" in str(err.value) and "YAML syntax error" in str(err.value)


def test_unknown_key_suggests_the_nearest(inventory: InventoryDir) -> None:
    """A misspelt key is rejected with its line and a did-you-mean."""
    path = inventory.write("typo", "tier: staging\nthresholds:\n  disk_pct: {warning: 80, critical: 90}\n"
                                   "  disk_pcts: {warning: 1, critical: 2}\n")
    with pytest.raises(InventoryError) as err:
        load_environment("typo", directory=inventory.path)
    message = str(err.value)
    assert f"{path}:4: thresholds.disk_pcts: unknown key 'disk_pcts' (did you mean 'disk_pct'?)" in message


def test_wrong_type_is_reported_with_its_line(inventory: InventoryDir) -> None:
    """A value of the wrong type names its file, line, key and the expected type."""
    path = inventory.write("bad", "tier: staging\nparallelism: lots\n")
    with pytest.raises(InventoryError) as err:
        load_environment("bad", directory=inventory.path)
    assert f"{path}:2: parallelism: Expected `int`, got `str`" in str(err.value)


def test_missing_key_is_reported_with_its_section(inventory: InventoryDir) -> None:
    """A required key missing from a section names the section's line and the key."""
    path = inventory.write("bad", "tier: staging\ndatabase:\n  name: x\n")
    with pytest.raises(InventoryError) as err:
        load_environment("bad", directory=inventory.path)
    assert f"{path}:2: database.user: required key is missing" in str(err.value)


def test_errors_inside_a_named_host_name_that_host(inventory: InventoryDir) -> None:
    """An error in one host of a group names the group and the host, not just 'a host'."""
    path = inventory.write("bad", "tier: staging\ngroups:\n  web:\n    hosts:\n      ok-1: {}\n"
                                  "      bad-1: {port: 99999}\n")
    with pytest.raises(InventoryError) as err:
        load_environment("bad", directory=inventory.path)
    assert f"{path}:6: groups.web.hosts.bad-1.port: Expected `int` <= 65535" in str(err.value)


def test_missing_tier_is_reported(inventory: InventoryDir) -> None:
    """The tier decides confirmation rules, so it is required."""
    inventory.write("notier", {"groups": {}})
    with pytest.raises(InventoryError, match="tier: required key is missing"):
        load_environment("notier", directory=inventory.path)


def test_extends_merges_a_shared_base_and_reports_its_lines(inventory: InventoryDir) -> None:
    """An environment extends a base; an error inside the base names the base file."""
    base = inventory.write("_base", "timezone: Asia/Kolkata\nthresholds:\n  cpu_pct: {warning: 70, critical: 90}\n")
    inventory.write("child", "extends: _base.yaml\ntier: staging\nthresholds:\n  cpu_pct: {warning: 60}\n")
    env = inventory.load("child")
    assert (env.thresholds.cpu_pct.warning, env.thresholds.cpu_pct.critical) == (60, 90)
    assert "_base" not in list_environments(inventory.path)
    base.write_text("timezone: Mars/Olympus\nthresholds:\n  cpu_pct: {warning: 70, critical: 90}\n")
    with pytest.raises(InventoryError) as err:
        inventory.load("child")
    assert f"{base}:1: timezone: unknown time zone" in str(err.value)


def test_secrets_must_be_references(inventory: InventoryDir) -> None:
    """A literal password in the inventory is refused: only env:/ssm:/secretsmanager: references."""
    inventory.write("leaky", {"tier": "staging", "database": {"name": "d", "user": "u", "password": "hunter22"}})
    with pytest.raises(InventoryError) as err:
        inventory.load("leaky")
    assert "secrets must be references" in str(err.value)
    assert "hunter22" not in str(err.value).split("(got")[0]


def test_cli_inventory_errors_exit_2_and_run_nothing(inventory: InventoryDir, tmp_path: Path) -> None:
    """From the CLI, an inventory error exits 2, prints the reason, and nothing runs or is journaled."""
    inventory.write("typo", "tier: staging\ngroups:\n  web:\n    hosts: {a: {adress: 10.0.0.1}}\n")
    proc = run_cli("logs.install-rotation", "--env", "typo")
    assert proc.returncode == 2
    assert "unknown key 'adress' (did you mean 'address'?)" in proc.stderr
    assert not (tmp_path / "journal").exists()
    code, doc = cli_json("logs.install-rotation", "--env", "nope", "--check")
    assert code == 2 and "unknown environment 'nope'" in doc["error"]
    code, doc = cli_json("disk.check", "--env", "nope")  # usage errors are 2 on monitoring checks too
    assert code == 2 and "unknown environment 'nope'" in doc["error"]
