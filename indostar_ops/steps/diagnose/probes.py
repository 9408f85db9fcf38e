"""The runbook's diagnosis probes ("Common Issues" 1-7), each a function ctx -> findings.

Every probe reads only. A probe whose backend is missing from the inventory (or
not built into this version) returns an UNKNOWN finding saying so: never a
silent OK. The remediation of a finding is a real indostar-ops task line
(`findings.remedy`), or the runbook's manual step when no task does it yet.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ...errors import IndostarError
from ...severity import Severity
from ...step import EnvTarget
from .findings import Finding, remedy

if TYPE_CHECKING:
    from ...context import Context
    from ...inventory import Threshold

__all__ = ["ISSUES", "PROBES", "Probe", "probes_for"]

ISSUES = ("app-down", "slow", "payments", "errors", "db-pool", "celery", "disk")


@dataclass(frozen=True)
class Probe:
    name: str
    issues: tuple[str, ...]
    run: Callable[[Context], list[Finding]]
    what: str  # one line for docs and --json


def _f(probe: str, severity: Severity, summary: str, **kw: Any) -> Finding:
    return Finding(probe=probe, severity=severity, summary=summary, **kw)


def _unknown(probe: str, why: str, **kw: Any) -> list[Finding]:
    return [_f(probe, Severity.UNKNOWN, why, **kw)]


def _limits(t: Threshold, unit: str = "") -> str:
    op = ">" if t.critical >= t.warning else "<"
    return f"warning {op} {t.warning:g}{unit}, critical {op} {t.critical:g}{unit}"


def _step_plan(ctx: Context, step: Any, target: Any = None) -> Any:
    """Run a read-only step's check+plan inside a probe (same SQL and thresholds as its own task)."""
    return step.plan(step.check(ctx, target if target is not None else EnvTarget(ctx.env.name)))


# ---------------------------------------------------------------- Issue 1: application down


def probe_health(ctx: Context) -> list[Finding]:
    url = ctx.env.urls.health
    name = "app.health"
    if not url:
        return _unknown(name, "no health endpoint configured (urls.health)")
    env = ctx.env.name
    restart = remedy(env, "app.restart", ("--component", "backend"), "--check",
                     manual="kubectl rollout restart deployment/backend -n indostar-naturals",
                     note="preview, then --yes; invoke app.logs --component backend shows why it crashed")
    started = time.monotonic()
    try:
        status, body = ctx.http().get(url, timeout=ctx.env.diagnose.probe_timeout_s)
    except OSError as exc:
        return [_f(name, Severity.CRITICAL, f"health endpoint {url} did not answer: {getattr(exc, 'reason', exc)}",
                   evidence={"url": url}, cause="backend containers crashed, or a deployment in progress",
                   remedy=restart)]
    took = round((time.monotonic() - started) * 1000, 1)
    evidence = {"url": url, "status": status, "ms": took, "body": body[:200].decode("utf-8", "replace")}
    if status == 200:
        return [_f(name, Severity.OK, f"health endpoint answered 200 in {took} ms", evidence=evidence)]
    return [_f(name, Severity.CRITICAL, f"health endpoint answered {status} (502/503: no healthy backend)",
               evidence=evidence, cause="backend containers crashed, or a deployment in progress", remedy=restart)]


def probe_platform(ctx: Context, components: tuple[str, ...], name: str) -> list[Finding]:
    env = ctx.env
    if env.platform is None:
        return _unknown(name, "no platform section in the inventory: cannot list pods/containers")
    try:
        from ...platform.base import backend_for

        backend = backend_for(ctx)
    except (ImportError, AttributeError, IndostarError) as exc:
        return _unknown(name, f"{env.platform.kind} platform backend is not available in this version: {exc}")
    found: list[Finding] = []
    memory = env.thresholds.memory_pct
    for component in components:
        if component not in backend.components:
            continue
        try:
            instances = backend.instances(component)
        except NotImplementedError:
            found += _unknown(name, f"{env.platform.kind} backend cannot list {component} instances yet")
            continue
        problems = [i for i in instances if i.problem]
        oom = [i for i in instances if i.last_termination_reason == "OOMKilled"]
        expected = backend.expected_replicas(component)
        ready = sum(1 for i in instances if i.ready)
        mem = [100.0 * i.memory_bytes / i.memory_limit_bytes for i in instances
               if i.memory_bytes and i.memory_limit_bytes]
        evidence = {"component": component, "ready": ready, "instances": len(instances), "expected": expected,
                    "problems": {i.name: i.problem for i in problems},
                    "max_memory_pct": round(max(mem), 1) if mem else None}
        if component == "celery-worker":
            restart = remedy(env.name, "celery.restart", "--check", note="preview, then --yes",
                             manual="kubectl rollout restart deployment/celery-worker -n indostar-naturals")
        else:
            restart = remedy(env.name, "app.restart", ("--component", component), "--check",
                             note="preview, then --yes",
                             manual=f"kubectl rollout restart deployment/{component} -n indostar-naturals")
        if oom or (mem and memory.evaluate(max(mem)) != Severity.OK):
            sev = Severity.CRITICAL if oom or memory.evaluate(max(mem)) == Severity.CRITICAL else Severity.WARNING
            found.append(_f(name, sev, f"{component}: " + (f"{len(oom)} instance(s) OOMKilled" if oom else
                                                           f"memory at {max(mem):.0f}% of the limit"),
                            evidence=evidence, threshold=_limits(memory, " %"), cause="out of memory",
                            remedy=remedy(env.name, "app.resources", ("--component", component),
                                          ("--memory", "4Gi"), "--check",
                                          note="or scale out: invoke app.scale --component COMPONENT --replicas 5",
                                          manual=f"kubectl set resources deployment/{component} "
                                                 "--limits=memory=4Gi")))
        if ready == 0:
            found.append(_f(name, Severity.CRITICAL, f"{component}: no instance is ready ({len(instances)} found)",
                            evidence=evidence, cause="containers crashed" if component == "backend" else
                            "workers crashed", remedy=restart))
        elif problems or (expected is not None and ready < expected):
            found.append(_f(name, Severity.WARNING, f"{component}: {ready} ready of {expected or len(instances)}; "
                            + ", ".join(f"{k}: {v}" for k, v in evidence["problems"].items()),
                            evidence=evidence, cause="containers crashing (see app.logs)", remedy=restart))
        elif not oom:
            found.append(_f(name, Severity.OK, f"{component}: {ready}/{len(instances)} ready", evidence=evidence))
    return found or _unknown(name, f"none of {', '.join(components)} is a platform component in the inventory")


def probe_database_up(ctx: Context) -> list[Finding]:
    name = "database.connect"
    env = ctx.env
    if env.database is None:
        return _unknown(name, "no database section in the inventory")
    started = time.monotonic()
    try:
        ctx.postgres().fetch("SELECT 1 AS ok")
    except IndostarError as exc:
        rds = f" (RDS {env.database.rds_instance})" if env.database.rds_instance else ""
        return [_f(name, Severity.CRITICAL, f"cannot connect to the database{rds}: {exc.message}",
                   evidence={"where": f"{env.database.host}:{env.database.port}/{env.database.name}"},
                   cause="database connection lost",
                   remedy=remedy(env.name, "rds.status", manual="aws rds describe-db-instances "
                                 f"--db-instance-identifier {env.database.rds_instance or '<instance>'}"))]
    took = round((time.monotonic() - started) * 1000, 1)
    return [_f(name, Severity.OK, f"database answers ({took} ms including connect)",
               evidence={"ms": took, "database": env.database.name})]


# ---------------------------------------------------------------- Issues 2, 4, 5: database


def probe_connections(ctx: Context) -> list[Finding]:
    from ..postgres.activity import Activity

    name = "database.connections"
    if ctx.env.database is None:
        return _unknown(name, "no database section in the inventory")
    plan = _step_plan(ctx, Activity())
    data = dict(plan.data)
    db = ctx.env.database
    t = ctx.env.thresholds.db_connections_pct
    idle_old = _count_idle(ctx, db.idle_minutes)
    evidence = {k: data.get(k) for k in ("total", "max_connections", "used_pct", "by_state", "available")}
    evidence["idle_over_minutes"] = {"minutes": db.idle_minutes, "count": idle_old}
    findings = [_f(name, plan.severity, f"{data['total']}/{data['max_connections']} connections "
                   f"({data['used_pct']}%), {idle_old} idle > {db.idle_minutes:g} min",
                   evidence=evidence, threshold=_limits(t, " %"),
                   cause="connection leaks or pool too small" if plan.severity != Severity.OK else None,
                   remedy=remedy(ctx.env.name, "db.kill-idle", "--check",
                                 note="preview; then --yes; long term: invoke db.pool-advice")
                   if plan.severity != Severity.OK or idle_old else None)]
    return findings


def _count_idle(ctx: Context, minutes: float) -> int:
    rows = ctx.postgres().fetch(
        "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND state = 'idle' "
        "AND state_change < now() - make_interval(secs => %s)", (minutes * 60,))
    return int(rows[0]["n"])


def probe_long_queries(ctx: Context) -> list[Finding]:
    name = "database.long-queries"
    db = ctx.env.database
    if db is None:
        return _unknown(name, "no database section in the inventory")
    rows = ctx.postgres(admin=bool(db.admin_user)).fetch(
        "SELECT pid, usename AS user, application_name AS application, "
        "extract(epoch FROM now() - query_start)::float8 AS running_s, left(query, 200) AS query "
        "FROM pg_stat_activity WHERE datname = current_database() AND state = 'active' "
        "AND pid <> pg_backend_pid() AND query_start < now() - make_interval(secs => %s) "
        "ORDER BY query_start LIMIT 10", (db.long_query_minutes * 60,))
    evidence = {"minutes": db.long_query_minutes,
                "queries": [{**r, "running_s": round(r["running_s"], 1)} for r in rows]}
    if not rows:
        return [_f(name, Severity.OK, f"no query running longer than {db.long_query_minutes:g} min",
                   evidence=evidence)]
    return [_f(name, Severity.WARNING, f"{len(rows)} quer{'y' if len(rows) == 1 else 'ies'} running longer than "
               f"{db.long_query_minutes:g} min (longest {rows[0]['running_s']:.0f}s)", evidence=evidence,
               cause="long-running queries hold connections and locks",
               remedy=remedy(ctx.env.name, "db.kill-long", "--check", note="preview; then --yes (--max N)"))]


def probe_locks(ctx: Context) -> list[Finding]:
    from ..postgres.activity import Locks

    name = "database.locks"
    if ctx.env.database is None:
        return _unknown(name, "no database section in the inventory")
    plan = _step_plan(ctx, Locks())
    pairs = list(plan.data.get("pairs", ()))
    if not pairs:
        return [_f(name, Severity.OK, "no session waits for a lock", evidence={"pairs": 0})]
    return [_f(name, plan.severity, f"{len(pairs)} session(s) waiting for a lock", evidence={"pairs": pairs[:5]},
               cause="database issues: lock contention",
               remedy=remedy(ctx.env.name, "db.locks", note="then db.kill-long --check for the blocker"))]


def probe_slow_statements(ctx: Context) -> list[Finding]:
    from ..postgres.stats import SlowQueries

    name = "database.slow-statements"
    if ctx.env.database is None:
        return _unknown(name, "no database section in the inventory")
    plan = _step_plan(ctx, SlowQueries(limit=5))
    data = dict(plan.data)
    queries = list(data.get("queries") or ())
    version = _server_version(ctx)
    generic = _generic_plans(ctx, version, queries)
    evidence: dict[str, Any] = {"queries": queries[:5], "generic_plans": generic}
    if plan.severity == Severity.UNKNOWN:
        evidence["how_to_enable"] = data.get("how_to_enable")
        return [_f(name, Severity.UNKNOWN, "slow statements unknown: " + (plan.reason or "").splitlines()[0],
                   evidence=evidence, remedy=remedy(ctx.env.name, "db.slow-queries"))]
    top = queries[0] if queries else None
    summary = (f"slowest statement {top['mean_ms']:.0f} ms on average ({top['calls']} calls)" if top
               else "no statements recorded yet")
    return [_f(name, plan.severity, summary, evidence=evidence,
               threshold=_limits(ctx.env.thresholds.response_time_s, " s"),
               cause="slow database queries" if plan.severity != Severity.OK else None,
               remedy=remedy(ctx.env.name, "db.slow-queries", ("--limit", 10))
               if plan.severity != Severity.OK else None)]


def _server_version(ctx: Context) -> int:
    return int(ctx.postgres().fetch("SELECT current_setting('server_version_num')::int AS v")[0]["v"])


def _generic_plans(ctx: Context, version: int, queries: list[dict[str, Any]]) -> Any:
    """PostgreSQL 16+: `EXPLAIN (GENERIC_PLAN)` of the top statements (planned, never executed)."""
    if version < 160000:
        return {"available": False, "note": f"EXPLAIN (GENERIC_PLAN) needs PostgreSQL 16+; this server is "
                                           f"{version // 10000}, so no plans were taken (statements never run)"}
    plans = []
    for q in queries[:3]:
        text = str(q.get("query") or "")
        if q.get("hidden") or not text.lstrip().lower().startswith(("select", "with")) or ";" in text.rstrip("; \n"):
            continue  # one SELECT/WITH statement only; EXPLAIN without ANALYZE plans it, never runs it
        try:
            rows = ctx.postgres().fetch("EXPLAIN (GENERIC_PLAN) " + text)  # planned only, never executed
        except Exception as exc:  # noqa: BLE001 - an unplannable statement is noted, the probe goes on
            plans.append({"query": text[:200], "error": str(exc).splitlines()[0]})
            continue
        plans.append({"query": text[:200], "plan": [r["QUERY PLAN"] for r in rows][:15]})
    return {"available": True, "plans": plans}


def probe_seq_scans(ctx: Context) -> list[Finding]:
    name = "database.missing-indexes"
    env = ctx.env
    if env.database is None:
        return _unknown(name, "no database section in the inventory")
    rows = ctx.postgres().fetch(
        "SELECT schemaname AS schema, relname AS table, seq_scan, coalesce(idx_scan, 0) AS idx_scan, "
        "seq_tup_read, n_live_tup AS live_rows, pg_size_pretty(pg_relation_size(relid)) AS size "
        "FROM pg_stat_user_tables WHERE n_live_tup >= %s AND seq_scan > coalesce(idx_scan, 0) "
        "ORDER BY seq_tup_read DESC LIMIT 5", (env.diagnose.seq_scan_min_rows,))
    version = _server_version(ctx)
    note = ("EXPLAIN (GENERIC_PLAN) of the statements reading them needs PostgreSQL 16+; this server is "
            f"{version // 10000}" if version < 160000 else
            "see database.slow-statements for the generic plans of the top statements")
    if not rows:
        return [_f(name, Severity.OK, f"no table of {env.diagnose.seq_scan_min_rows}+ rows is read mostly by "
                   "sequential scans", evidence={"tables": [], "generic_plan": note})]
    tables = ", ".join(f"{r['schema']}.{r['table']} ({r['seq_scan']} seq vs {r['idx_scan']} index scans, "
                       f"{r['live_rows']} rows)" for r in rows)
    return [_f(name, Severity.WARNING, f"large tables read mostly by sequential scans: {tables}",
               evidence={"tables": rows, "generic_plan": note},
               cause="slow database queries: a missing index (runbook: add missing indexes, then ANALYZE)",
               remedy=remedy(env.name, "db.slow-queries", ("--limit", 10),
                             note="find the filtering columns, then add the index in a migration with "
                                  "CREATE INDEX CONCURRENTLY; then invoke db.analyze"))]


# ---------------------------------------------------------------- Redis (Issues 2, 6)


def probe_redis(ctx: Context) -> list[Finding]:
    name = "redis.latency"
    if ctx.env.redis is None:
        return _unknown(name, "no redis section in the inventory")
    t = ctx.env.thresholds.redis_latency_ms
    try:
        client = ctx.redis().client
        client.ping()  # connect first: the samples time round trips, not the TCP handshake
        samples = []
        for _ in range(10):
            started = time.perf_counter()
            client.ping()
            samples.append((time.perf_counter() - started) * 1000)
        memory = client.info("memory")
    except Exception as exc:  # noqa: BLE001 - redis-py raises its own tree; any failure is the finding
        return [_f(name, Severity.CRITICAL, f"Redis does not answer PING: {exc}", cause="Redis connection lost",
                   remedy=remedy(ctx.env.name, "cache.info", manual="redis-cli PING"))]
    avg, worst = sum(samples) / len(samples), max(samples)
    used, cap = int(memory.get("used_memory", 0)), int(memory.get("maxmemory", 0))
    evidence = {"avg_ms": round(avg, 3), "max_ms": round(worst, 3), "samples": len(samples),
                "used_memory": memory.get("used_memory_human"), "maxmemory": cap or None,
                "memory_pct": round(100.0 * used / cap, 1) if cap else None}
    sev = t.evaluate(avg)
    return [_f(name, sev, f"Redis PING {avg:.2f} ms avg, {worst:.2f} ms max; memory {evidence['used_memory']}",
               evidence=evidence, threshold=_limits(t, " ms"),
               cause="Redis slow (cache misses fall through to the database)" if sev != Severity.OK else None,
               remedy=remedy(ctx.env.name, "cache.info") if sev != Severity.OK else None)]


def probe_queues(ctx: Context) -> list[Finding]:
    name = "celery.queues"
    env = ctx.env
    if env.redis is None:
        return _unknown(name, "no redis section in the inventory")
    t = env.thresholds.queue_length
    client = ctx.redis().client
    findings = []
    try:
        lengths = {queue: int(client.llen(queue)) for queue in env.redis.queues}
        failed = int(client.llen(env.redis.failed_queue))
    except Exception as exc:  # noqa: BLE001 - any Redis failure is the finding
        return [_f(name, Severity.CRITICAL, f"cannot read the Celery queues: {exc}", cause="Redis connection lost",
                   remedy=remedy(env.name, "cache.info", manual="redis-cli PING"))]
    for queue, length in lengths.items():
        sev = t.evaluate(length)
        fix = None
        if sev != Severity.OK:
            fix = remedy(env.name, "celery.scale", ("--replicas", 3), "--check",
                         note="first invoke celery.status; if the workers crashed: invoke celery.restart",
                         manual="kubectl scale deployment/celery-worker --replicas=3 -n indostar-naturals")
        findings.append(_f(name, sev, f"queue {queue}: {length} waiting", evidence={"queue": queue, "length": length},
                           threshold=_limits(t),
                           cause="workers crashed or too few workers (background tasks piling up)" if fix else None,
                           remedy=fix))
    failed_queue = env.redis.failed_queue
    findings.append(_f(name, Severity.WARNING if failed else Severity.OK,
                       f"{failed} failed task(s) in {failed_queue}", evidence={"queue": failed_queue, "length": failed},
                       threshold="warning > 0", cause="task errors" if failed else None,
                       remedy=remedy(env.name, "celery.retry-failed", "--check",
                                     note="preview per task name, then --yes; the errors are in each record",
                                     manual=f"redis-cli LRANGE {failed_queue} 0 -1") if failed else None))
    return findings


# ---------------------------------------------------------------- AWS CloudWatch (Issues 2, 4)


def _alb_dimension(ctx: Context) -> str:
    alb = ctx.env.alb
    assert alb is not None
    ref = alb.load_balancer
    if not ref.startswith("arn:"):
        found = ctx.aws().client("elbv2").describe_load_balancers(Names=[ref])["LoadBalancers"]
        ref = found[0]["LoadBalancerArn"]
    return ref.split(":loadbalancer/", 1)[1]


def _metric(ctx: Context, name: str, dimension: str, stat: str, minutes: int = 15) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    points = ctx.aws().client("cloudwatch").get_metric_statistics(
        Namespace="AWS/ApplicationELB", MetricName=name,
        Dimensions=[{"Name": "LoadBalancer", "Value": dimension}],
        StartTime=now - timedelta(minutes=minutes), EndTime=now, Period=300, Statistics=[stat])["Datapoints"]
    return sorted(points, key=lambda p: p["Timestamp"])


def probe_response_time(ctx: Context) -> list[Finding]:
    name = "alb.response-time"
    if ctx.env.aws is None or ctx.env.alb is None:
        return _unknown(name, "no aws/alb section in the inventory: TargetResponseTime unavailable")
    dim = _alb_dimension(ctx)
    points = _metric(ctx, "TargetResponseTime", dim, "Average")
    if not points:
        return _unknown(name, f"CloudWatch has no TargetResponseTime for {dim} in the last 15 min",
                        evidence={"load_balancer": dim})
    t = ctx.env.thresholds.response_time_s
    latest = float(points[-1]["Average"])
    sev = t.evaluate(latest)
    return [_f(name, sev, f"ALB TargetResponseTime {latest:.3f} s (5-min average)",
               evidence={"load_balancer": dim, "series": [round(float(p["Average"]), 3) for p in points]},
               threshold=_limits(t, " s"), cause="slow queries, cache misses or high CPU" if sev else None,
               remedy=remedy(ctx.env.name, "app.scale", ("--component", "backend"), ("--replicas", 5), "--check",
                             note="if CPU-bound; for slow queries see diagnose.slow's database findings",
                             manual="kubectl scale deployment/backend --replicas=5") if sev else None)]


def probe_error_rate(ctx: Context) -> list[Finding]:
    name = "alb.error-rate"
    if ctx.env.aws is None or ctx.env.alb is None:
        return _unknown(name, "no aws/alb section in the inventory: error rate unavailable")
    dim = _alb_dimension(ctx)
    errors = sum(float(p["Sum"]) for p in _metric(ctx, "HTTPCode_Target_5XX_Count", dim, "Sum"))
    requests = sum(float(p["Sum"]) for p in _metric(ctx, "RequestCount", dim, "Sum"))
    if not requests:
        return _unknown(name, f"CloudWatch has no RequestCount for {dim} in the last 15 min",
                        evidence={"load_balancer": dim})
    t = ctx.env.thresholds.error_rate_pct
    rate = 100.0 * errors / requests
    sev = t.evaluate(rate)
    return [_f(name, sev, f"5xx error rate {rate:.2f}% ({errors:.0f} of {requests:.0f} requests, 15 min)",
               evidence={"load_balancer": dim, "errors": errors, "requests": requests}, threshold=_limits(t, " %"),
               cause="a recent deployment introduced a bug" if sev else None,
               remedy=remedy(ctx.env.name, "app.rollback", ("--component", "backend"), "--check",
                             manual="kubectl rollout undo deployment/backend -n indostar-naturals") if sev else None)]


# ---------------------------------------------------------------- outside services (Issues 3, 4)


def sentry_issues(ctx: Context, term: str | None) -> list[dict[str, Any]]:
    """Top unresolved issues of the last hour (Sentry REST API), optionally matching `term`."""
    import json
    from urllib.parse import urlencode

    s = ctx.env.sentry
    assert s is not None
    query = "is:unresolved" + (f" {term}" if term else "")
    params = {"query": query, "statsPeriod": "1h", "sort": "freq", "limit": str(s.top)}
    if s.project:
        params["project"] = s.project
    url = f"{s.url.rstrip('/')}/api/0/organizations/{s.organization}/issues/?{urlencode(params)}"
    status, body = ctx.http().get(url, timeout=ctx.env.diagnose.probe_timeout_s + 5,
                                  headers={"Authorization": f"Bearer {s.token.get()}"})
    if status != 200:
        from ...errors import StepError

        raise StepError(f"Sentry API answered {status} for organization {s.organization}",
                        hint="check sentry.url/organization and the token's event:read scope")
    return [{"id": i.get("id"), "short_id": i.get("shortId"), "title": i.get("title"), "culprit": i.get("culprit"),
             "events_1h": int(i.get("count") or 0), "users": i.get("userCount"), "link": i.get("permalink")}
            for i in json.loads(body)]


def _sentry_finding(ctx: Context, name: str, terms: tuple[str, ...], cause: str) -> list[Finding]:
    s = ctx.env.sentry
    if s is None:
        return _unknown(name, "no sentry section in the inventory: cannot read Sentry issues")
    merged: dict[str, dict[str, Any]] = {}
    for term in terms or (None,):
        for issue in sentry_issues(ctx, term):
            merged[str(issue["id"])] = issue
    issues = sorted(merged.values(), key=lambda i: -i["events_1h"])[:s.top]
    worst = issues[0]["events_1h"] if issues else 0
    sev = (Severity.CRITICAL if worst > s.events_critical else Severity.WARNING if worst > s.events_warning
           else Severity.OK)
    label = f" matching {' or '.join(map(repr, terms))}" if terms else ""
    summary = (f"{len(issues)} unresolved Sentry issue(s){label} in the last hour; top: {issues[0]['title']} "
               f"({worst} events)" if issues else f"no unresolved Sentry issue{label} in the last hour")
    return [_f(name, sev, summary, evidence={"issues": issues},
               threshold=f"warning > {s.events_warning} events/h, critical > {s.events_critical} events/h "
                         "(top issue)", cause=cause if sev else None,
               remedy=remedy(ctx.env.name, "app.logs", ("--component", "backend"), ("--grep", "ERROR"),
                             manual="kubectl logs deployment/backend -n indostar-naturals | grep ERROR")
               if sev else None)]


def probe_sentry_errors(ctx: Context) -> list[Finding]:
    return _sentry_finding(ctx, "sentry.errors", (), "a recent deployment introduced a bug, or a failing dependency")


def probe_sentry_payments(ctx: Context) -> list[Finding]:
    return _sentry_finding(ctx, "sentry.payments", ("payment", "razorpay"),
                           "webhook signature verification failing, or invalid API keys")


_INDICATOR = {"none": Severity.OK, "minor": Severity.WARNING, "maintenance": Severity.WARNING,
              "major": Severity.CRITICAL, "critical": Severity.CRITICAL}


def provider_status(ctx: Context, provider: str, url: str) -> Finding:
    import json

    name = f"status.{provider}"
    try:
        status, body = ctx.http().get(url, timeout=ctx.env.diagnose.probe_timeout_s)
        doc = json.loads(body) if status == 200 else None
    except (OSError, ValueError) as exc:
        return _f(name, Severity.UNKNOWN, f"{provider} status page unreadable: {exc}", evidence={"url": url})
    if doc is None:
        return _f(name, Severity.UNKNOWN, f"{provider} status page answered {status}", evidence={"url": url})
    indicator = str(doc.get("status", {}).get("indicator", "unknown"))
    description = str(doc.get("status", {}).get("description", ""))
    sev = _INDICATOR.get(indicator, Severity.UNKNOWN)
    cause = ("Razorpay service down: wait for resolution and tell users about delays" if provider == "razorpay"
             else f"external service down ({provider}): disable non-critical features temporarily")
    fix = None
    if sev != Severity.OK and provider == "razorpay":
        fix = remedy(ctx.env.name, "payments.reconcile", ("--since", "24h"), "--check",
                     note="once Razorpay recovers, reconcile payments left pending")
    elif sev != Severity.OK:
        fix = remedy(ctx.env.name, "incident.open", ("--severity", "P2"),
                     ("--title", f"{provider} degraded"), note="tell users; nothing to fix on our side")
    return _f(name, sev, f"{provider}: {description or indicator}", evidence={"url": url, "indicator": indicator},
              cause=cause if sev != Severity.OK else None, remedy=fix)


def probe_status_pages(ctx: Context, only: tuple[str, ...] | None, name: str) -> list[Finding]:
    pages = {k: v for k, v in ctx.env.status_pages.items() if only is None or k in only}
    if not pages:
        wanted = ", ".join(only) if only else "any provider"
        return _unknown(name, f"no status page URL for {wanted} in the inventory (status_pages)")
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(pages)) as pool:
        return list(pool.map(lambda kv: provider_status(ctx, *kv), pages.items()))


# ---------------------------------------------------------------- payments (Issue 3)


def probe_payments(ctx: Context) -> list[Finding]:
    from ..payments import payment_counts

    name = "payments.pending"
    env = ctx.env
    if env.payments is None or env.database is None:
        return _unknown(name, "no payments/database section in the inventory")
    counts = payment_counts(ctx)
    stuck = env.thresholds.pending_payment_minutes
    failures = env.thresholds.payment_failures_per_hour
    oldest = counts["oldest_pending_minutes"] or 0.0
    found = []
    sev = stuck.evaluate(oldest) if counts["pending_24h"] else Severity.OK
    found.append(_f(name, sev, f"{counts['pending_1h']} payment(s) pending from the last hour, "
                    f"{counts['pending_24h']} from the last 24 h; the oldest for {oldest:.0f} min", evidence=counts,
                    threshold=_limits(stuck, " min (oldest pending)"),
                    cause="webhook not received, or signature verification failing" if sev else None,
                    remedy=remedy(env.name, "payments.reconcile", ("--since", "24h"), "--check",
                                  note="then --yes to apply through the backend's reconciliation hook")
                    if sev else None))
    fsev = failures.evaluate(counts["failed_1h"])
    found.append(_f("payments.failures", fsev, f"{counts['failed_1h']} failed payment(s) in the last hour",
                    evidence={"failed_1h": counts["failed_1h"]}, threshold=_limits(failures, "/hour"),
                    cause="Razorpay down, network timeout or invalid API keys" if fsev else None,
                    remedy=remedy(env.name, "payments.pending", ("--since", "1h")) if fsev else None))
    return found


# ---------------------------------------------------------------- disk (Issue 7)


def probe_disk(ctx: Context) -> list[Finding]:
    from concurrent.futures import ThreadPoolExecutor

    from ..disk import DiskCheck

    name = "disk.usage"
    step = DiskCheck()
    hosts = ctx.env.hosts()
    if not hosts:
        return _unknown(name, "no hosts in the inventory")

    def one(host: Any) -> Finding:
        try:
            plan = step.plan(step.check(ctx, host))
        except IndostarError as exc:
            return _f(name, Severity.UNKNOWN, f"{host.name}: {exc.message}", evidence={"host": host.name})
        sev = plan.severity if plan.severity is not None else Severity.UNKNOWN
        fix = None
        if sev != Severity.OK:
            fix = remedy(ctx.env.name, "logs.cleanup", ("--older-than", "7d"), ("--groups", host.groups[0]),
                         "--check", note="also: invoke docker.prune --check, invoke tmp.cleanup --check, "
                                         "invoke disk.report for the largest directories")
        return _f(name, sev, f"{host.name}: {plan.reason}", evidence={"host": host.name, **dict(plan.data)},
                  threshold=_limits(ctx.env.thresholds.disk_pct, " %"),
                  cause="log files growing, Docker images accumulating or temp files not cleaned" if fix else None,
                  remedy=fix)

    with ThreadPoolExecutor(max_workers=min(16, len(hosts))) as pool:
        return list(pool.map(one, hosts))


# ---------------------------------------------------------------- the catalogue

PROBES: tuple[Probe, ...] = (
    Probe("app.health", ("app-down",), probe_health, "GET the health endpoint (urls.health)"),
    Probe("platform.backend", ("app-down",), lambda c: probe_platform(c, ("backend",), "platform.backend"),
          "backend pods/containers: ready, crash loops, OOM kills, memory vs limit"),
    Probe("database.connect", ("app-down", "errors"), probe_database_up, "connect to the database and SELECT 1"),
    Probe("database.connections", ("db-pool", "errors"), probe_connections,
          "connections vs max_connections, by state; idle sessions older than idle_minutes"),
    Probe("database.long-queries", ("db-pool", "errors", "slow"), probe_long_queries,
          "queries active longer than long_query_minutes"),
    Probe("database.locks", ("errors",), probe_locks, "sessions waiting for locks (pg_locks NOT granted)"),
    Probe("database.slow-statements", ("slow",), probe_slow_statements,
          "pg_stat_statements by mean time; generic plans on PostgreSQL 16+"),
    Probe("database.missing-indexes", ("slow",), probe_seq_scans,
          "large tables read mostly by sequential scans (pg_stat_user_tables)"),
    Probe("redis.latency", ("slow", "celery"), probe_redis, "Redis PING round trips and memory"),
    Probe("alb.response-time", ("slow",), probe_response_time, "ALB TargetResponseTime (CloudWatch)"),
    Probe("alb.error-rate", ("errors",), probe_error_rate, "ALB 5xx / requests (CloudWatch)"),
    Probe("sentry.errors", ("errors",), probe_sentry_errors, "top unresolved Sentry issues, last hour"),
    Probe("sentry.payments", ("payments",), probe_sentry_payments,
          "unresolved Sentry issues matching payment/razorpay, last hour"),
    Probe("status.razorpay", ("payments",), lambda c: probe_status_pages(c, ("razorpay",), "status.razorpay"),
          "Razorpay's status page (/api/v2/status.json)"),
    Probe("status.providers", ("errors",),
          lambda c: probe_status_pages(c, tuple(k for k in c.env.status_pages if k != "razorpay") or ("twilio",),
                                       "status.providers"),
          "Twilio, SendGrid, AWS... status pages"),
    Probe("payments.pending", ("payments",), probe_payments,
          "pending payments (runbook query) and their age; failed payments per hour"),
    Probe("celery.queues", ("celery",), probe_queues, "Celery queue length and failed tasks (Redis LLEN)"),
    Probe("platform.workers", ("celery",), lambda c: probe_platform(c, ("celery-worker",), "platform.workers"),
          "celery-worker pods/containers"),
    Probe("disk.usage", ("disk",), probe_disk, "df on every host vs the disk thresholds"),
)


def probes_for(issue: str) -> list[Probe]:
    return [p for p in PROBES if issue == "all" or issue in p.issues]
