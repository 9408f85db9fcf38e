"""The reference floor: a bare fabric thread pool doing the same work with no engine around it.

One connection per host, all hosts at once; render the template locally, compare its
sha256 with the remote file's, upload only if different, then `logrotate -d` it. This
is the "fabric, thread pool" row of shared/PERFORMANCE.md, and the target says our
engine's idempotent re-run must be no slower than it.

    .venv/bin/python benchmarks/baseline_fabric.py SPEC.json   # prints {"changed": n, "ok": n, "failed": n}
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any


def main(spec_path: str) -> int:
    import jinja2
    from fabric import Config, Connection
    from paramiko import RejectPolicy

    spec: dict[str, Any] = json.loads(Path(spec_path).read_text())
    template_path = Path(spec["template"])
    template = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_path.parent)), undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True, autoescape=False,
    ).get_template(template_path.name)
    overrides = {"load_ssh_configs": False, "run": {"in_stream": False, "hide": True, "warn": True}}

    def one(host: dict[str, Any]) -> str:
        desired = template.render(env=spec["env"], host=host["name"], paths=host["paths"], policy=spec["policy"])
        conn = Connection(host["address"], user=spec["user"], port=host["port"],
                          config=Config(overrides=overrides),  # one per thread: fabric Configs are not thread-safe
                          connect_kwargs={"key_filename": spec["key_file"], "look_for_keys": False,
                                          "allow_agent": False})
        conn.client.load_host_keys(spec["known_hosts"])
        conn.client.set_missing_host_key_policy(RejectPolicy())
        try:
            path = host["config"]
            remote = conn.run(f"sha256sum -- {path} 2>/dev/null").stdout.split(" ", 1)[0]
            if remote == hashlib.sha256(desired.encode()).hexdigest():
                return "ok"
            conn.put(io.BytesIO(desired.encode()), path)
            conn.sftp().chmod(path, 0o644)
            return "changed" if conn.run(f"logrotate -d {path}").ok else "failed"
        except Exception as exc:
            print(f"{host['name']}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return "failed"
        finally:
            conn.close()

    with ThreadPoolExecutor(max_workers=len(spec["hosts"])) as pool:
        outcomes = list(pool.map(one, spec["hosts"]))
    print(json.dumps({k: outcomes.count(k) for k in ("changed", "ok", "failed")}))
    return 1 if "failed" in outcomes else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
