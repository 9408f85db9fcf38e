"""Real-component test rig: private sshd fleet, nginx, pebble ACME CA, fake docker.

Why: the runbooks drive real tools (ssh, nginx, certbot, docker); these helpers run
real instances on loopback ports under a temp dir, touching nothing system-wide
(except ``mkdir -p /run/sshd``, sshd's privilege-separation dir). Each class stops
only the processes it started. Import the classes in tests/conftest.py.
"""

from tests.rig.acme import AcmeRig
from tests.rig.fakedocker import (
    install_fake_docker,
    read_docker_calls,
    read_docker_calls_by_host,
    set_daemon_down,
)
from tests.rig.nginx import NginxRig
from tests.rig.sshd import RigHost, SshRig, unreachable_address

__all__ = [
    "AcmeRig",
    "NginxRig",
    "RigHost",
    "SshRig",
    "install_fake_docker",
    "read_docker_calls",
    "read_docker_calls_by_host",
    "set_daemon_down",
    "unreachable_address",
]
