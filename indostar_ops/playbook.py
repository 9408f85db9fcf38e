"""Playbooks: named phases of steps with arguments, plus `on_failure` and `always` sections.

    name: disk-hygiene
    description: ...
    lock: false                   # true: take the environment's maintenance lock for the run
    phases:
      - name: execute
        gate: true                # run only if every earlier phase succeeded (default)
        deadline: true            # no step starts past the run's deadline (false: verify still runs)
        select: true              # --only/--skip apply here (false: guards, backup, verify always run)
        strict: false             # true: a check answering CRITICAL fails the phase (preflight)
        budget: 45m               # no step of this phase starts later than 45 min after the phase began
        steps:
          - step: logs.install-rotation
            with: {groups: [web, workers]}
            tags: [logs]
            serial: 2             # host steps: 2 hosts at a time (or "25%")
            max_fail_percent: 0   # stop the remaining batches once more than this % failed
    on_failure: []
    always:
      - step: disk.check
    environments:                 # per-environment overrides: the steps of a phase, replaced
      sandbox:
        execute:
          - step: disk.check

Everything is validated before anything runs: an unknown step (including one another part of
the project has not registered yet: it FAILS, it is never skipped), a bad argument, a bad batch
setting is an error naming the file and line.
"""

from __future__ import annotations

import inspect
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UsageError
from .registry import step_class
from .step import Step
from .yamlfile import LineMap, nearest_line, read_yaml_mapping

if TYPE_CHECKING:
    from .runner import Phase

__all__ = ["PhaseSpec", "Playbook", "StepSpec", "list_playbooks", "load_playbook", "playbooks_dir"]

_SERIAL = re.compile(r"^([1-9][0-9]*|([1-9][0-9]?|100)%)$")


@dataclass(frozen=True)
class StepSpec:
    step: str
    args: dict[str, Any]
    phase: str
    tags: tuple[str, ...] = ()
    where: str = "?"
    serial: int | str | None = None
    max_fail_percent: float | None = None

    def build(self) -> Step[Any]:
        instance = step_class(self.step)(**self.args)
        instance.phase = self.phase
        instance._serial = self.serial  # batching is not part of the step's identity
        instance._max_fail_percent = self.max_fail_percent
        return instance


@dataclass
class PhaseSpec:
    name: str
    steps: list[StepSpec] = field(default_factory=list)
    gate: bool = True
    deadline: bool = True
    select: bool = True
    strict: bool = False
    budget: float | None = None  # seconds


@dataclass
class Playbook:
    name: str
    path: Path
    description: str = ""
    phases: list[PhaseSpec] = field(default_factory=list)
    on_failure: list[StepSpec] = field(default_factory=list)
    always: list[StepSpec] = field(default_factory=list)
    lock: bool = False
    environments: dict[str, dict[str, list[StepSpec]]] = field(default_factory=dict)

    @property
    def main(self) -> list[StepSpec]:
        return [s for p in self.phases for s in p.steps]

    def for_env(self, env_name: str) -> Playbook:
        """This playbook with the environment's overrides applied (the steps of a phase replaced)."""
        overrides = self.environments.get(env_name)
        if not overrides:
            return self
        phases = [PhaseSpec(p.name, list(overrides.get(p.name, p.steps)), p.gate, p.deadline, p.select, p.strict,
                            p.budget) for p in self.phases]
        return Playbook(self.name, self.path, self.description, phases, self.on_failure, self.always, self.lock)

    def select(self, only: list[str] | None = None, skip: list[str] | None = None) -> list[StepSpec]:
        """The main steps, filtered by step name or tag (`--only`, `--skip`) in selectable phases."""
        def matches(spec: StepSpec, names: list[str]) -> bool:
            return spec.step in names or bool(set(spec.tags) & set(names))

        chosen = []
        for phase in self.phases:
            for spec in phase.steps:
                if phase.select and ((only and not matches(spec, only)) or (skip and matches(spec, skip))):
                    continue
                chosen.append(spec)
        return chosen

    def build(self, only: list[str] | None = None, skip: list[str] | None = None) -> list[Phase]:
        """Runner phases (steps built) after --only/--skip."""
        from .runner import Phase

        chosen = set(map(id, self.select(only, skip)))
        return [Phase(p.name, [s.build() for s in p.steps if id(s) in chosen], gate=p.gate, deadline=p.deadline,
                      strict=p.strict, budget=p.budget) for p in self.phases]


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
    allowed = {"name", "description", "phases", "on_failure", "always", "lock", "environments"}
    unknown = set(data) - allowed
    if unknown:
        key = sorted(unknown)[0]
        raise UsageError(f"{nearest_line((key,), lines)}: unknown playbook key {key!r}",
                         hint="allowed: " + ", ".join(sorted(allowed)))
    book = Playbook(name=str(data.get("name", path.stem)), path=path, description=str(data.get("description", "")),
                    lock=_flag(data, "lock", False, (), lines))
    for index, phase in enumerate(data.get("phases") or []):
        loc = ("phases", str(index))
        if not isinstance(phase, dict) or "name" not in phase:
            raise UsageError(f"{nearest_line(loc, lines)}: each phase needs a name and steps")
        extra = set(phase) - {"name", "steps", "gate", "deadline", "select", "strict", "budget"}
        if extra:
            raise UsageError(f"{nearest_line(loc, lines)}: unknown phase key {sorted(extra)[0]!r} "
                             "(allowed: name, steps, gate, deadline, select, strict, budget)")
        budget = None
        if phase.get("budget") is not None:
            from .steps.window import parse_duration

            try:
                budget = parse_duration(str(phase["budget"])).total_seconds()
            except UsageError:
                raise UsageError(f"{nearest_line((*loc, 'budget'), lines)}: budget {phase['budget']!r}: write "
                                 "it as 45m, 1h or 1h30m") from None
        name = str(phase["name"])
        book.phases.append(PhaseSpec(name, _specs(phase.get("steps") or [], name, (*loc, "steps"), lines),
                                     gate=_flag(phase, "gate", True, loc, lines),
                                     deadline=_flag(phase, "deadline", True, loc, lines),
                                     select=_flag(phase, "select", True, loc, lines),
                                     strict=_flag(phase, "strict", False, loc, lines), budget=budget))
    book.on_failure = _specs(data.get("on_failure") or [], "on_failure", ("on_failure",), lines)
    book.always = _specs(data.get("always") or [], "always", ("always",), lines)
    environments = data.get("environments") or {}
    if not isinstance(environments, dict):
        raise UsageError(f"{nearest_line(('environments',), lines)}: expected env name -> phase -> steps")
    names = {p.name for p in book.phases}
    for env_name, overrides in environments.items():
        loc = ("environments", str(env_name))
        if not isinstance(overrides, dict):
            raise UsageError(f"{nearest_line(loc, lines)}: expected phase name -> list of steps")
        for phase_name, entries in overrides.items():
            if phase_name not in names:
                raise UsageError(f"{nearest_line((*loc, str(phase_name)), lines)}: no phase {phase_name!r} "
                                 f"to override (phases: {', '.join(sorted(names))})")
            book.environments.setdefault(str(env_name), {})[str(phase_name)] = _specs(
                entries or [], str(phase_name), (*loc, str(phase_name)), lines)
    return book


def _flag(data: dict[str, Any], key: str, default: bool, loc: tuple[str, ...], lines: LineMap) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise UsageError(f"{nearest_line((*loc, key), lines)}: {key} must be true or false, not {value!r}")
    return value


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
        extra = set(entry) - {"step", "with", "tags", "serial", "max_fail_percent"}
        if extra:
            raise UsageError(f"{where}: unknown key {sorted(extra)[0]!r} in step entry "
                             "(allowed: step, with, tags, serial, max_fail_percent)")
        serial = entry.get("serial")
        if serial is not None and (isinstance(serial, bool) or not _SERIAL.match(str(serial))):
            raise UsageError(f"{where}: serial must be a number of hosts (2) or a percentage (\"25%\"), "
                             f"not {serial!r}")
        max_fail = entry.get("max_fail_percent")
        if max_fail is not None and (isinstance(max_fail, bool) or not isinstance(max_fail, int | float)
                                     or not 0 <= max_fail <= 100):
            raise UsageError(f"{where}: max_fail_percent must be a number from 0 to 100, not {max_fail!r}")
        args = entry.get("with") or {}
        try:
            cls = step_class(str(entry["step"]))
            inspect.signature(cls).bind(**args)
        except UsageError as exc:
            raise UsageError(f"{where}: {exc.message}", hint=exc.hint) from None
        except TypeError as exc:
            raise UsageError(f"{where}: bad arguments for step {entry['step']!r}: {exc}",
                             hint=f"accepted: {inspect.signature(cls)}") from None
        if (serial is not None or max_fail is not None) and getattr(cls, "scope", "host") != "host":
            raise UsageError(f"{where}: serial/max_fail_percent only apply to host steps; "
                             f"{entry['step']!r} is not one")
        specs.append(StepSpec(str(entry["step"]), dict(args), phase, tuple(entry.get("tags") or ()), where,
                              serial if serial is None or str(serial).endswith("%") else int(serial),
                              None if max_fail is None else float(max_fail)))
    return specs
