"""Playbooks: run or show any playbook in playbooks/, list the steps they can use."""

from __future__ import annotations

from invoke import task

from ._help import common


def _names(value: str) -> list[str]:
    return [v for v in value.split(",") if v]


@task(help=common(name="playbook name (playbooks/<name>.yml) or path",
                  only="comma-separated step names or tags to run (others skipped; selectable phases only)",
                  skip="comma-separated step names or tags to leave out (selectable phases only)",
                  resume="continue run RUN_ID: finished steps are re-checked and skipped, never repeated",
                  serial="host steps without their own `serial`: this many hosts (or N%) at a time",
                  max_fail_percent="host steps: stop the remaining batches once more than this % failed",
                  break_lock="(playbooks with lock: true) take over a STALE lock; shows what it breaks"))
def run(c, name, env=None, check=False, json=False, yes=False, only="", skip="", resume="", serial="",
        max_fail_percent="", break_lock=False):
    """Run a playbook: its phases in order (gates, undo on failure), on_failure if a step failed, always at the end."""
    from ..cli import Sections, fail, run_steps
    from ..errors import IndostarError
    from ..playbook import load_playbook

    try:
        from ..window import batch_options

        book = load_playbook(name)
        settings: dict = {"resume": resume or None, **batch_options(serial, max_fail_percent)}
    except IndostarError as exc:
        fail(exc, json=json)

    def build(environment):
        chosen = book.for_env(environment.name)
        return Sections(chosen.build(_names(only), _names(skip)), [s.build() for s in chosen.on_failure],
                        [s.build() for s in chosen.always])

    def runner(environment):
        if not book.lock:
            return settings
        from ..window import WindowOptions, lock_factory

        task_name = f"playbook.run {book.name}"
        return {**settings, "lock": lock_factory(environment, WindowOptions(break_lock=break_lock), task_name)}

    run_steps(f"playbook.run {book.name}", env=env, check=check, json=json, yes=yes, build=build, runner=runner)


@task(help={"name": "playbook name or path", "only": "as for playbook.run", "skip": "as for playbook.run",
            "env": "show it with this environment's overrides"})
def show(c, name, only="", skip="", env=None):
    """Print a playbook's plan: phases (gate, deadline), steps, arguments, batches, where each is defined."""
    from ..cli import fail
    from ..errors import IndostarError
    from ..playbook import load_playbook

    try:
        book = load_playbook(name)
        if env:
            book = book.for_env(env)
    except IndostarError as exc:
        fail(exc, json=False)
    print(f"{book.name}: {book.description}".rstrip(": ") + ("  [takes the environment's lock]" if book.lock else ""))
    chosen = set(map(id, book.select(_names(only), _names(skip))))

    def line(spec, mark: str = "") -> str:
        args = " ".join(f"{k}={v!r}" for k, v in spec.args.items())
        batch = f" serial={spec.serial}" if spec.serial else ""
        batch += f" max_fail_percent={spec.max_fail_percent:g}" if spec.max_fail_percent is not None else ""
        return f"    {spec.step} {args}{batch}{mark}".rstrip() + f"    # {spec.where}"

    for phase in book.phases:
        flags = [f for f, on in (("gated", phase.gate), ("stops at the deadline", phase.deadline),
                                 ("--only/--skip apply", phase.select), ("CRITICAL fails it", phase.strict),
                                 (f"budget {phase.budget or 0:g} s", phase.budget)) if on]
        print(f"  [{phase.name}] ({', '.join(flags) or 'always runs'})")
        for spec in phase.steps:
            print(line(spec, "" if id(spec) in chosen else "  (skipped)"))
    for section, specs in (("on_failure", book.on_failure), ("always", book.always)):
        if specs:
            print(f"  [{section}]")
            for spec in specs:
                print(line(spec))


@task
def steps(c):
    """List the step names playbooks can use."""
    from ..registry import known_steps

    print("\n".join(known_steps()))
