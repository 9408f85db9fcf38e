"""Grow an EBS volume and the filesystem on it (runbook "Out of Disk Space": `aws ec2 modify-volume`).

Two steps. `volume.modify` (the AWS half): refuses to shrink (EBS cannot), is a no-op
at the size, refuses while a modification is running or within EBS's 6-hour cooldown,
optionally snapshots first (default on production tiers), calls ModifyVolume and waits
for `optimizing`/`completed` (the filesystem can grow from `optimizing` on). In check
mode it sends the ModifyVolume request with DryRun=True (AWS checks the permission
and the request, changes nothing). `volume.grow-fs` (the host half): on the host that
mounts it, `growpart` if the filesystem sits on a partition, then `resize2fs` (ext2/3/4)
or `xfs_growfs` (xfs) by the detected type, and verifies with `df` that the size grew.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ...errors import StepError, StepValueError, UsageError, VerificationFailed
from ...poll import wait_until
from ...step import Change, EnvTarget, Outcome, Plan, Step
from . import AwsStep, our_tags
from .errors import dry_run_ok

if TYPE_CHECKING:
    from ...context import Context, HostSession
    from ...inventory import HostTarget, VolumeSettings

__all__ = ["GrowFilesystem", "VolumeModify", "resolve_volume"]

_VOL = re.compile(r"^vol-[0-9a-f]{8,17}$")
_MOUNT = re.compile(r"^/[A-Za-z0-9._/@+-]*$")
COOLDOWN = timedelta(hours=6)
POLL_EVERY: float | None = None  # seconds between polls (None: 10 s, 0.5 s for short waits); tests shorten it
SLACK = 4 * 2**20  # filesystem within 4 MiB of its device: nothing to grow
_IRREVERSIBLE = ("EBS volumes cannot shrink: the way back is a new, smaller volume restored from a snapshot "
                 "(volume.resize takes one first on production tiers)")


def resolve_volume(ctx: Context, volume: str | None, host: str | None, mount: str | None) -> VolumeSettings | None:
    """The inventory's entry for --volume or --host/--mount (None: a volume id the inventory does not list)."""
    listed = ctx.env.aws.volumes if ctx.env.aws else []
    if volume:
        if not _VOL.match(volume):
            raise UsageError(f"volume.resize: {volume!r} is not an EBS volume id (vol- and 8 or 17 hex digits)")
        return next((v for v in listed if v.id == volume), None)
    if not (host and mount):
        raise UsageError("volume.resize: give --volume vol-... or --host and --mount",
                         hint=f"volumes in the inventory: {_listing(listed)}")
    found = next((v for v in listed if v.host == host and v.mount.rstrip("/") == mount.rstrip("/")), None)
    if found is None:
        raise UsageError(f"volume.resize: no volume for host {host!r} mount {mount!r} in "
                         f"inventory/{ctx.env.name}.yaml (aws.volumes)", hint=f"known: {_listing(listed)}")
    return found


def _listing(listed: list[VolumeSettings]) -> str:
    return ", ".join(f"{v.host}:{v.mount}" for v in listed) or "none"


@dataclass(frozen=True)
class VolumeState:
    volume_id: str
    size: int
    state: str
    want: int
    modification: dict[str, Any] | None
    snapshot: bool
    now: datetime
    dry_run: str | None


class VolumeModify(AwsStep[VolumeState]):
    """Grow an EBS volume (ModifyVolume), snapshot first on production tiers, wait for `optimizing`."""

    name = "volume.modify"
    irreversible = _IRREVERSIBLE
    idempotent = True
    aws_calls = ("ec2:DescribeVolumes", "ec2:DescribeVolumesModifications", "ec2:ModifyVolume",
                 "ec2:CreateSnapshot", "ec2:CreateTags")

    def __init__(self, size: int, volume: str | None = None, host: str | None = None, mount: str | None = None,
                 snapshot: bool | None = None, timeout: float | None = None) -> None:
        self.size = size
        self.volume = volume
        self.host = host
        self.mount = mount
        self.snapshot = snapshot
        self.timeout = timeout

    def preflight(self, ctx: Context) -> None:
        super().preflight(ctx)
        if not 1 <= self.size <= 65536:
            raise UsageError(f"volume.resize: --size {self.size} GiB is outside EBS's 1-65536 GiB")
        resolve_volume(ctx, self.volume, self.host, self.mount)

    def targets(self, ctx: Context) -> list[EnvTarget]:
        entry = resolve_volume(ctx, self.volume, self.host, self.mount)
        if self.volume:
            name = self.volume + (f" ({entry.host}:{entry.mount})" if entry else "")
            return [EnvTarget(name, kind="volume", id=self.volume)]
        assert entry is not None
        return [EnvTarget(f"{entry.id or entry.name} ({entry.host}:{entry.mount})", kind="volume",
                          id=entry.id or f"tag:Name={entry.name}")]

    def _describe(self, ctx: Context, target: EnvTarget) -> dict[str, Any]:
        ec2 = ctx.aws().client("ec2")
        assert target.id is not None
        if target.id.startswith("tag:Name="):
            name = target.id.split("=", 1)[1]
            found = ec2.describe_volumes(Filters=[{"Name": "tag:Name", "Values": [name]}])["Volumes"]
            if len(found) != 1:
                raise StepError(f"EBS volume tagged Name={name}: {len(found)} found, need exactly one",
                                hint=f"put its vol- id in aws.volumes of inventory/{ctx.env.name}.yaml")
            return dict(found[0])
        return dict(ec2.describe_volumes(VolumeIds=[target.id])["Volumes"][0])

    def check(self, ctx: Context, target: EnvTarget) -> VolumeState:
        vol = self._describe(ctx, target)
        vid = vol["VolumeId"]
        mods = ctx.aws().client("ec2").describe_volumes_modifications(VolumeIds=[vid]).get("VolumesModifications", [])
        mods.sort(key=lambda m: m.get("StartTime") or datetime.min.replace(tzinfo=UTC))
        snapshot = self.snapshot if self.snapshot is not None else (
            ctx.env.aws.snapshot_before_resize if ctx.env.aws and ctx.env.aws.snapshot_before_resize is not None
            else ctx.env.is_production)
        dry_run = None
        if ctx.check and self.size > vol["Size"]:
            dry_run = self._dry_run(ctx, vid)
        return VolumeState(vid, int(vol["Size"]), vol.get("State", "?"), self.size, mods[-1] if mods else None,
                           bool(snapshot), datetime.now(UTC), dry_run)

    def _dry_run(self, ctx: Context, vid: str) -> str:
        """Check mode: AWS validates the request and our permission, and changes nothing."""
        try:
            ctx.aws().call("ec2", "modify_volume", summary=f"dry run: grow {vid}", VolumeId=vid, Size=self.size,
                           DryRun=True)
        except Exception as exc:
            if dry_run_ok(exc):
                return "ModifyVolume dry run: allowed"
            raise
        return "ModifyVolume dry run: accepted"

    def plan(self, state: VolumeState) -> Plan:
        data: dict[str, Any] = {"volume": state.volume_id, "size_gib": state.size, "want_gib": state.want}
        if state.dry_run:
            data["dry_run"] = state.dry_run
        if state.want < state.size:
            raise StepValueError(f"EBS {state.volume_id}: is {state.size} GiB; {state.want} GiB would shrink it "
                                 "and EBS volumes cannot shrink; nothing was changed",
                                 hint=f"give --size above {state.size}, or migrate to a new smaller volume by hand")
        mod = state.modification
        if state.want == state.size:
            return Plan.nothing(f"{state.volume_id} is already {state.size} GiB", data=data)
        if mod is not None:
            mod_state = mod.get("ModificationState")
            started = mod.get("StartTime")
            if mod_state in ("modifying", "optimizing"):
                raise StepError(f"EBS {state.volume_id}: a modification is still {mod_state} "
                                f"({mod.get('OriginalSize')} -> {mod.get('TargetSize')} GiB, "
                                f"{mod.get('Progress', 0)}%)",
                                hint="EBS allows one modification at a time and one per 6 hours: re-run after it "
                                "completes and the cooldown has passed")
            if isinstance(started, datetime) and state.now - started < COOLDOWN and mod_state != "failed":
                ready = started + COOLDOWN
                raise StepError(f"EBS {state.volume_id}: modified at {started:%Y-%m-%d %H:%M} UTC; EBS allows the "
                                f"next modification from {ready:%H:%M} UTC",
                                hint=f"re-run after {ready:%Y-%m-%d %H:%M} UTC; until then free space "
                                "(invoke logs.cleanup, docker.prune)")
        changes = []
        if state.snapshot:
            changes.append(Change(f"snapshot {state.volume_id} first (EBS cannot shrink back)", before=None,
                                  after="snapshot", params={"kind": "snapshot", "id": state.volume_id}))
        changes.append(Change(f"grow EBS {state.volume_id} from {state.size} to {state.want} GiB",
                              before=state.size, after=state.want,
                              params={"kind": "modify", "id": state.volume_id, "size": state.want}))
        return Plan(changes, data=data)

    def apply(self, ctx: Context, target: EnvTarget, plan: Plan) -> Outcome:
        data: dict[str, Any] = {}
        for change in plan.changes:
            vid = change.params["id"]
            if change.params["kind"] == "snapshot":
                snap = ctx.aws().call(
                    "ec2", "create_snapshot", summary=change.summary, VolumeId=vid,
                    Description=f"indostar-ops volume.resize of {vid} ({ctx.env.name})",
                    TagSpecifications=[{"ResourceType": "snapshot", "Tags": our_tags(ctx.env.name)}])
                data["snapshot"] = snap["SnapshotId"]  # point in time is now; no need to wait for completion
                continue
            ctx.aws().call("ec2", "modify_volume", summary=change.summary, VolumeId=vid, Size=change.params["size"])
            assert ctx.env.aws is not None
            mod = wait_modification(ctx, vid, self.timeout or ctx.env.aws.volume_wait_s)
            data["modification"] = mod.get("ModificationState")
        unlisted = self.volume is not None and resolve_volume(ctx, self.volume, None, None) is None
        return Outcome(reason=f"{plan.data['volume']} now {plan.data['want_gib']} GiB ({data.get('modification')})"
                       + (f", snapshot {data['snapshot']}" if "snapshot" in data else "")
                       + ("; not in aws.volumes, so grow the filesystem on its host yourself (growpart, "
                          "resize2fs/xfs_growfs) or list it there and re-run" if unlisted else ""), data=data)

    def verify(self, ctx: Context, target: EnvTarget, plan: Plan, outcome: Outcome) -> None:
        vol = self._describe(ctx, target)
        if int(vol["Size"]) < plan.data["want_gib"]:
            raise VerificationFailed(f"EBS {vol['VolumeId']}: still {vol['Size']} GiB after the modification",
                                     hint="look at the volume's modification state in the EC2 console")


def wait_modification(ctx: Context, vid: str, timeout: float) -> dict[str, Any]:
    """Wait for `optimizing` or `completed` (boto3 has no waiter for this; same poller as every other wait)."""

    def probe() -> dict[str, Any]:
        mods = ctx.aws().client("ec2").describe_volumes_modifications(VolumeIds=[vid]).get("VolumesModifications")
        if not mods:
            raise StepError(f"EBS {vid}: no modification found after ModifyVolume",
                            hint="look at the volume in the EC2 console")
        mod = dict(max(mods, key=lambda m: m.get("StartTime") or datetime.min.replace(tzinfo=UTC)))
        if mod.get("ModificationState") == "failed":
            raise StepError(f"EBS {vid}: modification failed: {mod.get('StatusMessage', 'no reason given')}",
                            hint="look at the volume in the EC2 console; the size is unchanged")
        return mod

    return wait_until(ctx, f"EBS {vid} modification optimizing", probe,
                      lambda m: m.get("ModificationState") in ("optimizing", "completed"),
                      timeout=timeout, every=POLL_EVERY or (10 if timeout > 60 else 0.5),
                      describe=lambda m: f"{m.get('ModificationState')} {m.get('Progress', 0)}%",
                      hint=f"the modification continues in AWS; re-run volume.resize later to grow the "
                      f"filesystem (it will see {vid} already at the size)")


# ---------------------------------------------------------------- host half


@dataclass(frozen=True)
class FsState:
    host: str
    mount: str
    device: str | None
    fstype: str | None
    device_bytes: int
    fs_bytes: int
    df_bytes: int
    partition: tuple[str, int] | None  # (disk, number) when the filesystem is on a partition
    partition_grows: bool
    simulated: bool = False


def _read(host: HostSession, argv: list[str], ok: tuple[int, ...] = (0,)) -> str:
    return host.read(argv, ok=ok).stdout.strip()


def fs_state(ctx: Context, target: HostTarget, mount: str) -> FsState:
    host = ctx.host(target)
    found = _read(host, ["findmnt", "-nro", "SOURCE,FSTYPE", "--mountpoint", mount], ok=(0, 1))
    if not found:
        raise StepError(f"{target.name}: {mount} is not a mount point",
                        hint=f"check aws.volumes in inventory/{ctx.env.name}.yaml (findmnt {mount})")
    device, fstype = found.splitlines()[0].split()[:2]
    if fstype not in ("ext2", "ext3", "ext4", "xfs"):
        raise StepError(f"{target.name}: {mount} is {fstype}; volume.resize grows ext2/3/4 and xfs only",
                        hint="grow this filesystem by hand")
    device_bytes = int(_read(host, ["blockdev", "--getsize64", device]))
    kind_parent = _read(host, ["lsblk", "-ndo", "TYPE,PKNAME", device]).split()
    partition = None
    partition_grows = False
    if kind_parent and kind_parent[0] == "part" and len(kind_parent) > 1:
        number = int(_read(host, ["cat", f"/sys/class/block/{posixpath.basename(device)}/partition"]))
        disk = f"/dev/{kind_parent[1]}"
        partition = (disk, number)
        dry = host.read(["growpart", "--dry-run", disk, str(number)], ok=(0, 1))
        partition_grows = dry.exit_code == 0 and "CHANGE" in dry.output
    if fstype == "xfs":
        info = _read(host, ["xfs_info", mount])
        match = re.search(r"^data\s*=\s*bsize=(\d+)\s+blocks=(\d+)", info, re.M)
        fs_bytes = int(match.group(1)) * int(match.group(2)) if match else 0
    else:
        info = _read(host, ["dumpe2fs", "-h", device])
        count = re.search(r"^Block count:\s*(\d+)", info, re.M)
        size = re.search(r"^Block size:\s*(\d+)", info, re.M)
        fs_bytes = int(count.group(1)) * int(size.group(1)) if count and size else 0
    df = _read(host, ["df", "-B1", "--output=size", mount]).splitlines()[-1].strip()
    return FsState(target.name, mount, device, fstype, device_bytes, fs_bytes, int(df), partition, partition_grows)


class GrowFilesystem(Step[FsState]):
    """Grow the partition (growpart) and filesystem (resize2fs / xfs_growfs) to the volume's new size."""

    name = "volume.grow-fs"
    irreversible = _IRREVERSIBLE

    def __init__(self, host: str, mount: str, min_bytes: int | None = None, wait_s: float = 120) -> None:
        self.host = host
        self.mount = mount
        self.min_bytes = min_bytes  # the new volume size: wait (not in check mode) until the host's kernel sees it
        self.wait_s = wait_s

    def preflight(self, ctx: Context) -> None:
        if not _MOUNT.match(self.mount) or "/../" in self.mount + "/":
            raise UsageError(f"volume.grow-fs: mount {self.mount!r} must be an absolute path")
        super().preflight(ctx)

    def targets(self, ctx: Context) -> list[HostTarget]:
        hosts = [h for h in ctx.env.hosts() if h.name == self.host]
        if not hosts:
            raise UsageError(f"volume.grow-fs: no host {self.host!r} in environment {ctx.env.name!r}")
        return hosts

    def check(self, ctx: Context, target: HostTarget) -> FsState:
        if ctx.env.tier == "sandbox" and target.connection == "local":
            return FsState(target.name, self.mount, None, None, 0, 0, 0, None, False, simulated=True)
        state = fs_state(ctx, target, self.mount)
        if ctx.check or not self.min_bytes or state.device_bytes >= self.min_bytes:
            return state
        want = self.min_bytes
        return wait_until(  # NVMe/Xen notice a ModifyVolume within seconds; the same poller as every wait
            ctx, f"{target.name}: {state.device} at {_gib(want)}", lambda: fs_state(ctx, target, self.mount),
            lambda st: st.device_bytes >= want, timeout=self.wait_s, every=POLL_EVERY or 2,
            describe=lambda st: f"{st.device} is {_gib(st.device_bytes)}",
            hint=f"the kernel does not see the new size yet: rescan the device (echo 1 > /sys/class/block/"
                 f"<disk>/device/rescan) or check the volume is attached to {target.name}, then re-run")

    def plan(self, state: FsState) -> Plan:
        if state.simulated:
            return Plan.nothing(f"sandbox host: {state.mount} is simulated, the filesystem of this machine is "
                                "never resized")
        data = {"device": state.device, "fstype": state.fstype, "device_bytes": state.device_bytes,
                "fs_bytes": state.fs_bytes, "df_bytes": state.df_bytes}
        changes = []
        if state.partition_grows and state.partition:
            disk, number = state.partition
            changes.append(Change(f"growpart {disk} {number}", before=None, after=None,
                                  params={"argv": ["growpart", disk, str(number)]}))
        if changes or state.device_bytes - state.fs_bytes > SLACK:
            argv = ["xfs_growfs", state.mount] if state.fstype == "xfs" else ["resize2fs", str(state.device)]
            changes.append(Change(f"{' '.join(argv)} ({state.fstype} {_gib(state.fs_bytes)} -> "
                                  f"{_gib(state.device_bytes)} device)", before=state.fs_bytes,
                                  after=state.device_bytes, params={"argv": argv}))
        if not changes:
            return Plan.nothing(f"{state.mount} ({state.fstype} on {state.device}) already fills its device "
                                f"({_gib(state.fs_bytes)})", data=data)
        return Plan(changes, data=data)

    def apply(self, ctx: Context, target: HostTarget, plan: Plan) -> Outcome:
        host = ctx.host(target)
        for change in plan.changes:
            host.change(list(change.params["argv"]), change.summary)
        after = fs_state(ctx, target, self.mount)
        return Outcome(reason=f"{self.mount}: df size {_gib(plan.data['df_bytes'])} -> {_gib(after.df_bytes)}",
                       data={"df_bytes_before": plan.data["df_bytes"], "df_bytes": after.df_bytes})

    def verify(self, ctx: Context, target: HostTarget, plan: Plan, outcome: Outcome) -> None:
        super().verify(ctx, target, plan, outcome)
        if outcome.data["df_bytes"] <= outcome.data["df_bytes_before"]:
            raise VerificationFailed(f"{target.name}: df still shows {_gib(outcome.data['df_bytes'])} for "
                                     f"{self.mount} after growing", hint=f"look at df -h {self.mount} and dmesg")


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


