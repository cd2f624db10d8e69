"""The scheduled jobs of a runtime. Packages still being built simply have none yet."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from imhost.accounts import reviews
from imhost.accounts.throttle import LoginThrottleService
from imhost.db.engine import transaction
from imhost.kit import optional_module
from imhost.runtime import Runtime
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

    jobs = [
        Job("access-reviews", timedelta(hours=6), access_reviews),
        Job("login-throttle-purge", timedelta(hours=6), purge_login_throttles),
    ]
    # Jobs contributed by domain packages: module -> (job name, interval, function(factory, clock)).
    contributed = (
        ("imhost.billing.tasks", "billing-run", timedelta(hours=1), "scheduled_billing_run"),
        ("imhost.billing.tasks", "dunning", timedelta(hours=6), "run_dunning"),
    )
    budgets = optional_module("imhost.billing.budgets")
    metering_tasks = optional_module("imhost.metering.tasks")
    if budgets is not None and metering_tasks is not None:
        jobs.append(
            Job(
                "budget-check",
                timedelta(minutes=15),
                _bind(metering_tasks.scheduled_budget_check, factory, clock, budgets.pricing_for),
            )
        )
    for module_name, name, every, func_name in contributed:
        module = optional_module(module_name)
        if module is None:
            continue
        func = getattr(module, func_name, None)
        if func is not None:
            jobs.append(Job(name, every, _bind(func, factory, clock)))
    return jobs
