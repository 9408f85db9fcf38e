"""Playbooks: validated with file and line before anything runs; on_failure and always sections run as promised."""

from __future__ import annotations

from pathlib import Path

import pytest

from indostar_ops import Context, Runner
from indostar_ops.errors import UsageError
from indostar_ops.playbook import load_playbook
from indostar_ops.registry import STEPS
from tests.support import InventoryDir, cli_json, run_cli
from tests.test_engine import local_env


@pytest.fixture
def test_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(STEPS, "test.touch-flag", "tests.test_engine:TouchFlag")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "book.yml"
    path.write_text(text)
    return path


def test_unknown_step_is_rejected_with_file_and_line(tmp_path: Path) -> None:
    """A misspelt step name names the file, the line and the nearest known step."""
    path = write(tmp_path, "name: x\nphases:\n  - name: execute\n    steps:\n      - step: logs.install-rotaton\n")
    with pytest.raises(UsageError) as err:
        load_playbook(str(path))
    assert f"{path}:5: unknown step 'logs.install-rotaton' (did you mean 'logs.install-rotation'?)" in str(err.value)


def test_bad_argument_is_rejected_with_file_and_line(tmp_path: Path) -> None:
    """An argument the step does not take is an error naming the line, and the CLI exits 2 running nothing."""
    path = write(tmp_path, "phases:\n  - name: execute\n    steps:\n      - step: disk.check\n"
                           "        with: {group: [web]}\n")
    with pytest.raises(UsageError) as err:
        load_playbook(str(path))
    assert f"{path}:4: bad arguments for step 'disk.check'" in str(err.value)
    proc = run_cli("playbook.run", str(path), "--env", "sandbox")
    assert proc.returncode == 2 and "bad arguments" in proc.stderr
    assert not (tmp_path / "journal").exists()


def test_always_runs_after_a_failure_and_on_failure_only_then(
    inventory: InventoryDir, tmp_path: Path, test_steps: None,
) -> None:
    """A failing step skips the rest of the main phases, then on_failure and always both run."""
    env = local_env(inventory, tmp_path / "h", ["a"])
    book = load_playbook(str(write(tmp_path, """
phases:
  - name: execute
    steps:
      - {step: test.touch-flag, with: {fail_on: a}}
      - step: test.touch-flag
on_failure:
  - step: disk.check
always:
  - step: test.touch-flag
""")))
    with Context(env) as ctx:
        result = Runner(ctx).run([s.build() for s in book.main], task="t",
                                 on_failure=[s.build() for s in book.on_failure],
                                 always=[s.build() for s in book.always])
    assert [(r.step, r.status) for r in result.results] == [
        ("test.touch-flag", "failed"), ("test.touch-flag", "skipped"), ("disk.check", "ok"),
        ("test.touch-flag", "changed")]
    assert (tmp_path / "h/a/flag").exists()


def test_only_and_skip_select_by_step_or_tag() -> None:
    """--skip leaves out a tagged step; the shipped playbook runs on the sandbox from the CLI."""
    code, doc = cli_json("playbook.run", "disk-hygiene", "--env", "sandbox", "--skip", "logs")
    assert code == 0
    assert [s["step"] for s in doc["steps"]] == ["disk.check"]
    code, doc = cli_json("playbook.run", "disk-hygiene", "--env", "sandbox", "--check")
    assert code == 0 and [s["step"] for s in doc["steps"]] == ["logs.install-rotation", "disk.check"]
