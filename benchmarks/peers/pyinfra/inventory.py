"""pyinfra inventory for the benchmark fleet, read from the harness's spec.json ($BENCH_SPEC)."""

import json
import os

_spec = json.load(open(os.environ["BENCH_SPEC"]))  # noqa: SIM115 - pyinfra inventories are plain modules

hosts = [
    (
        h["name"],
        {
            "ssh_hostname": h["address"],
            "ssh_port": h["port"],
            "ssh_user": _spec["user"],
            "ssh_key": _spec["key_file"],
            "ssh_known_hosts_file": _spec["known_hosts"],
            "ssh_strict_host_key_checking": "yes",
            "ssh_allow_agent": False,
            "ssh_look_for_keys": False,
            "bench_env": _spec["env"],
            "bench_template": _spec["template"],
            "bench_policy": _spec["policy"],
            "rotation_config": h["config"],
            "rotation_paths": h["paths"],
        },
    )
    for h in _spec["hosts"]
]
