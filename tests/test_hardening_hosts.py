"""Issue 8, host half: each class of bug a hostile review found, as a test that fails on the old code.

Symlinked roots and written paths are judged by what the HOST resolves; inventory values that reach
a config file, a page or a command are typed at load (exit 2, file:line); the second-layer guards
(step-level refusals, apply's re-checks, the journal's own redaction) each have a test of their own;
EPIPE on stdout never interrupts a mutating run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from indostar_ops import Context, Plan, Runner, Step
from indostar_ops.errors import CheckModeViolation, ConfirmationRequired, StepError, UsageError
from indostar_ops.step import Change, Outcome
from indostar_ops.steps.cleanup import CleanupTempFiles
from indostar_ops.steps.docker import DockerPrune
from indostar_ops.templates import render_template
from tests.host_support import host_inventory, targets, write
from tests.rig.fakedocker import install_fake_docker, read_docker_calls
from tests.rig.sshd import SshRig
from tests.support import REPO, InventoryDir, cli_json

SECRET = "hunter2-Hardening-77"


def one_host(inventory: InventoryDir, ssh_rig: SshRig, tmp_path: Path, name: str = "one", index: int = 0,
             **host_vars: Any) -> str:
    host = ssh_rig.hosts[index]
    inventory.write(name, host_inventory(ssh_rig, [host], tmp_path, {host.name: host_vars}))
    return name


# ---------------------------------------------------------------- item 2 / 8 / 21: typed at load


@pytest.mark.parametrize(("where", "value", "says"), [
    (("logrotate", "su"), "root root\n    postrotate\n        touch /tmp/pwned\n    endscript",
     "contains a control character (a newline)"),
    (("logrotate", "su"), "root", "'user group'"),
    (("certificates",), [{"name": "shop.test", "path": "/etc/ssl/x.pem\ninclude /etc/passwd"}],
     "contains a control character (a newline)"),
    (("nginx", "maintenance_flag"), "/var/lib/x; include /etc/passwd", "written into the nginx config"),
    (("nginx", "maintenance_snippet"), "/etc/nginx/../../tmp/evil.conf", "(no '..')"),
    (("nginx", "maintenance_exempt"), ['/health"; return 200; #'], "URI path"),
    (("nginx", "probe_host"), "shop.test\r\nX-Injected: 1", "contains a control character (a carriage return)"),
    (("tmp_dirs",), ["srv/app/tmp"], "is not an absolute path"),
    (("log_dirs",), ['/var/log/app" { postrotate'], "without double quotes"),
    (("log_patterns",), ["*.log\n}\n/etc/passwd {"], "contains a control character (a newline)"),
])
def test_values_that_reach_config_or_commands_are_refused_at_load(inventory: InventoryDir, ssh_rig: SshRig,
                                                                  tmp_path: Path, where: tuple[str, ...],
                                                                  value: Any, says: str) -> None:
    """A hostile inventory value is exit 2 at load, naming file:line and the key; nothing is written."""
    host_vars: dict[str, Any] = {}
    node = host_vars
    for key in where[:-1]:
        node = node.setdefault(key, {})
    node[where[-1]] = value
    env = one_host(inventory, ssh_rig, tmp_path, "hostile", **host_vars)
    code, doc = cli_json("logs.install-rotation", "--env", env)
    assert code == 2 and "steps" not in doc, doc
    assert f"{inventory.path / 'hostile.yaml'}:" in doc["error"] and says in doc["error"]
    assert ".".join(where) in doc["error"]
    assert not (tmp_path / ssh_rig.hosts[0].name / "etc/logrotate.d/indostar").exists()


def test_a_host_name_with_a_newline_is_refused_at_load(inventory: InventoryDir, ssh_rig: SshRig,
                                                       tmp_path: Path) -> None:
    """Host names are rendered into config headers: a newline in one would start a directive."""
    data = host_inventory(ssh_rig, ssh_rig.hosts[:1], tmp_path)
    hosts = data["groups"]["web"]["hosts"]
    hosts["web-1\npostrotate"] = hosts.pop(ssh_rig.hosts[0].name)
    inventory.write("names", data)
    code, doc = cli_json("logs.install-rotation", "--env", "names")
    assert code == 2 and "names.yaml:" in doc["error"]
    assert "invalid name" in doc["error"] and "contains a control character (a newline)" in doc["error"]


def test_enum_errors_name_the_allowed_values_and_the_nearest(inventory: InventoryDir) -> None:
    """tier: prod -> the allowed values and the nearest one, with file:line."""
    inventory.write("typo", {"tier": "prod", "maintenance": {"strategy": "ngnix"}})
    with pytest.raises(UsageError) as error:
        inventory.load("typo")
    message = str(error.value)
    assert "typo.yaml:1: tier: 'prod' is not one of production, staging, development, sandbox" in message
    assert "(nearest: 'production')" in message
    inventory.write("typo", {"tier": "staging", "maintenance": {"strategy": "ngnix"}})
    with pytest.raises(UsageError, match=r"'ngnix' is not one of nginx, alb, none \(nearest: 'nginx'\)"):
        inventory.load("typo")


def test_page_text_is_html_escaped_and_templates_are_strict() -> None:
    """The maintenance page autoescapes what it is given; a config template with a missing value fails loudly."""
    page = render_template("maintenance.html.j2", marker="m", window_end="<script>alert(1)</script>",
                           timezone="Asia/Kolkata & co")
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&amp; co" in page
    with pytest.raises(UsageError, match="undefined"):
        render_template("logrotate.j2", env="e", host="h", paths=["/var/log/a/*.log"])  # no policy
    config = render_template("nginx-maintenance.conf.j2", env="e", host="h", snippet="/s", flag="/f&1",
                             page_dir="/p", exempt=[])
    assert '"/f&1"' in config  # config files are not HTML: no entity escaping there


# ---------------------------------------------------------------- item 21: hostile values as data


PAYLOADS = ["$(touch {m})", "`touch {m}`", "x; touch {m}", "x' ; touch {m} ; '", "-delete"]


def test_hostile_cleanup_roots_and_certificate_paths_are_only_data(inventory: InventoryDir, ssh_rig: SshRig,
                                                                   tmp_path: Path) -> None:
    """Shell syntax in tmp_dirs/log_dirs (script arguments) and certificate paths never runs on the host."""
    marker = tmp_path / "INJECTED"
    base = tmp_path / ssh_rig.hosts[0].name
    hostile = [str(base / "srv" / p.format(m=marker)) for p in PAYLOADS]
    real = base / "srv" / PAYLOADS[0].format(m="marker-name")  # a directory that really has such a name
    old = write(real / "old.bin", "x", days=3)
    env = one_host(inventory, ssh_rig, tmp_path, "data", tmp_dirs=[*hostile, str(real)], log_dirs=hostile,
                   certificates=[{"name": f"shop{i}.test", "path": path, "endpoint": "127.0.0.1:1"}
                                 for i, path in enumerate(hostile)])
    code, doc = cli_json("tmp.cleanup", "--env", env, "--older-than", "1d")
    result = targets(doc, "tmp.cleanup")[ssh_rig.hosts[0].name]
    assert code == 0, result
    assert list(result["data"]["missing"]) == hostile and not old.exists()
    assert cli_json("logs.cleanup", "--env", env)[0] == 0
    code, doc = cli_json("certs.check", "--env", env)
    certs = targets(doc, "certs.check")[ssh_rig.hosts[0].name]["data"]["certificates"]
    assert code == 3 and all(any("does not exist" in p for p in c["problems"]) for c in certs)
    assert not marker.exists(), "an inventory value was executed as shell code"


# ---------------------------------------------------------------- item 21: cleanup's second layers


class _HandBuilt(CleanupTempFiles):
    """tmp.cleanup on a HostTarget built by a library user (not through the typed inventory)."""

    def __init__(self, target: Any) -> None:
        super().__init__(60)
        self._target = target

    def targets(self, ctx: Context) -> list[Any]:
        return [self._target]


def test_a_relative_root_is_refused_by_the_step_itself(inventory: InventoryDir, ssh_rig: SshRig,
                                                       tmp_path: Path) -> None:
    """Library use bypasses the inventory types: the step's own preflight still refuses a relative root."""
    env = inventory.load(one_host(inventory, ssh_rig, tmp_path))
    target = env.hosts()[0]
    relative = dataclasses.replace(target, settings=msgspec.structs.replace(target.settings, tmp_dirs=["srv/tmp"]))
    with Context(env, interactive=False) as ctx, pytest.raises(UsageError, match="is not an absolute path"):
        Runner(ctx).run([_HandBuilt(relative)], task="lib")


def test_apply_rechecks_that_every_path_is_under_a_root(inventory: InventoryDir, ssh_rig: SshRig,
                                                        tmp_path: Path) -> None:
    """A plan is data: apply refuses a path outside the roots (or a forbidden root) and deletes nothing."""
    host = ssh_rig.hosts[0]
    tmp = tmp_path / host.name / "tmp/indostar"
    inside = write(tmp / "old.bin", "x", days=3)
    outside = write(tmp_path / host.name / "precious/keep.db", "data", days=30)
    env = inventory.load(one_host(inventory, ssh_rig, tmp_path))
    step, target = CleanupTempFiles("1d"), env.hosts()[0]
    with Context(env, interactive=False) as ctx:
        scoped = ctx.scoped(step.name, target.name)
        plan = step.plan(step.check(scoped, target))
        change = plan.changes[0]
        assert list(change.params["paths"]) == [str(inside)]
        forged = [
            {**change.params, "paths": [str(inside), str(outside)]},
            {**change.params, "paths": [str(tmp) + "/../../precious/keep.db"]},
            {**change.params, "roots": ["/etc"], "paths": ["/etc/hostname"]},
        ]
        for params in forged:
            bad = Plan([Change(change.summary, before=list(params["paths"]), destructive=True, params=params)],
                       data=plan.data)
            with pytest.raises(StepError, match="refusing to delete"):
                step.apply(scoped, target, bad)
        assert scoped.actions == []  # refused before any write started
    assert inside.exists() and outside.exists()


def test_age_is_measured_to_the_second(inventory: InventoryDir, ssh_rig: SshRig, tmp_path: Path) -> None:
    """--older-than 2h: a file 2h+10s old goes, one 2h-10s old stays (both pass find's minute prefilter)."""
    host = ssh_rig.hosts[1]
    tmp = tmp_path / host.name / "tmp/indostar"
    older, younger = write(tmp / "older"), write(tmp / "younger")
    now = time.time()
    os.utime(older, (now - 7210, now - 7210))
    os.utime(younger, (now - 7190, now - 7190))
    env = one_host(inventory, ssh_rig, tmp_path, index=1)
    code, doc = cli_json("tmp.cleanup", "--env", env, "--older-than", "2h", "--check")
    assert code == 0 and [f["path"] for f in targets(doc, "tmp.cleanup")[host.name]["data"]["files"]] == [str(older)]
    code, doc = cli_json("tmp.cleanup", "--env", env, "--older-than", "2h")
    assert code == 0 and not older.exists() and younger.exists()


def test_a_directory_swapped_for_a_symlink_after_the_plan_is_spared(inventory: InventoryDir, ssh_rig: SshRig,
                                                                     tmp_path: Path) -> None:
    """Between plan and apply a subdirectory becomes a symlink to elsewhere: apply re-resolves and keeps it."""
    host = ssh_rig.hosts[0]
    tmp = tmp_path / host.name / "tmp/indostar"
    planned = write(tmp / "cache" / "a.bin", "x", days=3)
    elsewhere = write(tmp_path / host.name / "elsewhere" / "a.bin", "not ours", days=3)
    env = inventory.load(one_host(inventory, ssh_rig, tmp_path))
    step, target = CleanupTempFiles("1d"), env.hosts()[0]
    with Context(env, interactive=False) as ctx:
        scoped = ctx.scoped(step.name, target.name)
        plan = step.plan(step.check(scoped, target))
        planned.unlink()
        planned.parent.rmdir()
        planned.parent.symlink_to(elsewhere.parent)
        outcome = step.apply(scoped, target, plan)
    assert elsewhere.exists() and list(outcome.data["moved"]) == [str(planned)] and outcome.data["deleted"] == 0


# ---------------------------------------------------------------- item 1: written paths, disk.report roots


def test_a_config_directory_that_is_a_symlink_is_never_written_through(inventory: InventoryDir, ssh_rig: SshRig,
                                                                       tmp_path: Path) -> None:
    """logrotate_config in a symlinked directory: refused naming both paths; the symlink's target is untouched."""
    base = tmp_path / ssh_rig.hosts[0].name
    victim = base / "victim-etc"
    victim.mkdir(parents=True)
    (base / "etc").mkdir(parents=True)
    (base / "etc/logrotate.d").symlink_to(victim)
    env = one_host(inventory, ssh_rig, tmp_path)
    code, doc = cli_json("logs.install-rotation", "--env", env)
    result = targets(doc, "logs.install-rotation")[ssh_rig.hosts[0].name]
    assert code == 1 and "refusing to write through it" in result["error"]
    assert f"'{base / 'etc/logrotate.d'}' resolves to '{victim}'" in result["error"]
    assert list(victim.iterdir()) == []


def test_disk_report_measures_the_resolved_root_and_names_both(inventory: InventoryDir, ssh_rig: SshRig,
                                                               tmp_path: Path) -> None:
    """A symlinked root is resolved on the host (du/find on the real directory); a relative --roots is exit 2."""
    base = tmp_path / ssh_rig.hosts[0].name
    real = base / "data"
    write(real / "big.bin", "x" * 4096)
    alias = base / "alias"
    alias.symlink_to(real)
    env = one_host(inventory, ssh_rig, tmp_path, disk_report_roots=[str(alias)])
    code, doc = cli_json("disk.report", "--env", env)
    root = targets(doc, "disk.report")[ssh_rig.hosts[0].name]["data"]["roots"][0]
    assert code == 0 and root["root"] == str(alias) and root["resolved"] == str(real)
    assert root["largest_files"][0] == {"path": str(real / "big.bin"), "bytes": 4096}
    code, doc = cli_json("disk.report", "--env", env, "--roots", "var/log")
    assert code == 2 and "is not an absolute path" in doc["error"] and "steps" not in doc


# ---------------------------------------------------------------- item 21: docker volumes on production


def test_volume_prune_on_production_needs_yes_even_at_a_terminal(inventory: InventoryDir, ssh_rig: SshRig,
                                                                 tmp_path: Path) -> None:
    """A library/playbook run at a terminal that would confirm: still refused without --yes, nothing pruned."""
    bindir, log = tmp_path / "fakebin", tmp_path / "docker-calls.log"
    install_fake_docker(bindir, log)
    host = ssh_rig.hosts[0]
    inventory.write("prod", host_inventory(ssh_rig, [host], tmp_path, {host.name: {
        "path_prefix": [str(bindir)], "docker": {"data_root": str(tmp_path)}}}, tier="production"))
    env = inventory.load("prod")
    asked: list[str] = []
    with Context(env, interactive=True, confirm=lambda prompt: asked.append(prompt) or True) as ctx:
        with pytest.raises(ConfirmationRequired, match="needs --yes, even at a terminal"):
            Runner(ctx).run([DockerPrune(["volumes"])], task="prune")
        step, target = DockerPrune(["volumes"]), env.hosts()[0]
        plan = Plan([Change("prune unused anonymous volumes", after=["volume", "prune", "--force"],
                            destructive=True)])
        with pytest.raises(StepError, match="needs --yes"):  # apply's own guard, if preflight was skipped
            step.apply(ctx.scoped(step.name, target.name), target, plan)
    assert asked == [] and not any("prune" in call for call in read_docker_calls(log))


# ---------------------------------------------------------------- item 21: the journal's own redaction


class _StoreSecret(Step[None]):
    """Writes a resolved secret on the host; the command and summary carry it (as a careless step might)."""

    name = "test.store-secret"

    def __init__(self, path: str) -> None:
        self.path = path

    def check(self, ctx: Context, target: Any) -> None:
        ctx.env.database.password.get()

    def plan(self, state: None) -> Plan:
        return Plan([Change("store the token")])

    def apply(self, ctx: Context, target: Any, plan: Plan) -> Outcome:
        secret = ctx.env.database.password.get()
        ctx.host(target).change(["sh", "-c", f"echo {secret} > {self.path}"], f"store {secret} on the host")
        return Outcome()

    def verify(self, ctx: Context, target: Any, plan: Plan, outcome: Outcome) -> None:
        return None


def test_the_journal_redacts_what_it_is_given(inventory: InventoryDir, ssh_rig: SshRig, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """action.start is journaled before the write, straight from the step: the journal itself masks the secret."""
    monkeypatch.setenv("HARDENING_DB_PASSWORD", SECRET)
    host = ssh_rig.hosts[0]
    inventory.write("journal", host_inventory(ssh_rig, [host], tmp_path, database={
        "name": "x", "user": "x", "password": "env:HARDENING_DB_PASSWORD"}))
    env = inventory.load("journal")
    stored = tmp_path / "stored"
    with Context(env, interactive=False) as ctx:
        result = Runner(ctx).run([_StoreSecret(str(stored))], task="journal")
    assert result.results[0].status == "changed" and stored.read_text() == SECRET + "\n"
    journal = Path(result.journal or "").read_text()
    starts = [json.loads(line) for line in journal.splitlines() if '"action.start"' in line]
    assert starts and all("********" in s["summary"] for s in starts)
    assert SECRET not in journal


def test_host_upload_over_ssh_is_refused_in_check_mode(inventory: InventoryDir, ssh_rig: SshRig,
                                                       tmp_path: Path) -> None:
    """The upload write path (SFTP, and the sudo-install path) refuses in check mode: no file, no journal action."""
    env = inventory.load(one_host(inventory, ssh_rig, tmp_path))
    target = env.hosts()[0]
    dest = tmp_path / "uploaded.txt"
    for become in (False, True):
        with Context(env, check=True, interactive=False) as ctx:
            session = ctx.host(dataclasses.replace(target, become=become))
            with pytest.raises(CheckModeViolation, match="tried to write in check mode"):
                session.upload(b"data", str(dest), "upload a file")
            assert ctx.actions == []
    assert not dest.exists()


# ---------------------------------------------------------------- item 7: EPIPE


def test_output_piped_into_a_closed_reader_never_interrupts_the_run(inventory: InventoryDir, ssh_rig: SshRig,
                                                                    tmp_path: Path) -> None:
    """`invoke logs.install-rotation | head -0`: no traceback, and every host still gets its file."""
    inventory.write("pipe", host_inventory(ssh_rig, list(ssh_rig.hosts), tmp_path))
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "logs.install-rotation", "--env", "pipe"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ))
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader goes away before the first line is written
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, stderr
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr and "Exception ignored" not in stderr
    for host in ssh_rig.hosts:
        assert (tmp_path / host.name / "etc/logrotate.d/indostar").is_file()


# ---------------------------------------------------------------- item 9: an unreachable probe is UNKNOWN


def test_maintenance_status_is_unknown_when_the_site_cannot_be_probed(inventory: InventoryDir, ssh_rig: SshRig,
                                                                      tmp_path: Path) -> None:
    """probe_url on a closed port: UNKNOWN, exit 3 (never a silent OK)."""
    base = tmp_path / ssh_rig.hosts[0].name
    env = one_host(inventory, ssh_rig, tmp_path, nginx={
        "maintenance_snippet": str(base / "nginx/maintenance.conf"),
        "maintenance_flag": str(base / "flag/maintenance.on"),
        "maintenance_page_dir": str(base / "html"), "probe_url": "http://127.0.0.1:1/"})
    code, doc = cli_json("maintenance.status", "--env", env)
    result = targets(doc, "maintenance.status")[ssh_rig.hosts[0].name]
    assert code == 3 and result["severity"] == "UNKNOWN"
    assert "could not be probed" in result["reason"] and "unreachable" in result["reason"]
