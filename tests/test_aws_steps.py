"""AWS procedures against a local moto server: RDS snapshots, EBS resize, ALB maintenance, CloudWatch, backup.

Every test arranges real (moto) AWS state through the sandbox seeder, runs the steps
through the Runner as a task would, and asserts on what AWS holds afterwards. A
botocore hook records every request the steps send: check mode must send no write
(only EC2 DryRun requests), and every call must be covered by `aws.policy`.

moto gaps met here (and worked around in the tests, not in the code):
- modify_volume completes instantly (no modifying/optimizing states): the waiting logic
  is tested with a client whose describe_volumes_modifications takes several polls.
- create_db_snapshot is `available` at once: same, with describe_db_snapshots.
- get_metric_data with percentile stats (p95) fails inside moto (500 in server mode);
  get_metric_statistics with ExtendedStatistics returns data points without values, so
  monitor.metrics falls back to the average on moto ("avg (no percentiles)").
- put_metric_alarm starts alarms in OK (AWS: INSUFFICIENT_DATA) and moto never evaluates
  alarms; describe_alarm_history is not implemented (not used).
- moto does not enforce EBS's 6-hour modification cooldown; our check does (tested).
"""

from __future__ import annotations

import json
import os
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from indostar_ops import Context, Runner
from indostar_ops.errors import StepError, TransientError
from indostar_ops.steps.aws.policy import TASK_STEPS, iam_action, policy_for, task_steps
from tests.support import InventoryDir, host_paths

ENV = "awstest"
INSTANCE = "indostar-awstest"
LB = "indostar-awstest-alb"
BUCKET = "indostar-awstest-config"
VOLUME_NAME = "awstest-web-1-data"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module", autouse=True)
def shared_botocore_loader() -> Iterator[None]:
    """Every boto3 session of this module shares one model loader (each run builds a new session, as a CLI
    run does; re-parsing the EC2 model each time would cost seconds under load)."""
    import botocore.loaders
    import botocore.session

    loader = botocore.loaders.create_loader()
    patch = pytest.MonkeyPatch()
    patch.setattr(botocore.session, "create_loader", lambda *_a, **_k: loader)
    yield
    patch.undo()


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def inventory_data(endpoint: str, root: Path, **overrides: Any) -> dict[str, Any]:
    paths = host_paths(root, "web-1")
    Path(paths["logrotate_config"]).parent.mkdir(parents=True, exist_ok=True)
    Path(paths["logrotate_config"]).write_text("/var/log/indostar/*.log { daily }\n")
    data: dict[str, Any] = {
        "tier": "staging",
        "connection": "local",
        "maintenance": {"strategy": "alb"},
        "database": {"name": "indostar", "user": "indostar_user", "rds_instance": INSTANCE,
                     "password": "env:AWSTEST_DB_PASSWORD"},
        "aws": {"region": "ap-south-1", "endpoint_url": endpoint, "backup_bucket": BUCKET, "max_attempts": 2,
                "volumes": [{"host": "web-1", "mount": "/srv", "name": VOLUME_NAME}]},
        "alb": {"load_balancer": LB, "listener_port": 80},
        "groups": {"web": {"hosts": {"web-1": {"vars": {**paths, "nginx": {"command": ["false"]}}}}}},
    }
    data.update(overrides)
    return data


@pytest.fixture
def aws_env(moto_endpoint: str, inventory: InventoryDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A fresh moto state, seeded like the sandbox (instance, volume, ALB + a foreign rule, alarm, bucket)."""
    from indostar_ops import sandbox_aws

    monkeypatch.setenv("AWSTEST_DB_PASSWORD", "pw-that-must-never-leak-42")
    request = urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST")
    urllib.request.urlopen(request, timeout=10).close()
    sandbox_aws._done.clear()
    inventory.write(ENV, inventory_data(moto_endpoint, tmp_path / "hosts"))
    env = inventory.load(ENV)
    sandbox_aws.seed(env, moto_endpoint)
    return env


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """Every AWS request the steps send (IAM action, DryRun?), recorded by a botocore hook."""
    from indostar_ops.connectors import aws as connector

    recorded: list[tuple[str, bool]] = []
    original = connector.AwsConnector.client

    def client(self: Any, service: str) -> Any:
        c = original(self, service)

        def hook(model: Any, params: Any, **_: Any) -> None:
            body = params.get("body") if isinstance(params, dict) else None
            dry = isinstance(body, dict) and str(body.get("DryRun", "")).lower() == "true"
            recorded.append((iam_action(model.service_model.service_name, model.name), dry))

        c.meta.events.register("before-call.*.*", hook, unique_id="test-aws-recorder")
        return c

    monkeypatch.setattr(connector.AwsConnector, "client", client)
    return recorded


def writes(recorded: list[tuple[str, bool]]) -> list[str]:
    return [a for a, dry in recorded if not a.split(":")[1].startswith(("Describe", "List", "Get")) and not dry]


def run(env: Any, steps: list[Any], *, check: bool = False) -> Any:
    with Context(env, check=check, assume_yes=True, interactive=False) as ctx:
        return Runner(ctx).run(steps, task="test")


def boto(env: Any, service: str) -> Any:
    import boto3

    return boto3.session.Session(region_name="ap-south-1").client(service, endpoint_url=env.aws.endpoint_url)


def one(result: Any) -> Any:
    assert len(result.results) == 1, result.results
    return result.results[0]


# ---------------------------------------------------------------- RDS


def _our_snapshots(env: Any) -> list[str]:
    snaps = boto(env, "rds").describe_db_snapshots(DBInstanceIdentifier=INSTANCE, SnapshotType="manual")
    return sorted(s["DBSnapshotIdentifier"] for s in snaps["DBSnapshots"] if s["DBSnapshotIdentifier"].startswith(
        "indostar-ops-"))


def test_rds_snapshot_deterministic_id_tagged_then_noop_and_check_mode_sends_no_write(aws_env, calls):
    from datetime import UTC, datetime

    from indostar_ops.steps.aws.rds import RdsSnapshot

    checked = one(run(aws_env, [RdsSnapshot("before-upgrade")], check=True))
    day = datetime.now(UTC).strftime("%Y%m%d")
    want = f"indostar-ops-{ENV}-{day}-before-upgrade"
    assert checked.status == "changed" and want in checked.changes[0].summary
    assert writes(calls) == [] and _our_snapshots(aws_env) == []

    first = one(run(aws_env, [RdsSnapshot("before-upgrade")]))
    assert first.status == "changed", first.error
    assert first.data["status"] == "available" and first.data["size_gib"] == 20
    assert _our_snapshots(aws_env) == [want]
    arn = boto(aws_env, "rds").describe_db_snapshots(DBSnapshotIdentifier=want)["DBSnapshots"][0]["DBSnapshotArn"]
    tags = {t["Key"]: t["Value"] for t in boto(aws_env, "rds").list_tags_for_resource(ResourceName=arn)["TagList"]}
    assert tags["indostar-ops:managed-by"] == "indostar-ops" and tags["indostar-ops:environment"] == ENV

    again = one(run(aws_env, [RdsSnapshot("before-upgrade")]))
    assert again.status == "ok" and "already exists" in again.reason
    assert _our_snapshots(aws_env) == [want]


def test_rds_snapshot_waits_through_several_polls_and_times_out_naming_the_snapshot(aws_env, calls, monkeypatch):
    from indostar_ops.connectors import aws as connector
    from indostar_ops.steps.aws import rds

    monkeypatch.setattr(rds, "POLL_EVERY", 0.01)
    seen: list[str] = []
    original = connector.AwsConnector.client
    creating_polls = {"left": 3}

    def client(self: Any, service: str) -> Any:
        c = original(self, service)
        if service == "rds" and not hasattr(c, "_slow"):
            real = c.describe_db_snapshots

            def slow(**kw: Any) -> Any:
                out = real(**kw)
                for snap in out["DBSnapshots"]:
                    if creating_polls["left"] > 0 and "DBSnapshotIdentifier" in kw:
                        creating_polls["left"] -= 1
                        snap["Status"], snap["PercentProgress"] = "creating", 40
                    seen.append(snap["Status"])
                return out

            c.describe_db_snapshots = slow
            c._slow = True
        return c

    monkeypatch.setattr(connector.AwsConnector, "client", client)
    done = one(run(aws_env, [rds.RdsSnapshot("slow")]))
    assert done.status == "changed", done.error
    # check saw no snapshot (NotFound), then the poller saw it creating until it became available
    assert seen[:3] == ["creating", "creating", "available"] or seen.count("creating") == 3
    assert seen[-1] == "available"

    # a resumed run (same label) finds its snapshot still creating: it waits for it and creates nothing
    creating_polls["left"] = 3
    calls.clear()
    resumed = one(run(aws_env, [rds.RdsSnapshot("slow")]))
    assert resumed.status == "changed" and resumed.changes[0].summary.startswith("wait for snapshot")
    assert writes(calls) == [] and resumed.data["status"] == "available"

    creating_polls["left"] = 10**6  # never becomes available
    stuck = one(run(aws_env, [rds.RdsSnapshot("stuck", timeout=0.2)]))
    assert stuck.status == "failed"
    assert f"indostar-ops-{ENV}-" in stuck.error and "-stuck available: not done" in stuck.error
    assert "re-run with the same label" in stuck.error


def test_rds_prune_keeps_newest_n_of_ours_never_automated_or_foreign(aws_env, calls):
    from indostar_ops.sandbox_aws import FOREIGN_SNAPSHOT
    from indostar_ops.steps.aws.rds import RdsPrune, RdsSnapshot, RdsSnapshots

    for label in ("a1", "a2", "a3"):
        assert one(run(aws_env, [RdsSnapshot(label)])).status == "changed"
    rds = boto(aws_env, "rds")
    # a manual snapshot with our id prefix but without our tags is not ours either
    rds.create_db_snapshot(DBInstanceIdentifier=INSTANCE, DBSnapshotIdentifier=f"indostar-ops-{ENV}-20200101-x")
    before_all = {s["DBSnapshotIdentifier"] for s in rds.describe_db_snapshots(DBInstanceIdentifier=INSTANCE)[
        "DBSnapshots"]}
    assert any(s.startswith("rds:") for s in before_all), "moto makes an automated snapshot too"

    calls.clear()
    preview = one(run(aws_env, [RdsPrune(keep=1)], check=True))
    assert preview.status == "changed" and len(preview.changes) == 2
    assert writes(calls) == []

    pruned = one(run(aws_env, [RdsPrune(keep=1)]))
    assert pruned.status == "changed", pruned.error
    after = {s["DBSnapshotIdentifier"] for s in rds.describe_db_snapshots(DBInstanceIdentifier=INSTANCE)[
        "DBSnapshots"]}
    ours_left = sorted(s for s in after if s.endswith(("-a1", "-a2", "-a3")))
    assert len(ours_left) == 1
    assert FOREIGN_SNAPSHOT in after and f"indostar-ops-{ENV}-20200101-x" in after
    assert {s for s in before_all if s.startswith("rds:")} <= after
    assert one(run(aws_env, [RdsPrune(keep=1)])).status == "ok"

    listed = one(run(aws_env, [RdsSnapshots()]))
    assert {s["id"]: s["ours"] for s in listed.data["snapshots"]}[FOREIGN_SNAPSHOT] is False


def test_rds_status_and_missing_instance_is_one_clear_line(aws_env, inventory, moto_endpoint, tmp_path):
    from datetime import UTC, datetime

    from indostar_ops.steps.aws.rds import RdsSnapshot, RdsStatus

    status = one(run(aws_env, [RdsStatus()]))
    assert status.status == "ok" and status.data["status"] == "available" and status.data["storage_gib"] == 20
    assert status.severity.name == "OK" and "connections no data" in status.reason
    boto(aws_env, "cloudwatch").put_metric_data(Namespace="AWS/RDS", MetricData=[{
        "MetricName": "FreeStorageSpace", "Value": 1.5 * 2**30, "Timestamp": datetime.now(UTC),
        "Dimensions": [{"Name": "DBInstanceIdentifier", "Value": INSTANCE}]}])
    full = one(run(aws_env, [RdsStatus()]))
    assert full.severity.name == "CRITICAL" and full.data["storage_used_pct"] == 92.5

    data = inventory_data(moto_endpoint, tmp_path / "hosts")
    data["database"]["rds_instance"] = "no-such-db"
    inventory.write("missing", data)
    missing = one(run(inventory.load("missing"), [RdsSnapshot("x")]))
    assert missing.status == "failed"
    assert "no-such-db" in missing.error and "not found in region ap-south-1" in missing.error
    assert "Traceback" not in missing.error and "next:" in missing.error


# ---------------------------------------------------------------- EBS


def _volume(env: Any) -> dict[str, Any]:
    vols = boto(env, "ec2").describe_volumes(Filters=[{"Name": "tag:Name", "Values": [VOLUME_NAME]}])["Volumes"]
    return vols[0]


def test_volume_resize_grows_once_check_mode_only_dry_runs_and_shrink_is_refused(aws_env, calls):
    from indostar_ops.steps.aws.volume import VolumeModify

    vid = _volume(aws_env)["VolumeId"]
    preview = one(run(aws_env, [VolumeModify(30, host="web-1", mount="/srv")], check=True))
    assert preview.status == "changed" and preview.data["dry_run"].startswith("ModifyVolume dry run")
    assert ("ec2:ModifyVolume", True) in calls and writes(calls) == []
    assert _volume(aws_env)["Size"] == 20

    shrink = one(run(aws_env, [VolumeModify(10, volume=vid)]))
    assert shrink.status == "failed" and "cannot shrink" in shrink.error and vid in shrink.error

    grown = one(run(aws_env, [VolumeModify(30, volume=vid)]))
    assert grown.status == "changed", grown.error
    assert _volume(aws_env)["Size"] == 30
    assert len(grown.changes) == 1  # staging: no snapshot first unless asked

    same = one(run(aws_env, [VolumeModify(30, volume=vid)]))
    assert same.status == "ok" and "already 30 GiB" in same.reason

    cooldown = one(run(aws_env, [VolumeModify(40, volume=vid)]))
    assert cooldown.status == "failed" and "next modification from" in cooldown.error and vid in cooldown.error
    assert _volume(aws_env)["Size"] == 30


def test_volume_resize_snapshots_first_and_waits_through_modifying(aws_env, monkeypatch):
    from indostar_ops.connectors import aws as connector
    from indostar_ops.steps.aws import volume

    monkeypatch.setattr(volume, "POLL_EVERY", 0.01)
    states: list[str] = []
    slow = {"left": 3}
    original = connector.AwsConnector.client

    def client(self: Any, service: str) -> Any:
        c = original(self, service)
        if service == "ec2" and not hasattr(c, "_slow"):
            real = c.describe_volumes_modifications

            def fake(**kw: Any) -> Any:
                out = real(**kw)
                for mod in out.get("VolumesModifications", []):
                    if mod["ModificationState"] == "completed" and slow["left"] > 0:
                        slow["left"] -= 1
                        mod["ModificationState"], mod["Progress"] = "modifying", 30
                    states.append(mod["ModificationState"])
                return out

            c.describe_volumes_modifications = fake
            c._slow = True
        return c

    monkeypatch.setattr(connector.AwsConnector, "client", client)
    vid = _volume(aws_env)["VolumeId"]
    done = one(run(aws_env, [volume.VolumeModify(25, volume=vid, snapshot=True)]))
    assert done.status == "changed", done.error
    assert states.count("modifying") == 3 and states[-1] == "completed"
    snaps = boto(aws_env, "ec2").describe_snapshots(Filters=[{"Name": "volume-id", "Values": [vid]}])["Snapshots"]
    assert [s["SnapshotId"] for s in snaps] == [done.data["snapshot"]]

    vid2 = boto(aws_env, "ec2").create_volume(Size=8, AvailabilityZone="ap-south-1a")["VolumeId"]
    slow["left"] = 10**6
    stuck = one(run(aws_env, [volume.VolumeModify(9, volume=vid2, timeout=0.2)]))
    assert stuck.status == "failed" and f"EBS {vid2} modification optimizing: not done" in stuck.error


def test_volume_resize_on_a_production_tier_snapshots_first(aws_env, inventory, moto_endpoint, tmp_path, calls):
    from indostar_ops.steps.aws.volume import VolumeModify

    data = inventory_data(moto_endpoint, tmp_path / "hosts")
    data["tier"] = "production"
    inventory.write("prodlike", data)
    preview = one(run(inventory.load("prodlike"), [VolumeModify(40, host="web-1", mount="/srv")], check=True))
    assert [c.summary.split()[0] for c in preview.changes] == ["snapshot", "grow"]
    assert writes(calls) == []
    skipped = one(run(inventory.load("prodlike"), [VolumeModify(40, host="web-1", mount="/srv", snapshot=False)],
                      check=True))
    assert [c.summary.split()[0] for c in skipped.changes] == ["grow"]


def test_volume_resize_usage_errors_before_anything_runs(aws_env):
    from indostar_ops.errors import UsageError
    from indostar_ops.steps.aws.volume import VolumeModify

    with pytest.raises(UsageError, match="no volume for host 'web-1' mount '/data'"):
        run(aws_env, [VolumeModify(30, host="web-1", mount="/data")])
    with pytest.raises(UsageError, match="not an EBS volume id"):
        run(aws_env, [VolumeModify(30, volume="vol-; touch /tmp/indostar-injection-marker")])
    assert not os.path.exists("/tmp/indostar-injection-marker")


# ---------------------------------------------------------------- ALB


def _rules(env: Any) -> list[dict[str, Any]]:
    elb = boto(env, "elbv2")
    lb = elb.describe_load_balancers(Names=[LB])["LoadBalancers"][0]["LoadBalancerArn"]
    listener = elb.describe_listeners(LoadBalancerArn=lb)["Listeners"][0]["ListenerArn"]
    return elb.describe_rules(ListenerArn=listener)["Rules"]


def test_alb_maintenance_on_adds_one_tagged_rule_off_removes_exactly_it(aws_env, calls):
    from indostar_ops.steps.aws.alb import AlbMaintenanceOff, AlbMaintenanceOn, AlbMaintenanceStatus
    from indostar_ops.steps.nginx import MARKER

    before = sorted((r["RuleArn"], r["Priority"], json.dumps(r["Actions"], sort_keys=True)) for r in _rules(aws_env))
    assert len(before) == 2  # the seeded /api/* rule and the default

    preview = one(run(aws_env, [AlbMaintenanceOn()], check=True))
    assert preview.status == "changed" and writes(calls) == [] and len(_rules(aws_env)) == 2

    on = one(run(aws_env, [AlbMaintenanceOn()]))
    assert on.status == "changed", on.error
    assert on.receipt is not None and on.receipt.step == "maintenance.alb-off"
    rules = _rules(aws_env)
    mine = [r for r in rules if r["RuleArn"] == on.data["rule"]]
    assert len(rules) == 3 and mine[0]["Priority"] == "1"
    fixed = mine[0]["Actions"][0]["FixedResponseConfig"]
    assert fixed["StatusCode"] == "503" and MARKER in fixed["MessageBody"] and len(fixed["MessageBody"]) <= 1024
    others = sorted((r["RuleArn"], r["Priority"], json.dumps(r["Actions"], sort_keys=True)) for r in rules
                    if r["RuleArn"] != on.data["rule"])
    assert others == before

    assert one(run(aws_env, [AlbMaintenanceOn()])).status == "ok"
    status = one(run(aws_env, [AlbMaintenanceStatus()]))
    assert status.data["maintenance"] == "on" and status.data["page_current"] is True

    calls.clear()
    off = one(run(aws_env, [AlbMaintenanceOff()]))
    assert off.status == "changed" and off.receipt is not None and off.receipt.step == "maintenance.alb-on"
    assert writes(calls) == ["elasticloadbalancing:DeleteRule"]
    after = sorted((r["RuleArn"], r["Priority"], json.dumps(r["Actions"], sort_keys=True)) for r in _rules(aws_env))
    assert after == before
    assert one(run(aws_env, [AlbMaintenanceOff()])).status == "ok"


def test_alb_maintenance_refuses_a_priority_taken_by_another_rule_and_ignores_untagged_lookalikes(
        aws_env, inventory, moto_endpoint, tmp_path):
    from indostar_ops.registry import step_class
    from indostar_ops.steps.aws.alb import AlbMaintenanceOff

    data = inventory_data(moto_endpoint, tmp_path / "hosts")
    data["alb"]["maintenance_priority"] = 10  # the seeded /api/* rule's priority
    inventory.write("clash", data)
    clash = one(run(inventory.load("clash"), [step_class("maintenance.alb-on")()]))
    assert clash.status == "failed" and "priority 10 is already used by another rule" in clash.error
    assert len(_rules(aws_env)) == 2

    # a fixed-503 rule someone else made by hand is not ours: off leaves it
    elb = boto(aws_env, "elbv2")
    listener = elb.describe_listeners(LoadBalancerArn=elb.describe_load_balancers(Names=[LB])["LoadBalancers"][0][
        "LoadBalancerArn"])["Listeners"][0]["ListenerArn"]
    elb.create_rule(ListenerArn=listener, Priority=2, Conditions=[{"Field": "path-pattern", "Values": ["/*"]}],
                    Actions=[{"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "503"}}])
    assert one(run(aws_env, [AlbMaintenanceOff()])).status == "ok"
    assert len(_rules(aws_env)) == 3


# ---------------------------------------------------------------- CloudWatch


def test_apply_alarms_creates_then_noop_then_updates_with_diff_never_touching_others(aws_env, inventory,
                                                                                     moto_endpoint, tmp_path, calls):
    from indostar_ops.sandbox_aws import FOREIGN_ALARM
    from indostar_ops.steps.aws.cloudwatch import ApplyAlarms, MonitorAlarms

    cw = boto(aws_env, "cloudwatch")
    # an alarm with one of our names but created by hand (untagged) is left alone
    cw.put_metric_alarm(AlarmName=f"indostar-{ENV}-payment-failures-critical", Namespace="X", MetricName="Y",
                        Statistic="Sum", Period=60, EvaluationPeriods=1, Threshold=1,
                        ComparisonOperator="GreaterThanThreshold")
    preview = one(run(aws_env, [ApplyAlarms()], check=True))
    assert preview.status == "changed" and len(preview.changes) == 7 and writes(calls) == []

    created = one(run(aws_env, [ApplyAlarms()]))
    assert created.status == "changed", created.error
    names = {a["AlarmName"] for a in cw.describe_alarms(AlarmNamePrefix=f"indostar-{ENV}-")["MetricAlarms"]}
    assert len(names) == 8
    hand_made = cw.describe_alarms(AlarmNames=[f"indostar-{ENV}-payment-failures-critical"])["MetricAlarms"][0]
    assert hand_made["Namespace"] == "X"
    rate = cw.describe_alarms(AlarmNames=[f"indostar-{ENV}-error-rate-critical"])["MetricAlarms"][0]
    assert rate["Threshold"] == 5.0 and rate["Metrics"][-1]["Expression"] == "100 * errors / requests"

    assert one(run(aws_env, [ApplyAlarms()])).status == "ok"

    data = inventory_data(moto_endpoint, tmp_path / "hosts")
    data["thresholds"] = {"response_time_s": {"warning": 1.5, "critical": 2}}
    inventory.write(ENV, data)
    updated = one(run(inventory.load(ENV), [ApplyAlarms()]))
    assert [c.summary for c in updated.changes] == [f"update alarm indostar-{ENV}-response-time-warning (> 1.5)"]
    assert "Threshold: 1.0 -> 1.5" in updated.changes[0].diff
    assert FOREIGN_ALARM in {a["AlarmName"] for a in cw.describe_alarms()["MetricAlarms"]}

    alarms = one(run(aws_env, [MonitorAlarms()]))
    assert alarms.severity.name == "CRITICAL" and alarms.data["alarms"][0]["name"] == FOREIGN_ALARM


def test_monitor_metrics_reads_the_runbook_numbers_and_judges_them(aws_env):
    from indostar_ops.steps.aws.cloudwatch import MonitorMetrics

    result = one(run(aws_env, [MonitorMetrics(minutes=60)]))
    metrics = result.data["metrics"]
    assert metrics["requests"]["Sum"] == 1200 and metrics["target_5xx"]["Sum"] == 6
    assert metrics["response_time"]["Average"] is not None
    assert result.data["error_rate_pct"] == 0.5
    assert result.severity.name == "WARNING"  # 1.4 s average of the last period > 1 s warning


# ---------------------------------------------------------------- backup


def test_backup_config_uploads_dated_files_without_secrets_then_is_a_noop(aws_env, calls):
    from indostar_ops.steps.aws.backup import BackupConfig

    preview = one(run(aws_env, [BackupConfig("run-1")], check=True))
    assert preview.status == "changed" and writes(calls) == []

    done = one(run(aws_env, [BackupConfig("run-1")]))
    assert done.status == "changed", done.error
    s3 = boto(aws_env, "s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    prefix = done.data["prefix"]
    assert prefix.startswith(f"config-backups/{ENV}/20") and prefix.endswith("/run-1/")
    assert {k[len(prefix):] for k in keys} == {"inventory.json", "manifest.json", "hosts/web-1/logrotate.conf"}
    for key in keys:
        body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()
        assert "pw-that-must-never-leak-42" not in body
    inventory_json = json.loads(s3.get_object(Bucket=BUCKET, Key=prefix + "inventory.json")["Body"].read())
    assert inventory_json["database"]["password"] == "env:AWSTEST_DB_PASSWORD"

    assert one(run(aws_env, [BackupConfig("run-1")])).status == "ok"


# ---------------------------------------------------------------- policy and errors


def test_every_call_a_task_makes_is_declared_and_in_the_policy(aws_env, calls, monkeypatch):
    from indostar_ops.steps.aws import rds, volume
    from indostar_ops.steps.aws.alb import AlbMaintenanceOff, AlbMaintenanceOn, AlbMaintenanceStatus
    from indostar_ops.steps.aws.backup import BackupConfig
    from indostar_ops.steps.aws.cloudwatch import ApplyAlarms, MonitorAlarms, MonitorMetrics

    monkeypatch.setattr(rds, "POLL_EVERY", 0.01)
    runs = {
        "rds.snapshot": [rds.RdsSnapshot("p")], "rds.snapshots": [rds.RdsSnapshots()],
        "rds.prune": [rds.RdsPrune(keep=1)], "rds.status": [rds.RdsStatus()],
        "volume.resize": [volume.VolumeModify(21, host="web-1", mount="/srv", snapshot=True)],
        "maintenance.on": [AlbMaintenanceOn()], "maintenance.status": [AlbMaintenanceStatus()],
        "maintenance.off": [AlbMaintenanceOff()], "monitor.metrics": [MonitorMetrics()],
        "monitor.alarms": [MonitorAlarms()], "monitor.apply-alarms": [ApplyAlarms()],
        "backup.config": [BackupConfig()],
    }
    assert set(runs) == set(TASK_STEPS)
    policy_actions = {a for s in policy_for(aws_env)["Statement"] for a in s["Action"]}
    for task, steps in runs.items():
        declared = {a for cls in task_steps(task) for a in cls.aws_calls}
        for check in (True, False):
            calls.clear()
            result = run(aws_env, steps, check=check)
            assert not result.failed, (task, [r.error for r in result.results])
            made = {a for a, _ in calls}
            assert made, task
            assert made <= declared, (task, made - declared)
            assert made <= policy_actions, (task, made - policy_actions)


def test_policy_is_scoped_to_the_environments_resources(inventory, tmp_path):
    inventory.write(ENV, inventory_data("http://127.0.0.1:9", tmp_path / "hosts"))
    policy = policy_for(inventory.load(ENV))
    by_action = {a: s for s in policy["Statement"] for a in s["Action"]}
    delete_rule = by_action["elasticloadbalancing:DeleteRule"]
    assert delete_rule["Resource"].endswith(f":listener-rule/app/{LB}/*")
    assert delete_rule["Condition"] == {"StringEquals": {"aws:ResourceTag/indostar-ops:purpose": "maintenance"}}
    assert by_action["rds:DeleteDBSnapshot"]["Resource"] == f"arn:aws:rds:ap-south-1:*:snapshot:indostar-ops-{ENV}-*"
    assert by_action["s3:PutObject"]["Resource"] == f"arn:aws:s3:::{BUCKET}/config-backups/{ENV}/*"
    assert by_action["cloudwatch:PutMetricAlarm"]["Resource"].endswith(f":alarm:indostar-{ENV}-*")
    assert all(s["Resource"] != "*" for a, s in by_action.items()
               if not a.split(":")[1].startswith(("Describe", "List", "Get")))


def _client_error(code: str, message: str = "boom", op: str = "CreateDBSnapshot") -> Exception:
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": message}}, op)


@pytest.mark.parametrize(("exc", "kind", "says"), [
    (_client_error("ExpiredToken"), StepError, "credentials are expired or invalid"),
    (_client_error("ThrottlingException"), TransientError, "throttling CreateDBSnapshot"),
    (_client_error("SnapshotQuotaExceeded"), StepError, "quota reached"),
    (_client_error("IncorrectModificationState", "modified within the last 6 hours", "ModifyVolume"), StepError,
     "once per 6 hours"),
    (_client_error("AccessDenied"), StepError, "invoke aws.policy"),
    (_client_error("DBInstanceNotFound"), StepError, "not found in region ap-south-1"),
])
def test_botocore_errors_become_one_line_with_the_resource_and_next_step(inventory, tmp_path, exc, kind, says):
    from indostar_ops.steps.aws.errors import translate

    inventory.write(ENV, inventory_data("http://127.0.0.1:9", tmp_path / "hosts"))
    with Context(inventory.load(ENV), check=True) as ctx:
        mapped = translate(exc, "RDS indostar-awstest", ctx)
    assert isinstance(mapped, kind)
    text = str(mapped)
    assert "RDS indostar-awstest" in text and "next:" in text
    assert says in text.replace("one modification per volume per 6 hours", "once per 6 hours")


def test_missing_credentials_and_unreachable_endpoint_are_clear(aws_env, inventory, moto_endpoint, tmp_path,
                                                                monkeypatch):
    from indostar_ops.steps.aws.rds import RdsStatus

    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    nocreds = one(run(aws_env, [RdsStatus()]))
    assert nocreds.status == "failed" and "no AWS credentials found (region ap-south-1" in nocreds.error

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    data = inventory_data(f"http://127.0.0.1:{_free_port()}", tmp_path / "hosts")
    data["aws"]["connect_timeout"] = 1
    data["aws"]["max_attempts"] = 1
    inventory.write("down", data)
    down = one(run(inventory.load("down"), [RdsStatus()]))
    assert down.status == "unreachable" and "cannot reach the AWS endpoint" in down.error


def test_snapshot_id_without_label_is_the_runs_own_date_and_id(inventory, tmp_path):
    from datetime import UTC, datetime

    from indostar_ops.steps.aws.rds import snapshot_id

    inventory.write(ENV, inventory_data("http://127.0.0.1:9", tmp_path / "hosts"))
    with Context(inventory.load(ENV), check=True) as ctx:
        ctx.journal = type("J", (), {"run_id": "20261128T203000Z-awstest-ab12cd"})()
        later = datetime(2026, 11, 29, 0, 30, tzinfo=UTC)  # a resume after midnight UTC
        assert snapshot_id(ctx, None, later) == "indostar-ops-awstest-20261128-20261128t203000z-awstest-ab12cd"
        assert snapshot_id(ctx, "pre-upgrade", later) == "indostar-ops-awstest-20261129-pre-upgrade"
        assert snapshot_id(ctx, "Run--ID_9", later) == "indostar-ops-awstest-20261129-run-id-9"
