"""Playbooks: named phases of steps with arguments, plus `on_failure` and `always` sections.

    name: disk-hygiene
    description: ...
    phases:
      - name: execute
        steps:
          - step: logs.install-rotation
            with: {groups: [web, workers]}
            tags: [logs]
    on_failure: []
    always:
      - step: disk.check

Everything is validated before anything runs: an unknown step or a bad argument is an error naming
the file and line.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UsageError
from .registry import step_class
from .step import Step
from .yamlfile import LineMap, nearest_line, read_yaml_mapping

__all__ = ["Playbook", "StepSpec", "list_playbooks", "load_playbook", "playbooks_dir"]


@dataclass(frozen=True)
class StepSpec:
    step: str
    args: dict[str, Any]
    phase: str
    tags: tuple[str, ...] = ()
    where: str = "?"

    def build(self) -> Step[Any]:
        instance = step_class(self.step)(**self.args)
        instance.phase = self.phase
        return instance


@dataclass
class Playbook:
    name: str
    path: Path
    description: str = ""
    main: list[StepSpec] = field(default_factory=list)
    on_failure: list[StepSpec] = field(default_factory=list)
    always: list[StepSpec] = field(default_factory=list)

    def select(self, only: list[str] | None = None, skip: list[str] | None = None) -> list[StepSpec]:
        """The main steps, filtered by step name or tag (`--only`, `--skip`)."""
        def matches(spec: StepSpec, names: list[str]) -> bool:
            return spec.step in names or bool(set(spec.tags) & set(names))

        chosen = [s for s in self.main if not only or matches(s, only)]
        return [s for s in chosen if not skip or not matches(s, skip)]


def playbooks_dir() -> Path:
    configured = os.environ.get("INDOSTAR_PLAYBOOKS_DIR")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parent.parent / "playbooks"


def list_playbooks() -> list[str]:
    return sorted(p.stem for p in playbooks_dir().glob("*.yml"))


def load_playbook(name: str) -> Playbook:
    path = Path(name) if name.endswith((".yml", ".yaml")) else playbooks_dir() / f"{name}.yml"
    if not path.is_file():
        raise UsageError(f"no playbook {name!r} ({path})", hint=f"known playbooks: {', '.join(list_playbooks())}")
    data, lines = read_yaml_mapping(path)
    unknown = set(data) - {"name", "description", "phases", "on_failure", "always"}
    if unknown:
        key = sorted(unknown)[0]
        raise UsageError(f"{nearest_line((key,), lines)}: unknown playbook key {key!r}",
                         hint="allowed: name, description, phases, on_failure, always")
    book = Playbook(name=str(data.get("name", path.stem)), path=path, description=str(data.get("description", "")))
    for index, phase in enumerate(data.get("phases") or []):
        loc = ("phases", str(index))
        if not isinstance(phase, dict) or "name" not in phase:
            raise UsageError(f"{nearest_line(loc, lines)}: each phase needs a name and steps")
        book.main += _specs(phase.get("steps") or [], str(phase["name"]), (*loc, "steps"), lines)
    book.on_failure = _specs(data.get("on_failure") or [], "on_failure", ("on_failure",), lines)
    book.always = _specs(data.get("always") or [], "always", ("always",), lines)
    return book


def _specs(entries: Any, phase: str, loc: tuple[str, ...], lines: LineMap) -> list[StepSpec]:
    if not isinstance(entries, list):
        raise UsageError(f"{nearest_line(loc, lines)}: expected a list of steps")
    specs = []
    for index, entry in enumerate(entries):
        where = nearest_line((*loc, str(index)), lines)
        if isinstance(entry, str):
            entry = {"step": entry}
        if not isinstance(entry, dict) or "step" not in entry:
            raise UsageError(f"{where}: each entry needs `step: <name>` (and optional `with:`, `tags:`)")
        extra = set(entry) - {"step", "with", "tags"}
        if extra:
            raise UsageError(f"{where}: unknown key {sorted(extra)[0]!r} in step entry (allowed: step, with, tags)")
        args = entry.get("with") or {}
        try:
            cls = step_class(str(entry["step"]))
            inspect.signature(cls).bind(**args)
        except UsageError as exc:
            raise UsageError(f"{where}: {exc.message}", hint=exc.hint) from None
        except TypeError as exc:
            raise UsageError(f"{where}: bad arguments for step {entry['step']!r}: {exc}",
                             hint=f"accepted: {inspect.signature(cls)}") from None
        specs.append(StepSpec(str(entry["step"]), dict(args), phase, tuple(entry.get("tags") or ()), where))
    return specs
