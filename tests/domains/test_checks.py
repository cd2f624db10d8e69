"""DNS verification against a real authoritative DNS server on loopback (UDP and TCP).

Each case serves its own zone; the resolver is the one production builds from the settings.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from imhost.config import load_settings
from imhost.domains import checks
from imhost.domains.checks import Expected, RecordState

from .dns_server import DnsServer, SilentServer, Zone

DOMAIN = "chat.acme.example"
TOKEN = "0123456789abcdef0123456789abcdef"
TARGET = "xmpp.provider.example"
Serve = Callable[[Zone], DnsServer]
EXPECTED = Expected(target=TARGET, c2s_port=5222, direct_tls_port=5223, s2s_port=5269)


def good_zone(domain: str = DOMAIN, target: str = TARGET) -> dict[tuple[str, str], list[str]]:
    return {
        (f"_imhost-verify.{domain}.", "TXT"): [f'"imhost-verify={TOKEN}"'],
        (f"_xmpp-client._tcp.{domain}.", "SRV"): [f"5 0 5222 {target}."],
        (f"_xmpps-client._tcp.{domain}.", "SRV"): [f"5 0 5223 {target}."],
        (f"_xmpp-server._tcp.{domain}.", "SRV"): [f"5 0 5269 {target}."],
    }


@pytest.fixture
def serve() -> Iterator[Serve]:
    servers: list[DnsServer] = []

    def start(zone: Zone) -> DnsServer:
        server = DnsServer(zone)
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.close()


def check(
    server_address: str, *, timeout: float = 2.0, self_hosted: bool = False
) -> list[checks.RecordCheck]:
    settings = load_settings(
        dns={"resolvers": [server_address], "timeout_seconds": timeout, "lifetime_seconds": timeout}
    )
    resolver = checks.make_resolver(settings.dns)
    return checks.check_domain(resolver, DOMAIN, TOKEN, EXPECTED, self_hosted=self_hosted)


def by_name(results: list[checks.RecordCheck]) -> dict[str, checks.RecordCheck]:
    return {r.name if r.kind != "A" and r.kind != "AAAA" else r.kind: r for r in results}


def test_all_records_present_verifies(serve: Serve) -> None:
    server = serve(good_zone())
    results = check(server.address)
    assert [r.state for r in results] == [RecordState.OK] * 4
    assert checks.all_ok(results)
    # Really asked our server, over the network.
    asked = set(server.zone.queries)
    assert (f"_xmpps-client._tcp.{DOMAIN}.", "SRV") in asked


def test_a_missing_srv_record_is_named_with_the_line_to_add(serve: Serve) -> None:
    zone = good_zone()
    del zone[(f"_xmpp-server._tcp.{DOMAIN}.", "SRV")]
    results = by_name(check(serve(zone).address))
    missing = results[f"_xmpp-server._tcp.{DOMAIN}"]
    assert missing.state is RecordState.MISSING
    assert missing.zone_line == f"_xmpp-server._tcp.{DOMAIN}. 3600 IN SRV 5 0 5269 {TARGET}."
    assert results[f"_xmpp-client._tcp.{DOMAIN}"].state is RecordState.OK
    assert not checks.all_ok(list(results.values()))


def test_an_srv_record_to_the_wrong_port_is_wrong_and_says_so(serve: Serve) -> None:
    zone = good_zone()
    zone[(f"_xmpp-client._tcp.{DOMAIN}.", "SRV")] = [f"5 0 5333 {TARGET}."]
    result = by_name(check(serve(zone).address))[f"_xmpp-client._tcp.{DOMAIN}"]
    assert result.state is RecordState.WRONG
    assert result.found == (f"5 0 5333 {TARGET}.",)
    assert "port 5222" in result.message


def test_an_srv_record_to_another_host_is_wrong(serve: Serve) -> None:
    zone = good_zone()
    zone[(f"_xmpps-client._tcp.{DOMAIN}.", "SRV")] = ["5 0 5223 xmpp.elsewhere.example."]
    result = by_name(check(serve(zone).address))[f"_xmpps-client._tcp.{DOMAIN}"]
    assert result.state is RecordState.WRONG
    assert TARGET in result.message


def test_one_good_srv_among_several_is_enough(serve: Serve) -> None:
    zone = good_zone()
    zone[(f"_xmpp-client._tcp.{DOMAIN}.", "SRV")] = [
        "10 0 5222 old.example.",
        f"5 0 5222 {TARGET.upper()}.",
    ]
    assert checks.all_ok(check(serve(zone).address))


def test_a_wrong_txt_token_is_wrong_not_missing(serve: Serve) -> None:
    zone = good_zone()
    zone[(f"_imhost-verify.{DOMAIN}.", "TXT")] = ['"imhost-verify=someone-elses-token"']
    result = by_name(check(serve(zone).address))[f"_imhost-verify.{DOMAIN}"]
    assert result.state is RecordState.WRONG
    assert result.found == ("imhost-verify=someone-elses-token",)
    assert result.zone_line == (f'_imhost-verify.{DOMAIN}. 3600 IN TXT "imhost-verify={TOKEN}"')


def test_a_txt_token_split_in_strings_counts(serve: Serve) -> None:
    zone = good_zone()
    zone[(f"_imhost-verify.{DOMAIN}.", "TXT")] = [f'"imhost-verify=" "{TOKEN}"', '"v=spf1 -all"']
    result = by_name(check(serve(zone).address))[f"_imhost-verify.{DOMAIN}"]
    assert result.state is RecordState.OK


def test_a_domain_that_does_not_exist_misses_every_record(serve: Serve) -> None:
    server = serve({("other.example.", "A"): ["192.0.2.1"]})
    results = check(server.address)
    assert [r.state for r in results] == [RecordState.MISSING] * 4


def test_a_resolver_that_never_answers_gives_unknown_within_the_timeout() -> None:
    silent = SilentServer()
    try:
        started = time.monotonic()
        results = check(silent.address, timeout=0.3)
        elapsed = time.monotonic() - started
    finally:
        silent.close()
    assert {r.state for r in results} == {RecordState.UNKNOWN}
    assert checks.inconclusive(results) and not checks.all_ok(results)
    assert elapsed < 4 * 0.3 + 1.0  # each lookup gave up at its lifetime


def test_a_second_resolver_answers_when_the_first_is_silent(serve: Serve) -> None:
    server = serve(good_zone())
    silent = SilentServer()
    try:
        settings = load_settings(
            dns={
                "resolvers": [silent.address, server.address],
                "timeout_seconds": 0.3,
                "lifetime_seconds": 3,
            }
        )
        resolver = checks.make_resolver(settings.dns)
        results = checks.check_domain(resolver, DOMAIN, TOKEN, EXPECTED)
    finally:
        silent.close()
    assert checks.all_ok(results)


def test_a_self_hosted_domain_needs_its_addresses_and_srv_to_itself(serve: Serve) -> None:
    expected = Expected(
        target=TARGET,
        c2s_port=5222,
        direct_tls_port=None,
        s2s_port=5269,
        addresses=("192.0.2.10", "2001:db8::10"),
    )
    zone = good_zone(target=DOMAIN)
    del zone[(f"_xmpps-client._tcp.{DOMAIN}.", "SRV")]
    zone[(f"{DOMAIN}.", "A")] = ["192.0.2.99"]
    server = serve(zone)
    settings = load_settings(dns={"resolvers": [server.address], "timeout_seconds": 2})
    resolver = checks.make_resolver(settings.dns)
    results = checks.check_domain(resolver, DOMAIN, TOKEN, expected, self_hosted=True)
    kinds = {(r.kind, r.state) for r in results}
    assert ("A", RecordState.WRONG) in kinds and ("AAAA", RecordState.MISSING) in kinds
    assert all(r.state is RecordState.OK for r in results if r.kind in ("TXT", "SRV"))
    zone[(f"{DOMAIN}.", "A")] = ["192.0.2.10"]
    zone[(f"{DOMAIN}.", "AAAA")] = ["2001:db8::10"]
    server2 = serve(zone)
    settings = load_settings(dns={"resolvers": [server2.address], "timeout_seconds": 2})
    results = checks.check_domain(
        checks.make_resolver(settings.dns), DOMAIN, TOKEN, expected, self_hosted=True
    )
    assert checks.all_ok(results)


def test_the_records_to_add_before_any_check() -> None:
    lines = [r.zone_line for r in checks.required_records(DOMAIN, TOKEN, EXPECTED)]
    assert lines == [
        f'_imhost-verify.{DOMAIN}. 3600 IN TXT "imhost-verify={TOKEN}"',
        f"_xmpp-client._tcp.{DOMAIN}. 3600 IN SRV 5 0 5222 {TARGET}.",
        f"_xmpps-client._tcp.{DOMAIN}. 3600 IN SRV 5 0 5223 {TARGET}.",
        f"_xmpp-server._tcp.{DOMAIN}. 3600 IN SRV 5 0 5269 {TARGET}.",
    ]


def test_a_bad_resolver_setting_fails_at_start_with_its_name() -> None:
    from imhost.config import ConfigError

    with pytest.raises(ConfigError, match="IMHOST_DNS__RESOLVERS"):
        load_settings(dns={"resolvers": ["dns.example.net"]})
