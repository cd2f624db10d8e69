"""Rules of the catalog: plans, versions, usage prices and add-ons.

Services never commit; the caller owns the transaction. Every refusal is an
:class:`~imhost.kit.errors.InvalidInput` (or ``NotFound``/``Conflict``) naming the field.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from imhost.accounts import audit
from imhost.accounts.audit import Actor
from imhost.catalog import repository as repo
from imhost.catalog.intervals import MONTHLY, interval_words, parse_interval
from imhost.catalog.models import (
    LIMIT_FIELDS,
    AddOn,
    Plan,
    PlanVersion,
    PriceComponent,
)
from imhost.catalog.pricing import PriceSpec, parse_tiers, tidy_money
from imhost.catalog.schemas import (
    AddOnIn,
    AddOnOut,
    AddOnUpdate,
    IntervalOut,
    LimitsIn,
    PlanCreate,
    PlanOut,
    PlanUpdate,
    PlanVersionChange,
    PlanVersionIn,
    PlanVersionOut,
    PriceComponentIn,
    PriceComponentOut,
)
from imhost.kit.clock import Clock
from imhost.kit.errors import Conflict, InvalidInput, NotFound
from imhost.kit.money import check_currency


@dataclass(frozen=True, slots=True)
class PlanVersionView:
    version: PlanVersion
    components: list[PriceComponent]

    def price_specs(self) -> list[PriceSpec]:
        return [c.to_spec() for c in self.components]


@dataclass(frozen=True, slots=True)
class PlanView:
    plan: Plan
    versions: list[PlanVersionView]


# --- plans --------------------------------------------------------------------------------


def create_plan(
    session: Session,
    clock: Clock,
    data: PlanCreate,
    *,
    known_metrics: Collection[str] | None = None,
    actor: Actor | None = None,
) -> Plan:
    """Create a plan with its first version (version 1) in ``data.version.currency``."""
    if repo.plan_by_code(session, data.code) is not None:
        raise Conflict(f"a plan with code {data.code!r} exists already", field="code")
    # Everything is checked before the first row is written.
    validate_components(
        data.version.components, _currency(data.version.currency), known_metrics=known_metrics
    )
    plan = Plan(
        code=data.code,
        name=data.name,
        description=data.description,
        is_public=data.is_public,
        position=data.position,
        created_at=clock.now(),
    )
    session.add(plan)
    session.flush()
    _add_version(session, clock, plan, data.version, number=1, known_metrics=known_metrics)
    audit.record(
        session,
        clock,
        "catalog.plan_created",
        actor=actor,
        target_type="plan",
        target_id=plan.id,
        target_label=plan.code,
    )
    return plan


def update_plan(
    session: Session, clock: Clock, code: str, data: PlanUpdate, *, actor: Actor | None = None
) -> Plan:
    """Change a plan's name, description, visibility or order (no new version needed)."""
    plan = get_plan(session, code)
    for name in ("name", "description", "is_public", "position"):
        value = getattr(data, name)
        if value is not None:
            setattr(plan, name, value)
    session.flush()
    audit.record(
        session,
        clock,
        "catalog.plan_updated",
        actor=actor,
        target_type="plan",
        target_id=plan.id,
        target_label=plan.code,
        changes=data.model_dump(exclude_none=True),
    )
    return plan


def new_plan_version(
    session: Session,
    clock: Clock,
    code: str,
    change: PlanVersionChange,
    *,
    known_metrics: Collection[str] | None = None,
    actor: Actor | None = None,
) -> PlanVersion:
    """Copy the current version of one price book, apply ``change``, supersede the old one.

    Subscriptions keep pointing at the old version (its id) until billing migrates them.
    """
    plan = get_plan(session, code)
    currency = _currency(change.currency)
    interval = change.billing_interval
    current = repo.current_version(session, plan.id, currency, interval)
    if current is None:
        if change.base_fee is None:
            raise InvalidInput(
                f"plan {code!r} has no price book billed {interval_words(interval)} in {currency} "
                "yet; "
                "give its base_fee (and its components)",
                field="base_fee",
            )
        data = PlanVersionIn(
            currency=currency,
            billing_interval=change.billing_interval,
            base_fee=change.base_fee,
            setup_fee=change.setup_fee or Decimal(0),
            trial_days=change.trial_days or 0,
            limits=change.limits or LimitsIn(),
            components=change.components or [],
            change_note=change.change_note,
        )
    else:
        old_components = repo.components_of(session, [current.id])
        data = PlanVersionIn(
            currency=currency,
            billing_interval=change.billing_interval,
            base_fee=change.base_fee if change.base_fee is not None else current.base_fee,
            setup_fee=change.setup_fee if change.setup_fee is not None else current.setup_fee,
            trial_days=change.trial_days if change.trial_days is not None else current.trial_days,
            limits=change.limits
            if change.limits is not None
            else LimitsIn(**{f: getattr(current, f) for f in LIMIT_FIELDS}),
            components=change.components
            if change.components is not None
            else [_component_in(c) for c in old_components],
            change_note=change.change_note,
        )
    # Everything is checked before the current version is superseded.
    validate_components(data.components, currency, known_metrics=known_metrics)
    if current is not None:
        current.superseded_at = clock.now()
        session.flush()
    number = repo.latest_version_number(session, plan.id) + 1
    version = _add_version(session, clock, plan, data, number=number, known_metrics=known_metrics)
    audit.record(
        session,
        clock,
        "catalog.plan_version_created",
        actor=actor,
        target_type="plan_version",
        target_id=version.id,
        target_label=f"{code} v{version.version} {version.currency}",
        note=change.change_note or None,
    )
    return version


def _add_version(
    session: Session,
    clock: Clock,
    plan: Plan,
    data: PlanVersionIn,
    *,
    number: int,
    known_metrics: Collection[str] | None,
) -> PlanVersion:
    currency = _currency(data.currency)
    specs = validate_components(data.components, currency, known_metrics=known_metrics)
    version = PlanVersion(
        plan_id=plan.id,
        version=number,
        currency=currency,
        billing_interval=data.billing_interval,
        base_fee=data.base_fee,
        setup_fee=data.setup_fee,
        trial_days=data.trial_days,
        change_note=data.change_note,
        created_at=clock.now(),
        **data.limits.model_dump(),
    )
    session.add(version)
    session.flush()
    for position, spec in enumerate(specs):
        session.add(
            PriceComponent(
                plan_version_id=version.id,
                metric=spec.metric,
                pricing_model=str(spec.model),
                currency=currency,
                unit_price=spec.unit_price,
                tiers=spec.tiers_json() if spec.tiers else None,
                package_size=spec.package_size,
                included_quantity=spec.included_quantity,
                cap=spec.cap,
                minimum=spec.minimum,
                position=position,
            )
        )
    session.flush()
    return version


def validate_components(
    components: Sequence[PriceComponentIn],
    currency: str,
    *,
    known_metrics: Collection[str] | None = None,
) -> list[PriceSpec]:
    """Check every usage price (as :class:`PriceSpec`); errors name ``components[i].field``."""
    specs: list[PriceSpec] = []
    seen: set[str] = set()
    for i, comp in enumerate(components):
        where = f"components[{i}]"
        if known_metrics is not None and comp.metric not in known_metrics:
            raise InvalidInput(
                f"{where}: unknown metric {comp.metric!r}; billable metrics are "
                + ", ".join(sorted(known_metrics)),
                field=f"{where}.metric",
            )
        if comp.metric in seen:
            raise InvalidInput(
                f"{where}: metric {comp.metric!r} is priced twice in this version",
                field=f"{where}.metric",
            )
        seen.add(comp.metric)
        try:
            spec = PriceSpec(
                model=comp.pricing_model,
                metric=comp.metric,
                currency=currency,
                unit_price=comp.unit_price,
                tiers=parse_tiers(t.model_dump() for t in comp.tiers) if comp.tiers else (),
                package_size=comp.package_size,
                included_quantity=comp.included_quantity,
                cap=comp.cap,
                minimum=comp.minimum,
            )
        except InvalidInput as exc:
            raise InvalidInput(
                f"{where}: {exc.detail}", field=f"{where}.{exc.field or 'pricing_model'}"
            ) from None
        specs.append(spec)
    return specs


def _component_in(component: PriceComponent) -> PriceComponentIn:
    return PriceComponentIn.model_validate(
        {
            "metric": component.metric,
            "pricing_model": component.pricing_model,
            "unit_price": component.unit_price,
            "tiers": component.tiers,
            "package_size": component.package_size,
            "included_quantity": component.included_quantity,
            "cap": component.cap,
            "minimum": component.minimum,
        }
    )


def _currency(code: str) -> str:
    try:
        return check_currency(code)
    except ValueError as exc:
        raise InvalidInput(str(exc), field="currency") from None


def get_plan(session: Session, code: str) -> Plan:
    plan = repo.plan_by_code(session, code)
    if plan is None:
        raise NotFound(f"no plan with code {code!r}", field="code")
    return plan


def get_plan_version(session: Session, version_id: str) -> PlanVersion:
    version = session.get(PlanVersion, version_id)
    if version is None:
        raise NotFound(f"no plan version {version_id!r}", field="plan_version_id")
    return version


def current_plan_version(
    session: Session,
    code: str,
    currency: str = "EUR",
    billing_interval: str = "monthly",
) -> PlanVersion:
    plan = get_plan(session, code)
    interval = parse_interval(billing_interval).code
    version = repo.current_version(session, plan.id, currency, interval)
    if version is None:
        raise NotFound(
            f"plan {code!r} has no price billed {interval_words(interval)} in {currency}",
            field="currency",
        )
    return version


def components_of(session: Session, plan_version_id: str) -> list[PriceComponent]:
    return list(repo.components_of(session, [plan_version_id]))


def price_specs_for(session: Session, plan_version_id: str) -> list[PriceSpec]:
    """The usage prices of a plan version, ready for :func:`imhost.catalog.pricing.rate`."""
    return [c.to_spec() for c in repo.components_of(session, [plan_version_id])]


def list_plans(
    session: Session,
    *,
    public_only: bool = True,
    current_only: bool = True,
    currency: str | None = None,
) -> list[PlanView]:
    """Plans with their versions and prices (public and current ones by default)."""
    plans = list(repo.plans(session, public_only=public_only))
    versions = repo.versions_of(
        session, [p.id for p in plans], current_only=current_only, currency=currency
    )
    components = repo.components_of(session, [v.id for v in versions])
    by_version: dict[str, list[PriceComponent]] = {}
    for comp in components:
        by_version.setdefault(comp.plan_version_id, []).append(comp)
    by_plan: dict[str, list[PlanVersionView]] = {}
    for version in versions:
        by_plan.setdefault(version.plan_id, []).append(
            PlanVersionView(version, by_version.get(version.id, []))
        )
    return [PlanView(p, by_plan.get(p.id, [])) for p in plans]


def plan_view(
    session: Session, code: str, *, current_only: bool = True, public_only: bool = False
) -> PlanView:
    plan = get_plan(session, code)
    if public_only and (not plan.is_public or plan.archived_at is not None):
        raise NotFound(f"no plan with code {code!r}", field="code")
    versions = repo.versions_of(session, [plan.id], current_only=current_only)
    components = repo.components_of(session, [v.id for v in versions])
    return PlanView(
        plan,
        [
            PlanVersionView(v, [c for c in components if c.plan_version_id == v.id])
            for v in versions
        ],
    )


def plan_out(view: PlanView) -> PlanOut:
    return PlanOut(
        id=view.plan.id,
        code=view.plan.code,
        name=view.plan.name,
        description=view.plan.description,
        is_public=view.plan.is_public,
        versions=[version_out(v) for v in view.versions],
    )


def version_out(view: PlanVersionView) -> PlanVersionOut:
    v = view.version
    return PlanVersionOut(
        id=v.id,
        version=v.version,
        currency=v.currency,
        billing_interval=v.billing_interval,
        interval=IntervalOut.of(v.billing_interval),
        base_fee=tidy_money(v.base_fee, v.currency),
        setup_fee=tidy_money(v.setup_fee, v.currency),
        trial_days=v.trial_days,
        limits={f: getattr(v, f) for f in LIMIT_FIELDS},
        components=[
            PriceComponentOut(
                metric=spec.metric,
                pricing_model=str(spec.model),
                unit_price=spec.unit_price,
                tiers=c.tiers,
                package_size=spec.package_size,
                included_quantity=spec.included_quantity,
                cap=spec.cap,
                minimum=spec.minimum,
            )
            for c, spec in ((c, c.to_spec()) for c in view.components)
        ],
        change_note=v.change_note,
        created_at=v.created_at,
        superseded_at=v.superseded_at,
    )


# --- add-ons ------------------------------------------------------------------------------


def _check_deltas(deltas: dict[str, int]) -> None:
    for name, value in deltas.items():
        if name not in LIMIT_FIELDS:
            raise InvalidInput(
                f"limit_deltas: unknown limit {name!r}; limits are " + ", ".join(LIMIT_FIELDS),
                field=f"limit_deltas.{name}",
            )
        if not -1_000_000 <= value <= 1_000_000:
            raise InvalidInput(f"limit_deltas.{name} is out of range", field=f"limit_deltas.{name}")


def create_addon(
    session: Session, clock: Clock, data: AddOnIn, *, actor: Actor | None = None
) -> AddOn:
    currency = _currency(data.currency)
    _check_deltas(data.limit_deltas)
    if repo.addon_by_code(session, data.code, currency) is not None:
        raise Conflict(f"an add-on {data.code!r} in {currency} exists already", field="code")
    addon = AddOn(
        code=data.code,
        name=data.name,
        description=data.description,
        kind=data.kind.value,
        currency=currency,
        price=data.price,
        billing_interval=data.billing_interval,
        limit_deltas=dict(data.limit_deltas),
        is_active=True,
        created_at=clock.now(),
    )
    session.add(addon)
    session.flush()
    audit.record(
        session,
        clock,
        "catalog.addon_created",
        actor=actor,
        target_type="addon",
        target_id=addon.id,
        target_label=f"{addon.code} {addon.currency}",
    )
    return addon


def get_addon(session: Session, code: str, currency: str = "EUR") -> AddOn:
    addon = repo.addon_by_code(session, code, currency)
    if addon is None:
        raise NotFound(f"no add-on {code!r} in {currency}", field="code")
    return addon


def get_addon_by_id(session: Session, addon_id: str) -> AddOn:
    addon = session.get(AddOn, addon_id)
    if addon is None:
        raise NotFound(f"no add-on {addon_id!r}", field="addon_id")
    return addon


def list_addons(
    session: Session, *, active_only: bool = True, currency: str | None = None
) -> list[AddOn]:
    return list(repo.addons(session, active_only=active_only, currency=currency))


def update_addon(
    session: Session,
    clock: Clock,
    code: str,
    currency: str,
    data: AddOnUpdate,
    *,
    actor: Actor | None = None,
    action: str = "catalog.addon_updated",
) -> AddOn:
    """Change an add-on. A new price applies from the next period billing rates."""
    addon = get_addon(session, code, currency)
    if data.limit_deltas is not None:
        _check_deltas(data.limit_deltas)
        addon.limit_deltas = dict(data.limit_deltas)
    for name in ("name", "description", "price", "is_active"):
        value = getattr(data, name)
        if value is not None:
            setattr(addon, name, value)
    addon.updated_at = clock.now()
    session.flush()
    retired = action == "catalog.addon_retired"
    audit.record(
        session,
        clock,
        action,
        actor=actor,
        target_type="addon",
        target_id=addon.id,
        target_label=f"{addon.code} {addon.currency}",
        changes=None
        if retired
        else {k: str(v) for k, v in data.model_dump(exclude_none=True).items()},
    )
    return addon


def deactivate_addon(
    session: Session, clock: Clock, code: str, currency: str, *, actor: Actor | None = None
) -> AddOn:
    """Stop selling an add-on; existing subscriptions keep it (rows are never deleted)."""
    return update_addon(
        session,
        clock,
        code,
        currency,
        AddOnUpdate(is_active=False),
        actor=actor,
        action="catalog.addon_retired",
    )


def addon_out(addon: AddOn) -> AddOnOut:
    return AddOnOut(
        id=addon.id,
        code=addon.code,
        name=addon.name,
        description=addon.description,
        kind=addon.kind,
        currency=addon.currency,
        price=tidy_money(addon.price, addon.currency),
        billing_interval=addon.billing_interval,
        interval=IntervalOut.of(addon.billing_interval),
        limit_deltas=dict(addon.limit_deltas or {}),
        is_active=addon.is_active,
    )


# --- the default catalog ------------------------------------------------------------------


def _default_plans(currency: str) -> list[dict[str, Any]]:
    messages = "messages"
    return [
        {
            "code": "starter",
            "name": "Starter",
            "description": "For a small team: one domain, a few dozen people.",
            "position": 10,
            "version": {
                "currency": currency,
                "base_fee": "9.00",
                "setup_fee": "0",
                "trial_days": 14,
                "limits": {
                    "max_xmpp_accounts": 25,
                    "max_connections": 75,
                    "max_connections_per_account": 5,
                    "message_rate_per_second": 10,
                    "message_burst": 50,
                    "storage_mb": 1024,
                    "max_custom_domains": 1,
                    "max_offline_messages": 500,
                    "max_rooms": 20,
                    "max_room_occupants": 50,
                    "archive_days": 30,
                },
                "components": [
                    {
                        "metric": messages,
                        "pricing_model": "graduated",
                        "tiers": [
                            {"up_to": 100_000, "unit_price": "0"},
                            {"up_to": 1_000_000, "unit_price": "0.0002"},
                            {"up_to": None, "unit_price": "0.0001"},
                        ],
                    },
                    {
                        "metric": "traffic_gb",
                        "pricing_model": "per_unit",
                        "unit_price": "0.05",
                        "included_quantity": "10",
                    },
                    {
                        "metric": "monthly_active_users",
                        "pricing_model": "per_unit",
                        "unit_price": "0.50",
                        "included_quantity": "25",
                    },
                    {
                        "metric": "storage_gb",
                        "pricing_model": "per_unit",
                        "unit_price": "0.10",
                        "included_quantity": "1",
                    },
                ],
            },
        },
        {
            "code": "business",
            "name": "Business",
            "description": "For a company: several domains, hundreds of people.",
            "position": 20,
            "version": {
                "currency": currency,
                "base_fee": "49.00",
                "setup_fee": "0",
                "trial_days": 14,
                "limits": {
                    "max_xmpp_accounts": 250,
                    "max_connections": 750,
                    "max_connections_per_account": 10,
                    "message_rate_per_second": 50,
                    "message_burst": 200,
                    "storage_mb": 10_240,
                    "max_custom_domains": 5,
                    "max_offline_messages": 1000,
                    "max_rooms": 200,
                    "max_room_occupants": 250,
                    "archive_days": 90,
                },
                "components": [
                    {
                        "metric": messages,
                        "pricing_model": "graduated",
                        "tiers": [
                            {"up_to": 1_000_000, "unit_price": "0"},
                            {"up_to": 10_000_000, "unit_price": "0.0001"},
                            {"up_to": None, "unit_price": "0.00005"},
                        ],
                    },
                    {
                        "metric": "traffic_gb",
                        "pricing_model": "package",
                        "unit_price": "4.00",
                        "package_size": "100",
                        "included_quantity": "100",
                    },
                    {
                        "metric": "monthly_active_users",
                        "pricing_model": "volume",
                        "included_quantity": "250",
                        "tiers": [
                            {"up_to": 100, "unit_price": "0.40"},
                            {"up_to": None, "unit_price": "0.30"},
                        ],
                    },
                    {
                        "metric": "storage_gb",
                        "pricing_model": "per_unit",
                        "unit_price": "0.08",
                        "included_quantity": "10",
                    },
                ],
            },
        },
        {
            "code": "enterprise",
            "name": "Enterprise",
            "description": "For a large organization: many domains, thousands of people, "
            "premium limits.",
            "position": 30,
            "version": {
                "currency": currency,
                "base_fee": "299.00",
                "setup_fee": "500.00",
                "trial_days": 0,
                "limits": {
                    "max_xmpp_accounts": 5000,
                    "max_connections": 15_000,
                    "max_connections_per_account": 20,
                    "message_rate_per_second": 100,
                    "message_burst": 500,
                    "storage_mb": 102_400,
                    "max_custom_domains": 50,
                    "max_offline_messages": 5000,
                    "max_rooms": 5000,
                    "max_room_occupants": 1000,
                    "archive_days": 365,
                },
                "components": [
                    {
                        "metric": messages,
                        "pricing_model": "graduated",
                        "tiers": [
                            {"up_to": 10_000_000, "unit_price": "0"},
                            {"up_to": None, "unit_price": "0.00003"},
                        ],
                        "cap": "2000.00",
                    },
                    {
                        "metric": "traffic_gb",
                        "pricing_model": "per_unit",
                        "unit_price": "0.02",
                        "included_quantity": "1000",
                    },
                    {
                        "metric": "monthly_active_users",
                        "pricing_model": "flat_tier",
                        "tiers": [
                            {"up_to": 5000, "flat_fee": "0"},
                            {"up_to": 10_000, "flat_fee": "250.00"},
                            {"up_to": None, "flat_fee": "600.00"},
                        ],
                    },
                    {
                        "metric": "storage_gb",
                        "pricing_model": "per_unit",
                        "unit_price": "0.05",
                        "included_quantity": "100",
                    },
                ],
            },
        },
    ]


def seed_default_plans(session: Session, clock: Clock, currency: str = "EUR") -> list[Plan]:
    """Create Starter, Business and Enterprise (monthly, in ``currency``) where absent.

    Idempotent: a plan that exists keeps its versions; a missing price book in ``currency``
    is added. Prices are the same figures in every currency (a demo catalog).
    """
    currency = _currency(currency)
    result: list[Plan] = []
    for raw in _default_plans(currency):
        data = PlanCreate.model_validate(raw)
        plan = repo.plan_by_code(session, data.code)
        if plan is None:
            plan = create_plan(session, clock, data)
        elif repo.current_version(session, plan.id, currency, MONTHLY.code) is None:
            v = data.version
            new_plan_version(
                session,
                clock,
                plan.code,
                PlanVersionChange(
                    currency=currency,
                    base_fee=v.base_fee,
                    setup_fee=v.setup_fee,
                    trial_days=v.trial_days,
                    limits=v.limits,
                    components=v.components,
                    change_note=f"default {currency} price book",
                ),
            )
        result.append(plan)
    return result
