"""Step names -> step classes, for playbooks. Classes are imported only when a playbook uses them."""

from __future__ import annotations

import difflib
import importlib
from typing import Any

from .errors import UsageError

__all__ = ["STEPS", "known_steps", "step_class"]

_PG = "indostar_ops.steps.postgres"
STEPS: dict[str, str] = {
    "logs.install-rotation": "indostar_ops.steps.logrotate:InstallLogrotate",
    "disk.check": "indostar_ops.steps.disk:DiskCheck",
    "db.activity": f"{_PG}.activity:Activity",
    "db.locks": f"{_PG}.activity:Locks",
    "db.slow-queries": f"{_PG}.stats:SlowQueries",
    "db.bloat": f"{_PG}.stats:BloatReport",
    "db.vacuum": f"{_PG}.vacuum:Vacuum",
    "db.analyze": f"{_PG}.vacuum:Analyze",
    "db.reindex": f"{_PG}.reindex:Reindex",
    "db.kill-idle": f"{_PG}.sessions:KillIdle",
    "db.kill-long": f"{_PG}.sessions:KillLong",
    "db.pool-advice": f"{_PG}.pool:PoolAdvice",
    "certs.check": "indostar_ops.steps.certs:CertificateCheck",
    "certs.renew": "indostar_ops.steps.certs:RenewCertificates",
    "maintenance.install": "indostar_ops.steps.nginx:InstallMaintenancePage",
    "maintenance.on": "indostar_ops.steps.nginx:NginxMaintenanceOn",
    "maintenance.off": "indostar_ops.steps.nginx:NginxMaintenanceOff",
    "maintenance.status": "indostar_ops.steps.nginx:NginxMaintenanceStatus",
    "logs.cleanup": "indostar_ops.steps.cleanup:CleanupRotatedLogs",
    "tmp.cleanup": "indostar_ops.steps.cleanup:CleanupTempFiles",
    "docker.df": "indostar_ops.steps.docker:DockerDiskUsage",
    "docker.prune": "indostar_ops.steps.docker:DockerPrune",
    "disk.report": "indostar_ops.steps.disk_report:DiskReport",
    "rds.snapshot": "indostar_ops.steps.aws.rds:RdsSnapshot",
    "rds.snapshots": "indostar_ops.steps.aws.rds:RdsSnapshots",
    "rds.prune": "indostar_ops.steps.aws.rds:RdsPrune",
    "rds.status": "indostar_ops.steps.aws.rds:RdsStatus",
    "volume.modify": "indostar_ops.steps.aws.volume:VolumeModify",
    "volume.grow-fs": "indostar_ops.steps.aws.volume:GrowFilesystem",
    "maintenance.alb-on": "indostar_ops.steps.aws.alb:AlbMaintenanceOn",
    "maintenance.alb-off": "indostar_ops.steps.aws.alb:AlbMaintenanceOff",
    "maintenance.alb-status": "indostar_ops.steps.aws.alb:AlbMaintenanceStatus",
    "monitor.metrics": "indostar_ops.steps.aws.cloudwatch:MonitorMetrics",
    "monitor.alarms": "indostar_ops.steps.aws.cloudwatch:MonitorAlarms",
    "monitor.apply-alarms": "indostar_ops.steps.aws.cloudwatch:ApplyAlarms",
    "backup.config": "indostar_ops.steps.aws.backup:BackupConfig",
    "window.hours": "indostar_ops.steps.window:WindowHours",
    "window.notice": "indostar_ops.steps.window:WindowNotice",
    "window.baseline": "indostar_ops.steps.window:Baseline",
    "window.document": "indostar_ops.steps.window:DocumentState",
    "window.smoke": "indostar_ops.steps.window:Smoke",
    "notify.announce": "indostar_ops.steps.window:Announce",
    "notify.in-progress": "indostar_ops.steps.window:NotifyInProgress",
    "notify.finish": "indostar_ops.steps.window:NotifyFinish",
    "ssh.check": "indostar_ops.steps.ssh_check:SSHCheck",
    "app.status": "indostar_ops.steps.app:AppStatus",
    "app.logs": "indostar_ops.steps.app:AppLogs",
    "app.health": "indostar_ops.steps.app:AppHealth",
    "app.restart": "indostar_ops.steps.app:AppRestart",
    "app.scale": "indostar_ops.steps.app:AppScale",
    "app.resources": "indostar_ops.steps.app:AppResources",
    "app.rollback": "indostar_ops.steps.app:AppRollback",
    "celery.status": "indostar_ops.steps.celery:CeleryStatus",
    "celery.restart": "indostar_ops.steps.celery:CeleryRestart",
    "celery.scale": "indostar_ops.steps.celery:CeleryScale",
    "celery.retry-failed": "indostar_ops.steps.celery:CeleryRetryFailed",
    "celery.purge": "indostar_ops.steps.celery:CeleryPurge",
    "cache.info": "indostar_ops.steps.cache:CacheInfo",
    "cache.keys": "indostar_ops.steps.cache:CacheKeys",
    "cache.delete": "indostar_ops.steps.cache:CacheDelete",
    "cache.flush": "indostar_ops.steps.cache:CacheFlush",
    "diagnose.all": "indostar_ops.steps.diagnose:Diagnose",
    "diagnose.app-down": "indostar_ops.steps.diagnose:DiagnoseAppDown",
    "diagnose.slow": "indostar_ops.steps.diagnose:DiagnoseSlow",
    "diagnose.payments": "indostar_ops.steps.diagnose:DiagnosePayments",
    "diagnose.errors": "indostar_ops.steps.diagnose:DiagnoseErrors",
    "diagnose.db-pool": "indostar_ops.steps.diagnose:DiagnoseDbPool",
    "diagnose.celery": "indostar_ops.steps.diagnose:DiagnoseCelery",
    "diagnose.disk": "indostar_ops.steps.diagnose:DiagnoseDisk",
    "monitor.check": "indostar_ops.steps.monitor_check:MonitorCheck",
    "monitor.report": "indostar_ops.steps.monitor_check:MonitorReport",
    "incident.open": "indostar_ops.steps.incident:IncidentOpen",
    "incident.update": "indostar_ops.steps.incident:IncidentUpdate",
    "incident.resolve": "indostar_ops.steps.incident:IncidentResolve",
    "incident.escalate": "indostar_ops.steps.incident:IncidentEscalate",
    "incident.list": "indostar_ops.steps.incident:IncidentList",
    "incident.postmortem": "indostar_ops.steps.incident:IncidentPostmortem",
    "payments.pending": "indostar_ops.steps.payments:PendingPayments",
    "payments.verify-webhook": "indostar_ops.steps.payments:VerifyWebhook",
    "payments.reconcile": "indostar_ops.steps.payments:Reconcile",
    "db.export": "indostar_ops.steps.export:Export",
}


def known_steps() -> list[str]:
    return sorted(STEPS)


def step_class(name: str) -> type[Any]:
    try:
        module, _, attr = STEPS[name].partition(":")
    except KeyError:
        close = difflib.get_close_matches(name, STEPS, n=1)
        raise UsageError(f"unknown step {name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""),
                         hint="invoke playbook.steps lists the known steps") from None
    return getattr(importlib.import_module(module), attr)
