"""Runbook "Certificate Renewal": what is served vs the file, and safe renewal with certbot + nginx."""

from __future__ import annotations

from invoke import task

from ._help import common


def _split(value: str) -> list[str] | None:
    return [v for v in value.split(",") if v] or None


@task(help=common(changes=False, groups="comma-separated host groups (default: all hosts with certificates)",
                  name="only these certificate names (comma-separated)"))
def check(c, env=None, check=False, json=False, groups="", name=""):
    """Served certificate vs file: days left, issuer, SANs; exit 0/1/2/3 = OK/WARNING/CRITICAL/UNKNOWN."""
    from ..cli import run_steps
    from ..steps.certs import CertificateCheck

    run_steps("certs.check", env=env, check=check, json=json, monitoring=True,
              build=lambda _env: [CertificateCheck(groups=_split(groups), names=_split(name))])


@task(help=common(groups="comma-separated host groups (default: all hosts with certificates)",
                  name="only these certificate names (comma-separated)",
                  force="renew even if not due (certbot --force-renewal)"))
def renew(c, env=None, check=False, json=False, yes=False, groups="", name="", force=False):
    """Renew due certificates (certbot, never the random sleep), nginx -t, reload only if it passes, verify."""
    from ..cli import run_steps
    from ..steps.certs import RenewCertificates

    run_steps("certs.renew", env=env, check=check, json=json, yes=yes,
              build=lambda _env: [RenewCertificates(groups=_split(groups), force=force, names=_split(name))])
