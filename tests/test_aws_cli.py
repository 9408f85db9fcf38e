"""The AWS tasks as a newcomer runs them: `invoke rds.snapshot --env sandbox` works out of the box.

The shipped sandbox inventory, on a private moto port and sandbox root: the first AWS
task starts the sandbox's moto server and seeds it (RDS instance, EBS volume, ALB with
a foreign rule, an alarm in ALARM, the backup bucket); every task then runs through
`invoke ... --json` as in CI.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.host_support import free_port
from tests.support import REPO, InventoryDir, cli_json, run_cli


def targets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-target results of a --json run, in order."""
    if "results" in doc:
        return list(doc["results"])
    return [t for step in doc["steps"] for t in step["targets"]]


@pytest.fixture
def sandbox(inventory: InventoryDir) -> Iterator[int]:
    port = free_port()
    text = (REPO / "inventory/sandbox.yaml").read_text()
    text = re.sub(r"moto_port: \d+", f"moto_port: {port}", text)
    text = text.replace("http://127.0.0.1:14566", f"http://127.0.0.1:{port}")
    (inventory.path / "sandbox.yaml").write_text(text)
    yield port
    from indostar_ops.sandbox import stop

    stop()


def test_sandbox_aws_tasks_run_out_of_the_box(sandbox: int) -> None:
    code, doc = cli_json("rds.snapshot", "--env", "sandbox", "--label", "newcomer")
    assert code == 0, doc
    first = targets(doc)[0]
    assert first["status"] == "changed" and first["data"]["snapshot"].endswith("-newcomer")
    code, doc = cli_json("rds.snapshot", "--env", "sandbox", "--label", "newcomer")
    assert code == 0 and targets(doc)[0]["status"] == "ok"

    code, doc = cli_json("maintenance.on", "--env", "sandbox", "--strategy", "alb", "--check")
    assert code == 0 and targets(doc)[0]["status"] == "changed" and targets(doc)[0].get("actions", []) == []

    code, doc = cli_json("volume.resize", "--env", "sandbox", "--host", "web-1", "--mount", "/srv", "--size", "5")
    assert code == 1 and "EBS volumes cannot shrink" in targets(doc)[0]["error"]

    code, doc = cli_json("monitor.alarms", "--env", "sandbox")
    assert code == 2 and "team-payments-disk-full" in targets(doc)[0]["reason"]


def test_aws_policy_prints_one_json_policy_and_unknown_task_is_exit_2() -> None:
    proc = run_cli("aws.policy", "--env", "prod", "--json")
    assert proc.returncode == 0, proc.stderr
    policy = json.loads(proc.stdout)
    actions = {a for s in policy["Statement"] for a in s["Action"]}
    assert {"rds:CreateDBSnapshot", "elasticloadbalancing:DeleteRule", "ssm:GetParameter"} <= actions
    assert "ec2:ModifyVolume" not in actions  # prod lists no volumes: volume.resize is not configured

    code, doc = cli_json("aws.policy", "--env", "prod", "--tasks", "rds.nope")
    assert code == 2 and "unknown task" in doc["error"]
