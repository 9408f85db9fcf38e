"""Playbooks: run or show any playbook in playbooks/, list the steps they can use."""

from __future__ import annotations

from invoke import task

from ._help import common


def _names(value: str) -> list[str]:
    return [v for v in value.split(",") if v]


@task(help=common(name="playbook name (playbooks/<name>.yml) or path",
                  only="comma-separated step names or tags to run (others skipped)",
                  skip="comma-separated step names or tags to leave out"))
def run(c, name, env=None, check=False, json=False, yes=False, only="", skip=""):
    """Run a playbook: its phases in order, on_failure if a step failed, always at the end."""
    from ..cli import Sections, fail, run_steps
    from ..errors import IndostarError
    from ..playbook import load_playbook

    try:
        book = load_playbook(name)
    except IndostarError as exc:
        fail(exc, json=json)
    run_steps(f"playbook.run {book.name}", env=env, check=check, json=json, yes=yes,
              build=lambda _env: Sections([s.build() for s in book.select(_names(only), _names(skip))],
                                          [s.build() for s in book.on_failure], [s.build() for s in book.always]))


@task(help={"name": "playbook name or path", "only": "as for playbook.run", "skip": "as for playbook.run"})
def show(c, name, only="", skip=""):
    """Print a playbook's plan: phases, steps, arguments, where each is defined."""
    from ..cli import fail
    from ..errors import IndostarError
    from ..playbook import load_playbook

    try:
        book = load_playbook(name)
    except IndostarError as exc:
        fail(exc, json=False)
    print(f"{book.name}: {book.description}".rstrip(": "))
    chosen = set(map(id, book.select(_names(only), _names(skip))))
    for section, specs in (("", book.main), ("on_failure", book.on_failure), ("always", book.always)):
        for spec in specs:
            mark = "" if section or id(spec) in chosen else "  (skipped)"
            args = " ".join(f"{k}={v!r}" for k, v in spec.args.items())
            print(f"  [{spec.phase}] {spec.step} {args}{mark}".rstrip() + f"    # {spec.where}")


@task
def steps(c):
    """List the step names playbooks can use."""
    from ..registry import known_steps

    print("\n".join(known_steps()))
