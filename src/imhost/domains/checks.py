"""DNS verification of a custom domain, record by record.

The records a domain needs (docs/domains.md):

- ``_imhost-verify.<domain>. TXT "imhost-verify=<token>"``: proves the customer controls the
  zone (the token is per domain).
- SRV records (RFC 2782) that tell XMPP clients and servers where to connect: RFC 6120 §3.2.1
  ``_xmpp-client._tcp`` and ``_xmpp-server._tcp``, and XEP-0368 ``_xmpps-client._tcp`` (Direct
  TLS, when the provider offers it). They must point at the provider's host and ports; when
  the domain itself is the host, at the domain, whose A/AAAA records must then hold the
  provider's addresses.

DNS is asked with dnspython against the resolvers the provider configures
(``IMHOST_DNS__RESOLVERS``), with a timeout per query and a total lifetime, no cache and no
search list. A resolver that does not answer makes the record ``unknown``, never ``ok``.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from imhost.config import DnsSettings, Settings, resolver_address

TXT_PREFIX = "_imhost-verify"
TXT_VALUE_PREFIX = "imhost-verify="
TTL = 3600


class RecordState(enum.StrEnum):
    OK = "ok"
    MISSING = "missing"
    WRONG = "wrong"
    UNKNOWN = "unknown"
    """The resolver did not answer in time (or at all): the check could not tell."""


@dataclass(frozen=True)
class RecordCheck:
    """One record the domain needs: what was asked, what was found, and what to add."""

    kind: str  # TXT, SRV, A, AAAA
    name: str  # owner name, A-label form, no final dot
    expected: str  # the value wanted, e.g. "5 0 5222 xmpp.example.net."
    state: RecordState
    found: tuple[str, ...] = ()
    message: str = ""

    @property
    def zone_line(self) -> str:
        """The exact line to paste into a zone file."""
        return f"{self.name}. {TTL} IN {self.kind} {self.expected}"

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        data["found"] = list(self.found)
        data["zone_line"] = self.zone_line
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RecordCheck:
        return cls(
            kind=str(data["kind"]),
            name=str(data["name"]),
            expected=str(data["expected"]),
            state=RecordState(str(data["state"])),
            found=tuple(str(v) for v in data.get("found", ())),
            message=str(data.get("message", "")),
        )


@dataclass(frozen=True)
class Expected:
    """What the provider wants the domain's records to say."""

    target: str
    c2s_port: int
    direct_tls_port: int | None
    s2s_port: int
    addresses: tuple[str, ...] = field(default=())

    @classmethod
    def from_settings(cls, settings: Settings) -> Expected:
        dns_settings = settings.dns
        x = settings.xmpp
        return cls(
            target=dns_settings.srv_target or settings.base_domain,
            c2s_port=x.c2s_port,
            direct_tls_port=x.c2s_direct_tls_port if x.direct_tls_enabled else None,
            s2s_port=dns_settings.s2s_port,
            addresses=tuple(dns_settings.addresses),
        )


def make_resolver(settings: DnsSettings) -> dns.resolver.Resolver:
    """A resolver that asks only the configured servers, with the configured timeouts."""
    resolver = dns.resolver.Resolver(configure=False)
    servers: list[dns.nameserver.Nameserver] = []
    for item in settings.resolvers:
        address, port = resolver_address(item)
        servers.append(dns.nameserver.Do53Nameserver(address, port))
    resolver.nameservers = servers
    resolver.timeout = settings.timeout_seconds
    resolver.lifetime = settings.lifetime_seconds
    resolver.cache = None
    resolver.search = []
    resolver.use_search_by_default = False
    return resolver


@dataclass(frozen=True)
class _Answer:
    values: tuple[str, ...]
    nxdomain: bool = False
    failed: bool = False


def _ask(resolver: dns.resolver.Resolver, name: str, rdtype: str) -> _Answer:
    try:
        answer = resolver.resolve(
            dns.name.from_text(name), rdtype, search=False, raise_on_no_answer=False
        )
    except dns.resolver.NXDOMAIN:
        return _Answer((), nxdomain=True)
    except (dns.exception.Timeout, dns.resolver.NoNameservers, dns.resolver.LifetimeTimeout):
        return _Answer((), failed=True)
    except dns.exception.DNSException:
        return _Answer((), failed=True)
    if answer.rrset is None:
        return _Answer(())
    return _Answer(tuple(rdata.to_text() for rdata in answer.rrset))


def _txt_value(text: str) -> str:
    """A TXT rdata in presentation form (``"a" "b"``) as the one string it stands for."""
    parts: list[str] = []
    for chunk in text.split('" "'):
        parts.append(chunk.strip('"'))
    return "".join(parts)


def _unknown(kind: str, name: str, expected: str) -> RecordCheck:
    return RecordCheck(
        kind,
        name,
        expected,
        RecordState.UNKNOWN,
        message="Our DNS resolver got no answer in time; we will ask again.",
    )


def check_txt(resolver: dns.resolver.Resolver, domain: str, token: str) -> RecordCheck:
    name = f"{TXT_PREFIX}.{domain}"
    wanted = TXT_VALUE_PREFIX + token
    expected = f'"{wanted}"'
    answer = _ask(resolver, name, "TXT")
    if answer.failed:
        return _unknown("TXT", name, expected)
    found = tuple(_txt_value(v) for v in answer.values)
    if wanted in found:
        return RecordCheck("TXT", name, expected, RecordState.OK, found, "Found.")
    if not found:
        return RecordCheck(
            "TXT", name, expected, RecordState.MISSING, (), "No TXT record with this name yet."
        )
    return RecordCheck(
        "TXT",
        name,
        expected,
        RecordState.WRONG,
        found,
        "A TXT record is there but it does not hold this domain's token.",
    )


def _srv_parts(text: str) -> tuple[int, int, int, str] | None:
    parts = text.split()
    if len(parts) != 4 or not all(p.isdigit() for p in parts[:3]):
        return None
    return int(parts[0]), int(parts[1]), int(parts[2]), parts[3].lower().rstrip(".")


def check_srv(
    resolver: dns.resolver.Resolver, domain: str, service: str, target: str, port: int
) -> RecordCheck:
    name = f"{service}._tcp.{domain}"
    expected = f"5 0 {port} {target}."
    answer = _ask(resolver, name, "SRV")
    if answer.failed:
        return _unknown("SRV", name, expected)
    if not answer.values:
        return RecordCheck(
            "SRV", name, expected, RecordState.MISSING, (), "No SRV record with this name yet."
        )
    parsed = [_srv_parts(v) for v in answer.values]
    if any(p is not None and p[3] == target and p[2] == port for p in parsed):
        return RecordCheck("SRV", name, expected, RecordState.OK, answer.values, "Found.")
    targets = {p[3] for p in parsed if p is not None}
    if target in targets:
        message = f"The SRV record points at {target} but not at port {port}."
    else:
        message = f"The SRV record points at another host; it must point at {target}."
    return RecordCheck("SRV", name, expected, RecordState.WRONG, answer.values, message)


def check_addresses(
    resolver: dns.resolver.Resolver, domain: str, kind: str, addresses: Sequence[str]
) -> list[RecordCheck]:
    """A or AAAA records of ``domain`` must hold exactly the provider's ``addresses``."""
    if not addresses:
        return []
    answer = _ask(resolver, domain, kind)
    if answer.failed:
        return [_unknown(kind, domain, a) for a in addresses]
    found = set(answer.values)
    checks = []
    for address in addresses:
        if address in found:
            checks.append(
                RecordCheck(kind, domain, address, RecordState.OK, answer.values, "Found.")
            )
        elif found:
            checks.append(
                RecordCheck(
                    kind,
                    domain,
                    address,
                    RecordState.WRONG,
                    answer.values,
                    f"The {kind} record holds another address; it must hold {address}.",
                )
            )
        else:
            checks.append(
                RecordCheck(
                    kind, domain, address, RecordState.MISSING, (), f"No {kind} record yet."
                )
            )
    return checks


def check_domain(
    resolver: dns.resolver.Resolver,
    domain: str,
    token: str,
    expected: Expected,
    *,
    self_hosted: bool = False,
) -> list[RecordCheck]:
    """Every record ``domain`` needs, checked (in the order a person adds them)."""
    target = domain if self_hosted else expected.target
    results = [check_txt(resolver, domain, token)]
    results.append(check_srv(resolver, domain, "_xmpp-client", target, expected.c2s_port))
    if expected.direct_tls_port is not None:
        results.append(
            check_srv(resolver, domain, "_xmpps-client", target, expected.direct_tls_port)
        )
    results.append(check_srv(resolver, domain, "_xmpp-server", target, expected.s2s_port))
    if self_hosted:
        v4 = [a for a in expected.addresses if ":" not in a]
        v6 = [a for a in expected.addresses if ":" in a]
        results.extend(check_addresses(resolver, domain, "A", v4))
        results.extend(check_addresses(resolver, domain, "AAAA", v6))
    return results


def required_records(
    domain: str, token: str, expected: Expected, *, self_hosted: bool = False
) -> list[RecordCheck]:
    """The records to add, before any check (state ``missing``, nothing found)."""
    target = domain if self_hosted else expected.target
    name_port = [("_xmpp-client", expected.c2s_port)]
    if expected.direct_tls_port is not None:
        name_port.append(("_xmpps-client", expected.direct_tls_port))
    name_port.append(("_xmpp-server", expected.s2s_port))
    records = [
        RecordCheck(
            "TXT", f"{TXT_PREFIX}.{domain}", f'"{TXT_VALUE_PREFIX}{token}"', RecordState.MISSING
        )
    ]
    records += [
        RecordCheck("SRV", f"{svc}._tcp.{domain}", f"5 0 {port} {target}.", RecordState.MISSING)
        for svc, port in name_port
    ]
    if self_hosted:
        for address in expected.addresses:
            kind = "AAAA" if ":" in address else "A"
            records.append(RecordCheck(kind, domain, address, RecordState.MISSING))
    return records


def all_ok(results: Sequence[RecordCheck]) -> bool:
    return bool(results) and all(r.state is RecordState.OK for r in results)


def inconclusive(results: Sequence[RecordCheck]) -> bool:
    """The resolver failed for some record and nothing was found wrong or missing."""
    return any(r.state is RecordState.UNKNOWN for r in results) and not any(
        r.state in (RecordState.MISSING, RecordState.WRONG) for r in results
    )
