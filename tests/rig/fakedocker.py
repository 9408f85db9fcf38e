"""A fake ``docker`` CLI that records its calls and prints realistic canned output.

Why: this machine has the docker CLI (28.2.2) but no engine, and the library's
disk-cleanup runbooks only shell out to ``docker system df`` / ``docker ... prune``.
Put ``bindir`` first on the PATH of the (remote) command, e.g. with fabric 3::

    conn.run("docker system df", env={"PATH": f"{bindir}:/usr/sbin:/usr/bin:/sbin:/bin"})

(fabric's ``inline_ssh_env`` turns ``env=`` into an inline ``export``; no AcceptEnv needed).

Call log format (one line per invocation, appended atomically)::

    <server-address> TAB docker TAB <arg1> TAB <arg2> ...

``<server-address>`` is the 3rd word of ``$SSH_CONNECTION`` (e.g. ``127.0.2.3``; all rig
"hosts" share this machine and therefore this log) or ``-`` when not run over SSH.
Inside fields ``\\`` -> ``\\\\``, TAB -> ``\\t``, newline -> ``\\n``.
Use ``read_docker_calls()`` / ``read_docker_calls_by_host()`` rather than parsing it.

Supported commands (output copied from the real CLI 28 format; sizes are canned and do
not change after a prune):

* ``docker system df`` (table: TYPE/TOTAL/ACTIVE/SIZE/RECLAIMABLE),
  ``--format json`` / ``--format '{{json .}}'`` (one JSON object per line, keys
  Active, Reclaimable, Size, TotalCount, Type - all string values, sorted as the CLI
  does), and simple ``--format '{{.Type}}\\t{{.Reclaimable}}'`` templates.
* ``docker image|container|volume|builder|system prune`` - ``-f``/``--force`` skips
  the prompt; without it the fake prompts like the CLI, reads stdin and cancels
  (exit 1) unless the answer is ``y``. ``--filter``, ``-a`` etc. are accepted
  and only logged.
* ``docker --version``, ``docker version``.
* anything else: message on stderr, exit 1 (so unexpected calls are noticed).

Daemon down: if the file ``<bindir>/docker.down`` exists (``set_daemon_down()``) or
``FAKE_DOCKER_DOWN=1`` is set, every command except ``--version`` prints the real
"Cannot connect to the Docker daemon ..." error and exits 1 (the call is still logged).
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

# Canned `docker system df` rows: Type, TotalCount, Active, Size, Reclaimable.
DEFAULT_DF_ROWS: list[tuple[str, str, str, str, str]] = [
    ("Images", "12", "4", "5.369GB", "3.12GB (58%)"),
    ("Containers", "6", "4", "48.2MB", "1.02MB (2%)"),
    ("Local Volumes", "5", "3", "1.9GB", "409.6MB (21%)"),
    ("Build Cache", "87", "0", "1.2GB", "1.2GB"),
]
DF_HEADER = ("TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE")

# "Total reclaimed space" per prune command (go-units HumanSize format).
RECLAIMED = {
    "image": "3.12GB",
    "container": "1.02MB",
    "volume": "409.6MB",
    "builder": "1.2GB",
    "system": "4.321GB",
}

_PRUNE_OUTPUT = {
    "image": (
        "Deleted Images:\n"
        "untagged: registry.example.test/app:2024-05-01\n"
        "untagged: registry.example.test/app@sha256:5b0bcabd1ed22e9fb1310cf6c2dec7cdef19f0ad69efa1f392e94a4333501270\n"
        "deleted: sha256:2f9b1a6b1f6e0e3c8a7e7b6d5c4b3a29181716151413121110f0e0d0c0b0a091\n"
        "deleted: sha256:9c3a0b1d2e3f405162738495a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f\n"
        "\n"
    ),
    "container": (
        "Deleted Containers:\n"
        "4a7f7eebae0f63178aff7eb0aa39cd3f0627a203ab2df258c1a00b456cf20063\n"
        "f98f9c2aa1eaf727e4ec9c0283bc7d4aa4762fbdba7f26191f26c97f64090360\n"
        "\n"
    ),
    "volume": (
        "Deleted Volumes:\n"
        "07b0b5a5b4e3fa0bcf3ce2c1e2b6a8e8d1e5c35d3a8c7e3f0e2a9e6b1c4d7f20\n"
        "\n"
    ),
    "builder": (
        "Deleted build cache objects:\n"
        "x8y1fz2kq7v3l0m9n4b5c6d7e\n"
        "p0o9i8u7y6t5r4e3w2q1a2s3d\n"
        "\n"
    ),
}
_PRUNE_OUTPUT["system"] = (
    _PRUNE_OUTPUT["container"]
    + "Deleted Networks:\nci_default\n\n"
    + _PRUNE_OUTPUT["image"]
    + _PRUNE_OUTPUT["builder"]
)

_PROMPTS = {
    "image": "WARNING! This will remove all dangling images.",
    "container": "WARNING! This will remove all stopped containers.",
    "volume": "WARNING! This will remove anonymous local volumes not used by at least one container.",
    "builder": "WARNING! This will remove all dangling build cache.",
    "system": (
        "WARNING! This will remove:\n"
        "  - all stopped containers\n"
        "  - all networks not used by at least one container\n"
        "  - all dangling images\n"
        "  - unused build cache\n"
    ),
}

DAEMON_DOWN_MSG = (
    "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
    "Is the docker daemon running?"
)


def render_df_table(rows: list[tuple[str, str, str, str, str]]) -> str:
    """Format rows like the CLI's tabwriter (minwidth 10, padding 3, last column bare)."""
    table = [DF_HEADER, *rows]
    widths = [max(10, max(len(r[i]) for r in table) + 3) for i in range(4)]
    return "".join(
        "".join(cell.ljust(widths[i]) for i, cell in enumerate(r[:4])) + r[4] + "\n"
        for r in table
    )


def parse_df_table(text: str) -> list[tuple[str, str, str, str, str]]:
    """Parse a `docker system df` table (columns separated by 2+ spaces)."""
    rows: list[tuple[str, str, str, str, str]] = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("TYPE"):
            continue
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) != 5:
            raise ValueError(f"cannot parse docker df line: {line!r}")
        rows.append((cells[0], cells[1], cells[2], cells[3], cells[4]))
    return rows


def _df_json_lines(rows: list[tuple[str, str, str, str, str]]) -> str:
    keys = ("Type", "TotalCount", "Active", "Size", "Reclaimable")
    return "".join(
        json.dumps(dict(zip(keys, r)), sort_keys=True, separators=(",", ":")) + "\n" for r in rows
    )


_SCRIPT = r"""#!/bin/bash
# Fake docker CLI generated by tests/rig/fakedocker.py - see its docstring.
LOG=__LOG__
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# ---- log the call: addr<TAB>docker<TAB>args... (escaped \\ \t \n) ----
esc() { E=${1//\\/\\\\}; E=${E//$'\t'/\\t}; E=${E//$'\n'/\\n}; }  # sets $E, no fork
addr=-
if [ -n "${SSH_CONNECTION:-}" ]; then read -r _ _ addr _ <<<"$SSH_CONNECTION"; fi
esc "$addr"; line="$E"$'\t'docker
for a in "$@"; do esc "$a"; line+=$'\t'"$E"; done
printf '%s\n' "$line" >>"$LOG"

DF_TABLE=__DF_TABLE__
DF_JSON=__DF_JSON__
DF_ROWS=__DF_ROWS__

if [ "${1:-}" = "--version" ] || [ "${1:-}" = "-v" ]; then
  echo "Docker version 28.2.2, build e6534b4"; exit 0
fi
if [ -e "$HERE/docker.down" ] || [ "${FAKE_DOCKER_DOWN:-}" = 1 ]; then
  echo __DOWN__ >&2; exit 1
fi

prune() {  # $1 = kind, remaining args = options
  local kind=$1 force=0 a; shift
  for a in "$@"; do case "$a" in -f|--force|-af|-fa) force=1;; esac; done
  if [ $force = 0 ]; then
    case $kind in
__PROMPTS__
    esac
    printf 'Are you sure you want to continue? [y/N] '
    local ans=""; read -r ans || true
    case "$ans" in y|Y|yes|YES) ;; *) echo; echo "Error: $kind prune has been cancelled" >&2; exit 1;; esac
  fi
  case $kind in
__PRUNE_OUT__
  esac
  exit 0
}

df() {
  local fmt="" a
  while [ $# -gt 0 ]; do
    case "$1" in
      --format) fmt=${2:-}; shift;;
      --format=*) fmt=${1#--format=};;
    esac
    shift
  done
  local squeezed=${fmt// /}
  if [ -z "$fmt" ] || [ "$fmt" = table ]; then printf '%s' "$DF_TABLE"
  elif [ "$fmt" = json ] || [ "$squeezed" = '{{json.}}' ]; then printf '%s' "$DF_JSON"
  else
    local row t c ac s r out
    while IFS='|' read -r t c ac s r; do
      [ -n "$t" ] || continue
      out=${fmt//'{{.Type}}'/"$t"}; out=${out//'{{.TotalCount}}'/"$c"}; out=${out//'{{.Active}}'/"$ac"}
      out=${out//'{{.Size}}'/"$s"}; out=${out//'{{.Reclaimable}}'/"$r"}; out=${out//'\t'/$'\t'}
      printf '%s\n' "$out"
    done <<<"$DF_ROWS"
  fi
  exit 0
}

case "${1:-} ${2:-}" in
  "system df") shift 2; df "$@";;
  "system prune") shift 2; prune system "$@";;
  "image prune"|"container prune"|"volume prune"|"builder prune") k=$1; shift 2; prune "$k" "$@";;
  "version "*) printf 'Client:\n Version:           28.2.2\n API version:       1.50\n\nServer: Docker Engine - Community\n Engine:\n  Version:          28.2.2\n  API version:      1.50 (minimum version 1.24)\n'; exit 0;;
esac
echo "fake docker: unsupported command: docker $*" >&2
exit 1
"""


def install_fake_docker(bindir: Path, log: Path, df_output: str | None = None) -> Path:
    """Write ``bindir/docker`` (executable); return its path. See module docstring.

    ``df_output``: custom ``docker system df`` table text (same columns as the real
    CLI); the JSON format is derived from it. Default: ``DEFAULT_DF_ROWS``.
    """
    bindir = Path(bindir)
    bindir.mkdir(parents=True, exist_ok=True)
    log = Path(log).resolve()
    log.parent.mkdir(parents=True, exist_ok=True)
    log.touch()
    if df_output is None:
        rows = list(DEFAULT_DF_ROWS)
        table = render_df_table(rows)
    else:
        rows = parse_df_table(df_output)
        table = df_output if df_output.endswith("\n") else df_output + "\n"
    prompts = "".join(
        f"      {k}) printf '%s\\n' {shlex.quote(v.rstrip(chr(10)))};;\n" for k, v in _PROMPTS.items()
    )
    prune_out = "".join(
        f"      {k}) printf '%s' {shlex.quote(_PRUNE_OUTPUT[k])}; "
        f"echo 'Total reclaimed space: {RECLAIMED[k]}';;\n"
        for k in RECLAIMED
    )
    script = (
        _SCRIPT.replace("__LOG__", shlex.quote(str(log)))
        .replace("__DF_TABLE__", shlex.quote(table))
        .replace("__DF_JSON__", shlex.quote(_df_json_lines(rows)))
        .replace("__DF_ROWS__", shlex.quote("".join("|".join(r) + "\n" for r in rows)))
        .replace("__DOWN__", shlex.quote(DAEMON_DOWN_MSG))
        .replace("__PROMPTS__", prompts.rstrip("\n"))
        .replace("__PRUNE_OUT__", prune_out.rstrip("\n"))
    )
    path = bindir / "docker"
    path.write_text(script)
    path.chmod(0o755)
    return path


def set_daemon_down(bindir: Path, down: bool = True) -> None:
    """Make the fake behave as if the docker daemon were (not) reachable."""
    flag = Path(bindir) / "docker.down"
    if down:
        flag.touch()
    else:
        flag.unlink(missing_ok=True)


def _unescape(field: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"t": "\t", "n": "\n"}.get(m.group(1), m.group(1)), field)


def read_docker_calls_by_host(log: Path) -> list[tuple[str, list[str]]]:
    """[(server address or "-", [args after "docker"]), ...] in call order."""
    calls: list[tuple[str, list[str]]] = []
    path = Path(log)
    if not path.exists():
        return calls
    for line in path.read_text().splitlines():
        fields = [_unescape(f) for f in line.split("\t")]
        if len(fields) < 2 or fields[1] != "docker":
            raise ValueError(f"malformed fake docker log line: {line!r}")
        calls.append((fields[0], fields[2:]))
    return calls


def read_docker_calls(log: Path) -> list[list[str]]:
    """Arguments (after "docker") of every recorded call, in order."""
    return [args for _, args in read_docker_calls_by_host(log)]
