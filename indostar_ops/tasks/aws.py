"""AWS access: the least-privilege IAM policy the AWS tasks need."""

from __future__ import annotations

from invoke import task

from ._help import common


@task(help=common(changes=False, tasks="comma-separated tasks (default: every AWS task the inventory configures)"))
def policy(c, env=None, check=False, json=False, tasks=""):
    """Print the IAM policy (JSON) derived from the code's own list of calls per step; no AWS call is made."""
    import json as jsonlib

    from ..cli import fail, open_environment
    from ..errors import IndostarError, UsageError
    from ..steps.aws.policy import TASK_STEPS, policy_for

    try:
        environment = open_environment(env)
        if environment.aws is None:
            raise UsageError(f"environment {environment.name!r} has no 'aws' section")
        chosen = [t for t in tasks.split(",") if t] or None
        unknown = [t for t in chosen or [] if t not in TASK_STEPS]
        if unknown:
            raise UsageError(f"aws.policy: unknown task(s) {', '.join(unknown)}",
                             hint=f"known: {', '.join(TASK_STEPS)}")
        document = policy_for(environment, chosen)
    except IndostarError as exc:
        fail(exc, json=json)
    print(jsonlib.dumps(document, indent=None if json else 2))
