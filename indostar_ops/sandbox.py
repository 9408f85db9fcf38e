"""The embedded `sandbox` environment: simulated hosts are directories, AWS is a local moto server.

`prepare` provisions the simulated machines (like racking a server, it is not a
step and runs in check mode too); everything after that goes through the same
steps and connectors as production.
"""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UsageError
from .inventory import sandbox_root

if TYPE_CHECKING:
    from .inventory import Environment

__all__ = ["ensure_database", "ensure_moto", "ensure_nginx", "prepare", "stop"]

_NGINX_CONF = """# The sandbox's own nginx (started by indostar-ops, never the system one).
daemon on;
{user}worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log {root}/access.log;
    client_body_temp_path {root}/tmp/client;
    proxy_temp_path {root}/tmp/proxy;
    fastcgi_temp_path {root}/tmp/fastcgi;
    uwsgi_temp_path {root}/tmp/uwsgi;
    scgi_temp_path {root}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port};
        include {root}/maintenance.conf;
        location / {{ default_type text/plain; return 200 "IndoStar sandbox app: ok\\n"; }}
    }}
}}
"""

_DAY = 86400


def prepare(env: Environment) -> Path:
    """Create the sandbox hosts' directories and a few application logs, if missing."""
    root = sandbox_root()
    __import__("indostar_ops.sandbox_services").sandbox_services.secrets_for_sandbox()  # env:INDOSTAR_SANDBOX_*
    for host in env.hosts():
        if host.connection != "local":
            continue
        s = host.settings
        for directory in [*s.log_dirs, *s.tmp_dirs, *s.disk_paths, *s.disk_report_roots, s.backup_dir,
                          os.path.dirname(s.logrotate_config)]:
            Path(directory).mkdir(parents=True, exist_ok=True)
        for log_dir in s.log_dirs:
            _seed_logs(Path(log_dir))
    return root


def _seed_logs(log_dir: Path) -> None:
    active = log_dir / "app.log"
    if active.exists():
        return
    active.write_text("INFO started\n")
    now = time.time()
    for age in (1, 3, 9, 12):
        rotated = log_dir / f"app.log.{age}"
        rotated.write_text(f"INFO rotated {age} days ago\n" * 50)
        os.utime(rotated, (now - age * _DAY, now - age * _DAY))


def ensure_database(env: Environment) -> None:
    """Create the sandbox's application role and database (with demo data) the first time a step needs them.

    The application role is not a superuser, like production's, so session procedures (kill-idle)
    behave as they would there; maintenance connects as the admin user.
    """
    import psycopg
    from psycopg import sql

    db = env.database
    if db is None:
        return
    admin = db.admin_user or db.user
    try:
        with psycopg.connect(host=db.host, port=db.port, dbname="postgres", user=admin, autocommit=True,
                             connect_timeout=db.connect_timeout) as conn:
            if db.user != admin and not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s",
                                                     (db.user,)).fetchone():
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(db.user)))
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db.name,)).fetchone():
                return
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(db.name),
                                                                       sql.Identifier(db.user)))
        with psycopg.connect(host=db.host, port=db.port, dbname=db.name, user=admin, autocommit=True,
                             connect_timeout=db.connect_timeout) as conn:
            _seed_demo_data(conn, db.user)
    except psycopg.OperationalError as exc:
        raise UsageError(f"sandbox PostgreSQL at {db.host}:{db.port} is not reachable: {exc}".strip(),
                         hint="start it: pg_ctlcluster --skip-systemctl-redirect 15 main start") from None


def _seed_demo_data(conn: Any, owner: str) -> None:
    """A small orders table with churn, so vacuum, analyze and reindex have real work the first time."""
    from psycopg import sql

    conn.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
    conn.execute("CREATE TABLE orders (id bigserial PRIMARY KEY, user_id int NOT NULL, "
                 "status text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())")
    conn.execute("CREATE INDEX idx_orders_user_created ON orders (user_id, created_at)")
    conn.execute("INSERT INTO orders (user_id, status) SELECT g % 500, 'pending' FROM generate_series(1, 20000) g")
    conn.execute("UPDATE orders SET status = 'paid', created_at = now() WHERE id % 10 < 7")
    conn.execute(sql.SQL("ALTER TABLE orders OWNER TO {}").format(sql.Identifier(owner)))


def ensure_nginx(env: Environment) -> str:
    """Start the sandbox's nginx (the web hosts' nginx.command points at its config) once; return its URL."""
    root = sandbox_root() / "nginx"
    port = env.sandbox.nginx_port if env.sandbox else 18088
    url = f"http://127.0.0.1:{port}/"
    pidfile = root / "nginx.pid"
    if pidfile.is_file() and _alive(pidfile) and _listening(port):
        return url
    if _listening(port):
        raise UsageError(f"port {port} is taken by another program, so the sandbox nginx cannot start",
                         hint="stop it, or set sandbox.nginx_port in inventory/sandbox.yaml")
    for sub in ("tmp/client", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "maintenance.conf").touch()
    conf = root / "nginx.conf"
    # Workers run as the sandbox's own user: the default (nobody) could not see files under a private root.
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""
    conf.write_text(_NGINX_CONF.format(root=root, port=port, user=user))
    started = subprocess.run(["nginx", "-e", str(root / "error.log"), "-c", str(conf)],
                             capture_output=True, text=True, check=False)
    if started.returncode != 0:
        raise UsageError(f"the sandbox nginx did not start: {started.stderr.strip()}",
                         hint="scripts/install-system-deps.sh installs nginx")
    deadline = time.monotonic() + 10
    while not _listening(port) and time.monotonic() < deadline:
        time.sleep(0.05)
    return url


def stop(*, wipe: bool = False) -> list[str]:
    """Stop the services this sandbox root started (by their pid files); `wipe` deletes the root too."""
    import shutil
    import signal

    root = sandbox_root()
    done = []
    for name, pidfile in (("nginx", root / "nginx" / "nginx.pid"), ("moto", root / "moto.pid"),
                          ("fake services", root / "services.pid")):
        if pidfile.is_file() and _alive(pidfile):
            os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)
            done.append(f"stopped the sandbox {name}")
        pidfile.unlink(missing_ok=True)
    from .platform.local import stop_all  # the demo app's processes (platform kind local)

    done += stop_all(root / "platform")
    if wipe and root.exists():
        shutil.rmtree(root)
        done.append(f"deleted {root}")
    return done or ["nothing to stop"]


def _alive(pidfile: Path) -> bool:
    try:
        os.kill(int(pidfile.read_text().strip()), 0)
    except (ValueError, OSError):
        return False
    return True


def ensure_moto(env: Environment) -> str:
    """Start the sandbox's moto server in the background (once) and return its endpoint."""
    port = env.sandbox.moto_port if env.sandbox else 14566
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "sandbox")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "sandbox")
    if _listening(port):
        return __import__("indostar_ops.sandbox_aws").sandbox_aws.seed(env, endpoint)  # RDS, EBS, ALB, alarms, S3
    try:
        import moto.server  # noqa: F401
    except ImportError:
        raise UsageError("the sandbox's local AWS needs moto",
                         hint="pip install 'indostar-ops[aws-local]'") from None
    root = sandbox_root()
    root.mkdir(parents=True, exist_ok=True)
    log = (root / "moto.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    (root / "moto.pid").write_text(str(process.pid))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if _listening(port):
            return ensure_moto(env)
        time.sleep(0.1)
    raise UsageError(f"sandbox moto server did not start on {endpoint}", hint=f"see {root / 'moto.log'}")


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.3)
        return probe.connect_ex(("127.0.0.1", port)) == 0
