"""Private OpenSSH servers on loopback that act as a fleet of "hosts".

Why: the library fans commands out over SSH with fabric, and we want to test that
against a real sshd (real auth, real host-key checking, real exit codes) instead of
mocks. Every "host" is one loopback address (127.0.2.1, 127.0.2.2, ...) on the same
port; all of 127.0.0.0/8 already routes to ``lo`` so no ``ip addr add`` is needed.
One sshd accepts at most 16 ``ListenAddress`` entries, so more hosts mean more sshd
processes (all sharing one host key, one client key and one known_hosts file).

Shell start-up on this machine
------------------------------
sshd runs commands as ``$SHELL -c CMD`` (root's shell is /bin/bash). Debian's bash is
built with ``SSH_SOURCE_BASHRC``, so a *non-interactive* bash started by sshd still
sources ``~/.bashrc`` whenever ``SHLVL`` is unset (bash checks ``shell_level < 2``).
root's ~/.bashrc here runs ``eval "$(pyenv init -)"`` and ``pyenv virtualenv-init``
and sources ``~/.cargo/env``: it puts pyenv shims first on PATH (so ``python3`` on the
"remote" would be pyenv's, not Debian's) and adds latency to every command.
The rig therefore sets ``SetEnv SHLVL=1`` in sshd_config: bash increments it to 2,
skips ~/.bashrc, and commands see sshd's clean default environment
(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin for root).
``SetEnv`` needs no ``PermitUserEnvironment``/``AcceptEnv``; fabric 3 passes per-call
``env=`` inline (``inline_ssh_env=True``), which also needs neither.
Measured here (idle box): OpenSSH ``ssh host true`` 0.19 s with it vs 0.29 s without;
fabric ``run('true')`` on an open connection 0.04 s vs 0.09 s. Checked by
``test_rig.py::test_ssh_openssh_client_and_clean_env``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.rig.nginx import child_pids

SSHD = "/usr/sbin/sshd"  # absolute: sshd re-execs itself and refuses a relative path
SSH_KEYGEN = "ssh-keygen"
MAX_LISTEN_PER_SSHD = 16  # sshd: "Too many listen sockets. Enlarge MAX_LISTEN_SOCKS"
ADDRESS_PREFIX = "127.0.2."


@dataclass(frozen=True)
class RigHost:
    """One simulated host: a loopback address served by a rig sshd."""

    name: str
    address: str
    port: int

    @property
    def known_hosts_name(self) -> str:
        """Name under which OpenSSH/paramiko look this host up in known_hosts."""
        return self.address if self.port == 22 else f"[{self.address}]:{self.port}"


def unreachable_address() -> str:
    """A loopback address on which no rig sshd listens (connections are refused).

    Why: tests for "host down" need an address that fails fast and deterministically
    (ECONNREFUSED, not a timeout). The rig never uses .250 (it supports up to 249 hosts).
    """
    return ADDRESS_PREFIX + "250"


SUDOERS_DIR = Path("/etc/sudoers.d")


def ensure_login_user(name: str, *, sudo: str | None) -> str:
    """An unprivileged local account the rig's sshd lets in with the rig key, for `become` tests.

    `sudo="nopasswd"`: a sudoers drop-in with passwordless sudo (what the shipped inventories'
    `deploy` user needs); `sudo="password"`: sudo only with a password (so `sudo -n` refuses);
    None: no sudo at all. Idempotent and safe to race with another test session: the account
    and drop-in are created once and left in place (they grant nothing to anyone without the
    rig's private key, and sshd only lets the rig's own sshd processes use that key). The
    drop-in is checked with `visudo -cf` before it is moved into place, so a mistake can never
    break sudo on the machine.
    """
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        done = subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name],
                              capture_output=True, text=True, check=False)
        if done.returncode not in (0, 9):  # 9: created meanwhile by a concurrent session
            raise RuntimeError(f"useradd {name} failed: {done.stderr.strip()}")
    # '*' (not '!'): without PAM, sshd refuses key logins to a locked ('!') account
    subprocess.run(["usermod", "-p", "*", name], check=True, capture_output=True)
    dropin = SUDOERS_DIR / f"indostar-rig-{name}"
    rule = {"nopasswd": f"{name} ALL=(root) NOPASSWD: ALL\n", "password": f"{name} ALL=(root) ALL\n"}.get(sudo or "")
    if rule is None:
        dropin.unlink(missing_ok=True)
        return name
    if not dropin.is_file() or dropin.read_text() != rule:
        staged = SUDOERS_DIR / f".indostar-rig-{name}.{os.getpid()}"
        staged.write_text(rule)
        os.chmod(staged, 0o440)
        subprocess.run(["visudo", "-cqf", str(staged)], check=True, capture_output=True)
        os.replace(staged, dropin)
    return name


def _port_open(address: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


class SshRig:
    """Start/stop private sshd processes serving N loopback "hosts" as root.

    Usage::

        rig = SshRig(tmp_path / "ssh")
        hosts = rig.start(3)          # also waits until every address accepts TCP
        ...  # connect with rig.client_key / rig.known_hosts, user rig.user
        rig.stop()
    """

    user = "root"

    def __init__(self, workdir: Path, port: int = 2322, *, address_prefix: str = ADDRESS_PREFIX,
                 log_level: str = "INFO", extra_config: str = "", client_key: Path | None = None) -> None:
        """`address_prefix` picks another loopback range (a bastion beside the fleet), `log_level`
        VERBOSE/DEBUG1 makes sshd log forwarded channels, `client_key` reuses another rig's key."""
        self.workdir = Path(workdir)
        self.port = port
        self.address_prefix = address_prefix
        self.log_level = log_level
        self.extra_config = extra_config
        self._shared_client_key = client_key
        self.hosts: list[RigHost] = []
        self._procs: list[subprocess.Popen[bytes]] = []
        self._logs: list[Any] = []

    # -- paths -----------------------------------------------------------------
    @property
    def host_key(self) -> Path:
        return self.workdir / "ssh_host_ed25519_key"

    @property
    def client_key(self) -> Path:
        """Private ed25519 key authorised for root on every rig host."""
        return self._shared_client_key or self.workdir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        """known_hosts with the host key for every "[address]:port" the rig serves."""
        return self.workdir / "known_hosts"

    @property
    def authorized_keys(self) -> Path:
        return self.workdir / "authorized_keys"

    @property
    def pids(self) -> list[int]:
        """PIDs of the sshd listener processes started by this rig."""
        return [p.pid for p in self._procs]

    # -- lifecycle ---------------------------------------------------------------
    def start(self, n_hosts: int) -> list[RigHost]:
        """Generate keys/configs, start ceil(n/16) sshd processes, wait until ready."""
        if self._procs:
            raise RuntimeError("SshRig already started")
        if not 1 <= n_hosts <= 249:
            raise ValueError("n_hosts must be between 1 and 249")
        self.workdir.mkdir(parents=True, exist_ok=True)
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privsep dir, else sshd dies
        self._make_keys()
        self.hosts = [
            RigHost(name=f"host-{i}", address=f"{self.address_prefix}{i}", port=self.port)
            for i in range(1, n_hosts + 1)
        ]
        host_pub = (self.workdir / "ssh_host_ed25519_key.pub").read_text().split()
        self.known_hosts.write_text(
            "".join(f"{h.known_hosts_name} {host_pub[0]} {host_pub[1]}\n" for h in self.hosts)
        )
        try:
            for idx in range(0, n_hosts, MAX_LISTEN_PER_SSHD):
                chunk = self.hosts[idx : idx + MAX_LISTEN_PER_SSHD]
                self._spawn(idx // MAX_LISTEN_PER_SSHD, chunk)
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return list(self.hosts)

    def _make_keys(self) -> None:
        for key, comment in ((self.host_key, "rig-host"), (self.client_key, "rig-client")):
            if not key.exists():
                subprocess.run(
                    [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)],
                    check=True,
                    stdin=subprocess.DEVNULL,
                )
        shutil.copyfile(self.client_key.with_suffix(".pub"), self.authorized_keys)
        os.chmod(self.client_key, 0o600)

    def _config_text(self, index: int, hosts: list[RigHost]) -> str:
        listen = "".join(f"ListenAddress {h.address}:{h.port}\n" for h in hosts)
        return (
            listen
            + f"HostKey {self.host_key}\n"
            + f"PidFile {self.workdir / f'sshd-{index}.pid'}\n"
            + f"AuthorizedKeysFile {self.authorized_keys}\n"
            # sshd reads AuthorizedKeysFile as the logging-in user, who cannot traverse pytest's 0700
            # temp dirs: for the unprivileged users of `ensure_login_user`, root hands the keys over
            + f"AuthorizedKeysCommand /bin/cat {self.authorized_keys}\n"
            + "AuthorizedKeysCommandUser root\n"
            + "PermitRootLogin prohibit-password\n"
            "PubkeyAuthentication yes\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            "StrictModes no\n"
            "MaxStartups 200\n"
            "MaxSessions 64\n"
            "LoginGraceTime 30\n"
            "UseDNS no\n"
            "PrintMotd no\n"
            "PrintLastLog no\n"
            "X11Forwarding no\n"
            "PermitUserEnvironment no\n"
            "DebianBanner no\n"
            f"LogLevel {self.log_level}\n"
            # Stop Debian bash from sourcing root's slow ~/.bashrc (see module doc).
            "SetEnv SHLVL=1\n"
            "Subsystem sftp internal-sftp\n"
            + self.extra_config
        )

    def _spawn(self, index: int, hosts: list[RigHost]) -> None:
        conf = self.workdir / f"sshd-{index}.conf"
        conf.write_text(self._config_text(index, hosts))
        check = subprocess.run(
            [SSHD, "-t", "-f", str(conf)], capture_output=True, text=True, stdin=subprocess.DEVNULL
        )
        if check.returncode != 0:
            raise RuntimeError(f"sshd config test failed for {conf}: {check.stderr.strip()}")
        log = open(self.workdir / f"sshd-{index}.log", "ab")
        self._logs.append(log)
        proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        self._procs.append(proc)

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Poll each address:port until it accepts TCP; raise with the sshd log if not."""
        deadline = time.monotonic() + timeout
        pending = list(self.hosts)
        while pending:
            for proc in self._procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"sshd exited with {proc.returncode}:\n{self.log_text()}")
            pending = [h for h in pending if not _port_open(h.address, h.port)]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"sshd not listening on {[h.address for h in pending]}:\n{self.log_text()}"
                )
            time.sleep(0.02)

    def stop(self, grace: float = 2.0) -> None:
        """Terminate only the sshd listeners this rig started.

        Session processes (one per connection, forked by the listener) end when
        their client disconnects. Give just-closed sessions up to ``grace`` seconds
        to finish first so the listener reaps them; sessions still open after that
        survive the listener, as with a real sshd.
        """
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(
            child_pids(p.pid) for p in self._procs if p.poll() is None
        ):
            time.sleep(0.05)
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self._procs.clear()
        for log in self._logs:
            log.close()
        self._logs.clear()

    def log_text(self) -> str:
        """Combined sshd stderr logs (for assertion messages)."""
        return "".join(
            p.read_text(errors="replace") for p in sorted(self.workdir.glob("sshd-*.log"))
        )

    # -- client helpers ----------------------------------------------------------
    def connect_kwargs(self) -> dict[str, Any]:
        """paramiko ``connect()`` kwargs / fabric ``connect_kwargs`` for the rig key."""
        return {
            "key_filename": str(self.client_key),
            "look_for_keys": False,
            "allow_agent": False,
        }

    def connection(self, host: RigHost, strict: bool = True, **kwargs: Any) -> Any:
        """A fabric ``Connection`` to ``host``; ``strict`` rejects unknown host keys.

        Why: fabric 3 always installs paramiko's AutoAddPolicy and never reads
        known_hosts, so strict checking has to be configured on ``conn.client``.
        Unless a ``config`` is passed, ``run.in_stream`` is False: invoke otherwise
        mirrors local stdin, which under pytest's capture raises "reading from stdin
        while output is captured".
        """
        from fabric import Config, Connection
        from paramiko import RejectPolicy

        if "config" not in kwargs:
            kwargs["config"] = Config(overrides={"run": {"in_stream": False}})
        conn = Connection(
            host.address,
            user=self.user,
            port=host.port,
            connect_kwargs=self.connect_kwargs(),
            **kwargs,
        )
        if strict:
            conn.client.load_host_keys(str(self.known_hosts))
            conn.client.set_missing_host_key_policy(RejectPolicy())
        return conn

    def ssh_argv(self, host: RigHost) -> list[str]:
        """OpenSSH client argv prefix (append a remote command) with strict checking."""
        return [
            "ssh",
            "-F", "/dev/null",
            "-i", str(self.client_key),
            "-p", str(host.port),
            "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "ConnectTimeout=5",
            f"{self.user}@{host.address}",
        ]

    def __enter__(self) -> SshRig:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
