"""payments.*: a real payments table, the official razorpay client against the local fake, the hook recorded."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.pg_support import PgDatabase, fresh_database
from tests.rig import fakeapis
from tests.support import InventoryDir, cli_json, run_cli


@pytest.fixture
def pg(pg_dsn: str) -> Iterator[PgDatabase]:
    yield from fresh_database(pg_dsn)


def seed(pg: PgDatabase, ids: list[str], *, minutes_apart: int = 5) -> None:
    conn = pg.connect()
    conn.execute("CREATE TABLE payments (id bigserial PRIMARY KEY, order_id bigint NOT NULL, "
                 "razorpay_payment_id text, amount numeric(12,2) NOT NULL, status text NOT NULL, "
                 "created_at timestamptz NOT NULL DEFAULT now())")
    for n, pid in enumerate(ids, 1):
        conn.execute("INSERT INTO payments (order_id, razorpay_payment_id, amount, status, created_at) "
                     "VALUES (%s, %s, 499, 'pending', now() - %s * interval '1 minute')",
                     (n, pid, n * minutes_apart))
    conn.execute("INSERT INTO payments (order_id, razorpay_payment_id, amount, status) "
                 "VALUES (999, 'pay_DONE', 10, 'captured')")


def statuses(pg: PgDatabase) -> dict[str, str]:
    with psycopg.connect(host=pg.host, port=pg.port, dbname=pg.name, user=pg.admin_user) as conn:
        return dict(conn.execute("SELECT razorpay_payment_id, status FROM payments").fetchall())


@pytest.fixture
def shop(pg: PgDatabase, inventory: InventoryDir,
         monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[PgDatabase, fakeapis.FakeApis, str]]:
    """The backend's hook does what the real one does: the payment stops being pending."""
    ids = [f"pay_T{n:03d}" for n in range(1, 7)]
    seed(pg, ids)

    def handle_success(payload: dict[str, Any]) -> None:
        with psycopg.connect(host=pg.host, port=pg.port, dbname=pg.name, user=pg.admin_user,
                             autocommit=True) as conn:
            conn.execute("UPDATE payments SET status = 'captured' WHERE razorpay_payment_id = %s",
                         (payload["razorpay_payment_id"],))

    state = fakeapis.default_state()
    state["razorpay_payments"] = {pid: ("captured" if n % 2 == 0 else "created") for n, pid in enumerate(ids, 1)}
    with fakeapis.running(state, on_reconcile=handle_success) as fake:
        for name, value in fakeapis.secrets_env(fake).items():
            monkeypatch.setenv(name, value)
        urls = fakeapis.urls(fake)
        env = pg.inventory(inventory, payments={"razorpay": urls["payments_razorpay"],
                                                "reconcile_hook": urls["reconcile_hook"], "rate_per_s": 10})
        yield pg, fake, env


def target(doc: dict[str, Any]) -> dict[str, Any]:
    (step,) = doc["steps"]
    (only,) = step["targets"]
    return only


def test_pending_lists_the_runbook_query_with_ages(shop: tuple[PgDatabase, fakeapis.FakeApis, str]) -> None:
    _pg, _fake, env = shop
    code, doc = cli_json("payments.pending", "--env", env, "--since", "22m")
    rows = target(doc)["data"]["pending"]
    assert [r["razorpay_payment_id"] for r in rows] == ["pay_T001", "pay_T002", "pay_T003", "pay_T004"]
    assert 19 < rows[-1]["age_minutes"] < 22
    assert code == 1 and doc["severity"] == "WARNING"  # oldest pending 20 min > 15 min
    code, doc = cli_json("payments.pending", "--env", env, "--since", "1x")
    assert code == 2 and "invalid age" in doc["error"]


def test_reconcile_previews_then_applies_through_the_hook_once(shop: tuple[PgDatabase, fakeapis.FakeApis, str]
                                                               ) -> None:
    """Captured upstream + pending here -> the hook, never a direct UPDATE; idempotent; rate-limited."""
    pg, fake, env = shop
    before = statuses(pg)

    code, doc = cli_json("payments.reconcile", "--env", env)  # no --yes: preview only
    assert code == 0 and doc["check"] is True
    planned = [c["summary"] for c in target(doc)["changes"]]
    assert len(planned) == 3 and all("captured at Razorpay but pending here" in s for s in planned)
    assert not fake.calls("/backend/reconcile") and statuses(pg) == before
    fetched = fake.calls("/razorpay/v1/payments/")
    assert len(fetched) == 6
    span = fetched[-1]["at"] - fetched[0]["at"]
    assert span >= 5 / 10 * 0.9  # rate_per_s 10: six calls take at least five intervals of 100 ms

    code, doc = cli_json("payments.reconcile", "--env", env, "--yes")
    assert code == 0 and target(doc)["status"] == "changed", doc
    hooks = fake.calls("/backend/reconcile", "POST")
    assert sorted(h["body"]["razorpay_payment_id"] for h in hooks) == ["pay_T002", "pay_T004", "pay_T006"]
    assert all(h["headers"]["idempotency-key"] == h["body"]["razorpay_payment_id"] for h in hooks)
    assert all(h["headers"]["authorization"] == f"Bearer {fake.state['hook_token']}" for h in hooks)
    after = statuses(pg)
    assert {k for k, v in after.items() if v != before[k]} == {"pay_T002", "pay_T004", "pay_T006"}

    code, doc = cli_json("payments.reconcile", "--env", env, "--yes")
    assert code == 0 and target(doc)["status"] == "ok" and "none is captured" in target(doc)["reason"]
    assert len(fake.calls("/backend/reconcile")) == 3
    assert "sandbox-razorpay-secret" not in json.dumps(doc)


def test_reconcile_on_production_without_yes_only_previews(shop: tuple[PgDatabase, fakeapis.FakeApis, str],
                                                        inventory: InventoryDir) -> None:
    pg, fake, _env = shop
    urls = fakeapis.urls(fake)
    prod = pg.inventory(inventory, name="prodlike", tier="production",
                        payments={"razorpay": urls["payments_razorpay"], "reconcile_hook": urls["reconcile_hook"]})
    code, doc = cli_json("payments.reconcile", "--env", prod)
    assert code == 0 and doc["check"] is True and not fake.calls("/backend/reconcile")


def test_reconcile_names_a_razorpay_outage(shop: tuple[PgDatabase, fakeapis.FakeApis, str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    _pg, _fake, env = shop
    monkeypatch.setenv("INDOSTAR_TEST_RZP_SECRET", "wrong")
    code, doc = cli_json("payments.reconcile", "--env", env, "--yes")
    assert code == 1 and "Razorpay API" in target(doc)["error"] and "wrong" not in json.dumps(doc)


def _sign(body: bytes, secret: str) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@pytest.mark.parametrize(("case", "problem"), [("valid", None), ("wrong secret", "secret"),
                                               ("re-encoded", "payload"), ("truncated", "payload"),
                                               ("short signature", "signature")])
def test_verify_webhook_tells_a_wrong_secret_from_a_bad_payload(case: str, problem: str | None, tmp_path: Path,
                                                               inventory: InventoryDir,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INDOSTAR_TEST_RZP_WEBHOOK", "whsec-test")
    monkeypatch.setenv("INDOSTAR_TEST_RZP_KEY", "k")
    monkeypatch.setenv("INDOSTAR_TEST_RZP_SECRET", "s")
    inventory.write("wh", {"tier": "staging", "connection": "local", "payments": {"razorpay": {
        "key_id": "env:INDOSTAR_TEST_RZP_KEY", "key_secret": "env:INDOSTAR_TEST_RZP_SECRET",
        "webhook_secret": "env:INDOSTAR_TEST_RZP_WEBHOOK"}}})
    raw = b'{"entity":"event","event":"payment.captured","payload":{"payment":{"entity":{"id":"pay_1"}}}}'
    signature = _sign(raw, "whsec-test")
    body = raw
    if case == "wrong secret":
        signature = _sign(raw, "old-secret")
    elif case == "re-encoded":
        body = json.dumps(json.loads(raw), indent=2).encode()
        signature = _sign(json.dumps(json.loads(body), separators=(",", ":")).encode(), "whsec-test")
    elif case == "truncated":
        body = raw[:40]
    elif case == "short signature":
        signature = signature[:20]
    payload = tmp_path / "body.json"
    payload.write_bytes(body)
    proc = run_cli("payments.verify-webhook", "--env", "wh", "--payload", str(payload), "--signature", signature)
    if problem is None:
        assert proc.returncode == 0 and "signature valid" in proc.stdout
    else:
        assert proc.returncode == 1 and f"signature INVALID ({problem})" in proc.stdout, proc.stdout
    assert "whsec-test" not in proc.stdout + proc.stderr


def test_reconcile_through_a_command_in_the_backend(shop: tuple[PgDatabase, fakeapis.FakeApis, str],
                                                    inventory: InventoryDir, tmp_path: Path) -> None:
    """The hook as a command on the backend's host: payment id and order id appended as arguments, once each."""
    import sys

    pg, fake, _env = shop
    log = tmp_path / "hook.log"
    script = tmp_path / "reconcile_one.py"
    script.write_text(
        "import sys, psycopg\n"
        f"with psycopg.connect(host={pg.host!r}, port={pg.port}, dbname={pg.name!r}, user={pg.admin_user!r}, "
        "autocommit=True) as c:\n"
        "    c.execute(\"UPDATE payments SET status = 'captured' WHERE razorpay_payment_id = %s\", (sys.argv[1],))\n"
        f"open({str(log)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n")
    urls = fakeapis.urls(fake)
    env = pg.inventory(inventory, name="cmdhook", payments={
        "razorpay": urls["payments_razorpay"], "rate_per_s": 50,
        "reconcile_hook": {"command": [sys.executable, str(script)], "host": "backend-1"}},
        groups={"web": {"hosts": {"backend-1": {"connection": "local"}}}})
    code, doc = cli_json("payments.reconcile", "--env", env, "--yes")
    assert code == 0, doc
    assert sorted(log.read_text().splitlines()) == ["pay_T002 2", "pay_T004 4", "pay_T006 6"]
    code, doc = cli_json("payments.reconcile", "--env", env, "--yes")
    assert code == 0 and len(log.read_text().splitlines()) == 3 and not fake.calls("/backend/reconcile")
