"""Runbook "Planned Maintenance" step 2 ("Backup configuration"): configuration to S3, no secrets."""

from __future__ import annotations

from invoke import task

from ._help import common


@task(help=common(label="folder under the dated prefix instead of the run id (re-run with it: only changes upload)"))
def config(c, env=None, check=False, json=False, yes=False, label=""):
    """Rendered inventory (secret references only), hosts' nginx/logrotate configs, compose file -> S3.

    Under s3://<aws.backup_bucket>/<aws.backup_prefix>/<env>/<UTC date>/<run id or label>/ with a
    manifest; files already there with the same content are not uploaded again (idempotent per run).
    """
    from ..cli import run_steps
    from ..steps.aws.backup import BackupConfig

    run_steps("backup.config", env=env, check=check, json=json, yes=yes,
              build=lambda _env: [BackupConfig(label or None)])
