"""The sandbox's stand-ins for outside services: Sentry, providers' status pages, Razorpay, status page, chat.

Production-free code: a tiny stdlib HTTP server that the sandbox starts on demand
(like its moto server) and the tests start in-process (tests/rig/fakeapis.py).
It serves, under one port:

- ``GET  /sentry/api/0/organizations/<org>/issues/``  Sentry's issue list (``query``
  terms filter title/culprit; ``statsPeriod``; ``Authorization: Bearer`` required)
- ``GET  /status/<provider>/api/v2/status.json``       a Statuspage-format summary
- ``GET  /razorpay/v1/payments/<id>``                  Razorpay payment (basic auth required)
- ``POST /statuspage/v1/pages/<page>/incidents``       the company status page (Statuspage API)
- ``POST /chat/...``                                   a chat webhook
- ``POST /backend/reconcile``                          the backend's reconciliation hook

Every request is recorded (``requests``; with ``record=`` also appended to a JSON-lines
file). ``state["hang"]`` maps a path prefix to seconds to stall before answering
(a hanging dependency). In the sandbox, the reconciliation hook plays the
backend: it marks the payment captured in the sandbox database, as the real
``PaymentService.handle_payment_success`` would.
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    from .inventory import Environment

__all__ = ["FakeApis", "default_state", "ensure", "main"]

DEFAULT_PORT = 14580
SANDBOX_SECRETS = {
    "INDOSTAR_SANDBOX_SENTRY_TOKEN": "sandbox-sentry-token",
    "INDOSTAR_SANDBOX_RAZORPAY_KEY_ID": "rzp_test_sandbox",
    "INDOSTAR_SANDBOX_RAZORPAY_KEY_SECRET": "sandbox-razorpay-secret",
    "INDOSTAR_SANDBOX_RAZORPAY_WEBHOOK_SECRET": "sandbox-webhook-secret",
    "INDOSTAR_SANDBOX_HOOK_TOKEN": "sandbox-hook-token",
}


def default_state() -> dict[str, Any]:
    """What the sandbox's outside world looks like: a payment error spike, Razorpay degraded."""
    now = time.time()
    return {
        "sentry_token": SANDBOX_SECRETS["INDOSTAR_SANDBOX_SENTRY_TOKEN"],
        "sentry_issues": [
            {"id": "101", "shortId": "BACKEND-101", "title": "SignatureVerificationError: Razorpay webhook signature "
             "mismatch", "culprit": "app.api.v1.webhooks.razorpay", "count_1h": 120, "userCount": 37,
             "level": "error", "permalink": "https://sentry.example/issues/101/"},
            {"id": "102", "shortId": "BACKEND-102", "title": "TimeoutError: payment capture timed out",
             "culprit": "app.services.payment_service", "count_1h": 14, "userCount": 9, "level": "error",
             "permalink": "https://sentry.example/issues/102/"},
            {"id": "103", "shortId": "BACKEND-103", "title": "KeyError: 'thumbnail'", "culprit": "app.api.v1.products",
             "count_1h": 3, "userCount": 2, "level": "error", "permalink": "https://sentry.example/issues/103/"},
        ],
        "status": {
            "razorpay": ["minor", "Partially Degraded Service"],
            "twilio": ["none", "All Systems Operational"],
            "sendgrid": ["none", "All Systems Operational"],
            "aws": ["none", "All Systems Operational"],
        },
        "razorpay_auth": [SANDBOX_SECRETS["INDOSTAR_SANDBOX_RAZORPAY_KEY_ID"],
                          SANDBOX_SECRETS["INDOSTAR_SANDBOX_RAZORPAY_KEY_SECRET"]],
        # payment id -> status upstream; the sandbox seeds the database's pending rows to match
        "razorpay_payments": {f"pay_SBX{i:04d}": ("captured" if i % 3 == 0 else "created") for i in range(1, 13)},
        "sandbox_rule": True,  # pay_SBX<n> not listed above: captured when n % 3 == 0
        "hook_token": SANDBOX_SECRETS["INDOSTAR_SANDBOX_HOOK_TOKEN"],
        "hang": {},
        "started": now,
    }


class FakeApis:
    """The server; `state` is shared with the handler threads (mutate it to change what they answer)."""

    def __init__(self, state: dict[str, Any] | None = None, *, host: str = "127.0.0.1", port: int = 0,
                 record: Path | None = None, on_reconcile: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.state = state if state is not None else default_state()
        self.requests: list[dict[str, Any]] = []
        self.record = record
        self.on_reconcile = on_reconcile
        self.reconciled: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer((host, port), _handler(self))
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.url = f"http://{host}:{self.port}"
        self._thread: threading.Thread | None = None

    def start(self) -> FakeApis:
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def log(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(entry)
            if self.record is not None:
                with self.record.open("a", encoding="utf-8") as out:
                    out.write(json.dumps(entry) + "\n")

    def calls(self, prefix: str, method: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.requests if r["path"].startswith(prefix) and method in (None, r["method"])]

    # -- routes -----------------------------------------------------------------------------

    def route(self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str],
              body: bytes) -> tuple[int, Any]:
        for prefix, seconds in dict(self.state.get("hang", {})).items():
            if path.startswith(prefix):
                time.sleep(float(seconds))
        if method == "GET" and (m := re.fullmatch(r"/sentry/api/0/organizations/([^/]+)/issues/", path)):
            return self._sentry(query, headers)
        if method == "GET" and (m := re.fullmatch(r"/status/([^/]+)/api/v2/status\.json", path)):
            found = self.state.get("status", {}).get(m.group(1))
            if found is None:
                return 404, {"error": "no such page"}
            indicator, description = found
            return 200, {"page": {"id": m.group(1), "name": m.group(1).title(), "url": f"{self.url}/status/"
                                  f"{m.group(1)}", "updated_at": "2026-01-01T00:00:00Z"},
                         "status": {"indicator": indicator, "description": description}}
        if method == "GET" and path == "/backend/health":
            code = int(self.state.get("health", 200))
            return code, {"status": "ok" if code == 200 else "unavailable"}
        if method == "GET" and (m := re.fullmatch(r"/razorpay/v1/payments/([A-Za-z0-9_]+)", path)):
            return self._razorpay(m.group(1), headers)
        if method in ("POST", "PATCH") and (m := re.fullmatch(r"/statuspage/(?:v1/)?pages/([^/]+)/incidents"
                                                                  r"(/[^/]+)?", path)):
            incident = (m.group(2) or "").lstrip("/") or f"inc_{len(self.calls('/statuspage'))}"
            return (200 if m.group(2) else 201), {"id": incident, "page_id": m.group(1)}
        if method == "POST" and path.startswith("/chat/"):
            return 200, {"ok": True}
        if method == "POST" and path == "/backend/reconcile":
            return self._reconcile(headers, body)
        return 404, {"error": f"no route {method} {path}"}

    def _sentry(self, query: dict[str, list[str]], headers: dict[str, str]) -> tuple[int, Any]:
        if headers.get("authorization") != f"Bearer {self.state.get('sentry_token')}":
            return 401, {"detail": "Invalid token"}
        terms = [t.lower() for t in " ".join(query.get("query", [""])).split() if ":" not in t]
        issues = []
        for issue in self.state.get("sentry_issues", []):
            text = f"{issue['title']} {issue['culprit']}".lower()
            if terms and not any(t in text for t in terms):
                continue
            period = query.get("statsPeriod", ["24h"])[0]
            count = issue["count_1h"] if period == "1h" else issue["count_1h"] * 24
            issues.append({**{k: v for k, v in issue.items() if k != "count_1h"}, "count": str(count),
                           "status": "unresolved", "lastSeen": "2026-01-01T00:00:00Z"})
        issues.sort(key=lambda i: -int(i["count"]))
        limit = int(query.get("limit", ["25"])[0])
        return 200, issues[:limit]

    def _razorpay(self, payment_id: str, headers: dict[str, str]) -> tuple[int, Any]:
        key_id, secret = self.state.get("razorpay_auth", ["", ""])
        expected = "Basic " + base64.b64encode(f"{key_id}:{secret}".encode()).decode()
        if headers.get("authorization") != expected:
            return 401, {"error": {"code": "BAD_REQUEST_ERROR", "description": "Authentication failed"}}
        status = self.state.get("razorpay_payments", {}).get(payment_id)
        numbered = re.fullmatch(r"pay_SBX(\d+)", payment_id)
        if status is None and numbered and self.state.get("sandbox_rule"):
            status = "captured" if int(numbered.group(1)) % 3 == 0 else "created"  # the sandbox's later payments
        if status is None:
            return 400, {"error": {"code": "BAD_REQUEST_ERROR", "description": "The id provided does not exist"}}
        return 200, {"id": payment_id, "entity": "payment", "status": status, "amount": 49900, "currency": "INR",
                     "captured": status == "captured"}

    def _reconcile(self, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        if headers.get("authorization") != f"Bearer {self.state.get('hook_token')}":
            return 401, {"detail": "bad token"}
        payload = json.loads(body or b"{}")
        key = str(payload.get("razorpay_payment_id"))
        with self._lock:
            first = key not in self.reconciled
            self.reconciled.setdefault(key, payload)
        if first and self.on_reconcile is not None:
            self.on_reconcile(payload)
        return 200, {"reconciled": key, "duplicate": not first}


def _handler(app: FakeApis) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self, method: str) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            entry: dict[str, Any] = {"method": method, "path": parts.path, "query": parts.query,
                                     "headers": headers, "at": time.time()}
            try:
                entry["body"] = json.loads(body) if body else None
            except ValueError:
                entry["body"] = body.decode("utf-8", "replace")
            app.log(entry)
            status, payload = app.route(method, parts.path, parse_qs(parts.query), headers, body)
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                return

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_PATCH(self) -> None:
            self._serve("PATCH")

        def log_message(self, *_args: Any) -> None:
            return

    return Handler


# ---------------------------------------------------------------- the sandbox's copy, started on demand

_ENSURED: set[str] = set()
_ENSURE_LOCK = threading.Lock()


def secrets_for_sandbox() -> None:
    """The sandbox inventory's `env:INDOSTAR_SANDBOX_*` secret references resolve to these fake values."""
    for name, value in SANDBOX_SECRETS.items():
        os.environ.setdefault(name, value)


def ensure(env: Environment) -> str:
    """Start the sandbox's fake outside services (once), seed its payments/slow table/queue; return the URL."""
    from .inventory import sandbox_root
    from .sandbox import _alive, _listening

    secrets_for_sandbox()
    port = env.sandbox.services_port if env.sandbox else DEFAULT_PORT
    url = f"http://127.0.0.1:{port}"
    root = sandbox_root()
    with _ENSURE_LOCK:
        if str(root) in _ENSURED:
            return url
        root.mkdir(parents=True, exist_ok=True)
        pidfile = root / "services.pid"
        if not (_listening(port) and pidfile.is_file() and _alive(pidfile)):
            if _listening(port):
                from .errors import UsageError

                raise UsageError(f"port {port} is taken by another program, so the sandbox's fake services "
                                 "cannot start", hint="set sandbox.services_port in inventory/sandbox.yaml")
            _spawn(env, port, root)
        _seed(env)
        _ENSURED.add(str(root))
    return url


def _spawn(env: Environment, port: int, root: Path) -> None:
    import subprocess
    import sys

    log = (root / "services.log").open("ab")
    argv = [sys.executable, "-m", "indostar_ops.sandbox_services", "--port", str(port),
            "--record", str(root / "services-requests.jsonl")]
    db = env.database
    if db is not None:
        argv += ["--dsn", f"host={db.host} port={db.port} dbname={db.name} user={db.admin_user or db.user}"]
    process = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    (root / "services.pid").write_text(str(process.pid))
    from .sandbox import _listening

    deadline = time.monotonic() + 10
    while not _listening(port):  # start-up of a local child, not a wait on the environment
        if time.monotonic() > deadline or process.poll() is not None:
            from .errors import UsageError

            raise UsageError("the sandbox's fake services did not start", hint=f"see {root / 'services.log'}")
        time.sleep(0.05)


def _seed(env: Environment) -> None:
    """Sandbox provisioning (like racking a server, not a step): pending payments, a table read by sequential
    scans, and a Celery queue backlog, once per sandbox database."""
    import psycopg
    from psycopg import sql

    db = env.database
    if db is not None:
        from .sandbox import ensure_database

        ensure_database(env)
        schema, table = (env.payments.schema, env.payments.table) if env.payments else ("public", "payments")
        with psycopg.connect(host=db.host, port=db.port, dbname=db.name, user=db.admin_user or db.user,
                             autocommit=True, connect_timeout=db.connect_timeout) as conn:
            exists = conn.execute("SELECT to_regclass(%s)", (f"{schema}.{table}",)).fetchone()
            if exists and exists[0] is None:
                ident = sql.Identifier(schema, table)
                conn.execute(sql.SQL(
                    "CREATE TABLE {} (id bigserial PRIMARY KEY, order_id bigint NOT NULL, "
                    "razorpay_payment_id text UNIQUE, amount numeric(12,2) NOT NULL, status text NOT NULL, "
                    "created_at timestamptz NOT NULL DEFAULT now())").format(ident))
                conn.execute(sql.SQL(
                    "INSERT INTO {} (order_id, razorpay_payment_id, amount, status, created_at) "
                    "SELECT g, 'pay_SBX' || lpad(g::text, 4, '0'), 499, 'pending', now() - g * interval '4 minutes' "
                    "FROM generate_series(1, 12) g").format(ident))
                conn.execute(sql.SQL(
                    "INSERT INTO {} (order_id, razorpay_payment_id, amount, status, created_at) "
                    "SELECT 1000 + g, 'pay_OLD' || g, 799, CASE WHEN g % 9 = 0 THEN 'failed' ELSE 'captured' END, "
                    "now() - g * interval '5 minutes' FROM generate_series(1, 300) g").format(ident))
                conn.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(ident, sql.Identifier(db.user)))
                # a large table read only by sequential scans: what diagnose.slow's index advice looks for
                conn.execute("CREATE TABLE IF NOT EXISTS products (id bigserial PRIMARY KEY, category_id int, "
                             "name text)")
                conn.execute("INSERT INTO products (category_id, name) SELECT g % 40, 'product ' || g "
                             "FROM generate_series(1, 30000) g")
                conn.execute("ANALYZE products")
                for _ in range(5):
                    conn.execute("SELECT count(*) FROM products WHERE category_id = 7")
                conn.execute(sql.SQL("ALTER TABLE products OWNER TO {}").format(sql.Identifier(db.user)))
            _fresh_pending(conn, sql.Identifier(schema, table))
    if env.redis is not None:
        import redis

        client = redis.Redis.from_url(env.redis.url, socket_timeout=env.redis.socket_timeout)
        try:
            # a backlog on a queue the demo app's worker does not consume (it serves `celery`)
            if "emails" in env.redis.queues and client.set("indostar:sandbox:queue-seeded", "1", nx=True):
                body = json.dumps({"task": "app.tasks.send_order_email", "args": [1]})
                client.rpush("emails", *([body] * 1500))
        finally:
            client.close()


def _fresh_pending(conn: Any, table: Any) -> None:
    """Keep the demo current: when nothing is pending in the last hour, a few new payments are."""
    from psycopg import sql

    recent = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE status = 'pending' "
                                  "AND created_at > now() - interval '1 hour'").format(table)).fetchone()
    if recent and recent[0]:
        return
    last = conn.execute(sql.SQL("SELECT coalesce(max(substring(razorpay_payment_id FROM '^pay_SBX([0-9]+)$')::int), 0) "
                                "FROM {}").format(table)).fetchone()
    start = int(last[0] if last else 0) + 1
    conn.execute(sql.SQL("INSERT INTO {} (order_id, razorpay_payment_id, amount, status, created_at) "
                         "SELECT 5000 + g, 'pay_SBX' || lpad(g::text, 4, '0'), 499, 'pending', "
                         "now() - (g - %s::int + 1) * interval '7 minutes' "
                         "FROM generate_series(%s::int, %s::int) g").format(table),
                 (start, start, start + 5))


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="the sandbox's fake outside services")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--record", type=Path)
    parser.add_argument("--dsn", help="sandbox database the reconciliation hook updates (the fake backend)")
    args = parser.parse_args(argv)

    def mark_captured(payload: dict[str, Any]) -> None:
        if not args.dsn:
            return
        import psycopg

        with psycopg.connect(args.dsn, autocommit=True) as conn:
            conn.execute("UPDATE payments SET status = 'captured' WHERE razorpay_payment_id = %s "
                         "AND status = 'pending'", (payload.get("razorpay_payment_id"),))

    FakeApis(port=args.port, record=args.record, on_reconcile=mark_captured).server.serve_forever()


if __name__ == "__main__":
    main()
