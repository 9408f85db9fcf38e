"""Shared by the app.* tests: run a task in this process, exactly as `indostar-ops TASK ... --json` would.

A few tests per backend run the real CLI in a subprocess; the rest use this to keep the files fast
(start-up with the kubernetes client costs a second or more per process on a loaded machine).
"""

from __future__ import annotations

import json
from typing import Any

import pytest


@pytest.fixture(name="task")
def task_fixture(capsys: pytest.CaptureFixture[str]) -> Any:
    from indostar_ops.__main__ import program

    def run(*args: str) -> tuple[int, dict[str, Any]]:
        capsys.readouterr()
        try:
            program.run(["indostar-ops", *args, "--json"])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        return code, json.loads(capsys.readouterr().out)

    return run


def targets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    assert "steps" in doc, doc
    return [t for s in doc["steps"] for t in s["targets"]]
