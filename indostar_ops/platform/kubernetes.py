"""Kubernetes backend: Deployments in the inventory's namespace, through the official client.

The client is imported inside functions only (`invoke --list` never loads it).
Reads go through `ctx.kubernetes()`'s API objects, which refuse any method that
is not a read; every write is `ctx.kubernetes().change(...)` (journaled, refused
in check mode, except server-side `dry_run="All"`, which check mode uses to let
the API server validate RBAC and admission without storing anything).

What kubectl does client-side is done here the same way: a rollout restart is
the `kubectl.kubernetes.io/restartedAt` template annotation, rollout status is
kubectl's generation/updated/available logic, and rollback copies the chosen
ReplicaSet's pod template back into the Deployment (apps/v1 has no rollback
endpoint). Unlike `kubectl rollout undo`, rollback patches only the template and
keeps the Deployment's own annotations.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import parse_qs, urlsplit

from ..errors import CheckModeViolation, StepError, Unreachable
from .base import Instance, LogLine, PlatformBackend, Revision, Rollout, parse_cpu, parse_memory

if TYPE_CHECKING:
    from ..inventory.model import KubernetesPlatform

__all__ = ["Conflict", "Forbidden", "KubernetesBackend", "KubernetesConnector", "NotFound"]

REVISION = "deployment.kubernetes.io/revision"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
HASH_LABEL = "pod-template-hash"
_READ_PREFIXES = ("read_", "list_", "get_", "connect_get_")


class NotFound(StepError):
    """The resource does not exist (HTTP 404)."""


class Forbidden(StepError):
    """RBAC refused the request (HTTP 403): the message says which verb on which resource."""


class Conflict(StepError):
    """A compare-and-set lost: the object changed since it was read (409, or a failed JSON-patch test)."""


# -- connection ---------------------------------------------------------------------------------


class KubernetesConnector:
    """An ApiClient for the inventory's kubeconfig context; API objects that translate errors."""

    def __init__(self, settings: KubernetesPlatform, *, read_only: bool = False) -> None:
        self.settings = settings
        self.namespace = settings.namespace
        self.read_only = read_only
        self._writing = threading.local()
        self._client = _api_client(settings)
        self.context_name = settings.context or _current_context(settings) or "(current context)"
        self.where = f"context {self.context_name}, namespace {self.namespace}"
        self.server = self._client.configuration.host
        from kubernetes import client

        self.core = _Api(self, client.CoreV1Api(self._client), "core")
        self.apps = _Api(self, client.AppsV1Api(self._client), "apps")
        self.custom = _Api(self, client.CustomObjectsApi(self._client), "custom")
        rest = self._client.rest_client
        original = rest.request

        def guarded(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            if method.upper() not in ("GET", "HEAD"):
                dry = parse_qs(urlsplit(url).query).get("dryRun") == ["All"]  # parsed, not a substring
                if not dry and self.read_only:
                    raise CheckModeViolation(f"Kubernetes {method} {url.split('?')[0]} refused in check mode; "
                                             "nothing was sent")
                if not dry and not getattr(self._writing, "active", False):
                    raise StepError(f"Kubernetes {method} is a write: it must go through "
                                    "ctx.kubernetes().change (journaled, refused in check mode)")
            if kwargs.get("_request_timeout") is None:
                kwargs["_request_timeout"] = (settings.connect_timeout, settings.request_timeout)
            return original(method, url, *args, **kwargs)

        rest.request = guarded

    @contextmanager
    def writing(self) -> Iterator[None]:
        self._writing.active = True
        try:
            yield
        finally:
            self._writing.active = False

    def close(self) -> None:
        self._client.close()


class _Api:
    """An API object whose reads run directly and whose writes only run inside `change`."""

    def __init__(self, connector: KubernetesConnector, api: Any, label: str) -> None:
        self._connector = connector
        self._api = api
        self._label = label

    def __getattr__(self, method: str) -> Callable[..., Any]:
        call = getattr(self._api, method)
        reading = method.startswith(_READ_PREFIXES)

        def run(*args: Any, **kwargs: Any) -> Any:
            if not reading and not getattr(self._connector._writing, "active", False) \
                    and kwargs.get("dry_run") != "All":
                raise StepError(f"Kubernetes {method} is a write: use ctx.kubernetes().change")
            try:
                return call(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - translated into this library's errors below
                raise _translate(exc, method, args, kwargs, self._connector) from None

        return run


def _api_client(settings: KubernetesPlatform) -> Any:
    import os

    from kubernetes import config
    from kubernetes.config.config_exception import ConfigException

    path = _kubeconfig_path(settings)
    if not os.path.isfile(path):
        raise Unreachable(f"kubernetes ({settings.context or 'current context'})", f"no kubeconfig at {path}",
                          hint="set platform.kubeconfig in the inventory or $KUBECONFIG, or create it "
                               "(e.g. `aws eks update-kubeconfig`)")
    from kubernetes.client import Configuration

    configuration = Configuration()
    configuration.retries = 0  # a dead API server costs one connect timeout, never three (rule 4)
    try:
        return config.new_client_from_config(config_file=path, context=settings.context, persist_config=False,
                                             client_configuration=configuration)
    except (ConfigException, OSError, TypeError) as exc:
        reason = str(exc).strip() or type(exc).__name__
        if isinstance(exc, OSError) or "No such file" in reason:
            reason = f"no kubeconfig at {path}"
        elif settings.context and settings.context in reason:
            reason = f"kubeconfig {path} has no context {settings.context!r}"
        raise Unreachable(f"kubernetes ({settings.context or 'current context'})", reason,
                          hint="check platform.kubeconfig/platform.context in the inventory, $KUBECONFIG, "
                               "and `kubectl config get-contexts`") from None


def _kubeconfig_path(settings: KubernetesPlatform) -> str:
    import os

    raw = settings.kubeconfig or os.environ.get("KUBECONFIG", "~/.kube/config").split(os.pathsep)[0]
    return os.path.expanduser(raw)


def _current_context(settings: KubernetesPlatform) -> str | None:
    try:
        import yaml

        with open(_kubeconfig_path(settings)) as handle:
            return (yaml.safe_load(handle) or {}).get("current-context")
    except (OSError, ValueError, AttributeError):
        return None


_RESOURCES = {"deployment": "deployments.apps", "deployment_scale": "deployments.apps/scale", "pod": "pods",
              "pod_log": "pods/log", "replica_set": "replicasets.apps"}
_VERBS = {"read": "get", "list": "list", "patch": "patch", "create": "create", "replace": "update",
          "delete": "delete"}


def _translate(exc: Exception, method: str, args: tuple[Any, ...], kwargs: dict[str, Any],
               connector: KubernetesConnector) -> Exception:
    """ApiException / urllib3 errors -> NotFound, Forbidden, Conflict, Unreachable, StepError (one line each)."""
    import json

    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    where = connector.where
    if isinstance(exc, HTTPError | OSError):
        cause = getattr(exc, "reason", None) or exc  # MaxRetryError wraps the connection error
        text = str(cause).split(">: ", 1)[-1]  # drop urllib3's "<...HTTPConnection object at 0x...>: "
        return Unreachable(f"kubernetes API ({where})", f"{connector.server}: {text}"[:300],
                           hint="is the cluster reachable (VPN, kubeconfig server URL)? try `kubectl get ns`")
    if not isinstance(exc, ApiException):
        return exc
    status = int(exc.status or 0)
    message = ""
    try:
        message = str(json.loads(exc.body or "{}").get("message") or "")
    except (ValueError, AttributeError):
        message = str(exc.body or "")[:300]
    verb = _VERBS.get(method.split("_")[0], method.split("_")[0])
    kind = method.split("_namespaced_")[-1] if "_namespaced_" in method else method
    resource = _RESOURCES.get(kind, kind)
    if kind == "custom_object" and len(args) >= 4:
        resource = f"{args[3]}.{args[0]}"
    name = kwargs.get("name") or (args[0] if args and kind != "custom_object" else "")
    what = f"{resource} {name!r}" if name else resource
    plural, _, sub = resource.partition("/")
    if status == 401:
        return Unreachable(f"kubernetes API ({where})", "401 Unauthorized: the credentials were refused",
                           hint="refresh the kubeconfig credentials (e.g. `aws eks update-kubeconfig`)")
    if status == 403:
        return Forbidden(f"forbidden: cannot {verb} {what} ({where}): {message}",
                         hint=f"the kubeconfig user needs RBAC '{verb}' on '{resource}' in namespace "
                              f"{connector.namespace}; check with `kubectl auth can-i {verb} {plural}"
                              + (f" --subresource={sub}" if sub else "") + f" -n {connector.namespace}`")
    if status == 404:
        return NotFound(f"{what} not found ({where})",
                        hint=f"`kubectl get {plural} -n {connector.namespace}`; "
                             "check platform.components in the inventory")
    if status in (409, 422) and ("test failed" in message or status == 409):
        return Conflict(f"{what} changed since it was read ({where}): {message}",
                        hint="look at the current state and re-run; nothing was changed")
    return StepError(f"kubernetes {verb} {what} failed with HTTP {status} ({where}): {message or exc.reason}")


# -- backend ------------------------------------------------------------------------------------


class KubernetesBackend(PlatformBackend):
    kind: ClassVar[str] = "kubernetes"
    resource_kind: ClassVar[str] = "deployment"
    capabilities: ClassVar[frozenset[str]] = frozenset(
        {"logs", "restart", "scale", "rollback", "resources", "metrics", "pause"})

    @property
    def k8s(self) -> Any:
        return self.ctx.kubernetes()

    def where(self, component: str) -> str:
        settings = self.settings
        return f"{settings.context or 'current context'}/{settings.namespace}/{self.resource(component)}"

    def _deployment(self, component: str) -> Any:
        name = self.resource(component)
        try:
            return self.k8s.apps.read_namespaced_deployment(name, self.settings.namespace)
        except NotFound:
            raise NotFound(
                f"deployment {name!r} (component {component}) not found in namespace {self.settings.namespace} "
                f"({self.k8s.where})",
                hint=f"`kubectl get deployments -n {self.settings.namespace}`; "
                     f"check platform.components in inventory/{self.ctx.env.name}.yaml",
            ) from None

    @staticmethod
    def _selector(deployment: Any) -> str:
        labels = deployment.spec.selector.match_labels or {}
        return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))

    # -- reads ------------------------------------------------------------------------

    def instances(self, component: str) -> list[Instance]:
        dep = self._deployment(component)
        ns = self.settings.namespace
        pods = self.k8s.core.list_namespaced_pod(ns, label_selector=self._selector(dep)).items
        usage = self._metrics(self._selector(dep))
        now = datetime.now(UTC)
        out = []
        for pod in sorted(pods, key=lambda p: p.metadata.name):
            statuses = pod.status.container_statuses or []
            waiting = next((s.state.waiting.reason for s in statuses if s.state and s.state.waiting), None)
            last = next((s.last_state.terminated.reason for s in statuses
                         if s.last_state and s.last_state.terminated), None)
            ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
            limits = [(c.resources.limits or {}) if c.resources else {} for c in pod.spec.containers]
            cpu_limits = [parse_cpu(lim.get("cpu")) for lim in limits]
            mem_limits = [parse_memory(lim.get("memory")) for lim in limits]
            used = usage.get(pod.metadata.name) if usage is not None else None
            created = pod.metadata.creation_timestamp
            out.append(Instance(
                name=pod.metadata.name, component=component, ready=ready, status=pod.status.phase or "Unknown",
                restarts=sum(s.restart_count or 0 for s in statuses), last_termination_reason=last,
                waiting_reason=waiting, node=pod.spec.node_name,
                age_s=(now - created).total_seconds() if created else None,
                image=pod.spec.containers[0].image if pod.spec.containers else None,
                revision=(pod.metadata.labels or {}).get(HASH_LABEL),
                cpu_millicores=used[0] if used else None,
                cpu_limit_millicores=sum(x for x in cpu_limits if x) if all(cpu_limits) and cpu_limits else None,
                memory_bytes=used[1] if used else None,
                memory_limit_bytes=sum(x for x in mem_limits if x) if all(mem_limits) and mem_limits else None,
            ))
        return out

    def _metrics(self, selector: str) -> dict[str, tuple[float, int]] | None:
        """pod -> (cpu millicores, memory bytes) from metrics.k8s.io (`kubectl top`); None without metrics-server."""
        try:
            result = self.k8s.custom.list_namespaced_custom_object(
                "metrics.k8s.io", "v1beta1", self.settings.namespace, "pods", label_selector=selector)
        except Unreachable:
            raise
        except StepError:  # no metrics-server (404), not allowed (403), or the metrics API is down (503)
            return None
        out: dict[str, tuple[float, int]] = {}
        for item in result.get("items", []):
            cpu = sum(parse_cpu(c["usage"].get("cpu")) or 0 for c in item.get("containers", []))
            mem = sum(parse_memory(c["usage"].get("memory")) or 0 for c in item.get("containers", []))
            out[item["metadata"]["name"]] = (cpu, mem)
        return out

    def logs(self, component: str, *, tail: int = 100, since_s: float | None = None,
             grep: str | None = None) -> list[LogLine]:
        dep = self._deployment(component)
        ns = self.settings.namespace
        pods = self.k8s.core.list_namespaced_pod(ns, label_selector=self._selector(dep)).items
        container = self._container(dep)
        lines: list[LogLine] = []
        for pod in sorted(pods, key=lambda p: p.metadata.name):
            kwargs: dict[str, Any] = {"tail_lines": tail, "container": container}
            if since_s:
                kwargs["since_seconds"] = max(int(since_s), 1)
            restarted = any((st.restart_count or 0) for st in pod.status.container_statuses or [])
            try:
                text = self._log(pod.metadata.name, kwargs, previous=False)
            except StepError as exc:  # 400 "container ... is waiting to start": say so, keep the other pods
                text = f"<no log: {exc.message.split(' (context ')[0]}>"
                if restarted:  # CrashLoopBackOff: what the crashed container said is what matters
                    with contextlib.suppress(StepError):
                        text = "<previous container>\n" + self._log(pod.metadata.name, kwargs, previous=True)
            lines += [LogLine(pod.metadata.name, line) for line in str(text or "").splitlines()]
        return self.filter_lines(lines, grep)

    def _log(self, pod: str, kwargs: dict[str, Any], *, previous: bool) -> str:
        try:
            return str(self.k8s.core.read_namespaced_pod_log(pod, self.settings.namespace, previous=previous,
                                                             **kwargs) or "")
        except (Forbidden, Unreachable):
            raise

    @staticmethod
    def _container(dep: Any) -> str:
        containers = dep.spec.template.spec.containers
        names = [c.name for c in containers]
        return dep.metadata.name if dep.metadata.name in names else names[0]

    def replicas(self, component: str) -> tuple[int, int]:
        dep = self._deployment(component)
        return int(dep.spec.replicas or 0), int(dep.status.ready_replicas or 0)

    def rollout_status(self, component: str) -> Rollout:
        """kubectl's rollout status logic (observed generation, updated, old replicas, available)."""
        dep = self._deployment(component)
        st, desired = dep.status, int(dep.spec.replicas or 0)
        updated, total = int(st.updated_replicas or 0), int(st.replicas or 0)
        available, ready = int(st.available_replicas or 0), int(st.ready_replicas or 0)
        figures = {"desired": desired, "updated": updated, "ready": ready, "available": available}
        if (dep.metadata.generation or 0) > (st.observed_generation or 0):
            return Rollout(False, "waiting for the deployment spec update to be observed", **figures)
        for cond in st.conditions or []:
            if cond.type == "Progressing" and cond.reason == "ProgressDeadlineExceeded":
                return Rollout(False, f"ProgressDeadlineExceeded: {cond.message}", failed=True, **figures)
        if updated < desired:
            return Rollout(False, f"{updated} of {desired} new replicas updated", **figures)
        if total > updated:
            return Rollout(False, f"{total - updated} old replicas pending termination", **figures)
        if available < updated:
            return Rollout(False, f"{available} of {updated} updated replicas available", **figures)
        return Rollout(True, f"{available}/{desired} replicas updated and available", **figures)

    def paused(self, component: str) -> bool:
        return bool(self._deployment(component).spec.paused)

    def revisions(self, component: str) -> list[Revision]:
        dep = self._deployment(component)
        current = (dep.metadata.annotations or {}).get(REVISION)
        sets = self.k8s.apps.list_namespaced_replica_set(self.settings.namespace,
                                                         label_selector=self._selector(dep)).items
        out = []
        for rs in sets:
            if not any(o.uid == dep.metadata.uid for o in rs.metadata.owner_references or []):
                continue
            annotations = rs.metadata.annotations or {}
            if not str(annotations.get(REVISION, "")).isdigit():
                continue
            out.append(Revision(
                number=int(annotations[REVISION]),
                images={c.name: c.image for c in rs.spec.template.spec.containers},
                name=rs.metadata.name, current=annotations[REVISION] == current,
                created=rs.metadata.creation_timestamp.isoformat() if rs.metadata.creation_timestamp else None,
                change_cause=annotations.get("kubernetes.io/change-cause"),
            ))
        return sorted(out, key=lambda r: r.number)

    def resources(self, component: str) -> dict[str, dict[str, dict[str, str]]]:
        dep = self._deployment(component)
        out = {}
        for c in dep.spec.template.spec.containers:
            res = c.resources
            out[c.name] = {"requests": dict(res.requests or {}) if res else {},
                           "limits": dict(res.limits or {}) if res else {}}
        return out

    def container(self, component: str) -> str:
        return self._container(self._deployment(component))

    # -- writes -------------------------------------------------------------------------

    def validate(self, action: str, component: str, **params: Any) -> str | None:
        """Check mode: send the write with dryRun=All; the API server checks RBAC/admission and stores nothing."""
        summary = f"dry run: {action} {self.resource(component)}"
        if action == "scale":
            self.scale(component, params["replicas"], summary=summary, expect=params.get("expect"), dry_run=True)
        elif action == "restart":
            self.restart(component, summary=summary, dry_run=True)
        elif action == "rollback":
            self.rollback(component, params["revision"], summary=summary, dry_run=True)
        elif action == "resources":
            self.set_resources(component, params["container"], requests=params.get("requests", {}),
                               limits=params.get("limits", {}), summary=summary, dry_run=True)
        else:
            return None
        return "accepted by the API server as a dry run (dryRun=All): RBAC and admission allow it"

    def _patch(self, method: str, component: str, body: Any, *, summary: str, dry_run: bool = False,
               journal_body: bool = True) -> Any:
        kwargs: dict[str, Any] = {"name": self.resource(component), "body": body}
        if dry_run:
            kwargs["dry_run"] = "All"
        return self.k8s.change("apps", method, summary=summary, resource=f"deployment/{self.resource(component)}",
                               journal_body=journal_body, **kwargs)

    def scale(self, component: str, replicas: int, *, summary: str, expect: int | None = None,
              dry_run: bool = False) -> None:
        body: Any = {"spec": {"replicas": replicas}}
        if expect is not None:  # compare-and-set: the API server refuses if someone else scaled meanwhile
            body = [{"op": "test", "path": "/spec/replicas", "value": expect},
                    {"op": "replace", "path": "/spec/replicas", "value": replicas}]
        self._patch("patch_namespaced_deployment_scale", component, body, summary=summary, dry_run=dry_run)

    def restart(self, component: str, *, summary: str, dry_run: bool = False) -> dict[str, Any]:
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}
        self._patch("patch_namespaced_deployment", component, body, summary=summary, dry_run=dry_run)
        return {"restartedAt": stamp}

    def rollback(self, component: str, revision: Revision, *, summary: str, dry_run: bool = False) -> None:
        dep = self._deployment(component)
        sets = self.k8s.apps.list_namespaced_replica_set(self.settings.namespace,
                                                         label_selector=self._selector(dep)).items
        chosen = next((rs for rs in sets if rs.metadata.name == revision.name), None)
        if chosen is None:
            raise NotFound(f"ReplicaSet {revision.name} (revision {revision.number}) is gone ({self.k8s.where})",
                           hint="list revisions with app.rollback --check")
        from kubernetes.client import ApiClient

        template = ApiClient().sanitize_for_serialization(chosen.spec.template)
        template.get("metadata", {}).get("labels", {}).pop(HASH_LABEL, None)
        current = (dep.metadata.annotations or {}).get(REVISION)
        body = [{"op": "test", "path": "/metadata/annotations/" + REVISION.replace("/", "~1"), "value": current},
                {"op": "replace", "path": "/spec/template", "value": template}]
        self._patch("patch_namespaced_deployment", component, body, summary=summary, dry_run=dry_run,
                    journal_body=False)

    def set_resources(self, component: str, container: str, *, requests: Mapping[str, str],
                      limits: Mapping[str, str], summary: str, dry_run: bool = False) -> None:
        resources: dict[str, Any] = {}
        if requests:
            resources["requests"] = dict(requests)
        if limits:
            resources["limits"] = dict(limits)
        body = {"spec": {"template": {"spec": {"containers": [{"name": container, "resources": resources}]}}}}
        self._patch("patch_namespaced_deployment", component, body, summary=summary, dry_run=dry_run)
