"""A local HTTP server that records every request: a Statuspage-compatible API, a chat webhook and
whatever plain routes a test needs (health endpoint, smoke URLs).

    with Recorder() as rec:
        rec.route("GET", "/health", 200, b"ok")
        rec.fail("/hooks/chat", times=1)          # the next request there answers 500
        ... rec.url ... rec.requests ...

Statuspage subset: POST /v1/pages/<page>/incidents (201, returns id and created_at), PATCH
/v1/pages/<page>/incidents/<id>, GET /v1/pages/<page>/incidents/{scheduled,active_maintenance}.
`rec.incidents` is the fake page's state; a test may seed one (e.g. posted two days ago).
"""

from __future__ import annotations

import itertools
import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: Any

    @property
    def text(self) -> str:
        return json.dumps(self.body)


@dataclass
class Recorder:
    requests: list[Request] = field(default_factory=list)
    incidents: dict[str, dict[str, Any]] = field(default_factory=dict)
    routes: dict[tuple[str, str], tuple[int, bytes]] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:
                return

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except json.JSONDecodeError:
                    body = raw.decode(errors="replace")
                status, payload = recorder._answer(self.command, self.path, dict(self.headers), body)
                self.send_response(status)
                self.send_header("Content-Type", "application/json" if payload[:1] in (b"{", b"[") else "text/plain")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # -- test API ---------------------------------------------------------------

    def start(self) -> Recorder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Recorder:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def route(self, method: str, path: str, status: int = 200, body: bytes = b"ok") -> None:
        self.routes[(method, path)] = (status, body)

    def fail(self, path_prefix: str, times: int = 1) -> None:
        """The next `times` requests under `path_prefix` answer 500."""
        self.failures[path_prefix] = times

    def seed_incident(self, **fields: Any) -> str:
        with self._lock:
            ident = f"inc-{next(self._ids)}"
            self.incidents[ident] = {"id": ident, **fields}
        return ident

    def paths(self, method: str | None = None) -> list[str]:
        return [r.path for r in self.requests if method is None or r.method == method]

    # -- server side ----------------------------------------------------------------

    def _answer(self, method: str, path: str, headers: dict[str, str], body: Any) -> tuple[int, bytes]:
        with self._lock:
            self.requests.append(Request(method, path, headers, body))
            for prefix, left in self.failures.items():
                if left > 0 and path.startswith(prefix):
                    self.failures[prefix] = left - 1
                    return 500, b'{"error": "injected failure"}'
            if (method, path) in self.routes:
                return self.routes[(method, path)]
            parts = path.strip("/").split("/")
            # /v1/pages/<page>/incidents[/<id>|/scheduled|/active_maintenance]
            if len(parts) >= 4 and parts[1] == "pages" and parts[3] == "incidents":
                return self._statuspage(method, parts[4:], body)
            if method == "POST" and path.startswith("/hooks/"):
                return 200, b"ok"
            return 404, b"not found"

    def _statuspage(self, method: str, rest: list[str], body: Any) -> tuple[int, bytes]:
        now = datetime.now(UTC).isoformat()
        if method == "POST" and not rest:
            ident = f"inc-{next(self._ids)}"
            self.incidents[ident] = {"id": ident, "created_at": now, **(body or {}).get("incident", {})}
            return 201, json.dumps(self.incidents[ident]).encode()
        if method == "GET" and rest in (["scheduled"], ["active_maintenance"]):
            wanted = "scheduled" if rest == ["scheduled"] else "in_progress"
            return 200, json.dumps([i for i in self.incidents.values() if i.get("status") == wanted]).encode()
        if method == "PATCH" and len(rest) == 1 and rest[0] in self.incidents:
            self.incidents[rest[0]].update((body or {}).get("incident", {}))
            return 200, json.dumps(self.incidents[rest[0]]).encode()
        return 404, b'{"error": "not found"}'
