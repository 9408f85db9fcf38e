"""Runbook "Payment Processing Failures": pending payments, webhook signatures, reconciliation with Razorpay."""

from __future__ import annotations

from invoke import task

from ._help import common


@task(help=common(changes=False, since="how far back (e.g. 1h, 30m, 2d; default 1h)",
                  limit="at most this many rows (default 100)"))
def pending(c, env=None, check=False, json=False, since="1h", limit=100):
    """Payments pending in the database (the runbook's query) with their age; WARNING/CRITICAL when stuck."""
    from ..cli import run_steps
    from ..steps.payments import PendingPayments

    run_steps("payments.pending", env=env, check=check, json=json, monitoring=True,
              build=lambda _env: [PendingPayments(since=since, limit=int(limit))])


@task(help=common(changes=False, payload="file with the raw webhook request body",
                  signature="the X-Razorpay-Signature header value"))
def verify_webhook(c, env=None, check=False, json=False, payload="", signature=""):
    """HMAC-SHA256 check of a webhook body with the environment's webhook secret: wrong secret or bad payload?"""
    from ..cli import run_steps
    from ..steps.payments import VerifyWebhook

    run_steps("payments.verify-webhook", env=env, check=check, json=json,
              build=lambda _env: [VerifyWebhook(payload=payload, signature=signature)])


@task(help=common(since="how far back to look for pending payments (default 24h)"))
def reconcile(c, env=None, check=False, json=False, yes=False, since="24h"):
    """Payments captured at Razorpay but pending here -> the backend's reconciliation hook (only with --yes)."""
    from ..cli import run_steps
    from ..steps.payments import Reconcile

    if not yes and not check:
        import sys

        sys.stderr.write("payments.reconcile: previewing only; re-run with --yes to apply through the hook\n")
    run_steps("payments.reconcile", env=env, check=check or not yes, json=json, yes=yes,
              build=lambda _env: [Reconcile(since=since)])
