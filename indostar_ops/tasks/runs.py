"""The journal: what ran, when, by whom, and what it did."""

from __future__ import annotations

from invoke import task


@task(help={"env": "read the journal directory of this environment", "json": "JSON output",
            "limit": "how many runs (newest first)"})
def list(c, env=None, json=False, limit=20):
    """List recent runs, newest first."""
    from ..cli import fail
    from ..errors import IndostarError
    from ..journal import journal_dir, list_runs
    from ..report import print_json

    try:
        directory = journal_dir(_env_or_none(env))
        runs = list_runs(directory, limit=int(limit)) if directory.is_dir() else []
    except IndostarError as exc:
        fail(exc, json=json)
    for run in runs:  # a window (or locked playbook) that never ended is left open: say how to resume it
        if run["status"] == "unfinished" and not run["check"] and run["env"] and run["task"]:
            task_name, _, book = str(run["task"]).partition(" ")
            if task_name not in ("maintenance.window", "playbook.run"):
                continue
            again = f"invoke {task_name} {book + ' ' if book else ''}--env {run['env']} --resume {run['run_id']}"
            run["open"] = f"left open (killed, or still running): resume with {again}"
    if json:
        print_json({"journal_dir": str(directory), "runs": runs})
        return
    for run in runs:
        counts = run["counts"] or {}
        summary = " ".join(f"{k}={v}" for k, v in counts.items() if v)
        print(f"{run['run_id']}  {run['task'] or '?':28} {run['user'] or '?':10} "
              f"{'check ' if run['check'] else ''}{run['status']:10} {summary}")
        if run.get("open"):
            print(f"    {run['open']}")
    if not runs:
        print(f"no runs in {directory}")


@task(help={"run_id": "run id (or a unique prefix)", "env": "environment whose journal to read",
            "json": "print the raw journal records as JSON"})
def show(c, run_id, env=None, json=False):
    """Show one run's journal: every step, target, action and result."""
    from ..cli import fail
    from ..errors import IndostarError
    from ..journal import journal_dir, load_run
    from ..report import print_json

    try:
        records = load_run(journal_dir(_env_or_none(env)), run_id)
    except IndostarError as exc:
        fail(exc, json=json)
    if json:
        print_json({"run_id": run_id, "records": records})
        return
    for r in records:
        fields = {k: v for k, v in r.items() if k not in {"ts", "run_id", "event"}}
        print(f"{r.get('ts', '')}  {r.get('event', ''):14} " + " ".join(f"{k}={v}" for k, v in fields.items()))


def _env_or_none(name: str | None):
    import os

    from ..cli import open_environment

    name = name or os.environ.get("INDOSTAR_ENV")
    return open_environment(name) if name else None
