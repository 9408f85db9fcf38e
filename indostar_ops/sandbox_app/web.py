"""The demo backend: FastAPI with /health, a cached orders endpoint and the Razorpay webhook.

Run by the sandbox platform as `python -m uvicorn demo.web:app` from a release directory.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import time
from typing import Any

import psycopg
import redis
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from .config import load

config = load()
log = logging.getLogger("demo")
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

app = FastAPI(title="IndoStar demo backend", version=config.release)
cache = redis.Redis.from_url(config.redis_url, socket_timeout=2, socket_connect_timeout=2, decode_responses=True)
STARTED = time.time()


def _db() -> psycopg.Connection[Any]:
    db = config.database
    return psycopg.connect(host=db["host"], port=db["port"], dbname=db["name"], user=db["user"],
                           connect_timeout=3, autocommit=True, application_name="demo-backend")


@app.get("/health")
def health() -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        cache.ping()
        checks["redis"] = "ok"
    except redis.RedisError as exc:
        checks["redis"] = f"error: {exc}"
    try:
        with _db() as conn:
            conn.execute("SELECT 1")
        checks["database"] = "ok"
    except psycopg.Error as exc:
        checks["database"] = f"error: {str(exc).strip().splitlines()[0]}"
    healthy = all(v == "ok" for v in checks.values())
    body = {"status": "ok" if healthy else "degraded", "release": config.release, "pid": os.getpid(),
            "uptime_s": round(time.time() - STARTED, 1), "checks": checks}
    return JSONResponse(body, status_code=200 if healthy else 503)


@app.get("/api/v1/orders/{order_id}")
def order(order_id: int) -> dict[str, Any]:
    key = f"orders:{order_id}"
    cached = cache.get(key)
    if cached is not None:
        return {**json.loads(cached), "cache": "hit"}
    with _db() as conn:
        row = conn.execute("SELECT id, user_id, status, created_at FROM orders WHERE id = %s", (order_id,)).fetchone()
    if row is None:
        raise HTTPException(status_code=404, detail=f"order {order_id} not found")
    data = {"id": row[0], "user_id": row[1], "status": row[2], "created_at": row[3].isoformat()}
    cache.set(key, json.dumps(data), ex=config.cache_ttl_s)
    return {**data, "cache": "miss"}


@app.post("/api/v1/webhooks/razorpay")
async def razorpay_webhook(request: Request) -> JSONResponse:
    body = await request.body()
    given = request.headers.get("X-Razorpay-Signature", "")
    expected = hmac.new(config.webhook_secret, body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(given, expected):
        log.error("webhook signature mismatch (X-Razorpay-Signature %s)", "missing" if not given else "invalid")
        return JSONResponse({"error": "invalid signature"}, status_code=400)
    try:
        event = json.loads(body)
        payment = event["payload"]["payment"]["entity"]
        order_id = int(payment.get("notes", {}).get("order_id"))
    except (ValueError, KeyError, TypeError):
        log.error("webhook payload not understood")
        return JSONResponse({"error": "unexpected payload"}, status_code=422)
    status = "paid" if event.get("event") == "payment.captured" else "payment_failed"
    with _db() as conn:
        updated = conn.execute("UPDATE orders SET status = %s WHERE id = %s", (status, order_id)).rowcount
    cache.delete(f"orders:{order_id}")
    log.info("webhook %s %s order %s: %s", event.get("event"), payment.get("id"), order_id,
             status if updated else "order not found")
    if updated and status == "paid":
        from .worker import send_mail

        send_mail.delay(payment.get("email") or "customer@example.com", f"Order {order_id}: payment received")
    return JSONResponse({"ok": True, "order": order_id, "status": status, "updated": bool(updated)})
