"""indostar-ops: the IndoStar Naturals runbook as idempotent, previewable steps.

    from indostar_ops import Context, Runner, load_environment
    from indostar_ops.steps.logrotate import InstallLogrotate

    env = load_environment("staging")
    with Context(env, check=True) as ctx:
        result = Runner(ctx).run([InstallLogrotate()], task="rotation-preview")

Names are imported lazily so `invoke --list` and `import indostar_ops` stay fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "Change",
    "Context",
    "Environment",
    "IndostarError",
    "Plan",
    "RunResult",
    "Runner",
    "Severity",
    "Step",
    "TargetResult",
    "list_environments",
    "load_environment",
]

_WHERE = {
    "Change": "step",
    "Context": "context",
    "Environment": "inventory",
    "IndostarError": "errors",
    "Plan": "step",
    "RunResult": "results",
    "Runner": "runner",
    "Severity": "severity",
    "Step": "step",
    "TargetResult": "results",
    "list_environments": "inventory",
    "load_environment": "inventory",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'indostar_ops' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
