"""A private nginx (own conf, pid, logs, temp dirs) in front of an in-process backend.

Why: maintenance mode, config test + reload and certificate deployment must be
tested against a real nginx, without touching the system nginx (/etc/nginx,
/var/lib/nginx, /run/nginx.pid) or needing root-owned paths.

Layout under ``workdir``: ``nginx.conf``, ``nginx.pid``, ``error.log``, ``access.log``,
``tmp/*`` (all five *_temp_path; Debian compiles in /var/lib/nginx/*) and
``maintenance.conf`` (the hook, see below). Workers run as ``user root`` so that files
under pytest's 0700 tmp dirs (maintenance pages, temp dirs) are readable; real
deployments use www-data, so permissions of served files are *not* tested here.

Maintenance hook
----------------
Every server block contains ``include <workdir>/maintenance.conf;`` at *server level*
(before the rig's own ``location / { proxy_pass http://rig_backend; }``). The rig
creates the file empty; production code writes its maintenance snippet there.

Result of the manual experiment (nginx 1.22.1, reproduced by
``test_rig.py::test_nginx_maintenance_snippet_variants``):

* An ``include`` at server level of ``error_page``, an exact ``location`` and a
  server-level ``if (-f FLAG) { return 503; }`` is valid (``nginx -t`` passes) and
  works with the rig's ``location /`` + ``proxy_pass``: flag present -> 503, flag
  absent -> 200 from the backend, no reload needed.
* BUT with ``error_page 503 /maintenance.html;`` (a URI) the body is nginx's
  *built-in* 503 page, not maintenance.html: the error_page internal redirect re-runs
  the server-level rewrite phase, the ``if`` returns 503 again, and nginx does not
  apply error_page twice (``recursive_error_pages`` is off). Two working forms:

  1. named location (a named-location redirect skips the server rewrite phase)::

         error_page 503 @maintenance;
         location @maintenance { root DIR; rewrite ^ /maintenance.html break; }
         if (-f FLAG) { return 503; }

  2. URI error page, but exempt that URI from the check::

         error_page 503 /maintenance.html;
         location = /maintenance.html { root DIR; internal; }
         set $maintenance 0;
         if (-f FLAG) { set $maintenance 1; }
         if ($uri = /maintenance.html) { set $maintenance 0; }
         if ($maintenance) { return 503; }

  Both return status 503 with the custom page body.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

NGINX = "/usr/sbin/nginx"
TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


class _BackendHandler(BaseHTTPRequestHandler):
    """Answers every request with 200 "backend ok" and ``X-Backend: 1``."""

    protocol_version = "HTTP/1.1"
    body = b"backend ok\n"

    def _answer(self, with_body: bool) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.server.requests.append((self.command, self.path))  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(self.body)))
        self.send_header("X-Backend", "1")
        self.end_headers()
        if with_body:
            self.wfile.write(self.body)

    def do_GET(self) -> None:
        self._answer(True)

    def do_POST(self) -> None:
        self._answer(True)

    def do_HEAD(self) -> None:
        self._answer(False)

    def log_message(self, format: str, *args: object) -> None:  # silence stderr noise
        pass


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait_port(port: int, timeout: float, alive: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not _port_open(port):
        if alive is not None and alive.poll() is not None:
            raise RuntimeError(f"process exited with {alive.returncode} before port {port} opened")
        if time.monotonic() > deadline:
            raise TimeoutError(f"port {port} did not open within {timeout}s")
        time.sleep(0.02)


def child_pids(pid: int) -> set[int]:
    """Live (non-zombie) direct children of ``pid``, e.g. nginx workers of a master."""
    kids: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ..." - comm may contain spaces, split after ')'
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":  # reaped-soon zombies don't count
            kids.add(int(entry))
    return kids


class NginxRig:
    """Start/stop a private nginx + backend; expose the exact nginx command for prod code.

    Usage::

        rig = NginxRig(tmp_path / "nginx", https_cert=crt, https_key=key,
                       server_name="app.indostar.test")
        rig.start()        # http://127.0.0.1:18080/ -> 200 "backend ok"
        ...
        rig.stop()
    """

    def __init__(
        self,
        workdir: Path,
        http_port: int = 18080,
        https_port: int = 18443,
        backend_port: int = 18081,
        https_cert: Path | None = None,
        https_key: Path | None = None,
        server_name: str = "_",
    ) -> None:
        self.workdir = Path(workdir)
        self.http_port = http_port
        self.https_port = https_port
        self.backend_port = backend_port
        self.https_cert = Path(https_cert) if https_cert else None
        self.https_key = Path(https_key) if https_key else None
        self.server_name = server_name
        self._proc: subprocess.Popen[bytes] | None = None
        self._backend: ThreadingHTTPServer | None = None
        self._backend_thread: threading.Thread | None = None

    # -- paths ---------------------------------------------------------------------
    @property
    def conf_path(self) -> Path:
        return self.workdir / "nginx.conf"

    @property
    def error_log(self) -> Path:
        return self.workdir / "error.log"

    @property
    def access_log(self) -> Path:
        return self.workdir / "access.log"

    @property
    def pid_file(self) -> Path:
        return self.workdir / "nginx.pid"

    @property
    def maintenance_snippet(self) -> Path:
        """File included at server level in every server block (empty at start)."""
        return self.workdir / "maintenance.conf"

    @property
    def pid(self) -> int | None:
        """PID of the nginx master started by this rig (None when not running)."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    @property
    def https_enabled(self) -> bool:
        return self.https_cert is not None and self.https_key is not None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def backend_requests(self) -> list[tuple[str, str]]:
        """(method, path) of every request the backend received."""
        return self._backend.requests if self._backend else []  # type: ignore[attr-defined]

    def nginx_cmd_prefix(self) -> list[str]:
        """Command prefix to test/reload *this* nginx: append ``-t`` or ``-s reload``."""
        return [NGINX, "-e", str(self.error_log), "-c", str(self.conf_path)]

    # -- config ----------------------------------------------------------------------
    def render_conf(self) -> str:
        """The full nginx.conf text for the current settings."""
        w = self.workdir
        temp = "".join(f"    {name}_temp_path {w / 'tmp' / name};\n" for name in TEMP_PATHS)
        server_common = (
            f"        server_name {self.server_name};\n"
            f"        include {self.maintenance_snippet};\n"
            "        location / {\n"
            "            proxy_pass http://rig_backend;\n"
            "            proxy_set_header Host $host;\n"
            "            proxy_set_header X-Forwarded-Proto $scheme;\n"
            "        }\n"
        )
        https = ""
        if self.https_enabled:
            https = (
                "    server {\n"
                f"        listen 127.0.0.1:{self.https_port} ssl;\n"
                f"        ssl_certificate {self.https_cert};\n"
                f"        ssl_certificate_key {self.https_key};\n"
                + server_common
                + "    }\n"
            )
        return (
            "# generated by tests/rig/nginx.py\n"
            "user root;\n"
            "worker_processes 1;\n"
            "daemon off;\n"
            f"pid {self.pid_file};\n"
            f"error_log {self.error_log} notice;\n"
            "events { worker_connections 256; }\n"
            "http {\n"
            "    default_type application/octet-stream;\n"
            f"    access_log {self.access_log};\n"
            + temp
            + "    upstream rig_backend { server 127.0.0.1:"
            + str(self.backend_port)
            + "; }\n"
            "    server {\n"
            f"        listen 127.0.0.1:{self.http_port};\n"
            + server_common
            + "    }\n"
            + https
            + "}\n"
        )

    def write_conf(self) -> None:
        """(Re)write nginx.conf; call ``reload()`` afterwards if nginx is running."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        for name in TEMP_PATHS:
            (self.workdir / "tmp" / name).mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(self.render_conf())

    # -- lifecycle -------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> None:
        """Start backend, write conf + empty snippet, ``nginx -t``, run nginx, wait ports."""
        if self._proc is not None:
            raise RuntimeError("NginxRig already started")
        self.write_conf()
        self.maintenance_snippet.write_text("")
        self._start_backend()
        try:
            ok, out = self.test_config()
            if not ok:
                raise RuntimeError(f"nginx -t failed:\n{out}")
            self._proc = subprocess.Popen(
                self.nginx_cmd_prefix(),  # "daemon off;" is in the conf
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                _wait_port(self.http_port, timeout, self._proc)
                if self.https_enabled:
                    _wait_port(self.https_port, timeout, self._proc)
            except (RuntimeError, TimeoutError) as exc:
                raise RuntimeError(f"{exc}\n{self.error_log_text()}") from exc
        except BaseException:
            self.stop()
            raise

    def _start_backend(self) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", self.backend_port), _BackendHandler)
        server.daemon_threads = True
        server.requests = []  # type: ignore[attr-defined]
        self._backend = server
        self._backend_thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._backend_thread.start()

    def test_config(self) -> tuple[bool, str]:
        """Run ``nginx -t`` on this rig's conf; return (ok, combined output)."""
        res = subprocess.run(
            self.nginx_cmd_prefix() + ["-t"],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        return res.returncode == 0, res.stdout + res.stderr

    def worker_pids(self) -> set[int]:
        pid = self.pid
        return child_pids(pid) if pid else set()

    def reload(self, timeout: float = 10.0) -> None:
        """``nginx -s reload`` and wait until a new worker generation is running.

        Why wait: reload is asynchronous (SIGHUP); a request sent right after the
        signal may still be served by an old worker with the old config.
        """
        old = self.worker_pids()
        res = subprocess.run(
            self.nginx_cmd_prefix() + ["-s", "reload"],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        if res.returncode != 0:
            raise RuntimeError(f"nginx -s reload failed: {res.stderr.strip()}")
        self.wait_reloaded(old, timeout)

    def wait_reloaded(self, old_workers: set[int], timeout: float = 10.0) -> None:
        """Wait until new workers run and all ``old_workers`` have exited.

        For reloads sent by production code: take ``old = rig.worker_pids()`` before,
        call ``rig.wait_reloaded(old)`` after. Waiting only for a new worker is not
        enough: old workers keep accepting until they process the master's QUIT
        (observed: a request right after the new worker appeared got the old config).
        If the new config is invalid the master keeps the old workers, so this times
        out; check ``error_log_text()`` in that case.
        """
        deadline = time.monotonic() + timeout
        while True:
            current = self.worker_pids()
            if current and not (current & old_workers):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"nginx did not replace its workers:\n{self.error_log_text()}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop only the nginx master this rig started (it takes its workers) and backend."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # fast shutdown
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self._backend is not None:
            self._backend.shutdown()
            self._backend.server_close()
            self._backend = None
            self._backend_thread = None

    def error_log_text(self) -> str:
        try:
            return self.error_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> NginxRig:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
