"""ECS backend: services of one cluster through boto3 (`ctx.aws()`).

Reads are Describe/List calls on the read-only client; every write is
`ctx.aws().call("ecs", "UpdateService", ...)` (journaled, refused in check mode):
desiredCount for scale, forceNewDeployment for a restart, and the service's task
definition for a rollback. Revisions are the task definition family's revisions
(ECS does not renumber on rollback: the service simply points at an older one).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, ClassVar

from ..errors import StepError
from .base import Instance, LogLine, PlatformBackend, Revision, Rollout

__all__ = ["EcsBackend"]

HISTORY = 20  # revisions looked at for a rollback


class EcsBackend(PlatformBackend):
    kind: ClassVar[str] = "ecs"
    resource_kind: ClassVar[str] = "ecs-service"
    capabilities: ClassVar[frozenset[str]] = frozenset({"logs", "restart", "scale", "rollback"})

    @property
    def _ecs(self) -> Any:
        return self.ctx.aws().client("ecs")

    def where(self, component: str) -> str:
        return f"cluster {self.settings.cluster}"

    def _service(self, component: str) -> dict[str, Any]:
        name = self.resource(component)
        found = self._ecs.describe_services(cluster=self.settings.cluster, services=[name])
        services = [s for s in found.get("services", []) if s.get("status") != "INACTIVE"]
        if not services:
            raise StepError(f"ECS service {name!r} (component {component}) not found in cluster "
                            f"{self.settings.cluster}",
                            hint="`aws ecs list-services --cluster ...`; check platform.components in the inventory")
        return dict(services[0])

    # -- reads ----------------------------------------------------------------------

    def instances(self, component: str) -> list[Instance]:
        arns = self._ecs.list_tasks(cluster=self.settings.cluster, serviceName=self.resource(component))["taskArns"]
        if not arns:
            return []
        tasks = self._ecs.describe_tasks(cluster=self.settings.cluster, tasks=arns[:100])["tasks"]
        now = datetime.now(UTC)
        out = []
        for task in tasks:
            started = task.get("startedAt")
            containers = task.get("containers", [])
            out.append(Instance(
                name=task["taskArn"].rsplit("/", 1)[-1], component=component,
                ready=task.get("lastStatus") == "RUNNING" and task.get("healthStatus", "UNKNOWN") != "UNHEALTHY",
                status=str(task.get("lastStatus", "?")), last_termination_reason=task.get("stoppedReason"),
                node=task.get("availabilityZone"), image=containers[0].get("image") if containers else None,
                revision=str(task.get("taskDefinitionArn", "")).rsplit(":", 1)[-1],
                age_s=(now - started).total_seconds() if started else None,
            ))
        return out

    def logs(self, component: str, *, tail: int = 100, since_s: float | None = None,
             grep: str | None = None) -> list[LogLine]:
        """CloudWatch Logs of the current task definition's `awslogs` containers: the last `tail` lines per stream."""
        service = self._service(component)
        definition = self._ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"]
        logs = self.ctx.aws().client("logs")
        lines: list[LogLine] = []
        configured = False
        for container in definition.get("containerDefinitions", []):
            config = container.get("logConfiguration") or {}
            options = config.get("options") or {}
            if config.get("logDriver") != "awslogs" or "awslogs-group" not in options:
                continue
            configured = True
            prefix = f"{options.get('awslogs-stream-prefix', '')}/{container['name']}/".lstrip("/")
            params: dict[str, Any] = {"logGroupName": options["awslogs-group"], "logStreamNamePrefix": prefix}
            if since_s:
                params["startTime"] = int((time.time() - since_s) * 1000)
            per_stream: dict[str, list[tuple[int, str]]] = {}
            pages = logs.get_paginator("filter_log_events").paginate(**params, PaginationConfig={"MaxItems": 10000})
            for page in pages:
                for event in page.get("events", []):
                    per_stream.setdefault(event["logStreamName"], []).append(
                        (int(event["timestamp"]), str(event["message"]).rstrip("\n")))
            for stream, events in sorted(per_stream.items()):
                task_id = stream.rsplit("/", 1)[-1]
                lines += [LogLine(task_id, text) for _, text in sorted(events)[-tail:]]
        if not configured:
            raise StepError(f"ECS service {self.resource(component)}: no container of {definition['family']}:"
                            f"{definition['revision']} logs with the awslogs driver",
                            hint="configure logConfiguration awslogs in the task definition to read logs from here")
        return self.filter_lines(lines, grep)

    def replicas(self, component: str) -> tuple[int, int]:
        service = self._service(component)
        return int(service.get("desiredCount", 0)), int(service.get("runningCount", 0))

    def rollout_status(self, component: str) -> Rollout:
        service = self._service(component)
        desired, running = int(service.get("desiredCount", 0)), int(service.get("runningCount", 0))
        deployments = service.get("deployments", [])
        primary = next((d for d in deployments if d.get("status") == "PRIMARY"), {})
        figures = {"desired": desired, "updated": int(primary.get("runningCount", running)), "ready": running,
                   "available": running}
        if primary.get("rolloutState") == "FAILED":
            return Rollout(False, f"deployment failed: {primary.get('rolloutStateReason', '')}", failed=True,
                           **figures)
        if len(deployments) > 1:
            return Rollout(False, f"{len(deployments) - 1} older deployment(s) still draining; {running}/{desired} "
                                  "running", **figures)
        return Rollout(running >= desired, f"{running}/{desired} tasks running", **figures)

    def revisions(self, component: str) -> list[Revision]:
        service = self._service(component)
        current = service["taskDefinition"]
        family = current.rsplit("/", 1)[-1].rsplit(":", 1)[0]
        arns = self._ecs.list_task_definitions(familyPrefix=family, sort="DESC", maxResults=HISTORY)
        out = []
        for arn in arns.get("taskDefinitionArns", []):
            if arn.rsplit("/", 1)[-1].rsplit(":", 1)[0] != family:
                continue
            definition = self._ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
            out.append(Revision(
                number=int(definition["revision"]), name=arn, current=arn == current,
                images={c["name"]: c.get("image", "") for c in definition.get("containerDefinitions", [])},
            ))
        return sorted(out, key=lambda r: r.number)

    # -- writes -----------------------------------------------------------------------

    def _update(self, component: str, summary: str, **params: Any) -> None:
        self.ctx.aws().call("ecs", "update_service", summary=summary, cluster=self.settings.cluster,
                            service=self.resource(component), **params)

    def scale(self, component: str, replicas: int, *, summary: str, expect: int | None = None) -> None:
        if expect is not None:  # no server-side compare-and-set on ECS: re-read right before
            desired, _ = self.replicas(component)
            if desired != expect:
                raise StepError(f"ECS service {self.resource(component)} has desiredCount {desired} now, not "
                                f"{expect}; someone else changed it, nothing was done")
        self._update(component, summary, desiredCount=int(replicas))

    def restart(self, component: str, *, summary: str) -> dict[str, Any]:
        self._update(component, summary, forceNewDeployment=True)
        return {}

    def rollback(self, component: str, revision: Revision, *, summary: str) -> None:
        if not revision.name:
            raise StepError(f"revision {revision.number} has no task definition ARN")
        self._update(component, summary, taskDefinition=revision.name)
