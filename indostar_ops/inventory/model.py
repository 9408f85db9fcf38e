"""Inventory model: the typed sections of an environment file (msgspec Structs).

Every field has a type checked at load time and unknown keys are errors. The
models are msgspec Structs: validating with them costs a few milliseconds at
start-up where pydantic's model building cost about 100 ms, which every CLI run
and every fan-out paid.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, time
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from msgspec import Meta, Struct, field

from ..errors import InventoryError
from ..secrets import Redactor, Secret
from ..severity import Severity

REPO_ROOT = Path(__file__).resolve().parent.parent.parent



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
    queue_length: Threshold = _t(1000, 10000)  # diagnose.celery: tasks waiting in a Celery queue
    pending_payment_minutes: Threshold = _t(15, 60)  # diagnose.payments: oldest payment still pending
    redis_latency_ms: Threshold = _t(5, 20)  # cache.info: round trip measured from the operator's machine


# ---------------------------------------------------------------- typed values

# Every value that reaches a command line, a config file or a page is typed here and rejected at load
# (file:line), never at render time. `\Z`, not `$`: `$` would accept a trailing newline.
_CTRL = r"\x00-\x1f\x7f"
AbsPath = Annotated[str, Meta(pattern=rf"^/[^{_CTRL}]*\Z")]
QuotedPath = Annotated[str, Meta(pattern=rf'^/[^{_CTRL}"]*\Z')]  # written inside "..." (logrotate)
NginxPath = Annotated[str, Meta(pattern=r"^/(?!.*/\.\.(/|\Z))[A-Za-z0-9_./@+,=-]*\Z")]  # nginx config
NginxUri = Annotated[str, Meta(pattern=r"^/[A-Za-z0-9_./@+,=%~-]*\Z")]
FileGlob = Annotated[str, Meta(pattern=rf'^[^{_CTRL}"/]+\Z')]  # a file-name pattern such as *.log
Name = Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*\Z")]  # environment, group, host names
HostName = Annotated[str, Meta(pattern=r"^([A-Za-z0-9][A-Za-z0-9._-]*|[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*)\Z")]  # DNS/IPv4/IPv6
Endpoint = Annotated[str, Meta(pattern=r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9._-]*)(:[0-9]{1,5})?\Z")]
UserName = Annotated[str, Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}\Z")]
UserGroup = Annotated[str, Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,31} [A-Za-z_][A-Za-z0-9_.-]{0,31}\Z")]
HttpUrl = Annotated[str, Meta(pattern=rf"^https?://[^{_CTRL} ]+\Z")]

# What each pattern means, for the load error (diagnostics.py); a control character is named first.
PATTERN_HELP = {
    AbsPath.__metadata__[0].pattern: "an absolute path",
    QuotedPath.__metadata__[0].pattern: "an absolute path without double quotes",
    NginxPath.__metadata__[0].pattern: "an absolute path of letters, digits and ./_-@+,= (no '..'), "
                                       "as it is written into the nginx config",
    NginxUri.__metadata__[0].pattern: "a URI path of letters, digits and ./_-@+,=%~",
    FileGlob.__metadata__[0].pattern: "a file-name pattern without '/' or double quotes, e.g. *.log",
    Name.__metadata__[0].pattern: "a name of letters, digits and ._- starting with a letter or digit",
    HostName.__metadata__[0].pattern: "a host name or IP address",
    Endpoint.__metadata__[0].pattern: "host:port, e.g. 10.0.1.11:443",
    UserName.__metadata__[0].pattern: "a user name of letters, digits and ._-",
    UserGroup.__metadata__[0].pattern: "'user group', two names separated by one space",
    HttpUrl.__metadata__[0].pattern: "an http:// or https:// URL",
}


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
    su: UserGroup | None = None  # 'user group' for logrotate's su directive


class NginxSettings(Model, kw_only=True):
    """How to test/reload this host's nginx, and where its maintenance mode lives (nginx strategy)."""

    # argv prefix for `-t` / `-s reload`, e.g. [nginx, -c, CONF]
    command: list[str] = field(default_factory=lambda: ["nginx"])
    # reload argv instead of `<command> -s reload`, e.g. [systemctl, reload, nginx]
    reload_command: list[str] | None = None
    # file every server block includes; written by maintenance.on
    maintenance_snippet: NginxPath = "/etc/nginx/snippets/indostar-maintenance.conf"
    maintenance_flag: NginxPath = "/var/lib/indostar-ops/maintenance.on"  # maintenance is on while this file exists
    maintenance_page_dir: NginxPath = "/var/www/indostar-maintenance"
    # exact URIs still proxied in maintenance (e.g. /health)
    maintenance_exempt: list[NginxUri] = field(default_factory=list)
    probe_url: HttpUrl | None = None  # URL reaching this host's nginx, to verify maintenance mode
    probe_host: HostName | None = None  # the site's name: Host header, and SNI (verified) over https
    probe_ca_file: AbsPath | None = None  # CA bundle to verify an https probe_url; default system
    probe_verify: bool = True  # false: accept any certificate (a self-signed staging host)
    probe_wait_s: Annotated[float, Meta(gt=0)] = 10  # how long on/off wait for the site to follow the flag


class CertbotSettings(Model, kw_only=True):
    """certbot on this host: command prefix (may start with `env VAR=...`) and extra options."""

    command: list[str] = field(default_factory=lambda: ["certbot"])
    options: list[str] = field(default_factory=list)  # e.g. --config-dir, --server for a private ACME CA
    renew_before_days: Annotated[float, Meta(ge=0)] = 30  # certbot's renewal window (renew_before_expiry)
    timeout: Annotated[float, Meta(gt=0)] = 600


class CertificateSettings(Model, kw_only=True):
    """One certificate served by this host's nginx and managed by certbot."""

    name: Name  # certbot cert-name (lineage)
    # certificate file on the host; default <certbot --config-dir or /etc/letsencrypt>/live/<name>/fullchain.pem
    path: AbsPath | None = None
    endpoint: Endpoint | None = None  # host:port serving it; default <host address>:443
    sni: HostName | None = None  # TLS server name; default the cert name
    ca_file: AbsPath | None = None  # local CA bundle to verify the served chain; default system


class DockerSettings(Model, kw_only=True):
    enabled: bool = True
    command: list[str] = field(default_factory=lambda: ["docker"])
    data_root: AbsPath = "/var/lib/docker"  # filesystem whose use gates `docker.prune --if-over`


class HostSettings(Model, kw_only=True):
    """Per-host variables; group `vars` apply to every host, host `vars` override per key."""

    log_dirs: list[QuotedPath] = field(default_factory=lambda: ["/var/log/indostar"])
    log_patterns: list[FileGlob] = field(default_factory=lambda: ["*.log"])
    logrotate_config: AbsPath = "/etc/logrotate.d/indostar"
    logrotate: LogrotatePolicy = field(default_factory=LogrotatePolicy)
    disk_paths: list[AbsPath] = field(default_factory=lambda: ["/"])  # filesystems df checks
    disk_report_roots: list[AbsPath] = field(default_factory=lambda: ["/var/log", "/var/lib/docker", "/tmp"])
    tmp_dirs: list[AbsPath] = field(default_factory=lambda: ["/tmp/indostar"])
    backup_dir: AbsPath = "/var/backups/indostar-ops"  # where replaced files are kept
    path_prefix: list[AbsPath] = field(default_factory=list)  # prepended to PATH for commands
    nginx: NginxSettings = field(default_factory=NginxSettings)
    certbot: CertbotSettings = field(default_factory=CertbotSettings)
    certificates: list[CertificateSettings] = field(default_factory=list)
    docker: DockerSettings = field(default_factory=DockerSettings)


# one jump host, OpenSSH ProxyJump style: [user@]host[:port] (IPv6 in brackets)
_HOP = r"(?:[A-Za-z_][A-Za-z0-9._-]{0,31}@)?(?:[A-Za-z0-9][A-Za-z0-9.-]{0,252}|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?"
# `jump:` is one hop, a comma-separated chain (as ProxyJump) or a list; [] or "none" = connect directly
JumpSetting = (list[Annotated[str, Meta(pattern=f"^{_HOP}\\Z")]]
               | Annotated[str, Meta(pattern=f"^(?:none|{_HOP}(?:,{_HOP})*)\\Z")])


class SSHSettings(Model, kw_only=True):
    user: UserName = "root"
    port: Annotated[int, Meta(ge=1, le=65535)] = 22
    key_file: str | None = None
    key_passphrase: Secret | None = None
    known_hosts: str | None = None
    strict_host_keys: bool = True
    connect_timeout: Annotated[float, Meta(gt=0)] = 10
    command_timeout: Annotated[float, Meta(gt=0)] = 300
    become: bool = False  # run commands and installs through `sudo -n` (login user is not root)
    jump: JumpSetting | None = None  # bastion(s) in front of every host; groups and hosts may override
    agent: bool = False  # also authenticate with the running ssh-agent's keys ($SSH_AUTH_SOCK)
    # opt-in OpenSSH client config: HostName/User/Port/IdentityFile/ProxyJump/UserKnownHostsFile
    config_file: str | None = None


class Host(Model, kw_only=True):
    address: HostName | None = None
    port: Annotated[int, Meta(ge=1, le=65535)] | None = None
    user: UserName | None = None
    connection: Literal["ssh", "local"] | None = None
    become: bool | None = None
    jump: JumpSetting | None = None  # overrides the group's and ssh.jump ([] or "none": direct)
    vars: HostSettings = field(default_factory=HostSettings)


class Group(Model, kw_only=True):
    vars: HostSettings = field(default_factory=HostSettings)
    jump: JumpSetting | None = None  # overrides ssh.jump for this group's hosts
    hosts: dict[Name, Host] = field(default_factory=dict)


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
    jump: tuple[str, ...] | None = None  # hops in order; None: the inventory names none (ssh_config may)
    explicit: frozenset[str] = frozenset()  # of address/user/port: set in the inventory (beat ssh_config)

    def __str__(self) -> str:
        return self.name


def jump_hops(value: str | list[str] | None) -> tuple[str, ...] | None:
    """`jump:` as a tuple of hops: None when unset, () for "none"/[] (connect directly)."""
    if value is None:
        return None
    if isinstance(value, str):
        return () if value == "none" else tuple(h.strip() for h in value.split(",") if h.strip())
    return tuple(value)


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


class LockSettings(Model, kw_only=True):
    """The environment's maintenance lock (see indostar_ops/lock.py)."""

    backend: Literal["file", "postgres", "dynamodb"] = "file"
    path: str | None = None  # file: directory of the lock files (default <journal_dir>/locks)
    schema: Annotated[str, Meta(pattern=r"^[a-z_][a-z0-9_]{0,62}\Z")] = "indostar_ops"  # postgres: ops schema
    table: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.-]{3,255}\Z")] = "indostar-ops-locks"  # dynamodb table
    lease_seconds: Annotated[float, Meta(ge=1, le=3600)] = 120  # renewed every third of it while the run lives


class SmokeCheck(Model, kw_only=True):
    """A URL the window's verify phase fetches: expected status and, optionally, a marker in the body."""

    url: Annotated[str, Meta(pattern=r"^https?://[^\s]+\Z")]
    status: Annotated[int, Meta(ge=100, le=599)] = 200
    contains: str | None = None
    host: Annotated[str, Meta(pattern=r"^[A-Za-z0-9.-]+(:[0-9]+)?\Z")] | None = None  # Host header


class MaintenanceSettings(Model, kw_only=True):
    window: MaintenanceWindow = field(default_factory=MaintenanceWindow)
    strategy: Literal["nginx", "alb", "none"] = "nginx"
    notice_hours: Annotated[float, Meta(ge=0)] = 24
    lock: LockSettings = field(default_factory=LockSettings)
    margin_minutes: Annotated[float, Meta(ge=0)] = 10  # no step starts after the window's end minus this
    smoke: list[SmokeCheck] = field(default_factory=list)  # verify phase: URLs, expected status, body marker


# Names that reach an API path or a command line: validated at load (rule 2).
_COMPONENT = Annotated[str, Meta(pattern=r"^[a-z][a-z0-9-]{0,62}$")]
_K8S_NAME = Annotated[str, Meta(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")]  # DNS-1123 label
_SERVICE_NAME = Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")]  # compose / ECS service
_ABS_PATH = Annotated[str, Meta(pattern=r"^/[^\x00\n]*$")]


def _default_components() -> dict[str, str]:
    return {"backend": "backend", "celery-worker": "celery-worker"}


class KubernetesPlatform(Model, kw_only=True, tag_field="kind", tag="kubernetes"):
    kind: ClassVar[str] = "kubernetes"
    context: str | None = None
    kubeconfig: str | None = None
    namespace: _K8S_NAME = "indostar-naturals"
    # component -> deployment name
    components: dict[_COMPONENT, _K8S_NAME] = field(default_factory=_default_components)
    replicas: dict[_COMPONENT, Annotated[int, Meta(ge=0)]] = field(default_factory=dict)  # expected per component
    rollout_timeout: Annotated[float, Meta(gt=0)] = 600  # app.restart/scale/rollback wait at most this long
    poll_interval: Annotated[float, Meta(gt=0)] = 2
    connect_timeout: Annotated[float, Meta(gt=0)] = 10
    request_timeout: Annotated[float, Meta(gt=0)] = 30


class ComposePlatform(Model, kw_only=True, tag_field="kind", tag="compose"):
    kind: ClassVar[str] = "compose"
    host: str
    project_dir: _ABS_PATH
    compose_file: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.-]+\.ya?ml$")] = "docker-compose.yml"
    project: Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9_-]*$")] | None = None  # docker compose -p
    components: dict[_COMPONENT, _SERVICE_NAME] = field(default_factory=_default_components)
    replicas: dict[_COMPONENT, Annotated[int, Meta(ge=0)]] = field(default_factory=dict)
    rollout_timeout: Annotated[float, Meta(gt=0)] = 300
    poll_interval: Annotated[float, Meta(gt=0)] = 2


class EcsPlatform(Model, kw_only=True, tag_field="kind", tag="ecs"):
    kind: ClassVar[str] = "ecs"
    cluster: _SERVICE_NAME
    components: dict[_COMPONENT, _SERVICE_NAME] = field(default_factory=dict)  # component -> ECS service
    replicas: dict[_COMPONENT, Annotated[int, Meta(ge=0)]] = field(default_factory=dict)
    rollout_timeout: Annotated[float, Meta(gt=0)] = 900
    poll_interval: Annotated[float, Meta(gt=0)] = 5


class LocalPlatform(Model, kw_only=True, tag_field="kind", tag="local"):
    """The sandbox's platform: the demo app as processes on this machine (releases, pid files, logs under root)."""

    kind: ClassVar[str] = "local"
    root: _ABS_PATH  # releases/, run/ (pid files), logs/ live here
    components: dict[Literal["backend", "celery-worker"], _SERVICE_NAME] = field(default_factory=_default_components)
    replicas: dict[_COMPONENT, Annotated[int, Meta(ge=0, le=8)]] = field(
        default_factory=lambda: {"backend": 1, "celery-worker": 1})
    # loopback port of backend replica 1; replica N listens on port + N - 1
    ports: dict[Literal["backend"], Annotated[int, Meta(ge=1024, le=65000)]] = field(
        default_factory=lambda: {"backend": 18100})
    worker_concurrency: Annotated[int, Meta(ge=1, le=8)] = 1  # celery worker processes per replica
    health_path: Annotated[str, Meta(pattern=r"^/[A-Za-z0-9/_.-]*$")] = "/health"
    rollout_timeout: Annotated[float, Meta(gt=0)] = 60  # restart/scale/rollback wait this long for /health
    poll_interval: Annotated[float, Meta(gt=0)] = 0.2


Platform = KubernetesPlatform | ComposePlatform | EcsPlatform | LocalPlatform


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
    vacuum_full_bloat_pct: Annotated[float, Meta(ge=0, le=100)] = 30  # db.vacuum --full: heap bloat above this %
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


_REDIS_KEY = Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}$")]


class RedisSettings(Model, kw_only=True):
    url: str = "redis://127.0.0.1:6379/0"
    password: Secret | None = None
    socket_timeout: Annotated[float, Meta(gt=0)] = 5
    queues: list[_REDIS_KEY] = field(default_factory=lambda: ["celery"])  # Celery queues (Redis lists) in this db
    failed_queue: _REDIS_KEY = "celery:failed"  # list the application pushes failed tasks to (JSON records)
    scan_cap: Annotated[int, Meta(ge=1, le=1_000_000)] = 100_000  # cache.keys/delete: keys SCAN may visit per run


_AWS_NAME = Annotated[str, Meta(pattern=r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$", max_length=40)]


class VolumeSettings(Model, kw_only=True):
    """An EBS volume mounted on a host: `id` (vol-...) or its `Name` tag, plus where it is mounted."""

    host: str
    mount: Annotated[str, Meta(pattern=r"^/[A-Za-z0-9._/@+-]*$")]
    id: Annotated[str, Meta(pattern=r"^vol-[0-9a-f]{8,17}$")] | None = None
    name: Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")] | None = None


class AwsSettings(Model, kw_only=True):
    region: Annotated[str, Meta(pattern=r"^[a-z]{2}(-[a-z]+)+-[0-9]$")] = "ap-south-1"
    profile: str | None = None
    endpoint_url: str | None = None  # local AWS (moto) for sandbox and tests
    max_attempts: Annotated[int, Meta(ge=1, le=20)] = 5
    connect_timeout: float = 10
    read_timeout: float = 60
    snapshot_prefix: _AWS_NAME = "indostar-ops"  # rds.snapshot ids: <prefix>-<env>-<UTC date>-<run or label>
    snapshot_keep: Annotated[int, Meta(ge=1, le=100)] = 7  # rds.prune keeps this many of our snapshots
    snapshot_wait_s: Annotated[float, Meta(gt=0)] = 3600  # rds.snapshot waits this long for `available`
    volumes: list[VolumeSettings] = field(default_factory=list)  # volume.resize --host H --mount M
    snapshot_before_resize: bool | None = None  # EBS snapshot before volume.resize; default: production tier
    volume_wait_s: Annotated[float, Meta(gt=0)] = 1800  # volume.resize waits this long for `optimizing`
    backup_bucket: Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")] | None = None
    backup_prefix: Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,200}$")] = "config-backups"
    alarm_prefix: _AWS_NAME = "indostar"  # monitor.apply-alarms names: <prefix>-<env>-<metric>-<level>
    alarm_actions: list[Annotated[str, Meta(pattern=r"^arn:aws[a-z-]*:[a-z0-9-]+:[a-z0-9-]*:[0-9]{12}:.+$")]] = \
        field(default_factory=list)  # SNS topics notified when an alarm fires
    app_namespace: str = "IndoStar/Application"  # custom metrics (Errors, PaymentFailures)


class AlbSettings(Model, kw_only=True):
    load_balancer: Annotated[str, Meta(pattern=r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,30}[A-Za-z0-9])?$")]
    listener_port: Annotated[int, Meta(ge=1, le=65535)] = 443
    target_group: str | None = None
    maintenance_priority: Annotated[int, Meta(ge=1, le=50000)] = 1  # the maintenance rule's priority (1 = first)


_API_ID = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,64}\Z")]  # goes into API paths: no '/', '..', '?'


class StatusPageSettings(Model, kw_only=True):
    """An Atlassian-Statuspage-compatible API: <url>/pages/<page_id>/incidents..."""

    url: Annotated[str, Meta(pattern=r"^https?://[^\s?#]+\Z")]  # e.g. https://api.statuspage.io/v1
    page_id: _API_ID
    api_key: Secret | None = None
    component_ids: list[_API_ID] = field(default_factory=list)


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


# ---------------------------------------------------------------- diagnose, monitor, incidents, payments

_IDENT = Annotated[str, Meta(pattern=r"^[a-z_][a-z0-9_]*$", max_length=63)]  # a plain SQL identifier
# one read-only statement (SELECT/WITH, no ';' inside); it also runs in a READ ONLY transaction
_READ_SQL = Annotated[str, Meta(pattern=r"^\s*(?i:select|with)\b[^;]*;?\s*$")]
_HTTP_URL = Annotated[str, Meta(pattern=r"^https?://[A-Za-z0-9._~:/?#@!$&'()*+,=%-]+$")]
_SLUG = Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]


class SentrySettings(Model, kw_only=True):
    """Sentry's REST API: top unresolved issues and their event counts (diagnose.errors/payments)."""

    url: _HTTP_URL = "https://sentry.io"
    organization: _SLUG
    project: _SLUG | None = None
    token: Secret
    top: Annotated[int, Meta(ge=1, le=100)] = 10
    events_warning: Annotated[int, Meta(ge=0)] = 50  # events/hour of one unresolved issue
    events_critical: Annotated[int, Meta(ge=0)] = 500


class BusinessMetric(Model, kw_only=True):
    """A business metric from read-only SQL; may use %(since)s and %(until)s (timestamptz) for the period."""

    sql: _READ_SQL
    unit: str = ""
    warning: float | None = None  # critical < warning: lower is worse (orders per hour)
    critical: float | None = None


class RazorpaySettings(Model, kw_only=True):
    api_url: _HTTP_URL = "https://api.razorpay.com"
    key_id: Secret
    key_secret: Secret
    webhook_secret: Secret | None = None


class ReconcileHook(Model, kw_only=True):
    """How the backend marks a payment captured: POST to `url`, or `command` (+ payment id, order id) on `host`."""

    url: _HTTP_URL | None = None
    token: Secret | None = None  # sent as a Bearer token to `url`
    command: list[str] | None = None
    host: str | None = None


class PaymentsSettings(Model, kw_only=True):
    """The application's payments table (runbook columns: razorpay_payment_id, order_id, amount, status, created_at)."""

    schema: _IDENT = "public"
    table: _IDENT = "payments"
    razorpay: RazorpaySettings | None = None
    reconcile_hook: ReconcileHook | None = None
    rate_per_s: Annotated[float, Meta(gt=0, le=100)] = 5  # Razorpay API calls per second during reconcile
    max_per_run: Annotated[int, Meta(ge=1)] = 500


class IncidentSettings(Model, kw_only=True):
    """Where incidents live: a table in the application database's ops schema, or a JSON file (sandbox)."""

    store: Literal["postgres", "file"] = "postgres"
    schema: _IDENT = "ops"
    path: str | None = None  # the file store


class DiagnoseSettings(Model, kw_only=True):
    probe_timeout_s: Annotated[float, Meta(gt=0, le=600)] = 10
    seq_scan_min_rows: Annotated[int, Meta(ge=0)] = 10000  # diagnose.slow: tables this large read by seq scans


class SandboxSettings(Model, kw_only=True):
    moto_port: int = 14566
    nginx_port: int = 18088
    services_port: int = 14580  # fake Sentry/status pages/Razorpay/chat (indostar_ops/sandbox_services.py)


class Urls(Model, kw_only=True):
    site: str | None = None
    api: str | None = None
    health: str | None = None
    status_page: str | None = None


# ---------------------------------------------------------------- environment


class Environment(Model, kw_only=True, dict=True):
    """One environment (sandbox, staging, prod...) as the steps see it."""

    name: Name
    description: str = ""
    tier: Literal["production", "staging", "development", "sandbox"]
    timezone: str = "Asia/Kolkata"
    maintenance: MaintenanceSettings = field(default_factory=MaintenanceSettings)
    connection: Literal["ssh", "local"] = "ssh"
    ssh: SSHSettings = field(default_factory=SSHSettings)
    parallelism: Annotated[int, Meta(ge=1, le=512)] = 32
    groups: dict[Name, Group] = field(default_factory=dict)
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
    sentry: SentrySettings | None = None
    status_pages: dict[_SLUG, _HTTP_URL] = field(default_factory=dict)  # provider -> Statuspage /api/v2/status.json
    business_metrics: dict[_SLUG, BusinessMetric] = field(default_factory=dict)
    export_queries: dict[_SLUG, _READ_SQL] = field(default_factory=dict)  # db.export --query NAME
    payments: PaymentsSettings | None = None
    incidents: IncidentSettings = field(default_factory=IncidentSettings)
    diagnose: DiagnoseSettings = field(default_factory=DiagnoseSettings)

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
        for i, volume in enumerate(self.aws.volumes if self.aws else []):
            if volume.host not in seen:
                found.append((("aws", "volumes", str(i), "host"), f"unknown host {volume.host!r} (known: "
                              f"{', '.join(seen) or 'none'})"))
            if (volume.id is None) == (volume.name is None):
                found.append((("aws", "volumes", str(i)), "give exactly one of 'id' (vol-...) or 'name' (Name tag)"))
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
                jump = next((j for j in (host.jump, group.jump, self.ssh.jump) if j is not None), None)
                explicit = {k for k, v in (("address", host.address), ("port", host.port), ("user", host.user))
                            if v is not None}
                explicit |= {k for k in ("user", "port") if getattr(self.ssh, k) != _SSH_DEFAULTS[k]}
                found[name] = HostTarget(
                    name=name,
                    groups=(group_name,),
                    address=host.address or name,
                    port=host.port or self.ssh.port,
                    user=host.user or self.ssh.user,
                    connection=host.connection or self.connection,
                    settings=settings,
                    become=self.ssh.become if host.become is None else host.become,
                    jump=jump_hops(jump),
                    explicit=frozenset(explicit),
                )
        return list(found.values())

    def secrets(self) -> Iterator[Secret]:
        yield from _walk_secrets(self)

    def public_dict(self) -> dict[str, Any]:
        """The environment as data, secrets shown as their references (for journal and backups)."""
        return _drop_none(msgspec.to_builtins(self, enc_hook=str))


_SSH_DEFAULTS = {"user": SSHSettings().user, "port": SSHSettings().port}


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
