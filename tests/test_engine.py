"""The engine as a library: runner semantics, check mode, retries, journal, redaction, lazy imports."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from indostar_ops import Context, Plan, Runner, Step
from indostar_ops.errors import ConfirmationRequired, TransientError
from indostar_ops.inventory import HostTarget
from indostar_ops.step import Change
from tests.support import REPO, InventoryDir, cli_json, run_cli


def local_env(inventory: InventoryDir, root: Path, hosts: list[str], **extra: Any) -> Any:
    """An environment of local 'hosts' (directories under root)."""
    entries = {}
    for name in hosts:
        (root / name).mkdir(parents=True, exist_ok=True)
        entries[name] = {"vars": {"tmp_dirs": [str(root / name)]}}
    inventory.write("lib", {"tier": "development", "connection": "local",
                            "groups": {"web": {"hosts": entries}}, **extra})
    return inventory.load("lib")


@dataclass
class FlagState:
    path: Path
    present: bool


class TouchFlag(Step[FlagState]):
    """Create a flag file in each host's directory (a minimal mutating step)."""

    name = "test.touch-flag"

    def __init__(self, fail_on: str | None = None) -> None:
        self.fail_on = fail_on

    def check(self, ctx: Context, target: HostTarget) -> FlagState:
        if target.name == self.fail_on:
            raise RuntimeError(f"{target.name} is broken")
        path = Path(target.settings.tmp_dirs[0]) / "flag"
        ctx.host(target).read(["true"])
        return FlagState(path, path.exists())

    def plan(self, state: FlagState) -> Plan:
        if state.present:
            return Plan.nothing(f"{state.path} exists")
        return Plan([Change(f"create {state.path}", before=None, after="flag")])

    def apply(self, ctx: Context, target: HostTarget, plan: Plan) -> None:
        ctx.host(target).change(["touch", str(Path(target.settings.tmp_dirs[0]) / "flag")], "touch flag")


def test_failure_on_one_host_spares_the_others_and_stops_later_steps(inventory: InventoryDir, tmp_path: Path) -> None:
    """One host failing a step: the other hosts finish that step, later steps are skipped, run fails."""
    env = local_env(inventory, tmp_path / "h", ["a", "b", "c"])
    with Context(env) as ctx:
        result = Runner(ctx).run([TouchFlag(fail_on="b"), TouchFlag()], task="lib")
    first = [r for r in result.results[:3]]
    assert [(r.target, r.status) for r in first] == [("a", "changed"), ("b", "failed"), ("c", "changed")]
    assert "b is broken" in (first[1].error or "")
    assert {r.status for r in result.results[3:]} == {"skipped"}
    assert not result.succeeded and result.exit_code() == 1
    assert (tmp_path / "h/a/flag").exists() and not (tmp_path / "h/b/flag").exists()


def test_second_run_is_a_noop_with_a_reason(inventory: InventoryDir, tmp_path: Path) -> None:
    """Idempotence: the second run reports ok with the step's reason and performs no action."""
    env = local_env(inventory, tmp_path / "h", ["a"])
    with Context(env) as ctx:
        Runner(ctx).run([TouchFlag()], task="lib").raise_on_failure()
    with Context(env) as ctx:
        again = Runner(ctx).run([TouchFlag()], task="lib")
    (r,) = again.results
    assert (r.status, r.actions) == ("ok", ()) and r.reason and r.reason.endswith("flag exists")


class SneakyWrite(TouchFlag):
    """A buggy step that writes from check(): the write path must refuse in check mode."""

    name = "test.sneaky"

    def check(self, ctx: Context, target: HostTarget) -> FlagState:
        ctx.host(target).change(["touch", str(Path(target.settings.tmp_dirs[0]) / "sneaky")], "oops")
        return super().check(ctx, target)


def test_check_mode_never_writes_even_from_a_buggy_step(inventory: InventoryDir, tmp_path: Path) -> None:
    """In check mode apply is not called, and a write reaching a connector's write path is refused."""
    env = local_env(inventory, tmp_path / "h", ["a"])
    with Context(env, check=True) as ctx:
        planned = Runner(ctx).run([TouchFlag()], task="lib")
        buggy = Runner(ctx).run([SneakyWrite()], task="lib")
    assert planned.results[0].status == "changed" and planned.check
    assert not (tmp_path / "h/a/flag").exists()
    assert "tried to write in check mode" in (buggy.results[0].error or "")
    assert not (tmp_path / "h/a/sneaky").exists()


class Flaky(TouchFlag):
    """Fails with a transient error on the first read, then works."""

    name = "test.flaky"

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def check(self, ctx: Context, target: HostTarget) -> FlagState:
        self.calls += 1
        if self.calls == 1:
            raise TransientError("connection reset")
        return super().check(ctx, target)


def test_transient_read_errors_are_retried(inventory: InventoryDir, tmp_path: Path) -> None:
    """A dropped connection during check is retried with backoff instead of failing the host."""
    env = local_env(inventory, tmp_path / "h", ["a"])
    step = Flaky()
    with Context(env) as ctx:
        result = Runner(ctx).run([step], task="lib")
    assert result.results[0].status == "changed" and step.calls == 3  # failed read, read, verify


def test_production_refuses_changes_without_confirmation(inventory: InventoryDir, tmp_path: Path) -> None:
    """No terminal and no --yes on a production tier: refused before anything runs; a 'no' is `declined` (exit 2)."""
    env = local_env(inventory, tmp_path / "h", ["a"], tier="production")
    with pytest.raises(ConfirmationRequired), Context(env, interactive=False) as ctx:
        Runner(ctx).run([TouchFlag()], task="lib")
    asked: list[str] = []
    with Context(env, interactive=True, confirm=lambda text: asked.append(text) or False) as ctx:
        declined = Runner(ctx).run([TouchFlag()], task="lib")
    assert declined.results[0].status == "declined" and "create" in asked[0] and declined.exit_code() == 2
    assert not (tmp_path / "h/a/flag").exists()
    with Context(env, assume_yes=True, interactive=False) as ctx:
        assert Runner(ctx).run([TouchFlag()], task="lib").results[0].status == "changed"


class UsesSecret(TouchFlag):
    """Passes a resolved secret to a command, as a real step might (e.g. an auth token)."""

    name = "test.secret"

    def apply(self, ctx: Context, target: HostTarget, plan: Plan) -> None:
        assert ctx.env.database is not None and ctx.env.database.password is not None
        token = ctx.env.database.password.get()
        ctx.host(target).change(["sh", "-c", f"echo {token} >/dev/null; exit 3"], f"use token {token}")


def test_secrets_never_reach_output_or_journal(
    inventory: InventoryDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A resolved secret is masked in results, errors, JSON output and the journal."""
    secret = "s3cr3t-Value-9f1c"
    monkeypatch.setenv("LIB_DB_PASSWORD", secret)
    env = local_env(inventory, tmp_path / "h", ["a"],
                    database={"name": "d", "user": "u", "password": "env:LIB_DB_PASSWORD"})
    with Context(env) as ctx:
        result = Runner(ctx).run([UsesSecret()], task="lib")
    document = json.dumps(result.as_dict())
    assert result.results[0].status == "failed"  # the command exits 3: the error quotes the command
    journal = Path(result.journal or "").read_text()
    assert secret not in document and secret not in journal
    assert "********" in document and "********" in journal
    assert "env:LIB_DB_PASSWORD" not in document  # only the reference would be shown, and it is not needed


def test_journal_is_listed_and_shown(inventory: InventoryDir, tmp_path: Path) -> None:
    """Every run leaves a JSON-lines journal that runs.list and runs.show read back."""
    env = local_env(inventory, tmp_path / "h", ["a"])
    with Context(env) as ctx:
        result = Runner(ctx).run([TouchFlag()], task="lib")
    records = [json.loads(line) for line in Path(result.journal or "").read_text().splitlines()]
    assert [r["event"] for r in records] == ["run.start", "step.start", "action.start", "action.end",
                                             "target.result", "run.end"]
    assert records[0]["user"] and records[0]["env"] == "lib" and records[0]["task"] == "lib"
    assert records[2]["command"].startswith("touch ") and records[2]["key"] == records[3]["key"]
    assert records[3]["exit_code"] == 0 and records[4]["changed"] is True

    code, listing = cli_json("runs.list")
    assert code == 0 and listing["runs"][0]["run_id"] == result.run_id
    assert listing["runs"][0]["status"] == "changed"
    shown = run_cli("runs.show", result.run_id[:20])
    assert shown.returncode == 0 and "touch flag" in shown.stdout


def test_readme_library_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's library example works as written (against the sandbox)."""
    readme = (REPO / "README.md").read_text()
    match = re.search(r"<!-- library-example -->\s*```python\n(.*?)```", readme, re.S)
    assert match, "README lacks the library example"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("INDOSTAR_INVENTORY_DIR", str(REPO / "inventory"))
    namespace: dict[str, Any] = {}
    exec(compile(match.group(1), "README.md", "exec"), namespace)
    assert namespace["result"].succeeded


def test_list_does_not_import_heavy_clients() -> None:
    """`invoke --list` must stay fast: no boto3, kubernetes, psycopg, paramiko (nor the inventory) at list time."""
    probe = (
        "import sys; from invoke.main import program\n"
        "sys.argv = ['invoke', '--list']\n"
        "try:\n    program.run()\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('boto3', 'kubernetes', 'psycopg', 'paramiko', 'fabric', 'msgspec', 'redis', 'rich')"
        " if m in sys.modules]\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert "logs.install-rotation" in proc.stdout
    assert "HEAVY=\n" in proc.stdout, proc.stdout


def test_load_environment_is_importable_without_invoke(inventory: InventoryDir) -> None:
    """Library use needs no Invoke: with invoke made unimportable, the package root and the steps load."""
    inventory.write("x", {"tier": "development"})
    probe = ("import sys\nfrom pathlib import Path\nsys.modules['invoke'] = None  # any import of it fails\n"
             "from indostar_ops import Context, Runner, load_environment\n"
             "from indostar_ops.steps.postgres import KillIdle, Reindex, Vacuum\n"
             "from indostar_ops.registry import STEPS\n"
             f"env = load_environment('x', directory=Path({str(inventory.path)!r}))\n"
             "print('OK', env.name, Context.__name__, Runner.__name__, Vacuum.name, Reindex.name, KillIdle.name,"
             " len(STEPS) > 0)\n")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["OK", "x", "Context", "Runner", "db.vacuum", "db.reindex", "db.kill-idle", "True"]


def test_indostar_ops_program_exits_2_on_usage_errors() -> None:
    """`indostar-ops` (python -m indostar_ops) runs the same tasks; an unknown flag or task exits 2, not 1."""
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "indostar_ops", *args], cwd=REPO, capture_output=True,
                              text=True, check=False)

    bad_flag = run("logs.install-rotation", "--no-such-flag")
    assert bad_flag.returncode == 2 and "--no-such-flag" in bad_flag.stderr
    assert run("no.such-task").returncode == 2
    listing = run("--list")
    assert listing.returncode == 0 and "logs.install-rotation" in listing.stdout
