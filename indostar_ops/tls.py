"""TLS probing shared by certs.* and the maintenance probe: handshake with SNI, parse the served leaf,
and an HTTP(S) GET that can name the server (SNI + Host) apart from the address it connects to.

`cryptography` is imported only when a certificate is parsed.
"""

from __future__ import annotations

import datetime as dt
import http.client
import socket
import ssl
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryptography import x509

__all__ = ["CertInfo", "Served", "describe_certificate", "fetch_served", "http_get", "load_leaf", "split_endpoint"]

HANDSHAKE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class CertInfo:
    """The facts about one certificate that an operator acts on."""

    fingerprint: str
    serial: str
    subject: str
    issuer: str
    sans: tuple[str, ...]
    not_before: dt.datetime
    not_after: dt.datetime

    def days_left(self, now: dt.datetime) -> float:
        return (self.not_after - now).total_seconds() / 86400

    def as_dict(self, now: dt.datetime) -> dict[str, Any]:
        return {"days_left": round(self.days_left(now), 2), "not_after": self.not_after.isoformat(),
                "not_before": self.not_before.isoformat(), "issuer": self.issuer, "subject": self.subject,
                "sans": list(self.sans), "serial": self.serial, "sha256": self.fingerprint}


def describe_certificate(cert: x509.Certificate) -> CertInfo:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = tuple([*ext.get_values_for_type(x509.DNSName), *map(str, ext.get_values_for_type(x509.IPAddress))])
    except x509.ExtensionNotFound:
        sans = ()
    return CertInfo(cert.fingerprint(hashes.SHA256()).hex(), format(cert.serial_number, "x"),
                    cert.subject.rfc4514_string(), cert.issuer.rfc4514_string(), sans,
                    cert.not_valid_before_utc, cert.not_valid_after_utc)


def load_leaf(pem: bytes) -> CertInfo:
    """The first certificate of a PEM file (cert.pem or fullchain.pem)."""
    from cryptography import x509

    return describe_certificate(x509.load_pem_x509_certificates(pem)[0])


@dataclass(frozen=True)
class Served:
    """What a TLS client got from the endpoint."""

    info: CertInfo | None = None
    verified: bool | None = None
    verify_error: str | None = None
    error: str | None = None


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """'host:port', '[v6]:port' or 'host' (port 443)."""
    if endpoint.startswith("["):
        address, _, rest = endpoint[1:].partition("]")
        return address, int(rest.lstrip(":") or 443)
    address, sep, port = endpoint.rpartition(":")
    return (address, int(port)) if sep and port.isdigit() else (endpoint, 443)


def client_context(ca_file: str | None = None, *, verify: bool = True) -> ssl.SSLContext:
    """Verify chain + name against `ca_file` (or the system store); `verify=False` accepts anything."""
    if verify:
        return ssl.create_default_context(cafile=ca_file)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def fetch_served(endpoint: str, sni: str, ca_file: str | None = None,
                 timeout: float = HANDSHAKE_TIMEOUT_S) -> Served:
    """Handshake with SNI and read the served leaf; verify chain + name against ca_file or system trust."""
    from cryptography import x509

    address, port = split_endpoint(endpoint)
    verified, verify_error = True, None
    try:
        try:
            der = _handshake(client_context(ca_file), address, port, sni, timeout)
        except ssl.SSLCertVerificationError as exc:
            verified, verify_error = False, exc.verify_message or str(exc)
            der = _handshake(client_context(verify=False), address, port, sni, timeout)
    except (OSError, ssl.SSLError) as exc:
        return Served(error=f"TLS handshake with {endpoint} (SNI {sni}) failed: {exc}")
    return Served(describe_certificate(x509.load_der_x509_certificate(der)), verified, verify_error)


def _handshake(context: ssl.SSLContext, address: str, port: int, sni: str, timeout: float) -> bytes:
    with socket.create_connection((address, port), timeout=timeout) as raw, \
            context.wrap_socket(raw, server_hostname=sni) as tls:
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise ssl.SSLError(f"{address}:{port} sent no certificate")
    return der


class _NamedHTTPSConnection(http.client.HTTPSConnection):
    """Connects to the URL's address but says `server_name` in the TLS handshake (SNI) and verifies it."""

    def __init__(self, host: str, port: int | None, *, server_name: str, context: ssl.SSLContext,
                 timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self.server_name = server_name
        self.tls_context = context

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self.tls_context.wrap_socket(self.sock, server_hostname=self.server_name)


def http_get(url: str, *, server_name: str | None = None, ca_file: str | None = None, verify: bool = True,
             headers: dict[str, str] | None = None, timeout: float = 5) -> tuple[int, bytes]:
    """GET `url`; `server_name` becomes the Host header and, over HTTPS, the SNI name that is verified.

    Raises OSError (refused, timeout, TLS failure) or ValueError (a malformed URL); HTTP errors are
    answers, returned with their status.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    name = server_name or parts.hostname
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = _NamedHTTPSConnection(parts.hostname, parts.port, server_name=name,
                                           context=client_context(ca_file, verify=verify), timeout=timeout)
    else:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    sent = {"Host": name if server_name else parts.netloc, "Connection": "close", **(headers or {})}
    try:
        connection.request("GET", path, headers=sent)
        response = connection.getresponse()
        return int(response.status), response.read()
    except http.client.HTTPException as exc:
        raise OSError(f"bad HTTP answer: {exc!r}") from None
    finally:
        connection.close()
