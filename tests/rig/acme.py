"""A private ACME CA (pebble) plus helpers to run the real certbot against it.

Why: certificate issue/renewal must be tested with the real certbot and a real ACME
server, with no internet. Debian's pebble ships no test certs, so the rig makes a
tiny CA with ``cryptography`` for pebble's *listener* (HTTPS of the ACME API).

Two different CAs are involved - do not mix them up:

* ``listener_ca_path``: signs pebble's HTTPS listener. certbot must trust it, via
  ``REQUESTS_CA_BUNDLE`` (see ``certbot_env()``).
* ``root_ca_path``: pebble's *issuing* root, fetched from ``/roots/0`` after start.
  Certificates issued by certbot chain up to it (use it to verify what nginx serves).

Pebble runs with ``PEBBLE_VA_ALWAYS_VALID=1`` (no challenge is really validated, so no
DNS/challtestsrv is needed; certbot's standalone server still binds the http-01 port)
and ``PEBBLE_WFE_NONCEREJECT=0`` / ``PEBBLE_AUTHZREUSE=0`` for deterministic runs.

Gotchas:

* ``certbot renew`` without a TTY first sleeps a random 1-480 s. ALWAYS pass
  ``--no-random-sleep-on-renew`` (``renew()`` does).
* Pebble keeps everything in memory and makes a new root per start: after a pebble
  restart, accounts saved in a certbot config dir are unknown (certbot 2.1 reports a
  confusing ``AttributeError: can't set attribute``); ``forget_accounts()`` fixes it.
* ``validity_seconds=3600`` gives certs that certbot considers due for renewal
  (certbot renews inside 30 days), so plain ``renew`` renews without waiting.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

PEBBLE = "/usr/bin/pebble"
CERTBOT = "certbot"


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.chmod(path, 0o600)


def make_listener_ca(workdir: Path) -> tuple[Path, Path, Path]:
    """Create CA + server cert (SAN localhost, 127.0.0.1); return (ca, cert, key) paths."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "indostar test ACME listener CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path = workdir / "listener-ca.pem"
    cert_path = workdir / "listener-cert.pem"
    key_path = workdir / "listener-key.pem"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key_path, key)
    return ca_path, cert_path, key_path


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class AcmeRig:
    """Start/stop pebble; run certbot against it.

    Usage::

        acme = AcmeRig(tmp_path / "acme", validity_seconds=3600)
        acme.start()
        live = acme.issue("app.indostar.test", tmp_path / "le")   # .../live/app.indostar.test
        acme.renew(tmp_path / "le")                               # due: renews
        acme.stop()
    """

    def __init__(
        self,
        workdir: Path,
        acme_port: int = 14000,
        mgmt_port: int = 14015,
        http01_port: int = 14080,
        validity_seconds: int | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.acme_port = acme_port
        self.mgmt_port = mgmt_port
        self.http01_port = http01_port
        self.validity_seconds = validity_seconds
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = None

    # -- paths / urls ----------------------------------------------------------------
    @property
    def listener_ca_path(self) -> Path:
        """CA of pebble's HTTPS listener (what REQUESTS_CA_BUNDLE must point to)."""
        return self.workdir / "listener-ca.pem"

    @property
    def root_ca_path(self) -> Path:
        """Pebble's issuing root for this run (fetched from /roots/0 at start)."""
        return self.workdir / "pebble-root.pem"

    @property
    def config_path(self) -> Path:
        return self.workdir / "pebble.json"

    @property
    def log_path(self) -> Path:
        return self.workdir / "pebble.log"

    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self.acme_port}/dir"

    @property
    def pid(self) -> int | None:
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    def _ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.listener_ca_path))

    # -- lifecycle ----------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> None:
        """Make listener certs + config, start pebble, wait for /dir, save /roots/0."""
        if self._proc is not None:
            raise RuntimeError("AcmeRig already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        _, cert, key = make_listener_ca(self.workdir)
        conf: dict[str, object] = {
            "listenAddress": f"127.0.0.1:{self.acme_port}",
            "managementListenAddress": f"127.0.0.1:{self.mgmt_port}",
            "certificate": str(cert),
            "privateKey": str(key),
            # Unused with ALWAYS_VALID; still keep them on the rig's own ports.
            "httpPort": self.http01_port,
            "tlsPort": self.http01_port + 363,  # 14443 by default
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
        if self.validity_seconds is not None:
            conf["certificateValidityPeriod"] = int(self.validity_seconds)
        self.config_path.write_text(json.dumps({"pebble": conf}, indent=2))
        env = dict(os.environ)
        env.update(
            PEBBLE_VA_ALWAYS_VALID="1",
            PEBBLE_VA_NOSLEEP="1",
            PEBBLE_WFE_NONCEREJECT="0",
            PEBBLE_AUTHZREUSE="0",
        )
        self._log = open(self.log_path, "ab")
        self._proc = subprocess.Popen(
            [PEBBLE, "-config", str(self.config_path)],
            cwd=self.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            self._wait_ready(timeout)
            with urllib.request.urlopen(
                f"https://127.0.0.1:{self.mgmt_port}/roots/0", context=self._ssl_context(), timeout=10
            ) as resp:
                self.root_ca_path.write_bytes(resp.read())
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        ctx = self._ssl_context()
        last: Exception | None = None
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"pebble exited with {self._proc.returncode}:\n{self.log_text()}")
            if _port_open(self.acme_port) and _port_open(self.mgmt_port):
                try:
                    with urllib.request.urlopen(self.directory_url, context=ctx, timeout=5) as resp:
                        json.load(resp)
                        return
                except Exception as exc:
                    last = exc
            if time.monotonic() > deadline:
                raise TimeoutError(f"pebble /dir not ready ({last}):\n{self.log_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop only the pebble process this rig started."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- certbot --------------------------------------------------------------------------
    def certbot_env(self) -> dict[str, str]:
        """Environment for certbot: trust pebble's listener CA (not its issuing root)."""
        env = dict(os.environ)
        env["REQUESTS_CA_BUNDLE"] = str(self.listener_ca_path)
        return env

    def certbot_base_args(self, config_dir: Path) -> list[str]:
        """Common certbot options; work/logs dirs live inside ``config_dir``.

        For ``certbot renew`` ALSO pass ``--no-random-sleep-on-renew`` (else a random
        sleep of up to 8 minutes when there is no TTY).
        """
        config_dir = Path(config_dir)
        return [
            "--config-dir", str(config_dir),
            "--work-dir", str(config_dir / "work"),
            "--logs-dir", str(config_dir / "logs"),
            "--non-interactive",
            "--server", self.directory_url,
        ]

    def run_certbot(
        self, config_dir: Path, *args: str, check: bool = True, timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        """Run ``certbot <base args> <args>``; raise with its output if ``check`` fails."""
        cmd = [CERTBOT, *self.certbot_base_args(config_dir), *args]
        res = subprocess.run(
            cmd, env=self.certbot_env(), capture_output=True, text=True,
            stdin=subprocess.DEVNULL, timeout=timeout,
        )
        if check and res.returncode != 0:
            raise RuntimeError(
                f"certbot failed ({res.returncode}): {' '.join(cmd)}\n{res.stdout}\n{res.stderr}"
            )
        return res

    def issue_args(self, domain: str) -> list[str]:
        """certbot arguments (after the base args) that ``issue()`` uses."""
        return [
            "certonly", "--standalone", "--preferred-challenges", "http",
            "--http-01-address", "127.0.0.1", "--http-01-port", str(self.http01_port),
            "--agree-tos", "--register-unsafely-without-email",
            "--key-type", "ecdsa", "-d", domain,
        ]

    def issue(self, domain: str, config_dir: Path) -> Path:
        """Issue a cert for ``domain`` with certbot standalone; return its live dir."""
        self.run_certbot(config_dir, *self.issue_args(domain))
        live = Path(config_dir) / "live" / domain
        if not (live / "fullchain.pem").exists():
            raise RuntimeError(f"certbot reported success but {live}/fullchain.pem is missing")
        return live

    def renew(
        self, config_dir: Path, *extra: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """``certbot renew --no-random-sleep-on-renew [extra]`` (e.g. ``--force-renewal``)."""
        return self.run_certbot(config_dir, "renew", "--no-random-sleep-on-renew", *extra, check=check)

    @staticmethod
    def forget_accounts(config_dir: Path) -> None:
        """Delete certbot's saved ACME accounts (needed after a pebble restart)."""
        shutil.rmtree(Path(config_dir) / "accounts", ignore_errors=True)

    def __enter__(self) -> AcmeRig:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
