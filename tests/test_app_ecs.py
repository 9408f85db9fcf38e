"""app.* on ECS through moto's server: scale, restart (forceNewDeployment) and rollback by task definition."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.app_support import task_fixture  # noqa: F401 - the `task` fixture
from tests.support import InventoryDir

CLUSTER = "indostar-production"


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def ecs(moto_endpoint: str, inventory: InventoryDir) -> Any:
    import boto3

    client = boto3.client("ecs", region_name="ap-south-1", endpoint_url=moto_endpoint)
    for arn in client.list_clusters()["clusterArns"]:  # module-scoped server: start every test clean
        for svc in client.list_services(cluster=arn)["serviceArns"]:
            client.delete_service(cluster=arn, service=svc, force=True)
    client.create_cluster(clusterName=CLUSTER)
    family = f"backend-{uuid.uuid4().hex[:8]}"
    for image in ("backend:1", "backend:2", "backend:3", "backend:4"):
        latest = client.register_task_definition(family=family, containerDefinitions=[
            {"name": "backend", "image": f"registry.test/{image}", "memory": 512,
             "logConfiguration": {"logDriver": "awslogs", "options": {
                 "awslogs-group": f"/ecs/{family}", "awslogs-region": "ap-south-1",
                 "awslogs-stream-prefix": "ecs"}}}])["taskDefinition"]["taskDefinitionArn"]
    client.deregister_task_definition(taskDefinition=f"{family}:3")  # revisions 1, 2, 4 remain: not contiguous
    client.create_service(cluster=CLUSTER, serviceName="backend", taskDefinition=latest, desiredCount=2)
    client.update_service(cluster=CLUSTER, service="backend", desiredCount=2)  # moto: running catches up
    logs = boto3.client("logs", region_name="ap-south-1", endpoint_url=moto_endpoint)
    logs.create_log_group(logGroupName=f"/ecs/{family}")
    now = int(time.time() * 1000)
    for task_id in ("t1", "t2"):
        stream = f"ecs/backend/{task_id}"
        logs.create_log_stream(logGroupName=f"/ecs/{family}", logStreamName=stream)
        logs.put_log_events(logGroupName=f"/ecs/{family}", logStreamName=stream, logEvents=[
            {"timestamp": now - 7_200_000, "message": "old ERROR webhook"},
            {"timestamp": now - 60_000, "message": "INFO GET /health"},
            {"timestamp": now - 30_000, "message": f"ERROR webhook signature mismatch on {task_id}"}])
    inventory.write("aws", {"tier": "staging", "connection": "local",
                            "aws": {"region": "ap-south-1", "endpoint_url": moto_endpoint, "max_attempts": 2},
                            "platform": {"kind": "ecs", "cluster": CLUSTER, "components": {"backend": "backend"},
                                         "poll_interval": 0.05, "rollout_timeout": 5}})
    return client


def result(doc: dict[str, Any]) -> dict[str, Any]:
    assert "steps" in doc, doc
    return doc["steps"][0]["targets"][0]


def service(ecs: Any) -> dict[str, Any]:
    return ecs.describe_services(cluster=CLUSTER, services=["backend"])["services"][0]


def test_scale_check_apply_noop(ecs: Any, task: Any) -> None:
    code, doc = task("app.scale", "--env", "aws", "--replicas", "4", "--check")
    assert code == 0 and result(doc)["status"] == "changed" and service(ecs)["desiredCount"] == 2
    code, doc = task("app.scale", "--env", "aws", "--replicas", "4", "--expect", "2")
    assert code == 0, result(doc).get("error")
    assert service(ecs)["desiredCount"] == 4
    assert result(doc)["undo"]["args"] == {"component": "backend", "replicas": 2}
    assert result(doc)["actions"][0]["call"] == "ecs.update_service"
    code, doc = task("app.scale", "--env", "aws", "--replicas", "4")
    assert code == 0 and result(doc)["status"] == "ok"
    code, doc = task("app.scale", "--env", "aws", "--replicas", "6", "--expect", "2")
    assert code == 1 and "not the 2 you expected" in result(doc)["error"]


def test_rollback_to_highest_lower_task_definition(ecs: Any, task: Any) -> None:
    code, doc = task("app.rollback", "--env", "aws", "--check")
    r = result(doc)
    assert code == 0, r.get("error")
    assert r["changes"][0]["summary"] == "roll back ecs-service/backend from revision 4 to 2"
    assert r["changes"][0]["diff"] == "-backend: registry.test/backend:4\n+backend: registry.test/backend:2\n"
    assert service(ecs)["taskDefinition"].endswith(":4")

    code, doc = task("app.rollback", "--env", "aws")
    assert code == 0, result(doc).get("error")
    assert service(ecs)["taskDefinition"].endswith(":2")
    assert result(doc)["undo"]["args"] == {"component": "backend", "to_revision": 4}


def test_restart_forces_a_new_deployment(ecs: Any, task: Any) -> None:
    code, doc = task("app.restart", "--env", "aws", "--check")
    assert code == 0 and result(doc)["status"] == "changed" and not result(doc).get("actions")
    code, doc = task("app.restart", "--env", "aws")
    assert code == 0, result(doc).get("error")
    [action] = result(doc)["actions"]
    assert action["call"] == "ecs.update_service" and action["params"]["forceNewDeployment"] is True


def test_missing_service(ecs: Any, task: Any, inventory: InventoryDir) -> None:
    ecs.delete_service(cluster=CLUSTER, service="backend", force=True)
    code, doc = task("app.restart", "--env", "aws")
    assert code == 1 and "ECS service 'backend' (component backend) not found" in result(doc)["error"]


def test_logs_from_cloudwatch_per_task_with_since_and_grep(ecs: Any, task: Any) -> None:
    code, doc = task("app.logs", "--env", "aws", "--since", "1h", "--grep", "ERROR")
    assert code == 0, doc
    lines = result(doc)["data"]["lines"]
    assert lines == [{"instance": "t1", "text": "ERROR webhook signature mismatch on t1"},
                     {"instance": "t2", "text": "ERROR webhook signature mismatch on t2"}]
    code, doc = task("app.logs", "--env", "aws", "--tail", "1")
    assert [line["text"] for line in result(doc)["data"]["lines"]] == [
        "ERROR webhook signature mismatch on t1", "ERROR webhook signature mismatch on t2"]


def test_status_reports_desired_and_running_tasks(ecs: Any, task: Any) -> None:
    code, doc = task("app.status", "--env", "aws")
    assert code == 0 and result(doc)["data"]["desired"] == 2 and result(doc)["data"]["ready"] == 2
    ecs.update_service(cluster=CLUSTER, service="backend", desiredCount=0)
    code, doc = task("app.status", "--env", "aws")
    assert code == 0 and result(doc)["data"]["desired"] == 0  # nothing desired (no inventory expectation): OK
