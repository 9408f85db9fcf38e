"""Runbook "Out of Disk Space" (long-term): grow an EBS volume and the filesystem on it."""

from __future__ import annotations

from invoke import task

from ._help import common


@task(help=common(volume="EBS volume id (vol-...)", size="new size in GiB (EBS cannot shrink)",
                  host="host that mounts it (with --mount; from the inventory's aws.volumes)",
                  mount="mount point on that host", snapshot="snapshot the volume first (default on production tiers)",
                  no_snapshot="do not snapshot first, even on a production tier",
                  timeout="seconds to wait for the modification to reach optimizing"))
def resize(c, env=None, check=False, json=False, yes=False, volume="", size="", host="", mount="",
           snapshot=False, no_snapshot=False, timeout=""):
    """Grow an EBS volume (refuses to shrink), wait for `optimizing`, then growpart + resize2fs/xfs_growfs, df.

    Irreversible: EBS volumes cannot shrink. A volume already at the size is a no-op; EBS allows one
    modification per volume per 6 hours, which is reported before anything is sent.
    """
    from ..cli import run_steps
    from ..errors import UsageError
    from ._help import float_flag as _float
    from ._help import int_flag as _int

    def build(environment):
        from ..steps.aws.volume import GrowFilesystem, VolumeModify, resolve_volume

        gib = _int(size, "--size")
        if gib is None:
            raise UsageError("volume.resize: --size GiB is required", hint="e.g. --size 100")
        entry = resolve_volume(_Peek(environment), volume or None,
                               host or None, mount or None)
        if snapshot and no_snapshot:
            raise UsageError("volume.resize: --snapshot and --no-snapshot contradict each other")
        steps = [VolumeModify(gib, volume=volume or None, host=host or None, mount=mount or None,
                              snapshot=True if snapshot else (False if no_snapshot else None),
                              timeout=_float(timeout, "--timeout"))]
        if entry is not None:
            steps.append(GrowFilesystem(entry.host, entry.mount, min_bytes=gib * 2**30))
        return steps

    run_steps("volume.resize", env=env, check=check, json=json, yes=yes, build=build)


class _Peek:
    """The environment alone, for resolving the inventory entry before a Context exists."""

    def __init__(self, environment):
        self.env = environment
