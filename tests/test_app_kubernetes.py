"""app.* on Kubernetes: the official client against the in-process API fake (tests/rig/k8sfake.py).

Each test arranges the cluster, runs the task as a user would (the CLI, `--json`) or
through the library (Runner), and asserts what the API server holds afterwards.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.app_support import task_fixture  # noqa: F401 - the `task` fixture
from tests.rig.k8sfake import REVISION, FakeKubernetes
from tests.support import InventoryDir, cli_json, run_cli

NS = "indostar-naturals"


@pytest.fixture
def cluster() -> Iterator[FakeKubernetes]:
    fake = FakeKubernetes(NS).start()
    fake.add_deployment("backend", replicas=3, image="registry.test/backend:7",
                        history=[(1, "registry.test/backend:1"), (4, "registry.test/backend:4")], revision=7,
                        annotations={"team": "payments", "kubernetes.io/change-cause": "deploy 7"})
    fake.add_deployment("celery-worker", replicas=2, image="registry.test/worker:7")
    yield fake
    fake.stop()


def k8s_inventory(inventory: InventoryDir, fake: FakeKubernetes, tmp_path: Path, *, tier: str = "staging",
                  context: str = "indostar-test", **platform: Any) -> None:
    kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig")
    inventory.write("kube", {
        "tier": tier, "connection": "local",
        "platform": {"kind": "kubernetes", "kubeconfig": str(kubeconfig), "context": context, "namespace": NS,
                     "replicas": {"backend": 3, "celery-worker": 2}, "poll_interval": 0.02,
                     "rollout_timeout": 10, **platform},
    })


@pytest.fixture
def kube(inventory: InventoryDir, cluster: FakeKubernetes, tmp_path: Path) -> FakeKubernetes:
    k8s_inventory(inventory, cluster, tmp_path)
    return cluster


def results(doc: dict[str, Any]) -> list[dict[str, Any]]:
    assert "steps" in doc, doc
    return [t for s in doc["steps"] for t in s["targets"]]


def result(doc: dict[str, Any], step: str, index: int = 0) -> dict[str, Any]:
    return [r for r in results(doc) if r["step"] == step][index]


def spec(fake: FakeKubernetes, name: str = "backend") -> dict[str, Any]:
    return fake.deployments[name]["spec"]


# ------------------------------------------------------------------------------- status and logs


def test_status_reports_instances_with_metrics_and_ok_exit(kube: FakeKubernetes) -> None:
    code, doc = cli_json("app.status", "--env", "kube")
    assert code == 0, doc
    backend = next(r for r in results(doc) if r["target"] == "deployment/backend")
    assert backend["data"]["desired"] == 3 and backend["data"]["ready"] == 3
    pods = backend["data"]["instances"]
    assert len(pods) == 3 and all(p["ready"] for p in pods)
    assert pods[0]["node"].startswith("node-") and pods[0]["memory_limit_bytes"] == 2**30
    assert pods[0]["memory_bytes"] == 734003 * 1024  # metrics.k8s.io, the runbook's `kubectl top`
    assert {r["target"] for r in results(doc)} == {"deployment/backend", "deployment/celery-worker"}


def test_status_crashloop_is_warning_and_names_the_reason(task: Any, kube: FakeKubernetes) -> None:
    kube.stuck.add("backend")
    kube.metrics = False  # no metrics-server: status still works, without usage
    kube.deployments["backend"]["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.test/backend:8"
    kube.deployments["backend"]["metadata"]["generation"] += 1
    kube.tick()
    kube.tick()
    code, doc = task("app.status", "--env", "kube", "--component", "backend")
    assert code == 1, doc
    backend = result(doc, "app.status")
    assert "CrashLoopBackOff" in backend["reason"] and "OOMKilled" in backend["reason"]
    assert backend["data"]["metrics"] is False


def test_status_no_ready_pod_is_critical(task: Any, kube: FakeKubernetes) -> None:
    kube.stuck.update({"backend", "celery-worker"})
    for name in list(kube.pods):
        kube._set_pod_ready(name, False, waiting="CrashLoopBackOff", restarts=4, last="Error")
    code, doc = task("app.status", "--env", "kube")
    assert code == 2, doc


def test_status_below_the_inventory_replicas_is_a_warning(task: Any, inventory: InventoryDir,
                                                          cluster: FakeKubernetes, tmp_path: Path) -> None:
    k8s_inventory(inventory, cluster, tmp_path, replicas={"backend": 4})
    code, doc = task("app.status", "--env", "kube", "--component", "backend")
    assert code == 1 and "desired 3 is below the inventory's 4" in result(doc, "app.status")["reason"]


def test_logs_tail_since_and_grep(task: Any, kube: FakeKubernetes) -> None:
    kube.add_logs("backend", [(3600, "old webhook line"), (120, "INFO GET /health"),
                              (60, "ERROR webhook signature mismatch"), (5, "INFO POST /orders")])
    code, doc = task("app.logs", "--env", "kube", "--component", "backend", "--tail", "3", "--since", "10m",
                         "--grep", "webhook|ERROR")
    assert code == 0, doc
    lines = result(doc, "app.logs")["data"]["lines"]
    assert [line["text"] for line in lines] == ["ERROR webhook signature mismatch"] * 3  # one per pod
    assert len({line["instance"] for line in lines}) == 3
    assert ("GET", f"/api/v1/namespaces/{NS}/pods/{lines[0]['instance']}/log?container=backend&sinceSeconds=600"
            "&tailLines=3") in kube.requests or any("tailLines=3" in path for _, path in kube.requests)


def test_logs_of_crashlooping_pods_come_from_the_previous_container(task: Any, kube: FakeKubernetes) -> None:
    kube.add_logs("backend", [(30, "MemoryError: cannot allocate")])
    kube.stuck.add("backend")
    spec(kube)["template"]["spec"]["containers"][0]["image"] = "registry.test/backend:8"
    kube.deployments["backend"]["metadata"]["generation"] += 1
    kube.tick()  # new pods created, waiting
    code, doc = task("app.logs", "--env", "kube")
    lines = [line["text"] for line in result(doc, "app.logs")["data"]["lines"]]
    # 3 old pods still running, and 3 new ones in CrashLoopBackOff whose crashed container's log is shown
    assert code == 0 and lines.count("<previous container>") == 3
    assert lines.count("MemoryError: cannot allocate") == 6


def test_bad_grep_and_unknown_component_are_usage_errors(task: Any, kube: FakeKubernetes) -> None:
    code, doc = task("app.logs", "--env", "kube", "--grep", "(")
    assert code == 2 and "regular expression" in doc["error"]
    code, doc = task("app.logs", "--env", "kube", "--component", "frontend")
    assert code == 2 and "unknown component 'frontend'" in doc["error"] and "backend" in doc["hint"]
    assert kube.requests == []  # preflight: nothing was asked of the cluster


# ------------------------------------------------------------------------------- errors a user hits


def test_missing_kubeconfig_and_wrong_context(task: Any, inventory: InventoryDir, cluster: FakeKubernetes,
                                              tmp_path: Path) -> None:
    k8s_inventory(inventory, cluster, tmp_path, kubeconfig=str(tmp_path / "nope"))
    code, doc = task("app.status", "--env", "kube", "--component", "backend")
    assert code == 3, doc  # monitoring: cannot tell = UNKNOWN
    r = result(doc, "app.status")
    assert r["status"] == "unreachable" and "no kubeconfig at" in r["error"] and "Traceback" not in r["error"]
    k8s_inventory(inventory, cluster, tmp_path, context="indostar-prod")
    code, doc = task("app.restart", "--env", "kube")
    r = result(doc, "app.restart")
    assert code == 1 and r["status"] == "unreachable" and "no context 'indostar-prod'" in r["error"]


def test_api_server_down_costs_one_attempt(task: Any, inventory: InventoryDir, tmp_path: Path) -> None:
    """A server that drops every connection: one attempt, reported as unreachable, no client traceback."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[int] = []

    def drop() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(1)
            conn.close()

    threading.Thread(target=drop, daemon=True).start()
    fake = FakeKubernetes(NS)
    fake._server = type("S", (), {"server_address": listener.getsockname()})()  # kubeconfig -> the listener
    k8s_inventory(inventory, fake, tmp_path)
    code, doc = task("app.scale", "--env", "kube", "--replicas", "2")
    listener.close()
    r = result(doc, "app.scale")
    assert code == 1 and r["status"] == "unreachable" and "kubernetes API" in r["error"], r
    assert "Traceback" not in r["error"] and len(accepted) == 1


def test_rbac_forbidden_names_verb_and_resource(task: Any, kube: FakeKubernetes) -> None:
    kube.forbid("patch", "deployments/scale")
    code, doc = task("app.scale", "--env", "kube", "--replicas", "5")
    r = result(doc, "app.scale")
    assert code == 1 and "forbidden: cannot patch deployments.apps/scale 'backend'" in r["error"], r
    assert "kubectl auth can-i patch deployments.apps --subresource=scale -n indostar-naturals" in r["error"]
    assert spec(kube)["replicas"] == 3
    # check mode finds the same refusal with a server-side dry run, and writes nothing
    code, doc = task("app.scale", "--env", "kube", "--replicas", "5", "--check")
    assert code == 1 and "forbidden" in result(doc, "app.scale")["error"]


def test_missing_deployment(task: Any, inventory: InventoryDir, cluster: FakeKubernetes, tmp_path: Path) -> None:
    k8s_inventory(inventory, cluster, tmp_path, components={"backend": "api"})
    code, doc = task("app.restart", "--env", "kube")
    r = result(doc, "app.restart")
    assert code == 1 and "deployment 'api' (component backend) not found in namespace indostar-naturals" in r["error"]


# ------------------------------------------------------------------------------- scale


def test_scale_check_writes_nothing_then_scales_waits_and_is_idempotent(task: Any, kube: FakeKubernetes) -> None:
    code, doc = task("app.scale", "--env", "kube", "--replicas", "5", "--check")
    r = result(doc, "app.scale")
    assert code == 0 and r["status"] == "changed" and r["changes"][0]["before"] == 3
    assert "dry run" in r["data"]["validated"]
    assert all("dryRun=All" in path for method, path in kube.writes())  # only server-side dry runs
    assert spec(kube)["replicas"] == 3

    code, doc = task("app.scale", "--env", "kube", "--replicas", "5", "--expect", "3")
    r = result(doc, "app.scale")
    assert code == 0 and r["status"] == "changed", r
    assert spec(kube)["replicas"] == 5 and kube.deployments["backend"]["status"]["readyReplicas"] == 5
    assert r["undo"] == {"step": "app.scale", "args": {"component": "backend", "replicas": 3},
                         "summary": "scale deployment/backend back to 3 replicas"}
    assert [a["kind"] for a in r["actions"]] == ["kubernetes"]

    code, doc = task("app.scale", "--env", "kube", "--replicas", "5")
    assert code == 0 and result(doc, "app.scale")["status"] == "ok"


def test_scale_expect_mismatch_is_refused(task: Any, kube: FakeKubernetes) -> None:
    writes = len(kube.writes())
    code, doc = task("app.scale", "--env", "kube", "--replicas", "5", "--expect", "2")
    r = result(doc, "app.scale")
    assert code == 1 and "has 3 replicas now, not the 2 you expected" in r["error"]
    assert len(kube.writes()) == writes and spec(kube)["replicas"] == 3


def test_scale_that_never_gets_ready_is_undone_to_recorded_count(task: Any, kube: FakeKubernetes) -> None:
    kube.stuck.add("backend")
    code, doc = task("app.scale", "--env", "kube", "--replicas", "6", "--timeout", "0.5")
    r = result(doc, "app.scale")
    assert code == 1 and "scaled back to the recorded 3 replicas" in r["error"], r
    assert "CrashLoopBackOff" in r["error"]  # the stuck pods and why
    assert spec(kube)["replicas"] == 3
    assert [a["summary"] for a in r["actions"]] == [
        "scale deployment/backend from 3 to 6", "undo: scale deployment/backend back to 3 (not ready in time)"]


def test_interrupted_scale_is_undone(kube: FakeKubernetes) -> None:
    """Ctrl-C while waiting for readiness: the step scales back to the count it recorded."""
    from indostar_ops import Context, Runner, load_environment
    from indostar_ops.steps.app import AppScale

    kube.stuck.add("backend")
    seen: list[Any] = []

    def interrupt(progress: Any) -> None:
        seen.append(progress)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with Context(load_environment("kube"), progress=interrupt) as ctx:
        run = Runner(ctx).run([AppScale("backend", replicas=4)], task="test")
    assert any(r.step == "run.interrupted" for r in run.results)
    assert spec(kube)["replicas"] == 3
    assert [w for w in kube.writes()] == [
        ("PATCH", f"/apis/apps/v1/namespaces/{NS}/deployments/backend/scale")] * 2  # 3 -> 4, then 4 -> 3


# ------------------------------------------------------------------------------- restart


def test_restart_patches_template_waits_and_verifies(task: Any, kube: FakeKubernetes) -> None:
    code, doc = task("app.restart", "--env", "kube", "--check")
    assert code == 0 and result(doc, "app.restart")["status"] == "changed"
    assert all("dryRun=All" in path for _, path in kube.writes())
    assert "kubectl.kubernetes.io/restartedAt" not in str(spec(kube)["template"])

    code, doc = task("app.restart", "--env", "kube")
    r = result(doc, "app.restart")
    assert code == 0 and r["status"] == "changed", r
    annotations = spec(kube)["template"]["metadata"]["annotations"]
    assert annotations["kubectl.kubernetes.io/restartedAt"] == r["data"]["restartedAt"]
    dep = kube.deployments["backend"]
    assert dep["status"]["observedGeneration"] == dep["metadata"]["generation"] == 2
    assert dep["metadata"]["annotations"][REVISION] == "8" and dep["status"]["updatedReplicas"] == 3


def test_restart_of_paused_deployment_is_refused(task: Any, kube: FakeKubernetes) -> None:
    spec(kube)["paused"] = True
    code, doc = task("app.restart", "--env", "kube")
    r = result(doc, "app.restart")
    assert code == 1 and "paused" in r["error"] and "rollout resume" in r["error"]
    assert kube.writes() == []


def test_restart_timeout_reports_stuck_pods_and_offers_the_undo(task: Any, kube: FakeKubernetes) -> None:
    kube.stuck.add("backend")
    code, doc = task("app.restart", "--env", "kube", "--timeout", "0.5")
    r = result(doc, "app.restart")
    assert code == 1 and r["error_type"] == "WaitTimeout"
    assert "stuck: backend-" in r["error"] and "CrashLoopBackOff" in r["error"]
    assert "invoke app.rollback --env kube --component backend --to-revision 7" in r["error"]


def test_production_restart_needs_yes(inventory: InventoryDir, cluster: FakeKubernetes, tmp_path: Path) -> None:
    k8s_inventory(inventory, cluster, tmp_path, tier="production")
    proc = run_cli("app.restart", "--env", "kube")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert not [w for w in cluster.writes() if "dryRun" not in w[1]]


# ------------------------------------------------------------------------------- rollback


def test_rollback_picks_highest_lower_revision_keeps_annotations(task: Any, kube: FakeKubernetes) -> None:
    code, doc = task("app.rollback", "--env", "kube", "--check")
    r = result(doc, "app.rollback")
    assert code == 0 and r["changes"][0]["summary"] == "roll back deployment/backend from revision 7 to 4"
    assert r["changes"][0]["diff"] == "-backend: registry.test/backend:7\n+backend: registry.test/backend:4\n"
    assert spec(kube)["template"]["spec"]["containers"][0]["image"] == "registry.test/backend:7"

    code, doc = task("app.rollback", "--env", "kube")
    r = result(doc, "app.rollback")
    assert code == 0 and r["status"] == "changed", r
    dep = kube.deployments["backend"]
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.test/backend:4"
    assert dep["metadata"]["annotations"]["team"] == "payments"  # kept (kubectl would replace them)
    assert dep["metadata"]["annotations"][REVISION] == "8"  # the revision-4 ReplicaSet is renumbered
    assert r["undo"]["args"] == {"component": "backend", "to_revision": 7}

    # again: now 1 and 7 are older than the current 8: the highest is 7, not 8-1 computed blindly
    code, doc = task("app.rollback", "--env", "kube", "--check")
    assert result(doc, "app.rollback")["changes"][0]["summary"].endswith("from revision 8 to 7")


def test_rollback_of_paused_deployment_is_refused(task: Any, kube: FakeKubernetes) -> None:
    spec(kube)["paused"] = True
    code, doc = task("app.rollback", "--env", "kube")
    assert code == 1 and "paused" in result(doc, "app.rollback")["error"] and kube.writes() == []


def test_rollback_to_revision_and_unknown_revision(task: Any, kube: FakeKubernetes) -> None:
    code, doc = task("app.rollback", "--env", "kube", "--to-revision", "1")
    assert code == 0, doc
    assert spec(kube)["template"]["spec"]["containers"][0]["image"] == "registry.test/backend:1"
    code, doc = task("app.rollback", "--env", "kube", "--to-revision", "3")
    r = result(doc, "app.rollback")
    assert code == 1 and "no revision 3; known: 4, 7, 8" in r["error"]


# ------------------------------------------------------------------------------- resources


def test_resources_diff_apply_and_second_run_noop(task: Any, kube: FakeKubernetes) -> None:
    code, doc = task("app.resources", "--env", "kube", "--memory", "4Gi", "--cpu", "2000m", "--check")
    r = result(doc, "app.resources")
    assert code == 0 and "-limits.memory: 1Gi\n+limits.memory: 4Gi" in r["changes"][0]["diff"]
    assert spec(kube)["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] == "1Gi"

    code, doc = task("app.resources", "--env", "kube", "--memory", "4Gi", "--cpu", "2000m")
    assert code == 0, doc
    limits = spec(kube)["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits == {"memory": "4Gi", "cpu": "2000m"}
    assert result(doc, "app.resources")["undo"]["args"]["memory"] == "1Gi"

    code, doc = task("app.resources", "--env", "kube", "--memory", "4Gi", "--cpu", "2")  # 2 == 2000m
    assert code == 0 and result(doc, "app.resources")["status"] == "ok"


def test_resources_rejects_bad_quantities(task: Any, kube: FakeKubernetes) -> None:
    code, doc = task("app.resources", "--env", "kube", "--memory", "4 GB; touch /tmp/indostar-injection-marker")
    assert code == 2 and "not a Kubernetes quantity" in doc["error"]
    assert not os.path.exists("/tmp/indostar-injection-marker")


def test_read_handle_refuses_writes_and_check_mode_only_sends_dry_runs(kube: FakeKubernetes) -> None:
    from indostar_ops import Context, load_environment
    from indostar_ops.errors import CheckModeViolation, StepError

    body = {"spec": {"replicas": 9}}
    with Context(load_environment("kube")) as ctx:
        with pytest.raises(StepError, match=r"use ctx\.kubernetes\(\)\.change"):
            ctx.kubernetes().apps.patch_namespaced_deployment_scale("backend", NS, body)
    with Context(load_environment("kube"), check=True) as ctx:
        k8s = ctx.kubernetes()
        with pytest.raises(CheckModeViolation):
            k8s.change("apps", "patch_namespaced_deployment_scale", summary="x", resource="deployment/backend",
                       name="backend", body=body)
        k8s.change("apps", "patch_namespaced_deployment_scale", summary="x", resource="deployment/backend",
                   name="backend", body=body, dry_run="All")
    assert spec(kube)["replicas"] == 3
    assert kube.writes() == [("PATCH", f"/apis/apps/v1/namespaces/{NS}/deployments/backend/scale?dryRun=All")]


def test_runner_unwinds_a_scale_when_a_later_step_fails(kube: FakeKubernetes) -> None:
    """The receipt (app.scale back to 3) is a registered step: the runner's undo stack restores the count."""
    from indostar_ops import Context, Runner, load_environment
    from indostar_ops.steps.app import AppRollback, AppScale

    with Context(load_environment("kube")) as ctx:
        run = Runner(ctx).run([AppScale("backend", replicas=5), AppRollback("backend", to_revision=99)],
                              task="test")
    scales = [r for r in run.results if r.step == "app.scale"]
    assert [r.status for r in scales] == ["changed", "changed"]  # the scale, then its undo
    assert spec(kube)["replicas"] == 3 and kube.deployments["backend"]["status"]["readyReplicas"] == 3
