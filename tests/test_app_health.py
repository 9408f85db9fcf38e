"""app.health: a real HTTP server on loopback; the timing breakdown against the response-time thresholds."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.app_support import task_fixture  # noqa: F401 - the `task` fixture
from tests.support import InventoryDir, cli_json


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/slow":
            time.sleep(0.4)  # the server under test is slow; nothing here waits for a result
        code = 503 if self.path == "/down" else 200
        body = b'{"status": "ok"}' if code == 200 else b'{"status": "database unreachable"}'
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        return


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://localhost:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def env(inventory: InventoryDir, site: str) -> str:
    inventory.write("web", {"tier": "staging", "connection": "local", "urls": {"health": f"{site}/health"},
                            "thresholds": {"response_time_s": {"warning": 0.25, "critical": 5}}})
    return "web"


def only(doc: dict[str, Any]) -> dict[str, Any]:
    assert "steps" in doc, doc
    return doc["steps"][0]["targets"][0]


def test_healthy_endpoint_reports_each_phase(env: str, site: str) -> None:
    code, doc = cli_json("app.health", "--env", env)
    r = only(doc)
    assert code == 0 and r["severity"] == "OK", r
    timings = r["data"]["timings_s"]
    assert list(timings) == ["dns", "connect", "first_byte", "total"]  # no TLS on http
    assert timings["dns"] <= timings["connect"] <= timings["first_byte"] <= timings["total"]
    assert r["data"]["status"] == 200 and r["target"] == f"{site}/health"


def test_slow_endpoint_is_a_warning_and_5xx_critical(task: Any, env: str, site: str) -> None:
    code, doc = task("app.health", "--env", env, "--url", f"{site}/slow")
    r = only(doc)
    assert code == 1 and r["severity"] == "WARNING" and r["data"]["timings_s"]["first_byte"] >= 0.4
    code, doc = task("app.health", "--env", env, "--url", f"{site}/down")
    assert code == 2 and only(doc)["data"]["status"] == 503


def test_refused_connection_is_critical_and_says_why(task: Any, env: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, doc = task("app.health", "--env", env, "--url", f"http://127.0.0.1:{port}/health")
    r = only(doc)
    assert code == 2 and "ConnectionRefusedError" in r["reason"]


def test_no_health_url_is_a_usage_error(task: Any, inventory: InventoryDir) -> None:
    inventory.write("bare", {"tier": "staging", "connection": "local"})
    code, doc = task("app.health", "--env", "bare")
    assert code == 2 and "urls.health" in doc["error"] and "--url" in doc["hint"]  # exit 2 on every task


@pytest.fixture(scope="module")
def tls_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    import ssl

    from tests.rig.acme import make_listener_ca

    ca, cert, key = make_listener_ca(tmp_path_factory.mktemp("tls"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"https://localhost:{server.server_address[1]}", ca
    server.shutdown()
    server.server_close()


def test_https_adds_the_tls_phase_and_an_untrusted_chain_is_critical(task: Any, env: str,
                                                                     tls_site: tuple[str, Path],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    url, ca = tls_site
    code, doc = task("app.health", "--env", env, "--url", f"{url}/health")
    r = only(doc)
    assert code == 2 and "CERTIFICATE_VERIFY_FAILED" in r["reason"], r
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    code, doc = task("app.health", "--env", env, "--url", f"{url}/health")
    r = only(doc)
    assert code == 0, r
    timings = r["data"]["timings_s"]
    assert list(timings) == ["dns", "connect", "tls", "first_byte", "total"]
    assert timings["connect"] <= timings["tls"] <= timings["first_byte"]
