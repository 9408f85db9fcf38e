"""docs/RUNBOOK.md is generated from the tasks' and steps' metadata; the committed copy must be current."""

from __future__ import annotations

from pathlib import Path

from indostar_ops.runbook_doc import generate
from tests.support import REPO, run_cli


def test_committed_runbook_is_not_stale() -> None:
    """Regenerate now and compare: a task, flag, docstring or safety flag changed -> run `invoke docs.runbook`."""
    committed = (REPO / "docs" / "RUNBOOK.md").read_text(encoding="utf-8")
    assert committed == generate(), "docs/RUNBOOK.md is stale: run `invoke docs.runbook` and commit it"


def test_every_task_appears_with_safety_and_exit_codes() -> None:
    from indostar_ops.tasks import namespace

    text = generate()
    for name in namespace.task_names:
        block = text.split(f"### `invoke {name}`\n", 1)[1].split("\n### ", 1)[0]
        assert "- Safety: " in block and "- Exit codes: " in block, name
    diagnose = text.split("### `invoke diagnose.all`\n", 1)[1].split("\n### ", 1)[0]
    assert "- Safety: read-only" in diagnose and "0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN" in diagnose
    reconcile = text.split("### `invoke payments.reconcile`\n", 1)[1].split("\n### ", 1)[0]
    assert "production: `--yes` required" in reconcile and "No undo:" in reconcile
    assert "`--full`: VACUUM FULL" in text.split("### `invoke db.vacuum`\n", 1)[1].split("\n### ", 1)[0]


def test_docs_runbook_check_flag(tmp_path: Path) -> None:
    out = tmp_path / "RUNBOOK.md"
    assert run_cli("docs.runbook", "--out", str(out), "--check").returncode == 1 and not out.exists()
    assert run_cli("docs.runbook", "--out", str(out)).returncode == 0 and out.read_text() == generate()
    proc = run_cli("docs.runbook", "--out", str(out), "--check")
    assert proc.returncode == 0 and "up to date" in proc.stdout
