"""The sandbox's AWS (a local moto server), seeded on first use so every AWS task runs out of the box.

Like `sandbox.prepare`, this provisions the simulated world (it is not a step): the
RDS instance `database.rds_instance`, a foreign manual snapshot (that `rds.prune`
must never delete), the EBS volumes of `aws.volumes` (by Name tag), the load
balancer of `alb` with a listener, a target group and a foreign rule (that
maintenance mode must never touch), a foreign alarm in ALARM, the backup bucket and
a few CloudWatch data points. Idempotent: each resource is created only if missing,
and a marker per moto server process skips the checks on later runs.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .inventory import Environment

__all__ = ["FOREIGN_ALARM", "FOREIGN_SNAPSHOT", "seed"]

FOREIGN_SNAPSHOT = "someone-elses-manual-snapshot"
FOREIGN_ALARM = "team-payments-disk-full"
_done: set[str] = set()
_lock = threading.Lock()


def _code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def _marker(env: Environment, endpoint: str) -> str:
    from .inventory import sandbox_root

    pidfile = sandbox_root() / "moto.pid"
    pid = pidfile.read_text().strip() if pidfile.is_file() else "external"
    return f"{endpoint} {pid} {env.name}"


def seed(env: Environment, endpoint: str) -> str:
    """Create the sandbox's AWS resources that are missing; returns `endpoint`."""
    if env.aws is None:
        return endpoint
    key = _marker(env, endpoint)
    with _lock:
        if key in _done:
            return endpoint
        import boto3

        session = boto3.session.Session(region_name=env.aws.region)

        def client(service: str) -> Any:
            return session.client(service, endpoint_url=endpoint)

        _rds(env, client("rds"))
        _volumes(env, client("ec2"))
        lb = _alb(env, client("ec2"), client("elbv2"))
        _cloudwatch(env, client("cloudwatch"), lb)
        _bucket(env, client("s3"))
        _done.add(key)
    return endpoint


def _rds(env: Environment, rds: Any) -> None:
    instance = env.database.rds_instance if env.database else None
    if not instance:
        return
    try:
        rds.describe_db_instances(DBInstanceIdentifier=instance)
        return
    except Exception as exc:
        if "NotFound" not in _code(exc):
            raise
    rds.create_db_instance(DBInstanceIdentifier=instance, Engine="postgres", DBInstanceClass="db.t3.micro",
                           AllocatedStorage=20, MasterUsername="indostar",
                           MasterUserPassword="sandbox-moto-only")
    rds.create_db_snapshot(DBInstanceIdentifier=instance, DBSnapshotIdentifier=FOREIGN_SNAPSHOT)


def _volumes(env: Environment, ec2: Any) -> None:
    assert env.aws is not None
    for volume in env.aws.volumes:
        if volume.name is None:
            continue
        found = ec2.describe_volumes(Filters=[{"Name": "tag:Name", "Values": [volume.name]}])["Volumes"]
        if not found:
            ec2.create_volume(Size=20, AvailabilityZone=f"{env.aws.region}a", VolumeType="gp3",
                              TagSpecifications=[{"ResourceType": "volume", "Tags": [
                                  {"Key": "Name", "Value": volume.name}]}])


def _alb(env: Environment, ec2: Any, elb: Any) -> str | None:
    alb = env.alb
    if alb is None:
        return None
    try:
        return str(elb.describe_load_balancers(Names=[alb.load_balancer])["LoadBalancers"][0]["LoadBalancerArn"])
    except Exception as exc:
        if "NotFound" not in _code(exc):
            raise
    assert env.aws is not None
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.20.{i}.0/24",
                                 AvailabilityZone=f"{env.aws.region}{zone}")["Subnet"]["SubnetId"]
               for i, zone in ((1, "a"), (2, "b"))]
    lb = elb.create_load_balancer(Name=alb.load_balancer, Subnets=subnets, Type="application",
                                  Scheme="internet-facing")["LoadBalancers"][0]["LoadBalancerArn"]
    tg = elb.create_target_group(Name=alb.target_group or f"{alb.load_balancer[:20]}-backend", Protocol="HTTP",
                                 Port=8000, VpcId=vpc, TargetType="ip")["TargetGroups"][0]["TargetGroupArn"]
    listener = elb.create_listener(LoadBalancerArn=lb, Protocol="HTTP", Port=alb.listener_port,
                                   DefaultActions=[{"Type": "forward", "TargetGroupArn": tg}])
    elb.create_rule(ListenerArn=listener["Listeners"][0]["ListenerArn"], Priority=10,
                    Conditions=[{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/api/*"]}}],
                    Actions=[{"Type": "forward", "TargetGroupArn": tg}])
    return str(lb)


def _cloudwatch(env: Environment, cw: Any, lb: str | None) -> None:
    if cw.describe_alarms(AlarmNames=[FOREIGN_ALARM])["MetricAlarms"]:
        return
    cw.put_metric_alarm(AlarmName=FOREIGN_ALARM, Namespace="CWAgent", MetricName="disk_used_percent",
                        Statistic="Average", Period=300, EvaluationPeriods=1, Threshold=90,
                        ComparisonOperator="GreaterThanThreshold")
    cw.set_alarm_state(AlarmName=FOREIGN_ALARM, StateValue="ALARM", StateReason="sandbox: seeded in ALARM")
    now = datetime.now(UTC)
    data: list[dict[str, Any]] = []
    if lb is not None:
        dim = [{"Name": "LoadBalancer", "Value": lb.split(":loadbalancer/", 1)[-1]}]
        for i, seconds in enumerate((0.12, 0.18, 0.25, 0.4, 0.9, 1.4)):
            data.append({"MetricName": "TargetResponseTime", "Dimensions": dim, "Value": seconds,
                         "Timestamp": now - timedelta(minutes=5 * i), "Unit": "Seconds"})
        data.append({"MetricName": "RequestCount", "Dimensions": dim, "Value": 1200, "Timestamp": now,
                     "Unit": "Count"})
        data.append({"MetricName": "HTTPCode_Target_5XX_Count", "Dimensions": dim, "Value": 6, "Timestamp": now,
                     "Unit": "Count"})
        cw.put_metric_data(Namespace="AWS/ApplicationELB", MetricData=data)
    assert env.aws is not None
    cw.put_metric_data(Namespace=env.aws.app_namespace, MetricData=[
        {"MetricName": "Errors", "Value": 3, "Timestamp": now, "Unit": "Count"}])


def _bucket(env: Environment, s3: Any) -> None:
    assert env.aws is not None
    bucket = env.aws.backup_bucket
    if not bucket:
        return
    try:
        s3.head_bucket(Bucket=bucket)
    except Exception as exc:
        if _code(exc) not in ("404", "NoSuchBucket", "NotFound"):
            raise
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": env.aws.region})
