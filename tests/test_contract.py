"""The step contract every procedure builds on: one redactor, read-only check mode on every backend,
preflight before any connection, intent journaled before acting, frozen plans, declined/refused runs audited."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from indostar_ops import Context, Plan, Runner, Step
from indostar_ops.errors import CheckModeViolation, ConfirmationRequired, StepError, UsageError
from indostar_ops.inventory import HostTarget
from indostar_ops.poll import wait_until
from indostar_ops.step import Change, EnvTarget, Outcome, Receipt
from tests.support import InventoryDir
from tests.test_engine import TouchFlag, local_env

SECRET = "s3cr3t-Value-42"


class LeakyChange(Step[None]):
    """A step whose planned change carries a resolved secret in before/after/summary/diff."""

    name = "test.leaky"
    scope = "env"
    idempotent = False

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def check(self, ctx: Context, target: Any) -> None:
        ctx.env.database.password.get()  # resolving registers the value with the redactor

    def plan(self, state: None) -> Plan:
        return Plan([Change(f"set password to {SECRET}", before="old", after={"password": SECRET},
                            diff=f"-old\n+{SECRET}\n")], reason=f"reason {SECRET}", data={"v": SECRET})

    def apply(self, ctx: Context, target: Any, plan: Plan) -> Outcome:
        if self.fail:
            raise StepError(f"failed while writing {SECRET}")
        return Outcome(f"wrote {SECRET}", {"written": SECRET})


def _env(inventory: InventoryDir, tmp_path: Path, **extra: Any) -> Any:
    return local_env(inventory, tmp_path / "h", ["a"], database={
        "name": "x", "user": "x", "password": "env:CONTRACT_DB_PASSWORD"}, **extra)


@pytest.mark.parametrize("mode", ["success", "failure", "check"])
def test_a_secret_in_a_change_never_reaches_any_channel(inventory: InventoryDir, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str], mode: str) -> None:
    """Console lines, --json, the journal and RunResult all pass through the one redactor, in every outcome."""
    from indostar_ops.report import ConsoleReporter, print_json, print_summary

    monkeypatch.setenv("CONTRACT_DB_PASSWORD", SECRET)
    env = _env(inventory, tmp_path)
    with Context(env, check=mode == "check") as ctx:
        result = Runner(ctx, reporter=ConsoleReporter(check=mode == "check")).run(
            [LeakyChange(fail=mode == "failure")], task="leak")
    print_json(result.as_dict())
    print_summary(result)
    out = capsys.readouterr()
    journal = Path(result.journal or "").read_text()
    assert result.results[0].status == {"success": "changed", "failure": "failed", "check": "changed"}[mode]
    for channel in (out.out, out.err, journal, json.dumps(result.as_dict()), repr(result.results)):
        assert SECRET not in channel
    assert "********" in out.out and "********" in journal


def test_check_mode_postgres_sessions_are_read_only_at_the_server(inventory: InventoryDir, tmp_path: Path) -> None:
    """In check mode even a write smuggled through the read handle is refused by PostgreSQL itself."""
    import psycopg

    env = local_env(inventory, tmp_path / "h", ["a"], database={"name": "postgres", "user": "postgres"})
    with Context(env, check=True) as ctx:
        db = ctx.postgres()
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            db.fetch("CREATE TABLE contract_should_not_exist (id int)")
        with pytest.raises(CheckModeViolation):
            db.execute("CREATE TABLE contract_should_not_exist (id int)", summary="create")
    with Context(env) as ctx:
        assert not ctx.postgres().fetch("SELECT 1 FROM pg_class WHERE relname = 'contract_should_not_exist'")


def test_aws_read_handle_refuses_writes_and_check_mode_refuses_the_write_path(
        inventory: InventoryDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The boto3 client steps get only reads; a write must use AwsSession.call, which check mode refuses."""
    from moto import mock_aws

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    env = local_env(inventory, tmp_path / "h", ["a"], aws={"region": "ap-south-1"})
    with mock_aws():
        with Context(env, check=True) as ctx:
            aws = ctx.aws()
            assert aws.client("s3").list_buckets()["Buckets"] == []
            with pytest.raises(CheckModeViolation):
                aws.client("s3").create_bucket(Bucket="contract", CreateBucketConfiguration={
                    "LocationConstraint": "ap-south-1"})
            with pytest.raises(CheckModeViolation):
                aws.call("s3", "create_bucket", summary="create", Bucket="contract")
        with Context(env) as ctx:
            aws = ctx.aws()
            with pytest.raises(StepError, match="must go through AwsSession.call"):
                aws.client("s3").create_bucket(Bucket="contract", CreateBucketConfiguration={
                    "LocationConstraint": "ap-south-1"})
            aws.call("s3", "create_bucket", summary="create bucket", journal_params=False, Bucket="contract",
                     CreateBucketConfiguration={"LocationConstraint": "ap-south-1"})
            assert [b["Name"] for b in aws.client("s3").list_buckets()["Buckets"]] == ["contract"]
            assert ctx.actions[-1]["params"] == {"Bucket": "<not journaled>",
                                                 "CreateBucketConfiguration": "<not journaled>"}


def test_redis_read_handle_refuses_writes_and_the_write_path_is_journaled(inventory: InventoryDir,
                                                                           tmp_path: Path) -> None:
    """`ctx.redis().client` answers reads only; `change` is the one write path and check mode refuses it."""
    env = local_env(inventory, tmp_path / "h", ["a"], redis={"url": "redis://127.0.0.1:6379/9"})
    with Context(env, check=True) as ctx:
        redis = ctx.redis()
        assert redis.client.ping()
        with pytest.raises(StepError, match="is a write"):
            redis.client.set("contract:key", "1")
        with pytest.raises(CheckModeViolation):
            redis.change("SET", "contract:key", "1", summary="set")
        with pytest.raises(StepError, match="is a write"):
            redis.client.pipeline().delete("contract:key").execute()
    with Context(env) as ctx:
        ctx.redis().change("SET", "contract:key", "1", summary="set the key")
        assert ctx.redis().client.get("contract:key") == "1"
        ctx.redis().change("DEL", "contract:key", summary="remove it")
        assert [a["kind"] for a in ctx.actions] == ["redis", "redis"]


def test_http_send_is_guarded_and_journaled(inventory: InventoryDir, tmp_path: Path) -> None:
    """HttpSession.send refuses in check mode and records method, URL and status otherwise."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append(self.rfile.read(int(self.headers["Content-Length"])).decode())
            self.send_response(201)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/hook"
    env = local_env(inventory, tmp_path / "h", ["a"])
    try:
        with Context(env, check=True) as ctx, pytest.raises(CheckModeViolation):
            ctx.http().send("POST", url, summary="post", json_body={"a": 1})
        with Context(env) as ctx:
            assert ctx.http().send("POST", url, summary="post", json_body={"a": 1})[0] == 201
            assert ctx.actions[0]["status"] == 201 and ctx.actions[0]["url"] == url
    finally:
        server.shutdown()
    assert seen == ['{"a": 1}']


def test_host_upload_is_refused_in_check_mode(inventory: InventoryDir, tmp_path: Path) -> None:
    """The upload write path refuses in check mode and leaves no file."""
    env = local_env(inventory, tmp_path / "h", ["a"])
    target = env.hosts()[0]
    with Context(env, check=True) as ctx, pytest.raises(CheckModeViolation):
        ctx.host(target).upload(b"x", str(tmp_path / "h/a/uploaded"), "upload")
    assert not (tmp_path / "h/a/uploaded").exists()


def test_intent_is_journaled_before_the_write_runs(inventory: InventoryDir, tmp_path: Path) -> None:
    """action.start (with an idempotency key) is on disk before the command runs: a killed run shows it."""
    env = local_env(inventory, tmp_path / "h", ["a"])
    target = env.hosts()[0]
    seen_before: list[str] = []
    with Context(env) as ctx:
        result = Runner(ctx).run([], task="probe")  # opens and closes a journal; reuse its directory
        from indostar_ops.journal import Journal

        ctx.journal = Journal(Path(result.journal or "").parent, "intent-run", env.redactor)
        scoped = ctx.scoped("test.step", "a", "main/test.step/abc")
        script = f"cat {ctx.journal.path} > {tmp_path / 'seen'}"
        scoped.host(target).change(["sh", "-c", script], "copy the journal as it is now")
        seen_before.append((tmp_path / "seen").read_text())
        ctx.journal.close()
    started = [json.loads(line) for line in seen_before[0].splitlines()]
    assert started[-1]["event"] == "action.start" and started[-1]["key"].startswith("intent-run/main/test.step/abc/a/")
    events = [json.loads(line)["event"] for line in Path(ctx.journal.path).read_text().splitlines()]
    assert events == ["action.start", "action.end"]


def test_plans_and_outcomes_are_immutable() -> None:
    """Apply cannot rewrite what was planned (and shown to the operator)."""
    plan = Plan([Change("x", params={"ids": [1, 2]})], data={"a": {"b": [1]}})
    with pytest.raises(AttributeError):
        plan.reason = "rewritten"  # type: ignore[misc]
    with pytest.raises(TypeError):
        plan.data["a"] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        plan.changes[0].params["ids"] = []  # type: ignore[index]
    assert plan.data["a"]["b"] == (1,)
    outcome = Outcome("done", receipt=Receipt("maintenance.off", {"groups": ["web"]}, "off again"))
    assert outcome.receipt is not None and outcome.receipt.as_dict()["args"] == {"groups": ["web"]}


def test_unknown_group_is_a_usage_error_before_anything_runs(inventory: InventoryDir, tmp_path: Path) -> None:
    """Preflight resolves groups with no I/O: exit 2 semantics (UsageError), no journal, no step started."""
    from indostar_ops.steps.logrotate import InstallLogrotate

    env = local_env(inventory, tmp_path / "h", ["a"], journal_dir=str(tmp_path / "journal"))
    with Context(env) as ctx, pytest.raises(UsageError, match="no host group 'wbe'"):
        Runner(ctx).run([InstallLogrotate(["wbe"])], task="logs.install-rotation")
    assert not (tmp_path / "journal").exists()


def test_unset_env_secret_is_a_usage_error_in_preflight(inventory: InventoryDir, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A step that needs the database refuses before connecting when its env: secret is not set."""
    monkeypatch.delenv("CONTRACT_DB_PASSWORD", raising=False)

    class NeedsDb(LeakyChange):
        needs = ("database",)

    env = _env(inventory, tmp_path)
    with Context(env) as ctx, pytest.raises(UsageError, match="CONTRACT_DB_PASSWORD is not set"):
        Runner(ctx).run([NeedsDb()], task="needs-db")


def test_a_step_without_targets_is_skipped_with_the_reason(inventory: InventoryDir, tmp_path: Path) -> None:
    """No targets is never a silent success."""

    class NoTargets(TouchFlag):
        scope = "env"

        def targets(self, ctx: Context) -> list[EnvTarget]:
            return []

    env = local_env(inventory, tmp_path / "h", ["a"])
    with Context(env) as ctx:
        result = Runner(ctx).run([NoTargets()], task="none")
    (r,) = result.results
    assert r.status == "skipped" and r.reason and r.reason.startswith("no targets")


def test_json_never_prompts_and_a_refused_production_run_is_journaled(inventory: InventoryDir,
                                                                      tmp_path: Path) -> None:
    """--json on production without --yes exits 2 without a prompt, and the refusal is in the journal."""
    import subprocess

    from tests.support import REPO

    local_env(inventory, tmp_path / "h", ["a"], tier="production", journal_dir=str(tmp_path / "journal"))
    proc = subprocess.run(  # a terminal-less stdin that would answer "y" if a prompt were (wrongly) shown
        [str(REPO / ".venv/bin/indostar-ops"), "logs.install-rotation", "--env", "lib", "--json"],
        input="y\n", capture_output=True, text=True, timeout=60,
        env={**os.environ, "INDOSTAR_INVENTORY_DIR": str(inventory.path)}, check=False)
    assert proc.returncode == 2 and "Proceed?" not in proc.stderr
    assert json.loads(proc.stdout)["exit_code"] == 2
    events = [json.loads(line) for p in (tmp_path / "journal").glob("*.jsonl") for line in p.read_text().splitlines()]
    assert [e["event"] for e in events] == ["run.refused"] and events[0]["task"] == "logs.install-rotation"


def test_a_declined_confirmation_is_its_own_status_and_exit_2(inventory: InventoryDir, tmp_path: Path) -> None:
    """Answering no is `declined` (exit 2) and journaled with the answer; nothing changes."""
    env = local_env(inventory, tmp_path / "h", ["a"], tier="production")
    with Context(env, interactive=True, confirm=lambda text: False) as ctx:
        result = Runner(ctx).run([TouchFlag()], task="lib")
    assert result.status == "declined" and result.exit_code() == 2 and result.as_dict()["status"] == "declined"
    events = [json.loads(line) for line in Path(result.journal or "").read_text().splitlines()]
    assert any(e["event"] == "confirmation" and e["approved"] is False for e in events)
    assert not (tmp_path / "h/a/flag").exists()
    with pytest.raises(ConfirmationRequired), Context(env, interactive=False) as ctx:
        Runner(ctx).run([TouchFlag()], task="lib")


def test_wait_until_honours_the_run_deadline_and_names_what_it_waited_for(inventory: InventoryDir,
                                                                          tmp_path: Path) -> None:
    """The one poller stops at the earlier of its timeout and ctx.deadline, with the last thing it saw."""
    import time

    from indostar_ops.errors import WaitTimeout

    env = local_env(inventory, tmp_path / "h", ["a"])
    polls: list[int] = []
    with Context(env) as ctx:
        ctx.deadline = time.monotonic() + 0.3
        started = time.monotonic()
        with pytest.raises(WaitTimeout, match="snapshot snap-1 available.*last seen: creating"):
            wait_until(ctx, "snapshot snap-1 available", lambda: polls.append(1) or "creating",
                       lambda v: v == "available", timeout=60, every=0.05)
        assert time.monotonic() - started < 2 and len(polls) >= 3
        ctx.deadline = None
        values = iter(["creating", "creating", "available"])
        assert wait_until(ctx, "x", lambda: next(values), lambda v: v == "available", timeout=5, every=0.01,
                          sleep=lambda s: None) == "available"


def test_an_unreachable_target_is_its_own_status(inventory: InventoryDir, tmp_path: Path) -> None:
    """Unreachable is reported as such (like Ansible), counts as a failure, and is never retried."""
    from indostar_ops.errors import Unreachable

    calls: list[str] = []

    class Dead(TouchFlag):
        def check(self, ctx: Context, target: HostTarget) -> Any:
            calls.append(target.name)
            raise Unreachable(target.name, "no SSH banner within 10 s")

    env = local_env(inventory, tmp_path / "h", ["a"])
    with Context(env) as ctx:
        result = Runner(ctx).run([Dead()], task="lib")
    (r,) = result.results
    assert (r.status, r.error_type, r.retryable) == ("unreachable", "Unreachable", False)
    assert "no SSH banner within 10 s" in (r.error or "") and calls == ["a"] and result.exit_code() == 1
