"""Back up the environment's configuration to S3 (runbook "Planned Maintenance" step 2: "Backup configuration").

What is copied: the rendered inventory (secrets appear as their references, never
values), each host's logrotate config, nginx maintenance snippet and full nginx
config (`nginx -T`), and the compose platform's compose file. Every text passes
through the environment's redactor, so a secret value resolved earlier in the run
can never reach S3. Objects go, with a manifest (sha256 per file), into one folder
per run: `<backup_prefix>/<env>/<date>/<run id or label>/`. A resumed run (same run
id, or the same --label) finds its files and uploads only what differs, so it is
idempotent per run; a new run is a new backup and never overwrites an older one.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ...errors import IndostarError, UsageError
from ...step import Change, EnvTarget, Outcome, Plan
from . import AwsStep
from .errors import error_code

if TYPE_CHECKING:
    from ...context import Context

__all__ = ["BackupConfig"]

_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,80}$")
_READ = 'if [ -e "$1" ]; then exec cat -- "$1"; else exit 3; fi'


@dataclass(frozen=True)
class BackupState:
    bucket: str
    base: str
    files: dict[str, str]  # relative path -> text
    existing: dict[str, str | None]  # relative path -> md5 (ETag) of what is in S3, None if absent
    problems: list[str]


class BackupConfig(AwsStep[BackupState]):
    """Copy the environment's configuration (no secrets) to S3 under a dated prefix."""

    name = "backup.config"
    aws_calls = ("s3:GetObject", "s3:ListBucket", "s3:PutObject")

    def __init__(self, label: str | None = None) -> None:
        self.label = label

    def preflight(self, ctx: Context) -> None:
        super().preflight(ctx)
        if ctx.env.aws is None or not ctx.env.aws.backup_bucket:
            raise UsageError(f"backup.config: environment {ctx.env.name!r} has no aws.backup_bucket",
                             hint=f"set aws.backup_bucket in inventory/{ctx.env.name}.yaml")
        if self.label is not None and not _LABEL.match(self.label):
            raise UsageError(f"backup.config: label {self.label!r} must be letters, digits and ._-")

    def targets(self, ctx: Context) -> list[EnvTarget]:
        assert ctx.env.aws is not None
        return [EnvTarget(f"s3://{ctx.env.aws.backup_bucket}/{ctx.env.aws.backup_prefix}/{ctx.env.name}/",
                          kind="s3-prefix", id=ctx.env.aws.backup_bucket)]

    def check(self, ctx: Context, target: EnvTarget) -> BackupState:
        assert ctx.env.aws is not None
        bucket = str(ctx.env.aws.backup_bucket)
        run = self.label or (ctx.journal.run_id if ctx.journal is not None else "adhoc")
        day = datetime.now(UTC).strftime("%Y-%m-%d")
        if self.label is None and re.match(r"^\d{8}T", run):  # the run's own date (a resume after midnight)
            day = f"{run[:4]}-{run[4:6]}-{run[6:8]}"
        base = "/".join((ctx.env.aws.backup_prefix.strip("/"), ctx.env.name, day, run))
        files, problems = collect(ctx)
        redact = ctx.env.redactor.text
        files = {k: redact(v) for k, v in files.items()}
        files["manifest.json"] = json.dumps(
            {"environment": ctx.env.name, "files": {k: hashlib.sha256(v.encode()).hexdigest()
                                                    for k, v in sorted(files.items())},
             "problems": problems}, indent=2, sort_keys=True) + "\n"
        s3 = ctx.aws().client("s3")
        existing: dict[str, str | None] = {}
        for rel in files:
            try:
                head = s3.head_object(Bucket=bucket, Key=f"{base}/{rel}")
                existing[rel] = str(head.get("ETag", "")).strip('"')
            except Exception as exc:
                if error_code(exc) not in ("404", "NoSuchKey", "NotFound"):
                    raise
                existing[rel] = None
        return BackupState(bucket, base, files, existing, problems)

    def plan(self, state: BackupState) -> Plan:
        changes = []
        for rel, text in sorted(state.files.items()):
            md5 = hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()
            have = state.existing.get(rel)
            if have == md5:
                continue
            changes.append(Change(f"{'replace' if have else 'upload'} s3://{state.bucket}/{state.base}/{rel} "
                                  f"({len(text.encode())} bytes)", before=have, after=md5,
                                  params={"key": f"{state.base}/{rel}", "body": text}))
        data = {"bucket": state.bucket, "prefix": state.base + "/", "files": sorted(state.files),
                "problems": state.problems}
        if not changes:
            return Plan.nothing(f"s3://{state.bucket}/{state.base}/ already holds these {len(state.files)} files",
                                data=data)
        return Plan(changes, reason="; ".join(state.problems) or None, data=data)

    def apply(self, ctx: Context, target: EnvTarget, plan: Plan) -> Outcome:
        for change in plan.changes:
            key = change.params["key"]
            ctx.aws().call("s3", "put_object", summary=change.summary, journal_params=False,
                           Bucket=plan.data["bucket"], Key=key, Body=change.params["body"].encode(),
                           ContentType="application/json" if key.endswith(".json") else "text/plain",
                           ServerSideEncryption="AES256")
        return Outcome(reason=f"{len(plan.changes)} file(s) to s3://{plan.data['bucket']}/{plan.data['prefix']}"
                       + (f"; {'; '.join(plan.data['problems'])}" if plan.data["problems"] else ""))


def collect(ctx: Context) -> tuple[dict[str, str], list[str]]:
    """The configuration texts, by relative path; hosts that cannot be read are listed as problems."""
    files = {"inventory.json": json.dumps(ctx.env.public_dict(), indent=2, sort_keys=True, default=str) + "\n"}
    problems: list[str] = []
    for target in ctx.env.hosts():
        s = target.settings
        host = ctx.host(target)
        try:
            for rel, path in (("logrotate.conf", s.logrotate_config),
                              ("nginx-maintenance.conf", s.nginx.maintenance_snippet)):
                result = host.read(["sh", "-c", _READ, "sh", path], ok=(0, 3))
                if result.exit_code == 0:
                    files[f"hosts/{target.name}/{rel}"] = result.stdout
            dump = host.read([*s.nginx.command, "-T"], ok=range(256))
            if dump.exit_code == 0:
                files[f"hosts/{target.name}/nginx-T.conf"] = dump.stdout
        except IndostarError as exc:
            problems.append(f"{target.name}: not backed up ({exc.message})")
    platform = ctx.env.platform
    if platform is not None and platform.kind == "compose":
        hosts = [h for h in ctx.env.hosts() if h.name == platform.host]  # type: ignore[union-attr]
        if hosts:
            for name in ("compose.yaml", "docker-compose.yml"):
                path = posixpath.join(platform.project_dir, name)  # type: ignore[union-attr]
                try:
                    result = ctx.host(hosts[0]).read(["sh", "-c", _READ, "sh", path], ok=(0, 3))
                except IndostarError as exc:
                    problems.append(f"{platform.host}: {path} not backed up ({exc.message})")  # type: ignore[union-attr]
                    break
                if result.exit_code == 0:
                    files[f"platform/{name}"] = result.stdout
    elif platform is not None and platform.kind in ("kubernetes", "ecs"):
        problems.append(f"{platform.kind} manifests are not collected by backup.config yet")
    return files, problems
