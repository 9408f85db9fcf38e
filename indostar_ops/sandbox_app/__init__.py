"""The sandbox's demo application: a miniature of production's backend and Celery workers.

Not part of the operations library: the sandbox's `local` platform copies this
package into a release directory (`<root>/releases/<n>/demo/`, next to that
release's `config.json`) and runs it from there:

- `web.py`: FastAPI on uvicorn: `/health`, `/api/v1/orders/{id}` (sandbox PostgreSQL,
  cached in Redis), `/api/v1/webhooks/razorpay` (HMAC-SHA256 signature check).
- `worker.py`: a Celery worker on the local Redis: `demo.send_mail` appends to the sandbox
  outbox, `demo.fail_on_purpose` fails so failed-task handling has something real to show
  (failures are pushed to the failed queue as JSON records).
- `config.py`: the release's configuration.

It imports nothing from `indostar_ops`, so a release directory is self-contained. Its
third-party packages (fastapi, uvicorn, celery) are the `sandbox` extra.
"""
