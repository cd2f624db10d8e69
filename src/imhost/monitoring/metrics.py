"""Monitoring's figures in the Prometheus text format, read from the database at scrape time:
each check's state and last probe duration, open incidents, and uptime per subject."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from . import service as monitoring
from .models import CheckState, Incident, IncidentStatus, ProbeCheck, ProbeStateChange

WINDOWS = (("24h", timedelta(days=1)), ("30d", timedelta(days=30)))


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_monitoring_metrics(session: Session, now: datetime) -> str:
    checks = session.scalars(
        select(ProbeCheck).order_by(ProbeCheck.subject, ProbeCheck.check_name)
    ).all()
    names = {s: monitoring.subject_label(session, s) for s in {c.subject for c in checks}}
    lines = [
        "# HELP imhost_probe_up Whether a check passes (1) or fails (0); unmeasured: absent.",
        "# TYPE imhost_probe_up gauge",
    ]
    for c in checks:
        if c.state == CheckState.UNKNOWN.value:
            continue
        name = _label(names[c.subject])
        labels = f'subject="{_label(c.subject)}",name="{name}",check="{c.check_name}"'
        lines.append(f"imhost_probe_up{{{labels}}} {1 if c.state == CheckState.UP.value else 0}")
    lines += [
        "# HELP imhost_probe_duration_seconds How long the last probe of a check took.",
        "# TYPE imhost_probe_duration_seconds gauge",
    ]
    for c in checks:
        if c.last_seconds is not None:
            labels = f'subject="{_label(c.subject)}",check="{c.check_name}"'
            lines.append(f"imhost_probe_duration_seconds{{{labels}}} {c.last_seconds:.6f}")
    lines += [
        "# HELP imhost_probe_consecutive_failures Failures in a row of a check.",
        "# TYPE imhost_probe_consecutive_failures gauge",
    ]
    for c in checks:
        labels = f'subject="{_label(c.subject)}",check="{c.check_name}"'
        lines.append(f"imhost_probe_consecutive_failures{{{labels}}} {c.consecutive_failures}")
    open_count = session.scalar(
        select(func.count())
        .select_from(Incident)
        .where(Incident.status != IncidentStatus.RESOLVED.value)
    )
    lines += [
        "# HELP imhost_incidents_open Incidents not yet resolved.",
        "# TYPE imhost_incidents_open gauge",
        f"imhost_incidents_open {int(open_count or 0)}",
        "# HELP imhost_uptime_ratio Uptime over a window, maintenance excluded (1 = always up).",
        "# TYPE imhost_uptime_ratio gauge",
    ]
    oldest = now - max(w for _, w in WINDOWS)
    changed = set(
        session.scalars(
            select(ProbeStateChange.subject).where(ProbeStateChange.at >= oldest).distinct()
        )
    )
    for subject in sorted(names):
        state = monitoring.subject_state(session, subject)
        for window, length in WINDOWS:
            if subject in changed:
                ratio = monitoring.subject_uptime(session, subject, now - length, now).ratio
                value = f"{float(ratio):.6f}"
            elif state is CheckState.UNKNOWN:
                continue
            else:  # no change in the window: the state held all along
                value = "1" if state is CheckState.UP else "0"
            lines.append(
                f'imhost_uptime_ratio{{subject="{_label(subject)}",window="{window}"}} {value}'
            )
    return "\n".join(lines) + "\n"
