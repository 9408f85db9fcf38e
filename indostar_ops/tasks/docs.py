"""The runbook regenerated from the code: `docs/RUNBOOK.md` from the tasks' and steps' metadata."""

from __future__ import annotations

from invoke import task


@task(help={"out": "file to write (default docs/RUNBOOK.md in the repository)",
            "check": "only say whether the file is up to date (exit 1 if stale); write nothing"})
def runbook(c, out=None, check=False):
    """Write docs/RUNBOOK.md: per runbook section, the tasks, flags, safety class and exit codes."""
    import sys
    from pathlib import Path

    from invoke.exceptions import Exit

    from ..inventory.model import REPO_ROOT
    from ..runbook_doc import generate

    target = Path(out) if out else REPO_ROOT / "docs" / "RUNBOOK.md"
    text = generate()
    current = target.read_text(encoding="utf-8") if target.is_file() else None
    if check:
        if current != text:
            sys.stderr.write(f"{target} is stale: run invoke docs.runbook\n")
            raise Exit(code=1)
        sys.stdout.write(f"{target} is up to date\n")
        return
    if current == text:
        sys.stdout.write(f"{target} is up to date\n")
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    sys.stdout.write(f"wrote {target}\n")
