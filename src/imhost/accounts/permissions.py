"""Who may do what: the permission matrix, in code.

Every API route declares one requirement: an *area* and an *access* (read or write), and
whether it is a customer route (under ``/api/v1/orgs/{org_id}``), a staff route (under
``/api/v1/admin``), a route of the signed-in person themselves, or public. docs/security.md
prints this matrix, and ``tests/web/test_authorization_matrix.py`` walks every route of the
app for every role and checks the app does exactly what the matrix says.

API tokens carry scopes ``<area>:read`` / ``<area>:write`` (write implies read) on top of
their role; a token can never do more than its role allows.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from imhost.accounts.models import OrgRole, StaffRole


class Access(enum.StrEnum):
    READ = "read"
    WRITE = "write"


class Scope(enum.StrEnum):
    """Where a route lives, and so how its caller is checked."""

    ORG = "org"  # a customer organization's data; path has {org_id}
    STAFF = "staff"  # the provider's console/API
    SELF = "self"  # the signed-in person's own profile, sessions, MFA
    PUBLIC = "public"  # no authentication


_O = OrgRole
_ALL_ORG = frozenset(OrgRole)
_MANAGERS = frozenset({_O.OWNER, _O.ADMIN})

# (area, access) -> organization roles allowed.
ORG_MATRIX: dict[tuple[str, Access], frozenset[OrgRole]] = {
    ("organization", Access.READ): _ALL_ORG,
    ("organization", Access.WRITE): _MANAGERS,
    ("members", Access.READ): _ALL_ORG,
    ("members", Access.WRITE): _MANAGERS,
    ("tokens", Access.READ): _MANAGERS | {_O.TECHNICAL},
    ("tokens", Access.WRITE): _MANAGERS,
    ("audit", Access.READ): _MANAGERS,
    ("security", Access.READ): _MANAGERS,
    ("security", Access.WRITE): _MANAGERS,
    ("hosting", Access.READ): _ALL_ORG,
    ("hosting", Access.WRITE): _MANAGERS | {_O.TECHNICAL},
    ("billing", Access.READ): _MANAGERS | {_O.BILLING, _O.READ_ONLY},
    ("billing", Access.WRITE): _MANAGERS | {_O.BILLING},
    ("usage", Access.READ): _ALL_ORG,
    ("usage", Access.WRITE): _MANAGERS | {_O.TECHNICAL, _O.BILLING},
    ("support", Access.READ): _ALL_ORG,
    ("support", Access.WRITE): _MANAGERS | {_O.TECHNICAL, _O.BILLING},
    # Support tickets: every member reads the organization's tickets; who may open, reply,
    # close, reopen and rate them (read-only members only follow them).
    ("tickets", Access.READ): _ALL_ORG,
    ("tickets", Access.WRITE): _MANAGERS | {_O.TECHNICAL, _O.BILLING},
    # Closing the organization: read is its data export (GDPR Art. 15/20) and the page that
    # says what closing does; write is closing it. The owner alone.
    ("closure", Access.READ): frozenset({_O.OWNER}),
    ("closure", Access.WRITE): frozenset({_O.OWNER}),
}

_S = StaffRole
_ALL_STAFF = frozenset(StaffRole)

# (area, access) -> staff roles allowed on staff routes (/api/v1/admin/...).
STAFF_MATRIX: dict[tuple[str, Access], frozenset[StaffRole]] = {
    ("customers", Access.READ): _ALL_STAFF,
    ("customers", Access.WRITE): frozenset({_S.ADMIN, _S.SUPPORT}),
    ("customer-status", Access.WRITE): frozenset({_S.ADMIN, _S.BILLING}),
    ("catalog", Access.READ): _ALL_STAFF,
    ("catalog", Access.WRITE): frozenset({_S.ADMIN, _S.BILLING}),
    ("billing-admin", Access.READ): frozenset({_S.ADMIN, _S.BILLING, _S.READ_ONLY}),
    ("billing-admin", Access.WRITE): frozenset({_S.ADMIN, _S.BILLING}),
    ("usage-admin", Access.WRITE): frozenset({_S.ADMIN}),
    ("hosting-admin", Access.READ): _ALL_STAFF,
    ("hosting-admin", Access.WRITE): frozenset({_S.ADMIN, _S.SUPPORT}),
    ("staff", Access.READ): frozenset({_S.ADMIN}),
    ("staff", Access.WRITE): frozenset({_S.ADMIN}),
    ("audit", Access.READ): frozenset({_S.ADMIN, _S.SUPPORT, _S.READ_ONLY}),
    ("security", Access.READ): frozenset({_S.ADMIN, _S.SUPPORT, _S.READ_ONLY}),
    ("security", Access.WRITE): frozenset({_S.ADMIN}),
    ("tokens", Access.READ): frozenset({_S.ADMIN}),
    ("tokens", Access.WRITE): frozenset({_S.ADMIN}),
    ("outbox", Access.READ): frozenset({_S.ADMIN, _S.SUPPORT}),
    ("support-admin", Access.READ): frozenset({_S.ADMIN, _S.SUPPORT, _S.READ_ONLY}),
    ("support-admin", Access.WRITE): frozenset({_S.ADMIN, _S.SUPPORT}),
}

# Staff acting on a customer's routes (/api/v1/orgs/{org_id}/...): staff read everything of
# their remit; only an admin changes a customer's data through the customer's routes.
# Closing an organization is its owner's decision alone: no staff role closes it for them.
STAFF_ON_ORG_MATRIX: dict[tuple[str, Access], frozenset[StaffRole]] = {
    (area, access): (
        frozenset()
        if (area, access) == ("closure", Access.WRITE)
        else frozenset({_S.ADMIN})
        if access is Access.WRITE
        else (
            frozenset({_S.ADMIN, _S.BILLING, _S.READ_ONLY})
            if area in {"billing", "usage"}
            else frozenset({_S.ADMIN, _S.SUPPORT, _S.READ_ONLY})
            if area
            in {"hosting", "support", "tickets", "members", "organization", "audit", "security"}
            else frozenset({_S.ADMIN})
        )
    )
    for (area, access) in ORG_MATRIX
}


def org_role_allows(role: OrgRole | str | None, area: str, access: Access) -> bool:
    if role is None:
        return False
    allowed = ORG_MATRIX.get((area, access))
    if allowed is None:
        raise KeyError(f"no customer permission is defined for {area}:{access}")
    return OrgRole(role) in allowed


def staff_role_allows(
    role: StaffRole | str | None, area: str, access: Access, *, on_org: bool
) -> bool:
    if role is None:
        return False
    matrix = STAFF_ON_ORG_MATRIX if on_org else STAFF_MATRIX
    allowed = matrix.get((area, access))
    if allowed is None:
        if on_org:
            return False
        raise KeyError(f"no staff permission is defined for {area}:{access}")
    return StaffRole(role) in allowed


def scope_string(area: str, access: Access) -> str:
    return f"{area}:{access.value}"


def scopes_allow(scopes: Iterable[str], area: str, access: Access) -> bool:
    """A token's scopes: ``area:write`` implies ``area:read``; ``*`` allows everything."""
    granted = set(scopes)
    if "*" in granted or scope_string(area, Access.WRITE) in granted:
        return True
    return access is Access.READ and scope_string(area, Access.READ) in granted


def all_scopes(*, staff: bool) -> list[str]:
    areas = sorted({a for a, _ in (STAFF_MATRIX if staff else ORG_MATRIX)})
    return [f"{a}:{x.value}" for a in areas for x in Access]
