"""RFC 6121 §3-4 conversations: subscriptions (Appendix A), broadcast, probes, directed
presence, unavailable on disconnect, pending requests at login."""

from __future__ import annotations

import pytest

from imhost.xmpp.core.xml import Element
from imhost.xmpp.modules.api import Module
from imhost.xmpp.modules.presence import NS_PREAPPROVAL, PresenceModule
from imhost.xmpp.modules.roster import NS_ROSTER, RosterModule
from imhost.xmpp.ports import RosterItem

from ..harness import DOMAIN, HEADER
from .conv import Client, Harness, error_of, exchange, named, online_pair, presences

pytestmark = pytest.mark.anyio

MODULES: list[type[Module]] = [RosterModule, PresenceModule]
A = "alice@example.test"
B = "bob@example.test"


# -- state helpers: "none", "to", "from", "both", with "+ask", "+approved", "+pending" ------


async def seed(h: Harness, user: str, contact: str, state: str) -> None:
    parts = state.split("+")
    if parts[0] != "-":
        item = RosterItem(
            f"{contact}@{DOMAIN}",
            subscription=parts[0],
            ask="ask" in parts,
            approved="approved" in parts,
        )
        await h.backend.set_item(DOMAIN, user, item)
    if "pending" in parts:
        stanza = f"<presence from='{contact}@{DOMAIN}' to='{user}@{DOMAIN}' type='subscribe'/>"
        await h.backend.set_pending_in(DOMAIN, user, f"{contact}@{DOMAIN}", stanza)


async def state(h: Harness, user: str, contact: str) -> str:
    _, items = await h.backend.get_roster(DOMAIN, user)
    jid = f"{contact}@{DOMAIN}"
    found = [i for i in items if i.jid == jid]
    parts = [found[0].subscription if found else "-"]
    if found and found[0].ask:
        parts.append("ask")
    if found and found[0].approved:
        parts.append("approved")
    if jid in await h.backend.get_pending_in(DOMAIN, user):
        parts.append("pending")
    return "+".join(parts)


def pushed(els: list[Element]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for iq in named(els, "iq", type="set"):
        query = iq.find("query", NS_ROSTER)
        if query is not None:
            for item in query.elements():
                out[item.get("jid", "")] = dict(item.attrs)
    return out


async def settle_all(*clients: Client) -> list[list[Element]]:
    return [await c.recv(40) for c in clients]


# -- the subscription handshake --------------------------------------------------------------


async def test_subscription_request_and_approval_between_two_online_accounts() -> None:
    async with Harness(modules=MODULES) as h:
        alice, bob = await online_pair(h)
        alice.send(f"<presence to='{B}' type='subscribe' id='s1'><status>hi</status></presence>")
        got_a, got_b = await settle_all(alice, bob)
        assert pushed(got_a) == {B: {"jid": B, "subscription": "none", "ask": "subscribe"}}
        [request] = named(got_b, "presence", type="subscribe")
        assert request.get("from") == A  # §3.1.2: stamped with the bare JID
        assert request.find_text("status") == "hi"
        bob.send(f"<presence to='{A}' type='subscribed'/>")
        got_a, got_b = await settle_all(alice, bob)
        assert pushed(got_b) == {A: {"jid": A, "subscription": "from"}}
        assert pushed(got_a) == {B: {"jid": B, "subscription": "to"}}
        assert [p.get("from") for p in named(got_a, "presence", type="subscribed")] == [B]
        # §3.1.5: the contact's available presence follows the approval
        [available] = named(got_a, "presence", type=None)
        assert available.get("from") == f"{B}/res"
        assert await state(h, "alice", "bob") == "to"
        assert await state(h, "bob", "alice") == "from"


async def test_mutual_subscription_becomes_both() -> None:
    async with Harness(modules=MODULES) as h:
        await seed(h, "alice", "bob", "to")
        await seed(h, "bob", "alice", "from")
        alice, bob = await online_pair(h)
        bob.send(f"<presence to='{A}' type='subscribe'/>")
        await settle_all(alice, bob)
        alice.send(f"<presence to='{B}' type='subscribed'/>")
        await settle_all(alice, bob)
        assert await state(h, "alice", "bob") == "both"
        assert await state(h, "bob", "alice") == "both"


async def test_request_to_an_offline_contact_is_kept_and_delivered_at_each_login() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        alice.send(f"<presence to='{B}' type='subscribe'/>")
        await alice.recv()
        assert await state(h, "bob", "alice") == "-+pending"
        for _ in range(2):  # until answered, every login shows it again
            bob = await h.online("bob", presence=False)
            assert presences(await bob.recv()) == []
            bob.send("<presence/>")
            [request] = named(await bob.recv(), "presence", type="subscribe")
            assert request.get("from") == A
            bob.send("</stream:stream>")
            await bob.recv()
        bob = await h.online("bob")
        await bob.recv()
        bob.send(f"<presence to='{A}' type='subscribed'/>")
        await bob.recv()
        assert await state(h, "bob", "alice") == "from"
        bob2 = await h.online("bob", "second", presence=False)
        bob2.send("<presence/>")
        assert named(await bob2.recv(), "presence", type="subscribe") == []


async def test_denied_request_clears_the_pending_state_on_both_sides() -> None:
    async with Harness(modules=MODULES) as h:
        alice, bob = await online_pair(h)
        alice.send(f"<presence to='{B}' type='subscribe'/>")
        await settle_all(alice, bob)
        bob.send(f"<presence to='{A}' type='unsubscribed'/>")
        got_a, got_b = await settle_all(alice, bob)
        assert pushed(got_a) == {B: {"jid": B, "subscription": "none"}}
        assert named(got_a, "presence", type="unsubscribed")[0].get("from") == B
        assert pushed(got_b) == {}  # bob had no item: nothing to push
        assert await state(h, "alice", "bob") == "none"
        assert await state(h, "bob", "alice") == "-"


async def test_preapproval_lets_a_later_request_through_without_asking() -> None:
    async with Harness(modules=MODULES) as h:
        alice, bob = await online_pair(h)
        bob.send(f"<presence to='{A}' type='subscribed'/>")
        got_a, got_b = await settle_all(alice, bob)
        assert pushed(got_b) == {A: {"jid": A, "subscription": "none", "approved": "true"}}
        assert presences(got_a) == []  # §3.4: nothing is routed for a pre-approval
        alice.send(f"<presence to='{B}' type='subscribe'/>")
        got_a, got_b = await settle_all(alice, bob)
        assert named(got_b, "presence", type="subscribe") == []
        assert pushed(got_b) == {A: {"jid": A, "subscription": "from"}}
        assert named(got_a, "presence", type="subscribed")
        assert await state(h, "alice", "bob") == "to"
        assert await state(h, "bob", "alice") == "from"


async def test_preapproval_is_advertised_as_a_stream_feature() -> None:
    async with Harness(modules=MODULES) as h:
        c = h.client()
        await c.login_plain("alice")
        c.restart()
        c.send(HEADER.format(to=DOMAIN))
        features = await c.wait_for("features")
        assert features.find("sub", NS_PREAPPROVAL) is not None


async def test_request_for_an_existing_subscription_is_absorbed_by_the_servers() -> None:
    # §3.1.3: the contact's server answers "subscribed" itself; §3.1.6: the user's server
    # drops it, the user already being subscribed (no pending request).
    async with Harness(modules=MODULES) as h:
        await seed(h, "alice", "bob", "to")
        await seed(h, "bob", "alice", "from")
        alice, bob = await online_pair(h)
        alice.send(f"<presence to='{B}' type='subscribe'/>")
        got_a, got_b = await settle_all(alice, bob)
        assert presences(got_b) == []
        assert named(got_a, "presence", type="subscribed") == []
        assert pushed(got_a) == {}
        assert await state(h, "alice", "bob") == "to"


async def test_unsolicited_subscribed_is_ignored() -> None:
    async with Harness(modules=MODULES) as h:
        alice, bob = await online_pair(h)
        await seed(h, "alice", "bob", "none")
        bob.send(f"<presence to='{A}' type='subscribed'/>")  # bob pre-approves, alice never asked
        got_a, _ = await settle_all(alice, bob)
        assert presences(got_a) == []
        assert await state(h, "alice", "bob") == "none"


async def test_request_to_a_nonexistent_account_is_answered_unsubscribed() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        await exchange(alice, "<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>")
        alice.send("<presence to='ghost@example.test' type='subscribe'/>")
        got = await alice.recv(40)
        assert named(got, "presence", type="unsubscribed")[0].get("from") == "ghost@example.test"
        assert pushed(got)["ghost@example.test"] == {
            "jid": "ghost@example.test",
            "subscription": "none",
        }
        assert await h.backend.get_pending_in(DOMAIN, "ghost") == {}


async def test_subscribing_to_yourself_is_not_allowed() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        alice.send(f"<presence to='{A}' type='subscribe' id='me'/>")
        [err] = named(await alice.recv(), "presence", type="error")
        assert error_of(err) == "not-allowed"
        assert await state(h, "alice", "alice") == "-"


async def test_subscribing_across_tenants_is_refused_without_state() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        alice.send("<presence to='mallory@other.test' type='subscribe' id='x'/>")
        [err] = named(await alice.recv(), "presence", type="error")
        assert error_of(err) == "remote-server-not-found"
        _, items = await h.backend.get_roster(DOMAIN, "alice")
        assert items == []
        assert await h.backend.get_pending_in("other.test", "mallory") == {}


# -- Appendix A: the state table, both sides ------------------------------------------------


@pytest.mark.parametrize(
    ("action", "alice_before", "bob_before", "alice_after", "bob_after"),
    [
        # A.2.1 outbound subscribe / A.3.1 inbound subscribe
        ("subscribe", "-", "-", "none+ask", "-+pending"),
        ("subscribe", "from", "to", "from+ask", "to+pending"),
        ("subscribe", "none+ask", "-+pending", "none+ask", "-+pending"),
        ("subscribe", "-", "none+approved", "to", "from"),
        ("subscribe", "to", "from", "to", "from"),
        # A.2.3 outbound unsubscribe / A.3.3 inbound unsubscribe
        ("unsubscribe", "to", "from", "none", "none"),
        ("unsubscribe", "both", "both", "from", "to"),
        ("unsubscribe", "none+ask", "-+pending", "none", "-"),
        ("unsubscribe", "none", "none", "none", "none"),
        # A.2.2 outbound subscribed / A.3.2 inbound subscribed
        ("subscribed", "-+pending", "none+ask", "from", "to"),
        ("subscribed", "to+pending", "from+ask", "both", "both"),
        ("subscribed", "none", "none", "none+approved", "none"),
        ("subscribed", "from", "to", "from", "to"),
        # A.2.4 outbound unsubscribed / A.3.4 inbound unsubscribed
        ("unsubscribed", "from", "to", "none", "none"),
        ("unsubscribed", "both", "both", "to", "from"),
        ("unsubscribed", "-+pending", "none+ask", "-", "none"),
        ("unsubscribed", "none+approved", "none", "none", "none"),
        ("unsubscribed", "to", "from", "to", "from"),
    ],
)
async def test_state_table(
    action: str, alice_before: str, bob_before: str, alice_after: str, bob_after: str
) -> None:
    async with Harness(modules=MODULES) as h:
        await seed(h, "alice", "bob", alice_before)
        await seed(h, "bob", "alice", bob_before)
        alice, bob = await online_pair(h)
        alice.send(f"<presence to='{B}' type='{action}'/>")
        await settle_all(alice, bob)
        assert await state(h, "alice", "bob") == alice_after
        assert await state(h, "bob", "alice") == bob_after


async def test_cancelling_a_subscription_tells_the_contact_and_withdraws_presence() -> None:
    async with Harness(modules=MODULES) as h:
        await seed(h, "alice", "bob", "to")
        await seed(h, "bob", "alice", "from")
        alice, bob = await online_pair(h)
        bob.send(f"<presence to='{A}' type='unsubscribed'/>")
        got_a, got_b = await settle_all(alice, bob)
        assert named(got_a, "presence", type="unsubscribed")[0].get("from") == B
        assert named(got_a, "presence", type="unavailable")[0].get("from") == f"{B}/res"
        assert pushed(got_a) == {B: {"jid": B, "subscription": "none"}}
        assert pushed(got_b) == {A: {"jid": A, "subscription": "none"}}


async def test_unsubscribing_tells_the_contact() -> None:
    async with Harness(modules=MODULES) as h:
        await seed(h, "alice", "bob", "to")
        await seed(h, "bob", "alice", "from")
        alice, bob = await online_pair(h)
        alice.send(f"<presence to='{B}' type='unsubscribe'/>")
        got_a, got_b = await settle_all(alice, bob)
        assert named(got_b, "presence", type="unsubscribe")[0].get("from") == A
        # §3.3.3: alice no longer sees bob
        assert named(got_a, "presence", type="unavailable")[0].get("from") == f"{B}/res"
        assert pushed(got_b) == {A: {"jid": A, "subscription": "none"}}
        assert pushed(got_a) == {B: {"jid": B, "subscription": "none"}}


async def test_removing_a_roster_item_cancels_both_directions() -> None:
    async with Harness(modules=MODULES) as h:
        await seed(h, "alice", "bob", "both")
        await seed(h, "bob", "alice", "both")
        alice, bob = await online_pair(h)
        reply, _ = await exchange(
            alice,
            f"<iq type='set' id='rm'><query xmlns='jabber:iq:roster'>"
            f"<item jid='{B}' subscription='remove'/></query></iq>",
        )
        assert reply.get("type") == "result"
        got_b = await bob.recv(40)
        assert named(got_b, "presence", type="unsubscribe")
        assert named(got_b, "presence", type="unsubscribed")
        assert named(got_b, "presence", type="unavailable")[0].get("from") == f"{A}/res"
        assert await state(h, "alice", "bob") == "-"
        assert await state(h, "bob", "alice") == "none"


# -- broadcast and probes (§4.2-§4.5) --------------------------------------------------------


async def test_initial_presence_goes_to_subscribers_and_probes_subscriptions() -> None:
    async with Harness(modules=MODULES) as h:
        await seed(h, "alice", "bob", "both")
        await seed(h, "bob", "alice", "both")
        await seed(h, "alice", "carol", "to")  # alice sees carol, carol does not see alice
        await seed(h, "carol", "alice", "from")
        bob = await h.online("bob")
        carol = await h.online("carol")
        await bob.recv()
        await carol.recv()
        alice = await h.online("alice", presence=False)
        alice.send("<presence><show>chat</show><priority>5</priority></presence>")
        got_a = await alice.recv(40)
        froms = sorted(p.get("from", "") for p in named(got_a, "presence", type=None))
        # answers to the probes, and her own presence (§4.2.2)
        assert froms == [f"{A}/res", f"{B}/res", "carol@example.test/res"]
        got_b = named(await bob.recv(), "presence", type=None)
        assert [(p.get("from"), p.get("to"), p.find_text("show")) for p in got_b] == [
            (f"{A}/res", B, "chat")
        ]
        assert presences(await carol.recv()) == []  # carol has no subscription to alice


async def test_presence_updates_and_unavailable_are_broadcast() -> None:
    async with Harness(modules=MODULES) as h:
        await seed(h, "alice", "bob", "from")
        await seed(h, "bob", "alice", "to")
        alice, bob = await online_pair(h)
        alice.send("<presence><show>away</show><status>lunch</status></presence>")
        [update] = presences(await bob.recv())
        assert update.find_text("status") == "lunch" and update.get("from") == f"{A}/res"
        alice.send("<presence type='unavailable'><status>bye</status></presence>")
        [gone] = presences(await bob.recv())
        assert gone.get("type") == "unavailable" and gone.find_text("status") == "bye"


@pytest.mark.parametrize("how", ["stream-close", "connection-lost"])
async def test_unavailable_is_broadcast_when_the_session_ends(how: str) -> None:
    async with Harness(modules=MODULES) as h:
        await seed(h, "alice", "bob", "from")
        await seed(h, "bob", "alice", "to")
        alice, bob = await online_pair(h)
        if how == "stream-close":
            alice.send("</stream:stream>")
        else:
            alice.stream.connection_lost(None)
        [gone] = presences(await bob.recv(40))
        assert gone.get("type") == "unavailable" and gone.get("from") == f"{A}/res"


async def test_a_session_that_never_was_available_sends_no_unavailable() -> None:
    async with Harness(modules=MODULES) as h:
        await seed(h, "alice", "bob", "from")
        await seed(h, "bob", "alice", "to")
        bob = await h.online("bob")
        alice = await h.online("alice", presence=False)
        alice.send("</stream:stream>")
        await alice.recv()
        assert presences(await bob.recv(40)) == []


async def test_own_resources_see_each_other() -> None:
    async with Harness(modules=MODULES) as h:
        phone = await h.online("alice", "phone")
        desktop = await h.online("alice", "desktop", presence=False)
        desktop.send("<presence><show>dnd</show></presence>")
        got_desktop = named(await desktop.recv(), "presence", type=None)
        assert sorted(p.get("from", "") for p in got_desktop) == [f"{A}/desktop", f"{A}/phone"]
        got_phone = named(await phone.recv(), "presence", type=None)
        assert [(p.get("from"), p.find_text("show")) for p in got_phone] == [
            (f"{A}/desktop", "dnd")
        ]


async def test_a_client_gets_its_own_initial_presence_and_updates_back() -> None:
    """RFC 6121 §4.2.2 and §4.4.2: broadcast to all of the user's available resources,
    including the one that sent it (an entity is implicitly subscribed to itself)."""
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice", presence=False)
        alice.send("<presence><show>chat</show><status>here</status></presence>")
        [own] = presences(await alice.recv(40))
        assert own.get("from") == f"{A}/res" and own.get("type") is None
        assert (own.find_text("show"), own.find_text("status")) == ("chat", "here")
        alice.send("<presence><show>away</show></presence>")
        [update] = presences(await alice.recv(40))
        assert update.get("from") == f"{A}/res" and update.find_text("show") == "away"
        assert alice.raw.count("<presence") == 2


async def test_no_presence_to_contacts_without_a_subscription_from_the_user() -> None:
    async with Harness(modules=MODULES) as h:
        await seed(h, "alice", "bob", "to")
        await seed(h, "bob", "alice", "from")
        alice, bob = await online_pair(h)
        alice.send("<presence><show>xa</show></presence>")
        assert presences(await bob.recv()) == []


async def test_a_probe_from_an_unsubscribed_account_is_not_answered() -> None:
    async with Harness(modules=MODULES) as h:
        bob = await h.online("bob")
        await bob.recv()
        alice = await h.online("alice", presence=False)
        await seed(h, "alice", "bob", "to")  # alice believes she is subscribed; bob does not
        alice.send("<presence/>")
        assert [p.get("from") for p in presences(await alice.recv(40))] == [f"{A}/res"]


# -- directed presence (§4.6) and presence to a bare JID --------------------------------------


async def test_directed_presence_is_delivered_and_followed_by_unavailable_at_logout() -> None:
    async with Harness(modules=MODULES) as h:
        alice, bob = await online_pair(h)
        alice.send(f"<presence to='{B}'><show>chat</show></presence>")
        [directed] = presences(await bob.recv())
        assert directed.get("from") == f"{A}/res" and directed.get("type") is None
        alice.send("</stream:stream>")
        [gone] = presences(await bob.recv(40))
        assert gone.get("type") == "unavailable" and gone.get("from") == f"{A}/res"


async def test_directed_unavailable_ends_the_tracking() -> None:
    async with Harness(modules=MODULES) as h:
        alice, bob = await online_pair(h)
        alice.send(f"<presence to='{B}/res'/>")
        alice.send(f"<presence to='{B}/res' type='unavailable'/>")
        assert [p.get("type") for p in presences(await bob.recv())] == [None, "unavailable"]
        alice.send("<presence type='unavailable'/>")
        assert presences(await bob.recv(40)) == []


async def test_presence_to_a_bare_jid_reaches_every_available_resource() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        bob1 = await h.online("bob", "one")
        bob2 = await h.online("bob", "two")
        bob3 = await h.online("bob", "three", presence=False)
        for c in (alice, bob1, bob2, bob3):
            await c.recv()
        alice.send(f"<presence to='{B}'><status>hello</status></presence>")
        for c in (bob1, bob2):
            [p] = presences(await c.recv())
            assert p.find_text("status") == "hello"
        assert presences(await bob3.recv()) == []


async def test_messages_to_the_bare_jid_follow_priorities() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        low = await h.online("bob", "low", priority=1)
        high = await h.online("bob", "high", priority=7)
        negative = await h.online("bob", "neg", priority=-1)
        for c in (alice, low, high, negative):
            await c.recv()
        alice.send(f"<message to='{B}' type='chat'><body>to the best</body></message>")
        assert [m.find_text("body") for m in named(await high.recv(), "message")] == ["to the best"]
        assert named(await low.recv(), "message") == []
        assert named(await negative.recv(), "message") == []


async def test_removing_an_item_refuses_a_pending_request_from_that_contact() -> None:
    async with Harness(modules=MODULES) as h:
        await seed(h, "alice", "bob", "none+ask")
        await seed(h, "bob", "alice", "none+pending")
        alice, bob = await online_pair(h)
        reply, _ = await exchange(
            bob,
            f"<iq type='set' id='rm'><query xmlns='jabber:iq:roster'>"
            f"<item jid='{A}' subscription='remove'/></query></iq>",
        )
        assert reply.get("type") == "result"
        got_a = await alice.recv(40)
        assert named(got_a, "presence", type="unsubscribed")[0].get("from") == B
        assert pushed(got_a) == {B: {"jid": B, "subscription": "none"}}
        assert await state(h, "alice", "bob") == "none"
        assert await state(h, "bob", "alice") == "-"


async def test_a_resumed_session_keeps_its_presence_and_roster_interest() -> None:
    from imhost.xmpp.core.xml import NS_SM

    async with Harness(modules=MODULES) as h:
        await seed(h, "alice", "bob", "from")
        await seed(h, "bob", "alice", "to")
        alice, bob = await online_pair(h)
        alice.send(f"<enable xmlns='{NS_SM}' resume='true'/>")
        enabled = await alice.wait_for("enabled")
        alice.stream.connection_lost(ConnectionResetError())  # hibernates, not gone
        assert presences(await bob.recv(40)) == []
        again = h.client()
        await again.login_plain("alice")
        again.restart()
        await again.open()
        again.send(f"<resume xmlns='{NS_SM}' previd='{enabled.get('id')}' h='0'/>")
        assert (await again.wait_for("resumed")).name == "resumed"
        await again.recv()
        _, pushes = await exchange(
            again,
            "<iq type='set' id='s1'><query xmlns='jabber:iq:roster'>"
            "<item jid='carol@example.test'/></query></iq>",
        )
        assert "carol@example.test" in pushed(pushes)  # still an interested resource
        again.send("</stream:stream>")
        [gone] = presences(await bob.recv(40))
        assert gone.get("type") == "unavailable" and gone.get("from") == f"{A}/res"


async def test_a_kept_request_carries_only_status_and_nick() -> None:
    async with Harness(modules=MODULES) as h:
        alice = await h.online("alice")
        alice.send(
            f"<presence to='{B}' type='subscribe'><status>it is me</status>"
            "<nick xmlns='http://jabber.org/protocol/nick'>Ally</nick>"
            f"<junk xmlns='urn:example:junk'>{'x' * 5000}</junk></presence>"
        )
        await alice.recv()
        bob = await h.online("bob", presence=False)
        bob.send("<presence/>")
        [request] = named(await bob.recv(), "presence", type="subscribe")
        assert request.find_text("status") == "it is me"
        assert request.find_text("nick", "http://jabber.org/protocol/nick") == "Ally"
        assert request.find("junk", "urn:example:junk") is None


async def test_a_flood_of_requests_is_capped_per_account() -> None:
    from imhost.xmpp.modules.presence import MAX_PENDING_REQUESTS

    async with Harness(modules=MODULES) as h:
        for i in range(MAX_PENDING_REQUESTS):
            await h.backend.set_pending_in(DOMAIN, "bob", f"fan{i}@example.test", "<presence/>")
        alice = await h.online("alice")
        alice.send(f"<presence to='{B}' type='subscribe'/>")
        await alice.recv()
        pending = await h.backend.get_pending_in(DOMAIN, "bob")
        assert len(pending) == MAX_PENDING_REQUESTS and A not in pending


async def test_probe_of_an_offline_contact_gets_its_last_unavailable_presence() -> None:
    from datetime import UTC, datetime

    from imhost.kit.clock import FrozenClock
    from imhost.xmpp.core.xml import NS_DELAY

    clock = FrozenClock(datetime(2026, 5, 4, 9, 15, 0, tzinfo=UTC))
    async with Harness(modules=MODULES, clock=clock) as h:
        await seed(h, "alice", "bob", "from")
        await seed(h, "bob", "alice", "to")
        await seed(h, "alice", "carol", "none")
        await seed(h, "carol", "alice", "to")  # carol's roster claims more than alice granted
        alice = await h.online("alice")
        alice.send("<presence type='unavailable'><status>gone fishing</status></presence>")
        alice.send("</stream:stream>")
        await alice.recv()
        bob = await h.online("bob", presence=False)
        bob.send("<presence/>")
        [last] = [p for p in presences(await bob.recv(40)) if p.get("from") != f"{B}/res"]
        assert last.get("type") == "unavailable" and last.get("from") == f"{A}/res"
        assert last.find_text("status") == "gone fishing"
        delay = last.find("delay", NS_DELAY)
        assert delay is not None and delay.get("stamp") == "2026-05-04T09:15:00Z"
        carol = await h.online("carol", presence=False)
        carol.send("<presence/>")
        assert [p.get("from") for p in presences(await carol.recv(40))] == [
            "carol@example.test/res"
        ]


async def test_last_unavailable_is_forgotten_when_the_contact_comes_back() -> None:
    async with Harness(modules=MODULES) as h:
        await seed(h, "alice", "bob", "from")
        await seed(h, "bob", "alice", "to")
        alice = await h.online("alice")
        alice.send("</stream:stream>")
        await alice.recv()
        module = h.server.router.hosts[DOMAIN].modules[1]
        assert isinstance(module, PresenceModule)
        assert module.last_seen("alice") is not None
        await h.online("alice", "again")
        assert module.last_seen("alice") is None
