"""The least-privilege IAM policy the AWS tasks need, derived from each step's declared `aws_calls`.

`aws.policy --env prod` prints it. Resources are narrowed where IAM allows it: the
environment's RDS instance and our snapshot prefix, our alarm names, the load
balancer's listener rules (DeleteRule only on rules tagged as our maintenance rule),
EBS volumes in the region, the backup bucket's environment prefix, and the exact SSM
parameters / Secrets Manager secrets the inventory references. Describe/List/Get
calls that IAM cannot scope get "*". The tests record every call the tasks really
make (a botocore hook) and check that each one is declared here.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ...inventory import Environment

__all__ = ["TASK_STEPS", "iam_action", "policy_for", "task_steps"]

_SERVICE = {"elbv2": "elasticloadbalancing", "elb": "elasticloadbalancing"}
_RENAMED = {("s3", "HeadObject"): "GetObject", ("s3", "ListObjectsV2"): "ListBucket",
            ("s3", "HeadBucket"): "ListBucket"}

# task -> the step classes it runs (module:Class), for the policy and its test
_A = "indostar_ops.steps.aws"
TASK_STEPS: dict[str, tuple[str, ...]] = {
    "rds.snapshot": (f"{_A}.rds:RdsSnapshot",),
    "rds.snapshots": (f"{_A}.rds:RdsSnapshots",),
    "rds.prune": (f"{_A}.rds:RdsPrune",),
    "rds.status": (f"{_A}.rds:RdsStatus",),
    "volume.resize": (f"{_A}.volume:VolumeModify",),
    "maintenance.on": (f"{_A}.alb:AlbMaintenanceOn",),
    "maintenance.off": (f"{_A}.alb:AlbMaintenanceOff",),
    "maintenance.status": (f"{_A}.alb:AlbMaintenanceStatus",),
    "monitor.metrics": (f"{_A}.cloudwatch:MonitorMetrics",),
    "monitor.alarms": (f"{_A}.cloudwatch:MonitorAlarms",),
    "monitor.apply-alarms": (f"{_A}.cloudwatch:ApplyAlarms",),
    "backup.config": (f"{_A}.backup:BackupConfig",),
}


def iam_action(service: str, operation: str) -> str:
    """boto3 service + API operation (CreateDBSnapshot) -> IAM action (rds:CreateDBSnapshot)."""
    return f"{_SERVICE.get(service, service)}:{_RENAMED.get((service, operation), operation)}"


def task_steps(task: str) -> list[type[Any]]:
    import importlib

    out = []
    for ref in TASK_STEPS[task]:
        module, _, name = ref.partition(":")
        out.append(getattr(importlib.import_module(module), name))
    return out


def tasks_for(env: Environment) -> list[str]:
    """The AWS tasks this environment's inventory configures."""
    rds = env.database is not None and bool(env.database.rds_instance)
    aws = env.aws
    out = []
    for task in TASK_STEPS:
        area = task.split(".")[0]
        if area == "rds" and not rds:
            continue
        if task == "volume.resize" and not (aws and aws.volumes):
            continue
        if area == "maintenance" and (env.alb is None or env.maintenance.strategy != "alb"):
            continue
        if task == "backup.config" and not (aws and aws.backup_bucket):
            continue
        out.append(task)
    return out


def _resources(env: Environment, action: str) -> tuple[list[str], dict[str, Any] | None]:
    """The narrowest resource ARNs (and condition) for one action in this environment."""
    assert env.aws is not None
    region = env.aws.region
    service, _, op = action.partition(":")
    if op.startswith(("Describe", "List", "Get")) and service not in ("s3", "ssm", "secretsmanager"):
        return ["*"], None  # reads IAM cannot scope to a resource (or only by filters it does not see)
    if service == "rds":
        inst = env.database.rds_instance if env.database and env.database.rds_instance else "*"
        snap = f"arn:aws:rds:{region}:*:snapshot:{_snapshot_prefix(env)}-*"
        if op == "DeleteDBSnapshot":
            return [snap], None
        return [f"arn:aws:rds:{region}:*:db:{inst}", snap], None
    if service == "ec2":
        if op == "CreateTags":
            return [f"arn:aws:ec2:{region}::snapshot/*"], {"StringEquals": {"ec2:CreateAction": "CreateSnapshot"}}
        ids = [v.id for v in env.aws.volumes if v.id]
        volumes = ([f"arn:aws:ec2:{region}:*:volume/{i}" for i in ids]
                   if ids and len(ids) == len(env.aws.volumes) else [f"arn:aws:ec2:{region}:*:volume/*"])
        if op == "CreateSnapshot":
            return [*volumes, f"arn:aws:ec2:{region}::snapshot/*"], None
        return volumes, None
    if service == "elasticloadbalancing":
        lb = env.alb.load_balancer if env.alb else "*"
        rules = f"arn:aws:elasticloadbalancing:{region}:*:listener-rule/app/{lb}/*"
        if op == "CreateRule":
            return [f"arn:aws:elasticloadbalancing:{region}:*:listener/app/{lb}/*", rules], None
        if op == "DeleteRule":
            return [rules], {"StringEquals": {"aws:ResourceTag/indostar-ops:purpose": "maintenance"}}
        return [rules], None
    if service == "cloudwatch":
        return [f"arn:aws:cloudwatch:{region}:*:alarm:{env.aws.alarm_prefix}-{env.name}-*"], None
    if service == "s3":
        bucket = env.aws.backup_bucket
        prefix = f"{env.aws.backup_prefix.strip('/')}/{env.name}/"
        if op == "ListBucket":
            return [f"arn:aws:s3:::{bucket}"], {"StringLike": {"s3:prefix": [f"{prefix}*"]}}
        return [f"arn:aws:s3:::{bucket}/{prefix}*"], None
    return ["*"], None


def _snapshot_prefix(env: Environment) -> str:
    from . import aws_id

    assert env.aws is not None
    return aws_id(env.aws.snapshot_prefix, env.name)


def policy_for(env: Environment, tasks: list[str] | None = None) -> dict[str, Any]:
    """The IAM policy document (Version 2012-10-17) for the environment's AWS tasks."""
    import json

    chosen = tasks if tasks is not None else tasks_for(env)
    actions = sorted({action for task in chosen for cls in task_steps(task) for action in cls.aws_calls})
    grouped: dict[str, tuple[list[str], dict[str, Any] | None, list[str]]] = {}
    for action in actions:
        resources, condition = _resources(env, action)
        key = json.dumps([resources, condition], sort_keys=True)
        grouped.setdefault(key, (resources, condition, []))[2].append(action)
    statements = []
    for resources, condition, acts in grouped.values():
        services = sorted({a.split(":")[0] for a in acts})
        sid = "ReadOnly" if resources == ["*"] else \
            re.sub(r"[^A-Za-z0-9]", "", "".join(s.title() for s in services)) + str(len(statements) + 1)
        statement: dict[str, Any] = {"Sid": sid, "Effect": "Allow", "Action": acts,
                                     "Resource": resources if len(resources) > 1 else resources[0]}
        if condition:
            statement["Condition"] = condition
        statements.append(statement)
    statements += _secret_statements(env)
    return {"Version": "2012-10-17", "Statement": statements}


def _secret_statements(env: Environment) -> list[dict[str, Any]]:
    """Read access to exactly the SSM parameters and secrets the inventory references."""
    assert env.aws is not None
    region = env.aws.region
    ssm, sm = set(), set()
    for secret in env.secrets():
        if secret.scheme == "ssm":
            ssm.add(f"arn:aws:ssm:{region}:*:parameter/{secret.key.lstrip('/')}")
        elif secret.scheme == "secretsmanager":
            sm.add(f"arn:aws:secretsmanager:{region}:*:secret:{secret.key}-*")
    out = []
    if ssm:
        out.append({"Sid": "InventorySsmParameters", "Effect": "Allow", "Action": ["ssm:GetParameter"],
                    "Resource": sorted(ssm)})
    if sm:
        out.append({"Sid": "InventorySecrets", "Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"],
                    "Resource": sorted(sm)})
    return out
