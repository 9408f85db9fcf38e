"""Runbook "Payment Processing Failures": pending payments, webhook signatures, reconciliation with Razorpay.

The database is only read here. Reconciliation never writes payment rows: for
each payment pending here but captured at Razorpay (official `razorpay` client,
rate-limited), it calls the backend's reconciliation hook from the inventory (an
HTTP endpoint, or a command run where the backend runs), which does what
`PaymentService.handle_payment_success` does in the runbook's script. The hook
gets an idempotency key (the payment id), and a payment the hook has handled is
no longer pending, so a second run finds nothing to do.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import json
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import StepError, UsageError
from ..severity import Severity
from ..step import Change, EnvTarget, Outcome, Plan, Step
from ..units import describe_age, parse_age

if TYPE_CHECKING:
    from ..context import Context

__all__ = ["PendingPayments", "Reconcile", "VerifyWebhook", "diagnose_signature", "payment_counts"]

_PAYMENT_ID = re.compile(r"^pay_[A-Za-z0-9]{1,40}$")


def _table(ctx: Context) -> Any:
    from psycopg import sql

    p = ctx.env.payments
    assert p is not None
    return sql.Identifier(p.schema, p.table)


def _ensure_sandbox(ctx: Context) -> None:
    if ctx.env.sandbox is not None:
        from ..sandbox_services import ensure

        ensure(ctx.env)


def payment_counts(ctx: Context) -> dict[str, Any]:
    """Pending in the last hour (the runbook's query), the oldest pending of the last day, failures per hour."""
    from psycopg import sql

    rows = ctx.postgres().fetch(sql.SQL(
        "SELECT count(*) FILTER (WHERE status = 'pending' AND created_at > now() - interval '1 hour') AS pending_1h, "
        "count(*) FILTER (WHERE status = 'pending' AND created_at > now() - interval '24 hours') AS pending_24h, "
        "extract(epoch FROM now() - min(created_at) FILTER (WHERE status = 'pending' "
        "  AND created_at > now() - interval '24 hours'))::float8 / 60 AS oldest_pending_minutes, "
        "count(*) FILTER (WHERE status = 'failed' AND created_at > now() - interval '1 hour') AS failed_1h "
        "FROM {}").format(_table(ctx)))
    row = rows[0]
    oldest = row["oldest_pending_minutes"]
    return {"pending_1h": int(row["pending_1h"]), "pending_24h": int(row["pending_24h"]),
            "oldest_pending_minutes": round(float(oldest), 1) if oldest is not None else None,
            "failed_1h": int(row["failed_1h"])}


def _pending(ctx: Context, since_s: int, limit: int) -> list[dict[str, Any]]:
    from psycopg import sql

    rows = ctx.postgres().fetch(sql.SQL(
        "SELECT id, order_id, razorpay_payment_id, amount::float8 AS amount, status, created_at, "
        "extract(epoch FROM now() - created_at)::float8 / 60 AS age_minutes FROM {} "
        "WHERE status = 'pending' AND created_at > now() - make_interval(secs => %s) "
        "ORDER BY created_at DESC LIMIT %s").format(_table(ctx)), (since_s, limit))
    return [{**r, "created_at": r["created_at"].isoformat(), "age_minutes": round(r["age_minutes"], 1)}
            for r in rows]


# ---------------------------------------------------------------- payments.pending


@dataclass
class PendingState:
    rows: list[dict[str, Any]]
    since_s: int
    counts: dict[str, Any]
    stuck_warning: float
    stuck_critical: float


class PendingPayments(Step[PendingState]):
    """Payments pending in the database (the runbook's query), newest first, with their age."""

    name = "payments.pending"
    scope = "env"
    read_only = True
    needs = ("database", "payments")

    def __init__(self, since: str = "1h", limit: int = 100) -> None:
        self.since = since
        self.limit = limit

    def preflight(self, ctx: Context) -> None:
        super().preflight(ctx)
        parse_age(self.since)
        if self.limit < 1:
            raise UsageError("--limit must be at least 1")

    def check(self, ctx: Context, target: EnvTarget) -> PendingState:
        _ensure_sandbox(ctx)
        t = ctx.env.thresholds.pending_payment_minutes
        return PendingState(_pending(ctx, parse_age(self.since), self.limit), parse_age(self.since),
                            payment_counts(ctx), t.warning, t.critical)

    def plan(self, state: PendingState) -> Plan:
        rows = state.rows
        oldest = max((r["age_minutes"] for r in rows), default=0.0)
        severity = (Severity.CRITICAL if oldest > state.stuck_critical else
                    Severity.WARNING if oldest > state.stuck_warning else Severity.OK)
        head = f"{len(rows)} payment(s) pending in the last {describe_age(state.since_s)}"
        if rows:
            head += f"; oldest {oldest:.0f} min (stuck above {state.stuck_warning:g} min)"
            head += "\n" + "\n".join(f"  {r['razorpay_payment_id'] or '-':<22} order {r['order_id']:<8} "
                                     f"{r['amount']:>10.2f}  {r['age_minutes']:>6.0f} min" for r in rows[:20])
        return Plan.nothing(head, severity=severity, data={"pending": rows, "counts": state.counts,
                                                           "since": describe_age(state.since_s)})


# ---------------------------------------------------------------- payments.verify-webhook


def diagnose_signature(body: bytes, signature: str, secret: str) -> dict[str, Any]:
    """Razorpay signs the raw request body with HMAC-SHA256 (hex). Tell a wrong secret from a bad payload."""
    sig = signature.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", sig):
        return {"valid": False, "problem": "signature",
                "detail": f"the signature is not 64 hex characters (got {len(sig)}): copy the whole "
                          "X-Razorpay-Signature header"}

    def mac(data: bytes) -> str:
        return hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()

    if hmac.compare_digest(mac(body), sig):
        return {"valid": True, "problem": None, "detail": "signature matches the raw body and the webhook secret"}
    try:
        event = json.loads(body)
    except ValueError:
        return {"valid": False, "problem": "payload",
                "detail": "the payload is not valid JSON: a truncated or altered body (it must be the raw "
                          "request body, byte for byte)"}
    variants = {"compact": json.dumps(event, separators=(",", ":")).encode(),
                "spaced": json.dumps(event).encode(), "pretty": json.dumps(event, indent=2).encode(),
                "stripped": body.strip(), "with newline": body.rstrip(b"\n") + b"\n"}
    for label, variant in variants.items():
        if variant != body and hmac.compare_digest(mac(variant), sig):
            return {"valid": False, "problem": "payload",
                    "detail": f"the secret is right but the body was re-encoded ({label}) before verification: "
                              "verify the raw request bytes, not re-serialized JSON"}
    looks_like_event = isinstance(event, dict) and "event" in event and "payload" in event
    return {"valid": False, "problem": "secret",
            "detail": "the body is " + ("a well-formed Razorpay event" if looks_like_event else "valid JSON")
                      + " but the signature was made with another secret: the backend's RAZORPAY_WEBHOOK_SECRET "
                        "differs from the one set for this webhook in the Razorpay dashboard"}


@dataclass
class WebhookState:
    result: dict[str, Any]
    payload: str


class VerifyWebhook(Step[WebhookState]):
    """Check a webhook body and X-Razorpay-Signature against the environment's webhook secret (HMAC-SHA256)."""

    name = "payments.verify-webhook"
    scope = "env"
    read_only = True
    needs = ("payments",)

    def __init__(self, payload: str, signature: str) -> None:
        self.payload = payload
        self.signature = signature

    def preflight(self, ctx: Context) -> None:
        super().preflight(ctx)
        rp = ctx.env.payments.razorpay if ctx.env.payments else None
        if rp is None or rp.webhook_secret is None:
            raise UsageError(f"environment {ctx.env.name!r} has no payments.razorpay.webhook_secret",
                             hint="add it as a secret reference (env:/ssm:/secretsmanager:)")
        if not self.payload or not self.signature:
            raise UsageError("--payload FILE and --signature SIG are both required")

    def check(self, ctx: Context, target: EnvTarget) -> WebhookState:
        path = Path(self.payload)
        try:
            body = path.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read the payload {path}: {exc.strerror or exc}") from None
        payments = ctx.env.payments
        assert payments is not None and payments.razorpay is not None and payments.razorpay.webhook_secret
        return WebhookState(diagnose_signature(body, self.signature, payments.razorpay.webhook_secret.get()),
                            str(path))

    def plan(self, state: WebhookState) -> Plan:
        result = state.result
        if not result["valid"]:
            hint = {"secret": "compare the webhook secret in the Razorpay dashboard with the backend's "
                              "RAZORPAY_WEBHOOK_SECRET, then update the one that is wrong",
                    "payload": "capture the raw request body (no JSON re-encoding) and verify again",
                    "signature": "pass the X-Razorpay-Signature header value exactly"}[result["problem"]]
            raise StepError(f"{state.payload}: signature INVALID ({result['problem']}): {result['detail']}",
                            hint=hint)
        return Plan.nothing(f"{state.payload}: signature valid ({result['detail']})", data=result)


# ---------------------------------------------------------------- payments.reconcile


class _RateLimit:
    """At most `per_s` calls a second across threads (Razorpay's API limits)."""

    def __init__(self, per_s: float) -> None:
        self.interval = 1.0 / per_s
        self._next = 0.0
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        with self._lock:
            now = time.monotonic()
            wait = self._next - now
            self._next = max(now, self._next) + self.interval
        if wait > 0:
            time.sleep(wait)

    def __exit__(self, *_exc: object) -> None:
        return None


def razorpay_client(ctx: Context) -> Any:
    """The official client, pointed at the inventory's API URL, with a timeout on every request."""
    import razorpay
    import requests

    rp = ctx.env.payments.razorpay if ctx.env.payments else None
    assert rp is not None
    timeout = ctx.env.diagnose.probe_timeout_s

    class TimedSession(requests.Session):
        def request(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
            kwargs.setdefault("timeout", timeout)
            return super().request(*args, **kwargs)

    return razorpay.Client(session=TimedSession(), auth=(rp.key_id.get(), rp.key_secret.get()),
                           base_url=rp.api_url.rstrip("/"))


@dataclass
class ReconcileState:
    pending: list[dict[str, Any]]
    upstream: dict[str, str] = field(default_factory=dict)  # payment id -> Razorpay status / error
    since_s: int = 0


class Reconcile(Step[ReconcileState]):
    """Payments pending here but captured at Razorpay, handed to the backend's reconciliation hook."""

    name = "payments.reconcile"
    scope = "env"
    needs = ("database", "payments")
    irreversible = "the backend's hook completes the order (confirmation, emails); a capture is not undone"

    def __init__(self, since: str = "24h") -> None:
        self.since = since

    def preflight(self, ctx: Context) -> None:
        super().preflight(ctx)
        parse_age(self.since)
        p = ctx.env.payments
        assert p is not None
        if p.razorpay is None:
            raise UsageError(f"environment {ctx.env.name!r} has no payments.razorpay (API URL and keys)")
        hook = p.reconcile_hook
        if hook is None or (hook.url is None) == (hook.command is None):
            raise UsageError(f"environment {ctx.env.name!r}: payments.reconcile_hook needs exactly one of url or "
                             "command", hint="the backend's reconciliation endpoint, or the command that runs its "
                                             "reconciliation for one payment (payment id and order id appended)")
        if hook.command is not None:
            hosts = [h.name for h in ctx.env.hosts()]
            if hook.host not in hosts:
                raise UsageError(f"payments.reconcile_hook.host {hook.host!r} is not a host of {ctx.env.name!r}",
                                 hint=f"known hosts: {', '.join(hosts) or '(none)'}")

    def check(self, ctx: Context, target: EnvTarget) -> ReconcileState:
        import requests

        _ensure_sandbox(ctx)
        payments = ctx.env.payments
        assert payments is not None
        since_s = parse_age(self.since)
        state = ReconcileState(_pending(ctx, since_s, payments.max_per_run), since_s=since_s)
        client = razorpay_client(ctx)
        limit = _RateLimit(payments.rate_per_s)
        from razorpay.errors import BadRequestError, GatewayError, ServerError

        for row in state.pending:
            pid = row["razorpay_payment_id"]
            if not pid or not _PAYMENT_ID.match(pid):
                state.upstream[str(pid)] = "invalid id"
                continue
            try:
                with limit, contextlib.redirect_stdout(io.StringIO()):  # the client prints on network errors
                    state.upstream[pid] = str(client.payment.fetch(pid).get("status"))
            except BadRequestError as exc:
                if "authentication" in str(exc).lower():
                    raise StepError(f"Razorpay API at {payments.razorpay.api_url if payments.razorpay else '?'} "
                                    f"rejected the key pair: {exc}",
                                    hint="invalid API keys (runbook cause 4): check payments.razorpay.key_id/"
                                         "key_secret against the Razorpay dashboard") from None
                state.upstream[pid] = f"error: {exc}"
            except (GatewayError, ServerError, requests.RequestException) as exc:
                raise StepError(f"Razorpay API at {payments.razorpay.api_url if payments.razorpay else '?'} "
                                f"failed for {pid}: {exc}",
                                hint="check the Razorpay status page (diagnose.payments) and the API keys") from None
        return state

    def plan(self, state: ReconcileState) -> Plan:
        changes = []
        for row in state.pending:
            pid = row["razorpay_payment_id"]
            if state.upstream.get(pid) == "captured":
                changes.append(Change(
                    f"payment {pid} (order {row['order_id']}) is captured at Razorpay but pending here: "
                    "hand it to the backend's reconciliation hook",
                    before="pending", after="captured",
                    params={"payment_id": pid, "order_id": row["order_id"]}))
        data = {"pending": len(state.pending), "upstream": state.upstream,
                "since": describe_age(state.since_s), "to_reconcile": [c.params["payment_id"] for c in changes]}
        if not changes:
            return Plan.nothing(f"{len(state.pending)} payment(s) pending in the last {describe_age(state.since_s)}; "
                                "none is captured at Razorpay", data=data)
        return Plan(changes=tuple(changes), data=data)

    def apply(self, ctx: Context, target: EnvTarget, plan: Plan) -> Outcome:
        payments = ctx.env.payments
        assert payments is not None and payments.reconcile_hook is not None
        hook = payments.reconcile_hook
        done = []
        for change in plan.changes:
            pid, order = str(change.params["payment_id"]), change.params["order_id"]
            summary = f"reconcile {pid} (order {order}) through the backend's hook"
            if hook.url is not None:
                headers = {"Idempotency-Key": pid}
                if hook.token is not None:
                    headers["Authorization"] = f"Bearer {hook.token.get()}"
                status, body = ctx.http().send("POST", hook.url, summary=summary, headers=headers,
                                               json_body={"razorpay_payment_id": pid, "order_id": order})
                if not 200 <= status < 300:
                    raise StepError(f"reconciliation hook {hook.url} answered {status} for {pid}: "
                                    f"{body[:200].decode('utf-8', 'replace')}",
                                    hint="check the backend's logs; re-running is safe (idempotent)")
            else:
                assert hook.command is not None
                host = next(h for h in ctx.env.hosts() if h.name == hook.host)
                ctx.host(host).change([*hook.command, pid, str(order)], summary)
            done.append(pid)
        return Outcome(reason=f"{len(done)} payment(s) handed to the reconciliation hook", data={"reconciled": done})
