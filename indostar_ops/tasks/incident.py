"""Runbook "Incident Response": record incidents, post the communication templates, escalate, post-mortem."""

from __future__ import annotations

from invoke import task

from ._help import common


@task(name="open", help=common(severity="P0, P1, P2 or P3 (runbook Severity Levels)",
                               title="what is broken, as users see it", ack="who acknowledges (default: you)"))
def open_(c, env=None, check=False, json=False, yes=False, severity="", title="", ack=None):
    """Record an incident and post 'Investigating' to the status page and chat; prints the escalation path."""
    from ..cli import run_steps
    from ..steps.incident import IncidentOpen

    run_steps("incident.open", env=env, check=check, json=json, yes=yes,
              build=lambda _env: [IncidentOpen(severity=severity, title=title, ack=ack)])


@task(help=common(status="investigating, identified or monitoring", cause="the cause (with identified)",
                  eta="when a fix is expected", message="a note for the timeline"))
def update(c, incident, env=None, check=False, json=False, yes=False, status=None, cause=None, eta=None,
           message=None):
    """Record progress and post the runbook's 'Progress Update' (identified: cause and ETA)."""
    from ..cli import run_steps
    from ..steps.incident import IncidentUpdate

    run_steps("incident.update", env=env, check=check, json=json, yes=yes,
              build=lambda _env: [IncidentUpdate(incident, status=status, cause=cause, eta=eta, message=message)])


@task(help=common(message="a note for the timeline"))
def resolve(c, incident, env=None, check=False, json=False, yes=False, message=None):
    """Close the incident and post the runbook's 'Resolution' message."""
    from ..cli import run_steps
    from ..steps.incident import IncidentResolve

    run_steps("incident.resolve", env=env, check=check, json=json, yes=yes,
              build=lambda _env: [IncidentResolve(incident, message=message)])


@task(help=common(incident="one incident id (default: every open one)"))
def escalate(c, env=None, check=False, json=False, yes=False, incident=None):
    """Escalation levels due now (15 min, 30 min, 1 h, 2 h unresolved): notify each level once."""
    from ..cli import run_steps
    from ..steps.incident import IncidentEscalate

    run_steps("incident.escalate", env=env, check=check, json=json, yes=yes,
              build=lambda _env: [IncidentEscalate(incident)])


@task(name="list", help=common(changes=False, all="resolved ones too"))
def list_(c, env=None, check=False, json=False, all_=False):
    """Incidents (open ones by default), newest first, with escalations due."""
    from ..cli import run_steps
    from ..steps.incident import IncidentList

    run_steps("incident.list", env=env, check=check, json=json, build=lambda _env: [IncidentList(all_=all_)])


@task(help=common(changes=False, out="write the Markdown to this file (default: print it)"))
def postmortem(c, incident, env=None, check=False, json=False, out=None):
    """A Markdown post-mortem from the incident record and every indostar-ops run during it."""
    import sys

    from ..cli import run_steps
    from ..steps.incident import IncidentPostmortem, write_text

    result = run_steps("incident.postmortem", env=env, check=check, json=json and not out,
                       build=lambda _env: [IncidentPostmortem(incident)])
    if out and result.results and result.results[0].data.get("markdown"):
        if check:
            sys.stderr.write(f"check mode: not writing {out}\n")
            return
        path = write_text(out, result.results[0].data["markdown"])
        sys.stderr.write(f"wrote {path}\n")
