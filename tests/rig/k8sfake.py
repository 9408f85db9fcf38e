"""A small, faithful fake of the Kubernetes API for the official Python client (no API server runs here).

Stdlib `ThreadingHTTPServer` in a thread, in-memory objects, one namespace. It
serves what the platform backend uses, with the behaviour it depends on:

- core/v1 pods (list by label selector), pod log (`tailLines`, `sinceSeconds`)
- apps/v1 deployments get/patch (strategic-merge, merge and JSON patch with `test`
  ops), the scale subresource (autoscaling/v1 Scale, `status.selector` a string),
  replicasets listed by label with `deployment.kubernetes.io/revision` annotations
- metrics.k8s.io/v1beta1 pod metrics (404 when `metrics=False`, as without metrics-server)
- `dryRun=All` validates and answers but stores nothing
- RBAC: `forbid(verb, resource)` answers 403 with the real Status message
- a controller that advances one step per request: a spec change bumps
  `metadata.generation`; the next request observes it (new ReplicaSet at
  revision max+1, or an old one re-used and renumbered, as on rollback) and starts
  unready pods; the request after that makes them ready and removes the old pods.
  A `stuck` deployment's new pods never become ready (CrashLoopBackOff, restarts
  counting up) and its Progressing condition turns ProgressDeadlineExceeded.
  A paused deployment does not roll out.

Connect with a kubeconfig (`write_kubeconfig`) pointing at `url`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import yaml

REVISION = "deployment.kubernetes.io/revision"
HASH = "pod-template-hash"


def _now(offset_s: float = 0) -> str:
    return (datetime.now(UTC) - timedelta(seconds=offset_s)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _template_hash(template: dict[str, Any]) -> str:
    clean = copy.deepcopy(template)
    clean.get("metadata", {}).get("labels", {}).pop(HASH, None)
    return hashlib.sha256(json.dumps(clean, sort_keys=True).encode()).hexdigest()[:10]


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


class FakeKubernetes:
    def __init__(self, namespace: str = "indostar-naturals", *, metrics: bool = True) -> None:
        self.namespace = namespace
        self.metrics = metrics
        self.deployments: dict[str, dict[str, Any]] = {}
        self.replicasets: dict[str, dict[str, Any]] = {}
        self.pods: dict[str, dict[str, Any]] = {}
        self.logs: dict[str, list[tuple[float, str]]] = {}  # deployment -> (age_s, line)
        self.forbidden: set[tuple[str, str]] = set()
        self.stuck: set[str] = set()
        self.requests: list[tuple[str, str]] = []  # (method, path?query)
        self._lock = threading.RLock()
        self._rv = 100
        self._seq = 0
        self._stuck_ticks: dict[str, int] = {}
        self._server: ThreadingHTTPServer | None = None

    # -- arrange --------------------------------------------------------------------

    def add_deployment(self, name: str, *, replicas: int = 3, image: str = "registry.test/backend:1",
                       history: list[tuple[int, str]] | None = None, annotations: dict[str, str] | None = None,
                       limits: dict[str, str] | None = None, paused: bool = False,
                       revision: int | None = None) -> None:
        """A settled deployment; `history` = [(revision, image)...] of older ReplicaSets (any numbers)."""
        with self._lock:
            labels = {"app": name}
            template = {"metadata": {"labels": dict(labels)},
                        "spec": {"containers": [{"name": name, "image": image,
                                                 "resources": {"limits": limits or {"cpu": "1", "memory": "1Gi"},
                                                               "requests": {"cpu": "250m", "memory": "512Mi"}}}]}}
            numbers = [n for n, _ in history or []]
            current = revision or max(numbers, default=0) + 1
            self.deployments[name] = {
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "namespace": self.namespace, "uid": f"uid-{name}", "generation": 1,
                             "resourceVersion": self._next_rv(), "creationTimestamp": _now(86400),
                             "labels": dict(labels),
                             "annotations": {**(annotations or {}), REVISION: str(current)}},
                "spec": {"replicas": replicas, "selector": {"matchLabels": dict(labels)}, "template": template,
                         "paused": paused, "progressDeadlineSeconds": 600,
                         "strategy": {"type": "RollingUpdate"}},
                "status": {"observedGeneration": 1},
            }
            for number, old_image in history or []:
                old = copy.deepcopy(template)
                old["spec"]["containers"][0]["image"] = old_image
                self._new_replicaset(name, old, number, replicas=0)
            rs = self._new_replicaset(name, template, current, replicas=replicas)
            for _ in range(replicas):
                self._new_pod(name, rs, ready=True)
            self._update_status(name)

    def forbid(self, verb: str, resource: str) -> None:
        self.forbidden.add((verb, resource))

    def add_logs(self, deployment: str, lines: list[tuple[float, str]]) -> None:
        self.logs.setdefault(deployment, []).extend(lines)

    def writes(self) -> list[tuple[str, str]]:
        return [r for r in self.requests if r[0] != "GET"]

    # -- objects ----------------------------------------------------------------------

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _new_replicaset(self, deployment: str, template: dict[str, Any], revision: int, replicas: int) -> dict[str, Any]:
        dep = self.deployments[deployment]
        h = _template_hash(template)
        tpl = copy.deepcopy(template)
        tpl["metadata"].setdefault("labels", {})[HASH] = h
        rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
              "metadata": {"name": f"{deployment}-{h}", "namespace": self.namespace, "uid": f"uid-rs-{h}",
                           "labels": dict(tpl["metadata"]["labels"]), "creationTimestamp": _now(),
                           "resourceVersion": self._next_rv(), "annotations": {REVISION: str(revision)},
                           "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment,
                                                "uid": dep["metadata"]["uid"], "controller": True}]},
              "spec": {"replicas": replicas, "selector": {"matchLabels": dict(tpl["metadata"]["labels"])},
                       "template": tpl},
              "status": {"replicas": replicas}}
        self.replicasets[rs["metadata"]["name"]] = rs
        return rs

    def _new_pod(self, deployment: str, rs: dict[str, Any], *, ready: bool) -> None:
        self._seq += 1
        tpl = rs["spec"]["template"]
        name = f"{rs['metadata']['name']}-{self._seq:05d}"
        containers = copy.deepcopy(tpl["spec"]["containers"])
        self.pods[name] = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": self.namespace, "labels": dict(tpl["metadata"]["labels"]),
                         "creationTimestamp": _now(60 if ready else 0), "uid": f"uid-pod-{self._seq}",
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                              "name": rs["metadata"]["name"], "uid": rs["metadata"]["uid"],
                                              "controller": True}]},
            "spec": {"nodeName": f"node-{self._seq % 2 + 1}", "containers": containers},
            "status": {},
        }
        self._set_pod_ready(name, ready)

    def _set_pod_ready(self, name: str, ready: bool, waiting: str | None = None, restarts: int = 0,
                       last: str | None = None) -> None:
        pod = self.pods[name]
        statuses = []
        for c in pod["spec"]["containers"]:
            state: dict[str, Any] = ({"running": {"startedAt": _now()}} if ready or not waiting
                                     else {"waiting": {"reason": waiting}})
            status = {"name": c["name"], "image": c["image"], "imageID": "", "ready": ready,
                      "restartCount": restarts, "state": state, "lastState": {}}
            if last:
                status["lastState"] = {"terminated": {"reason": last, "exitCode": 137}}
            statuses.append(status)
        pod["status"] = {"phase": "Running" if ready or waiting else "Pending",
                         "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                         "containerStatuses": statuses}

    def _owned(self, deployment: str) -> list[dict[str, Any]]:
        uid = self.deployments[deployment]["metadata"]["uid"]
        return [rs for rs in self.replicasets.values()
                if any(o["uid"] == uid for o in rs["metadata"]["ownerReferences"])]

    def _pods_of(self, rs: dict[str, Any]) -> list[str]:
        return [n for n, p in self.pods.items() if p["metadata"]["ownerReferences"][0]["name"] == rs["metadata"]["name"]]

    def _current_rs(self, deployment: str) -> dict[str, Any] | None:
        h = _template_hash(self.deployments[deployment]["spec"]["template"])
        return self.replicasets.get(f"{deployment}-{h}")

    # -- controller: one step per request ------------------------------------------------

    def tick(self) -> None:
        with self._lock:
            for name, dep in self.deployments.items():
                if dep["spec"].get("paused"):
                    continue
                meta, spec = dep["metadata"], dep["spec"]
                if meta["generation"] > dep["status"].get("observedGeneration", 0):
                    dep["status"]["observedGeneration"] = meta["generation"]
                    rs = self._current_rs(name)
                    owned = self._owned(name)
                    top = max(int(r["metadata"]["annotations"][REVISION]) for r in owned)
                    if rs is None:
                        rs = self._new_replicaset(name, spec["template"], top + 1, spec["replicas"])
                    elif int(rs["metadata"]["annotations"][REVISION]) != top:  # rollback re-uses the old RS
                        old = rs["metadata"]["annotations"][REVISION]
                        rs["metadata"]["annotations"][REVISION] = str(top + 1)
                        rs["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"] = old
                    meta["annotations"][REVISION] = rs["metadata"]["annotations"][REVISION]
                    rs["spec"]["replicas"] = spec["replicas"]
                    have = self._pods_of(rs)
                    for extra in have[spec["replicas"]:]:
                        del self.pods[extra]
                    for _ in range(spec["replicas"] - len(have)):
                        self._new_pod(name, rs, ready=False)
                    self._stuck_ticks[name] = 0
                else:
                    rs = self._current_rs(name)
                    if rs is None:
                        continue
                    pending = [n for n in self._pods_of(rs)
                               if self.pods[n]["status"]["conditions"][0]["status"] != "True"]
                    if name in self.stuck and pending:
                        self._stuck_ticks[name] = self._stuck_ticks.get(name, 0) + 1
                        for n in pending:
                            self._set_pod_ready(n, False, waiting="CrashLoopBackOff",
                                                restarts=self._stuck_ticks[name], last="OOMKilled")
                    else:
                        for n in pending:
                            self._set_pod_ready(n, True)
                        for old in self._owned(name):
                            if old is not rs:
                                old["spec"]["replicas"] = 0
                                for n in self._pods_of(old):
                                    del self.pods[n]
                self._update_status(name)

    def _update_status(self, name: str) -> None:
        dep = self.deployments[name]
        rs = self._current_rs(name)
        pods = [self.pods[n] for r in self._owned(name) for n in self._pods_of(r)]
        updated = [self.pods[n] for n in self._pods_of(rs)] if rs else []
        ready = sum(p["status"]["conditions"][0]["status"] == "True" for p in pods)
        stuck = self._stuck_ticks.get(name, 0) >= 3
        dep["status"].update({
            "replicas": len(pods), "updatedReplicas": len(updated), "readyReplicas": ready,
            "availableReplicas": ready, "unavailableReplicas": max(len(pods) - ready, 0),
            "conditions": [{"type": "Progressing", "status": "False" if stuck else "True",
                            "reason": "ProgressDeadlineExceeded" if stuck else "NewReplicaSetAvailable",
                            "message": f'ReplicaSet "{rs["metadata"]["name"] if rs else "?"}" '
                                       + ("has timed out progressing." if stuck else "has successfully progressed.")}],
        })

    # -- HTTP -------------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict[str, str], body: bytes,
               content_type: str) -> tuple[int, Any]:
        parts = [p for p in path.split("/") if p]
        ns = self.namespace
        if parts[:4] == ["api", "v1", "namespaces", ns] and parts[4:5] == ["pods"]:
            if len(parts) == 5:
                self._rbac("list", "pods", "")
                pods = [p for p in self.pods.values() if self._selected(p, query.get("labelSelector"))]
                return 200, {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": pods}
            if len(parts) == 7 and parts[6] == "log":
                self._rbac("get", "pods/log", "")
                return self._log(parts[5], query)
        if parts[:5] == ["apis", "apps", "v1", "namespaces", ns]:
            kind = parts[5] if len(parts) > 5 else ""
            if kind == "replicasets" and len(parts) == 6:
                self._rbac("list", "replicasets", "apps")
                items = [r for r in self.replicasets.values() if self._selected(r, query.get("labelSelector"))]
                return 200, {"apiVersion": "apps/v1", "kind": "ReplicaSetList", "metadata": {}, "items": items}
            if kind == "deployments" and len(parts) in (7, 8):
                name, sub = parts[6], (parts[7] if len(parts) == 8 else "")
                resource = "deployments/scale" if sub == "scale" else "deployments"
                verb = {"GET": "get", "PATCH": "patch"}.get(method, method.lower())
                self._rbac(verb, resource, "apps", name)
                if name not in self.deployments:
                    raise ApiError(404, "NotFound", f'deployments.apps "{name}" not found')
                if sub == "scale":
                    return self._scale(name, method, body, content_type, query)
                if method == "PATCH":
                    self._patch(self.deployments[name], body, content_type, query)
                return 200, self.deployments[name]
        if parts[:6] == ["apis", "metrics.k8s.io", "v1beta1", "namespaces", ns, "pods"] and self.metrics:
            items = [{"metadata": {"name": n, "namespace": ns}, "timestamp": _now(), "window": "30s",
                      "containers": [{"name": c["name"], "usage": {"cpu": "412000000n", "memory": "734003Ki"}}
                                     for c in p["spec"]["containers"]]}
                     for n, p in self.pods.items() if self._selected(p, query.get("labelSelector"))]
            return 200, {"kind": "PodMetricsList", "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {},
                         "items": items}
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    def _rbac(self, verb: str, resource: str, group: str, name: str = "") -> None:
        if (verb, resource) in self.forbidden:
            what = f'{resource.split("/")[0]}{"." + group if group else ""} "{name}" is forbidden' if name \
                else f'{resource.split("/")[0]}{"." + group if group else ""} is forbidden'
            sub = f' subresource "{resource.split("/")[1]}"' if "/" in resource else ""
            raise ApiError(403, "Forbidden",
                           f'{what}: User "system:serviceaccount:ci:deployer" cannot {verb} resource '
                           f'"{resource.split("/")[0]}"{sub} in API group "{group}" in the namespace '
                           f'"{self.namespace}"')

    @staticmethod
    def _selected(obj: dict[str, Any], selector: str | None) -> bool:
        if not selector:
            return True
        labels = obj["metadata"].get("labels", {})
        return all(labels.get(k) == v for k, _, v in (term.partition("=") for term in selector.split(",")))

    def _log(self, pod: str, query: dict[str, str]) -> tuple[int, Any]:
        if pod not in self.pods:
            raise ApiError(404, "NotFound", f'pods "{pod}" not found')
        status = self.pods[pod]["status"]["containerStatuses"][0]
        if "waiting" in status["state"] and query.get("previous") != "true":
            raise ApiError(400, "BadRequest", f'container "{status["name"]}" in pod "{pod}" is waiting to start: '
                                              f'{status["state"]["waiting"]["reason"]}')
        if query.get("previous") == "true" and not status["restartCount"]:
            raise ApiError(400, "BadRequest", f'previous terminated container "{status["name"]}" in pod "{pod}" '
                                              "not found")
        deployment = self.pods[pod]["metadata"]["labels"]["app"]
        lines = [(age, text) for age, text in self.logs.get(deployment, [])
                 if "sinceSeconds" not in query or age <= float(query["sinceSeconds"])]
        if "tailLines" in query:
            lines = lines[-int(query["tailLines"]):] if int(query["tailLines"]) else []
        return 200, "".join(f"{text}\n" for _, text in lines)

    def _scale(self, name: str, method: str, body: bytes, content_type: str,
               query: dict[str, str]) -> tuple[int, Any]:
        dep = self.deployments[name]
        scale = {"apiVersion": "autoscaling/v1", "kind": "Scale",
                 "metadata": {"name": name, "namespace": self.namespace,
                              "resourceVersion": dep["metadata"]["resourceVersion"]},
                 "spec": {"replicas": dep["spec"]["replicas"]},
                 "status": {"replicas": dep["status"].get("replicas", 0),
                            "selector": ",".join(f"{k}={v}" for k, v in dep["spec"]["selector"]["matchLabels"].items())}}
        if method == "PATCH":
            patched = copy.deepcopy(scale)
            _apply_patch(patched, json.loads(body), content_type)
            if query.get("dryRun") != "All" and patched["spec"]["replicas"] != dep["spec"]["replicas"]:
                dep["spec"]["replicas"] = int(patched["spec"]["replicas"])
                dep["metadata"]["generation"] += 1
                dep["metadata"]["resourceVersion"] = self._next_rv()
            scale["spec"]["replicas"] = patched["spec"]["replicas"]
        return 200, scale

    def _patch(self, dep: dict[str, Any], body: bytes, content_type: str, query: dict[str, str]) -> None:
        patched = copy.deepcopy(dep)
        _apply_patch(patched, json.loads(body), content_type)
        if query.get("dryRun") == "All":
            return
        if patched["spec"] != dep["spec"]:
            patched["metadata"]["generation"] = dep["metadata"]["generation"] + 1
        if patched != dep:
            patched["metadata"]["resourceVersion"] = self._next_rv()
        dep.clear()
        dep.update(patched)

    # -- server ---------------------------------------------------------------------------

    def start(self) -> FakeKubernetes:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                url = urlparse(self.path)
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with fake._lock:
                    fake.requests.append((self.command, self.path))
                    fake.tick()
                    try:
                        code, payload = fake.handle(self.command, url.path, query, body,
                                                    self.headers.get("Content-Type", ""))
                        payload = copy.deepcopy(payload)
                    except ApiError as exc:
                        code, payload = exc.code, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                                   "status": "Failure", "message": exc.message,
                                                   "reason": exc.reason, "code": exc.code}
                data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/plain" if isinstance(payload, str) else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PATCH = do_POST = do_PUT = do_DELETE = _serve

            def log_message(self, *_args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def write_kubeconfig(self, path: Path, context: str = "indostar-test") -> Path:
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": context,
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "fake-token"}}],
            "contexts": [{"name": context, "context": {"cluster": "fake", "user": "tester",
                                                       "namespace": self.namespace}}],
        }))
        return path


# -- patches -----------------------------------------------------------------------------------


def _apply_patch(obj: dict[str, Any], patch: Any, content_type: str) -> None:
    if "json-patch" in content_type:
        for op in patch:
            _json_op(obj, op)
    elif "strategic-merge-patch" in content_type:  # lists of named objects (containers) merge by name
        _merge(obj, patch, strategic=True)
    elif "merge-patch" in content_type:
        _merge(obj, patch, strategic=False)
    else:
        raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
                                                    f"accepted media types include: application/json-patch+json, "
                                                    f"application/merge-patch+json, "
                                                    f"application/strategic-merge-patch+json ({content_type})")


def _merge(target: dict[str, Any], patch: dict[str, Any], *, strategic: bool) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value, strategic=strategic)
        elif (strategic and isinstance(value, list) and isinstance(target.get(key), list)
              and all(isinstance(v, dict) and "name" in v for v in value)):
            by_name = {item.get("name"): item for item in target[key]}
            for item in value:
                if item["name"] in by_name:
                    _merge(by_name[item["name"]], item, strategic=True)
                else:
                    target[key].append(copy.deepcopy(item))
        else:
            target[key] = copy.deepcopy(value)


def _json_op(obj: dict[str, Any], op: dict[str, Any]) -> None:
    tokens = [t.replace("~1", "/").replace("~0", "~") for t in op["path"].split("/")[1:]]
    parent: Any = obj
    for token in tokens[:-1]:
        parent = parent[int(token)] if isinstance(parent, list) else parent.setdefault(token, {})
    last = tokens[-1]
    if op["op"] == "test":
        current = parent[int(last)] if isinstance(parent, list) else parent.get(last)
        if current != op["value"]:
            raise ApiError(422, "Invalid", f"the server rejected our request due to an error in our request: "
                                           f"testing value {op['path']} failed: test failed")
    elif op["op"] in ("replace", "add"):
        if isinstance(parent, list):
            parent[int(last)] = copy.deepcopy(op["value"])
        else:
            parent[last] = copy.deepcopy(op["value"])
    elif op["op"] == "remove":
        del parent[int(last) if isinstance(parent, list) else last]

