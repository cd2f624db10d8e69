"""The scheduled jobs of a runtime: the worker's own and those of the domain packages."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from imhost.accounts import reviews
from imhost.accounts.throttle import LoginThrottleService
from imhost.billing import budgets
from imhost.billing import tasks as billing_tasks
from imhost.billing.sepa import tasks as sepa_tasks
from imhost.db.engine import transaction
from imhost.domains import tasks as domain_tasks
from imhost.hosting import tasks as hosting_tasks
from imhost.metering import tasks as metering_tasks
from imhost.monitoring import alerts as monitoring_alerts
from imhost.monitoring import sla as monitoring_sla
from imhost.monitoring import tasks as monitoring_tasks
from imhost.runtime import Runtime
from imhost.support import tickets
from imhost.worker.scheduler import Job


def _bind(func: Callable[..., object], *args: object) -> Callable[[], object]:
    def run() -> object:
        return func(*args)

    return run


def default_jobs(runtime: Runtime) -> list[Job]:
    factory, clock = runtime.session_factory, runtime.clock

    # Jobs read, then write: their transactions begin as writers (no "database is locked"
    # on SQLite when another connection committed in between).
    def access_reviews() -> None:
        with transaction(factory, write=True) as session:
            reviews.open_due_reviews(session, clock, runtime.settings.security)

    def purge_login_throttles() -> None:
        with transaction(factory, write=True) as session:
            LoginThrottleService(session, clock, runtime.settings.security).purge_stale()

    def close_resolved_tickets() -> None:
        days = runtime.settings.support.auto_close_days
        with transaction(factory, write=True) as session:
            tickets.close_resolved(session, clock, days=days)

    return [
        Job("tickets-auto-close", timedelta(hours=1), close_resolved_tickets),
        Job("access-reviews", timedelta(hours=6), access_reviews),
        Job("login-throttle-purge", timedelta(hours=6), purge_login_throttles),
        Job(
            "budget-check",
            metering_tasks.CHECK_EVERY,
            _bind(metering_tasks.scheduled_budget_check, factory, clock, budgets.budget_forecast),
        ),
        Job(
            "billing-run",
            timedelta(hours=1),
            _bind(billing_tasks.scheduled_billing_run, factory, clock),
        ),
        Job("dunning", timedelta(hours=6), _bind(billing_tasks.run_dunning, factory, clock)),
        Job(
            "archive-retention",
            hosting_tasks.RETENTION_EVERY,
            _bind(hosting_tasks.expire_archives, factory, clock),
        ),
        Job(
            "monitoring-settle",
            monitoring_tasks.SETTLE_EVERY,
            _bind(monitoring_tasks.settle, factory, clock),
        ),
        Job(
            "monitoring-alerts",
            monitoring_tasks.ALERTS_EVERY,
            _bind(
                monitoring_alerts.scheduled_alerts,
                factory,
                clock,
                runtime.settings.public_url.rstrip("/") + "/status",
            ),
        ),
        Job(
            "monitoring-retention",
            monitoring_tasks.RETENTION_EVERY,
            _bind(monitoring_tasks.retention, factory, clock, runtime.settings),
        ),
        Job(
            "sla-credits",
            timedelta(hours=1),
            _bind(monitoring_sla.scheduled_sla_credits, factory, clock),
        ),
        Job(
            "sepa-collections",
            timedelta(hours=1),
            _bind(sepa_tasks.scheduled_queue, factory, clock),
        ),
        Job(
            "domain-checks",
            domain_tasks.CHECK_EVERY,
            _bind(domain_tasks.scheduled_checks, factory, clock, runtime.settings),
        ),
    ]
