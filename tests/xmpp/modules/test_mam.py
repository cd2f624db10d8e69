"""XEP-0313 conversations: archiving rules, stanza ids, preferences, queries, paging, errors."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from imhost.kit.clock import FrozenClock
from imhost.xmpp.core.xml import Element
from imhost.xmpp.modules.api import Module
from imhost.xmpp.modules.blocking import BlockingModule
from imhost.xmpp.modules.carbons import NS_CARBONS, CarbonsModule
from imhost.xmpp.modules.disco import DiscoModule
from imhost.xmpp.modules.mam import (
    FLUSH_ITEMS,
    MAX_PAGE,
    NS_MAM,
    NS_RSM,
    NS_SID,
    MamModule,
    format_stamp,
)
from imhost.xmpp.modules.offline import OfflineModule
from imhost.xmpp.modules.roster import RosterModule

from .conv import Client, Harness, error_of, exchange, named

pytestmark = pytest.mark.anyio

MODULES: list[type[Module]] = [
    RosterModule,
    BlockingModule,
    CarbonsModule,
    OfflineModule,
    MamModule,
    DiscoModule,
]
A = "alice@example.test"
B = "bob@example.test"
C = "carol@example.test"
FORM = "<field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>"


def query(
    qid: str = "q1",
    fields: str = "",
    rsm: str = "",
    extra: str = "",
    iq_id: str = "mam1",
) -> str:
    form = f"<x xmlns='jabber:x:data' type='submit'>{FORM}{fields}</x>" if fields else ""
    rsm_el = f"<set xmlns='http://jabber.org/protocol/rsm'>{rsm}</set>" if rsm else ""
    return (
        f"<iq type='set' id='{iq_id}'><query xmlns='urn:xmpp:mam:2' queryid='{qid}'>"
        f"{form}{rsm_el}{extra}</query></iq>"
    )


def field(var: str, *values: str) -> str:
    inner = "".join(f"<value>{v}</value>" for v in values)
    return f"<field var='{var}'>{inner}</field>"


def results(els: list[Element], qid: str = "q1") -> list[tuple[str, str]]:
    """(archive id, body) of each result message of a query, in the order received."""
    out = []
    for el in named(els, "message"):
        result = el.find("result", NS_MAM)
        if result is None:
            continue
        assert result.get("queryid") == qid
        forwarded = result.find("forwarded")
        assert forwarded is not None
        assert forwarded.find("delay") is not None
        inner = forwarded.find("message")
        assert inner is not None and inner.ns == "jabber:client"
        out.append((result.get("id") or "", inner.find_text("body") or ""))
    return out


def fin(reply: Element) -> tuple[Element, Element]:
    assert reply.get("type") == "result", reply
    fin_el = reply.find("fin", NS_MAM)
    assert fin_el is not None, reply
    rsm = fin_el.find("set", NS_RSM)
    assert rsm is not None
    return fin_el, rsm


async def chat(sender: Client, to: str, body: str, rounds: int = 20) -> None:
    sender.send(f"<message to='{to}' type='chat'><body>{body}</body></message>")
    await sender.recv(rounds)


async def pair(h: Harness) -> tuple[Client, Client]:
    alice = await h.online("alice")
    bob = await h.online("bob")
    await alice.recv()
    await bob.recv()
    return alice, bob


async def test_received_message_carries_a_stanza_id_and_both_archives_keep_it() -> None:
    async with Harness(modules=MODULES) as h:
        alice, bob = await pair(h)
        bob.send(
            f"<message to='{A}' type='chat' id='m1'><body>hello</body>"
            f"<stanza-id xmlns='urn:xmpp:sid:0' by='{A}' id='forged'/></message>"
        )
        [msg] = named(await alice.recv(), "message")
        ids = [e for e in msg.elements() if e.ns == NS_SID and e.name == "stanza-id"]
        assert len(ids) == 1  # the forged one is gone (XEP-0359 §3.1)
        assert ids[0].get("by") == A and ids[0].get("id") != "forged"
        reply, els = await exchange(alice, query())
        assert results(els) == [(ids[0].get("id"), "hello")]
        fin_el, rsm = fin(reply)
        assert fin_el.get("complete") == "true" and fin_el.get("queryid") == "q1"
        assert rsm.find_text("count") == "1"
        assert rsm.find_text("first") == rsm.find_text("last") == ids[0].get("id")
        reply, els = await exchange(bob, query())
        [(_, body)] = results(els)
        assert body == "hello"
        result = named(els, "message")[0]
        assert result.get("from") == B and result.get("to") == f"{B}/res"


async def test_what_is_not_archived() -> None:
    async with Harness(modules=MODULES) as h:
        alice, bob = await pair(h)
        for xml in (
            f"<message to='{A}' type='chat'><active xmlns='http://jabber.org/protocol/chatstates'/>"
            "</message>",
            f"<message to='{A}' type='headline'><body>news</body></message>",
            f"<message to='{A}' type='chat'><body>secret</body>"
            "<no-store xmlns='urn:xmpp:hints'/></message>",
            f"<message to='{A}' type='chat'><body>gone</body>"
            "<no-permanent-store xmlns='urn:xmpp:hints'/></message>",
        ):
            bob.send(xml)
        bob.send(
            f"<message to='{A}' type='chat'><store xmlns='urn:xmpp:hints'/>"
            "<received xmlns='urn:xmpp:receipts' id='x'/></message>"
        )
        delivered = named(await alice.recv(), "message")
        assert all(e.find("stanza-id", NS_SID) is None for e in delivered[:4])
        assert delivered[-1].find("stanza-id", NS_SID) is not None  # <store/> hint
        reply, els = await exchange(alice, query())
        assert [body for _, body in results(els)] == [""]
        assert fin(reply)[1].find_text("count") == "1"


async def test_offline_delivery_and_carbons_carry_the_same_id_once() -> None:
    async with Harness(modules=MODULES) as h:
        bob = await h.online("bob")
        await chat(bob, A, "while away")
        phone = await h.online("alice", "phone", presence=False)
        phone.send("<iq type='set' id='c1'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
        await phone.recv()
        phone.send("<presence/>")
        offline = [m for m in named(await phone.recv(), "message") if m.find_text("body")]
        assert len(offline) == 1
        offline_id = offline[0].find("stanza-id", NS_SID)
        assert offline_id is not None
        desktop = await h.online("alice", "desktop", priority=5)
        await phone.recv()
        await chat(bob, A, "now")
        [direct] = named(await desktop.recv(), "message")
        [copy] = named(await phone.recv(), "message")
        direct_id = direct.find("stanza-id", NS_SID)
        received = copy.find("received", NS_CARBONS)
        assert direct_id is not None and received is not None
        inner = received.find("forwarded")
        assert inner is not None
        inner_msg = inner.find("message")
        assert inner_msg is not None
        copy_id = inner_msg.find("stanza-id", NS_SID)
        assert copy_id is not None and copy_id.get("id") == direct_id.get("id")
        _, els = await exchange(desktop, query())
        ids = [i for i, _ in results(els)]
        assert ids == [offline_id.get("id"), direct_id.get("id")]  # no duplicates
        # the carbon "sent" copy of bob's own messages is not a second archive entry
        _reply, els = await exchange(bob, query())
        assert len(results(els)) == 2


async def test_paging_forward_backward_last_page_and_flip() -> None:
    clock = FrozenClock()
    async with Harness(modules=MODULES, clock=clock) as h:
        alice, bob = await pair(h)
        for i in range(7):
            clock.advance(1)
            await chat(bob, A, f"m{i}", rounds=5)
        reply, els = await exchange(alice, query(rsm="<max>3</max>"))
        page1 = results(els)
        assert [b for _, b in page1] == ["m0", "m1", "m2"]
        fin_el, rsm = fin(reply)
        assert fin_el.get("complete") is None and rsm.find_text("count") == "7"
        last_id = rsm.find_text("last")
        reply, els = await exchange(alice, query(rsm=f"<max>3</max><after>{last_id}</after>"))
        assert [b for _, b in results(els)] == ["m3", "m4", "m5"]
        reply, els = await exchange(
            alice, query(rsm=f"<max>3</max><after>{fin(reply)[1].find_text('last')}</after>")
        )
        assert [b for _, b in results(els)] == ["m6"]
        assert fin(reply)[0].get("complete") == "true"
        # the last page, then backwards
        reply, els = await exchange(alice, query(rsm="<max>2</max><before/>"))
        assert [b for _, b in results(els)] == ["m5", "m6"]
        first = fin(reply)[1].find_text("first")
        reply, els = await exchange(alice, query(rsm=f"<max>4</max><before>{first}</before>"))
        assert [b for _, b in results(els)] == ["m1", "m2", "m3", "m4"]
        assert fin(reply)[0].get("complete") is None
        reply, els = await exchange(alice, query(rsm=f"<max>9</max><before>{first}</before>"))
        assert fin(reply)[0].get("complete") == "true"
        # flip-page: the same page, newest first
        reply, els = await exchange(alice, query(rsm="<max>2</max><before/>", extra="<flip-page/>"))
        assert [b for _, b in results(els)] == ["m6", "m5"]
        _, rsm = fin(reply)
        assert rsm.find_text("first") == results(els)[0][0]
        # max 0: only the count
        reply, els = await exchange(alice, query(rsm="<max>0</max>"))
        assert results(els) == [] and fin(reply)[1].find_text("count") == "7"


async def test_filters_with_start_end_ids_and_fulltext() -> None:
    clock = FrozenClock()
    async with Harness(modules=MODULES, clock=clock) as h:
        alice, bob = await pair(h)
        carol = await h.online("carol")
        t0 = clock.now()
        clock.advance(10)
        await chat(bob, A, "Lunch at noon?")
        clock.advance(10)
        await chat(carol, A, "the report is late")
        clock.advance(10)
        await chat(alice, f"{B}/res", "yes, lunch")
        _, els = await exchange(alice, query(fields=field("with", B)))
        assert [b for _, b in results(els)] == ["Lunch at noon?", "yes, lunch"]
        _, els = await exchange(alice, query(fields=field("with", f"{B}/other")))
        assert results(els) == []
        _, els = await exchange(alice, query(fields=field("with", f"{B}/res")))
        assert [b for _, b in results(els)] == ["Lunch at noon?", "yes, lunch"]
        start = format_stamp(t0 + timedelta(seconds=15))
        end = format_stamp(t0 + timedelta(seconds=25))
        _, els = await exchange(alice, query(fields=field("start", start) + field("end", end)))
        assert [b for _, b in results(els)] == ["the report is late"]
        _, els = await exchange(alice, query(fields=field("start", start)))
        all_after = results(els)
        assert [b for _, b in all_after] == ["the report is late", "yes, lunch"]
        _, els = await exchange(alice, query(fields=field("after-id", all_after[0][0])))
        assert [b for _, b in results(els)] == ["yes, lunch"]
        _, els = await exchange(alice, query(fields=field("before-id", all_after[0][0])))
        assert [b for _, b in results(els)] == ["Lunch at noon?"]
        _, els = await exchange(alice, query(fields=field("ids", all_after[1][0])))
        assert [b for _, b in results(els)] == ["yes, lunch"]
        _, els = await exchange(
            alice, query(fields=field("{urn:xmpp:fulltext:0}fulltext", "LUNCH"))
        )
        assert [b for _, b in results(els)] == ["Lunch at noon?", "yes, lunch"]
        __, els = await exchange(
            alice, query(fields=field("{urn:xmpp:fulltext:0}fulltext", "lunch noon"))
        )
        assert [b for _, b in results(els)] == ["Lunch at noon?"]


async def test_errors() -> None:
    async with Harness(modules=MODULES) as h:
        alice, bob = await pair(h)
        await chat(bob, A, "one")
        cases = [
            (query(fields=field("after-id", "nope")), "item-not-found"),
            (query(fields=field("ids", "nope")), "item-not-found"),
            (query(rsm="<after>nope</after>"), "item-not-found"),
            (query(rsm="<before>nope</before>"), "item-not-found"),
            (query(fields=field("start", "yesterday")), "not-acceptable"),
            (query(fields=field("start", "2026-01-01T00:00:00")), "not-acceptable"),
            (query(fields=field("with", "@@bad")), "not-acceptable"),
            (query(fields=field("colour", "red")), "not-acceptable"),
            (
                query(
                    fields=field("start", "2026-02-01T00:00:00Z")
                    + field("end", "2026-01-01T00:00:00Z")
                ),
                "not-acceptable",
            ),
            (
                "<iq type='set' id='mam1'><query xmlns='urn:xmpp:mam:2'>"
                "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'>"
                "<value>urn:xmpp:mam:1</value></field></x></query></iq>",
                "not-acceptable",
            ),
            (query(rsm=f"<max>{MAX_PAGE + 1}</max>"), "policy-violation"),
            (query(rsm="<max>many</max>"), "bad-request"),
            (
                f"<iq type='set' id='mam1' to='{B}'><query xmlns='urn:xmpp:mam:2'/></iq>",
                "forbidden",
            ),
        ]
        for xml, condition in cases:
            reply, els = await exchange(alice, xml)
            assert error_of(reply) == condition, (xml, reply)
            assert results(els) == []


async def test_query_form_and_disco_features() -> None:
    async with Harness(modules=MODULES) as h:
        alice, _ = await pair(h)
        reply, _ = await exchange(
            alice, "<iq type='get' id='f1'><query xmlns='urn:xmpp:mam:2'/></iq>"
        )
        form = reply.find("query", NS_MAM)
        assert form is not None
        x = form.find("x", "jabber:x:data")
        assert x is not None
        vars_ = {f.get("var") for f in x.elements()}
        assert {"FORM_TYPE", "with", "start", "end", "after-id", "before-id", "ids"} <= vars_
        assert "{urn:xmpp:fulltext:0}fulltext" in vars_
        reply, _ = await exchange(
            alice,
            f"<iq type='get' id='d1' to='{A}'>"
            "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
        )
        query_el = reply.find("query")
        assert query_el is not None
        features = {f.get("var") for f in query_el.elements() if f.name == "feature"}
        assert {NS_MAM, f"{NS_MAM}#extended", NS_SID, "urn:xmpp:fulltext:0"} <= features


async def test_preferences_never_roster_and_always() -> None:
    async with Harness(modules=MODULES) as h:
        alice, bob = await pair(h)
        carol = await h.online("carol")
        reply, _ = await exchange(
            alice, "<iq type='get' id='p0'><prefs xmlns='urn:xmpp:mam:2'/></iq>"
        )
        prefs = reply.find("prefs", NS_MAM)
        assert prefs is not None and prefs.get("default") == "always"
        reply, _ = await exchange(
            alice,
            "<iq type='set' id='p1'><prefs xmlns='urn:xmpp:mam:2' default='roster'>"
            f"<always><jid>{C}</jid></always><never><jid>{B}/res</jid></never></prefs></iq>",
        )
        prefs = reply.find("prefs", NS_MAM)
        assert prefs is not None and prefs.get("default") == "roster"
        never = prefs.find("never")
        assert never is not None and [j.text for j in never.elements()] == [B]
        assert await h.backend.get_prefs("example.test", "alice") is not None
        await chat(bob, A, "from bob (never)")
        await chat(carol, A, "from carol (always)")
        [from_bob] = named(await alice.recv(), "message", **{"from": f"{B}/res"})
        assert from_bob.find("stanza-id", NS_SID) is None
        reply, els = await exchange(alice, query())
        assert [b for _, b in results(els)] == ["from carol (always)"]
        # bob's own archive follows bob's preferences (always by default)
        reply, els = await exchange(bob, query())
        assert [b for _, b in results(els)] == ["from bob (never)"]
        # roster default: a contact in the roster is archived, a stranger is not
        await exchange(
            alice,
            "<iq type='set' id='r1'><query xmlns='jabber:iq:roster'>"
            "<item jid='dave@example.test'/></query></iq>",
        )
        await exchange(
            alice,
            "<iq type='set' id='p2'><prefs xmlns='urn:xmpp:mam:2' default='roster'/></iq>",
        )
        await chat(alice, "dave@example.test", "to dave")
        await chat(alice, "erin@example.test", "to erin")
        reply, els = await exchange(alice, query())
        assert [b for _, b in results(els)][-1] == "to dave"
        reply, _ = await exchange(
            alice,
            "<iq type='set' id='p3'><prefs xmlns='urn:xmpp:mam:2' default='sometimes'/></iq>",
        )
        assert error_of(reply) == "not-acceptable"


async def test_blocked_messages_are_not_archived() -> None:
    async with Harness(modules=MODULES) as h:
        alice, bob = await pair(h)
        await exchange(
            alice,
            f"<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='{B}'/>"
            "</block></iq>",
        )
        await chat(bob, A, "blocked")
        _reply, els = await exchange(alice, query())
        assert results(els) == []


async def test_writes_are_batched_and_a_failed_batch_is_kept() -> None:
    async with Harness(modules=MODULES) as h:
        _alice, bob = await pair(h)
        await chat(bob, A, "queued")
        key = ("example.test", "alice")
        assert key not in h.backend.archives  # not written on the message path
        real_append = h.backend.append
        calls: list[int] = []

        async def failing(messages: object) -> None:
            calls.append(1)
            raise ConnectionError("database away")

        h.backend.append = failing  # type: ignore[method-assign]
        mam = h.server.router.hosts["example.test"].modules
        module = next(m for m in mam if isinstance(m, MamModule))
        await module.writer.flush()
        assert calls and module.writer.queue  # kept for the next flush
        h.backend.append = real_append  # type: ignore[method-assign]
        await module.writer.flush()
        assert [m.text for m in h.backend.archives[key]] == ["queued"]
        # a retried batch does not store twice
        await h.backend.append(list(h.backend.archives[key]))
        assert len(h.backend.archives[key]) == 1
        assert await h.backend.archive_bytes_used("example.test") > 0


async def test_archive_size_is_metered_as_storage() -> None:
    async with Harness(modules=MODULES) as h:
        alice, bob = await pair(h)
        await chat(bob, A, "x" * 100)
        await exchange(alice, query())  # stores the queue
        server = h.server
        server.meter.sink = h.backend
        await server.meter.flush()
        total = h.backend.usage_total("example.test", "archive_storage_bytes")
        assert total == await h.backend.archive_bytes_used("example.test") > 200


async def test_a_message_routed_again_after_a_lost_session_is_archived_once() -> None:
    async with Harness(modules=MODULES, sm_resume_timeout_seconds=1) as h:
        alice, bob = await pair(h)
        alice.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
        await alice.recv()
        await chat(bob, A, "keep me")
        [first] = named(await alice.recv(), "message")
        stanza_id = first.find("stanza-id", NS_SID)
        assert stanza_id is not None
        alice.stream.connection_lost(None)  # never acknowledged: stored offline again
        await asyncio.sleep(1.3)
        assert await h.backend.count("example.test", "alice") == 1
        again = await h.online("alice", "new", presence=False)
        again.send("<presence/>")
        [offline] = [m for m in named(await again.recv(), "message") if m.find_text("body")]
        ids = [e.get("id") for e in offline.elements() if e.name == "stanza-id"]
        assert ids == [stanza_id.get("id")]
        _, els = await exchange(again, query())
        assert [b for _, b in results(els)] == ["keep me"]


async def test_a_graceful_stop_stores_the_queue() -> None:
    h = Harness(modules=MODULES)
    async with h:
        _, bob = await pair(h)
        await chat(bob, A, "last words")
        assert ("example.test", "alice") not in h.backend.archives
    assert [m.text for m in h.backend.archives[("example.test", "alice")]] == ["last words"]


async def test_a_failing_store_is_retried_on_a_timer_not_at_every_message() -> None:
    async with Harness(modules=MODULES) as h:
        alice, bob = await pair(h)
        calls: list[int] = []
        real_append = h.backend.append

        async def failing(messages: list[object]) -> None:
            calls.append(len(messages))
            raise ConnectionError("database away")

        h.backend.append = failing  # type: ignore[method-assign,assignment]
        for i in range(FLUSH_ITEMS + 50):
            bob.send(f"<message to='{A}' type='chat'><body>{i}</body></message>")
            if i % 50 == 0:
                await bob.recv(2)
        await bob.recv(10)
        await alice.recv(10)
        assert len(calls) == 1  # one batch tried; the rest waits for the retry timer
        h.backend.append = real_append  # type: ignore[method-assign]
        _, els = await exchange(alice, query(rsm="<max>0</max>"))
        assert els == [] or results(els) == []
        archive = h.backend.archives[("example.test", "alice")]
        assert len(archive) == FLUSH_ITEMS + 50
