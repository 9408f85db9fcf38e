"""A local HTTP fake for the outside services the diagnose/payments/incident tasks call, recording requests.

It is `indostar_ops.sandbox_services.FakeApis` (the sandbox's own stand-in) started in-process on a
free port: Sentry's issue list, Statuspage `/api/v2/status.json` pages, Razorpay's payments API,
the company status page, a chat webhook and the backend's reconciliation hook. Tests arrange what
it answers through `state` (see `default_state()`), make a path hang with `state["hang"]`, and
assert on `requests` / `calls(prefix)`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from indostar_ops.sandbox_services import FakeApis, default_state

__all__ = ["FakeApis", "default_state", "running", "secrets_env", "urls"]


@contextmanager
def running(state: dict[str, Any] | None = None,
            on_reconcile: Callable[[dict[str, Any]], None] | None = None) -> Iterator[FakeApis]:
    fake = FakeApis(state if state is not None else default_state(), on_reconcile=on_reconcile).start()
    try:
        yield fake
    finally:
        fake.stop()


def urls(fake: FakeApis) -> dict[str, Any]:
    """Inventory sections pointing at the fake (secrets as env: references the test sets)."""
    base = fake.url
    return {
        "urls": {"health": f"{base}/backend/health"},
        "sentry": {"url": f"{base}/sentry", "organization": "indostar", "project": "backend",
                   "token": "env:INDOSTAR_TEST_SENTRY_TOKEN"},
        "status_pages": {name: f"{base}/status/{name}/api/v2/status.json"
                         for name in ("razorpay", "twilio", "sendgrid")},
        "notifications": {"status_page": {"url": f"{base}/statuspage/v1", "page_id": "pg1",
                                          "api_key": "env:INDOSTAR_TEST_STATUSPAGE_KEY"},
                          "chat": {"webhook": "env:INDOSTAR_TEST_CHAT_WEBHOOK", "channel": "#incidents"}},
        "payments_razorpay": {"api_url": f"{base}/razorpay", "key_id": "env:INDOSTAR_TEST_RZP_KEY",
                              "key_secret": "env:INDOSTAR_TEST_RZP_SECRET",
                              "webhook_secret": "env:INDOSTAR_TEST_RZP_WEBHOOK"},
        "reconcile_hook": {"url": f"{base}/backend/reconcile", "token": "env:INDOSTAR_TEST_HOOK_TOKEN"},
    }


def secrets_env(fake: FakeApis) -> dict[str, str]:
    """The values the env: references above resolve to (what the fake expects)."""
    key_id, secret = fake.state["razorpay_auth"]
    return {"INDOSTAR_TEST_SENTRY_TOKEN": fake.state["sentry_token"], "INDOSTAR_TEST_STATUSPAGE_KEY": "sp-key",
            "INDOSTAR_TEST_CHAT_WEBHOOK": f"{fake.url}/chat/hooks/T000/B000",
            "INDOSTAR_TEST_RZP_KEY": key_id, "INDOSTAR_TEST_RZP_SECRET": secret,
            "INDOSTAR_TEST_RZP_WEBHOOK": "whsec-test", "INDOSTAR_TEST_HOOK_TOKEN": fake.state["hook_token"]}
