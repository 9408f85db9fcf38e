"""Reaching hosts: `ssh.check` says, per host, which hop fails and why (before a window, or any time)."""

from __future__ import annotations

from invoke import task

from ._help import common


@task(help=common(changes=False, groups="comma-separated host groups (default: all)",
                  max_skew="clock skew in seconds above which a host is WARNING (default 5)"))
def check(c, env=None, check=False, json=False, groups="", max_skew=5.0):
    """Reach every host hop by hop: DNS, TCP, SSH banner, host key, auth, then `sudo -n true` (become)
    and clock skew. Jump hosts come from ssh.jump (environment, group or host) or, opt-in,
    ssh.config_file, which honours Host/HostName/User/Port/IdentityFile/ProxyJump/UserKnownHostsFile
    only (every other key is ignored; the inventory's explicit values win).
    Exit 0/1/2/3 = OK/WARNING (clock skew)/CRITICAL (a hop fails, sudo wants a password)/UNKNOWN."""
    from ..cli import run_steps
    from ..steps.ssh_check import SSHCheck

    run_steps("ssh.check", env=env, check=check, json=json, monitoring=True,
              build=lambda _env: [SSHCheck(groups=[g for g in groups.split(",") if g] or None,
                                           max_skew_s=float(max_skew), strict=False)])
