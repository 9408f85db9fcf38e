"""docs/RUNBOOK.md generated from the code: per runbook section, the tasks that automate it.

Everything comes from metadata the code already carries: each task's docstring and flag help
(the `invoke` collection), the step classes behind it (`registry.STEPS`: read-only, destructive,
irreversible), whether it reports monitoring severities (it passes `monitoring=True`), whether it
asks for `--yes`, and which flags are limited to the maintenance window (their help says so).
The only hand-written part is which task namespaces belong to which runbook section; a task in
no section still appears, under "Other tasks". The output has no timestamps, so regenerating an
unchanged tree gives the same bytes (a test compares them).
"""

from __future__ import annotations

import inspect
from typing import Any

__all__ = ["SECTIONS", "generate", "task_facts"]

# (runbook section, task names or "namespace." prefixes), in the runbook's order
SECTIONS: list[tuple[str, list[str]]] = [
    ("Common Issues: all at once", ["diagnose.all"]),
    ("Issue 1: Application Down / 502 Bad Gateway", ["diagnose.app-down", "app."]),
    ("Issue 2: Slow Response Times", ["diagnose.slow", "db.slow-queries", "db.analyze", "cache."]),
    ("Issue 3: Payment Processing Failures", ["diagnose.payments", "payments.", "db.export"]),
    ("Issue 4: High Error Rate", ["diagnose.errors", "db.locks", "db.kill-long"]),
    ("Issue 5: Database Connection Pool Exhausted", ["diagnose.db-pool", "db.activity", "db.kill-idle",
                                                      "db.pool-advice"]),
    ("Issue 6: Celery Workers Not Processing Tasks", ["diagnose.celery", "celery."]),
    ("Issue 7: Out of Disk Space", ["diagnose.disk", "disk.", "logs.", "tmp.", "docker.", "volume."]),
    ("Incident Response", ["incident."]),
    ("Monitoring and Alerts", ["monitor."]),
    ("Planned Maintenance", ["maintenance.", "rds.", "backup."]),
    ("Database Maintenance", ["db."]),
    ("Certificate Renewal", ["certs."]),
    ("Reaching hosts", ["ssh."]),
    ("AWS", ["aws."]),
    ("Composition, audit and the sandbox", ["playbook.", "runs.", "sandbox.", "docs."]),
]
_COMMON = {"env", "check", "json", "yes"}
_WINDOW = __import__("re").compile(r"(?i)\b(inside|outside|only in|during) the (environment's )?(maintenance )?window")


def _collection() -> Any:
    """A fresh task collection: invoke's `get_arguments()` consumes each task's help dict, so a collection
    someone already parsed (the CLI, a remedy lookup) would document flags without their help."""
    import importlib
    import pkgutil

    from invoke import Collection

    from . import tasks

    fresh = Collection()
    for info in sorted(pkgutil.iter_modules(tasks.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            module = importlib.reload(importlib.import_module(f"{tasks.__name__}.{info.name}"))
            fresh.add_collection(Collection.from_module(module))
    return fresh


def task_facts(name: str, task: Any) -> dict[str, Any]:
    from .registry import STEPS, step_class

    args = {a.names[0]: a for a in task.get_arguments()}
    monitoring = "monitoring=True" in _source_with_helpers(task.body)
    step = step_class(name) if name in STEPS else None
    changes = "yes" in args
    if step is not None:
        read_only = bool(getattr(step, "read_only", False))
        destructive = bool(getattr(step, "destructive", False))
        irreversible = getattr(step, "irreversible", None)
    else:
        read_only, destructive, irreversible = not changes, False, None
    if read_only and not changes:
        safety = "read-only"
    elif destructive:
        safety = "destructive (previewed; opt-in flags)"
    else:
        safety = "changes"
    flags = []
    window = []
    for arg_name, arg in args.items():
        if arg_name in _COMMON:
            continue
        flag = arg_name.replace("_", "-")
        shown = flag if arg.positional else f"--{flag}"
        help_text = " ".join(str(arg.help or "").split())
        flags.append((shown, help_text))
        if _WINDOW.search(help_text):
            window.append(f"`{shown}`: {help_text}")
    doc = inspect.getdoc(task.body) or ""
    return {
        "name": name, "summary": doc.splitlines()[0] if doc else "", "flags": flags, "safety": safety,
        "irreversible": irreversible, "production_yes": changes,
        "takes_env": "env" in args, "takes_check": "check" in args, "window": window,
        "exit_codes": ("0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN" if monitoring
                       else "0 success, 1 a step failed, 2 usage/inventory/confirmation error"),
    }


def _source_with_helpers(body: Any) -> str:
    """The task body's source plus that of the module-level helpers it calls (`_run(...)`)."""
    import re

    source = inspect.getsource(body)
    module = inspect.getmodule(body)
    for called in set(re.findall(r"\b(_?[a-z][a-z0-9_]*)\(", source)):
        helper = getattr(module, called, None)
        if inspect.isfunction(helper) and helper is not body and helper.__module__ == body.__module__:
            source += inspect.getsource(helper)
    return source


def _section_of(name: str) -> str:
    for title, members in SECTIONS:
        for member in members:
            if name == member or (member.endswith(".") and name.startswith(member)):
                return title
    return "Other tasks"


def generate() -> str:
    namespace = _collection()
    grouped: dict[str, list[dict[str, Any]]] = {title: [] for title, _ in SECTIONS}
    grouped["Other tasks"] = []
    for name in sorted(namespace.task_names):
        grouped[_section_of(name)].append(task_facts(name, namespace[name]))
    lines = [
        "# Runbook tasks (generated)",
        "",
        "<!-- Generated by `invoke docs.runbook` from the tasks' and steps' own metadata; do not edit by hand."
        " A test fails when this file is stale. -->",
        "",
        "Every task takes `--env NAME` (default `$INDOSTAR_ENV`), `--check` (read and plan only: nothing is "
        "written on any backend) and `--json` (one JSON document on stdout). Tasks that change anything take "
        "`--yes`, which a production-tier environment requires when there is no terminal to confirm at "
        "(without it: exit 2, nothing executed).",
        "",
        "| section | tasks |",
        "|---|---|",
    ]
    for title, facts in grouped.items():
        if facts:
            anchor = "".join(c for c in title.lower().replace(" ", "-") if c.isalnum() or c == "-")
            lines.append(f"| [{title}](#{anchor}) | " + ", ".join(f"`{f['name']}`" for f in facts) + " |")
    for title, facts in grouped.items():
        if not facts:
            continue
        lines += ["", f"## {title}", ""]
        for f in facts:
            lines += [f"### `invoke {f['name']}`", "", f["summary"] or "(no description)", ""]
            safety = f["safety"]
            if f["production_yes"]:
                safety += "; production: `--yes` required without a terminal"
            lines.append(f"- Safety: {safety}")
            if f["irreversible"]:
                lines.append(f"- No undo: {f['irreversible']}")
            if f["window"]:
                lines += [f"- Maintenance window: {w}" for w in f["window"]]
            lines.append(f"- Exit codes: {f['exit_codes']}")
            if f["flags"]:
                lines.append("- Flags:")
                lines += [f"  - `{flag}`" + (f": {text}" if text else "") for flag, text in f["flags"]]
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"
