"""The application platform behind one interface: kubernetes, compose, ecs, and the sandbox's local processes.

`backend_for(ctx)` picks the backend named by the inventory's `platform.kind`.
Backends are registered by name (module:Class) and imported only when used, so
`invoke --list` never imports the kubernetes client or boto3.
"""

from __future__ import annotations

from .base import (
    BACKENDS,
    Instance,
    LogLine,
    PlatformBackend,
    Revision,
    Rollout,
    backend_class,
    backend_for,
)

__all__ = ["BACKENDS", "Instance", "LogLine", "PlatformBackend", "Revision", "Rollout", "backend_class", "backend_for"]
