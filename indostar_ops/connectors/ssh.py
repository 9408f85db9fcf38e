"""SSH hosts through Fabric: one connection per host, reused for every command of a run.

Fabric opens the connection (keys, known_hosts, timeouts) and provides SFTP;
commands are executed on a session channel of that transport directly, which
skips Invoke's polling runner (about 50 ms per command) and matters when a
step fans out over dozens of hosts.
"""

from __future__ import annotations

import select
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConnectionFailed, TransientError
from .shell import CommandResult, render

if TYPE_CHECKING:
    from ..inventory import HostTarget, SSHSettings

__all__ = ["SSHConnector"]


class SSHConnector:
    def __init__(self, host: HostTarget, settings: SSHSettings) -> None:
        self.host = host
        self.settings = settings
        self._conn: Any = None
        self._lock = threading.Lock()

    @property
    def where(self) -> str:
        return f"{self.host.name} ({self.host.user}@{self.host.address}:{self.host.port})"

    def _connection(self) -> Any:
        with self._lock:
            if self._conn is None:
                self._conn = self._open()
            return self._conn

    def _open(self) -> Any:
        import paramiko
        from fabric import Config, Connection

        connect_kwargs: dict[str, Any] = {"look_for_keys": False, "allow_agent": False}
        if self.settings.key_file:
            connect_kwargs["key_filename"] = str(Path(self.settings.key_file).expanduser())
        if self.settings.key_passphrase is not None:
            connect_kwargs["passphrase"] = self.settings.key_passphrase.get()
        conn = Connection(
            self.host.address,
            user=self.host.user,
            port=self.host.port,
            config=Config(overrides={"load_ssh_configs": False}),
            connect_timeout=int(self.settings.connect_timeout),
            connect_kwargs={**connect_kwargs, "banner_timeout": self.settings.connect_timeout,
                            "auth_timeout": self.settings.connect_timeout},
        )
        if self.settings.strict_host_keys:
            known = Path(self.settings.known_hosts or "~/.ssh/known_hosts").expanduser()
            if known.is_file():
                conn.client.load_host_keys(str(known))
            conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            conn.open()
        except paramiko.BadHostKeyException as exc:
            raise ConnectionFailed(
                f"{self.where}: host key does not match known_hosts ({exc})",
                hint="verify the host's fingerprint before updating known_hosts",
            ) from None
        except paramiko.SSHException as exc:
            if "not found in known_hosts" in str(exc):
                raise ConnectionFailed(
                    f"{self.where}: host key unknown ({exc})",
                    hint=f"add the host to {self.settings.known_hosts or '~/.ssh/known_hosts'} "
                    "(ssh-keyscan, then verify the fingerprint) or set ssh.strict_host_keys: false",
                ) from None
            raise ConnectionFailed(f"{self.where}: SSH failed: {exc}",
                                   hint="check the key, user and sshd on the host") from None
        except (OSError, EOFError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
            raise ConnectionFailed(
                f"{self.where}: cannot connect: {reason}",
                hint=f"check that the host is up and sshd listens on port {self.host.port}; "
                "run with --check to see the plan without it",
            ) from None
        return conn

    def run(
        self, argv: Sequence[str], *, stdin: str | None = None, timeout: float | None = None,
    ) -> CommandResult:
        command = render(argv)
        transport = self._connection().client.get_transport()
        if transport is None or not transport.is_active():
            raise ConnectionFailed(f"{self.where}: connection dropped")
        limit = timeout or self.settings.command_timeout
        started = time.monotonic()
        try:
            channel = transport.open_session(timeout=self.settings.connect_timeout)
            channel.settimeout(limit)
            channel.exec_command(command)
            if stdin:
                channel.sendall(stdin.encode())
            channel.shutdown_write()
            stdout, stderr = _drain(channel, started + limit)
            exit_code = channel.recv_exit_status()
            channel.close()
        except TimeoutError:
            raise TransientError(f"{self.where}: command timed out after {limit:.0f}s: {command}") from None
        except EOFError as exc:
            raise ConnectionFailed(f"{self.where}: connection lost: {exc}") from None
        return CommandResult(command, exit_code, stdout, stderr, time.monotonic() - started)

    def put(self, data: bytes, path: str, mode: int | None = None) -> None:
        sftp = self._connection().sftp()
        with sftp.open(path, "wb") as handle:
            handle.write(data)
        if mode is not None:
            sftp.chmod(path, mode)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _drain(channel: Any, deadline: float) -> tuple[str, str]:
    """Read stdout and stderr until the command exits, without blocking on either."""
    out: list[bytes] = []
    err: list[bytes] = []
    while True:
        busy = False
        if channel.recv_ready():
            out.append(channel.recv(65536))
            busy = True
        if channel.recv_stderr_ready():
            err.append(channel.recv_stderr(65536))
            busy = True
        if not busy:
            if channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready():
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            select.select([channel], [], [], min(remaining, 0.2))
    return b"".join(out).decode(errors="replace"), b"".join(err).decode(errors="replace")
