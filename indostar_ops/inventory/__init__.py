"""Inventory: one validated YAML file per environment, optionally extending a shared base.

`model` holds the typed sections, `loader` reads and validates a file, and
`diagnostics` (imported only for a bad file) turns a validation error into
file:line, the dotted key and the nearest known key.
"""

from __future__ import annotations

from .loader import inventory_dir, list_environments, load_environment, sandbox_root
from .model import (
    AlbSettings,
    AwsSettings,
    CertbotSettings,
    CertificateSettings,
    ChatSettings,
    ComposePlatform,
    DatabaseSettings,
    DockerSettings,
    EcsPlatform,
    Environment,
    EscalationLevel,
    Group,
    Host,
    HostSettings,
    HostTarget,
    KubernetesPlatform,
    LogrotatePolicy,
    MaintenanceSettings,
    MaintenanceWindow,
    Model,
    NginxSettings,
    NotificationSettings,
    Platform,
    RedisSettings,
    SandboxSettings,
    SSHSettings,
    StatusPageSettings,
    Threshold,
    Thresholds,
    Urls,
)

__all__ = [
    "AlbSettings", "AwsSettings", "CertbotSettings", "CertificateSettings", "ChatSettings", "ComposePlatform",
    "DatabaseSettings", "DockerSettings", "EcsPlatform", "Environment", "EscalationLevel", "Group", "Host",
    "HostSettings", "HostTarget", "KubernetesPlatform", "LogrotatePolicy", "MaintenanceSettings",
    "MaintenanceWindow", "Model", "NginxSettings", "NotificationSettings", "Platform", "RedisSettings",
    "SSHSettings", "SandboxSettings", "StatusPageSettings", "Threshold", "Thresholds", "Urls",
    "inventory_dir", "list_environments", "load_environment", "sandbox_root",
]
