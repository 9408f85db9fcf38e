"""Runbook "Certificate Renewal": check what is really served, renew only what is due, reload safely.

The runbook runs `openssl x509 -dates` on the file, `certbot renew`, `nginx -s reload`.
That misses the failure that actually bites: a renewed file that nginx never
loaded. So the check compares the certificate *served* (TLS handshake with SNI to
the host's endpoint) with the *file* on the host, both parsed with `cryptography`,
by SHA-256 fingerprint.

Renewal first runs `nginx -t`: with a broken config a renewal would be spent (Let's Encrypt
rate limits) on a certificate nginx cannot load, so it is refused. Then
`certbot renew --cert-name NAME` only for certificates inside certbot's renewal window
(or with `force`), always with `--no-random-sleep-on-renew` (without a terminal certbot
first sleeps up to 8 minutes), then `nginx -t` again and a reload only if it passes,
then it waits (one poller) until the new certificate is served.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import StepError, StepValueError, VerificationFailed, WaitTimeout
from ..facts import read_optional
from ..nginxctl import nginx_test, nginx_test_and_reload, test_command
from ..poll import wait_until
from ..severity import Severity
from ..step import Change, Outcome, Plan, Step
from ..tls import CertInfo, Served, fetch_served, load_leaf

if TYPE_CHECKING:
    from ..context import Context
    from ..inventory import CertificateSettings, HostTarget, Threshold

__all__ = ["CertificateCheck", "RenewCertificates"]

SERVED_WAIT_S = 15.0
STABLE_HANDSHAKES = 3


def _config_dir(options: Sequence[str]) -> str:
    for i, option in enumerate(options):
        if option == "--config-dir" and i + 1 < len(options):
            return options[i + 1]
        if option.startswith("--config-dir="):
            return option.split("=", 1)[1]
    return "/etc/letsencrypt"


@dataclass
class CertStatus:
    """One configured certificate on one host: its file, what is served, and how bad it is."""

    name: str
    path: str
    endpoint: str
    sni: str
    now: dt.datetime
    file: CertInfo | None = None
    file_error: str | None = None
    served: Served = field(default_factory=Served)

    @property
    def matches(self) -> bool | None:
        if self.file is None or self.served.info is None:
            return None
        return self.file.fingerprint == self.served.info.fingerprint

    @property
    def days_left(self) -> float | None:
        info = self.served.info or self.file
        return None if info is None else info.days_left(self.now)

    def evaluate(self, threshold: Threshold) -> tuple[Severity, list[str]]:
        """Severity and the findings behind it (thresholds on the served certificate, else the file)."""
        levels, notes = [], []
        days = self.days_left
        if days is None:
            levels.append(Severity.UNKNOWN)
        else:
            levels.append(threshold.evaluate(days))
        if self.served.error:
            levels.append(Severity.UNKNOWN)
            notes.append(self.served.error)
        if self.file_error:
            levels.append(Severity.UNKNOWN)
            notes.append(self.file_error)
        if self.served.verified is False:
            levels.append(Severity.CRITICAL)
            notes.append(f"served certificate does not verify: {self.served.verify_error}")
        if self.matches is False:
            levels.append(Severity.WARNING)
            notes.append(f"nginx serves a different certificate than {self.path} (reload needed: certs.renew)")
        return Severity.worst(levels), notes

    def summary(self, threshold: Threshold) -> str:
        severity, notes = self.evaluate(threshold)
        info = self.served.info or self.file
        if info is None:
            head = f"{self.name}: no certificate could be read"
        else:
            source = "served" if self.served.info else "file"
            head = (f"{self.name}: {self.days_left:.1f} days left ({source}, until {info.not_after:%Y-%m-%d %H:%M} "
                    f"UTC, issuer {_short(info.issuer)})")
            if self.matches:
                head += ", served = file"
        return f"{head} [{severity.name}]" + "".join(f"; {n}" for n in notes)

    def as_dict(self, threshold: Threshold) -> dict[str, Any]:
        severity, notes = self.evaluate(threshold)
        out: dict[str, Any] = {"name": self.name, "path": self.path, "endpoint": self.endpoint, "sni": self.sni,
                               "severity": severity.name, "matches_file": self.matches}
        if self.days_left is not None:
            out["days_left"] = round(self.days_left, 2)
        if self.file:
            out["file"] = self.file.as_dict(self.now)
        if self.served.info:
            out["served"] = {**self.served.info.as_dict(self.now), "verified": self.served.verified}
            if self.served.verify_error:
                out["served"]["verify_error"] = self.served.verify_error
        if notes:
            out["problems"] = notes
        return out


def _minute(iso: str) -> str:
    return iso[:16].replace("T", " ")


def _short(name: str) -> str:
    return next((part[3:] for part in name.split(",") if part.startswith("CN=")), name)


def certificate_path(target: HostTarget, cert: CertificateSettings) -> str:
    return cert.path or f"{_config_dir(target.settings.certbot.options)}/live/{cert.name}/fullchain.pem"


def read_file_cert(ctx: Context, target: HostTarget, path: str) -> tuple[CertInfo | None, str | None]:
    text = read_optional(ctx.host(target), path)
    if text is None:
        return None, f"{path} does not exist on {target.name}"
    try:
        return load_leaf(text.encode()), None
    except ValueError as exc:
        return None, f"{path} is not a PEM certificate: {exc}"


def inspect(ctx: Context, target: HostTarget, names: Sequence[str] | None = None) -> list[CertStatus]:
    """File and served certificate for each configured certificate of the host (optionally only `names`)."""
    configured = target.settings.certificates
    if names:
        unknown = sorted(set(names) - {c.name for c in configured})
        if unknown:
            raise StepValueError(f"{target.name}: no certificate named {', '.join(unknown)} in the inventory",
                                 hint=f"configured: {', '.join(c.name for c in configured) or '(none)'}")
        configured = [c for c in configured if c.name in names]
    statuses = []
    for cert in configured:
        path = certificate_path(target, cert)
        status = CertStatus(cert.name, path, cert.endpoint or f"{target.address}:443", cert.sni or cert.name,
                            dt.datetime.now(dt.UTC))
        status.file, status.file_error = read_file_cert(ctx, target, path)
        status.served = fetch_served(status.endpoint, status.sni, cert.ca_file)
        statuses.append(status)
    return statuses


def hosts_with_certificates(ctx: Context, groups: Sequence[str] | None) -> list[HostTarget]:
    """Hosts with certificates configured; none is reported by the runner as skipped (UNKNOWN for certs.check)."""
    return [h for h in ctx.env.hosts(groups) if h.settings.certificates]


class _CertificateStep:
    groups: Sequence[str] | None

    def no_targets_reason(self) -> str:
        where = f"group(s) {', '.join(self.groups)}" if self.groups else "any group"
        return (f"no host in {where} has certificates configured (add e.g. certificates: [{{name: example.com}}] "
                "to the web group's vars)")


@dataclass
class CertState:
    host: HostTarget
    threshold: Threshold
    certificates: list[CertStatus]
    nginx_test: tuple[bool, str] | None = None  # certs.renew: `nginx -t` as it is now (for the preview)


class CertificateCheck(_CertificateStep, Step[CertState]):
    """Days left, issuer, SANs of each served certificate and whether it is the file on the host."""

    name = "certs.check"
    read_only = True

    def __init__(self, groups: Sequence[str] | None = None, names: Sequence[str] | None = None) -> None:
        self.groups = groups
        self.names = names

    def targets(self, ctx: Context) -> list[HostTarget]:
        return hosts_with_certificates(ctx, self.groups)

    def check(self, ctx: Context, target: HostTarget) -> CertState:
        return CertState(target, ctx.env.thresholds.cert_days_left, inspect(ctx, target, self.names))

    def plan(self, state: CertState) -> Plan:
        severity = Severity.worst([c.evaluate(state.threshold)[0] for c in state.certificates])
        return Plan.nothing(
            "; ".join(c.summary(state.threshold) for c in state.certificates), severity=severity,
            data={"certificates": [c.as_dict(state.threshold) for c in state.certificates],
                  "warning_days": state.threshold.warning, "critical_days": state.threshold.critical},
        )


class RenewCertificates(_CertificateStep, Step[CertState]):
    """Renew due certificates with certbot, then nginx -t and reload; verify the new one is served."""

    name = "certs.renew"
    idempotent = False  # a forced renewal is never "already done"; verify checks what is served instead

    def __init__(self, groups: Sequence[str] | None = None, *, force: bool = False,
                 names: Sequence[str] | None = None) -> None:
        self.groups = groups
        self.force = force
        self.names = names

    def targets(self, ctx: Context) -> list[HostTarget]:
        return hosts_with_certificates(ctx, self.groups)

    def check(self, ctx: Context, target: HostTarget) -> CertState:
        statuses = inspect(ctx, target, self.names)
        for status in statuses:
            if status.file is None:
                raise StepError(f"{target.name}: cannot renew {status.name}: {status.file_error}",
                                hint="issue it first (certbot certonly) or fix certificates[].path in the inventory")
        return CertState(target, ctx.env.thresholds.cert_days_left, statuses,
                         nginx_test(ctx.host(target), target.settings.nginx))

    def plan(self, state: CertState) -> Plan:
        window = state.host.settings.certbot.renew_before_days
        due, stale, fine = [], [], []
        for status in state.certificates:
            assert status.file is not None
            days = status.file.days_left(status.now)
            if self.force or days <= window:
                due.append((status, days))
            elif status.matches is False:
                stale.append(status)
            else:
                fine.append(f"{status.name} {days:.1f} days left")
        data: dict[str, Any] = {
            "force": self.force, "renew_before_days": window,
            "certificates": [c.as_dict(state.threshold) for c in state.certificates],
            "expect_served": {s.name: s.file.fingerprint for s in stale if s.file},
            "renew": [s.name for s, _ in due],
        }
        if not due and not stale:
            return Plan.nothing(f"no certificate due for renewal ({'; '.join(fine)}; certbot renews within "
                                f"{window:g} days); nginx not reloaded", data=data)
        changes = [
            Change(f"certbot renew {s.name} ({days:.1f} days left{', forced' if self.force else ''})",
                   before=s.file.not_after.isoformat() if s.file else None, after="renewed")
            for s, days in due
        ]
        changes += [Change(f"nginx serves an older certificate than {s.path}: reload to serve it",
                           before=s.served.info.fingerprint if s.served.info else None,
                           after=s.file.fingerprint if s.file else None) for s in stale]
        test = "nginx -t before certbot (refuse to renew if it fails) and after it; reload nginx only if it passes"
        if state.nginx_test is not None and not state.nginx_test[0]:
            first = next((line for line in state.nginx_test[1].splitlines() if "emerg" in line or "error" in line),
                         state.nginx_test[1].strip().splitlines()[-1] if state.nginx_test[1].strip() else "")
            test = f"nginx -t FAILS now, so the renewal will be refused until the config is fixed: {first}"
            data["nginx_test_passes"] = False
        changes.append(Change(test))
        return Plan(changes, data=data)

    def apply(self, ctx: Context, target: HostTarget, plan: Plan) -> Outcome:
        host = ctx.host(target)
        certbot = target.settings.certbot
        renewed: dict[str, Any] = {}
        expect_served: dict[str, str] = dict(plan.data["expect_served"])
        ok, output = nginx_test(host, target.settings.nginx)
        if not ok:  # before certbot: a renewal nginx cannot load is a renewal spent (rate limits) for nothing
            raise StepError(
                f"{target.name}: nginx -t fails BEFORE renewal; refusing to renew "
                f"{', '.join(plan.data['renew']) or '(reload only)'}: certbot was not run, nginx not reloaded "
                "(still serving the current certificate):\n" + output.strip(),
                hint=f"fix the nginx config first ({test_command(target.settings.nginx)}), then re-run certs.renew",
            )
        for name in plan.data["renew"]:
            path = certificate_path(target, next(c for c in target.settings.certificates if c.name == name))
            before, _ = read_file_cert(ctx, target, path)
            argv = [*certbot.command, "renew", "--cert-name", name, "--non-interactive", "--no-random-sleep-on-renew",
                    *(["--force-renewal"] if self.force else []), *certbot.options]
            result = host.change(argv, f"certbot renew {name}", ok=range(256), timeout=certbot.timeout)
            output = result.output
            if result.exit_code != 0:
                raise StepError(f"{target.name}: certbot renew {name} failed (exit {result.exit_code}); nginx not "
                                f"reloaded:\n" + "\n".join(output.splitlines()[-15:]),
                                hint="see certbot's log (--logs-dir, default /var/log/letsencrypt/letsencrypt.log)")
            after, error = read_file_cert(ctx, target, path)
            if after is None or before is None or after.fingerprint == before.fingerprint:
                why = ("certbot considers it not yet due (its renewal window is shorter than renew_before_days)"
                       if "not yet due" in output else error or "the certificate file did not change")
                raise StepError(f"{target.name}: certbot renew {name} exited 0 but did not renew: {why}",
                                hint="re-run with --force to renew anyway")
            renewed[name] = {"old_not_after": before.not_after.isoformat(),
                             "new_not_after": after.not_after.isoformat(),
                             "old_sha256": before.fingerprint, "sha256": after.fingerprint}
            expect_served[name] = after.fingerprint
        nginx_test_and_reload(host, target.settings.nginx, "serve renewed certificates")
        served = self._served_after_reload(ctx, target, plan, expect_served)
        reason = "now serving: " + "; ".join(
            f"{name} until {_minute(info['not_after'])} UTC"
            + (f" (was {_minute(info['previous_not_after'])})" if info["previous_not_after"] else "")
            for name, info in served.items())
        return Outcome(reason, {"renewed": renewed, "expect_served": expect_served, "served_after": served})

    def verify(self, ctx: Context, target: HostTarget, plan: Plan, outcome: Outcome) -> None:
        """apply waited for the served certificates; each must now be the renewed one."""
        for name, fingerprint in outcome.data["expect_served"].items():
            if outcome.data["served_after"].get(name, {}).get("sha256") != fingerprint:
                raise VerificationFailed(f"{target.name}: {name} is not the served certificate after the reload",
                                         hint="invoke certs.check")

    def _served_after_reload(self, ctx: Context, target: HostTarget, plan: Plan,
                             expect: dict[str, str]) -> dict[str, Any]:
        """Wait until every renewed certificate is the one served (a reload is asynchronous)."""
        certs = {c.name: c for c in target.settings.certificates}
        served: dict[str, Any] = {}
        previous = {c["name"]: c["served"]["not_after"] for c in plan.data["certificates"] if "served" in c}
        for name, fingerprint in expect.items():
            cert = certs[name]
            endpoint, sni = cert.endpoint or f"{target.address}:443", cert.sni or cert.name
            seen: list[Served] = []

            def probe(endpoint: str = endpoint, sni: str = sni, ca_file: str | None = cert.ca_file,
                      seen: list[Served] = seen) -> Served:
                seen.append(fetch_served(endpoint, sni, ca_file))
                return seen[-1]

            def stable(_: Served, seen: list[Served] = seen, fingerprint: str = fingerprint) -> bool:
                # old workers keep serving for a moment after a reload: want the same answer several times
                last = seen[-STABLE_HANDSHAKES:]
                return len(last) == STABLE_HANDSHAKES and all(
                    s.info is not None and s.info.fingerprint == fingerprint for s in last)

            try:
                now = wait_until(ctx, f"{endpoint} (SNI {sni}) serves the renewed {name}", probe, stable,
                                 timeout=SERVED_WAIT_S, every=0.1, describe=_describe_served)
            except WaitTimeout:
                now = seen[-1]
                raise VerificationFailed(
                    f"{target.name}: nginx reloaded but {endpoint} (SNI {sni}) still serves "
                    + (f"certificate {now.info.fingerprint[:16]}... until {now.info.not_after:%Y-%m-%d %H:%M} UTC"
                       if now.info else f"nothing readable ({now.error})")
                    + f", not the new {fingerprint[:16]}... after {SERVED_WAIT_S:.0f}s",
                    hint="check that nginx's ssl_certificate points at the certbot live/ path: invoke certs.check",
                ) from None
            assert now.info is not None
            served[name] = {"not_after": now.info.not_after.isoformat(), "sha256": now.info.fingerprint,
                            "verified": now.verified, "previous_not_after": previous.get(name)}
            if previous.get(name):
                served[name]["expiry_moved"] = now.info.not_after > dt.datetime.fromisoformat(previous[name])
        return served


def _describe_served(served: Served) -> str:
    if served.info is None:
        return served.error or "no certificate"
    return f"certificate {served.info.fingerprint[:16]}... until {served.info.not_after:%Y-%m-%d %H:%M} UTC"
