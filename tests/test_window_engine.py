"""The long-run engine as a library: deadlines, rolling batches, phases and gates, resume rules, playbook
validation of the window's keys, and maintenance.announce."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from indostar_ops import Context, Runner
from indostar_ops.errors import UsageError
from indostar_ops.playbook import load_playbook
from indostar_ops.registry import STEPS
from indostar_ops.runner import Phase
from tests.rig.recorder import Recorder
from tests.support import InventoryDir, cli_json
from tests.test_engine import TouchFlag, local_env
from tests.window_steps import TEST_STEPS, Count, Mark


@pytest.fixture(autouse=True)
def test_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, where in {**TEST_STEPS, "test.touch-flag": "tests.test_engine:TouchFlag"}.items():
        monkeypatch.setitem(STEPS, name, where)


def phased(*phases: tuple[str, list[Any]]) -> list[Phase]:
    for name, steps in phases:
        for step in steps:
            step.phase = name
    return [Phase(name, steps) for name, steps in phases]


def test_a_deadline_mid_execute_stops_new_steps_and_still_runs_verify_and_always(
    inventory: InventoryDir, tmp_path: Path,
) -> None:
    """The clock passes end - margin during step a: b and c are not started (and named), what was done
    is undone, verify (deadline: false) and always still run."""
    env = local_env(inventory, tmp_path / "h", ["web-1"])
    now = [datetime(2026, 12, 1, 20, 30, tzinfo=UTC)]
    end = now[0] + timedelta(minutes=30)

    class SlowMark(Mark):
        def apply(self, ctx: Any, target: Any, plan: Any) -> Any:
            now[0] += timedelta(minutes=25)  # this procedure took 25 minutes
            return super().apply(ctx, target, plan)

    execute = [SlowMark("a"), Mark("b"), Mark("c")]
    phases = phased(("execute", execute), ("verify", [Mark("verified")]))
    phases[1].deadline = False
    with Context(env) as ctx:
        runner = Runner(ctx, clock=lambda: now[0])
        result = runner.run(phases, task="t", deadline=end, margin=timedelta(minutes=10),
                            always=[Mark("always")])
    phases_run = [((r.step_id or "").split("/")[0], r.step, r.status) for r in result.results]
    assert phases_run == [("execute", "test.mark", "changed"), ("execute", "test.mark", "skipped"),
                          ("execute", "test.mark", "skipped"), ("verify", "test.mark", "changed"),
                          ("undo", "test.unmark", "changed"), ("undo", "test.unmark", "changed"),
                          ("always", "test.mark", "changed")]
    assert "not started: the window ends at 02:30 IST (no step starts in its last 10 min)" in (
        result.results[1].reason or "")
    assert any(n.startswith("deadline: not started: execute/test.mark") for n in result.notes), result.notes
    host = tmp_path / "h" / "web-1"
    assert (host / "always").exists()
    assert not (host / "a").exists()  # undone: the deadline unwinds like a failure
    assert not (host / "b").exists() and not (host / "c").exists()


def test_serial_two_with_one_failing_host_stops_the_rest_over_max_fail_percent(
    inventory: InventoryDir, tmp_path: Path,
) -> None:
    """serial: 2 and max_fail_percent: 25 from a playbook entry: batch 1 (a fails, b ok) is 50 % failed,
    so the remaining batches are not started; the hosts are named with the reason."""
    env = local_env(inventory, tmp_path / "h", ["a", "b", "c", "d", "e"])
    book = tmp_path / "book.yml"
    book.write_text("phases:\n  - name: execute\n    steps:\n      - step: test.touch-flag\n"
                    "        with: {fail_on: a}\n        serial: 2\n        max_fail_percent: 25\n")
    with Context(env) as ctx:
        result = Runner(ctx).run(load_playbook(str(book)).build(), task="t")
    assert [(r.target, r.status) for r in result.results] == [
        ("a", "failed"), ("b", "changed"), ("c", "skipped"), ("d", "skipped"), ("e", "skipped")]
    assert "over max_fail_percent 25%" in (result.results[2].reason or "")
    assert not (tmp_path / "h/c/flag").exists()
    records = [json.loads(x) for x in Path(result.journal or "").read_text().splitlines()]
    assert [r["batch"] for r in records if r["event"] == "batch.start"] == [1]


def test_serial_as_a_run_flag_batches_without_stopping(inventory: InventoryDir, tmp_path: Path) -> None:
    """--serial 50% without max_fail_percent: every batch runs (one host's failure never stops the others)."""
    env = local_env(inventory, tmp_path / "h", ["a", "b", "c", "d"])
    with Context(env) as ctx:
        result = Runner(ctx, serial="50%").run([TouchFlag(fail_on="a")], task="t")
    assert [r.status for r in result.results] == ["failed", "changed", "changed", "changed"]
    records = [json.loads(x) for x in Path(result.journal or "").read_text().splitlines()]
    assert [r["targets"] for r in records if r["event"] == "batch.start"] == [["a", "b"], ["c", "d"]]


def test_gated_phases_skip_after_a_failure_and_resume_reruns_only_what_is_left(
    inventory: InventoryDir, tmp_path: Path,
) -> None:
    """A failure in execute skips the gated verify; resuming the run: the finished non-idempotent step is
    never repeated, a finished idempotent one is re-checked, one whose state drifted is applied again."""
    env = local_env(inventory, tmp_path / "h", ["web-1"])
    counter = tmp_path / "count.txt"
    host = tmp_path / "h" / "web-1"

    def build() -> list[Phase]:
        return phased(("backup", [Count(path=str(counter))]),
                      ("execute", [Mark("a"), Mark("b"), STEPS_CLASS("test.fail")()]),
                      ("verify", [Mark("verified")]))

    with Context(env) as ctx:
        first = Runner(ctx).run(build(), task="window", undo=False)
    assert first.failed and [r.status for r in first.results][-1] == "skipped"  # verify gated
    (host / "b").unlink()  # drift: someone removed what b made
    with Context(env) as ctx:
        again = Runner(ctx).run(build()[:2] + [build()[2]], task="window", resume=first.run_id, undo=False)
    statuses = {(r.step, r.target, (r.step_id or "").split("/")[0]): (r.status, r.reason) for r in again.results}
    count = statuses[("test.count", env.name, "backup")]
    assert count[0] == "skipped" and f"done in {first.run_id}" in (count[1] or "")
    assert counter.read_text().splitlines() == ["run"]  # never repeated
    marks = [(r.status, r.reason) for r in again.results if r.step == "test.mark"]
    assert marks[0][0] == "skipped" and "re-checked" in (marks[0][1] or "")
    assert marks[1][0] == "changed"  # drifted: applied again
    assert again.run_id == first.run_id


def STEPS_CLASS(name: str) -> Any:
    from indostar_ops.registry import step_class

    return step_class(name)


def test_resume_refuses_another_task_or_environment(inventory: InventoryDir, tmp_path: Path) -> None:
    env = local_env(inventory, tmp_path / "h", ["web-1"])
    with Context(env) as ctx:
        first = Runner(ctx).run([Mark("a")], task="one")
    with Context(env) as ctx, pytest.raises(UsageError, match="was 'one'"):
        Runner(ctx).run([Mark("a")], task="two", resume=first.run_id)


def test_playbook_window_keys_are_validated_with_file_and_line(tmp_path: Path) -> None:
    """Unregistered steps fail loudly (never skipped), as do bad batch settings and unknown override phases."""
    def load(text: str) -> str:
        path = tmp_path / "b.yml"
        path.write_text(text)
        with pytest.raises(UsageError) as err:
            load_playbook(str(path))
        return str(err.value)

    assert "b.yml:4: unknown step 'rds.snapshott'" in load(
        "phases:\n  - name: backup\n    steps:\n      - step: rds.snapshott\n")
    assert "b.yml:4: serial must be" in load(
        "phases:\n  - name: x\n    steps:\n      - step: test.touch-flag\n        serial: 0\n")
    assert "only apply to host steps" in load(
        "phases:\n  - name: x\n    steps:\n      - step: db.vacuum\n        serial: 2\n")
    assert "no phase 'exec'" in load(
        "phases:\n  - name: execute\n    steps: [disk.check]\nenvironments:\n  sandbox:\n    exec: []\n")
    assert "gate must be true or false" in load("phases:\n  - name: x\n    gate: maybe\n    steps: []\n")


def test_shipped_window_playbook_names_only_registered_steps_and_keeps_guards_under_only() -> None:
    """maintenance-window.yml loads (every step registered); --only picks among execute steps, guards stay."""
    book = load_playbook("maintenance-window")
    chosen = [s.step for s in book.select(only=["db"])]
    assert chosen[:3] == ["window.hours", "window.notice", "window.baseline"]
    assert "db.vacuum" in chosen and "logs.install-rotation" not in chosen
    assert "window.smoke" in chosen
    sandbox = book.for_env("sandbox")
    assert "docker.prune" not in [s.step for s in sandbox.main]


def test_announce_posts_the_notice_records_it_and_is_idempotent(
    inventory: InventoryDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """maintenance.announce: --check sends nothing; then a scheduled incident + chat + record; again: no-op.
    Values reaching chat are Slack-escaped (no <!channel> smuggled in through --details)."""
    with Recorder() as rec:
        monkeypatch.setenv("ANN_CHAT", f"{rec.url}/hooks/chat")
        inventory.write("ann", {"tier": "production", "timezone": "Asia/Kolkata", "connection": "local",
                                "notifications": {"status_page": {"url": f"{rec.url}/v1", "page_id": "p"},
                                                  "chat": {"webhook": "env:ANN_CHAT"}}})
        at = (datetime.now(UTC) + timedelta(days=2)).astimezone().strftime("%Y-%m-%d 02:00")
        code, doc = cli_json("maintenance.announce", "--env", "ann", "--at", at, "--duration", "2h", "--check")
        assert code == 0 and [r.method for r in rec.requests] == ["GET", "GET"]
        code, doc = cli_json("maintenance.announce", "--env", "ann", "--at", at, "--duration", "2h", "--yes",
                             "--details", "Upgrade <!channel> & more")
        assert code == 0, doc
        incident = next(iter(rec.incidents.values()))
        assert incident["status"] == "scheduled" and "02:00" in incident["body"]
        chat = [r.body["text"] for r in rec.requests if r.path == "/hooks/chat"]
        assert len(chat) == 1 and "&lt;!channel&gt; &amp; more" in chat[0]
        code, doc = cli_json("maintenance.announce", "--env", "ann", "--at", at, "--duration", "2h", "--yes")
        assert code == 0 and doc["counts"]["changed"] == 0
        assert "already announced" in doc["steps"][0]["targets"][0]["reason"]
        assert len(rec.incidents) == 1


def test_a_critical_check_in_a_strict_phase_stops_the_run(inventory: InventoryDir, tmp_path: Path) -> None:
    """preflight is strict: a CRITICAL answer (ssh.check: a host unreachable) closes the gate (exit 1);
    in --check the preview still goes on."""
    env = local_env(inventory, tmp_path / "h", ["web-1"])
    book = tmp_path / "book.yml"
    book.write_text("phases:\n  - name: preflight\n    strict: true\n    steps: [test.critical]\n"
                    "  - name: execute\n    steps: [{step: test.mark, with: {mark: a}}]\n")
    with Context(env) as ctx:
        result = Runner(ctx).run(load_playbook(str(book)).build(), task="t")
    assert [(r.step, r.status) for r in result.results] == [
        ("test.critical", "ok"), ("preflight.gate", "failed"), ("test.mark", "skipped")]
    assert "web-9 does not answer" in (result.results[1].error or "") and result.exit_code() == 1
    with Context(env, check=True) as ctx:
        preview = Runner(ctx).run(load_playbook(str(book)).build(), task="t")
    assert [r.status for r in preview.results] == ["ok", "changed"]


def test_a_phase_budget_stops_its_own_steps_only(inventory: InventoryDir, tmp_path: Path) -> None:
    """backup has 10 minutes: a slow first step uses them up, the second is not started (and named),
    the next phase runs normally."""
    env = local_env(inventory, tmp_path / "h", ["web-1"])
    now = [datetime(2026, 12, 1, 20, 30, tzinfo=UTC)]

    class SlowMark(Mark):
        def apply(self, ctx: Any, target: Any, plan: Any) -> Any:
            now[0] += timedelta(minutes=11)
            return super().apply(ctx, target, plan)

    book = tmp_path / "book.yml"
    book.write_text("phases:\n  - name: backup\n    budget: 10m\n    steps: [{step: test.mark, with: {mark: a}},"
                    " {step: test.mark, with: {mark: b}}]\n  - name: execute\n"
                    "    steps: [{step: test.mark, with: {mark: c}}]\n")
    phases = load_playbook(str(book)).build()
    phases[0].steps[0].__class__ = SlowMark
    with Context(env) as ctx:
        result = Runner(ctx, clock=lambda: now[0]).run(phases, task="t", undo=False)
    assert [r.status for r in result.results] == ["changed", "skipped", "changed"]
    assert "not started: phase backup had 600 s" in (result.results[1].reason or "")


def test_maintenance_off_failing_is_reported_first_in_red_with_the_command() -> None:
    import io

    from indostar_ops.results import RunResult, TargetResult
    from indostar_ops.window import print_window_report

    result = RunResult(run_id="r1", env="prod", task="maintenance.window", check=False)
    result.results += [TargetResult("db.vacuum", "orders", "changed", step_id="execute/db.vacuum/x"),
                       TargetResult("maintenance.off", "web-1", "failed", error="nginx -t failed",
                                    step_id="always/maintenance.off/y")]
    out = io.StringIO()

    class Env:
        name = "prod"

    print_window_report(result, Env(), out)  # type: ignore[arg-type]
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("MAINTENANCE MODE IS STILL ON in prod: maintenance.off failed (web-1: nginx -t")
    assert lines[1].strip() == "run now: invoke maintenance.off --env prod --yes"


def test_alb_strategy_swaps_the_maintenance_steps(inventory: InventoryDir, tmp_path: Path) -> None:
    """maintenance.strategy: alb: the window enters and leaves maintenance through the ALB rule."""
    from indostar_ops.window import WindowOptions, window_sections

    inventory.write("albenv", {"tier": "staging", "connection": "local", "maintenance": {"strategy": "alb"},
                               "aws": {"region": "ap-south-1"}, "alb": {"load_balancer": "lb"},
                               "groups": {"web": {"hosts": {"web-1": {}}}, "workers": {"hosts": {}}}})
    sections = window_sections(inventory.load("albenv"), [], [], WindowOptions())
    enter = next(p for p in sections.main if p.name == "enter")
    assert [s.name for s in enter.steps] == ["notify.in-progress", "maintenance.alb-on"]
    assert [s.name for s in sections.always] == ["maintenance.alb-off", "notify.finish"]


def test_sigterm_mid_run_unwinds_and_runs_always(inventory: InventoryDir, tmp_path: Path) -> None:
    """SIGTERM (a CI job cancelled, a systemd stop) is handled like Ctrl-C: no new step, undo, always."""
    import os
    import signal

    env = local_env(inventory, tmp_path / "h", ["web-1"])

    class Terminated(Mark):
        def apply(self, ctx: Any, target: Any, plan: Any) -> Any:
            os.kill(os.getpid(), signal.SIGTERM)
            raise AssertionError("the signal handler raises before this line")

    with Context(env) as ctx:
        result = Runner(ctx).run(phased(("execute", [Mark("a"), Terminated("b"), Mark("c")])), task="t",
                                 always=[Mark("always")])
    host = tmp_path / "h" / "web-1"
    assert not (host / "a").exists() and not (host / "c").exists() and (host / "always").exists()
    assert any(r.step == "run.interrupted" and "SIGTERM" in (r.error or "") for r in result.results)
    assert result.exit_code() == 1
    assert signal.getsignal(signal.SIGTERM) is not None  # the previous handler is back


def test_waits_end_at_the_run_deadline(inventory: InventoryDir, tmp_path: Path) -> None:
    """A wait (the one poller) inside a step ends at the window's end, not at its own 120 s timeout: the step
    fails naming what it awaited, what was done is undone, always runs."""
    import time

    from tests.window_steps import Gate

    env = local_env(inventory, tmp_path / "h", ["web-1"])
    started = time.monotonic()
    with Context(env) as ctx:
        result = Runner(ctx).run(phased(("execute", [Mark("a"), Gate("never")])), task="t",
                                 deadline=datetime.now(UTC) + timedelta(seconds=1.5), always=[Mark("always")])
    assert time.monotonic() - started < 30
    gate = next(r for r in result.results if r.step == "test.gate")
    assert gate.status == "failed" and gate.error_type == "WaitTimeout" and "gate " in (gate.error or "")
    host = tmp_path / "h" / "web-1"
    assert not (host / "a").exists() and (host / "always").exists()


def test_a_failing_always_step_is_the_first_note(inventory: InventoryDir, tmp_path: Path) -> None:
    from tests.window_steps import Fail

    env = local_env(inventory, tmp_path / "h", ["web-1"])
    with Context(env) as ctx:
        result = Runner(ctx).run([Mark("a")], task="t", always=[Fail()])
    assert result.notes[0].startswith("ALWAYS-SECTION FAILURE: test.fail on web-1: web-1: this procedure breaks")
    assert result.as_dict()["notes"][0] == result.notes[0] and result.exit_code() == 1


def test_a_lock_broken_by_someone_else_stops_new_steps(inventory: InventoryDir, tmp_path: Path) -> None:
    """The lease renewal finds another run in the lock (someone used --break-lock): no further step starts,
    the run fails, always still runs."""
    from indostar_ops.lock import LockKeeper
    from indostar_ops.poll import wait_until

    env = local_env(inventory, tmp_path / "h", ["web-1"], maintenance={"lock": {"path": str(tmp_path / "locks")}})
    keepers: list[LockKeeper] = []

    def make(ctx: Any, run_id: str) -> LockKeeper:
        keepers.append(LockKeeper(env, ctx, run_id, lease=1.5))
        return keepers[-1]

    class Stolen(Mark):
        def apply(self, ctx: Any, target: Any, plan: Any) -> Any:
            lock_file = tmp_path / "locks" / "lib.lock"
            record = json.loads(lock_file.read_text())
            lock_file.write_text(json.dumps({**record, "run_id": "thief", "holder": "mallory@elsewhere"}))
            wait_until(ctx, "the renewal to notice", lambda: keepers[0].lost, timeout=10, every=0.05)
            return super().apply(ctx, target, plan)

    with Context(env) as ctx:
        result = Runner(ctx).run(phased(("execute", [Stolen("a"), Mark("b")])), task="t", lock=make,
                                 always=[Mark("always")])
    lost = next(r for r in result.results if r.step == "lock.lost")
    assert lost.status == "failed" and "mallory@elsewhere" in (lost.error or "")
    assert [r.status for r in result.results if r.step == "test.mark"][:2] == ["changed", "skipped"]
    assert (tmp_path / "h/web-1/always").exists() and result.exit_code() == 1
    assert "mallory@elsewhere" in (tmp_path / "locks" / "lib.lock").read_text()  # release never clobbers it


def test_what_cannot_be_undone_is_named_when_unwinding(inventory: InventoryDir, tmp_path: Path) -> None:
    from tests.window_steps import Fail

    class Grow(Mark):
        irreversible = "EBS volumes cannot shrink"

        def apply(self, ctx: Any, target: Any, plan: Any) -> Any:
            super().apply(ctx, target, plan)
            from indostar_ops.step import Outcome

            return Outcome()

    env = local_env(inventory, tmp_path / "h", ["web-1"])
    with Context(env) as ctx:
        ok = Runner(ctx).run([Grow("grown")], task="t")
        failed = Runner(ctx).run([Grow("grown2"), Fail()], task="t")
    assert not any("not undoable" in n for n in ok.notes)
    assert "not undoable: test.mark on web-1 (EBS volumes cannot shrink)" in failed.notes


@pytest.mark.parametrize(("serial", "percent", "error"), [
    ("0", "", "--serial '0'"), ("150%", "", "--serial '150%'"), ("", "abc", "takes a number"),
    ("", "101", "from 0 to 100")])
def test_batch_flags_are_usage_errors(serial: str, percent: str, error: str) -> None:
    from indostar_ops.window import batch_options

    with pytest.raises(UsageError, match=error):
        batch_options(serial, percent)
    assert batch_options("25%", "10") == {"serial": "25%", "max_fail_percent": 10.0}


def test_ctrl_c_ends_waits_running_on_every_host(inventory: InventoryDir, tmp_path: Path) -> None:
    """Ctrl-C while two hosts wait in parallel: both waits end at their next poll (not at their own
    120 s timeout), what was done is undone, the run fails."""
    import os
    import signal
    import threading
    import time

    from tests.window_steps import Gate

    env = local_env(inventory, tmp_path / "h", ["a", "b"])
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    started = time.monotonic()
    timer.start()
    try:
        with Context(env) as ctx:
            result = Runner(ctx).run(phased(("execute", [Mark("m"), Gate("never")])), task="t")
    finally:
        timer.cancel()
    assert time.monotonic() - started < 20
    assert any(r.step == "run.interrupted" for r in result.results) and result.exit_code() == 1
    assert not (tmp_path / "h/a/m").exists() and not (tmp_path / "h/b/m").exists()
