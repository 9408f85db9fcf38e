#!/usr/bin/env bash
# Install what the side-by-side benchmark needs, and nothing into the runtime.
#
# Why a separate venv: the peers (the project's optional `bench` extra: ansible-core,
# pyinfra) pin their own paramiko/Jinja2 ranges; installing them into the project venv
# could silently change the versions our engine runs with. So they go into
# benchmarks/.venv (git-ignored), read from pyproject's `bench` extra so the versions
# stay declared in one place. The profilers (py-spy, pyinstrument) go there too.
# Our side always runs from the project venv (.venv), exactly as a user runs it.
#
# Usage: bash benchmarks/setup.sh            (idempotent; re-run after changing the extra)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
project_python="${PROJECT_PYTHON:-$repo/.venv/bin/python}"
bench_venv="${BENCH_VENV:-$here/.venv}"

if [ ! -x "$project_python" ]; then
    echo "error: $project_python not found; create the project venv first:" >&2
    echo "  python3 -m venv .venv && .venv/bin/pip install -e '.[test]'" >&2
    exit 2
fi

# System tools the benchmark hosts use: sshd (the hosts), ssh (ansible), logrotate.
missing=()
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v ssh >/dev/null || missing+=(openssh-client)
[ -x /usr/sbin/logrotate ] || missing+=(logrotate)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} from Debian" >&2
    apt-get update -qq && apt-get install -y -qq "${missing[@]}"
fi

# The project's `bench` extra, read from pyproject.toml (one source of truth).
mapfile -t bench_reqs < <("$project_python" - "$repo/pyproject.toml" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    extras = tomllib.load(f)["project"]["optional-dependencies"]
print("\n".join(extras["bench"]))
PY
)

base_python="$("$project_python" -c 'import sys; print(sys._base_executable)')"
if [ ! -x "$bench_venv/bin/python" ]; then
    "$base_python" -m venv "$bench_venv"
fi
"$bench_venv/bin/pip" install -q --upgrade pip
"$bench_venv/bin/pip" install -q "${bench_reqs[@]}" "py-spy>=0.3" "pyinstrument>=4.6"

# pyinstrument in the project venv too (it is in the `dev` extra) so our CLI can be profiled
# in its own interpreter: `.venv/bin/pyinstrument -m invoke ...`.
"$project_python" -m pip install -q "pyinstrument>=4.6"

echo "bench venv: $bench_venv"
"$bench_venv/bin/ansible" --version | head -1
"$bench_venv/bin/pyinfra" --version

# Byte-compile our package as pip does for the peers (this machine sets PYTHONDONTWRITEBYTECODE=1);
# the benchmark scripts do it again before measuring, since the sources keep changing.
"$project_python" -m compileall -q "$repo/indostar_ops" "$repo/tasks.py"
