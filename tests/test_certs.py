"""certs.check / certs.renew against a real ACME flow: pebble, certbot, a private nginx over TLS, SSH."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tests.host_support import DOMAIN, AcmeSite, acme_site, host_inventory, targets  # noqa: F401
from tests.rig.sshd import SshRig
from tests.support import InventoryDir, cli_json


def served(site: AcmeSite) -> x509.Certificate:
    """The certificate nginx serves for DOMAIN, verified against pebble's root (the test's own TLS client)."""
    context = ssl.create_default_context(cafile=str(site.acme.root_ca_path))
    with socket.create_connection(("127.0.0.1", site.nginx.https_port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=DOMAIN) as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def on_disk(site: AcmeSite) -> x509.Certificate:
    return x509.load_pem_x509_certificate((site.live / "cert.pem").read_bytes())


def sha256(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


@pytest.fixture
def site_env(inventory: InventoryDir, ssh_rig: SshRig, acme_site: AcmeSite, tmp_path: Path):  # noqa: F811
    """Write inventory 'site': host-1 (over SSH) serves DOMAIN through the private nginx; returns a writer."""
    def make(certbot_vars: dict | None = None, **overrides) -> str:
        host = ssh_rig.hosts[0]
        data = host_inventory(ssh_rig, [host], tmp_path, {host.name: certbot_vars or acme_site.certbot_vars()},
                              **overrides)
        inventory.write("site", data)
        return "site"
    return make


def test_check_reads_served_and_file_certificate(site_env, acme_site: AcmeSite) -> None:  # noqa: F811
    """certs.check reports days left, issuer, SANs of the served cert, that it verifies and equals the file."""
    code, doc = cli_json("certs.check", "--env", site_env())
    assert code == 0, doc
    result = targets(doc, "certs.check")["host-1"]
    assert result["severity"] == "OK"
    cert = result["data"]["certificates"][0]
    assert cert["matches_file"] is True
    assert cert["served"]["sha256"] == sha256(served(acme_site)) == cert["file"]["sha256"]
    assert cert["served"]["sans"] == [DOMAIN]
    assert "Pebble" in cert["served"]["issuer"]
    assert cert["served"]["verified"] is True
    assert cert["days_left"] > 365


@pytest.mark.parametrize(("warning", "critical", "code", "severity"), [
    (100_000, 7, 1, "WARNING"),
    (100_000, 90_000, 2, "CRITICAL"),
])
def test_check_thresholds_give_monitoring_exit_codes(site_env, warning, critical, code, severity) -> None:
    """Days left under the inventory's warning/critical thresholds exit 1/2 like a monitoring check."""
    env = site_env(thresholds={"cert_days_left": {"warning": warning, "critical": critical}})
    got, doc = cli_json("certs.check", "--env", env)
    assert (got, targets(doc, "certs.check")["host-1"]["severity"]) == (code, severity)


def test_check_untrusted_chain_is_critical(site_env, acme_site: AcmeSite) -> None:  # noqa: F811
    """A served chain that does not verify (pebble's CA is not in the system store) is CRITICAL."""
    vars_ = acme_site.certbot_vars()
    vars_["certificates"][0].pop("ca_file")
    code, doc = cli_json("certs.check", "--env", site_env(vars_))
    cert = targets(doc, "certs.check")["host-1"]["data"]["certificates"][0]
    assert code == 2
    assert cert["served"]["verified"] is False and "verify" in " ".join(cert["problems"])


def test_check_without_certificates_is_unknown(inventory: InventoryDir, ssh_rig: SshRig, tmp_path: Path) -> None:
    """An environment with no certificates configured is UNKNOWN (3): skipped with the reason, not a silent OK."""
    inventory.write("bare", host_inventory(ssh_rig, ssh_rig.hosts[:1], tmp_path))
    code, doc = cli_json("certs.check", "--env", "bare")
    assert code == 3
    (result,) = doc["steps"][0]["targets"]
    assert result["status"] == "skipped" and "no host in any group has certificates configured" in result["reason"]


def test_renew_nothing_due_is_a_noop_without_reload(site_env, acme_site: AcmeSite) -> None:  # noqa: F811
    """A certificate years from expiry: no certbot, no nginx reload, and the reason says so."""
    workers = acme_site.nginx.worker_pids()
    code, doc = cli_json("certs.renew", "--env", site_env())
    result = targets(doc, "certs.renew")["host-1"]
    assert code == 0 and result["status"] == "ok"
    assert "no certificate due" in result["reason"] and "not reloaded" in result["reason"]
    assert "actions" not in result
    assert acme_site.nginx.worker_pids() == workers


def test_renew_force_check_mode_changes_nothing(site_env, acme_site: AcmeSite) -> None:  # noqa: F811
    """--force --check plans certbot + reload and runs neither."""
    before, workers = sha256(on_disk(acme_site)), acme_site.nginx.worker_pids()
    code, doc = cli_json("certs.renew", "--env", site_env(), "--force", "--check")
    result = targets(doc, "certs.renew")["host-1"]
    assert code == 0 and result["status"] == "changed"
    assert [c["summary"].split()[0] for c in result["changes"]] == ["certbot", "nginx"]
    assert "actions" not in result
    assert sha256(on_disk(acme_site)) == before and acme_site.nginx.worker_pids() == workers


def test_renew_force_renews_reloads_and_serves_the_new_certificate(site_env, acme_site: AcmeSite) -> None:  # noqa: F811
    """certs.renew --force: certbot renews, nginx -t passes, reload, the served expiry moves; then a no-op."""
    env = site_env()
    old, workers = served(acme_site), acme_site.nginx.worker_pids()
    code, doc = cli_json("certs.renew", "--env", env, "--force")
    result = targets(doc, "certs.renew")["host-1"]
    assert code == 0, result
    acme_site.nginx.wait_reloaded(workers)  # the old worker generation is gone
    new = served(acme_site)
    assert sha256(new) != sha256(old) and sha256(new) == sha256(on_disk(acme_site))
    assert new.not_valid_after_utc > old.not_valid_after_utc
    commands = [a["command"] for a in result["actions"]]
    assert "--no-random-sleep-on-renew" in commands[0] and "--force-renewal" in commands[0]
    assert commands[-1].endswith("-s reload")
    assert result["data"]["served_after"][DOMAIN]["sha256"] == sha256(new)
    assert result["data"]["served_after"][DOMAIN]["expiry_moved"] is True
    assert result["reason"].startswith(f"now serving: {DOMAIN} until")

    code, doc = cli_json("certs.renew", "--env", env)
    assert code == 0 and "no certificate due" in targets(doc, "certs.renew")["host-1"]["reason"]


def test_broken_nginx_config_refuses_renewal_before_certbot(site_env, acme_site: AcmeSite) -> None:  # noqa: F811
    """nginx -t failing BEFORE renewal: exit 1, certbot never runs (no renewal spent), nothing reloaded."""
    env = site_env()
    nginx = acme_site.nginx
    before, workers = sha256(on_disk(acme_site)), nginx.worker_pids()
    nginx.maintenance_snippet.write_text("this is not nginx syntax;\n")
    try:
        code, doc = cli_json("certs.renew", "--env", env, "--force", "--check")  # the preview says so already
        preview = targets(doc, "certs.renew")["host-1"]
        assert code == 0 and "nginx -t FAILS now" in preview["changes"][-1]["summary"]
        code, doc = cli_json("certs.renew", "--env", env, "--force")
    finally:
        nginx.maintenance_snippet.write_text("")
    result = targets(doc, "certs.renew")["host-1"]
    assert code == 1 and result["status"] == "failed"
    assert "nginx -t fails BEFORE renewal; refusing to renew" in result["error"]
    assert "unknown directive" in result["error"] and "certbot was not run" in result["error"]
    assert not any("certbot" in a.get("command", "") or "reload" in a.get("command", "")
                   for a in result.get("actions", []))
    assert sha256(on_disk(acme_site)) == before and nginx.worker_pids() == workers


def test_config_broken_by_the_renewal_is_never_reloaded(site_env, acme_site: AcmeSite) -> None:  # noqa: F811
    """nginx -t passes, certbot renews, then nginx -t fails (a deploy hook broke it): no reload, old cert served."""
    nginx = acme_site.nginx
    vars_ = acme_site.certbot_vars()
    vars_["certbot"]["options"] += ["--deploy-hook", f"echo 'this is not nginx syntax;' > {nginx.maintenance_snippet}"]
    env = site_env(vars_)
    old, workers = served(acme_site), nginx.worker_pids()
    try:
        code, doc = cli_json("certs.renew", "--env", env, "--force")
        result = targets(doc, "certs.renew")["host-1"]
        assert code == 1 and result["status"] == "failed"
        assert "nginx -t failed" in result["error"] and "NOT reloaded" in result["error"]
        assert "unknown directive" in result["error"]
        assert not any(a["command"].endswith("-s reload") for a in result["actions"])
        assert nginx.worker_pids() == workers and sha256(served(acme_site)) == sha256(old)

        code, doc = cli_json("certs.check", "--env", env)
        cert = targets(doc, "certs.check")["host-1"]["data"]["certificates"][0]
        assert code == 1 and cert["matches_file"] is False
    finally:
        nginx.maintenance_snippet.write_text("")

    code, doc = cli_json("certs.renew", "--env", site_env())  # fixed config: reload only, no certbot
    result = targets(doc, "certs.renew")["host-1"]
    assert code == 0, result
    nginx.wait_reloaded(workers)
    assert [a["command"].split()[-1] for a in result["actions"]] == ["reload"]
    assert sha256(served(acme_site)) == sha256(on_disk(acme_site)) != sha256(old)


def test_window_wider_than_certbots_is_reported_not_hidden(site_env, acme_site: AcmeSite) -> None:  # noqa: F811
    """If the inventory calls a cert due but certbot does not renew it, renew fails saying why; no reload."""
    vars_ = acme_site.certbot_vars()
    vars_["certbot"]["renew_before_days"] = 5000
    workers, before = acme_site.nginx.worker_pids(), sha256(on_disk(acme_site))
    code, doc = cli_json("certs.renew", "--env", site_env(vars_))
    result = targets(doc, "certs.renew")["host-1"]
    assert code == 1 and "not yet due" in result["error"] and "--force" in result["error"]
    assert "--force-renewal" not in result["actions"][0]["command"]
    assert sha256(on_disk(acme_site)) == before and acme_site.nginx.worker_pids() == workers


@pytest.mark.parametrize(("probe", "code", "says"), [
    ({"probe_host": DOMAIN, "ca": True}, 0, "answers 200"),
    ({"probe_host": DOMAIN, "ca": False}, 3, "CERTIFICATE_VERIFY_FAILED"),
    ({"probe_host": DOMAIN, "ca": False, "probe_verify": False}, 0, "answers 200"),
    ({"probe_host": "other.indostar.test", "ca": True}, 3, "Hostname mismatch"),
])
def test_maintenance_probe_speaks_https_with_the_sites_name(inventory: InventoryDir, ssh_rig: SshRig,
                                                            acme_site: AcmeSite, tmp_path: Path,  # noqa: F811
                                                            probe: dict, code: int, says: str) -> None:
    """probe_url over https with the site's name (SNI + Host), a CA bundle and verify options, like certs.check."""
    host = ssh_rig.hosts[0]
    base = tmp_path / host.name
    nginx = {"maintenance_snippet": str(base / "nginx/maintenance.conf"),
             "maintenance_flag": str(base / "flag/maintenance.on"), "maintenance_page_dir": str(base / "html"),
             "probe_url": f"https://127.0.0.1:{acme_site.nginx.https_port}/shop", "probe_host": probe["probe_host"]}
    if probe["ca"]:
        nginx["probe_ca_file"] = str(acme_site.acme.root_ca_path)
    if "probe_verify" in probe:
        nginx["probe_verify"] = probe["probe_verify"]
    inventory.write("probe", host_inventory(ssh_rig, [host], tmp_path, {host.name: {"nginx": nginx}}))
    got, doc = cli_json("maintenance.status", "--env", "probe")
    result = targets(doc, "maintenance.status")[host.name]
    assert (got, result["severity"]) == (code, "OK" if code == 0 else "UNKNOWN"), result
    assert says in result["reason"]
