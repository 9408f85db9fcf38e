"""The same work as `invoke logs.install-rotation`, as a pyinfra deploy.

Render the project's templates/logrotate.j2 (same variables, same Jinja2 options; pyinfra
passes its Host object as `host`, whose str() is the host name), upload it only if its
checksum differs, and `logrotate -d` it when it changed.
"""

import shlex

from pyinfra import host
from pyinfra.operations import files, server

rotation = files.template(
    name="Render and install the logrotate config",
    src=host.data.bench_template,
    dest=host.data.rotation_config,
    mode="644",
    jinja_env_kwargs={"trim_blocks": True, "lstrip_blocks": True},
    env=host.data.bench_env,
    paths=host.data.rotation_paths,
    policy=host.data.bench_policy,
)

server.shell(
    name="Validate it with logrotate -d",
    commands=[f"logrotate -d {shlex.quote(host.data.rotation_config)}"],
    _if=rotation.did_change,
)
