"""The embedded sandbox's own services (moto, nginx): stop them, or wipe the sandbox."""

from __future__ import annotations

from invoke import task


@task(help={"wipe": "also delete the sandbox directory (.sandbox or $INDOSTAR_SANDBOX_ROOT)"})
def stop(c, wipe=False):
    """Stop the sandbox's moto server and nginx (started on demand by tasks); optionally wipe its state."""
    from ..sandbox import stop as stop_services

    for line in stop_services(wipe=wipe):
        print(line)
