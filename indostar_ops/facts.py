"""Facts read from a host, one helper per fact, shared by every step that needs it.

* `read_optional(host, path)`: a file's text, or None when it does not exist (one round trip);
* `filesystems(host, paths)`: `df` for the filesystems holding `paths`;
* `WRITE_GUARD` / `written_path_error`: the rule for a path a step writes, checked on the host in the
  same round trip as the write: its directory must resolve (`realpath -m`) to itself, so a symlinked
  directory can never redirect a write somewhere the inventory does not name (both paths are named).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import CommandError, StepError

if TYPE_CHECKING:
    from .context import HostSession

__all__ = ["WRITE_GUARD", "WRITE_GUARD_EXIT", "Filesystem", "filesystems", "parse_df", "read_optional",
           "written_path_error"]

_NO_SUCH = "No such file or directory"

# A shell function for write scripts: `guard PATH` exits 68, "<dir>\t<resolved>" on stderr, if PATH's
# directory is (or is under) a symlink. realpath -m resolves the components that exist.
WRITE_GUARD_EXIT = 68
WRITE_GUARD = (
    'guard() { d=$(dirname -- "$1"); r=$(realpath -m -- "$d") || exit 68; '
    'if [ "$r" != "$d" ]; then printf \'%s\\t%s\\n\' "$d" "$r" >&2; exit 68; fi; }\n'
)


def written_path_error(host: str, what: str, path: str, stderr: str) -> StepError:
    """The refusal for a write whose directory resolved elsewhere on the host (WRITE_GUARD's exit)."""
    line = (stderr.strip().splitlines() or ["?"])[-1]
    directory, _, resolved = line.partition("\t")
    directory = directory if resolved else posixpath.dirname(path)
    return StepError(
        f"{host}: {what} {path!r}: the directory {directory!r} resolves to {resolved or '?'!r} on the host "
        "(a symlink); refusing to write through it, nothing was changed",
        hint=f"configure the real location ({resolved or '?'}) in the inventory, or remove the symlink",
    )


def read_optional(host: HostSession, path: str) -> str | None:
    """The text of `path` on the host, or None if it does not exist; unreadable is a CommandError.

    A plain `cat` (no remote shell) keeps the common case at one cheap round trip; only a failure
    that is not plainly "No such file or directory" costs a second one (`test -e`) to tell them apart.
    """
    result = host.read(["cat", "--", path], ok=(0, 1))
    if result.exit_code == 0:
        return result.stdout
    if _NO_SUCH not in result.stderr and host.read(["test", "-e", path], ok=(0, 1)).exit_code == 0:
        raise CommandError(host.target.name, f"cat -- {path}", 1, result.output)
    return None


@dataclass(frozen=True)
class Filesystem:
    path: str
    size_kb: int
    used_kb: int
    avail_kb: int
    used_pct: int
    mount: str


def parse_df(output: str, paths: list[str]) -> list[Filesystem]:
    """Parse `df -k --output=size,used,avail,pcent,target` (one line per path, header first)."""
    rows = []
    for path, line in zip(paths, output.strip().splitlines()[1:], strict=False):
        size, used, avail, pcent, mount = line.split(maxsplit=4)
        rows.append(Filesystem(path, int(size), int(used), int(avail), int(pcent.rstrip("%") or 0), mount))
    return rows


def filesystems(host: HostSession, paths: list[str]) -> list[Filesystem]:
    """`df` for the filesystems holding `paths` (in that order)."""
    df = host.read(["df", "-k", "--output=size,used,avail,pcent,target", "--", *paths])
    return parse_df(df.stdout, paths)
