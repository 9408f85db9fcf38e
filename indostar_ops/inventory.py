"""Inventory: one validated YAML file per environment, optionally extending a shared base.

Everything is checked before anything connects. Errors name the file, the line,
the dotted key and what was expected; an unknown key suggests the nearest known one.

The models are msgspec Structs: validating with them costs a few milliseconds at start-up where
pydantic's model building cost about 100 ms, which every CLI run and every fan-out paid.
"""

from __future__ import annotations

import difflib
import os
import re
import string
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, time
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from msgspec import Meta, Struct, field

from .errors import InventoryError, UnknownEnvironment
from .secrets import Redactor, Secret
from .severity import Severity
from .yamlfile import LineMap, nearest_line, read_yaml_mapping

__all__ = [
    "Environment",
    "HostSettings",
    "HostTarget",
    "Threshold",
    "inventory_dir",
    "list_environments",
    "load_environment",
]

REPO_ROOT = Path(__file__).resolve().parent.parent


class Model(Struct, kw_only=True, forbid_unknown_fields=True):
    """Inventory sections: unknown keys are errors, every field has a type checked at load time."""


# ---------------------------------------------------------------- thresholds


class Threshold(Model, kw_only=True):
    """Warning/critical pair. If critical < warning, lower values are worse (e.g. days left)."""

    warning: float
    critical: float

    def evaluate(self, value: float) -> Severity:
        if self.critical >= self.warning:
            if value > self.critical:
                return Severity.CRITICAL
            return Severity.WARNING if value > self.warning else Severity.OK
        if value < self.critical:
            return Severity.CRITICAL
        return Severity.WARNING if value < self.warning else Severity.OK


def _t(warning: float, critical: float) -> Any:
    return field(default_factory=lambda: Threshold(warning=warning, critical=critical))


class Thresholds(Model, kw_only=True):
    """The runbook's alert-threshold table, plus the ones its procedures imply."""

    response_time_s: Threshold = _t(1, 2)
    error_rate_pct: Threshold = _t(1, 5)
    cpu_pct: Threshold = _t(70, 90)
    memory_pct: Threshold = _t(80, 95)
    disk_pct: Threshold = _t(80, 90)
    payment_failures_per_hour: Threshold = _t(5, 10)
    cert_days_left: Threshold = _t(30, 7)
    db_connections_pct: Threshold = _t(80, 95)


# ---------------------------------------------------------------- hosts


class LogrotatePolicy(Model, kw_only=True):
    """The runbook's rotation policy: daily, rotate 7, compress, delaycompress, missingok, notifempty."""

    frequency: Literal["daily", "weekly", "monthly"] = "daily"
    rotate: Annotated[int, Meta(ge=1, le=365)] = 7
    compress: bool = True
    delaycompress: bool = True
    missingok: bool = True
    notifempty: bool = True
    copytruncate: bool = False
    su: str | None = None  # 'user group' for logrotate's su directive


class NginxSettings(Model, kw_only=True):
    """How to test/reload this host's nginx, and where its maintenance mode lives (nginx strategy)."""

    # argv prefix for `-t` / `-s reload`, e.g. [nginx, -c, CONF]
    command: list[str] = field(default_factory=lambda: ["nginx"])
    # reload argv instead of `<command> -s reload`, e.g. [systemctl, reload, nginx]
    reload_command: list[str] | None = None
    # file every server block includes; written by maintenance.on
    maintenance_snippet: str = "/etc/nginx/snippets/indostar-maintenance.conf"
    maintenance_flag: str = "/var/lib/indostar-ops/maintenance.on"  # maintenance is on while this file exists
    maintenance_page_dir: str = "/var/www/indostar-maintenance"
    # exact URIs still proxied in maintenance (e.g. /health)
    maintenance_exempt: list[str] = field(default_factory=list)
    probe_url: str | None = None  # URL reaching this host's nginx, to verify maintenance mode
    probe_host: str | None = None  # Host header sent with probe_url
    probe_wait_s: Annotated[float, Meta(gt=0)] = 10  # how long on/off wait for the site to follow the flag


class CertbotSettings(Model, kw_only=True):
    """certbot on this host: command prefix (may start with `env VAR=...`) and extra options."""

    command: list[str] = field(default_factory=lambda: ["certbot"])
    options: list[str] = field(default_factory=list)  # e.g. --config-dir, --server for a private ACME CA
    renew_before_days: Annotated[float, Meta(ge=0)] = 30  # certbot's renewal window (renew_before_expiry)
    timeout: Annotated[float, Meta(gt=0)] = 600


class CertificateSettings(Model, kw_only=True):
    """One certificate served by this host's nginx and managed by certbot."""

    name: Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]  # certbot cert-name (lineage)
    # certificate file on the host; default <certbot --config-dir or /etc/letsencrypt>/live/<name>/fullchain.pem
    path: str | None = None
    endpoint: str | None = None  # host:port serving it; default <host address>:443
    sni: str | None = None  # TLS server name; default the cert name
    ca_file: str | None = None  # local CA bundle to verify the served chain; default system


class DockerSettings(Model, kw_only=True):
    enabled: bool = True
    command: list[str] = field(default_factory=lambda: ["docker"])
    data_root: str = "/var/lib/docker"  # filesystem whose use gates `docker.prune --if-over`


class HostSettings(Model, kw_only=True):
    """Per-host variables; group `vars` apply to every host, host `vars` override per key."""

    log_dirs: list[str] = field(default_factory=lambda: ["/var/log/indostar"])
    log_patterns: list[str] = field(default_factory=lambda: ["*.log"])
    logrotate_config: str = "/etc/logrotate.d/indostar"
    logrotate: LogrotatePolicy = field(default_factory=LogrotatePolicy)
    disk_paths: list[str] = field(default_factory=lambda: ["/"])  # filesystems df checks
    disk_report_roots: list[str] = field(default_factory=lambda: ["/var/log", "/var/lib/docker", "/tmp"])
    tmp_dirs: list[str] = field(default_factory=lambda: ["/tmp/indostar"])
    backup_dir: str = "/var/backups/indostar-ops"  # where replaced files are kept
    path_prefix: list[str] = field(default_factory=list)  # prepended to PATH for commands
    nginx: NginxSettings = field(default_factory=NginxSettings)
    certbot: CertbotSettings = field(default_factory=CertbotSettings)
    certificates: list[CertificateSettings] = field(default_factory=list)
    docker: DockerSettings = field(default_factory=DockerSettings)


class SSHSettings(Model, kw_only=True):
    user: str = "root"
    port: Annotated[int, Meta(ge=1, le=65535)] = 22
    key_file: str | None = None
    key_passphrase: Secret | None = None
    known_hosts: str | None = None
    strict_host_keys: bool = True
    connect_timeout: Annotated[float, Meta(gt=0)] = 10
    command_timeout: Annotated[float, Meta(gt=0)] = 300
    become: bool = False  # run commands and installs through `sudo -n` (login user is not root)


class Host(Model, kw_only=True):
    address: str | None = None
    port: Annotated[int, Meta(ge=1, le=65535)] | None = None
    user: str | None = None
    connection: Literal["ssh", "local"] | None = None
    become: bool | None = None
    vars: HostSettings = field(default_factory=HostSettings)


class Group(Model, kw_only=True):
    vars: HostSettings = field(default_factory=HostSettings)
    hosts: dict[str, Host] = field(default_factory=dict)


@dataclass(frozen=True)
class HostTarget:
    """A host as a step sees it: connection details and merged variables."""

    name: str
    groups: tuple[str, ...]
    address: str
    port: int
    user: str
    connection: Literal["ssh", "local"]
    settings: HostSettings
    become: bool = False

    def __str__(self) -> str:
        return self.name


# ---------------------------------------------------------------- services


_HHMM = Annotated[str, Meta(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]


class MaintenanceWindow(Model, kw_only=True):
    """Local time of day in the environment's timezone, "HH:MM" (quote it in YAML: 02:00 unquoted is 120)."""

    start: _HHMM = "02:00"
    end: _HHMM = "04:00"

    @property
    def start_time(self) -> time:
        return time.fromisoformat(self.start)

    @property
    def end_time(self) -> time:
        return time.fromisoformat(self.end)

    def contains(self, moment: datetime) -> bool:
        now = moment.timetz().replace(tzinfo=None)
        start, end = self.start_time, self.end_time
        if start <= end:
            return start <= now < end
        return now >= start or now < end


class MaintenanceSettings(Model, kw_only=True):
    window: MaintenanceWindow = field(default_factory=MaintenanceWindow)
    strategy: Literal["nginx", "alb", "none"] = "nginx"
    notice_hours: Annotated[float, Meta(ge=0)] = 24


class KubernetesPlatform(Model, kw_only=True, tag_field="kind", tag="kubernetes"):
    kind: ClassVar[str] = "kubernetes"
    context: str | None = None
    kubeconfig: str | None = None
    namespace: str = "indostar-naturals"
    # component -> deployment name
    components: dict[str, str] = field(default_factory=lambda: {"backend": "backend", "celery-worker": "celery-worker"})
    replicas: dict[str, int] = field(default_factory=dict)  # expected replicas per component


class ComposePlatform(Model, kw_only=True, tag_field="kind", tag="compose"):
    kind: ClassVar[str] = "compose"
    host: str
    project_dir: str
    components: dict[str, str] = field(default_factory=lambda: {"backend": "backend", "celery-worker": "celery-worker"})
    replicas: dict[str, int] = field(default_factory=dict)


class EcsPlatform(Model, kw_only=True, tag_field="kind", tag="ecs"):
    kind: ClassVar[str] = "ecs"
    cluster: str
    components: dict[str, str] = field(default_factory=dict)  # component -> ECS service
    replicas: dict[str, int] = field(default_factory=dict)


Platform = KubernetesPlatform | ComposePlatform | EcsPlatform


class DatabaseSettings(Model, kw_only=True):
    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=1, le=65535)] = 5432
    name: str
    user: str
    password: Secret | None = None
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] | None = None
    rds_instance: str | None = None
    admin_user: str | None = None  # role for maintenance (VACUUM, terminate); default: user
    admin_password: Secret | None = None
    connect_timeout: Annotated[int, Meta(ge=1)] = 10
    statement_timeout: str = "5min"
    lock_timeout: str = "5s"
    maintenance_timeout: str = "3h"  # statement_timeout for VACUUM/ANALYZE/REINDEX statements
    vacuum_dead_pct: Annotated[float, Meta(ge=0, le=100)] = 10  # db.vacuum: dead rows above this % of all rows
    vacuum_min_dead_rows: Annotated[int, Meta(ge=0)] = 50  # db.vacuum: ...and at least this many dead rows
    analyze_stale_pct: Annotated[float, Meta(ge=0)] = 10  # db.analyze: rows changed since ANALYZE, % of rows
    analyze_min_rows: Annotated[int, Meta(ge=0)] = 50  # db.analyze: ...and at least this many changed rows
    reindex_bloat_pct: Annotated[float, Meta(ge=0, le=100)] = 30  # db.reindex: estimated index bloat above this %
    reindex_min_mb: Annotated[float, Meta(ge=0)] = 1  # db.reindex: leave indexes smaller than this alone
    idle_minutes: Annotated[float, Meta(gt=0)] = 10  # db.kill-idle: idle longer than this (runbook: 10)
    long_query_minutes: Annotated[float, Meta(gt=0)] = 5  # db.kill-long: running longer than this (runbook: 5)
    kill_long_max: Annotated[int, Meta(ge=1)] = 5  # db.kill-long: never terminate more than this per run
    lock_wait_critical_s: Annotated[float, Meta(gt=0)] = 60  # db.locks: CRITICAL once a session waits this long
    pool_size: Annotated[int, Meta(ge=1)] = 10  # the application's SQLAlchemy pool_size per instance
    max_overflow: Annotated[int, Meta(ge=0)] = 10  # the application's SQLAlchemy max_overflow per instance
    # platform components with a connection pool
    pool_components: list[str] = field(default_factory=lambda: ["backend", "celery-worker"])


class RedisSettings(Model, kw_only=True):
    url: str = "redis://127.0.0.1:6379/0"
    password: Secret | None = None
    socket_timeout: Annotated[float, Meta(gt=0)] = 5
    queues: list[str] = field(default_factory=lambda: ["celery"])


class AwsSettings(Model, kw_only=True):
    region: str = "ap-south-1"
    profile: str | None = None
    endpoint_url: str | None = None  # local AWS (moto) for sandbox and tests
    max_attempts: Annotated[int, Meta(ge=1, le=20)] = 5
    connect_timeout: float = 10
    read_timeout: float = 60


class AlbSettings(Model, kw_only=True):
    load_balancer: str
    listener_port: int = 443
    target_group: str | None = None


class StatusPageSettings(Model, kw_only=True):
    url: str
    page_id: str
    api_key: Secret | None = None
    component_ids: list[str] = field(default_factory=list)


class ChatSettings(Model, kw_only=True):
    webhook: Secret
    channel: str | None = None


class NotificationSettings(Model, kw_only=True):
    status_page: StatusPageSettings | None = None
    chat: ChatSettings | None = None
    outbox: str | None = None  # file to append notifications to (sandbox)


class EscalationLevel(Model, kw_only=True):
    after_minutes: Annotated[int, Meta(ge=0)]
    who: str
    contact: Secret | None = None


def _default_escalation() -> list[EscalationLevel]:
    return [
        EscalationLevel(after_minutes=15, who="On-call engineer"),
        EscalationLevel(after_minutes=30, who="Secondary on-call"),
        EscalationLevel(after_minutes=60, who="Engineering manager"),
        EscalationLevel(after_minutes=120, who="CTO"),
    ]


class SandboxSettings(Model, kw_only=True):
    moto_port: int = 14566
    nginx_port: int = 18088


class Urls(Model, kw_only=True):
    site: str | None = None
    api: str | None = None
    health: str | None = None
    status_page: str | None = None


# ---------------------------------------------------------------- environment


class Environment(Model, kw_only=True, dict=True):
    """One environment (sandbox, staging, prod...) as the steps see it."""

    name: str
    description: str = ""
    tier: Literal["production", "staging", "development", "sandbox"]
    timezone: str = "Asia/Kolkata"
    maintenance: MaintenanceSettings = field(default_factory=MaintenanceSettings)
    connection: Literal["ssh", "local"] = "ssh"
    ssh: SSHSettings = field(default_factory=SSHSettings)
    parallelism: Annotated[int, Meta(ge=1, le=512)] = 32
    groups: dict[str, Group] = field(default_factory=dict)
    urls: Urls = field(default_factory=Urls)
    platform: Platform | None = None
    database: DatabaseSettings | None = None
    redis: RedisSettings | None = None
    aws: AwsSettings | None = None
    alb: AlbSettings | None = None
    notifications: NotificationSettings = field(default_factory=NotificationSettings)
    thresholds: Thresholds = field(default_factory=Thresholds)
    escalation: list[EscalationLevel] = field(default_factory=_default_escalation)
    journal_dir: str | None = None
    sandbox: SandboxSettings | None = None

    def problems(self) -> list[tuple[tuple[str, ...], str]]:
        """Checks across fields that types alone cannot express: (key path, message)."""
        found: list[tuple[tuple[str, ...], str]] = []
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            found.append((("timezone",), f"unknown time zone {self.timezone!r} (e.g. Asia/Kolkata)"))
        seen: dict[str, Host] = {}
        for group_name, group in self.groups.items():
            for name, host in group.hosts.items():
                if name in seen and seen[name] != host:
                    found.append((("groups", group_name, "hosts", name),
                                  f"host {name!r} is defined twice with different settings"))
                seen[name] = host
        return found

    # -- derived views -------------------------------------------------------

    @property
    def redactor(self) -> Redactor:
        """Masks every secret of this environment that has been resolved so far."""
        redactor = self.__dict__.get("_redactor")
        if redactor is None:
            redactor = self.__dict__["_redactor"] = Redactor()
        return redactor

    @property
    def is_production(self) -> bool:
        return self.tier == "production"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def hosts(self, groups: Sequence[str] | None = None) -> list[HostTarget]:
        """Hosts of the given groups (all groups if None), each once, in inventory order."""
        if groups is not None:
            unknown = [g for g in groups if g not in self.groups]
            if unknown:
                raise InventoryError(
                    f"environment {self.name!r} has no host group {', '.join(map(repr, unknown))}",
                    hint=f"known groups: {', '.join(self.groups) or '(none)'}",
                )
        wanted = list(self.groups) if groups is None else list(groups)
        found: dict[str, HostTarget] = {}
        for group_name in wanted:
            group = self.groups[group_name]
            for name, host in group.hosts.items():
                if name in found:
                    prev = found[name]
                    found[name] = HostTarget(**{**prev.__dict__, "groups": (*prev.groups, group_name)})
                    continue
                settings = host.vars  # already merged over the group's vars at load time
                found[name] = HostTarget(
                    name=name,
                    groups=(group_name,),
                    address=host.address or name,
                    port=host.port or self.ssh.port,
                    user=host.user or self.ssh.user,
                    connection=host.connection or self.connection,
                    settings=settings,
                    become=self.ssh.become if host.become is None else host.become,
                )
        return list(found.values())

    def secrets(self) -> Iterator[Secret]:
        yield from _walk_secrets(self)

    def public_dict(self) -> dict[str, Any]:
        """The environment as data, secrets shown as their references (for journal and backups)."""
        return _drop_none(msgspec.to_builtins(self, enc_hook=str))


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def _walk_secrets(value: Any) -> Iterator[Secret]:
    if isinstance(value, Secret):
        yield value
    elif isinstance(value, Struct):
        for name in value.__struct_fields__:
            yield from _walk_secrets(getattr(value, name))
    elif isinstance(value, dict):
        for item in value.values():
            yield from _walk_secrets(item)
    elif isinstance(value, list):
        for item in value:
            yield from _walk_secrets(item)


# ---------------------------------------------------------------- loading


def inventory_dir() -> Path:
    """`INDOSTAR_INVENTORY_DIR`, else ./inventory, else the one shipped next to the package."""
    configured = os.environ.get("INDOSTAR_INVENTORY_DIR")
    if configured:
        return Path(configured)
    local = Path.cwd() / "inventory"
    return local if local.is_dir() else REPO_ROOT / "inventory"


def sandbox_root() -> Path:
    configured = os.environ.get("INDOSTAR_SANDBOX_ROOT")
    return Path(configured).resolve() if configured else REPO_ROOT / ".sandbox"


def list_environments(directory: Path | None = None) -> list[str]:
    """Environment names; files starting with '_' are shared bases, not environments."""
    directory = directory or inventory_dir()
    return sorted(p.stem for p in directory.glob("*.yaml") if not p.name.startswith("_"))


def load_environment(name: str, *, directory: Path | None = None) -> Environment:
    """Load, merge (`extends:`) and validate one environment. Raises InventoryError (exit 2)."""
    directory = directory or inventory_dir()
    path = directory / f"{name}.yaml"
    if not path.is_file():
        known = list_environments(directory)
        close = difflib.get_close_matches(name, known, n=1)
        raise UnknownEnvironment(
            f"unknown environment {name!r} (no {path})",
            hint=(f"did you mean {close[0]!r}? " if close else "")
            + f"known environments: {', '.join(known) or '(none)'}",
        )
    raw, lines = _load_chain(path, directory, seen=())
    raw.pop("extends", None)
    raw["name"] = name
    raw = _interpolate(raw, {"sandbox_root": str(sandbox_root()), "inventory_dir": str(directory.resolve())})
    raw = _merge_host_vars(raw)
    try:
        env = msgspec.convert(raw, Environment, dec_hook=_decode_secret)
    except msgspec.ValidationError as exc:
        loc, message = _locate(str(exc), raw)
        raise InventoryError(_format_error(name, loc, message, lines),
                             hint="fix the line named above and run again") from None
    problems = env.problems()
    if problems:
        loc, message = problems[0]
        raise InventoryError(_format_error(name, loc, message, lines),
                             hint="fix the line named above and run again")
    resolver = _aws_secret_resolver(env.aws) if env.aws is not None else None
    for secret in env.secrets():
        secret.bind(env.redactor, resolver)
    return env


def _aws_secret_resolver(settings: AwsSettings) -> Callable[[str, str], str]:
    """`ssm:`/`secretsmanager:` references resolve through the environment's own AWS settings, on first use."""
    connector: list[Any] = []

    def resolve(scheme: str, key: str) -> str:
        from .connectors.aws import AwsConnector

        if not connector:
            connector.append(AwsConnector(settings))
        try:
            return str(connector[0].resolve_secret(scheme, key))
        except Exception as exc:  # noqa: BLE001 - botocore raises many types; all mean "could not read"
            raise InventoryError(f"secret {scheme}:{key} could not be read from AWS ({settings.region}): {exc}",
                                 hint="check the reference and the AWS credentials/profile") from None

    return resolve


def _load_chain(path: Path, directory: Path, seen: tuple[Path, ...]) -> tuple[dict[str, Any], LineMap]:
    if path in seen:
        raise InventoryError(f"{path}: 'extends' loops back to itself ({' -> '.join(map(str, seen))})")
    data, lines = read_yaml_mapping(path, InventoryError)
    parent = data.get("extends")
    if parent is None:
        return data, lines
    if not isinstance(parent, str):
        raise InventoryError(f"{path}: 'extends' must name a file, e.g. extends: _common.yaml")
    parent_path = (path.parent / parent).resolve()
    if not parent_path.is_file():
        raise InventoryError(f"{path}: 'extends: {parent}' names a file that does not exist ({parent_path})")
    base, base_lines = _load_chain(parent_path, directory, (*seen, path))
    base.pop("extends", None)
    return _deep_merge(base, data), {**base_lines, **lines}


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _interpolate(value: Any, mapping: dict[str, str]) -> Any:
    if isinstance(value, str) and "${" in value:
        return string.Template(value).safe_substitute(mapping)
    if isinstance(value, dict):
        return {k: _interpolate(v, mapping) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, mapping) for v in value]
    return value


def _decode_secret(kind: type, value: Any) -> Any:
    if kind is Secret and isinstance(value, str):
        return Secret(value)
    raise NotImplementedError


def _merge_host_vars(raw: dict[str, Any]) -> dict[str, Any]:
    """Host `vars` override their group's `vars` key by key; `hosts:` may be a list of names."""
    groups = raw.get("groups")
    if not isinstance(groups, dict):
        return raw
    merged_groups: dict[str, Any] = {}
    for group_name, group in groups.items():
        if not isinstance(group, dict):
            merged_groups[group_name] = group
            continue
        hosts = group.get("hosts") or {}
        if isinstance(hosts, list):
            hosts = {str(name): {} for name in hosts}
        group_vars = group.get("vars") or {}
        if isinstance(hosts, dict) and isinstance(group_vars, dict):
            hosts = {name: _with_vars(host, group_vars) for name, host in hosts.items()}
        merged_groups[group_name] = {**group, "hosts": hosts}
    return {**raw, "groups": merged_groups}


def _with_vars(host: Any, group_vars: dict[str, Any]) -> Any:
    host = {} if host is None else host
    if not isinstance(host, dict) or not isinstance(host.get("vars", {}), dict):
        return host
    return {**host, "vars": {**group_vars, **(host.get("vars") or {})}}


_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_PART = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")


def _locate(error: str, raw: dict[str, Any]) -> tuple[tuple[str, ...], str]:
    """msgspec's "message - at `$.a.b[0]`" as a key path; `[...]` (a dict key) is found in the data."""
    match = _AT.match(error)
    assert match is not None
    message, path = match.group("message"), match.group("path") or ""
    loc: list[str] = []
    node: Any = raw
    annotation: Any = Environment
    for name, index in _PART.findall(path):
        if index == "...":
            value_type = typing.get_args(_unwrap(annotation))[-1]
            bad = _first_invalid(node, value_type) if isinstance(node, dict) else None
            name = bad if bad is not None else "..."
        key = name or index
        loc.append(key)
        annotation = _child_type(annotation, key, node)
        if isinstance(node, dict):
            node = node.get(key)
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            node = None
    extra = re.match(r"Object contains unknown field `(.+)`", message)
    if extra:
        loc.append(extra.group(1))
    missing = re.match(r"Object missing required field `(.+)`", message)
    if missing:
        loc.append(missing.group(1))
    return tuple(loc), message


def _first_invalid(mapping: dict[str, Any], value_type: Any) -> str | None:
    for key, value in mapping.items():
        try:
            msgspec.convert(_merge_host_vars({"groups": {"x": value}})["groups"]["x"]
                            if _unwrap(value_type) is Group else value, value_type, dec_hook=_decode_secret)
        except msgspec.ValidationError:
            return str(key)
    return None


def _format_error(env_name: str, loc: tuple[str, ...], message: str, lines: LineMap) -> str:
    key = ".".join(loc) or "(top level)"
    where = nearest_line(loc, lines)
    extra = re.match(r"Object contains unknown field `(.+)`", message)
    if extra:
        options = _fields_at(loc[:-1])
        close = difflib.get_close_matches(loc[-1], options, n=1, cutoff=0.5)
        message = f"unknown key {loc[-1]!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
        if options and not close:
            message += f"; known keys: {', '.join(sorted(options))}"
    elif message.startswith("Object missing required field"):
        message = "required key is missing"
    elif message.startswith("Invalid value") and loc[-1:] == ("kind",):
        message += " (expected one of: kubernetes, compose, ecs)"
    if loc[-2:-1] == ("window",) and "Expected `str`, got `int`" in message:
        message += ' (write times in quotes: "02:00")'
    return f"inventory for environment {env_name!r} is invalid:\n  {where}: {key}: {message}"


def _child_type(annotation: Any, key: str, node: Any) -> Any:
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, Struct):
        for info in msgspec.structs.fields(annotation):
            if info.name == key:
                return info.type
        return None
    origin = typing.get_origin(annotation)
    if origin in (dict, list):
        return typing.get_args(annotation)[-1]
    if origin in (typing.Union, types.UnionType) and isinstance(node, dict):
        for option in typing.get_args(annotation):
            if isinstance(option, type) and issubclass(option, Struct):
                config = option.__struct_config__
                if config.tag is not None and node.get(config.tag_field) == config.tag:
                    return _child_type(option, key, node)
    return None


def _fields_at(loc: tuple[str, ...]) -> list[str]:
    """Names of the fields of the section found by following `loc` from the environment."""
    annotation: Any = Environment
    for part in loc:
        annotation = _child_type(annotation, part, None)
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, Struct):
        return list(annotation.__struct_fields__)
    return []


def _unwrap(annotation: Any) -> Any:
    """Strip Annotated[...] and Optional[...] down to the one real type, when there is one."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            options = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(options) != 1:
                return annotation
            annotation = options[0]
        else:
            return annotation
