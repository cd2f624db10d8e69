"""Demo data of billing for ``imhost serve --demo`` (called by ``cli/demo.py`` after the
catalog's): German VAT, the provider's bank details, and the demo organization on the
Business plan. Idempotent."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from imhost.accounts.models import Organization
from imhost.billing import service
from imhost.catalog import service as catalog
from imhost.kit.errors import NotFound

if TYPE_CHECKING:
    from imhost.runtime import Runtime

DEMO_RATES = (("DE", "19", "VAT"), ("FR", "20", "TVA"), ("AT", "20", "USt"), ("NL", "21", "BTW"))


def seed(
    session: Session, runtime: Runtime, org: Organization, saved: dict[str, str], logins: Any
) -> None:
    clock = runtime.clock
    existing = {rate.country for rate in service.list_tax_rates(session)}
    for country, percent, name in DEMO_RATES:
        if country not in existing:
            service.set_tax_rate(session, clock, country, percent, name)
    profile = service.get_profile(session)
    if not profile.bank_details:
        service.update_profile(
            session,
            clock,
            legal_name=runtime.settings.provider_name,
            home_country="DE",
            bank_details="IBAN DE00 0000 0000 0000 0000 00 (demo), BIC DEMODEXXX",
        )
    if service.current_subscription(session, org.id) is not None:
        return
    try:
        version = catalog.current_plan_version(session, "business", "EUR")
    except NotFound:
        return  # no catalog demo data: nothing to subscribe to
    service.start_subscription(session, clock, org.id, version.id)
