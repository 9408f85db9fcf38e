"""Inventory: one validated YAML file per environment, optionally extending a shared base.

Everything is checked before anything connects. Errors name the file, the line,
the dotted key and what was expected; an unknown key suggests the nearest known one.
"""

from __future__ import annotations

import difflib
import os
import string
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, time
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

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


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


# ---------------------------------------------------------------- thresholds


class Threshold(Model):
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
    return Field(default_factory=lambda: Threshold(warning=warning, critical=critical))


class Thresholds(Model):
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


class LogrotatePolicy(Model):
    """The runbook's rotation policy: daily, rotate 7, compress, delaycompress, missingok, notifempty."""

    frequency: Literal["daily", "weekly", "monthly"] = "daily"
    rotate: int = Field(7, ge=1, le=365)
    compress: bool = True
    delaycompress: bool = True
    missingok: bool = True
    notifempty: bool = True
    copytruncate: bool = False
    su: str | None = Field(None, description="'user group' for logrotate's su directive")


class NginxSettings(Model):
    """How to test/reload this host's nginx, and where its maintenance mode lives (nginx strategy)."""

    command: list[str] = Field(default_factory=lambda: ["nginx"],
                               description="argv prefix for `-t` / `-s reload`, e.g. [nginx, -c, CONF]")
    reload_command: list[str] | None = Field(None, description="reload argv instead of `<command> -s reload`, "
                                             "e.g. [systemctl, reload, nginx]")
    maintenance_snippet: str = Field("/etc/nginx/snippets/indostar-maintenance.conf",
                                     description="file every server block includes; written by maintenance.on")
    maintenance_flag: str = Field("/var/lib/indostar-ops/maintenance.on",
                                  description="maintenance is on while this file exists")
    maintenance_page_dir: str = "/var/www/indostar-maintenance"
    maintenance_exempt: list[str] = Field(default_factory=list,
                                          description="exact URIs still proxied in maintenance (e.g. /health)")
    probe_url: str | None = Field(None, description="URL reaching this host's nginx, to verify maintenance mode")
    probe_host: str | None = Field(None, description="Host header sent with probe_url")
    probe_wait_s: float = Field(10, gt=0, description="how long on/off wait for the site to follow the flag")


class CertbotSettings(Model):
    """certbot on this host: command prefix (may start with `env VAR=...`) and extra options."""

    command: list[str] = Field(default_factory=lambda: ["certbot"])
    options: list[str] = Field(default_factory=list, description="e.g. --config-dir, --server for a private ACME CA")
    renew_before_days: float = Field(30, ge=0, description="certbot's renewal window (renew_before_expiry)")
    timeout: float = Field(600, gt=0)


class CertificateSettings(Model):
    """One certificate served by this host's nginx and managed by certbot."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="certbot cert-name (lineage)")
    path: str | None = Field(None, description="certificate file on the host; default "
                             "<certbot --config-dir or /etc/letsencrypt>/live/<name>/fullchain.pem")
    endpoint: str | None = Field(None, description="host:port serving it; default <host address>:443")
    sni: str | None = Field(None, description="TLS server name; default the cert name")
    ca_file: str | None = Field(None, description="local CA bundle to verify the served chain; default system")


class DockerSettings(Model):
    enabled: bool = True
    command: list[str] = Field(default_factory=lambda: ["docker"])
    data_root: str = Field("/var/lib/docker", description="filesystem whose use gates `docker.prune --if-over`")


class HostSettings(Model):
    """Per-host variables; group `vars` apply to every host, host `vars` override per key."""

    log_dirs: list[str] = Field(default_factory=lambda: ["/var/log/indostar"])
    log_patterns: list[str] = Field(default_factory=lambda: ["*.log"])
    logrotate_config: str = "/etc/logrotate.d/indostar"
    logrotate: LogrotatePolicy = Field(default_factory=LogrotatePolicy)
    disk_paths: list[str] = Field(default_factory=lambda: ["/"], description="filesystems df checks")
    disk_report_roots: list[str] = Field(default_factory=lambda: ["/var/log", "/var/lib/docker", "/tmp"])
    tmp_dirs: list[str] = Field(default_factory=lambda: ["/tmp/indostar"])
    backup_dir: str = Field("/var/backups/indostar-ops", description="where replaced files are kept")
    path_prefix: list[str] = Field(default_factory=list, description="prepended to PATH for commands")
    nginx: NginxSettings = Field(default_factory=NginxSettings)
    certbot: CertbotSettings = Field(default_factory=CertbotSettings)
    certificates: list[CertificateSettings] = Field(default_factory=list)
    docker: DockerSettings = Field(default_factory=DockerSettings)


class SSHSettings(Model):
    user: str = "root"
    port: int = Field(22, ge=1, le=65535)
    key_file: str | None = None
    key_passphrase: Secret | None = None
    known_hosts: str | None = None
    strict_host_keys: bool = True
    connect_timeout: float = Field(10, gt=0)
    command_timeout: float = Field(300, gt=0)
    become: bool = Field(False, description="run commands and installs through `sudo -n` (login user is not root)")


class Host(Model):
    address: str | None = None
    port: int | None = Field(None, ge=1, le=65535)
    user: str | None = None
    connection: Literal["ssh", "local"] | None = None
    become: bool | None = None
    vars: HostSettings = Field(default_factory=HostSettings)


class Group(Model):
    vars: HostSettings = Field(default_factory=HostSettings)
    hosts: dict[str, Host] = Field(default_factory=dict)

    @field_validator("hosts", mode="before")
    @classmethod
    def _list_of_names(cls, value: Any) -> Any:
        if isinstance(value, list):
            return {name: {} for name in value}
        return {k: ({} if v is None else v) for k, v in value.items()} if isinstance(value, dict) else value


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


class MaintenanceWindow(Model):
    start: time = time(2, 0)
    end: time = time(4, 0)

    def contains(self, moment: datetime) -> bool:
        now = moment.timetz().replace(tzinfo=None)
        if self.start <= self.end:
            return self.start <= now < self.end
        return now >= self.start or now < self.end


class MaintenanceSettings(Model):
    window: MaintenanceWindow = Field(default_factory=MaintenanceWindow)
    strategy: Literal["nginx", "alb", "none"] = "nginx"
    notice_hours: float = Field(24, ge=0)


class KubernetesPlatform(Model):
    kind: Literal["kubernetes"]
    context: str | None = None
    kubeconfig: str | None = None
    namespace: str = "indostar-naturals"
    components: dict[str, str] = Field(
        default_factory=lambda: {"backend": "backend", "celery-worker": "celery-worker"},
        description="component -> deployment name",
    )
    replicas: dict[str, int] = Field(default_factory=dict, description="expected replicas per component")


class ComposePlatform(Model):
    kind: Literal["compose"]
    host: str
    project_dir: str
    components: dict[str, str] = Field(
        default_factory=lambda: {"backend": "backend", "celery-worker": "celery-worker"},
    )
    replicas: dict[str, int] = Field(default_factory=dict)


class EcsPlatform(Model):
    kind: Literal["ecs"]
    cluster: str
    components: dict[str, str] = Field(default_factory=dict, description="component -> ECS service")
    replicas: dict[str, int] = Field(default_factory=dict)


Platform = Annotated[KubernetesPlatform | ComposePlatform | EcsPlatform, Field(discriminator="kind")]


class DatabaseSettings(Model):
    host: str = "127.0.0.1"
    port: int = Field(5432, ge=1, le=65535)
    name: str
    user: str
    password: Secret | None = None
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] | None = None
    rds_instance: str | None = None
    admin_user: str | None = Field(None, description="role for maintenance (VACUUM, terminate); default: user")
    admin_password: Secret | None = None
    connect_timeout: int = Field(10, ge=1)
    statement_timeout: str = "5min"
    lock_timeout: str = "5s"
    maintenance_timeout: str = Field("3h", description="statement_timeout for VACUUM/ANALYZE/REINDEX statements")
    vacuum_dead_pct: float = Field(10, ge=0, le=100, description="db.vacuum: dead rows above this % of all rows")
    vacuum_min_dead_rows: int = Field(50, ge=0, description="db.vacuum: ...and at least this many dead rows")
    analyze_stale_pct: float = Field(10, ge=0, description="db.analyze: rows changed since ANALYZE, % of rows")
    analyze_min_rows: int = Field(50, ge=0, description="db.analyze: ...and at least this many changed rows")
    reindex_bloat_pct: float = Field(30, ge=0, le=100, description="db.reindex: estimated index bloat above this %")
    reindex_min_mb: float = Field(1, ge=0, description="db.reindex: leave indexes smaller than this alone")
    idle_minutes: float = Field(10, gt=0, description="db.kill-idle: idle longer than this (runbook: 10)")
    long_query_minutes: float = Field(5, gt=0, description="db.kill-long: running longer than this (runbook: 5)")
    kill_long_max: int = Field(5, ge=1, description="db.kill-long: never terminate more than this per run")
    lock_wait_critical_s: float = Field(60, gt=0, description="db.locks: CRITICAL once a session waits this long")
    pool_size: int = Field(10, ge=1, description="the application's SQLAlchemy pool_size per instance")
    max_overflow: int = Field(10, ge=0, description="the application's SQLAlchemy max_overflow per instance")
    pool_components: list[str] = Field(default_factory=lambda: ["backend", "celery-worker"],
                                       description="platform components with a connection pool")


class RedisSettings(Model):
    url: str = "redis://127.0.0.1:6379/0"
    password: Secret | None = None
    socket_timeout: float = Field(5, gt=0)
    queues: list[str] = Field(default_factory=lambda: ["celery"])


class AwsSettings(Model):
    region: str = "ap-south-1"
    profile: str | None = None
    endpoint_url: str | None = Field(None, description="local AWS (moto) for sandbox and tests")
    max_attempts: int = Field(5, ge=1, le=20)
    connect_timeout: float = 10
    read_timeout: float = 60


class AlbSettings(Model):
    load_balancer: str
    listener_port: int = 443
    target_group: str | None = None


class StatusPageSettings(Model):
    url: str
    page_id: str
    api_key: Secret | None = None
    component_ids: list[str] = Field(default_factory=list)


class ChatSettings(Model):
    webhook: Secret
    channel: str | None = None


class NotificationSettings(Model):
    status_page: StatusPageSettings | None = None
    chat: ChatSettings | None = None
    outbox: str | None = Field(None, description="file to append notifications to (sandbox)")


class EscalationLevel(Model):
    after_minutes: int = Field(ge=0)
    who: str
    contact: Secret | None = None


def _default_escalation() -> list[EscalationLevel]:
    return [
        EscalationLevel(after_minutes=15, who="On-call engineer"),
        EscalationLevel(after_minutes=30, who="Secondary on-call"),
        EscalationLevel(after_minutes=60, who="Engineering manager"),
        EscalationLevel(after_minutes=120, who="CTO"),
    ]


class SandboxSettings(Model):
    moto_port: int = 14566
    nginx_port: int = 18088


class Urls(Model):
    site: str | None = None
    api: str | None = None
    health: str | None = None
    status_page: str | None = None


# ---------------------------------------------------------------- environment


class Environment(Model):
    """One environment (sandbox, staging, prod...) as the steps see it."""

    name: str
    description: str = ""
    tier: Literal["production", "staging", "development", "sandbox"]
    timezone: str = "Asia/Kolkata"
    maintenance: MaintenanceSettings = Field(default_factory=MaintenanceSettings)
    connection: Literal["ssh", "local"] = "ssh"
    ssh: SSHSettings = Field(default_factory=SSHSettings)
    parallelism: int = Field(32, ge=1, le=512)
    groups: dict[str, Group] = Field(default_factory=dict)
    urls: Urls = Field(default_factory=Urls)
    platform: Platform | None = None
    database: DatabaseSettings | None = None
    redis: RedisSettings | None = None
    aws: AwsSettings | None = None
    alb: AlbSettings | None = None
    notifications: NotificationSettings = Field(default_factory=NotificationSettings)
    thresholds: Thresholds = Field(default_factory=Thresholds)
    escalation: list[EscalationLevel] = Field(default_factory=_default_escalation)
    journal_dir: str | None = None
    sandbox: SandboxSettings | None = None
    _redactor: Redactor = PrivateAttr(default_factory=Redactor)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (e.g. Asia/Kolkata)") from exc
        return value

    @model_validator(mode="after")
    def _hosts_unique(self) -> Environment:
        seen: dict[str, Host] = {}
        for group in self.groups.values():
            for name, host in group.hosts.items():
                if name in seen and seen[name] != host:
                    raise ValueError(f"host {name!r} is defined twice with different settings")
                seen[name] = host
        return self

    # -- derived views -------------------------------------------------------

    @property
    def redactor(self) -> Redactor:
        """Masks every secret of this environment that has been resolved so far."""
        return self._redactor

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
                settings = group.vars.model_copy(
                    update={k: getattr(host.vars, k) for k in host.vars.model_fields_set},
                )
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
        return self.model_dump(mode="json", exclude_none=True)


def _walk_secrets(value: Any) -> Iterator[Secret]:
    if isinstance(value, Secret):
        yield value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
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
    try:
        env = Environment.model_validate(raw)
    except ValidationError as exc:
        raise InventoryError(_format_errors(name, exc, lines), hint="fix the lines named above and run again") from None
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


def _format_errors(env_name: str, exc: ValidationError, lines: LineMap) -> str:
    out = [f"inventory for environment {env_name!r} is invalid ({exc.error_count()} problem(s)):"]
    for error in exc.errors():
        loc = tuple(str(p) for p in error["loc"] if not str(p).startswith("function-"))
        loc = tuple(p for p in loc if p not in {"KubernetesPlatform", "ComposePlatform", "EcsPlatform"})
        loc = tuple(p for p in loc if p not in {"kubernetes", "compose", "ecs"} or loc[:1] != ("platform",))
        key = ".".join(loc) or "(top level)"
        where = nearest_line(loc, lines)
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            options = _fields_at(Environment, loc[:-1])
            close = difflib.get_close_matches(loc[-1], options, n=1, cutoff=0.5)
            message = f"unknown key {loc[-1]!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
            if options and not close:
                message += f"; known keys: {', '.join(sorted(options))}"
        elif error["type"] == "missing":
            message = "required key is missing"
        else:
            message = f"{message} (got {error.get('input')!r})"
        out.append(f"  {where}: {key}: {message}")
    return "\n".join(out)


def _fields_at(model: type[BaseModel], loc: tuple[str, ...]) -> list[str]:
    """Names of the fields of the model found by following `loc` from `model`."""
    annotation: Any = model
    for part in loc:
        annotation = _unwrap(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(part)
            if field is None:
                return []
            annotation = field.annotation
        elif typing.get_origin(annotation) in (dict, list):
            annotation = typing.get_args(annotation)[-1]
        else:
            return []
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return []


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
            models = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(models) != 1:
                return annotation
            annotation = models[0]
        else:
            return annotation
