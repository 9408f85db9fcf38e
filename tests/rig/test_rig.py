"""Self-tests of the real-component rig (run: pytest tests/rig -q -p no:cacheprovider).

The self-tests use ports *next to* the rig defaults (sshd 2323, nginx 18180/18543/18181,
pebble 14100/14115/14180) so they never collide with session fixtures in
tests/conftest.py that use the defaults in the same pytest run.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from cryptography import x509

from tests.rig.acme import AcmeRig
from tests.rig.fakedocker import (
    install_fake_docker,
    read_docker_calls,
    read_docker_calls_by_host,
    set_daemon_down,
)
from tests.rig.nginx import NginxRig
from tests.rig.sshd import RigHost, SshRig, unreachable_address

SSH_PORT = 2323
NGINX_PORTS = {"http_port": 18180, "https_port": 18543, "backend_port": 18181}
ACME_PORTS = {"acme_port": 14100, "mgmt_port": 14115, "http01_port": 14180}
DOMAIN = "app.indostar.test"
CLEAN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def _need(*binaries: str) -> None:
    missing = [b for b in binaries if shutil.which(b) is None]
    if missing:
        pytest.skip(f"missing binaries {missing}; run scripts/install-system-deps.sh")


@pytest.fixture(scope="module")
def ssh_rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshRig]:
    _need("/usr/sbin/sshd", "ssh-keygen", "ssh")
    rig = SshRig(tmp_path_factory.mktemp("ssh"), port=SSH_PORT)
    rig.start(3)
    yield rig
    rig.stop()


def _get(url: str) -> tuple[int, bytes, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), dict(err.headers)


# ---- sshd -----------------------------------------------------------------------


def test_ssh_hosts_are_distinct_and_strictly_verified(ssh_rig: SshRig) -> None:
    hosts = ssh_rig.hosts
    assert [h.name for h in hosts] == ["host-1", "host-2", "host-3"]
    assert [h.address for h in hosts] == ["127.0.2.1", "127.0.2.2", "127.0.2.3"]
    seen = set()
    for host in hosts:
        with ssh_rig.connection(host) as conn:  # fabric, RejectPolicy + rig known_hosts
            out = conn.run("echo $SSH_CONNECTION; id -u", hide=True).stdout.split()
        assert out[2:] == [host.address, str(SSH_PORT), "0"]
        seen.add(out[2])
    assert seen == {h.address for h in hosts}

    # Raw paramiko with strict host-key checking, too.
    client = paramiko.SSHClient()
    client.load_host_keys(str(ssh_rig.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(hosts[1].address, port=hosts[1].port, username=ssh_rig.user, **ssh_rig.connect_kwargs())
    _, stdout, _ = client.exec_command("echo $SSH_CONNECTION")
    assert stdout.read().decode().split()[2] == hosts[1].address
    client.close()


def test_ssh_rejects_unknown_host_key(ssh_rig: SshRig, tmp_path: Path) -> None:
    client = paramiko.SSHClient()
    (tmp_path / "empty_known_hosts").write_text("")
    client.load_host_keys(str(tmp_path / "empty_known_hosts"))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    host = ssh_rig.hosts[0]
    with pytest.raises(paramiko.SSHException):
        client.connect(host.address, port=host.port, username="root", **ssh_rig.connect_kwargs())
    client.close()


def test_ssh_openssh_client_and_clean_env(ssh_rig: SshRig) -> None:
    """Debian bash would source root's pyenv-laden ~/.bashrc; SetEnv SHLVL=1 prevents it."""
    host = ssh_rig.hosts[2]
    res = subprocess.run(
        ssh_rig.ssh_argv(host) + ["echo $PATH; echo $SHLVL; command -v python3"],
        capture_output=True, text=True, timeout=30,
    )
    assert res.returncode == 0, res.stderr
    path, shlvl, python = res.stdout.split()
    assert ".pyenv" not in path and ".cargo" not in path
    assert shlvl == "2"
    assert python == "/usr/bin/python3"


def test_unreachable_address_refuses_fast(ssh_rig: SshRig) -> None:
    start = time.monotonic()
    with pytest.raises(OSError):
        socket.create_connection((unreachable_address(), SSH_PORT), timeout=5).close()
    assert time.monotonic() - start < 2
    assert unreachable_address() not in {h.address for h in ssh_rig.hosts}


def test_ssh_rig_many_hosts_uses_several_sshd(tmp_path: Path) -> None:
    _need("/usr/sbin/sshd")
    rig = SshRig(tmp_path / "ssh", port=SSH_PORT + 1)
    try:
        hosts = rig.start(17)
        assert len(rig.pids) == 2
        assert hosts[-1] == RigHost("host-17", "127.0.2.17", SSH_PORT + 1)
        assert len(rig.known_hosts.read_text().splitlines()) == 17
        with rig.connection(hosts[-1]) as conn:
            assert conn.run("echo $SSH_CONNECTION", hide=True).stdout.split()[2] == "127.0.2.17"
    finally:
        rig.stop()
    assert rig.pids == []


# ---- fake docker (through the ssh rig) -------------------------------------------


def test_fake_docker_records_calls_per_host(ssh_rig: SshRig, tmp_path: Path) -> None:
    bindir, log = tmp_path / "fakebin", tmp_path / "docker-calls.log"
    install_fake_docker(bindir, log)
    env = {"PATH": f"{bindir}:{CLEAN_PATH}"}
    for host in ssh_rig.hosts[:2]:
        with ssh_rig.connection(host) as conn:
            table = conn.run("docker system df", env=env, hide=True).stdout
            jsn = conn.run("docker system df --format '{{json .}}'", env=env, hide=True).stdout
            pruned = conn.run("docker image prune -f --filter until=24h", env=env, hide=True).stdout
    assert table.splitlines()[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
    assert '"Type":"Images"' in jsn.splitlines()[0]
    assert pruned.strip().endswith("Total reclaimed space: 3.12GB")
    assert read_docker_calls_by_host(log)[0] == ("127.0.2.1", ["system", "df"])
    assert read_docker_calls(log)[-1] == ["image", "prune", "-f", "--filter", "until=24h"]
    assert [a for a, _ in read_docker_calls_by_host(log)] == ["127.0.2.1"] * 3 + ["127.0.2.2"] * 3


def test_fake_docker_prompt_and_daemon_down(tmp_path: Path) -> None:
    docker = install_fake_docker(tmp_path / "bin", tmp_path / "log")
    res = subprocess.run([docker, "system", "prune"], input="", capture_output=True, text=True)
    assert res.returncode == 1 and "Are you sure" in res.stdout
    set_daemon_down(tmp_path / "bin")
    res = subprocess.run([docker, "system", "df"], capture_output=True, text=True)
    assert res.returncode == 1 and "Cannot connect to the Docker daemon" in res.stderr
    assert read_docker_calls(tmp_path / "log") == [["system", "prune"], ["system", "df"]]


# ---- nginx --------------------------------------------------------------------------


@pytest.fixture
def nginx_rig(tmp_path: Path) -> Iterator[NginxRig]:
    _need("/usr/sbin/nginx")
    rig = NginxRig(tmp_path / "nginx", **NGINX_PORTS)
    rig.start()
    yield rig
    rig.stop()


def test_nginx_proxies_to_backend_and_reloads(nginx_rig: NginxRig) -> None:
    status, body, headers = _get(nginx_rig.http_url + "/health")
    assert (status, body, headers.get("X-Backend")) == (200, b"backend ok\n", "1")
    assert nginx_rig.backend_requests[-1] == ("GET", "/health")
    ok, out = nginx_rig.test_config()
    assert ok, out
    assert nginx_rig.nginx_cmd_prefix()[-2:] == ["-c", str(nginx_rig.conf_path)]
    master = nginx_rig.pid
    nginx_rig.reload()
    assert nginx_rig.pid == master
    assert _get(nginx_rig.http_url)[0] == 200
    # A broken snippet fails `nginx -t` (production code must not reload then).
    nginx_rig.maintenance_snippet.write_text("this is not nginx syntax\n")
    ok, out = nginx_rig.test_config()
    assert not ok and "test failed" in out
    nginx_rig.maintenance_snippet.write_text("")


def test_nginx_maintenance_snippet_variants(nginx_rig: NginxRig, tmp_path: Path) -> None:
    """Documents which server-level maintenance snippets work (see nginx.py docstring)."""
    html = tmp_path / "html"
    html.mkdir()
    (html / "maintenance.html").write_text("<h1>down for maintenance</h1>\n")
    flag = tmp_path / "maintenance.on"
    uri_page = f"error_page 503 /maintenance.html; location = /maintenance.html {{ root {html}; internal; }}"
    variants = {
        # as first proposed: 503 works, but the body is nginx's built-in page
        "uri": (f"{uri_page} if (-f {flag}) {{ return 503; }}", False),
        "named": (
            f"error_page 503 @maintenance; location @maintenance {{ root {html}; "
            f"rewrite ^ /maintenance.html break; }} if (-f {flag}) {{ return 503; }}",
            True,
        ),
        "uri-guarded": (
            f"{uri_page} set $maintenance 0; if (-f {flag}) {{ set $maintenance 1; }} "
            "if ($uri = /maintenance.html) { set $maintenance 0; } "
            "if ($maintenance) { return 503; }",
            True,
        ),
    }
    for name, (snippet, custom_body) in variants.items():
        nginx_rig.maintenance_snippet.write_text(snippet + "\n")
        ok, out = nginx_rig.test_config()
        assert ok, (name, out)
        nginx_rig.reload()
        assert _get(nginx_rig.http_url + "/a")[0] == 200, name
        flag.touch()
        status, body, _ = _get(nginx_rig.http_url + "/a")
        assert status == 503, name
        assert (b"down for maintenance" in body) is custom_body, (name, body)
        flag.unlink()
        assert _get(nginx_rig.http_url + "/a")[:2] == (200, b"backend ok\n"), name


# ---- pebble + certbot + nginx https ------------------------------------------------


def test_acme_issue_and_serve_over_https(tmp_path: Path) -> None:
    _need("pebble", "certbot", "/usr/sbin/nginx")
    acme = AcmeRig(tmp_path / "acme", validity_seconds=3600, **ACME_PORTS)
    nginx: NginxRig | None = None
    try:
        acme.start()
        live = acme.issue(DOMAIN, tmp_path / "le")
        cert = x509.load_pem_x509_certificate((live / "cert.pem").read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sans.get_values_for_type(x509.DNSName) == [DOMAIN]
        lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
        assert lifetime.total_seconds() <= 3600 + 60

        nginx = NginxRig(
            tmp_path / "nginx",
            https_cert=live / "fullchain.pem",
            https_key=live / "privkey.pem",
            server_name=DOMAIN,
            **NGINX_PORTS,
        )
        nginx.start()
        ctx = ssl.create_default_context(cafile=str(acme.root_ca_path))
        with socket.create_connection(("127.0.0.1", NGINX_PORTS["https_port"]), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname=DOMAIN) as tls:  # SNI + chain + name
                served = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
                tls.sendall(f"GET / HTTP/1.1\r\nHost: {DOMAIN}\r\nConnection: close\r\n\r\n".encode())
                reply = b""
                while chunk := tls.recv(4096):
                    reply += chunk
        assert served.serial_number == cert.serial_number
        assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"backend ok\n")

        # 1 h certs are due for renewal; renew() always passes --no-random-sleep-on-renew.
        res = acme.renew(tmp_path / "le")
        assert "Congratulations, all renewals succeeded" in res.stdout + res.stderr
        renewed = x509.load_pem_x509_certificate((live / "cert.pem").read_bytes())
        assert renewed.serial_number != cert.serial_number
    finally:
        if nginx is not None:
            nginx.stop()
        acme.stop()
    assert acme.pid is None
