"""Runbook "Out of Disk Space": Docker disk use and a prune that removes only what was asked for."""

from __future__ import annotations

from invoke import task

from ._help import common

_GROUPS = "comma-separated host groups (default: all)"


def _groups(value: str) -> list[str] | None:
    return [g for g in value.split(",") if g] or None


@task(help=common(changes=False, groups=_GROUPS))
def df(c, env=None, check=False, json=False, groups=""):
    """`docker system df` on every host: size and reclaimable space per type."""
    from ..cli import run_steps
    from ..steps.docker import DockerDiskUsage

    run_steps("docker.df", env=env, check=check, json=json, build=lambda _env: [DockerDiskUsage(_groups(groups))])


@task(help=common(
    classes="comma-separated: containers,images,build-cache (default) and/or volumes",
    volumes="also prune unused volumes (data!); production tiers also need --yes",
    all_images="prune all unused images, not only dangling ones",
    until="only objects older than this Go duration, e.g. 24h (not volumes)",
    if_over_warning="prune only where the Docker filesystem is over the disk warning threshold",
    groups=_GROUPS,
))
def prune(c, env=None, check=False, json=False, yes=False, classes="", volumes=False, all_images=False, until="",
          if_over_warning=False, groups=""):
    """Prune stopped containers, dangling images and build cache (volumes only with --volumes); report reclaimed."""
    from ..cli import run_steps
    from ..errors import ConfirmationRequired
    from ..steps.docker import DEFAULT_CLASSES, DockerPrune

    chosen = [k for k in classes.split(",") if k] or list(DEFAULT_CLASSES)
    if volumes and "volumes" not in chosen:
        chosen.append("volumes")

    def build(environment):
        if "volumes" in chosen and environment.is_production and not yes and not check:
            raise ConfirmationRequired(
                f"pruning volumes deletes data; on production-tier {environment.name!r} it needs --yes too",
                hint=f"preview with --check, then: invoke docker.prune --env {environment.name} --volumes --yes",
            )
        return [DockerPrune(chosen, all_images=all_images, until=until or None, only_over_warning=if_over_warning,
                            groups=_groups(groups))]

    run_steps("docker.prune", env=env, check=check, json=json, yes=yes, build=build)
