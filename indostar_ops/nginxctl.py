"""nginx on a host: `nginx -t` and a reload that only ever follows a passing test.

Shared by certs.renew and maintenance.* (no step imports helpers from another step).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import StepError

if TYPE_CHECKING:
    from .context import HostSession
    from .inventory import NginxSettings

__all__ = ["nginx_reload", "nginx_test", "nginx_test_and_reload", "test_command"]


def test_command(settings: NginxSettings) -> str:
    return " ".join([*settings.command, "-t"])


def nginx_test(host: HostSession, settings: NginxSettings) -> tuple[bool, str]:
    """`nginx -t`: (passed, its output). Reads only."""
    result = host.read([*settings.command, "-t"], ok=range(256))
    return result.exit_code == 0, result.output


def nginx_reload(host: HostSession, settings: NginxSettings, why: str) -> None:
    host.change(settings.reload_command or [*settings.command, "-s", "reload"], f"reload nginx ({why})")


def nginx_test_and_reload(host: HostSession, settings: NginxSettings, why: str) -> None:
    """Reload nginx only if `nginx -t` passes; otherwise fail with nginx's own error and reload nothing."""
    ok, output = nginx_test(host, settings)
    if not ok:
        raise StepError(
            f"{host.target.name}: nginx -t failed, nginx NOT reloaded (still running the previous config):\n"
            + output.strip(),
            hint=f"fix the config, check with: {test_command(settings)}",
        )
    nginx_reload(host, settings, why)
