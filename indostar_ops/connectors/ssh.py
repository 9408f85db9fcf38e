"""SSH hosts through paramiko: one transport per host, reused for every command of a run.

Reaching a host
---------------
A host is reached directly or through jump hosts (`ssh.jump`, per environment, group
or host; or an opt-in `ssh.config_file`'s ProxyJump). Each hop is a full SSH login of
its own, with its own strict host-key check against known_hosts and the same
credentials (a key file, whose passphrase is a secret reference, and/or the running
ssh-agent's keys). The next hop is a `direct-tcpip` channel over the previous hop's
transport, and one transport to a bastion is shared by every host behind it in the
process (`_JumpPool`): twenty hosts behind a bastion are one bastion login and twenty
channels, not twenty logins.

A failure costs once
--------------------
Connecting is one budget of `ssh.connect_timeout` per hop for TCP, the banner, key
exchange and authentication together. Anything that goes wrong before a session is
open -- DNS, TCP, no banner, a host key that is unknown or changed, authentication --
raises `SSHUnreachable` (an `Unreachable`: status `unreachable`, never retried) with
the hop and the reason in words ("no SSH banner within 10 s"). A bastion that failed
is not tried again by the other hosts behind it in the same run: they get the same
reason at once. A connection that drops after it was established raises
`ConnectionFailed` after the connector has reset itself, so the runner's one retry
reconnects instead of reusing the dead transport.

Commands run on a session channel of the transport directly (no Invoke runner: about
50 ms less per command, which matters when a step fans out over dozens of hosts).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import select
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConnectionFailed, TransientError, Unreachable
from .shell import CommandResult, render

if TYPE_CHECKING:
    from ..inventory import HostTarget, SSHSettings

__all__ = ["HONOURED_CONFIG_KEYS", "Hop", "SSHConnector", "SSHUnreachable", "resolve_route"]

# ssh_config keys this connector honours (everything else in the file is ignored, e.g. ProxyCommand,
# IdentitiesOnly, ForwardAgent, Ciphers, StrictHostKeyChecking: the inventory decides those)
HONOURED_CONFIG_KEYS = ("HostName", "User", "Port", "IdentityFile", "ProxyJump", "UserKnownHostsFile")


class SSHUnreachable(Unreachable):
    """Could not reach a host; `hop` is the failing hop ("jump host deploy@10.0.0.5:22" or the host),
    `stage` one of dns, tcp, forward, banner, negotiation, hostkey, auth, credentials."""

    def __init__(self, target: str, hop: str, stage: str, reason: str, *, hint: str | None = None) -> None:
        super().__init__(target, f"{hop}: {reason}" if hop else reason, hint=hint)
        self.hop = hop
        self.stage = stage
        self.detail = reason


@dataclass(frozen=True)
class Hop:
    """One SSH login on the way to a host (a jump host or the host itself)."""

    address: str
    port: int
    user: str
    known_hosts: str
    key_files: tuple[str, ...] = ()
    role: str = "host"  # "jump host" or "host"
    name: str = ""  # what the inventory or ssh_config calls it

    @property
    def label(self) -> str:
        where = f"{self.user}@{self.address}:{self.port}"
        if self.role == "host":
            return where
        return f"jump host {self.name + ' ' if self.name and self.name != self.address else ''}({where})"

    @property
    def known_hosts_name(self) -> str:
        return self.address if self.port == 22 else f"[{self.address}]:{self.port}"


@dataclass(frozen=True)
class Route:
    jumps: tuple[Hop, ...]
    host: Hop

    def describe(self) -> str:
        return " -> ".join([*(j.label for j in self.jumps), self.host.label])


def _parse_hop(spec: str) -> tuple[str | None, str, int | None]:
    """`[user@]host[:port]` (IPv6 in brackets) -> (user or None, host, port or None)."""
    user, _, rest = spec.rpartition("@")
    match = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?|([^:]+)(?::(\d+))?", rest)
    if match is None:
        raise ValueError(f"bad jump host {spec!r}: expected [user@]host[:port]")
    host = match.group(1) or match.group(3)
    port = match.group(2) or match.group(4)
    return (user or None), host, (int(port) if port else None)


def resolve_route(target: HostTarget, settings: SSHSettings) -> Route:
    """The hops to `target`: the inventory's values first, then (opt-in) ssh_config's, then defaults.

    No network I/O; reads `ssh.config_file` if one is configured.
    """
    config = _ssh_config(settings.config_file) if settings.config_file else None
    explicit = target.explicit

    def lookup(name: str) -> dict[str, Any]:
        return dict(config.lookup(name)) if config is not None else {}

    host_cfg = lookup(target.name)
    if target.address != target.name and "address" in explicit:
        host_cfg = {**lookup(target.address), **{k: v for k, v in host_cfg.items() if k != "hostname"}}
    address = target.address if "address" in explicit else host_cfg.get("hostname", target.address)
    port = target.port if "port" in explicit or "port" not in host_cfg else int(host_cfg["port"])
    user = target.user if "user" in explicit or "user" not in host_cfg else str(host_cfg["user"])
    host = _hop(settings, host_cfg, address, port, user, "host", target.name)

    if target.jump is not None:
        specs: Sequence[str] = target.jump
    elif host_cfg.get("proxyjump") and host_cfg["proxyjump"].lower() != "none":
        specs = [s.strip() for s in str(host_cfg["proxyjump"]).split(",") if s.strip()]
    else:
        specs = ()
    jumps = []
    for spec in specs:
        spec_user, name, spec_port = _parse_hop(spec)
        cfg = lookup(name)
        jumps.append(_hop(
            settings, cfg, cfg.get("hostname", name),
            spec_port or int(cfg.get("port", settings.port)),
            spec_user or str(cfg.get("user", settings.user)), "jump host", name,
        ))
    return Route(tuple(jumps), host)


def _hop(settings: SSHSettings, cfg: dict[str, Any], address: str, port: int, user: str, role: str,
         name: str) -> Hop:
    if settings.key_file:
        keys: tuple[str, ...] = (settings.key_file,)
    else:
        keys = tuple(cfg.get("identityfile") or ())
    known = settings.known_hosts or (str(cfg["userknownhostsfile"]).split()[0] if cfg.get("userknownhostsfile")
                                     else "~/.ssh/known_hosts")
    return Hop(address=str(address), port=int(port), user=user, role=role, name=name,
               known_hosts=str(Path(known).expanduser()),
               key_files=tuple(str(Path(k).expanduser()) for k in keys))


class SSHConnector:
    def __init__(self, host: HostTarget, settings: SSHSettings) -> None:
        self.host = host
        self.settings = settings
        self._transport: Any = None
        self._sftp: Any = None
        self._lease: _Lease | None = None
        self._route: Route | None = None
        self._lock = threading.Lock()

    @property
    def where(self) -> str:
        return f"{self.host.name} ({self.host.user}@{self.host.address}:{self.host.port})"

    @property
    def route(self) -> Route:
        if self._route is None:
            try:
                self._route = resolve_route(self.host, self.settings)
            except (OSError, ValueError) as exc:
                raise SSHUnreachable(self.host.name, "", "config",
                                     f"cannot use ssh.config_file {self.settings.config_file}: {exc}",
                                     hint="check ssh.config_file in the inventory") from None
        return self._route

    # -- connecting --------------------------------------------------------------

    def connect(self) -> Any:
        """The open transport to this host (connecting first if needed); raises SSHUnreachable."""
        with self._lock:
            if self._transport is not None and self._transport.is_active():
                return self._transport
            self._reset_locked()
            route = self.route
            via = None
            if route.jumps:
                if self._lease is None:
                    self._lease = _POOL.acquire(route.jumps, self.settings)
                via = self._lease.transport(self.host.name)
            self._transport = _login(route.host, self.settings, self.host.name, via)
            self._transport.set_keepalive(30)  # idle hours in a window: NAT and bastions drop silent links
            return self._transport

    def _reset_locked(self) -> None:
        sftp, transport = self._sftp, self._transport
        self._sftp = self._transport = None
        for thing in (sftp, transport):
            if thing is not None:
                with contextlib.suppress(Exception):
                    thing.close()

    def _dropped(self, what: str) -> ConnectionFailed:
        """Forget the dead transport (the retry reconnects) and say what happened."""
        with self._lock:
            self._reset_locked()
        return ConnectionFailed(f"{self.where}: connection lost {what}",
                                hint="the connection was reset; a retry reconnects")

    # -- commands ----------------------------------------------------------------

    def run(
        self, argv: Sequence[str], *, stdin: str | None = None, timeout: float | None = None,
    ) -> CommandResult:
        import paramiko

        command = render(argv)
        transport = self.connect()
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
            if not channel.exit_status_ready() and not transport.is_active():
                raise EOFError("transport closed before the exit status")
            exit_code = channel.recv_exit_status()
            channel.close()
        except TimeoutError:
            if not transport.is_active():
                raise self._dropped(f"while running: {command}") from None
            raise TransientError(f"{self.where}: command timed out after {limit:.0f}s: {command}") from None
        except (EOFError, OSError, paramiko.SSHException) as exc:
            raise self._dropped(f"while running {command}: {exc or type(exc).__name__}") from None
        return CommandResult(command, exit_code, stdout, stderr, time.monotonic() - started)

    def put(self, data: bytes, path: str, mode: int | None = None) -> None:
        import paramiko

        transport = self.connect()
        try:
            with self._lock:
                if self._sftp is None:
                    self._sftp = paramiko.SFTPClient.from_transport(transport)
                sftp = self._sftp
            with sftp.open(path, "wb") as handle:
                handle.write(data)
            if mode is not None:
                sftp.chmod(path, mode)
        except (EOFError, paramiko.SSHException) as exc:
            raise self._dropped(f"while uploading {path}: {exc or type(exc).__name__}") from None
        except OSError:
            if not transport.is_active():
                raise self._dropped(f"while uploading {path}") from None
            raise  # permission denied, no such directory: the caller names the path

    def close(self) -> None:
        with self._lock:
            self._reset_locked()
            lease, self._lease = self._lease, None
        if lease is not None:
            lease.release()


# -- one login ---------------------------------------------------------------------------


def _login(hop: Hop, settings: SSHSettings, target: str, via: Any = None) -> Any:
    """TCP (or a channel through `via`), banner, key exchange, host key, authentication.

    All of it within one `connect_timeout`; every failure is an `SSHUnreachable` naming `hop`.
    """
    import paramiko

    budget = float(settings.connect_timeout)
    deadline = time.monotonic() + budget
    def fail(stage: str, reason: str, hint: str | None = None) -> SSHUnreachable:
        return SSHUnreachable(target, hop.label, stage, reason, hint=hint)

    def left() -> float:
        return max(deadline - time.monotonic(), 0.05)

    secs = f"{budget:g} s"
    if via is None:
        try:
            infos = socket.getaddrinfo(hop.address, hop.port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise fail("dns", f"DNS cannot resolve {hop.address!r} ({exc.strerror})",
                       "check ssh.jump (or ProxyJump/HostName in ssh.config_file)" if hop.role != "host"
                       else "check the host's address in the inventory (or HostName in ssh.config_file)") from None
        family, kind, proto, _, sockaddr = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.settimeout(left())
        try:
            sock.connect(sockaddr)
        except TimeoutError:
            sock.close()
            raise fail("tcp", f"no TCP connection to port {hop.port} within {secs}",
                       "a firewall drops the packets, or the host is down; check the route (VPN, bastion)") from None
        except ConnectionRefusedError:
            sock.close()
            raise fail("tcp", f"TCP connection refused on port {hop.port} (nothing listens there)",
                       f"check that sshd runs and listens on port {hop.port}") from None
        except OSError as exc:
            sock.close()
            raise fail("tcp", f"cannot open a TCP connection to port {hop.port}: {exc.strerror or exc}",
                       "check the address and the network route") from None
        channel_or_sock: Any = _tuned_socket(sock)
    else:
        try:
            channel_or_sock = via.open_channel("direct-tcpip", (hop.address, hop.port), ("127.0.0.1", 0),
                                               timeout=left())
        except paramiko.ChannelException as exc:
            why = {1: "the jump host refuses TCP forwarding (AllowTcpForwarding no?)",
                   2: f"the jump host cannot open a TCP connection to port {hop.port} "
                      f"({exc.text or 'connect failed'})"}.get(exc.code, f"forwarding refused: {exc.text}")
            raise fail("forward", why, "check that the host is up and reachable from the jump host") from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise fail("forward", f"no forwarded connection through the jump host within {secs} ({exc})",
                       "check the jump host and that the host is reachable from it") from None

    transport = paramiko.Transport(channel_or_sock)
    try:
        return _handshake(transport, hop, settings, fail, left, secs)
    except BaseException:
        transport.close()
        raise


def _handshake(transport: Any, hop: Hop, settings: SSHSettings, fail: Any, left: Any, secs: str) -> Any:
    import paramiko

    known = _known_keys(hop)
    if known:  # negotiate the key type known_hosts has (as OpenSSH and paramiko's SSHClient do)
        options = transport.get_security_options()
        first = [t for t in known if t in options.key_types]
        options.key_types = first + [t for t in options.key_types if t not in first]
    # paramiko's own thread gives up on the banner first (and ends cleanly); start_client waits a bit longer
    transport.banner_timeout = left()
    transport.handshake_timeout = left()
    transport.auth_timeout = left()
    try:
        transport.start_client(timeout=left() + 0.5)
    except (paramiko.SSHException, EOFError, OSError) as exc:
        if not transport.remote_version:
            text = str(exc).lower()
            if left() <= 0.25 or "timeout" in text or "timed out" in text:  # paramiko's message may not say
                raise fail("banner", f"no SSH banner within {secs}",
                           "the port answers but no sshd speaks on it (overloaded, or not SSH)") from None
            raise fail("banner", "the connection closed before the SSH banner",
                       "sshd dropped it (MaxStartups, tcp wrappers) or the port is not SSH") from None
        raise fail("negotiation", f"SSH negotiation failed: {exc}") from None
    if not transport.is_active() or not transport.remote_version:
        raise fail("banner", f"no SSH banner within {secs}",
                   "the port answers but no sshd speaks on it (overloaded, or not SSH)")
    try:
        key = transport.get_remote_server_key()
    except paramiko.SSHException:
        raise fail("negotiation", f"SSH key exchange did not finish within {secs}") from None

    if settings.strict_host_keys:
        fingerprint = f"{key.get_name()} {key.fingerprint}"
        if not known:
            raise fail("hostkey",
                       f"host key unknown: {hop.known_hosts_name} is not in {hop.known_hosts} (offered {fingerprint})",
                       f"verify that fingerprint out of band, then add it: ssh-keyscan -p {hop.port} {hop.address} "
                       f">> {hop.known_hosts} (or set ssh.strict_host_keys: false)")
        expected = known.get(key.get_name())
        if expected is None or expected != key:
            raise fail("hostkey",
                       f"host key CHANGED: {hop.known_hosts} has a different key for {hop.known_hosts_name} "
                       f"(offered {fingerprint})",
                       "someone may be intercepting the connection, or the host was rebuilt: verify the "
                       "fingerprint before updating known_hosts")

    _authenticate(transport, hop, settings, fail, secs)
    return transport


def _authenticate(transport: Any, hop: Hop, settings: SSHSettings, fail: Any, secs: str) -> None:
    import paramiko

    try:
        transport.auth_none(hop.user)
        return  # the server let us in without credentials
    except paramiko.BadAuthenticationType as exc:
        offered = list(exc.allowed_types)
    except paramiko.AuthenticationException:
        offered = []
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise fail("auth", f"authentication did not finish within {secs} ({exc})") from None
    if offered and "publickey" not in offered:
        raise fail("auth", f"the server does not accept keys for {hop.user} (offers: {', '.join(offered)})",
                   "enable PubkeyAuthentication for this user on the host")

    tried: list[str] = []
    keys: list[tuple[str, Any]] = []
    for path in hop.key_files:
        keys.append((path, _key(path, settings, fail)))
    agent = None
    if settings.agent:
        if not os.environ.get("SSH_AUTH_SOCK"):
            if not keys:
                raise fail("credentials", "ssh.agent is on but SSH_AUTH_SOCK is not set (no ssh-agent running)",
                           "start ssh-agent and ssh-add the key, or set ssh.key_file")
        else:
            agent = paramiko.Agent()
            keys.extend((f"agent key {k.comment or k.get_name()}".strip(), k) for k in agent.get_keys())
    if not keys:
        raise fail("credentials", "no SSH key to offer (no ssh.key_file, no IdentityFile, ssh.agent off or empty)",
                   "set ssh.key_file (passphrase: ssh.key_passphrase: env:NAME) or ssh.agent: true")
    try:
        for name, key in keys:
            tried.append(f"{name} ({key.get_name()} {key.fingerprint})")
            try:
                remaining = transport.auth_publickey(hop.user, key)
            except paramiko.AuthenticationException:
                continue
            except (paramiko.SSHException, EOFError, OSError) as exc:
                raise fail("auth", f"authentication did not finish within {secs} ({exc})") from None
            if not remaining and transport.is_authenticated():
                return
            raise fail("auth", f"{hop.user}: the key was accepted but the server wants more "
                               f"({', '.join(remaining)}), which this tool does not do")
    finally:
        if agent is not None:
            agent.close()
    raise fail("auth", f"authentication refused for user {hop.user} (server offers "
                       f"{', '.join(offered) or 'publickey'}; tried {'; '.join(tried)})",
               f"add the public key to ~{hop.user}/.ssh/authorized_keys on {hop.address}, or check ssh.user")


def _key(path: str, settings: SSHSettings, fail: Any) -> Any:
    """The private key, read and decrypted once per process for all hosts (see `_load_key`)."""
    passphrase = settings.key_passphrase.get() if settings.key_passphrase is not None else None
    try:
        return _load_key(path, Path(path).stat().st_mtime_ns, passphrase)
    except OSError as exc:
        raise fail("credentials", f"cannot read SSH key {path}: {exc.strerror or exc}",
                   "check ssh.key_file (or IdentityFile) in the inventory") from None
    except Exception as exc:  # noqa: BLE001 - paramiko/cryptography: wrong passphrase, unsupported key type
        import paramiko

        if isinstance(exc, paramiko.PasswordRequiredException) or (passphrase is None and "encrypted" in str(exc)):
            why = "the key is encrypted and no ssh.key_passphrase is set"
        elif passphrase is not None and isinstance(exc, ValueError | paramiko.SSHException):
            why = "wrong ssh.key_passphrase"
        else:
            why = str(exc)
        raise fail("credentials", f"cannot load SSH key {path}: {why}",
                   "check ssh.key_file and ssh.key_passphrase (a secret reference, e.g. env:NAME)") from None


# -- shared per process: what every host of a fan-out would otherwise redo --------------

_shared_lock = threading.Lock()
_keys: dict[tuple[str, int, str | None], Any] = {}
_known: dict[tuple[str, int], Any] = {}
_configs: dict[tuple[str, int], Any] = {}


def _load_key(path: str, mtime_ns: int, passphrase: str | None) -> Any:
    """Load a private key once: paramiko would re-read it per host, trying each key class in turn,
    and an encrypted key costs a bcrypt KDF each time (measured ~0.35 s of CPU per host)."""
    import paramiko

    with _shared_lock:
        cache_key = (path, mtime_ns, passphrase)
        if cache_key not in _keys:
            try:
                key = paramiko.PKey.from_path(path, passphrase.encode() if passphrase is not None else None)
            except TypeError:  # a passphrase given for a key that is not encrypted: paramiko ignored it too
                key = paramiko.PKey.from_path(path)
            _keys[cache_key] = key
        return _keys[cache_key]


def _known_keys(hop: Hop) -> dict[str, Any]:
    """This hop's known_hosts entries {key type: key}, from a file parsed once per process.

    Lookup rules (hashed names, "[addr]:port") are paramiko's own.
    """
    import paramiko

    path = Path(hop.known_hosts)
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        return {}
    with _shared_lock:
        cache_key = (str(path), stamp)
        if cache_key not in _known:
            _known[cache_key] = paramiko.HostKeys(str(path))
        entries = _known[cache_key].lookup(hop.known_hosts_name)
    return dict(entries or {})


def _ssh_config(path: str) -> Any:
    import paramiko

    file = Path(path).expanduser()
    with _shared_lock:
        cache_key = (str(file), file.stat().st_mtime_ns)
        if cache_key not in _configs:
            _configs[cache_key] = paramiko.SSHConfig.from_path(str(file))
        return _configs[cache_key]


# -- jump hosts: one transport per bastion (chain), shared by every host behind it ----------


# A jump host that failed answers every host behind it with the same reason for this long (one
# fan-out), instead of each host paying its own timeout; a later step of a long run tries again.
_FAILED_HOP_MEMORY_S = 60.0


@dataclass
class _Entry:
    chain: tuple[Hop, ...]
    settings: Any
    parent: _Lease | None
    refs: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    conn: Any = None
    error: SSHUnreachable | None = None
    error_at: float = 0.0
    logins: int = 0  # how many times this hop was logged into (the benchmark and tests read it)


class _Lease:
    def __init__(self, pool: _JumpPool, key: Any, entry: _Entry) -> None:
        self._pool, self._key, self.entry = pool, key, entry
        self._released = False

    def transport(self, target: str) -> Any:
        """The shared, open transport to the last hop of the chain; a failed hop fails fast for everyone."""
        entry = self.entry
        with entry.lock:
            if entry.error is not None and time.monotonic() - entry.error_at < _FAILED_HOP_MEMORY_S:
                raise SSHUnreachable(target, entry.error.hop, entry.error.stage, entry.error.detail,
                                     hint=entry.error.hint)
            if entry.conn is not None and entry.conn.is_active():
                return entry.conn
            if entry.conn is not None:
                with contextlib.suppress(Exception):
                    entry.conn.close()
                entry.conn = None
            via = entry.parent.transport(target) if entry.parent is not None else None
            try:
                entry.conn = _login(entry.chain[-1], entry.settings, target, via)
            except SSHUnreachable as exc:
                entry.error, entry.error_at = exc, time.monotonic()
                raise
            entry.error = None
            entry.logins += 1
            entry.conn.set_keepalive(30)
            return entry.conn

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._pool.release(self._key)


class _JumpPool:
    def __init__(self) -> None:
        self._lock = threading.RLock()  # acquire() recurses for the chain's earlier hops
        self._entries: dict[Any, _Entry] = {}

    def acquire(self, chain: tuple[Hop, ...], settings: Any) -> _Lease:
        key = (chain, settings.connect_timeout, settings.strict_host_keys, settings.agent,
               str(settings.key_passphrase) if settings.key_passphrase is not None else None)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                parent = self.acquire(chain[:-1], settings) if len(chain) > 1 else None
                entry = self._entries[key] = _Entry(chain, settings, parent)
            entry.refs += 1
        return _Lease(self, key, entry)

    def release(self, key: Any) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return
            entry.refs -= 1
            if entry.refs > 0:
                return
            del self._entries[key]
        if entry.conn is not None:
            with contextlib.suppress(Exception):
                entry.conn.close()
        if entry.parent is not None:
            entry.parent.release()

    def logins(self) -> dict[str, int]:
        """Open jump transports by hop label -> logins so far (for tests and benchmarks)."""
        with self._lock:
            return {e.chain[-1].label: e.logins for e in self._entries.values()}


_POOL = _JumpPool()

# paramiko logs what it raises (a banner timeout, a closed socket) at ERROR from its own threads; with no
# handler configured Python prints that to stderr as a traceback. The errors reach the user as ours.
logging.getLogger("paramiko").addHandler(logging.NullHandler())
logging.getLogger("paramiko").propagate = False


# -- sockets -----------------------------------------------------------------------------

if hasattr(socket, "TCP_QUICKACK"):

    class _PromptAckSocket(socket.socket):
        """A TCP socket that acknowledges what it receives at once.

        Why: sshd writes small packets with Nagle on, so a reply that follows another small
        packet waits until we acknowledge the first one, and Linux delays that ACK by 40 ms.
        It happens on the first channel of every connection (after sshd's host-key notice) and
        whenever output comes in pieces. Re-arming TCP_QUICKACK after each read sends the ACK
        now. Measured on loopback: connect + first command 119 ms -> 20 ms per host.
        """

        def recv(self, bufsize: int, flags: int = 0) -> bytes:
            data = super().recv(bufsize, flags)
            with contextlib.suppress(OSError):
                self.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            return data


def _tune(sock: socket.socket) -> socket.socket:
    """Nagle off (it delays every second small write of the handshake by up to 40 ms) and prompt ACKs."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _tuned_socket(sock: socket.socket) -> socket.socket:
    if hasattr(socket, "TCP_QUICKACK") and sock.family in (socket.AF_INET, socket.AF_INET6):
        timeout = sock.gettimeout()
        sock = _PromptAckSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())
        sock.settimeout(timeout)
    return _tune(sock)


_EOF_GRACE = 1.0  # seconds to wait for the end of output after the exit status


def _drain(channel: Any, deadline: float) -> tuple[str, str]:
    """Read stdout and stderr until the output ends (channel EOF), without blocking on either.

    Not until the exit status: sshd may send it before the last output it still has to read
    from the command's pipe (OpenSSH session.c: "there could be some more data waiting in the
    pipe"); stopping there returned a truncated, even empty, stdout under load. A command that
    exits but leaves a background process holding its stdout gets `_EOF_GRACE` instead of EOF.
    """
    out: list[bytes] = []
    err: list[bytes] = []
    exited_at: float | None = None
    while True:
        busy = False
        if channel.recv_ready():
            out.append(channel.recv(65536))
            busy = True
        if channel.recv_stderr_ready():
            err.append(channel.recv_stderr(65536))
            busy = True
        if not busy:
            ended = channel.eof_received or channel.closed  # read before the buffers: data precedes EOF
            if ended and not channel.recv_ready() and not channel.recv_stderr_ready():
                break
            now = time.monotonic()
            if channel.exit_status_ready():
                exited_at = exited_at or now
                if now - exited_at >= _EOF_GRACE and not channel.recv_ready() and not channel.recv_stderr_ready():
                    break
            remaining = deadline - now
            if remaining <= 0:
                raise TimeoutError
            select.select([channel], [], [], min(remaining, 0.05 if exited_at else 0.2))
    return b"".join(out).decode(errors="replace"), b"".join(err).decode(errors="replace")
